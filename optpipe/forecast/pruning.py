"""A structurally pruned model's shape, known before any weight is read: the prune pass decides how
many decoder blocks, MLP channels and KV groups it keeps from the config alone (which ones it keeps
needs calibration text, how many does not), so `optpipe plan` can forecast the smaller model.

The counting rules live here, below the passes, so the prune pass and the forecast share one copy.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from optpipe.forecast.shape import ModelShape, _aggregate


class PruneSpec(BaseModel):
    """One structural prune as the forecast sees it (zero = that part untouched)."""

    model_config = ConfigDict(frozen=True)

    depth_blocks: float = 0.0  # a count (>= 1) or a fraction (< 1) of the decoder blocks dropped
    width_fraction: float = 0.0  # of MLP intermediate channels removed
    heads_fraction: float = 0.0  # of KV groups (with their query heads) removed


def blocks_to_drop(n_layers: int, depth_blocks: float) -> int:
    k = int(depth_blocks) if depth_blocks >= 1 else round(n_layers * depth_blocks)
    if not 1 <= k < n_layers:
        raise ValueError(f"depth_blocks={depth_blocks:g} drops {k} of {n_layers} blocks: keep at least one, drop at least one")
    return k


def channels_to_keep(n: int, fraction: float, multiple: int = 8) -> int:
    """Kept count, rounded to a multiple of 8 where the layer allows (friendlier matmul shapes)."""
    keep = n - round(n * fraction)
    if keep > multiple:
        keep = max(multiple, round(keep / multiple) * multiple)
    return max(1, keep)


def kv_groups_to_keep(n_kv: int, fraction: float) -> int:
    keep = n_kv - round(n_kv * fraction)
    if keep < 1:
        raise ValueError(f"heads_fraction={fraction} removes all {n_kv} KV groups")
    return keep


def pruned_shape(shape: ModelShape, p: PruneSpec) -> ModelShape:
    """`shape` after one prune, in the Llama layout the prune pass supports: q/k/v/o and gate/up/down per
    kept block; embedding and head unchanged; per-block norms go with their blocks. Stored sizes (the
    checkpoint's bytes, e.g. a GGUF's quantized blocks) scale with the parameter count."""
    n, h, hd = shape.num_hidden_layers, shape.hidden_size, shape.head_dim
    layers = n - blocks_to_drop(n, p.depth_blocks) if p.depth_blocks else n
    inter = channels_to_keep(shape.intermediate_size, p.width_fraction) if p.width_fraction else shape.intermediate_size
    kv = kv_groups_to_keep(shape.num_key_value_heads, p.heads_fraction) if p.heads_fraction else shape.num_key_value_heads
    heads = shape.num_attention_heads // shape.num_key_value_heads * kv
    q_out, kv_out = heads * hd, kv * hd
    per_layer = [(q_out, h), (kv_out, h), (kv_out, h), (h, q_out), (inter, h), (inter, h), (h, inter)]
    linears = _aggregate(per_layer * layers)
    other = h + (shape.other_params - h) * layers // n  # the final norm, then each block's share
    decoder = sum(ls.params for ls in linears)
    total = shape.embedding_params + shape.lm_head_params + decoder + other
    scale = total / shape.total_params
    note = (
        f"pruned: {layers} of {n} blocks, intermediate {shape.intermediate_size} -> {inter}, "
        f"KV heads {shape.num_key_value_heads} -> {kv} (counts from the Llama layout)"
    )
    return shape.model_copy(
        update={
            "num_hidden_layers": layers,
            "intermediate_size": inter,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "decoder_linear_params": decoder,
            "other_params": other,
            "decoder_linears": linears,
            "checkpoint_weight_bytes": round(shape.checkpoint_weight_bytes * scale),
            "checkpoint_file_bytes": round(shape.checkpoint_file_bytes * scale),
            "stored_dtypes": {k: round(v * scale) for k, v in shape.stored_dtypes.items()},
            "notes": (*shape.notes, note),
        }
    )
