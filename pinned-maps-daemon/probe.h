// SPDX-License-Identifier: Apache-2.0
// Kernel features meshcutd needs or works around, probed at start.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

struct mc_latency;

namespace meshcut::daemon {

enum class Tri { no, yes, unknown };

struct Features {
  bool kernel_ok = false;  // >= 5.15
  bool sockhash = false;
  bool sk_storage = false;
  bool netns_cookie = false;        // bpf_get_netns_cookie in sockops and sk_msg
  Tri fionread_bug = Tri::unknown;  // commit 929e30f93125 regression
  Tri verdict_fixes_it = Tri::unknown;
  // Tracing program types (refused outright by some builds: lockdown,
  // hardened or distribution configs). Each error is the loader's errno text.
  Tri bpf_iter = Tri::unknown;  // conns/pods read mc_sk_state through it
  Tri tp_btf = Tri::unknown;    // trace: typed tracepoints
  Tri raw_tp = Tri::unknown;    // trace: untyped tracepoints
  std::string bpf_iter_error, tp_btf_error, raw_tp_error;
  bool no_tracing = false;         // forced off (--no-tracing / MESHCUT_NO_TRACING=1)
  std::vector<std::string> notes;  // what is off, and why

  bool usable() const { return kernel_ok && sockhash && sk_storage && netns_cookie; }
  // sockops/sk_msg keep the conns table where the iterator cannot list sockets.
  bool conns_table() const { return no_tracing || bpf_iter != Tri::yes; }
  uint32_t bits() const;  // MC_FEAT_* (without MC_FEAT_SKB_VERDICT)
  nlohmann::json to_json() const;
};

// Loads throw-away programs and, on loopback, checks FIONREAD on a sockhash
// socket; needs CAP_BPF/CAP_NET_ADMIN. Never touches the pinned state.
// NO_TRACING: load no tracing program (the fallback paths, as on a kernel
// that refuses them all).
Features probe_features(bool no_tracing);
nlohmann::json features_json(uint32_t bits);

// Probes only the tracing program types (bpf_iter, tp_btf, raw_tp) into F,
// honouring F.no_tracing, and adds the notes of what that turns off.
void probe_tracing(Features& f);

// What a daemon's MC_FEAT_* bits say is refused, with the kernel's errno text
// now and what it turns off (for `status`).
nlohmann::json degraded_json(uint32_t bits);

// True when MESHCUT_NO_TRACING is set to 1/true/yes: every command takes the
// path without tracing programs, as --no-tracing does for `run`.
bool no_tracing_env();

// Why a tracing program failed to load with ERR, for an error's hint.
std::string tracing_refused_hint(int err);

// The latency object has both variants of each hook: TYPED loads the tp_btf
// pair, else the raw_tp pair (set before load; the probe and trace share it).
void latency_select(mc_latency* s, bool typed);

}  // namespace meshcut::daemon
