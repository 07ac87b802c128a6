"""One night: for every source x recipe, build it when the release (model content, recipe, relevant
package versions) changed since its last finished build, record it, compare it with that build, and
write a markdown report. A killed night resumes: an unfinished build is rebuilt from the cache."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from optpipe.build.cache import KEY_PACKAGES
from optpipe.build.plan import Plan, plan
from optpipe.errors import BuildInterrupted, InvalidInputError, OptpipeError, Problem
from optpipe.files import write_text_atomic
from optpipe.history import Comparison, HistoryStore, build_and_record, compare, side_from_row
from optpipe.history.rows import recipe_name
from optpipe.history.schema import BuildRow
from optpipe.nightly.config import Entry, Nightly, load_nightly
from optpipe.nightly.release import Release, release_of
from optpipe.nightly.report import report_markdown
from optpipe.output.manifest import Manifest
from optpipe.spec.targets import load_target

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
    notes: list[str] = field(default_factory=list)  # e.g. a hub release that could not be checked

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
    config_file: str | Path,
    history_url: str | None = None,
    rebuild_all: bool = False,
    progress: Progress | None = None,
    executor: str | None = None,
    ray_address: str | None = None,
) -> NightlyResult:
    """One night. `executor` / `ray_address` override the configuration's (local: one build after
    another in this process; ray: one Ray task per build, the history written here from their manifests)."""
    say: Progress = progress or (lambda event, payload: None)
    nightly = load_nightly(config_file)  # every problem of config, sources and recipes, before any build
    kind = executor or nightly.config.executor
    if kind not in ("local", "ray"):
        raise InvalidInputError([Problem(str(config_file), None, "executor", kind, "use local or ray")])
    url = history_url or nightly.config.history_url
    store = HistoryStore.open(url)  # the history is what a night compares against: unusable -> stop now
    ray = None
    if kind == "ray":
        from optpipe.nightly import ray_executor

        try:
            ray = ray_executor.connect(ray_address or nightly.config.ray_address, str(config_file))
        except BaseException:
            store.close()
            raise
    result = NightlyResult(datetime.now(timezone.utc), Path(config_file), store.url)
    slots: list[EntryResult | None] = [None] * len(nightly.entries)
    try:
        releases: dict[str, Release] = {}
        pending: list[tuple[int, Pending]] = []
        for i, entry in enumerate(nightly.entries):
            if entry.source not in releases:
                say("phase", f"fingerprinting {entry.source} ({entry.model.describe()})")
                releases[entry.source] = release_of(entry.model)
                if releases[entry.source].note:
                    say("note", releases[entry.source].note)
                    result.notes.append(f"{entry.source}: {releases[entry.source].note}")
            entry = _pinned(entry, releases[entry.source])
            decided = _decide(entry, releases[entry.source].fingerprint, store, rebuild_all, say, planned=ray is None)
            if isinstance(decided, EntryResult):
                slots[i] = decided
            elif ray is None:
                try:
                    slots[i] = _build_local(decided, store, nightly, url, say)
                except BuildInterrupted:  # the report names the entry; the same command resumes it from the cache
                    slots[i] = EntryResult(entry, INTERRUPTED, "interrupted: run the same command again to resume")
                    raise
            else:
                pending.append((i, decided))
        if ray is not None and pending:
            _build_on_ray(ray, pending, slots, store, nightly, say)
    finally:
        result.entries = [e for e in slots if e is not None]
        result.report = _write_report(result, nightly, store)
        store.close()
        if ray is not None:
            ray.shutdown()
    return result


@dataclass
class Pending:
    """An entry that must be built tonight, and why."""

    entry: Entry
    fingerprint: str
    why: str
    plan: Plan | None  # the local executor's plan; a Ray task plans on its own node


def _pinned(entry: Entry, release: Release) -> Entry:
    """The entry building exactly tonight's release (a hub id pinned to the sha that was checked)."""
    if release.model == entry.model:
        return entry
    model = entry.recipe.model.model_copy(update={"revision": release.model.revision})
    return dc_replace(entry, model=release.model, recipe=entry.recipe.model_copy(update={"model": model}))


def _decide(entry: Entry, fp: str, store: HistoryStore, rebuild_all: bool, say: Progress, planned: bool) -> EntryResult | Pending:
    """Unchanged (an EntryResult) or to build (Pending). The local executor plans here; for Ray the
    checks that need no host are enough (the task plans on the node that builds)."""
    name = f"{entry.source}/{Path(entry.recipe_file).stem}"
    p = None
    try:
        if planned:
            p = plan(entry.recipe, entry.recipe_file)
            model, target, packages = p.model.describe(), p.target.name, p.env.packages
        else:
            model, target, packages = entry.model.describe(), entry.recipe.target, _driver_packages()
    except OptpipeError as exc:
        return EntryResult(entry, FAILED, f"cannot build here: {exc}", fp)
    last = store.last_finished(recipe_name(entry.recipe_file), model, target, entry.source)
    why = _change(entry, fp, packages, last)
    if not why and not rebuild_all:
        say("phase", f"{name}: unchanged since build #{last.id}")  # type: ignore[union-attr]
        return EntryResult(entry, UNCHANGED, f"unchanged since build #{last.id}", fp, build=last)  # type: ignore[union-attr]
    why = why or "rebuild requested (--rebuild-all)"
    say("phase", f"{name}: building ({why})")
    return Pending(entry, fp, why, p)


@functools.cache
def _driver_packages() -> dict[str, Any]:
    """This host's package versions (probed once a night): the Ray nodes are expected to match them."""
    from optpipe.runtime.host_probe import detect_host

    return detect_host().packages


def _build_local(job: Pending, store: HistoryStore, nightly: Nightly, url, say: Progress) -> EntryResult:
    assert job.plan is not None
    try:
        _, recorded = build_and_record(job.plan, say, url=url, source_name=job.entry.source)
    except BuildInterrupted:
        raise
    except OptpipeError as exc:
        return EntryResult(job.entry, FAILED, f"build failed: {exc}", job.fingerprint)
    return _finish(job, recorded.id if recorded else None, store, nightly)


def _build_on_ray(ray, pending: list[tuple[int, Pending]], slots: list, store: HistoryStore, nightly: Nightly, say) -> None:
    """Every pending build as one Ray task; each is recorded here, from its manifest, as it finishes."""
    from optpipe.nightly import ray_executor

    jobs = {}
    for i, job in pending:
        name = f"{job.entry.source}/{Path(job.entry.recipe_file).stem}"
        name = name if name not in jobs else f"{name} ({job.entry.recipe_file})"  # two recipes of one stem
        jobs[name] = (i, job)
        say("phase", f"{name}: forecasting its needs")
    dispatched = [
        ray_executor.Job(
            name,
            job.entry.recipe.model_dump(mode="json"),
            job.entry.recipe_file,
            num_gpus=_num_gpus(job.entry),
            memory_bytes=_memory_bytes(job.entry),
        )
        for name, (_, job) in jobs.items()
    ]
    for done, outcome in ray_executor.run_jobs(ray, dispatched, say):
        i, job = jobs[done.name]
        say("phase", f"{done.name}: finished on {outcome.node or 'no node'}" + (f" ({outcome.error})" if outcome.error else ""))
        recorded = None
        if outcome.manifest_json is not None:
            try:
                manifest = Manifest.model_validate_json(outcome.manifest_json)
                recorded = store.record(manifest, Path(outcome.output_dir), job.entry.source)
            except (ValueError, OptpipeError) as exc:
                say(
                    "note",
                    f"{done.name}: not recorded in the history ({exc}); add it with: optpipe history --add {outcome.output_dir}",
                )
        if outcome.error is not None:
            slots[i] = EntryResult(job.entry, FAILED, f"build failed: {outcome.error}", job.fingerprint)
        else:
            slots[i] = _finish(job, recorded.id if recorded else None, store, nightly)


def _num_gpus(entry: Entry) -> float:
    """A CUDA target built on CUDA takes one GPU; everything else none."""
    target = load_target(entry.recipe.target)
    return 1.0 if target.has_cuda and entry.recipe.device in ("auto", "cuda") else 0.0


def _memory_bytes(entry: Entry) -> int:
    """The forecast's largest candidate peak: what the task reserves (0 where it cannot be forecast)."""
    from optpipe.build.forecasting import forecast_recipe

    try:
        _, forecasts = forecast_recipe(entry.recipe, entry.model, load_target(entry.recipe.target), entry.recipe_file)
    except OptpipeError:
        return 0
    return max((f.memory.peak_bytes for f in forecasts if f.memory is not None), default=0)


def _finish(job: Pending, recorded_id: int | None, store: HistoryStore, nightly: Nightly) -> EntryResult:
    """Retain the artifact, compare with the previous finished build."""
    entry, fp = job.entry, job.fingerprint
    row = store.get(recorded_id) if recorded_id is not None else None
    if row is None:
        return EntryResult(entry, FAILED, "built, but not recorded in the history (see the warning)", fp)
    if nightly.config.keep_artifacts and row.artifact_dir:
        retain(
            Path(row.artifact_dir),
            entry.output_dir.parent / f"{entry.output_dir.name}.artifacts",
            row.id,
            nightly.config.keep_artifacts,
        )
    res = EntryResult(entry, BUILT, job.why, fp, build=row)
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
