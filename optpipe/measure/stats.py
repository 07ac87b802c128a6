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
