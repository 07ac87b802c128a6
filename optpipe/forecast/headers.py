"""Tensor inventories read from checkpoint headers only: names, shapes, dtypes and stored byte
counts, never the weight data, so a forecast of a 70B checkpoint costs a few kilobytes of I/O.

safetensors: a file is an 8-byte little-endian header length N, N bytes of JSON (name -> dtype,
shape, data_offsets), then the data. We parse those 8 + N bytes ourselves rather than through
`safetensors.safe_open`: safe_open reads only the header too, but it refuses any file whose length
does not cover the offsets in the header ("incomplete metadata, file not fully covered"), i.e. a
partial download or a header fetched alone. Reading the header ourselves needs nothing else.

GGUF: `gguf.GGUFReader` memory-maps the file and parses metadata and tensor infos; the tensors'
`data` fields are numpy views into the map that we never touch, so no weight page is read.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optpipe.forecast.dtypes import SAFETENSORS_DTYPE_BYTES

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit on a header


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order: (out_features, in_features) for a Linear weight
    dtype: str  # as the file names it: "BF16" (safetensors) or "Q4_K" (GGUF)
    nbytes: int  # bytes as stored in the file

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def read_safetensors_header(path: str | Path) -> tuple[list[TensorInfo], dict[str, str]]:
    """Tensor infos and the `__metadata__` dict of one .safetensors file, from its header alone."""
    path = Path(path)
    with path.open("rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
            raise ValueError(f"{path}: shorter than the 8-byte safetensors header length")
        (n,) = struct.unpack("<Q", raw_len)
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"{path}: header length {n} is not plausible; not a safetensors file?")
        raw = f.read(n)
    if len(raw) != n:
        raise ValueError(f"{path}: header truncated ({len(raw)} of {n} bytes)")
    header: dict[str, Any] = json.loads(raw)
    metadata = header.pop("__metadata__", None) or {}
    infos = []
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        shape = tuple(int(d) for d in entry["shape"])
        info = TensorInfo(name, shape, entry["dtype"], int(end) - int(start))
        per = SAFETENSORS_DTYPE_BYTES.get(info.dtype)
        if per is not None and info.nbytes != round(info.numel * per):
            raise ValueError(
                f"{path}: {name} spans {info.nbytes} bytes, but {info.dtype} {list(shape)} needs {round(info.numel * per)}"
            )
        infos.append(info)
    return infos, metadata


def safetensors_files(directory: str | Path) -> list[Path]:
    """The safetensors files a transformers load reads: those named in model.safetensors.index.json
    when it exists (repositories may also carry e.g. a consolidated.safetensors copy that
    transformers ignores), else every *.safetensors in the folder."""
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [directory / name for name in sorted(set(weight_map.values()))]
    return sorted(directory.glob("*.safetensors"))


@dataclass(frozen=True)
class GGUFInventory:
    metadata: dict[str, Any]  # scalar fields and array lengths (arrays as {"len": n})
    tensors: list[TensorInfo]
    file_bytes: int


def read_gguf_header(path: str | Path) -> GGUFInventory:
    """Metadata and tensor infos of a GGUF file (memory-mapped; tensor data is never accessed)."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(path)
    meta: dict[str, Any] = {}
    for name, field in reader.fields.items():
        if not field.types:
            continue
        if field.types[0] == GGUFValueType.ARRAY:
            meta[name] = {"len": len(field.data)}
            if field.types[-1] != GGUFValueType.STRING and len(field.data) <= 1024:
                meta[name]["values"] = field.contents()  # small numeric arrays, e.g. per-layer head counts
        else:
            meta[name] = field.contents()
    tensors = [
        # GGUF lists dims fastest-first (ne[0] = columns); reverse to torch's (rows, columns).
        TensorInfo(t.name, tuple(int(d) for d in reversed(t.shape.tolist())), t.tensor_type.name, int(t.n_bytes))
        for t in reader.tensors
    ]
    return GGUFInventory(meta, tensors, Path(path).stat().st_size)
