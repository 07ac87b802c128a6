"""The target-device catalogue: every shipped YAML validates, and the loader's errors help."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from optpipe.errors import InvalidInputError
from optpipe.spec.targets import (
    DTYPES,
    PEAK_DTYPES,
    RUNTIMES,
    Target,
    TargetFileError,
    UnknownTargetError,
    list_targets,
    load_target,
    load_target_file,
    targets_dir,
)

REPO_TARGETS = Path(__file__).resolve().parents[2] / "targets"
TARGET_FILES = sorted(REPO_TARGETS.glob("*.yaml"))
EXPECTED = {
    "rtx4060",
    "rtx3090",
    "rtx4090",
    "a100-80g",
    "h100-80g",
    "h200",
    "l4",
    "jetson-orin-nano",
    "raspberry-pi-5",
    "cpu-x86",
}


def _valid_data(**changes) -> dict:
    data = yaml.safe_load((REPO_TARGETS / "rtx4060.yaml").read_text())
    data.update(changes)
    return data


def _write(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- shipped files


def test_catalogue_has_the_expected_devices():
    assert {p.stem for p in TARGET_FILES} == EXPECTED
    assert list_targets() == sorted(EXPECTED)


def test_targets_dir_is_the_repo_directory_in_a_checkout():
    # No optpipe/_data/targets in a source checkout, so the repo's targets/ is used.
    assert targets_dir() == REPO_TARGETS


@pytest.mark.parametrize("path", TARGET_FILES, ids=lambda p: p.stem)
def test_target_file_validates(path: Path):
    target = load_target_file(path)
    assert isinstance(target, Target)
    assert target.name == path.stem
    assert load_target(path.stem) == target


@pytest.mark.parametrize("path", TARGET_FILES, ids=lambda p: p.stem)
def test_target_file_values_are_sane(path: Path):
    t = load_target_file(path)
    assert t.dtypes and set(t.dtypes) <= set(DTYPES)
    assert len(set(t.dtypes)) == len(t.dtypes)
    assert "fp32" in t.dtypes
    assert set(t.runtimes) <= set(RUNTIMES)
    assert set(t.peak_tflops) <= set(PEAK_DTYPES)
    assert all(v > 0 for v in t.peak_tflops.values())
    # Every peak figure is for a dtype the device lists (tf32 rides on fp32).
    assert all(("fp32" if k == "tf32" else k) in t.dtypes for k in t.peak_tflops)
    assert 0 < t.memory_gb <= 1024
    assert 1 <= t.memory_bandwidth_gbs <= 10_000
    assert t.sources and all(s.url.startswith("https://") and s.what for s in t.sources)
    assert t.notes.strip(), "notes must say how the figures were obtained (dense/derived/...)"
    if t.is_gpu:
        assert t.compute_capability is not None
        assert "dense" in t.notes.lower()
    if t.kind == "cpu" or t.vendor != "NVIDIA":
        assert t.compute_capability is None
    for dtype in t.dtypes:
        assert t.supports_dtype(dtype)


@pytest.mark.parametrize("path", TARGET_FILES, ids=lambda p: p.stem)
def test_target_file_starts_with_a_source_comment(path: Path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("#"), f"{path.name} must start with a comment header saying where the numbers come from"


def test_rtx4060_published_figures():
    t = load_target("rtx4060")
    assert t.memory_gb == 8
    assert t.memory_bandwidth_gbs == 272
    assert t.compute_capability == "8.9"
    assert t.kind == "gpu" and t.is_gpu and t.has_cuda


@pytest.mark.parametrize(
    ("name", "memory_gb", "bandwidth", "capability"),
    [
        ("rtx3090", 24, 936, "8.6"),
        ("rtx4090", 24, 1008, "8.9"),
        ("a100-80g", 80, 2039, "8.0"),
        ("h100-80g", 80, 3350, "9.0"),
        ("l4", 24, 300, "8.9"),
        ("jetson-orin-nano", 8, 102, "8.7"),
        ("raspberry-pi-5", 8, 17.1, None),
        ("cpu-x86", 32, 89.6, None),
    ],
)
def test_published_memory_figures(name, memory_gb, bandwidth, capability):
    t = load_target(name)
    assert t.memory_gb == memory_gb
    assert t.memory_bandwidth_gbs == pytest.approx(bandwidth)
    assert t.compute_capability == capability


def test_dense_tensor_figures_for_datacenter_gpus():
    a100 = load_target("a100-80g").peak_tflops
    assert (a100["bf16"], a100["tf32"], a100["fp32"], a100["int8"]) == (312, 156, 19.5, 624)
    h100 = load_target("h100-80g").peak_tflops
    assert h100["bf16"] == pytest.approx(989.5) and h100["fp8"] == pytest.approx(1979)
    assert h100["fp32"] == 67
    l4 = load_target("l4").peak_tflops
    assert (l4["fp8"], l4["bf16"]) == (242.5, 121)


def test_dtype_support_matches_hardware():
    assert not load_target("rtx3090").supports_dtype("fp8")  # Ampere: no FP8
    assert load_target("rtx4090").supports_dtype("fp8")
    assert load_target("jetson-orin-nano").supports_dtype("bf16")
    pi = load_target("raspberry-pi-5")
    assert pi.supports_dtype("fp16") and not pi.supports_dtype("bf16")
    cpu = load_target("cpu-x86")
    assert cpu.supports_dtype("bf16") and not cpu.supports_dtype("fp16")


def test_supports_dtype_accepts_torch_spellings_and_rejects_unknowns():
    t = load_target("a100-80g")
    assert t.supports_dtype("bfloat16") and t.supports_dtype("torch.float16") and t.supports_dtype(" FP32 ")
    assert not t.supports_dtype("fp64")
    assert not t.supports_dtype("")


def test_is_gpu_and_has_cuda():
    assert load_target("h100-80g").is_gpu
    jetson = load_target("jetson-orin-nano")
    assert not jetson.is_gpu and jetson.has_cuda and jetson.kind == "soc"
    cpu = load_target("cpu-x86")
    assert not cpu.is_gpu and not cpu.has_cuda


def test_target_is_frozen():
    t = load_target("l4")
    with pytest.raises(ValidationError):
        t.memory_gb = 48


def test_load_target_is_case_insensitive():
    assert load_target("RTX4060").name == "rtx4060"


# ----------------------------------------------------------------------------- errors


def test_unknown_name_suggests_close_match():
    with pytest.raises(UnknownTargetError) as info:
        load_target("rtx4600")
    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, InvalidInputError)  # the CLI reports it as invalid input
    message = str(err)
    assert "'rtx4600'" in message
    assert "did you mean 'rtx4060'" in message
    for name in EXPECTED:
        assert name in message
    assert err.suggestions[0] == "rtx4060"
    assert err.known == sorted(EXPECTED)


def test_unknown_name_without_close_match_lists_known_names():
    with pytest.raises(UnknownTargetError) as info:
        load_target("tpu-v5e-pod")
    message = str(info.value)
    assert "did you mean" not in message
    assert "'tpu-v5e-pod'" in message and "rtx4090" in message
    assert info.value.suggestions == []


@pytest.mark.parametrize("bad", ["../targets/rtx4060", "targets/rtx4060", "rtx4060.yaml", ""])
def test_names_that_are_paths_are_unknown(bad):
    with pytest.raises(UnknownTargetError):
        load_target(bad)


def test_extra_field_fails_validation(tmp_path):
    path = _write(tmp_path, "rtx4060", _valid_data(tdp_watts=115))
    with pytest.raises(TargetFileError) as info:
        load_target_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "tdp_watts" in message
    assert isinstance(info.value.__cause__, ValidationError)
    assert isinstance(info.value, ValueError)


def test_extra_field_is_rejected_by_the_model_too():
    with pytest.raises(ValidationError):
        Target.model_validate(_valid_data(tdp_watts=115))
    with pytest.raises(ValidationError):
        Target.model_validate(_valid_data(sources=[{"what": "x", "url": "https://x.invalid", "page": 3}]))


def test_name_must_equal_file_stem(tmp_path):
    path = _write(tmp_path, "my-gpu", _valid_data())  # name: rtx4060
    with pytest.raises(TargetFileError) as info:
        load_target_file(path)
    message = str(info.value)
    assert str(path) in message and "my-gpu" in message and "rtx4060" in message


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"memory_gb": 0}, "memory_gb"),
        ({"memory_bandwidth_gbs": -1}, "memory_bandwidth_gbs"),
        ({"kind": "npu"}, "kind"),
        ({"dtypes": ["fp32", "fp64"]}, "dtypes"),
        ({"dtypes": ["fp32", "fp32"]}, "dtypes"),
        ({"runtimes": ["vllm"]}, "runtimes"),
        ({"peak_tflops": {"fp64": 1.0}}, "peak_tflops"),
        ({"peak_tflops": {"fp32": 0}}, "peak_tflops"),
        ({"compute_capability": 8.9}, "compute_capability"),  # unquoted in YAML
        ({"sources": []}, "sources"),
        ({"sources": [{"what": "x", "url": "not a url"}]}, "sources"),
    ],
)
def test_invalid_values_are_rejected_with_the_file_and_field(tmp_path, changes, field):
    path = _write(tmp_path, "rtx4060", _valid_data(**changes))
    with pytest.raises(TargetFileError) as info:
        load_target_file(path)
    message = str(info.value)
    assert str(path) in message and field in message


def test_peak_figure_needs_the_dtype(tmp_path):
    data = _valid_data(dtypes=["fp32", "fp16"])  # rtx4060 data has bf16/fp8/int8/int4 peaks
    with pytest.raises(TargetFileError, match="dtypes"):
        load_target_file(_write(tmp_path, "rtx4060", data))


def test_cuda_runtime_needs_compute_capability(tmp_path):
    data = _valid_data(compute_capability=None)
    with pytest.raises(TargetFileError, match="compute_capability"):
        load_target_file(_write(tmp_path, "rtx4060", data))


def test_missing_field_is_reported(tmp_path):
    data = _valid_data()
    del data["memory_bandwidth_gbs"]
    with pytest.raises(TargetFileError, match="memory_bandwidth_gbs"):
        load_target_file(_write(tmp_path, "rtx4060", data))


def test_error_points_at_the_line(tmp_path):
    data = _valid_data(memory_gb=-8)
    path = _write(tmp_path, "rtx4060", data)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("memory_gb:"))
    with pytest.raises(TargetFileError) as info:
        load_target_file(path)
    assert f"{path}:{line}:" in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\n", "not valid YAML"),
        ("", "empty file"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, text, expected):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(TargetFileError) as info:
        load_target_file(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(TargetFileError) as info:
        load_target_file(path)
    assert str(path) in str(info.value)


def test_targets_dir_prefers_bundled_data(tmp_path, monkeypatch):
    import optpipe.spec.targets as targets_module

    package = tmp_path / "optpipe"
    bundled = package / "_data" / "targets"
    bundled.mkdir(parents=True)
    (bundled / "rtx4060.yaml").write_text((REPO_TARGETS / "rtx4060.yaml").read_text())
    monkeypatch.setattr(targets_module, "__file__", str(package / "spec" / "targets.py"))
    assert targets_dir() == bundled
    assert list_targets() == ["rtx4060"]
    assert load_target("rtx4060").memory_gb == 8
