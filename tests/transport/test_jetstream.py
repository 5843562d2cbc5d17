"""The JetStream transport end to end, with a real nats-server and real databases: sensors publish
through their spool, ingest workers (in-process or real subprocesses) apply and acknowledge.

- the basic path on SQLite lands exactly what ``ingest_folder`` lands from the same folder;
- three sensors and two worker processes on PostgreSQL, one worker SIGKILLed mid-stream, the
  NATS server restarted and the worker restarted: every record is in the store exactly once;
- malformed messages are counted, kept in ``transport_dead_letters`` and terminated;
- NATS down (the sensor spools, then delivers), the database down (the worker keeps the message);
- NATS authorization: a sensor cannot publish as another one; a wrong password is a clear error;
  no secret appears in the output.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from fieldward.cli import app
from fieldward.console.jetstream import (
    DEFAULT_STREAM,
    JetStreamSensorClient,
    NatsSettings,
    TransportError,
)
from fieldward.console.jetstream_worker import IngestWorker, WorkerSettings, WorkerStats
from fieldward.console.sensor_client import AuthenticationError, _zstd
from fieldward.sensor.sink import NatsSink
from fieldward.store.columnar import ColumnarStore
from fieldward.store.console_models import IngestBatch
from fieldward.store.database import Database
from fieldward.store.ingest import ingest_folder
from fieldward.store.models import (
    Alert,
    AlertEvent,
    Communication,
    ConfigFindingRow,
    Device,
    DeviceRisk,
    Sensor,
    VulnerabilityFinding,
)
from fieldward.store.transport_models import TransportDeadLetter

from .conftest import NatsServer, pg_url, write_folder

__all__ = ["pg_url"]

REPO = Path(__file__).resolve().parents[2]
TABLES = (Device, Communication, Alert, AlertEvent, VulnerabilityFinding, ConfigFindingRow, DeviceRisk)


def _count(db: Database, model: Any, *where: Any) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _work(
    url: str,
    db: Database,
    *,
    data_dir: Path | None = None,
    max_idle: float = 2.0,
    stop_after: float | None = None,
    **settings: Any,
) -> WorkerStats:
    """Run one in-process worker until the stream has been idle for ``max_idle`` seconds (or until
    ``stop_after`` seconds have passed)."""
    worker = IngestWorker(
        NatsSettings.from_url(url),
        db,
        columnar=ColumnarStore(data_dir / "columnar") if data_dir else None,
        evidence_dir=data_dir / "evidence" if data_dir else None,
        settings=WorkerSettings(**{"create_sensors": True, "retry_delay": 0.5, **settings}),
    )

    async def run() -> WorkerStats:
        if stop_after is not None:
            asyncio.get_running_loop().call_later(stop_after, worker.stop)
        return await worker.run(max_idle=max_idle)

    try:
        return asyncio.run(run())
    finally:
        if worker.columnar is not None:
            worker.columnar.close()


def _consumer_backlog(url: str) -> tuple[int, int]:
    """``(num_pending, num_ack_pending)`` of the shared durable consumer."""

    async def query() -> tuple[int, int]:
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().consumer_info(DEFAULT_STREAM, "fieldward-ingest")
            return int(info.num_pending or 0), int(info.num_ack_pending or 0)
        finally:
            await nc.close()

    return asyncio.run(query())


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Any:
    database = Database(f"sqlite:///{tmp_path / 'console.db'}")
    database.upgrade()
    yield database
    database.dispose()


def test_sqlite_basic_path_lands_what_ingest_folder_lands(
    nats_server: NatsServer, sqlite_db: Database, demo_folder: Path, tmp_path: Path
) -> None:
    _publish_raw(nats_server.url, [])  # the stream (workers create it; sensors need not be allowed to)
    with JetStreamSensorClient(nats_server.url, tmp_path / "spool", sensor="plant-a") as client:
        first = client.push_folder(demo_folder, retry_for=5)
        assert first.complete, first.to_json()
        again = client.push_folder(demo_folder, retry_for=5)  # the stream drops the duplicates
    assert again.duplicates == again.batches_spooled == first.applied > 0
    assert again.applied == 0
    stats = _work(nats_server.url, sqlite_db, data_dir=tmp_path / "console")
    assert stats.applied == first.applied
    assert not stats.dead_lettered
    assert _consumer_backlog(nats_server.url) == (0, 0)

    reference = Database(f"sqlite:///{tmp_path / 'reference.db'}")
    reference.upgrade()
    ingest_folder(reference, demo_folder, "plant-a")
    for model in TABLES:
        assert _count(sqlite_db, model) == _count(reference, model) > 0, model.__tablename__
    reference.dispose()
    assert _count(sqlite_db, IngestBatch) == first.applied
    # flows and events in the columnar store, evidence captures beside it
    with ColumnarStore(tmp_path / "console" / "columnar") as store:
        assert store.flows(limit=100_000).num_rows == first.columnar["flows"] > 0
    evidence = sorted((tmp_path / "console" / "evidence").rglob("*.pcap"))
    assert len(evidence) == first.spooled["evidence"] > 0
    with sqlite_db.session() as session:
        kept = session.scalars(select(Alert.evidence_pcap).where(Alert.evidence_pcap.is_not(None))).all()
    assert len(kept) == len(evidence)


def _sensor_thread(url: str, spool: Path, sensor: str, folder: Path, reports: dict[str, Any]) -> None:
    with JetStreamSensorClient(
        url, spool, sensor=sensor, batch_records=25, backoff_initial=0.2, backoff_max=1.0
    ) as client:
        reports[sensor] = client.push_folder(folder, retry_for=60)


def _start_worker(url: str, db_url: str, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "fieldward.cli",
        "ingest-worker",
        "--nats",
        url,
        "--db",
        db_url,
        "--create-sensors",
        "--fetch",
        "4",
        "--concurrency",
        "2",
        "--ack-wait",
        "3",
        "--retry-delay",
        "0.5",
        "-v",
    ]
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())


def test_three_sensors_two_workers_kill_one_every_record_exactly_once(
    nats_server: NatsServer, pg_url: str, tmp_path: Path
) -> None:
    db = Database(pg_url)
    plan = {f"site-{n}": (300 + 40 * n, 900 + 100 * n, 200 + 20 * n) for n in range(3)}
    folders = {name: write_folder(tmp_path / name, n, *plan[name]) for n, name in enumerate(sorted(plan))}
    workers = [_start_worker(nats_server.url, pg_url, tmp_path / f"worker-{i}.log") for i in range(2)]
    reports: dict[str, Any] = {}
    try:
        threads = [
            threading.Thread(
                target=_sensor_thread,
                args=(nats_server.url, tmp_path / f"spool-{name}", name, folders[name], reports),
            )
            for name in folders
        ]
        for thread in threads:
            thread.start()
        # kill one worker (SIGKILL: no goodbye, its unacknowledged batch is in flight) mid-stream
        deadline = time.monotonic() + 120
        while _count(db, IngestBatch) < 15 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        # the NATS server goes down and comes back (durable file storage); the killed worker is
        # restarted, and the other one is killed too: what is left is the restarted consumers' work
        nats_server.stop()
        time.sleep(1.0)
        nats_server.start()
        workers[0] = _start_worker(nats_server.url, pg_url, tmp_path / "worker-0b.log")
        workers[1].send_signal(signal.SIGKILL)
        workers[1].wait(timeout=10)
        left_after_kills = _count(db, IngestBatch)
        workers[1] = _start_worker(nats_server.url, pg_url, tmp_path / "worker-1b.log")
        for thread in threads:
            thread.join(timeout=180)
        assert set(reports) == set(plan), "a sensor thread failed"
        total = sum(report.batches_spooled for report in reports.values())
        assert 15 <= left_after_kills < total - 10, "the kills did not happen mid-stream"
        while time.monotonic() < deadline + 120:
            if _count(db, IngestBatch) >= total and _consumer_backlog(nats_server.url) == (0, 0):
                break
            time.sleep(0.2)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
    for name, report in reports.items():
        assert report.complete, (name, report.to_json())
    assert _consumer_backlog(nats_server.url) == (0, 0)
    assert _count(db, IngestBatch) == total  # each batch recorded exactly once
    with db.session() as session:
        sensors = {row[0]: row[1] for row in session.execute(select(Sensor.name, Sensor.id))}
    assert set(sensors) == set(plan)
    for name, (devices, communications, alerts) in plan.items():
        sensor = sensors[name]
        assert _count(db, Device, Device.sensor_id == sensor) == devices
        assert _count(db, Communication, Communication.sensor_id == sensor) == communications
        assert _count(db, Alert, Alert.sensor_id == sensor) == alerts
        assert reports[name].delivered == {
            "devices": devices,
            "communications": communications,
            "alerts": alerts,
        }
    # one "created" event per alert: no batch was applied twice as new
    assert _count(db, AlertEvent) == sum(alerts for _, _, alerts in plan.values())
    with db.session() as session:
        assert session.scalar(select(func.max(Alert.count))) == 1
    logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    assert "Traceback" not in logs
    finals = re.findall(r"ingest worker: (\d+) batch\(es\) applied .* (\d+) redelivered", logs)
    assert len(finals) == 2  # the killed workers said nothing; the restarted ones stopped cleanly
    assert sum(int(applied) for applied, _ in finals) >= total - left_after_kills
    assert sum(int(redelivered) for _, redelivered in finals) >= 1  # the killed workers' batches
    db.dispose()


def _publish_raw(url: str, messages: list[tuple[str, bytes, dict[str, str]]]) -> None:
    async def go() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        from fieldward.console.jetstream import ensure_stream

        await ensure_stream(js)
        for subject, payload, headers in messages:
            await js.publish(subject, payload, headers=headers or None)
        await nc.close()

    asyncio.run(go())


def test_malformed_messages_are_counted_dead_lettered_and_terminated(
    nats_server: NatsServer, sqlite_db: Database, tmp_path: Path
) -> None:
    good = orjson.dumps([{"id": "mac:02:00:00:00:00:01", "vendor": "Siemens"}])
    ok_headers = {"Fieldward-Batch-Id": "b-good", "Fieldward-Encoding": "json"}
    bad = [
        ("fieldward.ingest.plant-a", b"[]", {}, "subject.malformed"),
        ("fieldward.ingest.plant-a.bogus", b"[]", {"Fieldward-Batch-Id": "b1"}, "subject.unknown_kind"),
        ("fieldward.ingest.plant-a.devices", b"[]", {}, "header.bad_batch_id"),
        (
            "fieldward.ingest.plant-a.devices",
            b"{not json",
            {**ok_headers, "Fieldward-Batch-Id": "b2"},
            "body.bad_json",
        ),
        (
            "fieldward.ingest.plant-a.devices",
            b'{"a": 1}',
            {**ok_headers, "Fieldward-Batch-Id": "b3"},
            "body.not_a_list",
        ),
        (
            "fieldward.ingest.plant-a.devices",
            b"\x28\xb5\x2f\xfd garbage",
            {"Fieldward-Batch-Id": "b4", "Fieldward-Encoding": "json+zstd", "Fieldward-Length": "100"},
            "body.bad_zstd",
        ),
        (
            "fieldward.ingest.plant-a.devices",
            _zstd(good),
            {"Fieldward-Batch-Id": "b5", "Fieldward-Encoding": "json+zstd", "Fieldward-Length": "9999999999"},
            "body.bad_length",
        ),
        (
            "fieldward.ingest.plant-a.flows",
            b"PAR1 not really PAR1",
            {"Fieldward-Batch-Id": "b6"},
            "columnar.unreadable",
        ),
        (
            "fieldward.ingest.plant-a.evidence",
            b"not a pcap at all, no",
            {"Fieldward-Batch-Id": "b7"},
            "evidence.not_pcap",
        ),
        (
            "fieldward.ingest.stranger.devices",
            good,
            {**ok_headers, "Fieldward-Batch-Id": "b8"},
            "sensor.unknown",
        ),
    ]
    # plant-a is registered in the console; "stranger" is not (and workers do not create sensors)
    with sqlite_db.session() as session:
        session.add(Sensor(name="plant-a"))
    _publish_raw(
        nats_server.url,
        [(subject, payload, headers) for subject, payload, headers, _ in bad]
        + [("fieldward.ingest.plant-a.devices", good, ok_headers)],
    )
    stats = _work(nats_server.url, sqlite_db, data_dir=tmp_path / "console", create_sensors=False)
    expected: dict[str, int] = {}
    for *_, code in bad:
        expected[code] = expected.get(code, 0) + 1
    assert dict(stats.dead_lettered) == expected
    assert stats.applied == 1
    assert _count(sqlite_db, Device) == 1
    with sqlite_db.session() as session:
        letters = session.scalars(select(TransportDeadLetter).order_by(TransportDeadLetter.stream_seq)).all()
        assert [(row.subject, row.payload) for row in letters] == [(s, p) for s, p, _, _ in bad]
        assert [row.reason.split(":")[0] for row in letters] == [code for *_, code in bad]
    assert _consumer_backlog(nats_server.url) == (0, 0)  # terminated, not left to redeliver


def test_nats_down_the_sensor_spools_then_delivers(
    nats_factory: Any, sqlite_db: Database, tmp_path: Path
) -> None:
    server: NatsServer = nats_factory()
    folder = write_folder(tmp_path / "folder", 1, 40, 60, 10)
    sink = NatsSink(JetStreamSensorClient(server.url, tmp_path / "spool", sensor="plant-b", batch_records=25))
    try:
        down = sink.publish(folder)  # no server: kept in the spool, no exception
        assert not down.delivered
        assert down.pending == len(sink.client.spool.pending()) > 0
        assert "cannot reach NATS" in down.detail
        server.start()
        # the stream does not exist until a worker created it: still pending, told why
        waiting = sink.publish(folder)
        assert not waiting.delivered
        assert "ingest worker" in waiting.detail
        _work(server.url, sqlite_db, max_idle=0.5)  # creates the stream (nothing to apply yet)
        later = sink.publish(write_folder(tmp_path / "later", 1, 5, 0, 0))
        assert later.delivered, later.detail
        assert later.pending == 0
    finally:
        sink.close()
    _work(server.url, sqlite_db)
    assert _count(sqlite_db, Device) == 40
    assert _count(sqlite_db, Communication) == 60
    assert _count(sqlite_db, Alert) == 10


def test_database_down_the_worker_keeps_the_batch(
    nats_server: NatsServer, sqlite_db: Database, tmp_path: Path
) -> None:
    folder = write_folder(tmp_path / "folder", 2, 10, 0, 0)
    with JetStreamSensorClient(nats_server.url, tmp_path / "spool", sensor="plant-c") as client:
        _work(nats_server.url, sqlite_db, max_idle=0.2)  # the stream
        assert client.push_folder(folder, retry_for=5).complete
    closed = Database("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")
    stats = _work(nats_server.url, closed, max_idle=30.0, stop_after=3.0)
    closed.dispose()
    assert stats.applied == 0
    assert stats.retried >= 1
    assert not stats.dead_lettered
    assert sum(_consumer_backlog(nats_server.url)) == 1
    stats = _work(nats_server.url, sqlite_db)
    assert stats.applied == 1
    assert stats.redelivered == 1
    assert _count(sqlite_db, Device) == 10


AUTH_CONFIG = """
authorization {{
  users = [
    {{ user: "plant-a", password: "{secret}",
       permissions: {{ publish: ["fieldward.ingest.plant-a.>"], subscribe: ["_INBOX.>"] }} }}
    {{ user: "ingest", password: "{worker_secret}",
       permissions: {{ publish: ["$JS.API.>", "$JS.ACK.>", "_INBOX.>"], subscribe: ["_INBOX.>"] }} }}
  ]
}}
"""


def test_authorization_sensor_identity_and_no_secret_in_output(
    nats_factory: Any, sqlite_db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret, worker_secret = "s3cret-Plant-A-7f1c", "w0rker-9b2e"
    server: NatsServer = nats_factory()
    server.config = AUTH_CONFIG.format(secret=secret, worker_secret=worker_secret)
    server.start()
    sensor_secret = tmp_path / "plant-a.secret"
    sensor_secret.write_text(secret + "\n")
    sensor_secret.chmod(0o600)
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    worker_creds = tmp_path / "worker.secret"
    worker_creds.write_text(worker_secret)
    worker_creds.chmod(0o600)
    url = f"nats://plant-a@127.0.0.1:{server.port}"
    worker_url = f"nats://ingest@127.0.0.1:{server.port}"
    folder = write_folder(tmp_path / "folder", 3, 12, 0, 3)
    caplog.set_level(logging.DEBUG)

    worker = IngestWorker(
        NatsSettings.from_url(worker_url, worker_creds),
        sqlite_db,
        settings=WorkerSettings(create_sensors=True),
    )
    assert asyncio.run(worker.run(max_idle=0.5)).applied == 0  # authenticated; the stream exists

    with pytest.raises(TransportError, match="password in the URL"):
        NatsSettings.from_url(f"nats://plant-a:{secret}@127.0.0.1:{server.port}")
    with (
        JetStreamSensorClient(url, tmp_path / "spool-wrong", secret_file=wrong) as client,
        pytest.raises(AuthenticationError, match="refused this sensor"),
    ):
        client.push_folder(folder)
    # plant-a's credentials, but claiming to be plant-b: the server's permissions refuse it
    with (
        JetStreamSensorClient(
            url, tmp_path / "spool-b", sensor="plant-b", secret_file=sensor_secret, publish_timeout=2
        ) as client,
        pytest.raises(AuthenticationError),
    ):
        client.push_folder(folder)
    result = CliRunner().invoke(
        app,
        [
            "push",
            str(folder),
            "--to",
            url,
            "--token-file",
            str(sensor_secret),
            "--spool",
            str(tmp_path / "s"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "published to JetStream" in result.output
    asyncio.run(
        IngestWorker(
            NatsSettings.from_url(worker_url, worker_creds),
            sqlite_db,
            settings=WorkerSettings(create_sensors=True),
        ).run(max_idle=1.0)
    )
    with sqlite_db.session() as session:
        names = session.scalars(select(Sensor.name)).all()
    assert names == ["plant-a"]
    assert _count(sqlite_db, Device) == 12
    assert _count(sqlite_db, Alert) == 3
    everything = result.output + caplog.text
    assert secret not in everything
    assert worker_secret not in everything
    assert secret not in repr(NatsSettings.from_url(url, sensor_secret))


def test_cli_push_exit_code_while_nats_is_down(demo_folder: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("x\n")
    token.chmod(0o600)
    from .conftest import free_port

    result = CliRunner().invoke(
        app,
        [
            "push",
            str(demo_folder),
            "--to",
            f"nats://plant-a@127.0.0.1:{free_port()}",
            "--token-file",
            str(token),
            "--spool",
            str(tmp_path / "spool"),
            "--retry-for",
            "0",
        ],
    )
    assert result.exit_code == 3, result.output
    assert "pending in the spool" in result.output
    assert len(list((tmp_path / "spool" / "pending").glob("*.fwb"))) > 0


def test_an_unexpected_error_is_retried_then_dead_lettered_never_a_crash(
    nats_server: NatsServer, sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = orjson.dumps([{"id": "mac:02:00:00:00:00:09"}])
    _publish_raw(
        nats_server.url,
        [
            (
                "fieldward.ingest.plant-d.devices",
                good,
                {"Fieldward-Batch-Id": "b-bug", "Fieldward-Encoding": "json"},
            )
        ],
    )
    calls: list[str] = []

    def broken(self: IngestWorker, batch: Any) -> str:
        calls.append(batch.batch_id)
        raise RuntimeError("a bug")

    monkeypatch.setattr(IngestWorker, "_apply", broken)
    stats = _work(nats_server.url, sqlite_db, retry_delay=0.1, max_idle=2.0)
    assert calls == ["b-bug"] * 5
    assert stats.retried == 4
    assert dict(stats.dead_lettered) == {"worker.error": 1}
    with sqlite_db.session() as session:
        letter = session.scalars(select(TransportDeadLetter)).one()
    assert (letter.reason, letter.deliveries, letter.payload) == ("worker.error: RuntimeError", 5, good)
    assert _consumer_backlog(nats_server.url) == (0, 0)
