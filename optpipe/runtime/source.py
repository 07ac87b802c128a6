"""Load a resolved model source as a plain (unquantized) transformers model + tokenizer."""

from __future__ import annotations

from optpipe.runtime.dtypes import torch_dtype
from optpipe.spec.model_source import ResolvedModel


def load_model(resolved: ResolvedModel, dtype: str | None = None):
    """Load (model, tokenizer) as a plain transformers model on the CPU, in the checkpoint's own
    dtype by default: bf16/fp16 as saved, fp32 for fp32 checkpoints and for GGUF files (transformers
    de-quantizes them to fp32). Never cast up: an 8B bf16 model stays 16 GB, not 32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # optpipe shows its own progress
    kwargs = {"trust_remote_code": resolved.trust_remote_code}
    if resolved.revision:
        kwargs["revision"] = resolved.revision
    if resolved.gguf_file:
        kwargs["gguf_file"] = resolved.gguf_file
    tokenizer = AutoTokenizer.from_pretrained(resolved.location, **kwargs)
    if dtype is None:
        dtype = "fp32" if resolved.gguf_file else "auto"
    model = AutoModelForCausalLM.from_pretrained(
        resolved.location, dtype="auto" if dtype == "auto" else torch_dtype(dtype), **kwargs
    )
    if resolved.gguf_file:
        _forget_gguf_origin(model)
    model.eval()
    _fix_generation_eos(model, tokenizer)
    return model, tokenizer


def _forget_gguf_origin(model) -> None:
    """transformers marks GGUF-loaded models as quantized and then refuses to save them; the
    weights are already de-quantized to plain tensors, so drop the marker (weights unchanged)."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def _fix_generation_eos(model, tokenizer) -> None:
    """Chat models end turns with their EOS token; make generation stop on it."""
    gen = getattr(model, "generation_config", None)
    if gen is not None and tokenizer.eos_token_id is not None and gen.eos_token_id is None:
        gen.eos_token_id = tokenizer.eos_token_id
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
