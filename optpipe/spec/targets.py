"""Target-device catalogue: what a deployment target is and where its numbers come from.

Each target is one YAML file, ``targets/<name>.yaml`` in a source checkout or
``optpipe/_data/targets/<name>.yaml`` in an installed wheel, validated into a frozen
:class:`Target`. Every figure in a file is backed by a vendor source listed in the file;
figures that are derived (halved from a sparse number, or computed from core counts and
clocks) say so in ``notes``.

    from optpipe.targets import load_target
    t = load_target("rtx4060")
    t.memory_gb, t.memory_bandwidth_gbs, t.supports_dtype("bf16")

Imports stay light (stdlib, pydantic, PyYAML): no torch.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from optpipe.errors import MISSING, InvalidInputError, Problem

__all__ = [
    "DTYPES",
    "PEAK_DTYPES",
    "RUNTIMES",
    "Source",
    "Target",
    "TargetFileError",
    "UnknownTargetError",
    "list_targets",
    "load_target",
    "load_target_file",
    "targets_dir",
]

Dtype = Literal["fp32", "fp16", "bf16", "fp8", "int8", "int4"]
PeakDtype = Literal["fp32", "tf32", "fp16", "bf16", "fp8", "int8", "int4"]
Runtime = Literal["torch-cpu", "torch-cuda", "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt", "llama.cpp"]

DTYPES: tuple[str, ...] = ("fp32", "fp16", "bf16", "fp8", "int8", "int4")
PEAK_DTYPES: tuple[str, ...] = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8", "int4")
RUNTIMES: tuple[str, ...] = (
    "torch-cpu",
    "torch-cuda",
    "onnxruntime-cpu",
    "onnxruntime-cuda",
    "tensorrt",
    "llama.cpp",
)
CUDA_RUNTIMES: frozenset[str] = frozenset({"torch-cuda", "onnxruntime-cuda", "tensorrt"})

# Spellings other code (torch, numpy, recipes) uses for the same dtypes.
_DTYPE_ALIASES = {
    "float32": "fp32",
    "float": "fp32",
    "f32": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "f16": "fp16",
    "bfloat16": "bf16",
    "float8": "fp8",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
    "e4m3": "fp8",
    "e5m2": "fp8",
    "qint8": "int8",
    "uint4": "int4",
}

_NAME_RE = r"^[a-z0-9][a-z0-9.\-]*$"
_SUFFIX = ".yaml"

PositiveFloat = Annotated[float, Field(gt=0)]


class Source(BaseModel):
    """A vendor-published page or datasheet, and which figures of the target it backs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    what: str = Field(min_length=1, description="Which figures this source backs.")
    url: str = Field(pattern=r"^https?://\S+$", description="Vendor page or datasheet URL.")


class Target(BaseModel):
    """One deployment device (or, for cpu-x86, a documented device class)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_RE, description="Must equal the YAML file stem.")
    display_name: str = Field(min_length=1)
    kind: Literal["gpu", "cpu", "soc"] = Field(
        description="gpu: discrete GPU with its own VRAM; cpu: host CPU; soc: CPU(+GPU) sharing one memory.",
    )
    vendor: str = Field(min_length=1)
    memory_gb: PositiveFloat = Field(description="VRAM for GPUs; system RAM for cpu/soc (decimal GB).")
    memory_bandwidth_gbs: PositiveFloat = Field(description="Vendor-published peak memory bandwidth, GB/s.")
    peak_tflops: dict[PeakDtype, PositiveFloat] = Field(
        default_factory=dict,
        description="Peak dense throughput (TFLOPS, or TOPS for integer types); dtypes the device lacks are omitted.",
    )
    compute_capability: str | None = Field(
        default=None,
        pattern=r"^\d+\.\d+$",
        description='CUDA compute capability, e.g. "8.9"; None for non-NVIDIA.',
    )
    dtypes: list[Dtype] = Field(
        min_length=1,
        description=(
            "Dtypes the hardware computes natively. Weight-only formats that are dequantized to another "
            "dtype before the math (e.g. int4 weights on H100) run anywhere and are not what this lists."
        ),
    )
    runtimes: list[Runtime] = Field(min_length=1)
    sources: list[Source] = Field(min_length=1)
    notes: str = ""

    @field_validator("compute_capability", mode="before")
    @classmethod
    def _capability_must_be_a_string(cls, value: Any) -> Any:
        # YAML reads 8.9 as a float, and would read 8.10 as 8.1: insist on a quoted string.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(f"write the compute capability as a quoted string, e.g. '{value}'")
        return value

    @field_validator("dtypes", "runtimes")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        duplicates = sorted({v for v in value if value.count(v) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Target":
        for key in self.peak_tflops:
            needed = "fp32" if key == "tf32" else key
            if needed not in self.dtypes:
                raise ValueError(
                    f"peak_tflops has {key!r} but dtypes does not list {needed!r}; add it to dtypes or drop the figure"
                )
        cuda = sorted(CUDA_RUNTIMES.intersection(self.runtimes))
        if cuda and self.compute_capability is None:
            raise ValueError(f"runtimes {cuda} need a CUDA device: set compute_capability")
        return self

    @property
    def is_gpu(self) -> bool:
        """True for a discrete GPU (kind == "gpu"). A Jetson is kind "soc": see :attr:`has_cuda`."""
        return self.kind == "gpu"

    @property
    def has_cuda(self) -> bool:
        """True when the device runs CUDA (discrete NVIDIA GPUs and Jetson SoCs)."""
        return self.compute_capability is not None

    def supports_dtype(self, dtype: str) -> bool:
        """Whether the device computes ``dtype`` natively. Accepts torch-style names ("bfloat16")."""
        if not isinstance(dtype, str):
            return False
        key = dtype.strip().lower().removeprefix("torch.")
        key = _DTYPE_ALIASES.get(key, key)
        return key in self.dtypes


# --------------------------------------------------------------------------------------- errors


class TargetFileError(InvalidInputError, ValueError):
    """A target YAML file could not be read or is invalid; every problem names the file."""

    def __init__(self, path: str | Path, problems: list[Problem]):
        self.path = Path(path)
        super().__init__(problems)


class UnknownTargetError(InvalidInputError, ValueError):
    """No target file has this name. ``suggestions`` holds close names (maybe empty)."""

    def __init__(self, name: object, known: list[str], directory: Path):
        self.name = name
        self.known = list(known)
        shown = name.strip().lower() if isinstance(name, str) else ""
        self.suggestions = _suggest(shown, self.known) if shown else []
        message = f"unknown target {name!r}"
        if self.suggestions:
            message += f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?"
        else:
            message += "."
        known_text = ", ".join(self.known) if self.known else f"none (no *{_SUFFIX} files in {directory})"
        message += f" Known targets: {known_text}"
        super().__init__([Problem(file=str(directory), line=None, field="target", value=MISSING, message=message)])


def _suggest(name: str, known: list[str]) -> list[str]:
    """Close names, best first: difflib's candidates, keeping the fewest-typo ones ('rtx4600' -> 'rtx4060')."""
    candidates = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    if not candidates:  # a fragment: 'jetson' -> 'jetson-orin-nano'
        return [k for k in known if len(name) >= 3 and name in k][:3]
    distance = {c: _typo_distance(name, c) for c in candidates}
    best = min(distance.values())
    return [c for c in candidates if distance[c] == best][:3]


def _typo_distance(a: str, b: str) -> int:
    """Edit distance counting an adjacent swap as one edit (optimal string alignment)."""
    rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        rows[i][0] = i
    for j in range(len(b) + 1):
        rows[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
    return rows[-1][-1]


# --------------------------------------------------------------------------------------- loader


def targets_dir() -> Path:
    """Directory holding the target YAML files: the wheel's bundled copy, else the repo's ``targets/``."""
    package_dir = Path(__file__).resolve().parents[1]  # optpipe/
    bundled = package_dir / "_data" / "targets"
    if bundled.is_dir():
        return bundled
    return package_dir.parent / "targets"


def list_targets() -> list[str]:
    """Sorted names of all targets available in :func:`targets_dir`."""
    directory = targets_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob(f"*{_SUFFIX}") if p.is_file())


def load_target(name: str) -> Target:
    """Load the target called ``name`` (case-insensitive). Raises :class:`UnknownTargetError`."""
    known = list_targets()
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in known:
        raise UnknownTargetError(name, known, targets_dir())
    return load_target_file(targets_dir() / f"{key}{_SUFFIX}")


def load_target_file(path: str | Path) -> Target:
    """Read and validate one target file; the ``name`` field must equal the file stem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TargetFileError(path, [_problem(path, None, "", f"cannot read file: {exc.strerror or exc}")]) from exc

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        detail = getattr(exc, "problem", None) or str(exc)
        raise TargetFileError(path, [_problem(path, line, "", f"not valid YAML: {detail}")]) from exc

    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise TargetFileError(path, [_problem(path, None, "", f"expected a mapping of fields, got {got}")])

    try:
        target = Target.model_validate(data)
    except ValidationError as exc:
        lines = _key_lines(text)
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            field = ".".join(str(part) for part in loc if part != "[key]")
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = f"unknown field (allowed: {', '.join(Target.model_fields)})"
            value = err.get("input", MISSING) if loc else MISSING
            if err["type"] == "missing":
                value = MISSING
            problems.append(_problem(path, _line_for(lines, loc), field, message, value))
        raise TargetFileError(path, problems) from exc

    if target.name != path.stem:
        lines = _key_lines(text)
        raise TargetFileError(
            path,
            [_problem(path, _line_for(lines, ("name",)), "name", f"must equal the file name stem {path.stem!r}", target.name)],
        )
    return target


def _problem(path: Path, line: int | None, field: str, message: str, value: object = MISSING) -> Problem:
    return Problem(file=str(path), line=line, field=field, value=value, message=message)


def _key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """1-based line of every mapping key / sequence item in the YAML document, by path."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[Any, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = (*prefix, key_node.value)
                lines[path] = key_node.start_mark.line + 1
                walk(value_node, path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                path = (*prefix, index)
                lines[path] = item.start_mark.line + 1
                walk(item, path)

    if root is not None:
        walk(root, ())
    return lines


def _line_for(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    """Line of the deepest YAML node on ``loc`` (pydantic adds non-key parts such as 'dict key')."""
    loc = tuple(part for part in loc if part not in ("[key]",))
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
