"""quantize mixed-precision: per-layer sensitivities, the smallest choice under the KL limit, and a
checkpoint with one config group per format that stock transformers and optpipe.load read back."""

import dataclasses
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from optpipe.passes import get_pass
from optpipe.passes.quantize.mixed import choose_formats, layer_sensitivity, linear_bytes, rtn
from optpipe.runtime import load_candidate
from tests.conftest import pass_context

pytest.importorskip("compressed_tensors", reason="mixed precision writes compressed-tensors checkpoints")

IDS = torch.tensor([[5, 17, 42, 7, 99, 3, 250, 12]])
FORMATS = ["int4", "int8", "dense"]


def _sizes(names):
    return {n: {f: linear_bytes(64, 64, f, 32, 4) for f in FORMATS} for n in names}


def test_choice_is_all_int4_when_the_limit_allows():
    sens = {"a": {"int4": 0.01, "int8": 0.0001, "dense": 0.0}, "b": {"int4": 0.02, "int8": 0.0001, "dense": 0.0}}
    choice, kl = choose_formats(sens, _sizes(sens), FORMATS, max_kl=0.05)
    assert choice == {"a": "int4", "b": "int4"} and kl == pytest.approx(0.03)


def test_choice_upgrades_the_most_sensitive_layer_first():
    sens = {
        "a": {"int4": 0.01, "int8": 0.0001, "dense": 0.0},
        "b": {"int4": 0.50, "int8": 0.002, "dense": 0.0},
        "c": {"int4": 0.02, "int8": 0.0001, "dense": 0.0},
    }
    choice, kl = choose_formats(sens, _sizes(sens), FORMATS, max_kl=0.04)
    assert choice == {"a": "int4", "b": "int8", "c": "int4"} and kl == pytest.approx(0.032)
    choice, kl = choose_formats(sens, _sizes(sens), FORMATS, max_kl=0.0)  # nothing may be lost: all dense
    assert set(choice.values()) == {"dense"} and kl == 0.0  # noqa


def test_rtn_levels_are_on_the_grid():
    w = torch.randn(8, 64)
    q, scale = rtn(w, 4, 32)
    levels = q / scale.repeat_interleave(32, dim=1)
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels.round().min() >= -8 and levels.round().max() <= 7
    assert (rtn(w, 8, 32)[0] - w).abs().max() < (q - w).abs().max()  # int8 is finer


def test_sensitivity_ranks_int4_above_int8_and_restores_the_weights(tiny_model_dir):
    model = load_candidate(tiny_model_dir).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sens = layer_sensitivity(model, IDS, FORMATS, 32)
    assert len(sens) == 14
    assert all(s["int4"] >= 0 and s["int8"] >= 0 and s["dense"] == 0 for s in sens.values())
    assert sum(s["int4"] for s in sens.values()) > 10 * sum(s["int8"] for s in sens.values())  # 16x coarser steps
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_mixed_precision_build_step_round_trips(tiny_model_dir, tmp_path):
    ctx = dataclasses.replace(pass_context(tmp_path, perplexity_tokens=600), resume_dir=tmp_path / ".cache" / "resume")
    params = get_pass("quantize").Params(
        methods=["mixed-precision"], group_size=32, mixed_precision={"max_kl": 1e-5, "sensitivity_samples": 2}
    )
    cand = get_pass("quantize").apply(load_candidate(tiny_model_dir), params, ctx)
    info = cand.settings.calibration
    assert cand.settings.quantization == "mixed-precision" and info["predicted_kl"] <= 1e-5
    assert sum(info["layers"].values()) == 14 and info["sensitivity_cached"] is False
    choice = info["choice"]
    assert len(set(choice.values())) >= 2  # a real mix: at least two formats, so two config groups or a dense layer
    modules = dict(cand.model.named_modules())
    for name, fmt in choice.items():  # each layer as chosen: packed at its bit width, or dense
        mod = modules[name]
        if fmt == "dense":
            assert not hasattr(mod, "weight_scale")
        else:
            assert mod.weight_packed.dtype == torch.int32
            assert mod.weight_packed.shape[1] == mod.weight_shape[1] * {"int4": 4, "int8": 8}[fmt] // 32
    with torch.inference_mode():
        out = cand.model(IDS).logits.float()
    saved = cand.save(tmp_path / "mixed")
    stock = AutoModelForCausalLM.from_pretrained(saved, device_map="cpu")  # per-module config: no optpipe needed
    qc = json.loads((saved / "config.json").read_text())["quantization_config"]
    assert set(qc["config_groups"]) == {f for f in choice.values() if f != "dense"}
    for fmt, group in qc["config_groups"].items():  # each group names its layers: targets: [Linear] twice would clash
        assert sorted(group["targets"]) == sorted(n for n, f in choice.items() if f == fmt)
        assert group["weights"]["num_bits"] == {"int4": 4, "int8": 8}[fmt]
    assert set(qc["ignore"]) == {n for n, f in choice.items() if f == "dense"} | {"lm_head"}
    with torch.inference_mode():
        assert (stock(IDS).logits.float() - out).abs().max() <= 1e-4 * out.abs().max()
    again = load_candidate(saved)
    assert again.settings.quantization == "mixed-precision"
    # the same parent and settings: the sensitivities come from the cache
    cand2 = get_pass("quantize").apply(load_candidate(tiny_model_dir), params, ctx)
    assert cand2.settings.calibration["sensitivity_cached"] is True and cand2.settings.calibration["choice"] == choice
