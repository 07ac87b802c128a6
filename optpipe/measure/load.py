"""How busy the machine was while a benchmark was timing: CPU time used by *other* processes.

A decode benchmark on a shared machine silently measures the machine, not the model (one busy
background process took the SmolLM2 fp32 baseline from ~17 to 3 tok/s). Reading system-wide busy CPU
time and this process's own CPU time before and after the timed trials gives the other processes'
average use in cores without a sampling thread (which would itself disturb the timing).

Thresholds, and why: on a CPU target the decode loop wants every core it has threads for and all of
the memory bandwidth, so another process using more than half a core on average is enough to move
the figure (BUSY_OTHER_CORES). On a GPU target the host only feeds kernels: it is busy when other
processes leave less than one core free, or when another process computes on the same GPU.
"""

from __future__ import annotations

import os
import time

import psutil

from optpipe.files import JsonRecord

BUSY_OTHER_CORES = 0.5


class HostLoad(JsonRecord):
    """Load on the machine during the timed part of one benchmark (warm-up excluded)."""

    seconds: float
    cpu_count: int
    other_cpu_cores: float  # average cores used by every other process over the timing
    loadavg_1m: float | None = None  # at the end of the timing (includes this process's threads)
    gpu_other_processes: int | None = None  # other compute processes on the benchmark's GPU (NVML)
    under_load: bool = False
    reason: str = ""


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return sum(v for k, v in t._asdict().items() if k not in ("idle", "iowait", "guest", "guest_nice"))


def _own_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


class LoadMeter:
    """`start()` before the timed trials, `stop()` after: returns the HostLoad in between."""

    def __init__(self, device: str = "cpu", nvml=None):
        self.device = device
        self.nvml = nvml
        self._proc = psutil.Process()

    def start(self) -> LoadMeter:
        self._t0, self._busy0, self._own0 = time.perf_counter(), _busy_seconds(), _own_seconds(self._proc)
        return self

    def stop(self) -> HostLoad:
        wall = max(time.perf_counter() - self._t0, 1e-9)
        other = max(0.0, (_busy_seconds() - self._busy0) - (_own_seconds(self._proc) - self._own0)) / wall
        cpus = psutil.cpu_count() or 1
        gpu_others = self.nvml.other_compute_processes() if self.nvml is not None else None
        load = HostLoad(
            seconds=wall,
            cpu_count=cpus,
            other_cpu_cores=other,
            loadavg_1m=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            gpu_other_processes=gpu_others,
        )
        reason = busy_reason(load, self.device)
        return load.model_copy(update={"reason": reason, "under_load": bool(reason)})


def busy_reason(load: HostLoad, device: str) -> str:
    """Why the figures taken under `load` are not the model's alone ('' when the machine was quiet)."""
    reasons = []
    if device.startswith("cuda"):
        if load.other_cpu_cores > load.cpu_count - 1:
            reasons.append(f"other processes used {load.other_cpu_cores:.1f} of {load.cpu_count} cores")
        if load.gpu_other_processes:
            reasons.append(f"{load.gpu_other_processes} other process(es) computing on the GPU")
    elif load.other_cpu_cores > BUSY_OTHER_CORES:
        reasons.append(f"other processes used {load.other_cpu_cores:.1f} cores on average during timing")
    return "; ".join(reasons)
