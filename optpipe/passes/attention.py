"""attention: choose the attention kernel (eager matmul+softmax, torch SDPA, flash-attention 2/3).

Changes what runs: the model's attention implementation is switched in place through transformers
and recorded in the runtime settings, which `optpipe.load` re-applies.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from optpipe.passes.base import Pass, PassParams


class AttentionParams(PassParams):
    kind: Literal["attention"] = Field("attention", alias="pass")
    implementation: Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3"] = Field(
        description="Attention kernel: eager, sdpa (torch scaled_dot_product_attention), "
        "flash_attention_2 (needs flash-attn and an Ampere+ GPU), flash_attention_3 (Hopper)."
    )


_FLASH = {"flash_attention_2": ("flash-attn", 8.0), "flash_attention_3": ("flash-attn-3", 9.0)}


class Attention(Pass):
    name = "attention"
    Params = AttentionParams
    summary = "Switch the attention implementation (eager / sdpa / flash)."
    requires = "flash variants: CUDA, fp16/bf16, the flash-attn package, compute capability >= 8.0 (fa3: 9.0)"

    @classmethod
    def requirements(cls, params, target, env) -> list[str]:
        if params.implementation not in _FLASH:
            return []
        package, min_cc = _FLASH[params.implementation]
        reasons = []
        if not target.is_gpu:
            reasons.append(f"{params.implementation} needs an NVIDIA GPU target; {target.name} is {target.kind}")
        elif target.compute_capability and float(target.compute_capability) < min_cc:
            reasons.append(
                f"{params.implementation} needs compute capability >= {min_cc}; {target.name} has {target.compute_capability}"
            )
        if not env.has_cuda:
            reasons.append(f"{params.implementation} needs CUDA; this host has no CUDA device")
        if not env.has_package(package):
            reasons.append(f"{params.implementation} needs the '{package}' package (not installed)")
        return reasons

    @classmethod
    def apply(cls, candidate, params, ctx):
        candidate.model.set_attn_implementation(params.implementation)
        return candidate.with_settings(attn_implementation=params.implementation)
