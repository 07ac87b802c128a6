"""lm-eval `LM`s for every runtime: lm-eval's own HFLM for transformers models, and a log-likelihood
LM over any runtime's full-sequence logits (ONNX Runtime today). Scoring adapters live here, not in
the runtimes, so runtimes never depend on the evaluation stack."""

from __future__ import annotations

from typing import Any


def hf_lm(model, tokenizer, batch_size: int):
    """An lm-eval `LM` around an in-memory transformers model (no hub access)."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))


def logits_lm(logits, tokenizer):
    """An lm-eval LM scoring log-likelihoods from `logits(ids[1, T]) -> [1, T, vocab]` (lm-eval does
    tokenization and context/continuation splitting exactly as for HFLM, through TemplateLM)."""
    import torch
    from lm_eval.api.model import TemplateLM

    class LogitsLM(TemplateLM):
        @property
        def eot_token_id(self):
            return tokenizer.eos_token_id

        def tok_encode(self, string: str, **kwargs):
            return tokenizer.encode(string, add_special_tokens=False)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False):
            out = []
            for _key, ctx, cont in requests:
                ids = torch.tensor([(ctx + cont)[:-1]])
                logp = torch.log_softmax(logits(ids)[0].float(), dim=-1)
                pos = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(cont))
                target = torch.tensor(cont)
                sel = logp[pos, target]
                greedy = bool((logp[pos].argmax(-1) == target).all())
                out.append((float(sel.sum()), greedy))
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("optpipe scores perplexity itself (optpipe.evaluate.perplexity)")

        def generate_until(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("generation tasks are not used by optpipe")

    return LogitsLM()


def scoring_lm(candidate: Any, batch_size: int):
    """The lm-eval LM that scores a candidate (any runtime) for HellaSwag."""
    scoring = candidate.scoring_model()
    if scoring.hf_model is not None:
        return hf_lm(scoring.hf_model, scoring.tokenizer, batch_size)
    return logits_lm(scoring.logits, scoring.tokenizer)
