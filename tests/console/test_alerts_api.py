"""The alert queue API on the demo plant: filters agree with ``alerts.jsonl``, every triage action
changes the store and writes its status history and audit row, learned/muted rules reach the sensor as
a baseline document ``fieldward analyze --baseline`` reads, and evidence captures round-trip."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from fieldward.console.api.routes.alerts import COUNT_CAP, PCAP_MEDIA_TYPE
from fieldward.console.triage_models import AlertRuleRow
from fieldward.detect.knowledge import Knowledge
from fieldward.store.ingest import ingest_folder
from fieldward.store.models import SEVERITY_RANK, Alert, AlertComment, AlertEvent, AuditLog, Sensor

from .conftest import Console, start_console

API = "/api/v1/alerts"


def _records(demo_folder: Path) -> list[dict[str, Any]]:
    lines = (demo_folder / "alerts.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(params=["sqlite", "postgresql"])
def plant(request: pytest.FixtureRequest, tmp_path: Path, demo_folder: Path) -> Iterator[Console]:
    """A fresh console per test with the demo plant ingested as ``sensor-1`` (whose push credential
    the console fixture holds, so evidence can be uploaded)."""
    url = (
        f"sqlite:///{tmp_path / 'c.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_factory")()
    )
    for console in start_console(url, tmp_path):
        ingest_folder(console.database, demo_folder, "sensor-1")
        yield console


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_plant(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, demo_folder: Path
) -> Iterator[Console]:
    """Like ``plant``, shared by the tests of this module that change nothing."""
    tmp = tmp_path_factory.mktemp("alerts")
    url = (
        f"sqlite:///{tmp / 'c.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_factory")()
    )
    for console in start_console(url, tmp):
        ingest_folder(console.database, demo_folder, "sensor-1")
        yield console


def _id(console: Console, alert_key: str) -> int:
    with console.database.session() as session:
        alert_id = session.scalar(select(Alert.id).where(Alert.alert_key == alert_key))
    assert alert_id is not None
    return int(alert_id)


def _get(console: Console, path: str, role: str = "viewer", **params: Any) -> Any:
    response = console.client.get(path, params=params, headers=console.bearer(console.tokens[role]))
    assert response.status_code == 200, response.text
    return response.json()


def _post(console: Console, path: str, body: Any = None, role: str = "analyst") -> Any:
    return console.client.post(path, json=body, headers=console.bearer(console.tokens[role]))


def _audit(console: Console, action: str) -> list[AuditLog]:
    with console.database.session() as session:
        rows = list(session.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))
        session.expunge_all()
    return rows


def test_filters_agree_with_the_sensor_s_alerts(shared_plant: Console, demo_folder: Path) -> None:
    records = _records(demo_folder)
    page = _get(shared_plant, API, limit=500)
    assert page["total"] == len(records)
    assert not page["total_capped"]
    assert {a["alert_key"] for a in page["items"]} == {r["id"] for r in records}
    worse = [r for r in records if SEVERITY_RANK[r["severity"]] >= SEVERITY_RANK["high"]]
    high = _get(shared_plant, API, severity="high+")
    assert high["total"] == len(worse) > 0
    assert {a["alert_key"] for a in high["items"]} == {r["id"] for r in worse}
    exact = _get(shared_plant, API, severity="medium")
    assert exact["total"] == sum(1 for r in records if r["severity"] == "medium")
    engine = records[0]["engine"]
    assert _get(shared_plant, API, engine=engine)["total"] == sum(1 for r in records if r["engine"] == engine)
    kind = records[0]["type"]
    assert _get(shared_plant, API, type=kind)["total"] == sum(1 for r in records if r["type"] == kind)
    needle = records[0]["dst"]
    matching = {r["id"] for r in records if needle in (r["src"], r["dst"]) or needle in r["title"]}
    assert {a["alert_key"] for a in _get(shared_plant, API, q=needle, limit=500)["items"]} == matching
    # a device's alerts: it is the source or the destination
    with shared_plant.database.session() as session:
        device_id = session.scalar(select(Alert.src_device_id).where(Alert.alert_key == records[0]["id"]))
    involving = _get(shared_plant, API, device_id=device_id, limit=500)
    assert involving["total"] >= 1
    assert all(device_id in (a["src_device_id"], a["dst_device_id"]) for a in involving["items"])
    # the time range is on the last timestamp
    stamps = sorted(dt.datetime.fromisoformat(r["last_ts"][:26].replace("Z", "")) for r in records)
    middle = stamps[len(stamps) // 2].replace(tzinfo=dt.UTC)
    after = _get(shared_plant, API, since=middle.isoformat(), limit=500)
    before = _get(shared_plant, API, until=middle.isoformat(), limit=500)
    assert after["total"] + before["total"] == len(records)
    assert after["total"] > 0
    assert before["total"] > 0
    assert _get(shared_plant, API, status="open")["total"] == len(records)
    assert _get(shared_plant, API, status="closed")["total"] == 0


def test_sorting_and_paging(shared_plant: Console) -> None:
    by_severity = _get(shared_plant, API, sort="severity", order="desc", limit=500)["items"]
    ranks = [SEVERITY_RANK[a["severity"]] for a in by_severity]
    assert ranks == sorted(ranks, reverse=True)
    assert ranks[0] > ranks[-1]
    first = _get(shared_plant, API, limit=5, offset=0)["items"]
    second = _get(shared_plant, API, limit=5, offset=5)["items"]
    assert len(first) == 5
    assert len(second) == 5
    assert not {a["id"] for a in first} & {a["id"] for a in second}
    newest = _get(shared_plant, API, sort="last_ts", order="desc", limit=500)["items"]
    stamps = [a["last_ts"] for a in newest]
    assert stamps == sorted(stamps, reverse=True)


@pytest.mark.parametrize(
    "params",
    [
        {"severity": "urgent"},
        {"status": "open; DROP TABLE alerts"},
        {"sort": "title; --"},
        {"order": "sideways"},
        {"limit": 0},
        {"limit": 100_000},
        {"offset": -1},
        {"since": "yesterday"},
        {"device_id": 2**70},
        {"q": "x\x00y"},
        {"q": "x" * 500},
        {"since": "2026-02-30T00:00:00Z"},
        {"until": "2026-01-01"},
        {"until": "0.5"},
    ],
)
def test_hostile_list_parameters_are_a_422(console: Console, params: dict[str, Any]) -> None:
    response = console.client.get(API, params=params, headers=console.bearer(console.tokens["viewer"]))
    assert response.status_code == 422, response.text


def test_rfc_3339_times_of_every_shape_are_answered(shared_plant: Console) -> None:
    everything = _get(shared_plant, API)["total"]
    for since in ("2000-01-01T00:00:00Z", "2000-01-01t00:00:00.123456789z", "1999-12-31T23:59:60+14:00"):
        assert _get(shared_plant, API, since=since)["total"] == everything
    assert _get(shared_plant, API, since="9999-12-31T23:59:59-23:59")["total"] == 0
    assert _get(shared_plant, API, until="0000-01-01T00:00:00+23:59")["total"] == 0


def test_like_wildcards_in_the_search_are_literal(shared_plant: Console) -> None:
    assert _get(shared_plant, API, q="%")["total"] == 0
    assert _get(shared_plant, API, q="10_10")["total"] == 0
    assert _get(shared_plant, API, q="10.10")["total"] > 0
    assert _get(shared_plant, API, q="10.10.1.%")["total"] == 0


def test_the_count_stops_at_the_cap(console: Console) -> None:
    with console.database.session() as session:
        sensor_id = session.scalar(select(Sensor.id).where(Sensor.name == "sensor-1"))
        now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        rows = [
            {
                "sensor_id": sensor_id,
                "alert_key": f"k{i}",
                "engine": "test",
                "type": "test.flood",
                "severity": "low",
                "severity_rank": 1,
                "status": "new",
                "last_ts": now + dt.timedelta(seconds=i),
                "count": 1,
                "title": "flood",
                "description": "",
                "explanation": "",
                "recommendation": "",
                "mitre": [],
                "evidence": [],
                "details": {},
            }
            for i in range(COUNT_CAP + 5)
        ]
        session.execute(insert(Alert), rows)
    page = _get(console, API, limit=3, sort="last_ts", order="asc")
    assert page["total"] == COUNT_CAP
    assert page["total_capped"] is True
    assert [a["alert_key"] for a in page["items"]] == ["k0", "k1", "k2"]
    narrow = _get(console, API, q="nothing like this")
    assert narrow["total"] == 0
    assert narrow["total_capped"] is False


def test_triage_changes_the_store_and_writes_history_and_audit(plant: Console, demo_folder: Path) -> None:
    record = _records(demo_folder)[0]
    alert_id = _id(plant, record["id"])
    acknowledged = _post(plant, f"{API}/{alert_id}/acknowledge", {"note": "on it"})
    assert acknowledged.status_code == 200, acknowledged.text
    assert acknowledged.json()["status"] == "acknowledged"
    assert _post(plant, f"{API}/{alert_id}/acknowledge").status_code == 409
    closed = _post(plant, f"{API}/{alert_id}/close")
    assert closed.status_code == 200
    assert closed.json()["status"] == "closed"
    assert _post(plant, f"{API}/{alert_id}/close").status_code == 409
    reopened = _post(plant, f"{API}/{alert_id}/reopen", {"note": "it came back"})
    assert reopened.json()["status"] == "new"
    comment = _post(
        plant, f"{API}/{alert_id}/comments", {"text": "<script>alert(1)</script> checked the PLC"}
    )
    assert comment.status_code == 201, comment.text
    with plant.database.session() as session:
        alert = session.get(Alert, alert_id)
        assert alert is not None
        assert alert.status == "new"
        events = list(
            session.scalars(select(AlertEvent).where(AlertEvent.alert_id == alert_id).order_by(AlertEvent.id))
        )
        comments = list(session.scalars(select(AlertComment).where(AlertComment.alert_id == alert_id)))
        changes = [(e.from_status, e.to_status, e.by) for e in events]
        texts = [c.text for c in comments]
    assert changes == [
        (None, "new", "sensor:sensor-1"),
        ("new", "acknowledged", "analyst-user"),
        ("acknowledged", "closed", "analyst-user"),
        ("closed", "new", "analyst-user"),
    ]
    assert texts == ["<script>alert(1)</script> checked the PLC"]
    actions = [(row.action, row.details.get("after")) for row in _audit(plant, "alert.acknowledge")]
    actions += [(row.action, row.details.get("after")) for row in _audit(plant, "alert.close")]
    actions += [(row.action, row.details.get("after")) for row in _audit(plant, "alert.reopen")]
    assert actions == [
        ("alert.acknowledge", "acknowledged"),
        ("alert.close", "closed"),
        ("alert.reopen", "new"),
    ]
    assert [r.target for r in _audit(plant, "alert.comment")] == [f"alert:{alert_id}"]
    detail = _get(plant, f"{API}/{alert_id}")
    assert [e["to_status"] for e in detail["events"]] == ["new", "acknowledged", "closed", "new"]
    assert detail["events"][1]["note"] == "on it"
    assert detail["comments"][0]["author"] == "analyst-user"
    assert detail["explanation"] == record["explanation"]
    assert detail["mitre"] == record["mitre"]


def test_a_viewer_cannot_triage_and_nothing_changes(shared_plant: Console, demo_folder: Path) -> None:
    alert_id = _id(shared_plant, _records(demo_folder)[0]["id"])
    for action in ("acknowledge", "close", "learn", "mute"):
        assert _post(shared_plant, f"{API}/{alert_id}/{action}", role="viewer").status_code == 403
    with shared_plant.database.session() as session:
        assert session.scalar(select(Alert.status).where(Alert.id == alert_id)) == "new"
        assert session.scalar(select(func.count()).select_from(AlertRuleRow)) == 0


def test_hostile_triage_bodies(shared_plant: Console, demo_folder: Path) -> None:
    alert_id = _id(shared_plant, _records(demo_folder)[0]["id"])
    assert _post(shared_plant, f"{API}/{alert_id}/comments", {"text": ""}).status_code == 422
    assert _post(shared_plant, f"{API}/{alert_id}/comments", {"text": "a\x00b"}).status_code == 422
    assert _post(shared_plant, f"{API}/{alert_id}/comments", {"text": "x" * 10_001}).status_code == 422
    assert (
        _post(shared_plant, f"{API}/{alert_id}/acknowledge", {"note": "x", "status": "closed"}).status_code
        == 422
    )
    assert _post(shared_plant, f"{API}/{alert_id}/mute", {"any_source": "yes please"}).status_code == 422
    assert _post(shared_plant, f"{API}/{alert_id}/mute", {"any_source": 1}).status_code == 422
    assert _post(shared_plant, f"{API}/{2**62}/acknowledge").status_code == 404
    assert _post(shared_plant, f"{API}/0/acknowledge").status_code == 422
    assert _post(shared_plant, f"{API}/..%2F..%2Fetc/acknowledge").status_code in (404, 405, 422)


def test_learn_and_mute_reach_the_sensor_as_a_baseline(plant: Console, demo_folder: Path) -> None:
    records = _records(demo_folder)
    learned = next(r for r in records if r["details"].get("behaviours"))
    muted = next(r for r in records if r["type"] != learned["type"])
    learn = _post(plant, f"{API}/{_id(plant, learned['id'])}/learn", {"note": "planned change"})
    assert learn.status_code == 200, learn.text
    assert (learn.json()["kind"], learn.json()["src"], learn.json()["dst"]) == (
        "learned",
        learned["src"],
        learned["dst"],
    )
    mute = _post(plant, f"{API}/{_id(plant, muted['id'])}/mute", {"any_source": True})
    assert mute.status_code == 200
    assert mute.json()["src"] == "*"
    with plant.database.session() as session:
        statuses = dict(
            session.execute(
                select(Alert.alert_key, Alert.status).where(Alert.alert_key.in_([learned["id"], muted["id"]]))
            ).all()
        )
    assert statuses == {learned["id"]: "closed", muted["id"]: "closed"}
    assert len(_audit(plant, "alert.learn")) == 1
    assert len(_audit(plant, "alert.mute")) == 1
    # learning the same alert again refreshes the rule instead of adding one
    assert _post(plant, f"{API}/{_id(plant, learned['id'])}/learn").status_code == 200
    rules_page = _get(plant, f"{API}/rules")
    assert rules_page["total"] == 2
    assert {r["kind"] for r in rules_page["items"]} == {"learned", "muted"}
    assert _get(plant, f"{API}/rules", kind="muted")["items"][0]["src"] == "*"

    rules = plant.client.get("/api/v1/sensors/me/rules", headers=plant.bearer(plant.sensor_token))
    assert rules.status_code == 200, rules.text
    knowledge = Knowledge.from_json(rules.json())  # what `fieldward analyze --baseline` loads
    assert knowledge.is_learned(learned["type"], learned["src"], learned["dst"])
    assert not knowledge.is_learned(learned["type"], "192.0.2.1", learned["dst"])
    assert knowledge.is_muted(muted["type"], "192.0.2.1", muted["dst"])
    category, *key = learned["details"]["behaviours"][0]
    assert knowledge.knows(category, tuple(key))
    # the rules belong to the sensor that raised the alerts: another sensor gets none
    other = plant.sensor("sensor-2")
    empty = Knowledge.from_json(
        plant.client.get("/api/v1/sensors/me/rules", headers=plant.bearer(other)).json()
    )
    assert not empty.learned
    assert not empty.mutes
    # a user credential is no sensor credential
    refused = plant.client.get("/api/v1/sensors/me/rules", headers=plant.bearer(plant.tokens["admin"]))
    assert refused.status_code == 401

    rule_id = mute.json()["id"]
    deleted = plant.client.delete(f"{API}/rules/{rule_id}", headers=plant.bearer(plant.tokens["analyst"]))
    assert deleted.status_code == 200
    assert [r.target for r in _audit(plant, "alert.rule_delete")] == [f"rule:{rule_id}"]
    after = Knowledge.from_json(
        plant.client.get("/api/v1/sensors/me/rules", headers=plant.bearer(plant.sensor_token)).json()
    )
    assert not after.mutes
    assert after.learned


def test_evidence_round_trip(plant: Console, demo_folder: Path) -> None:
    record = next(r for r in _records(demo_folder) if r.get("evidence_pcap"))
    capture = (demo_folder / record["evidence_pcap"]).read_bytes()
    alert_id = _id(plant, record["id"])
    assert _get(plant, f"{API}/{alert_id}")["has_evidence"] is False
    missing = plant.client.get(f"{API}/{alert_id}/evidence", headers=plant.bearer(plant.tokens["viewer"]))
    assert missing.status_code == 404
    uploaded = plant.client.post(
        f"/api/v1/ingest/evidence/{alert_id}",
        content=capture,
        headers={**plant.bearer(plant.sensor_token), "Content-Type": PCAP_MEDIA_TYPE},
    )
    assert uploaded.status_code == 200, uploaded.text
    assert _get(plant, f"{API}/{alert_id}")["has_evidence"] is True
    response = plant.client.get(f"{API}/{alert_id}/evidence", headers=plant.bearer(plant.tokens["viewer"]))
    assert response.status_code == 200
    assert response.content == capture
    assert response.headers["content-type"] == PCAP_MEDIA_TYPE
    assert (
        response.headers["content-disposition"] == f'attachment; filename="fieldward-alert-{alert_id}.pcap"'
    )
    info = plant.client.get(
        f"{API}/{alert_id}/evidence",
        headers={**plant.bearer(plant.tokens["viewer"]), "Accept": "application/json"},
    )
    assert info.json() == {
        "alert_id": alert_id,
        "filename": f"fieldward-alert-{alert_id}.pcap",
        "bytes": len(capture),
        "sha256": hashlib.sha256(capture).hexdigest(),
    }
    # an alert of the same sensor without an upload has none, whatever its stored path says
    other = next(r for r in _records(demo_folder) if r["id"] != record["id"])
    with plant.database.session() as session:
        row = session.get(Alert, _id(plant, other["id"]))
        assert row is not None
        row.evidence_pcap = "../../../../etc/passwd"
    answer = plant.client.get(f"{API}/{row.id}/evidence", headers=plant.bearer(plant.tokens["viewer"]))
    assert answer.status_code == 404
