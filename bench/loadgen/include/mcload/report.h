// SPDX-License-Identifier: Apache-2.0
// mcload's bookkeeping: per-second windows merged into the run's totals, the
// "cannot keep up" verdict, and the JSON / CSV it writes. Pure logic (the
// shell passes times in), included by mcload and its unit tests.
//
// Memory is bounded: one open window of histograms plus the run's; a closed
// second keeps only its summary row.
#pragma once

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mcload/histogram.h"

namespace mcload {

enum class Err { Connect, Reset, Timeout, Parse, Unsent };
const char* err_name(Err e);

struct Counts {
  uint64_t scheduled = 0;  // intended send times that fell in the window
  uint64_t sent = 0;       // requests whose bytes went out (or whose connect began, per request)
  uint64_t completed = 0;  // responses read in full (any status)
  uint64_t ok = 0;         // ... with a 2xx status
  uint64_t non2xx = 0;
  uint64_t errors = 0;  // connect, reset, timeout, parse, unsent
  std::map<std::string, uint64_t> by_error;
  uint64_t bytes = 0;         // response body bytes
  uint64_t max_lag_ns = 0;    // how late the sender noticed an intended time
  uint64_t max_queue_ns = 0;  // longest wait for a free connection
  uint64_t queued = 0;        // requests that had to wait for a connection
  void add(const Counts& o);
};

struct Window {
  Counts c;
  Histogram latency;  // from the intended send time (no coordinated omission)
  Histogram service;  // from the actual send
};

struct Limits {
  double min_rate_fraction = 0.95;   // achieved sends / target below this: cannot keep up
  uint64_t max_lag_ns = 10'000'000;  // sender lag beyond this: cannot keep up
};

class Recorder {
 public:
  // Events, keyed by the second of the measured run they fall in (intended
  // time for scheduled, the event's own time otherwise); negative seconds
  // (the warm-up) are dropped (nullptr). An event for a second already closed
  // goes straight into the run's totals.
  Window* at(int64_t second);
  // Close every second before SECOND: rows are final, histograms merged.
  void close_before(int64_t second);
  void finish() { close_before(INT64_MAX); }

  const Window& run() const { return run_; }

  struct Row {
    int64_t second;
    Counts c;
    uint64_t lat[6];  // p50 p90 p99 p99.9 max  mean
    uint64_t svc[3];  // p50 p99 max
  };
  const std::vector<Row>& rows() const { return rows_; }

 private:
  std::map<int64_t, Window> open_;
  std::vector<Row> rows_;
  Window run_;
};

struct Verdict {
  bool kept_up = true;
  std::vector<std::string> reasons;  // one line each, with the numbers and a hint
};

// TARGET: requests the schedule intended in the measured run; DURATION in s.
Verdict judge(const Counts& run, uint64_t target, double duration_s, const Limits& lim, bool pool_mode, unsigned conns);

nlohmann::json histogram_json(const Histogram& h);  // in µs: p50 p90 p99 p99_9 max mean min count
void write_csv(std::ostream& o, const std::vector<Recorder::Row>& rows, const std::vector<double>& target_rate);

}  // namespace mcload
