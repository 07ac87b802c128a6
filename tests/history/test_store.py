"""The history database: migrated from empty, builds recorded from manifests, unusable databases named."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, inspect

from optpipe.history import HistoryError, HistoryStore, record_build, record_output_dir
from optpipe.output.manifest import CandidateRecord
from tests.factories import bench, manifest, result


def _manifest(tok_s: float = 100.0, acc=(1, 0, 1, 1), nll=(2.0, 2.1, 1.9), **fields):
    recs = [
        CandidateRecord(
            index=0, name="baseline", chain=[], status="measured", measurements=result(list(acc), list(nll), bench(tok_s, 2.0))
        ),
        CandidateRecord(
            index=1,
            name="precision_cast",
            chain=[{"pass": "precision_cast"}],
            status="cached",
            verdict="MET",
            measurements=result(list(acc), list(nll), bench(2 * tok_s, 2.0), size=5e8),
        ),
        CandidateRecord(index=2, name="quantize", chain=[], status="failed", reason="kernel exploded"),
    ]
    return manifest(recs, **{"status": "MET", "selected": "precision_cast", "started": "2026-11-27T01:00:00+00:00", **fields})


def test_schema_is_migrated_up_from_an_empty_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'sub' / 'history.db'}"
    store = HistoryStore.open(url)
    assert store.revision() == "0001"
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"builds", "candidates", "alembic_version"} <= tables
    store.close()
    assert HistoryStore.open(url).revision() == "0001"  # opening again migrates nothing and loses nothing


def test_build_and_every_candidate_measurement_are_recorded(tmp_path):
    store = HistoryStore.open(f"sqlite:///{tmp_path / 'h.db'}")
    m = _manifest()
    first = store.record(m, tmp_path / "out")
    again = store.record(m, tmp_path / "out")  # the same build recorded twice is one row, updated
    assert again.id == first.id and again.replaced and not first.replaced
    (b,) = store.builds()
    assert (b.recipe_name, b.target, b.status, b.selected, b.model_fingerprint) == ("r", "rtx4060", "MET", "precision_cast", "f")
    assert b.output_dir == str((tmp_path / "out").resolve())
    base, cast, failed = b.candidates
    assert base.decode_tok_s == 100.0 and base.decode_tok_s_stdev == 2.0 and base.decode_trials == 5
    assert base.hellaswag_acc_norm == 0.75 and base.hellaswag_n == 4 and base.perplexity == pytest.approx(7.389, rel=1e-3)
    assert cast.status == "cached" and cast.size_bytes == 500_000_000 and cast.verdict == "MET"
    assert failed.status == "failed" and failed.measurements is None and failed.reason == "kernel exploded"
    # per-item scores stay, so a later comparison can pair items and windows
    assert base.measurements["hellaswag"]["item_acc_norm"] == [1, 0, 1, 1]
    assert len(base.measurements["perplexity"]["window_nll"]) == 3


def test_filters_and_previous_build(tmp_path):
    store = HistoryStore.open(f"sqlite:///{tmp_path / 'h.db'}")
    a = store.record(_manifest(started="2026-11-25T01:00:00+00:00"), tmp_path / "out")
    store.record(_manifest(started="2026-11-26T01:00:00+00:00", status="interrupted"), tmp_path / "out")
    c = store.record(_manifest(started="2026-11-27T01:00:00+00:00"), tmp_path / "out")
    store.record(_manifest(recipe_file="other.yaml"), tmp_path / "out2")
    assert [b.id for b in store.builds(recipe="r")] == [c.id, c.id - 1, a.id]
    assert store.builds(recipe="nope") == [] and len(store.builds(model="f")) == 4
    assert store.previous(store.get(c.id)).id == a.id  # the interrupted build in between is not a baseline


def test_corrupt_database_is_a_clear_error_and_left_untouched(tmp_path):
    db = tmp_path / "history.db"
    db.write_bytes(b"this is not sqlite" * 100)
    before = db.read_bytes()
    with pytest.raises(HistoryError) as err:
        HistoryStore.open(f"sqlite:///{db}")
    assert str(db) in str(err.value) and "not a readable SQLite database" in str(err.value)
    assert db.read_bytes() == before


def test_a_build_is_never_lost_for_an_unusable_history(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    m = _manifest()
    (out / "manifest.json").write_text(m.model_dump_json())
    db = tmp_path / "history.db"
    db.write_bytes(b"garbage" * 100)
    fake = SimpleNamespace(out=out, started=SimpleNamespace(isoformat=lambda: m.started))
    warnings: list[str] = []
    assert record_build(fake, f"sqlite:///{db}", warn=warnings.append) is None
    assert str(db) in warnings[0] and f"optpipe history --add {out}" in warnings[0]
    assert (out / "manifest.json").exists()
    # once the database is usable again the build is added from its manifest
    rec = record_output_dir(out, f"sqlite:///{tmp_path / 'new.db'}")
    assert rec.id == 1


def test_unreachable_database_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HistoryError, match="cannot use the history database"):
        HistoryStore.open(f"sqlite:///{blocker / 'h.db'}")
    with pytest.raises(HistoryError, match="not a database URL"):
        HistoryStore.open("not a url")
    assert Path(blocker).read_text() == "x"
