"""A real build on a CUDA host for a GPU target that is not this GPU: memory capped to the
target's VRAM, decode speed projected and labelled, the compile candidate measured through the
fused CUDA-graph step. Skipped without CUDA (CI has none); run on the GPU machine with -m gpu."""

import pytest
import torch

from optpipe.build.engine import build
from optpipe.build.recipe import parse_recipe
from tests.conftest import read_manifest, tiny_recipe_text

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

PASSES = """  - pass: precision_cast
    dtype: bf16
  - pass: compile
    max_cache_len: 64
"""


def test_build_for_rtx4060_on_another_gpu_caps_memory_and_projects(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    text = tiny_recipe_text(tiny_model_dir, out, PASSES, goals="{max_memory_gb: 8, min_decode_tok_s: 1}", stop="best").replace(
        "target: cpu-x86", "target: rtx4060"
    )
    res = build(parse_recipe(text))
    m = read_manifest(out)
    names = [c["name"] for c in m["candidates"]]
    assert names == ["baseline", "precision_cast", "compile"]
    gpu = torch.cuda.get_device_name(0)
    for c in m["candidates"]:
        meas = c["measurements"]
        assert meas["memory_cap_gb"] == (None if "4060" in gpu else 8.0)
        roof = meas["benchmark"]["roofline"]
        assert 0 < roof["fraction"] <= 1
        if "4060" not in gpu:
            assert roof["projected"]["target"] == "rtx4060"
            speed = next(k for k in c["checks"] if k["name"] == "decode_tok_s")
            assert speed["projected"] is True
    compiled = m["candidates"][2]["measurements"]
    assert compiled["benchmark"]["decoder"] == "fused-step-compiled"
    assert res.status.value in ("MET", "NOT MET", "INCONCLUSIVE")
    report = (out / "report.md").read_text()
    assert "projected" in report or "4060" in gpu
