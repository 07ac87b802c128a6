"""Tiny checkpoints written on the spot (safetensors + config.json, GGUF) and a Llama-3.1-8B
config dict, so the forecast tests download nothing and need no torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LLAMA_31_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "rms_norm_eps": 1e-5,
}

# tiny Llama: hidden 64, 4 heads of 16, 2 KV heads, MLP 128, 2 layers, vocab 100, untied, fp16
TINY = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
    "tie_word_embeddings": False,
    "dtype": "float16",
}
TINY_EMBEDDING = 100 * 64
TINY_LINEARS = 2 * (64 * 64 + 32 * 64 + 32 * 64 + 64 * 64 + 3 * 128 * 64)  # q, k, v, o, gate, up, down
TINY_OTHER = 2 * 2 * 64 + 64  # two norms per layer + the final norm


def tiny_tensors(dtype=np.float16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = {"model.embed_tokens.weight": (100, 64), "model.norm.weight": (64,), "lm_head.weight": (100, 64)}
    for i in range(2):
        p = f"model.layers.{i}."
        t |= {
            p + "self_attn.q_proj.weight": (64, 64),
            p + "self_attn.k_proj.weight": (32, 64),
            p + "self_attn.v_proj.weight": (32, 64),
            p + "self_attn.o_proj.weight": (64, 64),
            p + "mlp.gate_proj.weight": (128, 64),
            p + "mlp.up_proj.weight": (128, 64),
            p + "mlp.down_proj.weight": (64, 128),
            p + "input_layernorm.weight": (64,),
            p + "post_attention_layernorm.weight": (64,),
        }
    return {k: rng.standard_normal(s).astype(dtype) for k, s in t.items()}


def write_tiny_gguf(path: Path, tied: bool = False) -> Path:
    """llama-arch GGUF of the tiny model: fp32 tensors, the MLP down projections in Q8_0, lm_head in
    F16 (absent when tied)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(100)])
    hf = tiny_tensors(np.float32)
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    parts = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for i in range(2):
        for k, v in parts.items():
            names[f"model.layers.{i}.{k}.weight"] = f"blk.{i}.{v}.weight"
    for hf_name, arr in hf.items():
        name = names[hf_name]
        if name == "output.weight":
            if not tied:
                w.add_tensor(name, arr.astype(np.float16))
        elif name.endswith("ffn_down.weight"):
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, arr)
    w.add_tensor("rope_freqs.weight", np.ones(8, dtype=np.float32))  # a buffer, not a parameter
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
