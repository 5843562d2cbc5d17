"""The dead-letter API (``/api/v1/transport/dead-letters``) over real dead letters: a sensor the
console does not know publishes the demo plant to a real nats-server, a real ingest worker
dead-letters every batch (``sensor.unknown``); analysts read them, an administrator registers the
sensor and applies them again through the API, and the store then holds exactly what
``ingest_folder`` stores from the same folder. A batch that is still refused stays (409), a batch
applied before is a ``duplicate``, a discarded one is gone and audited."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from fieldward.console.jetstream import JetStreamSensorClient, NatsSettings
from fieldward.console.jetstream_worker import IngestWorker, WorkerSettings
from fieldward.store.columnar import ColumnarStore
from fieldward.store.database import Database
from fieldward.store.ingest import ingest_folder
from fieldward.store.models import Alert, AuditLog
from fieldward.store.transport_models import TransportDeadLetter
from tests.console.conftest import Console, start_console

from .conftest import NatsServer
from .test_jetstream import TABLES, _consumer_backlog, _count, _publish_raw, _work

LETTERS = "/api/v1/transport/dead-letters"
RETRIES = "/api/v1/transport/dead-letter-retries"
WORKERS = "/api/v1/transport/workers"


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    yield from start_console(f"sqlite:///{tmp_path / 'console.db'}", tmp_path / "data")


def _get(console: Console, role: str, url: str, **params: Any) -> Any:
    response = console.client.get(url, params=params, headers=console.bearer(console.tokens[role]))
    assert response.status_code == 200, response.text
    return response.json()


def _post(console: Console, url: str, **params: Any) -> Any:
    return console.client.post(url, params=params, headers=console.bearer(console.tokens["admin"]))


def test_dead_letters_are_read_applied_again_once_fixed_and_discarded(
    console: Console, nats_server: NatsServer, demo_folder: Path, tmp_path: Path
) -> None:
    _publish_raw(nats_server.url, [])  # create the stream
    with JetStreamSensorClient(nats_server.url, tmp_path / "spool", sensor="plant-new") as client:
        report = client.push_folder(demo_folder, retry_for=5)
    assert report.complete, report.to_json()
    assert report.applied > 0
    bad_headers = {"Fieldward-Batch-Id": "b-bad", "Fieldward-Encoding": "json"}
    _publish_raw(nats_server.url, [("fieldward.ingest.sensor-1.devices", b"{not json", bad_headers)])
    stats = _work(nats_server.url, console.database, create_sensors=False)
    assert dict(stats.dead_lettered) == {"sensor.unknown": report.applied, "body.bad_json": 1}
    assert _consumer_backlog(nats_server.url) == (0, 0)
    (worker,) = _get(console, "analyst", WORKERS)["items"]  # the worker's row, written as it stopped
    assert (worker["state"], worker["alive"], worker["applied"]) == ("stopped", False, 0)
    assert worker["dead_lettered"] == report.applied + 1
    assert _get(console, "analyst", WORKERS, alive=True)["total"] == 0

    # --- read: analysts and administrators; filters by sensor and by reason code
    page = _get(console, "analyst", LETTERS, limit=500)
    assert page["total"] == report.applied + 1
    assert {item["code"] for item in page["items"]} == {"sensor.unknown", "body.bad_json"}
    unknown = _get(console, "admin", LETTERS, sensor="plant-new", limit=500)
    assert unknown["total"] == report.applied
    assert {(i["sensor"], i["code"]) for i in unknown["items"]} == {("plant-new", "sensor.unknown")}
    assert {i["kind"] for i in unknown["items"]} >= {"devices", "alerts", "flows", "evidence"}
    (bad,) = _get(console, "analyst", LETTERS, code="body.bad_json")["items"]
    assert (bad["subject"], bad["batch_id"], bad["size"]) == ("fieldward.ingest.sensor-1.devices", "b-bad", 9)
    detail = _get(console, "analyst", f"{LETTERS}/{unknown['items'][0]['id']}")
    with console.database.session() as session:
        stored = session.get(TransportDeadLetter, detail["id"])
        assert stored is not None
        assert base64.b64decode(detail["payload_base64"]) == stored.payload
    assert detail["headers"]["Fieldward-Batch-Id"] == detail["batch_id"]
    viewer = console.client.get(LETTERS, headers=console.bearer(console.tokens["viewer"]))
    assert viewer.status_code == 403

    # --- retried before the cause is fixed: all still refused, all kept
    early = _post(console, RETRIES, sensor="plant-new", limit=500)
    assert early.status_code == 200, early.text
    assert early.json() == {
        "tried": report.applied,
        "applied": 0,
        "duplicate": 0,
        "failed": report.applied,
        "remaining": report.applied,
    }

    # --- the administrator registers the sensor, then applies its dead letters again
    created = console.client.post(
        "/api/v1/sensors", json={"name": "plant-new"}, headers=console.bearer(console.tokens["admin"])
    )
    assert created.status_code == 201, created.text
    applied = 0
    for _ in range(3):  # evidence tried before its alert (if ordered so) succeeds on the next round
        answer = _post(console, RETRIES, sensor="plant-new", limit=500).json()
        applied += answer["applied"]
        if answer["remaining"] == 0:
            break
    assert answer["remaining"] == 0
    assert applied == report.applied
    assert _get(console, "analyst", LETTERS)["total"] == 1  # only the bad one is left

    reference = Database(f"sqlite:///{tmp_path / 'reference.db'}")
    reference.upgrade()
    ingest_folder(reference, demo_folder, "plant-new")
    try:
        for model in TABLES:
            assert _count(console.database, model) == _count(reference, model) > 0, model.__tablename__
    finally:
        reference.dispose()
    with ColumnarStore(tmp_path / "data" / "columnar") as store:
        assert store.flows(limit=100_000).num_rows == report.columnar["flows"] > 0
    evidence = sorted((tmp_path / "data" / "evidence").rglob("*.pcap"))
    assert len(evidence) == report.spooled["evidence"] > 0
    assert _count(console.database, Alert, Alert.evidence_pcap.is_not(None)) == len(evidence)

    # --- a dead letter of a batch that is in the store by now: "duplicate", and it is removed
    with console.database.session() as session:
        copy = TransportDeadLetter(
            stream="FIELDWARD_INGEST",
            stream_seq=10**9,
            subject=f"fieldward.ingest.plant-new.{detail['kind']}",
            sensor="plant-new",
            batch_id=detail["batch_id"],
            reason="sensor.unknown: test copy",
            deliveries=1,
            size=len(stored.payload),
            payload=base64.b64decode(detail["payload_base64"]),
            headers=orjson.dumps(detail["headers"]).decode(),
        )
        session.add(copy)
        session.flush()
        copy_id = copy.id
    again = _post(console, f"{LETTERS}/{copy_id}/retry")
    assert again.status_code == 200, again.text
    assert again.json() == {
        "id": copy_id,
        "batch_id": detail["batch_id"],
        "kind": detail["kind"],
        "status": "duplicate",
    }
    assert (
        console.client.get(
            f"{LETTERS}/{copy_id}", headers=console.bearer(console.tokens["admin"])
        ).status_code
        == 404
    )

    # --- still refused: 409 with the reason, kept; then discarded by an administrator
    refused = _post(console, f"{LETTERS}/{bad['id']}/retry")
    assert refused.status_code == 409
    assert "body.bad_json" in refused.json()["detail"]
    assert _get(console, "analyst", f"{LETTERS}/{bad['id']}")["code"] == "body.bad_json"
    analyst_delete = console.client.delete(
        f"{LETTERS}/{bad['id']}", headers=console.bearer(console.tokens["analyst"])
    )
    assert analyst_delete.status_code == 403
    discarded = console.client.delete(
        f"{LETTERS}/{bad['id']}", headers=console.bearer(console.tokens["admin"])
    )
    assert discarded.status_code == 200, discarded.text
    assert _get(console, "analyst", LETTERS)["total"] == 0
    assert _post(console, f"{LETTERS}/{bad['id']}/retry").status_code == 404
    with console.database.session() as session:
        actions = session.scalars(
            select(AuditLog.action).where(AuditLog.action.startswith("transport."))
        ).all()
        assert int(session.scalar(select(func.count()).select_from(TransportDeadLetter)) or 0) == 0
    assert sorted(set(actions)) == [
        "transport.dead_letter.discard",
        "transport.dead_letter.retry",
        "transport.dead_letter.retry_all",
    ]


def test_running_workers_report_their_counters(
    console: Console, nats_server: NatsServer, tmp_path: Path
) -> None:
    """A worker updates its row while it runs (alive, counters); stopped, it says so."""
    _publish_raw(nats_server.url, [])
    worker = IngestWorker(
        NatsSettings.from_url(nats_server.url),
        console.database,
        settings=WorkerSettings(create_sensors=True, report_every=0.5, name="ingest-a"),
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=lambda: loop.run_until_complete(worker.run()))
    thread.start()
    try:
        records = orjson.dumps([{"id": f"mac:02:00:00:00:01:{i:02x}"} for i in range(7)])
        headers = {"Fieldward-Batch-Id": "w-1", "Fieldward-Encoding": "json", "Fieldward-Records": "7"}
        _publish_raw(nats_server.url, [("fieldward.ingest.sensor-1.devices", records, headers)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            items = _get(console, "analyst", WORKERS, alive=True)["items"]
            if items and items[0]["applied"] == 1:
                break
            time.sleep(0.2)
        (row,) = items
        assert (row["name"], row["state"], row["alive"]) == ("ingest-a", "running", True)
        assert (row["applied"], row["records"], row["dead_lettered"]) == (1, 7, 0)
    finally:
        loop.call_soon_threadsafe(worker.stop)
        thread.join(timeout=30)
        loop.close()
    (row,) = _get(console, "admin", WORKERS)["items"]
    assert (row["state"], row["alive"], row["applied"]) == ("stopped", False, 1)
    viewer = console.client.get(WORKERS, headers=console.bearer(console.tokens["viewer"]))
    assert viewer.status_code == 403
