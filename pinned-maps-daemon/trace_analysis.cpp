// SPDX-License-Identifier: Apache-2.0
// `meshcutd trace`, the analysis: see trace_analysis.h.
//
// Correlation (analyze_trace), from the events alone:
//  1. sockets: one per socket cookie, with its netns, 4-tuple, owner (tgid, uid,
//     comm) and its events cut into phases (a run of sends, or of recvs);
//  2. connections: socket A's local endpoint is socket B's remote endpoint
//     (loopback endpoints scoped by netns). That holds for all three Table 2
//     pairs: (1)/(2) share the client endpoint, (3)/(4) the sidecar's
//     endpoint, (5)/(6) are mirror images; when several sockets qualify (a
//     server's listening endpoint), the mirror image wins;
//  3. proxy links: inside a proxy process (uid --proxy-uid, Istio's 1337) a
//     send of n bytes on socket Y votes for the socket X on which the process
//     last received n bytes; each socket is linked with its best-voted other
//     socket when the vote is mutual ((2)<->(3), (4)<->(5));
//  4. chains: from an app socket, peer, link, peer, ... to the app socket at
//     the other end; the end that sent first is the client;
//  5. requests: each send phase of the client socket walks the chain forward
//     (next phase of the expected direction on each socket whose last event is
//     not before the previous phase's first) and back. Timestamps are those of
//     each phase's last event, so the parts add up to the client's latency:
//       kernel  recv(peer) - send       each of the 2n-1 connections x 2 directions
//       proxy   send(next) - recv       each sidecar link x 2 directions
//       app     send(6) - recv(6)       the server app
#include "trace_analysis.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <tuple>
#include <unordered_map>

#include "meshcut/sys.h"

namespace meshcut::daemon {

double round3(double v) { return std::round(v * 1000.0) / 1000.0; }

namespace {

using nlohmann::json;

// ---------------------------------------------------------------- helpers

std::string ep_str(uint32_t ip, uint16_t port) { return sys::ipv4_str(ip) + ":" + std::to_string(port); }

bool loopback(uint32_t be) { return (ntohl(be) >> 24) == 127; }

double ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  // nearest rank
  size_t k = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  if (k == 0) k = 1;
  return v[std::min(k, v.size()) - 1];
}

json stats(const std::vector<double>& v, double total_avg) {
  double sum = 0;
  for (double x : v) sum += x;
  double avg = v.empty() ? 0 : sum / static_cast<double>(v.size());
  json j{{"avg_ms", round3(avg)},
         {"p50_ms", round3(percentile(v, 50))},
         {"p90_ms", round3(percentile(v, 90))},
         {"n", v.size()}};
  if (total_avg > 0) j["share"] = round3(avg / total_avg);
  return j;
}

// ---------------------------------------------------------------- model

struct Phase {
  uint8_t dir;
  uint64_t first, last;  // ns
  uint64_t bytes;
};

struct Sock {
  uint64_t key = 0;
  uint64_t netns = 0;
  uint32_t lip = 0, rip = 0;
  uint16_t lport = 0, rport = 0;
  uint32_t tgid = 0, uid = 0;
  std::string comm;
  std::vector<Phase> phases;
  uint64_t first_send = UINT64_MAX;
  int peer = -1, link = -1;
  bool proxy = false;
};

using Endpoint = std::tuple<uint32_t, uint16_t, uint64_t>;  // ip, port, scope (netns for loopback)

Endpoint local_ep(const Sock& s) { return {s.lip, s.lport, loopback(s.lip) ? s.netns : 0}; }
Endpoint remote_ep(const Sock& s) { return {s.rip, s.rport, loopback(s.rip) ? s.netns : 0}; }

json sock_json(const Sock& s, const std::map<uint64_t, std::string>& labels, int n) {
  auto l = labels.find(s.netns);
  return json{{"n", n},
              {"role", s.proxy ? "proxy" : "app"},
              {"comm", s.comm},
              {"tgid", s.tgid},
              {"uid", s.uid},
              {"pod", l != labels.end() ? l->second : std::to_string(s.netns)},
              {"local", ep_str(s.lip, s.lport)},
              {"remote", ep_str(s.rip, s.rport)}};
}

struct Hop {
  std::string name;  // "1->2"
  std::string kind;  // proxy | kernel | app
  std::string dir;   // request | response
  std::string who;   // comm of the process the time is spent in (or "kernel")
  std::vector<double> v;
};

// "a.b.c.d:port" -> (network-order ip, port).
std::optional<std::pair<uint32_t, uint16_t>> parse_ep(const std::string& s) {
  auto c = s.rfind(':');
  if (c == std::string::npos) return std::nullopt;
  in_addr a{};
  if (inet_pton(AF_INET, s.substr(0, c).c_str(), &a) != 1) return std::nullopt;
  unsigned long port = std::strtoul(s.c_str() + c + 1, nullptr, 10);
  if (port > 65535) return std::nullopt;
  return std::pair<uint32_t, uint16_t>{a.s_addr, static_cast<uint16_t>(port)};
}

}  // namespace

json trace_event_json(const mc_trace_event& e) {
  return json{{"ts_ns", e.ts_ns},
              {"dir", e.dir == MC_TRACE_DIR_SEND ? "send" : "recv"},
              {"bytes", e.bytes},
              {"tgid", e.tgid},
              {"pid", e.pid},
              {"uid", e.uid},
              {"comm", std::string(e.comm, strnlen(e.comm, sizeof(e.comm)))},
              {"sock_cookie", e.sock_cookie},
              {"netns_cookie", e.netns_cookie},
              {"local", ep_str(e.local_ip, e.local_port)},
              {"remote", ep_str(e.remote_ip, e.remote_port)}};
}

std::optional<mc_trace_event> trace_event_from_json(const json& j) {
  try {
    mc_trace_event e{};
    e.ts_ns = j.at("ts_ns").get<uint64_t>();
    const auto dir = j.at("dir").get<std::string>();
    if (dir != "send" && dir != "recv") return std::nullopt;
    e.dir = dir == "send" ? MC_TRACE_DIR_SEND : MC_TRACE_DIR_RECV;
    e.bytes = j.at("bytes").get<uint32_t>();
    e.tgid = j.at("tgid").get<uint32_t>();
    e.pid = j.at("pid").get<uint32_t>();
    e.uid = j.at("uid").get<uint32_t>();
    const auto comm = j.at("comm").get<std::string>();
    std::memcpy(e.comm, comm.data(), std::min(comm.size(), sizeof(e.comm) - 1));
    e.sock_cookie = j.at("sock_cookie").get<uint64_t>();
    e.netns_cookie = j.at("netns_cookie").get<uint64_t>();
    auto l = parse_ep(j.at("local").get<std::string>());
    auto r = parse_ep(j.at("remote").get<std::string>());
    if (!l || !r) return std::nullopt;
    std::tie(e.local_ip, e.local_port) = *l;
    std::tie(e.remote_ip, e.remote_port) = *r;
    return e;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

json analyze_trace(const std::vector<mc_trace_event>& events, uint32_t proxy_uid,
                   const std::map<uint64_t, std::string>& labels, uint64_t pod_filter) {
  // 1. sockets and phases, in time order.
  std::vector<size_t> order(events.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return events[a].ts_ns < events[b].ts_ns; });
  std::vector<Sock> socks;
  std::unordered_map<uint64_t, int> by_key;
  for (size_t i : order) {
    const auto& e = events[i];
    uint64_t key = e.sock_cookie ? e.sock_cookie : (e.sock_id | (1ull << 63));
    auto it = by_key.find(key);
    int si;
    if (it == by_key.end()) {
      si = static_cast<int>(socks.size());
      by_key[key] = si;
      Sock s;
      s.key = key;
      s.netns = e.netns_cookie;
      s.lip = e.local_ip;
      s.rip = e.remote_ip;
      s.lport = e.local_port;
      s.rport = e.remote_port;
      s.tgid = e.tgid;
      s.uid = e.uid;
      s.comm.assign(e.comm, strnlen(e.comm, sizeof(e.comm)));
      s.proxy = e.uid == proxy_uid;
      socks.push_back(std::move(s));
    } else {
      si = it->second;
    }
    Sock& s = socks[si];
    if (e.dir == MC_TRACE_DIR_SEND) s.first_send = std::min<uint64_t>(s.first_send, e.ts_ns);
    if (!s.phases.empty() && s.phases.back().dir == e.dir) {
      s.phases.back().last = e.ts_ns;
      s.phases.back().bytes += e.bytes;
    } else {
      s.phases.push_back({e.dir, e.ts_ns, e.ts_ns, e.bytes});
    }
  }

  // 2. connections.
  std::map<Endpoint, std::vector<int>> by_remote;
  for (int i = 0; i < static_cast<int>(socks.size()); ++i) by_remote[remote_ep(socks[i])].push_back(i);
  for (int i = 0; i < static_cast<int>(socks.size()); ++i) {
    Sock& s = socks[i];
    if (s.peer >= 0) continue;
    auto it = by_remote.find(local_ep(s));
    if (it == by_remote.end()) continue;
    std::vector<int> cands;
    for (int j : it->second)
      if (j != i && socks[j].peer < 0) cands.push_back(j);
    int pick = -1;
    for (int j : cands)
      if (local_ep(socks[j]) == remote_ep(s)) pick = j;  // mirror image
    if (pick < 0 && cands.size() == 1) pick = cands[0];
    if (pick < 0) continue;
    s.peer = pick;
    socks[pick].peer = i;
  }

  // 3. proxy links: votes inside each proxy process.
  std::map<std::pair<int, int>, int> votes;
  {
    struct Rx {
      int sock;
      uint32_t bytes;
      bool used;
    };
    std::unordered_map<uint32_t, std::vector<Rx>> recent;  // tgid -> recent recvs
    for (size_t i : order) {
      const auto& e = events[i];
      if (e.uid != proxy_uid) continue;
      uint64_t key = e.sock_cookie ? e.sock_cookie : (e.sock_id | (1ull << 63));
      int si = by_key[key];
      auto& rx = recent[e.tgid];
      if (e.dir == MC_TRACE_DIR_RECV) {
        rx.push_back({si, e.bytes, false});
        if (rx.size() > 256) rx.erase(rx.begin(), rx.begin() + 128);
        continue;
      }
      int exact = -1, other = -1;
      for (int k = static_cast<int>(rx.size()) - 1; k >= 0 && k >= static_cast<int>(rx.size()) - 64; --k) {
        if (rx[k].used || rx[k].sock == si || rx[k].sock == socks[si].peer) continue;
        if (other < 0) other = k;
        if (rx[k].bytes == e.bytes) {
          exact = k;
          break;
        }
      }
      int k = exact >= 0 ? exact : other;
      if (k < 0) continue;
      rx[k].used = true;
      int a = std::min(si, rx[k].sock), b = std::max(si, rx[k].sock);
      votes[{a, b}] += exact >= 0 ? 2 : 1;
    }
  }
  {
    std::vector<std::pair<int, int>> best(socks.size(), {-1, 0});  // other, votes
    for (const auto& [ab, n] : votes) {
      auto [a, b] = ab;
      if (n > best[a].second) best[a] = {b, n};
      if (n > best[b].second) best[b] = {a, n};
    }
    for (int i = 0; i < static_cast<int>(socks.size()); ++i) {
      int j = best[i].first;
      if (j >= 0 && best[j].first == i) socks[i].link = j;
    }
  }

  // 4. chains, from the client app socket.
  std::vector<std::vector<int>> chains;
  int incomplete_chains = 0;
  std::set<int> in_chain;
  for (int i = 0; i < static_cast<int>(socks.size()); ++i) {
    const Sock& s = socks[i];
    if (s.proxy || s.peer < 0 || in_chain.count(i)) continue;
    std::vector<int> c{i};
    bool ok = false;
    int cur = i;
    std::set<int> seen{i};
    for (int guard = 0; guard < 16; ++guard) {
      int p = socks[cur].peer;
      if (p < 0 || seen.count(p)) break;
      c.push_back(p);
      seen.insert(p);
      if (!socks[p].proxy) {
        ok = true;
        break;
      }
      int q = socks[p].link;
      if (q < 0 || seen.count(q)) break;
      c.push_back(q);
      seen.insert(q);
      cur = q;
    }
    if (!ok) {
      ++incomplete_chains;
      continue;
    }
    // The client is the end that sent first.
    if (socks[c.back()].first_send < socks[c.front()].first_send) std::reverse(c.begin(), c.end());
    for (int x : c) in_chain.insert(x);
    if (pod_filter && socks[c.front()].netns != pod_filter && socks[c.back()].netns != pod_filter) continue;
    chains.push_back(std::move(c));
  }

  // 5. requests.
  std::map<std::string, Hop> hops;  // by name; ordered separately below
  std::vector<std::string> hop_order;
  auto hop = [&](const std::string& name, const std::string& kind, const std::string& dir,
                 const std::string& who) -> Hop& {
    auto it = hops.find(name);
    if (it == hops.end()) {
      hop_order.push_back(name);
      it = hops.emplace(name, Hop{name, kind, dir, who, {}}).first;
    }
    return it->second;
  };
  std::vector<double> v_total, v_proxy, v_kernel, v_app;
  json reqs = json::array();
  json chains_j = json::array();
  int incomplete_requests = 0;
  uint64_t t0 = events.empty() ? 0 : events[order[0]].ts_ns;
  for (const auto& c : chains) {
    const int n = static_cast<int>(c.size());  // sockets, numbered 1..n as in Table 2
    std::vector<size_t> cursor(n, 0);
    // next phase of DIR on chain socket K (0-based) whose last event is not before NOT_BEFORE.
    auto next = [&](int k, uint8_t dir, uint64_t not_before) -> const Phase* {
      const auto& ph = socks[c[k]].phases;
      for (size_t p = cursor[k]; p < ph.size(); ++p) {
        if (ph[p].dir == dir && ph[p].last >= not_before) {
          cursor[k] = p + 1;
          return &ph[p];
        }
      }
      return nullptr;
    };
    json cj = json::array();
    for (int k = 0; k < n; ++k) cj.push_back(sock_json(socks[c[k]], labels, k + 1));
    int done = 0;
    const auto& client_phases = socks[c[0]].phases;
    for (size_t p0 = 0; p0 < client_phases.size(); ++p0) {
      if (client_phases[p0].dir != MC_TRACE_DIR_SEND) continue;
      if (p0 < cursor[0]) continue;
      cursor[0] = p0 + 1;
      const Phase* prev = &client_phases[p0];
      // forward: send on 1, recv on 2, send on 3, ..., recv on n; app; back.
      std::vector<const Phase*> fwd(n, nullptr), back(n, nullptr);
      fwd[0] = prev;
      bool ok = true;
      for (int k = 1; k < n && ok; ++k) {
        uint8_t dir = (k % 2 == 1) ? MC_TRACE_DIR_RECV : MC_TRACE_DIR_SEND;
        fwd[k] = next(k, dir, prev->first);
        ok = fwd[k] != nullptr;
        if (ok) prev = fwd[k];
      }
      for (int k = n - 1; k >= 0 && ok; --k) {
        uint8_t dir = (k % 2 == 1) ? MC_TRACE_DIR_SEND : MC_TRACE_DIR_RECV;
        back[k] = next(k, dir, prev->first);
        ok = back[k] != nullptr;
        if (ok) prev = back[k];
      }
      if (!ok) {
        ++incomplete_requests;
        continue;
      }
      double kernel = 0, proxy = 0, app = 0;
      auto name = [](int a, int b) { return std::to_string(a + 1) + "->" + std::to_string(b + 1); };
      for (int k = 0; k + 1 < n; ++k) {
        double d = ms(static_cast<int64_t>(fwd[k + 1]->last - fwd[k]->last));
        if (k % 2 == 0) {
          kernel += d;
          hop(name(k, k + 1), "kernel", "request", "kernel").v.push_back(d);
        } else {
          proxy += d;
          hop(name(k, k + 1), "proxy", "request", socks[c[k]].comm).v.push_back(d);
        }
      }
      double a = ms(static_cast<int64_t>(back[n - 1]->last - fwd[n - 1]->last));
      app += a;
      hop("app " + std::to_string(n), "app", "request->response", socks[c[n - 1]].comm).v.push_back(a);
      for (int k = n - 1; k > 0; --k) {
        double d = ms(static_cast<int64_t>(back[k - 1]->last - back[k]->last));
        if (k % 2 == 1) {
          kernel += d;
          hop(name(k, k - 1), "kernel", "response", "kernel").v.push_back(d);
        } else {
          proxy += d;
          hop(name(k, k - 1), "proxy", "response", socks[c[k]].comm).v.push_back(d);
        }
      }
      double total = ms(static_cast<int64_t>(back[0]->last - fwd[0]->last));
      v_total.push_back(total);
      v_proxy.push_back(proxy);
      v_kernel.push_back(kernel);
      v_app.push_back(app);
      ++done;
      if (reqs.size() < 10000)
        reqs.push_back({{"t_ms", round3(ms(static_cast<int64_t>(fwd[0]->first - t0)))},
                        {"sockets", n},
                        {"total_ms", round3(total)},
                        {"proxy_ms", round3(proxy)},
                        {"kernel_ms", round3(kernel)},
                        {"app_ms", round3(app)},
                        {"request_bytes", fwd[0]->bytes},
                        {"response_bytes", back[0]->bytes}});
    }
    chains_j.push_back({{"sockets", cj}, {"requests", done}});
  }

  double tavg = 0;
  for (double x : v_total) tavg += x;
  tavg = v_total.empty() ? 0 : tavg / static_cast<double>(v_total.size());
  json hops_j = json::array();
  for (const auto& nm : hop_order) {
    const Hop& h = hops[nm];
    json j = stats(h.v, tavg);
    j["hop"] = h.name;
    j["kind"] = h.kind;
    j["dir"] = h.dir;
    j["who"] = h.who;
    hops_j.push_back(j);
  }
  int paired = 0, linked = 0, proxies = 0;
  for (const auto& s : socks) {
    paired += s.peer >= 0;
    linked += s.link >= 0;
    proxies += s.proxy;
  }
  return json{{"requests", v_total.size()},
              {"incomplete_requests", incomplete_requests},
              {"incomplete_chains", incomplete_chains},
              {"sockets", {{"seen", socks.size()}, {"paired", paired}, {"proxy", proxies}, {"proxy_linked", linked}}},
              {"parts",
               {{"proxy", stats(v_proxy, tavg)},
                {"kernel", stats(v_kernel, tavg)},
                {"app", stats(v_app, tavg)},
                {"total", stats(v_total, tavg)}}},
              {"hops", hops_j},
              {"chains", chains_j},
              {"request_list", reqs}};
}

}  // namespace meshcut::daemon
