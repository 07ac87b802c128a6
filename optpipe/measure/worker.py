"""The measurement process: load one saved candidate, benchmark it, then HellaSwag, perplexity and KL.

Started by `optpipe.measure.launcher.run_isolated`, never imported by the build process itself:

    python -m optpipe.measure.worker job.json result.json
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from optpipe.files import write_json_atomic
from optpipe.measure.job import KLReferenceJob, MeasureJob, ParentJob
from optpipe.measure.launcher import PARENT_PID_ENV, PROGRESS_PREFIX
from optpipe.measure.results import Measurements


def _progress(msg: str) -> None:
    print(PROGRESS_PREFIX + msg, flush=True)


def _cap_cuda_memory(cap_gb: float | None) -> None:
    """'Fits in N GB' is tested for real: allocations past the cap raise out-of-memory."""
    import torch

    if cap_gb:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb * 1e9 / total))


def measure_candidate(job: MeasureJob) -> Measurements:
    """Measure; running out of memory under the cap is a result (the candidate does not fit), not a crash."""
    import torch

    from optpipe.runtime.candidate import read_settings, weights_size_bytes

    nvml = None
    copy_bandwidth = None
    if job.device.startswith("cuda"):
        from optpipe.measure.nvml import Nvml

        nvml = Nvml()
        if job.benchmark is not None:  # the roofline report needs it
            from optpipe.measure.roofline import measure_copy_bandwidth_gbs

            copy_bandwidth = measure_copy_bandwidth_gbs()  # its 2 GiB of buffers before the cap applies
        _cap_cuda_memory(job.memory_cap_gb)
    result = Measurements(
        size_bytes=weights_size_bytes(job.candidate_dir),
        runtime=read_settings(job.candidate_dir).to_dict(),
        torch_threads=torch.get_num_threads(),
        nvml=nvml.info() if nvml is not None else None,
        memory_cap_gb=job.memory_cap_gb if nvml is not None else None,
    )
    try:  # out of memory here is the answer to "does it fit"
        cand = _load_and_benchmark(result, job, nvml, copy_bandwidth)
    except torch.OutOfMemoryError as exc:
        cap = f"the {job.memory_cap_gb:g} GB cap" if job.memory_cap_gb else "this device's memory"
        result.out_of_memory = f"out of memory under {cap}: {str(exc).splitlines()[0]}"
        _progress(result.out_of_memory)
        return result
    _evaluate(result, job, cand)  # out of memory while scoring is a failed measurement, not a verdict on fit
    if job.parent is not None and job.benchmark is not None:  # last: the parent must not touch the peaks above
        result.speed_vs_parent = speed_vs_parent(cand, job, job.parent, nvml)
    result.warnings = result.collect_warnings()
    return result


def _load_and_benchmark(result: Measurements, job: MeasureJob, nvml, copy_bandwidth: float | None):
    from optpipe.evaluate.data import benchmark_prompt_text
    from optpipe.measure.bench import benchmark, peak_rss_bytes
    from optpipe.runtime import load_candidate

    t0 = time.perf_counter()
    cand = load_candidate(job.candidate_dir, device=job.device)
    result.load_s = time.perf_counter() - t0
    result.rss_after_load_bytes = peak_rss_bytes()
    result.parameters = cand.num_parameters()
    result.runtime = cand.settings.to_dict()

    cfg = job.benchmark
    if cfg is not None:
        ids = cand.tokenizer(benchmark_prompt_text(), return_tensors="pt", add_special_tokens=False).input_ids
        prompt = ids[:, : cfg.prompt_tokens].to(cand.device)
        decoder = cand.decoder()
        _progress(f"benchmark ({decoder.name}): prompt {prompt.shape[1]} tokens, {cfg.new_tokens} new tokens")
        bench = benchmark(decoder, prompt, cfg, progress=lambda m: _progress("benchmark " + m), nvml=nvml)
        if job.device.startswith("cuda") and cand.torch_model is not None:
            from optpipe.measure.roofline import roofline_report

            bench.roofline = roofline_report(cand.torch_model, bench, cfg, job.projection, copy_bandwidth)
        result.benchmark = bench
        del decoder
    return cand


def _evaluate(result: Measurements, job: MeasureJob, cand) -> None:
    from optpipe.measure.bench import peak_rss_bytes

    if job.memory_cap_gb and (job.evaluation.hellaswag_items or job.evaluation.perplexity_tokens):
        # The cap tests whether the candidate runs on the target (load + decode, measured above);
        # scoring thousands of tokens at once is not what the target does, so accuracy runs uncapped.
        import torch

        torch.cuda.set_per_process_memory_fraction(1.0)
        result.evaluated_uncapped = True
    if job.early_stop is not None:  # perplexity first: it decides hopeless candidates in the fewest tokens
        _perplexity(result, job, cand)
        outside = bool(result.perplexity and result.perplexity.sequential and result.perplexity.sequential.decision == "outside")
        _hellaswag(result, job, cand, other_outside=outside)
    else:
        _hellaswag(result, job, cand)
        _perplexity(result, job, cand)
    result.peak_rss_total_bytes = peak_rss_bytes()


def _hellaswag(result: Measurements, job: MeasureJob, cand, other_outside: bool = False) -> None:
    from optpipe.evaluate.data import hellaswag_subset

    ev = job.evaluation
    if ev.hellaswag_items:
        from optpipe.evaluate.hellaswag import evaluate_hellaswag
        from optpipe.evaluate.lm_adapters import scoring_lm

        items = hellaswag_subset(ev.hellaswag_items, ev.seed)
        _progress(f"hellaswag: {len(items)} items (seed {ev.seed}, batch {ev.batch_size})")
        t = time.perf_counter()
        if job.early_stop is not None:
            from optpipe.measure.early_stop import hellaswag_early

            lm = scoring_lm(cand, ev.batch_size)
            result.hellaswag = hellaswag_early(
                lambda chunk: evaluate_hellaswag(lm, chunk), items, job.early_stop, other_outside, _progress
            )
        else:
            result.hellaswag = evaluate_hellaswag(scoring_lm(cand, ev.batch_size), items)
        result.hellaswag.seconds = time.perf_counter() - t


def _perplexity(result: Measurements, job: MeasureJob, cand) -> None:
    ev = job.evaluation
    if ev.perplexity_tokens:
        from optpipe.evaluate.perplexity import bos_prefix, evaluate_perplexity, wikitext_ids

        ids = wikitext_ids(cand.tokenizer, ev.perplexity_tokens)
        bos = bos_prefix(cand.tokenizer)
        _progress(
            f"perplexity: {ids.numel()} tokens, window {ev.perplexity_window}, stride {ev.perplexity_stride}"
            + (f", BOS {bos} before each window" if bos is not None else "")
        )
        t = time.perf_counter()
        recorder = None
        if job.kl_reference is not None and ev.kl_tokens:
            from optpipe.evaluate.kl import LogprobRecorder

            recorder = LogprobRecorder(ev.kl_tokens)
        stopper = None
        if job.early_stop is not None:
            from optpipe.measure.early_stop import PerplexityStopper

            stopper = PerplexityStopper(job.early_stop, recorder, _progress)
        result.perplexity = evaluate_perplexity(
            cand.logits,
            ids,
            ev.perplexity_window,
            ev.perplexity_stride,
            progress=lambda i, n: _progress(f"perplexity window {i}/{n}") if i % 8 == 0 or i == n else None,
            on_logprobs=recorder,
            bos_id=bos,
            should_stop=stopper,
        )
        if stopper is not None:
            result.perplexity.sequential = stopper.record()
        result.perplexity.seconds = time.perf_counter() - t
        if recorder is not None and job.kl_reference is not None:
            result.kl = kl_against_reference(recorder, job.kl_reference)


HEADROOM_BYTES = 512 * 2**20  # activations, KV cache and allocator slack of the second model


def parent_fits(parent_dir: str, device: str) -> tuple[bool, str]:
    """Whether the parent's weights fit beside the loaded candidate, with headroom (available
    memory now, so the build process and the candidate are already counted)."""
    import psutil

    from optpipe.runtime.candidate import weights_size_bytes

    need = weights_size_bytes(parent_dir) * 1.25 + HEADROOM_BYTES
    if device.startswith("cuda"):
        import torch

        free = torch.cuda.mem_get_info()[0]
        where = "GPU memory"
    else:
        free, where = psutil.virtual_memory().available, "memory"
    if need > free:
        return False, f"the parent needs ~{need / 1e9:.2f} GB beside the candidate, {free / 1e9:.2f} GB of {where} free"
    return True, ""


def speed_vs_parent(cand, job: MeasureJob, parent_job: ParentJob, nvml):
    """Candidate/parent decode speed from interleaved rounds in this process, when both fit; else a
    record saying why not (the build then compares the two separate timings, labelled so). A failure
    here costs only the ratio, never the candidate's measurements."""
    import math

    from optpipe.measure.results import SpeedRatio

    if job.device.startswith("cuda"):
        import torch

        torch.cuda.set_per_process_memory_fraction(1.0)  # the cap was for the candidate alone
    fits, why = parent_fits(parent_job.directory, job.device)
    if fits:
        try:
            return _interleave(cand, job, parent_job, nvml)
        except Exception as exc:  # out of memory included: report it, keep what was measured
            traceback.print_exc()
            why = f"interleaved timing failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    _progress(f"speed vs {parent_job.name}: not interleaved ({why})")
    nan = math.nan
    return SpeedRatio(
        parent=parent_job.name, interleaved=False, ratio=nan, low=nan, high=nan, confidence=parent_job.confidence,
        why_not_interleaved=why,
    )  # fmt: skip


def _interleave(cand, job: MeasureJob, parent_job: ParentJob, nvml):
    from optpipe.evaluate.data import benchmark_prompt_text
    from optpipe.measure.bench import interleaved_ratio
    from optpipe.runtime import load_candidate

    cfg = job.benchmark
    assert cfg is not None
    parent = load_candidate(parent_job.directory, device=job.device)
    ids = cand.tokenizer(benchmark_prompt_text(), return_tensors="pt", add_special_tokens=False).input_ids
    prompt = ids[:, : cfg.prompt_tokens].to(cand.device)
    _progress(f"speed vs {parent_job.name}: interleaved rounds")
    try:
        return interleaved_ratio(
            cand.decoder(), parent.decoder(), prompt, cfg, parent_job.name, parent_job.confidence, progress=_progress, nvml=nvml
        )
    finally:
        del parent


def kl_against_reference(recorder, kl_job: KLReferenceJob):
    """The baseline writes the reference log-probs; every other candidate is compared with them."""
    import torch

    from optpipe.evaluate.kl import KLResult, kl_from_reference

    path = Path(kl_job.path)
    if kl_job.write:
        recorder.save(path)
        return KLResult(reference="self (this candidate is the reference)", n=recorder.count)
    if not path.exists():
        return KLResult(error=f"reference log-probs {path} are missing (the baseline came from an older cache)")
    reference = torch.load(path, map_location="cpu", weights_only=True)
    _progress(f"kl: {reference.shape[0]} positions against the baseline")
    return kl_from_reference(reference, recorder.tensor())


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(poll_s: float = 0.5, pdeathsig: bool = True) -> None:
    """A SIGKILLed build must not leave its measurement running (writing into the next run's logs).
    Linux: the kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG); everywhere, a
    daemon thread also exits when the parent pid changes (reparented to init or a subreaper)."""
    parent = int(os.environ.get(PARENT_PID_ENV) or os.getppid())
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl here: the watcher below still ends the worker
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="optpipe-parent-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    die_with_parent()
    job_path, result_path = argv
    job = MeasureJob.model_validate_json(Path(job_path).read_text())
    try:
        result = measure_candidate(job)
    except Exception:  # the child's one job: report any failure to the parent through its log
        traceback.print_exc()
        return 1
    write_json_atomic(result_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
