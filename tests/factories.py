"""Typed measurement records for table tests of the judge and the report (no model needed)."""

from __future__ import annotations

import math

from optpipe.evaluate.hellaswag import HellaSwagResult
from optpipe.evaluate.perplexity import PerplexityResult
from optpipe.measure.results import BenchmarkResult, Measurements, ProjectedSpeed, RooflineReport
from optpipe.measure.stats import Spread


def spread(mean: float, stdev: float = 0.0, n: int = 5, p95: float | None = None) -> Spread:
    return Spread(
        n=n,
        mean=mean,
        stdev=stdev,
        cv=stdev / mean if mean else math.nan,
        p50=mean,
        p95=mean if p95 is None else p95,
        p99=mean,
        min=mean,
        max=mean,
    )


def bench(
    mean: float, stdev: float = 0.0, n: int = 5, p95: float = 10.0, projected_tok_s: float | None = None, target: str = "rtx4060"
) -> BenchmarkResult:
    roofline = None
    if projected_tok_s is not None:
        roofline = RooflineReport(
            bandwidth_gbs=3000.0,
            bandwidth_source="test",
            weight_bytes=1,
            kv_bytes_per_token_avg=0.0,
            tok_s=2 * mean,
            roofline_tok_s_at_batch=2 * mean,
            fraction=0.5,
            projected=ProjectedSpeed(
                target=target,
                bandwidth_gbs=272.0,
                roofline_tok_s=2 * projected_tok_s,
                decode_tok_s=projected_tok_s,
                method="test",
            ),
        )
    return BenchmarkResult(
        config={},
        device="cpu",
        decoder="eager",
        warmup_s=0.0,
        energy_j_per_token="n/a",
        trials=n,
        decode_tok_s=spread(mean, stdev, n),
        decode_tok_s_trials=[mean] * n,
        prefill_tok_s=spread(1000.0),
        ttft_ms=spread(10.0),
        token_latency_ms=spread(p95, n=100, p95=p95),
        stable=True,
        peak_rss_bytes=int(2e9),
        roofline=roofline,
    )


def result(
    acc_norm: list[float] | None = None,
    nll: list[float] | None = None,
    b: BenchmarkResult | None = None,
    size: float = 1e9,
    tokens: int = 100,
) -> Measurements:
    m = Measurements(
        load_s=0.0, rss_after_load_bytes=0, parameters=0, size_bytes=int(size), runtime={}, torch_threads=1, benchmark=b
    )
    if acc_norm is not None:
        mean = sum(acc_norm) / len(acc_norm)
        m.hellaswag = HellaSwagResult(
            n=len(acc_norm),
            acc=mean,
            acc_se=0.0,
            acc_norm=mean,
            acc_norm_se=0.0,
            item_indices=list(range(len(acc_norm))),
            item_acc_norm=acc_norm,
        )
    if nll is not None:
        m.perplexity = PerplexityResult(
            ppl=math.exp(sum(nll) / len(nll)),
            tokens_scored=tokens * len(nll),
            window=tokens,
            stride=tokens,
            window_nll=[x * tokens for x in nll],
            window_tokens=[tokens] * len(nll),
        )
    return m


def manifest(candidates, forecast=(), budget=None, goals=None, **fields):
    """A build manifest around the given CandidateRecords (recipe sections as a dumped recipe has them)."""
    from optpipe.output.manifest import Manifest, ModelInfo  # output sits above measure: import where used

    recipe = {
        "evaluation": {
            "hellaswag_items": 0,
            "seed": 1,
            "perplexity_tokens": 0,
            "perplexity_window": 512,
            "perplexity_stride": 256,
        },
        "benchmark": {"prompt_tokens": 8, "new_tokens": 4, "batch_size": 1},
        "budget": budget or {"hellaswag_max_drop_points": 1.0, "perplexity_max_rise_pct": 3.0, "confidence": 0.95},
        "goals": goals or {},
    }
    base = dict(
        recipe_schema_version=1,
        optpipe_version="0",
        recipe_file="r.yaml",
        recipe_hash="h",
        recipe=recipe,
        model=ModelInfo(description="m", kind="hf-dir", fingerprint="f"),
        target={"name": "rtx4060", "display_name": "RTX 4060"},
        measured_on="cuda (H100)",
        host={"cpu": "x", "cpu_count": 2},
        packages={},
        started="s",
        updated="u",
        status="NOT MET",
        pass_chain=[],
        candidates=list(candidates),
        forecast=list(forecast),
    )
    base.update(fields)
    return Manifest(**base)
