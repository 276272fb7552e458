// SPDX-License-Identifier: Apache-2.0
// mcload's histogram against the exact nearest-rank percentiles of sorted samples.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "mcload/histogram.h"

using mcload::Histogram;

namespace {

// The nearest-rank percentile, as mctest.pct defines it.
uint64_t exact(std::vector<uint64_t> xs, double p) {
  std::sort(xs.begin(), xs.end());
  auto rank = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(xs.size())));
  rank = std::clamp<uint64_t>(rank, 1, xs.size());
  return xs[rank - 1];
}

void check_close(const Histogram& h, const std::vector<uint64_t>& xs) {
  for (double p : {0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0}) {
    uint64_t want = exact(xs, p);
    uint64_t got = h.percentile(p);
    INFO("p" << p << " exact " << want << " histogram " << got);
    CHECK(got >= want);                                                           // never below
    CHECK(static_cast<double>(got - want) <= static_cast<double>(want) / 128.0);  // at most 1/128 above
  }
  CHECK(h.max() == *std::max_element(xs.begin(), xs.end()));
  CHECK(h.min() == *std::min_element(xs.begin(), xs.end()));
  CHECK(h.count() == xs.size());
}

}  // namespace

TEST_CASE("bucket edges: exact below 256 ns, 128 buckets per octave above, contiguous", "[mcload-hist]") {
  for (uint64_t v = 0; v < 256; ++v) CHECK(Histogram::index_of(v) == static_cast<int>(v));
  for (int i = 0; i + 1 < Histogram::kBuckets; ++i) {
    REQUIRE(Histogram::highest_of(i) + 1 == Histogram::lowest_of(i + 1));
    REQUIRE(Histogram::index_of(Histogram::lowest_of(i)) == i);
    REQUIRE(Histogram::index_of(Histogram::highest_of(i)) == i);
    // Relative width at most 1/128 of the bucket's lowest value (above 256 ns).
    if (i >= 256)
      REQUIRE(static_cast<double>(Histogram::highest_of(i) - Histogram::lowest_of(i)) <=
              static_cast<double>(Histogram::lowest_of(i)) / 128.0);
  }
  CHECK(Histogram::highest_of(Histogram::kBuckets - 1) == Histogram::kMaxValue);
  CHECK(Histogram::kMaxValue > 60'000'000'000ull);  // 60 s fits
}

TEST_CASE("percentiles of random samples match an exact sort within 1/128", "[mcload-hist]") {
  std::mt19937_64 rng(42);
  SECTION("log-normal latencies, 10 us .. seconds") {
    std::lognormal_distribution<double> d(std::log(50'000.0), 1.5);
    std::vector<uint64_t> xs;
    Histogram h;
    for (int i = 0; i < 200'000; ++i) {
      auto v = static_cast<uint64_t>(d(rng));
      xs.push_back(v);
      h.record(v);
    }
    check_close(h, xs);
  }
  SECTION("uniform 1 us .. 60 s") {
    std::uniform_int_distribution<uint64_t> d(1'000, 60'000'000'000ull);
    std::vector<uint64_t> xs;
    Histogram h;
    for (int i = 0; i < 50'000; ++i) {
      xs.push_back(d(rng));
      h.record(xs.back());
    }
    check_close(h, xs);
  }
  SECTION("a few samples") {
    std::vector<uint64_t> xs{12'345, 7, 1'000'000'000, 54'321};
    Histogram h;
    for (auto x : xs) h.record(x);
    check_close(h, xs);
    CHECK(h.percentile(100) == 1'000'000'000);  // clamped to the largest seen
  }
}

TEST_CASE("merged per-second histograms equal one histogram of all samples", "[mcload-hist]") {
  std::mt19937_64 rng(7);
  std::exponential_distribution<double> d(1.0 / 200'000.0);
  Histogram all, run;
  std::vector<uint64_t> xs;
  for (int s = 0; s < 20; ++s) {
    Histogram second;
    for (int i = 0; i < 1000 + 100 * s; ++i) {
      auto v = static_cast<uint64_t>(d(rng)) * static_cast<uint64_t>(1 + s % 3);
      second.record(v);
      all.record(v);
      xs.push_back(v);
    }
    run.merge(second);
  }
  for (double p : {50.0, 90.0, 99.0, 99.9, 100.0}) CHECK(run.percentile(p) == all.percentile(p));
  CHECK(run.count() == all.count());
  CHECK(run.mean() == Approx(all.mean()));
  check_close(run, xs);
}

TEST_CASE("empty, saturated and weighted records", "[mcload-hist]") {
  Histogram h;
  CHECK(h.percentile(99) == 0);
  CHECK(h.count() == 0);
  h.record(Histogram::kMaxValue + 1000);
  CHECK(h.saturated() == 1);
  CHECK(h.percentile(50) >= Histogram::kMaxValue);
  Histogram w;
  w.record(1000, 99);
  w.record(2'000'000, 1);
  CHECK(w.count() == 100);
  CHECK(w.percentile(99) < 1010);
  CHECK(w.percentile(99.5) >= 2'000'000);
}
