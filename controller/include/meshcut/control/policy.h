// SPDX-License-Identifier: Apache-2.0
// The `search` policy (issue 16): every window, an exact search of the action
// grid through the model (model-predictive control; with the paper's gamma = 0
// and a next state the action does not change, this argmax is the optimum a
// learned policy can at best match).
//
// Per managed service with an objective: routing weights over its backends on
// the routingStep grid (every composition of 1 into steps), and per caller
// class an admission fraction on the admissionStep grid (rate = fraction x the
// class's offered load of the last window; fraction 1: no bucket at all).
// Backends belong to one service, so services do not share a queue and the
// joint search splits exactly into one search per service.
// A candidate is feasible when every backend it sends load to is predicted
// within the bound: predicted x (1 + margin) <= bound, margin = base_margin +
// (the worst backend's held-out ratio_q90 - 1, if quantile_margin: the factor
// that held in 9 of 10 held-out windows) + error_margin_factor x its NMAE.
// Choice, in order: feasible; meets the throughput target (if any); largest
// carried load weighted by class weights; lowest predicted latency; the
// grid's order. Admitting nothing is always feasible, so a choice exists.
// Hysteresis: the current choice is kept while it is feasible and the best is
// not better by more than `hysteresis` (relative). Change limit: a routing
// weight moves by at most max_route_change and an admission fraction rises by
// at most max_admit_increase per window (cutting load is never limited: it is
// how an objective is recovered).
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "meshcut/control/model.h"
#include "meshcut/control/objectives.h"
#include "meshcut/obj/services.h"

namespace meshcut::control {

// Offered requests/s per service key and class name.
using Load = std::map<std::string, std::map<std::string, double>>;

// The offered load of WINDOW (the node's JSON): its "all" rows' rate.offered.
Load load_from_window(const nlohmann::json& window);

struct PolicyOptions {
  double base_margin = 0.0;
  bool quantile_margin = true;
  double max_margin = 1.0;  // a model that bad is capped (x2), not allowed to block everything
  double error_margin_factor = 0.0;
  double hysteresis = 0.05;
  double max_route_change = 1.0;    // 1: unlimited
  double max_admit_increase = 1.0;  // 1: unlimited
  uint64_t ttl_ms = 3000;
  double burst_s = 0.1;  // bucket depth in seconds of its rate
};

struct ServiceChoice {
  std::string service;
  std::vector<std::string> backends;      // ip:port, the service's endpoint order
  std::vector<double> weights;            // per backend, on the grid
  std::map<std::string, double> admit;    // class -> fraction admitted
  std::map<std::string, double> offered;  // class -> offered rps (the decision's input)
  std::vector<double> backend_ms;         // predicted percentile per backend (0 where weight 0)
  double predicted_ms = 0;                // worst backend with weight > 0
  double bound_ms = 0, margin = 0;
  double value = 0;        // carried x class weight
  double carried_rps = 0;  // carried, unweighted
  bool feasible = false, throughput_met = true;
  bool kept = false;  // hysteresis kept the previous choice
  std::string note;   // why the service is not controlled, if it is not
};

struct Decision {
  std::vector<ServiceChoice> chosen;     // per controlled service, objectives order
  std::vector<ServiceChoice> runner_up;  // the best different candidate per service (same order; may be empty)
  nlohmann::json action;                 // the node's action document
  double value = 0;                      // sum of chosen values
  double decide_ms = 0;                  // wall time of decide()
  size_t candidates = 0;                 // evaluated
};

// What the loop asks of a policy (search here, ppo in ppo.h): one window's
// decision from the window's offered load and the model.
class Policy {
 public:
  virtual ~Policy() = default;
  // One window's decision. GENERATION goes into the action document. Services
  // of OBJECTIVES that SERVICES does not have, or whose backends are not all
  // modelled, are left uncontrolled (not in the action: the node fails open),
  // with a note in their ServiceChoice.
  virtual Decision decide(const obj::Services& services, const Load& load, const Model& model,
                          const Objectives& objectives, uint64_t generation) = 0;
  virtual void reset() {}
  // Whether the policy can control SERVICES under OBJECTIVES at all (a learned
  // policy: the shape it was trained for); the search can control anything.
  virtual Status check(const obj::Services&, const Objectives&) const { return ok_status(); }
};

class SearchPolicy : public Policy {
 public:
  explicit SearchPolicy(PolicyOptions opt = {}) : opt_(opt) {}
  Decision decide(const obj::Services& services, const Load& load, const Model& model, const Objectives& objectives,
                  uint64_t generation) override;
  void reset() override { current_.clear(); }
  const std::map<std::string, ServiceChoice>& current() const { return current_; }
  const PolicyOptions& options() const { return opt_; }

 private:
  PolicyOptions opt_;
  std::map<std::string, ServiceChoice> current_;
};

// Every composition of N (levels) into K non-negative parts, lexicographic.
std::vector<std::vector<int>> compositions(int n, int k);

// A probing action (learning): per service a routing drawn uniformly from the
// grid's compositions, the same for every class, no admission. Every few
// windows a new one, so that every backend is seen at several loads (with the
// load alone mu and the variability cannot be told apart).
nlohmann::json probe_routing(const obj::Services& services, int routing_levels, std::mt19937_64& rng,
                             uint64_t generation, uint64_t ttl_ms);

// The action document of CHOICES (what decide() puts in Decision::action).
nlohmann::json action_document(const std::vector<ServiceChoice>& choices, uint64_t generation,
                               const PolicyOptions& opt);

}  // namespace meshcut::control
