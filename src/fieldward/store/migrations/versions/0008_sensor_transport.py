"""sensor transport: transport_dead_letters (fieldward.store.transport_models.TransportDeadLetter)

Messages the JetStream ingest workers terminated (malformed, unknown sensor or kind), kept whole with
their reason; (stream, stream_seq) is unique so a redelivered message is recorded once.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-07 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "transport_dead_letters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("received", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("stream_seq", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("sensor", sa.String(length=200), nullable=True),
        sa.Column("batch_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.String(length=4000), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transport_dead_letters")),
        sa.UniqueConstraint("stream", "stream_seq", name=op.f("uq_transport_dead_letters_stream_stream_seq")),
    )
    with op.batch_alter_table("transport_dead_letters", schema=None) as batch_op:
        batch_op.create_index("ix_transport_dead_letters_received", ["received"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("transport_dead_letters", schema=None) as batch_op:
        batch_op.drop_index("ix_transport_dead_letters_received")

    op.drop_table("transport_dead_letters")
