"""report.html from typed manifests: escaping of user-given names, the plot's points, budget lines,
projected markers, and failed / skipped / out-of-memory rows (listed in the table, not plotted)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from optpipe.judge.budget import Check, Verdict
from optpipe.output.manifest import CandidateRecord
from optpipe.output.pareto import pareto_front, plot_points
from optpipe.output.report_html import html_report
from tests.factories import bench, manifest, result

SVG = "{http://www.w3.org/2000/svg}"


def scored(index, name, acc, tok_s, se=0.02, size=1e9, projected_tok_s=None, verdict="INCONCLUSIVE", **kw):
    """A measured candidate: HellaSwag acc_norm `acc` (fraction) over 100 items, `tok_s` decode."""
    m = result(
        acc_norm=[1.0] * round(100 * acc) + [0.0] * (100 - round(100 * acc)),
        b=bench(tok_s, projected_tok_s=projected_tok_s),
        size=size,
    )
    m.hellaswag = m.hellaswag.model_copy(update={"acc_norm_se": se})
    return CandidateRecord(
        index=index, name=name, chain=kw.pop("chain", []), status="measured", measurements=m, verdict=verdict, **kw
    )


def svg_of(page: str) -> ET.Element:
    """The inline plot, parsed as XML (it must be well-formed on its own)."""
    match = re.search(r"<svg .*?</svg>", page, re.S)
    assert match, "no inline <svg> in the page"
    return ET.fromstring(match.group(0))


def points(svg: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-name"): g for g in svg.iter(SVG + "g") if "point" in (g.get("class") or "").split()}


def test_user_given_names_are_escaped_everywhere():
    evil = '<script>alert("x")</script>&'
    recs = [
        scored(0, "baseline", 0.50, 10.0),
        scored(1, evil, 0.49, 20.0, chain=[{"pass": "precision_cast", "dtype": "<b>bf16</b>"}]),
        CandidateRecord(index=2, name="<img src=x onerror=alert(1)>", chain=[], status="failed", reason="</td><td>boom"),
    ]
    m = manifest(recs, recipe_file="<i>r</i>.yaml", selected=evil)
    m.model.description = '"><svg onload=alert(1)>'
    page = html_report(m)
    assert "<script" not in page and "<img" not in page and "<b>bf16" not in page and "<i>r" not in page
    assert "</td><td>boom" not in page and "onload=alert(1)>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert "&lt;/td&gt;&lt;td&gt;boom" in page and "&lt;b&gt;bf16&lt;/b&gt;" in page
    # the plot parses as XML and names the point with the original text
    svg = svg_of(page)
    g = points(svg)[evil]
    assert g.find(SVG + "title").text.startswith(f"1 {evil}: 20.0 decode tok/s measured")
    assert "selected" in g.find(SVG + "title").text


def test_plot_has_one_point_per_measured_candidate_with_error_bars_and_area_by_memory():
    recs = [scored(0, "baseline", 0.50, 10.0, size=4e9), scored(1, "small", 0.48, 30.0, size=1e9)]
    svg = svg_of(html_report(manifest(recs)))
    pts = points(svg)
    assert set(pts) == {"baseline", "small"}
    r = {n: float(g.find(f"{SVG}circle[@class='marker']").get("r")) for n, g in pts.items()}
    # peak RSS is the memory figure here (2 GB for both in the factory): equal areas
    assert r["baseline"] == r["small"]
    for g in pts.values():
        bars = g.findall(f"{SVG}line[@class='errorbar']")
        assert len(bars) == 1 and float(bars[0].get("y1")) > float(bars[0].get("y2"))  # ± se spans some height


def test_budget_lines_drawn_at_baseline_minus_drop_and_at_the_speed_goal():
    recs = [scored(0, "baseline", 0.50, 10.0), scored(1, "fast", 0.47, 30.0)]
    page = html_report(manifest(recs, budget={"hellaswag_max_drop_points": 2.0}, goals={"min_decode_tok_s": 25}))
    svg = svg_of(page)
    lines = {g.get("data-line"): g for g in svg.iter(SVG + "g") if g.get("class") == "budget-line"}
    assert set(lines) == {"hellaswag", "decode_tok_s"}
    assert "HellaSwag ≥ 48.0 (baseline − 2 pts)" in lines["hellaswag"].find(SVG + "title").text
    assert "≥ 25 tok/s" in lines["decode_tok_s"].find(SVG + "title").text
    # the floor line sits between the two points (50 above, 47 below); the goal between their speeds
    floor_y = float(lines["hellaswag"].find(SVG + "line").get("y1"))
    goal_x = float(lines["decode_tok_s"].find(SVG + "line").get("x1"))
    cy = {n: float(g.find(f"{SVG}circle[@class='marker']").get("cy")) for n, g in points(svg).items()}
    cx = {n: float(g.find(f"{SVG}circle[@class='marker']").get("cx")) for n, g in points(svg).items()}
    assert cy["baseline"] < floor_y < cy["fast"]  # SVG y grows downwards
    assert cx["baseline"] < goal_x < cx["fast"]


def test_no_budget_lines_when_the_recipe_sets_none():
    recs = [scored(0, "baseline", 0.50, 10.0)]
    svg = svg_of(html_report(manifest(recs, budget={"hellaswag_max_drop_points": None})))
    assert not [g for g in svg.iter(SVG + "g") if g.get("class") == "budget-line"]


def test_projected_speeds_are_plotted_hollow_at_the_projected_figure_and_marked_in_table_and_legend():
    recs = [scored(0, "baseline", 0.50, 100.0, projected_tok_s=5.0), scored(1, "compiled", 0.50, 900.0, projected_tok_s=50.0)]
    page = html_report(manifest(recs))
    svg = svg_of(page)
    pts = points(svg)
    for g in pts.values():
        assert "projected" in g.get("class").split()
        assert g.find(f"{SVG}circle[@class='marker']").get("fill") == "#fff"
        assert "projected to rtx4060" in g.find(SVG + "title").text
    assert (
        pts["compiled"].find(SVG + "title").text.startswith("1 compiled: 50.0 decode tok/s projected to rtx4060 (measured 900.0")
    )
    legend = [t.text for t in svg.iter(SVG + "text") if "legend-projected" in (t.get("class") or "")]
    assert legend == ["hollow: projected to rtx4060"]
    assert page.count('<td class="speed projected"') == 2
    # a host-measured figure is filled
    svg2 = svg_of(html_report(manifest([scored(0, "baseline", 0.50, 10.0)])))
    assert points(svg2)["baseline"].find(f"{SVG}circle[@class='marker']").get("fill") != "#fff"


def test_failed_skipped_and_oom_candidates_are_table_rows_with_reasons_and_not_plotted():
    oom = scored(2, "precision_cast", 0.5, 1.0, verdict="NOT MET")
    oom.measurements.out_of_memory = "out of memory under the 8 GB cap: CUDA out of memory"
    oom.measurements.memory_cap_gb = 8.0
    oom.checks = [
        Check(
            name="memory_gb", limit=8, value=8.0, low=8.0, high=float("inf"), verdict=Verdict.NOT_MET, detail="CUDA out of memory"
        )
    ]
    recs = [
        scored(0, "baseline", 0.50, 10.0),
        CandidateRecord(index=1, name="quantize:gptq", chain=[], status="failed", reason="PassFailed: kernel exploded"),
        CandidateRecord(index=1, name="quantize:bnb-nf4", chain=[], status="skipped", reason="needs bitsandbytes"),
        oom,
    ]
    page = html_report(manifest(recs))
    assert re.search(r'<tr class="failed" data-candidate="quantize:gptq">.*?FAILED: PassFailed: kernel exploded</td></tr>', page)
    assert re.search(r'<tr class="skipped" data-candidate="quantize:bnb-nf4">.*?SKIPPED: needs bitsandbytes</td></tr>', page)
    assert re.search(r'<tr class="measured oom" data-candidate="precision_cast">.*?<td class=num>OOM</td>', page)
    assert "memory_gb: 8.000 [8.000, inf] limit 8.0 -&gt; NOT MET" in page  # its budget line under the row
    assert set(points(svg_of(page))) == {"baseline"}
    assert "Not plotted (see the table): 1 quantize:gptq (failed: PassFailed: kernel exploded); " in page
    assert "2 precision_cast (out of memory)" in page


def test_nothing_to_plot_says_so_and_page_still_has_the_table():
    recs = [CandidateRecord(index=0, name="baseline", chain=[], status="failed", reason="load failed")]
    page = html_report(manifest(recs))
    assert "<svg" not in page and "Nothing to plot" in page and 'data-candidate="baseline"' in page


def test_pareto_front_keeps_only_undominated_points():
    recs = [
        scored(0, "baseline", 0.50, 10.0),
        scored(1, "slower_and_worse", 0.45, 8.0),
        scored(2, "fast", 0.47, 30.0),
        scored(3, "fast_but_worse", 0.40, 30.0),
    ]
    pts, omitted = plot_points(manifest(recs))
    assert not omitted
    assert [p.name for p in pareto_front(pts)] == ["fast", "baseline"]
    svg = svg_of(html_report(manifest(recs)))
    front = sorted(n for n, g in points(svg).items() if "front" in g.get("class").split())
    assert front == ["baseline", "fast"] and svg.find(f".//{SVG}polyline[@class='front-line']") is not None


def test_predicted_vs_measured_section_only_with_a_forecast():
    recs = [scored(0, "baseline", 0.50, 10.0)]
    forecast = [
        {"name": "baseline", "fits": True, "roofline_tok_s": 18.0, "memory": {"weight_bytes": 1.5e9, "peak_bytes": 2.5e9}}
    ]
    assert 'id="forecast"' not in html_report(manifest(recs))
    page = html_report(manifest(recs, forecast))
    assert re.search(
        r'<table id="forecast">.*<th scope="row">baseline</th><td class=num>1.50 / 1.00</td><td class=num>2.50 / 2.00</td>', page
    )


def test_page_is_self_contained():
    page = html_report(manifest([scored(0, "baseline", 0.50, 10.0)]))
    assert not re.search(r"(src|href)\s*=|@import|url\(|<script|<link", page, re.I)
