from __future__ import annotations

from optpipe.forecast import (
    TABLE_COLUMNS,
    CandidateSpec,
    fit_step_time,
    forecast_chain,
    render_table,
    shape_from_config,
)

CHAIN = [
    CandidateSpec(name="baseline"),
    CandidateSpec(name="int8", quantization="torchao-int8wo"),
    {"name": "int4", "quantization": "torchao-int4wo", "group_size": 128},
    {"name": "int4-fp16", "dtype": "fp16", "quantization": "torchao-int4wo"},
]


def test_chain_on_an_8gb_card(llama8b):
    s = shape_from_config(llama8b)
    out = forecast_chain(s, CHAIN, prompt_tokens=512, new_tokens=128, batch=1, target_memory_gb=8, target_bandwidth_gbs=272)
    assert [f.name for f in out] == ["baseline", "int8", "int4", "int4-fp16"]
    assert [f.fits for f in out] == [False, False, True, False]
    assert "> 8.0 GB" in out[0].reason and "<= 8.0 GB" in out[2].reason
    assert out[3].memory is None and "bf16 only" in out[3].reason
    assert out[0].roofline_tok_s < out[1].roofline_tok_s < out[2].roofline_tok_s
    rows = render_table(out)
    assert rows[0] == TABLE_COLUMNS and len(rows) == 5
    assert rows[1][:3] == ["baseline", "bf16", "16.06"] and rows[1][5] == "no"
    assert rows[3][1] == "torchao-int4wo g128" and rows[3][5] == "yes"
    assert rows[4][2:5] == ["-", "-", "-"] and rows[4][6] == "-"


def test_without_targets_and_with_a_step_model(llama8b):
    s = shape_from_config(llama8b)
    out = forecast_chain(s, CHAIN[:2], 512, 128)
    assert all(f.fits and f.roofline_tok_s is None for f in out)
    model = fit_step_time([(1e9, 0.003), (4e9, 0.0072), (16e9, 0.024)], 3350)
    out = forecast_chain(s, CHAIN[:3], 512, 128, target_bandwidth_gbs=1008, step_model=model, model_error_rel=0.05)
    assert all(f.speed is not None and f.speed.low < f.speed.tok_s <= f.speed.high <= f.roofline_tok_s for f in out)


def test_a_candidate_without_a_memory_forecast_shows_unknown_not_no():
    """A pass whose weight format is not modelled (gguf_export) has no memory forecast: its fits cell is
    '?', where 'no' would tell the reader it does not fit (the nightly log said 'fits: no' for a 0.15 GB GGUF)."""
    from optpipe.forecast.candidates import CandidateForecast, render_table

    unknown = CandidateForecast(
        name="gguf:Q8_0", format_name=None, memory=None, roofline_tok_s=None, fits=False, reason="not modelled"
    )
    assert render_table([unknown])[1][5] == "?"
