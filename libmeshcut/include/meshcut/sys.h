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

// What rtnetlink says about one interface (RTM_GETLINK), in the netns it was
// read in. An IFNAME longer than 15 characters is refused (EINVAL), never copied.
struct LinkInfo {
  int ifindex = 0;        // in the netns it was read in
  int peer_ifindex = 0;   // IFLA_LINK: a veth's peer, a macvlan/ipvlan's PARENT (0 if none)
  int link_netnsid = -1;  // IFLA_LINK_NETNSID: where IFLA_LINK lives (-1: the same netns)
  std::string kind;       // IFLA_LINKINFO/IFLA_INFO_KIND: "veth", "macvlan", "" (none)
  std::string name;       // IFLA_IFNAME
  std::string mac;        // "aa:bb:cc:dd:ee:ff"
};
Result<LinkInfo> link_in_netns(const std::string& netns_path, const std::string& ifname);
// The CNI ADD path's one visit of the pod netns (each setns into a fresh
// namespace costs about a millisecond): its cookie, IFNAME there, and what it
// takes to tell whether IFNAME's IFLA_LINK really is its veth peer in the
// caller's netns (both netns ids, and the caller-side interface at that index).
// Facts only: deciding is the caller's (meshcut/cni/validate.h).
struct PodNetns {
  uint64_t cookie = 0;
  LinkInfo link;                 // IFNAME in the pod netns
  int host_nsid_in_pod = -1;     // the caller's netns as the pod netns numbers it
  int pod_nsid_in_host = -1;     // the pod netns as the caller's netns numbers it
  std::optional<LinkInfo> host;  // the caller-netns interface at link.peer_ifindex, if any
};
Result<PodNetns> pod_netns(const std::string& netns_path, const std::string& ifname);
// MAC of an interface in the caller's netns.
std::string mac_of(int ifindex);

// "10.244.1.5" from a network-order IPv4 address.
std::string ipv4_str(uint32_t be);

std::optional<std::string> read_file(const std::string& path);
int kernel_version_code();  // KERNEL_VERSION(a,b,c) of uname -r

}  // namespace meshcut::sys
