"""Builds and the output directory on a tiny random Llama: a NOT MET rebuild removes the earlier
artifact, user files in work/ survive, a shared cache root serves the baseline (and its KL reference)
to a new output directory, a foreign directory is refused, a full disk ends with a pointed error."""

import errno
import stat

import pytest
from typer.testing import CliRunner

from optpipe.build.engine import build
from optpipe.build.recipe import parse_recipe
from optpipe.cli import app
from optpipe.errors import EXIT_INVALID_INPUT, OutputWriteError
from optpipe.judge.budget import Verdict
from optpipe.output.directory import WORK_MARKER
from tests.conftest import read_manifest, tiny_recipe_text

FAST = {
    "evaluation": "{hellaswag_items: 0, perplexity_tokens: 300, perplexity_window: 128, perplexity_stride: 64, kl_tokens: 64}",
    "benchmark": "{prompt_tokens: 8, new_tokens: 4, min_trials: 2, max_trials: 2, warmup: 0}",
}


def fast_recipe(model_dir, out, **extra):
    text = tiny_recipe_text(model_dir, out).split("evaluation:")[0] + f"output_dir: {out}\n"
    for k, v in (FAST | extra).items():
        text += f"{k}: {v}\n"
    return parse_recipe(text)


@pytest.fixture(scope="module")
def shared_cache(tiny_model_dir, tmp_path_factory):
    """One MET baseline-only build into out1, measured with OPTPIPE_CACHE_DIR set (one worker run)."""
    root = tmp_path_factory.mktemp("shared")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTPIPE_CACHE_DIR", str(root / "cache"))
        first = build(fast_recipe(tiny_model_dir, root / "out1"))
        assert first.status == Verdict.MET and [c.status for c in first.candidates] == ["measured"]
        yield root, mp


def test_new_output_dir_reuses_the_shared_baseline_and_kl_reference(shared_cache, tiny_model_dir):
    root, _ = shared_cache
    again = build(fast_recipe(tiny_model_dir, root / "out2"))
    assert [c.status for c in again.candidates] == ["cached"]  # not measured again
    assert len(list((root / "cache").glob("kl-reference-*.pt"))) == 1
    assert not (root / "out2" / ".cache").exists()


def test_artifact_files_are_readable_by_others(shared_cache):
    root, _ = shared_cache
    for f in (root / "out1" / "artifact").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) & 0o044 == 0o044, f  # transformers wrote the weights 0600
    assert stat.S_IMODE((root / "out1" / "manifest.json").stat().st_mode) & 0o044 == 0o044


def test_not_met_rebuild_removes_the_earlier_artifact_and_keeps_user_files(shared_cache, tiny_model_dir):
    root, _ = shared_cache
    out = root / "out1"
    assert (out / "artifact").is_dir()
    (out / "work").mkdir()  # work/ of ours (marked) with a user's file in it
    (out / "work" / WORK_MARKER).write_text('{"created": []}')
    (out / "work" / "my-notes.txt").write_text("mine")
    res = build(fast_recipe(tiny_model_dir, out, goals="{max_size_gb: 0.0000001}"))
    assert res.status == Verdict.NOT_MET and res.artifact_dir is None
    assert not (out / "artifact").exists()  # a deploy script must not find the earlier MET model
    m = read_manifest(out)
    assert m["status"] == "NOT MET" and "removed the earlier build's" in m["notes"][0]
    assert "removed the earlier build's" in (out / "report.md").read_text()
    assert (out / "work" / "my-notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "work").iterdir()) == [WORK_MARKER, "my-notes.txt"]  # candidates gone


def test_full_disk_while_saving_is_a_pointed_error_and_the_manifest_says_failed(tiny_model_dir, tmp_path, monkeypatch):
    from optpipe.runtime.torch_candidate import TorchCandidate

    def full(self, directory):
        raise OSError(errno.ENOSPC, "No space left on device", str(directory))

    monkeypatch.setattr(TorchCandidate, "save", full)
    out = tmp_path / "out"
    with pytest.raises(OutputWriteError, match=r"the disk is full: writing .*00-baseline needs about \d+ bytes"):
        build(fast_recipe(tiny_model_dir, out))
    m = read_manifest(out)
    assert m["status"] == "failed" and "disk is full" in m["error"]
    assert not (out / "work").exists()


def test_cli_refuses_a_foreign_directory_before_any_work(tiny_model_dir, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("years of work")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(tiny_recipe_text(tiny_model_dir, theirs))
    res = CliRunner().invoke(app, ["build", str(recipe)])
    assert res.exit_code == EXIT_INVALID_INPUT, res.output
    assert "was not made by optpipe" in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in theirs.iterdir()) == ["thesis.tex"]
    res = CliRunner().invoke(app, ["build", str(recipe), "-o", str(theirs / "thesis.tex")])
    assert res.exit_code == EXIT_INVALID_INPUT and "is a file, not a directory" in res.output


def test_sigterm_ends_the_build_as_interrupted(tiny_model_dir, tmp_path):
    import os
    import signal

    from optpipe.build.engine import Build
    from optpipe.build.plan import plan
    from optpipe.errors import EXIT_INTERRUPTED, BuildInterrupted

    def on_event(event, payload):
        if event == "phase":
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` or a job scheduler does

    out = tmp_path / "out"
    with pytest.raises(BuildInterrupted, match="resume from the cache") as exc:
        Build(plan(fast_recipe(tiny_model_dir, out)), on_event).run()
    assert exc.value.exit_code == EXIT_INTERRUPTED
    m = read_manifest(out)
    assert m["status"] == "interrupted" and m["error"] == "interrupted by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the build's handler is gone again
