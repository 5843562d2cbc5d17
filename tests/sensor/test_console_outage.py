"""Console outage and recovery, end to end: the live sensor (``sensor run --console https://...``)
captures a replayed corpus capture while its console is down, so every finished segment goes to its
disk spool; then the real console (``fieldward serve`` over HTTPS, inside the sensor's namespace) is
started, the sensor delivers the spooled segments with the next one, and the devices the console
stores equal the offline analysis of the same capture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fieldward.console.security import SENSOR_PREFIX, new_token
from fieldward.pipeline import analyze
from fieldward.store.console_models import IngestBatch
from fieldward.store.database import Database
from fieldward.store.models import Device, Sensor
from tests.sensor.lab import LiveSensor, VethLab
from tests.transport.pki import certificates

PORT = 18443
SENSOR = "plant-outage"


def _program() -> list[str]:
    exe = Path(sys.executable).with_name("fieldward")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fieldward.cli"]


class ConsoleProcess:
    """``fieldward serve`` over HTTPS inside the lab's sensor namespace (started on demand)."""

    def __init__(self, lab: VethLab, tmp: Path, db_url: str) -> None:
        self.lab = lab
        self.tmp = tmp
        self.db_url = db_url
        self.ca, self.cert, self.key = certificates(tmp / "pki")
        self.log = tmp / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            "ip",
            "netns",
            "exec",
            self.lab.ns_sensor,
            *_program(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(PORT),
            "--db",
            self.db_url,
            "--data-dir",
            str(self.tmp / "console-data"),
            "--cert",
            str(self.cert),
            "--key",
            str(self.key),
            "--no-ui",
            "--no-trust",
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text()[-3000:] if self.log.is_file() else ""


@pytest.fixture
def console_db(tmp_path: Path) -> tuple[str, Path]:
    """A migrated console database with the sensor registered; ``(url, token file)``."""
    url = f"sqlite:///{tmp_path / 'console.db'}"
    database = Database(url)
    database.upgrade()
    secret, digest = new_token(SENSOR_PREFIX)
    with database.session() as session:
        session.add(Sensor(name=SENSOR, credential_hash=digest))
    database.dispose()
    token = tmp_path / "sensor.token"
    token.write_text(secret + "\n")
    token.chmod(0o600)
    return url, token


def _pending(spool: Path) -> int:
    return len(list((spool / "pending").glob("*.fwb"))) if (spool / "pending").is_dir() else 0


def test_the_sensor_spools_while_the_console_is_down_and_delivers_when_it_starts(
    lab: VethLab, corpus: Path, tmp_path: Path, console_db: tuple[str, Path]
) -> None:
    db_url, token = console_db
    capture = corpus / "modbus" / "fuzz-72.pcap"
    analyze([capture], tmp_path / "offline")
    offline = json.loads((tmp_path / "offline" / "devices.json").read_text())["devices"]
    packets = int(json.loads((tmp_path / "offline" / "summary.json").read_text())["packets"])
    console = ConsoleProcess(lab, tmp_path, db_url)
    spool = tmp_path / "spool"
    sensor = LiveSensor(
        lab,
        tmp_path / "sensor",
        "--segment-seconds",
        "2",
        "--console",
        f"https://127.0.0.1:{PORT}",
        "--token-file",
        str(token),
        "--ca-file",
        str(console.ca),
        "--spool",
        str(spool),
    )
    try:
        sensor.wait_running()
        lab.replay([capture], pps=200)
        sensor.wait_packets(packets)
        # the console is down: the segment holding the packets is finished, spooled, not delivered
        down = sensor.wait(
            lambda s: s.get("publish_pending_batches", 0) > 0 and s.get("segments_finished", 0) >= 2,
            timeout=60,
            what="spooled batches while the console is down",
        )
        assert down["segments_published"] == 0, down
        assert "publish" in down.get("errors", {}), down
        assert _pending(spool) > 0
        with Database(db_url).session() as session:
            assert session.scalar(select(func.count()).select_from(Device)) == 0

        console.start()
        up = sensor.wait(
            lambda s: s.get("publish_pending_batches", 1) == 0 and s.get("segments_published", 0) > 0,
            timeout=120,
            what="delivery of the spooled segments after the console started",
        )
        assert "publish" not in up.get("errors", {}), up
        assert sensor.stop() == 0, sensor.output()
    finally:
        sensor.kill()
        console.stop()
    assert _pending(spool) == 0
    assert sensor.status().get("publish_pending_batches", 0) == 0
    assert console.proc is not None
    assert console.proc.returncode in (0, -15), console.output()
    database = Database(db_url)
    try:
        with database.session() as session:
            keys = set(session.scalars(select(Device.device_key)))
            batches = session.scalar(select(func.count()).select_from(IngestBatch))
            sensors = session.scalars(select(Sensor.name)).all()
    finally:
        database.dispose()
    assert sensors == [SENSOR]
    assert batches is not None
    assert batches > 0
    assert len(keys) == len(offline) > 0
    assert keys == {device["id"] for device in offline}
    assert token.read_text().strip() not in sensor.log.read_text() + console.output()
