"""The join of the device plane and the sensor's inventory: links between device identities and
inventory devices, and the response to the sensor's alerts (issue 8, docs/trust/console.md).

A device identity (``trust_devices.device_id``, the certificate's CN) and an inventory device (a
``devices`` row: what one sensor saw on the wire) are different records of the same thing. An
analyst (or a provisioning script) links them in ``trust_device_links``, by one of:

- ``inventory``: one inventory row id (exact; the link dies with the row);
- ``mac``: a MAC address, matching every inventory row with that MAC, also rows sensors report later
  (normalised to lowercase ``aa:bb:cc:dd:ee:ff``);
- ``serial``: a serial number (as the sensor's protocol decoders report it, compared exactly).

IP addresses are deliberately not a link kind: they are reassigned (DHCP, NAT), and a wrong link
would quarantine the wrong device.

:class:`TrustLinks` resolves links both ways. :func:`alerts_to_quarantine` turns the alerts of one
ingested batch into ``(alert row, device identity)`` pairs for
:meth:`fieldward.trust.quarantine.QuarantineService.on_alert`; :func:`open_alert_severity` gives the
trust service the highest severity among a device's open alerts (the policy's ``no open alert >=``
condition).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fieldward.assess.risk import RiskSettings
from fieldward.store.database import Database
from fieldward.store.models import Alert, Device
from fieldward.store.trust_models import LINK_KINDS, TrustDevice, TrustDeviceLink
from fieldward.trust.context import SEVERITIES, severity_rank
from fieldward.trust.errors import TrustError

__all__ = [
    "ALERT_ENDS",
    "INACTIVE_ALERT_STATUSES",
    "LinkRecord",
    "TrustLinks",
    "alerts_to_quarantine",
    "normalise_link",
    "open_alert_severity",
]

ALERT_ENDS = ("src", "dst")
INACTIVE_ALERT_STATUSES = RiskSettings().inactive_alert_statuses
"""Alert statuses that are not open (the risk model's; the console's triage closes with ``closed``)."""
_MAC = re.compile(r"[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}")


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """One link and the inventory rows it matches now."""

    id: int
    device_id: str
    kind: str
    value: str
    created_by: str
    inventory_ids: tuple[int, ...]


def normalise_link(kind: str, value: str) -> str:
    """The stored form of a link value; TrustError when it is not one."""
    text = value.strip()
    if kind == "inventory":
        if not text.isascii() or not text.isdigit() or not 1 <= int(text) < 2**63:
            raise TrustError("an inventory link names an inventory device id (a positive integer)")
        return str(int(text))
    if kind == "mac":
        lowered = text.lower()
        if not _MAC.fullmatch(lowered):
            raise TrustError("a MAC link needs a MAC address like 00:1b:1b:30:89:24")
        digits = re.sub(r"[^0-9a-f]", "", lowered)
        return ":".join(digits[i : i + 2] for i in range(0, 12, 2))
    if kind == "serial":
        if not text or len(text) > 255 or not text.isprintable():
            raise TrustError("a serial link needs a printable serial number of at most 255 characters")
        return text
    raise TrustError(f"the link kind must be one of {', '.join(LINK_KINDS)}")


def _matches(kind: str, value: str) -> ColumnElement[bool]:
    """The inventory rows a link matches."""
    if kind == "inventory":
        return Device.id == int(value)
    if kind == "mac":
        return Device.mac == value
    return Device.serial == value


class TrustLinks:
    """Links between device identities and inventory devices (``trust_device_links``)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def link(self, device_id: str, kind: str, value: str, *, by: str) -> LinkRecord:
        """Add a link (idempotent: the existing one is returned); TrustError for an unknown device
        identity, a bad value, or an inventory row that does not exist."""
        stored = normalise_link(kind, value)
        with self.database.session() as session:
            if session.scalar(select(TrustDevice.id).where(TrustDevice.device_id == device_id)) is None:
                raise TrustError(f"no device identity {device_id!r}")
            if kind == "inventory" and session.get(Device, int(stored)) is None:
                raise TrustError(f"no inventory device {stored}")
        try:
            with self.database.session() as session:
                session.add(
                    TrustDeviceLink(device_id=device_id, kind=kind, value=stored, created_by=by[:200])
                )
        except IntegrityError:
            pass  # linked already (or concurrently): the same link
        for record in self.links(device_id):
            if (record.kind, record.value) == (kind, stored):
                return record
        raise TrustError("the link vanished while it was written")  # pragma: no cover - a concurrent unlink

    def unlink(self, device_id: str, link_id: int) -> bool:
        with self.database.session() as session:
            result = session.execute(
                delete(TrustDeviceLink).where(
                    TrustDeviceLink.id == link_id, TrustDeviceLink.device_id == device_id
                )
            )
            return bool(getattr(result, "rowcount", 0))

    def links(self, device_id: str) -> list[LinkRecord]:
        """The device's links, each with the inventory rows it matches now."""
        with self.database.sessionmaker() as session:
            rows = list(
                session.scalars(
                    select(TrustDeviceLink)
                    .where(TrustDeviceLink.device_id == device_id)
                    .order_by(TrustDeviceLink.id)
                )
            )
            out = []
            for row in rows:
                ids = tuple(
                    int(i)
                    for i in session.scalars(
                        select(Device.id).where(_matches(row.kind, row.value)).order_by(Device.id).limit(1000)
                    )
                )
                out.append(LinkRecord(row.id, row.device_id, row.kind, row.value, row.created_by, ids))
            return out

    def inventory_of(self, device_ids: Sequence[str]) -> dict[str, set[int]]:
        """Inventory row ids per device identity (identities without a match are absent)."""
        if not device_ids:
            return {}
        with self.database.sessionmaker() as session:
            return self._inventory_of(session, device_ids)

    @staticmethod
    def _inventory_of(session: Session, device_ids: Sequence[str]) -> dict[str, set[int]]:
        found: dict[str, set[int]] = {}
        links = session.execute(
            select(TrustDeviceLink.device_id, TrustDeviceLink.kind, TrustDeviceLink.value).where(
                TrustDeviceLink.device_id.in_(list(device_ids))
            )
        ).all()
        for device_id, kind, value in links:
            ids = session.scalars(select(Device.id).where(_matches(kind, value)))
            found.setdefault(device_id, set()).update(int(i) for i in ids)
        return {k: v for k, v in found.items() if v}

    def identities_of(self, inventory_ids: Iterable[int]) -> dict[int, set[str]]:
        """Device identities per inventory row id (rows without a link are absent)."""
        ids = sorted(set(inventory_ids))
        if not ids:
            return {}
        with self.database.sessionmaker() as session:
            return self._identities_of(session, ids)

    @staticmethod
    def _identities_of(session: Session, ids: Sequence[int]) -> dict[int, set[str]]:
        rows = session.execute(select(Device.id, Device.mac, Device.serial).where(Device.id.in_(ids))).all()
        wanted: list[ColumnElement[bool]] = [
            and_(TrustDeviceLink.kind == "inventory", TrustDeviceLink.value.in_([str(i) for i in ids]))
        ]
        macs = {mac.lower() for _, mac, _ in rows if mac}
        serials = {serial for _, _, serial in rows if serial}
        if macs:
            wanted.append(and_(TrustDeviceLink.kind == "mac", TrustDeviceLink.value.in_(sorted(macs))))
        if serials:
            wanted.append(and_(TrustDeviceLink.kind == "serial", TrustDeviceLink.value.in_(sorted(serials))))
        by_key: dict[tuple[str, str], set[str]] = {}
        for device_id, kind, value in session.execute(
            select(TrustDeviceLink.device_id, TrustDeviceLink.kind, TrustDeviceLink.value).where(or_(*wanted))
        ):
            by_key.setdefault((kind, value), set()).add(device_id)
        found: dict[int, set[str]] = {}
        for row_id, mac, serial in rows:
            names = set(by_key.get(("inventory", str(row_id)), set()))
            if mac:
                names |= by_key.get(("mac", mac.lower()), set())
            if serial:
                names |= by_key.get(("serial", serial), set())
            if names:
                found[int(row_id)] = names
        return found


def open_alert_severity(database: Database, links: TrustLinks | None = None) -> Callable[[str], str | None]:
    """For :class:`~fieldward.trust.service.TrustService`: the highest severity among the open alerts
    (either end) of the inventory devices linked to a device identity; None when there are none."""
    links = links if links is not None else TrustLinks(database)

    def severity(device_id: str) -> str | None:
        inventory = links.inventory_of([device_id]).get(device_id)
        if not inventory:
            return None
        ids = sorted(inventory)
        with database.sessionmaker() as session:
            rank = session.scalar(
                select(Alert.severity_rank)
                .where(
                    or_(Alert.src_device_id.in_(ids), Alert.dst_device_id.in_(ids)),
                    Alert.status.not_in(sorted(INACTIVE_ALERT_STATUSES)),
                )
                .order_by(Alert.severity_rank.desc())
                .limit(1)
            )
            if rank is None:
                return None
            word = session.scalar(
                select(Alert.severity)
                .where(
                    or_(Alert.src_device_id.in_(ids), Alert.dst_device_id.in_(ids)),
                    Alert.status.not_in(sorted(INACTIVE_ALERT_STATUSES)),
                    Alert.severity_rank == rank,
                )
                .limit(1)
            )
        text = None if word is None else word.lower()
        return text if severity_rank(text) >= 0 else None

    return severity


def alerts_to_quarantine(
    database: Database,
    sensor_id: int,
    alert_keys: Iterable[str],
    *,
    min_severity: str = "high",
    ends: Sequence[str] = ALERT_ENDS,
) -> list[tuple[Alert, str]]:
    """The (alert row, device identity) pairs of one sensor's batch that the response must consider:
    open alerts of at least ``min_severity`` whose ``ends`` (source and/or destination inventory
    device) are linked to a device identity. The rows are detached (read-only snapshots)."""
    if min_severity not in SEVERITIES:
        raise ValueError(f"min_severity must be one of {', '.join(SEVERITIES)}")
    keys = sorted({k for k in alert_keys if isinstance(k, str) and k})
    if not keys:
        return []
    floor = SEVERITIES.index(min_severity)
    pairs: list[tuple[Alert, str]] = []
    with database.sessionmaker(expire_on_commit=False) as session:
        alerts: list[Alert] = []
        for start in range(0, len(keys), 500):
            alerts.extend(
                session.scalars(
                    select(Alert).where(
                        Alert.sensor_id == sensor_id, Alert.alert_key.in_(keys[start : start + 500])
                    )
                )
            )
        alerts = [
            a
            for a in alerts
            if severity_rank(a.severity) >= floor
            and (a.status or "new").lower() not in INACTIVE_ALERT_STATUSES
        ]
        ends_of = {
            a.id: [i for end, i in (("src", a.src_device_id), ("dst", a.dst_device_id)) if end in ends and i]
            for a in alerts
        }
        inventory = sorted({i for ids in ends_of.values() for i in ids})
        identities = TrustLinks._identities_of(session, inventory) if inventory else {}
        for alert in sorted(alerts, key=lambda a: a.id):
            names = sorted({n for i in ends_of[alert.id] for n in identities.get(i, set())})
            pairs.extend((alert, name) for name in names)
        session.expunge_all()
    return pairs
