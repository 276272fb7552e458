// SPDX-License-Identifier: Apache-2.0
#include "meshcut/control/probe.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace meshcut::control {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string fmt(double v) {
  std::ostringstream o;
  o.precision(2);
  o << std::fixed << v;
  return o.str();
}

// How far, in utilisation, LOAD is from every load already observed on the backend (1: nothing observed).
double novelty(const Model& model, const BackendModel& m, const std::string& service, const std::string& backend,
               double load) {
  auto it = model.observations().find({service, backend});
  if (it == model.observations().end() || it->second.empty()) return 1;
  double u = m.utilization(load), best = kInf;
  for (const Observation& o : it->second) best = std::min(best, std::fabs(u - m.utilization(o.load_rps)));
  return best;
}

}  // namespace

const std::map<std::string, ProbeKind>& probe_kinds() {
  static const std::map<std::string, ProbeKind> kinds = {{"random", ProbeKind::kRandom},
                                                         {"boundary", ProbeKind::kBoundary}};
  return kinds;
}

Probe Prober::next(const obj::Services& services, const Objectives& objectives, const Load& load, const Model& model,
                   uint64_t generation) {
  Probe out;
  const int R = objectives.grid.routing_levels(), A = objectives.grid.admission_levels();
  for (const obj::Service& s : services.services) {
    if (s.endpoints.empty()) continue;
    const size_t nb = s.endpoints.size();
    ServiceChoice c;
    c.service = s.key();
    for (const obj::Endpoint& e : s.endpoints) c.backends.push_back(e.addr());
    if (auto it = load.find(s.key()); it != load.end()) c.offered = it->second;
    c.admit[obj::kDefaultClassName] = 1;
    for (const obj::CallerClass& cc : services.classes) c.admit[cc.name] = 1;
    double all = 0;
    for (const auto& [cls, rps] : c.offered) c.admit[cls] = 1, all += rps;
    const ServiceObjective* so = objectives.find(s.key());
    std::vector<const BackendModel*> models;
    bool modelled = so != nullptr;
    for (const std::string& b : c.backends) {
      models.push_back(model.find(s.key(), b));
      modelled = modelled && models.back() != nullptr;
    }
    const auto comps = compositions(R, static_cast<int>(nb));
    auto set_weights = [&](const std::vector<int>& comp) {
      c.weights.assign(nb, 0);
      for (size_t b = 0; b < nb; ++b) c.weights[b] = static_cast<double>(comp[b]) / R;
    };
    if (opt_.kind == ProbeKind::kBoundary && modelled && all > 0) {
      struct Cand {
        size_t route = 0;
        int adm = 0;
        double ratio = kInf, novelty = -1, util = 0;
      };
      Cand in_band, closest_low, lowest;
      bool have_band = false, have_low = false, have_lowest = false;
      for (size_t r = 0; r < comps.size(); ++r)
        for (int a = A; a >= 1; --a) {
          const double f = static_cast<double>(a) / A;
          Cand k{r, a, 0, 0};
          for (size_t b = 0; b < nb; ++b) {
            if (comps[r][b] == 0) continue;
            double l = static_cast<double>(comps[r][b]) / R * f * all;
            k.ratio = std::max(k.ratio, models[b]->predict_ms(l, so->latency.percentile) / so->latency.bound_ms);
            k.novelty = std::max(k.novelty, novelty(model, *models[b], s.key(), c.backends[b], l));
            k.util = std::max(k.util, models[b]->utilization(l));
          }
          if (k.ratio >= opt_.band_lo && k.ratio <= opt_.band_hi) {
            // Furthest from what was seen; a tie (within 1 % utilisation) goes to the grid draw below.
            bool better = !have_band || k.novelty > in_band.novelty + 0.01 ||
                          (std::fabs(k.novelty - in_band.novelty) <= 0.01 && rng_() % 2 == 0);
            if (better) in_band = k, have_band = true;
          } else if (k.ratio < opt_.band_lo) {
            if (!have_low || k.ratio > closest_low.ratio) closest_low = k, have_low = true;
          }
          // Over the band everywhere: the lowest prediction; where every one is unstable, the least utilised.
          if (!have_lowest || k.ratio < lowest.ratio || (k.ratio == lowest.ratio && k.util < lowest.util))
            lowest = k, have_lowest = true;
        }
      const Cand& pick = have_band ? in_band : have_low ? closest_low : lowest;
      set_weights(comps[pick.route]);
      const double f = static_cast<double>(pick.adm) / A;
      for (const auto& [cls, rps] : c.offered)
        if (rps > 0) c.admit[cls] = f;
      c.predicted_ms = pick.ratio * so->latency.bound_ms;
      c.bound_ms = so->latency.bound_ms;
      out.why += (out.why.empty() ? "" : "; ") + s.key() +
                 (have_band  ? ": near the bound"
                  : have_low ? ": below the band (load too low)"
                             : ": over the band") +
                 ", predicted/bound " + fmt(pick.ratio) + ", admit " + fmt(f) + ", new by " + fmt(pick.novelty);
    } else {
      set_weights(comps[rng_() % comps.size()]);
      out.why += (out.why.empty() ? "" : "; ") + s.key() + ": random routing";
    }
    out.plan.push_back(std::move(c));
  }
  PolicyOptions po;
  po.ttl_ms = opt_.ttl_ms;
  out.action = action_document(out.plan, generation, po);
  return out;
}

}  // namespace meshcut::control
