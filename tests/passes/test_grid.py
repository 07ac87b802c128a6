"""Parameter search in a recipe: lists of values become a grid, every point validated up front."""

import pytest

from optpipe.build.recipe import parse_recipe
from optpipe.errors import InvalidInputError
from optpipe.passes import get_pass

HEAD = "model: {source: smollm2-135m}\ntarget: cpu-x86\npasses:\n  - pass: quantize\n"


def _variants(body: str):
    r = parse_recipe(HEAD + body)
    return [(label, p.chain_params()) for label, p in get_pass("quantize").variants(r.passes[0])]


def test_a_list_for_a_single_valued_field_is_a_grid():
    labels = [label for label, _ in _variants("    methods: [gptq-4bit, awq-4bit]\n    group_size: [32, 128]\n")]
    assert labels == [
        "quantize:gptq-4bit(group_size=32)",
        "quantize:awq-4bit(group_size=32)",
        "quantize:gptq-4bit(group_size=128)",
        "quantize:awq-4bit(group_size=128)",
    ]


def test_grid_key_and_list_mean_the_same_and_chains_hold_the_point_not_the_grid():
    a = _variants("    methods: [gptq-4bit]\n    group_size: [32, 64]\n    calibration_samples: [8, 16]\n")
    b = _variants("    methods: [gptq-4bit]\n    grid: {group_size: [32, 64], calibration_samples: [8, 16]}\n")
    assert a == b and len(a) == 4
    assert all("grid" not in chain for _, chain in a)
    assert a[1][1]["group_size"] == 32 and a[1][1]["calibration_samples"] == 16


def test_no_grid_keeps_the_chain_as_before():
    ((label, chain),) = _variants("    methods: [gptq-4bit]\n")
    assert label == "quantize:gptq-4bit" and "grid" not in chain


@pytest.mark.parametrize(
    "body, message",
    [
        ("    group_size: []\n", "grid.group_size: give a non-empty list of values"),
        ("    grid: {bogus: [1]}\n", "grid.bogus: not a field this pass can search; searchable: group_size"),
        ("    group_size: [32, 32]\n", "grid.group_size: [32, 32] repeats a value"),
        (
            "    calibration_samples: [0, 4]\n",
            "passes[0].calibration_samples: Input should be greater than or equal to 1 (got 0)",
        ),
        ("    calibration_samples: [4, 0]\n", "grid point calibration_samples=0: calibration_samples: Input should be greater"),
        ("    calibration: [file]\n", "grid point calibration='file': calibration: file needs calibration_file"),
        ("    group_size: [32]\n    grid: {group_size: [64]}\n", "group_size is given both as a list and under grid"),
        (
            "    calibration_samples: [1, 2, 3, 4, 5, 6, 7, 8, 9]\n    calibration_seq_len: " + str(list(range(16, 46))) + "\n",
            "270 combinations",
        ),
    ],
)
def test_bad_grids_are_pointed_errors(body, message):
    with pytest.raises(InvalidInputError) as err:
        parse_recipe(HEAD + "    methods: [gptq-4bit]\n" + body)
    text = str(err.value)
    assert message in text and "passes[0]" in text


def test_quantize_drops_grid_points_a_method_ignores():
    labels = [label for label, _ in _variants("    methods: [torchao-int8wo, gptq-4bit]\n    group_size: [32, 64]\n")]
    assert labels == [
        "quantize:torchao-int8wo(group_size=32)",
        "quantize:gptq-4bit(group_size=32)",
        "quantize:gptq-4bit(group_size=64)",
    ]


def test_a_sub_model_can_be_searched_and_labels_name_its_fields():
    labels = [
        label
        for label, _ in _variants("    methods: [mixed-precision]\n    mixed_precision: [{max_kl: 0.02}, {max_kl: 0.005}]\n")
    ]
    assert labels == [
        "quantize:mixed-precision(mixed_precision.max_kl=0.02)",
        "quantize:mixed-precision(mixed_precision.max_kl=0.005)",
    ]
