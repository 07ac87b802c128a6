"""A hub source's release is the hub's commit sha (the build pinned to it); an unreachable hub is a
plain note that says what was used instead, never a traceback."""

import huggingface_hub
import pytest
from huggingface_hub import constants

from optpipe.build.cache import KEY_PACKAGES
from optpipe.build.recipe import Recipe
from optpipe.nightly.config import Entry
from optpipe.nightly.release import release_of
from optpipe.nightly.run import _change, _pinned
from optpipe.spec.model_source import ResolvedModel
from tests.nightly.test_release_detection import entry, last

HUB = ResolvedModel("hub", "someorg/some-model")
SHA1, SHA2 = "1" * 40, "2" * 40
PACKAGES = {k: "1.0" for k in KEY_PACKAGES}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty local hub cache, and a hub nobody answers (a closed local port), whatever the network."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    return tmp_path / "hub"


def test_unreachable_hub_is_a_note_and_the_configured_revision(hub_cache):
    rel = release_of(HUB)
    assert rel.model == HUB and rel.fingerprint == HUB.fingerprint()
    assert rel.note.startswith("could not check the hub for a new release of someorg/some-model@main (")
    assert "fingerprinted by id and configured revision instead" in rel.note and "Traceback" not in rel.note


def test_unreachable_hub_falls_back_to_the_local_hub_caches_revision(hub_cache):
    refs = hub_cache / "models--someorg--some-model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(SHA1)
    rel = release_of(HUB)
    assert (
        rel.model.revision == SHA1 and rel.fingerprint == ResolvedModel("hub", "someorg/some-model", revision=SHA1).fingerprint()
    )
    assert "using the revision in the local hub cache instead (111111111111)" in rel.note


def test_a_new_hub_sha_is_a_new_release_and_the_build_is_pinned_to_it(hub_cache, monkeypatch):
    shas = iter([SHA1, SHA1, SHA2])
    asked = []

    class FakeApi:
        def model_info(self, repo, revision=None):
            asked.append((repo, revision))
            return type("Info", (), {"sha": next(shas)})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monday, tuesday, wednesday = release_of(HUB), release_of(HUB), release_of(HUB)
    assert asked == [("someorg/some-model", "main")] * 3
    assert not monday.note and monday.model.revision == SHA1
    assert monday.fingerprint == tuesday.fingerprint != wednesday.fingerprint
    assert _change(entry(), tuesday.fingerprint, PACKAGES, last(fp=monday.fingerprint)) == ""  # same sha: not rebuilt
    assert _change(entry(), wednesday.fingerprint, PACKAGES, last(fp=monday.fingerprint)).startswith("new release: model")

    recipe = Recipe.model_validate({"model": {"source": "someorg/some-model"}, "target": "cpu-x86"})
    pinned = _pinned(Entry("s", HUB, recipe, "r.yaml", None), wednesday)  # what the build loads and records
    assert pinned.model.revision == SHA2 and pinned.recipe.model.revision == SHA2
    assert pinned.model.fingerprint() == wednesday.fingerprint


def test_nightly_on_an_unreachable_hub_says_so_plainly(hub_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as unreachable, without the library's backoff retries
    from typer.testing import CliRunner

    from optpipe.cli import app
    from tests.conftest import tiny_recipe_text, write

    write(tmp_path / "recipe.yaml", tiny_recipe_text(tmp_path / "unused", tmp_path / "unused-out"))
    cfg = write(
        tmp_path / "n.yaml", "sources:\n  - name: h\n    model: {source: someorg/some-model}\n    recipes: [recipe.yaml]\n"
    )
    r = CliRunner().invoke(app, ["nightly", str(cfg), "--history-url", f"sqlite:///{tmp_path / 'h.db'}"])
    assert r.exit_code == 6, r.output  # the build could not run; no regression
    out = " ".join(r.output.split())
    assert "could not check the hub for a new release of someorg/some-model@main" in out
    assert "cannot load someorg/some-model@main from the hub or the local hub cache" in out
    assert "point model.source at a local copy" in out and "Traceback" not in r.output
    report = (tmp_path / "nightly-out" / "reports" / "latest.md").read_text()
    assert "note: h: could not check the hub" in report
