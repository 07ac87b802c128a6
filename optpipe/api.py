"""optpipe's public Python API: everything the CLI (and a user's script) calls. Every YAML recipe has
a few-line Python equivalent:

    from optpipe.api import Recipe, build
    result = build(Recipe.load("recipes/cpu.yaml"), "recipes/cpu.yaml")
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from optpipe.build.cache import optpipe_cache_root
from optpipe.build.engine import Build, BuildResult
from optpipe.build.engine import Progress as _Progress
from optpipe.build.forecasting import forecast_recipe
from optpipe.build.plan import CheckedInputs, Plan, check_inputs, host_target, plan, validate
from optpipe.build.recipe import Recipe, load_recipe, parse_recipe, recipe_schema
from optpipe.errors import InvalidInputError, Problem
from optpipe.forecast import CandidateForecast, ModelShape, render_table
from optpipe.history import (
    Comparison,
    HistoryError,
    HistoryStore,
    Recorded,
    Tolerance,
    build_and_record,
    compare,
    history_enabled,
    read_build_manifest,
    record_output_dir,
    side_from_manifest,
    side_from_row,
)
from optpipe.history import markdown as comparison_markdown
from optpipe.history.schema import BuildRow
from optpipe.measure.calibration import HostCalibration, calibrate_host, calibration_file
from optpipe.measure.job import measure_job
from optpipe.measure.launcher import run_isolated
from optpipe.measure.results import Measurements
from optpipe.nightly import NightlyResult, load_nightly, run_nightly
from optpipe.output.directory import check_output_dir, read_manifest
from optpipe.output.report import COLUMNS, row
from optpipe.passes import registry as pass_registry
from optpipe.passes.onnx_export.environment import create_export_environment
from optpipe.runtime import check_saved_model
from optpipe.runtime import load_candidate as load
from optpipe.spec.settings import BenchmarkSettings, EvaluationSettings
from optpipe.spec.targets import Target, list_targets, load_target


def _quiet(event: str, payload: object) -> None:
    pass


def run_build(
    p: Plan, progress: _Progress = _quiet, keep_candidates: bool = False, history_url: str | None = None
) -> BuildResult:
    """Run a planned build and record it in the history (also when it ends interrupted or failed);
    a history database that cannot be used is a note, never a lost build."""
    return build_and_record(p, progress, keep_candidates, history_url)[0]


def build(
    recipe: Recipe,
    recipe_file: str | Path = "<recipe>",
    progress: _Progress = _quiet,
    keep_candidates: bool = False,
    history_url: str | None = None,
) -> BuildResult:
    """`optpipe.api.build(Recipe.load(path), path)`: plan, build, record in the history."""
    return run_build(plan(recipe, recipe_file), progress, keep_candidates, history_url)


def list_builds(
    model: str | None = None,
    recipe: str | None = None,
    target: str | None = None,
    limit: int | None = None,
    history_url: str | None = None,
) -> list[BuildRow]:
    """Builds in the history, newest first (`optpipe history`)."""
    store = _open_history(history_url)
    try:
        return store.builds(model, recipe, target, limit)
    finally:
        store.close()


def add_to_history(output_dir: Path, history_url: str | None = None) -> Recorded:
    """Record (again) the build in `output_dir`, e.g. one whose recording failed."""
    _open_history(history_url).close()
    return record_output_dir(output_dir, history_url)


def _open_history(history_url: str | None) -> HistoryStore:
    if not history_enabled(history_url):
        raise HistoryError("the history is off (OPTPIPE_HISTORY_URL=off): give --history-url to use one")
    return HistoryStore.open(history_url)


def compare_builds(a: str, b: str, tolerance: Tolerance | None = None, history_url: str | None = None) -> Comparison:
    """Compare build B with build A; each is a history id (`12` or `#12`) or an output directory
    (its latest recorded build, or its manifest.json where the history has none)."""
    sides = []
    store: HistoryStore | None = None
    try:
        for ref in (a, b):
            key = ref.removeprefix("#")
            if key.isdigit() and not Path(ref).exists():
                store = store or _open_history(history_url)
                row = store.get(int(key))
                if row is None:
                    raise InvalidInputError(f"no build #{key} in the history {store.url.split('://')[0]} database")
                sides.append(side_from_row(row))
                continue
            path = Path(ref)
            if not path.is_dir():
                raise InvalidInputError(f"{ref}: neither a build id of the history nor an output directory")
            row = None
            if history_enabled(history_url):
                store = store or HistoryStore.open(history_url)
                row = store.latest_in(path)
            sides.append(side_from_row(row) if row is not None else side_from_manifest(str(path), read_build_manifest(path)))
    finally:
        if store is not None:
            store.close()
    return compare(sides[0], sides[1], tolerance)


def measure_directory(
    directory: Path,
    device: str,
    benchmark: BenchmarkSettings | None,
    evaluation: EvaluationSettings,
    on_progress: Callable[[str], None] | None = None,
) -> Measurements:
    """Benchmark and/or evaluate a saved model directory (e.g. an artifact) in a fresh process, with
    its runtime settings, exactly as a build measures its candidates."""
    check_saved_model(directory)  # a missing weight file or damaged runtime file is named here, not in a lost log
    job = measure_job(directory, device, evaluation, benchmark)
    tmp = Path(tempfile.mkdtemp(prefix="optpipe-measure-"))
    result = run_isolated(job, tmp / "job", tmp / "log.txt", on_progress=on_progress)  # on failure its log stays
    shutil.rmtree(tmp, ignore_errors=True)  # the error message names the log, so it is kept only then
    return result


@dataclass
class PlanForecast:
    """`optpipe plan`: the forecast of every candidate, and why `build` could not run here (if so)."""

    shape: ModelShape
    target: Target
    candidates: list[CandidateForecast]
    build_problems: list[Problem] = field(default_factory=list)


def forecast(recipe: Recipe, recipe_file: str | Path = "<recipe>") -> PlanForecast:
    """Predict every candidate's memory and roofline speed on the target from the model's config and
    weight-file headers (no weights are read), then check whether this host could build it."""
    recipe_file = str(recipe_file)
    model = validate(recipe, recipe_file).model
    assert model is not None  # validate raised otherwise
    target = load_target(recipe.target)
    shape, rows = forecast_recipe(recipe, model, target, recipe_file)
    problems: list[Problem] = []
    try:
        plan(recipe, recipe_file)
    except InvalidInputError as exc:
        problems = exc.problems
    return PlanForecast(shape, target, rows, problems)


def calibrate(
    spec_bandwidth_gbs: float | None = None, shapes: list[str] | None = None, say: Callable[[str], None] = print
) -> tuple[Path, HostCalibration]:
    """Calibrate this GPU's two-term decode-step model (a few minutes) and store it where builds on
    this host find it; projections to other targets then carry an interval."""
    from optpipe.measure.calibration import SHAPES
    from optpipe.runtime.host_probe import detect_host

    unknown = sorted(set(shapes or ()) - set(SHAPES))
    if unknown:
        raise InvalidInputError(f"--shapes: unknown {', '.join(unknown)}; known: {', '.join(SHAPES)}")
    if shapes is not None and len(set(shapes)) < 2:
        raise InvalidInputError("--shapes: the two-term fit needs at least 2 different shapes")
    if spec_bandwidth_gbs is not None and spec_bandwidth_gbs <= 0:
        raise InvalidInputError(f"--spec-bandwidth-gbs: must be > 0 GB/s (got {spec_bandwidth_gbs:g})")
    env = detect_host()
    if not env.has_cuda or not env.gpu_name:
        raise InvalidInputError("optpipe calibrate needs a CUDA GPU (it measures this host's decode step)")
    if spec_bandwidth_gbs is None:
        own = host_target(env)
        if own is None:
            raise InvalidInputError(
                f"{env.gpu_name} is not in the target catalogue: pass --spec-bandwidth-gbs "
                "(the vendor's memory bandwidth of this GPU)"
            )
        spec_bandwidth_gbs = own.memory_bandwidth_gbs
    path = calibration_file(optpipe_cache_root(), env.gpu_name, env.packages.get("torch") or "?")
    return path, calibrate_host(spec_bandwidth_gbs, path, shapes, say=say)


__all__ = [
    "BuildRow",
    "Comparison",
    "HistoryError",
    "NightlyResult",
    "Recorded",
    "Tolerance",
    "add_to_history",
    "compare_builds",
    "comparison_markdown",
    "list_builds",
    "load_nightly",
    "run_build",
    "run_nightly",
    "CheckedInputs",
    "check_inputs",
    "validate",
    "HostCalibration",
    "calibrate",
    "check_output_dir",
    "read_manifest",
    "PlanForecast",
    "forecast",
    "render_table",
    "COLUMNS",
    "BenchmarkSettings",
    "Build",
    "BuildResult",
    "EvaluationSettings",
    "Measurements",
    "Plan",
    "Recipe",
    "Target",
    "build",
    "create_export_environment",
    "list_targets",
    "load",
    "load_recipe",
    "load_target",
    "measure_directory",
    "parse_recipe",
    "pass_registry",
    "plan",
    "recipe_schema",
    "row",
]
