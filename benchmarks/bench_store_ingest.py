"""Store ingestion benchmark: records per second upserted into PostgreSQL (or SQLite) from a sensor.

    python benchmarks/bench_store_ingest.py [--url URL] [--devices N] [--alerts N]
                                            [--communications N] [--batch N] [--keep]

Creates a scratch database (``fieldward_bench_<pid>`` on the server of ``--url``, default the local
PostgreSQL ``postgresql+psycopg://postgres@127.0.0.1:5432/test``; a ``sqlite:///file`` URL is used as
is), migrates it to head, then pushes synthetic records shaped like ``devices.json``,
``communications.parquet`` rows and ``alerts.jsonl`` lines through
:func:`fieldward.store.ingest.ingest_records` in batches of ``--batch``, the way a sensor does, and
prints records/s per kind: first as inserts into empty tables, then the same records again (every row
an update of an existing one). The scratch database is dropped unless ``--keep``.

On a shared machine the wall-clock rate measures the other jobs as much as the ingestion, so each line
also gives the CPU time per record of this process (Python: parsing, rows, COPY) and, when the
PostgreSQL server runs on this host, of the server process that executed the statements (read from
``/proc/<backend pid>/stat``): ``1e6 / (python + server µs)`` is the rate of one core given to each.

Target (issue 7): ingestion from sensors sustains >= 20,000 records/s. A benchmark, never a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url

from fieldward.store.database import Database
from fieldward.store.ingest import ingest_records

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TYPES = ["plc", "hmi", "rtu", "io_module", "engineering_workstation", "historian", "ip_camera", "unknown"]
VENDORS = ["Siemens", "Rockwell Automation", "Schneider Electric", "Moxa", "Hirschmann", "Axis", None]
SEVERITIES = ["info", "low", "medium", "high", "critical"]


def _key(index: int) -> str:
    return "mac:02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}".format(*index.to_bytes(5, "big"))


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def devices(count: int, rng: random.Random, minutes: int) -> list[dict[str, Any]]:
    records = []
    for index in range(count):
        kind = rng.choice(TYPES)
        vendor = rng.choice(VENDORS)
        records.append(
            {
                "id": _key(index),
                "mac": _key(index)[4:],
                "ips": [f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"],
                "local": True,
                "router": False,
                "vlans": [0],
                "first_seen": _iso(START),
                "last_seen": _iso(START + dt.timedelta(minutes=minutes, seconds=rng.random())),
                "packets": rng.randrange(1, 1_000_000),
                "vendor": vendor,
                "model": None if vendor is None else f"model-{rng.randrange(50)}",
                "firmware": f"V{rng.randrange(1, 5)}.{rng.randrange(10)}",
                "hostname": f"host-{index}",
                "device_type": kind,
                "purdue_level": rng.choice([0, 1, 2, 3, 4, None]),
                "confidence": {"vendor": 0.9, "device_type": 0.8},
                "protocols": ["modbus", "s7comm"][: rng.randrange(3)],
                "roles": [{"protocol": "modbus", "role": "server", "peers": 2}],
                "services": [{"transport": "tcp", "port": 502, "service": "modbus", "clients": 2}],
                "attributes": {
                    "vendor": {
                        "value": vendor,
                        "confidence": 0.9,
                        "evidence": [{"source": "oui", "ts": None, "flow_id": -1, "detail": "IEEE MA-L"}],
                        "alternatives": [],
                    }
                },
            }
        )
    return records


def communications(count: int, device_count: int, rng: random.Random, minutes: int) -> list[dict[str, Any]]:
    records = []
    for index in range(count):
        src = index % device_count
        dst = (src + 1 + index // device_count) % device_count
        port = rng.choice([502, 102, 44818, 20000, 443])
        records.append(
            {
                "src_device": _key(src),
                "dst_device": _key(dst),
                "transport": "tcp",
                "dst_port": port,
                "service": {502: "modbus", 102: "s7comm", 44818: "enip"}.get(port),
                "flows": rng.randrange(1, 100),
                "answered": 1,
                "src_packets": rng.randrange(1000),
                "dst_packets": rng.randrange(1000),
                "src_bytes": rng.randrange(100_000),
                "dst_bytes": rng.randrange(100_000),
                "first_ts": START,
                "last_ts": START + dt.timedelta(minutes=minutes),
            }
        )
    return records


def alerts(count: int, device_count: int, rng: random.Random, minutes: int) -> list[dict[str, Any]]:
    records = []
    for index in range(count):
        src, dst = rng.randrange(device_count), rng.randrange(device_count)
        records.append(
            {
                "id": f"{index:016x}",
                "engine": "baseline",
                "type": "baseline.new_communication_pair",
                "title": "New communication pair",
                "severity": rng.choice(SEVERITIES),
                "status": "new",
                "first_ts": _iso(START),
                "last_ts": _iso(START + dt.timedelta(minutes=minutes, seconds=index % 60)),
                "count": rng.randrange(1, 1000),
                "src": f"10.0.{src >> 8 & 255}.{src & 255}",
                "dst": f"10.0.{dst >> 8 & 255}.{dst & 255}",
                "src_device": _key(src),
                "dst_device": _key(dst),
                "protocol": "s7comm",
                "explanation": "10.0.0.1 opened s7comm to 10.0.0.2: never seen while learning",
                "description": "Two devices that never communicated started a conversation.",
                "recommendation": "Check that the client is meant to reach the server.",
                "mitre": ["T0886"],
                "evidence": [{"flow_id": index, "ts": _iso(START)}],
                "details": {"services": ["10.0.0.2 s7comm"]},
                "evidence_pcap": f"evidence/{index:016x}.pcap",
            }
        )
    return records


def _chunks(records: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


class ServerClock:
    """CPU seconds used by the database server processes of ``db``'s connections (PostgreSQL on this
    host; ``None`` elsewhere)."""

    def __init__(self, db: Database) -> None:
        self.ticks: dict[int, int] = {}
        """Server process id -> its CPU ticks when last read (kept after the connection ends)."""
        self.local = db.dialect == "postgresql" and Path("/proc/self/stat").exists()
        if self.local:
            event.listen(db.engine, "connect", self._connected)

    def _connected(self, connection: Any, _record: Any) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self.ticks[int(cursor.fetchone()[0])] = 0

    def seconds(self) -> float | None:
        if not self.local or not self.ticks:
            return None
        for pid in self.ticks:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the connection ended: its last reading stands
                continue
            self.ticks[pid] = int(fields[11]) + int(fields[12])  # utime, stime
        if not any(self.ticks.values()):  # the server is not on this host
            return None
        return sum(self.ticks.values()) / os.sysconf("SC_CLK_TCK")


def push(
    db: Database, kind: str, records: list[dict[str, Any]], batch: int, server: ServerClock
) -> tuple[float, float, float | None]:
    """Records per second for ``records`` pushed in batches (one transaction per batch), and CPU µs
    per record of this process and of the server (``None`` when it cannot be read)."""
    started, cpu, server_cpu = time.perf_counter(), time.process_time(), server.seconds()
    written = 0
    for chunk in _chunks(records, batch):
        written += ingest_records(db, "bench-sensor", kind, chunk).written[kind]
    elapsed = time.perf_counter() - started
    python = (time.process_time() - cpu) * 1e6 / len(records)
    server_after = server.seconds()
    on_server = None if server_cpu is None or server_after is None else (server_after - server_cpu) * 1e6
    assert written == len(records), (kind, written, len(records))
    return len(records) / elapsed, python, None if on_server is None else on_server / len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--communications", type=int, default=50_000)
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    url = make_url(args.url)
    scratch = None
    if url.get_backend_name() == "postgresql":
        import psycopg

        scratch = f"fieldward_bench_{os.getpid()}"
        admin: dict[str, Any] = {
            "host": url.host or "127.0.0.1",
            "port": url.port or 5432,
            "user": url.username or "postgres",
        }
        if url.password:
            admin["password"] = url.password
        with psycopg.connect(dbname=url.database or "postgres", autocommit=True, **admin) as conn:
            conn.execute(f'CREATE DATABASE "{scratch}"')
        url = url.set(database=scratch)
    db = Database(url)
    server = ServerClock(db)  # before the first connection, so that its server process is known
    try:
        db.upgrade()
        rng = random.Random(args.seed)
        data = {
            "devices": devices(args.devices, rng, 10),
            "communications": communications(args.communications, args.devices, rng, 10),
            "alerts": alerts(args.alerts, args.devices, rng, 10),
        }
        newer = {
            "devices": devices(args.devices, random.Random(args.seed), 20),
            "communications": communications(args.communications, args.devices, random.Random(args.seed), 20),
            "alerts": alerts(args.alerts, args.devices, random.Random(args.seed), 20),
        }
        # The data set (680,000 records, millions of objects) is the benchmark's, not the ingestion's:
        # out of the cyclic collector's reach, so its full collections do not walk it between batches.
        gc.freeze()
        print(f"{db!r}, batches of {args.batch}; load average {os.getloadavg()[0]:.2f}")
        total_records = 0
        total_seconds = 0.0
        total_cpu = 0.0
        for label, dataset in (("insert", data), ("update", newer)):
            for kind, records in dataset.items():
                rate, python, on_server = push(db, kind, records, args.batch, server)
                total_records += len(records)
                total_seconds += len(records) / rate
                total_cpu += (python + (on_server or 0.0)) * len(records)
                cpu = f"python {python:6.1f} µs" + (f" + server {on_server:6.1f} µs" if on_server else "")
                print(
                    f"  {label:6} {kind:15} {len(records):>8,} records  {rate:>10,.0f} records/s  "
                    f"CPU per record: {cpu}"
                )
        print(
            f"  overall {total_records:,} records in {total_seconds:.1f} s: "
            f"{total_records / total_seconds:,.0f} records/s (target >= 20,000); "
            f"CPU {total_cpu / total_records:.1f} µs per record "
            f"({1e6 * total_records / total_cpu:,.0f} records per CPU second); "
            f"load average {os.getloadavg()[0]:.2f}"
        )
    finally:
        db.dispose()
        if scratch is not None and not args.keep:
            import psycopg

            with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{scratch}"')


if __name__ == "__main__":
    main()
