import pytest
import torch
from pydantic import ValidationError

from optpipe.passes import get_pass
from optpipe.runtime import load_candidate
from optpipe.runtime.host_probe import detect_host
from optpipe.spec.targets import load_target


def count_sdpa_calls(model, monkeypatch) -> int:
    calls = {"n": 0}
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*a, **kw):
        calls["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.inference_mode():
        out = model(torch.tensor([[3, 1, 4, 1, 5, 9]])).logits
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", real)
    return calls["n"], out


def test_eager_and_sdpa_run_different_kernels(tiny_candidate, monkeypatch, tmp_path, ctx):
    attention = get_pass("attention")
    layers = tiny_candidate.model.config.num_hidden_layers

    sdpa = attention.apply(tiny_candidate, attention.Params(implementation="sdpa"), ctx)
    n_sdpa, out_sdpa = count_sdpa_calls(sdpa.model, monkeypatch)
    eager = attention.apply(sdpa, attention.Params(implementation="eager"), ctx)
    n_eager, out_eager = count_sdpa_calls(eager.model, monkeypatch)

    assert n_sdpa == layers and n_eager == 0
    assert eager.settings.attn_implementation == "eager"
    assert torch.allclose(out_sdpa, out_eager, atol=1e-4)
    # the choice survives save/load through optpipe.load
    again = load_candidate(eager.save(tmp_path / "eager"))
    assert again.settings.attn_implementation == "eager"
    assert count_sdpa_calls(again.model, monkeypatch)[0] == 0


def test_flash_requirements_explain_why():
    attention = get_pass("attention")
    env = detect_host()
    reasons = attention.requirements(attention.Params(implementation="flash_attention_2"), load_target("cpu-x86"), env)
    assert any("GPU target" in r for r in reasons)
    if not env.has_cuda:
        assert any("needs CUDA" in r for r in reasons)
    assert any("flash-attn" in r for r in reasons) or env.has_package("flash-attn")
    reasons = attention.requirements(attention.Params(implementation="flash_attention_3"), load_target("rtx4090"), env)
    assert any("compute capability >= 9.0" in r for r in reasons)
    assert attention.requirements(attention.Params(implementation="eager"), load_target("cpu-x86"), env) == []


def test_unknown_implementation_rejected():
    with pytest.raises(ValidationError, match="implementation"):
        get_pass("attention").Params(implementation="xformers")
