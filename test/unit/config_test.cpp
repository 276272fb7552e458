// SPDX-License-Identifier: Apache-2.0
#include <catch2/catch.hpp>

#include "meshcut/config.h"

using namespace meshcut;

TEST_CASE("config file: every key, over the defaults", "[config]") {
  auto c = parse_daemon_config(R"({"pinRoot":"/sys/fs/bpf/x","cgroup":"/sys/fs/cgroup/kubepods",
      "maxSockets":1024,"skbVerdict":"off","logLevel":"debug","metricsAddr":"0.0.0.0:9464",
      "localRtoMinUs":0})");
  REQUIRE(c.ok());
  CHECK(c->pin_root == "/sys/fs/bpf/x");
  CHECK(c->cgroup == "/sys/fs/cgroup/kubepods");
  CHECK(c->max_sockets == 1024);
  CHECK(c->skb_verdict == SkbVerdict::off);
  CHECK(c->log_level == "debug");
  CHECK(c->metrics_addr == "0.0.0.0:9464");
  CHECK(c->local_rto_min_us == 0);
  CHECK(c->warnings.empty());
}

TEST_CASE("config file: empty object keeps defaults; unknown keys warn", "[config]") {
  auto c = parse_daemon_config(R"({"future":1})");
  REQUIRE(c.ok());
  CHECK(c->pin_root == "/sys/fs/bpf/meshcut");
  CHECK(c->skb_verdict == SkbVerdict::automatic);
  REQUIRE(c->warnings.size() == 1);
  CHECK(c->warnings[0].find("future") != std::string::npos);
}

TEST_CASE("config file: errors name the key and the expected type", "[config]") {
  auto bad_json = parse_daemon_config("{not json");
  REQUIRE_FALSE(bad_json.ok());
  CHECK(bad_json.error().what.find("not valid JSON") != std::string::npos);

  auto not_obj = parse_daemon_config("[1,2]");
  REQUIRE_FALSE(not_obj.ok());

  auto bad_type = parse_daemon_config(R"({"maxSockets":"many"})");
  REQUIRE_FALSE(bad_type.ok());
  CHECK(bad_type.error().what.find("maxSockets") != std::string::npos);
  CHECK(bad_type.error().err == EINVAL);

  auto bad_range = parse_daemon_config(R"({"maxSockets":1})");
  REQUIRE_FALSE(bad_range.ok());
  REQUIRE_FALSE(parse_daemon_config(R"({"localRtoMinUs":300000})").ok());

  auto bad_verdict = parse_daemon_config(R"({"skbVerdict":"sometimes"})");
  REQUIRE_FALSE(bad_verdict.ok());
  CHECK(bad_verdict.error().hint.find("auto, on, off") != std::string::npos);

  auto empty_root = parse_daemon_config(R"({"pinRoot":""})");
  REQUIRE_FALSE(empty_root.ok());
}

TEST_CASE("config file: missing file says which", "[config]") {
  auto c = load_daemon_config("/nonexistent/meshcutd.json");
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().what.find("/nonexistent/meshcutd.json") != std::string::npos);
  CHECK(c.error().err == ENOENT);
}

TEST_CASE("config: a pod CIDR without an overlay device is refused, with the fix", "[config]") {
  DaemonConfig c;
  REQUIRE(validate_daemon_config(c).ok());  // neither: the tc shortcut is off
  c.pod_cidr = "10.244.0.0/16";
  auto st = validate_daemon_config(c);
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().err == EINVAL);
  CHECK(st.error().what.find("10.244.0.0/16") != std::string::npos);
  CHECK(st.error().what.find("overlay device") != std::string::npos);
  CHECK(st.error().hint.find("--overlay-dev") != std::string::npos);
  CHECK(st.error().hint.find("overlayDevice") != std::string::npos);
  c.overlay_dev = "flannel.1";
  CHECK(validate_daemon_config(c).ok());
  // From the file as well: the check sees the assembled config.
  auto f = parse_daemon_config(R"({"podCIDR":"10.244.0.0/16"})");
  REQUIRE(f.ok());
  CHECK_FALSE(validate_daemon_config(*f).ok());
}
