#!/usr/bin/env bash
# Installs the Debian 12 packages meshcut's build, tests, test bed and
# benchmarks need (only the missing ones). Used by .ci/run and e2e/demo.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(cmake g++ make pkg-config clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev
      nlohmann-json3-dev libcli11-dev catch2 iproute2 iptables python3 haproxy nginx-light
      curl nodejs iperf3
      containernetworking-plugins golang-go golang-github-appc-cni-dev
      containerd runc busybox-static python3-grpcio python3-protobuf python3-grpc-tools prometheus libclang-rt-14-dev wrk hey gnuplot-nox)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
