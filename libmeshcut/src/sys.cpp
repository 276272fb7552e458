// SPDX-License-Identifier: Apache-2.0
#include "meshcut/sys.h"

#include <fcntl.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "meshcut/fd.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace meshcut::sys {
namespace {
constexpr long kBpfFsMagic = 0xcafe4a11;
constexpr long kCgroup2Magic = 0x63677270;

std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool okd = true;
      for (int k = 1; k <= 3; ++k) {
        char c = s[i + k];
        if (c < '0' || c > '7') okd = false;
        v = v * 8 + (c - '0');
      }
      if (okd) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// Runs FN in a thread that joined the network namespace at PATH (setns is
// per-thread, so the caller's namespace is untouched).
template <typename Fn>
Status in_netns(const std::string& path, Fn&& fn) {
  Fd nsfd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!nsfd.valid())
    return make_error("couldn't open network namespace '" + path + "'", errno,
                      "check the path (e.g. /var/run/netns/NAME or /proc/PID/ns/net)");
  Status st = ok_status();
  std::thread t([&] {
    if (::setns(nsfd.get(), CLONE_NEWNET) != 0) {
      st = make_error("couldn't enter network namespace '" + path + "'", errno,
                      "run as root (CAP_SYS_ADMIN)");
      return;
    }
    st = fn();
  });
  t.join();
  return st;
}
}  // namespace

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<Mount> parse_mounts(const std::string& text) {
  std::vector<Mount> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    Mount m;
    if (ls >> m.source >> m.target >> m.fstype) {
      m.source = unescape(m.source);
      m.target = unescape(m.target);
      out.push_back(std::move(m));
    }
  }
  return out;
}

Result<std::string> cgroup2_root() {
  auto text = read_file("/proc/mounts");
  if (!text) return make_error("couldn't read /proc/mounts", errno);
  for (const auto& m : parse_mounts(*text))
    if (m.fstype == "cgroup2") return m.target;
  return make_error("cgroup v2 is not mounted (no cgroup2 entry in /proc/mounts)", ENOENT,
                    "run: mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none "
                    "/sys/fs/cgroup/unified, or pass --cgroup PATH on a cgroup2 mount");
}

Status check_cgroup2_dir(const std::string& path) {
  struct statfs sfs {};
  if (::statfs(path.c_str(), &sfs) != 0)
    return make_error("couldn't open cgroup '" + path + "'", errno,
                      "create it (mkdir) on the cgroup v2 mount, or pass another --cgroup");
  if (sfs.f_type != kCgroup2Magic)
    return make_error("'" + path + "' is not on a cgroup v2 filesystem", EINVAL,
                      "pass --cgroup with a directory under the cgroup2 mount listed in /proc/mounts");
  return ok_status();
}

Status check_bpffs(const std::string& pin_root) {
  // The pin root may not exist yet: check the deepest existing ancestor.
  std::string p = pin_root;
  struct stat stt {};
  while (!p.empty() && ::stat(p.c_str(), &stt) != 0) {
    auto pos = p.find_last_of('/');
    if (pos == std::string::npos || pos == 0) { p = "/"; break; }
    p = p.substr(0, pos);
  }
  struct statfs sfs {};
  if (::statfs(p.c_str(), &sfs) != 0)
    return make_error("couldn't stat '" + p + "'", errno);
  if (sfs.f_type != kBpfFsMagic) {
    std::string mnt = p == "/" ? "/sys/fs/bpf" : p;
    return make_error("bpffs not mounted at " + mnt + " (pin root '" + pin_root + "')", ENOENT,
                      "run: mount -t bpf bpf " + mnt);
  }
  return ok_status();
}

Result<uint64_t> cgroup_id(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return make_error("couldn't stat cgroup '" + path + "'", errno);
  return static_cast<uint64_t>(st.st_ino);
}

Result<uint64_t> netns_cookie(const std::string& netns_path) {
  uint64_t cookie = 0;
  Status st = in_netns(netns_path, [&]() -> Status {
    Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s.valid()) return make_error("couldn't create a socket in '" + netns_path + "'", errno);
    socklen_t len = sizeof(cookie);
    if (::getsockopt(s.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0)
      return make_error("couldn't read the netns cookie (SO_NETNS_COOKIE)", errno,
                        "meshcut needs Linux 5.15 or newer");
    return ok_status();
  });
  if (!st) return st.error();
  return cookie;
}

Result<std::vector<uint32_t>> netns_ipv4(const std::string& netns_path) {
  std::vector<uint32_t> ips;
  Status st = in_netns(netns_path, [&]() -> Status {
    struct ifaddrs* ifa = nullptr;
    if (::getifaddrs(&ifa) != 0) return make_error("couldn't list addresses in '" + netns_path + "'", errno);
    for (auto* p = ifa; p; p = p->ifa_next) {
      if (!p->ifa_addr || p->ifa_addr->sa_family != AF_INET) continue;
      uint32_t ip = reinterpret_cast<sockaddr_in*>(p->ifa_addr)->sin_addr.s_addr;
      if ((ntohl(ip) >> 24) == 127) continue;
      ips.push_back(ip);
    }
    ::freeifaddrs(ifa);
    return ok_status();
  });
  if (!st) return st.error();
  return ips;
}

namespace {
std::string fmt_mac(const unsigned char* m) {
  char b[18];
  std::snprintf(b, sizeof(b), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return b;
}

// RTM_GETLINK for one interface by name over rtnetlink, in the caller's netns.
Result<LinkInfo> getlink(const std::string& ifname) {
  Fd s(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!s.valid()) return make_error("couldn't open an rtnetlink socket", errno);
  struct {
    nlmsghdr nh;
    ifinfomsg ifi;
    char attrs[64];
  } req{};
  req.nh.nlmsg_type = RTM_GETLINK;
  req.nh.nlmsg_flags = NLM_F_REQUEST;
  req.nh.nlmsg_seq = 1;
  req.ifi.ifi_family = AF_UNSPEC;
  auto* rta = reinterpret_cast<rtattr*>(req.attrs);
  rta->rta_type = IFLA_IFNAME;
  rta->rta_len = RTA_LENGTH(ifname.size() + 1);
  std::memcpy(RTA_DATA(rta), ifname.c_str(), ifname.size() + 1);
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(ifinfomsg)) + RTA_ALIGN(rta->rta_len);
  if (::send(s.get(), &req, req.nh.nlmsg_len, 0) < 0) return make_error("rtnetlink send failed", errno);
  char buf[8192];
  ssize_t n = ::recv(s.get(), buf, sizeof(buf), 0);
  if (n < 0) return make_error("rtnetlink recv failed", errno);
  auto* nh = reinterpret_cast<nlmsghdr*>(buf);
  if (!NLMSG_OK(nh, static_cast<unsigned>(n))) return make_error("short rtnetlink answer", EIO);
  if (nh->nlmsg_type == NLMSG_ERROR) {
    int e = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(nh))->error;
    return make_error("no interface '" + ifname + "'", e);
  }
  auto* ifi = reinterpret_cast<ifinfomsg*>(NLMSG_DATA(nh));
  LinkInfo li;
  li.ifindex = ifi->ifi_index;
  int len = static_cast<int>(nh->nlmsg_len - NLMSG_LENGTH(sizeof(*ifi)));
  for (auto* a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
    if (a->rta_type == IFLA_LINK) li.peer_ifindex = *reinterpret_cast<int*>(RTA_DATA(a));
    if (a->rta_type == IFLA_ADDRESS && RTA_PAYLOAD(a) == 6)
      li.mac = fmt_mac(reinterpret_cast<unsigned char*>(RTA_DATA(a)));
  }
  return li;
}
}  // namespace

Result<LinkInfo> link_in_netns(const std::string& netns_path, const std::string& ifname) {
  Result<LinkInfo> out = make_error("not run", EINVAL);
  Status st = in_netns(netns_path, [&]() -> Status {
    out = getlink(ifname);
    return ok_status();
  });
  if (!st) return st.error();
  if (!out) return make_error("in netns '" + netns_path + "': " + out.error().what, out.error().err);
  return out;
}

Result<PodNetns> pod_netns(const std::string& netns_path, const std::string& ifname) {
  PodNetns out;
  Error err{};
  bool failed = false;
  Status st = in_netns(netns_path, [&]() -> Status {
    Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    socklen_t len = sizeof(out.cookie);
    if (!s.valid() || ::getsockopt(s.get(), SOL_SOCKET, SO_NETNS_COOKIE, &out.cookie, &len) != 0)
      return make_error("couldn't read the netns cookie (SO_NETNS_COOKIE) of '" + netns_path + "'", errno,
                        "meshcut needs Linux 5.15 or newer");
    auto li = getlink(ifname);
    if (!li) {
      err = li.error();
      failed = true;
    } else {
      out.link = *li;
    }
    return ok_status();
  });
  if (!st) return st.error();
  if (failed) return make_error("in netns '" + netns_path + "': " + err.what, err.err);
  return out;
}

std::string mac_of(int ifindex) {
  char name[IF_NAMESIZE] = {};
  if (!if_indextoname(ifindex, name)) return "";
  auto li = getlink(name);
  return li ? li->mac : "";
}

std::string ipv4_str(uint32_t be) {
  char b[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &be, b, sizeof(b));
  return b;
}

int kernel_version_code() {
  struct utsname u {};
  if (::uname(&u) != 0) return 0;
  int a = 0, b = 0, c = 0;
  std::sscanf(u.release, "%d.%d.%d", &a, &b, &c);
  return (a << 16) + (b << 8) + (c > 255 ? 255 : c);
}

}  // namespace meshcut::sys
