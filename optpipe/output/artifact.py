"""The deployable artifact: the selected candidate's files plus its manifest and report, swapped in
atomically so a reader never sees half an artifact."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from optpipe.files import write_json_atomic
from optpipe.output.manifest import Manifest
from optpipe.output.report import markdown
from optpipe.output.report_html import html_report


def write_artifact(candidate_dir: Path, artifact_dir: Path, manifest: Manifest) -> Path:
    tmp = artifact_dir.with_name(artifact_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(candidate_dir, tmp)
    write_json_atomic(tmp / "manifest.json", manifest)
    (tmp / "report.md").write_text(markdown(manifest))
    (tmp / "report.html").write_text(html_report(manifest), encoding="utf-8")
    old = artifact_dir.with_name(artifact_dir.name + ".old")
    if artifact_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(artifact_dir, old)
    os.replace(tmp, artifact_dir)
    shutil.rmtree(old, ignore_errors=True)
    return artifact_dir
