// SPDX-License-Identifier: Apache-2.0
// The objectives contract (bpf/include/meshcut_obj.h) as C++ sees it, with the
// sizes the BPF side was written against: a field added or reordered on one
// side only fails the build here instead of misreading the pinned maps.
#pragma once

#include <linux/types.h>

#include <cstdint>
#include <type_traits>

extern "C" {
#include <linux/types.h>
#include <linux/bpf.h>
#include "meshcut_obj.h"
}

namespace meshcut::obj {

// Keys and values written whole by user space: no implicit padding, so the
// bytes the kernel hashes or compares are exactly the fields.
static_assert(sizeof(mc_obj_addr) == 8 && std::has_unique_object_representations_v<mc_obj_addr>);
static_assert(sizeof(mc_obj_vip) == 8 && std::has_unique_object_representations_v<mc_obj_vip>);
static_assert(sizeof(mc_obj_ep) == 8 && std::has_unique_object_representations_v<mc_obj_ep>);
static_assert(sizeof(mc_obj_pod) == 8 && std::has_unique_object_representations_v<mc_obj_pod>);
static_assert(sizeof(mc_obj_ctl) == 24 && std::has_unique_object_representations_v<mc_obj_ctl>);
static_assert(sizeof(mc_obj_action) == 160 && std::has_unique_object_representations_v<mc_obj_action>);
static_assert(sizeof(mc_obj_bucket) == 32);
static_assert(sizeof(mc_obj_stat) == 10 * 8 + 2 * MC_OBJ_HIST_BUCKETS * 4);  // 2776
static_assert(sizeof(mc_obj_sock) == 40);
static_assert(MC_OBJ_HIST_BUCKETS == 337);
static_assert(MC_OBJ_STAT_ROWS == 2304 && MC_OBJ_ACTION_SLOTS == 512);
static_assert(MC_OBJ_MAX_BACKENDS <= 255 && MC_OBJ_MAX_CLASSES == 4);

}  // namespace meshcut::obj
