// SPDX-License-Identifier: Apache-2.0
// meshcut-control: the objectives controller (issue 16): `run` (the loop
// against the nodes, cmd_run.cpp), `fit` (the model from recorded windows,
// cmd_fit.cpp), `render` (an action as Istio objects, cmd_render.cpp), `train`
// (the ppo policy in the twin, cmd_train.cpp), `simulate` (the loop against the
// digital twin) and `explain` (the last window's decision, chosen vs runner-up).
// Each subcommand that lives in its own file registers itself here.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "meshcut/control/ppo.h"
#include "meshcut/control/sim.h"
#include "meshcut/obj/document.h"

using namespace meshcut::control;

void add_run_command(CLI::App& app);
void add_fit_command(CLI::App& app);
void add_render_command(CLI::App& app);
void add_train_command(CLI::App& app);

namespace {

int fail(const meshcut::Error& e) {
  std::fprintf(stderr, "meshcut-control: %s\n", e.format().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"meshcut-control: meet per-service objectives by routing and admission"};
  app.require_subcommand(1);
  std::string objectives_path, scenario_path, policy = "search", ppo_model;
  SimOptions opt;
  bool as_json = false;
  auto add_common = [&](CLI::App* c) {
    c->add_option("--objectives", objectives_path, "Objectives document (YAML or JSON)")->required();
    c->add_option("--scenario", scenario_path, "twin scenario (JSON: classes, services, backends, load)")->required();
    c->add_option("--learn", opt.learn_windows, "probing windows before control")->capture_default_str();
    c->add_option("--probe", opt.probe, "learning schedule: boundary (near each bound) or random routings")
        ->transform(CLI::CheckedTransformer(probe_kinds()))
        ->default_str("random");
    c->add_option("--windows", opt.windows, "controlled windows")->capture_default_str();
    c->add_option("--hysteresis", opt.policy_options.hysteresis, "relative gain needed to change")
        ->capture_default_str();
    c->add_option("--max-route-change", opt.policy_options.max_route_change, "per window")->capture_default_str();
    c->add_flag("--json", as_json, "JSON output");
  };
  CLI::App* sim = app.add_subcommand("simulate", "run the twin under a policy; per window met / carried");
  add_common(sim);
  sim->add_option("--policy", policy, "search, ppo (a model from `train`) or none")
      ->check(CLI::IsMember({"search", "ppo", "none"}))
      ->capture_default_str();
  sim->add_option("--ppo-model", ppo_model, "the trained policy for --policy ppo (train --out)");
  CLI::App* expl = app.add_subcommand("explain", "simulate, then explain the last decision (chosen vs runner-up)");
  add_common(expl);
  add_run_command(app);
  add_fit_command(app);
  add_render_command(app);
  add_train_command(app);
  CLI11_PARSE(app, argc, argv);
  if (!*sim && !*expl) return 0;  // a subcommand that ran in its callback

  auto objectives = load_objectives(objectives_path);
  if (!objectives) return fail(objectives.error());
  auto cfg = load_twin_config(scenario_path);
  if (!cfg) return fail(cfg.error());
  opt.policy = policy == "none" ? PolicyKind::kNone : PolicyKind::kSearch;
  if (policy == "ppo") {
    if (ppo_model.empty())
      return fail(meshcut::make_error("--policy ppo needs --ppo-model FILE", 0,
                                      "train one: meshcut-control train --objectives F --scenario F --out FILE"));
    auto p = PpoPolicy::load(ppo_model);
    if (!p) return fail(p.error());
    opt.policy = PolicyKind::kCustom;
    opt.custom = std::shared_ptr<Policy>(std::move(*p));
  }
  auto r = simulate(*cfg, *objectives, opt);
  if (!r) return fail(r.error());
  if (*expl) {
    if (as_json) {
      nlohmann::json j = {{"action", r->last_decision.action}, {"decide_ms", r->last_decision.decide_ms}};
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << explain(r->last_decision);
    }
    return 0;
  }
  if (as_json)
    std::cout << to_json(*r).dump(2) << "\n";
  else
    std::cout << table(*r);
  return 0;
}
