"""ONNX candidates: an onnxruntime session over an exported decoder with KV cache, exposing the
`Candidate` protocol (decoder for the benchmark, logits for perplexity and HellaSwag scoring), so an
ONNX candidate is measured and scored by itself, not by its torch parent.

Directory layout is optimum's (`model.onnx` + external data, config.json, tokenizer, generation
config), so `optimum.onnxruntime.ORTModelForCausalLM.from_pretrained(dir)` loads it too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from optpipe.runtime.candidate import RuntimeSettings, ScoringModel, place_export

ONNX_FILE = "model.onnx"
# provider -> onnxruntime execution providers, first choice first (CUDA nodes ORT cannot place run on the CPU EP)
PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def make_session(path: Path, optimization: str = "all", providers: list[str] | None = None, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[optimization])
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"])


class OrtDecoder:
    """Greedy decode loop over the session: prefill once, then one token at a time with past KV."""

    name = "onnxruntime"

    def __init__(self, session, config):
        import numpy as np

        self.session = session
        self.np = np
        self.inputs = {i.name: i for i in session.get_inputs()}
        self.layers = sorted({int(n.split(".")[1]) for n in self.inputs if n.startswith("past_key_values.")})
        key0 = self.inputs[f"past_key_values.{self.layers[0]}.key"]
        self.kv_heads, self.head_dim = key0.shape[1], key0.shape[3]
        self.kv_dtype = np.float16 if "float16" in key0.type else np.float32
        self.outputs = [o.name for o in session.get_outputs()]
        self.past: dict[str, Any] = {}
        self.length = 0

    def reset(self, batch: int, max_len: int = 0) -> None:
        empty = self.np.zeros((batch, self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype)
        self.past = {f"past_key_values.{i}.{kind}": empty for i in self.layers for kind in ("key", "value")}
        self.length = 0

    def run(self, ids):
        """Feed `ids` (numpy int64 [b, s]) after what is cached; return logits [b, s, vocab]."""
        np = self.np
        b, s = ids.shape
        feed = {"input_ids": ids, **self.past}
        if "attention_mask" in self.inputs:
            feed["attention_mask"] = np.ones((b, self.length + s), dtype=np.int64)
        if "position_ids" in self.inputs:
            feed["position_ids"] = np.broadcast_to(np.arange(self.length, self.length + s, dtype=np.int64), (b, s)).copy()
        out = dict(zip(self.outputs, self.session.run(None, feed)))
        for name in self.past:
            self.past[name] = out[name.replace("past_key_values", "present")]
        self.length += s
        return out["logits"]

    def prefill(self, ids):
        import torch

        logits = self.run(ids.cpu().numpy().astype("int64"))
        return torch.from_numpy(logits[:, -1:].argmax(-1))

    def step(self, token):
        import torch

        logits = self.run(token.cpu().numpy().astype("int64"))
        return torch.from_numpy(logits[:, -1:].argmax(-1))

    def logits(self, ids):
        """Full-sequence logits (no cache) as a float32 torch tensor, for scoring."""
        import torch

        self.reset(ids.shape[0])
        return torch.from_numpy(self.run(ids.cpu().numpy().astype("int64")).astype("float32"))


@dataclass
class OnnxCandidate:
    """An exported decoder directory plus the session settings it is measured with."""

    directory: Path
    tokenizer: Any
    settings: RuntimeSettings  # format="onnx"
    session: Any = None
    temporary: bool = False  # a fresh export in a temp dir: save() moves it instead of copying GBs

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    @property
    def torch_model(self) -> None:
        return None

    def open(self) -> "OnnxCandidate":
        onnx = self.settings.onnx or {}
        provider = onnx.get("provider", "cpu")
        self.session = make_session(self.directory / ONNX_FILE, onnx.get("optimization", "all"), PROVIDERS[provider])
        if self.session.get_providers()[0] != PROVIDERS[provider][0]:  # ORT falls back to the CPU silently
            raise RuntimeError(
                f"onnxruntime did not start {PROVIDERS[provider][0]} (has {self.session.get_providers()}): "
                "install onnxruntime-gpu matching this CUDA, or use provider: cpu"
            )
        return self

    def decoder(self) -> OrtDecoder:
        if self.session is None:
            self.open()
        cfg = json.loads((self.directory / "config.json").read_text())
        return OrtDecoder(self.session, cfg)

    def logits(self, ids):
        """Full-sequence logits from ORT itself, for perplexity."""
        if getattr(self, "_scorer", None) is None:
            self._scorer = self.decoder()
        return self._scorer.logits(ids)

    def scoring_model(self) -> ScoringModel:
        """HellaSwag is scored from ORT's own logits (lm-eval's HFLM knows only torch models)."""
        scorer = self.decoder()  # its own session state, apart from the perplexity scorer
        return ScoringModel(tokenizer=self.tokenizer, logits=scorer.logits)

    def num_parameters(self) -> int:
        import onnx

        model = onnx.load(str(self.directory / ONNX_FILE), load_external_data=False)
        total = 0
        for init in model.graph.initializer:
            n = 1
            for d in init.dims:
                n *= d
            total += n
        return total

    def with_settings(self, **changes: Any) -> "OnnxCandidate":
        return OnnxCandidate(self.directory, self.tokenizer, replace(self.settings, **changes), self.session, self.temporary)

    def save(self, directory: str | Path) -> Path:
        """Move (a fresh export) or copy the exported files into `directory`, then write the runtime settings."""
        moved = self.temporary and Path(directory).resolve() != self.directory.resolve()
        directory = place_export(self.directory, directory, self.temporary)
        if moved:  # the temporary export now lives there
            self.directory, self.temporary = directory, False
        self.settings.write(directory)
        return directory


def load(directory: str | Path, settings: RuntimeSettings, device: str | None = None) -> OnnxCandidate:
    """Open a saved ONNX candidate (runs on the CPU execution provider; `device` is not used yet)."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    return OnnxCandidate(directory, AutoTokenizer.from_pretrained(directory), settings).open()
