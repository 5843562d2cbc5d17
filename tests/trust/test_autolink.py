"""Link proposals and automatic links (revision 0009), on SQLite and PostgreSQL: attributes read from
IDevIDs and CSRs, proposals where they equal inventory serials or MACs exactly, confirmation and
rejection, and automatic links only for unambiguous matches from trusted sources when the response
settings allow them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from fieldward.store.database import Database
from fieldward.store.models import AuditLog, Device, Sensor
from fieldward.trust.autolink import (
    AUTO_LINK_ACTOR,
    LinkProposals,
    LinkSettings,
    attributes_of_certificate,
    attributes_of_csr,
)
from fieldward.trust.errors import TrustError
from fieldward.trust.quarantine import QuarantineSettings, database_audit
from fieldward.trust.registry import TrustRegistry
from fieldward.trust.response import TrustLinks

from .conftest import make_key, make_manufacturer
from .test_state import db

__all__ = ["db"]


def _csr(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.CertificateSigningRequest:
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(make_key(), hashes.SHA256())


def _inventory(database: Database, **fields: Any) -> int:
    tag = uuid.uuid4().hex[:8]
    with database.session() as session:
        sensor = Sensor(name=f"autolink-{tag}")
        session.add(sensor)
        session.flush()
        device = Device(sensor_id=sensor.id, device_key=f"k-{tag}", **fields)
        session.add(device)
        session.flush()
        return int(device.id)


def _identity(database: Database, device_id: str) -> None:
    TrustRegistry(database).register_device(device_id, device_type="rtu")


def test_attributes_come_from_the_idevid_subject_and_the_csr() -> None:
    acme = make_manufacturer("Acme CA")
    idevid, _ = acme.idevid("ACME-0001")
    assert attributes_of_certificate(idevid) == [("serial", "ACME-0001")]
    csr = _csr(
        (NameOID.COMMON_NAME, "00-1B-1B-30-89-24"),
        (NameOID.SERIAL_NUMBER, "SN 42"),
    )
    assert attributes_of_csr(csr) == [("serial", "SN 42"), ("mac", "00:1b:1b:30:89:24")]
    assert attributes_of_csr(_csr((NameOID.COMMON_NAME, "rtu-7"))) == []


def test_link_settings_are_validated() -> None:
    assert LinkSettings.from_mapping(None) == LinkSettings()
    assert LinkSettings.from_mapping({"auto": "off"}).auto == ()
    settings = LinkSettings.from_mapping({"auto": ["serial", "mac"], "sources": ["idevid"]})
    assert (settings.auto, settings.sources) == (("serial", "mac"), ("idevid",))
    for bad, message in (
        ({"auto": "ip"}, "ip is not one of"),
        ({"auto": "serial", "sources": ["rumour"]}, "rumour is not one of"),
        ({"auto": 3}, "links.auto"),
        ({"auto": "serial", "when": "always"}, "'links' is a mapping"),
    ):
        with pytest.raises(TrustError, match=message):
            LinkSettings.from_mapping(bad, "r.yaml")
    response = QuarantineSettings.from_mapping({"quarantine": [], "links": {"auto": "serial"}})
    assert response.links.auto == ("serial",)
    assert QuarantineSettings.from_mapping({"quarantine": []}).links.auto == ()


def test_proposals_confirm_and_reject(db: Database) -> None:
    proposals = LinkProposals(db, TrustLinks(db))
    for name in ("al-1", "al-2", "al-3"):
        _identity(db, name)
    row = _inventory(db, serial="AL-SERIAL-1", mac="02:00:5e:aa:00:01")
    other_row = _inventory(db, serial="AL-SERIAL-1")
    idevid, _ = make_manufacturer("Acme CA").idevid("AL-SERIAL-1")
    csr = _csr((NameOID.COMMON_NAME, "al-1"), (NameOID.SERIAL_NUMBER, "AL-SERIAL-1"))
    recorded = proposals.record_enrollment("al-1", "idevid", [idevid], csr)
    assert {(r.kind, r.value, r.source) for r in recorded} == {
        ("serial", "AL-SERIAL-1", "idevid"),
        ("serial", "AL-SERIAL-1", "csr"),
    }
    proposals.record("al-2", "mac", "02-00-5E-AA-00-01", "csr")
    proposals.record("al-3", "serial", "NO-SUCH-SERIAL", "provisioning")
    with pytest.raises(TrustError, match="no device identity"):
        proposals.record("nobody", "serial", "x", "provisioning")
    with pytest.raises(TrustError, match="MAC"):
        proposals.record("al-2", "mac", "not-a-mac", "provisioning")
    found = {(p.device_id, p.kind, p.value): p for p in proposals.proposals(["al-1", "al-2", "al-3"])}
    assert set(found) == {("al-1", "serial", "AL-SERIAL-1"), ("al-2", "mac", "02:00:5e:aa:00:01")}
    serial = found[("al-1", "serial", "AL-SERIAL-1")]
    assert serial.sources == ("csr", "idevid")
    assert serial.inventory_ids == tuple(sorted((row, other_row)))
    assert serial.others == ()
    # confirm: the link exists and the proposal is gone
    link = proposals.confirm("al-1", "serial", "AL-SERIAL-1", by="analyst")
    assert set(link.inventory_ids) == {row, other_row}
    assert not proposals.proposals(["al-1"])
    with pytest.raises(TrustError, match="no open proposal"):
        proposals.confirm("al-1", "serial", "AL-SERIAL-1", by="analyst")
    # reject: never proposed again, and never linked automatically
    proposals.reject("al-2", "mac", "02:00:5E:AA:00:01", by="analyst", reason="shared gateway MAC")
    assert not proposals.proposals(["al-2"])
    automatic = LinkProposals(db, TrustLinks(db), LinkSettings(("mac",), ("csr",)))
    assert automatic.auto_link(["al-2"]) == []
    with pytest.raises(TrustError, match="no open proposal"):
        proposals.reject("al-2", "mac", "02:00:5e:aa:00:01", by="analyst")


def test_automatic_links_need_settings_a_trusted_source_and_an_unambiguous_match(db: Database) -> None:
    audit = database_audit(db)
    for name in ("auto-idevid", "auto-csr", "auto-twin-a", "auto-twin-b", "auto-mac", "auto-later"):
        _identity(db, name)
    for serial in ("AUTO-1", "AUTO-2", "AUTO-TWIN"):
        _inventory(db, serial=serial)
    mac_row = _inventory(db, mac="02:00:5e:bb:00:01")
    off = LinkProposals(db, TrustLinks(db), audit=audit)
    on = LinkProposals(db, TrustLinks(db), LinkSettings(("serial",)), audit=audit)
    off.record("auto-idevid", "serial", "AUTO-1", "idevid")
    off.record("auto-csr", "serial", "AUTO-2", "csr")  # claimed by the device itself
    off.record("auto-twin-a", "serial", "AUTO-TWIN", "provisioning")
    off.record("auto-twin-b", "serial", "AUTO-TWIN", "provisioning")  # two identities, one serial
    off.record("auto-mac", "mac", "02:00:5e:bb:00:01", "idevid")  # MAC: not in settings.auto
    off.record("auto-later", "serial", "AUTO-LATER", "idevid")  # no inventory device yet
    names = ["auto-idevid", "auto-csr", "auto-twin-a", "auto-twin-b", "auto-mac", "auto-later"]
    assert off.auto_link(names) == []  # automatic links are off by default
    assert not TrustLinks(db).links("auto-idevid")
    made = on.auto_link(names)
    assert [(m.device_id, m.kind, m.value, m.created_by) for m in made] == [
        ("auto-idevid", "serial", "AUTO-1", AUTO_LINK_ACTOR)
    ]
    twins = {p.device_id: p for p in on.proposals(["auto-twin-a", "auto-twin-b"])}
    assert twins["auto-twin-b"].others == ("auto-twin-a",)
    assert twins["auto-twin-a"].others == ("auto-twin-b",)
    assert not twins["auto-twin-a"].automatic(on.settings)
    assert {p.device_id for p in on.proposals(names)} == {
        "auto-csr",
        "auto-twin-a",
        "auto-twin-b",
        "auto-mac",
    }
    # the inventory device appears later (a sensor's batch): the match is linked then
    later_row = _inventory(db, serial="AUTO-LATER")
    batch = [("serial", f"NOISE-{i}") for i in range(1200)] + [
        ("mac", f"02:00:5e:cc:{i // 256:02x}:{i % 256:02x}") for i in range(1200)
    ]
    again = on.auto_link(values=[*batch, ("serial", "AUTO-LATER")])  # a large inventory batch
    assert [(m.device_id, m.inventory_ids) for m in again] == [("auto-later", (later_row,))]
    assert on.auto_link(names) == []  # nothing left to do
    # an identity linked by hand to a serial makes another identity's claim ambiguous
    _identity(db, "auto-hand")
    _identity(db, "auto-claim")
    _inventory(db, serial="AUTO-HAND")
    TrustLinks(db).link("auto-hand", "serial", "AUTO-HAND", by="analyst")
    off.record("auto-claim", "serial", "AUTO-HAND", "idevid")
    assert on.auto_link(["auto-claim"]) == []
    (claim,) = on.proposals(["auto-claim"])
    assert claim.others == ("auto-hand",)
    with_mac = LinkProposals(db, TrustLinks(db), LinkSettings(("serial", "mac")), audit=audit)
    assert [(m.device_id, m.inventory_ids) for m in with_mac.auto_link(names)] == [("auto-mac", (mac_row,))]
    with db.sessionmaker() as session:
        entries = list(
            session.scalars(
                select(AuditLog).where(AuditLog.actor == AUTO_LINK_ACTOR, AuditLog.action == "trust.link")
            )
        )
    audited = {e.target: e.details for e in entries}
    assert set(audited) >= {"auto-idevid", "auto-later", "auto-mac"}
    assert audited["auto-idevid"]["automatic"] is True
    assert audited["auto-idevid"]["sources"] == ["idevid"]
    assert "auto-csr" not in audited


def test_attributes_are_normalised_and_recorded_once(db: Database) -> None:
    proposals = LinkProposals(db, TrustLinks(db))
    _identity(db, "uniq-1")
    first = proposals.record("uniq-1", "serial", " U-1 ", "provisioning")
    again = proposals.record("uniq-1", "serial", "U-1", "provisioning")
    assert first == again
    assert first.value == "U-1"
    assert [(a.kind, a.value, a.source) for a in proposals.attributes("uniq-1")] == [
        ("serial", "U-1", "provisioning")
    ]
    with pytest.raises(TrustError, match="attribute source"):
        proposals.record("uniq-1", "serial", "U-1", "rumour")
    with pytest.raises(TrustError, match="attribute kind"):
        proposals.record("uniq-1", "inventory", "7", "provisioning")
