// SPDX-License-Identifier: Apache-2.0
// The histogram contract, percentiles against exact ones, and windows from snapshots.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "obj_fixture.h"
#include "meshcut/obj/windows.h"

using namespace meshcut::obj;

namespace {

using testing::fixture;

constexpr uint64_t kSec = 1000000000ull;

}  // namespace

TEST_CASE("histogram buckets: lower(bucket(v)) <= v < lower(bucket(v)+1), at most 1/16 wide", "[obj-windows]") {
  std::vector<uint64_t> vs;
  for (uint64_t v = 0; v < 70000; v += 7) vs.push_back(v);
  std::mt19937_64 rng(1);
  for (int i = 0; i < 200000; ++i) vs.push_back(rng() >> (rng() % 64));
  for (int e = 0; e < 40; ++e)
    for (int64_t d = -2; d <= 2; ++d) vs.push_back(static_cast<uint64_t>(std::max<int64_t>(0, (1ll << e) + d)));
  const uint64_t top = mc_obj_hist_lower_ns(MC_OBJ_HIST_BUCKETS - 1);
  CHECK(top == (1ull << 34));
  for (uint64_t v : vs) {
    uint32_t b = mc_obj_hist_bucket(v);
    REQUIRE(b < MC_OBJ_HIST_BUCKETS);
    INFO("v " << v << " bucket " << b);
    CHECK(mc_obj_hist_lower_ns(b) <= v);
    if (b + 1 < MC_OBJ_HIST_BUCKETS) {
      CHECK(v < mc_obj_hist_lower_ns(b + 1));
    } else {
      CHECK(v >= top);
    }
  }
  for (uint32_t b = 0; b + 1 < MC_OBJ_HIST_BUCKETS; ++b) {
    CHECK(mc_obj_hist_lower_ns(b) < mc_obj_hist_lower_ns(b + 1));
    CHECK(mc_obj_hist_bucket(mc_obj_hist_lower_ns(b)) == b);
    if (mc_obj_hist_lower_ns(b) >= 16 * 1024) {
      INFO("bucket " << b);
      CHECK(static_cast<double>(hist_upper_ns(b) - mc_obj_hist_lower_ns(b)) <=
            static_cast<double>(mc_obj_hist_lower_ns(b)) / 16.0);
    }
  }
}

TEST_CASE("percentile_ns within 5% of the exact percentile, 100 us .. 10 s", "[obj-windows]") {
  std::mt19937_64 rng(42);
  for (int trial = 0; trial < 20; ++trial) {
    // Log-uniform samples over a random sub-range of [100 us, 10 s].
    double lo = std::log(1e5) + (trial % 5) * 1.5, hi = std::min(std::log(1e10), lo + 3 + trial % 4);
    std::uniform_real_distribution<double> u(lo, hi);
    std::vector<uint64_t> xs(5000 + 1000 * trial);
    std::vector<uint32_t> hist(MC_OBJ_HIST_BUCKETS, 0);
    for (auto& x : xs) {
      x = static_cast<uint64_t>(std::exp(u(rng)));
      ++hist[mc_obj_hist_bucket(x)];
    }
    std::sort(xs.begin(), xs.end());
    for (double q : {0.5, 0.9, 0.95, 0.99, 0.999, 1.0}) {
      size_t rank = std::max<size_t>(1, static_cast<size_t>(std::ceil(q * static_cast<double>(xs.size()))));
      double want = static_cast<double>(xs[rank - 1]);
      double got = percentile_ns(hist.data(), q);
      INFO("trial " << trial << " q " << q << " exact " << want << " got " << got);
      CHECK(std::fabs(got - want) <= 0.05 * want);
    }
  }
  std::vector<uint32_t> empty(MC_OBJ_HIST_BUCKETS, 0);
  CHECK(std::isnan(percentile_ns(empty.data(), 0.5)));
  // One sample: every percentile is its bucket's middle.
  empty[mc_obj_hist_bucket(1000000)] = 1;
  uint32_t b = mc_obj_hist_bucket(1000000);
  double mid =
      static_cast<double>(mc_obj_hist_lower_ns(b) + (mc_obj_hist_lower_ns(b + 1) - mc_obj_hist_lower_ns(b)) / 2);
  CHECK(percentile_ns(empty.data(), 0.01) == mid);
  CHECK(percentile_ns(empty.data(), 1.0) == mid);
}

TEST_CASE("windows: deltas, rates, percentiles, history and vanished services", "[obj-windows]") {
  Services s = fixture();
  WindowStore ws(3);
  std::vector<mc_obj_stat> rows(MC_OBJ_STAT_ROWS);
  ws.add_snapshot(10 * kSec, rows, s);  // baseline only
  CHECK(ws.last_seq() == 0);
  CHECK(ws.windows_since(0, 10)["windows"].empty());

  const uint32_t r_all = mc_obj_stat_index(0, MC_OBJ_BACKEND_ALL, 1);  // bed/s1, all, premium
  const uint32_t r_be = mc_obj_stat_index(0, 1, 2);                    // bed/s1, 10.0.2.7:8080, freemium
  rows[r_all].offered = 120;
  rows[r_all].admitted = 100;
  rows[r_all].blocked = 20;
  rows[r_all].conns = 100;
  rows[r_all].completed = 100;
  for (int i = 0; i < 100; ++i) {
    uint64_t ns = (i < 90 ? 2 : 40) * 1000000ull;  // 90 at 2 ms, 10 at 40 ms
    ++rows[r_all].req_hist[mc_obj_hist_bucket(ns)];
    rows[r_all].req_sum_ns += ns;
  }
  rows[r_be].offered = 5;
  rows[r_be].req_hist[3] = 0xfffffff0u;  // wraps in the next snapshot
  ws.add_snapshot(12 * kSec, rows, s);   // a 2 s window
  REQUIRE(ws.last_seq() == 1);
  auto j = ws.windows_since(0, 10);
  REQUIRE(j["windows"].size() == 1);
  auto w = j["windows"][0];
  CHECK(w["seq"] == 1);
  CHECK(w["t_start_ns"] == 10 * kSec);
  CHECK(w["duration_s"] == 2.0);
  REQUIRE(w["rows"].size() == 2);  // in row order: backend 1 before the ALL row
  auto r = w["rows"][1];
  CHECK(r["service"] == "bed/s1");
  CHECK(r["backend"] == "all");
  CHECK(r["class"] == "premium");
  CHECK(r["delta"]["offered"] == 120);
  CHECK(r["rate"]["offered"] == 60.0);
  CHECK(r["rate"]["blocked"] == 10.0);
  CHECK(r["rate"]["completed"] == 50.0);
  CHECK(r["latency_ms"]["count"] == 100);
  CHECK(r["latency_ms"]["mean"].get<double>() == Approx(5.8));
  CHECK(r["latency_ms"]["p50"].get<double>() == Approx(2.0).epsilon(0.04));
  CHECK(r["latency_ms"]["p90"].get<double>() == Approx(2.0).epsilon(0.04));
  CHECK(r["latency_ms"]["p95"].get<double>() == Approx(40.0).epsilon(0.04));
  CHECK(r["latency_ms"]["p99"].get<double>() == Approx(40.0).epsilon(0.04));
  CHECK(r["latency_ms"]["max_bucket"].get<double>() >= 40.0);
  CHECK(w["rows"][0]["backend"] == "10.0.2.7:8080");
  CHECK(w["rows"][0]["class"] == "freemium");

  // The u32 bucket wraps: the delta is still 0x20.
  rows[r_be].req_hist[3] = 0x10u;
  ws.add_snapshot(13 * kSec, rows, s);
  auto w2 = ws.windows_since(1, 10)["windows"];
  REQUIRE(w2.size() == 1);
  REQUIRE(w2[0]["rows"].size() == 1);
  CHECK(w2[0]["rows"][0]["latency_ms"]["count"] == 0x20);

  // A snapshot not later than the last is ignored; history keeps the last 3.
  ws.add_snapshot(13 * kSec, rows, s);
  CHECK(ws.last_seq() == 2);
  ws.add_snapshot(14 * kSec, rows, s);
  ws.add_snapshot(15 * kSec, rows, s);
  CHECK(ws.last_seq() == 4);
  auto all = ws.windows_since(0, 10);
  CHECK(all["oldest_seq"] == 2);
  CHECK(all["missed"] == 1);
  CHECK(all["windows"].size() == 3);
  CHECK(ws.windows_since(0, 2)["windows"].size() == 2);
  CHECK(ws.windows_since(4, 10)["windows"].empty());

  // bed/s1 vanishes and bed/s9 takes its id 0: s1's rows are not reported as s9's.
  auto next = parse_services(R"({"kind":"List","items":[
    {"kind":"Service","metadata":{"name":"s9","namespace":"bed"},"spec":{"clusterIP":"10.96.0.19","ports":[{"port":80}]}},
    {"kind":"Service","metadata":{"name":"s2","namespace":"bed"},"spec":{"clusterIP":"10.96.0.12","ports":[{"port":80}]}}]})");
  REQUIRE(next.ok());
  assign_ids(*next, &s);
  REQUIRE(next->find("bed/s9")->id == 0);
  rows[r_all].offered += 50;
  ws.add_snapshot(16 * kSec, rows, *next);
  CHECK(ws.windows().back().rows.empty());
  rows[r_all].offered += 7;  // now counted as s9's
  ws.add_snapshot(17 * kSec, rows, *next);
  REQUIRE(ws.windows().back().rows.size() == 1);
  CHECK(ws.windows().back().rows[0].service == "bed/s9");
  CHECK(ws.windows().back().rows[0].delta[0] == 7);
}

TEST_CASE("prometheus: counters of the last snapshot, latency gauges of the last window", "[obj-windows]") {
  Services s = fixture();
  WindowStore ws(10);
  std::vector<mc_obj_stat> rows(MC_OBJ_STAT_ROWS);
  ws.add_snapshot(kSec, rows, s);
  const uint32_t r = mc_obj_stat_index(1, MC_OBJ_BACKEND_ALL, 0);
  rows[r].offered = 10;
  rows[r].requests = 9;
  rows[r].completed = 8;
  rows[r].req_hist[mc_obj_hist_bucket(3000000)] = 8;
  ws.add_snapshot(2 * kSec, rows, s);
  std::string p = ws.prometheus(s);
  INFO(p);
  CHECK(p.find("meshcut_obj_requests_total{service=\"bed/s2\",backend=\"all\",class=\"default\"} 9\n") !=
        std::string::npos);
  CHECK(p.find("meshcut_obj_offered_total{service=\"bed/s2\",backend=\"all\",class=\"default\"} 10\n") !=
        std::string::npos);
  CHECK(p.find("meshcut_obj_latency_seconds{service=\"bed/s2\",backend=\"all\",class=\"default\",percentile=\"99\"} "
               "0.00") != std::string::npos);
  // One HELP and one TYPE per metric.
  size_t helps = 0, pos = 0;
  while ((pos = p.find("# HELP meshcut_obj_requests_total", pos)) != std::string::npos) ++helps, ++pos;
  CHECK(helps == 1);
  CHECK(p.find("# TYPE meshcut_obj_latency_seconds gauge") != std::string::npos);
  CHECK(p.find("meshcut_obj_window_seq 1\n") != std::string::npos);
}

TEST_CASE("merge_nodes and concat_windows: histograms merged, percentiles recomputed, rates", "[obj-windows]") {
  Services s = fixture();
  const uint32_t r_all = mc_obj_stat_index(0, MC_OBJ_BACKEND_ALL, 1);  // bed/s1, all, premium
  // Node A: 90 requests at 2 ms; node B: 10 requests at 40 ms, both in 1 s.
  // Averaging their p95s would give (90 * 2 + 10 * 40) / 100 = 5.8 ms; the
  // merged histogram's p95 is 40 ms.
  auto node = [&](int n, uint64_t ms, uint64_t t0) {
    WindowStore ws(4);
    std::vector<mc_obj_stat> rows(MC_OBJ_STAT_ROWS);
    ws.add_snapshot(t0, rows, s);
    rows[r_all].offered = rows[r_all].admitted = rows[r_all].conns = rows[r_all].completed = n;
    rows[r_all].req_hist[mc_obj_hist_bucket(ms * 1000000ull)] = n;
    rows[r_all].req_sum_ns = n * ms * 1000000ull;
    ws.add_snapshot(t0 + kSec, rows, s);
    rows[r_all].offered += n;  // a second window: n more offered, nothing else
    ws.add_snapshot(t0 + 2 * kSec, rows, s);
    return ws.windows_since(0, 10)["windows"];
  };
  auto a = node(90, 2, 10 * kSec), b = node(10, 40, 10 * kSec + kSec / 3);
  REQUIRE(a.size() == 2);
  REQUIRE(a[0]["rows"][0]["latency_ms"]["hist"].size() == 1);
  CHECK(a[0]["rows"][0]["latency_ms"]["hist"][0][1] == 90);

  auto m = merge_nodes({a[0], b[0]});
  CHECK(m["sources"] == 2);
  REQUIRE(m["rows"].size() == 1);
  auto r = m["rows"][0];
  CHECK(r["service"] == "bed/s1");
  CHECK(r["class"] == "premium");
  CHECK(r["delta"]["completed"] == 100);
  CHECK(r["rate"]["offered"] == 100.0);  // 90/s + 10/s
  CHECK(r["latency_ms"]["count"] == 100);
  CHECK(r["latency_ms"]["p50"].get<double>() == Approx(2.0).epsilon(0.04));
  CHECK(r["latency_ms"]["p95"].get<double>() == Approx(40.0).epsilon(0.04));
  CHECK(r["latency_ms"]["mean"].get<double>() == Approx(5.8));

  // Node A read late: its two windows are one 2 s window, 180 offered -> 90/s.
  auto c = concat_windows({a[0], a[1]});
  CHECK(c["duration_s"] == 2.0);
  REQUIRE(c["rows"].size() == 1);
  CHECK(c["rows"][0]["delta"]["offered"] == 180);
  CHECK(c["rows"][0]["rate"]["offered"] == 90.0);
  CHECK(c["rows"][0]["rate"]["completed"] == 45.0);
  CHECK(c["t_start_ns"] == 10 * kSec);
  CHECK(c["t_end_ns"] == 12 * kSec);

  // Not windows: skipped, nothing thrown.
  auto e = merge_nodes({nlohmann::json::array(), nlohmann::json{{"rows", 3}}});
  CHECK(e["sources"] == 0);
  CHECK(e["rows"].empty());
}
