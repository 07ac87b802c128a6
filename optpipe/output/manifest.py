"""The manifest: a build's whole record (recipe, host, target, every candidate with its measurements
and budget lines, the outcome), versioned, written after every candidate and beside the artifact."""

from __future__ import annotations

from typing import Any, Literal

from optpipe.files import JsonRecord
from optpipe.judge.budget import Check
from optpipe.measure.results import Measurements

MANIFEST_SCHEMA_VERSION = 2  # 2: typed records (optpipe 0.1 restructure); 1 had the same fields, untyped

RUNNING, INTERRUPTED, FAILED = "running", "interrupted", "failed"  # a build's status besides the verdicts

CandidateStatus = Literal["pending", "measured", "cached", "skipped", "failed", "not run"]


class CandidateRecord(JsonRecord):
    """One candidate of a build: how it was made (pass chain), what was measured, how it was judged."""

    index: int
    name: str
    chain: list[dict[str, Any]]
    status: CandidateStatus = "pending"
    reason: str = ""
    cache_key: str = ""
    measurements: Measurements | None = None
    checks: list[Check] = []
    verdict: str = ""
    seconds: float = 0.0
    directory: str = ""  # working directory of its files during the build

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)


class ModelInfo(JsonRecord):
    description: str
    kind: str
    fingerprint: str


class Manifest(JsonRecord):
    schema_version: int = MANIFEST_SCHEMA_VERSION
    recipe_schema_version: int
    optpipe_version: str
    recipe_file: str
    recipe_hash: str
    recipe: dict[str, Any]
    model: ModelInfo
    target: dict[str, Any]
    measured_on: str
    host: dict[str, Any]
    packages: dict[str, str | None]
    started: str
    updated: str
    status: str  # running, MET, NOT MET, INCONCLUSIVE, interrupted, failed
    pid: int | None = None  # the build process (a `running` manifest whose build is gone was interrupted)
    error: str = ""  # why a `failed` or `interrupted` build ended
    notes: list[str] = []  # what the build did to the output directory (e.g. removed an earlier artifact)
    selected: str | None = None
    artifact_dir: str | None = None
    pass_chain: list[dict[str, Any]]
    warnings: list[str] = []
    build_process_peak_rss_bytes: int | None = None  # host RAM high-water mark of the build process itself
    reference: str = ""  # where the accuracy reference (the baseline) was measured, when not like the rest
    forecast: list[dict[str, Any]] = []  # optpipe plan's prediction per candidate (forecast.CandidateForecast)
    candidates: list[CandidateRecord]
