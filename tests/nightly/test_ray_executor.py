"""`optpipe nightly --executor ray` on a local Ray cluster: two builds run in parallel as Ray tasks
and the history gets the rows the local executor writes; no Ray, or a Ray address nobody answers,
is exit 2 before anything is built."""

import builtins
import shutil
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from optpipe.cli import app
from optpipe.history import HistoryStore
from optpipe.nightly import run_nightly
from optpipe.nightly.ray_executor import Job, unschedulable
from tests.conftest import tiny_recipe_text, write

CONFIG = """output_root: {out}
executor: {executor}
sources:
  - name: a
    model: {{source: model}}
    recipes: [recipe.yaml]
  - name: b
    model: {{source: model}}
    recipes: [recipe.yaml]
"""

BUILD = ("recipe_name", "model", "model_kind", "model_fingerprint", "source_name", "target", "measured_on", "status", "selected")
CANDIDATE = ("name", "chain", "status", "verdict", "cache_key", "size_bytes", "memory_kind", "perplexity", "perplexity_tokens")


@pytest.fixture
def two_sources(tmp_path, tiny_model_dir):
    shutil.copytree(tiny_model_dir, tmp_path / "model")
    text = tiny_recipe_text(tmp_path / "elsewhere", tmp_path / "ignored")
    text = text.replace("hellaswag_items: 12", "hellaswag_items: 0").replace("max_trials: 3", "max_trials: 2")
    write(tmp_path / "recipe.yaml", text)
    return tmp_path


def rows(url):
    store = HistoryStore.open(url)
    try:
        return {
            b.source_name: (
                [getattr(b, f) for f in BUILD],
                [[getattr(c, f) for f in CANDIDATE] for c in b.candidates],
                b,
            )
            for b in store.builds()
        }
    finally:
        store.close()


@pytest.mark.slow  # a local Ray cluster and three tiny builds, about a minute: CI runs it in its second, slow step
def test_ray_builds_in_parallel_and_records_the_local_executors_rows(two_sources):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'optpipe[ray]')")
    tmp = two_sources
    # the local executor builds source a only: b is the same model and recipe, so its rows are a's (seconds count)
    local_cfg = write(tmp / "local.yaml", CONFIG.format(out="out-local", executor="local").split("  - name: b")[0])
    ray_cfg = write(tmp / "ray.yaml", CONFIG.format(out="out-ray", executor="ray"))
    local_url, ray_url = f"sqlite:///{tmp / 'local.db'}", f"sqlite:///{tmp / 'ray.db'}"

    assert [e.action for e in run_nightly(local_cfg, local_url).entries] == ["built"]
    r = CliRunner().invoke(app, ["nightly", str(ray_cfg), "--history-url", ray_url])
    assert r.exit_code == 0, r.output
    assert "a/recipe: dispatched to Ray" in r.output and "b/recipe: dispatched to Ray" in r.output

    local, ray = rows(local_url), rows(ray_url)
    assert sorted(ray) == ["a", "b"] and len(HistoryStore.open(ray_url).builds()) == 2  # one row per build, no more
    for source in ("a", "b"):
        assert ray[source][0] == [source if f == "source_name" else v for f, v in zip(BUILD, local["a"][0])]  # same outcome
        assert ray[source][1] == local["a"][1]  # same candidates, verdicts, cache keys, perplexity
        assert ray[source][2].output_dir == str((tmp / "out-ray" / source / "recipe").resolve())
    a, b = ray["a"][2], ray["b"][2]
    assert max(a.started, b.started) < min(a.finished, b.finished), "the two builds did not overlap"


def test_ray_not_installed_is_exit_2(two_sources, monkeypatch):
    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    cfg = write(two_sources / "ray.yaml", CONFIG.format(out="out", executor="local"))
    r = CliRunner().invoke(app, ["nightly", str(cfg), "--executor", "ray", "--history-url", f"sqlite:///{two_sources / 'h.db'}"])
    assert r.exit_code == 2, r.output
    assert "Ray is not installed" in r.output and "optpipe[ray]" in r.output and "Traceback" not in r.output
    assert not (two_sources / "out").exists()  # nothing was built


def test_unreachable_ray_address_is_exit_2_within_seconds(two_sources):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'optpipe[ray]')")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write(two_sources / "ray.yaml", CONFIG.format(out="out", executor="ray"))
    url = f"sqlite:///{two_sources / 'h.db'}"
    r = CliRunner().invoke(app, ["nightly", str(cfg), "--ray-address", f"127.0.0.1:{port}", "--history-url", url])
    assert r.exit_code == 2, r.output
    assert "ray_address: cannot reach a Ray cluster" in r.output and f"(got '127.0.0.1:{port}')" in r.output
    assert not (two_sources / "out").exists()


def test_a_build_no_node_can_run_is_refused_not_left_waiting():
    cpu_node = [{"Alive": True, "Resources": {"CPU": 2.0, "memory": 8e9}}]
    assert unschedulable(Job("s/r", {}, "r.yaml", num_gpus=0, memory_bytes=1_000_000), cpu_node) == ""
    assert "needs 1 GPU(s)" in unschedulable(Job("s/r", {}, "r.yaml", num_gpus=1, memory_bytes=0), cpu_node)
    too_big = unschedulable(Job("s/r", {}, "r.yaml", num_gpus=0, memory_bytes=int(20e9)), cpu_node)
    assert "needs 20.0 GB" in too_big and "offers 8.0 GB" in too_big


def test_nothing_imports_ray_until_the_ray_executor_is_chosen():
    code = "import sys, optpipe.cli, optpipe.api, optpipe.nightly.run; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
