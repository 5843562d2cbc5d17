"""The sensor client against a live console (uvicorn on a free port, on a real SQLite database).

The key test pushes the demo analysis folder in small batches, stops the console mid-stream, keeps
pushing (batches spool), restarts the console on the same database, drains, and checks in the store
that every record arrived exactly once. Then: an answer lost after the console applied a batch,
rejected and oversized batches, the spool cap, damaged and half-written spool files, TLS with a
private CA, a wrong credential, the retry policy, and that the token never shows.

The console is the real :func:`fieldward.console.app.create_app`; the retry policy alone is checked
against scripted answers (``httpx.MockTransport``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import random
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow.parquet as pq
import pytest
import uvicorn
from sqlalchemy import func, select
from typer.testing import CliRunner

from fieldward.cli import app as cli
from fieldward.console.app import create_app
from fieldward.console.models import IngestBatch
from fieldward.console.security import hash_password, hash_token
from fieldward.console.sensor_client import (
    AuthenticationError,
    BatchResult,
    SensorClient,
    SensorError,
    SpoolFullError,
    SpoolLockedError,
    load_token,
    register,
)
from fieldward.console.settings import ConsoleSettings
from fieldward.store.database import Database
from fieldward.store.ingest import KINDS
from fieldward.store.models import (
    Alert,
    ApiToken,
    Communication,
    ConfigFindingRow,
    Device,
    DeviceRisk,
    Sensor,
    User,
    VulnerabilityFinding,
)

ASGIApp = Callable[..., Any]


# --- the console under test ----------------------------------------------------------------------


def make_app(url: str, data_dir: Path, max_body: int = 64 * 1024 * 1024) -> ASGIApp:
    settings = ConsoleSettings(
        database_url=url, data_dir=data_dir, secure_cookies=False, ui=False, max_ingest_bytes=max_body
    )
    return create_app(settings)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Console:
    """A console served by uvicorn in a thread; ``stop()`` closes the port, ``start()`` reopens it."""

    def __init__(
        self, app_factory: Callable[[], ASGIApp], port: int, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.app_factory = app_factory
        self.port = port
        self.tls = tls
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Console:
        config = uvicorn.Config(
            self.app_factory(),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            ssl_certfile=str(self.tls[0]) if self.tls else None,
            ssl_keyfile=str(self.tls[1]) if self.tls else None,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive(), "the console did not start"
            assert time.monotonic() < deadline, "the console did not start in 20 s"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(20)
            assert not self.thread.is_alive(), "the console did not stop"
        self.server = self.thread = None


def admin_token(db: Database) -> str:
    """An administrator's API token, written straight into the store (as the console would)."""
    secret = "fwt_" + secrets.token_urlsafe(32)
    with db.session() as session:
        user = User(
            username=f"admin-{secrets.token_hex(4)}", password_hash=hash_password("x" * 16), role="admin"
        )
        session.add(user)
        session.flush()
        session.add(
            ApiToken(user_id=user.id, name="tests", token_hash=hash_token(secret), scopes=["read", "write"])
        )
    return secret


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo analysis folder (``fieldward demo``), generated once per module."""
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (out / "sample-plant.pcap").unlink()
    return out


class Site:
    """A console on a SQLite database in ``tmp_path`` plus a registered sensor's token."""

    def __init__(
        self, tmp_path: Path, max_body: int = 64 * 1024 * 1024, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.url = f"sqlite:///{tmp_path / 'console.db'}"
        self.data = tmp_path / "data"
        self.data.mkdir()
        self.console = Console(lambda: make_app(self.url, self.data, max_body), free_port(), tls)
        self.console.start()
        self.db = Database(self.url)
        self.admin = admin_token(self.db)
        self.token = ""

    def register(self, name: str = "plant-a", **options: Any) -> str:
        self.token = register(self.console.url, self.admin, name, **options)
        return self.token

    def client(self, spool: Path, **options: Any) -> SensorClient:
        options.setdefault("backoff_initial", 0.05)
        options.setdefault("backoff_max", 0.2)
        return SensorClient(self.console.url, self.token, spool, **options)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    site = Site(tmp_path)
    site.register()
    yield site
    site.console.stop()
    site.db.engine.dispose()


# --- what the folder holds and what the store holds -----------------------------------------------


def folder_counts(folder: Path) -> Counter[str]:
    """Records per kind in the analysis folder, by natural key (what the store must end up with)."""
    devices = orjson.loads((folder / "devices.json").read_bytes())["devices"]
    edges = pq.read_table(folder / "communications.parquet").to_pylist()
    alerts = [
        orjson.loads(line) for line in (folder / "alerts.jsonl").read_bytes().splitlines() if line.strip()
    ]
    vulns = orjson.loads((folder / "vulnerabilities.json").read_bytes())["findings"]
    configs = orjson.loads((folder / "configurations.json").read_bytes())["findings"]
    risks = orjson.loads((folder / "risk.json").read_bytes())["devices"]
    return Counter(
        devices=len({d["id"] for d in devices}),
        communications=len(
            {
                (e["src_device"], e["dst_device"], e["transport"], e["dst_port"], e["service"] or "")
                for e in edges
            }
        ),
        alerts=len({a["id"] for a in alerts}),
        vulnerabilities=len({(v["device_id"], v["vulnerability_id"]) for v in vulns}),
        configurations=len({c["id"] for c in configs}),
        risk=len({r["device_id"] for r in risks}),
    )


def folder_records(folder: Path) -> Counter[str]:
    """Records per kind as lines/items in the files (what the sensor must deliver)."""
    return Counter(
        devices=len(orjson.loads((folder / "devices.json").read_bytes())["devices"]),
        communications=pq.read_metadata(folder / "communications.parquet").num_rows,
        alerts=sum(1 for line in (folder / "alerts.jsonl").read_bytes().splitlines() if line.strip()),
        vulnerabilities=len(orjson.loads((folder / "vulnerabilities.json").read_bytes())["findings"]),
        configurations=len(orjson.loads((folder / "configurations.json").read_bytes())["findings"]),
        risk=len(orjson.loads((folder / "risk.json").read_bytes())["devices"]),
    )


def store_counts(db: Database, sensor: str = "plant-a") -> Counter[str]:
    with db.session() as session:
        sensor_id = session.scalar(select(Sensor.id).where(Sensor.name == sensor))
        assert sensor_id is not None
        device_ids = select(Device.id).where(Device.sensor_id == sensor_id)

        def count(statement: Any) -> int:
            return int(session.scalar(select(func.count()).select_from(statement.subquery())) or 0)

        return Counter(
            devices=count(select(Device.id).where(Device.sensor_id == sensor_id)),
            communications=count(select(Communication.id).where(Communication.sensor_id == sensor_id)),
            alerts=count(select(Alert.id).where(Alert.sensor_id == sensor_id)),
            vulnerabilities=count(
                select(VulnerabilityFinding.id).where(VulnerabilityFinding.device_id.in_(device_ids))
            ),
            configurations=count(
                select(ConfigFindingRow.id).where(ConfigFindingRow.device_id.in_(device_ids))
            ),
            risk=count(select(DeviceRisk.device_id).where(DeviceRisk.device_id.in_(device_ids))),
        )


def applied_batches(db: Database) -> list[tuple[str, str]]:
    with db.session() as session:
        return [
            (row.batch_id, row.kind) for row in session.scalars(select(IngestBatch).order_by(IngestBatch.id))
        ]


# --- the key test: stop the console mid-stream, restart, every record once ------------------------


def test_console_stopped_mid_stream_every_record_arrives_once(site: Site, demo: Path, tmp_path: Path) -> None:
    expected_records = folder_records(demo)
    acknowledged: list[BatchResult] = []
    stopped_after = 6

    def on_batch(result: BatchResult) -> None:
        acknowledged.append(result)
        if len(acknowledged) == stopped_after:
            site.console.stop()  # the next send finds the port closed

    with site.client(tmp_path / "spool", batch_records=40) as client:
        report = client.push_folder(demo, on_batch=on_batch)
        assert report.applied == stopped_after
        assert report.pending > 0, "the rest must be spooled while the console is down"
        assert report.pending == len(client.spool.pending())
        assert report.last_error is not None
        assert "cannot reach the console" in report.last_error
        assert report.spooled == expected_records + Counter(evidence=report.spooled["evidence"])
        assert sum(c for k, c in store_counts(site.db).items()) < sum(folder_counts(demo).values())

        offline = client.drain(retry_for=0.3)  # still down: nothing lost, nothing sent
        assert offline.applied == 0
        assert offline.pending == report.pending

        site.console.start()  # same database, same port
        caught_up = client.drain(retry_for=30)
        assert caught_up.pending == 0
        assert not caught_up.corrupt
        assert client.spool.pending() == []
        again = client.drain(retry_for=1)  # idempotent re-drain: nothing left to send
        assert again.attempts == 0
        assert again.applied == 0

    delivered = report.delivered + caught_up.delivered
    assert {k: delivered[k] for k in KINDS} == dict(expected_records)
    assert store_counts(site.db) == folder_counts(demo)
    batches = applied_batches(site.db)
    assert len(batches) == len({batch_id for batch_id, _ in batches}), "a batch was applied twice"
    assert len(batches) == report.applied + caught_up.applied
    assert all(r.kind == "evidence" for r in caught_up.rejected), "only evidence may be refused (see below)"


def test_evidence_captures_reach_the_console(site: Site, demo: Path, tmp_path: Path) -> None:
    with site.client(tmp_path / "spool", batch_records=1000) as client:
        report = client.push_folder(demo)
    with_pcap = {
        a["id"]
        for a in map(orjson.loads, (demo / "alerts.jsonl").read_bytes().splitlines())
        if a.get("evidence_pcap")
    }
    assert report.spooled["evidence"] == len(with_pcap) > 0
    assert report.rejected == [], "; ".join(f"{r.status} {r.reason}" for r in report.rejected)[:300]
    with site.db.session() as session:
        alerts = {a.alert_key: a.evidence_pcap for a in session.scalars(select(Alert))}
    assert all(not (alerts[key] or "evidence/").startswith("evidence/") for key in with_pcap)


def test_pushing_the_same_folder_twice_is_answered_duplicate(site: Site, demo: Path, tmp_path: Path) -> None:
    with site.client(tmp_path / "spool", batch_records=500) as client:
        first = client.push_folder(demo, retry_for=5)
        second = client.push_folder(demo, retry_for=5)
    assert first.pending == 0
    assert first.applied > 0
    assert first.duplicates == 0
    kinds = list(KINDS)
    assert second.applied == 0
    assert second.duplicates == first.applied
    assert {k: second.delivered[k] for k in kinds} == {k: first.delivered[k] for k in kinds}
    assert sum(first.delivered[k] for k in kinds) == sum(folder_records(demo).values())
    assert store_counts(site.db) == folder_counts(demo)


def test_a_lost_answer_after_the_console_applied_is_resent_and_answered_duplicate(
    tmp_path: Path, demo: Path
) -> None:
    """The console applies a batch and dies before answering (a 500 here): the retry is a duplicate."""
    dropped: list[str] = []

    def wrap(inner: ASGIApp) -> ASGIApp:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http" or dropped or not scope["path"].endswith("/ingest/alerts"):
                await inner(scope, receive, send)
                return

            async def swallow(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.body":
                    dropped.append(scope["path"])

            await inner(scope, receive, swallow)  # applied and committed, but the answer is lost
            raise RuntimeError("the console crashed before answering")

        return app

    site = Site(tmp_path)
    try:
        site.register()
        site.console.stop()
        site.console.app_factory = lambda: wrap(make_app(site.url, site.data))
        site.console.start()
        with site.client(tmp_path / "spool", batch_records=400) as client:
            report = client.push_folder(demo, retry_for=10)
        assert dropped, "the wrapper must have swallowed one answer"
        assert report.pending == 0
        assert report.duplicates == 1
        assert store_counts(site.db) == folder_counts(demo)
        batches = applied_batches(site.db)
        assert len(batches) == len(set(batches))
    finally:
        site.console.stop()


# --- refusals: rejected and oversized batches, wrong credential, TLS ------------------------------


def test_a_refused_batch_moves_to_rejected_with_the_reason_and_the_rest_goes_on(
    site: Site, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    with site.client(spool) as client:
        client.spool.write("devices", "not-a-uuid", 1, b'[{"id":"mac:00:00:00:00:00:01"}]')
        client.spool_records(
            "devices", [orjson.dumps({"id": "mac:00:00:00:00:00:02", "mac": "00:00:00:00:00:02"})]
        )
        report = client.drain(retry_for=5)
    assert report.pending == 0
    assert report.applied == 1
    assert not report.complete
    [rejected] = report.rejected
    assert rejected.status == 422
    assert rejected.batch_id == "not-a-uuid"
    assert rejected.reason
    assert rejected.path.parent == spool / "rejected"
    assert rejected.path.is_file()
    note = json.loads((spool / "rejected" / (rejected.path.name + ".reason.json")).read_text())
    assert note["status"] == 422
    assert note["reason"] == rejected.reason
    assert store_counts(site.db)["devices"] == 1


def test_an_oversized_batch_is_split_and_a_single_oversized_record_is_rejected(tmp_path: Path) -> None:
    site = Site(tmp_path, max_body=8192)
    try:
        site.register()
        records = [
            orjson.dumps({"id": f"mac:00:00:00:00:01:{i:02x}", "hostname": "h" * 100}) for i in range(60)
        ]
        huge = orjson.dumps({"id": "mac:00:00:00:00:02:00", "hostname": "x" * 20_000})
        with site.client(tmp_path / "spool") as client:
            client.spool_records("devices", records)  # one batch of about 8.6 kB: over the limit
            client.spool_records("devices", [huge])
            report = client.drain(retry_for=5)
        assert report.applied >= 2
        assert report.delivered["devices"] == 60
        [rejected] = report.rejected
        assert rejected.status == 413
        assert rejected.records == 1
        assert store_counts(site.db)["devices"] == 60
    finally:
        site.console.stop()


def test_a_wrong_token_is_a_clear_error_and_keeps_the_batches(site: Site, tmp_path: Path, demo: Path) -> None:
    site.token = "fws_" + secrets.token_urlsafe(32)
    with site.client(tmp_path / "spool") as client, pytest.raises(AuthenticationError, match="401") as error:
        client.push_folder(demo)
    assert site.token not in str(error.value)
    with site.client(tmp_path / "spool") as client:
        assert client.spool.pending(), "the batches stay spooled for a corrected credential"
    with pytest.raises(SensorError, match="fws_"):
        SensorClient(site.console.url, "fwt_user-token", tmp_path / "other")
    with pytest.raises(AuthenticationError):
        register(site.console.url, "fwt_" + secrets.token_urlsafe(32), "plant-b")


def test_plain_http_is_refused_for_a_remote_console(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match="plain HTTP"):
        SensorClient("http://console.example:8000", "fws_x", tmp_path / "spool")
    with pytest.raises(SensorError, match="https"):
        SensorClient("ftp://console.example", "fws_x", tmp_path / "spool")


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FieldWard test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def test_tls_with_a_private_ca(tmp_path: Path, demo: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    site = Site(tmp_path, tls=(cert, key))
    try:
        with pytest.raises(SensorError, match="does not trust"):  # verification is on by default
            register(site.console.url, site.admin, "plant-a")
        site.register(ca_file=ca)
        assert site.token.startswith("fws_")
        with site.client(tmp_path / "untrusting") as client, pytest.raises(SensorError, match="ca_file"):
            client.push_folder(demo)
        with site.client(tmp_path / "spool", ca_file=ca, batch_records=1000) as client:
            report = client.push_folder(demo)
        assert report.complete or all(r.kind == "evidence" for r in report.rejected)
        assert store_counts(site.db) == folder_counts(demo)
    finally:
        site.console.stop()


# --- the spool: cap, damage, crashes, lock ---------------------------------------------------------


def test_a_full_spool_refuses_new_batches_with_an_error_and_keeps_the_old(tmp_path: Path, demo: Path) -> None:
    site = Site(tmp_path)
    try:
        site.register()
        site.console.stop()  # unreachable from the start
        spool = tmp_path / "spool"
        with site.client(spool, batch_records=50, max_spool_bytes=30_000) as client:
            with pytest.raises(SpoolFullError, match="full") as error:
                client.push_folder(demo)
            full = error.value
            assert full.report is not None
            assert full.report.batches_spooled > 0
            assert full.used + full.needed > full.cap == 30_000
            kept = client.spool.pending()
            assert len(kept) == full.report.batches_spooled == full.report.pending
            assert client.spool.used_bytes() <= 30_000
            site.console.start()
            drained = client.drain(retry_for=10)
            assert drained.applied == len(kept)
            assert drained.pending == 0
            report = client.push_folder(demo)  # the refused part goes once there is room
        assert report.pending == 0
        assert store_counts(site.db) == folder_counts(demo)
    finally:
        site.console.stop()


def test_damaged_and_half_written_spool_files_are_set_aside_not_sent(site: Site, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    keys = [f"mac:00:00:00:00:03:{i:02x}" for i in range(9)]
    with site.client(spool, batch_records=3) as client:
        client.spool_records("devices", [orjson.dumps({"id": key}) for key in keys])
        _first, second, _third = client.spool.pending()
    second.write_bytes(second.read_bytes()[:-5])  # truncated by a crash or a bad disk
    (spool / "tmp" / "000000000099.devices.x.fwb").write_bytes(b'FWSPOOL1\n{"batch')  # cut before rename
    with site.client(spool) as client:
        assert list((spool / "tmp").iterdir()) == [], "a half-written file is removed on start"
        report = client.drain(retry_for=5)
    assert report.applied == 2
    assert report.pending == 0
    assert [p.name for p in report.corrupt] == [second.name]
    assert (spool / "corrupt" / second.name).is_file()
    assert not report.complete
    with site.db.session() as session:
        stored = set(session.scalars(select(Device.device_key)))
    assert stored == set(keys[:3] + keys[6:])


def test_spool_files_are_compressed_checksummed_and_hold_no_token(
    site: Site, tmp_path: Path, demo: Path
) -> None:
    site.console.stop()
    with site.client(tmp_path / "spool", batch_records=10) as client:
        report = client.push_folder(demo)
        files = client.spool.pending()
        entry = client.spool.read(files[0])
    assert report.pending == len(files) > 0
    assert entry.kind == "devices"
    assert len(orjson.loads(entry.payload)) == entry.records == 10
    raw = files[0].read_bytes()
    assert raw.startswith(b"FWSPOOL1\n")
    assert b'"encoding":"json+zstd"' in raw
    assert len(raw) < len(entry.payload) / 2
    assert all(
        site.token.encode() not in p.read_bytes() for p in (tmp_path / "spool").rglob("*") if p.is_file()
    )


def test_one_process_per_spool(site: Site, tmp_path: Path) -> None:
    with site.client(tmp_path / "spool"), pytest.raises(SpoolLockedError):
        site.client(tmp_path / "spool")


# --- the retry policy --------------------------------------------------------------------------------


def _mock_client(
    tmp_path: Path, answers: list[httpx.Response], sleeps: list[float], *, real_sleep: bool = False
) -> SensorClient:
    def sleep(delay: float) -> None:
        sleeps.append(delay)
        if real_sleep:
            time.sleep(min(delay, 0.05))

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if answer.status_code == 200:
            body = orjson.loads(request.content)
            return httpx.Response(200, json={"batch_id": body["batch_id"], "status": "applied", "written": 1})
        return answer

    return SensorClient(
        "https://console.example",
        "fws_" + "t" * 43,
        tmp_path / "spool",
        transport=httpx.MockTransport(handler),
        sleep=sleep,
        rng=random.Random(7),
        backoff_initial=1.0,
        backoff_max=30.0,
    )


def test_backoff_grows_with_jitter_and_respects_retry_after(tmp_path: Path) -> None:
    answers = [
        httpx.Response(503),
        httpx.Response(502),
        httpx.Response(500),
        httpx.Response(429, headers={"Retry-After": "12"}),
        httpx.Response(408),
        httpx.Response(200),
    ]
    sleeps: list[float] = []
    with _mock_client(tmp_path, answers, sleeps) as client:
        client.spool_records("devices", [b'{"id":"mac:00:00:00:00:00:09"}'])
        report = client.drain(retry_for=1000)
    assert report.applied == 1
    assert report.attempts == 6
    assert answers == []
    assert len(sleeps) == 5
    assert 0 <= sleeps[0] <= 1
    assert 0 <= sleeps[1] <= 2
    assert 0 <= sleeps[2] <= 4
    assert sleeps[3] == 12.0, "Retry-After is a floor"
    assert 0 <= sleeps[4] <= 16
    assert len(set(sleeps)) == 5, "jittered delays differ"


def test_no_retry_on_a_client_error(tmp_path: Path) -> None:
    sleeps: list[float] = []
    with _mock_client(tmp_path, [httpx.Response(400, json={"detail": "bad batch"})], sleeps) as client:
        client.spool_records("alerts", [b'{"id":"a"}'])
        report = client.drain(retry_for=1000)
    assert sleeps == []
    assert report.attempts == 1
    assert [(r.status, r.reason) for r in report.rejected] == [(400, "bad batch")]


def test_drain_gives_up_at_its_deadline_and_keeps_the_batch(tmp_path: Path) -> None:
    sleeps: list[float] = []
    answers = [httpx.Response(503, text="busy") for _ in range(200)]
    with _mock_client(tmp_path, answers, sleeps, real_sleep=True) as client:
        client.spool_records("devices", [b'{"id":"mac:00:00:00:00:00:09"}'])
        started = time.monotonic()
        report = client.drain(retry_for=0.5)
        assert time.monotonic() - started < 5
        assert report.pending == 1
        assert "503" in (report.last_error or "")
        assert len(client.spool.pending()) == 1


# --- the token ------------------------------------------------------------------------------------


def test_the_token_is_never_logged_nor_shown(
    site: Site, tmp_path: Path, demo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stopped: list[bool] = []

    def on_batch(result: BatchResult) -> None:
        if not stopped:
            stopped.append(True)
            site.console.stop()

    with site.client(tmp_path / "spool", batch_records=500) as client:
        report = client.push_folder(demo, on_batch=on_batch)
        assert site.token not in repr(client)
    assert report.pending > 0
    assert caplog.text
    assert site.token not in caplog.text
    assert site.token not in json.dumps(report.to_json())
    token_file = tmp_path / "token"
    token_file.write_text(site.token + "\n")
    token_file.chmod(0o600)
    assert load_token(token_file) == site.token
    token_file.write_text("\n")
    with pytest.raises(SensorError, match="empty"):
        load_token(token_file)


def test_communications_keep_their_nanoseconds(demo: Path) -> None:
    """Timestamps go as written (nine digits), not cut to microseconds by pyarrow's ``to_pylist()``."""
    from fieldward.console.sensor_client import _encoded_records

    path = demo / "communications.parquet"
    table = pq.read_table(path)
    sent = [orjson.loads(record) for record in _encoded_records("communications", path)]
    assert len(sent) == table.num_rows
    nanos = table.column("first_ts").cast("int64").to_pylist()
    for record, value in zip(sent, nanos, strict=True):
        stamp = dt.datetime.fromisoformat(record["first_ts"][:19]).replace(tzinfo=dt.UTC)
        assert int(stamp.timestamp()) * 10**9 + int(record["first_ts"][20:29]) == value
        assert record["first_ts"].endswith("Z")
        assert len(record["first_ts"]) == 30
    assert sent[0]["dst_port"] == table.column("dst_port")[0].as_py()


@pytest.mark.parametrize(
    "sizes", [{"batch_records": 0}, {"batch_bytes": 1023}, {"columnar_rows": 0}], ids=lambda s: next(iter(s))
)
def test_both_transports_refuse_the_same_bad_batch_sizes_before_opening_the_spool(
    tmp_path: Path, sizes: dict[str, int]
) -> None:
    from fieldward.console.jetstream import JetStreamSensorClient

    token = "fws_" + "a" * 40
    with pytest.raises(SensorError, match="must be >= 1, batch_bytes >= 1024"):
        SensorClient("https://console.example", token, tmp_path / "https", **sizes)
    with pytest.raises(SensorError, match="must be >= 1, batch_bytes >= 1024"):
        JetStreamSensorClient("nats://plant-a@127.0.0.1:4222", tmp_path / "nats", **sizes)
    assert not (tmp_path / "https").exists()
    assert not (tmp_path / "nats").exists()
