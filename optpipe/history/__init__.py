"""Build history: every build and candidate measurement in a migrated database (SQLite by default,
PostgreSQL by URL), and comparisons between builds. Sits between `api` and `build`."""

from optpipe.history.compare import Comparison, Delta, Side, Tolerance, compare, markdown, side_from_manifest, side_from_row
from optpipe.history.recording import build_and_record, history_enabled, read_build_manifest, record_build, record_output_dir
from optpipe.history.store import FINISHED, HistoryError, HistoryStore, Recorded, describe_url, history_url

__all__ = [
    "FINISHED",
    "Comparison",
    "Delta",
    "HistoryError",
    "HistoryStore",
    "Recorded",
    "Side",
    "Tolerance",
    "build_and_record",
    "compare",
    "describe_url",
    "history_enabled",
    "history_url",
    "markdown",
    "read_build_manifest",
    "record_build",
    "record_output_dir",
    "side_from_manifest",
    "side_from_row",
]
