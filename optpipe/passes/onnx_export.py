"""onnx_export: export the candidate to ONNX with KV cache (optimum's exporter) and run it in
onnxruntime; ORT quantization methods are alternatives, each a candidate of its own.

Why a separate export environment: optimum-onnx 0.1.0 (its latest release) pins transformers<4.58,
while optpipe's core needs transformers 5.x. The export therefore runs `optimum-cli export onnx` from
its own virtual environment (`optpipe setup-onnx` creates it, or set OPTPIPE_ONNX_PYTHON to a python
that has optimum-onnx); optpipe then quantizes and runs the graph with the onnxruntime of its own
environment. Where optimum-onnx is importable in the current environment, it is used directly.

Methods: fp32 (graph optimizations only), int8-dynamic (`quantize_dynamic`, MatMul weights int8),
int4 (`MatMulNBitsQuantizer`, 4-bit block-wise weights). The execution provider is the CPU EP;
CUDA/TensorRT EPs are requirements that fail with the reason.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field

from optpipe.passes.base import Pass, PassParams

DEFAULT_ENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "optpipe" / "onnx-env"
SETUP_HINT = "create it with `optpipe setup-onnx` (or set OPTPIPE_ONNX_PYTHON to a python with optimum-onnx)"


class OnnxExportParams(PassParams):
    kind: Literal["onnx_export"] = Field("onnx_export", alias="pass")
    methods: list[Literal["fp32", "int8-dynamic", "int4"]] = Field(["fp32"], min_length=1,
                                                                    description="Alternatives tried in order.")
    optimization: Literal["disable", "basic", "extended", "all"] = Field("all", description="onnxruntime graph optimization level.")
    provider: Literal["cpu", "cuda", "tensorrt"] = Field("cpu", description="onnxruntime execution provider.")
    block_size: int = Field(32, description="int4: weights per quantization block.")


def export_python() -> Path | None:
    """The python that runs the exporter: OPTPIPE_ONNX_PYTHON, else the default export venv."""
    env = os.environ.get("OPTPIPE_ONNX_PYTHON")
    if env:
        return Path(env)
    candidate = DEFAULT_ENV / "bin" / "python"
    return candidate if candidate.exists() else None


def legacy_config(model_dir: Path) -> None:
    """Rewrite config.json so transformers 4.x (the exporter's) reads what 5.x saved: 5.x keeps RoPE
    settings under `rope_parameters`, 4.x reads `rope_theta`/`rope_scaling` and would silently fall
    back to its default theta (10000), exporting a different model."""
    import json

    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        cfg.setdefault("rope_theta", rope["rope_theta"])
        if rope.get("rope_type", "default") != "default":
            cfg.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    if "dtype" in cfg:
        cfg.setdefault("torch_dtype", cfg["dtype"])
    path.write_text(json.dumps(cfg, indent=2))


def run_export(model_dir: Path, out_dir: Path) -> None:
    py = export_python()
    if py is None:
        raise RuntimeError(f"no ONNX export environment: {SETUP_HINT}")
    cmd = [str(py), "-m", "optimum.commands.optimum_cli", "export", "onnx", "--model", str(model_dir),
           "--task", "text-generation-with-past", "--dtype", "fp32", str(out_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (out_dir / "model.onnx").exists():
        raise RuntimeError(f"optimum export failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def quantize_onnx(directory: Path, method: str, block_size: int) -> None:
    """Rewrite directory/model.onnx in place with the ORT quantizer for `method`."""
    import logging

    import onnx

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    src = directory / "model.onnx"
    dst = directory / "model.quant.onnx"
    if method == "int8-dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         use_external_data_format=True)
    elif method == "int4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        model = onnx.load(str(src))
        q = MatMulNBitsQuantizer(model, block_size=block_size, is_symmetric=True)
        q.process()
        onnx.save_model(q.model.model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.quant.onnx_data")
    else:
        return
    for old in directory.glob("model.onnx*"):
        old.unlink()
    # keep optimum's file name; external data keeps its own file name, referenced from the graph
    dst.rename(src)


class OnnxExport(Pass):
    name = "onnx_export"
    variant_label = "onnx"
    Params = OnnxExportParams
    summary = "Export to ONNX with KV cache (optimum) and run in onnxruntime; fp32 / int8-dynamic / int4 variants."
    requires = "onnx + onnxruntime (extra 'onnx'); an optimum-onnx export env (`optpipe setup-onnx`); CPU EP (CUDA EP needs onnxruntime-gpu)"

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
        if params.provider == "tensorrt":
            reasons.append("the TensorRT execution provider is not wired into optpipe yet (needs onnxruntime-gpu with TensorRT)")
        if "int4" in params.methods:
            try:
                import importlib.util

                if importlib.util.find_spec("onnxruntime.quantization.matmul_nbits_quantizer") is None:
                    reasons.append("int4 needs an onnxruntime with MatMulNBitsQuantizer (>= 1.17)")
            except ModuleNotFoundError:
                pass
        return reasons

    @classmethod
    def apply(cls, candidate, params):
        from optpipe.onnx_runtime import OnnxCandidate

        (method,) = params.methods
        if getattr(candidate.settings, "format", "transformers") != "transformers" or candidate.settings.quantization:
            raise ValueError("onnx_export needs an unquantized transformers candidate; put it before quantize")
        src = Path(tempfile.mkdtemp(prefix="optpipe-onnx-src-"))
        out = Path(tempfile.mkdtemp(prefix="optpipe-onnx-"))
        try:
            candidate.save(src)
            legacy_config(src)
            run_export(src, out)
        finally:
            shutil.rmtree(src, ignore_errors=True)
        candidate.tokenizer.save_pretrained(out)
        quantize_onnx(out, method, params.block_size)
        settings = candidate.settings.__class__(
            format="onnx", dtype="fp32", attn_implementation="onnx", device="cpu",
            onnx={"method": method, "optimization": params.optimization, "provider": params.provider,
                  "exporter": "optimum-onnx (separate environment)", "export_python": str(export_python())})
        cand = OnnxCandidate(out, candidate.tokenizer, settings)
        cand.temporary = True
        return cand
