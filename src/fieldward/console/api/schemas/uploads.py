"""Schemas of capture uploads (``/api/v1/uploads``): the job a capture became and its state."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from fieldward.console.api.schemas import OutputModel

__all__ = ["UploadPublic"]


class UploadPublic(OutputModel):
    """An uploaded capture's analysis: ``queued`` -> ``running`` -> ``done`` or ``failed``."""

    id: str
    filename: str
    sensor: str = Field(description="The sensor name the results were stored under")
    size: int = Field(ge=0, description="Bytes uploaded")
    status: Literal["queued", "running", "done", "failed"]
    created: dt.datetime
    started: dt.datetime | None = None
    finished: dt.datetime | None = None
    counts: dict[str, int] = Field(
        default_factory=dict,
        description="Rows written by kind (devices, communications, alerts, ...), packets, flows",
    )
    error: str | None = Field(default=None, description="Why the analysis failed")
