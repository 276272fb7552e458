// SPDX-License-Identifier: Apache-2.0
// The CNI protocol as the meshcut plugin speaks it: environment, network
// configuration, result conversion between spec versions, error JSON.
//
// Error channel: a CniError is thrown to main(), which prints the CNI error
// JSON on stdout and exits 1. A plugin invocation is one short process, so an
// invalid input is unrecoverable for it; nothing else throws.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <meshcut/cni/validate.h>

namespace meshcut::cni {

// CNI spec error codes (SPEC.md "Error"); 100+ are meshcut's own.
enum Code : int {
  kIncompatibleVersion = 1,
  kUnsupportedField = 2,
  kUnknownContainer = 3,
  kInvalidEnv = 4,
  kIOFailure = 5,
  kDecodeFailure = 6,
  kInvalidConfig = 7,
  kTryAgainLater = 11,
  kPluginNotAvailable = 50,
  kEnrollFailed = 100,   // failPolicy closed: the pod could not be enrolled
  kCheckMismatch = 101,  // CHECK: record or attachment missing
};

struct CniError {
  int code;
  std::string msg;
  std::string details;
};

inline const std::vector<std::string>& supported_versions() {
  static const std::vector<std::string> v = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
  return v;
}
bool version_supported(const std::string& v);
// <0, 0, >0 like strcmp, on dotted versions.
int compare_versions(const std::string& a, const std::string& b);

struct Env {
  std::string command, container_id, netns, ifname, path;
  std::string args;                       // raw CNI_ARGS
  std::map<std::string, std::string> kv;  // CNI_ARGS parsed: K8S_POD_NAMESPACE=...
};
// Reads CNI_* through GETENV (std::getenv in main, a map in tests). Throws
// CniError(kInvalidEnv) for what the command needs but lacks, and for any
// variable that is set but malformed (validate.h), before it is used.
template <typename GetEnv>
Env read_env(GetEnv getenv);
std::map<std::string, std::string> parse_cni_args(const std::string& s);

struct NetConf {
  std::string cni_version, name, type;
  std::string pin_root = "/sys/fs/bpf/meshcut";
  std::string log_file;  // empty: stderr
  // Which network each attachment record belongs to (GC of one network keeps
  // the others' records): <stateDir>/<containerID>:<ifname> holds the name.
  std::string state_dir = "/var/lib/cni/meshcut";
  int lock_timeout_ms = 2000;           // "lockTimeoutMs": wait for the pin lock, then fail open
  bool fail_closed = false;             // "failPolicy": "closed"
  std::vector<std::string> ns_include;  // empty: all namespaces
  std::vector<std::string> ns_exclude = {"kube-system"};
  bool skip_without_sidecar = false;
  std::string sidecar_annotation = "sidecar.istio.io/status";
  std::string opt_out_annotation = "meshcut.io/enabled";  // "false" opts a pod out
  bool intra_pod = true, same_node = true, cross_node = true;
  std::map<std::string, std::string> annotations;  // runtimeConfig io.kubernetes.cri.pod-annotations
  nlohmann::json prev_result;                      // null if absent
  nlohmann::json raw;
};
// Parses stdin. Throws CniError: kDecodeFailure (not JSON), kIncompatibleVersion,
// kInvalidConfig (wrong types, bad failPolicy, a malformed name or path).
NetConf parse_netconf(const std::string& text);
// JSON with a nesting bound; throws CniError(kDecodeFailure).
nlohmann::json parse_json(const std::string& text);

// Converts a result (any supported version) to TO_VERSION. 0.3.x/0.4.0 carry
// ips[].version; 1.x does not. Throws CniError(kIncompatibleVersion).
nlohmann::json convert_result(const nlohmann::json& result, const std::string& to_version);

std::string error_json(const CniError& e, const std::string& cni_version);
std::string version_json(const std::string& cni_version);

// --- template implementation ---
template <typename GetEnv>
Env read_env(GetEnv getenv) {
  Env e;
  auto get = [&](const char* k) {
    const char* v = getenv(k);
    return v ? std::string(v) : std::string();
  };
  e.command = get("CNI_COMMAND");
  e.container_id = get("CNI_CONTAINERID");
  e.netns = get("CNI_NETNS");
  e.ifname = get("CNI_IFNAME");
  e.path = get("CNI_PATH");
  e.args = get("CNI_ARGS");
  auto bad = [](const char* var, const std::string& why, const char* hint) {
    // The value itself is not quoted: it may be huge or not UTF-8.
    throw CniError{kInvalidEnv, std::string(var) + " " + why, hint};
  };
  if (e.command.size() > 16) bad("CNI_COMMAND", "is too long", "set by the container runtime: ADD, DEL, CHECK, ...");
  if (!e.container_id.empty())
    if (auto w = validate::container_id(e.container_id); !w.empty())
      bad("CNI_CONTAINERID", w, "the container runtime sets it; check its CNI configuration");
  if (!e.ifname.empty())
    if (auto w = validate::ifname(e.ifname); !w.empty())
      bad("CNI_IFNAME", w, "an interface name has 1-15 characters without '/', ':' or whitespace");
  if (!e.netns.empty())
    if (auto w = validate::abs_path(e.netns); !w.empty())
      bad("CNI_NETNS", w, "a network namespace path like /var/run/netns/NAME or /proc/PID/ns/net");
  if (auto w = validate::path_list(e.path); !w.empty())
    bad("CNI_PATH", w, "a ':'-separated list of absolute directories");
  if (auto w = validate::cni_args(e.args); !w.empty()) bad("CNI_ARGS", w, "KEY=VALUE pairs separated by ';'");
  e.kv = parse_cni_args(e.args);
  if (e.command.empty()) throw CniError{kInvalidEnv, "CNI_COMMAND is not set", "run by a container runtime"};
  bool attachment_cmd = e.command == "ADD" || e.command == "DEL" || e.command == "CHECK";
  if (attachment_cmd && e.container_id.empty()) throw CniError{kInvalidEnv, "CNI_CONTAINERID is not set", ""};
  if (attachment_cmd && e.ifname.empty()) throw CniError{kInvalidEnv, "CNI_IFNAME is not set", ""};
  if ((e.command == "ADD" || e.command == "CHECK") && e.netns.empty())
    throw CniError{kInvalidEnv, "CNI_NETNS is not set", "ADD and CHECK need the pod's network namespace"};
  return e;
}

}  // namespace meshcut::cni
