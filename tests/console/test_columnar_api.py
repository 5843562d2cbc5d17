"""Flows and protocol events through the console: sensors push Parquet, viewers query JSON rows,
retention removes old days.

The data is real: a small generated plant capture (``fieldward generate``) analysed with
``fieldward analyze``; its ``flows.parquet`` and ``events/*.parquet`` are pushed as a sensor would,
directly and through :class:`SensorClient` (over the TestClient's transport).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fieldward.cli import app as cli
from fieldward.console.api.routes.columnar import PARQUET_TYPE, credential_column
from fieldward.console.jobs import RetentionJob, apply_retention, columnar_root, shared_store
from fieldward.console.models import IngestBatch
from fieldward.console.sensor_client import SensorClient
from fieldward.console.triage_models import ConsoleSetting

from .conftest import Console

ISO_NS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z")


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small plant capture (8 devices, 30 s) analysed: flows.parquet and events/*.parquet."""
    base = tmp_path_factory.mktemp("columnar")
    runner = CliRunner()
    capture = base / "plant.pcap"
    result = runner.invoke(
        cli, ["generate", "--devices", "8", "--minutes", "0.5", "--seed", "5", "--out", str(capture)]
    )
    assert result.exit_code == 0, result.output
    out = base / "out"
    result = runner.invoke(cli, ["analyze", str(capture), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "flows.parquet").is_file()
    assert (out / "events" / "modbus.parquet").is_file()
    return out


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def _push(
    console: Console, path: str, data: bytes, batch_id: str, token: str | None = None
) -> httpx.Response:
    headers = {
        **console.bearer(token or console.sensor_token),
        "Content-Type": PARQUET_TYPE,
        "X-Batch-Id": batch_id,
    }
    return console.client.post(f"/api/v1/ingest/columnar/{path}", content=data, headers=headers)


def _all_rows(console: Console, path: str, params: dict[str, object]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    offset: int | None = 0
    while offset is not None:
        response = console.client.get(
            path,
            params={**params, "limit": 7, "offset": offset},
            headers=console.bearer(console.tokens["viewer"]),
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 7
        rows.extend(page["items"])
        offset = page["next_offset"]
    return rows


def test_flows_pushed_by_a_sensor_are_queried_by_viewers(console: Console, analysis: Path) -> None:
    flows = pq.read_table(analysis / "flows.parquet")
    answer = _push(console, "flows", (analysis / "flows.parquet").read_bytes(), "flows-1")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "applied"
    assert body["batch_id"] == "flows-1"
    assert body["written"] == flows.num_rows > 0
    first_day = flows.column("first_ts")[0].as_py().date().isoformat()
    assert first_day in body["days"]

    again = _push(console, "flows", (analysis / "flows.parquet").read_bytes(), "flows-1")
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"

    rows = _all_rows(console, "/api/v1/flows", {})
    assert len(rows) == flows.num_rows  # paged in 7s, each flow once
    assert Counter(r["community_id"] for r in rows) == Counter(flows.column("community_id").to_pylist())
    assert all(ISO_NS.fullmatch(str(r["first_ts"])) for r in rows)
    assert all(r["sensor"] == "sensor-1" for r in rows)
    # nanoseconds survive: the first flow's start as written by the sensor
    ns = pc.min(flows.column("first_ts")).cast(pa.int64()).as_py()
    assert str(rows[0]["first_ts"]).endswith(f".{ns % 10**9:09d}Z")

    ip = str(flows.column("orig_ip")[0])
    by_ip = _all_rows(console, "/api/v1/flows", {"device_ip": ip})
    expected = sum(
        1
        for o, r in zip(flows.column("orig_ip").to_pylist(), flows.column("resp_ip").to_pylist(), strict=True)
        if ip in (o, r)
    )
    assert len(by_ip) == expected > 0
    assert all(ip in (r["orig_ip"], r["resp_ip"]) for r in by_ip)

    modbus = _all_rows(console, "/api/v1/flows", {"protocol": "modbus"})
    assert len(modbus) == flows.filter(pc.equal(flows.column("service"), "modbus")).num_rows > 0

    last = pc.max(flows.column("first_ts")).as_py()
    window = _all_rows(console, "/api/v1/flows", {"since": last.isoformat()})
    assert 1 <= len(window) < len(rows)
    empty = _all_rows(console, "/api/v1/flows", {"until": "2000-01-01T00:00:00Z"})
    assert empty == []
    bad = console.client.get(
        "/api/v1/flows", params={"device_ip": "not-an-ip"}, headers=console.bearer(console.tokens["viewer"])
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "device_ip", 0]


def test_events_with_filters_and_bytes_as_hex(console: Console, analysis: Path) -> None:
    modbus = pq.read_table(analysis / "events" / "modbus.parquet")
    answer = _push(console, "events/modbus", (analysis / "events" / "modbus.parquet").read_bytes(), "ev-1")
    assert answer.status_code == 200, answer.text
    assert answer.json()["written"] == modbus.num_rows
    viewer = console.bearer(console.tokens["viewer"])
    logs = console.client.get("/api/v1/events", headers=viewer).json()
    assert logs["logs"] == ["modbus"]
    assert "orig_h" in logs["filters"]

    rows = _all_rows(console, "/api/v1/events/modbus", {})
    assert len(rows) == modbus.num_rows
    func = modbus.column("func")[0].as_py()
    only = _all_rows(console, "/api/v1/events/modbus", {"filter": f"func:{func}"})
    assert len(only) == modbus.filter(pc.equal(modbus.column("func"), func)).num_rows
    assert {r["func"] for r in only} == {func}
    unit = modbus.column("unit")[0].as_py()
    by_unit = _all_rows(console, "/api/v1/events/modbus", {"filter": [f"unit:{unit}", f"func:{func}"]})
    assert {(r["unit"], r["func"]) for r in by_unit} == {(unit, func)}
    with_data = [r for r in rows if r["data"] is not None]
    raw = [v for v in modbus.column("data").to_pylist() if v is not None]
    assert sorted(r["data"] for r in with_data) == sorted(v.hex() for v in raw)

    for query in ({"filter": "nonsense:1"}, {"filter": "unit:abc"}, {"filter": "is_orig:yes"}):
        response = console.client.get("/api/v1/events/modbus", params=query, headers=viewer)
        assert response.status_code == 422, query
        assert response.json()["detail"][0]["loc"] == ["query", "filter", 0], response.text
    # a whitelisted column this log does not have: the store's reason
    response = console.client.get("/api/v1/events/modbus", params={"filter": "cip_service:x"}, headers=viewer)
    assert response.status_code == 422
    assert "unknown filter column" in response.json()["detail"]
    for bound in ("yesterday", "2026-02-30T00:00:00Z"):
        response = console.client.get("/api/v1/events/modbus", params={"since": bound}, headers=viewer)
        assert response.status_code == 422, bound
        assert "since is not" in response.json()["detail"]
    # bounds beyond what nanosecond timestamps hold are clamped, not errors
    wide = {"since": "0001-01-01T00:00:00+01:00", "until": "9999-12-31T23:59:59-01:00"}
    assert len(_all_rows(console, "/api/v1/events/modbus", wide)) == modbus.num_rows
    assert console.client.get("/api/v1/events/Bad-Log", headers=viewer).status_code == 422
    assert console.client.get("/api/v1/events/dnp3", headers=viewer).json()["items"] == []


def test_credential_columns_are_never_stored_nor_returned(console: Console) -> None:
    ts = pa.array([dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)] * 2, pa.timestamp("ns", tz="UTC"))
    table = pa.table(
        {
            "ts": ts,
            "orig_h": ["10.0.0.1", "10.0.0.2"],
            "password": ["hunter2hunter2", "swordfish"],
            "snmp_community": ["public", "private"],
            "community": ["public", "private"],
            "cleartext_credentials": [True, False],
        }
    )
    answer = _push(console, "events/ftp", _parquet(table), "cred-1")
    assert answer.status_code == 200, answer.text
    assert "dropped_credential_column:password" in answer.json()["weird"]
    rows = _all_rows(console, "/api/v1/events/ftp", {})
    assert len(rows) == 2
    assert {"password", "community"}.isdisjoint(rows[0])
    assert rows[0]["cleartext_credentials"] is True
    stored = b"".join(p.read_bytes() for p in columnar_root(console.app.state.settings).rglob("*.parquet"))
    assert b"hunter2hunter2" not in stored
    assert b"swordfish" not in stored
    assert credential_column("community_id", pa.string()) is False
    assert credential_column("api_token", pa.string()) is True


def test_bad_batches_are_refused_with_a_reason(console: Console, analysis: Path) -> None:
    data = (analysis / "flows.parquet").read_bytes()
    not_parquet = _push(console, "flows", b"PAR1 this is not parquet PAR1", "x-1")
    assert not_parquet.status_code == 422
    assert "Parquet" in not_parquet.json()["detail"]
    assert _push(console, "flows", data, "../escape").status_code == 422
    no_time = _push(console, "events/modbus", _parquet(pa.table({"x": [1]})), "x-2")
    assert no_time.status_code == 422
    assert "'ts'" in no_time.json()["detail"]
    # a user credential is no sensor credential, and a sensor cannot read
    assert _push(console, "flows", data, "x-3", token=console.tokens["admin"]).status_code == 401
    assert (
        console.client.get("/api/v1/flows", headers=console.bearer(console.sensor_token)).status_code == 401
    )


def test_the_sensor_client_pushes_flows_and_events_once(
    console: Console, analysis: Path, tmp_path: Path
) -> None:
    transport = console.client._transport  # the app in-process, as a real console would answer
    token = console.sensor("plant-x")
    events = {p.stem: pq.read_metadata(p).num_rows for p in (analysis / "events").glob("*.parquet")}
    flows = pq.read_metadata(analysis / "flows.parquet").num_rows
    with SensorClient(
        "https://testserver", token, tmp_path / "spool", transport=transport, columnar_rows=50
    ) as client:
        first = client.push_folder(analysis)
        second = client.push_folder(analysis)
    assert first.complete, first.to_json()
    assert first.columnar["flows"] == flows
    assert first.columnar["events"] == sum(events.values())
    assert first.delivered["flows"] == flows
    assert second.applied == 0
    assert second.duplicates == first.applied
    store = shared_store(console.app)
    assert store.flows(sensors=["plant-x"], limit=100_000).num_rows == flows
    for log, rows in events.items():
        assert store.events(log, sensors=["plant-x"], limit=100_000).num_rows == rows, log
    with console.database.session() as session:
        kinds = Counter(row.kind for row in session.query(IngestBatch).all())
    assert kinds["events"] >= len(events)
    assert kinds["flows"] >= 1


def _old_flows(days_ago: list[int], now: dt.datetime) -> pa.Table:
    starts = [now - dt.timedelta(days=d) for d in days_ago]
    return pa.table(
        {
            "first_ts": pa.array(starts, pa.timestamp("ns", tz="UTC")),
            "last_ts": pa.array(starts, pa.timestamp("ns", tz="UTC")),
            "orig_ip": ["10.0.0.1"] * len(starts),
            "resp_ip": [str(ipaddress.ip_address("10.0.0.2"))] * len(starts),
            "proto": ["tcp"] * len(starts),
        }
    )


def test_retention_reads_the_settings_table_and_removes_old_days(console: Console) -> None:
    now = dt.datetime(2026, 6, 30, 12, tzinfo=dt.UTC)
    settings = console.app.state.settings
    answer = _push(console, "flows", _parquet(_old_flows([0, 3, 10, 40], now)), "old-1")
    assert answer.status_code == 200, answer.text
    store = shared_store(console.app)

    report = apply_retention(settings, console.database.sessionmaker, now, store=store)  # default 90 days
    assert report.removed == ()
    assert store.flows(limit=100).num_rows == 4

    with console.database.session() as session:
        session.add(ConsoleSetting(name="retention_days", value=7, updated_by="admin-user"))
    report = apply_retention(settings, console.database.sessionmaker, now, store=store)
    assert report.keep_from == dt.date(2026, 6, 23)
    assert sorted(p.day for p in report.removed) == [dt.date(2026, 5, 21), dt.date(2026, 6, 20)]
    remaining = store.flows(limit=100)
    assert remaining.num_rows == 2
    assert all(ts >= now - dt.timedelta(days=7) for ts in remaining.column("first_ts").to_pylist())


def test_the_retention_job_runs_in_the_background_and_stops(console: Console) -> None:
    now = dt.datetime(2026, 6, 30, 12, tzinfo=dt.UTC)
    _push(console, "flows", _parquet(_old_flows([1, 100], now)), "old-2")
    job = RetentionJob(
        console.app.state.settings,
        console.database.sessionmaker,
        store=shared_store(console.app),
        interval=0.05,
        clock=lambda: now,
    )
    job.start()
    deadline = time.monotonic() + 10
    while job.runs < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    job.stop()
    assert job.runs >= 2
    assert job.last_error is None
    assert job.last_report is not None
    assert shared_store(console.app).flows(limit=10).num_rows == 1
    runs = job.runs
    time.sleep(0.2)
    assert job.runs == runs, "stop() ends the loop"
