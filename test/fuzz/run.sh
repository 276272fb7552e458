#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Fuzz the CNI plugin's input side (libFuzzer + ASan + UBSan + LeakSanitizer)
# for SECONDS (default 30): config/prevResult, the CNI_* environment (ifname,
# container ID, netns, CNI_PATH, CNI_ARGS) and the backend's pure validation
# layer (libmeshcut-cni/src/validate.cpp: names, paths, the veth peer decision).
#
#   test/fuzz/run.sh [SECONDS]
#
# Needs clang++ (Debian clang 14) and libFuzzer, which Debian ships in
# libclang-rt-14-dev (libclang_rt.fuzzer-x86_64.a): apt-get install clang libclang-rt-14-dev.
# Missing toolchain: exit 77 (skipped), or 1 under CI=true.
#
# Builds into ${MESHCUT_BUILD:-build}/fuzz/ (relative paths: from the repo root).
# Runs over a temporary copy of test/fuzz/corpus/netconf/; the committed corpus
# is never written. Crash/leak reproducers go to <build>/fuzz/artifacts/.
# MESHCUT_FUZZ_KEEP=1 keeps the work corpus (its path is printed) so new
# inputs can be minimised into the seed corpus:
#   <build>/fuzz/fuzz_netconf -merge=1 test/fuzz/corpus/netconf <work corpus>
# MESHCUT_FUZZ_ARGS: extra libFuzzer flags (e.g. "-jobs=2 -workers=2").
# Replay one input: <build>/fuzz/fuzz_netconf FILE
set -eu

SECONDS_TO_RUN=${1:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${MESHCUT_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
OUT=$BUILD/fuzz
BIN=$OUT/fuzz_netconf
CXX=${MESHCUT_FUZZ_CXX:-clang++}

skip() {
  echo "fuzz: $*" >&2
  if [ "${CI:-}" = true ]; then exit 1; fi
  exit 77
}
command -v "$CXX" >/dev/null 2>&1 || skip "$CXX not found (apt-get install clang)"
FUZZLIB=$("$CXX" -print-file-name=libclang_rt.fuzzer-x86_64.a)
[ -f "$FUZZLIB" ] || skip "libFuzzer not found (apt-get install libclang-rt-14-dev)"

# The pure part of the CNI library (libmeshcut-cni), compiled here again with
# the sanitizers and libFuzzer (the CMake build uses g++ without them).
CNILIB=$ROOT/libmeshcut-cni
SRCS="$HERE/fuzz_netconf.cpp $CNILIB/src/cni.cpp $CNILIB/src/plan.cpp $CNILIB/src/validate.cpp"
mkdir -p "$OUT" "$OUT/artifacts"
stale=0
[ -x "$BIN" ] || stale=1
for f in $SRCS "$CNILIB"/include/meshcut/cni/*.h "$0"; do
  [ "$f" -nt "$BIN" ] && stale=1
done
if [ $stale = 1 ]; then
  echo "fuzz: building $BIN"
  # cni.cpp/plan.cpp/validate.cpp need only nlohmann-json and the standard
  # library: no libmeshcut, no libbpf, no kernel interface.
  # shellcheck disable=SC2086 # SRCS is a list of paths without spaces
  "$CXX" -std=c++20 -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I"$CNILIB/include" $SRCS -o "$BIN.tmp"
  mv "$BIN.tmp" "$BIN"
fi

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"

# Regression first: every crash-* reproducer in the seed corpus, replayed
# whole (the fuzzing run below truncates inputs to -max_len).
failed=""
for f in "$HERE"/corpus/netconf/crash-*; do
  [ -f "$f" ] || continue
  if ! "$BIN" "$f" >"$OUT/replay.log" 2>&1; then
    failed="$failed $(basename "$f")"
    grep -E "meshcut-fuzz|^SUMMARY|ERROR: AddressSanitizer|runtime error" "$OUT/replay.log" | head -3 | cut -c1-240 >&2
  fi
done
if [ -n "$failed" ]; then
  echo "fuzz: known reproducers still failing:$failed" >&2
  echo "fuzz: replay one with: $BIN test/fuzz/corpus/netconf/<name>" >&2
  [ "${MESHCUT_FUZZ_LENIENT:-0}" = 1 ] || exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshcut-fuzz-netconf.XXXXXX")
cleanup() { if [ "${MESHCUT_FUZZ_KEEP:-0}" = 1 ]; then echo "fuzz: work corpus kept in $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
cp "$HERE"/corpus/netconf/* "$WORK"/

set +e
# shellcheck disable=SC2086
"$BIN" "$WORK" -dict="$HERE/netconf.dict" -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=2048 \
  -max_len=16384 -timeout=10 -detect_leaks=1 -error_exitcode=1 -timeout_exitcode=1 \
  -artifact_prefix="$OUT/artifacts/" -print_final_stats=1 ${MESHCUT_FUZZ_ARGS:-}
rc=$?
set -e
if [ $rc -ne 0 ]; then
  echo "fuzz: FAILED (exit $rc); reproducer in $OUT/artifacts/, replay with: $BIN <file>" >&2
  exit 1
fi
echo "fuzz: no crash, no leak in ${SECONDS_TO_RUN}s"
