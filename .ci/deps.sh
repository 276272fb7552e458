#!/usr/bin/env bash
# Installs the Debian 12 packages meshcut's build, tests, test bed and
# benchmarks need (only the missing ones). Used by .ci/run and e2e/demo.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(
  # build
  cmake g++ make pkg-config clang clang-format llvm libbpf-dev bpftool libelf-dev zlib1g-dev
  nlohmann-json3-dev libcli11-dev catch2 libclang-rt-14-dev libcpp-httplib-dev libyaml-cpp-dev
  libtorch-dev  # the controller's ppo policy (libtorch)
  # what the tests, the bed and the benchmarks run
  iproute2 iptables nftables conntrack procps util-linux kmod python3 curl
  haproxy nginx-light nodejs iperf3 wrk hey gnuplot-nox prometheus
  containernetworking-plugins golang-go golang-github-appc-cni-dev
  containerd runc busybox-static python3-grpcio python3-protobuf python3-grpc-tools
  python3-pkg-resources  # grpc_tools imports it, and does not depend on it
  # the image (deploy/) and the DaemonSet test that reads the manifest
  python3-yaml
)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
