"""The deployable artifact: the selected candidate's files plus its manifest and report. It is written
under a temporary name beside artifact/ and renamed into place only when complete, so a reader (or a
deploy script) never sees half an artifact; an old artifact/ is replaced or removed only when
optpipe's own manifest.json shows optpipe wrote it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from optpipe.errors import MISSING, InvalidInputError, Problem
from optpipe.files import normalize_modes, write_json_atomic, write_text_atomic
from optpipe.output.directory import artifact_is_ours
from optpipe.output.manifest import Manifest
from optpipe.output.report import markdown
from optpipe.output.report_html import html_report


def _not_ours(artifact_dir: Path) -> InvalidInputError:
    return InvalidInputError(
        [
            Problem(
                str(artifact_dir),
                None,
                "output_dir",
                MISSING,
                "artifact/ exists but was not written by optpipe (no optpipe manifest.json in it): move it away or remove it",
            )
        ]
    )


def write_artifact(candidate_dir: Path, artifact_dir: Path, manifest: Manifest) -> Path:
    """Copy the candidate with its manifest and report under a temporary name, then swap it in."""
    if artifact_dir.exists() and not artifact_is_ours(artifact_dir):
        raise _not_ours(artifact_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{artifact_dir.name}.partial-", dir=artifact_dir.parent))
    try:
        shutil.copytree(candidate_dir, tmp, dirs_exist_ok=True)
        write_json_atomic(tmp / "manifest.json", manifest)
        write_text_atomic(tmp / "report.md", markdown(manifest))
        write_text_atomic(tmp / "report.html", html_report(manifest))
        normalize_modes(tmp)  # mkdtemp makes 0700, transformers' weights are 0600: a deploy user must read them
        old = None
        if artifact_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{artifact_dir.name}.old-", dir=artifact_dir.parent))
            os.replace(artifact_dir, old / "artifact")
        os.replace(tmp, artifact_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return artifact_dir


def remove_artifact(artifact_dir: Path) -> bool:
    """Remove a previous build's artifact (ours only); returns whether there was one."""
    if not artifact_dir.exists():
        return False
    if not artifact_is_ours(artifact_dir):
        raise _not_ours(artifact_dir)
    old = Path(tempfile.mkdtemp(prefix=f".{artifact_dir.name}.old-", dir=artifact_dir.parent))
    os.replace(artifact_dir, old / "artifact")  # gone from its name at once, then deleted
    shutil.rmtree(old, ignore_errors=True)
    return True


def remove_leftovers(output_dir: Path, name: str = "artifact") -> None:
    """Delete half-written or half-removed artifacts a killed build left (names only optpipe uses)."""
    for p in list(output_dir.glob(f".{name}.partial-*")) + list(output_dir.glob(f".{name}.old-*")):
        shutil.rmtree(p, ignore_errors=True)
