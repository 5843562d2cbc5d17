"""Writes protocol events to ``DIR/events/<log>.parquet``, one file per event log, in bounded batches."""

from __future__ import annotations

import dataclasses
from collections import Counter
from operator import attrgetter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fieldward.protocols.base import Event, event_schema

FLUSH_ROWS = 50_000


class EventWriter:
    """Collects events per log and streams them to Parquet (or only counts them when ``folder`` is None)."""

    def __init__(self, folder: Path | None, flush_rows: int = FLUSH_ROWS) -> None:
        self.folder = folder
        self.flush_rows = flush_rows
        self.counts: Counter[str] = Counter()
        self._pending: dict[type[Event], list[Event]] = {}
        self._writers: dict[str, tuple[pq.ParquetWriter, pa.Schema]] = {}
        self._schemas: dict[type[Event], pa.Schema] = {}
        self.keep: list[Event] | None = None
        """Set to a list to also keep every event in memory (tests, small captures)."""

    def __call__(self, event: Event) -> None:
        self.counts[event.log] += 1
        if self.keep is not None:
            self.keep.append(event)
        if self.folder is None:
            return
        pending = self._pending.setdefault(type(event), [])
        pending.append(event)
        if len(pending) >= self.flush_rows:
            self._flush(type(event))

    def _flush(self, event_type: type[Event]) -> None:
        events = self._pending.pop(event_type, [])
        if not events or self.folder is None:
            return
        schema = self._schemas.get(event_type)
        if schema is None:
            schema = self._schemas[event_type] = event_schema(event_type)
        names = [f.name for f in dataclasses.fields(event_type)]
        # One C-level attrgetter per event, then a transpose: rows -> columns.
        rows = (
            map(attrgetter(*names), events) if len(names) > 1 else ((getattr(e, names[0]),) for e in events)
        )
        columns = dict(zip(names, map(list, zip(*rows, strict=True)), strict=True))
        table = pa.Table.from_pydict(columns, schema=schema)
        log = event_type.log
        if log not in self._writers:
            self.folder.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(self.folder / f"{log}.parquet", schema, compression="zstd")
            self._writers[log] = (writer, schema)
        writer, first_schema = self._writers[log]
        if schema != first_schema:
            raise TypeError(f"two event types write events/{log}.parquet with different schemas")
        writer.write_table(table)

    def close(self) -> None:
        for event_type in list(self._pending):
            self._flush(event_type)
        for writer, _ in self._writers.values():
            writer.close()
        self._writers.clear()
