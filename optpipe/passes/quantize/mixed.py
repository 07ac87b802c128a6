"""Mixed precision: per-layer formats (int4 / int8 / dense) chosen from each layer's measured
sensitivity, the smallest configuration whose measured KL stays under a limit, written as one
compressed-tensors checkpoint with a config group per format (stock transformers loads it with
compressed-tensors).

Sensitivity of a layer in a format = KL(parent || model with only that layer quantized), in
nats/token, on calibration positions held out from the evaluation text (calibration.py). It is
measured with round-to-nearest symmetric group quantization, exactly the grid the checkpoint stores,
one batched forward per (layer, format), and cached by the parent's content and the settings.

The sensitivities ORDER the upgrades: a greedy multiple-choice knapsack starts every layer in its
smallest format and upgrades the layer with the most KL saved per byte, which gives a path of
configurations from all-smallest to all-largest. A second, tiered path upgrades no layer to a larger
format until every layer has reached the format below it (all-int4, then int4 -> int8 in sensitivity
order, then int8 -> dense): it passes through every uniform configuration, so the result is never
larger than the best uniform format of the list whose measured KL fits. Both paths are stopped the same
way and the smaller configuration wins. The tiered path is there because a floor in the single-layer
KLs (next paragraph) makes int8 -> dense look as useful per byte as int4 -> int8: on SmolLM2 in bf16
on an H200 the greedy path alone stopped at 28 int4 / 83 int8 / 99 dense layers, 0.176 GB, above
uniform int8's 0.163 GB. WHERE to stop on a path is decided by measuring whole
configurations (stop: measured): a bisection over the path for the smallest configuration whose
KL(parent || configuration) on the same calibration tokens is under the limit, O(log n) forwards.
Summing single-layer KLs (stop: predicted, the first-order assumption of HAWQ-style and ModelOpt
auto_quantize searches) overestimates badly when every single-layer KL carries a floor (bf16
rounding noise: SmolLM2-135M in bf16 on an H200, 210 layers, the sum rule kept 187 layers dense at a
measured KL 14x under its limit). The bisection assumes the measured KL falls along the path; it is
not guaranteed, so the chosen configuration's measured KL is checked and recorded, and the build
measures the result for real: a wrong choice shows up as a verdict, never as a silent pass.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from optpipe.spec.settings import AccuracyBudget

Format = Literal["int4", "int8", "dense"]
BITS: dict[str, int] = {"int4": 4, "int8": 8}
SENSITIVITY_VERSION = 1
SELECTION_VERSION = 2  # how a configuration is chosen; 2: the tiered path beside the greedy one (part of the cache key)
# The derived limit takes this share of the perplexity budget's log-ratio: a safety margin for what
# the calibration tokens do not show (the evaluation text, HellaSwag) and for the parent's own loss.
KL_BUDGET_FRACTION = 0.5
FALLBACK_MAX_KL = 0.02  # nats/token, when the budget has no perplexity line


class MixedPrecisionSettings(BaseModel):
    """quantize `mixed-precision`: which formats a layer may take and the KL the choice may add."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_kl: float | None = Field(
        None,
        gt=0,
        description="KL(parent || candidate) allowed, nats/token, on the calibration tokens. Unset: derived from the "
        f"budget, {KL_BUDGET_FRACTION} x ln(1 + perplexity_max_rise_pct / 100) (a safety margin of "
        f"{KL_BUDGET_FRACTION:g}), or {FALLBACK_MAX_KL} without a perplexity line. The real evaluation then judges "
        "the budget.",
    )
    stop: Literal["measured", "predicted"] = Field(
        "measured",
        description="Where to stop upgrading layers: measured = the smallest configuration on the greedy path whose "
        "measured KL is under max_kl (a bisection, about log2(layers x upgrades) extra forwards); predicted = the "
        "first whose summed single-layer sensitivities are (no extra forward, but far too conservative when each "
        "single-layer KL carries a noise floor).",
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


def default_max_kl(budget: AccuracyBudget | None) -> float:
    """The KL limit a budget allows: KL_BUDGET_FRACTION x ln(1 + rise / 100). A perplexity rise of r %
    is a cross-entropy rise of ln(1 + r/100) nats/token, and the KL from the parent tracks that rise
    (H200 SmolLM2 rows: KL 0.017 -> +2.0 %, 0.27 -> +40 %). FALLBACK_MAX_KL without a perplexity line."""
    rise = budget.perplexity_max_rise_pct if budget is not None else None
    if rise is None:
        return FALLBACK_MAX_KL
    return KL_BUDGET_FRACTION * math.log1p(rise / 100)


def predicted_kl(sensitivity: dict[str, dict[str, float]], choice: dict[str, str]) -> float:
    """The first-order prediction: the chosen formats' single-layer KLs summed."""
    return sum(sensitivity[n][choice[n]] for n in choice)


def upgrade_path(
    sensitivity: dict[str, dict[str, float]], sizes: dict[str, dict[str, float]], formats: list[str], tiered: bool = False
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The greedy path: every layer in its smallest format, then one upgrade at a time, the layer that
    saves the most predicted KL per added byte first, until every layer is in the largest format.
    tiered: only layers in the smallest format still present may be upgraded (each uniform
    configuration is on the path). Returns (the start, [(layer, its new format)] in order);
    configuration k = start + the first k steps."""
    order = sorted(formats, key=lambda f: sizes[next(iter(sizes))][f])  # small to large
    choice = {name: order[0] for name in sensitivity}
    start, steps = dict(choice), []
    while True:
        best, best_gain = None, -1.0
        level = min(order.index(f) for f in choice.values()) if tiered else None
        for name, fmt in choice.items():
            k = order.index(fmt)
            if k + 1 == len(order) or (tiered and k != level):
                continue
            nxt = order[k + 1]
            saved = sensitivity[name][fmt] - sensitivity[name][nxt]
            added = max(sizes[name][nxt] - sizes[name][fmt], 1.0)
            if saved / added > best_gain:
                best, best_gain = (name, nxt, saved), saved / added
        if best is None:
            return start, steps  # every layer in the largest format
        name, nxt, _ = best
        choice[name] = nxt
        steps.append((name, nxt))


def config_at(start: dict[str, str], steps: list[tuple[str, str]], k: int) -> dict[str, str]:
    """Configuration k of the path: the start with its first k upgrades."""
    choice = dict(start)
    for name, fmt in steps[:k]:
        choice[name] = fmt
    return choice


def choose_formats(
    sensitivity: dict[str, dict[str, float]], sizes: dict[str, dict[str, float]], formats: list[str], max_kl: float
) -> tuple[dict[str, str], float]:
    """stop: predicted. The first configuration on the greedy path whose predicted KL (the sum of the
    chosen formats' sensitivities) is <= max_kl, else all-largest. Returns (name -> format, predicted KL)."""
    return predicted_stop(sensitivity, *upgrade_path(sensitivity, sizes, formats), max_kl)


def predicted_stop(
    sensitivity: dict[str, dict[str, float]], start: dict[str, str], steps: list[tuple[str, str]], max_kl: float
) -> tuple[dict[str, str], float]:
    """`choose_formats` on a path already walked (`upgrade_path`)."""
    choice = dict(start)
    total = predicted_kl(sensitivity, choice)
    for name, fmt in steps:
        if total <= max_kl:
            break
        choice[name] = fmt
        total = predicted_kl(sensitivity, choice)  # summed afresh: no drift from subtracting
    return choice, total


@contextmanager
def fake_quantized(model, choice: dict[str, str], group_size: int) -> Iterator[None]:
    """The model computing with the chosen layers round-to-nearest quantized, as `pack_mixed` stores
    them, and exactly as before on exit. A parametrization quantizes each weight when it is read, so
    only one layer's quantized copy exists at a time, never a second copy of the weights."""
    import torch
    from torch.nn.utils import parametrize

    class RTN(torch.nn.Module):
        def __init__(self, bits: int):
            super().__init__()
            self.bits = bits

        def forward(self, w):
            return rtn(w, self.bits, group_size)[0].to(w.dtype)

    modules = dict(model.named_modules())
    done = []
    try:
        for name, fmt in choice.items():
            if fmt != "dense":
                parametrize.register_parametrization(modules[name], "weight", RTN(BITS[fmt]), unsafe=True)
                done.append(modules[name])
        yield
    finally:
        for mod in done:
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)


def measured_kl(model, ids, ref, choice: dict[str, str], group_size: int) -> float:
    """KL(parent || the configuration), nats/token, `ref` being the parent's log-probs on `ids`."""
    with fake_quantized(model, choice, group_size):
        return _kl(ref, _logprobs(model, ids))


def measured_stop(
    model, ids, start: dict[str, str], steps: list[tuple[str, str]], max_kl: float, group_size: int
) -> tuple[dict[str, str], float, int]:
    """stop: measured. Bisect the greedy path for the smallest configuration whose measured KL on `ids`
    is <= max_kl, assuming the KL falls along the path (likely, not guaranteed). The configuration it
    ends on is always measured; should it be over the limit, the path is walked up until one is under
    (all-largest, when no format is dense, may still be over: the build's verdict then says so).
    Returns (name -> format, its measured KL, forwards over configurations)."""
    ref = _logprobs(model, ids)
    seen: dict[int, float] = {}

    def kl(k: int) -> float:
        if k not in seen:
            seen[k] = measured_kl(model, ids, ref, config_at(start, steps, k), group_size)
        return seen[k]

    lo, hi = 0, len(steps)
    while lo < hi:
        mid = (lo + hi) // 2
        if kl(mid) <= max_kl:
            hi = mid
        else:
            lo = mid + 1
    while kl(hi) > max_kl and hi < len(steps):
        hi += 1
    return config_at(start, steps, hi), kl(hi), len(seen)


PATHS = ("greedy", "tiered")


def stop_on_paths(
    model,
    ids,
    sensitivity: dict[str, dict[str, float]],
    sizes: dict[str, dict[str, float]],
    formats: list[str],
    max_kl: float,
    group_size: int,
    stop: str,
) -> tuple[str, dict[str, str], float | None, int, dict[str, dict[str, Any]]]:
    """Stop both paths (PATHS) by `stop` and keep the smaller configuration under the limit (measured:
    its measured KL; predicted: the sum). -> (winning path, choice, its measured KL or None, forwards over
    configurations, path -> {choice, measured_kl, predicted_kl, bytes, fits, sum_rule} for the record;
    sum_rule = where the summed-KL rule stops on that path, whichever `stop` is)."""
    found: dict[str, dict[str, Any]] = {}
    probes = 0
    for path in PATHS:
        start, steps = upgrade_path(sensitivity, sizes, formats, tiered=path == "tiered")
        by_sum, summed = predicted_stop(sensitivity, start, steps, max_kl)
        if stop == "measured":
            choice, kl, n = measured_stop(model, ids, start, steps, max_kl, group_size)
            probes += n
            fits = kl <= max_kl
        else:
            choice, kl, fits = by_sum, None, summed <= max_kl
        found[path] = {
            "choice": choice,
            "measured_kl": kl,
            "predicted_kl": predicted_kl(sensitivity, choice),
            "bytes": sum(sizes[n][f] for n, f in choice.items()),
            "fits": fits,
            "sum_rule": by_sum,
        }
    best = min(PATHS, key=lambda p: (not found[p]["fits"], found[p]["bytes"], found[p]["measured_kl"] or 0.0))
    return best, found[best]["choice"], found[best]["measured_kl"], probes, found


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
