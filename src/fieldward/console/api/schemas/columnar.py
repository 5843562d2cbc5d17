"""Schemas of the columnar endpoints: sensors' Parquet batches (``/ingest/columnar``) and the
flows/events queries (``/flows``, ``/events``).

Rows are JSON objects built from the Parquet columns: timestamps as ISO 8601 strings (UTC, nine
fraction digits), dates as ``YYYY-MM-DD``, bytes as lowercase hex, NaN as null. Columns that could
hold a credential are never returned (see ``routes/columnar.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fieldward.console.api.schemas import OutputModel

__all__ = ["ColumnarBatchPublic", "EventLogsPublic", "RowPage"]


class ColumnarBatchPublic(OutputModel):
    """Answer to a pushed Parquet batch: ``applied``, or ``duplicate`` for a batch id the sensor sent
    before (nothing is rewritten)."""

    batch_id: str
    status: Literal["applied", "duplicate"]
    kind: Literal["flows", "events"]
    log: str | None = None
    written: int = Field(ge=0, description="Rows written")
    days: list[str] = Field(default_factory=list, description="UTC days the rows fell in")
    replaced: int = Field(default=0, ge=0, description="Files of an earlier version of the batch removed")
    skipped: int = Field(default=0, ge=0, description="Rows without a timestamp")
    weird: dict[str, int] = Field(default_factory=dict)


class RowPage(OutputModel):
    """One page of flows or events, oldest first. There is no total (counting a columnar window
    means reading it); ``next_offset`` is the offset of the next page, null on the last one."""

    items: list[dict[str, Any]]
    limit: int = Field(ge=0)
    offset: int = Field(ge=0)
    next_offset: int | None = None


class EventLogsPublic(OutputModel):
    """Event logs that hold data, and the columns ``GET /events/{log}`` may filter on."""

    logs: list[str]
    filters: list[str]
