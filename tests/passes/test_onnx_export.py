"""onnx_export: the ONNX candidate is scored by onnxruntime itself, agrees with torch in fp32,
and its directory loads in optimum's ORTModelForCausalLM."""

import json
import os
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
    """method -> saved ONNX candidate directory"""
    out = {}
    p = get_pass("onnx_export")
    ctx = pass_context(tmp_path_factory.mktemp("work"))
    for method in ("fp32", "int8-dynamic", "int4"):
        cand = p.apply(load_candidate(tiny_model_dir), p.Params(methods=[method]), ctx)
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
    assert ops["int8-dynamic"] & {"MatMulInteger", "DynamicQuantizeLinear"}
    for d in exported.values():
        settings = json.loads((d / "optpipe_runtime.json").read_text())
        assert settings["format"] == "onnx"


def test_artifact_loads_in_optimum(exported):
    code = (
        "import sys, torch; from optimum.onnxruntime import ORTModelForCausalLM; "
        "m = ORTModelForCausalLM.from_pretrained(sys.argv[1]); "
        "out = m.generate(torch.tensor([[5, 17, 42]]), max_new_tokens=4, do_sample=False); print(out.shape[1])"
    )
    proc = subprocess.run([str(export_python()), "-c", code, str(exported["int4"])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "7"
