"""A night killed (SIGKILL: no handler runs) during its second build resumes when run again: the
first build is not redone, the second reuses the candidate it measured before the kill, and the
history holds one finished row per build: no half-written row, no duplicate."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from optpipe.history import HistoryStore
from optpipe.nightly import run_nightly
from tests.conftest import tiny_recipe_text, write

CONFIG = """output_root: out
sources:
  - name: a
    model: {source: model}
    recipes: [baseline.yaml]
  - name: b
    model: {source: model}
    recipes: [recipe.yaml]
"""


def measured(manifest):
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return []
    return [c["name"] for c in data.get("candidates", []) if c.get("status") == "measured"]


@pytest.mark.slow  # tens of seconds of tiny builds: CI runs it in its second, slow step
def test_sigkill_during_the_second_build_then_rerun_resumes(tmp_path, tiny_model_dir):
    shutil.copytree(tiny_model_dir, tmp_path / "model")
    small = {"hellaswag_items: 12": "hellaswag_items: 0", "max_trials: 3": "max_trials: 2"}  # seconds count
    for name, passes in (("baseline.yaml", ""), ("recipe.yaml", "  - pass: precision_cast\n    dtype: bf16\n")):
        text = tiny_recipe_text(tmp_path / "x", tmp_path / "y", passes=passes)
        for old, new in small.items():
            text = text.replace(old, new)
        write(tmp_path / name, text)
    cfg = write(tmp_path / "nightly.yaml", CONFIG)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    second = tmp_path / "out" / "b" / "recipe" / "manifest.json"

    night = subprocess.Popen(
        [sys.executable, "-c", "from optpipe.cli import main; main()", "nightly", str(cfg), "--history-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes its measurement processes too
    )
    try:
        deadline = time.monotonic() + 240
        while not measured(second) and night.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert measured(second) == ["baseline"], "the night ended before its second build measured a candidate"
        os.killpg(night.pid, signal.SIGKILL)
    finally:
        if night.poll() is None:
            os.killpg(night.pid, signal.SIGKILL)
        night.wait()
    store = HistoryStore.open(url)
    try:
        killed = store.builds()
        assert [(b.source_name, b.status) for b in killed] == [("a", "MET")]  # b's build left no row at all

        again = run_nightly(cfg, url)
        a, b = again.entries
        assert a.action == "unchanged" and a.build.id == killed[0].id  # not rebuilt
        assert b.action == "built" and (b.cached, b.measured) == (1, 1)  # the baseline from the cache, bf16 measured
        rows = store.builds()
        assert sorted((r.source_name, r.status) for r in rows) == [("a", "MET"), ("b", "MET")]  # one row each
        assert [c.name for c in next(r for r in rows if r.source_name == "b").candidates] == ["baseline", "precision_cast"]
    finally:
        store.close()


def test_a_corrupt_history_stops_the_night_before_any_build(tmp_path, tiny_model_dir):
    garbage = b"this is not a database" * 100
    from typer.testing import CliRunner

    from optpipe.cli import app

    shutil.copytree(tiny_model_dir, tmp_path / "model")
    write(tmp_path / "recipe.yaml", tiny_recipe_text(tmp_path / "x", tmp_path / "y"))
    write(tmp_path / "baseline.yaml", tiny_recipe_text(tmp_path / "x", tmp_path / "y"))
    cfg = write(tmp_path / "nightly.yaml", CONFIG)
    db = tmp_path / "h.db"
    db.write_bytes(garbage)
    r = CliRunner().invoke(app, ["nightly", str(cfg), "--history-url", f"sqlite:///{db}"])
    assert r.exit_code == 2, r.output
    assert "h.db is not a readable SQLite database" in " ".join(r.output.split()) and "Traceback" not in r.output
    assert "not a readable SQLite database" in " ".join(r.output.split()) and "Traceback" not in r.output
    assert db.read_bytes() == garbage and not (tmp_path / "out").exists()  # left untouched; nothing built
