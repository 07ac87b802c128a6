"""Run one measurement job in a fresh Python process and bring its typed result back.

A fresh process per candidate keeps one candidate's memory (allocator caches, compile caches, peak
RSS) out of the next one's figures. Parent and child talk through two JSON files; the child's
progress lines come over stdout with PROGRESS_PREFIX, everything else goes to the log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from optpipe.errors import MeasurementFailed
from optpipe.files import write_json_atomic
from optpipe.measure.job import MeasureJob
from optpipe.measure.results import Measurements

PROGRESS_PREFIX = "@@optpipe "
PARENT_PID_ENV = "OPTPIPE_PARENT_PID"  # the worker dies when this process is gone (worker.die_with_parent)


def run_isolated(
    job: MeasureJob, workdir: Path, log_path: Path, on_progress: Callable[[str], None] | None = None
) -> Measurements:
    """Run `optpipe.measure.worker` on `job` in a child process; raise MeasurementFailed with the
    log's tail when it fails."""
    workdir.mkdir(parents=True, exist_ok=True)
    job_path, result_path = workdir / "job.json", workdir / "result.json"
    result_path.unlink(missing_ok=True)
    write_json_atomic(job_path, job)
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", **{PARENT_PID_ENV: str(os.getpid())})
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "optpipe.measure.worker", str(job_path), str(result_path)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(PROGRESS_PREFIX):
                    if on_progress:
                        on_progress(line[len(PROGRESS_PREFIX) :].rstrip())
                else:
                    log.write(line)
            code = proc.wait()
        finally:  # interrupted or crashed here: the child must not outlive this build
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if code != 0 or not result_path.exists():
        tail = "".join(Path(log_path).read_text().splitlines(keepends=True)[-25:])
        raise MeasurementFailed(f"measurement process exited with {code}; log: {log_path}\n{tail}")
    return Measurements.model_validate_json(result_path.read_text())
