"""gguf_export per family: a tiny random Mistral, Qwen2, Gemma, Gemma2 and Gemma3 through llama.cpp's converter
(F16 and Q8_0), read back by transformers (`gguf_file=`) and by llama.cpp through optpipe's runtime,
logits compared with the source's; BOS/EOS ids and chat template in the GGUF equal the source's.
(Llama: test_gguf_export.py.) Mistral uses the bundled SmolLM2 tokenizer, as the Llama test does.

Tokenizers: the converter names a BPE pre-tokenizer by hashing its output and refuses unknown ones,
and transformers 5 loads any `qwen2` model's tokenizer as Qwen2Tokenizer (Qwen2's pre-tokenizer over
whatever vocabulary), so the SmolLM2 tokenizer is refused for Qwen2; the Qwen2 model gets the real
Qwen2 vocabulary from llama.cpp's own test file (models/ggml-vocab-qwen2.gguf, kept with the
converter). Gemma reads SentencePiece: a 1,000-piece model trained here on WikiText in a fraction of a
second, saved as the source's tokenizer.model like a real Gemma checkpoint. Gemma sources are loaded
the way a build loads its model (optpipe.runtime.source.load_model): Gemma2 refuses sdpa.
Gemma2 runs by default (~35 s: two conversions); Mistral (~1 min), Qwen2 (~2 min: its 151k-token vocabulary), Gemma
and Gemma3 (~20 s each) are `slow`."""

from __future__ import annotations

import bz2
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from optpipe.passes import get_pass
from optpipe.passes.gguf_export.tooling import converter_dir
from tests.conftest import pass_context, require_bundled_model

if converter_dir() is None:
    pytest.skip("llama.cpp's converter not fetched (python -m optpipe.passes.gguf_export.tooling)", allow_module_level=True)

GGUF = get_pass("gguf_export")
TEXT = "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun. " * 3
TEMPLATE = "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")


def kl(logits, ref) -> float:
    p, q = ref.float().log_softmax(-1), logits.float().log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def qwen2_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    vocab = converter_dir() / "models" / "ggml-vocab-qwen2.gguf"
    if not vocab.is_file():
        pytest.skip("llama.cpp's Qwen2 test vocabulary not kept: re-run python -m optpipe.passes.gguf_export.tooling")
    return AutoTokenizer.from_pretrained(vocab.parent, gguf_file=vocab.name)  # carries Qwen2's own chat template


def smollm2_tokenizer(directory: Path):
    """The bundled SmolLM2 tokenizer (a BPE hash the converter knows, with a chat template), as for Llama."""
    from transformers import AutoTokenizer

    from optpipe.spec.model_source import resolve_model

    require_bundled_model()
    bundled = resolve_model("smollm2-135m")
    return AutoTokenizer.from_pretrained(bundled.location, gguf_file=bundled.gguf_file)


def gemma_tokenizer(directory: Path):
    """A SentencePiece model trained on WikiText (Gemma's special pieces at Gemma's ids), with a chat template."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    from optpipe.evaluate.data import WIKITEXT_FILE

    directory.mkdir(parents=True, exist_ok=True)
    lines = [line for line in bz2.open(WIKITEXT_FILE, "rt").read(300_000).splitlines() if line.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(directory / "tokenizer"), vocab_size=1000, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        byte_fallback=True, user_defined_symbols=["<start_of_turn>", "<end_of_turn>"], add_dummy_prefix=False, minloglevel=2,
    )  # fmt: skip
    (directory / "tokenizer_config.json").write_text('{"tokenizer_class": "GemmaTokenizer", "add_bos_token": true}')
    tok = AutoTokenizer.from_pretrained(directory)
    tok.chat_template = TEMPLATE
    return tok


def make_model(family: str, tok):
    import transformers as tf

    common = dict(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    # Gemma: head_dim 256 = query_pre_attn_scalar, as in the real 2B/9B/1B-4B-12B models (llama.cpp derives the
    # attention scale from head_dim and transformers' GGUF loader leaves query_pre_attn_scalar at its default 256)
    gemma = dict(head_dim=256, query_pre_attn_scalar=256)
    return {
        "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(**common, rope_theta=50000.0)),
        "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**common, rope_theta=50000.0)),
        "gemma": lambda: tf.GemmaForCausalLM(tf.GemmaConfig(**common, head_dim=256)),
        "gemma2": lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(**common, **gemma, sliding_window=512)),
        "gemma3": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**common, **gemma, sliding_window=512)),
    }[family]().eval()


GGUF_ARCH = {"mistral": "llama"}  # llama.cpp runs Mistral as a Llama
SLOW = pytest.mark.slow
FAMILIES = [
    pytest.param("mistral", marks=SLOW),
    pytest.param("qwen2", marks=SLOW),
    pytest.param("gemma", marks=SLOW),
    "gemma2",
    pytest.param("gemma3", marks=SLOW),
]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    """(family, source candidate, token ids, source logits, {F16, Q8_0: saved GGUF candidate directory})"""
    from optpipe.runtime.candidate import RuntimeSettings
    from optpipe.runtime.source import load_model
    from optpipe.runtime.torch_candidate import TorchCandidate
    from optpipe.spec.model_source import ResolvedModel

    name = request.param
    root = tmp_path_factory.mktemp(name)
    tok = {"mistral": smollm2_tokenizer, "qwen2": qwen2_tokenizer}.get(name, lambda d: gemma_tokenizer(d / "sp"))(root)
    torch.manual_seed(0)
    make_model(name, tok).save_pretrained(root / "src")
    tok.save_pretrained(root / "src")
    if name.startswith("gemma"):  # a real Gemma checkpoint ships tokenizer.model; transformers 5 saves only tokenizer.json
        shutil.copy(root / "sp" / "tokenizer.model", root / "src")
    model, tokenizer = load_model(ResolvedModel("hf-dir", str(root / "src")))  # as a build loads its model
    src = TorchCandidate(model, tokenizer, RuntimeSettings(attn_implementation=model.config._attn_implementation))
    ids = torch.tensor([tokenizer.encode(TEXT, add_special_tokens=False)])
    with torch.inference_mode():
        ref = src.logits(ids).float()
    out = {}
    for t in ("F16", "Q8_0"):
        cand = GGUF.apply(src, GGUF.Params(types=[t]), pass_context(root / f"work-{t}"))
        out[t] = cand.save(root / f"gguf-{t}")
    return name, src, ids, ref, out


def test_family_architecture_and_chat_template_carried_over(family):
    from optpipe.forecast.gguf_check import read_header

    name, src, _, _, out = family
    strings, _ = read_header(out["F16"] / "model.gguf")  # (gguf's GGUFReader takes 45 s on Qwen2's 151k-token vocab)
    assert strings["general.architecture"] == GGUF_ARCH.get(name, name)
    assert src.tokenizer.chat_template and strings["tokenizer.chat_template"] == src.tokenizer.chat_template


def test_family_read_back_by_transformers(family):
    from transformers import AutoModelForCausalLM

    name, _, ids, ref, out = family
    if name == "gemma":  # transformers' GGUF loader has no `gemma` architecture (gemma2/3 only); llama.cpp loads it
        with pytest.raises(ValueError, match="architecture gemma is not supported"):
            AutoModelForCausalLM.from_pretrained(out["F16"], gguf_file="model.gguf")
        return
    for t, bound in (("F16", 1e-4), ("Q8_0", 2e-3)):
        back = AutoModelForCausalLM.from_pretrained(out[t], gguf_file="model.gguf").eval()
        with torch.inference_mode():
            got = back(ids).logits.float()
        assert kl(got, ref) < bound, (name, t, kl(got, ref))
    if name in ("mistral", "qwen2"):
        assert back.config.rope_parameters["rope_theta"] == 50000.0  # not silently the default


@needs_llama_cpp
def test_family_in_llama_cpp(family):
    """Logits through optpipe's llama.cpp runtime; BOS/EOS as llama.cpp reads them from the GGUF."""
    from optpipe.runtime import load_candidate

    name, src, ids, ref, out = family
    for t, bound in (("F16", 1e-4), ("Q8_0", 2e-3)):
        cand = load_candidate(out[t])
        assert cand.settings.format == "gguf"
        got = cand.logits(ids)
        assert got.shape == ref.shape and kl(got, ref) < bound, (name, t, kl(got, ref))
    assert (cand.llm.token_bos(), cand.llm.token_eos()) == (src.tokenizer.bos_token_id, src.tokenizer.eos_token_id)
    assert cand.llm.tokenize(TEXT.encode(), add_bos=False, special=False) == ids[0].tolist()
