"""llama.cpp's own tools from Python: its HF -> GGUF converter and its quantizer.

Why the converter comes from the llama-cpp-python sdist: `convert_hf_to_gguf.py` is not part of any
wheel (neither llama-cpp-python's nor gguf's on PyPI). It ships, with its `conversion/` package and
the `gguf-py` it was written against (newer than the `gguf` release on PyPI with the same version
number), in llama-cpp-python's sdist under vendor/llama.cpp. We keep exactly those files, from the
sdist of the llama-cpp-python version that will load the result, in
~/.cache/optpipe/llama.cpp/<version>/ (`python -m optpipe.passes.gguf_export.tooling` fetches it
with pip, or unpacks a local sdist), or use a llama.cpp checkout named by OPTPIPE_LLAMA_CPP_DIR. The
converter runs in a subprocess with its own gguf-py first on the path, so it never mixes with the
`gguf` package optpipe itself imports.

The quantizer is `llama_model_quantize` from llama-cpp-python's shared library (the same code as the
`llama-quantize` tool), importance matrix included.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_VERSION = "0.3.36"  # llama-cpp-python whose converter we use when the library is not installed
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "optpipe" / "llama.cpp"
SETUP_HINT = (
    "fetch llama.cpp's converter with `python -m optpipe.passes.gguf_export.tooling` "
    "(or set OPTPIPE_LLAMA_CPP_DIR to a llama.cpp checkout)"
)
# + llama.cpp's own Qwen2 test vocabulary (6 MB): the Qwen2 round-trip test needs a tokenizer whose
# pre-tokenizer hash the converter knows, and there is no model hub to fetch one from
KEEP = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "LICENSE", "models/ggml-vocab-qwen2.gguf")

# converter --outtype for the types it writes itself; the rest go through llama_model_quantize
CONVERTER_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16", "Q8_0": "q8_0"}
# llama_ftype values (llama.h enum llama_ftype)
FTYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "BF16": 32}


def llama_cpp_version() -> str | None:
    try:
        return md.version("llama-cpp-python")
    except md.PackageNotFoundError:
        return None


def converter_dir() -> Path | None:
    """Directory holding convert_hf_to_gguf.py (+ conversion/, gguf-py/), or None."""
    env = os.environ.get("OPTPIPE_LLAMA_CPP_DIR")
    if env:
        return Path(env) if (Path(env) / "convert_hf_to_gguf.py").is_file() else None
    d = CACHE / (llama_cpp_version() or DEFAULT_VERSION)
    return d if (d / "convert_hf_to_gguf.py").is_file() else None


def install_converter(sdist: Path | None = None, version: str | None = None) -> Path:
    """Keep llama.cpp's converter from llama-cpp-python's sdist (a local file, else `pip download`)."""
    version = version or llama_cpp_version() or DEFAULT_VERSION
    target = CACHE / version
    with tempfile.TemporaryDirectory(prefix="optpipe-llama-sdist-") as tmp:
        if sdist is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            subprocess.run([*cmd, "-d", tmp, f"llama-cpp-python=={version}"], check=True)
            (sdist,) = Path(tmp).glob("llama_cpp_python-*.tar.gz")
        prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.name[len(prefix) :].startswith(KEEP)]
            if not any(m.name.endswith("convert_hf_to_gguf.py") for m in members):
                raise RuntimeError(f"{sdist} has no {prefix}convert_hf_to_gguf.py")
            tar.extractall(tmp, members=members, filter="data")
        staged = Path(tmp) / prefix
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, target)
    return target


def convert(model_dir: Path, outfile: Path, outtype: str) -> None:
    """Run llama.cpp's converter on a saved transformers directory."""
    tools = converter_dir()
    if tools is None:
        raise RuntimeError(f"llama.cpp's converter is not installed: {SETUP_HINT}")
    cmd = [sys.executable, str(tools / "convert_hf_to_gguf.py"), str(model_dir), "--outfile", str(outfile), "--outtype", outtype]
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # its own gguf-py, not ours
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not outfile.is_file():
        raise RuntimeError(f"convert_hf_to_gguf.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def quantize(src: Path, dst: Path, gguf_type: str, threads: int, imatrix: dict[str, Any] | None = None) -> None:
    """llama.cpp's quantizer (`llama_model_quantize`), with an importance matrix {gguf tensor name: floats}."""
    import ctypes

    import llama_cpp
    import numpy as np

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[gguf_type]
    params.nthread = threads
    keep: list[Any] = []  # the arrays the C struct points into must outlive the call
    if imatrix:
        entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()  # NULL-name terminated
        for i, (name, values) in enumerate(imatrix.items()):
            arr = np.ascontiguousarray(values, dtype=np.float32)
            keep += [arr, name.encode()]
            entries[i].name = keep[-1]
            entries[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = arr.size
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        keep.append(entries)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        raise RuntimeError(f"llama_model_quantize to {gguf_type} failed (return code {rc})")


def main(argv: list[str]) -> int:
    """`python -m optpipe.passes.gguf_export.tooling [SDIST]`: keep llama.cpp's converter."""
    path = install_converter(Path(argv[0]) if argv else None)
    print(f"llama.cpp converter in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
