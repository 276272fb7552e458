// SPDX-License-Identifier: Apache-2.0
// The controller's action as the Istio resources a mesh would enforce it with
// (`meshcut-control render --istio`): a pure function of the action document,
// the service file and a few names, then a YAML (or JSON) writer. Nothing is
// applied; the output was not validated against istioctl.
//
// Per Kubernetes Service with a managed port in the action (services file order):
//  - DestinationRule meshcut-<svc> in the service's namespace: one subset per
//    ready endpoint, labels {<pod label>: <the endpoint's pod>} (default
//    statefulset.kubernetes.io/pod-name: one pod per subset). Subset names are
//    the pod names (backend-<index> where a pod name is not a DNS label).
//  - VirtualService meshcut-<svc> for the host <svc>.<ns>.svc.<domain>: per
//    managed port and caller class an http route "meshcut-<port>-<class>" in
//    the classes' listing order (Istio takes the first route that matches, as
//    meshcut takes the first class that matches), the default class last, then
//    a catch-all route "meshcut-fail-open" to the host as Kubernetes balances it.
//    A class matches on port plus sourceNamespace (its namespaces) and
//    sourceLabels (its exact pod names under the pod label; its annotation as
//    a label of the same key: Istio matches labels, not annotations). A pod
//    glob ('*', '?') has no Istio match: refused. Weights become integer
//    percentages summing to exactly 100 by largest remainder (a positive
//    weight keeps at least 1). Rate 0: a fault abort, HTTP 429, 100 %.
//  - EnvoyFilter meshcut-admission in the root namespace (once, if any class
//    has a rate > 0): the local_ratelimit HTTP filter in every sidecar's
//    outbound chain (no bucket of its own: it acts only where a route carries
//    one) and per (port, class) route a token bucket: max_tokens = burst, and
//    tokens_per_fill / fill_interval = rate (exact when a fill interval of
//    50 ms .. 10 s gives whole tokens, else the nearest whole token per second).
//
// What differs from the node: meshcut's bucket is one per (service, class) per
// node and counts connects; Envoy's is one per caller sidecar and counts
// requests; a class with several matches (namespaces x pods) becomes as many
// Envoy routes, each with its own bucket (noted). The objects do not expire
// (the action's ttl_ms is not rendered): delete them to fail open. A managed
// service not in the action gets nothing (fail open), with a note.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "meshcut/error.h"
#include "meshcut/obj/services.h"

namespace meshcut::control {

struct IstioOptions {
  std::string root_namespace = "istio-system";                   // where the EnvoyFilter goes
  std::string pod_label = "statefulset.kubernetes.io/pod-name";  // selects one pod per subset
  std::string cluster_domain = "cluster.local";
};

struct IstioRender {
  uint64_t generation = 0;
  std::vector<nlohmann::json> objects;  // DestinationRule, VirtualService per service; the EnvoyFilter last
  std::vector<std::string> notes;       // what was left out (fail open), then what differs from the node
};

// ACTION (the node's action document, action.h) checked against SERVICES as a
// node would (an unknown service, class or endpoint, weights not summing to 1
// are errors naming the field), then rendered. Any error renders nothing.
Result<IstioRender> render_istio(const nlohmann::json& action, const obj::Services& services,
                                 const IstioOptions& opt = {});

// The token bucket of RATE_MILLI (milli-connects per second) and BURST:
// Envoy's token_bucket object {fill_interval, max_tokens, tokens_per_fill}.
nlohmann::json envoy_token_bucket(uint64_t rate_milli, uint64_t burst);

// Multi-document YAML: a header comment (generation, what differs, the
// notes), then one document per object. Keys sorted, so the bytes depend only
// on the input.
std::string to_yaml(const IstioRender& r);
// The objects as one JSON array.
nlohmann::json to_json(const IstioRender& r);

}  // namespace meshcut::control
