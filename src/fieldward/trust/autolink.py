"""Proposed and automatic links between device identities and inventory devices (docs/trust/console.md).

A device identity carries hardware attributes (``trust_device_attributes``, revision 0009): the serial
number and MAC address found in its manufacturer certificate (IDevID), in the subject of its own
certificate request (CSR), or entered by an operator (a provisioning record). The sensor's inventory
reports the serial numbers and MAC addresses it decodes from the wire. Where an attribute equals an
inventory device's serial or MAC exactly, :meth:`LinkProposals.proposals` offers the link an analyst
would otherwise type; :meth:`LinkProposals.confirm` makes it (a ``serial`` or ``mac`` link of
:class:`~fieldward.trust.response.TrustLinks`), :meth:`LinkProposals.reject` keeps it from being
offered again.

:meth:`LinkProposals.auto_link` makes links without an analyst only where :class:`LinkSettings` allow
it (off by default) and only when the match is unambiguous: the attribute's kind is allowed
(``serial`` by default: MAC addresses are spoofable on the wire and reused by gateways), its source is
trusted (``idevid`` and ``provisioning`` by default: a CSR's subject is whatever the device claims),
at least one inventory device has exactly that value, and no other identity has the same attribute
or a link with that value. Ambiguity is judged when the link would be made: a link made before a
second identity claimed the same serial stays (the second one's match is only proposed, naming the
first in ``others``; an analyst removes the wrong link). A rejected proposal is never linked
automatically. Every automatic link is audited.

Values are normalised as links are (:func:`~fieldward.trust.response.normalise_link`): MACs lowercase
with colons, serials compared exactly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fieldward.store.database import Database
from fieldward.store.models import Device
from fieldward.store.trust_models import (
    ATTRIBUTE_SOURCES,
    TrustDevice,
    TrustDeviceAttribute,
    TrustDeviceLink,
    TrustLinkRejection,
)
from fieldward.trust.errors import TrustError
from fieldward.trust.response import LinkRecord, TrustLinks, normalise_link

if TYPE_CHECKING:  # quarantine imports this module (LinkSettings)
    from fieldward.trust.quarantine import AuditEntry

__all__ = [
    "ATTRIBUTE_KINDS",
    "AUTO_LINK_ACTOR",
    "TRUSTED_SOURCES",
    "AttributeRecord",
    "LinkProposal",
    "LinkProposals",
    "LinkSettings",
    "attributes_of_certificate",
    "attributes_of_csr",
]

log = logging.getLogger(__name__)

ATTRIBUTE_KINDS = ("serial", "mac")
AUTO_LINK_ACTOR = "fieldward:auto-link"
TRUSTED_SOURCES = ("idevid", "provisioning")
"""Attribute sources trusted for automatic links by default (a CSR's subject is only claimed)."""
_MAC = re.compile(r"[0-9a-fA-F]{2}([:-]?)[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}")
_MAX_MATCHES = 1000
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """When links are made without an analyst (the ``links`` section of the response settings file,
    :func:`fieldward.trust.quarantine.load_quarantine_settings`).

    auto: the attribute kinds linked automatically; empty (the default): none, every match is only a
        proposal
    sources: the attribute sources trusted for automatic links
    """

    auto: tuple[str, ...] = ()
    sources: tuple[str, ...] = TRUSTED_SOURCES

    def __post_init__(self) -> None:
        if bad := [k for k in self.auto if k not in ATTRIBUTE_KINDS]:
            raise TrustError(f"links.auto: {', '.join(bad)} is not one of {', '.join(ATTRIBUTE_KINDS)}")
        if bad := [s for s in self.sources if s not in ATTRIBUTE_SOURCES]:
            raise TrustError(f"links.sources: {', '.join(bad)} is not one of {', '.join(ATTRIBUTE_SOURCES)}")

    @classmethod
    def from_mapping(cls, document: object, source: str = "<links>") -> LinkSettings:
        """From ``{"auto": "off" | "serial" | [kinds], "sources": [sources]}``."""
        if document is None:
            return cls()
        if not isinstance(document, Mapping) or set(document) - {"auto", "sources"}:
            raise TrustError(f"{source}: 'links' is a mapping with 'auto' and optionally 'sources'")
        auto = document.get("auto", "off")
        if auto in ("off", None, False):
            kinds: tuple[str, ...] = ()
        elif isinstance(auto, str):
            kinds = (auto,)
        elif isinstance(auto, list) and all(isinstance(k, str) for k in auto):
            kinds = tuple(auto)
        else:
            raise TrustError(f"{source}: links.auto is 'off', a kind or a list of kinds")
        sources = document.get("sources", list(TRUSTED_SOURCES))
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise TrustError(f"{source}: links.sources is a list of attribute sources")
        try:
            return cls(kinds, tuple(sources))
        except TrustError as exc:
            raise TrustError(f"{source}: {exc}") from None


# -- attributes from certificates -----------------------------------------------------------------


def _name_attributes(name: x509.Name) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for attribute in name.get_attributes_for_oid(NameOID.SERIAL_NUMBER):
        if isinstance(attribute.value, str) and attribute.value.strip():
            found.append(("serial", attribute.value))
    for oid in (NameOID.COMMON_NAME, NameOID.SERIAL_NUMBER):
        for attribute in name.get_attributes_for_oid(oid):
            if isinstance(attribute.value, str) and _MAC.fullmatch(attribute.value.strip()):
                found.append(("mac", attribute.value))
    out: list[tuple[str, str]] = []
    for kind, value in found:
        try:
            pair = (kind, normalise_link(kind, value))
        except TrustError:
            continue  # not printable or too long: not a usable serial
        if pair not in out:
            out.append(pair)
    return out


def attributes_of_certificate(certificate: x509.Certificate) -> list[tuple[str, str]]:
    """``(kind, value)`` of an IDevID: its subject's serialNumber (X.520 2.5.4.5, where IEEE 802.1AR
    puts the device serial) as ``serial``, and a MAC address given as its CN or serialNumber as
    ``mac``."""
    return _name_attributes(certificate.subject)


def attributes_of_csr(csr: x509.CertificateSigningRequest) -> list[tuple[str, str]]:
    """``(kind, value)`` claimed in a CSR's subject (as :func:`attributes_of_certificate`)."""
    try:
        return _name_attributes(csr.subject)
    except ValueError:  # a malformed subject was refused by the CA already; nothing to claim
        return []


def _pair_in(
    pairs: Sequence[tuple[str, str]], table: type[TrustDeviceAttribute] | type[TrustDeviceLink]
) -> ColumnElement[bool]:
    """Rows of ``table`` whose (kind, value) is one of ``pairs`` (one IN list per kind, so that the
    SQL stays flat however many pairs there are)."""
    by_kind: dict[str, list[str]] = {}
    for kind, value in pairs:
        by_kind.setdefault(kind, []).append(value)
    return or_(
        *(and_(table.kind == kind, table.value.in_(sorted(values))) for kind, values in by_kind.items())
    )


# -- records --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttributeRecord:
    device_id: str
    kind: str
    value: str
    source: str


@dataclass(frozen=True, slots=True)
class LinkProposal:
    """A link an analyst may confirm: the identity's attribute equals inventory devices' value.

    sources: where the identity's attribute comes from
    others: other identities that have the same attribute or are linked by the same value (an
        ambiguous match: never automatic)
    """

    device_id: str
    kind: str
    value: str
    sources: tuple[str, ...]
    inventory_ids: tuple[int, ...]
    others: tuple[str, ...] = ()

    def automatic(self, settings: LinkSettings) -> bool:
        """Whether ``settings`` let this proposal become a link without an analyst."""
        return (
            self.kind in settings.auto
            and bool(self.inventory_ids)
            and not self.others
            and any(source in settings.sources for source in self.sources)
        )


@dataclass
class LinkProposals:
    """Attributes of device identities, the link proposals they give, and automatic links."""

    database: Database
    links: TrustLinks
    settings: LinkSettings = field(default_factory=LinkSettings)
    audit: Callable[[AuditEntry], None] | None = None

    # attributes ----------------------------------------------------------------------------------

    def record(self, device_id: str, kind: str, value: str, source: str) -> AttributeRecord:
        """Store an attribute (idempotent); TrustError for an unknown identity, kind, source or a bad
        value."""
        if kind not in ATTRIBUTE_KINDS:
            raise TrustError(f"an attribute kind is one of {', '.join(ATTRIBUTE_KINDS)}")
        if source not in ATTRIBUTE_SOURCES:
            raise TrustError(f"an attribute source is one of {', '.join(ATTRIBUTE_SOURCES)}")
        stored = normalise_link(kind, value)
        with self.database.session() as session:
            if session.scalar(select(TrustDevice.id).where(TrustDevice.device_id == device_id)) is None:
                raise TrustError(f"no device identity {device_id!r}")
        try:
            with self.database.session() as session:
                session.add(TrustDeviceAttribute(device_id=device_id, kind=kind, value=stored, source=source))
        except IntegrityError:
            pass  # recorded already (or concurrently)
        return AttributeRecord(device_id, kind, stored, source)

    def record_enrollment(
        self,
        device_id: str,
        bootstrap: str,
        idevid_chain: Sequence[x509.Certificate],
        csr: x509.CertificateSigningRequest,
    ) -> list[AttributeRecord]:
        """The attributes of an initial enrollment (the EST router's ``on_enrolled``): the IDevID's
        (source ``idevid``, verified by the manufacturer CA) and the CSR subject's (source ``csr``)."""
        found: list[AttributeRecord] = []
        if bootstrap == "idevid" and idevid_chain:
            for kind, value in attributes_of_certificate(idevid_chain[0]):
                found.append(self.record(device_id, kind, value, "idevid"))
        for kind, value in attributes_of_csr(csr):
            found.append(self.record(device_id, kind, value, "csr"))
        return found

    def attributes(self, device_id: str) -> list[AttributeRecord]:
        with self.database.sessionmaker() as session:
            rows = session.scalars(
                select(TrustDeviceAttribute)
                .where(TrustDeviceAttribute.device_id == device_id)
                .order_by(TrustDeviceAttribute.kind, TrustDeviceAttribute.value, TrustDeviceAttribute.source)
            )
            return [AttributeRecord(r.device_id, r.kind, r.value, r.source) for r in rows]

    # proposals -----------------------------------------------------------------------------------

    def proposals(
        self,
        device_ids: Sequence[str] | None = None,
        *,
        values: Iterable[tuple[str, str]] | None = None,
        limit: int = 1000,
    ) -> list[LinkProposal]:
        """Current proposals (attributes matching inventory devices, not linked yet, not rejected),
        by device id, kind and value; ``device_ids`` / ``values`` narrow them."""
        wanted = None if values is None else sorted(set(values))
        if wanted is not None and not wanted:
            return []
        if wanted is not None and len(wanted) > _CHUNK:  # e.g. a large inventory batch
            found: list[LinkProposal] = []
            for start in range(0, len(wanted), _CHUNK):
                found.extend(self.proposals(device_ids, values=wanted[start : start + _CHUNK], limit=limit))
            return found[:limit]
        attribute = TrustDeviceAttribute
        with self.database.sessionmaker() as session:
            query = select(attribute.device_id, attribute.kind, attribute.value, attribute.source)
            if device_ids is not None:
                query = query.where(attribute.device_id.in_(list(device_ids)))
            if wanted is not None:
                query = query.where(_pair_in(wanted, attribute))
            sources: dict[tuple[str, str, str], set[str]] = {}
            for device_id, kind, value, source in session.execute(query):
                sources.setdefault((device_id, kind, value), set()).add(source)
            if not sources:
                return []
            pairs = sorted({(kind, value) for _, kind, value in sources})
            # who else claims each value: an attribute, or a link made by hand
            claimed: dict[tuple[str, str], set[str]] = {}
            for start in range(0, len(pairs), _CHUNK):
                chunk = pairs[start : start + _CHUNK]
                for table in (TrustDeviceAttribute, TrustDeviceLink):
                    rows = session.execute(
                        select(table.device_id, table.kind, table.value).where(_pair_in(chunk, table))
                    )
                    for device_id, kind, value in rows:
                        claimed.setdefault((kind, value), set()).add(device_id)
            matches = self._matches(session, pairs)
            identities = sorted({device_id for device_id, _, _ in sources})
            done: set[tuple[str, str, str]] = set()  # linked already, or rejected
            for start in range(0, len(identities), _CHUNK):
                chunk_ids = identities[start : start + _CHUNK]
                for other in (TrustDeviceLink, TrustLinkRejection):
                    rows = session.execute(
                        select(other.device_id, other.kind, other.value).where(other.device_id.in_(chunk_ids))
                    )
                    done.update((d, k, v) for d, k, v in rows)
        out = [
            LinkProposal(
                device_id,
                kind,
                value,
                tuple(sorted(found)),
                tuple(matches[(kind, value)]),
                tuple(sorted(claimed.get((kind, value), set()) - {device_id})),
            )
            for (device_id, kind, value), found in sorted(sources.items())
            if matches.get((kind, value)) and (device_id, kind, value) not in done
        ]
        return out[:limit]

    @staticmethod
    def _matches(session: Session, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[int]]:
        serials = sorted({v for k, v in pairs if k == "serial"})
        macs = sorted({v for k, v in pairs if k == "mac"})
        found: dict[tuple[str, str], list[int]] = {}
        for start in range(0, len(serials), 500):
            for row_id, serial in session.execute(
                select(Device.id, Device.serial).where(Device.serial.in_(serials[start : start + 500]))
            ):
                found.setdefault(("serial", str(serial)), []).append(int(row_id))
        for start in range(0, len(macs), 500):
            for row_id, mac in session.execute(
                select(Device.id, Device.mac).where(Device.mac.in_(macs[start : start + 500]))
            ):
                found.setdefault(("mac", str(mac)), []).append(int(row_id))
        return {key: sorted(ids)[:_MAX_MATCHES] for key, ids in found.items()}

    def _proposal(self, device_id: str, kind: str, value: str) -> LinkProposal:
        stored = normalise_link(kind, value) if kind in ATTRIBUTE_KINDS else value
        for proposal in self.proposals([device_id], values=[(kind, stored)]):
            if (proposal.kind, proposal.value) == (kind, stored):
                return proposal
        raise TrustError(f"no open proposal to link {device_id} by {kind} {stored}")

    def confirm(self, device_id: str, kind: str, value: str, *, by: str) -> LinkRecord:
        """Make a proposed link (TrustError when it is not an open proposal)."""
        proposal = self._proposal(device_id, kind, value)
        return self.links.link(device_id, proposal.kind, proposal.value, by=by)

    def reject(self, device_id: str, kind: str, value: str, *, by: str, reason: str | None = None) -> None:
        """Never propose (nor link automatically) this link again; TrustError when it is not an open
        proposal."""
        proposal = self._proposal(device_id, kind, value)
        try:
            with self.database.session() as session:
                session.add(
                    TrustLinkRejection(
                        device_id=device_id,
                        kind=proposal.kind,
                        value=proposal.value,
                        rejected_by=by[:200],
                        reason=None if reason is None else reason[:1000],
                    )
                )
        except IntegrityError:
            pass  # rejected concurrently

    # automatic links ------------------------------------------------------------------------------

    def auto_link(
        self, device_ids: Sequence[str] | None = None, *, values: Iterable[tuple[str, str]] | None = None
    ) -> list[LinkRecord]:
        """Link every proposal the settings allow (see the module docstring); the links made. Each is
        audited (``trust.link`` by ``fieldward:auto-link``)."""
        if not self.settings.auto:
            return []
        from fieldward.trust.quarantine import AuditEntry

        made: list[LinkRecord] = []
        for proposal in self.proposals(device_ids, values=values):
            if not proposal.automatic(self.settings):
                continue
            try:
                record = self.links.link(
                    proposal.device_id, proposal.kind, proposal.value, by=AUTO_LINK_ACTOR
                )
            except TrustError as exc:  # the identity vanished in between
                log.info("automatic link of %s skipped: %s", proposal.device_id, exc)
                continue
            made.append(record)
            log.info("linked %s to inventory by %s automatically", proposal.device_id, proposal.kind)
            if self.audit is not None:
                self.audit(
                    AuditEntry(
                        AUTO_LINK_ACTOR,
                        "trust.link",
                        proposal.device_id,
                        {
                            "kind": record.kind,
                            "value": record.value,
                            "link": record.id,
                            "automatic": True,
                            "sources": list(proposal.sources),
                            "inventory_ids": list(proposal.inventory_ids[:100]),
                        },
                    )
                )
        return made
