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
| gptq-4bit | GPTQ in optpipe/gptq.py (plain torch), compressed-tensors checkpoint | CPU and CUDA |
| awq-4bit | AutoRound's AWQ (auto-round), compressed-tensors checkpoint | CPU and CUDA |

GPTQ and AWQ are calibrated (optpipe/calibration.py): by default on a held-out slice from the end of
the shipped WikiText-2 test text, disjoint from the tokens perplexity scores, or on a text file. They
write symmetric int4 per-group weights (W4A16) in compressed-tensors' `pack-quantized` format, which
stock transformers loads with `compressed-tensors` installed. AutoRound patches transformers on
import, so AWQ runs in a child process and the build process never imports it.

Requirements are read from what is installed (packages and the backends they ship), not from a
hard-coded device list.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from optpipe.passes.base import Pass, PassParams

Method = Literal["bnb-int8", "bnb-nf4", "bnb-fp4", "torchao-int8wo", "torchao-int8dq", "torchao-int4wo",
                 "torchao-float8wo", "torchao-int4-gemlite", "gptq-4bit", "awq-4bit"]


class QuantizeParams(PassParams):
    kind: Literal["quantize"] = Field("quantize", alias="pass")
    methods: list[Method] = Field(min_length=1, description="Methods tried in order; each is a candidate.")
    group_size: int = Field(128, description="Group size of int4 methods.")
    compute_dtype: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="Compute dtype of bnb 4-bit layers.")
    double_quant: bool = Field(True, description="bnb 4-bit: quantize the quantization constants too.")
    calibration: Literal["wikitext-heldout", "file"] = Field(
        "wikitext-heldout", description="GPTQ/AWQ calibration text: a held-out slice from the end of the shipped "
        "WikiText-2 test text (disjoint from the perplexity tokens), or calibration_file.")
    calibration_file: str | None = Field(None, description="UTF-8 text file for calibration: file.")
    calibration_samples: int = Field(32, ge=1, description="GPTQ/AWQ calibration sequences.")
    calibration_seq_len: int = Field(512, ge=16, description="Tokens per calibration sequence.")

    def chain_params(self):
        """Calibration fields define only calibrated methods' results (bnb/torchao chains stay as they were)."""
        out = super().chain_params()
        if not any(m in ("gptq-4bit", "awq-4bit") for m in self.methods):
            for k in ("calibration", "calibration_file", "calibration_samples", "calibration_seq_len"):
                out.pop(k, None)
        return out

    @model_validator(mode="after")
    def _file_given(self):
        if self.calibration == "file" and not self.calibration_file:
            raise ValueError("calibration: file needs calibration_file (a UTF-8 text file)")
        return self


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
            reasons.append("torchao int8 dynamic quantization did not finish a 64-token decode benchmark of "
                           "SmolLM2-135M in over 4 minutes on an H200 (torchao 0.17, torch 2.11; twice), so "
                           "optpipe refuses it on CUDA; use torchao-int8wo (same weights, bf16 activations)")
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
    elif method in ("gptq-4bit", "awq-4bit"):
        if not env.has_package("compressed-tensors"):
            reasons.append("needs compressed-tensors, the checkpoint format GPTQ/AWQ write (pip install 'optpipe[quant]')")
        if method == "awq-4bit" and not env.has_package("auto-round"):
            reasons.append("needs auto-round, whose AWQ implementation it runs (pip install 'optpipe[quant]')")
    return reasons


def calibration_requirements(params) -> list[str]:
    if params.calibration == "file" and params.calibration_file and not Path(params.calibration_file).is_file():
        return [f"calibration_file {params.calibration_file!r} does not exist"]
    return []


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
        # version 2 (Int8Tensor) explicitly: torchao 0.17 defaults to version 1 (AffineQuantizedTensor),
        # which transformers 5.17 could not save ("Unsupported tensor type", H200 run of gpu-quant-smollm2).
        return TorchAoConfig(q.Int8WeightOnlyConfig(version=2))
    if method == "torchao-int8dq":
        return TorchAoConfig(q.Int8DynamicActivationInt8WeightConfig(version=2))
    if method == "torchao-int4wo":
        return TorchAoConfig(q.Int4WeightOnlyConfig(group_size=params.group_size, int4_packing_format="tile_packed_to_4d"))
    if method == "torchao-float8wo":
        return TorchAoConfig(q.Float8WeightOnlyConfig(weight_dtype=torch.float8_e4m3fn))
    if method == "torchao-int4-gemlite":
        from torchao.prototype.quantization.quant_api import UIntxWeightOnlyConfig

        from optpipe import gemlite_support

        gemlite_support.register()
        return TorchAoConfig(UIntxWeightOnlyConfig(group_size=params.group_size, bit_width=4))
    raise ValueError(f"no quantization config for {method}")


class Quantize(Pass):
    name = "quantize"
    variant_label = "quantize"
    Params = QuantizeParams
    summary = ("Weight quantization (bitsandbytes int8/nf4/fp4, torchao int8/int4/float8, calibrated GPTQ/AWQ "
               "int4); one candidate per method.")
    requires = ("bitsandbytes or torchao (extra 'quant'); int4/float8 need CUDA (float8: cc >= 8.9); "
                "GPTQ: compressed-tensors; AWQ: auto-round + compressed-tensors")

    @classmethod
    def requirements(cls, params, target, env) -> list[str]:
        reasons = [f"{m}: {r}" for m in params.methods for r in method_requirements(m, target, env)]
        if any(m in CALIBRATED for m in params.methods):
            reasons += calibration_requirements(params)
        return reasons

    @classmethod
    def apply(cls, candidate, params):
        """Quantize through transformers' loader: save the parent, load it back quantized."""
        from transformers import AutoModelForCausalLM

        from optpipe.runtime import TorchCandidate, torch_dtype

        (method,) = params.methods
        if method in CALIBRATED:
            return apply_calibrated(candidate, params, method)
        dtype = method_dtype(method, candidate.settings.dtype)
        tmp = tempfile.mkdtemp(prefix="optpipe-quant-")
        try:
            candidate.save(tmp)
            model = AutoModelForCausalLM.from_pretrained(
                tmp, quantization_config=quantization_config(params, method), device_map=candidate.settings.device,
                dtype=torch_dtype(dtype), attn_implementation=candidate.settings.attn_implementation)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        model.eval()
        return TorchCandidate(model, candidate.tokenizer, candidate.settings).with_settings(quantization=method, dtype=dtype)


def method_dtype(method: str, parent_dtype: str) -> str:
    """The activation dtype a method runs in. gemlite's kernels compute in the dtype of the scales,
    and torchao's HQQ step makes them fp16 whatever the weights were: a bf16 model fails in Triton
    with "Both operands must be same dtype. Got bf16 and fp16" (H200 run 13), so gemlite runs fp16."""
    return "fp16" if method == "torchao-int4-gemlite" else parent_dtype


CALIBRATED = ("gptq-4bit", "awq-4bit")


def apply_calibrated(candidate, params, method: str):
    """GPTQ or AWQ on calibration data, written as a compressed-tensors checkpoint and loaded back
    through stock transformers (so the candidate is exactly what a deployment loads)."""
    import torch
    from transformers import AutoModelForCausalLM

    from optpipe.calibration import calibration_data
    from optpipe.gptq import check_group_size, gptq_model, pack_compressed_tensors, packed_fraction
    from optpipe.runtime import TorchCandidate, dtype_name

    check_group_size(candidate.model, params.group_size)
    calib = calibration_data(params, candidate.tokenizer)
    tmp = Path(tempfile.mkdtemp(prefix="optpipe-calib-"))
    out = tmp / "out"
    try:
        if method == "gptq-4bit":
            scales = gptq_model(candidate.model, calib.ids, params.group_size)
            pack_compressed_tensors(candidate.model, scales, params.group_size)
            candidate.model.save_pretrained(out, safe_serialization=True)
        else:
            candidate.save(tmp / "parent")
            torch.save(calib.ids, tmp / "calib.pt")
            job = {"parent": str(tmp / "parent"), "calib": str(tmp / "calib.pt"), "out": str(out),
                   "group_size": params.group_size, "device": candidate.settings.device}
            (tmp / "job.json").write_text(json.dumps(job))
            proc = subprocess.run([sys.executable, "-c", "import sys; from optpipe.passes.quantize import awq_worker; "
                                   "awq_worker(sys.argv[1])", str(tmp / "job.json")],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
                raise RuntimeError(f"AWQ (auto-round) failed in its child process:\n{tail}")
        model = AutoModelForCausalLM.from_pretrained(out, device_map=candidate.settings.device,
                                                     attn_implementation=candidate.settings.attn_implementation)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model.eval()
    keep_packed_on_save(model)
    if packed_fraction(model) != 1.0:
        raise RuntimeError(f"{method}: the loaded checkpoint is not int4-packed in every decoder linear layer")
    info = calib.info | {"algorithm": "gptq (optpipe.gptq)" if method == "gptq-4bit" else "awq (auto-round)",
                         "scheme": f"int4 symmetric, group {params.group_size}, compressed-tensors pack-quantized"}
    return TorchCandidate(model, candidate.tokenizer, candidate.settings).with_settings(
        quantization=method, dtype=dtype_name(model.dtype), calibration=info)


def keep_packed_on_save(model) -> None:
    """compressed-tensors decompresses int4 weights into dense ones on the model's first forward (it has
    no int4 matmul in transformers); re-pack them before saving so the checkpoint stays int4."""
    original = model.save_pretrained

    def save_pretrained(*args, **kwargs):
        import torch

        dense = any(hasattr(m, "weight_scale") and isinstance(getattr(m, "weight", None), torch.nn.Parameter)
                    for m in model.modules())
        if dense:
            model.hf_quantizer.compressor.compress_model(model)
        return original(*args, **kwargs)

    model.save_pretrained = save_pretrained


def awq_worker(job_file: str) -> None:
    """Child process: AutoRound's AWQ (RTN int4 after AWQ scaling), exported as compressed-tensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job = json.loads(Path(job_file).read_text())
    from auto_round import AutoRound, AWQConfig  # patches transformers: only ever imported here

    model = AutoModelForCausalLM.from_pretrained(job["parent"], device_map=job["device"])
    tok = AutoTokenizer.from_pretrained(job["parent"])
    ids = torch.load(job["calib"])
    # amp=False: tune and export in fp32. With amp (its default) auto-round casts the model to bf16 on
    # the CPU, writes the non-quantized tensors in bf16, then "restores" every tensor that was fp32 in
    # the parent checkpoint from that checkpoint. That restore undoes the AWQ scales folded into the
    # RMSNorm weights (input_layernorm / post_attention_layernorm) while q/k/v and gate/up keep their
    # input channels multiplied by the same scales: SmolLM2-135M perplexity 25.5 -> ~79,000.
    ar = AutoRound(model, tok, scheme="W4A16", group_size=job["group_size"], alg_configs=[AWQConfig()],
                   dataset=[row.unsqueeze(0) for row in ids], nsamples=ids.shape[0], seqlen=ids.shape[1],
                   batch_size=min(4, ids.shape[0]), device_map=job["device"], amp=False)
    raw = Path(job["out"] + "-raw")
    ar.quantize_and_save(str(raw), format="llm_compressor")
    configs = sorted(raw.rglob("config.json"))
    if not configs:
        raise RuntimeError(f"auto-round wrote no config.json under {raw}")
    shutil.copytree(configs[0].parent, job["out"])
