"""Dtype names and sizes, in one place: configs say "bfloat16", safetensors headers say "BF16",
optpipe recipes say "bf16"; every other forecast module speaks the short recipe names."""

from __future__ import annotations

GB = 1e9  # decimal gigabytes, as GPU datasheets and optpipe's targets count them

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2, "fp64": 8}

_ALIASES = {
    "float32": "fp32",
    "float": "fp32",
    "fp32": "fp32",
    "f32": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "fp16": "fp16",
    "f16": "fp16",
    "bfloat16": "bf16",
    "bf16": "bf16",
    "float64": "fp64",
    "double": "fp64",
    "fp64": "fp64",
    "f64": "fp64",
}

# Bytes per element of each safetensors header dtype code (the format's spec lists them).
SAFETENSORS_DTYPE_BYTES: dict[str, float] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "F4": 0.5,
    "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}

_SAFETENSORS_FLOAT = {"F16": "fp16", "BF16": "bf16", "F32": "fp32", "F64": "fp64"}


def normalize_dtype(name: str) -> str:
    """ "bfloat16", "torch.bfloat16" or "bf16" -> "bf16"; raises on names that are not float dtypes."""
    key = str(name).lower().removeprefix("torch.")
    if key not in _ALIASES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(set(_ALIASES))}")
    return _ALIASES[key]


def dtype_bytes(name: str) -> int:
    return DTYPE_BYTES[normalize_dtype(name)]


def safetensors_float_dtype(code: str) -> str | None:
    """Short name of a safetensors float code ("BF16" -> "bf16"), None for integer/packed codes."""
    return _SAFETENSORS_FLOAT.get(code)
