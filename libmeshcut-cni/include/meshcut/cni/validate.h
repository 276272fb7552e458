// SPDX-License-Identifier: Apache-2.0
// The plugin trusts nothing: every CNI_* variable and every path from the
// network configuration is checked here, before it is copied anywhere, and the
// facts read from the kernel about the pod's interface are checked before a tc
// filter goes on any host device. Pure functions over strings and plain
// structs (no kernel, no libmeshcut), so the unit tests and the fuzzer drive
// them directly.
//
// Each check returns "" when the value is acceptable, else one sentence saying
// what is wrong with it (the caller adds the variable's name and the fix).
#pragma once

#include <cstddef>
#include <string>

namespace meshcut::cni::validate {

// Bounds. Record fields they must fit are static_asserted in backend.cpp
// against the ABI header (mc_cni_key, mc_cni_pod).
inline constexpr size_t kMaxIfname = 15;       // IFNAMSIZ - 1
inline constexpr size_t kMaxContainerId = 71;  // MC_CNI_ID_LEN - 1
inline constexpr size_t kMaxNetworkName = 128;
inline constexpr size_t kMaxPath = 4095;      // PATH_MAX - 1
inline constexpr size_t kMaxPinRoot = 3967;   // room for "/maps/<15-char name>" and more
inline constexpr size_t kMaxCniPath = 16384;  // CNI_PATH, a ':'-separated list
inline constexpr size_t kMaxCniArgs = 65536;

// CNI spec (1.1, "Parameters"): 1-15 characters, not "." or "..", no '/',
// ':', whitespace, control characters or NUL.
std::string ifname(const std::string& s);
// CNI spec: starts alphanumeric, then alphanumerics, '_', '.', '-'; 1-71 chars.
std::string container_id(const std::string& s);
// CNI spec network name: same alphabet as a container ID, 1-128 chars.
std::string network_name(const std::string& s);
// An absolute path of at most MAX characters: no NUL, no control characters,
// no "." or ".." component (a path that climbs out is refused, not resolved).
std::string abs_path(const std::string& s, size_t max = kMaxPath);
// CNI_PATH: ':'-separated absolute paths (empty elements allowed).
std::string path_list(const std::string& s);
// CNI_ARGS: bounded, no control characters (parse_cni_args splits it).
std::string cni_args(const std::string& s);

// What the kernel said about the two ends, read by the backend over
// rtnetlink. Netns ids are -1 when absent (IFLA_LINK_NETNSID missing, or
// RTM_GETNSID answered NETNSA_NSID_NOT_ASSIGNED).
struct LinkFacts {
  int ifindex = 0;
  std::string kind;       // IFLA_LINKINFO/IFLA_INFO_KIND: "veth", "macvlan", "" (none)
  int link = 0;           // IFLA_LINK
  int link_netnsid = -1;  // IFLA_LINK_NETNSID, in the id space of the netns the link lives in
};
struct VethFacts {
  std::string pod_ifname;
  LinkFacts pod;              // CNI_IFNAME, read inside the pod netns
  int host_nsid_in_pod = -1;  // the id the pod netns gives the node's netns
  bool host_found = false;    // an interface with index pod.link exists in the node netns
  std::string host_ifname;
  LinkFacts host;             // that interface, read in the node netns
  int pod_nsid_in_host = -1;  // the id the node netns gives the pod netns
};
// "" only if the pod interface is one end of a veth whose other end is the
// host interface, in the node's netns, pointing back at it. A macvlan or
// ipvlan (IFLA_LINK is its parent, e.g. the uplink) is refused by name.
std::string veth_pair(const VethFacts& f);

}  // namespace meshcut::cni::validate
