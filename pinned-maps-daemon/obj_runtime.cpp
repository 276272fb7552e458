// SPDX-License-Identifier: Apache-2.0
#include "obj_runtime.h"

#include <sys/stat.h>

#include <chrono>
#include <cstring>
#include <map>
#include <ctime>
#include <set>

#include "meshcut/log.h"
#include "meshcut/maps.h"
#include "meshcut/obj/action.h"
#include "meshcut/obj/services.h"
#include "meshcut/obj/windows.h"
#include "loader.h"
#include "meshcut/cni/plan.h"
#include "obj_maps.h"

namespace meshcut::obj {

struct Runtime::State {
  Services services;
  bool have_services = false;
  timespec mtime{};
  std::string load_error;  // the last reload's error ("" once a good file is in force)
  WindowStore store;
  nlohmann::json action_doc;  // the document in force (as applied)
  uint64_t generation = 0;
  bool expiry_logged = false;
  explicit State(size_t history) : store(history) {}
};

namespace {

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

ApiReply error_reply(int status, const std::string& msg) { return {status, {{"error", msg}}}; }

// Writes the service tables and the switch; the caller holds the lock.
Status sync_services(const ObjMaps& om, const Services& s, const PinLayout& layout, const std::string& cgroup) {
  std::vector<std::pair<mc_obj_addr, mc_obj_vip>> vips;
  std::vector<std::pair<mc_obj_addr, mc_obj_ep>> eps;
  for (const auto& svc : s.services) {
    mc_obj_vip v{};
    v.svc = svc.id;
    vips.emplace_back(svc.vip(), v);
    for (const auto& e : svc.endpoints) {
      mc_obj_ep ev{};
      ev.svc = svc.id;
      ev.backend = e.index;
      eps.emplace_back(e.key(), ev);
    }
  }
  if (auto st = om.sync_addresses(vips, eps); !st) return st;
  if (!cgroup.empty())
    if (auto st = daemon::set_obj_progs(layout, cgroup, !s.services.empty()); !st) return st;
  return om.set_enabled(!s.services.empty());
}

// The caller class of every pod the CNI plugin recorded (namespace, name);
// pods enrolled by hand keep what `enroll --class-id` wrote. Records of pods
// that left mc_pods go.
void sync_pods(const PinnedMaps& maps, const ObjMaps& om, const Services& s) {
  auto pods = maps.pods();
  auto recs = maps.cni_pods();
  auto have = om.pods();
  if (!pods || !recs || !have) return;
  std::set<uint64_t> live;
  for (const auto& [cookie, p] : *pods) live.insert(cookie);
  for (const auto& [k, rec] : *recs) {
    if (!live.count(rec.netns_cookie)) continue;
    mc_obj_pod op{};
    std::map<std::string, std::string> ann;
    std::string cc(rec.caller_class, strnlen(rec.caller_class, sizeof(rec.caller_class)));
    if (!cc.empty()) ann[cni::kCallerClassAnnotation] = cc;
    op.cls = classify(s, std::string(rec.pod_namespace, strnlen(rec.pod_namespace, sizeof(rec.pod_namespace))),
                      std::string(rec.pod_name, strnlen(rec.pod_name, sizeof(rec.pod_name))), ann);
    op.flags = (rec.pod.flags & MC_POD_F_INTRA) ? MC_OBJ_POD_F_SIDECAR : 0;
    om.put_pod(rec.netns_cookie, op);
  }
  for (const auto& [cookie, op] : *have)
    if (!live.count(cookie)) om.del_pod(cookie);
}

std::vector<uint32_t> service_ids(const Services& s) {
  std::vector<uint32_t> ids;
  for (const auto& svc : s.services) ids.push_back(svc.id);
  return ids;
}

nlohmann::json latency_json(const LatencySummary& l) {
  return {{"count", l.count}, {"p50", l.p50_ms}, {"p90", l.p90_ms},
          {"p95", l.p95_ms},  {"p99", l.p99_ms}, {"mean", l.mean_ms}};
}

bool mtime_changed(const std::string& path, timespec* seen) {
  struct stat sb {};
  if (::stat(path.c_str(), &sb) != 0) return false;
  bool changed = sb.st_mtim.tv_sec != seen->tv_sec || sb.st_mtim.tv_nsec != seen->tv_nsec;
  *seen = sb.st_mtim;
  return changed;
}

}  // namespace

Runtime::Runtime(const PinLayout& layout, RuntimeOptions opts)
    : layout_(layout), opts_(std::move(opts)), st_(std::make_unique<State>(opts_.history)) {}

Result<std::unique_ptr<Runtime>> Runtime::start(const PinLayout& layout, const RuntimeOptions& opts) {
  std::unique_ptr<Runtime> rt(new Runtime(layout, opts));
  auto maps = PinnedMaps::open(layout);
  if (!maps) return maps.error();
  ObjMaps om(*maps);
  if (!opts.services_file.empty()) {
    mtime_changed(opts.services_file, &rt->st_->mtime);
    auto s = load_services(opts.services_file);
    if (!s) {
      Error e = s.error();
      e.hint = "fix the service file (" + opts.services_file + ") or start without --services";
      return e;
    }
    assign_ids(*s, nullptr);
    rt->st_->services = std::move(*s);
    rt->st_->have_services = true;
  }
  if (auto st = sync_services(om, rt->st_->services, layout, opts.cgroup); !st) return st.error();
  sync_pods(*maps, om, rt->st_->services);
  // An action left by an earlier daemon stays until its TTL (restart safety).
  if (auto c = om.ctl(); c) rt->st_->generation = c->generation;
  if (!opts.api.listen.empty() && opts.api.listen != "off") {
    ApiHandlers h;
    Runtime* self = rt.get();
    h.windows = [self](uint64_t since, size_t max) { return self->windows(since, max); };
    h.put_action = [self](const nlohmann::json& d) { return self->put_action(d); };
    h.status = [self] { return self->status(); };
    h.clear = [self] { return self->clear(); };
    try {
      rt->api_.emplace(ApiServer::start(opts.api, std::move(h)));
    } catch (const Error& e) {
      return e;
    }
  }
  rt->thread_ = std::thread([self = rt.get()] { self->loop(); });
  log::info("objectives ready", {{"services", rt->st_->services.services.size()},
                                 {"services_file", opts.services_file},
                                 {"api", opts.api.listen}});
  return rt;
}

Runtime::~Runtime() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (api_) api_->stop();
}

void Runtime::loop() {
  using clock = std::chrono::steady_clock;
  auto next = clock::now();
  while (!stop_) {
    next += std::chrono::seconds(1);
    while (!stop_ && clock::now() < next) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (stop_) break;
    tick();
  }
}

void Runtime::tick() {
  std::lock_guard<std::mutex> g(mu_);
  auto maps = PinnedMaps::open(layout_);
  if (!maps) return;  // pins gone (detach): cmd_run exits
  ObjMaps om(*maps);
  State& s = *st_;
  if (!opts_.services_file.empty() && mtime_changed(opts_.services_file, &s.mtime)) {
    auto next = load_services(opts_.services_file);
    if (!next) {
      s.load_error = next.error().format();
      log::error("the service file changed and is not valid: the services in force stay",
                 {{"file", opts_.services_file}, {"error", s.load_error}});
    } else {
      assign_ids(*next, &s.services);
      s.services = std::move(*next);
      s.load_error.clear();
      if (auto st = sync_services(om, s.services, layout_, opts_.cgroup); !st)
        log::error("couldn't write the services to the maps", {{"error", st.error().format()}});
      else
        log::info("service file reloaded", {{"services", s.services.services.size()}});
    }
  }
  sync_pods(*maps, om, s.services);
  if (auto rows = om.stats(service_ids(s.services)); rows)
    s.store.add_snapshot(monotonic_ns(), std::move(*rows), s.services);
  // The controller's TTL: said once per action.
  if (auto c = om.ctl(); c && c->generation) {
    bool expired = c->expires_ns && monotonic_ns() > c->expires_ns;
    if (expired && !s.expiry_logged)
      log::warn(
          "the action's TTL passed without a new one from the controller: no control (plain routing, no "
          "blocking) until the next action",
          {{"generation", c->generation}});
    s.expiry_logged = expired;
  }
}

ApiReply Runtime::windows(uint64_t since, size_t max) {
  std::lock_guard<std::mutex> g(mu_);
  return {200, st_->store.windows_since(since, max ? max : opts_.history)};
}

ApiReply Runtime::put_action(const nlohmann::json& doc) {
  std::lock_guard<std::mutex> g(mu_);
  auto maps = PinnedMaps::open(layout_);
  if (!maps) return error_reply(503, maps.error().format());
  ObjMaps om(*maps);
  auto c = om.ctl();
  if (!c) return error_reply(503, c.error().format());
  auto act = compile_action(doc, st_->services, c->generation);
  if (!act) return error_reply(400, act.error().what);
  std::vector<ActionSlot> slots;
  for (const auto& sl : act->slots) {
    ActionSlot a;
    a.svc = sl.svc;
    a.cls = sl.cls;
    a.action = sl.a;
    slots.push_back(a);
  }
  if (auto st = om.apply(act->generation, act->ttl_ms * 1000000ull, slots); !st)
    return error_reply(st.error().err == EINVAL ? 409 : 500, st.error().what);
  st_->generation = act->generation;
  st_->action_doc = doc;
  st_->expiry_logged = false;
  return {200, {{"generation", act->generation}, {"ttl_ms", act->ttl_ms}, {"slots", slots.size()}}};
}

ApiReply Runtime::clear() {
  std::lock_guard<std::mutex> g(mu_);
  auto maps = PinnedMaps::open(layout_);
  if (!maps) return error_reply(503, maps.error().format());
  if (auto st = ObjMaps(*maps).clear(); !st) return error_reply(500, st.error().format());
  st_->action_doc = nullptr;
  log::info("objectives action cleared: no control");
  return {200, {{"cleared", true}}};
}

ApiReply Runtime::status() {
  std::lock_guard<std::mutex> g(mu_);
  auto maps = PinnedMaps::open(layout_);
  if (!maps) return error_reply(503, maps.error().format());
  ObjMaps om(*maps);
  const Services& svcs = st_->services;
  nlohmann::json j;
  auto en = om.enabled();
  j["enabled"] = en && *en;
  j["services_file"] = opts_.services_file;
  if (!st_->load_error.empty()) j["services_file_error"] = st_->load_error;
  nlohmann::json sj = to_json(svcs);
  j["services"] = sj.value("services", nlohmann::json::array());
  j["classes"] = sj.value("classes", nlohmann::json::array());
  nlohmann::json a = {{"generation", 0}};
  if (auto c = om.ctl(); c && c->generation) {
    uint64_t now = monotonic_ns();
    a = {{"generation", c->generation},
         {"half", c->half},
         {"expired", c->expires_ns != 0 && now > c->expires_ns},
         {"expires_in_ms", c->expires_ns > now ? static_cast<int64_t>((c->expires_ns - now) / 1000000) : 0}};
    if (!st_->action_doc.is_null()) a["document"] = st_->action_doc;
  }
  j["action"] = a;
  nlohmann::json cj = nlohmann::json::object();
  if (auto cs = om.counters())
    for (size_t i = 0; i < cs->size(); ++i) cj[std::string(kObjCounterNames[i])] = (*cs)[i];
  j["counters"] = cj;
  // Totals since the maps were made: every row with something in it.
  nlohmann::json totals = nlohmann::json::array();
  if (auto rows = om.stats(service_ids(svcs)))
    for (const auto& svc : svcs.services)
      for (uint32_t be = 0; be <= MC_OBJ_BACKEND_ALL; ++be)
        for (uint32_t cls = 0; cls < MC_OBJ_MAX_CLASSES; ++cls) {
          const mc_obj_stat& r = (*rows)[mc_obj_stat_index(svc.id, be, cls)];
          if (!r.offered && !r.conns && !r.requests && !r.blocked) continue;
          std::string backend = "all";
          if (be != MC_OBJ_BACKEND_ALL) {
            const Endpoint* e = svc.endpoint_at(be);
            backend = e ? e->addr() : "backend" + std::to_string(be);
          }
          totals.push_back({{"service", svc.key()},
                            {"backend", backend},
                            {"class", svcs.class_name(cls)},
                            {"offered", r.offered},
                            {"admitted", r.admitted},
                            {"blocked", r.blocked},
                            {"conns", r.conns},
                            {"requests", r.requests},
                            {"completed", r.completed},
                            {"unanswered", r.unanswered},
                            {"conn_done", r.conn_done},
                            {"req_sum_ns", r.req_sum_ns},
                            {"conn_sum_ns", r.conn_sum_ns},
                            {"request_ms", latency_json(summarize(r.req_hist, r.completed, r.req_sum_ns))},
                            {"connection_ms", latency_json(summarize(r.conn_hist, r.conn_done, r.conn_sum_ns))}});
        }
  j["totals"] = totals;
  j["windows_seq"] = st_->store.last_seq();
  auto last = st_->store.windows_since(st_->store.last_seq() ? st_->store.last_seq() - 1 : 0, 1);
  j["last_window"] = last;
  return {200, j};
}

std::string Runtime::prometheus() {
  std::lock_guard<std::mutex> g(mu_);
  return st_->store.prometheus(st_->services);
}

}  // namespace meshcut::obj
