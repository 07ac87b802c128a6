"""quantize: weight quantization through the maintained libraries, one candidate per method.

`methods` are alternatives tried in order, each built from the same parent and measured on its
own; the first that meets the budget wins (stop: first). Every method goes through transformers'
quantization integration, so the saved candidate is a standard checkpoint with a
`quantization_config` that stock `from_pretrained` loads back:

| method | library | where it runs |
|---|---|---|
| bnb-int8 | bitsandbytes LLM.int8 | CUDA; CPU with bitsandbytes >= 0.45 (its CPU backend) |
| bnb-nf4, bnb-fp4 | bitsandbytes 4-bit (double quant, compute dtype as params) | same |
| torchao-int8wo | torchao int8 weight-only | CPU and CUDA |
| torchao-int8dq | torchao int8 dynamic activations + int8 weights | CPU and CUDA |
| torchao-int4wo | torchao int4 weight-only, group size param (tile_packed_to_4d) | CUDA |
| torchao-float8wo | torchao float8 weight-only | CUDA, compute capability >= 8.9 |
| gptq-4bit, awq-4bit | GPTQModel | not wired yet: fails its requirement with the reason |

Requirements are read from what is installed (packages and the backends they ship), not from a
hard-coded device list.
"""
from __future__ import annotations

import importlib.util
import shutil
import tempfile
from typing import Literal

from pydantic import Field

from optpipe.passes.base import Pass, PassParams

Method = Literal["bnb-int8", "bnb-nf4", "bnb-fp4", "torchao-int8wo", "torchao-int8dq", "torchao-int4wo",
                 "torchao-float8wo", "gptq-4bit", "awq-4bit"]


class QuantizeParams(PassParams):
    kind: Literal["quantize"] = Field("quantize", alias="pass")
    methods: list[Method] = Field(min_length=1, description="Methods tried in order; each is a candidate.")
    group_size: int = Field(128, description="Group size of int4 methods.")
    compute_dtype: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="Compute dtype of bnb 4-bit layers.")
    double_quant: bool = Field(True, description="bnb 4-bit: quantize the quantization constants too.")


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
        if method == "torchao-float8wo":
            cc = env.gpu_capability if device == "cuda" else None
            if cc is None or float(cc) < 8.9:
                reasons.append(f"float8 needs a GPU with compute capability >= 8.9 (host: {cc or 'no GPU'})")
            if target.compute_capability and float(target.compute_capability) < 8.9:
                reasons.append(f"target {target.name} (cc {target.compute_capability}) has no float8 support")
    elif method in ("gptq-4bit", "awq-4bit"):
        reasons.append("GPTQ/AWQ through GPTQModel is not wired into optpipe yet (needs a calibration step and "
                       "gptqmodel>=7.5 with transformers>=5.14); use bnb-nf4 or torchao methods")
    return reasons


def quantization_config(params: QuantizeParams, method: str):
    import torch

    from optpipe.runtime import torch_dtype

    if method.startswith("bnb-"):
        from transformers import BitsAndBytesConfig

        if method == "bnb-int8":
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=method.removeprefix("bnb-"),
                                  bnb_4bit_use_double_quant=params.double_quant,
                                  bnb_4bit_compute_dtype=torch_dtype(params.compute_dtype))
    from transformers import TorchAoConfig
    from torchao import quantization as q

    if method == "torchao-int8wo":
        return TorchAoConfig(q.Int8WeightOnlyConfig())
    if method == "torchao-int8dq":
        return TorchAoConfig(q.Int8DynamicActivationInt8WeightConfig())
    if method == "torchao-int4wo":
        return TorchAoConfig(q.Int4WeightOnlyConfig(group_size=params.group_size, int4_packing_format="tile_packed_to_4d"))
    if method == "torchao-float8wo":
        return TorchAoConfig(q.Float8WeightOnlyConfig(weight_dtype=torch.float8_e4m3fn))
    raise ValueError(f"no quantization config for {method}")


class Quantize(Pass):
    name = "quantize"
    variant_label = "quantize"
    Params = QuantizeParams
    summary = "Weight quantization (bitsandbytes int8/nf4/fp4, torchao int8/int4/float8); one candidate per method."
    requires = "bitsandbytes or torchao (extra 'quant'); int4/float8 need CUDA (float8: cc >= 8.9); GPTQ/AWQ not wired yet"

    @classmethod
    def requirements(cls, params, target, env) -> list[str]:
        return [f"{m}: {r}" for m in params.methods for r in method_requirements(m, target, env)]

    @classmethod
    def apply(cls, candidate, params):
        """Quantize through transformers' loader: save the parent, load it back quantized."""
        from transformers import AutoModelForCausalLM

        from optpipe.runtime import TorchCandidate, torch_dtype

        (method,) = params.methods
        tmp = tempfile.mkdtemp(prefix="optpipe-quant-")
        try:
            candidate.save(tmp)
            model = AutoModelForCausalLM.from_pretrained(
                tmp, quantization_config=quantization_config(params, method), device_map=candidate.settings.device,
                dtype=torch_dtype(candidate.settings.dtype), attn_implementation=candidate.settings.attn_implementation)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        model.eval()
        return TorchCandidate(model, candidate.tokenizer, candidate.settings).with_settings(quantization=method)
