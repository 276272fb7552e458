// SPDX-License-Identifier: Apache-2.0
// The action document: exact slots, largest-remainder ppm, and every bad input named.
#include <catch2/catch.hpp>

#include <arpa/inet.h>

#include <numeric>
#include <random>
#include <string>

#include "obj_fixture.h"
#include "meshcut/obj/action.h"

using namespace meshcut::obj;

namespace {

using testing::fixture;

std::string error_of(const std::string& text, uint64_t current = 0) {
  auto a = parse_action(text, fixture(), current);
  REQUIRE_FALSE(a.ok());
  return a.error().what;
}

}  // namespace

TEST_CASE("weights_to_ppm: 0.6/0.3/0.1 and largest remainder", "[obj-action]") {
  CHECK(weights_to_ppm({0.6, 0.3, 0.1}) == std::vector<uint32_t>{600000, 300000, 100000});
  CHECK(weights_to_ppm({1.0 / 3, 1.0 / 3, 1.0 / 3}) == std::vector<uint32_t>{333334, 333333, 333333});
  CHECK(weights_to_ppm({0.5, 0, 0.5}) == std::vector<uint32_t>{500000, 0, 500000});
  // A tiny weight keeps one part; the total stays exact.
  auto p = weights_to_ppm({1e-9, 1 - 1e-9});
  CHECK(p == std::vector<uint32_t>{1, 999999});
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0, 1);
  for (int t = 0; t < 1000; ++t) {
    std::vector<double> w(1 + t % MC_OBJ_MAX_BACKENDS);
    for (auto& x : w) x = u(rng) < 0.2 ? 0.0 : u(rng) * u(rng) * u(rng);
    w[0] += 1e-6;
    auto q = weights_to_ppm(w);
    CHECK(std::accumulate(q.begin(), q.end(), 0ull) == MC_OBJ_WEIGHT_SCALE);
    double sum = std::accumulate(w.begin(), w.end(), 0.0);
    for (size_t i = 0; i < w.size(); ++i) {
      CHECK((w[i] > 0) == (q[i] > 0));
      CHECK(std::fabs(q[i] - w[i] / sum * 1e6) < 1.0 + w.size());
    }
  }
}

TEST_CASE("an action compiles to exact slots", "[obj-action]") {
  Services s = fixture();
  auto a = parse_action(R"({"generation": 7, "ttl_ms": 5000, "services": {
      "bed/s1": {"classes": {"premium": {"weights": {"10.0.1.5:8080": 0.6, "s1-b": 0.4}, "rate": 200.0, "burst": 20},
                             "freemium": {"rate": 2.5},
                             "default": {"weights": {"s1-a": 0, "s1-b": 1}}}},
      "bed/s2": {"classes": {"premium": {"rate": 0}}}}})",
                        s, 6);
  INFO((a ? "" : a.error().what));
  REQUIRE(a.ok());
  CHECK(a->generation == 7);
  CHECK(a->ttl_ms == 5000);
  REQUIRE(a->slots.size() == 4);
  // Sorted by (svc, cls): s1/default, s1/premium, s1/freemium, s2/premium.
  const Slot& d = a->slots[0];
  CHECK((d.svc == 0 && d.cls == 0));
  CHECK(d.a.flags == MC_OBJ_ACT_F_ROUTE);
  REQUIRE(d.a.n_backends == 1);  // the zero weight is left out
  CHECK(d.a.be[0].ip == inet_addr("10.0.2.7"));
  CHECK(d.a.be[0].port == htons(8080));
  CHECK(d.a.be_index[0] == 1);
  CHECK(d.a.cum[0] == MC_OBJ_WEIGHT_SCALE);
  const Slot& p = a->slots[1];
  CHECK((p.svc == 0 && p.cls == 1));
  CHECK(p.a.generation == 7);
  CHECK(p.a.flags == (MC_OBJ_ACT_F_ROUTE | MC_OBJ_ACT_F_ADMIT));
  REQUIRE(p.a.n_backends == 2);
  CHECK(p.a.be[0].ip == inet_addr("10.0.1.5"));
  CHECK(p.a.be_index[0] == 0);
  CHECK(p.a.cum[0] == 600000);
  CHECK(p.a.cum[1] == 1000000);
  CHECK(p.a.rate_milli == 200000);
  CHECK(p.a.burst == 20);
  const Slot& f = a->slots[2];
  CHECK((f.svc == 0 && f.cls == 2));
  CHECK(f.a.flags == MC_OBJ_ACT_F_ADMIT);
  CHECK(f.a.rate_milli == 2500);
  CHECK(f.a.burst == 1);  // default max(1, round(2.5 / 10))
  const Slot& b = a->slots[3];
  CHECK((b.svc == 1 && b.cls == 1));
  CHECK(b.a.rate_milli == 0);
  CHECK(b.a.burst == 0);  // rate 0 blocks every connect
  auto j = to_json(*a, s);
  CHECK(j["generation"] == 7);
  CHECK(j["services"]["bed/s1"]["classes"]["premium"]["backends"][0]["addr"] == "10.0.1.5:8080");
  CHECK(j["services"]["bed/s1"]["classes"]["premium"]["backends"][1]["ppm"] == 400000);
  CHECK(j["services"]["bed/s1"]["classes"]["freemium"]["rate"] == 2.5);
  // Defaults: ttl 3000, burst a tenth of the rate; YAML through the same loader.
  auto y = parse_action("generation: 1\nservices:\n  bed/s2:\n    classes:\n      default: {rate: 200}\n", s, 0);
  REQUIRE(y.ok());
  CHECK(y->ttl_ms == 3000);
  CHECK(y->slots.at(0).a.burst == 20);
}

TEST_CASE("a document built in memory (signed integers) compiles like a parsed one", "[obj-action]") {
  nlohmann::json doc = {{"generation", 3}, {"services", nlohmann::json::object()}};
  REQUIRE(doc["generation"].is_number_unsigned() == false);
  auto a = compile_action(doc, fixture(), 2);
  REQUIRE(a);
  CHECK(a->generation == 3);
  doc["generation"] = -1;
  CHECK(!compile_action(doc, fixture(), 0));
}

TEST_CASE("every bad action is refused with the field named", "[obj-action]") {
  const std::string s1 = R"("bed/s1": {"classes": {"premium": )";
  auto doc = [&](const std::string& cls) { return R"({"generation": 2, "services": {)" + s1 + cls + "}}}}"; };
  struct Case {
    std::string doc, want;
  };
  const Case cases[] = {
      {"{", "not valid JSON"},
      {R"({"services": {}})", "action.generation is missing"},
      {R"({"generation": -1, "services": {}})", "action.generation must be an integer >= 1"},
      {R"({"generation": 1, "services": {}})", "generation 1 is not newer than the one in force (1)"},
      {R"({"generation": 2, "ttl_ms": 50, "services": {}})", "action.ttl_ms must be an integer 100..3600000"},
      {R"({"generation": 2, "ttl_ms": 4000000, "services": {}})", "action.ttl_ms must be an integer 100..3600000"},
      {R"({"generation": 2})", "action.services is missing"},
      {R"({"generation": 2, "services": {}, "ttl": 5})", "action.ttl is not a known field"},
      {R"({"generation": 2, "services": {"bed/nope": {"classes": {}}}})", "no managed service 'bed/nope'"},
      {R"({"generation": 2, "services": {"bed/s1": {"classes": {"gold": {}}}}})", "no caller class 'gold'"},
      {doc(R"({"weights": {"10.0.1.5:8080": 0.6, "10.0.2.7:8080": 0.3}})"), "weights sum to 0.9, not 1"},
      {doc(R"({"weights": {"10.0.1.5:8080": 1.2, "10.0.2.7:8080": -0.2}})"),
       "weights[\"10.0.2.7:8080\"] is negative (-0.2)"},
      {doc(R"({"weights": {"10.9.9.9:1": 1}})"), "no endpoint '10.9.9.9:1' in service bed/s1"},
      {doc(R"({"weights": {"10.0.1.5:8080": 0.5, "s1-a": 0.5}})"), "is given twice"},
      {doc(R"({"weights": {"s1-a": "1"}})"), "weights[\"s1-a\"] must be a number"},
      {doc(R"({"weights": {}})"), "weights is empty"},
      {doc(R"({"rate": -1})"), "classes[\"premium\"].rate is negative (-1)"},
      {doc(R"({"rate": "fast"})"), "classes[\"premium\"].rate must be a number"},
      {doc(R"({"rate": 10, "burst": 0})"), "classes[\"premium\"].burst must be an integer 1.."},
      {doc(R"({"rate": 10, "burst": 2.5})"), "classes[\"premium\"].burst must be an integer >= 1"},
      {doc(R"({"burst": 3})"), "burst is given without rate"},
      {doc(R"({"rates": 3})"), "classes[\"premium\"].rates is not a known field"},
  };
  for (const Case& c : cases) {
    INFO(c.doc);
    std::string e = error_of(c.doc, 1);
    INFO(e);
    CHECK(e.find(c.want) != std::string::npos);
  }
  CHECK(error_of("generation: 1\nservices: {}\n---\ngeneration: 2\n").find("expected one document") !=
        std::string::npos);
}
