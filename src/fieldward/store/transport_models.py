"""Tables of the sensor transport (NATS JetStream, ``fieldward.console.jetstream_worker``).

- ``transport_dead_letters``: a message the ingest workers could not apply for good (a malformed
  subject or payload, an unknown kind, a sensor the console does not know, an evidence capture whose
  alert never arrived). The worker records it here, whole, in the same step that terminates it on the
  stream, so nothing a sensor sent is silently lost: an administrator can read the reason and the
  payload, fix the cause and re-publish it. ``(stream, stream_seq)`` is unique, so a message delivered
  again after a worker died is recorded once (revision ``0008``);
- ``transport_workers``: one row per ingest worker process (``host:pid``), its counters and when it
  last reported (every few seconds while it runs, and when it stops), so the console can show which
  workers are alive and what they ingested without a NATS connection (revision ``0010``).

The batches the workers applied are recorded in ``ingest_batches`` (:class:`IngestBatch`), exactly
as the HTTPS push records them, so a batch re-sent over either transport is applied once.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Float, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from fieldward.store.base import Base
from fieldward.store.models import UTCDateTime, utcnow

__all__ = ["TransportDeadLetter", "TransportWorker"]


class TransportDeadLetter(Base):
    """One JetStream message terminated by an ingest worker, with its reason and its bytes."""

    __tablename__ = "transport_dead_letters"
    __table_args__ = (
        UniqueConstraint("stream", "stream_seq"),
        Index("ix_transport_dead_letters_received", "received"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    received: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    stream: Mapped[str] = mapped_column(String(64))
    stream_seq: Mapped[int] = mapped_column(BigInteger)
    """The message's sequence number in the stream (``Nats-Sequence``)."""
    subject: Mapped[str] = mapped_column(String(255))
    sensor: Mapped[str | None] = mapped_column(String(200))
    """The sensor name the subject carries (when it has one)."""
    batch_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(500))
    """Why the message was not applied (a code and a short explanation; never a credential)."""
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    """The message body as received (compressed when the sensor compressed it)."""
    headers: Mapped[str | None] = mapped_column(String(4000))
    """The FieldWard headers of the message as JSON (never a credential: sensors send none)."""


class TransportWorker(Base):
    """One ``fieldward ingest-worker`` process and its counters since it started."""

    __tablename__ = "transport_workers"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    """``<host>:<pid>`` of the process."""
    stream: Mapped[str] = mapped_column(String(64))
    durable: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    """``running`` or ``stopped`` as the worker wrote it (a killed worker stays ``running``: its
    ``last_seen`` ages; the console's API shows such a row ``stale``, routes/transport.py)."""
    started: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    report_every: Mapped[float] = mapped_column(Float)
    """Seconds between two reports while it runs."""
    applied: Mapped[int] = mapped_column(BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(BigInteger, default=0)
    records: Mapped[int] = mapped_column(BigInteger, default=0)
    redelivered: Mapped[int] = mapped_column(BigInteger, default=0)
    retried: Mapped[int] = mapped_column(BigInteger, default=0)
    dead_lettered: Mapped[int] = mapped_column(BigInteger, default=0)
