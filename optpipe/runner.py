"""The build loop: plan (validate everything, check every pass's requirements), load the model,
measure the baseline, apply passes cumulatively, measure and judge each candidate, stop at the
first that meets every budget (or rank them all with stop: best), write the artifact.

manifest.json and report.md are rewritten atomically after every candidate, and measurements
are cached by content, so a killed build loses nothing it measured and resumes where it stopped.
"""
from __future__ import annotations

import shutil
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from optpipe.budget import GB, Verdict, judge, overall, peak_memory_bytes
from optpipe.cache import KEY_PACKAGES, ResultCache, cache_key
from optpipe.errors import MISSING, InvalidInputError, Problem
from optpipe.passes import PassParams, get_pass
from optpipe.recipe import SCHEMA_VERSION, Recipe

MANIFEST_SCHEMA_VERSION = 1


@dataclass
class PlannedPass:
    index: int
    params: PassParams
    skip_reason: str | None = None
    variant_skips: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.params.kind


@dataclass
class Plan:
    recipe: Recipe
    recipe_file: str
    target: Any
    env: Any
    device: str
    model: Any  # ResolvedModel
    passes: list[PlannedPass]
    output_dir: Path
    warnings: list[str] = field(default_factory=list)


def plan(recipe: Recipe, recipe_file: str | Path = "<recipe>", env: Any = None) -> Plan:
    """Check everything that can be checked before loading a model; report all problems at once."""
    from optpipe.hostenv import HostEnv
    from optpipe.models import resolve_model
    from optpipe.targets import load_target

    recipe_file = str(recipe_file)
    base_dir = Path(recipe_file).parent if recipe_file != "<recipe>" else Path.cwd()
    env = env or HostEnv.detect()
    target = load_target(recipe.target)
    problems: list[Problem] = []
    model = None
    try:
        model = resolve_model(recipe.model.source, recipe.model.gguf_file, recipe.model.revision,
                              recipe.model.trust_remote_code, base_dir=base_dir, origin=recipe_file)
    except InvalidInputError as exc:
        problems += exc.problems

    device = recipe.device
    if device == "auto":
        device = "cuda" if (target.is_gpu and env.has_cuda) else "cpu"
    if device == "cuda" and not env.has_cuda:
        problems.append(Problem(recipe_file, None, "device", recipe.device, "this host has no CUDA device; use device: cpu or build on a GPU host"))
    warnings: list[str] = []
    if target.has_cuda and device == "cpu":
        # Accuracy can be built and judged here; speed and memory of a GPU cannot be measured or
        # projected from a CPU, so goals that rest on them are refused rather than guessed.
        for name in ("min_decode_tok_s", "max_p95_token_latency_ms", "max_memory_gb"):
            value = getattr(recipe.goals, name)
            if value is not None:
                problems.append(Problem(
                    recipe_file, None, f"goals.{name}", value,
                    f"{target.name} is a CUDA target and this host has no CUDA device: this goal can be neither "
                    "measured nor projected here. Run on a CUDA host (any NVIDIA GPU: figures are projected to "
                    "the target), or remove the goal to build for accuracy only on this CPU"))
        warnings.append(f"building for {target.name} on a CPU-only host: accuracy is real, speed figures are this "
                        "CPU's and say nothing about the target")
    elif device == "cpu" and target.kind != "cpu":
        warnings.append(f"speed and memory are measured on this host's CPU ({env.cpu}), not on {target.display_name}")
    if device == "cuda" and not host_is_target(target, env):
        warnings.append(f"measuring on {env.gpu_name}, not on {target.display_name}: memory is capped to the target's "
                        f"{target.memory_gb:g} GB and decode speed is projected from the measured fraction of roofline "
                        f"to {target.memory_bandwidth_gbs:g} GB/s; projected figures are labelled")

    planned: list[PlannedPass] = []
    for i, params in enumerate(recipe.passes):
        pass_cls = get_pass(params.kind)
        pp = PlannedPass(i + 1, params)
        variants = pass_cls.variants(params)
        if len(variants) > 1:  # judge each alternative on its own; the pass fails only if none can run
            per = {label: pass_cls.requirements(v, target, env) for label, v in variants}
            bad = {label: "; ".join(r) for label, r in per.items() if r}
            if bad and params.on_unsupported == "skip" and len(bad) < len(variants):
                pp.variant_skips = bad
                reasons = []
            else:
                reasons = [f"{label}: {why}" for label, why in bad.items()]
        else:
            reasons = pass_cls.requirements(params, target, env)
        if reasons:
            if params.on_unsupported == "skip":
                pp.skip_reason = "; ".join(reasons)
            else:
                for r in reasons:
                    problems.append(Problem(recipe_file, None, f"passes[{i}] ({params.kind})", MISSING,
                                            r + " (set on_unsupported: skip to skip this pass instead)"))
        planned.append(pp)
    if problems:
        if Path(recipe_file).is_file():
            from dataclasses import replace

            from optpipe.recipe import field_line

            problems = [replace(pr, line=pr.line or field_line(recipe_file, pr.field)) for pr in problems]
        raise InvalidInputError(problems)
    stem = Path(recipe_file).stem if recipe_file != "<recipe>" else "recipe"
    out = Path(recipe.output_dir.format(recipe=stem))
    return Plan(recipe, recipe_file, target, env, device, model, planned, out, warnings)


def host_is_target(target: Any, env: Any) -> bool:
    """Whether the GPU we measure on is the target device itself (then nothing is projected).
    Matches the target's model token (rtx4060, a100, h100, l4) against the GPU name's words."""
    import re

    if not env.gpu_name:
        return False
    words = re.findall(r"[a-z0-9]+", env.gpu_name.lower())
    tokens = set(words) | {a + b for a, b in zip(words, words[1:])}
    return target.name.split("-")[0] in tokens


def gpu_job_settings(p: "Plan") -> dict[str, Any]:
    """On a GPU host that is not the target: cap memory to the target's VRAM (so OOM is real) and
    ask the worker to project decode speed to the target's bandwidth (labelled projected)."""
    if p.device != "cuda" or host_is_target(p.target, p.env):
        return {}
    out: dict[str, Any] = {"projection": {"target": p.target.name, "bandwidth_gbs": p.target.memory_bandwidth_gbs}}
    if p.env.gpu_memory_gb and p.target.memory_gb < p.env.gpu_memory_gb:
        out["memory_cap_gb"] = p.target.memory_gb
    return out


@dataclass
class CandidateRecord:
    index: int
    name: str
    chain: list[dict[str, Any]]
    status: str = "pending"  # measured | cached | skipped | failed
    reason: str = ""
    cache_key: str = ""
    measurements: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    verdict: str = ""
    seconds: float = 0.0
    directory: str = ""  # working directory of its files during the build

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class BuildResult:
    status: Verdict
    selected: CandidateRecord | None
    candidates: list[CandidateRecord]
    output_dir: Path
    artifact_dir: Path | None
    manifest: dict[str, Any]


Progress = Callable[[str, Any], None]


KL_REFERENCES_KEPT = 3


def prune_kl_references(current: Path, keep: int = KL_REFERENCES_KEPT) -> None:
    """Reference log-probs are kl_tokens x vocab float32 (200 MB for SmolLM2 at 1024): a nightly
    build makes a new one whenever the model or stack changes. Keep the newest few; an older
    baseline that comes back is simply measured again."""
    refs = sorted(current.parent.glob("kl-reference-*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in refs if p != current][max(keep - 1, 0):]:
        old.unlink(missing_ok=True)


def _quiet(event: str, payload: Any) -> None:
    pass


class Build:
    """One build of a plan; `run()` does the work. Events go to `progress(event, payload)`."""

    def __init__(self, p: Plan, progress: Progress = _quiet, keep_candidates: bool = False):
        self.p = p
        self.progress = progress
        self.keep = keep_candidates
        self.out = p.output_dir
        self.cache = ResultCache(self.out / ".cache")
        self.records: list[CandidateRecord] = []
        self.started = datetime.now(timezone.utc)
        self.model_fp = ""
        self.status = "running"
        self.selected: CandidateRecord | None = None
        self.artifact_dir: Path | None = None

    # ------------------------------------------------------------------ bookkeeping
    def manifest(self) -> dict[str, Any]:
        p = self.p
        from optpipe import __version__

        return {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "recipe_schema_version": SCHEMA_VERSION,
            "optpipe_version": __version__,
            "recipe_file": p.recipe_file,
            "recipe_hash": p.recipe.content_hash(),
            "recipe": p.recipe.model_dump(mode="json", by_alias=True),
            "model": {"description": p.model.describe(), "kind": p.model.kind, "fingerprint": self.model_fp},
            "target": p.target.model_dump(mode="json"),
            "measured_on": p.device if p.device == "cpu" else f"{p.device} ({p.env.gpu_name})",
            "host": p.env.to_dict(),
            "packages": p.env.packages,
            "started": self.started.isoformat(),
            "updated": datetime.now(timezone.utc).isoformat(),
            "status": self.status,
            "selected": self.selected.name if self.selected else None,
            "artifact_dir": str(self.artifact_dir) if self.artifact_dir else None,
            "pass_chain": [pp.params.chain_params() for pp in p.passes],
            "warnings": p.warnings,
            "candidates": [r.to_dict() for r in self.records],
        }

    def save_progress(self) -> None:
        from optpipe.measure.worker import write_json_atomic
        from optpipe.report import markdown

        self.out.mkdir(parents=True, exist_ok=True)
        m = self.manifest()
        write_json_atomic(self.out / "manifest.json", m)
        tmp = self.out / "report.md.tmp"
        tmp.write_text(markdown(m))
        tmp.replace(self.out / "report.md")

    def _key(self, chain: list[dict[str, Any]]) -> str:
        r = self.p.recipe
        return cache_key({
            "model": self.model_fp, "chain": chain, "device": self.p.device,
            "gpu": self.p.env.gpu_name, "cpu": self.p.env.cpu,
            "evaluation": r.evaluation.model_dump(), "benchmark": r.benchmark.model_dump(),
            "packages": {k: self.p.env.packages.get(k) for k in KEY_PACKAGES},
        })

    # ------------------------------------------------------------------ steps
    def _measure(self, rec: CandidateRecord, cand_dir: Path) -> None:
        from optpipe.measure.worker import run_isolated

        r = self.p.recipe
        kl_ref = self.out / ".cache" / f"kl-reference-{self.records[0].cache_key}.pt"  # records[0]: the baseline
        cached = self.cache.get(rec.cache_key)
        # a cached baseline whose reference log-probs are gone is measured again: later KLs need them
        if cached is not None and not (rec.index == 0 and r.evaluation.kl_tokens and not kl_ref.exists()):
            rec.measurements, rec.status = cached, "cached"
            return
        job = {
            "candidate_dir": str(cand_dir), "device": self.p.device,
            "benchmark": r.benchmark.model_dump(), "evaluation": r.evaluation.model_dump(),
            "kl_reference": {"path": str(kl_ref), "write": rec.index == 0},
        } | gpu_job_settings(self.p)
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        rec.measurements = run_isolated(job, cand_dir.parent / f"{cand_dir.name}.job", logs / f"{cand_dir.name}.log",
                                        on_progress=lambda msg: self.progress("measure", (rec, msg)))
        rec.status = "measured"
        self.cache.put(rec.cache_key, rec.measurements)
        if rec.index == 0:
            prune_kl_references(kl_ref)

    def _judge(self, rec: CandidateRecord) -> None:
        from optpipe.budget import Check

        base = self.records[0].measurements or {}
        checks = judge(base, rec.measurements or {}, self.p.recipe.budget, self.p.recipe.goals)
        if rec.index == 0:  # the baseline is the reference: its accuracy deltas are 0 by definition
            checks = [Check(c.name, c.limit, 0.0, 0.0, 0.0, Verdict.MET, "baseline (reference)")
                      if c.name in ("hellaswag_drop_points", "perplexity_rise_pct") else c for c in checks]
        rec.checks = [c.to_dict() for c in checks]
        rec.verdict = overall(checks).value

    def run(self) -> BuildResult:
        from optpipe.models import load_model
        from optpipe.runtime import RuntimeSettings, TorchCandidate, dtype_name, load_any as load_candidate

        p = self.p
        work = self.out / "work"
        work.mkdir(parents=True, exist_ok=True)
        self.progress("phase", f"fingerprinting model ({p.model.describe()})")
        self.model_fp = p.model.fingerprint()
        self.progress("phase", f"loading model ({p.model.describe()})")
        t = time.perf_counter()
        model, tokenizer = load_model(p.model, "fp32")
        cand = TorchCandidate(model, tokenizer, RuntimeSettings(
            dtype=dtype_name(model.dtype), attn_implementation=model.config._attn_implementation, device=p.device))
        self.progress("phase", f"model loaded in {time.perf_counter() - t:.1f} s: {cand.num_parameters() / 1e6:.1f} M parameters")

        base_cand = cand
        rec, cand, cur_dir = self._candidate(work, 0, "baseline", [], None, lambda: base_cand)
        chain = rec.chain
        stop = self._met_first(rec)
        for step in p.passes:
            if stop:
                rec_not_run = CandidateRecord(step.index, step.name, [], "not run",
                                              "stopped at the first candidate that met the budget")
                self.records.append(rec_not_run)
                self.progress("candidate", rec_not_run)
                continue
            if step.skip_reason:
                self._record_skip(step.index, step.name, step.skip_reason)
                continue
            pass_cls = get_pass(step.name)
            variants = pass_cls.variants(step.params)
            measured: list[tuple[CandidateRecord, Any, Path]] = []
            for label, vparams in variants:
                if label in step.variant_skips:
                    self._record_skip(step.index, label, step.variant_skips[label])
                    continue
                if len(variants) == 1:  # in-place passes work on the current candidate
                    make = lambda v=vparams: pass_cls.apply(cand, v)  # noqa: E731
                else:  # alternatives: each starts from the parent as saved
                    make = lambda v=vparams: pass_cls.apply(load_candidate(cur_dir, device=p.device), v)  # noqa: E731
                self.progress("phase", f"applying {label} {vparams.chain_params()}")
                vrec, vcand, vdir = self._candidate(work, step.index, label, chain, vparams, make)
                if vcand is not None:
                    measured.append((vrec, vcand, vdir))
                    if self._met_first(vrec):
                        stop = True
                        break
            if not measured:
                if len(variants) == 1:  # the failed pass may have changed the model in place
                    self.progress("phase", f"{step.name} failed; continuing from the previous candidate")
                    cand = load_candidate(cur_dir, device=p.device)
                continue
            met = [m for m in measured if m[0].verdict == Verdict.MET.value]
            best = met[0] if met else min(measured, key=lambda m: self._rank_key(m[0]))
            for vrec, _, vdir in measured:
                if vdir != best[2] and vrec.verdict != Verdict.MET.value and not self.keep:
                    shutil.rmtree(vdir, ignore_errors=True)
            if cur_dir is not None and not self.keep and rec.verdict != Verdict.MET.value:
                shutil.rmtree(cur_dir, ignore_errors=True)
            rec, cand, cur_dir = best
            chain = rec.chain
        return self._finish(work)

    def _met_first(self, rec: CandidateRecord) -> bool:
        return rec.verdict == Verdict.MET.value and self.p.recipe.stop == "first"

    def _record_skip(self, index: int, name: str, reason: str) -> None:
        rec = CandidateRecord(index, name, [], "skipped", reason)
        self.records.append(rec)
        self.progress("candidate", rec)
        self.save_progress()

    def _candidate(self, work: Path, index: int, label: str, parent_chain: list[dict[str, Any]],
                   params: PassParams | None, make: Callable[[], Any]) -> tuple[CandidateRecord, Any, Path | None]:
        """Make, save, measure and judge one candidate. A failure is recorded (traceback in logs/)
        and returns no candidate; everything measured before stays in the manifest."""
        rec = CandidateRecord(index, label, list(parent_chain))
        self.records.append(rec)
        t0 = time.perf_counter()
        slug = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in label)
        cand_dir = work / f"{index:02d}-{slug}"
        try:
            from optpipe.calibration import evaluation_tokens

            with evaluation_tokens(self.p.recipe.evaluation.perplexity_tokens):  # calibration stays disjoint
                cand = make()
            if params is not None:
                rec.chain = parent_chain + [params.chain_params() | {"pass_version": get_pass(params.kind).version}]
            rec.cache_key = self._key(rec.chain)
            if cand_dir.exists():
                shutil.rmtree(cand_dir)
            cand.save(cand_dir)
            self._measure(rec, cand_dir)
        except Exception as exc:  # one failing pass must not lose what was measured
            rec.status, rec.reason = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            logs = self.out / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            (logs / f"{index:02d}-{slug}.error.txt").write_text(traceback.format_exc())
            self.progress("candidate", rec)
            self.save_progress()
            shutil.rmtree(cand_dir, ignore_errors=True)
            if index == 0:
                raise
            return rec, None, None
        self._judge(rec)
        rec.seconds = time.perf_counter() - t0
        rec.directory = str(cand_dir)
        self.progress("candidate", rec)
        self.save_progress()
        return rec, cand, cand_dir

    def _eligible(self) -> list[CandidateRecord]:
        return [r for r in self.records if r.verdict == Verdict.MET.value]

    def _rank_key(self, rec: CandidateRecord):
        m = rec.measurements or {}
        obj = self.p.recipe.objective
        if obj == "decode_tok_s":  # rank by the interval's lower bound: an unstable figure ranks low
            s = (m.get("benchmark") or {}).get("decode_tok_s") or {}
            if not s:
                return 0.0
            return -(s["mean"] - 1.96 * s["stdev"] / max(s["n"], 1) ** 0.5)
        if obj == "size_gb":
            return m.get("size_bytes", float("inf"))
        return peak_memory_bytes(m)

    def _finish(self, work: Path) -> BuildResult:
        from optpipe.artifacts import write_artifact

        ok = self._eligible()
        if ok:
            self.selected = ok[0] if self.p.recipe.stop == "first" else min(ok, key=self._rank_key)
            status = Verdict.MET
        else:
            measured = [r for r in self.records if r.verdict]
            status = Verdict.INCONCLUSIVE if any(r.verdict == Verdict.INCONCLUSIVE.value for r in measured) else Verdict.NOT_MET
        self.status = status.value
        if self.selected is not None:
            src = Path(self.selected.directory)
            self.artifact_dir = self.out / "artifact"
            self.save_progress()
            write_artifact(src, self.artifact_dir, self.manifest())
        self.save_progress()
        if not self.keep:
            shutil.rmtree(work, ignore_errors=True)
            for job in self.out.glob("work/*.job"):
                shutil.rmtree(job, ignore_errors=True)
        m = self.manifest()
        return BuildResult(status, self.selected, self.records, self.out, self.artifact_dir, m)


def build(recipe: Recipe, recipe_file: str | Path = "<recipe>", progress: Progress = _quiet,
          keep_candidates: bool = False) -> BuildResult:
    """Python API: `optpipe.build(Recipe.load(path))`."""
    return Build(plan(recipe, recipe_file), progress, keep_candidates).run()
