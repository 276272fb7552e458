// SPDX-License-Identifier: Apache-2.0
// The digital twin against closed forms (M/M/1, M/D/1), the kernel's token
// bucket and weight table, determinism, and its speed.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "meshcut/control/twin.h"

using namespace meshcut::control;
using nlohmann::json;

namespace {

std::unique_ptr<Twin> make(const TwinConfig& c) {
  auto t = Twin::create(c);
  INFO((t.ok() ? "" : t.error().format()));
  REQUIRE(t.ok());
  return std::move(*t);
}

void apply_ok(Twin& t, const json& act) {
  auto r = t.apply(act);
  INFO((r.ok() ? "" : r.error().format()));
  REQUIRE(r.ok());
}

TwinConfig one_queue(ServiceTime st, double rate, uint64_t seed = 7) {
  TwinConfig c;
  c.classes = {"premium"};
  c.seed = seed;
  c.services = {{"default/s1", {{"s1-a", "", 1, st}}, {{"premium", Pattern::constant(rate)}}}};
  return c;
}

// Sum of a counter and latency sum over windows for the rows matching BACKEND ("all" or an address).
struct Totals {
  uint64_t offered = 0, admitted = 0, blocked = 0, completed = 0;
  double sum_ns = 0;
};
Totals totals(const json& windows, const std::string& backend, const std::string& cls = "") {
  Totals t;
  for (const json& w : windows)
    for (const json& r : w["rows"]) {
      if (r["backend"] != backend || (!cls.empty() && r["class"] != cls)) continue;
      t.offered += r["delta"]["offered"].get<uint64_t>();
      t.admitted += r["delta"]["admitted"].get<uint64_t>();
      t.blocked += r["delta"]["blocked"].get<uint64_t>();
      t.completed += r["delta"]["completed"].get<uint64_t>();
      t.sum_ns += r["delta"]["req_sum_ns"].get<double>();
    }
  return t;
}

}  // namespace

TEST_CASE("twin: M/M/1 mean and p95 match the closed form", "[control-twin]") {
  // mu = 100/s, lambda = 60/s: sojourn ~ Exp(mu - lambda), mean 25 ms, p95 = ln(20) * 25 ms = 74.9 ms.
  auto t = make(one_queue(ServiceTime::exponential(10), 60));
  t->run(20);  // warm up
  json ws = t->run(600);
  Totals all = totals(ws, "all");
  Totals be = totals(ws, "10.1.0.1:8080");
  CHECK(all.offered == all.admitted);
  CHECK(all.blocked == 0);
  CHECK(be.offered == all.admitted);  // every admitted connect is routed to the one backend
  CHECK(std::fabs(static_cast<double>(all.offered) / 600 - 60) < 1.5);
  double mean_ms = all.sum_ns / static_cast<double>(all.completed) / 1e6;
  CHECK(mean_ms == Approx(25).epsilon(0.06));
  // The p95 of one 300 s window (the histogram's bucket middle: within 3.2 %).
  TwinConfig long_window = one_queue(ServiceTime::exponential(10), 60);
  long_window.window_s = 300;
  auto l = make(long_window);
  l->step();
  json w = l->step();
  double p95 = 0;
  for (const json& r : w["rows"])
    if (r["backend"] == "all") p95 = r["latency_ms"]["p95"].get<double>();
  std::printf("twin M/M/1 rho 0.6: mean %.2f ms (exact 25), p95 of a 300 s window %.2f ms (exact 74.9)\n", mean_ms,
              p95);
  CHECK(p95 == Approx(74.9).epsilon(0.06));
}

TEST_CASE("twin: M/D/1 mean matches Pollaczek-Khinchine; 2 servers halve the wait", "[control-twin]") {
  // D = 10 ms, lambda = 50/s: rho 0.5, Wq = rho * D / (2 (1 - rho)) = 5 ms, T = 15 ms.
  auto t = make(one_queue(ServiceTime::deterministic(10), 50));
  Totals a = totals(t->run(400), "all");
  double mean = a.sum_ns / static_cast<double>(a.completed) / 1e6;
  CHECK(mean == Approx(15).epsilon(0.04));
  // Lognormal with SCV 4 at the same mean: Wq = rho (1 + 4) D / (2 (1 - rho)) = 25 ms, T = 35 ms.
  auto l = make(one_queue(ServiceTime::lognormal(10, 4), 50));
  Totals b = totals(l->run(1500), "all");
  double lmean = b.sum_ns / static_cast<double>(b.completed) / 1e6;
  std::printf("twin M/D/1 mean %.2f ms (exact 15), M/LN(scv 4)/1 mean %.2f ms (exact 35)\n", mean, lmean);
  CHECK(lmean == Approx(35).epsilon(0.12));
  // M/M/2 at mu = 100 each, lambda = 100: Erlang C = 1/3, Wq = C / (2 mu - lambda) = 3.33 ms, T = 13.33 ms.
  TwinConfig c = one_queue(ServiceTime::exponential(10), 100);
  c.services[0].backends[0].servers = 2;
  auto m2 = make(c);
  Totals d = totals(m2->run(400), "all");
  CHECK(d.sum_ns / static_cast<double>(d.completed) / 1e6 == Approx(13.333).epsilon(0.05));
}

TEST_CASE("twin: deterministic for a seed, different for another", "[control-twin]") {
  auto a = make(one_queue(ServiceTime::exponential(10), 80, 11));
  auto b = make(one_queue(ServiceTime::exponential(10), 80, 11));
  auto c = make(one_queue(ServiceTime::exponential(10), 80, 12));
  json wa = a->run(5), wb = b->run(5), wc = c->run(5);
  CHECK(wa == wb);
  CHECK(wa != wc);
}

TEST_CASE("twin: the token bucket admits rate * t + burst (+-1) and starts full", "[control-twin]") {
  auto t = make(one_queue(ServiceTime::exponential(1), 500));
  json act = {{"generation", 1},
              {"ttl_ms", 60000},
              {"services", {{"default/s1", {{"classes", {{"premium", {{"rate", 20.0}, {"burst", 7}}}}}}}}}};
  apply_ok(*t, act);
  Totals a = totals(t->run(10), "all");
  // 500/s offered against 20/s: the bucket is never full again, so it admits 7 + 20 * 10 (the last
  // partial token may or may not be whole at the last arrival).
  INFO("admitted " << a.admitted << " blocked " << a.blocked);
  CHECK(a.admitted >= 206);
  CHECK(a.admitted <= 207);
  CHECK(a.admitted + a.blocked == a.offered);
  // Rate 0 (no burst given): every connect refused.
  json zero = {{"generation", 2}, {"services", {{"default/s1", {{"classes", {{"premium", {{"rate", 0.0}}}}}}}}}};
  apply_ok(*t, zero);
  Totals z = totals(t->run(2), "all");
  CHECK(z.admitted == 0);
  CHECK(z.blocked == z.offered);
  CHECK(z.offered > 800);
  // A stale generation is refused, as the node refuses it.
  auto stale = t->apply(act);
  REQUIRE_FALSE(stale.ok());
  CHECK(stale.error().what.find("not newer") != std::string::npos);
}

TEST_CASE("twin: the TTL expires an action (fail-open)", "[control-twin]") {
  auto t = make(one_queue(ServiceTime::exponential(1), 300));
  json act = {{"generation", 1},
              {"ttl_ms", 1500},
              {"services", {{"default/s1", {{"classes", {{"premium", {{"rate", 0.0}}}}}}}}}};
  apply_ok(*t, act);
  json ws = t->run(3);
  Totals w0 = totals(json::array({ws[0]}), "all"), w2 = totals(json::array({ws[2]}), "all");
  CHECK(w0.admitted == 0);
  CHECK(w2.blocked == 0);  // the action expired at 1.5 s
  CHECK(w2.admitted == w2.offered);
}

TEST_CASE("twin: weights 60/30/10 route within 2 %, by ip:port or pod name", "[control-twin]") {
  TwinConfig c;
  c.classes = {"premium", "freemium"};
  c.services = {{"default/s1",
                 {{"a", "", 1, ServiceTime::exponential(0.1)},
                  {"b", "", 1, ServiceTime::exponential(0.1)},
                  {"c", "", 1, ServiceTime::exponential(0.1)}},
                 {{"premium", Pattern::constant(2000)}, {"freemium", Pattern::constant(1000)}}}};
  auto t = make(c);
  json w = {{"10.1.0.1:8080", 0.6}, {"b", 0.3}, {"c", 0.1}};
  json act = {
      {"generation", 5},
      {"ttl_ms", 60000},
      {"services", {{"default/s1", {{"classes", {{"premium", {{"weights", w}}}, {"freemium", {{"weights", w}}}}}}}}}};
  apply_ok(*t, act);
  json ws = t->run(5);
  double n = static_cast<double>(totals(ws, "all").admitted);
  CHECK(n > 14000);
  CHECK(static_cast<double>(totals(ws, "10.1.0.1:8080").offered) / n == Approx(0.6).margin(0.02));
  CHECK(static_cast<double>(totals(ws, "10.1.0.2:8080").offered) / n == Approx(0.3).margin(0.02));
  CHECK(static_cast<double>(totals(ws, "10.1.0.3:8080").offered) / n == Approx(0.1).margin(0.02));
  // Per class rows are kept apart.
  CHECK(static_cast<double>(totals(ws, "all", "freemium").offered) / n == Approx(1.0 / 3).margin(0.02));
  // Without an action: uniform (kube-proxy's choice).
  t->clear();
  json u = t->run(5);
  double m = static_cast<double>(totals(u, "all").admitted);
  CHECK(static_cast<double>(totals(u, "10.1.0.3:8080").offered) / m == Approx(1.0 / 3).margin(0.02));
}

TEST_CASE("twin: a rate pattern and a backend losing capacity", "[control-twin]") {
  TwinConfig c = one_queue(ServiceTime::exponential(5), 0);
  c.services[0].load["premium"] = Pattern{{{0, 50}, {2, 150}, {4, 0}}};
  auto t = make(c);
  json ws = t->run(6);
  auto offered = [&](int i) { return totals(json::array({ws[i]}), "all").offered; };
  CHECK(offered(0) + offered(1) == Approx(100).margin(35));
  CHECK(offered(2) + offered(3) == Approx(300).margin(60));
  CHECK(offered(4) + offered(5) == 0);
  REQUIRE(t->set_service_time("default/s1", "s1-a", ServiceTime::exponential(20)).ok());
  REQUIRE_FALSE(t->set_service_time("default/s1", "nope", ServiceTime::exponential(20)).ok());
  REQUIRE(t->set_load("default/s1", "premium", Pattern::constant(25)).ok());
  Totals slow = totals(t->run(200), "all");
  // mu now 50/s, lambda 25/s: mean 1/(50 - 25) = 40 ms.
  CHECK(slow.sum_ns / static_cast<double>(slow.completed) / 1e6 == Approx(40).epsilon(0.1));
}

TEST_CASE("twin: bad configs name the field", "[control-twin]") {
  TwinConfig c = one_queue(ServiceTime::exponential(5), 10);
  c.services[0].backends[0].servers = 0;
  auto r = Twin::create(c);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().what.find("services[0].backends[0].servers must be >= 1") != std::string::npos);
  c = one_queue(ServiceTime::exponential(5), 10);
  c.services[0].load["gold"] = Pattern::constant(1);
  r = Twin::create(c);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().what.find("services[0].load names class \"gold\"") != std::string::npos);
  c = one_queue(ServiceTime::exponential(0), 10);
  CHECK_FALSE(Twin::create(c).ok());
}

TEST_CASE("twin: at least 1 M simulated requests per second", "[control-twin]") {
  // 4 services x 3 backends x 2 classes at 50 k requests/s each service (10 s simulated = 2 M requests).
  TwinConfig c;
  c.classes = {"premium", "freemium"};
  for (int s = 0; s < 4; ++s) {
    TwinService ts{"default/s" + std::to_string(s), {}, {}};
    for (int b = 0; b < 3; ++b) ts.backends.push_back({"", "", 1, ServiceTime::exponential(0.04)});
    ts.load = {{"premium", Pattern::constant(30000)}, {"freemium", Pattern::constant(20000)}};
    c.services.push_back(ts);
  }
  auto t = make(c);
  auto t0 = std::chrono::steady_clock::now();
  t->run(10);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double rate = static_cast<double>(t->requests()) / s;
  std::printf("twin speed: %llu requests in %.3f s = %.2f M requests/s\n",
              static_cast<unsigned long long>(t->requests()), s, rate / 1e6);
  CHECK(t->requests() > 1900000);
  CHECK(rate > 1e6);
}
