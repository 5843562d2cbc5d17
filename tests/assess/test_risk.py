"""The risk model: monotonicity, saturation, explanations, priority, site score, remediation, importance."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldward.assess.importance import Importance, ImportanceError, load_importance, set_importance
from fieldward.assess.model import ConfigFinding, CvssScore, Finding, Priority, Severity
from fieldward.assess.risk import (
    RiskSettings,
    Tier,
    load_alerts,
    remediation_plan,
    score_devices,
    score_site,
)
from fieldward.errors import ConfigError
from fieldward.weird import WeirdLog

NETWORK = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
LOCAL = "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H"


def device(device_id: str, device_type: str = "plc", level: int | None = 1, **extra: Any) -> dict[str, Any]:
    return {
        "id": device_id,
        "ips": [f"10.0.0.{len(device_id)}"],
        "hostname": device_id,
        "device_type": device_type,
        "purdue_level": level,
        "firmware": "V2.9.4",
        **extra,
    }


def cve(
    device_id: str,
    cve_id: str,
    score: float,
    *,
    kev: bool = False,
    vector: str = NETWORK,
    confidence: float = 1.0,
    remediation: str | None = None,
    criteria: str = "< V3.0.1",
    not_applicable: bool = False,
    ransomware: bool = False,
) -> Finding:
    return Finding(
        device_id=device_id,
        vulnerability_id=cve_id,
        cpe="cpe:2.3:o:siemens:x:2.9.4:*:*:*:*:*:*:*",
        criteria=criteria,
        reason="firmware V2.9.4 is below 3.0.1",
        confidence=confidence,
        sources=("nvd",),
        severity=Severity.from_score(score),
        cvss=CvssScore("3.1", vector, score, Severity.from_score(score)),
        kev=kev,
        known_ransomware=ransomware,
        remediation=remediation,
        not_applicable=not_applicable,
    )


def config(
    device_id: str, check: str, severity: Severity = Severity.HIGH, port: int | None = 23
) -> ConfigFinding:
    return ConfigFinding(
        check, device_id, check.replace(".", " "), severity, "explained", "recommended", None, port
    )


def alert(
    alert_id: str, src: str | None, dst: str | None, severity: str, status: str = "new"
) -> dict[str, Any]:
    return {
        "id": alert_id,
        "type": "t.x",
        "title": f"alert {alert_id}",
        "severity": severity,
        "status": status,
        "src_device": src,
        "dst_device": dst,
        "count": 1,
    }


def one(
    devices: list[dict[str, Any]],
    findings: list[Finding] = (),
    configs: list[ConfigFinding] = (),  # type: ignore[assignment]
    alerts: list[Mapping[str, Any]] = (),
    importance: Mapping[str, str] | None = None,
    target: str = "plc1",
):  # type: ignore[assignment]
    risks = score_devices(devices, findings, configs, alerts, importance)
    return next(r for r in risks if r.device_id == target)


PLC = device("plc1")


# ---------------------------------------------------------------- monotonicity and saturation


def test_kev_on_plc_dominates_many_low_findings() -> None:
    lows = [cve("plc1", f"CVE-2020-{i:04d}", 3.1) for i in range(200)]
    mediums = [cve("plc1", f"CVE-2021-{i:04d}", 5.0) for i in range(50)]
    many = one([PLC], lows + mediums)
    kev = one([PLC], [cve("plc1", "CVE-2022-38465", 9.3, kev=True)])
    assert many.score < kev.score
    assert many.score <= 30  # saturation: 250 weak findings stay weak
    assert many.score > 0


def test_adding_a_kev_never_lowers_the_score() -> None:
    base = [cve("plc1", "CVE-2021-1", 7.5)]
    before = one([PLC], base)
    after = one([PLC], [*base, cve("plc1", "CVE-2022-2", 9.8, kev=True)])
    assert after.score > before.score
    assert after.exploitability > before.exploitability


def test_closing_an_alert_never_raises_the_score() -> None:
    open_ = one([PLC], alerts=[alert("a1", "x", "plc1", "critical")])
    closed = one([PLC], alerts=[alert("a1", "x", "plc1", "critical", status="closed")])
    learned = one([PLC], alerts=[alert("a1", "x", "plc1", "critical", status="learned")])
    assert closed.score < open_.score
    assert learned.score == closed.score == 0
    assert open_.behaviour > 0
    assert closed.behaviour == 0


def test_importance_critical_at_least_normal_and_low_below() -> None:
    findings = [cve("cam", "CVE-1", 8.0)]
    cam = [device("cam", "ip_camera", 4)]
    scores = {
        level: one(cam, findings, importance={"cam": level}, target="cam").score for level in Importance
    }
    assert scores[Importance.CRITICAL] > scores[Importance.NORMAL] > scores[Importance.LOW]
    assert scores[Importance.HIGH] >= scores[Importance.NORMAL]


def test_not_applicable_findings_are_ignored() -> None:
    real = one([PLC], [cve("plc1", "CVE-1", 6.0)])
    with_dismissed = one(
        [PLC], [cve("plc1", "CVE-1", 6.0), cve("plc1", "CVE-2", 9.8, kev=True, not_applicable=True)]
    )
    assert with_dismissed == real


def test_confidence_weights_a_finding() -> None:
    sure = one([PLC], [cve("plc1", "CVE-1", 9.8)])
    unsure = one([PLC], [cve("plc1", "CVE-1", 9.8, confidence=0.3)])
    assert unsure.score < sure.score


def test_network_vector_weighs_more_than_local() -> None:
    network = one([PLC], [cve("plc1", "CVE-1", 9.8)])
    local = one([PLC], [cve("plc1", "CVE-1", 9.8, vector=LOCAL)])
    assert local.score < network.score


def test_exposure_raises_the_score_and_criticality_orders_devices() -> None:
    plain = one([PLC], [cve("plc1", "CVE-1", 8.0)])
    exposed = one([PLC], [cve("plc1", "CVE-1", 8.0)], [config("plc1", "exposure.ot_from_internet", port=102)])
    assert exposed.exposure > 0.9
    assert exposed.score > plain.score
    printer = one([device("p", "printer", 4)], [cve("p", "CVE-1", 8.0)], target="p")
    assert printer.score < plain.score


def test_score_is_zero_without_weaknesses() -> None:
    risk = one([PLC])
    assert risk.score == 0
    assert risk.priority is Priority.LATER
    assert risk.contributors == ()


# ---------------------------------------------------------------- explanations


def test_contributors_name_the_top_reason_and_add_up() -> None:
    risk = one([PLC], [cve("plc1", "CVE-2022-38465", 9.3, kev=True), cve("plc1", "CVE-2019-1", 4.0)])
    top = risk.contributors[0]
    assert top.reference == "CVE-2022-38465"
    assert top.factor == "exploitability"
    assert "KEV" in top.detail
    assert abs(sum(c.points for c in risk.contributors) - risk.score) <= 1.0
    assert risk.contributors == tuple(sorted(risk.contributors, key=lambda c: -c.points))
    assert any(c.factor == "criticality" and "plc" in c.detail for c in risk.contributors)


def test_alert_counts_on_both_ends() -> None:
    devices = [PLC, device("laptop", "unknown", None)]
    risks = {r.device_id: r for r in score_devices(devices, [], [], [alert("a1", "laptop", "plc1", "high")])}
    assert risks["plc1"].behaviour > 0
    assert risks["laptop"].behaviour > 0
    assert risks["plc1"].contributors[0].reference == "a1"


# ---------------------------------------------------------------- priority rules


def test_priority_rules() -> None:
    kev = one([PLC], [cve("plc1", "CVE-1", 7.5, kev=True)])
    assert kev.priority is Priority.NOW
    local_kev_printer = one(
        [device("p", "printer", 4)], [cve("p", "CVE-1", 7.8, kev=True, vector=LOCAL)], target="p"
    )
    assert local_kev_printer.priority is Priority.NEXT  # exploited, but not reachable over the network
    critical_on_controller = one([PLC], [cve("plc1", "CVE-1", 9.8)])
    assert critical_on_controller.priority is Priority.NOW
    critical_on_camera = one([device("cam", "ip_camera", 4)], [cve("cam", "CVE-1", 9.8)], target="cam")
    assert critical_on_camera.priority is Priority.NEXT
    default_creds = one(
        [device("cam", "ip_camera", 4)], configs=[config("cam", "credentials.default")], target="cam"
    )
    assert default_creds.priority is Priority.NOW
    medium = one([device("cam", "ip_camera", 4)], [cve("cam", "CVE-1", 5.0)], target="cam")
    assert medium.priority is Priority.LATER


# ---------------------------------------------------------------- site


def test_site_score_is_driven_by_worst_device_and_share() -> None:
    devices = [PLC] + [device(f"d{i}", "it_workstation", 4) for i in range(9)]
    calm = score_site(score_devices(devices, [], [], []), devices)
    assert calm.score == 0
    assert calm.devices == 10
    assert calm.by_priority == {"now": 0, "next": 0, "later": 10}
    one_bad = score_devices(devices, [cve("plc1", "CVE-1", 9.8, kev=True)], [], [])
    site1 = score_site(one_bad, devices)
    assert site1.score > 40
    assert site1.by_priority["now"] == 1
    assert site1.contributors[0].factor == "worst_device"
    assert site1.contributors[0].reference == "plc1"
    many = [cve(f"d{i}", "CVE-2", 8.8) for i in range(9)]
    site2 = score_site(score_devices(devices, [cve("plc1", "CVE-1", 9.8, kev=True), *many], [], []), devices)
    assert site2.score > site1.score  # more devices at risk raise the site
    assert score_site([], []).score == 0


# ---------------------------------------------------------------- remediation


def test_remediation_groups_fixes_and_sorts() -> None:
    devices = [PLC, device("cam", "ip_camera", 4)]
    findings = [
        cve("plc1", "CVE-A", 9.3, kev=True),
        cve("plc1", "CVE-B", 7.5, criteria="< V2.9.7"),
        cve("plc1", "CVE-C", 5.0, remediation="Disable the web server  (see SSA-1)"),
        cve("plc1", "CVE-D", 6.1, remediation="disable the web server (see SSA-1)"),
    ]
    configs = [
        config("cam", "cleartext.telnet", Severity.MEDIUM),
        config("cam", "cleartext.telnet", Severity.MEDIUM, 2323),
    ]
    risks = score_devices(devices, findings, configs, [])
    plan = remediation_plan(risks, devices, findings, configs, [])
    firmware = next(i for i in plan if "firmware" in i.action)
    assert firmware.references == ("CVE-A", "CVE-B")
    assert "V3.0.1 or later" in firmware.action
    assert firmware.priority is Priority.NOW
    assert firmware.risk_reduction > 0
    web = next(i for i in plan if "web server" in i.action)
    assert web.references == ("CVE-C", "CVE-D")
    telnet = next(i for i in plan if i.device_id == "cam")
    assert telnet.action.startswith("Disable Telnet, use SSH")
    assert len(telnet.references) == 2
    order = [(p.priority, -p.risk_reduction) for p in plan]
    rank = {Priority.NOW: 0, Priority.NEXT: 1, Priority.LATER: 2}
    assert order == sorted(order, key=lambda o: (rank[o[0]], o[1]))
    assert plan[0] is firmware


def test_firmware_action_without_range_names_running_firmware() -> None:
    findings = [cve("plc1", "CVE-A", 7.5, criteria="cpe:2.3:o:x:y:2.9.4")]
    plan = remediation_plan(score_devices([PLC], findings, [], []), [PLC], findings, [], [])
    assert plan[0].action.endswith("beyond V2.9.4")


# ---------------------------------------------------------------- inputs and settings


def test_load_alerts_applies_triage_and_counts_bad_lines(tmp_path: Path) -> None:
    (tmp_path / "alerts.jsonl").write_text(
        json.dumps(alert("a1", "x", "plc1", "high"))
        + "\nnot json\n[1]\n"
        + json.dumps(alert("a2", "x", "plc1", "low"))
        + "\n"
    )
    (tmp_path / "triage.json").write_text(json.dumps({"format": 1, "alerts": {"a1": {"status": "closed"}}}))
    weird = WeirdLog()
    alerts = load_alerts(tmp_path, weird)
    assert [a["status"] for a in alerts] == ["closed", "new"]
    assert weird.counts["risk_bad_alert_line"] == 2


def test_bad_inputs_are_counted_not_fatal() -> None:
    weird = WeirdLog()
    risks = score_devices(
        [PLC, {"no": "id"}],
        [cve("ghost", "CVE-1", 9.0)],
        [],
        [alert("a", "plc1", None, "apocalyptic"), alert("b", None, None, "high")],
        weird=weird,
    )
    assert [r.device_id for r in risks] == ["plc1"]
    assert weird.counts["risk_unknown_device"] == 1
    assert weird.counts["risk_bad_alert"] == 1
    assert weird.counts["risk_device_without_id"] == 1


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError):
        Tier(0.9, 0.5)
    with pytest.raises(ConfigError):
        RiskSettings(reach_floor=1.5)
    with pytest.raises(ConfigError):
        RiskSettings(site_worst_weight=0.9, site_top_weight=0.9)
    lenient = RiskSettings(cve_critical_network=Tier(0.2, 0.3))
    assert (
        one([PLC], [cve("plc1", "CVE-1", 9.8)]).score
        > score_devices([PLC], [cve("plc1", "CVE-1", 9.8)], [], [], None, lenient)[0].score
    )


# ---------------------------------------------------------------- importance file


def test_importance_file_round_trip(tmp_path: Path) -> None:
    (tmp_path / "devices.json").write_text(
        json.dumps({"summary": {}, "devices": [PLC, device("cam", "ip_camera", 4)]})
    )
    assert load_importance(tmp_path) == {}
    device_id, levels = set_importance(tmp_path, "plc1", "CRITICAL")
    assert device_id == "plc1"
    assert levels == {"plc1": Importance.CRITICAL}
    set_importance(tmp_path, PLC["ips"][0], "normal")  # by IP; normal entries are dropped
    assert load_importance(tmp_path) == {}
    with pytest.raises(ImportanceError, match="unknown device 'nope'"):
        set_importance(tmp_path, "nope", "high")
    with pytest.raises(ImportanceError, match="unknown importance"):
        set_importance(tmp_path, "plc1", "vital")
    (tmp_path / "assets.json").write_text("{broken")
    with pytest.raises(ImportanceError, match="not JSON"):
        load_importance(tmp_path)


# ---------------------------------------------------------------- properties

severities = st.sampled_from(["info", "low", "medium", "high", "critical"])
statuses = st.sampled_from(["new", "acknowledged", "closed", "learned"])
finding_st = st.builds(
    lambda d, n, s, k, c, v, na: cve(d, f"CVE-{n}", s, kev=k, confidence=c, vector=v, not_applicable=na),
    st.sampled_from(["plc1", "cam"]),
    st.integers(0, 30),
    st.floats(0.1, 10.0),
    st.booleans(),
    st.floats(0.0, 1.0),
    st.sampled_from([NETWORK, LOCAL]),
    st.booleans(),
)
config_st = st.builds(
    lambda d, c, s: config(d, c, s),
    st.sampled_from(["plc1", "cam"]),
    st.sampled_from(
        [
            "cleartext.telnet",
            "credentials.default",
            "exposure.ot_from_it",
            "weird.unknown",
            "internet.ot_device",
        ]
    ),
    st.sampled_from(list(Severity)),
)
alert_st = st.builds(
    lambda i, s, d, sev, stat: alert(f"a{i}", s, d, sev, stat),
    st.integers(0, 20),
    st.sampled_from(["plc1", "cam", None]),
    st.sampled_from(["plc1", "cam", None]),
    severities,
    statuses,
)
DEVICES = [PLC, device("cam", "ip_camera", 4)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(finding_st, max_size=12),
    st.lists(config_st, max_size=5),
    st.lists(alert_st, max_size=8),
    st.sampled_from(list(Importance)),
)
def test_scores_are_bounded_deterministic_and_monotone(findings, configs, alerts, level) -> None:  # type: ignore[no-untyped-def]
    importance = {"plc1": level}
    first = score_devices(DEVICES, findings, configs, alerts, importance)
    again = score_devices(
        DEVICES, list(reversed(findings)), list(reversed(configs)), list(reversed(alerts)), importance
    )
    assert first == again
    for risk in first:
        assert 0 <= risk.score <= 100
        assert all(
            0.0 <= f <= 1.0 for f in (risk.exploitability, risk.exposure, risk.criticality, risk.behaviour)
        )
    site = score_site(first, DEVICES)
    assert 0 <= site.score <= 100
    assert sum(site.by_priority.values()) == len(DEVICES)
    # adding a KEV never lowers a score; closing every alert never raises one
    more = score_devices(
        DEVICES, [*findings, cve("plc1", "CVE-KEV", 9.8, kev=True)], configs, alerts, importance
    )
    closed = score_devices(
        DEVICES, findings, configs, [{**a, "status": "closed"} for a in alerts], importance
    )
    before = {r.device_id: r.score for r in first}
    assert {r.device_id: r.score for r in more}["plc1"] >= before["plc1"]
    assert all(r.score <= before[r.device_id] for r in closed)
    plan = remediation_plan(first, DEVICES, findings, configs, alerts, importance)
    assert all(0 <= item.risk_reduction <= before[item.device_id] for item in plan)


def test_an_outdated_device_scores_higher_the_longer_it_is_behind() -> None:
    def scored(update: dict[str, Any] | None) -> Any:
        record = device("rtu1", "rtu", 1, **({"update": update} if update is not None else {}))
        return score_devices([record], [], [], [])[0]

    current = scored(None)
    fresh = {"outdated": True, "days_behind": 3, "running_version": "2.4.0", "newest_version": "2.5.0"}
    stale = {**fresh, "days_behind": 200}
    up_to_date = {**fresh, "outdated": False}
    assert scored(up_to_date).score == current.score
    assert current.score < scored(fresh).score < scored(stale).score
    top = scored(stale).contributors[0]
    assert top.reference == "update:2.5.0"
    assert "runs 2.4.0, 2.5.0 is released" in top.detail
    assert scored({**fresh, "days_behind": "junk"}).score == scored({**fresh, "days_behind": 0}).score
