"""prune: the smaller model is a stock transformers model with a consistent config, and the parts
removed are the ones that matter least. Blocks, channels and KV groups made inert by construction (zero
output projections) are exactly the ones dropped, and the logits do not change at all."""

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from optpipe.passes import get_pass
from optpipe.runtime.candidate import RuntimeSettings, read_settings
from optpipe.runtime.torch_candidate import TorchCandidate
from tests.conftest import pass_context

IDS = torch.tensor([[5, 17, 42, 7, 99, 3, 250, 12, 64, 8]])
SMALL = dict(calibration_samples=4, calibration_seq_len=64)


def _model(vocab: int, layers: int = 4):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # random init is near-uniform; a larger scale makes blocks matter
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(5)
    return model


def _prune(model, tokenizer, tmp_path, method, **kw):
    cand = TorchCandidate(model, tokenizer, RuntimeSettings())
    params = get_pass("prune").Params(methods=[method], **SMALL, **kw)
    return get_pass("prune").apply(cand, params, pass_context(tmp_path, perplexity_tokens=600))


def _logits(model):
    with torch.inference_mode():
        return model(input_ids=IDS).logits


def _reload(cand, path):
    cand.save(path)
    return AutoModelForCausalLM.from_pretrained(path).eval()


def test_depth_drops_the_blocks_that_do_nothing(tiny_tokenizer, tmp_path):
    model = _model(len(tiny_tokenizer))
    with torch.no_grad():
        for i in (1, 2):  # zero output projections: these blocks pass their input through unchanged
            model.model.layers[i].self_attn.o_proj.weight.zero_()
            model.model.layers[i].mlp.down_proj.weight.zero_()
    before = _logits(model)
    out = _prune(model, tiny_tokenizer, tmp_path, "depth", depth_blocks=0.5)
    rec = out.settings.prune
    assert rec["blocks_dropped"] == [1, 2] and rec["blocks_kept"] == [0, 3]
    assert rec["block_influence"][1] == pytest.approx(0, abs=1e-6) and rec["block_influence"][0] > 0.01
    reloaded = _reload(out, tmp_path / "depth")
    assert reloaded.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in reloaded.model.layers] == [0, 1]  # KV cache slots renumbered
    torch.testing.assert_close(_logits(reloaded), before, rtol=1e-4, atol=1e-4)
    assert rec["params_after"] == sum(p.numel() for p in reloaded.parameters()) < rec["params_before"]
    assert read_settings(tmp_path / "depth").prune["blocks_dropped"] == [1, 2]  # recorded beside the weights


def test_width_keeps_the_channels_and_kv_groups_that_matter(tiny_tokenizer, tmp_path):
    model = _model(len(tiny_tokenizer), layers=2)
    dead = {0: torch.arange(0, 128, 2), 1: torch.arange(64, 128)}  # a different half per layer
    with torch.no_grad():
        for i, cols in dead.items():
            layer = model.model.layers[i]
            layer.mlp.down_proj.weight[:, cols] = 0
            group = 1 - i  # 2 query heads x 16 dims per KV group: zero one group's o_proj columns
            layer.self_attn.o_proj.weight[:, group * 32 : (group + 1) * 32] = 0
    before = _logits(model)
    out = _prune(model, tiny_tokenizer, tmp_path, "width", width_fraction=0.5, heads_fraction=0.5)
    rec = out.settings.prune
    for i, cols in dead.items():
        assert set(rec["channels_kept"][str(i)]).isdisjoint(cols.tolist()) and len(rec["channels_kept"][str(i)]) == 64
    assert rec["kv_groups_kept"] == {"0": [0], "1": [1]}
    reloaded = _reload(out, tmp_path / "width")
    cfg = reloaded.config
    assert (cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (64, 2, 1, 16)
    torch.testing.assert_close(_logits(reloaded), before, rtol=1e-4, atol=1e-4)
    assert rec["params_after"] < rec["params_before"]


def test_width_on_a_random_model_loads_and_gives_finite_logits(tiny_candidate, tmp_path):
    params = get_pass("prune").Params(methods=["width"], width_fraction=0.25, **SMALL)
    out = get_pass("prune").apply(tiny_candidate, params, pass_context(tmp_path, perplexity_tokens=600))
    reloaded = _reload(out, tmp_path / "w")
    assert reloaded.config.intermediate_size == 96
    assert torch.isfinite(_logits(reloaded)).all()
    cal = out.settings.prune["calibration"]
    assert cal["token_range"][0] >= cal["eval_token_range"][1]  # never the perplexity tokens


def test_params_are_checked_up_front():
    P = get_pass("prune").Params
    with pytest.raises(ValidationError, match="whole"):
        P(methods=["depth"], depth_blocks=2.5)
    with pytest.raises(ValidationError):
        P(methods=["width"], width_fraction=1.0)
    assert [label for label, _ in get_pass("prune").variants(P(methods=["depth", "width"]))] == ["prune:depth", "prune:width"]


def test_sparse24_keeps_the_two_largest_of_every_four_and_is_refused_where_it_cannot_speed_up(tiny_candidate):
    import dataclasses

    from optpipe.passes.prune.sparse24 import linear_names, mask_24, sparsify_24
    from optpipe.runtime.host_probe import detect_host
    from optpipe.spec.targets import load_target

    w = torch.tensor([[1.0, -4.0, 3.0, 0.5, 0.1, 0.2, -0.3, 0.4]])
    norms = torch.tensor([1.0, 1.0, 1.0, 1.0, 10.0, 1.0, 1.0, 1.0])  # a large input lifts a small weight
    assert mask_24(w, norms).tolist() == [[False, True, True, False, True, False, False, True]]

    model = tiny_candidate.model
    rec = sparsify_24(model, torch.randint(0, 300, (2, 32)))
    assert rec["decoder_linear_sparsity"] == 0.5 and rec["linears"] == 14
    modules = dict(model.named_modules())
    for n in linear_names(model):  # exactly 2 non-zeros in every group of 4
        groups = modules[n].weight.reshape(modules[n].weight.shape[0], -1, 4)
        assert ((groups != 0).sum(-1) == 2).all()

    P = get_pass("prune")
    cpu_host = dataclasses.replace(detect_host(), has_cuda=False, gpu_capability=None)
    (why,) = P.requirements(P.Params(methods=["sparse24"]), load_target("cpu-x86"), cpu_host)
    assert "compute capability >= 8.0" in why and "same size on disk" in why
    assert P.requirements(P.Params(methods=["depth", "width"]), load_target("cpu-x86"), cpu_host) == []


@pytest.mark.parametrize("method", ["depth", "width"])
def test_plan_forecasts_the_pruned_size_not_the_parents(tiny_model_dir, tiny_candidate, tmp_path, method):
    """How much depth/width remove is known from the config alone: the forecast's weight bytes are the
    pruned model's, exactly (fp32: 4 bytes a parameter), before any calibration runs."""
    from optpipe.evaluate.data import wikitext_test
    from optpipe.forecast import CandidateSpec, forecast_chain
    from optpipe.forecast.shape import read_hf_directory

    text = tmp_path / "calibration.txt"  # a short file: the importance scores are not what is tested here
    text.write_text(wikitext_test()[-20_000:])
    P = get_pass("prune")
    kw = dict(depth_blocks=1, width_fraction=0.25, heads_fraction=0.5, calibration="file", calibration_file=str(text))
    ((_, vparams),) = P.variants(P.Params(methods=[method], **kw))
    parent = CandidateSpec(name="baseline", dtype="fp32")
    shape = read_hf_directory(tiny_model_dir)
    base, pruned = forecast_chain(shape, [parent, P.weights_after(vparams, parent)], 16, 8, device="cpu")
    out = P.apply(tiny_candidate, vparams, pass_context(tmp_path, perplexity_tokens=600))
    assert pruned.memory.weight_bytes == 4 * out.settings.prune["params_after"] < base.memory.weight_bytes
    if method == "depth":  # one of two blocks: half the KV cache
        assert pruned.memory.kv_cache_bytes * 2 == base.memory.kv_cache_bytes
    sparse = P.variants(P.Params(methods=["sparse24"]))[0][1]
    assert P.weights_after(sparse, parent) == parent  # zeros stored dense: same size


def test_sparse24_speed_bench_smoke_runs_the_pass_code_path(capsys):
    """bench/sparse24_speed.py (the lead's GPU run) in its CPU smoke mode: dense and 2:4 measured, the
    masks from the prune pass's sparse24, and the reason the sparse kernels did not run here."""
    import importlib.util
    import json

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("sparse24_speed", REPO / "bench" / "sparse24_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["mask"]["decoder_linear_sparsity"] == 0.5 and out["sparse_kernels"] is False
    assert "CUDA" in out["why_not_sparse"]
    for variant in ("dense", "sparse24"):
        assert out[variant]["decode"]["tok_s"]["mean"] > 0 and out[variant]["prefill_64"]["tok_s"] > 0
    assert set(out["speedup"]) == {"decode", "prefill_32", "prefill_64"}
