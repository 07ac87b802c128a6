"""GPU decode benchmark: copy bandwidth, memory roofline, stock transformers, optpipe's compile pass.

One command on a CUDA machine, every figure from this one run and this one card:

    python bench/gpu_decode.py --models llama-3.1-8b,smollm2-135m --out results.json

Each variant runs in a fresh subprocess (no allocator or compile cache shared between them).
Random weights: decode speed does not depend on their values. Prints a table per model:
tok/s, % of the roofline (weights + KV bytes per token / measured copy bandwidth), peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optpipe.measure.calibration import SHAPES  # noqa: E402

# The calibration sweep's Llama shapes (optpipe/measure/calibration.py); rope scaling does not change speed.
CONFIGS = {
    name: SHAPES[name] | dict(max_position_embeddings=8192, rope_theta=500000.0 if name == "llama-3.1-8b" else 100000.0)
    for name in ("llama-3.1-8b", "smollm2-135m")
}
# The default run: what issue 6 asks to see side by side. Other variants (pass them with --variants):
# hf-generate-static-compile, optpipe-eager-loop, optpipe-compile (transformers forward, sdpa),
# optpipe-compile-efficient-sdpa, optpipe-fused-notune, optpipe-fused-reduce-attn, optpipe-fused-cublas-all,
# and quantized ones "METHOD" (eager loop) or
# "METHOD+fused" (fused compiled step) with METHOD one of the quantize pass's methods.
VARIANTS = ("hf-generate-eager", "hf-generate-sdpa", "optpipe-compile-eager-attn", "optpipe-fused")
QUANT_VARIANTS = (
    "optpipe-fused",
    "bnb-int8",
    "bnb-nf4",
    "bnb-nf4+fused",
    "torchao-int8wo+fused",
    "torchao-int4wo+fused",
    "torchao-int4-gemlite+fused",
    "torchao-float8wo+fused",
)


def build_model(name: str, attn: str):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(**CONFIGS[name])
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation=attn)
    return model.eval()


def hf_generate(model, prompt, new_tokens: int, trials: int, **gen_kw) -> dict:
    """Stock generate: decode tok/s from (t(N tokens) - t(1 token)) / (N - 1)."""
    import torch

    def timed(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, **gen_kw)
        torch.cuda.synchronize()
        return time.perf_counter() - t

    t_warm = time.perf_counter()
    timed(new_tokens)  # warm-up (and the automatic compile for static cache)
    warm = time.perf_counter() - t_warm
    rates, ttfts = [], []
    for _ in range(trials):
        t1, tn = timed(1), timed(new_tokens)
        ttfts.append(t1)
        rates.append((new_tokens - 1) / (tn - t1))
    from optpipe.measure.stats import Spread

    return {
        "decode_tok_s": Spread.from_values(rates).to_dict(),
        "ttft_ms": Spread.from_values([t * 1000 for t in ttfts]).to_dict(),
        "warmup_s": warm,
    }


def quantize(model, method: str, **params):
    """The quantize pass's transformers config applied to the in-memory weights (no disk round trip)."""

    from optpipe.passes.quantize import QuantizeParams
    from optpipe.passes.quantize.methods import method_dtype, quantization_config
    from optpipe.runtime.dtypes import torch_dtype

    params = QuantizeParams.model_validate({"pass": "quantize", "methods": [method], **params})
    state = model.state_dict()
    dtype = torch_dtype(method_dtype(method, "bf16"))
    quantized = type(model).from_pretrained(
        None,
        config=model.config,
        state_dict=state,
        dtype=dtype,
        quantization_config=quantization_config(params, method),
        device_map="cuda",
    )
    del state
    return quantized.eval()


def kernel_profile(decoder, prompt, steps: int = 8, top: int = 25) -> str:
    """Top CUDA kernels of a few decode steps (set OPTPIPE_BENCH_PROFILE=1): where the step's time goes."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        decoder.reset(prompt.shape[0], prompt.shape[1] + steps + 1)
        tok = decoder.prefill(prompt)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                tok = decoder.step(tok)
            torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=top, max_name_column_width=70)


def run_variant(model_name: str, variant: str, prompt_len: int, new_tokens: int, trials: int) -> dict:
    import torch

    from optpipe.measure.bench import benchmark
    from optpipe.measure.nvml import Nvml
    from optpipe.measure.roofline import decode_roofline, measure_copy_bandwidth_gbs
    from optpipe.runtime.decode import EagerDecoder, StaticGraphDecoder
    from optpipe.runtime.fused_decode import FusedStepDecoder
    from optpipe.spec.settings import BenchmarkSettings

    torch.manual_seed(0)
    attn = "eager" if variant in ("hf-generate-eager",) or "eager-attn" in variant else "sdpa"
    model = build_model(model_name, attn)
    method = variant.split("+")[0] if variant.startswith(("bnb-", "torchao-")) else None
    if method:
        model = quantize(model, method)
    torch.cuda.empty_cache()
    weights_gb = torch.cuda.memory_allocated() / 1e9
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_len), device="cuda")
    nvml = Nvml()
    torch.cuda.reset_peak_memory_stats()
    dec = None
    if variant.startswith("hf-generate"):
        kw = {"cache_implementation": "static"} if variant == "hf-generate-static-compile" else {}
        res = hf_generate(model, prompt, new_tokens, trials, **kw)
    else:
        cache_len = prompt_len + new_tokens + 16
        backends = ("EFFICIENT_ATTENTION",) if variant == "optpipe-compile-efficient-sdpa" else None
        if variant == "optpipe-fused" or variant.endswith("+fused"):
            dec = FusedStepDecoder(model, cache_len)
        elif variant == "optpipe-fused-notune":
            dec = FusedStepDecoder(model, cache_len, inductor_tuning=False)
        elif variant == "optpipe-fused-reduce-attn":
            dec = FusedStepDecoder(model, cache_len, attention="reduce")
        elif variant == "optpipe-fused-cublas-all":  # every large projection and lm_head through cuBLAS
            dec = FusedStepDecoder(model, cache_len, cublas="all")
        elif variant == "optpipe-eager-loop" or method:
            dec = EagerDecoder(model)
        else:
            dec = StaticGraphDecoder(model, cache_len, sdpa_backends=backends)
        cfg = BenchmarkSettings(prompt_tokens=prompt_len, new_tokens=new_tokens, warmup=2, min_trials=3, max_trials=trials)
        res = benchmark(dec, prompt, cfg, nvml=nvml).model_dump(mode="json", exclude_none=True)
        res["decoder"] = dec.name
    res["weights_gb"] = weights_gb
    if dec is not None and os.environ.get("OPTPIPE_BENCH_PROFILE"):
        res["kernel_profile"] = kernel_profile(dec, prompt)
    res["cuda_peak_allocated_gb"] = torch.cuda.max_memory_allocated() / 1e9
    res["cuda_peak_reserved_gb"] = torch.cuda.max_memory_reserved() / 1e9
    res["nvml_device_used_gb"] = (nvml.device_used_bytes() or 0) / 1e9 or None
    bw = measure_copy_bandwidth_gbs()
    roof = decode_roofline(model, prompt_len, new_tokens, bw, "measured copy")
    res["roofline"] = roof.to_dict()
    res["fraction_of_roofline"] = roof.fraction(res["decode_tok_s"]["mean"])
    res["gpu"] = torch.cuda.get_device_name(0)
    res["torch"] = torch.__version__
    import transformers

    res["transformers"] = transformers.__version__
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="llama-3.1-8b,smollm2-135m")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma list, or 'quant' for the quantization table")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--out", default="gpu_decode.json")
    ap.add_argument("--plan", default=None, help="ordered MODEL:VARIANT,VARIANT;MODEL:... (overrides --models/--variants)")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(run_variant(a.child[0], a.child[1], a.prompt, a.new, a.trials)))
        return
    results: dict = {}
    if a.plan:
        runs = [(m, v) for part in a.plan.split(";") for m, vs in [part.split(":")] for v in vs.split(",")]
    else:
        variants = QUANT_VARIANTS if a.variants == "quant" else a.variants.split(",")
        runs = [(m, v) for m in a.models.split(",") for v in variants]
    env = dict(os.environ, TORCH_LOGS=os.environ.get("TORCH_LOGS", "recompiles,perf_hints"))
    for model, variant in runs:
        t = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                model,
                variant,
                "--prompt",
                str(a.prompt),
                "--new",
                str(a.new),
                "--trials",
                str(a.trials),
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            r = {"error": proc.stderr[-3000:]}
        else:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["stderr_tail"] = proc.stderr[-2500:]
        r["wall_s"] = time.perf_counter() - t
        results.setdefault(model, {})[variant] = r
        Path(a.out).write_text(json.dumps(results, indent=2))
        if "error" in r:
            print(
                f"{model:14s} {variant:28s} FAILED: {r['error'].strip().splitlines()[-1] if r['error'].strip() else ''}",
                flush=True,
            )
        else:
            s = r["decode_tok_s"]
            flag = "  <-- above roofline: measurement error" if r["fraction_of_roofline"] > 1 else ""
            print(
                f"{model:14s} {variant:28s} {s['mean']:9.1f} tok/s (CV {s['cv']:.1%})  weights {r['weights_gb']:.2f} GB  "
                f"{r['fraction_of_roofline']:6.1%} of roofline {r['roofline']['tok_s']:8.1f} tok/s "
                f"[copy {r['roofline']['bandwidth_gbs']:.0f} GB/s]  peak alloc {r['cuda_peak_allocated_gb']:.2f} GB  "
                f"reserved {r['cuda_peak_reserved_gb']:.2f} GB  warm-up {r.get('warmup_s', 0):.0f}s  [{r['gpu']}]{flag}",
                flush=True,
            )
            if r.get("kernel_profile"):
                print(r["kernel_profile"], flush=True)


if __name__ == "__main__":
    main()
