from __future__ import annotations

import pytest

from optpipe.forecast import (
    kv_cache_bytes,
    predict_memory,
    read_hf_directory,
    shape_from_config,
    weight_bytes,
    weight_format,
)
from optpipe.forecast.memory import activation_bytes

L8B_LINEARS = 32 * (2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 14336 * 4096)
L8B_DENSE = 2 * 128256 * 4096 + 65 * 4096  # embedding + lm_head + norms


def test_bf16_weights_and_kv(llama8b):
    s = shape_from_config(llama8b)
    assert weight_bytes(s, weight_format("bfloat16")) == 16_060_522_496
    assert weight_bytes(s, weight_format("fp32")) == 2 * 16_060_522_496
    assert kv_cache_bytes(s, tokens=1, batch=1) == 131_072
    assert kv_cache_bytes(s, tokens=640, batch=4, kv_dtype_bytes=4) == 131_072 * 2 * 640 * 4


def test_int4_torchao_g128_by_hand(llama8b):
    s = shape_from_config(llama8b)
    # every Linear: 4 bits per weight + a bf16 scale and a bf16 zero point per 128 weights of a row;
    # 4096 and 14336 are multiples of 1024 (tile packing pads K to 1024), out dims multiples of 8
    int4_linears = L8B_LINEARS // 2 + (L8B_LINEARS // 128) * 4
    assert int4_linears == 3_489_660_928 + 218_103_808
    assert weight_bytes(s, weight_format("bf16", "torchao-int4wo", 128)) == int4_linears + L8B_DENSE * 2 == 5_809_643_520


def test_int4_tile_padding_on_a_narrow_model():
    # SmolLM2-135M-like: hidden 576 is padded to 1024 columns by Int4TilePackedTo4dTensor
    fmt = weight_format("bf16", "torchao-int4wo", 64)
    assert fmt.linear_tensor_bytes(576, 576) == 576 * 1024 // 2 + 576 * (1024 // 64) * 4
    assert fmt.linear_tensor_bytes(1536, 576) == 1536 * 1024 // 2 + 1536 * 16 * 4


def test_row_and_block_layouts_by_hand():
    n, k = 14336, 4096
    assert weight_format("bf16", "torchao-int8wo").linear_tensor_bytes(n, k) == n * k + n * (4 + 1)
    assert weight_format("fp32", "torchao-int8dq").linear_tensor_bytes(n, k) == n * k + n * (4 + 1)
    assert weight_format("bf16", "bnb-int8").linear_tensor_bytes(n, k) == n * k + n * 4
    assert weight_format("bf16", "torchao-float8wo").linear_tensor_bytes(n, k) == n * k + n * 4
    blocks = n * k // 64
    assert weight_format("bf16", "bnb-nf4", double_quant=False).linear_tensor_bytes(n, k) == n * k // 2 + blocks * 4 + 64
    nested = -(-blocks // 256)
    assert weight_format("bf16", "bnb-fp4").linear_tensor_bytes(n, k) == n * k // 2 + blocks + nested * 4 + 1092


def test_gptq_is_packed_on_disk_dense_while_decoding(llama8b):
    s = shape_from_config(llama8b)
    fmt = weight_format("bf16", "gptq-4bit", 128)
    scales = L8B_LINEARS // 128 * 2
    assert weight_bytes(s, fmt, resident=False) == L8B_LINEARS // 2 + scales + 224 * 16 + L8B_DENSE * 2
    assert weight_bytes(s, fmt, resident=True) == L8B_LINEARS * 2 + scales + 224 * 16 + L8B_DENSE * 2
    m = predict_memory(s, fmt, 512, 128)
    assert m.weight_bytes > m.stored_weight_bytes


def test_gemlite_runs_fp16_and_int4wo_needs_bf16():
    assert weight_format("bf16", "torchao-int4-gemlite").compute_dtype == "fp16"
    with pytest.raises(ValueError, match="bf16 only"):
        weight_format("fp16", "torchao-int4wo")
    with pytest.raises(ValueError, match="unknown quantization"):
        weight_format("bf16", "int3-magic")
    with pytest.raises(ValueError, match="unknown dtype"):
        weight_format("int8")


def test_bf16_does_not_fit_8gb_and_int4_does(llama8b):
    s = shape_from_config(llama8b)
    bf16 = predict_memory(s, weight_format("bf16"), prompt_tokens=512, new_tokens=128, batch=1)
    assert bf16.kv_cache_bytes == 131_072 * 640
    assert bf16.runtime_overhead_bytes == 500_000_000
    assert bf16.peak_bytes == bf16.weight_bytes + bf16.kv_cache_bytes + bf16.activation_bytes + bf16.runtime_overhead_bytes
    assert bf16.peak_bytes > 8e9
    ok, reason = bf16.fits(8e9)
    assert not ok
    assert reason.startswith("needs 16.67 GB (weights 16.06 + KV 0.08") and reason.endswith("> 8.0 GB")
    int4 = predict_memory(s, weight_format("bf16", "torchao-int4wo", 128), 512, 128, 1)
    ok, reason = int4.fits(8e9)
    assert ok and "<= 8.0 GB" in reason
    # the verdict is on the peak, not the weights alone; the limit itself still fits
    assert not int4.fits(int4.weight_bytes + int4.kv_cache_bytes)[0]
    assert int4.fits(int4.peak_bytes)[0]


def test_activation_estimate(llama8b):
    s = shape_from_config(llama8b)
    assert activation_bytes(s, 512, 2, 2) == 2 * 128256 * 4 + 2 * 512 * 14336 * 2 * 2
    assert activation_bytes(s, 512, 2, 2, last_logit_only=False) == 2 * 512 * 128256 * 4 + 2 * 512 * 14336 * 2 * 2


def test_cpu_has_no_overhead_and_overhead_is_a_parameter(tiny_hf_dir):
    s = read_hf_directory(tiny_hf_dir)
    fmt = weight_format(s.dtype)
    assert predict_memory(s, fmt, 16, 8, device="cpu").runtime_overhead_bytes == 0
    assert predict_memory(s, fmt, 16, 8, device="cuda", runtime_overhead_bytes=123).runtime_overhead_bytes == 123
    m = predict_memory(s, fmt, 16, 8, device="cpu")
    assert m.weight_bytes == s.checkpoint_weight_bytes  # fp16 checkpoint held as fp16
    assert m.kv_cache_bytes == 2 * 2 * 2 * 16 * 24 * 2


def test_format_per_param_view():
    fmt = weight_format("bf16", "torchao-int4wo", 128)
    assert fmt.linear_bytes_per_param(4096, 4096) == pytest.approx(0.5 + 4 / 128)
    assert weight_format("bf16").linear_bytes_per_param() == 2


def test_quantized_head_is_counted_in_its_format(llama8b):
    """quantize_lm_head: the head leaves the dense part and is stored (and read each step) like a Linear."""
    from optpipe.forecast.speed import weight_bytes_read_per_step

    s = shape_from_config(llama8b)
    plain, head = weight_format("bf16", "torchao-int4wo"), weight_format("bf16", "torchao-int4wo", quantize_lm_head=True)
    head_dense = 128256 * 4096 * 2
    head_int4 = 128256 * 4096 // 2 + 128256 * (4096 // 128) * 4  # int4 + bf16 scale and zero per group of 128
    assert weight_bytes(s, plain) - weight_bytes(s, head) == head_dense - head_int4
    assert weight_bytes_read_per_step(s, plain) - weight_bytes_read_per_step(s, head) == head_dense - head_int4
    assert head.name.endswith("+head") and head.quantized_head
    with pytest.raises(ValueError, match="needs a torchao method"):
        weight_format("bf16", "bnb-nf4", quantize_lm_head=True)
