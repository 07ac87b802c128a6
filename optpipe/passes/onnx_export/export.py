"""Export a transformers directory to ONNX with KV cache (optimum's exporter, in its own
environment) and quantize the graph with onnxruntime's quantizers."""

from __future__ import annotations

import subprocess
from pathlib import Path

from optpipe.passes.onnx_export.environment import SETUP_HINT, export_python


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
    cmd = [
        str(py),
        "-m",
        "optimum.commands.optimum_cli",
        "export",
        "onnx",
        "--model",
        str(model_dir),
        "--task",
        "text-generation-with-past",
        "--dtype",
        "fp32",
        str(out_dir),
    ]
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

        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], use_external_data_format=True)
    elif method == "int4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        model = onnx.load(str(src))
        q = MatMulNBitsQuantizer(model, block_size=block_size, is_symmetric=True)
        q.process()
        onnx.save_model(
            q.model.model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location="model.quant.onnx_data"
        )
    else:
        return
    for old in directory.glob("model.onnx*"):
        old.unlink()
    # keep optimum's file name; external data keeps its own file name, referenced from the graph
    dst.rename(src)
