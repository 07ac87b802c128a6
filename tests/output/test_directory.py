"""The output directory is the user's disk: pre-flight check, marker, lock, work/ ownership, artifact
swap and removal, stale `running` manifests, file modes. Real files and real processes, no model."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from optpipe.errors import InvalidInputError
from optpipe.files import normalize_modes
from optpipe.output.artifact import remove_artifact, write_artifact
from optpipe.output.directory import (
    MARKER,
    WORK_MARKER,
    OutputLock,
    WorkDir,
    check_output_dir,
    claim_output_dir,
    is_locked,
    read_manifest,
)
from optpipe.output.manifest import Manifest
from tests.factories import manifest as factory_manifest


def make_manifest() -> Manifest:
    return factory_manifest([], status="MET", target={"name": "cpu-x86", "display_name": "x86"}, measured_on="cpu")


def messages(problems) -> str:
    return "\n".join(p.render() for p in problems)


def test_new_or_empty_or_marked_dir_passes(tmp_path):
    assert check_output_dir(tmp_path / "new" / "deeper") == []
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty") == []
    claim_output_dir(tmp_path / "ours", "r.yaml")
    (tmp_path / "ours" / "manifest.json").write_text("{}")
    assert check_output_dir(tmp_path / "ours") == []
    assert json.loads((tmp_path / "ours" / MARKER).read_text())["tool"] == "optpipe"


def test_foreign_dir_file_and_foreign_work_are_refused(tmp_path):
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "thesis.tex").write_text("years of work")
    got = messages(check_output_dir(tmp_path / "theirs", origin="r.yaml"))
    assert "r.yaml: output_dir: exists, is not empty and was not made by optpipe" in got and "new or empty" in got
    with pytest.raises(InvalidInputError):
        claim_output_dir(tmp_path / "theirs", "r.yaml")
    assert not (tmp_path / "theirs" / MARKER).exists()
    (tmp_path / "afile").write_text("x")
    assert "is a file, not a directory" in messages(check_output_dir(tmp_path / "afile"))
    claim_output_dir(tmp_path / "ours", "r.yaml")
    (tmp_path / "ours" / "work").mkdir()
    (tmp_path / "ours" / "artifact").mkdir()
    got = messages(check_output_dir(tmp_path / "ours"))
    assert "work was not made by optpipe" in got and "artifact was not written by optpipe" in got


def test_full_disk_is_refused_with_the_bytes_needed(tmp_path):
    got = messages(check_output_dir(tmp_path / "out", needed_bytes=10**18))
    assert "GB free on the disk of" in got and "1000000000000000000 bytes" in got


def _read_only_dir(tmp_path: Path) -> Path:
    """A directory this user cannot write: a read-only tmpfs as root (root ignores modes), else 0555."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        return d
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("running as root without permission to mount a read-only tmpfs")
    return d


def test_read_only_parent_is_refused(tmp_path):
    d = _read_only_dir(tmp_path)
    try:
        got = messages(check_output_dir(d / "out"))
        assert "is not writable by this user" in got
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(d)], check=True)
        else:
            d.chmod(0o755)


def test_second_holder_of_the_lock_is_refused_with_the_first_pid(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from optpipe.output.directory import OutputLock\n"
            "with OutputLock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert is_locked(tmp_path)
        with pytest.raises(InvalidInputError, match=f"another optpipe build \\(pid {holder.pid}\\) is writing {tmp_path}"):
            OutputLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with OutputLock(tmp_path):  # the kernel dropped the dead holder's lock
        assert (tmp_path / ".optpipe-lock").read_text() == str(os.getpid())


def test_work_dir_removes_only_what_optpipe_made(tmp_path):
    work = WorkDir(tmp_path / "work")
    work.open()
    made = work.track("00-baseline")
    made.mkdir()
    (made / "model.safetensors").write_bytes(b"w")
    (tmp_path / "work" / "my-notes.txt").write_text("mine")
    assert work.clean() == ["my-notes.txt"]
    assert not made.exists() and (tmp_path / "work" / "my-notes.txt").read_text() == "mine"
    (tmp_path / "work" / "my-notes.txt").unlink()
    assert work.clean() == [] and not (tmp_path / "work").exists()
    (tmp_path / "work").mkdir()  # a work/ optpipe did not make is refused, not emptied
    (tmp_path / "work" / "data.bin").write_bytes(b"d")
    with pytest.raises(InvalidInputError, match="work/ was not made by optpipe"):
        WorkDir(tmp_path / "work").open()
    assert (tmp_path / "work" / "data.bin").exists() and not (tmp_path / "work" / WORK_MARKER).exists()


def test_artifact_swapped_in_whole_with_normal_modes_and_removed_only_if_ours(tmp_path):
    src = tmp_path / "cand"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"weights")
    (src / "model.safetensors").chmod(0o600)  # as transformers writes it
    art = tmp_path / "artifact"
    old_umask = os.umask(0o022)
    try:
        write_artifact(src, art, make_manifest())
        write_artifact(src, art, make_manifest())  # replaces our own artifact
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((art / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE(art.stat().st_mode) == 0o755 and stat.S_IMODE((art / "manifest.json").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact", "cand"]  # no temporary left behind
    assert remove_artifact(art) and not art.exists() and not remove_artifact(art)
    art.mkdir()
    (art / "their-model.bin").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="not written by optpipe"):
        remove_artifact(art)
    with pytest.raises(InvalidInputError, match="not written by optpipe"):
        write_artifact(src, art, make_manifest())
    assert (art / "their-model.bin").exists()


def test_normalize_modes_follows_umask(tmp_path):
    (tmp_path / "d").mkdir(mode=0o700)
    (tmp_path / "d" / "f").write_bytes(b"x")
    (tmp_path / "d" / "f").chmod(0o600)
    old = os.umask(0o027)
    try:
        normalize_modes(tmp_path / "d")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "d" / "f").stat().st_mode) == 0o640


def test_running_manifest_without_a_live_build_reads_as_interrupted(tmp_path):
    m = make_manifest().model_copy(update={"status": "running", "pid": 999_999})
    (tmp_path / "manifest.json").write_text(m.model_dump_json())
    got = read_manifest(tmp_path)
    assert got.status == "interrupted" and "pid 999999" in got.error and "resume" in got.error
    with OutputLock(tmp_path):  # a live build holds the lock: running is running
        assert read_manifest(tmp_path).status == "running"
