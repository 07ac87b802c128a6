"""Early-stopped evaluation: a paired interval that stays valid however often it is looked at.

A fixed-n interval looked at after every chunk of items is wrong more often than its level says
(the more looks, the likelier one of them strays past the limit by chance). The asymptotic
confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas, "Time-uniform central limit
theory and asymptotic confidence sequences" (Annals of Statistics, 2024; arXiv:2103.06476,
Theorem 2.2) holds at every n at once:

    mean_n +- sigma_n * sqrt( 2 (n rho^2 + 1) / (n^2 rho^2) * log( sqrt(n rho^2 + 1) / alpha ) )

with sigma_n the sample standard deviation and rho a tuning constant that makes the sequence
tightest near n = n_opt (their eq. for rho: sqrt((-2 log alpha + log(-2 log alpha + 1)) / n_opt)).

How optpipe spends the error rate (alpha = 1 - budget.confidence): the interim looks use the
sequence at alpha/2; when a look leaves the interval wholly inside the budget (MET) or wholly
outside it (NOT MET) evaluation stops; when the whole set is used without such a decision, the
existing fixed-n interval at alpha judges the line. A wrong verdict then needs the sequence to miss
on the wrong side (probability <= alpha/4) or the final fixed-n interval to miss on the wrong side
(<= alpha/2): together at most 3/4 alpha, below the alpha a fixed-n two-sided interval states.
tests/evaluate/test_sequential.py checks this by simulation. Pure math (no torch): the judge and the
measurement worker both use it.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel

Decision = Literal["inside", "outside"]


class SequentialStop(BaseModel):
    """How an early-stopped evaluation ended: `used` of `planned` units (items or windows)."""

    planned: int
    used: int
    looks: int
    decision: Decision | None = None  # None: stopped for another reason (see `reason`), or never decided
    reason: str = ""
    alpha: float  # error rate of the confidence sequence the looks used
    n_opt: int  # where the sequence was tuned to be tightest (the judge rebuilds the same interval)

    @property
    def stopped_early(self) -> bool:
        return self.used < self.planned


def interim_alpha(confidence: float) -> float:
    """The share of the error rate the interim looks spend (the final fixed-n look keeps `1 - confidence`)."""
    return (1.0 - confidence) / 2


def rho_for(n_opt: int, alpha: float) -> float:
    """The tuning constant that makes the sequence tightest at n = n_opt (Waudby-Smith et al., sec. 2.5)."""
    la = -2 * math.log(alpha)
    return math.sqrt((la + math.log(la + 1)) / max(n_opt, 1))


def cs_half_width(n: int, sigma: float, alpha: float, n_opt: int) -> float:
    """Half-width of the asymptotic confidence sequence for a mean of n observations with sample sd `sigma`."""
    if n < 2:
        return math.inf
    r2 = rho_for(n_opt, alpha) ** 2
    return sigma * math.sqrt(2 * (n * r2 + 1) / (n * n * r2) * math.log(math.sqrt(n * r2 + 1) / alpha))


def weighted_mean_sd(diffs: list[float], weights: list[float] | None = None) -> tuple[float, float]:
    """Weighted mean of per-unit differences and the per-unit sd such that sd/sqrt(n) is its
    standard error (units are independent; weights normalised to mean 1)."""
    n = len(diffs)
    if n == 0:
        return math.nan, math.nan
    w = [1.0] * n if weights is None else [float(x) for x in weights]
    total = sum(w)
    mean = sum(wi * d for wi, d in zip(w, diffs)) / total
    if n < 2:
        return mean, math.nan
    scale = n / total
    var = sum((scale * wi * (d - mean)) ** 2 for wi, d in zip(w, diffs)) / (n - 1)
    return mean, math.sqrt(var)


def sequence_interval(
    diffs: list[float], alpha: float, n_opt: int, weights: list[float] | None = None, sd_floor: float = 0.0
) -> tuple[float, float, float]:
    """(mean, low, high) of the confidence sequence over paired differences seen so far. `sd_floor`
    keeps a run of identical differences (no item changed yet) from claiming certainty."""
    mean, sd = weighted_mean_sd(diffs, weights)
    if math.isnan(sd):
        return mean, -math.inf, math.inf
    half = cs_half_width(len(diffs), max(sd, sd_floor), alpha, n_opt)
    return mean, mean - half, mean + half


def decide_upper(low: float, high: float, limit: float) -> Decision | None:
    """For a line `value <= limit`: inside when the whole interval is, outside when none of it is."""
    if high <= limit:
        return "inside"
    if low > limit:
        return "outside"
    return None


def binary_sd_floor(n: int) -> float:
    """sd floor for differences of 0/1 scores: with no discordant item yet, the rule of three bounds
    the discordance rate by 3/n, and a difference in {-1, 0, 1} with that rate has sd <= sqrt(3/n)."""
    return math.sqrt(3.0 / n) if n > 0 else math.inf


def look(
    diffs: list[float],
    limit: float,
    alpha: float,
    n_opt: int,
    weights: list[float] | None = None,
    binary_scale: float | None = None,
) -> tuple[float, float, float, Decision | None]:
    """One interim look at a `value <= limit` line: (mean, low, high, decision). `binary_scale`:
    the differences are 0/1 scores times this (HellaSwag points: 100), so the rule-of-three sd floor applies."""
    floor = binary_scale * binary_sd_floor(len(diffs)) if binary_scale is not None else 0.0
    mean, low, high = sequence_interval(diffs, alpha, n_opt, weights, floor)
    return mean, low, high, decide_upper(low, high, limit)


class SequentialRule(BaseModel):
    """When to look and what a look decides, for one budget line evaluated in chunks. The sequence is
    tuned to be tightest at twice the first look (hopeless and clearly-fine candidates are the ones
    worth stopping early; borderline ones run to the full set and the fixed-n interval anyway)."""

    limit: float  # value <= limit, in the units of the differences (points, or mean NLL)
    confidence: float
    planned: int
    min_n: int  # no look before this many units (the sequence is asymptotic)
    chunk: int  # then a look every `chunk` units
    binary_scale: float | None = None

    @property
    def alpha(self) -> float:
        return interim_alpha(self.confidence)

    @property
    def n_opt(self) -> int:
        return min(self.planned, 2 * self.min_n)

    def looks_at(self, n: int) -> bool:
        """A look after `n` units (never at the full set: that is the fixed-n interval's)."""
        return self.min_n <= n < self.planned and (n - self.min_n) % self.chunk == 0

    def check(self, diffs: list[float], weights: list[float] | None = None) -> tuple[float, float, float, Decision | None]:
        return look(diffs, self.limit, self.alpha, self.n_opt, weights, self.binary_scale)
