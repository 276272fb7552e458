// SPDX-License-Identifier: Apache-2.0
#include <meshcut/cni/backend.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <sys/stat.h>
#include <unistd.h>

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
#include <meshcut/cni/validate.h>

namespace meshcut::cni {

// validate.h's bounds are what the records can hold.
static_assert(validate::kMaxContainerId == MC_CNI_ID_LEN - 1);
static_assert(validate::kMaxIfname == MC_CNI_IFNAME_LEN - 1 && validate::kMaxIfname == IFNAMSIZ - 1);

Result<Fd> open_log_file(const std::string& path) {
  // O_NOFOLLOW: the plugin runs as root, and a symlink planted at the log path
  // would make it append to any file. O_NONBLOCK: opening a FIFO must not
  // hang the pod start. Only a regular file with one link is written.
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK, 0640));
  if (!fd.valid()) {
    int e = errno;
    return make_error("couldn't open logFile '" + path + "'", e,
                      e == ELOOP ? "it is a symbolic link, which meshcut refuses: point logFile at a regular file"
                                 : "check that its directory exists and is writable by root");
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return make_error("couldn't stat logFile '" + path + "'", errno);
  if (!S_ISREG(st.st_mode))
    return make_error("logFile '" + path + "' is not a regular file", EINVAL, "point logFile at a regular file");
  if (st.st_nlink > 1)
    return make_error("logFile '" + path + "' has " + std::to_string(st.st_nlink) + " hard links", EMLINK,
                      "point logFile at a file of its own");
  int fl = ::fcntl(fd.get(), F_GETFL);
  if (fl >= 0) ::fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK);
  return fd;
}

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

// The pins meshcutd made, or why they can't be used.
struct Pins {
  PinLayout layout;
  std::optional<PinLock> lock;
  std::optional<PinnedMaps> maps;
};

// The lock is taken with the netconf's deadline (lockTimeoutMs): on ETIMEDOUT
// the caller fails open. lock_timed_out() tells that case apart.
Result<Pins> open_pins(const NetConf& conf) {
  const std::string& root = conf.pin_root;
  Pins p{PinLayout(root), {}, {}};
  auto lock = PinLock::acquire(root, std::chrono::milliseconds(conf.lock_timeout_ms));
  if (!lock && lock.error().err == ETIMEDOUT) return lock.error();
  if (!lock)
    return make_error("meshcutd's pins are not at " + root, lock.error().err,
                      "is meshcutd running with --pin-root " + root + "? (meshcutd status --pin-root " + root + ")");
  p.lock.emplace(std::move(lock.value()));
  auto maps = PinnedMaps::open(p.layout);
  if (!maps) return maps.error();
  p.maps.emplace(std::move(maps.value()));
  return p;
}

bool lock_timed_out(const Error& e) { return e.err == ETIMEDOUT; }

// Which network an attachment record belongs to: the record (mc_cni_pods, an
// ABI struct) has no field for it, so the plugin keeps one small file per
// attachment, <stateDir>/<containerID>:<ifname>, holding the network name.
// Both parts were validated (no '/', no ':'), so the name is one component.
std::string owner_path(const NetConf& conf, const std::string& cid, const std::string& ifname) {
  return conf.state_dir + "/" + cid + ":" + ifname;
}

// The network name recorded for the attachment; nullopt if none is (a record
// written before owner files existed, or the file could not be written).
std::optional<std::string> owner_of(const NetConf& conf, const std::string& cid, const std::string& ifname) {
  if (!validate::container_id(cid).empty() || !validate::ifname(ifname).empty()) return std::nullopt;
  Fd fd(::open(owner_path(conf, cid, ifname).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd.valid()) return std::nullopt;
  char buf[validate::kMaxNetworkName + 1];
  ssize_t n = ::read(fd.get(), buf, sizeof(buf));
  if (n <= 0) return std::nullopt;
  std::string name(buf, static_cast<size_t>(n));
  if (!validate::network_name(name).empty()) return std::nullopt;
  return name;
}

void write_owner(const NetConf& conf, const std::string& cid, const std::string& ifname) {
  if (conf.name.empty()) return;
  if (auto st = mkdir_p(conf.state_dir); !st) {
    log::warn(
        "couldn't record which network the pod belongs to: GC of this network will leave its record to "
        "meshcutd",
        {{"error", st.error().format()}});
    return;
  }
  std::string path = owner_path(conf, cid, ifname);
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600));
  struct stat st {};
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
      ::write(fd.get(), conf.name.data(), conf.name.size()) != static_cast<ssize_t>(conf.name.size()))
    log::warn(
        "couldn't record which network the pod belongs to: GC of this network will leave its record to "
        "meshcutd",
        {{"error", make_error("couldn't write '" + path + "'", errno, "check stateDir").format()}});
}

void drop_owner(const NetConf& conf, const std::string& cid, const std::string& ifname) {
  if (!validate::container_id(cid).empty() || !validate::ifname(ifname).empty()) return;
  ::unlink(owner_path(conf, cid, ifname).c_str());
}

// Enrolls the pod: mc_pods + tc filter + the CNI record. Undoes its own steps
// on failure so that a failed ADD leaves nothing half-made.
Status enroll(const NetConf& conf, const Plan& plan, Pins& pins) {
  auto t0 = std::chrono::steady_clock::now();
  auto ms = [&] { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(); };
  nlohmann::json steps = nlohmann::json::object();
  if (plan.netns.size() >= sizeof(mc_cni_pod::netns_path))
    return make_error("the pod's netns path is " + std::to_string(plan.netns.size()) + " characters long", ENAMETOOLONG,
                      "meshcut records at most " + std::to_string(sizeof(mc_cni_pod::netns_path) - 1) +
                          " (e.g. /var/run/netns/NAME)");
  auto facts = sys::pod_netns(plan.netns, plan.ifname);
  if (!facts) return facts.error();
  const uint64_t* cookie = &facts->cookie;
  const sys::LinkInfo* link = &facts->link;
  // Attach only to the node end of the pod's own veth: IFLA_LINK alone is a
  // macvlan/ipvlan's parent (the uplink), or a number in another netns.
  validate::VethFacts vf;
  vf.pod_ifname = plan.ifname;
  vf.pod = {link->ifindex, link->kind, link->peer_ifindex, link->link_netnsid};
  vf.host_nsid_in_pod = facts->host_nsid_in_pod;
  vf.pod_nsid_in_host = facts->pod_nsid_in_host;
  vf.host_found = facts->host.has_value();
  if (facts->host) {
    vf.host_ifname = facts->host->name;
    vf.host = {facts->host->ifindex, facts->host->kind, facts->host->peer_ifindex, facts->host->link_netnsid};
  }
  if (auto why = validate::veth_pair(vf); !why.empty())
    return make_error("refusing to attach: " + why, EOPNOTSUPP,
                      "meshcut supports veth-based main CNIs (bridge, ptp, flannel, calico); exclude this pod's "
                      "network from the meshcut chain");
  steps["netns_ms"] = ms();
  const std::string host_if = facts->host->name;
  if (host_if.empty() || host_if.size() >= sizeof(mc_cni_pod::host_ifname))
    return make_error("the node end of the pod's veth has no usable name", EINVAL);
  mc_pod pod{};
  for (size_t i = 0; i < plan.ipv4.size() && i < MC_POD_MAX_IPS; ++i)
    inet_pton(AF_INET, plan.ipv4[i].c_str(), &pod.ip4[i]);
  pod.flags = (plan.intra_pod ? MC_POD_F_INTRA : 0) | (plan.same_node ? MC_POD_F_NODE : 0) |
              (plan.cross_node ? MC_POD_F_CROSS : 0);
  pod.host_ifindex = static_cast<uint32_t>(link->peer_ifindex);
  parse_mac(plan.pod_mac.empty() ? link->mac : plan.pod_mac, pod.pod_mac);
  parse_mac(facts->host->mac, pod.host_mac);

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
  static_assert(kCallerClassMax + 1 == MC_CNI_CLASS_LEN);
  copy_str(rec.caller_class, sizeof(rec.caller_class), plan.caller_class);
  auto key = PinnedMaps::cni_key(plan.container_id, plan.ifname);
  if (!key) return key.error();

  if (auto st = pins.maps->put_pod(*cookie, pod); !st) return st;
  steps["maps_ms"] = ms();
  if (plan.attach_tc) {
    auto prog = open_pinned(pins.layout.prog(MC_PROG_TC_VETH));
    Result<tc::Attached> att =
        prog ? tc::attach_ingress(link->peer_ifindex, prog->get()) : Result<tc::Attached>(prog.error());
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
  write_owner(conf, plan.container_id, plan.ifname);
  steps["total_ms"] = ms();
  log::info("enrolled", {{"netns_cookie", *cookie},
                         {"host_veth", host_if},
                         {"ipv4", plan.ipv4},
                         {"tc", plan.attach_tc},
                         {"steps", steps}});
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

// ADD without the pin lock (it timed out): count the failure anyway. The
// read-add-write of the counter may race with a holder; a lost count is the
// lesser harm next to a pod that can't start.
void record_add_unlocked(const NetConf& conf, uint32_t outcome, std::chrono::steady_clock::time_point t0) {
  if (auto maps = PinnedMaps::open(PinLayout(conf.pin_root))) record_add(*maps, outcome, t0);
}

nlohmann::json cmd_add(const NetConf& conf, const Env& env) {
  auto t0 = std::chrono::steady_clock::now();
  Plan plan = make_plan(conf, env);
  if (!plan.enroll) {
    log::info("not enrolled: " + plan.skip_reason);
    if (exists(conf.pin_root))
      if (auto pins = open_pins(conf)) record_add(*pins->maps, MC_S_ADD_SKIPPED, t0);
    return plan.result;
  }
  auto pins = open_pins(conf);
  Status st = pins ? enroll(conf, plan, *pins) : Status(pins.error());
  if (pins) record_add(*pins->maps, st ? MC_S_ADD_ENROLLED : MC_S_ADD_FAILED, t0);
  if (!pins && lock_timed_out(pins.error())) record_add_unlocked(conf, MC_S_ADD_FAILED, t0);
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
    drop_owner(conf, env.container_id, env.ifname);
    return;
  }
  // Another network's attachment with the same container ID and ifname (its
  // chain's cleanup DEL after a failed ADD, say): not ours to remove.
  if (auto owner = owner_of(conf, env.container_id, env.ifname); owner && !conf.name.empty() && *owner != conf.name) {
    log::info("DEL: the record belongs to network '" + *owner + "', not '" + conf.name + "': left alone");
    return;
  }
  auto pins = open_pins(conf);
  if (!pins) {
    // DEL succeeds anyway, so the runtime frees the pod's IP; the record is
    // removed by a later GC (the runtime's, or meshcutd's once the netns is gone).
    if (lock_timed_out(pins.error()))
      log::warn("DEL: fail-open without removing the pod's record: the pin lock is held; a later GC removes it",
                {{"error", pins.error().format()}});
    else
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
    drop_owner(conf, env.container_id, env.ifname);
    log::info("DEL: removed", {{"netns_cookie", (*rec)->netns_cookie}});
    return;
  }
  drop_owner(conf, env.container_id, env.ifname);
  // No record (e.g. ADD failed open, or a repeated DEL): drop a pod entry by
  // the netns if we still have one.
  if (!env.netns.empty())
    if (auto cookie = sys::netns_cookie(env.netns)) pins->maps->del_pod(*cookie);
  log::info("DEL: nothing recorded for this attachment");
}

namespace {
// CHECK of an enrolled pod, or enrollment of one that never was.
void check_record(const NetConf& conf, const Plan& plan, const Env& env, Pins& pins_) {
  Pins* pins = &pins_;
  auto key = PinnedMaps::cni_key(env.container_id, env.ifname);
  if (!key) throw CniError{kInvalidEnv, key.error().format(), ""};
  auto rec = pins->maps->get_cni(*key);
  if (!rec) throw CniError{kIOFailure, rec.error().format(), ""};
  if (!rec->has_value()) {
    // Never enrolled (its ADD failed open while meshcutd was down): enroll now.
    if (auto st = enroll(conf, plan, *pins); !st)
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
  auto pins = open_pins(conf);
  if (!pins) {
    if (conf.fail_closed)
      throw CniError{lock_timed_out(pins.error()) ? kTryAgainLater : kPluginNotAvailable,
                     lock_timed_out(pins.error()) ? "meshcut's pin lock is held" : "meshcutd is not running",
                     pins.error().format()};
    log::warn("CHECK: meshcut's pins are unusable (fail-open)", {{"error", pins.error().format()}});
    return;
  }
  pins->maps->add_cni_stat(MC_S_CHECK, 1);
  try {
    check_record(conf, plan, env, *pins);
  } catch (const CniError&) {
    pins->maps->add_cni_stat(MC_S_CHECK_FAILED, 1);
    throw;
  }
}

void cmd_status(const NetConf& conf) {
  auto pins = open_pins(conf);
  if (pins) return;
  if (conf.fail_closed)
    throw CniError{lock_timed_out(pins.error()) ? kTryAgainLater : kPluginNotAvailable,
                   lock_timed_out(pins.error()) ? "meshcut's pin lock is held" : "meshcutd is not running",
                   pins.error().format()};
  log::info("STATUS: meshcut's pins are unusable; pods start without meshcut (failPolicy open)",
            {{"error", pins.error().format()}});
}

// CNI 1.1 GC: "cni.dev/valid-attachments" lists this network's live
// attachments. A record is this network's only if its owner file says so;
// other networks' records, and records without an owner (written before owner
// files, or when writing one failed), are kept: meshcutd removes those once
// their netns is gone.
void cmd_gc(const NetConf& conf) {
  if (!exists(conf.pin_root)) return;
  if (conf.name.empty()) {
    log::warn("GC: the network configuration has no name: nothing can be told to be this network's, nothing removed");
    return;
  }
  auto pins = open_pins(conf);
  if (!pins) {
    log::warn(lock_timed_out(pins.error()) ? "GC: skipped, the pin lock is held; the next GC retries"
                                           : "GC: meshcut's pins are unusable",
              {{"error", pins.error().format()}});
    return;
  }
  std::set<std::pair<std::string, std::string>> valid;
  for (const auto& a : conf.raw.value("cni.dev/valid-attachments", nlohmann::json::array()))
    if (a.is_object()) {
      auto s = [&](const char* k) {
        auto it = a.find(k);
        return it != a.end() && it->is_string() ? it->get<std::string>() : std::string();
      };
      valid.emplace(s("containerID"), s("ifname"));
    }
  auto recs = pins->maps->cni_pods();
  if (!recs) {
    log::warn("GC: " + recs.error().format());
    return;
  }
  int removed = 0, others = 0;
  std::set<std::pair<std::string, std::string>> recorded;
  for (const auto& [k, r] : *recs) {
    std::string cid = pods::container_id(k), ifn = pods::ifname(k);
    recorded.emplace(cid, ifn);
    if (valid.count({cid, ifn})) continue;
    auto owner = owner_of(conf, cid, ifn);
    if (!owner || *owner != conf.name) {
      ++others;
      continue;
    }
    pods::remove(*pins->maps, k, r);
    drop_owner(conf, cid, ifn);
    ++removed;
  }
  // Owner files of this network without a record (meshcutd removed it): tidy.
  if (DIR* d = ::opendir(conf.state_dir.c_str())) {
    std::vector<std::pair<std::string, std::string>> stale;
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      auto colon = n.find(':');
      if (colon == std::string::npos) continue;
      std::pair<std::string, std::string> a{n.substr(0, colon), n.substr(colon + 1)};
      if (valid.count(a) || recorded.count(a)) continue;
      if (auto owner = owner_of(conf, a.first, a.second); owner && *owner == conf.name) stale.push_back(a);
    }
    ::closedir(d);
    for (const auto& [cid, ifn] : stale) drop_owner(conf, cid, ifn);
  }
  pins->maps->add_cni_stat(MC_S_GC_REMOVED, removed);
  log::info("GC done", {{"network", conf.name},
                        {"removed", removed},
                        {"kept", recs->size() - removed},
                        {"kept_other_networks", others}});
}

}  // namespace meshcut::cni
