// SPDX-License-Identifier: Apache-2.0
// meshcut-control train: the paper's PPO policy (ppo.h) trained in the twin of
// a scenario (the file `simulate` takes), through the model learned as
// `simulate` learns it. Reports the training time, steps/s and the trained
// policy's mean reward as a share of the search optimum's on held-out loads;
// saves the policy for `simulate --policy ppo --ppo-model FILE`.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "meshcut/control/ppo.h"

using namespace meshcut::control;
using nlohmann::json;

void add_train_command(CLI::App& app) {
  struct Args {
    std::string objectives, scenario, out = "model.pt";
    size_t learn = SimOptions{}.learn_windows;
    bool json = false, quiet = false;
    TrainOptions train;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand("train", "train the ppo policy in the twin; its reward vs the search optimum");
  c->add_option("--objectives", a->objectives, "Objectives document (YAML or JSON)")->required();
  c->add_option("--scenario", a->scenario, "twin scenario (JSON: classes, services, backends, load)")->required();
  c->add_option("--steps", a->train.steps, "training steps (rounded up to whole rollouts)")->capture_default_str();
  c->add_option("--seed", a->train.seed, "training seed")->capture_default_str();
  c->add_option("--out", a->out, "where to save the trained policy")->capture_default_str();
  c->add_option("--learn", a->learn, "probing windows before the model is fitted (as simulate)")->capture_default_str();
  c->add_option("--load-levels", a->train.load_levels,
                "training loads from this many evenly spaced levels per range (the paper's 4); 0: continuous")
      ->capture_default_str();
  c->add_option("--eval-loads", a->train.eval_loads, "held-out loads for the evaluation")->capture_default_str();
  c->add_flag("--quiet", a->quiet, "no progress on stderr");
  c->add_flag("--json", a->json, "JSON output");
  c->callback([a] {
    auto fail = [](const meshcut::Error& e) {
      std::fprintf(stderr, "meshcut-control: %s\n", e.format().c_str());
      throw CLI::RuntimeError(1);
    };
    auto objectives = load_objectives(a->objectives);
    if (!objectives) fail(objectives.error());
    auto cfg = load_twin_config(a->scenario);
    if (!cfg) fail(cfg.error());
    TrainOptions opt = a->train;
    size_t next = 0;
    if (!a->quiet)
      opt.progress = [&next, total = opt.steps](size_t done, double mean) {
        if (done < next && done < total) return;
        next = done + std::max<size_t>(total / 10, 1);
        std::fprintf(stderr, "meshcut-control: train: %zu/%zu steps, rollout mean reward %.2f\n", done, total, mean);
      };
    auto r = train_in_twin(*cfg, *objectives, a->learn, opt);
    if (!r) fail(r.error());
    if (auto st = r->policy->save(a->out); !st) fail(st.error());
    if (a->json) {
      json j = r->to_json();
      j["out"] = a->out;
      std::cout << j.dump(2) << "\n";
      return;
    }
    std::printf(
        "trained %zu steps in %.1f s (%.0f steps/s; model learned in %.1f s)\n"
        "held-out loads %zu: ppo mean reward %.2f, search %.2f (%.1f %%), grid optimum %.2f (%.1f %%)\n"
        "saved to %s\n",
        r->steps, r->train_s, r->steps_per_s(), r->learn_s, r->eval.loads, r->eval.ppo_reward, r->eval.search_reward,
        r->eval.pct_of_search(), r->eval.optimum_reward, r->eval.pct_of_optimum(), a->out.c_str());
  });
}
