"""The early-stopping statistics: the confidence sequence's error rate, checked by simulation of
the whole procedure (interim sequence looks, then the fixed-n interval at the full set)."""

import math

import numpy as np
import pytest

from optpipe.evaluate.sequential import SequentialRule, binary_sd_floor, cs_half_width, interim_alpha
from optpipe.evaluate.stats import paired_difference, z_value


def _procedure(d: np.ndarray, rule: SequentialRule, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """What the build does with many candidates' paired 0/1 score differences (one row each), vectorised:
    the verdict per row ("MET" / "NOT MET" / "INCONCLUSIVE") and the items it used. The looks use the
    same half-width as `SequentialRule.check` (checked row by row in `test_vectorised_looks_match_check`)."""
    sims = d.shape[0]
    verdict = np.full(sims, "", dtype=object)
    used = np.full(sims, rule.planned)
    pts = 100.0 * d
    for n in [n for n in range(rule.planned) if rule.looks_at(n)]:
        mean = pts[:, :n].mean(axis=1)
        sd = np.maximum(pts[:, :n].std(axis=1, ddof=1), 100.0 * binary_sd_floor(n))
        half = sd * cs_half_width(n, 1.0, rule.alpha, rule.n_opt)
        open_ = verdict == ""
        met, not_met = open_ & (mean + half <= rule.limit), open_ & (mean - half > rule.limit)
        verdict[met], verdict[not_met] = "MET", "NOT MET"
        used[met | not_met] = n
    z = z_value(confidence)
    for i in np.flatnonzero(verdict == ""):  # the full set: the judge's fixed-n interval
        mean, se = paired_difference(list(d[i].astype(float)), [0.0] * d.shape[1])
        low, high = 100 * (mean - z * se), 100 * (mean + z * se)
        verdict[i] = "MET" if high <= rule.limit else "NOT MET" if low > rule.limit else "INCONCLUSIVE"
    return verdict, used


def _simulate(true_drop: float, discordant: float, planned: int, sims: int, seed: int, limit: float = 5.0):
    """Item differences base - cand in {-1, 0, 1} with mean `true_drop` (a fraction) among `discordant` items."""
    rng = np.random.default_rng(seed)
    p_up, p_down = (discordant + true_drop) / 2, (discordant - true_drop) / 2
    u = rng.random((sims, planned))
    d = np.where(u < p_up, 1, np.where(u < p_up + p_down, -1, 0))
    return d, SequentialRule(limit=limit, confidence=0.95, planned=planned, min_n=100, chunk=100, binary_scale=100.0)


def test_half_width_shrinks_and_is_wider_than_fixed_n():
    alpha = 0.05
    widths = [cs_half_width(n, 1.0, alpha, 200) for n in (50, 100, 400, 1600)]
    assert widths == sorted(widths, reverse=True)
    for n in (50, 200, 1000):  # valid at every n at once, so never tighter than the fixed-n interval
        assert cs_half_width(n, 1.0, alpha, 200) > z_value(1 - alpha) / math.sqrt(n)


def test_interim_alpha_is_half_the_error_rate():
    assert interim_alpha(0.95) == pytest.approx(0.025)


def test_on_the_boundary_wrong_met_rate_stays_below_alpha():
    """True drop exactly at the limit: every MET is wrong. The procedure must say MET at most
    alpha of the time (the proof gives 3/4 alpha); 3000 runs give a standard error of 0.4 %."""
    verdict, _ = _procedure(*_simulate(true_drop=0.05, discordant=0.2, planned=1000, sims=3000, seed=1), 0.95)
    assert np.mean(verdict == "MET") <= 0.05


def test_just_outside_wrong_met_rate_stays_below_alpha():
    verdict, _ = _procedure(*_simulate(true_drop=0.055, discordant=0.2, planned=1000, sims=2000, seed=2), 0.95)
    assert np.mean(verdict == "MET") <= 0.05


def test_well_outside_stops_at_the_first_look_with_not_met():
    verdict, used = _procedure(*_simulate(true_drop=0.30, discordant=0.35, planned=1000, sims=500, seed=3), 0.95)
    assert np.all(verdict == "NOT MET")
    assert used.mean() < 150  # a tenth-and-a-half of the items, not all of them


def test_well_inside_stops_early_with_met():
    verdict, used = _procedure(*_simulate(true_drop=0.0, discordant=0.02, planned=1000, sims=500, seed=4), 0.95)
    assert np.mean(verdict == "MET") > 0.95
    assert used.mean() < 500


def test_vectorised_looks_match_check():
    d, rule = _simulate(true_drop=0.05, discordant=0.2, planned=1000, sims=40, seed=5)
    for row in d:
        _, low, high, _ = rule.check(list(100.0 * row[:300]))
        pts = 100.0 * row[:300]
        half = max(pts.std(ddof=1), 100.0 * binary_sd_floor(300)) * cs_half_width(300, 1.0, rule.alpha, rule.n_opt)
        assert (low, high) == pytest.approx((pts.mean() - half, pts.mean() + half))


def test_identical_scores_do_not_claim_certainty_at_the_first_look():
    """No item changed in the first 100: the rule-of-three floor keeps the interval open (3 points
    bound at 100 items), so a 1-point limit is not declared met from nothing."""
    rule = SequentialRule(limit=1.0, confidence=0.95, planned=300, min_n=100, chunk=50, binary_scale=100.0)
    _, low, high, decision = rule.check([0.0] * 100)
    assert decision is None and high > 1.0


def test_looks_never_at_the_full_set():
    rule = SequentialRule(limit=1.0, confidence=0.95, planned=300, min_n=100, chunk=50)
    assert [n for n in range(301) if rule.looks_at(n)] == [100, 150, 200, 250]
