"""Verdicts: does a candidate meet each budget line? MET, NOT MET or INCONCLUSIVE, with numbers.

Pure functions over typed measurements, so they are table-tested. Accuracy lines judge the
*difference* from the baseline with a paired interval over the same items/windows; a line whose
interval straddles its limit is INCONCLUSIVE, never rounded into a pass.
"""

from __future__ import annotations

import math
from enum import Enum

from optpipe.evaluate.hellaswag import HellaSwagResult
from optpipe.evaluate.perplexity import PerplexityResult
from optpipe.evaluate.sequential import binary_sd_floor, sequence_interval
from optpipe.evaluate.stats import paired_difference, weighted_paired_difference, z_value
from optpipe.files import JsonRecord
from optpipe.measure.results import Measurements
from optpipe.spec.settings import AccuracyBudget, Goals

GB = 1e9
ACCURACY_LINES = ("hellaswag_drop_points", "perplexity_rise_pct")


class Verdict(str, Enum):
    MET = "MET"
    NOT_MET = "NOT MET"
    INCONCLUSIVE = "INCONCLUSIVE"
    NOT_MEASURED = "NOT MEASURED"


class Check(JsonRecord, frozen=True):
    """One budget or goal line of one candidate."""

    name: str  # e.g. "hellaswag_drop_points"
    limit: float
    value: float
    low: float  # interval on value (equal to value for exact figures)
    high: float
    verdict: Verdict
    detail: str = ""
    projected: bool = False


def _not_measured(name: str, limit: float, detail: str = "") -> Check:
    return Check(name=name, limit=limit, value=math.nan, low=math.nan, high=math.nan, verdict=Verdict.NOT_MEASURED, detail=detail)


def _upper_limit(name: str, value: float, low: float, high: float, limit: float, detail: str, projected: bool = False) -> Check:
    """A line of the form value <= limit."""
    if math.isnan(value):
        return Check(name=name, limit=limit, value=value, low=low, high=high, verdict=Verdict.NOT_MEASURED, detail=detail)
    verdict = Verdict.MET if high <= limit else Verdict.NOT_MET if low > limit else Verdict.INCONCLUSIVE
    return Check(name=name, limit=limit, value=value, low=low, high=high, verdict=verdict, detail=detail, projected=projected)


def _lower_limit(name: str, value: float, low: float, high: float, limit: float, detail: str, projected: bool = False) -> Check:
    """A line of the form value >= limit."""
    if math.isnan(value):
        return Check(name=name, limit=limit, value=value, low=low, high=high, verdict=Verdict.NOT_MEASURED, detail=detail)
    verdict = Verdict.MET if low >= limit else Verdict.NOT_MET if high < limit else Verdict.INCONCLUSIVE
    return Check(name=name, limit=limit, value=value, low=low, high=high, verdict=verdict, detail=detail, projected=projected)


def hellaswag_drop(base: HellaSwagResult, cand: HellaSwagResult) -> tuple[float, float, int]:
    """Drop in acc_norm points (baseline - candidate) and its paired standard error, over the items
    both scored."""
    b = dict(zip(base.item_indices, base.item_acc_norm))
    c = dict(zip(cand.item_indices, cand.item_acc_norm))
    common = sorted(set(b) & set(c))
    if not common:
        return math.nan, math.nan, 0
    mean, se = paired_difference([b[i] for i in common], [c[i] for i in common])
    return 100 * mean, 100 * se, len(common)


def perplexity_rise(base: PerplexityResult, cand: PerplexityResult) -> tuple[float, float, float]:
    """Rise of perplexity in percent, and the paired mean NLL difference with its standard error
    (the interval is built in log space) -> (rise, delta, se)."""
    k = len(cand.window_tokens)
    early = cand.sequential is not None and cand.sequential.stopped_early
    if (base.window_tokens[:k] if early else base.window_tokens) != cand.window_tokens or not k:
        return math.nan, math.nan, math.nan
    bw = [n / t for n, t in zip(base.window_nll[:k], base.window_tokens[:k])]
    cw = [n / t for n, t in zip(cand.window_nll, cand.window_tokens)]
    delta, se = weighted_paired_difference(cw, bw, cand.window_tokens)  # candidate - baseline NLL
    return 100 * (math.exp(delta) - 1), delta, se


def _hellaswag_check(base: Measurements, cand: Measurements, budget: AccuracyBudget, z: float) -> Check:
    limit = budget.hellaswag_max_drop_points
    if base.hellaswag is None or cand.hellaswag is None:
        return _not_measured("hellaswag_drop_points", limit, "hellaswag_items is 0")
    drop, se, n = hellaswag_drop(base.hellaswag, cand.hellaswag)
    seq = cand.hellaswag.sequential
    if seq is not None and seq.stopped_early:  # stopped at a look: the confidence sequence's interval, not fixed-n
        b = dict(zip(base.hellaswag.item_indices, base.hellaswag.item_acc_norm))
        diffs = [100.0 * (b[i] - c) for i, c in zip(cand.hellaswag.item_indices, cand.hellaswag.item_acc_norm) if i in b]
        _, low, high = sequence_interval(diffs, seq.alpha, seq.n_opt, None, 100.0 * binary_sd_floor(len(diffs)))
        detail = f"early-stopped: paired over {n} of {seq.planned} items, {1 - seq.alpha:.1%} confidence sequence; {seq.reason}"
        return _upper_limit("hellaswag_drop_points", drop, low, high, limit, detail)
    return _upper_limit(
        "hellaswag_drop_points", drop, drop - z * se, drop + z * se, limit, f"paired over {n} items, {budget.confidence:.0%} CI"
    )


def _perplexity_check(base: Measurements, cand: Measurements, budget: AccuracyBudget, z: float) -> Check:
    limit = budget.perplexity_max_rise_pct
    if base.perplexity is None or cand.perplexity is None:
        return _not_measured("perplexity_rise_pct", limit, "perplexity_tokens is 0")
    rise, delta, se = perplexity_rise(base.perplexity, cand.perplexity)
    if math.isnan(delta):
        low = high = math.nan
    else:
        low, high = 100 * (math.exp(delta - z * se) - 1), 100 * (math.exp(delta + z * se) - 1)
    n = len(cand.perplexity.window_tokens)
    seq = cand.perplexity.sequential
    if seq is not None and seq.stopped_early and not math.isnan(delta):  # the confidence sequence's interval
        base_p = base.perplexity
        diffs = [c / t - b / t for c, b, t in zip(cand.perplexity.window_nll, base_p.window_nll, cand.perplexity.window_tokens)]
        _, lo, hi = sequence_interval(diffs, seq.alpha, seq.n_opt, [float(t) for t in cand.perplexity.window_tokens])
        low, high = 100 * math.expm1(min(lo, 50.0)), 100 * math.expm1(min(hi, 50.0))
        detail = f"early-stopped: paired over {n} of {seq.planned} windows, {1 - seq.alpha:.1%} confidence sequence; {seq.reason}"
        return _upper_limit("perplexity_rise_pct", rise, low, high, limit, detail)
    return _upper_limit("perplexity_rise_pct", rise, low, high, limit, f"paired over {n} windows, {budget.confidence:.0%} CI")


def _speed_check(cand: Measurements, limit: float, z: float) -> Check:
    bench = cand.benchmark
    if bench is None:
        return _not_measured("decode_tok_s", limit)
    s = bench.decode_tok_s
    projected = bench.roofline.projected if bench.roofline else None
    if projected is not None and projected.low is not None and projected.high is not None:
        v = projected.decode_tok_s
        return _lower_limit(
            "decode_tok_s",
            v,
            projected.low,
            projected.high,
            limit,
            f"projected to {projected.target} from {s.mean:.1f} tok/s measured on this GPU ({projected.method})",
            projected=True,
        )
    if projected is not None:
        v = projected.decode_tok_s
        half = s.half_width(z) * v / s.mean
        return _lower_limit(
            "decode_tok_s",
            v,
            v - half,
            v + half,
            limit,
            f"projected to {projected.target} from {s.mean:.1f} tok/s measured on this GPU",
            projected=True,
        )
    half = s.half_width(z)
    return _lower_limit("decode_tok_s", s.mean, s.mean - half, s.mean + half, limit, f"{s.n} trials, CV {s.cv:.1%}")


def _latency_check(cand: Measurements, limit: float) -> Check:
    bench = cand.benchmark
    if bench is None:
        return _not_measured("p95_token_latency_ms", limit)
    p95 = bench.token_latency_ms.p95
    detail = f"{bench.token_latency_ms.n} tokens"
    projected = bench.roofline.projected if bench.roofline else None
    if projected is not None:  # per-token latency scales inversely with the projected speed
        p95 = p95 * bench.decode_tok_s.mean / projected.decode_tok_s
        detail += f", projected to {projected.target}"
    return _upper_limit("p95_token_latency_ms", p95, p95, p95, limit, detail, projected=projected is not None)


def _memory_check(cand: Measurements, limit: float) -> Check:
    if cand.out_of_memory is not None:  # it needs more than the cap it ran under: a lower bound, not a figure
        need = cand.memory_cap_gb or math.nan
        return Check(
            name="memory_gb",
            limit=limit,
            value=need,
            low=need,
            high=math.inf,
            verdict=Verdict.NOT_MET if need >= limit else Verdict.INCONCLUSIVE,
            detail=cand.out_of_memory,
        )
    mem = cand.peak_memory_bytes() / GB
    return _upper_limit("memory_gb", mem, mem, mem, limit, cand.memory_kind())


def judge(baseline: Measurements, candidate: Measurements, budget: AccuracyBudget, goals: Goals) -> list[Check]:
    """Every budget and goal line for one candidate against the baseline of the same build."""
    z = z_value(budget.confidence)
    checks: list[Check] = []
    if budget.hellaswag_max_drop_points is not None:
        checks.append(_hellaswag_check(baseline, candidate, budget, z))
    if budget.perplexity_max_rise_pct is not None:
        checks.append(_perplexity_check(baseline, candidate, budget, z))
    if goals.min_decode_tok_s is not None:
        checks.append(_speed_check(candidate, goals.min_decode_tok_s, z))
    if goals.max_p95_token_latency_ms is not None:
        checks.append(_latency_check(candidate, goals.max_p95_token_latency_ms))
    if goals.max_memory_gb is not None:
        checks.append(_memory_check(candidate, goals.max_memory_gb))
    if goals.max_size_gb is not None:
        size = candidate.size_bytes / GB
        checks.append(_upper_limit("size_gb", size, size, size, goals.max_size_gb, "weights on disk"))
    return checks


def judge_reference(baseline: Measurements, budget: AccuracyBudget, goals: Goals) -> list[Check]:
    """The baseline's own lines: it is the accuracy reference (its deltas are 0 by definition, so
    they say so instead of carrying an interval), and its speed/memory are judged like any other."""
    checks = judge(baseline, baseline, budget, goals)
    return [
        Check(name=c.name, limit=c.limit, value=0.0, low=0.0, high=0.0, verdict=Verdict.MET, detail="baseline (reference)")
        if c.name in ACCURACY_LINES
        else c
        for c in checks
    ]


def overall(checks: list[Check]) -> Verdict:
    """NOT MET if any line fails; INCONCLUSIVE if any line is undecided; MET only if all are met."""
    verdicts = {c.verdict for c in checks}
    if Verdict.NOT_MET in verdicts:
        return Verdict.NOT_MET
    if verdicts & {Verdict.INCONCLUSIVE, Verdict.NOT_MEASURED}:
        return Verdict.INCONCLUSIVE
    return Verdict.MET
