"""Ingest rate of the JetStream transport (1 and 2 workers) against the direct HTTPS push, on PostgreSQL.

What runs, all on this machine:

- three sensors, each an analysis folder of ``--devices`` devices, ``--communications``
  communications and ``--alerts`` alerts (distinct records), pushed in batches of ``--batch`` records
  by the real sensor clients (disk spool, content-derived batch ids), concurrently, one thread each;
- **HTTPS**: the real console (``uvicorn fieldward.console.app:create_app --workers W``) and
  :class:`SensorClient`; a batch counts when the console answered (it is committed then);
- **JetStream**: ``nats-server -js`` (file storage) and ``W`` ``fieldward ingest-worker`` processes on
  one durable consumer. The two halves are timed apart so the sensors do not compete with the
  workers for the CPU: the workers start, bind the consumer and are then frozen (SIGSTOP); the
  sensors publish everything (the *publish* rate: until JetStream acknowledged durable storage);
  then every worker is resumed at the same instant (SIGCONT) and the *ingest* rate runs until every
  batch is committed (``ingest_batches`` holds all of them).

Fairness on a small shared machine (``--pin``, on by default when there are 2+ usable cores): worker
``i`` (and uvicorn with ``W`` processes) is pinned to its own core(s) with ``sched_setaffinity``
(``taskset -c``), so one worker gets one core and two workers two cores. PostgreSQL and nats-server are
not pinned (they serve every worker); the run prints the cores they may use. Each configuration is
measured ``--rounds`` times, interleaved (1 worker, 2 workers, 1, 2, ...), and the median is reported
with the spread. Each measurement gets a fresh PostgreSQL database (created from the ``--pg``
server, dropped after). Records/s = records of the three folders / wall-clock seconds. The machine
is shared: the load average (``uptime``) is printed before and after; compare the ratios printed in
one run, not absolute figures across runs.

    .venv/bin/python benchmarks/bench_jetstream.py                      # defaults: 3 rounds
    .venv/bin/python benchmarks/bench_jetstream.py --rounds 5 --no-https
    .venv/bin/python benchmarks/bench_jetstream.py --devices 500 --communications 5000 --alerts 500
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
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

from bench_console import find_processes, proc_cpu_seconds  # noqa: E402
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


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return _loadavg()


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _pinned(cores: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` binding the child to ``cores`` (what ``taskset -c`` does); None: not pinned."""
    if not cores:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cores)

    return pin


def _affinity(pid: int) -> str:
    try:
        cores = sorted(os.sched_getaffinity(pid))
    except OSError:
        return "?"
    return ",".join(map(str, cores))


def _postgres_affinity(server: str) -> str:
    """The cores a PostgreSQL backend may run on (its postmaster's, inherited by every backend)."""
    admin = server.rstrip("/").replace("postgresql+psycopg://", "postgresql://") + "/test"
    try:
        with psycopg.connect(admin) as connection:
            row = connection.execute("SELECT pg_backend_pid()").fetchone()
    except psycopg.Error as exc:
        return f"? ({type(exc).__name__})"
    return _affinity(int(row[0])) if row else "?"


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds of each PostgreSQL process on the host (other users' queries included)."""
    return {
        pid: proc_cpu_seconds(pid)
        for pid in find_processes(lambda fields: fields[0] in (b"postgres", b"postmaster"))
    }


def _postgres_cpu_since(before: dict[int, float]) -> float:
    """CPU seconds PostgreSQL used since ``before``: processes still there and new ones (a backend
    that exited meanwhile is not counted, so this is a lower bound)."""
    return sum(max(0.0, seconds - before.get(pid, 0.0)) for pid, seconds in _postgres_cpu().items())


def _worker_cores(args: argparse.Namespace, index: int) -> set[int] | None:
    cores = _cores()
    return {cores[index % len(cores)]} if args.pin else None


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
        cores = set(_cores()[:workers]) if args.pin else None
        server = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_pinned(cores))
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
        where = f"cores {','.join(map(str, sorted(cores)))}" if cores else "not pinned"
        print(
            f"  HTTPS push      uvicorn x{workers} ({where}): {records:,} records in {elapsed:6.2f} s "
            f"= {rate:9,.0f} records/s"
        )
        return rate


async def _create_stream(url: str) -> None:
    connection = await nats.connect(url)
    await ensure_stream(connection.jetstream(timeout=30))
    await connection.close()


def measure_jetstream(
    args: argparse.Namespace, folders: list[Path], workers: int, tmp: Path, label: str
) -> tuple[float, float, float, float]:
    """``(ingest records/s, publish records/s, records per worker CPU second, PostgreSQL cores busy)``
    of one run with ``workers`` worker processes."""
    root = tmp / f"nats-{label}"
    root.mkdir()
    port = _free_port()
    url = f"nats://127.0.0.1:{port}"
    server = subprocess.Popen(
        [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(root / "js")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        with Scratch(args.pg) as db:
            db_url = db.url.render_as_string(False)
            with db.session() as session:
                for n in range(SENSORS):
                    session.add(Sensor(name=f"js-{n}"))
            command = [
                sys.executable, "-m", "fieldward.cli", "ingest-worker", "--nats", url, "--db", db_url,
                "--fetch", str(args.fetch), "--concurrency", str(args.concurrency), "--ack-wait", "120",
            ]  # fmt: skip
            asyncio.run(_create_stream(url))
            logs = [tmp / f"worker-{label}-{i}.log" for i in range(workers)]
            for index, log in enumerate(logs):
                with log.open("wb") as out:
                    processes.append(
                        subprocess.Popen(
                            [*command, "-v"],
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            preexec_fn=_pinned(_worker_cores(args, index)),
                        )
                    )
            deadline = time.monotonic() + args.worker_start
            while time.monotonic() < deadline:  # the workers import, migrate (no-op), bind the consumer
                if all("consuming" in log.read_text() for log in logs):
                    break
                time.sleep(0.2)
            else:
                raise SystemExit(f"the workers did not start within {args.worker_start} s")
            for process in processes:  # frozen while the sensors publish: no competition for the CPU
                process.send_signal(signal.SIGSTOP)
            time.sleep(1.5)  # their outstanding pull requests (1 s) expire: no batch waits in a frozen one
            clients = [
                JetStreamSensorClient(
                    url,
                    tmp / f"js-spool-{label}-{n}",
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
            cpu_before = [proc_cpu_seconds(process.pid) for process in processes]
            pg_before = _postgres_cpu()
            started = time.perf_counter()
            for process in processes:
                process.send_signal(signal.SIGCONT)
            while True:
                with db.session() as session:
                    done = session.scalar(select(func.count()).select_from(IngestBatch)) or 0
                if done >= batches:
                    break
                if time.perf_counter() - started > 1800:
                    raise SystemExit(f"only {done} of {batches} batches ingested after 30 min")
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            worker_cpu = sum(proc_cpu_seconds(p.pid) - b for p, b in zip(processes, cpu_before, strict=True))
            pg_cpu = _postgres_cpu_since(pg_before)
    finally:
        for process in processes:
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
        server.terminate()
        server.wait(timeout=30)
    records = sum(sum(r.delivered.values()) for r in reports)
    rate = records / elapsed
    where = (
        "cores " + " ".join(str(sorted(_worker_cores(args, i) or [])) for i in range(workers))
        if args.pin
        else "not pinned"
    )
    print(
        f"  JetStream       workers x{workers} ({where}): {records:,} records ingested in {elapsed:6.2f} s "
        f"= {rate:9,.0f} records/s  (published in {published:.2f} s = {records / published:,.0f} records/s)"
    )
    per_cpu = records / max(worker_cpu, 1e-9)
    print(
        f"      CPU while ingesting: workers {worker_cpu:.2f} s ({per_cpu:,.0f} records "
        f"per worker CPU second, {worker_cpu / elapsed:.2f} cores busy), PostgreSQL {pg_cpu:.2f} s "
        f"({pg_cpu / elapsed:.2f} cores, all its clients)"
    )
    for log in logs:  # the workers' counters (retries: deadlocks between concurrent batches)
        finals = [line for line in log.read_text().splitlines() if line.startswith("ingest worker:")]
        print(f"      {finals[-1] if finals else log.name + ': no final counters'}")
    return rate, records / published, per_cpu, pg_cpu / elapsed


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):9,.0f} (min {min(values):,.0f}, max {max(values):,.0f})"


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
    parser.add_argument("--rounds", type=int, default=3, help="Measurements of each configuration (median)")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=len(os.sched_getaffinity(0)) >= 2,
        help="Pin worker i to core i (default: on with 2+ usable cores)",
    )
    parser.add_argument(
        "--https", action=argparse.BooleanOptionalAction, default=True, help="Measure the HTTPS peer too"
    )
    args = parser.parse_args()
    if not Path(NATS_SERVER).is_file():
        raise SystemExit(f"nats-server not found at {NATS_SERVER}")
    counts = [int(w) for w in args.workers.split(",")]
    print(f"machine shared with other jobs; before: {_uptime()}")
    print(
        f"usable cores {','.join(map(str, _cores()))}; PostgreSQL backends may run on cores "
        f"{_postgres_affinity(args.pg)}, nats-server and the sensors (this process) on "
        f"{_affinity(os.getpid())} (not pinned); "
        f"workers {'pinned, one core each' if args.pin else 'not pinned'}"
    )
    per_sensor = args.devices + args.communications + args.alerts
    print(
        f"{SENSORS} sensors x {per_sensor:,} records, batches of {args.batch}; "
        f"PostgreSQL {args.pg.split('@')[-1]}; {args.rounds} round(s)"
    )
    ingest: dict[int, list[float]] = {w: [] for w in counts}
    publish: dict[int, list[float]] = {w: [] for w in counts}
    https: dict[int, list[float]] = {w: [] for w in counts}
    efficiency: dict[int, list[float]] = {w: [] for w in counts}
    postgres: dict[int, list[float]] = {w: [] for w in counts}
    with tempfile.TemporaryDirectory(prefix="fw-js-bench-") as scratch:
        tmp = Path(scratch)
        folders = [
            write_folder(tmp / f"sensor-{n}", n, args.devices, args.communications, args.alerts)
            for n in range(SENSORS)
        ]
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}: {_loadavg()}")
            order = counts if round_ % 2 == 0 else counts[::-1]  # neither count always goes first
            for workers in order:
                label = f"{round_}-{workers}"
                rate, offload, per_cpu, pg_cores = measure_jetstream(args, folders, workers, tmp, label)
                ingest[workers].append(rate)
                publish[workers].append(offload)
                efficiency[workers].append(per_cpu)
                postgres[workers].append(pg_cores)
                if args.https:
                    (tmp / label).mkdir()
                    https[workers].append(measure_https(args, folders, workers, tmp / label))
        print(f"after the runs: {_uptime()}")
    print(f"medians of {args.rounds} round(s), records/s:")
    for workers in counts:
        print(f"  JetStream ingest, {workers} worker(s):   {_spread(ingest[workers])}")
        print(f"  JetStream publish (sensors), {workers}:   {_spread(publish[workers])}")
        print(f"  records per worker CPU second, {workers}: {_spread(efficiency[workers])}")
        print(
            f"  PostgreSQL cores busy while {workers} worker(s) ingest: "
            f"{statistics.median(postgres[workers]):.2f} (all its clients)"
        )
        if args.https:
            print(f"  HTTPS push, uvicorn x{workers}:          {_spread(https[workers])}")
    for workers in counts:
        if args.https:
            print(
                f"ratio JetStream/HTTPS with {workers} worker(s): "
                f"{statistics.median(ingest[workers]) / statistics.median(https[workers]):.2f}"
            )
    if len(counts) > 1:
        low, high = counts[0], counts[-1]
        per_round = [b / a for a, b in zip(ingest[low], ingest[high], strict=True)]
        print(
            f"ratio JetStream {high} workers / {low} worker(s): "
            f"{statistics.median(ingest[high]) / statistics.median(ingest[low]):.2f} of the medians; "
            f"per round {', '.join(f'{r:.2f}' for r in per_round)}"
        )
        if args.https:
            print(
                f"ratio HTTPS {high} workers / {low} worker(s): "
                f"{statistics.median(https[high]) / statistics.median(https[low]):.2f}"
            )


if __name__ == "__main__":
    main()
