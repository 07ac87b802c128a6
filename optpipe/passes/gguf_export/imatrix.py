"""The importance matrix llama.cpp's quantizer weighs rounding errors with, computed in torch.

llama.cpp's `llama-imatrix` tool is a separate program that llama-cpp-python does not ship, but the
quantizer it feeds takes the matrix as plain data (`llama_model_quantize_params.imatrix`: per weight
tensor, the mean of x^2 over calibration tokens for each input column). That statistic is what this
module collects with forward hooks on the parent's linear layers, on calibration text disjoint from
the evaluation (the held-out WikiText-2 slice the GPTQ/AWQ passes use), keyed by the GGUF tensor
names the converter wrote (gguf's own tensor-name map).
"""

from __future__ import annotations

from typing import Any


def gguf_linear_names(model, arch_name: str, written: set[str]) -> dict[str, str]:
    """transformers module name -> GGUF tensor name, for every nn.Linear the GGUF file holds."""
    import gguf
    import torch

    archs = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
    if arch_name not in archs:
        raise ValueError(f"gguf {gguf.__name__} does not know architecture {arch_name!r}")
    n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    mapping = gguf.get_tensor_name_map(archs[arch_name], n_layers)
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            base = mapping.get_name(name)
            if base is not None and f"{base}.weight" in written:
                out[name] = f"{base}.weight"
    return out


def importance_matrix(model, calibration_ids, names: dict[str, str]) -> dict[str, Any]:
    """{GGUF tensor name: float32 array (input columns)} = mean of squared inputs over all tokens."""
    import torch

    sums: dict[str, Any] = {}
    counts: dict[str, int] = {}
    modules = dict(model.named_modules())

    def hook(key: str):
        def record(_module, inputs, _output):
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            sums[key] = sums.get(key, 0) + (x * x).sum(0)
            counts[key] = counts.get(key, 0) + x.shape[0]

        return record

    handles = [modules[name].register_forward_hook(hook(key)) for name, key in names.items()]
    try:
        device = next(model.parameters()).device
        with torch.inference_mode():
            for row in calibration_ids:
                model(input_ids=row[None].to(device))
    finally:
        for h in handles:
            h.remove()
    return {key: (sums[key] / counts[key]).cpu().numpy() for key in sums}
