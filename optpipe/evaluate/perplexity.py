"""WikiText-2 strided perplexity: tokenize the test text once, slide a window, score only the
tokens not scored by the previous window (the standard HF recipe), keep per-window sums so that
budgets can use paired per-window differences.

Where the model's own tokenizer starts every text with BOS (Llama-3, Gemma, Mistral: trained never
to see a sequence without it), each window gets BOS in front as context, as lm-eval does; it is never
scored, so the scored tokens and their text context are the same with or without it."""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import BaseModel

from optpipe.evaluate.sequential import SequentialStop


class PerplexityResult(BaseModel):
    ppl: float
    tokens_scored: int
    window: int
    stride: int
    window_nll: list[float] = []  # summed NLL per window
    window_tokens: list[int] = []
    dataset: str = "wikitext-2-raw-v1 test"
    bos_prepended: bool = False  # each window started with the tokenizer's BOS (context only)
    seconds: float | None = None
    sequential: SequentialStop | None = None  # early-stopped: how many windows of how many, and why


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


def bos_prefix(tokenizer) -> int | None:
    """The BOS id if the tokenizer itself puts BOS before a text (what the model was trained to see),
    else None. Asked of the tokenizer's behaviour, not a flag: `add_bos_token` is missing or stale on
    many tokenizers (GGUF-loaded ones among them)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    with_special = list(tokenizer("x", add_special_tokens=True).input_ids)
    plain = list(tokenizer("x", add_special_tokens=False).input_ids)
    return int(bos) if with_special[:1] == [bos] and plain[:1] != [bos] else None


def evaluate_perplexity(
    forward_logits: Callable,
    input_ids,
    window: int,
    stride: int,
    progress: Callable[[int, int], None] | None = None,
    on_logprobs: Callable | None = None,
    bos_id: int | None = None,
    should_stop: Callable[[list[float], list[int], int], bool] | None = None,
) -> PerplexityResult:
    """`forward_logits(ids[1, T]) -> logits[1, T, V]`; `input_ids` is a 1-D LongTensor.
    `on_logprobs([scored, V])` sees each window's scored log-probs in order (for KL).
    `bos_id`: put this token before every window (context, not scored; see `bos_prefix`).
    `should_stop(window_nll, window_tokens, planned_windows)` after each window ends the evaluation early."""
    import torch

    n = int(input_ids.numel())
    spans = strided_windows(n, window, stride)
    prefix = torch.tensor([bos_id], dtype=input_ids.dtype) if bos_id is not None else None
    nlls, counts = [], []
    for i, (begin, end, scored) in enumerate(spans):
        ids = input_ids[begin:end] if prefix is None else torch.cat([prefix, input_ids[begin:end]])
        ids = ids.unsqueeze(0)
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
        if should_stop is not None and should_stop(nlls, counts, len(spans)):
            break
    total = sum(counts)
    return PerplexityResult(
        ppl=math.exp(sum(nlls) / total),
        tokens_scored=total,
        window=window,
        stride=stride,
        window_nll=nlls,
        window_tokens=counts,
        bos_prepended=prefix is not None,
    )


def wikitext_ids(tokenizer, max_tokens: int):
    """Token ids of the WikiText-2 test text joined the standard way, truncated to max_tokens."""
    from optpipe.evaluate.data import wikitext_test

    text = wikitext_test()
    # Tokenizing 1.3 MB takes seconds; only tokenize what we need (with margin).
    approx_chars = max_tokens * 8 if max_tokens else len(text)
    ids = tokenizer(text[:approx_chars], return_tensors="pt", add_special_tokens=False).input_ids[0]
    return ids[:max_tokens] if max_tokens else ids
