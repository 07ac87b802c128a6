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
| torchao-int8dq | torchao int8 dynamic activations + int8 weights | CPU (refused on CUDA: its decode stalled on an H200) |
| torchao-int4wo | torchao int4 weight-only, group size param (tile_packed_to_4d) | CUDA |
| torchao-float8wo | torchao float8 weight-only | CUDA, compute capability >= 8.9 |
| torchao-int4-gemlite | torchao HQQ int4 (group size param) packed for gemlite's Triton GEMV kernels | CUDA, with gemlite |
| gptq-4bit | GPTQ in gptq.py (plain torch), compressed-tensors checkpoint | CPU and CUDA |
| awq-4bit | AutoRound's AWQ (auto-round), compressed-tensors checkpoint | CPU and CUDA |
| mixed-precision | per-layer int4 / int8 / dense from measured sensitivity (mixed.py), compressed-tensors | CPU and CUDA |

GPTQ and AWQ are calibrated (calibration.py in this folder): by default on a held-out slice from the end of
the shipped WikiText-2 test text, disjoint from the tokens perplexity scores, or on a text file. They
write symmetric int4 per-group weights (W4A16) in compressed-tensors' `pack-quantized` format, which
stock transformers loads with `compressed-tensors` installed. AutoRound patches transformers on
import, so AWQ runs in a child process and the build process never imports it.

Requirements are read from what is installed (packages and the backends they ship), not from a
hard-coded device list.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from optpipe.passes.base import Pass, PassParams
from optpipe.passes.quantize.calibrated import apply_calibrated
from optpipe.passes.quantize.methods import (
    CALIBRATED,
    MIXED,
    Method,
    calibration_requirements,
    method_dtype,
    method_requirements,
    quantization_config,
)
from optpipe.passes.quantize.mixed import SELECTION_VERSION, MixedPrecisionSettings, default_max_kl

GROUPED = ("torchao-int4wo", "torchao-int4-gemlite", "gptq-4bit", "awq-4bit", MIXED)  # methods group_size applies to


class QuantizeParams(PassParams):
    kind: Literal["quantize"] = Field("quantize", alias="pass")
    methods: list[Method] = Field(min_length=1, description="Methods tried in order; each is a candidate.")
    group_size: int = Field(128, description="Group size of int4 methods.")
    quantize_lm_head: bool = Field(
        False,
        description="torchao methods: store the output head (lm_head) in the method's format too (untied "
        "from the embedding). int4, Llama-3.1-8B shape, H200: +4 % decode speed and -0.77 GB; off by default "
        "because the head is the layer most sensitive to quantization (judged per candidate like any other).",
    )
    compute_dtype: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="Compute dtype of bnb 4-bit layers.")
    double_quant: bool = Field(True, description="bnb 4-bit: quantize the quantization constants too.")
    calibration: Literal["wikitext-heldout", "file"] = Field(
        "wikitext-heldout",
        description="GPTQ/AWQ calibration text: a held-out slice from the end of the shipped "
        "WikiText-2 test text (disjoint from the perplexity tokens), or calibration_file.",
    )
    calibration_file: str | None = Field(None, description="UTF-8 text file for calibration: file.")
    calibration_samples: int = Field(32, ge=1, description="GPTQ/AWQ calibration sequences.")
    calibration_seq_len: int = Field(512, ge=16, description="Tokens per calibration sequence.")
    mixed_precision: MixedPrecisionSettings = Field(
        MixedPrecisionSettings(), description="Method mixed-precision: formats a layer may take and the KL limit."
    )

    def chain_params(self):
        """Calibration fields define only calibrated methods' results (bnb/torchao chains stay as they were)."""
        out = super().chain_params()
        if not self.quantize_lm_head:
            out.pop("quantize_lm_head", None)  # the default: chains cached before the option keep their keys
        if not any(m in CALIBRATED for m in self.methods):
            for k in ("calibration", "calibration_file", "calibration_samples", "calibration_seq_len"):
                out.pop(k, None)
        if MIXED not in self.methods:
            out.pop("mixed_precision", None)  # defines only the mixed method's result
        else:
            out["mixed_selection_version"] = SELECTION_VERSION  # a changed choice rule is a different candidate
        return out

    @model_validator(mode="after")
    def _file_given(self):
        if self.calibration == "file" and not self.calibration_file:
            raise ValueError("calibration: file needs calibration_file (a UTF-8 text file)")
        return self


class Quantize(Pass):
    name = "quantize"
    variant_label = "quantize"
    Params = QuantizeParams
    summary = (
        "Weight quantization (bitsandbytes int8/nf4/fp4, torchao int8/int4/float8, calibrated GPTQ/AWQ "
        "int4); one candidate per method."
    )
    requires = (
        "bitsandbytes or torchao (extra 'quant'); int4/float8 need CUDA (float8: cc >= 8.9); "
        "GPTQ: compressed-tensors; AWQ: auto-round + compressed-tensors"
    )

    @classmethod
    def variants(cls, params):
        """Each method at each grid point, less the points a method ignores: group_size matters to int4
        methods only, compute_dtype / double_quant to bitsandbytes 4-bit only (one int8 candidate, not one
        per group size)."""
        seen, out = set(), []
        for label, v in super().variants(params):
            (method,) = v.methods
            chain = v.chain_params()
            if method not in GROUPED:
                chain.pop("group_size", None)
            if method not in ("bnb-nf4", "bnb-fp4"):
                chain.pop("compute_dtype", None)
                chain.pop("double_quant", None)
            key = json.dumps(chain, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append((label, v))
        return out

    @classmethod
    def resolve(cls, params, ctx):
        """mixed-precision without max_kl: the limit derived from the budget (mixed.default_max_kl)."""
        mp = params.mixed_precision
        if MIXED not in params.methods or mp.max_kl is not None:
            return params
        return params.model_copy(update={"mixed_precision": mp.model_copy(update={"max_kl": default_max_kl(ctx.budget)})})

    @classmethod
    def requirements(cls, params, target, env) -> list[str]:
        reasons = [f"{m}: {r}" for m in params.methods for r in method_requirements(m, target, env)]
        if params.quantize_lm_head:
            reasons += [
                f"{m}: quantize_lm_head is for torchao methods only" for m in params.methods if not m.startswith("torchao-")
            ]
        if any(m in CALIBRATED for m in params.methods):
            reasons += calibration_requirements(params)
        return reasons

    @classmethod
    def apply(cls, candidate, params, ctx):
        """Quantize through transformers' loader: the parent's files (as saved by the build, or saved here
        when called on a live candidate) loaded back with the method's quantization config, so the
        parent is never held twice."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from optpipe.runtime.dtypes import torch_dtype
        from optpipe.runtime.torch_candidate import TorchCandidate

        (method,) = params.methods
        if method == MIXED:
            from optpipe.passes.quantize.mixed_apply import apply_mixed

            return apply_mixed(candidate, params, ctx)
        if method in CALIBRATED:
            return apply_calibrated(candidate, params, method, ctx.evaluation.perplexity_tokens)
        settings = candidate.settings
        dtype = method_dtype(method, settings.dtype)
        tmp = None
        if ctx.parent_dir is not None and ctx.parent_dir.is_dir():
            source = ctx.parent_dir
        else:
            tmp = Path(tempfile.mkdtemp(prefix="optpipe-quant-"))
            candidate.save(tmp)
            source = tmp
        try:
            model = AutoModelForCausalLM.from_pretrained(
                source,
                quantization_config=quantization_config(params, method),
                device_map=settings.device,
                dtype=torch_dtype(dtype),
                attn_implementation=settings.attn_implementation,
            )
            tokenizer = AutoTokenizer.from_pretrained(source)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        model.eval()
        if params.quantize_lm_head and type(model.lm_head.weight.data) is torch.Tensor:
            from optpipe.errors import PassFailed

            raise PassFailed(
                "quantize_lm_head: this model ties lm_head to the input embedding (tie_word_embeddings), and "
                "transformers' torchao loader quantizes only a head with weights of its own; drop the option"
            )
        return TorchCandidate(model, tokenizer, settings).with_settings(quantization=method, dtype=dtype)

    @classmethod
    def weights_after(cls, params, parent):
        (method,) = params.methods
        if method == MIXED:
            return None  # its size is chosen at build time, from measured sensitivities
        return parent.model_copy(
            update={
                "dtype": method_dtype(method, parent.dtype),
                "quantization": method,
                "group_size": params.group_size,
                "double_quant": params.double_quant,
                "quantize_lm_head": params.quantize_lm_head,
            }
        )
