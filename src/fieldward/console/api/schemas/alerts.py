"""Schemas of the alert queue: list rows, the detail page with history and comments, triage bodies,
the learned / muted rules and the sensors' rule document (``GET /sensors/me/rules``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from fieldward.console.api.schemas import NO_NUL, InputModel, OutputModel, Page

__all__ = [
    "AlertCommentCreate",
    "AlertCommentPublic",
    "AlertDetail",
    "AlertEventPublic",
    "AlertPage",
    "AlertPublic",
    "AlertRulePublic",
    "EvidenceInfo",
    "LearnCreate",
    "MuteCreate",
    "SensorRules",
    "TriageCreate",
]

StatusName = Literal["new", "acknowledged", "closed"]


class AlertPublic(OutputModel):
    """A row of the alert queue."""

    id: int
    sensor_id: int
    alert_key: str
    engine: str
    type: str
    title: str
    severity: str
    status: StatusName
    count: int
    first_ts: dt.datetime | None
    last_ts: dt.datetime | None
    src: str | None
    dst: str | None
    src_device_id: int | None
    dst_device_id: int | None
    protocol: str | None
    has_evidence: bool = Field(description="An evidence capture was uploaded (GET .../evidence)")


class AlertPage(Page[AlertPublic]):
    """A page of alerts; ``total`` stops counting at ``COUNT_CAP`` (then ``total_capped`` is true)."""

    total_capped: bool = False


class AlertEventPublic(OutputModel):
    id: int
    from_status: str | None
    to_status: str
    by: str
    at: dt.datetime
    note: str | None


class AlertCommentPublic(OutputModel):
    id: int
    author: str
    at: dt.datetime
    text: str


class AlertDetail(AlertPublic):
    """The alert page: the row plus the detector's explanation, evidence, status history and comments."""

    description: str
    explanation: str
    recommendation: str
    mitre: list[str]
    evidence: list[dict[str, Any]]
    details: dict[str, Any]
    events: list[AlertEventPublic]
    comments: list[AlertCommentPublic]


class TriageCreate(InputModel):
    """Body of acknowledge / close / reopen (optional; a note kept in the status history)."""

    note: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)


class AlertCommentCreate(InputModel):
    text: str = Field(min_length=1, max_length=10_000, pattern=NO_NUL)


class LearnCreate(InputModel):
    note: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)


class MuteCreate(InputModel):
    """Mute the alert's type for its source/destination pair; widen a side to every address (``*``)."""

    any_source: bool = Field(default=False, strict=True)
    any_destination: bool = Field(default=False, strict=True)
    note: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)


class AlertRulePublic(OutputModel):
    id: int
    kind: Literal["learned", "muted"]
    sensor_id: int | None
    alert_type: str
    src: str
    dst: str
    alert_id: int | None
    created_by: str
    created: dt.datetime
    note: str | None


class EvidenceInfo(OutputModel):
    """What ``GET /alerts/{id}/evidence`` answers with ``Accept: application/json``."""

    alert_id: int
    filename: str
    bytes: int
    sha256: str


class SensorRules(OutputModel):
    """A baseline document (``fieldward.detect.knowledge.Knowledge`` JSON, format 1) holding the
    console's learned and muted rules for the calling sensor; ``fieldward analyze --baseline`` reads
    it (merge it into the sensor's own ``baseline.json`` to keep what the sensor learned itself)."""

    format: Literal[1] = 1
    updated: str
    sources: list[str]
    behaviours: dict[str, list[list[str]]]
    learned: list[dict[str, str]] = Field(description="AlertRule JSON: {type, src, dst}; '*' any")
    mutes: list[dict[str, str]]
    models: dict[str, Any] = Field(default_factory=dict)
