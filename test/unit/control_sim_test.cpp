// SPDX-License-Identifier: Apache-2.0
// The whole loop on the twin: learn with probing, fit, decide every window. Over capacity, `search` keeps the
// objectives where `none` (plain routing, no admission) breaks them, and carries premium first.
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "meshcut/control/sim.h"

using namespace meshcut::control;

namespace {

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("sim: search meets the objectives over capacity where none does not", "[control-sim]") {
  const std::string dir = std::string(MESHCUT_FIXTURES_DIR) + "/../../controller/examples/";
  auto o = load_objectives(dir + "objectives.yaml");
  REQUIRE(o.ok());
  auto cfg = twin_config_from_json(nlohmann::json::parse(slurp(dir + "scenario.json")));
  INFO((cfg.ok() ? "" : cfg.error().format()));
  REQUIRE(cfg.ok());
  SimOptions opt;
  opt.learn_windows = 120;
  opt.windows = 120;
  auto s = simulate(*cfg, *o, opt);
  INFO((s.ok() ? "" : s.error().format()));
  REQUIRE(s.ok());
  opt.policy = PolicyKind::kNone;
  auto n = simulate(*cfg, *o, opt);
  REQUIRE(n.ok());
  for (const auto& [svc, v] : s->summary)
    std::printf("sim %s: search met %.1f %% carried %.1f/s; none met %.1f %% carried %.1f/s\n", svc.c_str(),
                100 * v.first, v.second, 100 * n->summary.at(svc).first, n->summary.at(svc).second);
  // s1 is offered 80..130/s against backends of 100/s and 50/s: without control it misses its p95 almost
  // always. The loop (fixed seed: deterministic) reaches 88.3 % / 86.7 % of windows; the floors below
  // are regression guards a little under that, not the goal (every window).
  CHECK(n->summary.at("default/s1").first <= 0.1);
  CHECK(s->summary.at("default/s1").first >= 0.85);
  CHECK(s->summary.at("default/s2").first >= 0.75);
  CHECK(s->summary.at("default/s2").first > n->summary.at("default/s2").first);
  CHECK(s->summary.at("default/s1").second > 30);  // not by blocking everything
  double worst = 0;
  for (const SimWindow& w : s->windows) worst = std::max(worst, w.decide_ms);
  CHECK(worst < 50);
  std::string ex = explain(s->last_decision);
  CHECK(ex.find("default/s1:") != std::string::npos);
  CHECK(ex.find("runner-up") != std::string::npos);
  CHECK(table(*s).find("objective met in") != std::string::npos);
  auto bad = twin_config_from_json(
      {{"services", {{{"service", "a/b"}, {"backends", {{{"serviceTime", {{"kind", "pareto"}}}}}}}}}});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().what.find("services[0].backends[0].serviceTime.kind must be") != std::string::npos);
}
