// SPDX-License-Identifier: Apache-2.0
// The ppo policy (ppo.h): PPO trained in the twin through the fitted model
// reaches the search optimum's reward on held-out loads, a saved policy
// reloads to the same actions and runs in simulate(), and bad models are
// refused with errors that say why.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <unistd.h>

#include "meshcut/control/ppo.h"

using namespace meshcut::control;
using nlohmann::json;

namespace {

// Two services, two backends each (one fast, one slow), one caller class; the
// offered load steps across the backends' capacity so that routing and
// admission both matter.
json scenario(int s1_backends = 2) {
  json s1b = json::array();
  const double ms[] = {10, 20, 15};
  for (int b = 0; b < s1_backends; ++b)
    s1b.push_back({{"pod", "s1-" + std::to_string(b)}, {"serviceTime", {{"kind", "exponential"}, {"meanMs", ms[b]}}}});
  return {{"windowSeconds", 1},
          {"seed", 3},
          {"services",
           {{{"service", "default/s1"}, {"backends", s1b}, {"load", {{"default", {{0, 60}, {40, 120}, {80, 90}}}}}},
            {{"service", "default/s2"},
             {"backends",
              {{{"pod", "s2-a"}, {"serviceTime", {{"kind", "exponential"}, {"meanMs", 25}}}},
               {{"pod", "s2-b"}, {"serviceTime", {{"kind", "exponential"}, {"meanMs", 40}}}}}},
             {"load", {{"default", {{0, 30}, {60, 55}}}}}}}}};
}

Objectives objectives() {
  auto o = objectives_from_json(json::parse(R"({
    "apiVersion": "meshcut.io/v1alpha1", "kind": "Objectives",
    "spec": {"windowSeconds": 1,
             "services": [{"service": "default/s1", "latency": {"percentile": 95, "boundMs": 60}},
                          {"service": "default/s2", "latency": {"percentile": 95, "boundMs": 150}}],
             "grid": {"routingStep": 0.2, "admissionStep": 0.2}}})"));
  REQUIRE(o.ok());
  return *o;
}

TwinConfig config(int s1_backends = 2) {
  auto c = twin_config_from_json(scenario(s1_backends));
  INFO((c.ok() ? "" : c.error().format()));
  REQUIRE(c.ok());
  return *c;
}

// Trained once for the cases below (Catch2 runs each case on its own; the training is the slow part).
TrainRun& trained() {
  static TrainRun run = [] {
    TrainOptions opt;
    opt.steps = 60'000;  // ~25 s on 2 busy cores; the paper's 1 M is `train`'s default
    opt.seed = 7;
    opt.eval_loads = 500;
    auto t0 = std::chrono::steady_clock::now();
    auto r = train_in_twin(config(), objectives(), 120, opt);
    INFO((r.ok() ? "" : r.error().format()));
    REQUIRE(r.ok());
    std::printf(
        "ppo: %zu steps in %.1f s (%.0f steps/s; %.1f s with the model), held-out reward %.2f vs search %.2f: "
        "%.1f %% (grid optimum %.2f: %.1f %%)\n",
        r->steps, r->train_s, r->steps_per_s(),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), r->eval.ppo_reward,
        r->eval.search_reward, r->eval.pct_of_search(), r->eval.optimum_reward, r->eval.pct_of_optimum());
    return std::move(*r);
  }();
  return run;
}

std::string tmp_path(const char* name) { return "/tmp/meshcut-ppo-test-" + std::to_string(::getpid()) + "-" + name; }

}  // namespace

TEST_CASE("ppo: trained in the twin, reaches 90 % of the search optimum on held-out loads", "[control-ppo]") {
  TrainRun& r = trained();
  REQUIRE(r.policy);
  CHECK(r.steps >= 60'000);
  CHECK(r.eval.loads == 500);
  CHECK(r.eval.search_reward > 0);
  // The search is the exact argmax of the feasible grid; the reward's optimum can only be at least that.
  CHECK(r.eval.optimum_reward >= r.eval.search_reward - 1e-9);
  CHECK(r.eval.pct_of_search() >= 90.0);
  json j = r.to_json();
  CHECK(j["eval"]["pct_of_search"].get<double>() == Approx(r.eval.pct_of_search()));
  CHECK(j["steps_per_s"].get<double>() > 0);
}

TEST_CASE("ppo: a saved policy reloads to the same actions and runs in simulate", "[control-ppo]") {
  TrainRun& r = trained();
  const std::string path = tmp_path("model.pt");
  REQUIRE(r.policy->save(path).ok());
  auto p = PpoPolicy::load(path);
  INFO((p.ok() ? "" : p.error().format()));
  REQUIRE(p.ok());
  CHECK((*p)->shape().mismatch(r.policy->shape()).empty());
  CHECK((*p)->meta()["eval"]["pct_of_search"].get<double>() == Approx(r.eval.pct_of_search()));
  std::mt19937_64 rng(99);
  std::vector<FlatLoad> loads;
  std::uniform_real_distribution<double> u(0, 150);
  for (int i = 0; i < 300; ++i) loads.push_back({u(rng), u(rng)});
  CHECK((*p)->act(loads) == r.policy->act(loads));

  // In the loop: every window a decision for both services, in the action document the node takes.
  SimOptions opt;
  opt.learn_windows = 120;
  opt.windows = 60;
  opt.policy = PolicyKind::kCustom;
  opt.custom = std::shared_ptr<Policy>(std::move(*p));
  auto s = simulate(config(), objectives(), opt);
  INFO((s.ok() ? "" : s.error().format()));
  REQUIRE(s.ok());
  REQUIRE(s->windows.size() == 60);
  REQUIRE(s->last_decision.chosen.size() == 2);
  for (const ServiceChoice& c : s->last_decision.chosen) {
    CHECK(c.note.empty());
    CHECK(c.weights.size() == 2);
  }
  CHECK(s->last_decision.action["services"].contains("default/s1"));
  for (const auto& [svc, v] : s->summary) {
    std::printf("ppo in the twin %s: met %.1f %% carried %.1f/s\n", svc.c_str(), 100 * v.first, v.second);
    CHECK(v.second > 10);  // carries load, not blocking everything
  }
  std::remove(path.c_str());
}

TEST_CASE("ppo: bad models are refused with clear errors", "[control-ppo]") {
  SECTION("a missing file") {
    auto p = PpoPolicy::load("/nonexistent/meshcut/model.pt");
    REQUIRE_FALSE(p.ok());
    CHECK(p.error().what.find("cannot read the PPO model /nonexistent/meshcut/model.pt") != std::string::npos);
    CHECK(p.error().hint.find("meshcut-control train") != std::string::npos);
  }
  SECTION("a file that is not a model") {
    const std::string path = tmp_path("garbage.pt");
    std::ofstream(path) << "not a model\n";
    auto p = PpoPolicy::load(path);
    REQUIRE_FALSE(p.ok());
    CHECK(p.error().what.find("cannot load the PPO model " + path) != std::string::npos);
    std::remove(path.c_str());
  }
  SECTION("a model for a different scenario shape") {
    TrainOptions opt;
    opt.steps = 1024;
    opt.eval_loads = 10;
    auto three = train_in_twin(config(3), objectives(), 120, opt);
    INFO((three.ok() ? "" : three.error().format()));
    REQUIRE(three.ok());
    const std::string path = tmp_path("three.pt");
    REQUIRE(three->policy->save(path).ok());
    auto p = PpoPolicy::load(path);
    REQUIRE(p.ok());
    auto twin = Twin::create(config(2));
    REQUIRE(twin.ok());
    auto st = (*p)->check((*twin)->services(), objectives());
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().what.find("was trained for a different scenario shape") != std::string::npos);
    CHECK(st.error().what.find("default/s1: backends") != std::string::npos);
    CHECK(st.error().what.find(path) != std::string::npos);
    SimOptions so;
    so.policy = PolicyKind::kCustom;
    so.custom = std::shared_ptr<Policy>(std::move(*p));
    auto s = simulate(config(2), objectives(), so);
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().what.find("different scenario shape") != std::string::npos);
    std::remove(path.c_str());
  }
  SECTION("training needs loads and steps") {
    TrainOptions opt;
    opt.steps = 0;
    auto r = train_in_twin(config(), objectives(), 120, opt);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().what.find("steps, rollout and minibatch must be > 0") != std::string::npos);
  }
}
