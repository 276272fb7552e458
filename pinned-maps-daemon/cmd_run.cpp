// SPDX-License-Identifier: Apache-2.0
// `meshcutd run`: the resident daemon.
#include <signal.h>

#include <optional>
#include <string>

#include "cli.h"
#include "commands.h"
#include "install_cni.h"
#include "loader.h"
#include "metrics.h"
#include "obj_runtime.h"
#include "meshcut/abi.h"
#include "meshcut/cni/rescan.h"
#include "meshcut/config.h"
#include "meshcut/log.h"
#include "meshcut/maps.h"
#include "meshcut/pins.h"
#include "meshcut/pods.h"
#include "meshcut/sys.h"
#include "probe.h"

namespace meshcut::daemon {

namespace {

log::Level parse_level(const std::string& s) {
  if (s == "debug") return log::Level::debug;
  if (s == "warn") return log::Level::warn;
  if (s == "error") return log::Level::error;
  return log::Level::info;
}

}  // namespace

int cmd_run(DaemonConfig cfg, const std::string& cni_entry, const install::InstallOptions* cni_opts,
            const std::string& cni_cache_dir) {
  std::optional<install::InstallOptions> cni_copy;
  if (cni_opts) cni_copy = *cni_opts;
  if (!cni_entry.empty()) {
    try {
      nlohmann::json e = nlohmann::json::parse(cni_entry);
      if (cni_copy) cni_copy->plugin_entry = e;
    } catch (const std::exception& e) {
      return fail(make_error(std::string("--cni-entry is not valid JSON: ") + e.what(), EINVAL));
    }
  }
  const install::InstallOptions* cni = cni_copy ? &*cni_copy : nullptr;
  // The whole config is checked before any pin or attachment is created: a
  // refused start leaves the node as it was.
  if (auto st = validate_daemon_config(cfg); !st) return fail(st.error());
  if (auto st = check_http_addr(cfg.metrics_addr); !st) return fail(st.error());
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

  Features feat = probe_features(cfg.no_tracing || no_tracing_env());
  log::info("kernel features", feat.to_json());
  if (!feat.usable())
    return fail(
        make_error("this kernel lacks what the socket shortcut needs", EOPNOTSUPP,
                   "meshcut needs Linux 5.15+ with sockhash, sk_storage and netns cookies; see the notes above"));

  // Block the stop signals before anything is attached so none is lost.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto res = attach_all(cfg, cgroup, feat);
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
    if (auto st = start_http(cfg.metrics_addr, layout); !st) return fail(st.error());
  // Objectives: the service file, windows, the API. A malformed service file
  // refuses the start (the programs stay attached, as after any stop).
  obj::RuntimeOptions ro;
  ro.services_file = cfg.services_file;
  ro.cgroup = cgroup;
  // The API only where there is something to control (tests and nodes run
  // several daemons without a service file).
  ro.api.listen = cfg.services_file.empty() ? "off" : cfg.api_addr;
  ro.api.token_file = cfg.api_token_file;
  auto objrt = obj::Runtime::start(layout, ro);
  if (!objrt) return fail(objrt.error());
  set_extra_metrics([rt = objrt->get()] { return rt->prometheus(); });
  struct Unhook {
    ~Unhook() { set_extra_metrics(nullptr); }  // before the runtime goes
  } unhook;
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
        auto ov = reattach_overlay(layout, cfg.overlay_dev);
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
        auto so = reattach_sockops(layout, cgroup);
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

}  // namespace meshcut::daemon
