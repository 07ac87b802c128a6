"""A build's manifest as database rows (flattened figures for queries, the typed records as JSON)."""

from __future__ import annotations

from pathlib import Path

from optpipe.history.schema import BuildRow, CandidateRow
from optpipe.output.manifest import CandidateRecord, Manifest


def recipe_name(recipe_file: str) -> str:
    return Path(recipe_file).stem or recipe_file


def candidate_row(position: int, rec: CandidateRecord) -> CandidateRow:
    m = rec.measurements
    row = CandidateRow(
        position=position,
        pass_index=rec.index,
        name=rec.name,
        chain=rec.chain,
        status=rec.status,
        reason=rec.reason,
        cache_key=rec.cache_key,
        verdict=rec.verdict,
        seconds=rec.seconds,
        checks=[c.model_dump(mode="json") for c in rec.checks],
        measurements=m.model_dump(mode="json") if m is not None else None,
    )
    if m is None:
        return row
    row.size_bytes = m.size_bytes
    peak = m.peak_memory_bytes()
    row.peak_memory_bytes = None if peak != peak else peak  # NaN: nothing measured
    row.memory_kind = m.memory_kind()
    if m.benchmark is not None:
        row.decode_tok_s = m.benchmark.decode_tok_s.mean
        row.decode_tok_s_stdev = m.benchmark.decode_tok_s.stdev
        row.decode_trials = m.benchmark.decode_tok_s.n
        roof = m.benchmark.roofline
        if roof is not None and roof.projected is not None:
            row.projected_tok_s = roof.projected.decode_tok_s
    if m.hellaswag is not None:
        row.hellaswag_acc_norm = m.hellaswag.acc_norm
        row.hellaswag_acc_norm_se = m.hellaswag.acc_norm_se
        row.hellaswag_n = m.hellaswag.n
    if m.perplexity is not None:
        row.perplexity = m.perplexity.ppl
        row.perplexity_tokens = m.perplexity.tokens_scored
    if m.kl is not None:
        row.kl_mean, row.kl_se, row.kl_n = m.kl.mean, m.kl.se, m.kl.n
    return row


def build_row(manifest: Manifest, output_dir: Path, source_name: str | None = None) -> BuildRow:
    from optpipe.history.store import now

    return BuildRow(
        recipe_name=recipe_name(manifest.recipe_file),
        recipe_file=manifest.recipe_file,
        recipe_hash=manifest.recipe_hash,
        recipe=manifest.recipe,
        model=manifest.model.description,
        model_kind=manifest.model.kind,
        model_fingerprint=manifest.model.fingerprint,
        source_name=source_name,
        target=str(manifest.target.get("name", "?")),
        measured_on=manifest.measured_on,
        host=manifest.host,
        packages=manifest.packages,
        optpipe_version=manifest.optpipe_version,
        manifest_schema_version=manifest.schema_version,
        started=manifest.started,
        finished=manifest.updated,
        status=manifest.status,
        error=manifest.error,
        selected=manifest.selected,
        output_dir=str(Path(output_dir).resolve()),
        artifact_dir=manifest.artifact_dir,
        recorded_at=now(),
        candidates=[candidate_row(i, c) for i, c in enumerate(manifest.candidates)],
    )
