"""The recipe: what to optimize, for which target, within which budget, by which passes.

It composes the vocabulary of `optpipe.spec` with the pass registry's params (a discriminated union
over every registered pass), which is why it lives in `build/`, above `passes/`, and not in `spec/`.
Validated by pydantic (unknown fields are errors). `load_recipe` turns every validation error into
a `Problem` that names the file, line, field, bad value and what is allowed, all at once.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import string
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, ValidationError, field_validator

from optpipe.errors import MISSING, InvalidInputError, Problem
from optpipe.passes import registry
from optpipe.spec import yaml_diagnostics
from optpipe.spec.settings import (
    AccuracyBudget,
    BenchmarkSettings,
    EvaluationSettings,
    Goals,
    ModelSpec,
    SearchSettings,
    Strict,
)

SCHEMA_VERSION = 1
DEFAULT_OUTPUT_DIR = "optpipe-out/{recipe}"


def output_dir_template_problem(template: str) -> None:
    """Raise ValueError unless `{recipe}` is the template's only placeholder (str.format would
    otherwise fail, or fill `{0}`/`{name}` with nothing sensible, only when the build starts)."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"{exc}: the only placeholder is {{recipe}}; write {{{{ and }}}} for a literal brace") from None
    for name, spec, conv in fields:
        if name != "recipe" or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(
                f"unknown placeholder {shown}: the only placeholder is {{recipe}} (the recipe file's stem); "
                "write {{ and }} for a literal brace"
            )


def _pass_union():
    params = tuple(p.Params for p in registry().values())
    return Annotated[Union[params], Field(discriminator="kind")]  # noqa: UP007  (a union built at run time)


PassSpec = _pass_union()


class Recipe(Strict):
    """A whole optimization recipe. `Recipe.load(path)` reads and validates YAML."""

    model: ModelSpec
    target: str = Field(description="A target name from `optpipe targets`.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to build and measure: auto = cuda for GPU targets, cpu otherwise."
    )
    budget: AccuracyBudget = AccuracyBudget()
    goals: Goals = Goals()
    evaluation: EvaluationSettings = EvaluationSettings()
    benchmark: BenchmarkSettings = BenchmarkSettings()
    passes: list[PassSpec] = Field(default_factory=list)  # type: ignore[valid-type]
    search: SearchSettings = SearchSettings()
    stop: Literal["first", "best"] = Field("first", description="first: stop at the first candidate that meets every budget.")
    objective: Literal["decode_tok_s", "size_gb", "memory_gb"] = Field(
        "decode_tok_s", description="With stop: best, how to rank the candidates that meet the budget."
    )
    output_dir: str = Field(
        DEFAULT_OUTPUT_DIR,
        description="Where the artifact and report go; {recipe} = the recipe file's stem, {{ and }} = literal braces. "
        "A relative path resolves against the recipe file's directory (the default: against the working directory).",
    )

    @field_validator("target")
    @classmethod
    def _known_target(cls, v: str) -> str:
        from optpipe.spec.targets import list_targets

        known = list_targets()
        if v not in known:
            hint = difflib.get_close_matches(v, known, n=1)
            msg = f"unknown target; known: {', '.join(known)}"
            raise ValueError(msg + (f". Did you mean '{hint[0]}'?" if hint else ""))
        return v

    @field_validator("output_dir")
    @classmethod
    def _only_recipe_placeholder(cls, v: str) -> str:
        output_dir_template_problem(v)
        return v

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        return load_recipe(path)

    def content_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _field_path(loc: tuple, pass_tags: set[str]) -> str:
    parts: list[str] = []
    for i, key in enumerate(loc):
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif key in pass_tags and i > 0 and isinstance(loc[i - 1], int):
            continue  # discriminator tag that pydantic inserts into the location
        else:
            parts.append(("." if parts else "") + str(key))
    return "".join(parts) or "<root>"


def _problem_from_error(err: dict, root: object, filename: str) -> Problem:
    pass_tags = set(registry())
    loc = tuple(err["loc"])
    line = yaml_diagnostics.locate(root, loc)
    value = err.get("input", MISSING)
    if err["type"] == "missing":
        value = MISSING
    message = err["msg"].removeprefix("Value error, ")
    etype = err["type"]
    if etype == "extra_forbidden":
        parent = loc[:-1]
        allowed = _allowed_fields(parent, root)
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        message = "unknown field" + (f"; did you mean '{hint[0]}'?" if hint else "")
        if allowed:
            message += f" Allowed: {', '.join(allowed)}"
    elif etype == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag", value)
        hint = difflib.get_close_matches(str(tag), sorted(pass_tags), n=1)
        message = (
            f"unknown pass {tag!r}"
            + (f"; did you mean '{hint[0]}'?" if hint else "")
            + f". Known passes: {', '.join(sorted(pass_tags))}"
        )
        value = MISSING
    elif etype == "union_tag_not_found":
        message = f"each pass needs a 'pass' key naming one of: {', '.join(sorted(pass_tags))}"
    elif etype == "literal_error":
        message = f"not allowed; expected {err.get('ctx', {}).get('expected', message)}"
    if isinstance(value, dict):
        value = MISSING  # a whole mapping is noise in a one-line message
    return Problem(filename, line, _field_path(loc, pass_tags), value, message)


def _allowed_fields(parent_loc: tuple, root: object) -> list[str]:
    """Field names allowed at a location, for did-you-mean on typos."""
    model: Any = Recipe
    pass_tags = registry()
    for key in parent_loc:
        if isinstance(key, int):
            continue
        if key in pass_tags:
            model = pass_tags[key].Params
            continue
        field = getattr(model, "model_fields", {}).get(key)
        if field is None:
            return []
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if key == "passes":
            model = None
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def parse_recipe(text: str, filename: str = "<recipe>") -> Recipe:
    root = yaml_diagnostics.compose(text, filename)
    data = yaml_diagnostics.load(text, filename) if root is not None else None
    if not isinstance(data, dict):
        raise InvalidInputError(
            [Problem(filename, 1, "<root>", MISSING, "a recipe is a YAML mapping with at least 'model' and 'target'")]
        )
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = [_problem_from_error(e, root, filename) for e in exc.errors(include_url=False)]
        raise InvalidInputError(problems) from None


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError([Problem(str(path), None, "<file>", MISSING, "recipe file not found")]) from None
    except OSError as exc:
        raise InvalidInputError(
            [Problem(str(path), None, "<file>", MISSING, f"cannot read the recipe: {exc.strerror or exc}")]
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInputError(
            [
                Problem(
                    str(path),
                    line,
                    "<file>",
                    MISSING,
                    f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}; save the recipe as UTF-8",
                )
            ]
        ) from None
    return parse_recipe(text, str(path))


def recipe_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "optpipe recipe"
    return schema
