"""Measure one saved candidate in a fresh process: benchmark, then HellaSwag and perplexity.

A fresh process per candidate keeps one candidate's memory (allocator caches, compile caches,
peak RSS) out of the next one's figures. The parent talks to it through two JSON files; progress
lines go to stdout prefixed with PROGRESS_PREFIX, everything else to the log.

    python -m optpipe.measure.worker job.json result.json
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from optpipe.errors import CandidateFailed

PROGRESS_PREFIX = "@@optpipe "


def _progress(msg: str) -> None:
    print(PROGRESS_PREFIX + msg, flush=True)


def write_json_atomic(path: str | Path, data: Any) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def measure_candidate(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from optpipe.evaluate.data import benchmark_prompt_text, hellaswag_subset
    from optpipe.measure.bench import BenchConfig, benchmark, peak_rss_bytes
    from optpipe.runtime import load_any, weights_size_bytes

    device = job.get("device") or "cpu"
    nvml = None
    if device.startswith("cuda"):
        from optpipe.measure.nvml import Nvml

        nvml = Nvml()
        cap = job.get("memory_cap_gb")
        if cap:  # "fits in N GB" is tested for real: allocations past the cap raise OOM
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, cap * 1e9 / total))
    t0 = time.perf_counter()
    cand = load_any(job["candidate_dir"], device=device)
    result: dict[str, Any] = {"load_s": time.perf_counter() - t0, "rss_after_load_bytes": peak_rss_bytes()}
    result["parameters"] = cand.num_parameters()
    result["size_bytes"] = weights_size_bytes(job["candidate_dir"])
    result["runtime"] = cand.settings.to_dict()
    result["torch_threads"] = torch.get_num_threads()
    if nvml is not None:
        result["nvml"] = nvml.info()
        result["memory_cap_gb"] = job.get("memory_cap_gb")

    bench_cfg = BenchConfig(**job["benchmark"])
    if bench_cfg.prompt_tokens:
        ids = cand.tokenizer(benchmark_prompt_text(), return_tensors="pt", add_special_tokens=False).input_ids
        prompt = ids[:, : bench_cfg.prompt_tokens].to(cand.device)
        decoder = cand.decoder()
        _progress(f"benchmark ({decoder.name}): prompt {prompt.shape[1]} tokens, {bench_cfg.new_tokens} new tokens")
        bench = benchmark(decoder, prompt, bench_cfg, progress=lambda m: _progress("benchmark " + m), nvml=nvml)
        if device.startswith("cuda") and cand.settings.format == "transformers":
            bench["roofline"] = roofline_report(cand.model, bench, bench_cfg, job.get("projection"))
        result["benchmark"] = bench
        del decoder

    ev = job["evaluation"]
    if ev.get("hellaswag_items"):
        from optpipe.evaluate.hellaswag import evaluate_hellaswag

        items = hellaswag_subset(ev["hellaswag_items"], ev["seed"])
        _progress(f"hellaswag: {len(items)} items (seed {ev['seed']}, batch {ev['batch_size']})")
        t = time.perf_counter()
        hs = evaluate_hellaswag(cand.scoring_lm(ev["batch_size"]), items)
        result["hellaswag"] = hs.to_dict() | {"seconds": time.perf_counter() - t}
    if ev.get("perplexity_tokens"):
        from optpipe.evaluate.perplexity import evaluate_perplexity, wikitext_ids

        ids = wikitext_ids(cand.tokenizer, ev["perplexity_tokens"])
        _progress(f"perplexity: {ids.numel()} tokens, window {ev['perplexity_window']}, stride {ev['perplexity_stride']}")
        t = time.perf_counter()
        kl_job = job.get("kl_reference")
        recorder = None
        if kl_job and ev.get("kl_tokens"):
            from optpipe.evaluate.kl import LogprobRecorder

            recorder = LogprobRecorder(ev["kl_tokens"])
        ppl = evaluate_perplexity(
            cand.logits, ids,
            ev["perplexity_window"], ev["perplexity_stride"],
            progress=lambda i, n: _progress(f"perplexity window {i}/{n}") if i % 8 == 0 or i == n else None,
            on_logprobs=recorder,
        )
        result["perplexity"] = ppl.to_dict() | {"seconds": time.perf_counter() - t}
        if recorder is not None:
            result["kl"] = kl_against_reference(recorder, kl_job)
    result["peak_rss_total_bytes"] = peak_rss_bytes()
    return result


def kl_against_reference(recorder, kl_job: dict[str, Any]) -> dict[str, Any]:
    """The baseline writes the reference log-probs; every other candidate is compared with them."""
    import torch

    from optpipe.evaluate.kl import kl_from_reference

    path = Path(kl_job["path"])
    if kl_job.get("write"):
        recorder.save(path)
        return {"reference": "self (this candidate is the reference)", "n": recorder.count}
    if not path.exists():
        return {"error": f"reference log-probs {path} are missing (the baseline came from an older cache)"}
    reference = torch.load(path, map_location="cpu")
    _progress(f"kl: {reference.shape[0]} positions against the baseline")
    return kl_from_reference(reference, recorder.tensor()).to_dict()


def roofline_report(model, bench: dict[str, Any], cfg: Any, projection: dict[str, Any] | None,
                    bandwidth_gbs: float | None = None) -> dict[str, Any]:
    """Measured decode speed against the memory-bandwidth roofline of this GPU (measured copy
    bandwidth), flagged when impossible, and projected to the target's bandwidth if it differs."""
    from optpipe.measure.roofline import decode_roofline, measure_copy_bandwidth_gbs

    bw = bandwidth_gbs or measure_copy_bandwidth_gbs()
    roof = decode_roofline(model, cfg.prompt_tokens, cfg.new_tokens, bw, "measured device-to-device copy")
    measured = bench["decode_tok_s"]["mean"]
    frac = roof.fraction(measured, cfg.batch_size)
    out: dict[str, Any] = roof.to_dict() | {"roofline_tok_s_at_batch": roof.tok_s_for_batch(cfg.batch_size), "fraction": frac}
    if frac > 1.0:
        out["error"] = (f"measured {measured:.1f} tok/s is {frac:.0%} of the memory roofline: a measurement error, "
                        "not a result")
    if projection:
        target_roof = decode_roofline(model, cfg.prompt_tokens, cfg.new_tokens, projection["bandwidth_gbs"],
                                      f"{projection['target']} spec")
        out["projected"] = {
            "target": projection["target"],
            "bandwidth_gbs": projection["bandwidth_gbs"],
            "roofline_tok_s": target_roof.tok_s_for_batch(cfg.batch_size),
            "decode_tok_s": min(frac, 1.0) * target_roof.tok_s_for_batch(cfg.batch_size),
            "method": "measured fraction of this GPU's roofline x the target's roofline (weights + KV bytes / spec bandwidth)",
        }
    return out


def run_isolated(job: dict[str, Any], workdir: Path, log_path: Path,
                 on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run `measure_candidate(job)` in a child process; re-raise its failure with its traceback."""
    workdir.mkdir(parents=True, exist_ok=True)
    job_path, result_path = workdir / "job.json", workdir / "result.json"
    result_path.unlink(missing_ok=True)
    write_json_atomic(job_path, job)
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "optpipe.measure.worker", str(job_path), str(result_path)],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(PROGRESS_PREFIX):
                if on_progress:
                    on_progress(line[len(PROGRESS_PREFIX):].rstrip())
            else:
                log.write(line)
        code = proc.wait()
    if code != 0 or not result_path.exists():
        tail = "".join(Path(log_path).read_text().splitlines(keepends=True)[-25:])
        raise CandidateFailed(f"measurement process exited with {code}; log: {log_path}\n{tail}")
    return json.loads(result_path.read_text())


def main(argv: list[str]) -> int:
    job_path, result_path = argv
    job = json.loads(Path(job_path).read_text())
    try:
        result = measure_candidate(job)
    except Exception:
        traceback.print_exc()
        return 1
    write_json_atomic(result_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
