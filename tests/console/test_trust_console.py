"""The device plane mounted in the console and served the way ``fieldward serve`` serves it: uvicorn
with the options of :func:`fieldward.console.serve.uvicorn_options` (TLS, optional client
certificates, the TLS-extension protocol), real TLS handshakes, EST requests posting PKCS#10 with
httpx (token, IDevID and mutual-TLS renewal), the device agent attesting and reporting versions, and
the sensor's alerts quarantining linked devices; on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import os
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from fieldward.console.serve import uvicorn_options
from fieldward.console.settings import ConsoleSettings
from fieldward.console.trust_hooks import ConsoleTrust, trust_of
from fieldward.store.ingest import ingest_records
from fieldward.store.models import AuditLog, Device, DeviceRisk
from fieldward.trust.agent import DeviceAgent
from fieldward.trust.fleet import (
    SIM_MODEL,
    ServiceProvisioner,
    fleet_policy_document,
    fleet_reference_document,
    simulated_image,
    simulated_measurements,
)

from ..trust.conftest import make_manufacturer
from .conftest import Console, start_console

PEM = serialization.Encoding.PEM
PKCS10 = {"Content-Type": "application/pkcs10"}


@dataclass
class Plane:
    """A console with the device plane, served over TLS by uvicorn in a thread."""

    console: Console
    trust: ConsoleTrust
    url: str
    root_file: Path
    directory: Path
    acme: Any

    def client(self, cert: Path | None = None, key: Path | None = None) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.root_file))
        if cert is not None and key is not None:
            context.load_cert_chain(cert, key)
        return httpx.Client(base_url=self.url, verify=context, timeout=15.0)

    def files(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        name = secrets.token_hex(6)
        cert_file, key_file = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(PEM))
        key_file.write_bytes(
            key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        return cert_file, key_file

    def agent(self, device_id: str) -> DeviceAgent:
        agent = DeviceAgent(self.url, self.directory / device_id, server_ca=self.root_file)
        agent.enroll(device_id, ServiceProvisioner(self.trust.service).token(device_id))
        return agent

    def ingest(self, kind: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        response = self.console.client.post(
            f"/api/v1/ingest/{kind}",
            json={"batch_id": str(uuid.uuid4()), "records": records},
            headers=self.console.bearer(self.console.sensor_token),
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer


def _csr(common_name: str) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return base64.encodebytes(csr.public_bytes(serialization.Encoding.DER)), key


def _certs(response: httpx.Response) -> list[x509.Certificate]:
    assert response.status_code == 200, response.text
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(response.content))


def _write(path: Path, document: object) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def start_plane(
    request: pytest.FixtureRequest, tmp: Path, response: dict[str, Any] | None = None
) -> Iterator[Plane]:
    """A served console with the device plane on ``request.param`` (``sqlite`` or ``postgresql``);
    ``response``: the response settings file (default: quarantine RTUs on high alerts)."""
    url = (
        f"sqlite:///{tmp / 'console.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_factory")()
    )
    passphrase = tmp / "ca-passphrase"
    fd = os.open(passphrase, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(24))
    acme = make_manufacturer("Acme Sensors Manufacturing CA")
    (tmp / "acme-ca.pem").write_bytes(acme.root.public_bytes(PEM))
    if response is None:
        response = {"quarantine": [{"name": "rtu-on-high", "min_severity": "high", "types": ["rtu"]}]}
    options = {
        "trust": True,
        "trust_passphrase_file": passphrase,
        "trust_policy_file": _write(tmp / "policy.yaml", fleet_policy_document()),
        "trust_reference_values_file": _write(tmp / "reference.yaml", fleet_reference_document()),
        "trust_quarantine_file": _write(tmp / "quarantine.yaml", response),
        "trust_manufacturers_file": _write(
            tmp / "manufacturers.yaml",
            {"manufacturers": [{"name": "acme", "ca": "acme-ca.pem", "group": "acme"}]},
        ),
    }
    for console in start_console(url, tmp, **options):
        trust = trust_of(console.app)
        assert trust is not None
        trust.service.registry.create_group("acme", device_type="rtu", update_channel="stable")
        settings: ConsoleSettings = console.app.state.settings
        served = uvicorn_options(console.app, settings, "127.0.0.1")
        config = uvicorn.Config(
            console.app, host="127.0.0.1", port=0, lifespan="off", log_level="warning", **served
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            assert time.monotonic() < deadline, "uvicorn did not start in time"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        root = tmp / "fieldward-root.pem"
        root.write_bytes(trust.service.ca.root.public_bytes(PEM))
        try:
            yield Plane(console, trust, f"https://127.0.0.1:{port}", root, tmp, acme)
        finally:
            server.should_exit = True
            thread.join(timeout=10)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    yield from start_plane(request, tmp_path_factory.mktemp("trust-console"))


def test_the_device_plane_is_off_by_default(console: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ConsoleSettings().trust is False
    assert trust_of(console.app) is None
    refused = console.client.post("/.well-known/est/simpleenroll", content=b"x", headers=PKCS10)
    assert refused.status_code in (404, 405)
    listed = console.client.get("/api/v1/trust/devices", headers=console.bearer(console.tokens["viewer"]))
    assert listed.status_code == 200
    assert listed.json()["total"] == 0
    release = console.client.post(
        "/api/v1/trust/devices/rtu-1/release",
        json={"reason": "test"},
        headers=console.bearer(console.tokens["analyst"]),
    )
    assert release.status_code == 409
    assert "not enabled" in release.json()["detail"]
    monkeypatch.setenv("FIELDWARD_TRUST", "1")
    monkeypatch.setenv("FIELDWARD_TRUST_POLICY", "/etc/fieldward/policy.yaml")
    settings = ConsoleSettings.from_env()
    assert settings.trust is True
    assert settings.trust_policy_file == Path("/etc/fieldward/policy.yaml")


def test_the_served_console_speaks_tls_with_optional_client_certificates(plane: Plane) -> None:
    with plane.client() as client:  # no client certificate: the console API works as before
        listed = client.get(
            "/api/v1/trust/devices", headers=plane.console.bearer(plane.console.tokens["viewer"])
        )
        cacerts = client.get("/.well-known/est/cacerts")
        anonymous = client.post("/trust/attest/challenge")
    assert listed.status_code == 200
    assert set(_certs(cacerts)) == {plane.trust.service.ca.root, plane.trust.service.ca.issuing}
    assert anonymous.status_code == 401
    # the server certificate was issued by the FieldWard CA (console profile) and is reused
    options = uvicorn_options(plane.console.app, plane.console.app.state.settings, "127.0.0.1")
    served = x509.load_pem_x509_certificate(Path(options["ssl_certfile"]).read_bytes())
    assert served.issuer == plane.trust.service.ca.issuing.subject
    assert options["ssl_cert_reqs"] == ssl.CERT_OPTIONAL
    assert oct(Path(options["ssl_keyfile"]).stat().st_mode & 0o777) == "0o600"
    # a client certificate from an unknown CA is refused during the handshake
    rogue, rogue_key = make_manufacturer("Rogue Maker").idevid("ROGUE-1")
    cert, key = plane.files(rogue, rogue_key)
    with (
        pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)),
        plane.client(cert, key) as client,
    ):
        client.get("/.well-known/est/cacerts")


def test_token_enrollment_and_renewal_over_mutual_tls(plane: Plane) -> None:
    token = ServiceProvisioner(plane.trust.service).token("rtu-est-1")
    body, key = _csr("rtu-est-1")
    basic = "Basic " + base64.b64encode(f"device:{token}".encode()).decode()
    with plane.client() as client:
        (cert,) = _certs(
            client.post(
                "/.well-known/est/simpleenroll", content=body, headers={**PKCS10, "Authorization": basic}
            )
        )
        spent = client.post(
            "/.well-known/est/simpleenroll", content=body, headers={**PKCS10, "Authorization": basic}
        )
    assert spent.status_code == 401
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "rtu-est-1"
    assert cert.public_key() == key.public_key()
    cert_file, key_file = plane.files(cert, key)
    renewal, _ = _csr("rtu-est-1")
    with plane.client(cert_file, key_file) as client:
        never_attested = client.post("/.well-known/est/simplereenroll", content=renewal, headers=PKCS10)
    assert never_attested.status_code == 403
    assert "never been attested" in never_attested.text
    with plane.client() as client:  # renewal without a client certificate: not authenticated
        anonymous = client.post("/.well-known/est/simplereenroll", content=renewal, headers=PKCS10)
    assert anonymous.status_code in (401, 403)


def test_agent_attests_renews_and_its_verdict_is_stored(plane: Plane) -> None:
    agent = plane.agent("rtu-agent-1")
    verdict = agent.attest(simulated_measurements())
    assert verdict["verdict"] == "healthy"
    # raw EST renewal with the device certificate over mutual TLS, a new key in the PKCS#10
    renewal, new_key = _csr("rtu-agent-1")
    with plane.client(agent.cert_path, agent.key_path) as client:
        (renewed,) = _certs(client.post("/.well-known/est/simplereenroll", content=renewal, headers=PKCS10))
    assert renewed.public_key() == new_key.public_key()
    assert plane.trust.service.ca.verify([renewed]) == renewed
    # the verdict is a row: the console lists it, a second service on the database reads it
    viewer = plane.console.bearer(plane.console.tokens["viewer"])
    listed = plane.console.client.get("/api/v1/trust/verdicts?verdict=healthy", headers=viewer).json()
    assert "rtu-agent-1" in {v["device_id"] for v in listed["items"]}
    from fieldward.trust.state import DatabaseVerdictStore

    stored = DatabaseVerdictStore(plane.console.database).latest("rtu-agent-1")
    assert stored is not None
    assert str(stored.verdict) == "healthy"
    detail = plane.console.client.get("/api/v1/trust/devices/rtu-agent-1", headers=viewer).json()
    assert detail["verdict"]["verdict"] == "healthy"
    assert detail["version"]["running_version"] == "2.4.1"
    assert detail["version"]["source"] == "attestation"


def test_idevid_bootstrap_through_the_served_console(plane: Plane) -> None:
    idevid, idevid_key = plane.acme.idevid("ACME-7001")
    cert_file, key_file = plane.files(idevid, idevid_key)
    body, key = _csr("ACME-7001")
    with plane.client(cert_file, key_file) as client:
        (cert,) = _certs(client.post("/.well-known/est/simpleenroll", content=body, headers=PKCS10))
        other = client.post("/.well-known/est/simpleenroll", content=_csr("ACME-7002")[0], headers=PKCS10)
    assert cert.public_key() == key.public_key()
    device = plane.trust.service.registry.device("ACME-7001")
    assert device is not None
    assert (device.bootstrap, device.group) == ("idevid", "acme")
    assert other.status_code == 403


def test_failure_reports_are_persisted_and_aggregated(plane: Plane) -> None:
    one, two = plane.agent("rtu-crash-1"), plane.agent("rtu-crash-2")
    one.report_failure("crash", "poller", "SIGSEGV at 0x7f3a12 register 40001", stack=["poll.c:read"])
    two.report_failure(
        "crash", "poller", "SIGSEGV at 0x55e0ff register 40017", stack=["poll.c:read"], count=4
    )
    two.report_failure("error", "scaler", "division by zero")
    viewer = plane.console.bearer(plane.console.tokens["viewer"])
    page = plane.console.client.get("/api/v1/trust/failures?kind=crash", headers=viewer).json()
    crash = next(a for a in page["items"] if a["component"] == "poller")
    assert (crash["count"], crash["devices"], crash["model"]) == (5, 2, SIM_MODEL)
    assert crash["device_ids"] == ["rtu-crash-1", "rtu-crash-2"]
    assert all(a["kind"] == "crash" for a in page["items"])


def _inventory(plane: Plane, mac: str, device_type: str = "rtu") -> int:
    key = f"mac:{mac}"
    plane.ingest(
        "devices", [{"id": key, "mac": mac, "ips": ["10.9.0.7"], "local": True, "device_type": device_type}]
    )
    with plane.console.database.sessionmaker() as session:
        row = session.scalars(select(Device).where(Device.device_key == key)).one()
        return int(row.id)


def _alert(
    alert_id: str, severity: str, src_device: str | None, dst_device: str | None = None
) -> dict[str, Any]:
    return {
        "id": alert_id,
        "engine": "signature",
        "type": "signature.c2_beacon",
        "title": "Command-and-control beacon",
        "severity": severity,
        "status": "new",
        "first_ts": "2026-12-07T10:00:00Z",
        "last_ts": "2026-12-07T10:01:00Z",
        "count": 1,
        "src": "10.9.0.7",
        "dst": "203.0.113.9",
        "src_device": src_device,
        "dst_device": dst_device,
    }


def test_a_high_alert_quarantines_the_linked_device_and_an_analyst_releases_it(plane: Plane) -> None:
    agent = plane.agent("rtu-q-1")
    assert agent.attest(simulated_measurements())["verdict"] == "healthy"
    mac = "02:00:5e:10:00:71"
    inventory_id = _inventory(plane, mac)
    analyst = plane.console.bearer(plane.console.tokens["analyst"])
    viewer = plane.console.bearer(plane.console.tokens["viewer"])
    refused = plane.console.client.post(
        "/api/v1/trust/devices/rtu-q-1/links", json={"kind": "mac", "value": mac.upper()}, headers=viewer
    )
    assert refused.status_code == 403
    linked = plane.console.client.post(
        "/api/v1/trust/devices/rtu-q-1/links", json={"kind": "mac", "value": mac.upper()}, headers=analyst
    )
    assert linked.status_code == 201, linked.text
    assert (linked.json()["value"], linked.json()["inventory_ids"]) == (mac, [inventory_id])
    bad = plane.console.client.post(
        "/api/v1/trust/devices/rtu-q-1/links", json={"kind": "mac", "value": "not-a-mac"}, headers=analyst
    )
    assert bad.status_code == 422
    # a medium alert changes nothing; the policy still allows the device its telemetry
    plane.ingest("alerts", [_alert("q-medium", "medium", f"mac:{mac}")])
    assert not plane.trust.service.registry.is_quarantined("rtu-q-1")
    assert agent.decide("publish", "devices/rtu-q-1/telemetry/t")["allowed"] is True
    # a critical one on the linked device quarantines it
    plane.ingest("alerts", [_alert("q-critical", "critical", f"mac:{mac}")])
    assert plane.trust.service.registry.is_quarantined("rtu-q-1")
    assert agent.decide("publish", "devices/rtu-q-1/telemetry/t")["allowed"] is False
    renewal, _ = _csr("rtu-q-1")
    with plane.client(agent.cert_path, agent.key_path) as client:
        refused_renewal = client.post("/.well-known/est/simplereenroll", content=renewal, headers=PKCS10)
    assert refused_renewal.status_code == 403
    assert "quarantined" in refused_renewal.text
    with plane.console.database.sessionmaker() as session:
        entries = list(
            session.scalars(select(AuditLog).where(AuditLog.target == "rtu-q-1").order_by(AuditLog.id))
        )
    quarantine = next(e for e in entries if e.action == "trust.quarantine")
    assert quarantine.actor == "fieldward:response"
    assert quarantine.details["severity"] == "critical"
    assert quarantine.details["rule"] == "rtu-on-high"
    assert "trust.link" in {e.action for e in entries}
    listed = plane.console.client.get("/api/v1/trust/devices?quarantined=true", headers=viewer).json()
    assert "rtu-q-1" in {d["device_id"] for d in listed["items"]}
    # the analyst's release
    no_reason = plane.console.client.post("/api/v1/trust/devices/rtu-q-1/release", json={}, headers=analyst)
    assert no_reason.status_code == 422
    released = plane.console.client.post(
        "/api/v1/trust/devices/rtu-q-1/release", json={"reason": "beacon was a test tool"}, headers=analyst
    )
    assert released.status_code == 200, released.text
    assert (released.json()["quarantined"], released.json()["changed"]) == (False, True)
    assert not plane.trust.service.registry.is_quarantined("rtu-q-1")
    with plane.console.database.sessionmaker() as session:
        release = session.scalars(
            select(AuditLog).where(AuditLog.target == "rtu-q-1", AuditLog.action == "trust.release")
        ).one()
    assert release.actor == "analyst-user"
    assert release.details["reason"] == "beacon was a test tool"


def test_alerts_on_unlinked_or_other_type_devices_quarantine_nothing(plane: Plane) -> None:
    plane.agent("rtu-free-1")
    plane.ingest("alerts", [_alert("free-critical", "critical", "mac:02:00:5e:10:00:99")])
    assert not plane.trust.service.registry.is_quarantined("rtu-free-1")
    # linked, but the device is not an RTU: the rule (types: [rtu]) does not apply
    plane.trust.service.registry.register_device("plc-linked-1", device_type="plc")
    mac = "02:00:5e:10:00:72"
    inventory_id = _inventory(plane, mac, "plc")
    plane.trust.links.link("plc-linked-1", "inventory", str(inventory_id), by="test")
    plane.ingest("alerts", [_alert("plc-critical", "critical", None, f"mac:{mac}")])
    assert not plane.trust.service.registry.is_quarantined("plc-linked-1")


def test_an_outdated_device_raises_the_risk_of_its_inventory_device(plane: Plane, tmp_path: Path) -> None:
    image = tmp_path / "fw-2.6.0.bin"
    image.write_bytes(simulated_image("2.6.0"))
    plane.trust.service.updates.publish(image, SIM_MODEL, "2.6.0", "stable", release_notes="risk test")
    agent = plane.agent("rtu-old-1")
    mac = "02:00:5e:10:00:73"
    inventory_id = _inventory(plane, mac)
    plane.ingest(
        "risk",
        [
            {
                "device_id": f"mac:{mac}",
                "score": 3,
                "exploitability": 0.0,
                "exposure": 0.0,
                "criticality": 0.5,
                "behaviour": 0.0,
                "priority": "later",
                "contributors": [],
            }
        ],
    )

    def stored() -> tuple[int, list[dict[str, Any]], int | None]:
        with plane.console.database.sessionmaker() as session:
            risk = session.get(DeviceRisk, inventory_id)
            device = session.get(Device, inventory_id)
            assert risk is not None
            assert device is not None
            return risk.score, list(risk.contributors), device.risk_score

    before, _, _ = stored()
    assert before == 3
    analyst = plane.console.bearer(plane.console.tokens["analyst"])
    linked = plane.console.client.post(
        "/api/v1/trust/devices/rtu-old-1/links",
        json={"kind": "inventory", "value": str(inventory_id)},
        headers=analyst,
    )
    assert linked.status_code == 201
    status = agent.report_version("2.4.1")
    assert (status["outdated"], status["newest_version"], status["running_version"]) == (
        True,
        "2.6.0",
        "2.4.1",
    )
    outdated, contributors, column = stored()
    assert outdated > before
    assert column == outdated
    assert any(c["reference"] == "update:2.6.0" for c in contributors)
    # a sensor's new risk batch overwrites the row; the console re-applies the update contribution
    plane.ingest(
        "risk",
        [
            {
                "device_id": f"mac:{mac}",
                "score": 3,
                "exploitability": 0.0,
                "exposure": 0.0,
                "criticality": 0.5,
                "behaviour": 0.0,
                "priority": "later",
                "contributors": [],
            }
        ],
    )
    assert stored()[0] == outdated
    # unlinked: the inventory device is no longer that identity, the contribution goes; linked again
    link_id = linked.json()["id"]
    unlinked = plane.console.client.delete(
        f"/api/v1/trust/devices/rtu-old-1/links/{link_id}", headers=analyst
    )
    assert unlinked.status_code == 200
    assert stored()[0] < outdated
    relinked = plane.console.client.post(
        "/api/v1/trust/devices/rtu-old-1/links", json={"kind": "mac", "value": mac}, headers=analyst
    )
    assert relinked.status_code == 201
    assert stored()[0] == outdated
    # updated: the contribution goes away
    current = agent.report_version("2.6.0")
    assert current["outdated"] is False
    score, contributors, _ = stored()
    assert score < outdated
    assert not any(c["reference"] == "update:2.6.0" for c in contributors)
    listed = plane.console.client.get(
        "/api/v1/trust/devices?outdated=false", headers=plane.console.bearer(plane.console.tokens["viewer"])
    ).json()
    assert "rtu-old-1" in {d["device_id"] for d in listed["items"]}


def test_version_reports_are_validated(plane: Plane) -> None:
    agent = plane.agent("rtu-ver-1")
    with agent.client() as http:
        other = http.post("/trust/updates/report", json={"device_id": "rtu-ver-2", "running_version": "1"})
        missing = http.post("/trust/updates/report", json={"channel": "stable"})
        wrong = http.post("/trust/updates/report", json={"running_version": 7})
    assert other.status_code == 403
    assert missing.status_code == 422
    assert wrong.status_code == 422
    assert plane.trust.service.versions.get("rtu-ver-2") is None


def test_alerts_stored_by_other_paths_quarantine_once(plane: Plane) -> None:
    """Alerts a NATS JetStream worker (or a dead-letter retry) stores reach the quarantine rules
    through the console's alert-response job; an alert answered once does not quarantine again
    after the analyst's release."""
    plane.agent("rtu-js-1")
    mac = "02:00:5e:10:00:73"
    inventory_id = _inventory(plane, mac)
    plane.trust.links.link("rtu-js-1", "inventory", str(inventory_id), by="test")
    # stored as an ingest worker stores it: straight into the store, no HTTPS ingest hook
    ingest_records(
        plane.console.database, "sensor-1", "alerts", [_alert("js-critical", "critical", f"mac:{mac}")]
    )
    assert not plane.trust.service.registry.is_quarantined("rtu-js-1")
    plane.trust.respond_to_stored_alerts(grace=0)
    assert plane.trust.service.registry.is_quarantined("rtu-js-1")
    with plane.console.database.sessionmaker() as session:
        entry = session.scalars(
            select(AuditLog).where(AuditLog.target == "rtu-js-1", AuditLog.action == "trust.quarantine")
        ).one()
    assert entry.actor == "fieldward:response"
    assert entry.details["alert_id"] == "js-critical"
    plane.trust.quarantine.release("rtu-js-1", "analyst-user", "checked")
    plane.trust.respond_to_stored_alerts(grace=0)
    assert not plane.trust.service.registry.is_quarantined("rtu-js-1")
    # an alert through the HTTPS ingest is answered at once by its hook; released before the job's
    # next round, the job (which sees the same alert event) does not quarantine it again
    plane.ingest("alerts", [_alert("https-critical", "critical", f"mac:{mac}")])
    assert plane.trust.service.registry.is_quarantined("rtu-js-1")
    plane.trust.quarantine.release("rtu-js-1", "analyst-user", "checked again")
    plane.trust.respond_to_stored_alerts(grace=0)
    assert not plane.trust.service.registry.is_quarantined("rtu-js-1")
