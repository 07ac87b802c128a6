"""A throwaway PostgreSQL server for the history tests: $OPTPIPE_TEST_POSTGRES_URL if set, else one
started from the local server binaries (Debian's `postgresql` package) in a temporary directory."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(dirs[-1]).parent if dirs else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def why_not() -> str | None:
    """Why no PostgreSQL test can run here (None: it can)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]'; the dev extra has it)"
    if os.environ.get("OPTPIPE_TEST_POSTGRES_URL"):
        return None
    if _binaries() is None:
        return "no PostgreSQL server binaries (Debian: apt-get install postgresql) and no OPTPIPE_TEST_POSTGRES_URL"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: initdb refuses root"
    return None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a running, empty PostgreSQL database; stop the server afterwards."""
    if os.environ.get("OPTPIPE_TEST_POSTGRES_URL"):
        yield os.environ["OPTPIPE_TEST_POSTGRES_URL"]
        return
    bin_dir = _binaries()
    assert bin_dir is not None
    # pytest's tmp_path sits under a 0700 directory of the test user: the postgres user could not reach it
    root = Path(tempfile.mkdtemp(prefix="optpipe-pg-"))
    try:
        with _server(bin_dir, root) as url:
            yield url
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def _server(bin_dir: Path, root: Path) -> Iterator[str]:
    data, sock = root / "data", root / "sock"
    sock.mkdir(parents=True)
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the package's postgres user
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr or done.stdout}")

    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "optpipe", "--no-sync")
    opts = f"-k {sock} -p {port} -c listen_addresses='' -c fsync=off"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "server.log"), "-w", "start")
    try:
        yield f"postgresql+psycopg://optpipe@/postgres?host={sock}&port={port}"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
