"""The per-candidate table: one row model shared by the live console table and report.md."""
from __future__ import annotations

import math
from typing import Any

from optpipe.budget import GB, memory_kind, peak_memory_bytes

COLUMNS = ["#", "candidate", "weights", "attn", "size GB", "mem GB", "decode tok/s", "p95 ms", "TTFT ms",
           "HellaSwag acc_norm", "Δ pts [CI]", "ppl", "Δ ppl % [CI]", "KL vs base (nats/token)", "verdict"]


def _f(x: Any, fmt: str = ".2f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _check(rec: dict, name: str) -> dict | None:
    return next((c for c in rec.get("checks", []) if c["name"] == name), None)


def row(rec: dict[str, Any]) -> list[str]:
    """Cells of one candidate record (see runner.CandidateRecord.to_dict)."""
    m = rec.get("measurements") or {}
    rt = m.get("runtime", {})
    bench = m.get("benchmark") or {}
    hs, ppl = m.get("hellaswag"), m.get("perplexity")
    weights = rt.get("dtype", "–")
    if rt.get("quantization"):
        weights = rt["quantization"]
    if rt.get("onnx"):
        weights = f"onnx {rt['onnx'].get('method', '')}"
    if rt.get("compile"):
        weights += " +compile"
    cells = [str(rec["index"]), rec["name"], weights, rt.get("attn_implementation", "–")]
    if rec["status"] in ("skipped", "failed", "not run"):
        return cells + ["–"] * (len(COLUMNS) - 5) + [f"{rec['status'].upper()}: {rec.get('reason', '')}"]
    cells.append(_f(m.get("size_bytes", math.nan) / GB, ".3f"))
    cells.append(_f(peak_memory_bytes(m) / GB, ".2f"))
    if bench:
        s = bench["decode_tok_s"]
        roof = bench.get("roofline") or {}
        speed = f"{s['mean']:.1f} (CV {s['cv']:.1%})"
        if "fraction" in roof:
            speed += f", {roof['fraction']:.0%} roofline" + (" ERROR>100%" if roof["fraction"] > 1 else "")
        if roof.get("projected"):
            speed += f"; projected {roof['projected']['target']}: {roof['projected']['decode_tok_s']:.1f}"
        cells += [speed, _f(bench["token_latency_ms"]["p95"], ".1f"), _f(bench["ttft_ms"]["p50"], ".0f")]
    else:
        cells += ["–", "–", "–"]
    cells.append(f"{100 * hs['acc_norm']:.1f} ± {100 * hs['acc_norm_se']:.1f} (n={hs['n']})" if hs else "–")
    c = _check(rec, "hellaswag_drop_points")
    cells.append(f"{-c['value'] + 0.0:+.2f} [{-c['high'] + 0.0:+.2f}, {-c['low'] + 0.0:+.2f}]" if c and not math.isnan(c["value"]) else "–")
    cells.append(f"{ppl['ppl']:.3f}" if ppl else "–")
    c = _check(rec, "perplexity_rise_pct")
    cells.append(f"{c['value']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]" if c and not math.isnan(c["value"]) else "–")
    cells.append(kl_cell(m.get("kl")))
    cells.append(rec.get("verdict", "–"))
    return cells


def kl_cell(kl: dict[str, Any] | None) -> str:
    if not kl:
        return "–"
    if "error" in kl:
        return "n/a: " + kl["error"]
    if str(kl.get("reference", "")).startswith("self"):
        return f"reference (n={kl['n']})"
    return f"{kl['mean']:.4f} ± {kl['se']:.4f} (n={kl['n']})"


def checks_lines(rec: dict[str, Any]) -> list[str]:
    out = []
    for c in rec.get("checks", []):
        proj = " (projected)" if c.get("projected") else ""
        out.append(f"{c['name']}: {_f(c['value'], '.3f')} [{_f(c['low'], '.3f')}, {_f(c['high'], '.3f')}] "
                   f"limit {c['limit']} -> {c['verdict']}{proj} ({c.get('detail', '')})")
    return out


def markdown(manifest: dict[str, Any]) -> str:
    """report.md: what was built, the per-candidate table, each budget line, and the outcome."""
    recipe = manifest["recipe"]
    lines = [
        f"# optpipe build report: {manifest['recipe_file']}",
        "",
        f"- model: {manifest['model']['description']} (fingerprint {manifest['model']['fingerprint']})",
        f"- target: {manifest['target']['name']} ({manifest['target']['display_name']}); measured on {manifest['measured_on']}",
        f"- host: {manifest['host']['cpu']}, {manifest['host']['cpu_count']} cores"
        + (f", GPU {manifest['host']['gpu_name']}" if manifest['host'].get('gpu_name') else ""),
        f"- evaluation: HellaSwag {recipe['evaluation']['hellaswag_items']} items (seed {recipe['evaluation']['seed']}), "
        f"WikiText-2 {recipe['evaluation']['perplexity_tokens']} tokens (window {recipe['evaluation']['perplexity_window']}, "
        f"stride {recipe['evaluation']['perplexity_stride']})",
        f"- benchmark: prompt {recipe['benchmark']['prompt_tokens']} tokens, {recipe['benchmark']['new_tokens']} new tokens, "
        f"batch {recipe['benchmark']['batch_size']}, greedy; memory = {memory_kind(manifest['candidates'][0].get('measurements') or {}) if manifest['candidates'] else '–'}",
        f"- status: **{manifest['status']}**" + (f", selected: **{manifest['selected']}**" if manifest.get("selected") else ""),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for rec in manifest["candidates"]:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row(rec)) + " |")
    lines += ["", "## Budget lines", ""]
    for rec in manifest["candidates"]:
        lines.append(f"### {rec['index']} {rec['name']}: {rec.get('verdict') or rec['status'].upper()}")
        lines += [f"- {l}" for l in checks_lines(rec)] or [f"- {rec['status']}: {rec.get('reason', '')}"]
        lines.append("")
    lines += [
        "Accuracy deltas are candidate minus baseline, paired over the same items (HellaSwag) or windows",
        "(perplexity). A line is MET only when its whole confidence interval is within the limit,",
        "NOT MET when it is wholly outside, INCONCLUSIVE otherwise. KL is KL(baseline || candidate) of the",
        "next-token distributions on the first perplexity positions, mean ± se over tokens.",
        "",
    ]
    return "\n".join(lines)
