"""alert kinds pruned: a kind leaves ``alert_kinds`` with the last alert that has it

Revision 0013 adds the ``(type, title)`` of every inserted or updated alert to ``alert_kinds`` but
never removes one, so the kinds of deleted alerts (a sensor's removal, a bulk ``DELETE``) and the old
kinds of retitled alerts stayed forever. This revision removes, after every ``DELETE`` of alerts and
every ``UPDATE`` that changes an alert's type or title, the old kinds that no alert has any more.
Triggers again, so every writer of ``alerts`` is covered (foreign-key cascades included):

- PostgreSQL: statement-level ``AFTER DELETE`` and ``AFTER UPDATE`` triggers over the transition
  tables. The candidates are the distinct old kinds of the statement (for an UPDATE only the rows whose
  type or title changed, found by joining old and new rows on ``id``; an ingestion upsert or a triage
  change has none), so a DELETE of 100,000 alerts checks each distinct kind once. The check is
  ``NOT EXISTS (alerts of that type and title)`` through ``ix_alerts_type``; a kind that keeps alerts
  ends at its first one.
- SQLite: row triggers keep a count per kind in the new column ``alert_kinds.alerts`` (+1 on
  insert, -1 on delete, both on an ``UPDATE OF type, title`` that changes one of them); the kind goes
  at 0. A row trigger with ``NOT EXISTS`` walks ``ix_alerts_type`` up to a live alert of the same
  title for every deleted row: quadratic when a kind's rows lie behind many rows of other titles of
  its type (2,000 such rows took 13 s next to 48,000 others). SQLite has one writer at a time, so the
  counts queue nobody; on PostgreSQL they would serialise concurrent ingestions (the column is NULL
  there). 0013's two SQLite triggers are replaced by counting ones.

Concurrency (PostgreSQL, READ COMMITTED): a ``NOT EXISTS`` cannot see an alert of the same kind that
a concurrent transaction inserted and has not committed, whose insert trigger found the kind present
(``ON CONFLICT DO NOTHING`` takes no lock). So the kind rows are locked on both sides, in ``id``
order: the insert/update trigger of 0013 is replaced by one that first takes ``FOR KEY SHARE`` on the
existing kinds of its rows; the prune takes ``FOR UPDATE`` on its candidate kinds and then deletes in
a second statement, whose fresh snapshot sees every alert committed by the writers it waited for. A
prune that deletes a kind first makes a concurrent writer's ``INSERT ... ON CONFLICT`` wait for it and
insert the kind again.

The upgrade also removes the kinds that no alert has now (and counts the others on SQLite). The
downgrade drops the prune triggers, functions and the column, and restores 0013's function and
triggers. Measurements: docs/store.md ("Ingestion", revision 0015).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08 00:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# DDL of fixed identifiers only (no values anywhere below).
# PostgreSQL: 0013's function behind the triggers ``alert_kinds_insert`` and ``alert_kinds_update``,
# as 0013 made it (the downgrade's) and as this revision replaces it (with the lock on the kinds).
PG_ADD_0013 = """
CREATE OR REPLACE FUNCTION fieldward_alert_kinds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO alert_kinds (type, title, title_key)
    SELECT DISTINCT changed.type, changed.title, md5(changed.title) FROM changed
    ON CONFLICT (type, title_key) DO NOTHING;
    RETURN NULL;
END
$$
"""
PG_ADD_LOCKED = """
CREATE OR REPLACE FUNCTION fieldward_alert_kinds() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind_types text[];
    kind_titles text[];
BEGIN
    SELECT array_agg(d.type), array_agg(d.title) INTO kind_types, kind_titles
    FROM (SELECT DISTINCT changed.type, changed.title FROM changed) d;
    IF kind_types IS NULL THEN
        RETURN NULL;
    END IF;
    -- Keep a concurrent prune from deleting a kind these rows have (it waits for this transaction).
    PERFORM 1 FROM alert_kinds k JOIN unnest(kind_types, kind_titles) AS c(type, title)
        ON k.type = c.type AND k.title_key = md5(c.title)
    ORDER BY k.id FOR KEY SHARE OF k;
    INSERT INTO alert_kinds (type, title, title_key)
    SELECT c.type, c.title, md5(c.title) FROM unnest(kind_types, kind_titles) AS c(type, title)
    ON CONFLICT (type, title_key) DO NOTHING;
    RETURN NULL;
END
$$
"""


def _pg_prune_function(name: str, old_kinds: str) -> str:
    """A statement trigger function removing the kinds of ``old_kinds`` (a query of ``type, title``
    over the transition tables) that no alert has any more. Fixed identifiers and SQL only."""
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind_types text[];
    kind_titles text[];
BEGIN
    SELECT array_agg(d.type), array_agg(d.title) INTO kind_types, kind_titles
    FROM (SELECT DISTINCT gone.type, gone.title FROM ({old_kinds}) gone) d;
    IF kind_types IS NULL THEN
        RETURN NULL;
    END IF;
    -- Lock the candidates first (waits for writers holding them), then decide in a new statement:
    -- its snapshot sees the alerts those writers committed.
    PERFORM 1 FROM alert_kinds k JOIN unnest(kind_types, kind_titles) AS gone(type, title)
        ON k.type = gone.type AND k.title_key = md5(gone.title)
    ORDER BY k.id FOR UPDATE OF k;
    DELETE FROM alert_kinds k USING unnest(kind_types, kind_titles) AS gone(type, title)
    WHERE k.type = gone.type AND k.title_key = md5(gone.title) AND k.title = gone.title
      AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.type = gone.type AND a.title = gone.title);
    RETURN NULL;
END
$$
"""  # noqa: S608


PG_PRUNE_FUNCTIONS = {
    "fieldward_alert_kinds_prune_delete": _pg_prune_function(
        "fieldward_alert_kinds_prune_delete", "SELECT type, title FROM old_rows"
    ),
    "fieldward_alert_kinds_prune_update": _pg_prune_function(
        "fieldward_alert_kinds_prune_update",
        "SELECT o.type, o.title FROM old_rows o JOIN new_rows n ON n.id = o.id "
        "WHERE o.type <> n.type OR o.title <> n.title",
    ),
}
# Transition tables forbid a column list (UPDATE OF type, title): the function compares the rows.
PG_TRIGGERS = {
    "alert_kinds_prune_delete": """CREATE TRIGGER alert_kinds_prune_delete AFTER DELETE ON alerts
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION fieldward_alert_kinds_prune_delete()""",
    "alert_kinds_prune_update": """CREATE TRIGGER alert_kinds_prune_update AFTER UPDATE ON alerts
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION fieldward_alert_kinds_prune_update()""",
}
# SQLite: ``alert_kinds.alerts`` counts the alerts of each kind (one writer at a time: no contention).
SQLITE_ADD = """UPDATE alert_kinds SET alerts = alerts + 1 WHERE type = NEW.type AND title_key = NEW.title;
        INSERT INTO alert_kinds (type, title, title_key, alerts) SELECT NEW.type, NEW.title, NEW.title, 1
        WHERE NOT EXISTS (SELECT 1 FROM alert_kinds WHERE type = NEW.type AND title_key = NEW.title);"""
SQLITE_REMOVE = """UPDATE alert_kinds SET alerts = alerts - 1 WHERE type = OLD.type AND title_key = OLD.title;
        DELETE FROM alert_kinds WHERE type = OLD.type AND title_key = OLD.title AND alerts <= 0;"""
SQLITE_CHANGED = "OLD.type IS NOT NEW.type OR OLD.title IS NOT NEW.title"
SQLITE_TRIGGERS = {
    "alert_kinds_insert": f"CREATE TRIGGER alert_kinds_insert AFTER INSERT ON alerts BEGIN {SQLITE_ADD} END",
    "alert_kinds_update": f"CREATE TRIGGER alert_kinds_update AFTER UPDATE OF type, title ON alerts "
    f"WHEN {SQLITE_CHANGED} BEGIN {SQLITE_ADD} {SQLITE_REMOVE} END",
    "alert_kinds_prune_delete": f"CREATE TRIGGER alert_kinds_prune_delete AFTER DELETE ON alerts "
    f"BEGIN {SQLITE_REMOVE} END",
}
SQLITE_ADD_0013 = """INSERT INTO alert_kinds (type, title, title_key) SELECT NEW.type, NEW.title, NEW.title
        WHERE NOT EXISTS (SELECT 1 FROM alert_kinds WHERE type = NEW.type AND title_key = NEW.title);"""
SQLITE_TRIGGERS_0013 = {
    name: f"CREATE TRIGGER {name} AFTER {event} ON alerts BEGIN {SQLITE_ADD_0013} END"
    for name, event in (("alert_kinds_insert", "INSERT"), ("alert_kinds_update", "UPDATE OF type, title"))
}
SQLITE_COUNT = """UPDATE alert_kinds SET alerts = counted.n FROM
    (SELECT type, title, count(*) AS n FROM alerts GROUP BY type, title) AS counted
    WHERE alert_kinds.type = counted.type AND alert_kinds.title_key = counted.title"""
PRUNE_NOW = """DELETE FROM alert_kinds WHERE NOT EXISTS
    (SELECT 1 FROM alerts a WHERE a.type = alert_kinds.type AND a.title = alert_kinds.title)"""
"""The kinds no alert has at the upgrade (left by 0013 before this revision)."""


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.add_column("alert_kinds", sa.Column("alerts", sa.Integer(), nullable=True))
    op.execute(sa.text(PRUNE_NOW))
    if postgresql:
        op.execute(sa.text(PG_ADD_LOCKED))
        for statement in PG_PRUNE_FUNCTIONS.values():
            op.execute(sa.text(statement))
        for statement in PG_TRIGGERS.values():
            op.execute(sa.text(statement))
        return
    op.execute(sa.text(SQLITE_COUNT))
    for name in SQLITE_TRIGGERS_0013:
        op.execute(sa.text(f"DROP TRIGGER IF EXISTS {name}"))
    for statement in SQLITE_TRIGGERS.values():
        op.execute(sa.text(statement))


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        for name in PG_TRIGGERS:
            op.execute(sa.text(f"DROP TRIGGER IF EXISTS {name} ON alerts"))
        for name in PG_PRUNE_FUNCTIONS:
            op.execute(sa.text(f"DROP FUNCTION IF EXISTS {name}()"))
        op.execute(sa.text(PG_ADD_0013))
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(sa.text(f"DROP TRIGGER IF EXISTS {name}"))
        for statement in SQLITE_TRIGGERS_0013.values():
            op.execute(sa.text(statement))
    op.execute(sa.text("ALTER TABLE alert_kinds DROP COLUMN alerts"))
