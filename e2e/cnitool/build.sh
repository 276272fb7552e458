#!/usr/bin/env bash
# Build the libcni driver (e2e/cnitool) from Debian packages only:
#   golang-go (Go 1.19) + golang-github-appc-cni-dev (libcni 1.1.2 sources).
# GOPATH mode: the package dir lives outside GOPATH, so Go builds it as the
# local package "_/<repo>/e2e/cnitool" and resolves github.com/containernetworking/cni
# from GOPATH=/usr/share/gocode. No go.mod, no symlink farm, nothing written
# into the repo except the output binary (default build/e2e/cnitool, gitignored).
#
# usage: e2e/cnitool/build.sh [OUTPUT_PATH]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$repo/build/e2e/cnitool}"
gocode=/usr/share/gocode
libcni_dir="$gocode/src/github.com/containernetworking/cni/libcni"

need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -f "$libcni_dir/api.go" ] || need+=(golang-github-appc-cni-dev)
if [ "${#need[@]}" -gt 0 ]; then
    echo "build.sh: installing ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y -q "${need[@]}" >&2; then
        $SUDO apt-get update -q >&2
        $SUDO apt-get install -y -q "${need[@]}" >&2
    fi
fi

mkdir -p "$(dirname "$out")"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

# A writable build cache even when HOME is unset or read-only (CI, sudo -E).
if [ -z "${GOCACHE:-}" ]; then
    if [ -n "${HOME:-}" ] && [ -w "${HOME}" ]; then
        GOCACHE="$HOME/.cache/go-build"
    else
        GOCACHE="${TMPDIR:-/tmp}/meshcut-go-build-$(id -u)"
    fi
    export GOCACHE
fi

cd "$repo"
GO111MODULE=off GOPATH="$gocode" GOFLAGS= CGO_ENABLED=0 \
    go build -trimpath -o "$out" ./e2e/cnitool
echo "$out"
