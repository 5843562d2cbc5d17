"""Fixtures of the JetStream transport tests: a real ``nats-server -js`` per test (own port, own store
directory, optional authorization config), a fresh PostgreSQL database, analysis folders."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fieldward.cli import app
from tests.store.test_models import pg_url

__all__ = ["NatsServer", "pg_url", "write_folder"]

NATS_SERVER = (
    os.environ.get("FIELDWARD_NATS_SERVER") or shutil.which("nats-server") or "/usr/sbin/nats-server"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NatsServer:
    """One ``nats-server`` with JetStream on a free port; ``stop``/``start`` keep its store directory
    (JetStream's file storage survives a restart, as in production)."""

    def __init__(self, root: Path, config: str | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.store = root / "jetstream"
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)]
        if self.config is not None:
            path = self.root / "nats.conf"
            path.write_text(self.config)
            command += ["-c", str(path)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start listening")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _require_nats() -> None:
    if not Path(NATS_SERVER).is_file():
        pytest.skip(f"nats-server is not installed at {NATS_SERVER} (Debian package 'nats-server')")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A running JetStream server without authorization."""
    _require_nats()
    server = NatsServer(tmp_path / "nats")
    server.root.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_factory(tmp_path: Path) -> Iterator[Any]:
    """Build (not start) servers with a given configuration; all stopped at the end."""
    _require_nats()
    servers: list[NatsServer] = []

    def make(config: str | None = None) -> NatsServer:
        server = NatsServer(tmp_path / f"nats-{len(servers)}", config)
        server.root.mkdir()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo analysis folder (``fieldward demo``: every kind, flows, events and evidence)."""
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (out / "sample-plant.pcap").unlink()
    return out


def write_folder(folder: Path, sensor: int, devices: int, communications: int, alerts: int) -> Path:
    """A synthetic analysis folder with exactly these numbers of distinct records (the shapes of
    ``devices.json``, ``communications.parquet`` and ``alerts.jsonl``)."""
    folder.mkdir(parents=True)

    def mac(index: int) -> str:
        return f"mac:02:{sensor:02x}:{(index >> 16) & 255:02x}:{(index >> 8) & 255:02x}:{index & 255:02x}:01"

    (folder / "devices.json").write_text(
        json.dumps(
            [
                {
                    "id": mac(i),
                    "ips": [f"10.{sensor}.{i // 250}.{i % 250 + 1}"],
                    "vendor": "Siemens" if i % 2 else "Schneider Electric",
                    "first_seen": "2026-01-01T00:00:00Z",
                    "last_seen": "2026-01-01T01:00:00Z",
                }
                for i in range(devices)
            ]
        )
    )
    rows = [
        {
            "src_device": mac(i % devices),
            "dst_device": mac((i + 1) % devices),
            "transport": "tcp",
            "dst_port": 502 + i // devices,
            "service": "modbus",
            "flows": 1,
            "src_packets": 10,
            "dst_packets": 9,
            "src_bytes": 700,
            "dst_bytes": 650,
            "first_ts": "2026-01-01T00:00:00Z",
            "last_ts": "2026-01-01T00:01:00Z",
        }
        for i in range(communications)
    ]
    pq.write_table(pa.Table.from_pylist(rows), folder / "communications.parquet")
    with (folder / "alerts.jsonl").open("w") as out:
        for i in range(alerts):
            record = {
                "id": f"s{sensor}-a{i}",
                "engine": "recon",
                "type": "recon.port_scan",
                "title": "Port scan",
                "severity": "high",
                "status": "new",
                "first_ts": "2026-01-01T00:00:00Z",
                "last_ts": "2026-01-01T00:05:00Z",
                "count": 1,
                "src": f"10.{sensor}.0.1",
                "dst": f"10.{sensor}.0.2",
                "src_device": mac(i % devices),
                "dst_device": mac((i + 1) % devices),
            }
            out.write(json.dumps(record) + "\n")
    return folder
