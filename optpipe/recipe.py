"""The recipe: what to optimize, for which target, within which budget, by which passes.

Validated by pydantic (unknown fields are errors). `load_recipe` turns every validation error into
a `Problem` that names the file, line, field, bad value and what is allowed, all at once.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from optpipe.errors import MISSING, InvalidInputError, Problem
from optpipe.passes import registry

SCHEMA_VERSION = 1
BUNDLED_MODELS = ("smollm2-135m",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """Where the model comes from."""

    source: str = Field(
        description="'smollm2-135m' (bundled), a local transformers directory, a .gguf file, "
        "or a hub id such as 'meta-llama/Llama-3.1-8B-Instruct' (needs hub access)."
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside `source` when it is a directory.")
    revision: str | None = Field(None, description="Hub revision (hub ids only).")
    trust_remote_code: bool = False


class AccuracyBudget(_Strict):
    """Allowed accuracy loss relative to the baseline measured in the same build."""

    hellaswag_max_drop_points: float | None = Field(
        1.0, ge=0, description="Max drop of HellaSwag acc_norm, in percentage points."
    )
    perplexity_max_rise_pct: float | None = Field(
        3.0, ge=0, description="Max rise of WikiText-2 perplexity, in percent."
    )
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Two-sided confidence level of verdict intervals.")


class Goals(_Strict):
    """Speed and memory goals; any left out is not checked."""

    max_memory_gb: float | None = Field(None, gt=0, description="Peak memory (GPU: device memory; CPU: peak RSS).")
    min_decode_tok_s: float | None = Field(None, gt=0, description="Decode tokens/second at batch 1.")
    max_p95_token_latency_ms: float | None = Field(None, gt=0, description="95th percentile per-token latency.")
    max_size_gb: float | None = Field(None, gt=0, description="Weights on disk.")


class EvaluationSettings(_Strict):
    hellaswag_items: int = Field(300, ge=0, le=10042, description="HellaSwag validation items (0 = skip; 10042 = all).")
    perplexity_tokens: int = Field(8192, ge=0, description="WikiText-2 test tokens scored (0 = skip).")
    perplexity_window: int = Field(512, ge=16)
    perplexity_stride: int = Field(256, ge=1)
    kl_tokens: int = Field(1024, ge=0, description="Positions (the first ones perplexity scores) on which each "
                           "candidate's KL divergence from the baseline is measured (0 = skip). The baseline "
                           "keeps n x vocab float32 log-probs on disk for it.")
    batch_size: int = Field(8, ge=1)
    seed: int = Field(1234, description="Seed of the HellaSwag subset; fixed so builds compare night to night.")

    @field_validator("perplexity_stride")
    @classmethod
    def _stride_le_window(cls, v: int, info) -> int:
        window = info.data.get("perplexity_window")
        if window is not None and v > window:
            raise ValueError(f"must be <= perplexity_window ({window})")
        return v


class BenchmarkSettings(_Strict):
    prompt_tokens: int = Field(128, ge=1)
    new_tokens: int = Field(64, ge=2)
    batch_size: int = Field(1, ge=1)
    warmup: int = Field(1, ge=0)
    min_trials: int = Field(3, ge=2)
    max_trials: int = Field(10, ge=2)
    target_cv: float = Field(0.05, gt=0, description="Stop repeating once decode tok/s varies less than this.")


def _pass_union():
    params = tuple(p.Params for p in registry().values())
    return Annotated[Union[params], Field(discriminator="kind")]  # type: ignore[valid-type]


PassSpec = _pass_union()


class Recipe(_Strict):
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
    stop: Literal["first", "best"] = Field("first", description="first: stop at the first candidate that meets every budget.")
    objective: Literal["decode_tok_s", "size_gb", "memory_gb"] = Field(
        "decode_tok_s", description="With stop: best, how to rank the candidates that meet the budget."
    )
    output_dir: str = Field("optpipe-out/{recipe}", description="Where the artifact and report go ({recipe} = file stem).")

    @field_validator("target")
    @classmethod
    def _known_target(cls, v: str) -> str:
        from optpipe.targets import list_targets

        known = list_targets()
        if v not in known:
            hint = difflib.get_close_matches(v, known, n=1)
            msg = f"unknown target; known: {', '.join(known)}"
            raise ValueError(msg + (f". Did you mean '{hint[0]}'?" if hint else ""))
        return v

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        return load_recipe(path)

    def content_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- YAML with line numbers


class _LineLoader(yaml.SafeLoader):
    pass


def _compose(text: str, filename: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InvalidInputError(
            [Problem(filename, mark.line + 1 if mark else None, "<yaml>", MISSING, f"not valid YAML: {exc}")]
        ) from None


def _locate(node: yaml.Node | None, loc: tuple) -> int | None:
    """Line (1-based) of the YAML node at a pydantic error location, or of its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == key:
                    node = v
                    line = k.start_mark.line + 1
                    break
            else:
                continue  # a union tag or a missing key: stay at the parent
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
    return line


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


def _problem_from_error(err: dict, root: yaml.Node | None, filename: str) -> Problem:
    pass_tags = set(registry())
    loc = tuple(err["loc"])
    line = _locate(root, loc)
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
        message = f"unknown pass {tag!r}" + (f"; did you mean '{hint[0]}'?" if hint else "") + f". Known passes: {', '.join(sorted(pass_tags))}"
        value = MISSING
    elif etype == "union_tag_not_found":
        message = f"each pass needs a 'pass' key naming one of: {', '.join(sorted(pass_tags))}"
    elif etype == "literal_error":
        message = f"not allowed; expected {err.get('ctx', {}).get('expected', message)}"
    if isinstance(value, dict):
        value = MISSING  # a whole mapping is noise in a one-line message
    return Problem(filename, line, _field_path(loc, pass_tags), value, message)


def _allowed_fields(parent_loc: tuple, root: yaml.Node | None) -> list[str]:
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
    root = _compose(text, filename)
    data = yaml.load(text, Loader=_LineLoader) if root is not None else None
    if not isinstance(data, dict):
        raise InvalidInputError([Problem(filename, 1, "<root>", MISSING, "a recipe is a YAML mapping with at least 'model' and 'target'")])
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = [_problem_from_error(e, root, filename) for e in exc.errors(include_url=False)]
        raise InvalidInputError(problems) from None


def field_line(recipe_file: str | Path, field: str) -> int | None:
    """Line of a field such as 'goals.max_memory_gb' or 'passes[1]' in a recipe file, if findable."""
    import re

    try:
        root = _compose(Path(recipe_file).read_text(), str(recipe_file))
    except (OSError, InvalidInputError):
        return None
    loc: list = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", field.split(" ")[0]):
        loc.append(int(part[1:-1]) if part.startswith("[") else part)
    return _locate(root, tuple(loc))


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError([Problem(str(path), None, "<file>", MISSING, "recipe file not found")])
    return parse_recipe(path.read_text(), str(path))


def recipe_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "optpipe recipe"
    return schema
