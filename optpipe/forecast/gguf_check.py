"""Is this file a whole GGUF? A structural check in well under a second, for `optpipe validate`.

`gguf.GGUFReader` builds numpy views for every metadata value and takes ~8 s on the bundled
SmolLM2 file (its tokenizer arrays hold ~100,000 strings); a recipe check must not. This walks the
same layout with `struct` over a memory map, skipping values rather than decoding them: magic,
version, every metadata key/value, every tensor info, then checks that each tensor's data lies
inside the file. A renamed text file fails at the magic, a truncated download at the first value
or tensor that runs past the end. Layout: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import functools
import mmap
import struct
from pathlib import Path

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# GGUF metadata value types with a fixed size: uint8, int8, uint16, int16, uint32, int32, float32,
# bool, (8 = string), (9 = array), uint64, int64, float64.
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    """Not a GGUF file, or a GGUF file cut short."""


class _Cursor:
    def __init__(self, buf: mmap.mmap | bytes, endian: str):
        self.buf, self.pos, self.endian = buf, 0, endian

    def take(self, n: int, what: str) -> int:
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFError(f"truncated: {what} at byte {self.pos} runs past the end of the file ({len(self.buf)} bytes)")
        start = self.pos
        self.pos += n
        return start

    def unpack(self, fmt: str, what: str) -> int:
        start = self.take(struct.calcsize(fmt), what)
        return struct.unpack_from(self.endian + fmt, self.buf, start)[0]

    def string(self, what: str) -> str:
        n = self.unpack("Q", what + " length")
        start = self.take(n, what)
        return bytes(self.buf[start : start + n]).decode("utf-8", errors="replace")

    def skip_value(self, vtype: int, what: str) -> int | None:
        """Skip one metadata value; return it when it is an unsigned integer (for general.alignment)."""
        if vtype in _FIXED:
            fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[_FIXED[vtype]]
            return self.unpack(fmt, what)
        if vtype == _STRING:
            self.string(what)
            return None
        if vtype == _ARRAY:
            etype = self.unpack("I", what + " element type")
            count = self.unpack("Q", what + " element count")
            if etype in _FIXED:
                self.take(count * _FIXED[etype], what)
            elif etype in (_STRING, _ARRAY):
                for _ in range(count):
                    self.skip_value(etype, what)
            else:
                raise GGUFError(f"{what}: unknown array element type {etype}")
            return None
        raise GGUFError(f"{what}: unknown metadata value type {vtype}")


def check_gguf(path: str | Path) -> None:
    """Raise GGUFError unless `path` is a complete GGUF file (v2 or v3), reading only its header.
    Remembered per (path, size, mtime): a process validating many recipes reads a file once."""
    st = Path(path).stat()
    _check_gguf(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _check_gguf(path_name: str, size: int, _mtime_ns: int) -> None:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path_name)
    if size < 24:
        raise GGUFError(f"{size} bytes: too short for a GGUF header")
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != MAGIC:
            raise GGUFError(f"no GGUF magic (starts with {bytes(buf[:4])!r})")
        version = struct.unpack_from("<I", buf, 4)[0]
        endian = "<"
        if version & 0xFFFF == 0:  # written on a big-endian host
            endian, version = ">", struct.unpack_from(">I", buf, 4)[0]
        if version not in (2, 3):
            raise GGUFError(f"GGUF version {version} (optpipe reads versions 2 and 3)")
        cur = _Cursor(buf, endian)
        cur.pos = 8
        n_tensors = cur.unpack("Q", "tensor count")
        n_kv = cur.unpack("Q", "metadata count")
        if n_tensors > size or n_kv > size:
            raise GGUFError(f"truncated or damaged header: {n_tensors} tensors and {n_kv} metadata entries in {size:,} bytes")
        alignment = DEFAULT_ALIGNMENT
        for i in range(n_kv):
            key = cur.string(f"metadata key {i}")
            value = cur.skip_value(cur.unpack("I", f"type of {key}"), key)
            if key == "general.alignment" and value:
                alignment = value
        tensors: list[tuple[str, int, int]] = []
        for i in range(n_tensors):
            name = cur.string(f"tensor name {i}")
            n_dims = cur.unpack("I", f"{name} dims")
            if n_dims > 8:
                raise GGUFError(f"{name}: {n_dims} dimensions")
            numel = 1
            for _ in range(n_dims):
                numel *= cur.unpack("Q", f"{name} shape")
            ttype = cur.unpack("I", f"{name} type")
            offset = cur.unpack("Q", f"{name} offset")
            try:
                block, type_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
            except (ValueError, KeyError):
                raise GGUFError(f"{name}: unknown tensor type {ttype}") from None
            tensors.append((name, offset, numel // block * type_bytes))
        data_start = -(-cur.pos // alignment) * alignment
        for name, offset, nbytes in tensors:
            end = data_start + offset + nbytes
            if end > size:
                raise GGUFError(f"truncated: tensor {name} ends at byte {end:,} but the file has {size:,} bytes")


def read_header(path: str | Path) -> tuple[dict[str, str], list[str]]:
    """A GGUF's string metadata (e.g. general.architecture) and tensor names, read by the same walk
    (arrays such as the vocabulary are skipped, not decoded): what gguf_export needs in well under a
    second where GGUFReader takes ~8 s on the bundled model."""
    with Path(path).open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != MAGIC:
            raise GGUFError(f"no GGUF magic (starts with {bytes(buf[:4])!r})")
        endian = ">" if struct.unpack_from("<I", buf, 4)[0] & 0xFFFF == 0 else "<"
        cur = _Cursor(buf, endian)
        cur.pos = 8
        n_tensors = cur.unpack("Q", "tensor count")
        n_kv = cur.unpack("Q", "metadata count")
        strings: dict[str, str] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key {i}")
            vtype = cur.unpack("I", f"type of {key}")
            if vtype == _STRING:
                strings[key] = cur.string(key)
            else:
                cur.skip_value(vtype, key)
        names = []
        for i in range(n_tensors):
            names.append(cur.string(f"tensor name {i}"))
            n_dims = cur.unpack("I", "dims")
            cur.take(8 * n_dims + 4 + 8, "tensor info")  # shape, type, offset
        return strings, names
