"""Detect the build host: CUDA through torch, the rest from the platform and package metadata."""

from __future__ import annotations

import os
import platform

from optpipe.spec.host import TRACKED_PACKAGES, HostEnv, cpu_model, package_version, ram_gb


def detect_host() -> HostEnv:
    import torch

    has_cuda = torch.cuda.is_available()
    gpu_name = gpu_cap = gpu_mem = None
    if has_cuda:
        props = torch.cuda.get_device_properties(0)
        gpu_name = props.name
        gpu_cap = f"{props.major}.{props.minor}"
        gpu_mem = round(props.total_memory / 1e9, 1)
    return HostEnv(
        python=platform.python_version(),
        platform=platform.platform(),
        cpu=cpu_model(),
        cpu_count=os.cpu_count() or 1,
        ram_gb=ram_gb(),
        has_cuda=has_cuda,
        gpu_name=gpu_name,
        gpu_capability=gpu_cap,
        gpu_memory_gb=gpu_mem,
        packages={p: package_version(p) for p in TRACKED_PACKAGES},
    )
