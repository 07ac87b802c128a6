import dataclasses

import pytest

from optpipe.errors import PassFailed
from optpipe.passes import get_pass
from optpipe.runtime import load_candidate
from optpipe.runtime.host_probe import detect_host
from optpipe.spec.targets import load_target


def test_requirements_refuse_cuda_graphs_without_cuda():
    env = dataclasses.replace(detect_host(), has_cuda=False)
    compile_ = get_pass("compile")
    reasons = compile_.requirements(compile_.Params(), load_target("cpu-x86"), env)
    assert any("needs a CUDA device" in r for r in reasons)
    assert compile_.requirements(compile_.Params(mode="default"), load_target("cpu-x86"), env) == []


def test_apply_records_runtime_and_round_trips(tiny_candidate, tmp_path, ctx):
    compile_ = get_pass("compile")
    cand = compile_.apply(tiny_candidate, compile_.Params(max_cache_len=256), ctx)
    spec = {"mode": "reduce-overhead", "max_cache_len": 256, "step": "fused", "inductor_tuning": True}
    assert cand.settings.compile == spec  # a Llama gets the fused step by default
    again = load_candidate(cand.save(tmp_path / "c"))
    assert again.settings.compile == spec
    dec = again.decoder()
    assert dec.name == "fused-step-compiled" and dec.max_cache_len == 256


def test_transformers_step_switches_attention_to_eager(tiny_candidate, tmp_path, ctx):
    compile_ = get_pass("compile")
    cand = compile_.apply(tiny_candidate, compile_.Params(max_cache_len=256, step="transformers"), ctx)
    assert cand.settings.compile == {"mode": "reduce-overhead", "max_cache_len": 256, "step": "transformers"}
    assert cand.settings.attn_implementation == "eager"  # Inductor fuses eager attention in the step
    dec = load_candidate(cand.save(tmp_path / "c")).decoder()
    assert dec.name == "static-compiled" and dec.max_cache_len == 256


def test_fused_step_refused_for_sliding_window(tiny_candidate, ctx):
    compile_ = get_pass("compile")
    cfg = tiny_candidate.model.config
    cfg.model_type, cfg.sliding_window = "mistral", 128
    try:
        with pytest.raises(PassFailed, match="sliding window 128"):
            compile_.apply(tiny_candidate, compile_.Params(max_cache_len=256, step="fused"), ctx)
        auto = compile_.apply(tiny_candidate, compile_.Params(max_cache_len=256), ctx)
        assert auto.settings.compile["step"] == "transformers"
    finally:
        cfg.model_type, cfg.sliding_window = "llama", None


def test_unsupported_architecture_fails_clearly(tiny_candidate, ctx):
    compile_ = get_pass("compile")
    tiny_candidate.model.config.model_type = "gpt2"
    with pytest.raises(PassFailed, match="supports llama"):
        compile_.apply(tiny_candidate, compile_.Params(), ctx)
    tiny_candidate.model.config.model_type = "llama"
