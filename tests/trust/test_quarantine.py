"""The quarantine response: rules on alerts, the registry flag the EST renewal gate consults, the
broker client cut at a real Mosquitto (its session kicked, a reconnection without rights), the
analyst's release, and the audit log rows of every step."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fieldward.detect.model import Alert, AlertType, Severity
from fieldward.store.database import Database
from fieldward.store.models import AuditLog
from fieldward.trust.broker import BrokerError, role_name
from fieldward.trust.errors import TrustError
from fieldward.trust.quarantine import (
    AUTOMATIC_ACTOR,
    AuditEntry,
    QuarantineService,
    QuarantineSettings,
    alert_facts,
    database_audit,
    load_quarantine_settings,
)
from fieldward.trust.registry import TrustRegistry

from .conftest import ESTServer, csr_body, make_csr
from .test_broker import POLICY, Broker, broker, healthy  # noqa: F401 - broker is a fixture

SETTINGS = QuarantineSettings.from_mapping(
    {
        "quarantine": [
            {"name": "plant-rtus", "min_severity": "high", "groups": ["plant-*"], "types": ["rtu"]},
            {"name": "any-malware", "min_severity": "medium", "alert_types": ["threat.*"]},
        ]
    }
)


def detect_alert(severity: Severity, type_id: str = "operations.s7_plc_stop") -> Alert:
    kind = AlertType(type_id, "PLC stopped", severity, "a STOP was sent", "check the engineering station")
    return Alert(kind, "10.0.0.5", "10.0.0.9", "s7comm", 1, 2, "STOP command")


def test_alert_facts_reads_every_alert_form() -> None:
    alert = detect_alert(Severity.CRITICAL)
    assert alert_facts(alert) == ("critical", "operations.s7_plc_stop", alert.id)
    assert alert_facts(alert.to_json()) == ("critical", "operations.s7_plc_stop", alert.id)
    assert alert_facts({"severity": "HIGH", "type": "x.y", "id": 7, "alert_key": "abc"}) == (
        "high",
        "x.y",
        "abc",
    )
    assert alert_facts({"severity": "dreadful"}) == (None, None, None)
    assert alert_facts(object()) == (None, None, None)


def test_settings_parse_and_refuse_bad_documents(tmp_path: Path) -> None:
    path = tmp_path / "response.yaml"
    path.write_text("quarantine:\n  - name: all-critical\n    min_severity: critical\n")
    assert load_quarantine_settings(path).rules[0].min_severity == "critical"
    for bad in (
        {"quarantine": [{"min_severity": "severe"}]},
        {"quarantine": [{"groups": "ok", "colour": "red"}]},
        {"quarantine": [{"types": [1]}]},
        {"rules": []},
        ["quarantine"],
    ):
        with pytest.raises(TrustError):
            QuarantineSettings.from_mapping(bad)
    (tmp_path / "bad.yaml").write_text("quarantine: [")
    with pytest.raises(TrustError, match="not valid YAML"):
        load_quarantine_settings(tmp_path / "bad.yaml")


class RecordingBroker:
    """A BrokerControl double that records calls (the real broker is tested below)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = fail

    def _call(self, *call: str) -> None:
        if self.fail:
            raise BrokerError("broker unreachable")
        self.calls.append(call)

    def disable_client(self, username: str) -> None:
        self._call("disable", username)

    def enable_client(self, username: str) -> None:
        self._call("enable", username)

    def remove_client_role(self, username: str, rolename: str) -> None:
        self._call("remove_role", username, rolename)

    def add_client_role(self, username: str, rolename: str, priority: int = 1) -> None:
        self._call("add_role", username, rolename)

    def get_client(self, username: str) -> dict[str, Any] | None:
        self._call("get_client", username)
        return {"username": username, "roles": [{"rolename": role_name(username)}]}

    def get_role(self, rolename: str) -> dict[str, Any] | None:
        return {"rolename": rolename}


def _audit_rows(database: Database, target: str) -> list[tuple[str, str, dict[str, Any]]]:
    with database.session() as session:
        rows = session.scalars(select(AuditLog).where(AuditLog.target == target).order_by(AuditLog.id))
        return [(row.actor, row.action, dict(row.details)) for row in rows]


def test_rules_decide_and_every_step_is_audited(registry: TrustRegistry, database: Database) -> None:
    registry.register_device("q-rtu-1", group="plant-a", device_type="rtu")
    registry.register_device("q-hmi-1", group="plant-a", device_type="hmi")
    recorder = RecordingBroker()
    service = QuarantineService(registry, SETTINGS, database_audit(database), broker=recorder)

    low = service.on_alert(detect_alert(Severity.MEDIUM), "q-rtu-1")
    assert not low.quarantined
    assert not low.changed
    other_type = service.on_alert(detect_alert(Severity.CRITICAL), "q-hmi-1")
    assert not other_type.quarantined
    assert service.on_alert(detect_alert(Severity.CRITICAL), "nobody").reason == "not an enrolled device"
    assert _audit_rows(database, "q-rtu-1") == []

    outcome = service.on_alert(detect_alert(Severity.HIGH), "q-rtu-1")
    assert outcome.quarantined
    assert outcome.changed
    assert outcome.broker == "disabled"
    assert registry.is_quarantined("q-rtu-1")
    assert service.renewal_gate("q-rtu-1") == (False, "the device is quarantined")
    assert ("disable", "q-rtu-1") in recorder.calls
    assert ("remove_role", "q-rtu-1", role_name("q-rtu-1")) in recorder.calls
    # A second alert changes nothing and writes nothing.
    assert not service.on_alert(detect_alert(Severity.CRITICAL), "q-rtu-1").changed

    # A medium threat-intel alert quarantines any device (second rule).
    assert service.on_alert(detect_alert(Severity.MEDIUM, "threat.ioc_match"), "q-hmi-1").quarantined

    with pytest.raises(TrustError):
        service.release("q-rtu-1", "", "")
    released = service.release("q-rtu-1", "alice", "firmware reflashed")
    assert released.changed
    assert not released.quarantined
    assert released.broker == "enabled"
    assert not registry.is_quarantined("q-rtu-1")
    assert service.renewal_gate("q-rtu-1")[0]
    assert ("add_role", "q-rtu-1", role_name("q-rtu-1")) in recorder.calls

    rows = _audit_rows(database, "q-rtu-1")
    assert [(actor, action) for actor, action, _ in rows] == [
        (AUTOMATIC_ACTOR, "trust.quarantine"),
        (AUTOMATIC_ACTOR, "trust.broker.disable"),
        ("alice", "trust.release"),
        ("alice", "trust.broker.enable"),
    ]
    assert rows[0][2]["severity"] == "high"
    assert rows[0][2]["rule"] == "plant-rtus"
    assert rows[2][2]["reason"] == "firmware reflashed"


def test_broker_failure_does_not_stop_the_quarantine(registry: TrustRegistry) -> None:
    registry.register_device("q-rtu-2", group="plant-a", device_type="rtu")
    entries: list[AuditEntry] = []
    service = QuarantineService(registry, SETTINGS, entries.append, broker=RecordingBroker(fail=True))
    outcome = service.on_alert({"severity": "critical", "type": "x", "id": "a1"}, "q-rtu-2")
    assert outcome.quarantined
    assert outcome.broker.startswith("failed: broker unreachable")
    assert registry.is_quarantined("q-rtu-2")
    assert [e.action for e in entries] == ["trust.quarantine", "trust.broker.disable"]
    assert entries[1].details["result"].startswith("failed")


def test_quarantine_at_a_real_broker_and_release(
    broker: Broker,  # noqa: F811 - the fixture imported above
    est_server: ESTServer,
    database: Database,
) -> None:
    registry = broker.registry
    cert, cert_file, key_file = broker.device_files("q-live")
    registry.register_device("q-live", group="plant-a", device_type="rtu")
    _, obs_cert, obs_key = broker.device_files("observer")

    def contexts() -> list[Any]:
        return [
            healthy("q-live", quarantined=registry.is_quarantined("q-live")),
            healthy("observer"),
        ]

    with broker.admin() as admin:
        admin.sync(POLICY, contexts())
        service = QuarantineService(
            registry,
            SETTINGS,
            database_audit(database),
            broker=admin,
            resync=lambda: admin.sync(POLICY, contexts()),
        )
        observer = broker.mqtt("observer", obs_cert, obs_key)
        assert observer.subscribe("plant/#") == "Granted QoS 1"
        device = broker.mqtt("q-live", cert_file, key_file)
        assert device.publish("plant/q-live/telemetry", b"before") == "Success"

        outcome = service.on_alert(detect_alert(Severity.CRITICAL), "q-live")
        assert outcome.broker == "disabled"
        assert device.wait("disconnect")[1] == "Administrative action"  # kicked at once

        # The certificate is still valid, so TLS succeeds, but the client has no rights left.
        again = broker.mqtt("q-live-again", cert_file, key_file)
        assert again.publish("plant/q-live/telemetry", b"during") == "Not authorized"
        assert again.subscribe("plant/q-live/commands/+") == "Not authorized"
        # A sync with the quarantined context keeps it out (the client is deleted).
        assert admin.sync(POLICY, contexts()).refused["q-live"] == "quarantined"
        assert admin.get_client("q-live") is None

        # Renewal over EST is refused while quarantined.
        key = _key(key_file)
        body = csr_body(make_csr(None, subject=cert.subject)[0])
        headers = {"Content-Type": "application/pkcs10"}
        with est_server.client(cert, key) as client:
            refused = client.post("/.well-known/est/simplereenroll", content=body, headers=headers)
            assert refused.status_code == 403
            assert "quarantined" in refused.text

            service.release("q-live", "alice", "false positive: maintenance window")
            renewed = client.post("/.well-known/est/simplereenroll", content=body, headers=headers)
            assert renewed.status_code == 200, renewed.text

        assert admin.get_client("q-live") is not None
        released = broker.mqtt("q-live-released", cert_file, key_file)
        assert released.publish("plant/q-live/telemetry", b"after") == "Success"

    payloads = [payload for _, payload in observer.received(1.0)]
    assert b"before" in payloads
    assert b"after" in payloads
    assert b"during" not in payloads
    actions = [action for _, action, _ in _audit_rows(database, "q-live")]
    assert actions == ["trust.quarantine", "trust.broker.disable", "trust.release", "trust.broker.enable"]
    assert dt.datetime.now(dt.UTC) < cert.not_valid_after_utc


def _key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(path.read_bytes(), password=None)
