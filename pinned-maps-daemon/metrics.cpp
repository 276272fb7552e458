// SPDX-License-Identifier: Apache-2.0
#include "metrics.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <linux/bpf.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>
#include <string_view>

#include "http_server.h"
#include "loader.h"
#include "meshcut/abi.h"
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

namespace {
std::mutex extra_mu;
std::function<std::string()> extra_metrics;
}  // namespace

void set_extra_metrics(std::function<std::string()> fn) {
  std::lock_guard<std::mutex> g(extra_mu);
  extra_metrics = std::move(fn);
}

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

constexpr const char* kAddrHint =
    "use HOST:PORT with a numeric address: 127.0.0.1:9464 (the default), [::1]:9464, or 0.0.0.0:9464 / "
    "[::]:9464 for every interface; \"off\" turns the endpoint off";

// "HOST:PORT" with a numeric IPv4 host, or "[V6ADDR]:PORT" (a zone as in
// [fe80::1%eth0]:9464 is allowed). Names are refused: the endpoint must not
// depend on DNS at start.
Result<http::Listen> parse_addr(const std::string& addr) {
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
  http::Listen la{.addr = addr, .flag = "--metrics-addr", .what = "/metrics"};
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

void route(httplib::Server& s, const PinLayout& layout) {
  const char* text = "text/plain; charset=utf-8";
  s.Get("/metrics", [layout](const httplib::Request&, httplib::Response& res) {
    std::string body = render_metrics(layout);
    {
      std::lock_guard<std::mutex> g(extra_mu);
      if (extra_metrics) body += extra_metrics();
    }
    res.set_content(body, "text/plain; version=0.0.4; charset=utf-8");
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
    log::error("the /metrics endpoint failed a request", {{"path", req.path}, {"error", http::exception_text(ep)}});
    res.status = 500;
    res.set_content("internal error: see meshcutd's log\n", text);
  });
}

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
  // The process's one endpoint, destroyed (stopped and joined) at exit, before
  // log's state, so no worker runs while exit() tears the process down.
  static http::Service service;
  if (auto st = service.start(std::move(*la), [&](httplib::Server& s) { route(s, layout); }); !st) return st;
  log::info("serving /metrics, /healthz, /readyz", {{"addr", addr},
                                                    {"workers", http::kWorkers},
                                                    {"max_connections", http::kMaxConns},
                                                    {"timeout_s", http::kIoTimeoutS}});
  return ok_status();
}

}  // namespace meshcut::daemon
