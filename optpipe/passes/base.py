"""What a pass is: a frozen params model, requirements checked at plan time, and `apply`.

A pass lives in one module (or one folder, for big ones) of this package; defining a `Pass`
subclass registers it. The recipe's pass list is a discriminated union over every registered
`Params` model (field `pass`), so every field of every pass is validated up front and appears in the
JSON Schema. `apply(candidate, params, ctx)` gets everything it may need from the build in a
`PassContext`; `run_pass` is the one boundary that turns a pass's failures into `PassFailed`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from optpipe.errors import PassFailed
from optpipe.passes import grid as grid_search

if TYPE_CHECKING:
    from optpipe.forecast.candidates import CandidateSpec
    from optpipe.runtime.candidate import Candidate
    from optpipe.spec.host import HostEnv
    from optpipe.spec.model_source import ResolvedModel
    from optpipe.spec.settings import AccuracyBudget, EvaluationSettings
    from optpipe.spec.targets import Target

_REGISTRY: dict[str, type["Pass"]] = {}

# Errors that mean optpipe itself is wrong: they are never recorded as a "failed candidate".
PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    TypeError,
    AttributeError,
    NameError,
    ImportError,
    AssertionError,
    KeyError,
    IndexError,
    SyntaxError,
)


@dataclass(frozen=True)
class PassContext:
    """What the build tells a pass: where it runs, for which target, how the result will be
    evaluated (calibration must stay disjoint from the evaluation text), and a scratch directory."""

    target: "Target"
    host: "HostEnv"
    device: str
    evaluation: "EvaluationSettings"
    work_dir: Path
    parent_dir: Path | None = None  # the candidate handed to apply, as saved (a pass may read it from disk)
    model: "ResolvedModel | None" = None  # the recipe's model source (distill's default teacher: the baseline)
    # State a long pass keeps to resume after a kill (distill's checkpoints). Not work/: that is
    # cleared when a build starts and ends; this lives in the output directory's .cache until the
    # pass finishes with it.
    resume_dir: Path | None = None
    budget: "AccuracyBudget | None" = None  # the recipe's accuracy budget (mixed precision derives its KL limit)


class PassParams(BaseModel):
    """Fields every pass accepts. Subclasses add `kind: Literal["<name>"]` and their own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    on_unsupported: Literal["fail", "skip"] = Field(
        "fail",
        description="What to do when the pass cannot run on this target/host: fail the build "
        "before any expensive work, or skip it (the reason goes into the report).",
    )
    grid: dict[str, list[Any]] | None = Field(
        None,
        description="Parameter search: field -> values to try; every combination is a candidate, tried smallest "
        "predicted size first. Writing a list for a single-valued field (group_size: [32, 64]) means the same.",
    )

    @model_validator(mode="before")
    @classmethod
    def _lists_to_grid(cls, data: Any) -> Any:
        return grid_search.lists_to_grid(cls, data)

    @model_validator(mode="after")
    def _grid_valid(self) -> "PassParams":
        grid_search.check_grid(self)
        return self

    def chain_params(self) -> dict[str, Any]:
        """Params that define the result (used for cache keys and the manifest; a grid point's own
        values, never the grid)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"on_unsupported", "grid"})


class Pass:
    """Base class; subclasses set `name`, `Params`, `summary`, `requires` and implement `apply`."""

    name: ClassVar[str]
    Params: ClassVar[type[PassParams]]
    summary: ClassVar[str]
    requires: ClassVar[str] = "nothing beyond the core install"
    version: ClassVar[int] = 1  # bump when the pass changes its output (invalidates caches)
    variant_label: ClassVar[str | None] = None  # set when the params' `methods` are alternatives

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
            raise TypeError(f"pass name {cls.name!r} registered twice")
        _REGISTRY[cls.name] = cls

    @classmethod
    def requirements(cls, params: PassParams, target: "Target", env: "HostEnv") -> list[str]:
        """Reasons this pass cannot run here; empty when it can. Must be cheap."""
        return []

    @classmethod
    def model_requirements(cls, params: PassParams, model: "ResolvedModel") -> list[str]:
        """Reasons this pass cannot run on the recipe's model (e.g. an architecture it does not know),
        checked at plan time beside `requirements`; empty when it can. Must be cheap."""
        return []

    @classmethod
    def variants(cls, params: PassParams) -> list[tuple[str, PassParams]]:
        """Alternatives tried in order, each a candidate of its own built from the same parent
        (e.g. quantization methods: one per entry of `methods`; and one per grid point, passes/grid.py).
        Most passes have one: themselves."""
        out: list[tuple[str, PassParams]] = []
        for point, p in grid_search.expand(params):
            suffix = grid_search.label_suffix(point)
            methods = getattr(p, "methods", None)
            if cls.variant_label and methods:
                out += [(f"{cls.variant_label}:{m}{suffix}", p.model_copy(update={"methods": [m]})) for m in methods]
            else:
                out.append((cls.name + suffix, p))
        return out

    @classmethod
    def resolve(cls, params: PassParams, ctx: PassContext) -> PassParams:
        """`params` with the defaults this pass derives from the build (mixed precision's KL limit from
        the budget) filled in. The build calls it before the cache key is made, so a different budget is
        a different key and the chain shows the value used. Most passes derive nothing."""
        return params

    @classmethod
    def apply(cls, candidate: "Candidate", params: PassParams, ctx: PassContext) -> "Candidate":
        raise NotImplementedError

    @classmethod
    def weights_after(cls, params: PassParams, parent: "CandidateSpec") -> "CandidateSpec | None":
        """The weight format this pass (one variant of it) leaves, for `optpipe plan`'s forecast before
        anything is loaded; None when it cannot be forecast. Most passes leave the weights as they are."""
        return parent


@contextmanager
def failures_as_pass_failed(what: str = "") -> Iterator[None]:
    """Whatever stops a pass from producing its candidate (a library refusing, a model it does not
    suit, out of memory, a checkpoint that cannot be written) becomes PassFailed; programming errors
    propagate unchanged."""
    try:
        yield
    except (PassFailed, *PROGRAMMING_ERRORS):
        raise
    except Exception as exc:
        raise PassFailed(f"{what}{type(exc).__name__}: {exc}") from exc


def run_pass(pass_cls: type[Pass], candidate: "Candidate", params: PassParams, ctx: PassContext) -> "Candidate":
    """Apply a pass; its failures become PassFailed (see `failures_as_pass_failed`)."""
    with failures_as_pass_failed():
        return pass_cls.apply(candidate, params, ctx)


def registered() -> dict[str, type[Pass]]:
    return _REGISTRY
