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


# fp16 conversion keeps these graph outputs fp32: logits are what scoring reads (log-softmax over the
# vocabulary) and their cast is one small node at the end; the KV cache goes fp16 (half the memory).
FP32_OUTPUTS = ["logits"]
PROTOBUF_LIMIT = 1_800_000_000  # onnx's in-memory shape inference fails past protobuf's 2 GB


def to_float16(model, graph_bytes: int):
    """The fp32 graph with fp16 weights and compute (onnxruntime's own converter, as its LLM tools
    use): float inputs and outputs become fp16 except `FP32_OUTPUTS`; int64 ids and masks are left
    alone. Ops the converter's default block list names stay fp32 behind casts."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=FP32_OUTPUTS, disable_shape_infer=graph_bytes > PROTOBUF_LIMIT)


def quantize_onnx(directory: Path, method: str, block_size: int) -> None:
    """Rewrite directory/model.onnx in place for `method`: fp32 leaves it; fp16 converts it;
    int8-dynamic / int4 / int4-fp16 quantize it with onnxruntime's quantizers."""
    import logging

    import onnx

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    src = directory / "model.onnx"
    dst = directory / "model.quant.onnx"
    graph_bytes = sum(f.stat().st_size for f in directory.glob("model.onnx*"))
    if method == "fp32":
        return
    if method == "int8-dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], use_external_data_format=True)
    else:
        model = onnx.load(str(src))
        if method in ("fp16", "int4-fp16"):
            model = to_float16(model, graph_bytes)
        if method in ("int4", "int4-fp16"):
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            q = MatMulNBitsQuantizer(model, block_size=block_size, is_symmetric=True)
            q.process()
            model = q.model.model
        onnx.save_model(
            model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location="model.quant.onnx_data"
        )
    for old in directory.glob("model.onnx*"):
        old.unlink()
    # keep optimum's file name; external data keeps its own file name, referenced from the graph
    dst.rename(src)
