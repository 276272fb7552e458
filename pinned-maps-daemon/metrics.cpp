// SPDX-License-Identifier: Apache-2.0
#include "metrics.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <linux/bpf.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <semaphore>
#include <sstream>
#include <string_view>
#include <thread>

#include "loader.h"
#include "meshcut/abi.h"
#include "meshcut/fd.h"
#include "meshcut/log.h"
#include "meshcut/maps.h"

namespace meshcut::daemon {
namespace {

// One metric family: # HELP, # TYPE, then its samples.
class Family {
 public:
  Family(std::ostringstream& out, const char* name, const char* type, const char* help) : out_(out), name_(name) {
    out_ << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  }
  Family& sample(uint64_t v, std::string_view labels = {}, std::string_view suffix = {}) {
    out_ << name_ << suffix;
    if (!labels.empty()) out_ << "{" << labels << "}";
    out_ << " " << v << "\n";
    return *this;
  }

 private:
  std::ostringstream& out_;
  const char* name_;
};

std::string label(const char* k, std::string_view v) { return std::string(k) + "=\"" + std::string(v) + "\""; }

}  // namespace

std::string render_metrics(const PinLayout& layout) {
  std::ostringstream o;
  auto maps = PinnedMaps::open(layout);
  Family(o, "meshcut_up", "gauge", "1 if meshcut's pins are in place and readable.").sample(maps ? 1 : 0);
  if (!maps) return o.str();
  auto c = maps->counters();
  auto cfg = maps->config();
  auto meta = maps->meta();
  auto usage = maps->usage();
  auto cni = maps->cni_stats();
  auto pods = maps->pods();
  if (c) {
    const auto& v = *c;
    Family(o, "meshcut_socket_redirected_messages_total", "counter",
           "Messages (sends) written straight into the peer socket, by shortcut kind.")
        .sample(v[MC_C_MSG_REDIRECT_INTRA], label("kind", "intra_pod"))
        .sample(v[MC_C_MSG_REDIRECT_NODE], label("kind", "same_node"));
    Family(o, "meshcut_socket_redirected_bytes_total", "counter",
           "Bytes written straight into the peer socket, by shortcut kind.")
        .sample(v[MC_C_BYTES_REDIRECT_INTRA], label("kind", "intra_pod"))
        .sample(v[MC_C_BYTES_REDIRECT_NODE], label("kind", "same_node"));
    Family(o, "meshcut_socket_fallback_messages_total", "counter",
           "Messages of enrolled sockets that took the normal path, by reason.")
        .sample(v[MC_C_MSG_PASS_NO_PEER], label("reason", "peer_not_found"))
        .sample(v[MC_C_MSG_PASS_STICKY], label("reason", "first_bytes_on_the_wire"))
        .sample(v[MC_C_MSG_PASS_PEER_GONE], label("reason", "peer_gone"))
        .sample(v[MC_C_MSG_PASS_DISABLED], label("reason", "disabled"))
        .sample(v[MC_C_MSG_NO_STATE], label("reason", "no_state"));
    Family(o, "meshcut_socket_fallback_bytes_total", "counter",
           "Bytes of enrolled sockets that took the normal path, by reason.")
        .sample(v[MC_C_BYTES_PASS_NO_PEER], label("reason", "peer_not_found"))
        .sample(v[MC_C_BYTES_PASS_STICKY], label("reason", "first_bytes_on_the_wire"));
    Family(o, "meshcut_sockets_enrolled_total", "counter", "Established sockets put in the sockhash, by side.")
        .sample(v[MC_C_SOCK_ADDED_ACTIVE], label("side", "active"))
        .sample(v[MC_C_SOCK_ADDED_PASSIVE], label("side", "passive"));
    Family(o, "meshcut_sockets_skipped_total", "counter", "Established sockets left alone, by reason.")
        .sample(v[MC_C_SOCK_NOT_ENROLLED], label("reason", "not_enrolled"))
        .sample(v[MC_C_SOCK_SKIP_REMOTE], label("reason", "peer_not_on_node"))
        .sample(v[MC_C_SOCK_SKIP_FAMILY], label("reason", "ipv6"))
        .sample(v[MC_C_SOCK_SKIP_EARLY_DATA], label("reason", "early_data"))
        .sample(v[MC_C_SOCK_SKIP_DISABLED], label("reason", "disabled"))
        .sample(v[MC_C_SOCK_ADD_FAILED], label("reason", "map_full"))
        .sample(v[MC_C_SOCK_NO_STORAGE], label("reason", "no_storage"));
    Family(o, "meshcut_socket_directions_redirected_total", "counter",
           "Connection directions whose first send took the shortcut (kept to the end).")
        .sample(v[MC_C_PAIRS_REDIRECTED]);
    Family(o, "meshcut_tc_redirected_packets_total", "counter", "Packets the tc shortcut carried, by path.")
        .sample(v[MC_C_TC_REDIRECT_OVERLAY], label("path", "to_overlay"))
        .sample(v[MC_C_TC_REDIRECT_NEIGH], label("path", "to_overlay_neigh"))
        .sample(v[MC_C_TC_REDIRECT_PEER], label("path", "into_pod"))
        .sample(v[MC_C_TC_REDIRECT_LOCAL], label("path", "pod_to_local_pod"));
    Family(o, "meshcut_tc_passed_packets_total", "counter",
           "Packets the tc programs left on the normal path, by reason.")
        .sample(v[MC_C_TC_PASS_NOT_IP], label("reason", "not_ipv4"))
        .sample(v[MC_C_TC_PASS_FRAGMENT], label("reason", "fragment"))
        .sample(v[MC_C_TC_PASS_NOT_TCP], label("reason", "not_tcp"))
        .sample(v[MC_C_TC_PASS_NOT_POD], label("reason", "not_pod_to_pod"))
        .sample(v[MC_C_TC_PASS_NO_POD], label("reason", "no_pod_record"))
        .sample(v[MC_C_TC_PASS_UNKNOWN_FLOW], label("reason", "unknown_flow"))
        .sample(v[MC_C_TC_PASS_FIB], label("reason", "no_route"))
        .sample(v[MC_C_TC_PASS_DISABLED], label("reason", "disabled"));
    Family(o, "meshcut_tc_flows_reset_total", "counter", "Shortcut flows ended by RST.").sample(v[MC_C_TC_FLOW_RST]);
  }
  if (pods) Family(o, "meshcut_pods_enrolled", "gauge", "Pods enrolled on this node.").sample(pods->size());
  if (usage) {
    Family e(o, "meshcut_map_entries", "gauge", "Entries in meshcut's hash maps.");
    for (const auto& u : *usage)
      if (u.type == BPF_MAP_TYPE_HASH || u.type == BPF_MAP_TYPE_LRU_HASH || u.type == BPF_MAP_TYPE_SOCKHASH)
        e.sample(u.entries, label("map", u.name));
    Family cap(o, "meshcut_map_capacity", "gauge", "Capacity (max_entries) of meshcut's maps.");
    for (const auto& u : *usage)
      if (u.type == BPF_MAP_TYPE_HASH || u.type == BPF_MAP_TYPE_LRU_HASH || u.type == BPF_MAP_TYPE_SOCKHASH)
        cap.sample(u.max_entries, label("map", u.name));
  }
  if (cni) {
    const auto& s = *cni;
    Family(o, "meshcut_cni_commands_total", "counter", "CNI commands the meshcut plugin ran, by command and outcome.")
        .sample(s[MC_S_ADD_ENROLLED], label("command", "ADD") + "," + label("outcome", "enrolled"))
        .sample(s[MC_S_ADD_SKIPPED], label("command", "ADD") + "," + label("outcome", "skipped"))
        .sample(s[MC_S_ADD_FAILED], label("command", "ADD") + "," + label("outcome", "failed_open"))
        .sample(s[MC_S_DEL], label("command", "DEL") + "," + label("outcome", "ok"))
        .sample(s[MC_S_CHECK] - s[MC_S_CHECK_FAILED], label("command", "CHECK") + "," + label("outcome", "ok"))
        .sample(s[MC_S_CHECK_FAILED], label("command", "CHECK") + "," + label("outcome", "failed"));
    Family h(o, "meshcut_cni_add_duration_seconds", "histogram", "Time the meshcut plugin spent in ADD.");
    static constexpr uint64_t bounds[MC_ADD_BUCKETS] = MC_ADD_BUCKET_BOUNDS_US;
    uint64_t cum = 0;
    for (int b = 0; b < MC_ADD_BUCKETS; ++b) {
      cum += s[MC_S_ADD_BUCKET0 + b];
      std::string le = bounds[b] ? std::to_string(bounds[b] / 1e6) : "+Inf";
      if (bounds[b]) {
        std::ostringstream f;
        f << static_cast<double>(bounds[b]) / 1e6;
        le = f.str();
      }
      h.sample(cum, label("le", le), "_bucket");
    }
    o << "meshcut_cni_add_duration_seconds_sum " << static_cast<double>(s[MC_S_ADD_US_SUM]) / 1e6 << "\n";
    o << "meshcut_cni_add_duration_seconds_count " << s[MC_S_ADD] << "\n";
    Family(o, "meshcut_cni_gc_removed_total", "counter", "Pod records removed by CNI GC.").sample(s[MC_S_GC_REMOVED]);
  }
  if (meta) {
    Family f(o, "meshcut_feature", "gauge", "Kernel features meshcutd found at start (1 present, 0 absent).");
    for (auto [bit, name] :
         {std::pair{MC_FEAT_NETNS_COOKIE, "netns_cookie"}, std::pair{MC_FEAT_SOCKHASH, "sockhash"},
          std::pair{MC_FEAT_SK_STORAGE, "sk_storage"}, std::pair{MC_FEAT_FIONREAD_BUG, "fionread_regression"},
          std::pair{MC_FEAT_SKB_VERDICT, "skb_verdict_attached"}})
      f.sample((meta->features & bit) ? 1 : 0, label("feature", name));
  }
  if (cfg) {
    Family(o, "meshcut_enabled", "gauge", "1 while the socket shortcut takes new decisions.").sample(cfg->enabled);
    Family(o, "meshcut_cross_node_enabled", "gauge", "1 while the tc shortcut is on for this node.")
        .sample(cfg->enabled && (cfg->flags & MC_CFG_F_CROSS_NODE) && cfg->pod_cidr ? 1 : 0);
  }
  return o.str();
}

std::string not_ready_reason(const PinLayout& layout) {
  auto maps = PinnedMaps::open(layout);
  if (!maps) return "pins missing: " + maps.error().what;
  auto cfg = maps->config();
  if (!cfg || !cfg->enabled) return "meshcut is disabled (detached?)";
  auto att = attachments_json(layout);
  if (!att["sockops"].value("attached", false)) return "sockops is not attached to its cgroup";
  if (!att["sk_msg"].value("attached", false)) return "sk_msg is not attached to the sockhash";
  if (cfg->overlay_ifindex && !att["tc_overlay"].value("attached", false))
    return "the overlay device has lost meshcut's tc filter";
  return "";
}

namespace {

// The endpoint's limits. A scrape is one small GET answered in milliseconds,
// so every wait is short: a client that is idle, slow or gone costs one worker
// for a bounded time, and a few of them cannot hold the scrapes off.
constexpr size_t kWorkers = 8;        // requests served at once
constexpr ptrdiff_t kMaxConns = 32;   // accepted, not yet done; beyond it accept pauses
constexpr int kBacklog = 64;          // ...and the kernel holds (or refuses) the rest
constexpr time_t kIoTimeoutS = 2;     // each read or write of one request/response
constexpr time_t kKeepAliveS = 2;     // wait for a connection's first and next request
constexpr size_t kKeepAliveMax = 16;  // requests per connection
constexpr size_t kMaxPayload = 4096;  // request body (the endpoints take none): 413 beyond
constexpr int kDeferAcceptS = 30;     // TCP_DEFER_ACCEPT: silent connections stay in the kernel
constexpr auto kStopWait = std::chrono::seconds(5);

constexpr const char* kAddrHint =
    "use HOST:PORT with a numeric address: 127.0.0.1:9464 (the default), [::1]:9464, or 0.0.0.0:9464 / "
    "[::]:9464 for every interface; \"off\" turns the endpoint off";

struct ListenAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;
};

// "HOST:PORT" with a numeric IPv4 host, or "[V6ADDR]:PORT" (a zone as in
// [fe80::1%eth0]:9464 is allowed). Names are refused: the endpoint must not
// depend on DNS at start.
Result<ListenAddr> parse_addr(const std::string& addr) {
  auto bad = [&](const std::string& why) {
    return make_error("invalid --metrics-addr '" + addr + "': " + why, EINVAL, kAddrHint);
  };
  std::string host, port;
  bool v6 = !addr.empty() && addr[0] == '[';
  if (v6) {
    auto close = addr.find(']');
    if (close == std::string::npos || close + 1 >= addr.size() || addr[close + 1] != ':')
      return bad("an IPv6 address in brackets needs :PORT after the ']'");
    host = addr.substr(1, close - 1);
    port = addr.substr(close + 2);
  } else {
    auto colon = addr.rfind(':');
    if (colon == std::string::npos) return bad("no :PORT");
    host = addr.substr(0, colon);
    port = addr.substr(colon + 1);
    if (host.find(':') != std::string::npos) return bad("write an IPv6 address in brackets, e.g. [::1]:9464");
  }
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(port) < 1 || std::stoi(port) > 65535)
    return bad("the port must be a number from 1 to 65535");
  ListenAddr la;
  if (v6) {
    addrinfo hints{};
    hints.ai_family = AF_INET6;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    addrinfo* res = nullptr;
    if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0 || !res)
      return bad("'" + host + "' is not an IPv6 address (" + ::gai_strerror(rc) + ")");
    std::memcpy(&la.ss, res->ai_addr, res->ai_addrlen);
    la.len = static_cast<socklen_t>(res->ai_addrlen);
    ::freeaddrinfo(res);
  } else {
    auto* sa = reinterpret_cast<sockaddr_in*>(&la.ss);
    sa->sin_family = AF_INET;
    sa->sin_port = htons(static_cast<uint16_t>(std::stoi(port)));
    if (::inet_pton(AF_INET, host.c_str(), &sa->sin_addr) != 1) return bad("'" + host + "' is not an IPv4 address");
    la.len = sizeof(sockaddr_in);
  }
  return la;
}

std::string listen_hint(int err) {
  switch (err) {
    case EADDRINUSE:
      return "another process listens there (another meshcutd?): pick another --metrics-addr, or \"off\"";
    case EADDRNOTAVAIL:
      return "no interface of this network namespace has that address: use 127.0.0.1, [::1], 0.0.0.0 or [::]";
    case EAFNOSUPPORT: return "IPv6 is off on this node: use an IPv4 --metrics-addr such as 127.0.0.1:9464";
    case EACCES: return "ports below 1024 need CAP_NET_BIND_SERVICE: pick a port above 1023";
    default: return "pick another --metrics-addr, or \"off\"";
  }
}

// A bound, listening socket for LA.
Result<Fd> listen_on(const ListenAddr& la, const std::string& addr) {
  Fd s(::socket(la.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return make_error("couldn't open a socket for --metrics-addr " + addr, errno, listen_hint(errno));
  int one = 1;
  // A restart must not wait for the last run's connections in TIME_WAIT.
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // Answers go out in one burst; without it a small response waits for a delayed ACK.
  ::setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  // A connection that sends nothing is not accepted until it does: idle
  // clients cost no worker. 30 s is 5 SYN-ACK retransmits, the default
  // tcp_synack_retries, so the kernel drops one that stays silent that long
  // instead of handing it over. Best effort (a syncookie connection skips it).
  int defer = kDeferAcceptS;
  ::setsockopt(s.get(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof(defer));
  if (::bind(s.get(), reinterpret_cast<const sockaddr*>(&la.ss), la.len) != 0 || ::listen(s.get(), kBacklog) != 0) {
    int e = errno;
    return make_error("couldn't listen on " + addr + " for /metrics", e, listen_hint(e));
  }
  return s;
}

// httplib's pool with a bound on accepted connections: when kMaxConns are in
// (kWorkers served, the rest queued), enqueue blocks the accept loop, so a
// flood waits in the listen backlog instead of holding descriptors here.
class BoundedPool : public httplib::TaskQueue {
 public:
  BoundedPool() : pool_(kWorkers), slots_(kMaxConns) {}
  void enqueue(std::function<void()> fn) override {
    slots_.acquire();
    pool_.enqueue([this, fn = std::move(fn)] {
      fn();
      slots_.release();
    });
  }
  void shutdown() override { pool_.shutdown(); }

 private:
  httplib::ThreadPool pool_;
  std::counting_semaphore<kMaxConns> slots_;
};

// httplib on a socket we bound ourselves (for the errno, the backlog and
// TCP_DEFER_ACCEPT, which bind_to_port does not give).
class Endpoint : public httplib::Server {
 public:
  // Serves on FD (httplib owns it from here) until shut; false after an accept error.
  bool serve(int fd) {
    svr_sock_ = fd;
    return listen_after_bind();
  }
  // Ends the accept loop and the keep-alive loops of the workers; a blocked
  // accept() is woken by shutdown() on our duplicate (Http::stop). httplib then
  // leaves its descriptor open: stop is for the process exit, which closes it.
  void leave() { svr_sock_ = INVALID_SOCKET; }
};

// The process's one endpoint: a thread that serves until stop(), which the
// static's destructor calls at exit, so no worker runs while exit() tears the
// process down.
class Http {
 public:
  ~Http() { stop(); }

  Status start(const std::string& addr, const ListenAddr& la, Fd sock, const PinLayout& layout) {
    if (thread_.joinable()) return make_error("the /metrics endpoint is already serving", EALREADY);
    srv_ = std::make_unique<Endpoint>();
    route(*srv_, layout);
    ctl_ = Fd(::fcntl(sock.get(), F_DUPFD_CLOEXEC, 0));
    if (!ctl_.valid()) return make_error("couldn't duplicate the /metrics socket", errno);
    thread_ = std::thread([this, addr, la, fd = sock.release()] { run(addr, la, fd); });
    return ok_status();
  }

  void stop() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard l(mu_);
      stopping_ = true;
      srv_->leave();
      // On the listening socket itself: a blocked accept() returns EINVAL.
      if (ctl_.valid()) ::shutdown(ctl_.get(), SHUT_RDWR);
    }
    cv_.notify_all();
    std::unique_lock l(mu_);
    if (cv_.wait_for(l, kStopWait, [&] { return done_; })) {
      l.unlock();
      thread_.join();
      return;
    }
    // A worker stuck past every timeout: leave it the server rather than free
    // what it uses.
    log::warn("the /metrics endpoint did not stop in time; leaving it to the process exit");
    thread_.detach();
    (void)srv_.release();
  }

 private:
  static void route(Endpoint& s, const PinLayout& layout) {
    s.set_read_timeout(kIoTimeoutS);
    s.set_write_timeout(kIoTimeoutS);
    s.set_keep_alive_timeout(kKeepAliveS);
    s.set_keep_alive_max_count(kKeepAliveMax);
    s.set_payload_max_length(kMaxPayload);
    s.new_task_queue = [] { return new BoundedPool(); };
    const char* text = "text/plain; charset=utf-8";
    s.Get("/metrics", [layout](const httplib::Request&, httplib::Response& res) {
      res.set_content(render_metrics(layout), "text/plain; version=0.0.4; charset=utf-8");
    });
    s.Get("/healthz", [text](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", text); });
    s.Get("/readyz", [layout, text](const httplib::Request&, httplib::Response& res) {
      std::string why = not_ready_reason(layout);
      res.status = why.empty() ? 200 : 503;
      res.set_content(why.empty() ? "ready\n" : "not ready: " + why + "\n", text);
    });
    s.set_error_handler([text](const httplib::Request&, httplib::Response& res) {
      if (res.status == 404) res.set_content("not found: try /metrics, /healthz, /readyz\n", text);
    });
    s.set_exception_handler([text](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown exception";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      log::error("the /metrics endpoint failed a request", {{"path", req.path}, {"error", what}});
      res.status = 500;
      res.set_content("internal error: see meshcutd's log\n", text);
    });
  }

  void run(const std::string& addr, const ListenAddr& la, int fd) {
    // A peer that closes before its answer is written must cost an EPIPE, not
    // the process: httplib 0.11 sends without MSG_NOSIGNAL. The workers are
    // started from this thread and inherit the mask (as they do the stop
    // signals main() blocked).
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    for (;;) {
      {
        std::lock_guard l(mu_);
        if (stopping_) break;
      }
      srv_->serve(fd);
      int err = errno;
      std::unique_lock l(mu_);
      if (stopping_) break;
      // httplib ends its loop (and closes the socket) on an accept error other
      // than EMFILE, after which it sleeps 1 ms per try: listen again, once a second.
      log::warn("the /metrics endpoint stopped accepting; listening again in 1 s",
                {{"addr", addr}, {"error", errno_text(err)}});
      fd = -1;
      while (fd < 0) {
        if (cv_.wait_for(l, std::chrono::seconds(1), [&] { return stopping_; })) break;
        auto s = listen_on(la, addr);
        if (!s) {
          log::warn("couldn't listen again for /metrics; trying each second", {{"error", s.error().format()}});
          continue;
        }
        ctl_ = Fd(::fcntl(s->get(), F_DUPFD_CLOEXEC, 0));
        fd = s->release();
      }
      if (stopping_) break;
    }
    std::lock_guard l(mu_);
    done_ = true;
    cv_.notify_all();
  }

  std::unique_ptr<Endpoint> srv_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool done_ = false;
  Fd ctl_;  // a duplicate of the listening socket, to wake accept() at stop
};

}  // namespace

Status check_http_addr(const std::string& addr) {
  if (addr.empty() || addr == "off") return ok_status();
  if (auto la = parse_addr(addr); !la) return la.error();
  return ok_status();
}

Status start_http(const std::string& addr, const PinLayout& layout) {
  if (addr.empty() || addr == "off") return ok_status();
  auto la = parse_addr(addr);
  if (!la) return la.error();
  auto sock = listen_on(*la, addr);
  if (!sock) return sock.error();
  static Http http;  // destroyed (stopped and joined) at exit, before log's state
  if (auto st = http.start(addr, *la, std::move(*sock), layout); !st) return st;
  log::info("serving /metrics, /healthz, /readyz",
            {{"addr", addr}, {"workers", kWorkers}, {"max_connections", kMaxConns}, {"timeout_s", kIoTimeoutS}});
  return ok_status();
}

}  // namespace meshcut::daemon
