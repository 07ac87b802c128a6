"""Per-method facts of the quantize pass: what each method needs installed, its transformers
quantization config, and the activation dtype it runs in. Read from what is installed (packages and
the backends they ship), not from a hard-coded device list."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from optpipe.forecast.formats import METHODS

# The methods are the weight formats the forecast knows (optpipe/forecast/formats.py): one list.
MIXED = "mixed-precision"  # per-layer int4 / int8 / dense from measured sensitivity (mixed.py); not a single format
Method = Literal[METHODS + (MIXED,)]  # type: ignore[valid-type]
CALIBRATED = ("gptq-4bit", "awq-4bit", MIXED)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def method_requirements(method: str, target, env) -> list[str]:
    device = "cuda" if env.has_cuda and target.has_cuda else "cpu"
    reasons: list[str] = []
    if method.startswith("bnb-"):
        if not env.has_package("bitsandbytes"):
            reasons.append("needs bitsandbytes (pip install 'optpipe[quant]')")
        elif device == "cpu" and not _has("bitsandbytes.backends.cpu"):
            reasons.append(f"the installed bitsandbytes {env.packages.get('bitsandbytes')} has no CPU backend (>= 0.45 has)")
    elif method.startswith("torchao-"):
        if not env.has_package("torchao"):
            reasons.append("needs torchao (pip install 'optpipe[quant]')")
        if method == "torchao-int4wo" and device != "cuda":
            reasons.append("torchao int4 weight-only needs CUDA (tile_packed_to_4d kernels); this build runs on the CPU")
        if method == "torchao-int8dq" and device == "cuda":
            reasons.append(
                "torchao int8 dynamic quantization did not finish a 64-token decode benchmark of "
                "SmolLM2-135M in over 4 minutes on an H200 (torchao 0.17, torch 2.11; twice), so "
                "optpipe refuses it on CUDA; use torchao-int8wo (same weights, bf16 activations)"
            )
        if method == "torchao-int4-gemlite":
            if not env.has_package("gemlite"):
                reasons.append("needs gemlite, whose Triton kernels it runs (pip install gemlite)")
            if device != "cuda":
                reasons.append("gemlite packs and runs its weights with Triton on CUDA; this build runs on the CPU")
        if method == "torchao-float8wo":
            cc = env.gpu_capability if device == "cuda" else None
            if cc is None or float(cc) < 8.9:
                reasons.append(f"float8 needs a GPU with compute capability >= 8.9 (host: {cc or 'no GPU'})")
            if target.compute_capability and float(target.compute_capability) < 8.9:
                reasons.append(f"target {target.name} (cc {target.compute_capability}) has no float8 support")
    elif method in ("gptq-4bit", "awq-4bit", MIXED):
        if not env.has_package("compressed-tensors"):
            reasons.append(f"needs compressed-tensors, the checkpoint format {method} writes (pip install 'optpipe[quant]')")
        if method == "awq-4bit" and not env.has_package("auto-round"):
            reasons.append("needs auto-round, whose AWQ implementation it runs (pip install 'optpipe[quant]')")
    return reasons


def calibration_requirements(params) -> list[str]:
    if params.calibration == "file" and params.calibration_file and not Path(params.calibration_file).is_file():
        return [f"calibration_file {params.calibration_file!r} does not exist"]
    return []


def quantization_config(params, method: str):

    from optpipe.runtime.dtypes import torch_dtype

    if method.startswith("bnb-"):
        from transformers import BitsAndBytesConfig

        if method == "bnb-int8":
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=method.removeprefix("bnb-"),
            bnb_4bit_use_double_quant=params.double_quant,
            bnb_4bit_compute_dtype=torch_dtype(params.compute_dtype),
        )
    from transformers import TorchAoConfig

    # An explicit (empty) skip list replaces transformers' default skips (lm_head) when the head is to
    # be quantized too; the input embedding is no Linear and stays a plain lookup table.
    skips = {"modules_to_not_convert": []} if params.quantize_lm_head else {}
    return TorchAoConfig(_torchao_quant_type(params, method), **skips)


def _torchao_quant_type(params, method: str):
    """torchao's config object for a torchao-* method."""
    import torch
    from torchao import quantization as q

    if method == "torchao-int8wo":
        # version 2 (Int8Tensor) explicitly: torchao 0.17 defaults to version 1 (AffineQuantizedTensor),
        # which transformers 5.17 could not save ("Unsupported tensor type", H200 run of gpu-quant-smollm2).
        return q.Int8WeightOnlyConfig(version=2)
    if method == "torchao-int8dq":
        return q.Int8DynamicActivationInt8WeightConfig(version=2)
    if method == "torchao-int4wo":
        return q.Int4WeightOnlyConfig(group_size=params.group_size, int4_packing_format="tile_packed_to_4d")
    if method == "torchao-float8wo":
        return q.Float8WeightOnlyConfig(weight_dtype=torch.float8_e4m3fn)
    if method == "torchao-int4-gemlite":
        from torchao.prototype.quantization.quant_api import UIntxWeightOnlyConfig

        from optpipe.runtime import gemlite

        gemlite.register()
        return UIntxWeightOnlyConfig(group_size=params.group_size, bit_width=4)
    raise ValueError(f"no quantization config for {method}")


def method_dtype(method: str, parent_dtype: str) -> str:
    """The activation dtype a method runs in. gemlite's kernels compute in the dtype of the scales,
    and torchao's HQQ step makes them fp16 whatever the weights were: a bf16 model fails in Triton
    with "Both operands must be same dtype. Got bf16 and fp16" (H200 run 13), so gemlite runs fp16."""
    return "fp16" if method == "torchao-int4-gemlite" else parent_dtype
