"""The manifest round-trips through JSON (NaN included) and the report prints what it holds."""

import math

from optpipe.judge.budget import Check, Verdict
from optpipe.output.manifest import CandidateRecord, Manifest
from optpipe.output.report import markdown, row
from tests.factories import bench, result
from tests.factories import manifest as factory_manifest


def manifest(candidates, forecast=()):
    return factory_manifest(candidates, forecast, reference="measured uncapped on H100: forecast needs 16.67 GB > 8.0 GB")


def test_manifest_round_trips_with_nan():
    c = Check(name="decode_tok_s", limit=40, value=math.nan, low=math.nan, high=math.nan, verdict=Verdict.NOT_MEASURED)
    rec = CandidateRecord(
        index=0,
        name="baseline",
        chain=[],
        status="measured",
        measurements=result(b=bench(30.0)),
        checks=[c],
        verdict="INCONCLUSIVE",
    )
    m = manifest([rec])
    back = Manifest.model_validate_json(m.model_dump_json())
    assert math.isnan(back.candidates[0].checks[0].value) and back.candidates[0].measurements == rec.measurements


def test_out_of_memory_row_and_predicted_vs_measured():
    oom = result()
    oom.out_of_memory = "out of memory under the 8 GB cap: CUDA out of memory. Tried to allocate 14.96 GiB"
    oom.memory_cap_gb = 8.0
    mem = Check(name="memory_gb", limit=8, value=8.0, low=8.0, high=math.inf, verdict=Verdict.NOT_MET, detail=oom.out_of_memory)
    rec = CandidateRecord(
        index=1, name="precision_cast", chain=[], status="measured", measurements=oom, checks=[mem], verdict="NOT MET"
    )
    cells = row(rec)
    assert cells[5] == "OOM" and cells[-1].startswith("NOT MET: out of memory under the 8 GB cap")
    forecast = [
        {
            "name": "precision_cast",
            "fits": False,
            "roofline_tok_s": 18.0,
            "memory": {"weight_bytes": 16.06e9, "peak_bytes": 16.67e9},
        }
    ]
    text = markdown(manifest([rec], forecast))
    assert "Accuracy reference (baseline): measured uncapped on H100" in text
    assert "| precision_cast | 16.06 / 1.00 | 16.67 / OOM | no / no | 18.0 |" in text
