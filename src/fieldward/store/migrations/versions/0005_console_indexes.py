"""console indexes: the list pages on a large site (alert and inventory search, inventory sorts)

Alert queue ``q`` (``ILIKE '%text%'`` on title, type, src, dst): on PostgreSQL one multi-column GIN
index with ``gin_trgm_ops`` on the four columns (``ix_alerts_search_trgm``); each condition of the
``OR`` is an index scan and PostgreSQL combines them (BitmapOr), so a search over a million alerts
reads only the matching rows. Inventory ``search`` (``ILIKE`` on ``CAST(ips AS VARCHAR)``, mac,
hostname, model, vendor): ``ix_devices_search_trgm`` on the four text columns and
``ix_devices_ips_trgm`` on the cast, the route's own expression. ``pg_trgm`` is a trusted extension
since PostgreSQL 13 (the database owner may create it); where it cannot be created the trigram
indexes are left out, the searches stay correct (a scan), and the schema comparison reports them.

Inventory sorts: the list orders descending with ``NULLS LAST``, which a plain index cannot serve
backwards; ``ix_devices_risk_score_desc`` and ``ix_devices_last_seen_desc`` are in that order
(``col DESC NULLS LAST, id DESC``; on SQLite ``col DESC, id DESC``, since SQLite sorts NULLs last
when descending).

SQLite has no trigram index: the two multi-column search indexes are empty partial indexes there
(``WHERE 0``, the same names and columns as the models, nothing to maintain) and the expression index
is PostgreSQL only (the comparison skips expression indexes on SQLite).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 13:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_INDEX = "ix_alerts_search_trgm"
SEARCH_COLUMNS = ("title", "type", "src", "dst")
DEVICE_SEARCH_INDEX = "ix_devices_search_trgm"
DEVICE_SEARCH_COLUMNS = ("mac", "hostname", "model", "vendor")
IPS_INDEX = "ix_devices_ips_trgm"
SORT_INDEXES = {"ix_devices_risk_score_desc": "risk_score", "ix_devices_last_seen_desc": "last_seen"}


def _trigrams_available(bind: sa.Connection) -> bool:
    """Create ``pg_trgm`` when the server has it and the role may; a refusal is not an error."""
    available = bind.execute(
        sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'")
    ).scalar_one()
    if not available:
        return False
    nested = bind.begin_nested()
    try:
        bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError:
        nested.rollback()
        return False
    nested.commit()
    return True


def _trigram_index(name: str, table: str, columns: Sequence[str]) -> None:
    op.create_index(
        name,
        table,
        list(columns),
        postgresql_using="gin",
        postgresql_ops=dict.fromkeys(columns, "gin_trgm_ops"),
    )


def upgrade() -> None:
    # DDL of fixed identifiers only (no values).
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    nulls = " NULLS LAST" if postgresql else ""
    for name, column in SORT_INDEXES.items():
        op.execute(sa.text(f"CREATE INDEX {name} ON devices ({column} DESC{nulls}, id DESC)"))
    if postgresql:
        if _trigrams_available(bind):
            _trigram_index(SEARCH_INDEX, "alerts", SEARCH_COLUMNS)
            _trigram_index(DEVICE_SEARCH_INDEX, "devices", DEVICE_SEARCH_COLUMNS)
            op.execute(
                sa.text(
                    f"CREATE INDEX {IPS_INDEX} ON devices USING gin ((CAST(ips AS VARCHAR)) gin_trgm_ops)"
                )
            )
        return
    for name, table, columns in (
        (SEARCH_INDEX, "alerts", SEARCH_COLUMNS),
        (DEVICE_SEARCH_INDEX, "devices", DEVICE_SEARCH_COLUMNS),
    ):
        op.execute(sa.text(f"CREATE INDEX {name} ON {table} ({', '.join(columns)}) WHERE 0"))


def downgrade() -> None:
    for name in (IPS_INDEX, DEVICE_SEARCH_INDEX, SEARCH_INDEX, *SORT_INDEXES):
        op.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))
