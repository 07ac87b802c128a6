"""Early stopping replayed on a full build: same verdicts? how much evaluation saved?

Reads the manifest of a build run with `search.early_stop: false` (every item and window scored),
replays the early-stopped evaluation on its per-item and per-window results in the order the worker
scores them (optpipe.measure.early_stop.replay: the production rule, not a copy), judges both, and
prints a markdown table. Evaluation time saved is estimated per candidate as the scored fraction of
its measured HellaSwag and perplexity seconds (scoring time is linear in items and windows).

    PYTHONPATH=. python bench/early_stop_replay.py optpipe-out/cpu-quant/manifest.json [--min-items 100 ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from optpipe.judge.budget import judge, overall
from optpipe.measure.early_stop import replay
from optpipe.measure.job import EarlyStopJob
from optpipe.output.manifest import Manifest
from optpipe.spec.settings import AccuracyBudget, Goals, SearchSettings


def early_stop_job(budget: AccuracyBudget, search: SearchSettings, base) -> EarlyStopJob:
    hs, ppl = base.hellaswag, base.perplexity
    return EarlyStopJob(
        confidence=budget.confidence,
        hellaswag_max_drop_points=budget.hellaswag_max_drop_points,
        perplexity_max_rise_pct=budget.perplexity_max_rise_pct,
        min_items=search.min_items,
        chunk_items=search.chunk_items,
        min_windows=search.min_windows,
        chunk_windows=search.chunk_windows,
        base_items=dict(zip(hs.item_indices, hs.item_acc_norm)) if hs else {},
        base_window_nll=ppl.window_nll if ppl else [],
        base_window_tokens=ppl.window_tokens if ppl else [],
    )


def eval_seconds(m) -> float:
    return (m.hellaswag.seconds or 0.0 if m.hellaswag else 0.0) + (m.perplexity.seconds or 0.0 if m.perplexity else 0.0)


def early_seconds(full, early) -> float:
    s = 0.0
    if full.hellaswag is not None:
        s += (full.hellaswag.seconds or 0.0) * early.hellaswag.n / max(full.hellaswag.n, 1)
    if full.perplexity is not None:
        s += (full.perplexity.seconds or 0.0) * len(early.perplexity.window_tokens) / max(len(full.perplexity.window_tokens), 1)
    return s


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--min-items", type=int)
    ap.add_argument("--chunk-items", type=int)
    ap.add_argument("--min-windows", type=int)
    ap.add_argument("--chunk-windows", type=int)
    a = ap.parse_args(argv)
    m = Manifest.model_validate_json(a.manifest.read_text())
    budget = AccuracyBudget(**m.recipe.get("budget", {}))
    goals = Goals(**m.recipe.get("goals", {}))
    overrides = {k: v for k, v in vars(a).items() if k not in ("manifest",) and v is not None}
    search = SearchSettings(**({k: v for k, v in m.recipe.get("search", {}).items() if k != "early_stop"} | overrides))
    base = m.candidates[0].measurements
    es = early_stop_job(budget, search, base)
    print(
        f"budget: {budget.model_dump()}; search: {search.model_dump(include={'min_items', 'chunk_items', 'min_windows', 'chunk_windows'})}\n"
    )
    print(
        "| candidate | verdict full | verdict early | HellaSwag items | ppl windows | why stopped | eval s full | eval s early (est.) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    tot_full = tot_early = 0.0
    differ = 0
    for rec in m.candidates[1:]:
        full = rec.measurements
        if full is None:
            continue
        early = replay(full, es)
        v_full = overall(judge(base, full, budget, goals)).value
        v_early = overall(judge(base, early, budget, goals)).value
        differ += v_full != v_early
        hs, pp = early.hellaswag.sequential, early.perplexity.sequential
        why = "; ".join(x for x in ((pp.reason if pp else ""), (hs.reason if hs else "")) if x)
        sf, se = eval_seconds(full), early_seconds(full, early)
        tot_full, tot_early = tot_full + sf, tot_early + se
        print(
            f"| {rec.name} | {v_full} | {v_early} | {hs.used if hs else '-'}/{hs.planned if hs else '-'} | "
            f"{pp.used if pp else '-'}/{pp.planned if pp else '-'} | {why} | {sf:.1f} | {se:.1f} |"
        )
    saved = 100 * (1 - tot_early / tot_full) if tot_full else 0.0
    print(
        f"\nevaluation seconds, candidates: full {tot_full:.1f}, early-stopped {tot_early:.1f} ({saved:.0f} % saved); verdicts that differ: {differ}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
