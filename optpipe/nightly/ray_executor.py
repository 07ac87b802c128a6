"""`optpipe nightly --executor ray`: one Ray task per build, the target's needs as its resources.

Each task plans and runs its build on the node Ray picks, writing the candidates, the result cache
and the manifest to the build's output directory (an absolute path under `output_root`, which must
be a filesystem every node shares at the same path). The task hands the manifest back; the driver
alone writes the history, from those manifests, with the same `HistoryStore.record` the local
executor uses. Why the driver and not the workers: one writer is safe for any database (SQLite
locking over a network filesystem is not), workers need no database URL or credentials, and the
rows are the local executor's rows by construction.

Ray is imported only here and only when this executor is chosen (`pip install 'optpipe[ray]'`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from optpipe.errors import MISSING, InvalidInputError, OptpipeError, Problem

INSTALL = "pip install 'optpipe[ray]'"


@dataclass
class Job:
    """One build to dispatch: the recipe (model and output dir already the night's) and its needs."""

    name: str
    recipe_json: dict[str, Any]
    recipe_file: str
    num_gpus: float
    memory_bytes: int


@dataclass
class Outcome:
    """What a task hands back: the manifest it wrote (JSON text, None if the build never started),
    the error that ended it (None when it finished), and where it ran."""

    manifest_json: str | None
    output_dir: str
    error: str | None
    node: str


def _build_task(recipe_json: dict[str, Any], recipe_file: str) -> Outcome:
    """Runs on a Ray worker: plan on that node (its host, its devices), build, return the manifest."""
    from optpipe.build.engine import Build
    from optpipe.build.plan import plan
    from optpipe.build.recipe import Recipe
    from optpipe.output.manifest import Manifest

    node = socket.gethostname()
    recipe = Recipe.model_validate(recipe_json)
    try:
        p = plan(recipe, recipe_file)
    except OptpipeError as exc:
        return Outcome(None, str(recipe.output_dir), f"cannot build on {node}: {exc}", node)
    name = f"{p.output_dir.parent.name}/{p.output_dir.name}"

    def progress(event: str, payload: Any) -> None:
        if event in ("phase", "note"):
            print(f"[{name}] {payload}", flush=True)

    b = Build(p, progress)
    error = None
    try:
        b.run()
    except OptpipeError as exc:  # failed or interrupted: the manifest says so and is recorded all the same
        error = str(exc)
    try:
        text = (b.out / "manifest.json").read_text()
        if Manifest.model_validate_json(text).started != b.started.isoformat():
            text = None  # another build's manifest: this one was refused before it claimed the directory
    except (OSError, ValueError):
        text = None
    return Outcome(text, str(b.out), error, node)


def _problem(field: str, value: object, message: str, config_file: str) -> InvalidInputError:
    return InvalidInputError([Problem(config_file, None, field, value, message)])


def _check_reachable(address: str, config_file: str) -> None:
    """Ray retries an unreachable address for minutes: a plain TCP connect says it in seconds."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise _problem("ray_address", address, "not a Ray address: use host:port, ray://host:port or auto", config_file)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise _problem(
            "ray_address",
            address,
            f"cannot reach a Ray cluster there ({exc.strerror or exc}): start one with `ray start --head`, "
            "or leave ray_address out to start a local one",
            config_file,
        ) from None


def connect(address: str | None, config_file: str) -> Any:
    """Import ray and join the cluster at `address`, or start a local one; exit 2 where neither works."""
    try:
        import ray
    except ImportError:
        raise _problem("executor", "ray", f"Ray is not installed: {INSTALL}, or use the local executor", config_file) from None
    if address:
        _check_reachable(address, config_file)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise _problem("ray_address", address or MISSING, f"cannot start or join a Ray cluster: {exc}", config_file) from None
    return ray


def unschedulable(job: Job, nodes: list[dict[str, Any]]) -> str:
    """Why no node of the cluster can ever run `job` ('' when one can): Ray would wait for ever."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    if job.num_gpus and not any(r.get("GPU", 0) >= job.num_gpus for r in alive):
        return f"needs {job.num_gpus:g} GPU(s) and no node of the Ray cluster has that many"
    if job.memory_bytes and not any(r.get("memory", 0) >= job.memory_bytes for r in alive):
        most = max((r.get("memory", 0) for r in alive), default=0)
        return f"needs {job.memory_bytes / 1e9:.1f} GB of memory (forecast) and the largest node offers {most / 1e9:.1f} GB"
    return ""


def run_jobs(ray: Any, jobs: list[Job], say: Callable[[str, Any], None]) -> Iterator[tuple[Job, Outcome]]:
    """Dispatch every job at once and yield each (job, outcome) as it finishes; on an interrupt the
    remaining tasks are cancelled (their builds resume from the cache next time)."""
    task = ray.remote(max_retries=0)(_build_task)
    nodes = ray.nodes()
    pending: dict[Any, Job] = {}
    for job in jobs:
        why = unschedulable(job, nodes)
        if why:
            yield job, Outcome(None, "", f"cannot run on this Ray cluster: {why}", "")
            continue
        ref = task.options(num_gpus=job.num_gpus, memory=job.memory_bytes or None, name=f"optpipe {job.name}").remote(
            job.recipe_json, job.recipe_file
        )
        pending[ref] = job
        say("phase", f"{job.name}: dispatched to Ray (num_gpus={job.num_gpus:g}, memory={job.memory_bytes / 1e9:.2f} GB)")
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except Exception as exc:  # the worker died (OOM kill, node lost): no manifest came back
                outcome = Outcome(None, "", f"the Ray task failed: {str(exc).strip().splitlines()[0]}", "")
            yield job, outcome
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def shutdown(ray: Any) -> None:
    ray.shutdown()


__all__ = ["INSTALL", "Job", "Outcome", "connect", "run_jobs", "shutdown", "unschedulable"]
