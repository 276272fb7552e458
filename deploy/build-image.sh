#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Build meshcut's OCI image (meshcutd + the `meshcut` CNI plugin) from a CMake
# build dir, without a container engine; writes an OCI archive that
# `ctr image import`, `podman load` and `skopeo copy oci-archive:` accept.
#
#   deploy/build-image.sh [-B BUILD_DIR] [-o OUT.tar] [-n NAME] [-l KEY=VALUE]... [-r ROOTFS.tar]
#
# Defaults: -B build, -o BUILD_DIR/meshcut-image.tar, -n localhost/meshcut:dev
# (the image conf/meshcut-daemonset.yaml names); -r also writes the root as a
# plain tar, the build context of deploy/Containerfile. Reproducible: the same
# binaries, libraries and options give the same digest; the timestamps are
# SOURCE_DATE_EPOCH (default: the last commit's time, or 0 outside git).
# Also: `cmake --build build --target image`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=build out= name=localhost/meshcut:dev
labels= rootfs=
while [ $# -gt 0 ]; do
  case "$1" in
    -B) build=$2; shift 2 ;;
    -o) out=$2; shift 2 ;;
    -n) name=$2; shift 2 ;;
    -l) labels="$labels --label $2"; shift 2 ;;
    -r) rootfs=$2; shift 2 ;;
    -h|--help) sed -n '3,15p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
out=${out:-$build/meshcut-image.tar}
for b in "$build/pinned-maps-daemon/meshcutd" "$build/cni-plugin/meshcut"; do
  [ -x "$b" ] || { echo "build-image.sh: $b not built: cmake -S . -B $build && cmake --build $build" >&2; exit 1; }
done
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$here" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
# shellcheck disable=SC2086  # labels are split on purpose
info=$(/usr/bin/python3 "$here/mkimage.py" --meshcutd "$build/pinned-maps-daemon/meshcutd" \
  --plugin "$build/cni-plugin/meshcut" --out "$out" --name "$name" $labels ${rootfs:+--rootfs-tar "$rootfs"})
echo "$info" | /usr/bin/python3 -c '
import json, sys
i = json.loads(sys.stdin.read())
print("image %s\n  digest  %s\n  archive %s: %.2f MiB (layer %.2f MiB uncompressed)" % (
    i["name"], i["digest"], sys.argv[1], i["archive_bytes"] / 2**20, i["layer_bytes"] / 2**20))
print("load it: ctr -n k8s.io image import %s   (or: podman load -i %s)" % (sys.argv[1], sys.argv[1]))
' "$out"
