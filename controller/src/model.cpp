// SPDX-License-Identifier: Apache-2.0
#include "meshcut/control/model.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace meshcut::control {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kQ[4] = {0.50, 0.90, 0.95, 0.99};

double erlang_c(int c, double a) {  // a = lambda / mu < c
  double term = 1, sum = 1;         // a^k / k!, k = 0
  for (int k = 1; k < c; ++k) {
    term *= a / k;
    sum += term;
  }
  double top = term * a / c * (c / (c - a));  // a^c / c! * c / (c - a)
  return top / (sum + top);
}

double mean_sojourn_s(const QueueParams& p, double lambda) {
  if (!(p.mu > 0)) return kInf;
  double a = lambda / p.mu;
  if (a >= p.servers) return kInf;
  double wq = lambda > 0 ? erlang_c(p.servers, a) / (p.servers * p.mu - lambda) * (1 + p.scv) / 2 : 0;
  return 1 / p.mu + wq;
}

double pick(const Observation& o, size_t q) {
  switch (q) {
    case 0: return o.p50_ms;
    case 1: return o.p90_ms;
    case 2: return o.p95_ms;
    default: return o.p99_ms;
  }
}

size_t bucket_of(double rho) {
  if (!(rho > 0)) return 0;
  return std::min<size_t>(kResidualBuckets - 1, static_cast<size_t>(rho * kResidualBuckets));
}

// Weighted squared error of log mean sojourn; the fit's objective.
struct Fitter {
  const std::vector<Observation>& obs;
  int servers;
  double base;  // mu must exceed the highest load per server

  QueueParams params(double a, double b) const {
    return {base + std::exp(a), std::exp(std::clamp(b, -9.0, 3.0)), servers};
  }
  // Residuals r_i = sqrt(n_i) (ln T_i - ln m_i); +inf objective if a window is predicted unstable.
  bool residuals(double a, double b, std::vector<double>& r) const {
    QueueParams p = params(a, b);
    r.resize(obs.size());
    for (size_t i = 0; i < obs.size(); ++i) {
      double t = mean_sojourn_s(p, obs[i].load_rps);
      if (!std::isfinite(t)) return false;
      r[i] = std::sqrt(static_cast<double>(obs[i].count)) * (obs[i].mean_ms / (t * 1e3) - 1);
    }
    return true;
  }
  double sse(double a, double b) const {
    std::vector<double> r;
    if (!residuals(a, b, r)) return kInf;
    double s = 0;
    for (double v : r) s += v * v;
    return s;
  }
};

QueueParams fit_structure(const std::vector<Observation>& obs, int servers) {
  double lmax = 0, mmin = kInf;
  for (const Observation& o : obs) {
    lmax = std::max(lmax, o.load_rps);
    mmin = std::min(mmin, o.mean_ms);
  }
  Fitter f{obs, servers, lmax / servers * 1.0001};
  // Coarse grid first (the objective has a steep wall at mu -> lambda_max), then Levenberg-Marquardt.
  double hi = std::max(f.base * 20, 3000.0 / mmin);
  double best_a = 0, best_b = 0, best = kInf;
  for (int i = 0; i < 120; ++i) {
    double mu_extra =
        std::exp(std::log(1e-3 * std::max(hi, 1.0)) + (std::log(hi) - std::log(1e-3 * std::max(hi, 1.0))) * i / 119.0);
    double a = std::log(mu_extra);
    for (double scv : {0.05, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0}) {
      double b = std::log(scv);
      double s = f.sse(a, b);
      if (s < best) best = s, best_a = a, best_b = b;
    }
  }
  double a = best_a, b = best_b, lambda = 1e-3, cur = best;
  std::vector<double> r, ra, rb;
  for (int it = 0; it < 100 && std::isfinite(cur); ++it) {
    const double h = 1e-6;
    if (!f.residuals(a, b, r) || !f.residuals(a + h, b, ra) || !f.residuals(a, b + h, rb)) break;
    double jaa = 0, jab = 0, jbb = 0, ga = 0, gb = 0;
    for (size_t i = 0; i < r.size(); ++i) {
      double da = (ra[i] - r[i]) / h, db = (rb[i] - r[i]) / h;
      jaa += da * da, jab += da * db, jbb += db * db, ga += da * r[i], gb += db * r[i];
    }
    bool improved = false;
    for (int k = 0; k < 20 && !improved; ++k) {
      double A = jaa * (1 + lambda) + 1e-12, B = jab, D = jbb * (1 + lambda) + 1e-12;
      double det = A * D - B * B;
      if (det == 0) break;
      double sa = -(D * ga - B * gb) / det, sb = -(A * gb - B * ga) / det;
      double nb = std::clamp(b + sb, -9.0, 3.0);
      double s = f.sse(a + sa, nb);
      if (s < cur) {
        a += sa, b = nb, cur = s, lambda = std::max(lambda / 10, 1e-9), improved = true;
      } else {
        lambda *= 10;
      }
    }
    if (!improved) break;
  }
  return f.params(a, b);
}

// The structure with mu known (from saturated windows): the variability alone, by a grid, then a ternary
// search in the best grid cell.
QueueParams fit_scv(const std::vector<Observation>& obs, int servers, double mu) {
  double lmax = 0;
  for (const Observation& o : obs) lmax = std::max(lmax, o.load_rps);
  Fitter f{obs, servers, lmax / servers * 1.0001};
  const double a = std::log(std::max(mu - f.base, 1e-9));
  double best_b = 0, best = kInf;
  for (int i = 0; i <= 240; ++i) {
    double b = -9.0 + 12.0 * i / 240;
    double v = f.sse(a, b);
    if (v < best) best = v, best_b = b;
  }
  double lo = best_b - 0.05, hi = best_b + 0.05;
  for (int it = 0; it < 40; ++it) {
    double m1 = lo + (hi - lo) / 3, m2 = hi - (hi - lo) / 3;
    if (f.sse(a, m1) < f.sse(a, m2))
      hi = m2;
    else
      lo = m1;
  }
  double b = (lo + hi) / 2;
  if (!(f.sse(a, b) <= best)) b = best_b;
  return f.params(a, b);
}

}  // namespace

size_t percentile_index(double percentile) {
  if (percentile <= 50) return 0;
  if (percentile <= 90) return 1;
  if (percentile <= 95) return 2;
  return 3;
}

BackendModel BackendModel::from_params(QueueParams p) {
  BackendModel m;
  m.p_ = p;
  return m;
}

double BackendModel::utilization(double load_rps) const { return p_.mu > 0 ? load_rps / (p_.mu * p_.servers) : kInf; }

double BackendModel::structural_mean_ms(double load_rps) const { return mean_sojourn_s(p_, load_rps) * 1e3; }

double BackendModel::predict_ms(double load_rps, double percentile) const {
  double t = structural_mean_ms(load_rps);
  if (!std::isfinite(t)) return kInf;
  size_t q = percentile_index(percentile);
  double base = -std::log1p(-kQ[q]) * t;
  size_t b = bucket_of(utilization(load_rps));
  for (size_t d = 0; d < kResidualBuckets; ++d) {
    if (b >= d && has_[q][b - d]) return base * std::exp(log_res_[q][b - d]);
    if (b + d < kResidualBuckets && has_[q][b + d]) return base * std::exp(log_res_[q][b + d]);
  }
  return base;
}

nlohmann::json BackendModel::to_json() const {
  return {{"mu", p_.mu},
          {"scv", p_.scv},
          {"servers", p_.servers},
          {"nmae", {{"p50", nmae[0]}, {"p90", nmae[1]}, {"p95", nmae[2]}, {"p99", nmae[3]}}},
          {"ratio_q90", {{"p50", ratio_q90[0]}, {"p90", ratio_q90[1]}, {"p95", ratio_q90[2]}, {"p99", ratio_q90[3]}}},
          {"n_fit", n_fit},
          {"n_holdout", n_holdout},
          {"max_load_seen", max_load_seen},
          {"mu_from_saturation", saturated}};
}

namespace {

// A fit point and the windows it stands for. Each window is its own point:
// merging windows of one load level (against the Poisson noise of a window's
// load, which flattens the fitted curve) needs a change-point detector that
// tells adjacent levels apart, not written yet.
struct Segment {
  Observation agg;
  std::vector<Observation> windows;
};

}  // namespace

Result<BackendModel> fit_backend(const std::vector<Observation>& all, const FitOptions& opt) {
  if (opt.servers < 1) return make_error("cannot fit a backend model: servers must be >= 1", 0, "");
  std::vector<Observation> usable;
  std::vector<double> saturated;  // completed/s of windows the servers were busy throughout
  for (const Observation& o : all) {
    if (!(o.count >= opt.min_count && o.load_rps > 0 && o.mean_ms > 0 && o.p50_ms > 0 && std::isfinite(o.mean_ms)))
      continue;
    if (o.completed_rps > 0) {
      double n = static_cast<double>(o.count), window_s = n / o.completed_rps, arrivals = o.load_rps * window_s;
      // A mean sojourn of a whole window or more: a backlog that never emptied, so the servers never idled
      // and the completions are the capacity (c x mu), whatever the arrivals. The one direct measure of mu.
      if (o.mean_ms / 1e3 >= window_s) saturated.push_back(o.completed_rps / opt.servers);
      if (std::fabs(n - arrivals) > 3 * std::sqrt(arrivals) + 3) continue;  // not in steady state
      // A sojourn that is a fair part of the window is a backlog (building or draining), not a stationary
      // queue: its relaxation time is several sojourns long.
      if (o.mean_ms / 1e3 > 0.2 * window_s) continue;
    }
    usable.push_back(o);
  }
  // mu from saturation: the median of those windows' completion rates (3 at least, against one window's
  // noise); a steady window at a load well above that (a quarter: beyond a window's Poisson noise) proves
  // it wrong (then it is not used).
  double mu_sat = 0;
  if (opt.saturation && saturated.size() >= 3) {
    std::sort(saturated.begin(), saturated.end());
    mu_sat = saturated[saturated.size() / 2];
    for (const Observation& o : usable)
      if (o.load_rps / opt.servers >= 1.25 * mu_sat) mu_sat = 0;
  }
  if (usable.size() < 3 && mu_sat <= 0)
    return make_error("cannot fit a backend model: " + std::to_string(usable.size()) +
                          " usable windows (need 3 with >= " + std::to_string(opt.min_count) +
                          " completed requests, or 3 saturated ones)",
                      0, "collect more windows with load on this backend");
  if (usable.size() < 3) {
    // Only saturated windows: mu is known, the variability not (exponential assumed) until steady windows come.
    BackendModel m = BackendModel::from_params({mu_sat, 1.0, opt.servers});
    m.n_fit = saturated.size();
    m.saturated = true;
    return m;
  }
  std::vector<Segment> segs;
  for (const Observation& o : usable) segs.push_back({o, {o}});
  auto build = [&](const std::vector<Segment>& ss) {
    std::vector<Observation> obs;
    for (const Segment& sg : ss) obs.push_back(sg.agg);
    BackendModel m;
    m.p_ = mu_sat > 0 ? fit_scv(obs, opt.servers, mu_sat) : fit_structure(obs, opt.servers);
    m.saturated = mu_sat > 0;
    m.n_fit = 0;
    for (const Segment& sg : ss) m.n_fit += sg.windows.size();
    if (opt.residual) {
      std::array<std::array<double, kResidualBuckets>, 4> sum{}, w{};
      for (const Observation& o : obs) {
        size_t b = bucket_of(m.utilization(o.load_rps));
        double t = m.structural_mean_ms(o.load_rps);
        for (size_t q = 0; q < 4; ++q) {
          double v = pick(o, q);
          if (!(v > 0) || !std::isfinite(t)) continue;
          sum[q][b] += static_cast<double>(o.count) * std::log(v / (-std::log1p(-kQ[q]) * t));
          w[q][b] += static_cast<double>(o.count);
        }
      }
      for (size_t q = 0; q < 4; ++q)
        for (size_t b = 0; b < kResidualBuckets; ++b)
          if (w[q][b] > 0) m.log_res_[q][b] = sum[q][b] / w[q][b], m.has_[q][b] = true;
    }
    for (const Observation& o : obs) m.max_load_seen = std::max(m.max_load_seen, o.load_rps);
    return m;
  };
  // Held out: every k-th window.
  std::vector<Segment> train, held;
  for (size_t i = 0; i < segs.size(); ++i)
    (opt.holdout_every && i % opt.holdout_every == opt.holdout_every - 1 ? held : train).push_back(segs[i]);
  std::array<double, 4> nmae{}, q90{1, 1, 1, 1};
  size_t n_held = 0;
  if (!held.empty() && train.size() >= 3) {
    BackendModel m = build(train);
    for (size_t q = 0; q < 4; ++q) {
      double err = 0, tot = 0;
      std::vector<double> ratios;
      for (const Segment& sg : held)
        for (const Observation& o : sg.windows) {
          double v = pick(o, q), p = m.predict_ms(o.load_rps, kQ[q] * 100);
          p = std::min(p, 10 * v);  // an unstable prediction counts as a 900 % error, not infinity
          err += std::fabs(p - v);
          tot += v;
          // The margin is for where a controller operates: near saturation a 1 s window is a transient
          // (the stationary prediction does not apply), and the policy's bound keeps it away from there.
          if (p > 0 && m.utilization(o.load_rps) < 0.85) ratios.push_back(v / p);
        }
      nmae[q] = tot > 0 ? err / tot : 0;
      if (!ratios.empty()) {
        std::sort(ratios.begin(), ratios.end());
        q90[q] = ratios[std::min(ratios.size() - 1, static_cast<size_t>(std::ceil(0.9 * ratios.size())) - 1)];
      }
    }
    for (const Segment& sg : held) n_held += sg.windows.size();
  }
  BackendModel m = build(segs);
  m.nmae = nmae;
  m.ratio_q90 = q90;
  m.n_holdout = n_held;
  return m;
}

void Model::add_window(const nlohmann::json& window) {
  struct Acc {
    double offered = 0, completed_rate = 0, sum_ns = 0, completed = 0;
    double q[4] = {0, 0, 0, 0};
    double n = 0;
  };
  std::map<Key, Acc> acc;
  if (!window.is_object() || !window.contains("rows") || !window["rows"].is_array()) return;
  for (const nlohmann::json& r : window["rows"]) {
    if (!r.is_object() || r.value("backend", "all") == "all") continue;
    Acc& a = acc[{r.value("service", ""), r.value("backend", "")}];
    const nlohmann::json& rate = r.value("rate", nlohmann::json::object());
    const nlohmann::json& d = r.value("delta", nlohmann::json::object());
    const nlohmann::json& l = r.value("latency_ms", nlohmann::json::object());
    a.offered += rate.value("offered", 0.0);
    a.completed_rate += rate.value("completed", 0.0);
    a.sum_ns += d.value("req_sum_ns", 0.0);
    a.completed += d.value("completed", 0.0);
    double n = l.value("count", 0.0);
    a.n += n;
    const char* names[4] = {"p50", "p90", "p95", "p99"};
    for (size_t q = 0; q < 4; ++q) a.q[q] += n * l.value(names[q], 0.0);
  }
  for (auto& [k, a] : acc) {
    if (a.completed <= 0 || a.n <= 0) continue;
    Observation o;
    // Routed-to is the queue's arrival rate; a backend the kernel did not route (no action) only has completions.
    o.load_rps = a.offered > 0 ? a.offered : a.completed_rate;
    o.mean_ms = a.sum_ns / a.completed / 1e6;
    o.p50_ms = a.q[0] / a.n;
    o.p90_ms = a.q[1] / a.n;
    o.p95_ms = a.q[2] / a.n;
    o.p99_ms = a.q[3] / a.n;
    o.count = static_cast<uint64_t>(a.completed);
    o.completed_rps = a.completed_rate;
    auto& v = obs_[k];
    v.push_back(o);
    if (v.size() > history_) v.erase(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() - history_));
  }
}

Status Model::fit(const FitOptions& opt) {
  std::string errors;
  size_t fitted = 0;
  FitOptions o = opt;
  o.saturation = o.saturation || saturation_;
  for (const auto& [k, v] : obs_) {
    auto m = fit_backend(v, o);
    if (!m) {
      errors += (errors.empty() ? "" : "; ") + k.first + " " + k.second + ": " + m.error().what;
      continue;
    }
    models_[k] = std::move(*m);
    ++fitted;
  }
  if (fitted == 0 && !models_.empty()) return ok_status();
  if (fitted == 0)
    return make_error(
        "no backend model could be fitted" + (errors.empty() ? std::string(" (no windows)") : ": " + errors), 0,
        "feed windows with load on the backends (Model::add_window) and fit again");
  return ok_status();
}

const BackendModel* Model::find(const std::string& service, const std::string& backend) const {
  auto it = models_.find({service, backend});
  return it == models_.end() ? nullptr : &it->second;
}

void Model::set(const std::string& service, const std::string& backend, BackendModel m) {
  models_[{service, backend}] = std::move(m);
}

double Model::nmae(double percentile) const {
  double worst = 0;
  for (const auto& [k, m] : models_) worst = std::max(worst, m.nmae[percentile_index(percentile)]);
  return worst;
}

nlohmann::json Model::to_json() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [k, m] : models_) out[k.first][k.second] = m.to_json();
  return out;
}

}  // namespace meshcut::control
