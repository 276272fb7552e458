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
#include <linux/net_namespace.h>
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
#include <system_error>
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
// per-thread, so the caller's namespace is untouched). A thread that can't be
// created (EAGAIN: pids limit, memory) is an error like any other, never an
// exception: the CNI plugin fails open on it.
template <typename Fn>
Status in_netns(const std::string& path, Fn&& fn) {
  Fd nsfd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!nsfd.valid())
    return make_error("couldn't open network namespace '" + path + "'", errno,
                      "check the path (e.g. /var/run/netns/NAME or /proc/PID/ns/net)");
  Status st = ok_status();
  try {
    std::thread t([&] {
      if (::setns(nsfd.get(), CLONE_NEWNET) != 0) {
        st = make_error("couldn't enter network namespace '" + path + "'", errno, "run as root (CAP_SYS_ADMIN)");
        return;
      }
      st = fn();
    });
    t.join();
  } catch (const std::system_error& e) {
    return make_error("couldn't start a thread to enter network namespace '" + path + "' (" + e.what() + ")",
                      e.code().value() ? e.code().value() : EAGAIN,
                      "the node is out of threads or memory (pids.max, ulimit -u): retry later");
  }
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
    if (pos == std::string::npos || pos == 0) {
      p = "/";
      break;
    }
    p = p.substr(0, pos);
  }
  struct statfs sfs {};
  if (::statfs(p.c_str(), &sfs) != 0) return make_error("couldn't stat '" + p + "'", errno);
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
      return make_error("couldn't read the netns cookie (SO_NETNS_COOKIE)", errno, "meshcut needs Linux 5.15 or newer");
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

// One rtnetlink request, one answer, on a fresh socket in the caller's netns.
Result<std::string> rtnl_call(const void* req, size_t len, const std::string& what) {
  Fd s(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!s.valid()) return make_error("couldn't open an rtnetlink socket", errno);
  if (::send(s.get(), req, len, 0) < 0) return make_error("rtnetlink send failed (" + what + ")", errno);
  std::string buf(16384, '\0');
  ssize_t n = ::recv(s.get(), buf.data(), buf.size(), 0);
  if (n < 0) return make_error("rtnetlink recv failed (" + what + ")", errno);
  buf.resize(static_cast<size_t>(n));
  auto* nh = reinterpret_cast<nlmsghdr*>(buf.data());
  if (!NLMSG_OK(nh, static_cast<unsigned>(n))) return make_error("short rtnetlink answer (" + what + ")", EIO);
  if (nh->nlmsg_type == NLMSG_ERROR) {
    if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return make_error("short rtnetlink error (" + what + ")", EIO);
    return make_error(what, -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(nh))->error);
  }
  buf.resize(nh->nlmsg_len);
  return buf;
}

// RTM_GETLINK for one interface, by name (IFNAME non-empty) or by index, in
// the caller's netns.
Result<LinkInfo> getlink(const std::string& ifname, int ifindex = 0) {
  // IFNAMSIZ bound before any copy: the request buffer is sized for it.
  if (ifindex <= 0 && (ifname.empty() || ifname.size() >= IFNAMSIZ || ifname.find('\0') != std::string::npos))
    return make_error("invalid interface name (must be 1-" + std::to_string(IFNAMSIZ - 1) + " characters)", EINVAL);
  struct {
    nlmsghdr nh;
    ifinfomsg ifi;
    char attrs[RTA_SPACE(IFNAMSIZ) + RTA_SPACE(sizeof(uint32_t))];
  } req{};
  req.nh.nlmsg_type = RTM_GETLINK;
  req.nh.nlmsg_flags = NLM_F_REQUEST;
  req.nh.nlmsg_seq = 1;
  req.ifi.ifi_family = AF_UNSPEC;
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(ifinfomsg));
  if (ifindex > 0) {
    req.ifi.ifi_index = ifindex;
  } else {
    auto* rta = reinterpret_cast<rtattr*>(req.attrs);
    rta->rta_type = IFLA_IFNAME;
    rta->rta_len = RTA_LENGTH(ifname.size() + 1);
    std::memcpy(RTA_DATA(rta), ifname.c_str(), ifname.size() + 1);
    req.nh.nlmsg_len += RTA_ALIGN(rta->rta_len);
  }
  std::string what =
      ifindex > 0 ? "no interface with ifindex " + std::to_string(ifindex) : "no interface '" + ifname + "'";
  auto ans = rtnl_call(&req, req.nh.nlmsg_len, what);
  if (!ans) return ans.error();
  auto* nh = reinterpret_cast<nlmsghdr*>(ans->data());
  if (nh->nlmsg_type != RTM_NEWLINK || nh->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg)))
    return make_error("unexpected rtnetlink answer (" + what + ")", EIO);
  auto* ifi = reinterpret_cast<ifinfomsg*>(NLMSG_DATA(nh));
  LinkInfo li;
  li.ifindex = ifi->ifi_index;
  int len = static_cast<int>(nh->nlmsg_len - NLMSG_LENGTH(sizeof(*ifi)));
  auto s32 = [](const rtattr* a) {
    int32_t v = 0;
    if (RTA_PAYLOAD(a) >= sizeof(v)) std::memcpy(&v, RTA_DATA(a), sizeof(v));
    return v;
  };
  auto str = [](const rtattr* a) {
    const char* p = reinterpret_cast<const char*>(RTA_DATA(a));
    return std::string(p, strnlen(p, RTA_PAYLOAD(a)));
  };
  for (auto* a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
    switch (a->rta_type) {
      case IFLA_LINK: li.peer_ifindex = s32(a); break;
      case IFLA_LINK_NETNSID: li.link_netnsid = s32(a); break;
      case IFLA_IFNAME: li.name = str(a); break;
      case IFLA_ADDRESS:
        if (RTA_PAYLOAD(a) == 6) li.mac = fmt_mac(reinterpret_cast<unsigned char*>(RTA_DATA(a)));
        break;
      case IFLA_LINKINFO: {
        int ilen = static_cast<int>(RTA_PAYLOAD(a));
        for (auto* b = reinterpret_cast<rtattr*>(RTA_DATA(a)); RTA_OK(b, ilen); b = RTA_NEXT(b, ilen))
          if (b->rta_type == IFLA_INFO_KIND) li.kind = str(b);
        break;
      }
      default: break;
    }
  }
  return li;
}

// RTM_GETNSID: the id the caller's netns gives the netns open at NSFD (-1 if
// it gave none yet; ids are assigned when a link's peer is reported).
Result<int> netnsid_of(int nsfd) {
  struct {
    nlmsghdr nh;
    rtgenmsg g;
    char pad[3];
    char attrs[RTA_SPACE(sizeof(uint32_t))];
  } req{};
  req.nh.nlmsg_type = RTM_GETNSID;
  req.nh.nlmsg_flags = NLM_F_REQUEST;
  req.nh.nlmsg_seq = 1;
  req.g.rtgen_family = AF_UNSPEC;
  auto* rta = reinterpret_cast<rtattr*>(req.attrs);
  rta->rta_type = NETNSA_FD;
  rta->rta_len = RTA_LENGTH(sizeof(uint32_t));
  uint32_t fd = static_cast<uint32_t>(nsfd);
  std::memcpy(RTA_DATA(rta), &fd, sizeof(fd));
  req.nh.nlmsg_len = NLMSG_ALIGN(NLMSG_LENGTH(sizeof(rtgenmsg))) + RTA_ALIGN(rta->rta_len);
  static_assert(offsetof(decltype(req), attrs) == NLMSG_ALIGN(NLMSG_LENGTH(sizeof(rtgenmsg))));
  auto ans = rtnl_call(&req, req.nh.nlmsg_len, "couldn't read a netns id (RTM_GETNSID)");
  if (!ans) return ans.error();
  auto* nh = reinterpret_cast<nlmsghdr*>(ans->data());
  size_t hdr = NLMSG_ALIGN(NLMSG_LENGTH(sizeof(rtgenmsg)));
  if (nh->nlmsg_type != RTM_NEWNSID || nh->nlmsg_len < hdr) return make_error("unexpected RTM_GETNSID answer", EIO);
  int len = static_cast<int>(nh->nlmsg_len - hdr);
  for (auto* a = reinterpret_cast<rtattr*>(ans->data() + hdr); RTA_OK(a, len); a = RTA_NEXT(a, len))
    if (a->rta_type == NETNSA_NSID && RTA_PAYLOAD(a) >= sizeof(int32_t)) {
      int32_t v = 0;
      std::memcpy(&v, RTA_DATA(a), sizeof(v));
      return static_cast<int>(v);
    }
  return -1;
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
  // The caller's netns, to be numbered from inside the pod's; and the pod's,
  // to be numbered from here. /proc/thread-self: setns is per thread.
  Fd self(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!self.valid()) return make_error("couldn't open this process's network namespace", errno);
  Fd podns(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!podns.valid())
    return make_error("couldn't open network namespace '" + netns_path + "'", errno,
                      "check the path (e.g. /var/run/netns/NAME or /proc/PID/ns/net)");
  Error err{};
  bool failed = false;
  Status st = in_netns(netns_path, [&]() -> Status {
    Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    socklen_t len = sizeof(out.cookie);
    if (!s.valid() || ::getsockopt(s.get(), SOL_SOCKET, SO_NETNS_COOKIE, &out.cookie, &len) != 0)
      return make_error("couldn't read the netns cookie (SO_NETNS_COOKIE) of '" + netns_path + "'", errno,
                        "meshcut needs Linux 5.15 or newer");
    auto li = getlink(ifname);  // first: reporting the peer assigns the netns id read next
    if (!li) {
      err = li.error();
      failed = true;
      return ok_status();
    }
    out.link = *li;
    auto id = netnsid_of(self.get());
    if (!id) {
      err = id.error();
      failed = true;
      return ok_status();
    }
    out.host_nsid_in_pod = *id;
    return ok_status();
  });
  if (!st) return st.error();
  if (failed) return make_error("in netns '" + netns_path + "': " + err.what, err.err, err.hint);
  if (out.link.peer_ifindex > 0) {
    auto host = getlink("", out.link.peer_ifindex);
    if (host) {
      out.host = *host;
    } else if (host.error().err != ENODEV) {
      return host.error();
    }
  }
  auto id = netnsid_of(podns.get());
  if (!id) return id.error();
  out.pod_nsid_in_host = *id;
  return out;
}

std::string mac_of(int ifindex) {
  if (ifindex <= 0) return "";
  auto li = getlink("", ifindex);
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
