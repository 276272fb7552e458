// SPDX-License-Identifier: Apache-2.0
#include <catch2/catch.hpp>

#include "meshcut/error.h"
#include "meshcut/maps.h"
#include "meshcut/sys.h"

using namespace meshcut;

TEST_CASE("errors carry the text, the number and a hint line", "[errors]") {
  Error e = make_error("couldn't attach sockops to cgroup '/sys/fs/cgroup/x'", -EPERM, "run as root");
  CHECK(e.err == EPERM);
  CHECK(e.format() ==
        "couldn't attach sockops to cgroup '/sys/fs/cgroup/x': Operation not permitted (1)\n  hint: run as root");
}

TEST_CASE("errno 524 (ENOTSUPP) reads as not supported by this kernel", "[errors]") {
  CHECK(errno_text(524) == "not supported by this kernel");
  CHECK(make_error("x", 524).format() == "x: not supported by this kernel (524)");
}

TEST_CASE("an error without errno or hint is just the text", "[errors]") {
  CHECK(make_error("plain", 0).format() == "plain");
}

TEST_CASE("Result holds a value or an error", "[errors]") {
  Result<int> ok = 3;
  Result<int> bad = make_error("no", ENOENT);
  CHECK(ok.ok());
  CHECK(*ok == 3);
  CHECK_FALSE(bad.ok());
  CHECK(bad.error().err == ENOENT);
}

TEST_CASE("/proc/mounts parsing finds cgroup2 wherever it is", "[sys]") {
  auto m = sys::parse_mounts(
      "sysfs /sys sysfs rw 0 0\n"
      "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"
      "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
      "bpf /sys/fs/bpf bpf rw 0 0\n"
      "tmpfs /mnt/with\\040space tmpfs rw 0 0\n");
  REQUIRE(m.size() == 5);
  CHECK(m[2].fstype == "cgroup2");
  CHECK(m[2].target == "/sys/fs/cgroup/unified");
  CHECK(m[4].target == "/mnt/with space");
}

TEST_CASE("per-CPU counters are summed over every possible CPU", "[counters]") {
  uint64_t v[4] = {1, 2, 3, 1ull << 40};
  CHECK(sum_percpu(v, 4) == 6 + (1ull << 40));
  CHECK(kCounterNames[MC_C_PAIRS_REDIRECTED] == "pairs_redirected");
  CHECK(kCounterNames[MC_C_SOCK_ADD_FAILED] == "sock_add_failed");
}
