"""Atomic file writes: a reader (or a killed run) sees the old file or the new one, never half of one.
Everything optpipe writes gets ordinary permissions (0644/0755 under the user's umask): libraries that
write through `tempfile` (safetensors via transformers) leave 0600, which a deploy user cannot read."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normalize_modes(root: str | Path) -> None:
    """Give files 0666 and directories 0777, less the umask, under `root` (and `root` itself)."""
    mask = current_umask()
    root = Path(root)
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    if root.is_file():
        root.chmod(file_mode)
        return
    root.chmod(dir_mode)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), dir_mode)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), file_mode)


def tree_size(path: str | Path) -> int:
    """Bytes of the files under `path` (how much a copy of it needs)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system of `path`, or of its nearest existing parent."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """JSON of plain data or of a pydantic model (dumped in JSON mode)."""
    if hasattr(data, "model_dump_json"):
        text = data.model_dump_json(indent=2, exclude_none=True)
    else:
        text = json.dumps(data, indent=2, default=str)
    write_text_atomic(path, text + "\n")


class JsonRecord(BaseModel):
    """Base of every record optpipe writes as JSON (measurements, checks, manifest). NaN and infinity
    are written as JSON's NaN/Infinity constants (as json.dumps does), so a not-measured figure
    round-trips as NaN instead of turning into null."""

    model_config = ConfigDict(ser_json_inf_nan="constants", extra="forbid")
