// SPDX-License-Identifier: Apache-2.0
// meshcut-control render --istio (controller istio.h): the action as Istio
// objects. Golden files under test/fixtures/objectives/istio/: action.json and
// services.yaml in, expected.yaml out. MESHCUT_UPDATE_GOLDEN=1 rewrites
// expected.yaml; review the diff.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <numeric>
#include <sstream>

#include "meshcut/control/istio.h"
#include "meshcut/obj/action.h"
#include "meshcut/obj/document.h"
#include "obj_fixture.h"

using namespace meshcut::control;
using nlohmann::json;

namespace {

const std::string kDir = std::string(MESHCUT_FIXTURES_DIR) + "/objectives/istio";

meshcut::obj::Services istio_services() {
  auto s = meshcut::obj::load_services(kDir + "/services.yaml");
  REQUIRE(s.ok());
  return *s;
}

json golden_action() {
  auto t = meshcut::obj::read_file(kDir + "/action.json");
  REQUIRE(t.ok());
  return json::parse(*t);
}

IstioRender render_ok(const json& action, const meshcut::obj::Services& s, const IstioOptions& opt = {}) {
  auto r = render_istio(action, s, opt);
  INFO((r ? "" : r.error().format()));
  REQUIRE(r.ok());
  return *r;
}

std::string render_error(const json& action, const meshcut::obj::Services& s) {
  auto r = render_istio(action, s);
  REQUIRE_FALSE(r.ok());
  return r.error().format();
}

const json* find_object(const IstioRender& r, const std::string& kind, const std::string& name) {
  for (const json& o : r.objects)
    if (o["kind"] == kind && o["metadata"]["name"] == name) return &o;
  return nullptr;
}

const json* find_route(const IstioRender& r, const std::string& vs, const std::string& route) {
  const json* v = find_object(r, "VirtualService", vs);
  if (!v) return nullptr;
  for (const json& h : (*v)["spec"]["http"])
    if (h["name"] == route) return &h;
  return nullptr;
}

json one_service_action(const json& classes) {
  return {{"generation", 5}, {"services", {{"bed/s1", {{"classes", classes}}}}}};
}

}  // namespace

TEST_CASE("render --istio: golden file", "[control-istio]") {
  IstioRender r = render_ok(golden_action(), istio_services());
  std::string got = to_yaml(r);
  const std::string path = kDir + "/expected.yaml";
  if (std::getenv("MESHCUT_UPDATE_GOLDEN")) std::ofstream(path) << got;
  auto want = meshcut::obj::read_file(path);
  REQUIRE(want.ok());
  CHECK(got == *want);
  // The YAML reads back (through the project's one loader) as the objects themselves.
  auto docs = meshcut::obj::parse_documents(got, meshcut::obj::Format::kYaml);
  REQUIRE(docs.ok());
  CHECK(json(*docs) == to_json(r));
  // Deterministic: the same input, the same bytes.
  CHECK(to_yaml(render_ok(golden_action(), istio_services())) == got);

  // What the golden file holds, asserted on its own so a bad regeneration fails too.
  REQUIRE(r.objects.size() == 5);  // DR + VS for s1 and s2, one EnvoyFilter
  CHECK(r.objects.back()["kind"] == "EnvoyFilter");
  CHECK(r.objects.back()["metadata"]["namespace"] == "istio-system");
  const json* dr = find_object(r, "DestinationRule", "meshcut-s1");
  REQUIRE(dr);
  CHECK((*dr)["spec"]["host"] == "s1.bed.svc.cluster.local");
  REQUIRE((*dr)["spec"]["subsets"].size() == 3);
  CHECK((*dr)["spec"]["subsets"][2] ==
        json{{"name", "s1-2"}, {"labels", {{"statefulset.kubernetes.io/pod-name", "s1-2"}}}});
  const json* prem = find_route(r, "meshcut-s1", "meshcut-80-premium");
  REQUIRE(prem);
  CHECK((*prem)["match"] == json::array({{{"port", 80}, {"sourceNamespace", "gold"}}}));
  std::vector<int> w;
  for (const json& d : (*prem)["route"]) w.push_back(d["weight"]);
  CHECK(w == std::vector<int>{50, 30, 20});
  // The classes in listing order, the default after them, the catch-all last.
  const json& http = (*find_object(r, "VirtualService", "meshcut-s1"))["spec"]["http"];
  std::vector<std::string> names;
  for (const json& h : http) names.push_back(h["name"]);
  CHECK(names == std::vector<std::string>{"meshcut-80-premium", "meshcut-80-freemium", "meshcut-80-default",
                                          "meshcut-fail-open"});
  CHECK_FALSE(http.back().contains("match"));
  // freemium: two namespaces x two pods, each with the annotation's label.
  const json& fm = (*find_route(r, "meshcut-s1", "meshcut-80-freemium"))["match"];
  REQUIRE(fm.size() == 4);
  CHECK(fm[3] ==
        json{{"port", 80},
             {"sourceNamespace", "free"},
             {"sourceLabels", {{"meshcut.io/class", "freemium"}, {"statefulset.kubernetes.io/pod-name", "client-1"}}}});
  // s2: only its http port is in the action, and no default entry: one route, then the catch-all.
  const json& http2 = (*find_object(r, "VirtualService", "meshcut-s2"))["spec"]["http"];
  REQUIRE(http2.size() == 2);
  CHECK(http2[0]["name"] == "meshcut-80-freemium");
  CHECK(http2[0]["route"] ==
        json::array({{{"destination", {{"host", "s2.bed.svc.cluster.local"}, {"port", {{"number", 80}}}}}}}));
  // The EnvoyFilter: the filter, then s1 premium's and s2 freemium's buckets.
  const json& patches = r.objects.back()["spec"]["configPatches"];
  REQUIRE(patches.size() == 3);
  CHECK(patches[0]["applyTo"] == "HTTP_FILTER");
  CHECK(patches[1]["match"]["routeConfiguration"]["vhost"] ==
        json{{"name", "s1.bed.svc.cluster.local:80"}, {"route", {{"name", "meshcut-80-premium"}}}});
  const json& b1 = patches[1]["patch"]["value"]["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"];
  CHECK(b1["token_bucket"] == json{{"fill_interval", "0.05s"}, {"max_tokens", 20}, {"tokens_per_fill", 10}});
  const json& b2 = patches[2]["patch"]["value"]["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"];
  // rate 30 with the node's default burst (a tenth of a second: 3).
  CHECK(b2["token_bucket"] == json{{"fill_interval", "0.1s"}, {"max_tokens", 3}, {"tokens_per_fill", 3}});
  // s2:admin and s3 are not in the action: noted, nothing for s3.
  REQUIRE(r.notes.size() == 3);
  CHECK(r.notes[0].find("bed/s2:admin") == 0);
  CHECK(r.notes[1].find("bed/s3") == 0);
  // s2 freemium's bucket sits on four matches: four Envoy routes, four buckets.
  CHECK(r.notes[2] ==
        "bed/s2:http class 'freemium': 4 matches, so Envoy keeps as many buckets at this rate (one "
        "per Envoy route)");
  CHECK(got.find("# note: bed/s3: not in the action") != std::string::npos);
  CHECK_FALSE(find_object(r, "VirtualService", "meshcut-s3"));
  CHECK_FALSE(find_object(r, "DestinationRule", "meshcut-s3"));
}

TEST_CASE("render --istio: percentages sum to exactly 100", "[control-istio]") {
  auto s = istio_services();
  const double t = 1.0 / 3;
  IstioRender r =
      render_ok(one_service_action({{"default", {{"weights", {{"s1-0", t}, {"s1-1", t}, {"s1-2", t}}}}}}), s);
  const json* d = find_route(r, "meshcut-s1", "meshcut-80-default");
  REQUIRE(d);
  std::vector<int> w;
  std::vector<std::string> subsets;
  for (const json& x : (*d)["route"]) w.push_back(x["weight"]), subsets.push_back(x["destination"]["subset"]);
  CHECK(w == std::vector<int>{34, 33, 33});
  CHECK(subsets == std::vector<std::string>{"s1-0", "s1-1", "s1-2"});
  CHECK((*d)["match"] == json::array({{{"port", 80}}}));
  // Awkward splits: 1/7 of each of three, a tiny weight kept at 1 %, a zero left out.
  for (const auto& ws : std::vector<std::vector<double>>{
           {1.0 / 7, 2.0 / 7, 4.0 / 7}, {0.004, 0.006, 0.99}, {0.555, 0.445, 0}, {0.125, 0.375, 0.5}}) {
    json weights = {{"s1-0", ws[0]}, {"s1-1", ws[1]}, {"s1-2", ws[2]}};
    IstioRender q = render_ok(one_service_action({{"premium", {{"weights", weights}}}}), s);
    const json& route = (*find_route(q, "meshcut-s1", "meshcut-80-premium"))["route"];
    int sum = 0;
    for (const json& x : route) {
      CHECK(x["weight"].get<int>() >= 1);
      sum += x["weight"].get<int>();
    }
    INFO(weights.dump() << " -> " << route.dump());
    CHECK(sum == 100);
    CHECK(route.size() == static_cast<size_t>(std::count_if(ws.begin(), ws.end(), [](double v) { return v > 0; })));
  }
  CHECK(meshcut::obj::largest_remainder({0.004, 0.006, 0.99}, 100) == std::vector<uint32_t>{1, 1, 98});
  CHECK(meshcut::obj::largest_remainder({1.0 / 7, 2.0 / 7, 4.0 / 7}, 100) == std::vector<uint32_t>{14, 29, 57});
}

TEST_CASE("render --istio: rate 0 is an abort with 429, not a bucket", "[control-istio]") {
  auto s = istio_services();
  IstioRender r = render_ok(one_service_action({{"premium", {{"rate", 0}}}, {"default", {{"rate", 50}}}}), s);
  const json* p = find_route(r, "meshcut-s1", "meshcut-80-premium");
  REQUIRE(p);
  CHECK((*p)["fault"] == json{{"abort", {{"httpStatus", 429}, {"percentage", {{"value", 100}}}}}});
  // No routing in the action: the plain host, as Kubernetes balances it.
  CHECK((*p)["route"] ==
        json::array({{{"destination", {{"host", "s1.bed.svc.cluster.local"}, {"port", {{"number", 80}}}}}}}));
  const json* d = find_route(r, "meshcut-s1", "meshcut-80-default");
  REQUIRE(d);
  CHECK_FALSE(d->contains("fault"));
  // freemium has no entry but the default has: its own plain route, so its callers do not take the default's.
  const json* f = find_route(r, "meshcut-s1", "meshcut-80-freemium");
  REQUIRE(f);
  CHECK_FALSE(f->contains("fault"));
  const json* ef = find_object(r, "EnvoyFilter", "meshcut-admission");
  REQUIRE(ef);
  const json& patches = (*ef)["spec"]["configPatches"];
  REQUIRE(patches.size() == 2);  // the filter and the default's bucket: none for premium
  CHECK(patches[1]["match"]["routeConfiguration"]["vhost"]["route"]["name"] == "meshcut-80-default");
  CHECK(to_yaml(r).find("httpStatus: 429") != std::string::npos);

  // Only rate 0 anywhere: no EnvoyFilter at all.
  IstioRender z = render_ok(one_service_action({{"premium", {{"rate", 0}}}}), s);
  CHECK_FALSE(find_object(z, "EnvoyFilter", "meshcut-admission"));
  CHECK(find_route(z, "meshcut-s1", "meshcut-80-premium")->contains("fault"));
  // The root namespace is an option.
  IstioOptions o;
  o.root_namespace = "mesh-root";
  CHECK((*find_object(render_ok(one_service_action({{"premium", {{"rate", 5}}}}), s, o), "EnvoyFilter",
                      "meshcut-admission"))["metadata"]["namespace"] == "mesh-root");
}

TEST_CASE("render --istio: a service absent from the action gets no objects", "[control-istio]") {
  auto s = istio_services();
  json a = {{"generation", 9},
            {"services", {{"bed/s2:http", {{"classes", {{"default", {{"weights", {{"s2-1", 1}}}}}}}}}}}};
  IstioRender r = render_ok(a, s);
  REQUIRE(r.objects.size() == 2);
  for (const json& o : r.objects) {
    CHECK(o["metadata"]["name"] == "meshcut-s2");
    CHECK(o["metadata"]["annotations"]["meshcut.io/generation"] == "9");
  }
  CHECK_FALSE(find_object(r, "DestinationRule", "meshcut-s1"));
  CHECK_FALSE(find_object(r, "EnvoyFilter", "meshcut-admission"));
  REQUIRE(r.notes.size() == 3);
  CHECK(r.notes[0].find("bed/s1: not in the action") == 0);
  std::string y = to_yaml(r);
  CHECK(y.find("s1.bed.svc") == std::string::npos);
  CHECK(y.find("# note: bed/s1: not in the action") != std::string::npos);
  // An empty action: nothing at all, every service noted.
  IstioRender none = render_ok({{"generation", 1}, {"services", json::object()}}, s);
  CHECK(none.objects.empty());
  CHECK(none.notes.size() == s.services.size());
  CHECK(to_json(none) == json::array());
}

TEST_CASE("render --istio: bad input is refused with what to fix", "[control-istio]") {
  auto s = istio_services();
  auto refused = [&](const json& a, const std::vector<std::string>& parts) {
    std::string e = render_error(a, s);
    INFO(e);
    for (const auto& p : parts) CHECK(e.find(p) != std::string::npos);
  };
  refused({{"generation", 3}, {"services", {{"bed/nope", {{"classes", json::object()}}}}}},
          {"no managed service 'bed/nope'", "hint:"});
  // More weights than the service has endpoints: one of them names no endpoint of it.
  refused(one_service_action(
              {{"default", {{"weights", {{"s1-0", 0.25}, {"s1-1", 0.25}, {"s1-2", 0.25}, {"s2-0", 0.25}}}}}}),
          {"no endpoint 's2-0' in service bed/s1"});
  refused(one_service_action({{"default", {{"weights", {{"s1-0", 0.5}, {"s1-1", 0.4}}}}}}), {"sum to 0.9, not 1"});
  refused(one_service_action({{"gold", {{"rate", 1}}}}), {"no caller class 'gold'"});
  refused({{"services", json::object()}}, {"action.generation is missing"});

  // A class Istio cannot match: a pod glob (the shared fixture's freemium).
  auto glob = meshcut::obj::testing::fixture();
  json a = {{"generation", 2}, {"services", {{"bed/s1", {{"classes", {{"freemium", {{"rate", 1}}}}}}}}}};
  auto r = render_istio(a, glob);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().what.find("caller class 'freemium'") != std::string::npos);
  CHECK(r.error().what.find("glob 'free-*'") != std::string::npos);
  CHECK(r.error().hint.find("exact name") != std::string::npos);
  // The same file is fine when no route needs that class: premium only, no default entry.
  a["services"]["bed/s1"]["classes"] = {{"premium", {{"rate", 1}}}};
  CHECK(render_istio(a, glob).ok());

  // An endpoint without a pod name cannot be a subset.
  auto nopod = s;
  nopod.services[0].endpoints[1].pod.clear();
  auto e =
      render_istio(one_service_action({{"default", {{"weights", {{"s1-0", 0.5}, {"10.0.2.7:8080", 0.5}}}}}}), nopod);
  REQUIRE_FALSE(e.ok());
  CHECK(e.error().what.find("endpoint 10.0.2.7:8080 has a weight") != std::string::npos);
  CHECK(e.error().hint.find("targetRef.name") != std::string::npos);
}

TEST_CASE("render --istio: token buckets from rate and burst", "[control-istio]") {
  CHECK(envoy_token_bucket(200000, 20) ==
        json{{"fill_interval", "0.05s"}, {"max_tokens", 20}, {"tokens_per_fill", 10}});
  CHECK(envoy_token_bucket(1000, 1) == json{{"fill_interval", "1s"}, {"max_tokens", 1}, {"tokens_per_fill", 1}});
  CHECK(envoy_token_bucket(500, 1) == json{{"fill_interval", "2s"}, {"max_tokens", 1}, {"tokens_per_fill", 1}});
  CHECK(envoy_token_bucket(1500, 1) == json{{"fill_interval", "2s"}, {"max_tokens", 3}, {"tokens_per_fill", 3}});
  CHECK(envoy_token_bucket(33000, 3) == json{{"fill_interval", "1s"}, {"max_tokens", 33}, {"tokens_per_fill", 33}});
  // No exact interval up to 10 s: the nearest whole token per second.
  CHECK(envoy_token_bucket(123457, 12) == json{{"fill_interval", "1s"}, {"max_tokens", 123}, {"tokens_per_fill", 123}});
  CHECK(envoy_token_bucket(333, 1) == json{{"fill_interval", "3.003s"}, {"max_tokens", 1}, {"tokens_per_fill", 1}});
  // Every bucket's rate is within 0.5 token/s of the node's.
  for (uint64_t milli : {1u, 999u, 1001u, 7777u, 50000u, 123457u, 999999u, 1000000000u}) {
    json b = envoy_token_bucket(milli, 1);
    std::string fi = b["fill_interval"];
    double secs = std::stod(fi.substr(0, fi.size() - 1));
    CHECK(secs >= 0.05);
    CHECK(b["tokens_per_fill"].get<double>() / secs == Approx(milli / 1000.0).margin(0.5));
    CHECK(b["max_tokens"].get<uint64_t>() >= b["tokens_per_fill"].get<uint64_t>());
  }
}
