// SPDX-License-Identifier: Apache-2.0
#include "probe.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>

#include "mc_probe.skel.h"
#include "meshcut/abi.h"
#include "meshcut/fd.h"
#include "meshcut/log.h"
#include "meshcut/sys.h"

namespace meshcut::daemon {
namespace {

const char* tri(Tri t) { return t == Tri::yes ? "yes" : t == Tri::no ? "no" : "unknown"; }

// A connected loopback TCP pair: {client, accepted server side}.
bool tcp_pair(Fd& client, Fd& server) {
  Fd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (!l.valid() || ::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::listen(l.get(), 1) != 0 || ::getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return false;
  client.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!client.valid() || ::connect(client.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return false;
  server.reset(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
  return server.valid();
}

// Inserts the server end of a fresh pair into MAP, sends 1000 bytes over the
// normal path and asks: does poll() say readable and FIONREAD say 1000?
Tri fionread_ok(int map_fd) {
  Fd c, s;
  if (!tcp_pair(c, s)) return Tri::unknown;
  uint32_t key = 0;
  uint64_t fd = static_cast<uint64_t>(s.get());  // value_size 8: the fd as __u64
  if (bpf_map_update_elem(map_fd, &key, &fd, BPF_ANY) != 0) return Tri::unknown;
  char buf[1000] = {};
  if (::write(c.get(), buf, sizeof(buf)) != static_cast<ssize_t>(sizeof(buf))) return Tri::unknown;
  pollfd p{s.get(), POLLIN, 0};
  int ready = ::poll(&p, 1, 300);
  int n = 0;
  ::ioctl(s.get(), FIONREAD, &n);
  bpf_map_delete_elem(map_fd, &key);
  return ready == 1 && n == static_cast<int>(sizeof(buf)) ? Tri::yes : Tri::no;
}

}  // namespace

uint32_t Features::bits() const {
  uint32_t b = 0;
  if (netns_cookie) b |= MC_FEAT_NETNS_COOKIE;
  if (sockhash) b |= MC_FEAT_SOCKHASH;
  if (sk_storage) b |= MC_FEAT_SK_STORAGE;
  if (fionread_bug == Tri::yes) b |= MC_FEAT_FIONREAD_BUG;
  if (verdict_fixes_it == Tri::yes) b |= MC_FEAT_FIONREAD_FIXED;
  return b;
}

nlohmann::json Features::to_json() const {
  return {{"kernel_5_15", kernel_ok},
          {"sockhash", sockhash},
          {"sk_storage", sk_storage},
          {"netns_cookie", netns_cookie},
          {"fionread_regression", tri(fionread_bug)},
          {"skb_verdict_fixes_fionread", tri(verdict_fixes_it)},
          {"notes", notes}};
}

nlohmann::json features_json(uint32_t b) {
  return {{"netns_cookie", (b & MC_FEAT_NETNS_COOKIE) != 0},
          {"sockhash", (b & MC_FEAT_SOCKHASH) != 0},
          {"sk_storage", (b & MC_FEAT_SK_STORAGE) != 0},
          {"fionread_regression", (b & MC_FEAT_FIONREAD_BUG) != 0},
          {"skb_verdict_fixes_fionread", (b & MC_FEAT_FIONREAD_FIXED) != 0},
          {"skb_verdict_attached", (b & MC_FEAT_SKB_VERDICT) != 0}};
}

Features probe_features() {
  Features f;
  f.kernel_ok = sys::kernel_version_code() >= (5 << 16) + (15 << 8);
  if (!f.kernel_ok) f.notes.push_back("kernel older than 5.15: netns cookies in sockops/sk_msg are missing");
  f.sockhash = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_SOCKHASH, nullptr) == 1;
  if (!f.sockhash) f.notes.push_back("BPF_MAP_TYPE_SOCKHASH not supported (CONFIG_BPF_STREAM_PARSER?)");
  f.sk_storage = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_SK_STORAGE, nullptr) == 1;
  if (!f.sk_storage) f.notes.push_back("BPF_MAP_TYPE_SK_STORAGE not supported");
  f.netns_cookie =
      libbpf_probe_bpf_helper(BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_get_netns_cookie, nullptr) == 1 &&
      libbpf_probe_bpf_helper(BPF_PROG_TYPE_SK_MSG, BPF_FUNC_get_netns_cookie, nullptr) == 1;
  if (!f.netns_cookie) f.notes.push_back("bpf_get_netns_cookie not allowed in sockops/sk_msg (needs 5.15)");
  if (!f.sockhash) return f;

  std::unique_ptr<mc_probe, decltype(&mc_probe__destroy)> skel(mc_probe__open_and_load(), &mc_probe__destroy);
  if (!skel) {
    f.notes.push_back("FIONREAD probe: couldn't load the probe programs: " + std::string(strerror(errno)));
    return f;
  }
  int map_fd = bpf_map__fd(skel->maps.probe_sockhash);
  if (bpf_prog_attach(bpf_program__fd(skel->progs.probe_sk_msg), map_fd, BPF_SK_MSG_VERDICT, 0) != 0) {
    f.notes.push_back("FIONREAD probe: couldn't attach sk_msg: " + std::string(strerror(errno)));
    return f;
  }
  Tri plain = fionread_ok(map_fd);
  if (plain == Tri::unknown) {
    f.notes.push_back("FIONREAD probe: no loopback TCP in this netns (is lo up?): regression unknown");
    return f;
  }
  f.fionread_bug = plain == Tri::yes ? Tri::no : Tri::yes;
  if (bpf_prog_attach(bpf_program__fd(skel->progs.probe_sk_skb), map_fd, BPF_SK_SKB_VERDICT, 0) == 0)
    f.verdict_fixes_it = fionread_ok(map_fd);
  if (f.fionread_bug == Tri::yes)
    f.notes.push_back(std::string("FIONREAD/epoll regression (commit 929e30f93125) present; no-op SK_SKB verdict ") +
                      (f.verdict_fixes_it == Tri::yes ? "fixes it" : "does NOT fix it"));
  return f;
}

}  // namespace meshcut::daemon
