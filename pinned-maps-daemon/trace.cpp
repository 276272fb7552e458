// SPDX-License-Identifier: Apache-2.0
// `meshcutd trace`, the kernel side (see trace.h): resolves the netns to trace,
// loads and attaches the latency programs for --duration, reads the ring
// buffer, then prints what trace_analysis.cpp makes of the events.
#include "trace.h"

#include "cli.h"
#include "probe.h"
#include "trace_analysis.h"

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
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>

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

uint64_t mono_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

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
      t.labels[cookie] = n != names.end() ? n->second : "pod " + sys::ipv4_str(pod.ip4[0]);
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
  std::printf(
      "overhead while tracing: %.0f ns per hook run (%llu runs, all sockets), %.3f%% of the CPUs; "
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
    std::printf("%-8s %-7s %-17s %-16s %10s %10s %10s %7s\n", "hop", "kind", "dir", "who", "avg ms", "p50 ms", "p90 ms",
                "share");
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
                  s["role"].get<std::string>().c_str(), s["comm"].get<std::string>().c_str(), s["uid"].get<unsigned>(),
                  s["local"].get<std::string>().c_str(), s["remote"].get<std::string>().c_str(),
                  s["pod"].get<std::string>().c_str());
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
    return fail(
        make_error("meshcutd trace needs tracing programs (tp_btf or raw_tp), and MESHCUT_NO_TRACING=1 "
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
    for (const auto& e : events) f << trace_event_json(e).dump() << "\n";
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
  r["overhead"] = {
      {"bpf_stats", stats_fd >= 0},
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
