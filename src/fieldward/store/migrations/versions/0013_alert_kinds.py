"""alert kinds: the text search reads title and type in ``alert_kinds``, addresses keep trigrams

The alert queue's ``q`` (``ILIKE '%text%'`` on title, type, src and dst) was served by one trigram GIN
index over the four columns (``ix_alerts_search_trgm``, revision 0005). Title and type hold ~70 % of
its entries, yet they come from a few hundred alert types: this revision keeps each distinct
``(type, title)`` once in ``alert_kinds`` and narrows the trigram index to the addresses
(``ix_alerts_address_trgm``). The search reads the matching kinds first (a few hundred rows) and
selects their alerts through ``ix_alerts_type`` (console routes/alerts.py, ``text_filter``). An
ingested alert no longer pays the trigrams of its title and type: the INSERT of 50,000 alerts into
the benchmark's 1.75M-alert table took 3.39 s with the four-column index, 2.46 s with the two-column
one (lead's psql run, docs/console/performance.md).

``alert_kinds`` is kept by the database, so every writer of ``alerts`` is covered:

- PostgreSQL: statement-level ``AFTER INSERT`` and ``AFTER UPDATE`` triggers with a transition table
  run one ``INSERT ... SELECT DISTINCT ... ON CONFLICT DO NOTHING`` per statement (an upsert of 5,000
  alerts costs one small aggregate, not 5,000 look-ups); ``title_key`` is ``md5(title)``.
- SQLite: row triggers ``INSERT ... WHERE NOT EXISTS`` (``title_key`` is the title itself; not ``OR
  IGNORE``, which an outer upsert's conflict clause would override inside the trigger).

The planner's estimate of an address search (``src ILIKE '%10.0.17.%'``, no fixed prefix) comes from
the column's histogram: with the default 101 entries a text matching 0.6 % of the alerts matched no
entry, the estimate fell to its floor (410 rows for 10,220), and the page sorted every match instead
of walking ``ix_alerts_last_ts`` to the first 50 (126-535 ms instead of 27-41 ms on the benchmark's
1.75M alerts; the four-column index had hidden this behind the title and type arms' estimates). The
upgrade raises the statistics target of ``src`` and ``dst`` to 1,000 (histograms of 1,001 entries)
and analyses the table.

The upgrade fills the table from the alerts already stored. Where ``pg_trgm`` is missing the trigram
index is left out as in 0005 (the search stays correct).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 21:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_INDEX = "ix_alerts_search_trgm"
OLD_COLUMNS = ("title", "type", "src", "dst")
NEW_INDEX = "ix_alerts_address_trgm"
NEW_COLUMNS = ("src", "dst")
FUNCTION = "fieldward_alert_kinds"

# DDL of fixed identifiers only (no values anywhere below).
PG_FUNCTION = """
CREATE FUNCTION fieldward_alert_kinds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO alert_kinds (type, title, title_key)
    SELECT DISTINCT changed.type, changed.title, md5(changed.title) FROM changed
    ON CONFLICT (type, title_key) DO NOTHING;
    RETURN NULL;
END
$$
"""
PG_TRIGGERS = {
    "alert_kinds_insert": f"""CREATE TRIGGER alert_kinds_insert AFTER INSERT ON alerts
        REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()""",
    "alert_kinds_update": f"""CREATE TRIGGER alert_kinds_update AFTER UPDATE ON alerts
        REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()""",
}
SQLITE_ADD_KIND = """INSERT INTO alert_kinds (type, title, title_key) SELECT NEW.type, NEW.title, NEW.title
        WHERE NOT EXISTS (SELECT 1 FROM alert_kinds WHERE type = NEW.type AND title_key = NEW.title);"""
SQLITE_TRIGGERS = {
    name: f"CREATE TRIGGER {name} AFTER {event} ON alerts BEGIN {SQLITE_ADD_KIND} END"
    for name, event in (("alert_kinds_insert", "INSERT"), ("alert_kinds_update", "UPDATE OF type, title"))
}


ADDRESS_STATISTICS = 1000
"""Statistics target of ``alerts.src`` and ``alerts.dst`` (PostgreSQL's default: 100)."""


def _statistics(target: int) -> str:
    return ", ".join(f"ALTER COLUMN {column} SET STATISTICS {int(target)}" for column in NEW_COLUMNS)


def _search_index(bind: sa.Connection, name: str, columns: Sequence[str]) -> None:
    """The alert search index ``name`` on ``columns``: trigram GIN on PostgreSQL (left out without
    ``pg_trgm``, as in 0005), an empty partial index (``WHERE 0``) on SQLite."""
    if bind.dialect.name != "postgresql":
        op.execute(sa.text(f"CREATE INDEX {name} ON alerts ({', '.join(columns)}) WHERE 0"))
        return
    trigrams = bind.execute(
        sa.text("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'")
    ).scalar_one()
    if trigrams:
        op.create_index(
            name,
            "alerts",
            list(columns),
            postgresql_using="gin",
            postgresql_ops=dict.fromkeys(columns, "gin_trgm_ops"),
        )


def upgrade() -> None:
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    op.create_table(
        "alert_kinds",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("title_key", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_kinds")),
        sa.UniqueConstraint("type", "title_key", name=op.f("uq_alert_kinds_type_title_key")),
    )
    key = "md5(title)" if postgresql else "title"
    op.execute(
        sa.text(
            f"INSERT INTO alert_kinds (type, title, title_key) SELECT DISTINCT type, title, {key} FROM alerts"  # noqa: S608
        )
    )
    if postgresql:
        op.execute(sa.text(PG_FUNCTION))
    for statement in (PG_TRIGGERS if postgresql else SQLITE_TRIGGERS).values():
        op.execute(sa.text(statement))
    op.execute(sa.text(f"DROP INDEX IF EXISTS {OLD_INDEX}"))
    _search_index(bind, NEW_INDEX, NEW_COLUMNS)
    if postgresql:
        op.execute(sa.text(f"ALTER TABLE alerts {_statistics(ADDRESS_STATISTICS)}"))
        op.execute(sa.text("ANALYZE alerts"))


def downgrade() -> None:
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    op.execute(sa.text(f"DROP INDEX IF EXISTS {NEW_INDEX}"))
    for name in PG_TRIGGERS:
        op.execute(sa.text(f"DROP TRIGGER IF EXISTS {name}" + (" ON alerts" if postgresql else "")))
    if postgresql:
        op.execute(sa.text(f"DROP FUNCTION IF EXISTS {FUNCTION}()"))
        op.execute(sa.text(f"ALTER TABLE alerts {_statistics(-1)}"))  # -1: the server's default
    _search_index(bind, OLD_INDEX, OLD_COLUMNS)
    op.drop_table("alert_kinds")
