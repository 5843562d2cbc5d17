"""The alert queue (``/api/v1/alerts``): list, detail, triage, learned/muted rules, evidence download;
and the sensors' pull of those rules (``GET /api/v1/sensors/me/rules``, :data:`sensor_rules_router`).

The list is built for a million rows: every filter is a column of one of the ``alerts`` indexes
(status, severity rank, last timestamp, type, engine, source/destination device), the page is
``ORDER BY <whitelisted column>, id LIMIT/OFFSET``, and the total is a separate ``count`` over at most
:data:`COUNT_CAP` + 1 matching ids (``total_capped`` says it stopped there). The free-text ``q`` is
an ``ILIKE`` over title, type and addresses (:func:`text_filter`): title and type are matched in the
few rows of ``alert_kinds`` (revision 0013) whose alerts ``ix_alerts_type`` finds, the addresses on
PostgreSQL through a trigram GIN index.

Triage follows ``fieldward alerts`` (``detect/triage.py``): acknowledge (new -> acknowledged), close,
reopen (-> new); learn and mute record an :class:`~fieldward.detect.knowledge.AlertRule` for the
alert's sensor and close the alert. Each change adds an ``alert_events`` row (the status history) and
an audit row, in the same transaction; the alert row is locked (``SELECT ... FOR UPDATE``) meanwhile.

Evidence captures are the files the sensor uploaded to ``POST /ingest/evidence/{alert_id}``; the path
is built from the alert's integer ids only (never from stored or requested text), so no request can
reach another file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response, status
from fastapi.responses import FileResponse
from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import QueryableAttribute, Session

from fieldward.console.api.cache import NOT_MODIFIED, bump_data_version, cached_page
from fieldward.console.api.deps import (
    CurrentSensor,
    CurrentUser,
    IdPath,
    PagingDep,
    Principal,
    SessionDep,
    SettingsDep,
    access,
    audit,
    count_cache,
    json_body,
    run_read,
)
from fieldward.console.api.schemas import MAX_LIMIT, NO_NUL, Message, Page
from fieldward.console.api.schemas.alerts import (
    AlertCommentCreate,
    AlertCommentPublic,
    AlertDetail,
    AlertEventPublic,
    AlertPage,
    AlertRulePublic,
    EvidenceInfo,
    LearnCreate,
    MuteCreate,
    SensorRules,
    TriageCreate,
)
from fieldward.console.settings import ConsoleSettings
from fieldward.console.triage_models import AlertRuleRow
from fieldward.detect.knowledge import ANY
from fieldward.detect.triage import behaviours_of
from fieldward.store.models import SEVERITY_RANK, Alert, AlertComment, AlertEvent, AlertKind

__all__ = ["COUNT_CAP", "PCAP_MEDIA_TYPE", "evidence_file", "router", "sensor_rules_router", "text_filter"]

router = APIRouter(prefix="/alerts", tags=["alerts"])
sensor_rules_router = APIRouter(prefix="/sensors", tags=["sensors"])

COUNT_CAP = 10_000
"""The list's ``total`` counts at most this many matches (a count over 1,000,000 rows is slow)."""
PCAP_MEDIA_TYPE = "application/vnd.tcpdump.pcap"
HISTORY_ROWS = 500
"""At most this many status changes and comments on an alert's page (the newest)."""

SORTS: dict[str, tuple[Any, ...]] = {
    "last_ts": (Alert.last_ts,),
    "first_ts": (Alert.first_ts,),
    "severity": (Alert.severity_rank, Alert.last_ts),
    "count": (Alert.count,),
    "type": (Alert.type,),
    "status": (Alert.status, Alert.last_ts),
    "id": (),
}
SortName = Literal["last_ts", "first_ts", "severity", "count", "type", "status", "id"]
SeverityFilter = Literal[
    "info", "low", "medium", "high", "critical", "info+", "low+", "medium+", "high+", "critical+"
]
StatusFilter = Literal["new", "acknowledged", "closed", "open"]
RFC_3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
"""The ``date-time`` format of OpenAPI (RFC 3339, section 5.6) of ``since`` / ``until``."""
DATE_TIME: dict[str, Any] = {"json_schema_extra": {"format": "date-time"}}
TextQuery = Annotated[str | None, Query(max_length=200, pattern=NO_NUL)]
PCAP_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The evidence capture (pcap); with ``Accept: application/json`` its size and digest",
        "content": {PCAP_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}


def with_content(route: dict[str, Any], responses: dict[int | str, dict[str, Any]]) -> dict[str, Any]:
    """``access(...)`` route arguments plus documented non-JSON ``responses`` (other media types)."""
    return {**route, "responses": {**route["responses"], **responses}}


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


KIND_LIMIT = 256
"""At most this many matching alert kinds are spelled out in the search's SQL; past that (a text that
matches nearly every kind) title and type are compared on the alerts themselves."""


def text_filter(session: Session, text: str) -> ColumnElement[bool]:
    """The queue's ``q``: ``text`` (``%`` and ``_`` literal) in the title, type, source or destination.

    Title and type: the matching kinds are read from ``alert_kinds`` (every distinct type and title of
    ``alerts``, kept by triggers of revision 0013; a few hundred rows), and each becomes ``type = t AND
    title IN (...)``, which ``ix_alerts_type`` serves. Source and destination: ``ILIKE '%text%'``, on
    PostgreSQL through the trigram GIN index ``ix_alerts_address_trgm``; PostgreSQL combines the
    arms (BitmapOr), so a search over a million alerts reads only the matching rows. On SQLite, a
    scan. Texts of one or two characters have no trigram and scan the addresses on both.
    """
    pattern = _like(text)

    def holds(column: QueryableAttribute[Any]) -> ColumnElement[bool]:
        return column.ilike(pattern, escape="\\")

    addresses = (holds(Alert.src), holds(Alert.dst))
    kinds = session.execute(
        select(AlertKind.type, AlertKind.title)
        .where(or_(holds(AlertKind.title), holds(AlertKind.type)))
        .limit(KIND_LIMIT + 1)
    ).all()
    if len(kinds) > KIND_LIMIT:
        return or_(holds(Alert.title), holds(Alert.type), *addresses)
    titles: dict[str, list[str]] = {}
    for kind_type, title in kinds:
        titles.setdefault(kind_type, []).append(title)
    by_kind = [and_(Alert.type == kind_type, Alert.title.in_(names)) for kind_type, names in titles.items()]
    return or_(*by_kind, *addresses)


def evidence_file(settings: ConsoleSettings, sensor_id: int, alert_id: int) -> Path:
    """Where ``POST /ingest/evidence/{alert_id}`` keeps an alert's capture (ids only: no traversal)."""
    return settings.evidence_path() / f"sensor-{int(sensor_id)}" / f"alert-{int(alert_id)}.pcap"


LIST_COLUMNS = (
    Alert.id,
    Alert.sensor_id,
    Alert.alert_key,
    Alert.engine,
    Alert.type,
    Alert.title,
    Alert.severity,
    Alert.status,
    Alert.count,
    Alert.first_ts,
    Alert.last_ts,
    Alert.src,
    Alert.dst,
    Alert.src_device_id,
    Alert.dst_device_id,
    Alert.protocol,
)
"""What a queue row shows: the list reads these columns only (not the explanation, evidence or
details a detail page needs)."""


def _page_statement(sort: str, order: str) -> Select[*tuple[Any, ...]]:
    # The database's own NULL placement (no NULLS LAST): it matches the indexes' scan direction.
    ordering = [c.desc() if order == "desc" else c.asc() for c in SORTS[sort]]
    ordering.append(Alert.id.desc() if order == "desc" else Alert.id.asc())
    return select(*LIST_COLUMNS).order_by(*ordering)


PAGES = {(sort, order): _page_statement(sort, order) for sort in SORTS for order in ("asc", "desc")}
"""The queue's statement of each sort and direction, built once: a request adds its filters, limit
and offset (building the column list and ordering per request cost more than adding those)."""
MATCHING = select(Alert.id)


class _EvidenceIndex:
    """``has_evidence`` for the rows of one page: one ``stat`` of each sensor's evidence folder, then
    one per row only for a sensor that has one (the same paths as :func:`evidence_file`)."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.root = os.fspath(settings.evidence_path())
        self.folders: dict[int, str | None] = {}

    def __call__(self, sensor_id: int, alert_id: int) -> bool:
        folder = self.folders.get(sensor_id, "")
        if folder == "":
            candidate = os.path.join(self.root, f"sensor-{int(sensor_id)}")
            folder = candidate if os.path.isdir(candidate) else None
            self.folders[sensor_id] = folder
        return folder is not None and os.path.isfile(os.path.join(folder, f"alert-{int(alert_id)}.pcap"))


def _public(alert: Any, settings: ConsoleSettings, evidence: _EvidenceIndex | None = None) -> dict[str, Any]:
    """The queue row of an ``Alert`` (or a row of :data:`LIST_COLUMNS`)."""
    has_evidence = (evidence or _EvidenceIndex(settings))(alert.sensor_id, alert.id)
    return {
        "id": alert.id,
        "sensor_id": alert.sensor_id,
        "alert_key": alert.alert_key,
        "engine": alert.engine,
        "type": alert.type,
        "title": alert.title,
        "severity": alert.severity,
        "status": alert.status,
        "count": alert.count,
        "first_ts": alert.first_ts,
        "last_ts": alert.last_ts,
        "src": alert.src,
        "dst": alert.dst,
        "src_device_id": alert.src_device_id,
        "dst_device_id": alert.dst_device_id,
        "protocol": alert.protocol,
        "has_evidence": has_evidence,
    }


def _list_items(rows: Iterable[Sequence[Any]], evidence: _EvidenceIndex) -> list[dict[str, Any]]:
    """:func:`_public` of rows of :data:`LIST_COLUMNS`, unpacked by position (a queue page's rows: no
    per-field attribute look-up on the result rows)."""
    items = []
    for (
        id_,
        sensor_id,
        alert_key,
        engine,
        type_,
        title,
        severity,
        status_,
        count,
        first_ts,
        last_ts,
        src,
        dst,
        src_device_id,
        dst_device_id,
        protocol,
    ) in rows:
        items.append(
            {
                "id": id_,
                "sensor_id": sensor_id,
                "alert_key": alert_key,
                "engine": engine,
                "type": type_,
                "title": title,
                "severity": severity,
                "status": status_,
                "count": count,
                "first_ts": first_ts,
                "last_ts": last_ts,
                "src": src,
                "dst": dst,
                "src_device_id": src_device_id,
                "dst_device_id": dst_device_id,
                "protocol": protocol,
                "has_evidence": evidence(sensor_id, id_),
            }
        )
    return items


def _get(session: Session, alert_id: int, *, lock: bool = False) -> Alert:
    alert = session.get(Alert, alert_id, with_for_update=lock)
    if alert is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such alert")
    return alert


@router.get(
    "",
    operation_id="alerts_list",
    response_model=AlertPage,
    summary="The alert queue with filters, search, sort and paging",
    **access("viewer", 422, responses=NOT_MODIFIED),
)
async def list_alerts(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="Rows to skip")] = 0,
    status_: Annotated[
        StatusFilter | None, Query(alias="status", description="A status, or 'open' (new + acknowledged)")
    ] = None,
    severity: Annotated[
        SeverityFilter | None, Query(description="A severity, or 'high+' for that severity or worse")
    ] = None,
    type_: Annotated[str | None, Query(alias="type", max_length=128, pattern=NO_NUL)] = None,
    engine: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    device_id: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="Alerts with this device as source or destination")
    ] = None,
    sensor_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="Last seen at or after (RFC 3339)", **DATE_TIME)
    ] = None,
    until: Annotated[
        str | None, Query(max_length=64, description="Last seen before (RFC 3339)", **DATE_TIME)
    ] = None,
    q: Annotated[TextQuery, Query(description="Text in title, type, source or destination")] = None,
    sort: SortName = "last_ts",
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    # Parsed first: the cache key holds the instants, not their spelling (a 422 is raised here).
    since_ts = _timestamp(since, "since") if since is not None else None
    until_ts = _timestamp(until, "until") if until is not None else None
    # From the application's state, not ``Depends``: each dependency costs a pass of FastAPI per request.
    settings: ConsoleSettings = request.app.state.settings
    counts = count_cache(request)

    def page() -> bytes:
        filters: list[ColumnElement[bool]] = []
        if status_ == "open":
            filters.append(Alert.status.in_(("new", "acknowledged")))
        elif status_ is not None:
            filters.append(Alert.status == status_)
        if severity is not None:
            rank = SEVERITY_RANK[severity.rstrip("+")]
            filters.append(
                Alert.severity_rank >= rank if severity.endswith("+") else Alert.severity_rank == rank
            )
        if type_ is not None:
            filters.append(Alert.type == type_)
        if engine is not None:
            filters.append(Alert.engine == engine)
        if device_id is not None:
            filters.append(or_(Alert.src_device_id == device_id, Alert.dst_device_id == device_id))
        if sensor_id is not None:
            filters.append(Alert.sensor_id == sensor_id)
        if since_ts is not None:
            filters.append(Alert.last_ts >= since_ts)
        if until_ts is not None:
            filters.append(Alert.last_ts < until_ts)
        if q:
            filters.append(text_filter(session, q))
        matching = MATCHING.where(*filters).limit(COUNT_CAP + 1).subquery()
        key = ("alerts", status_, severity, type_, engine, device_id, sensor_id, since_ts, until_ts, q)
        counted = counts.count(
            key, lambda: int(session.scalar(select(func.count()).select_from(matching)) or 0)
        )
        evidence = _EvidenceIndex(settings)
        rows = session.execute(PAGES[sort, order].where(*filters).limit(limit).offset(offset))
        # Plain dicts of AlertPage's shape, encoded once by orjson (deps.json_body).
        return json_body(
            {
                "items": _list_items(rows, evidence),
                "total": min(counted, COUNT_CAP),
                "limit": limit,
                "offset": offset,
                "total_capped": counted > COUNT_CAP,
            }
        )

    # The validated parameters and the caller's role (api/cache.py): the same page for the same key.
    cache_key = (
        "alerts",
        user.role,
        status_,
        severity,
        type_,
        engine,
        device_id,
        sensor_id,
        since_ts,
        until_ts,
        q,
        sort,
        order,
        limit,
        offset,
    )
    return await cached_page(request, cache_key, page, run_read)


def _timestamp(text: str, name: str) -> dt.datetime:
    """An RFC 3339 query value as an aware UTC time; 422 when it is not one.

    A leap second (``:60``) counts as ``:59`` and a time beyond the calendar's ends is clamped to
    them, so every value the format allows is answered.
    """
    match = RFC_3339.fullmatch(text)
    if match is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"{name} is not an RFC 3339 date-time"
        )
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    micro = int((match.group(7) or "0")[:6].ljust(6, "0"))
    try:
        value = dt.datetime(max(year, 1), month, day, hour, minute, min(second, 59), micro, tzinfo=dt.UTC)
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"{name} is not a calendar date and time"
        ) from None
    if match.group(9):
        offset = dt.timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        try:
            value = value - offset if match.group(9) == "+" else value + offset
        except OverflowError:
            value = (
                dt.datetime.min.replace(tzinfo=dt.UTC)
                if match.group(9) == "+"
                else dt.datetime.max.replace(tzinfo=dt.UTC)
            )
    return value


@router.get(
    "/rules",
    operation_id="alerts_rules",
    response_model=Page[AlertRulePublic],
    summary="The learned and muted rules (newest first)",
    **access("viewer"),
)
def list_rules(
    session: SessionDep,
    paging: PagingDep,
    kind: Literal["learned", "muted"] | None = None,
    sensor_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Page[AlertRulePublic]:
    filters: list[ColumnElement[bool]] = []
    if kind is not None:
        filters.append(AlertRuleRow.kind == kind)
    if sensor_id is not None:
        filters.append(AlertRuleRow.sensor_id == sensor_id)
    total = int(session.scalar(select(func.count()).select_from(AlertRuleRow).where(*filters)) or 0)
    rows = session.scalars(
        select(AlertRuleRow)
        .where(*filters)
        .order_by(AlertRuleRow.created.desc(), AlertRuleRow.id.desc())
        .limit(paging.limit)
        .offset(paging.offset)
    )
    return Page[AlertRulePublic](
        items=[AlertRulePublic.model_validate(r) for r in rows],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.delete(
    "/rules/{rule_id}",
    operation_id="alerts_delete_rule",
    response_model=Message,
    summary="Forget a learned or muted rule (the sensors alert on it again)",
    **access("analyst", 404),
)
def delete_rule(rule_id: IdPath, user: CurrentUser, session: SessionDep) -> Message:
    rule = session.get(AlertRuleRow, rule_id)
    if rule is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such rule")
    audit(
        session,
        user.username,
        "alert.rule_delete",
        f"rule:{rule.id}",
        kind=rule.kind,
        type=rule.alert_type,
        src=rule.src,
        dst=rule.dst,
        sensor_id=rule.sensor_id,
    )
    session.delete(rule)
    session.commit()
    return Message(detail="rule deleted")


@router.get(
    "/{alert_id}",
    operation_id="alerts_get",
    response_model=AlertDetail,
    summary="An alert's page: explanation, evidence, status history and comments",
    **access("viewer", 404),
)
def get_alert(alert_id: IdPath, session: SessionDep, settings: SettingsDep) -> AlertDetail:
    return _detail(session, _get(session, alert_id), settings)


def _detail(session: Session, alert: Alert, settings: ConsoleSettings) -> AlertDetail:
    events = list(
        session.scalars(
            select(AlertEvent)
            .where(AlertEvent.alert_id == alert.id)
            .order_by(AlertEvent.at.desc(), AlertEvent.id.desc())
            .limit(HISTORY_ROWS)
        )
    )
    comments = list(
        session.scalars(
            select(AlertComment)
            .where(AlertComment.alert_id == alert.id)
            .order_by(AlertComment.at.desc(), AlertComment.id.desc())
            .limit(HISTORY_ROWS)
        )
    )
    return AlertDetail(
        **_public(alert, settings),
        description=alert.description,
        explanation=alert.explanation,
        recommendation=alert.recommendation,
        mitre=[str(m) for m in alert.mitre or []],
        evidence=[e for e in alert.evidence or [] if isinstance(e, dict)],
        details=dict(alert.details or {}),
        events=[AlertEventPublic.model_validate(e) for e in reversed(events)],
        comments=[AlertCommentPublic.model_validate(c) for c in reversed(comments)],
    )


ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "acknowledged": ("new",),
    "closed": ("new", "acknowledged"),
    "new": ("acknowledged", "closed"),
}
"""Which statuses each triage action may start from (anything else is a 409)."""


def _set_status(
    session: Session, alert: Alert, to: str, user: Principal, note: str | None, action: str
) -> None:
    """Change the status, with its history row and audit row (the caller commits)."""
    before = alert.status
    alert.status = to
    session.add(AlertEvent(alert_id=alert.id, from_status=before, to_status=to, by=user.username, note=note))
    audit(session, user.username, f"alert.{action}", f"alert:{alert.id}", before=before, after=to, note=note)


def _triage(
    alert_id: int, to: str, action: str, body: TriageCreate | None, user: Principal, session: Session
) -> Alert:
    alert = _get(session, alert_id, lock=True)
    if alert.status not in ALLOWED_FROM[to]:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"the alert is {alert.status}; cannot {action} it"
        )
    _set_status(session, alert, to, user, body.note if body else None, action)
    session.commit()
    bump_data_version(session)  # the list pages' kept answers are stale (api/cache.py)
    return alert


OptionalTriage = Annotated[TriageCreate | None, Body()]


@router.post(
    "/{alert_id}/acknowledge",
    operation_id="alerts_acknowledge",
    response_model=AlertDetail,
    summary="Acknowledge a new alert (someone is on it)",
    **access("analyst", 404, 409),
)
def acknowledge_alert(
    alert_id: IdPath,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    body: OptionalTriage = None,
) -> AlertDetail:
    return _detail(session, _triage(alert_id, "acknowledged", "acknowledge", body, user, session), settings)


@router.post(
    "/{alert_id}/close",
    operation_id="alerts_close",
    response_model=AlertDetail,
    summary="Close an alert (handled)",
    **access("analyst", 404, 409),
)
def close_alert(
    alert_id: IdPath,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    body: OptionalTriage = None,
) -> AlertDetail:
    return _detail(session, _triage(alert_id, "closed", "close", body, user, session), settings)


@router.post(
    "/{alert_id}/reopen",
    operation_id="alerts_reopen",
    response_model=AlertDetail,
    summary="Set an acknowledged or closed alert back to new",
    **access("analyst", 404, 409),
)
def reopen_alert(
    alert_id: IdPath,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    body: OptionalTriage = None,
) -> AlertDetail:
    return _detail(session, _triage(alert_id, "new", "reopen", body, user, session), settings)


@router.post(
    "/{alert_id}/comments",
    operation_id="alerts_comment",
    response_model=AlertCommentPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Add a comment to an alert",
    **access("analyst", 404),
)
def comment_alert(
    alert_id: IdPath, body: AlertCommentCreate, user: CurrentUser, session: SessionDep
) -> AlertCommentPublic:
    alert = _get(session, alert_id)
    comment = AlertComment(alert_id=alert.id, author=user.username, text=body.text)
    session.add(comment)
    session.flush()
    audit(
        session,
        user.username,
        "alert.comment",
        f"alert:{alert.id}",
        comment_id=comment.id,
        chars=len(body.text),
    )
    session.commit()
    return AlertCommentPublic.model_validate(comment)


def _record_rule(
    session: Session,
    alert: Alert,
    kind: str,
    src: str,
    dst: str,
    behaviours: list[list[str]],
    user: Principal,
    note: str | None,
) -> AlertRuleRow:
    """Add (or refresh) the rule and close the alert when it is not closed yet (the caller commits)."""
    rule = session.scalars(
        select(AlertRuleRow).where(
            AlertRuleRow.sensor_id == alert.sensor_id,
            AlertRuleRow.kind == kind,
            AlertRuleRow.alert_type == alert.type,
            AlertRuleRow.src == src,
            AlertRuleRow.dst == dst,
        )
    ).first()
    if rule is None:
        rule = AlertRuleRow(
            sensor_id=alert.sensor_id,
            kind=kind,
            alert_type=alert.type,
            src=src,
            dst=dst,
            behaviours=behaviours,
            alert_id=alert.id,
            created_by=user.username,
            note=note,
        )
        session.add(rule)
    else:
        known = {tuple(b) for b in rule.behaviours or []}
        rule.behaviours = [*(rule.behaviours or []), *(b for b in behaviours if tuple(b) not in known)]
    session.flush()
    verb = "learn" if kind == "learned" else "mute"
    audit(
        session,
        user.username,
        f"alert.{verb}",
        f"alert:{alert.id}",
        rule_id=rule.id,
        type=alert.type,
        src=src,
        dst=dst,
        note=note,
    )
    if alert.status != "closed":
        before = alert.status
        alert.status = "closed"
        session.add(
            AlertEvent(
                alert_id=alert.id,
                from_status=before,
                to_status="closed",
                by=user.username,
                note=f"{verb} {src} -> {dst}" + (f": {note}" if note else ""),
            )
        )
    return rule


@router.post(
    "/{alert_id}/learn",
    operation_id="alerts_learn",
    response_model=AlertRulePublic,
    summary="Learn the alert's behaviour as normal (a rule the sensors pull) and close it",
    **access("analyst", 404),
)
def learn_alert(
    alert_id: IdPath,
    user: CurrentUser,
    session: SessionDep,
    body: Annotated[LearnCreate | None, Body()] = None,
) -> AlertRulePublic:
    alert = _get(session, alert_id, lock=True)
    record = {"details": alert.details if isinstance(alert.details, dict) else {}}
    behaviours = [[category, *key] for category, key in behaviours_of(record)]
    note = body.note if body else None
    rule = _record_rule(session, alert, "learned", alert.src or ANY, alert.dst or ANY, behaviours, user, note)
    session.commit()
    bump_data_version(session)  # the alert was closed: the list pages' kept answers are stale
    return AlertRulePublic.model_validate(rule)


@router.post(
    "/{alert_id}/mute",
    operation_id="alerts_mute",
    response_model=AlertRulePublic,
    summary="Mute the alert's type for its source/destination (a rule the sensors pull) and close it",
    **access("analyst", 404),
)
def mute_alert(
    alert_id: IdPath,
    user: CurrentUser,
    session: SessionDep,
    body: Annotated[MuteCreate | None, Body()] = None,
) -> AlertRulePublic:
    options = body or MuteCreate()
    alert = _get(session, alert_id, lock=True)
    src = ANY if options.any_source else alert.src or ANY
    dst = ANY if options.any_destination else alert.dst or ANY
    rule = _record_rule(session, alert, "muted", src, dst, [], user, options.note)
    session.commit()
    bump_data_version(session)  # the alert was closed: the list pages' kept answers are stale
    return AlertRulePublic.model_validate(rule)


@router.get(
    "/{alert_id}/evidence",
    operation_id="alerts_evidence",
    response_model=EvidenceInfo,
    summary="Download the alert's evidence capture (pcap)",
    **access("viewer", 404, responses=PCAP_RESPONSE),
)
def download_evidence(alert_id: IdPath, request: Request, session: SessionDep, settings: SettingsDep) -> Any:
    alert = _get(session, alert_id)
    path = evidence_file(settings, alert.sensor_id, alert.id)
    if not path.is_file():
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail="no evidence capture was uploaded for this alert"
        )
    filename = f"fieldward-alert-{alert.id}.pcap"
    accept = request.headers.get("accept", "")
    if "application/json" in accept and PCAP_MEDIA_TYPE not in accept:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return EvidenceInfo(
            alert_id=alert.id, filename=filename, bytes=path.stat().st_size, sha256=digest.hexdigest()
        )
    return FileResponse(path, media_type=PCAP_MEDIA_TYPE, filename=filename)


@sensor_rules_router.get(
    "/me/rules",
    operation_id="sensors_rules",
    response_model=SensorRules,
    summary="The learned and muted rules for the calling sensor, as a baseline document",
    **access("sensor"),
)
def sensor_rules(sensor: CurrentSensor, session: SessionDep) -> SensorRules:
    rows = session.scalars(
        select(AlertRuleRow)
        .where(or_(AlertRuleRow.sensor_id == sensor.id, AlertRuleRow.sensor_id.is_(None)))
        .order_by(AlertRuleRow.id)
    )
    learned: set[tuple[str, str, str]] = set()
    mutes: set[tuple[str, str, str]] = set()
    behaviours: dict[str, set[tuple[str, ...]]] = {}
    sources: list[str] = []
    for row in rows:
        (learned if row.kind == "learned" else mutes).add((row.alert_type, row.src, row.dst))
        for item in row.behaviours or []:
            if isinstance(item, list) and len(item) >= 2:
                behaviours.setdefault(str(item[0]), set()).add(tuple(str(p) for p in item[1:]))
        sources.append(f"console: {row.created_by} {row.kind} {row.alert_type} {row.src} -> {row.dst}")
    return SensorRules(
        format=1,
        updated=dt.datetime.now(tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        sources=sources,
        behaviours={name: sorted(list(k) for k in keys) for name, keys in sorted(behaviours.items())},
        learned=[{"type": t, "src": s, "dst": d} for t, s, d in sorted(learned)],
        mutes=[{"type": t, "src": s, "dst": d} for t, s, d in sorted(mutes)],
    )
