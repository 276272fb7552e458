#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""meshcut's mesh test bed on one machine (README "The test bed"); the bed
itself is the package e2e/bed/ (topology, apps, audit, cli), this file is its
command line.

Commands (root):
    meshbed.py up        bring the bed up, leave it running (a holder process
                         owns it; state in /run/meshcut-bed/state.json)
    meshbed.py down      tear it down; checks that nothing is left (netns,
                         containerd state, mounts, pins, cgroups, CNI cache,
                         processes) and that the root netns' iptables did not change
    meshbed.py status    pods, services, meshcutd counters
    meshbed.py mode M    baseline | intra | inter | full
    meshbed.py check     correctness pass through the graph (every response's
                         status and sha256)
    meshbed.py exec POD -- CMD...   run CMD in POD's app container

In a program: `from bed import MeshBed; bed = MeshBed().up()` (with e2e/ on
sys.path; torn down at exit by mcnet's cleanups).
"""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bed.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
