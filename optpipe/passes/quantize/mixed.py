"""Mixed precision: per-layer formats (int4 / int8 / dense) chosen from each layer's measured
sensitivity, smallest size whose predicted KL stays under a limit, written as one compressed-tensors
checkpoint with a config group per format (stock transformers loads it with compressed-tensors).

Sensitivity of a layer in a format = KL(parent || model with only that layer quantized), in
nats/token, on calibration positions held out from the evaluation text (calibration.py). It is
measured with round-to-nearest symmetric group quantization, exactly the grid the checkpoint stores,
one batched forward per (layer, format), and cached by the parent's content and the settings.
The choice assumes the layers' KLs add up (the first-order assumption of HAWQ-style and ModelOpt
auto_quantize searches): a greedy multiple-choice knapsack upgrades the layer with the most KL saved
per byte until the predicted total is under the limit. The build then measures the result for real,
so a wrong prediction shows up as a verdict, never as a silent pass.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Format = Literal["int4", "int8", "dense"]
BITS: dict[str, int] = {"int4": 4, "int8": 8}
SENSITIVITY_VERSION = 1


class MixedPrecisionSettings(BaseModel):
    """quantize `mixed-precision`: which formats a layer may take and the KL the choice may add."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_kl: float = Field(
        0.02,
        gt=0,
        description="Predicted KL(parent || candidate) allowed, nats/token, summed over the layers' measured "
        "sensitivities (0.02 nats is roughly a 2 % perplexity rise); the real evaluation then judges the budget.",
    )
    formats: list[Format] = Field(["int4", "int8", "dense"], min_length=2, description="Formats a layer may take.")
    sensitivity_samples: int = Field(4, ge=1, description="Held-out calibration sequences the sensitivities are measured on.")
    sensitivity_seq_len: int = Field(128, ge=16, description="Tokens per sensitivity sequence.")


def rtn(weight, bits: int, group_size: int):
    """Round-to-nearest symmetric per-group quantization: (dequantized fp32 weight, scales [N, K/g])."""
    import torch

    qmax = 2 ** (bits - 1) - 1
    qmin = -qmax - 1
    w = weight.detach().float()
    scale = (w.view(w.shape[0], -1, group_size).abs().amax(-1) / ((qmax - qmin) / 2)).clamp(min=1e-12)
    full = scale.repeat_interleave(group_size, dim=1)
    return torch.clamp(torch.round(w / full), qmin, qmax) * full, scale


def linear_bytes(out_features: int, in_features: int, fmt: str, group_size: int, dense_bytes: float) -> float:
    """Stored bytes of one Linear: packed weights plus a scale per group in the model dtype (compressed-tensors)."""
    n = out_features * in_features
    if fmt == "dense":
        return n * dense_bytes
    return n * BITS[fmt] / 8 + out_features * (in_features // group_size) * dense_bytes


def _logprobs(model, ids):
    import torch

    with torch.inference_mode():
        return torch.log_softmax(model(input_ids=ids.to(model.device), use_cache=False).logits.float(), dim=-1)


def _kl(ref, cand) -> float:
    return float((ref.exp() * (ref - cand)).sum(-1).clamp_min(0).mean())


def layer_sensitivity(model, ids, formats: list[str], group_size: int, progress=None) -> dict[str, dict[str, float]]:
    """name -> {format: KL when only this layer is in that format}; dense is 0 by definition."""
    import torch

    from optpipe.passes.quantize.gptq import quantizable_linears

    ref = _logprobs(model, ids)
    linears = quantizable_linears(model)
    out: dict[str, dict[str, float]] = {}
    for i, (name, mod) in enumerate(linears.items()):
        original = mod.weight.data.clone()
        out[name] = {"dense": 0.0}
        for fmt in formats:
            if fmt == "dense":
                continue
            q, _ = rtn(original, BITS[fmt], group_size)
            with torch.no_grad():
                mod.weight.data.copy_(q.to(original.dtype))
            out[name][fmt] = _kl(ref, _logprobs(model, ids))
            with torch.no_grad():
                mod.weight.data.copy_(original)
        if progress:
            progress(i + 1, len(linears))
    return out


def choose_formats(
    sensitivity: dict[str, dict[str, float]], sizes: dict[str, dict[str, float]], formats: list[str], max_kl: float
) -> tuple[dict[str, str], float]:
    """Smallest total size with predicted KL (the sum of the chosen formats' sensitivities) <= max_kl:
    start every layer in its smallest format, then upgrade the layer that saves the most KL per added
    byte until the sum fits. Returns (name -> format, predicted KL)."""
    order = sorted(formats, key=lambda f: sizes[next(iter(sizes))][f])  # small to large
    choice = {name: order[0] for name in sensitivity}
    total = sum(sensitivity[n][choice[n]] for n in choice)
    while total > max_kl:
        best, best_gain = None, -1.0
        for name, fmt in choice.items():
            k = order.index(fmt)
            if k + 1 == len(order):
                continue
            nxt = order[k + 1]
            saved = sensitivity[name][fmt] - sensitivity[name][nxt]
            added = max(sizes[name][nxt] - sizes[name][fmt], 1.0)
            if saved / added > best_gain:
                best, best_gain = (name, nxt, saved), saved / added
        if best is None:
            break  # every layer in the largest format
        name, nxt, _ = best
        choice[name] = nxt
        total = sum(sensitivity[n][choice[n]] for n in choice)  # summed afresh: no drift from subtracting
    return choice, total


def pack_mixed(model, choice: dict[str, str], group_size: int) -> None:
    """Quantize the chosen layers in place and set a compressed-tensors config with one config group per
    format, targeting its layers by name (one group per bit width; `targets: [Linear]` twice would
    apply the last to every layer); dense layers and lm_head are in `ignore`."""
    import torch
    from compressed_tensors.compressors import compress_module
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

    modules = dict(model.named_modules())
    groups: dict[str, list[str]] = {}
    for name, fmt in choice.items():
        if fmt != "dense":
            groups.setdefault(fmt, []).append(name)

    def args(fmt: str) -> QuantizationArgs:
        return QuantizationArgs(num_bits=BITS[fmt], type="int", symmetric=True, strategy="group", group_size=group_size)

    for fmt, names in groups.items():
        for name in names:
            mod = modules[name]
            q, scale = rtn(mod.weight, BITS[fmt], group_size)
            with torch.no_grad():
                mod.weight.copy_(q.to(mod.weight.dtype))
            mod.quantization_scheme = QuantizationScheme(targets=[name], weights=args(fmt))
            scale = scale.to(mod.weight.dtype)
            mod.weight_scale = torch.nn.Parameter(scale, requires_grad=False)
            mod.weight_zero_point = torch.nn.Parameter(torch.zeros_like(scale, dtype=torch.int8), requires_grad=False)
            compress_module(mod, format="pack-quantized")
    config_groups = {fmt: QuantizationScheme(targets=names, weights=args(fmt)) for fmt, names in groups.items()}
    ignore = [n for n, f in choice.items() if f == "dense"] + ["lm_head"]
    qc = QuantizationConfig(
        config_groups=config_groups, format="pack-quantized", quantization_status="compressed", ignore=ignore
    ).to_dict()
    qc["quant_method"] = "compressed-tensors"
    model.config.quantization_config = qc


def parent_hash(parent_dir: Path | None, model) -> str:
    """Content hash of the parent's weights (its saved files, else its tensors), for the sensitivity cache."""
    h = hashlib.sha256()
    if parent_dir is not None and any(parent_dir.glob("*.safetensors")):
        for f in sorted(parent_dir.glob("*.safetensors")):
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
    else:
        for name, t in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_sensitivity(cache_dir: Path | None, key: dict[str, Any], compute) -> tuple[dict[str, dict[str, float]], bool]:
    """The sensitivities under `key` from `cache_dir` when there, else computed and stored. -> (table, was cached)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"sensitivity-{digest}.json" if cache_dir is not None else None
    if path is not None and path.exists():
        return json.loads(path.read_text())["sensitivity"], True
    table = compute()
    if path is not None:
        from optpipe.files import write_json_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"key": key, "sensitivity": table})
    return table, False
