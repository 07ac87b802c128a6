from __future__ import annotations

import json
import os
import struct

import pytest

from optpipe.forecast import read_gguf, read_hf_directory, shape_from_config
from optpipe.forecast.headers import read_safetensors_header
from tests.forecast.tiny_checkpoints import (
    TINY,
    TINY_EMBEDDING,
    TINY_LINEARS,
    TINY_OTHER,
    tiny_tensors,
    write_tiny_gguf,
)


def test_llama31_8b_counts_from_config(llama8b):
    s = shape_from_config(llama8b)
    assert s.total_params == 8_030_261_248
    assert s.embedding_params == s.lm_head_params == 128256 * 4096
    assert s.decoder_linear_params == 32 * (2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 14336 * 4096)
    assert s.other_params == 65 * 4096
    assert s.dtype == "bf16" and s.head_dim == 128
    assert s.dense_weight_bytes() == s.checkpoint_weight_bytes == 16_060_522_496
    assert s.kv_bytes_per_token(2) == 131_072
    assert s.source == "config (computed)"


def test_tied_config_has_no_lm_head(llama8b):
    s = shape_from_config(llama8b | {"tie_word_embeddings": True})
    assert s.lm_head_params == 0 and s.head_matrix_params == s.embedding_params
    assert s.total_params == 8_030_261_248 - 128256 * 4096


def test_family_extras_and_unknown_type(llama8b):
    base = shape_from_config(llama8b).other_params
    qwen2 = shape_from_config(llama8b | {"model_type": "qwen2"})
    assert qwen2.other_params - base == 32 * (4096 + 2 * 1024)  # q/k/v biases
    qwen3 = shape_from_config(llama8b | {"model_type": "qwen3", "head_dim": 128})
    assert qwen3.other_params - base == 32 * 2 * 128  # q_norm, k_norm
    odd = shape_from_config(llama8b | {"model_type": "gpt_neox"})
    assert any("Llama layout" in n for n in odd.notes)


def test_config_without_dtype_says_fp32(llama8b):
    cfg = {k: v for k, v in llama8b.items() if k != "torch_dtype"}
    s = shape_from_config(cfg)
    assert s.dtype == "fp32" and any("no dtype" in n for n in s.notes)
    assert shape_from_config(cfg | {"dtype": "float16"}).dtype == "fp16"


def test_hf_directory_exact_counts(tiny_hf_dir):
    s = read_hf_directory(tiny_hf_dir)
    assert s.source == "safetensors headers"
    assert (s.embedding_params, s.lm_head_params) == (TINY_EMBEDDING, TINY_EMBEDDING)
    assert s.decoder_linear_params == TINY_LINEARS
    assert s.other_params == TINY_OTHER
    assert s.checkpoint_weight_bytes == 2 * s.total_params
    assert s.stored_dtypes == {"F16": s.total_params}
    assert {(ls.out_features, ls.in_features, ls.count) for ls in s.decoder_linears} == {
        (64, 64, 4),
        (32, 64, 4),
        (128, 64, 4),
        (64, 128, 2),
    }
    # the config computation agrees with the headers for a plain Llama
    c = shape_from_config(TINY)
    assert (c.embedding_params, c.lm_head_params, c.decoder_linear_params, c.other_params, c.decoder_linears) == (
        s.embedding_params,
        s.lm_head_params,
        s.decoder_linear_params,
        s.other_params,
        s.decoder_linears,
    )


def test_header_parser_agrees_with_safe_open(tiny_hf_dir):
    from safetensors import safe_open

    infos, _ = read_safetensors_header(tiny_hf_dir / "model.safetensors")
    with safe_open(str(tiny_hf_dir / "model.safetensors"), framework="numpy") as f:
        names = f.keys()  # safe_open is not a dict
        expected = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in names}
    assert {i.name: (i.shape, i.dtype) for i in infos} == expected


def test_truncated_data_still_reads(tiny_hf_dir):
    """Cut the file right after its header: the tensors' bytes are gone, the forecast is unchanged,
    so the reader never reads weight data (safetensors.safe_open itself refuses such a file)."""
    path = tiny_hf_dir / "model.safetensors"
    before = read_hf_directory(tiny_hf_dir)
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    os.truncate(path, 8 + n)
    assert path.stat().st_size == 8 + n < before.checkpoint_file_bytes
    after = read_hf_directory(tiny_hf_dir)
    assert after.model_copy(update={"checkpoint_file_bytes": 0}) == before.model_copy(update={"checkpoint_file_bytes": 0})


def test_sharded_checkpoint_uses_the_index(tmp_path):
    from safetensors.numpy import save_file

    tensors = tiny_tensors()
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for fname, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / fname))
    save_file(tensors, str(tmp_path / "consolidated.safetensors"))  # a stray copy transformers ignores
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}})
    )
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    s = read_hf_directory(tmp_path)
    assert s.decoder_linear_params == TINY_LINEARS and s.embedding_params == TINY_EMBEDDING
    assert s.checkpoint_weight_bytes == 2 * s.total_params  # not doubled by the stray copy


def test_bin_checkpoint_falls_back_to_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 128)
    s = read_hf_directory(tmp_path)
    assert s.source == "config (computed)"
    assert s.decoder_linear_params == TINY_LINEARS
    assert any("pytorch_model.bin" in n for n in s.notes)


def test_tied_checkpoint_without_lm_head(tiny_hf_dir):
    from safetensors.numpy import save_file

    tensors = tiny_tensors()
    del tensors["lm_head.weight"]
    save_file(tensors, str(tiny_hf_dir / "model.safetensors"))
    cfg = {k: v for k, v in TINY.items() if k != "tie_word_embeddings"}
    (tiny_hf_dir / "config.json").write_text(json.dumps(cfg))
    s = read_hf_directory(tiny_hf_dir)
    assert s.tie_word_embeddings and s.lm_head_params == 0


def test_gguf_reader(tiny_gguf):
    import gguf

    s = read_gguf(tiny_gguf)
    assert s.source == "gguf header" and s.model_type == "llama" and s.dtype == "fp32"
    assert (s.hidden_size, s.intermediate_size, s.num_hidden_layers) == (64, 128, 2)
    assert (s.num_attention_heads, s.num_key_value_heads, s.head_dim, s.vocab_size) == (4, 2, 16, 100)
    assert not s.tie_word_embeddings
    assert (s.embedding_params, s.lm_head_params) == (TINY_EMBEDDING, TINY_EMBEDDING)
    assert s.decoder_linear_params == TINY_LINEARS and s.other_params == TINY_OTHER  # rope_freqs left out
    assert {(ls.out_features, ls.in_features, ls.count) for ls in s.decoder_linears} == {
        (64, 64, 4),
        (32, 64, 4),
        (128, 64, 4),
        (64, 128, 2),
    }
    down = 2 * 64 * 128
    assert s.stored_dtypes == {"F32": s.total_params - down - TINY_EMBEDDING + 8, "Q8_0": down, "F16": TINY_EMBEDDING}
    q8_bytes = down // 32 * 34  # Q8_0: 32 int8 + one fp16 scale per block
    expected = (s.total_params - down - TINY_EMBEDDING + 8) * 4 + q8_bytes + TINY_EMBEDDING * 2
    assert s.checkpoint_weight_bytes == expected
    assert s.dense_weight_bytes() == 4 * s.total_params  # what transformers holds after de-quantizing
    assert s.checkpoint_file_bytes == tiny_gguf.stat().st_size
    assert gguf.GGUFReader(tiny_gguf).tensors  # the file is a real GGUF


def test_gguf_forecast_does_not_depend_on_tensor_data(tiny_gguf):
    """GGUFReader maps the whole file (it builds numpy views over the data, so a truncated file will not
    open), but only metadata and tensor infos are used: scrambling every data byte changes nothing."""
    import gguf

    before = read_gguf(tiny_gguf)
    start = gguf.GGUFReader(tiny_gguf).data_offset
    size = tiny_gguf.stat().st_size
    with tiny_gguf.open("r+b") as f:
        f.seek(start)
        f.write(os.urandom(size - start))
    assert read_gguf(tiny_gguf) == before


def test_gguf_tied_when_no_output_tensor(tmp_path):
    s = read_gguf(write_tiny_gguf(tmp_path / "tied.gguf", tied=True))
    assert s.tie_word_embeddings and s.lm_head_params == 0


def test_gguf_missing_metadata_is_named(tmp_path):
    import gguf

    path = tmp_path / "bad.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_embedding_length(64)
    w.add_tensor("token_embd.weight", tiny_tensors(dtype="float32")["model.embed_tokens.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="llama.attention.head_count"):
        read_gguf(path)


def test_quantized_checkpoint_counts_from_config(tiny_hf_dir):
    """Packed tensors (e.g. int32 weight_packed) do not have logical shapes: counts come from the
    config, stored bytes still from the headers."""
    cfg = TINY | {"quantization_config": {"quant_method": "compressed-tensors"}}
    (tiny_hf_dir / "config.json").write_text(json.dumps(cfg))
    s = read_hf_directory(tiny_hf_dir)
    assert s.source == "config (computed)" and any("already quantized (compressed-tensors)" in n for n in s.notes)
    assert s.decoder_linear_params == TINY_LINEARS
    assert s.checkpoint_weight_bytes == 2 * s.total_params and s.stored_dtypes == {"F16": s.total_params}
