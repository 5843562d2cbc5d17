"""Tables of the zero-trust device plane (issue 8): enrollment groups, device identities, one-time
enrollment tokens and the certificates the FieldWard CA issued (with their revocation).

They live in the store (Alembic's ``env.py`` imports only store modules; one migration history owns
every table, revision ``0004``); :mod:`fieldward.trust.registry` is the only code that writes them.
Table names start with ``trust_`` so they never collide with the sensor's ``devices`` inventory.

- ``trust_groups``: an enrollment group as in a provisioning service: the defaults a device gets
  when it enrolls through it (policy name, update channel, device type, certificate validity).
- ``trust_devices``: one row per device identity (``device_id`` is the certificate's CN and the
  ``urn:fieldward:device:<id>`` SAN), its group, and the quarantine flag (set by the response
  engine or an analyst; a quarantined device is never issued or renewed a certificate).
- ``trust_enrollment_tokens``: one-time bootstrap secrets; only a SHA-256 digest of the token is
  stored (tokens are 256-bit random strings, so a fast hash suffices); ``used`` is set in the same
  conditional UPDATE that checks it, so a token is spent at most once even under concurrency.
- ``trust_certificates``: every certificate issued (serial as lowercase hex, not-after, profile,
  SHA-256 fingerprint) and, once revoked, when and why: the source of the CRL and OCSP answers.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from fieldward.store.base import Base
from fieldward.store.models import UTCDateTime, utcnow

__all__ = [
    "PROFILES",
    "TrustCertificate",
    "TrustDevice",
    "TrustEnrollmentToken",
    "TrustGroup",
]

PROFILES = ("device", "sensor", "console")
"""Certificate profiles of the FieldWard CA (``fieldward.trust.ca``)."""

_BigId = BigInteger().with_variant(Integer(), "sqlite")


class TrustGroup(Base):
    """An enrollment group and the defaults its devices receive."""

    __tablename__ = "trust_groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    policy: Mapped[str | None] = mapped_column(String(128))
    update_channel: Mapped[str] = mapped_column(String(64), default="stable")
    device_type: Mapped[str | None] = mapped_column(String(64))
    validity_hours: Mapped[int | None] = mapped_column(Integer)
    """Device certificate lifetime for this group; NULL: the CA's default (24 h)."""
    description: Mapped[str | None] = mapped_column(Text)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class TrustDevice(Base):
    """A device identity known to the CA."""

    __tablename__ = "trust_devices"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), unique=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("trust_groups.id", ondelete="SET NULL"))
    device_type: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(128))
    firmware: Mapped[str | None] = mapped_column(String(128))
    bootstrap: Mapped[str] = mapped_column(String(16), default="token")
    """How the device first enrolled: ``token`` or ``idevid``."""
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    enrolled: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    last_issued: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class TrustEnrollmentToken(Base):
    """A one-time enrollment token (its SHA-256 digest), bound to a group and optionally a device."""

    __tablename__ = "trust_enrollment_tokens"
    __table_args__ = (Index("ix_trust_enrollment_tokens_expires", "expires"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("trust_groups.id", ondelete="CASCADE"))
    device_id: Mapped[str | None] = mapped_column(String(128))
    """When set, only this device id may enroll with the token."""
    expires: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    used: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    used_by: Mapped[str | None] = mapped_column(String(128))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class TrustCertificate(Base):
    """A certificate issued by the FieldWard issuing CA, and its revocation."""

    __tablename__ = "trust_certificates"
    __table_args__ = (
        CheckConstraint("profile IN ('device', 'sensor', 'console')", name="profile"),
        Index("ix_trust_certificates_device_id", "device_id"),
        Index("ix_trust_certificates_revoked_at", "revoked_at"),
        Index("ix_trust_certificates_not_after", "not_after"),
    )

    serial: Mapped[str] = mapped_column(String(40), primary_key=True)
    """The serial number as lowercase hexadecimal (at most 20 octets, RFC 5280 4.1.2.2)."""
    device_id: Mapped[str] = mapped_column(String(128))
    """The subject's identity: a device id, or the name of a sensor/console."""
    profile: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the DER certificate, lowercase hexadecimal."""
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    issued: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revocation_reason: Mapped[str | None] = mapped_column(String(32))
