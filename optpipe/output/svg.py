"""A minimal SVG writer: escaped elements and round axis ticks, so the report's plot needs no plotting
library and no network (matplotlib is not a dependency; this is all a scatter plot needs)."""

from __future__ import annotations

import math
from html import escape


def text(s: object) -> str:
    """Character data or an attribute value, escaped (names in a plot are user input)."""
    return escape(str(s), quote=True)


def _value(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return text(v)


def element(tag: str, *children: str, **attrs: object) -> str:
    """`<tag a="v">children</tag>`; attribute names take `-` for `_` (`stroke_width`), a trailing `_`
    is dropped (`class_`), None values are left out. Children are markup already escaped."""
    parts = [tag]
    for k, v in attrs.items():
        if v is None:
            continue
        parts.append(f'{k.rstrip("_").replace("_", "-")}="{_value(v)}"')
    head = " ".join(parts)
    body = "".join(children)
    return f"<{head}>{body}</{tag}>" if body else f"<{head}/>"


def title(s: object) -> str:
    """A <title> child: the accessible name (and hover tooltip) of its parent."""
    return f"<title>{text(s)}</title>"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2, 2.5, 5 x 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    return ticks


def tick_label(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"
