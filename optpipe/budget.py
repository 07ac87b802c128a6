"""Verdicts: does a candidate meet each budget line? MET, NOT MET or INCONCLUSIVE, with numbers.

Pure functions over measurement dicts, so they are table-tested. Accuracy lines judge the
*difference* from the baseline with a paired interval over the same items/windows; a line whose
interval straddles its limit is INCONCLUSIVE, never rounded into a pass.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from optpipe.evaluate.stats import paired_difference, weighted_paired_difference, z_value

GB = 1e9


class Verdict(str, Enum):
    MET = "MET"
    NOT_MET = "NOT MET"
    INCONCLUSIVE = "INCONCLUSIVE"
    NOT_MEASURED = "NOT MEASURED"


@dataclass(frozen=True)
class Check:
    name: str  # e.g. "hellaswag_drop_points"
    limit: float
    value: float
    low: float  # interval on value (equal to value for exact figures)
    high: float
    verdict: Verdict
    detail: str = ""
    projected: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        return d


def _upper_limit(name: str, value: float, low: float, high: float, limit: float, detail: str) -> Check:
    """A line of the form value <= limit."""
    if math.isnan(value):
        return Check(name, limit, value, low, high, Verdict.NOT_MEASURED, detail)
    verdict = Verdict.MET if high <= limit else Verdict.NOT_MET if low > limit else Verdict.INCONCLUSIVE
    return Check(name, limit, value, low, high, verdict, detail)


def _lower_limit(name: str, value: float, low: float, high: float, limit: float, detail: str) -> Check:
    """A line of the form value >= limit."""
    if math.isnan(value):
        return Check(name, limit, value, low, high, Verdict.NOT_MEASURED, detail)
    verdict = Verdict.MET if low >= limit else Verdict.NOT_MET if high < limit else Verdict.INCONCLUSIVE
    return Check(name, limit, value, low, high, verdict, detail)


def hellaswag_drop(base: dict, cand: dict) -> tuple[float, float, int]:
    """Drop in acc_norm points (baseline - candidate) and its paired standard error, over the items
    both scored."""
    b = dict(zip(base["item_indices"], base["item_acc_norm"]))
    c = dict(zip(cand["item_indices"], cand["item_acc_norm"]))
    common = sorted(set(b) & set(c))
    if not common:
        return math.nan, math.nan, 0
    mean, se = paired_difference([b[i] for i in common], [c[i] for i in common])
    return 100 * mean, 100 * se, len(common)


def perplexity_rise(base: dict, cand: dict) -> tuple[float, float, float]:
    """Rise of perplexity in percent with its interval bounds in log space -> (rise, se_log)."""
    bw = [n / t for n, t in zip(base["window_nll"], base["window_tokens"])]
    cw = [n / t for n, t in zip(cand["window_nll"], cand["window_tokens"])]
    if base["window_tokens"] != cand["window_tokens"]:
        return math.nan, math.nan, math.nan
    delta, se = weighted_paired_difference(cw, bw, base["window_tokens"])  # candidate - baseline NLL
    return 100 * (math.exp(delta) - 1), delta, se


def judge(baseline: dict[str, Any], candidate: dict[str, Any], budget: Any, goals: Any) -> list[Check]:
    """Every budget and goal line for one candidate against the baseline of the same build."""
    z = z_value(budget.confidence)
    checks: list[Check] = []
    if budget.hellaswag_max_drop_points is not None:
        if "hellaswag" in baseline and "hellaswag" in candidate:
            drop, se, n = hellaswag_drop(baseline["hellaswag"], candidate["hellaswag"])
            checks.append(_upper_limit("hellaswag_drop_points", drop, drop - z * se, drop + z * se,
                                       budget.hellaswag_max_drop_points, f"paired over {n} items, {budget.confidence:.0%} CI"))
        else:
            checks.append(Check("hellaswag_drop_points", budget.hellaswag_max_drop_points, math.nan, math.nan, math.nan,
                                Verdict.NOT_MEASURED, "hellaswag_items is 0"))
    if budget.perplexity_max_rise_pct is not None:
        if "perplexity" in baseline and "perplexity" in candidate:
            rise, delta, se = perplexity_rise(baseline["perplexity"], candidate["perplexity"])
            low, high = (100 * (math.exp(delta - z * se) - 1), 100 * (math.exp(delta + z * se) - 1)) if not math.isnan(delta) else (math.nan, math.nan)
            n = len(candidate["perplexity"]["window_tokens"])
            checks.append(_upper_limit("perplexity_rise_pct", rise, low, high, budget.perplexity_max_rise_pct,
                                       f"paired over {n} windows, {budget.confidence:.0%} CI"))
        else:
            checks.append(Check("perplexity_rise_pct", budget.perplexity_max_rise_pct, math.nan, math.nan, math.nan,
                                Verdict.NOT_MEASURED, "perplexity_tokens is 0"))
    bench = candidate.get("benchmark")
    projected = ((bench or {}).get("roofline") or {}).get("projected")
    if goals.min_decode_tok_s is not None:
        if bench and projected:
            s = bench["decode_tok_s"]
            scale = projected["decode_tok_s"] / s["mean"]
            half = z * s["stdev"] / math.sqrt(s["n"]) * scale
            v = projected["decode_tok_s"]
            c = _lower_limit("decode_tok_s", v, v - half, v + half, goals.min_decode_tok_s,
                             f"projected to {projected['target']} from {s['mean']:.1f} tok/s measured on this GPU")
            checks.append(Check(**{**c.__dict__, "projected": True}))
        elif bench:
            s = bench["decode_tok_s"]
            half = z * s["stdev"] / math.sqrt(s["n"])
            checks.append(_lower_limit("decode_tok_s", s["mean"], s["mean"] - half, s["mean"] + half,
                                       goals.min_decode_tok_s, f"{s['n']} trials, CV {s['cv']:.1%}"))
        else:
            checks.append(Check("decode_tok_s", goals.min_decode_tok_s, math.nan, math.nan, math.nan, Verdict.NOT_MEASURED))
    if goals.max_p95_token_latency_ms is not None:
        if bench:
            p95 = bench["token_latency_ms"]["p95"]
            detail = f"{bench['token_latency_ms']['n']} tokens"
            if projected:  # per-token latency scales inversely with the projected speed
                p95 = p95 * bench["decode_tok_s"]["mean"] / projected["decode_tok_s"]
                detail += f", projected to {projected['target']}"
            c = _upper_limit("p95_token_latency_ms", p95, p95, p95, goals.max_p95_token_latency_ms, detail)
            checks.append(Check(**{**c.__dict__, "projected": bool(projected)}))
        else:
            checks.append(Check("p95_token_latency_ms", goals.max_p95_token_latency_ms, math.nan, math.nan, math.nan, Verdict.NOT_MEASURED))
    if goals.max_memory_gb is not None:
        mem = peak_memory_bytes(candidate) / GB
        checks.append(_upper_limit("memory_gb", mem, mem, mem, goals.max_memory_gb, memory_kind(candidate)))
    if goals.max_size_gb is not None:
        size = candidate["size_bytes"] / GB
        checks.append(_upper_limit("size_gb", size, size, size, goals.max_size_gb, "weights on disk"))
    return checks


def peak_memory_bytes(result: dict[str, Any]) -> float:
    bench = result.get("benchmark") or {}
    if bench.get("nvml_process_used_bytes"):
        return float(bench["nvml_process_used_bytes"])
    if "cuda_peak_reserved_bytes" in bench:
        return float(bench["cuda_peak_reserved_bytes"])
    return float(bench.get("peak_rss_bytes", result.get("rss_after_load_bytes", math.nan)))


def memory_kind(result: dict[str, Any]) -> str:
    bench = result.get("benchmark") or {}
    if bench.get("nvml_process_used_bytes"):
        return "GPU memory used by the process (NVML)"
    return "GPU peak reserved (torch)" if "cuda_peak_reserved_bytes" in bench else "peak RSS during benchmark"


def overall(checks: list[Check]) -> Verdict:
    """NOT MET if any line fails; INCONCLUSIVE if any line is undecided; MET only if all are met."""
    verdicts = {c.verdict for c in checks}
    if Verdict.NOT_MET in verdicts:
        return Verdict.NOT_MET
    if verdicts & {Verdict.INCONCLUSIVE, Verdict.NOT_MEASURED}:
        return Verdict.INCONCLUSIVE
    return Verdict.MET
