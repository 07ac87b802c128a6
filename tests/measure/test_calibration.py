"""The two-term projection (fixed per-step cost + bandwidth-bound rest) and the out-of-memory record."""

import math

import pytest
import torch

from optpipe.judge.budget import Verdict, judge
from optpipe.measure.calibration import CalibrationPoint, HostCalibration, project_step
from optpipe.measure.job import ProjectionJob
from optpipe.measure.roofline import project_to_target
from optpipe.spec.settings import AccuracyBudget, BenchmarkSettings, Goals
from tests.factories import bench, result


def calibration(fixed_s=1e-3, fixed_se=0.0, error=0.0, bw=3350.0):
    return HostCalibration(
        gpu="H100",
        torch="2.x",
        spec_bandwidth_gbs=bw,
        copy_bandwidth_gbs=3000.0,
        fixed_s=fixed_s,
        fixed_se=fixed_se,
        efficiency=0.8,
        model_error_rel=error,
        prompt_tokens=512,
        new_tokens=128,
        points=[CalibrationPoint(shape="x", bytes_per_step=1e9, step_s=2e-3, step_s_stdev=0.0, decode_tok_s=500.0, warmup_s=1.0)],
    )


def test_fixed_cost_is_kept_and_the_rest_scales_with_bandwidth():
    cal = calibration(fixed_s=1e-3)
    # 5 ms measured, 1 ms of it fixed: on a target with half the bandwidth the 4 ms double -> 9 ms
    tok_s, low, high = project_step(5e-3, 0.0, cal, 3350.0 / 2)
    assert tok_s == pytest.approx(1 / 9e-3) and low == high == pytest.approx(tok_s)
    # the old single-term projection would say 10 ms; a launch-bound step barely moves
    tok_s, _, _ = project_step(1.1e-3, 0.0, cal, 3350.0 / 2)
    assert tok_s == pytest.approx(1 / 1.2e-3)


def test_interval_widens_with_fit_error_spread_and_model_error():
    tight = project_step(5e-3, 0.0, calibration(), 1000.0)
    loose = project_step(5e-3, 1e-4, calibration(fixed_se=2e-4, error=0.1), 1000.0)
    assert tight[1] == pytest.approx(tight[2])
    assert loose[1] < tight[0] < loose[2]


def test_projection_in_the_report_and_the_speed_check():
    from tests.conftest import make_tiny_model

    model = make_tiny_model(384)
    cfg = BenchmarkSettings(prompt_tokens=16, new_tokens=8)
    b = bench(200.0, 4.0, n=4)
    b.decoder = "fused-step-compiled"  # the decoder the calibration was measured with
    job = ProjectionJob(target="rtx4060", bandwidth_gbs=272.0, calibration=calibration(fixed_s=1e-3, error=0.1))
    proj = project_to_target(model, b, cfg, job, fraction=0.5)
    assert proj.low < proj.decode_tok_s < proj.high and proj.method.startswith("two-term")
    assert proj.decode_tok_s <= proj.roofline_tok_s
    b.roofline = None
    m = result(b=b)
    m.benchmark.roofline = bench(200.0, projected_tok_s=1.0).roofline
    m.benchmark.roofline.projected = proj
    none = AccuracyBudget(hellaswag_max_drop_points=None, perplexity_max_rise_pct=None)
    (check,) = judge(result(), m, none, Goals(min_decode_tok_s=proj.decode_tok_s))
    assert check.projected and check.low == proj.low and check.high == proj.high
    assert check.verdict == Verdict.INCONCLUSIVE  # the goal sits inside the interval
    uncal = project_to_target(model, b, cfg, ProjectionJob(target="rtx4060", bandwidth_gbs=272.0), fraction=0.5)
    assert uncal.low is None and uncal.method.startswith("uncalibrated")
    b.decoder = "eager"  # a decoder the calibration does not describe: its fixed cost is unknown, say so
    other = project_to_target(model, b, cfg, job, fraction=0.5)
    assert other.low is None and "not eager" in other.method


def test_out_of_memory_is_a_result_not_a_crash(tiny_model_dir, monkeypatch):
    import optpipe.runtime as runtime
    from optpipe.measure.job import measure_job
    from optpipe.measure.worker import measure_candidate
    from optpipe.spec.settings import EvaluationSettings

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 29.92 GiB")

    monkeypatch.setattr(runtime, "load_candidate", oom)
    m = measure_candidate(measure_job(tiny_model_dir, "cpu", EvaluationSettings(), BenchmarkSettings()))
    assert m.out_of_memory.startswith("out of memory") and "29.92 GiB" in m.out_of_memory
    assert m.size_bytes > 0 and m.benchmark is None and m.hellaswag is None
    m.memory_cap_gb = 8.0
    none = AccuracyBudget(hellaswag_max_drop_points=None, perplexity_max_rise_pct=None)
    checks = {c.name: c for c in judge(result(), m, none, Goals(max_memory_gb=8, min_decode_tok_s=40))}
    assert checks["memory_gb"].verdict == Verdict.NOT_MET and checks["memory_gb"].high == math.inf
    assert checks["decode_tok_s"].verdict == Verdict.NOT_MEASURED
