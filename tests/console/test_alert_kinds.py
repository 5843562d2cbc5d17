"""The alert queue's text search through ``alert_kinds`` (revision 0013), on both backends.

Title and type are matched in ``alert_kinds`` (one row per distinct type and title, kept by database
triggers), the addresses on the alerts. The search must find exactly the alerts a plain
``text in title/type/src/dst`` finds, whichever way the alerts were written, and the migration must
fill the table from stored alerts and give the old index back on downgrade.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, inspect, select, text, update

from fieldward.console.api.cache import bump_data_version
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
    # The old kind is gone (revision 0015) and matches nothing (another spelling: the list cache keeps
    # a page 2 s after a write that bypasses the console, api/cache.py).
    assert ("orm.kind", "Written by hand") not in _kinds(console.database)
    assert _search(console, "BY HAND") == set()
    _stored_kinds_match_alerts(console.database)  # on SQLite the counts too, after upserts


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


# Pruning (revision 0015): a kind leaves alert_kinds with the last alert that has it.


def _delete_alerts(database: Database, *keys: str) -> None:
    """Delete alerts by key with one statement outside the console (as a script or a retention would),
    then let the console's list pages know (api/cache.py keeps a page 2 s after a bypassing write)."""
    with database.session() as session:
        session.execute(delete(Alert).where(Alert.alert_key.in_(keys)))
    bump_data_version(database)


def _search_equals_substring(console: Console, records: list[dict[str, Any]]) -> None:
    for q in QUERIES:
        assert _search(console, q) == _expected(records, q), q


def _stored_kinds_match_alerts(database: Database) -> None:
    """alert_kinds holds exactly the kinds of the stored alerts (and on SQLite the right counts)."""
    with database.session() as session:
        pairs = session.execute(select(Alert.type, Alert.title)).all()
        counted: dict[tuple[str, str], int] = {}
        for type_, title in pairs:
            counted[(type_, title)] = counted.get((type_, title), 0) + 1
        kinds = {(k.type, k.title): k.alerts for k in session.scalars(select(AlertKind))}
    assert set(kinds) == set(counted)
    if database.engine.dialect.name == "sqlite":
        assert kinds == counted
    else:
        assert set(kinds.values()) <= {None}


def test_deleting_the_last_alert_of_a_kind_removes_the_kind(any_console: Console) -> None:
    _push(any_console, ALERTS)
    # a1 and a3 share the type, not the title: kinds are pairs; a2 and a3 share the title.
    _delete_alerts(any_console.database, "a1")
    kinds = _kinds(any_console.database)
    assert ("vendor.alpha", "Pump override") not in kinds
    assert ("vendor.alpha", "Valve check") in kinds
    _stored_kinds_match_alerts(any_console.database)
    _search_equals_substring(any_console, ALERTS[1:])
    _delete_alerts(any_console.database, "a3", "a4")  # one statement, two kinds gone
    remaining = [ALERTS[1], ALERTS[4]]
    assert _kinds(any_console.database) == {(a["type"], a["title"]) for a in remaining}
    _stored_kinds_match_alerts(any_console.database)
    _search_equals_substring(any_console, remaining)


def test_deleting_one_of_two_alerts_of_a_kind_keeps_the_kind(any_console: Console) -> None:
    twin = _alert("a1-twin", "vendor.alpha", "Pump override", "10.0.0.7", "10.0.0.9")
    records = [*ALERTS, twin]
    _push(any_console, records)
    _delete_alerts(any_console.database, "a1")
    assert ("vendor.alpha", "Pump override") in _kinds(any_console.database)
    _stored_kinds_match_alerts(any_console.database)
    _search_equals_substring(any_console, [r for r in records if r["id"] != "a1"])
    _delete_alerts(any_console.database, "a1-twin")
    assert ("vendor.alpha", "Pump override") not in _kinds(any_console.database)
    _stored_kinds_match_alerts(any_console.database)


def test_a_new_title_of_the_only_alert_of_a_kind_replaces_the_kind(any_console: Console) -> None:
    console = any_console
    _push(console, ALERTS)
    # Ingestion: a newer report of a1 with another title (the upsert's UPDATE).
    renamed = {**ALERTS[0], "title": "Pump override (renamed)", "last_ts": "2026-12-01T09:00:00Z"}
    _push(console, [renamed])
    kinds = _kinds(console.database)
    assert ("vendor.alpha", "Pump override (renamed)") in kinds
    assert ("vendor.alpha", "Pump override") not in kinds
    # SQL: a new title and a new type by an UPDATE statement; the same title again changes nothing.
    with console.database.session() as session:
        session.execute(update(Alert).where(Alert.alert_key == "a2").values(title="Valve audit"))
        session.execute(update(Alert).where(Alert.alert_key == "a5").values(type="policy.renamed"))
        session.execute(update(Alert).where(Alert.alert_key == "a3").values(title="Valve check"))
    bump_data_version(console.database)
    records = [renamed, {**ALERTS[1], "title": "Valve audit"}, *ALERTS[2:4],
               {**ALERTS[4], "type": "policy.renamed"}]  # fmt: skip
    assert _kinds(console.database) == {(a["type"], a["title"]) for a in records}
    _stored_kinds_match_alerts(console.database)
    _search_equals_substring(console, records)
    assert _search(console, "audit") == {"a2"}
    assert _search(console, "new_comm") == set()


def test_a_retention_delete_of_old_closed_alerts_prunes_their_kinds(any_console: Console) -> None:
    """The console has no alert retention of its own yet (``apply_retention`` removes columnar day
    partitions); this is the bulk statement one would run: closed alerts last seen before a cutoff."""
    console = any_console
    old = [_alert(f"old-{i}", f"vendor.old{i % 3}", f"Old kind {i % 4}", "10.2.0.1", "10.2.0.2")
           for i in range(60)]  # fmt: skip
    for record in old[:50]:
        record["status"] = "closed"
    records = [*ALERTS, *old]
    _push(console, records)
    with console.database.session() as session:
        session.execute(update(Alert).where(Alert.alert_key.in_(["a2", "a3"])).values(status="closed"))
        session.execute(
            update(Alert).where(Alert.alert_key.like("old-%")).values(last_ts=START - dt.timedelta(days=400))
        )
        deleted = session.execute(
            delete(Alert)
            .where(Alert.status == "closed", Alert.last_ts < START - dt.timedelta(days=90))
            .returning(Alert.id)
        ).all()
    bump_data_version(console.database)
    assert len(deleted) == 50
    kept = [*ALERTS, *old[50:]]
    assert _kinds(console.database) == {(a["type"], a["title"]) for a in kept}
    _stored_kinds_match_alerts(console.database)
    _search_equals_substring(console, kept)


def test_removing_a_sensor_prunes_the_kinds_only_it_had(any_console: Console) -> None:
    console = any_console
    _push(console, ALERTS)
    other = [_alert("b1", "vendor.alpha", "Pump override", "10.3.0.1", "10.3.0.2"),
             _alert("b2", "vendor.other", "Only sensor two", "10.3.0.1", "10.3.0.3")]  # fmt: skip
    ingest_records(console.database, "sensor-2", "alerts", other)
    with console.database.session() as session:
        sensor_id = session.scalar(select(Sensor.id).where(Sensor.name == "sensor-1"))
    response = console.client.delete(
        f"/api/v1/sensors/{sensor_id}", headers=console.bearer(console.tokens["admin"])
    )
    assert response.status_code == 200, response.text
    # sensor-1's alerts went by the foreign key's cascade; the kind b1 shares with a1 stays.
    assert _kinds(console.database) == {(a["type"], a["title"]) for a in other}
    _stored_kinds_match_alerts(console.database)
    _search_equals_substring(console, other)


def test_a_prune_waits_for_a_writer_that_adds_an_alert_of_the_kind(pg_factory: Any) -> None:
    """PostgreSQL: deleting the last stored alert of a kind while another transaction inserts one of
    the same kind must keep the kind (the insert trigger holds the kind row, the prune waits and then
    sees the committed alert)."""
    database = Database(pg_factory())
    try:
        database.upgrade()
        ingest_records(database, "sensor-m", "alerts", ALERTS[:1])
        with database.session() as session:
            sensor_id = session.scalar(select(Sensor.id).where(Sensor.name == "sensor-m"))
        writer = database.engine.connect()
        writer.begin()
        writer.execute(
            text(
                "INSERT INTO alerts (sensor_id, alert_key, engine, type, title, description, severity, "
                "severity_rank, status, count, explanation, recommendation, mitre, evidence, details) "
                "VALUES (:sensor, 'a1-new', 'vendor', 'vendor.alpha', 'Pump override', '', 'high', 3, "
                "'new', 1, '', '', '[]', '[]', '{}')"
            ),
            {"sensor": sensor_id},
        )
        outcome: list[BaseException | None] = []

        def prune() -> None:
            try:
                with database.session() as session:
                    session.execute(delete(Alert).where(Alert.alert_key == "a1"))
                outcome.append(None)
            except BaseException as exc:  # handed to the test's thread
                outcome.append(exc)

        thread = threading.Thread(target=prune)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # waiting for the writer's lock on the kind
        writer.commit()
        writer.close()
        thread.join(10)
        assert outcome == [None]
        assert _kinds(database) == {("vendor.alpha", "Pump override")}
    finally:
        database.dispose()


def _kind_rows(database: Database) -> set[tuple[str, str]]:
    """The kinds by plain SQL (the model's ``alerts`` column does not exist before revision 0015)."""
    with database.engine.connect() as connection:
        return {(str(t), str(n)) for t, n in connection.execute(text("SELECT type, title FROM alert_kinds"))}


def _delete_keys(database: Database, *keys: str) -> None:
    with database.engine.begin() as connection:
        connection.execute(delete(Alert).where(Alert.alert_key.in_(keys)))


def test_the_prune_migration_round_trip(blank: Database) -> None:
    blank.upgrade("0014")
    ingest_records(blank, "sensor-m", "alerts", ALERTS)
    _delete_keys(blank, "a1")  # before 0015 the kind stays
    assert ("vendor.alpha", "Pump override") in _kind_rows(blank)
    blank.upgrade()  # ... and the upgrade removes it, and counts the others on SQLite
    assert _kind_rows(blank) == {(a["type"], a["title"]) for a in ALERTS[1:]}
    _stored_kinds_match_alerts(blank)
    _delete_keys(blank, "a3")
    assert ("vendor.alpha", "Valve check") not in _kind_rows(blank)
    _stored_kinds_match_alerts(blank)
    blank.downgrade("0014")
    columns = {c["name"] for c in inspect(blank.engine).get_columns("alert_kinds")}
    assert "alerts" not in columns
    _delete_keys(blank, "a2")  # 0013's triggers only: no prune, but kinds are still added
    assert ("vendor.beta", "Valve check") in _kind_rows(blank)
    ingest_records(
        blank, "sensor-m", "alerts", [_alert("a9", "vendor.delta", "Round trip", "1.1.1.1", "1.1.1.2")]
    )
    assert ("vendor.delta", "Round trip") in _kind_rows(blank)
    blank.upgrade()
    _stored_kinds_match_alerts(blank)
    _delete_keys(blank, "a9", "a4")
    assert _kind_rows(blank) == {(ALERTS[4]["type"], ALERTS[4]["title"])}
    _stored_kinds_match_alerts(blank)
