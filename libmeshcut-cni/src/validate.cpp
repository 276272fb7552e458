// SPDX-License-Identifier: Apache-2.0
#include <meshcut/cni/validate.h>

#include <string_view>

namespace meshcut::cni::validate {
namespace {

bool is_ctl(unsigned char c) { return c < 0x20 || c == 0x7f; }
bool is_alnum(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

std::string too_long(size_t n, size_t max) {
  return "is " + std::to_string(n) + " characters long (at most " + std::to_string(max) + ")";
}

// The spec's alphabet for container IDs and network names.
std::string id_like(const std::string& s, size_t max) {
  if (s.empty()) return "is empty";
  if (s.size() > max) return too_long(s.size(), max);
  if (!is_alnum(static_cast<unsigned char>(s[0]))) return "must start with a letter or digit";
  for (unsigned char c : s)
    if (!is_alnum(c) && c != '_' && c != '.' && c != '-') return "may hold only letters, digits, '_', '.' and '-'";
  return "";
}

}  // namespace

std::string ifname(const std::string& s) {
  if (s.empty()) return "is empty";
  if (s.size() > kMaxIfname) return too_long(s.size(), kMaxIfname);
  if (s == "." || s == "..") return "must not be '.' or '..'";
  for (unsigned char c : s)
    if (c == '/' || c == ':' || c == ' ' || is_ctl(c) || c == 0)
      return "must not hold '/', ':', whitespace or control characters";
  return "";
}

std::string container_id(const std::string& s) { return id_like(s, kMaxContainerId); }

std::string network_name(const std::string& s) { return id_like(s, kMaxNetworkName); }

std::string abs_path(const std::string& s, size_t max) {
  if (s.empty()) return "is empty";
  if (s.size() > max) return too_long(s.size(), max);
  if (s[0] != '/') return "must be an absolute path";
  for (unsigned char c : s)
    if (is_ctl(c)) return "must not hold control characters or NUL";
  std::string_view v(s);
  size_t i = 0;
  while (i < v.size()) {
    size_t j = v.find('/', i);
    if (j == std::string_view::npos) j = v.size();
    std::string_view comp = v.substr(i, j - i);
    if (comp == "." || comp == "..") return "must not hold a '.' or '..' component";
    i = j + 1;
  }
  return "";
}

std::string path_list(const std::string& s) {
  if (s.size() > kMaxCniPath) return too_long(s.size(), kMaxCniPath);
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find(':', i);
    if (j == std::string::npos) j = s.size();
    std::string elem = s.substr(i, j - i);
    if (!elem.empty())
      if (auto e = abs_path(elem); !e.empty()) return "element '" + elem + "' " + e;
    i = j + 1;
  }
  return "";
}

std::string cni_args(const std::string& s) {
  if (s.size() > kMaxCniArgs) return too_long(s.size(), kMaxCniArgs);
  for (unsigned char c : s)
    if (is_ctl(c)) return "must not hold control characters or NUL";
  return "";
}

std::string veth_pair(const VethFacts& f) {
  const std::string pod = "pod interface '" + f.pod_ifname + "'";
  if (f.pod.kind != "veth")
    return pod + " is " + (f.pod.kind.empty() ? std::string("a device without a link kind") : "a " + f.pod.kind) +
           ", not a veth: meshcut only attaches to the node end of a veth pair (bridge, ptp, flannel, calico)" +
           (f.pod.kind == "macvlan" || f.pod.kind == "ipvlan" || f.pod.kind == "macvtap"
                ? "; a " + f.pod.kind + "'s link is its parent device, which meshcut must not touch"
                : "");
  if (f.pod.link <= 0) return pod + " is a veth without a peer (no IFLA_LINK)";
  if (f.pod.link_netnsid < 0) return pod + "'s veth peer is in the pod's own network namespace, not the node's";
  if (f.host_nsid_in_pod < 0 || f.pod.link_netnsid != f.host_nsid_in_pod)
    return pod + "'s veth peer is in another network namespace (netns id " + std::to_string(f.pod.link_netnsid) +
           "), not the node's (" +
           (f.host_nsid_in_pod < 0 ? std::string("no id") : std::to_string(f.host_nsid_in_pod)) +
           "): run the plugin in the node's network namespace";
  if (!f.host_found)
    return "no interface with ifindex " + std::to_string(f.pod.link) + " (the peer of " + pod +
           ") in the node's network namespace";
  const std::string host = "node interface '" + f.host_ifname + "' (ifindex " + std::to_string(f.pod.link) + ")";
  if (f.host.ifindex != f.pod.link) return host + " answered with ifindex " + std::to_string(f.host.ifindex);
  if (f.host.kind != "veth")
    return host + " is " + (f.host.kind.empty() ? std::string("a device without a link kind") : "a " + f.host.kind) +
           ", not the veth peer of " + pod;
  if (f.host.link != f.pod.ifindex)
    return host + "'s peer is ifindex " + std::to_string(f.host.link) + ", not " + pod + " (ifindex " +
           std::to_string(f.pod.ifindex) + ")";
  if (f.host.link_netnsid < 0 || f.pod_nsid_in_host < 0 || f.host.link_netnsid != f.pod_nsid_in_host)
    return host + "'s peer is not in the pod's network namespace";
  return "";
}

}  // namespace meshcut::cni::validate
