"""One night: for every source x recipe, build it when the release (model content, recipe, relevant
package versions) changed since its last finished build, record it, compare it with that build, and
write a markdown report. A killed night resumes: an unfinished build is rebuilt from the cache."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from optpipe.build.cache import KEY_PACKAGES
from optpipe.build.plan import plan
from optpipe.errors import BuildInterrupted, OptpipeError
from optpipe.files import write_text_atomic
from optpipe.history import Comparison, HistoryStore, build_and_record, compare, side_from_row
from optpipe.history.rows import recipe_name
from optpipe.history.schema import BuildRow
from optpipe.nightly.config import Entry, Nightly, load_nightly
from optpipe.nightly.report import report_markdown

Progress = Callable[[str, Any], None]

BUILT, UNCHANGED, FAILED, INTERRUPTED = "built", "unchanged", "failed", "interrupted"


@dataclass
class EntryResult:
    entry: Entry
    action: str  # built / unchanged / failed
    why: str
    fingerprint: str = ""
    build: BuildRow | None = None  # the build recorded tonight, or the unchanged one
    previous: BuildRow | None = None
    comparison: Comparison | None = None
    cached: int = 0  # candidates taken from the cache
    measured: int = 0


@dataclass
class NightlyResult:
    started: datetime
    config_file: Path
    history: str
    entries: list[EntryResult] = field(default_factory=list)
    report: Path | None = None

    @property
    def regressed(self) -> list[EntryResult]:
        return [e for e in self.entries if e.comparison is not None and e.comparison.regressed]

    @property
    def failed(self) -> list[EntryResult]:
        return [e for e in self.entries if e.action == FAILED]


def _key_packages(packages: dict[str, Any]) -> dict[str, Any]:
    return {k: packages.get(k) for k in KEY_PACKAGES}


def _change(entry: Entry, fp: str, packages: dict[str, Any], last: BuildRow | None) -> str:
    """Why this entry must be built tonight ('' when nothing changed since `last`)."""
    if last is None:
        return "first build"
    if last.model_fingerprint != fp:
        return f"new release: model {last.model_fingerprint} -> {fp}"
    if last.recipe_hash != entry.recipe.content_hash():
        return "the recipe changed"
    old, new = _key_packages(last.packages), _key_packages(packages)
    changed = [f"{k} {old[k]} -> {new[k]}" for k in KEY_PACKAGES if old[k] != new[k]]
    return ("packages changed: " + ", ".join(changed)) if changed else ""


def run_nightly(
    config_file: str | Path, history_url: str | None = None, rebuild_all: bool = False, progress: Progress | None = None
) -> NightlyResult:
    say: Progress = progress or (lambda event, payload: None)
    nightly = load_nightly(config_file)  # every problem of config, sources and recipes, before any build
    url = history_url or nightly.config.history_url
    store = HistoryStore.open(url)  # the history is what a night compares against: unusable -> stop now
    result = NightlyResult(datetime.now(timezone.utc), Path(config_file), store.url)
    try:
        fingerprints: dict[str, str] = {}
        for entry in nightly.entries:
            if entry.source not in fingerprints:
                say("phase", f"fingerprinting {entry.source} ({entry.model.describe()})")
                fingerprints[entry.source] = entry.model.fingerprint()
            try:
                result.entries.append(_one(entry, fingerprints[entry.source], store, nightly, url, rebuild_all, say))
            except BuildInterrupted:  # the report names the entry; the same command resumes it from the cache
                result.entries.append(EntryResult(entry, INTERRUPTED, "interrupted: run the same command again to resume"))
                raise
    finally:
        result.report = _write_report(result, nightly, store)
        store.close()
    return result


def _one(entry: Entry, fp: str, store: HistoryStore, nightly: Nightly, url, rebuild_all: bool, say: Progress) -> EntryResult:
    name = f"{entry.source}/{Path(entry.recipe_file).stem}"
    try:
        p = plan(entry.recipe, entry.recipe_file)
    except OptpipeError as exc:
        return EntryResult(entry, FAILED, f"cannot build here: {exc}", fp)
    last = store.last_finished(recipe_name(entry.recipe_file), p.model.describe(), p.target.name, entry.source)
    why = _change(entry, fp, p.env.packages, last)
    if not why and not rebuild_all:
        say("phase", f"{name}: unchanged since build #{last.id}")  # type: ignore[union-attr]
        return EntryResult(entry, UNCHANGED, f"unchanged since build #{last.id}", fp, build=last)  # type: ignore[union-attr]
    why = why or "rebuild requested (--rebuild-all)"
    say("phase", f"{name}: building ({why})")
    try:
        _, recorded = build_and_record(p, say, url=url, source_name=entry.source)
    except BuildInterrupted:
        raise
    except OptpipeError as exc:
        return EntryResult(entry, FAILED, f"build failed: {exc}", fp)
    row = store.get(recorded.id) if recorded else None
    if row is None:
        return EntryResult(entry, FAILED, "built, but not recorded in the history (see the warning)", fp)
    if nightly.config.keep_artifacts and row.artifact_dir:
        retain(
            Path(row.artifact_dir),
            entry.output_dir.parent / f"{entry.output_dir.name}.artifacts",
            row.id,
            nightly.config.keep_artifacts,
        )
    res = EntryResult(entry, BUILT, why, fp, build=row)
    res.cached = sum(c.status == "cached" for c in row.candidates)
    res.measured = sum(c.status == "measured" for c in row.candidates)
    res.previous = store.previous(row)
    if res.previous is not None:
        res.comparison = compare(side_from_row(res.previous), side_from_row(row), nightly.config.tolerance)
    return res


MARKER = ".optpipe-retained"


def retain(artifact: Path, root: Path, build_id: int, keep: int) -> None:
    """Copy this build's artifact to <root>/build-<id> and delete the older copies beyond `keep`
    (only directories optpipe made here, marked as such; the history keeps every row)."""
    dest = root / f"build-{build_id:06d}"
    if not dest.exists():
        tmp = root / f".build-{build_id:06d}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(artifact, tmp)
        (tmp / MARKER).write_text(f"copy of the artifact of history build #{build_id}, made by optpipe nightly\n")
        tmp.rename(dest)
    ours = sorted(p for p in root.glob("build-*") if (p / MARKER).is_file())
    for old in ours[: max(len(ours) - keep, 0)]:
        shutil.rmtree(old)


def _html(result: NightlyResult, store: HistoryStore) -> str:
    from html import escape

    from optpipe.nightly.plots import page, section

    rows = "".join(
        f"<tr><td>{escape(e.entry.source)}</td><td>{escape(Path(e.entry.recipe_file).stem)}</td><td>{escape(e.action)}</td>"
        f"<td>{escape(e.why)}</td><td>{'<b class=reg>REGRESSION</b>' if e.comparison is not None and e.comparison.regressed else ''}</td></tr>"
        for e in result.entries
    )
    summary = f"<table><tr><th>source</th><th>recipe</th><th>action</th><th>why</th><th></th></tr>{rows}</table>"
    sections = []
    for e in result.entries:
        if e.build is not None:
            heading = f"{e.entry.source} / {Path(e.entry.recipe_file).stem} on {e.entry.recipe.target}"
            sections.append(section(heading, store.series(e.build), e.comparison is not None and e.comparison.regressed))
    return page(f"optpipe nightly {result.started.strftime('%Y-%m-%d %H:%M UTC')}", summary, sections)


def _write_report(result: NightlyResult, nightly: Nightly, store: HistoryStore) -> Path:
    reports = (
        nightly.resolve(nightly.config.reports_dir)
        if nightly.config.reports_dir
        else nightly.resolve(nightly.config.output_root) / "reports"
    )
    reports.mkdir(parents=True, exist_ok=True)
    stamp = result.started.strftime("%Y%m%dT%H%M%SZ")
    path = reports / f"nightly-{stamp}.md"
    n = 1
    while path.exists() or path.with_suffix(".html").exists():  # two nights in one second: keep both reports
        n += 1
        path = reports / f"nightly-{stamp}-{n}.md"
    text = report_markdown(result, nightly.config.tolerance)
    write_text_atomic(path, text)
    write_text_atomic(reports / "latest.md", text)
    try:
        html = _html(result, store)
    except OptpipeError as exc:  # the history went away mid-night: the markdown report still stands
        html = f"<!doctype html><p>no plots: {exc}</p>"
    write_text_atomic(path.with_suffix(".html"), html)
    write_text_atomic(reports / "latest.html", html)
    return path


__all__ = ["BUILT", "FAILED", "UNCHANGED", "EntryResult", "NightlyResult", "run_nightly"]
