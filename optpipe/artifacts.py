"""The deployable output: the selected candidate's files (stock transformers loads them), plus
manifest.json and report.md. Written to a temporary directory and renamed into place, so an
artifact directory is either complete or absent."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from optpipe.measure.worker import write_json_atomic
from optpipe.report import markdown


def write_artifact(candidate_dir: Path, artifact_dir: Path, manifest: dict[str, Any]) -> Path:
    tmp = artifact_dir.with_name(artifact_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(candidate_dir, tmp)
    write_json_atomic(tmp / "manifest.json", manifest)
    (tmp / "report.md").write_text(markdown(manifest))
    old = artifact_dir.with_name(artifact_dir.name + ".old")
    if artifact_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(artifact_dir, old)
    os.replace(tmp, artifact_dir)
    shutil.rmtree(old, ignore_errors=True)
    return artifact_dir
