"""The trust state in the database (revision 0006), on SQLite and PostgreSQL: verdicts (newest wins,
read by a second service after a restart), failure aggregates (exact counts under concurrent
writers), running versions, and the links between device identities and inventory devices."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fieldward.store.database import Database
from fieldward.store.models import Alert, Device, Sensor
from fieldward.trust.attestation import AttestationResult, Verdict
from fieldward.trust.errors import TrustError
from fieldward.trust.registry import TrustRegistry
from fieldward.trust.response import TrustLinks, alerts_to_quarantine, normalise_link, open_alert_severity
from fieldward.trust.state import DatabaseFailureReports, DatabaseVerdictStore, VersionBook

PG_HOST = os.environ.get("FIELDWARD_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("FIELDWARD_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("FIELDWARD_TEST_PG_USER", "postgres")
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path_factory.mktemp('state') / 'state.db'}")
        database.upgrade()
        yield database
        database.dispose()
        return
    import psycopg

    try:
        admin = psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="test", autocommit=True, connect_timeout=3
        )
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER}: {exc}")
    name = f"fieldward_trust_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    database = Database(f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}")
    database.upgrade()
    try:
        yield database
    finally:
        database.dispose()
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="test", autocommit=True
        ) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _result(device_id: str, verdict: Verdict, at: dt.datetime, *reasons: str) -> AttestationResult:
    return AttestationResult(device_id, verdict, reasons, at, model="M", firmware_version="1.0", notes=("n",))


def test_the_newest_verdict_wins_and_survives_a_new_store(db: Database) -> None:
    store = DatabaseVerdictStore(db)
    assert store.latest("v-1") is None
    store.record(_result("v-1", Verdict.HEALTHY, NOW))
    store.record(_result("v-1", Verdict.COMPROMISED, NOW + dt.timedelta(hours=1), "boot log broken"))
    store.record(_result("v-1", Verdict.HEALTHY, NOW - dt.timedelta(hours=1)))  # late and older: ignored
    again = DatabaseVerdictStore(db).latest("v-1")
    assert again is not None
    assert (again.verdict, again.reasons, again.verified_at) == (
        Verdict.COMPROMISED,
        ("boot log broken",),
        NOW + dt.timedelta(hours=1),
    )
    assert again.verified_at.tzinfo is not None
    store.record(_result("v-2", Verdict.OUTDATED, NOW))
    outdated, total = store.verdicts(verdict="outdated")
    assert total >= 1
    assert {r.device_id for r in outdated} >= {"v-2"}
    assert "v-1" not in {r.device_id for r in outdated}


def test_failure_counts_are_exact_under_concurrent_writers(db: Database) -> None:
    reports = DatabaseFailureReports(db)

    def send(i: int) -> None:
        reports.add(
            f"dev-{i % 7}",
            model="M",
            firmware=None,
            kind="crash",
            component="io",
            message=f"fault at 0x{i:08x} after {i} polls",
            count=2,
            now=NOW,
        )

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, range(40)))
    (row,) = [r for r in reports.aggregates() if r.component == "io"]
    assert (row.count, row.devices, row.firmware, row.model) == (80, 7, None, "M")
    assert row.device_ids == tuple(f"dev-{i}" for i in range(7))
    other = reports.add("dev-0", model=None, firmware=None, kind="error", component="x", message="y", now=NOW)
    assert other is not None
    assert (other.count, other.model) == (1, None)


def test_a_full_failure_table_only_counts(db: Database) -> None:
    reports = DatabaseFailureReports(db, max_signatures=0)
    assert (
        reports.add("d", model="M", firmware="1", kind="crash", component="c", message="m", count=3) is None
    )
    assert reports.overflow == 3


def test_versions_report_changes(db: Database) -> None:
    book = VersionBook(db)
    first, changed = book.record(
        "ver-1",
        running_version="1.0",
        source="update",
        channel="stable",
        newest_version="1.2",
        releases_behind=2,
        days_behind=40,
        outdated=True,
        now=NOW,
    )
    assert changed
    assert first.update_field() == {
        "outdated": True,
        "days_behind": 40,
        "releases_behind": 2,
        "running_version": "1.0",
        "newest_version": "1.2",
    }
    _, same = book.record(
        "ver-1",
        running_version="1.0",
        source="update",
        channel="stable",
        newest_version="1.2",
        releases_behind=2,
        days_behind=40,
        outdated=True,
        now=NOW,
    )
    assert not same
    with pytest.raises(ValueError, match="source"):
        book.record(
            "ver-1",
            running_version="1",
            source="rumour",
            channel=None,
            newest_version=None,
            releases_behind=0,
            days_behind=None,
            outdated=False,
        )
    assert set(book.of(["ver-1", "nobody"])) == {"ver-1"}


def test_link_values_are_normalised_or_refused() -> None:
    assert normalise_link("mac", "00-1B-1B-30-89-24") == "00:1b:1b:30:89:24"
    assert normalise_link("mac", "001b1b308924") == "00:1b:1b:30:89:24"
    assert normalise_link("inventory", " 0042 ") == "42"
    assert normalise_link("serial", " SN-1 ") == "SN-1"
    for kind, value in (
        ("mac", "00:1b:1b:30:89"),
        ("mac", "00:1b-1b:30:89:24"),
        ("inventory", "-3"),
        ("inventory", "9" * 30),
        ("serial", "a\x00b"),
        ("ip", "10.0.0.1"),
    ):
        with pytest.raises(TrustError):
            normalise_link(kind, value)


def _sensor_with_devices(db: Database) -> tuple[int, dict[str, int]]:
    suffix = uuid.uuid4().hex[:6]
    with db.session() as session:
        sensor = Sensor(name=f"s-{suffix}", credential_hash=uuid.uuid4().hex)
        session.add(sensor)
        session.flush()
        rows = {
            "mac": Device(sensor_id=sensor.id, device_key=f"k1-{suffix}", mac="02:00:00:00:00:01", ips=[]),
            "serial": Device(sensor_id=sensor.id, device_key=f"k2-{suffix}", serial=f"SN-{suffix}", ips=[]),
            "plain": Device(sensor_id=sensor.id, device_key=f"k3-{suffix}", ips=[]),
        }
        session.add_all(rows.values())
        session.flush()
        return sensor.id, {name: row.id for name, row in rows.items()}


def test_links_resolve_both_ways_and_feed_the_response(db: Database) -> None:
    registry = TrustRegistry(db)
    for name in ("link-a", "link-b", "link-c"):
        registry.register_device(name, device_type="rtu")
    sensor_id, ids = _sensor_with_devices(db)
    links = TrustLinks(db)
    with pytest.raises(TrustError, match="no device identity"):
        links.link("ghost", "mac", "02:00:00:00:00:01", by="t")
    with pytest.raises(TrustError, match="no inventory device"):
        links.link("link-a", "inventory", str(10**12), by="t")
    by_mac = links.link("link-a", "mac", "02:00:00:00:00:01", by="t")
    assert ids["mac"] in by_mac.inventory_ids
    assert links.link("link-a", "mac", "02-00-00-00-00-01", by="t").id == by_mac.id  # idempotent
    with db.sessionmaker() as session:
        serial = session.get(Device, ids["serial"])
        assert serial is not None
        links.link("link-b", "serial", str(serial.serial), by="t")
    links.link("link-c", "inventory", str(ids["serial"]), by="t")
    found = links.identities_of(ids.values())
    assert found[ids["mac"]] >= {"link-a"}
    assert found[ids["serial"]] == {"link-b", "link-c"}
    assert ids["plain"] not in found
    assert links.inventory_of(["link-b", "link-c", "nobody"]) == {
        "link-b": {ids["serial"]},
        "link-c": {ids["serial"]},
    }
    with db.session() as session:
        for key, severity, status, src, dst in (
            ("a-high", "high", "new", ids["mac"], None),
            ("a-closed", "critical", "closed", ids["mac"], None),
            ("a-low", "low", "new", ids["serial"], None),
            ("a-dst", "critical", "acknowledged", None, ids["serial"]),
        ):
            session.add(
                Alert(
                    sensor_id=sensor_id,
                    alert_key=key,
                    engine="e",
                    type="t",
                    severity=severity,
                    severity_rank=["info", "low", "medium", "high", "critical"].index(severity),
                    status=status,
                    src_device_id=src,
                    dst_device_id=dst,
                )
            )
    pairs = alerts_to_quarantine(db, sensor_id, ["a-high", "a-closed", "a-low", "a-dst", "unknown"])
    assert sorted((a.alert_key, d) for a, d in pairs) == [
        ("a-dst", "link-b"),
        ("a-dst", "link-c"),
        ("a-high", "link-a"),
    ]
    sources_only = alerts_to_quarantine(db, sensor_id, ["a-high", "a-dst"], ends=("src",))
    assert [(a.alert_key, d) for a, d in sources_only] == [("a-high", "link-a")]
    severity = open_alert_severity(db, links)
    assert severity("link-a") == "high"  # the closed critical one does not count
    assert severity("link-b") == "critical"
    assert severity("unlinked") is None
    assert links.unlink("link-c", next(r.id for r in links.links("link-c")))
    assert links.links("link-c") == []


def test_state_tables_are_in_the_migration(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'x.db'}")
    database.upgrade("0005")
    from sqlalchemy import inspect

    assert "trust_verdicts" not in inspect(database.engine).get_table_names()
    database.upgrade("0006")
    names = set(inspect(database.engine).get_table_names())
    assert {
        "trust_verdicts",
        "trust_failure_reports",
        "trust_failure_devices",
        "trust_device_links",
        "trust_device_versions",
    } <= names
    database.downgrade("0005")
    assert "trust_device_links" not in inspect(database.engine).get_table_names()
    database.dispose()
