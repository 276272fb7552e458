// SPDX-License-Identifier: Apache-2.0
// mcload's arrival schedule: a rate pattern (requests/s as a function of the
// time since the measured run began) and the intended send times it yields.
// Pure logic, included by mcload and its unit tests.
//
// Pattern specs (--pattern):
//   constant              the --rate for the whole run (the default)
//   steps:R@Ds,R@Ds,...   R requests/s for D seconds each, in order; the last
//                         rate holds if the run is longer ("ms" also accepted)
//   sin:MEAN,AMP,PERIODs  MEAN + AMP * sin(2 pi t / PERIOD), never below 0
//   file:PATH             CSV rows "time_s,rate" (a header line and # comments
//                         allowed, times increasing from 0): each rate holds
//                         from its time until the next row's
// Arrivals: constant (the n-th request when the integral of the rate reaches
// n) or poisson (exponential gaps in that integral: a non-homogeneous Poisson
// process whose count in any window has mean = variance = integral of rate).
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <variant>
#include <vector>

namespace mcload {

struct Step {
  double rate;     // requests/s
  double seconds;  // how long it holds
};

class Pattern {
 public:
  static Pattern constant(double rate);
  static Pattern steps(std::vector<Step> steps);
  static Pattern sinusoid(double mean, double amplitude, double period_s);
  // Parse a spec (see above); RATE is --rate, used by "constant". On a bad
  // spec: nullopt and ERR says what is wrong and what a good one looks like.
  static std::optional<Pattern> parse(const std::string& spec, double rate, std::string& err);
  // Parse "time_s,rate" CSV text (the file: pattern's contents).
  static std::optional<Pattern> from_csv(const std::string& text, std::string& err);

  double rate_at(double t) const;
  // The end of the piece of constant rate holding at T; for a sinusoid a
  // short step (1 ms) over which the rate is taken as its midpoint value.
  double piece_end(double t) const;
  // The rate taken over the piece holding T (a sinusoid's midpoint value).
  double piece_rate(double t) const;
  // The integral of the rate over [0, T]: the expected number of arrivals.
  double expected(double t) const;
  double mean_rate(double duration) const { return duration > 0 ? expected(duration) / duration : 0.0; }
  std::string describe() const;

 private:
  enum class Kind { Steps, Sinusoid } kind_ = Kind::Steps;
  std::vector<Step> steps_;  // also constant (one step) and file rows
  double mean_ = 0, amp_ = 0, period_ = 1;
  std::string label_;
};

enum class Arrival { Constant, Poisson };

// Intended send times in seconds from the start of the measured run, in
// increasing order, up to END (exclusive).
class Schedule {
 public:
  Schedule(Pattern p, Arrival a, uint64_t seed, double end_s);
  std::optional<double> next();

 private:
  // The time at which the integral of the rate from 0 reaches target_, or
  // nullopt if that is at or past end_. Walks the pieces from the checkpoint
  // (the start of the piece holding the last arrival and the integral there),
  // so that the n-th constant arrival is at exactly n / rate, without drift.
  std::optional<double> advance();
  Pattern pattern_;
  Arrival arrival_;
  std::mt19937_64 rng_;
  std::exponential_distribution<double> exp_{1.0};
  double end_;
  double cp_t_ = 0, cp_area_ = 0;  // checkpoint
  double target_ = 0;              // the integral at the next arrival
  bool first_ = true;
};

}  // namespace mcload
