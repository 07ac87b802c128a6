"""Record a finished (or interrupted, or failed) build in the history, from the manifest it wrote.

A history database that cannot be reached or read never costs the build: the build's own
manifest.json is its record, and the warning says how to add it to the history later.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from optpipe.build.engine import Build, BuildResult, Progress
from optpipe.build.plan import Plan
from optpipe.history.store import HistoryError, HistoryStore, Recorded, describe_url, history_url
from optpipe.output.manifest import Manifest

OFF = ("off", "none", "")


def history_enabled(url: str | None) -> bool:
    resolved = url if url is not None else history_url(None)
    return resolved.strip().lower() not in OFF


def read_build_manifest(output_dir: Path) -> Manifest:
    path = Path(output_dir) / "manifest.json"
    try:
        return Manifest.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise HistoryError(f"{path}: no manifest.json there (not an optpipe output directory?)") from None
    except (OSError, ValueError) as exc:
        raise HistoryError(f"{path}: cannot read this build's manifest ({str(exc).splitlines()[0]})") from None


def record_output_dir(output_dir: Path, url: str | None = None, source_name: str | None = None) -> Recorded:
    """Add (or update) the build whose manifest.json is in `output_dir`."""
    manifest = read_build_manifest(output_dir)
    store = HistoryStore.open(url)
    try:
        return store.record(manifest, output_dir, source_name)
    finally:
        store.close()


def record_build(
    build: Build, url: str | None = None, warn: Callable[[str], None] = print, source_name: str | None = None
) -> Recorded | None:
    """Record `build` if it wrote its manifest (a build refused before it claimed its output directory
    left none of its own). Any history problem is a warning: the build is never lost for it."""
    if not history_enabled(url):
        return None
    manifest_file = build.out / "manifest.json"
    try:
        manifest = Manifest.model_validate_json(manifest_file.read_text())
    except (OSError, ValueError):
        return None
    if manifest.started != build.started.isoformat():  # another build's manifest (this one never started)
        return None
    try:
        store = HistoryStore.open(url)
        try:
            return store.record(manifest, build.out, source_name)
        finally:
            store.close()
    except HistoryError as exc:
        warn(
            f"build not recorded in the history: {exc}. Its manifest is kept ({manifest_file}); once the database "
            f"is fixed, add it with: optpipe history --add {build.out}"
        )
        return None


def build_and_record(
    p: Plan,
    progress: Progress,
    keep_candidates: bool = False,
    url: str | None = None,
    source_name: str | None = None,
) -> tuple[BuildResult, Recorded | None]:
    """Run a planned build and record it in the history, also when it ends interrupted or failed
    (the exception then goes on); a history that cannot be used is a note, never a lost build."""
    b = Build(p, progress, keep_candidates)
    try:
        result = b.run()
    except BaseException:
        record_build(b, url, warn=lambda msg: progress("note", msg), source_name=source_name)
        raise
    return result, record_build(b, url, warn=lambda msg: progress("note", msg), source_name=source_name)


__all__ = ["build_and_record", "describe_url", "history_enabled", "read_build_manifest", "record_build", "record_output_dir"]
