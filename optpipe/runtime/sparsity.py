"""Run 2:4-masked weights (the prune pass's sparse24 method) on torch's semi-structured sparse kernels.

Only CUDA devices of compute capability >= 8.0 have them, for fp16/bf16 weights; elsewhere the dense,
half-zero weights run as they are. Not measured yet on a GPU (issue 14: built on a CPU-only machine)."""

from __future__ import annotations


def semi_structured_possible(model) -> str | None:
    """Why the semi-structured kernels cannot run this model here (None when they can)."""
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return "2:4 sparse kernels need a CUDA device"
    if torch.cuda.get_device_capability(device) < (8, 0):
        return "2:4 sparse kernels need compute capability >= 8.0"
    if model.dtype not in (torch.float16, torch.bfloat16):
        return "2:4 sparse kernels need fp16 or bf16 weights (add precision_cast before prune)"
    return None


def to_semi_structured(model) -> int:
    """Swap every 2:4-masked decoder Linear's weight for a semi-structured sparse tensor; returns how many."""
    import torch
    from torch.sparse import to_sparse_semi_structured

    if semi_structured_possible(model):
        return 0
    done = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("model.layers."):
            module.weight = torch.nn.Parameter(to_sparse_semi_structured(module.weight.detach()), requires_grad=False)
            done += 1
    return done
