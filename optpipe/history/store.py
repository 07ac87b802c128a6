"""Where builds are recorded: a SQLAlchemy database whose schema Alembic migrates on open.

SQLite under the optpipe cache root is the default (`OPTPIPE_HISTORY_URL` or `--history-url` picks
another, e.g. `postgresql+psycopg://user@host/optpipe` for a team). Opening never recreates or
overwrites a database it cannot read: a corrupt file is a `HistoryError` that names it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from optpipe.build.cache import optpipe_cache_root
from optpipe.errors import OptpipeError
from optpipe.history.schema import BuildRow
from optpipe.output.manifest import INTERRUPTED, RUNNING, Manifest

MIGRATIONS = Path(__file__).parent / "migrations"
FINISHED = ("MET", "NOT MET", "INCONCLUSIVE")


class HistoryError(OptpipeError):
    """The history database cannot be opened or read (unreachable, corrupt, from a newer optpipe)."""

    exit_code = 2


def history_url(url: str | None = None) -> str:
    """The database to use: the given URL, else $OPTPIPE_HISTORY_URL, else SQLite in the cache root."""
    if url:
        return url
    if os.environ.get("OPTPIPE_HISTORY_URL"):
        return os.environ["OPTPIPE_HISTORY_URL"]
    return f"sqlite:///{optpipe_cache_root() / 'history.db'}"


def describe_url(url: str) -> str:
    """The URL as safe to print (no password), or the file for SQLite."""
    try:
        u = make_url(url)
    except ArgumentError:
        return url
    if u.get_backend_name() == "sqlite" and u.database:
        return u.database
    return u.render_as_string(hide_password=True)


def _why(url: str, exc: BaseException) -> HistoryError:
    where = describe_url(url)
    orig = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    if url.startswith("sqlite") and isinstance(exc, DatabaseError) and not isinstance(exc, OperationalError):
        return HistoryError(
            f"the history database {where} is not a readable SQLite database ({orig}). optpipe left it untouched: "
            "restore it from a backup, or move it aside to start a new history"
        )
    return HistoryError(f"cannot use the history database {where}: {orig}")


def _finite(obj: Any) -> Any:
    """NaN and infinities as the strings pydantic reads back as floats: PostgreSQL's JSON refuses the
    bare `NaN` tokens json.dumps writes (a candidate with no speed has a NaN spread)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def json_dumps(obj: Any) -> str:
    return json.dumps(_finite(obj), allow_nan=False)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")  # two builds finishing at once wait for each other
    cur.close()


@dataclass
class Recorded:
    id: int
    replaced: bool  # the same build (output dir + start time) was recorded before and is updated


class HistoryStore:
    """An open, migrated history database."""

    def __init__(self, engine: Engine, url: str):
        self.engine = engine
        self.url = url

    @classmethod
    def open(cls, url: str | None = None) -> HistoryStore:
        url = history_url(url)
        try:
            u = make_url(url)
        except ArgumentError as exc:
            raise HistoryError(f"not a database URL: {url!r} ({exc}); e.g. sqlite:///path/history.db") from None
        if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
            try:
                Path(u.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HistoryError(f"cannot use the history database {u.database}: {exc.strerror or exc}") from None
        try:
            engine = create_engine(url, json_serializer=json_dumps)
        except (ArgumentError, ImportError) as exc:  # an unknown dialect or a missing driver (psycopg)
            raise HistoryError(f"cannot use the history database {describe_url(url)}: {exc}") from None
        if u.get_backend_name() == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine, url)
        store._migrate()
        return store

    def _migrate(self) -> None:
        from alembic import command
        from alembic.config import Config
        from alembic.util.exc import CommandError

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as conn:
                inspect(conn).get_table_names()  # a corrupt file fails here, before anything is written
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except CommandError as exc:
            raise HistoryError(
                f"the history database {describe_url(self.url)} has a schema this optpipe does not know ({exc}); "
                "it was written by a newer optpipe: upgrade optpipe"
            ) from None
        except SQLAlchemyError as exc:
            raise _why(self.url, exc) from None

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ writing
    def record(self, manifest: Manifest, output_dir: Path, source_name: str | None = None) -> Recorded:
        """Record one build (its manifest) with every candidate; recording it again updates it."""
        from optpipe.history.rows import build_row

        row = build_row(manifest, output_dir, source_name)
        try:
            with Session(self.engine) as s, s.begin():
                old = s.scalars(
                    select(BuildRow).where(BuildRow.output_dir == row.output_dir, BuildRow.started == row.started)
                ).one_or_none()
                if old is not None:
                    row.id = old.id
                    s.delete(old)
                    s.flush()
                s.add(row)
                s.flush()
                return Recorded(row.id, old is not None)
        except SQLAlchemyError as exc:
            raise _why(self.url, exc) from None

    # ------------------------------------------------------------------ reading
    def builds(
        self, model: str | None = None, recipe: str | None = None, target: str | None = None, limit: int | None = None
    ) -> list[BuildRow]:
        """Builds, newest first; `model` matches the source or a fingerprint prefix, `recipe` the
        recipe's name (file stem) or file."""
        q = select(BuildRow).options(selectinload(BuildRow.candidates)).order_by(BuildRow.id.desc())
        if model:
            q = q.where(BuildRow.model.contains(model) | BuildRow.model_fingerprint.startswith(model))
        if recipe:
            q = q.where((BuildRow.recipe_name == recipe) | (BuildRow.recipe_file == recipe))
        if target:
            q = q.where(BuildRow.target == target)
        if limit:
            q = q.limit(limit)
        return self._all(q)

    def get(self, build_id: int) -> BuildRow | None:
        rows = self._all(select(BuildRow).options(selectinload(BuildRow.candidates)).where(BuildRow.id == build_id))
        return rows[0] if rows else None

    def latest_in(self, output_dir: Path) -> BuildRow | None:
        q = select(BuildRow).options(selectinload(BuildRow.candidates)).where(BuildRow.output_dir == str(output_dir.resolve()))
        rows = self._all(q.order_by(BuildRow.id.desc()).limit(1))
        return rows[0] if rows else None

    def previous(self, build: BuildRow) -> BuildRow | None:
        """The last finished build of the same recipe, model (nightly source, else model source) and
        target before this one."""
        return self._last(build.recipe_name, build.model, build.target, build.source_name, before=build.id)

    def last_finished(self, recipe_name: str, model: str, target: str, source_name: str | None = None) -> BuildRow | None:
        return self._last(recipe_name, model, target, source_name)

    def series(self, build: BuildRow, limit: int = 60) -> list[BuildRow]:
        """The finished builds of this build's recipe, model (or nightly source) and target, oldest
        first, ending with the newest `limit` (what a per-night plot draws)."""
        same = BuildRow.source_name == build.source_name if build.source_name else BuildRow.model == build.model
        q = select(BuildRow).options(selectinload(BuildRow.candidates))
        q = q.where(
            BuildRow.recipe_name == build.recipe_name, BuildRow.target == build.target, BuildRow.status.in_(FINISHED), same
        )
        return list(reversed(self._all(q.order_by(BuildRow.id.desc()).limit(limit))))

    def _last(self, recipe_name: str, model: str, target: str, source_name: str | None, before: int | None = None):
        same = BuildRow.source_name == source_name if source_name else BuildRow.model == model
        q = select(BuildRow).options(selectinload(BuildRow.candidates))
        q = q.where(BuildRow.recipe_name == recipe_name, BuildRow.target == target, BuildRow.status.in_(FINISHED), same)
        if before is not None:
            q = q.where(BuildRow.id < before)
        rows = self._all(q.order_by(BuildRow.id.desc()).limit(1))
        return rows[0] if rows else None

    def _all(self, q) -> list[BuildRow]:
        try:
            with Session(self.engine, expire_on_commit=False) as s:
                return list(s.scalars(q).all())
        except SQLAlchemyError as exc:
            raise _why(self.url, exc) from None


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


__all__ = ["FINISHED", "INTERRUPTED", "RUNNING", "HistoryError", "HistoryStore", "Recorded", "history_url", "now"]
