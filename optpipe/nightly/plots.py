"""The night's HTML page: per source x recipe, each metric of the chosen candidate plotted across the
recorded releases (inline SVG, no script, no network), with the recipe's goal lines drawn and
figures projected to another device marked as such."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Any

from optpipe.history.schema import BuildRow, CandidateRow
from optpipe.output.svg import element, nice_ticks, tick_label, title

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 520, 200, 60, 16, 16, 40


@dataclass
class Point:
    label: str  # build id and date
    value: float
    err: float = 0.0  # half width of a ±1 se bar
    projected: bool = False


def chosen(build: BuildRow) -> CandidateRow | None:
    """The artifact's candidate, else the baseline: the figure a release is known by."""
    by_name = {c.name: c for c in build.candidates}
    return by_name.get(build.selected or "") or by_name.get("baseline")


def metric_series(builds: list[BuildRow]) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = {"decode tok/s": [], "HellaSwag acc_norm (%)": [], "perplexity": [], "size (MB)": []}
    for b in builds:
        c = chosen(b)
        if c is None:
            continue
        label = f"#{b.id} {b.started[5:10]}"
        if c.projected_tok_s is not None:
            out["decode tok/s"].append(Point(label, c.projected_tok_s, projected=True))
        elif c.decode_tok_s is not None:
            sd, n = c.decode_tok_s_stdev or 0.0, c.decode_trials or 1
            out["decode tok/s"].append(Point(label, c.decode_tok_s, sd / math.sqrt(n)))
        if c.hellaswag_acc_norm is not None:
            out["HellaSwag acc_norm (%)"].append(Point(label, 100 * c.hellaswag_acc_norm, 100 * (c.hellaswag_acc_norm_se or 0.0)))
        if c.perplexity is not None:
            out["perplexity"].append(Point(label, c.perplexity))
        if c.size_bytes is not None:
            out["size (MB)"].append(Point(label, c.size_bytes / 1e6))
    return out


def goal_lines(recipe: dict[str, Any]) -> dict[str, float]:
    goals = recipe.get("goals") or {}
    lines = {}
    if goals.get("min_decode_tok_s") is not None:
        lines["decode tok/s"] = float(goals["min_decode_tok_s"])
    if goals.get("max_size_gb") is not None:
        lines["size (MB)"] = 1000 * float(goals["max_size_gb"])
    return lines


def plot(name: str, points: list[Point], goal: float | None) -> str:
    values = [p.value + s * p.err for p in points for s in (-1, 1)] + ([goal] if goal is not None else [])
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 1, hi + 1
    lo, hi = lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)
    n = len(points)
    x = lambda i: PAD_L + (W - PAD_L - PAD_R) * (0.5 if n == 1 else i / (n - 1))  # noqa: E731
    y = lambda v: PAD_T + (H - PAD_T - PAD_B) * (1 - (v - lo) / (hi - lo))  # noqa: E731
    parts = [element("text", escape(name), x=PAD_L, y=12, class_="t")]
    for t in nice_ticks(lo, hi, 4):
        parts.append(element("line", x1=PAD_L, x2=W - PAD_R, y1=y(t), y2=y(t), class_="grid"))
        parts.append(element("text", tick_label(t), x=PAD_L - 6, y=y(t) + 4, class_="yl"))
    if goal is not None:
        parts.append(element("line", title(f"goal {goal:g}"), x1=PAD_L, x2=W - PAD_R, y1=y(goal), y2=y(goal), class_="goal"))
    if n > 1:
        path = " ".join(f"{'M' if i == 0 else 'L'}{x(i):.1f},{y(p.value):.1f}" for i, p in enumerate(points))
        parts.append(element("path", d=path, class_="line"))
    for i, p in enumerate(points):
        if p.err:
            parts.append(element("line", x1=x(i), x2=x(i), y1=y(p.value - p.err), y2=y(p.value + p.err), class_="err"))
        tip = f"{p.label}: {p.value:.4g}" + (f" ± {p.err:.2g}" if p.err else "") + (" (projected)" if p.projected else "")
        parts.append(element("circle", title(tip), cx=x(i), cy=y(p.value), r=4, class_="proj" if p.projected else "pt"))
        if n <= 12 or i in (0, n - 1):
            parts.append(element("text", escape(p.label), x=x(i), y=H - PAD_B + 16, class_="xl"))
    return element("svg", *parts, xmlns="http://www.w3.org/2000/svg", viewBox=f"0 0 {W} {H}", width=W, height=H, role="img")


STYLE = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}
.grid{stroke:#eee}.goal{stroke:#c33;stroke-dasharray:6 4}.line{fill:none;stroke:#36c;stroke-width:1.5}
.err{stroke:#36c}.pt{fill:#36c}.proj{fill:#fff;stroke:#36c;stroke-width:2}
.t{font-weight:600;font-size:12px}.yl{font-size:10px;text-anchor:end}.xl{font-size:10px;text-anchor:middle}
.plots{display:flex;flex-wrap:wrap;gap:1em}.reg{color:#c33;font-weight:600}"""


def section(heading: str, builds: list[BuildRow], regressed: bool) -> str:
    if not builds:
        return ""
    goals = goal_lines(builds[-1].recipe)
    plots = [plot(name, pts, goals.get(name)) for name, pts in metric_series(builds).items() if pts]
    status = '<p class="reg">REGRESSION tonight</p>' if regressed else ""
    return f'<h2>{escape(heading)}</h2>{status}<div class="plots">{"".join(plots)}</div>'


def page(title_text: str, summary_html: str, sections: list[str]) -> str:
    legend = (
        "<p>Each point is one recorded release (the artifact's candidate, else the baseline); bars are ±1 standard error; "
        "the dashed red line is the recipe's goal; hollow points are projected to the target, not measured.</p>"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title_text)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{escape(title_text)}</h1>{summary_html}{legend}{''.join(sections)}</body></html>\n"
    )
