// SPDX-License-Identifier: Apache-2.0
#include "mcload/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace mcload {

const char* err_name(Err e) {
  switch (e) {
    case Err::Connect: return "connect";
    case Err::Reset: return "reset";
    case Err::Timeout: return "timeout";
    case Err::Parse: return "parse";
    case Err::Unsent: return "unsent";
  }
  return "?";
}

void Counts::add(const Counts& o) {
  scheduled += o.scheduled;
  sent += o.sent;
  completed += o.completed;
  ok += o.ok;
  non2xx += o.non2xx;
  errors += o.errors;
  for (const auto& [k, v] : o.by_error) by_error[k] += v;
  bytes += o.bytes;
  max_lag_ns = std::max(max_lag_ns, o.max_lag_ns);
  max_queue_ns = std::max(max_queue_ns, o.max_queue_ns);
  queued += o.queued;
}

Window* Recorder::at(int64_t second) {
  if (second < 0) return nullptr;
  if (!rows_.empty() && second <= rows_.back().second) return &run_;
  return &open_[second];
}

void Recorder::close_before(int64_t second) {
  while (!open_.empty() && open_.begin()->first < second) {
    auto node = open_.extract(open_.begin());
    const Window& w = node.mapped();
    // Seconds with nothing at all in between still get a row (a stall shows).
    int64_t from = rows_.empty() ? 0 : rows_.back().second + 1;
    for (int64_t s = from; s < node.key(); ++s) rows_.push_back(Row{s, {}, {}, {}});
    Row r{node.key(), w.c, {}, {}};
    const Histogram& l = w.latency;
    r.lat[0] = l.percentile(50);
    r.lat[1] = l.percentile(90);
    r.lat[2] = l.percentile(99);
    r.lat[3] = l.percentile(99.9);
    r.lat[4] = l.max();
    r.lat[5] = static_cast<uint64_t>(l.mean());
    r.svc[0] = w.service.percentile(50);
    r.svc[1] = w.service.percentile(99);
    r.svc[2] = w.service.max();
    rows_.push_back(r);
    run_.c.add(w.c);
    run_.latency.merge(w.latency);
    run_.service.merge(w.service);
  }
}

nlohmann::json histogram_json(const Histogram& h) {
  auto us = [](uint64_t ns) { return std::round(static_cast<double>(ns) / 10.0) / 100.0; };
  return {{"count", h.count()},
          {"min", us(h.min())},
          {"mean", us(static_cast<uint64_t>(h.mean()))},
          {"p50", us(h.percentile(50))},
          {"p90", us(h.percentile(90))},
          {"p99", us(h.percentile(99))},
          {"p99_9", us(h.percentile(99.9))},
          {"max", us(h.max())}};
}

Verdict judge(const Counts& run, uint64_t target, double duration_s, const Limits& lim, bool pool_mode,
              unsigned conns) {
  Verdict v;
  char buf[512];
  if (target > 0) {
    double frac = static_cast<double>(run.sent) / static_cast<double>(target);
    if (frac < lim.min_rate_fraction) {
      std::snprintf(buf, sizeof buf,
                    "achieved rate %.0f/s is %.1f %% of the target %.0f/s (limit %.0f %%): %llu of %llu requests sent",
                    static_cast<double>(run.sent) / duration_s, 100 * frac, static_cast<double>(target) / duration_s,
                    100 * lim.min_rate_fraction, static_cast<unsigned long long>(run.sent),
                    static_cast<unsigned long long>(target));
      v.reasons.emplace_back(buf);
    }
  }
  if (run.max_lag_ns > lim.max_lag_ns) {
    std::snprintf(buf, sizeof buf, "sender lag %.1f ms beyond the limit %.1f ms (the loop woke too late for a send)",
                  static_cast<double>(run.max_lag_ns) / 1e6, static_cast<double>(lim.max_lag_ns) / 1e6);
    v.reasons.emplace_back(buf);
  }
  if (pool_mode && run.max_queue_ns > lim.max_lag_ns) {
    std::snprintf(buf, sizeof buf,
                  "pool exhausted: all %u connections busy, a request waited %.1f ms for one (%llu requests waited)",
                  conns, static_cast<double>(run.max_queue_ns) / 1e6, static_cast<unsigned long long>(run.queued));
    v.reasons.emplace_back(buf);
  }
  v.kept_up = v.reasons.empty();
  return v;
}

void write_csv(std::ostream& o, const std::vector<Recorder::Row>& rows, const std::vector<double>& target_rate) {
  o << "second,target_rate,scheduled,sent,completed,ok,non2xx,errors,bytes,lat_p50_us,lat_p90_us,lat_p99_us,"
       "lat_p99_9_us,lat_max_us,lat_mean_us,svc_p50_us,svc_p99_us,svc_max_us,max_lag_us,max_queue_us\n";
  auto us = [](uint64_t ns) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f", static_cast<double>(ns) / 1e3);
    return std::string(b);
  };
  for (const auto& r : rows) {
    double tr = r.second >= 0 && static_cast<size_t>(r.second) < target_rate.size()
                    ? target_rate[static_cast<size_t>(r.second)]
                    : 0.0;
    o << r.second << ',' << tr << ',' << r.c.scheduled << ',' << r.c.sent << ',' << r.c.completed << ',' << r.c.ok
      << ',' << r.c.non2xx << ',' << r.c.errors << ',' << r.c.bytes;
    for (auto x : r.lat) o << ',' << us(x);
    for (auto x : r.svc) o << ',' << us(x);
    o << ',' << us(r.c.max_lag_ns) << ',' << us(r.c.max_queue_ns) << '\n';
  }
}

}  // namespace mcload
