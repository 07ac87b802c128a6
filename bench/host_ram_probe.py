"""Host-RAM probe: peak resident memory of this process while a model directory is loaded.

Answers "is the host RAM peak while loading an 8B bf16 model <= 1.25x its weight bytes?" Run it in a
fresh process per measurement (it is one): it imports torch / transformers and, for a CUDA device,
creates the CUDA context FIRST, reads VmHWM (the kernel's peak RSS of this process, from
/proc/self/status), loads, reads VmHWM again, and prints ONE JSON line:

    weight_bytes                 sum of the *.safetensors file sizes in the directory
    load_s                       wall seconds of the load call (+ CUDA synchronize)
    vm_hwm_before / _after       peak RSS (bytes) before and after the load
    vm_hwm_delta                 after - before: what the load itself added to the peak
    peak_over_weights            vm_hwm_after / weight_bytes (the 1.25x criterion, imports included)
    delta_over_weights           vm_hwm_delta / weight_bytes (the load alone)
    rss_anon_peak / rss_file_peak  sampled every --sample-ms: anonymous (heap copies) vs file-backed
                                 (mmap'ed safetensors pages) resident memory; VmHWM counts both
    cuda_allocated / cuda_max_allocated / cuda_reserved  torch's CUDA allocator after the load

Loaders (`--loader`):
    transformers   AutoModelForCausalLM.from_pretrained(dir, dtype="auto", device_map=device)
    MODULE:FUNC    any callable FUNC(model_dir, device) -> model, e.g. a package's own loader

Usage:
    python bench/host_ram_probe.py /tmp/llama8b --device cuda
    python bench/host_ram_probe.py /tmp/llama2l --device cpu --loader transformers
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import threading
import time
from pathlib import Path

_STATUS = f"/proc/{os.getpid()}/status"


def proc_status() -> dict[str, int]:
    """VmHWM / VmRSS / RssAnon / RssFile / RssShmem of this process, in bytes."""
    out: dict[str, int] = {}
    with open(_STATUS) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) * 1024  # the kernel writes kB (KiB)
    return out


class Sampler(threading.Thread):
    """Peak RssAnon / RssFile seen while running (VmHWM has only their sum's peak)."""

    def __init__(self, interval_s: float):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self._sample()
            self._stop_event.wait(self.interval_s)

    def _sample(self) -> None:
        s = proc_status()
        for k in self.peaks:
            self.peaks[k] = max(self.peaks[k], s.get(k, 0))

    def stop(self) -> dict[str, int]:
        self._stop_event.set()
        self.join()
        self._sample()
        return self.peaks


def load_transformers(model_dir: str, device: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto", device_map=device)


def resolve_loader(spec: str):
    if spec == "transformers":
        return load_transformers
    if ":" not in spec:
        raise SystemExit(f"--loader: 'transformers' or MODULE:FUNC, not {spec!r}")
    mod, _, func = spec.partition(":")
    return getattr(importlib.import_module(mod), func)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:0, cpu, ... (passed as device_map)")
    ap.add_argument("--loader", default="transformers", help="transformers | MODULE:FUNC(model_dir, device)")
    ap.add_argument("--sample-ms", type=float, default=5.0, help="RssAnon/RssFile sampling period")
    args = ap.parse_args(argv)

    files = sorted(args.model_dir.glob("*.safetensors"))
    if not files:
        raise SystemExit(f"no *.safetensors in {args.model_dir}")
    weight_bytes = sum(p.stat().st_size for p in files)

    import torch
    import transformers

    loader = resolve_loader(args.loader)
    cuda = args.device.startswith("cuda")
    if cuda:  # the CUDA context's host memory is not the loader's: create it before "before"
        torch.zeros(1, device=args.device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = proc_status()

    sampler = Sampler(args.sample_ms / 1000)
    sampler.start()
    t0 = time.perf_counter()
    model = loader(str(args.model_dir), args.device)
    if cuda:
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    peaks = sampler.stop()
    after = proc_status()

    params = list(model.parameters()) + list(model.buffers())
    result = {
        "loader": args.loader,
        "model_dir": str(args.model_dir),
        "device": args.device,
        "device_name": torch.cuda.get_device_name(args.device) if cuda else "cpu",
        "n_safetensors_files": len(files),
        "weight_bytes": weight_bytes,
        "model_tensor_bytes": sum(p.numel() * p.element_size() for p in params),
        "model_dtype": str(getattr(model, "dtype", "")),
        "load_s": round(load_s, 3),
        "vm_hwm_before": before["VmHWM"],
        "vm_hwm_after": after["VmHWM"],
        "vm_hwm_delta": after["VmHWM"] - before["VmHWM"],
        "vm_rss_before": before["VmRSS"],
        "vm_rss_after": after["VmRSS"],
        "rss_anon_after": after.get("RssAnon"),
        "rss_file_after": after.get("RssFile"),
        "rss_anon_peak": peaks["RssAnon"],
        "rss_file_peak": peaks["RssFile"],
        "peak_over_weights": round(after["VmHWM"] / weight_bytes, 4),
        "delta_over_weights": round((after["VmHWM"] - before["VmHWM"]) / weight_bytes, 4),
        "cuda_allocated": torch.cuda.memory_allocated(args.device) if cuda else None,
        "cuda_max_allocated": torch.cuda.max_memory_allocated(args.device) if cuda else None,
        "cuda_reserved": torch.cuda.memory_reserved(args.device) if cuda else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
