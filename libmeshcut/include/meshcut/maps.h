// SPDX-License-Identifier: Apache-2.0
// Typed access to the pinned maps, for every user-space reader and writer
// (meshcutd's subcommands, the CNI plugin, tests). Opens pins; loads nothing.
#pragma once

#include <bpf/bpf.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "meshcut/abi.h"
#include "meshcut/error.h"
#include "meshcut/fd.h"
#include "meshcut/pins.h"

namespace meshcut {

using Counters = std::array<uint64_t, MC_C__N>;

struct MapUsage {
  std::string name;
  uint32_t type = 0;
  uint64_t entries = 0;  // counted by walking the keys (hash-like maps only)
  uint32_t max_entries = 0;
  uint32_t key_size = 0;
  uint32_t value_size = 0;
  uint64_t memlock = 0;  // the kernel's own account (/proc/self/fdinfo "memlock"), bytes
};

class PinnedMaps {
 public:
  // Opens every map pin under LAYOUT.
  static Result<PinnedMaps> open(const PinLayout& layout);

  Result<Counters> counters() const;
  Result<mc_config> config() const;
  Status set_config(const mc_config& c) const;
  Result<mc_meta> meta() const;
  Status set_meta(const mc_meta& m) const;

  // Pod records: mc_pods[cookie] and mc_pod_ips[ip] for each address.
  Status put_pod(uint64_t netns_cookie, const mc_pod& pod) const;
  // Removes the record and its IPs; absent is not an error (returns false).
  Result<bool> del_pod(uint64_t netns_cookie) const;
  Result<std::vector<std::pair<uint64_t, mc_pod>>> pods() const;

  // The conns table (mc_conns): each live socket's state, kept by sockops and
  // sk_msg while MC_CFG_F_CONNS_TABLE is set (kernels that refuse iterators).
  // sockops adds an entry at insertion and nothing removes it at close (a
  // state callback per socket would cost seven more program runs per
  // connection): conns() returns only the sockets still in the sockhash, and
  // sweep_conns() (meshcutd, every --gc-interval) removes the others' entries
  // and says how many.
  Result<std::vector<mc_sock_state>> conns() const;
  Result<uint64_t> sweep_conns() const;
  bool in_sockhash(const mc_sock_key& k) const;
  // Empties it (the table is switched off: its entries would go stale).
  Status clear_conns() const;
  // Forgets every cross-node flow (mc_flows): the tc shortcut was switched
  // off, and a flow remembered now would flip back to it mid-stream when the
  // switch goes on again.
  Status clear_flows() const;

  // CNI attachment records (mc_cni_pods), keyed by container ID + ifname.
  static Result<mc_cni_key> cni_key(const std::string& container_id, const std::string& ifname);
  Status put_cni(const mc_cni_key& k, const mc_cni_pod& rec) const;
  Result<std::optional<mc_cni_pod>> get_cni(const mc_cni_key& k) const;
  Status del_cni(const mc_cni_key& k) const;
  Result<std::vector<std::pair<mc_cni_key, mc_cni_pod>>> cni_pods() const;

  // CNI statistics (mc_cni_stats); the caller holds the pin lock to add.
  Status add_cni_stat(uint32_t idx, uint64_t n) const;
  Result<std::array<uint64_t, MC_S__N>> cni_stats() const;

  Result<std::vector<MapUsage>> usage() const;
  int fd(const std::string& name) const;

 private:
  std::vector<std::pair<std::string, Fd>> fds_;
};

// Sums a per-CPU value array as the kernel returns it (one slot per possible CPU).
uint64_t sum_percpu(const uint64_t* values, int ncpus);
// Every (key, value) of a hash map; an entry deleted during the walk is skipped.
template <typename K, typename V>
std::vector<std::pair<K, V>> walk_hash(int map_fd) {
  std::vector<std::pair<K, V>> out;
  // Hash maps read in batches (BPF_MAP_LOOKUP_BATCH, 5.6+): two syscalls per
  // 4096 entries instead of two per entry, which at 200,000 sockets is most of
  // what `conns` and `pods` take. Other maps, or a refusal: key by key.
  {
    constexpr uint32_t kBatch = 4096;
    std::vector<K> keys(kBatch);
    std::vector<V> vals(kBatch);
    uint64_t token_in = 0, token_out = 0;  // the kernel's batch cursor (a bucket index)
    bool first = true, done = false;
    while (!done) {
      uint32_t n = kBatch;
      int rc =
          bpf_map_lookup_batch(map_fd, first ? nullptr : &token_in, &token_out, keys.data(), vals.data(), &n, nullptr);
      int err = rc ? errno : 0;
      if (rc && err != ENOENT) {
        if (first) break;  // not supported here: walk key by key below
        out.clear();       // refused midway: start over key by key
        break;
      }
      for (uint32_t i = 0; i < n; ++i) out.emplace_back(keys[i], vals[i]);
      done = err == ENOENT;
      first = false;
      token_in = token_out;
    }
    if (done) return out;
  }
  K key{}, next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(map_fd, prev, &next) == 0) {
    V v{};
    if (bpf_map_lookup_elem(map_fd, &next, &v) == 0) out.emplace_back(next, v);
    key = next;
    prev = &key;
  }
  return out;
}

// Walks a map's keys; works for hash, sockhash (not for arrays or sk_storage).
Result<uint64_t> count_keys(int map_fd, uint32_t key_size);

}  // namespace meshcut
