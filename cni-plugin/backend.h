// SPDX-License-Identifier: Apache-2.0
// Applies a Plan to the node: the pinned maps meshcutd made and the pod's
// host veth. Loads no BPF program and starts no process.
#pragma once

#include <nlohmann/json.hpp>

#include "cni.h"
#include "plan.h"

namespace meshcut::cni {

// Returns the result to print (prevResult in the request's version). Fail-open
// unless failPolicy is closed (then throws CniError).
nlohmann::json cmd_add(const NetConf& conf, const Env& env);
// Never throws: DEL succeeds with or without netns, prevResult, pins or daemon.
void cmd_del(const NetConf& conf, const Env& env);
// Throws CniError naming what is missing; enrolls a pod that started while
// meshcutd was down.
void cmd_check(const NetConf& conf, const Env& env);
void cmd_status(const NetConf& conf);
// Removes records of attachments not in "cni.dev/valid-attachments".
void cmd_gc(const NetConf& conf);

}  // namespace meshcut::cni
