"""keep_artifacts: the newest N artifact copies stay, older ones go, nothing optpipe did not make."""

from optpipe.nightly.run import MARKER, retain


def test_retention_keeps_the_newest_copies_only(tmp_path):
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "model.safetensors").write_bytes(b"w")
    root = tmp_path / "recipe.artifacts"
    root.mkdir()
    (root / "build-000000-mine").mkdir()  # the user's, unmarked: never deleted
    for build_id in (3, 7, 12):
        retain(artifact, root, build_id, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["build-000000-mine", "build-000007", "build-000012"]
    assert (root / "build-000012" / "model.safetensors").read_bytes() == b"w" and (root / "build-000012" / MARKER).is_file()
    retain(artifact, root, 12, keep=2)  # the same build again: nothing copied twice
    assert len(list(root.iterdir())) == 3
