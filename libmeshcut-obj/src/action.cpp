// SPDX-License-Identifier: Apache-2.0
#include "meshcut/obj/action.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

namespace meshcut::obj {
namespace {

using nlohmann::json;

using Bad = DocError;
[[noreturn]] void bad(const std::string& what) { doc_error(what); }
std::string num(double v) { return format_number(v); }

double finite_number(const json& v, const std::string& where) {
  if (!v.is_number()) bad(where + " must be a number, got " + type_name(v));
  double d = v.get<double>();
  if (!std::isfinite(d)) bad(where + " must be finite");
  return d;
}

mc_obj_action compile_class(const json& c, const Service& s, const std::string& where) {
  if (!c.is_object()) bad(where + " must be an object, got " + type_name(c));
  only_keys(c, {"weights", "rate", "burst"}, where);
  mc_obj_action a{};
  auto w = c.find("weights");
  if (w != c.end() && !w->is_null()) {
    if (!w->is_object()) bad(where + ".weights must be an object {endpoint: weight}, got " + type_name(*w));
    if (w->empty()) bad(where + ".weights is empty (omit it for no routing)");
    std::vector<const Endpoint*> eps;
    std::vector<double> ws;
    double sum = 0;
    for (auto it = w->begin(); it != w->end(); ++it) {
      std::string p = where + ".weights[\"" + it.key() + "\"]";
      const Endpoint* e = s.find_endpoint(it.key());
      if (!e) bad(p + ": no endpoint '" + it.key() + "' in service " + s.key() + " (give ip:port or a pod name)");
      if (std::find(eps.begin(), eps.end(), e) != eps.end())
        bad(p + ": endpoint " + e->addr() + " is given twice (by ip:port and by pod name)");
      double v = finite_number(*it, p);
      if (v < 0) bad(p + " is negative (" + num(v) + ")");
      eps.push_back(e);
      ws.push_back(v);
      sum += v;
    }
    if (std::fabs(sum - 1.0) > kWeightSumTolerance)
      bad(where + ".weights sum to " + num(sum) + ", not 1 (within " + num(kWeightSumTolerance) + ")");
    auto ppm = weights_to_ppm(ws);
    uint32_t cum = 0;
    for (size_t i = 0; i < eps.size(); ++i) {
      if (ppm[i] == 0) continue;
      cum += ppm[i];
      a.be[a.n_backends] = eps[i]->key();
      a.be_index[a.n_backends] = eps[i]->index;
      a.cum[a.n_backends] = cum;
      ++a.n_backends;
    }
    a.flags |= MC_OBJ_ACT_F_ROUTE;
  }
  auto r = c.find("rate");
  auto b = c.find("burst");
  bool has_rate = r != c.end() && !r->is_null();
  if (has_rate) {
    double rate = finite_number(*r, where + ".rate");
    if (rate < 0) bad(where + ".rate is negative (" + num(rate) + "); 0 blocks every connect");
    if (rate > kMaxRate) bad(where + ".rate " + num(rate) + " is over " + num(kMaxRate));
    a.rate_milli = static_cast<uint64_t>(std::llround(rate * 1000.0));
    // Rate 0 blocks every connect: no burst either (unless one is given).
    a.burst = rate == 0 ? 0 : std::max<uint64_t>(1, static_cast<uint64_t>(std::llround(rate * 0.1)));
    if (b != c.end() && !b->is_null()) {
      if (!b->is_number_integer()) bad(where + ".burst must be an integer >= 1, got " + b->dump());
      int64_t v = b->get<int64_t>();
      if (v < 1 || static_cast<uint64_t>(v) > kMaxBurst)
        bad(where + ".burst must be an integer 1.." + std::to_string(kMaxBurst) + ", got " + std::to_string(v));
      a.burst = static_cast<uint64_t>(v);
    }
    a.flags |= MC_OBJ_ACT_F_ADMIT;
  } else if (b != c.end() && !b->is_null()) {
    bad(where + ".burst is given without rate");
  }
  return a;
}

CompiledAction compile(const json& doc, const Services& services, uint64_t current) {
  if (!doc.is_object()) bad("the action must be an object, got " + type_name(doc));
  only_keys(doc, {"generation", "ttl_ms", "services"}, "action");
  CompiledAction out;
  auto g = doc.find("generation");
  if (g == doc.end() || g->is_null()) bad("action.generation is missing");
  // A built document holds a signed integer, a parsed one an unsigned: both count.
  if (!g->is_number_integer() || g->get<int64_t>() < 1)
    bad("action.generation must be an integer >= 1, got " + g->dump());
  out.generation = g->get<uint64_t>();
  if (out.generation <= current)
    bad("action.generation " + std::to_string(out.generation) + " is not newer than the one in force (" +
        std::to_string(current) + ")");
  auto t = doc.find("ttl_ms");
  if (t != doc.end() && !t->is_null()) {
    if (!t->is_number_integer() || t->get<int64_t>() < static_cast<int64_t>(kMinTtlMs) ||
        t->get<int64_t>() > static_cast<int64_t>(kMaxTtlMs))
      bad("action.ttl_ms must be an integer " + std::to_string(kMinTtlMs) + ".." + std::to_string(kMaxTtlMs) +
          ", got " + t->dump());
    out.ttl_ms = t->get<uint64_t>();
  }
  auto sv = doc.find("services");
  if (sv == doc.end() || sv->is_null()) bad("action.services is missing (give {} for no slots)");
  if (!sv->is_object()) bad("action.services must be an object {service: {classes}}, got " + type_name(*sv));
  for (auto it = sv->begin(); it != sv->end(); ++it) {
    std::string where = "action.services[\"" + it.key() + "\"]";
    const Service* s = services.find(it.key());
    if (!s) bad(where + ": no managed service '" + it.key() + "' (keys are ns/name, or ns/name:port-name)");
    if (!it->is_object()) bad(where + " must be an object {classes}, got " + type_name(*it));
    only_keys(*it, {"classes"}, where);
    auto cl = it->find("classes");
    if (cl == it->end() || !cl->is_object()) bad(where + ".classes must be an object {class: {weights, rate, burst}}");
    for (auto ci = cl->begin(); ci != cl->end(); ++ci) {
      std::string cw = where + ".classes[\"" + ci.key() + "\"]";
      auto id = services.class_id(ci.key());
      if (!id) bad(cw + ": no caller class '" + ci.key() + "' (default, or one of the service file's CallerClasses)");
      Slot slot{s->id, *id, compile_class(*ci, *s, cw)};
      slot.a.generation = out.generation;
      out.slots.push_back(slot);
    }
  }
  std::sort(out.slots.begin(), out.slots.end(),
            [](const Slot& a, const Slot& b) { return std::pair(a.svc, a.cls) < std::pair(b.svc, b.cls); });
  return out;
}

}  // namespace

std::vector<uint32_t> largest_remainder(const std::vector<double>& weights, uint32_t total_parts) {
  const double scale = total_parts;
  const auto target = static_cast<int64_t>(total_parts);
  double sum = 0;
  for (double w : weights) sum += w > 0 ? w : 0;
  std::vector<uint32_t> parts(weights.size(), 0);
  std::vector<double> rem(weights.size(), -1);
  if (sum <= 0) return parts;
  int64_t total = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!(weights[i] > 0)) continue;
    double q = weights[i] / sum * scale;
    double f = std::floor(q);
    parts[i] = std::max<uint32_t>(1, static_cast<uint32_t>(f));  // a positive weight is never dropped
    rem[i] = q - f;
    total += parts[i];
  }
  // Order of who gets (or gives back) a part: largest remainder first, then index.
  std::vector<size_t> order(weights.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return rem[a] > rem[b]; });
  while (total < target)
    for (size_t i : order)
      if (rem[i] >= 0 && total < target) ++parts[i], ++total;
  while (total > target)
    for (auto it = order.rbegin(); it != order.rend(); ++it)
      if (parts[*it] > 1 && total > target) --parts[*it], --total;
  return parts;
}

std::vector<uint32_t> weights_to_ppm(const std::vector<double>& weights) {
  return largest_remainder(weights, MC_OBJ_WEIGHT_SCALE);
}

Result<CompiledAction> compile_action(const json& doc, const Services& services, uint64_t current_generation) {
  try {
    return compile(doc, services, current_generation);
  } catch (const Bad& b) {
    return make_error(b.msg, 0);
  } catch (const json::exception& e) {
    return make_error("action: " + std::string(e.what()), 0);
  }
}

Result<CompiledAction> parse_action(std::string_view text, const Services& services, uint64_t current_generation,
                                    Format format) {
  auto docs = parse_documents(text, format);
  if (!docs) return make_error("action: " + docs.error().what, 0);
  if (docs->size() != 1) return make_error("action: expected one document, got " + std::to_string(docs->size()), 0);
  return compile_action(docs->front(), services, current_generation);
}

json to_json(const CompiledAction& a, const Services& services) {
  json svcs = json::object();
  for (const Slot& s : a.slots) {
    const Service* svc = services.find_id(s.svc);
    std::string key = svc ? svc->key() : "#" + std::to_string(s.svc);
    json c = {{"svc", s.svc},
              {"cls", s.cls},
              {"route", (s.a.flags & MC_OBJ_ACT_F_ROUTE) != 0},
              {"admit", (s.a.flags & MC_OBJ_ACT_F_ADMIT) != 0}};
    if (s.a.flags & MC_OBJ_ACT_F_ROUTE) {
      json be = json::array();
      uint32_t prev = 0;
      for (uint32_t i = 0; i < s.a.n_backends && i < MC_OBJ_MAX_BACKENDS; ++i) {
        in_addr ia{s.a.be[i].ip};
        char ip[INET_ADDRSTRLEN] = "";
        inet_ntop(AF_INET, &ia, ip, sizeof ip);
        be.push_back({{"addr", std::string(ip) + ":" + std::to_string(ntohs(s.a.be[i].port))},
                      {"index", s.a.be_index[i]},
                      {"ppm", s.a.cum[i] - prev},
                      {"cum", s.a.cum[i]}});
        prev = s.a.cum[i];
      }
      c["backends"] = be;
    }
    if (s.a.flags & MC_OBJ_ACT_F_ADMIT) {
      c["rate"] = static_cast<double>(s.a.rate_milli) / 1000.0;
      c["rate_milli"] = s.a.rate_milli;
      c["burst"] = s.a.burst;
    }
    svcs[key]["classes"][services.class_name(s.cls)] = c;
  }
  return {{"generation", a.generation}, {"ttl_ms", a.ttl_ms}, {"services", svcs}};
}

}  // namespace meshcut::obj
