"""The inventory and map API on the demo plant (``fieldward demo`` ingested), on SQLite and
PostgreSQL: filters, search, every sort column both ways, paging, the device page, importance,
the map graph, a bounded number of SQL statements, and hostile parameters answered with 4xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy import event, select

from fieldward.console.api.routes.devices import SORTS
from fieldward.store.models import AuditLog, Sensor

from .conftest import Console

DEVICES = "/api/v1/devices"


def _records(demo_folder: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads((demo_folder / "devices.json").read_text())["devices"]
    return records


def _get(console: Console, url: str, role: str = "viewer", **params: Any) -> Any:
    response = console.client.get(url, params=params, headers=console.bearer(console.tokens[role]))
    assert response.status_code == 200, (url, params, response.text)
    return response.json()


def _all(console: Console, **params: Any) -> list[dict[str, Any]]:
    page = _get(console, DEVICES, limit=500, **params)
    assert page["total"] == len(page["items"])
    items: list[dict[str, Any]] = page["items"]
    return items


def _by_key(console: Console) -> dict[str, dict[str, Any]]:
    return {d["device_key"]: d for d in _all(console)}


def test_the_list_holds_every_device_with_its_fields(demo_console: Console, demo_folder: Path) -> None:
    records = _records(demo_folder)
    page = _get(demo_console, DEVICES)
    assert page["total"] == len(records)
    assert page["limit"] == 50
    assert page["offset"] == 0
    listed = {d["device_key"]: d for d in page["items"]}
    for record in records:
        row = listed[record["id"]]
        assert row["mac"] == record["mac"]
        assert row["ips"] == record["ips"]
        assert row["vendor"] == record["vendor"]
        assert row["device_type"] == record["device_type"]
        assert row["purdue_level"] == record["purdue_level"]
        assert row["label"] == (record["hostname"] or (record["ips"] or [None])[0] or record["mac"])


@pytest.mark.parametrize(
    ("param", "field"), [("type", "device_type"), ("vendor", "vendor"), ("level", "purdue_level")]
)
def test_filters_match_the_inventory(
    demo_console: Console, demo_folder: Path, param: str, field: str
) -> None:
    records = _records(demo_folder)
    values = {r[field] for r in records if r[field] is not None}
    assert len(values) >= 3
    for value in values:
        expected = {r["id"] for r in records if r[field] == value}
        got = _all(demo_console, **{param: value})
        assert {d["device_key"] for d in got} == expected, value


def test_filter_by_sensor(demo_console: Console, demo_folder: Path) -> None:
    with demo_console.database.session() as session:
        plant = session.scalar(select(Sensor.id).where(Sensor.name == "plant"))
        other = session.scalar(select(Sensor.id).where(Sensor.name == "sensor-1"))
    assert len(_all(demo_console, sensor=plant)) == len(_records(demo_folder))
    assert _all(demo_console, sensor=other) == []


@pytest.mark.parametrize(
    "term", ["10.10.1.1", "00:1B:1B", "PLC-", "mgate", "siemens", "%", "_", "\\", "ü😀", "' OR 1=1 --"]
)
def test_search_is_a_literal_case_insensitive_substring(
    demo_console: Console, demo_folder: Path, term: str
) -> None:
    needle = term.casefold()

    def hit(record: dict[str, Any]) -> bool:
        fields = [*record["ips"], record["mac"], record["hostname"], record["model"], record["vendor"]]
        return any(needle in str(f).casefold() for f in fields if f)

    expected = {r["id"] for r in _records(demo_folder) if hit(r)}
    got = {d["device_key"] for d in _all(demo_console, search=term)}
    assert got == expected


@pytest.mark.parametrize("column", sorted(SORTS))
def test_every_sort_column_both_ways_nulls_last(demo_console: Console, column: str) -> None:
    for order in ("asc", "desc"):
        items = _all(demo_console, sort=column, order=order)
        values = [d[column] if column in d else d["id"] for d in items]
        present = [v for v in values if v is not None]
        assert values[: len(present)] == present, f"{column} {order}: nulls not last"
        if column == "importance":
            continue  # all null on the demo
        assert present == sorted(present, reverse=order == "desc"), f"{column} {order}"


def test_paging_walks_every_device_once_in_order(demo_console: Console, demo_folder: Path) -> None:
    total = len(_records(demo_folder))
    seen: list[int] = []
    for offset in range(0, total + 5, 5):
        page = _get(demo_console, DEVICES, limit=5, offset=offset, sort="last_seen", order="desc")
        assert page["total"] == total
        assert page["offset"] == offset
        seen.extend(d["id"] for d in page["items"])
    assert seen == [d["id"] for d in _all(demo_console, sort="last_seen", order="desc")]
    assert len(set(seen)) == total


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 501},
        {"limit": 0},
        {"offset": -1},
        {"offset": 2**80},
        {"sort": "password_hash"},
        {"sort": "id; DROP TABLE devices"},
        {"order": "sideways"},
        {"level": "abc"},
        {"level": 9},
        {"sensor": 2**70},
        {"search": "x" * 10_000},
        {"search": "a\x00b"},
        {"type": "\x00"},
    ],
)
def test_hostile_list_parameters_are_422(demo_console: Console, params: dict[str, Any]) -> None:
    response = demo_console.client.get(
        DEVICES, params=params, headers=demo_console.bearer(demo_console.tokens["viewer"])
    )
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("device_id", ["0", "-1", str(2**70), "abc", "1e3", "%00"])
def test_hostile_device_ids_are_4xx(demo_console: Console, device_id: str) -> None:
    response = demo_console.client.get(
        f"{DEVICES}/{device_id}", headers=demo_console.bearer(demo_console.tokens["viewer"])
    )
    assert 400 <= response.status_code < 500


def test_unknown_device_is_404(demo_console: Console) -> None:
    response = demo_console.client.get(
        f"{DEVICES}/{2**62}", headers=demo_console.bearer(demo_console.tokens["viewer"])
    )
    assert response.status_code == 404


def _edges(demo_folder: Path, key: str) -> tuple[int, int]:
    table = pq.read_table(
        demo_folder / "communications.parquet", columns=["src_device", "dst_device"]
    ).to_pylist()
    return sum(r["src_device"] == key for r in table), sum(r["dst_device"] == key for r in table)


def test_the_device_page(demo_console: Console, demo_folder: Path) -> None:
    devices = _by_key(demo_console)
    s7 = next(d for d in devices.values() if d["hostname"] == "plc-s7-01")
    detail = _get(demo_console, f"{DEVICES}/{s7['id']}")
    record = next(r for r in _records(demo_folder) if r["id"] == s7["device_key"])
    assert {a["name"] for a in detail["attributes"]} == set(record["attributes"])
    assert any(a["evidence"] for a in detail["attributes"])
    outgoing, incoming = _edges(demo_folder, s7["device_key"])
    assert detail["communications_total"] == outgoing + incoming
    assert incoming > 0
    assert outgoing > 0
    directions = {c["direction"] for c in detail["communications"]}
    assert directions == {"in", "out"}
    assert all(c["peer_label"] for c in detail["communications"])
    assert detail["risk"] is not None
    assert detail["risk"]["score"] == detail["risk_score"]
    assert any(a["type"] == "protocol.s7.plc_stop" or "stop" in a["title"].lower() for a in detail["alerts"])
    assert detail["alerts_total"] == len(detail["alerts"]) > 0
    logix = next(d for d in devices.values() if d["hostname"] == "plc-logix-01")
    vulnerabilities = _get(demo_console, f"{DEVICES}/{logix['id']}")["vulnerabilities"]
    assert "CVE-2022-1161" in {v["vulnerability_id"] for v in vulnerabilities}
    mqtt = next(d for d in devices.values() if d["hostname"] == "mqtt")
    checks = {c["check"] for c in _get(demo_console, f"{DEVICES}/{mqtt['id']}")["configurations"]}
    assert any("mqtt" in check for check in checks)


@contextmanager
def _statements(console: Console) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    engine = console.database.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_queries_do_not_grow_with_the_rows(demo_console: Console) -> None:
    devices = sorted(_all(demo_console), key=lambda d: d["packets"])
    counts = []
    for device in (devices[0], devices[-1]):  # the quietest and the busiest device
        with _statements(demo_console) as seen:
            _get(demo_console, f"{DEVICES}/{device['id']}")
        counts.append(len([s for s in seen if "api_tokens" not in s]))
    assert counts[0] == counts[1] <= 12
    demo_console.app.state.response_cache.clear()  # the page's SQL, not a cached answer
    with _statements(demo_console) as seen:
        _get(demo_console, DEVICES, limit=500)
    listing = [s for s in seen if "api_tokens" not in s]
    assert len(listing) == 2
    assert any("count(" in s.lower() for s in listing)


def test_analysts_set_importance_viewers_cannot(demo_console: Console) -> None:
    device = _all(demo_console)[0]
    url = f"{DEVICES}/{device['id']}"
    viewer = demo_console.client.patch(
        url, json={"importance": "critical"}, headers=demo_console.bearer(demo_console.tokens["viewer"])
    )
    assert viewer.status_code == 403
    analyst = demo_console.bearer(demo_console.tokens["analyst"])
    assert demo_console.client.patch(url, json={"importance": "extreme"}, headers=analyst).status_code == 422
    changed = demo_console.client.patch(url, json={"importance": "critical"}, headers=analyst)
    assert changed.status_code == 200
    assert changed.json()["importance"] == "critical"
    assert next(d["id"] for d in _all(demo_console, sort="importance", order="desc")) == device["id"]
    with demo_console.database.session() as session:
        row = session.scalars(select(AuditLog).where(AuditLog.action == "device.importance")).first()
    assert row is not None
    assert row.actor == "analyst-user"
    assert row.details["after"] == "critical"
    cleared = demo_console.client.patch(url, json={"importance": None}, headers=analyst)
    assert cleared.status_code == 200
    assert cleared.json()["importance"] is None


def test_the_map(demo_console: Console, demo_folder: Path) -> None:
    graph = _get(demo_console, "/api/v1/map")
    records = _records(demo_folder)
    assert len(graph["nodes"]) == len(records)
    assert graph["truncated"] is False
    ids = {n["id"] for n in graph["nodes"]}
    assert graph["edges"]
    assert all(e["source"] in ids and e["target"] in ids for e in graph["edges"])
    pairs = [(e["source"], e["target"]) for e in graph["edges"]]
    assert len(pairs) == len(set(pairs))
    # packets of a pair are the sum of its edges in communications.parquet
    keys = {d["id"]: d["device_key"] for d in _all(demo_console)}
    table = pq.read_table(demo_folder / "communications.parquet").to_pylist()
    busiest = max(graph["edges"], key=lambda e: e["packets"])
    expected = sum(
        r["src_packets"] + r["dst_packets"]
        for r in table
        if r["src_device"] == keys[busiest["source"]] and r["dst_device"] == keys[busiest["target"]]
    )
    assert busiest["packets"] == expected
    s7 = _get(demo_console, "/api/v1/map", protocol="s7comm")
    assert s7["edges"]
    assert all("s7comm" in e["protocols"] for e in s7["edges"])
    assert {n["id"] for n in s7["nodes"]} == {e["source"] for e in s7["edges"]} | {
        e["target"] for e in s7["edges"]
    }
    level1 = _get(demo_console, "/api/v1/map", level_min=1, level_max=1)
    assert level1["nodes"]
    assert all(n["level"] == 1 for n in level1["nodes"])
    small = _get(demo_console, "/api/v1/map", limit=3)
    assert len(small["nodes"]) == 3
    assert small["truncated"] is True
    riskiest = sorted((n["risk"] or -1 for n in graph["nodes"]), reverse=True)[:3]
    assert sorted((n["risk"] or -1 for n in small["nodes"]), reverse=True) == riskiest
    for bad in ({"limit": 0}, {"limit": 10**6}, {"level_min": -1}, {"protocol": "x" * 100}):
        response = demo_console.client.get(
            "/api/v1/map", params=bad, headers=demo_console.bearer(demo_console.tokens["viewer"])
        )
        assert response.status_code == 422
