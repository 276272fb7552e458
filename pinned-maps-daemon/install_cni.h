// SPDX-License-Identifier: Apache-2.0
// `meshcutd install-cni` / `uninstall-cni`: put the meshcut binary into the CNI bin dir and chain
// a meshcut entry after the main CNI in the node's active config; undo exactly that. No CLI parsing
// and no global state here: meshcutd's subcommands and its conf-dir watcher call these.
//
// Which file is "active": the lexicographically first *.conf, *.conflist or *.json in the conf
// dir (libcni ConfFiles + sort, as containerd and CRI-O choose it); hidden files are skipped.
// Every write is temp file in the same dir + fsync + rename + fsync(dir); temp names are hidden and
// end in a random suffix, never in a config extension, so a runtime listing the dir mid-write
// never sees them. The conf dir is flock'ed for the whole operation (the daemon's re-install and an
// operator's uninstall may race).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "meshcut/error.h"

namespace meshcut::daemon::install {

inline constexpr const char* kPluginType = "meshcut";
// Key inside meshcut's own conflist entry recording how to undo the install (see install_cni.cpp).
inline constexpr const char* kMarkerKey = "meshcutInstall";

struct InstallOptions {
  std::string cni_bin_dir = "/opt/cni/bin";
  std::string cni_conf_dir = "/etc/cni/net.d";
  std::string plugin_src;       // the built meshcut binary; needed by install() only
  nlohmann::json plugin_entry;  // the entry to chain; null → default_plugin_entry()
};

struct InstallReport {
  std::string binary_path;      // <cni_bin_dir>/meshcut
  bool binary_changed = false;  // copied (install) / removed (uninstall)
  std::string conf_file;        // config file written, restored or left as is (may be empty)
  bool conf_changed = false;
  bool converted = false;            // install: a single-plugin .conf became a .conflist;
                                     // uninstall: a .conflist went back to the original .conf
  std::vector<std::string> actions;  // one line per change, for the CLI ("wrote …", "removed …")
  bool changed = false;              // anything at all changed on disk
};

// {"type":"meshcut","pinRoot":"/sys/fs/bpf/meshcut","logFile":"/var/log/meshcut-cni.log"}
nlohmann::ordered_json default_plugin_entry();

// Config file names (not paths) in DIR that a runtime would consider, sorted as runtimes sort them.
Result<std::vector<std::string>> config_files(const std::string& conf_dir);
// Full path of the active config: the first of config_files(); an error with a hint if none.
Result<std::string> active_config(const std::string& conf_dir);

Result<InstallReport> install(const InstallOptions& opt);
Result<InstallReport> uninstall(const InstallOptions& opt);

// True when the active config lacks the meshcut entry (the main CNI rewrote it, e.g. after a
// reboot), is still a single-plugin .conf, carries an entry that differs from opt.plugin_entry, or
// the binary is gone. False when there is no config yet or it is malformed: install() would only
// fail, so a poller must not spin on it (install-cni reports those errors).
bool needs_reinstall(const InstallOptions& opt);

}  // namespace meshcut::daemon::install
