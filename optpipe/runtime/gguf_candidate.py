"""GGUF candidates run by llama.cpp (llama-cpp-python): what a laptop, a Raspberry Pi or Ollama runs.

The benchmark times llama.cpp's own decode (one `llama_decode` per token, greedy over its logits),
and HellaSwag, perplexity and KL are scored from llama.cpp's own logits (a second context with
`logits_all`, made only when scoring starts, so the benchmark's memory and prefill are those of a
plain llama-server context). Token ids come from the transformers tokenizer saved beside the GGUF,
the same ids every other candidate of the build is fed (the round-trip test checks llama.cpp's
tokenizer agrees).

Directory layout: model.gguf, the tokenizer files, config.json of the source, optpipe_runtime.json
(format "gguf", settings.gguf = type, threads, batch, context, ...), and the deployment snippets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from optpipe.runtime.candidate import RuntimeSettings, ScoringModel, place_export

GGUF_FILE = "model.gguf"
DEFAULT_CONTEXT = 2048
DEFAULT_BATCH = 512


def default_threads() -> int:
    """llama.cpp's own default is half the logical CPUs; optpipe uses every CPU it may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def runtime_options(settings: RuntimeSettings) -> dict[str, int]:
    g = settings.gguf or {}
    return {
        "threads": int(g.get("threads") or default_threads()),
        "batch": int(g.get("batch") or DEFAULT_BATCH),
        "context": int(g.get("context") or DEFAULT_CONTEXT),
    }


def open_llama(path: Path, threads: int, batch: int, context: int, logits_all: bool = False):
    from llama_cpp import Llama

    return Llama(
        model_path=str(path),
        n_ctx=context,
        n_batch=batch,
        n_ubatch=batch,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=logits_all,
        verbose=False,
    )


class LlamaCppDecoder:
    """Greedy decode in llama.cpp: prefill the prompt in one decode, then one token per decode."""

    name = "llama.cpp"

    def __init__(self, llm):
        import numpy as np

        self.llm = llm
        self.np = np
        self.n_vocab = llm.n_vocab()

    def reset(self, batch: int, max_len: int = 0) -> None:
        if batch != 1:
            raise ValueError("the llama.cpp runtime is measured at batch 1 (as llama-server serves one sequence a slot)")
        if max_len > self.llm.n_ctx():
            raise ValueError(f"prompt + new tokens = {max_len} exceeds the llama.cpp context ({self.llm.n_ctx()})")
        self.llm.reset()  # n_tokens = 0: the next eval drops the KV cache past it

    def _next(self, tokens: list[int]):
        import llama_cpp
        import torch

        self.llm.eval(tokens)
        row = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        logits = self.np.ctypeslib.as_array(row, shape=(self.n_vocab,))
        return torch.tensor([[int(logits.argmax())]])

    def prefill(self, ids):
        return self._next([int(t) for t in ids[0].tolist()])

    def step(self, token):
        return self._next([int(token.reshape(-1)[0])])


class LlamaCppScorer:
    """Full-sequence logits from llama.cpp (a context with logits for every position)."""

    def __init__(self, path: Path, opts: dict[str, int]):
        self.path, self.opts = path, opts
        self.llm = None

    def logits(self, ids):
        import torch

        if ids.shape[0] != 1:
            return torch.cat([self.logits(ids[i : i + 1]) for i in range(ids.shape[0])])
        tokens = [int(t) for t in ids[0].tolist()]
        if self.llm is None or len(tokens) > self.llm.n_ctx():
            context = max(512, 1 << (len(tokens) - 1).bit_length())  # scores hold context x vocab floats
            self.llm = open_llama(self.path, self.opts["threads"], self.opts["batch"], context, logits_all=True)
        self.llm.reset()
        self.llm.eval(tokens)
        return torch.from_numpy(self.llm.scores[: len(tokens)].copy())[None]


@dataclass
class GgufCandidate:
    directory: Path
    tokenizer: Any
    settings: RuntimeSettings  # format="gguf"
    llm: Any = None
    temporary: bool = False  # a fresh export in a temp dir: save() moves it

    @property
    def path(self) -> Path:
        return self.directory / GGUF_FILE

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    @property
    def torch_model(self) -> None:
        return None

    def open(self) -> "GgufCandidate":
        """Load in llama.cpp and record the threads/batch/context it runs with."""
        opts = runtime_options(self.settings)
        self.llm = open_llama(self.path, opts["threads"], opts["batch"], opts["context"])
        import llama_cpp

        g = dict(self.settings.gguf or {}) | opts | {"llama_cpp_python": llama_cpp.__version__, "measured": True}
        self.settings = replace(self.settings, gguf=g)
        return self

    def decoder(self) -> LlamaCppDecoder:
        if self.llm is None:
            self.open()
        return LlamaCppDecoder(self.llm)

    def logits(self, ids):
        if getattr(self, "_scorer", None) is None:
            self._scorer = LlamaCppScorer(self.path, runtime_options(self.settings))
        return self._scorer.logits(ids)

    def scoring_model(self) -> ScoringModel:
        """HellaSwag from llama.cpp's own logits (lm-eval's HFLM knows only torch models)."""
        return ScoringModel(tokenizer=self.tokenizer, logits=self.logits)

    def num_parameters(self) -> int:
        if self.llm is None:
            self.open()
        return int(self.llm._model.n_params())  # llama_model_n_params (llama-cpp-python has no public wrapper)

    def with_settings(self, **changes: Any) -> "GgufCandidate":
        return GgufCandidate(self.directory, self.tokenizer, replace(self.settings, **changes), self.llm, self.temporary)

    def save(self, directory: str | Path) -> Path:
        """Move (a fresh export) or copy the exported files into `directory`, then write the runtime settings."""
        moved = self.temporary and Path(directory).resolve() != self.directory.resolve()
        directory = place_export(self.directory, directory, self.temporary)
        if moved:  # the temporary export now lives there
            self.directory, self.temporary = directory, False
        self.settings.write(directory)
        return directory


def load(directory: str | Path, settings: RuntimeSettings, device: str | None = None) -> GgufCandidate:
    """Open a saved GGUF candidate in llama.cpp (CPU; `device` is not used: llama-cpp-python's CPU build)."""
    import importlib.util

    from transformers import AutoTokenizer

    directory = Path(directory)
    if importlib.util.find_spec("llama_cpp") is None:
        from optpipe.errors import InvalidInputError

        raise InvalidInputError(
            f"{directory / GGUF_FILE} was exported but is not measured: llama.cpp (llama-cpp-python) is not installed "
            "here; pip install 'optpipe[llamacpp]' (or run the GGUF with llama-server / Ollama: see llama-server.sh, Modelfile)"
        )
    return GgufCandidate(directory, AutoTokenizer.from_pretrained(directory), settings).open()
