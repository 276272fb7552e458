// SPDX-License-Identifier: Apache-2.0
// The service file: both formats, what is left out, every malformed field named, stable ids, classes.
#include <catch2/catch.hpp>

#include <arpa/inet.h>

#include <string>

#include "meshcut/obj/services.h"

using namespace meshcut::obj;

namespace {

Services load(const std::string& name) {
  auto s = load_services(std::string(MESHCUT_FIXTURES_DIR) + "/objectives/" + name);
  INFO((s ? "" : s.error().what));
  REQUIRE(s.ok());
  return *s;
}

std::string error_of(const std::string& text) {
  auto s = parse_services(text);
  REQUIRE_FALSE(s.ok());
  return s.error().what;
}

// A one-Service JSON file, its spec and the slice's endpoints replaceable.
std::string svc_doc(const std::string& spec, const std::string& slice = "") {
  std::string s =
      R"({"kind":"List","items":[{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"spec":)" + spec + "}";
  if (!slice.empty()) s += "," + slice;
  return s + "]}";
}
const std::string kSpec = R"({"clusterIP":"10.96.0.1","ports":[{"port":80}]})";
std::string slice(const std::string& endpoints, const std::string& extra = "") {
  return R"({"kind":"EndpointSlice","metadata":{"namespace":"default","labels":{"kubernetes.io/service-name":"a"}},"addressType":"IPv4")" +
         extra + R"(,"endpoints":)" + endpoints + "}";
}

}  // namespace

TEST_CASE("the JSON and the YAML fixture give the same services", "[obj-services]") {
  Services j = load("services.json");
  Services y = load("services.yaml");
  CHECK(to_json(j) == to_json(y));
  REQUIRE(j.services.size() == 2);
  const Service& s1 = j.services[0];
  CHECK(s1.key() == "bed/s1");
  CHECK(s1.id == 0);
  CHECK(s1.cluster_ip == "10.96.0.11");
  CHECK(s1.cluster_ip_be == inet_addr("10.96.0.11"));
  CHECK(s1.port == 80);
  CHECK(s1.port_be() == htons(80));
  CHECK(s1.vip().ip == inet_addr("10.96.0.11"));
  CHECK(s1.vip().port == htons(80));
  REQUIRE(s1.endpoints.size() == 2);  // the not-ready one left out
  CHECK(s1.endpoints[0].addr() == "10.0.1.5:8080");
  CHECK(s1.endpoints[0].node == "node1");
  CHECK(s1.endpoints[0].pod == "s1-a");
  CHECK(s1.endpoints[1].addr() == "10.0.2.7:8080");
  CHECK(s1.endpoints[1].index == 1);
  CHECK(s1.find_endpoint("s1-b") == &s1.endpoints[1]);
  CHECK(s1.find_endpoint("10.0.1.5:8080") == &s1.endpoints[0]);
  CHECK(s1.find_endpoint("s1-old") == nullptr);
  const Service& s2 = j.services[1];
  CHECK(s2.key() == "bed/s2");  // one TCP port: no port suffix (the UDP one is not managed)
  CHECK(s2.id == 1);
  REQUIRE(s2.endpoints.size() == 2);
  CHECK(s2.endpoints[0].addr() == "10.0.1.6:8080");  // no slice ports: the numeric targetPort
  REQUIRE(j.classes.size() == 2);
  CHECK(j.classes[0].name == "premium");
  CHECK(j.classes[0].id == 1);
  CHECK(j.classes[1].id == 2);
  CHECK(j.class_name(0) == "default");
  CHECK(j.class_name(2) == "freemium");
  CHECK(j.class_id("premium") == 1u);
  CHECK_FALSE(j.class_id("gold").has_value());
}

TEST_CASE("classify: first class whose criteria all match, else default", "[obj-services]") {
  Services s = load("services.yaml");
  CHECK(classify(s, "gold", "anything", {}) == 1);
  CHECK(classify(s, "bed", "free-1", {{"meshcut.io/class", "freemium"}}) == 2);
  CHECK(classify(s, "bed", "client-7", {{"meshcut.io/class", "freemium"}}) == 2);
  CHECK(classify(s, "bed", "client-17", {{"meshcut.io/class", "freemium"}}) == 0);  // '?' is one character
  CHECK(classify(s, "bed", "free-1", {}) == 0);                                     // annotation missing
  CHECK(classify(s, "bed", "free-1", {{"meshcut.io/class", "premium"}}) == 0);
  CHECK(classify(s, "bed", "other", {}) == kDefaultClass);
  CHECK(glob_match("*", ""));
  CHECK(glob_match("a*b*c", "axxbyyc"));
  CHECK_FALSE(glob_match("a*b", "axxbyyc"));
}

TEST_CASE("several TCP ports: one managed service per port, keyed by name", "[obj-services]") {
  auto s = parse_services(
      svc_doc(R"({"clusterIP":"10.96.0.1","ports":[{"name":"http","port":80},{"name":"grpc","port":9090}]})",
              slice(R"([{"addresses":["10.0.0.1"]}])",
                    R"(,"ports":[{"name":"http","port":8080},{"name":"grpc","port":9091}])")));
  REQUIRE(s.ok());
  REQUIRE(s->services.size() == 2);
  CHECK(s->services[0].key() == "default/a:http");
  CHECK(s->services[0].endpoints.at(0).port == 8080);
  CHECK(s->services[1].key() == "default/a:grpc");
  CHECK(s->services[1].endpoints.at(0).port == 9091);
  CHECK(error_of(svc_doc(R"({"clusterIP":"10.96.0.1","ports":[{"name":"http","port":80},{"port":90}]})"))
            .find("port 90 has no name") != std::string::npos);
}

TEST_CASE("left out without an error: headless, IPv6, UDP, other address types", "[obj-services]") {
  auto s = parse_services(svc_doc(R"({"clusterIP":"None","ports":[{"port":80}]})"));
  REQUIRE(s.ok());
  CHECK(s->services.empty());
  s = parse_services(svc_doc(R"({"clusterIP":"10.96.0.1","ports":[{"port":53,"protocol":"UDP"}]})"));
  REQUIRE(s.ok());
  CHECK(s->services.empty());
  s = parse_services(svc_doc(
      kSpec,
      R"({"kind":"EndpointSlice","metadata":{"labels":{"kubernetes.io/service-name":"a"}},"addressType":"IPv6","endpoints":[{"addresses":["fd00::1"]}]})"));
  REQUIRE(s.ok());
  CHECK(s->services.at(0).endpoints.empty());
}

TEST_CASE("every malformed field is named", "[obj-services]") {
  struct Case {
    std::string doc, want;
  };
  const Case cases[] = {
      {"{", "not valid JSON"},
      {"a: [1", "not valid YAML"},
      {svc_doc(R"({"ports":[{"port":80}]})"), "spec.clusterIP is missing"},
      {svc_doc(R"({"clusterIP":"10.96.0.300","ports":[{"port":80}]})"), "spec.clusterIP '10.96.0.300'"},
      {svc_doc(R"({"clusterIP":"10.96.0.1"})"), "spec.ports is missing"},
      {svc_doc(R"({"clusterIP":"10.96.0.1","ports":[{"port":"80"}]})"), "spec.ports[0].port must be an integer"},
      {svc_doc(R"({"clusterIP":"10.96.0.1","ports":[{"port":70000}]})"), "spec.ports[0].port must be an integer"},
      {svc_doc(R"({"clusterIP":"10.96.0.1","ports":[{"port":80,"targetPort":0}]})"), "spec.ports[0].targetPort"},
      {R"({"kind":"List","items":[{"kind":"Service","metadata":{},"spec":{}}]})", "metadata.name is missing"},
      {R"({"kind":"List","items":[{"kind":"Pod"}]})", "items[0]: kind 'Pod' is not one of"},
      {R"({"kind":"List","items":[{"apiVersion":"v2","kind":"Service"}]})", "apiVersion is 'v2'"},
      {svc_doc(kSpec, R"({"kind":"EndpointSlice","metadata":{"labels":{}},"addressType":"IPv4"})"),
       "kubernetes.io/service-name\"] is missing"},
      {svc_doc(kSpec, R"({"kind":"EndpointSlice","metadata":{"labels":{"kubernetes.io/service-name":"a"}}})"),
       "addressType is missing"},
      {svc_doc(kSpec, slice(R"([{"addresses":[]}])")), "endpoints[0].addresses is empty"},
      {svc_doc(kSpec, slice(R"([{"addresses":["x"]}])")), "endpoints[0].addresses[0] 'x' is not an IPv4"},
      {svc_doc(kSpec, slice(R"([{"addresses":["10.0.0.1"],"conditions":{"ready":"yes"}}])")),
       "endpoints[0].conditions.ready must be true or false"},
      {svc_doc(kSpec, slice(R"([{"addresses":["10.0.0.1"]},{"addresses":["10.0.0.2"]},{"addresses":["10.0.0.3"]},
                              {"addresses":["10.0.0.4"]},{"addresses":["10.0.0.5"]},{"addresses":["10.0.0.6"]},
                              {"addresses":["10.0.0.7"]},{"addresses":["10.0.0.8"]},{"addresses":["10.0.0.9"]}])")),
       "service default/a: has 9 ready endpoints (at most 8"},
      {svc_doc(R"({"clusterIP":"10.96.0.1","ports":[{"port":80,"targetPort":"web"}]})",
               slice(R"([{"addresses":["10.0.0.1"]}])")),
       "names its targetPort 'web'"},
      {R"({"kind":"List","items":[{"kind":"CallerClasses","spec":{"classes":[]}}]})", "apiVersion is missing"},
      {R"({"kind":"List","items":[{"apiVersion":"meshcut.io/v1alpha1","kind":"CallerClasses","spec":{"classes":[
          {"name":"a","namespaces":["x"]},{"name":"b","namespaces":["x"]},{"name":"c","namespaces":["x"]},
          {"name":"d","namespaces":["x"]}]}}]})",
       "spec.classes lists 4 classes (at most 3"},
      {R"({"kind":"List","items":[{"apiVersion":"meshcut.io/v1alpha1","kind":"CallerClasses","spec":{"classes":[
          {"name":"default","namespaces":["x"]}]}}]})",
       "spec.classes[0].name 'default' is reserved"},
      {R"({"kind":"List","items":[{"apiVersion":"meshcut.io/v1alpha1","kind":"CallerClasses","spec":{"classes":[
          {"name":"a","namespaces":["x"]},{"name":"a","pods":["y"]}]}}]})",
       "spec.classes[1].name 'a' is used by another class"},
      {R"({"kind":"List","items":[{"apiVersion":"meshcut.io/v1alpha1","kind":"CallerClasses","spec":{"classes":[
          {"name":"a"}]}}]})",
       "spec.classes[0] ('a') has no rule"},
      {R"({"kind":"List","items":[{"apiVersion":"meshcut.io/v1alpha1","kind":"CallerClasses","spec":{"classes":[
          {"name":"a","annotation":{"value":"v"}}]}}]})",
       "spec.classes[0].annotation.key is missing"},
  };
  for (const Case& c : cases) {
    INFO(c.doc);
    std::string e = error_of(c.doc);
    INFO(e);
    CHECK(e.find(c.want) != std::string::npos);
  }
  // The same ClusterIP:port twice, and the same Service twice.
  std::string two = R"({"kind":"List","items":[
    {"kind":"Service","metadata":{"name":"a"},"spec":{"clusterIP":"10.96.0.1","ports":[{"port":80}]}},
    {"kind":"Service","metadata":{"name":"b"},"spec":{"clusterIP":"10.96.0.1","ports":[{"port":80}]}}]})";
  CHECK(error_of(two).find("is also service default/a's") != std::string::npos);
  std::string dup = R"({"kind":"List","items":[
    {"kind":"Service","metadata":{"name":"a"},"spec":{"clusterIP":"10.96.0.1","ports":[{"port":80}]}},
    {"kind":"Service","metadata":{"name":"a"},"spec":{"clusterIP":"10.96.0.2","ports":[{"port":80}]}}]})";
  CHECK(error_of(dup).find("listed twice") != std::string::npos);
  // YAML: a quoted number stays a string.
  CHECK(error_of("kind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.96.0.1, ports: [{port: \"80\"}]}\n")
            .find("spec.ports[0].port must be an integer") != std::string::npos);
}

TEST_CASE("more than MC_OBJ_MAX_SERVICES services is an error naming the first one over", "[obj-services]") {
  std::string d = R"({"kind":"List","items":[)";
  for (int i = 0; i <= MC_OBJ_MAX_SERVICES; ++i)
    d += std::string(i ? "," : "") + R"({"kind":"Service","metadata":{"name":"s)" + std::to_string(i) +
         R"("},"spec":{"clusterIP":"10.96.1.)" + std::to_string(i) + R"(","ports":[{"port":80}]}})";
  d += "]}";
  CHECK(error_of(d).find("the first one over is default/s64") != std::string::npos);
}

TEST_CASE("assign_ids keeps ids and backend indices across reloads", "[obj-services]") {
  Services prev = load("services.json");
  // Next: s1 gone, s3 new and listed first, s2 kept with one endpoint gone and one new.
  auto next = parse_services(R"({"kind":"List","items":[
    {"kind":"Service","metadata":{"name":"s3","namespace":"bed"},"spec":{"clusterIP":"10.96.0.13","ports":[{"port":80}]}},
    {"kind":"Service","metadata":{"name":"s2","namespace":"bed"},"spec":{"clusterIP":"10.96.0.12","ports":[{"port":80,"targetPort":8080}]}},
    {"kind":"EndpointSlice","metadata":{"namespace":"bed","labels":{"kubernetes.io/service-name":"s2"}},"addressType":"IPv4",
     "endpoints":[{"addresses":["10.0.3.3"]},{"addresses":["10.0.2.8"]}]}]})");
  REQUIRE(next.ok());
  CHECK(next->services[0].id == 0);  // before assign_ids: listing order
  assign_ids(*next, &prev);
  const Service* s2 = next->find("bed/s2");
  const Service* s3 = next->find("bed/s3");
  REQUIRE(s2);
  REQUIRE(s3);
  CHECK(s2->id == 1);                                     // kept
  CHECK(s3->id == 0);                                     // the lowest free (s1's, now gone)
  CHECK(s2->find_endpoint("10.0.2.8:8080")->index == 1);  // kept
  CHECK(s2->find_endpoint("10.0.3.3:8080")->index == 0);  // the lowest free
  // A third reload with the same file changes nothing.
  Services again = *next;
  assign_ids(again, &*next);
  CHECK(to_json(again) == to_json(*next));
}
