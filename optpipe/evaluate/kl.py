"""KL divergence of a candidate's next-token distributions from the baseline's.

Perplexity only looks at the probability of the one true token; KL(baseline || candidate) looks
at the whole distribution, so it sees a quantized model drift long before perplexity moves. The
baseline's measurement writes its log-probabilities for the first `n_tokens` positions that
perplexity scores (float32, [n, vocab]); every later candidate of the same build scores the same
positions and compares. Exact (no top-k truncation); the standard error is over tokens, which are
correlated within a window, so treat it as a lower bound on the uncertainty.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel


class KLResult(BaseModel):
    """KL(reference || candidate) in nats/token over `n` positions. The reference candidate itself
    carries only `reference` (it is the reference) and `n`; a candidate whose reference is missing
    carries `error`."""

    n: int = 0
    mean: float | None = None
    se: float | None = None
    p99: float | None = None
    max: float | None = None
    reference: str = "baseline"
    error: str | None = None

    @property
    def is_reference(self) -> bool:
        return self.reference.startswith("self")


class LogprobRecorder:
    """Keeps the first `n_tokens` rows of scored log-probs, fed window by window (in order)."""

    def __init__(self, n_tokens: int):
        self.n_tokens = n_tokens
        self.rows: list = []
        self.count = 0

    def __call__(self, logp) -> None:  # logp: [scored, vocab] float32 log-probs
        need = self.n_tokens - self.count
        if need <= 0:
            return
        part = logp[:need].detach().float().cpu()
        self.rows.append(part)
        self.count += part.shape[0]

    def tensor(self):
        import torch

        return torch.cat(self.rows) if self.rows else torch.empty(0)

    def save(self, path: str | Path) -> None:
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.tensor(), tmp)
        tmp.replace(path)


def kl_from_reference(reference, candidate) -> KLResult:
    """Per-token KL(reference || candidate) over matching rows of two [n, vocab] log-prob tensors."""
    import torch

    if reference.shape != candidate.shape:
        raise ValueError(
            f"KL needs the same positions and vocabulary: reference {tuple(reference.shape)}, candidate {tuple(candidate.shape)}"
        )
    ref, cand = reference.double(), candidate.double()
    per_token = (ref.exp() * (ref - cand)).sum(dim=-1).clamp_min(0.0)  # clamp: float rounding below 0
    n = per_token.numel()
    mean = float(per_token.mean())
    se = float(per_token.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    return KLResult(mean=mean, se=se, p99=float(torch.quantile(per_token, 0.99)), max=float(per_token.max()), n=n)
