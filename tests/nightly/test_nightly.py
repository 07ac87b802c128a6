"""`optpipe nightly` on the tiny model: a first build, an unchanged night, a rebuild from the cache,
and a changed release that is rebuilt, compared and reported as a regression."""

import shutil

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from optpipe.cli import app
from optpipe.errors import InvalidInputError
from optpipe.history import HistoryStore
from optpipe.nightly import load_nightly, run_nightly
from tests.conftest import tiny_recipe_text, write

CONFIG = """output_root: out
keep_artifacts: 1
tolerance:
  speed_drop_pct: 90
  memory_rise_pct: null
  perplexity_rise_pct: 3
sources:
  - name: tiny
    model: {source: model}
    recipes: [recipe.yaml]
"""


@pytest.fixture
def night(tmp_path, tiny_model_dir):
    shutil.copytree(tiny_model_dir, tmp_path / "model")
    text = tiny_recipe_text(tmp_path / "elsewhere", tmp_path / "ignored")  # nightly replaces model and output_dir
    text = text.replace("hellaswag_items: 12", "hellaswag_items: 0").replace("max_trials: 3", "max_trials: 2")  # seconds count
    write(tmp_path / "recipe.yaml", text)
    return write(tmp_path / "nightly.yaml", CONFIG)


def test_nightly_builds_skips_reuses_and_flags_a_changed_release(night, tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    first = run_nightly(night, url)
    (e,) = first.entries
    assert (e.action, e.why, e.measured, e.comparison) == ("built", "first build", 1, None)
    assert e.build.output_dir == str((tmp_path / "out" / "tiny" / "recipe").resolve())
    assert e.build.source_name == "tiny" and e.build.candidates[0].perplexity > 0

    second = run_nightly(night, url)  # nothing changed: nothing is built
    assert second.entries[0].action == "unchanged" and second.entries[0].build.id == e.build.id

    third = run_nightly(night, url, rebuild_all=True)  # built again: every candidate from the cache
    t = third.entries[0]
    assert t.action == "built" and (t.cached, t.measured) == (1, 0)
    assert t.previous.id == e.build.id and not t.comparison.regressed

    weights = tmp_path / "model" / "model.safetensors"  # a new release: the same model, perturbed
    tensors = load_file(weights)
    tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"] * 50
    save_file(tensors, weights, metadata={"format": "pt"})
    r = CliRunner().invoke(app, ["nightly", str(night), "--history-url", url])
    assert r.exit_code == 5, r.output  # a regression beyond tolerance
    assert "new release: model" in r.output
    report = (tmp_path / "out" / "reports" / "latest.md").read_text()
    assert "**1 regression(s)**" in report and f"#{t.build.id} -> #{t.build.id + 1}" in report
    line = next(x for x in report.splitlines() if x.startswith("| baseline | perplexity |"))
    assert "paired over" in line and "**REGRESSION**" in line
    page = (tmp_path / "out" / "reports" / "latest.html").read_text()
    assert page.count("<svg") == 3 and "REGRESSION tonight" in page  # tok/s, perplexity, size across 3 releases
    assert page.count('class="pt"') == 9 and "<script" not in page
    newest = HistoryStore.open(url).builds(limit=1)[0]  # keep_artifacts: 1 -> only the newest MET build's copy
    kept = [p.name for p in (tmp_path / "out" / "tiny" / "recipe.artifacts").iterdir()]
    assert kept == ([f"build-{newest.id:06d}"] if newest.status == "MET" else [f"build-{t.build.id:06d}"])
    assert e.build.status == "MET" and (tmp_path / "out" / "tiny" / "recipe" / "artifact").is_dir()


def test_every_problem_of_the_config_and_its_recipes_at_once(tmp_path, tiny_model_dir):
    write(tmp_path / "bad-recipe.yaml", tiny_recipe_text(tiny_model_dir, tmp_path / "o", goals="{max_sise_gb: 1}"))
    cfg = write(
        tmp_path / "n.yaml",
        f"""tolerence: {{}}
sources:
  - name: a
    model: {{source: ./no-such-dir}}
    recipes: [r.yaml]
  - name: b
    model: {{source: {tiny_model_dir}}}
    recipes: [missing.yaml, bad-recipe.yaml]
""",
    )
    with pytest.raises(InvalidInputError) as err:
        load_nightly(cfg)
    text = str(err.value)
    assert f"{cfg}:1: tolerence: unknown field; did you mean 'tolerance'?" in text
    with pytest.raises(InvalidInputError) as err:
        load_nightly(write(tmp_path / "n2.yaml", "\n".join(open(cfg).read().splitlines()[1:])))
    rendered = [p.render() for p in err.value.problems]
    assert any(r.startswith(f"{tmp_path / 'n2.yaml'}:3: sources[0].model.source") for r in rendered), rendered
    assert any(r.startswith(f"{tmp_path / 'n2.yaml'}:7: sources[1].recipes[0]") for r in rendered), rendered
    assert any("bad-recipe.yaml" in r and "max_sise_gb" in r for r in rendered), rendered
