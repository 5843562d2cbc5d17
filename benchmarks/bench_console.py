"""Console benchmark: the inventory and alert list pages under 50 concurrent clients, and sensor
ingestion through the HTTP endpoint, on PostgreSQL with 50,000 devices and 1,000,000 alerts.

    python benchmarks/bench_console.py [--url URL] [--devices N] [--alerts N] [--clients N]
                                       [--seconds S] [--workers N] [--load wrk|httpx]
                                       [--only pages|ingest] [--database NAME] [--keep]

1. Creates a scratch database (``fieldward_console_bench_<pid>`` on the server of ``--url``, default
   the local ``postgresql+psycopg://postgres@127.0.0.1:5432/test``), migrates it to head (Alembic),
   and fills it on the server side (``INSERT ... SELECT FROM generate_series``: seconds, not the
   minutes a million ``ingest_records`` calls would take) with devices and alerts of plausible shape:
   8 device types, 7 vendors, Purdue levels, risk scores; 12 alert types of 6 engines, 70 % closed,
   90 days of ``last_ts``, sources and destinations that are inventory devices. Then ``VACUUM ANALYZE``.
2. Starts the real console, ``uvicorn fieldward.console.app:create_app --factory --workers 2``, with a
   viewer API token, and runs a closed-loop load (each connection sends its next request as soon as
   the previous answered) of ``--clients`` connections for ``--seconds`` per page, by ``wrk`` when
   installed (Debian package ``wrk``; C, so it leaves the 2 cores to the console) else by async httpx:
   the inventory (``GET /api/v1/devices``: default page, type filter sorted by risk, level filter
   sorted by last seen, vendor with an offset, search, deep-ish offset) and the alert queue (``GET
   /api/v1/alerts``: open, open high+, a type, a device, a time window, text search, sorted by
   severity). p50/p95/p99 latency and requests/s are printed for each page and in total.
3. The peer, in the same run: the *same SQL* (captured from the console's engine while the page is
   served in-process, the second time, so a total the console keeps for 10 s is not counted again)
   replayed with raw psycopg by the same number of concurrent connections: the database's own
   floor. The ratio console/floor is what the API layer (HTTP, auth, ORM, validation, JSON) adds.
4. Ingestion through ``POST /api/v1/ingest/{kind}``: two sensors push devices, communications and
   alerts concurrently in batches of 5,000 (the sensor client's default), records/s; the peer is
   :func:`fieldward.store.ingest.ingest_records` in-process on the same volume.

The load generator runs on the same 2-core machine as uvicorn and PostgreSQL, so every figure is
pessimistic. Targets (issue 7): p95 < 200 ms for both pages, ingestion >= 20,000 records/s.
A benchmark, never a test. The scratch database is dropped unless ``--keep``; ``--database NAME``
measures a kept one again (no fill), ``--only`` one half. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import os
import random
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import orjson
import psycopg
from sqlalchemy import event, select
from sqlalchemy.engine import make_url

from fieldward.console.security import SENSOR_PREFIX, USER_PREFIX, hash_password, new_token
from fieldward.store.database import Database
from fieldward.store.ingest import ingest_records
from fieldward.store.models import ApiToken, Sensor, User

START = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
TYPES = ["plc", "hmi", "rtu", "io_module", "engineering_workstation", "historian", "ip_camera", "unknown"]
VENDORS = ["Siemens", "Rockwell Automation", "Schneider Electric", "Moxa", "Hirschmann", "Axis"]
ALERT_TYPES = [
    ("baseline", "baseline.new_communication_pair", "New communication pair"),
    ("baseline", "baseline.new_device", "New device"),
    ("baseline", "baseline.new_protocol", "New protocol between devices"),
    ("operations", "operations.s7_plc_stop", "S7 PLC stop command"),
    ("operations", "operations.modbus_write", "Modbus write to a controller"),
    ("operations", "operations.program_download", "Program download to a PLC"),
    ("protocol", "protocol.malformed_modbus", "Malformed Modbus request"),
    ("recon", "recon.port_scan", "Port scan"),
    ("recon", "recon.ics_discovery", "ICS discovery scan"),
    ("threats", "threats.brute_force", "Brute-force login attempts"),
    ("threats", "threats.known_malware", "Known IoT malware signature"),
    ("anomaly", "anomaly.volume", "Unusual traffic volume"),
]
SEVERITIES = [("info", 0), ("low", 1), ("medium", 2), ("high", 3), ("critical", 4)]


# --- the data set ---------------------------------------------------------------------------------


def _sql_array(values: list[str]) -> str:
    """A PostgreSQL text array literal of fixed benchmark constants (no user input)."""
    return "ARRAY[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]::text[]"


def fill(url: str, sensor_id: int, devices: int, alerts: int) -> None:
    """Devices and alerts of ``sensor_id``, generated by the server (``generate_series``)."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    ip = "'10.' || (i >> 16 & 255) || '.' || (i >> 8 & 255) || '.' || (i & 255)"
    device_sql = f"""
        INSERT INTO devices (sensor_id, device_key, mac, ips, local, router, vendor, model, firmware,
            hostname, device_type, purdue_level, first_seen, last_seen, packets, protocols, roles,
            services, vlans, confidence, facts, address_history, risk_score, updated)
        SELECT %(sensor)s, 'mac:' || m, m, json_build_array({ip}), true, false,
            CASE WHEN i % 7 = 6 THEN NULL ELSE ({_sql_array(VENDORS)})[1 + i % 7] END,
            'model-' || (i * 13 % 50), 'V' || (1 + i % 4) || '.' || (i % 10), 'host-' || i,
            ({_sql_array(TYPES)})[1 + (i * 7) % 8], CASE WHEN i % 6 = 5 THEN NULL ELSE i % 5 END,
            %(start)s, %(start)s + ((i * 7919) % 864000) * interval '1 second', (i * 7919) % 1000000,
            '["modbus", "s7comm"]'::json, '[]'::json, '[]'::json, '[0]'::json, '{{}}'::json,
            '{{}}'::json, '[]'::json, CASE WHEN i % 3 = 0 THEN NULL ELSE (i * 37) % 101 END, now()
        FROM generate_series(1, %(devices)s) AS i,
            LATERAL (SELECT regexp_replace(lpad(to_hex(i), 12, '0'), '(..)(?!$)', '\\1:', 'g') AS m) AS mac
    """
    engines = _sql_array([a[0] for a in ALERT_TYPES])
    types = _sql_array([a[1] for a in ALERT_TYPES])
    titles = _sql_array([a[2] for a in ALERT_TYPES])
    severities = _sql_array([s[0] for s in SEVERITIES])
    src_ip = ip.replace("i >>", "s >>").replace("(i &", "(s &")
    dst_ip = ip.replace("i >>", "d >>").replace("(i &", "(d &")
    alert_sql = f"""
        INSERT INTO alerts (sensor_id, alert_key, engine, type, title, description, severity,
            severity_rank, status, first_ts, last_ts, count, src, dst, src_device_id, dst_device_id,
            protocol, explanation, recommendation, mitre, evidence, details, evidence_pcap)
        SELECT %(sensor)s, lpad(to_hex(i), 16, '0'), ({engines})[1 + t], ({types})[1 + t],
            ({titles})[1 + t], 'generated', ({severities})[1 + r], r,
            CASE WHEN i % 10 < 7 THEN 'closed' WHEN i % 10 < 9 THEN 'new' ELSE 'acknowledged' END,
            %(last)s - ((i::bigint * 2654435761) % 7776000) * interval '1 second' - interval '1 hour',
            %(last)s - ((i::bigint * 2654435761) % 7776000) * interval '1 second',
            1 + i % 500, {src_ip}, {dst_ip}, %(first_device)s + s - 1, %(first_device)s + d - 1,
            's7comm', 'explained', 'recommended', '["T0886"]'::json, '[]'::json, '{{}}'::json, NULL
        FROM generate_series(1, %(alerts)s) AS i,
            LATERAL (SELECT (i * 31 % 97) % 12 AS t,
                            CASE WHEN i % 100 < 30 THEN 0 WHEN i % 100 < 55 THEN 1 WHEN i % 100 < 80
                                 THEN 2 WHEN i % 100 < 95 THEN 3 ELSE 4 END AS r,
                            1 + (i::bigint * 7919) % %(devices)s AS s,
                            1 + (i::bigint * 104729) % %(devices)s AS d) AS pick
    """
    # psycopg placeholders: a literal modulo operator is written %%.
    device_sql, alert_sql = device_sql.replace(" % ", " %% "), alert_sql.replace(" % ", " %% ")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(device_sql, {"sensor": sensor_id, "start": START, "devices": devices})
        first_device = connection.execute(
            "SELECT min(id) FROM devices WHERE sensor_id = %s", (sensor_id,)
        ).fetchone()
        assert first_device is not None
        connection.execute(
            alert_sql,
            {
                "sensor": sensor_id,
                "last": START + dt.timedelta(days=100),
                "alerts": alerts,
                "devices": devices,
                "first_device": first_device[0],
            },
        )
        connection.execute("VACUUM ANALYZE devices")
        connection.execute("VACUUM ANALYZE alerts")


# --- the pages ------------------------------------------------------------------------------------


def pages(first_device: int, devices: int) -> dict[str, list[str]]:
    """The request mix of each list page (what an analyst's UI sends)."""
    device = first_device + devices // 3
    since = (START + dt.timedelta(days=93)).isoformat().replace("+00:00", "Z")
    return {
        "inventory": [
            "/api/v1/devices?limit=50",
            "/api/v1/devices?type=plc&sort=risk_score&order=desc&limit=50",
            "/api/v1/devices?level=1&sort=last_seen&order=desc&limit=50",
            "/api/v1/devices?vendor=Siemens&sort=hostname&limit=50&offset=100",
            "/api/v1/devices?search=10.0.17&limit=50",
            "/api/v1/devices?sort=risk_score&order=desc&limit=100&offset=200",
        ],
        "alerts": [
            "/api/v1/alerts?status=open&limit=50",
            "/api/v1/alerts?status=open&severity=high%2B&limit=50",
            "/api/v1/alerts?type=threats.brute_force&limit=50",
            f"/api/v1/alerts?device_id={device}&limit=50",
            f"/api/v1/alerts?since={since}&limit=50&offset=50",
            "/api/v1/alerts?q=10.0.17.&limit=50",
            "/api/v1/alerts?status=new&sort=severity&limit=50",
        ],
    }


def busting(paths: list[str], count: int) -> list[str]:
    """``count`` distinct requests of the same kinds as ``paths``: each template's page size and
    offset varied (``limit`` within +-5 of the template's, ``offset`` growing from the template's),
    interleaved, so no request repeats a page the response cache holds (its key is the validated
    parameters: a made-up parameter would not make a new entry)."""
    variants: list[str] = []
    templates = [urlsplit(p) for p in paths]
    for k in range(count // len(templates) + 1):
        for template in templates:
            query = dict(parse_qsl(template.query))
            limit = int(query.get("limit", "50"))
            query["limit"] = str(limit - 5 + k % 11)
            query["offset"] = str(int(query.get("offset", "0")) + k // 11)
            variants.append(urlunsplit(template._replace(query=urlencode(query))))
    return variants[:count]


def capture_sql(url: str, home: Path, paths: list[str], token: str) -> dict[str, list[tuple[str, Any]]]:
    """The page and count statements the console runs for each path (in-process, once)."""
    from fastapi.testclient import TestClient

    from fieldward.console.app import create_app
    from fieldward.console.settings import ConsoleSettings

    # list_cache_seconds=0: the SQL of a page computed (the response cache would answer the second
    # request without any); older code ignores the unknown setting.
    app = create_app(
        ConsoleSettings(database_url=url, data_dir=home, secure_cookies=False, ui=False, list_cache_seconds=0)
    )
    captured: dict[str, list[tuple[str, Any]]] = {}
    current: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if "FROM devices" in statement or "FROM alerts" in statement:
            current.append((statement, parameters))

    with TestClient(app, base_url="https://testserver") as client:
        event.listen(app.state.database.engine, "before_cursor_execute", record)
        for path in paths:
            for _ in range(2):  # the second time: what a request costs once the total is cached
                current.clear()
                response = client.get(path, headers={"Authorization": f"Bearer {token}"})
                response.raise_for_status()
            captured[path] = list(current)
        event.remove(app.state.database.engine, "before_cursor_execute", record)
    return captured


@dataclass
class Figures:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    def line(self, name: str) -> str:
        if not self.latencies:
            return f"  {name:<28} no answer ({self.errors} errors)"
        ordered = sorted(self.latencies)

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

        rate = len(ordered) / self.seconds if self.seconds else 0.0
        return (
            f"  {name:<28} {len(ordered):>7,} req  {rate:>7.1f} req/s  p50 {pct(0.50):>7.1f} ms  "
            f"p95 {pct(0.95):>7.1f} ms  p99 {pct(0.99):>7.1f} ms  errors {self.errors}"
        )

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def http_load(base: str, token: str, paths: list[str], clients: int, seconds: float) -> Figures:
    """``clients`` closed-loop clients, each on its own keep-alive connection, cycling ``paths``."""
    figures = Figures()
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    sent = itertools.count()

    async def one() -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:
            while time.perf_counter() < deadline:
                path = paths[next(sent) % len(paths)]
                started = time.perf_counter()
                try:
                    response = await client.get(path)
                    await response.aread()
                    if response.status_code != 200:
                        figures.errors += 1
                        continue
                except httpx.HTTPError:
                    figures.errors += 1
                    continue
                figures.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    figures.seconds = time.perf_counter() - started
    return figures


WRK_SCRIPT = """
paths = {%s}
counter = 0
local threads = 0
setup = function(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
request = function()
  -- the two threads take every other path: together they send each path of the list once
  local i = (counter * 2 + tid) %% #paths
  counter = counter + 1
  return wrk.format("GET", paths[i + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("FIELDWARD %%d %%d %%d", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout))
  for _, p in ipairs({50, 95, 99}) do io.write(string.format(" %%d", latency:percentile(p))) end
  io.write("\\n")
end
"""


@dataclass
class WrkFigures(Figures):
    """wrk's own figures: it keeps no list of latencies, only its percentiles (microseconds)."""

    count: int = 0
    percentiles: dict[float, float] = field(default_factory=dict)

    def p(self, q: float) -> float:
        return self.percentiles[q]

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def line(self, name: str) -> str:
        return (
            f"  {name:<28} {self.count:>6,} req  {self.rate:>7.1f} req/s  p50 {self.p(0.5):7.1f} ms  "
            f"p95 {self.p(0.95):7.1f} ms  p99 {self.p(0.99):7.1f} ms  errors {self.errors}"
        )


def wrk_load(base: str, token: str, paths: list[str], clients: int, seconds: float) -> WrkFigures:
    """The same closed loop as :func:`http_load`, driven by ``wrk`` (C, two threads): the load
    generator then takes a small share of the 2 cores instead of about a third."""
    quoted = ", ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in paths)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % quoted)
    try:
        result = subprocess.run(
            [
                "wrk", "-t", "2", "-c", str(clients), "-d", f"{max(1, round(seconds))}s", "--timeout", "60s",
                "-H", f"Authorization: Bearer {token}", "-s", script.name, base,
            ],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        os.unlink(script.name)
    line = next(x for x in result.stdout.splitlines() if x.startswith("FIELDWARD "))
    count, duration, errors, p50, p95, p99 = (int(v) for v in line.split()[1:])
    return WrkFigures(
        errors=errors,
        seconds=duration / 1e6,
        count=count - errors,
        percentiles={0.5: p50 / 1000, 0.95: p95 / 1000, 0.99: p99 / 1000},
    )


async def sql_load(
    dsn: str, statements: list[list[tuple[str, Any]]], clients: int, seconds: float
) -> Figures:
    """The same SQL as the pages, replayed by ``clients`` concurrent psycopg connections."""
    figures = Figures()
    deadline = time.perf_counter() + seconds

    async def one(index: int) -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as connection:
            n = index
            while time.perf_counter() < deadline:
                page = statements[n % len(statements)]
                n += 1
                started = time.perf_counter()
                for sql, parameters in page:
                    cursor = await connection.execute(sql, parameters)
                    await cursor.fetchall()
                figures.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(clients)))
    figures.seconds = time.perf_counter() - started
    return figures


# --- ingestion ------------------------------------------------------------------------------------


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _key(prefix: int, index: int) -> str:
    return "mac:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}".format(prefix, *index.to_bytes(5, "big"))


def ingest_records_set(prefix: int, rng: random.Random, counts: dict[str, int]) -> dict[str, list[Any]]:
    """Records of one sensor in the JSON shapes of the analysis folder."""
    n = counts["devices"]
    devices = [
        {
            "id": _key(prefix, i),
            "mac": _key(prefix, i)[4:],
            "ips": [f"10.{prefix}.{i >> 8 & 255}.{i & 255}"],
            "vendor": rng.choice(VENDORS),
            "model": f"model-{rng.randrange(50)}",
            "hostname": f"s{prefix}-host-{i}",
            "device_type": rng.choice(TYPES),
            "purdue_level": rng.choice([0, 1, 2, 3, None]),
            "first_seen": _iso(START),
            "last_seen": _iso(START + dt.timedelta(minutes=10, seconds=rng.random())),
            "packets": rng.randrange(1, 1_000_000),
            "protocols": ["modbus"],
            "confidence": {"vendor": 0.9},
            "attributes": {
                "vendor": {"value": "Siemens", "confidence": 0.9, "evidence": [], "alternatives": []}
            },
        }
        for i in range(n)
    ]
    communications = [
        {
            "src_device": _key(prefix, i % n),
            "dst_device": _key(prefix, (i % n + 1 + i // n) % n),
            "transport": "tcp",
            "dst_port": 502,
            "service": "modbus",
            "flows": rng.randrange(1, 100),
            "src_packets": 10,
            "dst_packets": 10,
            "src_bytes": 1000,
            "dst_bytes": 1000,
            "first_ts": _iso(START),
            "last_ts": _iso(START + dt.timedelta(minutes=10)),
        }
        for i in range(counts["communications"])
    ]
    alerts = []
    for i in range(counts["alerts"]):
        engine, kind, title = ALERT_TYPES[i % len(ALERT_TYPES)]
        src, dst = rng.randrange(n), rng.randrange(n)
        alerts.append(
            {
                "id": f"{prefix:02x}{i:014x}",
                "engine": engine,
                "type": kind,
                "title": title,
                "severity": rng.choice(SEVERITIES)[0],
                "status": "new",
                "first_ts": _iso(START),
                "last_ts": _iso(START + dt.timedelta(minutes=10, seconds=i % 60)),
                "count": rng.randrange(1, 1000),
                "src": f"10.{prefix}.{src >> 8 & 255}.{src & 255}",
                "dst": f"10.{prefix}.{dst >> 8 & 255}.{dst & 255}",
                "src_device": _key(prefix, src),
                "dst_device": _key(prefix, dst),
                "protocol": "s7comm",
                "explanation": "opened s7comm: never seen while learning",
                "recommendation": "Check that the client is meant to reach the server.",
                "mitre": ["T0886"],
                "evidence": [{"flow_id": i}],
                "details": {},
                "evidence_pcap": f"evidence/{i:016x}.pcap",
            }
        )
    return {"devices": devices, "communications": communications, "alerts": alerts}


def _bodies(records: dict[str, list[Any]], batch: int) -> Iterator[tuple[str, bytes, int]]:
    for kind in ("devices", "communications", "alerts"):
        rows = records[kind]
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            body = orjson.dumps({"batch_id": str(uuid.uuid4()), "records": chunk})
            yield kind, body, len(chunk)


async def http_ingest(
    base: str, sensors: list[tuple[str, dict[str, list[Any]]]], batch: int
) -> tuple[int, float]:
    """Each sensor pushes its records in order (devices, communications, alerts), concurrently."""
    prepared = [(token, list(_bodies(records, batch))) for token, records in sensors]
    total = 0

    async def push(token: str, bodies: list[tuple[str, bytes, int]]) -> None:
        nonlocal total
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=300) as client:
            for kind, body, count in bodies:
                response = await client.post(f"/api/v1/ingest/{kind}", content=body)
                response.raise_for_status()
                assert response.json()["status"] == "applied", response.text
                total += count

    started = time.perf_counter()
    await asyncio.gather(*(push(token, bodies) for token, bodies in prepared))
    return total, time.perf_counter() - started


# --- the run --------------------------------------------------------------------------------------


def _loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} cores)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(base: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/api/v1/openapi.json", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit("the console did not start")


def _users(db: Database) -> tuple[str, list[str], int]:
    """A viewer API token, two sensor tokens, and the id of the data set's sensor ("plant", created
    when absent). Names carry the process id, so a kept database can be measured again."""
    viewer, viewer_hash = new_token(USER_PREFIX)
    tokens = []
    run = os.getpid()
    with db.session() as session:
        user = User(
            username=f"bench-viewer-{run}", password_hash=hash_password("benchmark password"), role="viewer"
        )
        session.add(user)
        session.flush()
        session.add(ApiToken(user_id=user.id, name="bench", token_hash=viewer_hash, scopes=["read"]))
        plant = session.scalars(select(Sensor).where(Sensor.name == "plant")).first()
        if plant is None:
            plant = Sensor(name="plant")
            session.add(plant)
        for n in (1, 2):
            secret, digest = new_token(SENSOR_PREFIX)
            session.add(Sensor(name=f"bench-sensor-{run}-{n}", credential_hash=digest))
            tokens.append(secret)
        session.flush()
        return viewer, tokens, plant.id


def _load(kind: str, base: str, token: str, paths: list[str], clients: int, seconds: float) -> Figures:
    if kind == "wrk":
        return wrk_load(base, token, paths, clients, seconds)
    return asyncio.run(http_load(base, token, paths, clients, seconds))


class BackgroundIngest:
    """One sensor pushing batches of ``records`` (1,000 devices or alerts each, the same records over
    and over with fresh batch ids: upserts that change rows) through ``POST /api/v1/ingest/{kind}``
    as fast as the console takes them, in a thread, while the pages are measured: every batch bumps
    the data version, so the list pages' kept answers are invalidated several times a second."""

    def __init__(self, base: str, token: str, records: dict[str, list[Any]], batch: int = 1000) -> None:
        self.base = base
        self.token = token
        self.bodies = [
            (kind, orjson.dumps(rows[start : start + batch]), len(rows[start : start + batch]))
            for kind in ("devices", "alerts")
            for rows in [records[kind]]
            for start in range(0, len(rows), batch)
        ]
        self.records = 0
        self.batches = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=self.base, headers=headers, timeout=300) as client:
            for kind, records, count in itertools.cycle(self.bodies):
                if self._stop.is_set():
                    break
                body = b'{"batch_id":"' + str(uuid.uuid4()).encode() + b'","records":' + records + b"}"
                response = await client.post(f"/api/v1/ingest/{kind}", content=body)
                response.raise_for_status()
                self.records += count
                self.batches += 1
        self.seconds = time.perf_counter() - started

    def __enter__(self) -> BackgroundIngest:
        self.records = self.batches = 0
        self._stop.clear()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=300)

    def line(self) -> str:
        rate = self.records / self.seconds if self.seconds else 0.0
        bumps = self.batches / self.seconds if self.seconds else 0.0
        return (
            f"    meanwhile one sensor ingested {self.records:,} records ({rate:,.0f}/s) in "
            f"{self.batches} batches: {bumps:.1f} data-version bumps/s"
        )


MIXES = ("ui", "distinct", "ingest")
MIX_TEXT = {
    "ui": "the UI's requests, repeated (response cache hits after the first of each)",
    "distinct": "every request a distinct page (cache misses: the uncached path)",
    "ingest": "the UI's requests while a sensor ingests (each batch invalidates the cache)",
}


def measure_pages(
    args: argparse.Namespace,
    base: str,
    viewer: str,
    mix: dict[str, list[str]],
    captured: Any,
    ingest: BackgroundIngest | None,
    meter: CpuMeter,
) -> None:
    print(
        f"uvicorn, {args.workers} workers; {args.clients} closed-loop clients ({args.load}), "
        f"{args.seconds:.0f} s per page and mix (load generator on the same 2 cores)"
    )
    _load(args.load, base, viewer, mix["inventory"] + mix["alerts"], args.clients, 3)  # warm-up
    distinct_count = max(2000, int(args.seconds * 1500))
    for kind in args.mixes:
        if kind == "ingest" and ingest is None:
            continue
        print(f"  mix '{kind}': {MIX_TEXT[kind]}")
        for page, paths in mix.items():
            requests = busting(paths, distinct_count) if kind == "distinct" else paths
            # The floor of the distinct mix: the SQL of a sample of its pages (see main).
            samples = requests[: 2 * len(paths)] if kind == "distinct" else paths
            statements = [captured[p] for p in samples]
            used: list[float] = []  # CPU of the console's run (not measured beside a background ingest)
            if kind == "ingest":
                assert ingest is not None
                with ingest:
                    api = _load(args.load, base, viewer, requests, args.clients, args.seconds)
                api_ingest = ingest.line()
                with ingest:
                    floor = asyncio.run(sql_load(args.dsn, statements, args.clients, args.seconds))
                floor_ingest = ingest.line()
            else:
                before = meter.read()
                api = _load(args.load, base, viewer, requests, args.clients, args.seconds)
                used = [after - start for after, start in zip(meter.read(), before, strict=True)]
                floor = asyncio.run(sql_load(args.dsn, statements, args.clients, args.seconds))
            print(api.line(f"{page} (console)"))
            sent = api.count if isinstance(api, WrkFigures) else len(api.latencies)
            if used and used[0] and sent:
                print(
                    f"    CPU per request: console {used[0] / sent * 1e3:.2f} ms, PostgreSQL "
                    + (f"{used[1] / sent * 1e3:.2f} ms" if used[1] else "not measured (remote)")
                    + ("" if args.load == "wrk" else f", load generator {used[2] / sent * 1e3:.2f} ms")
                )
            if kind == "ingest":
                print(api_ingest)
            print(floor.line(f"{page} (same SQL, psycopg)"))
            if kind == "ingest":
                print(floor_ingest)
            if kind == "distinct":
                note = "each once" if sent <= len(requests) else "SOME REPEATED: raise the count"
                print(f"    {sent:,} requests over {len(requests):,} distinct pages ({note})")
            print(
                f"  {page}, {kind}: p95 {api.p(0.95):.1f} ms (target < 200 ms: "
                f"{'met' if api.p(0.95) < 200 else 'NOT met'}); console/SQL floor p95 "
                f"x{api.p(0.95) / floor.p(0.95):.2f}, p50 x{api.p(0.5) / floor.p(0.5):.2f}, "
                f"req/s x{api.rate / floor.rate:.2f}"
            )
    print("  per request (console, one client at a time, p50 over 1 s; repeated: cached after the first):")
    for paths in mix.values():
        for path in paths:
            solo = asyncio.run(http_load(base, viewer, [path], 1, 1.0))
            print(f"    {solo.p(0.5):7.1f} ms  {path}")


def proc_cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) of process ``pid`` from ``/proc`` (with ``children``: plus those of
    its children that exited and were waited for: a PostgreSQL postmaster's finished backends)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:  # gone, or no /proc (not Linux)
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def find_processes(match: Callable[[list[bytes]], bool]) -> list[int]:
    """Pids of the processes whose ``/proc/<pid>/stat`` fields ``match``: the name first (without its
    parentheses), then the fields after it (state, ppid, pgrp, session...)."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    name, _, rest = stat.read().rpartition(b")")
            except OSError:
                continue
            if match([name.partition(b"(")[2], *rest.split()]):
                found.append(int(entry))
    return found


class CpuMeter:
    """CPU seconds spent meanwhile by the console (every process of uvicorn's session: the
    supervisor and its workers), by PostgreSQL (every ``postgres`` process on this machine, its
    exited backends included; only when the database is local) and by this process (the load
    generator). Linux ``/proc``; elsewhere every figure is 0 and nothing is printed."""

    def __init__(self, server_session: int, local_database: bool) -> None:
        self.session = str(server_session).encode()
        self.local_database = local_database

    def read(self) -> tuple[float, float, float]:
        console = sum(proc_cpu_seconds(pid) for pid in find_processes(lambda f: f[4] == self.session))
        database = 0.0
        if self.local_database:
            # postgres processes: the postmaster (its parent is not postgres) counts its children.
            postgres = find_processes(lambda f: f[0] == b"postgres")
            database = sum(proc_cpu_seconds(pid, children=True) for pid in postgres)
        return console, database, time.process_time()


def measure_ingest(
    args: argparse.Namespace, db: Database, base: str, sensor_tokens: list[str], meter: CpuMeter
) -> None:
    counts = {
        "devices": args.ingest_devices,
        "communications": args.ingest_communications,
        "alerts": args.ingest_alerts,
    }
    rng = random.Random(7)
    first = 0x20 + os.getpid() % 0x20 * 2  # fresh device keys and alert ids on a kept database
    rates = []
    sent = took = 0.0
    for round_ in range(args.ingest_rounds):
        prefix = first + len(sensor_tokens) * round_  # below 0xC0: BackgroundIngest's keys
        sets = [(token, ingest_records_set(prefix + n, rng, counts)) for n, token in enumerate(sensor_tokens)]
        before = meter.read()
        total, seconds = asyncio.run(http_ingest(base, sets, 5000))
        console, database, client = (after - start for after, start in zip(meter.read(), before, strict=True))
        rates.append(total / seconds)
        sent, took = sent + total, took + seconds
        print(
            f"  ingestion over HTTP, {len(sets)} sensors at once: {total:,} records in {seconds:.1f} s: "
            f"{rates[-1]:,.0f} records/s (target >= 20,000: {'met' if rates[-1] >= 20_000 else 'NOT met'})"
        )
        if console:
            cpu = console + database + client
            print(
                f"    CPU per record: console {console / total * 1e6:.0f} µs, PostgreSQL "
                + (f"{database / total * 1e6:.0f} µs" if database else "not measured (remote)")
                + f", load generator {client / total * 1e6:.0f} µs; at this cost {os.cpu_count()} cores "
                f"ingest at most {total / cpu * (os.cpu_count() or 1):,.0f} records/s"
            )
    if len(rates) > 1:
        print(
            f"  ingestion over HTTP, {len(rates)} rounds: {sent:,.0f} records in {took:.1f} s, "
            f"{sent / took:,.0f} records/s overall (target >= 20,000: "
            f"{'met' if sent / took >= 20_000 else 'NOT met'}); per round median "
            f"{statistics.median(rates):,.0f}, min {min(rates):,.0f}, max {max(rates):,.0f}, "
            f"at least 20,000 in {sum(r >= 20_000 for r in rates)} of {len(rates)}"
        )
    http_rate = statistics.median(rates)
    one_set = ingest_records_set(first + 0x40, rng, counts)
    started = time.perf_counter()
    written = 0
    for kind in ("devices", "communications", "alerts"):
        rows = one_set[kind]
        for start in range(0, len(rows), 5000):
            report = ingest_records(db, f"bench-in-process-{os.getpid()}", kind, rows[start : start + 5000])
            written += report.written[kind]
    direct = written / (time.perf_counter() - started)
    print(
        f"  peer: ingest_records in-process, one sensor: {written:,} records: {direct:,.0f} records/s; "
        f"HTTP/in-process x{http_rate / direct:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--devices", type=int, default=50_000)
    parser.add_argument("--alerts", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--load",
        choices=("wrk", "httpx"),
        default="wrk" if shutil.which("wrk") else "httpx",
        help="load generator of the pages (default: wrk when installed)",
    )
    parser.add_argument("--ingest-devices", type=int, default=10_000, help="per sensor")
    parser.add_argument("--ingest-communications", type=int, default=25_000, help="per sensor")
    parser.add_argument("--ingest-alerts", type=int, default=50_000, help="per sensor")
    parser.add_argument(
        "--ingest-rounds", type=int, default=1, help="ingestion runs, each with new records (median printed)"
    )
    parser.add_argument("--only", choices=("pages", "ingest"), help="measure only the pages or ingestion")
    parser.add_argument(
        "--mixes",
        default=",".join(MIXES),
        help="request mixes of the pages, comma-separated: ui (the UI's requests, repeated: cache "
        "hits), distinct (every request another page: misses), ingest (ui while a sensor ingests)",
    )
    parser.add_argument("--database", help="measure this kept database (no fill, not dropped)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (its name is printed)")
    args = parser.parse_args()
    if not 1 <= args.ingest_rounds <= 24:
        parser.error("--ingest-rounds: 1 to 24 (each round takes new device keys below BackgroundIngest's)")
    args.mixes = [m.strip() for m in args.mixes.split(",") if m.strip()]
    if unknown := set(args.mixes) - set(MIXES):
        parser.error(f"unknown mix {sorted(unknown)}; choose from {', '.join(MIXES)}")

    base_url = make_url(args.url)
    name = args.database or f"fieldward_console_bench_{os.getpid()}"
    admin_dsn = base_url.set(drivername="postgresql").render_as_string(hide_password=False)
    if args.database is None:
        with psycopg.connect(admin_dsn, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
    url = base_url.set(database=name).render_as_string(hide_password=False)
    args.dsn = base_url.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    home = Path(tempfile.mkdtemp(prefix="fieldward-console-bench-"))
    server: subprocess.Popen[bytes] | None = None
    print(f"load before: {_loadavg()}")
    try:
        db = Database(url)
        db.upgrade()
        viewer, sensor_tokens, plant = _users(db)
        if args.database is None:
            started = time.perf_counter()
            fill(url, plant, args.devices, args.alerts)
            print(
                f"{db!r}: {args.devices:,} devices, {args.alerts:,} alerts "
                f"in {time.perf_counter() - started:.1f} s"
            )
        with psycopg.connect(args.dsn) as connection:
            row = connection.execute(
                "SELECT min(id), count(*) FROM devices WHERE sensor_id = %s", (plant,)
            ).fetchone()
            alerts = connection.execute("SELECT count(*) FROM alerts").fetchone()
        assert row is not None
        assert alerts is not None
        print(f"{db!r}: {row[1]:,} devices of the data set, {alerts[0]:,} alerts")
        mix = pages(int(row[0]), int(row[1]))
        captured = {}
        if args.only != "ingest":
            wanted = [p for paths in mix.values() for p in paths]
            if "distinct" in args.mixes:  # a sample of the distinct pages: two of each kind
                wanted += [p for paths in mix.values() for p in busting(paths, 2 * len(paths))]
            captured = capture_sql(url, home, wanted, viewer)

        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "FIELDWARD_DATABASE_URL": url, "FIELDWARD_HOME": str(home)}
        command = [
            sys.executable, "-m", "uvicorn", "fieldward.console.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        server = subprocess.Popen(command, env=env, start_new_session=True)
        _wait(base)
        host = make_url(url).host
        meter = CpuMeter(server.pid, host in (None, "", "127.0.0.1", "localhost", "::1"))
        if args.only != "ingest":
            background = None
            if "ingest" in args.mixes:
                counts = {"devices": 2000, "communications": 0, "alerts": 10_000}
                prefix = 0xC0 + os.getpid() % 0x20  # apart from measure_ingest's device keys
                records = ingest_records_set(prefix, random.Random(11), counts)
                background = BackgroundIngest(base, sensor_tokens[0], records)
            measure_pages(args, base, viewer, mix, captured, background, meter)
        if args.only != "pages":
            measure_ingest(args, db, base, sensor_tokens, meter)
        db.dispose()
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
        if args.keep or args.database:
            print(f"kept: --database {name}")
        else:
            with psycopg.connect(admin_dsn, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        print(f"load after: {_loadavg()}")


if __name__ == "__main__":
    main()
