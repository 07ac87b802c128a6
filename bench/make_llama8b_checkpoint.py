"""Write a Llama-3.1-8B-shaped checkpoint with random weights, for speed / memory tests offline.

The GPU machines have no hub, so this builds on disk what `meta-llama/Llama-3.1-8B-Instruct` looks
like to a loader, with random values (ACCURACY IS MEANINGLESS; use it only for speed, memory, load
time and file-size measurements):

* config.json: Llama-3.1-8B's architecture exactly (hidden 4096, intermediate 14336, 32 layers,
  32 heads, 8 KV heads, head_dim 128, vocab 128256, rope_theta 500000 with the `llama3` rope scaling
  factor 8 / low 1 / high 4 / original 8192, rms_norm_eps 1e-5, max_position_embeddings 131072,
  untied embeddings, bos 128000, eos [128001, 128008, 128009], bfloat16), written with the hub
  file's keys (`rope_theta` / `rope_scaling` / `torch_dtype`, plus `dtype` for transformers 5).
  `--layers N` only changes num_hidden_layers (tests shrink the model with it).
* generation_config.json: bos / eos only (no sampling defaults, so generate() is greedy).
* weights: `model-0000i-of-0000N.safetensors` + `model.safetensors.index.json` as transformers'
  save_pretrained writes them (same state-dict order, the same greedy split by huggingface_hub with
  `--max-shard-size`, default 5GB like the hub checkpoint, {"format": "pt"} shard metadata, index with
  total_parameters / total_size / weight_map). Each tensor is drawn on `--device` as
  randn * 0.02 (RMSNorm weights = 1), copied to host, streamed into its shard file and freed, so
  host RAM holds one tensor at a time (at most the 1.05 GB embedding), never a shard or the model.
* tokenizer: a real byte-level BPE trained in about a second with the `tokenizers` library on the
  first 300 kB of the shipped WikiText-2 test text (8,000 merges: 128k merges cannot be learned from
  that little text). Its vocabulary is padded with never-produced filler entries up to 128,000 and the
  256 Llama-3 special tokens follow at their Llama-3 ids: `<|begin_of_text|>` = 128000 (bos, prepended
  like Llama 3), `<|end_of_text|>` = 128001, `<|eom_id|>` = 128008, `<|eot_id|>` = 128009 (eos). So
  len(tokenizer) == vocab_size == 128256 and every id is < vocab size, which is what a model run
  needs; the token sequences are of course not Llama 3's.

Prints the wall time and the bytes written. Usage:

    python bench/make_llama8b_checkpoint.py --out /tmp/llama8b --device cuda            # 16.06 GB, 4 shards
    python bench/make_llama8b_checkpoint.py --out /tmp/llama2l --layers 2 --device cpu  # 2.5 GB test
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import struct
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
WIKITEXT = ROOT / "optpipe" / "_data" / "eval" / "wikitext-2-raw-test.txt.bz2"

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
SAFETENSORS_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}

VOCAB = 128256
N_REGULAR = 128000  # Llama 3: ids < 128000 are BPE tokens, 128000..128255 the 256 special tokens
BOS, EOS = "<|begin_of_text|>", "<|eot_id|>"
EOS_IDS = [128001, 128008, 128009]


def llama31_8b_config(layers: int, dtype: torch.dtype) -> dict:
    """meta-llama/Llama-3.1-8B(-Instruct) config.json, with num_hidden_layers = `layers`."""
    name = DTYPE_NAMES[dtype]
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 128000,
        "eos_token_id": EOS_IDS,
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 4096,
        "initializer_range": 0.02,
        "intermediate_size": 14336,
        "max_position_embeddings": 131072,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 32,
        "num_hidden_layers": layers,
        "num_key_value_heads": 8,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "factor": 8.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "dtype": name,
        "torch_dtype": name,
        "use_cache": True,
        "vocab_size": VOCAB,
    }


def param_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """LlamaForCausalLM's state dict names and shapes, in its order (what save_pretrained iterates)."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (q, h),
                p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h),
                p + "self_attn.o_proj.weight": (h, q),
                p + "mlp.gate_proj.weight": (i, h),
                p + "mlp.up_proj.weight": (i, h),
                p + "mlp.down_proj.weight": (h, i),
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
            }
        )
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (v, h)
    return shapes


def plan_shards(shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, max_shard_size: str):
    """huggingface_hub's split (the one save_pretrained uses), on meta tensors: no memory touched."""
    from huggingface_hub import split_torch_state_dict_into_shards

    meta = {k: torch.empty(s, dtype=dtype, device="meta") for k, s in shapes.items()}
    return split_torch_state_dict_into_shards(meta, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_size)


def make_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: str, seed: int) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=dtype, device=device)
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype, device=device).mul_(0.02)


def write_shard(path: Path, names: list[str], shapes: dict, dtype: torch.dtype, device: str, seeds: dict[str, int]) -> int:
    """A safetensors file written tensor by tensor: header first (offsets known from shapes), then
    each tensor's bytes as soon as it is drawn. Layout as the safetensors library writes it: 8-byte
    little-endian header length, JSON header padded with spaces to 8 bytes, data in name order."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    order = sorted(names)  # one dtype: safetensors orders the data by name
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for n in order:
        nbytes = itemsize * int(torch.Size(shapes[n]).numel())
        header[n] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shapes[n]), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for n in order:
            t = make_tensor(n, shapes[n], dtype, device, seeds[n])
            host = t.to("cpu").contiguous()
            del t
            f.write(host.reshape(-1).view(torch.uint8).numpy().data)
            del host
    return 8 + len(blob) + offset


def wikitext_head(n_bytes: int = 300_000) -> str:
    with bz2.open(WIKITEXT, "rt", encoding="utf-8") as f:
        return f.read(n_bytes)


def build_tokenizer(out: Path, merges: int = 8000):
    """Byte-level BPE trained on WikiText-2, padded to Llama 3's id layout (see the module docstring)."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + merges, initial_alphabet=alphabet, show_progress=False, special_tokens=[]
    )
    text = wikitext_head()
    tok.train_from_iterator([text[i : i + 10_000] for i in range(0, len(text), 10_000)], trainer=trainer)

    spec = json.loads(tok.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    n_trained = len(vocab)
    for i in range(n_trained, N_REGULAR):  # never produced: no merge yields them
        vocab[f"<|filler_{i}|>"] = i
    tok = Tokenizer.from_str(json.dumps(spec))

    specials = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|reserved_special_token_2|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
    ]
    specials += [f"<|reserved_special_token_{i}|>" for i in range(3, 3 + VOCAB - N_REGULAR - len(specials))]
    tok.add_special_tokens(specials)
    assert tok.token_to_id(BOS) == 128000 and tok.token_to_id(EOS) == 128009, "special-token ids"
    assert tok.get_vocab_size(with_added_tokens=True) == VOCAB
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 128000)]
    )

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, clean_up_tokenization_spaces=False, model_max_length=131072
    )
    fast.save_pretrained(str(out))
    return n_trained


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output directory (created)")
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    ap.add_argument("--layers", type=int, default=32, help="num_hidden_layers (32 = the real 8B)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="where tensors are drawn")
    ap.add_argument("--max-shard-size", default="5GB", help="as save_pretrained's max_shard_size")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA device")

    t0 = time.perf_counter()
    dtype = DTYPES[args.dtype]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = llama31_8b_config(args.layers, dtype)
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    gen = {"bos_token_id": 128000, "eos_token_id": EOS_IDS}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")

    shapes = param_shapes(cfg)
    seeds = {name: args.seed * 1_000_003 + i for i, name in enumerate(shapes)}
    split = plan_shards(shapes, dtype, args.max_shard_size)
    for stale in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        stale.unlink()

    written = 0
    for filename, names in split.filename_to_tensors.items():
        ts = time.perf_counter()
        n = write_shard(out / filename, names, shapes, dtype, args.device, seeds)
        written += n
        print(f"  {filename}: {len(names)} tensors, {n / 1e9:.2f} GB in {time.perf_counter() - ts:.1f} s", flush=True)
    if split.is_sharded:
        n_params = sum(int(torch.Size(s).numel()) for s in shapes.values())
        index = {"metadata": {"total_parameters": n_params, **split.metadata}, "weight_map": split.tensor_to_filename}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    tt = time.perf_counter()
    n_trained = build_tokenizer(out)
    print(
        f"  tokenizer: {n_trained} trained BPE entries padded to {N_REGULAR} + {VOCAB - N_REGULAR} specials "
        f"in {time.perf_counter() - tt:.1f} s",
        flush=True,
    )

    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    weights = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    params = sum(int(torch.Size(s).numel()) for s in shapes.values())
    print(
        json.dumps(
            {
                "out": str(out),
                "layers": args.layers,
                "dtype": args.dtype,
                "device": args.device,
                "parameters": params,
                "shards": len(split.filename_to_tensors),
                "weight_bytes": weights,
                "bytes_written": total,
                "wall_s": round(time.perf_counter() - t0, 2),
                "pid_max_rss_kib": _vm_hwm_kib(),
            }
        )
    )
    return 0


def _vm_hwm_kib() -> int | None:
    try:
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


if __name__ == "__main__":
    raise SystemExit(main())
