"""Which candidate is kept: table tests of the pure ranking functions."""

import pytest

from optpipe.judge.budget import Verdict
from optpipe.judge.ranking import build_status, objective_key, select_artifact, select_parent
from tests.factories import bench, result

MET, NOT_MET, INC = Verdict.MET.value, Verdict.NOT_MET.value, Verdict.INCONCLUSIVE.value


def test_speed_ranks_by_the_lower_bound_of_its_interval():
    steady, noisy = result(b=bench(18.0, 0.2, 3)), result(b=bench(18.7, 8.1, 10))
    assert objective_key(steady, "decode_tok_s") < objective_key(noisy, "decode_tok_s")
    assert objective_key(result(), "decode_tok_s") == 0.0  # no benchmark: ranks behind any measured speed


def test_size_and_memory_objectives():
    small, big = result(size=1e8, b=bench(10)), result(size=5e8, b=bench(10))
    assert objective_key(small, "size_gb") < objective_key(big, "size_gb")
    assert objective_key(small, "memory_gb") == 2e9  # the benchmark's peak RSS
    with pytest.raises(ValueError, match="objective"):
        objective_key(small, "beauty")


def test_parent_is_the_first_met_else_the_best():
    slow, fast = result(b=bench(10)), result(b=bench(50))
    assert select_parent([NOT_MET, MET], [fast, slow], "decode_tok_s") == 1
    assert select_parent([NOT_MET, NOT_MET], [slow, fast], "decode_tok_s") == 1


@pytest.mark.parametrize(
    "verdicts, stop, expected",
    [
        ([MET, NOT_MET, MET], "first", 0),
        ([NOT_MET, MET, MET], "best", 2),  # the third is faster
        ([NOT_MET, INC], "first", None),
    ],
)
def test_artifact_only_from_candidates_that_met_every_line(verdicts, stop, expected):
    ms = [result(b=bench(10)), result(b=bench(20)), result(b=bench(30))][: len(verdicts)]
    assert select_artifact(verdicts, ms, stop, "decode_tok_s") == expected


def test_build_status():
    assert build_status([NOT_MET, MET]) == Verdict.MET
    assert build_status([NOT_MET, INC]) == Verdict.INCONCLUSIVE
    assert build_status([NOT_MET, "", NOT_MET]) == Verdict.NOT_MET


def test_variants_rank_by_interleaved_ratio_over_their_common_parent():
    from optpipe.measure.results import SpeedRatio

    def with_ratio(m, low, interleaved=True):
        m.speed_vs_parent = SpeedRatio(
            parent="0", interleaved=interleaved, ratio=low + 0.1, low=low, high=low + 0.2, confidence=0.95
        )
        return m

    busy_fast = with_ratio(result(b=bench(5.0, 0.1)), 1.8)  # timed while the machine was busy: low absolute figure
    quiet_slow = with_ratio(result(b=bench(15.0, 0.1)), 1.1)
    assert select_parent([NOT_MET, NOT_MET], [quiet_slow, busy_fast], "decode_tok_s") == 1
    # one variant without an interleaved ratio: fall back to the absolute figures for all
    not_interleaved = with_ratio(result(b=bench(5.0, 0.1)), 1.8, interleaved=False)
    assert select_parent([NOT_MET, NOT_MET], [quiet_slow, not_interleaved], "decode_tok_s") == 0
