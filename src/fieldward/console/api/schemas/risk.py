"""Schemas of the risk pages: the site score, device risks, the remediation plan and the trend."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fieldward.console.api.schemas import OutputModel

__all__ = ["DeviceRiskRow", "RemediationPublic", "SiteRiskPublic", "TrendPoint", "TrendPublic"]


class SiteRiskPublic(OutputModel):
    """The site's score (``fieldward.assess.risk.score_site`` over the stored device risks)."""

    sensor_id: int | None
    score: int
    band: str
    devices: int
    by_priority: dict[str, int]
    contributors: list[dict[str, Any]]


class DeviceRiskRow(OutputModel):
    device_id: int
    device_key: str
    device_label: str
    sensor_id: int
    device_type: str | None
    purdue_level: int | None
    score: int
    priority: str
    exploitability: float
    exposure: float
    criticality: float
    behaviour: float
    contributors: list[dict[str, Any]]
    updated: dt.datetime


class RemediationPublic(OutputModel):
    """One action of the prioritised plan (``fieldward.assess.model.RemediationItem``)."""

    priority: str
    device_id: int | None
    device_key: str
    device_label: str
    action: str
    reason: str
    references: list[str]
    risk_reduction: int


class TrendPoint(OutputModel):
    day: dt.date
    score: int
    devices: int
    by_priority: dict[str, int]


class TrendPublic(OutputModel):
    sensor_id: int | None
    points: list[TrendPoint]
