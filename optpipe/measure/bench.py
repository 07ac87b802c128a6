"""Benchmark one candidate: warm-up, repeated trials until decode speed is stable, prefill and
decode timed separately, per-token latencies, peak memory.

The decode loop is our own greedy loop over the model's forward with a KV cache (not
`generate`), so the figure is the model's step time and each token is timed on its own. The clock
synchronizes CUDA before reading the time on GPU; on CPU it is `perf_counter`.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from optpipe.measure.load import LoadMeter
from optpipe.measure.results import BenchmarkResult, SpeedRatio
from optpipe.measure.stats import Spread, ratio_interval
from optpipe.spec.settings import BenchmarkSettings


class Clock:
    """Wall clock that waits for queued GPU work first, so a reading means the work is done."""

    def __init__(self, device: Any):
        import torch

        self._sync = torch.cuda.synchronize if getattr(device, "type", str(device)) == "cuda" else None

    def now(self) -> float:
        if self._sync:
            self._sync()
        return time.perf_counter()


def decode_trial(decoder, prompt_ids, new_tokens: int, clock: Clock) -> tuple[float, list[float]]:
    """One greedy generation of `new_tokens`: returns (time to first token, per-step decode times)."""
    import torch

    steps: list[float] = []
    with torch.inference_mode():
        decoder.reset(prompt_ids.shape[0], prompt_ids.shape[1] + new_tokens)
        t0 = clock.now()
        token = decoder.prefill(prompt_ids)
        ttft = clock.now() - t0
        for _ in range(new_tokens - 1):
            t = clock.now()
            token = decoder.step(token)
            steps.append(clock.now() - t)
    return ttft, steps


def peak_rss_bytes() -> int:
    """Peak resident set size of this process's address space so far.

    Linux: VmHWM from /proc/self/status, which starts afresh at exec. (ru_maxrss does not: a
    worker forked from a parent holding a model would inherit the parent's peak.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru if sys.platform == "darwin" else ru * 1024


def benchmark(
    decoder, prompt_ids, cfg: BenchmarkSettings, progress: Callable[[str], None] | None = None, nvml: Any = None
) -> BenchmarkResult:
    """Run the benchmark (warm-up excluded) and return its record.

    `decoder` is a `optpipe.runtime.decode` decoder (eager or static-compiled); `nvml` an optional
    `optpipe.measure.nvml.Nvml` for device memory and energy on GPU."""
    import torch

    device = prompt_ids.device
    clock = Clock(device)
    if cfg.batch_size > 1:
        prompt_ids = prompt_ids.expand(cfg.batch_size, -1).contiguous()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_warm = time.perf_counter()
    for _ in range(cfg.warmup):
        decode_trial(decoder, prompt_ids, cfg.new_tokens, clock)
    warmup_s = time.perf_counter() - t_warm
    energy0 = nvml.energy_mj() if nvml else None
    meter = LoadMeter(str(device), nvml).start()
    ttfts, tok_s, prefill_tok_s, all_steps = [], [], [], []
    for trial in range(cfg.max_trials):
        ttft, steps = decode_trial(decoder, prompt_ids, cfg.new_tokens, clock)
        ttfts.append(ttft)
        prefill_tok_s.append(prompt_ids.numel() / ttft)
        tok_s.append(len(steps) * cfg.batch_size / sum(steps))
        all_steps.extend(steps)
        if progress:
            progress(f"trial {trial + 1}: {tok_s[-1]:.1f} tok/s")
        if trial + 1 >= cfg.min_trials and Spread.from_values(tok_s).cv < cfg.target_cv:
            break
    host_load = meter.stop()
    speed = Spread.from_values(tok_s)
    latency_ms = Spread.from_values([s * 1000 for s in all_steps])
    energy1 = nvml.energy_mj() if nvml else None
    generated = len(tok_s) * cfg.new_tokens * cfg.batch_size
    cuda: dict[str, Any] = {}
    if device.type == "cuda":
        cuda = {
            "cuda_peak_allocated_bytes": torch.cuda.max_memory_allocated(),
            "cuda_peak_reserved_bytes": torch.cuda.max_memory_reserved(),
        }
        if nvml is not None:
            cuda |= {"nvml_device_used_bytes": nvml.device_used_bytes(), "nvml_process_used_bytes": nvml.process_used_bytes()}
    return BenchmarkResult(
        config=cfg.model_dump(),
        device=str(device),
        decoder=getattr(decoder, "name", type(decoder).__name__),
        warmup_s=warmup_s,
        energy_j_per_token=((energy1 - energy0) / 1000 / generated) if energy0 is not None and energy1 is not None else "n/a",
        trials=len(tok_s),
        decode_tok_s=speed,
        decode_tok_s_trials=tok_s,
        prefill_tok_s=Spread.from_values(prefill_tok_s),
        ttft_ms=Spread.from_values([t * 1000 for t in ttfts]),
        token_latency_ms=latency_ms,
        stable=speed.cv < cfg.target_cv,
        peak_rss_bytes=peak_rss_bytes(),
        host_load=host_load,
        **cuda,
    )


def _tok_s(decoder, prompt_ids, cfg: BenchmarkSettings, clock: Clock) -> float:
    _, steps = decode_trial(decoder, prompt_ids, cfg.new_tokens, clock)
    return len(steps) * cfg.batch_size / sum(steps)


def interleaved_ratio(
    candidate,
    parent,
    prompt_ids,
    cfg: BenchmarkSettings,
    parent_name: str,
    confidence: float = 0.95,
    progress: Callable[[str], None] | None = None,
    nvml: Any = None,
) -> SpeedRatio:
    """Decode speed of `candidate` over `parent`, both timed in this process in alternating rounds
    (candidate, parent | parent, candidate | ...: ABBA, so a steady drift cancels too): whatever else
    the machine does hits both alike, so the per-round ratio cancels it where two timings minutes
    apart cannot. Rounds repeat until the
    ratio's CV is under the target (min_trials..max_trials rounds); the interval is a t interval on
    the mean log ratio over rounds."""
    import math

    clock = Clock(prompt_ids.device)
    if cfg.batch_size > 1:
        prompt_ids = prompt_ids.expand(cfg.batch_size, -1).contiguous()
    for _ in range(max(cfg.warmup, 1)):  # both warm before the first timed round
        decode_trial(candidate, prompt_ids, cfg.new_tokens, clock)
        decode_trial(parent, prompt_ids, cfg.new_tokens, clock)
    meter = LoadMeter(str(prompt_ids.device), nvml).start()
    order: list[str] = []
    cand_tok_s: list[float] = []
    parent_tok_s: list[float] = []
    for r in range(cfg.max_trials):
        first_parent = r % 2 == 1  # ABBA: who goes first alternates, so a steady drift cancels over two rounds
        if first_parent:
            parent_tok_s.append(_tok_s(parent, prompt_ids, cfg, clock))
        cand_tok_s.append(_tok_s(candidate, prompt_ids, cfg, clock))
        if not first_parent:
            parent_tok_s.append(_tok_s(parent, prompt_ids, cfg, clock))
        order += ["parent", "candidate"] if first_parent else ["candidate", "parent"]
        ratios = [c / p for c, p in zip(cand_tok_s, parent_tok_s)]
        if progress:
            progress(f"interleaved round {r + 1}: {cand_tok_s[-1]:.1f} vs {parent_tok_s[-1]:.1f} tok/s (x{ratios[-1]:.3f})")
        if r + 1 >= cfg.min_trials and Spread.from_values(ratios).cv < cfg.target_cv:
            break
    ratio, low, high = ratio_interval([math.log(x) for x in ratios], confidence)
    return SpeedRatio(
        parent=parent_name,
        interleaved=True,
        ratio=ratio,
        low=low,
        high=high,
        confidence=confidence,
        rounds=len(ratios),
        round_ratios=ratios,
        candidate_tok_s=cand_tok_s,
        parent_tok_s=parent_tok_s,
        order=order,
        host_load=meter.stop(),
    )
