"""Schemas of the inventory: the device list, a device's detail page, the analyst's update."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from fieldward.console.api.schemas import InputModel, OutputModel

__all__ = [
    "IMPORTANCE_RANK",
    "DeviceAlertPublic",
    "DeviceAttributePublic",
    "DeviceCommunicationPublic",
    "DeviceConfigFindingPublic",
    "DeviceDetail",
    "DevicePublic",
    "DeviceRiskPublic",
    "DeviceUpdate",
    "DeviceVulnerabilityPublic",
]

ImportanceName = Literal["low", "normal", "high", "critical"]
IMPORTANCE_RANK: dict[str, int] = {"low": 1, "normal": 2, "high": 3, "critical": 4}
"""How ``devices.importance`` (a small integer) stores the names of ``fieldward.assess.importance``."""


class DevicePublic(OutputModel):
    """A row of the inventory table."""

    id: int
    sensor_id: int
    device_key: str
    label: str = Field(description="Hostname, else first IP, else MAC, else the key")
    mac: str | None
    ips: list[str]
    vendor: str | None
    model: str | None
    firmware: str | None
    hostname: str | None
    os: str | None
    device_type: str | None
    purdue_level: int | None
    importance: ImportanceName | None = Field(description="Analyst-set importance; null: normal (not set)")
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None
    packets: int
    protocols: list[str]
    risk_score: int | None


class DeviceAttributePublic(OutputModel):
    name: str
    value: Any
    confidence: float
    evidence: list[dict[str, Any]]
    alternatives: list[Any]


class DeviceCommunicationPublic(OutputModel):
    """An edge seen from this device: ``direction`` is ``out`` when the device is the source."""

    id: int
    direction: str
    peer_id: int
    peer_label: str
    transport: str
    port: int
    protocol: str
    flows: int
    packets: int
    bytes: int
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None


class DeviceVulnerabilityPublic(OutputModel):
    id: int
    vulnerability_id: str
    severity: str
    cvss_score: float | None
    kev: bool
    known_ransomware: bool
    confidence: float
    reason: str
    description: str
    remediation: str | None
    not_applicable: bool
    not_applicable_reason: str | None
    first_seen: dt.datetime
    last_seen: dt.datetime


class DeviceConfigFindingPublic(OutputModel):
    id: int
    check: str
    title: str
    severity: str
    explanation: str
    recommendation: str
    protocol: str | None
    port: int | None
    peers: list[str]
    count: int
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None


class DeviceRiskPublic(OutputModel):
    score: int
    priority: str
    exploitability: float
    exposure: float
    criticality: float
    behaviour: float
    contributors: list[dict[str, Any]]
    updated: dt.datetime


class DeviceAlertPublic(OutputModel):
    id: int
    type: str
    title: str
    severity: str
    status: str
    count: int
    src: str | None
    dst: str | None
    protocol: str | None
    first_ts: dt.datetime | None
    last_ts: dt.datetime | None


class DeviceDetail(DevicePublic):
    """The device page: the row plus evidence, edges, findings, risk and alerts (newest first,
    at most ``DETAIL_ROWS`` of each list; ``*_total`` give the full counts)."""

    product_code: str | None
    serial: str | None
    local: bool | None
    router: bool | None
    roles: list[dict[str, Any]]
    services: list[dict[str, Any]]
    vlans: list[int]
    confidence: dict[str, float]
    facts: dict[str, Any]
    address_history: list[dict[str, Any]]
    attributes: list[DeviceAttributePublic]
    communications: list[DeviceCommunicationPublic]
    communications_total: int
    vulnerabilities: list[DeviceVulnerabilityPublic]
    configurations: list[DeviceConfigFindingPublic]
    risk: DeviceRiskPublic | None
    alerts: list[DeviceAlertPublic]
    alerts_total: int


class DeviceUpdate(InputModel):
    importance: ImportanceName | None = Field(
        description="The analyst's importance (the risk model's criticality factor); null clears it"
    )
