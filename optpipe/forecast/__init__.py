"""Plan before loading: predict a candidate's memory and decode speed from its config and checkpoint
headers alone, so `optpipe plan` can say which candidates can fit a target and how fast they could
run there before any weight is read. Nothing here imports torch, and no reader touches weight data.

What is predicted, from what:

- ModelShape (shape.py): sizes from config.json or GGUF metadata; parameter counts, split into
  embedding / lm_head / decoder Linears / other, from safetensors headers (8 + N bytes per file) or
  GGUF tensor infos; for .bin checkpoints and hub configs, computed for the Llama-family layout.
- Weight bytes (formats.py): decoder Linears in the candidate's format (data + scales/zero points +
  padding, per library layout, cited there), everything else in the compute dtype, because
  transformers' quantizers leave embeddings, lm_head and norms alone. Where the runtime
  decompresses (compressed-tensors GPTQ/AWQ in transformers), "resident" bytes are the dense ones.
- Memory (memory.py): peak = weights + KV + activations + runtime overhead, with
  KV = 2 x layers x kv_heads x head_dim x (prompt + new) x batch x bytes,
  activations ~ batch x vocab x 4 (last-position fp32 logits) + batch x prompt x intermediate x 2 x dtype,
  overhead = 0.5 GB on CUDA (context + allocator slack; a parameter), 0 on CPU.
- Speed (speed.py): bytes per decode step = resident decoder Linears + output head + norms (not the
  embedding table: one row per token) + batch x KV bytes per token x context. Roofline tok/s =
  batch x bandwidth / bytes. A calibrated two-term model t = fixed + bytes / (efficiency x spec
  bandwidth), fitted by OLS on measured steps, projects tok/s to another GPU with error bounds.
- Candidates (candidates.py): one row per chain candidate: format, weight/KV/peak GB, fits, roofline.

Assumptions to keep in view: layouts are those of the library versions optpipe pins (formats.py);
activations are an estimate (SDPA attention, no eager score matrix); the build of GPTQ/AWQ needs
the dense parent in memory, which the runtime forecast does not cover; speed projection assumes the
fixed cost transfers between GPUs of one software stack and efficiency transfers as a fraction of
spec bandwidth.
"""

from __future__ import annotations

from optpipe.forecast.candidates import (
    TABLE_COLUMNS,
    CandidateForecast,
    CandidateSpec,
    forecast_chain,
    render_table,
)
from optpipe.forecast.formats import (
    METHODS,
    WeightFormat,
    decoder_linear_bytes,
    weight_bytes,
    weight_format,
)
from optpipe.forecast.memory import (
    CUDA_RUNTIME_OVERHEAD_BYTES,
    MemoryForecast,
    activation_bytes,
    kv_cache_bytes,
    predict_memory,
)
from optpipe.forecast.shape import (
    LinearShape,
    ModelShape,
    read_gguf,
    read_hf_directory,
    shape_from_config,
)
from optpipe.forecast.speed import (
    SpeedForecast,
    StepTimeModel,
    bytes_per_decode_step,
    fit_step_time,
    project,
    roofline_tok_s,
    weight_bytes_read_per_step,
)

__all__ = [
    "CUDA_RUNTIME_OVERHEAD_BYTES",
    "METHODS",
    "TABLE_COLUMNS",
    "CandidateForecast",
    "CandidateSpec",
    "LinearShape",
    "MemoryForecast",
    "ModelShape",
    "SpeedForecast",
    "StepTimeModel",
    "WeightFormat",
    "activation_bytes",
    "bytes_per_decode_step",
    "decoder_linear_bytes",
    "fit_step_time",
    "forecast_chain",
    "kv_cache_bytes",
    "predict_memory",
    "project",
    "read_gguf",
    "read_hf_directory",
    "render_table",
    "roofline_tok_s",
    "shape_from_config",
    "weight_bytes",
    "weight_bytes_read_per_step",
    "weight_format",
]
