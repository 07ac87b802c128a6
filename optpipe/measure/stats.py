"""Latency records: percentiles and spread from raw samples (as optimum-benchmark's Latency)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), like numpy's default."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(frozen=True)
class Spread:
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
        return cls(n, mean, stdev, stdev / mean if mean else math.nan,
                   percentile(values, 50), percentile(values, 95), percentile(values, 99), min(values), max(values))

    def to_dict(self) -> dict:
        return asdict(self)
