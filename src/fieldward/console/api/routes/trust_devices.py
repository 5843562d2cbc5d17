"""The device plane for analysts (``/api/v1/trust``): device identities with their verdict, running
version, quarantine and links to the inventory; verdicts; aggregated failure reports; the analyst's
quarantine, release and link actions; link proposals from the identities' serial numbers and MAC
addresses matched against the inventory, which an analyst confirms or rejects (docs/trust/console.md).

The lists read the trust tables and answer whether or not the device plane is mounted; the actions
need it (``ConsoleSettings.trust``) and answer 409 otherwise. Every action is in the audit log:
quarantine and release through :class:`~fieldward.trust.quarantine.QuarantineService` (one entry per
step, the broker's included), links as ``trust.link`` / ``trust.unlink``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from fieldward.console.api.deps import CurrentUser, PagingDep, SessionDep, access, audit
from fieldward.console.api.schemas import NO_NUL, Message, Page
from fieldward.console.trust_hooks import ConsoleTrust, trust_of
from fieldward.store.trust_models import (
    TrustDevice,
    TrustDeviceLink,
    TrustDeviceVersion,
    TrustFailureDevice,
    TrustFailureReport,
    TrustGroup,
    TrustVerdict,
)
from fieldward.trust.autolink import LinkProposals
from fieldward.trust.errors import TrustError
from fieldward.trust.response import TrustLinks

__all__ = ["router"]

router = APIRouter(prefix="/trust", tags=["trust"])

DeviceId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
        description="A device identity (its certificate's common name)",
    ),
]
VerdictName = Literal["healthy", "unknown", "compromised", "outdated"]
_SHOWN_DEVICES = 100


class VersionPublic(BaseModel):
    running_version: str | None
    source: str
    channel: str | None
    newest_version: str | None
    releases_behind: int
    days_behind: int | None
    outdated: bool
    reported_at: dt.datetime


class VerdictPublic(BaseModel):
    device_id: str
    verdict: VerdictName
    reasons: list[str]
    notes: list[str]
    verified_at: dt.datetime
    model: str | None
    firmware_version: str | None
    authentic: bool
    tpm_quote: bool


class LinkPublic(BaseModel):
    id: int
    kind: Literal["inventory", "mac", "serial"]
    value: str
    created_by: str
    inventory_ids: list[int] = Field(description="Inventory devices the link matches now")


class TrustDevicePublic(BaseModel):
    device_id: str
    group: str | None
    device_type: str | None
    model: str | None
    firmware: str | None
    bootstrap: str
    quarantined: bool
    quarantine_reason: str | None
    enrolled: dt.datetime
    last_issued: dt.datetime | None
    verdict: VerdictPublic | None
    version: VersionPublic | None


class AttributePublic(BaseModel):
    kind: Literal["serial", "mac"]
    value: str
    source: Literal["idevid", "csr", "provisioning"] = Field(
        description="The device's IDevID (manufacturer-signed), its CSR (claimed) or a provisioning record"
    )


class TrustDeviceDetail(TrustDevicePublic):
    links: list[LinkPublic]
    attributes: list[AttributePublic] = Field(description="Serial numbers and MACs known for the identity")


class AttributeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["serial", "mac"]
    value: str = Field(min_length=1, max_length=255, pattern=NO_NUL)


class ProposalPublic(BaseModel):
    device_id: str
    kind: Literal["serial", "mac"]
    value: str
    sources: list[str] = Field(description="Where the identity's attribute comes from")
    inventory_ids: list[int] = Field(description="Inventory devices with exactly this serial or MAC")
    others: list[str] = Field(description="Other identities with the same attribute (ambiguous)")
    automatic: bool = Field(description="Whether the response settings would link it without an analyst")


class ProposalDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
    kind: Literal["serial", "mac"]
    value: str = Field(min_length=1, max_length=255, pattern=NO_NUL)
    reason: str | None = Field(default=None, max_length=1000, pattern=NO_NUL)


class FailurePublic(BaseModel):
    model: str | None
    firmware: str | None
    signature: str
    kind: str
    component: str
    message: str
    count: int
    devices: int = Field(description="Distinct devices that reported it (exact)")
    device_ids: list[str] = Field(description=f"At most {_SHOWN_DEVICES} of them")
    first_seen: dt.datetime
    last_seen: dt.datetime


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000, pattern=NO_NUL)


class LinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["inventory", "mac", "serial"]
    value: str = Field(min_length=1, max_length=255, pattern=NO_NUL)


class QuarantinePublic(BaseModel):
    device_id: str
    quarantined: bool
    changed: bool
    reason: str
    broker: str = Field(description="What happened at the broker (disabled, enabled, no broker, failed: ...)")


def _verdict(row: TrustVerdict) -> VerdictPublic:
    return VerdictPublic(
        device_id=row.device_id,
        verdict=row.verdict,  # type: ignore[arg-type]  # the CHECK constraint keeps it one of four
        reasons=[str(r) for r in row.reasons or []],
        notes=[str(n) for n in row.notes or []],
        verified_at=row.verified_at,
        model=row.model,
        firmware_version=row.firmware_version,
        authentic=bool(row.authentic),
        tpm_quote=bool(row.tpm_quote),
    )


def _version(row: TrustDeviceVersion) -> VersionPublic:
    return VersionPublic(
        running_version=row.running_version,
        source=row.source,
        channel=row.channel,
        newest_version=row.newest_version,
        releases_behind=int(row.releases_behind or 0),
        days_behind=row.days_behind,
        outdated=bool(row.outdated),
        reported_at=row.reported_at,
    )


def _devices(session: Session, rows: list[tuple[TrustDevice, str | None]]) -> list[TrustDevicePublic]:
    ids = [device.device_id for device, _ in rows]
    verdicts = {
        v.device_id: v for v in session.scalars(select(TrustVerdict).where(TrustVerdict.device_id.in_(ids)))
    }
    versions = {
        v.device_id: v
        for v in session.scalars(select(TrustDeviceVersion).where(TrustDeviceVersion.device_id.in_(ids)))
    }
    out = []
    for device, group in rows:
        verdict = verdicts.get(device.device_id)
        version = versions.get(device.device_id)
        out.append(
            TrustDevicePublic(
                device_id=device.device_id,
                group=group,
                device_type=device.device_type,
                model=device.model,
                firmware=device.firmware,
                bootstrap=device.bootstrap,
                quarantined=bool(device.quarantined),
                quarantine_reason=device.quarantine_reason,
                enrolled=device.enrolled,
                last_issued=device.last_issued,
                verdict=None if verdict is None else _verdict(verdict),
                version=None if version is None else _version(version),
            )
        )
    return out


def _plane(request: Request) -> ConsoleTrust:
    trust = trust_of(request.app)
    if trust is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="the device plane is not enabled (FIELDWARD_TRUST)"
        )
    return trust


def _links(request: Request, session: Session) -> TrustLinks:
    trust = trust_of(request.app)
    return trust.links if trust is not None else TrustLinks(request.app.state.database)


def _proposals(request: Request) -> LinkProposals:
    """The plane's (with its settings), else one reading the tables (no automatic links)."""
    trust = trust_of(request.app)
    if trust is not None:
        return trust.proposals
    database = request.app.state.database
    return LinkProposals(database, TrustLinks(database))


@router.get(
    "/devices",
    operation_id="trust_devices_list",
    response_model=Page[TrustDevicePublic],
    summary="Device identities with their verdict, running version and quarantine",
    **access("viewer"),
)
def list_devices(
    session: SessionDep,
    paging: PagingDep,
    quarantined: Annotated[bool | None, Query(description="Only (not) quarantined devices")] = None,
    verdict: Annotated[VerdictName | None, Query(description="Only devices with this newest verdict")] = None,
    outdated: Annotated[bool | None, Query(description="Only (not) outdated devices")] = None,
) -> Page[TrustDevicePublic]:
    filters: list[ColumnElement[bool]] = []
    if quarantined is not None:
        filters.append(TrustDevice.quarantined.is_(quarantined))
    if verdict is not None:
        filters.append(
            TrustDevice.device_id.in_(select(TrustVerdict.device_id).where(TrustVerdict.verdict == verdict))
        )
    if outdated is not None:
        current = select(TrustDeviceVersion.device_id).where(TrustDeviceVersion.outdated.is_(True))
        filters.append(
            TrustDevice.device_id.in_(current) if outdated else TrustDevice.device_id.not_in(current)
        )
    total = int(session.scalar(select(func.count()).select_from(TrustDevice).where(*filters)) or 0)
    rows = session.execute(
        select(TrustDevice, TrustGroup.name)
        .outerjoin(TrustGroup, TrustGroup.id == TrustDevice.group_id)
        .where(*filters)
        .order_by(TrustDevice.device_id)
        .limit(paging.limit)
        .offset(paging.offset)
    ).all()
    items = _devices(session, [(device, group) for device, group in rows])
    return Page[TrustDevicePublic](items=items, total=total, limit=paging.limit, offset=paging.offset)


def _detail(request: Request, session: Session, device_id: str) -> TrustDeviceDetail:
    row = session.execute(
        select(TrustDevice, TrustGroup.name)
        .outerjoin(TrustGroup, TrustGroup.id == TrustDevice.group_id)
        .where(TrustDevice.device_id == device_id)
    ).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device identity")
    (device,) = _devices(session, [(row[0], row[1])])
    links = [
        LinkPublic(
            id=link.id,
            kind=link.kind,  # type: ignore[arg-type]  # the CHECK constraint keeps it one of three
            value=link.value,
            created_by=link.created_by,
            inventory_ids=list(link.inventory_ids),
        )
        for link in _links(request, session).links(device_id)
    ]
    attributes = [
        AttributePublic(kind=a.kind, value=a.value, source=a.source)  # type: ignore[arg-type]  # CHECKed
        for a in _proposals(request).attributes(device_id)
    ]
    return TrustDeviceDetail(**device.model_dump(), links=links, attributes=attributes)


@router.get(
    "/devices/{device_id}",
    operation_id="trust_devices_get",
    response_model=TrustDeviceDetail,
    summary="One device identity, with its links to the inventory",
    **access("viewer", 404),
)
def get_device(device_id: DeviceId, request: Request, session: SessionDep) -> TrustDeviceDetail:
    return _detail(request, session, device_id)


def _outcome(outcome: Any) -> QuarantinePublic:
    return QuarantinePublic(
        device_id=outcome.device_id,
        quarantined=outcome.quarantined,
        changed=outcome.changed,
        reason=outcome.reason,
        broker=outcome.broker,
    )


@router.post(
    "/devices/{device_id}/release",
    operation_id="trust_devices_release",
    response_model=QuarantinePublic,
    summary="Release a quarantined device (the analyst's action; audited)",
    **access("analyst", 404, 409, 422),
)
def release_device(
    device_id: DeviceId, body: ReasonBody, request: Request, user: CurrentUser, session: SessionDep
) -> QuarantinePublic:
    trust = _plane(request)
    session.rollback()  # the quarantine service writes in its own transactions
    if trust.service.registry.device(device_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device identity")
    try:
        outcome = trust.quarantine.release(device_id, user.username, body.reason)
    except TrustError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return _outcome(outcome)


@router.post(
    "/devices/{device_id}/quarantine",
    operation_id="trust_devices_quarantine",
    response_model=QuarantinePublic,
    summary="Quarantine a device by hand (broker access cut, certificate not renewed; audited)",
    **access("analyst", 404, 409, 422),
)
def quarantine_device(
    device_id: DeviceId, body: ReasonBody, request: Request, user: CurrentUser, session: SessionDep
) -> QuarantinePublic:
    trust = _plane(request)
    session.rollback()
    if trust.service.registry.device(device_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device identity")
    try:
        outcome = trust.quarantine.quarantine(device_id, by=user.username, reason=body.reason)
    except TrustError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return _outcome(outcome)


@router.post(
    "/devices/{device_id}/links",
    operation_id="trust_devices_link",
    response_model=LinkPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Link a device identity to inventory devices (by inventory id, MAC or serial)",
    **access("analyst", 404, 422),
)
def link_device(
    device_id: DeviceId, body: LinkCreate, request: Request, user: CurrentUser, session: SessionDep
) -> LinkPublic:
    if session.scalar(select(TrustDevice.id).where(TrustDevice.device_id == device_id)) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device identity")
    session.rollback()
    links = _links(request, session)
    try:
        link = links.link(device_id, body.kind, body.value, by=user.username)
    except TrustError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    audit(session, user.username, "trust.link", device_id, kind=link.kind, value=link.value, link=link.id)
    session.commit()
    trust = trust_of(request.app)
    if trust is not None:  # a newly linked outdated device counts in the risk at once
        from fieldward.console.trust_hooks import apply_update_risk

        apply_update_risk(trust.database, [device_id])
    return LinkPublic(
        id=link.id,
        kind=link.kind,  # type: ignore[arg-type]
        value=link.value,
        created_by=link.created_by,
        inventory_ids=list(link.inventory_ids),
    )


@router.delete(
    "/devices/{device_id}/links/{link_id}",
    operation_id="trust_devices_unlink",
    response_model=Message,
    summary="Remove a link",
    **access("analyst", 404),
)
def unlink_device(
    device_id: DeviceId,
    link_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="The link's id")],
    request: Request,
    user: CurrentUser,
    session: SessionDep,
) -> Message:
    row = session.get(TrustDeviceLink, link_id)
    if row is None or row.device_id != device_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such link")
    kind, value = row.kind, row.value
    matched = next(
        (link.inventory_ids for link in _links(request, session).links(device_id) if link.id == link_id), ()
    )
    session.delete(row)
    audit(session, user.username, "trust.unlink", device_id, kind=kind, value=value, link=link_id)
    session.commit()
    trust = trust_of(request.app)
    if trust is not None and matched:  # the unlinked inventory devices lose the update contribution
        from fieldward.console.trust_hooks import apply_update_risk

        version = trust.service.versions.get(device_id)
        if version is not None and version.outdated:
            apply_update_risk(trust.database, None, released=matched)
    return Message(detail=f"link {link_id} removed")


def _link_public(link: Any) -> LinkPublic:
    return LinkPublic(
        id=link.id,
        kind=link.kind,
        value=link.value,
        created_by=link.created_by,
        inventory_ids=list(link.inventory_ids),
    )


@router.post(
    "/devices/{device_id}/attributes",
    operation_id="trust_devices_add_attribute",
    response_model=AttributePublic,
    status_code=status.HTTP_201_CREATED,
    summary="Record a device identity's serial number or MAC (a provisioning record; proposes links)",
    **access("analyst", 404, 422),
)
def add_attribute(
    device_id: DeviceId, body: AttributeCreate, request: Request, user: CurrentUser, session: SessionDep
) -> AttributePublic:
    if session.scalar(select(TrustDevice.id).where(TrustDevice.device_id == device_id)) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device identity")
    session.rollback()
    try:
        record = _proposals(request).record(device_id, body.kind, body.value, "provisioning")
    except TrustError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    audit(session, user.username, "trust.attribute", device_id, kind=record.kind, value=record.value)
    session.commit()
    trust = trust_of(request.app)
    if trust is not None:
        trust.auto_link([device_id], values=[(record.kind, record.value)])
    return AttributePublic(kind=body.kind, value=record.value, source="provisioning")


@router.get(
    "/link-proposals",
    operation_id="trust_link_proposals",
    response_model=Page[ProposalPublic],
    summary="Links proposed from identities' serial numbers and MACs that match inventory devices",
    **access("viewer"),
)
def list_proposals(
    request: Request,
    session: SessionDep,
    paging: PagingDep,
    device_id: Annotated[
        str | None,
        Query(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"),
    ] = None,
) -> Page[ProposalPublic]:
    session.rollback()
    proposals = _proposals(request)
    found = proposals.proposals(None if device_id is None else [device_id], limit=10_000)
    items = [
        ProposalPublic(
            device_id=p.device_id,
            kind=p.kind,  # type: ignore[arg-type]  # the CHECK constraint keeps it one of two
            value=p.value,
            sources=list(p.sources),
            inventory_ids=list(p.inventory_ids[:_SHOWN_DEVICES]),
            others=list(p.others),
            automatic=p.automatic(proposals.settings),
        )
        for p in found[paging.offset : paging.offset + paging.limit]
    ]
    return Page[ProposalPublic](items=items, total=len(found), limit=paging.limit, offset=paging.offset)


@router.post(
    "/link-proposals/confirm",
    operation_id="trust_link_proposal_confirm",
    response_model=LinkPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Confirm a proposed link (audited)",
    **access("analyst", 404),
)
def confirm_proposal(
    body: ProposalDecision, request: Request, user: CurrentUser, session: SessionDep
) -> LinkPublic:
    session.rollback()
    try:
        link = _proposals(request).confirm(body.device_id, body.kind, body.value, by=user.username)
    except TrustError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None  # no such proposal
    audit(
        session,
        user.username,
        "trust.link",
        body.device_id,
        kind=link.kind,
        value=link.value,
        link=link.id,
        proposal=True,
    )
    session.commit()
    trust = trust_of(request.app)
    if trust is not None:  # a newly linked outdated device counts in the risk at once
        from fieldward.console.trust_hooks import apply_update_risk

        apply_update_risk(trust.database, [body.device_id])
    return _link_public(link)


@router.post(
    "/link-proposals/reject",
    operation_id="trust_link_proposal_reject",
    response_model=Message,
    summary="Reject a proposed link: it is not proposed (nor made automatically) again (audited)",
    **access("analyst", 404),
)
def reject_proposal(
    body: ProposalDecision, request: Request, user: CurrentUser, session: SessionDep
) -> Message:
    session.rollback()
    try:
        _proposals(request).reject(
            body.device_id, body.kind, body.value, by=user.username, reason=body.reason
        )
    except TrustError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None  # no such proposal
    audit(
        session,
        user.username,
        "trust.link.reject",
        body.device_id,
        kind=body.kind,
        value=body.value,
        reason=body.reason,
    )
    session.commit()
    return Message(detail="proposal rejected")


@router.get(
    "/verdicts",
    operation_id="trust_verdicts_list",
    response_model=Page[VerdictPublic],
    summary="The newest attestation verdict of each device, newest first",
    **access("viewer"),
)
def list_verdicts(
    session: SessionDep,
    paging: PagingDep,
    verdict: Annotated[VerdictName | None, Query(description="Only this verdict")] = None,
) -> Page[VerdictPublic]:
    filters = [] if verdict is None else [TrustVerdict.verdict == verdict]
    total = int(session.scalar(select(func.count()).select_from(TrustVerdict).where(*filters)) or 0)
    rows = session.scalars(
        select(TrustVerdict)
        .where(*filters)
        .order_by(TrustVerdict.verified_at.desc(), TrustVerdict.device_id)
        .limit(paging.limit)
        .offset(paging.offset)
    )
    return Page[VerdictPublic](
        items=[_verdict(r) for r in rows], total=total, limit=paging.limit, offset=paging.offset
    )


@router.get(
    "/failures",
    operation_id="trust_failures_list",
    response_model=Page[FailurePublic],
    summary="Device failure reports aggregated per (model, firmware, signature), most frequent first",
    **access("viewer"),
)
def list_failures(
    session: SessionDep,
    paging: PagingDep,
    model: Annotated[str | None, Query(max_length=128, pattern=NO_NUL, description="Exact model")] = None,
    kind: Annotated[Literal["crash", "error", "watchdog", "update"] | None, Query()] = None,
) -> Page[FailurePublic]:
    filters: list[ColumnElement[bool]] = []
    if model is not None:
        filters.append(TrustFailureReport.model == model)
    if kind is not None:
        filters.append(TrustFailureReport.kind == kind)
    total = int(session.scalar(select(func.count()).select_from(TrustFailureReport).where(*filters)) or 0)
    reports = list(
        session.scalars(
            select(TrustFailureReport)
            .where(*filters)
            .order_by(TrustFailureReport.count.desc(), TrustFailureReport.signature, TrustFailureReport.id)
            .limit(paging.limit)
            .offset(paging.offset)
        )
    )
    ids = [r.id for r in reports]
    counts: dict[int, int] = {}
    shown: dict[int, list[str]] = {}
    if ids:
        counts = {
            int(k): int(v)
            for k, v in session.execute(
                select(TrustFailureDevice.report_id, func.count())
                .where(TrustFailureDevice.report_id.in_(ids))
                .group_by(TrustFailureDevice.report_id)
            ).all()
        }
        for report_id, device in session.execute(
            select(TrustFailureDevice.report_id, TrustFailureDevice.device_id)
            .where(TrustFailureDevice.report_id.in_(ids))
            .order_by(TrustFailureDevice.report_id, TrustFailureDevice.device_id)
        ):
            listed = shown.setdefault(int(report_id), [])
            if len(listed) < _SHOWN_DEVICES:
                listed.append(device)
    items = [
        FailurePublic(
            model=r.model or None,
            firmware=r.firmware or None,
            signature=r.signature,
            kind=r.kind,
            component=r.component,
            message=r.message,
            count=int(r.count),
            devices=counts.get(r.id, 0),
            device_ids=shown.get(r.id, []),
            first_seen=r.first_seen,
            last_seen=r.last_seen,
        )
        for r in reports
    ]
    return Page[FailurePublic](items=items, total=total, limit=paging.limit, offset=paging.offset)
