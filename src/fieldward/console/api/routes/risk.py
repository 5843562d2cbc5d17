"""Risk (``/api/v1/risk``): the site score, device risks, the remediation plan and the score's trend.

The store keeps what sensors report of the risk model: one ``device_risks`` row per device (score,
factors, priority, contributors; ``store/ingest.py`` drops the site score and the plan of
``risk.json``). So the console recomputes the rest with the same model (``fieldward.assess.risk``)
from its rows, converted back to ``fieldward.assess.model`` records by :func:`load_site`:

- the site score: :func:`~fieldward.assess.risk.score_site` over the stored device risks;
- the plan: :func:`~fieldward.assess.risk.remediation_plan` over the devices that have findings,
  insecure configurations or open alerts, with the analyst's "not applicable" marks (the finding's
  flag, or a mark in the feed store's ``vuln_marks``) and importance applied;
- the trend: there is no history in the store, so every computation of a site score upserts that
  day's :class:`~fieldward.console.triage_models.SiteRiskSnapshot` (UTC day, the whole site or one
  sensor); ``GET /risk/trend`` returns those points. A day nobody looked at the risk has no point.

Device ids in the records are the sensors' device keys; a key reported by two sensors is prefixed
with ``s<sensor id>:`` so the records stay distinct.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fieldward.assess.model import (
    ConfigFinding,
    CvssScore,
    Finding,
    Priority,
    RemediationItem,
    RiskContributor,
    Severity,
    SiteRisk,
)
from fieldward.assess.model import (
    DeviceRisk as RiskRecord,
)
from fieldward.assess.report import risk_band
from fieldward.assess.risk import remediation_plan, score_site
from fieldward.console.api.deps import PagingDep, SessionDep, access
from fieldward.console.api.routes.devices import device_label
from fieldward.console.api.schemas import Page
from fieldward.console.api.schemas.devices import IMPORTANCE_RANK
from fieldward.console.api.schemas.risk import (
    DeviceRiskRow,
    RemediationPublic,
    SiteRiskPublic,
    TrendPoint,
    TrendPublic,
)
from fieldward.console.triage_models import SiteRiskSnapshot
from fieldward.store.models import Alert, ConfigFindingRow, Device, DeviceRisk, VulnerabilityFinding, utcnow
from fieldward.store.vulndb import MarkRow

__all__ = ["SiteData", "load_site", "record_snapshot", "router", "site_risk"]

router = APIRouter(prefix="/risk", tags=["risk"])

ALERT_ROWS = 20_000
"""At most this many alerts (the most severe, newest first) feed a plan or a report."""
SensorQuery = Annotated[int | None, Query(ge=1, le=2**31 - 1, description="One sensor (default: the site)")]
IMPORTANCE_NAME = {rank: name for name, rank in IMPORTANCE_RANK.items()}
SEVERITIES = {s.value for s in Severity}


@dataclass
class SiteData:
    """The store's rows of a site (or one sensor) as the assessment's records."""

    devices: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    configs: list[ConfigFinding] = field(default_factory=list)
    risks: list[RiskRecord] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    importance: dict[str, str] = field(default_factory=dict)
    keys: dict[int, str] = field(default_factory=dict)
    """Store device id -> the record's device id."""
    ids: dict[str, int] = field(default_factory=dict)
    """The record's device id -> store device id."""


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value is not None else None


def _severity(value: str | None) -> Severity:
    value = (value or "none").lower()
    return Severity(value) if value in SEVERITIES else Severity.NONE


def _priority(value: str | None) -> Priority:
    try:
        return Priority((value or "later").lower())
    except ValueError:
        return Priority.LATER


def _contributors(items: Any) -> tuple[RiskContributor, ...]:
    found: list[RiskContributor] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        try:
            points = float(item.get("points", 0.0))
        except (TypeError, ValueError):
            continue
        reference = item.get("reference")
        found.append(
            RiskContributor(
                str(item.get("factor", "")),
                points,
                str(item.get("detail", "")),
                str(reference) if reference is not None else None,
            )
        )
    return tuple(found)


def _scope(column: Any, sensor_id: int | None) -> list[ColumnElement[bool]]:
    return [column == sensor_id] if sensor_id is not None else []


def load_site(
    session: Session, sensor_id: int | None, *, all_devices: bool, alert_rows: int = ALERT_ROWS
) -> SiteData:
    """Devices, findings (with marks), configurations, device risks and alerts of the site or sensor.

    ``all_devices``: every device (the report's inventory figures); otherwise only the devices that
    have a finding, a configuration finding, a risk above zero or an open alert (enough for the plan).
    Alerts: open ones when not ``all_devices``, else every status; at most ``alert_rows``.
    """
    data = SiteData()
    device_filter = _scope(Device.sensor_id, sensor_id)
    if not all_devices:
        involved = (
            select(VulnerabilityFinding.device_id)
            .where(*_scope(VulnerabilityFinding.sensor_id, sensor_id))
            .union(
                select(ConfigFindingRow.device_id).where(*_scope(ConfigFindingRow.sensor_id, sensor_id)),
                select(DeviceRisk.device_id).where(DeviceRisk.score > 0),
                select(Alert.src_device_id).where(Alert.status != "closed", Alert.src_device_id.is_not(None)),
                select(Alert.dst_device_id).where(Alert.status != "closed", Alert.dst_device_id.is_not(None)),
            )
            .subquery()
        )
        device_filter.append(Device.id.in_(select(involved.c[0])))
    devices = list(session.scalars(select(Device).where(*device_filter).order_by(Device.id)))
    sensors_of: dict[str, set[int]] = {}
    for device in devices:
        sensors_of.setdefault(device.device_key, set()).add(device.sensor_id)
    for device in devices:
        key = device.device_key
        if len(sensors_of[key]) > 1:
            key = f"s{device.sensor_id}:{key}"
        data.keys[device.id] = key
        data.ids[key] = device.id
        data.devices.append(
            {
                "id": key,
                "mac": device.mac,
                "ips": list(device.ips or []),
                "hostname": device.hostname,
                "vendor": device.vendor,
                "model": device.model,
                "firmware": device.firmware,
                "os": device.os,
                "device_type": device.device_type,
                "purdue_level": device.purdue_level,
                "roles": list(device.roles or []),
                "services": list(device.services or []),
                "protocols": list(device.protocols or []),
                "local": device.local,
            }
        )
        if device.importance is not None and device.importance in IMPORTANCE_NAME:
            data.importance[key] = IMPORTANCE_NAME[device.importance]
    known = set(data.keys)
    marked = {
        (device, vulnerability)
        for device, vulnerability in session.execute(select(MarkRow.device_id, MarkRow.vulnerability_id))
    }
    for row, device_key in session.execute(
        select(VulnerabilityFinding, Device.device_key)
        .join(Device, Device.id == VulnerabilityFinding.device_id)
        .where(*_scope(VulnerabilityFinding.sensor_id, sensor_id))
        .order_by(VulnerabilityFinding.id)
    ):
        if row.device_id not in known:
            continue
        cvss = (
            CvssScore(
                version=row.cvss_version or "3.1",
                vector=row.cvss_vector or "",
                base_score=float(row.cvss_score),
                severity=_severity(row.severity),
                source="",
            )
            if row.cvss_score is not None
            else None
        )
        data.findings.append(
            Finding(
                device_id=data.keys[row.device_id],
                vulnerability_id=row.vulnerability_id,
                cpe=row.cpe,
                criteria=row.criteria,
                reason=row.reason,
                confidence=float(row.confidence),
                sources=tuple(str(s) for s in row.sources or []),
                severity=_severity(row.severity),
                cvss=cvss,
                kev=bool(row.kev),
                kev_due_date=row.kev_due_date,
                known_ransomware=bool(row.known_ransomware),
                description=row.description,
                remediation=row.remediation,
                published=row.published,
                not_applicable=bool(row.not_applicable) or (device_key, row.vulnerability_id) in marked,
                not_applicable_reason=row.not_applicable_reason,
            )
        )
    for config in session.scalars(
        select(ConfigFindingRow)
        .where(*_scope(ConfigFindingRow.sensor_id, sensor_id))
        .order_by(ConfigFindingRow.id)
    ):
        if config.device_id not in known:
            continue
        data.configs.append(
            ConfigFinding(
                check=config.check,
                device_id=data.keys[config.device_id],
                title=config.title,
                severity=_severity(config.severity),
                explanation=config.explanation,
                recommendation=config.recommendation,
                protocol=config.protocol,
                port=config.port,
                peers=tuple(str(p) for p in config.peers or []),
                first_seen=_iso(config.first_seen),
                last_seen=_iso(config.last_seen),
                count=int(config.count),
                evidence=tuple(e for e in config.evidence or [] if isinstance(e, int)),
                details=dict(config.details or {}),
            )
        )
    for risk in session.scalars(
        select(DeviceRisk)
        .join(Device, Device.id == DeviceRisk.device_id)
        .where(*device_filter)
        .order_by(DeviceRisk.score.desc(), DeviceRisk.device_id)
    ):
        if risk.device_id not in known:
            continue
        data.risks.append(
            RiskRecord(
                device_id=data.keys[risk.device_id],
                score=int(risk.score),
                exploitability=float(risk.exploitability),
                exposure=float(risk.exposure),
                criticality=float(risk.criticality),
                behaviour=float(risk.behaviour),
                priority=_priority(risk.priority),
                contributors=_contributors(risk.contributors),
            )
        )
    alert_filter = _scope(Alert.sensor_id, sensor_id)
    if not all_devices:
        alert_filter.append(Alert.status != "closed")
    for alert in session.scalars(
        select(Alert)
        .where(*alert_filter)
        .order_by(Alert.severity_rank.desc(), Alert.last_ts.desc(), Alert.id)
        .limit(alert_rows)
    ):
        data.alerts.append(
            {
                "id": alert.alert_key,
                "engine": alert.engine,
                "type": alert.type,
                "title": alert.title,
                "severity": alert.severity,
                "status": alert.status,
                "count": alert.count,
                "first_ts": _iso(alert.first_ts),
                "last_ts": _iso(alert.last_ts),
                "src": alert.src,
                "dst": alert.dst,
                "src_device": data.keys.get(alert.src_device_id) if alert.src_device_id else None,
                "dst_device": data.keys.get(alert.dst_device_id) if alert.dst_device_id else None,
                "protocol": alert.protocol,
            }
        )
    return data


def _risk_records(session: Session, sensor_id: int | None) -> tuple[list[RiskRecord], list[dict[str, Any]]]:
    """Every stored device risk of the scope (score and priority only) and the worst device's record."""
    rows = session.execute(
        select(DeviceRisk.device_id, DeviceRisk.score, DeviceRisk.priority)
        .join(Device, Device.id == DeviceRisk.device_id)
        .where(*_scope(Device.sensor_id, sensor_id))
    )
    risks = [RiskRecord(str(d), int(s), 0.0, 0.0, 0.0, 0.0, _priority(p)) for d, s, p in rows]
    devices: list[dict[str, Any]] = []
    if risks:
        worst = min(risks, key=lambda r: (-r.score, r.device_id))
        device = session.get(Device, int(worst.device_id))
        if device is not None:
            label = device_label(device.hostname, device.ips, device.mac, device.device_key)
            devices.append({"id": worst.device_id, "hostname": label})
    return risks, devices


def site_risk(session: Session, sensor_id: int | None) -> SiteRisk:
    """The site score from the stored device risks; records that day's snapshot (commits)."""
    risks, devices = _risk_records(session, sensor_id)
    site = score_site(risks, devices)
    record_snapshot(session, sensor_id, site)
    return site


def record_snapshot(
    session: Session, sensor_id: int | None, site: SiteRisk, day: dt.date | None = None
) -> None:
    """Upsert the day's snapshot of the site (``sensor_id`` None) or a sensor, and commit."""
    scope = sensor_id or 0
    day = day or utcnow().date()
    values = {"score": site.score, "devices": site.devices, "by_priority": dict(site.by_priority)}
    row = session.scalars(
        select(SiteRiskSnapshot).where(SiteRiskSnapshot.sensor_id == scope, SiteRiskSnapshot.day == day)
    ).first()
    if row is not None:
        if (row.score, row.devices, row.by_priority) == (
            values["score"],
            values["devices"],
            values["by_priority"],
        ):
            return
        row.score, row.devices, row.by_priority = site.score, site.devices, dict(site.by_priority)
        row.updated = utcnow()
    else:
        session.add(SiteRiskSnapshot(sensor_id=scope, day=day, **values))
    try:
        session.commit()
    except IntegrityError:  # another request wrote the same day at the same moment
        session.rollback()


@router.get(
    "",
    operation_id="risk_site",
    response_model=SiteRiskPublic,
    summary="The site's (or one sensor's) risk score and what makes it",
    **access("viewer"),
)
def get_site_risk(session: SessionDep, sensor_id: SensorQuery = None) -> SiteRiskPublic:
    site = site_risk(session, sensor_id)
    return SiteRiskPublic(
        sensor_id=sensor_id,
        score=site.score,
        band=risk_band(site.score),
        devices=site.devices,
        by_priority=dict(site.by_priority),
        contributors=[
            {
                "factor": c.factor,
                "points": c.points,
                "detail": c.detail,
                "device_id": int(c.reference) if c.reference and c.reference.isdigit() else None,
            }
            for c in site.contributors
        ],
    )


@router.get(
    "/devices",
    operation_id="risk_devices",
    response_model=Page[DeviceRiskRow],
    summary="Device risks, riskiest first",
    **access("viewer"),
)
def list_device_risks(
    session: SessionDep,
    paging: PagingDep,
    sensor_id: SensorQuery = None,
    priority: Literal["now", "next", "later"] | None = None,
    min_score: Annotated[int | None, Query(ge=0, le=100)] = None,
    order: Literal["asc", "desc"] = "desc",
) -> Page[DeviceRiskRow]:
    filters: list[ColumnElement[bool]] = _scope(Device.sensor_id, sensor_id)
    if priority is not None:
        filters.append(DeviceRisk.priority == priority)
    if min_score is not None:
        filters.append(DeviceRisk.score >= min_score)
    base = select(DeviceRisk, Device).join(Device, Device.id == DeviceRisk.device_id).where(*filters)
    total = int(
        session.scalar(
            select(func.count())
            .select_from(DeviceRisk)
            .join(Device, Device.id == DeviceRisk.device_id)
            .where(*filters)
        )
        or 0
    )
    score = DeviceRisk.score.desc() if order == "desc" else DeviceRisk.score.asc()
    rows = session.execute(
        base.order_by(score, DeviceRisk.device_id).limit(paging.limit).offset(paging.offset)
    )
    items = [
        DeviceRiskRow(
            device_id=device.id,
            device_key=device.device_key,
            device_label=device_label(device.hostname, device.ips, device.mac, device.device_key),
            sensor_id=device.sensor_id,
            device_type=device.device_type,
            purdue_level=device.purdue_level,
            score=risk.score,
            priority=risk.priority,
            exploitability=risk.exploitability,
            exposure=risk.exposure,
            criticality=risk.criticality,
            behaviour=risk.behaviour,
            contributors=list(risk.contributors or []),
            updated=risk.updated,
        )
        for risk, device in rows
    ]
    return Page[DeviceRiskRow](items=items, total=total, limit=paging.limit, offset=paging.offset)


def plan_items(data: SiteData) -> list[RemediationItem]:
    """The remediation plan of loaded site data (Now, Next, Later; largest reduction first)."""
    return remediation_plan(
        data.risks, data.devices, data.findings, data.configs, data.alerts, importance=data.importance
    )


@router.get(
    "/plan",
    operation_id="risk_plan",
    response_model=Page[RemediationPublic],
    summary="The prioritised remediation plan (Now / Next / Later)",
    **access("viewer"),
)
def get_plan(
    session: SessionDep,
    paging: PagingDep,
    sensor_id: SensorQuery = None,
    priority: Literal["now", "next", "later"] | None = None,
    device_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Page[RemediationPublic]:
    data = load_site(session, sensor_id, all_devices=False)
    labels = {str(d["id"]): d for d in data.devices}
    items = plan_items(data)
    if priority is not None:
        items = [i for i in items if i.priority.value == priority]
    if device_id is not None:
        items = [i for i in items if data.ids.get(i.device_id) == device_id]
    window = items[paging.offset : paging.offset + paging.limit]
    public = []
    for item in window:
        device = labels.get(item.device_id, {})
        store_id = data.ids.get(item.device_id)
        public.append(
            RemediationPublic(
                priority=item.priority.value,
                device_id=store_id,
                device_key=item.device_id,
                device_label=device_label(
                    device.get("hostname"), device.get("ips"), device.get("mac"), item.device_id
                ),
                action=item.action,
                reason=item.reason,
                references=list(item.references),
                risk_reduction=item.risk_reduction,
            )
        )
    return Page[RemediationPublic](items=public, total=len(items), limit=paging.limit, offset=paging.offset)


@router.get(
    "/trend",
    operation_id="risk_trend",
    response_model=TrendPublic,
    summary="The site score per day (one point per day the score was computed)",
    **access("viewer"),
)
def get_trend(
    session: SessionDep,
    sensor_id: SensorQuery = None,
    days: Annotated[int, Query(ge=1, le=3650, description="How many days back")] = 90,
) -> TrendPublic:
    site_risk(session, sensor_id)  # today's point
    since = utcnow().date() - dt.timedelta(days=days - 1)
    rows = session.scalars(
        select(SiteRiskSnapshot)
        .where(SiteRiskSnapshot.sensor_id == (sensor_id or 0), SiteRiskSnapshot.day >= since)
        .order_by(SiteRiskSnapshot.day)
    )
    return TrendPublic(
        sensor_id=sensor_id,
        points=[
            TrendPoint(day=r.day, score=r.score, devices=r.devices, by_priority=dict(r.by_priority or {}))
            for r in rows
        ],
    )
