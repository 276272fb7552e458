// SPDX-License-Identifier: Apache-2.0
// Re-scan: enroll pods that started while meshcutd was down (their ADD failed
// open), from the runtime's CNI result cache (libcni: <dir>/results/*), which
// holds each attachment's network config, CNI_ARGS, capability args and result.
#pragma once

#include <string>

namespace meshcut::cni {

// Enrolls every cached attachment whose conflist chains meshcut with this
// PIN_ROOT and that has no record yet. Returns how many were enrolled.
int rescan_cache(const std::string& cni_cache_dir, const std::string& pin_root);

// Standard base64 (libcni stores the config bytes that way). Empty on error.
std::string base64_decode(const std::string& in);

}  // namespace meshcut::cni
