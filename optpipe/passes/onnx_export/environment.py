"""The ONNX export environment: optimum-onnx 0.1.0 (its latest release) pins transformers<4.58 while
optpipe's core needs transformers 5.x, so the exporter runs from a virtual environment of its own.
`optpipe setup-onnx` creates it; OPTPIPE_ONNX_PYTHON points at another python with optimum-onnx."""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import venv
from collections.abc import Callable
from pathlib import Path

from optpipe.errors import OptpipeError

DEFAULT_ENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "optpipe" / "onnx-env"
SETUP_HINT = "create it with `optpipe setup-onnx` (or set OPTPIPE_ONNX_PYTHON to a python with optimum-onnx)"
EXPORTER = "optimum-onnx[onnxruntime]==0.1.0"


def export_python() -> Path | None:
    """The python that runs the exporter: OPTPIPE_ONNX_PYTHON, else the default export venv."""
    env = os.environ.get("OPTPIPE_ONNX_PYTHON")
    if env:
        return Path(env)
    candidate = DEFAULT_ENV / "bin" / "python"
    return candidate if candidate.exists() else None


def create_export_environment(path: Path | None = None, say: Callable[[str], None] = print) -> Path:
    """Create the export venv: this environment's torch version first (so pip never pulls a CUDA
    build), then optimum-onnx. Returns the environment's python."""
    target = path or DEFAULT_ENV
    torch_version = md.version("torch").split("+")[0]
    say(f"creating {target} (torch=={torch_version} first, then {EXPORTER})")
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    py = target / "bin" / "python"
    for args in (["torch==" + torch_version], [EXPORTER]):
        code = subprocess.call([str(py), "-m", "pip", "install", "-q", *args])
        if code != 0:
            raise OptpipeError(f"pip install {' '.join(args)} failed in {target} (exit {code})")
    return py
