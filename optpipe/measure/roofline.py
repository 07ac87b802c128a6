"""Memory-bandwidth roofline for batch-1 decode: every decoded token reads all weights once plus
the KV cache written so far, so tok/s <= bandwidth / bytes_per_token. A measured figure above the
roofline is a measurement error, never a result."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from optpipe.measure.job import ProjectionJob
from optpipe.measure.results import BenchmarkResult, ProjectedSpeed, RooflineReport
from optpipe.spec.settings import BenchmarkSettings


@dataclass(frozen=True)
class Roofline:
    bandwidth_gbs: float
    bandwidth_source: str  # "measured copy" or "<target> spec"
    weight_bytes: int
    kv_bytes_per_token_avg: float
    tok_s: float  # the ceiling at batch 1

    def fraction(self, measured_tok_s: float, batch: int = 1) -> float:
        """Fraction of the roofline reached (at batch b one weight read serves b tokens)."""
        return measured_tok_s / self.tok_s_for_batch(batch)

    def tok_s_for_batch(self, batch: int) -> float:
        per_step = self.weight_bytes + batch * self.kv_bytes_per_token_avg
        return batch * self.bandwidth_gbs * 1e9 / per_step

    def to_dict(self) -> dict:
        return asdict(self)


def storage_bytes(tensor) -> int:
    """Bytes a tensor really occupies: quantized tensor subclasses (torchao) report their logical
    dtype's size, so sum their packed inner tensors (data, scales, zero points) instead."""
    t = tensor.data if hasattr(tensor, "data") else tensor
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None and type(t).__name__ not in ("Tensor", "Parameter"):
        names, _ = flatten()
        return sum(storage_bytes(getattr(t, n)) for n in names if getattr(t, n, None) is not None)
    return t.numel() * t.element_size()


def weight_bytes_read_per_token(model) -> int:
    """Bytes of parameters a decode step reads: everything except the input embedding table when it
    is not tied to the output head (a lookup reads one row)."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    # parameters() already yields a tied Parameter once; compare objects, since quantized tensor
    # subclasses report data_ptr() 0.
    tied = head is not None and (head.weight is emb or (emb.data_ptr() != 0 and head.weight.data_ptr() == emb.data_ptr()))
    total = sum(storage_bytes(p) for p in model.parameters())
    for b in model.buffers():
        if b.is_floating_point() and b.dim() >= 2:
            total += storage_bytes(b)  # quantized weights stored as buffers
    if not tied:
        total -= storage_bytes(emb)
    return total


def kv_bytes_per_position(config, dtype_bytes: int) -> int:
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return 2 * cfg.num_hidden_layers * kv_heads * head_dim * dtype_bytes


def decode_roofline(model, prompt_tokens: int, new_tokens: int, bandwidth_gbs: float, source: str) -> Roofline:
    dtype_bytes = next(model.parameters()).element_size() if next(model.parameters()).is_floating_point() else 2
    wb = weight_bytes_read_per_token(model)
    avg_ctx = prompt_tokens + new_tokens / 2
    kv = kv_bytes_per_position(model.config, dtype_bytes) * avg_ctx
    return Roofline(bandwidth_gbs, source, wb, kv, bandwidth_gbs * 1e9 / (wb + kv))


def measure_copy_bandwidth_gbs(device: str = "cuda", nbytes: int = 1 << 30, iters: int = 20) -> float:
    """Device-to-device copy bandwidth, counting bytes read plus written (as the roofline does)."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000 / iters
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / seconds / 1e9


def roofline_report(
    model, bench: BenchmarkResult, cfg: BenchmarkSettings, projection: ProjectionJob | None, bandwidth_gbs: float | None = None
) -> RooflineReport:
    """Measured decode speed against the memory-bandwidth roofline of this GPU (measured copy
    bandwidth), flagged when impossible, and projected to the target's bandwidth if it differs."""
    bw = bandwidth_gbs or measure_copy_bandwidth_gbs()
    roof = decode_roofline(model, cfg.prompt_tokens, cfg.new_tokens, bw, "measured device-to-device copy")
    measured = bench.decode_tok_s.mean
    frac = roof.fraction(measured, cfg.batch_size)
    error = None
    if frac > 1.0:
        error = f"measured {measured:.1f} tok/s is {frac:.0%} of the memory roofline: a measurement error, not a result"
    projected = None
    if projection:
        projected = project_to_target(model, bench, cfg, projection, frac)
    return RooflineReport(
        **roof.to_dict(),
        roofline_tok_s_at_batch=roof.tok_s_for_batch(cfg.batch_size),
        fraction=frac,
        error=error,
        projected=projected,
    )


def project_to_target(
    model, bench: BenchmarkResult, cfg: BenchmarkSettings, projection: ProjectionJob, fraction: float
) -> ProjectedSpeed:
    """Decode speed on the target. With this host's calibration: the two-term model (fixed per-step
    cost kept, the bandwidth-bound rest scaled by spec bandwidths) with an interval; without one: the
    measured fraction of roofline times the target's roofline (labelled uncalibrated)."""
    target_roof = decode_roofline(model, cfg.prompt_tokens, cfg.new_tokens, projection.bandwidth_gbs, f"{projection.target} spec")
    roof_tok_s = target_roof.tok_s_for_batch(cfg.batch_size)
    cal = projection.calibration
    if cal is None or cal.decoder != bench.decoder:
        why = (
            "run `optpipe calibrate` on this host for the two-term model with an interval"
            if cal is None
            else f"this host's calibration is for the {cal.decoder} decoder, not {bench.decoder}"
        )
        return ProjectedSpeed(
            target=projection.target,
            bandwidth_gbs=projection.bandwidth_gbs,
            roofline_tok_s=roof_tok_s,
            decode_tok_s=min(fraction, 1.0) * roof_tok_s,
            method=f"uncalibrated: measured fraction of this GPU's roofline x the target's roofline ({why})",
        )
    from optpipe.measure.calibration import project_step

    s = bench.decode_tok_s
    step = cfg.batch_size / s.mean
    step_se = step * s.cv / math.sqrt(s.n) if s.n > 1 and not math.isnan(s.cv) else 0.0
    tok_s, low, high = project_step(step, step_se, cal, projection.bandwidth_gbs)
    tok_s, low, high = (min(v * cfg.batch_size, roof_tok_s) for v in (tok_s, low, high))
    return ProjectedSpeed(
        target=projection.target,
        bandwidth_gbs=projection.bandwidth_gbs,
        roofline_tok_s=roof_tok_s,
        decode_tok_s=tok_s,
        low=low,
        high=high,
        method=f"two-term: fixed {cal.fixed_s * 1e3:.3f} ms/step (calibrated on {cal.gpu}) + bandwidth-bound rest x "
        f"{cal.spec_bandwidth_gbs:g}/{projection.bandwidth_gbs:g} GB/s; model error {cal.model_error_rel:.0%}",
    )
