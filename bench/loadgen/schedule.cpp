// SPDX-License-Identifier: Apache-2.0
#include "mcload/schedule.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <numbers>
#include <sstream>

namespace mcload {

namespace {

constexpr double kSinStep = 1e-3;  // seconds: the sinusoid is integrated in 1 ms pieces

std::string trim(std::string s) {
  auto sp = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!s.empty() && sp(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && sp(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

std::optional<double> number(const std::string& s) {
  std::string t = trim(s);
  double v = 0;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec != std::errc{} || p != t.data() + t.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

// "5s", "500ms", "5" (seconds)
std::optional<double> seconds(std::string s) {
  s = trim(s);
  double scale = 1.0;
  if (s.size() > 2 && s.ends_with("ms")) {
    scale = 1e-3;
    s.resize(s.size() - 2);
  } else if (s.size() > 1 && s.ends_with("s")) {
    s.pop_back();
  }
  auto v = number(s);
  if (!v) return std::nullopt;
  return *v * scale;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  if (!s.empty() && s.back() == sep) out.emplace_back();
  return out;
}

}  // namespace

Pattern Pattern::constant(double rate) {
  Pattern p;
  p.steps_ = {{rate, 0}};
  p.label_ = "constant";
  return p;
}

Pattern Pattern::steps(std::vector<Step> steps) {
  Pattern p;
  p.steps_ = std::move(steps);
  p.label_ = "steps";
  return p;
}

Pattern Pattern::sinusoid(double mean, double amplitude, double period_s) {
  Pattern p;
  p.kind_ = Kind::Sinusoid;
  p.mean_ = mean;
  p.amp_ = amplitude;
  p.period_ = period_s;
  p.label_ = "sin";
  return p;
}

std::optional<Pattern> Pattern::from_csv(const std::string& text, std::string& err) {
  std::vector<std::pair<double, double>> rows;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    auto f = split(line, ',');
    auto t = f.size() == 2 ? number(f[0]) : std::nullopt;
    auto r = f.size() == 2 ? number(f[1]) : std::nullopt;
    if (!t || !r) {
      if (rows.empty() && n == 1) continue;  // a header line such as "time_s,rate"
      err = "line " + std::to_string(n) + ": expected \"time_s,rate\" (two numbers), got \"" + line + "\"";
      return std::nullopt;
    }
    if (*r < 0) {
      err = "line " + std::to_string(n) + ": negative rate";
      return std::nullopt;
    }
    if ((rows.empty() && *t != 0) || (!rows.empty() && *t <= rows.back().first)) {
      err = "line " + std::to_string(n) + ": times must start at 0 and increase";
      return std::nullopt;
    }
    rows.emplace_back(*t, *r);
  }
  if (rows.empty()) {
    err = "no \"time_s,rate\" rows";
    return std::nullopt;
  }
  std::vector<Step> st;
  for (size_t i = 0; i < rows.size(); ++i)
    st.push_back({rows[i].second, i + 1 < rows.size() ? rows[i + 1].first - rows[i].first : 0});
  Pattern p = steps(std::move(st));
  p.label_ = "file";
  return p;
}

std::optional<Pattern> Pattern::parse(const std::string& spec, double rate, std::string& err) {
  if (spec.empty() || spec == "constant") {
    if (!(rate > 0)) {
      err = "--rate must be > 0 for the constant pattern";
      return std::nullopt;
    }
    return constant(rate);
  }
  auto colon = spec.find(':');
  std::string kind = spec.substr(0, colon);
  std::string body = colon == std::string::npos ? "" : spec.substr(colon + 1);
  if (kind == "steps") {
    std::vector<Step> st;
    for (const auto& item : split(body, ',')) {
      auto at = item.find('@');
      auto r = at == std::string::npos ? std::nullopt : number(item.substr(0, at));
      auto d = at == std::string::npos ? std::nullopt : seconds(item.substr(at + 1));
      if (!r || !d || *r < 0 || *d <= 0) {
        err = "bad step \"" + item + "\" in --pattern: expected RATE@SECONDS, e.g. steps:100@5s,200@5s";
        return std::nullopt;
      }
      st.push_back({*r, *d});
    }
    if (st.empty()) {
      err = "--pattern steps: needs at least one RATE@SECONDS, e.g. steps:100@5s,200@5s";
      return std::nullopt;
    }
    return steps(std::move(st));
  }
  if (kind == "sin") {
    auto f = split(body, ',');
    auto m = f.size() == 3 ? number(f[0]) : std::nullopt;
    auto a = f.size() == 3 ? number(f[1]) : std::nullopt;
    auto per = f.size() == 3 ? seconds(f[2]) : std::nullopt;
    if (!m || !a || !per || *m <= 0 || *a < 0 || *per <= 0) {
      err = "bad --pattern \"" + spec + "\": expected sin:MEAN,AMPLITUDE,PERIOD, e.g. sin:500,200,10s";
      return std::nullopt;
    }
    return sinusoid(*m, *a, *per);
  }
  if (kind == "file") {
    FILE* f = std::fopen(body.c_str(), "r");
    if (!f) {
      err = "couldn't open --pattern file '" + body + "': " + std::strerror(errno) + " (" + std::to_string(errno) + ")";
      return std::nullopt;
    }
    std::string text;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    std::fclose(f);
    std::string e2;
    auto p = from_csv(text, e2);
    if (!p) err = "--pattern file '" + body + "': " + e2;
    return p;
  }
  err = "unknown --pattern \"" + spec + "\": use constant, steps:R@Ds,..., sin:MEAN,AMP,PERIOD or file:PATH";
  return std::nullopt;
}

double Pattern::rate_at(double t) const {
  if (kind_ == Kind::Sinusoid) return std::max(0.0, mean_ + amp_ * std::sin(2 * std::numbers::pi * t / period_));
  double start = 0;
  for (size_t i = 0; i < steps_.size(); ++i) {
    if (i + 1 == steps_.size() || t < start + steps_[i].seconds) return steps_[i].rate;
    start += steps_[i].seconds;
  }
  return 0;
}

double Pattern::piece_end(double t) const {
  if (kind_ == Kind::Sinusoid) {
    double e = (std::floor(t / kSinStep) + 1) * kSinStep;
    return e > t ? e : e + kSinStep;  // t/step may round down at a cell's edge
  }
  double start = 0;
  for (size_t i = 0; i + 1 < steps_.size(); ++i) {
    start += steps_[i].seconds;
    if (t < start) return start;
  }
  return INFINITY;
}

double Pattern::piece_rate(double t) const {
  return rate_at(kind_ == Kind::Sinusoid ? (std::floor(t / kSinStep) + 0.5) * kSinStep : t);
}

double Pattern::expected(double t) const {
  double area = 0, x = 0;
  while (x < t) {
    double e = std::min(piece_end(x), t);
    area += piece_rate(x) * (e - x);
    x = e;
  }
  return area;
}

std::string Pattern::describe() const {
  std::ostringstream o;
  if (kind_ == Kind::Sinusoid) {
    o << "sin:" << mean_ << "," << amp_ << "," << period_ << "s";
    return o.str();
  }
  if (label_ == "constant") {
    o << "constant " << steps_[0].rate << "/s";
    return o.str();
  }
  o << label_ << ":";
  for (size_t i = 0; i < steps_.size(); ++i) o << (i ? "," : "") << steps_[i].rate << "@" << steps_[i].seconds << "s";
  return o.str();
}

Schedule::Schedule(Pattern p, Arrival a, uint64_t seed, double end_s)
    : pattern_(std::move(p)), arrival_(a), rng_(seed), end_(end_s) {}

std::optional<double> Schedule::advance() {
  while (cp_t_ < end_) {
    double e = std::min(pattern_.piece_end(cp_t_), end_);
    double r = pattern_.piece_rate(cp_t_);
    if (r > 0 && cp_area_ + r * (e - cp_t_) > target_) {
      double t = cp_t_ + (target_ - cp_area_) / r;
      if (t >= end_) return std::nullopt;
      return t;
    }
    cp_area_ += r * (e - cp_t_);
    cp_t_ = e;
  }
  return std::nullopt;
}

std::optional<double> Schedule::next() {
  // Constant arrivals: the first at t = 0 (or where the rate first is
  // positive), then one per unit of area. Poisson: exponential gaps from 0
  // (so the count in [0, T) is Poisson).
  if (arrival_ == Arrival::Poisson)
    target_ += exp_(rng_);
  else if (!first_)
    target_ += 1.0;
  first_ = false;
  auto t = advance();
  if (!t) cp_t_ = end_;
  return t;
}

}  // namespace mcload
