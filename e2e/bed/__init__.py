# SPDX-License-Identifier: Apache-2.0
"""The mesh test bed (README "The test bed"; e2e/meshbed.py is its command line).

  topology.py  nodes, pods, services, modes; MeshBed (bring-up, exec, check, set_mode)
  apps.py      what runs in the pods: app commands, sidecar config, web bodies, digests
  web-nginx.conf, checker.py   the web pods' nginx config; the correctness pass (run in the client pod)
  audit.py     what a torn-down bed left, the sweep after a killed holder
  cli.py       the holder process and the commands (up, down, status, mode, check, exec)
  env.py       paths and the helpers the bed builds on (benchlib, mcnet, twonode, ...)

Import it with e2e/ on sys.path: `from bed import MeshBed`.
"""
from .apps import WEB_FILES, expected_digests  # noqa: F401
from .audit import root_rules  # noqa: F401
from .env import BedError, benchlib, mcnet, twonode  # noqa: F401
from .topology import INTRA_ON, MODES, NODE_ON, TC_ON, MeshBed  # noqa: F401
