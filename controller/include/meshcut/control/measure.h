// SPDX-License-Identifier: Apache-2.0
// What a window says about a service's objective, the same against the twin
// (sim.h) and the nodes (run.h): its offered and carried load and the
// objective's percentile over every caller class, from the merged histograms
// of the service's "all" rows (not an average of per-class percentiles).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "meshcut/control/objectives.h"

namespace meshcut::control {

struct ServiceMeasure {
  double offered_rps = 0, carried_rps = 0, percentile_ms = 0;
  uint64_t count = 0;  // requests measured (0: nothing, the percentile is 0)
};
ServiceMeasure measure_service(const nlohmann::json& window, const std::string& service, double percentile);

// One service in one window: measured, predicted for the action in force, and the bound.
struct ServiceReport {
  std::string service;
  double offered_rps = 0, carried_rps = 0;
  double measured_ms = 0, predicted_ms = 0, bound_ms = 0;
  bool met = true;          // measured within the bound (or nothing carried)
  bool controlled = false;  // in the action pushed
  nlohmann::json to_json() const;
};
// SO's report for WINDOW (predicted and controlled left to the caller).
ServiceReport report_service(const nlohmann::json& window, const ServiceObjective& so);

}  // namespace meshcut::control
