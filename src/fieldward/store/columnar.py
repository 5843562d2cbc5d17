"""Columnar store of the console: flows and protocol events as day-partitioned Parquet, read with DuckDB.

The relational store (:mod:`fieldward.store.models`) keeps what analysts curate (devices, alerts,
findings); the high-volume facts stay columnar, the way ``fieldward analyze`` wrote them
(``flows.parquet``, ``events/<log>.parquet``), gathered from every sensor into one hive-partitioned
dataset under ``root``::

    root/flows/day=YYYY-MM-DD/sensor=<name>/<batch_id>.parquet
    root/events/<log>/day=YYYY-MM-DD/sensor=<name>/<batch_id>.parquet

- A row's day is the UTC date of its time column: ``first_ts`` for flows (a flow belongs to the day,
  and to the query window, its first packet falls in, as in Zeek's ``conn.log``), ``ts`` for events.
- Files are zstd-compressed, sorted by time, written to a temporary name, fsynced and renamed, so a
  reader never sees half a file. Re-adding a batch (same sensor and ``batch_id``) replaces its files,
  including those of days the new version no longer has: a batch is never counted twice.
- Sensor names become path components only through :func:`sensor_key` (a name that is not a plain
  ``[A-Za-z0-9._-]`` word is slugged and suffixed with a hash of the original), log names and batch ids
  are checked against strict patterns: nothing a sensor sends can point outside ``root``.
- Queries run on a connection of their own (a cursor of one in-memory DuckDB database per store, so
  concurrent calls from several threads are safe), locked down when the database opens: external
  access disabled except for ``root``, no extension autoloading, configuration locked. SQL text is
  static apart from whitelisted identifiers (checked against patterns and the dataset's own columns,
  then quoted); every value is a bound parameter.
- Partition pruning happens twice: only the day (and sensor) directories a query can match are listed
  and handed to ``read_parquet`` (so other days' footers are never opened, not even for the
  ``union_by_name`` schema merge), and the same bounds are repeated on the ``day`` partition column.
- Batches written by sensors of different versions may differ in columns (schema drift):
  ``union_by_name`` fills a column that a file lacks with nulls.
- ``retention_days`` bounds how long data stays: :meth:`ColumnarStore.apply_retention` removes every
  day partition whose rows are all older than that.

Writers serialise on a lock per store object; several processes writing one root must coordinate
themselves (the console has one ingest process).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
import shutil
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fieldward.decode.flows import FLOW_SCHEMA
from fieldward.errors import FieldWardError

__all__ = [
    "FLOW_GROUP_COLUMNS",
    "KINDS",
    "AddReport",
    "ColumnarStore",
    "ColumnarStoreError",
    "RemovedPartition",
    "RetentionReport",
    "sensor_key",
]

Kind = Literal["flows", "events"]
KINDS: Final[tuple[Kind, ...]] = ("flows", "events")
TIME_COLUMN: Final[Mapping[str, str]] = {"flows": "first_ts", "events": "ts"}

FLOW_GROUP_COLUMNS: Final[frozenset[str]] = frozenset(
    {
        "sensor",
        "day",
        "proto",
        "service",
        "ip_version",
        "orig_ip",
        "resp_ip",
        "resp_port",
        "orig_mac",
        "resp_mac",
        "vlan",
        "conn_state",
        "end_reason",
    }
)
"""Columns :meth:`ColumnarStore.flow_summary` may group by."""

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 100_000
_NS_PER_DAY: Final = 86_400 * 10**9
_TS_TYPE: Final = pa.timestamp("ns", tz="UTC")

_SAFE_SENSOR: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LOG_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
_BATCH_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_DAY_DIR: Final = re.compile(r"day=(\d{4}-\d{2}-\d{2})")

# Names the query layer adds to every row (hive partitions, read_parquet options): a data column
# with one of them is renamed on write (``<name>_field``) and counted.
_RESERVED: Final = frozenset({"day", "sensor", "file_row_number", "__fw_file"})
# Scalar DuckDB types an event filter may compare (lists, structs and blobs cannot be filtered).
_FILTERABLE_TYPES: Final = re.compile(
    r"(VARCHAR|BOOLEAN|(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?)|FLOAT|DOUBLE|DATE|TIMESTAMP.*|DECIMAL.*)"
)
_SCAN: Final = (
    "read_parquet($files, hive_partitioning = true, union_by_name = true, "
    "hive_types = {'day': DATE, 'sensor': VARCHAR}, hive_types_autocast = false, "
    "filename = '__fw_file', file_row_number = true)"
)

FilterValue = str | int | float | bool | None
"""A value an event filter compares with: one scalar, or a list of them (any of)."""


class ColumnarStoreError(FieldWardError):
    """A request the columnar store refuses (bad name, unknown column, not an analysis folder)."""


@dataclass
class AddReport:
    """What :meth:`ColumnarStore.add_table` / :meth:`ColumnarStore.add_folder` wrote."""

    sensor: str
    """The sensor's partition key (:func:`sensor_key` of the name given)."""
    batch_id: str
    rows: dict[str, int] = field(default_factory=dict)
    """Rows written by table: ``"flows"`` or ``"events/<log>"``."""
    days: set[dt.date] = field(default_factory=set)
    files_written: int = 0
    files_removed: int = 0
    """Files of an earlier version of the same batch that the new version did not overwrite."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Rows or files left out, by reason (``null_timestamp``, ``unreadable_file``, ``bad_log_name``...)."""
    weird: Counter[str] = field(default_factory=Counter)
    """Oddities that did not lose data (``renamed_reserved_column:<name>``)."""

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


@dataclass(frozen=True)
class RemovedPartition:
    """One day partition that retention deleted."""

    kind: Kind
    log: str | None
    day: dt.date
    files: int
    bytes: int


@dataclass(frozen=True)
class RetentionReport:
    """Result of :meth:`ColumnarStore.apply_retention`: the oldest day kept and what was removed."""

    keep_from: dt.date | None
    removed: tuple[RemovedPartition, ...]


def sensor_key(name: str) -> str:
    """The path component (and ``sensor`` partition value) that stands for sensor ``name``.

    A plain name (letters, digits, ``.``, ``_``, ``-``; starting with a letter or digit; at most 64
    characters) is kept as it is. Any other name is slugged and suffixed with ``~`` and 12 hex digits
    of its SHA-256, so ``"../x"`` becomes ``"x~<hash>"``: distinct names stay distinct, and no key can be
    ``.``, ``..`` or contain a separator.
    """
    if not isinstance(name, str) or not name:
        raise ColumnarStoreError("a sensor name must be a non-empty string")
    if _SAFE_SENSOR.fullmatch(name):
        return name
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")[:40] or "sensor"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slug}~{digest}"


def _check_log(log: str) -> str:
    if not isinstance(log, str) or not _LOG_NAME.fullmatch(log):
        raise ColumnarStoreError(
            f"invalid event log name {log!r} (expected [a-z0-9_], at most 64 characters)"
        )
    return log


def _check_batch(batch_id: str) -> str:
    if not isinstance(batch_id, str) or not _BATCH_ID.fullmatch(batch_id):
        raise ColumnarStoreError(
            f"invalid batch id {batch_id!r} (expected [A-Za-z0-9._-], at most 128 characters)"
        )
    return batch_id


def _utc(value: dt.datetime | None, name: str) -> dt.datetime | None:
    """An aware UTC datetime; a naive one is taken as UTC."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise ColumnarStoreError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _quote(identifier: str) -> str:
    # Only ever called on names that passed _IDENTIFIER, which excludes quotes.
    return '"' + identifier + '"'


def _page(limit: int, offset: int) -> tuple[int, int]:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
        raise ColumnarStoreError(f"limit must be an integer from 0 to {MAX_LIMIT}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ColumnarStoreError("offset must be a non-negative integer")
    return limit, offset


def _normalise_timestamps(table: pa.Table) -> pa.Table:
    """DuckDB returns timezone ``Etc/UTC``; give callers the ``UTC`` the sensor wrote."""
    for index, column in enumerate(table.schema):
        if pa.types.is_timestamp(column.type) and column.type.tz is not None and column.type.tz != "UTC":
            unit = column.type.unit
            target = pa.timestamp(unit, tz="UTC")
            table = table.set_column(index, column.name, table.column(index).cast(target))
    return table


def _flow_fields() -> list[pa.Field]:
    """The documented columns of ``flows.parquet`` (docs/flows.md): the flow table's plus ``service``."""
    return [*FLOW_SCHEMA, pa.field("service", pa.string())]


def _dir_size(path: Path) -> tuple[int, int]:
    files = size = 0
    for item in path.rglob("*"):
        if item.is_file():
            files += 1
            size += item.stat().st_size
    return files, size


class ColumnarStore:
    """Flows and protocol events of every sensor, partitioned by day, queried with DuckDB."""

    def __init__(self, root: Path, retention_days: int | None = None, *, threads: int = 2) -> None:
        if retention_days is not None and (
            isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 1
        ):
            raise ColumnarStoreError("retention_days must be a positive integer or None")
        self.root = Path(root).resolve()
        self.retention_days = retention_days
        self._threads = max(1, int(threads))
        self._lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._db: duckdb.DuckDBPyConnection | None = None
        (self.root / "flows").mkdir(parents=True, exist_ok=True)
        (self.root / "events").mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ writing

    def add_table(
        self, kind: Kind, log: str | None, table: pa.Table, sensor: str, batch_id: str
    ) -> AddReport:
        """Write one table of one batch (flows, or the events of ``log``), replacing an earlier version."""
        report = AddReport(sensor=sensor_key(sensor), batch_id=_check_batch(batch_id))
        base = self._base(kind, log)
        with self._lock:
            old = set(self._batch_files(base, report.sensor, report.batch_id))
            written = self._write(kind, base, table, report)
            report.files_removed += self._unlink(old - written)
        return report

    def add_folder(self, out_dir: Path, sensor: str, batch_id: str | None = None) -> AddReport:
        """Add what ``fieldward analyze`` wrote in ``out_dir``: ``flows.parquet`` and ``events/*.parquet``.

        ``batch_id`` defaults to a digest of those files' contents, so adding the same folder again
        replaces it. Every file of an earlier version of the batch that the new one does not rewrite
        (a log that disappeared, a day no longer covered) is removed. An unreadable file or a file
        whose name is not a log name is skipped and counted.
        """
        out_dir = Path(out_dir)
        flows_file = out_dir / "flows.parquet"
        events_dir = out_dir / "events"
        event_files = sorted(events_dir.glob("*.parquet")) if events_dir.is_dir() else []
        if not flows_file.is_file() and not events_dir.is_dir():
            raise ColumnarStoreError(f"{out_dir} is not an analysis folder (no flows.parquet, no events/)")
        sources: list[tuple[Kind, str | None, Path]] = []
        if flows_file.is_file():
            sources.append(("flows", None, flows_file))
        sources.extend(("events", path.stem, path) for path in event_files)
        if batch_id is None:
            batch_id = self._folder_digest(out_dir, [path for _, _, path in sources])
        report = AddReport(sensor=sensor_key(sensor), batch_id=_check_batch(batch_id))
        with self._lock:
            old = set(self._batch_files(self.root / "flows", report.sensor, report.batch_id))
            old |= set(self._batch_files(self.root / "events" / "*", report.sensor, report.batch_id))
            written: set[Path] = set()
            for kind, log, path in sources:
                if log is not None and not _LOG_NAME.fullmatch(log):
                    report.skipped["bad_log_name"] += 1
                    continue
                try:
                    table = pq.read_table(path)
                except (OSError, pa.ArrowException):
                    report.skipped["unreadable_file"] += 1
                    continue
                try:
                    written |= self._write(kind, self._base(kind, log), table, report)
                except ColumnarStoreError:
                    report.skipped["no_time_column"] += 1
            report.files_removed += self._unlink(old - written)
        return report

    @staticmethod
    def _folder_digest(out_dir: Path, paths: Sequence[Path]) -> str:
        digest = hashlib.sha256()
        for path in paths:
            digest.update(str(path.relative_to(out_dir)).encode() + b"\0")
            with path.open("rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
        return "folder-" + digest.hexdigest()[:32]

    def _base(self, kind: Kind, log: str | None) -> Path:
        if kind == "flows":
            if log is not None:
                raise ColumnarStoreError("flows have no log name")
            return self.root / "flows"
        if kind == "events":
            if log is None:
                raise ColumnarStoreError("events need a log name")
            return self.root / "events" / _check_log(log)
        raise ColumnarStoreError(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")

    @staticmethod
    def _batch_files(base: Path, key: str, batch_id: str) -> list[Path]:
        # key and batch_id hold no glob metacharacters (checked patterns).
        pattern = f"day=*/sensor={key}/{batch_id}.parquet"
        if "*" in base.name:
            return sorted(base.parent.glob(f"{base.name}/{pattern}"))
        return sorted(base.glob(pattern))

    @staticmethod
    def _unlink(paths: Iterable[Path]) -> int:
        removed = 0
        for path in paths:
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                continue
            for parent in (path.parent, path.parent.parent):  # sensor=, then day= when empty
                try:
                    parent.rmdir()
                except OSError:
                    break
        return removed

    def _write(self, kind: Kind, base: Path, table: pa.Table, report: AddReport) -> set[Path]:
        if not isinstance(table, pa.Table):
            raise ColumnarStoreError("expected a pyarrow.Table")
        time_column = TIME_COLUMN[kind]
        if time_column not in table.column_names:
            raise ColumnarStoreError(f"{kind} table has no {time_column!r} column")
        times = table.column(time_column)
        if not pa.types.is_timestamp(times.type):
            raise ColumnarStoreError(f"{time_column!r} must be a timestamp column, not {times.type}")
        times = times.cast(_TS_TYPE)  # a naive timestamp is taken as UTC
        table = table.set_column(table.column_names.index(time_column), time_column, times)
        renames = []
        for name in table.column_names:
            if name in _RESERVED:
                report.weird[f"renamed_reserved_column:{name}"] += 1
                renames.append(f"{name}_field")
            else:
                renames.append(name)
        table = table.rename_columns(renames)
        if kind == "flows":
            # Every flows file carries every documented column (an older sensor's lack as nulls), so
            # the queries that name them bind whatever mix of files a window selects.
            for column in _flow_fields():
                if column.name not in table.column_names:
                    report.weird[f"missing_column:{column.name}"] += 1
                    table = table.append_column(column.name, pa.nulls(len(table), column.type))

        valid = pc.is_valid(times)
        nulls = len(table) - pc.sum(valid).as_py() if len(table) else 0
        if nulls:
            report.skipped["null_timestamp"] += nulls
            table = table.filter(valid)
            times = table.column(time_column)
        label = "flows" if kind == "flows" else f"events/{base.name}"
        if len(table) == 0:
            report.rows.setdefault(label, 0)
            return set()
        ns = times.cast(pa.int64()).to_numpy()
        days = np.floor_divide(ns, _NS_PER_DAY)
        table = table.append_column("__fw_day", pa.array(days))
        table = table.sort_by([("__fw_day", "ascending"), (time_column, "ascending")])
        days = table.column("__fw_day").to_numpy()
        table = table.drop_columns(["__fw_day"])
        # Rows are sorted by day: one contiguous slice per day.
        bounds = np.flatnonzero(np.diff(days)) + 1
        starts = np.concatenate(([0], bounds))
        ends = np.concatenate((bounds, [len(days)]))
        written: set[Path] = set()
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            day = dt.date(1970, 1, 1) + dt.timedelta(days=int(days[start]))
            target = (
                base / f"day={day.isoformat()}" / f"sensor={report.sensor}" / f"{report.batch_id}.parquet"
            )
            self._atomic_write(table.slice(start, end - start), target)
            written.add(target)
            report.days.add(day)
            report.files_written += 1
        report.rows[label] = report.rows.get(label, 0) + len(table)
        return written

    @staticmethod
    def _atomic_write(table: pa.Table, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f".{target.stem}.{uuid.uuid4().hex}.tmp"
        try:
            with temporary.open("wb") as handle:
                pq.write_table(table, handle, compression="zstd")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    # ---------------------------------------------------------------- retention

    def apply_retention(self, now: dt.datetime | None = None) -> RetentionReport:
        """Remove every day partition whose rows are all older than ``retention_days`` before ``now``.

        Day D is removed when D + 1 day <= ``now`` - ``retention_days``; ``now`` defaults to the current
        time. Without a retention setting nothing is removed.
        """
        if self.retention_days is None:
            return RetentionReport(keep_from=None, removed=())
        moment = _utc(now, "now") or dt.datetime.now(dt.UTC)
        keep_from = (moment - dt.timedelta(days=self.retention_days)).date()
        removed: list[RemovedPartition] = []
        with self._lock:
            for kind, log, base in self._bases():
                for day, directory in self._day_dirs(base):
                    if day >= keep_from:
                        continue
                    files, size = _dir_size(directory)
                    # Rename first so readers listing the tree never see half a partition.
                    trash = base / f".trash-{uuid.uuid4().hex}"
                    os.replace(directory, trash)
                    shutil.rmtree(trash, ignore_errors=True)
                    removed.append(RemovedPartition(kind, log, day, files, size))
        return RetentionReport(keep_from=keep_from, removed=tuple(removed))

    def _bases(self) -> list[tuple[Kind, str | None, Path]]:
        bases: list[tuple[Kind, str | None, Path]] = [("flows", None, self.root / "flows")]
        for entry in sorted((self.root / "events").iterdir()):
            if entry.is_dir() and _LOG_NAME.fullmatch(entry.name):
                bases.append(("events", entry.name, entry))
        return bases

    @staticmethod
    def _day_dirs(base: Path) -> list[tuple[dt.date, Path]]:
        days: list[tuple[dt.date, Path]] = []
        if not base.is_dir():
            return days
        for entry in base.iterdir():
            match = _DAY_DIR.fullmatch(entry.name)
            if match is None or not entry.is_dir():
                continue
            try:
                days.append((dt.date.fromisoformat(match.group(1)), entry))
            except ValueError:
                continue
        return sorted(days)

    # ------------------------------------------------------------------ reading

    def event_logs(self) -> list[str]:
        """Names of the event logs that hold at least one file."""
        return [
            log
            for kind, log, base in self._bases()
            if kind == "events" and log is not None and any(base.glob("day=*/sensor=*/*.parquet"))
        ]

    def files(
        self,
        kind: Kind,
        log: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        sensors: Sequence[str] | None = None,
    ) -> list[Path]:
        """The Parquet files a query over ``[since, until)`` (and ``sensors``) has to read: the pruning."""
        base = self._base(kind, log)
        since, until = _utc(since, "since"), _utc(until, "until")
        first = since.date() if since is not None else None
        last = (until - dt.timedelta(microseconds=1)).date() if until is not None else None
        keys = None if sensors is None else {sensor_key(name) for name in sensors}
        found: list[Path] = []
        for day, directory in self._day_dirs(base):
            if (first is not None and day < first) or (last is not None and day > last):
                continue
            for sensor_dir in sorted(directory.iterdir()):
                if not sensor_dir.name.startswith("sensor=") or not sensor_dir.is_dir():
                    continue
                if keys is not None and sensor_dir.name.removeprefix("sensor=") not in keys:
                    continue
                found.extend(sorted(sensor_dir.glob("*.parquet")))
        return found

    def flows(
        self,
        device_ips: Sequence[str] | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        protocol: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
        *,
        sensors: Sequence[str] | None = None,
    ) -> pa.Table:
        """Flows that started in ``[since, until)``, oldest first, with ``day`` and ``sensor`` columns.

        ``device_ips``: flows with any of these addresses on either side. ``protocol``: the service a
        dissector recognised (``modbus``) or the transport (``tcp``, ``udp``, ``icmp``).
        """
        limit, offset = _page(limit, offset)
        where, params = self._time_bounds("first_ts", since, until)
        if device_ips is not None:
            ips = self._ips(device_ips)
            if ips:
                where.append("(list_contains($ips, orig_ip) OR list_contains($ips, resp_ip))")
                params["ips"] = ips
            else:
                where.append("false")
        if protocol is not None:
            if not isinstance(protocol, str):
                raise ColumnarStoreError("protocol must be a string")
            where.append("(service = $protocol OR proto = $protocol)")
            params["protocol"] = protocol
        self._sensor_filter(sensors, where, params)
        files = self.files("flows", None, since, until, sensors)
        if not files:
            return self._empty("flows", None)
        order = "first_ts, sensor, __fw_file, file_row_number"
        return self._select(files, where, params, order, limit, offset)

    def events(
        self,
        log: str,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        filters: Mapping[str, FilterValue | Sequence[FilterValue]] | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
        *,
        sensors: Sequence[str] | None = None,
    ) -> pa.Table:
        """Events of ``log`` in ``[since, until)``, oldest first.

        ``filters`` maps a column of the log (any scalar column present in the selected files, e.g.
        ``orig_h``, ``unit``, ``func``) to a value (equality; ``None`` means null) or a list of values
        (any of them). An unknown or non-scalar column is a :class:`ColumnarStoreError`.
        """
        _check_log(log)
        limit, offset = _page(limit, offset)
        where, params = self._time_bounds("ts", since, until)
        self._sensor_filter(sensors, where, params)
        files = self.files("events", log, since, until, sensors)
        if not files:
            if filters:
                for column in filters:
                    if not isinstance(column, str) or not _IDENTIFIER.fullmatch(column):
                        raise ColumnarStoreError(f"invalid filter column {column!r}")
            return self._empty("events", log)
        if filters:
            columns = self._columns(files)
            for index, (column, value) in enumerate(filters.items()):
                where.append(self._filter_clause(column, value, columns, f"f{index}", params))
        order = "ts, sensor, __fw_file, file_row_number"
        return self._select(files, where, params, order, limit, offset)

    def flow_summary(
        self,
        group_by: Sequence[str],
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        *,
        sensors: Sequence[str] | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> pa.Table:
        """Flows aggregated by ``group_by`` (columns of :data:`FLOW_GROUP_COLUMNS`), most bytes first.

        Columns: the group columns, ``flows``, ``packets``, ``bytes`` (both directions, IP layer),
        ``first_ts`` (earliest start) and ``last_ts`` (latest end).
        """
        limit, _ = _page(limit, 0)
        if isinstance(group_by, str) or not group_by:
            raise ColumnarStoreError("group_by must be a non-empty list of column names")
        for column in group_by:
            if column not in FLOW_GROUP_COLUMNS:
                allowed = ", ".join(sorted(FLOW_GROUP_COLUMNS))
                raise ColumnarStoreError(f"cannot group flows by {column!r} (allowed: {allowed})")
        groups = list(dict.fromkeys(group_by))
        where, params = self._time_bounds("first_ts", since, until)
        self._sensor_filter(sensors, where, params)
        files = self.files("flows", None, since, until, sensors)
        keys = ", ".join(_quote(column) for column in groups)
        aggregates = (
            "count(*)::BIGINT AS flows, "
            "sum(orig_pkts + resp_pkts)::BIGINT AS packets, "
            "sum(orig_bytes + resp_bytes)::BIGINT AS bytes, "
            "min(first_ts) AS first_ts, max(last_ts) AS last_ts"
        )
        if not files:
            flow_fields = {name: self._empty("flows", None).schema.field(name) for name in groups}
            schema = pa.schema(
                [flow_fields[name] for name in groups]
                + [("flows", pa.int64()), ("packets", pa.int64()), ("bytes", pa.int64())]
                + [("first_ts", _TS_TYPE), ("last_ts", _TS_TYPE)]
            )
            return pa.Table.from_batches([], schema=schema)
        # Identifiers from FLOW_GROUP_COLUMNS only, conditions are static text; values are parameters.
        sql = (
            f"SELECT {keys}, {aggregates} FROM {_SCAN} WHERE {' AND '.join(where) or 'true'} "  # noqa: S608
            f"GROUP BY ALL ORDER BY bytes DESC, {keys} LIMIT $limit"
        )
        params.update(files=[str(path) for path in files], limit=limit)
        return self._run(sql, params)

    # ------------------------------------------------------------ query helpers

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """A new connection (cursor) of the store's locked-down in-memory DuckDB: one per query.

        Opening a DuckDB database costs about 25 ms, a cursor microseconds; cursors are independent
        connections to the same database, safe to use from one thread each. The database holds no
        tables: external access is off except for ``root``, the settings are locked, so a cursor can
        only read the store.
        """
        with self._db_lock:
            if self._db is None:
                db = duckdb.connect(
                    ":memory:",
                    config={
                        "threads": self._threads,
                        "autoinstall_known_extensions": False,
                        "autoload_known_extensions": False,
                    },
                )
                try:
                    db.execute("SET allowed_directories = $dirs", {"dirs": [str(self.root) + os.sep]})
                    db.execute("SET enable_external_access = false")
                    db.execute("SET lock_configuration = true")
                except BaseException:
                    db.close()
                    raise
                self._db = db
            return self._db.cursor()

    def close(self) -> None:
        """Close the DuckDB database (a later query opens a new one)."""
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> ColumnarStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, sql: str, params: dict[str, Any]) -> pa.Table:
        try:
            with self._connect() as con:
                return _normalise_timestamps(con.sql(sql, params=params).to_arrow_table())
        except duckdb.Error as error:
            raise ColumnarStoreError(f"columnar query failed: {error}") from error

    def _select(
        self, files: list[Path], where: list[str], params: dict[str, Any], order: str, limit: int, offset: int
    ) -> pa.Table:
        condition = " AND ".join(where) if where else "true"
        # ``where`` holds static text and checked, quoted identifiers; values are parameters.
        sql = (
            f"SELECT * EXCLUDE (__fw_file, file_row_number) FROM {_SCAN} WHERE {condition} "  # noqa: S608
            f"ORDER BY {order} LIMIT $limit OFFSET $offset"
        )
        params.update(files=[str(path) for path in files], limit=limit, offset=offset)
        return self._run(sql, params)

    @staticmethod
    def _time_bounds(
        column: str, since: dt.datetime | None, until: dt.datetime | None
    ) -> tuple[list[str], dict[str, Any]]:
        where: list[str] = []
        params: dict[str, Any] = {}
        since, until = _utc(since, "since"), _utc(until, "until")
        if since is not None:
            where += [f"{column} >= $since", "day >= $since_day"]
            params.update(since=since, since_day=since.date())
        if until is not None:
            where += [f"{column} < $until", "day <= $until_day"]
            params.update(until=until, until_day=(until - dt.timedelta(microseconds=1)).date())
        return where, params

    @staticmethod
    def _sensor_filter(sensors: Sequence[str] | None, where: list[str], params: dict[str, Any]) -> None:
        if sensors is None:
            return
        if isinstance(sensors, str):
            raise ColumnarStoreError("sensors must be a list of names")
        where.append("list_contains($sensors, sensor)")
        params["sensors"] = [sensor_key(name) for name in sensors]

    @staticmethod
    def _ips(device_ips: Sequence[str]) -> list[str]:
        if isinstance(device_ips, str):
            raise ColumnarStoreError("device_ips must be a list of addresses")
        ips: list[str] = []
        for value in device_ips:
            try:
                address = ipaddress.ip_address(value)
            except ValueError:
                raise ColumnarStoreError(f"not an IP address: {value!r}") from None
            # flows.parquet spells IPv4 dotted and IPv6 compressed (what ipaddress prints).
            ips.append(str(address))
        return ips

    def _columns(self, files: list[Path]) -> dict[str, str]:
        sql = f"DESCRIBE SELECT * FROM {_SCAN}"  # noqa: S608 (static text)
        try:
            with self._connect() as con:
                rows = con.sql(sql, params={"files": [str(path) for path in files]}).fetchall()
        except duckdb.Error as error:
            raise ColumnarStoreError(f"columnar query failed: {error}") from error
        return {str(row[0]): str(row[1]) for row in rows}

    @staticmethod
    def _filter_clause(
        column: str,
        value: FilterValue | Sequence[FilterValue],
        columns: Mapping[str, str],
        name: str,
        params: dict[str, Any],
    ) -> str:
        if (
            not isinstance(column, str)
            or not _IDENTIFIER.fullmatch(column)
            or column not in columns
            or column in {"__fw_file", "file_row_number"}
        ):
            raise ColumnarStoreError(f"unknown filter column {column!r}")
        if not _FILTERABLE_TYPES.fullmatch(columns[column]):
            raise ColumnarStoreError(f"cannot filter on column {column!r} of type {columns[column]}")
        quoted = _quote(column)
        scalars = (str, int, float, bool)
        if value is None:
            return f"{quoted} IS NULL"
        if isinstance(value, scalars):
            params[name] = value
            return f"{quoted} = ${name}"
        if isinstance(value, Sequence) and all(isinstance(item, scalars) for item in value):
            values = list(value)
            if not values:
                return "false"
            kinds = {type(item) for item in values}
            if len(kinds) > 1 and not kinds <= {int, float}:
                raise ColumnarStoreError(f"filter on {column!r} mixes value types")
            params[name] = values
            return f"list_contains(${name}, {quoted})"
        raise ColumnarStoreError(f"unsupported filter value for {column!r}: {type(value).__name__}")

    def _empty(self, kind: Kind, log: str | None) -> pa.Table:
        """An empty answer: the flow schema (plus partitions) for flows, the partitions only for events."""
        fields: list[pa.Field] = []
        if kind == "flows":
            fields.extend(_flow_fields())
        else:
            fields.append(pa.field("ts", _TS_TYPE))
        fields += [pa.field("day", pa.date32()), pa.field("sensor", pa.string())]
        return pa.Table.from_batches([], schema=pa.schema(fields))
