// SPDX-License-Identifier: Apache-2.0
#include "meshcut/control/run.h"

#include <httplib.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <future>
#include <sstream>
#include <thread>

#include "meshcut/obj/windows.h"

namespace meshcut::control {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

class HttpNode final : public NodeLink {
 public:
  HttpNode(const NodeAddr& a, const std::string& token, double timeout_s) : cl_(a.host, a.port), name_(a.name) {
    auto us = std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6));
    cl_.set_connection_timeout(us);
    cl_.set_read_timeout(us);
    cl_.set_write_timeout(us);
    cl_.set_keep_alive(true);
    if (!token.empty()) cl_.set_bearer_token_auth(token);
  }
  Result<json> windows_since(uint64_t seq) override {
    auto r = cl_.Get("/v1/windows?since=" + std::to_string(seq));
    auto body = reply(r, "GET /v1/windows");
    if (!body) return body.error();
    if (!body->is_object() || !body->contains("windows") || !(*body)["windows"].is_array())
      return make_error(name_ + ": GET /v1/windows: the reply has no windows list", 0,
                        "is this meshcutd's objectives API (meshcutd run --services)?");
    return body;
  }
  Status put_action(const json& action) override {
    auto r = cl_.Put("/v1/action", action.dump(), "application/json");
    auto body = reply(r, "PUT /v1/action");
    if (!body) return body.error();
    return ok_status();
  }
  Status clear() override {
    auto r = cl_.Delete("/v1/action");
    auto body = reply(r, "DELETE /v1/action");
    if (!body) return body.error();
    return ok_status();
  }

 private:
  Result<json> reply(const httplib::Result& r, const std::string& what) {
    if (!r) {
      auto e = r.error();
      int err = e == httplib::Error::Connection          ? ECONNREFUSED
                : e == httplib::Error::ConnectionTimeout ? ETIMEDOUT
                : e == httplib::Error::Read              ? ETIMEDOUT
                                                         : EIO;
      return make_error(name_ + ": " + what + ": " + httplib::to_string(e), err,
                        "is meshcutd running there with --services and --api-addr on that address?");
    }
    json body = json::parse(r->body, nullptr, false);
    if (r->status / 100 != 2) {
      std::string why = body.is_object() && body.contains("error") && body["error"].is_string()
                            ? body["error"].get<std::string>()
                            : r->body.substr(0, 200);
      return make_error(name_ + ": " + what + " refused (HTTP " + std::to_string(r->status) + "): " + why, 0,
                        r->status == 401 ? "pass the node's token with --api-token-file" : "");
    }
    if (body.is_discarded()) return make_error(name_ + ": " + what + ": the reply is not JSON", 0, "");
    return body;
  }
  httplib::Client cl_;
  std::string name_;
};

// One line: what failed, the errno text if any, and the fix.
std::string describe(const Error& e) {
  std::string s = e.what;
  if (e.err) s += ": " + errno_text(e.err);
  if (!e.hint.empty()) s += " (" + e.hint + ")";
  return s;
}

}  // namespace

Result<std::vector<NodeAddr>> parse_nodes(std::string_view list) {
  std::vector<NodeAddr> out;
  auto bad = [](const std::string& e, const std::string& why) {
    return make_error("--nodes: \"" + e + "\": " + why, 0,
                      "give HOST:PORT[,HOST:PORT...] (or NAME=HOST:PORT), the nodes' meshcutd --api-addr");
  };
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    std::string e(list.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    start = comma == std::string_view::npos ? list.size() + 1 : comma + 1;
    if (e.empty()) return bad(e, "empty entry");
    NodeAddr a;
    std::string hp = e;
    if (auto eq = e.find('='); eq != std::string::npos) {
      a.name = e.substr(0, eq);
      hp = e.substr(eq + 1);
      if (a.name.empty()) return bad(e, "empty name before '='");
    }
    auto colon = hp.rfind(':');
    if (colon == std::string::npos || colon == 0) return bad(e, "expected HOST:PORT");
    a.host = hp.substr(0, colon);
    std::string port = hp.substr(colon + 1);
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit))
      return bad(e, "the port must be a number in 1..65535");
    unsigned long p = std::stoul(port);
    if (p == 0 || p > 65535) return bad(e, "the port must be a number in 1..65535");
    a.port = static_cast<uint16_t>(p);
    if (a.name.empty()) a.name = hp;
    for (const NodeAddr& o : out)
      if (o.name == a.name) return bad(e, "named twice");
    out.push_back(a);
  }
  if (out.empty()) return bad("", "no node given");
  return out;
}

std::unique_ptr<NodeLink> http_node(const NodeAddr& addr, const std::string& token, double timeout_s) {
  return std::make_unique<HttpNode>(addr, token, timeout_s);
}

Result<RunPolicy> run_policy_from_string(std::string_view s) {
  if (s == "search") return RunPolicy::kSearch;
  if (s == "static") return RunPolicy::kStatic;
  if (s == "none") return RunPolicy::kNone;
  if (s == "ppo") return RunPolicy::kPpo;
  return make_error("unknown policy \"" + std::string(s) + "\"", 0, "use search, static, ppo or none");
}

const char* to_string(RunPolicy p) {
  switch (p) {
    case RunPolicy::kSearch: return "search";
    case RunPolicy::kStatic: return "static";
    case RunPolicy::kNone: return "none";
    case RunPolicy::kPpo: return "ppo";
  }
  return "?";
}

json TickReport::to_json() const {
  json ns = json::array();
  for (const NodeReport& n : nodes)
    ns.push_back({{"name", n.name},
                  {"fetched", n.fetched},
                  {"pushed", n.pushed},
                  {"windows", n.windows},
                  {"cursor", n.cursor},
                  {"missed", n.missed},
                  {"error", n.error}});
  json ss = json::array();
  for (const ServiceReport& s : services) ss.push_back(s.to_json());
  return {{"tick", tick},
          {"phase", phase},
          {"policy", control::to_string(policy)},
          {"nodes", ns},
          {"nodes_answered", nodes_answered},
          {"nodes_pushed", nodes_pushed},
          {"services", ss},
          {"action", action},
          {"probe", probe},
          {"window", window},
          {"decide_ms", decide_ms},
          {"tick_ms", tick_ms}};
}

namespace {

ProbeOptions probe_options(const RunOptions& opt) {
  ProbeOptions p;
  p.kind = opt.probe;
  p.ttl_ms = std::max<uint64_t>(opt.policy_options.ttl_ms, 1000);
  return p;
}

}  // namespace

Controller::Controller(obj::Services services, Objectives objectives, RunOptions opt, std::vector<NodeAddr> addrs,
                       std::vector<std::unique_ptr<NodeLink>> links)
    : services_(std::move(services)),
      objectives_(std::move(objectives)),
      opt_(opt),
      search_(opt.policy_options),
      prober_(probe_options(opt), opt.seed ^ 0x5eed) {
  model_.set_saturation(opt.probe == ProbeKind::kBoundary);
  for (size_t i = 0; i < addrs.size() && i < links.size(); ++i) {
    Node n;
    n.addr = addrs[i];
    n.link = std::move(links[i]);
    nodes_.push_back(std::move(n));
  }
}

void Controller::set_objectives(Objectives o) {
  objectives_ = std::move(o);
  search_.reset();  // hysteresis is about the old objectives' choice
  static_ready_ = false;
}

void Controller::set_services(obj::Services s) {
  services_ = std::move(s);
  search_.reset();
  static_ready_ = false;
}

bool Controller::all_modelled() const {
  for (const ServiceObjective& so : objectives_.services) {
    const obj::Service* svc = services_.find(so.service);
    if (!svc) continue;  // not in the service file: nothing to learn
    for (const obj::Endpoint& e : svc->endpoints)
      if (!model_.find(so.service, e.addr())) return false;
  }
  return true;
}

uint64_t Controller::next_generation() {
  auto now_ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  generation_ = std::max(generation_ + 1, now_ms);
  return generation_;
}

json Controller::probe_action(const Load& load, uint64_t gen) {
  // A boundary probe needs the model as it stands: refit on what was seen so far (a backend not fittable yet
  // is probed by the random rule).
  if (opt_.probe == ProbeKind::kBoundary) (void)model_.fit();
  Probe p = prober_.next(services_, objectives_, load, model_, gen);
  probe_why_ = p.why;
  return p.action;
}

Status Controller::clear_all() {
  std::string errs;
  for (Node& n : nodes_)
    if (auto st = n.link->clear(); !st) errs += (errs.empty() ? "" : "; ") + st.error().what;
  if (!errs.empty()) return make_error("clearing the nodes' actions: " + errs, 0, "");
  return ok_status();
}

TickReport Controller::tick() {
  auto t0 = Clock::now();
  TickReport rep;
  rep.tick = ++ticks_;
  rep.policy = opt_.policy;
  // Fetch every node at once; each call is bounded by its client's timeout.
  std::vector<std::future<Result<json>>> futs;
  // A node whose next window is not out yet (the nodes' 1 s clocks and ours
  // are not in phase) is asked again every 50 ms for up to align_wait_ms, so
  // that a tick merges one window of every node instead of none and two.
  const auto deadline = t0 + std::chrono::milliseconds(opt_.align_wait_ms);
  for (Node& n : nodes_) {
    NodeLink* link = n.link.get();
    uint64_t since = n.cursor;
    bool wait = n.primed && opt_.align_wait_ms > 0;
    futs.push_back(std::async(std::launch::async, [link, since, wait, deadline] {
      for (;;) {
        auto r = link->windows_since(since);
        bool fresh = false;
        if (r)
          for (const json& w : (*r)["windows"]) fresh = fresh || w.value("seq", uint64_t{0}) > since;
        if (!r || fresh || !wait || Clock::now() + std::chrono::milliseconds(50) > deadline) return r;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }));
  }
  std::vector<json> per_node;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    Node& n = nodes_[i];
    NodeReport nr;
    nr.name = n.addr.name;
    auto r = futs[i].get();
    if (!r) {
      ++n.fetch_errors;
      n.up = false;
      nr.error = describe(r.error());
    } else {
      n.up = true;
      nr.fetched = true;
      ++rep.nodes_answered;
      const json& body = *r;
      if (!n.primed) {
        // The node's history is not this run's: start at its newest window.
        n.primed = true;
        n.cursor = body.value("last_seq", uint64_t{0});
      } else {
        std::vector<json> ws;
        for (const json& w : body["windows"]) {
          uint64_t seq = w.value("seq", uint64_t{0});
          if (seq <= n.cursor) continue;
          n.cursor = seq;
          ws.push_back(w);
        }
        uint64_t missed = body.value("missed", uint64_t{0});
        n.missed += missed;
        nr.missed = missed;
        nr.windows = ws.size();
        n.windows += ws.size();
        if (!ws.empty()) per_node.push_back(ws.size() == 1 ? ws[0] : obj::concat_windows(ws));
      }
    }
    nr.cursor = n.cursor;
    rep.nodes.push_back(std::move(nr));
  }
  rep.window = obj::merge_nodes(per_node);
  const bool have_window = !per_node.empty();
  if (have_window) model_.add_window(rep.window);
  const Load load = load_from_window(rep.window);

  for (const ServiceObjective& so : objectives_.services) rep.services.push_back(report_service(rep.window, so));

  // Decide.
  json action;  // null: push nothing
  // Learning lasts learn_windows, and beyond while a service with an objective
  // has a backend the model cannot predict yet (too few windows with load on
  // it), up to 4 x learn_windows: controlling without a model would leave the
  // service uncontrolled anyway.
  bool learning = opt_.policy != RunPolicy::kNone && learned_ < opt_.learn_windows;
  if (!learning && opt_.policy != RunPolicy::kNone && !fitted_ && learned_ > 0 && learned_ < 4 * opt_.learn_windows) {
    (void)model_.fit();
    learning = !all_modelled();
    fitted_ = !learning;
  }
  rep.phase = learning ? "learn" : "control";
  if (learning) {
    if (have_window) {
      for (const auto& [svc, cls] : load)
        for (const auto& [c, v] : cls) learn_load_sum_[svc][c] += v;
      ++learn_load_n_;
    }
    // A new probe every probe_hold windows, pushed again every window with a
    // new generation so that its TTL keeps running from the controller's last word.
    if (learned_ % std::max<size_t>(1, opt_.probe_hold) == 0 || probe_.is_null()) probe_ = probe_action(load, 0);
    action = probe_;
    action["generation"] = next_generation();
    rep.probe = probe_why_;
    ++learned_;
  } else if (opt_.policy != RunPolicy::kNone) {
    bool refit = !fitted_ || (opt_.refit_every && ticks_ % opt_.refit_every == 0);
    if (refit) {
      auto f = model_.fit();
      fitted_ = fitted_ || f.ok() || !model_.backends().empty();
    }
    if (opt_.policy == RunPolicy::kSearch || opt_.policy == RunPolicy::kPpo) {
      // ppo without a model (a RunOptions mistake) decides as search rather than not at all.
      Policy& policy = opt_.policy == RunPolicy::kPpo && opt_.custom ? *opt_.custom : static_cast<Policy&>(search_);
      rep.decision = policy.decide(services_, load, model_, objectives_, next_generation());
      action = rep.decision.action;
    } else {
      if (!static_ready_) {
        Load mean = learn_load_sum_;
        for (auto& [svc, cls] : mean)
          for (auto& [c, v] : cls) v /= static_cast<double>(std::max<size_t>(1, learn_load_n_));
        SearchPolicy once(opt_.policy_options);
        rep.decision = once.decide(services_, mean, model_, objectives_, 0);
        static_choice_ = rep.decision.chosen;
        static_ready_ = true;
      } else {
        rep.decision.chosen = static_choice_;
      }
      action = action_document(static_choice_, next_generation(), opt_.policy_options);
      rep.decision.action = action;
    }
    rep.decide_ms = rep.decision.decide_ms;
    for (ServiceReport& s : rep.services)
      for (const ServiceChoice& c : rep.decision.chosen)
        if (c.service == s.service && c.note.empty()) s.controlled = true, s.predicted_ms = c.predicted_ms;
  }

  // Push to every node at once; a node that did not answer the fetch is still tried.
  if (!action.is_null()) {
    std::vector<std::future<Status>> pf;
    for (Node& n : nodes_) {
      NodeLink* link = n.link.get();
      pf.push_back(std::async(std::launch::async, [link, &action] { return link->put_action(action); }));
    }
    for (size_t i = 0; i < nodes_.size(); ++i) {
      auto st = pf[i].get();
      if (st) {
        rep.nodes[i].pushed = true;
        ++rep.nodes_pushed;
        continue;
      }
      ++nodes_[i].push_errors;
      if (st.error().err == 0) ++nodes_[i].refused;
      rep.nodes[i].error += (rep.nodes[i].error.empty() ? "" : "; ") + describe(st.error());
    }
  }
  rep.action = action;
  rep.tick_ms = ms_since(t0);
  last_ = rep;
  return rep;
}

std::string Controller::prometheus() const {
  std::ostringstream o;
  auto esc = obj::prometheus_escape;
  auto head = [&](const char* name, const char* type, const char* help) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  head("meshcut_control_ticks_total", "counter", "Windows the controller ran.");
  o << "meshcut_control_ticks_total " << ticks_ << "\n";
  head("meshcut_control_learning", "gauge", "1 while the controller probes to learn the model.");
  o << "meshcut_control_learning " << (last_.phase == "learn" ? 1 : 0) << "\n";
  head("meshcut_control_node_up", "gauge", "1 if the node answered the last fetch of windows.");
  for (const Node& n : nodes_) o << "meshcut_control_node_up{node=\"" << esc(n.addr.name) << "\"} " << n.up << "\n";
  struct C {
    const char* name;
    const char* help;
    uint64_t Node::*f;
  };
  const C cs[] = {
      {"meshcut_control_node_fetch_errors_total", "Fetches of windows that failed.", &Node::fetch_errors},
      {"meshcut_control_node_push_errors_total", "Actions not taken (refused or not delivered).", &Node::push_errors},
      {"meshcut_control_node_refused_total", "Actions the node refused (HTTP 4xx).", &Node::refused},
      {"meshcut_control_node_missed_windows_total", "Windows the node no longer had when read.", &Node::missed},
      {"meshcut_control_node_windows_total", "Windows read from the node.", &Node::windows}};
  for (const C& c : cs) {
    head(c.name, "counter", c.help);
    for (const Node& n : nodes_) o << c.name << "{node=\"" << esc(n.addr.name) << "\"} " << n.*c.f << "\n";
  }
  head("meshcut_control_objective_met", "gauge", "1 if the service met its latency bound in the last window.");
  for (const ServiceReport& s : last_.services)
    o << "meshcut_control_objective_met{service=\"" << esc(s.service) << "\"} " << (s.met ? 1 : 0) << "\n";
  head("meshcut_control_latency_seconds", "gauge",
       "The objective's percentile in the last window: measured, predicted for the action taken, and the bound.");
  for (const ServiceReport& s : last_.services) {
    std::pair<const char*, double> ks[] = {
        {"measured", s.measured_ms}, {"predicted", s.predicted_ms}, {"bound", s.bound_ms}};
    for (auto& [k, v] : ks)
      o << "meshcut_control_latency_seconds{service=\"" << esc(s.service) << "\",kind=\"" << k << "\"} " << v / 1e3
        << "\n";
  }
  head("meshcut_control_offered_rps", "gauge", "Requests offered per second in the last window.");
  for (const ServiceReport& s : last_.services)
    o << "meshcut_control_offered_rps{service=\"" << esc(s.service) << "\"} " << s.offered_rps << "\n";
  head("meshcut_control_carried_rps", "gauge", "Requests completed per second in the last window.");
  for (const ServiceReport& s : last_.services)
    o << "meshcut_control_carried_rps{service=\"" << esc(s.service) << "\"} " << s.carried_rps << "\n";
  head("meshcut_control_action_weight", "gauge", "Routing weight of the action in force, per backend.");
  head("meshcut_control_action_admit", "gauge", "Admitted fraction of the offered load, per class.");
  for (const ServiceChoice& c : last_.decision.chosen) {
    if (!c.note.empty()) continue;
    for (size_t b = 0; b < c.backends.size() && b < c.weights.size(); ++b)
      o << "meshcut_control_action_weight{service=\"" << esc(c.service) << "\",backend=\"" << esc(c.backends[b])
        << "\"} " << c.weights[b] << "\n";
    for (const auto& [cls, f] : c.admit)
      o << "meshcut_control_action_admit{service=\"" << esc(c.service) << "\",class=\"" << esc(cls) << "\"} " << f
        << "\n";
  }
  head("meshcut_control_decide_seconds", "gauge", "Time the last decision took.");
  o << "meshcut_control_decide_seconds " << last_.decide_ms / 1e3 << "\n";
  head("meshcut_control_generation", "gauge", "Generation of the last action pushed.");
  o << "meshcut_control_generation " << generation_ << "\n";
  head("meshcut_control_model_nmae", "gauge", "Worst held-out NMAE of the fitted backends, per percentile.");
  for (double p : kPercentiles)
    o << "meshcut_control_model_nmae{percentile=\"" << p << "\"} " << model_.nmae(p) << "\n";
  return o.str();
}

}  // namespace meshcut::control
