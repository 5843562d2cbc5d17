"""ingest indexes: drop ``ix_communications_last_seen``, an index no query reads

Every index of ``alerts``, ``devices`` and ``communications`` was checked against the queries of the
console's routes and of the store (``EXPLAIN`` on the benchmark's 1M-alert database,
docs/console/performance.md): ``communications.last_seen`` is only ever a sort key *after* a filter on
``src_device_id`` or ``dst_device_id`` (a device's edges, served by those indexes) and never a filter,
so its index cost every ingested edge an index entry for nothing. The alert text search index
(``ix_alerts_search_trgm``) is kept as it is: it is the only index that serves the unchanged
``ILIKE '%text%'`` search on the four columns (see docs/store.md, "Ingestion").

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 18:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_communications_last_seen", table_name="communications")


def downgrade() -> None:
    op.create_index("ix_communications_last_seen", "communications", ["last_seen"])
