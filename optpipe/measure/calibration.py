"""Host calibration for projecting decode speed to a GPU we do not have.

A batch-1 decode step costs a fixed part (kernel launches, graph replay, small ops: it does not shrink
with more bandwidth) plus the bytes it moves over the memory bandwidth:

    t_step = fixed_s + bytes_per_step / (efficiency * spec_bandwidth)

`calibrate_host` measures optpipe's compiled (fused) decode step on this GPU for several Llama-family
shapes with random bf16 weights (SmolLM2-135M, Llama-3.2-1B, -3B, Llama-3.1-8B), and fits the two
terms by least squares (`optpipe.forecast.fit_step_time`). A candidate measured on this host at step
time t is projected to a target with spec bandwidth B_t as

    t_target = fixed_s + (t - fixed_s) * B_host / B_t

(its own bandwidth-bound part, scaled; the fixed part kept), with an interval from the fit's
uncertainty on fixed_s, the candidate's trial spread and a relative model error measured by
projecting between an H100 and an H200 (docs/gpu.md). Assumptions: the fixed cost per step carries
over between GPUs of one software stack (same launch path); the bandwidth-bound part scales with spec
bandwidth (achieved/spec bandwidth alike on both). The result is cached per GPU and torch version.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

from optpipe.files import JsonRecord, write_json_atomic

# Llama-family shapes of the calibration sweep: many small kernels (SmolLM2) to few large ones (8B).
SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    "llama-3.2-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "llama-3.2-3b": dict(
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),
}
# Relative model error (1 sd) of a cross-GPU projection: the RMS of the 16 H100 <-> H200 projection
# errors measured on 2026-11-26 was 8.2 % (max 13.7 %; docs/gpu.md, bench/projection_check.py).
DEFAULT_MODEL_ERROR_REL = 0.10


class CalibrationPoint(JsonRecord):
    shape: str
    bytes_per_step: float
    step_s: float
    step_s_stdev: float
    decode_tok_s: float
    warmup_s: float


class HostCalibration(JsonRecord):
    """The two-term step-time model of one GPU + software stack, and what it was fitted on."""

    gpu: str
    torch: str
    decoder: str = "fused-step-compiled"  # the decode loop the fixed cost was measured for
    spec_bandwidth_gbs: float
    copy_bandwidth_gbs: float
    fixed_s: float
    fixed_se: float
    efficiency: float
    model_error_rel: float = DEFAULT_MODEL_ERROR_REL
    prompt_tokens: int
    new_tokens: int
    points: list[CalibrationPoint]


def calibration_file(cache_root: Path, gpu: str, torch_version: str) -> Path:
    slug = re.sub(r"[^a-z0-9.]+", "-", f"{gpu}-torch{torch_version}".lower()).strip("-")
    return cache_root / "host-calibration" / f"{slug}.json"


def load_calibration(path: Path) -> HostCalibration | None:
    if not path.is_file():
        return None
    try:
        return HostCalibration.model_validate_json(path.read_text())
    except ValueError:
        return None


def project_step(
    step_s: float, step_se: float, cal: HostCalibration, target_bandwidth_gbs: float, z: float = 1.96
) -> tuple[float, float, float]:
    """Projected (tok/s, low, high) on a target for a candidate measured at `step_s` (se `step_se`) here."""
    ratio = cal.spec_bandwidth_gbs / target_bandwidth_gbs
    fixed = min(cal.fixed_s, step_s)  # a step cannot be faster than its own fixed part
    t = fixed + (step_s - fixed) * ratio
    # d t / d fixed = 1 - ratio; d t / d step = ratio; model error relative to the projected time
    sd = math.sqrt(((1 - ratio) * cal.fixed_se) ** 2 + (ratio * step_se) ** 2 + (cal.model_error_rel * t) ** 2)
    low_t, high_t = max(t - z * sd, 1e-9), t + z * sd
    return 1 / t, 1 / high_t, 1 / low_t


def _measure_shape(name: str, prompt_tokens: int, new_tokens: int, trials: int) -> CalibrationPoint:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from optpipe.measure.bench import benchmark
    from optpipe.measure.roofline import decode_roofline
    from optpipe.runtime.fused_decode import FusedStepDecoder
    from optpipe.spec.settings import BenchmarkSettings

    torch.manual_seed(0)
    cfg = LlamaConfig(
        **SHAPES[name],
        head_dim=SHAPES[name]["hidden_size"] // SHAPES[name]["num_attention_heads"],
        max_position_embeddings=8192,
        rope_theta=500000.0,
    )
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    prompt = torch.randint(0, cfg.vocab_size, (1, prompt_tokens), device="cuda")
    dec = FusedStepDecoder(model, prompt_tokens + new_tokens + 8, "reduce-overhead", inductor_tuning=False)
    settings = BenchmarkSettings(
        prompt_tokens=prompt_tokens, new_tokens=new_tokens, warmup=1, min_trials=trials, max_trials=trials
    )
    res = benchmark(dec, prompt, settings)
    roof = decode_roofline(model, prompt_tokens, new_tokens, 1.0, "bytes only")
    s = res.decode_tok_s
    step = 1 / s.mean
    point = CalibrationPoint(
        shape=name,
        bytes_per_step=roof.weight_bytes + roof.kv_bytes_per_token_avg,
        step_s=step,
        step_s_stdev=step * s.cv,
        decode_tok_s=s.mean,
        warmup_s=res.warmup_s,
    )
    del dec, model
    torch.cuda.empty_cache()
    return point


def calibrate_host(
    spec_bandwidth_gbs: float,
    out: Path,
    shapes: list[str] | None = None,
    prompt_tokens: int = 512,
    new_tokens: int = 128,
    trials: int = 3,
    say=print,
) -> HostCalibration:
    """Measure the sweep on this GPU, fit the two terms, write `out`."""
    import torch

    from optpipe.forecast import fit_step_time
    from optpipe.measure.roofline import measure_copy_bandwidth_gbs

    points = []
    for name in shapes or list(SHAPES):
        t0 = time.perf_counter()
        p = _measure_shape(name, prompt_tokens, new_tokens, trials)
        say(f"{name}: {p.decode_tok_s:.1f} tok/s, {p.bytes_per_step / 1e9:.2f} GB/step ({time.perf_counter() - t0:.0f} s)")
        points.append(p)
    model = fit_step_time([(p.bytes_per_step, p.step_s) for p in points], spec_bandwidth_gbs)
    cal = HostCalibration(
        gpu=torch.cuda.get_device_name(0),
        torch=torch.__version__,
        spec_bandwidth_gbs=spec_bandwidth_gbs,
        copy_bandwidth_gbs=measure_copy_bandwidth_gbs(),
        fixed_s=model.fixed_s,
        fixed_se=model.fixed_se,
        efficiency=model.efficiency,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        points=points,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, cal)
    return cal
