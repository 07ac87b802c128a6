"""Make the smaller model: a new config (fewer layers, a smaller intermediate size, fewer heads) and the
kept slices of the parent's weights, instantiated through transformers from that config and loaded
strictly, so every tensor is accounted for and the result is what stock `from_pretrained` builds."""

from __future__ import annotations

import copy
import re
from typing import Any

# per-layer config lists that must follow the kept layers (sliding/full attention patterns, NoPE layers)
PER_LAYER_CONFIG = ("layer_types", "no_rope_layers")
_LAYER_KEY = re.compile(r"^(model\.layers\.)(\d+)(\..*)$")


def _rebuild(model, config, state: dict[str, Any]):
    from transformers import AutoModelForCausalLM

    new = AutoModelForCausalLM.from_config(config, dtype=model.dtype, attn_implementation=model.config._attn_implementation)
    new.load_state_dict(state, strict=True)
    return new.eval()


def drop_blocks(model, drop: list[int]):
    """The model without the decoder blocks `drop` (indices of the parent); later blocks are renumbered."""
    n = model.config.num_hidden_layers
    kept = [i for i in range(n) if i not in set(drop)]
    new_index = {old: new for new, old in enumerate(kept)}
    state = {}
    for key, value in model.state_dict().items():
        m = _LAYER_KEY.match(key)
        if m is None:
            state[key] = value
        elif int(m.group(2)) in new_index:
            state[f"{m.group(1)}{new_index[int(m.group(2))]}{m.group(3)}"] = value
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(kept)
    for name in PER_LAYER_CONFIG:
        values = getattr(config, name, None)
        if isinstance(values, list) and len(values) == n:
            setattr(config, name, [values[i] for i in kept])
    return _rebuild(model, config, state), kept


def shrink_width(model, mlp_keep: dict[int, Any], group_keep: dict[int, Any] | None = None):
    """The model with, per layer i, only MLP channels `mlp_keep[i]` and KV groups `group_keep[i]` (sorted
    index tensors, the same count in every layer: the config has one intermediate_size / head count)."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    group_heads = cfg.num_attention_heads // cfg.num_key_value_heads
    state = dict(model.state_dict())
    for i, idx in mlp_keep.items():
        p = f"model.layers.{i}.mlp."
        for name in ("gate_proj", "up_proj"):
            for kind in ("weight", "bias"):
                if f"{p}{name}.{kind}" in state:
                    state[f"{p}{name}.{kind}"] = state[f"{p}{name}.{kind}"][idx].clone()
        state[f"{p}down_proj.weight"] = state[f"{p}down_proj.weight"][:, idx].clone()
    for i, groups in (group_keep or {}).items():
        import torch

        p = f"model.layers.{i}.self_attn."
        kv_rows = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in groups.tolist()])
        q_rows = torch.cat([torch.arange(g * group_heads * head_dim, (g + 1) * group_heads * head_dim) for g in groups.tolist()])
        for name, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
            for kind in ("weight", "bias"):
                if f"{p}{name}.{kind}" in state:
                    state[f"{p}{name}.{kind}"] = state[f"{p}{name}.{kind}"][rows].clone()
        state[f"{p}o_proj.weight"] = state[f"{p}o_proj.weight"][:, q_rows].clone()
    config = copy.deepcopy(cfg)
    config.intermediate_size = len(next(iter(mlp_keep.values())))
    if group_keep:
        kv = len(next(iter(group_keep.values())))
        config.head_dim = head_dim  # no longer hidden_size / heads
        config.num_key_value_heads = kv
        config.num_attention_heads = kv * group_heads
    return _rebuild(model, config, state)
