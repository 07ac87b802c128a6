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


def select_parent(verdicts: Sequence[str], measurements: Sequence[Measurements | None], objective: str) -> int:
    """Index of the variant the next pass starts from (variants must not be empty)."""
    if not verdicts:
        raise ValueError("no variants to choose from")
    for i, v in enumerate(verdicts):
        if v == Verdict.MET.value:
            return i
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
