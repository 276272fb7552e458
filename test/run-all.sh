#!/usr/bin/env bash
# The README's test command: build, then every test tier through CTest.
#   ./test/run-all.sh            all tiers (root tiers skip without root unless CI=true)
#   ./test/run-all.sh -L unit    any ctest arguments
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(realpath -m "${MESHCUT_BUILD:-build}")
export MESHCUT_BUILD=$BUILD  # the tests find the plugin there; absolute: ctest runs them in $BUILD
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$BUILD" -j"$(nproc)"
cd "$BUILD"
ctest --output-on-failure "$@"
