"""The build's search: smallest predicted size first, bounded by the search budget."""

import pytest

from optpipe.build.engine import build
from optpipe.build.recipe import parse_recipe
from optpipe.build.search import budget_spent, smallest_first
from optpipe.forecast import CandidateForecast
from optpipe.forecast.memory import MemoryForecast
from optpipe.judge.budget import Verdict
from optpipe.spec.settings import SearchSettings
from tests.conftest import tiny_recipe_text


def _fc(name: str, stored: int | None) -> CandidateForecast:
    mem = None
    if stored is not None:
        mem = MemoryForecast(
            format_name="x", weight_bytes=stored, stored_weight_bytes=stored, kv_cache_bytes=0, activation_bytes=0,
            runtime_overhead_bytes=0, peak_bytes=stored,
        )  # fmt: skip
    return CandidateForecast(name=name, format_name="x", memory=mem, roofline_tok_s=None, fits=True, reason="")


def test_smallest_first_keeps_ties_and_unknowns_in_recipe_order():
    variants = [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]
    fc = {"a": _fc("a", 300), "b": _fc("b", 100), "c": _fc("c", None), "d": _fc("d", 100)}
    assert [v for v, _ in smallest_first(variants, fc)] == ["b", "d", "a", "c", "e"]


def test_budget_spent():
    assert budget_spent(SearchSettings(), 100, 1e6) == ""
    assert "max_candidates 2" in budget_spent(SearchSettings(max_candidates=2), 2, 0)
    assert budget_spent(SearchSettings(max_candidates=2), 1, 0) == ""
    assert "max_minutes 5" in budget_spent(SearchSettings(max_minutes=5), 0, 5.5)


@pytest.mark.slow  # tens of seconds of tiny builds: CI runs it in its second, slow step
def test_grid_build_tries_the_smallest_first_and_stops_at_the_search_budget(tiny_model_dir, tmp_path):
    text = tiny_recipe_text(
        tiny_model_dir,
        tmp_path / "out",
        "  - pass: precision_cast\n    dtype: [fp32, bf16]\n  - pass: attention\n    implementation: eager\n",
        budget="{hellaswag_max_drop_points: 100, perplexity_max_rise_pct: 100}",
        search="{max_candidates: 1}",
        stop="best",
        objective="size_gb",
    )
    res = build(parse_recipe(text))
    assert [(c.name, c.status) for c in res.candidates] == [
        ("baseline", "measured"),
        ("precision_cast(dtype=bf16)", "measured"),  # half the bytes of fp32: tried first
        ("precision_cast(dtype=fp32)", "not run"),
        ("attention", "not run"),
    ]
    assert res.candidates[2].reason == "search budget spent: max_candidates 1 built"
    assert res.status == Verdict.MET and res.selected.name == "precision_cast(dtype=bf16)"
    assert res.candidates[1].chain[0]["dtype"] == "bf16" and "grid" not in res.candidates[1].chain[0]
