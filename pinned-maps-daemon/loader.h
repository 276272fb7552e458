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
  bool reused_maps = false;   // pinned maps were already there (restart/upgrade)
  bool link_updated = false;  // an existing cgroup link got the new program
  bool skb_verdict = false;   // the no-op SK_SKB verdict is attached
  uint32_t max_sockets = 0;
  bool overlay_attached = false;  // tc_overlay on the overlay device
  bool cross_node = false;        // the tc shortcut is on (pod CIDR known, switch on)
  bool ct_kfuncs = false;         // the tc programs end conntrack entries of shortcut flows
  bool conns_table = false;       // sockops/sk_msg keep mc_conns (no BPF iterator)
};

// The recheck loop's repairs; the caller holds the pin lock.
struct OverlayRecheck {
  bool attached = false;                      // our filter had to be put on (again)
  bool missing = false;                       // no device of that name right now (being recreated?)
  uint32_t old_ifindex = 0, new_ifindex = 0;  // differ: the device was recreated
};
// Puts our tc filter back on the overlay device if another agent removed it.
// The device is looked up by DEV, its configured name, each time: recreated
// (flannel restarts) it has a new ifindex, which gets the filter and goes
// into mc_config.overlay_ifindex (the other config fields are kept). An empty
// DEV uses the ifindex in mc_config.
OverlayRecheck reattach_overlay(const PinLayout& layout, const std::string& dev);

struct SockopsRecheck {
  bool attached = false;  // the pinned link was detached or gone: a new one is pinned
  uint32_t link_id = 0;   // the new link
  std::string error;      // couldn't (logged by the caller)
};
// Attaches sockops to CGROUP again through a new pinned link if the pinned
// one was detached (`bpftool link detach`, cgroup removed) or its pin is gone.
SockopsRecheck reattach_sockops(const PinLayout& layout, const std::string& cgroup);

// Brings the pin root to the attached state for CFG. Idempotent: a second run
// (daemon restart) reuses the maps and swaps programs in place, with no gap.
Result<AttachResult> attach_all(const DaemonConfig& cfg, const std::string& cgroup, const Features& feat);

// Disables the shortcut, detaches everything meshcutd attached, removes every
// pin and the pin root. Sockets already redirected keep their data and fall
// back to the normal path for what they send next.
Status detach_all(const PinLayout& layout);

// Attachment facts for `status`.
nlohmann::json attachments_json(const PinLayout& layout);

// The objectives' programs on CGROUP (ON) or off: connect4 runs for every
// connect and obj_ingress for every arriving packet, so they are attached only
// while there are managed services.
Status set_obj_progs(const PinLayout& layout, const std::string& cgroup, bool on);

}  // namespace meshcut::daemon
