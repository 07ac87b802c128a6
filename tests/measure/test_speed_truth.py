"""Speed figures a busy machine cannot fake: host load recorded and flagged, CV misses warned,
candidate and parent timed in alternating rounds with a ratio interval."""

import math
import subprocess
import sys
import time

import pytest

from optpipe.measure.job import ParentJob, measure_job
from optpipe.measure.stats import ratio_interval, separate_ratio_interval
from optpipe.spec.settings import BenchmarkSettings, EvaluationSettings
from tests.conftest import make_tiny_model
from tests.factories import bench, result

NO_EVAL = EvaluationSettings(hellaswag_items=0, perplexity_tokens=0)


@pytest.fixture(scope="module")
def parent_dir(tmp_path_factory, tiny_tokenizer):
    """A second tiny model (other weights) saved as the 'parent' of the tiny candidate."""
    d = tmp_path_factory.mktemp("tiny-parent")
    make_tiny_model(len(tiny_tokenizer), seed=1).save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d


def _decoder_and_prompt(candidate, n=16):
    from optpipe.evaluate.data import benchmark_prompt_text

    ids = candidate.tokenizer(benchmark_prompt_text(), return_tensors="pt", add_special_tokens=False).input_ids
    return candidate.decoder(), ids[:, :n]


def test_interleaved_rounds_alternate_and_give_a_ratio_interval(tiny_candidate, parent_dir):
    from optpipe.measure.bench import interleaved_ratio
    from optpipe.runtime import load_candidate

    cfg = BenchmarkSettings(prompt_tokens=16, new_tokens=6, min_trials=3, max_trials=4, warmup=1, target_cv=1e-9)
    cand, prompt = _decoder_and_prompt(tiny_candidate)
    parent = load_candidate(parent_dir).decoder()
    r = interleaved_ratio(cand, parent, prompt, cfg, "0 baseline", 0.95)
    assert r.interleaved and r.rounds == 4  # a CV target nothing meets: every round runs
    assert r.order == ["candidate", "parent", "parent", "candidate"] * 2  # alternating, ABBA-balanced
    assert len(r.candidate_tok_s) == len(r.parent_tok_s) == 4
    assert r.round_ratios == pytest.approx([c / p for c, p in zip(r.candidate_tok_s, r.parent_tok_s)])
    assert r.low <= r.ratio <= r.high and r.low > 0
    assert r.host_load is not None and r.host_load.seconds > 0


def test_worker_times_candidate_beside_parent(tiny_model_dir, parent_dir, monkeypatch):
    from optpipe.measure import worker

    cfg = BenchmarkSettings(prompt_tokens=16, new_tokens=6, min_trials=2, max_trials=3, warmup=1)
    job = measure_job(tiny_model_dir, "cpu", NO_EVAL, cfg, parent=ParentJob(directory=str(parent_dir), name="0 baseline"))
    m = worker.measure_candidate(job)
    sv = m.speed_vs_parent
    assert sv.interleaved and sv.parent == "0 baseline" and 2 <= sv.rounds <= 3 and sv.low <= sv.ratio <= sv.high

    monkeypatch.setattr(worker, "HEADROOM_BYTES", 10**15)  # the memory check says the parent does not fit
    m = worker.measure_candidate(job)
    sv = m.speed_vs_parent
    assert not sv.interleaved and "beside the candidate" in sv.why_not_interleaved and math.isnan(sv.ratio)
    assert any("not interleaved" in w for w in m.warnings)

    def broken(*args):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(worker, "HEADROOM_BYTES", 0)
    monkeypatch.setattr(worker, "_interleave", broken)
    m = worker.measure_candidate(job)  # a failure costs the ratio, never the candidate's figures
    assert m.benchmark is not None and not m.speed_vs_parent.interleaved
    assert "decoder exploded" in m.speed_vs_parent.why_not_interleaved


def test_separate_timings_give_a_labelled_ratio():
    from optpipe.build.engine import with_separate_ratio
    from optpipe.measure.results import SpeedRatio
    from optpipe.output.manifest import CandidateRecord

    cand = result(b=bench(20.0, 1.0))
    cand.speed_vs_parent = SpeedRatio(
        parent="0 baseline", interleaved=False, ratio=math.nan, low=math.nan, high=math.nan, confidence=0.95
    )
    with_separate_ratio(cand, CandidateRecord(index=0, name="baseline", chain=[], measurements=result(b=bench(10.0, 0.5))), 0.95)
    sv = cand.speed_vs_parent
    assert sv.ratio == pytest.approx(2.0) and sv.low < 2.0 < sv.high and not sv.interleaved


def test_ratio_intervals():
    r, lo, hi = ratio_interval([math.log(1.1)] * 3 + [math.log(1.2)], 0.95)
    assert lo < r < hi and 1.1 < r < 1.2
    assert math.isnan(ratio_interval([0.0], 0.95)[1])  # one round: no interval
    r, lo, hi = separate_ratio_interval(bench(10.0, 0.0).decode_tok_s, bench(10.0, 0.0).decode_tok_s, 0.95)
    assert r == lo == hi == 1.0


def test_missed_cv_target_is_warned():
    b = bench(10.0, 4.0).model_copy(update={"stable": False, "config": {"target_cv": 0.05}})
    assert any("missed the 5% target" in w for w in b.figure_warnings())
    m = result(b=b)
    assert any("CV" in w for w in m.collect_warnings())


def test_benchmark_under_load_is_marked(tiny_candidate):
    """A process spinning on a core while the benchmark times: the result says so (no speed asserted)."""
    from optpipe.measure.bench import benchmark

    cfg = BenchmarkSettings(prompt_tokens=16, new_tokens=32, min_trials=6, max_trials=6, warmup=1, target_cv=1e-9)
    decoder, prompt = _decoder_and_prompt(tiny_candidate)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it start spinning
        t = time.perf_counter()
        b = benchmark(decoder, prompt, cfg)
        while time.perf_counter() - t < 0.5:  # long enough for CPU-time counters to see the spinner
            b = benchmark(decoder, prompt, cfg)
    finally:
        spinner.kill()
        spinner.wait()
    assert b.host_load.under_load and b.host_load.other_cpu_cores > 0.5
    assert any("under load" in w for w in b.figure_warnings())


def test_report_marks_load_instability_and_ratio():
    from optpipe.measure.load import HostLoad
    from optpipe.measure.results import SpeedRatio
    from optpipe.output.manifest import CandidateRecord
    from optpipe.output.report import row

    load = HostLoad(seconds=1.0, cpu_count=2, other_cpu_cores=1.0, under_load=True, reason="other processes used 1.0 cores")
    b = bench(3.0, 1.0).model_copy(update={"host_load": load, "stable": False, "config": {"target_cv": 0.05}})
    m = result(b=b)
    m.speed_vs_parent = SpeedRatio(parent="0 baseline", interleaved=True, ratio=1.5, low=1.4, high=1.6, confidence=0.95)
    speed = " ".join(row(CandidateRecord(index=1, name="x", chain=[], status="measured", measurements=m)))
    assert "UNDER LOAD" in speed and "UNSTABLE" in speed and "x1.50 [1.40, 1.60] vs parent" in speed
    assert "not interleaved" not in speed
