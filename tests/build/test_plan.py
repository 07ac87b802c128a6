"""check_inputs: the input checks `optpipe validate` and `optpipe build` share, and where paths go."""

import os
from pathlib import Path

import pytest

from optpipe.build.plan import _output_dir, check_inputs, validate
from optpipe.build.recipe import parse_recipe
from optpipe.errors import InvalidInputError
from tests.forecast.tiny_checkpoints import write_tiny_gguf


def recipe_file(directory: Path, body: str, name: str = "r.yaml") -> tuple[object, str]:
    path = directory / name
    path.write_text(f"target: cpu-x86\n{body}")
    return parse_recipe(path.read_text(), str(path)), str(path)


def test_fake_and_truncated_gguf_are_refused_with_file_and_line(tmp_path):
    (tmp_path / "fake.gguf").write_text("hello, I am a text file\n" * 4)
    good = write_tiny_gguf(tmp_path / "good.gguf")
    (tmp_path / "cut.gguf").write_bytes(good.read_bytes()[:-100])
    for name, why in [("fake.gguf", "no GGUF magic"), ("cut.gguf", "truncated")]:
        r, f = recipe_file(tmp_path, f"model:\n  source: {name}\n")
        with pytest.raises(InvalidInputError) as exc:
            validate(r, f)
        (p,) = exc.value.problems
        assert (p.line, p.field, p.value) == (3, "model.source", str(tmp_path / name))
        assert why in p.message and "re-download" in p.message
    r, f = recipe_file(tmp_path, "model:\n  source: good.gguf\n")
    assert validate(r, f).model.kind == "gguf"


def test_damaged_config_json_is_refused(tmp_path, tiny_model_dir):
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    r, f = recipe_file(tmp_path, "model: {source: m}\n")
    assert "config.json is not readable JSON" in check_inputs(r, f).problems[0].message


def test_trust_remote_code_names_the_code_that_will_run(tmp_path, tiny_model_dir):
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "m")
    (tmp_path / "m" / "modeling_evil.py").write_text("import os\n")
    r, f = recipe_file(tmp_path, "model: {source: m, trust_remote_code: true}\n")
    (warning,) = check_inputs(r, f).warnings
    assert "runs this Python code" in warning and "modeling_evil.py" in warning
    r, f = recipe_file(tmp_path, "model: {source: m}\n")
    assert check_inputs(r, f).warnings == []


def test_missing_model_is_a_problem_not_an_exception(tmp_path):
    r, f = recipe_file(tmp_path, "model: {source: ./nope}\n")
    (p,) = check_inputs(r, f).problems
    assert p.field == "model.source" and "recipe's directory" in p.message


def test_output_dir_written_in_a_recipe_resolves_against_its_directory(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    r, f = recipe_file(tmp_path / "recipes", "model: {source: smollm2-135m}\noutput_dir: ../optpipe-out/{recipe}\n", "cpu.yaml")
    assert _output_dir(r, os.path.relpath(f)) == Path("optpipe-out/cpu")  # as README says, from the repo root
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert _output_dir(r, f) == tmp_path / "optpipe-out" / "cpu"  # same place from anywhere
    r, f = recipe_file(tmp_path / "recipes", "model: {source: smollm2-135m}\n", "gpu.yaml")
    assert _output_dir(r, f) == Path("optpipe-out/gpu")  # the default: the working directory
    r, f = recipe_file(tmp_path / "recipes", f"model: {{source: smollm2-135m}}\noutput_dir: {tmp_path}/abs\n")
    assert _output_dir(r, f) == tmp_path / "abs"


@pytest.mark.parametrize("name", ["cpu", "cpu-quant", "cpu-onnx"])
def test_shipped_recipes_write_where_the_readme_says(name, monkeypatch):
    from optpipe.build.recipe import load_recipe

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)
    path = f"recipes/{name}.yaml"
    assert _output_dir(load_recipe(path), path) == Path(f"optpipe-out/{name}")
