// SPDX-License-Identifier: Apache-2.0
// `status` and `pods`: a human table by default, --json for machines.
#include "commands.h"

#include <arpa/inet.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "conns.h"
#include "loader.h"
#include "meshcut/abi.h"
#include "meshcut/maps.h"
#include "meshcut/pins.h"
#include "meshcut/sys.h"
#include "meshcut/pods.h"
#include "probe.h"

namespace meshcut::daemon {

namespace {

int not_running(const std::string& pin_root, bool json, const Error& e) {
  if (json) {
    std::printf("%s\n",
                nlohmann::json{{"pin_root", pin_root}, {"installed", false}, {"error", e.format()}}.dump(2).c_str());
  } else {
    std::fprintf(stderr, "meshcutd: %s\n", e.format().c_str());
  }
  return 3;
}

// The kernel's allocation size for N bytes from kmalloc (its size classes).
uint64_t kmalloc_size(uint64_t n) {
  for (uint64_t c : {8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192})
    if (n <= c) return c;
  return (n + 4095) / 4096 * 4096;
}

// Size of a kernel struct from the running kernel's BTF; 0 if unknown.
uint64_t kernel_struct_size(const btf* vmlinux, const char* name) {
  if (!vmlinux) return 0;
  int id = btf__find_by_name_kind(vmlinux, name, BTF_KIND_STRUCT);
  if (id < 0) return 0;
  long sz = btf__resolve_size(vmlinux, id);
  return sz > 0 ? static_cast<uint64_t>(sz) : 0;
}

// What meshcut adds in kernel memory per enrolled socket: its psock, its
// socket-storage element (and the socket's storage head), its sockhash
// element and, where the conns table is kept, its mc_conns element. Struct
// sizes come from the running kernel's BTF, rounded to kmalloc's classes;
// bench/scale_bench.py measures the same from the slab counters.
nlohmann::json socket_memory_json(const std::vector<MapUsage>& usage, bool conns_table) {
  btf* vmlinux = btf__load_vmlinux_btf();
  if (libbpf_get_error(vmlinux)) vmlinux = nullptr;
  auto entry = [&](const char* map) -> const MapUsage* {
    for (const auto& u : usage)
      if (u.name == map) return &u;
    return nullptr;
  };
  const MapUsage* sh = entry(MC_MAP_SOCKHASH);
  const MapUsage* conns = entry(MC_MAP_CONNS);
  uint64_t psock = kernel_struct_size(vmlinux, "sk_psock");
  uint64_t storage = kernel_struct_size(vmlinux, "bpf_local_storage_elem");
  uint64_t storage_head = kernel_struct_size(vmlinux, "bpf_local_storage");
  uint64_t shtab = kernel_struct_size(vmlinux, "bpf_shtab_elem");
  uint64_t htab = kernel_struct_size(vmlinux, "htab_elem");
  btf__free(vmlinux);
  nlohmann::json parts = {
      {"sk_psock", psock ? kmalloc_size(psock) : 0},
      {"sk_storage", storage ? kmalloc_size(storage + sizeof(mc_sock_state)) + kmalloc_size(storage_head) : 0},
      {"sockhash_elem", shtab && sh ? kmalloc_size(shtab + sh->key_size) : 0},
      {"conns_elem", conns_table && htab && conns ? htab + conns->key_size + conns->value_size : 0}};
  uint64_t per = 0;
  for (auto& [k, v] : parts.items()) per += v.get<uint64_t>();
  uint64_t sockets = sh ? sh->entries : 0;
  return {{"per_socket_bytes", per},
          {"parts", parts},
          {"sockets", sockets},
          {"total_bytes", per * sockets},
          {"known", psock && storage && shtab},
          {"source", "struct sizes from /sys/kernel/btf/vmlinux, rounded to kmalloc classes"}};
}

}  // namespace

int cmd_status(const std::string& pin_root, bool json, bool require_running) {
  PinLayout layout(pin_root);
  auto maps = PinnedMaps::open(layout);
  if (!maps) return not_running(pin_root, json, maps.error());
  auto meta = maps->meta();
  auto cfg = maps->config();
  auto ctr = maps->counters();
  auto usage = maps->usage();
  if (!meta) return not_running(pin_root, json, meta.error());
  if (!cfg) return not_running(pin_root, json, cfg.error());
  if (!ctr) return not_running(pin_root, json, ctr.error());
  if (!usage) return not_running(pin_root, json, usage.error());

  nlohmann::json j;
  j["pin_root"] = pin_root;
  j["installed"] = true;
  j["layout_version"] = meta->layout_version;
  // The pinned structs' layout hash (abi.h); 0: pinned by a daemon without it.
  j["abi_fingerprint"] = meta->abi_fingerprint;
  j["abi_fingerprint_match"] = meta->abi_fingerprint == 0 || meta->abi_fingerprint == kAbiFingerprint;
  j["enabled"] = cfg->enabled != 0;
  bool alive = meta->daemon_pid && ::kill(static_cast<pid_t>(meta->daemon_pid), 0) == 0;
  j["daemon"] = {{"pid", meta->daemon_pid}, {"running", alive}, {"started_ns", meta->started_ns}};
  j["features"] = features_json(meta->features);
  j["degraded"] = degraded_json(meta->features);
  j["attachments"] = attachments_json(layout);
  nlohmann::json m = nlohmann::json::object();
  for (const auto& u : *usage)
    m[u.name] = {{"entries", u.entries}, {"max_entries", u.max_entries}, {"memlock_bytes", u.memlock}};
  j["maps"] = m;
  j["memory"] = socket_memory_json(*usage, (cfg->flags & MC_CFG_F_CONNS_TABLE) != 0);
  nlohmann::json c = nlohmann::json::object();
  for (size_t i = 0; i < MC_C__N; ++i) c[std::string(kCounterNames[i])] = (*ctr)[i];
  const auto& v = *ctr;
  c["redirect_msgs"] = v[MC_C_MSG_REDIRECT_INTRA] + v[MC_C_MSG_REDIRECT_NODE];
  c["redirect_bytes"] = v[MC_C_BYTES_REDIRECT_INTRA] + v[MC_C_BYTES_REDIRECT_NODE];
  j["counters"] = c;

  int rc = require_running && !alive ? 4 : 0;
  if (json) {
    std::printf("%s\n", j.dump(2).c_str());
    return rc;
  }
  std::printf("meshcut  pin root %s  layout v%u  abi 0x%08x%s  %s\n", pin_root.c_str(), meta->layout_version,
              meta->abi_fingerprint, j["abi_fingerprint_match"].get<bool>() ? "" : " (MISMATCH)",
              cfg->enabled ? "ENABLED" : "DISABLED");
  std::printf("daemon   pid %u (%s)\n\n", meta->daemon_pid, alive ? "running" : "not running");
  std::printf("%-10s %-9s %s\n", "ATTACH", "STATE", "DETAIL");
  for (const char* k : {"sockops", "sk_msg", "sk_skb"}) {
    const auto& a = j["attachments"][k];
    std::printf("%-10s %-9s %s\n", k, a.value("attached", false) ? "attached" : "-", a.dump().c_str());
  }
  std::printf("\n%-14s %10s %10s\n", "MAP", "ENTRIES", "MAX");
  for (const auto& u : *usage)
    std::printf("%-14s %10llu %10u\n", u.name.c_str(), static_cast<unsigned long long>(u.entries), u.max_entries);
  const auto& mem = j["memory"];
  std::printf(
      "\nkernel memory per enrolled socket: %llu B (psock %llu, storage %llu, sockhash %llu, conns %llu); "
      "%llu sockets: %.1f MiB\n",
      mem["per_socket_bytes"].get<unsigned long long>(), mem["parts"]["sk_psock"].get<unsigned long long>(),
      mem["parts"]["sk_storage"].get<unsigned long long>(), mem["parts"]["sockhash_elem"].get<unsigned long long>(),
      mem["parts"]["conns_elem"].get<unsigned long long>(), mem["sockets"].get<unsigned long long>(),
      static_cast<double>(mem["total_bytes"].get<uint64_t>()) / (1 << 20));
  std::printf("\n%-22s %14s\n", "COUNTER", "VALUE");
  for (auto& [k, val] : c.items()) std::printf("%-22s %14llu\n", k.c_str(), val.get<unsigned long long>());
  std::printf("\nFEATURE\n");
  for (auto& [k, val] : j["features"].items()) std::printf("  %-28s %s\n", k.c_str(), val.dump().c_str());
  if (!j["degraded"].empty()) std::printf("\nREFUSED BY THIS KERNEL (or off by request)\n");
  for (const auto& d : j["degraded"])
    std::printf("  %-9s %s\n  %-9s turns off: %s\n", d["feature"].get<std::string>().c_str(),
                d["refused"].get<std::string>().c_str(), "", d["turns_off"].get<std::string>().c_str());
  return rc;
}

namespace {

std::string mac_str(const uint8_t* m) {
  char b[18];
  std::snprintf(b, sizeof(b), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return b;
}

std::string cstr(const char* p, size_t n) { return std::string(p, strnlen(p, n)); }

}  // namespace

int cmd_pods(const std::string& pin_root, bool json) {
  auto maps = PinnedMaps::open(PinLayout(pin_root));
  if (!maps) return not_running(pin_root, json, maps.error());
  auto pods = maps->pods();
  if (!pods) return not_running(pin_root, json, pods.error());
  auto recs = maps->cni_pods();
  if (!recs) return not_running(pin_root, json, recs.error());
  // Per-pod counters of the live sockets (closed ones are in the node totals).
  struct Live {
    uint64_t sockets = 0, redirected = 0, normal = 0;
  };
  std::map<uint64_t, Live> live;
  auto socks = live_sockets(PinLayout(pin_root), *maps);
  if (socks) {
    for (const auto& st : socks->sockets) {
      auto& l = live[st.netns_cookie];
      ++l.sockets;
      l.redirected += st.bytes_redirected;
      l.normal += st.bytes_passed;
    }
  } else {
    // Never a silent 0: the per-pod socket fields are null and the cause is said.
    std::fprintf(stderr, "meshcutd: per-pod live sockets unknown: %s\n", socks.error().format().c_str());
  }
  auto live_field = [&](uint64_t v) -> nlohmann::json { return socks ? nlohmann::json(v) : nlohmann::json(nullptr); };
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& [cookie, pod] : *pods) {
    nlohmann::json ips = nlohmann::json::array();
    for (uint32_t ip : pod.ip4)
      if (ip) ips.push_back(sys::ipv4_str(ip));
    nlohmann::json p = {{"netns_cookie", cookie},
                        {"ips", ips},
                        {"mac", mac_str(pod.pod_mac)},
                        {"host_ifindex", pod.host_ifindex},
                        {"host_mac", mac_str(pod.host_mac)},
                        {"intra_pod", (pod.flags & MC_POD_F_INTRA) != 0},
                        {"same_node", (pod.flags & MC_POD_F_NODE) != 0},
                        {"cross_node", (pod.flags & MC_POD_F_CROSS) != 0},
                        {"source", "enroll"},
                        {"live_sockets", live_field(live[cookie].sockets)},
                        {"live_bytes_redirected", live_field(live[cookie].redirected)},
                        {"live_bytes_normal_path", live_field(live[cookie].normal)},
                        {"live_source", socks ? nlohmann::json(socks->source) : nlohmann::json(nullptr)}};
    for (const auto& [k, r] : *recs) {
      if (r.netns_cookie != cookie) continue;
      p["source"] = "cni";
      p["namespace"] = cstr(r.pod_namespace, sizeof(r.pod_namespace));
      p["name"] = cstr(r.pod_name, sizeof(r.pod_name));
      p["uid"] = cstr(r.pod_uid, sizeof(r.pod_uid));
      p["container_id"] = pods::container_id(k);
      p["ifname"] = pods::ifname(k);
      p["netns"] = cstr(r.netns_path, sizeof(r.netns_path));
      p["host_veth"] = cstr(r.host_ifname, sizeof(r.host_ifname));
      p["tc_attached"] = (r.cni_flags & MC_CNI_F_TC_ATTACHED) != 0;
    }
    arr.push_back(p);
  }
  if (json) {
    std::printf("%s\n", arr.dump(2).c_str());
    return 0;
  }
  std::printf("%-28s %-14s %-18s %-16s %-12s %-18s %8s %14s\n", "POD", "CONTAINER", "IPS", "HOST VETH", "NETNS",
              "SHORTCUTS", "SOCKETS", "BYTES SHORTCUT");
  for (const auto& p : arr) {
    std::string ips;
    for (const auto& ip : p["ips"]) ips += (ips.empty() ? "" : ",") + ip.get<std::string>();
    std::string name = p.value("namespace", std::string()) + "/" + p.value("name", std::string("(enrolled)"));
    std::string shortcuts = std::string(p["intra_pod"].get<bool>() ? "intra " : "") +
                            (p["same_node"].get<bool>() ? "node " : "") + (p["cross_node"].get<bool>() ? "cross" : "");
    auto num = [](const nlohmann::json& v) {
      return v.is_null() ? std::string("?") : std::to_string(v.get<uint64_t>());
    };
    std::printf("%-28s %-14.12s %-18s %-16s %-12llu %-18s %8s %14s\n", name.c_str(),
                p.value("container_id", std::string("-")).c_str(), ips.c_str(),
                p.value("host_veth", std::string("-")).c_str(), p["netns_cookie"].get<unsigned long long>(),
                shortcuts.c_str(), num(p["live_sockets"]).c_str(), num(p["live_bytes_redirected"]).c_str());
  }
  return 0;
}

}  // namespace meshcut::daemon
