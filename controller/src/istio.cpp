// SPDX-License-Identifier: Apache-2.0
#include "meshcut/control/istio.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <numeric>
#include <optional>

#include "meshcut/obj/action.h"

namespace meshcut::control {
namespace {

using nlohmann::json;

inline constexpr const char* kFilterName = "envoy.filters.http.local_ratelimit";
inline constexpr const char* kRateLimitType =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
inline constexpr uint64_t kMinFillMs = 50;          // Envoy refuses a shorter fill_interval
inline constexpr uint64_t kMaxExactFillMs = 10000;  // longer: round to whole tokens per second instead

struct Bad {
  std::string what, hint;
};

bool is_dns_label(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s)
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-'))
      return false;
  return s.front() != '-' && s.back() != '-';
}

// [a-z0-9_] only: an Envoy stat prefix.
std::string stat_name(const std::string& s) {
  std::string o;
  for (char c : s) o += std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::tolower(c)) : '_';
  return o;
}

json metadata(const std::string& name, const std::string& ns, uint64_t generation) {
  return {{"name", name},
          {"namespace", ns},
          {"labels", {{"app.kubernetes.io/managed-by", "meshcut"}}},
          {"annotations", {{"meshcut.io/generation", std::to_string(generation)}}}};
}

std::string fill_interval(uint64_t ms) {
  std::string s = std::to_string(ms / 1000);
  if (ms % 1000) {
    char b[8];
    snprintf(b, sizeof b, ".%03u", static_cast<unsigned>(ms % 1000));
    s += b;
    while (s.back() == '0') s.pop_back();
  }
  return s + "s";
}

// One Kubernetes Service (host) and its managed ports that the action names.
struct Host {
  std::string name, ns;
  std::vector<const obj::Service*> ports;  // services file order
};

class Renderer {
 public:
  Renderer(const obj::CompiledAction& a, const obj::Services& s, const IstioOptions& o) : act_(a), svcs_(s), opt_(o) {}

  IstioRender run() {
    IstioRender out;
    out.generation = act_.generation;
    std::map<uint32_t, std::map<uint32_t, const obj::Slot*>> slots;  // svc id -> class id -> slot
    for (const obj::Slot& sl : act_.slots) slots[sl.svc][sl.cls] = &sl;
    std::vector<Host> hosts;
    for (const obj::Service& s : svcs_.services) {
      auto it = slots.find(s.id);
      if (it == slots.end()) {
        out.notes.push_back(s.key() + ": not in the action, nothing rendered for it (fail open: Istio routes it " +
                            "as Kubernetes would)");
        continue;
      }
      auto h =
          std::find_if(hosts.begin(), hosts.end(), [&](const Host& x) { return x.name == s.name && x.ns == s.ns; });
      if (h == hosts.end()) h = hosts.insert(hosts.end(), Host{s.name, s.ns, {}});
      h->ports.push_back(&s);
    }
    for (const Host& h : hosts) render_host(h, slots, out);
    if (!patches_.empty()) out.objects.push_back(envoy_filter());
    out.notes.insert(out.notes.end(), notes_.begin(), notes_.end());
    return out;
  }

 private:
  std::string fqdn(const Host& h) const { return h.name + "." + h.ns + ".svc." + opt_.cluster_domain; }

  void render_host(const Host& h, const std::map<uint32_t, std::map<uint32_t, const obj::Slot*>>& slots,
                   IstioRender& out) {
    // Subsets: one per pod, deduplicated across the host's ports (the same pods serve every port).
    subsets_.clear();
    json subsets = json::array();
    for (const obj::Service* s : h.ports)
      for (const obj::Endpoint& e : s->endpoints) {
        if (e.pod.empty() || subsets_.count(e.pod)) continue;
        std::string name = is_dns_label(e.pod) ? e.pod : "backend-" + std::to_string(subsets.size());
        subsets_[e.pod] = name;
        subsets.push_back({{"name", name}, {"labels", {{opt_.pod_label, e.pod}}}});
      }
    out.objects.push_back({{"apiVersion", "networking.istio.io/v1beta1"},
                           {"kind", "DestinationRule"},
                           {"metadata", metadata("meshcut-" + h.name, h.ns, act_.generation)},
                           {"spec", {{"host", fqdn(h)}, {"subsets", subsets}}}});
    json routes = json::array();
    for (const obj::Service* s : h.ports) {
      const auto& entries = slots.at(s->id);
      auto def = entries.find(obj::kDefaultClass);
      for (const obj::CallerClass& c : svcs_.classes) {
        auto e = entries.find(c.id);
        // A class without an entry still needs its own (plain) route when the
        // default class has one: else its callers would take the default's.
        if (e != entries.end() || def != entries.end())
          routes.push_back(route(h, *s, c.name, class_matches(c, *s), e == entries.end() ? nullptr : e->second));
      }
      if (def != entries.end())
        routes.push_back(route(h, *s, obj::kDefaultClassName, json::array({{{"port", s->port}}}), def->second));
    }
    // Every other request to the host (other ports, other callers): as without meshcut.
    routes.push_back({{"name", "meshcut-fail-open"}, {"route", json::array({{{"destination", {{"host", fqdn(h)}}}}})}});
    out.objects.push_back({{"apiVersion", "networking.istio.io/v1beta1"},
                           {"kind", "VirtualService"},
                           {"metadata", metadata("meshcut-" + h.name, h.ns, act_.generation)},
                           {"spec", {{"hosts", json::array({fqdn(h)})}, {"http", routes}}}});
  }

  // Istio's matches for class C on S's port: one per (namespace, pod name), all with the annotation's label.
  json class_matches(const obj::CallerClass& c, const obj::Service& s) const {
    const std::string where = "caller class '" + c.name + "' (service file, CallerClasses)";
    std::vector<std::optional<std::string>> nss(c.namespaces.begin(), c.namespaces.end());
    std::vector<std::optional<std::string>> pods;
    for (const std::string& p : c.pods) {
      if (p.find_first_of("*?") != std::string::npos)
        throw Bad{where + " selects pods by the glob '" + p + "', which an Istio match cannot express (sourceLabels " +
                      "are exact)",
                  "list the pods by exact name (matched as the label " + opt_.pod_label +
                      "), or select the class by namespaces or by an annotation the pods also carry as a label"};
      pods.emplace_back(p);
    }
    if (nss.empty()) nss.emplace_back();
    if (pods.empty()) pods.emplace_back();
    json out = json::array();
    for (const auto& ns : nss)
      for (const auto& pod : pods) {
        json m = {{"port", s.port}};
        if (ns) m["sourceNamespace"] = *ns;
        json labels = json::object();
        if (pod) labels[opt_.pod_label] = *pod;
        if (c.annotation) {
          if (labels.contains(c.annotation->first) && labels[c.annotation->first] != c.annotation->second) continue;
          labels[c.annotation->first] = c.annotation->second;
        }
        if (!labels.empty()) m["sourceLabels"] = labels;
        out.push_back(m);
      }
    // An empty list would match every caller.
    if (out.empty())
      throw Bad{where + " can match no pod: its annotation '" + c.annotation->first +
                    "' is also the pod label with another value",
                "give the pods by namespace, or pass another --pod-label"};
    return out;
  }

  json route(const Host& h, const obj::Service& s, const std::string& cls, json matches, const obj::Slot* slot) {
    std::string port = std::to_string(s.port);
    json r = {{"name", "meshcut-" + port + "-" + cls}, {"match", std::move(matches)}};
    json dest = json::array();
    json plain = {{"host", fqdn(h)}, {"port", {{"number", s.port}}}};
    if (slot && (slot->a.flags & MC_OBJ_ACT_F_ROUTE)) {
      // The table holds the backends in the document's key order: list them in endpoint order instead.
      std::vector<std::pair<const obj::Endpoint*, double>> eps;
      uint32_t prev = 0;
      for (uint32_t i = 0; i < slot->a.n_backends; ++i) {
        const obj::Endpoint* e = s.endpoint_at(slot->a.be_index[i]);
        if (!e || e->pod.empty())
          throw Bad{"service " + s.key() + ": endpoint " + (e ? e->addr() : "#" + std::to_string(slot->a.be_index[i])) +
                        " has a weight in class '" + cls + "' but no pod name in the service file",
                    "Istio subsets select pods by label: give the EndpointSlice endpoint a targetRef.name"};
        eps.emplace_back(e, slot->a.cum[i] - prev);
        prev = slot->a.cum[i];
      }
      std::sort(eps.begin(), eps.end(), [](const auto& x, const auto& y) { return x.first->index < y.first->index; });
      std::vector<double> ppm;
      for (const auto& [e, p] : eps) ppm.push_back(p);
      auto pct = obj::largest_remainder(ppm, 100);
      for (size_t i = 0; i < eps.size(); ++i) {
        json d = plain;
        d["subset"] = subsets_.at(eps[i].first->pod);
        dest.push_back({{"destination", d}, {"weight", pct[i]}});
      }
    } else {
      dest.push_back({{"destination", plain}});
    }
    r["route"] = dest;
    if (slot && (slot->a.flags & MC_OBJ_ACT_F_ADMIT)) {
      if (slot->a.rate_milli == 0) {
        r["fault"] = {{"abort", {{"httpStatus", 429}, {"percentage", {{"value", 100}}}}}};
      } else {
        json bucket = envoy_token_bucket(slot->a.rate_milli, slot->a.burst);
        json cfg = {{"@type", kRateLimitType},
                    {"stat_prefix", stat_name("meshcut_" + s.ns + "_" + s.name + "_" + port + "_" + cls)},
                    {"token_bucket", bucket},
                    {"status", {{"code", "TooManyRequests"}}},
                    {"filter_enabled", {{"default_value", {{"numerator", 100}, {"denominator", "HUNDRED"}}}}},
                    {"filter_enforced", {{"default_value", {{"numerator", 100}, {"denominator", "HUNDRED"}}}}},
                    {"response_headers_to_add",
                     json::array({{{"append_action", "OVERWRITE_IF_EXISTS_OR_ADD"},
                                   {"header", {{"key", "x-meshcut-admission"}, {"value", "blocked"}}}}})}};
        // Istio makes one Envoy route per match, and Envoy one bucket per route's config.
        if (r["match"].size() > 1)
          notes_.push_back(s.key() + " class '" + cls + "': " + std::to_string(r["match"].size()) +
                           " matches, so Envoy keeps as many buckets at this rate (one per Envoy route)");
        patches_.push_back(
            {{"applyTo", "HTTP_ROUTE"},
             {"match",
              {{"context", "SIDECAR_OUTBOUND"},
               {"routeConfiguration",
                {{"vhost", {{"name", fqdn(h) + ":" + port}, {"route", {{"name", r["name"]}}}}}}}}},
             {"patch", {{"operation", "MERGE"}, {"value", {{"typed_per_filter_config", {{kFilterName, cfg}}}}}}}});
      }
    }
    return r;
  }

  json envoy_filter() const {
    // The filter itself carries no bucket, so it only acts on the routes patched below.
    json insert = {{"applyTo", "HTTP_FILTER"},
                   {"match",
                    {{"context", "SIDECAR_OUTBOUND"},
                     {"listener",
                      {{"filterChain",
                        {{"filter",
                          {{"name", "envoy.filters.network.http_connection_manager"},
                           {"subFilter", {{"name", "envoy.filters.http.router"}}}}}}}}}}},
                   {"patch",
                    {{"operation", "INSERT_BEFORE"},
                     {"value",
                      {{"name", kFilterName},
                       {"typed_config", {{"@type", kRateLimitType}, {"stat_prefix", "meshcut_admission"}}}}}}}};
    json patches = json::array({insert});
    for (const json& p : patches_) patches.push_back(p);
    return {{"apiVersion", "networking.istio.io/v1alpha3"},
            {"kind", "EnvoyFilter"},
            {"metadata", metadata("meshcut-admission", opt_.root_namespace, act_.generation)},
            {"spec", {{"configPatches", patches}}}};
  }

  const obj::CompiledAction& act_;
  const obj::Services& svcs_;
  const IstioOptions& opt_;
  std::map<std::string, std::string> subsets_;  // pod -> subset name, of the host being rendered
  std::vector<json> patches_;                   // the EnvoyFilter's route patches, in route order
  std::vector<std::string> notes_;              // what differs from the node, in route order
};

// Strings a YAML reader would take for another type (YAML 1.1 or 1.2): quoted.
bool needs_quotes(const std::string& s) {
  if (s.empty()) return true;
  std::string l;
  for (char c : s) l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* w :
       {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", ".inf", "-.inf", "+.inf", ".nan"})
    if (l == w) return true;
  auto digit = [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; };
  return digit(s[0]) || (s.size() > 1 && (s[0] == '-' || s[0] == '+' || s[0] == '.') && (digit(s[1]) || s[1] == '.'));
}

void emit(YAML::Emitter& e, const json& j) {
  switch (j.type()) {
    case json::value_t::object:
      e << YAML::BeginMap;
      for (auto it = j.begin(); it != j.end(); ++it) {
        e << YAML::Key;
        emit(e, json(it.key()));
        e << YAML::Value;
        emit(e, *it);
      }
      e << YAML::EndMap;
      break;
    case json::value_t::array:
      e << YAML::BeginSeq;
      for (const json& v : j) emit(e, v);
      e << YAML::EndSeq;
      break;
    case json::value_t::string: {
      const auto& s = j.get_ref<const std::string&>();
      if (needs_quotes(s)) e << YAML::DoubleQuoted;
      e << s;
      break;
    }
    case json::value_t::boolean: e << j.get<bool>(); break;
    case json::value_t::null: e << YAML::Null; break;
    default:  // numbers: JSON's own text (integers exact, floats shortest round trip)
      e << j.dump();
      break;
  }
}

}  // namespace

json envoy_token_bucket(uint64_t rate_milli, uint64_t burst) {
  // rate_milli / 1000 tokens per second = tokens_per_fill / fill_interval: the
  // smallest interval (>= 50 ms) that makes the tokens whole.
  const uint64_t g = std::gcd(rate_milli, uint64_t{1000000});
  uint64_t ms = 1000000 / g, tokens = rate_milli / g;
  if (ms < kMinFillMs) {
    uint64_t k = (kMinFillMs + ms - 1) / ms;
    ms *= k, tokens *= k;
  } else if (ms > kMaxExactFillMs) {
    if (rate_milli >= 1000) {
      ms = 1000, tokens = (rate_milli + 500) / 1000;
    } else {
      ms = std::max<uint64_t>(kMinFillMs, (1000000 + rate_milli / 2) / rate_milli), tokens = 1;
    }
  }
  // A fill beyond max_tokens would be cut to it: the bucket holds at least one fill.
  return {{"fill_interval", fill_interval(ms)}, {"max_tokens", std::max(burst, tokens)}, {"tokens_per_fill", tokens}};
}

Result<IstioRender> render_istio(const json& action, const obj::Services& services, const IstioOptions& opt) {
  auto compiled = obj::compile_action(action, services, 0);
  if (!compiled)
    return make_error(compiled.error().what, 0,
                      "fix the action to match the service file (what `meshcut-control run` or a node accepts)");
  try {
    return Renderer(*compiled, services, opt).run();
  } catch (const Bad& b) {
    return make_error(b.what, 0, b.hint);
  }
}

std::string to_yaml(const IstioRender& r) {
  std::string o = "# meshcut-control render --istio: action generation " + std::to_string(r.generation) + "\n";
  o += "# Envoy's local rate limit counts requests per caller sidecar (meshcut: connects per node).\n";
  o += "# The http routes act only on ports Istio treats as HTTP (named http[-*], appProtocol http, or detected).\n";
  o += "# These objects do not expire as the action does: delete them to fail open.\n";
  for (const std::string& n : r.notes) o += "# note: " + n + "\n";
  for (const json& obj : r.objects) {
    YAML::Emitter e;
    e.SetIndent(2);
    emit(e, obj);
    o += "---\n";
    o += e.c_str();
    o += "\n";
  }
  return o;
}

json to_json(const IstioRender& r) {
  json a = json::array();
  for (const json& o : r.objects) a.push_back(o);
  return a;
}

}  // namespace meshcut::control
