"""The history database's tables (SQLAlchemy 2 ORM). The schema is versioned by Alembic
(migrations/versions/): a change here needs a new migration, which `HistoryStore.open` applies.

One `builds` row per build (recorded from its manifest), one `candidates` row per candidate with the
figures a query or a comparison needs as columns, and the whole typed `Measurements` (per-item
HellaSwag scores, per-window perplexity NLL) as JSON, so paired comparisons stay possible later.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class BuildRow(Base):
    __tablename__ = "builds"
    __table_args__ = (UniqueConstraint("output_dir", "started", name="uq_build_output_started"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipe_name: Mapped[str] = mapped_column(String(255), index=True)  # the recipe file's stem
    recipe_file: Mapped[str] = mapped_column(Text)
    recipe_hash: Mapped[str] = mapped_column(String(64))
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)
    model: Mapped[str] = mapped_column(Text, index=True)  # where the model comes from (stays across releases)
    model_kind: Mapped[str] = mapped_column(String(32))
    model_fingerprint: Mapped[str] = mapped_column(String(64), index=True)  # the release's content hash
    source_name: Mapped[str | None] = mapped_column(String(255), nullable=True)  # the nightly source, if any
    target: Mapped[str] = mapped_column(String(64), index=True)
    measured_on: Mapped[str] = mapped_column(String(255))
    host: Mapped[dict[str, Any]] = mapped_column(JSON)
    packages: Mapped[dict[str, Any]] = mapped_column(JSON)
    optpipe_version: Mapped[str] = mapped_column(String(32))
    manifest_schema_version: Mapped[int] = mapped_column(Integer)
    started: Mapped[str] = mapped_column(String(40), index=True)  # ISO 8601 UTC, as in the manifest
    finished: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(32))
    error: Mapped[str] = mapped_column(Text, default="")
    selected: Mapped[str | None] = mapped_column(String(255), nullable=True)
    output_dir: Mapped[str] = mapped_column(Text)
    artifact_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    recorded_at: Mapped[str] = mapped_column(String(40))

    candidates: Mapped[list[CandidateRow]] = relationship(
        back_populates="build", cascade="all, delete-orphan", order_by="CandidateRow.position"
    )


class CandidateRow(Base):
    __tablename__ = "candidates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # order in the manifest
    pass_index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    chain: Mapped[list[Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    cache_key: Mapped[str] = mapped_column(String(64), default="")
    verdict: Mapped[str] = mapped_column(String(32), default="")
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    peak_memory_bytes: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_kind: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decode_tok_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    decode_tok_s_stdev: Mapped[float | None] = mapped_column(Float, nullable=True)
    decode_trials: Mapped[int | None] = mapped_column(Integer, nullable=True)
    projected_tok_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    hellaswag_acc_norm: Mapped[float | None] = mapped_column(Float, nullable=True)
    hellaswag_acc_norm_se: Mapped[float | None] = mapped_column(Float, nullable=True)
    hellaswag_n: Mapped[int | None] = mapped_column(Integer, nullable=True)
    perplexity: Mapped[float | None] = mapped_column(Float, nullable=True)
    perplexity_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kl_mean: Mapped[float | None] = mapped_column(Float, nullable=True)
    kl_se: Mapped[float | None] = mapped_column(Float, nullable=True)
    kl_n: Mapped[int | None] = mapped_column(Integer, nullable=True)
    checks: Mapped[list[Any]] = mapped_column(JSON)  # the budget lines (judge.budget.Check)
    measurements: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # measure.results.Measurements

    build: Mapped[BuildRow] = relationship(back_populates="candidates")
