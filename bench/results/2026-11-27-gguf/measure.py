"""GGUF table (issue 18): torch fp32, ORT fp32, GGUF F16 / Q8_0 / Q4_K_M (+imatrix) measured in
llama.cpp, and llama.cpp on the bundled model's original Q4_1 GGUF; one run, same HellaSwag items,
same WikiText tokens, KL against the torch fp32 baseline.

Each candidate is made by the pass itself (`apply`, as a build does) and measured by optpipe's own
worker in a fresh process (`run_isolated`, as a build does), one after another, baseline first.

    PYTHONPATH=$PWD python bench/results/2026-11-27-gguf/measure.py OUT_DIR [HELLASWAG_ITEMS] [PPL_TOKENS] [ONLY,...]
    python bench/results/2026-11-27-gguf/table.py OUT_DIR/results.json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from optpipe.measure.job import KLReferenceJob, measure_job
from optpipe.measure.launcher import run_isolated
from optpipe.passes import PassContext, get_pass
from optpipe.runtime.candidate import RuntimeSettings
from optpipe.runtime.host_probe import detect_host
from optpipe.spec.model_source import resolve_model
from optpipe.spec.settings import BenchmarkSettings, EvaluationSettings
from optpipe.spec.targets import load_target

GGUF_TYPES = [("gguf:F16", "F16", "off"), ("gguf:Q8_0", "Q8_0", "off"), ("gguf:Q4_K_M", "Q4_K_M", "off"),
              ("gguf:Q4_K_M+imatrix", "Q4_K_M", "on"), ("gguf:Q4_1", "Q4_1", "off")]  # fmt: skip


def make_candidates(out: Path, ev: EvaluationSettings, only: set[str] | None) -> dict[str, Path]:
    from optpipe.runtime.source import load_model
    from optpipe.runtime.torch_candidate import TorchCandidate

    bundled = resolve_model("smollm2-135m")
    model, tok = load_model(bundled)
    base = TorchCandidate(model, tok, RuntimeSettings())
    dirs = {"torch fp32": base.save(out / "torch-fp32")}
    ctx = PassContext(load_target("cpu-x86"), detect_host(), "cpu", ev, out / "work")
    gguf = get_pass("gguf_export")
    for label, t, imatrix in GGUF_TYPES:
        if only and label not in only:
            continue
        t0 = time.perf_counter()
        target = out / label.replace(":", "-").replace("+", "-")
        if (target / "optpipe_runtime.json").is_file():  # exported by an earlier run of this script
            dirs[label] = target
            continue
        cand = gguf.apply(base, gguf.Params(types=[t], imatrix=imatrix), ctx)
        dirs[label] = cand.save(target)
        print(f"{label}: exported in {time.perf_counter() - t0:.0f} s", flush=True)
    if not only or "original Q4_1" in only:
        orig = out / "original-q4_1"
        orig.mkdir(exist_ok=True)
        link = orig / "model.gguf"
        if not link.exists():
            link.symlink_to(Path(bundled.location) / bundled.gguf_file)
        tok.save_pretrained(orig)
        RuntimeSettings(format="gguf", attn_implementation="llama.cpp", gguf={"type": "Q4_1 (the bundled file)"}).write(orig)
        dirs["original Q4_1"] = orig
    if not only or "onnx:fp32" in only:
        onnx = get_pass("onnx_export")
        if not onnx.requirements(onnx.Params(), load_target("cpu-x86"), detect_host()):
            dirs["onnx:fp32"] = onnx.apply(base, onnx.Params(methods=["fp32"]), ctx).save(out / "onnx-fp32")
    return dirs


def main(argv: list[str]) -> int:
    out = Path(argv[0]).resolve()
    items = int(argv[1]) if len(argv) > 1 else 100
    ppl = int(argv[2]) if len(argv) > 2 else 2048
    only = set(argv[3].split(",")) if len(argv) > 3 else None
    (out / "logs").mkdir(parents=True, exist_ok=True)
    ev = EvaluationSettings(hellaswag_items=items, perplexity_tokens=ppl, kl_tokens=1024)
    bench = BenchmarkSettings(prompt_tokens=128, new_tokens=64)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    dirs = make_candidates(out, ev, only)
    kl = out / "kl-reference.pt"
    if only and "torch fp32" not in only:  # llama.cpp rows only: no torch baseline, so no KL
        dirs.pop("torch fp32")
    for label, d in dirs.items():
        if label in results and "error" not in results[label] and label != "torch fp32":
            continue
        if label == "torch fp32" and label in results and kl.exists():
            continue
        load = os.getloadavg()
        ref = KLReferenceJob(path=str(kl), write=label == "torch fp32") if "torch fp32" in dirs else None
        job = measure_job(d, "cpu", ev, bench, ref)
        t0 = time.perf_counter()
        try:
            m = run_isolated(job, out / "jobs" / label.replace(":", "-"), out / "logs" / f"{label.replace(':', '-')}.txt",
                             on_progress=lambda s, label=label: print(f"  {label}: {s}", flush=True))  # fmt: skip
        except Exception as exc:  # one failed candidate costs its row, never the others
            results[label] = {"error": f"{type(exc).__name__}: {str(exc)[-1500:]}", "dir": str(d)}
            results_path.write_text(json.dumps(results, indent=1))
            print(f"{label}: FAILED {exc}", flush=True)
            continue
        results[label] = {"measurements": json.loads(m.model_dump_json()), "loadavg_before": load, "loadavg_after": os.getloadavg(),
                          "seconds": time.perf_counter() - t0, "dir": str(d)}  # fmt: skip
        results_path.write_text(json.dumps(results, indent=1))
        print(
            f"{label}: measured in {time.perf_counter() - t0:.0f} s, load {load[0]:.2f} -> {os.getloadavg()[0]:.2f}", flush=True
        )
    results["_meta"] = {"uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
                        "evaluation": ev.model_dump(), "benchmark": bench.model_dump()}  # fmt: skip
    results_path.write_text(json.dumps(results, indent=1))
    shutil.rmtree(out / "work", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
