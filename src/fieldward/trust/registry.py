"""The device plane's registry: enrollment groups, device identities, one-time enrollment tokens,
issued certificates, revocations and the quarantine flag, on SQLAlchemy (``store.trust_models``).

The CA (:mod:`fieldward.trust.ca`) records every certificate it issues here and reads revocations
back for the CRL, OCSP and ``verify``; EST (:mod:`fieldward.trust.est`) spends enrollment tokens
here. Each method runs in its own short transaction and returns plain frozen records, never ORM
objects, so callers hold no session. Token secrets are returned once by :meth:`create_token` and
only their SHA-256 digest is stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fieldward.store.database import Database
from fieldward.store.trust_models import (
    PROFILES,
    TrustCertificate,
    TrustDevice,
    TrustEnrollmentToken,
    TrustGroup,
)
from fieldward.trust.errors import EnrollmentError, TrustError

__all__ = [
    "DEVICE_ID_PATTERN",
    "REVOCATION_REASONS",
    "TOKEN_PREFIX",
    "CertificateRecord",
    "DeviceRecord",
    "GroupRecord",
    "TrustRegistry",
    "hash_token",
    "serial_hex",
]

TOKEN_PREFIX = "fwenr_"  # noqa: S105 - a prefix, not a secret
"""Enrollment tokens start with this, so they are recognisable in a leaked-secret scan."""
DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""A device id: the CN and ``urn:fieldward:device:<id>`` SAN of its certificate."""
REVOCATION_REASONS = (
    "unspecified",
    "key_compromise",
    "ca_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
    "certificate_hold",
    "privilege_withdrawn",
    "aa_compromise",
)
"""CRLReason names (RFC 5280 5.3.1) as ``cryptography.x509.ReasonFlags`` member names spell them."""


def hash_token(token: str) -> str:
    """The stored form of an enrollment token (SHA-256, hex): tokens are 256-bit random."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def serial_hex(serial: int) -> str:
    """A certificate serial as the registry keys it (lowercase hex, no leading zeros)."""
    return format(serial, "x")


def check_device_id(device_id: str) -> str:
    """``device_id`` if it is a valid device id, else an :class:`EnrollmentError`."""
    if not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise EnrollmentError("invalid device id (1-128 of A-Z a-z 0-9 . _ : -)")
    return device_id


def _utc(value: dt.datetime | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """An enrollment group and the defaults it gives its devices."""

    id: int
    name: str
    policy: str | None
    update_channel: str
    device_type: str | None
    validity_hours: int | None


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device identity, its group (name) and quarantine state."""

    device_id: str
    group: str | None
    device_type: str | None
    model: str | None
    firmware: str | None
    bootstrap: str
    quarantined: bool
    quarantine_reason: str | None
    enrolled: dt.datetime
    last_issued: dt.datetime | None


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """An issued certificate and its revocation state."""

    serial: str
    device_id: str
    profile: str
    subject: str
    fingerprint: str
    not_before: dt.datetime
    not_after: dt.datetime
    revoked_at: dt.datetime | None
    revocation_reason: str | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _group(row: TrustGroup) -> GroupRecord:
    return GroupRecord(row.id, row.name, row.policy, row.update_channel, row.device_type, row.validity_hours)


def _cert(row: TrustCertificate) -> CertificateRecord:
    return CertificateRecord(
        row.serial,
        row.device_id,
        row.profile,
        row.subject,
        row.fingerprint,
        row.not_before,
        row.not_after,
        row.revoked_at,
        row.revocation_reason,
    )


class TrustRegistry:
    """Groups, devices, tokens and certificates of one database (migrated to revision 0004+)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    # -- groups -----------------------------------------------------------------------------------

    def create_group(
        self,
        name: str,
        *,
        policy: str | None = None,
        update_channel: str = "stable",
        device_type: str | None = None,
        validity_hours: int | None = None,
        description: str | None = None,
    ) -> GroupRecord:
        """A new enrollment group; :class:`TrustError` when the name is taken or invalid."""
        if not name or len(name) > 128:
            raise TrustError("a group name has 1-128 characters")
        if validity_hours is not None and not 1 <= validity_hours <= 24 * 3650:
            raise TrustError("validity_hours must be between 1 and 87600")
        row = TrustGroup(
            name=name,
            policy=policy,
            update_channel=update_channel,
            device_type=device_type,
            validity_hours=validity_hours,
            description=description,
        )
        try:
            with self.database.session() as session:
                session.add(row)
                session.flush()
                return _group(row)
        except IntegrityError:
            raise TrustError(f"enrollment group {name!r} exists") from None

    def group(self, name: str) -> GroupRecord | None:
        with self.database.session() as session:
            row = session.scalar(select(TrustGroup).where(TrustGroup.name == name))
            return None if row is None else _group(row)

    def groups(self) -> list[GroupRecord]:
        with self.database.session() as session:
            return [_group(r) for r in session.scalars(select(TrustGroup).order_by(TrustGroup.name))]

    # -- enrollment tokens ------------------------------------------------------------------------

    def create_token(
        self,
        group: str,
        *,
        device_id: str | None = None,
        ttl: dt.timedelta = dt.timedelta(hours=24),
        now: dt.datetime | None = None,
    ) -> str:
        """A new one-time enrollment token for ``group`` (optionally only for ``device_id``).

        The returned secret is shown once; the registry keeps only its hash.
        """
        if device_id is not None:
            check_device_id(device_id)
        if ttl <= dt.timedelta(0):
            raise TrustError("a token's lifetime must be positive")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.database.session() as session:
            group_id = session.scalar(select(TrustGroup.id).where(TrustGroup.name == group))
            if group_id is None:
                raise TrustError(f"no enrollment group {group!r}")
            session.add(
                TrustEnrollmentToken(
                    token_hash=hash_token(token),
                    group_id=group_id,
                    device_id=device_id,
                    expires=_utc(now) + ttl,
                )
            )
        return token

    def consume_token(self, token: str, device_id: str, *, now: dt.datetime | None = None) -> GroupRecord:
        """Spend ``token`` for ``device_id`` and return its group.

        One conditional UPDATE checks and spends the token, so two concurrent enrollments with the
        same token cannot both succeed. Refusals are deliberately alike (:class:`EnrollmentError`
        "invalid or used enrollment token") except for a device mismatch.
        """
        moment = _utc(now)
        digest = hash_token(token)
        with self.database.session() as session:
            row = session.scalar(
                select(TrustEnrollmentToken).where(TrustEnrollmentToken.token_hash == digest)
            )
            if row is None or row.used is not None or row.expires <= moment:
                raise EnrollmentError("invalid, expired or already used enrollment token")
            if row.device_id is not None and row.device_id != device_id:
                raise EnrollmentError("the enrollment token is bound to another device")
            spent = session.execute(
                update(TrustEnrollmentToken)
                .where(TrustEnrollmentToken.id == row.id, TrustEnrollmentToken.used.is_(None))
                .values(used=moment, used_by=device_id)
                .execution_options(synchronize_session=False)
            )
            if getattr(spent, "rowcount", 0) != 1:
                raise EnrollmentError("invalid, expired or already used enrollment token")
            group = session.get(TrustGroup, row.group_id)
            if group is None:  # pragma: no cover - ON DELETE CASCADE removes the token with it
                raise EnrollmentError("the token's enrollment group is gone")
            return _group(group)

    # -- devices ----------------------------------------------------------------------------------

    def register_device(
        self,
        device_id: str,
        *,
        group: str | None = None,
        bootstrap: str = "token",
        device_type: str | None = None,
        model: str | None = None,
        firmware: str | None = None,
    ) -> DeviceRecord:
        """Create or update a device identity (its group and descriptive fields)."""
        check_device_id(device_id)
        with self.database.session() as session:
            group_row = None
            if group is not None:
                group_row = session.scalar(select(TrustGroup).where(TrustGroup.name == group))
                if group_row is None:
                    raise TrustError(f"no enrollment group {group!r}")
            row = session.scalar(select(TrustDevice).where(TrustDevice.device_id == device_id))
            if row is None:
                row = TrustDevice(device_id=device_id, bootstrap=bootstrap, quarantined=False)
                session.add(row)
            if group_row is not None:
                row.group_id = group_row.id
                row.device_type = device_type or group_row.device_type or row.device_type
            elif device_type is not None:
                row.device_type = device_type
            if model is not None:
                row.model = model
            if firmware is not None:
                row.firmware = firmware
            session.flush()
            return self._device(session, row)

    def device(self, device_id: str) -> DeviceRecord | None:
        with self.database.session() as session:
            row = session.scalar(select(TrustDevice).where(TrustDevice.device_id == device_id))
            return None if row is None else self._device(session, row)

    def device_group(self, device_id: str) -> GroupRecord | None:
        with self.database.session() as session:
            row = session.scalar(
                select(TrustGroup)
                .join(TrustDevice, TrustDevice.group_id == TrustGroup.id)
                .where(TrustDevice.device_id == device_id)
            )
            return None if row is None else _group(row)

    @staticmethod
    def _device(session: Session, row: TrustDevice) -> DeviceRecord:
        group = session.get(TrustGroup, row.group_id) if row.group_id is not None else None
        return DeviceRecord(
            row.device_id,
            None if group is None else group.name,
            row.device_type,
            row.model,
            row.firmware,
            row.bootstrap,
            row.quarantined,
            row.quarantine_reason,
            row.enrolled,
            row.last_issued,
        )

    def set_quarantine(self, device_id: str, quarantined: bool, reason: str | None = None) -> None:
        """Quarantine (or release) a device: a quarantined device gets no certificate."""
        with self.database.session() as session:
            done = session.execute(
                update(TrustDevice)
                .where(TrustDevice.device_id == device_id)
                .values(quarantined=quarantined, quarantine_reason=reason if quarantined else None)
                .execution_options(synchronize_session=False)
            )
            if getattr(done, "rowcount", 0) != 1:
                raise TrustError(f"no device {device_id!r}")

    def is_quarantined(self, device_id: str) -> bool:
        with self.database.session() as session:
            flag = session.scalar(select(TrustDevice.quarantined).where(TrustDevice.device_id == device_id))
            return bool(flag)

    # -- certificates -----------------------------------------------------------------------------

    def record_certificate(self, certificate: x509.Certificate, device_id: str, profile: str) -> None:
        """Remember an issued certificate (and the device's ``last_issued``)."""
        if profile not in PROFILES:
            raise TrustError(f"unknown profile {profile!r}")
        with self.database.session() as session:
            session.add(
                TrustCertificate(
                    serial=serial_hex(certificate.serial_number),
                    device_id=device_id,
                    profile=profile,
                    subject=certificate.subject.rfc4514_string(),
                    fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
                    not_before=certificate.not_valid_before_utc,
                    not_after=certificate.not_valid_after_utc,
                )
            )
            session.execute(
                update(TrustDevice)
                .where(TrustDevice.device_id == device_id)
                .values(last_issued=certificate.not_valid_before_utc)
                .execution_options(synchronize_session=False)
            )

    def certificate(self, serial: int | str) -> CertificateRecord | None:
        key = serial_hex(serial) if isinstance(serial, int) else serial.lower()
        with self.database.session() as session:
            row = session.get(TrustCertificate, key)
            return None if row is None else _cert(row)

    def certificates(self, device_id: str) -> list[CertificateRecord]:
        with self.database.session() as session:
            rows = session.scalars(
                select(TrustCertificate)
                .where(TrustCertificate.device_id == device_id)
                .order_by(TrustCertificate.not_before)
            )
            return [_cert(r) for r in rows]

    def revoke(
        self, serial: int | str, reason: str = "unspecified", *, now: dt.datetime | None = None
    ) -> CertificateRecord:
        """Revoke an issued certificate (idempotent: the first revocation's time and reason stay)."""
        if reason not in REVOCATION_REASONS:
            raise TrustError(f"unknown revocation reason {reason!r}; one of {', '.join(REVOCATION_REASONS)}")
        key = serial_hex(serial) if isinstance(serial, int) else serial.lower()
        with self.database.session() as session:
            row = session.get(TrustCertificate, key)
            if row is None:
                raise TrustError(f"no certificate with serial {key}")
            if row.revoked_at is None:
                row.revoked_at = _utc(now)
                row.revocation_reason = reason
            session.flush()
            return _cert(row)

    def revoked(self, *, now: dt.datetime | None = None) -> list[CertificateRecord]:
        """Revoked certificates that have not yet expired at ``now`` (what a CRL must list;
        RFC 5280 3.3 lets an entry leave the CRL after the certificate expires)."""
        with self.database.session() as session:
            rows = session.scalars(
                select(TrustCertificate)
                .where(
                    TrustCertificate.revoked_at.is_not(None),
                    TrustCertificate.not_after > _utc(now),
                )
                .order_by(TrustCertificate.revoked_at)
            )
            return [_cert(r) for r in rows]
