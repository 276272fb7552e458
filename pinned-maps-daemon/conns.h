// SPDX-License-Identifier: Apache-2.0
#pragma once
#include <string>
#include <vector>

#include "meshcut/abi.h"
#include "meshcut/error.h"
#include "meshcut/pins.h"

// Lists the sockhash grouped into pairs; with SRC/DST ("ip:port", SRC the
// initiator), explains whether that connection is accelerated and why not.
int cmd_conns(const std::string& pin_root, bool json, const std::string& src, const std::string& dst);

// Every live socket's state (tuple, netns, peer key, decision, bytes), read
// through a BPF iterator over mc_sk_state.
meshcut::Result<std::vector<mc_sock_state>> live_sockets(const meshcut::PinLayout& layout);
