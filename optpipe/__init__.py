"""optpipe: declarative model-optimization compiler for LLMs.

`import optpipe` stays light (no torch): heavy modules load on first use.

    from optpipe import Recipe, build
    result = build(Recipe.load("recipes/cpu.yaml"))
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Recipe": ("optpipe.recipe", "Recipe"),
    "load_recipe": ("optpipe.recipe", "load_recipe"),
    "build": ("optpipe.runner", "build"),
    "load": ("optpipe.runtime", "load_any"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'optpipe' has no attribute {name!r}")
