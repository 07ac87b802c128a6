"""gguf_export: convert the candidate to GGUF with llama.cpp's own converter and quantizer, and measure
it in llama.cpp (llama-cpp-python): what laptops, Raspberry Pis and Ollama deploy. Each GGUF type is
a candidate of its own.

F16/BF16/Q8_0 are written by `convert_hf_to_gguf.py` directly; the K-quants (Q6_K, Q5_K_M, Q4_K_M)
are converted to the parent's float type first, then quantized by `llama_model_quantize`, optionally
weighted by an importance matrix from held-out calibration text (imatrix.py). tooling.py says where
the converter comes from and why. A `llama-server` command and an Ollama Modelfile are written beside
model.gguf. Without llama-cpp-python the float and Q8_0 types still export; the measurement then
fails saying llama.cpp is not installed, and the K-quants are refused at plan time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from optpipe.errors import PassFailed
from optpipe.passes.base import Pass, PassParams
from optpipe.passes.gguf_export.tooling import CONVERTER_TYPES, SETUP_HINT, converter_dir, llama_cpp_version

if TYPE_CHECKING:
    from optpipe.spec.model_source import ResolvedModel

GgufType = Literal["F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_1", "Q4_0"]
# types llama.cpp's quantizer writes (the importance matrix applies to them); Q4_0/Q4_1 match sources shipped so
K_QUANTS = ("Q6_K", "Q5_K_M", "Q4_K_M", "Q4_1", "Q4_0")
# transformers architectures llama.cpp's converter and runtime handle, and their GGUF names
FAMILIES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "GemmaForCausalLM": "gemma",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
}
INTERMEDIATE = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}  # what a K-quant is quantized from: the parent's own precision


class GgufExportParams(PassParams):
    kind: Literal["gguf_export"] = Field("gguf_export", alias="pass")
    types: list[GgufType] = Field(["Q4_K_M"], min_length=1, description="GGUF types; alternatives, each a candidate.")
    imatrix: Literal["off", "on", "both"] = Field(
        "off",
        description="K-quants: weigh rounding by an importance matrix from held-out WikiText-2 text (disjoint from "
        "the perplexity tokens); 'both' makes each K-quant with and without it.",
    )
    calibration_samples: int = Field(16, ge=1, description="imatrix: calibration sequences.")
    calibration_seq_len: int = Field(512, ge=16, description="imatrix: tokens per calibration sequence.")
    threads: int | None = Field(None, ge=1, description="llama.cpp threads (default: every CPU this process may use).")
    batch: int = Field(512, ge=1, description="llama.cpp batch (n_batch = n_ubatch): prompt tokens per decode call.")
    context: int = Field(2048, ge=64, description="llama.cpp context length (n_ctx) measured and written to the snippets.")


class GgufExport(Pass):
    name = "gguf_export"
    variant_label = "gguf"
    Params = GgufExportParams
    summary = (
        "Convert to GGUF with llama.cpp's converter/quantizer and run in llama.cpp; F16/BF16/Q8_0/Q6_K/Q5_K_M/Q4_K_M variants."
    )
    requires = "llama.cpp's converter (`python -m optpipe.passes.gguf_export.tooling`), sentencepiece; llama-cpp-python (extra 'llamacpp') to quantize K-types and measure"
    version = 1

    @classmethod
    def variants(cls, params):
        out = []
        for t in params.types:
            modes = {"off": ["off"], "on": ["on"], "both": ["off", "on"]}[params.imatrix] if t in K_QUANTS else ["off"]
            for m in modes:
                label = f"gguf:{t}" + ("+imatrix" if m == "on" else "")
                out.append((label, params.model_copy(update={"types": [t], "imatrix": m})))
        return out

    @classmethod
    def requirements(cls, params, target, env) -> list[str]:
        reasons = []
        if converter_dir() is None:
            reasons.append(f"llama.cpp's convert_hf_to_gguf.py is not installed: {SETUP_HINT}")
        if not env.has_package("sentencepiece"):
            reasons.append("llama.cpp's converter needs sentencepiece (pip install 'optpipe[gguf]')")
        k = [t for t in params.types if t in K_QUANTS]
        if k and llama_cpp_version() is None:
            reasons.append(f"{', '.join(k)} need llama.cpp's quantizer: pip install 'optpipe[llamacpp]' (llama-cpp-python)")
        if target.has_cuda:
            reasons.append("optpipe measures GGUF in llama-cpp-python's CPU build; a CUDA target's GGUF speed is not measured")
        return reasons

    @classmethod
    def model_requirements(cls, params, model: "ResolvedModel") -> list[str]:
        """The recipe's model must be a family llama.cpp's converter and runtime both handle."""
        arch = source_architecture(model)
        if arch is not None and arch not in FAMILIES and arch not in FAMILIES.values():
            return [f"{arch} is not a family gguf_export supports (supported: {', '.join(sorted(set(FAMILIES)))})"]
        return []

    @classmethod
    def apply(cls, candidate, params, ctx):
        from optpipe.passes.gguf_export.deploy import write_snippets
        from optpipe.runtime.candidate import RuntimeSettings
        from optpipe.runtime.gguf_candidate import GGUF_FILE, GgufCandidate, default_threads

        (gguf_type,) = params.types
        settings = candidate.settings
        if settings.format != "transformers" or settings.quantization:
            raise PassFailed("gguf_export needs an unquantized transformers candidate (put it before quantize / onnx_export)")
        arch = (getattr(candidate.torch_model.config, "architectures", None) or ["?"])[0]
        if arch not in FAMILIES:
            raise PassFailed(f"{arch} is not a family gguf_export supports (supported: {', '.join(FAMILIES)})")
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        src = Path(tempfile.mkdtemp(prefix="gguf-src-", dir=ctx.work_dir))
        out = Path(tempfile.mkdtemp(prefix="gguf-", dir=ctx.work_dir))
        threads = params.threads or default_threads()
        info: dict = {"type": gguf_type, "converter": str(converter_dir()), "llama_cpp_python": llama_cpp_version()}
        try:
            candidate.save(src)
            carry_sentencepiece(candidate.tokenizer, src)
            if gguf_type in CONVERTER_TYPES:
                convert_to(src, out / GGUF_FILE, CONVERTER_TYPES[gguf_type])
            else:
                info["quantized_from"] = INTERMEDIATE[settings.dtype]
                info["imatrix"] = quantize_k(candidate, params, ctx, src, out / GGUF_FILE, gguf_type, threads)
            shutil.copy(src / "config.json", out / "config.json")
        finally:
            shutil.rmtree(src, ignore_errors=True)
        candidate.tokenizer.save_pretrained(out)
        tok = candidate.tokenizer
        stop = [tok.eos_token] if tok.eos_token else []
        write_snippets(out, GGUF_FILE, params.threads, params.batch, params.context, stop)
        info |= {"threads": params.threads, "batch": params.batch, "context": params.context}
        info["measured"] = False  # the llama.cpp loader sets it (and the threads it used) when it runs
        new = RuntimeSettings(format="gguf", dtype="fp32", attn_implementation="llama.cpp", device="cpu", gguf=info)
        return GgufCandidate(out, candidate.tokenizer, new, temporary=True)

    @classmethod
    def weights_after(cls, params, parent):
        return None  # GGUF block formats are not in the forecast's table


def carry_sentencepiece(tokenizer, directory: Path) -> None:
    """Put the source's SentencePiece `tokenizer.model` beside the saved candidate: transformers 5 saves
    only tokenizer.json, and llama.cpp's converter reads Gemma/Gemma2 vocabularies (and Gemma3's, when
    the source has one) from tokenizer.model alone."""
    origin = getattr(tokenizer, "name_or_path", None)
    model = Path(origin) / "tokenizer.model" if origin else None
    if model is not None and model.is_file() and not (directory / "tokenizer.model").exists():
        shutil.copy(model, directory / "tokenizer.model")


def convert_to(src: Path, outfile: Path, outtype: str) -> None:
    from optpipe.passes.gguf_export.tooling import convert

    convert(src, outfile, outtype)


def quantize_k(candidate, params, ctx, src: Path, outfile: Path, gguf_type: str, threads: int) -> dict | None:
    """Convert at the parent's precision, then llama.cpp's quantizer (with an importance matrix if asked)."""
    from optpipe.passes.gguf_export.tooling import quantize

    intermediate = outfile.with_name("intermediate.gguf")
    convert_to(src, intermediate, INTERMEDIATE[candidate.settings.dtype])
    try:
        matrix, info = None, None
        if params.imatrix == "on":
            matrix, info = importance(candidate, params, ctx, intermediate)
        quantize(intermediate, outfile, gguf_type, threads, matrix)
    finally:
        intermediate.unlink(missing_ok=True)
    return info


def importance(candidate, params, ctx, gguf_path: Path):
    from optpipe.forecast.gguf_check import read_header
    from optpipe.passes.gguf_export.imatrix import gguf_linear_names, importance_matrix
    from optpipe.passes.quantize.calibration import wikitext_heldout

    strings, tensors = read_header(gguf_path)
    arch, written = strings["general.architecture"], set(tensors)
    model = candidate.torch_model
    calib = wikitext_heldout(
        candidate.tokenizer, params.calibration_samples, params.calibration_seq_len, ctx.evaluation.perplexity_tokens
    )
    names = gguf_linear_names(model, arch, written)
    if not names:
        raise PassFailed(f"imatrix: no linear layer of this {arch} model maps to a GGUF tensor")
    matrix = importance_matrix(model, calib.ids, names)
    return matrix, calib.info | {"tensors": len(matrix), "computed_by": "optpipe (torch hooks: mean x^2 per input column)"}


def source_architecture(model: "ResolvedModel") -> str | None:
    """The recipe model's architecture, from config.json or the GGUF header; None when unknown (hub)."""
    root = Path(model.location)
    try:
        if model.gguf_file:
            from optpipe.forecast.gguf_check import read_header

            return read_header(root / model.gguf_file)[0].get("general.architecture")
        if (root / "config.json").is_file():
            return (json.loads((root / "config.json").read_text()).get("architectures") or [None])[0]
    except (OSError, ValueError):  # an unreadable source is reported by the plan's own model checks
        return None
    return None
