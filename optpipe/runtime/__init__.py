"""Candidates at run time: one module per format implementing `Candidate` (torch/transformers, ONNX
Runtime), the decode loops the benchmark times (eager, static-compiled, fused step), and loading
model sources. Never imports evaluation code: scoring adapters live in `optpipe.evaluate`."""

from __future__ import annotations

import importlib
from pathlib import Path

from optpipe.runtime.candidate import Candidate, RuntimeSettings, check_saved_model, read_settings

# format -> "module:function(directory, settings, device)"; a new runtime adds one line here.
LOADERS = {
    "transformers": "optpipe.runtime.torch_candidate:load",
    "onnx": "optpipe.runtime.onnx_candidate:load",
    "gguf": "optpipe.runtime.gguf_candidate:load",
}


def load_candidate(directory: str | Path, device: str | None = None) -> Candidate:
    """A saved candidate of any format, ready to measure or serve (`optpipe.load`)."""
    from optpipe.errors import InvalidInputError

    settings = check_saved_model(directory)  # names a missing weight file or a damaged runtime file
    if settings.format not in LOADERS:
        raise InvalidInputError(f"{directory}: unknown candidate format {settings.format!r} (known: {', '.join(LOADERS)})")
    module, func = LOADERS[settings.format].split(":")
    return getattr(importlib.import_module(module), func)(directory, settings, device)


__all__ = ["Candidate", "RuntimeSettings", "LOADERS", "check_saved_model", "load_candidate", "read_settings"]
