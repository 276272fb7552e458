// SPDX-License-Identifier: Apache-2.0
// The CNI plugin's decision, without root: config + prevResult + CNI_ARGS ->
// plan, compared with golden files under test/fixtures/cni/plan/<case>/:
// stdin.json (what the runtime writes), env.json (CNI_* variables), plan.json
// (the expected plan, or {"error": {code, msg}}). MESHCUT_UPDATE_GOLDEN=1
// rewrites plan.json; review the diff.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <meshcut/cni/cni.h>
#include <meshcut/cni/plan.h>

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace meshcut::cni;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

fs::path fixtures() {
  if (const char* e = std::getenv("MESHCUT_FIXTURES")) return e;
#ifdef MESHCUT_FIXTURES_DIR
  return MESHCUT_FIXTURES_DIR;
#else
  return fs::path(__FILE__).parent_path().parent_path() / "fixtures";
#endif
}

json plan_for(const std::string& stdin_text, const std::map<std::string, std::string>& env) {
  try {
    Env e = read_env([&](const char* k) -> const char* {
      auto it = env.find(k);
      return it == env.end() ? nullptr : it->second.c_str();
    });
    NetConf c = parse_netconf(stdin_text);
    return make_plan(c, e).to_json();
  } catch (const CniError& err) {
    return json{{"error", {{"code", err.code}, {"msg", err.msg}}}};
  }
}

}  // namespace

TEST_CASE("plan golden files", "[plan]") {
  fs::path dir = fixtures() / "cni" / "plan";
  REQUIRE(fs::is_directory(dir));
  bool update = std::getenv("MESHCUT_UPDATE_GOLDEN") != nullptr;
  int n = 0;
  for (const auto& c : fs::directory_iterator(dir)) {
    if (!c.is_directory()) continue;
    ++n;
    std::map<std::string, std::string> env = json::parse(slurp(c.path() / "env.json"));
    json got = plan_for(slurp(c.path() / "stdin.json"), env);
    fs::path golden = c.path() / "plan.json";
    if (update) std::ofstream(golden) << got.dump(2) << "\n";
    INFO("case " << c.path().filename().string() << "\n got: " << got.dump(2));
    REQUIRE(fs::exists(golden));
    CHECK(got == json::parse(slurp(golden)));
  }
  CHECK(n >= 10);
}

TEST_CASE("result conversion between spec versions", "[cni]") {
  json v04 = {{"cniVersion", "0.4.0"}, {"ips", {{{"version", "4"}, {"address", "10.0.0.2/24"}, {"interface", 0}}}}};
  json v1 = convert_result(v04, "1.0.0");
  CHECK(v1["cniVersion"] == "1.0.0");
  CHECK_FALSE(v1["ips"][0].contains("version"));
  json back = convert_result(v1, "0.4.0");
  CHECK(back["ips"][0]["version"] == "4");
  json v6 = convert_result({{"cniVersion", "1.0.0"}, {"ips", {{{"address", "fd00::2/64"}}}}}, "0.3.1");
  CHECK(v6["ips"][0]["version"] == "6");
  CHECK(convert_result(v1, "1.1.0")["cniVersion"] == "1.1.0");
  CHECK_THROWS_AS(convert_result(v1, "7.0.0"), CniError);
}

TEST_CASE("CNI_ARGS parsing is tolerant", "[cni]") {
  auto kv = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=a=b;junk;;=x");
  CHECK(kv["K8S_POD_NAMESPACE"] == "ns");
  CHECK(kv["K8S_POD_NAME"] == "a=b");
  CHECK(kv.size() == 3);
}

TEST_CASE("missing environment is a CNI error, not a crash", "[cni]") {
  auto none = [](const char*) -> const char* { return nullptr; };
  CHECK_THROWS_AS(read_env(none), CniError);
  std::map<std::string, std::string> add = {{"CNI_COMMAND", "ADD"}, {"CNI_CONTAINERID", "x"}, {"CNI_IFNAME", "eth0"}};
  auto get = [&](const char* k) -> const char* {
    auto it = add.find(k);
    return it == add.end() ? nullptr : it->second.c_str();
  };
  try {
    read_env(get);
    FAIL("no error");
  } catch (const CniError& e) {
    CHECK(e.code == kInvalidEnv);
    CHECK(e.msg.find("CNI_NETNS") != std::string::npos);
  }
  add["CNI_COMMAND"] = "DEL";  // DEL needs no netns
  CHECK_NOTHROW(read_env(get));
}

TEST_CASE("version compare and error JSON", "[cni]") {
  CHECK(compare_versions("0.4.0", "1.0.0") < 0);
  CHECK(compare_versions("1.1.0", "1.0.0") > 0);
  CHECK(compare_versions("0.3.1", "0.3.1") == 0);
  json e = json::parse(error_json({kInvalidConfig, "bad", "why"}, "1.0.0"));
  CHECK(e == json{{"cniVersion", "1.0.0"}, {"code", 7}, {"msg", "bad"}, {"details", "why"}});
  CHECK(json::parse(version_json("0.4.0"))["cniVersion"] == "0.4.0");
}
