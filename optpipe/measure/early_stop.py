"""Early-stopped evaluation in the worker: score HellaSwag items and perplexity windows in chunks,
look at the paired confidence sequence after each chunk, stop once the line is decided.

The statistics live in evaluate/sequential.py; this module only feeds it the candidate's results
paired with the baseline's (handed over in the `EarlyStopJob`) and records why evaluation stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from optpipe.evaluate.hellaswag import HellaSwagResult, merge_hellaswag
from optpipe.evaluate.sequential import Decision, SequentialRule, SequentialStop
from optpipe.measure.job import EarlyStopJob
from optpipe.measure.results import Measurements

OTHER_LINE = "another budget line is already NOT MET"


def _stop_record(rule: SequentialRule, used: int, looks: int, decision: Decision | None, reason: str) -> SequentialStop:
    if not reason:
        reason = "every unit scored: the fixed-n interval judges" if used >= rule.planned else ""
    return SequentialStop(
        planned=rule.planned, used=used, looks=looks, decision=decision, reason=reason, alpha=rule.alpha, n_opt=rule.n_opt
    )


def _reason(decision: Decision, low: float, high: float, limit: float, unit: str, n: int) -> str:
    where = "inside" if decision == "inside" else "outside"
    return f"after {n} {unit}: interval [{low:.3g}, {high:.3g}] wholly {where} the limit {limit:.3g}"


def hellaswag_rule(es: EarlyStopJob, planned: int) -> SequentialRule | None:
    if es.hellaswag_max_drop_points is None:
        return None
    return SequentialRule(
        limit=es.hellaswag_max_drop_points,
        confidence=es.confidence,
        planned=planned,
        min_n=es.min_items,
        chunk=es.chunk_items,
        binary_scale=100.0,
    )


def perplexity_rule(es: EarlyStopJob) -> SequentialRule | None:
    if es.perplexity_max_rise_pct is None or not es.base_window_tokens:
        return None
    return SequentialRule(
        limit=math.log1p(es.perplexity_max_rise_pct / 100),
        confidence=es.confidence,
        planned=len(es.base_window_tokens),
        min_n=es.min_windows,
        chunk=es.chunk_windows,
    )


def hellaswag_early(
    score: Callable[[list], HellaSwagResult], items: list, es: EarlyStopJob, other_outside: bool, progress: Callable[[str], None]
) -> HellaSwagResult:
    """Score `items` chunk by chunk with `score(chunk)`; stop once the drop's sequence decides (or
    another line already failed)."""
    rule = hellaswag_rule(es, len(items))
    if rule is None:
        return score(items)
    parts: list[HellaSwagResult] = []
    n, looks, decision, reason = 0, 0, None, ""
    while n < len(items):
        end = min(rule.min_n if n == 0 else n + rule.chunk, len(items))
        parts.append(score(items[n:end]))
        n = end
        if not rule.looks_at(n):
            continue
        looks += 1
        if other_outside:
            reason = OTHER_LINE
            break
        merged = merge_hellaswag(parts)
        diffs = [100.0 * (es.base_items[i] - c) for i, c in zip(merged.item_indices, merged.item_acc_norm) if i in es.base_items]
        _, low, high, decision = rule.check(diffs)
        progress(f"hellaswag look {looks}: {n}/{len(items)} items, drop interval [{low:.2f}, {high:.2f}] points")
        if decision is not None:
            reason = _reason(decision, low, high, rule.limit, "items", n)
            break
    result = merge_hellaswag(parts)
    result.sequential = _stop_record(rule, n, looks, decision, reason)
    return result


class PerplexityStopper:
    """The `should_stop` of `evaluate_perplexity`: looks at the paired per-window NLL differences."""

    def __init__(self, es: EarlyStopJob, kl_recorder, progress: Callable[[str], None]):
        self.es, self.rule, self.recorder, self.progress = es, perplexity_rule(es), kl_recorder, progress
        self.looks, self.decision, self.reason, self.used = 0, None, "", 0

    def __call__(self, nlls: list[float], counts: list[int], planned: int) -> bool:
        rule, k = self.rule, len(nlls)
        self.used = k
        if rule is None or not rule.looks_at(k):
            return False
        if self.recorder is not None and self.recorder.count < self.recorder.n_tokens:
            return False  # KL needs its positions first
        base_nll, base_tok = self.es.base_window_nll[:k], self.es.base_window_tokens[:k]
        if base_tok != counts:
            return False  # not the baseline's windows: nothing to pair with, score them all
        self.looks += 1
        diffs = [c / t - b / t for c, b, t in zip(nlls, base_nll, counts)]
        _, low, high, decision = rule.check(diffs, [float(t) for t in counts])
        pct = (100 * math.expm1(low) if low > -50 else -100.0), (100 * math.expm1(high) if high < 50 else math.inf)
        self.progress(f"perplexity look {self.looks}: {k}/{planned} windows, rise interval [{pct[0]:.1f}, {pct[1]:.1f}] %")
        if decision is not None:
            self.decision = decision
            self.reason = _reason(decision, pct[0], pct[1], self.es.perplexity_max_rise_pct or 0.0, "windows", k) + " (%)"
            return True
        return False

    def record(self) -> SequentialStop | None:
        if self.rule is None:
            return None
        return _stop_record(self.rule, self.used, self.looks, self.decision, self.reason)


def replay(cand: Measurements, es: EarlyStopJob) -> Measurements:
    """What early stopping would have measured, from a full evaluation's per-item and per-window
    results (scored in the same order the worker scores them): for checking its verdicts against the
    full evaluation's and counting what it saves (bench/early_stop_replay.py)."""
    out = cand.model_copy(deep=True)
    outside = False
    if cand.perplexity is not None:
        p = cand.perplexity
        stopper = PerplexityStopper(es, None, lambda m: None)
        nlls: list[float] = []
        counts: list[int] = []
        for nll, t in zip(p.window_nll, p.window_tokens):
            nlls.append(nll)
            counts.append(t)
            if stopper(nlls, counts, len(p.window_tokens)):
                break
        rec = stopper.record()
        total = sum(nlls)
        ppl = math.exp(total / sum(counts)) if counts else math.nan
        out.perplexity = p.model_copy(
            update={"window_nll": nlls, "window_tokens": counts, "sequential": rec, "ppl": ppl, "tokens_scored": sum(counts)}
        )
        outside = rec is not None and rec.decision == "outside"
    if cand.hellaswag is not None:
        h = cand.hellaswag
        by_index = {i: k for k, i in enumerate(h.item_indices)}

        def score(chunk: list) -> HellaSwagResult:
            ks = [by_index[i] for i in chunk]
            return merge_hellaswag(
                [
                    HellaSwagResult(
                        n=len(ks), acc=0, acc_se=0, acc_norm=0, acc_norm_se=0,
                        item_indices=[h.item_indices[k] for k in ks],
                        item_acc=[h.item_acc[k] for k in ks] if h.item_acc else [],
                        item_acc_norm=[h.item_acc_norm[k] for k in ks],
                        item_loglikelihoods=[h.item_loglikelihoods[k] for k in ks] if h.item_loglikelihoods else [],
                    )
                ]
            )  # fmt: skip

        out.hellaswag = hellaswag_early(score, list(h.item_indices), es, outside, lambda m: None)
    return out
