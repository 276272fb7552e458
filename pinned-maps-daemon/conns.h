// SPDX-License-Identifier: Apache-2.0
// The live sockets, for `conns` and `pods` (conns.cpp).
#pragma once
#include <string>
#include <vector>

#include "meshcut/abi.h"
#include "meshcut/error.h"
#include "meshcut/maps.h"
#include "meshcut/pins.h"

namespace meshcut::daemon {

// Where the live sockets were read from. Both give every field of
// mc_sock_state; the table lists only sockets established while it was kept.
inline constexpr const char* kSourceIterator = "bpf_iter";
inline constexpr const char* kSourceTable = "conns_table";

struct LiveSockets {
  std::vector<mc_sock_state> sockets;
  std::string source;  // kSourceIterator or kSourceTable
};

// Every live socket's state (tuple, netns, peer key, decision, bytes): from
// the conns table when meshcutd keeps it (the kernel refused the iterator, or
// --no-tracing), else through a BPF iterator over mc_sk_state.
Result<LiveSockets> live_sockets(const PinLayout& layout, const PinnedMaps& maps);

}  // namespace meshcut::daemon
