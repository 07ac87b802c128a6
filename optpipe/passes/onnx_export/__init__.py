"""onnx_export: export the candidate to ONNX with KV cache (optimum's exporter) and run it in
onnxruntime; ORT quantization methods are alternatives, each a candidate of its own.

Why a separate export environment: optimum-onnx 0.1.0 (its latest release) pins transformers<4.58,
while optpipe's core needs transformers 5.x. The export therefore runs `optimum-cli export onnx` from
its own virtual environment (`optpipe setup-onnx` creates it, or set OPTPIPE_ONNX_PYTHON to a python
that has optimum-onnx); optpipe then quantizes and runs the graph with the onnxruntime of its own
environment. Where optimum-onnx is importable in the current environment, it is used directly.

Methods: fp32 (graph optimizations only), int8-dynamic (`quantize_dynamic`, MatMul weights int8),
int4 (`MatMulNBitsQuantizer`, 4-bit block-wise weights, fp32 activations), fp16 (the fp32 graph
converted by onnxruntime's float16 converter; logits stay fp32, the KV cache is fp16) and int4-fp16
(fp16 graph with MatMulNBits weights). Providers: cpu, cuda (onnxruntime-gpu; the KV cache stays on
the GPU between decode steps through IO binding). fp16 / int4-fp16 are for GPU EPs and refused on
the CPU EP; TensorRT is a requirement that fails with the reason.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field

from optpipe.errors import PassFailed
from optpipe.passes.base import Pass, PassParams
from optpipe.passes.onnx_export.environment import SETUP_HINT, export_python
from optpipe.passes.onnx_export.export import legacy_config, quantize_onnx, run_export

FP16_METHODS = {"fp16", "int4-fp16"}  # fp16 graphs: GPU execution providers only
INT4_METHODS = {"int4", "int4-fp16"}  # MatMulNBits weights


def tensorrt_missing(env) -> str:
    """What the TensorRT EP lacks here, by name: onnxruntime-gpu's TensorRT EP library links TensorRT 10
    (libnvinfer.so.10, libnvonnxparser.so.10) and cuDNN 9, and optpipe does not yet set the EP's options."""
    missing = []
    if not env.has_package("onnxruntime-gpu"):
        missing.append("onnxruntime-gpu (its wheel carries the TensorRT EP library)")
    if not any(env.has_package(p) for p in ("tensorrt-cu13-libs", "tensorrt-cu12-libs", "tensorrt-libs", "tensorrt")):
        missing.append(
            "TensorRT 10 libraries (libnvinfer.so.10 + libnvonnxparser.so.10, e.g. tensorrt-cu13 10.x; TensorRT 11 does not load)"
        )
    missing.append(
        "optpipe's wiring of the TensorRT EP: fp16/int8 flags, an engine cache and optimization profiles for the "
        "growing KV-cache shapes are not set yet (use provider cuda)"
    )
    return "the TensorRT execution provider needs " + "; ".join(missing)


class OnnxExportParams(PassParams):
    kind: Literal["onnx_export"] = Field("onnx_export", alias="pass")
    methods: list[Literal["fp32", "fp16", "int8-dynamic", "int4", "int4-fp16"]] = Field(
        ["fp32"], min_length=1, description="Alternatives tried in order."
    )
    optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime graph optimization level."
    )
    provider: Literal["cpu", "cuda", "tensorrt"] = Field("cpu", description="onnxruntime execution provider.")
    block_size: int = Field(32, description="int4 / int4-fp16: weights per quantization block (a power of two >= 16).")


class OnnxExport(Pass):
    name = "onnx_export"
    variant_label = "onnx"
    Params = OnnxExportParams
    summary = "Export to ONNX with KV cache (optimum) and run in onnxruntime; fp32 / fp16 / int8-dynamic / int4 variants."
    requires = (
        "onnx + onnxruntime (extra 'onnx'); an optimum-onnx export env (`optpipe setup-onnx`); CPU EP, or the CUDA EP "
        "(onnxruntime-gpu + a GPU); fp16 and int4-fp16 only on the CUDA EP"
    )

    @classmethod
    def requirements(cls, params, target, env) -> list[str]:
        reasons = []
        for pkg in ("onnx", "onnxruntime"):
            if not env.has_package(pkg) and not (pkg == "onnxruntime" and env.has_package("onnxruntime-gpu")):
                reasons.append(f"needs {pkg} (pip install 'optpipe[onnx]')")
        if export_python() is None:
            reasons.append(f"no optimum-onnx export environment: {SETUP_HINT}")
        if params.provider == "cuda" and not (env.has_package("onnxruntime-gpu") and env.has_cuda):
            reasons.append("the CUDA execution provider needs onnxruntime-gpu and a CUDA device")
        half = sorted(set(params.methods) & FP16_METHODS)
        if half and params.provider == "cpu":
            reasons.append(
                f"{', '.join(half)} is for GPU execution providers: the CPU EP has no fp16 kernels for most ops and runs "
                "the graph through inserted fp32 casts (slower than fp32, no memory saved); use fp32 / int8-dynamic / "
                "int4 with provider cpu, or provider cuda"
            )
        if set(params.methods) & INT4_METHODS and (params.block_size < 16 or params.block_size & (params.block_size - 1)):
            reasons.append(f"block_size {params.block_size}: MatMulNBits kernels need a power of two >= 16 (16, 32, 64, 128)")
        if params.provider == "tensorrt":
            reasons.append(tensorrt_missing(env))
        if set(params.methods) & INT4_METHODS:
            try:
                import importlib.util

                if importlib.util.find_spec("onnxruntime.quantization.matmul_nbits_quantizer") is None:
                    reasons.append("int4 needs an onnxruntime with MatMulNBitsQuantizer (>= 1.17)")
                elif not env.has_package("onnx-ir"):
                    reasons.append(
                        "int4 needs onnx-ir (onnxruntime's MatMulNBitsQuantizer imports it; pip install 'optpipe[onnx]')"
                    )
            except ModuleNotFoundError:
                pass
        return reasons

    @classmethod
    def apply(cls, candidate, params, ctx):
        return cls.from_export(cls.export(candidate), candidate.tokenizer, params)

    @classmethod
    def export(cls, candidate) -> Path:
        """The fp32 ONNX export (optimum, in its own environment) of `candidate`, with its tokenizer,
        in a fresh temporary directory."""
        if getattr(candidate.settings, "format", "transformers") != "transformers" or candidate.settings.quantization:
            raise PassFailed("onnx_export needs an unquantized transformers candidate; put it before quantize")
        src = Path(tempfile.mkdtemp(prefix="optpipe-onnx-src-"))
        out = Path(tempfile.mkdtemp(prefix="optpipe-onnx-"))
        try:
            candidate.save(src)
            legacy_config(src)
            run_export(src, out)
        finally:
            shutil.rmtree(src, ignore_errors=True)
        candidate.tokenizer.save_pretrained(out)
        return out

    @classmethod
    def from_export(cls, out: Path, tokenizer, params):
        """Turn an fp32 export directory (taken over, rewritten in place) into this method's candidate."""
        from optpipe.runtime.candidate import RuntimeSettings
        from optpipe.runtime.onnx_candidate import OnnxCandidate

        (method,) = params.methods
        quantize_onnx(out, method, params.block_size)
        settings = RuntimeSettings(
            format="onnx",
            dtype="fp16" if method in FP16_METHODS else "fp32",
            attn_implementation="onnx",
            device="cuda" if params.provider == "cuda" else "cpu",
            onnx={
                "method": method,
                "optimization": params.optimization,
                "provider": params.provider,
                "exporter": "optimum-onnx (separate environment)",
                "export_python": str(export_python()),
            },
        )
        return OnnxCandidate(out, tokenizer, settings, temporary=True)

    @classmethod
    def weights_after(cls, params, parent):
        """fp32 / fp16 graphs hold fp32 / fp16 weights; the ORT int8/int4 layouts are not in the forecast's table yet."""
        (method,) = params.methods
        if method in ("fp32", "fp16"):
            return parent.model_copy(update={"dtype": method, "quantization": None})
        return None
