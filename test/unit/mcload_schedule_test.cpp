// SPDX-License-Identifier: Apache-2.0
// mcload's rate patterns and arrival schedules.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "mcload/schedule.h"

using namespace mcload;

namespace {

std::vector<double> all(Schedule s) {
  std::vector<double> t;
  while (auto x = s.next()) t.push_back(*x);
  return t;
}

std::vector<int> per_window(const std::vector<double>& t, double width, int n) {
  std::vector<int> c(static_cast<size_t>(n));
  for (double x : t) {
    auto i = static_cast<size_t>(x / width);
    if (i < c.size()) ++c[i];
  }
  return c;
}

double mean(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

double var(const std::vector<double>& v) {
  double m = mean(v), s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return s / static_cast<double>(v.size() - 1);
}

}  // namespace

TEST_CASE("constant arrivals at a constant rate are evenly spaced", "[mcload-schedule]") {
  auto t = all(Schedule(Pattern::constant(1000), Arrival::Constant, 1, 2.0));
  REQUIRE(t.size() == 2000);
  CHECK(t.front() == 0.0);
  for (size_t i = 1; i < t.size(); ++i) REQUIRE(t[i] - t[i - 1] == Approx(0.001).margin(1e-9));
  for (size_t i = 1; i < t.size(); ++i) REQUIRE(t[i] > t[i - 1]);
}

TEST_CASE("Poisson arrivals: count per window has mean = variance = rate x width", "[mcload-schedule]") {
  const double rate = 2000, dur = 200;
  auto t = all(Schedule(Pattern::constant(rate), Arrival::Poisson, 12345, dur));
  CHECK(static_cast<double>(t.size()) == Approx(rate * dur).epsilon(0.01));
  // Counts in 100 ms windows: Poisson(200): mean 200, variance 200.
  auto c = per_window(t, 0.1, 2000);
  std::vector<double> cd(c.begin(), c.end());
  CHECK(mean(cd) == Approx(200).epsilon(0.01));
  CHECK(var(cd) / mean(cd) == Approx(1.0).epsilon(0.08));  // dispersion index of a Poisson process
  // Gaps: exponential, mean 1/rate, coefficient of variation 1.
  std::vector<double> gaps;
  for (size_t i = 1; i < t.size(); ++i) gaps.push_back(t[i] - t[i - 1]);
  CHECK(mean(gaps) == Approx(1.0 / rate).epsilon(0.01));
  CHECK(std::sqrt(var(gaps)) / mean(gaps) == Approx(1.0).epsilon(0.02));
  // The same seed, the same schedule; another seed, another one.
  auto again = all(Schedule(Pattern::constant(rate), Arrival::Poisson, 12345, 1.0));
  auto other = all(Schedule(Pattern::constant(rate), Arrival::Poisson, 54321, 1.0));
  CHECK(std::equal(again.begin(), again.end(), t.begin()));
  CHECK(again != other);
}

TEST_CASE("steps: each step's count is its rate x length; the last rate holds", "[mcload-schedule]") {
  std::string err;
  auto p = Pattern::parse("steps:100@5s,300@2s,50@500ms", 0, err);
  REQUIRE(p);
  CHECK(p->rate_at(0) == 100);
  CHECK(p->rate_at(4.999) == 100);
  CHECK(p->rate_at(5.0) == 300);
  CHECK(p->rate_at(7.2) == 50);
  CHECK(p->rate_at(100) == 50);  // the last rate holds
  CHECK(p->expected(7.5) == Approx(100 * 5 + 300 * 2 + 50 * 0.5));
  auto t = all(Schedule(*p, Arrival::Constant, 1, 9.5));
  auto count = [&](double a, double b) {
    return std::count_if(t.begin(), t.end(), [&](double x) { return x >= a && x < b; });
  };
  CHECK(count(0, 5) == 500);
  CHECK(count(5, 7) == 600);
  CHECK(count(7, 9.5) == 125);
  auto tp = all(Schedule(*p, Arrival::Poisson, 3, 7.0));
  auto cp = [&](double a, double b) {
    return std::count_if(tp.begin(), tp.end(), [&](double x) { return x >= a && x < b; });
  };
  CHECK(std::abs(cp(0, 5) - 500) < 5 * std::sqrt(500));
  CHECK(std::abs(cp(5, 7) - 600) < 5 * std::sqrt(600));
}

TEST_CASE("sinusoid: rate follows mean + amp sin(2 pi t / period), counts follow its integral", "[mcload-schedule]") {
  std::string err;
  auto p = Pattern::parse("sin:1000,800,4s", 0, err);
  REQUIRE(p);
  CHECK(p->rate_at(1.0) == Approx(1800));
  CHECK(p->rate_at(3.0) == Approx(200));
  CHECK(p->expected(4.0) == Approx(4000).epsilon(1e-3));                   // a whole period: mean x period
  CHECK(p->expected(2.0) == Approx(2000 + 800 * 4 / M_PI).epsilon(2e-3));  // first half: mean x 2 s + amp x P / pi
  auto t = all(Schedule(*p, Arrival::Constant, 1, 8.0));
  CHECK(std::abs(static_cast<double>(t.size()) - 8000) <= 2);
  auto c = per_window(t, 0.5, 16);
  for (int w = 0; w < 16; ++w) {
    double want = p->expected(0.5 * (w + 1)) - p->expected(0.5 * w);
    INFO("window " << w);
    CHECK(std::abs(c[static_cast<size_t>(w)] - want) <= 2);
  }
  auto neg = Pattern::sinusoid(100, 300, 2.0);  // never below 0
  CHECK(neg.rate_at(1.5) == 0);
}

TEST_CASE("file: time,rate CSV rows hold until the next row", "[mcload-schedule]") {
  std::string err;
  auto p = Pattern::from_csv("time_s,rate\n# warm\n0,200\n1.5,0\n2,400\n", err);
  REQUIRE(p);
  CHECK(p->rate_at(1.0) == 200);
  CHECK(p->rate_at(1.7) == 0);
  CHECK(p->rate_at(9) == 400);
  auto t = all(Schedule(*p, Arrival::Constant, 1, 3.0));
  CHECK(t.size() == 300 + 400);
  CHECK(std::none_of(t.begin(), t.end(), [](double x) { return x >= 1.5 && x < 2.0; }));
  // Through a file on disk.
  char path[] = "/tmp/mcload_pattern_XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  FILE* f = fdopen(fd, "w");
  std::fputs("0,10\n1,20\n", f);
  std::fclose(f);
  auto pf = Pattern::parse(std::string("file:") + path, 0, err);
  std::remove(path);
  REQUIRE(pf);
  CHECK(pf->expected(3) == Approx(10 + 20 * 2));
}

TEST_CASE("bad pattern specs say what a good one looks like", "[mcload-schedule]") {
  std::string err;
  CHECK_FALSE(Pattern::parse("steps:100@", 0, err));
  CHECK(err.find("steps:100@5s,200@5s") != std::string::npos);
  CHECK_FALSE(Pattern::parse("sin:1,2", 0, err));
  CHECK(err.find("sin:MEAN,AMPLITUDE,PERIOD") != std::string::npos);
  CHECK_FALSE(Pattern::parse("constant", 0, err));
  CHECK(err.find("--rate") != std::string::npos);
  CHECK_FALSE(Pattern::parse("zigzag", 10, err));
  CHECK(err.find("unknown --pattern") != std::string::npos);
  CHECK_FALSE(Pattern::parse("file:/nonexistent/x.csv", 0, err));
  CHECK(err.find("No such file") != std::string::npos);
  CHECK_FALSE(Pattern::from_csv("0,1\n0.5,x\n", err));
  CHECK(err.find("line 2") != std::string::npos);
  CHECK_FALSE(Pattern::from_csv("1,5\n", err));
  CHECK(err.find("start at 0") != std::string::npos);
}
