// SPDX-License-Identifier: Apache-2.0
// The kernel/user contract as C++ sees it: the shared header plus the checks
// that keep a key's bytes meaningful (no hidden padding: g++ rejects a key whose
// object representation is not unique) and the counter names.
#pragma once

#include <linux/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <type_traits>

extern "C" {
#include <linux/bpf.h>  // struct bpf_spin_lock (mc_obj_bucket)

#include "meshcut_kern_user.h"
#include "meshcut_obj.h"
}

namespace meshcut {

static_assert(sizeof(mc_sock_key) == 24 && std::has_unique_object_representations_v<mc_sock_key>);
static_assert(sizeof(mc_sock_state) == 72);
static_assert(sizeof(mc_syn_key) == 16 && std::has_unique_object_representations_v<mc_syn_key>);
static_assert(sizeof(mc_pod) == 36);
static_assert(sizeof(mc_config) == 24);
static_assert(sizeof(mc_flow_owner_key) == 8 && std::has_unique_object_representations_v<mc_flow_owner_key>);
static_assert(sizeof(mc_flow) == 16);
static_assert(sizeof(mc_flow_key) == 12 && std::has_unique_object_representations_v<mc_flow_key>);
static_assert(sizeof(mc_meta) == 32);
static_assert(sizeof(mc_cni_key) == 88 && std::has_unique_object_representations_v<mc_cni_key>);
static_assert(sizeof(mc_cni_pod) == 464);
static_assert(sizeof(mc_obj_addr) == 8 && std::has_unique_object_representations_v<mc_obj_addr>);
static_assert(sizeof(mc_obj_ctl) == 16);
static_assert(sizeof(mc_obj_action) == 168);
static_assert(sizeof(mc_obj_bucket) == 32);
static_assert(sizeof(mc_obj_stat) == 80 + 2 * 4 * MC_OBJ_HIST_BUCKETS);
static_assert(sizeof(mc_obj_sock) == 40);
// Keys of the plain maps.
static_assert(std::has_unique_object_representations_v<__u64> && std::has_unique_object_representations_v<__u32>);

// The ABI fingerprint: a 32-bit hash over the size of every struct of the
// pinned contract and the offset and size of each of its fields, plus the
// constants that size the pinned maps. MC_LAYOUT_VERSION is bumped by hand;
// a change that keeps every size (two fields swapped, a pad turned into a
// field) would leave it alone and a new daemon would misread the old pins.
// attach_all writes it to mc_meta.abi_fingerprint, check_layout_version
// refuses a pin root whose non-zero fingerprint differs (0: a daemon older
// than the fingerprint). Add a field here when you add one to a struct.
struct AbiField {
  uint32_t offset;
  uint32_t size;
};

// FNV-1a over the four bytes of V, least significant first (host-independent).
constexpr uint32_t abi_mix(uint32_t h, uint32_t v) {
  for (int i = 0; i < 4; ++i) {
    h ^= (v >> (8 * i)) & 0xffu;
    h *= 16777619u;
  }
  return h;
}

// One struct: its size, its field count, then each field's offset and size.
constexpr uint32_t abi_struct(uint32_t h, uint32_t size, std::initializer_list<AbiField> fields) {
  h = abi_mix(h, size);
  h = abi_mix(h, static_cast<uint32_t>(fields.size()));
  for (const AbiField& f : fields) h = abi_mix(abi_mix(h, f.offset), f.size);
  return h;
}

inline constexpr uint32_t kAbiSeed = 2166136261u;  // FNV offset basis

}  // namespace meshcut

#define MC_ABI_F(T, f) \
  ::meshcut::AbiField { static_cast<uint32_t>(offsetof(T, f)), static_cast<uint32_t>(sizeof(T::f)) }
#define MC_ABI_STRUCT(h, T, ...) ::meshcut::abi_struct((h), static_cast<uint32_t>(sizeof(T)), {__VA_ARGS__})

namespace meshcut {

constexpr uint32_t abi_fingerprint_of_contract() {
  uint32_t h = kAbiSeed;
  h = MC_ABI_STRUCT(h, mc_sock_key, MC_ABI_F(mc_sock_key, scope), MC_ABI_F(mc_sock_key, init_ip),
                    MC_ABI_F(mc_sock_key, isn_init), MC_ABI_F(mc_sock_key, isn_resp), MC_ABI_F(mc_sock_key, pad16),
                    MC_ABI_F(mc_sock_key, side), MC_ABI_F(mc_sock_key, pad));
  h = MC_ABI_STRUCT(
      h, mc_sock_state, MC_ABI_F(mc_sock_state, peer), MC_ABI_F(mc_sock_state, decision), MC_ABI_F(mc_sock_state, kind),
      MC_ABI_F(mc_sock_state, side), MC_ABI_F(mc_sock_state, pod_flags), MC_ABI_F(mc_sock_state, pad),
      MC_ABI_F(mc_sock_state, netns_cookie), MC_ABI_F(mc_sock_state, local_ip), MC_ABI_F(mc_sock_state, remote_ip),
      MC_ABI_F(mc_sock_state, local_port), MC_ABI_F(mc_sock_state, remote_port), MC_ABI_F(mc_sock_state, pad2),
      MC_ABI_F(mc_sock_state, bytes_redirected), MC_ABI_F(mc_sock_state, bytes_passed));
  h = MC_ABI_STRUCT(h, mc_pod, MC_ABI_F(mc_pod, ip4), MC_ABI_F(mc_pod, flags), MC_ABI_F(mc_pod, host_ifindex),
                    MC_ABI_F(mc_pod, pod_mac), MC_ABI_F(mc_pod, host_mac));
  h = MC_ABI_STRUCT(h, mc_cni_key, MC_ABI_F(mc_cni_key, container_id), MC_ABI_F(mc_cni_key, ifname));
  h = MC_ABI_STRUCT(h, mc_cni_pod, MC_ABI_F(mc_cni_pod, netns_cookie), MC_ABI_F(mc_cni_pod, added_ns),
                    MC_ABI_F(mc_cni_pod, pod), MC_ABI_F(mc_cni_pod, cni_flags), MC_ABI_F(mc_cni_pod, host_ifname),
                    MC_ABI_F(mc_cni_pod, pod_namespace), MC_ABI_F(mc_cni_pod, pod_name), MC_ABI_F(mc_cni_pod, pod_uid),
                    MC_ABI_F(mc_cni_pod, netns_path), MC_ABI_F(mc_cni_pod, caller_class));
  h = MC_ABI_STRUCT(h, mc_config, MC_ABI_F(mc_config, enabled), MC_ABI_F(mc_config, flags),
                    MC_ABI_F(mc_config, pod_cidr), MC_ABI_F(mc_config, pod_cidr_mask),
                    MC_ABI_F(mc_config, overlay_ifindex), MC_ABI_F(mc_config, pad));
  h = MC_ABI_STRUCT(h, mc_flow_key, MC_ABI_F(mc_flow_key, ip_lo), MC_ABI_F(mc_flow_key, ip_hi),
                    MC_ABI_F(mc_flow_key, port_lo), MC_ABI_F(mc_flow_key, port_hi));
  h = MC_ABI_STRUCT(h, mc_flow, MC_ABI_F(mc_flow, last_ns), MC_ABI_F(mc_flow, flags), MC_ABI_F(mc_flow, pad));
  h = MC_ABI_STRUCT(h, mc_flow_owner_key, MC_ABI_F(mc_flow_owner_key, ip), MC_ABI_F(mc_flow_owner_key, port),
                    MC_ABI_F(mc_flow_owner_key, pad));
  h = MC_ABI_STRUCT(h, mc_meta, MC_ABI_F(mc_meta, magic), MC_ABI_F(mc_meta, layout_version),
                    MC_ABI_F(mc_meta, features), MC_ABI_F(mc_meta, daemon_pid), MC_ABI_F(mc_meta, started_ns),
                    MC_ABI_F(mc_meta, max_sockets), MC_ABI_F(mc_meta, abi_fingerprint));
  h = MC_ABI_STRUCT(h, mc_obj_addr, MC_ABI_F(mc_obj_addr, ip), MC_ABI_F(mc_obj_addr, port), MC_ABI_F(mc_obj_addr, pad));
  h = MC_ABI_STRUCT(h, mc_obj_vip, MC_ABI_F(mc_obj_vip, svc), MC_ABI_F(mc_obj_vip, pad));
  h = MC_ABI_STRUCT(h, mc_obj_ep, MC_ABI_F(mc_obj_ep, svc), MC_ABI_F(mc_obj_ep, backend));
  h = MC_ABI_STRUCT(h, mc_obj_pod, MC_ABI_F(mc_obj_pod, cls), MC_ABI_F(mc_obj_pod, flags));
  h = MC_ABI_STRUCT(h, mc_obj_ctl, MC_ABI_F(mc_obj_ctl, word), MC_ABI_F(mc_obj_ctl, pad));
  h = MC_ABI_STRUCT(h, mc_obj_action, MC_ABI_F(mc_obj_action, generation), MC_ABI_F(mc_obj_action, expires_ns),
                    MC_ABI_F(mc_obj_action, flags), MC_ABI_F(mc_obj_action, n_backends), MC_ABI_F(mc_obj_action, be),
                    MC_ABI_F(mc_obj_action, be_index), MC_ABI_F(mc_obj_action, cum),
                    MC_ABI_F(mc_obj_action, rate_milli), MC_ABI_F(mc_obj_action, burst));
  h = MC_ABI_STRUCT(h, mc_obj_bucket, MC_ABI_F(mc_obj_bucket, lock), MC_ABI_F(mc_obj_bucket, pad),
                    MC_ABI_F(mc_obj_bucket, tokens_nano), MC_ABI_F(mc_obj_bucket, last_ns),
                    MC_ABI_F(mc_obj_bucket, generation));
  h = MC_ABI_STRUCT(
      h, mc_obj_stat, MC_ABI_F(mc_obj_stat, offered), MC_ABI_F(mc_obj_stat, admitted), MC_ABI_F(mc_obj_stat, blocked),
      MC_ABI_F(mc_obj_stat, conns), MC_ABI_F(mc_obj_stat, requests), MC_ABI_F(mc_obj_stat, completed),
      MC_ABI_F(mc_obj_stat, unanswered), MC_ABI_F(mc_obj_stat, req_sum_ns), MC_ABI_F(mc_obj_stat, conn_sum_ns),
      MC_ABI_F(mc_obj_stat, conn_done), MC_ABI_F(mc_obj_stat, req_hist), MC_ABI_F(mc_obj_stat, conn_hist));
  h = MC_ABI_STRUCT(h, mc_obj_sock, MC_ABI_F(mc_obj_sock, row), MC_ABI_F(mc_obj_sock, row2),
                    MC_ABI_F(mc_obj_sock, role), MC_ABI_F(mc_obj_sock, state), MC_ABI_F(mc_obj_sock, connect_ns),
                    MC_ABI_F(mc_obj_sock, req_ns), MC_ABI_F(mc_obj_sock, flags), MC_ABI_F(mc_obj_sock, pad));
  // The named sizes of the pinned maps (and of the arrays in the records).
  // mc_sockhash/mc_conns take --max-sockets at load; libbpf's own reuse check
  // compares max_entries of every map as well.
  for (uint32_t v :
       {uint32_t{MC_C_MAX}, uint32_t{MC_MAX_PODS}, uint32_t{MC_POD_MAX_IPS}, uint32_t{MC_S__N}, uint32_t{MC_CNI_ID_LEN},
        uint32_t{MC_CNI_IFNAME_LEN}, uint32_t{MC_MAX_PAIR_KINDS}, uint32_t{MC_MAX_FLOWS}, uint32_t{MC_OBJ_MAX_SERVICES},
        uint32_t{MC_OBJ_MAX_BACKENDS}, uint32_t{MC_OBJ_MAX_CLASSES}, uint32_t{MC_OBJ_MAX_VIPS},
        uint32_t{MC_OBJ_MAX_EPS}, uint32_t{MC_OBJ_MAX_REQ}, uint32_t{MC_OBJ_HIST_BUCKETS}, uint32_t{MC_OC_MAX}})
    h = abi_mix(h, v);
  return h ? h : 1u;  // 0 means "no fingerprint" in mc_meta
}

inline constexpr uint32_t kAbiFingerprint = abi_fingerprint_of_contract();
static_assert(kAbiFingerprint != 0);

// Names of enum mc_counter, in order; exported as-is in status --json.
inline constexpr std::array<std::string_view, MC_C__N> kCounterNames = {
    "sock_added_active",    "sock_added_passive",   "sock_not_enrolled",   "sock_skip_remote",  "sock_skip_family",
    "sock_skip_early_data", "sock_skip_disabled",   "sock_add_failed",     "sock_no_storage",   "msg_redirect_intra",
    "bytes_redirect_intra", "msg_redirect_node",    "bytes_redirect_node", "msg_pass_no_peer",  "bytes_pass_no_peer",
    "msg_pass_sticky",      "bytes_pass_sticky",    "msg_pass_peer_gone",  "msg_pass_disabled", "msg_no_state",
    "pairs_redirected",     "sock_rto_failed",      "tc_redirect_overlay", "tc_redirect_neigh", "tc_redirect_peer",
    "tc_redirect_local",    "tc_pass_not_ip",       "tc_pass_fragment",    "tc_pass_not_tcp",   "tc_pass_not_pod",
    "tc_pass_no_pod",       "tc_pass_unknown_flow", "tc_pass_fib",         "tc_pass_disabled",  "tc_flow_rst",
    "tc_pass_handshake",    "tc_ct_ended",          "tc_ct_absent",
};
static_assert(kCounterNames.size() == MC_C__N);
static_assert(MC_C__N <= MC_C_MAX);

}  // namespace meshcut
