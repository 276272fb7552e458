// SPDX-License-Identifier: Apache-2.0
#include "loader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <net/if.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <tuple>
#include <vector>

#include "mc_connect4.skel.h"
#include "mc_sk_msg.skel.h"
#include "mc_sk_skb.skel.h"
#include "mc_sockops.skel.h"
#include "mc_tc_overlay.skel.h"
#include "mc_tc_overlay_noct.skel.h"
#include "mc_tc_veth.skel.h"
#include "mc_tc_veth_noct.skel.h"
#include "meshcut/abi.h"
#include "meshcut/libbpf_log.h"
#include "meshcut/log.h"
#include "meshcut/maps.h"
#include "meshcut/sys.h"
#include "meshcut/pods.h"
#include "meshcut/skel.h"
#include "meshcut/tc.h"

MESHCUT_SKEL(mc_sockops);
MESHCUT_SKEL(mc_connect4);
MESHCUT_SKEL(mc_sk_msg);
MESHCUT_SKEL(mc_sk_skb);
MESHCUT_SKEL(mc_tc_veth);
MESHCUT_SKEL(mc_tc_overlay);
MESHCUT_SKEL(mc_tc_veth_noct);
MESHCUT_SKEL(mc_tc_overlay_noct);

namespace meshcut::daemon {
namespace {

// Points every map of OBJ at its pin: libbpf reuses a compatible pinned map
// (same type, key, value, max_entries, flags) or creates and pins a new one.
Status set_pin_paths(bpf_object* obj, const PinLayout& layout, uint32_t max_sockets) {
  bpf_map* m;
  bpf_object__for_each_map(m, obj) {
    if (bpf_map__is_internal(m)) continue;  // .rodata: per object, never shared (and bpffs refuses dots)
    std::string name = bpf_map__name(m);
    if (name == MC_MAP_SOCKHASH || name == MC_MAP_CONNS) bpf_map__set_max_entries(m, max_sockets);
    int err = bpf_map__set_pin_path(m, layout.map(name).c_str());
    if (err) return make_error("couldn't set pin path of map " + name, err);
  }
  return ok_status();
}

Error load_error(const char* what, int err, const PinLayout& layout);

// The two tc programs, loaded and owned until pinned: built with the
// conntrack kfuncs (ct = true) or without them.
struct TcProgs {
  std::shared_ptr<void> veth_owner, overlay_owner;
  bpf_program* veth = nullptr;
  bpf_program* overlay = nullptr;
  bool ct = false;
  std::string ct_error;  // why the kfunc build did not load
};

template <typename V, typename O>
Result<TcProgs> load_tc_pair(const PinLayout& layout, uint32_t max_sockets) {
  std::shared_ptr<V> v = open_skel<V>();
  std::shared_ptr<O> o = open_skel<O>();
  if (!v || !o) return make_error("couldn't open the tc skeletons", errno);
  for (bpf_object* obj : {v->obj, o->obj})
    if (auto st = set_pin_paths(obj, layout, max_sockets); !st) return st.error();
  if (int err = SkelOps<V>::load(v.get())) return load_error("tc_veth", -err, layout);
  if (int err = SkelOps<O>::load(o.get())) return load_error("tc_overlay", -err, layout);
  TcProgs t;
  t.veth = v->progs.mc_tc_veth;
  t.overlay = o->progs.mc_tc_overlay;
  t.veth_owner = v;
  t.overlay_owner = o;
  return t;
}

// With the conntrack kfuncs where the kernel has them (Linux 6.0+, nf_conntrack
// with BTF, loaded), else without: then the conntrack entries of shortcut
// flows stay until conntrack's own timeout.
Result<TcProgs> load_tc(const PinLayout& layout, uint32_t max_sockets) {
  const char* off = std::getenv("MESHCUT_NO_CT_KFUNCS");  // tests: the path of kernels without them
  auto ct = off && std::string(off) == "1"
                ? Result<TcProgs>(make_error("conntrack kfuncs off by request (MESHCUT_NO_CT_KFUNCS=1)", 0))
                : load_tc_pair<mc_tc_veth, mc_tc_overlay>(layout, max_sockets);
  if (ct) {
    ct->ct = true;
    return ct;
  }
  auto plain = load_tc_pair<mc_tc_veth_noct, mc_tc_overlay_noct>(layout, max_sockets);
  if (!plain) return plain.error();
  plain->ct_error = ct.error().format();
  log::warn("conntrack kfuncs unavailable: conntrack entries of shortcut flows stay until conntrack's timeout",
            {{"error", plain->ct_error},
             {"hint", "needs Linux 6.0+ with nf_conntrack (and its BTF) loaded before meshcutd starts"}});
  return plain;
}

Error load_error(const char* what, int err, const PinLayout& layout) {
  std::string hint;
  std::string last = last_libbpf_message();
  if (last.find("pinned map") != std::string::npos || last.find("reuse") != std::string::npos)
    hint = "a pinned map under " + layout.maps_dir() +
           " does not match this meshcutd (older layout?): run `meshcutd detach --pin-root " + layout.root +
           "` then start again";
  else if (err == EPERM || err == EACCES)
    hint = "run as root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN); check `ulimit -l`";
  else if (err == 524 || err == EOPNOTSUPP)
    hint = "this kernel lacks a needed BPF feature: see `meshcutd status` features";
  std::string msg = std::string("couldn't load ") + what + " BPF program";
  if (!last.empty()) msg += " (libbpf: " + last + ")";
  return make_error(msg, err, hint);
}

Status pin_prog(bpf_program* p, const std::string& path) {
  ::unlink(path.c_str());  // replace an older program's pin (restart/upgrade)
  if (int err = bpf_program__pin(p, path.c_str())) return make_error("couldn't pin program at '" + path + "'", err);
  return ok_status();
}

// Current max_entries of a pinned sockhash, to adopt it across restarts.
uint32_t pinned_max_entries(const std::string& path) {
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return 0;
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  uint32_t n = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.max_entries : 0;
  ::close(fd);
  return n;
}

Status check_layout_version(const PinLayout& layout) {
  std::string p = layout.map(MC_MAP_META);
  int fd = bpf_obj_get(p.c_str());
  if (fd < 0) return ok_status();
  Fd owner(fd);
  uint32_t k = 0;
  mc_meta m{};
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0 || info.value_size != sizeof(mc_meta) ||
      bpf_map_lookup_elem(fd, &k, &m) != 0)
    return make_error("pinned map '" + p + "' is not a meshcut v" + std::to_string(MC_LAYOUT_VERSION) + " mc_meta",
                      EINVAL, "run `meshcutd detach --pin-root " + layout.root + "` then start again");
  if (m.magic == MC_META_MAGIC && m.layout_version != MC_LAYOUT_VERSION)
    return make_error("pin root '" + layout.root + "' holds layout v" + std::to_string(m.layout_version) +
                          ", this meshcutd uses v" + std::to_string(MC_LAYOUT_VERSION),
                      EINVAL,
                      "run `meshcutd detach --pin-root " + layout.root +
                          "` with the old meshcutd (live connections fall back to the normal path)");
  // Same version, other struct layout (a change that kept every size): the
  // maps would be reused and misread. 0: written by a daemon without it.
  if (m.magic == MC_META_MAGIC && m.abi_fingerprint != 0 && m.abi_fingerprint != kAbiFingerprint) {
    char got[16], want[16];
    std::snprintf(got, sizeof(got), "0x%08x", m.abi_fingerprint);
    std::snprintf(want, sizeof(want), "0x%08x", kAbiFingerprint);
    return make_error("pin root '" + layout.root + "' holds layout v" + std::to_string(m.layout_version) +
                          " with ABI fingerprint " + got + ", this meshcutd's structs have fingerprint " + want +
                          " (a struct changed without a layout version bump)",
                      EINVAL,
                      "run `meshcutd detach --pin-root " + layout.root +
                          "` with the meshcutd that created it (live connections fall back to the normal path), "
                          "then start this one");
  }
  return ok_status();
}

// A cgroup program (sockops, connect4) -> cgroup through a pinned bpf_link. An
// existing link on the same cgroup gets the new program atomically
// (bpf_link_update): no moment without it.
Result<bool> attach_cgroup(int prog_fd, const std::string& cgroup, const PinLayout& layout, bpf_attach_type type,
                           const char* link_name, const char* what) {
  Fd cg(::open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cg.valid()) return make_error("couldn't open cgroup '" + cgroup + "'", errno, "check --cgroup");
  auto want_id = sys::cgroup_id(cgroup);
  if (!want_id) return want_id.error();
  std::string pin = layout.link(link_name);
  int old = bpf_obj_get(pin.c_str());
  if (old >= 0) {
    Fd oldfd(old);
    bpf_link_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(old, &info, &len) == 0 && info.type == BPF_LINK_TYPE_CGROUP &&
        info.cgroup.cgroup_id == *want_id) {
      if (bpf_link_update(old, prog_fd, nullptr) != 0)
        return make_error(std::string("couldn't update the ") + what + " link on cgroup '" + cgroup + "'", errno);
      return true;
    }
    // Other cgroup (config changed) or a defunct link: replace it after the new one is in.
    Fd nl(bpf_link_create(prog_fd, cg.get(), type, nullptr));
    if (!nl.valid()) return make_error(std::string("couldn't attach ") + what + " to cgroup '" + cgroup + "'", errno);
    bpf_link_detach(old);
    ::unlink(pin.c_str());
    if (bpf_obj_pin(nl.get(), pin.c_str()) != 0) return make_error("couldn't pin link at '" + pin + "'", errno);
    return false;
  }
  Fd nl(bpf_link_create(prog_fd, cg.get(), type, nullptr));
  if (!nl.valid())
    return make_error(std::string("couldn't attach ") + what + " to cgroup '" + cgroup + "'", errno,
                      "run as root; the path must be a cgroup v2 directory");
  if (bpf_obj_pin(nl.get(), pin.c_str()) != 0) return make_error("couldn't pin link at '" + pin + "'", errno);
  return false;
}

Result<bool> attach_sockops(int prog_fd, const std::string& cgroup, const PinLayout& layout) {
  return attach_cgroup(prog_fd, cgroup, layout, BPF_CGROUP_SOCK_OPS, MC_LINK_SOCKOPS, "sockops");
}

std::vector<uint32_t> query_progs(int map_fd, bpf_attach_type type) {
  uint32_t ids[8] = {};
  uint32_t cnt = 8, flags = 0;
  if (bpf_prog_query(map_fd, type, 0, &flags, ids, &cnt) != 0) return {};
  return std::vector<uint32_t>(ids, ids + cnt);
}

void detach_map_progs(int map_fd, bpf_attach_type type) {
  for (uint32_t id : query_progs(map_fd, type)) {
    Fd p(bpf_prog_get_fd_by_id(id));
    if (p.valid()) bpf_prog_detach2(p.get(), map_fd, type);
  }
}

nlohmann::json prog_json(uint32_t id) {
  nlohmann::json j = {{"id", id}};
  Fd p(bpf_prog_get_fd_by_id(id));
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (p.valid() && bpf_obj_get_info_by_fd(p.get(), &info, &len) == 0) j["name"] = info.name;
  return j;
}

}  // namespace

Result<AttachResult> attach_all(const DaemonConfig& cfg, const std::string& cgroup, const Features& feat) {
  PinLayout layout(cfg.pin_root);
  for (const auto& d : {layout.root, layout.maps_dir(), layout.progs_dir(), layout.links_dir()})
    if (auto st = mkdir_p(d); !st) return st.error();
  auto lock = PinLock::acquire(layout.root);
  if (!lock) return lock.error();
  if (auto st = check_layout_version(layout); !st) return st.error();

  AttachResult res;
  res.reused_maps = exists(layout.map(MC_MAP_SOCKHASH));
  res.max_sockets = cfg.max_sockets;
  if (uint32_t cur = pinned_max_entries(layout.map(MC_MAP_SOCKHASH)); cur && cur != cfg.max_sockets) {
    log::warn("keeping the pinned sockhash size; detach to change it",
              {{"pinned_max_sockets", cur}, {"requested", cfg.max_sockets}});
    res.max_sockets = cur;
  }

  auto so = open_skel<mc_sockops>();
  auto sm = open_skel<mc_sk_msg>();
  auto sb = open_skel<mc_sk_skb>();
  auto c4 = open_skel<mc_connect4>();
  if (!so || !sm || !sb || !c4) return make_error("couldn't open the BPF skeletons", errno);
  so->rodata->mc_local_rto_min_us = static_cast<int>(cfg.local_rto_min_us);
  for (bpf_object* o : {so->obj, sm->obj, sb->obj, c4->obj})
    if (auto st = set_pin_paths(o, layout, res.max_sockets); !st) return st.error();
  if (int err = mc_sockops__load(so.get())) return load_error("sockops", -err, layout);
  if (int err = mc_sk_msg__load(sm.get())) return load_error("sk_msg", -err, layout);
  if (int err = mc_sk_skb__load(sb.get())) return load_error("sk_skb", -err, layout);
  if (int err = mc_connect4__load(c4.get())) return load_error("connect4", -err, layout);
  auto tc = load_tc(layout, res.max_sockets);
  if (!tc) return tc.error();
  res.ct_kfuncs = tc->ct;

  if (auto st = pin_prog(so->progs.mc_sockops, layout.prog(MC_PROG_SOCKOPS)); !st) return st.error();
  if (auto st = pin_prog(sm->progs.mc_sk_msg, layout.prog(MC_PROG_SK_MSG)); !st) return st.error();
  if (auto st = pin_prog(c4->progs.mc_connect4, layout.prog(MC_PROG_CONNECT4)); !st) return st.error();
  if (auto st = pin_prog(c4->progs.mc_obj_ingress, layout.prog(MC_PROG_OBJ_INGRESS)); !st) return st.error();
  // The CNI plugin attaches this one to each pod's host veth (it loads no BPF).
  if (auto st = pin_prog(tc->veth, layout.prog(MC_PROG_TC_VETH)); !st) return st.error();
  if (auto st = pin_prog(tc->overlay, layout.prog(MC_PROG_TC_OVERLAY)); !st) return st.error();

  int sockhash = bpf_map__fd(so->maps.mc_sockhash);
  // sk_msg (and sk_skb) to the map: replaces an older program in place. Sockets
  // already in the map keep the program they were inserted with until they close.
  if (bpf_prog_attach(bpf_program__fd(sm->progs.mc_sk_msg), sockhash, BPF_SK_MSG_VERDICT, 0) != 0)
    return make_error("couldn't attach sk_msg to " MC_MAP_SOCKHASH, errno);
  bool want_verdict =
      cfg.skb_verdict == SkbVerdict::on || (cfg.skb_verdict == SkbVerdict::automatic && feat.fionread_bug != Tri::no);
  if (want_verdict) {
    if (auto st = pin_prog(sb->progs.mc_sk_skb, layout.prog(MC_PROG_SK_SKB)); !st) return st.error();
    if (bpf_prog_attach(bpf_program__fd(sb->progs.mc_sk_skb), sockhash, BPF_SK_SKB_VERDICT, 0) != 0)
      return make_error("couldn't attach the SK_SKB verdict to " MC_MAP_SOCKHASH, errno);
    res.skb_verdict = true;
  } else {
    detach_map_progs(sockhash, BPF_SK_SKB_VERDICT);
    ::unlink(layout.prog(MC_PROG_SK_SKB).c_str());
  }

  auto updated = attach_sockops(bpf_program__fd(so->progs.mc_sockops), cgroup, layout);
  if (!updated) return updated.error();
  res.link_updated = *updated;
  // The objectives' programs (connect4 runs for every connect, obj_ingress
  // for every arriving packet): attached only while there are managed
  // services (set_obj_progs, the objectives runtime). A restart replaces the
  // programs of links already there.
  for (auto [prog, type, link] : {std::tuple{c4->progs.mc_connect4, BPF_CGROUP_INET4_CONNECT, MC_LINK_CONNECT4},
                                  std::tuple{c4->progs.mc_obj_ingress, BPF_CGROUP_INET_INGRESS, MC_LINK_OBJ_INGRESS}})
    if (exists(layout.link(link)))
      if (auto c = attach_cgroup(bpf_program__fd(prog), cgroup, layout, type, link, "an objectives program"); !c)
        return c.error();

  auto maps = PinnedMaps::open(layout);
  if (!maps) return maps.error();
  mc_meta meta{};
  meta.magic = MC_META_MAGIC;
  meta.layout_version = MC_LAYOUT_VERSION;
  meta.features = feat.bits() | (res.skb_verdict ? MC_FEAT_SKB_VERDICT : 0) | (res.ct_kfuncs ? MC_FEAT_CT_KFUNCS : 0);
  meta.daemon_pid = static_cast<uint32_t>(::getpid());
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  meta.started_ns = static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
  meta.max_sockets = res.max_sockets;
  meta.abi_fingerprint = kAbiFingerprint;
  if (auto st = maps->set_meta(meta); !st) return st.error();
  mc_config mc{};
  mc.enabled = 1;
  if (!cfg.pod_cidr.empty()) {
    auto cidr = parse_ipv4_cidr(cfg.pod_cidr);
    if (!cidr) return cidr.error();
    mc.pod_cidr = cidr->first;
    mc.pod_cidr_mask = cidr->second;
  }
  if (!cfg.overlay_dev.empty()) {
    mc.overlay_ifindex = if_nametoindex(cfg.overlay_dev.c_str());
    if (!mc.overlay_ifindex)
      return make_error("overlay device '" + cfg.overlay_dev + "' not found", errno,
                        "pass --overlay-dev with the overlay's name in this netns (ip -d link show type vxlan)");
    auto att = tc::attach_ingress(static_cast<int>(mc.overlay_ifindex), bpf_program__fd(tc->overlay));
    if (!att) return att.error();
    res.overlay_attached = true;
  }
  if (cfg.cross_node && mc.pod_cidr) mc.flags |= MC_CFG_F_CROSS_NODE;
  // The conns table where iterators are refused. Switched off, its entries
  // would go stale (closes are no longer seen): empty it.
  if (feat.conns_table())
    mc.flags |= MC_CFG_F_CONNS_TABLE;
  else if (auto st = maps->clear_conns(); !st)
    return st.error();
  res.conns_table = feat.conns_table();
  res.cross_node = (mc.flags & MC_CFG_F_CROSS_NODE) != 0;
  if (auto st = maps->set_config(mc); !st) return st.error();
  return res;
}

Status detach_all(const PinLayout& layout) {
  if (!exists(layout.root)) return ok_status();  // nothing to do: idempotent
  auto lock = PinLock::acquire(layout.root);
  if (!lock) return lock.error();
  // 1. New decisions become PASS and redirected directions turn PASS: the
  //    receivers drain their redirect queues first, so nothing is reordered.
  //    The tc filters the CNI plugin put on pod veths go too.
  if (auto maps = PinnedMaps::open(layout)) {
    auto old = maps->config();
    maps->set_config(mc_config{});
    if (old && old->overlay_ifindex) {
      unsigned id = 0;
      // Only our filter, and only if it is ours (the overlay may have been recreated).
      if (tc::attached(static_cast<int>(old->overlay_ifindex), &id))
        if (auto st = tc::detach_ingress(static_cast<int>(old->overlay_ifindex)); !st)
          log::warn("couldn't remove the overlay tc filter", {{"error", st.error().format()}});
    }
    if (auto recs = maps->cni_pods())
      for (const auto& [k, rec] : *recs) pods::detach_tc_if_same(rec);
  }
  // 2. No new socket enters the map.
  std::string link = layout.link(MC_LINK_SOCKOPS);
  if (int lfd = bpf_obj_get(link.c_str()); lfd >= 0) {
    if (bpf_link_detach(lfd) != 0 && errno != ENOLINK) {
      int e = errno;
      ::close(lfd);
      return make_error("couldn't detach the sockops cgroup link", e);
    }
    ::close(lfd);
  }
  // The objectives' programs: connects go unchanged from here on.
  for (const char* name : {MC_LINK_CONNECT4, MC_LINK_OBJ_INGRESS}) {
    if (int lfd = bpf_obj_get(layout.link(name).c_str()); lfd >= 0) {
      if (bpf_link_detach(lfd) != 0 && errno != ENOLINK)
        log::warn("couldn't detach a cgroup link", {{"link", name}, {"errno", errno}});
      ::close(lfd);
    }
    ::unlink(layout.link(name).c_str());
  }
  // 3. The map's programs. Sockets already in it keep theirs (and their
  //    queued bytes) until they close; deleting them would drop queued data.
  if (int mfd = bpf_obj_get(layout.map(MC_MAP_SOCKHASH).c_str()); mfd >= 0) {
    detach_map_progs(mfd, BPF_SK_MSG_VERDICT);
    detach_map_progs(mfd, BPF_SK_SKB_VERDICT);
    ::close(mfd);
  }
  // 4. Every pin, then the directories.
  for (const auto& n : PinLayout::map_names()) ::unlink(layout.map(n).c_str());
  for (const char* n : {MC_PROG_SOCKOPS, MC_PROG_SK_MSG, MC_PROG_SK_SKB, MC_PROG_TC_VETH, MC_PROG_TC_OVERLAY,
                        MC_PROG_CONNECT4, MC_PROG_OBJ_INGRESS})
    ::unlink(layout.prog(n).c_str());
  ::unlink(link.c_str());
  for (const auto& d : {layout.maps_dir(), layout.progs_dir(), layout.links_dir(), layout.root})
    if (::rmdir(d.c_str()) != 0 && errno != ENOENT)
      return make_error("couldn't remove '" + d + "' (something else is pinned there?)", errno,
                        "list it with: ls -la " + d);
  return ok_status();
}

OverlayRecheck reattach_overlay(const PinLayout& layout, const std::string& dev) {
  OverlayRecheck r;
  auto maps = PinnedMaps::open(layout);
  if (!maps) return r;
  auto c = maps->config();
  if (!c || !c->enabled) return r;
  uint32_t ifindex = c->overlay_ifindex;
  if (!dev.empty()) {
    ifindex = if_nametoindex(dev.c_str());
    if (!ifindex) {
      r.missing = true;  // deleted, maybe being recreated: look again next time
      return r;
    }
  }
  if (!ifindex) return r;
  r.old_ifindex = c->overlay_ifindex;
  r.new_ifindex = ifindex;
  bool moved = ifindex != c->overlay_ifindex;
  if (!moved && tc::attached(static_cast<int>(ifindex))) return r;
  auto prog = open_pinned(layout.prog(MC_PROG_TC_OVERLAY));
  if (!prog) return r;
  auto att = tc::attach_ingress(static_cast<int>(ifindex), prog->get());
  if (!att) {
    log::warn("couldn't re-attach the overlay tc filter",
              {{"device", dev}, {"ifindex", ifindex}, {"error", att.error().format()}});
    return r;
  }
  if (moved) {
    // Only the ifindex changes: the switches someone set meanwhile stay.
    c->overlay_ifindex = ifindex;
    if (auto st = maps->set_config(*c); !st)
      log::warn("couldn't record the overlay's new ifindex in " MC_MAP_CONFIG, {{"error", st.error().format()}});
  }
  r.attached = true;
  return r;
}

SockopsRecheck reattach_sockops(const PinLayout& layout, const std::string& cgroup) {
  SockopsRecheck r;
  std::string pin = layout.link(MC_LINK_SOCKOPS);
  if (int lfd = bpf_obj_get(pin.c_str()); lfd >= 0) {
    Fd f(lfd);
    bpf_link_info info{};
    uint32_t len = sizeof(info);
    // A detached cgroup link keeps its pin but reports cgroup_id 0.
    if (bpf_obj_get_info_by_fd(lfd, &info, &len) != 0 || info.cgroup.cgroup_id != 0) return r;
  }
  auto prog = open_pinned(layout.prog(MC_PROG_SOCKOPS));
  if (!prog) {
    r.error = prog.error().format();
    return r;
  }
  // A defunct pinned link is replaced by a new one, pinned in its place.
  auto att = attach_sockops(prog->get(), cgroup, layout);
  if (!att) {
    r.error = att.error().format();
    return r;
  }
  r.attached = true;
  if (int lfd = bpf_obj_get(pin.c_str()); lfd >= 0) {
    Fd f(lfd);
    bpf_link_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(lfd, &info, &len) == 0) r.link_id = info.id;
  }
  return r;
}

Status set_obj_progs(const PinLayout& layout, const std::string& cgroup, bool on) {
  const std::tuple<const char*, bpf_attach_type, const char*> progs[] = {
      {MC_PROG_CONNECT4, BPF_CGROUP_INET4_CONNECT, MC_LINK_CONNECT4},
      {MC_PROG_OBJ_INGRESS, BPF_CGROUP_INET_INGRESS, MC_LINK_OBJ_INGRESS}};
  for (const auto& [name, type, link] : progs) {
    std::string pin = layout.link(link);
    if (!on) {
      if (int lfd = bpf_obj_get(pin.c_str()); lfd >= 0) {
        Fd f(lfd);
        if (bpf_link_detach(lfd) != 0 && errno != ENOLINK)
          return make_error(std::string("couldn't detach the objectives program ") + name, errno);
      }
      ::unlink(pin.c_str());
      continue;
    }
    if (exists(pin)) continue;  // attached (the recheck loop repairs a detached link)
    auto prog = open_pinned(layout.prog(name));
    if (!prog) return prog.error();
    auto att = attach_cgroup(prog->get(), cgroup, layout, type, link, name);
    if (!att) return att.error();
  }
  return ok_status();
}

nlohmann::json attachments_json(const PinLayout& layout) {
  nlohmann::json j;
  nlohmann::json so = {{"attached", false}, {"pin", layout.link(MC_LINK_SOCKOPS)}};
  if (int lfd = bpf_obj_get(layout.link(MC_LINK_SOCKOPS).c_str()); lfd >= 0) {
    Fd f(lfd);
    bpf_link_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(lfd, &info, &len) == 0) {
      so["attached"] = info.cgroup.cgroup_id != 0;
      so["link_id"] = info.id;
      so["prog_id"] = info.prog_id;
      so["cgroup_id"] = info.cgroup.cgroup_id;
    }
  }
  j["sockops"] = so;
  if (auto maps = PinnedMaps::open(layout)) {
    auto c = maps->config();
    nlohmann::json ov = {{"attached", false}};
    if (c && c->overlay_ifindex) {
      char name[IF_NAMESIZE] = {};
      unsigned id = 0;
      ov["device"] = if_indextoname(c->overlay_ifindex, name) ? name : "?";
      ov["attached"] = tc::attached(static_cast<int>(c->overlay_ifindex), &id);
      ov["prog_id"] = id;
    }
    j["tc_overlay"] = ov;
    j["cross_node"] = c && (c->flags & MC_CFG_F_CROSS_NODE) && c->pod_cidr;
  }
  int mfd = bpf_obj_get(layout.map(MC_MAP_SOCKHASH).c_str());
  Fd m(mfd);
  for (auto [name, type] : {std::pair{"sk_msg", BPF_SK_MSG_VERDICT}, std::pair{"sk_skb", BPF_SK_SKB_VERDICT}}) {
    auto ids = mfd >= 0 ? query_progs(mfd, type) : std::vector<uint32_t>{};
    nlohmann::json a = {{"attached", !ids.empty()}};
    if (!ids.empty()) a["prog"] = prog_json(ids[0]);
    j[name] = a;
  }
  return j;
}

}  // namespace meshcut::daemon
