"""Early-stopped evaluation: the perplexity stopper on paired windows, the judge on stopped
results, and a tiny-model build that stops a clearly-fine candidate at the first look."""

import math

import pytest

from optpipe.build.engine import build
from optpipe.build.recipe import parse_recipe
from optpipe.evaluate.hellaswag import HellaSwagResult
from optpipe.evaluate.sequential import SequentialStop
from optpipe.judge.budget import Verdict, judge
from optpipe.measure.early_stop import OTHER_LINE, PerplexityStopper, hellaswag_early, replay
from optpipe.measure.job import EarlyStopJob
from optpipe.spec.settings import AccuracyBudget, Goals
from tests.conftest import read_manifest, tiny_recipe_text
from tests.factories import result


def _job(**kw) -> EarlyStopJob:
    base = dict(
        confidence=0.95,
        hellaswag_max_drop_points=None,
        perplexity_max_rise_pct=3.0,
        min_items=100,
        chunk_items=50,
        min_windows=8,
        chunk_windows=4,
        base_window_nll=[2.0 * 100 + (i % 3) for i in range(32)],
        base_window_tokens=[100] * 32,
    )
    return EarlyStopJob(**(base | kw))


def _run(stopper: PerplexityStopper, cand_nll: list[float]) -> int:
    nlls, counts = [], []
    for x in cand_nll:
        nlls.append(x)
        counts.append(100)
        if stopper(nlls, counts, len(cand_nll)):
            break
    return len(nlls)


def test_hopeless_perplexity_stops_at_the_first_look_outside():
    es = _job()
    cand = [b + 100 * 0.3 + (i % 2) for i, b in enumerate(es.base_window_nll)]  # +35 % perplexity
    stopper = PerplexityStopper(es, None, lambda m: None)
    assert _run(stopper, cand) == 8
    rec = stopper.record()
    assert rec.decision == "outside" and rec.used == 8 and rec.planned == 32 and "outside" in rec.reason


def test_borderline_perplexity_runs_the_whole_set():
    es = _job()
    cand = [b + 100 * math.log1p(0.03) + (1 if i % 2 else -1) * 5 for i, b in enumerate(es.base_window_nll)]
    stopper = PerplexityStopper(es, None, lambda m: None)
    assert _run(stopper, cand) == 32
    rec = stopper.record()
    assert rec.decision is None and not rec.stopped_early and "fixed-n" in rec.reason


def test_stopper_waits_for_the_kl_positions():
    class Recorder:
        n_tokens, count = 1000, 0

    es = _job()
    cand = [b + 30 for b in es.base_window_nll]
    assert _run(PerplexityStopper(es, Recorder(), lambda m: None), cand) == 32  # KL never got its positions


def _scorer(acc_norm: dict[int, float], calls: list):
    def score(chunk):
        calls.append(len(chunk))
        vals = [acc_norm[i] for i in chunk]
        return HellaSwagResult(
            n=len(chunk), acc=0, acc_se=0, acc_norm=0, acc_norm_se=0, item_indices=list(chunk), item_acc=vals, item_acc_norm=vals
        )

    return score


def test_hellaswag_scores_chunks_and_stops_a_hopeless_candidate_at_the_first_look():
    items = list(range(300))
    es = _job(hellaswag_max_drop_points=1.0, base_items={i: float(i % 2) for i in items})
    calls: list = []
    res = hellaswag_early(_scorer({i: 0.0 for i in items}, calls), items, es, False, lambda m: None)  # 50-point drop
    assert calls == [100] and res.n == 100 and res.item_indices == items[:100]
    assert res.sequential.decision == "outside" and res.sequential.used == 100 and res.sequential.planned == 300


def test_hellaswag_stops_when_another_line_already_failed():
    items = list(range(300))
    es = _job(hellaswag_max_drop_points=1.0, base_items={i: float(i % 2) for i in items})
    calls: list = []
    res = hellaswag_early(_scorer({i: float(i % 2) for i in items}, calls), items, es, True, lambda m: None)
    assert calls == [100] and res.sequential.decision is None and res.sequential.reason == OTHER_LINE


def test_hellaswag_borderline_scores_every_chunk():
    items = list(range(300))
    es = _job(hellaswag_max_drop_points=1.0, base_items={i: float(i % 2) for i in items})
    cand = {i: 1.0 - (i % 2) if i % 5 == 0 else float(i % 2) for i in items}  # 20 % flip, as many each way: drop 0
    calls: list = []
    res = hellaswag_early(_scorer(cand, calls), items, es, False, lambda m: None)
    assert calls == [100, 50, 50, 50, 50] and res.n == 300 and not res.sequential.stopped_early


def test_replay_agrees_with_the_full_verdict_on_clear_cases():
    budget = AccuracyBudget(hellaswag_max_drop_points=5.0, perplexity_max_rise_pct=3.0)
    base = result([float(i % 2) for i in range(300)], nll=[2.0, 2.1, 1.9, 2.05] * 8)
    bad = result([0.0] * 300, nll=[x + 0.3 for x in [2.0, 2.1, 1.9, 2.05] * 8])
    es = _job(
        hellaswag_max_drop_points=5.0,
        base_items=dict(zip(base.hellaswag.item_indices, base.hellaswag.item_acc_norm)),
        base_window_nll=base.perplexity.window_nll,
        base_window_tokens=base.perplexity.window_tokens,
    )
    early = replay(bad, es)
    assert early.perplexity.sequential.used == 8 and early.hellaswag.sequential.used == 100
    assert early.hellaswag.sequential.reason == OTHER_LINE  # perplexity already failed
    full_checks = judge(base, bad, budget, Goals())
    early_checks = judge(base, early, budget, Goals())
    assert [c.verdict for c in full_checks] == [Verdict.NOT_MET, Verdict.NOT_MET]
    assert early_checks[1].verdict == Verdict.NOT_MET  # the stopped line says NOT MET; the other is cut short
    assert early_checks[0].verdict in (Verdict.NOT_MET, Verdict.INCONCLUSIVE)


def test_judge_uses_the_sequence_interval_for_a_stopped_candidate():
    base = result([1.0] * 150 + [0.0] * 150)
    cand = result([0.0] * 60 + [1.0] * 40)  # the first 100 items: 60 lost -> 60 point drop
    cand.hellaswag.sequential = SequentialStop(
        planned=300, used=100, looks=1, decision="outside", reason="r", alpha=0.025, n_opt=200
    )
    check = judge(base, cand, AccuracyBudget(hellaswag_max_drop_points=5.0, perplexity_max_rise_pct=None), Goals())[0]
    assert check.verdict == Verdict.NOT_MET and "early-stopped: paired over 100 of 300 items" in check.detail
    fixed = judge(
        base,
        result([0.0] * 60 + [1.0] * 40),
        AccuracyBudget(hellaswag_max_drop_points=5.0, perplexity_max_rise_pct=None),
        Goals(),
    )
    assert check.high - check.low > fixed[0].high - fixed[0].low  # valid at every look, so wider than fixed-n


def test_judge_pairs_a_stopped_perplexity_with_the_baseline_prefix():
    base = result(nll=[2.0, 2.1, 1.9, 2.05] * 8)
    cand = result(nll=[x + 0.3 for x in [2.0, 2.1, 1.9, 2.05] * 2])
    cand.perplexity.sequential = SequentialStop(
        planned=32, used=8, looks=1, decision="outside", reason="r", alpha=0.025, n_opt=16
    )
    check = judge(base, cand, AccuracyBudget(hellaswag_max_drop_points=None, perplexity_max_rise_pct=3.0), Goals())[0]
    assert check.value == __import__("pytest").approx(100 * math.expm1(0.3))
    assert check.verdict == Verdict.NOT_MET and "8 of 32 windows" in check.detail


@pytest.mark.slow  # tens of seconds of tiny builds: CI runs it in its second, slow step
def test_build_stops_a_clearly_fine_candidate_early(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    text = tiny_recipe_text(
        tiny_model_dir,
        out,
        "  - pass: attention\n    implementation: eager\n",
        budget="{hellaswag_max_drop_points: 60, perplexity_max_rise_pct: 50}",
        search="{early_stop: true, min_items: 20, chunk_items: 20, min_windows: 4, chunk_windows: 2}",
    )
    text = text.replace("hellaswag_items: 12", "hellaswag_items: 40\n  kl_tokens: 64").replace(
        "perplexity_tokens: 600", "perplexity_tokens: 1000"
    )
    res = build(parse_recipe(text))
    assert res.status == Verdict.MET
    m = read_manifest(out)
    base, cand = (c["measurements"] for c in m["candidates"])
    assert base["hellaswag"]["n"] == 40 and base["hellaswag"].get("sequential") is None  # the reference is always whole
    hs, ppl = cand["hellaswag"]["sequential"], cand["perplexity"]["sequential"]
    assert (hs["used"], hs["planned"], hs["decision"]) == (20, 40, "inside") and cand["hellaswag"]["n"] == 20
    assert (ppl["used"], ppl["decision"]) == (4, "inside") and ppl["planned"] == len(base["perplexity"]["window_tokens"])
    assert cand["kl"]["n"] == 64
    details = {c["name"]: c["detail"] for c in m["candidates"][1]["checks"]}
    assert details["hellaswag_drop_points"].startswith("early-stopped: paired over 20 of 40 items")
