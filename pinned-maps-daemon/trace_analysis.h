// SPDX-License-Identifier: Apache-2.0
// `meshcutd trace`, the analysis: recorded events in, correlated requests out.
// Pure: no BPF, no I/O (trace.cpp is the kernel side: load, run, print), so it
// is tested on recorded events (test/fixtures/trace/, test/unit/trace_analysis_test.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <linux/types.h>

#include "meshcut_trace.h"

namespace meshcut::daemon {

// Follows requests along the Table 2 sockets (trace.h) and splits each one's
// latency into proxy / kernel (network) / application. LABELS: netns cookie ->
// a name for the output. POD_FILTER: if non-zero, only requests with an end in
// that netns. Returns requests, incomplete_requests, incomplete_chains,
// sockets, parts, hops, chains and request_list (times in ms, rounded to µs).
nlohmann::json analyze_trace(const std::vector<mc_trace_event>& events, uint32_t proxy_uid,
                             const std::map<uint64_t, std::string>& labels, uint64_t pod_filter);

// One event as `meshcutd trace --dump-events` writes it (a JSON line), and
// back. sock_id is not written: a read event has sock_id 0.
nlohmann::json trace_event_json(const mc_trace_event& e);
std::optional<mc_trace_event> trace_event_from_json(const nlohmann::json& j);

// V rounded to 3 decimals (the report's ms to the µs).
double round3(double v);

}  // namespace meshcut::daemon
