"""Latency records: percentiles and spread from raw samples (as optimum-benchmark's Latency)."""

from __future__ import annotations

import math

from optpipe.files import JsonRecord


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), like numpy's default."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


class Spread(JsonRecord, frozen=True):
    n: int
    mean: float
    stdev: float
    cv: float
    p50: float
    p95: float
    p99: float
    min: float
    max: float

    @classmethod
    def from_values(cls, values: list[float]) -> "Spread":
        n = len(values)
        if n == 0:
            raise ValueError("no samples")
        mean = sum(values) / n
        stdev = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        return cls(
            n=n,
            mean=mean,
            stdev=stdev,
            cv=stdev / mean if mean else math.nan,
            p50=percentile(values, 50),
            p95=percentile(values, 95),
            p99=percentile(values, 99),
            min=min(values),
            max=max(values),
        )

    def half_width(self, z: float) -> float:
        """Half width of the z-interval on the mean."""
        return z * self.stdev / math.sqrt(self.n)


def ratio_interval(log_ratios: list[float], confidence: float) -> tuple[float, float, float]:
    """Geometric-mean ratio and its t interval from per-round log ratios (log space: a ratio is
    multiplicative, and x0.5 and x2 are equally far from 1). One round has no interval (nan)."""
    from scipy.stats import t

    n = len(log_ratios)
    mean = sum(log_ratios) / n
    if n < 2:
        return math.exp(mean), math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in log_ratios) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def separate_ratio_interval(cand: Spread, parent: Spread, confidence: float) -> tuple[float, float, float]:
    """Ratio of two means timed apart, with a delta-method normal interval on its log (not paired:
    load that hit only one of them is not cancelled, hence 'not interleaved')."""
    from statistics import NormalDist

    ratio = cand.mean / parent.mean
    se = math.sqrt(cand.cv**2 / cand.n + parent.cv**2 / parent.n)
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * se
    return ratio, ratio * math.exp(-half), ratio * math.exp(half)
