"""The console's open points of issue 7: evidence by the sensor's own alert id, 405 on API paths,
large feed uploads, a risk-trend point per risk batch, the indexed alert text search, the list
totals' cache, and the single-statement alert history on PostgreSQL.

Each test runs where it matters: on both backends when behaviour must match, on PostgreSQL for the
trigram index (skipped with a reason when no server answers).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from fieldward.console.api.deps import CountCache
from fieldward.console.api.routes.alerts import text_filter
from fieldward.console.app import DEFAULT_MAX_FEED_BYTES, feed_limit
from fieldward.console.models import IngestBatch
from fieldward.console.settings import ConsoleSettings
from fieldward.console.triage_models import SiteRiskSnapshot
from fieldward.store.ingest import ingest_records
from fieldward.store.models import Alert, AlertEvent

from .conftest import Console, start_console

FEEDS = Path(__file__).resolve().parents[1] / "data" / "feeds"
PCAP = "application/vnd.tcpdump.pcap"


def _alerts(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "alerts.jsonl").read_text().splitlines() if line.strip()]


def _push(console: Console, kind: str, records: list[Any], token: str | None = None) -> dict[str, Any]:
    response = console.client.post(
        f"/api/v1/ingest/{kind}",
        json={"batch_id": str(uuid.uuid4()), "records": records},
        headers=console.bearer(token or console.sensor_token),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _later(value: str, seconds: int) -> str:
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00")) + dt.timedelta(seconds=seconds)
    return moment.isoformat().replace("+00:00", "Z")


# --- 1. evidence by the sensor's own alert id ------------------------------------------------------


def test_evidence_is_uploaded_by_the_sensors_alert_id_and_survives_a_newer_report(
    any_console: Console, demo_folder: Path
) -> None:
    console = any_console
    alerts = _alerts(demo_folder)
    record = next(a for a in alerts if a.get("evidence_pcap"))
    capture = (demo_folder / record["evidence_pcap"]).read_bytes()
    _push(console, "alerts", alerts)
    headers = {**console.bearer(console.sensor_token), "Content-Type": PCAP}
    uploaded = console.client.post(
        f"/api/v1/ingest/evidence/{record['id']}", content=capture, headers=headers
    )
    assert uploaded.status_code == 200, uploaded.text
    with console.database.session() as session:
        row = session.scalars(select(Alert).where(Alert.alert_key == record["id"])).one()
        alert_id, stored = row.id, row.evidence_pcap
    assert uploaded.json() == {"alert_id": alert_id, "bytes": len(capture)}
    assert stored == f"sensor-{row.sensor_id}/alert-{alert_id}.pcap"
    assert (console.app.state.settings.evidence_path() / stored).read_bytes() == capture

    # A newer report of the same alert (the sensor's own evidence path in it) keeps the console's copy.
    newer = {**record, "last_ts": _later(record["last_ts"], 60), "count": record["count"] + 1}
    assert _push(console, "alerts", [newer])["written"] == 1
    with console.database.session() as session:
        row = session.scalars(select(Alert).where(Alert.alert_key == record["id"])).one()
        assert (row.count, row.evidence_pcap) == (record["count"] + 1, stored)
    download = console.client.get(
        f"/api/v1/alerts/{alert_id}/evidence", headers=console.bearer(console.tokens["viewer"])
    )
    assert download.status_code == 200
    assert download.content == capture

    # Another sensor cannot reach it, not by the key (its own alerts only) nor by the row id.
    other = {**console.bearer(console.sensor("sensor-2")), "Content-Type": PCAP}
    for reference in (record["id"], str(alert_id)):
        refused = console.client.post(f"/api/v1/ingest/evidence/{reference}", content=capture, headers=other)
        assert refused.status_code == 404, reference
    missing = console.client.post("/api/v1/ingest/evidence/no-such-alert", content=capture, headers=headers)
    assert missing.status_code == 404
    control = console.client.post("/api/v1/ingest/evidence/a%01b", content=capture, headers=headers)
    assert control.status_code == 422


def test_an_evidence_batch_id_is_recorded_and_a_retry_is_a_duplicate(
    console: Console, demo_folder: Path
) -> None:
    alerts = _alerts(demo_folder)
    record = next(a for a in alerts if a.get("evidence_pcap"))
    capture = (demo_folder / record["evidence_pcap"]).read_bytes()
    _push(console, "alerts", alerts)
    batch = str(uuid.uuid4())
    headers = {**console.bearer(console.sensor_token), "Content-Type": PCAP, "X-Batch-Id": batch}
    url = f"/api/v1/ingest/evidence/{record['id']}"
    first = console.client.post(url, content=capture, headers=headers)
    second = console.client.post(url, content=capture, headers=headers)
    assert (first.status_code, first.json()["status"], first.json()["bytes"]) == (
        200,
        "applied",
        len(capture),
    )
    assert (second.status_code, second.json()["status"], second.json()["bytes"]) == (200, "duplicate", 0)
    with console.database.session() as session:
        rows = session.execute(select(IngestBatch.kind).where(IngestBatch.batch_id == batch)).all()
    assert [r.kind for r in rows] == ["evidence"]


# --- 2. 405 with Allow on API paths -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/ingest/evidence/0123456789abcdef",
        "/api/v1/ingest/alerts",
        "/api/v1/feeds/import",
        "/api/v1/auth/login",
        "/api/v1/alerts/1/acknowledge",
    ],
)
def test_an_api_path_answers_405_with_allow_not_the_ui(console: Console, method: str, path: str) -> None:
    response = console.client.request(method, path)
    assert response.status_code == 405, (method, path, response.status_code, response.text[:80])
    assert response.headers["allow"] == "POST"
    assert response.headers["content-type"].startswith("application/json")


def test_405_lists_every_method_of_the_path_and_the_ui_still_serves_its_pages(console: Console) -> None:
    response = console.client.request("PUT", "/api/v1/sensors")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert console.client.get("/devices/12").headers["content-type"].startswith("text/html")
    assert console.client.get("/api/v1/no-such-thing").status_code == 404


# --- 3. large feed uploads ------------------------------------------------------------------------------


def _nvd_feed(copies: int) -> bytes:
    """An NVD API 2.0 answer holding ``copies`` renamed copies of a real CVE record."""
    cve = json.loads((FEEDS / "CVE-2017-0144.json").read_text())
    items = []
    for n in range(copies):
        item = copy.deepcopy(cve)
        item["id"] = f"CVE-2099-{10000 + n}"
        items.append({"cve": item})
    return json.dumps(
        {"resultsPerPage": copies, "startIndex": 0, "totalResults": copies, "format": "NVD_CVE",
         "version": "2.0", "vulnerabilities": items}
    ).encode()  # fmt: skip


def test_a_feed_larger_than_the_request_limit_is_imported(console: Console) -> None:
    feed = _nvd_feed(160)
    limit = console.app.state.settings.max_request_bytes
    assert len(feed) > 2 * limit
    admin = console.bearer(console.tokens["admin"])
    response = console.client.post(
        "/api/v1/feeds/import", files=[("files", ("nvd-2099.json", feed, "application/json"))], headers=admin
    )
    assert response.status_code == 200, response.text[:300]
    report = response.json()
    assert report["files"][0]["error"] is None
    assert report["total"]["added"] >= 160
    # Every other endpoint keeps the 1 MiB cap.
    other = console.client.post(
        "/api/v1/users",
        content=b"{" + b" " * (limit + 10) + b"}",
        headers={**admin, "Content-Type": "application/json"},
    )
    assert other.status_code == 413


def test_the_feed_cap_is_configurable_and_enforced_while_streaming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert feed_limit(ConsoleSettings(data_dir=tmp_path)) == DEFAULT_MAX_FEED_BYTES == 512 * 1024 * 1024
    monkeypatch.setenv("FIELDWARD_MAX_FEED_BYTES", str(2 * 1024 * 1024))
    assert feed_limit(ConsoleSettings(data_dir=tmp_path)) == 2 * 1024 * 1024
    for console in start_console(f"sqlite:///{tmp_path / 'c.db'}", tmp_path):
        admin = console.bearer(console.tokens["admin"])
        big = b"\x1f\x8b" + b"\0" * (3 * 1024 * 1024)
        declared = console.client.post(
            "/api/v1/feeds/import", files=[("files", ("big.json.gz", big, "application/gzip"))], headers=admin
        )
        assert declared.status_code == 413
        assert "2097152" in declared.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the cap is counted as the body streams
            boundary = b"--fwbench\r\n"
            yield boundary + b'Content-Disposition: form-data; name="files"; filename="x.json"\r\n\r\n'
            for _ in range(48):
                yield b" " * 65536
            yield b"\r\n--fwbench--\r\n"

        streamed = console.client.post(
            "/api/v1/feeds/import",
            content=chunks(),
            headers={**admin, "Content-Type": "multipart/form-data; boundary=fwbench"},
        )
        assert streamed.status_code == 413
        small = console.client.post(
            "/api/v1/feeds/import",
            files=[
                (
                    "files",
                    ("kev.csv", (FEEDS / "known_exploited_vulnerabilities.csv").read_bytes(), "text/csv"),
                )
            ],
            headers=admin,
        )
        assert small.status_code == 200, small.text[:200]


# --- 4. a risk trend point per risk batch ----------------------------------------------------------------


def test_a_risk_batch_records_the_days_site_and_sensor_scores(
    any_console: Console, demo_folder: Path
) -> None:
    console = any_console
    devices = json.loads((demo_folder / "devices.json").read_text())["devices"]
    risks = json.loads((demo_folder / "risk.json").read_text())["devices"]
    _push(console, "devices", devices)
    with console.database.session() as session:
        assert session.scalar(select(func.count()).select_from(SiteRiskSnapshot)) == 0
    assert _push(console, "risk", risks)["written"] == len(risks)
    today = dt.datetime.now(dt.UTC).date()
    with console.database.session() as session:
        sensor_id = session.scalar(select(IngestBatch.sensor_id).where(IngestBatch.kind == "risk"))
        points = {(p.sensor_id, p.day): p.score for p in session.scalars(select(SiteRiskSnapshot))}
    assert set(points) == {(0, today), (sensor_id, today)}
    site = console.client.get("/api/v1/risk", headers=console.bearer(console.tokens["viewer"])).json()
    assert points[(0, today)] == site["score"]
    assert site["score"] > 0
    trend = console.client.get("/api/v1/risk/trend", headers=console.bearer(console.tokens["viewer"])).json()
    assert [(p["day"], p["score"]) for p in trend["points"]] == [(today.isoformat(), site["score"])]


# --- 5. the alert text search ------------------------------------------------------------------------------


def _search(console: Console, q: str) -> set[str]:
    response = console.client.get(
        "/api/v1/alerts", params={"q": q, "limit": 500}, headers=console.bearer(console.tokens["viewer"])
    )
    assert response.status_code == 200, response.text
    return {a["alert_key"] for a in response.json()["items"]}


def test_the_text_search_finds_the_same_alerts_on_both_backends(
    any_console: Console, demo_folder: Path
) -> None:
    alerts = _alerts(demo_folder)
    odd = {**alerts[0], "id": "odd-one", "title": "50% of 10_000 writes", "src": "10.99.1.7", "dst": "PLC-ß"}
    _push(any_console, "alerts", [*alerts, odd])
    for q in ("PLC stop", "plc STOP", "10.10.1.250", "new_communication", "operations.s7", "plc-SS"):
        expected = {
            a["id"]
            for a in [*alerts, odd]
            if any(q.lower() in str(a.get(f) or "").lower() for f in ("title", "type", "src", "dst"))
        }
        assert _search(any_console, q) == expected, q
    assert _search(any_console, "50%") == {"odd-one"}
    assert _search(any_console, "10_0") == {"odd-one"}
    assert _search(any_console, "5_%") == set()


def test_the_text_search_uses_the_trigram_index_on_postgresql(pg_factory: Any, tmp_path: Path) -> None:
    for console in start_console(pg_factory(), tmp_path):
        with console.database.session() as session:
            connection = session.connection()
            indexdef = connection.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_alerts_address_trgm'")
            ).scalar_one()
            assert "USING gin" in indexdef
            assert indexdef.count("gin_trgm_ops") == 2
            connection.execute(
                text("SET LOCAL enable_seqscan = off")
            )  # an empty table: make the choice visible
            compiled = select(Alert.id).where(text_filter(session, "10.10.1.250")).compile(connection)
            plan = "\n".join(
                r[0] for r in connection.exec_driver_sql("EXPLAIN " + compiled.string, compiled.params)
            )
        assert "ix_alerts_address_trgm" in plan, plan


# --- the totals' cache -------------------------------------------------------------------------------------


def test_the_count_cache_keeps_only_large_totals_for_a_while() -> None:
    calls: list[int] = []

    def compute(value: int) -> Any:
        def run() -> int:
            calls.append(value)
            return value

        return run

    cache = CountCache(ttl=60, minimum=1000, size=2)
    assert cache.count("small", compute(5)) == 5
    assert cache.count("small", compute(6)) == 6  # small totals are always exact
    assert cache.count("large", compute(5000)) == 5000
    assert cache.count("large", compute(7000)) == 5000  # within the ttl: the recent figure
    assert calls == [5, 6, 5000]
    cache.count("b", compute(2000))
    cache.count("c", compute(3000))  # the oldest key goes
    assert cache.count("large", compute(8000)) == 8000
    expired = CountCache(ttl=0, minimum=1)
    assert expired.count("k", compute(10)) == 10
    assert expired.count("k", compute(11)) == 11


# --- 6. the alert history of the single-statement ingestion -------------------------------------------


def test_alert_history_rows_only_for_new_alerts_and_status_changes(
    any_console: Console, demo_folder: Path
) -> None:
    console = any_console
    alerts = _alerts(demo_folder)[:5]
    database = console.database
    first = ingest_records(database, "history", "alerts", alerts)
    assert first.written["alert_events"] == len(alerts)
    again = ingest_records(database, "history", "alerts", alerts)
    assert "alert_events" not in again.written
    acknowledged = {**alerts[0], "status": "acknowledged", "last_ts": _later(alerts[0]["last_ts"], 5)}
    closed = {**alerts[1], "status": "closed", "last_ts": _later(alerts[1]["last_ts"], 5)}
    older = {**alerts[2], "status": "closed", "last_ts": _later(alerts[2]["last_ts"], -5)}
    changed = ingest_records(database, "history", "alerts", [acknowledged, closed, older])
    assert changed.written["alert_events"] == 2
    refire = {**alerts[1], "status": "new", "last_ts": _later(alerts[1]["last_ts"], 10)}
    assert ingest_records(database, "history", "alerts", [refire]).written["alert_events"] == 1
    with database.session() as session:
        rows = session.execute(
            select(Alert.alert_key, AlertEvent.from_status, AlertEvent.to_status, AlertEvent.by)
            .join(AlertEvent, AlertEvent.alert_id == Alert.id)
            .order_by(AlertEvent.id)
        ).all()
    history = [(r.alert_key, r.from_status, r.to_status) for r in rows]
    assert history[: len(alerts)] == [(a["id"], None, "new") for a in alerts]
    assert history[len(alerts) :] == [
        (alerts[0]["id"], "new", "acknowledged"),
        (alerts[1]["id"], "new", "closed"),
        (alerts[1]["id"], "closed", "new"),
    ]
    assert {r.by for r in rows} == {"sensor:history"}
