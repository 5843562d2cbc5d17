"""Schemas of the sensors' batch push (``POST /api/v1/ingest/{kind}``)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import Field

from fieldward.console.api.schemas import InputModel, OutputModel

__all__ = ["BatchCreate", "BatchPublic", "EvidencePublic"]


class BatchCreate(InputModel):
    batch_id: uuid.UUID = Field(description="Chosen by the sensor; a batch is applied at most once")
    records: list[Any] = Field(description="Records in the JSON shape of the analysis folder's file")


class BatchPublic(OutputModel):
    batch_id: uuid.UUID
    status: Literal["applied", "duplicate"]
    written: int = 0
    skipped: int = 0
    weird: dict[str, int] = Field(default_factory=dict)


class EvidencePublic(OutputModel):
    alert_id: int
    bytes: int
