"""The inventory (``/api/v1/devices``): list with filters, search, sort and paging; a device's page;
the analyst's importance.

Every list is two statements: the page (the table's columns only, filters, a whitelisted ``ORDER BY``
with ``id`` as tie-break, ``LIMIT``/``OFFSET``) and ``count(*)`` with the same filters; a count of at
least 1,000 rows is reused for 10 s by the worker (``deps.CountCache``). The detail page is a fixed number of
indexed look-ups (attributes, edges each way, findings, risk, alerts), never one per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from sqlalchemy import ColumnElement, String, cast, func, or_, select
from sqlalchemy.orm import Session, aliased

from fieldward.console.api.cache import NOT_MODIFIED, bump_data_version, cached_page
from fieldward.console.api.deps import (
    CurrentUser,
    IdPath,
    SessionDep,
    access,
    audit,
    count_cache,
    json_body,
    run_read,
)
from fieldward.console.api.schemas import MAX_LIMIT, NO_NUL, Page
from fieldward.console.api.schemas.devices import (
    IMPORTANCE_RANK,
    DeviceAlertPublic,
    DeviceAttributePublic,
    DeviceCommunicationPublic,
    DeviceConfigFindingPublic,
    DeviceDetail,
    DevicePublic,
    DeviceRiskPublic,
    DeviceUpdate,
    DeviceVulnerabilityPublic,
)
from fieldward.store.models import (
    Alert,
    Communication,
    ConfigFindingRow,
    Device,
    DeviceAttribute,
    DeviceRisk,
    VulnerabilityFinding,
)

__all__ = ["SORTS", "device_label", "router"]

router = APIRouter(prefix="/devices", tags=["devices"])

SORTS: dict[str, Any] = {
    "id": Device.id,
    "device_key": Device.device_key,
    "mac": Device.mac,
    "vendor": Device.vendor,
    "model": Device.model,
    "firmware": Device.firmware,
    "hostname": Device.hostname,
    "os": Device.os,
    "device_type": Device.device_type,
    "purdue_level": Device.purdue_level,
    "importance": Device.importance,
    "first_seen": Device.first_seen,
    "last_seen": Device.last_seen,
    "packets": Device.packets,
    "risk_score": Device.risk_score,
    "sensor_id": Device.sensor_id,
}
"""Sortable columns (the ``sort`` parameter); anything else is a 422."""
SortName = Literal[
    "id",
    "device_key",
    "mac",
    "vendor",
    "model",
    "firmware",
    "hostname",
    "os",
    "device_type",
    "purdue_level",
    "importance",
    "first_seen",
    "last_seen",
    "packets",
    "risk_score",
    "sensor_id",
]
DETAIL_ROWS = 200
"""At most this many edges, findings and alerts on a device page (the newest / worst first)."""
IMPORTANCE_NAME = {rank: name for name, rank in IMPORTANCE_RANK.items()}
TextQuery = Annotated[str | None, Query(max_length=200, pattern=NO_NUL)]


def device_label(hostname: str | None, ips: Sequence[str] | None, mac: str | None, key: str) -> str:
    """How a device is named on every page: hostname, else first IP, else MAC, else its key."""
    return hostname or (ips[0] if ips else None) or mac or key


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


LIST_COLUMNS = (
    Device.id,
    Device.sensor_id,
    Device.device_key,
    Device.mac,
    Device.ips,
    Device.vendor,
    Device.model,
    Device.firmware,
    Device.hostname,
    Device.os,
    Device.device_type,
    Device.purdue_level,
    Device.importance,
    Device.first_seen,
    Device.last_seen,
    Device.packets,
    Device.protocols,
    Device.risk_score,
)
"""What the inventory table shows: the list reads these columns only, not the large JSON ones
(roles, services, facts, address history) a device page needs."""


PAGES = {
    (name, order): select(*LIST_COLUMNS).order_by(
        (column.asc() if order == "asc" else column.desc()).nulls_last(),
        Device.id.asc() if order == "asc" else Device.id.desc(),
    )
    for name, column in SORTS.items()
    for order in ("asc", "desc")
}
"""The list's statement of each sort and direction, built once: a request adds its filters, limit
and offset (building the column list and ordering per request cost more than adding those)."""
COUNT = select(func.count()).select_from(Device)


def _public(device: Any) -> dict[str, Any]:
    """The list row of a ``Device`` (or a row of :data:`LIST_COLUMNS`)."""
    return {
        "id": device.id,
        "sensor_id": device.sensor_id,
        "device_key": device.device_key,
        "label": device_label(device.hostname, device.ips, device.mac, device.device_key),
        "mac": device.mac,
        "ips": [str(ip) for ip in device.ips or []],
        "vendor": device.vendor,
        "model": device.model,
        "firmware": device.firmware,
        "hostname": device.hostname,
        "os": device.os,
        "device_type": device.device_type,
        "purdue_level": device.purdue_level,
        "importance": IMPORTANCE_NAME.get(device.importance) if device.importance is not None else None,
        "first_seen": device.first_seen,
        "last_seen": device.last_seen,
        "packets": device.packets or 0,
        "protocols": [str(p) for p in device.protocols or []],
        "risk_score": device.risk_score,
    }


def _list_items(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """:func:`_public` of rows of :data:`LIST_COLUMNS`, unpacked by position (a list page's rows: no
    per-field attribute look-up on the result rows)."""
    items = []
    for (
        id_,
        sensor_id,
        device_key,
        mac,
        ips,
        vendor,
        model,
        firmware,
        hostname,
        os_,
        device_type,
        purdue_level,
        importance,
        first_seen,
        last_seen,
        packets,
        protocols,
        risk_score,
    ) in rows:
        items.append(
            {
                "id": id_,
                "sensor_id": sensor_id,
                "device_key": device_key,
                "label": device_label(hostname, ips, mac, device_key),
                "mac": mac,
                "ips": [str(ip) for ip in ips or []],
                "vendor": vendor,
                "model": model,
                "firmware": firmware,
                "hostname": hostname,
                "os": os_,
                "device_type": device_type,
                "purdue_level": purdue_level,
                "importance": IMPORTANCE_NAME.get(importance) if importance is not None else None,
                "first_seen": first_seen,
                "last_seen": last_seen,
                "packets": packets or 0,
                "protocols": [str(p) for p in protocols or []],
                "risk_score": risk_score,
            }
        )
    return items


@router.get(
    "",
    operation_id="devices_list",
    response_model=Page[DevicePublic],
    summary="The inventory: filter, search, sort, page",
    **access("viewer", responses=NOT_MODIFIED),
)
async def list_devices(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    device_type: Annotated[
        str | None, Query(alias="type", max_length=64, pattern=NO_NUL, description="Device type")
    ] = None,
    vendor: Annotated[str | None, Query(max_length=255, pattern=NO_NUL, description="Exact vendor")] = None,
    level: Annotated[int | None, Query(ge=0, le=5, description="Purdue level")] = None,
    sensor: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Sensor id")] = None,
    search: Annotated[
        str | None,
        Query(max_length=200, pattern=NO_NUL, description="Substring of IP, MAC, hostname, model or vendor"),
    ] = None,
    sort: Annotated[SortName, Query(description="Column to sort by")] = "id",
    order: Annotated[Literal["asc", "desc"], Query(description="Sort direction")] = "asc",
    # deps.get_paging's parameters, here rather than a dependency (one pass of FastAPI less per
    # request); last, where the dependency's were, so the OpenAPI parameters are the same.
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="Rows to skip")] = 0,
) -> Response:
    counts = count_cache(request)

    def page() -> bytes:
        filters: list[ColumnElement[bool]] = []
        if device_type is not None:
            filters.append(Device.device_type == device_type)
        if vendor is not None:
            filters.append(Device.vendor == vendor)
        if level is not None:
            filters.append(Device.purdue_level == level)
        if sensor is not None:
            filters.append(Device.sensor_id == sensor)
        if search:
            pattern = _like(search)
            filters.append(
                or_(
                    cast(Device.ips, String).ilike(pattern, escape="\\"),
                    Device.mac.ilike(pattern, escape="\\"),
                    Device.hostname.ilike(pattern, escape="\\"),
                    Device.model.ilike(pattern, escape="\\"),
                    Device.vendor.ilike(pattern, escape="\\"),
                )
            )
        statement = PAGES[sort, order].where(*filters).limit(limit).offset(offset)
        key = ("devices", device_type, vendor, level, sensor, search)
        total = counts.count(key, lambda: int(session.scalar(COUNT.where(*filters)) or 0))
        # Plain dicts of DevicePublic's shape, encoded once by orjson (deps.json_body).
        items = _list_items(session.execute(statement))
        return json_body({"items": items, "total": total, "limit": limit, "offset": offset})

    # The validated parameters and the caller's role (api/cache.py): the same page for the same key.
    cache_key = (
        "devices",
        user.role,
        device_type,
        vendor,
        level,
        sensor,
        search,
        sort,
        order,
        limit,
        offset,
    )
    return await cached_page(request, cache_key, page, run_read)


def _get(session: Session, device_id: int) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device")
    return device


def _communications(session: Session, device_id: int) -> tuple[list[DeviceCommunicationPublic], int]:
    peer = aliased(Device)
    found: list[DeviceCommunicationPublic] = []
    total = 0
    for direction, own, other in (
        ("out", Communication.src_device_id, Communication.dst_device_id),
        ("in", Communication.dst_device_id, Communication.src_device_id),
    ):
        total += int(session.scalar(select(func.count()).where(own == device_id)) or 0)
        rows = session.execute(
            select(Communication, peer.id, peer.hostname, peer.ips, peer.mac, peer.device_key)
            .join(peer, peer.id == other)
            .where(own == device_id)
            .order_by(Communication.last_seen.desc().nulls_last(), Communication.id)
            .limit(DETAIL_ROWS)
        )
        for edge, peer_id, hostname, ips, mac, key in rows:
            found.append(
                DeviceCommunicationPublic(
                    id=edge.id,
                    direction=direction,
                    peer_id=peer_id,
                    peer_label=device_label(hostname, ips, mac, key),
                    transport=edge.transport,
                    port=edge.port,
                    protocol=edge.protocol,
                    flows=edge.flows,
                    packets=edge.packets,
                    bytes=edge.bytes,
                    first_seen=edge.first_seen,
                    last_seen=edge.last_seen,
                )
            )
    found.sort(key=lambda e: (e.last_seen is None, -(e.last_seen.timestamp() if e.last_seen else 0), e.id))
    return found[:DETAIL_ROWS], total


@router.get(
    "/{device_id}",
    operation_id="devices_get",
    response_model=DeviceDetail,
    summary="A device's page: attributes with evidence, edges, findings, risk, alerts",
    **access("viewer", 404),
)
def get_device(device_id: IdPath, session: SessionDep) -> DeviceDetail:
    device = _get(session, device_id)
    attributes = session.scalars(
        select(DeviceAttribute).where(DeviceAttribute.device_id == device_id).order_by(DeviceAttribute.name)
    )
    communications, communications_total = _communications(session, device_id)
    vulnerabilities = session.scalars(
        select(VulnerabilityFinding)
        .where(VulnerabilityFinding.device_id == device_id)
        .order_by(VulnerabilityFinding.severity_rank.desc(), VulnerabilityFinding.vulnerability_id)
        .limit(DETAIL_ROWS)
    )
    configurations = session.scalars(
        select(ConfigFindingRow)
        .where(ConfigFindingRow.device_id == device_id)
        .order_by(ConfigFindingRow.severity_rank.desc(), ConfigFindingRow.finding_key)
        .limit(DETAIL_ROWS)
    )
    risk = session.get(DeviceRisk, device_id)
    involving = or_(Alert.src_device_id == device_id, Alert.dst_device_id == device_id)
    alerts = session.scalars(
        select(Alert)
        .where(involving)
        .order_by(Alert.last_ts.desc().nulls_last(), Alert.id)
        .limit(DETAIL_ROWS)
    )
    alerts_total = int(session.scalar(select(func.count()).select_from(Alert).where(involving)) or 0)
    return DeviceDetail(
        **_public(device),
        product_code=device.product_code,
        serial=device.serial,
        local=device.local,
        router=device.router,
        roles=list(device.roles or []),
        services=list(device.services or []),
        vlans=list(device.vlans or []),
        confidence=dict(device.confidence or {}),
        facts=dict(device.facts or {}),
        address_history=list(device.address_history or []),
        attributes=[DeviceAttributePublic.model_validate(a) for a in attributes],
        communications=communications,
        communications_total=communications_total,
        vulnerabilities=[DeviceVulnerabilityPublic.model_validate(v) for v in vulnerabilities],
        configurations=[DeviceConfigFindingPublic.model_validate(c) for c in configurations],
        risk=DeviceRiskPublic.model_validate(risk) if risk is not None else None,
        alerts=[DeviceAlertPublic.model_validate(a) for a in alerts],
        alerts_total=alerts_total,
    )


@router.patch(
    "/{device_id}",
    operation_id="devices_update",
    response_model=DevicePublic,
    summary="Set the analyst's importance of a device",
    **access("analyst", 404),
)
def update_device(
    device_id: IdPath, body: DeviceUpdate, user: CurrentUser, session: SessionDep
) -> DevicePublic:
    device = _get(session, device_id)
    before = IMPORTANCE_NAME.get(device.importance) if device.importance is not None else None
    device.importance = IMPORTANCE_RANK[body.importance] if body.importance is not None else None
    if before != body.importance:
        audit(
            session,
            user.username,
            "device.importance",
            f"device:{device.id}",
            device_key=device.device_key,
            before=before,
            after=body.importance,
        )
    session.commit()
    bump_data_version(session)  # the list pages' kept answers are stale (api/cache.py)
    return DevicePublic(**_public(device))
