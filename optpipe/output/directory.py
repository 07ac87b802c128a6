"""The output directory is the user's disk: optpipe writes only into a directory it created (or an
empty one), marks it, locks it while a build writes it, and deletes only what it made itself.

- `.optpipe-output` (JSON) marks a directory optpipe created; a non-empty directory without it is refused.
- `.optpipe-lock` is held (flock) by the one build writing the directory and names its pid.
- `work/.optpipe-work` lists the entries of work/ that optpipe made; only those are ever deleted.

`check_output_dir` is the one pre-flight check (`optpipe build` and `optpipe validate` call it).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from optpipe.errors import MISSING, InvalidInputError, Problem
from optpipe.files import JsonRecord, free_bytes, normalize_modes, write_json_atomic

MARKER = ".optpipe-output"
LOCK_FILE = ".optpipe-lock"
WORK_MARKER = ".optpipe-work"
GB = 1e9


class OutputMarker(JsonRecord):
    """What `.optpipe-output` says: which tool made the directory, when, for which recipe."""

    tool: str = "optpipe"
    optpipe_version: str
    created: str
    recipe_file: str


def is_ours(directory: Path) -> bool:
    return (Path(directory) / MARKER).is_file()


def artifact_is_ours(artifact: Path) -> bool:
    """An artifact optpipe wrote carries optpipe's manifest.json (its marker)."""
    try:
        data = json.loads((Path(artifact) / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "optpipe_version" in data and "recipe_hash" in data


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str | Path, needed_bytes: int = 0, origin: str = "<recipe>") -> list[Problem]:
    """Every reason a build could not safely write `path`, found before any expensive step: it is a
    file, it holds someone else's files, it (or the parent it would be made in) is not writable, or
    its disk has less free space than `needed_bytes`."""
    path = Path(path)
    field = "output_dir"

    def problem(message: str) -> Problem:
        return Problem(origin, None, field, str(path), message)

    if path.exists() and not path.is_dir():
        return [problem("is a file, not a directory: choose another output_dir (or -o DIR), or move the file away")]
    problems: list[Problem] = []
    if path.is_dir():
        if any(path.iterdir()) and not is_ours(path):
            problems.append(
                problem(
                    f"exists, is not empty and was not made by optpipe (no {MARKER} marker): optpipe never writes "
                    "into a directory of other files. Choose a new or empty output_dir (or -o DIR)"
                )
            )
        else:
            work = path / "work"
            if work.exists() and not (work / WORK_MARKER).is_file():
                problems.append(
                    problem(f"{work} was not made by optpipe (no {WORK_MARKER} marker): move its files away or remove it")
                )
            art = path / "artifact"
            if art.exists() and not artifact_is_ours(art):
                problems.append(
                    problem(f"{art} was not written by optpipe (no optpipe manifest.json in it): move it away or remove it")
                )
    existing = _nearest_existing(path)
    if not existing.is_dir():
        problems.append(problem(f"{existing} is not a directory, so the output directory cannot be made under it"))
    elif not os.access(existing, os.W_OK | os.X_OK):
        problems.append(
            problem(f"{existing} is not writable by this user: choose a writable output_dir (or -o DIR), or fix its permissions")
        )
    elif needed_bytes:
        free = free_bytes(existing)
        if free < needed_bytes:
            problems.append(
                problem(
                    f"only {free / GB:.2f} GB free on the disk of {existing}; this build needs about "
                    f"{needed_bytes / GB:.2f} GB ({needed_bytes} bytes: the model saved as the baseline, its "
                    "candidates and the artifact). Free space, or choose an output_dir on another disk"
                )
            )
    return problems


def claim_output_dir(path: Path, recipe_file: str) -> None:
    """Create the output directory (if needed) and mark it as optpipe's; refuse one that is not ours."""
    problems = check_output_dir(path, origin=recipe_file)
    if problems:
        raise InvalidInputError(problems)
    path.mkdir(parents=True, exist_ok=True)
    if not is_ours(path):
        from optpipe import __version__

        marker = OutputMarker(
            optpipe_version=__version__, created=datetime.now(timezone.utc).isoformat(), recipe_file=recipe_file
        )
        write_json_atomic(path / MARKER, marker)
        normalize_modes(path / MARKER)


class OutputLock:
    """An exclusive flock on `<dir>/.optpipe-lock` for the whole build, naming the holder's pid. The
    kernel drops it when the process dies however it dies, so a killed build never leaves it stale."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes (O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise InvalidInputError(
                [
                    Problem(
                        str(self.directory),
                        None,
                        "output_dir",
                        MISSING,
                        f"another optpipe build (pid {holder}) is writing {self.directory}: wait for it to finish, "
                        "or build into another output_dir (-o DIR)",
                    )
                ]
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(directory: Path) -> bool:
    """Whether a live build holds the directory's lock (for readers of a `running` manifest)."""
    path = Path(directory) / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class WorkDir:
    """work/: candidates' files during a build. Every entry optpipe makes there is listed in
    work/.optpipe-work, and `clean()` removes those and nothing else (a user's file stays)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.marker = self.path / WORK_MARKER

    def _listed(self) -> list[str]:
        try:
            return list(json.loads(self.marker.read_text()).get("created", []))
        except (OSError, ValueError, AttributeError):
            return []

    def open(self) -> None:
        """Make work/ (or take over ours), and clear what an earlier, killed build left in it."""
        if self.path.exists() and not self.marker.is_file():
            raise InvalidInputError(
                [
                    Problem(
                        str(self.path),
                        None,
                        "output_dir",
                        MISSING,
                        "work/ was not made by optpipe: move its files away or remove it",
                    )
                ]
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.clean(remove_dir=False)

    def track(self, name: str) -> Path:
        """Record that optpipe makes `work/<name>` (before making it) and return its path."""
        listed = self._listed()
        if name not in listed:
            write_json_atomic(self.marker, {"created": listed + [name]})
        return self.path / name

    def clean(self, remove_dir: bool = True) -> list[str]:
        """Remove what optpipe made in work/; returns the names of other files left there."""
        for name in self._listed():
            p = self.path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        write_json_atomic(self.marker, {"created": []})
        left = sorted(p.name for p in self.path.iterdir() if p.name != WORK_MARKER)
        if remove_dir and not left:
            self.marker.unlink(missing_ok=True)
            self.path.rmdir()
        return left


def read_manifest(directory: Path):
    """The manifest of a build directory, as it stands: a `running` manifest whose build no longer
    holds the lock (the process was SIGKILLed, or the machine went down) reads as `interrupted`."""
    from optpipe.output.manifest import INTERRUPTED, RUNNING, Manifest

    m = Manifest.model_validate_json((Path(directory) / "manifest.json").read_text())
    if m.status == RUNNING and not is_locked(directory):
        m = m.model_copy(update={"status": INTERRUPTED, "error": m.error or stale_message(m.pid)})
    return m


def stale_message(pid: int | None) -> str:
    return (
        f"the build process (pid {pid if pid is not None else '?'}) ended without finishing (killed?); "
        "run the same command again to resume from the cache"
    )
