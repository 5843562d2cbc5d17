"""The alert queue's text search through ``alert_kinds`` (revision 0013), on both backends.

Title and type are matched in ``alert_kinds`` (one row per distinct type and title, kept by database
triggers), the addresses on the alerts. The search must find exactly the alerts a plain
``text in title/type/src/dst`` finds, whichever way the alerts were written, and the migration must
fill the table from stored alerts and give the old index back on downgrade.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select, text, update

from fieldward.console.api.routes import alerts as alert_routes
from fieldward.store.database import Database
from fieldward.store.ingest import ingest_records
from fieldward.store.models import Alert, AlertKind, Sensor

from .conftest import Console

START = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
LONG_TITLE = "x" * 3000 + " needle in a long title"
"""Longer than a PostgreSQL b-tree entry may be (~2.7 kB): the kind's key is md5(title) there."""


def _alert(key: str, type_: str, title: str, src: str, dst: str, seconds: int = 0) -> dict[str, Any]:
    moment = (START + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    return {
        "id": key,
        "engine": type_.split(".", 1)[0],
        "type": type_,
        "title": title,
        "severity": "high",
        "status": "new",
        "first_ts": moment,
        "last_ts": moment,
        "count": 1,
        "src": src,
        "dst": dst,
    }


ALERTS = [
    _alert("a1", "vendor.alpha", "Pump override", "10.0.0.1", "10.0.0.9"),
    _alert("a2", "vendor.beta", "Valve check", "10.0.0.2", "10.0.0.9"),
    # Type of a1, title of a2: found by neither "beta" nor "pump" (the kinds are pairs, not two lists).
    _alert("a3", "vendor.alpha", "Valve check", "10.0.0.3", "10.0.1.1"),
    _alert("a4", "vendor.gamma", LONG_TITLE, "192.168.7.7", "10.0.0.9"),
    _alert("a5", "policy.new_communication", "50% of 10_000 writes", "plc-ß", "10.0.0.9"),
]
QUERIES = ("beta", "pump", "PUMP", "valve", "alpha", "needle", "vendor.", "10.0.0", "10.0.1", "192.168",
           "ß", "PLC-SS", "50%", "10_0", "5_%", "zzz", "check", "a")  # fmt: skip


def _push(console: Console, records: list[dict[str, Any]]) -> None:
    response = console.client.post(
        "/api/v1/ingest/alerts",
        json={"batch_id": str(uuid.uuid4()), "records": records},
        headers=console.bearer(console.sensor_token),
    )
    assert response.status_code == 200, response.text


def _search(console: Console, q: str) -> set[str]:
    response = console.client.get(
        "/api/v1/alerts", params={"q": q, "limit": 500}, headers=console.bearer(console.tokens["viewer"])
    )
    assert response.status_code == 200, response.text
    return {a["alert_key"] for a in response.json()["items"]}


def _expected(records: list[dict[str, Any]], q: str) -> set[str]:
    return {
        r["id"]
        for r in records
        if any(q.lower() in str(r.get(f) or "").lower() for f in ("title", "type", "src", "dst"))
    }


def _kinds(database: Database) -> set[tuple[str, str]]:
    with database.session() as session:
        return {(k.type, k.title) for k in session.scalars(select(AlertKind))}


def test_the_search_finds_exactly_the_alerts_of_the_matching_kinds(any_console: Console) -> None:
    _push(any_console, ALERTS)
    assert _kinds(any_console.database) == {(a["type"], a["title"]) for a in ALERTS}
    assert _search(any_console, "beta") == {"a2"}
    assert _search(any_console, "pump") == {"a1"}
    for q in QUERIES:
        assert _search(any_console, q) == _expected(ALERTS, q), q


def test_past_the_kind_limit_the_search_compares_title_and_type_on_the_alerts(
    any_console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    _push(any_console, ALERTS)
    monkeypatch.setattr(alert_routes, "KIND_LIMIT", 1)
    for q in QUERIES:
        assert _search(any_console, q) == _expected(ALERTS, q), q


def test_the_kinds_follow_every_writer_of_alerts(any_console: Console) -> None:
    console = any_console
    _push(console, ALERTS[:1])
    # A newer report of the same alert with another title: the upsert's UPDATE adds the new kind.
    renamed = {**ALERTS[0], "title": "Pump override (renamed)", "last_ts": "2026-12-01T09:00:00Z"}
    _push(console, [renamed])
    assert ("vendor.alpha", "Pump override (renamed)") in _kinds(console.database)
    assert _search(console, "renamed") == {"a1"}
    # Written by the ORM, not by ingestion: inserted, then retitled by an UPDATE statement.
    with console.database.session() as session:
        sensor_id = session.scalar(select(Sensor.id).where(Sensor.name == "sensor-1"))
        assert sensor_id is not None
        row = Alert(sensor_id=sensor_id, alert_key="orm-1", engine="orm", type="orm.kind",
                    title="Written by hand", severity="low", src="10.9.9.9", dst="10.9.9.8")  # fmt: skip
        session.add(row)
    assert ("orm.kind", "Written by hand") in _kinds(console.database)
    assert _search(console, "by hand") == {"orm-1"}
    with console.database.session() as session:
        session.execute(update(Alert).where(Alert.alert_key == "orm-1").values(title="Retitled"))
    assert _search(console, "retitled") == {"orm-1"}
    # The stale kind matches no alert (another spelling: the list cache keeps a page 2 s after a write
    # that bypasses the console, api/cache.py).
    assert _search(console, "BY HAND") == set()


@pytest.fixture(params=["sqlite", "postgresql"])
def blank(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh database on each backend, not yet migrated."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'kinds.db'}")
    else:
        database = Database(request.getfixturevalue("pg_factory")())
    try:
        yield database
    finally:
        database.dispose()


def _index_names(database: Database) -> set[str]:
    with database.engine.connect() as connection:
        if database.engine.dialect.name == "postgresql":
            rows = connection.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'alerts'"))
        else:
            rows = connection.execute(text("SELECT name FROM sqlite_master WHERE tbl_name = 'alerts'"))
        return {str(r[0]) for r in rows}


def _statistics_targets(database: Database) -> dict[str, int | None] | None:
    """PostgreSQL: the statistics target of ``alerts.src``/``dst`` (-1 or NULL: the default); SQLite:
    None (no such setting)."""
    if database.engine.dialect.name != "postgresql":
        return None
    with database.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT attname, attstattarget FROM pg_attribute "
                "WHERE attrelid = 'alerts'::regclass AND attname IN ('src', 'dst')"
            )
        )
        return {str(name): None if target is None else int(target) for name, target in rows}


def test_the_migration_fills_the_kinds_and_downgrades_to_the_old_index(blank: Database) -> None:
    blank.upgrade("0012")
    assert "ix_alerts_search_trgm" in _index_names(blank)
    report = ingest_records(blank, "sensor-m", "alerts", ALERTS)
    assert report.written["alerts"] == len(ALERTS)
    blank.upgrade()
    assert _kinds(blank) == {(a["type"], a["title"]) for a in ALERTS}
    names = _index_names(blank)
    assert "ix_alerts_address_trgm" in names
    assert "ix_alerts_search_trgm" not in names
    assert _statistics_targets(blank) in ({"src": 1000, "dst": 1000}, None)
    blank.downgrade("0012")
    assert "alert_kinds" not in inspect(blank.engine).get_table_names()
    names = _index_names(blank)
    assert "ix_alerts_search_trgm" in names
    assert "ix_alerts_address_trgm" not in names
    assert _statistics_targets(blank) in ({"src": -1, "dst": -1}, {"src": None, "dst": None}, None)
    blank.upgrade()  # the triggers are back: a new alert adds its kind
    ingest_records(
        blank,
        "sensor-m",
        "alerts",
        [_alert("a9", "vendor.delta", "After the round trip", "10.1.1.1", "10.1.1.2")],
    )
    assert ("vendor.delta", "After the round trip") in _kinds(blank)
