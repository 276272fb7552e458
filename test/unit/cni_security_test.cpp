// SPDX-License-Identifier: Apache-2.0
// The plugin's pure validation layer (meshcut/cni/validate.h), the logFile
// open, netconf paths and the pin lock's deadline. No root, no kernel
// interfaces: temporary files and directories only.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <meshcut/cni/backend.h>
#include <meshcut/cni/cni.h>
#include "meshcut/pins.h"
#include <meshcut/cni/validate.h>

namespace fs = std::filesystem;
using namespace meshcut;
using namespace meshcut::cni;

namespace {

struct TmpDir {
  fs::path p;
  TmpDir() {
    std::string t = (fs::temp_directory_path() / "mc-sec-XXXXXX").string();
    p = ::mkdtemp(t.data());
  }
  ~TmpDir() {
    std::error_code ec;
    fs::remove_all(p, ec);
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A bridge-plugin veth, as the kernel reports it from both ends.
validate::VethFacts good_veth() {
  validate::VethFacts f;
  f.pod_ifname = "eth0";
  f.pod = {2, "veth", 17, 0};
  f.host_nsid_in_pod = 0;
  f.host_found = true;
  f.host_ifname = "veth1234";
  f.host = {17, "veth", 2, 5};
  f.pod_nsid_in_host = 5;
  return f;
}

int netconf_code(const std::string& text) {
  try {
    (void)parse_netconf(text);
    return 0;
  } catch (const CniError& e) {
    return e.code;
  }
}

}  // namespace

TEST_CASE("only the node end of the pod's own veth is accepted", "[security]") {
  CHECK(validate::veth_pair(good_veth()).empty());

  auto f = good_veth();
  f.pod.kind = "macvlan";  // IFLA_LINK is the parent: the uplink
  f.host.kind = "dummy";
  f.host.link = 0;
  auto why = validate::veth_pair(f);
  CHECK(why.find("macvlan") != std::string::npos);
  CHECK(why.find("not a veth") != std::string::npos);
  f.pod.kind = "ipvlan";
  CHECK(validate::veth_pair(f).find("ipvlan") != std::string::npos);

  struct Case {
    const char* what;
    void (*mutate)(validate::VethFacts&);
  };
  const Case bad[] = {
      {"pod side without a link kind", [](validate::VethFacts& v) { v.pod.kind = ""; }},
      {"veth without a peer", [](validate::VethFacts& v) { v.pod.link = 0; }},
      {"peer in the pod's own netns", [](validate::VethFacts& v) { v.pod.link_netnsid = -1; }},
      {"peer in a third netns", [](validate::VethFacts& v) { v.pod.link_netnsid = 3; }},
      {"node netns has no id in the pod netns", [](validate::VethFacts& v) { v.host_nsid_in_pod = -1; }},
      {"no such interface on the node", [](validate::VethFacts& v) { v.host_found = false; }},
      {"node interface is not a veth", [](validate::VethFacts& v) { v.host.kind = "bridge"; }},
      {"node veth's peer is another interface", [](validate::VethFacts& v) { v.host.link = 3; }},
      {"node veth's peer in another netns", [](validate::VethFacts& v) { v.host.link_netnsid = 6; }},
      {"node veth's peer in its own netns", [](validate::VethFacts& v) { v.host.link_netnsid = -1; }},
      {"answer for another ifindex", [](validate::VethFacts& v) { v.host.ifindex = 18; }},
  };
  for (const auto& c : bad) {
    auto v = good_veth();
    c.mutate(v);
    INFO(c.what);
    CHECK_FALSE(validate::veth_pair(v).empty());
  }
}

TEST_CASE("netconf paths and names are validated", "[security]") {
  auto conf = [](const std::string& extra) {
    return R"({"cniVersion":"1.0.0","name":"net-a","type":"meshcut")" + extra + "}";
  };
  CHECK(netconf_code(conf("")) == 0);
  CHECK(netconf_code(conf(R"(,"logFile":"/var/log/meshcut-cni.log","pinRoot":"/sys/fs/bpf/meshcut")")) == 0);
  CHECK(netconf_code(conf(R"(,"logFile":"")")) == 0);  // stderr
  CHECK(netconf_code(conf(R"(,"logFile":"relative.log")")) == kInvalidConfig);
  CHECK(netconf_code(conf(R"(,"logFile":"/var/log/../../etc/shadow")")) == kInvalidConfig);
  CHECK(netconf_code(conf(R"(,"logFile":"/var/log/x\u0001")")) == kInvalidConfig);
  CHECK(netconf_code(conf(R"(,"logFile":"/)" + std::string(5000, 'l') + "\"")) == kInvalidConfig);
  CHECK(netconf_code(conf(R"(,"pinRoot":"/sys/fs/bpf/./meshcut")")) == kInvalidConfig);
  CHECK(netconf_code(conf(R"(,"pinRoot":"/)" + std::string(4000, 'p') + "\"")) == kInvalidConfig);
  CHECK(netconf_code(conf(R"(,"stateDir":"var/lib")")) == kInvalidConfig);
  CHECK(netconf_code(conf(R"(,"lockTimeoutMs":500)")) == 0);
  CHECK(netconf_code(conf(R"(,"lockTimeoutMs":-1)")) == kInvalidConfig);
  CHECK(netconf_code(conf(R"(,"lockTimeoutMs":"5s")")) == kInvalidConfig);
  CHECK(netconf_code(R"({"cniVersion":"1.0.0","name":"../x","type":"meshcut"})") == kInvalidConfig);
  CHECK(netconf_code(R"({"cniVersion":"1.0.0","name":")" + std::string(200, 'n') + R"(","type":"meshcut"})") ==
        kInvalidConfig);
}

TEST_CASE("a symlink logFile is refused and its target untouched", "[security]") {
  TmpDir d;
  fs::path target = d.p / "precious";
  { std::ofstream(target) << "do not touch\n"; }
  fs::path link = d.p / "meshcut.log";
  fs::create_symlink(target, link);
  auto fd = open_log_file(link.string());
  REQUIRE_FALSE(fd);
  CHECK(fd.error().err == ELOOP);
  CHECK(fd.error().hint.find("symbolic link") != std::string::npos);
  CHECK(slurp(target) == "do not touch\n");

  // A FIFO (would block the open) and a directory are refused too.
  fs::path fifo = d.p / "fifo.log";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_FALSE(open_log_file(fifo.string()));
  CHECK_FALSE(open_log_file(d.p.string()));
  // A hard link to another file would let the plugin append to it.
  fs::path hard = d.p / "hard.log";
  fs::create_hard_link(target, hard);
  CHECK_FALSE(open_log_file(hard.string()));
  CHECK(slurp(target) == "do not touch\n");

  // A regular file (created if missing) is fine.
  auto ok = open_log_file((d.p / "new.log").string());
  REQUIRE(ok);
  CHECK(::write(ok->get(), "x\n", 2) == 2);
  CHECK(slurp(d.p / "new.log") == "x\n");
}

TEST_CASE("the pin lock is taken with a deadline", "[security]") {
  TmpDir d;
  int holder = ::open(d.p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(holder >= 0);
  REQUIRE(::flock(holder, LOCK_EX) == 0);
  auto t0 = std::chrono::steady_clock::now();
  auto lk = PinLock::acquire(d.p.string(), std::chrono::milliseconds(300));
  auto waited = std::chrono::steady_clock::now() - t0;
  REQUIRE_FALSE(lk);
  CHECK(lk.error().err == ETIMEDOUT);
  CHECK(lk.error().hint.find("fuser") != std::string::npos);
  CHECK(waited >= std::chrono::milliseconds(290));
  CHECK(waited < std::chrono::milliseconds(1500));
  CHECK_FALSE(PinLock::acquire(d.p.string(), std::chrono::milliseconds(0)));
  ::close(holder);
  auto again = PinLock::acquire(d.p.string(), std::chrono::milliseconds(300));
  CHECK(again);
  CHECK(PinLock::acquire((d.p / "missing").string(), std::chrono::milliseconds(10)).error().err == ENOENT);
}
