"""Tables of the console that are not analysis results: applied sensor batches, triage rules, the
site-risk history and console settings.

They live in the store (Alembic's ``env.py`` imports only store modules, and one migration history
owns every table); ``fieldward.console.models`` and ``fieldward.console.triage_models`` re-export them.

- ``ingest_batches``: a sensor pushes each batch with a ``batch_id`` (a UUID) and retries until it
  is acknowledged, so the same batch may arrive twice; ``(sensor_id, batch_id)`` is unique and a
  batch found here answers ``duplicate`` without touching the store (revision ``0002``).
- ``alert_rules``: what analysts learned or muted in the console (``POST /alerts/{id}/learn|mute``).
  Each row is one :class:`fieldward.detect.knowledge.AlertRule` (type, source, destination; ``*``
  matches any address) for the sensor that raised the alert (or every sensor when ``sensor_id`` is
  NULL); a learned rule also keeps the baseline behaviours of its alert. Sensors pull them with
  ``GET /api/v1/sensors/me/rules`` as a baseline document ``fieldward analyze --baseline`` reads.
- ``site_risk_snapshots``: one row per day (UTC) and scope (the whole site, or one sensor) with the
  site score the risk model gave that day: the history behind the dashboard's risk trend.
- ``console_settings``: key/value settings an administrator changes in the console (syslog/CEF
  forwarding, retention); values are JSON (revision ``0003``).
- ``login_attempts``: one row per failed login, keyed by a hash of (username, client address), so
  every worker process of ``fieldward serve --workers N`` counts the same failures
  (:class:`fieldward.console.security.LoginLimiter`); rows older than the window are deleted
  (revision ``0011``).
- ``upload_jobs``: one row per capture uploaded through ``POST /api/v1/uploads`` and its analysis
  (:class:`fieldward.console.jobs.UploadJobs`), so every worker process of ``fieldward serve
  --workers N`` answers for every job and a restart keeps the history (revision ``0014``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from fieldward.store.base import Base
from fieldward.store.models import UTCDateTime, utcnow

__all__ = [
    "RULE_KINDS",
    "UPLOAD_STATUSES",
    "AlertRuleRow",
    "ConsoleSetting",
    "IngestBatch",
    "LoginAttempt",
    "SiteRiskSnapshot",
    "UploadJobRow",
]


class IngestBatch(Base):
    """One applied batch of a sensor: its id, kind, when, and how many rows it wrote."""

    __tablename__ = "ingest_batches"
    __table_args__ = (
        UniqueConstraint("sensor_id", "batch_id"),
        Index("ix_ingest_batches_applied", "applied"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    sensor_id: Mapped[int] = mapped_column(ForeignKey("sensors.id", ondelete="CASCADE"))
    batch_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    applied: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    written: Mapped[int] = mapped_column(BigInteger, default=0)


RULE_KINDS = ("learned", "muted")
"""``learned``: the behaviour is normal (``Knowledge.learned``); ``muted``: counted, not raised."""

_BigId = BigInteger().with_variant(Integer(), "sqlite")


class AlertRuleRow(Base):
    """An analyst's learned or muted alert rule (``AlertRule``) for one sensor or all of them."""

    __tablename__ = "alert_rules"
    __table_args__ = (
        CheckConstraint("kind IN ('learned', 'muted')", name="kind"),
        UniqueConstraint("sensor_id", "kind", "alert_type", "src", "dst"),
        Index("ix_alert_rules_created", "created"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    sensor_id: Mapped[int | None] = mapped_column(ForeignKey("sensors.id", ondelete="CASCADE"))
    """The sensor the rule is for; NULL: every sensor."""
    kind: Mapped[str] = mapped_column(String(16))
    alert_type: Mapped[str] = mapped_column(String(128))
    src: Mapped[str] = mapped_column(String(255), default="*")
    dst: Mapped[str] = mapped_column(String(255), default="*")
    behaviours: Mapped[list[list[str]]] = mapped_column(JSON, default=list)
    """Baseline behaviours (category first, then the key) a learned alert carried."""
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id", ondelete="SET NULL"))
    """The alert the rule was made from (NULL once that alert is gone)."""
    created_by: Mapped[str] = mapped_column(String(200))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    note: Mapped[str | None] = mapped_column(Text)


class SiteRiskSnapshot(Base):
    """The site score of one day (UTC) for the whole site (``sensor_id`` 0) or one sensor."""

    __tablename__ = "site_risk_snapshots"
    __table_args__ = (UniqueConstraint("sensor_id", "day"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    sensor_id: Mapped[int] = mapped_column(Integer, default=0)
    """0: the whole site; otherwise a sensor id (no foreign key: 0 is no sensor)."""
    day: Mapped[dt.date] = mapped_column(Date)
    score: Mapped[int] = mapped_column(SmallInteger)
    devices: Mapped[int] = mapped_column(Integer, default=0)
    by_priority: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    updated: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class ConsoleSetting(Base):
    """One console setting: a name and its JSON value, with who changed it last and when."""

    __tablename__ = "console_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(String(200))
    updated: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class LoginAttempt(Base):
    """One failed login: the SHA-256 of its (case-folded username, client address) and when (seconds
    since the epoch). The attempted username is not stored (users type passwords into it)."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_key_at", "key", "at"),
        Index("ix_login_attempts_at", "at"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)


UPLOAD_STATUSES = ("queued", "running", "done", "failed")
"""An upload's states: ``queued`` -> ``running`` -> ``done`` or ``failed``."""


class UploadJobRow(Base):
    """An uploaded capture and what became of its analysis (``fieldward.console.jobs.UploadJob``).

    ``worker`` names the process that accepted the job and runs it (``hostname:pid``): each process
    analyses the captures it received (the file is on its disk)."""

    __tablename__ = "upload_jobs"
    __table_args__ = (CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """The job id (a UUID's 32 hex digits)."""
    filename: Mapped[str] = mapped_column(String(200))
    """The file name as uploaded (printable characters only)."""
    sensor: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    started: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str] = mapped_column(String(255))
