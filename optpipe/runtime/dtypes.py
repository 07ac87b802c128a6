"""optpipe's dtype names (fp32/fp16/bf16) and torch's, both ways."""

from __future__ import annotations

from typing import Any

DTYPES = ("fp32", "fp16", "bf16")


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def dtype_name(dtype: Any) -> str:
    import torch

    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))
