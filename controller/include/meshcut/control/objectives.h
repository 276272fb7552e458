// SPDX-License-Identifier: Apache-2.0
// The operator's objectives (OBJECTIVES.md), a Kubernetes-style document read
// as JSON or YAML through libmeshcut-obj's one loader:
//
//   apiVersion: meshcut.io/v1alpha1
//   kind: Objectives
//   spec:
//     windowSeconds: 1
//     services:
//     - service: default/s1                   # the service file's key (ns/name[:port-name])
//       latency: {percentile: 95, boundMs: 50} # in every window
//       throughputRps: 200                     # optional: carry at least this much when possible
//       classWeights: {premium: 3, freemium: 1}
//     grid: {routingStep: 0.2, admissionStep: 0.2}
//
// Parsing is a pure function (text -> struct), so reloading at run time is
// parsing again and swapping the struct: nothing is trained on it. Every error
// names the field path (spec.services[1].latency.boundMs must be > 0) and
// nothing is returned; unknown fields are errors (a typo must not silently
// drop an objective).
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "meshcut/error.h"
#include "meshcut/obj/document.h"

namespace meshcut::control {

inline constexpr const char* kObjectivesApiVersion = "meshcut.io/v1alpha1";
inline constexpr const char* kObjectivesKind = "Objectives";
// The percentiles a window carries (libmeshcut-obj windows: p50, p90, p95, p99).
inline constexpr double kPercentiles[] = {50, 90, 95, 99};

struct LatencyObjective {
  double percentile = 95;  // one of kPercentiles
  double bound_ms = 0;     // > 0
};

struct ServiceObjective {
  std::string service;  // "ns/name"
  LatencyObjective latency;
  std::optional<double> throughput_rps;         // >= 0
  std::map<std::string, double> class_weights;  // class name -> weight >= 0; empty: every class weighs 1
  // The weight of CLASS: its entry, 1 when class_weights is empty, 0 for a
  // class the objectives do not name (its load is worth nothing to carry).
  double class_weight(const std::string& cls) const;
};

struct Grid {
  double routing_step = 0.2;    // (0, 1], 1/step an integer
  double admission_step = 0.2;  // (0, 1], 1/step an integer
  int routing_levels() const;   // 1/routing_step
  int admission_levels() const;
};

struct Objectives {
  double window_seconds = 1;  // (0, 3600]
  std::vector<ServiceObjective> services;
  Grid grid;
  const ServiceObjective* find(std::string_view service) const;
};

Result<Objectives> objectives_from_json(const nlohmann::json& doc);
// TEXT holds exactly one document (JSON, or YAML).
Result<Objectives> parse_objectives(std::string_view text, obj::Format format = obj::Format::kAuto);
// The file at PATH; the format from its extension, else detected.
Result<Objectives> load_objectives(const std::string& path);
// The document form (parse_objectives(to_json(o).dump()) gives O back).
nlohmann::json to_json(const Objectives& o);

}  // namespace meshcut::control
