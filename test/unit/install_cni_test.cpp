// SPDX-License-Identifier: Apache-2.0
// install-cni / uninstall-cni on real-format conflists (test/fixtures/conflists), no root needed.
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "install_cni.h"

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;
using namespace meshcut::daemon::install;

namespace {

fs::path fixtures() {
  if (const char* e = ::getenv("MESHCUT_FIXTURES")) return fs::path(e) / "conflists";
#ifdef MESHCUT_FIXTURES_DIR
  return fs::path(MESHCUT_FIXTURES_DIR) / "conflists";
#else
  return fs::path(__FILE__).parent_path().parent_path() / "fixtures" / "conflists";
#endif
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
void spit(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
}
unsigned mode_of(const fs::path& p) {
  struct stat st {};
  ::stat(p.c_str(), &st);
  return st.st_mode & 07777;
}

// name → (bytes, mode) of every file in a dir, hidden ones included.
using Snapshot = std::map<std::string, std::pair<std::string, unsigned>>;
Snapshot snapshot(const fs::path& dir) {
  Snapshot s;
  for (const auto& e : fs::directory_iterator(dir))
    s[e.path().filename().string()] = {slurp(e.path()), mode_of(e.path())};
  return s;
}

bool no_temp_files(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".meshcut-") != std::string::npos) return false;
  return true;
}

// A throw-away node: <tmp>/net.d (copy of a fixture), <tmp>/bin, <tmp>/src/meshcut.
struct Node {
  fs::path root, conf, bin, src;
  InstallOptions opt;
  explicit Node(const std::string& fixture) {
    char tmpl[] = "/tmp/meshcut-install-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    root = tmpl;
    conf = root / "net.d";
    bin = root / "bin";
    src = root / "src";
    fs::create_directories(bin);
    fs::create_directories(src);
    fs::copy(fixtures() / fixture, conf, fs::copy_options::recursive);
    spit(src / "meshcut", "#!/bin/sh\necho dummy meshcut plugin\n");
    opt.cni_bin_dir = bin.string();
    opt.cni_conf_dir = conf.string();
    opt.plugin_src = (src / "meshcut").string();
    opt.plugin_entry = {
        {"type", "meshcut"}, {"pinRoot", "/sys/fs/bpf/meshcut"}, {"logFile", "/var/log/meshcut-cni.log"}};
  }
  ~Node() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
  ojson read(const std::string& name) const { return ojson::parse(slurp(conf / name)); }
};

ojson without_meshcut(ojson doc) {
  auto& pl = doc["plugins"];
  for (auto it = pl.begin(); it != pl.end();) it = (it->value("type", "") == "meshcut") ? pl.erase(it) : it + 1;
  return doc;
}

void check_meshcut_last(const ojson& doc) {
  REQUIRE(doc.contains("plugins"));
  const auto& last = doc["plugins"].back();
  CHECK(last["type"] == "meshcut");
  CHECK(last["pinRoot"] == "/sys/fs/bpf/meshcut");
  CHECK(last["logFile"] == "/var/log/meshcut-cni.log");
  CHECK(last.begin().key() == "type");
  int n = 0;
  for (const auto& p : doc["plugins"]) n += p["type"] == "meshcut";
  CHECK(n == 1);
}

// install → check → install again (same bytes) → uninstall (original bytes) → uninstall again.
void full_cycle(const std::string& fixture, const std::string& active) {
  Node n(fixture);
  const Snapshot before = snapshot(n.conf);
  const ojson orig = n.read(active);

  auto r = install(n.opt);
  REQUIRE(r.ok());
  CHECK(r->changed);
  CHECK(r->binary_changed);
  CHECK(r->conf_changed);
  CHECK_FALSE(r->converted);
  CHECK(r->conf_file == (n.conf / active).string());
  CHECK(r->binary_path == (n.bin / "meshcut").string());
  CHECK(slurp(n.bin / "meshcut") == slurp(n.src / "meshcut"));
  CHECK(mode_of(n.bin / "meshcut") == 0755);

  const ojson got = n.read(active);
  check_meshcut_last(got);
  CHECK(got["plugins"].size() == orig["plugins"].size() + 1);
  CHECK(without_meshcut(got) == orig);  // ordered: other plugins, their keys and list keys in order
  CHECK(mode_of(n.conf / active) == before.at(active).second);
  for (const auto& [name, v] : before)  // every other file untouched
    if (name != active) CHECK(snapshot(n.conf).at(name) == v);
  CHECK_FALSE(needs_reinstall(n.opt));

  const std::string once = slurp(n.conf / active);
  auto r2 = install(n.opt);
  REQUIRE(r2.ok());
  CHECK_FALSE(r2->changed);
  CHECK(slurp(n.conf / active) == once);

  auto u = uninstall(n.opt);
  REQUIRE(u.ok());
  CHECK(u->changed);
  CHECK(snapshot(n.conf) == before);
  CHECK_FALSE(fs::exists(n.bin / "meshcut"));

  auto u2 = uninstall(n.opt);
  REQUIRE(u2.ok());
  CHECK_FALSE(u2->changed);
  CHECK(u2->actions.empty());
  CHECK(snapshot(n.conf) == before);
  CHECK(no_temp_files(n.conf));
  CHECK(no_temp_files(n.bin));
}

}  // namespace

TEST_CASE("install: active config is the byte-wise first .conf/.conflist/.json", "[install]") {
  Node n("two-files");
  auto a = active_config(n.opt.cni_conf_dir);
  REQUIRE(a.ok());
  CHECK(*a == (n.conf / "10-flannel.conflist").string());  // not 9-custom, .00-hidden or 00-old.bak
  auto files = config_files(n.opt.cni_conf_dir);
  REQUIRE(files.ok());
  CHECK(*files == std::vector<std::string>{"10-flannel.conflist", "9-custom.conflist"});
  Node c("calico");
  auto f2 = config_files(c.opt.cni_conf_dir);
  REQUIRE(f2.ok());
  CHECK(*f2 == std::vector<std::string>{"10-calico.conflist"});  // calico-kubeconfig ignored
}

TEST_CASE("install: flannel conflist, full cycle", "[install]") { full_cycle("flannel", "10-flannel.conflist"); }
TEST_CASE("install: calico conflist, full cycle", "[install]") { full_cycle("calico", "10-calico.conflist"); }
TEST_CASE("install: containerd bridge conflist, full cycle", "[install]") {
  full_cycle("bridge-list", "10-containerd-net.conflist");
}
TEST_CASE("install: two files, only the first is changed", "[install]") {
  full_cycle("two-files", "10-flannel.conflist");
}
TEST_CASE("install: conflist in a .json file", "[install]") { full_cycle("json-list", "00-kindnet.json"); }

TEST_CASE("install: single-plugin .conf is converted to .conflist and back", "[install]") {
  Node n("bridge");
  ::chmod((n.conf / "10-bridge.conf").c_str(), 0600);  // mode must survive both ways
  const Snapshot before = snapshot(n.conf);
  const ojson conf = n.read("10-bridge.conf");

  auto r = install(n.opt);
  REQUIRE(r.ok());
  CHECK(r->converted);
  CHECK(r->changed);
  CHECK(r->conf_file == (n.conf / "10-bridge.conflist").string());
  CHECK_FALSE(fs::exists(n.conf / "10-bridge.conf"));
  REQUIRE(fs::exists(n.conf / "10-bridge.conflist"));
  CHECK(mode_of(n.conf / "10-bridge.conflist") == 0600);
  CHECK(snapshot(n.conf).at("99-loopback.conf") == before.at("99-loopback.conf"));
  auto a = active_config(n.opt.cni_conf_dir);
  REQUIRE(a.ok());
  CHECK(*a == (n.conf / "10-bridge.conflist").string());

  const ojson list = n.read("10-bridge.conflist");
  check_meshcut_last(list);
  CHECK(list["cniVersion"] == "0.4.0");
  CHECK(list["name"] == "mynet");
  REQUIRE(list["plugins"].size() == 2);
  ojson main_plugin = conf;
  main_plugin.erase("cniVersion");
  main_plugin.erase("name");
  CHECK(list["plugins"][0] == main_plugin);  // every key, in order, no name/cniVersion
  std::vector<std::string> keys;
  for (const auto& it : list.items()) keys.push_back(it.key());
  CHECK(keys == std::vector<std::string>{"cniVersion", "name", "plugins"});
  CHECK(list["plugins"][1][kMarkerKey]["convertedFrom"] == "10-bridge.conf");
  CHECK_FALSE(needs_reinstall(n.opt));

  const std::string once = slurp(n.conf / "10-bridge.conflist");
  auto r2 = install(n.opt);
  REQUIRE(r2.ok());
  CHECK_FALSE(r2->changed);
  CHECK(slurp(n.conf / "10-bridge.conflist") == once);

  auto u = uninstall(n.opt);
  REQUIRE(u.ok());
  CHECK(u->converted);
  CHECK(snapshot(n.conf) == before);  // the .conf byte for byte with its mode, no .conflist
  CHECK_FALSE(fs::exists(n.bin / "meshcut"));
  auto u2 = uninstall(n.opt);
  REQUIRE(u2.ok());
  CHECK_FALSE(u2->changed);
  CHECK(snapshot(n.conf) == before);
  CHECK(no_temp_files(n.conf));
}

TEST_CASE("install: malformed active config is an error and changes nothing", "[install]") {
  Node n("malformed");
  const Snapshot before = snapshot(n.conf);
  auto r = install(n.opt);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().err == EINVAL);
  CHECK(r.error().what.find("10-flannel.conflist") != std::string::npos);
  CHECK(r.error().what.find("not valid JSON") != std::string::npos);
  CHECK_FALSE(r.error().hint.empty());
  CHECK(snapshot(n.conf) == before);  // and 20-containerd-net.conflist was not used instead
  CHECK_FALSE(fs::exists(n.bin / "meshcut"));
  CHECK_FALSE(needs_reinstall(n.opt));
  CHECK(no_temp_files(n.conf));

  SECTION("valid JSON, wrong shape") {
    spit(n.conf / "10-flannel.conflist", R"({"name":"x","plugins":[{"notype":1}]})");
    auto r2 = install(n.opt);
    REQUIRE_FALSE(r2.ok());
    CHECK(r2.error().err == EINVAL);
    CHECK(r2.error().what.find("plugins") != std::string::npos);
    spit(n.conf / "10-flannel.conflist", R"({"name":"x","cniVersion":"1.0.0"})");
    CHECK_FALSE(install(n.opt).ok());
    spit(n.conf / "10-flannel.conflist", "[1,2]");
    CHECK_FALSE(install(n.opt).ok());
    CHECK_FALSE(fs::exists(n.bin / "meshcut"));
  }
}

TEST_CASE("install: errors name the path, the errno and a hint", "[install]") {
  Node n("flannel");
  SECTION("no config at all") {
    fs::remove(n.conf / "10-flannel.conflist");
    auto r = install(n.opt);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().err == ENOENT);
    CHECK(r.error().what.find(n.conf.string()) != std::string::npos);
    CHECK(r.error().hint.find("main CNI") != std::string::npos);
    CHECK_FALSE(needs_reinstall(n.opt));
  }
  SECTION("no conf dir") {
    n.opt.cni_conf_dir = (n.root / "nope").string();
    auto r = install(n.opt);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().err == ENOENT);
    auto u = uninstall(n.opt);  // nothing to undo is not an error
    CHECK(u.ok());
  }
  SECTION("missing plugin binary: config untouched") {
    const Snapshot before = snapshot(n.conf);
    n.opt.plugin_src = (n.root / "nope").string();
    auto r = install(n.opt);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().err == ENOENT);
    CHECK(r.error().format().find("No such file or directory") != std::string::npos);
    CHECK(snapshot(n.conf) == before);
  }
  SECTION("entry of another type") {
    n.opt.plugin_entry = {{"type", "bandwidth"}};
    auto r = install(n.opt);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().err == EINVAL);
  }
}

TEST_CASE("install: an old meshcut entry is replaced, not duplicated", "[install]") {
  Node n("flannel");
  ojson doc = n.read("10-flannel.conflist");
  const ojson orig = doc;
  doc["plugins"].insert(doc["plugins"].begin() + 1, ojson{{"type", "meshcut"}, {"pinRoot", "/old"}});
  spit(n.conf / "10-flannel.conflist", doc.dump(4));
  CHECK(needs_reinstall(n.opt));  // binary missing and entry differs
  auto r = install(n.opt);
  REQUIRE(r.ok());
  const ojson got = n.read("10-flannel.conflist");
  check_meshcut_last(got);
  CHECK(without_meshcut(got) == orig);
  auto u = uninstall(n.opt);
  REQUIRE(u.ok());
  CHECK(n.read("10-flannel.conflist") == orig);
}

TEST_CASE("install: the default entry is used when none is given", "[install]") {
  Node n("flannel");
  n.opt.plugin_entry = nullptr;
  REQUIRE(install(n.opt).ok());
  check_meshcut_last(n.read("10-flannel.conflist"));
  CHECK_FALSE(needs_reinstall(n.opt));
}

TEST_CASE("install: needs_reinstall after the main CNI rewrites its config", "[install]") {
  Node n("flannel");
  const std::string fixture = slurp(n.conf / "10-flannel.conflist");
  CHECK(needs_reinstall(n.opt));
  REQUIRE(install(n.opt).ok());
  CHECK_FALSE(needs_reinstall(n.opt));

  spit(n.conf / "10-flannel.conflist", fixture);  // flannel's init container ran again
  CHECK(needs_reinstall(n.opt));
  auto r = install(n.opt);
  REQUIRE(r.ok());
  CHECK(r->conf_changed);
  CHECK_FALSE(r->binary_changed);
  CHECK_FALSE(needs_reinstall(n.opt));

  SECTION("binary deleted") {
    fs::remove(n.bin / "meshcut");
    CHECK(needs_reinstall(n.opt));
  }
  SECTION("entry config changed") {
    n.opt.plugin_entry["pinRoot"] = "/sys/fs/bpf/other";
    CHECK(needs_reinstall(n.opt));
    REQUIRE(install(n.opt).ok());
    CHECK(n.read("10-flannel.conflist")["plugins"].back()["pinRoot"] == "/sys/fs/bpf/other");
    CHECK_FALSE(needs_reinstall(n.opt));
    REQUIRE(uninstall(n.opt).ok());
    CHECK(slurp(n.conf / "10-flannel.conflist") == fixture);
  }
  SECTION("another config now sorts first") {
    spit(n.conf / "05-other.conflist", R"({"cniVersion":"1.0.0","name":"o","plugins":[{"type":"ptp"}]})");
    CHECK(needs_reinstall(n.opt));
    REQUIRE(install(n.opt).ok());
    check_meshcut_last(n.read("05-other.conflist"));
    auto u = uninstall(n.opt);  // both files lose their entry
    REQUIRE(u.ok());
    CHECK(slurp(n.conf / "10-flannel.conflist") == fixture);
    CHECK(slurp(n.conf / "05-other.conflist") == R"({"cniVersion":"1.0.0","name":"o","plugins":[{"type":"ptp"}]})");
  }
}

TEST_CASE("uninstall: keeps changes others made to the file since install", "[install]") {
  Node n("flannel");
  REQUIRE(install(n.opt).ok());
  ojson doc = n.read("10-flannel.conflist");
  doc["plugins"][1]["snat"] = true;  // an operator edited portmap
  spit(n.conf / "10-flannel.conflist", doc.dump(2));
  auto u = uninstall(n.opt);
  REQUIRE(u.ok());
  const ojson got = n.read("10-flannel.conflist");
  CHECK(got["plugins"].size() == 2);
  CHECK(got["plugins"][1]["snat"] == true);
  CHECK(got.dump().find("meshcut") == std::string::npos);
}

TEST_CASE("install: .conf conversion refuses to overwrite a foreign .conflist", "[install]") {
  Node n("bridge");
  spit(n.conf / "10-bridge.conflist", R"({"cniVersion":"1.0.0","name":"x","plugins":[{"type":"ptp"}]})");
  const Snapshot before = snapshot(n.conf);
  auto r = install(n.opt);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().err == EEXIST);
  CHECK(snapshot(n.conf) == before);
  CHECK_FALSE(fs::exists(n.bin / "meshcut"));
}

TEST_CASE("install: the main CNI re-creates its .conf after a conversion", "[install]") {
  Node n("bridge");
  const std::string v1 = slurp(n.conf / "10-bridge.conf");
  REQUIRE(install(n.opt).ok());
  std::string v2 = v1;
  v2.replace(v2.find("10.22.0.0/16"), 12, "10.23.0.0/16");
  spit(n.conf / "10-bridge.conf", v2);  // sorts before our 10-bridge.conflist: active again
  CHECK(needs_reinstall(n.opt));

  SECTION("re-install converts the new .conf") {
    auto r = install(n.opt);
    REQUIRE(r.ok());
    CHECK(r->converted);
    CHECK_FALSE(fs::exists(n.conf / "10-bridge.conf"));
    CHECK(n.read("10-bridge.conflist")["plugins"][0]["ipam"]["subnet"] == "10.23.0.0/16");
    REQUIRE(uninstall(n.opt).ok());
    CHECK(slurp(n.conf / "10-bridge.conf") == v2);
    CHECK_FALSE(fs::exists(n.conf / "10-bridge.conflist"));
  }
  SECTION("uninstall leaves the new .conf and drops the stale conflist") {
    REQUIRE(uninstall(n.opt).ok());
    CHECK(slurp(n.conf / "10-bridge.conf") == v2);
    CHECK_FALSE(fs::exists(n.conf / "10-bridge.conflist"));
  }
}
