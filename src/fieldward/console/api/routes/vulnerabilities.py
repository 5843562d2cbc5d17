"""Vulnerability findings (``/api/v1/vulnerabilities``): list with filters, detail, the analyst's
"not applicable" mark.

A mark is kept twice: on the finding's row (``not_applicable``, what the device page shows) and in the
feed store's ``vuln_marks`` through :class:`fieldward.store.vulndb.VulnerabilityDatabase` on the
console's database URL, keyed by (device key, vulnerability id). A sensor re-pushing the finding
rewrites the row, and a feed re-import never touches marks, so every read lays the marks over the rows
(an outer join on ``vuln_marks``): a marked finding stays not applicable whatever the sensor sends.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from fieldward.console.api.deps import CurrentUser, IdPath, PagingDep, SessionDep, access, audit
from fieldward.console.api.routes.devices import device_label
from fieldward.console.api.schemas import NO_NUL, Page
from fieldward.console.api.schemas.vulnerabilities import (
    VulnerabilityDetail,
    VulnerabilityMark,
    VulnerabilityPublic,
)
from fieldward.store.database import Database
from fieldward.store.models import SEVERITY_RANK, Device, VulnerabilityFinding
from fieldward.store.vulndb import MarkRow, VulnerabilityDatabase, VulnerabilityStoreError

__all__ = ["router"]

router = APIRouter(prefix="/vulnerabilities", tags=["vulnerabilities"])

SeverityFilter = Literal["low", "medium", "high", "critical", "low+", "medium+", "high+", "critical+"]
SortName = Literal["severity", "cvss_score", "last_seen", "first_seen", "vulnerability_id", "device"]
SORTS: dict[str, tuple[Any, ...]] = {
    "severity": (VulnerabilityFinding.severity_rank, VulnerabilityFinding.cvss_score),
    "cvss_score": (VulnerabilityFinding.cvss_score,),
    "last_seen": (VulnerabilityFinding.last_seen,),
    "first_seen": (VulnerabilityFinding.first_seen,),
    "vulnerability_id": (VulnerabilityFinding.vulnerability_id,),
    "device": (VulnerabilityFinding.device_id,),
}
MARK_JOIN = and_(
    MarkRow.device_id == Device.device_key, MarkRow.vulnerability_id == VulnerabilityFinding.vulnerability_id
)
"""The feed store's mark of a finding (outer-joined)."""


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _select() -> Any:
    return (
        select(VulnerabilityFinding, Device, MarkRow)
        .join(Device, Device.id == VulnerabilityFinding.device_id)
        .outerjoin(MarkRow, MARK_JOIN)
    )


def _public(finding: VulnerabilityFinding, device: Device, mark: MarkRow | None) -> dict[str, Any]:
    return {
        "id": finding.id,
        "sensor_id": finding.sensor_id,
        "device_id": finding.device_id,
        "device_key": device.device_key,
        "device_label": device_label(device.hostname, device.ips, device.mac, device.device_key),
        "vulnerability_id": finding.vulnerability_id,
        "severity": finding.severity,
        "cvss_score": finding.cvss_score,
        "kev": finding.kev,
        "kev_due_date": finding.kev_due_date,
        "known_ransomware": finding.known_ransomware,
        "confidence": finding.confidence,
        "not_applicable": bool(finding.not_applicable) or mark is not None,
        "not_applicable_reason": mark.reason if mark is not None else finding.not_applicable_reason,
        "first_seen": finding.first_seen,
        "last_seen": finding.last_seen,
    }


def _detail(finding: VulnerabilityFinding, device: Device, mark: MarkRow | None) -> VulnerabilityDetail:
    marked_at = mark.marked_at if mark is not None else None
    if marked_at is not None and marked_at.tzinfo is None:
        import datetime as dt

        marked_at = marked_at.replace(tzinfo=dt.UTC)
    return VulnerabilityDetail(
        **_public(finding, device, mark),
        cpe=finding.cpe,
        criteria=finding.criteria,
        reason=finding.reason,
        sources=[str(s) for s in finding.sources or []],
        cvss_vector=finding.cvss_vector,
        cvss_version=finding.cvss_version,
        description=finding.description,
        remediation=finding.remediation,
        published=finding.published,
        marked_by=mark.marked_by if mark is not None else None,
        marked_at=marked_at,
    )


def _get(session: Session, finding_id: int) -> tuple[VulnerabilityFinding, Device, MarkRow | None]:
    row = session.execute(_select().where(VulnerabilityFinding.id == finding_id)).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such vulnerability finding")
    finding, device, mark = row
    return finding, device, mark


@router.get(
    "",
    operation_id="vulnerabilities_list",
    response_model=Page[VulnerabilityPublic],
    summary="Vulnerability findings with filters, search, sort and paging",
    **access("viewer"),
)
def list_vulnerabilities(
    session: SessionDep,
    paging: PagingDep,
    device_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    sensor_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    severity: Annotated[SeverityFilter | None, Query(description="A severity, or 'high+' and worse")] = None,
    kev: Annotated[bool | None, Query(description="In CISA's Known Exploited Vulnerabilities")] = None,
    known_ransomware: bool | None = None,
    not_applicable: Annotated[
        bool | None, Query(description="Marked not applicable (by the sensor or in the console)")
    ] = None,
    q: Annotated[
        str | None, Query(max_length=64, pattern=NO_NUL, description="Part of the CVE / advisory id")
    ] = None,
    sort: SortName = "severity",
    order: Literal["asc", "desc"] = "desc",
) -> Page[VulnerabilityPublic]:
    filters: list[ColumnElement[bool]] = []
    if device_id is not None:
        filters.append(VulnerabilityFinding.device_id == device_id)
    if sensor_id is not None:
        filters.append(VulnerabilityFinding.sensor_id == sensor_id)
    if severity is not None:
        rank = SEVERITY_RANK[severity.rstrip("+")]
        column = VulnerabilityFinding.severity_rank
        filters.append(column >= rank if severity.endswith("+") else column == rank)
    if kev is not None:
        filters.append(VulnerabilityFinding.kev.is_(kev))
    if known_ransomware is not None:
        filters.append(VulnerabilityFinding.known_ransomware.is_(known_ransomware))
    if not_applicable is not None:
        dismissed = or_(VulnerabilityFinding.not_applicable.is_(True), MarkRow.device_id.is_not(None))
        filters.append(dismissed if not_applicable else ~dismissed)
    if q:
        filters.append(VulnerabilityFinding.vulnerability_id.ilike(_like(q), escape="\\"))
    total = int(
        session.scalar(
            select(func.count())
            .select_from(VulnerabilityFinding)
            .join(Device, Device.id == VulnerabilityFinding.device_id)
            .outerjoin(MarkRow, MARK_JOIN)
            .where(*filters)
        )
        or 0
    )
    ordering = [c.desc() if order == "desc" else c.asc() for c in SORTS[sort]]
    ordering.append(VulnerabilityFinding.id.desc() if order == "desc" else VulnerabilityFinding.id.asc())
    rows = session.execute(
        _select().where(*filters).order_by(*ordering).limit(paging.limit).offset(paging.offset)
    )
    return Page[VulnerabilityPublic](
        items=[VulnerabilityPublic.model_validate(_public(f, d, m)) for f, d, m in rows],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.get(
    "/{finding_id}",
    operation_id="vulnerabilities_get",
    response_model=VulnerabilityDetail,
    summary="A finding: why it matched, the CVE's description and fix, the analyst's mark",
    **access("viewer", 404),
)
def get_vulnerability(finding_id: IdPath, session: SessionDep) -> VulnerabilityDetail:
    return _detail(*_get(session, finding_id))


def _feed_store(request: Request) -> VulnerabilityDatabase:
    database: Database = request.app.state.database
    try:
        return VulnerabilityDatabase(database.engine.url.render_as_string(hide_password=False))
    except VulnerabilityStoreError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None


@router.put(
    "/{finding_id}/not-applicable",
    operation_id="vulnerabilities_mark",
    response_model=VulnerabilityDetail,
    summary="Mark a finding not applicable (kept across re-imports and sensor re-pushes)",
    **access("analyst", 404),
)
def mark_vulnerability(
    finding_id: IdPath, body: VulnerabilityMark, request: Request, user: CurrentUser, session: SessionDep
) -> VulnerabilityDetail:
    finding, device, _ = _get(session, finding_id)
    reason = body.reason.strip() or body.reason
    store = _feed_store(request)
    try:
        store.mark_not_applicable(device.device_key, finding.vulnerability_id, reason, user.username)
    finally:
        store.close()
    finding.not_applicable = True
    finding.not_applicable_reason = reason
    audit(
        session,
        user.username,
        "vulnerability.mark_not_applicable",
        f"vulnerability_finding:{finding.id}",
        device_key=device.device_key,
        vulnerability_id=finding.vulnerability_id,
        reason=reason,
    )
    session.commit()
    return _detail(*_get(session, finding_id))


@router.delete(
    "/{finding_id}/not-applicable",
    operation_id="vulnerabilities_unmark",
    response_model=VulnerabilityDetail,
    summary="Take back a not-applicable mark (the finding counts again)",
    **access("analyst", 404),
)
def unmark_vulnerability(
    finding_id: IdPath, request: Request, user: CurrentUser, session: SessionDep
) -> VulnerabilityDetail:
    finding, device, mark = _get(session, finding_id)
    was = bool(finding.not_applicable) or mark is not None
    store = _feed_store(request)
    try:
        store.clear_mark(device.device_key, finding.vulnerability_id)
    finally:
        store.close()
    finding.not_applicable = False
    finding.not_applicable_reason = None
    if was:
        audit(
            session,
            user.username,
            "vulnerability.mark_applicable",
            f"vulnerability_finding:{finding.id}",
            device_key=device.device_key,
            vulnerability_id=finding.vulnerability_id,
        )
    session.commit()
    return _detail(*_get(session, finding_id))
