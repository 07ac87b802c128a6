"""The structural GGUF check behind `optpipe validate`: whole files pass, anything else is named."""

import pytest

from optpipe.forecast.gguf_check import GGUFError, check_gguf
from tests.forecast.tiny_checkpoints import write_tiny_gguf


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_a_whole_gguf_passes(tiny_gguf):
    check_gguf(tiny_gguf)


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.01, 0.1, 0.5, 0.9, 0.999])
def test_every_truncation_is_caught(tiny_gguf, tmp_path, fraction):
    data = tiny_gguf.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(GGUFError):
        check_gguf(cut)


def test_one_byte_short_is_truncated(tiny_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:-1])
    with pytest.raises(GGUFError, match="truncated: tensor"):
        check_gguf(cut)


def test_a_renamed_text_file_has_no_magic(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("these are not the weights you are looking for\n" * 10)
    with pytest.raises(GGUFError, match="no GGUF magic"):
        check_gguf(fake)


def test_bundled_gguf_passes(bundled_model):
    from optpipe.spec.model_source import resolve_model

    m = resolve_model("smollm2-135m")
    check_gguf(f"{m.location}/{m.gguf_file}")
