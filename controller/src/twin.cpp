// SPDX-License-Identifier: Apache-2.0
#include "meshcut/control/twin.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <queue>

namespace meshcut::control {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();

// xoshiro256**: the twin draws a few random numbers per request; mt19937_64
// would be a third of the budget of a 1 M requests/s simulation.
struct Rng {
  uint64_t s[4];
  explicit Rng(uint64_t seed) {
    for (uint64_t& x : s) {  // splitmix64 seeding
      seed += 0x9e3779b97f4a7c15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      x = z ^ (z >> 31);
    }
  }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t next() {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double exponential(double mean) { return -mean * std::log1p(-uniform()); }
  double normal() {
    double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2 * M_PI * u2);
  }
};

struct Backend {
  ServiceTime st;
  double ln_mu = 0, ln_sigma = 0;  // lognormal parameters
  std::vector<uint64_t> free_at;   // per server: when it is next free (ns)
  void set(ServiceTime s) {
    st = s;
    if (s.kind == ServiceTimeKind::kLognormal) {
      double v = std::log1p(s.scv);
      ln_sigma = std::sqrt(v);
      ln_mu = std::log(s.mean_ms * 1e6) - v / 2;
    }
  }
  uint64_t draw_ns(Rng& r) const {
    switch (st.kind) {
      case ServiceTimeKind::kDeterministic: return static_cast<uint64_t>(st.mean_ms * 1e6);
      case ServiceTimeKind::kLognormal: return static_cast<uint64_t>(std::exp(ln_mu + ln_sigma * r.normal()));
      case ServiceTimeKind::kExponential:
      default: return static_cast<uint64_t>(r.exponential(st.mean_ms * 1e6));
    }
  }
};

struct Stream {  // the arrivals of one (service, class)
  uint32_t svc = 0, cls = 0;
  Pattern pattern;
  uint64_t next_ns = kNever;
};

struct Bucket {  // mc_obj_bucket without the lock
  uint64_t tokens_nano = 0, last_ns = 0, generation = 0;
};

struct Done {
  uint64_t t_ns;
  uint32_t row_all, row_be;
  uint64_t lat_ns;
  bool operator>(const Done& o) const { return t_ns > o.t_ns; }
};

std::string default_addr(size_t svc, size_t be) {
  return "10." + std::to_string(svc / 256 + 1) + "." + std::to_string(svc % 256) + "." + std::to_string(be + 1) +
         ":8080";
}

}  // namespace

// Binary searches: a recorded pattern has a step per second for hours.
double Pattern::rate_at(double t_s) const {
  auto it = std::upper_bound(steps.begin(), steps.end(), t_s, [](double t, const auto& st) { return t < st.first; });
  return it == steps.begin() ? 0.0 : std::prev(it)->second;
}

double Pattern::next_change(double t_s) const {
  auto it = std::upper_bound(steps.begin(), steps.end(), t_s, [](double t, const auto& st) { return t < st.first; });
  return it == steps.end() ? kInf : it->first;
}

struct Twin::Impl {
  TwinConfig cfg;
  obj::Services services;
  Rng rng{1};
  uint64_t now_ns = 0;
  uint64_t window_ns = 0;
  uint64_t requests = 0;
  std::vector<std::vector<Backend>> backends;  // [svc][backend]
  std::vector<Stream> streams;
  std::vector<Bucket> buckets;  // svc * MC_OBJ_MAX_CLASSES + cls
  std::vector<mc_obj_stat> stats;
  std::priority_queue<Done, std::vector<Done>, std::greater<Done>> pending;
  obj::CompiledAction action;  // generation 0: none
  uint64_t action_expires_ns = 0;
  std::vector<const mc_obj_action*> slot;  // svc * MC_OBJ_MAX_CLASSES + cls -> slot or nullptr
  std::unique_ptr<obj::WindowStore> store;

  // The next arrival of S after FROM_NS: exponential gaps at the rate in force,
  // redrawn at each rate change (memoryless, so the process stays Poisson).
  void schedule(Stream& s, uint64_t from_ns) {
    double t = static_cast<double>(from_ns) / 1e9;
    for (;;) {
      double rate = s.pattern.rate_at(t);
      double change = s.pattern.next_change(t);
      double next = rate > 0 ? t + rng.exponential(1.0 / rate) : kInf;
      if (next < change) {
        s.next_ns = static_cast<uint64_t>(next * 1e9);
        if (s.next_ns <= from_ns) s.next_ns = from_ns + 1;
        return;
      }
      if (!std::isfinite(change)) {
        s.next_ns = kNever;
        return;
      }
      t = change;
    }
  }

  void index_slots() {
    slot.assign(services.services.size() * MC_OBJ_MAX_CLASSES, nullptr);
    for (const obj::Slot& s : action.slots) slot[s.svc * MC_OBJ_MAX_CLASSES + s.cls] = &s.a;
  }

  // mc_bucket_take, line for line (bpf/connect4.bpf.c).
  bool take(uint32_t svc, uint32_t cls, const mc_obj_action& a, uint64_t now) {
    Bucket& b = buckets[svc * MC_OBJ_MAX_CLASSES + cls];
    uint64_t cap = a.burst * MC_OBJ_NANO, tokens = b.tokens_nano;
    if (!b.generation) {
      tokens = cap;
    } else {
      uint64_t elapsed = now > b.last_ns ? now - b.last_ns : 0;
      if (a.rate_milli && elapsed > (~0ull - tokens) / a.rate_milli * 1000 / 2)
        tokens = cap;
      else
        tokens += elapsed * a.rate_milli / 1000;
    }
    if (tokens > cap) tokens = cap;
    bool ok = tokens >= MC_OBJ_NANO;
    if (ok) tokens -= MC_OBJ_NANO;
    b.tokens_nano = tokens;
    b.last_ns = now;
    b.generation = action.generation;
    return ok;
  }

  void complete(const Done& d) {
    auto bucket = mc_obj_hist_bucket(d.lat_ns);
    for (uint32_t row : {d.row_all, d.row_be}) {
      mc_obj_stat& s = stats[row];
      ++s.completed;
      s.req_sum_ns += d.lat_ns;
      ++s.req_hist[bucket];
      ++s.conn_done;
      s.conn_sum_ns += d.lat_ns;
      ++s.conn_hist[bucket];
    }
  }

  void arrive(Stream& st, uint64_t t) {
    ++requests;
    const uint32_t svc = st.svc, cls = st.cls;
    const uint32_t row_all = mc_obj_stat_index(svc, MC_OBJ_BACKEND_ALL, cls);
    ++stats[row_all].offered;
    const mc_obj_action* a = nullptr;
    if (action.generation && t <= action_expires_ns) a = slot[svc * MC_OBJ_MAX_CLASSES + cls];
    if (a && (a->flags & MC_OBJ_ACT_F_ADMIT) && !take(svc, cls, *a, t)) {
      ++stats[row_all].blocked;
      return;
    }
    ++stats[row_all].admitted;
    std::vector<Backend>& bes = backends[svc];
    uint32_t be = 0;
    bool routed = false;
    if (a && (a->flags & MC_OBJ_ACT_F_ROUTE) && a->n_backends > 0) {
      uint32_t r = static_cast<uint32_t>(rng.next() >> 32) % MC_OBJ_WEIGHT_SCALE;
      for (uint32_t i = 0; i < a->n_backends; ++i) {
        if (r < a->cum[i]) {
          be = a->be_index[i];
          routed = true;
          break;
        }
      }
    }
    if (!routed) be = static_cast<uint32_t>((rng.next() >> 32) % bes.size());
    const uint32_t row_be = mc_obj_stat_index(svc, be, cls);
    ++stats[row_be].offered;
    for (uint32_t row : {row_all, row_be}) {
      ++stats[row].conns;
      ++stats[row].requests;
    }
    Backend& b = bes[be];
    auto server = std::min_element(b.free_at.begin(), b.free_at.end());
    uint64_t start = std::max(t, *server);
    uint64_t done = start + b.draw_ns(rng);
    *server = done;
    pending.push({done, row_all, row_be, done - t});
  }

  void advance(uint64_t until) {
    // Streams are few (services x classes): a linear scan for the earliest beats a heap's bookkeeping.
    for (;;) {
      Stream* first = nullptr;
      for (Stream& s : streams)
        if (s.next_ns < until && (!first || s.next_ns < first->next_ns)) first = &s;
      if (!first) break;
      uint64_t t = first->next_ns;
      while (!pending.empty() && pending.top().t_ns <= t) {
        complete(pending.top());
        pending.pop();
      }
      arrive(*first, t);
      schedule(*first, t);
    }
    while (!pending.empty() && pending.top().t_ns <= until) {
      complete(pending.top());
      pending.pop();
    }
    now_ns = until;
  }
};

Twin::Twin(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Twin::~Twin() = default;

Result<std::unique_ptr<Twin>> Twin::create(const TwinConfig& cfg) {
  auto bad = [](const std::string& what) {
    return make_error("invalid twin config: " + what, 0, "fix the twin's configuration");
  };
  if (!(cfg.window_s > 0)) return bad("window_s must be > 0");
  if (cfg.services.empty()) return bad("services is empty");
  if (cfg.services.size() > MC_OBJ_MAX_SERVICES)
    return bad("at most " + std::to_string(MC_OBJ_MAX_SERVICES) + " services");
  if (cfg.classes.size() > obj::kMaxNamedClasses)
    return bad("at most " + std::to_string(obj::kMaxNamedClasses) + " named classes");
  auto impl = std::make_unique<Impl>();
  impl->cfg = cfg;
  impl->rng = Rng(cfg.seed);
  impl->window_ns = static_cast<uint64_t>(cfg.window_s * 1e9);
  obj::Services& S = impl->services;
  for (size_t i = 0; i < cfg.classes.size(); ++i) {
    if (cfg.classes[i].empty() || cfg.classes[i] == obj::kDefaultClassName)
      return bad("classes[" + std::to_string(i) + "] must be a name other than \"default\" (class 0)");
    obj::CallerClass c;
    c.id = static_cast<uint32_t>(i + 1);
    c.name = cfg.classes[i];
    S.classes.push_back(c);
  }
  for (size_t si = 0; si < cfg.services.size(); ++si) {
    const TwinService& ts = cfg.services[si];
    std::string where = "services[" + std::to_string(si) + "]";
    size_t slash = ts.key.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == ts.key.size())
      return bad(where + ".key must be ns/name, got \"" + ts.key + "\"");
    if (S.find(ts.key)) return bad(where + ".key " + ts.key + " is given twice");
    if (ts.backends.empty() || ts.backends.size() > MC_OBJ_MAX_BACKENDS)
      return bad(where + ".backends must have 1.." + std::to_string(MC_OBJ_MAX_BACKENDS) + " entries");
    obj::Service s;
    s.id = static_cast<uint32_t>(si);
    s.ns = ts.key.substr(0, slash);
    s.name = ts.key.substr(slash + 1);
    s.cluster_ip = "10.96." + std::to_string(si / 256) + "." + std::to_string(si % 256);
    s.cluster_ip_be = *obj::parse_ipv4(s.cluster_ip);
    s.port = 80;
    std::vector<Backend> bes;
    for (size_t bi = 0; bi < ts.backends.size(); ++bi) {
      const TwinBackend& tb = ts.backends[bi];
      std::string bw = where + ".backends[" + std::to_string(bi) + "]";
      std::string addr = tb.addr.empty() ? default_addr(si, bi) : tb.addr;
      size_t colon = addr.rfind(':');
      auto ip = colon == std::string::npos ? std::nullopt : obj::parse_ipv4(addr.substr(0, colon));
      if (!ip) return bad(bw + ".addr must be ip:port, got \"" + addr + "\"");
      obj::Endpoint e;
      e.index = static_cast<uint32_t>(bi);
      e.ip = addr.substr(0, colon);
      e.ip_be = *ip;
      e.port = static_cast<uint16_t>(std::stoul(addr.substr(colon + 1)));
      e.pod = tb.pod;
      e.node = "twin";
      s.endpoints.push_back(e);
      if (tb.servers < 1) return bad(bw + ".servers must be >= 1");
      if (!(tb.service_time.mean_ms > 0)) return bad(bw + ".service_time.mean_ms must be > 0");
      if (tb.service_time.kind == ServiceTimeKind::kLognormal && !(tb.service_time.scv > 0))
        return bad(bw + ".service_time.scv must be > 0 for a lognormal");
      Backend b;
      b.set(tb.service_time);
      b.free_at.assign(static_cast<size_t>(tb.servers), 0);
      bes.push_back(std::move(b));
    }
    impl->backends.push_back(std::move(bes));
    S.services.push_back(std::move(s));
    for (const auto& [cls, pattern] : ts.load) {
      auto id = S.class_id(cls);
      if (!id) return bad(where + ".load names class \"" + cls + "\", which is not in classes");
      Stream st;
      st.svc = static_cast<uint32_t>(si);
      st.cls = *id;
      st.pattern = pattern;
      impl->streams.push_back(st);
    }
  }
  impl->buckets.assign(S.services.size() * MC_OBJ_MAX_CLASSES, Bucket{});
  impl->stats.assign(MC_OBJ_STAT_ROWS, mc_obj_stat{});
  impl->store = std::make_unique<obj::WindowStore>(cfg.max_windows);
  impl->index_slots();
  for (Stream& st : impl->streams) impl->schedule(st, 0);
  impl->store->add_snapshot(1, impl->stats, S);  // the baseline (WindowStore wants t > 0 after it)
  return std::unique_ptr<Twin>(new Twin(std::move(impl)));
}

const obj::Services& Twin::services() const { return impl_->services; }

Status Twin::apply(const nlohmann::json& action) {
  auto c = obj::compile_action(action, impl_->services, impl_->action.generation);
  if (!c) return c.error();
  impl_->action = std::move(*c);
  impl_->action_expires_ns = impl_->now_ns + impl_->action.ttl_ms * 1000000ull;
  impl_->index_slots();
  return ok_status();
}

void Twin::clear() {
  impl_->action.slots.clear();  // generation kept: the next action must still be newer
  impl_->index_slots();
}

uint64_t Twin::generation() const { return impl_->action.generation; }

nlohmann::json Twin::step() {
  impl_->advance(impl_->now_ns + impl_->window_ns);
  impl_->store->add_snapshot(impl_->now_ns + 1, impl_->stats, impl_->services);
  return obj::to_json(impl_->store->windows().back());
}

nlohmann::json Twin::run(size_t n) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < n; ++i) out.push_back(step());
  return out;
}

const obj::WindowStore& Twin::store() const { return *impl_->store; }
double Twin::now_s() const { return static_cast<double>(impl_->now_ns) / 1e9; }
uint64_t Twin::requests() const { return impl_->requests; }

Status Twin::set_load(const std::string& service, const std::string& cls, Pattern p) {
  const obj::Service* s = impl_->services.find(service);
  if (!s) return make_error("twin: no service " + service, 0, "give a service of the twin's config (ns/name)");
  auto id = impl_->services.class_id(cls);
  if (!id) return make_error("twin: no class " + cls, 0, "give a class of the twin's config");
  // Times of P are absolute (seconds since the twin started).
  for (Stream& st : impl_->streams) {
    if (st.svc == s->id && st.cls == *id) {
      st.pattern = std::move(p);
      impl_->schedule(st, impl_->now_ns);
      return ok_status();
    }
  }
  Stream st;
  st.svc = s->id;
  st.cls = *id;
  st.pattern = std::move(p);
  impl_->schedule(st, impl_->now_ns);
  impl_->streams.push_back(st);
  return ok_status();
}

Status Twin::set_service_time(const std::string& service, const std::string& backend, ServiceTime st) {
  const obj::Service* s = impl_->services.find(service);
  if (!s) return make_error("twin: no service " + service, 0, "give a service of the twin's config (ns/name)");
  const obj::Endpoint* e = s->find_endpoint(backend);
  if (!e) return make_error("twin: no backend " + backend + " in " + service, 0, "give its pod name or ip:port");
  if (!(st.mean_ms > 0)) return make_error("twin: service time mean must be > 0", 0, "");
  impl_->backends[s->id][e->index].set(st);
  return ok_status();
}

}  // namespace meshcut::control
