"""Schemas of the vulnerability findings: list rows, the detail page, the analyst's mark."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from fieldward.console.api.schemas import NO_NUL, InputModel, OutputModel

__all__ = ["VulnerabilityDetail", "VulnerabilityMark", "VulnerabilityPublic"]


class VulnerabilityPublic(OutputModel):
    """A finding: a vulnerability that applies to a device (``not_applicable`` includes the analyst's
    marks kept in the feed store, which survive re-imports and sensor re-pushes)."""

    id: int
    sensor_id: int
    device_id: int
    device_key: str
    device_label: str
    vulnerability_id: str
    severity: str
    cvss_score: float | None
    kev: bool
    kev_due_date: dt.date | None
    known_ransomware: bool
    confidence: float
    not_applicable: bool
    not_applicable_reason: str | None
    first_seen: dt.datetime
    last_seen: dt.datetime


class VulnerabilityDetail(VulnerabilityPublic):
    cpe: str
    criteria: str
    reason: str
    sources: list[str]
    cvss_vector: str | None
    cvss_version: str | None
    description: str
    remediation: str | None
    published: dt.datetime | None
    marked_by: str | None = Field(description="Who marked it not applicable in the console (if anyone)")
    marked_at: dt.datetime | None


class VulnerabilityMark(InputModel):
    reason: str = Field(min_length=1, max_length=2000, pattern=NO_NUL, description="Why it does not apply")
