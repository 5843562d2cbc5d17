"""transport stats: transport_workers (fieldward.store.transport_models.TransportWorker)

One row per JetStream ingest worker process (``host:pid``): its counters and when it last reported,
for ``GET /api/v1/transport/workers``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 16:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "transport_workers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("durable", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("report_every", sa.Float(), nullable=False),
        sa.Column("applied", sa.BigInteger(), nullable=False),
        sa.Column("duplicates", sa.BigInteger(), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("redelivered", sa.BigInteger(), nullable=False),
        sa.Column("retried", sa.BigInteger(), nullable=False),
        sa.Column("dead_lettered", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transport_workers")),
        sa.UniqueConstraint("name", name=op.f("uq_transport_workers_name")),
    )


def downgrade() -> None:
    op.drop_table("transport_workers")
