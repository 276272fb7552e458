// SPDX-License-Identifier: Apache-2.0
// Loads the socket-shortcut programs, creates or reuses the pinned maps, pins
// programs and the cgroup link, attaches sk_msg/sk_skb to the sockhash; and the
// reverse (detach). Only meshcutd loads BPF; the CNI plugin opens the pins.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "meshcut/config.h"
#include "meshcut/error.h"
#include "meshcut/pins.h"
#include "probe.h"

namespace meshcut::daemon {

struct AttachResult {
  bool reused_maps = false;     // pinned maps were already there (restart/upgrade)
  bool link_updated = false;    // an existing cgroup link got the new program
  bool skb_verdict = false;     // the no-op SK_SKB verdict is attached
  uint32_t max_sockets = 0;
  bool overlay_attached = false;  // tc_overlay on the overlay device
  bool cross_node = false;        // the tc shortcut is on (pod CIDR known, switch on)
  bool ct_kfuncs = false;         // the tc programs end conntrack entries of shortcut flows
  bool conns_table = false;       // sockops/sk_msg keep mc_conns (no BPF iterator)
};

// Puts our tc filter back on the overlay device if another agent removed it.
// Returns true if it had to.
bool reattach_overlay(const PinLayout& layout);

// Brings the pin root to the attached state for CFG. Idempotent: a second run
// (daemon restart) reuses the maps and swaps programs in place, with no gap.
Result<AttachResult> attach_all(const DaemonConfig& cfg, const std::string& cgroup,
                                const Features& feat);

// Disables the shortcut, detaches everything meshcutd attached, removes every
// pin and the pin root. Sockets already redirected keep their data and fall
// back to the normal path for what they send next.
Status detach_all(const PinLayout& layout);

// Attachment facts for `status`.
nlohmann::json attachments_json(const PinLayout& layout);

}  // namespace meshcut::daemon
