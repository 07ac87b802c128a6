"""The report's Pareto plot as inline SVG: accuracy (HellaSwag acc_norm ± se) against decode tok/s,
marker area by memory, the speed x accuracy front highlighted, budget lines drawn, projected speeds
hollow. Candidates that did not run or ran out of memory are left out here (the table lists them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from optpipe.judge.budget import GB
from optpipe.output.manifest import CandidateRecord, Manifest
from optpipe.output.svg import element, nice_ticks, text, tick_label, title

VERDICT_COLOURS = {"MET": "#1a7f37", "NOT MET": "#cf222e", "INCONCLUSIVE": "#9a6700"}
OTHER_COLOUR = "#57606a"
FRONT_COLOUR = "#0969da"
BUDGET_COLOUR = "#8250df"

WIDTH, HEIGHT = 900, 470
LEFT, RIGHT, TOP, BOTTOM = 70, 660, 24, 400  # the plot area; the legend sits right of it
R_MAX, R_MIN = 18.0, 4.0


@dataclass(frozen=True)
class PlotPoint:
    index: int
    name: str
    tok_s: float  # projected to the target where a projection exists, else measured on this host
    acc: float  # HellaSwag acc_norm, percent
    acc_se: float
    memory_gb: float
    memory_kind: str
    projected_to: str | None
    measured_tok_s: float
    verdict: str
    selected: bool

    @property
    def key(self) -> str:
        return f"{self.index} {self.name}"


@dataclass(frozen=True)
class BudgetLines:
    min_acc: float | None  # the baseline's acc_norm minus the allowed drop, percent
    max_drop: float | None
    min_tok_s: float | None


def _point(rec: CandidateRecord, selected: str | None) -> PlotPoint | str:
    """The plotted figures of one candidate, or why it is not plotted."""
    m = rec.measurements
    if rec.status in ("skipped", "failed", "not run", "pending") or m is None:
        return f"{rec.status}" + (f": {rec.reason}" if rec.reason else "")
    if m.out_of_memory:
        return "out of memory"
    if m.benchmark is None:
        return "no speed measured"
    if m.hellaswag is None:
        return "no HellaSwag score"
    bench = m.benchmark
    projected = bench.roofline.projected if bench.roofline else None
    mem = m.peak_memory_bytes()
    kind = "peak memory"
    if not math.isfinite(mem) or mem <= 0:
        mem, kind = float(m.size_bytes), "weights"
    return PlotPoint(
        index=rec.index,
        name=rec.name,
        tok_s=projected.decode_tok_s if projected else bench.decode_tok_s.mean,
        acc=100 * m.hellaswag.acc_norm,
        acc_se=100 * m.hellaswag.acc_norm_se,
        memory_gb=mem / GB,
        memory_kind=kind,
        projected_to=projected.target if projected else None,
        measured_tok_s=bench.decode_tok_s.mean,
        verdict=rec.verdict or rec.status.upper(),
        selected=selected is not None and rec.name == selected,
    )


def plot_points(manifest: Manifest) -> tuple[list[PlotPoint], list[tuple[str, str]]]:
    """(plotted points, [(candidate, why not plotted)])."""
    points, omitted = [], []
    for rec in manifest.candidates:
        p = _point(rec, manifest.selected)
        if isinstance(p, PlotPoint):
            points.append(p)
        else:
            omitted.append((f"{rec.index} {rec.name}", p))
    return points, omitted


def pareto_front(points: list[PlotPoint]) -> list[PlotPoint]:
    """Points no other point beats on both speed and accuracy (ties kept), fastest first."""

    def dominated(p: PlotPoint) -> bool:
        return any(q.tok_s >= p.tok_s and q.acc >= p.acc and (q.tok_s > p.tok_s or q.acc > p.acc) for q in points)

    return sorted((p for p in points if not dominated(p)), key=lambda p: (-p.tok_s, p.acc))


def budget_lines(manifest: Manifest) -> BudgetLines:
    """The HellaSwag floor the budget allows (baseline minus the allowed drop) and the speed goal."""
    budget = manifest.recipe.get("budget") or {}
    goals = manifest.recipe.get("goals") or {}
    max_drop = budget.get("hellaswag_max_drop_points")
    base = manifest.candidates[0].measurements if manifest.candidates else None
    min_acc = None
    if max_drop is not None and base is not None and base.hellaswag is not None:
        min_acc = 100 * base.hellaswag.acc_norm - max_drop
    return BudgetLines(min_acc=min_acc, max_drop=max_drop, min_tok_s=goals.get("min_decode_tok_s"))


class _Scale:
    def __init__(self, lo: float, hi: float, out_lo: float, out_hi: float) -> None:
        self.ticks = nice_ticks(lo, hi)
        self.lo = min([lo, *self.ticks])
        self.hi = max([hi, *self.ticks])
        if self.hi <= self.lo:
            self.lo, self.hi = self.lo - 1, self.hi + 1
            self.ticks = nice_ticks(self.lo, self.hi)
        self.out_lo, self.out_hi = out_lo, out_hi

    def __call__(self, v: float) -> float:
        return self.out_lo + (v - self.lo) / (self.hi - self.lo) * (self.out_hi - self.out_lo)


def _axes(x: _Scale, y: _Scale, x_label: str) -> list[str]:
    out = [element("rect", x=LEFT, y=TOP, width=RIGHT - LEFT, height=BOTTOM - TOP, fill="#fff", stroke="#d0d7de")]
    for t in x.ticks:
        out.append(element("line", x1=x(t), x2=x(t), y1=TOP, y2=BOTTOM, stroke="#eaeef2"))
        out.append(element("text", text(tick_label(t)), x=x(t), y=BOTTOM + 16, text_anchor="middle", class_="tick"))
    for t in y.ticks:
        out.append(element("line", x1=LEFT, x2=RIGHT, y1=y(t), y2=y(t), stroke="#eaeef2"))
        out.append(element("text", text(tick_label(t)), x=LEFT - 6, y=y(t) + 4, text_anchor="end", class_="tick"))
    out.append(element("text", text(x_label), x=(LEFT + RIGHT) / 2, y=BOTTOM + 40, text_anchor="middle", class_="axis"))
    yl = "HellaSwag acc_norm (%), bars ± 1 se"
    out.append(
        element(
            "text",
            text(yl),
            x=18,
            y=(TOP + BOTTOM) / 2,
            text_anchor="middle",
            class_="axis",
            transform=f"rotate(-90 18 {(TOP + BOTTOM) / 2})",
        )
    )
    return out


def _note_boxes(lines: BudgetLines, x: _Scale, y: _Scale) -> list[Box]:
    """Where _budget writes its labels (right-aligned), so point labels keep clear of them."""
    boxes = []
    if lines.min_acc is not None:
        yy, w = y(lines.min_acc) - 5, 6 * len(f"budget: HellaSwag ≥ {lines.min_acc:.1f} (baseline − {lines.max_drop:g} pts)")
        boxes.append((RIGHT - 4 - w, yy - 10, RIGHT - 4, yy + 3))
    if lines.min_tok_s is not None:
        xx, w = x(lines.min_tok_s) - 4, 6 * len(f"goal: ≥ {lines.min_tok_s:g} tok/s")
        boxes.append((xx - w, TOP + 4, xx, TOP + 17))
    return boxes


def _dashed(label: str, data_line: str, line: dict, label_at: dict) -> str:
    """One budget line: dashed, labelled, with its label as the hover title."""
    return element(
        "g",
        title(label),
        element("line", **line, stroke=BUDGET_COLOUR, stroke_width=1.5, stroke_dasharray="6 4"),
        element("text", text(label), **label_at, text_anchor="end", fill=BUDGET_COLOUR, class_="note"),
        class_="budget-line",
        data_line=data_line,
    )


def _budget(lines: BudgetLines, x: _Scale, y: _Scale) -> list[str]:
    out = []
    if lines.min_acc is not None:
        yy = y(lines.min_acc)
        label = f"budget: HellaSwag ≥ {lines.min_acc:.1f} (baseline − {lines.max_drop:g} pts)"
        out.append(_dashed(label, "hellaswag", dict(x1=LEFT, x2=RIGHT, y1=yy, y2=yy), dict(x=RIGHT - 4, y=yy - 5)))
    if lines.min_tok_s is not None:
        xx = x(lines.min_tok_s)
        label = f"goal: ≥ {lines.min_tok_s:g} tok/s"
        out.append(_dashed(label, "decode_tok_s", dict(x1=xx, x2=xx, y1=TOP, y2=BOTTOM), dict(x=xx - 4, y=TOP + 14)))
    return out


def _radius(mem_gb: float, max_gb: float) -> float:
    """Marker area proportional to memory."""
    if not (math.isfinite(mem_gb) and max_gb > 0):
        return R_MIN
    return max(R_MIN, R_MAX * math.sqrt(mem_gb / max_gb))


Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_positions(
    points: list[PlotPoint], x: _Scale, y: _Scale, max_gb: float, notes: list[Box]
) -> dict[str, tuple[float, float, str]]:
    """Where each point's name goes (x, baseline y, text-anchor): right of its marker, else left of
    it, moved down in 13 px steps until it covers no marker, budget note or label already placed (text
    width estimated at 6.5 px a character), so close points stay readable."""
    markers = {p.key: (x(p.tok_s), y(p.acc), _radius(p.memory_gb, max_gb)) for p in points}
    taken: list[Box] = [(cx - r, cy - r, cx + r, cy + r) for cx, cy, r in markers.values()] + notes
    out = {}
    for p in sorted(points, key=lambda p: (y(p.acc), x(p.tok_s))):
        cx, cy, r = markers[p.key]
        w = 6.5 * len(p.name + (" ★ selected" if p.selected else ""))
        own = (cx - r, cy - r, cx + r, cy + r)
        tries = []
        for dy in range(0, 13 * 30, 13):
            ly = cy - 4 + dy
            tries.append((cx + r + 5, ly, "start", (cx + r + 5, ly - 10, cx + r + 5 + w, ly + 3)))
            tries.append((cx - r - 5, ly, "end", (cx - r - 5 - w, ly - 10, cx - r - 5, ly + 3)))
        fits = [t for t in tries if t[3][0] >= LEFT and t[3][2] <= RIGHT and t[3][3] <= BOTTOM]
        chosen = next((t for t in fits if not any(_overlaps(t[3], o) for o in taken if o != own)), (fits or tries)[0])
        taken.append(chosen[3])
        out[p.key] = chosen[:3]
    return out


def _label(p: PlotPoint, x: _Scale, y: _Scale, max_gb: float, at: tuple[float, float, str]) -> str:
    cx, cy, r = x(p.tok_s), y(p.acc), _radius(p.memory_gb, max_gb)
    lx, ly, anchor = at
    parts = []
    if ly > cy + 2:  # moved down past another label or marker: a leader line back to the marker
        sx = 1 if anchor == "start" else -1
        parts.append(
            element("line", x1=cx + sx * r * 0.7, y1=cy + r * 0.7, x2=lx - sx * 2, y2=ly - 4, stroke="#8c959f", stroke_width=0.8)
        )
    label = p.name + (" ★ selected" if p.selected else "")
    parts.append(
        element("text", text(label), x=lx, y=ly, text_anchor=anchor, class_="label" + (" selected" if p.selected else ""))
    )
    return element("g", *parts, data_name=p.name)


def _marker(p: PlotPoint, x: _Scale, y: _Scale, max_gb: float, on_front: bool) -> str:
    colour = VERDICT_COLOURS.get(p.verdict, OTHER_COLOUR)
    cx, cy, r = x(p.tok_s), y(p.acc), _radius(p.memory_gb, max_gb)
    where = f"projected to {p.projected_to} (measured {p.measured_tok_s:.1f} on this host)" if p.projected_to else "measured"
    desc = (
        f"{p.index} {p.name}: {p.tok_s:.1f} decode tok/s {where}; HellaSwag {p.acc:.1f} ± {p.acc_se:.1f}; "
        f"{p.memory_kind} {p.memory_gb:.2f} GB; {p.verdict}"
        + ("; on the Pareto front" if on_front else "")
        + ("; selected" if p.selected else "")
    )
    parts = [title(desc)]
    if p.acc_se > 0:
        lo, hi = y(p.acc - p.acc_se), y(p.acc + p.acc_se)
        parts.append(element("line", x1=cx, x2=cx, y1=lo, y2=hi, stroke=colour, stroke_width=1.5, class_="errorbar"))
        parts += [element("line", x1=cx - 4, x2=cx + 4, y1=v, y2=v, stroke=colour, stroke_width=1.5) for v in (lo, hi)]
    if on_front:
        parts.append(element("circle", cx=cx, cy=cy, r=r + 3.5, fill="none", stroke=FRONT_COLOUR, stroke_width=2))
    fill = "#fff" if p.projected_to else colour
    parts.append(
        element(
            "circle",
            cx=cx,
            cy=cy,
            r=r,
            fill=fill,
            fill_opacity=1 if p.projected_to else 0.75,
            stroke=colour,
            stroke_width=2.5,
            class_="marker",
        )
    )
    return element(
        "g", *parts, class_="point" + (" projected" if p.projected_to else "") + (" front" if on_front else ""), data_name=p.name
    )


def _legend(points: list[PlotPoint], max_gb: float) -> list[str]:
    x0, y = RIGHT + 24, TOP + 10
    out = [element("text", "Legend", x=x0, y=y, class_="axis")]
    y += 22
    for verdict, colour in VERDICT_COLOURS.items():
        out.append(element("circle", cx=x0 + 8, cy=y - 4, r=6, fill=colour, fill_opacity=0.75, stroke=colour, stroke_width=2))
        out.append(element("text", text(verdict), x=x0 + 22, y=y, class_="note"))
        y += 20
    out.append(
        element("circle", cx=x0 + 8, cy=y - 4, r=6, fill=OTHER_COLOUR, fill_opacity=0.75, stroke=OTHER_COLOUR, stroke_width=2)
    )
    out.append(element("text", "filled: measured on this host", x=x0 + 22, y=y, class_="note"))
    y += 20
    targets = sorted({p.projected_to for p in points if p.projected_to})
    if targets:
        out.append(element("circle", cx=x0 + 8, cy=y - 4, r=6, fill="#fff", stroke=OTHER_COLOUR, stroke_width=2.5))
        out.append(
            element("text", text(f"hollow: projected to {', '.join(targets)}"), x=x0 + 22, y=y, class_="note legend-projected")
        )
        y += 20
    out.append(element("circle", cx=x0 + 8, cy=y - 4, r=9.5, fill="none", stroke=FRONT_COLOUR, stroke_width=2))
    out.append(element("text", "Pareto front", x=x0 + 22, y=y, class_="note"))
    out.append(element("text", "(speed × accuracy)", x=x0 + 22, y=y + 14, class_="note"))
    y += 38
    out.append(
        element("line", x1=x0, x2=x0 + 16, y1=y - 4, y2=y - 4, stroke=BUDGET_COLOUR, stroke_width=1.5, stroke_dasharray="6 4")
    )
    out.append(element("text", "budget / goal line", x=x0 + 22, y=y, class_="note"))
    y += 26
    kinds = sorted({p.memory_kind for p in points})
    out.append(element("text", text(f"area ∝ {' or '.join(kinds)}:"), x=x0, y=y, class_="note"))
    y += 10
    for gb in (max_gb, max_gb / 4):
        r = _radius(gb, max_gb)
        out.append(element("circle", cx=x0 + R_MAX, cy=y + r, r=r, fill="none", stroke=OTHER_COLOUR))
        out.append(element("text", text(f"{gb:.2f} GB"), x=x0 + 2 * R_MAX + 8, y=y + r + 4, class_="note"))
        y += 2 * r + 8
    return out


def pareto_svg(manifest: Manifest) -> str:
    """The plot as an <svg> element ('' when no candidate has both a speed and a HellaSwag score)."""
    points, _ = plot_points(manifest)
    if not points:
        return ""
    lines = budget_lines(manifest)
    front = pareto_front(points)
    front_keys = {p.key for p in front}
    xs = [p.tok_s for p in points] + ([lines.min_tok_s] if lines.min_tok_s is not None else [])
    ys = [p.acc - p.acc_se for p in points] + [p.acc + p.acc_se for p in points]
    ys += [lines.min_acc] if lines.min_acc is not None else []
    x = _Scale(0.0, max(xs) * 1.08, LEFT, RIGHT)
    pad = max(0.5, 0.08 * (max(ys) - min(ys)))
    y = _Scale(min(ys) - pad, max(ys) + pad, BOTTOM, TOP)
    targets = sorted({p.projected_to for p in points if p.projected_to})
    x_label = "decode tok/s, batch 1" + (
        f" (hollow: projected to {', '.join(targets)})" if targets else " (measured on this host)"
    )
    max_gb = max((p.memory_gb for p in points if math.isfinite(p.memory_gb)), default=1.0)
    parts = [
        title("Pareto plot: HellaSwag accuracy against decode speed, marker area by memory"),
        element("desc", text(f"{len(points)} candidates plotted; {len(front)} on the speed × accuracy Pareto front.")),
        *_axes(x, y, x_label),
        *_budget(lines, x, y),
    ]
    if len(front) > 1:
        pts = " ".join(f"{x(p.tok_s):.1f},{y(p.acc):.1f}" for p in front)
        parts.append(
            element(
                "polyline",
                points=pts,
                fill="none",
                stroke=FRONT_COLOUR,
                stroke_width=1.5,
                stroke_opacity=0.6,
                class_="front-line",
            )
        )
    labels = _label_positions(points, x, y, max_gb, _note_boxes(lines, x, y))
    # big markers first, so small ones stay clickable/visible on top
    for p in sorted(points, key=lambda p: -p.memory_gb if math.isfinite(p.memory_gb) else 0):
        parts.append(_marker(p, x, y, max_gb, p.key in front_keys))
    parts.append(element("g", *(_label(p, x, y, max_gb, labels[p.key]) for p in points), class_="labels"))  # above every marker
    parts += _legend(points, max_gb)
    return element(
        "svg",
        *parts,
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {WIDTH} {HEIGHT}",
        width=WIDTH,
        height=HEIGHT,
        role="img",
        class_="pareto",
    )
