"""Decode loops: the static-cache decoder must produce exactly the eager decoder's tokens."""

import pytest
import torch

from optpipe.runtime.decode import EagerDecoder, StaticGraphDecoder
from tests.conftest import make_tiny_model


@pytest.fixture(scope="module")
def lively_model():
    m = make_tiny_model(384)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)  # large weights: greedy output varies from step to step
    return m


def greedy(decoder, ids, n):
    with torch.inference_mode():
        decoder.reset(ids.shape[0], ids.shape[1] + n)
        tok = decoder.prefill(ids)
        out = [tok]
        for _ in range(n - 1):
            tok = decoder.step(tok)
            out.append(tok)
    return torch.cat(out, 1)


def test_static_decoder_matches_eager(lively_model):
    ids = torch.randint(0, 384, (1, 20), generator=torch.Generator().manual_seed(1))
    eager = greedy(EagerDecoder(lively_model), ids, 24)
    assert len(set(eager[0].tolist())) > 3  # the check is meaningful only if tokens vary
    static = StaticGraphDecoder(lively_model, max_cache_len=64, mode=None)
    assert torch.equal(greedy(static, ids, 24), eager)
    assert torch.equal(greedy(static, ids, 24), eager)  # reset() really clears the cache


def test_static_decoder_refuses_overflow(lively_model):
    static = StaticGraphDecoder(lively_model, max_cache_len=16, mode=None)
    with pytest.raises(ValueError, match="exceeds the static cache"):
        greedy(static, torch.zeros(1, 10, dtype=torch.long), 10)


@pytest.mark.slow
def test_compiled_decoder_matches_eager_on_cpu(lively_model):
    ids = torch.randint(0, 384, (1, 12), generator=torch.Generator().manual_seed(2))
    compiled = StaticGraphDecoder(lively_model, max_cache_len=48, mode="default")
    assert torch.equal(greedy(compiled, ids, 16), greedy(EagerDecoder(lively_model), ids, 16))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("step", ["transformers", "fused"])
def test_cuda_graph_decoder_matches_eager(step):
    from optpipe.runtime.fused_decode import FusedStepDecoder

    m = make_tiny_model(384).cuda().to(torch.bfloat16)
    ids = torch.randint(0, 384, (1, 12), device="cuda")
    decoder = StaticGraphDecoder if step == "transformers" else FusedStepDecoder
    compiled = decoder(m, max_cache_len=64, mode="reduce-overhead")
    assert torch.equal(greedy(compiled, ids, 16), greedy(EagerDecoder(m), ids, 16))


# -- the fused Llama-family step ------------------------------------------------------------
def _lively(model):
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:  # keep norms at 1: random norm weights can saturate the output
                p.normal_(0, 0.3)
    return model.eval()


def _tiny(kind: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    common = dict(
        vocab_size=384,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_theta=100000.0,
    )
    torch.manual_seed(0)
    if kind == "qwen2":  # biases on q/k/v
        return _lively(Qwen2ForCausalLM(Qwen2Config(**common)))
    if kind == "qwen3":  # per-head q/k norms, explicit head_dim
        return _lively(Qwen3ForCausalLM(Qwen3Config(head_dim=32, **common)))
    return _lively(make_tiny_model(384))


@pytest.mark.parametrize("kind,attention", [("llama", "matmul"), ("llama", "reduce"), ("qwen2", "matmul"), ("qwen3", "matmul")])
def test_fused_step_matches_eager(kind, attention):
    from optpipe.runtime.fused_decode import FusedStepDecoder

    model = _tiny(kind)
    ids = torch.randint(0, 384, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(ids).logits
    eager = greedy(EagerDecoder(model), ids, 24)
    assert len(set(eager[0].tolist())) > 3
    fused = FusedStepDecoder(model, max_cache_len=64, mode=None, attention=attention)
    assert torch.equal(greedy(fused, ids, 24), eager)
    assert torch.equal(greedy(fused, ids[:, :9], 30), greedy(EagerDecoder(model), ids[:, :9], 30))  # stale cache masked
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.weight.data_ptr() == attn.q_proj.weight.data_ptr() + attn.q_proj.weight.nbytes  # fused, no copy
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)  # the model itself is unchanged


def test_fused_step_holds_what_it_reads_as_module_buffers():
    """The compiled step reads its KV cache, fused weights and tables through module buffers (Dynamo
    then guards them by the buffer dict's tag, not tensor by tensor); a plain-weight model gets a
    compiled prefill, and nothing is copied."""
    from optpipe.runtime.fused_decode import FusedStepDecoder

    model = _tiny("llama")
    decoder = FusedStepDecoder(model, max_cache_len=32, mode=None)
    assert decoder.compile_prefill  # no int4 weights: the prefill is worth compiling
    greedy(decoder, torch.randint(0, 384, (1, 8)), 2)
    core = decoder.core
    buffers = {id(b) for b in core.buffers()}
    held = core.held[0]
    for t in (held.k_cache, held.v_cache, held.qkv_weight, held.gate_up_weight, core.cos, core.positions):
        assert id(t) in buffers
    attn = model.model.layers[0].self_attn
    assert held.qkv_weight.data_ptr() == attn.q_proj.weight.data_ptr()  # the buffer is the fused weight itself
    assert held.int4("q") is None and core.head.int4("lm_head") is None


def test_fused_model_saves_and_reloads(tmp_path):
    from transformers import AutoModelForCausalLM

    from optpipe.runtime.fused_decode import FusedStepDecoder

    model = _tiny("llama")
    ids = torch.randint(0, 384, (1, 12))
    greedy(FusedStepDecoder(model, max_cache_len=32, mode=None), ids, 4)
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(AutoModelForCausalLM.from_pretrained(tmp_path)(ids).logits, model(ids).logits)


def test_fused_step_calls_quantized_projections_unfused():
    pytest.importorskip("torchao")
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    from optpipe.runtime.fused_decode import FusedStepDecoder

    model = _tiny("llama")
    quantize_(model, Int8WeightOnlyConfig())
    ids = torch.randint(0, 384, (1, 16), generator=torch.Generator().manual_seed(3))
    fused = FusedStepDecoder(model, max_cache_len=48, mode=None)
    assert torch.equal(greedy(fused, ids, 16), greedy(EagerDecoder(model), ids, 16))
    assert fused.core.qkv[0] is None  # quantized weights are not concatenated
    assert fused.core.int4[0] == {} and fused.core.head_int4 is None  # only torchao int4 goes to tinygemm directly


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_step_runs_torchao_int4_through_tinygemm_on_plain_tensors(tmp_path):
    """Every torchao int4 projection (lm_head included) is called as tinygemm on the weight's own
    tensors (no copy), the step matches eager decoding, and a saved-and-reloaded model takes the
    same path."""
    pytest.importorskip("torchao")
    from torchao.quantization import Int4WeightOnlyConfig
    from transformers import AutoModelForCausalLM, TorchAoConfig

    from optpipe.runtime.fused_decode import FusedStepDecoder

    model = _tiny("llama")
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    int4 = TorchAoConfig(Int4WeightOnlyConfig(group_size=32, int4_packing_format="tile_packed_to_4d"), modules_to_not_convert=[])
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path / "bf16", quantization_config=int4, device_map="cuda", dtype=torch.bfloat16
    )
    model.eval()
    ids = torch.randint(0, 384, (1, 16), generator=torch.Generator().manual_seed(3)).cuda()
    fused = FusedStepDecoder(model, max_cache_len=48, mode="reduce-overhead")
    assert torch.equal(greedy(fused, ids, 16), greedy(EagerDecoder(model), ids, 16))
    layer0 = fused.core.int4[0]
    assert set(layer0) == {"q", "k", "v", "o", "gate", "up", "down"} and fused.core.head_int4 is not None
    assert layer0["q"][0].data_ptr() == model.model.layers[0].self_attn.q_proj.weight.qdata.data_ptr()  # no copy
    qkv, gate_up = fused.core.held[0].int4("qkv"), fused.core.held[0].int4("gate_up")
    assert qkv is not None and gate_up is not None  # one tinygemm call each for q|k|v and gate|up
    assert layer0["q"][0].data_ptr() == qkv[0].data_ptr()  # the module's 4-bit data is a view of the fused tensor
    assert layer0["v"][0].data_ptr() + layer0["v"][0].nbytes == qkv[0].data_ptr() + qkv[0].nbytes
    separate = FusedStepDecoder(model, max_cache_len=48, mode=None, fuse_int4=False)
    assert torch.equal(greedy(separate, ids, 16), greedy(fused, ids, 16))
    model.save_pretrained(tmp_path / "int4")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "int4", device_map="cuda", dtype=torch.bfloat16).eval()
    reloaded = FusedStepDecoder(again, max_cache_len=48, mode="reduce-overhead")
    assert torch.equal(greedy(reloaded, ids, 16), greedy(EagerDecoder(again), ids, 16))
    assert set(reloaded.core.int4[0]) == set(layer0)


@pytest.mark.parametrize("cublas, per_layer, heads", [("out", 2, 0), ("all", 4, 15)])
def test_large_projections_go_through_the_opaque_linear(monkeypatch, cublas, per_layer, heads):
    """Above the size threshold, o_proj/down_proj run as optpipe::linear (cuBLAS, not fused by
    Inductor); cublas="all" (a bench variant) sends q|k|v, gate|up and lm_head there too. Same tokens."""
    import optpipe.runtime.fused_decode as fd

    model = _tiny("llama")
    ids = torch.randint(0, 384, (1, 16), generator=torch.Generator().manual_seed(4))
    eager = greedy(EagerDecoder(model), ids, 16)
    calls = []
    real = fd.cublas_linear()
    monkeypatch.setattr(fd, "CUBLAS_MIN_WEIGHT_BYTES", 0)
    monkeypatch.setattr(fd, "cublas_linear", lambda: lambda x, w: calls.append(w.shape) or real(x, w))
    assert torch.equal(greedy(fd.FusedStepDecoder(model, max_cache_len=48, mode=None, cublas=cublas), ids, 16), eager)
    assert len(calls) == 16 * 2 * per_layer + heads  # (prefill + 15 steps) x 2 layers x projections (+ 15 heads)
    assert torch.equal(real(ids.float()[:, :16].expand(3, 16), torch.eye(16)), ids.float()[:, :16].expand(3, 16))


def test_fusion_is_redone_after_weights_are_replaced():
    """A decoder built after a weight swap (or .to()) must not reuse fused tensors the model no longer points to."""
    from optpipe.runtime.fused_decode import FusedStepDecoder

    model = _tiny("llama")
    ids = torch.randint(0, 384, (1, 12), generator=torch.Generator().manual_seed(5))
    greedy(FusedStepDecoder(model, max_cache_len=32, mode=None), ids, 4)
    for layer in model.model.layers:
        for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.mlp.gate_proj):
            lin.weight = torch.nn.Parameter(torch.randn_like(lin.weight) * 0.3, requires_grad=False)
    assert torch.equal(
        greedy(FusedStepDecoder(model, max_cache_len=32, mode=None), ids, 12), greedy(EagerDecoder(model), ids, 12)
    )
