"""Links between device identities and the inventory proposed and made from certificate attributes,
through the served console (real TLS, EST with IDevIDs and tokens, the sensor's ingest API) with
automatic serial links allowed by the response settings; on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from fieldward.store.models import AuditLog, Device
from fieldward.trust.autolink import AUTO_LINK_ACTOR

from .test_trust_console import PKCS10, Plane, _alert, _certs, start_plane

RESPONSE = {
    "quarantine": [{"name": "rtu-on-high", "min_severity": "high", "types": ["rtu"]}],
    "links": {"auto": "serial"},  # sources: idevid and provisioning (the default)
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    yield from start_plane(request, tmp_path_factory.mktemp("trust-autolink"), RESPONSE)


def _csr(*attributes: tuple[x509.ObjectIdentifier, str]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))


def _idevid_enroll(plane: Plane, serial: str) -> None:
    idevid, idevid_key = plane.acme.idevid(serial)
    cert_file, key_file = plane.files(idevid, idevid_key)
    with plane.client(cert_file, key_file) as client:
        response = client.post(
            "/.well-known/est/simpleenroll", content=_csr((NameOID.COMMON_NAME, serial)), headers=PKCS10
        )
    _certs(response)


def _token_enroll(plane: Plane, device_id: str, *extra: tuple[x509.ObjectIdentifier, str]) -> None:
    plane.trust.service.registry.register_device(device_id, group="acme")
    token = plane.trust.service.registry.create_token("acme", device_id=device_id)
    with plane.client() as client:
        response = client.post(
            "/.well-known/est/simpleenroll",
            content=_csr((NameOID.COMMON_NAME, device_id), *extra),
            headers={**PKCS10, "Authorization": f"Bearer {token}"},
        )
    _certs(response)


def _device(plane: Plane, key: str, **fields: Any) -> int:
    plane.ingest("devices", [{"id": key, "ips": ["10.9.1.7"], "local": True, "device_type": "rtu", **fields}])
    with plane.console.database.sessionmaker() as session:
        return int(session.scalars(select(Device.id).where(Device.device_key == key)).one())


def _detail(plane: Plane, device_id: str) -> dict[str, Any]:
    viewer = plane.console.bearer(plane.console.tokens["viewer"])
    response = plane.console.client.get(f"/api/v1/trust/devices/{device_id}", headers=viewer)
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


def test_an_idevid_serial_links_automatically_and_alerts_then_quarantine(plane: Plane) -> None:
    row = _device(plane, "serial-acme-8001", serial="ACME-8001")
    _idevid_enroll(plane, "ACME-8001")
    detail = _detail(plane, "ACME-8001")
    assert detail["attributes"] == [{"kind": "serial", "value": "ACME-8001", "source": "idevid"}]
    (link,) = detail["links"]
    assert (link["kind"], link["value"], link["created_by"], link["inventory_ids"]) == (
        "serial",
        "ACME-8001",
        AUTO_LINK_ACTOR,
        [row],
    )
    with plane.console.database.sessionmaker() as session:
        entry = session.scalars(
            select(AuditLog).where(AuditLog.target == "ACME-8001", AuditLog.action == "trust.link")
        ).one()
    assert entry.actor == AUTO_LINK_ACTOR
    assert entry.details["automatic"] is True
    # the automatic link is what lets the sensor's alert reach the quarantine rules
    plane.ingest("alerts", [_alert("auto-critical", "critical", "serial-acme-8001")])
    assert plane.trust.service.registry.is_quarantined("ACME-8001")


def test_an_inventory_device_reported_after_enrollment_is_linked_on_ingest(plane: Plane) -> None:
    _idevid_enroll(plane, "ACME-8002")
    assert _detail(plane, "ACME-8002")["links"] == []
    row = _device(plane, "serial-acme-8002", serial="ACME-8002")
    (link,) = _detail(plane, "ACME-8002")["links"]
    assert (link["created_by"], link["inventory_ids"]) == (AUTO_LINK_ACTOR, [row])


def test_a_claimed_serial_is_only_proposed_and_an_analyst_confirms_it(plane: Plane) -> None:
    row = _device(plane, "serial-tok-9001", serial="TOK-9001")
    _token_enroll(plane, "tok-9001", (NameOID.SERIAL_NUMBER, "TOK-9001"))
    assert _detail(plane, "tok-9001")["links"] == []  # a CSR's serial is the device's own claim
    viewer = plane.console.bearer(plane.console.tokens["viewer"])
    analyst = plane.console.bearer(plane.console.tokens["analyst"])
    page = plane.console.client.get("/api/v1/trust/link-proposals?device_id=tok-9001", headers=viewer).json()
    assert page["total"] == 1
    (proposal,) = page["items"]
    assert proposal == {
        "device_id": "tok-9001",
        "kind": "serial",
        "value": "TOK-9001",
        "sources": ["csr"],
        "inventory_ids": [row],
        "others": [],
        "automatic": False,
    }
    decision = {"device_id": "tok-9001", "kind": "serial", "value": "TOK-9001"}
    refused = plane.console.client.post("/api/v1/trust/link-proposals/confirm", json=decision, headers=viewer)
    assert refused.status_code == 403
    confirmed = plane.console.client.post(
        "/api/v1/trust/link-proposals/confirm", json=decision, headers=analyst
    )
    assert confirmed.status_code == 201, confirmed.text
    assert (confirmed.json()["created_by"], confirmed.json()["inventory_ids"]) == ("analyst-user", [row])
    again = plane.console.client.post("/api/v1/trust/link-proposals/confirm", json=decision, headers=analyst)
    assert again.status_code == 404  # no open proposal any more
    listed = plane.console.client.get("/api/v1/trust/link-proposals?device_id=tok-9001", headers=viewer)
    assert listed.json()["total"] == 0


def test_a_rejected_proposal_is_not_proposed_again(plane: Plane) -> None:
    mac = "02:00:5e:10:01:01"
    _device(plane, f"mac:{mac}", mac=mac)
    _token_enroll(plane, "tok-mac-1", (NameOID.SERIAL_NUMBER, mac.upper()))
    viewer = plane.console.bearer(plane.console.tokens["viewer"])
    analyst = plane.console.bearer(plane.console.tokens["analyst"])
    page = plane.console.client.get("/api/v1/trust/link-proposals?device_id=tok-mac-1", headers=viewer).json()
    assert {(p["kind"], p["value"]) for p in page["items"]} == {("mac", mac)}
    decision = {"device_id": "tok-mac-1", "kind": "mac", "value": mac, "reason": "a shared gateway"}
    rejected = plane.console.client.post(
        "/api/v1/trust/link-proposals/reject", json=decision, headers=analyst
    )
    assert rejected.status_code == 200, rejected.text
    page = plane.console.client.get("/api/v1/trust/link-proposals?device_id=tok-mac-1", headers=viewer).json()
    assert page["items"] == []
    twice = plane.console.client.post("/api/v1/trust/link-proposals/reject", json=decision, headers=analyst)
    assert twice.status_code == 404  # no open proposal any more
    with plane.console.database.sessionmaker() as session:
        entry = session.scalars(
            select(AuditLog).where(AuditLog.target == "tok-mac-1", AuditLog.action == "trust.link.reject")
        ).one()
    assert (entry.actor, entry.details["reason"]) == ("analyst-user", "a shared gateway")


def test_a_provisioned_serial_links_unless_another_identity_claims_it(plane: Plane) -> None:
    analyst = plane.console.bearer(plane.console.tokens["analyst"])
    viewer = plane.console.bearer(plane.console.tokens["viewer"])
    row = _device(plane, "serial-prov-1", serial="PROV-1")
    _device(plane, "serial-dup-1", serial="DUP-1")
    for name in ("prov-1", "dup-a", "dup-b"):
        plane.trust.service.registry.register_device(name, group="acme")
    refused = plane.console.client.post(
        "/api/v1/trust/devices/prov-1/attributes", json={"kind": "serial", "value": "PROV-1"}, headers=viewer
    )
    assert refused.status_code == 403
    added = plane.console.client.post(
        "/api/v1/trust/devices/prov-1/attributes", json={"kind": "serial", "value": "PROV-1"}, headers=analyst
    )
    assert added.status_code == 201, added.text
    assert added.json() == {"kind": "serial", "value": "PROV-1", "source": "provisioning"}
    (link,) = _detail(plane, "prov-1")["links"]
    assert (link["created_by"], link["inventory_ids"]) == (AUTO_LINK_ACTOR, [row])
    bad = plane.console.client.post(
        "/api/v1/trust/devices/prov-1/attributes", json={"kind": "mac", "value": "nope"}, headers=analyst
    )
    assert bad.status_code == 422
    missing = plane.console.client.post(
        "/api/v1/trust/devices/nobody/attributes", json={"kind": "serial", "value": "X"}, headers=analyst
    )
    assert missing.status_code == 404
    for name in ("dup-a", "dup-b"):
        response = plane.console.client.post(
            f"/api/v1/trust/devices/{name}/attributes",
            json={"kind": "serial", "value": "DUP-1"},
            headers=analyst,
        )
        assert response.status_code == 201
    # the first claim was unambiguous and linked; the second is only proposed, naming the first
    assert [link["created_by"] for link in _detail(plane, "dup-a")["links"]] == [AUTO_LINK_ACTOR]
    assert _detail(plane, "dup-b")["links"] == []
    page = plane.console.client.get("/api/v1/trust/link-proposals", headers=viewer).json()
    twins = {p["device_id"]: p for p in page["items"] if p["value"] == "DUP-1"}
    assert set(twins) == {"dup-b"}
    assert twins["dup-b"]["others"] == ["dup-a"]
    assert twins["dup-b"]["automatic"] is False
    assert plane.trust.errors.get("link", 0) == 0
