// SPDX-License-Identifier: Apache-2.0
// The root tiers' policy, for the bpf test mains: without root, skip (77, CTest
// SKIP_RETURN_CODE) on a laptop, fail under CI=true.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

// -1: go on (root); otherwise the exit code to return.
inline int bpf_tier_needs_root() {
  if (geteuid() == 0) return -1;
  const char* ci = std::getenv("CI");
  if (ci && std::strcmp(ci, "true") == 0) {
    std::fprintf(stderr, "FAIL: the bpf tier needs root (CI=true: no skipping)\n");
    return 1;
  }
  std::fprintf(stderr, "SKIP: the bpf tier needs root\n");
  return 77;
}
