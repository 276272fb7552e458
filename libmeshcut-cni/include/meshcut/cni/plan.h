// SPDX-License-Identifier: Apache-2.0
// Decide, then apply: an ADD is first turned into a plain Plan from the
// config, prevResult and CNI_ARGS alone (no root, no kernel), which the unit
// tests compare with golden files; backend.cpp applies it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <meshcut/cni/cni.h>

namespace meshcut::cni {

// The pod annotation that names its objectives caller class, and how much of
// it the pod record keeps (mc_cni_pod.caller_class, MC_CNI_CLASS_LEN - 1).
inline constexpr const char* kCallerClassAnnotation = "meshcut.io/class";
inline constexpr size_t kCallerClassMax = 31;

struct Plan {
  bool enroll = false;
  std::string skip_reason;  // why not, when !enroll
  std::string pod_namespace, pod_name, pod_uid, container_id, ifname, netns;
  std::vector<std::string> ipv4;             // pod addresses, no prefix length
  std::vector<std::string> ipv6;             // recorded, not shortcut yet
  std::string pod_mac;                       // the container interface's MAC
  std::vector<std::string> host_candidates;  // prevResult interfaces outside the sandbox
  bool intra_pod = false, same_node = false, cross_node = false;
  bool attach_tc = false;
  // The objectives' caller class the pod asked for (annotation meshcut.io/class),
  // matched by CallerClasses rules with that annotation key; "" if none.
  std::string caller_class;
  nlohmann::json result;  // prevResult, converted to the request's cniVersion

  nlohmann::json to_json() const;
};

// ADD and CHECK: throws CniError(kInvalidConfig) without prevResult (meshcut
// only runs chained) or when prevResult has no interface for CNI_IFNAME.
Plan make_plan(const NetConf& conf, const Env& env);

}  // namespace meshcut::cni
