import torch
from safetensors import safe_open

from optpipe.passes import get_pass
from optpipe.runtime import load_candidate
from optpipe.runtime.candidate import weights_size_bytes
from optpipe.runtime.host_probe import detect_host
from optpipe.spec.targets import load_target

ENV = detect_host()


def params(**kw):
    return get_pass("precision_cast").Params(**kw)


def test_bf16_changes_what_runs_and_what_is_saved(tiny_candidate, tmp_path, ctx):
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.inference_mode():
        ref = tiny_candidate.model(ids).logits
    fp32_dir = tiny_candidate.save(tmp_path / "fp32")

    cand = get_pass("precision_cast").apply(tiny_candidate, params(dtype="bf16"), ctx)

    assert cand.settings.dtype == "bf16"
    assert {p.dtype for p in cand.model.parameters()} == {torch.bfloat16}
    with torch.inference_mode():
        out = cand.model(ids).logits
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref, atol=0.05)
    assert not torch.equal(out.float(), ref)  # really computed in bf16
    bf16_dir = cand.save(tmp_path / "bf16")
    with safe_open(bf16_dir / "model.safetensors", "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.bfloat16
    assert weights_size_bytes(bf16_dir) < 0.6 * weights_size_bytes(fp32_dir)
    assert load_candidate(bf16_dir).model.dtype == torch.bfloat16


def test_requirements_check_target_dtypes():
    cast = get_pass("precision_cast")
    assert cast.requirements(params(dtype="bf16"), load_target("cpu-x86"), ENV) == []
    reasons = cast.requirements(params(dtype="fp16"), load_target("cpu-x86"), ENV)
    assert any("does not support fp16" in r for r in reasons)
    assert cast.requirements(params(dtype="bf16"), load_target("raspberry-pi-5"), ENV)
    assert cast.requirements(params(dtype="fp16"), load_target("rtx4060"), ENV) == []
