// SPDX-License-Identifier: Apache-2.0
#include "mcload/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace mcload {

int Histogram::index_of(uint64_t ns) {
  if (ns > kMaxValue) ns = kMaxValue;
  if (ns < (uint64_t{1} << kSubBits)) return static_cast<int>(ns);
  const int m = 63 - std::countl_zero(ns);  // ns in [2^m, 2^(m+1)), m >= kSubBits
  const int shift = m - (kSubBits - 1);
  const int sub = static_cast<int>(ns >> shift) - kHalf;  // 0 .. kHalf-1
  return (1 << kSubBits) + (m - kSubBits) * kHalf + sub;
}

uint64_t Histogram::lowest_of(int index) {
  if (index < (1 << kSubBits)) return static_cast<uint64_t>(index);
  const int k = index - (1 << kSubBits);
  const int m = kSubBits + k / kHalf;
  const int shift = m - (kSubBits - 1);
  return static_cast<uint64_t>(kHalf + k % kHalf) << shift;
}

uint64_t Histogram::highest_of(int index) {
  if (index + 1 >= kBuckets) return kMaxValue;
  return lowest_of(index + 1) - 1;
}

void Histogram::record(uint64_t ns, uint64_t n) {
  if (n == 0) return;
  if (ns > kMaxValue) saturated_ += n;
  counts_[static_cast<size_t>(index_of(ns))] += n;
  count_ += n;
  sum_ += ns * n;
  min_ = std::min(min_, ns);
  max_ = std::max(max_, ns);
}

void Histogram::merge(const Histogram& o) {
  if (o.count_ == 0) return;
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += o.counts_[i];
  count_ += o.count_;
  sum_ += o.sum_;
  min_ = std::min(min_, o.min_);
  max_ = std::max(max_, o.max_);
  saturated_ += o.saturated_;
}

uint64_t Histogram::percentile(double p) const {
  if (count_ == 0) return 0;
  p = std::clamp(p, 0.0, 100.0);
  // Nearest rank, as mctest.pct: the ceil(p/100 * n)-th smallest, at least the 1st.
  auto rank = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(count_)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += counts_[static_cast<size_t>(i)];
    if (seen >= rank) return std::clamp(highest_of(i), min_, max_);
  }
  return max_;
}

}  // namespace mcload
