"""The console's device plane with a real Mosquitto (FieldWard's configuration, started by the test):
the console's broker sync grants an attested device its topics, a critical sensor alert on the
linked inventory device cuts its access at the broker at once (paho-mqtt publishes are refused), and
the analyst's release restores it through a sync."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from fieldward.console.settings import ConsoleSettings
from fieldward.console.trust_hooks import ConsoleTrust, build_trust, trust_of
from fieldward.store.database import Database
from fieldward.store.models import AuditLog
from fieldward.trust.attestation import AttestationResult, Verdict
from fieldward.trust.fleet import (
    SIM_GROUP,
    SIM_MODEL,
    SIM_TYPE,
    fleet_policy_document,
    fleet_reference_document,
)
from fieldward.trust.fleet_broker import (
    ACCEPTED,
    BrokerTarget,
    RunningBroker,
    broker_available,
    local_broker,
    mqtt_publish,
)

from .conftest import Console, start_console

PEM = serialization.Encoding.PEM


@dataclass
class Setup:
    console: Console
    trust: ConsoleTrust
    broker: RunningBroker
    directory: Path

    def device(self, device_id: str) -> tuple[Path, Path]:
        """An enrolled, freshly attested (healthy) device with its certificate files."""
        registry = self.trust.service.registry
        if registry.group(SIM_GROUP) is None:
            registry.create_group(SIM_GROUP, device_type=SIM_TYPE)
        registry.register_device(device_id, group=SIM_GROUP, model=SIM_MODEL, device_type=SIM_TYPE)
        cert, key = self.trust.service.ca.issue_keypair("device", device_id)
        self.trust.service.verifier.verdicts.record(
            AttestationResult(device_id, Verdict.HEALTHY, ("matches release",), dt.datetime.now(dt.UTC))
        )
        cert_file, key_file = self.directory / f"{device_id}.pem", self.directory / f"{device_id}.key"
        cert_file.write_bytes(cert.public_bytes(PEM))
        key_file.write_bytes(
            key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        return cert_file, key_file

    def publish(self, device_id: str, files: tuple[Path, Path]) -> str:
        target = BrokerTarget(
            self.broker.host, self.broker.tls_port, self.broker.ca_file, sync=lambda ids: None
        )
        (answer,) = mqtt_publish(target, device_id, *files, [f"devices/{device_id}/telemetry/t"])
        return answer


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    missing = broker_available()
    if missing is not None:
        pytest.skip(missing)
    passphrase = tmp_path / "ca-passphrase"
    fd = os.open(passphrase, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(24))
    documents: dict[str, Any] = {
        "policy.yaml": fleet_policy_document(),
        "reference.yaml": fleet_reference_document(),
        "quarantine.yaml": {"quarantine": [{"name": "rtus", "min_severity": "high", "types": [SIM_TYPE]}]},
    }
    for name, document in documents.items():
        (tmp_path / name).write_text(yaml.safe_dump(document), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'console.db'}"
    options: dict[str, Any] = {
        "trust": True,
        "trust_passphrase_file": passphrase,
        "trust_policy_file": tmp_path / "policy.yaml",
        "trust_reference_values_file": tmp_path / "reference.yaml",
        "trust_quarantine_file": tmp_path / "quarantine.yaml",
    }
    # the CA first (the broker's certificates come from it), then the console that drives the broker
    database = Database(url)
    first = build_trust(ConsoleSettings(database_url=url, data_dir=tmp_path, **options), database)
    assert first is not None
    with local_broker(first.service, tmp_path / "broker") as broker:
        database.dispose()
        options.update(
            trust_broker_host=broker.host,
            trust_broker_port=broker.admin_port,
            trust_broker_password_file=broker.directory / "admin-password",
            trust_broker_sync_seconds=3600.0,
        )
        for console in start_console(url, tmp_path, **options):
            trust = trust_of(console.app)
            assert trust is not None
            yield Setup(console, trust, broker, tmp_path)


def test_an_alert_cuts_broker_access_and_a_release_restores_it(setup: Setup) -> None:
    files = setup.device("rtu-mqtt-1")
    other = setup.device("rtu-mqtt-2")
    report = setup.trust.sync_broker()
    assert report is not None
    assert {"rtu-mqtt-1", "rtu-mqtt-2"} <= set(report.granted)
    assert setup.publish("rtu-mqtt-1", files) in ACCEPTED
    assert setup.publish("rtu-mqtt-2", other) in ACCEPTED
    # the sensor reports a critical alert on the inventory device linked to rtu-mqtt-1
    console = setup.console
    mac = "02:00:5e:20:00:01"
    sensor = console.bearer(console.sensor_token)
    for kind, records in (
        ("devices", [{"id": f"mac:{mac}", "mac": mac, "ips": ["10.9.1.1"], "device_type": "rtu"}]),
    ):
        answer = console.client.post(
            f"/api/v1/ingest/{kind}", json={"batch_id": str(uuid.uuid4()), "records": records}, headers=sensor
        )
        assert answer.status_code == 200, answer.text
    linked = console.client.post(
        "/api/v1/trust/devices/rtu-mqtt-1/links",
        json={"kind": "mac", "value": mac},
        headers=console.bearer(console.tokens["analyst"]),
    )
    assert linked.status_code == 201
    alert = {
        "id": "mqtt-critical",
        "engine": "signature",
        "type": "signature.c2_beacon",
        "title": "Beacon",
        "severity": "critical",
        "status": "new",
        "count": 1,
        "src_device": f"mac:{mac}",
    }
    answer = console.client.post(
        "/api/v1/ingest/alerts", json={"batch_id": str(uuid.uuid4()), "records": [alert]}, headers=sensor
    )
    assert answer.status_code == 200, answer.text
    assert setup.trust.service.registry.is_quarantined("rtu-mqtt-1")
    assert setup.publish("rtu-mqtt-1", files) not in ACCEPTED
    assert setup.publish("rtu-mqtt-2", other) in ACCEPTED  # the other device keeps its access
    with console.database.sessionmaker() as session:
        steps = {
            row.action: row.details
            for row in session.scalars(select(AuditLog).where(AuditLog.target == "rtu-mqtt-1"))
        }
    assert steps["trust.broker.disable"]["result"] == "disabled"
    # a sync keeps it out; the analyst's release restores it
    assert "rtu-mqtt-1" in setup.trust.sync_broker().refused  # type: ignore[union-attr]
    released = console.client.post(
        "/api/v1/trust/devices/rtu-mqtt-1/release",
        json={"reason": "false positive"},
        headers=console.bearer(console.tokens["analyst"]),
    )
    assert released.status_code == 200, released.text
    assert released.json()["broker"] in ("enabled", "synced")
    assert setup.publish("rtu-mqtt-1", files) in ACCEPTED
