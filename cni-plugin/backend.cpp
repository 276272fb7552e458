// SPDX-License-Identifier: Apache-2.0
#include "backend.h"

#include <arpa/inet.h>
#include <net/if.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <optional>
#include <set>

#include "meshcut/abi.h"
#include "meshcut/log.h"
#include "meshcut/maps.h"
#include "meshcut/pins.h"
#include "meshcut/pods.h"
#include "meshcut/sys.h"
#include "meshcut/tc.h"

namespace meshcut::cni {
namespace {

void copy_str(char* dst, size_t n, const std::string& s) {
  std::memset(dst, 0, n);
  std::memcpy(dst, s.data(), std::min(n - 1, s.size()));
}

bool parse_mac(const std::string& s, uint8_t out[6]) {
  unsigned v[6];
  if (std::sscanf(s.c_str(), "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6) return false;
  for (int i = 0; i < 6; ++i) out[i] = static_cast<uint8_t>(v[i]);
  return true;
}

std::string host_ifname_of(int ifindex) {
  char name[IF_NAMESIZE] = {};
  return if_indextoname(static_cast<unsigned>(ifindex), name) ? name : "";
}

// The pins meshcutd made, or why they can't be used.
struct Pins {
  PinLayout layout;
  std::optional<PinLock> lock;
  std::optional<PinnedMaps> maps;
};

Result<Pins> open_pins(const std::string& root) {
  Pins p{PinLayout(root), {}, {}};
  auto lock = PinLock::acquire(root);
  if (!lock)
    return make_error("meshcutd's pins are not at " + root, lock.error().err,
                      "is meshcutd running with --pin-root " + root + "? (meshcutd status --pin-root " + root + ")");
  p.lock.emplace(std::move(lock.value()));
  auto maps = PinnedMaps::open(p.layout);
  if (!maps) return maps.error();
  p.maps.emplace(std::move(maps.value()));
  return p;
}

// Enrolls the pod: mc_pods + tc filter + the CNI record. Undoes its own steps
// on failure so that a failed ADD leaves nothing half-made.
Status enroll(const Plan& plan, Pins& pins) {
  auto t0 = std::chrono::steady_clock::now();
  auto ms = [&] { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(); };
  nlohmann::json steps = nlohmann::json::object();
  auto facts = sys::pod_netns(plan.netns, plan.ifname);
  if (!facts) return facts.error();
  const uint64_t* cookie = &facts->cookie;
  const sys::LinkInfo* link = &facts->link;
  if (link->peer_ifindex <= 0)
    return make_error("pod interface " + plan.ifname + " is not a veth (no peer)", EOPNOTSUPP,
                      "meshcut supports veth-based main CNIs (bridge, flannel, calico)");
  steps["netns_ms"] = ms();
  std::string host_if = host_ifname_of(link->peer_ifindex);
  if (host_if.empty())
    return make_error("the veth peer of the pod's " + plan.ifname + " is not in this network namespace", ENODEV,
                      "run the plugin in the node's network namespace");
  mc_pod pod{};
  for (size_t i = 0; i < plan.ipv4.size() && i < MC_POD_MAX_IPS; ++i)
    inet_pton(AF_INET, plan.ipv4[i].c_str(), &pod.ip4[i]);
  pod.flags = (plan.intra_pod ? MC_POD_F_INTRA : 0) | (plan.same_node ? MC_POD_F_NODE : 0) |
              (plan.cross_node ? MC_POD_F_CROSS : 0);
  pod.host_ifindex = static_cast<uint32_t>(link->peer_ifindex);
  parse_mac(plan.pod_mac.empty() ? link->mac : plan.pod_mac, pod.pod_mac);
  parse_mac(sys::mac_of(link->peer_ifindex), pod.host_mac);

  mc_cni_pod rec{};
  rec.netns_cookie = *cookie;
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  rec.added_ns = static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
  rec.pod = pod;
  copy_str(rec.host_ifname, sizeof(rec.host_ifname), host_if);
  copy_str(rec.pod_namespace, sizeof(rec.pod_namespace), plan.pod_namespace);
  copy_str(rec.pod_name, sizeof(rec.pod_name), plan.pod_name);
  copy_str(rec.pod_uid, sizeof(rec.pod_uid), plan.pod_uid);
  copy_str(rec.netns_path, sizeof(rec.netns_path), plan.netns);
  auto key = PinnedMaps::cni_key(plan.container_id, plan.ifname);
  if (!key) return key.error();

  if (auto st = pins.maps->put_pod(*cookie, pod); !st) return st;
  steps["maps_ms"] = ms();
  if (plan.attach_tc) {
    auto prog = open_pinned(pins.layout.prog(MC_PROG_TC_VETH));
    Result<tc::Attached> att = prog ? tc::attach_ingress(link->peer_ifindex, prog->get())
                                    : Result<tc::Attached>(prog.error());
    if (!att) {
      pins.maps->del_pod(*cookie);
      return att.error();
    }
    rec.cni_flags |= MC_CNI_F_TC_ATTACHED | (att->created_qdisc ? MC_CNI_F_QDISC_OURS : 0);
  }
  if (auto st = pins.maps->put_cni(*key, rec); !st) {
    pods::detach_tc_if_same(rec);
    pins.maps->del_pod(*cookie);
    return st;
  }
  steps["total_ms"] = ms();
  log::info("enrolled", {{"netns_cookie", *cookie}, {"host_veth", host_if}, {"ipv4", plan.ipv4},
                         {"tc", plan.attach_tc}, {"steps", steps}});
  return ok_status();
}

}  // namespace

// ADD statistics for meshcutd's /metrics; the caller holds the pin lock.
void record_add(const PinnedMaps& maps, uint32_t outcome, std::chrono::steady_clock::time_point t0) {
  static constexpr uint64_t bounds[MC_ADD_BUCKETS] = MC_ADD_BUCKET_BOUNDS_US;
  auto us = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
  uint32_t b = 0;
  while (b + 1 < MC_ADD_BUCKETS && us > bounds[b]) ++b;
  for (uint32_t idx : {static_cast<uint32_t>(MC_S_ADD), outcome, static_cast<uint32_t>(MC_S_ADD_BUCKET0) + b})
    maps.add_cni_stat(idx, 1);
  maps.add_cni_stat(MC_S_ADD_US_SUM, us);
}

nlohmann::json cmd_add(const NetConf& conf, const Env& env) {
  auto t0 = std::chrono::steady_clock::now();
  Plan plan = make_plan(conf, env);
  if (!plan.enroll) {
    log::info("not enrolled: " + plan.skip_reason);
    if (exists(conf.pin_root))
      if (auto pins = open_pins(conf.pin_root)) record_add(*pins->maps, MC_S_ADD_SKIPPED, t0);
    return plan.result;
  }
  auto pins = open_pins(conf.pin_root);
  Status st = pins ? enroll(plan, *pins) : Status(pins.error());
  if (pins) record_add(*pins->maps, st ? MC_S_ADD_ENROLLED : MC_S_ADD_FAILED, t0);
  if (!st) {
    if (conf.fail_closed)
      throw CniError{kEnrollFailed, "meshcut could not enroll the pod (failPolicy closed)", st.error().format()};
    // Fail-open: the pod starts on the normal path. CHECK or GC can enroll it later.
    log::warn("fail-open: pod starts without meshcut", {{"error", st.error().format()}});
  }
  return plan.result;
}

void cmd_del(const NetConf& conf, const Env& env) {
  if (!exists(conf.pin_root)) {
    log::info("DEL: no pins at " + conf.pin_root + ", nothing to remove");
    return;
  }
  auto pins = open_pins(conf.pin_root);
  if (!pins) {
    log::warn("DEL: " + pins.error().format());
    return;
  }
  auto key = PinnedMaps::cni_key(env.container_id, env.ifname);
  if (!key) {
    log::warn("DEL: " + key.error().format());
    return;
  }
  pins->maps->add_cni_stat(MC_S_DEL, 1);
  auto rec = pins->maps->get_cni(*key);
  if (rec && rec->has_value()) {
    pods::remove(*pins->maps, *key, **rec);
    log::info("DEL: removed", {{"netns_cookie", (*rec)->netns_cookie}});
    return;
  }
  // No record (e.g. ADD failed open, or a repeated DEL): drop a pod entry by
  // the netns if we still have one.
  if (!env.netns.empty())
    if (auto cookie = sys::netns_cookie(env.netns)) pins->maps->del_pod(*cookie);
  log::info("DEL: nothing recorded for this attachment");
}

namespace {
// CHECK of an enrolled pod, or enrollment of one that never was.
void check_record(const Plan& plan, const Env& env, Pins& pins_) {
  Pins* pins = &pins_;
  auto key = PinnedMaps::cni_key(env.container_id, env.ifname);
  if (!key) throw CniError{kInvalidEnv, key.error().format(), ""};
  auto rec = pins->maps->get_cni(*key);
  if (!rec) throw CniError{kIOFailure, rec.error().format(), ""};
  if (!rec->has_value()) {
    // Never enrolled (its ADD failed open while meshcutd was down): enroll now.
    if (auto st = enroll(plan, *pins); !st)
      throw CniError{kCheckMismatch, "pod is not enrolled in meshcut and enrolling it failed", st.error().format()};
    log::info("CHECK: enrolled a pod that had started without meshcut");
    return;
  }
  const mc_cni_pod& r = **rec;
  auto cookie = sys::netns_cookie(env.netns);
  if (!cookie || *cookie != r.netns_cookie)
    throw CniError{kCheckMismatch, "meshcut's record is for another network namespace", env.netns};
  auto pods = pins->maps->pods();
  bool in_map = false;
  if (pods)
    for (const auto& [c, p] : *pods) in_map |= c == r.netns_cookie;
  if (!in_map) throw CniError{kCheckMismatch, "the pod is missing from " MC_MAP_PODS, ""};
  if ((r.cni_flags & MC_CNI_F_TC_ATTACHED) && !tc::attached(static_cast<int>(r.pod.host_ifindex)))
    throw CniError{kCheckMismatch, std::string("meshcut's tc filter is missing on ") + r.host_ifname, ""};
}
}  // namespace

void cmd_check(const NetConf& conf, const Env& env) {
  Plan plan = make_plan(conf, env);
  if (!plan.enroll) return;
  auto pins = open_pins(conf.pin_root);
  if (!pins) {
    if (conf.fail_closed) throw CniError{kPluginNotAvailable, "meshcutd is not running", pins.error().format()};
    log::warn("CHECK: meshcutd not running (fail-open)", {{"error", pins.error().format()}});
    return;
  }
  pins->maps->add_cni_stat(MC_S_CHECK, 1);
  try {
    check_record(plan, env, *pins);
  } catch (const CniError&) {
    pins->maps->add_cni_stat(MC_S_CHECK_FAILED, 1);
    throw;
  }
}

void cmd_status(const NetConf& conf) {
  auto pins = open_pins(conf.pin_root);
  if (pins) return;
  if (conf.fail_closed) throw CniError{kPluginNotAvailable, "meshcutd is not running", pins.error().format()};
  log::info("STATUS: meshcutd not running; pods start without meshcut (failPolicy open)");
}

void cmd_gc(const NetConf& conf) {
  if (!exists(conf.pin_root)) return;
  auto pins = open_pins(conf.pin_root);
  if (!pins) {
    log::warn("GC: " + pins.error().format());
    return;
  }
  std::set<std::pair<std::string, std::string>> valid;
  for (const auto& a : conf.raw.value("cni.dev/valid-attachments", nlohmann::json::array()))
    if (a.is_object()) valid.emplace(a.value("containerID", ""), a.value("ifname", ""));
  auto recs = pins->maps->cni_pods();
  if (!recs) {
    log::warn("GC: " + recs.error().format());
    return;
  }
  int removed = 0;
  for (const auto& [k, r] : *recs) {
    if (valid.count({pods::container_id(k), pods::ifname(k)})) continue;
    pods::remove(*pins->maps, k, r);
    ++removed;
  }
  pins->maps->add_cni_stat(MC_S_GC_REMOVED, removed);
  log::info("GC done", {{"removed", removed}, {"kept", recs->size() - removed}});
}

}  // namespace meshcut::cni
