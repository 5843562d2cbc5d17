"""Ingest rate of the JetStream transport (1 and 2 workers) against the direct HTTPS push, on PostgreSQL.

What runs, all on this machine:

- three sensors, each an analysis folder of ``--devices`` devices, ``--communications``
  communications and ``--alerts`` alerts (distinct records), pushed in batches of ``--batch`` records
  by the real sensor clients (disk spool, content-derived batch ids), concurrently, one thread each;
- **HTTPS**: the real console (``uvicorn fieldward.console.app:create_app --workers W``) and
  :class:`SensorClient`; a batch counts when the console answered (it is committed then);
- **JetStream**: ``nats-server -js`` (file storage) and ``W`` ``fieldward ingest-worker`` processes on
  one durable consumer; :class:`JetStreamSensorClient` publishes; the time runs until every batch is
  committed by a worker (``ingest_batches`` holds all of them). The sensors' own publish time (until
  JetStream acknowledged durable storage) is printed too: it is how fast a sensor offloads.

Each measurement gets a fresh PostgreSQL database (created from the ``--pg`` server, dropped after).
Records/s = records of the three folders / wall-clock seconds. The machine is shared (2 cores, other
jobs running): compare the ratios printed in one run, not absolute figures across runs.

    .venv/bin/python benchmarks/bench_jetstream.py                      # defaults
    .venv/bin/python benchmarks/bench_jetstream.py --devices 500 --communications 5000 --alerts 500
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.transport.conftest import write_folder  # noqa: E402

from fieldward.console.jetstream import JetStreamSensorClient, ensure_stream  # noqa: E402
from fieldward.console.security import SENSOR_PREFIX, new_token  # noqa: E402
from fieldward.console.sensor_client import PushReport, SensorClient  # noqa: E402
from fieldward.store.console_models import IngestBatch  # noqa: E402
from fieldward.store.database import Database  # noqa: E402
from fieldward.store.models import Sensor  # noqa: E402

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
SENSORS = 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} cores)"


class Scratch:
    """A fresh, migrated PostgreSQL database, dropped on exit."""

    def __init__(self, server: str) -> None:
        self.server = server.rstrip("/")
        self.name = f"fieldward_js_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.url = f"{self.server}/{self.name}"

    def __enter__(self) -> Database:
        with psycopg.connect(self._admin(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        self.db = Database(self.url)
        self.db.upgrade()
        return self.db

    def _admin(self) -> str:
        return self.server.replace("postgresql+psycopg://", "postgresql://") + "/test"

    def __exit__(self, *exc: object) -> None:
        self.db.dispose()
        with psycopg.connect(self._admin(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _parallel(jobs: list[Callable[[], PushReport]]) -> list[PushReport]:
    results: list[Any] = [None] * len(jobs)

    def run(index: int) -> None:
        results[index] = jobs[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if any(r is None for r in results):
        raise SystemExit("a sensor failed (see the traceback above)")
    return results


def measure_https(args: argparse.Namespace, folders: list[Path], workers: int, tmp: Path) -> float:
    with Scratch(args.pg) as db:
        tokens = []
        with db.session() as session:
            for n in range(SENSORS):
                secret, digest = new_token(SENSOR_PREFIX)
                session.add(Sensor(name=f"https-{n}", credential_hash=digest))
                tokens.append(secret)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        home = tmp / f"https-home-{workers}"
        env = {
            **os.environ,
            "FIELDWARD_DATABASE_URL": db.url.render_as_string(False),
            "FIELDWARD_HOME": str(home),
        }
        command = [
            sys.executable, "-m", "uvicorn", "fieldward.console.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        server = subprocess.Popen(command, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/api/v1/openapi.json", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            clients = [
                SensorClient(
                    base,
                    tokens[n],
                    tmp / f"https-spool-{workers}-{n}",
                    batch_records=args.batch,
                    columnar=False,
                )
                for n in range(SENSORS)
            ]
            started = time.perf_counter()
            reports = _parallel(
                [partial(c.push_folder, f, retry_for=120) for c, f in zip(clients, folders, strict=True)]
            )
            elapsed = time.perf_counter() - started
            for client in clients:
                client.close()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        records = sum(sum(r.delivered.values()) for r in reports)
        assert all(r.complete for r in reports), [r.to_json() for r in reports]
        rate = records / elapsed
        print(
            f"HTTPS push      uvicorn x{workers}: {records:,} records in {elapsed:6.2f} s "
            f"= {rate:9,.0f} records/s"
        )
        return rate


async def _create_stream(url: str) -> None:
    connection = await nats.connect(url)
    await ensure_stream(connection.jetstream(timeout=30))
    await connection.close()


def measure_jetstream(args: argparse.Namespace, folders: list[Path], workers: int, tmp: Path) -> float:
    root = tmp / f"nats-{workers}"
    root.mkdir()
    port = _free_port()
    url = f"nats://127.0.0.1:{port}"
    server = subprocess.Popen(
        [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(root / "js")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with Scratch(args.pg) as db:
            db_url = db.url.render_as_string(False)
            with db.session() as session:
                for n in range(SENSORS):
                    session.add(Sensor(name=f"js-{n}"))
            command = [
                sys.executable, "-m", "fieldward.cli", "ingest-worker", "--nats", url, "--db", db_url,
                "--fetch", str(args.fetch), "--concurrency", str(args.concurrency), "--ack-wait", "60",
            ]  # fmt: skip
            asyncio.run(_create_stream(url))
            logs = [tmp / f"worker-{workers}-{i}.log" for i in range(workers)]
            for log in logs:
                with log.open("wb") as out:
                    processes.append(subprocess.Popen([*command, "-v"], stdout=out, stderr=subprocess.STDOUT))
            deadline = time.monotonic() + args.worker_start
            while time.monotonic() < deadline:  # the workers import, migrate (no-op), bind the consumer
                if all("consuming" in log.read_text() for log in logs):
                    break
                time.sleep(0.2)
            else:
                raise SystemExit(f"the workers did not start within {args.worker_start} s")
            clients = [
                JetStreamSensorClient(
                    url,
                    tmp / f"js-spool-{workers}-{n}",
                    sensor=f"js-{n}",
                    batch_records=args.batch,
                    columnar=False,
                )
                for n in range(SENSORS)
            ]
            started = time.perf_counter()
            reports = _parallel(
                [partial(c.push_folder, f, retry_for=120) for c, f in zip(clients, folders, strict=True)]
            )
            published = time.perf_counter() - started
            for client in clients:
                client.close()
            batches = sum(r.batches_spooled for r in reports)
            while True:
                with db.session() as session:
                    done = session.scalar(select(func.count()).select_from(IngestBatch)) or 0
                if done >= batches:
                    break
                if time.perf_counter() - started > 1800:
                    raise SystemExit(f"only {done} of {batches} batches ingested after 30 min")
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
        server.terminate()
        server.wait(timeout=30)
    for log in logs:  # the workers' counters (retries: deadlocks between concurrent batches)
        finals = [line for line in log.read_text().splitlines() if line.startswith("ingest worker:")]
        print(f"    {finals[-1] if finals else log.name + ': no final counters'}")
    records = sum(sum(r.delivered.values()) for r in reports)
    rate = records / elapsed
    print(
        f"JetStream       workers x{workers}: {records:,} records in {elapsed:6.2f} s "
        f"= {rate:9,.0f} records/s"
        f"  (sensors done publishing after {published:.2f} s = {records / published:,.0f} records/s)"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432", help="PostgreSQL server"
    )
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--communications", type=int, default=20000)
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=2000, help="Records per batch")
    parser.add_argument("--fetch", type=int, default=4, help="Messages per pull request of a worker")
    parser.add_argument("--concurrency", type=int, default=4, help="Batches a worker applies at once")
    parser.add_argument("--worker-start", type=float, default=120.0, help="Most seconds for workers to start")
    parser.add_argument("--workers", default="1,2", help="Worker counts to measure")
    args = parser.parse_args()
    if not Path(NATS_SERVER).is_file():
        raise SystemExit(f"nats-server not found at {NATS_SERVER}")
    counts = [int(w) for w in args.workers.split(",")]
    print(f"machine shared with other jobs; {_loadavg()}")
    per_sensor = args.devices + args.communications + args.alerts
    print(
        f"{SENSORS} sensors x {per_sensor:,} records, batches of {args.batch}; "
        f"PostgreSQL {args.pg.split('@')[-1]}"
    )
    with tempfile.TemporaryDirectory(prefix="fw-js-bench-") as scratch:
        tmp = Path(scratch)
        folders = [
            write_folder(tmp / f"sensor-{n}", n, args.devices, args.communications, args.alerts)
            for n in range(SENSORS)
        ]
        rates: dict[str, float] = {}
        for workers in counts:
            rates[f"https-{workers}"] = measure_https(args, folders, workers, tmp)
            rates[f"js-{workers}"] = measure_jetstream(args, folders, workers, tmp)
        print(f"after the runs: {_loadavg()}")
        for workers in counts:
            print(
                f"ratio JetStream/HTTPS with {workers} worker(s): "
                f"{rates[f'js-{workers}'] / rates[f'https-{workers}']:.2f}"
            )
        if len(counts) > 1:
            low, high = counts[0], counts[-1]
            print(
                f"ratio JetStream {high} workers / {low} worker(s): "
                f"{rates[f'js-{high}'] / rates[f'js-{low}']:.2f}"
            )
            print(
                f"ratio HTTPS {high} workers / {low} worker(s): "
                f"{rates[f'https-{high}'] / rates[f'https-{low}']:.2f}"
            )


if __name__ == "__main__":
    main()
