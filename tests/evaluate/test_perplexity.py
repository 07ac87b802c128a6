import math

import pytest
import torch

from optpipe.evaluate.perplexity import bos_prefix, evaluate_perplexity, strided_windows, wikitext_ids
from tests.conftest import make_tokenizer


@pytest.mark.parametrize("n, window, stride", [(1000, 256, 128), (1000, 256, 256), (100, 256, 128), (513, 128, 32)])
def test_windows_score_every_token_once(n, window, stride):
    scored = []
    for begin, end, k in strided_windows(n, window, stride):
        assert 0 < k <= end - begin - 1 and end - begin <= window
        scored.extend(range(end - k, end))
    if stride < window:
        assert scored == list(range(1, n))
    else:  # stride == window: each window's first token has no context inside the window
        assert len(scored) == len(set(scored))


def test_single_window_matches_hf_loss(tiny_candidate):
    ids = wikitext_ids(tiny_candidate.tokenizer, 200)
    assert ids.numel() == 200
    model = tiny_candidate.model
    res = evaluate_perplexity(lambda x: model(input_ids=x).logits, ids, window=256, stride=128)
    with torch.inference_mode():
        loss = model(input_ids=ids.unsqueeze(0), labels=ids.unsqueeze(0)).loss
    assert res.tokens_scored == 199
    assert res.ppl == pytest.approx(math.exp(float(loss)), rel=1e-4)


def test_strided_uses_context(tiny_candidate):
    ids = wikitext_ids(tiny_candidate.tokenizer, 600)
    model = tiny_candidate.model
    res = evaluate_perplexity(lambda x: model(input_ids=x).logits, ids, window=256, stride=128)
    assert res.tokens_scored == 599 and len(res.window_nll) == len(res.window_tokens)
    assert math.exp(sum(res.window_nll) / sum(res.window_tokens)) == pytest.approx(res.ppl)


def test_kl_is_zero_for_itself_and_matches_closed_form():
    from optpipe.evaluate.kl import LogprobRecorder, kl_from_reference

    p = torch.log_softmax(torch.tensor([[0.0, 0.0], [0.0, 0.0]]), -1)
    q = torch.log(torch.tensor([[0.9, 0.1], [0.5, 0.5]]))
    r = kl_from_reference(p, q)
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # KL(p || q) of the first row
    assert r.n == 2 and r.mean == pytest.approx(expected / 2) and r.max == pytest.approx(expected)
    assert kl_from_reference(q, q).mean == 0.0
    rec = LogprobRecorder(3)
    rec(torch.zeros(2, 5)), rec(torch.ones(2, 5)), rec(torch.ones(4, 5))
    assert rec.count == 3 and rec.tensor().shape == (3, 5) and rec.tensor()[2].eq(1).all()
    with pytest.raises(ValueError, match="same positions"):
        kl_from_reference(p, q[:1])


@pytest.fixture(scope="module")
def bos_tokenizer():
    """The tiny tokenizer made to start every text with BOS, as Llama-3's, Gemma's and Mistral's do."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = make_tokenizer().backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", backend.token_to_id("<|endoftext|>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def test_bos_follows_the_tokenizer(tiny_tokenizer, bos_tokenizer):
    assert bos_tokenizer("x").input_ids[0] == bos_tokenizer.bos_token_id  # the fixture really adds it
    assert bos_prefix(bos_tokenizer) == bos_tokenizer.bos_token_id
    assert tiny_tokenizer.bos_token_id is None and bos_prefix(tiny_tokenizer) is None
    no_bos = make_tokenizer()  # a BOS token that the tokenizer never adds by itself: nothing prepended
    no_bos.bos_token = "<|endoftext|>"
    assert no_bos.bos_token_id is not None and bos_prefix(no_bos) is None


def test_bos_is_context_not_scored(tiny_candidate, bos_tokenizer):
    ids = wikitext_ids(bos_tokenizer, 200)
    assert ids[0] != bos_tokenizer.bos_token_id  # the text itself carries no BOS
    bos = bos_prefix(bos_tokenizer)
    model = tiny_candidate.model
    res = evaluate_perplexity(lambda x: model(input_ids=x).logits, ids, window=256, stride=128, bos_id=bos)
    plain = evaluate_perplexity(lambda x: model(input_ids=x).logits, ids, window=256, stride=128)
    with_bos = torch.cat([torch.tensor([bos]), ids]).unsqueeze(0)
    labels = with_bos.clone()
    labels[0, :2] = -100  # BOS is not a target, and the first text token is not scored either way
    with torch.inference_mode():
        loss = model(input_ids=with_bos, labels=labels).loss
    assert res.bos_prepended and not plain.bos_prepended
    assert res.tokens_scored == plain.tokens_scored == 199
    assert res.ppl == pytest.approx(math.exp(float(loss)), rel=1e-4)
    assert res.ppl != pytest.approx(plain.ppl, rel=1e-6)  # the context changed the figure
