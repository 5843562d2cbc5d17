"""The live sensor publishing to NATS JetStream (``sensor run --console nats://...``): a real
nats-server and a real ingest worker in the sensor's namespace; what the worker stores equals the
offline analysis of the replayed capture."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fieldward.pipeline import analyze
from fieldward.store.database import Database
from fieldward.store.models import Device
from tests.sensor.lab import LiveSensor, VethLab

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
PORT = 14222


def _program() -> list[str]:
    exe = Path(sys.executable).with_name("fieldward")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fieldward.cli"]


@pytest.fixture
def nats_in_lab(lab: VethLab, tmp_path: Path) -> Iterator[str]:
    """nats-server with JetStream inside the sensor's namespace, a sensor user and a worker user."""
    if not Path(NATS_SERVER).is_file():
        pytest.skip(f"nats-server is not installed at {NATS_SERVER} (Debian package 'nats-server')")
    config = tmp_path / "nats.conf"
    config.write_text(
        f'listen: "127.0.0.1:{PORT}"\n'
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        "authorization { users = [\n"
        '  { user: "plant-live", password: "sensor-secret" }\n'
        '  { user: "ingest", password: "worker-secret" }\n'
        "] }\n"
    )
    log = (tmp_path / "nats.log").open("w")
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns_sensor, NATS_SERVER, "-c", str(config)], stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 15
        while "Server is ready" not in (tmp_path / "nats.log").read_text():
            assert server.poll() is None, (tmp_path / "nats.log").read_text()
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.1)
        yield f"127.0.0.1:{PORT}"
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def _worker(lab: VethLab, address: str, db_url: str, secret: Path, max_idle: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            lab.ns_sensor,
            *_program(),
            "ingest-worker",
            "--nats",
            f"nats://ingest@{address}",
            "--creds",
            str(secret),
            "--db",
            db_url,
            "--create-sensors",
            "--max-idle",
            str(max_idle),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_live_sensor_publishes_through_jetstream(
    lab: VethLab, nats_in_lab: str, corpus: Path, tmp_path: Path
) -> None:
    capture = corpus / "modbus" / "fuzz-72.pcap"
    analyze([capture], tmp_path / "offline")
    offline = json.loads((tmp_path / "offline" / "devices.json").read_text())["devices"]
    sensor_secret = tmp_path / "sensor.secret"
    sensor_secret.write_text("sensor-secret\n")
    worker_secret = tmp_path / "worker.secret"
    worker_secret.write_text("worker-secret\n")
    for secret in (sensor_secret, worker_secret):
        secret.chmod(0o600)
    db_url = f"sqlite:///{tmp_path / 'console.db'}"
    Database(db_url).dispose()  # created and migrated before the worker starts

    first = _worker(lab, nats_in_lab, db_url, worker_secret, max_idle=3.0)  # creates the stream
    assert first.wait(timeout=120) == 0, first.stdout.read() if first.stdout else ""
    sensor = LiveSensor(
        lab,
        tmp_path / "sensor",
        "--segment-seconds",
        "3600",
        "--console",
        f"nats://plant-live@{nats_in_lab}",
        "--token-file",
        str(sensor_secret),
    )
    try:
        sensor.wait_running()
        lab.replay([capture], pps=200)
        sensor.wait_packets(int(json.loads((tmp_path / "offline" / "summary.json").read_text())["packets"]))
        assert sensor.stop() == 0
    finally:
        sensor.kill()
    status = sensor.status()
    assert status.get("publish_pending_batches", 0) == 0, status
    worker = _worker(lab, nats_in_lab, db_url, worker_secret, max_idle=3.0)
    output, _ = worker.communicate(timeout=180)
    assert worker.returncode == 0, output
    assert "sensor-secret" not in output
    assert "worker-secret" not in output
    database = Database(db_url)
    try:
        with database.session() as session:
            stored = session.scalar(select(func.count()).select_from(Device))
    finally:
        database.dispose()
    assert stored == len(offline) > 0
