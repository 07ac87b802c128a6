"""What every candidate is, whatever runs it: the `Candidate` protocol, its runtime settings, and the
file that records them beside the weights.

The build engine, the measurement worker and the evaluators use only this protocol, so none of them
branches on the format (torch, ONNX, later GGUF). A format is one module in this package that
implements the protocol and registers its loader in `optpipe.runtime.LOADERS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from optpipe.errors import MISSING, InvalidInputError, Problem
from optpipe.runtime.dtypes import DTYPES

RUNTIME_FILE = "optpipe_runtime.json"
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".onnx", ".gguf", ".pt", ".pth", ".data"}


@dataclass(frozen=True)
class RuntimeSettings:
    """Settings that change what runs but are not stored in the weights."""

    format: str = "transformers"
    dtype: str = "fp32"
    attn_implementation: str = "sdpa"
    device: str = "cpu"
    compile: dict[str, Any] | None = None  # set by the compile pass: {"mode", "max_cache_len", "step", ...}
    quantization: str | None = None  # set by the quantize pass (the weights carry its config)
    calibration: dict[str, Any] | None = None  # GPTQ/AWQ: source, token range or file sha256, samples
    onnx: dict[str, Any] | None = None  # format "onnx": {"optimization", "quantization", "exporter"}
    prune: dict[str, Any] | None = None  # prune pass: method, blocks dropped / channels kept, params before/after
    distill: dict[str, Any] | None = None  # distill pass: teacher, steps, tokens, final loss, calibration
    gguf: dict[str, Any] | None = None  # format "gguf": type, converter, imatrix, llama.cpp threads/batch/context

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def write(self, directory: str | Path) -> None:
        (Path(directory) / RUNTIME_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


_TEXT_FIELDS = ("format", "dtype", "attn_implementation", "device")
_OPTIONAL = {
    "compile": dict,
    "quantization": str,
    "calibration": dict,
    "onnx": dict,
    "prune": dict,
    "distill": dict,
    "gguf": dict,
}


def read_settings(directory: str | Path) -> RuntimeSettings:
    """The runtime settings saved beside a candidate's weights (defaults for a plain model directory).
    A damaged file is an InvalidInputError naming the file and the bad field, never a traceback later."""
    path = Path(directory) / RUNTIME_FILE
    if not path.exists():
        return RuntimeSettings()
    fix = "restore it from the build, or delete it to load the directory as a plain transformers model"
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidInputError(
            [Problem(str(path), None, "<file>", MISSING, f"not a readable optpipe runtime file ({exc}); {fix}")]
        ) from None
    if not isinstance(data, dict):
        raise InvalidInputError([Problem(str(path), None, "<root>", MISSING, f"not a JSON object; {fix}")])
    known = {f.name for f in fields(RuntimeSettings)}
    problems = [Problem(str(path), None, k, data[k], f"unknown field; {fix}") for k in data if k not in known]
    for k in _TEXT_FIELDS:
        if k in data and not isinstance(data[k], str):
            problems.append(Problem(str(path), None, k, data[k], f"must be a string; {fix}"))
    for k, kind in _OPTIONAL.items():
        if data.get(k) is not None and not isinstance(data[k], kind):
            problems.append(Problem(str(path), None, k, data[k], f"must be a {kind.__name__} or absent; {fix}"))
    if isinstance(data.get("dtype"), str) and data["dtype"] not in DTYPES:
        problems.append(Problem(str(path), None, "dtype", data["dtype"], f"expected one of {', '.join(DTYPES)}; {fix}"))
    if problems:
        raise InvalidInputError(problems)
    return RuntimeSettings(**data)


def check_saved_model(directory: str | Path) -> RuntimeSettings:
    """What a saved model directory must hold before a process is spent loading it: config.json (a
    JSON object), a valid runtime file, and its weight files (every shard an index names). Each
    missing or damaged file is named, so `optpipe bench|eval` on a damaged artifact says what is gone."""
    d = Path(directory)
    if not d.is_dir():
        raise InvalidInputError([Problem(str(d), None, "<directory>", MISSING, "not a directory: pass a build's artifact/ dir")])
    settings = read_settings(d)
    config = d / "config.json"
    if settings.format == "transformers" and not config.is_file():
        raise InvalidInputError(
            [Problem(str(config), None, "<file>", MISSING, "missing: not a model directory; pass a build's artifact/ dir")]
        )
    if config.is_file():
        try:
            ok = isinstance(json.loads(config.read_bytes()), dict)
        except (OSError, ValueError):
            ok = False
        if not ok:
            raise InvalidInputError(
                [Problem(str(config), None, "<file>", MISSING, "not a readable JSON object; re-save the model")]
            )
    missing = _missing_weights(d, settings)
    if missing:
        raise InvalidInputError(
            [
                Problem(str(d / m), None, "<file>", MISSING, "weight file missing (deleted?); rebuild or copy the artifact again")
                for m in missing
            ]
        )
    return settings


def _missing_weights(d: Path, settings: RuntimeSettings) -> list[str]:
    """Weight files the directory should have and does not (an empty list when all are there)."""
    if settings.format == "onnx":
        return [] if any(d.glob("*.onnx")) else ["model.onnx"]
    if settings.format == "gguf":
        return [] if any(d.glob("*.gguf")) else ["model.gguf"]
    missing: list[str] = []
    for index in sorted(d.glob("*.index.json")):  # sharded checkpoints name their shards
        try:
            shards = set(json.loads(index.read_bytes()).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            return [index.name]
        missing += sorted(str(s) for s in shards if not (d / str(s)).is_file())
    if missing:
        return missing
    has_weights = any(p.suffix in {".safetensors", ".bin", ".pt", ".pth"} for p in d.iterdir())
    return [] if has_weights else ["model.safetensors"]


@dataclass(frozen=True)
class ScoringModel:
    """What lm-eval scores: a transformers model (lm-eval's HFLM batches it) or, for runtimes lm-eval
    does not know, a full-sequence logits function over token ids."""

    tokenizer: Any
    hf_model: Any = None
    logits: Callable[[Any], Any] | None = None


class Decoder(Protocol):
    """A greedy decode loop: what the benchmark times and `generate` uses."""

    name: str

    def reset(self, batch: int, max_len: int) -> None: ...
    def prefill(self, ids: Any) -> Any: ...
    def step(self, token: Any) -> Any: ...


@runtime_checkable
class Candidate(Protocol):
    """A model in one runtime, as measured and as deployed."""

    settings: RuntimeSettings
    tokenizer: Any

    @property
    def device(self) -> Any: ...
    @property
    def torch_model(self) -> Any | None:
        """The torch module whose weights a decode step reads (roofline), None for other runtimes."""

    def save(self, directory: str | Path) -> Path: ...
    def logits(self, ids: Any) -> Any: ...
    def decoder(self) -> Decoder: ...
    def scoring_model(self) -> ScoringModel: ...
    def num_parameters(self) -> int: ...
    def with_settings(self, **changes: Any) -> "Candidate": ...


def directory_size_bytes(directory: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def weights_size_bytes(directory: str | Path) -> int:
    """Bytes of weight files only (what a deployment ships and loads)."""
    return sum(
        p.stat().st_size
        for p in Path(directory).rglob("*")
        if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name.endswith(".onnx_data"))
    )


def place_export(source: Path, directory: str | Path, temporary: bool) -> Path:
    """Put an exported candidate's files (ONNX, GGUF) in `directory`: a fresh, temporary export is moved
    (no copy of GBs), a saved one copied; returns where the files now are."""
    import shutil

    directory = Path(directory)
    if directory.resolve() != source.resolve():
        if directory.exists():
            shutil.rmtree(directory)
        if temporary:
            shutil.move(str(source), directory)
        else:
            shutil.copytree(source, directory)
    return directory
