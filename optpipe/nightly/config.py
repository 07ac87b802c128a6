"""The nightly configuration: which model sources to watch and which recipes to build for each.

Validated like a recipe: pydantic with unknown fields refused, and every problem at once with
file:line -- those of the configuration, of each model source, and of each recipe it names.

    history_url: postgresql+psycopg://ci@db/optpipe   # optional; default $OPTPIPE_HISTORY_URL / SQLite
    output_root: nightly-out                            # builds go to <output_root>/<source>/<recipe>
    tolerance: {speed_drop_pct: 5, hellaswag_drop_points: 1}
    sources:
      - name: smollm2
        model: {source: smollm2-135m}
        recipes: [recipes/cpu.yaml]
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from optpipe.build.plan import check_inputs
from optpipe.build.recipe import Recipe, load_recipe
from optpipe.errors import MISSING, InvalidInputError, Problem
from optpipe.history.compare import Tolerance
from optpipe.spec import yaml_diagnostics
from optpipe.spec.model_source import ResolvedModel, resolve_model
from optpipe.spec.settings import ModelSpec, Strict


class NightlySource(Strict):
    """One model to watch (a local directory, a GGUF file, a hub id) and the recipes built from it."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Short name; the output folder.")
    model: ModelSpec
    recipes: list[str] = Field(min_length=1, description="Recipe files (relative to this file); their model is replaced.")


class NightlyConfig(Strict):
    sources: list[NightlySource] = Field(min_length=1)
    output_root: str = Field("nightly-out", description="Builds go to <output_root>/<source>/<recipe stem>.")
    reports_dir: str | None = Field(None, description="Where nightly reports go (default <output_root>/reports).")
    history_url: str | None = Field(None, description="History database URL (default $OPTPIPE_HISTORY_URL or SQLite).")
    tolerance: Tolerance = Tolerance()
    keep_artifacts: int = Field(
        0, ge=0, description="Also keep the artifacts of the last N builds per source x recipe (0: only the output dir's)."
    )
    executor: Literal["local", "ray"] = Field(
        "local", description="local: one build after another here; ray: one Ray task per build (pip install 'optpipe[ray]')."
    )
    ray_address: str | None = Field(
        None, description="The Ray cluster to use (host:port, ray://host:port or auto); default: start a local one."
    )

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, v: list[NightlySource]) -> list[NightlySource]:
        names = [s.name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source names must be unique (they name output folders): {', '.join(dup)} repeated")
        return v


@dataclass
class Entry:
    """One build a night runs: a recipe applied to a source."""

    source: str
    model: ResolvedModel
    recipe: Recipe
    recipe_file: str
    output_dir: Path


@dataclass
class Nightly:
    config: NightlyConfig
    file: Path
    entries: list[Entry]

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.file.parent / p


def _allowed(loc: tuple) -> list[str]:
    model: type = NightlyConfig
    for key in loc:
        if isinstance(key, int):
            continue
        field = model.model_fields.get(key)  # type: ignore[attr-defined]
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        inner = args[0] if args else ann
        if not (isinstance(inner, type) and issubclass(inner, Strict)):
            return []
        model = inner
    return list(model.model_fields)  # type: ignore[attr-defined]


def _problem(err: dict, root, filename: str) -> Problem:
    loc = tuple(err["loc"])
    value = MISSING if err["type"] == "missing" or isinstance(err.get("input"), dict) else err.get("input", MISSING)
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        allowed = _allowed(loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        message = (
            "unknown field"
            + (f"; did you mean '{hint[0]}'?" if hint else "")
            + (f" Allowed: {', '.join(allowed)}" if allowed else "")
        )
    field = "".join(f"[{k}]" if isinstance(k, int) else (f".{k}" if i else str(k)) for i, k in enumerate(loc)) or "<root>"
    return Problem(filename, yaml_diagnostics.locate(root, loc), field, value, message)


def parse_config(text: str, filename: str) -> tuple[NightlyConfig, object]:
    root = yaml_diagnostics.compose(text, filename)
    data = yaml_diagnostics.load(text, filename) if root is not None else None
    if not isinstance(data, dict):
        raise InvalidInputError(
            [Problem(filename, 1, "<root>", MISSING, "a nightly configuration is a YAML mapping with 'sources'")]
        )
    try:
        return NightlyConfig.model_validate(data), root
    except ValidationError as exc:
        raise InvalidInputError([_problem(e, root, filename) for e in exc.errors(include_url=False)]) from None


def load_nightly(path: str | Path) -> Nightly:
    """Read and check the configuration, every source and every recipe; all problems at once."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError([Problem(str(path), None, "<file>", MISSING, "nightly configuration not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError([Problem(str(path), None, "<file>", MISSING, f"cannot read it: {exc}")]) from None
    config, root = parse_config(text, str(path))
    nightly = Nightly(config, path, [])
    problems: list[Problem] = []
    for i, src in enumerate(config.sources):
        line = yaml_diagnostics.locate(root, ("sources", i, "model", "source"))
        try:
            m = src.model
            model = resolve_model(m.source, m.gguf_file, m.revision, m.trust_remote_code, base_dir=path.parent, origin=str(path))
        except InvalidInputError as exc:
            problems += [replace(p, line=line, field=f"sources[{i}].model.source") for p in exc.problems]
            continue
        spec = _absolute(src.model, model)
        for j, rpath in enumerate(src.recipes):
            rfile = nightly.resolve(rpath)
            try:
                recipe = load_recipe(rfile)
            except InvalidInputError as exc:
                where = yaml_diagnostics.locate(root, ("sources", i, "recipes", j))
                if any(p.field == "<file>" for p in exc.problems):
                    problems.append(
                        Problem(str(path), where, f"sources[{i}].recipes[{j}]", rpath, "recipe file not found or unreadable")
                    )
                problems += [p for p in exc.problems if p.field != "<file>"]
                continue
            out = nightly.resolve(config.output_root) / src.name / rfile.stem
            recipe = recipe.model_copy(update={"model": spec, "output_dir": _literal(str(out.absolute()))})
            checked = check_inputs(recipe, rfile)
            problems += checked.problems
            nightly.entries.append(Entry(src.name, model, recipe, str(rfile), out.absolute()))
    if problems:
        raise InvalidInputError(problems)
    return nightly


def _absolute(spec: ModelSpec, model: ResolvedModel) -> ModelSpec:
    """The source as an absolute path, so a recipe elsewhere finds the same model."""
    if model.kind in ("bundled", "hub"):
        return spec
    if model.kind == "gguf":
        return spec.model_copy(update={"source": str(Path(model.location) / (model.gguf_file or "")), "gguf_file": None})
    return spec.model_copy(update={"source": model.location})


def _literal(path: str) -> str:
    return path.replace("{", "{{").replace("}", "}}")  # output_dir is a template: braces in a path are literal
