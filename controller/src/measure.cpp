// SPDX-License-Identifier: Apache-2.0
#include "meshcut/control/measure.h"

#include <vector>

#include "meshcut/obj/windows.h"

namespace meshcut::control {

using nlohmann::json;

ServiceMeasure measure_service(const json& window, const std::string& service, double percentile) {
  ServiceMeasure m;
  if (!window.is_object() || !window.contains("rows") || !window["rows"].is_array()) return m;
  // Every class's "all" row as one source of merge_nodes: counters, rates and histograms add up.
  std::vector<json> rows;
  for (const json& r : window["rows"]) {
    if (!r.is_object() || r.value("service", "") != service || r.value("backend", "") != "all") continue;
    json one = r;
    one["class"] = "*";
    rows.push_back(json{{"rows", json::array({one})}, {"duration_s", window.value("duration_s", 1.0)}});
  }
  if (rows.empty()) return m;
  const json merged = obj::merge_nodes(rows);
  const json& r = merged["rows"][0];
  const char* key = percentile == 50 ? "p50" : percentile == 90 ? "p90" : percentile == 95 ? "p95" : "p99";
  m.offered_rps = r["rate"].value("offered", 0.0);
  m.carried_rps = r["rate"].value("completed", 0.0);
  m.count = r["latency_ms"].value("count", uint64_t{0});
  m.percentile_ms = r["latency_ms"].value(key, 0.0);
  return m;
}

json ServiceReport::to_json() const {
  return {{"service", service},
          {"offered_rps", offered_rps},
          {"carried_rps", carried_rps},
          {"measured_ms", measured_ms},
          {"predicted_ms", predicted_ms},
          {"bound_ms", bound_ms},
          {"met", met},
          {"controlled", controlled}};
}

ServiceReport report_service(const json& window, const ServiceObjective& so) {
  ServiceReport s;
  s.service = so.service;
  auto m = measure_service(window, so.service, so.latency.percentile);
  s.offered_rps = m.offered_rps;
  s.carried_rps = m.carried_rps;
  s.measured_ms = m.percentile_ms;
  s.bound_ms = so.latency.bound_ms;
  s.met = m.count == 0 || m.percentile_ms <= so.latency.bound_ms;
  return s;
}

}  // namespace meshcut::control
