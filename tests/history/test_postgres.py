"""The same history on a real PostgreSQL server: migrated from empty, builds recorded and queried."""

import math

import pytest

from optpipe.history import HistoryError, HistoryStore, compare, side_from_row
from tests.history.postgres import postgres_server, why_not
from tests.history.test_store import _manifest

pytestmark = pytest.mark.skipif(why_not() is not None, reason=why_not() or "")


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield url


def test_postgres_history_migrates_records_and_compares(pg_url, tmp_path):
    store = HistoryStore.open(pg_url)
    assert store.revision() == "0001"
    a = store.record(_manifest(tok_s=100.0, started="2026-11-26T01:00:00+00:00"), tmp_path / "out")
    b = store.record(_manifest(tok_s=80.0, started="2026-11-27T01:00:00+00:00"), tmp_path / "out")
    assert store.record(_manifest(tok_s=80.0, started="2026-11-27T01:00:00+00:00"), tmp_path / "out").replaced
    rows = store.builds(recipe="r")
    assert [r.id for r in rows] == [b.id, a.id] and rows[0].candidates[1].size_bytes == 500_000_000
    assert rows[0].candidates[0].measurements["hellaswag"]["item_acc_norm"] == [1, 0, 1, 1]
    new = store.get(b.id)
    c = compare(side_from_row(store.previous(new)), side_from_row(new))
    assert c.regressed and {d.metric for d in c.regressions} == {"decode tok/s"}
    odd = _manifest(started="2026-11-28T01:00:00+00:00")  # a NaN spread (PostgreSQL JSON has no NaN) reads back as NaN
    bench = odd.candidates[0].measurements.benchmark
    bench.decode_tok_s = bench.decode_tok_s.model_copy(update={"cv": float("nan")})
    row = store.get(store.record(odd, tmp_path / "out").id)
    assert math.isnan(side_from_row(row).candidates["baseline"].benchmark.decode_tok_s.cv)
    store.close()
    assert HistoryStore.open(pg_url).revision() == "0001"


def test_unreachable_postgres_is_named_without_the_password():
    with pytest.raises(HistoryError) as err:
        HistoryStore.open("postgresql+psycopg://u:secret@/nodb?host=/nonexistent-socket-dir&port=1")
    assert "cannot use the history database" in str(err.value) and "secret" not in str(err.value)
