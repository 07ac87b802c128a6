"""GPTQ (Frantar et al. 2022, arXiv:2210.17323) for decoder-only transformers models, written
against plain torch, and the compressed-tensors `pack-quantized` checkpoint writer both the
GPTQ and the AWQ methods of the quantize pass end in.

Why here and not a library: of the maintained GPTQ implementations, GPTQModel (7.5-7.7) ships
only an sdist that compiles kernels and pins numpy/torch outside optpipe's stack, and
llm-compressor 0.14 pins transformers<=5.17 and compressed-tensors==0.19 (docs/dependencies.md,
"GPTQ / AWQ"). The algorithm itself is short; the checkpoint format is compressed-tensors', so the
result loads in stock transformers (and vLLM) with only `compressed-tensors` installed.

Scheme: symmetric int4 per group along the input dimension (W4A16, compressed-tensors
`strategy: group`), no activation ordering; layers are processed in order, each calibrated on the
outputs of the already-quantized layers before it (the reference "sequential" mode).
"""

from __future__ import annotations

import math
from typing import Any

QMIN, QMAX = -8, 7  # signed int4, compressed-tensors' convention
SCALE_DIV = (QMAX - QMIN) / 2  # symmetric: scale = max|w| / 7.5


def decoder_layers(model) -> Any:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(
            f"{type(model).__name__}: no model.layers; GPTQ/AWQ support decoder-only transformers models with a model.layers list"
        )
    return layers


def quantizable_linears(model) -> dict[str, Any]:
    """name -> nn.Linear for every Linear inside the decoder layers (lm_head/embeddings stay as they are)."""
    import torch

    out = {}
    for i, layer in enumerate(decoder_layers(model)):
        for name, mod in layer.named_modules():
            if isinstance(mod, torch.nn.Linear):
                out[f"model.layers.{i}.{name}"] = mod
    return out


def check_group_size(model, group_size: int) -> None:
    bad = sorted({m.in_features for m in quantizable_linears(model).values() if m.in_features % group_size})
    if bad:
        raise ValueError(
            f"group_size={group_size} does not divide the input width of every linear layer "
            f"(widths {bad}); choose a group_size that divides them (e.g. 64 or 32)"
        )


def gptq_quantize_weight(weight, hessian, group_size: int, damp: float = 0.01):
    """GPTQ on one weight [out, in] with its input Hessian [in, in] (sum of x x^T).
    Returns (dequantized weight fp32, scales fp32 [out, in/group_size])."""
    import torch

    W = weight.detach().float().clone()
    H = hessian.float().clone()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols, device=H.device)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    scales = torch.zeros(W.shape[0], cols // group_size, device=W.device)
    for g, i1 in enumerate(range(0, cols, group_size)):  # block = group: a group's scale sees its updated weights
        i2 = i1 + group_size
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        scale = (W1.abs().amax(dim=1) / SCALE_DIV).clamp(min=torch.finfo(torch.float32).tiny * 1e4)
        scales[:, g] = scale
        for i in range(group_size):
            w, d = W1[:, i], Hinv1[i, i]
            q = torch.clamp(torch.round(w / scale), QMIN, QMAX) * scale
            Q[:, i1 + i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1) * Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q, scales


def _capture_first_layer_inputs(model, ids, batch_size: int):
    """Run the model up to layer 0 and return [(hidden_states, kwargs)] per batch."""
    import torch

    layers = decoder_layers(model)
    captured = []

    class _Stop(Exception):
        pass

    def hook(module, args, kwargs):
        hs = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "past_key_value", "use_cache")}
        captured.append((hs, kwargs))
        raise _Stop

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.inference_mode():
            for b in range(0, ids.shape[0], batch_size):
                try:
                    model(input_ids=ids[b : b + batch_size].to(model.device), use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return captured


def _layer_out(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def gptq_model(model, ids, group_size: int, batch_size: int = 4, damp: float = 0.01, progress=None) -> dict[str, Any]:
    """Quantize every decoder-layer Linear in place with GPTQ; the weights become their dequantized
    int4 values. Returns name -> fp32 scales [out, in/group_size]."""
    import torch

    check_group_size(model, group_size)
    layers = decoder_layers(model)
    inputs = _capture_first_layer_inputs(model, ids, batch_size)
    all_scales: dict[str, Any] = {}
    for li, layer in enumerate(layers):
        linears = {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
        hess = {n: torch.zeros(m.in_features, m.in_features, device=m.weight.device) for n, m in linears.items()}
        counts = dict.fromkeys(linears, 0)

        def make_hook(name, hess=hess, counts=counts):  # this layer's sums, bound now
            def hook(module, args):
                x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
                hess[name] += x.t() @ x
                counts[name] += x.shape[0]

            return hook

        handles = [m.register_forward_pre_hook(make_hook(n)) for n, m in linears.items()]
        with torch.inference_mode():
            for hs, kw in inputs:
                layer(hs, **kw)
        for h in handles:
            h.remove()
        for name, mod in linears.items():
            H = hess[name] * (2.0 / max(counts[name], 1))
            q, scales = gptq_quantize_weight(mod.weight, H, group_size, damp)
            with torch.no_grad():
                mod.weight.copy_(q.to(mod.weight.dtype))
            all_scales[f"model.layers.{li}.{name}"] = scales
        with torch.inference_mode():  # next layer sees this layer's quantized outputs
            inputs = [(_layer_out(layer(hs, **kw)), kw) for hs, kw in inputs]
        if progress:
            progress(li + 1, len(layers))
    return all_scales


def pack_compressed_tensors(model, scales: dict[str, Any], group_size: int) -> None:
    """Turn the dequantized-int4 Linears named in `scales` into compressed-tensors pack-quantized
    modules (int32-packed weights + scales) and set `config.quantization_config`, so that
    `save_pretrained` writes a checkpoint stock transformers loads with compressed-tensors."""
    import torch
    from compressed_tensors.compressors import compress_module
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

    modules = dict(model.named_modules())
    for name, s in scales.items():
        mod = modules[name]
        dtype, dev = mod.weight.dtype, mod.weight.device
        mod.quantization_scheme = QuantizationScheme(
            targets=["Linear"],
            weights=QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=group_size),
        )
        scale = s.to(device=dev, dtype=dtype)
        q = torch.clamp(torch.round(mod.weight.float() / scale.float().repeat_interleave(group_size, dim=1)), QMIN, QMAX)
        with torch.no_grad():  # exactly on the grid of the stored scale, so packing is lossless
            mod.weight.copy_((q * scale.float().repeat_interleave(group_size, dim=1)).to(dtype))
        mod.weight_scale = torch.nn.Parameter(scale, requires_grad=False)
        mod.weight_zero_point = torch.nn.Parameter(torch.zeros_like(scale, dtype=torch.int8), requires_grad=False)
        compress_module(mod, format="pack-quantized")
    qc = QuantizationConfig.from_pretrained(model, format="pack-quantized").to_dict()
    qc["quant_method"] = "compressed-tensors"
    model.config.quantization_config = qc


def packed_fraction(model) -> float:
    """Fraction of decoder-layer linear weights stored as packed int4 (int32 words)."""
    import torch

    total = packed = 0
    for layer in decoder_layers(model):
        for _, mod in layer.named_modules():
            if isinstance(mod, torch.nn.Linear) or hasattr(mod, "weight_packed"):
                total += 1
                wp = getattr(mod, "weight_packed", None)
                packed += int(wp is not None and wp.dtype == torch.int32)
    return packed / total if total else math.nan
