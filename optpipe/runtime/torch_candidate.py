"""Torch candidates: a transformers causal LM + tokenizer + the runtime settings that are not part of
the weights (attention implementation, device, compiled decode step).

Saved as a standard transformers directory plus `optpipe_runtime.json`: stock
`AutoModelForCausalLM.from_pretrained(dir)` loads the weights, `optpipe.load(dir)` also re-applies
the runtime settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from optpipe.runtime.candidate import RuntimeSettings, ScoringModel, read_settings
from optpipe.runtime.dtypes import torch_dtype


@dataclass
class TorchCandidate:
    model: Any
    tokenizer: Any
    settings: RuntimeSettings

    def with_settings(self, **changes: Any) -> "TorchCandidate":
        return TorchCandidate(self.model, self.tokenizer, replace(self.settings, **changes))

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def torch_model(self):
        return self.model

    def decoder(self):
        """The greedy decode loop these runtime settings ask for (compiled when the compile pass ran)."""
        from optpipe.runtime.decode import make_decoder

        return make_decoder(self)

    def logits(self, ids):
        """Full-sequence logits, for perplexity."""
        return self.model(input_ids=ids.to(self.device)).logits

    def scoring_model(self) -> ScoringModel:
        return ScoringModel(tokenizer=self.tokenizer, hf_model=self.model)

    def generate(self, prompt: str, max_new_tokens: int = 128, decoder: Any = None) -> str:
        """Greedy generation through the same decode loop the benchmark measured; stops at EOS.
        Pass a decoder from `decoder()` to reuse its compiled graphs across calls."""
        import torch

        dec = decoder or self.decoder()
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids.to(self.device)
        eos = self.tokenizer.eos_token_id
        out: list[int] = []
        with torch.inference_mode():
            dec.reset(1, ids.shape[1] + max_new_tokens)
            tok = dec.prefill(ids)
            for _ in range(max_new_tokens):
                out.append(int(tok))
                if out[-1] == eos or len(out) == max_new_tokens:
                    break
                tok = dec.step(tok)
        return self.tokenizer.decode(out, skip_special_tokens=True)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def save(self, directory: str | Path) -> Path:
        """Write weights (safetensors), config, tokenizer and runtime settings."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        self.settings.write(directory)
        return directory


def load(directory: str | Path, settings: RuntimeSettings | None = None, device: str | None = None) -> TorchCandidate:
    """Load a saved candidate or artifact directory the way it was measured."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    directory = Path(directory)
    settings = settings or read_settings(directory)
    if device is not None:
        settings = replace(settings, device=device)
    if settings.quantization == "torchao-int4-gemlite":
        from optpipe.runtime import gemlite

        gemlite.register()
    model = AutoModelForCausalLM.from_pretrained(
        directory,
        dtype=torch_dtype(settings.dtype),
        attn_implementation=settings.attn_implementation,
        device_map=settings.device,  # quantized models refuse .to(); device_map places every kind
    )
    model.eval()
    if (settings.prune or {}).get("method") == "sparse24":  # masked by the prune pass: fast only on CUDA cc >= 8.0
        from optpipe.runtime.sparsity import to_semi_structured

        to_semi_structured(model)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return TorchCandidate(model, tokenizer, settings)
