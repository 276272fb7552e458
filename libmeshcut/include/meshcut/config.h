// SPDX-License-Identifier: Apache-2.0
// meshcutd's configuration: the JSON file (conf/meshcutd.json), then flags on top.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "meshcut/error.h"
#include <linux/types.h>  // before meshcut_kern_user.h, which has no includes
#include "meshcut_kern_user.h"

namespace meshcut {

enum class SkbVerdict { automatic, on, off };

struct DaemonConfig {
  std::string pin_root = "/sys/fs/bpf/meshcut";
  std::string cgroup;  // empty: the cgroup v2 root from /proc/mounts
  uint32_t max_sockets = MC_DEFAULT_MAX_SOCKETS;
  SkbVerdict skb_verdict = SkbVerdict::automatic;
  std::string log_level = "info";
  std::string metrics_addr = "127.0.0.1:9464";
  uint32_t local_rto_min_us = 5000;  // 0: the kernel's 200 ms
  uint32_t gc_interval_s = 10;       // stale pod records; 0: off
  uint32_t recheck_interval_s = 2;   // our tc filters still attached; 0: off
  // Cross-node tc shortcut: the cluster's pod CIDR (e.g. 10.244.0.0/16) and the
  // overlay device (flannel.1). Without a pod CIDR the tc shortcut stays off.
  std::string pod_cidr;
  std::string overlay_dev;
  bool cross_node = true;  // the node's switch
  // Load no tracing program (BPF iterators, tp_btf, raw_tp), as on kernels
  // that refuse them: conns/pods read the conns table, trace is off.
  bool no_tracing = false;
  // Objectives (issue 15): the service file meshcutd watches ("" : none) and
  // the objectives API (local-only unless a bearer token file is given).
  std::string services_file;
  std::string api_addr = "127.0.0.1:9465";  // "off": no API
  std::string api_token_file;
  std::vector<std::string> warnings;  // unknown keys, reported, not fatal
};

// Parses TEXT (JSON object) over DEFAULTS. Errors name the key and the expected type.
Result<DaemonConfig> parse_daemon_config(const std::string& text, DaemonConfig defaults = {});
Result<DaemonConfig> load_daemon_config(const std::string& path, DaemonConfig defaults = {});
// Checks the assembled config (file, then flags) as a whole, before anything is
// attached: settings that are each valid but together would break traffic.
Status validate_daemon_config(const DaemonConfig& c);
Result<SkbVerdict> parse_skb_verdict(const std::string& s);
// "10.244.0.0/16" -> {network, mask}, both network order.
Result<std::pair<uint32_t, uint32_t>> parse_ipv4_cidr(const std::string& s);
const char* to_string(SkbVerdict v);

}  // namespace meshcut
