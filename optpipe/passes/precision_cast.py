"""precision_cast: cast the weights and activations to fp32 / fp16 / bf16.

Changes what runs for real: parameters are converted, the saved safetensors hold the new dtype
(so size on disk changes), and the runtime settings record it for `optpipe.load`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from optpipe.passes.base import Pass, PassParams


class PrecisionCastParams(PassParams):
    kind: Literal["precision_cast"] = Field("precision_cast", alias="pass")
    dtype: Literal["fp32", "fp16", "bf16"] = Field(description="Target floating-point dtype.")


class PrecisionCast(Pass):
    name = "precision_cast"
    Params = PrecisionCastParams
    summary = "Cast weights and compute to fp32, fp16 or bf16."
    requires = "the target lists the dtype; fp16 on CPU hosts is refused (no fast fp16 CPU kernels)"

    @classmethod
    def requirements(cls, params, target, env) -> list[str]:
        reasons = []
        if not target.supports_dtype(params.dtype):
            reasons.append(f"target {target.name} does not support {params.dtype} (supported: {', '.join(target.dtypes)})")
        if params.dtype == "fp16" and not target.is_gpu:
            reasons.append("fp16 on a CPU target runs through slow reference kernels; use bf16 or fp32")
        return reasons

    @classmethod
    def apply(cls, candidate, params, ctx):
        from optpipe.runtime.dtypes import torch_dtype

        candidate.model.to(torch_dtype(params.dtype))
        return candidate.with_settings(dtype=params.dtype)

    @classmethod
    def weights_after(cls, params, parent):
        return parent.model_copy(update={"dtype": params.dtype})
