"""What makes a night rebuild an entry: a new model release, a changed recipe, a changed package."""

from types import SimpleNamespace

from optpipe.build.cache import KEY_PACKAGES
from optpipe.nightly.run import _change

PACKAGES = {k: "1.0" for k in KEY_PACKAGES}


def entry(recipe_hash="h"):
    return SimpleNamespace(recipe=SimpleNamespace(content_hash=lambda: recipe_hash))


def last(fp="aaa", recipe_hash="h", packages=None):
    return SimpleNamespace(model_fingerprint=fp, recipe_hash=recipe_hash, packages=dict(packages or PACKAGES))


def test_release_detection():
    assert _change(entry(), "aaa", PACKAGES, None) == "first build"
    assert _change(entry(), "aaa", PACKAGES, last()) == ""  # nothing changed: not built
    assert _change(entry(), "bbb", PACKAGES, last()) == "new release: model aaa -> bbb"
    assert _change(entry("h2"), "aaa", PACKAGES, last()) == "the recipe changed"
    newer = {**PACKAGES, "torch": "2.0"}
    assert _change(entry(), "aaa", newer, last()) == "packages changed: torch 1.0 -> 2.0"
    assert _change(entry(), "aaa", {**PACKAGES, "numpy": "9"}, last()) == ""  # not a package measurements depend on
