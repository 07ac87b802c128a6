"""Markdown table from measure.py's results.json."""

from __future__ import annotations

import json
import sys

ORDER = ["torch fp32", "onnx:fp32", "gguf:F16", "gguf:Q8_0", "gguf:Q4_K_M", "gguf:Q4_K_M+imatrix", "gguf:Q4_1", "original Q4_1"]


def row(label: str, r: dict) -> str:
    if "error" in r:
        return f"| {label} | failed: {r['error'][:200]} |"
    m = r["measurements"]
    b, h, p, k = m.get("benchmark") or {}, m.get("hellaswag") or {}, m.get("perplexity") or {}, m.get("kl") or {}
    tok_s = f"{b['decode_tok_s']['mean']:.1f} ± {b['decode_tok_s']['stdev']:.1f}" if b else "-"
    ttft = f"{b['ttft_ms']['p50']:.0f}" if b else "-"
    p95 = f"{b['token_latency_ms']['p95']:.1f}" if b else "-"
    rss = f"{b['peak_rss_bytes'] / 2**20:.0f}" if b else "-"
    hs = f"{100 * h['acc_norm']:.1f} ± {100 * h['acc_norm_se']:.1f} ({h['n']})" if h else "-"
    kl = f"{k['mean']:.4f} ± {k['se']:.4f}" if k.get("mean") is not None else ("reference" if k else "-")
    threads = (m["runtime"].get("gguf") or {}).get("threads", m.get("torch_threads"))
    load = f"{r['loadavg_before'][0]:.1f}/{r['loadavg_after'][0]:.1f}"
    return (f"| {label} | {m['size_bytes'] / 1e6:.0f} | {tok_s} | {ttft} | {p95} | {rss} | {hs} | "
            f"{p.get('ppl', float('nan')):.2f} | {kl} | {threads} | {load} |")  # fmt: skip


def main(path: str) -> None:
    res = json.load(open(path))
    print(
        "| candidate | size (MB) | decode tok/s | TTFT p50 (ms) | token p95 (ms) | peak RSS (MiB) | HellaSwag acc_norm ± se (n) "
        "| ppl | KL vs fp32 ± se | threads | load before/after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label in ORDER + [k for k in res if k not in ORDER and not k.startswith("_")]:
        if label in res and label in ORDER or (label in res and not label.startswith("_") and label not in ORDER):
            print(row(label, res[label]))


def speed_table(results_path: str, speed_path: str) -> str:
    """Accuracy from measure.py's run, decode tok/s from speed.py's interleaved rounds (mean of the rounds'
    means, each round's figure, x torch fp32 and x the original Q4_1 file)."""
    res, speed = json.load(open(results_path)), json.load(open(speed_path))

    def mean(label: str) -> float:
        return sum(r["mean"] for r in speed[label]) / len(speed[label])

    lines = [
        "| candidate | size (MB) | decode tok/s (rounds) | x torch fp32 | x original Q4_1 | HellaSwag acc_norm ± se (n) | ppl | Δ ppl % | KL vs fp32 ± se |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base_ppl = res["torch fp32"]["measurements"]["perplexity"]["ppl"]
    for label in [k for k in ORDER if k in speed]:
        m = res[label]["measurements"]
        h, p, k = m["hellaswag"], m["perplexity"], m.get("kl") or {}
        kl = f"{k['mean']:.4f} ± {k['se']:.4f}" if k.get("mean") is not None else "reference"
        rounds = " / ".join(f"{r['mean']:.1f}" for r in speed[label])
        lines.append(
            f"| {label} | {m['size_bytes'] / 1e6:.0f} | {mean(label):.1f} ({rounds}) | {mean(label) / mean('torch fp32'):.2f} | "
            f"{mean(label) / mean('original Q4_1'):.2f} | {100 * h['acc_norm']:.1f} ± {100 * h['acc_norm_se']:.1f} ({h['n']}) | "
            f"{p['ppl']:.2f} | {100 * (p['ppl'] / base_ppl - 1):+.1f} | {kl} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 2:  # results.json speed.json
        print(speed_table(sys.argv[1], sys.argv[2]))
    else:
        main(sys.argv[1])
