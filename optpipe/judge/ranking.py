"""Which candidate to keep: pure functions over verdicts and measurements, table-tested.

Two choices a build makes: which variant of a pass the next pass builds on (the first that met the
budget, else the best by the objective), and which candidate becomes the artifact (only ones that
met every line; with stop: first the first of them, with stop: best the best by the objective).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from optpipe.judge.budget import Verdict
from optpipe.measure.results import Measurements


def objective_key(m: Measurements | None, objective: str) -> float:
    """Sort key, lower is better. Decode speed ranks by its interval's lower bound, so an unstable
    figure ranks low; a candidate without the figure ranks last."""
    if m is None:
        return math.inf
    if objective == "decode_tok_s":
        if m.benchmark is None:
            return 0.0
        s = m.benchmark.decode_tok_s
        return -(s.mean - 1.96 * s.stdev / max(s.n, 1) ** 0.5)
    if objective == "size_gb":
        return float(m.size_bytes)
    if objective == "memory_gb":
        return m.peak_memory_bytes()
    raise ValueError(f"unknown objective {objective!r}")


def interleaved_ratio_low(m: Measurements | None) -> float | None:
    """Lower bound of the speed ratio over the parent, when timed interleaved (else None)."""
    sv = m.speed_vs_parent if m is not None else None
    if sv is None or not sv.interleaved or math.isnan(sv.low):
        return None
    return sv.low


def select_parent(verdicts: Sequence[str], measurements: Sequence[Measurements | None], objective: str) -> int:
    """Index of the variant the next pass starts from (variants must not be empty). Variants share
    one parent, so by decode speed they rank by their interleaved ratio over it when every one has
    it: each was timed beside the same parent, whereas their absolute figures come from different
    moments of a possibly busy machine."""
    if not verdicts:
        raise ValueError("no variants to choose from")
    for i, v in enumerate(verdicts):
        if v == Verdict.MET.value:
            return i
    lows = [interleaved_ratio_low(m) for m in measurements]
    if objective == "decode_tok_s" and all(low is not None for low in lows):
        return max(range(len(verdicts)), key=lambda i: lows[i])
    return min(range(len(verdicts)), key=lambda i: objective_key(measurements[i], objective))


def select_artifact(
    verdicts: Sequence[str], measurements: Sequence[Measurements | None], stop: str, objective: str
) -> int | None:
    """Index of the candidate that becomes the artifact, or None when none met every line."""
    met = [i for i, v in enumerate(verdicts) if v == Verdict.MET.value]
    if not met:
        return None
    if stop == "first":
        return met[0]
    return min(met, key=lambda i: objective_key(measurements[i], objective))


def build_status(verdicts: Sequence[str]) -> Verdict:
    """MET if any candidate met every line; else INCONCLUSIVE if any was undecided; else NOT MET."""
    if Verdict.MET.value in verdicts:
        return Verdict.MET
    return Verdict.INCONCLUSIVE if Verdict.INCONCLUSIVE.value in verdicts else Verdict.NOT_MET
