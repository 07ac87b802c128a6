import pytest

from optpipe.measure.job import ProjectionJob
from optpipe.measure.roofline import decode_roofline, kv_bytes_per_position, roofline_report, weight_bytes_read_per_token
from optpipe.spec.settings import BenchmarkSettings
from tests.conftest import make_tiny_model
from tests.factories import bench


def test_weight_bytes_tied_and_untied():
    tied = make_tiny_model(384)
    total = sum(p.numel() * p.element_size() for p in tied.parameters())
    assert weight_bytes_read_per_token(tied) == total  # the head reads the shared table
    untied = make_tiny_model(384)
    untied.config.tie_word_embeddings = False
    import torch

    untied.lm_head.weight = torch.nn.Parameter(untied.lm_head.weight.detach().clone())
    emb = untied.get_input_embeddings().weight
    all_bytes = sum(p.numel() * p.element_size() for p in untied.parameters())
    assert weight_bytes_read_per_token(untied) == all_bytes - emb.numel() * emb.element_size()


def test_roofline_numbers():
    m = make_tiny_model(384)
    kv = kv_bytes_per_position(m.config, 4)
    assert kv == 2 * 2 * 2 * 16 * 4  # k+v, layers, kv heads, head_dim, fp32
    r = decode_roofline(m, 100, 20, 1000.0, "spec")
    assert r.tok_s == pytest.approx(1000e9 / (weight_bytes_read_per_token(m) + kv * 110))
    assert r.fraction(r.tok_s / 2) == pytest.approx(0.5)


def test_report_flags_impossible_speed_and_projects():
    m = make_tiny_model(384)
    cfg = BenchmarkSettings(prompt_tokens=100, new_tokens=20)
    roof = decode_roofline(m, 100, 20, 1000.0, "x")
    rep = roofline_report(m, bench(roof.tok_s * 1.2), cfg, None, bandwidth_gbs=1000.0)
    assert rep.fraction == pytest.approx(1.2) and "measurement error" in rep.error
    rep = roofline_report(
        m, bench(roof.tok_s * 0.5), cfg, ProjectionJob(target="rtx4060", bandwidth_gbs=250.0), bandwidth_gbs=1000.0
    )
    assert rep.error is None
    assert rep.projected.decode_tok_s == pytest.approx(0.5 * decode_roofline(m, 100, 20, 250.0, "t").tok_s)


def test_quantized_weights_count_their_packed_bytes():
    """torchao tensors report the logical dtype; the roofline must read the int8 storage."""
    pytest.importorskip("torchao")
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    from optpipe.measure.roofline import storage_bytes
    from tests.conftest import make_tiny_model

    model = make_tiny_model(384)
    proj = model.model.layers[0].mlp.down_proj
    fp32 = storage_bytes(proj.weight)
    quantize_(model, Int8WeightOnlyConfig())
    int8 = storage_bytes(proj.weight)
    assert fp32 == proj.weight.numel() * 4
    assert proj.weight.numel() <= int8 < 1.2 * proj.weight.numel()  # int8 data + per-row scales
