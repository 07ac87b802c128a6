"""Atomic file writes: a reader (or a killed run) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


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
