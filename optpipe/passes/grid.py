"""Parameter search: a pass given several values for a field tries every combination.

A recipe writes `group_size: [32, 64, 128]` (or `grid: {group_size: [32, 64, 128]}`) on a pass;
`PassParams` moves such lists into `grid` before validation, checks every value against the pass's
own params model (so a bad value is reported with the field and the value, before anything runs),
and `Pass.variants` expands the grid into one candidate per combination. The build orders them
smallest predicted size first (build/search.py).
"""

from __future__ import annotations

import itertools
from typing import Any, get_origin

from pydantic import BaseModel, ValidationError

MAX_GRID_POINTS = 256
NOT_SEARCHABLE = {"kind", "grid", "on_unsupported"}


def is_list_field(model: type[BaseModel], name: str) -> bool:
    ann = model.model_fields[name].annotation
    return get_origin(ann) is list or ann is list


def lists_to_grid(model: type[BaseModel], data: Any) -> Any:
    """`field: [a, b]` for a single-valued field means 'try each': move it into `grid`."""
    if not isinstance(data, dict):
        return data
    grid = dict(data.get("grid") or {})
    moved = {}
    for name in model.model_fields:
        if name in NOT_SEARCHABLE or is_list_field(model, name):
            continue
        if isinstance(data.get(name), list):
            moved[name] = data[name]
    if not moved:
        return data
    clash = sorted(set(moved) & set(grid))
    if clash:
        raise ValueError(f"{clash[0]} is given both as a list and under grid; give it once")
    for name, values in moved.items():
        if not values:
            raise ValueError(f"grid.{name}: give a non-empty list of values, e.g. {name}: [a, b]")
    # the field itself holds the first value, so required fields stay given (variants use the grid points)
    return data | {name: values[0] for name, values in moved.items()} | {"grid": grid | moved}


def check_grid(params: BaseModel) -> None:
    """Every grid value valid for its field, and the grid small enough to run; ValueError naming both."""
    grid = getattr(params, "grid", None)
    if not grid:
        return
    model = type(params)
    fields = [n for n in model.model_fields if n not in NOT_SEARCHABLE and not is_list_field(model, n)]
    for name, values in grid.items():
        if name not in model.model_fields or name in NOT_SEARCHABLE or is_list_field(model, name):
            raise ValueError(f"grid.{name}: not a field this pass can search; searchable: {', '.join(fields)}")
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid.{name}: give a non-empty list of values, e.g. {name}: [a, b]")
        if len({repr(v) for v in values}) != len(values):
            raise ValueError(f"grid.{name}: {values} repeats a value; each value once")
    size = 1
    for values in grid.values():
        size *= len(values)
    if size > MAX_GRID_POINTS:
        raise ValueError(f"grid has {size} combinations (more than {MAX_GRID_POINTS}); search fewer values")
    for point in points(grid):
        try:
            at(params, point)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(x) for x in err["loc"])
            raise ValueError(
                f"grid point {', '.join(f'{k}={v!r}' for k, v in point.items())}: {where + ': ' if where else ''}"
                f"{err['msg'].removeprefix('Value error, ')}"
            ) from None


def points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, in the order written (the first field varies slowest)."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def at(params: BaseModel, point: dict[str, Any]) -> BaseModel:
    """The params at one grid point, validated like a recipe entry (cross-field rules included)."""
    data = params.model_dump(by_alias=True, exclude={"grid"}) | point
    return type(params).model_validate(data)


def label_suffix(point: dict[str, Any]) -> str:
    """The label suffix of a grid point: parentheses, since rich (the CLI tables) reads [..] as markup."""
    parts = []
    for k, v in point.items():  # a sub-model's values by their own names: mixed_precision.max_kl=0.01
        parts += [f"{k}.{kk}={vv}" for kk, vv in v.items()] if isinstance(v, dict) else [f"{k}={v}"]
    return "(" + ",".join(parts) + ")" if point else ""


def expand(params: BaseModel) -> list[tuple[dict[str, Any], BaseModel]]:
    """(point, params at that point) for every combination; one entry (no point) without a grid."""
    grid = getattr(params, "grid", None)
    if not grid:
        return [({}, params)]
    return [(p, at(params, p)) for p in points(grid)]
