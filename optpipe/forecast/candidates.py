"""A forecast per candidate of a recipe's chain, for `optpipe plan`: which candidates can fit the
target's memory and how fast each could decode there at best, before any model is loaded."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from optpipe.forecast.dtypes import GB
from optpipe.forecast.formats import weight_format
from optpipe.forecast.memory import MemoryForecast, predict_memory
from optpipe.forecast.pruning import PruneSpec, pruned_shape
from optpipe.forecast.shape import ModelShape
from optpipe.forecast.speed import (
    SpeedForecast,
    StepTimeModel,
    bytes_per_decode_step,
    project,
    roofline_tok_s,
)

TABLE_COLUMNS = ["candidate", "weights", "weight GB", "KV GB", "peak GB", "fits target", "roofline tok/s"]


class CandidateSpec(BaseModel):
    """One candidate: compute dtype, quantize-pass method (None = dense) and the structural prunes
    (in order) that made it smaller than the model it started from."""

    model_config = ConfigDict(frozen=True)

    name: str
    dtype: str = "bf16"
    quantization: str | None = None
    group_size: int = 128
    double_quant: bool = True
    quantize_lm_head: bool = False
    prunes: tuple[PruneSpec, ...] = ()


class CandidateForecast(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    format_name: str | None  # None when the candidate's format is impossible (e.g. int4wo on fp16)
    memory: MemoryForecast | None
    roofline_tok_s: float | None  # on the target, None without a target bandwidth
    speed: SpeedForecast | None = None  # with a calibrated step-time model
    fits: bool
    reason: str


def forecast_chain(
    shape: ModelShape,
    steps: list[CandidateSpec | dict],
    prompt_tokens: int,
    new_tokens: int,
    batch: int = 1,
    target_memory_gb: float | None = None,
    target_bandwidth_gbs: float | None = None,
    device: str = "cuda",
    runtime_overhead_bytes: float | None = None,
    step_model: StepTimeModel | None = None,
    model_error_rel: float = 0.0,
) -> list[CandidateForecast]:
    """Forecasts in the order given. Roofline tok/s is at the average context of the benchmark
    (prompt + new/2), on the target's spec bandwidth; with `step_model`, also a projected tok/s."""
    out = []
    for raw in steps:
        spec = raw if isinstance(raw, CandidateSpec) else CandidateSpec(**raw)
        try:
            cand_shape = shape
            for p in spec.prunes:
                cand_shape = pruned_shape(cand_shape, p)
            fmt = weight_format(spec.dtype, spec.quantization, spec.group_size, spec.double_quant, spec.quantize_lm_head)
        except ValueError as e:
            out.append(
                CandidateForecast(name=spec.name, format_name=None, memory=None, roofline_tok_s=None, fits=False, reason=str(e))
            )
            continue
        mem = predict_memory(cand_shape, fmt, prompt_tokens, new_tokens, batch, device, runtime_overhead_bytes)
        if target_memory_gb is None:
            fits, reason = True, f"no memory target (needs {mem.peak_bytes / GB:.2f} GB)"
        else:
            fits, reason = mem.fits(target_memory_gb * GB)
        roof = speed = None
        if target_bandwidth_gbs:
            step_bytes = bytes_per_decode_step(cand_shape, fmt, prompt_tokens + new_tokens / 2, batch)
            roof = roofline_tok_s(step_bytes, target_bandwidth_gbs, batch)
            if step_model is not None:
                speed = project(step_model, step_bytes, target_bandwidth_gbs, batch, model_error_rel)
        out.append(
            CandidateForecast(
                name=spec.name, format_name=fmt.name, memory=mem, roofline_tok_s=roof, speed=speed, fits=fits, reason=reason
            )
        )
    return out


def _gb(n: int | None) -> str:
    return "-" if n is None else f"{n / GB:.2f}"


def render_table(forecasts: list[CandidateForecast]) -> list[list[str]]:
    """Rows of strings, the header (TABLE_COLUMNS) first."""
    rows = [list(TABLE_COLUMNS)]
    for f in forecasts:
        m = f.memory
        rows.append(
            [
                f.name,
                f.format_name or "-",
                _gb(m.weight_bytes if m else None),
                _gb(m.kv_cache_bytes if m else None),
                _gb(m.peak_bytes if m else None),
                "yes" if f.fits else "no" if m else "?",  # no memory forecast: unknown, not a no
                "-" if f.roofline_tok_s is None else f"{f.roofline_tok_s:.1f}",
            ]
        )
    return rows
