"""Ingestion: an analysis folder (or a batch a sensor pushes) upserted into the console's store.

``ingest_folder(db, DIR, sensor)`` loads what ``fieldward analyze`` wrote (``devices.json``,
``communications.parquet``, ``alerts.jsonl``, and when present the assessment's
``vulnerabilities.json``, ``configurations.json`` and ``risk.json``) in one transaction;
``ingest_records(db, sensor, kind, records)`` takes one batch of the same records as a sensor sends them.

Every table is written with bulk ``INSERT ... ON CONFLICT DO UPDATE`` (the SQLite and PostgreSQL
dialects' upserts) on its natural key, a few thousand rows per statement, so:

- ingesting the same folder twice leaves the same rows (idempotent);
- a record at least as new as the stored one (``last_seen`` / ``last_ts``) replaces its values, an
  older one only widens ``first_seen``; analyst fields (a device's ``importance``, comments) are
  never touched;
- an alert's status changes only when the report is strictly newer: a status the sensor's analyst set
  (acknowledged, closed) is applied, and an alert that fires again after it was closed is reopened;
  each change (and each new alert) is written to ``alert_events`` by ``sensor:<name>`` (on PostgreSQL
  in the same statement as the upsert: no look-up round trips, no event rows through Python);
- an alert's ``evidence_pcap`` that names the console's own copy of the capture
  (``sensor-<sensor id>/alert-<id>.pcap``, written by ``POST /ingest/evidence``) is kept: a newer
  report carries the sensor's folder-relative path, which means nothing to the console.

A device that a communication, alert or finding names but that was not reported yet gets a stub row
(its key only), which the device's own record fills in later. Malformed records are counted in the
report (``skipped`` by kind, ``weird`` by reason), never raised; text is stored verbatim except NUL
characters (PostgreSQL text cannot hold them: replaced by U+FFFD) and values longer than a bounded
column (truncated), both counted. A folder that is not an analysis folder, or an unreadable file, is an
:class:`IngestError`.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson
from psycopg.pq import TransactionStatus
from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
    MetaData,
    String,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY as PG_ARRAY

from fieldward.errors import FieldWardError
from fieldward.store.database import Database
from fieldward.store.models import (
    Alert,
    AlertEvent,
    Communication,
    ConfigFindingRow,
    Device,
    DeviceAttribute,
    DeviceRisk,
    Sensor,
    VulnerabilityFinding,
    severity_rank,
    utcnow,
)

__all__ = [
    "COLLECTOR",
    "FILES",
    "KINDS",
    "CollectorPause",
    "IngestError",
    "IngestReport",
    "ingest_folder",
    "ingest_records",
]

KINDS = ("devices", "communications", "alerts", "vulnerabilities", "configurations", "risk")
"""Record kinds, in the order a folder is ingested (devices first, so references resolve)."""
FILES: dict[str, str] = {
    "devices": "devices.json",
    "communications": "communications.parquet",
    "alerts": "alerts.jsonl",
    "vulnerabilities": "vulnerabilities.json",
    "configurations": "configurations.json",
    "risk": "risk.json",
}
OPTIONAL = frozenset({"vulnerabilities", "configurations", "risk"})
"""Kinds whose file a folder may lack (analyses without the assessment)."""
BATCH = 2000
"""Rows per upsert statement (PostgreSQL allows 65,535 parameters in one statement)."""
PG_BATCH = 10_000
"""Rows per COPY and upsert statement on PostgreSQL."""
IN_CHUNK = 500
"""Keys per ``IN (...)`` look-up."""
INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
INT16 = (-(2**15), 2**15 - 1)


class IngestError(FieldWardError):
    """The folder or a file in it cannot be ingested (missing, unreadable, not the expected format)."""


@dataclass(slots=True)
class IngestReport:
    """What one ingestion did: rows written per kind, records skipped, and counted oddities."""

    sensor: str
    sensor_id: int
    written: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    weird: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def records(self) -> int:
        return sum(self.written.values())

    @property
    def rate(self) -> float:
        """Records written per second."""
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: IngestReport) -> None:
        self.written.update(other.written)
        self.skipped.update(other.skipped)
        self.weird.update(other.weird)
        self.seconds += other.seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "sensor": self.sensor,
            "sensor_id": self.sensor_id,
            "written": dict(self.written),
            "skipped": dict(self.skipped),
            "weird": dict(self.weird),
            "records": self.records,
            "seconds": round(self.seconds, 3),
        }


class _RecordError(Exception):
    """A record that cannot be stored; the message is the counted reason."""


class CollectorPause:
    """Python's cyclic garbage collector paused while batches are parsed and stored (re-entrant,
    thread-safe: one pause lasts while any holder is inside).

    A batch of 5,000 records is some 25,000 new dicts and lists that live until the batch is stored;
    allocating them makes CPython run its collector over and over, and its full collections walk
    every object of the process (the console's own included) while the batch is alive: on a console
    worker that was about a quarter of the Python time of an ingested record. The batch's objects
    hold no reference cycles, so reference counting frees them without the collector. The state is
    the interpreter's (``gc.enable`` is process-wide), hence one instance per process
    (:data:`COLLECTOR`). While holders overlap without end (several sensors pushing to one worker),
    a holder leaving after ``longest`` seconds of pause runs one full collection, so cyclic garbage
    made meanwhile (by other requests) never waits longer than that.
    """

    def __init__(self, longest: float = 10.0) -> None:
        self.longest = longest
        self._lock = threading.Lock()
        self._holders = 0
        self._resume = False
        self._since = 0.0

    def __enter__(self) -> CollectorPause:
        with self._lock:
            if self._holders == 0:
                self._resume = gc.isenabled()
                self._since = time.monotonic()
                gc.disable()
            self._holders += 1
        return self

    def __exit__(self, *_exc: object) -> None:
        collect = False
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                if self._resume:
                    gc.enable()
            elif time.monotonic() - self._since > self.longest:
                self._since = time.monotonic()
                collect = True
        if collect:
            gc.collect()

    @property
    def holders(self) -> int:
        return self._holders


COLLECTOR = CollectorPause()
"""The process's :class:`CollectorPause` (ingestion and the ingest routes hold it)."""


# --- value coercion -------------------------------------------------------------------------------


def _ts(value: Any) -> dt.datetime | None:
    """An ISO 8601 string (nanoseconds allowed, ``Z``), a datetime or epoch seconds, as aware UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _RecordError("bad_timestamp") from None
        return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return dt.datetime.fromtimestamp(value, tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise _RecordError("bad_timestamp") from None
    raise _RecordError("bad_timestamp")


def _date(value: Any) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise _RecordError("bad_date") from None


def _int(value: Any, bounds: tuple[int, int] = INT64, default: int | None = None) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool):
        return int(value)
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise _RecordError("bad_integer") from None
    if not bounds[0] <= number <= bounds[1]:
        raise _RecordError("integer_out_of_range")
    return number


def _float(value: Any, default: float | None = None) -> float | None:
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _RecordError("bad_number") from None
    return number if math.isfinite(number) else default


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _list(value: Any) -> list[Any]:
    if type(value) is list:  # the common case, without the ABC checks below
        return value
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    raise _RecordError("bad_list")


def _dict(value: Any) -> dict[str, Any]:
    if type(value) is dict:
        return value
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    raise _RecordError("bad_object")


def _required(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None or value == "":
        raise _RecordError(f"missing_{key}")
    return value if isinstance(value, str) else str(value)


# --- the tables' cleaners: NUL characters and bounded columns ------------------------------------


class _Cleaner:
    """Makes a row storable in a table: NUL replaced, bounded strings truncated (key columns reject)."""

    def __init__(self, table: Table, keys: Sequence[str], report: IngestReport) -> None:
        self.table = table.name
        self.limits: dict[str, int] = {}
        for column in table.columns:
            length = getattr(column.type, "length", None)
            if isinstance(length, int):
                self.limits[column.name] = length
        self.keys = frozenset(keys)
        self.report = report
        # Columns of numbers, times and flags: the row builders put only such values there (``_int``,
        # ``_ts``...), never text, so the per-row loop skips them. Text and JSON columns (a JSON value
        # may be a bare string) and names that are not the table's are checked.
        self._typed = frozenset(
            column.name
            for column in table.columns
            if not isinstance(column.type, String | JSON) and _python_type(column) in _TYPED
        )
        self._texts: dict[frozenset[str], tuple[tuple[str, int | None], ...]] = {}

    def _text_columns(self, row: dict[str, Any]) -> tuple[tuple[str, int | None], ...]:
        """``(name, length limit)`` of the row's columns that may hold text (cached by row shape)."""
        names = frozenset(row)
        found = self._texts.get(names)
        if found is None:
            found = tuple((name, self.limits.get(name)) for name in row if name not in self._typed)
            self._texts[names] = found
        return found

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        for name, limit in self._text_columns(row):
            value = row[name]
            if type(value) is not str:
                continue
            if "\x00" in value:
                value = value.replace("\x00", "\ufffd")
                row[name] = value
                self.report.weird[f"{self.table}.nul_replaced"] += 1
            if limit is not None and len(value) > limit:
                if name in self.keys:
                    raise _RecordError(f"{name}_too_long")
                row[name] = value[:limit]
                self.report.weird[f"{self.table}.{name}_truncated"] += 1
        return row


_TYPED = (int, float, bool, dt.datetime, dt.date)


def _python_type(column: Column[Any]) -> type | None:
    try:
        kind: type = getattr(column.type, "impl", column.type).python_type  # a TypeDecorator: its impl
    except NotImplementedError:
        return None
    return kind


# --- dialect upserts -------------------------------------------------------------------------------


def _insert(connection: Connection, table: Table) -> Any:
    name = connection.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    raise IngestError(f"ingestion needs SQLite or PostgreSQL, not {name}")


def _batches(rows: Sequence[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _newer(table: Table, excluded: Any, column: str, *, strict: bool = False) -> ColumnElement[bool]:
    """The incoming row is at least as new (``strict``: newer) than the stored one by ``column``."""
    incoming = excluded[column]
    stored = table.c[column]
    return or_(stored.is_(None), incoming > stored if strict else incoming >= stored)


def _earliest(table: Table, excluded: Any, column: str) -> Any:
    stored = table.c[column]
    return case((or_(stored.is_(None), excluded[column] < stored), excluded[column]), else_=stored)


def _assignments(
    table: Table,
    excluded: Any,
    columns: Sequence[str],
    keys: Sequence[str],
    *,
    newest_by: str | None = None,
    earliest: Sequence[str] = (),
    keep: Sequence[str] = (),
    extra: Callable[[Table, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``SET`` clause of an upsert (see :func:`_upsert` for the rules)."""
    newer = _newer(table, excluded, newest_by) if newest_by else None
    assignments: dict[str, Any] = {}
    for column in columns:
        if column in keys or column in keep:
            continue
        if column in earliest:
            assignments[column] = _earliest(table, excluded, column)
        elif newer is not None:
            assignments[column] = case((newer, excluded[column]), else_=table.c[column])
        else:
            assignments[column] = excluded[column]
    if extra is not None:
        assignments.update(extra(table, excluded))
    return assignments


def _upsert(
    connection: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    newest_by: str | None = None,
    earliest: Sequence[str] = (),
    keep: Sequence[str] = (),
    extra: Callable[[Table, Any], dict[str, Any]] | None = None,
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Upsert ``rows`` (distinct ``keys``, same columns) and return their ``returning`` columns as stored.

    With ``newest_by``, a row replaces the stored values only when it is at least as new; ``earliest``
    columns keep their minimum; ``keep`` columns are set on insert only. PostgreSQL: the rows are
    COPYed into a temporary table, then one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` per batch;
    SQLite: an executemany, which SQLAlchemy sends as multi-row ``VALUES`` pages.
    """
    if not rows:
        return []
    columns = list(rows[0])
    statement = _insert(connection, table)
    assignments = _assignments(
        table,
        statement.excluded,
        columns,
        keys,
        newest_by=newest_by,
        earliest=earliest,
        keep=keep,
        extra=extra,
    )
    returned = [table.c[c] for c in (returning or keys[:1])]
    found: list[tuple[Any, ...]] = []
    if connection.dialect.name == "postgresql":
        stage = _Stage(connection, table, columns)
        try:
            for batch in _batches(rows, PG_BATCH):
                stage.load(batch)
                upsert = (
                    _insert(connection, table)
                    .from_select(columns, select(*(stage.table.c[c] for c in columns)))
                    .on_conflict_do_update(index_elements=list(keys), set_=assignments)
                    .returning(*returned)
                )
                found.extend(tuple(row) for row in connection.execute(upsert))
        finally:
            stage.drop()
        return found
    # RETURNING makes SQLAlchemy send the batch as multi-row VALUES pages ("insertmanyvalues").
    upsert = statement.on_conflict_do_update(index_elements=list(keys), set_=assignments).returning(*returned)
    for batch in _batches(rows, BATCH):
        found.extend(tuple(row) for row in connection.execute(upsert, list(batch)))
    return found


class _Stage:
    """A temporary PostgreSQL table with some columns of ``table``, filled by ``COPY``."""

    def __init__(self, connection: Connection, table: Table, columns: Sequence[str]) -> None:
        self.connection = connection
        self.columns = list(columns)
        quote = connection.dialect.identifier_preparer.quote
        self.name = f"_fw_stage_{table.name}"
        names = ", ".join(quote(c) for c in columns)
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(self.name)}")
        # Identifiers only (quoted table and column names of the models); no values are interpolated.
        create = f"CREATE TEMPORARY TABLE {quote(self.name)} AS SELECT {names} FROM {quote(table.name)}"  # noqa: S608
        connection.exec_driver_sql(f"{create} WITH NO DATA")
        self.table = Table(self.name, MetaData(), *(Column(c, table.c[c].type) for c in columns))

    def load(self, rows: Sequence[dict[str, Any]]) -> None:
        quote = self.connection.dialect.identifier_preparer.quote
        self.connection.exec_driver_sql(f"TRUNCATE {quote(self.name)}")
        _copy(self.connection, self.table, self.columns, rows)

    def drop(self) -> None:
        """Drop the table (called in ``finally``). After a failed statement the transaction is
        aborted and rolls back, the table's creation included: nothing to drop, and the original
        error, not "transaction is aborted", is what propagates."""
        driver = self.connection.connection.driver_connection
        if driver is not None and driver.info.transaction_status == TransactionStatus.INERROR:
            return
        quote = self.connection.dialect.identifier_preparer.quote
        self.connection.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(self.name)}")


def _insert_rows(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Plain inserts (no conflict possible): ``COPY`` on PostgreSQL, an executemany on SQLite."""
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        for batch in _batches(rows, BATCH):
            connection.execute(table.insert(), list(batch))
        return
    _copy(connection, table, list(rows[0]), rows)


_COLUMN_TYPES = (
    "SELECT attname, atttypid::int FROM pg_attribute"
    " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
)
JSON_OID, TEXT_OID = 114, 25
"""PostgreSQL's ``json`` and ``text`` type ids: in a binary ``COPY`` a ``json`` field is its text."""


def _copy(
    connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[dict[str, Any]]
) -> None:
    """``COPY table (columns) FROM STDIN (FORMAT BINARY)`` of ``rows`` (PostgreSQL).

    Binary: no value is formatted as text by psycopg and parsed back by PostgreSQL (timestamps,
    numbers): a third less Python per alert row (8.4 -> 5.6 µs; PostgreSQL's side within the noise
    of the measurement, docs/console/performance.md, seventh round). The row builders give every
    column a value of its type (``_int`` within the column's bounds, ``_ts`` aware datetimes...), as
    a binary field must be; JSON columns are sent as their JSON text (:func:`_json_text`), which is
    what a binary ``json`` field holds. The column types are read from the table (one look-up per
    ``COPY``), so a stage table copied from a model always matches.
    """
    json_columns = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, JSON)]
    values_of = itemgetter(*columns) if len(columns) > 1 else (lambda row: (row[columns[0]],))
    quote = connection.dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    driver = connection.connection.driver_connection
    if driver is None:  # pragma: no cover - a live connection always has one
        raise IngestError("the database connection is closed")
    with driver.cursor() as cursor:
        found = dict(cursor.execute(_COLUMN_TYPES, (quote(table.name),)).fetchall())
        types = [TEXT_OID if found[c] == JSON_OID else found[c] for c in columns]
        if any(types[i] != TEXT_OID for i in json_columns):  # jsonb (not in the models): text format
            raise IngestError(f"{table.name}: a JSON column is not of PostgreSQL's json type")
        # Identifiers only (quoted table and column names of the models); no values are interpolated.
        with cursor.copy(f"COPY {quote(table.name)} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in rows:
                values = list(values_of(row))
                for index in json_columns:
                    values[index] = _json_text(values[index])
                copy.write_row(values)


def _json_text(value: Any) -> str:
    """A JSON column's text for ``COPY``: orjson; a value orjson cannot write (an integer beyond
    64 bits, which a pushed record may hold) by ``json``, with non-finite floats as ``null`` as
    orjson writes them (PostgreSQL's json type refuses ``NaN``)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
    except TypeError:  # orjson.JSONEncodeError: "Integer exceeds 64-bit range"
        return json.dumps(_finite(value), default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None and mapping keys as text (orjson's
    ``OPT_NON_STR_KEYS``), for :func:`json.dumps`."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _lookup(
    connection: Connection, table: Table, sensor_id: int, key: str, keys: Iterable[str], *columns: str
) -> dict[str, tuple[Any, ...]]:
    """``key -> (columns...)`` of the sensor's rows whose natural key is in ``keys``."""
    wanted = sorted(set(keys))
    found: dict[str, tuple[Any, ...]] = {}
    selected = [table.c[key], *(table.c[c] for c in columns)]
    postgresql = connection.dialect.name == "postgresql"
    size = PG_BATCH if postgresql else IN_CHUNK
    for start in range(0, len(wanted), size):
        chunk = wanted[start : start + size]
        if postgresql:  # one array parameter instead of thousands of IN parameters
            match = table.c[key] == any_(bindparam("keys", chunk, type_=PG_ARRAY(Text)))
        else:
            match = table.c[key].in_(chunk)
        query = select(*selected).where(table.c.sensor_id == sensor_id, match)
        # All rows at once (one fetchall): iterating the result fetches them one call per row, for
        # the ~6,000 device keys of an alert batch.
        for row in connection.execute(query).all():
            found[row[0]] = tuple(row[1:])
    return found


class _Devices:
    """Device key -> id for one sensor, creating stub rows for keys not reported yet."""

    def __init__(self, connection: Connection, sensor_id: int, report: IngestReport) -> None:
        self.connection = connection
        self.sensor_id = sensor_id
        self.ids: dict[str, int] = {}
        self.table: Table = Device.__table__  # type: ignore[assignment]
        self.cleaner = _Cleaner(self.table, ("device_key",), report)
        self.report = report

    def resolve(self, keys: Iterable[str | None]) -> None:
        """Look up (or create as stubs) the ids of ``keys``."""
        missing = {k for k in keys if k and k not in self.ids}
        if not missing:
            return
        self.ids.update({k: v[0] for k, v in self._find(missing).items()})
        absent = [k for k in missing if k not in self.ids and len(k) <= 255]
        if absent:
            stubs = [self.cleaner(_stub_device(self.sensor_id, key)) for key in sorted(absent)]
            statement = _insert(self.connection, self.table).on_conflict_do_nothing(
                index_elements=["sensor_id", "device_key"]
            )
            for batch in _batches(stubs, BATCH):
                self.connection.execute(statement, list(batch))
            self.report.weird["devices.stub_created"] += len(stubs)
            self.ids.update({k: v[0] for k, v in self._find(set(absent)).items()})

    def attach(
        self,
        parsed: Sequence[tuple[str, dict[str, Any]]],
        kind: str,
        natural_key: Callable[[dict[str, Any]], Any],
    ) -> dict[Any, dict[str, Any]]:
        """Rows of (device key, row) pairs with their ``device_id`` set, the last row per
        ``natural_key(row)`` kept; a row whose device cannot be resolved is counted skipped."""
        self.resolve(key for key, _ in parsed)
        rows: dict[Any, dict[str, Any]] = {}
        for key, row in parsed:
            device_id = self.get(key)
            if device_id is None:
                self.report.skipped[kind] += 1
                continue
            row["device_id"] = device_id
            rows[natural_key(row)] = row
        return rows

    def _find(self, keys: set[str]) -> dict[str, tuple[Any, ...]]:
        return _lookup(self.connection, self.table, self.sensor_id, "device_key", keys, "id")

    def get(self, key: str | None) -> int | None:
        return self.ids.get(key) if key else None


def _stub_device(sensor_id: int, key: str) -> dict[str, Any]:
    return {
        "sensor_id": sensor_id,
        "device_key": key,
        "mac": key[4:] if key.startswith("mac:") and len(key) <= 36 else None,
        "ips": [],
        "packets": 0,
        "protocols": [],
        "roles": [],
        "services": [],
        "vlans": [],
        "confidence": {},
        "facts": {},
        "address_history": [],
        "updated": utcnow(),
    }


# --- one function per kind --------------------------------------------------------------------------


def _device_row(sensor_id: int, record: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    return {
        "sensor_id": sensor_id,
        "device_key": _required(record, "id"),
        "mac": _str(record.get("mac")),
        "ips": [str(ip) for ip in _list(record.get("ips"))],
        "local": _bool(record.get("local")),
        "router": _bool(record.get("router")),
        "vendor": _str(record.get("vendor")),
        "model": _str(record.get("model")),
        "product_code": _str(record.get("product_code")),
        "firmware": _str(record.get("firmware")),
        "serial": _str(record.get("serial")),
        "hostname": _str(record.get("hostname")),
        "os": _str(record.get("os")),
        "device_type": _str(record.get("device_type")),
        "purdue_level": _int(record.get("purdue_level"), INT16),
        "first_seen": _ts(record.get("first_seen")),
        "last_seen": _ts(record.get("last_seen")),
        "packets": _int(record.get("packets"), INT64, 0),
        "protocols": _list(record.get("protocols")),
        "roles": _list(record.get("roles")),
        "services": _list(record.get("services")),
        "vlans": _list(record.get("vlans")),
        "confidence": _dict(record.get("confidence")),
        "facts": _dict(record.get("facts")),
        "address_history": _list(record.get("address_history")),
        "updated": now,
    }


def _attribute_rows(device_id: int, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, attribute in _dict(record.get("attributes")).items():
        if not isinstance(attribute, Mapping):
            raise _RecordError("bad_attribute")
        rows.append(
            {
                "device_id": device_id,
                "name": str(name),
                "value": attribute.get("value"),
                "confidence": _float(attribute.get("confidence"), 0.0),
                "evidence": _list(attribute.get("evidence")),
                "alternatives": _list(attribute.get("alternatives")),
            }
        )
    return rows


def _ingest_devices(
    connection: Connection, sensor_id: int, records: Iterable[Any], devices: _Devices, report: IngestReport
) -> None:
    table: Table = Device.__table__  # type: ignore[assignment]
    clean = _Cleaner(table, ("device_key",), report)
    now = utcnow()
    rows: dict[str, dict[str, Any]] = {}
    sources: dict[str, Mapping[str, Any]] = {}
    for record in records:
        try:
            if not isinstance(record, Mapping):
                raise _RecordError("not_an_object")
            row = clean(_device_row(sensor_id, record, now))
        except _RecordError as reason:
            report.skipped["devices"] += 1
            report.weird[f"devices.{reason}"] += 1
            continue
        rows[row["device_key"]] = row  # a key twice in one batch: the last record wins
        sources[row["device_key"]] = record
    if not rows:
        return
    returned = _upsert(
        connection,
        table,
        list(rows.values()),
        ("sensor_id", "device_key"),
        newest_by="last_seen",
        earliest=("first_seen",),
        returning=("device_key", "id", "last_seen"),
    )
    report.written["devices"] += len(rows)
    devices.ids.update((key, device_id) for key, device_id, _ in returned)
    # Attributes follow the device's record when it is at least as new as the stored device: then
    # the upsert took the record's last_seen, which RETURNING shows (no look-up before the upsert).
    attribute_table: Table = DeviceAttribute.__table__  # type: ignore[assignment]
    clean_attribute = _Cleaner(attribute_table, ("name",), report)
    attributes: list[dict[str, Any]] = []
    for key, device_id, stored_last in returned:
        row = rows[key]
        if stored_last != row["last_seen"]:
            continue
        try:
            attributes.extend(clean_attribute(a) for a in _attribute_rows(device_id, sources[key]))
        except _RecordError as reason:
            report.weird[f"device_attributes.{reason}"] += 1
    _upsert(connection, attribute_table, attributes, ("device_id", "name"))
    report.written["device_attributes"] += len(attributes)


def _ingest_communications(
    connection: Connection, sensor_id: int, records: Iterable[Any], devices: _Devices, report: IngestReport
) -> None:
    table: Table = Communication.__table__  # type: ignore[assignment]
    clean = _Cleaner(table, ("transport", "protocol"), report)
    parsed: list[tuple[str, str, dict[str, Any]]] = []
    for record in records:
        try:
            if not isinstance(record, Mapping):
                raise _RecordError("not_an_object")
            src = _required(record, "src_device")
            dst = _required(record, "dst_device")
            row = {
                "sensor_id": sensor_id,
                "transport": _required(record, "transport"),
                "port": _int(record.get("dst_port", record.get("port")), (0, 65535), 0),
                "protocol": _str(record.get("service", record.get("protocol"))) or "",
                "flows": _int(record.get("flows"), INT64, 0),
                "answered": _int(record.get("answered"), INT64, 0),
                "src_packets": _int(record.get("src_packets"), INT64, 0),
                "dst_packets": _int(record.get("dst_packets"), INT64, 0),
                "src_bytes": _int(record.get("src_bytes"), INT64, 0),
                "dst_bytes": _int(record.get("dst_bytes"), INT64, 0),
                "first_seen": _ts(record.get("first_ts", record.get("first_seen"))),
                "last_seen": _ts(record.get("last_ts", record.get("last_seen"))),
            }
            parsed.append((src, dst, clean(row)))
        except _RecordError as reason:
            report.skipped["communications"] += 1
            report.weird[f"communications.{reason}"] += 1
    devices.resolve(key for src, dst, _ in parsed for key in (src, dst))
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for src, dst, row in parsed:
        src_id, dst_id = devices.get(src), devices.get(dst)
        if src_id is None or dst_id is None:
            report.skipped["communications"] += 1
            report.weird["communications.device_key_too_long"] += 1
            continue
        row["src_device_id"], row["dst_device_id"] = src_id, dst_id
        rows[(src_id, dst_id, row["transport"], row["port"], row["protocol"])] = row
    keys = ("sensor_id", "src_device_id", "dst_device_id", "transport", "port", "protocol")
    _upsert(connection, table, list(rows.values()), keys, newest_by="last_seen", earliest=("first_seen",))
    report.written["communications"] += len(rows)


def _alert_row(sensor_id: int, record: Mapping[str, Any]) -> dict[str, Any]:
    severity = _str(record.get("severity")) or "info"
    status = _str(record.get("status")) or "new"
    if status not in ("new", "acknowledged", "closed"):
        raise _RecordError("bad_status")
    return {
        "sensor_id": sensor_id,
        "alert_key": _required(record, "id"),
        "engine": _str(record.get("engine")) or "",
        "type": _required(record, "type"),
        "title": _str(record.get("title")) or "",
        "description": _str(record.get("description")) or "",
        "severity": severity,
        "severity_rank": severity_rank(severity),
        "status": status,
        "first_ts": _ts(record.get("first_ts")),
        "last_ts": _ts(record.get("last_ts")),
        "count": _int(record.get("count"), INT64, 1),
        "src": _str(record.get("src")),
        "dst": _str(record.get("dst")),
        "protocol": _str(record.get("protocol")),
        "explanation": _str(record.get("explanation")) or "",
        "recommendation": _str(record.get("recommendation")) or "",
        "mitre": _list(record.get("mitre")),
        "evidence": _list(record.get("evidence")),
        "details": _dict(record.get("details")),
        "evidence_pcap": _str(record.get("evidence_pcap")),
    }


def next_status(
    stored: str, stored_last: dt.datetime | None, incoming: str, incoming_last: dt.datetime | None
) -> str:
    """The status after a sensor re-reports an alert (the rule the upsert applies in SQL)."""
    newer = stored_last is None or (incoming_last is not None and incoming_last > stored_last)
    if not newer:
        return stored
    if incoming != "new":
        return incoming
    return "new" if stored == "closed" else stored


def _ingest_alerts(
    connection: Connection,
    sensor: tuple[int, str],
    records: Iterable[Any],
    devices: _Devices,
    report: IngestReport,
) -> None:
    sensor_id, sensor_name = sensor
    table: Table = Alert.__table__  # type: ignore[assignment]
    clean = _Cleaner(table, ("alert_key", "type", "severity"), report)
    parsed: list[tuple[Mapping[str, Any], dict[str, Any]]] = []
    for record in records:
        try:
            if not isinstance(record, Mapping):
                raise _RecordError("not_an_object")
            parsed.append((record, clean(_alert_row(sensor_id, record))))
        except _RecordError as reason:
            report.skipped["alerts"] += 1
            report.weird[f"alerts.{reason}"] += 1
    devices.resolve(_str(record.get(side)) for record, _ in parsed for side in ("src_device", "dst_device"))
    rows: dict[str, dict[str, Any]] = {}
    for record, row in parsed:
        row["src_device_id"] = devices.get(_str(record.get("src_device")))
        row["dst_device_id"] = devices.get(_str(record.get("dst_device")))
        rows[row["alert_key"]] = row
    if not rows:
        return
    now = utcnow()
    by = f"sensor:{sensor_name}"[:200]

    def status_rule(table: Table, excluded: Any) -> dict[str, Any]:
        strictly_newer = _newer(table, excluded, "last_ts", strict=True)
        status = case(
            (and_(strictly_newer, excluded.status != "new"), excluded.status),
            (and_(strictly_newer, table.c.status == "closed"), literal("new")),
            else_=table.c.status,
        )
        # The console's own copy of the evidence capture (written by POST /ingest/evidence) is kept:
        # a newer report carries the sensor's folder-relative path, which means nothing here.
        console_copy = (
            literal("sensor-")
            + cast(table.c.sensor_id, String)
            + literal("/alert-")
            + cast(table.c.id, String)
            + literal(".pcap")
        )
        evidence = case(
            (table.c.evidence_pcap == console_copy, table.c.evidence_pcap),
            (_newer(table, excluded, "last_ts"), excluded.evidence_pcap),
            else_=table.c.evidence_pcap,
        )
        return {"status": status, "evidence_pcap": evidence}

    if connection.dialect.name == "postgresql":
        history = _upsert_alerts_pg(connection, table, list(rows.values()), status_rule, by, now)
        report.written["alerts"] += len(rows)
        if history:
            report.written["alert_events"] += history
        return
    stored = _lookup(connection, table, sensor_id, "alert_key", rows, "id", "status", "last_ts")
    _upsert(
        connection,
        table,
        list(rows.values()),
        ("sensor_id", "alert_key"),
        newest_by="last_ts",
        earliest=("first_ts",),
        extra=status_rule,
    )
    report.written["alerts"] += len(rows)
    # The status history: a new alert, or a status the report changed.
    changes: list[tuple[str, str | None, str]] = []
    for key, row in rows.items():
        previous = stored.get(key)
        if previous is None:
            changes.append((key, None, row["status"]))
            continue
        after = next_status(previous[1], previous[2], row["status"], row["last_ts"])
        if after != previous[1]:
            changes.append((key, previous[1], after))
    if not changes:
        return
    ids = _lookup(connection, table, sensor_id, "alert_key", (c[0] for c in changes), "id")
    events = [
        {
            "alert_id": ids[key][0],
            "from_status": before,
            "to_status": after,
            "by": by,
            "at": now,
            "note": "reported by the sensor" if before is None else "status reported by the sensor",
        }
        for key, before, after in changes
        if key in ids
    ]
    _insert_rows(connection, AlertEvent.__table__, events)  # type: ignore[arg-type]
    report.written["alert_events"] += len(events)


def _upsert_alerts_pg(
    connection: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    status_rule: Callable[[Table, Any], dict[str, Any]],
    by: str,
    now: dt.datetime,
) -> int:
    """Upsert alerts and write their status history in one statement per batch (PostgreSQL).

    ``WITH prev AS (the stored statuses), up AS (INSERT ... ON CONFLICT DO UPDATE ... RETURNING)
    INSERT INTO alert_events SELECT ... FROM up LEFT JOIN prev WHERE the status changed``: both CTEs
    see the snapshot before the statement, so ``prev`` holds the statuses before the upsert; a new
    alert (no ``prev``) and a changed status each get an event. No look-up round trip, no event rows
    through Python. Returns the events written.
    """
    columns = list(rows[0])
    events_table: Table = AlertEvent.__table__  # type: ignore[assignment]
    stage = _Stage(connection, table, columns)
    written = 0
    try:
        for batch in _batches(rows, PG_BATCH):
            stage.load(batch)
            staged = stage.table
            prev = (
                select(table.c.alert_key, table.c.status)
                .join(
                    staged,
                    and_(table.c.sensor_id == staged.c.sensor_id, table.c.alert_key == staged.c.alert_key),
                )
                .cte("prev")
            )
            statement = _insert(connection, table)
            assignments = _assignments(
                table,
                statement.excluded,
                columns,
                ("sensor_id", "alert_key"),
                newest_by="last_ts",
                earliest=("first_ts",),
                extra=status_rule,
            )
            up = (
                statement.from_select(columns, select(*(staged.c[c] for c in columns)))
                .on_conflict_do_update(index_elements=["sensor_id", "alert_key"], set_=assignments)
                .returning(table.c.id, table.c.alert_key, table.c.status)
                .cte("up")
            )
            note = case(
                (prev.c.status.is_(None), literal("reported by the sensor")),
                else_=literal("status reported by the sensor"),
            )
            changed = (
                select(
                    up.c.id,
                    prev.c.status,
                    up.c.status,
                    literal(by, String),
                    literal(now, events_table.c.at.type),
                    note,
                )
                .select_from(up.outerjoin(prev, prev.c.alert_key == up.c.alert_key))
                .where(prev.c.status.is_distinct_from(up.c.status))
            )
            history = (
                _insert(connection, events_table)
                .from_select(["alert_id", "from_status", "to_status", "by", "at", "note"], changed)
                .returning(events_table.c.id)
                .cte("history")
            )
            counted = select(func.count()).select_from(history).add_cte(prev, up)
            written += int(connection.execute(counted).scalar_one())
    finally:
        stage.drop()
    return written


def _cvss(record: Mapping[str, Any]) -> tuple[float | None, str | None, str | None]:
    cvss = record.get("cvss")
    if not isinstance(cvss, Mapping):
        return None, None, None
    return _float(cvss.get("base_score")), _str(cvss.get("vector")), _str(cvss.get("version"))


def _ingest_vulnerabilities(
    connection: Connection, sensor_id: int, records: Iterable[Any], devices: _Devices, report: IngestReport
) -> None:
    table: Table = VulnerabilityFinding.__table__  # type: ignore[assignment]
    clean = _Cleaner(table, ("vulnerability_id",), report)
    now = utcnow()
    parsed: list[tuple[str, dict[str, Any]]] = []
    for record in records:
        try:
            if not isinstance(record, Mapping):
                raise _RecordError("not_an_object")
            score, vector, version = _cvss(record)
            severity = _str(record.get("severity")) or "none"
            row = {
                "sensor_id": sensor_id,
                "vulnerability_id": _required(record, "vulnerability_id"),
                "cpe": _str(record.get("cpe")) or "",
                "criteria": _str(record.get("criteria")) or "",
                "reason": _str(record.get("reason")) or "",
                "confidence": _float(record.get("confidence"), 0.0),
                "sources": [str(s) for s in _list(record.get("sources"))],
                "severity": severity,
                "severity_rank": severity_rank(severity),
                "cvss_score": score,
                "cvss_vector": vector,
                "cvss_version": version,
                "kev": bool(record.get("kev")),
                "kev_due_date": _date(record.get("kev_due_date")),
                "known_ransomware": bool(record.get("known_ransomware")),
                "description": _str(record.get("description")) or "",
                "remediation": _str(record.get("remediation")),
                "published": _ts(record.get("published")),
                "not_applicable": bool(record.get("not_applicable")),
                "not_applicable_reason": _str(record.get("not_applicable_reason")),
                "first_seen": now,
                "last_seen": now,
            }
            parsed.append((_required(record, "device_id"), clean(row)))
        except _RecordError as reason:
            report.skipped["vulnerabilities"] += 1
            report.weird[f"vulnerabilities.{reason}"] += 1
    rows = devices.attach(parsed, "vulnerabilities", lambda row: (row["device_id"], row["vulnerability_id"]))
    _upsert(connection, table, list(rows.values()), ("device_id", "vulnerability_id"), keep=("first_seen",))
    report.written["vulnerabilities"] += len(rows)


def _ingest_configurations(
    connection: Connection, sensor_id: int, records: Iterable[Any], devices: _Devices, report: IngestReport
) -> None:
    table: Table = ConfigFindingRow.__table__  # type: ignore[assignment]
    clean = _Cleaner(table, ("finding_key", "check", "severity"), report)
    parsed: list[tuple[str, dict[str, Any]]] = []
    for record in records:
        try:
            if not isinstance(record, Mapping):
                raise _RecordError("not_an_object")
            check = _required(record, "check")
            device_key = _required(record, "device_id")
            port = _int(record.get("port"), (0, 65535))
            severity = _str(record.get("severity")) or "none"
            row = {
                "sensor_id": sensor_id,
                "finding_key": _str(record.get("id")) or f"{check}:{device_key}:{port or ''}",
                "check": check,
                "title": _str(record.get("title")) or "",
                "severity": severity,
                "severity_rank": severity_rank(severity),
                "explanation": _str(record.get("explanation")) or "",
                "recommendation": _str(record.get("recommendation")) or "",
                "protocol": _str(record.get("protocol")),
                "port": port,
                "peers": [str(p) for p in _list(record.get("peers"))],
                "first_seen": _ts(record.get("first_seen")),
                "last_seen": _ts(record.get("last_seen")),
                "count": _int(record.get("count"), INT64, 1),
                "evidence": _list(record.get("evidence")),
                "details": _dict(record.get("details")),
            }
            parsed.append((device_key, clean(row)))
        except _RecordError as reason:
            report.skipped["configurations"] += 1
            report.weird[f"configurations.{reason}"] += 1
    rows = devices.attach(parsed, "configurations", lambda row: (row["device_id"], row["finding_key"]))
    _upsert(
        connection,
        table,
        list(rows.values()),
        ("device_id", "finding_key"),
        newest_by="last_seen",
        earliest=("first_seen",),
    )
    report.written["configurations"] += len(rows)


def _ingest_risk(
    connection: Connection, sensor_id: int, records: Iterable[Any], devices: _Devices, report: IngestReport
) -> None:
    table: Table = DeviceRisk.__table__  # type: ignore[assignment]
    clean = _Cleaner(table, ("priority",), report)
    now = utcnow()
    parsed: list[tuple[str, dict[str, Any]]] = []
    for record in records:
        try:
            if not isinstance(record, Mapping):
                raise _RecordError("not_an_object")
            row = {
                "score": _int(record.get("score"), (0, 100)),
                "exploitability": _float(record.get("exploitability"), 0.0),
                "exposure": _float(record.get("exposure"), 0.0),
                "criticality": _float(record.get("criticality"), 0.0),
                "behaviour": _float(record.get("behaviour"), 0.0),
                "priority": _required(record, "priority"),
                "contributors": _list(record.get("contributors")),
                "updated": now,
            }
            if row["score"] is None:
                raise _RecordError("missing_score")
            parsed.append((_required(record, "device_id"), clean(row)))
        except _RecordError as reason:
            report.skipped["risk"] += 1
            report.weird[f"risk.{reason}"] += 1
    rows = devices.attach(parsed, "risk", lambda row: row["device_id"])
    _upsert(connection, table, list(rows.values()), ("device_id",))
    device_table: Table = Device.__table__  # type: ignore[assignment]
    statement = (
        update(device_table)
        .where(device_table.c.id == bindparam("b_id"))
        .values(risk_score=bindparam("b_score"))
    )
    scores = [{"b_id": device_id, "b_score": row["score"]} for device_id, row in rows.items()]
    for batch in _batches(scores, BATCH):
        connection.execute(statement, list(batch))
    report.written["risk"] += len(rows)


# --- readers of the folder's files -----------------------------------------------------------------


def _json_file(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise IngestError(f"{path} is not valid JSON: {exc}") from None


def _records_of(data: Any, path: Path, names: Sequence[str]) -> list[Any]:
    """The record list of a JSON file: the file itself when it is a list, else its first list key."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for name in names:
            value = data.get(name)
            if isinstance(value, list):
                return value
    raise IngestError(f"{path} holds no record list ({' or '.join(names)})")


def _read_alerts(path: Path, report: IngestReport) -> list[Any]:
    records: list[Any] = []
    try:
        with path.open("rb") as lines:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    records.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    report.skipped["alerts"] += 1
                    report.weird["alerts.bad_json_line"] += 1
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc.strerror or exc}") from None
    return records


def _read_communications(path: Path) -> Iterator[list[dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=50_000):
            yield batch.to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise IngestError(f"cannot read {path}: {exc}") from None


def _folder_records(kind: str, path: Path, report: IngestReport) -> Iterator[list[Any]]:
    if kind == "communications":
        yield from _read_communications(path)
    elif kind == "alerts":
        yield _read_alerts(path, report)
    elif kind == "devices":
        yield _records_of(_json_file(path), path, ("devices",))
    elif kind == "risk":
        yield _records_of(_json_file(path), path, ("devices", "risks", "findings"))
    else:
        yield _records_of(_json_file(path), path, ("findings", kind))


# --- the public entry points ---------------------------------------------------------------------


def _sensor(connection: Connection, sensor: Sensor | str | int) -> tuple[int, str]:
    """``(id, name)`` of the sensor, created by name when it does not exist; its ``last_seen`` is now."""
    table: Table = Sensor.__table__  # type: ignore[assignment]
    now = utcnow()
    if isinstance(sensor, Sensor):
        sensor = sensor.id
    if isinstance(sensor, int):
        row = connection.execute(select(table.c.id, table.c.name).where(table.c.id == sensor)).first()
        if row is None:
            raise IngestError(f"no sensor with id {sensor}")
    else:
        name = sensor.strip()
        if not name or len(name) > 200 or "\x00" in name:
            raise IngestError("a sensor name is 1 to 200 characters without NUL")
        statement = _insert(connection, table).on_conflict_do_nothing(index_elements=["name"])
        connection.execute(statement.values(name=name, created=now))
        row = connection.execute(select(table.c.id, table.c.name).where(table.c.name == name)).first()
        if row is None:  # pragma: no cover - inserted just above
            raise IngestError(f"sensor {name!r} could not be created")
    connection.execute(update(table).where(table.c.id == row[0]).values(last_seen=now))
    return int(row[0]), str(row[1])


def _ingest_kind(
    connection: Connection,
    sensor: tuple[int, str],
    kind: str,
    records: Iterable[Any],
    devices: _Devices,
    report: IngestReport,
) -> None:
    records = _encodable(records, kind, report)
    if kind == "devices":
        _ingest_devices(connection, sensor[0], records, devices, report)
    elif kind == "communications":
        _ingest_communications(connection, sensor[0], records, devices, report)
    elif kind == "alerts":
        _ingest_alerts(connection, sensor, records, devices, report)
    elif kind == "vulnerabilities":
        _ingest_vulnerabilities(connection, sensor[0], records, devices, report)
    elif kind == "configurations":
        _ingest_configurations(connection, sensor[0], records, devices, report)
    elif kind == "risk":
        _ingest_risk(connection, sensor[0], records, devices, report)
    else:
        raise IngestError(f"unknown record kind {kind!r} (one of {', '.join(KINDS)})")


def _encodable(records: Iterable[Any], kind: str, report: IngestReport) -> list[Any]:
    """``records`` with every lone surrogate (``"\\ud800"``: valid JSON, which ``json`` reads into a
    Python string no database driver can encode as UTF-8) replaced by U+FFFD, in keys and values at
    any depth; each record changed is counted (``<kind>.surrogate_replaced``). One orjson pass over
    the batch (~1 µs per record) finds none in the common case: orjson refuses such strings."""
    batch = records if isinstance(records, list) else list(records)
    try:
        orjson.dumps(batch, option=orjson.OPT_NON_STR_KEYS, default=str)
    except TypeError:  # a lone surrogate, or something else orjson cannot write (an integer beyond 64 bits)
        cleaned = [_replace_surrogates(record) for record in batch]
        changed = sum(1 for before, after in zip(batch, cleaned, strict=True) if after is not before)
        if changed:
            report.weird[f"{kind}.surrogate_replaced"] += changed
        return cleaned
    return batch


def _replace_surrogates(value: Any) -> Any:
    """``value`` itself when it holds no lone surrogate, else a copy with each one as U+FFFD."""
    if isinstance(value, str):
        if value.isascii():
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
        return value
    if isinstance(value, Mapping):
        items = [(_replace_surrogates(k), _replace_surrogates(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    if isinstance(value, list | tuple):
        replaced = [_replace_surrogates(v) for v in value]
        return value if all(a is b for a, b in zip(replaced, value, strict=True)) else replaced
    return value


def ingest_folder(db: Database, out_dir: Path | str, sensor_name: str) -> IngestReport:
    """Load an analysis folder into the store as sensor ``sensor_name`` (created when new), atomically.

    ``devices.json``, ``communications.parquet`` and ``alerts.jsonl`` are expected (a missing one is
    an :class:`IngestError` when none of them exists, else skipped and counted); the assessment's
    files are optional.
    """
    folder = Path(out_dir)
    if not folder.is_dir():
        raise IngestError(f"{folder} is not a folder")
    present = {kind: folder / name for kind, name in FILES.items() if (folder / name).is_file()}
    if not any(kind in present for kind in KINDS if kind not in OPTIONAL):
        raise IngestError(
            f"{folder} is not an analysis folder (no devices.json, alerts.jsonl or communications)"
        )
    started = time.perf_counter()
    with COLLECTOR, db.engine.begin() as connection:
        sensor = _sensor(connection, sensor_name)
        report = IngestReport(sensor[1], sensor[0])
        devices = _Devices(connection, sensor[0], report)
        for kind in KINDS:
            path = present.get(kind)
            if path is None:
                if kind not in OPTIONAL:
                    report.weird[f"{FILES[kind]}.missing"] += 1
                continue
            for records in _folder_records(kind, path, report):
                _ingest_kind(connection, sensor, kind, records, devices, report)
    report.seconds = time.perf_counter() - started
    return report


def ingest_records(
    db: Database, sensor: Sensor | str | int, kind: str, records: Iterable[Any]
) -> IngestReport:
    """Upsert one batch of ``kind`` records (the JSON shapes of the folder's files) for ``sensor``
    (a row, its id, or a name, created when new), in one transaction."""
    if kind not in KINDS:
        raise IngestError(f"unknown record kind {kind!r} (one of {', '.join(KINDS)})")
    started = time.perf_counter()
    with COLLECTOR, db.engine.begin() as connection:
        identity = _sensor(connection, sensor)
        report = IngestReport(identity[1], identity[0])
        _ingest_kind(connection, identity, kind, records, _Devices(connection, identity[0], report), report)
    report.seconds = time.perf_counter() - started
    return report
