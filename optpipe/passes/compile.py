"""compile: static KV cache + torch.compile of the decode step, captured in CUDA graphs.

Weights are unchanged; the pass changes how the candidate decodes: a KV cache allocated once at
`max_cache_len`, the one-token step compiled with `fullgraph=True`
and `mode="reduce-overhead"` (CUDA graphs: one graph replay per token instead of hundreds of
kernel launches), the prefill compiled separately. The step is optpipe's fused Llama-family step
(`optpipe.runtime.fused_decode`, q|k|v and gate|up fused) where the model supports it, else the model's own
forward (`optpipe.runtime.decode.StaticGraphDecoder`). The setting is saved in the artifact's
`optpipe_runtime.json`, so `optpipe.load(dir).decoder()` rebuilds the same compiled generator.
Accuracy is evaluated with the model's regular forward on the same weights.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from optpipe.errors import PassFailed
from optpipe.passes.base import Pass, PassParams

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo2", "granite")


class CompileParams(PassParams):
    kind: Literal["compile"] = Field("compile", alias="pass")
    mode: Literal["reduce-overhead", "max-autotune", "default"] = Field(
        "reduce-overhead", description="torch.compile mode of the decode step; reduce-overhead uses CUDA graphs."
    )
    max_cache_len: int = Field(4096, ge=16, description="Static KV-cache length: the longest prompt + generation served.")
    step: Literal["auto", "fused", "transformers"] = Field(
        "auto",
        description="What runs inside the graph. fused: optpipe's own Llama-family step with fused q|k|v and "
        "gate|up projections (optpipe/runtime/fused_decode.py); transformers: the model's own forward; auto: fused where "
        "supported (Llama, Mistral, Qwen2, Qwen3), else transformers.",
    )
    inductor_tuning: bool = Field(True, description="Inductor coordinate-descent tuning of the fused step (gpt-fast's setting).")
    attention: Literal["eager", "keep"] = Field(
        "eager",
        description="Attention inside the compiled step. eager lets Inductor fuse it; measured faster than "
        "SDPA's fallback kernels for one-token queries on an H100 (docs/gpu.md). keep: leave the model's choice.",
    )


class Compile(Pass):
    name = "compile"
    Params = CompileParams
    summary = "Static KV cache + torch.compile'd decode step in CUDA graphs (gpt-fast style)."
    requires = "CUDA for mode reduce-overhead (CUDA graphs); a Llama/Qwen/Mistral/Gemma-style decoder; triton"

    @classmethod
    def requirements(cls, params, target, env) -> list[str]:
        reasons = []
        if params.mode == "reduce-overhead" and not env.has_cuda:
            reasons.append(
                "mode reduce-overhead captures CUDA graphs and needs a CUDA device; this host has none "
                "(on CPU, torch.compile gave no decode gain for small models: use mode default to try)"
            )
        if env.has_cuda and not env.has_package("triton"):
            reasons.append("torch.compile on CUDA needs triton (not installed)")
        return reasons

    @classmethod
    def apply(cls, candidate, params, ctx):
        model_type = getattr(candidate.model.config, "model_type", "?")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise PassFailed(f"compile pass supports {', '.join(SUPPORTED_MODEL_TYPES)} decoders; this model is {model_type!r}")
        from optpipe.runtime.fused_decode import unsupported_reason

        step = params.step
        reason = unsupported_reason(candidate.model, params.max_cache_len)
        if step == "fused" and reason:
            raise PassFailed(f"compile step 'fused' cannot run this model: {reason}; use step: transformers")
        if step == "auto":
            step = "transformers" if reason else "fused"
        spec = {"mode": params.mode, "max_cache_len": params.max_cache_len, "step": step}
        if step == "fused":
            spec["inductor_tuning"] = params.inductor_tuning
        settings = {"compile": spec}
        if params.attention == "eager" and step == "transformers":
            candidate.model.set_attn_implementation("eager")
            settings["attn_implementation"] = "eager"
        return candidate.with_settings(**settings)
