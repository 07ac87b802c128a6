"""The build loop, top to bottom: plan -> baseline -> for each pass: its variants -> judge ->
keep the parent of the next pass / stop -> artifact.

manifest.json, report.md and report.html are rewritten atomically after every candidate, and measurements are
cached by content, so a killed build loses nothing it measured and resumes where it stopped. A
candidate that a pass or its measurement could not produce (`CandidateFailed`) is recorded and the
build goes on; any other exception is optpipe's own bug and ends the build loudly.

The output directory is the user's disk (output/directory.py): the build marks and locks it, deletes
only what it made, and leaves a manifest that says how it ended: MET / NOT MET / INCONCLUSIVE,
`interrupted` (SIGINT, SIGTERM) or `failed` (with the error), every measurement kept. artifact/
exists after a build exactly when its manifest says MET.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from optpipe.build.cache import KEY_PACKAGES, ResultCache, cache_key
from optpipe.build.noise import third_party_logs_to
from optpipe.build.plan import Plan, PlannedPass, plan, source_bytes
from optpipe.build.recipe import SCHEMA_VERSION, Recipe
from optpipe.build.search import budget_spent, smallest_first
from optpipe.errors import BuildInterrupted, CandidateFailed, InvalidInputError, OutputWriteError, PassFailed
from optpipe.evaluate.data import WIKITEXT_MD5
from optpipe.files import free_bytes, is_disk_full, normalize_modes, tree_size, write_json_atomic, write_text_atomic
from optpipe.judge.budget import Verdict, judge, judge_reference, overall
from optpipe.judge.ranking import build_status, select_artifact, select_parent
from optpipe.measure.bench import peak_rss_bytes
from optpipe.measure.job import EarlyStopJob, KLReferenceJob, ParentJob, measure_job
from optpipe.measure.launcher import run_isolated
from optpipe.measure.results import Measurements
from optpipe.output.artifact import remove_artifact, remove_leftovers, write_artifact
from optpipe.output.directory import OutputLock, WorkDir, claim_output_dir, stale_message
from optpipe.output.manifest import FAILED, INTERRUPTED, RUNNING, CandidateRecord, Manifest, ModelInfo
from optpipe.output.report import markdown
from optpipe.output.report_html import html_report
from optpipe.passes import PassContext, PassParams, get_pass, run_pass
from optpipe.passes.base import failures_as_pass_failed

Progress = Callable[[str, Any], None]
KL_REFERENCES_KEPT = 3


@dataclass
class Kept:
    """A measured candidate the build holds on to: its record, the live object and its saved files."""

    record: CandidateRecord
    candidate: Any
    directory: Path


@dataclass
class BuildResult:
    status: Verdict
    selected: CandidateRecord | None
    candidates: list[CandidateRecord]
    output_dir: Path
    artifact_dir: Path | None
    manifest: Manifest


def prune_kl_references(current: Path, keep: int = KL_REFERENCES_KEPT) -> None:
    """Reference log-probs are kl_tokens x vocab float32 (200 MB for SmolLM2 at 1024): a nightly
    build makes a new one whenever the model or stack changes. Keep the newest few; an older
    baseline that comes back is simply measured again."""
    refs = sorted(current.parent.glob("kl-reference-*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in refs if p != current][max(keep - 1, 0) :]:
        old.unlink(missing_ok=True)


def with_separate_ratio(m: Measurements, parent: CandidateRecord, confidence: float) -> None:
    """Where the worker could not time the candidate beside its parent, compare the two separate
    timings instead, labelled 'not interleaved' (a load that hit only one of them is not cancelled)."""
    from optpipe.measure.stats import separate_ratio_interval

    sv = m.speed_vs_parent
    pm = parent.measurements
    if sv is None or sv.interleaved or m.benchmark is None or pm is None or pm.benchmark is None:
        return
    ratio, low, high = separate_ratio_interval(m.benchmark.decode_tok_s, pm.benchmark.decode_tok_s, confidence)
    m.speed_vs_parent = sv.model_copy(update={"ratio": ratio, "low": low, "high": high})
    m.warnings = m.collect_warnings()


def _quiet(event: str, payload: Any) -> None:
    pass


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in label)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the build is, so it ends like a Ctrl-C: manifest `interrupted`, exit 130."""


@contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated()

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _disk_full(exc: BaseException | None) -> bool:
    while exc is not None:
        if is_disk_full(exc) or "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(path: Path, needed_bytes: int) -> OutputWriteError:
    return OutputWriteError(
        f"the disk is full: writing {path} needs about {needed_bytes} bytes ({needed_bytes / 1e9:.2f} GB), "
        f"{free_bytes(path)} bytes are free. Every measurement so far is in the manifest and the cache: "
        "free space (or choose an output_dir on another disk) and run the same command again"
    )


@contextmanager
def _writing(path: Path, needed_bytes: int) -> Iterator[None]:
    """A full disk while writing output is the user's to fix: a clear error, not a traceback."""
    try:
        yield
    except OSError as exc:
        if _disk_full(exc):
            raise disk_full_error(path, needed_bytes) from exc
        raise


def save_candidate(candidate: Any, directory: Path, needed_bytes: int = 0) -> None:
    """Save a candidate's files; a library refusing to serialize what a pass made is the pass's failure,
    a full disk is not (the next candidate could not be saved either)."""
    if directory.exists():
        shutil.rmtree(directory)
    try:
        with failures_as_pass_failed("saving the candidate failed: "):
            candidate.save(directory)
    except PassFailed as exc:
        if _disk_full(exc):
            shutil.rmtree(directory, ignore_errors=True)
            raise disk_full_error(directory, needed_bytes) from exc
        raise
    normalize_modes(directory)  # transformers writes weights 0600


class Build:
    """One build of a plan; `run()` does the work. Events go to `progress(event, payload)`."""

    def __init__(self, p: Plan, progress: Progress = _quiet, keep_candidates: bool = False):
        self.p = p
        self.progress = progress
        self.keep = keep_candidates
        self.out = p.output_dir
        self.work = self.out / "work"
        self.workdir = WorkDir(self.work)
        self.cache = ResultCache(self.out / ".cache")
        self.records: list[CandidateRecord] = []
        self.started = datetime.now(timezone.utc)
        self.model_fp = ""
        self.status = RUNNING
        self.error = ""
        self.notes: list[str] = []
        self.model_bytes = 0  # the baseline's files: about what saving one more candidate needs
        self.stopped = False  # stop: first and a candidate met every line
        self.selected: CandidateRecord | None = None
        self.artifact_dir: Path | None = None
        self.forecast: list[Any] = []  # forecast.CandidateForecast per candidate, when the model could be read
        self.perplexity_bos = False  # the tokenizer puts BOS before a text: perplexity windows start with it
        self.context = PassContext(
            target=p.target,
            host=p.env,
            device=p.device,
            evaluation=p.recipe.evaluation,
            work_dir=self.work,
            model=p.model,
            resume_dir=self.out / ".cache" / "resume",
            budget=p.recipe.budget,
        )

    # ------------------------------------------------------------------ the loop
    def run(self) -> BuildResult:
        """Claim and lock the output directory, build, and leave a manifest that says how it ended."""
        claim_output_dir(self.out, self.p.recipe_file)
        with OutputLock(self.out), _signals_as_interrupts():
            try:
                self._take_over()
                # third-party log records and warnings go to logs/build.log, not the console
                with third_party_logs_to(self.out / "logs" / "build.log"):
                    return self._run()
            except KeyboardInterrupt as exc:
                how = "SIGTERM" if isinstance(exc, _Terminated) else "SIGINT"
                self._end(INTERRUPTED, f"interrupted by {how}")
                raise BuildInterrupted(
                    f"interrupted ({how}) — run the same command again to resume from the cache "
                    f"(every measurement so far is in {self.out / 'manifest.json'})"
                ) from None
            except BaseException as exc:
                self._end(FAILED, f"{type(exc).__name__}: {str(exc).strip()}")
                raise
            finally:
                if not self.keep:
                    self._clean_work()

    def _take_over(self) -> None:
        """Clear what a killed build left (ours only) and say so if its manifest still says running."""
        remove_leftovers(self.out)
        self.workdir.open()
        previous = self.out / "manifest.json"
        if previous.exists():
            try:
                old = Manifest.model_validate_json(previous.read_text())
            except ValueError:
                old = None
            if old is not None and old.status == RUNNING:  # we hold the lock: its build is gone
                note = f"previous build interrupted: {stale_message(old.pid)}"
                self.notes.append(note)
                self.progress("note", note)
        self.save_progress()  # `running` with our pid, from the first moment

    def _end(self, status: str, error: str) -> None:
        """Record how an unfinished build ended, keeping every measurement (best effort: the disk may be full)."""
        self.status, self.error = status, error
        for rec in self.records:
            if rec.status == "pending":  # the candidate the build was working on
                rec.reason = rec.reason or f"not finished: build {status}"
        if (self.out / "artifact").exists() and self.artifact_dir is None:
            self.notes.append(
                "artifact/ is an earlier build's (its own manifest.json names its recipe): this build did not finish"
            )
        try:
            self.save_progress()
        except (OSError, OutputWriteError):
            pass

    def _clean_work(self) -> None:
        if not self.work.exists():
            return
        left = self.workdir.clean()
        if left:
            self.progress("note", f"left {self.work} in place: it holds files optpipe did not make ({', '.join(left[:5])})")

    def _run(self) -> BuildResult:
        self._forecast()
        parent = self._baseline()
        for step in self.p.passes:
            if self.stopped:
                self._record(
                    CandidateRecord(
                        index=step.index,
                        name=step.name,
                        chain=[],
                        status="not run",
                        reason="stopped at the first candidate that met the budget",
                    )
                )
            elif why := self._search_spent():
                self._record(CandidateRecord(index=step.index, name=step.name, chain=[], status="not run", reason=why))
            elif step.skip_reason:
                self._record(
                    CandidateRecord(index=step.index, name=step.name, chain=[], status="skipped", reason=step.skip_reason)
                )
            else:
                parent = self._run_step(step, parent)
        return self._finish()

    def _forecast(self) -> None:
        """Predict every candidate from config + headers before loading anything (`optpipe plan`)."""
        from optpipe.build.forecasting import forecast_recipe

        try:
            _, self.forecast = forecast_recipe(self.p.recipe, self.p.model, self.p.target, self.p.recipe_file)
        except InvalidInputError as exc:
            self.p.warnings.append(f"no forecast: {exc}")
            return
        for f in self.forecast:
            peak = f"{f.memory.peak_bytes / 1e9:.2f} GB" if f.memory else "?"
            fits = "yes" if f.fits else ("no" if f.memory else f"not forecast ({f.reason})")  # an unknown format is not a no
            self.progress("phase", f"forecast {f.name}: peak {peak} on {self.p.target.name}, fits: {fits}")

    def _baseline_cap(self) -> float | None:
        """The baseline is the accuracy reference: where the forecast says it cannot fit the target's
        cap, it is measured uncapped on this host (and its memory line is then NOT MET)."""
        cap = self.p.conditions.memory_cap_gb
        base = self.forecast[0] if self.forecast else None
        return None if base is not None and not base.fits else cap

    def _reference(self) -> str:
        """Where the accuracy reference was measured, when not under the cap like the candidates
        (derived from its measurements, so a cached baseline says it too)."""
        cap = self.p.conditions.memory_cap_gb
        base = self.records[0].measurements if self.records else None
        if cap is None or base is None or base.memory_cap_gb is not None:
            return ""
        forecast = self.forecast[0] if self.forecast else None
        why = (
            f"forecast {forecast.reason}"
            if forecast is not None and not forecast.fits
            else f"out of memory under the {cap:g} GB cap"
        )
        return f"measured uncapped on {self.p.env.gpu_name}: {why}"

    def _baseline(self) -> Kept:
        from optpipe.evaluate.perplexity import bos_prefix
        from optpipe.runtime.candidate import RuntimeSettings
        from optpipe.runtime.dtypes import dtype_name
        from optpipe.runtime.source import load_model
        from optpipe.runtime.torch_candidate import TorchCandidate

        p = self.p
        self.progress("phase", f"fingerprinting model ({p.model.describe()})")
        self.model_fp = p.model.fingerprint()
        self.progress("phase", f"loading model ({p.model.describe()})")
        t = time.perf_counter()
        model, tokenizer = load_model(p.model)  # the checkpoint's own dtype
        self.perplexity_bos = bos_prefix(tokenizer) is not None
        cand = TorchCandidate(
            model,
            tokenizer,
            RuntimeSettings(
                dtype=dtype_name(model.dtype), attn_implementation=model.config._attn_implementation, device=p.device
            ),
        )
        self.progress("phase", f"model loaded in {time.perf_counter() - t:.1f} s: {cand.num_parameters() / 1e6:.1f} M parameters")
        kept = self._candidate(0, "baseline", [], None, lambda: cand)
        assert kept is not None  # a failed baseline raises: nothing can be judged without it
        return kept

    def _run_step(self, step: PlannedPass, parent: Kept) -> Kept:
        """Every variant of one pass from the same parent; returns the candidate the next pass builds on."""
        from optpipe.runtime import load_candidate
        from optpipe.runtime.saved import SavedCandidate

        pass_cls = get_pass(step.name)
        variants = pass_cls.variants(step.params)
        if step.params.grid:  # a parameter search: smallest predicted size first (build/search.py)
            variants = smallest_first(variants, {f.name: f for f in self.forecast})
        tried: list[Kept] = []
        for label, params in variants:
            if why := self._search_spent():
                self._record(CandidateRecord(index=step.index, name=label, chain=[], status="not run", reason=why))
                continue
            if label in step.variant_skips:
                self._record(
                    CandidateRecord(index=step.index, name=label, chain=[], status="skipped", reason=step.variant_skips[label])
                )
                continue
            if len(variants) == 1:  # an in-place pass works on the live candidate
                source = parent.candidate
            else:  # alternatives each start from the parent as saved, loaded only if the pass needs the model
                source = SavedCandidate(parent.directory, device=self.p.device)
            ctx = replace(self.context, parent_dir=parent.directory)
            params = pass_cls.resolve(params, ctx)  # defaults derived from the build, before the cache key
            self.progress("phase", f"applying {label} {params.chain_params()}")
            kept = self._candidate(
                step.index,
                label,
                parent.record.chain,
                params,
                lambda s=source, v=params, c=ctx: run_pass(pass_cls, s, v, c),
                parent,
            )
            if kept is not None:
                tried.append(kept)
                if self._stops(kept.record):
                    self.stopped = True
                    break
        if not tried:
            if len(variants) == 1:  # the failed pass may have changed the live model in place
                self.progress("phase", f"{step.name} failed; continuing from the previous candidate")
                parent.candidate = load_candidate(parent.directory, device=self.p.device)
            return parent
        best = tried[
            select_parent([k.record.verdict for k in tried], [k.record.measurements for k in tried], self.p.recipe.objective)
        ]
        self._discard([k for k in tried if k is not best] + [parent])
        return best

    def _finish(self) -> BuildResult:
        verdicts = [r.verdict for r in self.records]
        chosen = select_artifact(verdicts, [r.measurements for r in self.records], self.p.recipe.stop, self.p.recipe.objective)
        self.status = build_status(verdicts).value
        artifact = self.out / "artifact"
        if chosen is not None:
            self.selected = self.records[chosen]
            self.artifact_dir = artifact
            self.save_progress()
            source = Path(self.selected.directory)
            with _writing(artifact, tree_size(source)):
                write_artifact(source, artifact, self.manifest())
        elif remove_artifact(artifact):  # a deploy script that checks for artifact/ must not ship an earlier model
            note = f"removed the earlier build's {artifact}: this build is {self.status}, so there is no artifact"
            self.notes.append(note)
            self.progress("note", note)
        self.save_progress()
        return BuildResult(Verdict(self.status), self.selected, self.records, self.out, self.artifact_dir, self.manifest())

    # ------------------------------------------------------------------ one candidate
    def _candidate(
        self,
        index: int,
        label: str,
        parent_chain: list[dict[str, Any]],
        params: PassParams | None,
        make: Callable[[], Any],
        parent: Kept | None = None,
    ) -> Kept | None:
        """Make, save, measure and judge one candidate. A CandidateFailed is recorded (traceback in
        logs/) and returns None; everything measured before stays in the manifest."""
        rec = CandidateRecord(index=index, name=label, chain=list(parent_chain))
        self.records.append(rec)
        t0 = time.perf_counter()
        cand_dir = self.workdir.track(f"{index:02d}-{_slug(label)}")
        self.workdir.track(f"{cand_dir.name}.job")
        try:
            cand = make()
            if params is not None:
                rec.chain = parent_chain + [params.chain_params() | {"pass_version": get_pass(params.kind).version}]
            rec.cache_key = self._key(rec.chain)
            save_candidate(cand, cand_dir, self.model_bytes or source_bytes(self.p.model))
            if index == 0:
                self.model_bytes = tree_size(cand_dir)
            self._measure(rec, cand_dir, parent)
        except CandidateFailed as exc:
            if index == 0:
                raise
            self._record_failure(rec, exc, cand_dir)
            return None
        self._judge(rec)
        rec.seconds = time.perf_counter() - t0
        rec.directory = str(cand_dir)
        self.progress("candidate", rec)
        self.save_progress()
        return Kept(rec, self._held(cand, cand_dir), cand_dir)

    def _held(self, cand: Any, cand_dir: Path) -> Any:
        """What the build holds of a kept candidate: its files, not the live model, so this process has
        one copy of the weights at a time (the next pass loads it again only if it needs the model).
        Quantized candidates stay live: transformers 5 cannot save a quantized checkpoint it loaded
        back (NotImplementedError in core_model_loading's reverse ops), and they are the small ones."""
        from optpipe.runtime.saved import SavedCandidate

        if cand.settings.format == "transformers" and not cand.settings.quantization:
            return SavedCandidate(cand_dir, device=self.p.device)
        return cand

    def _measure(self, rec: CandidateRecord, cand_dir: Path, parent: Kept | None = None) -> None:
        r = self.p.recipe
        kl_ref = self._kl_reference()
        cached = self.cache.get(rec.cache_key)
        # a cached baseline whose reference log-probs are gone is measured again: later KLs need them
        if cached is not None and not (rec.index == 0 and r.evaluation.kl_tokens and not kl_ref.exists()):
            rec.measurements, rec.status = cached, "cached"
            return
        cap = self._baseline_cap() if rec.index == 0 else self.p.conditions.memory_cap_gb
        rec.measurements = self._run_job(rec, cand_dir, kl_ref, cap, parent)
        if rec.index == 0 and rec.measurements.out_of_memory and cap is not None:
            # the reference must exist: measure it where it fits, uncapped on this host
            self.progress("phase", f"baseline does not fit the {cap:g} GB cap; measuring the reference uncapped")
            rec.measurements = self._run_job(rec, cand_dir, kl_ref, None)
        if parent is not None:
            with_separate_ratio(rec.measurements, parent.record, self.p.recipe.budget.confidence)
        rec.status = "measured"
        with _writing(self.cache.root, 1 << 20):
            self.cache.put(rec.cache_key, rec.measurements)
        if rec.index == 0:
            prune_kl_references(kl_ref)

    def _kl_reference(self) -> Path:
        """The baseline's log-probs, in the cache root (shared across output directories with
        OPTPIPE_CACHE_DIR), keyed by what determines them, so a new output directory reuses them."""
        p = self.p
        key = cache_key(
            {
                "kl_reference": 1,
                "model": self.model_fp,
                "device": p.device,
                "gpu": p.env.gpu_name,
                "evaluation": p.recipe.evaluation.model_dump(),
                "eval_data": WIKITEXT_MD5,
                "packages": {k: p.env.packages.get(k) for k in KEY_PACKAGES},
            }
        )
        return self.cache.root / f"kl-reference-{key}.pt"

    def _run_job(
        self, rec: CandidateRecord, cand_dir: Path, kl_ref: Path, cap: float | None, parent: Kept | None = None
    ) -> Measurements:
        r = self.p.recipe
        parent_job = None
        if parent is not None and parent.directory.exists():
            parent_job = ParentJob(
                directory=str(parent.directory),
                name=f"{parent.record.index} {parent.record.name}",
                confidence=r.budget.confidence,
            )
        job = measure_job(
            cand_dir,
            self.p.device,
            r.evaluation,
            r.benchmark,
            KLReferenceJob(path=str(kl_ref), write=rec.index == 0),
            cap,
            self.p.conditions.projection,
            parent_job,
        )
        if rec.index > 0:
            job = job.model_copy(update={"early_stop": self._early_stop_job()})
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return run_isolated(
            job,
            cand_dir.parent / f"{cand_dir.name}.job",
            logs / f"{cand_dir.name}.log",
            on_progress=lambda msg: self.progress("measure", (rec, msg)),
        )

    def _early_stop_job(self) -> EarlyStopJob | None:
        """What the worker needs to stop a candidate's evaluation early: the budget and the baseline's
        per-item and per-window results it pairs with (docs/search.md). None when the recipe has it off."""
        r = self.p.recipe
        base = self.records[0].measurements if self.records else None
        if not r.search.early_stop or base is None:
            return None
        s, hs, ppl = r.search, base.hellaswag, base.perplexity
        return EarlyStopJob(
            confidence=r.budget.confidence,
            hellaswag_max_drop_points=r.budget.hellaswag_max_drop_points,
            perplexity_max_rise_pct=r.budget.perplexity_max_rise_pct,
            min_items=s.min_items,
            chunk_items=s.chunk_items,
            min_windows=s.min_windows,
            chunk_windows=s.chunk_windows,
            base_items=dict(zip(hs.item_indices, hs.item_acc_norm)) if hs is not None else {},
            base_window_nll=ppl.window_nll if ppl is not None else [],
            base_window_tokens=ppl.window_tokens if ppl is not None else [],
        )

    def _judge(self, rec: CandidateRecord) -> None:
        budget, goals = self.p.recipe.budget, self.p.recipe.goals
        assert rec.measurements is not None and self.records[0].measurements is not None
        if rec.index == 0:
            checks = judge_reference(rec.measurements, budget, goals)
        else:
            checks = judge(self.records[0].measurements, rec.measurements, budget, goals)
        rec.checks = checks
        rec.verdict = overall(checks).value

    # ------------------------------------------------------------------ bookkeeping
    def _search_spent(self) -> str:
        built = sum(1 for r in self.records if r.index > 0 and r.status in ("measured", "cached", "failed"))
        minutes = (datetime.now(timezone.utc) - self.started).total_seconds() / 60
        return budget_spent(self.p.recipe.search, built, minutes)

    def _stops(self, rec: CandidateRecord) -> bool:
        return rec.verdict == Verdict.MET.value and self.p.recipe.stop == "first"

    def _record(self, rec: CandidateRecord) -> None:
        self.records.append(rec)
        self.progress("candidate", rec)
        self.save_progress()

    def _record_failure(self, rec: CandidateRecord, exc: CandidateFailed, cand_dir: Path) -> None:
        message = str(exc).splitlines()[0] if str(exc) else ""
        rec.status = "failed"
        rec.reason = message if isinstance(exc, PassFailed) else f"{type(exc).__name__}: {message}"
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"{rec.index:02d}-{_slug(rec.name)}.error.txt").write_text(traceback.format_exc())
        self.progress("candidate", rec)
        self.save_progress()
        shutil.rmtree(cand_dir, ignore_errors=True)

    def _discard(self, dropped: list[Kept]) -> None:
        """Free the files of candidates no later step needs (kept with --keep-candidates, or when MET:
        the artifact may come from them)."""
        if self.keep:
            return
        for k in dropped:
            if k.record.verdict != Verdict.MET.value:
                shutil.rmtree(k.directory, ignore_errors=True)

    def _key(self, chain: list[dict[str, Any]]) -> str:
        p, r = self.p, self.p.recipe
        bos = {"perplexity_bos": True} if self.perplexity_bos else {}  # without BOS: as measured before it existed
        if r.search.early_stop and chain:  # an early-stopped measurement depends on the budget it stopped for
            search = r.search.model_dump(include={"min_items", "chunk_items", "min_windows", "chunk_windows"})
            bos |= {"early_stop": search | r.budget.model_dump()}
        return cache_key(
            bos
            | {
                "model": self.model_fp,
                "chain": chain,
                "device": p.device,
                "gpu": p.env.gpu_name,
                "cpu": p.env.cpu,
                "evaluation": r.evaluation.model_dump(),
                "benchmark": r.benchmark.model_dump(),
                "packages": {k: p.env.packages.get(k) for k in KEY_PACKAGES},
                "eval_data": WIKITEXT_MD5,  # a different evaluation text is a different measurement
                "memory_cap_gb": p.conditions.memory_cap_gb,  # an OOM under one cap says nothing about another
                "projection": p.conditions.projection.target if p.conditions.projection else None,
            }
        )

    def manifest(self) -> Manifest:
        from optpipe import __version__

        p = self.p
        return Manifest(
            recipe_schema_version=SCHEMA_VERSION,
            optpipe_version=__version__,
            recipe_file=p.recipe_file,
            recipe_hash=p.recipe.content_hash(),
            recipe=p.recipe.model_dump(mode="json", by_alias=True),
            model=ModelInfo(description=p.model.describe(), kind=p.model.kind, fingerprint=self.model_fp),
            target=p.target.model_dump(mode="json"),
            measured_on=p.device if p.device == "cpu" else f"{p.device} ({p.env.gpu_name})",
            host=p.env.to_dict(),
            packages=p.env.packages,
            started=self.started.isoformat(),
            updated=datetime.now(timezone.utc).isoformat(),
            status=self.status,
            pid=os.getpid(),
            error=self.error,
            notes=self.notes,
            selected=self.selected.name if self.selected else None,
            artifact_dir=str(self.artifact_dir) if self.artifact_dir else None,
            pass_chain=[pp.params.chain_params() for pp in p.passes],
            warnings=p.warnings,
            reference=self._reference(),
            build_process_peak_rss_bytes=peak_rss_bytes(),
            forecast=[f.model_dump(mode="json") for f in self.forecast],
            candidates=self.records,
        )

    def save_progress(self) -> None:
        m = self.manifest()
        with _writing(self.out / "manifest.json", 1 << 20):
            write_json_atomic(self.out / "manifest.json", m)
            write_text_atomic(self.out / "report.md", markdown(m))
            write_text_atomic(self.out / "report.html", html_report(m))


def build(
    recipe: Recipe, recipe_file: str | Path = "<recipe>", progress: Progress = _quiet, keep_candidates: bool = False
) -> BuildResult:
    """Python API: `optpipe.build(Recipe.load(path))`."""
    return Build(plan(recipe, recipe_file), progress, keep_candidates).run()
