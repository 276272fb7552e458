// SPDX-License-Identifier: Apache-2.0
#pragma once
#include <string>

int cmd_status(const std::string& pin_root, bool json, bool require_running = false);
int cmd_pods(const std::string& pin_root, bool json);
