"""End to end on the real bundled SmolLM2-135M: a real (small-eval) build through the CLI, and the
artifact loaded back with stock transformers."""

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from optpipe.cli import app

pytestmark = pytest.mark.usefixtures("bundled_model")

REPO = Path(__file__).resolve().parents[2]


def small_cpu_recipe(out: Path) -> str:
    text = (REPO / "recipes" / "cpu.yaml").read_text()
    text = re.sub(r"hellaswag_items: \d+", "hellaswag_items: 24", text)
    text = re.sub(r"perplexity_tokens: \d+", "perplexity_tokens: 1024", text)
    text = text.replace("hellaswag_max_drop_points: 1.0", "hellaswag_max_drop_points: 30.0")  # 24 items decide little
    # The speed goal depends on how busy the machine is; the test judges what does not: accuracy and size.
    text = re.sub(r"\n\s*min_decode_tok_s: .*", "", text)
    return re.sub(r"\noutput_dir: .*", f"\noutput_dir: {out}", text)


def test_real_build_of_default_recipe(tmp_path):
    out = tmp_path / "out"
    recipe = tmp_path / "cpu-small.yaml"
    recipe.write_text(small_cpu_recipe(out))
    res = CliRunner().invoke(app, ["build", str(recipe)])
    manifest = json.loads((out / "manifest.json").read_text())
    base = manifest["candidates"][0]["measurements"]
    assert base["parameters"] == pytest.approx(134.5e6, rel=0.01)
    assert 0.5e9 < base["size_bytes"] < 0.56e9  # fp32
    assert 5 < base["perplexity"]["ppl"] < 60, base["perplexity"]["ppl"]  # a real language model, not noise
    assert base["hellaswag"]["n"] == 24
    bf16 = manifest["candidates"][1]
    assert bf16["name"] == "precision_cast" and bf16["measurements"]["runtime"]["dtype"] == "bf16"
    assert bf16["measurements"]["size_bytes"] < 0.55 * base["size_bytes"]
    ppl_check = next(c for c in bf16["checks"] if c["name"] == "perplexity_rise_pct")
    assert abs(ppl_check["value"]) < 3.0
    assert {c["name"] for c in bf16["checks"]} == {"hellaswag_drop_points", "perplexity_rise_pct", "size_gb"}
    assert res.exit_code == 0, res.output
    assert manifest["status"] == "MET" and manifest["selected"] == "precision_cast"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    art = out / "artifact"
    model = AutoModelForCausalLM.from_pretrained(art)
    tok = AutoTokenizer.from_pretrained(art)
    assert model.dtype == torch.bfloat16
    ids = tok("The capital of France is", return_tensors="pt")
    text = tok.decode(model.generate(**ids, max_new_tokens=8, do_sample=False)[0])
    assert "Paris" in text


@pytest.mark.slow  # minutes of real SmolLM2 quantization (GPTQ calibration): CI runs it in its second, slow step
def test_real_quantization_build_int8_and_gptq(tmp_path):
    """The bundled SmolLM2 through a real quantize build: torchao int8 weight-only and GPTQ int4
    (calibrated on held-out WikiText-2), each its own candidate from the fp32 parent, checkpoints
    that are really smaller, perplexity that is still a language model's."""
    out = tmp_path / "out"
    recipe = tmp_path / "quant-small.yaml"
    recipe.write_text(f"""
model: {{source: smollm2-135m}}
target: cpu-x86
budget: {{hellaswag_max_drop_points: 30.0, perplexity_max_rise_pct: 60.0}}
evaluation: {{hellaswag_items: 24, perplexity_tokens: 1024, perplexity_window: 512, perplexity_stride: 256}}
benchmark: {{prompt_tokens: 32, new_tokens: 8, min_trials: 2, max_trials: 2}}
passes:
  - pass: quantize
    methods: [torchao-int8wo, gptq-4bit]
    group_size: 64
    calibration_samples: 4
    calibration_seq_len: 256
stop: best
output_dir: {out}
""")
    CliRunner().invoke(app, ["build", str(recipe)])
    manifest = json.loads((out / "manifest.json").read_text())
    cands = {c["name"]: c for c in manifest["candidates"]}
    assert set(cands) == {"baseline", "quantize:torchao-int8wo", "quantize:gptq-4bit"}, list(cands)
    base = cands["baseline"]["measurements"]
    int8 = cands["quantize:torchao-int8wo"]["measurements"]
    gptq = cands["quantize:gptq-4bit"]["measurements"]
    assert int8["size_bytes"] < 0.45 * base["size_bytes"]  # int8 linear layers (embedding stays)
    assert gptq["size_bytes"] < int8["size_bytes"]  # packed int4
    assert int8["perplexity"]["ppl"] < 1.05 * base["perplexity"]["ppl"]
    assert base["perplexity"]["ppl"] < gptq["perplexity"]["ppl"] < 2 * base["perplexity"]["ppl"]
    calib = gptq["runtime"]["calibration"]
    assert calib["source"] == "wikitext-heldout" and calib["samples"] == 4
