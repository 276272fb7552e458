// SPDX-License-Identifier: Apache-2.0
// meshcut-control run: the controller against the nodes' meshcutd (run.h).
// Every window: fetch, merge, decide, push; the objectives and service files
// are re-read when they change (a bad edit is logged and the last good one
// kept); one line per window on stdout (a table, or JSON with --json), the
// same JSON to --log; its own metrics on --metrics-addr. SIGINT/SIGTERM stop
// it after the current window and clear the nodes' actions (they fail open
// at once) unless --keep-on-exit (then they fall back when the TTL runs out).
#include <httplib.h>
#include <sys/stat.h>
#include <sys/times.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <thread>

#include "meshcut/control/ppo.h"
#include "meshcut/control/run.h"
#include "meshcut/obj/document.h"

using namespace meshcut::control;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

int fail(const meshcut::Error& e) {
  std::fprintf(stderr, "meshcut-control: %s\n", e.format().c_str());
  return 1;
}

// mtime in ns, 0 if the file cannot be stat'ed.
int64_t mtime_ns(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

double cpu_s() {
  struct tms t {};
  ::times(&t);
  return static_cast<double>(t.tms_utime + t.tms_stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::string line(const TickReport& r) {
  char b[160];
  std::string o;
  snprintf(b, sizeof b, "%5llu %-7s nodes %zu/%zu", static_cast<unsigned long long>(r.tick), r.phase.c_str(),
           r.nodes_answered, r.nodes.size());
  o = b;
  for (const ServiceReport& s : r.services) {
    snprintf(b, sizeof b, " | %s %.0f/%.0f rps %.1f/%.0f ms%s%s", s.service.c_str(), s.carried_rps, s.offered_rps,
             s.measured_ms, s.bound_ms, s.met ? "" : " MISSED", s.controlled ? "" : " (uncontrolled)");
    o += b;
  }
  snprintf(b, sizeof b, " | decide %.2f ms", r.decide_ms);
  o += b;
  for (const NodeReport& n : r.nodes)
    if (!n.error.empty()) o += "\n      " + n.error;
  return o;
}

}  // namespace

void add_run_command(CLI::App& app) {
  struct Args {
    std::string objectives, services, nodes, token_file, policy = "search", log, metrics_addr, ppo_model;
    size_t windows = 0;
    double timeout_ms = 0;
    bool json = false, keep = false;
    RunOptions opt;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand("run", "control the nodes: every window fetch, merge, decide, push");
  c->add_option("--objectives", a->objectives, "Objectives document (YAML or JSON); re-read when it changes")
      ->required();
  c->add_option("--services", a->services, "the service file the nodes use (meshcutd --services)")->required();
  c->add_option("--nodes", a->nodes, "the nodes' API: HOST:PORT[,HOST:PORT...] or NAME=HOST:PORT,...")->required();
  c->add_option("--api-token-file", a->token_file, "bearer token for the nodes' API (needed off loopback)");
  c->add_option("--policy", a->policy, "search, static, ppo (a model from `train`) or none")->capture_default_str();
  c->add_option("--ppo-model", a->ppo_model, "the trained policy for --policy ppo (train --out)");
  c->add_option("--learn", a->opt.learn_windows, "probing windows before control")->capture_default_str();
  c->add_option("--probe", a->opt.probe, "learning schedule: boundary (near each bound) or random routings")
      ->transform(CLI::CheckedTransformer(probe_kinds()))
      ->default_str("boundary");
  c->add_option("--windows", a->windows, "stop after this many windows (0: until SIGINT/SIGTERM)")
      ->capture_default_str();
  c->add_option("--timeout-ms", a->timeout_ms, "per node request (default: a third of the window)");
  c->add_option("--ttl-ms", a->opt.policy_options.ttl_ms, "actions expire on the nodes after this")
      ->capture_default_str();
  c->add_option("--hysteresis", a->opt.policy_options.hysteresis, "relative gain needed to change")
      ->capture_default_str();
  c->add_option("--refit-every", a->opt.refit_every, "windows between refits")->capture_default_str();
  c->add_option("--log", a->log, "append one JSON line per window to this file");
  c->add_option("--metrics-addr", a->metrics_addr, "serve /metrics on HOST:PORT (off by default)");
  c->add_flag("--json", a->json, "one JSON line per window on stdout");
  c->add_flag("--keep-on-exit", a->keep, "leave the last action on the nodes at exit (they fall back at its TTL)");
  c->callback([a] {
    auto code = [&]() -> int {
      auto pol = run_policy_from_string(a->policy);
      if (!pol) return fail(pol.error());
      a->opt.policy = *pol;
      auto objectives = load_objectives(a->objectives);
      if (!objectives) return fail(objectives.error());
      auto services = meshcut::obj::load_services(a->services);
      if (!services) return fail(services.error());
      if (a->opt.policy == RunPolicy::kPpo) {
        if (a->ppo_model.empty())
          return fail(meshcut::make_error("--policy ppo needs --ppo-model FILE", 0,
                                          "train one: meshcut-control train --objectives F --scenario F --out FILE"));
        auto p = PpoPolicy::load(a->ppo_model);
        if (!p) return fail(p.error());
        if (auto st = (*p)->check(*services, *objectives); !st) return fail(st.error());
        a->opt.custom = std::shared_ptr<Policy>(std::move(*p));
      }
      auto nodes = parse_nodes(a->nodes);
      if (!nodes) return fail(nodes.error());
      std::string token;
      if (!a->token_file.empty()) {
        auto t = meshcut::obj::read_file(a->token_file);
        if (!t) return fail(t.error());
        token = *t;
        while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
        if (token.empty())
          return fail(meshcut::make_error("--api-token-file " + a->token_file + " is empty", 0,
                                          "write the nodes' API token into it"));
      }
      const double window_s = objectives->window_seconds;
      const double timeout_s = a->timeout_ms > 0 ? a->timeout_ms / 1e3 : window_s / 3;
      a->opt.align_wait_ms = static_cast<uint64_t>(window_s * 1000 / 2);
      std::vector<std::unique_ptr<NodeLink>> links;
      for (const NodeAddr& n : *nodes) links.push_back(http_node(n, token, timeout_s));
      std::ofstream log;
      if (!a->log.empty()) {
        log.open(a->log, std::ios::app);
        if (!log) return fail(meshcut::make_error("cannot open --log " + a->log, errno, "check the directory exists"));
      }
      Controller ctl(std::move(*services), std::move(*objectives), a->opt, *nodes, std::move(links));
      std::mutex mu;
      httplib::Server metrics;
      std::thread metrics_thread;
      if (!a->metrics_addr.empty()) {
        auto m = parse_nodes(a->metrics_addr);
        if (!m || m->size() != 1)
          return fail(meshcut::make_error("--metrics-addr " + a->metrics_addr + ": expected HOST:PORT", 0, ""));
        metrics.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
          std::lock_guard<std::mutex> g(mu);
          res.set_content(ctl.prometheus(), "text/plain; version=0.0.4");
        });
        metrics.Get("/healthz",
                    [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
        if (!metrics.bind_to_port(m->front().host, m->front().port))
          return fail(meshcut::make_error("--metrics-addr " + a->metrics_addr + ": cannot listen there", errno,
                                          "pick a free port, or an address of this host"));
        metrics_thread = std::thread([&] { metrics.listen_after_bind(); });
      }
      std::signal(SIGINT, on_signal);
      std::signal(SIGTERM, on_signal);
      if (a->opt.policy == RunPolicy::kNone)
        if (auto st = ctl.clear_all(); !st) std::fprintf(stderr, "meshcut-control: %s\n", st.error().format().c_str());
      int64_t obj_mtime = mtime_ns(a->objectives), svc_mtime = mtime_ns(a->services);
      const auto period =
          std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(window_s));
      auto next = std::chrono::steady_clock::now();
      const double cpu0 = cpu_s();
      const auto wall0 = std::chrono::steady_clock::now();
      size_t done = 0, met_all = 0;
      double decide_max = 0;
      while (!g_stop && (a->windows == 0 || done < a->windows)) {
        // Re-read what changed; a bad edit keeps the last good one.
        auto reload = [&](const std::string& path, int64_t& seen, const char* what, auto load, auto set) {
          int64_t m = mtime_ns(path);
          if (m == seen) return;
          seen = m;
          auto v = load(path);
          std::lock_guard<std::mutex> g(mu);
          if (v) {
            set(std::move(*v));
            std::fprintf(stderr, "meshcut-control: %s reloaded from %s\n", what, path.c_str());
          } else {
            std::fprintf(stderr, "meshcut-control: %s not reloaded, keeping the last good ones: %s\n", what,
                         v.error().format().c_str());
          }
        };
        reload(a->objectives, obj_mtime, "objectives", load_objectives,
               [&](Objectives o) { ctl.set_objectives(std::move(o)); });
        reload(a->services, svc_mtime, "services", meshcut::obj::load_services,
               [&](meshcut::obj::Services s) { ctl.set_services(std::move(s)); });
        TickReport r;
        {
          std::lock_guard<std::mutex> g(mu);
          r = ctl.tick();
        }
        ++done;
        bool all = true;
        for (const ServiceReport& s : r.services) all = all && s.met;
        met_all += all;
        decide_max = std::max(decide_max, r.decide_ms);
        auto j = r.to_json();
        if (log) log << j.dump() << "\n" << std::flush;
        if (a->json)
          std::cout << j.dump() << "\n" << std::flush;
        else
          std::cout << line(r) << "\n" << std::flush;
        next += period;
        // Behind by more than a window (stopped, or stdout blocked): start again
        // from now instead of running the missed windows back to back.
        if (std::chrono::steady_clock::now() > next + period) next = std::chrono::steady_clock::now();
        while (!g_stop && std::chrono::steady_clock::now() < next)
          std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
              next - std::chrono::steady_clock::now(), std::chrono::milliseconds(50)));
      }
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
      const double cpu = cpu_s() - cpu0;
      if (!a->keep && a->opt.policy != RunPolicy::kNone)
        if (auto st = ctl.clear_all(); !st)
          std::fprintf(stderr, "meshcut-control: at exit: %s\n", st.error().format().c_str());
      std::fprintf(stderr,
                   "meshcut-control: %zu windows, every objective met in %zu; cpu %.2f %% of one core over %.1f s; "
                   "slowest decision %.2f ms\n",
                   done, met_all, wall > 0 ? 100 * cpu / wall : 0.0, wall, decide_max);
      if (metrics_thread.joinable()) {
        metrics.stop();
        metrics_thread.join();
      }
      return 0;
    }();
    if (code) throw CLI::RuntimeError(code);
  });
}
