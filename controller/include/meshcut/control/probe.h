// SPDX-License-Identifier: Apache-2.0
// The learning schedule (issue 16): which action to probe next, so that a
// model good enough to control comes from minutes of windows, not a grid sweep.
//
// A window teaches the model most where its predictions decide something:
// near each service's bound. Per service with an objective, once every
// backend has a first fit, the prober enumerates the grid's routings and a
// uniform admission fraction (the same for every class), predicts each
// backend's percentile through the current model, keeps the candidates whose
// worst backend is predicted inside [band_lo, band_hi] x bound, and of those
// the one whose backends' loads are furthest (in utilisation) from any load
// already observed on them: the load levels the model has not seen yet near
// the boundary. Offered load too low to reach the band: the candidate closest
// to it (load concentrated on one backend, where the curve bends). Too high
// for any candidate: the one with the lowest prediction, so that probing does
// not drive a service into overload. Until a backend has a first fit, and for
// services without an objective, the routing is drawn at random from the grid
// (probe_routing's rule); a backend that a draw overloads is modelled from
// those saturated windows (model.h), and from then on steered to the band.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "meshcut/control/model.h"
#include "meshcut/control/objectives.h"
#include "meshcut/control/policy.h"
#include "meshcut/obj/services.h"

namespace meshcut::control {

enum class ProbeKind { kRandom, kBoundary };
// The names the command line takes: random, boundary.
const std::map<std::string, ProbeKind>& probe_kinds();

struct ProbeOptions {
  ProbeKind kind = ProbeKind::kBoundary;
  double band_lo = 0.6, band_hi = 1.05;  // predicted / bound
  uint64_t ttl_ms = 3000;
};

struct Probe {
  nlohmann::json action;            // the node's action document
  std::vector<ServiceChoice> plan;  // per service: weights, admission, predicted (0 when drawn at random)
  std::string why;                  // one clause per service, for the log
};

class Prober {
 public:
  explicit Prober(ProbeOptions opt = {}, uint64_t seed = 1) : opt_(opt), rng_(seed) {}
  // The next probe for the last window's offered LOAD through MODEL's current fits.
  Probe next(const obj::Services& services, const Objectives& objectives, const Load& load, const Model& model,
             uint64_t generation);
  const ProbeOptions& options() const { return opt_; }

 private:
  ProbeOptions opt_;
  std::mt19937_64 rng_;
};

}  // namespace meshcut::control
