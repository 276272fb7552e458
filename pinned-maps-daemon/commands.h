// SPDX-License-Identifier: Apache-2.0
// meshcutd's subcommands, one file each (cmd_*.cpp, status.cpp, conns.cpp;
// trace in trace.h). Each takes what main.cpp parsed, does the work and
// returns the exit code; errors are reported through fail() (cli.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "install_cni.h"
#include "meshcut/config.h"

namespace meshcut::daemon {

// `run`: checks CFG (and CNI_ENTRY, the conflist entry as JSON, "" for the
// default) before any pin or attachment exists, attaches, then stays resident.
// CNI: install the plugin and keep it chained (nullptr: don't).
int cmd_run(DaemonConfig cfg, const std::string& cni_entry, const install::InstallOptions* cni,
            const std::string& cni_cache_dir);

// `detach`: every attachment and pin goes; connections fall back.
int cmd_detach(const std::string& pin_root);

// `enroll` / `unenroll` (cmd_enroll.cpp). IPS: the pod's IPv4 addresses, empty
// for those configured in NETNS.
// EnrollObj: the pod's objectives record (mc_obj_pod) as enroll writes it.
struct EnrollObj {
  uint32_t class_id = 0;
  std::optional<bool> sidecar;  // unset: the pod has one if it takes the app<->sidecar shortcut
};
int cmd_enroll(const std::string& pin_root, const std::string& netns, const std::vector<std::string>& ips, bool intra,
               bool node, const EnrollObj& obj = {});
// By NETNS path or, when the netns is gone, by COOKIE; one of them is needed.
int cmd_unenroll(const std::string& pin_root, const std::optional<std::string>& netns, std::optional<uint64_t> cookie);

// `set`: "on", "off" or "" (unchanged) for each switch; with NETNS, that pod's.
struct SetArgs {
  std::string netns;
  std::string cross_node, intra_pod, same_node;
};
int cmd_set(const std::string& pin_root, const SetArgs& a);

// `install-cni` (UNINSTALL false) / `uninstall-cni`. ENTRY_JSON: the conflist
// entry, "" for the default.
int cmd_install_cni(install::InstallOptions o, const std::string& entry_json, bool uninstall);

// `status` and `pods` (status.cpp).
int cmd_status(const std::string& pin_root, bool json, bool require_running = false);
int cmd_pods(const std::string& pin_root, bool json);

// `conns` (conns.cpp): lists the sockhash grouped into pairs; with SRC/DST
// ("ip:port", SRC the initiator), explains whether that connection is
// accelerated and why not.
int cmd_conns(const std::string& pin_root, bool json, const std::string& src, const std::string& dst);

// `objectives status|apply FILE|clear` (cmd_objectives.cpp): through the
// running daemon's objectives API.
struct ObjectivesArgs {
  std::string verb;  // status, apply, clear
  std::string file;  // apply
  std::string api_addr = "127.0.0.1:9465";
  std::string token_file;
  bool json = false;
};
int cmd_objectives(const ObjectivesArgs& a);

}  // namespace meshcut::daemon
