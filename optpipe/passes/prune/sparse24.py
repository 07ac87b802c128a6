"""2:4 semi-structured sparsity with Wanda masks: in every group of 4 consecutive input weights of a
decoder Linear's row, keep the 2 with the largest |W_ij| * ||x_j|| and zero the others.

The checkpoint stays dense (zeros stored), so stock transformers loads it; `optpipe.load` on a CUDA
device of compute capability >= 8.0 swaps the masked weights for torch's semi-structured sparse tensors
(optpipe/runtime/sparsity.py), which is where the speed comes from. Anywhere else the model runs as a
dense one with half its decoder weights zero: no faster, no smaller on disk.
"""

from __future__ import annotations

DECODER_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def linear_names(model) -> list[str]:
    return [n for n, _ in model.named_modules() if n.startswith("model.layers.") and n.rsplit(".", 1)[-1] in DECODER_LINEARS]


def mask_24(weight, norms):
    """Boolean keep-mask of a [out, in] weight: 2 of every 4 along `in`, by Wanda score."""
    import torch

    out_f, in_f = weight.shape
    if in_f % 4:
        raise ValueError(f"2:4 sparsity needs in_features divisible by 4 (got {in_f})")
    score = (weight.detach().float().abs() * norms.to(weight.device)[None, :]).reshape(out_f, in_f // 4, 4)
    top = score.topk(2, dim=-1).indices
    keep = torch.zeros_like(score, dtype=torch.bool).scatter_(-1, top, True)
    return keep.reshape(out_f, in_f)


def sparsify_24(model, ids) -> dict:
    """Apply Wanda 2:4 masks in place to every decoder Linear; returns what was done."""
    import torch

    from optpipe.passes.prune.importance import input_norms

    names = linear_names(model)
    norms = input_norms(model, ids, names)
    modules = dict(model.named_modules())
    zeros = total = 0
    with torch.no_grad():
        for n in names:
            w = modules[n].weight
            w.mul_(mask_24(w, norms[n]).to(w.dtype))
            zeros += int((w == 0).sum())
            total += w.numel()
    return {"pattern": "2:4", "linears": len(names), "decoder_linear_sparsity": round(zeros / max(total, 1), 4)}
