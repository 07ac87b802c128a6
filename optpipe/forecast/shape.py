"""What a model is, in numbers a forecast needs: architecture sizes and parameter counts split by
what quantizers do to them. Weight quantizers (bitsandbytes, torchao, compressed-tensors through
transformers) replace the decoder's q/k/v/o/gate/up/down Linears and leave the embedding, the
lm_head and the norms in the compute dtype, so those are counted apart.

Counts come from checkpoint headers when there are any (exact, whatever the architecture), or
from the config for the Llama-family layout (hub ids, .bin checkpoints, tests). `source` says which.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from optpipe.forecast.dtypes import (
    DTYPE_BYTES,
    normalize_dtype,
    safetensors_float_dtype,
)
from optpipe.forecast.headers import (
    TensorInfo,
    read_gguf_header,
    read_safetensors_header,
    safetensors_files,
)

SOURCE_HEADERS = "safetensors headers"
SOURCE_CONFIG = "config (computed)"
SOURCE_GGUF = "gguf header"

# model_types whose decoder is exactly the layout shape_from_config computes
LLAMA_FAMILY = frozenset({"llama", "mistral", "qwen2", "qwen3"})

_HF_LINEAR = re.compile(r"(^|\.)layers\.\d+\..*_proj\.weight$")
_GGUF_LINEAR = re.compile(r"^blk\.\d+\.(attn_(q|k|v|qkv|output)|ffn_(gate|up|down|gate_up))\.weight$")
_GGUF_NOT_PARAMS = frozenset({"rope_freqs.weight"})  # a RoPE buffer; transformers recomputes it


class LinearShape(BaseModel):
    """`count` decoder Linears of weight shape (out_features, in_features): layouts with per-row
    scales, per-group scales or padding need the shapes, not only the total."""

    model_config = ConfigDict(frozen=True)
    out_features: int
    in_features: int
    count: int

    @property
    def params(self) -> int:
        return self.out_features * self.in_features * self.count


class ModelShape(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    dtype: str  # the dtype transformers loads the weights in ("bf16"; "fp32" for a GGUF)
    embedding_params: int
    lm_head_params: int  # 0 when tied: the head reuses the embedding matrix
    decoder_linear_params: int  # q/k/v/o/gate/up/down of all layers: what weight quantizers replace
    other_params: int  # norms, biases
    decoder_linears: tuple[LinearShape, ...]
    checkpoint_weight_bytes: int  # tensors as stored in the checkpoint (GGUF: its quantized blocks)
    checkpoint_file_bytes: int = 0  # size of the files on disk (0 when computed from a config)
    stored_dtypes: dict[str, int] = {}  # params per dtype as stored ("BF16", "Q4_K", ...)
    source: Literal["safetensors headers", "config (computed)", "gguf header"]
    notes: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _linears_add_up(self) -> ModelShape:
        total = sum(s.params for s in self.decoder_linears)
        if total != self.decoder_linear_params:
            raise ValueError(f"decoder_linears hold {total} params, decoder_linear_params says {self.decoder_linear_params}")
        return self

    @property
    def total_params(self) -> int:
        return self.embedding_params + self.lm_head_params + self.decoder_linear_params + self.other_params

    @property
    def head_matrix_params(self) -> int:
        """Parameters the output head multiplies by each step (the embedding matrix when tied)."""
        return self.embedding_params if self.tie_word_embeddings else self.lm_head_params

    def kv_bytes_per_token(self, kv_dtype_bytes: float = 2) -> float:
        """K and V of every layer for one position of one sequence."""
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * kv_dtype_bytes

    def dense_weight_bytes(self, dtype: str | None = None) -> int:
        """All parameters in one float dtype (default: the load dtype), e.g. a GGUF once de-quantized."""
        return self.total_params * DTYPE_BYTES[normalize_dtype(dtype or self.dtype)]


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """Multimodal configs nest the language model's sizes under text_config."""
    if "hidden_size" not in config and isinstance(config.get("text_config"), dict):
        return {**config, **config["text_config"]}
    return config


def _config_dtype(cfg: dict[str, Any]) -> str | None:
    raw = cfg.get("dtype") or cfg.get("torch_dtype")
    return normalize_dtype(raw) if raw else None


def _aggregate(shapes: list[tuple[int, int]]) -> tuple[LinearShape, ...]:
    return tuple(LinearShape(out_features=o, in_features=i, count=c) for (o, i), c in sorted(Counter(shapes).items()))


def _sizes(cfg: dict[str, Any]) -> dict[str, int]:
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    return {
        "hidden_size": hidden,
        "intermediate_size": int(cfg["intermediate_size"]),
        "num_hidden_layers": int(cfg["num_hidden_layers"]),
        "num_attention_heads": heads,
        "num_key_value_heads": int(cfg.get("num_key_value_heads") or heads),
        "head_dim": int(cfg.get("head_dim") or hidden // heads),
        "vocab_size": int(cfg["vocab_size"]),
    }


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    """Parameter counts of the Llama-family layout computed from a config dict: per layer q/k/v/o and
    gate/up/down Linears, two RMSNorms, plus a final norm; biases where the config (or the family:
    Qwen2 has q/k/v biases, Qwen3 q/k norms) has them. Other model types get the same layout and a
    note that it is an approximation."""
    cfg = _text_config(config)
    s = _sizes(cfg)
    h, inter, n_layers = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"]
    q_out, kv_out = s["num_attention_heads"] * s["head_dim"], s["num_key_value_heads"] * s["head_dim"]
    model_type = str(cfg.get("model_type", "llama"))
    tied = bool(cfg.get("tie_word_embeddings", False))
    per_layer = [(q_out, h), (kv_out, h), (kv_out, h), (h, q_out), (inter, h), (inter, h), (h, inter)]
    linears = _aggregate(per_layer * n_layers)
    other_per_layer = 2 * h
    if cfg.get("attention_bias"):
        other_per_layer += q_out + 2 * kv_out + h
    elif model_type == "qwen2":
        other_per_layer += q_out + 2 * kv_out
    if cfg.get("mlp_bias"):
        other_per_layer += 2 * inter + h
    if model_type == "qwen3":
        other_per_layer += 2 * s["head_dim"]
    notes = []
    if model_type not in LLAMA_FAMILY:
        notes.append(f"model_type {model_type!r} counted with the Llama layout; its real layout may differ")
    dtype = _config_dtype(cfg)
    if dtype is None:
        notes.append("config names no dtype; assumed fp32 (transformers' default)")
        dtype = "fp32"
    embedding = s["vocab_size"] * h
    lm_head = 0 if tied else embedding
    decoder = sum(ls.params for ls in linears)
    other = n_layers * other_per_layer + h
    return ModelShape(
        model_type=model_type,
        **s,
        tie_word_embeddings=tied,
        dtype=dtype,
        embedding_params=embedding,
        lm_head_params=lm_head,
        decoder_linear_params=decoder,
        other_params=other,
        decoder_linears=linears,
        checkpoint_weight_bytes=(embedding + lm_head + decoder + other) * DTYPE_BYTES[dtype],
        source=SOURCE_CONFIG,
        notes=tuple(notes),
    )


def _classify_hf(name: str) -> str:
    if "embed_tokens" in name:
        return "embedding"
    if name.startswith("lm_head") or ".lm_head." in name:
        return "lm_head"
    if _HF_LINEAR.search(name):
        return "linear"
    return "other"


def read_hf_directory(path: str | Path) -> ModelShape:
    """A transformers checkpoint folder: config.json for the sizes, every safetensors header for the
    exact parameter counts. Without safetensors files (e.g. pytorch_model.bin, which is a pickle we
    will not open), or for an already-quantized checkpoint whose packed tensors do not have the
    logical shapes, the counts are computed from the config instead and `source` says so."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    files = safetensors_files(path)
    file_bytes = sum(f.stat().st_size for f in files)
    if not files:
        shape = shape_from_config(config)
        weights = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt*"))
        note = f"no safetensors files ({', '.join(weights) or 'no weight files'}): counts and bytes computed from config"
        return shape.model_copy(
            update={"notes": (*shape.notes, note), "checkpoint_file_bytes": sum((path / w).stat().st_size for w in weights)}
        )
    tensors: list[TensorInfo] = []
    for f in files:
        tensors.extend(read_safetensors_header(f)[0])
    stored = Counter()
    for t in tensors:
        stored[t.dtype] += t.numel
    stored_bytes = sum(t.nbytes for t in tensors)
    cfg = _text_config(config)
    if cfg.get("quantization_config"):
        shape = shape_from_config(config)
        method = cfg["quantization_config"].get("quant_method", "?")
        note = (
            f"checkpoint is already quantized ({method}): parameter counts computed from config, "
            "checkpoint bytes from the safetensors headers"
        )
        return shape.model_copy(
            update={
                "checkpoint_weight_bytes": stored_bytes,
                "checkpoint_file_bytes": file_bytes,
                "stored_dtypes": dict(stored),
                "notes": (*shape.notes, note),
            }
        )

    groups: dict[str, list[TensorInfo]] = {"embedding": [], "lm_head": [], "linear": [], "other": []}
    for t in tensors:
        groups[_classify_hf(t.name)].append(t)
    notes: list[str] = []
    has_head = bool(groups["lm_head"])
    tied = bool(cfg.get("tie_word_embeddings", not has_head))
    embedding = sum(t.numel for t in groups["embedding"])
    if tied:
        lm_head = 0
        if has_head:
            notes.append("tied embeddings but the checkpoint also stores lm_head: counted once (transformers ties them)")
    elif has_head:
        lm_head = sum(t.numel for t in groups["lm_head"])
    else:
        lm_head = embedding
        notes.append("untied lm_head missing from the checkpoint: counted as vocab x hidden (transformers allocates it)")
    linears = _aggregate([t.shape for t in groups["linear"] if len(t.shape) == 2])
    odd = [t for t in groups["linear"] if len(t.shape) != 2]
    other = sum(t.numel for t in groups["other"]) + sum(t.numel for t in odd)
    dtype = _config_dtype(cfg)
    if dtype is None:
        floats = Counter({safetensors_float_dtype(k): v for k, v in stored.items() if safetensors_float_dtype(k)})
        dtype = floats.most_common(1)[0][0] if floats else "fp32"
        notes.append(f"config names no dtype; {dtype} taken from the tensors")
    s = _sizes(cfg)
    return ModelShape(
        model_type=str(cfg.get("model_type", "unknown")),
        **s,
        tie_word_embeddings=tied,
        dtype=dtype,
        embedding_params=embedding,
        lm_head_params=lm_head,
        decoder_linear_params=sum(ls.params for ls in linears),
        other_params=other,
        decoder_linears=linears,
        checkpoint_weight_bytes=stored_bytes,
        checkpoint_file_bytes=file_bytes,
        stored_dtypes=dict(stored),
        source=SOURCE_HEADERS,
        notes=tuple(notes),
    )


def _gguf_int(meta: dict[str, Any], key: str, notes: list[str]) -> int | None:
    value = meta.get(key)
    if isinstance(value, dict):  # per-layer array (e.g. variable KV heads): the largest bounds memory
        values = value.get("values") or []
        if not values:
            return None
        notes.append(f"{key} varies by layer; the largest value ({max(values)}) is used")
        return int(max(values))
    return None if value is None else int(value)


def read_gguf(path: str | Path) -> ModelShape:
    """A GGUF file: sizes from `{arch}.*` metadata, vocab from the tokenizer's token list, counts from
    the tensor infos. transformers de-quantizes GGUF weights to fp32 when it loads them, so `dtype` is
    fp32: `checkpoint_weight_bytes` is the quantized size in the file, `dense_weight_bytes()` the size
    once loaded."""
    inv = read_gguf_header(path)
    meta = inv.metadata
    arch = str(meta.get("general.architecture", "llama"))
    notes: list[str] = ["GGUF: transformers de-quantizes to fp32 on load; dtype is the load dtype"]
    key = f"{arch}."

    def need(name: str) -> int:
        value = _gguf_int(meta, key + name, notes)
        if value is None:
            raise ValueError(f"{path}: GGUF metadata lacks {key + name}")
        return value

    groups: dict[str, list[TensorInfo]] = {"embedding": [], "lm_head": [], "linear": [], "other": []}
    for t in inv.tensors:
        if t.name in _GGUF_NOT_PARAMS:
            continue
        kind = (
            "embedding"
            if t.name == "token_embd.weight"
            else "lm_head"
            if t.name == "output.weight"
            else "linear"
            if _GGUF_LINEAR.match(t.name)
            else "other"
        )
        groups[kind].append(t)
    hidden, heads = need("embedding_length"), need("attention.head_count")
    kv_heads = _gguf_int(meta, key + "attention.head_count_kv", notes) or heads
    head_dim = _gguf_int(meta, key + "attention.key_length", notes) or hidden // heads
    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens:
        vocab = int(tokens["len"])
    elif groups["embedding"]:
        vocab = groups["embedding"][0].shape[0]
        notes.append("no tokenizer token list: vocab taken from token_embd")
    else:
        raise ValueError(f"{path}: neither a tokenizer token list nor token_embd.weight to size the vocab")
    tied = not groups["lm_head"]
    linears = _aggregate([t.shape for t in groups["linear"] if len(t.shape) == 2])
    stored = Counter()
    for t in inv.tensors:
        stored[t.dtype] += t.numel
    return ModelShape(
        model_type=arch,
        hidden_size=hidden,
        intermediate_size=need("feed_forward_length"),
        num_hidden_layers=need("block_count"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        dtype="fp32",
        embedding_params=sum(t.numel for t in groups["embedding"]),
        lm_head_params=sum(t.numel for t in groups["lm_head"]),
        decoder_linear_params=sum(ls.params for ls in linears),
        other_params=sum(t.numel for t in groups["other"]),
        decoder_linears=linears,
        checkpoint_weight_bytes=sum(t.nbytes for t in inv.tensors),
        checkpoint_file_bytes=inv.file_bytes,
        stored_dtypes=dict(stored),
        source=SOURCE_GGUF,
        notes=tuple(notes),
    )
