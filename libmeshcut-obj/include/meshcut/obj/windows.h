// SPDX-License-Identifier: Apache-2.0
// Counter snapshots of mc_obj_stats (whole-array reads, one per second) turned
// into windows: per non-empty (service, backend, class) row the deltas of every
// counter, rates per second and latency percentiles from the histogram deltas.
// The first snapshot only sets the baseline. Served as JSON (windows since a
// sequence number) and Prometheus text.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "meshcut/obj/abi.h"
#include "meshcut/obj/services.h"

namespace meshcut::obj {

// The q-quantile (0 < q <= 1) of a histogram of MC_OBJ_HIST_BUCKETS buckets:
// rank ceil(q * n) (at least 1), read at the middle of its bucket (the last,
// unbounded bucket: its lower bound). NaN when the histogram is empty.
double percentile_ns(const uint32_t* hist, double q);

// A bucket's upper bound (the next one's lower); the last bucket's lower bound.
uint64_t hist_upper_ns(uint32_t b);

struct LatencySummary {
  uint64_t count = 0;  // samples in the histogram delta
  double p50_ms = 0, p90_ms = 0, p95_ms = 0, p99_ms = 0;
  double max_bucket_ms = 0;  // upper bound of the highest non-empty bucket (the max is below it)
  double mean_ms = 0;        // sum_ns / the counter (completed, conn_done), 0 if none
};
// Every field NaN-free: an empty histogram gives count 0 and zeros.
LatencySummary summarize(const uint32_t* hist, uint64_t n_counted, uint64_t sum_ns);

inline constexpr size_t kStatCounters = 10;
// Names of mc_obj_stat's u64 counters, in field order.
extern const std::array<const char*, kStatCounters> kStatCounterNames;
std::array<uint64_t, kStatCounters> stat_counters(const mc_obj_stat& s);

struct WindowRow {
  uint32_t svc = 0, backend = 0, cls = 0;
  std::string service;       // key
  std::string backend_name;  // ip:port, or "all" (MC_OBJ_BACKEND_ALL)
  std::string class_name;
  std::array<uint64_t, kStatCounters> delta{};
  LatencySummary req, conn;
  // The histogram deltas, sparse: (bucket, count) for every non-empty bucket,
  // ascending. Served as latency_ms.hist / conn_duration_ms.hist so that a
  // reader holding windows of several nodes merges histograms, not percentiles.
  std::vector<std::array<uint32_t, 2>> req_hist, conn_hist;
};

struct Window {
  uint64_t seq = 0;
  uint64_t t_start_ns = 0, t_end_ns = 0;
  std::vector<WindowRow> rows;
};

class WindowStore {
 public:
  explicit WindowStore(size_t max_windows);

  // ROWS: the mc_obj_stats array (MC_OBJ_STAT_ROWS rows; shorter: the rest
  // reads as zero) at monotonic time T_NS. A snapshot not later than the last
  // one is ignored. A row whose service (key) or backend (ip:port) is not the
  // one of the previous snapshot is not reported in this window (its counters
  // belong to something else), and one whose service vanished is dropped.
  void add_snapshot(uint64_t t_ns, std::vector<mc_obj_stat> rows, const Services& services);
  // {"last_seq", "oldest_seq", "missed" (windows after SEQ no longer kept),
  //  "windows": [the windows with seq > SEQ, oldest first, at most MAX]}
  nlohmann::json windows_since(uint64_t seq, size_t max) const;
  uint64_t last_seq() const { return seq_; }
  const std::deque<Window>& windows() const { return windows_; }
  // Counters of the latest snapshot and latency gauges of the last window.
  std::string prometheus(const Services& services) const;

 private:
  size_t max_;
  uint64_t seq_ = 0;
  std::optional<uint64_t> last_t_;
  std::vector<mc_obj_stat> last_;
  std::vector<std::string> row_ids_;  // per row: "service key|backend addr" of the last snapshot ("" unknown)
  std::deque<Window> windows_;
};

nlohmann::json to_json(const Window& w);

// V as a Prometheus label value: backslash, double quote and newline escaped.
std::string prometheus_escape(const std::string& v);

// Windows of several sources as one (the controller's cluster view). Rows are
// matched by (service, backend, class) names; deltas and histograms are
// summed and the percentiles computed again from the merged histogram.
//  - concat_windows: consecutive windows of ONE node (a node read late hands
//    over several): rates are the summed deltas over the summed durations.
//  - merge_nodes: one window per node over about the same second: rates add.
// The result has the window JSON's shape ("seq" 0, "duration_s" the mean,
// "sources" the number merged). Rows or windows not of that shape are skipped.
nlohmann::json concat_windows(const std::vector<nlohmann::json>& windows);
nlohmann::json merge_nodes(const std::vector<nlohmann::json>& windows);

}  // namespace meshcut::obj
