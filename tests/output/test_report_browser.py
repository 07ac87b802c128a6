"""report.html in a real headless browser (Debian's chromium through Playwright): the page renders
from a file:// path with no network and no console error, the table rows and the plot's points are
visible, and a screenshot is saved for a human to look at."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from optpipe.judge.budget import Check, Verdict
from optpipe.output.manifest import CandidateRecord
from optpipe.output.report_html import html_report
from tests.factories import manifest
from tests.output.test_report_html import scored

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def report_manifest():
    oom = scored(2, "precision_cast", 0.5, 1.0, verdict="NOT MET")
    oom.measurements.out_of_memory = "out of memory under the 8 GB cap"
    oom.measurements.memory_cap_gb = 8.0
    oom.checks = [Check(name="memory_gb", limit=8, value=8.0, low=8.0, high=float("inf"), verdict=Verdict.NOT_MET)]
    recs = [
        scored(0, "baseline", 0.50, 100.0, projected_tok_s=5.0, size=4e9, verdict="NOT MET"),
        scored(1, "<b>bf16</b>", 0.495, 150.0, projected_tok_s=8.0, size=2e9),
        oom,
        CandidateRecord(index=3, name="quantize:gptq", chain=[], status="failed", reason="PassFailed: kernel exploded"),
        scored(4, "compile", 0.49, 900.0, projected_tok_s=50.0, size=2e9, verdict="MET"),
    ]
    forecast = [{"name": "baseline", "fits": True, "roofline_tok_s": 18.0, "memory": {"weight_bytes": 4e9, "peak_bytes": 5e9}}]
    return manifest(recs, forecast, goals={"min_decode_tok_s": 40}, status="MET", selected="compile")


def test_report_renders_in_headless_chromium(tmp_path: Path):
    from playwright import sync_api  # the dev extra: only the browser may be missing

    page_file = tmp_path / "report.html"
    page_file.write_text(html_report(report_manifest()), encoding="utf-8")
    url = page_file.as_uri()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors, requests = [], []
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(url, wait_until="load")
            assert page.title() == "optpipe report: r.yaml (MET)"
            assert page.locator("#status").inner_text() == "MET"

            rows = page.locator("#candidates tbody tr[data-candidate]")
            assert rows.count() == 5
            names = [rows.nth(i).locator("th").inner_text() for i in range(5)]
            assert names == ["baseline", "<b>bf16</b>", "precision_cast", "quantize:gptq", "compile"]
            for i in range(5):
                box = rows.nth(i).bounding_box()
                assert rows.nth(i).is_visible() and box and box["width"] > 0 and box["height"] > 0
            assert "FAILED: PassFailed: kernel exploded" in page.locator('tr[data-candidate="quantize:gptq"]').inner_text()

            svg = page.locator("svg.pareto")
            box = svg.bounding_box()
            assert svg.is_visible() and box and box["width"] > 300 and box["height"] > 200
            markers = page.locator("svg.pareto g.point circle.marker")
            assert markers.count() == 3  # the failed and the out-of-memory candidates are not plotted
            for i in range(markers.count()):
                b = markers.nth(i).bounding_box()
                assert markers.nth(i).is_visible() and b and b["width"] > 0 and b["height"] > 0
                assert b["x"] >= box["x"] and b["x"] + b["width"] <= box["x"] + box["width"]
            assert page.locator("svg.pareto g.point.projected").count() == 3
            assert page.locator("svg.pareto g.budget-line").count() == 2
            assert page.locator("#forecast tbody tr").count() == 1

            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    assert errors == []
    assert requests == [url]  # the page itself and nothing else: no CDN, font or image
