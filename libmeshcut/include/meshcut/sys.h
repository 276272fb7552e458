// SPDX-License-Identifier: Apache-2.0
// Facts about the node that both binaries check: where cgroup v2 and bpffs are,
// a network namespace's cookie, a cgroup's id.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "meshcut/error.h"

namespace meshcut::sys {

struct Mount {
  std::string source, target, fstype;
};
// Parses /proc/mounts-format text (octal escapes like \040 decoded).
std::vector<Mount> parse_mounts(const std::string& text);
// The first cgroup2 mount in /proc/mounts, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified.
Result<std::string> cgroup2_root();
// PATH is a directory on a cgroup v2 filesystem.
Status check_cgroup2_dir(const std::string& path);
// PATH (the pin root or its parent) lives on bpffs. Error names the mount command.
Status check_bpffs(const std::string& pin_root);
// The cgroup id of a cgroup v2 directory (its inode number on cgroup2).
Result<uint64_t> cgroup_id(const std::string& path);

// Cookie of the network namespace at PATH (e.g. /var/run/netns/x, /proc/PID/ns/net):
// a socket is created inside it and asked SO_NETNS_COOKIE (Linux 5.14+).
Result<uint64_t> netns_cookie(const std::string& netns_path);
// IPv4 addresses (network order) configured in that netns, loopback excluded.
Result<std::vector<uint32_t>> netns_ipv4(const std::string& netns_path);

// The ifindex, in the netns it lives in, of the veth peer of IFNAME inside the
// network namespace at NETNS_PATH (IFLA_LINK of the pod's eth0), and IFNAME's MAC.
struct LinkInfo {
  int ifindex = 0;       // in the pod netns
  int peer_ifindex = 0;  // IFLA_LINK: the peer's ifindex (0 if not a veth)
  std::string mac;       // "aa:bb:cc:dd:ee:ff"
};
Result<LinkInfo> link_in_netns(const std::string& netns_path, const std::string& ifname);
// Both of the above in one visit of the netns (the CNI ADD path: each setns
// into a fresh namespace costs about a millisecond).
struct PodNetns {
  uint64_t cookie = 0;
  LinkInfo link;
};
Result<PodNetns> pod_netns(const std::string& netns_path, const std::string& ifname);
// MAC of an interface in the caller's netns.
std::string mac_of(int ifindex);

// "10.244.1.5" from a network-order IPv4 address.
std::string ipv4_str(uint32_t be);

std::optional<std::string> read_file(const std::string& path);
int kernel_version_code();  // KERNEL_VERSION(a,b,c) of uname -r

}  // namespace meshcut::sys
