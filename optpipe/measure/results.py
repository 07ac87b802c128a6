"""What one measurement of one candidate produced: typed records shared by the worker (writes them),
the cache (stores them), the judge (reads them) and the report (prints them)."""

from __future__ import annotations

import math
from typing import Any

from optpipe.evaluate.hellaswag import HellaSwagResult
from optpipe.evaluate.kl import KLResult
from optpipe.evaluate.perplexity import PerplexityResult
from optpipe.files import JsonRecord
from optpipe.measure.load import HostLoad
from optpipe.measure.stats import Spread


class ProjectedSpeed(JsonRecord):
    """Decode speed projected to a target device this host is not (labelled projected everywhere)."""

    target: str
    bandwidth_gbs: float
    roofline_tok_s: float
    decode_tok_s: float
    method: str
    low: float | None = None  # interval of the two-term projection (fit, trial spread, model error)
    high: float | None = None


class RooflineReport(JsonRecord):
    """Measured decode speed against this GPU's memory-bandwidth roofline."""

    bandwidth_gbs: float
    bandwidth_source: str
    weight_bytes: int
    kv_bytes_per_token_avg: float
    tok_s: float
    roofline_tok_s_at_batch: float
    fraction: float
    error: str | None = None
    projected: ProjectedSpeed | None = None


class BenchmarkResult(JsonRecord):
    """Decode benchmark of one candidate: speed spread over trials, latencies, memory."""

    config: dict[str, Any]
    device: str
    decoder: str
    warmup_s: float
    energy_j_per_token: float | str  # "n/a" where NVML has no energy counter
    trials: int
    decode_tok_s: Spread
    decode_tok_s_trials: list[float]
    prefill_tok_s: Spread
    ttft_ms: Spread
    token_latency_ms: Spread
    stable: bool
    peak_rss_bytes: int
    cuda_peak_allocated_bytes: int | None = None
    cuda_peak_reserved_bytes: int | None = None
    nvml_device_used_bytes: int | None = None
    nvml_process_used_bytes: int | None = None
    roofline: RooflineReport | None = None
    host_load: HostLoad | None = None  # None: measured before optpipe recorded it

    def figure_warnings(self) -> list[str]:
        """Why this figure may not be the model's: taken on a busy machine, or never stable."""
        out = []
        if self.host_load is not None and self.host_load.under_load:
            out.append(f"decode speed measured under load ({self.host_load.reason})")
        target = self.config.get("target_cv")
        if not self.stable and target is not None:
            out.append(f"decode tok/s CV {self.decode_tok_s.cv:.1%} missed the {target:.0%} target after {self.trials} trials")
        return out


class SpeedRatio(JsonRecord):
    """Decode speed of a candidate relative to its parent (the candidate it was made from)."""

    parent: str
    interleaved: bool  # False: two separate timings, minutes apart ("not interleaved")
    ratio: float  # candidate / parent decode tok/s (geometric mean over rounds when interleaved)
    low: float
    high: float
    confidence: float
    rounds: int = 0
    round_ratios: list[float] = []
    candidate_tok_s: list[float] = []
    parent_tok_s: list[float] = []
    order: list[str] = []  # which model each timed trial ran, in time order
    host_load: HostLoad | None = None
    why_not_interleaved: str = ""


class Measurements(JsonRecord):
    """Everything measured about one candidate in one fresh process. A candidate that ran out of
    memory under the cap carries `out_of_memory` (and whatever was measured before it)."""

    size_bytes: int
    runtime: dict[str, Any]
    load_s: float | None = None
    rss_after_load_bytes: int | None = None
    parameters: int | None = None
    torch_threads: int | None = None
    out_of_memory: str | None = None
    evaluated_uncapped: bool | None = None  # True: memory/speed under the cap, accuracy scored without it
    nvml: dict[str, Any] | None = None
    memory_cap_gb: float | None = None
    benchmark: BenchmarkResult | None = None
    hellaswag: HellaSwagResult | None = None
    perplexity: PerplexityResult | None = None
    kl: KLResult | None = None
    peak_rss_total_bytes: int | None = None
    speed_vs_parent: SpeedRatio | None = None
    warnings: list[str] = []  # what a reader of these figures must know (console, manifest, report)

    def collect_warnings(self) -> list[str]:
        """The warnings these figures call for (the worker stores them in `warnings`)."""
        out = self.benchmark.figure_warnings() if self.benchmark is not None else []
        sv = self.speed_vs_parent
        if sv is not None and not sv.interleaved:
            out.append(f"speed ratio vs {sv.parent} not interleaved ({sv.why_not_interleaved})")
        if sv is not None and sv.host_load is not None and sv.host_load.under_load:
            out.append(f"speed ratio vs {sv.parent} timed under load ({sv.host_load.reason})")
        return out

    def peak_memory_bytes(self) -> float:
        """The memory figure a 'fits in N GB' goal is judged on (see `memory_kind`)."""
        bench = self.benchmark
        if bench is None:
            return float(self.rss_after_load_bytes) if self.rss_after_load_bytes is not None else math.nan
        if bench.nvml_process_used_bytes:
            return float(bench.nvml_process_used_bytes)
        if bench.cuda_peak_reserved_bytes is not None:
            return float(bench.cuda_peak_reserved_bytes)
        return float(bench.peak_rss_bytes)

    def memory_kind(self) -> str:
        bench = self.benchmark
        if bench is not None and bench.nvml_process_used_bytes:
            return "GPU memory used by the process (NVML)"
        if bench is not None and bench.cuda_peak_reserved_bytes is not None:
            return "GPU peak reserved (torch)"
        return "peak RSS during benchmark"
