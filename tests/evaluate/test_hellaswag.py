"""HellaSwag via lm-eval, checked by hand against lm-eval's definition on a few items."""

import math

import pytest
import torch

from optpipe.evaluate.data import HELLASWAG_TOTAL, hellaswag_all, hellaswag_subset, lm_eval_context
from optpipe.evaluate.hellaswag import evaluate_hellaswag
from optpipe.evaluate.lm_adapters import hf_lm


def test_shipped_data_and_subset():
    items = hellaswag_all()
    assert len(items) == HELLASWAG_TOTAL
    assert items[0].context == "Roof shingle removal: A man is sitting on a roof. He"
    assert items[0].label == 3 and items[0].endings[3] == "starts pulling up roofing on a roof."
    a, b = hellaswag_subset(50, 7), hellaswag_subset(50, 7)
    assert [i.index for i in a] == [i.index for i in b] == sorted(i.index for i in a)
    assert [i.index for i in hellaswag_subset(50, 8)] != [i.index for i in a]
    assert len(hellaswag_subset(20000, 1)) == HELLASWAG_TOTAL


def test_context_capitalization():
    assert lm_eval_context("Sport: A man runs. he") == "Sport: A man runs. He"
    assert lm_eval_context("No period here") == "No period here"


def hand_scores(model, tok, item):
    """lm-eval's definition, computed directly: sum log p(" " + ending | context)."""
    lls = []
    for ending in item.endings:
        ctx = tok(item.context, add_special_tokens=False).input_ids
        whole = tok(item.context + " " + ending, add_special_tokens=False).input_ids
        cont = whole[len(ctx) :]
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
        lls.append(sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont)))
    acc = float(max(range(4), key=lambda i: lls[i]) == item.label)
    acc_norm = float(max(range(4), key=lambda i: lls[i] / len(item.endings[i])) == item.label)
    return lls, acc, acc_norm


def test_lm_eval_scores_match_hand_computation(tiny_candidate):
    items = hellaswag_subset(6, 3)
    res = evaluate_hellaswag(hf_lm(tiny_candidate.model, tiny_candidate.tokenizer, batch_size=4), items)
    assert res.n == 6 and res.item_indices == [i.index for i in items]
    for k, item in enumerate(items):
        lls, acc, acc_norm = hand_scores(tiny_candidate.model, tiny_candidate.tokenizer, item)
        assert res.item_loglikelihoods[k] == pytest.approx(lls, abs=2e-3)
        assert res.item_acc[k] == acc and res.item_acc_norm[k] == acc_norm
    assert res.acc_norm == pytest.approx(sum(res.item_acc_norm) / 6)
    p = res.acc_norm
    assert res.acc_norm_se == pytest.approx(math.sqrt(p * (1 - p) / 5), abs=1e-9)  # also 0 when p is 0 or 1
