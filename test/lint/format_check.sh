#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# unit_format: every C and C++ source is formatted as .clang-format says
# (kernel style for BPF C: bpf/.clang-format). Prints the files that are not,
# and the command that fixes them.
set -eu
cd "$(dirname "$0")/../.."
command -v clang-format >/dev/null || { echo "clang-format not installed: apt-get install clang-format" >&2; exit 1; }
bad=""
# The source folders only (never a build tree; git may not be installed).
for f in $(find bpf bench cni-plugin controller libmeshcut libmeshcut-cni libmeshcut-obj pinned-maps-daemon test deploy e2e \
             -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.c' \) 2>/dev/null | sort); do
  case "$f" in
    test/fixtures/*) continue ;;
    bpf/*) style=file ;;
    *.bpf.c) style=file:bpf/.clang-format ;;
    *) style=file ;;
  esac
  clang-format --dry-run --Werror --style="$style" "$f" >/dev/null 2>&1 || bad="$bad $f"
done
if [ -n "$bad" ]; then
  echo "not formatted:$bad" >&2
  echo "fix: clang-format -i FILE (for a .bpf.c outside bpf/: clang-format -i --style=file:bpf/.clang-format FILE)" >&2
  exit 1
fi
echo "every C/C++ source formatted"
