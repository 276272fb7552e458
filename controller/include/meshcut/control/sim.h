// SPDX-License-Identifier: Apache-2.0
// The controller's loop run against the twin (what `meshcut-control simulate`
// prints): learn (probing routings so every backend sees several loads), fit,
// then every window decide -> apply -> measure, refitting online. The same
// loop against the bed swaps the twin for the nodes' API.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "meshcut/control/measure.h"
#include "meshcut/control/objectives.h"
#include "meshcut/control/policy.h"
#include "meshcut/control/probe.h"
#include "meshcut/control/twin.h"

namespace meshcut::control {

// A twin config as a document:
//   {"classes": ["premium", "freemium"], "windowSeconds": 1, "seed": 1,
//    "services": [{"service": "default/s1",
//                  "backends": [{"pod": "s1-a", "servers": 1,
//                                "serviceTime": {"kind": "exponential", "meanMs": 10, "scv": 1}}],
//                  "load": {"premium": [[0, 50], [60, 90]]}}]}      # [t_s, rps] steps
Result<TwinConfig> twin_config_from_json(const nlohmann::json& doc);
// The scenario file at PATH (one JSON or YAML document), as `simulate` and `train` take it.
Result<TwinConfig> load_twin_config(const std::string& path);

// kCustom: SimOptions::custom decides (e.g. a trained PpoPolicy, ppo.h).
enum class PolicyKind { kSearch, kNone, kCustom };

struct SimOptions {
  size_t learn_windows = 120;            // probing, before control starts
  ProbeKind probe = ProbeKind::kRandom;  // boundary: probe.h (better mu, not yet better control here)
  size_t probe_hold = 5;                 // windows per probe
  size_t windows = 120;                  // controlled
  size_t refit_every = 10;
  PolicyKind policy = PolicyKind::kSearch;
  PolicyOptions policy_options;
  std::shared_ptr<Policy> custom;  // kCustom only
};

// The learning phase simulate() runs before control (and `train` runs to get
// the same model): WINDOWS windows of T, a new probe (probe.h, PROBE: boundary or random; RNG seeds it)
// every 5, each window into MODEL. RNG and GENERATION carry on into control.
// simulate() seeds RNG with cfg.seed ^ 0x5eed (kLearnSeedXor).
inline constexpr uint64_t kLearnSeedXor = 0x5eed;
Status learn_model(Twin& t, Model& model, const Objectives& objectives, size_t windows, std::mt19937_64& rng,
                   uint64_t& generation, ProbeKind probe = ProbeKind::kRandom, size_t probe_hold = 5);

// A service in a simulated window (predicted: the decision's, search only).
using SimServiceWindow = ServiceReport;

struct SimWindow {
  uint64_t seq = 0;
  std::vector<SimServiceWindow> services;
  double decide_ms = 0;
};

struct SimResult {
  std::vector<SimWindow> windows;
  Decision last_decision;
  nlohmann::json model;  // Model::to_json at the end
  Model learned;         // the model itself, as fitted at the end of learning
  // Per service: share of controlled windows that met the objective, mean carried rps.
  std::map<std::string, std::pair<double, double>> summary;
};

Result<SimResult> simulate(const TwinConfig& cfg, const Objectives& objectives, const SimOptions& opt);

nlohmann::json to_json(const SimResult& r);
// A fixed-width table: one line per window, per service carried / measured / met.
std::string table(const SimResult& r);
// The last decision explained: per service the chosen action and the runner-up with their predicted latency.
std::string explain(const Decision& d);

}  // namespace meshcut::control
