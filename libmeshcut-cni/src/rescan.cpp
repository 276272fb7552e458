// SPDX-License-Identifier: Apache-2.0
#include <meshcut/cni/rescan.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include <meshcut/cni/backend.h>
#include <meshcut/cni/cni.h>
#include <meshcut/cni/plan.h>
#include "meshcut/log.h"
#include "meshcut/maps.h"
#include "meshcut/pins.h"

namespace meshcut::cni {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string base64_decode(const std::string& in) {
  static const std::string chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int val = 0, bits = -8;
  for (unsigned char c : in) {
    if (c == '=') break;
    auto pos = chars.find(static_cast<char>(c));
    if (pos == std::string::npos) {
      if (c == '\n' || c == '\r') continue;
      return {};
    }
    val = (val << 6) + static_cast<int>(pos);
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xff));
      bits -= 8;
    }
  }
  return out;
}

namespace {

bool has_record(const std::string& pin_root, const std::string& cid, const std::string& ifname) {
  auto maps = PinnedMaps::open(PinLayout(pin_root));
  if (!maps) return true;  // can't tell: don't touch
  auto key = PinnedMaps::cni_key(cid, ifname);
  if (!key) return true;
  auto rec = maps->get_cni(*key);
  return !rec || rec->has_value();
}

}  // namespace

int rescan_cache(const std::string& cache_dir, const std::string& pin_root) {
  fs::path dir = fs::path(cache_dir) / "results";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  int enrolled = 0;
  for (const auto& f : fs::directory_iterator(dir, ec)) {
    try {
      std::ifstream in(f.path());
      std::stringstream ss;
      ss << in.rdbuf();
      json c = parse_json(ss.str());
      if (c.value("kind", "") != "cniCacheV1") continue;
      json netconf = parse_json(base64_decode(c.value("config", "")));
      const json* entry = nullptr;  // points into netconf: iterate it, not a copy
      if (netconf.contains("plugins") && netconf["plugins"].is_array())
        for (const auto& p : netconf["plugins"])
          if (p.is_object() && p.value("type", "") == "meshcut" &&
              p.value("pinRoot", "/sys/fs/bpf/meshcut") == pin_root)
            entry = &p;
      if (!entry) continue;
      std::string cid = c.value("containerId", ""), ifname = c.value("ifName", "");
      const json result = c.value("result", json::object());
      std::string netns;
      for (const auto& i : result.value("interfaces", json::array()))
        if (i.value("name", "") == ifname) netns = i.value("sandbox", "");
      if (cid.empty() || netns.empty() || !fs::exists(netns) || has_record(pin_root, cid, ifname)) continue;

      json conf = *entry;
      conf["name"] = netconf.value("name", "");
      conf["cniVersion"] = netconf.value("cniVersion", "1.0.0");
      conf["prevResult"] = result;
      if (c.contains("capabilityArgs")) {
        json rc = json::object();
        for (auto& [k, v] : c["capabilityArgs"].items())
          if (entry->value("capabilities", json::object()).value(k, false)) rc[k] = v;
        conf["runtimeConfig"] = rc;
      }
      std::string args;
      for (const auto& kv : c.value("cniArgs", json::array()))
        if (kv.is_array() && kv.size() == 2)
          args += (args.empty() ? "" : ";") + kv[0].get<std::string>() + "=" + kv[1].get<std::string>();
      std::map<std::string, std::string> envm = {{"CNI_COMMAND", "ADD"},
                                                 {"CNI_CONTAINERID", cid},
                                                 {"CNI_NETNS", netns},
                                                 {"CNI_IFNAME", ifname},
                                                 {"CNI_ARGS", args}};
      Env env = read_env([&](const char* k) -> const char* {
        auto it = envm.find(k);
        return it == envm.end() ? nullptr : it->second.c_str();
      });
      NetConf nc = parse_netconf(conf.dump());
      nc.fail_closed = false;
      if (!make_plan(nc, env).enroll) continue;  // left alone on purpose (kube-system, opt-out, ...)
      cmd_add(nc, env);
      if (has_record(pin_root, cid, ifname)) {
        ++enrolled;
        log::info("re-scan: enrolled a pod that started while meshcutd was down",
                  {{"containerID", cid}, {"netns", netns}, {"cache", f.path().string()}});
      }
    } catch (const CniError& e) {
      log::warn("re-scan: skipped a cache entry", {{"file", f.path().string()}, {"error", e.msg}});
    } catch (const std::exception& e) {
      log::debug("re-scan: unreadable cache entry", {{"file", f.path().string()}, {"error", e.what()}});
    }
  }
  return enrolled;
}

}  // namespace meshcut::cni
