"""quantize: each CPU-capable method really quantizes, and its artifact loads back in stock
transformers with the same logits as the in-memory candidate."""

import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM

from optpipe.passes import get_pass
from optpipe.runtime import load_candidate
from optpipe.runtime.host_probe import detect_host
from optpipe.spec.targets import load_target
from tests.conftest import pass_context

pytest.importorskip("bitsandbytes", reason="quantize tests need the 'quant' extra")
pytest.importorskip("torchao", reason="quantize tests need the 'quant' extra")

CPU_METHODS = ["bnb-int8", "bnb-nf4", "torchao-int8wo", "torchao-int8dq"]
ENV = detect_host()


def params(methods, **kw):
    return get_pass("quantize").Params(methods=methods, **kw)


def test_variants_one_per_method():
    v = get_pass("quantize").variants(params(["bnb-nf4", "torchao-int8wo"]))
    assert [label for label, _ in v] == ["quantize:bnb-nf4", "quantize:torchao-int8wo"]
    assert v[1][1].methods == ["torchao-int8wo"]


def test_requirements_explain_what_cannot_run_here():
    q = get_pass("quantize")
    cpu_env = dataclasses.replace(ENV, has_cuda=False, gpu_capability=None)
    reasons = q.requirements(
        params(["torchao-int4wo", "torchao-float8wo", "torchao-int4-gemlite"]), load_target("cpu-x86"), cpu_env
    )
    text = " ".join(reasons)
    assert "int4 weight-only needs CUDA" in text and "compute capability >= 8.9" in text
    assert "torchao-int4-gemlite: gemlite packs and runs its weights with Triton on CUDA" in text
    assert q.requirements(params(CPU_METHODS), load_target("cpu-x86"), cpu_env) == []
    gpu_env = dataclasses.replace(ENV, has_cuda=True, gpu_capability="9.0")
    assert any(
        "int8 dynamic quantization did not finish" in r
        for r in q.requirements(params(["torchao-int8dq"]), load_target("h100-80g"), gpu_env)
    )
    no_libs = dataclasses.replace(cpu_env, packages={})
    import optpipe.spec.host as he

    orig = he.package_version
    he.package_version = lambda name: None
    try:
        assert any("needs bitsandbytes" in r for r in q.requirements(params(["bnb-nf4"]), load_target("cpu-x86"), no_libs))
    finally:
        he.package_version = orig


@pytest.mark.parametrize("method", CPU_METHODS)
def test_method_quantizes_and_round_trips(method, tiny_model_dir, tmp_path, ctx):
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    fp = load_candidate(tiny_model_dir)
    with torch.inference_mode():
        ref = fp.model(ids).logits.float()
    cand = get_pass("quantize").apply(load_candidate(tiny_model_dir), params([method]), ctx)
    assert cand.settings.quantization == method
    assert getattr(cand.model.config, "quantization_config", None) is not None
    with torch.inference_mode():
        out = cand.model(ids).logits.float()
    assert not torch.equal(out, ref)  # the weights really changed
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.9
    saved = cand.save(tmp_path / method)
    stock = AutoModelForCausalLM.from_pretrained(saved, device_map="cpu")
    again = load_candidate(saved)
    assert again.settings.quantization == method
    with torch.inference_mode():
        # stock loading may pick another dtype for the unquantized parts: close, not identical
        assert torch.allclose(stock(ids).logits.float(), out, atol=1e-2)
        assert torch.allclose(again.model(ids).logits.float(), out, atol=1e-2)  # bnb CPU kernels vary ~1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["torchao-int4-gemlite", "torchao-int4wo"])
def test_cuda_int4_method_round_trips(method, tiny_model_dir, tmp_path):
    """CUDA-only int4 kernels: quantize, save as safetensors, load back with optpipe.load, same logits."""
    ctx = pass_context(tmp_path, target="h100-80g", device="cuda")
    if method == "torchao-int4-gemlite":
        pytest.importorskip("gemlite")
    import optpipe

    bf16 = get_pass("precision_cast").apply(
        load_candidate(tiny_model_dir, device="cuda"), get_pass("precision_cast").Params(dtype="bf16"), ctx
    )
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]], device="cuda")
    with torch.inference_mode():
        ref = bf16.model(ids).logits.float()
    cand = get_pass("quantize").apply(bf16, params([method], group_size=32), ctx)
    assert cand.settings.dtype == ("fp16" if method == "torchao-int4-gemlite" else "bf16")  # gemlite computes in fp16
    with torch.inference_mode():
        out = cand.model(ids).logits.float()
    assert not torch.equal(out, ref)
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.9
    again = optpipe.load(cand.save(tmp_path / method), device="cuda")
    assert again.settings.quantization == method
    with torch.inference_mode():
        assert torch.allclose(again.model(ids).logits.float(), out, atol=1e-2)


def test_quantize_lm_head_option(tiny_model_dir, tiny_tokenizer, tmp_path, ctx):
    """quantize_lm_head stores an untied output head in the method's format (the embedding stays a plain
    table) and survives saving; a tied head fails the candidate with the reason; non-torchao methods
    are refused before any work."""
    from optpipe.errors import PassFailed
    from tests.conftest import make_tiny_model

    q = get_pass("quantize")
    untied = make_tiny_model(len(tiny_tokenizer))
    untied.config.tie_word_embeddings = False
    untied.lm_head.weight = torch.nn.Parameter(untied.lm_head.weight.detach().clone())
    untied.save_pretrained(tmp_path / "untied")
    tiny_tokenizer.save_pretrained(tmp_path / "untied")
    cand = q.apply(load_candidate(tmp_path / "untied"), params(["torchao-int8wo"], quantize_lm_head=True), ctx)
    assert type(cand.model.lm_head.weight.data) is not torch.Tensor  # a torchao tensor subclass
    assert type(cand.model.get_input_embeddings().weight.data) is torch.Tensor
    again = load_candidate(cand.save(tmp_path / "head"))
    assert type(again.model.lm_head.weight.data) is not torch.Tensor
    default = q.apply(load_candidate(tmp_path / "untied"), params(["torchao-int8wo"]), ctx)
    assert type(default.model.lm_head.weight.data) is torch.Tensor
    assert "quantize_lm_head" not in params(["torchao-int8wo"]).chain_params()  # default keeps old cache keys
    with pytest.raises(PassFailed, match="ties lm_head"):
        q.apply(load_candidate(tiny_model_dir), params(["torchao-int8wo"], quantize_lm_head=True), ctx)
    reasons = q.requirements(params(["bnb-int8"], quantize_lm_head=True), load_target("cpu-x86"), ENV)
    assert any("quantize_lm_head is for torchao methods only" in r for r in reasons)
