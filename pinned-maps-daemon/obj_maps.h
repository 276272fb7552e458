// SPDX-License-Identifier: Apache-2.0
// The objectives maps (bpf/include/meshcut_obj.h) as meshcutd writes and reads
// them: the address tables, the caller pods' classes, the double-buffered
// action, the stats rows and the counters. Opens pins; loads nothing.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "meshcut/abi.h"
#include "meshcut/error.h"
#include "meshcut/maps.h"

namespace meshcut::obj {

// Names of enum mc_obj_counter, in order (status --json, metrics).
inline constexpr std::array<std::string_view, MC_OC__N> kObjCounterNames = {
    "connect_seen", "routed", "route_same", "admitted",          "blocked",    "no_action", "ttl_expired",
    "slot_empty",   "torn",   "no_bucket",  "app_in_meshed_pod", "tag_failed", "req_full",
};
static_assert(kObjCounterNames.size() == MC_OC__N && MC_OC__N <= MC_OC_MAX);

struct ActionSlot {
  uint32_t svc = 0;
  uint32_t cls = 0;
  mc_obj_action action{};  // generation and expires_ns are set by apply()
};

struct CtlState {
  uint64_t generation = 0;  // 0: no action in force
  uint32_t half = 0;
  uint64_t expires_ns = 0;  // CLOCK_MONOTONIC (bpf_ktime_get_ns) of the action's end; 0 if none
};

class ObjMaps {
 public:
  explicit ObjMaps(const PinnedMaps& maps) : m_(maps) {}

  // Makes mc_obj_vips / mc_obj_eps hold exactly these entries (others deleted).
  Status sync_addresses(const std::vector<std::pair<mc_obj_addr, mc_obj_vip>>& vips,
                        const std::vector<std::pair<mc_obj_addr, mc_obj_ep>>& eps) const;
  Status put_pod(uint64_t netns_cookie, const mc_obj_pod& p) const;
  Status del_pod(uint64_t netns_cookie) const;
  Result<std::vector<std::pair<uint64_t, mc_obj_pod>>> pods() const;
  // MC_CFG_F_OBJECTIVES in mc_config: connect4, sockops and sk_msg act on managed services.
  Status set_enabled(bool on) const;
  Result<bool> enabled() const;

  // Writes every slot of the half not in force (a slot not in SLOTS: this
  // generation, no flags), then flips the control word with one atomic store.
  // GENERATION must be newer than the one in force.
  Status apply(uint64_t generation, uint64_t ttl_ns, const std::vector<ActionSlot>& slots) const;
  // No action: every connect proceeds unchanged.
  Status clear() const;
  Result<CtlState> ctl() const;
  // The (service, class) slot of the action in force.
  Result<mc_obj_action> slot(uint32_t svc, uint32_t cls) const;

  // Rows of the services in SVCS (every backend and the ALL row, every class),
  // in mc_obj_stat_index order per service; the others stay zero.
  Result<std::vector<mc_obj_stat>> stats(const std::vector<uint32_t>& svcs) const;
  Result<std::array<uint64_t, MC_OC__N>> counters() const;

 private:
  Result<uint64_t> read_word() const;
  Status write_word(uint64_t w) const;
  const PinnedMaps& m_;
};

}  // namespace meshcut::obj
