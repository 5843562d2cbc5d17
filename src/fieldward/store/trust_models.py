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

Revision ``0006`` adds the state the trust service used to keep in memory, and its join to the
console's inventory (:mod:`fieldward.trust.state`, :mod:`fieldward.trust.response`):

- ``trust_verdicts``: the newest attestation verdict per device (the renewal gate and the policy
  context read it), with its reasons.
- ``trust_failure_reports`` / ``trust_failure_devices``: device crash and error reports aggregated
  per (model, firmware, signature); the count is incremented in SQL, the distinct devices of an
  aggregate are rows (so the device count is exact). Unknown model or firmware is ``''`` (not NULL)
  so that the unique key also deduplicates them.
- ``trust_device_links``: which inventory devices (``devices`` rows, one per sensor) a device
  identity is: by inventory row id, by MAC address or by serial number.
- ``trust_device_versions``: each device's running version (from its update client's report or its
  attested firmware version) and how far behind its update channel it is.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from fieldward.store.base import Base
from fieldward.store.models import UTCDateTime, utcnow

__all__ = [
    "ATTRIBUTE_SOURCES",
    "LINK_KINDS",
    "PROFILES",
    "TrustCertificate",
    "TrustChallenge",
    "TrustDevice",
    "TrustDeviceAttribute",
    "TrustDeviceLink",
    "TrustDeviceVersion",
    "TrustEnrollmentToken",
    "TrustFailureDevice",
    "TrustFailureReport",
    "TrustGroup",
    "TrustLinkRejection",
    "TrustVerdict",
]

PROFILES = ("device", "sensor", "console")
"""Certificate profiles of the FieldWard CA (``fieldward.trust.ca``)."""
LINK_KINDS = ("inventory", "mac", "serial")
"""How a device identity is linked to inventory devices (``trust_device_links.kind``)."""
ATTRIBUTE_SOURCES = ("idevid", "csr", "provisioning")
"""Where a device attribute comes from: the manufacturer-signed IDevID certificate (trusted), the
subject of the device's own CSR (claimed by the device), or a provisioning record (an operator)."""

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


class TrustVerdict(Base):
    """The newest attestation verdict of a device."""

    __tablename__ = "trust_verdicts"
    __table_args__ = (
        CheckConstraint("verdict IN ('healthy', 'unknown', 'compromised', 'outdated')", name="verdict"),
        Index("ix_trust_verdicts_verdict", "verdict"),
    )

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    notes: Mapped[list[str]] = mapped_column(JSON, default=list)
    verified_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    model: Mapped[str | None] = mapped_column(String(128))
    firmware_version: Mapped[str | None] = mapped_column(String(128))
    authentic: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    tpm_quote: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)


class TrustFailureReport(Base):
    """Failure reports of one (model, firmware, signature); ``''`` stands for an unknown model or
    firmware."""

    __tablename__ = "trust_failure_reports"
    __table_args__ = (
        UniqueConstraint("model", "firmware", "signature"),
        Index("ix_trust_failure_reports_count", "count"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    model: Mapped[str] = mapped_column(String(128), default="")
    firmware: Mapped[str] = mapped_column(String(128), default="")
    signature: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    component: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    """The first report's message (at most 500 characters)."""
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)


class TrustFailureDevice(Base):
    """A device that sent a failure report of an aggregate (one row per distinct device)."""

    __tablename__ = "trust_failure_devices"

    report_id: Mapped[int] = mapped_column(
        ForeignKey("trust_failure_reports.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)


class TrustDeviceLink(Base):
    """One link of a device identity to inventory devices: an inventory row id, a MAC address
    (lowercase, colon-separated) or a serial number; MAC and serial links also match inventory rows
    that sensors report later."""

    __tablename__ = "trust_device_links"
    __table_args__ = (
        CheckConstraint("kind IN ('inventory', 'mac', 'serial')", name="kind"),
        UniqueConstraint("device_id", "kind", "value"),
        Index("ix_trust_device_links_kind_value", "kind", "value"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128))
    """The device identity (``trust_devices.device_id``)."""
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(255))
    created_by: Mapped[str] = mapped_column(String(200))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class TrustDeviceVersion(Base):
    """A device's running version and its update status."""

    __tablename__ = "trust_device_versions"
    __table_args__ = (Index("ix_trust_device_versions_outdated", "outdated"),)

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    running_version: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16))
    """``update`` (the update client's report) or ``attestation`` (the attested firmware version)."""
    channel: Mapped[str | None] = mapped_column(String(64))
    newest_version: Mapped[str | None] = mapped_column(String(128))
    releases_behind: Mapped[int] = mapped_column(Integer, default=0)
    days_behind: Mapped[int | None] = mapped_column(Integer)
    outdated: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The update client's last check and error, as it reported them."""
    reported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)


class TrustChallenge(Base):
    """A pending attestation challenge (nonce) of one device; ``used`` is set once, atomically."""

    __tablename__ = "trust_challenges"
    __table_args__ = (
        Index("ix_trust_challenges_expires", "expires"),
        Index("ix_trust_challenges_device_id", "device_id"),
    )

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128))
    expires: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    used: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class TrustDeviceAttribute(Base):
    """A hardware attribute of a device identity (``serial`` or ``mac``, stored normalised like the
    link values) and its source (:data:`ATTRIBUTE_SOURCES`)."""

    __tablename__ = "trust_device_attributes"
    __table_args__ = (
        CheckConstraint("kind IN ('mac', 'serial')", name="kind"),
        CheckConstraint("source IN ('idevid', 'csr', 'provisioning')", name="source"),
        UniqueConstraint("device_id", "kind", "value", "source"),
        Index("ix_trust_device_attributes_kind_value", "kind", "value"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class TrustLinkRejection(Base):
    """A link proposal (device identity, kind, value) an analyst rejected: never proposed again."""

    __tablename__ = "trust_link_rejections"
    __table_args__ = (UniqueConstraint("device_id", "kind", "value"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(255))
    rejected_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
