import pytest

from optpipe.errors import InvalidInputError
from optpipe.spec.model_source import resolve_model


def test_local_dir(tiny_model_dir):
    r = resolve_model(str(tiny_model_dir))
    assert r.kind == "hf-dir"
    assert r.fingerprint() == resolve_model(str(tiny_model_dir)).fingerprint()


def test_bad_sources_say_why(tmp_path):
    with pytest.raises(InvalidInputError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "x.gguf"))
    with pytest.raises(InvalidInputError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(InvalidInputError, match="not a bundled model"):
        resolve_model("no-such-thing")


def test_hub_id_is_recognised():
    r = resolve_model("meta-llama/Llama-3.1-8B-Instruct", revision="main")
    assert r.kind == "hub" and len(r.fingerprint()) == 16


def test_bundled_model_resolves():
    from tests.conftest import require_bundled_model

    require_bundled_model()
    r = resolve_model("smollm2-135m")
    assert r.kind == "bundled" and r.gguf_file.endswith(".gguf")


@pytest.mark.parametrize(
    "source, message",
    [("a" * 5000, "File name too long"), ("~no-such-user-xyz/m.gguf", "home directory")],
)
def test_unusable_paths_are_input_errors(tmp_path, source, message):
    with pytest.raises(InvalidInputError, match="cannot access this path") as exc:
        resolve_model(source, base_dir=tmp_path, origin="r.yaml")
    assert message in exc.value.problems[0].message and exc.value.problems[0].field == "model.source"


def test_relative_paths_resolve_against_the_recipe_directory_not_the_cwd(tmp_path, tiny_model_dir, monkeypatch):
    import shutil

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    shutil.copytree(tiny_model_dir, tmp_path / "model")
    monkeypatch.chdir(recipes)
    assert resolve_model("../model", base_dir=recipes).location == str((tmp_path / "model").resolve())
    monkeypatch.chdir(tmp_path)  # ./model exists here, but the recipe lives in recipes/
    with pytest.raises(InvalidInputError, match="relative paths resolve against the recipe's directory"):
        resolve_model("./model", base_dir=recipes)


def test_fingerprint_is_read_once_while_files_are_unchanged(tmp_path, monkeypatch):
    """nightly fingerprints a source and the build it starts does again: the second is a cache hit,
    and a changed file (size or mtime) is hashed anew."""
    import builtins

    from optpipe.spec.model_source import ResolvedModel

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"a" * 100)
    opened: list[str] = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    m = ResolvedModel("hf-dir", str(tmp_path))
    first = m.fingerprint()
    assert len(opened) == 2
    assert ResolvedModel("hf-dir", str(tmp_path)).fingerprint() == first and len(opened) == 2
    (tmp_path / "model.safetensors").write_bytes(b"b" * 101)
    assert m.fingerprint() != first and len(opened) == 4
