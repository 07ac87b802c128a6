"""builds and candidates

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "builds",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("recipe_name", sa.String(255), nullable=False),
        sa.Column("recipe_file", sa.Text(), nullable=False),
        sa.Column("recipe_hash", sa.String(64), nullable=False),
        sa.Column("recipe", sa.JSON(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("model_kind", sa.String(32), nullable=False),
        sa.Column("model_fingerprint", sa.String(64), nullable=False),
        sa.Column("source_name", sa.String(255), nullable=True),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("measured_on", sa.String(255), nullable=False),
        sa.Column("host", sa.JSON(), nullable=False),
        sa.Column("packages", sa.JSON(), nullable=False),
        sa.Column("optpipe_version", sa.String(32), nullable=False),
        sa.Column("manifest_schema_version", sa.Integer(), nullable=False),
        sa.Column("started", sa.String(40), nullable=False),
        sa.Column("finished", sa.String(40), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("selected", sa.String(255), nullable=True),
        sa.Column("output_dir", sa.Text(), nullable=False),
        sa.Column("artifact_dir", sa.Text(), nullable=True),
        sa.Column("recorded_at", sa.String(40), nullable=False),
        sa.UniqueConstraint("output_dir", "started", name="uq_build_output_started"),
    )
    for col in ("recipe_name", "model", "model_fingerprint", "target", "started"):
        op.create_index(f"ix_builds_{col}", "builds", [col])
    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("build_id", sa.Integer(), sa.ForeignKey("builds.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("pass_index", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("chain", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("peak_memory_bytes", sa.Float(), nullable=True),
        sa.Column("memory_kind", sa.String(64), nullable=True),
        sa.Column("decode_tok_s", sa.Float(), nullable=True),
        sa.Column("decode_tok_s_stdev", sa.Float(), nullable=True),
        sa.Column("decode_trials", sa.Integer(), nullable=True),
        sa.Column("projected_tok_s", sa.Float(), nullable=True),
        sa.Column("hellaswag_acc_norm", sa.Float(), nullable=True),
        sa.Column("hellaswag_acc_norm_se", sa.Float(), nullable=True),
        sa.Column("hellaswag_n", sa.Integer(), nullable=True),
        sa.Column("perplexity", sa.Float(), nullable=True),
        sa.Column("perplexity_tokens", sa.Integer(), nullable=True),
        sa.Column("kl_mean", sa.Float(), nullable=True),
        sa.Column("kl_se", sa.Float(), nullable=True),
        sa.Column("kl_n", sa.Integer(), nullable=True),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("measurements", sa.JSON(), nullable=True),
    )
    op.create_index("ix_candidates_build_id", "candidates", ["build_id"])


def downgrade() -> None:
    op.drop_table("candidates")
    op.drop_table("builds")
