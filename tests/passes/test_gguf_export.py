"""gguf_export: llama.cpp's converter/quantizer write a GGUF that transformers (`gguf_file=`) and
llama.cpp load back with the source's logits (F16 near-identical, Q8_0 small KL), BOS/EOS, RoPE
theta and chat template; the llama.cpp runtime decodes and scores from its own logits.

The tiny random Llama here uses the bundled SmolLM2 tokenizer: llama.cpp's converter identifies a
BPE pre-tokenizer by hashing its output and refuses tokenizers it does not know (the locally trained
tokenizer of conftest is one). Tests that need llama-cpp-python skip without it (the CPU-only
fallback: export still works, measuring says it is not measured). Default run: F16/Q8_0
export, F16 read back by transformers, metadata, F16/Q8_0 logits and decode in llama.cpp, the
not-measured error; `slow`: Q8_0 through transformers, Mistral, K-quants with and without imatrix, a
whole build measured in llama.cpp."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from optpipe.passes import get_pass
from optpipe.passes.gguf_export.tooling import converter_dir
from optpipe.runtime import load_candidate
from tests.conftest import pass_context, require_bundled_model

if converter_dir() is None:
    if os.environ.get("CI"):
        pytest.fail("CI must fetch llama.cpp's converter (python -m optpipe.passes.gguf_export.tooling)", pytrace=False)
    pytest.skip("llama.cpp's converter not fetched (python -m optpipe.passes.gguf_export.tooling)", allow_module_level=True)

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python not installed (extra 'llamacpp')")
TEXT = "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun. " * 3
GGUF = get_pass("gguf_export")


def kl(logits, ref) -> float:
    p, q = ref.float().log_softmax(-1), logits.float().log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1).mean())


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory) -> Path:
    """Tiny random Llama (hidden 256: rows K-quants can block) + the SmolLM2 tokenizer, RoPE theta not the default."""
    require_bundled_model()
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from optpipe.spec.model_source import resolve_model

    bundled = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(bundled.location, gguf_file=bundled.gguf_file)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True, rope_theta=100000.0,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    d = tmp_path_factory.mktemp("tiny-smol")
    LlamaForCausalLM(cfg).eval().save_pretrained(d)
    tok.save_pretrained(d)
    return d


def export_all(source_dir, tmp_path_factory, params) -> dict[str, Path]:
    """variant label -> saved candidate directory"""
    out = {}
    for label, p in GGUF.variants(params):
        cand = GGUF.apply(load_candidate(source_dir), p, pass_context(tmp_path_factory.mktemp("work")))
        out[label] = cand.save(tmp_path_factory.mktemp("gguf") / "model")
    return out


@pytest.fixture(scope="module")
def exported(source_dir, tmp_path_factory):
    """F16 and Q8_0: written by the converter itself, no llama-cpp-python needed (the fast CI round trip)."""
    return export_all(source_dir, tmp_path_factory, GGUF.Params(types=["F16", "Q8_0"]))


@pytest.fixture(scope="module")
def exported_k(source_dir, tmp_path_factory):
    """Q4_K_M with and without the importance matrix: llama.cpp's quantizer."""
    params = GGUF.Params(types=["Q4_K_M"], imatrix="both", calibration_samples=2, calibration_seq_len=64)
    return export_all(source_dir, tmp_path_factory, params)


@pytest.fixture(scope="module")
def reference(source_dir):
    src = load_candidate(source_dir)
    ids = torch.tensor([src.tokenizer.encode(TEXT, add_special_tokens=False)])
    with torch.inference_mode():
        return src, ids, src.logits(ids).float()


def test_variants_are_types_and_imatrix_only_for_k_quants():
    labels = [label for label, _ in GGUF.variants(GGUF.Params(types=["Q8_0", "Q4_K_M"], imatrix="both"))]
    assert labels == ["gguf:Q8_0", "gguf:Q4_K_M", "gguf:Q4_K_M+imatrix"]


def read_back(directory: Path, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file="model.gguf").eval()
    assert model.config.rope_parameters["rope_theta"] == 100000.0  # not silently the default
    with torch.inference_mode():
        return model(ids).logits.float()


def test_transformers_reads_back_f16(exported, reference):
    _, ids, ref = reference
    got = read_back(exported["gguf:F16"], ids)
    assert kl(got, ref) < 1e-5 and torch.equal(got.argmax(-1), ref.argmax(-1))


@pytest.mark.slow
def test_transformers_reads_back_q8_0(exported, reference):
    _, ids, ref = reference
    assert kl(read_back(exported["gguf:Q8_0"], ids), ref) < 1e-3


def test_tokenizer_metadata_carried_over(exported, reference):
    from gguf import GGUFReader

    src, _, _ = reference
    fields = GGUFReader(exported["gguf:F16"] / "model.gguf").fields

    def value(key):
        f = fields[key]
        return f.parts[f.data[0]].tolist()[0] if key.endswith("_id") else bytes(f.parts[f.data[0]]).decode()

    assert value("tokenizer.ggml.bos_token_id") == src.tokenizer.bos_token_id
    assert value("tokenizer.ggml.eos_token_id") == src.tokenizer.eos_token_id
    assert value("tokenizer.chat_template") == src.tokenizer.chat_template


def test_snippets_and_runtime_record(exported):
    d = exported["gguf:Q8_0"]
    server = (d / "llama-server.sh").read_text()
    assert "llama-server -m model.gguf" in server and "--ctx-size 2048" in server and os.access(d / "llama-server.sh", os.X_OK)
    modelfile = (d / "Modelfile").read_text()
    assert "FROM ./model.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    runtime = json.loads((d / "optpipe_runtime.json").read_text())
    assert runtime["format"] == "gguf" and runtime["gguf"]["type"] == "Q8_0" and runtime["gguf"]["measured"] is False


def test_unsupported_family_refused_by_name(tmp_path):
    from optpipe.spec.model_source import ResolvedModel

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    reasons = GGUF.model_requirements(GGUF.Params(), ResolvedModel("hf-dir", str(tmp_path)))
    assert reasons and "GPT2LMHeadModel" in reasons[0]
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    assert GGUF.model_requirements(GGUF.Params(), ResolvedModel("hf-dir", str(tmp_path))) == []


def test_missing_converter_is_a_plan_time_reason(monkeypatch, tmp_path):
    from optpipe.runtime.host_probe import detect_host
    from optpipe.spec.targets import load_target

    monkeypatch.setenv("OPTPIPE_LLAMA_CPP_DIR", str(tmp_path))
    reasons = GGUF.requirements(GGUF.Params(types=["F16"]), load_target("cpu-x86"), detect_host())
    assert any("convert_hf_to_gguf.py" in r for r in reasons)


@needs_llama_cpp
def test_llama_cpp_logits_match_the_source(exported, reference):
    _, ids, ref = reference
    for label, bound in (("gguf:F16", 1e-4), ("gguf:Q8_0", 2e-3)):
        got = load_candidate(exported[label]).logits(ids)
        assert got.shape == ref.shape
        assert kl(got, ref) < bound, (label, kl(got, ref))


@pytest.mark.slow
@needs_llama_cpp
def test_k_quants_in_llama_cpp(exported_k, reference):
    _, ids, ref = reference
    for label in ("gguf:Q4_K_M", "gguf:Q4_K_M+imatrix"):
        got = load_candidate(exported_k[label]).logits(ids)
        assert kl(got, ref) < 5e-2, (label, kl(got, ref))


@needs_llama_cpp
def test_llama_cpp_tokenizer_agrees_and_decode_matches_full_logits(exported, reference):
    src, ids, _ = reference
    cand = load_candidate(exported["gguf:F16"])
    assert cand.llm.tokenize(TEXT.encode(), add_bos=False, special=False) == ids[0].tolist()
    assert cand.settings.gguf["measured"] is True and cand.settings.gguf["threads"] >= 1
    dec = cand.decoder()
    dec.reset(1, 64)
    prompt = ids[:, :12]
    tok = dec.prefill(prompt)
    seq = torch.cat([prompt, tok], 1)
    for _ in range(6):
        tok = dec.step(tok)
        seq = torch.cat([seq, tok], 1)
    full = cand.logits(seq[:, :-1])
    assert torch.equal(full[0, 11:].argmax(-1), seq[0, 12:])


@pytest.mark.slow
@needs_llama_cpp
def test_imatrix_recorded_and_changes_the_weights(exported_k):
    exported = exported_k
    with_m = json.loads((exported["gguf:Q4_K_M+imatrix"] / "optpipe_runtime.json").read_text())["gguf"]
    without = json.loads((exported["gguf:Q4_K_M"] / "optpipe_runtime.json").read_text())["gguf"]
    assert with_m["imatrix"]["source"] == "wikitext-heldout" and with_m["imatrix"]["tensors"] == 14  # 7 linears x 2 layers
    assert without["imatrix"] is None
    a = (exported["gguf:Q4_K_M+imatrix"] / "model.gguf").read_bytes()
    b = (exported["gguf:Q4_K_M"] / "model.gguf").read_bytes()
    assert a != b and abs(len(a) - len(b)) < 1024  # same tensors and types; llama.cpp adds imatrix metadata keys


def test_without_llama_cpp_the_export_says_it_is_not_measured(exported, monkeypatch):
    """The CPU-only fallback: the F16/Q8_0 files are written; loading them to measure names what is missing."""
    from optpipe.errors import InvalidInputError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    with pytest.raises(InvalidInputError, match="not measured: llama.cpp .llama-cpp-python. is not installed"):
        load_candidate(exported["gguf:Q8_0"])


@pytest.mark.slow
@needs_llama_cpp
def test_build_measures_the_gguf_in_llama_cpp(source_dir, tmp_path):
    """Through the engine: the GGUF candidate is benchmarked by llama.cpp's decoder and scored from its
    logits (HellaSwag, perplexity, KL vs the torch baseline); threads/batch/context are in the manifest."""
    from optpipe.build.engine import build
    from optpipe.build.recipe import parse_recipe
    from tests.conftest import read_manifest, tiny_recipe_text

    out = tmp_path / "out"
    passes = "  - pass: gguf_export\n    types: [Q8_0]\n    context: 512\n"
    build(parse_recipe(tiny_recipe_text(source_dir, out, passes, stop="best")))
    m = read_manifest(out)
    gguf = m["candidates"][1]
    assert gguf["name"] == "gguf:Q8_0", gguf.get("error")
    meas = gguf["measurements"]
    assert meas["benchmark"]["decoder"] == "llama.cpp" and meas["benchmark"]["decode_tok_s"]["mean"] > 0
    assert {"type": "Q8_0", "measured": True, "context": 512, "batch": 512}.items() <= meas["runtime"]["gguf"].items()
    assert meas["runtime"]["gguf"]["threads"] >= 1
    assert meas["hellaswag"]["n"] == 12 and meas["perplexity"]["ppl"] > 1
    assert 0 <= meas["kl"]["mean"] < 0.01  # Q8_0 of the same weights: close to the baseline


@pytest.mark.slow
def test_mistral_family_round_trip(source_dir, tmp_path):
    """A second family through the same converter path (Mistral writes llama-architecture GGUFs)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, MistralConfig, MistralForCausalLM

    tok = AutoTokenizer.from_pretrained(source_dir)
    torch.manual_seed(1)
    cfg = MistralConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, rope_theta=50000.0,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    MistralForCausalLM(cfg).eval().save_pretrained(tmp_path / "src")
    tok.save_pretrained(tmp_path / "src")
    src = load_candidate(tmp_path / "src")
    out = GGUF.apply(src, GGUF.Params(types=["F16"]), pass_context(tmp_path / "work")).save(tmp_path / "gguf")
    ids = torch.tensor([tok.encode(TEXT, add_special_tokens=False)])
    back = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf").eval()
    assert back.config.rope_parameters["rope_theta"] == 50000.0
    with torch.inference_mode():
        assert kl(back(ids).logits, src.logits(ids)) < 1e-5


def test_plan_refuses_an_unsupported_family_before_any_work(tmp_path, tiny_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    from optpipe.build.plan import plan
    from optpipe.build.recipe import parse_recipe
    from optpipe.errors import InvalidInputError
    from tests.conftest import tiny_recipe_text

    model_dir = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=1, n_head=2)).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    recipe = parse_recipe(tiny_recipe_text(model_dir, tmp_path / "out", "  - pass: gguf_export\n    types: [F16]\n"))
    with pytest.raises(InvalidInputError, match="GPT2LMHeadModel is not a family gguf_export supports"):
        plan(recipe)
