"""Compare two builds metric by metric: how much worse (or better) B is than A, with an interval.

Every metric is expressed as a *worsening* (positive = B is worse: speed drop %, HellaSwag drop
points, perplexity rise %, size/memory rise %), with an interval at the chosen confidence:
- HellaSwag: paired over the items both builds scored (judge.budget.hellaswag_drop); without shared
  items, unpaired from the two standard errors.
- Perplexity: paired over the same WikiText-2 windows (judge.budget.perplexity_rise); otherwise
  unpaired from each run's per-window spread.
- KL to the build's own baseline: unpaired from the two standard errors (positions are not stored).
- Decode speed: against both runs' spread over trials (Welch, normal approximation); a drop where either
  run was timed under load (other processes on its cores) is inconclusive, never a regression.
- Size and memory: single figures, compared as they are.
A change is a REGRESSION only when its whole interval lies beyond the tolerance; an interval that
straddles the tolerance is reported as a possible regression, never silently passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from optpipe.evaluate.stats import mean_se, z_value
from optpipe.judge.budget import hellaswag_drop, perplexity_rise
from optpipe.measure.results import Measurements
from optpipe.spec.settings import Strict

REGRESSION, POSSIBLE, INCONCLUSIVE, WORSE, BETTER, SAME, NA = (
    "REGRESSION",
    "possible regression",
    "inconclusive",
    "worse, within tolerance",
    "better",
    "no significant change",
    "n/a",
)


class Tolerance(Strict):
    """How much worse B may be than A before it is a regression (each in the metric's own unit)."""

    speed_drop_pct: float | None = Field(5.0, ge=0, description="Decode tok/s drop, percent.")
    hellaswag_drop_points: float | None = Field(1.0, ge=0, description="HellaSwag acc_norm drop, points.")
    perplexity_rise_pct: float | None = Field(3.0, ge=0, description="WikiText-2 perplexity rise, percent.")
    size_rise_pct: float | None = Field(1.0, ge=0, description="Artifact size rise, percent.")
    memory_rise_pct: float | None = Field(10.0, ge=0, description="Peak memory rise, percent.")
    kl_rise: float | None = Field(None, ge=0, description="KL-to-baseline rise, nats/token (None: reported only).")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Two-sided confidence of every interval.")


@dataclass
class Side:
    """One build as the comparison sees it (from the history or straight from a manifest.json)."""

    label: str
    status: str
    model_fingerprint: str
    measured_on: str
    selected: str | None
    candidates: dict[str, Measurements]  # candidates with measurements, by name


@dataclass
class Delta:
    candidate: str
    metric: str
    a: float
    b: float
    worse: float  # positive = B is worse, in `unit`
    low: float
    high: float
    unit: str
    method: str
    tolerance: float | None
    verdict: str = ""


@dataclass
class Comparison:
    a: Side
    b: Side
    deltas: list[Delta]
    notes: list[str] = field(default_factory=list)
    status_change: str = ""  # "MET -> NOT MET" when the budget outcome got worse

    @property
    def regressions(self) -> list[Delta]:
        return [d for d in self.deltas if d.verdict == REGRESSION]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions or self.status_change)


def classify(low: float, high: float, tolerance: float | None, point: float | None = None) -> str:
    """REGRESSION when the whole interval is beyond the tolerance; one that reaches past it is a
    possible regression when B looks worse, inconclusive when B looks better (too few trials)."""
    if math.isnan(low) or math.isnan(high):
        return NA
    if tolerance is not None and low > tolerance:
        return REGRESSION
    if tolerance is not None and high > tolerance:
        return INCONCLUSIVE if point is not None and point <= 0 else POSSIBLE
    if low > 0:
        return WORSE
    if high < 0:
        return BETTER
    return SAME


def _delta(cand: str, metric: str, a: float, b: float, worse: float, se: float, z: float, unit: str, method: str, tol):
    low, high = (worse, worse) if se == 0 else (worse - z * se, worse + z * se)
    return Delta(cand, metric, a, b, worse, low, high, unit, method, tol, classify(low, high, tol, worse))


def _speed(name: str, a: Measurements, b: Measurements, tol: Tolerance, z: float) -> Delta | None:
    if a.benchmark is None or b.benchmark is None:
        return None
    sa, sb = a.benchmark.decode_tok_s, b.benchmark.decode_tok_s
    if not sa.mean > 0:
        return None
    se = math.sqrt(sa.stdev**2 / sa.n + sb.stdev**2 / sb.n)
    scale = 100 / sa.mean
    method = f"both runs' spread ({sa.n} and {sb.n} trials)"
    delta = _delta(
        name, "decode tok/s", sa.mean, sb.mean, (sa.mean - sb.mean) * scale, se * scale, z, "% drop", method, tol.speed_drop_pct
    )
    busy = [run for run, m in (("A", a), ("B", b)) if m.benchmark.host_load is not None and m.benchmark.host_load.under_load]
    if busy and delta.verdict in (REGRESSION, POSSIBLE, WORSE):
        # other processes took cores while one run was timed: the drop may be the machine's, not the model's
        delta.method += f"; {' and '.join(busy)} timed under load"
        delta.verdict = INCONCLUSIVE
    return delta


def _hellaswag(name: str, a: Measurements, b: Measurements, tol: Tolerance, z: float) -> Delta | None:
    ha, hb = a.hellaswag, b.hellaswag
    if ha is None or hb is None:
        return None
    drop, se, n = hellaswag_drop(ha, hb)
    method = f"paired over {n} shared items"
    sa, sb = dict(zip(ha.item_indices, ha.item_acc_norm)), dict(zip(hb.item_indices, hb.item_acc_norm))
    if n and all(sa[i] == sb[i] for i in set(sa) & set(sb)):  # the same answers on every shared item
        drop, se, method = 0.0, 0.0, f"paired: identical on all {n} shared items"
    if n == 0:
        drop, se = 100 * (ha.acc_norm - hb.acc_norm), 100 * math.hypot(ha.acc_norm_se, hb.acc_norm_se)
        method = f"unpaired ({ha.n} and {hb.n} items, none shared by index)"
    return _delta(
        name,
        "HellaSwag acc_norm",
        100 * ha.acc_norm,
        100 * hb.acc_norm,
        drop,
        se,
        z,
        "points drop",
        method,
        tol.hellaswag_drop_points,
    )


def _log_se(windows_nll: list[float], windows_tokens: list[int]) -> float:
    _, se = mean_se([n / t for n, t in zip(windows_nll, windows_tokens)])
    return se


def _perplexity(name: str, a: Measurements, b: Measurements, tol: Tolerance, z: float) -> Delta | None:
    pa, pb = a.perplexity, b.perplexity
    if pa is None or pb is None:
        return None
    tol_pct = tol.perplexity_rise_pct
    rise, delta, se = perplexity_rise(pa, pb)
    method = f"paired over {len(pa.window_tokens)} windows"
    if math.isnan(delta):  # different windows: unpaired, from each run's per-window spread
        delta = math.log(pb.ppl / pa.ppl)
        se = math.hypot(_log_se(pa.window_nll, pa.window_tokens), _log_se(pb.window_nll, pb.window_tokens))
        method = "unpaired (different windows)"
    rise = 100 * (math.exp(delta) - 1)
    low, high = (rise, rise) if se == 0 else (100 * (math.exp(delta - z * se) - 1), 100 * (math.exp(delta + z * se) - 1))
    return Delta(
        name, "perplexity", pa.ppl, pb.ppl, rise, low, high, "% rise", method, tol_pct, classify(low, high, tol_pct, rise)
    )


def _kl(name: str, a: Measurements, b: Measurements, tol: Tolerance, z: float) -> Delta | None:
    ka, kb = a.kl, b.kl
    if ka is None or kb is None or ka.mean is None or kb.mean is None or ka.is_reference or kb.is_reference:
        return None
    se = math.hypot(ka.se or 0.0, kb.se or 0.0)
    return _delta(
        name, "KL to baseline", ka.mean, kb.mean, kb.mean - ka.mean, se, z, "nats rise", "unpaired (two SEs)", tol.kl_rise
    )


def _plain(name: str, metric: str, a: float, b: float, tol: float | None) -> Delta | None:
    if not a or math.isnan(a) or math.isnan(b):
        return None
    rise = 100 * (b - a) / a
    return Delta(name, metric, a, b, rise, rise, rise, "% rise", "single figures", tol, classify(rise, rise, tol))


def compare(a: Side, b: Side, tol: Tolerance | None = None) -> Comparison:
    """Every metric of every candidate both builds measured, B against A."""
    tol = tol or Tolerance()
    z = z_value(tol.confidence)
    deltas: list[Delta] = []
    notes: list[str] = []
    shared = [n for n in a.candidates if n in b.candidates]
    for only, side in ((set(a.candidates) - set(shared), a), (set(b.candidates) - set(shared), b)):
        if only:
            notes.append(f"measured only in {side.label}: {', '.join(sorted(only))}")
    if a.measured_on != b.measured_on:
        notes.append(f"measured on different devices ({a.measured_on} vs {b.measured_on}): speed and memory differ by host too")
    for name in shared:
        ma, mb = a.candidates[name], b.candidates[name]
        for d in (
            _speed(name, ma, mb, tol, z),
            _hellaswag(name, ma, mb, tol, z),
            _perplexity(name, ma, mb, tol, z),
            _kl(name, ma, mb, tol, z),
            _plain(name, "size", float(ma.size_bytes), float(mb.size_bytes), tol.size_rise_pct),
            _plain(name, "peak memory", ma.peak_memory_bytes(), mb.peak_memory_bytes(), tol.memory_rise_pct),
        ):
            if d is not None:
                deltas.append(d)
    change = f"{a.status} -> {b.status}" if a.status == "MET" and b.status != "MET" else ""
    return Comparison(a, b, deltas, notes, change)


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "–"
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.4e}"


def markdown(c: Comparison) -> str:
    """The comparison as a markdown section (the CLI prints it, the nightly report embeds it)."""
    lines = [
        f"A = {c.a.label} ({c.a.status}, model {c.a.model_fingerprint}), B = {c.b.label} ({c.b.status}, model {c.b.model_fingerprint})",
        "",
    ]
    if c.status_change:
        lines += [f"**REGRESSION: budget outcome {c.status_change}**", ""]
    lines += [
        "| candidate | metric | A | B | B worse by | interval | tolerance | method | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in c.deltas:
        interval = "exact" if d.low == d.high == d.worse else f"[{_fmt(d.low)}, {_fmt(d.high)}]"
        tol = "–" if d.tolerance is None else f"{d.tolerance:g}"
        verdict = f"**{d.verdict}**" if d.verdict == REGRESSION else d.verdict
        lines.append(
            f"| {d.candidate} | {d.metric} | {_fmt(d.a)} | {_fmt(d.b)} | {_fmt(d.worse)} {d.unit} | {interval} | {tol} | {d.method} | {verdict} |"
        )
    for n in c.notes:
        lines.append(f"\nnote: {n}")
    return "\n".join(lines) + "\n"


def side_from_manifest(label: str, manifest: Any) -> Side:
    return Side(
        label,
        manifest.status,
        manifest.model.fingerprint,
        manifest.measured_on,
        manifest.selected,
        {c.name: c.measurements for c in manifest.candidates if c.measurements is not None},
    )


def side_from_row(row: Any) -> Side:
    return Side(
        f"#{row.id}",
        row.status,
        row.model_fingerprint,
        row.measured_on,
        row.selected,
        {c.name: Measurements.model_validate(c.measurements) for c in row.candidates if c.measurements is not None},
    )
