"""The recipe's vocabulary: model source, accuracy budget, goals, evaluation and benchmark settings.

Frozen pydantic models with unknown fields forbidden, so a typo is an error, never ignored. The
Recipe itself (`optpipe.build.recipe`) composes these with the pass list. pydantic only: no torch.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Strict):
    """Where the model comes from."""

    source: str = Field(
        description="'smollm2-135m' (bundled), a local transformers directory, a .gguf file, "
        "or a hub id such as 'meta-llama/Llama-3.1-8B-Instruct' (needs hub access)."
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside `source` when it is a directory.")
    revision: str | None = Field(None, description="Hub revision (hub ids only).")
    trust_remote_code: bool = False


class AccuracyBudget(Strict):
    """Allowed accuracy loss relative to the baseline measured in the same build."""

    hellaswag_max_drop_points: float | None = Field(
        1.0, ge=0, description="Max drop of HellaSwag acc_norm, in percentage points."
    )
    perplexity_max_rise_pct: float | None = Field(3.0, ge=0, description="Max rise of WikiText-2 perplexity, in percent.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Two-sided confidence level of verdict intervals.")


class Goals(Strict):
    """Speed and memory goals; any left out is not checked."""

    max_memory_gb: float | None = Field(None, gt=0, description="Peak memory (GPU: device memory; CPU: peak RSS).")
    min_decode_tok_s: float | None = Field(None, gt=0, description="Decode tokens/second at batch 1.")
    max_p95_token_latency_ms: float | None = Field(None, gt=0, description="95th percentile per-token latency.")
    max_size_gb: float | None = Field(None, gt=0, description="Weights on disk.")


class EvaluationSettings(Strict):
    hellaswag_items: int = Field(300, ge=0, le=10042, description="HellaSwag validation items (0 = skip; 10042 = all).")
    perplexity_tokens: int = Field(8192, ge=0, description="WikiText-2 test tokens scored (0 = skip).")
    perplexity_window: int = Field(512, ge=16)
    perplexity_stride: int = Field(256, ge=1)
    kl_tokens: int = Field(
        1024,
        ge=0,
        description="Positions (the first ones perplexity scores) on which each "
        "candidate's KL divergence from the baseline is measured (0 = skip). The baseline "
        "keeps n x vocab float32 log-probs on disk for it.",
    )
    batch_size: int = Field(8, ge=1)
    seed: int = Field(1234, description="Seed of the HellaSwag subset; fixed so builds compare night to night.")

    @field_validator("perplexity_stride")
    @classmethod
    def _stride_le_window(cls, v: int, info) -> int:
        window = info.data.get("perplexity_window")
        if window is not None and v > window:
            raise ValueError(f"must be <= perplexity_window ({window})")
        return v


class SearchSettings(Strict):
    """How much evaluation and how many candidates a build may spend (docs/search.md)."""

    early_stop: bool = Field(
        False,
        description="Evaluate candidates in chunks and stop as soon as a confidence sequence puts an accuracy line "
        "wholly inside or outside the budget. Off by default: figures from a fixed item set compare night to night.",
    )
    min_items: int = Field(100, ge=20, description="HellaSwag items before the first look.")
    chunk_items: int = Field(50, ge=10, description="HellaSwag items between looks.")
    min_windows: int = Field(8, ge=4, description="Perplexity windows before the first look.")
    chunk_windows: int = Field(4, ge=1, description="Perplexity windows between looks.")
    max_candidates: int | None = Field(
        None, ge=1, description="Stop building after this many candidates (the baseline not counted); the rest are 'not run'."
    )
    max_minutes: float | None = Field(
        None, gt=0, description="Start no new candidate after this many minutes of the build (a resumed build counts anew)."
    )


class BenchmarkSettings(Strict):
    prompt_tokens: int = Field(128, ge=1)
    new_tokens: int = Field(64, ge=2)
    batch_size: int = Field(1, ge=1)
    warmup: int = Field(1, ge=0)
    min_trials: int = Field(3, ge=2)
    max_trials: int = Field(10, ge=2)
    target_cv: float = Field(0.05, gt=0, description="Stop repeating once decode tok/s varies less than this.")
