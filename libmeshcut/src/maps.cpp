// SPDX-License-Identifier: Apache-2.0
#include "meshcut/maps.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

namespace meshcut {

uint64_t sum_percpu(const uint64_t* values, int ncpus) {
  uint64_t s = 0;
  for (int i = 0; i < ncpus; ++i) s += values[i];
  return s;
}

uint64_t fdinfo_memlock(int fd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(fd));
  std::string k;
  uint64_t v = 0;
  while (in >> k) {
    if (k == "memlock:" && in >> v) return v;
  }
  return 0;
}

Result<uint64_t> count_keys(int map_fd, uint32_t key_size) {
  std::vector<uint8_t> cur(key_size), next(key_size);
  uint64_t n = 0;
  const void* prev = nullptr;
  while (n < (1u << 26)) {  // a map cannot hold more; guards a walk of a changing map
    if (bpf_map_get_next_key(map_fd, prev, next.data()) != 0) {
      if (errno == ENOENT) break;  // the normal end
      return make_error("couldn't walk map keys", errno);
    }
    ++n;
    cur.swap(next);
    prev = cur.data();
  }
  return n;
}

Result<PinnedMaps> PinnedMaps::open(const PinLayout& layout) {
  PinnedMaps m;
  for (const auto& name : PinLayout::map_names()) {
    auto fd = open_pinned(layout.map(name));
    if (!fd) return fd.error();
    m.fds_.emplace_back(name, std::move(fd.value()));
  }
  return m;
}

int PinnedMaps::fd(const std::string& name) const {
  for (const auto& [n, f] : fds_)
    if (n == name) return f.get();
  return -1;
}

Result<Counters> PinnedMaps::counters() const {
  int ncpus = libbpf_num_possible_cpus();
  if (ncpus <= 0) return make_error("couldn't count possible CPUs", -ncpus);
  Counters out{};
  std::vector<uint64_t> vals(ncpus);
  for (uint32_t i = 0; i < MC_C__N; ++i) {
    if (bpf_map_lookup_elem(fd(MC_MAP_COUNTERS), &i, vals.data()) != 0)
      return make_error("couldn't read counter " + std::string(kCounterNames[i]), errno);
    out[i] = sum_percpu(vals.data(), ncpus);
  }
  return out;
}

Result<mc_config> PinnedMaps::config() const {
  uint32_t k = 0;
  mc_config c{};
  if (bpf_map_lookup_elem(fd(MC_MAP_CONFIG), &k, &c) != 0) return make_error("couldn't read mc_config", errno);
  return c;
}

Status PinnedMaps::set_config(const mc_config& c) const {
  uint32_t k = 0;
  if (bpf_map_update_elem(fd(MC_MAP_CONFIG), &k, &c, BPF_ANY) != 0)
    return make_error("couldn't write mc_config", errno);
  return ok_status();
}

Result<mc_meta> PinnedMaps::meta() const {
  uint32_t k = 0;
  mc_meta m{};
  if (bpf_map_lookup_elem(fd(MC_MAP_META), &k, &m) != 0) return make_error("couldn't read mc_meta", errno);
  return m;
}

Status PinnedMaps::set_meta(const mc_meta& m) const {
  uint32_t k = 0;
  if (bpf_map_update_elem(fd(MC_MAP_META), &k, &m, BPF_ANY) != 0) return make_error("couldn't write mc_meta", errno);
  return ok_status();
}

Status PinnedMaps::put_pod(uint64_t cookie, const mc_pod& pod) const {
  // IPs first: a socket that finds the pod finds its addresses too.
  for (uint32_t ip : pod.ip4) {
    if (!ip) continue;
    if (bpf_map_update_elem(fd(MC_MAP_POD_IPS), &ip, &cookie, BPF_ANY) != 0)
      return make_error("couldn't register pod IP in mc_pod_ips", errno,
                        errno == E2BIG ? "the pod IP map is full" : "");
  }
  if (bpf_map_update_elem(fd(MC_MAP_PODS), &cookie, &pod, BPF_ANY) != 0)
    return make_error("couldn't register pod in mc_pods", errno, errno == E2BIG ? "the pod map is full" : "");
  return ok_status();
}

Result<bool> PinnedMaps::del_pod(uint64_t cookie) const {
  mc_pod pod{};
  if (bpf_map_lookup_elem(fd(MC_MAP_PODS), &cookie, &pod) != 0) {
    if (errno == ENOENT) return false;
    return make_error("couldn't read mc_pods", errno);
  }
  if (bpf_map_delete_elem(fd(MC_MAP_PODS), &cookie) != 0 && errno != ENOENT)
    return make_error("couldn't delete pod from mc_pods", errno);
  for (uint32_t ip : pod.ip4) {
    if (!ip) continue;
    uint64_t owner = 0;
    // Only remove an IP still owned by this pod (a new pod may have it now).
    if (bpf_map_lookup_elem(fd(MC_MAP_POD_IPS), &ip, &owner) == 0 && owner == cookie)
      bpf_map_delete_elem(fd(MC_MAP_POD_IPS), &ip);
  }
  return true;
}

Result<std::vector<std::pair<uint64_t, mc_pod>>> PinnedMaps::pods() const {
  return walk_hash<uint64_t, mc_pod>(fd(MC_MAP_PODS));
}

// A closed socket leaves the sockhash at once (the kernel unlinks it), its
// mc_conns entry only at the next sweep: live = still in the sockhash.
bool PinnedMaps::in_sockhash(const mc_sock_key& k) const {
  uint64_t cookie = 0;
  return bpf_map_lookup_elem(fd(MC_MAP_SOCKHASH), &k, &cookie) == 0;
}

Result<std::vector<mc_sock_state>> PinnedMaps::conns() const {
  std::vector<mc_sock_state> out;
  for (const auto& [k, st] : walk_hash<mc_sock_key, mc_sock_state>(fd(MC_MAP_CONNS)))
    if (in_sockhash(k)) out.push_back(st);
  return out;
}

Result<uint64_t> PinnedMaps::sweep_conns() const {
  int f = fd(MC_MAP_CONNS);
  uint64_t removed = 0;
  for (const auto& [k, st] : walk_hash<mc_sock_key, mc_sock_state>(f)) {
    if (in_sockhash(k)) continue;
    if (bpf_map_delete_elem(f, &k) == 0)
      ++removed;
    else if (errno != ENOENT)
      return make_error("couldn't remove a closed socket's entry from " MC_MAP_CONNS, errno);
  }
  return removed;
}

namespace {

// Deletes every key of the hash map NAME. Deleting the key just returned
// restarts the walk at the first key.
template <typename K>
Status clear_map(int map_fd, const char* name) {
  K k{};
  while (bpf_map_get_next_key(map_fd, nullptr, &k) == 0)
    if (bpf_map_delete_elem(map_fd, &k) != 0 && errno != ENOENT)
      return make_error(std::string("couldn't clear ") + name, errno);
  return ok_status();
}

}  // namespace

Status PinnedMaps::clear_conns() const { return clear_map<mc_sock_key>(fd(MC_MAP_CONNS), MC_MAP_CONNS); }

Status PinnedMaps::clear_flows() const { return clear_map<mc_flow_key>(fd(MC_MAP_FLOWS), MC_MAP_FLOWS); }

Result<mc_cni_key> PinnedMaps::cni_key(const std::string& container_id, const std::string& ifname) {
  mc_cni_key k{};
  if (container_id.empty() || container_id.size() >= sizeof(k.container_id))
    return make_error("container ID must be 1-" + std::to_string(sizeof(k.container_id) - 1) + " characters", EINVAL);
  if (ifname.empty() || ifname.size() >= sizeof(k.ifname))
    return make_error("interface name must be 1-15 characters", EINVAL);
  std::memcpy(k.container_id, container_id.data(), container_id.size());
  std::memcpy(k.ifname, ifname.data(), ifname.size());
  return k;
}

Status PinnedMaps::put_cni(const mc_cni_key& k, const mc_cni_pod& rec) const {
  if (bpf_map_update_elem(fd(MC_MAP_CNI_PODS), &k, &rec, BPF_ANY) != 0)
    return make_error("couldn't write the pod record to " MC_MAP_CNI_PODS, errno,
                      errno == E2BIG ? "the pod record map is full" : "");
  return ok_status();
}

Result<std::optional<mc_cni_pod>> PinnedMaps::get_cni(const mc_cni_key& k) const {
  mc_cni_pod rec{};
  if (bpf_map_lookup_elem(fd(MC_MAP_CNI_PODS), &k, &rec) != 0) {
    if (errno == ENOENT) return std::optional<mc_cni_pod>{};
    return make_error("couldn't read " MC_MAP_CNI_PODS, errno);
  }
  return std::optional<mc_cni_pod>{rec};
}

Status PinnedMaps::del_cni(const mc_cni_key& k) const {
  if (bpf_map_delete_elem(fd(MC_MAP_CNI_PODS), &k) != 0 && errno != ENOENT)
    return make_error("couldn't delete the pod record from " MC_MAP_CNI_PODS, errno);
  return ok_status();
}

Result<std::vector<std::pair<mc_cni_key, mc_cni_pod>>> PinnedMaps::cni_pods() const {
  std::vector<std::pair<mc_cni_key, mc_cni_pod>> out;
  mc_cni_key key{}, next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd(MC_MAP_CNI_PODS), prev, &next) == 0) {
    mc_cni_pod rec{};
    if (bpf_map_lookup_elem(fd(MC_MAP_CNI_PODS), &next, &rec) == 0) out.emplace_back(next, rec);
    key = next;
    prev = &key;
  }
  return out;
}

Status PinnedMaps::add_cni_stat(uint32_t idx, uint64_t n) const {
  uint64_t v = 0;
  if (bpf_map_lookup_elem(fd(MC_MAP_CNI_STATS), &idx, &v) != 0) return make_error("couldn't read mc_cni_stats", errno);
  v += n;
  if (bpf_map_update_elem(fd(MC_MAP_CNI_STATS), &idx, &v, BPF_ANY) != 0)
    return make_error("couldn't write mc_cni_stats", errno);
  return ok_status();
}

Result<std::array<uint64_t, MC_S__N>> PinnedMaps::cni_stats() const {
  std::array<uint64_t, MC_S__N> out{};
  for (uint32_t i = 0; i < MC_S__N; ++i)
    if (bpf_map_lookup_elem(fd(MC_MAP_CNI_STATS), &i, &out[i]) != 0)
      return make_error("couldn't read mc_cni_stats", errno);
  return out;
}

Result<std::vector<MapUsage>> PinnedMaps::usage() const {
  std::vector<MapUsage> out;
  for (const auto& [name, f] : fds_) {
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(f.get(), &info, &len) != 0)
      return make_error("couldn't read map info of " + name, errno);
    MapUsage u{name, info.type, 0, info.max_entries, info.key_size, info.value_size, fdinfo_memlock(f.get())};
    if (info.type == BPF_MAP_TYPE_HASH || info.type == BPF_MAP_TYPE_LRU_HASH || info.type == BPF_MAP_TYPE_SOCKHASH) {
      auto n = count_keys(f.get(), info.key_size);
      if (!n) return n.error();
      u.entries = *n;
    } else if (info.type == BPF_MAP_TYPE_ARRAY || info.type == BPF_MAP_TYPE_PERCPU_ARRAY) {
      u.entries = info.max_entries;
    }
    out.push_back(u);
  }
  return out;
}

}  // namespace meshcut
