"""distill: the student moves toward the teacher (KL on held-out text falls), and a distillation killed
mid-run resumes from its last complete checkpoint instead of starting over."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from pydantic import ValidationError

from optpipe.passes import get_pass
from optpipe.passes.distill.train import kd_loss
from optpipe.runtime import load_candidate
from tests.conftest import REPO, make_tiny_model, pass_context

D = get_pass("distill")
FAST = dict(calibration_samples=32, calibration_seq_len=64, batch_size=4, learning_rate=3e-3, warmup_steps=0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_tokenizer):
    """A student (seed 0) and a different teacher (seed 1, sharper logits), saved as model directories."""
    root = tmp_path_factory.mktemp("distill")
    student, teacher = make_tiny_model(len(tiny_tokenizer), seed=0), make_tiny_model(len(tiny_tokenizer), seed=1)
    with torch.no_grad():
        teacher.model.embed_tokens.weight.mul_(30)  # tied head: confident, far from the student's
    for name, m in (("student", student), ("teacher", teacher)):
        m.save_pretrained(root / name)
        tiny_tokenizer.save_pretrained(root / name)
    return root / "student", root / "teacher"


def _kl(student, teacher, tokenizer) -> float:
    from optpipe.evaluate.data import wikitext_test

    ids = tokenizer(wikitext_test()[:4000], return_tensors="pt").input_ids[:, :256]  # the evaluation text's start
    with torch.inference_mode():
        return float(kd_loss(student(input_ids=ids).logits, teacher(input_ids=ids).logits, 1.0))


def test_distill_moves_the_student_to_the_teacher(pair, tiny_tokenizer, tmp_path):
    student_dir, teacher_dir = pair
    cand = load_candidate(student_dir)
    teacher = load_candidate(teacher_dir).model
    before = _kl(cand.model, teacher, tiny_tokenizer)
    params = D.Params(teacher=str(teacher_dir), steps=25, checkpoint_every=10, **FAST)
    out = D.apply(cand, params, pass_context(tmp_path, perplexity_tokens=600))
    after = _kl(out.model, teacher, tiny_tokenizer)
    rec = out.settings.distill
    assert after < 0.6 * before, (before, after)
    assert rec["steps"] == 25 and rec["tokens"] == 25 * 4 * 64 and rec["resumed_from_step"] == 0
    assert rec["final_loss"] < rec["first_loss"]
    assert rec["calibration"]["token_range"][0] >= 600  # disjoint from the perplexity tokens
    assert not any(tmp_path.glob("distill-*"))  # checkpoints removed once finished
    assert not out.model.training and torch.isfinite(out.model(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


WORKER = """
import sys
from pathlib import Path
from optpipe.passes import get_pass
from optpipe.runtime import load_candidate
from tests.conftest import pass_context
D = get_pass("distill")
params = D.Params.model_validate_json(sys.argv[2])
D.apply(load_candidate(sys.argv[1]), params, pass_context(Path(sys.argv[3]), perplexity_tokens=600))
"""


@pytest.mark.slow
def test_resume_after_kill_continues_from_the_checkpoint(pair, tmp_path, capsys):
    """SIGKILL of the process running the distillation, then the same distillation again: it starts at the
    last complete checkpoint and runs only the remaining steps."""
    import re

    from optpipe.evaluate.data import wikitext_test

    student_dir, teacher_dir = pair
    text = tmp_path / "calibration.txt"  # a short file: tokenizing the whole WikiText twice costs more than training
    text.write_text(wikitext_test()[-60_000:])
    fast = FAST | dict(calibration="file", calibration_file=str(text))
    params = D.Params(teacher=str(teacher_dir), steps=40, checkpoint_every=5, **fast)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-c", WORKER, str(student_dir), params.model_dump_json(by_alias=True), str(tmp_path)]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    saved = prior = None
    deadline = time.monotonic() + 120
    while saved is None and proc.poll() is None and time.monotonic() < deadline:
        states = sorted(tmp_path.glob("distill-*/checkpoint-*/trainer_state.json"))
        for s in states:
            try:
                state = json.loads(s.read_text())
                saved, prior = state["global_step"], state["stateful_callbacks"]["TimeBudget"]["args"]["prior"]
            except ValueError:
                pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert saved is not None, proc.stderr.read().decode()[-2000:]
    assert saved < 40  # killed mid-run, not after the end

    capsys.readouterr()
    out = D.apply(load_candidate(student_dir), params, pass_context(tmp_path, perplexity_tokens=600))
    rec = out.settings.distill
    assert rec["resumed_from_step"] >= saved and rec["resumed_from_step"] % 5 == 0
    assert rec["steps"] == 40
    logged = [int(m) for m in re.findall(r"distill step (\d+)/40", capsys.readouterr().err)]
    assert logged and min(logged) > rec["resumed_from_step"]  # only the remaining steps ran
    assert len(logged) == (40 - rec["resumed_from_step"]) // 5
    assert prior > 0 and rec["seconds"] >= prior  # the time spent before the kill still counts toward minutes


def test_budget_and_teacher_are_checked_up_front(tmp_path):
    from optpipe.runtime.host_probe import detect_host
    from optpipe.spec.targets import load_target

    with pytest.raises(ValidationError, match="budget"):
        D.Params()
    reasons = D.requirements(D.Params(teacher=str(tmp_path), steps=1), load_target("cpu-x86"), detect_host())
    assert any("not a transformers model directory" in r for r in reasons)
    assert "log_every" not in D.Params(minutes=1).chain_params()  # how it is watched is not what it makes


PRUNE_DISTILL = """  - pass: prune
    methods: [depth, width]
    depth_blocks: 1
    calibration_samples: 4
    calibration_seq_len: 64
  - pass: distill
    steps: 3
    calibration_samples: 8
    calibration_seq_len: 64
"""


@pytest.mark.slow
def test_prune_then_distill_from_the_baseline_in_a_build(tiny_model_dir, tmp_path):
    """End to end: both prune variants measured, the kept one distilled from the recipe's model (the build
    hands the pass its source), what each did recorded in the manifest, no checkpoints left behind."""
    from optpipe.build.engine import build
    from optpipe.build.recipe import parse_recipe
    from tests.conftest import read_manifest, tiny_recipe_text

    out = tmp_path / "out"
    build(parse_recipe(tiny_recipe_text(tiny_model_dir, out, PRUNE_DISTILL, stop="best")))
    m = read_manifest(out)
    by_name = {c["name"]: c for c in m["candidates"]}
    assert list(by_name) == ["baseline", "prune:depth", "prune:width", "distill"]
    runtime = {k: c["measurements"]["runtime"] for k, c in by_name.items()}
    assert runtime["prune:depth"]["prune"]["blocks_before"] == 2 and len(runtime["prune:depth"]["prune"]["blocks_dropped"]) == 1
    assert runtime["prune:width"]["prune"]["intermediate_after"] == 96
    distill = runtime["distill"]["distill"]
    assert distill["teacher"].startswith("baseline") and distill["steps"] == 3
    assert "prune" in runtime["distill"]  # the student's own pruning is still on record
    assert not (out / "work").exists()


def test_a_2to4_sparse_student_is_refused_before_training(tiny_candidate, tmp_path):
    """Training updates every weight: the 2:4 pattern would be lost, so distill says so instead."""
    from optpipe.errors import PassFailed

    sparse = tiny_candidate.with_settings(prune={"method": "sparse24", "pattern": "2:4"})
    with pytest.raises(PassFailed, match="2:4"):
        D.apply(sparse, D.Params(steps=1), pass_context(tmp_path, perplexity_tokens=600))


SMOLLM2_PRUNE_DISTILL = """  - pass: prune
    methods: [depth]
    depth_blocks: 0.25
    calibration_samples: 4
    calibration_seq_len: 64
  - pass: distill
    steps: 6
    temperature: 1.0
    learning_rate: 2.0e-4
    warmup_steps: 1
    batch_size: 2
    calibration_samples: 64
    calibration_seq_len: 128
    gradient_checkpointing: false
"""


@pytest.mark.slow
def test_prune_then_distill_the_bundled_smollm2_end_to_end(bundled_model, tmp_path):
    """The real model through a real build (what recipes/cpu-prune.yaml does, scaled down to minutes): 8 of
    30 blocks dropped, the student distilled from the GGUF baseline, and a few steps already pull its
    output distribution back toward the baseline's."""
    from optpipe.build.engine import build
    from optpipe.build.recipe import parse_recipe
    from tests.conftest import read_manifest, tiny_recipe_text

    out = tmp_path / "out"
    text = tiny_recipe_text("smollm2-135m", out, SMOLLM2_PRUNE_DISTILL, stop="best").replace(
        "hellaswag_items: 12", "hellaswag_items: 8"
    )
    build(parse_recipe(text))
    by_name = {c["name"]: c for c in read_manifest(out)["candidates"]}
    assert list(by_name) == ["baseline", "prune:depth", "distill"]
    pruned, distilled = by_name["prune:depth"]["measurements"], by_name["distill"]["measurements"]
    prune_rec = pruned["runtime"]["prune"]
    assert prune_rec["blocks_before"] == 30 and len(prune_rec["blocks_dropped"]) == 8
    assert distilled["parameters"] == prune_rec["params_after"] < prune_rec["params_before"]
    rec = distilled["runtime"]["distill"]
    assert rec["teacher"].startswith("baseline") and rec["steps"] == 6 and rec["tokens"] == 6 * 2 * 128
    assert distilled["kl"]["mean"] < pruned["kl"]["mean"], (pruned["kl"], distilled["kl"])
    assert distilled["perplexity"]["ppl"] < pruned["perplexity"]["ppl"]
    assert not (out / "work").exists() and not any((out / ".cache").glob("resume/distill-*"))
