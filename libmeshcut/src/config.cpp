// SPDX-License-Identifier: Apache-2.0
#include "meshcut/config.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "meshcut/sys.h"

namespace meshcut {

Result<SkbVerdict> parse_skb_verdict(const std::string& s) {
  if (s == "auto") return SkbVerdict::automatic;
  if (s == "on") return SkbVerdict::on;
  if (s == "off") return SkbVerdict::off;
  return make_error("invalid skbVerdict '" + s + "'", EINVAL, "use one of: auto, on, off");
}

Result<std::pair<uint32_t, uint32_t>> parse_ipv4_cidr(const std::string& s) {
  auto slash = s.find('/');
  in_addr a{};
  int len = -1;
  if (slash == std::string::npos || inet_pton(AF_INET, s.substr(0, slash).c_str(), &a) != 1 ||
      std::sscanf(s.c_str() + slash + 1, "%d", &len) != 1 || len < 1 || len > 32)
    return make_error("invalid IPv4 CIDR '" + s + "'", EINVAL, "e.g. 10.244.0.0/16");
  uint32_t mask = htonl(len == 32 ? 0xffffffffu : ~(0xffffffffu >> len));
  return std::pair<uint32_t, uint32_t>{a.s_addr & mask, mask};
}

const char* to_string(SkbVerdict v) {
  switch (v) {
    case SkbVerdict::automatic: return "auto";
    case SkbVerdict::on: return "on";
    case SkbVerdict::off: return "off";
  }
  return "auto";
}

Result<DaemonConfig> parse_daemon_config(const std::string& text, DaemonConfig c) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return make_error(std::string("config is not valid JSON: ") + e.what(), EINVAL);
  }
  if (!j.is_object()) return make_error("config must be a JSON object", EINVAL);
  auto want = [&](const char* key, bool ok, const char* type) -> Status {
    if (!ok) return make_error(std::string("config key '") + key + "' must be " + type, EINVAL);
    return ok_status();
  };
  for (auto& [key, v] : j.items()) {
    Status st = ok_status();
    if (key == "pinRoot") {
      st = want("pinRoot", v.is_string() && !v.get<std::string>().empty(), "a non-empty string");
      if (st) c.pin_root = v.get<std::string>();
    } else if (key == "cgroup") {
      st = want("cgroup", v.is_string(), "a string");
      if (st) c.cgroup = v.get<std::string>();
    } else if (key == "maxSockets") {
      st = want("maxSockets", v.is_number_unsigned() && v.get<uint64_t>() >= 2 && v.get<uint64_t>() <= (1u << 24),
                "an integer from 2 to 16777216");
      if (st) c.max_sockets = v.get<uint32_t>();
    } else if (key == "skbVerdict") {
      st = want("skbVerdict", v.is_string(), "a string (auto, on, off)");
      if (st) {
        auto sv = parse_skb_verdict(v.get<std::string>());
        if (!sv) return sv.error();
        c.skb_verdict = *sv;
      }
    } else if (key == "logLevel") {
      st = want("logLevel", v.is_string() && (v == "debug" || v == "info" || v == "warn" || v == "error"),
                "one of debug, info, warn, error");
      if (st) c.log_level = v.get<std::string>();
    } else if (key == "localRtoMinUs") {
      st = want("localRtoMinUs", v.is_number_unsigned() && v.get<uint64_t>() <= 200000,
                "an integer from 0 to 200000 (microseconds)");
      if (st) c.local_rto_min_us = v.get<uint32_t>();
    } else if (key == "gcIntervalSeconds") {
      st = want("gcIntervalSeconds", v.is_number_unsigned() && v.get<uint64_t>() <= 86400,
                "an integer from 0 (off) to 86400");
      if (st) c.gc_interval_s = v.get<uint32_t>();
    } else if (key == "podCIDR") {
      st = want("podCIDR", v.is_string() && parse_ipv4_cidr(v.get<std::string>()).ok(),
                "an IPv4 CIDR like 10.244.0.0/16");
      if (st) c.pod_cidr = v.get<std::string>();
    } else if (key == "overlayDevice") {
      st = want("overlayDevice", v.is_string(), "a device name like flannel.1");
      if (st) c.overlay_dev = v.get<std::string>();
    } else if (key == "crossNode") {
      st = want("crossNode", v.is_boolean(), "true or false");
      if (st) c.cross_node = v.get<bool>();
    } else if (key == "noTracing") {
      st = want("noTracing", v.is_boolean(), "true or false");
      if (st) c.no_tracing = v.get<bool>();
    } else if (key == "metricsAddr") {
      st = want("metricsAddr", v.is_string(), "a string HOST:PORT");
      if (st) c.metrics_addr = v.get<std::string>();
    } else if (key == "servicesFile") {
      st = want("servicesFile", v.is_string(), "a path to the service file (JSON or YAML)");
      if (st) c.services_file = v.get<std::string>();
    } else if (key == "apiAddr") {
      st = want("apiAddr", v.is_string(), "a string HOST:PORT, or \"off\"");
      if (st) c.api_addr = v.get<std::string>();
    } else if (key == "apiTokenFile") {
      st = want("apiTokenFile", v.is_string(), "a path to the file holding the API's bearer token");
      if (st) c.api_token_file = v.get<std::string>();
    } else {
      c.warnings.push_back("unknown config key '" + key + "' ignored");
    }
    if (!st) return st.error();
  }
  return c;
}

Result<DaemonConfig> load_daemon_config(const std::string& path, DaemonConfig defaults) {
  auto text = sys::read_file(path);
  if (!text) return make_error("couldn't read config file '" + path + "'", errno);
  auto r = parse_daemon_config(*text, std::move(defaults));
  if (!r) return make_error("config file '" + path + "': " + r.error().what, r.error().err, r.error().hint);
  return r;
}

Status validate_daemon_config(const DaemonConfig& c) {
  // A pod CIDR turns the tc shortcut on; without tc_overlay on the overlay
  // device, replies arriving from the other node take the normal path while
  // their flow's other direction is shortcut: conntrack never sees the SYN go
  // out, calls the SYN-ACK INVALID and kube-proxy drops it.
  if (!c.pod_cidr.empty() && c.overlay_dev.empty())
    return make_error("a pod CIDR (" + c.pod_cidr +
                          ") is set but no overlay device: the cross-node tc shortcut "
                          "would run without tc_overlay and the other node's replies would be dropped as INVALID",
                      EINVAL,
                      "pass --overlay-dev with the overlay's name (e.g. --overlay-dev flannel.1; config key "
                      "overlayDevice; list them with: ip -d link show type vxlan), or drop --pod-cidr (podCIDR) "
                      "to keep the cross-node shortcut off");
  return ok_status();
}

}  // namespace meshcut
