"""Greedy decode loops over a transformers causal LM, one token at a time.

`EagerDecoder` runs the model's forward with a dynamic KV cache, as stock transformers does.
`StaticGraphDecoder` is the compile pass's runtime: a static KV cache allocated once, the one-token
decode step compiled with `torch.compile` and (on CUDA) captured as a CUDA graph, the prompt
prefill compiled separately. Nothing in the step syncs with the host, so consecutive steps replay
graphs back to back; this is what removes the per-kernel launch overhead that keeps stock
`generate` at a small fraction of the memory roofline. Model-agnostic: it relies only on the
standard `forward(input_ids, position_ids, cache|past_key_values, use_cache)` of Llama / Qwen /
Mistral / Gemma-style decoders in transformers 5.x.
"""

from __future__ import annotations

import inspect
from typing import Any


def _forward_params(model) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def cache_kwarg(model) -> str:
    params = _forward_params(model)
    return "cache" if "cache" in params and "past_key_values" not in params else "past_key_values"


class EagerDecoder:
    """Dynamic cache, plain forward calls (what `generate` does per step, minus its bookkeeping)."""

    name = "eager"

    def __init__(self, model):
        self.model = model
        self._key = cache_kwarg(model)
        self.cache = None

    def reset(self, batch: int, max_len: int) -> None:
        from transformers import DynamicCache

        try:
            self.cache = DynamicCache(config=self.model.config)
        except TypeError:  # older transformers
            self.cache = DynamicCache()

    def prefill(self, ids):
        out = self.model(input_ids=ids, use_cache=True, **{self._key: self.cache})
        return out.logits[:, -1:].argmax(-1)

    def step(self, token):
        out = self.model(input_ids=token, use_cache=True, **{self._key: self.cache})
        return out.logits[:, -1:].argmax(-1)


class StaticGraphDecoder:
    """Static KV cache + compiled decode step (CUDA graphs with mode='reduce-overhead')."""

    name = "static-compiled"

    def __init__(
        self,
        model,
        max_cache_len: int,
        mode: str | None = "reduce-overhead",
        compile_prefill: bool = True,
        sdpa_backends: tuple[str, ...] | None = None,
    ):
        import torch

        self.model = model
        # e.g. ("EFFICIENT_ATTENTION",): keeps torch from picking a kernel that is slow for one-token
        # queries against a masked static cache (the cuDNN fallback, on Hopper).
        self.sdpa_backends = sdpa_backends
        self.max_cache_len = max_cache_len
        self.mode = mode
        self._key = cache_kwarg(model)
        self._has_cache_position = "cache_position" in _forward_params(model)
        self.cache = None
        self.pos = None
        self._batch = None
        self._fresh = True
        if mode is None:  # static cache only (tests, debugging)
            self._step, self._prefill = self._step_eager, self._prefill_eager
        else:
            self._step = torch.compile(self._step_eager, mode=mode, fullgraph=True, dynamic=False)
            self._prefill = (
                torch.compile(self._prefill_eager, mode="default" if mode == "reduce-overhead" else mode)
                if compile_prefill
                else self._prefill_eager
            )

    # -- uncompiled bodies -------------------------------------------------------------
    def _kwargs(self, position_ids) -> dict[str, Any]:
        kw: dict[str, Any] = {"position_ids": position_ids, "use_cache": True, self._key: self.cache}
        if self._has_cache_position:  # transformers < 5.2x take the write index explicitly
            kw["cache_position"] = position_ids[0]
        return kw

    def _step_eager(self, token, position_ids):
        out = self.model(input_ids=token, **self._kwargs(position_ids))
        return out.logits[:, -1:].argmax(-1)

    def _prefill_eager(self, ids, position_ids):
        out = self.model(input_ids=ids, logits_to_keep=1, **self._kwargs(position_ids))
        return out.logits[:, -1:].argmax(-1)

    # -- public API ---------------------------------------------------------------------
    def reset(self, batch: int, max_len: int) -> None:
        import torch
        from transformers import StaticCache

        if max_len > self.max_cache_len:
            raise ValueError(f"sequence of {max_len} tokens exceeds the static cache ({self.max_cache_len}); raise max_cache_len")
        if self.cache is None or self._batch != batch:
            self.cache = StaticCache(config=self.model.config, max_cache_len=self.max_cache_len)
            self._batch = batch
            self._fresh = True
        else:
            self.cache.reset()
        self.pos = torch.zeros(1, 1, dtype=torch.long, device=self.model.device)

    def _cache_tensors(self) -> list:
        """The KV buffers, across transformers 5.x cache layouts."""
        tensors = []
        for layer in getattr(self.cache, "layers", []):
            tensors += [t for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if t is not None]
        for name in ("key_cache", "value_cache"):
            tensors += list(getattr(self.cache, name, []) or [])
        return [t for t in tensors if hasattr(t, "data_ptr")]

    def prefill(self, ids):
        import torch

        n = ids.shape[1]
        position_ids = torch.arange(n, device=ids.device).unsqueeze(0)
        if self._fresh:
            # The static cache allocates its buffers on first use. Do that first use eagerly and pin
            # the buffers' addresses: buffers created inside a compiled region are not marked
            # static, and CUDA graphs then skip the step ("mutated inputs") and run unfused.
            token = self._prefill_eager(ids, position_ids)
            for t in self._cache_tensors():
                torch._dynamo.mark_static_address(t)
            self._fresh = False
        else:
            token = self._prefill(ids, position_ids)
        self.pos.fill_(n)
        return token.clone()

    def step(self, token):
        import torch

        if hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()
        if self.sdpa_backends:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel([getattr(SDPBackend, b) for b in self.sdpa_backends]):
                nxt = self._step(token, self.pos)
        else:
            nxt = self._step(token, self.pos)
        self.pos.add_(1)
        return nxt.clone()  # the graph's output buffer is overwritten by the next replay


def make_decoder(candidate) -> Any:
    """The decoder a candidate's runtime settings ask for."""
    spec = getattr(candidate.settings, "compile", None)
    if spec and spec.get("step") == "fused":
        from optpipe.runtime.fused_decode import FusedStepDecoder

        return FusedStepDecoder(
            candidate.model,
            spec["max_cache_len"],
            spec.get("mode", "reduce-overhead"),
            inductor_tuning=spec.get("inductor_tuning", True),
        )
    if spec:
        return StaticGraphDecoder(
            candidate.model,
            spec["max_cache_len"],
            spec.get("mode", "reduce-overhead"),
            sdpa_backends=tuple(spec["sdpa_backends"]) if spec.get("sdpa_backends") else None,
        )
    return EagerDecoder(candidate.model)
