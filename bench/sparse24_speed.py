"""2:4 sparsity's speed against dense on the Llama-3.1-8B shape, one process, one card (issue 14).

Builds a Llama-3.1-8B-shaped model with random bf16 weights directly on the GPU (nothing written to
disk; decode speed does not depend on the values), measures it dense, then applies 2:4 sparsity through
optpipe's own code path, the prune pass's `sparse24` method: Wanda masks from a calibration forward
(`optpipe.passes.prune.sparse24.sparsify_24`), then the swap to torch's semi-structured sparse tensors
that `optpipe.load` does on CUDA cc >= 8.0 (`optpipe.runtime.sparsity.to_semi_structured`), and
measures again, on torch's default backend (cuSPARSELt) and then on CUTLASS, with a one-Linear probe
(microseconds a call at 1 / 32 / 512 rows: a fixed per-call cost shows as the same time at every size).
Printed: one JSON line with decode tok/s (batch 1, optpipe's eager decode loop, the
measurement worker's benchmark) and prefill tok/s (one forward of 512 and 2048 tokens, last logits only),
dense vs 2:4, plus the card and versions.

    python bench/sparse24_speed.py                          # the 8B shape: dense, then 2:4 on both backends
    python bench/sparse24_speed.py --backend cutlass        # only CUTLASS (or: default = cuSPARSELt when built)
    python bench/sparse24_speed.py --smoke                  # tiny shape on the CPU: checks the script only

On a CPU (or a GPU below compute capability 8.0) the swap does not happen (`sparse_kernels` false, with
the reason): the "2:4" figures are then the masked model running dense, which is what `--smoke` shows.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LLAMA_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=128256,
    tie_word_embeddings=False,
    max_position_embeddings=8192,
    rope_theta=500000.0,
)
TINY = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    vocab_size=512,
    tie_word_embeddings=False,
    max_position_embeddings=512,
)


def build_model(shape: dict, layers: int | None, device: str, dtype):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(**(shape | ({"num_hidden_layers": layers} if layers else {})))
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    return model.eval().requires_grad_(False)


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def prefill_tok_s(model, n_tokens: int, trials: int, device: str) -> dict:
    """One forward of n_tokens (batch 1, no KV cache kept, logits of the last position only)."""
    import torch

    ids = torch.randint(0, model.config.vocab_size, (1, n_tokens), device=device)
    times = []
    with torch.inference_mode():
        for i in range(trials + 1):  # the first is warm-up
            sync(device)
            t = time.perf_counter()
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
            sync(device)
            if i:
                times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"tok_s": round(n_tokens / med, 1), "median_ms": round(med * 1000, 3), "trials": trials}


def decode_tok_s(model, prompt_tokens: int, new_tokens: int, trials: int, device: str) -> dict:
    """The measurement worker's benchmark (warm-up excluded) on optpipe's eager decode loop, batch 1."""
    import torch

    from optpipe.measure.bench import benchmark
    from optpipe.runtime.decode import EagerDecoder
    from optpipe.spec.settings import BenchmarkSettings

    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_tokens), device=device)
    cfg = BenchmarkSettings(
        prompt_tokens=prompt_tokens, new_tokens=new_tokens, warmup=2, min_trials=max(2, trials), max_trials=max(2, trials)
    )
    res = benchmark(EagerDecoder(model), prompt, cfg).model_dump(mode="json", exclude_none=True)
    return {"tok_s": res["decode_tok_s"], "ttft_ms": res.get("ttft_ms")}


def guarded(fn, *a) -> dict:
    """A kernel refusing a shape is a finding for the table, not a crash that loses the other figures."""
    try:
        return fn(*a)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def measure(model, args, device: str) -> dict:
    out = {"decode": guarded(decode_tok_s, model, args.decode_prompt, args.new, args.trials, device)}
    for n in args.prefill:
        out[f"prefill_{n}"] = guarded(prefill_tok_s, model, n, args.trials, device)
    if device == "cuda":
        import torch

        out["weights_gb"] = round(torch.cuda.memory_allocated() / 1e9, 3)
    return out


def speedups(dense: dict, sparse: dict, prefill: list[int]) -> dict:
    """2:4 over dense (> 1 is faster), for every figure both runs have."""
    out = {}
    if "error" not in sparse["decode"] and "error" not in dense["decode"]:
        out["decode"] = round(sparse["decode"]["tok_s"]["mean"] / dense["decode"]["tok_s"]["mean"], 3)
    for n in prefill:
        k = f"prefill_{n}"
        if "error" not in sparse[k] and "error" not in dense[k]:
            out[k] = round(sparse[k]["tok_s"] / dense[k]["tok_s"], 3)
    return out


def linear_probe(model, device: str, rows=(1, 32, 512), trials: int = 20) -> dict:
    """One decoder Linear (layer 0's up_proj) alone, dense vs its current weight, microseconds a call: a
    fixed per-call cost (descriptor setup) shows as the same time at every row count."""
    import torch
    from torch.sparse import SparseSemiStructuredTensor

    w = model.model.layers[0].mlp.up_proj.weight
    dense_w = w.to_dense() if isinstance(w, SparseSemiStructuredTensor) else w
    out = {"weight_type": type(w).__name__}
    with torch.inference_mode():
        for r in rows:
            x = torch.randn(r, w.shape[1], device=device, dtype=dense_w.dtype)
            for name, weight in (("dense", dense_w), ("current", w)):
                torch.nn.functional.linear(x, weight)  # warm-up
                sync(device)
                t = time.perf_counter()
                for _ in range(trials):
                    torch.nn.functional.linear(x, weight)
                sync(device)
                out[f"{name}_{r}_rows_us"] = round((time.perf_counter() - t) / trials * 1e6, 1)
    return out


def sparse_run(model, args, device: str, result: dict, key: str) -> None:
    """Measure the model as it is now (semi-structured weights, or masked dense where none) under `key`."""
    import torch

    result[key] = measure(model, args, device)
    result[key]["backend"] = (
        "cutlass" if torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS else "default (cuSPARSELt when available)"
    )
    result[key]["linear_probe"] = linear_probe(model, device)
    result["speedup" + key.removeprefix("sparse24")] = speedups(result["dense"], result[key], args.prefill)


def back_to_dense(model) -> None:
    """Undo the semi-structured swap (same masked values), so another backend can be swapped in."""
    import torch
    from torch.sparse import SparseSemiStructuredTensor

    for _, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and isinstance(module.weight, SparseSemiStructuredTensor):
            module.weight = torch.nn.Parameter(module.weight.to_dense(), requires_grad=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shape on the CPU (fp32): checks the script, measures nothing")
    ap.add_argument("--layers", type=int, default=None, help="num_hidden_layers (default: the shape's, 32 for 8B)")
    ap.add_argument("--prefill", default="512,2048", help="prompt lengths for prefill tok/s")
    ap.add_argument("--decode-prompt", type=int, default=512, help="prompt tokens before decoding")
    ap.add_argument("--new", type=int, default=128, help="decoded tokens per trial")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument(
        "--backend",
        choices=["both", "default", "cutlass"],
        default="both",
        help="semi-structured kernels: torch's default (cuSPARSELt when built with it), CUTLASS, or both in turn",
    )
    ap.add_argument("--calibration-tokens", type=int, default=512, help="random tokens for the Wanda masks")
    args = ap.parse_args(argv)
    args.prefill = [int(x) for x in args.prefill.split(",") if x]

    import torch

    from optpipe.passes.prune.sparse24 import sparsify_24
    from optpipe.runtime.sparsity import semi_structured_possible, to_semi_structured

    if args.smoke:
        device, dtype, shape = "cpu", torch.float32, TINY
        args.prefill, args.decode_prompt, args.new, args.trials = [32, 64], 16, 8, 2
    else:
        if not torch.cuda.is_available():
            ap.error("no CUDA device: run with --smoke on a CPU")
        device, dtype, shape = "cuda", torch.bfloat16, LLAMA_8B
    t0 = time.perf_counter()
    model = build_model(shape, args.layers, device, dtype)
    result: dict = {
        "bench": "sparse24_speed",
        "shape": "tiny (smoke)" if args.smoke else "llama-3.1-8b",
        "layers": model.config.num_hidden_layers,
        "dtype": str(dtype).removeprefix("torch."),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if device == "cuda" else None,
        "torch": torch.__version__,
        "params": sum(p.numel() for p in model.parameters()),
        "dense": measure(model, args, device),
    }
    calib = torch.randint(0, model.config.vocab_size, (max(1, args.calibration_tokens // 128), 128), device=device)
    result["mask"] = sparsify_24(model, calib)  # the prune pass's sparse24: Wanda 2:4 masks, in place
    why = semi_structured_possible(model)
    result["sparse_kernels"] = why is None
    result["why_not_sparse"] = why
    backends = ["default", "cutlass"] if args.backend == "both" else [args.backend]
    if why is not None:
        backends = backends[:1]  # nothing is swapped: one run of the masked dense model
    for i, backend in enumerate(backends):
        key = "sparse24" if i == 0 else f"sparse24_{backend}"
        try:  # a backend that cannot convert on this card is a finding; the figures so far still print
            torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
            if i:
                back_to_dense(model)
            result["sparse_linears"] = to_semi_structured(model)  # what optpipe.load does for a sparse24 candidate
            if device == "cuda":
                torch.cuda.empty_cache()
            sparse_run(model, args, device, result, key)
        except Exception as exc:
            result[key] = {"backend": backend, "error": f"{type(exc).__name__}: {exc}"[:500]}
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
