"""onnx_export: the ONNX candidate is scored by onnxruntime itself, agrees with torch in fp32,
and its directory loads in optimum's ORTModelForCausalLM."""

import json
import os
import shutil
import subprocess

import pytest
import torch

pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")

from optpipe.evaluate.data import hellaswag_subset  # noqa: E402
from optpipe.evaluate.hellaswag import evaluate_hellaswag  # noqa: E402
from optpipe.evaluate.lm_adapters import hf_lm, scoring_lm  # noqa: E402
from optpipe.passes import get_pass  # noqa: E402
from optpipe.passes.onnx_export.environment import export_python  # noqa: E402
from optpipe.runtime import load_candidate  # noqa: E402
from tests.conftest import pass_context  # noqa: E402

if export_python() is None:
    if os.environ.get("CI"):
        pytest.fail("CI must create the ONNX export env (optpipe setup-onnx)", pytrace=False)
    pytest.skip("no ONNX export environment (optpipe setup-onnx)", allow_module_level=True)


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """method -> saved ONNX candidate directory. fp32 goes through apply() (optimum's export and
    all); the other methods start from a copy of that one export (apply = from_export(export(...)))
    rather than running the exporter once per method."""
    p = get_pass("onnx_export")
    ctx = pass_context(tmp_path_factory.mktemp("work"))
    fp32 = p.apply(load_candidate(tiny_model_dir), p.Params(methods=["fp32"]), ctx)
    out = {"fp32": fp32.save(tmp_path_factory.mktemp("onnx-fp32") / "model")}
    for method in ("fp16", "int8-dynamic", "int4", "int4-fp16"):
        copy = shutil.copytree(out["fp32"], tmp_path_factory.mktemp("export") / "onnx")
        (copy / "optpipe_runtime.json").unlink()
        cand = p.from_export(copy, fp32.tokenizer, p.Params(methods=[method]))
        out[method] = cand.save(tmp_path_factory.mktemp(f"onnx-{method}") / "model")
    return out


def test_fp32_loglikelihoods_agree_with_torch(exported, tiny_candidate):
    items = hellaswag_subset(4, 11)
    ort = evaluate_hellaswag(scoring_lm(load_candidate(exported["fp32"]), 1), items)
    ref = evaluate_hellaswag(hf_lm(tiny_candidate.model, tiny_candidate.tokenizer, 4), items)
    for a, b in zip(ort.item_loglikelihoods, ref.item_loglikelihoods):
        assert a == pytest.approx(b, abs=1e-3)
    assert ort.item_acc_norm == ref.item_acc_norm


def test_incremental_decode_matches_full_forward(exported):
    cand = load_candidate(exported["fp32"])
    ids = torch.tensor([[5, 17, 42, 7, 99, 3, 8, 1]])
    dec = cand.decoder()
    dec.reset(1)
    tok = dec.prefill(ids)
    seq = torch.cat([ids, tok], 1)
    for _ in range(5):
        tok = dec.step(tok)
        seq = torch.cat([seq, tok], 1)
    full = cand.decoder().logits(seq[:, :-1])
    assert torch.equal(full[0, ids.shape[1] - 1 :].argmax(-1), seq[0, ids.shape[1] :])


def test_quantized_graphs_use_quantized_ops(exported):
    import onnx

    ops = {
        m: {n.op_type for n in onnx.load(str(d / "model.onnx"), load_external_data=False).graph.node} for m, d in exported.items()
    }
    assert "MatMulNBits" in ops["int4"] and "MatMulNBits" not in ops["fp32"]
    assert "MatMulNBits" in ops["int4-fp16"] and "MatMulNBits" not in ops["fp16"]
    assert ops["int8-dynamic"] & {"MatMulInteger", "DynamicQuantizeLinear"}
    for d in exported.values():
        settings = json.loads((d / "optpipe_runtime.json").read_text())
        assert settings["format"] == "onnx"


def test_every_graph_is_in_ssa_form_with_unique_node_names(exported):
    """What onnxruntime 1.31's CUDA build checks on load and the CPU build here did not: one producer
    per tensor, one node per name (the fp16 converter broke both on SmolLM2's RMSNorm)."""
    from collections import Counter

    import onnx

    for method, d in exported.items():
        graph = onnx.load(str(d / "model.onnx"), load_external_data=False).graph
        outputs = Counter(o for n in graph.node for o in n.output if o)
        names = Counter(n.name for n in graph.node if n.name)
        assert not [o for o, k in outputs.items() if k > 1], method
        assert not [n for n, k in names.items() if k > 1], method


def test_artifact_loads_in_optimum(exported):
    code = (
        "import sys, torch; from optimum.onnxruntime import ORTModelForCausalLM; "
        "m = ORTModelForCausalLM.from_pretrained(sys.argv[1]); "
        "out = m.generate(torch.tensor([[5, 17, 42]]), max_new_tokens=4, do_sample=False); print(out.shape[1])"
    )
    proc = subprocess.run([str(export_python()), "-c", code, str(exported["int4"])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "7"


def _greedy(dec, ids, steps: int):
    dec.reset(ids.shape[0])
    tok = dec.prefill(ids)
    out = [tok]
    for _ in range(steps):
        tok = dec.step(tok)
        out.append(tok)
    return torch.cat(out, 1)


@pytest.mark.parametrize("method", ["fp32", "fp16", "int4-fp16"])
def test_io_binding_matches_numpy_feeds(exported, method):
    """The IO-binding path (what the CUDA EP runs: KV cache kept as ORT values on the device, logits
    written into a torch tensor) gives the numpy path's tokens and logits, here on the CPU EP."""
    from optpipe.runtime.onnx_candidate import OrtDecoder

    cand = load_candidate(exported[method])
    cfg = json.loads((exported[method] / "config.json").read_text())
    numpy_dec, bound_dec = OrtDecoder(cand.session, cfg), OrtDecoder(cand.session, cfg, device="cpu")
    ids = torch.tensor([[5, 17, 42, 7, 99, 3, 8, 1], [2, 4, 6, 8, 10, 12, 14, 16]])
    assert torch.equal(_greedy(bound_dec, ids, 6), _greedy(numpy_dec, ids, 6))
    full_numpy, full_bound = numpy_dec.logits(ids), bound_dec.logits(ids)
    assert full_bound.dtype == torch.float32 and torch.equal(full_bound, full_numpy)
    # and the cache really went through the binding: the bound decoder holds ORT values, not numpy arrays
    assert all(type(v).__name__ == "OrtValue" for v in bound_dec.past.values())


def test_fp16_graph_is_fp16_inside_with_fp32_logits(exported):
    """fp16: weights and KV cache are fp16, ids stay int64, logits come back fp32; the tokens of a
    greedy decode stay close to fp32's on the tiny model (same first token)."""
    import onnx

    graph = onnx.load(str(exported["fp16"] / "model.onnx"), load_external_data=False).graph
    io = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]}
    assert io["input_ids"] == onnx.TensorProto.INT64 and io["logits"] == onnx.TensorProto.FLOAT
    assert io["past_key_values.0.key"] == io["present.0.key"] == onnx.TensorProto.FLOAT16
    big = [i for i in graph.initializer if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) and len(i.dims) == 2]
    assert big and all(i.data_type == onnx.TensorProto.FLOAT16 for i in big)
    names = [n.name for n in graph.node if n.name]  # onnxruntime 1.31 refuses duplicate node names
    assert len(names) == len(set(names))
    defined = [o for n in graph.node for o in n.output if o]  # and a tensor defined twice (onnx's SSA rule)
    assert len(defined) == len(set(defined))
    settings = json.loads((exported["fp16"] / "optpipe_runtime.json").read_text())
    assert settings["dtype"] == "fp16" and settings["onnx"]["method"] == "fp16"
    ids = torch.tensor([[5, 17, 42, 7, 99, 3, 8, 1]])
    ref, half = load_candidate(exported["fp32"]).decoder().logits(ids), load_candidate(exported["fp16"]).decoder().logits(ids)
    assert (half - ref).abs().max() < 0.05 * ref.abs().max()


def test_fp16_is_refused_on_the_cpu_provider_with_the_reason():
    from optpipe.runtime.host_probe import detect_host
    from optpipe.spec.targets import load_target

    p = get_pass("onnx_export")
    target, env = load_target("cpu-x86"), detect_host()
    for method in ("fp16", "int4-fp16"):
        (reason,) = [r for r in p.requirements(p.Params(methods=[method]), target, env) if "GPU" in r]
        assert method in reason and "provider cuda" in reason
    assert not [r for r in p.requirements(p.Params(methods=["fp32", "int4"]), target, env) if "GPU" in r]
    assert any("power of two" in r for r in p.requirements(p.Params(methods=["int4"], block_size=48), target, env))
    (trt,) = [r for r in p.requirements(p.Params(provider="tensorrt"), target, env) if "TensorRT" in r]
    assert "libnvinfer.so.10" in trt and "optimization profiles" in trt


def test_io_binding_setting_reaches_the_decoder(exported):
    """`onnx.io_binding` in the runtime settings picks the decoder path: CPU EP default numpy, true binds."""
    from dataclasses import replace

    cand = load_candidate(exported["fp32"])
    assert cand.decoder().device is None and cand.device.type == "cpu"
    bound = cand.with_settings(onnx={**cand.settings.onnx, "io_binding": True})
    assert bound.decoder().device == "cpu"
    cuda = replace(cand.settings, onnx={**cand.settings.onnx, "provider": "cuda"})
    assert cand.with_settings(onnx=cuda.onnx).binding_device() == "cuda"


def test_fp16_keeps_rms_norm_statistics_in_fp32(exported, tmp_path):
    """Activations above 256 square past fp16's 65504; like transformers, the fp16 graph computes the
    RMSNorm statistics in fp32, so with embeddings scaled to ~400 per element its logits still follow
    the fp32 graph's (all-fp16 statistics would zero every normed token)."""
    import onnx
    from onnx import numpy_helper

    p = get_pass("onnx_export")
    big = shutil.copytree(exported["fp32"], tmp_path / "big")
    (big / "optpipe_runtime.json").unlink()
    model = onnx.load(str(big / "model.onnx"))
    emb = next(i for i in model.graph.initializer if i.name == "model.embed_tokens.weight")
    emb.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(emb) * 2e4, emb.name))
    for f in big.glob("model.onnx*"):
        f.unlink()
    onnx.save_model(model, str(big / "model.onnx"), save_as_external_data=True, location="model.onnx_data")
    tok = load_candidate(exported["fp32"]).tokenizer
    half = p.from_export(shutil.copytree(big, tmp_path / "half"), tok, p.Params(methods=["fp16"]))
    ref = p.from_export(big, tok, p.Params(methods=["fp32"]))
    ids = torch.tensor([[5, 17, 42, 7, 99, 3, 8, 1]])
    a, b = ref.decoder().logits(ids), half.decoder().logits(ids)
    assert torch.isfinite(b).all()
    assert (a - b).abs().max() < 0.02 * a.abs().max()
    assert torch.equal(a.argmax(-1), b.argmax(-1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_ep_bound_decode_matches_cpu(exported):
    """On a GPU with onnxruntime-gpu: the CUDA EP session (IO binding, KV cache on the GPU) decodes the
    CPU EP's tokens for fp32 and stays close in fp16 and int4-fp16 (MatMulNBits' CUDA kernel)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without the CUDA EP (install onnxruntime-gpu)")
    ids = torch.tensor([[5, 17, 42, 7, 99, 3, 8, 1]])
    for method in ("fp32", "fp16", "int4-fp16", "int4"):
        cpu = load_candidate(exported[method])
        gpu = cpu.with_settings(onnx={**cpu.settings.onnx, "provider": "cuda"})
        gpu.session = None
        gpu.open()
        assert gpu.session.get_providers()[0] == "CUDAExecutionProvider" and gpu.device.type == "cuda"
        dec = gpu.decoder()
        assert dec.device == "cuda"
        ref, got = cpu.decoder().logits(ids), dec.logits(ids)
        assert (ref - got).abs().max() < 0.05 * ref.abs().max(), method
        if method == "fp32":
            assert torch.equal(_greedy(dec, ids, 6), _greedy(cpu.decoder(), ids, 6))
        assert all(v.device_name() == "cuda" for v in dec.past.values())


def test_repeated_converter_casts_are_dropped_and_name_clashes_renamed():
    """SmolLM2's fp16 graph on onnxruntime 1.31 (H200): the converter inserted the Cast of RMSNorm's x to
    fp32 twice (its Pow and its Mul both read x), one name and one output twice: ORT refused the model.
    The exact repeat goes; a different node that only shares a name is kept under a new name."""
    from onnx import TensorProto, helper

    from optpipe.passes.onnx_export.export import unique_node_names

    cast = helper.make_node("Cast", ["x"], ["x_cast_to_fp32"], name="x_cast_to_fp32_node", to=TensorProto.FLOAT)
    repeat = helper.make_node("Cast", ["x"], ["x_cast_to_fp32"], name="x_cast_to_fp32_node", to=TensorProto.FLOAT)
    other = helper.make_node("Relu", ["x_cast_to_fp32"], ["y"], name="x_cast_to_fp32_node")
    graph = helper.make_graph(
        [cast, repeat, other],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    unique_node_names(graph)
    assert [(n.op_type, n.name) for n in graph.node] == [("Cast", "x_cast_to_fp32_node"), ("Relu", "x_cast_to_fp32_node_1")]
