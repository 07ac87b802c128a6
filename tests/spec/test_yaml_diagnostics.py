"""YAML that would exhaust memory or time is refused while composing, at its line."""

import time

import pytest

from optpipe.errors import InvalidInputError
from optpipe.spec import yaml_diagnostics


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + f"\nmodel: {{source: *a{levels - 1}}}\ntarget: cpu-x86\n"


def refusal(text: str) -> str:
    t0 = time.perf_counter()
    with pytest.raises(InvalidInputError) as exc:
        yaml_diagnostics.compose(text, "bomb.yaml")
    assert time.perf_counter() - t0 < 2.0, "refusing must be quick, not after expanding"
    (problem,) = exc.value.problems
    assert problem.file == "bomb.yaml" and problem.line is not None
    return problem.render()


def test_billion_laughs_is_refused_quickly():
    assert "expand the document beyond 100,000 values" in refusal(billion_laughs())


def test_many_small_aliases_are_refused():
    text = "x: &x 1\nl: [" + ", ".join(["*x"] * 150) + "]\n"
    assert "more than 100 aliases" in refusal(text)


def test_recursive_alias_is_refused():
    assert "recursive alias" in refusal("model: &m {source: [*m]}\ntarget: cpu-x86\n")


def test_a_few_aliases_are_fine():
    text = "base: &b {hellaswag_items: 10}\nevaluation: *b\nother: *b\n"
    assert yaml_diagnostics.compose(text, "r.yaml") is not None


def test_python_tags_and_deep_nesting_are_invalid_yaml():
    with pytest.raises(InvalidInputError, match="could not determine a constructor"):
        yaml_diagnostics.load("model: !!python/object:os.system {}\n", "r.yaml")
    with pytest.raises(InvalidInputError, match="nested too deeply") as exc:
        yaml_diagnostics.compose("[" * 5000 + "]" * 5000, "r.yaml")
    assert exc.value.problems[0].line == 1
