"""What a candidate is at run time, and how it is saved and loaded back.

A torch candidate is a transformers causal LM + tokenizer + the runtime settings that are not part
of the weights (attention implementation, device). Saved as a standard transformers directory plus
`optpipe_runtime.json`; stock `AutoModelForCausalLM.from_pretrained(dir)` loads the weights,
`optpipe.load(dir)` also re-applies the runtime settings.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

RUNTIME_FILE = "optpipe_runtime.json"
DTYPES = ("fp32", "fp16", "bf16")


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def dtype_name(dtype: Any) -> str:
    import torch

    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


@dataclass(frozen=True)
class RuntimeSettings:
    """Settings that change what runs but are not stored in the weights."""

    format: str = "transformers"
    dtype: str = "fp32"
    attn_implementation: str = "sdpa"
    device: str = "cpu"
    compile: dict[str, Any] | None = None  # set by the compile pass: {"mode", "max_cache_len", "step", ...}
    quantization: str | None = None  # set by the quantize pass (the weights carry its config)
    calibration: dict[str, Any] | None = None  # GPTQ/AWQ: source, token range or file sha256, samples
    onnx: dict[str, Any] | None = None  # format "onnx": {"optimization", "quantization", "exporter"}

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


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

    def decoder(self):
        """The greedy decode loop these runtime settings ask for (compiled when the compile pass ran)."""
        from optpipe.decode import make_decoder

        return make_decoder(self)

    def logits(self, ids):
        """Full-sequence logits, for perplexity."""
        return self.model(input_ids=ids.to(self.device)).logits

    def scoring_lm(self, batch_size: int):
        """The lm-eval LM that scores this candidate (HellaSwag)."""
        from optpipe.evaluate.hellaswag import hf_lm

        return hf_lm(self.model, self.tokenizer, batch_size)

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
        (directory / RUNTIME_FILE).write_text(json.dumps(self.settings.to_dict(), indent=2) + "\n")
        return directory


def read_settings(directory: str | Path) -> RuntimeSettings:
    path = Path(directory) / RUNTIME_FILE
    if not path.exists():
        return RuntimeSettings()
    return RuntimeSettings(**json.loads(path.read_text()))


def load_candidate(directory: str | Path, device: str | None = None) -> TorchCandidate:
    """Load a saved candidate or artifact directory the way it was measured."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    directory = Path(directory)
    settings = read_settings(directory)
    if device is not None:
        settings = replace(settings, device=device)
    if settings.quantization == "torchao-int4-gemlite":
        from optpipe import gemlite_support

        gemlite_support.register()
    model = AutoModelForCausalLM.from_pretrained(
        directory,
        dtype=torch_dtype(settings.dtype),
        attn_implementation=settings.attn_implementation,
        device_map=settings.device,  # quantized models refuse .to(); device_map places every kind
    )
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return TorchCandidate(model, tokenizer, settings)


def load_any(directory: str | Path, device: str | None = None):
    """A saved candidate of any format (torch/transformers or onnx), ready to measure."""
    settings = read_settings(directory)
    if settings.format == "onnx":
        from optpipe.onnx_runtime import load_onnx_candidate

        return load_onnx_candidate(directory, settings)
    return load_candidate(directory, device=device)


def directory_size_bytes(directory: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def weights_size_bytes(directory: str | Path) -> int:
    """Bytes of weight files only (what a deployment ships and loads)."""
    exts = {".safetensors", ".bin", ".onnx", ".gguf", ".pt", ".pth", ".data"}
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file() and (p.suffix in exts or p.name.endswith(".onnx_data")))
