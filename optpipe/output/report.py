"""The per-candidate table: one row model shared by the live console table and report.md."""

from __future__ import annotations

import math
from typing import Any

from optpipe.evaluate.kl import KLResult
from optpipe.judge.budget import GB
from optpipe.output.manifest import CandidateRecord, Manifest

COLUMNS = [
    "#",
    "candidate",
    "weights",
    "attn",
    "size GB",
    "mem GB",
    "decode tok/s",
    "p95 ms",
    "TTFT ms",
    "HellaSwag acc_norm",
    "Δ pts [CI]",
    "ppl",
    "Δ ppl % [CI]",
    "KL vs base (nats/token)",
    "verdict",
]


def _f(x: Any, fmt: str = ".2f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _weights(runtime: dict[str, Any]) -> str:
    weights = runtime.get("dtype", "–")
    if runtime.get("quantization"):
        weights = runtime["quantization"]
    if runtime.get("onnx"):
        weights = f"onnx {runtime['onnx'].get('method', '')}"
    if runtime.get("gguf"):
        weights = f"gguf {runtime['gguf'].get('type', '')}" + (" +imatrix" if runtime["gguf"].get("imatrix") else "")
    if runtime.get("compile"):
        weights += " +compile"
    return weights


def _speed_cell(rec: CandidateRecord) -> list[str]:
    bench = rec.measurements.benchmark if rec.measurements else None
    if bench is None:
        return ["–", "–", "–"]
    s = bench.decode_tok_s
    speed = f"{s.mean:.1f} (CV {s.cv:.1%})"
    roof = bench.roofline
    if roof is not None:
        speed += f", {roof.fraction:.0%} roofline" + (" ERROR>100%" if roof.fraction > 1 else "")
        if roof.projected is not None:
            speed += f"; projected {roof.projected.target}: {roof.projected.decode_tok_s:.1f}"
    if bench.host_load is not None and bench.host_load.under_load:
        speed += " UNDER LOAD"
    if not bench.stable:
        speed += " UNSTABLE"
    sv = rec.measurements.speed_vs_parent if rec.measurements else None
    if sv is not None and not math.isnan(sv.ratio):
        speed += f"; x{sv.ratio:.2f} [{_f(sv.low)}, {_f(sv.high)}] vs parent" + ("" if sv.interleaved else " (not interleaved)")
    return [speed, _f(bench.token_latency_ms.p95, ".1f"), _f(bench.ttft_ms.p50, ".0f")]


def row(rec: CandidateRecord) -> list[str]:
    """Cells of one candidate record."""
    m = rec.measurements
    runtime = m.runtime if m else {}
    cells = [str(rec.index), rec.name, _weights(runtime), runtime.get("attn_implementation", "–")]
    if rec.status in ("skipped", "failed", "not run") or m is None:
        return cells + ["–"] * (len(COLUMNS) - 5) + [f"{rec.status.upper()}: {rec.reason}"]
    if m.out_of_memory:
        return cells + [_f(m.size_bytes / GB, ".3f"), "OOM"] + ["–"] * (len(COLUMNS) - 7) + [f"{rec.verdict}: {m.out_of_memory}"]
    cells.append(_f(m.size_bytes / GB, ".3f"))
    cells.append(_f(m.peak_memory_bytes() / GB, ".2f"))
    cells += _speed_cell(rec)
    hs, ppl = m.hellaswag, m.perplexity
    cells.append(f"{100 * hs.acc_norm:.1f} ± {100 * hs.acc_norm_se:.1f} (n={hs.n})" if hs else "–")
    c = rec.check("hellaswag_drop_points")
    cells.append(f"{-c.value + 0.0:+.2f} [{-c.high + 0.0:+.2f}, {-c.low + 0.0:+.2f}]" if c and not math.isnan(c.value) else "–")
    cells.append(f"{ppl.ppl:.3f}" if ppl else "–")
    c = rec.check("perplexity_rise_pct")
    cells.append(f"{c.value:+.2f} [{c.low:+.2f}, {c.high:+.2f}]" if c and not math.isnan(c.value) else "–")
    cells.append(kl_cell(m.kl))
    cells.append(rec.verdict or "–")
    return cells


def kl_cell(kl: KLResult | None) -> str:
    if kl is None:
        return "–"
    if kl.error is not None:
        return "n/a: " + kl.error
    if kl.is_reference:
        return f"reference (n={kl.n})"
    return f"{kl.mean:.4f} ± {kl.se:.4f} (n={kl.n})"


def checks_lines(rec: CandidateRecord) -> list[str]:
    out = []
    for c in rec.checks:
        proj = " (projected)" if c.projected else ""
        out.append(
            f"{c.name}: {_f(c.value, '.3f')} [{_f(c.low, '.3f')}, {_f(c.high, '.3f')}] "
            f"limit {c.limit} -> {c.verdict.value}{proj} ({c.detail})"
        )
    return out


FORECAST_COLUMNS = [
    "candidate",
    "weights GB pred / on disk",
    "peak GB pred / measured",
    "fits pred / measured",
    "roofline tok/s on target",
]


def forecast_rows(manifest: Manifest) -> list[list[str]]:
    """The plan's forecast beside what was measured, one row per forecast candidate (shared by
    report.md and report.html)."""
    records = {r.name: r for r in manifest.candidates}
    rows = []
    for f in manifest.forecast:
        mem = f.get("memory") or {}
        rec = records.get(f["name"])
        m = rec.measurements if rec else None
        size = _f(m.size_bytes / GB, ".2f") if m else "–"
        peak = "OOM" if m and m.out_of_memory else _f(m.peak_memory_bytes() / GB, ".2f") if m else "–"
        mem_check = rec.check("memory_gb") if rec else None
        fits = "–" if mem_check is None else "yes" if mem_check.verdict.value == "MET" else "no"
        pred_w = _f(mem["weight_bytes"] / GB, ".2f") if mem else "–"
        pred_peak = _f(mem["peak_bytes"] / GB, ".2f") if mem else "–"
        rows.append(
            [
                str(f["name"]),
                f"{pred_w} / {size}",
                f"{pred_peak} / {peak}",
                f"{'yes' if f['fits'] else 'no' if mem else '?'} / {fits}",  # no memory forecast: unknown, not a no
                _f(f.get("roofline_tok_s"), ".1f"),
            ]
        )
    return rows


def predicted_vs_measured(manifest: Manifest) -> list[str]:
    """The plan's forecast beside what was measured, per candidate (a check on the forecast)."""
    if not manifest.forecast:
        return []
    out = [
        "",
        "## Predicted (plan) vs measured",
        "",
        "| " + " | ".join(FORECAST_COLUMNS) + " |",
        "|" + "---|" * len(FORECAST_COLUMNS),
    ]
    out += ["| " + " | ".join(cells) + " |" for cells in forecast_rows(manifest)]
    return out


def markdown(manifest: Manifest) -> str:
    """report.md: what was built, the per-candidate table, each budget line, and the outcome."""
    recipe = manifest.recipe
    ev, bm, host = recipe["evaluation"], recipe["benchmark"], manifest.host
    first = manifest.candidates[0].measurements if manifest.candidates else None
    lines = [
        f"# optpipe build report: {manifest.recipe_file}",
        "",
        f"- model: {manifest.model.description} (fingerprint {manifest.model.fingerprint})",
        f"- target: {manifest.target['name']} ({manifest.target['display_name']}); measured on {manifest.measured_on}",
        f"- host: {host['cpu']}, {host['cpu_count']} cores" + (f", GPU {host['gpu_name']}" if host.get("gpu_name") else ""),
        f"- evaluation: HellaSwag {ev['hellaswag_items']} items (seed {ev['seed']}), "
        f"WikiText-2 {ev['perplexity_tokens']} tokens (window {ev['perplexity_window']}, stride {ev['perplexity_stride']})",
        f"- benchmark: prompt {bm['prompt_tokens']} tokens, {bm['new_tokens']} new tokens, batch {bm['batch_size']}, greedy; "
        f"memory = {first.memory_kind() if first else 'peak RSS during benchmark' if manifest.candidates else '–'}",
        f"- status: **{manifest.status}**" + (f", selected: **{manifest.selected}**" if manifest.selected else ""),
        *([f"- error: {manifest.error}"] if manifest.error else []),
        *[f"- note: {n}" for n in manifest.notes],
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for rec in manifest.candidates:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row(rec)) + " |")
    if manifest.reference:
        lines += ["", f"Accuracy reference (baseline): {manifest.reference}."]
    lines += predicted_vs_measured(manifest)
    lines += ["", "## Budget lines", ""]
    for rec in manifest.candidates:
        lines.append(f"### {rec.index} {rec.name}: {rec.verdict or rec.status.upper()}")
        lines += [f"- {line}" for line in checks_lines(rec)] or [f"- {rec.status}: {rec.reason}"]
        lines += [f"- warning: {w}" for w in (rec.measurements.warnings if rec.measurements else [])]
        lines.append("")
    lines += [
        "Accuracy deltas are candidate minus baseline, paired over the same items (HellaSwag) or windows",
        "(perplexity). A line is MET only when its whole confidence interval is within the limit,",
        "NOT MET when it is wholly outside, INCONCLUSIVE otherwise. KL is KL(baseline || candidate) of the",
        "next-token distributions on the first perplexity positions, mean ± se over tokens.",
        "UNDER LOAD: other processes used the machine while the speed was timed; UNSTABLE: decode tok/s",
        "missed the benchmark's CV target. 'xR [lo, hi] vs parent': decode speed over the parent's, timed",
        "in alternating rounds in one process (a busy machine slows both alike), with its interval.",
        "",
    ]
    return "\n".join(lines)
