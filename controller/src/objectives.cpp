// SPDX-License-Identifier: Apache-2.0
#include "meshcut/control/objectives.h"

#include <cmath>
#include <set>

namespace meshcut::control {
namespace {

using nlohmann::json;

using Bad = obj::DocError;
[[noreturn]] void bad(const std::string& what) { obj::doc_error(what); }
std::string num(double v) { return obj::format_number(v); }
using obj::only_keys;

const json& object_at(const json& o, const char* key, const std::string& where) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) bad(where + "." + key + " is missing");
  if (!it->is_object()) bad(where + "." + key + " must be an object, got " + obj::type_name(*it));
  return *it;
}

double number(const json& v, const std::string& where) {
  if (!v.is_number()) bad(where + " must be a number, got " + obj::type_name(v));
  double d = v.get<double>();
  if (!std::isfinite(d)) bad(where + " must be finite");
  return d;
}

// A grid step: 1/step levels must be a whole number, or the grid would not end at 1.
double step(const json& g, const char* key, const std::string& where, double dflt) {
  auto it = g.find(key);
  if (it == g.end() || it->is_null()) return dflt;
  std::string p = where + "." + key;
  double s = number(*it, p);
  if (!(s > 0 && s <= 1)) bad(p + " must be in (0, 1], got " + num(s));
  double levels = 1.0 / s;
  if (std::fabs(levels - std::round(levels)) > 1e-6)
    bad(p + " must divide 1 into whole steps (0.5, 0.25, 0.2, 0.1, ...), got " + num(s));
  if (std::round(levels) > 100) bad(p + " is finer than 0.01 (the search would be too large), got " + num(s));
  return s;
}

ServiceObjective service(const json& s, const std::string& where) {
  if (!s.is_object()) bad(where + " must be an object, got " + obj::type_name(s));
  only_keys(s, {"service", "latency", "throughputRps", "classWeights"}, where);
  ServiceObjective o;
  auto name = s.find("service");
  if (name == s.end() || name->is_null()) bad(where + ".service is missing (give the service file's key, ns/name)");
  if (!name->is_string()) bad(where + ".service must be a string, got " + obj::type_name(*name));
  o.service = name->get<std::string>();
  size_t slash = o.service.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == o.service.size())
    bad(where + ".service must be ns/name, got \"" + o.service + "\"");

  const json& lat = object_at(s, "latency", where);
  std::string lw = where + ".latency";
  only_keys(lat, {"percentile", "boundMs"}, lw);
  auto pc = lat.find("percentile");
  if (pc != lat.end() && !pc->is_null()) {
    o.latency.percentile = number(*pc, lw + ".percentile");
    bool known = false;
    for (double k : kPercentiles) known = known || o.latency.percentile == k;
    if (!known)
      bad(lw + ".percentile must be one of 50, 90, 95, 99 (what a window measures), got " + num(o.latency.percentile));
  }
  auto b = lat.find("boundMs");
  if (b == lat.end() || b->is_null()) bad(lw + ".boundMs is missing");
  o.latency.bound_ms = number(*b, lw + ".boundMs");
  if (!(o.latency.bound_ms > 0)) bad(lw + ".boundMs must be > 0, got " + num(o.latency.bound_ms));

  auto t = s.find("throughputRps");
  if (t != s.end() && !t->is_null()) {
    double v = number(*t, where + ".throughputRps");
    if (v < 0) bad(where + ".throughputRps must be >= 0, got " + num(v));
    o.throughput_rps = v;
  }
  auto cw = s.find("classWeights");
  if (cw != s.end() && !cw->is_null()) {
    if (!cw->is_object()) bad(where + ".classWeights must be an object {class: weight}, got " + obj::type_name(*cw));
    for (auto it = cw->begin(); it != cw->end(); ++it) {
      std::string p = where + ".classWeights." + it.key();
      if (it.key().empty()) bad(where + ".classWeights has an empty class name");
      double v = number(*it, p);
      if (v < 0) bad(p + " must be >= 0, got " + num(v));
      o.class_weights[it.key()] = v;
    }
  }
  return o;
}

Objectives parse(const json& doc) {
  if (!doc.is_object()) bad("the objectives document must be an object, got " + obj::type_name(doc));
  only_keys(doc, {"apiVersion", "kind", "metadata", "spec"}, "objectives");
  auto av = doc.find("apiVersion");
  if (av == doc.end() || !av->is_string() || av->get<std::string>() != kObjectivesApiVersion)
    bad(std::string("apiVersion must be ") + kObjectivesApiVersion + ", got " +
        (av == doc.end() ? std::string("nothing") : av->dump()));
  auto kind = doc.find("kind");
  if (kind == doc.end() || !kind->is_string() || kind->get<std::string>() != kObjectivesKind)
    bad(std::string("kind must be ") + kObjectivesKind + ", got " +
        (kind == doc.end() ? std::string("nothing") : kind->dump()));
  const json& spec = object_at(doc, "spec", "objectives");
  only_keys(spec, {"windowSeconds", "services", "grid"}, "spec");
  Objectives o;
  auto ws = spec.find("windowSeconds");
  if (ws != spec.end() && !ws->is_null()) {
    o.window_seconds = number(*ws, "spec.windowSeconds");
    if (!(o.window_seconds > 0 && o.window_seconds <= 3600))
      bad("spec.windowSeconds must be in (0, 3600], got " + num(o.window_seconds));
  }
  auto svcs = spec.find("services");
  if (svcs == spec.end() || svcs->is_null()) bad("spec.services is missing");
  if (!svcs->is_array()) bad("spec.services must be a list, got " + obj::type_name(*svcs));
  if (svcs->empty()) bad("spec.services is empty (give at least one service objective)");
  std::set<std::string> seen;
  for (size_t i = 0; i < svcs->size(); ++i) {
    std::string where = "spec.services[" + std::to_string(i) + "]";
    ServiceObjective s = service((*svcs)[i], where);
    if (!seen.insert(s.service).second) bad(where + ".service " + s.service + " is given twice");
    o.services.push_back(std::move(s));
  }
  auto g = spec.find("grid");
  if (g != spec.end() && !g->is_null()) {
    if (!g->is_object()) bad("spec.grid must be an object, got " + obj::type_name(*g));
    only_keys(*g, {"routingStep", "admissionStep"}, "spec.grid");
    o.grid.routing_step = step(*g, "routingStep", "spec.grid", 0.2);
    o.grid.admission_step = step(*g, "admissionStep", "spec.grid", 0.2);
  }
  return o;
}

}  // namespace

double ServiceObjective::class_weight(const std::string& cls) const {
  if (class_weights.empty()) return 1.0;
  auto it = class_weights.find(cls);
  return it == class_weights.end() ? 0.0 : it->second;
}

int Grid::routing_levels() const { return static_cast<int>(std::lround(1.0 / routing_step)); }
int Grid::admission_levels() const { return static_cast<int>(std::lround(1.0 / admission_step)); }

const ServiceObjective* Objectives::find(std::string_view service) const {
  for (const ServiceObjective& s : services)
    if (s.service == service) return &s;
  return nullptr;
}

Result<Objectives> objectives_from_json(const json& doc) {
  try {
    return parse(doc);
  } catch (const Bad& b) {
    return make_error("invalid objectives: " + b.msg, 0, "fix the field named and apply the objectives again");
  }
}

Result<Objectives> parse_objectives(std::string_view text, obj::Format format) {
  auto docs = obj::parse_documents(text, format);
  if (!docs) return docs.error();
  if (docs->size() != 1)
    return make_error("invalid objectives: expected exactly one document, got " + std::to_string(docs->size()), 0,
                      "put one Objectives document in the file");
  return objectives_from_json(docs->front());
}

Result<Objectives> load_objectives(const std::string& path) {
  auto text = obj::read_file(path);
  if (!text) return text.error();
  size_t dot = path.rfind('.');
  auto r = parse_objectives(*text, obj::format_from_hint(dot == std::string::npos ? "" : path.substr(dot + 1)));
  if (!r) {
    Error e = r.error();
    e.what = path + ": " + e.what;
    return e;
  }
  return r;
}

json to_json(const Objectives& o) {
  json svcs = json::array();
  for (const ServiceObjective& s : o.services) {
    json j = {{"service", s.service},
              {"latency", {{"percentile", s.latency.percentile}, {"boundMs", s.latency.bound_ms}}}};
    if (s.throughput_rps) j["throughputRps"] = *s.throughput_rps;
    if (!s.class_weights.empty()) j["classWeights"] = s.class_weights;
    svcs.push_back(j);
  }
  return {{"apiVersion", kObjectivesApiVersion},
          {"kind", kObjectivesKind},
          {"spec",
           {{"windowSeconds", o.window_seconds},
            {"services", svcs},
            {"grid", {{"routingStep", o.grid.routing_step}, {"admissionStep", o.grid.admission_step}}}}}};
}

}  // namespace meshcut::control
