// SPDX-License-Identifier: Apache-2.0
// `meshcutd trace`: the latency monitor (the paper's section 3.3, Table 1).
//
// Attaches bpf/latency.bpf.c to sock:sock_send_length / sock:sock_recv_length
// for --duration only (nothing stays attached afterwards), records every
// send/recv that moved bytes on an IPv4 TCP socket of a traced netns, then
// follows requests along the Table 2 sockets
//   app (1) -> (2) sidecar (3) -> (4) sidecar (5) -> (6) app
// and splits each request's latency into proxy / kernel (network) / application.
// This is the kernel side (trace.cpp); the correlation is trace_analysis.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace meshcut::daemon {

struct TraceOptions {
  std::string pin_root;
  std::string duration = "10s";    // "10s", "500ms", "2m", or seconds
  std::string pod;                 // NS/NAME: report only requests touching this pod
  std::vector<std::string> netns;  // netns paths to trace instead of the enrolled pods
  bool json = false;
  uint32_t proxy_uid = 1337;  // Istio's sidecar uid: whose sockets are "proxy"
  std::string dump_events;    // write the raw events here (JSON lines)
};

// Adds the `trace` subcommand and its options (bound to O) to APP.
CLI::App* add_trace_subcommand(CLI::App& app, TraceOptions& o);
int cmd_trace(const TraceOptions& o);

}  // namespace meshcut::daemon
