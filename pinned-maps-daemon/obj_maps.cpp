// SPDX-License-Identifier: Apache-2.0
#include "obj_maps.h"

#include <bpf/bpf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <set>

namespace meshcut::obj {
namespace {

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

bool same(const mc_obj_addr& a, const mc_obj_addr& b) { return a.ip == b.ip && a.port == b.port; }

template <typename V>
Status sync_table(int fd, const char* name, const std::vector<std::pair<mc_obj_addr, V>>& want) {
  for (const auto& [k, v] : want)
    if (bpf_map_update_elem(fd, &k, &v, BPF_ANY) != 0)
      return make_error(std::string("couldn't write ") + name, errno,
                        errno == E2BIG ? "too many managed addresses (see meshcut_obj.h limits)" : "");
  for (const auto& [k, v] : walk_hash<mc_obj_addr, V>(fd)) {
    bool keep = false;
    for (const auto& w : want) keep = keep || same(w.first, k);
    if (!keep && bpf_map_delete_elem(fd, &k) != 0 && errno != ENOENT)
      return make_error(std::string("couldn't delete a stale entry of ") + name, errno);
  }
  return ok_status();
}

// mc_obj_ctl is mmapable: the word is flipped by one 8-byte store (a
// bpf_map_update_elem copies the value with memcpy, which need not be atomic).
struct CtlMap {
  void* p = MAP_FAILED;
  size_t len = 0;
  CtlMap() = default;
  CtlMap(const CtlMap&) = delete;
  CtlMap(CtlMap&& o) noexcept : p(o.p), len(o.len) { o.p = MAP_FAILED; }
  ~CtlMap() {
    if (p != MAP_FAILED) ::munmap(p, len);
  }
};

Result<CtlMap> map_ctl(int fd) {
  CtlMap c;
  c.len = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  c.p = ::mmap(nullptr, c.len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (c.p == MAP_FAILED) return make_error("couldn't mmap " MC_MAP_OBJ_CTL, errno);
  return c;
}

}  // namespace

Status ObjMaps::sync_addresses(const std::vector<std::pair<mc_obj_addr, mc_obj_vip>>& vips,
                               const std::vector<std::pair<mc_obj_addr, mc_obj_ep>>& eps) const {
  if (auto st = sync_table(m_.fd(MC_MAP_OBJ_VIPS), MC_MAP_OBJ_VIPS, vips); !st) return st;
  return sync_table(m_.fd(MC_MAP_OBJ_EPS), MC_MAP_OBJ_EPS, eps);
}

Status ObjMaps::put_pod(uint64_t cookie, const mc_obj_pod& p) const {
  if (bpf_map_update_elem(m_.fd(MC_MAP_OBJ_POD), &cookie, &p, BPF_ANY) != 0)
    return make_error("couldn't write the pod's class to " MC_MAP_OBJ_POD, errno);
  return ok_status();
}

Status ObjMaps::del_pod(uint64_t cookie) const {
  if (bpf_map_delete_elem(m_.fd(MC_MAP_OBJ_POD), &cookie) != 0 && errno != ENOENT)
    return make_error("couldn't delete from " MC_MAP_OBJ_POD, errno);
  return ok_status();
}

Result<std::vector<std::pair<uint64_t, mc_obj_pod>>> ObjMaps::pods() const {
  return walk_hash<uint64_t, mc_obj_pod>(m_.fd(MC_MAP_OBJ_POD));
}

Status ObjMaps::set_enabled(bool on) const {
  auto c = m_.config();
  if (!c) return c.error();
  uint32_t flags = on ? (c->flags | MC_CFG_F_OBJECTIVES) : (c->flags & ~MC_CFG_F_OBJECTIVES);
  if (flags == c->flags) return ok_status();
  c->flags = flags;
  return m_.set_config(*c);
}

Result<bool> ObjMaps::enabled() const {
  auto c = m_.config();
  if (!c) return c.error();
  return (c->flags & MC_CFG_F_OBJECTIVES) != 0;
}

Result<uint64_t> ObjMaps::read_word() const {
  auto c = map_ctl(m_.fd(MC_MAP_OBJ_CTL));
  if (!c) return c.error();
  return __atomic_load_n(&static_cast<mc_obj_ctl*>(c->p)->word, __ATOMIC_ACQUIRE);
}

Status ObjMaps::write_word(uint64_t w) const {
  auto c = map_ctl(m_.fd(MC_MAP_OBJ_CTL));
  if (!c) return c.error();
  __atomic_store_n(&static_cast<mc_obj_ctl*>(c->p)->word, w, __ATOMIC_RELEASE);
  return ok_status();
}

Status ObjMaps::apply(uint64_t generation, uint64_t ttl_ns, const std::vector<ActionSlot>& slots) const {
  auto w = read_word();
  if (!w) return w.error();
  uint64_t cur = *w >> 1;
  if (generation <= cur)
    return make_error("generation " + std::to_string(generation) + " is not newer than the one in force (" +
                          std::to_string(cur) + ")",
                      EINVAL, "send the next generation (the controller's counter only grows)");
  if (generation >= (1ull << 62)) return make_error("generation out of range", ERANGE);
  for (const auto& s : slots)
    if (s.svc >= MC_OBJ_MAX_SERVICES || s.cls >= MC_OBJ_MAX_CLASSES)
      return make_error(
          "action slot (service " + std::to_string(s.svc) + ", class " + std::to_string(s.cls) + ") out of range",
          EINVAL);
  uint32_t half = cur ? ((*w & 1) ^ 1u) : 0u;
  uint64_t expires = monotonic_ns() + ttl_ns;
  // The whole idle half: slots the action does not name are "no control".
  std::vector<mc_obj_action> vals(MC_OBJ_MAX_SERVICES * MC_OBJ_MAX_CLASSES);
  for (auto& v : vals) {
    v = mc_obj_action{};
    v.generation = generation;
    v.expires_ns = expires;
  }
  for (const auto& s : slots) {
    mc_obj_action& v = vals[s.svc * MC_OBJ_MAX_CLASSES + s.cls];
    v = s.action;
    v.generation = generation;
    v.expires_ns = expires;
  }
  int fd = m_.fd(MC_MAP_OBJ_ACTIONS);
  for (uint32_t svc = 0; svc < MC_OBJ_MAX_SERVICES; ++svc)
    for (uint32_t cls = 0; cls < MC_OBJ_MAX_CLASSES; ++cls) {
      uint32_t idx = mc_obj_action_index(half, svc, cls);
      if (bpf_map_update_elem(fd, &idx, &vals[svc * MC_OBJ_MAX_CLASSES + cls], BPF_ANY) != 0)
        return make_error("couldn't write the action to " MC_MAP_OBJ_ACTIONS, errno);
    }
  return write_word(mc_obj_ctl_word(generation, half));
}

Status ObjMaps::clear() const { return write_word(0); }

Result<CtlState> ObjMaps::ctl() const {
  auto w = read_word();
  if (!w) return w.error();
  CtlState s;
  s.generation = *w >> 1;
  s.half = static_cast<uint32_t>(*w & 1);
  if (s.generation) {
    auto a = slot(0, 0);
    if (a && a->generation == s.generation) s.expires_ns = a->expires_ns;
  }
  return s;
}

Result<mc_obj_action> ObjMaps::slot(uint32_t svc, uint32_t cls) const {
  auto w = read_word();
  if (!w) return w.error();
  uint32_t idx = mc_obj_action_index(static_cast<uint32_t>(*w & 1), svc, cls);
  mc_obj_action a{};
  if (bpf_map_lookup_elem(m_.fd(MC_MAP_OBJ_ACTIONS), &idx, &a) != 0)
    return make_error("couldn't read " MC_MAP_OBJ_ACTIONS, errno);
  return a;
}

Result<std::vector<mc_obj_stat>> ObjMaps::stats(const std::vector<uint32_t>& svcs) const {
  std::vector<mc_obj_stat> rows(MC_OBJ_STAT_ROWS);
  int fd = m_.fd(MC_MAP_OBJ_STATS);
  for (uint32_t svc : std::set<uint32_t>(svcs.begin(), svcs.end())) {
    if (svc >= MC_OBJ_MAX_SERVICES) continue;
    for (uint32_t be = 0; be <= MC_OBJ_BACKEND_ALL; ++be)
      for (uint32_t cls = 0; cls < MC_OBJ_MAX_CLASSES; ++cls) {
        uint32_t idx = mc_obj_stat_index(svc, be, cls);
        if (bpf_map_lookup_elem(fd, &idx, &rows[idx]) != 0) return make_error("couldn't read " MC_MAP_OBJ_STATS, errno);
      }
  }
  return rows;
}

Result<std::array<uint64_t, MC_OC__N>> ObjMaps::counters() const {
  std::array<uint64_t, MC_OC__N> out{};
  for (uint32_t i = 0; i < MC_OC__N; ++i)
    if (bpf_map_lookup_elem(m_.fd(MC_MAP_OBJ_COUNTERS), &i, &out[i]) != 0)
      return make_error("couldn't read " MC_MAP_OBJ_COUNTERS, errno);
  return out;
}

}  // namespace meshcut::obj
