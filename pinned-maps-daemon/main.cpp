// SPDX-License-Identifier: Apache-2.0
// meshcutd: the resident daemon (`run`) and the operator subcommands.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <optional>
#include <iostream>
#include <string>
#include <vector>

#include "conns.h"
#include "install_cni.h"
#include <meshcut/cni/rescan.h>
#include "loader.h"
#include "metrics.h"
#include "meshcut/abi.h"
#include "meshcut/config.h"
#include "meshcut/libbpf_log.h"
#include "meshcut/log.h"
#include "meshcut/maps.h"
#include "meshcut/pins.h"
#include "meshcut/pods.h"
#include "meshcut/sys.h"
#include "probe.h"
#include "status.h"
#include "trace.h"
#include "cli.h"

using namespace meshcut;

namespace {

using daemon::fail;

log::Level parse_level(const std::string& s) {
  if (s == "debug") return log::Level::debug;
  if (s == "warn") return log::Level::warn;
  if (s == "error") return log::Level::error;
  return log::Level::info;
}

int cmd_run(DaemonConfig cfg, const install::InstallOptions* cni, const std::string& cni_cache_dir) {
  log::set_level(parse_level(cfg.log_level));
  for (const auto& w : cfg.warnings) log::warn(w);
  if (auto st = sys::check_bpffs(cfg.pin_root); !st) return fail(st.error());
  std::string cgroup = cfg.cgroup;
  if (cgroup.empty()) {
    auto root = sys::cgroup2_root();
    if (!root) return fail(root.error());
    cgroup = *root;
  } else if (!sys::cgroup2_root()) {
    return fail(sys::cgroup2_root().error());
  }
  if (auto st = sys::check_cgroup2_dir(cgroup); !st) return fail(st.error());

  daemon::Features feat = daemon::probe_features(cfg.no_tracing || daemon::no_tracing_env());
  log::info("kernel features", feat.to_json());
  if (!feat.usable())
    return fail(make_error("this kernel lacks what the socket shortcut needs", EOPNOTSUPP,
                           "meshcut needs Linux 5.15+ with sockhash, sk_storage and netns cookies; see the notes above"));

  // Block the stop signals before anything is attached so none is lost.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto res = daemon::attach_all(cfg, cgroup, feat);
  if (!res) return fail(res.error());
  log::info("ready", {{"pin_root", cfg.pin_root},
                      {"cross_node", res->cross_node},
                      {"overlay_attached", res->overlay_attached},
                      {"cgroup", cgroup},
                      {"reused_maps", res->reused_maps},
                      {"link_updated", res->link_updated},
                      {"skb_verdict", res->skb_verdict},
                      {"conns_table", res->conns_table},
                      {"conntrack_kfuncs", res->ct_kfuncs},
                      {"max_sockets", res->max_sockets}});

  install::InstallOptions o;
  if (cni) {
    o = *cni;
    if (o.plugin_entry.is_null()) {
      auto e = install::default_plugin_entry();
      e["pinRoot"] = cfg.pin_root;  // the plugin must find this daemon's pins
      o.plugin_entry = nlohmann::json::parse(e.dump());
    }
  }
  // Chain the plugin at start, then again whenever the main CNI rewrites its
  // config (e.g. flannel after a reboot): checked every second.
  auto keep_cni = [&](bool first) {
    if (!cni || (!first && !install::needs_reinstall(o))) return;
    auto rep = install::install(o);
    if (!rep)
      log::error("couldn't chain the CNI plugin", {{"error", rep.error().format()}});
    else if (rep->changed)
      log::info(first ? "CNI plugin installed" : "CNI config was rewritten: meshcut chained again",
                {{"conf", rep->conf_file}, {"actions", rep->actions}});
  };
  keep_cni(true);
  // Pods whose ADD failed open while we were down get enrolled now. Only at
  // start: while we run, a cache entry without a record is a pod between its
  // meshcut DEL and the runtime removing the entry, not one to enroll.
  cni::rescan_cache(cni_cache_dir, cfg.pin_root);

  PinLayout layout(cfg.pin_root);
  if (!cfg.metrics_addr.empty() && cfg.metrics_addr != "off")
    if (auto st = daemon::start_http(cfg.metrics_addr, layout); !st) return fail(st.error());
  timespec tick{1, 0};
  int ticks = 0;
  bool overlay_missing = false;  // logged once per disappearance
  std::string sockops_error;     // likewise
  for (;;) {
    int sig = sigtimedwait(&set, nullptr, &tick);
    if (sig == SIGTERM || sig == SIGINT) {
      // Pins, links and maps stay: traffic keeps its shortcut while we restart.
      log::info("stopping; attachments stay in place", {{"signal", sig}});
      return 0;
    }
    if (!exists(layout.map(MC_MAP_META))) {
      log::info("pins removed (meshcutd detach?): exiting", {{"pin_root", cfg.pin_root}});
      return 0;
    }
    keep_cni(false);
    if (cfg.recheck_interval_s && ticks % static_cast<int>(cfg.recheck_interval_s) == 0) {
      // What another agent undid: our tc filters (the overlay's, also after
      // the device was recreated, and the pods') and the sockops link. Under
      // the lock, and only while the pins are there (not mid-detach).
      auto lock = PinLock::acquire(layout.root);
      if (lock && exists(layout.map(MC_MAP_META))) {
        auto ov = daemon::reattach_overlay(layout, cfg.overlay_dev);
        if (ov.missing != overlay_missing) {
          if (ov.missing)
            log::warn("the overlay device is gone: its tc filter goes back on when it is there again",
                      {{"device", cfg.overlay_dev}});
          overlay_missing = ov.missing;
        }
        if (ov.attached && ov.old_ifindex != ov.new_ifindex)
          log::warn("the overlay device was recreated (new ifindex): our tc filter attached again",
                    {{"device", cfg.overlay_dev}, {"old_ifindex", ov.old_ifindex}, {"ifindex", ov.new_ifindex}});
        else if (ov.attached)
          log::warn("our tc filter on the overlay device was gone (another agent?): attached again",
                    {{"device", cfg.overlay_dev}, {"ifindex", ov.new_ifindex}});
        auto so = daemon::reattach_sockops(layout, cgroup);
        if (so.attached)
          log::warn("the sockops cgroup link was detached (another agent?): attached again",
                    {{"cgroup", cgroup}, {"link_id", so.link_id}});
        else if (!so.error.empty() && so.error != sockops_error)
          log::error("couldn't re-attach sockops to the cgroup", {{"cgroup", cgroup}, {"error", so.error}});
        sockops_error = so.error;
        auto maps = PinnedMaps::open(layout);
        auto prog = open_pinned(layout.prog(MC_PROG_TC_VETH));
        if (maps && prog) pods::reattach_tc(*maps, prog->get());
      }
    }
    if (++ticks % static_cast<int>(cfg.gc_interval_s ? cfg.gc_interval_s : 1) == 0 && cfg.gc_interval_s) {
      // Pods whose DEL never came (node crash, runtime bug): their netns is gone.
      {
        auto lock = PinLock::acquire(layout.root);
        if (lock)
          if (auto maps = PinnedMaps::open(layout)) {
            pods::gc_stale(*maps);
            // Entries of closed sockets in the conns table (no close callback).
            if (res->conns_table)
              if (auto n = maps->sweep_conns(); !n)
                log::warn("couldn't sweep the conns table", {{"error", n.error().format()}});
          }
      }
    }
  }
}

int cmd_detach(const std::string& pin_root) {
  if (auto st = daemon::detach_all(PinLayout(pin_root)); !st) return fail(st.error());
  std::printf("meshcut detached from %s: new connections take the normal path\n", pin_root.c_str());
  return 0;
}

Result<uint32_t> parse_ipv4(const std::string& s) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1)
    return make_error("invalid IPv4 address '" + s + "'", EINVAL, "pass --pod-ip like 10.244.1.5");
  return a.s_addr;
}

int cmd_enroll(const std::string& pin_root, const std::string& netns, const std::vector<std::string>& ips,
               bool intra, bool node) {
  auto cookie = sys::netns_cookie(netns);
  if (!cookie) return fail(cookie.error());
  mc_pod pod{};
  std::vector<uint32_t> addrs;
  if (ips.empty()) {
    auto found = sys::netns_ipv4(netns);
    if (!found) return fail(found.error());
    addrs = *found;
  }
  for (const auto& s : ips) {
    auto ip = parse_ipv4(s);
    if (!ip) return fail(ip.error());
    addrs.push_back(*ip);
  }
  if (addrs.size() > MC_POD_MAX_IPS)
    return fail(make_error("a pod has at most " + std::to_string(MC_POD_MAX_IPS) + " IPv4 addresses", E2BIG));
  for (size_t i = 0; i < addrs.size(); ++i) pod.ip4[i] = addrs[i];
  pod.flags = (intra ? MC_POD_F_INTRA : 0) | (node ? MC_POD_F_NODE : 0);
  PinLayout layout(pin_root);
  auto lock = PinLock::acquire(layout.root);
  if (!lock) return fail(lock.error());
  auto maps = PinnedMaps::open(layout);
  if (!maps) return fail(maps.error());
  if (auto st = maps->put_pod(*cookie, pod); !st) return fail(st.error());
  std::printf("enrolled netns %s (cookie %llu) with %zu IPv4 address(es)\n", netns.c_str(),
              static_cast<unsigned long long>(*cookie), addrs.size());
  return 0;
}

int cmd_unenroll(const std::string& pin_root, const std::string& netns, uint64_t cookie) {
  if (!netns.empty()) {
    auto c = sys::netns_cookie(netns);
    if (!c) return fail(c.error());
    cookie = *c;
  }
  PinLayout layout(pin_root);
  auto lock = PinLock::acquire(layout.root);
  if (!lock) return fail(lock.error());
  auto maps = PinnedMaps::open(layout);
  if (!maps) return fail(maps.error());
  auto r = maps->del_pod(cookie);
  if (!r) return fail(r.error());
  std::printf("%s netns cookie %llu\n", *r ? "unenrolled" : "not enrolled:", static_cast<unsigned long long>(cookie));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"meshcutd: eBPF shortcuts for a sidecar service mesh's data plane"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags may follow the subcommand
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "show libbpf's own messages");
  std::string pin_root = kDefaultPinRoot;
  auto add_pin_root = [&](CLI::App* c) {
    return c->add_option("--pin-root", pin_root, "bpffs directory holding meshcut's pins")
        ->capture_default_str();
  };

  auto* run = app.add_subcommand("run", "load, pin and attach the programs, then stay resident");
  std::string config_file, cgroup, skb_verdict, log_level;
  uint32_t max_sockets = 0;
  auto* o_pin_run = add_pin_root(run);
  run->add_option("--config", config_file, "JSON config file (flags override it)");
  auto* o_cg = run->add_option("--cgroup", cgroup, "cgroup v2 directory for sockops (default: the cgroup2 root)");
  auto* o_max = run->add_option("--max-sockets", max_sockets, "sockhash capacity")->check(CLI::Range(2u, 1u << 24));
  auto* o_skb = run->add_option("--skb-verdict", skb_verdict, "no-op SK_SKB verdict: auto|on|off")
                    ->check(CLI::IsMember({"auto", "on", "off"}));
  std::string metrics_addr;
  auto* o_metrics = run->add_option("--metrics-addr", metrics_addr,
                                    "HOST:PORT or [V6ADDR]:PORT, numeric, for /metrics, /healthz, /readyz "
                                    "(default 127.0.0.1:9464; off)");
  std::string pod_cidr, overlay_dev, cross_node;
  auto* o_cidr = run->add_option("--pod-cidr", pod_cidr, "the cluster's pod CIDR (enables the cross-node tc shortcut)");
  auto* o_ovl = run->add_option("--overlay-dev", overlay_dev, "overlay device for the tc shortcut, e.g. flannel.1");
  auto* o_cross = run->add_option("--cross-node", cross_node, "the node's switch for the tc shortcut: on|off")
                      ->check(CLI::IsMember({"on", "off"}));
  uint32_t rto_min = 0, gc_interval = 0, recheck = 0;
  auto* o_recheck = run->add_option("--recheck-interval", recheck,
                                    "seconds between checks that our tc filters are still attached (0: off)");
  auto* o_gc = run->add_option("--gc-interval", gc_interval,
                               "seconds between sweeps of pod records whose netns is gone (0: off)");
  auto* o_rto = run->add_option("--local-rto-min-us", rto_min,
                                "minimum RTO of sockets whose peer is on this node (0: kernel's 200 ms)")
                    ->check(CLI::Range(0u, 200000u));
  bool no_tracing = false;
  auto* o_notrace = run->add_flag("--no-tracing", no_tracing,
                                  "load no tracing program (as on kernels that refuse them; also "
                                  "MESHCUT_NO_TRACING=1): conns/pods read the conns table, trace is off");
  auto* o_log = run->add_option("--log-level", log_level, "debug|info|warn|error")
                    ->check(CLI::IsMember({"debug", "info", "warn", "error"}));

  auto* detach = app.add_subcommand("detach", "remove every attachment and pin (connections fall back)");
  add_pin_root(detach);

  auto* status = app.add_subcommand("status", "programs, attachments, maps, counters, features");
  bool json = false;
  add_pin_root(status);
  status->add_flag("--json", json, "machine-readable output");
  bool require_running = false;
  status->add_flag("--require-running", require_running,
                   "exit 4 unless the daemon that attached the programs is alive (readiness probes)");

  auto* enroll = app.add_subcommand("enroll", "register a network namespace as a meshed pod (debugging)");
  std::string netns;
  std::vector<std::string> pod_ips;
  bool no_intra = false, no_node = false;
  add_pin_root(enroll);
  enroll->add_option("--netns", netns, "netns path, e.g. /var/run/netns/pod1")->required();
  enroll->add_option("--pod-ip", pod_ips, "pod IPv4 address(es); default: those configured in the netns");
  enroll->add_flag("--no-intra-pod", no_intra, "no app<->sidecar shortcut for this pod");
  enroll->add_flag("--no-same-node", no_node, "no pod<->pod shortcut for this pod");

  auto* unenroll = app.add_subcommand("unenroll", "forget a pod registered with enroll");
  uint64_t cookie = 0;
  add_pin_root(unenroll);
  auto* o_ns = unenroll->add_option("--netns", netns, "netns path");
  auto* o_cookie = unenroll->add_option("--cookie", cookie, "netns cookie (when the netns is gone)");
  o_ns->excludes(o_cookie);

  install::InstallOptions inst;
  std::string entry_json;
  auto add_cni_dirs = [&](CLI::App* c) {
    c->add_option("--cni-bin-dir", inst.cni_bin_dir, "where the runtime finds CNI plugins")->capture_default_str();
    c->add_option("--cni-conf-dir", inst.cni_conf_dir, "the runtime's CNI config dir")->capture_default_str();
  };
  auto* icni = app.add_subcommand("install-cni", "install the meshcut plugin and chain it in the node's conflist");
  add_cni_dirs(icni);
  icni->add_option("--plugin-src", inst.plugin_src, "the built meshcut CNI binary")->required();
  icni->add_option("--entry", entry_json, "the conflist entry as JSON (default: type meshcut, pinRoot, logFile)");
  auto* ucni = app.add_subcommand("uninstall-cni", "remove exactly what install-cni added");
  add_cni_dirs(ucni);
  // run can keep the entry in place when the main CNI rewrites its config.
  auto* o_watch = run->add_option("--cni-plugin-src", inst.plugin_src,
                                  "install the CNI plugin from here and keep it chained while running");
  std::string run_entry;
  run->add_option("--cni-entry", run_entry, "the conflist entry to keep chained, as JSON (default: type meshcut, "
                                            "pinRoot, logFile, capabilities)");
  add_cni_dirs(run);
  std::string cni_cache_dir = "/var/lib/cni";
  run->add_option("--cni-cache-dir", cni_cache_dir,
                  "the runtime's CNI result cache: pods that started while meshcutd was down are enrolled from it")
      ->capture_default_str();

  auto* setc = app.add_subcommand("set", "change a switch at once: the node's, or one pod's with --netns");
  add_pin_root(setc);
  std::string set_cross, set_intra, set_node, set_netns;
  auto onoff = CLI::IsMember({"on", "off"});
  setc->add_option("--cross-node", set_cross, "the tc shortcut: on|off (node; with --netns: that pod). Off forgets\n"
                                              "the node's flows, so none flips back to the shortcut mid-stream")
      ->check(onoff);
  setc->add_option("--netns", set_netns, "a pod's netns path: change that pod's switches");
  setc->add_option("--intra-pod", set_intra, "with --netns: app <-> sidecar shortcut on|off")->check(onoff);
  setc->add_option("--same-node", set_node, "with --netns: pod <-> pod socket shortcut on|off")->check(onoff);

  auto* conns = app.add_subcommand("conns", "live accelerated connections; --explain SRC DST says why (not)");
  add_pin_root(conns);
  conns->add_flag("--json", json, "machine-readable output");
  std::vector<std::string> explain;
  conns->add_option("--explain", explain, "SRC DST as ip:port (SRC: the connect()ing side)")->expected(2);

  auto* pods = app.add_subcommand("pods", "list enrolled pods");
  add_pin_root(pods);
  pods->add_flag("--json", json, "machine-readable output");

  daemon::TraceOptions trace_opt;
  auto* trace = daemon::add_trace_subcommand(app, trace_opt);
  add_pin_root(trace);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  install_libbpf_logger(verbose);

  if (*run) {
    DaemonConfig cfg;
    if (!config_file.empty()) {
      auto c = load_daemon_config(config_file);
      if (!c) return fail(c.error());
      cfg = *c;
    }
    if (o_pin_run->count()) cfg.pin_root = pin_root;
    if (o_cg->count()) cfg.cgroup = cgroup;
    if (o_max->count()) cfg.max_sockets = max_sockets;
    if (o_skb->count()) cfg.skb_verdict = *parse_skb_verdict(skb_verdict);
    if (o_log->count()) cfg.log_level = log_level;
    if (o_rto->count()) cfg.local_rto_min_us = rto_min;
    if (o_gc->count()) cfg.gc_interval_s = gc_interval;
    if (o_recheck->count()) cfg.recheck_interval_s = recheck;
    if (o_cidr->count()) cfg.pod_cidr = pod_cidr;
    if (o_metrics->count()) cfg.metrics_addr = metrics_addr;
    if (o_ovl->count()) cfg.overlay_dev = overlay_dev;
    if (o_cross->count()) cfg.cross_node = cross_node == "on";
    if (o_notrace->count()) cfg.no_tracing = no_tracing;
    if (!run_entry.empty()) {
      try {
        inst.plugin_entry = nlohmann::json::parse(run_entry);
      } catch (const std::exception& e) {
        return fail(make_error(std::string("--cni-entry is not valid JSON: ") + e.what(), EINVAL));
      }
    }
    // The whole config is checked before cmd_run creates any pin or attachment:
    // a refused start leaves the node as it was.
    if (auto st = validate_daemon_config(cfg); !st) return fail(st.error());
    if (auto st = daemon::check_http_addr(cfg.metrics_addr); !st) return fail(st.error());
    return cmd_run(cfg, o_watch->count() ? &inst : nullptr, cni_cache_dir);
  }
  if (*detach) return cmd_detach(pin_root);
  if (*status) return cmd_status(pin_root, json, require_running);
  if (*enroll) return cmd_enroll(pin_root, netns, pod_ips, !no_intra, !no_node);
  if (*unenroll) {
    if (!o_ns->count() && !o_cookie->count()) return fail(make_error("unenroll needs --netns or --cookie", EINVAL));
    return cmd_unenroll(pin_root, netns, cookie);
  }
  if (*pods) return cmd_pods(pin_root, json);
  if (*trace) {
    trace_opt.pin_root = pin_root;
    return daemon::cmd_trace(trace_opt);
  }
  if (*conns) return cmd_conns(pin_root, json, explain.size() == 2 ? explain[0] : "", explain.size() == 2 ? explain[1] : "");
  if (*setc) {
    PinLayout layout(pin_root);
    auto lock = PinLock::acquire(layout.root);
    if (!lock) return fail(lock.error());
    auto maps = PinnedMaps::open(layout);
    if (!maps) return fail(maps.error());
    if (!set_netns.empty()) {
      // One pod's switches; they apply to new connections (decisions are per connection).
      auto cookie = sys::netns_cookie(set_netns);
      if (!cookie) return fail(cookie.error());
      auto pods = maps->pods();
      if (!pods) return fail(pods.error());
      std::optional<mc_pod> pod;
      for (const auto& [c, p] : *pods)
        if (c == *cookie) pod = p;
      if (!pod)
        return fail(make_error("netns " + set_netns + " is not an enrolled pod", ENOENT, "meshcutd pods lists them"));
      auto apply = [&](const std::string& v, uint32_t bit) {
        if (!v.empty()) pod->flags = v == "on" ? (pod->flags | bit) : (pod->flags & ~bit);
      };
      apply(set_intra, MC_POD_F_INTRA);
      apply(set_node, MC_POD_F_NODE);
      apply(set_cross, MC_POD_F_CROSS);
      if (auto st = maps->put_pod(*cookie, *pod); !st) return fail(st.error());
      std::printf("pod %s: intra-pod %s, same-node %s, cross-node %s\n", set_netns.c_str(),
                  pod->flags & MC_POD_F_INTRA ? "on" : "off", pod->flags & MC_POD_F_NODE ? "on" : "off",
                  pod->flags & MC_POD_F_CROSS ? "on" : "off");
      return 0;
    }
    if (set_cross.empty())
      return fail(make_error("set needs --cross-node (the node), or --netns with pod switches", EINVAL));
    auto c = maps->config();
    if (!c) return fail(c.error());
    if (set_cross == "on" && !c->pod_cidr)
      return fail(make_error("the tc shortcut needs the pod CIDR", EINVAL, "restart meshcutd with --pod-cidr"));
    c->flags = set_cross == "on" ? (c->flags | MC_CFG_F_CROSS_NODE) : (c->flags & ~MC_CFG_F_CROSS_NODE);
    if (auto st = maps->set_config(*c); !st) return fail(st.error());
    if (set_cross == "off") {
      // Forget every flow: switched on again, only flows that start then take
      // the shortcut, so no flow flips from the normal path to the shortcut
      // mid-stream (which could reorder it).
      int fd = maps->fd(MC_MAP_FLOWS);
      mc_flow_key k{}, next{};
      while (bpf_map_get_next_key(fd, nullptr, &next) == 0) {
        k = next;
        bpf_map_delete_elem(fd, &k);
      }
    }
    std::printf("cross-node shortcut %s\n", set_cross.c_str());
    return 0;
  }
  if (*icni || *ucni) {
    if (!entry_json.empty()) {
      try {
        inst.plugin_entry = nlohmann::json::parse(entry_json);
      } catch (const std::exception& e) {
        return fail(make_error(std::string("--entry is not valid JSON: ") + e.what(), EINVAL));
      }
    }
    auto rep = *icni ? install::install(inst) : install::uninstall(inst);
    if (!rep) return fail(rep.error());
    if (!rep->changed) std::printf("nothing to do\n");
    for (const auto& a : rep->actions) std::printf("%s\n", a.c_str());
    return 0;
  }
  return 0;
}
