// SPDX-License-Identifier: Apache-2.0
// The `ppo` policy (issue 16): the paper's method, PPO trained in the
// project's simulator, with libtorch.
//
// Environment (PpoEnv), a contextual bandit (gamma = 0; the next load does not
// depend on the action):
//  - state: the offered load per (service, class), each divided by the top of
//    its training range;
//  - action: per service one categorical head over the routing compositions
//    of the routingStep grid (compositions(R, backends), search's order) and
//    per class one over the admission levels 0..A of the admissionStep grid
//    (level a admits a / A of the class's load): a MultiDiscrete factorization;
//  - reward: the paper's, with the project's objective: per service the value
//    carried (admitted load x class weight, as search counts it), kept whole
//    when the model's predicted percentile x (1 + margin) (the worst backend
//    the service sends load to; margin as search computes it) is within the
//    bound x, else cut by a sigmoid: value / (1 + exp(k (x / bound - 1))),
//    k = RewardOptions::sharpness; the step's reward is the sum over services;
//  - loads: the paper's random steps, a new load per step drawn uniformly from
//    each (service, class)'s range in the scenario (its pattern's lowest to
//    highest rate, widened by 20 % each way for the windows' Poisson noise),
//    or from LEVELS evenly spaced values of it (the paper's {5, 10, 15, 20}).
// Learner: PPO as stable-baselines3 runs it (the paper's): separate actor and
// critic MLPs 2 x 64 tanh, orthogonal init, Adam lr 1e-3, rollouts of 1024
// steps, 10 epochs of minibatches of 64, clip 0.2, value coefficient 0.5, no
// entropy bonus, gradient norm clip 0.5, advantages normalized per minibatch;
// with gamma = 0 the advantage is reward - value. The trained policy acts by
// the most likely level of every head. It does not use the search's
// hysteresis or change limits (the paper's agent had none).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "meshcut/control/policy.h"
#include "meshcut/control/sim.h"
#include "meshcut/control/twin.h"

namespace meshcut::control {

// What a trained policy controls, in objectives order.
struct PpoServiceShape {
  std::string service;
  std::vector<std::string> backends;     // ip:port, the service's endpoint order
  std::vector<std::string> classes;      // the classes whose load it sees and admits
  std::vector<double> load_lo, load_hi;  // per class: the training range, rps (load_hi also normalizes)
};

struct PpoShape {
  std::vector<PpoServiceShape> services;
  int routing_levels = 5, admission_levels = 5;

  size_t state_size() const;           // sum of classes
  std::vector<int64_t> heads() const;  // per service: routes, then A + 1 per class
  // The first difference from OTHER in what the network's inputs and outputs
  // mean (services, backends, classes, grid; not the load ranges), "" if none.
  std::string mismatch(const PpoShape& other) const;
  nlohmann::json to_json() const;
  static Result<PpoShape> from_json(const nlohmann::json& j);
};

// The shape of SERVICES under OBJECTIVES: every objective's service that
// SERVICES has, with its endpoints, and the named caller classes ("default"
// when there are none). Load ranges from CFG's patterns (none: 0..1).
Result<PpoShape> ppo_shape(const obj::Services& services, const Objectives& objectives, const TwinConfig* cfg);

// The network's input for LOAD: each entry / its range top.
std::vector<float> ppo_state(const PpoShape& shape, const std::vector<double>& load);

struct RewardOptions {
  double sharpness = 20;  // k of the sigmoid past the bound (paper: 200/s on a 35 ms bound, ~7)
};

// A flat load: one rps per (service, class) in shape order.
using FlatLoad = std::vector<double>;
// One level per head (PpoShape::heads order).
using FlatAction = std::vector<int64_t>;

class PpoEnv {
 public:
  // MODEL must outlive the env. Services of SHAPE whose backends are not all
  // modelled earn nothing (and are left uncontrolled by PpoPolicy::decide).
  PpoEnv(PpoShape shape, const obj::Services& services, const Model& model, const Objectives& objectives,
         PolicyOptions popt = {}, RewardOptions ropt = {});

  const PpoShape& shape() const { return shape_; }
  const obj::Services& services() const { return services_; }
  const Model& model() const { return *model_; }
  const Objectives& objectives() const { return objectives_; }

  // LEVELS >= 2: one of LEVELS evenly spaced values per entry; else uniform in the range.
  FlatLoad sample_load(std::mt19937_64& rng, int levels = 0) const;
  std::vector<float> state(const FlatLoad& load) const { return ppo_state(shape_, load); }
  FlatLoad flatten(const Load& load) const;
  Load unflatten(const FlatLoad& load) const;
  double reward(const FlatLoad& load, const FlatAction& action) const;
  // The largest reward any action reaches (exact search of the grid).
  double reward_scale() const;  // the reward of admitting every range top, bound ignored
  FlatAction optimum(const FlatLoad& load) const;
  // The search's decision as head levels (a service it left alone: all on the first route, admit all).
  FlatAction action_of(const Decision& d) const;
  // Service S (shape index) under ACTION as the loop reports it; note set if not modelled.
  ServiceChoice choice(size_t s, const FlatLoad& load, const FlatAction& action) const;
  const std::string& note(size_t s) const { return svc_[s].note; }

 private:
  struct Svc {
    const ServiceObjective* so = nullptr;
    std::vector<const BackendModel*> models;
    std::vector<std::vector<int>> routes;
    double margin = 0;
    size_t load_off = 0, head_off = 0;
    std::vector<double> cw;
    std::string note;
  };
  double service_reward(size_t s, const FlatLoad& load, const FlatAction& a, ServiceChoice* c) const;

  PpoShape shape_;
  obj::Services services_;
  const Model* model_;
  Objectives objectives_;
  PolicyOptions popt_;
  RewardOptions ropt_;
  std::vector<Svc> svc_;
};

struct TrainOptions {
  size_t steps = 1'000'000;
  uint64_t seed = 1;
  size_t rollout = 1024, minibatch = 64, epochs = 10;
  double lr = 1e-3, clip = 0.2, vf_coef = 0.5, ent_coef = 0.0, max_grad_norm = 0.5;
  int hidden = 64;
  int load_levels = 0;       // 0: continuous loads (see PpoEnv::sample_load)
  size_t eval_loads = 1000;  // held-out loads for the evaluation
  int threads = 1;           // torch intra-op threads (the net is small: 1 is fastest)
  // Called after every rollout: steps so far, the rollout's mean reward (rps x weight).
  std::function<void(size_t, double)> progress;
};

// The trained policy on held-out loads (uniform in the ranges, a seed the training did not use).
struct PpoEval {
  size_t loads = 0;
  double ppo_reward = 0, search_reward = 0, optimum_reward = 0;  // means
  double pct_of_search() const { return search_reward > 0 ? 100 * ppo_reward / search_reward : 0; }
  double pct_of_optimum() const { return optimum_reward > 0 ? 100 * ppo_reward / optimum_reward : 0; }
  nlohmann::json to_json() const;
};

class PpoPolicy : public Policy {
 public:
  ~PpoPolicy() override;
  // A model saved by save(); errors: a missing or unreadable file, not a meshcut PPO model.
  static Result<std::unique_ptr<PpoPolicy>> load(const std::string& path);
  Status save(const std::string& path) const;

  Decision decide(const obj::Services& services, const Load& load, const Model& model, const Objectives& objectives,
                  uint64_t generation) override;
  // The trained shape against SERVICES and OBJECTIVES (services, backends, classes, grid).
  Status check(const obj::Services& services, const Objectives& objectives) const override;

  const PpoShape& shape() const;
  const nlohmann::json& meta() const;  // shape, training options and the evaluation, as saved
  nlohmann::json& meta();
  // The most likely level of every head, per load (a batch, in shape() order).
  std::vector<FlatAction> act(const std::vector<FlatLoad>& loads) const;

  struct Impl;

 private:
  explicit PpoPolicy(std::unique_ptr<Impl> impl);
  friend Result<std::unique_ptr<PpoPolicy>> train_ppo(const PpoEnv&, const TrainOptions&);
  std::unique_ptr<Impl> impl_;
  std::string source_;  // the file it was loaded from (errors name it)
};

// Trains a policy in ENV (deterministic for a seed and thread count).
Result<std::unique_ptr<PpoPolicy>> train_ppo(const PpoEnv& env, const TrainOptions& opt);
PpoEval evaluate_ppo(const PpoPolicy& policy, const PpoEnv& env, size_t loads, uint64_t seed);

// What `meshcut-control train` does: the twin of CFG, the model learned as
// simulate() learns it (learn_model, then fit), PPO trained through it, then
// evaluated on held-out loads.
struct TrainRun {
  std::unique_ptr<PpoPolicy> policy;
  PpoEval eval;
  double train_s = 0, learn_s = 0;
  size_t steps = 0;
  double steps_per_s() const { return train_s > 0 ? static_cast<double>(steps) / train_s : 0; }
  nlohmann::json to_json() const;
};
Result<TrainRun> train_in_twin(const TwinConfig& cfg, const Objectives& objectives, size_t learn_windows,
                               const TrainOptions& opt);

}  // namespace meshcut::control
