"""WikiText-2 strided perplexity: tokenize the test text once, slide a window, score only the
tokens not scored by the previous window (the standard HF recipe), keep per-window sums so that
budgets can use paired per-window differences."""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import BaseModel


class PerplexityResult(BaseModel):
    ppl: float
    tokens_scored: int
    window: int
    stride: int
    window_nll: list[float] = []  # summed NLL per window
    window_tokens: list[int] = []
    dataset: str = "wikitext-2-raw-v1 test"
    seconds: float | None = None


def strided_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, n_scored) for each window; scored tokens never overlap and cover 1..n-1."""
    spans, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        scored = min(end - prev_end, end - begin - 1)  # the window's first token has no prediction
        if scored > 0:
            spans.append((begin, end, scored))
        prev_end = end
        if end == n_tokens:
            break
    return spans


def evaluate_perplexity(
    forward_logits: Callable,
    input_ids,
    window: int,
    stride: int,
    progress: Callable[[int, int], None] | None = None,
    on_logprobs: Callable | None = None,
) -> PerplexityResult:
    """`forward_logits(ids[1, T]) -> logits[1, T, V]`; `input_ids` is a 1-D LongTensor.
    `on_logprobs([scored, V])` sees each window's scored log-probs in order (for KL)."""
    import torch

    n = int(input_ids.numel())
    spans = strided_windows(n, window, stride)
    nlls, counts = [], []
    for i, (begin, end, scored) in enumerate(spans):
        ids = input_ids[begin:end].unsqueeze(0)
        with torch.inference_mode():
            logits = forward_logits(ids).float()
        logp = torch.log_softmax(logits[0, :-1], dim=-1)
        targets = ids[0, 1:].to(logp.device)
        token_nll = -logp.gather(1, targets.unsqueeze(1)).squeeze(1)
        nlls.append(float(token_nll[-scored:].sum()))
        if on_logprobs is not None:
            on_logprobs(logp[-scored:])
        counts.append(scored)
        if progress:
            progress(i + 1, len(spans))
    total = sum(counts)
    return PerplexityResult(
        ppl=math.exp(sum(nlls) / total),
        tokens_scored=total,
        window=window,
        stride=stride,
        window_nll=nlls,
        window_tokens=counts,
    )


def wikitext_ids(tokenizer, max_tokens: int):
    """Token ids of the WikiText-2 test text joined the standard way, truncated to max_tokens."""
    from optpipe.evaluate.data import wikitext_test

    text = wikitext_test()
    # Tokenizing 1.3 MB takes seconds; only tokenize what we need (with margin).
    approx_chars = max_tokens * 8 if max_tokens else len(text)
    ids = tokenizer(text[:approx_chars], return_tensors="pt", add_special_tokens=False).input_ids[0]
    return ids[:max_tokens] if max_tokens else ids
