"""The build loop on a tiny random Llama: candidates, verdicts, artifact, failure and resume."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from optpipe.build.engine import build
from optpipe.build.plan import plan
from optpipe.build.recipe import parse_recipe
from optpipe.judge.budget import Verdict
from optpipe.passes.precision_cast import PrecisionCast
from tests.conftest import read_manifest, tiny_recipe_text

PASSES = """  - pass: attention
    implementation: eager
  - pass: precision_cast
    dtype: bf16
"""


def recipe(model_dir, out, passes=PASSES, goals="{max_size_gb: 0.0001}", **kw):
    return parse_recipe(tiny_recipe_text(model_dir, out, passes, goals=goals, **kw))


@pytest.mark.slow  # a minute or more of tiny builds: CI runs it in its second, slow step
def test_build_runs_every_candidate_and_reports_not_met(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    res = build(recipe(tiny_model_dir, out))
    assert res.status == Verdict.NOT_MET and res.artifact_dir is None
    names = [c.name for c in res.candidates]
    assert names == ["baseline", "attention", "precision_cast"]
    m = read_manifest(out)
    assert m["status"] == "NOT MET" and m["schema_version"] == 2 and len(m["recipe_hash"]) == 16
    for c in m["candidates"]:
        meas = c["measurements"]
        assert meas["benchmark"]["decode_tok_s"]["mean"] > 0
        assert meas["hellaswag"]["n"] == 12 and meas["perplexity"]["tokens_scored"] > 0
        assert {k["name"] for k in c["checks"]} >= {"hellaswag_drop_points", "perplexity_rise_pct", "size_gb"}
    assert m["candidates"][2]["measurements"]["runtime"] == {
        "format": "transformers",
        "dtype": "bf16",
        "attn_implementation": "eager",
        "device": "cpu",
    }
    assert m["candidates"][2]["chain"][0]["pass"] == "attention"  # passes are cumulative
    assert m["candidates"][0]["measurements"].get("speed_vs_parent") is None  # the baseline has no parent
    for c, parent in zip(m["candidates"][1:], ["0 baseline", "1 attention"]):
        sv = c["measurements"]["speed_vs_parent"]  # timed in alternating rounds beside the candidate it came from
        assert sv["parent"] == parent and sv["interleaved"] and sv["order"][:2] == ["candidate", "parent"]
        assert sv["low"] <= sv["ratio"] <= sv["high"] and "host_load" in c["measurements"]["benchmark"]
    assert m["candidates"][0]["measurements"]["perplexity"]["bos_prepended"] is False  # the tiny tokenizer adds none
    kls = [c["measurements"]["kl"] for c in m["candidates"]]
    assert kls[0]["reference"].startswith("self") and kls[0]["n"] == 599  # perplexity scores 599 positions
    assert kls[1]["n"] == kls[2]["n"] == 599
    assert 0 <= kls[1]["mean"] < kls[2]["mean"]  # eager vs sdpa differ by fp32 rounding; bf16 weights by more
    report = (out / "report.md").read_text()
    assert "| 2 | precision_cast | bf16 | eager |" in report
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('<tr class="measured" data-candidate=') == 3 and '<svg xmlns="http://www.w3.org/2000/svg"' in page
    assert not (out / "work").exists()


def test_build_stops_at_first_met_and_writes_loadable_artifact(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    # bf16 halves the size: the size goal excludes fp32 candidates, accuracy lines are loose
    r = recipe(
        tiny_model_dir,
        out,
        goals="{max_size_gb: 0.0003}",
        budget="{hellaswag_max_drop_points: 100, perplexity_max_rise_pct: 100}",
        passes="  - pass: precision_cast\n    dtype: bf16\n  - pass: attention\n    implementation: eager\n",
    )
    res = build(r)
    assert res.status == Verdict.MET and res.selected.name == "precision_cast"
    assert [(c.name, c.status) for c in res.candidates] == [
        ("baseline", "measured"),
        ("precision_cast", "measured"),
        ("attention", "not run"),
    ]  # stopped at the first MET
    art = res.artifact_dir
    stock = AutoModelForCausalLM.from_pretrained(art)
    assert stock.dtype == torch.bfloat16
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["selected"] == "precision_cast" and manifest["status"] == "MET"
    assert (art / "report.md").exists() and (art / "report.html").exists() and (art / "optpipe_runtime.json").exists()
    import optpipe

    loaded = optpipe.load(art)
    ids = torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        assert torch.equal(loaded.model(ids).logits, stock(ids).logits)


def test_failing_pass_keeps_results_and_build_continues(tiny_model_dir, tmp_path, monkeypatch):
    def boom(cls, candidate, params, ctx):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(PrecisionCast, "apply", classmethod(boom))
    out = tmp_path / "out"
    passes = "  - pass: precision_cast\n    dtype: bf16\n  - pass: attention\n    implementation: eager\n"
    res = build(recipe(tiny_model_dir, out, passes=passes))
    statuses = [(c.name, c.status) for c in res.candidates]
    assert statuses == [("baseline", "measured"), ("precision_cast", "failed"), ("attention", "measured")]
    m = read_manifest(out)
    assert "kernel exploded" in m["candidates"][1]["reason"]
    assert m["candidates"][0]["measurements"]["hellaswag"]["n"] == 12
    assert (out / "logs" / "01-precision_cast.error.txt").exists()


@pytest.mark.slow  # a minute or more of tiny builds: CI runs it in its second, slow step
def test_resume_uses_cached_measurements(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    first = build(recipe(tiny_model_dir, out, passes="  - pass: attention\n    implementation: eager\n"))
    assert [c.status for c in first.candidates] == ["measured", "measured"]
    again = build(recipe(tiny_model_dir, out, passes="  - pass: attention\n    implementation: eager\n"))
    assert [c.status for c in again.candidates] == ["cached", "cached"]
    assert again.candidates[1].measurements == first.candidates[1].measurements
    for ref in (out / ".cache").glob("kl-reference-*.pt"):  # without its reference log-probs the baseline
        ref.unlink()  # is measured again, so later KLs still have one
    third = build(recipe(tiny_model_dir, out, passes="  - pass: attention\n    implementation: eager\n"))
    assert [c.status for c in third.candidates] == ["measured", "cached"]
    assert list((out / ".cache").glob("kl-reference-*.pt"))


def test_unsupported_pass_skip_or_fail(tiny_model_dir, tmp_path):
    from optpipe.errors import InvalidInputError

    fp16 = "  - pass: precision_cast\n    dtype: fp16\n"
    with pytest.raises(InvalidInputError, match="does not support fp16"):
        plan(recipe(tiny_model_dir, tmp_path / "o", passes=fp16))
    p = plan(
        recipe(tiny_model_dir, tmp_path / "o", passes="  - pass: precision_cast\n    dtype: fp16\n    on_unsupported: skip\n")
    )
    assert "does not support fp16" in p.passes[0].skip_reason


def test_gpu_host_not_target_caps_memory_and_projects():
    import dataclasses

    from optpipe.build.plan import measurement_conditions
    from optpipe.measure.job import ProjectionJob
    from optpipe.runtime.host_probe import detect_host
    from optpipe.spec.targets import load_target

    env = dataclasses.replace(detect_host(), has_cuda=True, gpu_name="NVIDIA H100 80GB HBM3", gpu_memory_gb=85.0)
    got = measurement_conditions("cuda", load_target("rtx4060"), env)
    assert got.memory_cap_gb == 8.0 and got.projection == ProjectionJob(target="rtx4060", bandwidth_gbs=272.0)
    got = measurement_conditions("cuda", load_target("h100-80g"), env)
    assert got.memory_cap_gb is None and got.projection is None
    got = measurement_conditions("cpu", load_target("cpu-x86"), env)
    assert got.memory_cap_gb is None and got.projection is None


@pytest.mark.slow  # a minute or more of tiny builds: CI runs it in its second, slow step
def test_variants_are_alternatives_from_the_same_parent(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    passes = (
        "  - pass: quantize\n    methods: [torchao-int4wo, torchao-int8wo, bnb-nf4]\n    on_unsupported: skip\n"
        "  - pass: attention\n    implementation: eager\n"
    )
    res = build(recipe(tiny_model_dir, out, passes=passes))
    got = [(c.name, c.status) for c in res.candidates]
    assert got == [
        ("baseline", "measured"),
        ("quantize:torchao-int4wo", "skipped"),
        ("quantize:torchao-int8wo", "measured"),
        ("quantize:bnb-nf4", "measured"),
        ("attention", "measured"),
    ]
    by_name = {c.name: c for c in res.candidates}
    assert by_name["quantize:bnb-nf4"].chain == [
        {
            "pass": "quantize",
            "methods": ["bnb-nf4"],
            "group_size": 128,
            "compute_dtype": "bf16",
            "double_quant": True,
            "pass_version": 1,
        }
    ]
    assert by_name["quantize:torchao-int8wo"].measurements.runtime["quantization"] == "torchao-int8wo"
    assert "CUDA" in by_name["quantize:torchao-int4wo"].reason
    # the next pass builds on one quantized variant (the best by the objective), not on both
    assert len(by_name["attention"].chain) == 2 and by_name["attention"].chain[0]["pass"] == "quantize"


def test_variant_that_cannot_run_fails_the_plan_unless_skipped(tiny_model_dir, tmp_path):
    from optpipe.errors import InvalidInputError

    passes = "  - pass: quantize\n    methods: [torchao-int4wo, bnb-nf4]\n"
    with pytest.raises(InvalidInputError, match="quantize:torchao-int4wo"):
        plan(recipe(tiny_model_dir, tmp_path / "o", passes=passes))


def test_old_kl_references_are_pruned(tmp_path):
    import os

    from optpipe.build.engine import prune_kl_references

    refs = [tmp_path / f"kl-reference-{i}.pt" for i in range(5)]
    for i, r in enumerate(refs):
        r.write_bytes(b"x")
        os.utime(r, (1000 + i, 1000 + i))
    prune_kl_references(refs[0], keep=3)  # the current one stays even when it is the oldest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kl-reference-0.pt", "kl-reference-3.pt", "kl-reference-4.pt"]
