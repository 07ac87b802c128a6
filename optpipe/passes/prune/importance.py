"""What to remove, measured on calibration text (never on the evaluation text).

- Block influence (ShortGPT, Men et al. 2024): 1 - cosine similarity between a decoder block's input
  and output hidden states, averaged over tokens. A block that barely turns the residual stream
  does little; those are dropped first.
- Wanda-style channel importance (Sun et al. 2023), made structured: an input channel j of a Linear
  scores sum_i |W[i, j]| * ||x_j||_2, with x the Linear's input over every calibration token. For the
  MLP that is down_proj's input (one channel = one intermediate neuron: a row of gate/up, a column of
  down); for attention it is o_proj's input summed over each KV group's heads.
"""

from __future__ import annotations

from typing import Any


def decoder_layers(model) -> Any:
    """The decoder blocks of a transformers causal LM (`model.model.layers`), or a clear error."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no model.layers: prune knows Llama-family decoders only")
    return layers


def _batches(ids, batch_size: int):
    for i in range(0, ids.shape[0], batch_size):
        yield ids[i : i + batch_size]


def _run_calibration(model, ids, batch_size: int, handles: list) -> None:
    """Forward the calibration ids through the model with the given hooks attached, then remove them."""
    import torch

    try:
        with torch.inference_mode():
            for batch in _batches(ids, batch_size):
                model(input_ids=batch.to(model.device), use_cache=False)
    finally:
        for h in handles:
            h.remove()


def block_influence(model, ids, batch_size: int = 4) -> list[float]:
    """1 - mean cosine(input, output) of every decoder block on `ids` [samples, seq_len]."""
    import torch

    layers = decoder_layers(model)
    sums = [0.0] * len(layers)
    count = [0]

    def hook(idx):
        def fn(module, args, kwargs, output):
            x = kwargs.get("hidden_states", args[0] if args else None)
            y = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)
            sums[idx] += float((1 - cos).sum())
            if idx == 0:
                count[0] += cos.numel()

        return fn

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    _run_calibration(model, ids, batch_size, handles)
    return [s / max(count[0], 1) for s in sums]


def input_norms(model, ids, module_names: list[str], batch_size: int = 4) -> dict[str, Any]:
    """||x_j||_2 over every calibration token of the input of each named Linear (a 1-D tensor each)."""

    modules = dict(model.named_modules())
    sq: dict[str, Any] = {}

    def hook(name):
        def fn(module, args):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            s = (x * x).sum(0)
            sq[name] = sq[name] + s if name in sq else s

        return fn

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in module_names]
    _run_calibration(model, ids, batch_size, handles)
    return {n: v.sqrt() for n, v in sq.items()}


def channel_scores(weight, norms):
    """Wanda importance of a Linear's input channels, summed over its outputs: sum_i |W_ij| * ||x_j||."""
    return (weight.detach().float().abs() * norms.to(weight.device)[None, :]).sum(0)


def head_group_scores(o_weight, norms, head_dim: int, group_heads: int):
    """Importance of each KV group: channel scores of o_proj's input summed over the group's query heads."""
    per_channel = channel_scores(o_weight, norms)
    return per_channel.reshape(-1, group_heads * head_dim).sum(1)
