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


RMS_CHAIN = (("ReduceMean",), ("Add",), ("Sqrt",), ("Div", "Reciprocal"), ("Mul",))  # after Pow: mean(x^2) + eps, 1/sqrt, x * it


def rms_norm_statistics(graph) -> list[str]:
    """Names of the nodes that compute each RMSNorm's statistics: [Cast to float] -> Pow -> ReduceMean
    -> Add -> Sqrt -> Div -> Mul(x, 1/rms), and the Constants they read. transformers computes these
    in fp32 whatever the model's dtype (LlamaRMSNorm upcasts), and so does the fp16 graph: squared in
    fp16, one activation above 256 overflows 65504 and zeroes its token. The Cast back to the model's
    dtype after the chain becomes a Cast to fp16, so the graph is what an fp16 torch export gives."""
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    kept: list[str] = []
    for pow_node in (n for n in graph.node if n.op_type == "Pow"):
        chain, node = [pow_node], pow_node
        for ops in RMS_CHAIN:
            nxt = [c for c in consumers.get(node.output[0], []) if c.op_type in ops]
            if len(nxt) != 1:
                break
            node = nxt[0]
            chain.append(node)
        else:
            src = producer.get(pow_node.input[0])
            if src is not None and src.op_type == "Cast":
                chain.append(src)
            chain += [producer[i] for n in chain for i in n.input if i in producer and producer[i].op_type == "Constant"]
            kept += [n.name for n in chain if n.name]
    return kept


def to_float16(model, graph_bytes: int):
    """The fp32 graph with fp16 weights and compute (onnxruntime's own converter, as its LLM tools
    use): float inputs and outputs become fp16 except `FP32_OUTPUTS`; int64 ids and masks are left
    alone. RMSNorm statistics stay fp32 (`rms_norm_statistics`), as do the ops of the converter's
    default block list, behind casts."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(
        model,
        keep_io_types=FP32_OUTPUTS,
        disable_shape_infer=graph_bytes > PROTOBUF_LIMIT,
        node_block_list=rms_norm_statistics(model.graph),
    )
    skip_fp16_round_trips(model.graph)
    unique_node_names(model.graph)
    return model


def unique_node_names(graph) -> None:
    """The converter names each inserted Cast after the tensor it reads (`X_cast_to_fp32_node`, output
    `X_cast_to_fp32`), so where two kept-fp32 nodes read one tensor (RMSNorm's Pow and its Mul both read
    x) it inserts the same Cast twice: two nodes of one name defining one tensor, a graph onnxruntime
    1.31 refuses ("two nodes with same node name", "Duplicate definition of name"). An exact repeat of
    an earlier node (same op, inputs, outputs, attributes) is dropped; any other clash of names gets a suffix."""
    seen_nodes: set[bytes] = set()
    names: dict[str, int] = {}
    for n in list(graph.node):
        key = n.SerializeToString()
        if key in seen_nodes:
            graph.node.remove(n)
            continue
        seen_nodes.add(key)
        if n.name:
            k = names.get(n.name, 0)
            names[n.name] = k + 1
            if k:
                n.name = f"{n.name}_{k}"


def skip_fp16_round_trips(graph) -> None:
    """The converter casts each kept-fp32 node's output to fp16 and back to fp32 for the next kept
    node (`X_cast_to_fp16_node` then `X_cast_to_fp16_cast_to_fp32_node`), which would round x^2 through
    fp16 after all: the second cast reads the fp32 value instead (an Identity), and fp16 casts that
    nothing reads any more are dropped."""
    producer = {out: n for n in graph.node for out in n.output}
    for n in graph.node:
        src = producer.get(n.input[0]) if n.op_type == "Cast" and n.input else None
        if n.name.endswith("_cast_to_fp32_node") and src is not None and src.name.endswith("_cast_to_fp16_node"):
            n.input[0] = src.input[0]
            n.op_type = "Identity"
            del n.attribute[:]
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for n in [n for n in graph.node if n.name.endswith("_cast_to_fp16_node") and not set(n.output) & read]:
        graph.node.remove(n)


def quantize_onnx(directory: Path, method: str, block_size: int) -> None:
    """Rewrite directory/model.onnx in place for `method`: fp32 leaves it; fp16 converts it;
    int8-dynamic / int4 / int4-fp16 quantize it with onnxruntime's quantizers."""
    import logging

    import onnx

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    src = directory / "model.onnx"
    dst = directory / "model.quant.onnx"
    if method == "fp32":
        return
    graph_bytes = sum(f.stat().st_size for f in directory.glob("model.onnx*"))
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
