// SPDX-License-Identifier: Apache-2.0
// The search policy against a brute force the test does itself (its own M/M/1 formula over the joint grid of
// both services), objectives changed at run time, hysteresis, the change limit, the action document the node
// accepts, and the decision time at 4 services x 3 backends x 2 classes.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "meshcut/control/policy.h"
#include "meshcut/control/twin.h"
#include "meshcut/obj/action.h"

using namespace meshcut::control;
using nlohmann::json;

namespace {

// Two services, two backends each, two classes; the twin only provides the Services (addresses, classes).
TwinConfig two_by_two() {
  TwinConfig c;
  c.classes = {"premium", "freemium"};
  for (int s = 1; s <= 2; ++s)
    c.services.push_back({"default/s" + std::to_string(s),
                          {{"", "", 1, ServiceTime::exponential(10)}, {"", "", 1, ServiceTime::exponential(10)}},
                          {}});
  return c;
}

const double kMu[2][2] = {{100, 60}, {80, 40}};  // service x backend

Model known_model(const meshcut::obj::Services& S) {
  Model m;
  for (int s = 0; s < 2; ++s)
    for (int b = 0; b < 2; ++b)
      m.set(S.services[s].key(), S.services[s].endpoints[b].addr(), BackendModel::from_params({kMu[s][b], 1, 1}));
  return m;
}

Objectives objectives(double bound1, double bound2) {
  auto o = parse_objectives(R"({"apiVersion": "meshcut.io/v1alpha1", "kind": "Objectives", "spec": {
    "services": [
      {"service": "default/s1", "latency": {"percentile": 95, "boundMs": )" +
                            std::to_string(bound1) + R"(}, "classWeights": {"premium": 3, "freemium": 1}},
      {"service": "default/s2", "latency": {"percentile": 95, "boundMs": )" +
                            std::to_string(bound2) + R"(}, "classWeights": {"premium": 3, "freemium": 1}}],
    "grid": {"routingStep": 0.2, "admissionStep": 0.2}}})");
  REQUIRE(o.ok());
  return *o;
}

struct Brute {
  double value = -1;
  std::vector<std::vector<double>> argmax;  // per optimum: w1, p1, f1, w2, p2, f2 (w: weight of backend 0)
};

// The joint grid of both services (6 routings x 6^2 admissions each), p95 of M/M/1 = ln 20 / (mu - lambda).
Brute brute_force(const double offered[2][2], double bound1, double bound2) {
  const double bound[2] = {bound1, bound2}, cw[2] = {3, 1};
  Brute out;
  auto service_ok = [&](int s, double w, double fp, double ff, double& value) {
    double lam = fp * offered[s][0] + ff * offered[s][1];
    value = cw[0] * fp * offered[s][0] + cw[1] * ff * offered[s][1];
    if (lam <= 0) return true;
    double ws[2] = {w, 1 - w};
    for (int b = 0; b < 2; ++b) {
      if (ws[b] <= 1e-12) continue;
      double l = ws[b] * lam;
      if (l >= kMu[s][b]) return false;
      if (std::log(20.0) / (kMu[s][b] - l) * 1e3 > bound[s]) return false;
    }
    return true;
  };
  for (int w1 = 0; w1 <= 5; ++w1)
    for (int p1 = 0; p1 <= 5; ++p1)
      for (int f1 = 0; f1 <= 5; ++f1)
        for (int w2 = 0; w2 <= 5; ++w2)
          for (int p2 = 0; p2 <= 5; ++p2)
            for (int f2 = 0; f2 <= 5; ++f2) {
              double v1, v2;
              if (!service_ok(0, w1 / 5.0, p1 / 5.0, f1 / 5.0, v1) || !service_ok(1, w2 / 5.0, p2 / 5.0, f2 / 5.0, v2))
                continue;
              double v = v1 + v2;
              std::vector<double> a = {w1 / 5.0, p1 / 5.0, f1 / 5.0, w2 / 5.0, p2 / 5.0, f2 / 5.0};
              if (v > out.value + 1e-9) {
                out.value = v;
                out.argmax = {a};
              } else if (std::fabs(v - out.value) <= 1e-9) {
                out.argmax.push_back(a);
              }
            }
  return out;
}

std::vector<double> as_vector(const Decision& d) {
  std::vector<double> v;
  for (const ServiceChoice& c : d.chosen) {
    v.push_back(c.weights[0]);
    v.push_back(c.admit.at("premium"));
    v.push_back(c.admit.at("freemium"));
  }
  return v;
}

}  // namespace

TEST_CASE("search: picks the brute-force optimum of two services x two backends", "[control-search]") {
  auto twin = Twin::create(two_by_two());
  REQUIRE(twin.ok());
  const auto& S = (*twin)->services();
  Model model = known_model(S);
  struct Case {
    double offered[2][2];  // service x (premium, freemium)
    double b1, b2;
  };
  const Case cases[] = {
      {{{60, 50}, {40, 40}}, 50, 80},   {{{90, 70}, {50, 60}}, 50, 80},  {{{30, 20}, {20, 10}}, 40, 60},
      {{{120, 90}, {80, 70}}, 60, 100}, {{{45, 45}, {35, 25}}, 35, 110}, {{{10, 200}, {5, 90}}, 50, 80},
  };
  for (const Case& c : cases) {
    Load load = {{"default/s1", {{"premium", c.offered[0][0]}, {"freemium", c.offered[0][1]}}},
                 {"default/s2", {{"premium", c.offered[1][0]}, {"freemium", c.offered[1][1]}}}};
    PolicyOptions opt;
    opt.base_margin = 0;
    SearchPolicy policy(opt);
    Decision d = policy.decide(S, load, model, objectives(c.b1, c.b2), 1);
    Brute b = brute_force(c.offered, c.b1, c.b2);
    INFO("offered s1 " << c.offered[0][0] << "/" << c.offered[0][1] << " s2 " << c.offered[1][0] << "/"
                       << c.offered[1][1] << " bounds " << c.b1 << "/" << c.b2 << " action " << d.action.dump());
    REQUIRE(b.value > 0);
    CHECK(d.value == Approx(b.value).epsilon(1e-9));
    auto got = as_vector(d);
    bool among = false;
    for (const auto& a : b.argmax) {
      bool same = true;
      for (size_t i = 0; i < a.size(); ++i) same = same && std::fabs(a[i] - got[i]) < 1e-9;
      among = among || same;
    }
    CHECK(among);
    for (const ServiceChoice& ch : d.chosen) {
      CHECK(ch.feasible);
      CHECK(ch.predicted_ms <= ch.bound_ms);
    }
    // The document is one the node accepts.
    auto compiled = meshcut::obj::compile_action(d.action, S, 0);
    INFO((compiled.ok() ? "" : compiled.error().format()));
    CHECK(compiled.ok());
  }
}

TEST_CASE("search: changing the objectives changes the next decision", "[control-search]") {
  auto twin = Twin::create(two_by_two());
  REQUIRE(twin.ok());
  const auto& S = (*twin)->services();
  Model model = known_model(S);
  Load load = {{"default/s1", {{"premium", 60}, {"freemium", 50}}},
               {"default/s2", {{"premium", 40}, {"freemium", 40}}}};
  SearchPolicy policy;
  Decision a = policy.decide(S, load, model, objectives(50, 80), 1);
  Decision same = policy.decide(S, load, model, objectives(50, 80), 2);
  CHECK(as_vector(same) == as_vector(a));
  Decision tight = policy.decide(S, load, model, objectives(20, 80), 3);  // s1's bound tightened at run time
  CHECK(as_vector(tight) != as_vector(a));
  CHECK(tight.chosen[0].carried_rps < a.chosen[0].carried_rps);
  CHECK(tight.chosen[0].predicted_ms <= 20);
  CHECK(tight.chosen[1].weights == a.chosen[1].weights);  // s2's objective did not change
  const double off[2][2] = {{60, 50}, {40, 40}};
  CHECK(tight.value == Approx(brute_force(off, 20, 80).value));
  // Class weights changed: freemium now worth more than premium.
  auto o = objectives(50, 80);
  o.services[0].class_weights = {{"premium", 1}, {"freemium", 5}};
  Decision fw = policy.decide(S, load, model, o, 4);
  // s1 carries ~40/s within 50 ms (backend 0: 100 - 1000 ln 20 / 50 = 40.1/s; backend 1: 0.1/s): 0.8 of
  // freemium's 50/s (worth 200) beats any mix with premium (0.2 premium + 0.4 freemium: 136).
  CHECK(fw.chosen[0].admit.at("freemium") == Approx(0.8));
  CHECK(fw.chosen[0].admit.at("premium") == 0.0);
}

TEST_CASE("search: hysteresis keeps a feasible action; the change limit bounds a move", "[control-search]") {
  auto twin = Twin::create(two_by_two());
  REQUIRE(twin.ok());
  const auto& S = (*twin)->services();
  Model model = known_model(S);
  Load load = {{"default/s1", {{"premium", 60}, {"freemium", 50}}},
               {"default/s2", {{"premium", 40}, {"freemium", 40}}}};
  PolicyOptions opt;
  opt.hysteresis = 0.5;
  SearchPolicy sticky(opt);
  Decision a = sticky.decide(S, load, model, objectives(50, 80), 1);
  // A looser bound would allow more, but not 50 % more: the current (still feasible) action is kept.
  Decision b = sticky.decide(S, load, model, objectives(60, 80), 2);
  CHECK(b.chosen[0].kept);
  CHECK(as_vector(b) == as_vector(a));
  CHECK(b.runner_up[0].value > b.chosen[0].value);  // the runner-up is what a fresh search would pick
  SearchPolicy fresh;
  CHECK(fresh.decide(S, load, model, objectives(60, 80), 1).value > b.value);

  // Backend 0 of s1 all but fails (mu 30) and backend 1 is fast (mu 200): the best is to move everything to
  // backend 1, at most 0.2 per window; until then any weight on backend 0 breaks the bound, so nothing is
  // admitted (cutting is not limited).
  PolicyOptions lim;
  lim.max_route_change = 0.2;
  lim.hysteresis = 0;
  SearchPolicy limited(lim);
  Load light = {{"default/s1", {{"premium", 20}}}};
  Decision first = limited.decide(S, light, model, objectives(50, 80), 1);
  REQUIRE(first.chosen[0].weights.size() == 2);
  Model worse = model;
  worse.set(S.services[0].key(), S.services[0].endpoints[0].addr(), BackendModel::from_params({30, 1, 1}));
  worse.set(S.services[0].key(), S.services[0].endpoints[1].addr(), BackendModel::from_params({200, 1, 1}));
  double w0 = first.chosen[0].weights[0];
  CHECK(w0 == 1.0);  // mu 100 vs 60 at 20/s: all on backend 0 has the lowest p95
  for (int i = 0; i < 6; ++i) {
    Decision d = limited.decide(S, light, worse, objectives(50, 80), 2 + i);
    INFO("window " << i << " weights " << d.chosen[0].weights[0] << "/" << d.chosen[0].weights[1]);
    CHECK(d.chosen[0].weights[0] == Approx(std::max(0.0, w0 - 0.2)).margin(1e-9));
    CHECK(d.chosen[0].feasible);
    if (d.chosen[0].weights[0] > 1e-9) CHECK(d.chosen[0].admit.at("premium") == 0.0);
    if (d.chosen[0].weights[0] <= 1e-9) CHECK(d.chosen[0].admit.at("premium") == 1.0);
    w0 = d.chosen[0].weights[0];
  }
  CHECK(w0 == 0.0);
}

TEST_CASE("search: the action document, uncontrolled services, load from a window", "[control-search]") {
  auto twin = Twin::create(two_by_two());
  REQUIRE(twin.ok());
  const auto& S = (*twin)->services();
  Model model = known_model(S);
  auto o = objectives(50, 80);
  o.services.push_back(o.services[0]);
  o.services.back().service = "default/missing";
  Load load = {{"default/s1", {{"premium", 200}, {"freemium", 100}}}};
  SearchPolicy policy;
  Decision d = policy.decide(S, load, model, o, 9);
  REQUIRE(d.chosen.size() == 3);
  CHECK(d.chosen[2].note == "not in the service file");
  CHECK(d.action["generation"] == 9);
  CHECK_FALSE(d.action["services"].contains("default/missing"));
  const json& s1 = d.action["services"]["default/s1"]["classes"];
  // 300/s offered is over the capacity of 160/s: premium (weight 3) is carried before freemium.
  CHECK(d.chosen[0].admit.at("premium") > d.chosen[0].admit.at("freemium"));
  double f = d.chosen[0].admit.at("freemium");
  if (f == 0) {
    CHECK(s1["freemium"]["rate"] == 0.0);
    CHECK_FALSE(s1["freemium"].contains("burst"));  // rate 0 without burst: the node blocks every connect
  }
  CHECK(s1.contains("default"));  // every class gets the routing
  CHECK_FALSE(s1["default"].contains("rate"));
  CHECK(meshcut::obj::compile_action(d.action, S, 8).ok());
  // s2 without an objective's backend model: uncontrolled.
  Model partial;
  partial.set(S.services[0].key(), S.services[0].endpoints[0].addr(), BackendModel::from_params({100, 1, 1}));
  partial.set(S.services[0].key(), S.services[0].endpoints[1].addr(), BackendModel::from_params({100, 1, 1}));
  Decision p = SearchPolicy().decide(S, load, partial, objectives(50, 80), 1);
  CHECK(p.chosen[1].note.find("has no model yet") != std::string::npos);
  CHECK_FALSE(p.action["services"].contains("default/s2"));

  json w = {{"rows",
             {{{"service", "default/s1"}, {"backend", "all"}, {"class", "premium"}, {"rate", {{"offered", 12.5}}}},
              {{"service", "default/s1"},
               {"backend", "10.1.0.1:8080"},
               {"class", "premium"},
               {"rate", {{"offered", 99.0}}}}}}};
  Load l = load_from_window(w);
  CHECK(l.at("default/s1").at("premium") == 12.5);
  CHECK(l.at("default/s1").size() == 1);
  CHECK(compositions(5, 3).size() == 21);
  CHECK(compositions(5, 1) == std::vector<std::vector<int>>{{5}});
}

TEST_CASE("search: decides 4 services x 3 backends x 2 classes in <= 10 ms", "[control-search]") {
  TwinConfig c;
  c.classes = {"premium", "freemium"};
  for (int s = 0; s < 4; ++s) {
    TwinService ts{"default/s" + std::to_string(s), {}, {}};
    for (int b = 0; b < 3; ++b) ts.backends.push_back({"", "", 1, ServiceTime::exponential(10)});
    c.services.push_back(ts);
  }
  auto twin = Twin::create(c);
  REQUIRE(twin.ok());
  const auto& S = (*twin)->services();
  Model m;
  Load load;
  json svcs = json::array();
  for (int s = 0; s < 4; ++s) {
    for (int b = 0; b < 3; ++b)
      m.set(S.services[s].key(), S.services[s].endpoints[b].addr(), BackendModel::from_params({80.0 + 20 * b, 1, 1}));
    load[S.services[s].key()] = {{"premium", 100.0 + 10 * s}, {"freemium", 80.0}};
    svcs.push_back({{"service", S.services[s].key()},
                    {"latency", {{"percentile", 95}, {"boundMs", 60}}},
                    {"classWeights", {{"premium", 3}, {"freemium", 1}}}});
  }
  auto o = objectives_from_json(
      {{"apiVersion", "meshcut.io/v1alpha1"}, {"kind", "Objectives"}, {"spec", {{"services", svcs}}}});
  REQUIRE(o.ok());
  SearchPolicy policy;
  double worst = 0, total = 0;
  const int n = 50;
  size_t cands = 0;
  for (int i = 0; i < n; ++i) {
    policy.reset();  // a full search every time (no change limit)
    Decision d = policy.decide(S, load, m, *o, 1 + i);
    worst = std::max(worst, d.decide_ms);
    total += d.decide_ms;
    cands = d.candidates;
  }
  std::printf("search: 4 services x 3 backends x 2 classes: %zu candidates, mean %.3f ms, worst %.3f ms per decision\n",
              cands, total / n, worst);
  CHECK(cands == 4 * 21 * 36);
  CHECK(total / n <= 10.0);
}
