"""Load a resolved model source as a plain (unquantized) transformers model + tokenizer."""

from __future__ import annotations

from optpipe.errors import InvalidInputError, Problem
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
    if dtype is None:
        dtype = "fp32" if resolved.gguf_file else "auto"
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            resolved.location, dtype="auto" if dtype == "auto" else torch_dtype(dtype), **kwargs
        )
    except OSError as exc:
        if resolved.kind != "hub":
            raise
        raise _hub_unavailable(resolved, exc) from None
    if resolved.gguf_file:
        _forget_gguf_origin(model)
    model.eval()
    _fix_generation_eos(model, tokenizer)
    return model, tokenizer


def _hub_unavailable(resolved: ResolvedModel, exc: OSError) -> InvalidInputError:
    """A hub model neither reachable nor in the local hub cache: a plain message, not transformers' traceback."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InvalidInputError(
        [
            Problem(
                "<recipe>",
                None,
                "model.source",
                resolved.location,
                f"cannot load {resolved.location}@{resolved.revision or 'main'} from the hub or the local hub cache "
                f"({first}); point model.source at a local copy of the model (config.json + *.safetensors)",
            )
        ]
    )


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
