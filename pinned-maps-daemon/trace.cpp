// SPDX-License-Identifier: Apache-2.0
// `meshcutd trace`: see trace.h.
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
#include "trace.h"

#include "cli.h"
#include "probe.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <tuple>
#include <unordered_map>

#include "mc_latency.skel.h"
#include "meshcut/abi.h"
#include "meshcut/error.h"
#include "meshcut/log.h"
#include "meshcut/maps.h"
#include "meshcut/pins.h"
#include "meshcut/skel.h"
#include "meshcut/sys.h"

MESHCUT_SKEL(mc_latency);

namespace meshcut::daemon {

namespace {

using nlohmann::json;

// ---------------------------------------------------------------- helpers

std::string ip_str(uint32_t be) {
  char b[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &be, b, sizeof(b));
  return b;
}

std::string ep_str(uint32_t ip, uint16_t port) { return ip_str(ip) + ":" + std::to_string(port); }

bool loopback(uint32_t be) { return (ntohl(be) >> 24) == 127; }

uint64_t mono_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

double ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }
double round3(double v) { return std::round(v * 1000.0) / 1000.0; }

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
  json j{{"avg_ms", round3(avg)}, {"p50_ms", round3(percentile(v, 50))}, {"p90_ms", round3(percentile(v, 90))},
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

}  // namespace

json analyze_trace(const std::vector<mc_trace_event>& events, uint32_t proxy_uid,
                   const std::map<uint64_t, std::string>& labels, uint64_t pod_filter) {
  // 1. sockets and phases, in time order.
  std::vector<size_t> order(events.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return events[a].ts_ns < events[b].ts_ns; });
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

// ---------------------------------------------------------------- kernel side

namespace {

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

Result<double> parse_duration(const std::string& s) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(s, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  std::string unit = s.substr(pos);
  double mult = unit.empty() || unit == "s" ? 1 : unit == "ms" ? 1e-3 : unit == "m" ? 60 : -1;
  if (pos == 0 || mult < 0 || v <= 0)
    return make_error("invalid --duration '" + s + "'", EINVAL, "use e.g. 10s, 500ms or 2m");
  return v * mult;
}

struct Target {
  std::map<uint64_t, std::string> labels;  // netns cookie -> name
  uint64_t pod_filter = 0;
};

Result<Target> resolve_targets(const TraceOptions& o) {
  Target t;
  if (!o.netns.empty()) {
    for (const auto& p : o.netns) {
      auto c = sys::netns_cookie(p);
      if (!c) return c.error();
      t.labels[*c] = p.substr(p.rfind('/') + 1);
    }
  }
  std::optional<PinnedMaps> maps;
  if (o.netns.empty() || !o.pod.empty()) {
    auto m = PinnedMaps::open(PinLayout(o.pin_root));
    if (!m)
      return make_error("no enrolled pods to trace: " + m.error().what, m.error().err,
                        "start meshcutd (and enroll pods), or name the namespaces with --netns PATH");
    maps = std::move(*m);
  }
  std::map<uint64_t, std::string> names;
  if (maps) {
    if (auto recs = maps->cni_pods())
      for (const auto& [k, r] : *recs) {
        std::string ns(r.pod_namespace, strnlen(r.pod_namespace, sizeof(r.pod_namespace)));
        std::string nm(r.pod_name, strnlen(r.pod_name, sizeof(r.pod_name)));
        if (!nm.empty()) names[r.netns_cookie] = ns + "/" + nm;
      }
  }
  if (o.netns.empty()) {
    auto pods = maps->pods();
    if (!pods) return pods.error();
    for (const auto& [cookie, pod] : *pods) {
      auto n = names.find(cookie);
      t.labels[cookie] = n != names.end() ? n->second : "pod " + ip_str(pod.ip4[0]);
    }
  }
  if (!o.pod.empty()) {
    for (const auto& [c, nm] : names)
      if (nm == o.pod) t.pod_filter = c;
    if (!t.pod_filter)
      return make_error("pod '" + o.pod + "' is not enrolled", ENOENT,
                        "meshcutd pods lists the enrolled pods (NAMESPACE/NAME)");
    if (!t.labels.count(t.pod_filter)) t.labels[t.pod_filter] = o.pod;
  }
  if (t.labels.empty())
    return make_error("no pod is enrolled in " + o.pin_root, ENOENT,
                      "enroll pods (CNI, or meshcutd enroll; meshcutd pods lists them), or name the namespaces with "
                      "--netns PATH");
  return t;
}

bool has_btf_tracepoint() {
  struct btf* vm = btf__load_vmlinux_btf();
  if (!vm) return false;
  bool ok = btf__find_by_name_kind(vm, "btf_trace_sock_send_length", BTF_KIND_TYPEDEF) > 0 &&
            btf__find_by_name_kind(vm, "btf_trace_sock_recv_length", BTF_KIND_TYPEDEF) > 0;
  btf__free(vm);
  return ok;
}

struct Loaded {
  std::shared_ptr<mc_latency> skel;
  std::string hook;
  bpf_program* send = nullptr;
  bpf_program* recv = nullptr;
};

Result<Loaded> load(bool typed) {
  Loaded l;
  l.skel = open_skel<mc_latency>();
  if (!l.skel) return make_error("couldn't open the trace object", errno);
  auto* sk = l.skel.get();
  latency_select(sk, typed);
  if (int err = SkelOps<mc_latency>::load(sk); err) {
    return make_error(std::string("couldn't load the ") + (typed ? "tp_btf" : "raw_tp") + " trace programs", -err);
  }
  l.send = typed ? sk->progs.mct_send_btf : sk->progs.mct_send_raw;
  l.recv = typed ? sk->progs.mct_recv_btf : sk->progs.mct_recv_raw;
  l.hook = typed ? "tp_btf" : "raw_tp";
  return l;
}

struct ProgStats {
  uint64_t run_ns = 0, runs = 0;
};
ProgStats prog_stats(bpf_program* p) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  ProgStats s;
  if (bpf_obj_get_info_by_fd(bpf_program__fd(p), &info, &len) == 0) {
    s.run_ns = info.run_time_ns;
    s.runs = info.run_cnt;
  }
  return s;
}

void print_human(const json& r) {
  const auto& k = r["kernel_side"];
  std::printf("meshcut trace: %.1f s on %zu netns, hooks %s sock:sock_send_length/sock_recv_length\n",
              r["duration_s"].get<double>(), r["netns"].size(), k["hook"].get<std::string>().c_str());
  std::printf("events %llu (lost %llu), sockets %llu (paired %llu, proxy %llu, proxy-linked %llu)\n",
              k["events"].get<unsigned long long>(), k["lost"].get<unsigned long long>(),
              r["sockets"]["seen"].get<unsigned long long>(), r["sockets"]["paired"].get<unsigned long long>(),
              r["sockets"]["proxy"].get<unsigned long long>(), r["sockets"]["proxy_linked"].get<unsigned long long>());
  const auto& ov = r["overhead"];
  std::printf("overhead while tracing: %.0f ns per hook run (%llu runs, all sockets), %.3f%% of the CPUs; "
              "reader %.1f ms CPU; none when not tracing (detached)\n",
              ov["bpf_ns_per_run"].get<double>(), ov["bpf_runs"].get<unsigned long long>(),
              ov["bpf_cpu_share"].get<double>() * 100, ov["reader_cpu_ms"].get<double>());
  std::printf("requests %llu complete, %llu incomplete (chains without both ends traced: %llu)\n\n",
              r["requests"].get<unsigned long long>(), r["incomplete_requests"].get<unsigned long long>(),
              r["incomplete_chains"].get<unsigned long long>());
  std::printf("%-13s %10s %10s %10s %7s\n", "part", "avg ms", "p50 ms", "p90 ms", "share");
  for (const char* p : {"proxy", "kernel", "app", "total"}) {
    const auto& s = r["parts"][p];
    std::printf("%-13s %10.3f %10.3f %10.3f %6.1f%%\n", std::string(p) == "kernel" ? "kernel/net" : p,
                s["avg_ms"].get<double>(), s["p50_ms"].get<double>(), s["p90_ms"].get<double>(),
                s.value("share", 0.0) * 100);
  }
  if (!r["hops"].empty()) {
    std::printf("\nper hop (sockets numbered as in Table 2: 1 client app ... n server app)\n");
    std::printf("%-8s %-7s %-17s %-16s %10s %10s %10s %7s\n", "hop", "kind", "dir", "who", "avg ms", "p50 ms",
                "p90 ms", "share");
    for (const auto& h : r["hops"])
      std::printf("%-8s %-7s %-17s %-16s %10.3f %10.3f %10.3f %6.1f%%\n", h["hop"].get<std::string>().c_str(),
                  h["kind"].get<std::string>().c_str(), h["dir"].get<std::string>().c_str(),
                  h["who"].get<std::string>().c_str(), h["avg_ms"].get<double>(), h["p50_ms"].get<double>(),
                  h["p90_ms"].get<double>(), h.value("share", 0.0) * 100);
  }
  for (const auto& c : r["chains"]) {
    std::printf("\nchain (%llu requests):\n", c["requests"].get<unsigned long long>());
    for (const auto& s : c["sockets"])
      std::printf("  (%d) %-5s %-15s uid %-5u %-21s -> %-21s %s\n", s["n"].get<int>(),
                  s["role"].get<std::string>().c_str(), s["comm"].get<std::string>().c_str(),
                  s["uid"].get<unsigned>(), s["local"].get<std::string>().c_str(),
                  s["remote"].get<std::string>().c_str(), s["pod"].get<std::string>().c_str());
  }
}

}  // namespace

CLI::App* add_trace_subcommand(CLI::App& app, TraceOptions& o) {
  auto* t = app.add_subcommand("trace", "follow requests through apps and sidecars: where the latency goes");
  t->add_option("--duration", o.duration, "how long to trace (10s, 500ms, 2m)")->capture_default_str();
  auto* pod = t->add_option("--pod", o.pod, "NAMESPACE/NAME: only requests from or to this enrolled pod");
  auto* ns = t->add_option("--netns", o.netns, "trace these netns paths instead of the enrolled pods (repeatable)");
  pod->excludes(ns);
  t->add_flag("--json", o.json, "machine-readable output");
  t->add_option("--proxy-uid", o.proxy_uid, "uid of the sidecar proxies")->capture_default_str();
  t->add_option("--dump-events", o.dump_events, "also write the raw events to this file (JSON lines)");
  return t;
}

int cmd_trace(const TraceOptions& o) {
  auto dur = parse_duration(o.duration);
  if (!dur) return fail(dur.error());
  auto tgt = resolve_targets(o);
  if (!tgt) return fail(tgt.error());

  // Which hook: tp_btf (typed sk) where the kernel has the tracepoints in BTF,
  // else raw_tp. Both need sock:sock_{send,recv}_length (Linux 6.3+).
  if (no_tracing_env())
    return fail(make_error("meshcutd trace needs tracing programs (tp_btf or raw_tp), and MESHCUT_NO_TRACING=1 "
                           "forbids them",
                           EOPNOTSUPP, "unset MESHCUT_NO_TRACING to trace"));
  bool btf_tp = has_btf_tracepoint();
  std::optional<Loaded> l;
  std::string why_not_btf;
  if (btf_tp) {
    auto r = load(true);
    if (r)
      l = *r;
    else
      why_not_btf = r.error().format();
  } else {
    why_not_btf = "no btf_trace_sock_send_length in the kernel's BTF";
  }
  if (!l) {
    auto r = load(false);
    if (!r)
      return fail(make_error(r.error().what + " (and tp_btf: " + why_not_btf + ")", r.error().err,
                             r.error().err == EPERM || r.error().err == EACCES
                                 ? "the latency monitor is off on this kernel: " + tracing_refused_hint(r.error().err) +
                                       " (the shortcuts, conns and pods do not need tracing programs)"
                                 : "meshcutd trace needs the sock:sock_send_length/sock_recv_length tracepoints "
                                   "(Linux 6.3+) and CAP_BPF + CAP_PERFMON"));
    l = *r;
  }
  auto* sk = l->skel.get();

  uint8_t one = 1;
  int nsfd = bpf_map__fd(sk->maps.mc_trace_netns);
  for (const auto& [c, _] : tgt->labels)
    if (bpf_map_update_elem(nsfd, &c, &one, BPF_ANY) != 0)
      return fail(make_error("couldn't fill the netns filter", errno));

  std::vector<mc_trace_event> events;
  events.reserve(1 << 16);
  auto cb = [](void* ctx, void* data, size_t size) -> int {
    auto* v = static_cast<std::vector<mc_trace_event>*>(ctx);
    if (size >= sizeof(mc_trace_event) && v->size() < (8u << 20)) v->push_back(*static_cast<mc_trace_event*>(data));
    return 0;
  };
  ring_buffer* rb = ring_buffer__new(bpf_map__fd(sk->maps.mc_trace_rb), cb, &events, nullptr);
  if (!rb) return fail(make_error("couldn't open the ring buffer", errno));
  struct RbCleanup {
    ring_buffer* r;
    ~RbCleanup() { ring_buffer__free(r); }
  } rbc{rb};

  // Run-time statistics of the programs, for the overhead we state.
  int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  if (int err = mc_latency__attach(sk); err) {
    if (stats_fd >= 0) close(stats_fd);
    return fail(make_error("couldn't attach the trace programs (" + l->hook + ")", -err,
                           "needs CAP_BPF and CAP_PERFMON (root)"));
  }
  rusage ru0{};
  getrusage(RUSAGE_SELF, &ru0);
  uint64_t start = mono_ns();
  log::info("tracing", {{"hook", l->hook},
                        {"tracepoints", {"sock:sock_send_length", "sock:sock_recv_length"}},
                        {"netns", tgt->labels.size()},
                        {"duration_s", *dur}});
  uint64_t end = start + static_cast<uint64_t>(*dur * 1e9);
  while (!g_stop) {
    uint64_t now = mono_ns();
    if (now >= end) break;
    // The programs submit without wakeups (cheaper per event): drain every 20 ms.
    uint64_t nap = std::min<uint64_t>(end - now, 20000000);
    timespec ts{0, static_cast<long>(nap)};
    nanosleep(&ts, nullptr);
    int n = ring_buffer__consume(rb);
    if (n < 0 && n != -EINTR) return fail(make_error("ring buffer read failed", -n));
  }
  // Detach first (no overhead from here on), then drain what is left.
  bpf_link__destroy(sk->links.mct_send_btf);
  bpf_link__destroy(sk->links.mct_recv_btf);
  bpf_link__destroy(sk->links.mct_send_raw);
  bpf_link__destroy(sk->links.mct_recv_raw);
  sk->links.mct_send_btf = sk->links.mct_recv_btf = sk->links.mct_send_raw = sk->links.mct_recv_raw = nullptr;
  uint64_t stop = mono_ns();
  ring_buffer__consume(rb);
  rusage ru1{};
  getrusage(RUSAGE_SELF, &ru1);
  auto ps = prog_stats(l->send), pr = prog_stats(l->recv);
  if (stats_fd >= 0) close(stats_fd);

  std::array<uint64_t, MC_TS__N> st{};
  {
    int ncpu = libbpf_num_possible_cpus();
    std::vector<uint64_t> vals(ncpu > 0 ? ncpu : 1);
    for (uint32_t i = 0; i < MC_TS__N; ++i)
      if (bpf_map_lookup_elem(bpf_map__fd(sk->maps.mc_trace_stats), &i, vals.data()) == 0)
        st[i] = sum_percpu(vals.data(), static_cast<int>(vals.size()));
  }

  if (!o.dump_events.empty()) {
    std::ofstream f(o.dump_events);
    for (const auto& e : events)
      f << json{{"ts_ns", e.ts_ns},
                {"dir", e.dir == MC_TRACE_DIR_SEND ? "send" : "recv"},
                {"bytes", e.bytes},
                {"tgid", e.tgid},
                {"pid", e.pid},
                {"uid", e.uid},
                {"comm", std::string(e.comm, strnlen(e.comm, sizeof(e.comm)))},
                {"sock_cookie", e.sock_cookie},
                {"netns_cookie", e.netns_cookie},
                {"local", ep_str(e.local_ip, e.local_port)},
                {"remote", ep_str(e.remote_ip, e.remote_port)}}
               .dump()
        << "\n";
  }

  json r = analyze_trace(events, o.proxy_uid, tgt->labels, tgt->pod_filter);
  double secs = static_cast<double>(stop - start) / 1e9;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  uint64_t run_ns = ps.run_ns + pr.run_ns, runs = ps.runs + pr.runs;
  auto tv_ms = [](const timeval& a, const timeval& b) {
    return (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_usec - a.tv_usec) / 1e3;
  };
  r["duration_s"] = round3(secs);
  json nsj = json::array();
  for (const auto& [c, nm] : tgt->labels) nsj.push_back({{"cookie", c}, {"name", nm}});
  r["netns"] = nsj;
  if (!o.pod.empty()) r["pod"] = o.pod;
  r["kernel_side"] = {{"hook", l->hook},
                      {"tracepoints", {"sock:sock_send_length", "sock:sock_recv_length"}},
                      {"events", st[MC_TS_EVENTS]},
                      {"lost", st[MC_TS_LOST]},
                      {"hook_runs", st[MC_TS_SEEN]},
                      {"received", events.size()}};
  if (!why_not_btf.empty() && l->hook != "tp_btf") r["kernel_side"]["tp_btf_unavailable"] = why_not_btf;
  r["overhead"] = {{"bpf_stats", stats_fd >= 0},
                   {"bpf_runs", runs},
                   {"bpf_run_ns", run_ns},
                   {"bpf_ns_per_run", runs ? round3(static_cast<double>(run_ns) / static_cast<double>(runs)) : 0.0},
                   {"bpf_cpu_share", secs > 0 ? static_cast<double>(run_ns) / (secs * 1e9 * static_cast<double>(ncpu)) : 0.0},
                   {"reader_cpu_ms", round3(tv_ms(ru0.ru_utime, ru1.ru_utime) + tv_ms(ru0.ru_stime, ru1.ru_stime))},
                   {"attached_when_not_tracing", false}};
  if (o.json)
    std::printf("%s\n", r.dump(2).c_str());
  else
    print_human(r);
  return 0;
}

}  // namespace meshcut::daemon
