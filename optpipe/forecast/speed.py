"""Decode speed before loading: bytes a decode step must read, the bandwidth roofline on them, and a
two-term step-time model calibrated on measured runs and projected to another GPU.

Batch-b decode is memory-bound: each step reads every weight used once (shared by the b sequences)
plus each sequence's KV cache. The roofline, b x bandwidth / bytes_per_step, is a ceiling; real steps
also pay a fixed cost (kernel launches, Python, sampling) and reach only a fraction of the spec
bandwidth, hence

    t_step = fixed_s + bytes_per_step / (efficiency x spec_bandwidth).

`fit_step_time` estimates (fixed_s, efficiency) by least squares from measurements on one GPU;
`project` moves them to another GPU under two assumptions a reviewer should keep in mind: the fixed
cost transfers unchanged between GPUs running the same software stack (same torch, kernels, launch
path), and the efficiency transfers as a fraction of each device's *spec* bandwidth. Cross-GPU
validation measures how wrong that is; its relative error enters `project` as `model_error_rel`.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict

from optpipe.forecast.dtypes import DTYPE_BYTES, GB
from optpipe.forecast.formats import WeightFormat, decoder_linear_bytes, head_bytes
from optpipe.forecast.shape import ModelShape


def weight_bytes_read_per_step(shape: ModelShape, fmt: WeightFormat, batch: int = 1) -> int:
    """Weight bytes one decode step reads: every decoder Linear as held during decode, the output head
    (the embedding matrix when tied), norms and biases. Not the input embedding table: the lookup
    reads one row per sequence (batch x hidden elements, counted)."""
    dense = (shape.other_params + batch * shape.hidden_size) * fmt.dense_bytes
    return decoder_linear_bytes(shape, fmt, resident=True) + head_bytes(shape, fmt) + round(dense)


def bytes_per_decode_step(
    shape: ModelShape, fmt: WeightFormat, context_tokens: float, batch: int = 1, kv_dtype_bytes: float | None = None
) -> float:
    """Weights read once per step plus each sequence's KV cache at `context_tokens` positions (pass the
    average over a generation, prompt + new/2, for a whole-run figure). KV defaults to the compute dtype."""
    kv = shape.kv_bytes_per_token(kv_dtype_bytes or DTYPE_BYTES[fmt.compute_dtype])
    return weight_bytes_read_per_step(shape, fmt, batch) + batch * kv * context_tokens


def roofline_tok_s(bytes_per_step: float, bandwidth_gbs: float, batch: int = 1) -> float:
    """Ceiling on tokens/s: batch tokens per step, a step no faster than reading its bytes."""
    return batch * bandwidth_gbs * GB / bytes_per_step


class StepTimeModel(BaseModel):
    """t_step = fixed_s + slope_s_per_gb x GB read, slope = 1 / (efficiency x spec bandwidth).
    Covariance entries are of (fixed_s, slope_s_per_gb), from ordinary least squares."""

    model_config = ConfigDict(frozen=True)

    fixed_s: float
    efficiency: float  # achieved fraction of host_spec_bandwidth_gbs
    host_spec_bandwidth_gbs: float
    slope_s_per_gb: float
    var_fixed: float
    var_slope: float
    cov_fixed_slope: float
    fixed_se: float
    efficiency_se: float  # delta method: efficiency x se(slope) / slope
    residual_sd_s: float
    points: int
    dof: int
    notes: tuple[str, ...] = ()


def fit_step_time(points: list[tuple[float, float]], host_spec_bandwidth_gbs: float) -> StepTimeModel:
    """OLS of measured step seconds on (1, GB read per step) over (bytes_per_step, step_s) points, all
    from one GPU whose spec bandwidth is `host_spec_bandwidth_gbs`. Coefficient covariance is
    s^2 (X'X)^-1 with s^2 = RSS / (n - 2); two points fit exactly and leave no residual to estimate it
    from (the covariance is then zero and says so in `notes`)."""
    if host_spec_bandwidth_gbs <= 0:
        raise ValueError("host_spec_bandwidth_gbs must be positive")
    pts = [(float(b), float(t)) for b, t in points]
    distinct = {b for b, _ in pts}
    if len(distinct) < 2:
        raise ValueError(
            f"fit_step_time needs step times at >= 2 distinct bytes-per-step values (e.g. two weight "
            f"formats or context lengths) to separate the fixed cost from the bandwidth term; got "
            f"{len(pts)} point(s) at {len(distinct)} distinct size(s)"
        )
    x = np.array([b for b, _ in pts]) / GB
    y = np.array([t for _, t in pts])
    design = np.column_stack([np.ones_like(x), x])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    fixed, slope = float(beta[0]), float(beta[1])
    if slope <= 0:
        raise ValueError(
            f"fitted seconds per GB is {slope:.3g} <= 0: step time does not grow with bytes read over "
            f"these points; measure sizes further apart or more trials per point"
        )
    dof = len(pts) - 2
    resid = y - design @ beta
    s2 = float(resid @ resid) / dof if dof > 0 else 0.0
    cov = s2 * np.linalg.inv(design.T @ design)
    efficiency = 1.0 / (slope * host_spec_bandwidth_gbs)
    notes = []
    if dof == 0:
        notes.append("2 points fit exactly: no residual to estimate coefficient errors from; bounds carry model_error_rel only")
    if efficiency > 1:
        notes.append(f"efficiency {efficiency:.2f} > 1 of spec bandwidth: measurements or byte counts are off")
    if fixed < 0:
        notes.append(f"fixed cost {fixed * 1e3:.3f} ms < 0: noise or a non-linear regime; extrapolate with care")
    return StepTimeModel(
        fixed_s=fixed,
        efficiency=efficiency,
        host_spec_bandwidth_gbs=host_spec_bandwidth_gbs,
        slope_s_per_gb=slope,
        var_fixed=float(cov[0, 0]),
        var_slope=float(cov[1, 1]),
        cov_fixed_slope=float(cov[0, 1]),
        fixed_se=math.sqrt(max(cov[0, 0], 0.0)),
        efficiency_se=efficiency * math.sqrt(max(cov[1, 1], 0.0)) / slope,
        residual_sd_s=math.sqrt(s2),
        points=len(pts),
        dof=dof,
        notes=tuple(notes),
    )


class SpeedForecast(BaseModel):
    model_config = ConfigDict(frozen=True)

    tok_s: float
    low: float
    high: float
    roofline_tok_s: float
    step_s: float
    method: str
    calibration_points: int
    target_spec_bandwidth_gbs: float


def project(
    model: StepTimeModel,
    bytes_per_step: float,
    target_spec_bandwidth_gbs: float,
    batch: int = 1,
    model_error_rel: float = 0.0,
    z: float = 1.96,
) -> SpeedForecast:
    """tok/s of a step reading `bytes_per_step` on a GPU of spec bandwidth `target_spec_bandwidth_gbs`.

    With r = host / target spec bandwidth and u = GB read x r, t = fixed + slope u and
    Var(t) = Var(fixed) + u^2 Var(slope) + 2 u Cov(fixed, slope). The relative error of t combines
    sd(t)/t with `model_error_rel` (a relative standard deviation of the transfer itself, from
    cross-GPU validation) in quadrature; t +- z x that maps to the tok/s bounds (batch / t is
    monotone, so the interval carries over exactly). `high` is capped at the roofline, which no real
    step exceeds; it is infinite when the lower step-time bound reaches zero."""
    if target_spec_bandwidth_gbs <= 0 or bytes_per_step <= 0:
        raise ValueError("target_spec_bandwidth_gbs and bytes_per_step must be positive")
    u = bytes_per_step / GB * model.host_spec_bandwidth_gbs / target_spec_bandwidth_gbs
    t = model.fixed_s + model.slope_s_per_gb * u
    if t <= 0:
        raise ValueError(f"projected step time {t:.3g} s <= 0: far outside the calibration range")
    var_t = max(model.var_fixed + u * u * model.var_slope + 2 * u * model.cov_fixed_slope, 0.0)
    rel = math.sqrt(var_t / (t * t) + model_error_rel**2)
    t_high, t_low = t * (1 + z * rel), t * (1 - z * rel)
    roof = roofline_tok_s(bytes_per_step, target_spec_bandwidth_gbs, batch)
    tok_s = batch / t
    high = batch / t_low if t_low > 0 else math.inf
    if tok_s <= roof:
        high = min(high, roof)
    method = (
        f"two-term step time (fixed {model.fixed_s * 1e3:.3f} ms + bytes / ({model.efficiency:.2f} x spec "
        f"bandwidth)), OLS on {model.points} points at {model.host_spec_bandwidth_gbs:g} GB/s; fixed cost and "
        f"bandwidth fraction transferred to {target_spec_bandwidth_gbs:g} GB/s"
    )
    return SpeedForecast(
        tok_s=tok_s,
        low=batch / t_high,
        high=high,
        roofline_tok_s=roof,
        step_s=t,
        method=method,
        calibration_points=model.points,
        target_spec_bandwidth_gbs=target_spec_bandwidth_gbs,
    )
