// SPDX-License-Identifier: Apache-2.0
#include "meshcut/control/sim.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>

#include "meshcut/obj/document.h"

namespace meshcut::control {
namespace {

using nlohmann::json;

std::string fmt(const char* f, double v) {
  char b[64];
  snprintf(b, sizeof b, f, v);
  return b;
}

}  // namespace

Result<TwinConfig> twin_config_from_json(const json& doc) {
  auto bad = [](const std::string& w) { return make_error("invalid twin scenario: " + w, 0, "fix the field named"); };
  try {
    if (!doc.is_object()) return bad("the document must be an object");
    TwinConfig c;
    if (doc.contains("classes")) c.classes = doc["classes"].get<std::vector<std::string>>();
    c.window_s = doc.value("windowSeconds", 1.0);
    c.seed = doc.value("seed", uint64_t{1});
    if (!doc.contains("services") || !doc["services"].is_array()) return bad("services must be a list");
    for (size_t i = 0; i < doc["services"].size(); ++i) {
      const json& s = doc["services"][i];
      std::string w = "services[" + std::to_string(i) + "]";
      TwinService ts;
      ts.key = s.value("service", "");
      if (!s.contains("backends") || !s["backends"].is_array()) return bad(w + ".backends must be a list");
      for (size_t b = 0; b < s["backends"].size(); ++b) {
        const json& be = s["backends"][b];
        std::string bw = w + ".backends[" + std::to_string(b) + "]";
        TwinBackend tb;
        tb.pod = be.value("pod", "");
        tb.addr = be.value("addr", "");
        tb.servers = be.value("servers", 1);
        json st = be.value("serviceTime", json::object());
        std::string kind = st.value("kind", "exponential");
        tb.service_time.mean_ms = st.value("meanMs", 10.0);
        tb.service_time.scv = st.value("scv", 1.0);
        if (kind == "exponential")
          tb.service_time.kind = ServiceTimeKind::kExponential;
        else if (kind == "deterministic")
          tb.service_time.kind = ServiceTimeKind::kDeterministic;
        else if (kind == "lognormal")
          tb.service_time.kind = ServiceTimeKind::kLognormal;
        else
          return bad(bw + ".serviceTime.kind must be exponential, deterministic or lognormal, got \"" + kind + "\"");
        ts.backends.push_back(tb);
      }
      if (s.contains("load")) {
        for (auto it = s["load"].begin(); it != s["load"].end(); ++it) {
          Pattern p;
          for (const json& step : *it) {
            if (!step.is_array() || step.size() != 2)
              return bad(w + ".load." + it.key() + " must be a list of [t_s, rps] steps");
            p.steps.push_back({step[0].get<double>(), step[1].get<double>()});
          }
          ts.load[it.key()] = p;
        }
      }
      c.services.push_back(ts);
    }
    return c;
  } catch (const json::exception& e) {
    return bad(e.what());
  }
}

Result<TwinConfig> load_twin_config(const std::string& path) {
  auto text = obj::read_file(path);
  if (!text) return text.error();
  auto docs = obj::parse_documents(*text);
  if (!docs) return docs.error();
  if (docs->size() != 1) return make_error(path + ": expected one document", 0, "");
  return twin_config_from_json(docs->front());
}

Status learn_model(Twin& t, Model& model, const Objectives& objectives, size_t windows, std::mt19937_64& rng,
                   uint64_t& generation, ProbeKind probe, size_t probe_hold) {
  const obj::Services& S = t.services();
  // A new probe every probe_hold windows (probe.h), from the model as it stands.
  ProbeOptions po;
  po.kind = probe;
  po.ttl_ms = 60000;
  Prober prober(po, probe == ProbeKind::kBoundary ? rng() : 0);
  const size_t hold = std::max<size_t>(1, probe_hold);
  if (probe == ProbeKind::kBoundary) model.set_saturation(true);
  json last;
  for (size_t i = 0; i < windows; ++i) {
    if (i % hold == 0) {
      json action;
      if (probe == ProbeKind::kBoundary) {
        (void)model.fit();
        action = prober.next(S, objectives, load_from_window(last), model, ++generation).action;
      } else {
        action = probe_routing(S, objectives.grid.routing_levels(), rng, ++generation, 60000);
      }
      auto st = t.apply(action);
      if (!st) return st.error();
    }
    last = t.step();
    // The window a new probe starts in is a transient (the queues move to the new loads): not a fit point.
    // (Boundary probing only: the random schedule's windows are all fed, as before it, so that its results stay.)
    if (probe == ProbeKind::kRandom || i % hold != 0 || hold == 1) model.add_window(last);
  }
  return ok_status();
}

Result<SimResult> simulate(const TwinConfig& cfg, const Objectives& objectives, const SimOptions& opt) {
  if (opt.policy == PolicyKind::kCustom && !opt.custom)
    return make_error("simulate: policy kCustom without SimOptions::custom", 0, "");
  auto twin = Twin::create(cfg);
  if (!twin) return twin.error();
  Twin& t = **twin;
  const obj::Services& S = t.services();
  Model model;
  SearchPolicy search(opt.policy_options);
  Policy& policy = opt.policy == PolicyKind::kCustom ? *opt.custom : static_cast<Policy&>(search);
  if (auto st = policy.check(S, objectives); !st) return st.error();
  policy.reset();
  const bool controlled = opt.policy != PolicyKind::kNone;
  uint64_t gen = 0;
  std::mt19937_64 rng(cfg.seed ^ kLearnSeedXor);
  if (auto st = learn_model(t, model, objectives, opt.learn_windows, rng, gen, opt.probe, opt.probe_hold); !st)
    return st.error();
  if (!controlled) t.clear();
  SimResult out;
  if (controlled) {
    auto f = model.fit();
    if (!f) return f.error();
  }
  out.learned = model;
  json last = t.step();
  for (size_t i = 0; i < opt.windows; ++i) {
    SimWindow sw;
    Decision d;
    if (controlled) {
      if (opt.refit_every && i > 0 && i % opt.refit_every == 0) (void)model.fit();
      d = policy.decide(S, load_from_window(last), model, objectives, ++gen);
      auto st = t.apply(d.action);
      if (!st) return st.error();
      sw.decide_ms = d.decide_ms;
    }
    last = t.step();
    model.add_window(last);
    sw.seq = last["seq"].get<uint64_t>();
    for (const ServiceObjective& so : objectives.services) {
      SimServiceWindow s = report_service(last, so);
      for (const ServiceChoice& c : d.chosen)
        if (c.service == so.service && c.note.empty()) s.predicted_ms = c.predicted_ms, s.controlled = true;
      sw.services.push_back(s);
    }
    out.windows.push_back(std::move(sw));
    out.last_decision = std::move(d);
  }
  for (const ServiceObjective& so : objectives.services) {
    double met = 0, carried = 0;
    for (const SimWindow& w : out.windows)
      for (const SimServiceWindow& s : w.services)
        if (s.service == so.service) met += s.met, carried += s.carried_rps;
    double n = static_cast<double>(std::max<size_t>(1, out.windows.size()));
    out.summary[so.service] = {met / n, carried / n};
  }
  out.model = model.to_json();
  return out;
}

json to_json(const SimResult& r) {
  json ws = json::array();
  for (const SimWindow& w : r.windows) {
    json ss = json::array();
    for (const SimServiceWindow& s : w.services) ss.push_back(s.to_json());
    ws.push_back({{"seq", w.seq}, {"decide_ms", w.decide_ms}, {"services", ss}});
  }
  json sum = json::object();
  for (const auto& [k, v] : r.summary) sum[k] = {{"met_share", v.first}, {"carried_rps", v.second}};
  return {{"windows", ws}, {"summary", sum}, {"model", r.model}};
}

std::string table(const SimResult& r) {
  std::ostringstream o;
  o << "  seq";
  if (!r.windows.empty())
    for (const SimServiceWindow& s : r.windows[0].services)
      o << " | " << s.service << " offered carried   meas/bound met";
  o << "\n";
  for (const SimWindow& w : r.windows) {
    o << fmt("%5.0f", static_cast<double>(w.seq));
    for (const SimServiceWindow& s : w.services)
      o << " | " << std::string(s.service.size() > 8 ? s.service.size() - 8 : 0, ' ') << fmt("%8.1f", s.offered_rps)
        << fmt("%8.1f", s.carried_rps) << fmt("%7.1f", s.measured_ms) << "/" << fmt("%-5.0f", s.bound_ms)
        << (s.met ? " yes" : "  NO");
    o << "\n";
  }
  for (const auto& [k, v] : r.summary)
    o << k << ": objective met in " << fmt("%.1f", 100 * v.first) << " % of windows, carried " << fmt("%.1f", v.second)
      << " req/s on average\n";
  return o.str();
}

std::string explain(const Decision& d) {
  std::ostringstream o;
  auto one = [&](const char* label, const ServiceChoice& c) {
    if (c.service.empty()) {
      o << "  " << label << ": none\n";
      return;
    }
    o << "  " << label << ": weights";
    for (size_t b = 0; b < c.backends.size(); ++b) o << " " << c.backends[b] << "=" << fmt("%.2f", c.weights[b]);
    o << "; admit";
    for (const auto& [cls, f] : c.admit) {
      auto it = c.offered.find(cls);
      o << " " << cls << "=" << fmt("%.2f", f) << " of " << fmt("%.1f", it == c.offered.end() ? 0 : it->second) << "/s";
    }
    o << "; predicted " << fmt("%.1f", c.predicted_ms) << " ms (x" << fmt("%.2f", 1 + c.margin) << " margin) vs bound "
      << fmt("%.0f", c.bound_ms) << " ms; value " << fmt("%.1f", c.value) << (c.feasible ? "" : " INFEASIBLE")
      << (c.kept ? " (kept: hysteresis)" : "") << "\n";
  };
  for (size_t i = 0; i < d.chosen.size(); ++i) {
    const ServiceChoice& c = d.chosen[i];
    o << c.service << ":";
    if (!c.note.empty()) {
      o << " not controlled: " << c.note << "\n";
      continue;
    }
    o << "\n";
    one("chosen", c);
    if (i < d.runner_up.size()) one("runner-up", d.runner_up[i]);
    if (i < d.runner_up.size() && !d.runner_up[i].service.empty()) {
      const ServiceChoice& r = d.runner_up[i];
      o << "  why: "
        << (c.kept                                 ? "the current action is feasible and the best is not enough better"
            : r.feasible != c.feasible             ? "the runner-up breaks the bound"
            : r.throughput_met != c.throughput_met ? "the runner-up misses the throughput target"
            : r.value < c.value - 1e-9             ? "the runner-up carries less weighted load"
                                                   : "equal value; lower predicted latency")
        << "\n";
    }
  }
  o << "decided in " << fmt("%.3f", d.decide_ms) << " ms over " << d.candidates << " candidates\n";
  return o.str();
}

}  // namespace meshcut::control
