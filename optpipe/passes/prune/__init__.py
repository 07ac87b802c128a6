"""prune: structured pruning into a normal, smaller model of the same architecture; one candidate per method.

| method | removes | ranked by (on calibration text) |
|---|---|---|
| depth | whole decoder blocks (`depth_blocks`: a count, or a fraction when < 1) | block influence: 1 - cos(block input, block output) |
| width | MLP intermediate channels (`width_fraction`) and optionally whole KV groups of attention heads (`heads_fraction`) | Wanda-style \\|W\\|·\\|\\|x\\|\\| |
| sparse24 | 2 of every 4 weights of each decoder Linear row (zeros stored dense; run as 2:4 sparse on CUDA cc >= 8.0) | Wanda \\|W\\|·\\|\\|x\\|\\| |

The result has an updated config (num_hidden_layers and layer_types; intermediate_size; attention and KV
head counts with head_dim kept) that stock `AutoModelForCausalLM.from_pretrained` loads. Calibration reuses
the quantize pass's held-out WikiText slice (disjoint from the tokens perplexity scores) or a text file.
What was removed is recorded in the candidate's runtime settings (`prune`), hence in the manifest.
Accuracy lost here is what the `distill` pass is for.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from optpipe.forecast.pruning import blocks_to_drop, channels_to_keep, kv_groups_to_keep
from optpipe.passes.base import Pass, PassParams

Method = Literal["depth", "width", "sparse24"]
SPARSE24_WHY = (
    "2:4 semi-structured sparsity is faster only on CUDA GPUs of compute capability >= 8.0 (torch's "
    "semi-structured sparse kernels, fp16/bf16); here it would only zero half of every decoder weight: the "
    "checkpoint stays dense (same size on disk), decode runs at dense speed, and accuracy drops"
)


class PruneParams(PassParams):
    kind: Literal["prune"] = Field("prune", alias="pass")
    methods: list[Method] = Field(min_length=1, description="Methods tried in order, each a candidate from the same parent.")
    depth_blocks: float = Field(
        0.25, gt=0, description="depth: decoder blocks to drop, a count (>= 1, whole) or a fraction of them (< 1)."
    )
    width_fraction: float = Field(0.25, ge=0, lt=1, description="width: fraction of MLP intermediate channels removed per layer.")
    heads_fraction: float = Field(
        0.0, ge=0, lt=1, description="width: fraction of KV groups (with their query heads) removed per layer; 0 keeps attention."
    )
    calibration: Literal["wikitext-heldout", "file"] = Field(
        "wikitext-heldout",
        description="Importance text: held-out WikiText-2 slice (disjoint from perplexity) or calibration_file.",
    )
    calibration_file: str | None = Field(None, description="UTF-8 text file for calibration: file.")
    calibration_samples: int = Field(16, ge=1, description="Calibration sequences.")
    calibration_seq_len: int = Field(256, ge=16, description="Tokens per calibration sequence.")

    @model_validator(mode="after")
    def _check(self):
        if self.depth_blocks >= 1 and self.depth_blocks != int(self.depth_blocks):
            raise ValueError("depth_blocks: a count must be whole (e.g. 8), a fraction below 1 (e.g. 0.25)")
        if self.calibration == "file" and not self.calibration_file:
            raise ValueError("calibration: file needs calibration_file (a UTF-8 text file)")
        return self


class Prune(Pass):
    name = "prune"
    variant_label = "prune"
    Params = PruneParams
    summary = (
        "Structured pruning: drop decoder blocks (depth) or MLP channels / KV head groups (width); "
        "2:4 sparsity (sparse24, CUDA cc >= 8.0)."
    )
    requires = "a Llama-family decoder (model.layers with q/k/v/o and gate/up/down projections), unquantized"

    @classmethod
    def requirements(cls, params, target, env) -> list[str]:
        from pathlib import Path

        if "sparse24" in params.methods:
            cap = env.gpu_capability
            if not (target.has_cuda and env.has_cuda and cap and float(cap) >= 8.0):
                return [SPARSE24_WHY]
        if params.calibration == "file" and params.calibration_file and not Path(params.calibration_file).is_file():
            return [f"calibration_file {params.calibration_file!r} does not exist"]
        return []

    @classmethod
    def apply(cls, candidate, params, ctx):
        from optpipe.errors import PassFailed
        from optpipe.passes.quantize.calibration import calibration_data
        from optpipe.runtime.torch_candidate import TorchCandidate

        if candidate.settings.quantization or candidate.settings.format != "transformers":
            raise PassFailed("prune needs a dense transformers model: put it before quantize / onnx_export")
        (method,) = params.methods
        model = candidate.model
        calib = calibration_data(params, candidate.tokenizer, ctx.evaluation.perplexity_tokens)
        before = sum(p.numel() for p in model.parameters())
        if method == "depth":
            new, record = _depth(model, calib.ids, params)
        elif method == "sparse24":
            from optpipe.passes.prune.sparse24 import sparsify_24

            new, record = model, sparsify_24(model, calib.ids)  # same shapes: masked in place
        else:
            new, record = _width(model, calib.ids, params)
        after = sum(p.numel() for p in new.parameters())
        record |= {"method": method, "params_before": before, "params_after": after, "calibration": calib.info}
        return TorchCandidate(new, candidate.tokenizer, candidate.settings).with_settings(prune=record)

    @classmethod
    def weights_after(cls, params, parent):
        """depth and width know how much they remove from the config alone: the forecast shrinks the shape;
        sparse24 keeps every shape (zeros stored dense)."""
        from optpipe.forecast.pruning import PruneSpec

        (method,) = params.methods
        if method == "depth":
            spec = PruneSpec(depth_blocks=params.depth_blocks)
        elif method == "width":
            spec = PruneSpec(width_fraction=params.width_fraction, heads_fraction=params.heads_fraction)
        else:
            return parent
        return parent.model_copy(update={"prunes": (*parent.prunes, spec)})


def _depth(model, ids, params):
    from optpipe.passes.prune.importance import block_influence
    from optpipe.passes.prune.rebuild import drop_blocks

    n = model.config.num_hidden_layers
    k = blocks_to_drop(n, params.depth_blocks)
    influence = block_influence(model, ids)
    drop = sorted(sorted(range(n), key=lambda i: influence[i])[:k])
    new, kept = drop_blocks(model, drop)
    return new, {
        "blocks_before": n,
        "blocks_dropped": drop,
        "blocks_kept": kept,
        "block_influence": [round(x, 5) for x in influence],
    }


def _width(model, ids, params):
    from optpipe.passes.prune.importance import channel_scores, decoder_layers, head_group_scores, input_norms
    from optpipe.passes.prune.rebuild import shrink_width

    cfg = model.config
    layers = decoder_layers(model)
    n = len(layers)
    heads = params.heads_fraction > 0
    names = [f"model.layers.{i}.mlp.down_proj" for i in range(n)]
    names += [f"model.layers.{i}.self_attn.o_proj" for i in range(n)] if heads else []
    norms = input_norms(model, ids, names)
    keep = channels_to_keep(cfg.intermediate_size, params.width_fraction)
    mlp_keep = {}
    for i, layer in enumerate(layers):
        scores = channel_scores(layer.mlp.down_proj.weight, norms[names[i]])
        mlp_keep[i] = scores.topk(keep).indices.sort().values
    record = {"intermediate_before": cfg.intermediate_size, "intermediate_after": keep, "channels_kept": {}}
    record["channels_kept"] = {str(i): v.tolist() for i, v in mlp_keep.items()}
    group_keep = None
    if heads:
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        group_heads = cfg.num_attention_heads // cfg.num_key_value_heads
        kv_keep = kv_groups_to_keep(cfg.num_key_value_heads, params.heads_fraction)
        group_keep = {
            i: head_group_scores(
                layer.self_attn.o_proj.weight, norms[f"model.layers.{i}.self_attn.o_proj"], head_dim, group_heads
            )
            .topk(kv_keep)
            .indices.sort()
            .values
            for i, layer in enumerate(layers)
        }
        record |= {
            "kv_heads_before": cfg.num_key_value_heads,
            "kv_heads_after": kv_keep,
            "kv_groups_kept": {str(i): v.tolist() for i, v in group_keep.items()},
        }
    return shrink_width(model, mlp_keep, group_keep), record
