"""The isolated measurement worker: real benchmark figures, and no memory leaking in from the parent."""

import pytest

from optpipe.errors import MeasurementFailed
from optpipe.measure.job import measure_job
from optpipe.measure.launcher import run_isolated
from optpipe.measure.stats import Spread, percentile
from optpipe.spec.settings import BenchmarkSettings, EvaluationSettings

BENCH = BenchmarkSettings(prompt_tokens=16, new_tokens=6, min_trials=2, max_trials=3, warmup=1)
EVAL = EvaluationSettings(
    hellaswag_items=4, seed=1, batch_size=4, perplexity_tokens=300, perplexity_window=128, perplexity_stride=64
)
NO_EVAL = EvaluationSettings(hellaswag_items=0, perplexity_tokens=0)


def test_worker_measures_candidate(tiny_model_dir, tmp_path):
    events = []
    r = run_isolated(measure_job(tiny_model_dir, "cpu", EVAL, BENCH), tmp_path / "job", tmp_path / "log.txt", events.append)
    b = r.benchmark
    assert 2 <= b.trials <= 3 and len(b.decode_tok_s_trials) == b.trials
    assert b.token_latency_ms.n == b.trials * 5  # new_tokens - 1 timed steps per trial
    assert b.decode_tok_s.mean > 0 and b.ttft_ms.p50 > 0
    assert b.token_latency_ms.p50 <= b.token_latency_ms.p95 <= b.token_latency_ms.p99
    assert r.parameters > 0 and r.size_bytes > 0
    assert r.hellaswag.n == 4 and r.perplexity.tokens_scored == 299
    assert r.kl is None  # no reference asked for
    assert any(e.startswith("benchmark") for e in events) and any(e.startswith("hellaswag") for e in events)


def test_parent_memory_does_not_leak_into_child_figure(tiny_model_dir, tmp_path):
    import torch

    ballast = torch.ones(400_000_000)  # 1.6 GB resident in the parent
    ballast.add_(1)
    r = run_isolated(measure_job(tiny_model_dir, "cpu", NO_EVAL, BENCH), tmp_path / "job", tmp_path / "log.txt")
    assert r.benchmark.peak_rss_bytes < 1.2e9 and r.hellaswag is None and r.perplexity is None
    del ballast


def test_worker_failure_raises_with_log(tmp_path):
    with pytest.raises(MeasurementFailed, match="exited with 1"):
        run_isolated(measure_job(tmp_path / "missing", "cpu", EVAL, BENCH), tmp_path / "job", tmp_path / "log.txt")


def test_spread_and_percentile():
    s = Spread.from_values([1.0, 2.0, 3.0, 4.0])
    assert s.mean == 2.5 and s.p50 == 2.5 and s.min == 1.0 and s.max == 4.0
    assert percentile([10, 20, 30, 40, 50], 95) == pytest.approx(48.0)
    assert s.cv == pytest.approx(s.stdev / 2.5)


PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=dict(os.environ, OPTPIPE_PARENT_PID=str(os.getpid())))
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("pdeathsig", [True, False], ids=["prctl", "watcher"])
def test_worker_dies_with_its_sigkilled_parent(pdeathsig):
    """A SIGKILLed build must not leave its measurement process running (it wrote into the next run's logs)."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    child_code = f"import time; from optpipe.measure.worker import die_with_parent; die_with_parent(0.2, {pdeathsig}); print('ready', flush=True); time.sleep(120)"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, child_code], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(parent.stdout.readline()))
    assert parent.stdout.readline().strip() == "ready"  # the child (same stdout) is past die_with_parent
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    try:
        child.wait(timeout=5)
    except psutil.TimeoutExpired:
        child.kill()
        pytest.fail("the worker outlived its SIGKILLed parent by 5 s")
