"""Passes: one module (or folder) per pass. `registry()` imports every pass module, which registers it."""

from __future__ import annotations

import importlib
import pkgutil

from optpipe.passes.base import Pass, PassContext, PassParams, registered, run_pass

_loaded = False


def registry() -> dict[str, type[Pass]]:
    """All passes by name. Pass modules import no heavy libraries at module level."""
    global _loaded
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            if info.name != "base":
                importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True
    return dict(sorted(registered().items()))


def get_pass(name: str) -> type[Pass]:
    return registry()[name]


__all__ = ["Pass", "PassContext", "PassParams", "get_pass", "registry", "run_pass"]
