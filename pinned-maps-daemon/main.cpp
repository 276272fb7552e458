// SPDX-License-Identifier: Apache-2.0
// meshcutd: the command line. Each subcommand is a function of commands.h
// (trace.h for trace); main only wires the options to them.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cli.h"
#include "commands.h"
#include "install_cni.h"
#include "meshcut/config.h"
#include "meshcut/libbpf_log.h"
#include "meshcut/pins.h"
#include "trace.h"

using namespace meshcut;
using namespace meshcut::daemon;

int main(int argc, char** argv) {
  CLI::App app{"meshcutd: eBPF shortcuts for a sidecar service mesh's data plane"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags may follow the subcommand
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "show libbpf's own messages");
  std::string pin_root = kDefaultPinRoot;
  auto add_pin_root = [&](CLI::App* c) {
    return c->add_option("--pin-root", pin_root, "bpffs directory holding meshcut's pins")->capture_default_str();
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
  std::string services_file, api_addr, api_token_file;
  auto* o_svc = run->add_option("--services", services_file,
                                "objectives: the service file to watch (Services, EndpointSlices, CallerClasses; "
                                "JSON or YAML)");
  auto* o_api = run->add_option("--api-addr", api_addr,
                                "objectives API HOST:PORT (default 127.0.0.1:9465; off); off loopback it needs "
                                "--api-token-file");
  auto* o_tok = run->add_option("--api-token-file", api_token_file, "file holding the objectives API's bearer token");
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
  EnrollObj eobj;
  enroll->add_option("--class-id", eobj.class_id, "objectives: the pod's caller class (0-3; 0: default)")
      ->check(CLI::Range(0, MC_OBJ_MAX_CLASSES - 1));
  enroll->add_flag("--sidecar,!--no-sidecar", eobj.sidecar,
                   "objectives: the pod runs a sidecar (uid 1337 owns its upstream connects; default: unless "
                   "--no-intra-pod)");

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
  run->add_option("--cni-entry", run_entry,
                  "the conflist entry to keep chained, as JSON (default: type meshcut, "
                  "pinRoot, logFile, capabilities)");
  add_cni_dirs(run);
  std::string cni_cache_dir = "/var/lib/cni";
  run->add_option("--cni-cache-dir", cni_cache_dir,
                  "the runtime's CNI result cache: pods that started while meshcutd was down are enrolled from it")
      ->capture_default_str();

  auto* setc = app.add_subcommand("set", "change a switch at once: the node's, or one pod's with --netns");
  add_pin_root(setc);
  SetArgs set_args;
  auto onoff = CLI::IsMember({"on", "off"});
  setc->add_option("--cross-node", set_args.cross_node,
                   "the tc shortcut: on|off (node; with --netns: that pod). Off forgets\n"
                   "the node's flows, so none flips back to the shortcut mid-stream")
      ->check(onoff);
  setc->add_option("--netns", set_args.netns, "a pod's netns path: change that pod's switches");
  setc->add_option("--intra-pod", set_args.intra_pod, "with --netns: app <-> sidecar shortcut on|off")->check(onoff);
  setc->add_option("--same-node", set_args.same_node, "with --netns: pod <-> pod socket shortcut on|off")->check(onoff);

  auto* conns = app.add_subcommand("conns", "live accelerated connections; --explain SRC DST says why (not)");
  add_pin_root(conns);
  conns->add_flag("--json", json, "machine-readable output");
  std::vector<std::string> explain;
  conns->add_option("--explain", explain, "SRC DST as ip:port (SRC: the connect()ing side)")->expected(2);

  auto* pods = app.add_subcommand("pods", "list enrolled pods");
  add_pin_root(pods);
  pods->add_flag("--json", json, "machine-readable output");

  auto* objc = app.add_subcommand("objectives", "objectives: services, the action in force, windows (via the API)");
  objc->require_subcommand(1);
  ObjectivesArgs oargs;
  auto add_api = [&](CLI::App* c) {
    add_pin_root(c);
    c->add_option("--api-addr", oargs.api_addr, "the daemon's objectives API")->capture_default_str();
    c->add_option("--api-token-file", oargs.token_file, "bearer token file, when the API needs one");
  };
  auto* ostatus = objc->add_subcommand("status", "services, the action and what each actuator did");
  add_api(ostatus);
  ostatus->add_flag("--json", oargs.json, "machine-readable output");
  auto* oapply = objc->add_subcommand("apply", "apply an action document (JSON or YAML)");
  add_api(oapply);
  oapply->add_option("file", oargs.file, "the action document")->required();
  auto* oclear = objc->add_subcommand("clear", "no control: plain routing, no blocking");
  add_api(oclear);

  TraceOptions trace_opt;
  auto* trace = add_trace_subcommand(app, trace_opt);
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
    if (o_svc->count()) cfg.services_file = services_file;
    if (o_api->count()) cfg.api_addr = api_addr;
    if (o_tok->count()) cfg.api_token_file = api_token_file;
    return cmd_run(cfg, run_entry, o_watch->count() ? &inst : nullptr, cni_cache_dir);
  }
  if (*detach) return cmd_detach(pin_root);
  if (*status) return cmd_status(pin_root, json, require_running);
  if (*enroll) return cmd_enroll(pin_root, netns, pod_ips, !no_intra, !no_node, eobj);
  if (*unenroll)
    return cmd_unenroll(pin_root, o_ns->count() ? std::optional<std::string>(netns) : std::nullopt,
                        o_cookie->count() ? std::optional<uint64_t>(cookie) : std::nullopt);
  if (*pods) return cmd_pods(pin_root, json);
  if (*trace) {
    trace_opt.pin_root = pin_root;
    return cmd_trace(trace_opt);
  }
  if (*conns)
    return cmd_conns(pin_root, json, explain.size() == 2 ? explain[0] : "", explain.size() == 2 ? explain[1] : "");
  if (*setc) return cmd_set(pin_root, set_args);
  if (*objc) {
    oargs.verb = *ostatus ? "status" : *oapply ? "apply" : "clear";
    return cmd_objectives(oargs);
  }
  if (*icni || *ucni) return cmd_install_cni(inst, entry_json, static_cast<bool>(*ucni));
  return 0;
}
