"""Peak memory of a candidate while it generates, predicted before anything is loaded, so a plan can
drop a candidate that cannot fit its target instead of finding out by OOM.

peak = weights (resident while decoding) + KV cache (prompt + new tokens) + activations (estimate)
     + runtime overhead (CUDA context and allocator slack, a constant).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from optpipe.forecast.dtypes import DTYPE_BYTES, GB
from optpipe.forecast.formats import WeightFormat, weight_bytes, weight_format
from optpipe.forecast.shape import ModelShape

__all__ = [
    "CUDA_RUNTIME_OVERHEAD_BYTES",
    "MemoryForecast",
    "WeightFormat",
    "activation_bytes",
    "kv_cache_bytes",
    "predict_memory",
    "weight_format",
]

# CUDA context (~0.3-0.5 GB with cuBLAS/cuDNN handles loaded) plus caching-allocator fragmentation;
# a round, documented figure rather than a measured one. The CPU has no context to pay for.
CUDA_RUNTIME_OVERHEAD_BYTES = 0.5 * GB


def kv_cache_bytes(shape: ModelShape, tokens: int, batch: int = 1, kv_dtype_bytes: float = 2) -> int:
    """2 (K and V) x layers x kv_heads x head_dim x tokens x batch x bytes per element."""
    return round(2 * shape.num_hidden_layers * shape.num_key_value_heads * shape.head_dim * tokens * batch * kv_dtype_bytes)


def activation_bytes(shape: ModelShape, prompt_tokens: int, batch: int, dtype_bytes: float, last_logit_only: bool = True) -> int:
    """Workspace of the prefill step, an estimate of its two largest transient tensors:
    - logits, upcast to fp32: batch x positions x vocab x 4, with positions = 1 when generation keeps
      only the last position's logits (transformers' generate passes logits_to_keep=1), else the prompt;
    - one layer's MLP intermediate (gate and up outputs): batch x prompt x intermediate x 2 x dtype.
    Attention scores are not counted (SDPA/flash kernels do not materialize them; eager attention
    would add batch x heads x prompt^2 x dtype)."""
    positions = 1 if last_logit_only else prompt_tokens
    logits = batch * positions * shape.vocab_size * 4
    mlp = batch * prompt_tokens * shape.intermediate_size * 2 * dtype_bytes
    return round(logits + mlp)


def _gb(n: float) -> str:
    return f"{n / GB:.2f}"


class MemoryForecast(BaseModel):
    model_config = ConfigDict(frozen=True)

    format_name: str
    weight_bytes: int  # resident while decoding
    stored_weight_bytes: int  # as saved/packed (differs when the runtime decompresses, e.g. GPTQ/AWQ)
    kv_cache_bytes: int
    activation_bytes: int
    runtime_overhead_bytes: int
    peak_bytes: int

    def fits(self, limit_bytes: float) -> tuple[bool, str]:
        """Whether the peak fits `limit_bytes`, with a reason that names the numbers."""
        parts = (
            f"weights {_gb(self.weight_bytes)} + KV {_gb(self.kv_cache_bytes)} + activations "
            f"{_gb(self.activation_bytes)} + overhead {_gb(self.runtime_overhead_bytes)}"
        )
        ok = self.peak_bytes <= limit_bytes
        return ok, f"needs {_gb(self.peak_bytes)} GB ({parts}) {'<=' if ok else '>'} {limit_bytes / GB:.1f} GB"


def predict_memory(
    shape: ModelShape,
    fmt: WeightFormat,
    prompt_tokens: int,
    new_tokens: int,
    batch: int = 1,
    device: str = "cuda",
    runtime_overhead_bytes: float | None = None,
    last_logit_only: bool = True,
    kv_dtype_bytes: float | None = None,
) -> MemoryForecast:
    """Peak memory of generating `new_tokens` after `prompt_tokens` for `batch` sequences. The KV cache
    is counted at its final length and added to the prefill workspace: a slight over-estimate, the
    safe side for a fits/does-not-fit verdict. KV elements default to the compute dtype."""
    if min(prompt_tokens, new_tokens, batch) < 0 or batch == 0:
        raise ValueError("prompt_tokens and new_tokens must be >= 0 and batch >= 1")
    act_bytes = DTYPE_BYTES[fmt.compute_dtype]
    if runtime_overhead_bytes is None:
        runtime_overhead_bytes = CUDA_RUNTIME_OVERHEAD_BYTES if device.startswith("cuda") else 0
    w = weight_bytes(shape, fmt, resident=True)
    kv = kv_cache_bytes(shape, prompt_tokens + new_tokens, batch, kv_dtype_bytes or act_bytes)
    act = activation_bytes(shape, prompt_tokens, batch, act_bytes, last_logit_only)
    overhead = round(runtime_overhead_bytes)
    return MemoryForecast(
        format_name=fmt.name,
        weight_bytes=w,
        stored_weight_bytes=weight_bytes(shape, fmt, resident=False),
        kv_cache_bytes=kv,
        activation_bytes=act,
        runtime_overhead_bytes=overhead,
        peak_bytes=w + kv + act + overhead,
    )
