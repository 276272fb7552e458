// SPDX-License-Identifier: Apache-2.0
// mcload's latency histogram: log-linear buckets like HdrHistogram's, pure
// logic (no I/O), included by mcload and its unit tests.
//
// Values are nanoseconds. Below 256 ns every value has its own bucket; above,
// each power of two [2^m, 2^(m+1)) is split into 128 equal buckets, so a
// bucket is at most 1/128 (0.78 %) of its values wide. A percentile is the
// upper edge of the bucket holding the nearest-rank sample (never below the
// true value, at most 0.78 % above it), clamped to the largest value seen.
// The range ends at 2^37 ns (137 s); larger values are counted in the last
// bucket and in saturated(). A histogram is 4.4 KiB of counts whatever the
// number of samples: per-second histograms are merged into the run's.
#pragma once

#include <array>
#include <cstdint>
#include <limits>

namespace mcload {

class Histogram {
 public:
  static constexpr int kSubBits = 8;   // 256 exact values, then 128 per octave
  static constexpr int kMaxBits = 37;  // 2^37 ns = 137 s
  static constexpr uint64_t kMaxValue = (uint64_t{1} << kMaxBits) - 1;
  static constexpr int kHalf = 1 << (kSubBits - 1);  // 128
  static constexpr int kBuckets = (1 << kSubBits) + (kMaxBits - kSubBits) * kHalf;

  void record(uint64_t ns, uint64_t n = 1);
  void merge(const Histogram& o);
  void reset() { *this = Histogram{}; }

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ ? min_ : 0; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0.0; }
  uint64_t saturated() const { return saturated_; }
  // P in [0, 100]: the nearest-rank percentile (the smallest value with at
  // least P % of the samples at or below it), as the bucket's upper edge; 0
  // when empty.
  uint64_t percentile(double p) const;

  static int index_of(uint64_t ns);
  static uint64_t lowest_of(int index);   // smallest value of bucket INDEX
  static uint64_t highest_of(int index);  // largest value of bucket INDEX

 private:
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = std::numeric_limits<uint64_t>::max();
  uint64_t max_ = 0;
  uint64_t saturated_ = 0;
};

}  // namespace mcload
