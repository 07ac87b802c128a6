"""Kills with real processes: `optpipe build` SIGKILLed mid-measurement leaves no worker behind and a
manifest that reads as interrupted; the next build says so; a concurrent build is refused by the
lock; SIGINT prints the resume hint, exits 130 and leaves the manifest `interrupted`."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from optpipe.api import Recipe, build
from optpipe.errors import EXIT_INTERRUPTED, EXIT_INVALID_INPUT, InvalidInputError
from optpipe.output.directory import read_manifest
from tests.conftest import read_manifest as raw_manifest

# the benchmark runs for minutes on the tiny model: every kill lands while the worker measures
SLOW_RECIPE = """model:
  source: {model}
target: cpu-x86
evaluation: {{hellaswag_items: 0, perplexity_tokens: 300, perplexity_window: 128, perplexity_stride: 64}}
benchmark: {{prompt_tokens: 8, new_tokens: 64, min_trials: 500, max_trials: 500, warmup: 0}}
output_dir: {out}
"""


def start_build(recipe, log):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-c", "from optpipe.cli import main; main()", "build", str(recipe)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )


def wait_for_worker(build: subprocess.Popen, timeout: float = 120) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert build.poll() is None, "the build ended before its measurement started"
        for child in psutil.Process(build.pid).children(recursive=True):
            try:
                if "optpipe.measure.worker" in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.2)
    pytest.fail("no measurement worker appeared")


def assert_gone(proc: psutil.Process, within: float = 5) -> None:
    try:
        proc.wait(timeout=within)
    except psutil.TimeoutExpired:
        proc.kill()
        pytest.fail(f"measurement worker {proc.pid} still running {within} s after its build ended")


@pytest.mark.slow  # three kills of builds that measure for minutes: CI runs it in its second, slow step
def test_sigkill_then_concurrent_then_sigint(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(SLOW_RECIPE.format(model=tiny_model_dir, out=out))

    # 1. SIGKILL: nothing in the build can run, the worker dies with it, the manifest reads as interrupted
    with open(tmp_path / "first.log", "w") as log:
        first = start_build(recipe, log)
        worker = wait_for_worker(first)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert_gone(worker)
    assert raw_manifest(out)["status"] == "running"  # as the killed process left it
    stale = read_manifest(out)
    assert stale.status == "interrupted" and f"pid {first.pid}" in stale.error

    # 2. the next build says what happened; a concurrent one is refused at once by the lock
    with open(tmp_path / "second.log", "w") as log:
        second = start_build(recipe, log)
        worker = wait_for_worker(second)
        with pytest.raises(InvalidInputError, match=rf"another optpipe build \(pid {second.pid}\) is writing {out}") as exc:
            build(Recipe.load(recipe), recipe)  # in this process: the CLI maps it to exit 2 like any InvalidInputError
        assert exc.value.exit_code == EXIT_INVALID_INPUT
        assert second.poll() is None and worker.is_running()  # the refused build touched nothing

        # 3. SIGINT: the hint, exit 130, manifest `interrupted`, no worker left
        os.kill(second.pid, signal.SIGINT)
        assert second.wait(timeout=60) == EXIT_INTERRUPTED
    assert_gone(worker)
    text = " ".join((tmp_path / "second.log").read_text().split())
    assert f"previous build interrupted: the build process (pid {first.pid})" in text
    assert "interrupted (SIGINT) — run the same command again to resume from the cache" in text
    assert "Traceback" not in text
    m = raw_manifest(out)
    assert m["status"] == "interrupted" and m["error"] == "interrupted by SIGINT"
    assert m["candidates"][0]["status"] == "pending" and "not finished" in m["candidates"][0]["reason"]
    assert not (out / "work").exists()
