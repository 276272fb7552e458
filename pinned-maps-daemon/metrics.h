// SPDX-License-Identifier: Apache-2.0
// meshcutd's HTTP endpoint: Prometheus text exposition at /metrics, /healthz
// (the process answers) and /readyz (programs attached, pins sane).
#pragma once

#include <functional>
#include <string>

#include "meshcut/error.h"
#include "meshcut/pins.h"

namespace meshcut::daemon {

// The exposition text for the pin root (every value read from the pinned maps,
// so counters survive daemon restarts and never go backwards).
std::string render_metrics(const PinLayout& layout);
// More exposition text appended to /metrics (the objectives' families); the
// function runs on the server's threads.
void set_extra_metrics(std::function<std::string()> fn);
// "" when ready, else why not.
std::string not_ready_reason(const PinLayout& layout);

// ADDR is "HOST:PORT" with a numeric IPv4 host or "[V6ADDR]:PORT"; "" or
// "off" is no endpoint. Checks the form only (nothing is bound).
Status check_http_addr(const std::string& addr);

// Serves ADDR ("127.0.0.1:9464", "[::1]:9464") on a background thread until
// the process exits, where it is stopped and joined. Errors (bad address, port
// in use) are returned at once. Idle or slow clients are cut off after a few
// seconds and a bounded pool serves the rest (limits in metrics.cpp).
Status start_http(const std::string& addr, const PinLayout& layout);

}  // namespace meshcut::daemon
