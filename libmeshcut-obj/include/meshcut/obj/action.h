// SPDX-License-Identifier: Apache-2.0
// The action document the controller PUTs (and `meshcutd objectives apply FILE`
// reads), checked against the services in force and compiled to the
// mc_obj_actions slots the kernel reads:
//
//   {"generation": 7, "ttl_ms": 3000, "services": {"default/s1": {"classes": {
//      "premium": {"weights": {"10.0.1.5:8080": 0.6, "s1-b": 0.4}, "rate": 200.0, "burst": 20}}}}}
//
// weights: keys are an endpoint's "ip:port" or its pod name; each finite and
// >= 0, summing to 1 within 1e-3; omitted: no routing (ROUTE off). rate:
// admitted connects per second, finite, >= 0 (0 blocks all); omitted: no
// admission (ADMIT off). burst: an integer >= 1, only with rate; default
// max(1, round(rate / 10)) (a tenth of a second of the rate). ttl_ms: 100 ..
// 3,600,000, default 3000. Any error names the field and compiles nothing.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "meshcut/error.h"
#include "meshcut/obj/abi.h"
#include "meshcut/obj/document.h"
#include "meshcut/obj/services.h"

namespace meshcut::obj {

inline constexpr uint64_t kDefaultTtlMs = 3000;
inline constexpr uint64_t kMinTtlMs = 100;
inline constexpr uint64_t kMaxTtlMs = 3600000;
inline constexpr double kWeightSumTolerance = 1e-3;
inline constexpr double kMaxRate = 1e9;  // rate_milli and the bucket's nano-tokens stay far from 2^64
inline constexpr uint64_t kMaxBurst = 1000000000;

struct Slot {
  uint32_t svc = 0;
  uint32_t cls = 0;
  mc_obj_action a{};  // a.generation is the action's
};

struct CompiledAction {
  uint64_t generation = 0;
  uint64_t ttl_ms = kDefaultTtlMs;
  std::vector<Slot> slots;  // sorted by (svc, cls), one per class entry of the document
};

// DOC checked against SERVICES; CURRENT_GENERATION is the one in force (0: none).
Result<CompiledAction> compile_action(const nlohmann::json& doc, const Services& services, uint64_t current_generation);
// The same from text (JSON, or YAML through the same loader; exactly one document).
Result<CompiledAction> parse_action(std::string_view text, const Services& services, uint64_t current_generation,
                                    Format format = Format::kAuto);

// Weights (each > 0 counts, 0 is left out) -> integer parts of TOTAL over the
// positive ones, by largest remainder (ties to the lower index): they sum to
// exactly TOTAL and no positive weight gets 0. Returns the parts of each input
// (0 for a zero weight), not cumulative; WEIGHTS has at most TOTAL positive
// entries and a positive sum. The node's tables use TOTAL = MC_OBJ_WEIGHT_SCALE
// (weights_to_ppm), an Istio route 100 (percent).
std::vector<uint32_t> largest_remainder(const std::vector<double>& weights, uint32_t total);
// largest_remainder(WEIGHTS, MC_OBJ_WEIGHT_SCALE): the parts per million the
// node's cumulative table is built from; WEIGHTS has at most
// MC_OBJ_MAX_BACKENDS entries.
std::vector<uint32_t> weights_to_ppm(const std::vector<double>& weights);

// The action back as JSON (status): generation, ttl_ms and per service and
// class the flags, backends with their ppm, rate and burst.
nlohmann::json to_json(const CompiledAction& a, const Services& services);

}  // namespace meshcut::obj
