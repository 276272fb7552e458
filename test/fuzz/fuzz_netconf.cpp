// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the CNI plugin's input side: the network configuration
// on stdin (with its prevResult), the CNI_* environment, result conversion,
// and the backend's validation layer (validate.h: names, paths, and the veth
// peer decision over kernel facts) — the pure layer only, no interface is read.
//
// Input layout, fields separated by NUL (each optional, in this order):
//   <stdin text> \0 <CNI_ARGS> \0 <CNI_IFNAME> \0 <CNI_CONTAINERID> \0 <CNI_NETNS>
//   \0 <CNI_PATH> \0 <veth facts: raw bytes>
// The whole input is also fed to parse_cni_args on its own.
//
// Contract under test (cni.h): invalid input throws meshcut::cni::CniError and
// nothing else. Any other exception (nlohmann::json::type_error, out_of_range,
// std::bad_alloc, ...) is a finding: the target prints the stage and what(),
// then aborts so libFuzzer saves the input. A crash, sanitizer report or leak
// is a finding too. Build and run: test/fuzz/run.sh [SECONDS].
//
// MESHCUT_FUZZ_LENIENT=1: report each distinct non-CniError exception once on
// stderr and keep going (to explore past a known finding); not for CI.
#include <cstdint>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <meshcut/cni/cni.h>
#include <meshcut/cni/plan.h>
#include <meshcut/cni/validate.h>

using json = nlohmann::json;
using namespace meshcut::cni;

namespace {

bool lenient() {
  static const bool l = [] {
    const char* e = std::getenv("MESHCUT_FUZZ_LENIENT");
    return e && *e && std::string_view(e) != "0";
  }();
  return l;
}

[[noreturn]] void finding(const char* stage, const char* kind, const char* what) {
  std::fprintf(stderr, "\n==meshcut-fuzz== FINDING at %s: %s: %s\n", stage, kind, what);
  std::fflush(stderr);
  std::abort();
}

void unexpected(const char* stage, const char* kind, const char* what) {
  if (!lenient()) finding(stage, kind, what);
  // One line per class: the variable tail of what() (offsets, bytes, numbers) is cut.
  static std::set<std::string> seen;
  std::string w = what;
  for (const char* cut : {" at index", " parsing '", ": syntax error", " - "})
    if (auto pos = w.find(cut); pos != std::string::npos) w.resize(pos);
  std::string key = std::string(stage) + " | " + kind + " | " + w;
  if (seen.insert(key).second) std::fprintf(stderr, "==meshcut-fuzz== (lenient) %s\n", key.c_str());
}

// Runs F; CniError is the expected failure (returns false), anything else is a
// finding. Returns true if F completed.
template <typename F>
bool guarded(const char* stage, F&& f) {
  CniError err;
  try {
    f();
    return true;
  } catch (const CniError& e) {
    err = e;
  } catch (const json::exception& e) {
    unexpected(stage, "nlohmann::json exception (not CniError)", e.what());
    return false;
  } catch (const std::exception& e) {
    unexpected(stage, "std::exception (not CniError)", e.what());
    return false;
  } catch (...) {
    unexpected(stage, "unknown exception", "");
    return false;
  }
  // The expected error must be reportable the way main() reports it: the CNI
  // error JSON on stdout (strict dump) and a log line.
  try {
    std::string out = error_json(err, "1.1.0");
    (void)json::parse(out);
  } catch (const std::exception& e) {
    std::string where = std::string("error_json(CniError from ") + stage + ")";
    unexpected(where.c_str(), "exception while reporting a CniError", e.what());
  }
  return false;
}

// The fixed ADD environment of the golden cases (test/fixtures/cni/plan/*/env.json).
std::map<std::string, std::string> fixed_env() {
  return {{"CNI_COMMAND", "ADD"},
          {"CNI_CONTAINERID", "c0ffee"},
          {"CNI_NETNS", "/var/run/netns/cni-1234"},
          {"CNI_IFNAME", "eth0"},
          {"CNI_PATH", "/opt/cni/bin"},
          {"CNI_ARGS",
           "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=productpage-v1-7d4;K8S_POD_UID=9a8b-7c6d;"
           "K8S_POD_INFRA_CONTAINER_ID=c0ffee"}};
}

Env env_from(const std::map<std::string, std::string>& m) {
  return read_env([&](const char* k) -> const char* {
    auto it = m.find(k);
    return it == m.end() ? nullptr : it->second.c_str();
  });
}

void plan_once(const char* stage, const NetConf& conf, const Env& env) {
  guarded(stage, [&] {
    Plan p = make_plan(conf, env);
    // What the plugin prints on ADD (strict dump, like main()), and the plan as
    // the logger/tests serialize it (CNI_ARGS bytes need not be UTF-8).
    std::string out = p.result.dump();
    std::string pj = p.to_json().dump(-1, ' ', false, json::error_handler_t::replace);
    if (p.enroll != p.skip_reason.empty()) finding(stage, "invariant", "enroll != skip_reason.empty()");
    if (p.enroll && p.ipv4.empty()) finding(stage, "invariant", "enrolled without an IPv4 address");
    if (p.attach_tc && !p.enroll) finding(stage, "invariant", "attach_tc without enroll");
    (void)out;
    (void)pj;
  });
}

// What the backend copies into fixed-size record fields once read_env accepted
// the environment: bounded copies, as backend.cpp/maps.cpp do (ASan checks).
void backend_copies(const char* stage, const Env& e) {
  char ifname[16] = {}, cid[72] = {}, netns[128] = {};
  if (e.ifname.size() > validate::kMaxIfname) finding(stage, "invariant", "accepted CNI_IFNAME over 15 characters");
  if (e.container_id.size() > validate::kMaxContainerId)
    finding(stage, "invariant", "accepted a CNI_CONTAINERID over 71");
  if (e.ifname.find_first_of("/: \t\n") != std::string::npos) finding(stage, "invariant", "accepted '/', ':' or space");
  if (!e.netns.empty() && e.netns[0] != '/') finding(stage, "invariant", "accepted a relative CNI_NETNS");
  std::memcpy(ifname, e.ifname.data(), e.ifname.size());
  std::memcpy(cid, e.container_id.data(), e.container_id.size());
  std::memcpy(netns, e.netns.data(), std::min(e.netns.size(), sizeof(netns) - 1));
  // The owner file name <containerID>:<ifname> is one path component.
  std::string owner = e.container_id + ":" + e.ifname;
  if (owner.find('/') != std::string::npos || owner.find("..") == 0) finding(stage, "invariant", "owner file escapes");
}

// Kernel facts for validate::veth_pair from raw bytes: any combination of
// kinds, indexes and netns ids, including the macvlan/ipvlan shape.
validate::VethFacts veth_facts(const std::string& b) {
  size_t i = 0;
  auto byte = [&]() -> int { return i < b.size() ? static_cast<unsigned char>(b[i++]) : 0; };
  auto small = [&]() { return byte() % 8 - 1; };  // -1..6: absent ids and collisions
  static const char* kinds[] = {"veth", "macvlan", "ipvlan", "", "dummy", "bridge", "macvtap", "vet"};
  validate::VethFacts f;
  f.pod_ifname = "eth0";
  f.pod = {small(), kinds[byte() % 8], small(), small()};
  f.host_nsid_in_pod = small();
  f.host_found = byte() & 1;
  f.host_ifname = std::string(b.substr(std::min(b.size(), i), 15));
  f.host = {small(), kinds[byte() % 8], small(), small()};
  f.pod_nsid_in_host = small();
  return f;
}

void veth_once(const validate::VethFacts& f) {
  bool ok = validate::veth_pair(f).empty();
  bool want = f.pod.kind == "veth" && f.pod.link > 0 && f.pod.link_netnsid >= 0 &&
              f.pod.link_netnsid == f.host_nsid_in_pod && f.host_found && f.host.ifindex == f.pod.link &&
              f.host.kind == "veth" && f.host.link == f.pod.ifindex && f.host.link_netnsid >= 0 &&
              f.host.link_netnsid == f.pod_nsid_in_host;
  if (ok != want) finding("validate::veth_pair", "invariant", ok ? "accepted a non-peer" : "refused a true peer");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string all(reinterpret_cast<const char*>(data), size);
  size_t nul = all.find('\0');
  std::string text = all.substr(0, nul);
  // Fields after the netconf text, split at NUL.
  std::vector<std::string> field;
  for (size_t pos = nul; pos != std::string::npos;) {
    size_t next = all.find('\0', pos + 1);
    field.push_back(all.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1));
    pos = next;
    if (field.size() == 6) {  // the rest, NULs included, is the veth facts
      if (pos != std::string::npos) field.push_back(all.substr(pos + 1));
      break;
    }
  }
  auto fld = [&](size_t k) { return k < field.size() ? field[k] : std::string(); };
  bool have_args = !field.empty();
  std::string args = fld(0), ifname = fld(1), cid = fld(2), netns = fld(3), cni_path = fld(4);

  // The validation layer on each raw field, then the veth decision.
  guarded("validate", [&] {
    for (const auto& f : field) {
      (void)validate::ifname(f);
      (void)validate::container_id(f);
      (void)validate::network_name(f);
      (void)validate::abs_path(f);
      (void)validate::path_list(f);
      (void)validate::cni_args(f);
    }
    veth_once(veth_facts(fld(5)));
  });

  // CNI_ARGS parser on its own: never throws, keys are non-empty and '='/';'-free.
  guarded("parse_cni_args(all)", [&] {
    for (const auto& [k, v] : parse_cni_args(all)) {
      if (k.empty()) finding("parse_cni_args", "invariant", "empty key");
      if (k.find_first_of("=;") != std::string::npos) finding("parse_cni_args", "invariant", "key holds = or ;");
      if (v.find(';') != std::string::npos) finding("parse_cni_args", "invariant", "value holds ;");
    }
  });

  // The environment alone (every command): what read_env accepts is safe to copy.
  for (const char* cmd : {"ADD", "DEL", "GC"}) {
    auto m = fixed_env();
    m["CNI_COMMAND"] = cmd;
    if (have_args) {
      m["CNI_ARGS"] = args.c_str();  // an environment variable ends at NUL
      m["CNI_IFNAME"] = ifname.c_str();
      m["CNI_CONTAINERID"] = cid.c_str();
      m["CNI_NETNS"] = netns.c_str();
      m["CNI_PATH"] = cni_path.c_str();
    }
    Env e;
    if (guarded("read_env(input env)", [&] { e = env_from(m); })) backend_copies("read_env(input env)", e);
  }

  NetConf conf;
  if (!guarded("parse_netconf", [&] { conf = parse_netconf(text); })) return 0;
  if (!version_supported(conf.cni_version)) finding("parse_netconf", "invariant", "unsupported cniVersion accepted");
  // Paths the plugin opens as root: accepted only if valid.
  if (!validate::abs_path(conf.pin_root).empty() || !validate::abs_path(conf.state_dir).empty() ||
      (!conf.log_file.empty() && !validate::abs_path(conf.log_file).empty()))
    finding("parse_netconf", "invariant", "accepted an invalid pinRoot/stateDir/logFile");
  if (!conf.name.empty() && !validate::network_name(conf.name).empty())
    finding("parse_netconf", "invariant", "accepted an invalid network name");

  guarded("error_json/version_json", [&] {
    (void)json::parse(error_json(CniError{kInvalidConfig, "x", "y"}, conf.cni_version));
    (void)json::parse(version_json(conf.cni_version));
  });

  // ADD with the golden environment.
  auto base = fixed_env();
  Env env;
  if (guarded("read_env(fixed)", [&] { env = env_from(base); })) plan_once("make_plan(fixed env)", conf, env);

  // ADD with the environment from the input.
  if (have_args) {
    auto m = base;
    m["CNI_ARGS"] = args.c_str();  // an environment variable ends at NUL
    if (!ifname.empty()) m["CNI_IFNAME"] = ifname.c_str();
    if (!cid.empty()) m["CNI_CONTAINERID"] = cid.c_str();
    if (!netns.empty()) m["CNI_NETNS"] = netns.c_str();
    if (!cni_path.empty()) m["CNI_PATH"] = cni_path.c_str();
    Env e2;
    if (guarded("read_env(input args)", [&] { e2 = env_from(m); })) plan_once("make_plan(input CNI_ARGS)", conf, e2);
  }

  // prevResult conversion to every supported version, then back.
  if (conf.prev_result.is_object()) {
    for (const auto& v : supported_versions()) {
      guarded("convert_result", [&] {
        json r = convert_result(conf.prev_result, v);
        if (r.value("cniVersion", std::string()) != v) finding("convert_result", "invariant", "cniVersion not set");
        (void)r.dump();
        for (const auto& w : supported_versions()) (void)convert_result(r, w).dump();
      });
    }
  }
  return 0;
}
