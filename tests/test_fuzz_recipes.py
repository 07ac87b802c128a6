"""Fuzzing `optpipe validate` (in-process, through the CLI): whatever the recipe file holds, the
answer is exit 0, or exit 2 with every problem at file:line; never a traceback.

Runs in seconds by default (the `optpipe-ci` profile: a fixed, derandomized set of examples). For a
longer hunt: OPTPIPE_FUZZ_PROFILE=optpipe-fuzz pytest tests/test_fuzz_recipes.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from optpipe.cli import app
from optpipe.errors import EXIT_INVALID_INPUT, EXIT_OK

settings.register_profile(
    "optpipe-ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("optpipe-fuzz", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile(os.environ.get("OPTPIPE_FUZZ_PROFILE", "optpipe-ci"))

REPO = Path(__file__).resolve().parents[1]
SHIPPED = [p.read_text() for p in sorted((REPO / "recipes").glob("*.yaml"))]
runner = CliRunner()

# Field names of the recipe (and near misses), so generated documents reach deep into validation.
KEYS = st.sampled_from(
    [
        "model", "source", "gguf_file", "trust_remote_code", "target", "device", "budget", "goals", "evaluation",
        "benchmark", "passes", "pass", "dtype", "implementation", "stop", "objective", "output_dir",
        "hellaswag_items", "perplexity_window", "perplexity_stride", "max_memory_gb", "min_decode_tok_s",
        "on_unsupported", "method", "mode", "precision_cast", "attention", "quantize", "compile", "tagret",
    ]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["smollm2-135m", "cpu-x86", "rtx4060", "bf16", "fp16", "auto", "{", "{recipe}", "{0}", "x.gguf"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)
DOCUMENTS = st.dictionaries(KEYS, VALUES, max_size=8).map(lambda d: yaml.safe_dump(d, allow_unicode=True))


def mutate(text: str, data: st.DataObject) -> str:
    """A few edits of the kinds people make: a deleted, doubled or cut line, a character typed over."""
    for _ in range(data.draw(st.integers(1, 4))):
        lines = text.splitlines(keepends=True) or [""]
        i = data.draw(st.integers(0, len(lines) - 1))
        kind = data.draw(st.sampled_from(["delete", "duplicate", "cut", "replace", "insert", "indent"]))
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "cut":
            lines[i] = lines[i][: data.draw(st.integers(0, len(lines[i])))]
        elif kind == "indent":
            lines[i] = " " * data.draw(st.integers(1, 3)) + lines[i]
        else:
            j = data.draw(st.integers(0, len(lines[i])))
            typed = data.draw(st.text(min_size=1, max_size=6) | st.sampled_from(list(":-{}[]&*!|>'\"#%@`\t\\")))
            lines[i] = lines[i][:j] + typed + lines[i][j + (kind == "replace") :]
        text = "".join(lines)
    return text


@pytest.fixture(scope="module")
def recipe_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"


def check_validate(path: Path, content: str | bytes) -> None:
    path.write_bytes(content.encode("utf-8", errors="surrogatepass") if isinstance(content, str) else content)
    res = runner.invoke(app, ["validate", str(path)])
    assert res.exception is None or isinstance(res.exception, SystemExit), f"traceback: {res.exception!r}\n{res.output}"
    assert res.exit_code in (EXIT_OK, EXIT_INVALID_INPUT), res.output
    if res.exit_code == EXIT_INVALID_INPUT:
        where = [line for line in res.output.splitlines() if line.startswith(f"  {path}")]
        assert where, res.output
        for line in where:
            assert re.match(rf"  {re.escape(str(path))}:\d+: ", line), f"problem without file:line: {line}"


@pytest.mark.timeout(120)
def test_generated_documents(recipe_path):
    from hypothesis import given

    @given(DOCUMENTS)
    @PROFILE
    def run(doc: str) -> None:
        check_validate(recipe_path, doc)

    run()


@pytest.mark.timeout(120)
def test_mutated_shipped_recipes(recipe_path):
    from hypothesis import given

    @given(st.sampled_from(SHIPPED), st.data())
    @PROFILE
    def run(text: str, data: st.DataObject) -> None:
        check_validate(recipe_path, mutate(text, data))

    run()


@pytest.mark.timeout(120)
def test_random_bytes(recipe_path):
    from hypothesis import given

    prefix = st.sampled_from([b"", b"model: {source: smollm2-135m}\ntarget: cpu-x86\n", b"\xef\xbb\xbf", b"model:\n  source: "])

    @given(prefix, st.binary(max_size=200))
    @PROFILE
    def run(head: bytes, tail: bytes) -> None:
        check_validate(recipe_path, head + tail)

    run()
