"""report.html: the build report as one self-contained page (inline CSS and SVG, no script, nothing
fetched), so it opens from a file:// path on an offline machine or as a CI artifact. Same rows and
verdict lines as report.md (shared with report.py); every string from the recipe or model is escaped."""

from __future__ import annotations

from html import escape
from typing import Any

from optpipe.output.manifest import CandidateRecord, Manifest
from optpipe.output.pareto import pareto_svg, plot_points
from optpipe.output.report import COLUMNS, FORECAST_COLUMNS, checks_lines, forecast_rows, row

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;margin:24px}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:28px 0 8px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}
dl.meta dt{color:#57606a} dl.meta dd{margin:0}
.status{font-weight:700;padding:1px 8px;border-radius:10px;color:#fff;background:#57606a}
.status.met{background:#1a7f37} .status.not-met{background:#cf222e} .status.inconclusive{background:#9a6700}
table{border-collapse:collapse;font-size:12.5px} caption{text-align:left;color:#57606a;padding:4px 0}
th,td{border:1px solid #d0d7de;padding:4px 6px;vertical-align:top;text-align:left}
thead th{background:#f6f8fa;position:sticky;top:0}
td.num{text-align:right;white-space:nowrap} td.chain{font-family:ui-monospace,monospace;font-size:11.5px;min-width:12em;max-width:16em;overflow-wrap:break-word;white-space:pre-line}
td.speed{min-width:9em} tr.checks-row td{border-top:none;padding-top:0}
tr.failed,tr.skipped,tr.not-run{background:#fff8c5} tr.oom{background:#ffebe9} tr.selected{outline:2px solid #0969da}
.projected{font-style:italic;text-decoration:underline dotted}
ul.checks{margin:0;padding-left:16px;font-size:12px;color:#424a53}
.verdict-met{color:#1a7f37;font-weight:600} .verdict-not-met{color:#cf222e;font-weight:600}
.verdict-inconclusive{color:#9a6700;font-weight:600}
.scroll{overflow-x:auto} svg.pareto{max-width:100%;height:auto;font-size:12px}
svg .tick{fill:#57606a;font-size:11px} svg .axis{fill:#1f2328;font-size:13px} svg .note{font-size:11px}
svg .label{font-size:11px;fill:#1f2328} svg .label.selected{font-weight:700}
svg .label,svg .note{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}
.muted{color:#57606a} p.note{color:#57606a;font-size:12px;max-width:900px}
"""

NUMERIC = {"#", "size GB", "mem GB", "p95 ms", "TTFT ms", "ppl"}


def e(s: Any) -> str:
    return escape(str(s), quote=True)


def _slug(s: str) -> str:
    return s.lower().replace(" ", "-")


def _param(v: Any) -> str:
    return "/".join(map(str, v)) if isinstance(v, list) else str(v)


def chain_text(chain: list[dict[str, Any]]) -> str:
    """`precision_cast(dtype=bf16) → compile(mode=default)`: the passes that made a candidate
    (bookkeeping fields such as pass_version left out; the manifest has them)."""
    steps = []
    for step in chain:
        args = ", ".join(f"{k}={_param(v)}" for k, v in step.items() if k not in ("pass", "pass_version") and v is not None)
        steps.append(f"{step.get('pass', '?')}({args})")
    return "\n→\u00a0".join(steps) or "(none: the model as given)"


def _row_class(rec: CandidateRecord, selected: str | None) -> str:
    m = rec.measurements
    classes = [_slug(rec.status)]
    if m is not None and m.out_of_memory:
        classes.append("oom")
    if selected is not None and rec.name == selected:
        classes.append("selected")
    return " ".join(classes)


def _verdict_cell(rec: CandidateRecord, text: str) -> str:
    """The verdict word (the full out-of-memory message is in the memory line below the row)."""
    m = rec.measurements
    if rec.verdict and m is not None and m.out_of_memory and rec.check("memory_gb") is not None:
        text = f"{rec.verdict}: out of memory"
    if rec.verdict and text.startswith(rec.verdict):
        return f'<span class="verdict-{_slug(rec.verdict)}">{e(text)}</span>'
    return e(text)


def _checks_row(rec: CandidateRecord, width: int) -> str:
    lines = checks_lines(rec)
    if not lines:
        return ""
    items = "".join(f"<li>{e(line)}</li>" for line in lines)
    return f'<tr class="checks-row"><td></td><td colspan="{width - 1}"><ul class="checks" aria-label="budget lines of {e(rec.name)}">{items}</ul></td></tr>'


def candidate_table(manifest: Manifest) -> str:
    """The per-candidate table: report.md's columns plus the pass chain and status."""
    columns = COLUMNS[:2] + ["chain", "status"] + COLUMNS[2:]
    head = "".join(f'<th scope="col">{e(c)}</th>' for c in columns)
    body = []
    for rec in manifest.candidates:
        cells = row(rec)
        cells = cells[:2] + [chain_text(rec.chain), rec.status] + cells[2:]
        tds = []
        for col, cell in zip(columns, cells):
            if col == "candidate":
                tds.append(f'<th scope="row">{e(cell)}</th>')
            elif col == "verdict":
                tds.append(f"<td>{_verdict_cell(rec, cell)}</td>")
            elif col == "decode tok/s" and "projected" in cell:
                tds.append(f'<td class="speed projected" title="includes a speed projected to another device">{e(cell)}</td>')
            elif col == "chain":
                tds.append(f'<td class="chain">{e(cell)}</td>')
            elif col == "decode tok/s":
                tds.append(f'<td class="speed">{e(cell)}</td>')
            else:
                tds.append(f"<td{' class=num' if col in NUMERIC else ''}>{e(cell)}</td>")
        body.append(f'<tr class="{e(_row_class(rec, manifest.selected))}" data-candidate="{e(rec.name)}">{"".join(tds)}</tr>')
        body.append(_checks_row(rec, len(columns)))
    return (
        '<div class="scroll"><table id="candidates"><caption>Every candidate of the build, in the order built; '
        "failed, skipped and out-of-memory candidates say why.</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def forecast_table(manifest: Manifest) -> str:
    if not manifest.forecast:
        return ""
    head = "".join(f'<th scope="col">{e(c)}</th>' for c in FORECAST_COLUMNS)
    body = "".join(
        "<tr>" + f'<th scope="row">{e(r[0])}</th>' + "".join(f"<td class=num>{e(c)}</td>" for c in r[1:]) + "</tr>"
        for r in forecast_rows(manifest)
    )
    return (
        '<h2 id="predicted">Predicted (plan) vs measured</h2><div class="scroll"><table id="forecast">'
        "<caption>optpipe plan's forecast, made before any weight was read, beside what the build measured.</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _header(manifest: Manifest) -> str:
    recipe = manifest.recipe
    ev, bm, host = recipe.get("evaluation", {}), recipe.get("benchmark", {}), manifest.host
    status = manifest.status
    items = [
        ("recipe", e(manifest.recipe_file)),
        ("model", f"{e(manifest.model.description)} <span class=muted>(fingerprint {e(manifest.model.fingerprint)})</span>"),
        ("target", f"{e(manifest.target.get('name', '–'))} ({e(manifest.target.get('display_name', ''))})"),
        ("measured on", e(manifest.measured_on)),
        (
            "host",
            e(f"{host.get('cpu', '?')}, {host.get('cpu_count', '?')} cores")
            + (f", GPU {e(host['gpu_name'])}" if host.get("gpu_name") else ""),
        ),
        ("status", f'<span class="status {e(_slug(status))}" id="status">{e(status)}</span>'),
        ("selected", f"<strong>{e(manifest.selected)}</strong>" if manifest.selected else "none"),
        (
            "evaluation",
            e(
                f"HellaSwag {ev.get('hellaswag_items')} items (seed {ev.get('seed')}), WikiText-2 {ev.get('perplexity_tokens')} tokens "
                f"(window {ev.get('perplexity_window')}, stride {ev.get('perplexity_stride')})"
            ),
        ),
        (
            "benchmark",
            e(
                f"prompt {bm.get('prompt_tokens')} tokens, {bm.get('new_tokens')} new tokens, batch {bm.get('batch_size')}, greedy"
            ),
        ),
        ("updated", e(manifest.updated)),
    ]
    if manifest.reference:
        items.append(("accuracy reference", e(manifest.reference)))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    warnings = ""
    if manifest.warnings:
        warnings = "<h2>Warnings</h2><ul>" + "".join(f"<li>{e(w)}</li>" for w in manifest.warnings) + "</ul>"
    return f'<h1>optpipe build report: {e(manifest.recipe_file)}</h1><dl class="meta">{dl}</dl>{warnings}'


def _plot_section(manifest: Manifest) -> str:
    svg = pareto_svg(manifest)
    _, omitted = plot_points(manifest)
    out = ['<h2 id="plot">Accuracy against speed</h2>']
    out.append(svg or '<p class="muted">Nothing to plot: no candidate has both a decode speed and a HellaSwag score.</p>')
    if omitted:
        out.append(
            '<p class="note" id="not-plotted">Not plotted (see the table): '
            + "; ".join(f"{e(name)} ({e(why)})" for name, why in omitted)
            + ".</p>"
        )
    out.append(
        '<p class="note">The HellaSwag budget line is the baseline\'s score minus the allowed drop; the verdict itself '
        "judges the paired drop with its confidence interval, so a point near the line can be MET, NOT MET or "
        "INCONCLUSIVE. Hollow markers are speeds projected to the target from this host's measurement.</p>"
    )
    return "".join(out)


def html_report(manifest: Manifest) -> str:
    """report.html for one manifest (self-contained: inline CSS and SVG, no script, no external resource)."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>optpipe report: {e(manifest.recipe_file)} ({e(manifest.status)})</title>"
        f"<style>{CSS}</style></head><body><main>"
        + _header(manifest)
        + '<h2 id="table">Candidates</h2>'
        + candidate_table(manifest)
        + _plot_section(manifest)
        + forecast_table(manifest)
        + '<p class="note">Accuracy deltas are candidate minus baseline, paired over the same items (HellaSwag) or windows '
        "(perplexity). A line is MET only when its whole confidence interval is within the limit, NOT MET when it is "
        "wholly outside, INCONCLUSIVE otherwise. KL is KL(baseline || candidate) of the next-token distributions on the "
        "first perplexity positions, mean ± se over tokens.</p>"
        + f"<footer class=muted>optpipe {e(manifest.optpipe_version)}, manifest schema {manifest.schema_version}</footer>"
        + "</main></body></html>\n"
    )
