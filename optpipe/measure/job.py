"""The one description of a measurement job, built in one place for the build engine and the
`bench` / `eval` commands alike, and handed to the worker process as JSON."""

from __future__ import annotations

from pathlib import Path

from optpipe.files import JsonRecord
from optpipe.measure.calibration import HostCalibration
from optpipe.spec.settings import BenchmarkSettings, EvaluationSettings


class KLReferenceJob(JsonRecord):
    """Where the baseline's reference log-probs live; the baseline writes them, the rest compare."""

    path: str
    write: bool


class ProjectionJob(JsonRecord):
    """Project decode speed to a target device with this memory bandwidth (GB/s, vendor spec)."""

    target: str
    bandwidth_gbs: float
    calibration: HostCalibration | None = None  # this host's two-term step model (`optpipe calibrate`)


class ParentJob(JsonRecord):
    """Time the candidate against the candidate it was made from, interleaved in one process."""

    directory: str
    name: str
    confidence: float = 0.95


class EarlyStopJob(JsonRecord):
    """Evaluate in chunks and stop once a line is decided (evaluate/sequential.py): the budget's
    lines and the baseline's per-item and per-window results the candidate is paired with."""

    confidence: float
    hellaswag_max_drop_points: float | None
    perplexity_max_rise_pct: float | None
    min_items: int
    chunk_items: int
    min_windows: int
    chunk_windows: int
    base_items: dict[int, float] = {}  # HellaSwag item index -> the baseline's acc_norm
    base_window_nll: list[float] = []
    base_window_tokens: list[int] = []


class MeasureJob(JsonRecord):
    candidate_dir: str
    device: str = "cpu"
    benchmark: BenchmarkSettings | None = None  # None: no benchmark
    evaluation: EvaluationSettings
    kl_reference: KLReferenceJob | None = None
    memory_cap_gb: float | None = None  # cap the process's CUDA memory (a target's VRAM) for real
    projection: ProjectionJob | None = None
    parent: ParentJob | None = None  # None: no speed ratio (the baseline, or no benchmark)
    early_stop: EarlyStopJob | None = None  # None: every item and window is scored


def measure_job(
    candidate_dir: str | Path,
    device: str,
    evaluation: EvaluationSettings,
    benchmark: BenchmarkSettings | None,
    kl_reference: KLReferenceJob | None = None,
    memory_cap_gb: float | None = None,
    projection: ProjectionJob | None = None,
    parent: ParentJob | None = None,
) -> MeasureJob:
    return MeasureJob(
        candidate_dir=str(candidate_dir),
        device=device,
        benchmark=benchmark,
        evaluation=evaluation,
        kl_reference=kl_reference,
        memory_cap_gb=memory_cap_gb,
        projection=projection,
        parent=parent if benchmark is not None else None,
    )
