// SPDX-License-Identifier: Apache-2.0
// The service file meshcutd watches: the managed services (ClusterIP:port and
// endpoints) and the caller classes, in the shape of Kubernetes objects so that
// the bed and a sync from an API server write the same file.
//
//   apiVersion: v1            # or a YAML stream of the items, or a JSON array
//   kind: List
//   items:
//   - {apiVersion: v1, kind: Service, metadata: {name: s1, namespace: default},
//      spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: 8080}]}}
//   - {apiVersion: discovery.k8s.io/v1, kind: EndpointSlice,
//      metadata: {name: s1-x, namespace: default, labels: {kubernetes.io/service-name: s1}},
//      addressType: IPv4, ports: [{name: http, port: 8080}],
//      endpoints: [{addresses: [10.0.1.5], nodeName: n1, targetRef: {name: s1-a}, conditions: {ready: true}}]}
//   - {apiVersion: meshcut.io/v1alpha1, kind: CallerClasses,
//      spec: {classes: [{name: premium, namespaces: [gold]}, {name: freemium, pods: ["free-*"]}]}}
//
// What is left out without an error (not managed, not wrong): Service ports
// that are not TCP, headless Services (clusterIP None) and IPv6 ones,
// EndpointSlices whose addressType is not IPv4 or whose Service is not in the
// file, endpoints whose conditions.ready is false. Anything else malformed is
// an error naming the item and the field, and nothing is returned.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "meshcut/error.h"
#include "meshcut/obj/abi.h"
#include "meshcut/obj/document.h"

namespace meshcut::obj {

// Class 0: callers no CallerClasses rule matches.
inline constexpr uint32_t kDefaultClass = 0;
inline constexpr const char* kDefaultClassName = "default";
inline constexpr size_t kMaxNamedClasses = MC_OBJ_MAX_CLASSES - 1;

struct Endpoint {
  uint32_t index = 0;  // backend index within the service, 0..MC_OBJ_MAX_BACKENDS-1 (stable: assign_ids)
  std::string ip;      // dotted quad
  uint32_t ip_be = 0;  // the same, network order
  uint16_t port = 0;   // the target port, host order
  std::string node;    // nodeName, "" if the slice did not say
  std::string pod;     // targetRef.name, "" if the slice did not say

  std::string addr() const;  // "ip:port"
  uint16_t port_be() const;  // network order
  mc_obj_addr key() const;   // mc_obj_eps key
};

// One managed service: a Service's TCP port (a Service with several ports is
// several managed services).
struct Service {
  uint32_t id = 0;  // 0..MC_OBJ_MAX_SERVICES-1 (stable: assign_ids)
  std::string name;
  std::string ns;
  std::string port_name;  // the port's name when the Service has several ports, else ""
  std::string cluster_ip;
  uint32_t cluster_ip_be = 0;  // network order
  uint16_t port = 0;           // host order
  std::vector<Endpoint> endpoints;

  std::string key() const;   // "ns/name", or "ns/name:port-name" when the Service has several ports
  uint16_t port_be() const;  // network order
  mc_obj_addr vip() const;   // mc_obj_vips key
  // The endpoint named by "ip:port" or by its pod name, else nullptr.
  const Endpoint* find_endpoint(std::string_view addr_or_pod) const;
  const Endpoint* endpoint_at(uint32_t index) const;  // by backend index
};

// A rule of kind CallerClasses. Every criterion given must match (namespaces:
// the caller's namespace is one of them; pods: its name matches one of the
// globs; annotation: it carries key with that value); the first class that
// matches wins, in listing order.
struct CallerClass {
  uint32_t id = 0;  // 1..kMaxNamedClasses, in listing order
  std::string name;
  std::vector<std::string> namespaces;
  std::vector<std::string> pods;                                  // globs: '*' any run, '?' one character
  std::optional<std::pair<std::string, std::string>> annotation;  // key, value
};

struct Services {
  std::vector<Service> services;
  std::vector<CallerClass> classes;

  const Service* find(std::string_view key) const;
  const Service* find_id(uint32_t id) const;
  // "default" for class 0, the class's name, or "class<N>" for an id no class has.
  std::string class_name(uint32_t id) const;
  std::optional<uint32_t> class_id(std::string_view name) const;  // "default" is 0
};

// Parses a service file (see the top of this file). Ids are given in listing
// order (services) and endpoint order (backend indices), as assign_ids(s,
// nullptr) would; call assign_ids with the services in force to keep theirs.
Result<Services> parse_services(std::string_view text, Format format = Format::kAuto);
// The file at PATH; the format from its extension (.json, .yaml, .yml), else detected.
Result<Services> load_services(const std::string& path);

// Stable ids across reloads: a service whose key is in PREV keeps its id, an
// endpoint whose ip:port stays in the same service keeps its backend index;
// new ones take the lowest free id (index). PREV nullptr: 0, 1, ... in order.
// NEXT's services stay in listing order.
void assign_ids(Services& next, const Services* prev);

// The class of a caller pod: the first CallerClass whose criteria all match, else kDefaultClass.
uint32_t classify(const Services& s, std::string_view ns, std::string_view pod,
                  const std::map<std::string, std::string>& annotations);

// '*' matches any run of characters (also none), '?' exactly one.
bool glob_match(std::string_view pattern, std::string_view s);

// "10.0.0.1" -> network-order address, or nullopt.
std::optional<uint32_t> parse_ipv4(std::string_view s);

nlohmann::json to_json(const Services& s);

}  // namespace meshcut::obj
