// SPDX-License-Identifier: Apache-2.0
// The system model (issue 16): per backend a queueing structure fitted from
// meshcut's own windows, plus a learned residual.
//
// Structure: a FCFS queue with c servers (c known, default 1), Poisson
// arrivals, service rate mu per server and service-time SCV cs2. Mean sojourn
// by Allen-Cunneen, T = 1/mu + C(c, lambda/mu) / (c mu - lambda) * (1 + cs2) / 2
// (Erlang C; exact Pollaczek-Khinchine for c = 1). Percentiles by the
// exponential-tail approximation p_q = -ln(1 - q) * T (exact for M/M/1).
// Fit: (mu, cs2) by a grid then Levenberg-Marquardt on the windows' mean
// latency, residual (measured / predicted - 1) weighted by the square root of
// their sample counts (the mean is the statistic the structure predicts
// exactly; a percentile of a 1 s window is noisier; the relative error in
// linear space is less biased than the log of a small window's mean).
// Residual: per percentile and per utilisation bucket (rho in tenths), the
// geometric mean of measured / structural; a bucket never seen borrows its
// nearest neighbour's (so a load beyond any seen keeps the structure's
// extrapolation, scaled by the nearest residual).
// Windows out of steady state are left out of the fit: more arrivals than
// completions beyond Poisson noise (3 sigma) is a queue that grows (overload:
// the stationary formulas do not hold), fewer is a backlog draining; and a
// window whose mean sojourn exceeds a fifth of its length is a backlog either way.
// Saturated windows (FitOptions::saturation; a mean sojourn of a whole window or more: the servers
// never idled) measure the capacity directly: with 3 of them, mu is their
// median completion rate per server and only the SCV is fitted (a backend
// seen only overloaded still gets a model, SCV 1, so that probing can steer
// load off it). Without this, the windows a too-high load produces are thrown
// away and a model fitted on the few low-load ones overestimates mu.
// Error: the fit is first made on all windows but every k-th, and its NMAE
// (sum |predicted - measured| / sum measured) on the held-out ones reported;
// the model is then refitted on all. The held-out windows also give the
// 90th percentile of measured / predicted (ratio_q90), the policy's margin: an
// objective holds per window, and a window's percentile scatters around the
// model's typical value.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "meshcut/error.h"

namespace meshcut::control {

// One window of one backend (its class rows summed).
struct Observation {
  double load_rps = 0;  // requests routed to the backend per second
  double mean_ms = 0;
  double p50_ms = 0, p90_ms = 0, p95_ms = 0, p99_ms = 0;  // count-weighted over the class rows
  uint64_t count = 0;                                     // completed requests measured
  double completed_rps = 0;                               // 0: unknown (then the window is taken as steady)
};

struct QueueParams {
  double mu = 0;    // per server, requests/s
  double scv = 1;   // service-time squared coefficient of variation
  int servers = 1;  // c
};

inline constexpr size_t kResidualBuckets = 10;  // rho in [0, .1), ..., [.9, inf)
// Index into residual arrays for the window percentiles 50, 90, 95, 99.
size_t percentile_index(double percentile);

struct FitOptions;

class BackendModel {
 public:
  BackendModel() = default;
  // The structure alone (no residual): what the twin with these parameters would give an M/M/c.
  static BackendModel from_params(QueueParams p);

  const QueueParams& params() const { return p_; }
  double utilization(double load_rps) const;  // lambda / (c mu)
  // Structural mean sojourn, ms; +inf at rho >= 1.
  double structural_mean_ms(double load_rps) const;
  // Predicted PERCENTILE (50, 90, 95, 99) in ms at LOAD_RPS, residual included; +inf at rho >= 1.
  double predict_ms(double load_rps, double percentile) const;

  // Held-out error (NMAE) per percentile (50, 90, 95, 99), and the windows it was fitted and tested on.
  std::array<double, 4> nmae{};
  // The 90th percentile over held-out windows of measured / predicted, per
  // percentile: the factor a prediction needs to hold in 9 windows out of 10
  // (1 when nothing was held out).
  std::array<double, 4> ratio_q90{1, 1, 1, 1};
  size_t n_fit = 0, n_holdout = 0;
  double max_load_seen = 0;
  // mu was set from windows in which the backend never idled (their completion rate), not fitted.
  bool saturated = false;

  nlohmann::json to_json() const;

 private:
  friend Result<BackendModel> fit_backend(const std::vector<Observation>&, const FitOptions&);
  QueueParams p_;
  // log residual per percentile and bucket; has_[q][b]: the bucket had data.
  std::array<std::array<double, kResidualBuckets>, 4> log_res_{};
  std::array<std::array<bool, kResidualBuckets>, 4> has_{};
};

struct FitOptions {
  int servers = 1;
  size_t holdout_every = 5;  // every k-th observation is held out for the error (0: none)
  uint64_t min_count = 20;   // observations with fewer completed requests are left out
  bool residual = true;
  bool saturation = false;  // mu from saturated windows (the boundary probe's schedule turns it on)
};

// Needs at least 3 usable observations (2 parameters and a check).
Result<BackendModel> fit_backend(const std::vector<Observation>& obs, const FitOptions& opt = {});

// Every backend's model, fed with the node's windows (libmeshcut-obj's JSON).
class Model {
 public:
  using Key = std::pair<std::string, std::string>;  // service key, backend "ip:port"

  // Rows of WINDOW whose backend is not "all": one Observation per (service, backend).
  void add_window(const nlohmann::json& window);
  // Keeps the last MAX observations per backend (online refits forget the old regime).
  void set_history(size_t max) { history_ = max; }
  // Every fit() takes mu from saturated windows where there are 3 (FitOptions::saturation).
  void set_saturation(bool on) { saturation_ = on; }
  // Fits every backend with enough observations; the ones without keep their model (if any).
  // The errors of those that could not be fitted are returned joined (still ok if any fitted).
  Status fit(const FitOptions& opt = {});

  const BackendModel* find(const std::string& service, const std::string& backend) const;
  void set(const std::string& service, const std::string& backend, BackendModel m);
  const std::map<Key, std::vector<Observation>>& observations() const { return obs_; }
  const std::map<Key, BackendModel>& backends() const { return models_; }
  // The worst held-out NMAE over the fitted backends at PERCENTILE (0 if none is fitted).
  double nmae(double percentile) const;
  nlohmann::json to_json() const;

 private:
  size_t history_ = 3600;
  bool saturation_ = false;
  std::map<Key, std::vector<Observation>> obs_;
  std::map<Key, BackendModel> models_;
};

}  // namespace meshcut::control
