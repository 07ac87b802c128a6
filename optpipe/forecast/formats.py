"""How many bytes each weight format takes, in one table: `weight_format` below is the only place
that knows a library's layout. Quantized methods are optpipe's quantize-pass names.

Every method replaces only the decoder's Linears; embeddings, lm_head and norms stay in the compute
dtype (transformers' quantizers skip lm_head and embeddings by default). Where each number comes
from (the library versions installed with optpipe when this was written: torchao 0.18,
bitsandbytes 0.50, compressed-tensors 0.20, transformers 5.24):

- fp32/fp16/bf16: 4/2/2 bytes per parameter.
- torchao-int8wo, torchao-int8dq: torchao `Int8Tensor` (config version 2): `qdata` int8 [N, K] plus,
  per output row, an fp32 `scale` and an int8 `zero_point` (torchao 0.18 `Int8Tensor.from_hp`:
  `scale_dtype=torch.float32, zero_point_dtype=torch.int8`, zero point kept even though symmetric;
  checked on CPU against the installed torchao). Earlier releases kept the scale in the weight dtype
  and no zero point: at most 3 bytes per row of difference.
- torchao-int4wo: `Int4TilePackedTo4dTensor`: int4 packed in int32 (0.5 byte) plus `scale_and_zero`
  [K/g, N, 2] in bf16 (scale and zero point, 2 bytes each, per group of g); K is padded to a multiple
  of 1024 and N to a multiple of 8 before packing (so a 576-wide model stores 1024 columns). bf16 only.
- torchao-int4-gemlite: `UIntxBitPackedTensor` (HQQ int4 packed by gemlite's A16Wn): 0.5 byte plus an
  fp16 scale and an fp16 zero point per group; runs in fp16 (optpipe.passes.quantize.method_dtype).
  Gemlite's packing may pad; not modelled.
- gptq-4bit, awq-4bit: compressed-tensors `pack-quantized`, symmetric W4A16: `weight_packed` int32
  (0.5 byte), `weight_scale` [N, K/g] in the model dtype, no zero point (symmetric), `weight_shape`
  int64[2]. transformers leaves the module compressed at load and compressed-tensors decompresses it
  on the first forward pass (`ModelCompressor.add_decompress_hook`): during decode the Linears are
  dense in the model dtype and keep `weight_scale` and `weight_shape`. `resident_linear_bytes` carries
  that. (Checked on CPU: a tiny Llama packed by optpipe's GPTQ packer, saved and loaded back, holds
  exactly the stored and resident bytes predicted here, before and after its first forward.)
- bnb-int8: `Int8Params`: `CB` int8 [N, K] plus `SCB` fp32 per row.
- bnb-nf4, bnb-fp4: `Params4bit`: two 4-bit codes per uint8 (0.5 byte) and one absmax per block of 64
  over the flattened tensor; fp32 absmax, or with double quant (optpipe's default) a uint8 absmax plus
  an fp32 second-level absmax per 256 blocks (`quantize_blockwise(absmax - offset, blocksize=256)`);
  per tensor a 16-entry fp32 code, and with double quant a 256-entry fp32 code and an fp32 offset.
- torchao-float8wo: `Float8Tensor`, PerRow granularity (the config default): 1 byte plus an fp32 scale
  per row (`_choose_scale_float8(scale_dtype=float32)`).

bnb-int8, bnb-nf4/fp4, torchao-int8wo/int8dq and torchao-float8wo were checked byte for byte against
the installed libraries on CPU; the torchao int4 and gemlite layouts need CUDA and were read from source.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from optpipe.forecast.dtypes import DTYPE_BYTES, normalize_dtype

if TYPE_CHECKING:
    from optpipe.forecast.shape import ModelShape

ScaleLayout = Literal["none", "row", "group", "block"]

METHODS = (
    "bnb-int8",
    "bnb-nf4",
    "bnb-fp4",
    "torchao-int8wo",
    "torchao-int8dq",
    "torchao-int4wo",
    "torchao-float8wo",
    "torchao-int4-gemlite",
    "gptq-4bit",
    "awq-4bit",
)


class WeightFormat(BaseModel):
    """Bytes of one weight format. A decoder Linear of shape (N, K) takes
    N' K' linear_bytes + scales + tensor_bytes, with N', K' padded to pad_out, pad_in and scales
    'row': N' scale_bytes; 'group': N' ceil(K'/group_size) scale_bytes; 'block': one scale_bytes per
    group_size elements of the flattened tensor, plus nested_bytes per nested_block blocks."""

    model_config = ConfigDict(frozen=True)

    name: str
    compute_dtype: str  # activations, KV cache, embeddings, lm_head, norms
    dense_bytes: float  # per parameter outside the decoder Linears
    linear_bytes: float  # per parameter of a decoder Linear, as stored
    scale_layout: ScaleLayout = "none"
    group_size: int = 0
    scale_bytes: float = 0.0
    nested_block: int = 0
    nested_bytes: float = 0.0
    tensor_bytes: int = 0
    pad_in: int = 1
    pad_out: int = 1
    resident_linear_bytes: float | None = None  # per parameter while decoding, when the runtime decompresses
    quantized_head: bool = False  # the output head stored like a decoder Linear (untied from the embedding)
    source: str = ""

    def linear_tensor_bytes(self, out_features: int, in_features: int, resident: bool = True) -> int:
        """Bytes of one decoder Linear: `resident` = while decoding, else as stored/packed."""
        n = math.ceil(out_features / self.pad_out) * self.pad_out
        k = math.ceil(in_features / self.pad_in) * self.pad_in
        decompressed = resident and self.resident_linear_bytes is not None
        per = self.resident_linear_bytes if decompressed else self.linear_bytes
        total = n * k * per
        if self.scale_layout == "row":
            total += n * self.scale_bytes
        elif self.scale_layout == "group":
            total += n * math.ceil(k / self.group_size) * self.scale_bytes
        elif self.scale_layout == "block":
            blocks = math.ceil(n * k / self.group_size)
            total += blocks * self.scale_bytes
            if self.nested_block:
                total += math.ceil(blocks / self.nested_block) * self.nested_bytes
        return round(total + self.tensor_bytes)

    def linear_bytes_per_param(self, out_features: int = 4096, in_features: int = 4096, resident: bool = True) -> float:
        """Average bytes per parameter of a Linear of this size (scales included)."""
        return self.linear_tensor_bytes(out_features, in_features, resident) / (out_features * in_features)


def weight_format(
    dtype: str, quantization: str | None = None, group_size: int = 128, double_quant: bool = True, quantize_lm_head: bool = False
) -> WeightFormat:
    """The format of a candidate: compute `dtype` ("bf16", "bfloat16", ...) plus a quantize-pass
    method or None; `quantize_lm_head` (torchao methods) stores the output head in the method's format
    too. See the module docstring for where each number comes from."""
    fmt = _linear_format(dtype, quantization, group_size, double_quant)
    if not quantize_lm_head:
        return fmt
    if not (quantization or "").startswith("torchao-"):
        raise ValueError(f"quantize_lm_head needs a torchao method, not {quantization or fmt.name}")
    return fmt.model_copy(update={"quantized_head": True, "name": f"{fmt.name}+head"})


def _linear_format(dtype: str, quantization: str | None, group_size: int, double_quant: bool) -> WeightFormat:
    dt = normalize_dtype(dtype)
    b = DTYPE_BYTES[dt]
    if quantization is None:
        return WeightFormat(name=dt, compute_dtype=dt, dense_bytes=b, linear_bytes=b, source="dense")
    q = quantization
    if q not in METHODS:
        raise ValueError(f"unknown quantization method {q!r}; known: {', '.join(METHODS)}")
    if q in ("torchao-int4wo", "torchao-int4-gemlite", "gptq-4bit", "awq-4bit") and group_size <= 0:
        raise ValueError(f"{q} needs a positive group_size")
    name = f"{q} g{group_size}" if q in ("torchao-int4wo", "torchao-int4-gemlite", "gptq-4bit", "awq-4bit") else q
    common = {"name": name, "compute_dtype": dt, "dense_bytes": b}
    if q in ("torchao-int8wo", "torchao-int8dq"):
        return WeightFormat(
            **common,
            linear_bytes=1,
            scale_layout="row",
            scale_bytes=4 + 1,
            source="torchao Int8Tensor v2: int8 qdata + per-row fp32 scale and int8 zero point",
        )
    if q == "torchao-int4wo":
        if dt != "bf16":
            raise ValueError(f"torchao-int4wo (Int4TilePackedTo4dTensor) supports bf16 only, not {dt}")
        return WeightFormat(
            **common,
            linear_bytes=0.5,
            scale_layout="group",
            group_size=group_size,
            scale_bytes=4,
            pad_in=1024,
            pad_out=8,
            source="torchao Int4TilePackedTo4dTensor: int4 in int32 + bf16 scale and zero per group; K padded to 1024, N to 8",
        )
    if q == "torchao-int4-gemlite":
        return WeightFormat(
            name=name,
            compute_dtype="fp16",
            dense_bytes=DTYPE_BYTES["fp16"],
            linear_bytes=0.5,
            scale_layout="group",
            group_size=group_size,
            scale_bytes=4,
            source="torchao UIntxBitPackedTensor (gemlite A16Wn): int4 packed + fp16 scale and zero per group; runs fp16",
        )
    if q in ("gptq-4bit", "awq-4bit"):
        return WeightFormat(
            **common,
            linear_bytes=0.5,
            scale_layout="group",
            group_size=group_size,
            scale_bytes=b,
            tensor_bytes=16,
            resident_linear_bytes=b,
            source="compressed-tensors pack-quantized symmetric: int4 in int32 + scale per group "
            "(model dtype) + weight_shape; decompressed to dense on the first forward",
        )
    if q == "bnb-int8":
        return WeightFormat(
            **common,
            linear_bytes=1,
            scale_layout="row",
            scale_bytes=4,
            source="bitsandbytes Int8Params: int8 CB + fp32 SCB per row",
        )
    if q in ("bnb-nf4", "bnb-fp4"):
        if double_quant:
            return WeightFormat(
                **common,
                linear_bytes=0.5,
                scale_layout="block",
                group_size=64,
                scale_bytes=1,
                nested_block=256,
                nested_bytes=4,
                tensor_bytes=16 * 4 + 256 * 4 + 4,
                source="bitsandbytes Params4bit, double quant: uint8 absmax per 64 + fp32 per 256 blocks",
            )
        return WeightFormat(
            **common,
            linear_bytes=0.5,
            scale_layout="block",
            group_size=64,
            scale_bytes=4,
            tensor_bytes=16 * 4,
            source="bitsandbytes Params4bit: fp32 absmax per block of 64",
        )
    # torchao-float8wo
    return WeightFormat(
        **common,
        linear_bytes=1,
        scale_layout="row",
        scale_bytes=4,
        source="torchao Float8Tensor PerRow: float8 e4m3 + fp32 scale per row",
    )


def decoder_linear_bytes(shape: ModelShape, fmt: WeightFormat, resident: bool = True) -> int:
    return sum(ls.count * fmt.linear_tensor_bytes(ls.out_features, ls.in_features, resident) for ls in shape.decoder_linears)


def head_bytes(shape: ModelShape, fmt: WeightFormat) -> int:
    """The output head as a decode step reads it: quantized, or the dense matrix (the embedding when tied)."""
    if fmt.quantized_head:
        return fmt.linear_tensor_bytes(shape.head_matrix_params // shape.hidden_size, shape.hidden_size)
    return round(shape.head_matrix_params * fmt.dense_bytes)


def dense_part_bytes(shape: ModelShape, fmt: WeightFormat) -> int:
    """Embedding, untied lm_head and norms/biases in the compute dtype; a quantized head is untied and
    counted in its own format."""
    dense = round((shape.embedding_params + shape.other_params) * fmt.dense_bytes)
    if fmt.quantized_head:
        return dense + head_bytes(shape, fmt)
    return dense + round(shape.lm_head_params * fmt.dense_bytes)


def weight_bytes(shape: ModelShape, fmt: WeightFormat, resident: bool = True) -> int:
    """All weights of `shape` in `fmt`: `resident` = held in memory while decoding, else as stored."""
    return decoder_linear_bytes(shape, fmt, resident) + dense_part_bytes(shape, fmt)
