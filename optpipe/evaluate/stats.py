"""Uncertainty of accuracy figures: standard errors and paired differences."""

from __future__ import annotations

import math
from statistics import NormalDist


def z_value(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt(n))."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def paired_difference(baseline: list[float], candidate: list[float]) -> tuple[float, float]:
    """Mean of (baseline - candidate) over the same items, and its standard error.

    Pairing cancels the item-difficulty variance both share, which makes the interval several
    times tighter than combining two independent standard errors. When no item differs the sample
    standard error is 0; the rule of three then bounds the discordance rate by 3/n, so we report
    se = 3 / (n * z_95) to keep the interval honest instead of claiming certainty.
    """
    if len(baseline) != len(candidate):
        raise ValueError("paired difference needs the same items on both sides")
    diffs = [b - c for b, c in zip(baseline, candidate)]
    mean, se = mean_se(diffs)
    if diffs and se == 0:
        se = 3.0 / (len(diffs) * 1.959963984540054)
    return mean, se


def weighted_paired_difference(base: list[float], cand: list[float], weights: list[float]) -> tuple[float, float]:
    """Weighted mean of per-block differences (e.g. mean token NLL per perplexity window) and
    its standard error, treating blocks as the independent units."""
    if not (len(base) == len(cand) == len(weights)) or not weights:
        raise ValueError("need equal-length, non-empty inputs")
    total = sum(weights)
    diffs = [b - c for b, c in zip(base, cand)]
    mean = sum(w * d for w, d in zip(weights, diffs)) / total
    k = len(diffs)
    if k < 2:
        return mean, math.nan
    var = sum((w * (d - mean)) ** 2 for w, d in zip(weights, diffs)) / total**2 * k / (k - 1)
    return mean, math.sqrt(var)
