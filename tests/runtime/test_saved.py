"""A damaged saved model is named file by file before any process is spent loading it."""

import shutil

import pytest

from optpipe.errors import InvalidInputError
from optpipe.runtime import check_saved_model, load_candidate
from optpipe.runtime.candidate import RUNTIME_FILE, read_settings


@pytest.fixture
def artifact(tmp_path, tiny_model_dir):
    d = tmp_path / "artifact"
    shutil.copytree(tiny_model_dir, d)
    return d


def problems(directory):
    with pytest.raises(InvalidInputError) as exc:
        check_saved_model(directory)
    return exc.value.problems


def test_a_whole_directory_passes(artifact):
    assert check_saved_model(artifact).format == "transformers"


def test_deleted_weights_are_named(artifact):
    (artifact / "model.safetensors").unlink()
    (p,) = problems(artifact)
    assert p.file == str(artifact / "model.safetensors") and "weight file missing" in p.message
    with pytest.raises(InvalidInputError, match="weight file missing"):
        load_candidate(artifact)


def test_a_missing_shard_is_named(artifact):
    (artifact / "model.safetensors").rename(artifact / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (artifact / "model.safetensors.index.json").write_text(__import__("json").dumps(index))
    (p,) = problems(artifact)
    assert p.file.endswith("model-00002-of-00002.safetensors")


def test_missing_config_and_not_a_directory(artifact, tmp_path):
    assert "not a directory" in problems(tmp_path / "nope")[0].message
    (artifact / "config.json").unlink()
    assert "not a model directory" in problems(artifact)[0].message


@pytest.mark.parametrize(
    "content, field, message",
    [
        (b'{"format": "transformers", \xff', "<file>", "not a readable optpipe runtime file"),
        (b"{not json", "<file>", "not a readable optpipe runtime file"),
        (b"[1, 2]", "<root>", "not a JSON object"),
        (b'{"dtype": 5}', "dtype", "must be a string"),
        (b'{"dtype": "int3"}', "dtype", "expected one of fp32, fp16, bf16"),
        (b'{"compile": "yes"}', "compile", "must be a dict"),
        (b'{"colour": "blue"}', "colour", "unknown field"),
    ],
)
def test_damaged_runtime_file_is_named(artifact, content, field, message):
    (artifact / RUNTIME_FILE).write_bytes(content)
    (p,) = problems(artifact)
    assert p.file == str(artifact / RUNTIME_FILE) and p.field == field and message in p.message
    assert "delete it" in p.message


def test_a_valid_runtime_file_round_trips(artifact):
    (artifact / RUNTIME_FILE).write_text('{"format": "transformers", "dtype": "bf16", "compile": {"mode": "default"}}')
    s = read_settings(artifact)
    assert s.dtype == "bf16" and s.compile == {"mode": "default"}
