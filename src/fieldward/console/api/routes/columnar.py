"""Flows and protocol events in the columnar store: sensors push Parquet, viewers query JSON rows.

- ``POST /ingest/columnar/flows`` and ``POST /ingest/columnar/events/{log}`` (sensor token): the body
  is one Parquet file (``application/vnd.apache.parquet``; the rows of ``flows.parquet`` or of
  ``events/<log>.parquet``), the ``X-Batch-Id`` header names the batch. The table is written with
  :meth:`ColumnarStore.add_table` under the sensor's name: a batch sent again (same sensor, same id)
  replaces its earlier files, so retries never count a row twice. The body cap is the app's
  ``max_ingest_bytes`` (413; the path is under ``/api/v1/ingest``).
- ``GET /flows`` (device IP, time window, protocol, sensor, paging), ``GET /events`` (the logs) and
  ``GET /events/{log}`` (time window, whitelisted column filters, paging): JSON rows, timestamps in
  ISO 8601 with nanoseconds, bytes as hex. A column whose name says it may hold a credential
  (:func:`credential_column`) is dropped when a batch is written and again when rows are read.

The store is the application's (:func:`fieldward.console.jobs.shared_store`): ``<data_dir>/columnar``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, Body, Header, HTTPException, Path, Query, Request, status
from pydantic import StringConstraints
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fieldward.console.api.deps import CurrentSensor, SessionDep, access, audit
from fieldward.console.api.schemas.columnar import ColumnarBatchPublic, EventLogsPublic, RowPage
from fieldward.console.jobs import shared_store
from fieldward.console.models import IngestBatch
from fieldward.store.columnar import ColumnarStore, ColumnarStoreError
from fieldward.store.models import Sensor

__all__ = [
    "EVENT_FILTERS",
    "PARQUET_TYPE",
    "credential_column",
    "drop_credentials",
    "router",
    "rows_json",
]

PARQUET_TYPE: Final = "application/vnd.apache.parquet"
MAX_PAGE: Final = 500

EVENT_FILTERS: Final[dict[str, type]] = {
    "flow_id": int,
    "orig_h": str,
    "resp_h": str,
    "orig_p": int,
    "resp_p": int,
    "is_orig": bool,
    "unit": int,
    "func": str,
    "function_code": int,
    "function_name": str,
    "pdu_type": str,
    "exception": str,
    "cip_service": str,
    "class_name": str,
    "enip_command": str,
    "rosctr_name": str,
    "area_name": str,
    "query": str,
    "qtype_name": str,
    "rcode_name": str,
    "op_name": str,
    "mode_name": str,
}
"""Columns ``GET /events/{log}`` filters on (``?filter=column:value``), with the value's type. A
column the log does not have is a 422."""

_CREDENTIAL_NAMES: Final = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "secret",
        "community",
        "community_string",
        "token",
        "psk",
        "api_key",
        "apikey",
        "private_key",
        "credential",
        "credentials",
        "authorization",
        "cookie",
    }
)
_CREDENTIAL_SUFFIX: Final = re.compile(r".*_(password|passwd|secret|token|psk|key_material)")


def credential_column(name: str, type_: pa.DataType) -> bool:
    """True for a column that may hold a credential: named like one (``password``, ``community``,
    ``*_secret``, ...) and not a boolean (``cleartext_credentials``-style flags say a credential was
    *seen*; they are kept). ``community_id`` (the flow hash) is no credential."""
    if pa.types.is_boolean(type_):
        return False
    lowered = name.lower()
    return lowered in _CREDENTIAL_NAMES or bool(_CREDENTIAL_SUFFIX.fullmatch(lowered))


def drop_credentials(table: pa.Table) -> tuple[pa.Table, list[str]]:
    """``table`` without its credential-like columns, and their names."""
    dropped = [f.name for f in table.schema if credential_column(f.name, f.type)]
    return (table.drop_columns(dropped) if dropped else table), dropped


def _iso_ns(ns: int) -> str:
    seconds, fraction = divmod(ns, 10**9)
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def _plain(value: Any) -> Any:
    """A JSON value for one cell: bytes as hex, datetimes/dates ISO, NaN/inf as null."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return aware.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def rows_json(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of ``table`` as JSON objects (credential-like columns removed); timestamp columns keep
    their nanoseconds (``to_pylist`` would cut them to microseconds)."""
    table, _ = drop_credentials(table)
    columns: dict[str, list[Any]] = {}
    for column in table.schema:
        data = table.column(column.name)
        if pa.types.is_timestamp(column.type):
            ns = data.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_pylist()
            columns[column.name] = [None if v is None else _iso_ns(v) for v in ns]
        else:
            columns[column.name] = [_plain(v) for v in data.to_pylist()]
    names = list(columns)
    return [{name: columns[name][i] for name in names} for i in range(table.num_rows)]


def _store(request: Request) -> ColumnarStore:
    return shared_store(request.app)


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)


# ------------------------------------------------------------------------------- ingestion

ingest_router = APIRouter(prefix="/ingest/columnar", tags=["ingest"])

BatchHeader = Annotated[
    str,
    Header(
        alias="X-Batch-Id",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="The sensor's batch id (a content hash); a batch sent again replaces itself",
    ),
]
LogPath = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_]*$", description="Event log name")
]
ParquetBody = Annotated[bytes, Body(media_type=PARQUET_TYPE, description="One Parquet file")]


def _ingest(
    request: Request,
    session: SessionDep,
    sensor: Sensor,
    kind: Literal["flows", "events"],
    log: str | None,
    data: bytes,
    batch_id: str,
) -> ColumnarBatchPublic:
    sensor_name = sensor.name
    if session.scalar(
        select(IngestBatch.id).where(IngestBatch.sensor_id == sensor.id, IngestBatch.batch_id == batch_id)
    ):
        return ColumnarBatchPublic(batch_id=batch_id, status="duplicate", kind=kind, log=log, written=0)
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise _unprocessable("the body is not a Parquet file")
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _unprocessable(f"unreadable Parquet file: {exc}") from None
    table, dropped = drop_credentials(table)
    session.rollback()  # no transaction held open while writing files
    try:
        report = _store(request).add_table(kind, log, table, sensor_name, batch_id)
    except ColumnarStoreError as exc:
        raise _unprocessable(str(exc)) from None
    weird = dict(report.weird)
    for name in dropped:
        weird[f"dropped_credential_column:{name}"] = 1
    audit(
        session,
        f"sensor:{sensor_name}",
        "ingest.columnar",
        f"{kind}/{log}" if log else kind,
        batch_id=batch_id,
        rows=report.total_rows,
        files=report.files_written,
    )
    # Recorded after the files are in place: a crash in between makes the retry rewrite the same
    # files (add_table replaces a batch), never add them twice.
    session.add(IngestBatch(sensor_id=sensor.id, batch_id=batch_id, kind=kind, written=report.total_rows))
    try:
        session.commit()
    except IntegrityError:  # the same batch raced with its retry, which recorded it
        session.rollback()
        return ColumnarBatchPublic(batch_id=batch_id, status="duplicate", kind=kind, log=log, written=0)
    return ColumnarBatchPublic(
        batch_id=batch_id,
        status="applied",
        kind=kind,
        log=log,
        written=report.total_rows,
        days=sorted(day.isoformat() for day in report.days),
        replaced=report.files_removed,
        skipped=sum(report.skipped.values()),
        weird=weird,
    )


@ingest_router.post(
    "/flows",
    operation_id="ingest_columnar_flows",
    response_model=ColumnarBatchPublic,
    summary="Push one Parquet batch of flows (idempotent by X-Batch-Id)",
    **access("sensor", 413, 422),
)
def ingest_flows(
    data: ParquetBody, batch_id: BatchHeader, request: Request, sensor: CurrentSensor, session: SessionDep
) -> ColumnarBatchPublic:
    return _ingest(request, session, sensor, "flows", None, data, batch_id)


@ingest_router.post(
    "/events/{log}",
    operation_id="ingest_columnar_events",
    response_model=ColumnarBatchPublic,
    summary="Push one Parquet batch of protocol events of a log (idempotent by X-Batch-Id)",
    **access("sensor", 413, 422),
)
def ingest_events(
    log: LogPath,
    data: ParquetBody,
    batch_id: BatchHeader,
    request: Request,
    sensor: CurrentSensor,
    session: SessionDep,
) -> ColumnarBatchPublic:
    return _ingest(request, session, sensor, "events", log, data, batch_id)


# ---------------------------------------------------------------------------------- queries

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_HEX = r"[0-9a-fA-F]{1,4}"
IP_PATTERN: Final = (
    rf"^({_OCTET}(\.{_OCTET}){{3}}"
    rf"|({_HEX}:){{7}}{_HEX}|({_HEX}:){{1,7}}:|({_HEX}:){{1,6}}:{_HEX}"
    rf"|({_HEX}:){{1,5}}(:{_HEX}){{1,2}}|({_HEX}:){{1,4}}(:{_HEX}){{1,3}}"
    rf"|({_HEX}:){{1,3}}(:{_HEX}){{1,4}}|({_HEX}:){{1,2}}(:{_HEX}){{1,5}}"
    rf"|{_HEX}:(:{_HEX}){{1,6}}|:((:{_HEX}){{1,7}}|:))$"
)
"""A dotted IPv4 address (no leading zeros) or an IPv6 address in hex groups (no zone, no embedded
IPv4): exactly what ``ipaddress`` accepts among those forms, so the OpenAPI document says it."""
_INT_FILTERS = "|".join(sorted(name for name, kind in EVENT_FILTERS.items() if kind is int))
_TEXT_FILTERS = "|".join(sorted(name for name, kind in EVENT_FILTERS.items() if kind is str))
FILTER_PATTERN: Final = (
    rf"^(({_INT_FILTERS}):-?[0-9]{{1,18}}|is_orig:(true|false)|({_TEXT_FILTERS}):[^\x00]{{0,200}})$"
)
_EARLIEST: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LATEST: Final = dt.datetime(2262, 4, 11, tzinfo=dt.UTC)

_RFC_3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_DATE_TIME: Final[dict[str, Any]] = {"json_schema_extra": {"format": "date-time"}}
Since = Annotated[
    str | None, Query(max_length=64, description="From this time (RFC 3339 date-time)", **_DATE_TIME)
]
Until = Annotated[
    str | None, Query(max_length=64, description="Before this time (RFC 3339 date-time)", **_DATE_TIME)
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="Rows to skip")]
SensorQuery = Annotated[
    str | None,
    Query(
        min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$", description="Only this sensor (its name)"
    ),
]


def _moment(text: str | None, name: str) -> dt.datetime | None:
    """An RFC 3339 query value as UTC, clamped to what nanosecond timestamps hold (1970 to 2262);
    422 when it is not one. A leap second (``:60``) counts as ``:59``."""
    if text is None:
        return None
    match = _RFC_3339.fullmatch(text)
    if match is None:
        raise _unprocessable(f"{name} is not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    micro = int((match.group(7) or "0")[:6].ljust(6, "0"))
    try:
        moment = dt.datetime(max(year, 1), month, day, hour, minute, min(second, 59), micro, tzinfo=dt.UTC)
    except ValueError:
        raise _unprocessable(f"{name} is not a calendar date and time") from None
    if match.group(9):
        offset = dt.timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        try:
            moment = moment - offset if match.group(9) == "+" else moment + offset
        except OverflowError:  # 0001-01-01 with a positive offset, 9999-12-31 with a negative one
            return _EARLIEST if match.group(9) == "+" else _LATEST
    return min(max(moment, _EARLIEST), _LATEST)


def _page(table: pa.Table, limit: int, offset: int) -> RowPage:
    more = table.num_rows > limit
    return RowPage(
        items=rows_json(table.slice(0, limit)),
        limit=limit,
        offset=offset,
        next_offset=offset + limit if more else None,
    )


flows_router = APIRouter(prefix="/flows", tags=["flows"])


@flows_router.get(
    "",
    operation_id="flows_list",
    response_model=RowPage,
    summary="Flows that started in a time window, oldest first",
    **access("viewer", 422),
)
def flows_list(
    request: Request,
    device_ip: Annotated[
        list[Annotated[str, StringConstraints(max_length=45, pattern=IP_PATTERN)]] | None,
        Query(max_length=50, description="Flows with any of these addresses on either side"),
    ] = None,
    since: Since = None,
    until: Until = None,
    protocol: Annotated[
        str | None,
        Query(max_length=32, pattern=r"^[A-Za-z0-9_.-]+$", description="Service (modbus) or transport (tcp)"),
    ] = None,
    sensor: SensorQuery = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> RowPage:
    try:
        table = _store(request).flows(
            device_ips=device_ip,
            since=_moment(since, "since"),
            until=_moment(until, "until"),
            protocol=protocol,
            limit=limit + 1,
            offset=offset,
            sensors=None if sensor is None else [sensor],
        )
    except ColumnarStoreError as exc:
        raise _unprocessable(str(exc)) from None
    return _page(table, limit, offset)


events_router = APIRouter(prefix="/events", tags=["events"])


@events_router.get(
    "",
    operation_id="events_logs",
    response_model=EventLogsPublic,
    summary="The protocol event logs that hold data",
    **access("viewer"),
)
def events_logs(request: Request) -> EventLogsPublic:
    return EventLogsPublic(logs=_store(request).event_logs(), filters=sorted(EVENT_FILTERS))


def _filters(values: list[str] | None) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for value in values or []:
        column, separator, text = value.partition(":")
        if not separator or column not in EVENT_FILTERS:
            allowed = ", ".join(sorted(EVENT_FILTERS))
            raise _unprocessable(f"a filter is column:value with a column among {allowed}")
        kind = EVENT_FILTERS[column]
        item: Any
        if kind is int:
            try:
                item = int(text)
            except ValueError:
                raise _unprocessable(f"filter {column} needs an integer") from None
            if not -(2**63) <= item < 2**63:
                raise _unprocessable(f"filter {column} is out of range")
        elif kind is bool:
            if text not in ("true", "false"):
                raise _unprocessable(f"filter {column} needs true or false")
            item = text == "true"
        else:
            item = text
        previous = parsed.get(column)
        if previous is None:
            parsed[column] = item
        else:  # the same column twice: any of the values
            parsed[column] = [*previous, item] if isinstance(previous, list) else [previous, item]
    return parsed


@events_router.get(
    "/{log}",
    operation_id="events_list",
    response_model=RowPage,
    summary="Protocol events of one log in a time window, oldest first",
    **access("viewer", 422),
)
def events_list(
    request: Request,
    log: LogPath,
    since: Since = None,
    until: Until = None,
    filter: Annotated[
        list[Annotated[str, StringConstraints(max_length=300, pattern=FILTER_PATTERN)]] | None,
        Query(
            max_length=20,
            description="column:value (equality; a column given twice: any of the values)",
        ),
    ] = None,
    sensor: SensorQuery = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> RowPage:
    try:
        table = _store(request).events(
            log,
            since=_moment(since, "since"),
            until=_moment(until, "until"),
            filters=_filters(filter),
            limit=limit + 1,
            offset=offset,
            sensors=None if sensor is None else [sensor],
        )
    except ColumnarStoreError as exc:
        raise _unprocessable(str(exc)) from None
    return _page(table, limit, offset)


router = APIRouter()
"""The three routers of this module (one entry in ``ROUTERS``)."""
router.include_router(ingest_router)
router.include_router(flows_router)
router.include_router(events_router)
