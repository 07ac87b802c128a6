"""optpipe: declarative model-optimization compiler for LLMs.

`import optpipe` stays light (no torch): the public API (`optpipe.api`) loads on first use.

    from optpipe import Recipe, build
    result = build(Recipe.load("recipes/cpu.yaml"))
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = ("Recipe", "load_recipe", "build", "plan", "load")

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module("optpipe.api"), name)
    raise AttributeError(f"module 'optpipe' has no attribute {name!r}")
