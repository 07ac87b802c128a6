from __future__ import annotations

import math

import numpy as np
import pytest

from optpipe.forecast import (
    bytes_per_decode_step,
    fit_step_time,
    project,
    roofline_tok_s,
    shape_from_config,
    weight_format,
)
from optpipe.forecast.speed import weight_bytes_read_per_step

FIXED, EFF, HOST_BW = 2.0e-3, 0.7, 4800.0  # H200-like spec bandwidth
SIZES = [0.5e9, 1e9, 2e9, 4e9, 8e9, 16e9]


def step_time(nbytes: float, bw: float = HOST_BW) -> float:
    return FIXED + nbytes / (EFF * bw * 1e9)


def test_bytes_per_step_skips_the_embedding_table(llama8b):
    s = shape_from_config(llama8b)
    fmt = weight_format("bf16")
    # everything but the 128256 x 4096 input table, plus one row of it per sequence
    assert weight_bytes_read_per_step(s, fmt) == 16_060_522_496 - 128256 * 4096 * 2 + 4096 * 2
    tied = shape_from_config(llama8b | {"tie_word_embeddings": True})
    assert weight_bytes_read_per_step(tied, fmt) == weight_bytes_read_per_step(s, fmt)  # head reads the shared matrix
    per_step = bytes_per_decode_step(s, fmt, context_tokens=576, batch=2)
    assert per_step == weight_bytes_read_per_step(s, fmt, batch=2) + 2 * 131_072 * 576


def test_roofline():
    assert roofline_tok_s(16e9, 3350) == pytest.approx(209.375)
    assert roofline_tok_s(16e9, 3350, batch=4) == pytest.approx(4 * 209.375)


def test_fit_recovers_fixed_and_efficiency():
    model = fit_step_time([(b, step_time(b)) for b in SIZES], HOST_BW)
    assert model.fixed_s == pytest.approx(FIXED, rel=1e-9)
    assert model.efficiency == pytest.approx(EFF, rel=1e-9)
    assert model.fixed_se < 1e-12 and model.points == 6 and model.dof == 4
    # projected to a 3350 GB/s GPU: fixed cost kept, 70 % of its spec bandwidth
    f = project(model, 8e9, 3350)
    assert f.tok_s == pytest.approx(1 / step_time(8e9, 3350), rel=1e-9)
    assert f.low == pytest.approx(f.tok_s, rel=1e-6) and f.high == pytest.approx(f.tok_s, rel=1e-6)
    assert f.tok_s < f.roofline_tok_s == pytest.approx(3350 / 8)
    assert f.calibration_points == 6 and "fixed cost" in f.method


def test_standard_errors_match_textbook_ols():
    rng = np.random.default_rng(1)
    pts = [(b, step_time(b) + rng.normal(0, 2e-4)) for b in SIZES for _ in range(3)]
    model = fit_step_time(pts, HOST_BW)
    x = np.array([b for b, _ in pts]) / 1e9
    y = np.array([t for _, t in pts])
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    intercept = y.mean() - slope * x.mean()
    s2 = ((y - intercept - slope * x) ** 2).sum() / (len(x) - 2)
    sxx = ((x - x.mean()) ** 2).sum()
    assert model.fixed_s == pytest.approx(intercept)
    assert model.var_slope == pytest.approx(s2 / sxx)
    assert model.var_fixed == pytest.approx(s2 * (1 / len(x) + x.mean() ** 2 / sxx))
    assert model.cov_fixed_slope == pytest.approx(-x.mean() * s2 / sxx)
    assert model.efficiency_se == pytest.approx(model.efficiency * math.sqrt(s2 / sxx) / slope)


def test_projection_bounds_use_the_full_covariance():
    """At u GB (host-equivalent) the fitted mean step time has variance s^2 (1/n + (u - mean x)^2 / Sxx);
    dropping the fixed/slope covariance would overstate it whenever mean x > 0."""
    rng = np.random.default_rng(3)
    pts = [(b, step_time(b) + rng.normal(0, 3e-4)) for b in SIZES for _ in range(3)]
    model = fit_step_time(pts, HOST_BW)
    x = np.array([b for b, _ in pts]) / 1e9
    sxx = ((x - x.mean()) ** 2).sum()
    u = 4.0 * HOST_BW / 3350  # 4 GB read on a 3350 GB/s target = this many GB at host speed
    sd = model.residual_sd_s * math.sqrt(1 / len(x) + (u - x.mean()) ** 2 / sxx)
    f = project(model, 4e9, 3350)
    assert 1 / f.low == pytest.approx(f.step_s + 1.96 * sd, rel=1e-9)
    assert 1 / f.high == pytest.approx(f.step_s - 1.96 * sd, rel=1e-9)


def test_bounds_widen_with_noise_and_cover_the_truth():
    rng = np.random.default_rng(2)
    widths = []
    for sd in (1e-5, 1e-4, 5e-4):
        pts = [(b, step_time(b) + rng.normal(0, sd)) for b in SIZES for _ in range(4)]
        f = project(fit_step_time(pts, HOST_BW), 4e9, 3350)
        truth = 1 / step_time(4e9, 3350)
        assert f.low <= truth <= f.high
        widths.append(f.high - f.low)
    assert widths[0] < widths[1] < widths[2]


def test_model_error_term_widens_bounds():
    model = fit_step_time([(b, step_time(b)) for b in SIZES], HOST_BW)
    plain = project(model, 4e9, 3350)
    wide = project(model, 4e9, 3350, model_error_rel=0.1)
    assert wide.tok_s == pytest.approx(plain.tok_s)
    assert wide.low == pytest.approx(plain.tok_s / 1.196)
    assert wide.high == pytest.approx(plain.tok_s / (1 - 0.196))
    huge = project(model, 4e9, 3350, model_error_rel=0.9)  # lower step-time bound < 0: capped at the roofline
    assert huge.high == huge.roofline_tok_s and huge.low < huge.tok_s


def test_one_size_is_not_enough():
    with pytest.raises(ValueError, match="2 distinct bytes-per-step"):
        fit_step_time([(4e9, 0.01)], HOST_BW)
    with pytest.raises(ValueError, match="1 distinct size"):
        fit_step_time([(4e9, 0.01), (4e9, 0.011), (4e9, 0.012)], HOST_BW)
    with pytest.raises(ValueError, match="does not grow"):
        fit_step_time([(1e9, 0.02), (4e9, 0.01)], HOST_BW)


def test_two_points_fit_exactly_and_say_so():
    model = fit_step_time([(1e9, step_time(1e9)), (8e9, step_time(8e9))], HOST_BW)
    assert model.dof == 0 and model.var_fixed == 0 and any("exactly" in n for n in model.notes)
    assert model.efficiency == pytest.approx(EFF)
