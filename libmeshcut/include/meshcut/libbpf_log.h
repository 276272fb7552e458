// SPDX-License-Identifier: Apache-2.0
// libbpf's own messages: quiet by default (debug-level JSON log lines), the
// last warning kept so that an error can quote it.
#pragma once

#include <string>

namespace meshcut {

void install_libbpf_logger(bool verbose);
std::string last_libbpf_message();

}  // namespace meshcut
