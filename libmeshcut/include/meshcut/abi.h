// SPDX-License-Identifier: Apache-2.0
// The kernel/user contract as C++ sees it: the shared header plus the checks
// that keep a key's bytes meaningful (no hidden padding: g++ rejects a key whose
// object representation is not unique) and the counter names.
#pragma once

#include <linux/types.h>

#include <array>
#include <cstddef>
#include <string_view>
#include <type_traits>

extern "C" {
#include "meshcut_kern_user.h"
}

namespace meshcut {

static_assert(sizeof(mc_sock_key) == 24 && std::has_unique_object_representations_v<mc_sock_key>);
static_assert(sizeof(mc_sock_state) == 72);
static_assert(sizeof(mc_pod) == 36);
static_assert(sizeof(mc_config) == 24);
static_assert(sizeof(mc_flow_owner_key) == 8 && std::has_unique_object_representations_v<mc_flow_owner_key>);
static_assert(sizeof(mc_flow) == 16);
static_assert(sizeof(mc_flow_key) == 12 && std::has_unique_object_representations_v<mc_flow_key>);
static_assert(sizeof(mc_meta) == 32);
static_assert(sizeof(mc_cni_key) == 88 && std::has_unique_object_representations_v<mc_cni_key>);
static_assert(sizeof(mc_cni_pod) == 432);
// Keys of the plain maps.
static_assert(std::has_unique_object_representations_v<__u64> &&
              std::has_unique_object_representations_v<__u32>);

// Names of enum mc_counter, in order; exported as-is in status --json.
inline constexpr std::array<std::string_view, MC_C__N> kCounterNames = {
    "sock_added_active",   "sock_added_passive",   "sock_not_enrolled",
    "sock_skip_remote",    "sock_skip_family",     "sock_skip_early_data",
    "sock_skip_disabled",  "sock_add_failed",      "sock_no_storage",
    "msg_redirect_intra",  "bytes_redirect_intra", "msg_redirect_node",
    "bytes_redirect_node", "msg_pass_no_peer",     "bytes_pass_no_peer",
    "msg_pass_sticky",     "bytes_pass_sticky",    "msg_pass_peer_gone",
    "msg_pass_disabled",   "msg_no_state",         "pairs_redirected",
    "sock_rto_failed",     "tc_redirect_overlay",  "tc_redirect_neigh",
    "tc_redirect_peer",    "tc_redirect_local",    "tc_pass_not_ip",
    "tc_pass_fragment",    "tc_pass_not_tcp",      "tc_pass_not_pod",
    "tc_pass_no_pod",      "tc_pass_unknown_flow", "tc_pass_fib",
    "tc_pass_disabled",    "tc_flow_rst",          "tc_pass_handshake",
    "tc_ct_ended",         "tc_ct_absent",
};
static_assert(kCounterNames.size() == MC_C__N);
static_assert(MC_C__N <= MC_C_MAX);

}  // namespace meshcut
