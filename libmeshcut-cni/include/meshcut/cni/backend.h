// SPDX-License-Identifier: Apache-2.0
// Applies a Plan to the node: the pinned maps meshcutd made and the pod's
// host veth. Loads no BPF program and starts no process.
#pragma once

#include <nlohmann/json.hpp>

#include <meshcut/cni/cni.h>
#include "meshcut/error.h"
#include "meshcut/fd.h"
#include <meshcut/cni/plan.h>

namespace meshcut::cni {

// The netconf's logFile, opened for appending as root: a symbolic link (at the
// last component), a FIFO, a device or a file with other hard links is refused.
Result<Fd> open_log_file(const std::string& path);

// Returns the result to print (prevResult in the request's version). Fail-open
// unless failPolicy is closed (then throws CniError).
nlohmann::json cmd_add(const NetConf& conf, const Env& env);
// Never throws: DEL succeeds with or without netns, prevResult, pins or daemon,
// and when the pin lock can't be had within lockTimeoutMs.
void cmd_del(const NetConf& conf, const Env& env);
// Throws CniError naming what is missing; enrolls a pod that started while
// meshcutd was down.
void cmd_check(const NetConf& conf, const Env& env);
void cmd_status(const NetConf& conf);
// Removes this network's records of attachments not in
// "cni.dev/valid-attachments"; other networks' records are kept.
void cmd_gc(const NetConf& conf);

}  // namespace meshcut::cni
