from pathlib import Path

import pytest
from pydantic import ValidationError

from optpipe.build.recipe import Recipe, load_recipe, parse_recipe, recipe_schema
from optpipe.errors import InvalidInputError

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def test_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {"cpu", "rtx4060"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.target
    assert recipe.content_hash() == load_recipe(path).content_hash()


def problems_of(text: str):
    with pytest.raises(InvalidInputError) as exc:
        parse_recipe(text, "r.yaml")
    return exc.value.problems


def test_all_problems_reported_at_once_with_lines():
    text = """model:
  source: smollm2-135m
target: rtx4600
budget:
  hellaswag_max_drop_points: -1
evaluation:
  hellaswag_itmes: 10
passes:
  - pass: precison_cast
    dtype: bf16
  - pass: precision_cast
    dtype: int3
"""
    probs = problems_of(text)
    by_field = {p.field: p for p in probs}
    assert by_field["target"].line == 3 and "rtx4060" in by_field["target"].message
    assert by_field["target"].value == "rtx4600"
    assert by_field["budget.hellaswag_max_drop_points"].line == 5
    typo = by_field["evaluation.hellaswag_itmes"]
    assert typo.line == 7 and "did you mean 'hellaswag_items'" in typo.message
    unknown_pass = by_field["passes[0]"]
    assert unknown_pass.line == 9 and "did you mean 'precision_cast'" in unknown_pass.message
    dtype = by_field["passes[1].dtype"]
    assert dtype.line == 12 and dtype.value == "int3" and "'bf16'" in dtype.message
    assert len(probs) == 5
    rendered = probs[0].render()
    assert rendered.startswith("r.yaml:")


def test_missing_required_fields():
    probs = problems_of("budget: {}\n")
    fields = {p.field for p in probs}
    assert {"model", "target"} <= fields


def test_not_a_mapping_and_bad_yaml():
    assert problems_of("- a\n- b\n")[0].field == "<root>"
    assert "not valid YAML" in problems_of("model: [unclosed\n")[0].message


def test_stride_must_not_exceed_window():
    probs = problems_of(
        "model: {source: smollm2-135m}\ntarget: cpu-x86\nevaluation: {perplexity_window: 64, perplexity_stride: 128}\n"
    )
    assert probs[0].field == "evaluation.perplexity_stride"


def test_defaults_and_pass_params_frozen():
    r = parse_recipe("model: {source: smollm2-135m}\ntarget: cpu-x86\npasses:\n  - pass: attention\n    implementation: eager\n")
    assert r.stop == "first" and r.budget.hellaswag_max_drop_points == 1.0
    assert r.passes[0].kind == "attention" and r.passes[0].implementation == "eager"
    assert r.passes[0].chain_params() == {"pass": "attention", "implementation": "eager"}
    with pytest.raises(ValidationError, match="frozen"):
        r.passes[0].implementation = "sdpa"


def test_schema_lists_every_pass_and_field():
    schema = recipe_schema()
    text = str(schema)
    assert "precision_cast" in text and "attention" in text and "hellaswag_max_drop_points" in text
    assert schema["title"] == "optpipe recipe"


def test_recipe_load_missing_file(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        Recipe.load(tmp_path / "nope.yaml")


def test_field_line_finds_plan_time_fields():
    from optpipe.spec.yaml_diagnostics import field_line

    path = REPO / "recipes" / "rtx4060.yaml"
    lines = path.read_text().splitlines()
    n = field_line(path, "goals.max_memory_gb")
    assert lines[n - 1].strip().startswith("max_memory_gb")
    n = field_line(path, "passes[1] (quantize)")
    assert "pass: quantize" in lines[n - 1]


@pytest.mark.parametrize("template", ["{", "}", "{0}", "out/{name}", "{recipe!r}", "{recipe:>9}", "{}"])
def test_output_dir_allows_only_the_recipe_placeholder(template):
    text = f"model: {{source: smollm2-135m}}\ntarget: cpu-x86\noutput_dir: '{template}'\n"
    (problem,) = problems_of(text)
    assert (problem.file, problem.line, problem.field) == ("r.yaml", 3, "output_dir")
    assert "the only placeholder is {recipe}" in problem.message


def test_output_dir_literal_braces_are_doubled():
    r = parse_recipe("model: {source: smollm2-135m}\ntarget: cpu-x86\noutput_dir: 'out/{{x}}/{recipe}'\n", "r.yaml")
    assert r.output_dir.format(recipe="cpu") == "out/{x}/cpu"


def test_non_utf8_recipe_names_line_and_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model: {source: smollm2-135m}\ntarget: cpu-x86\n# café\n".encode("latin-1"))
    with pytest.raises(InvalidInputError) as exc:
        load_recipe(path)
    (problem,) = exc.value.problems
    assert problem.line == 3 and "byte 0xe9 at offset 51" in problem.message and "UTF-8" in problem.message


def test_unreadable_recipe_path_is_an_input_error(tmp_path):
    with pytest.raises(InvalidInputError, match="cannot read the recipe"):
        load_recipe(tmp_path)  # a directory
