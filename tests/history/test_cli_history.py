"""`optpipe history` and `optpipe compare` from the command line."""

from typer.testing import CliRunner

from optpipe.cli import app
from optpipe.output.manifest import CandidateRecord
from tests.factories import bench, manifest, result

runner = CliRunner()


def _write_build(directory, tok_s, acc, started):
    rec = CandidateRecord(
        index=0, name="baseline", chain=[], status="measured", measurements=result(acc, [2.0, 2.1], bench(tok_s, 1.0))
    )
    m = manifest([rec], status="NOT MET", started=started)
    directory.mkdir(parents=True)
    (directory / "manifest.json").write_text(m.model_dump_json())
    return directory


def test_history_lists_builds_and_compare_flags_a_regression(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    a = _write_build(tmp_path / "a", 100.0, [1.0] * 50, "2026-11-26T01:00:00+00:00")
    b = _write_build(tmp_path / "b", 80.0, [1.0] * 50, "2026-11-27T01:00:00+00:00")
    for d in (a, b):
        r = runner.invoke(app, ["history", "--add", str(d), "--history-url", url])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["history", "--recipe", "r", "--target", "rtx4060", "--history-url", url])
    assert r.exit_code == 0 and "recorded build #" not in r.output
    assert r.output.index("80.0 (baseline)") < r.output.index("100.0 (baseline)")  # newest first
    assert "no builds recorded match" in runner.invoke(app, ["history", "--target", "h100", "--history-url", url]).output

    r = runner.invoke(app, ["compare", "1", "2", "--history-url", url])
    assert r.exit_code == 5, r.output
    assert "| baseline | decode tok/s | 100 | 80 | 20 % drop |" in r.output and "**REGRESSION**" in r.output
    r = runner.invoke(app, ["compare", "1", "2", "--max-speed-drop-pct", "50", "--history-url", url])
    assert r.exit_code == 0 and "worse, within tolerance" in r.output
    # output directories work too, even without a history
    r = runner.invoke(app, ["compare", str(a), str(b), "--history-url", "off", "--max-speed-drop-pct", "50"])
    assert r.exit_code == 0, r.output


def test_compare_input_errors_exit_2(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    r = runner.invoke(app, ["compare", "7", str(tmp_path / "missing"), "--history-url", url])
    assert r.exit_code == 2 and "no build #7" in r.output
    r = runner.invoke(app, ["compare", "1", "2", "--confidence", "2", "--history-url", url])
    assert r.exit_code == 2 and "--confidence" in r.output
    (tmp_path / "bad.db").write_bytes(b"junk" * 50)
    r = runner.invoke(app, ["history", "--history-url", f"sqlite:///{tmp_path / 'bad.db'}"])
    assert r.exit_code == 2 and "bad.db" in r.output and "not a readable SQLite database" in r.output
    r = runner.invoke(app, ["history", "--limit", "0", "--history-url", url])
    assert r.exit_code == 2 and "--limit" in r.output
    r = runner.invoke(app, ["compare", "1", "2", "--max-speed-drop-pct", "-5", "--history-url", url])
    assert r.exit_code == 2 and "--max-speed-drop-pct -5.0" in r.output  # the option as typed, not the field
