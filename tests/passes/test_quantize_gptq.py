"""quantize gptq-4bit / awq-4bit: calibrated int4 that is really packed, round-trips through stock
transformers with the in-memory logits, records its calibration, and never calibrates on the tokens
perplexity scores."""

import dataclasses
import hashlib

import pytest
import torch
from pydantic import ValidationError
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from optpipe.passes import get_pass
from optpipe.passes.quantize.calibration import CalibrationOverlapError, text_file, wikitext_heldout
from optpipe.passes.quantize.gptq import QMAX, QMIN, gptq_quantize_weight
from optpipe.runtime import load_candidate
from optpipe.runtime.host_probe import detect_host
from optpipe.spec.targets import load_target
from tests.conftest import pass_context

pytest.importorskip("compressed_tensors", reason="GPTQ/AWQ tests need the 'quant' extra")

IDS = torch.tensor([[5, 17, 42, 7, 99, 3, 250, 12]])
SMALL = dict(group_size=32, calibration_samples=8, calibration_seq_len=128)


def params(methods, **kw):
    return get_pass("quantize").Params(methods=methods, **kw)


def _needs(method):
    if method == "awq-4bit":
        pytest.importorskip("auto_round", reason="awq-4bit needs auto-round")


def test_requirements_name_missing_packages():
    import optpipe.spec.host as he

    q, target = get_pass("quantize"), load_target("cpu-x86")
    env = dataclasses.replace(detect_host(), has_cuda=False, gpu_capability=None)
    assert q.requirements(params(["gptq-4bit", "awq-4bit"]), target, env) == []  # both run on a CPU
    orig = he.package_version
    he.package_version = lambda name: None
    try:
        text = " ".join(q.requirements(params(["gptq-4bit", "awq-4bit"]), target, dataclasses.replace(env, packages={})))
    finally:
        he.package_version = orig
    assert "gptq-4bit: needs compressed-tensors" in text and "awq-4bit: needs auto-round" in text
    missing = q.requirements(params(["gptq-4bit"], calibration="file", calibration_file="/nonexistent.txt"), target, env)
    assert any("does not exist" in r for r in missing)


def test_file_calibration_needs_a_file():
    with pytest.raises(ValidationError, match="calibration_file"):
        params(["gptq-4bit"], calibration="file")


def test_gptq_beats_round_to_nearest_on_correlated_inputs():
    """The Hessian is used: on correlated inputs GPTQ's output error is well below plain rounding's."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2048, 16, generator=g) @ torch.randn(16, 64, generator=g) + 0.1 * torch.randn(2048, 64, generator=g)
    W = torch.randn(32, 64, generator=g)
    Q, scales = gptq_quantize_weight(W, 2 * X.t() @ X / X.shape[0], group_size=32)
    s = scales.repeat_interleave(32, dim=1)
    levels = Q / s
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels.round().min() >= QMIN and levels.round().max() <= QMAX
    rtn = torch.clamp(torch.round(W / s), QMIN, QMAX) * s  # same scales, no error feedback
    err_gptq = (X @ (W - Q).t()).pow(2).mean()
    err_rtn = (X @ (W - rtn).t()).pow(2).mean()
    assert err_gptq < 0.7 * err_rtn, (err_gptq, err_rtn)


def test_heldout_slice_is_disjoint_from_evaluation(tiny_tokenizer, tiny_candidate, tmp_path):
    cal = wikitext_heldout(tiny_tokenizer, samples=4, seq_len=64, eval_tokens=8192)
    start, end = cal.info["token_range"]
    assert cal.ids.shape == (4, 64) and end - start == 256 and start >= 8192
    assert cal.info["eval_token_range"] == [0, 8192]
    with pytest.raises(CalibrationOverlapError, match=r"evaluation\.perplexity_tokens=10000000"):
        wikitext_heldout(tiny_tokenizer, samples=4, seq_len=64, eval_tokens=10_000_000)  # eval takes the whole text
    # the eval count of the build reaches the pass (runner sets it around apply)
    with pytest.raises(CalibrationOverlapError, match="calibration_samples"):  # the pass learns it from its context
        get_pass("quantize").apply(
            tiny_candidate, params(["gptq-4bit"], **SMALL), pass_context(tmp_path, perplexity_tokens=10_000_000)
        )


def test_file_calibration_records_sha256(tiny_tokenizer, tmp_path):
    f = tmp_path / "calib.txt"
    f.write_text("The quick brown fox jumps over the lazy dog. " * 200)
    cal = text_file(tiny_tokenizer, f, samples=3, seq_len=64)
    assert cal.info["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert cal.info["source"] == "file" and cal.info["samples"] == 3 and cal.ids.shape == (3, 64)


@pytest.mark.parametrize("method", ["gptq-4bit", "awq-4bit"])
def test_method_packs_int4_and_round_trips(method, tiny_model_dir, tmp_path, ctx):
    _needs(method)
    with torch.inference_mode():
        ref = load_candidate(tiny_model_dir).model(IDS).logits.float()
    cand = get_pass("quantize").apply(load_candidate(tiny_model_dir), params([method], **SMALL), ctx)
    assert cand.settings.quantization == method
    cal = cand.settings.calibration
    assert cal["source"] == "wikitext-heldout" and cal["samples"] == 8 and cal["seq_len"] == 128
    assert cal["token_range"][0] >= cal["eval_token_range"][1]

    # really 4-bit: every decoder linear holds int32 words of 8 nibbles plus one scale per group of 32
    linears = [m for layer in cand.model.model.layers for m in layer.modules() if hasattr(m, "weight_scale")]
    assert len(linears) == 2 * 7
    for m in linears:
        out_f, in_f = m.weight_shape.tolist()
        assert m.weight_packed.dtype == torch.int32 and tuple(m.weight_packed.shape) == (out_f, in_f // 8)
        assert tuple(m.weight_scale.shape) == (out_f, in_f // 32)
    with torch.inference_mode():
        out = cand.model(IDS).logits.float()  # first forward decompresses (compressed-tensors)
    for m in linears:  # the dense weights are int4 levels times the group scale
        levels = m.weight.float() / m.weight_scale.float().repeat_interleave(32, dim=1)
        assert torch.allclose(levels, levels.round(), atol=1e-2)
        assert levels.round().min() >= QMIN and levels.round().max() <= QMAX
    assert not torch.equal(out, ref)
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.95

    saved = cand.save(tmp_path / method)  # after a forward: still saved packed
    with safe_open(str(saved / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_slice("model.layers.0.self_attn.q_proj.weight_packed").get_dtype() == "I32"
    assert "model.layers.0.self_attn.q_proj.weight" not in keys
    stock = AutoModelForCausalLM.from_pretrained(saved, device_map="cpu")
    assert stock.config.quantization_config.quant_method == "compressed-tensors"
    again = load_candidate(saved)
    assert again.settings.quantization == method and again.settings.calibration == cal
    scale = out.abs().max()
    with torch.inference_mode():
        assert (stock(IDS).logits.float() - out).abs().max() <= 1e-3 * scale
        assert (again.model(IDS).logits.float() - out).abs().max() <= 1e-3 * scale


@pytest.fixture(scope="module")
def salient_model_dir(tmp_path_factory, tiny_tokenizer):
    """The tiny tied-embedding Llama with a few large RMSNorm gains (salient channels, as in trained
    LLMs), so AWQ picks scales far from 1 and folds them into the norms."""
    from tests.conftest import make_tiny_model

    model = make_tiny_model(len(tiny_tokenizer))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight.mul_(torch.rand(norm.weight.shape, generator=g) * 2 + 0.5)
                norm.weight[:4] *= 20
    d = tmp_path_factory.mktemp("tiny-salient")
    model.save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d


def test_awq_keeps_scales_folded_into_norms(salient_model_dir, ctx):
    """Regression: auto-round (amp on, its default) wrote the norms in bf16 and then restored them from
    the fp32 parent checkpoint, dropping the AWQ scales folded into them while q/k/v and gate/up kept
    theirs (SmolLM2-135M perplexity 25.5 -> ~79,000; here logits cosine ~0.73)."""
    _needs("awq-4bit")
    parent = load_candidate(salient_model_dir)
    ids = torch.tensor([list(range(1, 129))])
    with torch.inference_mode():
        ref = parent.model(ids).logits.float()
    cand = get_pass("quantize").apply(load_candidate(salient_model_dir), params(["awq-4bit"], **SMALL), ctx)
    folded = [
        not torch.equal(q.input_layernorm.weight.float(), p.input_layernorm.weight.float())
        for q, p in zip(cand.model.model.layers, parent.model.model.layers)
    ]
    assert any(folded), "AWQ smoothing scales were lost from the RMSNorm weights"
    # the tied embedding / lm_head stay the parent's
    assert torch.equal(cand.model.model.embed_tokens.weight.float(), parent.model.model.embed_tokens.weight.float())
    with torch.inference_mode():
        out = cand.model(ids).logits.float()
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.95
