"""Fixtures for the forecast tests; the checkpoint writers live in tiny_checkpoints.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.forecast.tiny_checkpoints import (
    LLAMA_31_8B,
    TINY,
    tiny_tensors,
    write_tiny_gguf,
)


@pytest.fixture
def llama8b() -> dict:
    return dict(LLAMA_31_8B)


@pytest.fixture
def tiny_hf_dir(tmp_path: Path) -> Path:
    from safetensors.numpy import save_file

    d = tmp_path / "tiny-hf"
    d.mkdir()
    save_file(tiny_tensors(), str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(TINY))
    return d


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")
