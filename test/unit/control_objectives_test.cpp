// SPDX-License-Identifier: Apache-2.0
// The objectives document: what it accepts, and every bad input named by its field path.
#include <catch2/catch.hpp>

#include <string>

#include "meshcut/control/objectives.h"

using namespace meshcut::control;

namespace {

const char* kGood = R"(apiVersion: meshcut.io/v1alpha1
kind: Objectives
spec:
  windowSeconds: 1
  services:
  - service: default/s1
    latency: {percentile: 95, boundMs: 50}
    throughputRps: 200
    classWeights: {premium: 3, freemium: 1}
  - service: default/s2
    latency: {percentile: 99, boundMs: 120}
  grid: {routingStep: 0.2, admissionStep: 0.25}
)";

std::string error_of(const std::string& text) {
  auto r = parse_objectives(text);
  REQUIRE_FALSE(r.ok());
  return r.error().what;
}

}  // namespace

TEST_CASE("objectives: a good document, YAML and JSON, round trip", "[control-objectives]") {
  auto r = parse_objectives(kGood);
  INFO((r.ok() ? "" : r.error().format()));
  REQUIRE(r.ok());
  const Objectives& o = *r;
  CHECK(o.window_seconds == 1);
  REQUIRE(o.services.size() == 2);
  CHECK(o.services[0].service == "default/s1");
  CHECK(o.services[0].latency.percentile == 95);
  CHECK(o.services[0].latency.bound_ms == 50);
  CHECK(o.services[0].throughput_rps == 200);
  CHECK(o.services[0].class_weight("premium") == 3);
  CHECK(o.services[0].class_weight("freemium") == 1);
  CHECK(o.services[0].class_weight("other") == 0);
  CHECK(o.services[1].latency.percentile == 99);
  CHECK_FALSE(o.services[1].throughput_rps.has_value());
  CHECK(o.services[1].class_weight("anything") == 1);  // no classWeights: every class counts 1
  CHECK(o.grid.routing_levels() == 5);
  CHECK(o.grid.admission_levels() == 4);
  CHECK(o.find("default/s2") == &o.services[1]);
  CHECK(o.find("default/s3") == nullptr);

  auto back = parse_objectives(to_json(o).dump());
  REQUIRE(back.ok());
  CHECK(to_json(*back) == to_json(o));
}

TEST_CASE("objectives: defaults (percentile 95, window 1 s, grid 0.2)", "[control-objectives]") {
  auto r = parse_objectives(R"({"apiVersion": "meshcut.io/v1alpha1", "kind": "Objectives",
    "spec": {"services": [{"service": "a/b", "latency": {"boundMs": 10}}]}})");
  REQUIRE(r.ok());
  CHECK(r->window_seconds == 1);
  CHECK(r->services[0].latency.percentile == 95);
  CHECK(r->grid.routing_step == 0.2);
  CHECK(r->grid.admission_step == 0.2);
}

TEST_CASE("objectives: every bad input names its field", "[control-objectives]") {
  auto with = [](const std::string& from, const std::string& to) {
    std::string t = kGood;
    auto at = t.find(from);
    REQUIRE(at != std::string::npos);
    return t.replace(at, from.size(), to);
  };
  struct Case {
    std::string text, expect;
  };
  const Case cases[] = {
      {with("boundMs: 120", "boundMs: 0"), "spec.services[1].latency.boundMs must be > 0, got 0"},
      {with("boundMs: 120", "boundMs: -3"), "spec.services[1].latency.boundMs must be > 0, got -3"},
      {with("boundMs: 120", "boundMs: fast"), "spec.services[1].latency.boundMs must be a number, got a string"},
      {with("{percentile: 99, boundMs: 120}", "{percentile: 99}"), "spec.services[1].latency.boundMs is missing"},
      {with("percentile: 99", "percentile: 97"), "spec.services[1].latency.percentile must be one of 50, 90, 95, 99"},
      {with("    latency: {percentile: 99, boundMs: 120}\n", ""), "spec.services[1].latency is missing"},
      {with("latency: {percentile: 99, boundMs: 120}", "latency: 5"),
       "spec.services[1].latency must be an object, got an integer"},
      {with("boundMs: 120}", "boundMs: 120, bound: 1}"), "spec.services[1].latency.bound is not a known field"},
      {with("throughputRps: 200", "throughputRps: -1"), "spec.services[0].throughputRps must be >= 0, got -1"},
      {with("premium: 3", "premium: -3"), "spec.services[0].classWeights.premium must be >= 0, got -3"},
      {with("classWeights: {premium: 3, freemium: 1}", "classWeights: [1]"),
       "spec.services[0].classWeights must be an object"},
      {with("service: default/s2", "service: s2"), "spec.services[1].service must be ns/name, got \"s2\""},
      {with("service: default/s2", "service: default/s1"), "spec.services[1].service default/s1 is given twice"},
      {with("- service: default/s2", "- servce: default/s2"), "spec.services[1].servce is not a known field"},
      {with("routingStep: 0.2", "routingStep: 0.3"), "spec.grid.routingStep must divide 1 into whole steps"},
      {with("routingStep: 0.2", "routingStep: 0"), "spec.grid.routingStep must be in (0, 1], got 0"},
      {with("admissionStep: 0.25", "admissionStep: 2"), "spec.grid.admissionStep must be in (0, 1], got 2"},
      {with("windowSeconds: 1", "windowSeconds: 0"), "spec.windowSeconds must be in (0, 3600], got 0"},
      {with("apiVersion: meshcut.io/v1alpha1", "apiVersion: v1"), "apiVersion must be meshcut.io/v1alpha1"},
      {with("kind: Objectives", "kind: Service"), "kind must be Objectives, got \"Service\""},
      {with("  windowSeconds: 1\n", "  window: 1\n"), "spec.window is not a known field"},
      {"apiVersion: meshcut.io/v1alpha1\nkind: Objectives\nspec: {services: []}\n", "spec.services is empty"},
      {"apiVersion: meshcut.io/v1alpha1\nkind: Objectives\n", "objectives.spec is missing"},
      {"[1, 2]", "the objectives document must be an object, got an array"},
      {std::string(kGood) + "---\n" + kGood, "expected exactly one document, got 2"},
  };
  for (const Case& c : cases) {
    std::string e = error_of(c.text);
    INFO("got: " << e << "\nexpected: " << c.expect);
    CHECK(e.find(c.expect) != std::string::npos);
  }
}

TEST_CASE("objectives: load_objectives names the file", "[control-objectives]") {
  auto r = load_objectives("/nonexistent/objectives.yaml");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().format().find("/nonexistent/objectives.yaml") != std::string::npos);
}
