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

#include <cstdlib>
#include <cstring>
#include <memory>

#include "mc_conns_iter.skel.h"
#include "mc_latency.skel.h"
#include "mc_probe.skel.h"
#include "meshcut/abi.h"
#include "meshcut/fd.h"
#include "meshcut/log.h"
#include "meshcut/skel.h"
#include "meshcut/sys.h"

MESHCUT_SKEL(mc_conns_iter);
MESHCUT_SKEL(mc_latency);
MESHCUT_SKEL(mc_probe);

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
  if (!l.valid() || ::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(l.get(), 1) != 0 ||
      ::getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
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

// Loads (never attaches) a throw-away program of a tracing type: the verdict
// and, when refused, the errno text.
template <typename T>
Tri load_probe(void (*select)(T*), std::string* why) {
  auto s = open_skel<T>();
  if (!s) {
    *why = "couldn't open the object: " + errno_text(errno);
    return Tri::unknown;
  }
  if (select) select(s.get());
  if (int err = load_skel(s)) {
    *why = errno_text(-err) + " (errno " + std::to_string(-err) + ")";
    return Tri::no;
  }
  return Tri::yes;
}

}  // namespace

void latency_select(mc_latency* s, bool typed) {
  bpf_program__set_autoload(s->progs.mct_send_btf, typed);
  bpf_program__set_autoload(s->progs.mct_recv_btf, typed);
  bpf_program__set_autoload(s->progs.mct_send_raw, !typed);
  bpf_program__set_autoload(s->progs.mct_recv_raw, !typed);
}

void probe_tracing(Features& f) {
  if (f.no_tracing) {
    f.bpf_iter = f.tp_btf = f.raw_tp = Tri::no;
    f.bpf_iter_error = f.tp_btf_error = f.raw_tp_error = "not tried (--no-tracing / MESHCUT_NO_TRACING=1)";
    f.notes.push_back("tracing programs off by request: conns/pods read the conns table, trace is off");
    return;
  }
  f.bpf_iter_error = f.tp_btf_error = f.raw_tp_error = "";
  f.bpf_iter = load_probe<mc_conns_iter>(nullptr, &f.bpf_iter_error);
  f.tp_btf = load_probe<mc_latency>([](mc_latency* s) { latency_select(s, true); }, &f.tp_btf_error);
  f.raw_tp = load_probe<mc_latency>([](mc_latency* s) { latency_select(s, false); }, &f.raw_tp_error);
  if (f.bpf_iter != Tri::yes)
    f.notes.push_back("BPF iterator (tracing program) refused: " + f.bpf_iter_error +
                      "; sockops/sk_msg keep the conns table instead (conns, conns --explain and pods read it; "
                      "a hash lookup per send)");
  if (f.tp_btf != Tri::yes && f.raw_tp != Tri::yes)
    f.notes.push_back("tp_btf (" + f.tp_btf_error + ") and raw_tp (" + f.raw_tp_error +
                      ") refused: `meshcutd trace` (the latency monitor) is off; the shortcuts are not affected");
  else if (f.tp_btf != Tri::yes)
    f.notes.push_back("tp_btf refused (" + f.tp_btf_error + "): `meshcutd trace` uses raw_tp");
}

nlohmann::json degraded_json(uint32_t b) {
  nlohmann::json out = nlohmann::json::array();
  if (!(b & MC_FEAT_PROBED)) return out;
  Features now;  // the kernel's answer now, for the errno text
  now.no_tracing = (b & MC_FEAT_NO_TRACING) != 0;
  probe_tracing(now);
  if (!(b & MC_FEAT_BPF_ITER))
    out.push_back({{"feature", "bpf_iter"},
                   {"refused", now.bpf_iter_error},
                   {"turns_off",
                    "nothing: conns, conns --explain and pods read the conns table that sockops and "
                    "sk_msg keep (every field; a hash lookup per send)"}});
  if (!(b & MC_FEAT_TP_BTF))
    out.push_back({{"feature", "tp_btf"},
                   {"refused", now.tp_btf_error},
                   {"turns_off", (b & MC_FEAT_RAW_TP) ? "nothing: trace uses raw_tp" : "see raw_tp"}});
  if (!(b & MC_FEAT_RAW_TP))
    out.push_back(
        {{"feature", "raw_tp"},
         {"refused", now.raw_tp_error},
         {"turns_off", (b & MC_FEAT_TP_BTF) ? "nothing: trace uses tp_btf"
                                            : "trace (the latency monitor); the shortcuts are not affected"}});
  return out;
}

bool no_tracing_env() {
  const char* v = std::getenv("MESHCUT_NO_TRACING");
  if (!v) return false;
  std::string s(v);
  return s == "1" || s == "true" || s == "yes";
}

std::string tracing_refused_hint(int err) {
  if (err == EPERM || err == EACCES)
    return "this kernel refuses tracing programs (BPF iterators, tp_btf) before verification: lockdown "
           "(cat /sys/kernel/security/lockdown), a hardened or distribution build, or a process without "
           "CAP_BPF+CAP_PERFMON; meshcutd keeps the conns table on such kernels: start it again (its probe sees "
           "this) or with --no-tracing";
  if (err == EINVAL || err == 524 || err == EOPNOTSUPP || err == ENOENT || err == ESRCH)
    return "this kernel lacks the program type or its BTF (iterators need Linux 5.10+ with BTF); start "
           "meshcutd with --no-tracing to keep the conns table";
  return "start meshcutd with --no-tracing to keep the conns table";
}

uint32_t Features::bits() const {
  uint32_t b = 0;
  if (netns_cookie) b |= MC_FEAT_NETNS_COOKIE;
  if (sockhash) b |= MC_FEAT_SOCKHASH;
  if (sk_storage) b |= MC_FEAT_SK_STORAGE;
  if (fionread_bug == Tri::yes) b |= MC_FEAT_FIONREAD_BUG;
  if (verdict_fixes_it == Tri::yes) b |= MC_FEAT_FIONREAD_FIXED;
  if (bpf_iter == Tri::yes) b |= MC_FEAT_BPF_ITER;
  if (tp_btf == Tri::yes) b |= MC_FEAT_TP_BTF;
  if (raw_tp == Tri::yes) b |= MC_FEAT_RAW_TP;
  if (conns_table()) b |= MC_FEAT_CONNS_TABLE;
  if (no_tracing) b |= MC_FEAT_NO_TRACING;
  return b | MC_FEAT_PROBED;
}

nlohmann::json Features::to_json() const {
  return {{"kernel_5_15", kernel_ok},
          {"sockhash", sockhash},
          {"sk_storage", sk_storage},
          {"netns_cookie", netns_cookie},
          {"fionread_regression", tri(fionread_bug)},
          {"skb_verdict_fixes_fionread", tri(verdict_fixes_it)},
          {"bpf_iter", tri(bpf_iter)},
          {"tp_btf", tri(tp_btf)},
          {"raw_tp", tri(raw_tp)},
          {"bpf_iter_error", bpf_iter_error},
          {"tp_btf_error", tp_btf_error},
          {"raw_tp_error", raw_tp_error},
          {"no_tracing", no_tracing},
          {"conns_table", conns_table()},
          {"notes", notes}};
}

nlohmann::json features_json(uint32_t b) {
  nlohmann::json tracing = nullptr;  // an older daemon did not probe them
  if (b & MC_FEAT_PROBED)
    tracing = {{"bpf_iter", (b & MC_FEAT_BPF_ITER) != 0},
               {"tp_btf", (b & MC_FEAT_TP_BTF) != 0},
               {"raw_tp", (b & MC_FEAT_RAW_TP) != 0},
               {"conns_table", (b & MC_FEAT_CONNS_TABLE) != 0},
               {"off_by_request", (b & MC_FEAT_NO_TRACING) != 0}};
  return {{"tracing", tracing},
          {"netns_cookie", (b & MC_FEAT_NETNS_COOKIE) != 0},
          {"sockhash", (b & MC_FEAT_SOCKHASH) != 0},
          {"sk_storage", (b & MC_FEAT_SK_STORAGE) != 0},
          {"fionread_regression", (b & MC_FEAT_FIONREAD_BUG) != 0},
          {"skb_verdict_fixes_fionread", (b & MC_FEAT_FIONREAD_FIXED) != 0},
          {"skb_verdict_attached", (b & MC_FEAT_SKB_VERDICT) != 0},
          {"conntrack_kfuncs", (b & MC_FEAT_CT_KFUNCS) != 0}};
}

Features probe_features(bool no_tracing) {
  Features f;
  f.no_tracing = no_tracing;
  probe_tracing(f);
  f.kernel_ok = sys::kernel_version_code() >= (5 << 16) + (15 << 8);
  if (!f.kernel_ok) f.notes.push_back("kernel older than 5.15: netns cookies in sockops/sk_msg are missing");
  f.sockhash = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_SOCKHASH, nullptr) == 1;
  if (!f.sockhash) f.notes.push_back("BPF_MAP_TYPE_SOCKHASH not supported (CONFIG_BPF_STREAM_PARSER?)");
  f.sk_storage = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_SK_STORAGE, nullptr) == 1;
  if (!f.sk_storage) f.notes.push_back("BPF_MAP_TYPE_SK_STORAGE not supported");
  f.netns_cookie = libbpf_probe_bpf_helper(BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_get_netns_cookie, nullptr) == 1 &&
                   libbpf_probe_bpf_helper(BPF_PROG_TYPE_SK_MSG, BPF_FUNC_get_netns_cookie, nullptr) == 1;
  if (!f.netns_cookie) f.notes.push_back("bpf_get_netns_cookie not allowed in sockops/sk_msg (needs 5.15)");
  if (!f.sockhash) return f;

  auto skel = open_skel<mc_probe>();
  if (skel && load_skel(skel) != 0) skel.reset();
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
