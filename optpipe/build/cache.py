"""Content-addressed cache of candidate measurements, so an interrupted or repeated build does
not measure the same thing twice. Key = hash(model fingerprint, pass chain with params and pass
versions, evaluation and benchmark settings, device, relevant package versions)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from optpipe.files import write_json_atomic
from optpipe.measure.results import Measurements

KEY_PACKAGES = (
    "optpipe",
    "torch",
    "transformers",
    "lm_eval",
    "gguf",
    "bitsandbytes",
    "torchao",
    "onnxruntime",
    "compressed-tensors",
    "auto-round",
    "gemlite",
)


def optpipe_cache_root() -> Path:
    """Where optpipe keeps what outlives one output directory (host calibrations): OPTPIPE_CACHE_DIR,
    else $XDG_CACHE_HOME/optpipe (~/.cache/optpipe)."""
    if os.environ.get("OPTPIPE_CACHE_DIR"):
        return Path(os.environ["OPTPIPE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "optpipe"


def cache_key(parts: dict[str, Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class ResultCache:
    def __init__(self, root: Path):
        self.root = Path(os.environ.get("OPTPIPE_CACHE_DIR", root))

    def _path(self, key: str) -> Path:
        return self.root / "results" / f"{key}.json"

    def get(self, key: str) -> Measurements | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return Measurements.model_validate_json(path.read_text())
        except ValidationError:
            return None  # a torn write from a killed run, or an older record format: measure again

    def put(self, key: str, result: Measurements) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, result)
