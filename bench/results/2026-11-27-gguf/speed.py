"""Decode speed only, interleaved: every candidate of a measure.py run timed again by optpipe's worker in a
fresh process (no evaluation), in rounds whose order alternates (forward, then reversed), so a drift in the
machine's load falls on all rows alike. The accuracy columns stay measure.py's.

    PYTHONPATH=$PWD python bench/results/2026-11-27-gguf/speed.py OUT_DIR [ROUNDS] [LABEL,...]   # OUT_DIR of measure.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from optpipe.measure.job import measure_job
from optpipe.measure.launcher import run_isolated
from optpipe.spec.settings import BenchmarkSettings, EvaluationSettings


def main(argv: list[str]) -> int:
    out = Path(argv[0]).resolve()
    rounds = int(argv[1]) if len(argv) > 1 else 2
    results = json.loads((out / "results.json").read_text())
    labels = argv[2].split(",") if len(argv) > 2 else [k for k, v in results.items() if not k.startswith("_") and "dir" in v]
    ev = EvaluationSettings(hellaswag_items=0, perplexity_tokens=0, kl_tokens=0)
    bench = BenchmarkSettings(prompt_tokens=128, new_tokens=64)
    path = out / "speed.json"
    speed: dict = json.loads(path.read_text()) if path.exists() else {}
    for r in range(rounds):
        order = labels if r % 2 == 0 else labels[::-1]
        for label in order:
            load = os.getloadavg()
            job = measure_job(results[label]["dir"], "cpu", ev, bench)
            t0 = time.perf_counter()
            m = run_isolated(
                job, out / "speed-jobs" / label.replace(":", "-"), out / "logs" / f"speed-{label.replace(':', '-')}.txt"
            )
            d = m.benchmark.decode_tok_s
            row = {"round": r, "mean": d.mean, "cv": d.cv, "min": d.min, "max": d.max, "n": d.n,
                   "ttft_ms": m.benchmark.ttft_ms.p50 if m.benchmark.ttft_ms else None,
                   "rss_gb": (m.peak_rss_total_bytes or 0) / 1e9, "warnings": m.warnings,
                   "load_before": load, "load_after": os.getloadavg(), "seconds": time.perf_counter() - t0}  # fmt: skip
            speed.setdefault(label, []).append(row)
            path.write_text(json.dumps(speed, indent=1))
            print(f"round {r} {label}: {d.mean:.1f} tok/s (cv {d.cv:.2f}) load {load[0]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
