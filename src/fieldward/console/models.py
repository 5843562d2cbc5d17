"""The console's own table: the sensor batches already applied (idempotent ingestion).

A sensor pushes each batch with a ``batch_id`` (a UUID) and retries until it is acknowledged, so the
same batch may arrive twice; ``(sensor_id, batch_id)`` is unique here and a batch found in this table
answers ``duplicate`` without touching the store. The table sits on the shared declarative ``Base``
and is created by the store's Alembic revision ``0002``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from fieldward.store.base import Base
from fieldward.store.models import UTCDateTime, utcnow

__all__ = ["IngestBatch"]


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
