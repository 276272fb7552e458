#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what the CRI test bed (e2e/cri/) needs on Debian 12. Idempotent:
# installs only what is missing (apt-get update only then). For CI and developers.
#   e2e/cri/deps.sh          install missing packages
#   e2e/cri/deps.sh --check  only report; exit 1 if something is missing
set -euo pipefail

PKGS=(
  containerd                   # 1.6.20: CRI plugin built in (runtime.v1 + v1alpha2)
  runc                         # the OCI runtime (crun refuses the hybrid cgroup layout here)
  containernetworking-plugins  # /usr/lib/cni: bridge host-local loopback portmap ...
  busybox-static               # /bin/busybox: the only binary in the pause/app images
  python3                      # /usr/bin/python3 (the Debian one: a pyenv python lacks grpc)
  python3-grpcio               # CRI client transport
  python3-protobuf
  python3-grpc-tools           # grpc_tools.protoc compiles e2e/cri/cri_subset.proto at run time
  python3-pkg-resources        # grpc_tools imports pkg_resources (not a declared dependency)
  iproute2                     # ip netns / ip -n / ss
  util-linux                   # nsenter, umount
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done

if [[ "${1:-}" == "--check" ]]; then
  if ((${#missing[@]})); then echo "missing: ${missing[*]}"; exit 1; fi
  echo "all present"; exit 0
fi

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

/usr/bin/python3 -c 'import grpc, google.protobuf, grpc_tools.protoc' \
  || { echo "deps.sh: /usr/bin/python3 cannot import grpc/protobuf/grpc_tools" >&2; exit 1; }
