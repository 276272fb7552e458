// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the CNI plugin's input side: the network configuration
// on stdin (with its prevResult), CNI_ARGS, and result conversion.
//
// Input layout: <stdin text> [ '\0' <CNI_ARGS> [ '\0' <CNI_IFNAME> ] ]
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
#include <cstdlib>
#include <exception>
#include <map>
#include <set>
#include <string>
#include <string_view>

#include "cni.h"
#include "plan.h"

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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string all(reinterpret_cast<const char*>(data), size);
  size_t nul = all.find('\0');
  std::string text = all.substr(0, nul);
  std::string args, ifname;
  bool have_args = nul != std::string::npos;
  if (have_args) {
    std::string rest = all.substr(nul + 1);
    size_t nul2 = rest.find('\0');
    args = rest.substr(0, nul2);
    if (nul2 != std::string::npos) ifname = rest.substr(nul2 + 1);
  }

  // CNI_ARGS parser on its own: never throws, keys are non-empty and '='/';'-free.
  guarded("parse_cni_args(all)", [&] {
    for (const auto& [k, v] : parse_cni_args(all)) {
      if (k.empty()) finding("parse_cni_args", "invariant", "empty key");
      if (k.find_first_of("=;") != std::string::npos) finding("parse_cni_args", "invariant", "key holds = or ;");
      if (v.find(';') != std::string::npos) finding("parse_cni_args", "invariant", "value holds ;");
    }
  });

  NetConf conf;
  if (!guarded("parse_netconf", [&] { conf = parse_netconf(text); })) return 0;
  if (!version_supported(conf.cni_version)) finding("parse_netconf", "invariant", "unsupported cniVersion accepted");

  guarded("error_json/version_json", [&] {
    (void)json::parse(error_json(CniError{kInvalidConfig, "x", "y"}, conf.cni_version));
    (void)json::parse(version_json(conf.cni_version));
  });

  // ADD with the golden environment.
  auto base = fixed_env();
  Env env;
  if (guarded("read_env(fixed)", [&] { env = env_from(base); })) plan_once("make_plan(fixed env)", conf, env);

  // ADD with CNI_ARGS (and CNI_IFNAME) from the input.
  if (have_args) {
    auto m = base;
    m["CNI_ARGS"] = args.c_str();  // an environment variable ends at NUL
    if (!ifname.empty()) m["CNI_IFNAME"] = ifname.c_str();
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
