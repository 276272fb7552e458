// SPDX-License-Identifier: Apache-2.0
#include <meshcut/cni/cni.h>

#include <sstream>

namespace meshcut::cni {

using json = nlohmann::json;

bool version_supported(const std::string& v) {
  for (const auto& s : supported_versions())
    if (s == v) return true;
  return false;
}

int compare_versions(const std::string& a, const std::string& b) {
  std::istringstream ia(a), ib(b);
  for (int i = 0; i < 3; ++i) {
    int x = 0, y = 0;
    char dot;
    ia >> x;
    ib >> y;
    if (x != y) return x < y ? -1 : 1;
    ia >> dot;
    ib >> dot;
  }
  return 0;
}

std::map<std::string, std::string> parse_cni_args(const std::string& s) {
  std::map<std::string, std::string> kv;
  std::istringstream in(s);
  std::string item;
  while (std::getline(in, item, ';')) {
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) continue;  // tolerant: unknown shapes ignored
    kv[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return kv;
}

namespace {

void want(bool ok, const std::string& key, const std::string& what) {
  if (!ok) throw CniError{kInvalidConfig, "invalid meshcut config: '" + key + "' must be " + what, ""};
}

std::vector<std::string> string_list(const json& v, const std::string& key) {
  want(v.is_array(), key, "a list of strings");
  std::vector<std::string> out;
  for (const auto& x : v) {
    want(x.is_string(), key, "a list of strings");
    out.push_back(x.get<std::string>());
  }
  return out;
}

}  // namespace

json parse_json(const std::string& text) {
  // Depth bound: a deeply nested document would exhaust the stack in the
  // recursive copies and dumps (found by fuzzing). No CNI config nests deeper.
  constexpr int kMaxDepth = 64;
  auto limit = [](int depth, json::parse_event_t, json&) {
    if (depth > kMaxDepth) throw CniError{kDecodeFailure, "network configuration nests deeper than 64 levels", ""};
    return true;
  };
  try {
    return json::parse(text, limit);
  } catch (const json::exception& e) {  // parse_error, out_of_range (1e999), ...
    throw CniError{kDecodeFailure, "network configuration on stdin is not valid JSON", e.what()};
  }
}

NetConf parse_netconf(const std::string& text) {
  NetConf c;
  c.raw = parse_json(text);
  const json& j = c.raw;
  if (!j.is_object()) throw CniError{kDecodeFailure, "network configuration must be a JSON object", ""};
  want(j.contains("cniVersion") && j["cniVersion"].is_string(), "cniVersion", "a string");
  c.cni_version = j["cniVersion"].get<std::string>();
  if (!version_supported(c.cni_version))
    throw CniError{kIncompatibleVersion, "meshcut does not support cniVersion " + c.cni_version,
                   "supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"};
  if (j.contains("name")) {
    want(j["name"].is_string(), "name", "a string");
    c.name = j["name"].get<std::string>();
    if (auto w = validate::network_name(c.name); !w.empty())
      throw CniError{kInvalidConfig, "invalid meshcut config: network 'name' " + w, ""};
  }
  if (j.contains("type")) {
    want(j["type"].is_string(), "type", "a string");
    c.type = j["type"].get<std::string>();
  }
  auto str = [&](const char* key, std::string& out) {
    if (!j.contains(key)) return;
    want(j[key].is_string(), key, "a string");
    out = j[key].get<std::string>();
  };
  auto boolean = [&](const char* key, bool& out) {
    if (!j.contains(key)) return;
    want(j[key].is_boolean(), key, "true or false");
    out = j[key].get<bool>();
  };
  auto path = [&](const char* key, std::string& out, size_t max) {
    str(key, out);
    if (std::string(key) == "logFile" && out.empty()) return;  // "": stderr
    if (auto w = validate::abs_path(out, max); !w.empty())
      throw CniError{kInvalidConfig, std::string("invalid meshcut config: '") + key + "' " + w,
                     "give an absolute path without '.' or '..' components"};
  };
  path("pinRoot", c.pin_root, validate::kMaxPinRoot);
  path("logFile", c.log_file, validate::kMaxPath);
  path("stateDir", c.state_dir, validate::kMaxPath - validate::kMaxContainerId - validate::kMaxIfname - 2);
  if (j.contains("lockTimeoutMs")) {
    want(j["lockTimeoutMs"].is_number_integer() && j["lockTimeoutMs"].get<int64_t>() >= 0 &&
             j["lockTimeoutMs"].get<int64_t>() <= 60000,
         "lockTimeoutMs", "an integer from 0 to 60000 (milliseconds)");
    c.lock_timeout_ms = static_cast<int>(j["lockTimeoutMs"].get<int64_t>());
  }
  if (j.contains("failPolicy")) {
    want(j["failPolicy"] == "open" || j["failPolicy"] == "closed", "failPolicy", "\"open\" or \"closed\"");
    c.fail_closed = j["failPolicy"] == "closed";
  }
  if (j.contains("namespaces")) {
    const json& ns = j["namespaces"];
    want(ns.is_object(), "namespaces", "an object with include/exclude lists");
    if (ns.contains("include")) c.ns_include = string_list(ns["include"], "namespaces.include");
    if (ns.contains("exclude")) c.ns_exclude = string_list(ns["exclude"], "namespaces.exclude");
  }
  boolean("skipWithoutSidecar", c.skip_without_sidecar);
  str("sidecarAnnotation", c.sidecar_annotation);
  str("optOutAnnotation", c.opt_out_annotation);
  boolean("intraPod", c.intra_pod);
  boolean("sameNode", c.same_node);
  boolean("crossNode", c.cross_node);
  if (j.contains("runtimeConfig") && j["runtimeConfig"].is_object()) {
    const json& rc = j["runtimeConfig"];
    auto it = rc.find("io.kubernetes.cri.pod-annotations");
    if (it != rc.end() && it->is_object())
      for (auto& [k, v] : it->items())
        if (v.is_string()) c.annotations[k] = v.get<std::string>();
  }
  if (j.contains("prevResult") && !j["prevResult"].is_null()) {
    want(j["prevResult"].is_object(), "prevResult", "an object");
    c.prev_result = j["prevResult"];
  }
  return c;
}

json convert_result(const json& result, const std::string& to) {
  if (!version_supported(to)) throw CniError{kIncompatibleVersion, "cannot convert a result to cniVersion " + to, ""};
  json out = result;
  bool to_v1 = compare_versions(to, "1.0.0") >= 0;
  if (out.contains("ips") && out["ips"].is_array()) {
    for (auto& ip : out["ips"]) {
      if (!ip.is_object()) continue;
      if (to_v1) {
        ip.erase("version");  // 1.0.0 dropped it
      } else if (!ip.contains("version")) {
        std::string a = ip.contains("address") && ip["address"].is_string() ? ip["address"].get<std::string>() : "";
        ip["version"] = a.find(':') != std::string::npos ? "6" : "4";
      }
    }
  }
  out["cniVersion"] = to;
  return out;
}

std::string error_json(const CniError& e, const std::string& v) {
  json j = {{"cniVersion", version_supported(v) ? v : "1.1.0"}, {"code", e.code}, {"msg", e.msg}};
  if (!e.details.empty()) j["details"] = e.details;
  // Messages may quote the caller's bytes (not always UTF-8): never throw here.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string version_json(const std::string& v) {
  return json{{"cniVersion", version_supported(v) ? v : "1.1.0"}, {"supportedVersions", supported_versions()}}.dump();
}

}  // namespace meshcut::cni
