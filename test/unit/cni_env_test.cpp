// SPDX-License-Identifier: Apache-2.0
// The plugin's untrusted inputs at the boundary (issue: "the plugin trusts
// nothing", "nothing wedges the node"): CNI_* variables are validated before
// any copy, and a thread that can't be created is an error, not an exception.
// Uses only long-standing interfaces (read_env, sys::link_in_netns,
// sys::netns_cookie), so it also runs against older trees.
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstddef>
#include <map>
#include <string>

#include <meshcut/cni/cni.h>
#include "meshcut/sys.h"

using namespace meshcut;
using namespace meshcut::cni;

namespace {

std::map<std::string, std::string> add_env() {
  return {{"CNI_COMMAND", "ADD"}, {"CNI_CONTAINERID", "c0ffee"}, {"CNI_NETNS", "/var/run/netns/cni-1"},
          {"CNI_IFNAME", "eth0"}, {"CNI_PATH", "/opt/cni/bin"},  {"CNI_ARGS", "K8S_POD_NAME=x"}};
}

// CniError code from read_env, or 0 if it accepted the environment.
int read_env_code(const std::map<std::string, std::string>& m) {
  try {
    (void)read_env([&](const char* k) -> const char* {
      auto it = m.find(k);
      return it == m.end() ? nullptr : it->second.c_str();
    });
    return 0;
  } catch (const CniError& e) {
    return e.code;
  }
}

bool root() { return ::geteuid() == 0; }

}  // namespace

TEST_CASE("a 100-character CNI_IFNAME is refused before any copy", "[security]") {
  auto m = add_env();
  m["CNI_IFNAME"] = std::string(100, 'e');
  CHECK(read_env_code(m) == kInvalidEnv);
  for (const char* bad : {"eth0/x", "a:b", "e th0", "..", ".", "eth0\n", "sixteen-chars-xx"}) {
    m["CNI_IFNAME"] = bad;
    INFO("CNI_IFNAME=" << bad);
    CHECK(read_env_code(m) == kInvalidEnv);
  }
  m["CNI_IFNAME"] = "fifteen-chars-x";  // 15: the longest name the kernel takes
  CHECK(read_env_code(m) == 0);
}

TEST_CASE("CNI_CONTAINERID, CNI_NETNS, CNI_PATH and CNI_ARGS are validated", "[security]") {
  struct Case {
    const char* var;
    std::string value;
    bool ok;
  };
  const Case cases[] = {
      {"CNI_CONTAINERID", std::string(64, 'a'), true},
      {"CNI_CONTAINERID", std::string(100, 'a'), false},
      {"CNI_CONTAINERID", "../../etc", false},
      {"CNI_CONTAINERID", "-leading-dash", false},
      {"CNI_CONTAINERID", "ok_id.1-2", true},
      {"CNI_NETNS", "relative/netns", false},
      {"CNI_NETNS", "/var/run/netns/../../etc/shadow", false},
      {"CNI_NETNS", "/" + std::string(5000, 'n'), false},
      {"CNI_NETNS", "/proc/1234/ns/net", true},
      {"CNI_PATH", "/opt/cni/bin:/usr/lib/cni", true},
      {"CNI_PATH", "/opt/cni/bin:relative", false},
      {"CNI_PATH", std::string(20000, '/'), false},
      {"CNI_ARGS", "K8S_POD_NAME=x\x01", false},
      {"CNI_ARGS", std::string(70000, 'a'), false},
  };
  for (const auto& c : cases) {
    auto m = add_env();
    m[c.var] = c.value;
    INFO(c.var << " (" << c.value.size() << " chars) " << c.value.substr(0, 40));
    CHECK((read_env_code(m) == 0) == c.ok);
  }
}

TEST_CASE("the rtnetlink lookup bounds the interface name (no fixed-size stack copy)", "[security]") {
  if (!root()) {
    WARN("skipped: needs root to enter a network namespace");
    return;
  }
  // Our own netns: no interface is created or touched.
  auto r = sys::link_in_netns("/proc/self/ns/net", std::string(100, 'e'));
  REQUIRE_FALSE(r);
  CHECK(r.error().err == EINVAL);
  CHECK(r.error().what.find("1-15 characters") != std::string::npos);
  auto lo = sys::link_in_netns("/proc/self/ns/net", "lo");
  REQUIRE(lo);
  CHECK(lo->ifindex == 1);
}

TEST_CASE("a thread that can't be created is an error, not an exception", "[security]") {
  // In a child: seccomp makes clone/clone3 fail with EAGAIN, as pids.max or
  // memory exhaustion would; netns_cookie must return that as an Error.
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {static_cast<unsigned short>(sizeof(f) / sizeof(f[0])), f};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
      ::_exit(10);
    try {
      auto c = sys::netns_cookie("/proc/self/ns/net");
      ::_exit(!c && c.error().err == EAGAIN ? 0 : 3);
    } catch (...) {
      ::_exit(2);  // the exception escaped: in the plugin, an ADD that fails instead of failing open
    }
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  INFO("child exit: 0 = Error(EAGAIN), 2 = exception escaped, 3 = other result, 10 = seccomp unavailable");
  CHECK(WEXITSTATUS(status) == 0);
}
