import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from optpipe.cli import app
from optpipe.errors import EXIT_INVALID_INPUT

runner = CliRunner()


def test_import_is_light():
    code = "import sys, optpipe, optpipe.cli, optpipe.api, optpipe.spec.targets; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_validate_ok_and_bad(tmp_path):
    assert runner.invoke(app, ["validate", "recipes/cpu.yaml"]).exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {source: smollm2-135m}\ntarget: cpu-x86\npasses:\n  - pass: atention\n    implementation: sdpa\n")
    res = runner.invoke(app, ["validate", str(bad)])
    assert res.exit_code == EXIT_INVALID_INPUT
    assert "bad.yaml:4" in res.output and "did you mean 'attention'" in res.output


def test_schema_targets_passes():
    res = runner.invoke(app, ["schema"])
    assert res.exit_code == 0 and json.loads(res.output)["title"] == "optpipe recipe"
    res = runner.invoke(app, ["targets"])
    assert res.exit_code == 0 and "rtx4060" in res.output
    res = runner.invoke(app, ["passes"])
    assert res.exit_code == 0 and "precision_cast" in res.output and "flash" in res.output


def test_build_refuses_bad_input_before_work(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text(
        f"model: {{source: {tmp_path}/nothing.gguf}}\ntarget: cpu-x86\npasses:\n  - pass: precision_cast\n    dtype: fp16\n"
    )
    res = runner.invoke(app, ["build", str(bad)])
    assert res.exit_code == EXIT_INVALID_INPUT
    assert "GGUF file not found" in res.output and "fp16" in res.output
    assert not (tmp_path / "optpipe-out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA host builds GPU targets")
def test_gpu_target_refused_on_cpu_host(tmp_path):
    res = runner.invoke(app, ["build", "recipes/rtx4060.yaml"])
    assert res.exit_code == EXIT_INVALID_INPUT
    assert "goals.min_decode_tok_s" in res.output and "goals.max_memory_gb" in res.output
    assert "neither measured nor projected" in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shapes", "llama-3.1-8b,nope"], "unknown nope"),
        (["--shapes", "llama-3.1-8b"], "at least 2"),
        (["--spec-bandwidth-gbs", "-5"], "must be > 0"),
    ],
)
def test_calibrate_rejects_bad_options_before_measuring(args, message):
    res = runner.invoke(app, ["calibrate", *args])
    assert res.exit_code == EXIT_INVALID_INPUT and message in res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA host can calibrate")
def test_calibrate_needs_a_gpu():
    res = runner.invoke(app, ["calibrate"])
    assert res.exit_code == EXIT_INVALID_INPUT and "needs a CUDA GPU" in res.output


def test_validate_runs_builds_input_checks(tmp_path):
    (tmp_path / "fake.gguf").write_text("not a model\n" * 10)
    cases = {"fake.gguf": "not a readable GGUF file", "./missing-dir": "not a bundled model", "a" * 5000: "File name too long"}
    for source, message in cases.items():
        recipe = tmp_path / "r.yaml"
        recipe.write_text(f"model:\n  source: {source}\ntarget: cpu-x86\n")
        res = runner.invoke(app, ["validate", str(recipe)])
        assert res.exit_code == EXIT_INVALID_INPUT, res.output
        assert f"{recipe}:2: model.source" in res.output and message in res.output
        assert max(len(line) for line in res.output.splitlines()) < 500  # a 5,000-character value is shortened
        assert runner.invoke(app, ["build", str(recipe)]).exit_code == EXIT_INVALID_INPUT


def test_validate_warns_about_remote_code(tmp_path, tiny_model_dir):
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "m")
    (tmp_path / "m" / "modeling_custom.py").write_text("print('hi')\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {source: m, trust_remote_code: true}\ntarget: cpu-x86\n")
    res = runner.invoke(app, ["validate", str(recipe)])
    assert res.exit_code == 0 and "modeling_custom.py" in res.output and "trust_remote_code" in res.output


@pytest.mark.parametrize("command", ["bench", "eval"])
def test_bench_and_eval_name_the_deleted_weights(tmp_path, tiny_model_dir, command):
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "artifact")
    (tmp_path / "artifact" / "model.safetensors").unlink()
    res = runner.invoke(app, [command, str(tmp_path / "artifact")])
    assert res.exit_code == EXIT_INVALID_INPUT
    assert "model.safetensors" in res.output and "weight file missing" in res.output and "log" not in res.output


def test_alias_bomb_exits_2_quickly_in_a_small_memory(tmp_path):
    """The point is the process: no MemoryError, no hang, no traceback (run as a user would)."""
    import resource

    from tests.spec.test_yaml_diagnostics import billion_laughs

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())

    def limit():  # 2 GB of address space: the unbounded version needed 6 GB
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    out = subprocess.run(
        [sys.executable, "-m", "optpipe.cli", "validate", str(bomb)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
    )
    assert out.returncode == EXIT_INVALID_INPUT, out.stderr
    assert "Traceback" not in out.stderr and f"{bomb}:" in out.stderr and "aliases expand" in out.stderr


def test_a_failed_measurement_keeps_the_log_it_names(tmp_path, tiny_model_dir):
    import re
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "artifact")
    (tmp_path / "artifact" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    res = runner.invoke(app, ["bench", str(tmp_path / "artifact"), "--new-tokens", "2", "--prompt-tokens", "2"])
    assert res.exit_code != 0
    log = Path(re.search(r"log: (\S+)", res.output).group(1))
    assert log.is_file() and "no-such-architecture" in log.read_text()
    shutil.rmtree(log.parent)
