"""`optpipe plan`: the user's 8B-for-an-8-GB-card recipe forecast from config + safetensors headers
alone. The checkpoint here has headers and no weight bytes at all, so a reader that touched the
weights would fail."""

import json
import re
import struct
from pathlib import Path

from typer.testing import CliRunner

from optpipe.cli import app
from tests.forecast.tiny_checkpoints import LLAMA_31_8B

REPO = Path(__file__).resolve().parents[2]
LLAMA_3_1_8B = LLAMA_31_8B | {"architectures": ["LlamaForCausalLM"], "head_dim": 128, "dtype": "bfloat16"}


def header_only_checkpoint(directory: Path, cfg: dict = LLAMA_3_1_8B) -> Path:
    """config.json + one .safetensors file holding only its header (the data section is absent)."""
    h, i, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    kv = cfg["num_key_value_heads"] * cfg["head_dim"]
    shapes = {
        "model.embed_tokens.weight": [cfg["vocab_size"], h],
        "lm_head.weight": [cfg["vocab_size"], h],
        "model.norm.weight": [h],
    }
    for n in range(L):
        p = f"model.layers.{n}."
        shapes |= {
            p + "self_attn.q_proj.weight": [h, h],
            p + "self_attn.k_proj.weight": [kv, h],
            p + "self_attn.v_proj.weight": [kv, h],
            p + "self_attn.o_proj.weight": [h, h],
            p + "mlp.gate_proj.weight": [i, h],
            p + "mlp.up_proj.weight": [i, h],
            p + "mlp.down_proj.weight": [h, i],
            p + "input_layernorm.weight": [h],
            p + "post_attention_layernorm.weight": [h],
        }
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob)
    (directory / "config.json").write_text(json.dumps(cfg))
    return directory


def test_plan_forecasts_the_8b_recipe_without_weights(tmp_path):
    model = header_only_checkpoint(tmp_path / "llama-3.1-8b-shape")
    recipe = tmp_path / "rtx4060.yaml"
    text = (REPO / "recipes" / "rtx4060.yaml").read_text().replace("meta-llama/Llama-3.1-8B-Instruct", str(model))
    recipe.write_text(text)
    res = CliRunner().invoke(app, ["plan", str(recipe)])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "8.03 B parameters, bf16 (safetensors headers; no weights read)" in out
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:]]
        for line in out.splitlines()
        if line.startswith("│") and "│" in line[1:]
    }
    assert rows["baseline"][2] == "16.06" and rows["baseline"][5] == "no"  # bf16 weights: 16 GB > 8 GB
    assert rows["precision_cast"][5] == "no"
    assert rows["quantize:torchao-int4wo"][5] == "yes" and rows["quantize:bnb-nf4"][5] == "yes"
    assert rows["compile"][1] == rows["quantize:torchao-int4wo"][1]  # built on the first quantize variant
    roof = float(rows["quantize:torchao-int4wo"][6])
    assert 272e9 / 6.5e9 < roof < 272e9 / 4.0e9  # 272 GB/s over the int4 bytes read per token
    assert re.search(r"needs 1[67]\.\d\d GB", out)  # the reason names the numbers
    # on a CPU-only host the build itself would be refused, and plan says so instead of failing
    assert "optpipe build would refuse" in out or "cuda" in out.lower()


def test_plan_of_an_unreadable_hub_model_points_at_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {source: nobody/no-such-model}\ntarget: rtx4060\n")
    res = CliRunner().invoke(app, ["plan", str(recipe)])
    assert res.exit_code == 2
    assert "model.source" in res.output and "local copy" in res.output
