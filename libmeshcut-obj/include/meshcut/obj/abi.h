// SPDX-License-Identifier: Apache-2.0
// The objectives contract (bpf/include/meshcut_obj.h) as C++ sees it. The size
// checks and the ABI fingerprint live with the rest of the contract in
// meshcut/abi.h; this adds what the objectives library itself relies on.
#pragma once

#include <type_traits>

#include "meshcut/abi.h"

namespace meshcut::obj {

static_assert(std::has_unique_object_representations_v<mc_obj_vip> &&
              std::has_unique_object_representations_v<mc_obj_ep> &&
              std::has_unique_object_representations_v<mc_obj_pod> &&
              std::has_unique_object_representations_v<mc_obj_action>);
static_assert(MC_OBJ_HIST_BUCKETS == 337);
static_assert(MC_OBJ_STAT_ROWS == 2304 && MC_OBJ_ACTION_SLOTS == 512);
static_assert(MC_OBJ_MAX_BACKENDS <= 255 && MC_OBJ_MAX_CLASSES == 4);

}  // namespace meshcut::obj
