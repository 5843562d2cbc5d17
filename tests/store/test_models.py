"""The console's models on SQLite and PostgreSQL: keys, cascades, checks, UTC timestamps, hostile text.

The fixtures here (a migrated database per backend) are shared with ``test_ingest.py`` and
``test_migrations.py``. PostgreSQL tests use a uniquely named database on 127.0.0.1:5432 (user
``postgres``), created for the test module and dropped after it; they skip when no server answers.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.exc import IntegrityError

from fieldward.store.base import Base
from fieldward.store.database import Database
from fieldward.store.models import (
    Alert,
    AlertComment,
    AlertEvent,
    ApiToken,
    AuditLog,
    Communication,
    Device,
    DeviceAttribute,
    Sensor,
    User,
    severity_rank,
)

PG_HOST = os.environ.get("FIELDWARD_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("FIELDWARD_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("FIELDWARD_TEST_PG_USER", "postgres")
PG_ADMIN_DB = "test"

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database, migrated to head; dropped afterwards."""
    import psycopg

    try:
        admin = psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_ADMIN_DB, autocommit=True, connect_timeout=3
        )
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER}: {exc}")
    name = f"fieldward_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    database = Database(url)
    database.upgrade()
    database.dispose()
    try:
        yield url
    finally:
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_ADMIN_DB, autocommit=True
        ) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _empty(database: Database) -> None:
    """Delete every row (PostgreSQL tests share one migrated database per module)."""
    names = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with database.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'fieldward.db'}")
        database.upgrade()
    else:
        database = Database(request.getfixturevalue("pg_url"))
        _empty(database)
    try:
        yield database
    finally:
        database.dispose()


def _sensor(db: Database, name: str = "plant-a") -> int:
    with db.session() as session:
        sensor = Sensor(name=name, credential_hash="sha256:" + "0" * 64)
        session.add(sensor)
        session.flush()
        return sensor.id


def _device(db: Database, sensor_id: int, key: str, **values: object) -> int:
    with db.session() as session:
        device = Device(sensor_id=sensor_id, device_key=key, **values)
        session.add(device)
        session.flush()
        return device.id


def test_device_natural_key_is_unique_per_sensor(db: Database) -> None:
    a, b = _sensor(db, "a"), _sensor(db, "b")
    _device(db, a, "mac:00:1b:1b:30:89:24")
    _device(db, b, "mac:00:1b:1b:30:89:24")  # the same device seen by another sensor is another row
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(Device(sensor_id=a, device_key="mac:00:1b:1b:30:89:24"))
    with db.session() as session:
        assert session.scalar(select(Device.id).where(Device.sensor_id == a).limit(2)) is not None
        assert len(session.scalars(select(Device)).all()) == 2


@pytest.mark.parametrize(
    ("model", "values"),
    [
        (User, {"username": "alice", "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"}),
        (Sensor, {"name": "plant-a"}),
    ],
)
def test_unique_names(db: Database, model: type[Base], values: dict[str, str]) -> None:
    with db.session() as session:
        session.add(model(**values))
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(model(**values))


def test_check_constraints_reject_unknown_role_and_status(db: Database) -> None:
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(User(username="mallory", password_hash="x", role="root"))
    sensor_id = _sensor(db)
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(
            Alert(
                sensor_id=sensor_id, alert_key="a1", engine="e", type="t", severity="high", status="won't fix"
            )
        )


def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(Device(sensor_id=4242, device_key="mac:00:00:00:00:00:01"))


def test_deleting_a_sensor_cascades_to_everything_it_reported(db: Database) -> None:
    sensor_id = _sensor(db)
    other = _sensor(db, "plant-b")
    plc = _device(db, sensor_id, "mac:00:1b:1b:30:89:24", vendor="Siemens")
    hmi = _device(db, sensor_id, "mac:00:0c:29:00:00:01")
    kept = _device(db, other, "mac:00:0c:29:00:00:02")
    with db.session() as session:
        session.add(
            DeviceAttribute(device_id=plc, name="vendor", value="Siemens", confidence=0.9, evidence=[])
        )
        session.add(
            Communication(
                sensor_id=sensor_id, src_device_id=hmi, dst_device_id=plc, transport="tcp", port=102
            )
        )
        alert = Alert(
            sensor_id=sensor_id, alert_key="a1", engine="e", type="t", severity="high", src_device_id=hmi
        )
        session.add(alert)
        session.flush()
        session.add(AlertEvent(alert_id=alert.id, from_status="new", to_status="acknowledged", by="alice"))
        session.add(AlertComment(alert_id=alert.id, author="alice", text="looking"))
    with db.session() as session:
        session.execute(delete(Sensor).where(Sensor.id == sensor_id))
    with db.session() as session:
        for model in (DeviceAttribute, Communication, Alert, AlertEvent, AlertComment):
            assert session.scalars(select(model)).all() == [], model.__tablename__
        assert session.scalars(select(Device.id)).all() == [kept]


def test_deleting_a_device_keeps_its_alerts_without_the_link(db: Database) -> None:
    sensor_id = _sensor(db)
    plc = _device(db, sensor_id, "mac:00:1b:1b:30:89:24")
    with db.session() as session:
        session.add(
            Alert(
                sensor_id=sensor_id, alert_key="a1", engine="e", type="t", severity="high", dst_device_id=plc
            )
        )
        session.add(DeviceAttribute(device_id=plc, name="vendor", value="Siemens"))
    with db.session() as session:
        session.execute(delete(Device).where(Device.id == plc))
    with db.session() as session:
        alert = session.scalars(select(Alert)).one()
        assert alert.dst_device_id is None
        assert session.scalars(select(DeviceAttribute)).all() == []


def test_deleting_a_user_revokes_tokens_but_keeps_the_audit_log(db: Database) -> None:
    with db.session() as session:
        user = User(username="alice", password_hash="h", role="admin")
        user.tokens.append(ApiToken(name="ci", token_hash="sha256:ab", scopes=["read"]))
        session.add(user)
        session.add(AuditLog(actor="alice", action="token.create", target="ci", details={"scopes": ["read"]}))
    with db.session() as session:
        session.execute(delete(User).where(User.username == "alice"))
    with db.session() as session:
        assert session.scalars(select(ApiToken)).all() == []
        entry = session.scalars(select(AuditLog)).one()
        assert (entry.actor, entry.action, entry.details) == ("alice", "token.create", {"scopes": ["read"]})


def test_timestamps_are_stored_and_returned_as_aware_utc(db: Database) -> None:
    sensor_id = _sensor(db)
    cet = dt.timezone(dt.timedelta(hours=1))
    seen = dt.datetime(2026, 1, 1, 1, 30, 0, 123456, tzinfo=cet)
    naive = dt.datetime(2026, 1, 2, 3, 4, 5)
    plc = _device(db, sensor_id, "mac:00:1b:1b:30:89:24", first_seen=seen, last_seen=naive)
    with db.session() as session:
        device = session.get_one(Device, plc)
        session.expire(device)
        assert device.first_seen == seen
        assert device.first_seen.utcoffset() == dt.timedelta(0)
        assert device.first_seen.hour == 0
        assert device.last_seen == naive.replace(tzinfo=dt.UTC)
        later = session.scalars(select(Device.id).where(Device.last_seen > seen)).all()
        assert later == [plc]


HOSTILE = [
    "x" * 1_000_000,
    "Ünïcödé 🏭 工厂 مصنع \u202eevil\u202c e\u0301",
    "'); DROP TABLE devices; --",
    "%(name)s %s $1 ? :param \\ \\\\ \" ' `",
    "line1\nline2\r\n\ttab",
]


@pytest.mark.parametrize("value", HOSTILE, ids=["huge", "unicode", "sql", "placeholders", "control"])
def test_hostile_text_is_stored_verbatim(db: Database, value: str) -> None:
    sensor_id = _sensor(db)
    bounded = value[:255]  # indexed columns (vendor, hostname) are bounded; text columns are not
    plc = _device(
        db,
        sensor_id,
        "mac:00:1b:1b:30:89:24",
        vendor=bounded,
        hostname=bounded,
        model=value,
        firmware=value,
        facts={value[:200]: [value]},
        ips=[value],
    )
    with db.session() as session:
        session.add(AlertComment(alert_id=_alert(session, sensor_id), author="alice", text=value))
    with db.session() as session:
        device = session.get_one(Device, plc)
        assert (device.vendor, device.hostname) == (bounded, bounded)
        assert (device.model, device.firmware) == (value, value)
        assert device.facts == {value[:200]: [value]}
        assert device.ips == [value]
        assert session.scalars(select(AlertComment.text)).one() == value
        # Queried by the value itself (bound parameter), it is found.
        assert session.scalars(select(Device.id).where(Device.model == value)).all() == [plc]
        assert session.scalars(select(Device.id).where(Device.vendor == bounded)).all() == [plc]
        assert session.scalar(select(Sensor.name)) == "plant-a"


def _alert(session: object, sensor_id: int) -> int:
    from sqlalchemy.orm import Session

    assert isinstance(session, Session)
    alert = Alert(sensor_id=sensor_id, alert_key="a1", engine="e", type="t", severity="low")
    session.add(alert)
    session.flush()
    return alert.id


def test_severity_rank_orders_both_scales() -> None:
    assert [severity_rank(s) for s in ("info", "low", "medium", "high", "critical")] == [0, 1, 2, 3, 4]
    assert severity_rank("none") == 0
    assert severity_rank("CRITICAL") == 4
    assert severity_rank("bogus") == 0
    assert severity_rank(None) == 0
