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
    if providers and "CUDAExecutionProvider" in providers:
        import torch  # noqa: F401  # loads the CUDA and cuDNN libraries of torch's wheels, which onnxruntime-gpu then finds
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[optimization])
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"])


class OrtDecoder:
    """Greedy decode loop over the session: prefill once, then one token at a time with past KV.

    Two ways to feed the session, same tokens and logits:
    - `device=None`: numpy in and out; the KV cache goes through host memory every step. Right for
      the CPU EP, where host memory is the device.
    - `device="cuda"` (or "cpu"): IO binding. The KV cache stays as ORT values on `device` between
      steps (present -> past without a copy), logits are written into a torch tensor there and only
      the argmax token comes back to the host; a host round trip of the whole cache per token would
      otherwise dominate CUDA timing. The same code on "cpu" is what tests check against numpy.
    """

    name = "onnxruntime"

    def __init__(self, session, config, device: str | None = None):
        import numpy as np

        self.session = session
        self.np = np
        self.inputs = {i.name: i for i in session.get_inputs()}
        self.layers = sorted({int(n.split(".")[1]) for n in self.inputs if n.startswith("past_key_values.")})
        key0 = self.inputs[f"past_key_values.{self.layers[0]}.key"]
        self.kv_heads, self.head_dim = key0.shape[1], key0.shape[3]
        self.kv_dtype = np.float16 if "float16" in key0.type else np.float32
        logits = next(o for o in session.get_outputs() if o.name == "logits")
        self.logits_dtype = np.float16 if "float16" in logits.type else np.float32  # fp16 graphs may keep fp32 logits
        self.vocab = logits.shape[-1] if isinstance(logits.shape[-1], int) else config["vocab_size"]
        self.outputs = [o.name for o in session.get_outputs()]
        self.device = device
        self.ort_device = (device or "cpu").split(":")[0]
        self.device_id = int(device.split(":")[1]) if device and ":" in device else 0
        self.past: dict[str, Any] = {}
        self.length = 0

    def reset(self, batch: int, max_len: int = 0) -> None:
        empty = self.np.zeros((batch, self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype)
        if self.device is not None:
            import onnxruntime as ort

            self._empty = empty  # a CPU OrtValue wraps the array's memory: keep it alive
            empty = ort.OrtValue.ortvalue_from_numpy(empty, self.ort_device, self.device_id)
        self.past = {f"past_key_values.{i}.{kind}": empty for i in self.layers for kind in ("key", "value")}
        self.length = 0

    def _small_inputs(self, ids) -> dict[str, Any]:
        """input_ids, and the attention mask and positions the graph asks for (int64, on the host)."""
        np = self.np
        b, s = ids.shape
        feed = {"input_ids": ids}
        if "attention_mask" in self.inputs:
            feed["attention_mask"] = np.ones((b, self.length + s), dtype=np.int64)
        if "position_ids" in self.inputs:
            feed["position_ids"] = np.broadcast_to(np.arange(self.length, self.length + s, dtype=np.int64), (b, s)).copy()
        return feed

    def run(self, ids):
        """Feed `ids` (numpy int64 [b, s]) after what is cached; return logits [b, s, vocab] as a torch
        tensor (on the host for numpy feeds, on `device` with IO binding)."""
        import torch

        out = self._run_numpy(ids) if self.device is None else self._run_bound(ids)
        self.length += ids.shape[1]
        return out if isinstance(out, torch.Tensor) else torch.from_numpy(out)

    def _run_numpy(self, ids):
        out = dict(zip(self.outputs, self.session.run(None, {**self._small_inputs(ids), **self.past})))
        for name in self.past:
            self.past[name] = out[name.replace("past_key_values", "present")]
        return out["logits"]

    def _run_bound(self, ids):
        import torch

        bind = self.session.io_binding()
        for name, value in self._small_inputs(ids).items():
            bind.bind_cpu_input(name, value)  # a few int64s: ORT copies them where the graph needs them
        for name, value in self.past.items():
            bind.bind_ortvalue_input(name, value)
        b, s = ids.shape
        tdtype = torch.float16 if self.logits_dtype == self.np.float16 else torch.float32
        logits = torch.empty((b, s, self.vocab), dtype=tdtype, device=torch.device(self.ort_device, self.device_id))
        bind.bind_output(
            "logits",
            self.ort_device,
            self.device_id,
            element_type=self.logits_dtype,
            shape=list(logits.shape),
            buffer_ptr=logits.data_ptr(),
        )
        names = list(self.past)
        for name in names:  # ORT allocates each present on the device; it becomes the next step's past
            bind.bind_output(name.replace("past_key_values", "present"), self.ort_device, self.device_id)
        self.session.run_with_iobinding(bind)
        bind.synchronize_outputs()  # ORT's stream is done before torch reads the logits
        present = bind.get_outputs()[1:]  # in binding order, after logits
        self.past = dict(zip(names, present))
        return logits

    def prefill(self, ids):
        return self.run(ids.cpu().numpy().astype("int64"))[:, -1:].argmax(-1).cpu()

    def step(self, token):
        return self.run(token.cpu().numpy().astype("int64"))[:, -1:].argmax(-1).cpu()

    def logits(self, ids):
        """Full-sequence logits (no cache) as a float32 torch tensor on the host, for scoring."""
        self.reset(ids.shape[0])
        return self.run(ids.cpu().numpy().astype("int64")).float().cpu()


@dataclass
class OnnxCandidate:
    """An exported decoder directory plus the session settings it is measured with."""

    directory: Path
    tokenizer: Any
    settings: RuntimeSettings  # format="onnx"
    session: Any = None
    temporary: bool = False  # a fresh export in a temp dir: save() moves it instead of copying GBs

    @property
    def provider(self) -> str:
        return (self.settings.onnx or {}).get("provider", "cpu")

    @property
    def device(self):
        """Where the decoder's KV cache and logits live: the GPU for the CUDA EP (the benchmark then
        synchronizes and reads GPU memory), else the host."""
        import torch

        return torch.device("cuda" if self.provider == "cuda" else "cpu")

    @property
    def torch_model(self) -> None:
        return None

    def open(self) -> "OnnxCandidate":
        onnx = self.settings.onnx or {}
        provider = self.provider
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
        return OrtDecoder(self.session, cfg, self.binding_device())

    def binding_device(self) -> str | None:
        """IO binding on the CUDA EP (KV cache stays on the GPU), numpy feeds on the CPU EP; the runtime
        settings' `onnx.io_binding` overrides either (smoke runs bind on the CPU, a GPU run can time numpy feeds)."""
        if not (self.settings.onnx or {}).get("io_binding", self.provider == "cuda"):
            return None
        return "cuda" if self.provider == "cuda" else "cpu"

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
    """Open a saved ONNX candidate on the execution provider its settings name (`onnx.provider`: cpu or
    cuda); `device` is not used: the provider is part of what was built and measured."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    return OnnxCandidate(directory, AutoTokenizer.from_pretrained(directory), settings).open()
