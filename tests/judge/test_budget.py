import math

import pytest

from optpipe.evaluate.stats import paired_difference, weighted_paired_difference
from optpipe.judge.budget import Verdict, judge, overall
from optpipe.spec.settings import AccuracyBudget, Goals
from tests.factories import bench, result

BASE = [1.0] * 50 + [0.0] * 50


@pytest.mark.parametrize(
    "cand, expected",
    [
        (BASE, Verdict.MET),  # identical: rule of three bounds the drop at 3 points (n=100) < 5
        ([0.0] * 40 + [1.0] * 10 + [0.0] * 50, Verdict.NOT_MET),  # 30 point drop
    ],
)
def test_hellaswag_drop_verdicts(cand, expected):
    checks = judge(
        result(BASE), result(cand), AccuracyBudget(hellaswag_max_drop_points=5.0, perplexity_max_rise_pct=None), Goals()
    )
    assert checks[0].name == "hellaswag_drop_points"
    assert checks[0].verdict == expected


def test_hellaswag_inconclusive_when_interval_straddles_limit():
    cand = list(BASE)
    for i in range(3):  # 3 items lost out of 100 -> drop 3 points, se ~1.7
        cand[i] = 0.0
    c = judge(result(BASE), result(cand), AccuracyBudget(hellaswag_max_drop_points=2.0, perplexity_max_rise_pct=None), Goals())[0]
    assert c.value == pytest.approx(3.0)
    assert c.low < 2.0 < c.high
    assert c.verdict == Verdict.INCONCLUSIVE


def test_perplexity_rise_paired():
    base = [2.0, 2.1, 1.9, 2.05] * 5
    cand_small = [x + 0.005 for x in base]  # +0.5 %
    cand_big = [x + 0.1 for x in base]  # +10.5 %
    budget = AccuracyBudget(hellaswag_max_drop_points=None, perplexity_max_rise_pct=3.0)
    small = judge(result(nll=base), result(nll=cand_small), budget, Goals())[0]
    big = judge(result(nll=base), result(nll=cand_big), budget, Goals())[0]
    assert small.value == pytest.approx(100 * (math.exp(0.005) - 1))
    assert small.verdict == Verdict.MET
    assert big.verdict == Verdict.NOT_MET


def test_goals():
    goals = Goals(min_decode_tok_s=40, max_p95_token_latency_ms=20, max_memory_gb=8, max_size_gb=0.5)
    none = AccuracyBudget(hellaswag_max_drop_points=None, perplexity_max_rise_pct=None)
    fast = judge(result(), result(b=bench(50, 1.0), size=0.4e9), none, goals)
    assert {c.name: c.verdict for c in fast} == {
        "decode_tok_s": Verdict.MET,
        "p95_token_latency_ms": Verdict.MET,
        "memory_gb": Verdict.MET,
        "size_gb": Verdict.MET,
    }
    noisy = judge(result(), result(b=bench(41, 5.0, n=3)), none, Goals(min_decode_tok_s=40))[0]
    assert noisy.verdict == Verdict.INCONCLUSIVE
    slow = judge(result(), result(b=bench(20, 0.5), size=0.6e9), none, goals)
    assert {c.name: c.verdict for c in slow}["decode_tok_s"] == Verdict.NOT_MET
    assert {c.name: c.verdict for c in slow}["size_gb"] == Verdict.NOT_MET


def test_missing_measurements_are_not_passes():
    checks = judge(result(), result(), AccuracyBudget(), Goals(min_decode_tok_s=1))
    assert all(c.verdict == Verdict.NOT_MEASURED for c in checks)
    assert overall(checks) == Verdict.INCONCLUSIVE


def test_overall():
    from optpipe.judge.budget import Check

    def c(v):
        return Check(name="x", limit=1, value=0, low=0, high=0, verdict=v)

    assert overall([c(Verdict.MET), c(Verdict.MET)]) == Verdict.MET
    assert overall([c(Verdict.MET), c(Verdict.INCONCLUSIVE)]) == Verdict.INCONCLUSIVE
    assert overall([c(Verdict.INCONCLUSIVE), c(Verdict.NOT_MET)]) == Verdict.NOT_MET
    assert overall([]) == Verdict.MET


def test_paired_difference_is_tighter_than_independent():
    import random

    rng = random.Random(0)
    base = [float(rng.random() < 0.5) for _ in range(400)]
    cand = [b if rng.random() < 0.95 else 1 - b for b in base]
    mean, se = paired_difference(base, cand)
    independent = math.sqrt(2 * 0.25 / 400)
    assert se < independent / 2
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 0.0])
    m, s = weighted_paired_difference([1.0, 2.0], [0.5, 1.0], [1, 3])
    assert m == pytest.approx((0.5 * 1 + 1.0 * 3) / 4)


def test_projected_speed_is_labelled():
    b = bench(100.0, 2.0, projected_tok_s=30.0)
    none = AccuracyBudget(hellaswag_max_drop_points=None, perplexity_max_rise_pct=None)
    checks = judge(result(), result(b=b), none, Goals(min_decode_tok_s=40, max_p95_token_latency_ms=20))
    speed, p95 = checks
    assert speed.projected and speed.value == 30.0 and speed.verdict == Verdict.NOT_MET
    assert "projected to rtx4060" in speed.detail
    assert p95.projected and p95.value == pytest.approx(10.0 * 100 / 30)
