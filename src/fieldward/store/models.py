"""The console's relational store: SQLAlchemy 2 models of sensors, devices, communications, alerts,
findings, users and the audit log.

Everything a sensor reports (``devices.json``, ``communications.parquet``, ``alerts.jsonl``, the
assessment's findings and risk) lands here through :mod:`fieldward.store.ingest`, one row per natural
key and sensor: a device is ``(sensor_id, device_key)``, an alert ``(sensor_id, alert_key)``, an edge
``(sensor_id, src_device_id, dst_device_id, transport, port, protocol)``. The tables share the
declarative ``Base`` of :mod:`fieldward.store.base` (its naming convention names every constraint), so
one Alembic history (``store/migrations``) creates them together with the vulnerability-knowledge
tables. The schema works unchanged on SQLite and PostgreSQL: JSON columns use the generic ``JSON``
type, timestamps are :class:`UTCDateTime` (always timezone-aware UTC in Python), and the indexes are
the ones the console's list pages filter and sort by.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    cast,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from fieldward.store.base import Base

__all__ = [
    "ROLES",
    "SEVERITY_RANK",
    "STATUSES",
    "Alert",
    "AlertComment",
    "AlertEvent",
    "AlertKind",
    "ApiToken",
    "AuditLog",
    "Communication",
    "ConfigFindingRow",
    "Device",
    "DeviceAttribute",
    "DeviceRisk",
    "Sensor",
    "UTCDateTime",
    "User",
    "VulnerabilityFinding",
    "severity_rank",
    "utcnow",
]

ROLES = ("viewer", "analyst", "admin")
"""User roles, least privileged first."""
STATUSES = ("new", "acknowledged", "closed")
"""Alert triage states (``fieldward.detect.model.Status``)."""
SEVERITY_RANK: dict[str, int] = {"none": 0, "info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
"""Sort order of the severities of alerts (``detect``) and findings (``assess``, CVSS scale)."""

BigId = BigInteger().with_variant(Integer(), "sqlite")
"""A 64-bit surrogate key; SQLite auto-increments only an ``INTEGER PRIMARY KEY``."""


def severity_rank(severity: str | None) -> int:
    """The sortable rank of a severity name (0 for an unknown one)."""
    return SEVERITY_RANK.get((severity or "").lower(), 0)


def utcnow() -> dt.datetime:
    return dt.datetime.now(tz=dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored as UTC and always returned timezone-aware in UTC.

    PostgreSQL keeps it as ``timestamp with time zone``; SQLite has no time zones, so the value is
    stored as naive UTC text and the zone is put back on read. A naive value given to the store is
    taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _created() -> Mapped[dt.datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class Sensor(Base):
    """A sensor (or a site's analysis upload) that reports to the console."""

    __tablename__ = "sensors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    credential_hash: Mapped[str | None] = mapped_column(String(255))
    """Argon2 or SHA-256 hash of the sensor's token; the token itself is never stored."""
    created: Mapped[dt.datetime] = _created()
    last_seen: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)

    devices: Mapped[list[Device]] = relationship(
        back_populates="sensor", cascade="all, delete-orphan", passive_deletes=True
    )


class Device(Base):
    """One device of the inventory (``devices.json``), as one sensor saw it."""

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("sensor_id", "device_key"),
        Index("ix_devices_device_type_purdue_level", "device_type", "purdue_level"),
        Index("ix_devices_vendor", "vendor"),
        Index("ix_devices_purdue_level", "purdue_level"),
        Index("ix_devices_last_seen", "last_seen"),
        Index("ix_devices_risk_score", "risk_score"),
        Index("ix_devices_mac", "mac"),
        Index("ix_devices_hostname", "hostname"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sensor_id: Mapped[int] = mapped_column(ForeignKey("sensors.id", ondelete="CASCADE"))
    device_key: Mapped[str] = mapped_column(String(255))
    """The inventory's id, e.g. ``mac:00:1b:1b:30:89:24``."""
    mac: Mapped[str | None] = mapped_column(String(32))
    ips: Mapped[list[str]] = mapped_column(JSON, default=list)
    local: Mapped[bool | None] = mapped_column(Boolean)
    router: Mapped[bool | None] = mapped_column(Boolean)
    vendor: Mapped[str | None] = mapped_column(String(255))
    """Indexed, hence bounded (a PostgreSQL index entry holds at most about 2.7 kB)."""
    model: Mapped[str | None] = mapped_column(Text)
    product_code: Mapped[str | None] = mapped_column(Text)
    firmware: Mapped[str | None] = mapped_column(Text)
    serial: Mapped[str | None] = mapped_column(Text)
    hostname: Mapped[str | None] = mapped_column(String(255))
    os: Mapped[str | None] = mapped_column(Text)
    device_type: Mapped[str | None] = mapped_column(String(64))
    purdue_level: Mapped[int | None] = mapped_column(SmallInteger)
    importance: Mapped[int | None] = mapped_column(SmallInteger)
    """Set by the analyst (ingestion never changes it)."""
    first_seen: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_seen: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    packets: Mapped[int] = mapped_column(BigInteger, default=0)
    protocols: Mapped[list[str]] = mapped_column(JSON, default=list)
    roles: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    services: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    vlans: Mapped[list[int]] = mapped_column(JSON, default=list)
    confidence: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    address_history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    risk_score: Mapped[int | None] = mapped_column(SmallInteger)
    """The assessment's 0-100 score (copied from ``device_risks`` for sorting)."""
    updated: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    sensor: Mapped[Sensor] = relationship(back_populates="devices")
    attributes: Mapped[list[DeviceAttribute]] = relationship(
        back_populates="device", cascade="all, delete-orphan", passive_deletes=True
    )
    risk: Mapped[DeviceRisk | None] = relationship(
        back_populates="device", cascade="all, delete-orphan", passive_deletes=True
    )


# Indexes of the inventory page (revision 0005). The list sorts descending with NULLS LAST: an index in
# that order serves "riskiest first" and "seen last first" without sorting every device (on SQLite,
# where NULLs sort first ascending, the same index is plain ``col DESC, id DESC``). The search
# (``ILIKE '%text%'`` on IPs, MAC, hostname, model, vendor) is served on PostgreSQL by trigram GIN
# indexes (pg_trgm): one over the four text columns (on SQLite an empty ``WHERE 0`` index of the same
# name) and one over ``CAST(ips AS VARCHAR)``, the expression the route filters on (PostgreSQL only:
# the schema comparison skips expression indexes on SQLite).
Index("ix_devices_risk_score_desc", Device.risk_score.desc().nulls_last(), Device.id.desc())
Index("ix_devices_last_seen_desc", Device.last_seen.desc().nulls_last(), Device.id.desc())
Index(
    "ix_devices_search_trgm",
    Device.mac,
    Device.hostname,
    Device.model,
    Device.vendor,
    postgresql_using="gin",
    postgresql_ops=dict.fromkeys(("mac", "hostname", "model", "vendor"), "gin_trgm_ops"),
    sqlite_where=text("0"),
)
Index(
    "ix_devices_ips_trgm",
    cast(Device.ips, String).label("ips_text"),
    postgresql_using="gin",
    postgresql_ops={"ips_text": "gin_trgm_ops"},
)


class DeviceAttribute(Base):
    """One inferred attribute of a device with its confidence, evidence and the values it beat."""

    __tablename__ = "device_attributes"
    __table_args__ = (UniqueConstraint("device_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[Any] = mapped_column(JSON)
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    alternatives: Mapped[list[Any]] = mapped_column(JSON, default=list)

    device: Mapped[Device] = relationship(back_populates="attributes")


class Communication(Base):
    """A device-to-device edge of the network map (``communications.parquet``)."""

    __tablename__ = "communications"
    __table_args__ = (
        UniqueConstraint(
            "sensor_id",
            "src_device_id",
            "dst_device_id",
            "transport",
            "port",
            "protocol",
            name="uq_communications_edge",
        ),
        Index("ix_communications_src_device_id", "src_device_id"),
        Index("ix_communications_dst_device_id", "dst_device_id"),
        Index("ix_communications_protocol", "protocol"),
        # No index on last_seen (dropped by revision 0012): it only sorts a device's edges, which the
        # src/dst indexes find first; every ingested edge paid an index entry for nothing.
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sensor_id: Mapped[int] = mapped_column(ForeignKey("sensors.id", ondelete="CASCADE"))
    src_device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    dst_device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    transport: Mapped[str] = mapped_column(String(16))
    port: Mapped[int] = mapped_column(Integer)
    protocol: Mapped[str] = mapped_column(String(64), default="")
    """The recognised service (``modbus``, ``s7comm``), ``""`` when none was recognised."""
    flows: Mapped[int] = mapped_column(BigInteger, default=0)
    answered: Mapped[int] = mapped_column(BigInteger, default=0)
    src_packets: Mapped[int] = mapped_column(BigInteger, default=0)
    dst_packets: Mapped[int] = mapped_column(BigInteger, default=0)
    src_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    dst_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_seen: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    @property
    def packets(self) -> int:
        return self.src_packets + self.dst_packets

    @property
    def bytes(self) -> int:
        return self.src_bytes + self.dst_bytes


class Alert(Base):
    """An aggregated alert (``alerts.jsonl``) with its triage status."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("sensor_id", "alert_key"),
        CheckConstraint("status IN ('new', 'acknowledged', 'closed')", name="status"),
        Index("ix_alerts_status_last_ts", "status", "last_ts"),
        Index("ix_alerts_severity_rank_last_ts", "severity_rank", "last_ts"),
        Index("ix_alerts_last_ts", "last_ts"),
        Index("ix_alerts_type", "type"),
        Index("ix_alerts_engine", "engine"),
        Index("ix_alerts_src_device_id", "src_device_id"),
        Index("ix_alerts_dst_device_id", "dst_device_id"),
        # The queue's text search q (ILIKE '%text%') on the addresses: a trigram GIN index on
        # PostgreSQL (pg_trgm, revisions 0005 and 0013); on SQLite an empty partial index (WHERE 0) of
        # the same name, so both schemas equal the models and SQLite ingestion pays nothing for it.
        # Title and type are searched in the few rows of ``alert_kinds`` instead (AlertKind).
        Index(
            "ix_alerts_address_trgm",
            "src",
            "dst",
            postgresql_using="gin",
            postgresql_ops=dict.fromkeys(("src", "dst"), "gin_trgm_ops"),
            sqlite_where=text("0"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sensor_id: Mapped[int] = mapped_column(ForeignKey("sensors.id", ondelete="CASCADE"))
    alert_key: Mapped[str] = mapped_column(String(64))
    """The detection's stable alert id (a hash of type, source, destination and protocol)."""
    engine: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    severity: Mapped[str] = mapped_column(String(16))
    severity_rank: Mapped[int] = mapped_column(SmallInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default="new")
    first_ts: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_ts: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    count: Mapped[int] = mapped_column(BigInteger, default=1)
    src: Mapped[str | None] = mapped_column(String(255))
    dst: Mapped[str | None] = mapped_column(String(255))
    src_device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    dst_device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    protocol: Mapped[str | None] = mapped_column(String(64))
    explanation: Mapped[str] = mapped_column(Text, default="")
    recommendation: Mapped[str] = mapped_column(Text, default="")
    mitre: Mapped[list[str]] = mapped_column(JSON, default=list)
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    evidence_pcap: Mapped[str | None] = mapped_column(Text)
    """Path of the evidence capture, relative to the sensor's analysis folder or the console's store."""

    events: Mapped[list[AlertEvent]] = relationship(
        back_populates="alert",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="AlertEvent.at",
    )
    comments: Mapped[list[AlertComment]] = relationship(
        back_populates="alert",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="AlertComment.at",
    )


class AlertKind(Base):
    """One distinct ``(type, title)`` of the ``alerts`` table, kept by the database itself.

    Alerts come in few kinds (a detector's alert types), so the queue's text search reads title and
    type here, in a few hundred rows, and then selects the alerts of the matching kinds through
    ``ix_alerts_type``; only the addresses keep a trigram index on ``alerts``. That spares every
    ingested alert the trigrams of its title and type (~70 % of the search index's entries).

    Triggers of revision 0013 add the kind of every inserted or updated alert, whoever writes it
    (sensor ingestion, tests, SQL): on PostgreSQL one statement-level trigger per statement (transition
    tables), on SQLite a row trigger. Triggers of revision 0015 remove a kind with the last alert that
    has it (deleted, or retitled/retyped): on PostgreSQL per statement, one ``NOT EXISTS`` per distinct
    old kind; on SQLite per row, through the count in ``alerts``. ``title_key`` is what the unique
    constraint compares: ``md5(title)`` on PostgreSQL (a b-tree entry holds at most ~2.7 kB, a sensor's
    title may be longer), the title on SQLite.
    """

    __tablename__ = "alert_kinds"
    __table_args__ = (UniqueConstraint("type", "title_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    type: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(Text)
    title_key: Mapped[str] = mapped_column(Text)
    alerts: Mapped[int | None] = mapped_column(Integer)
    """SQLite: how many alerts have this kind (kept by the row triggers; the kind goes at 0). NULL on
    PostgreSQL, where concurrent writers would queue on the counts: it checks ``NOT EXISTS`` instead."""


class AlertEvent(Base):
    """One change of an alert's status: who, when, from which state to which, and why."""

    __tablename__ = "alert_events"
    __table_args__ = (Index("ix_alert_events_alert_id_at", "alert_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    by: Mapped[str] = mapped_column(String(200))
    """A user name or ``sensor:<name>`` for changes a sensor reported."""
    at: Mapped[dt.datetime] = _created()
    note: Mapped[str | None] = mapped_column(Text)

    alert: Mapped[Alert] = relationship(back_populates="events")


class AlertComment(Base):
    """An analyst's comment on an alert."""

    __tablename__ = "alert_comments"
    __table_args__ = (Index("ix_alert_comments_alert_id_at", "alert_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    author: Mapped[str] = mapped_column(String(200))
    at: Mapped[dt.datetime] = _created()
    text: Mapped[str] = mapped_column(Text)

    alert: Mapped[Alert] = relationship(back_populates="comments")


class VulnerabilityFinding(Base):
    """A vulnerability that applies to a device (``fieldward.assess.model.Finding``)."""

    __tablename__ = "vulnerability_findings"
    __table_args__ = (
        UniqueConstraint("device_id", "vulnerability_id"),
        Index("ix_vulnerability_findings_vulnerability_id", "vulnerability_id"),
        Index("ix_vulnerability_findings_severity_rank", "severity_rank"),
        Index("ix_vulnerability_findings_kev", "kev"),
        Index("ix_vulnerability_findings_last_seen", "last_seen"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sensor_id: Mapped[int] = mapped_column(ForeignKey("sensors.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    vulnerability_id: Mapped[str] = mapped_column(String(64))
    cpe: Mapped[str] = mapped_column(Text, default="")
    criteria: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    sources: Mapped[list[str]] = mapped_column(JSON, default=list)
    severity: Mapped[str] = mapped_column(String(16))
    severity_rank: Mapped[int] = mapped_column(SmallInteger, default=0)
    cvss_score: Mapped[float | None] = mapped_column(Float)
    cvss_vector: Mapped[str | None] = mapped_column(Text)
    cvss_version: Mapped[str | None] = mapped_column(String(8))
    kev: Mapped[bool] = mapped_column(Boolean, default=False)
    kev_due_date: Mapped[dt.date | None] = mapped_column(Date)
    known_ransomware: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(Text, default="")
    remediation: Mapped[str | None] = mapped_column(Text)
    published: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    not_applicable: Mapped[bool] = mapped_column(Boolean, default=False)
    not_applicable_reason: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[dt.datetime] = _created()
    """When the console first stored the finding."""
    last_seen: Mapped[dt.datetime] = _created()
    """When a sensor last reported it."""


class ConfigFindingRow(Base):
    """An insecure configuration seen in traffic (``fieldward.assess.model.ConfigFinding``)."""

    __tablename__ = "config_findings"
    __table_args__ = (
        UniqueConstraint("device_id", "finding_key"),
        Index("ix_config_findings_check", "check"),
        Index("ix_config_findings_severity_rank", "severity_rank"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sensor_id: Mapped[int] = mapped_column(ForeignKey("sensors.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    finding_key: Mapped[str] = mapped_column(String(512))
    """``ConfigFinding.id``: ``check:device:port``."""
    check: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(Text, default="")
    severity: Mapped[str] = mapped_column(String(16))
    severity_rank: Mapped[int] = mapped_column(SmallInteger, default=0)
    explanation: Mapped[str] = mapped_column(Text, default="")
    recommendation: Mapped[str] = mapped_column(Text, default="")
    protocol: Mapped[str | None] = mapped_column(String(64))
    port: Mapped[int | None] = mapped_column(Integer)
    peers: Mapped[list[str]] = mapped_column(JSON, default=list)
    first_seen: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_seen: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    count: Mapped[int] = mapped_column(BigInteger, default=1)
    evidence: Mapped[list[int]] = mapped_column(JSON, default=list)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DeviceRisk(Base):
    """A device's risk score and its contributors (``fieldward.assess.model.DeviceRisk``)."""

    __tablename__ = "device_risks"
    __table_args__ = (Index("ix_device_risks_score", "score"),)

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    score: Mapped[int] = mapped_column(SmallInteger)
    exploitability: Mapped[float] = mapped_column(Float, default=0.0)
    exposure: Mapped[float] = mapped_column(Float, default=0.0)
    criticality: Mapped[float] = mapped_column(Float, default=0.0)
    behaviour: Mapped[float] = mapped_column(Float, default=0.0)
    priority: Mapped[str] = mapped_column(String(16))
    contributors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    updated: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    device: Mapped[Device] = relationship(back_populates="risk")


class User(Base):
    """A local console user. ``password_hash`` is an Argon2 hash (hashing is the API's job)."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('viewer', 'analyst', 'admin')", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="viewer")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[dt.datetime] = _created()
    last_login: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class ApiToken(Base):
    """A user's API token; only a hash of the secret is kept."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("token_hash"), UniqueConstraint("user_id", "name"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(150))
    token_hash: Mapped[str] = mapped_column(String(255))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created: Mapped[dt.datetime] = _created()
    expires: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_used: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(back_populates="tokens")


class AuditLog(Base):
    """One change made through the console: who did what to what, when.

    ``actor`` is a name, not a foreign key, so the log outlives the users it names.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_actor_at", "actor", "at"),
        Index("ix_audit_log_action", "action"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[dt.datetime] = _created()
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
