"""Ingestion of a real analysis folder (the demo, generated once) and of pushed batches, on SQLite and
PostgreSQL: counts match the files, re-ingest is idempotent, newer reports update, older ones do not,
alert status rules, the assessment's optional files, hostile and malformed records."""

from __future__ import annotations

import datetime as dt
import gc
import json
import math
import shutil
import threading
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from fieldward.assess.model import (
    ConfigFinding,
    CvssScore,
    DeviceRisk,
    Finding,
    Priority,
    RiskContributor,
    Severity,
)
from fieldward.cli import app
from fieldward.store.base import Base
from fieldward.store.database import Database
from fieldward.store.ingest import (
    COLLECTOR,
    CollectorPause,
    IngestError,
    ingest_folder,
    ingest_records,
    next_status,
)
from fieldward.store.models import (
    Alert,
    AlertEvent,
    Communication,
    ConfigFindingRow,
    Device,
    DeviceAttribute,
    VulnerabilityFinding,
)
from fieldward.store.models import (
    DeviceRisk as DeviceRiskRow,
)

from .test_models import db, pg_url

__all__ = ["db", "pg_url"]

CLOCK_COLUMNS = {"updated", "last_seen"}
"""Columns the ingestion stamps with its own clock (skipped when comparing for idempotence, except where
they come from the data)."""
DATA_CLOCKS = {"devices", "communications", "config_findings"}
"""Tables whose ``last_seen`` comes from the folder, not from the clock."""


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo analysis folder (``fieldward demo``), generated once per session."""
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (out / "sample-plant.pcap").unlink()
    return out


def _copy(demo: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(demo, folder)
    return folder


def _snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    snapshot: dict[str, list[tuple[Any, ...]]] = {}
    with db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            skip = CLOCK_COLUMNS - ({"last_seen"} if table.name in DATA_CLOCKS else set())
            if table.name == "sensors":
                skip = skip | {"last_seen"}
            columns = [c for c in table.columns if c.name not in skip]
            rows = connection.execute(select(*columns).order_by(*table.primary_key.columns)).all()
            snapshot[table.name] = [
                tuple(json.dumps(v, sort_keys=True, default=str) for v in row) for row in rows
            ]
    return snapshot


def _iso(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value).astimezone(dt.UTC)


def test_demo_folder_lands_completely(db: Database, demo: Path) -> None:
    report = ingest_folder(db, demo, "demo-plant")
    devices = json.loads((demo / "devices.json").read_text())["devices"]
    edges = pq.read_table(demo / "communications.parquet").to_pylist()
    alerts = [json.loads(line) for line in (demo / "alerts.jsonl").read_text().splitlines() if line]
    assert report.written["devices"] == len(devices) > 10
    assert report.written["communications"] == len(edges) > 100
    assert report.written["alerts"] == len(alerts) > 3
    assert report.written["device_attributes"] == sum(len(d["attributes"]) for d in devices)
    assert report.skipped == {}
    assert report.weird == {}
    with db.session() as session:
        stored = {d.device_key: d for d in session.scalars(select(Device))}
        assert set(stored) == {d["id"] for d in devices}
        for record in devices:
            row = stored[record["id"]]
            assert (row.vendor, row.model, row.device_type, row.purdue_level) == (
                record["vendor"],
                record["model"],
                record["device_type"],
                record["purdue_level"],
            )
            assert row.ips == record["ips"]
            assert row.roles == record["roles"]
            assert row.first_seen == _iso(record["first_seen"])
            assert row.last_seen is not None
            assert row.last_seen.tzinfo is not None
        by_id = {v.id: k for k, v in stored.items()}
        edge = edges[0]
        found = session.scalars(
            select(Communication).where(Communication.port == edge["dst_port"], Communication.flows >= 1)
        ).all()
        assert any(
            (by_id[c.src_device_id], by_id[c.dst_device_id]) == (edge["src_device"], edge["dst_device"])
            and c.src_bytes == edge["src_bytes"]
            for c in found
        )
        rows = {a.alert_key: a for a in session.scalars(select(Alert))}
        for record in alerts:
            row = rows[record["id"]]
            assert (row.type, row.severity, row.count, row.mitre) == (
                record["type"],
                record["severity"],
                record["count"],
                record["mitre"],
            )
            assert row.last_ts == _iso(record["last_ts"])
            assert by_id.get(row.src_device_id or -1) == record["src_device"]
            assert row.evidence_pcap == record["evidence_pcap"]
        events = session.scalars(select(AlertEvent)).all()
        assert len(events) == len(alerts)
        assert {(e.from_status, e.to_status, e.by) for e in events} == {(None, "new", "sensor:demo-plant")}
        attribute = session.scalars(
            select(DeviceAttribute).join(Device).where(Device.device_key == devices[0]["id"])
        ).first()
        assert attribute is not None
        expected = devices[0]["attributes"][attribute.name]
        assert (attribute.value, attribute.evidence) == (expected["value"], expected["evidence"])


def test_reingesting_the_same_folder_changes_nothing(db: Database, demo: Path) -> None:
    ingest_folder(db, demo, "demo-plant")
    before = _snapshot(db)
    report = ingest_folder(db, demo, "demo-plant")
    assert report.written["devices"] > 0
    assert "alert_events" not in report.written
    assert _snapshot(db) == before


def test_a_newer_folder_updates_and_an_older_one_does_not(db: Database, demo: Path, tmp_path: Path) -> None:
    ingest_folder(db, demo, "demo-plant")
    with db.session() as session:  # the analyst's field survives ingestion
        session.execute(update(Device).values(importance=5))
    newer = _copy(demo, tmp_path)
    data = json.loads((newer / "devices.json").read_text())
    first = data["devices"][0]
    later = _iso(first["last_seen"]) + dt.timedelta(hours=1)
    first["last_seen"] = later.isoformat()
    first["first_seen"] = "2025-12-31T23:00:00Z"
    first["packets"] = 10**12
    first["vendor"] = "Renamed AG"
    (newer / "devices.json").write_text(json.dumps(data))
    lines = (newer / "alerts.jsonl").read_text().splitlines()
    alert = json.loads(lines[0])
    alert["last_ts"] = (_iso(alert["last_ts"]) + dt.timedelta(hours=1)).isoformat()
    alert["count"] += 1000
    alert["status"] = "acknowledged"
    lines[0] = json.dumps(alert)
    (newer / "alerts.jsonl").write_text("\n".join(lines) + "\n")
    ingest_folder(db, newer, "demo-plant")
    with db.session() as session:
        device = session.scalars(select(Device).where(Device.device_key == first["id"])).one()
        assert (device.packets, device.vendor, device.last_seen, device.importance) == (
            10**12,
            "Renamed AG",
            later,
            5,
        )
        assert device.first_seen == dt.datetime(2025, 12, 31, 23, tzinfo=dt.UTC)
        row = session.scalars(select(Alert).where(Alert.alert_key == alert["id"])).one()
        assert (row.count, row.status) == (alert["count"], "acknowledged")
        change = session.scalars(
            select(AlertEvent).where(AlertEvent.alert_id == row.id, AlertEvent.from_status == "new")
        )
        assert [e.to_status for e in change] == ["acknowledged"]
    # The original (older) folder again: newer values stay.
    ingest_folder(db, demo, "demo-plant")
    with db.session() as session:
        device = session.scalars(select(Device).where(Device.device_key == first["id"])).one()
        assert (device.packets, device.vendor, device.last_seen) == (10**12, "Renamed AG", later)
        assert device.first_seen == dt.datetime(2025, 12, 31, 23, tzinfo=dt.UTC)
        row = session.scalars(select(Alert).where(Alert.alert_key == alert["id"])).one()
        assert (row.count, row.status) == (alert["count"], "acknowledged")


def _alert(key: str, last: str, status: str = "new", count: int = 1) -> dict[str, Any]:
    return {
        "id": key,
        "engine": "recon",
        "type": "recon.port_scan",
        "title": "Port scan",
        "severity": "high",
        "status": status,
        "first_ts": "2026-01-01T00:00:00Z",
        "last_ts": last,
        "count": count,
        "src": "10.0.0.1",
        "dst": "10.0.0.2",
        "src_device": "mac:02:00:00:00:00:01",
        "dst_device": "mac:02:00:00:00:00:02",
    }


@pytest.mark.parametrize(
    ("stored", "incoming", "newer", "expected"),
    [
        ("closed", "new", True, "new"),  # fired again after it was closed: reopened
        ("acknowledged", "new", True, "acknowledged"),  # the console's triage is not undone
        ("new", "closed", True, "closed"),  # the sensor's analyst closed it
        ("closed", "new", False, "closed"),  # the same (or an older) report changes nothing
        ("acknowledged", "closed", False, "acknowledged"),
    ],
)
def test_alert_status_rules(db: Database, stored: str, incoming: str, newer: bool, expected: str) -> None:
    ingest_records(db, "s1", "alerts", [_alert("a1", "2026-01-01T00:05:00Z")])
    with db.session() as session:
        session.execute(update(Alert).values(status=stored))
    last = "2026-01-01T00:06:00Z" if newer else "2026-01-01T00:05:00Z"
    ingest_records(db, "s1", "alerts", [_alert("a1", last, incoming, count=7)])
    with db.session() as session:
        row = session.scalars(select(Alert)).one()
        assert row.status == expected
        assert row.count == 7  # counts follow a report at least as new
        last_event = session.scalars(select(AlertEvent).order_by(AlertEvent.id.desc())).first()
        assert last_event is not None
        if expected != stored:
            assert (last_event.from_status, last_event.to_status) == (stored, expected)
    when = dt.datetime(2026, 1, 1, 0, 5, tzinfo=dt.UTC)
    assert next_status(stored, when, incoming, when + dt.timedelta(minutes=1 if newer else 0)) == expected


def test_pushed_batches_create_stub_devices_that_the_inventory_fills(db: Database) -> None:
    edge = {
        "src_device": "mac:02:00:00:00:00:01",
        "dst_device": "mac:02:00:00:00:00:02",
        "transport": "tcp",
        "dst_port": 502,
        "service": "modbus",
        "flows": 3,
        "src_packets": 10,
        "dst_packets": 9,
        "src_bytes": 700,
        "dst_bytes": 650,
        "first_ts": "2026-01-01T00:00:00Z",
        "last_ts": "2026-01-01T00:01:00Z",
    }
    report = ingest_records(db, "sensor-7", "communications", [edge])
    assert report.written["communications"] == 1
    assert report.weird["devices.stub_created"] == 2
    ingest_records(
        db, "sensor-7", "devices", [{"id": "mac:02:00:00:00:00:02", "vendor": "Schneider Electric"}]
    )
    with db.session() as session:
        devices = {d.device_key: d for d in session.scalars(select(Device))}
        assert set(devices) == {"mac:02:00:00:00:00:01", "mac:02:00:00:00:00:02"}
        assert devices["mac:02:00:00:00:00:01"].mac == "02:00:00:00:00:01"
        assert devices["mac:02:00:00:00:00:02"].vendor == "Schneider Electric"
        stored = session.scalars(select(Communication)).one()
        assert (stored.protocol, stored.packets, stored.bytes) == ("modbus", 19, 1350)
        assert stored.dst_device_id == devices["mac:02:00:00:00:00:02"].id


def _assessment(folder: Path, device: str) -> tuple[Finding, ConfigFinding, DeviceRisk]:
    finding = Finding(
        device_id=device,
        vulnerability_id="CVE-2019-10929",
        cpe="cpe:2.3:o:siemens:simatic_s7-1500_firmware:2.9.4:*:*:*:*:*:*:*",
        criteria="cpe:2.3:o:siemens:simatic_s7-1500_firmware:*:*:*:*:*:*:*:* < 2.9.7",
        reason="firmware V2.9.4 is below 2.9.7",
        confidence=0.8,
        sources=("nvd", "kev"),
        severity=Severity.HIGH,
        cvss=CvssScore("3.1", "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:N", 7.4, Severity.HIGH),
        kev=True,
        kev_due_date=dt.date(2026, 2, 1),
        published=dt.datetime(2019, 4, 17, tzinfo=dt.UTC),
    )
    config = ConfigFinding(
        check="cleartext.telnet",
        device_id=device,
        title="Telnet management",
        severity=Severity.MEDIUM,
        explanation="Telnet sends passwords in clear text.",
        recommendation="Use SSH.",
        protocol="telnet",
        port=23,
        peers=("mac:02:00:00:00:00:09",),
        first_seen="2026-01-01T00:00:00Z",
        last_seen="2026-01-01T00:03:00Z",
        count=4,
        evidence=(12, 13),
    )
    risk = DeviceRisk(
        device_id=device,
        score=87,
        exploitability=0.9,
        exposure=0.5,
        criticality=0.9,
        behaviour=0.2,
        priority=Priority.NOW,
        contributors=(RiskContributor("exploitability", 40.0, "KEV", "CVE-2019-10929"),),
    )
    (folder / "vulnerabilities.json").write_text(json.dumps({"findings": [finding.to_json()]}))
    (folder / "configurations.json").write_text(json.dumps({"findings": [config.to_json()]}))
    (folder / "risk.json").write_text(json.dumps({"devices": [risk.to_json()], "site": {"score": 87}}))
    return finding, config, risk


def test_the_assessment_files_are_ingested_when_present(db: Database, demo: Path, tmp_path: Path) -> None:
    folder = _copy(demo, tmp_path)
    device = json.loads((folder / "devices.json").read_text())["devices"][0]["id"]
    finding, config, risk = _assessment(folder, device)
    report = ingest_folder(db, folder, "plant")
    assert (report.written["vulnerabilities"], report.written["configurations"], report.written["risk"]) == (
        1,
        1,
        1,
    )
    before = _snapshot(db)
    ingest_folder(db, folder, "plant")
    assert _snapshot(db) == before
    with db.session() as session:
        row = session.scalars(select(VulnerabilityFinding)).one()
        assert (row.vulnerability_id, row.cvss_score, row.kev, row.kev_due_date, row.sources) == (
            "CVE-2019-10929",
            7.4,
            True,
            dt.date(2026, 2, 1),
            ["nvd", "kev"],
        )
        assert (row.severity, row.severity_rank, row.published) == ("high", 3, finding.published)
        stored = session.scalars(select(ConfigFindingRow)).one()
        assert (stored.finding_key, stored.port, stored.count, stored.evidence) == (
            config.id,
            23,
            4,
            [12, 13],
        )
        score = session.scalars(select(DeviceRiskRow)).one()
        assert (score.score, score.priority, score.contributors[0]["reference"]) == (
            87,
            "now",
            "CVE-2019-10929",
        )
        owner = session.scalars(select(Device).where(Device.device_key == device)).one()
        assert owner.risk_score == risk.score
        assert row.device_id == stored.device_id == score.device_id == owner.id


HOSTILE = "'); DROP TABLE devices; -- Ünïcödé 🏭 %(x)s $1 \\N \t|"


def test_hostile_and_malformed_records(db: Database) -> None:
    huge = "x" * 200_000
    records: list[Any] = [
        {"id": "mac:02:00:00:00:00:01", "vendor": HOSTILE, "model": huge, "hostname": "nul\x00byte"},
        {"id": "k" * 300, "vendor": "key too long"},
        {"vendor": "no id"},
        {"id": "mac:02:00:00:00:00:03", "first_seen": "yesterday"},
        {"id": "mac:02:00:00:00:00:04", "purdue_level": 10**9},
        "not an object",
        {"id": "mac:02:00:00:00:00:05", "device_type": "t" * 100, "facts": {"x": [HOSTILE, huge]}},
    ]
    report = ingest_records(db, "s", "devices", records)
    assert report.written["devices"] == 2
    assert report.skipped["devices"] == 5
    assert report.weird["devices.device_key_too_long"] == 1
    assert report.weird["devices.missing_id"] == 1
    assert report.weird["devices.bad_timestamp"] == 1
    assert report.weird["devices.integer_out_of_range"] == 1
    assert report.weird["devices.nul_replaced"] == 1
    assert report.weird["devices.device_type_truncated"] == 1
    with db.session() as session:
        rows = {d.device_key: d for d in session.scalars(select(Device))}
        assert (rows["mac:02:00:00:00:00:01"].vendor, rows["mac:02:00:00:00:00:01"].model) == (HOSTILE, huge)
        assert rows["mac:02:00:00:00:00:01"].hostname == "nul\ufffdbyte"
        assert rows["mac:02:00:00:00:00:05"].facts == {"x": [HOSTILE, huge]}
        assert rows["mac:02:00:00:00:00:05"].device_type == "t" * 64


def test_json_values_orjson_cannot_write_are_stored(db: Database) -> None:
    """An integer beyond 64 bits in a JSON column (orjson refuses to write it) is written by
    ``json``; non-finite floats beside it become null, as orjson writes them. On PostgreSQL this
    failed the whole batch (the COPY aborted the transaction)."""
    alert = {
        "id": "a1",
        "type": "t.x",
        "title": "T",
        "details": {"big": 2**70, "ratio": float("nan"), 7: "int key"},
        "evidence": [{"n": -(2**65)}, float("inf")],
    }
    report = ingest_records(db, "s", "alerts", [alert])
    assert report.written["alerts"] == 1
    with db.session() as session:
        stored = session.execute(select(Alert.details, Alert.evidence)).one()
    ratio, infinite = stored.details.pop("ratio"), stored.evidence.pop()
    assert stored.details == {"big": 2**70, "7": "int key"}
    assert stored.evidence == [{"n": -(2**65)}]
    if db.dialect == "postgresql":  # its json type refuses NaN and Infinity: null, as orjson writes
        assert (ratio, infinite) == (None, None)
    else:  # SQLite keeps what json.dumps writes (SQLAlchemy's JSON type)
        assert math.isnan(ratio)
        assert infinite == float("inf")


def test_lone_surrogates_are_replaced_not_a_crash(db: Database) -> None:
    """A lone surrogate (valid JSON "\\ud800", which json reads into a string no driver can encode)
    becomes U+FFFD wherever it is, and the record is counted; before, the batch raised
    UnicodeEncodeError on both backends."""
    alert = {
        "id": "s1",
        "type": "t.x",
        "title": "bad \ud800 title",
        "details": {"k\udfff": ["ok", "x\udbff"], "n": 2**70},
    }
    clean = {"id": "s2", "type": "t.x", "title": "fine é"}
    report = ingest_records(db, "s", "alerts", [alert, clean])
    assert report.written["alerts"] == 2
    assert report.weird["alerts.surrogate_replaced"] == 1
    with db.session() as session:
        stored = {a.alert_key: a for a in session.scalars(select(Alert))}
    assert stored["s1"].title == "bad \ufffd title"
    assert stored["s1"].details == {"k\ufffd": ["ok", "x\ufffd"], "n": 2**70}
    assert stored["s2"].title == "fine é"
    device = {"id": "mac:02:00:00:00:00:77", "hostname": "plc\ud83d"}
    report = ingest_records(db, "s", "devices", [device])
    assert report.weird["devices.surrogate_replaced"] == 1
    with db.session() as session:
        hostname = session.scalar(select(Device.hostname).where(Device.device_key == device["id"]))
    assert hostname == "plc\ufffd"


def test_bad_lines_of_alerts_jsonl_are_counted(db: Database, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    good = json.dumps(_alert("a1", "2026-01-01T00:05:00Z"))
    (folder / "alerts.jsonl").write_bytes(
        good.encode() + b"\n{not json\n\xff\xfe\n\n" + json.dumps(_alert("a2", "x", "bogus")).encode() + b"\n"
    )
    report = ingest_folder(db, folder, "s")
    assert report.written["alerts"] == 1
    assert report.skipped["alerts"] == 3
    assert report.weird["alerts.bad_json_line"] == 2
    assert report.weird["devices.json.missing"] == 1


def test_folder_errors(db: Database, tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="not a folder"):
        ingest_folder(db, tmp_path / "missing", "s")
    with pytest.raises(IngestError, match="not an analysis folder"):
        ingest_folder(db, tmp_path, "s")
    (tmp_path / "devices.json").write_text("{ broken")
    with pytest.raises(IngestError, match="not valid JSON"):
        ingest_folder(db, tmp_path, "s")
    (tmp_path / "devices.json").write_text('{"summary": {}}')
    with pytest.raises(IngestError, match="no record list"):
        ingest_folder(db, tmp_path, "s")
    (tmp_path / "devices.json").write_text('{"devices": []}')
    (tmp_path / "communications.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(IngestError, match="cannot read"):
        ingest_folder(db, tmp_path, "s")
    with pytest.raises(IngestError, match="unknown record kind"):
        ingest_records(db, "s", "flows", [])
    with pytest.raises(IngestError, match="sensor name"):
        ingest_records(db, " ", "devices", [])
    with db.session() as session:  # a failed folder leaves nothing behind (one transaction)
        assert session.scalars(select(Device)).all() == []


def test_the_collector_is_paused_while_a_batch_is_stored_and_resumed_after(db: Database) -> None:
    """``ingest_records`` holds :data:`COLLECTOR`: no cyclic collection while the batch is stored, the
    collector back on afterwards, also when the batch fails."""
    states: list[bool] = []
    real_sensor = ingest_records.__globals__["_sensor"]

    def spy(connection: Any, sensor: Any) -> Any:
        states.append(gc.isenabled())
        return real_sensor(connection, sensor)

    ingest_records.__globals__["_sensor"] = spy
    try:
        assert gc.isenabled()
        ingest_records(db, "gc-sensor", "alerts", [{"id": "a1", "type": "t", "last_ts": 1.0}])
        assert states == [False]
        assert gc.isenabled()
        assert COLLECTOR.holders == 0
        with pytest.raises(IngestError):
            ingest_records(db, "", "alerts", [])
        assert gc.isenabled()
        assert COLLECTOR.holders == 0
    finally:
        ingest_records.__globals__["_sensor"] = real_sensor


def test_collector_pause_is_reentrant_across_threads_and_bounded() -> None:
    """One pause lasts while any holder is inside (nested, other threads); a collector that was off
    stays off; holders that overlap without end still get a full collection every ``longest``."""
    pause = CollectorPause(longest=3600.0)
    assert gc.isenabled()
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with pause:
            inside.set()
            release.wait(10)

    other = threading.Thread(target=hold)
    other.start()
    assert inside.wait(10)
    with pause:
        with pause:
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other thread still holds it
    release.set()
    other.join(10)
    assert gc.isenabled()
    assert pause.holders == 0

    gc.disable()
    try:
        with pause:
            pass
        assert not gc.isenabled()  # it was off before: left off
    finally:
        gc.enable()

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    overlapping = CollectorPause(longest=0.0)
    outer = overlapping.__enter__()
    try:
        with overlapping:
            for _ in range(1000):
                Cycle()
            assert gc.get_count()[0] >= 1000  # not collected meanwhile
        # leaving while another holder is inside, after ``longest``: a full collection ran
        assert gc.get_count()[0] < 100
        assert not gc.isenabled()
    finally:
        outer.__exit__(None, None, None)
    assert gc.isenabled()
