"""Writes protocol events to ``DIR/events/<log>.parquet``, one file per event log, in bounded batches."""

from __future__ import annotations

import dataclasses
from collections import Counter
from operator import attrgetter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fieldward.protocols.base import Event, event_schema, events_of_table

FLUSH_ROWS = 50_000


def _parquet_options(schema: pa.Schema) -> dict[str, object]:
    """Writer options of an events file: zstd; dictionary encoding only for text columns (addresses,
    names: few distinct values), min/max statistics only for the columns queries filter on (not for
    binary payloads or lists, where they cost time and say nothing). Same data, written faster."""
    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    scalar = [f.name for f in schema if not (pa.types.is_binary(f.type) or pa.types.is_list(f.type))]
    return {"compression": "zstd", "use_dictionary": text, "write_statistics": scalar}


class EventWriter:
    """Collects events per log and streams them to Parquet (or only counts them when ``folder`` is None).

    Events arrive one at a time (``writer(event)``) or, from columnar fast paths, as whole Arrow tables
    (:meth:`write_table`); the rows of one event type keep their arrival order either way.
    """

    def __init__(self, folder: Path | None, flush_rows: int = FLUSH_ROWS) -> None:
        self.folder = folder
        self.flush_rows = flush_rows
        self._written: Counter[str] = Counter()
        """Events per log already flushed (or dropped when there is no folder)."""
        self._pending: dict[type[Event], list[Event]] = {}
        self._tables: dict[type[Event], list[pa.Table]] = {}
        """Per event type: tables waiting to be written, older than the events in ``_pending``."""
        self._table_rows: dict[type[Event], int] = {}
        self._writers: dict[str, tuple[pq.ParquetWriter, pa.Schema]] = {}
        self._schemas: dict[type[Event], pa.Schema] = {}
        self.keep: list[Event] | None = None
        """Set to a list to also keep every event in memory (tests, small captures)."""

    @property
    def counts(self) -> Counter[str]:
        """Events per log so far."""
        counts = Counter(self._written)
        for event_type, rows in self._table_rows.items():
            counts[event_type.log] += rows
        for event_type, events in self._pending.items():
            counts[event_type.log] += len(events)
        return +counts

    def __call__(self, event: Event) -> None:
        if self.keep is not None:
            self.keep.append(event)
        event_type = type(event)
        pending = self._pending.get(event_type)
        if pending is None:
            pending = self._pending[event_type] = []
        pending.append(event)
        if len(pending) >= self.flush_rows:
            self._flush(event_type)

    def write_table(self, event_type: type[Event], table: pa.Table) -> None:
        """Append events given as an Arrow table with the event type's schema (``ts`` in ns, UTC)."""
        rows = table.num_rows
        if rows == 0:
            return
        if self.keep is not None:
            self.keep.extend(events_of_table(event_type, table))
        if self.folder is None:
            self._written[event_type.log] += rows
            return
        schema = self._schema(event_type)
        if table.schema != schema:
            table = table.cast(schema)
        tables = self._tables.setdefault(event_type, [])
        pending = self._pending.pop(event_type, None)
        if pending:
            tables.append(self._to_table(event_type, pending))
        tables.append(table)
        total = self._table_rows.get(event_type, 0) + rows + (len(pending) if pending else 0)
        self._table_rows[event_type] = total
        if total >= self.flush_rows:
            self._flush(event_type)

    def _schema(self, event_type: type[Event]) -> pa.Schema:
        schema = self._schemas.get(event_type)
        if schema is None:
            schema = self._schemas[event_type] = event_schema(event_type)
        return schema

    def _to_table(self, event_type: type[Event], events: list[Event]) -> pa.Table:
        schema = self._schema(event_type)
        names = [f.name for f in dataclasses.fields(event_type)]
        # One C-level attrgetter per event, then a transpose: rows -> columns.
        rows = (
            map(attrgetter(*names), events) if len(names) > 1 else ((getattr(e, names[0]),) for e in events)
        )
        columns = dict(zip(names, map(list, zip(*rows, strict=True)), strict=True))
        return pa.Table.from_pydict(columns, schema=schema)

    def _flush(self, event_type: type[Event]) -> None:
        events = self._pending.pop(event_type, [])
        tables = self._tables.pop(event_type, [])
        self._table_rows.pop(event_type, None)
        self._written[event_type.log] += len(events) + sum(t.num_rows for t in tables)
        if self.folder is None:
            return
        if events:
            tables.append(self._to_table(event_type, events))
        if not tables:
            return
        schema = self._schema(event_type)
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        log = event_type.log
        if log not in self._writers:
            self.folder.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(self.folder / f"{log}.parquet", schema, **_parquet_options(schema))
            self._writers[log] = (writer, schema)
        writer, first_schema = self._writers[log]
        if schema != first_schema:
            raise TypeError(f"two event types write events/{log}.parquet with different schemas")
        writer.write_table(table)

    def close(self) -> None:
        for event_type in list({**self._tables, **self._pending}):
            self._flush(event_type)
        for writer, _ in self._writers.values():
            writer.close()
        self._writers.clear()
