// SPDX-License-Identifier: Apache-2.0
#pragma once
#include <string>

// Lists the sockhash grouped into pairs; with SRC/DST ("ip:port", SRC the
// initiator), explains whether that connection is accelerated and why not.
int cmd_conns(const std::string& pin_root, bool json, const std::string& src, const std::string& dst);
