# SPDX-License-Identifier: Apache-2.0
"""Percentiles, one definition for every report."""
import math


def pct(xs, p):
    """The P-th percentile of XS by the nearest-rank method (the smallest value
    with at least P % of the sample at or below it); NaN for an empty sample."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[max(0, min(len(xs) - 1, math.ceil(p / 100.0 * len(xs)) - 1))]
