#!/usr/bin/env bash
# Runs CI as a new machine meets it: `.ci/run` with CI=true in a freshly
# bootstrapped Debian 12 root that holds nothing installed by hand, on this
# machine's kernel. Proves that .ci/deps.sh installs everything the build, the
# tests, the bed and the benchmarks run.
#
#   .ci/fresh-root.sh [WORKDIR]     (default /var/tmp/meshcut-fresh-root; root only)
#
# WORKDIR/base is `debootstrap bookworm` (made once, then reused as it was
# bootstrapped); every run copies it to WORKDIR/run, clones this repository's
# HEAD into it (a clean clone, as CI takes), bind-mounts the kernel's
# interfaces (/proc, /sys with /sys/fs/cgroup and /sys/fs/bpf, /dev), gives it
# its own /run and /tmp, and runs `bash .ci/run` with a clean environment
# in it, made the root of a private mount namespace (pivot_root). The log is WORKDIR/ci.log; the exit code is .ci/run's.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "fresh-root: run as root (debootstrap, mounts, pivot_root)" >&2; exit 1; }
WORK=${1:-/var/tmp/meshcut-fresh-root}
REPO=$(cd "$(dirname "$0")/.." && pwd)
BASE=$WORK/base
RUN=$WORK/run
MIRROR=${MESHCUT_MIRROR:-http://deb.debian.org/debian}

mkdir -p "$WORK"
if [ ! -e "$BASE/.complete" ]; then
  command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y -q debootstrap; }
  rm -rf "$BASE"
  debootstrap bookworm "$BASE" "$MIRROR"
  touch "$BASE/.complete"
fi

cleanup() {
  mountpoint -q "$RUN" && umount -R -l "$RUN" || true
  rm -rf --one-file-system "$RUN"
}
trap cleanup EXIT
cleanup
cp -a "$BASE" "$RUN"
# The machine's package sources (same archive snapshot and suites as CI's).
if [ -e /etc/apt/sources.list.d/debian.sources ]; then
  rm -f "$RUN/etc/apt/sources.list"
  cp /etc/apt/sources.list.d/debian.sources "$RUN/etc/apt/sources.list.d/"
fi
cp /etc/resolv.conf "$RUN/etc/resolv.conf"
git clone -q --no-local "$REPO" "$RUN/src/meshcut"

# The root must be a mount point of its own: `ip netns exec` and `ip -n` run
# `mount --make-rslave /` in a new mount namespace, which fails otherwise.
mount --bind "$RUN" "$RUN"
mount --make-private "$RUN"
for m in proc sys dev; do
  mount --rbind "/$m" "$RUN/$m"
  mount --make-rslave "$RUN/$m"   # nothing unmounted here reaches the host's mounts
done
mount -t tmpfs -o mode=755 tmpfs "$RUN/run"
mount -t tmpfs -o mode=1777 tmpfs "$RUN/tmp"

echo "fresh-root: running .ci/run in $RUN (log: $WORK/ci.log)"
start=$(date +%s)
set +e
# pivot_root in a private mount namespace, not a plain chroot: runc (the bed's
# containers) sets up each container's root relative to the namespace's root,
# and under chroot the containers saw the chroot's / instead of their image.
cat > "$RUN/.fresh-root-enter" <<'INNER'
set -e
umount -l /.oldroot && rmdir /.oldroot
cd /src/meshcut
exec /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LANG=C.UTF-8 CI=true /bin/bash .ci/run
INNER
unshare --mount --propagation private /bin/bash -c \
  'set -e; cd "$1"; mkdir .oldroot; pivot_root . .oldroot; exec chroot . /bin/bash /.fresh-root-enter' \
  fresh-root "$RUN" 2>&1 | tee "$WORK/ci.log"
rc=${PIPESTATUS[0]}
set -e
echo "fresh-root: .ci/run exited $rc after $(( $(date +%s) - start )) s"
exit "$rc"
