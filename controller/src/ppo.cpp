// SPDX-License-Identifier: Apache-2.0
#include "meshcut/control/ppo.h"

#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

namespace meshcut::control {
namespace {

using nlohmann::json;

constexpr double kEps = 1e-9;
constexpr const char* kFormat = "meshcut-ppo/v1";

// The actor (logits of every head, concatenated) and the critic (the reward's baseline), as SB3's MlpPolicy.
struct NetImpl : torch::nn::Module {
  NetImpl(int64_t in, int64_t out, int64_t hidden) {
    namespace nn = torch::nn;
    actor = register_module("actor", nn::Sequential(nn::Linear(in, hidden), nn::Tanh(), nn::Linear(hidden, hidden),
                                                    nn::Tanh(), nn::Linear(hidden, out)));
    critic = register_module("critic", nn::Sequential(nn::Linear(in, hidden), nn::Tanh(), nn::Linear(hidden, hidden),
                                                      nn::Tanh(), nn::Linear(hidden, 1)));
    torch::NoGradGuard ng;
    auto init = [](nn::Sequential& s, double last_gain) {
      size_t n = 0;
      for (auto& m : s->modules(false))
        if (m->as<nn::Linear>()) ++n;
      size_t i = 0;
      for (auto& m : s->modules(false)) {
        auto* l = m->as<nn::Linear>();
        if (!l) continue;
        nn::init::orthogonal_(l->weight, ++i == n ? last_gain : std::sqrt(2.0));
        nn::init::zeros_(l->bias);
      }
    };
    init(actor, 0.01);
    init(critic, 1.0);
  }
  torch::nn::Sequential actor{nullptr}, critic{nullptr};
};
TORCH_MODULE(Net);

// The heads laid out as [H, K] (K the largest head), the columns a head does
// not have masked: every head's softmax in one op instead of one per head.
struct HeadLayout {
  explicit HeadLayout(const std::vector<int64_t>& heads) {
    H = static_cast<int64_t>(heads.size());
    for (int64_t h : heads) K = std::max(K, h);
    std::vector<int64_t> idx(static_cast<size_t>(H * K), 0);
    std::vector<float> mask(static_cast<size_t>(H * K), 0.0F);
    int64_t off = 0;
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t j = 0; j < K; ++j) {
        auto i = static_cast<size_t>(h * K + j);
        if (j < heads[static_cast<size_t>(h)])
          idx[i] = off + j;
        else
          mask[i] = -1e9F;
      }
      off += heads[static_cast<size_t>(h)];
    }
    index = torch::tensor(idx, torch::kLong);
    this->mask = torch::tensor(mask);
  }
  // LOGITS [B, sum heads] -> log-probabilities [B, H, K].
  torch::Tensor log_probs(const torch::Tensor& logits) const {
    return (logits.index_select(1, index) + mask).view({logits.size(0), H, K}).log_softmax(2);
  }
  int64_t H = 0, K = 0;
  torch::Tensor index, mask;
};

// Log-probability of ACTIONS [B, H] and entropy, summed over heads.
std::pair<torch::Tensor, torch::Tensor> logp_entropy(const HeadLayout& L, const torch::Tensor& logits,
                                                     const torch::Tensor& actions) {
  torch::Tensor l = L.log_probs(logits);
  torch::Tensor lp = l.gather(2, actions.unsqueeze(2)).squeeze(2).sum(1);
  torch::Tensor ent = -(l.exp() * l).sum({1, 2});
  return {lp, ent};
}

torch::Tensor states_tensor(const PpoShape& shape, const std::vector<FlatLoad>& loads) {
  const int64_t n = static_cast<int64_t>(loads.size()), d = static_cast<int64_t>(shape.state_size());
  torch::Tensor t = torch::empty({n, d});
  auto a = t.accessor<float, 2>();
  for (int64_t i = 0; i < n; ++i) {
    auto s = ppo_state(shape, loads[static_cast<size_t>(i)]);
    for (int64_t j = 0; j < d; ++j) a[i][j] = s[static_cast<size_t>(j)];
  }
  return t;
}

std::string torch_error(const c10::Error& e) { return e.what_without_backtrace(); }

}  // namespace

// ---- shape ----

size_t PpoShape::state_size() const {
  size_t n = 0;
  for (const auto& s : services) n += s.classes.size();
  return n;
}

std::vector<int64_t> PpoShape::heads() const {
  std::vector<int64_t> h;
  for (const auto& s : services) {
    h.push_back(static_cast<int64_t>(compositions(routing_levels, static_cast<int>(s.backends.size())).size()));
    for (size_t c = 0; c < s.classes.size(); ++c) h.push_back(admission_levels + 1);
  }
  return h;
}

std::string PpoShape::mismatch(const PpoShape& o) const {
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return "[" + s + "]";
  };
  auto names = [&](const PpoShape& p) {
    std::vector<std::string> v;
    for (const auto& s : p.services) v.push_back(s.service);
    return list(v);
  };
  if (routing_levels != o.routing_levels || admission_levels != o.admission_levels)
    return "grid: routing/admission levels " + std::to_string(routing_levels) + "/" + std::to_string(admission_levels) +
           " vs " + std::to_string(o.routing_levels) + "/" + std::to_string(o.admission_levels);
  if (services.size() != o.services.size()) return "services " + names(*this) + " vs " + names(o);
  for (size_t i = 0; i < services.size(); ++i) {
    const auto &a = services[i], &b = o.services[i];
    if (a.service != b.service) return "services " + names(*this) + " vs " + names(o);
    if (a.backends != b.backends) return a.service + ": backends " + list(a.backends) + " vs " + list(b.backends);
    if (a.classes != b.classes) return a.service + ": classes " + list(a.classes) + " vs " + list(b.classes);
  }
  return "";
}

json PpoShape::to_json() const {
  json ss = json::array();
  for (const auto& s : services)
    ss.push_back({{"service", s.service},
                  {"backends", s.backends},
                  {"classes", s.classes},
                  {"loadLo", s.load_lo},
                  {"loadHi", s.load_hi}});
  return {{"services", ss}, {"routingLevels", routing_levels}, {"admissionLevels", admission_levels}};
}

Result<PpoShape> PpoShape::from_json(const json& j) {
  try {
    PpoShape p;
    p.routing_levels = j.at("routingLevels").get<int>();
    p.admission_levels = j.at("admissionLevels").get<int>();
    for (const json& s : j.at("services")) {
      PpoServiceShape x;
      x.service = s.at("service").get<std::string>();
      x.backends = s.at("backends").get<std::vector<std::string>>();
      x.classes = s.at("classes").get<std::vector<std::string>>();
      x.load_lo = s.at("loadLo").get<std::vector<double>>();
      x.load_hi = s.at("loadHi").get<std::vector<double>>();
      if (x.load_lo.size() != x.classes.size() || x.load_hi.size() != x.classes.size())
        return make_error("PPO model shape: " + x.service + ": one load range per class expected", 0, "");
      p.services.push_back(std::move(x));
    }
    if (p.routing_levels < 1 || p.admission_levels < 1) return make_error("PPO model shape: bad grid", 0, "");
    return p;
  } catch (const json::exception& e) {
    return make_error(std::string("PPO model shape: ") + e.what(), 0, "");
  }
}

Result<PpoShape> ppo_shape(const obj::Services& services, const Objectives& objectives, const TwinConfig* cfg) {
  PpoShape p;
  p.routing_levels = objectives.grid.routing_levels();
  p.admission_levels = objectives.grid.admission_levels();
  std::vector<std::string> classes;
  for (const obj::CallerClass& c : services.classes) classes.push_back(c.name);
  if (classes.empty()) classes.push_back(obj::kDefaultClassName);
  for (const ServiceObjective& so : objectives.services) {
    const obj::Service* svc = services.find(so.service);
    if (!svc || svc->endpoints.empty()) continue;
    PpoServiceShape s;
    s.service = so.service;
    for (const obj::Endpoint& e : svc->endpoints) s.backends.push_back(e.addr());
    s.classes = classes;
    const TwinService* ts = nullptr;
    if (cfg)
      for (const TwinService& t : cfg->services)
        if (t.key == so.service) ts = &t;
    for (const std::string& c : classes) {
      double lo = 0, hi = 1;
      if (ts) {
        auto it = ts->load.find(c);
        if (it != ts->load.end() && !it->second.steps.empty()) {
          lo = std::numeric_limits<double>::infinity(), hi = 0;
          for (const auto& [t, r] : it->second.steps) lo = std::min(lo, r), hi = std::max(hi, r);
          lo *= 0.8, hi *= 1.2;  // the windows' Poisson noise around the pattern's rates
        } else {
          lo = hi = 0;
        }
      }
      s.load_lo.push_back(lo);
      s.load_hi.push_back(hi);
    }
    p.services.push_back(std::move(s));
  }
  if (p.services.empty())
    return make_error("no service of the objectives is in the scenario", 0,
                      "name the scenario's services (ns/name) in the objectives");
  return p;
}

std::vector<float> ppo_state(const PpoShape& shape, const std::vector<double>& load) {
  std::vector<float> s;
  size_t i = 0;
  for (const auto& sv : shape.services)
    for (size_t c = 0; c < sv.classes.size(); ++c, ++i)
      s.push_back(static_cast<float>(sv.load_hi[c] > 0 ? load[i] / sv.load_hi[c] : 0.0));
  return s;
}

// ---- environment ----

PpoEnv::PpoEnv(PpoShape shape, const obj::Services& services, const Model& model, const Objectives& objectives,
               PolicyOptions popt, RewardOptions ropt)
    : shape_(std::move(shape)), services_(services), model_(&model), objectives_(objectives), popt_(popt), ropt_(ropt) {
  size_t load_off = 0, head_off = 0;
  for (const PpoServiceShape& s : shape_.services) {
    Svc v;
    v.so = objectives_.find(s.service);
    v.routes = compositions(shape_.routing_levels, static_cast<int>(s.backends.size()));
    v.load_off = load_off, v.head_off = head_off;
    load_off += s.classes.size();
    head_off += 1 + s.classes.size();
    if (!v.so) v.note = "no objective for it";
    double err = 0, q90 = 1;
    for (const std::string& b : s.backends) {
      const BackendModel* m = model_->find(s.service, b);
      if (!m) {
        if (v.note.empty()) v.note = "backend " + b + " has no model yet";
        continue;
      }
      v.models.push_back(m);
      if (v.so) {
        err = std::max(err, m->nmae[percentile_index(v.so->latency.percentile)]);
        q90 = std::max(q90, m->ratio_q90[percentile_index(v.so->latency.percentile)]);
      }
    }
    v.margin = std::min(popt_.max_margin,
                        popt_.base_margin + (popt_.quantile_margin ? q90 - 1 : 0) + popt_.error_margin_factor * err);
    for (const std::string& c : s.classes) v.cw.push_back(v.so ? v.so->class_weight(c) : 0.0);
    svc_.push_back(std::move(v));
  }
}

FlatLoad PpoEnv::sample_load(std::mt19937_64& rng, int levels) const {
  FlatLoad l;
  std::uniform_real_distribution<double> u(0, 1);
  for (const auto& s : shape_.services)
    for (size_t c = 0; c < s.classes.size(); ++c) {
      double lo = s.load_lo[c], hi = s.load_hi[c];
      if (levels >= 2) {
        auto k = static_cast<double>(rng() % static_cast<uint64_t>(levels));
        l.push_back(lo + (hi - lo) * k / (levels - 1));
      } else {
        l.push_back(lo + (hi - lo) * u(rng));
      }
    }
  return l;
}

FlatLoad PpoEnv::flatten(const Load& load) const {
  FlatLoad l;
  for (const auto& s : shape_.services) {
    auto it = load.find(s.service);
    for (const std::string& c : s.classes) {
      double v = 0;
      if (it != load.end())
        if (auto jt = it->second.find(c); jt != it->second.end()) v = jt->second;
      l.push_back(v);
    }
  }
  return l;
}

Load PpoEnv::unflatten(const FlatLoad& load) const {
  Load l;
  size_t i = 0;
  for (const auto& s : shape_.services)
    for (const std::string& c : s.classes) l[s.service][c] = load[i++];
  return l;
}

double PpoEnv::service_reward(size_t s, const FlatLoad& load, const FlatAction& a, ServiceChoice* out) const {
  const Svc& v = svc_[s];
  const PpoServiceShape& sh = shape_.services[s];
  const int R = shape_.routing_levels, A = shape_.admission_levels;
  const auto& route = v.routes[static_cast<size_t>(a[v.head_off])];
  double adm = 0, value = 0, worst = 0;
  std::vector<double> f(sh.classes.size());
  for (size_t c = 0; c < sh.classes.size(); ++c) {
    const double off = load[v.load_off + c];
    f[c] = off > 0 ? static_cast<double>(a[v.head_off + 1 + c]) / A : 1.0;  // nothing offered: nothing to block
    adm += f[c] * off;
    value += f[c] * off * v.cw[c];
  }
  std::vector<double> per_backend(sh.backends.size(), 0.0);
  if (v.note.empty())
    for (size_t b = 0; b < sh.backends.size(); ++b) {
      const double w = static_cast<double>(route[b]) / R;
      if (w <= 0 || adm <= 0) continue;
      per_backend[b] = v.models[b]->predict_ms(w * adm, v.so->latency.percentile);
      worst = std::max(worst, per_backend[b]);
    }
  double r = 0;
  bool feasible = true;
  if (v.note.empty()) {
    const double x = worst * (1 + v.margin), bound = v.so->latency.bound_ms;
    feasible = adm <= 0 || x <= bound;
    r = feasible ? value : value / (1 + std::exp(std::min(700.0, ropt_.sharpness * (x / bound - 1))));
  }
  if (out) {
    ServiceChoice& c = *out;
    c.service = sh.service;
    c.backends = sh.backends;
    c.weights.clear();
    for (size_t b = 0; b < sh.backends.size(); ++b) c.weights.push_back(static_cast<double>(route[b]) / R);
    for (size_t k = 0; k < sh.classes.size(); ++k) {
      c.admit[sh.classes[k]] = f[k];
      c.offered[sh.classes[k]] = load[v.load_off + k];
    }
    c.backend_ms = per_backend;
    c.predicted_ms = worst;
    c.bound_ms = v.so ? v.so->latency.bound_ms : 0;
    c.margin = v.margin;
    c.value = value;
    c.carried_rps = adm;
    c.feasible = feasible;
    c.throughput_met = !v.so || !v.so->throughput_rps || adm + kEps >= *v.so->throughput_rps;
    c.note = v.note;
  }
  return r;
}

double PpoEnv::reward(const FlatLoad& load, const FlatAction& action) const {
  double r = 0;
  for (size_t s = 0; s < svc_.size(); ++s) r += service_reward(s, load, action, nullptr);
  return r;
}

double PpoEnv::reward_scale() const {
  double r = 0;
  for (size_t s = 0; s < svc_.size(); ++s)
    for (size_t c = 0; c < svc_[s].cw.size(); ++c) r += shape_.services[s].load_hi[c] * svc_[s].cw[c];
  return r > 0 ? r : 1;
}

FlatAction PpoEnv::optimum(const FlatLoad& load) const {
  FlatAction a(shape_.heads().size(), 0);
  for (size_t s = 0; s < svc_.size(); ++s) {
    const Svc& v = svc_[s];
    const size_t k = shape_.services[s].classes.size();
    const auto A = static_cast<size_t>(shape_.admission_levels + 1);
    size_t n_adm = 1;
    for (size_t c = 0; c < k; ++c) n_adm *= A;
    FlatAction cand = a, best = a;
    double best_r = -1;
    for (size_t r = 0; r < v.routes.size(); ++r) {
      cand[v.head_off] = static_cast<int64_t>(r);
      for (size_t ai = 0; ai < n_adm; ++ai) {
        size_t x = ai;
        for (size_t c = 0; c < k; ++c, x /= A) cand[v.head_off + 1 + c] = static_cast<int64_t>(A - 1 - x % A);
        double rw = service_reward(s, load, cand, nullptr);
        if (rw > best_r + kEps) best_r = rw, best = cand;
      }
    }
    for (size_t h = 0; h <= k; ++h) a[v.head_off + h] = best[v.head_off + h];
  }
  return a;
}

FlatAction PpoEnv::action_of(const Decision& d) const {
  const int R = shape_.routing_levels, A = shape_.admission_levels;
  FlatAction a(shape_.heads().size(), 0);
  for (size_t s = 0; s < svc_.size(); ++s) {
    const Svc& v = svc_[s];
    const PpoServiceShape& sh = shape_.services[s];
    for (size_t c = 0; c < sh.classes.size(); ++c) a[v.head_off + 1 + c] = A;
    for (const ServiceChoice& c : d.chosen) {
      if (c.service != sh.service || !c.note.empty() || c.backends != sh.backends) continue;
      std::vector<int> route;
      for (double w : c.weights) route.push_back(static_cast<int>(std::lround(w * R)));
      auto it = std::find(v.routes.begin(), v.routes.end(), route);
      if (it != v.routes.end()) a[v.head_off] = it - v.routes.begin();
      for (size_t k = 0; k < sh.classes.size(); ++k)
        if (auto jt = c.admit.find(sh.classes[k]); jt != c.admit.end())
          a[v.head_off + 1 + k] = std::lround(jt->second * A);
    }
  }
  return a;
}

ServiceChoice PpoEnv::choice(size_t s, const FlatLoad& load, const FlatAction& action) const {
  ServiceChoice c;
  service_reward(s, load, action, &c);
  return c;
}

// ---- the policy ----

struct PpoPolicy::Impl {
  PpoShape shape;
  int hidden = 64;
  Net net{nullptr};
  json meta;
};

PpoPolicy::PpoPolicy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PpoPolicy::~PpoPolicy() = default;

const PpoShape& PpoPolicy::shape() const { return impl_->shape; }
const json& PpoPolicy::meta() const { return impl_->meta; }
json& PpoPolicy::meta() { return impl_->meta; }

std::vector<FlatAction> PpoPolicy::act(const std::vector<FlatLoad>& loads) const {
  std::vector<FlatAction> out;
  if (loads.empty()) return out;
  torch::NoGradGuard ng;
  const auto heads = impl_->shape.heads();
  torch::Tensor logits = impl_->net->actor->forward(states_tensor(impl_->shape, loads));
  torch::Tensor a = HeadLayout(heads).log_probs(logits).argmax(2).contiguous();
  auto acc = a.accessor<int64_t, 2>();
  for (int64_t i = 0; i < a.size(0); ++i) {
    FlatAction x;
    for (int64_t h = 0; h < a.size(1); ++h) x.push_back(acc[i][h]);
    out.push_back(std::move(x));
  }
  return out;
}

Status PpoPolicy::check(const obj::Services& services, const Objectives& objectives) const {
  auto here = ppo_shape(services, objectives, nullptr);
  if (!here) return here.error();
  std::string diff = impl_->shape.mismatch(*here);
  if (!diff.empty())
    return make_error("the PPO model " + (source_.empty() ? std::string("given") : source_) +
                          " was trained for a different scenario shape: " + diff + " (model vs here)",
                      0,
                      "train it for this scenario and objectives: meshcut-control train --objectives F --scenario F");
  return ok_status();
}

Decision PpoPolicy::decide(const obj::Services& services, const Load& load, const Model& model,
                           const Objectives& objectives, uint64_t generation) {
  auto t0 = std::chrono::steady_clock::now();
  Decision d;
  if (auto st = check(services, objectives); !st) {
    // The service file or the objectives changed under the model: fail open rather than act on a wrong shape.
    for (const ServiceObjective& so : objectives.services) {
      ServiceChoice c;
      c.service = so.service;
      c.bound_ms = so.latency.bound_ms;
      c.note = st.error().what;
      d.chosen.push_back(c);
      d.runner_up.push_back(ServiceChoice{});
    }
    d.action = action_document(d.chosen, generation, PolicyOptions{});
    return d;
  }
  PpoEnv env(impl_->shape, services, model, objectives);
  FlatLoad flat = env.flatten(load);
  FlatAction a = act({flat}).front();
  for (const ServiceObjective& so : objectives.services) {
    size_t s = 0;
    while (s < impl_->shape.services.size() && impl_->shape.services[s].service != so.service) ++s;
    ServiceChoice c;
    if (s == impl_->shape.services.size()) {
      c.service = so.service;
      c.bound_ms = so.latency.bound_ms;
      c.note = "not in the PPO model";
    } else {
      c = env.choice(s, flat, a);
      // Classes of the service file the model does not see are left alone (admitted, routed as the rest).
      c.admit.try_emplace(obj::kDefaultClassName, 1.0);
      c.offered.try_emplace(obj::kDefaultClassName, 0.0);
      for (const obj::CallerClass& cc : services.classes) c.admit.try_emplace(cc.name, 1.0);
      for (const obj::CallerClass& cc : services.classes) c.offered.try_emplace(cc.name, 0.0);
      ++d.candidates;
    }
    d.value += c.note.empty() ? c.value : 0;
    d.chosen.push_back(c);
    d.runner_up.push_back(ServiceChoice{});
  }
  d.action = action_document(d.chosen, generation, PolicyOptions{});
  d.decide_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return d;
}

Status PpoPolicy::save(const std::string& path) const {
  try {
    torch::serialize::OutputArchive ar;
    ar.write("meshcut_meta", c10::IValue(impl_->meta.dump()));
    torch::serialize::OutputArchive net;
    impl_->net->save(net);
    ar.write("net", net);
    ar.save_to(path);
    return ok_status();
  } catch (const c10::Error& e) {
    return make_error("cannot write the PPO model to " + path + ": " + torch_error(e), 0,
                      "check the directory exists and is writable");
  }
}

Result<std::unique_ptr<PpoPolicy>> PpoPolicy::load(const std::string& path) {
  if (::access(path.c_str(), R_OK) != 0)
    return make_error("cannot read the PPO model " + path, errno,
                      "train one: meshcut-control train --objectives F --scenario F --out " + path);
  auto impl = std::make_unique<Impl>();
  try {
    torch::serialize::InputArchive ar;
    ar.load_from(path);
    c10::IValue meta;
    if (!ar.try_read("meshcut_meta", meta) || !meta.isString())
      return make_error(path + " is not a meshcut PPO model (no meshcut_meta)", 0,
                        "give the file `meshcut-control train --out` wrote");
    impl->meta = json::parse(meta.toStringRef(), nullptr, false);
    if (impl->meta.is_discarded() || impl->meta.value("format", "") != kFormat)
      return make_error(path + ": not a " + std::string(kFormat) + " model", 0,
                        "train it again with this meshcut-control");
    auto shape = PpoShape::from_json(impl->meta.value("shape", json::object()));
    if (!shape) return make_error(path + ": " + shape.error().what, 0, "train it again");
    impl->shape = std::move(*shape);
    impl->hidden = impl->meta.value("hidden", 64);
    int64_t out = 0;
    for (int64_t h : impl->shape.heads()) out += h;
    impl->net = Net(static_cast<int64_t>(impl->shape.state_size()), out, impl->hidden);
    torch::serialize::InputArchive net;
    ar.read("net", net);
    impl->net->load(net);
    impl->net->eval();
  } catch (const c10::Error& e) {
    return make_error("cannot load the PPO model " + path + ": " + torch_error(e), 0,
                      "give the file `meshcut-control train --out` wrote");
  } catch (const std::exception& e) {
    return make_error("cannot load the PPO model " + path + ": " + e.what(), 0,
                      "give the file `meshcut-control train --out` wrote");
  }
  std::unique_ptr<PpoPolicy> p(new PpoPolicy(std::move(impl)));
  p->source_ = path;
  return p;
}

// ---- training ----

Result<std::unique_ptr<PpoPolicy>> train_ppo(const PpoEnv& env, const TrainOptions& opt) {
  if (opt.rollout == 0 || opt.minibatch == 0 || opt.steps == 0)
    return make_error("train: steps, rollout and minibatch must be > 0", 0, "");
  const PpoShape& shape = env.shape();
  const auto heads = shape.heads();
  int64_t out = 0;
  for (int64_t h : heads) out += h;
  const auto in = static_cast<int64_t>(shape.state_size());
  if (in == 0) return make_error("train: the scenario gives the policy no load to see", 0, "");
  try {
    torch::set_num_threads(std::max(1, opt.threads));
    torch::manual_seed(opt.seed);
    auto impl = std::make_unique<PpoPolicy::Impl>();
    impl->shape = shape;
    impl->hidden = opt.hidden;
    impl->net = Net(in, out, opt.hidden);
    Net& net = impl->net;
    const HeadLayout layout(heads);
    torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(opt.lr).eps(1e-5));
    std::mt19937_64 rng(opt.seed);
    const double scale = env.reward_scale();
    const auto T = static_cast<int64_t>(opt.rollout), M = static_cast<int64_t>(opt.minibatch);
    size_t done = 0;
    std::vector<FlatLoad> loads(opt.rollout);
    std::vector<float> rewards(opt.rollout);
    while (done < opt.steps) {
      for (auto& l : loads) l = env.sample_load(rng, opt.load_levels);
      torch::Tensor states = states_tensor(shape, loads);
      torch::Tensor actions, old_logp, values;
      {
        torch::NoGradGuard ng;
        torch::Tensor logits = net->actor->forward(states);
        values = net->critic->forward(states).squeeze(1);
        torch::Tensor p = layout.log_probs(logits).exp().view({T * layout.H, layout.K});
        actions = torch::multinomial(p, 1).view({T, layout.H}).contiguous();
        old_logp = logp_entropy(layout, logits, actions).first;
      }
      auto acc = actions.accessor<int64_t, 2>();
      double sum = 0;
      FlatAction a(heads.size());
      for (int64_t i = 0; i < T; ++i) {
        for (size_t h = 0; h < heads.size(); ++h) a[h] = acc[i][static_cast<int64_t>(h)];
        double r = env.reward(loads[static_cast<size_t>(i)], a);
        sum += r;
        rewards[static_cast<size_t>(i)] = static_cast<float>(r / scale);
      }
      torch::Tensor returns = torch::from_blob(rewards.data(), {T}, torch::kFloat).clone();
      torch::Tensor adv = returns - values;  // gamma = 0: one step, the reward minus the baseline
      for (size_t e = 0; e < opt.epochs; ++e) {
        torch::Tensor perm = torch::randperm(T, torch::kLong);
        for (int64_t b = 0; b < T; b += M) {
          torch::Tensor idx = perm.narrow(0, b, std::min(M, T - b));
          torch::Tensor s = states.index_select(0, idx);
          auto [lp, ent] = logp_entropy(layout, net->actor->forward(s), actions.index_select(0, idx));
          torch::Tensor v = net->critic->forward(s).squeeze(1);
          torch::Tensor ad = adv.index_select(0, idx);
          if (ad.size(0) > 1) ad = (ad - ad.mean()) / (ad.std() + 1e-8);
          torch::Tensor ratio = (lp - old_logp.index_select(0, idx)).exp();
          torch::Tensor pg = -torch::min(ratio * ad, ratio.clamp(1 - opt.clip, 1 + opt.clip) * ad).mean();
          torch::Tensor vl = (returns.index_select(0, idx) - v).pow(2).mean();
          torch::Tensor loss = pg - opt.ent_coef * ent.mean() + opt.vf_coef * vl;
          adam.zero_grad();
          loss.backward();
          torch::nn::utils::clip_grad_norm_(net->parameters(), opt.max_grad_norm);
          adam.step();
        }
      }
      done += opt.rollout;
      if (opt.progress) opt.progress(done, sum / static_cast<double>(T));
    }
    net->eval();
    impl->meta = {{"format", kFormat},
                  {"shape", shape.to_json()},
                  {"hidden", opt.hidden},
                  {"training",
                   {{"steps", done},
                    {"seed", opt.seed},
                    {"rollout", opt.rollout},
                    {"minibatch", opt.minibatch},
                    {"epochs", opt.epochs},
                    {"lr", opt.lr},
                    {"gamma", 0},
                    {"loadLevels", opt.load_levels}}}};
    return std::unique_ptr<PpoPolicy>(new PpoPolicy(std::move(impl)));
  } catch (const c10::Error& e) {
    return make_error("train: " + torch_error(e), 0, "");
  }
}

json PpoEval::to_json() const {
  return {{"loads", loads},
          {"ppo_reward", ppo_reward},
          {"search_reward", search_reward},
          {"optimum_reward", optimum_reward},
          {"pct_of_search", pct_of_search()},
          {"pct_of_optimum", pct_of_optimum()}};
}

PpoEval evaluate_ppo(const PpoPolicy& policy, const PpoEnv& env, size_t n, uint64_t seed) {
  PpoEval ev;
  ev.loads = n;
  if (n == 0) return ev;
  std::mt19937_64 rng(seed ^ 0xe7a1);
  std::vector<FlatLoad> loads(n);
  for (auto& l : loads) l = env.sample_load(rng, 0);
  auto acts = policy.act(loads);
  SearchPolicy search;
  for (size_t i = 0; i < n; ++i) {
    ev.ppo_reward += env.reward(loads[i], acts[i]);
    search.reset();  // the bandit's optimum, no hysteresis
    Decision d = search.decide(env.services(), env.unflatten(loads[i]), env.model(), env.objectives(), 1);
    ev.search_reward += env.reward(loads[i], env.action_of(d));
    ev.optimum_reward += env.reward(loads[i], env.optimum(loads[i]));
  }
  const auto N = static_cast<double>(n);
  ev.ppo_reward /= N, ev.search_reward /= N, ev.optimum_reward /= N;
  return ev;
}

json TrainRun::to_json() const {
  return {{"steps", steps},
          {"train_s", train_s},
          {"steps_per_s", steps_per_s()},
          {"learn_s", learn_s},
          {"eval", eval.to_json()},
          {"pct_of_search", eval.pct_of_search()},
          {"shape", policy ? policy->shape().to_json() : json()}};
}

Result<TrainRun> train_in_twin(const TwinConfig& cfg, const Objectives& objectives, size_t learn_windows,
                               const TrainOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  auto twin = Twin::create(cfg);
  if (!twin) return twin.error();
  Twin& t = **twin;
  Model model;
  uint64_t gen = 0;
  std::mt19937_64 rng(cfg.seed ^ kLearnSeedXor);
  if (auto st = learn_model(t, model, objectives, learn_windows, rng, gen); !st) return st.error();
  if (auto f = model.fit(); !f) return f.error();
  auto shape = ppo_shape(t.services(), objectives, &cfg);
  if (!shape) return shape.error();
  PpoEnv env(*shape, t.services(), model, objectives);
  for (size_t s = 0; s < shape->services.size(); ++s)
    if (!env.note(s).empty())
      return make_error("train: " + shape->services[s].service + ": " + env.note(s), 0,
                        "learn longer (--learn) so that every backend is seen");
  TrainRun run;
  auto t1 = std::chrono::steady_clock::now();
  run.learn_s = std::chrono::duration<double>(t1 - t0).count();
  auto p = train_ppo(env, opt);
  if (!p) return p.error();
  run.train_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  run.policy = std::move(*p);
  run.steps = run.policy->meta()["training"]["steps"].get<size_t>();
  run.eval = evaluate_ppo(*run.policy, env, opt.eval_loads, opt.seed + 1);
  json& meta = run.policy->meta();
  meta["eval"] = run.eval.to_json();
  meta["training"]["train_s"] = run.train_s;
  return run;
}

}  // namespace meshcut::control
