"""Issue 17: why optpipe's int4 candidate decodes at half of bf16, side by side with torchao's own path.

One command on a CUDA machine, every figure from one card, each variant in a fresh process:

    python bench/int4_gap.py --variants bf16-fused,int4-fused,ao-int4,gptfast-int4 --profile --out gap.json

Variants (Llama-3.1-8B shape, random weights, batch 1, greedy):
  bf16-fused          optpipe: transformers model in bf16, the compile pass's fused step (the baseline)
  int4-fused          optpipe: the quantize pass's torchao-int4wo (TorchAoConfig at load) + the fused step
  int4-fused-unwrap   the same, torchao's unwrap_tensor_subclass applied before compiling
  int4-fused-head     the same with the quantize pass's quantize_lm_head (lm_head in int4 too)
  ...-gN              (N = 32, 64, 256) any variant with another group size (default 128)
  ...-notune          the fused step without Inductor's coordinate-descent tuning (warm-up cost)
  ...-eagerprefill    the prefill left eager / compiled (default: eager when the model has int4
  ...-compiledprefill weights, compiled otherwise)
  ...-nofuse          int4 q|k|v and gate|up as separate tinygemm calls (not concatenated)
  ao-bf16 / ao-int4   torchao's benchmark model (torchao/_models/llama/model.py from the last torchao
                      commit that had it, copied into .torchao-llama/, git-ignored: never committed)
                      with torchao's quantize_ (Int4WeightOnlyConfig, tile_packed_to_4d), its decode
                      step compiled as its generate.py does (reduce-overhead, fullgraph)
                      To get it: fetch github.com/pytorch/ao, then
                      git show 3c2030bbb:torchao/_models/llama/model.py > .torchao-llama/model.py
                      (and carry .torchao-llama to the GPU machine with the wheels)
  gptfast-int4        the same model with every linear (lm_head included) calling tinygemm
                      (aten._weight_int4pack_mm) on plain tensors: the gpt-fast design
`--profile` adds, per variant, the top CUDA kernels and CPU ops of 8 decode steps and the step time
with and without a host sync per step (what the host side costs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GROUP = 128


# -- torchao's benchmark model -------------------------------------------------------------------
def ao_model(quant: str | None, group: int):
    import torch

    sys.path.insert(0, str(ROOT / ".torchao-llama"))
    from model import Transformer  # torchao/_models/llama/model.py (not committed: see docstring)

    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Transformer.from_name("Llama-3.1-8B")
    torch.set_default_dtype(torch.float32)
    model = model.eval()
    if quant in ("int4", "tinygemm"):
        from torchao.quantization import Int4WeightOnlyConfig, quantize_

        quantize_(model, Int4WeightOnlyConfig(group_size=group, int4_packing_format="tile_packed_to_4d"))
        if quant == "tinygemm":
            swap_plain_tinygemm(model)
    return model


def swap_plain_tinygemm(model) -> None:
    """Replace every torchao int4 weight by a module holding its packed tensors as plain buffers."""
    import torch

    class Int4Linear(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self.register_buffer("qdata", w.qdata)
            self.register_buffer("scale_and_zero", w.scale_and_zero)
            self.group = w.block_size[-1]
            self.out_features, self.in_features = w.shape

        def forward(self, x):
            shape = x.shape
            y = torch.ops.aten._weight_int4pack_mm(x.reshape(-1, shape[-1]), self.qdata, self.group, self.scale_and_zero)
            return y[:, : self.out_features].reshape(*shape[:-1], self.out_features)

    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, torch.nn.Linear) and hasattr(child.weight, "qdata"):
                setattr(mod, child_name, Int4Linear(child.weight))


class AoDecoder:
    """optpipe's decoder interface over torchao's model: decode step compiled as its generate.py does."""

    def __init__(self, model, max_len: int):
        import torch

        self.model = model
        self.name = "torchao-generate-style"
        torch.set_default_dtype(torch.bfloat16)  # its KV cache takes lm_head's dtype, gone after a swap
        with torch.device("cuda"):
            model.setup_caches(max_batch_size=1, max_seq_length=max_len)
        torch.set_default_dtype(torch.float32)

        def decode_one_token(x, input_pos):
            logits = model(x, input_pos)
            return logits[:, -1].argmax(-1, keepdim=True)

        def prefill(x, input_pos):
            return model(x, input_pos)[:, -1].argmax(-1, keepdim=True)

        self._step = torch.compile(decode_one_token, mode="reduce-overhead", fullgraph=True)
        self._prefill = prefill
        self.pos = None

    def reset(self, batch: int, max_len: int) -> None:
        self.pos = None

    def prefill(self, ids):
        import torch

        t = ids.shape[1]
        tok = self._prefill(ids, torch.arange(t, device=ids.device))
        self.pos = torch.tensor([t], device=ids.device)
        return tok

    def step(self, token):
        import torch

        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            if hasattr(torch.compiler, "cudagraph_mark_step_begin"):
                torch.compiler.cudagraph_mark_step_begin()
            nxt = self._step(token, self.pos).clone()
        self.pos += 1
        return nxt


# -- profile ---------------------------------------------------------------------------------------
def profile(decoder, prompt, steps: int = 8, top: int = 18) -> dict:
    """Where a decode step's time goes: kernels, host ops, and host cost (synced vs unsynced steps)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    out: dict = {}
    with torch.inference_mode():
        for sync in (True, False):
            decoder.reset(1, prompt.shape[1] + 40)
            tok = decoder.prefill(prompt)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(32):
                tok = decoder.step(tok)
                if sync:
                    torch.cuda.synchronize()
            torch.cuda.synchronize()
            out["ms_per_step_synced" if sync else "ms_per_step_unsynced"] = (time.perf_counter() - t) / 32 * 1e3
        decoder.reset(1, prompt.shape[1] + steps + 1)
        tok = decoder.prefill(prompt)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                tok = decoder.step(tok)
            torch.cuda.synchronize()
    ka = prof.key_averages()
    out["cuda_kernels"] = ka.table(sort_by="cuda_time_total", row_limit=top, max_name_column_width=80)
    out["cpu_ops"] = ka.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=80)
    counts = {e.key: e.count for e in ka if e.key in ("cudaGraphLaunch", "cudaLaunchKernel", "cuLaunchKernel", "cudaMemcpyAsync")}
    out["launch_counts_per_step"] = {k: v / steps for k, v in counts.items()}
    gpu_us = sum(e.self_device_time_total for e in ka if e.device_type.name == "CUDA") if hasattr(ka[0], "device_type") else None
    out["gpu_busy_ms_per_step"] = gpu_us / steps / 1e3 if gpu_us else None
    return out


# -- one variant -----------------------------------------------------------------------------------
def run_variant(variant: str, prompt_len: int, new_tokens: int, trials: int, want_profile: bool) -> dict:
    import torch
    from gpu_decode import build_model, quantize

    from optpipe.measure.bench import benchmark
    from optpipe.measure.roofline import measure_copy_bandwidth_gbs, storage_bytes
    from optpipe.runtime.fused_decode import FusedStepDecoder
    from optpipe.spec.settings import BenchmarkSettings

    torch.manual_seed(0)
    t_load = time.perf_counter()
    cache_len = prompt_len + new_tokens + 16
    flags = set(variant.split("-"))
    group = next((int(f[1:]) for f in flags if f[:1] == "g" and f[1:].isdigit()), GROUP)
    if variant.startswith(("ao-", "gptfast-")):
        quant = {"ao-bf16": None, "ao-int4": "int4", "gptfast-int4": "tinygemm"}[variant.removesuffix(f"-g{group}")]
        model = ao_model(quant, group)
        dec = AoDecoder(model, cache_len)
        emb = model.tok_embeddings.weight
        vocab = model.config.vocab_size
    else:
        model = build_model("llama-3.1-8b", "sdpa")
        if variant.startswith("int4"):
            head = {"quantize_lm_head": True} if "head" in variant else {}
            model = quantize(model, "torchao-int4wo", group_size=group, **head)
        if "unwrap" in variant:
            from torchao.utils import unwrap_tensor_subclass

            unwrap_tensor_subclass(model)
        dec = FusedStepDecoder(
            model,
            cache_len,
            inductor_tuning="notune" not in flags,
            compile_prefill=False if "eagerprefill" in flags else (True if "compiledprefill" in flags else None),
            fuse_int4="nofuse" not in flags,
        )
        emb = model.get_input_embeddings().weight
        vocab = model.config.vocab_size
    torch.cuda.empty_cache()
    load_s = time.perf_counter() - t_load
    weights = torch.cuda.memory_allocated()
    # bytes a step reads: every weight tensor but the embedding table (a lookup reads one row)
    read = sum(storage_bytes(p) for p in model.parameters()) + sum(
        storage_bytes(b)
        for n, b in model.named_buffers()
        if b.dim() >= 2 and "cache" not in n and "mask" not in n and "freqs" not in n
    )
    read -= storage_bytes(emb)
    kv = 2 * 32 * 8 * 128 * 2 * (prompt_len + new_tokens / 2)
    prompt = torch.randint(0, vocab, (1, prompt_len), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    # warm-up split: the first prefill (its compile) and the first decode steps (the step's compile,
    # CUDA graph recording) timed apart, before the benchmark (whose own warm-up then finds both ready)
    with torch.inference_mode():
        t0 = time.perf_counter()
        dec.reset(1, prompt_len + 8)
        tok = dec.prefill(prompt)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        for _ in range(4):
            tok = dec.step(tok)
        torch.cuda.synchronize()
        t2 = time.perf_counter()
    cfg = BenchmarkSettings(prompt_tokens=prompt_len, new_tokens=new_tokens, warmup=2, min_trials=3, max_trials=trials)
    res = benchmark(dec, prompt, cfg).model_dump(mode="json", exclude_none=True)
    res["first_prefill_s"], res["first_steps_s"] = t1 - t0, t2 - t1
    res["decoder"] = dec.name
    res["load_s"] = load_s
    res["weights_gb"] = weights / 1e9
    res["bytes_read_per_token_gb"] = (read + kv) / 1e9
    res["cuda_peak_allocated_gb"] = torch.cuda.max_memory_allocated() / 1e9
    res["cuda_peak_reserved_gb"] = torch.cuda.max_memory_reserved() / 1e9
    if want_profile:
        res["profile"] = profile(dec, prompt)
    bw = measure_copy_bandwidth_gbs()
    res["copy_bandwidth_gbs"] = bw
    res["roofline_tok_s"] = bw * 1e9 / (read + kv)
    res["fraction_of_roofline"] = res["decode_tok_s"]["mean"] / res["roofline_tok_s"]
    res["gpu"] = torch.cuda.get_device_name(0)
    res["torch"] = torch.__version__
    import torchao

    res["torchao"] = torchao.__version__
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="bf16-fused,int4-fused,ao-int4,gptfast-int4")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip variants once this much wall time has passed")
    ap.add_argument("--out", default="int4_gap.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(run_variant(a.child, a.prompt, a.new, a.trials, a.profile)))
        return
    results = json.loads(Path(a.out).read_text()) if Path(a.out).exists() else {}
    start = time.perf_counter()
    for variant in a.variants.split(","):
        if time.perf_counter() - start > a.budget_s:
            print(f"{variant}: skipped (budget)", flush=True)
            continue
        t = time.perf_counter()
        cmd = [
            sys.executable,
            __file__,
            "--child",
            variant,
            "--prompt",
            str(a.prompt),
            "--new",
            str(a.new),
            "--trials",
            str(a.trials),
        ]
        proc = subprocess.run(cmd + (["--profile"] if a.profile else []), capture_output=True, text=True, env=dict(os.environ))
        if proc.returncode != 0:
            r = {"error": proc.stderr[-4000:]}
        else:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["stderr_tail"] = proc.stderr[-3000:]
        r["wall_s"] = time.perf_counter() - t
        results[variant] = r
        Path(a.out).write_text(json.dumps(results, indent=2))
        if "error" in r:
            print(f"{variant:22s} FAILED: {r['error'].strip()[-600:]}", flush=True)
            continue
        s = r["decode_tok_s"]
        print(
            f"{variant:22s} {s['mean']:7.1f} tok/s (CV {s['cv']:.1%})  weights {r['weights_gb']:.2f} GB  "
            f"read/token {r['bytes_read_per_token_gb']:.2f} GB  {r['fraction_of_roofline']:6.1%} of roofline "
            f"({r['roofline_tok_s']:.0f} tok/s @ {r['copy_bandwidth_gbs']:.0f} GB/s)  peak alloc {r['cuda_peak_allocated_gb']:.2f} GB  "
            f"warm-up {r.get('warmup_s', 0):.0f}s  load {r['load_s']:.0f}s  wall {r['wall_s']:.0f}s  [{r['gpu']}]",
            flush=True,
        )
        print(f"   first prefill {r.get('first_prefill_s', 0):.1f}s, first 4 steps {r.get('first_steps_s', 0):.1f}s", flush=True)
        p = r.get("profile")
        if p:
            print(
                f"   host: {p['ms_per_step_synced']:.2f} ms/step synced, {p['ms_per_step_unsynced']:.2f} unsynced; "
                f"GPU busy {p['gpu_busy_ms_per_step']} ms/step; launches/step {p['launch_counts_per_step']}",
                flush=True,
            )
            print(p["cuda_kernels"], flush=True)
            print(p["cpu_ops"], flush=True)


if __name__ == "__main__":
    main()
