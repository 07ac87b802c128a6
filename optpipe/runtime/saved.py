"""A saved candidate that loads only when something needs the model.

A pass that works from the parent's files (quantize reloads them through transformers' quantizer)
then never holds a second copy of an 8B parent in memory: its settings come from the runtime file,
and the model is loaded on first use of anything else."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from optpipe.runtime.candidate import Candidate, RuntimeSettings, read_settings


class SavedCandidate:
    def __init__(self, directory: str | Path, device: str | None = None):
        self.directory = Path(directory)
        settings = read_settings(self.directory)
        self.settings: RuntimeSettings = replace(settings, device=device) if device else settings
        self._device = device
        self._loaded: Candidate | None = None

    def load(self) -> Candidate:
        if self._loaded is None:
            from optpipe.runtime import load_candidate

            self._loaded = load_candidate(self.directory, device=self._device)
        return self._loaded

    def __getattr__(self, name: str) -> Any:  # everything but `settings` loads the model
        return getattr(self.load(), name)
