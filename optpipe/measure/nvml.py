"""NVML readings: device memory a user actually sees, and energy. 'n/a' where NVML or the counter
is missing (nvidia-ml-py not installed, or a GPU without the total-energy counter)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def ancestor_pids() -> set[int]:
    """This process's parent chain, from /proc (empty where there is none). The build process that
    waits on its measurement worker keeps the CUDA context it applied passes with, so NVML lists it,
    but it computes nothing while the worker measures: it is not load."""
    out: set[int] = set()
    pid = os.getppid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


class Nvml:
    def __init__(self, index: int = 0):
        self.ok = False
        self.reason = ""
        try:
            import pynvml  # from nvidia-ml-py

            pynvml.nvmlInit()
            self._nv = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.ok = True
        except Exception as exc:  # ImportError or NVML errors
            self.reason = f"NVML unavailable: {type(exc).__name__}: {exc}"

    def device_used_bytes(self) -> int | None:
        if not self.ok:
            return None
        return int(self._nv.nvmlDeviceGetMemoryInfo(self.handle).used)

    def process_used_bytes(self) -> int | None:
        """Memory NVML attributes to this process (includes the CUDA context), if visible."""
        if not self.ok:
            return None
        try:
            for p in self._nv.nvmlDeviceGetComputeRunningProcesses(self.handle):
                if p.pid == os.getpid() and p.usedGpuMemory is not None:
                    return int(p.usedGpuMemory)
        except Exception:
            pass
        return None

    def other_compute_processes(self) -> int | None:
        """Other processes computing on this GPU now (they share its SMs and memory bandwidth), not
        counting this process and the ones it was started by (`ancestor_pids`)."""
        if not self.ok:
            return None
        mine = {os.getpid()} | ancestor_pids()
        try:
            return sum(1 for p in self._nv.nvmlDeviceGetComputeRunningProcesses(self.handle) if p.pid not in mine)
        except Exception:
            return None

    def energy_mj(self) -> int | None:
        if not self.ok:
            return None
        try:
            return int(self._nv.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception:
            return None

    def info(self) -> dict[str, Any]:
        return {"available": self.ok, "reason": self.reason}
