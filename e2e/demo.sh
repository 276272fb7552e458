#!/usr/bin/env bash
# The demo of meshcut's main job, on a fresh Debian 12 machine, as root:
# installs the Debian packages it needs, builds, brings up the mesh test bed
# (e2e/meshbed.py: two nodes, containerd CRI pods, Istio-like sidecars, a
# Bookinfo-shaped graph), measures the mesh without meshcut (baseline) and with
# it (full) from a client pod to a server on the same node and on the other,
# checks every response, prints the table, and tears the bed down.
# Every pod process runs on CPU 1 (MESHCUT_DEMO_CPU=N for another, empty for no
# pinning): on small VMs a wake-up across CPUs costs more than the whole data
# path and one short repetition would measure the scheduler (shared/BENCH.md).
# Further arguments go to e2e/mesh_eval.py (e.g. --placement all adds Bookinfo).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "e2e/demo.sh: run as root (network namespaces, containerd, BPF)" >&2
  exit 1
fi
./.ci/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)"
cpu=${MESHCUT_DEMO_CPU-1}
exec /usr/bin/python3 e2e/mesh_eval.py --demo ${cpu:+--cpu "$cpu"} --out bench-out/demo "$@"
