"""Vulnerability findings and risk from the store agree with what the sensor's assessment wrote
(``vulnerabilities.json``, ``risk.json``); "not applicable" marks change the store, reach the feed
store's marks and survive a sensor re-push; the site score is kept per day for the trend."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fieldward.console.triage_models import SiteRiskSnapshot
from fieldward.store.ingest import ingest_folder, ingest_records
from fieldward.store.models import AuditLog, Device, VulnerabilityFinding, utcnow
from fieldward.store.vulndb import VulnerabilityDatabase

from .conftest import Console, start_console

VULNS = "/api/v1/vulnerabilities"


def _findings(demo_folder: Path) -> list[dict[str, Any]]:
    findings: list[dict[str, Any]] = json.loads((demo_folder / "vulnerabilities.json").read_text())[
        "findings"
    ]
    return findings


def _risk(demo_folder: Path) -> dict[str, Any]:
    risk: dict[str, Any] = json.loads((demo_folder / "risk.json").read_text())
    return risk


@pytest.fixture(params=["sqlite", "postgresql"])
def plant(request: pytest.FixtureRequest, tmp_path: Path, demo_folder: Path) -> Iterator[Console]:
    url = (
        f"sqlite:///{tmp_path / 'c.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_factory")()
    )
    for console in start_console(url, tmp_path):
        ingest_folder(console.database, demo_folder, "sensor-1")
        yield console


def _get(console: Console, path: str, role: str = "viewer", **params: Any) -> Any:
    response = console.client.get(path, params=params, headers=console.bearer(console.tokens[role]))
    assert response.status_code == 200, response.text
    return response.json()


def test_findings_list_filters_and_detail(demo_console: Console, demo_folder: Path) -> None:
    findings = _findings(demo_folder)
    page = _get(demo_console, VULNS, limit=500)
    assert page["total"] == len(findings) > 0
    assert {(v["device_key"], v["vulnerability_id"]) for v in page["items"]} == {
        (f["device_id"], f["vulnerability_id"]) for f in findings
    }
    ranks = {"low": 1, "medium": 2, "high": 3, "critical": 4}
    assert _get(demo_console, VULNS, severity="critical")["total"] == sum(
        1 for f in findings if f["severity"] == "critical"
    )
    assert _get(demo_console, VULNS, severity="high+")["total"] == sum(
        1 for f in findings if ranks.get(f["severity"], 0) >= 3
    )
    assert _get(demo_console, VULNS, kev=True)["total"] == sum(1 for f in findings if f["kev"])
    assert _get(demo_console, VULNS, kev=False)["total"] == sum(1 for f in findings if not f["kev"])
    wanted = findings[0]["vulnerability_id"]
    found = _get(demo_console, VULNS, q=wanted[-5:])["items"]
    assert [v["vulnerability_id"] for v in found] == [wanted]
    assert _get(demo_console, VULNS, q="CVE-%")["total"] == 0
    severities = [ranks.get(v["severity"], 0) for v in page["items"]]
    assert severities == sorted(severities, reverse=True)
    detail = _get(demo_console, f"{VULNS}/{found[0]['id']}")
    assert detail["reason"] == findings[0]["reason"]
    assert detail["cvss_score"] == findings[0]["cvss"]["base_score"]
    assert (
        detail["device_id"]
        == _get(demo_console, VULNS, device_id=detail["device_id"])["items"][0]["device_id"]
    )


@pytest.mark.parametrize(
    "params",
    [{"severity": "bad"}, {"kev": "maybe"}, {"q": "\x00"}, {"sort": "cpe; DROP"}, {"device_id": -1}],
)
def test_hostile_finding_filters(console: Console, params: dict[str, Any]) -> None:
    answer = console.client.get(VULNS, params=params, headers=console.bearer(console.tokens["viewer"]))
    assert answer.status_code == 422


def test_not_applicable_marks_survive_a_sensor_re_push(plant: Console, demo_folder: Path) -> None:
    findings = _findings(demo_folder)
    target = findings[0]
    row = next(
        v
        for v in _get(plant, VULNS, limit=500)["items"]
        if v["vulnerability_id"] == target["vulnerability_id"]
    )
    headers = plant.bearer(plant.tokens["analyst"])
    url = f"{VULNS}/{row['id']}/not-applicable"
    assert plant.client.put(url, json={"reason": ""}, headers=headers).status_code == 422
    assert plant.client.put(url, json={"reason": "x", "by": "me"}, headers=headers).status_code == 422
    viewer = plant.client.put(url, json={"reason": "no"}, headers=plant.bearer(plant.tokens["viewer"]))
    assert viewer.status_code == 403
    marked = plant.client.put(url, json={"reason": "the module is not installed"}, headers=headers)
    assert marked.status_code == 200, marked.text
    assert marked.json()["not_applicable"] is True
    assert marked.json()["marked_by"] == "analyst-user"
    with plant.database.session() as session:
        finding = session.get(VulnerabilityFinding, row["id"])
        assert finding is not None
        assert (finding.not_applicable, finding.not_applicable_reason) == (
            True,
            "the module is not installed",
        )
    store = VulnerabilityDatabase(plant.database.engine.url.render_as_string(hide_password=False))
    try:
        marks = store.marks()
    finally:
        store.close()
    assert marks[(target["device_id"], target["vulnerability_id"])].reason == "the module is not installed"
    [audit] = _actions(plant, "vulnerability.mark_not_applicable")
    assert audit.details["vulnerability_id"] == target["vulnerability_id"]

    # the sensor pushes the finding again (not applicable: false): the mark still holds
    ingest_records(plant.database, "sensor-1", "vulnerabilities", findings)
    with plant.database.session() as session:
        finding = session.get(VulnerabilityFinding, row["id"])
        assert finding is not None
        assert finding.not_applicable is False
    assert _get(plant, f"{VULNS}/{row['id']}")["not_applicable"] is True
    dismissed = _get(plant, VULNS, not_applicable=True)
    assert [v["id"] for v in dismissed["items"]] == [row["id"]]
    assert _get(plant, VULNS, not_applicable=False)["total"] == len(findings) - 1
    # the plan no longer lists a fix for a dismissed finding
    plan = _get(plant, "/api/v1/risk/plan", limit=500)["items"]
    assert not any(target["vulnerability_id"] in item["references"] for item in plan)

    cleared = plant.client.delete(url, headers=headers)
    assert cleared.status_code == 200
    assert cleared.json()["not_applicable"] is False
    assert len(_actions(plant, "vulnerability.mark_applicable")) == 1
    assert _get(plant, VULNS, not_applicable=True)["total"] == 0
    plan = _get(plant, "/api/v1/risk/plan", limit=500)["items"]
    assert any(target["vulnerability_id"] in item["references"] for item in plan)


def _actions(console: Console, action: str) -> list[AuditLog]:
    with console.database.session() as session:
        rows = list(session.scalars(select(AuditLog).where(AuditLog.action == action)))
        session.expunge_all()
    return rows


def test_site_score_and_device_risks_match_the_assessment(demo_console: Console, demo_folder: Path) -> None:
    risk = _risk(demo_folder)
    site = _get(demo_console, "/api/v1/risk")
    assert site["score"] == risk["site"]["score"]
    assert site["by_priority"] == risk["site"]["by_priority"]
    assert site["devices"] == risk["site"]["devices"]
    assert [c["factor"] for c in site["contributors"]] == [c["factor"] for c in risk["site"]["contributors"]]
    devices = _get(demo_console, "/api/v1/risk/devices", limit=500)
    assert devices["total"] == len(risk["devices"])
    scores = [d["score"] for d in devices["items"]]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == max(d["score"] for d in risk["devices"])
    now = _get(demo_console, "/api/v1/risk/devices", priority="now")
    assert now["total"] == risk["site"]["by_priority"]["now"]
    assert all(d["priority"] == "now" for d in now["items"])


def test_the_plan_is_the_assessment_s_plan(demo_console: Console, demo_folder: Path) -> None:
    expected = [(r["priority"], r["device_id"], r["action"]) for r in _risk(demo_folder)["remediation"]]
    plan = _get(demo_console, "/api/v1/risk/plan", limit=500)
    assert plan["total"] == len(expected)
    assert [(p["priority"], p["device_key"], p["action"]) for p in plan["items"]] == expected
    order = {"now": 0, "next": 1, "later": 2}
    assert [order[p["priority"]] for p in plan["items"]] == sorted(
        order[p["priority"]] for p in plan["items"]
    )
    now = _get(demo_console, "/api/v1/risk/plan", priority="now")
    assert now["total"] == sum(1 for e in expected if e[0] == "now")
    second = _get(demo_console, "/api/v1/risk/plan", limit=2, offset=2)["items"]
    assert [p["action"] for p in second] == [e[2] for e in expected[2:4]]


def test_the_trend_keeps_one_point_per_day(plant: Console, demo_folder: Path) -> None:
    today = utcnow().date()
    with plant.database.session() as session:
        session.add(
            SiteRiskSnapshot(
                sensor_id=0, day=today - dt.timedelta(days=3), score=12, devices=3, by_priority={}
            )
        )
    trend = _get(plant, "/api/v1/risk/trend", days=30)
    assert [(p["day"], p["score"]) for p in trend["points"]] == [
        ((today - dt.timedelta(days=3)).isoformat(), 12),
        (today.isoformat(), _risk(demo_folder)["site"]["score"]),
    ]
    assert _get(plant, "/api/v1/risk/trend", days=1)["points"][0]["day"] == today.isoformat()
    # the score changes (a device's risk drops): today's point follows, no second point
    with plant.database.session() as session:
        worst = session.scalars(select(Device).order_by(Device.risk_score.desc().nulls_last())).first()
        assert worst is not None
        key = worst.device_key
    ingest_records(
        plant.database,
        "sensor-1",
        "risk",
        [
            {**r, "score": 0, "priority": "later"}
            for r in _risk(demo_folder)["devices"]
            if r["device_id"] == key
        ],
    )
    after = _get(plant, "/api/v1/risk/trend", days=30)["points"]
    assert len(after) == 2
    assert after[-1]["score"] < _risk(demo_folder)["site"]["score"]
    with plant.database.session() as session:
        rows = list(session.scalars(select(SiteRiskSnapshot).where(SiteRiskSnapshot.day == today)))
    assert len(rows) == 1
    assert rows[0].score == after[-1]["score"]
    assert _get(plant, "/api/v1/risk", sensor_id=9999)["devices"] == 0
