"""Sensors push batches: applied once per batch id, answered ``duplicate`` on a retry, malformed
records counted (never a 500), every batch summarised in the audit log; evidence captures upload."""

from __future__ import annotations

import gc
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fieldward.console.api.routes import ingest as ingest_route
from fieldward.console.models import IngestBatch
from fieldward.store.models import Alert, AuditLog, Device, Sensor

from .conftest import Console


def _devices(demo_folder: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads((demo_folder / "devices.json").read_text())["devices"]
    return records


def _alerts(demo_folder: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in (demo_folder / "alerts.jsonl").read_text().splitlines() if line.strip()
    ]


def _count(console: Console, model: Any) -> int:
    with console.database.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_a_batch_is_applied_once_and_a_retry_is_a_duplicate(any_console: Console, demo_folder: Path) -> None:
    console = any_console
    client = console.new_client()
    sensor = console.bearer(console.sensor_token)
    records = _devices(demo_folder)
    batch = {"batch_id": str(uuid.uuid4()), "records": records}
    first = client.post("/api/v1/ingest/devices", json=batch, headers=sensor)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "applied"
    assert first.json()["written"] >= len(records)  # devices plus their attributes
    assert _count(console, Device) == len(records)
    retry = client.post("/api/v1/ingest/devices", json=batch, headers=sensor)
    assert retry.status_code == 200
    assert retry.json() == {
        "batch_id": batch["batch_id"],
        "status": "duplicate",
        "written": 0,
        "skipped": 0,
        "weird": {},
    }
    # the same records in a new batch are upserted: still one row per device
    again = client.post(
        "/api/v1/ingest/devices", json={**batch, "batch_id": str(uuid.uuid4())}, headers=sensor
    )
    assert again.json()["status"] == "applied"
    assert _count(console, Device) == len(records)
    assert _count(console, IngestBatch) == 2
    with console.database.session() as session:
        rows = list(session.scalars(select(AuditLog).where(AuditLog.action == "ingest.batch")))
        last_seen = session.scalar(select(Sensor.last_seen).where(Sensor.name == "sensor-1"))
    assert len(rows) == 2
    assert rows[0].actor == "sensor:sensor-1"
    assert rows[0].details["kind"] == "devices"
    assert rows[0].details["records"] == len(records)
    assert last_seen is not None


def test_alerts_reference_devices_and_malformed_records_are_counted(
    any_console: Console, demo_folder: Path
) -> None:
    console = any_console
    client = console.new_client()
    sensor = console.bearer(console.sensor_token)
    alerts = _alerts(demo_folder)
    hostile: list[Any] = [
        "not an object",
        {"engine": "x"},
        {"id": "a" * 500, "type": "t", "severity": "high"},
        {"id": "nul", "type": "t\x00ype", "severity": "low", "engine": "e", "last_ts": "yesterday-ish"},
    ]
    response = client.post(
        "/api/v1/ingest/alerts",
        json={"batch_id": str(uuid.uuid4()), "records": alerts + hostile},
        headers=sensor,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["written"] >= len(alerts)  # alerts plus their status events and device stubs
    assert body["skipped"] == len(hostile)
    assert sum(body["weird"].values()) >= len(hostile)
    assert _count(console, Alert) == len(alerts)


def test_bad_pushes_are_4xx(console: Console) -> None:
    client = console.new_client()
    sensor = console.bearer(console.sensor_token)
    good = {"batch_id": str(uuid.uuid4()), "records": []}
    assert client.post("/api/v1/ingest/flows", json=good, headers=sensor).status_code == 422
    assert (
        client.post("/api/v1/ingest/devices", json={**good, "batch_id": "x"}, headers=sensor).status_code
        == 422
    )
    assert (
        client.post("/api/v1/ingest/devices", json={**good, "records": {}}, headers=sensor).status_code == 422
    )
    assert client.post("/api/v1/ingest/devices", json={**good, "extra": 1}, headers=sensor).status_code == 422
    assert client.post("/api/v1/ingest/devices", content=b"{not json", headers=sensor).status_code == 422
    assert client.post("/api/v1/ingest/devices", json=good).status_code == 401
    assert (
        client.post(
            "/api/v1/ingest/devices", json=good, headers=console.bearer(console.tokens["admin"])
        ).status_code
        == 401
    )
    assert (
        client.post("/api/v1/ingest/devices", json=good, headers=console.bearer("fws_forged")).status_code
        == 401
    )


def test_evidence_upload_for_the_sensors_own_alert(console: Console, demo_folder: Path) -> None:
    client = console.new_client()
    sensor = console.bearer(console.sensor_token)
    alerts = _alerts(demo_folder)
    pushed = client.post(
        "/api/v1/ingest/alerts", json={"batch_id": str(uuid.uuid4()), "records": alerts}, headers=sensor
    )
    assert pushed.status_code == 200
    with console.database.session() as session:
        alert_id, key = session.execute(select(Alert.id, Alert.alert_key).order_by(Alert.id)).first() or (
            0,
            "",
        )
    capture = demo_folder / "evidence" / f"{key}.pcap"
    data = (
        capture.read_bytes()
        if capture.is_file()
        else next((demo_folder / "evidence").glob("*.pcap")).read_bytes()
    )
    headers = {**sensor, "content-type": "application/vnd.tcpdump.pcap"}
    uploaded = client.post(f"/api/v1/ingest/evidence/{alert_id}", content=data, headers=headers)
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json() == {"alert_id": alert_id, "bytes": len(data)}
    with console.database.session() as session:
        stored = session.scalar(select(Alert.evidence_pcap).where(Alert.id == alert_id))
    assert stored is not None
    settings = console.app.state.settings
    assert (settings.evidence_path() / stored).read_bytes() == data
    assert (
        client.post(
            f"/api/v1/ingest/evidence/{alert_id}", content=b"GIF89a" + b"\0" * 40, headers=headers
        ).status_code
        == 422
    )
    other = console.bearer(console.sensor("sensor-2"))
    foreign = client.post(
        f"/api/v1/ingest/evidence/{alert_id}",
        content=data,
        headers={**other, "content-type": "application/vnd.tcpdump.pcap"},
    )
    assert foreign.status_code == 404
    assert client.post("/api/v1/ingest/evidence/999999", content=data, headers=headers).status_code == 404


def test_text_is_cleaned_in_every_text_column_and_only_there(any_console: Console) -> None:
    """NUL characters are replaced and over-long bounded values truncated in text and JSON columns
    (a bare JSON string included); numbers and times are taken as typed values."""
    console = any_console
    client = console.new_client()
    sensor = console.bearer(console.sensor_token)
    device = {
        "id": "mac:02:00:00:00:00:99",
        "hostname": "plc\x00one",
        "ips": ["10.1.1.1"],
        "packets": 7,
        "last_seen": "2026-12-01T10:00:00Z",
        "attributes": {"vendor": {"value": "Sie\x00mens", "confidence": 0.5}},
    }
    pushed = client.post(
        "/api/v1/ingest/devices", json={"batch_id": str(uuid.uuid4()), "records": [device]}, headers=sensor
    )
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["weird"]["devices.nul_replaced"] == 1
    assert pushed.json()["weird"]["device_attributes.nul_replaced"] == 1
    alert = {
        "id": "clean-1",
        "type": "t",
        "severity": "high",
        "title": "stop\x00cpu",
        "src": "s" * 300,
        "count": 3,
        "last_ts": "2026-12-01T10:00:00Z",
        "src_device": device["id"],
    }
    too_long_key = {**alert, "id": "k" * 65}
    pushed = client.post(
        "/api/v1/ingest/alerts",
        json={"batch_id": str(uuid.uuid4()), "records": [alert, too_long_key]},
        headers=sensor,
    )
    body = pushed.json()
    assert body["skipped"] == 1
    assert body["weird"]["alerts.alert_key_too_long"] == 1
    assert body["weird"]["alerts.src_truncated"] == 1
    assert body["weird"]["alerts.nul_replaced"] == 1
    with console.database.session() as session:
        stored = session.execute(
            select(Alert.title, Alert.src, Alert.count).where(Alert.alert_key == "clean-1")
        ).one()
        hostname = session.scalar(select(Device.hostname).where(Device.device_key == device["id"]))
    assert stored.title == "stop\ufffdcpu"
    assert stored.src == "s" * 255
    assert stored.count == 3
    assert hostname == "plc\ufffdone"


def test_integers_beyond_64_bits_keep_their_value(any_console: Console) -> None:
    """orjson, which parses the batches, reads an integer past 2**64 - 1 as a float: such a body is
    parsed by ``json`` instead, and stored as sent (PostgreSQL: written by ``json``, not orjson,
    which cannot write it)."""
    console = any_console
    client = console.new_client()
    big = 2**70 + 1  # not a float's value: a float would round it
    alert = {"id": "big-1", "type": "t", "title": "x", "details": {"register": big, "serial": "1" * 25}}
    body = json.dumps({"batch_id": str(uuid.uuid4()), "records": [alert]})  # exact digits
    pushed = client.post(
        "/api/v1/ingest/alerts",
        content=body,
        headers={**console.bearer(console.sensor_token), "Content-Type": "application/json"},
    )
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["status"] == "applied"
    with console.database.session() as session:
        details = session.scalar(select(Alert.details).where(Alert.alert_key == "big-1"))
    assert details == {"register": big, "serial": "1" * 25}
    assert type(details["register"]) is int


def test_a_lone_surrogate_is_replaced_not_a_500(any_console: Console) -> None:
    """JSON allows "\\ud800" alone; json (orjson refuses it) reads a string no driver can encode.
    The batch is applied with U+FFFD in its place and the record counted."""
    console = any_console
    client = console.new_client()
    body = '{"batch_id": "%s", "records": [{"id": "sur-1", "type": "t", "title": "a\\ud800b"}]}'
    pushed = client.post(
        "/api/v1/ingest/alerts",
        content=body.replace("%s", str(uuid.uuid4())),
        headers={**console.bearer(console.sensor_token), "Content-Type": "application/json"},
    )
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["weird"] == {"alerts.surrogate_replaced": 1}
    with console.database.session() as session:
        title = session.scalar(select(Alert.title).where(Alert.alert_key == "sur-1"))
    assert title == "a\ufffdb"


def test_the_collector_is_paused_from_parsing_to_answer(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest route holds the store's collector pause around the whole request (the parsed batch
    is not walked by the cyclic collector while it is stored) and gives it back after, also on a 422."""
    seen: list[bool] = []
    real = ingest_route.ingest_records

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_route, "ingest_records", spy)
    client = console.new_client()
    sensor = console.bearer(console.sensor_token)
    batch = {"batch_id": str(uuid.uuid4()), "records": [{"id": "mac:00:00:00:00:00:01"}]}
    assert gc.isenabled()
    answer = client.post("/api/v1/ingest/devices", json=batch, headers=sensor)
    assert answer.status_code == 200, answer.text
    assert seen == [False]
    assert gc.isenabled()
    bad = client.post("/api/v1/ingest/devices", content=b"{not json", headers=sensor)
    assert bad.status_code == 422
    assert gc.isenabled()
