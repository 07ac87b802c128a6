"""What release of a model source a night builds.

Local directories and GGUF files are fingerprinted by content. A hub repo id has no local content
to hash before it is downloaded, so its release is the hub's commit sha for the configured revision
(`HfApi().model_info`), where the hub is reachable; the build is then pinned to that sha, so the
fingerprint the night compares and the one the build records are the same. Where the hub is not
reachable, the night says so plainly and falls back to the sha the local hub cache holds for that
revision, else to the configured id and revision (a new release is then not detected).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from optpipe.spec.model_source import ResolvedModel


@dataclass(frozen=True)
class Release:
    model: ResolvedModel  # pinned to the hub sha when one was found
    fingerprint: str
    note: str = ""  # why the release could not be checked, and what was done instead


def _hub_sha(repo: str, revision: str) -> str:
    """The hub's commit sha of `repo` at `revision` (raises on no network, no access, no such repo)."""
    from huggingface_hub import HfApi

    return HfApi().model_info(repo, revision=revision).sha


def _cached_sha(repo: str, revision: str) -> str | None:
    """The sha the local hub cache last resolved `revision` to (its refs/<revision> file), if any."""
    from huggingface_hub import constants

    if _is_sha(revision):
        return revision
    ref = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "refs" / revision
    try:
        sha = ref.read_text().strip()
    except OSError:
        return None
    return sha if _is_sha(sha) else None


def _is_sha(text: str) -> bool:
    return len(text) == 40 and all(c in "0123456789abcdef" for c in text)


def _why(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__


def hub_release(model: ResolvedModel, sha_of: Callable[[str, str], str] = _hub_sha) -> Release:
    """The hub release of `model` (kind 'hub'): pinned to the hub's sha, else the cache's, else as configured."""
    revision = model.revision or "main"
    try:
        sha = sha_of(model.location, revision)
    except Exception as exc:  # offline, gated, unknown repo, rate limit: the night goes on without it
        cached = _cached_sha(model.location, revision)
        if cached is not None:
            pinned = replace(model, revision=cached)
            return Release(
                pinned,
                pinned.fingerprint(),
                f"could not check the hub for a new release of {model.location}@{revision} ({_why(exc)}); "
                f"using the revision in the local hub cache instead ({cached[:12]})",
            )
        return Release(
            model,
            model.fingerprint(),
            f"could not check the hub for a new release of {model.location}@{revision} ({_why(exc)}), and the local "
            "hub cache has none of it; fingerprinted by id and configured revision instead, so a new release under "
            "the same revision is not detected tonight",
        )
    if not sha or not _is_sha(sha):
        return Release(model, model.fingerprint(), f"the hub returned no commit sha for {model.location}@{revision}")
    pinned = replace(model, revision=sha)
    return Release(pinned, pinned.fingerprint())


def release_of(model: ResolvedModel) -> Release:
    """The release a night builds: content fingerprint for local sources, hub sha for hub ids."""
    if model.kind == "hub":
        return hub_release(model)
    return Release(model, model.fingerprint())


__all__ = ["Release", "hub_release", "release_of"]
