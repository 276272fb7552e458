// SPDX-License-Identifier: Apache-2.0
// Kernel features meshcutd needs or works around, probed at start.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace meshcut::daemon {

enum class Tri { no, yes, unknown };

struct Features {
  bool kernel_ok = false;      // >= 5.15
  bool sockhash = false;
  bool sk_storage = false;
  bool netns_cookie = false;   // bpf_get_netns_cookie in sockops and sk_msg
  Tri fionread_bug = Tri::unknown;    // commit 929e30f93125 regression
  Tri verdict_fixes_it = Tri::unknown;
  std::vector<std::string> notes;     // what is off, and why

  bool usable() const { return kernel_ok && sockhash && sk_storage && netns_cookie; }
  uint32_t bits() const;  // MC_FEAT_* (without MC_FEAT_SKB_VERDICT)
  nlohmann::json to_json() const;
};

// Loads throw-away programs and, on loopback, checks FIONREAD on a sockhash
// socket; needs CAP_BPF/CAP_NET_ADMIN. Never touches the pinned state.
Features probe_features();
nlohmann::json features_json(uint32_t bits);

}  // namespace meshcut::daemon
