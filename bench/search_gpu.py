"""Issue 16's figures in one command: (1) early stopping replayed on a full quantize build: same
verdicts? how much evaluation time saved; (2) mixed precision vs the best uniform method, real weights.

On a CUDA machine (pip install -e ".[quant,gpu]" and the bundled SmolLM2):

    python bench/search_gpu.py bench/results/$(date +%F)-search-gpu

CPU smoke run of the whole script (tiny evaluation, two methods; checks it end to end, not a figure):

    PYTHONPATH=. python bench/search_gpu.py /tmp/search-smoke --smoke

Writes into OUT: the recipes, each build's output directory (manifest.json, report.md), replay.md (the
early-stopping table) and summary.md (mixed precision against every uniform candidate).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HEADER = """model:
  source: smollm2-135m
target: {target}
stop: best
objective: size_gb
{budget}evaluation:
{evaluation}
benchmark:
  prompt_tokens: {prompt}
  new_tokens: 64
  max_trials: 3
output_dir: {out}
passes:
"""
GPU_EVAL = (
    "  hellaswag_items: 500\n  perplexity_tokens: 16384\n  perplexity_window: 1024\n  perplexity_stride: 512\n  batch_size: 32"
)
SMOKE_EVAL = (
    "  hellaswag_items: 40\n  perplexity_tokens: 2048\n  perplexity_window: 256\n  perplexity_stride: 128\n  kl_tokens: 128"
)
GPU_METHODS = (
    "[bnb-int8, bnb-nf4, torchao-int8wo, torchao-int4wo, torchao-int4-gemlite, torchao-float8wo, gptq-4bit, mixed-precision]"
)
SMOKE_METHODS = "[torchao-int8wo, mixed-precision]"


BUDGET = "budget:\n  hellaswag_max_drop_points: 2.0\n  perplexity_max_rise_pct: 5.0\n"


def recipe(out: Path, smoke: bool, methods: str | None = None, default_budget: bool = False) -> Path:
    head = HEADER.format(
        budget="" if default_budget else BUDGET,
        target="cpu-x86" if smoke else "h100-80g",
        evaluation=SMOKE_EVAL if smoke else GPU_EVAL,
        prompt=32 if smoke else 512,
        out=out / "build",
    )
    passes = (
        ("" if smoke else "  - pass: precision_cast\n    dtype: bf16\n")
        + f"  - pass: quantize\n    methods: {methods or (SMOKE_METHODS if smoke else GPU_METHODS)}\n    group_size: 64\n"
        + "    on_unsupported: skip\n"  # mixed_precision.max_kl: derived from the budget (+5 % ppl -> 0.0244)
    )
    path = out / "search.yaml"
    path.write_text(head + passes)
    return path


def summary_rows(manifests: list[Path]) -> list[str]:
    """One markdown row per measured candidate of the given builds: size, memory, speed, both accuracy
    lines with their intervals, and the per-format layer counts of mixed-precision candidates."""
    rows = [
        "| build | candidate | verdict | size GB | memory GB | decode tok/s | HellaSwag drop pts [CI] | ppl rise % [CI] | layers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for manifest in manifests:
        m = json.loads(manifest.read_text())
        for c in m["candidates"]:
            meas = c.get("measurements") or {}
            if not meas:
                continue
            checks = {k["name"]: k for k in c.get("checks", [])}

            def ci(name: str, checks=checks) -> str:
                k = checks.get(name)
                return f"{k['value']:.2f} [{k['low']:.2f}, {k['high']:.2f}]" if k else "-"

            bench = meas.get("benchmark") or {}
            tok_s = (bench.get("decode_tok_s") or {}).get("mean") or 0.0
            mem = checks.get("memory_gb", {}).get("value") or (bench.get("peak_rss_bytes") or 0) / 1e9
            cal = (meas.get("runtime") or {}).get("calibration") or {}
            layers = cal.get("layers", "")
            if "measured_kl" in cal:  # mixed precision: the stop it made and what the sum rule would have chosen
                layers = (
                    f"{layers}; KL measured {cal['measured_kl']} (limit {cal['max_kl']:.4f}, {cal['kl_probes']} probes), "
                    f"summed {cal['predicted_kl']}; sum rule: {cal['sum_rule_layers']}"
                )
            rows.append(
                f"| {manifest.parent.name} | {c['name']} | {c.get('verdict') or c['status']} | {meas.get('size_bytes', 0) / 1e9:.3f} | "
                f"{mem:.2f} | {tok_s:.1f} | {ci('hellaswag_drop_points')} | {ci('perplexity_rise_pct')} | {layers} |"
            )
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--table", nargs="+", type=Path, metavar="MANIFEST", help="only print the summary table of these builds")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny evaluation: checks the script, gives no figure")
    ap.add_argument(
        "--methods", help="the quantize methods, YAML list (default: every GPU method), e.g. '[torchao-int8wo, mixed-precision]'"
    )
    ap.add_argument(
        "--default-budget", action="store_true", help="optpipe's default budget (no budget block) instead of -2 pts / +5 %%"
    )
    a = ap.parse_args(argv)
    if a.table:
        print("\n".join(summary_rows(a.table)))
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    path = recipe(a.out.resolve(), a.smoke, a.methods, a.default_budget)
    cli = [sys.executable, "-c", "from optpipe.cli import app; app()"]
    rc = subprocess.call([*cli, "build", str(path)])
    if rc not in (0, 3, 4):  # 3/4: budget not met or inconclusive, the tables are still the result
        print(f"build failed (exit {rc}); see {a.out / 'build' / 'logs'}", file=sys.stderr)
        return rc
    manifest = a.out / "build" / "manifest.json"
    small = ["--min-items", "20", "--chunk-items", "10", "--min-windows", "4", "--chunk-windows", "2"] if a.smoke else []
    replay = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("early_stop_replay.py")), str(manifest), *small],
        capture_output=True,
        text=True,
        check=True,
    )
    (a.out / "replay.md").write_text(replay.stdout)
    print(replay.stdout)
    rows = summary_rows([manifest])
    (a.out / "summary.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
