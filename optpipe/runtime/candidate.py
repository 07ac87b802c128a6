"""What every candidate is, whatever runs it: the `Candidate` protocol, its runtime settings, and the
file that records them beside the weights.

The build engine, the measurement worker and the evaluators use only this protocol, so none of them
branches on the format (torch, ONNX, later GGUF). A format is one module in this package that
implements the protocol and registers its loader in `optpipe.runtime.LOADERS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from optpipe.errors import InvalidInputError

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

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def write(self, directory: str | Path) -> None:
        (Path(directory) / RUNTIME_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def read_settings(directory: str | Path) -> RuntimeSettings:
    """The runtime settings saved beside a candidate's weights (defaults for a plain model directory)."""
    path = Path(directory) / RUNTIME_FILE
    if not path.exists():
        return RuntimeSettings()
    try:
        return RuntimeSettings(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise InvalidInputError(
            f"{path} is not a valid optpipe runtime file ({exc}); delete it to load the directory as a plain transformers model"
        ) from None


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
