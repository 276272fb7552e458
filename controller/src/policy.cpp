// SPDX-License-Identifier: Apache-2.0
#include "meshcut/control/policy.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <set>

namespace meshcut::control {
namespace {

constexpr double kEps = 1e-9;

void compose(int left, int k, std::vector<int>& cur, std::vector<std::vector<int>>& out) {
  if (k == 1) {
    cur.push_back(left);
    out.push_back(cur);
    cur.pop_back();
    return;
  }
  for (int i = left; i >= 0; --i) {  // the first backend's share first: all-on-one-backend comes first
    cur.push_back(i);
    compose(left - i, k - 1, cur, out);
    cur.pop_back();
  }
}

// The scalars of one candidate; ServiceChoice is built for the winners only.
struct Eval {
  bool feasible = false, met = true;
  double value = 0, carried = 0, worst = 0;
  double util = 0;  // highest backend utilisation were all the offered load admitted
};

// a before b in the policy's order (strictly).
bool before(const Eval& a, const Eval& b) {
  if (a.feasible != b.feasible) return a.feasible;
  if (a.met != b.met) return a.met;
  if (a.feasible && std::fabs(a.value - b.value) > kEps * std::max(1.0, std::fabs(b.value))) return a.value > b.value;
  if (std::fabs(a.worst - b.worst) > kEps) return a.worst < b.worst;
  // Last, the routing that would best carry the whole offered load: with nothing admitted every routing
  // ties, and this one is where the load should go once it is admitted again.
  if (std::fabs(a.util - b.util) > kEps) return a.util < b.util;
  return false;
}

struct ServiceSearch {
  const ServiceObjective& so;
  std::vector<std::string> backends;
  std::vector<const BackendModel*> models;
  std::vector<std::string> classes;  // enumerated classes (offered > 0)
  std::vector<double> offered, cw;   // per enumerated class
  double margin = 0;

  Eval eval(const std::vector<double>& w, const std::vector<double>& f, std::vector<double>* per_backend) const {
    Eval e;
    double adm = 0, all = 0;
    for (size_t c = 0; c < classes.size(); ++c) {
      all += offered[c];
      adm += f[c] * offered[c];
      e.value += f[c] * offered[c] * cw[c];
    }
    e.carried = adm;
    if (per_backend) per_backend->assign(backends.size(), 0.0);
    for (size_t b = 0; b < backends.size(); ++b) {
      if (w[b] <= 0) continue;
      e.util = std::max(e.util, models[b]->utilization(w[b] * all));
      if (adm <= 0) continue;
      double p = models[b]->predict_ms(w[b] * adm, so.latency.percentile);
      if (per_backend) (*per_backend)[b] = p;
      e.worst = std::max(e.worst, p);
    }
    e.feasible = adm <= 0 || e.worst * (1 + margin) <= so.latency.bound_ms;
    e.met = !so.throughput_rps || adm + kEps >= *so.throughput_rps;
    return e;
  }

  ServiceChoice choice(const std::vector<double>& w, const std::vector<double>& f,
                       const std::map<std::string, double>& all_offered) const {
    ServiceChoice c;
    c.service = so.service;
    c.backends = backends;
    c.weights = w;
    c.offered = all_offered;
    for (const auto& [cls, rps] : all_offered) c.admit[cls] = 1.0;
    for (size_t i = 0; i < classes.size(); ++i) c.admit[classes[i]] = f[i];
    Eval e = eval(w, f, &c.backend_ms);
    c.predicted_ms = e.worst;
    c.bound_ms = so.latency.bound_ms;
    c.margin = margin;
    c.value = e.value;
    c.carried_rps = e.carried;
    c.feasible = e.feasible;
    c.throughput_met = e.met;
    return c;
  }
};

}  // namespace

std::vector<std::vector<int>> compositions(int n, int k) {
  std::vector<std::vector<int>> out;
  if (k <= 0 || n < 0) return out;
  std::vector<int> cur;
  compose(n, k, cur, out);
  return out;
}

Load load_from_window(const nlohmann::json& window) {
  Load l;
  if (!window.is_object() || !window.contains("rows") || !window["rows"].is_array()) return l;
  for (const nlohmann::json& r : window["rows"]) {
    if (!r.is_object() || r.value("backend", "") != "all") continue;
    double rps = r.value("rate", nlohmann::json::object()).value("offered", 0.0);
    l[r.value("service", "")][r.value("class", "")] += rps;
  }
  return l;
}

nlohmann::json probe_routing(const obj::Services& services, int routing_levels, std::mt19937_64& rng,
                             uint64_t generation, uint64_t ttl_ms) {
  nlohmann::json svcs = nlohmann::json::object();
  for (const obj::Service& s : services.services) {
    if (s.endpoints.empty()) continue;
    auto comps = compositions(routing_levels, static_cast<int>(s.endpoints.size()));
    const auto& c = comps[rng() % comps.size()];
    nlohmann::json w = nlohmann::json::object();
    for (size_t b = 0; b < s.endpoints.size(); ++b)
      w[s.endpoints[b].addr()] = static_cast<double>(c[b]) / routing_levels;
    nlohmann::json classes = nlohmann::json::object();
    classes[obj::kDefaultClassName] = {{"weights", w}};
    for (const obj::CallerClass& cc : services.classes) classes[cc.name] = {{"weights", w}};
    svcs[s.key()] = {{"classes", classes}};
  }
  return {{"generation", generation}, {"ttl_ms", ttl_ms}, {"services", svcs}};
}

nlohmann::json action_document(const std::vector<ServiceChoice>& choices, uint64_t generation,
                               const PolicyOptions& opt) {
  nlohmann::json svcs = nlohmann::json::object();
  for (const ServiceChoice& c : choices) {
    if (!c.note.empty()) continue;  // not controlled
    nlohmann::json weights = nlohmann::json::object();
    for (size_t b = 0; b < c.backends.size(); ++b) weights[c.backends[b]] = c.weights[b];
    nlohmann::json classes = nlohmann::json::object();
    for (const auto& [cls, f] : c.admit) {
      nlohmann::json e = {{"weights", weights}};
      if (f < 1 - kEps) {
        auto it = c.offered.find(cls);
        double rate = f * (it == c.offered.end() ? 0.0 : it->second);
        rate = std::round(rate * 1000) / 1000;  // the node keeps milli-connects per second
        e["rate"] = rate;
        // Rate 0 without a burst blocks every connect (the node's rule); else a burst of burst_s of the rate.
        if (rate > 0) e["burst"] = std::max<int64_t>(1, std::llround(rate * opt.burst_s));
      }
      classes[cls] = e;
    }
    svcs[c.service] = {{"classes", classes}};
  }
  return {{"generation", generation}, {"ttl_ms", opt.ttl_ms}, {"services", svcs}};
}

Decision SearchPolicy::decide(const obj::Services& services, const Load& load, const Model& model,
                              const Objectives& objectives, uint64_t generation) {
  auto t0 = std::chrono::steady_clock::now();
  Decision d;
  const int R = objectives.grid.routing_levels(), A = objectives.grid.admission_levels();
  std::set<std::string> controlled;
  for (const ServiceObjective& so : objectives.services) {
    ServiceChoice skip;
    skip.service = so.service;
    skip.bound_ms = so.latency.bound_ms;
    const obj::Service* svc = services.find(so.service);
    if (!svc) {
      skip.note = "not in the service file";
      d.chosen.push_back(skip);
      d.runner_up.push_back(skip);
      continue;
    }
    ServiceSearch s{so, {}, {}, {}, {}, {}, 0};
    double err = 0, q90 = 1;
    for (const obj::Endpoint& e : svc->endpoints) {
      s.backends.push_back(e.addr());
      const BackendModel* m = model.find(so.service, e.addr());
      if (!m) {
        skip.note = "backend " + e.addr() + " has no model yet";
        break;
      }
      s.models.push_back(m);
      err = std::max(err, m->nmae[percentile_index(so.latency.percentile)]);
      q90 = std::max(q90, m->ratio_q90[percentile_index(so.latency.percentile)]);
    }
    if (!skip.note.empty() || s.backends.empty()) {
      if (skip.note.empty()) skip.note = "no endpoints";
      d.chosen.push_back(skip);
      d.runner_up.push_back(skip);
      continue;
    }
    s.margin = std::min(opt_.max_margin,
                        opt_.base_margin + (opt_.quantile_margin ? q90 - 1 : 0) + opt_.error_margin_factor * err);
    // Every class of the service file gets a slot (routing for all); only classes with load are admission-searched.
    std::map<std::string, double> all_offered;
    all_offered[obj::kDefaultClassName] = 0;
    for (const obj::CallerClass& c : services.classes) all_offered[c.name] = 0;
    if (auto it = load.find(so.service); it != load.end())
      for (const auto& [cls, rps] : it->second)
        if (services.class_id(cls)) all_offered[cls] = rps;
    for (const auto& [cls, rps] : all_offered) {
      if (rps <= 0) continue;
      s.classes.push_back(cls);
      s.offered.push_back(rps);
      s.cw.push_back(so.class_weight(cls));
    }
    const ServiceChoice* cur = nullptr;
    if (auto it = current_.find(so.service); it != current_.end() && it->second.backends == s.backends)
      cur = &it->second;

    const size_t n = s.backends.size(), k = s.classes.size();
    auto routes = compositions(R, static_cast<int>(n));
    std::vector<double> w(n), f(k);
    size_t n_adm = 1;
    for (size_t c = 0; c < k; ++c) n_adm *= static_cast<size_t>(A + 1);
    Eval best, second;
    bool have_best = false, have_second = false;
    std::vector<double> best_w, best_f, second_w, second_f;
    for (const auto& r : routes) {
      bool route_ok = true;
      for (size_t b = 0; b < n; ++b) {
        w[b] = static_cast<double>(r[b]) / R;
        if (cur && std::fabs(w[b] - cur->weights[b]) > opt_.max_route_change + kEps) route_ok = false;
      }
      if (!route_ok) continue;
      for (size_t ai = 0; ai < n_adm; ++ai) {
        size_t x = ai;
        bool adm_ok = true;
        for (size_t c = 0; c < k; ++c) {
          // Highest fraction first: on a tie the grid's order prefers carrying more of each class.
          f[c] = static_cast<double>(A - static_cast<int>(x % static_cast<size_t>(A + 1))) / A;
          x /= static_cast<size_t>(A + 1);
          if (cur) {
            auto it = cur->admit.find(s.classes[c]);
            if (it != cur->admit.end() && f[c] - it->second > opt_.max_admit_increase + kEps) adm_ok = false;
          }
        }
        if (!adm_ok) continue;
        ++d.candidates;
        Eval e = s.eval(w, f, nullptr);
        if (!have_best || before(e, best)) {
          if (have_best) second = best, second_w = best_w, second_f = best_f, have_second = true;
          best = e, best_w = w, best_f = f, have_best = true;
        } else if (!have_second || before(e, second)) {
          second = e, second_w = w, second_f = f, have_second = true;
        }
      }
    }
    ServiceChoice chosen = s.choice(best_w, best_f, all_offered);
    if (cur) {
      // Hysteresis: the current weights and fractions under this window's load and model.
      std::vector<double> cf(k);
      for (size_t c = 0; c < k; ++c) {
        auto it = cur->admit.find(s.classes[c]);
        cf[c] = it == cur->admit.end() ? 1.0 : it->second;
      }
      Eval ce = s.eval(cur->weights, cf, nullptr);
      // Carrying nothing is never worth keeping: with no value at stake every candidate ties, and the
      // search's tie-breaks are what move the routing towards where the load can be admitted again.
      if (ce.feasible && ce.value > kEps && (ce.met || !best.met) &&
          best.value <= ce.value * (1 + opt_.hysteresis) + kEps) {
        ServiceChoice kept = s.choice(cur->weights, cf, all_offered);
        kept.kept = true;
        if (!(kept.weights == chosen.weights && kept.admit == chosen.admit)) {
          d.runner_up.push_back(chosen);
          chosen = kept;
        } else {
          d.runner_up.push_back(have_second ? s.choice(second_w, second_f, all_offered) : ServiceChoice{});
        }
        d.chosen.push_back(chosen);
        controlled.insert(so.service);
        continue;
      }
    }
    d.runner_up.push_back(have_second ? s.choice(second_w, second_f, all_offered) : ServiceChoice{});
    if (!chosen.feasible) chosen.note.clear();  // still controlled: the least-bad action (see explain)
    d.chosen.push_back(chosen);
    controlled.insert(so.service);
  }
  // Remember what is now in force; a service that left the objectives is forgotten.
  std::map<std::string, ServiceChoice> next;
  for (const ServiceChoice& c : d.chosen) {
    d.value += c.value;
    if (controlled.count(c.service)) next[c.service] = c;
  }
  current_ = std::move(next);
  d.action = action_document(d.chosen, generation, opt_);
  d.decide_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return d;
}

}  // namespace meshcut::control
