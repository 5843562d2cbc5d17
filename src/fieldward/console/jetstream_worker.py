"""Console ingest workers for the JetStream transport (``fieldward ingest-worker``).

Every worker binds to the same durable pull consumer of the ingest stream, so JetStream hands each
message to one worker at a time and more workers ingest more batches in parallel. One message is one
sensor batch (:mod:`fieldward.console.jetstream`); a worker applies it to the store and acknowledges
it only after the database commit:

- record batches go through :func:`fieldward.store.ingest.ingest_records` (upserts on natural keys),
  flows and events through the columnar store (a batch written again replaces itself), evidence
  captures to the evidence folder; the batch id is then recorded in ``ingest_batches``, exactly as
  the HTTPS push does, and a batch found there is acknowledged as a duplicate without touching the
  store. A worker killed between the commit and the acknowledgement makes JetStream redeliver the
  batch after ``ack_wait``: it is either found in ``ingest_batches`` or re-applied harmlessly;
- a message that can never be applied (bad subject, unknown kind, undecodable body, unknown sensor)
  is counted, recorded whole in ``transport_dead_letters`` and terminated; it never stops the worker;
- when the database is unreachable the message is negatively acknowledged with a delay and tried
  again (nothing is acknowledged, nothing lost); an evidence capture whose alert has not arrived yet
  (another worker may still be writing it) is retried a few times before it is dead-lettered;
- while a large batch is being written the worker tells JetStream it is still working on it
  (``+WPI``), so ``ack_wait`` can stay short and a dead worker's batches come back quickly.

The sensor name is the subject's ``<sensor>`` token; the NATS server's permissions are what make it
trustworthy (each sensor user may publish only on its own subjects; see ``docs/console/jetstream.md``).
By default only sensors registered in the console are accepted (``--create-sensors`` creates them).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import nats.errors
import nats.js.errors
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from fieldward.console.api.cache import bump_data_version
from fieldward.console.api.routes.columnar import drop_credentials
from fieldward.console.api.routes.ingest import PCAP_MAGICS, find_sensor_alert, store_evidence
from fieldward.console.jetstream import (
    DEFAULT_STREAM,
    H_ALERT,
    H_BATCH,
    H_ENCODING,
    H_LENGTH,
    H_LOG,
    SENSOR_NAME,
    SUBJECT_PREFIX,
    TRANSPORT_KINDS,
    NatsSettings,
    TransportError,
    ensure_stream,
)
from fieldward.console.sensor_client import _LOG_NAME, COLUMNAR, EVIDENCE, _unzstd
from fieldward.store.columnar import ColumnarStore, ColumnarStoreError
from fieldward.store.console_models import IngestBatch
from fieldward.store.database import Database
from fieldward.store.ingest import IngestError, ingest_records
from fieldward.store.models import Sensor, utcnow
from fieldward.store.transport_models import TransportDeadLetter, TransportWorker

__all__ = [
    "Batch",
    "BatchApplier",
    "BatchNotReadyError",
    "BatchRefusedError",
    "IngestWorker",
    "WorkerSettings",
    "WorkerStats",
    "parse_batch",
    "run_worker",
]

log = logging.getLogger(__name__)

DEFAULT_DURABLE: Final = "fieldward-ingest"
MAX_JSON_BYTES: Final = 512 * 1024 * 1024
"""Largest decompressed record batch accepted (a bound against decompression bombs)."""
EVIDENCE_RETRIES: Final = 10
"""Deliveries of an evidence capture whose alert is not in the store yet before it is dead-lettered."""
UNEXPECTED_RETRIES: Final = 5
STATS_KEEP_DAYS: Final = 7
"""Rows of ``transport_workers`` not updated for this many days are removed by the next worker."""
"""Deliveries of a batch that fails with an unexpected error before it is dead-lettered."""


class BatchRefusedError(Exception):
    """The batch can never be applied as it is: dead-letter it (``code`` is the counted reason)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


class BatchNotReadyError(Exception):
    """Not applicable yet (an evidence capture before its alert): retry after a delay."""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Tunables of one ingest worker (thresholds are settings, not literals)."""

    stream: str = DEFAULT_STREAM
    durable: str = DEFAULT_DURABLE
    fetch: int = 4
    """Messages asked for per pull request; they are applied ``concurrency`` at a time."""
    concurrency: int = 4
    """Batches one worker applies at the same time, each in its own thread and transaction (1 on
    SQLite, which has a single writer)."""
    ack_wait: float = 30.0
    """Seconds JetStream waits for an acknowledgement before it redelivers to another worker."""
    max_ack_pending: int = 1000
    retry_delay: float = 5.0
    """Delay of a redelivery after a transient failure (database down, alert not yet there)."""
    create_sensors: bool = False
    """Accept a sensor the console does not know (its row is created); else dead-letter its batches."""
    stream_max_bytes: int = -1
    """Size cap of the stream when this worker creates it (-1: unlimited)."""
    stats_every: float = 60.0
    report_every: float = 10.0
    """Seconds between two updates of the worker's row in ``transport_workers``."""
    name: str | None = None
    """The worker's name in ``transport_workers`` (default ``<host>:<pid>-<random>``)."""
    reconnect_max: float = 30.0
    """Longest wait between two attempts to reach NATS."""
    api_timeout: float = 15.0
    """Timeout of JetStream API requests (stream and consumer set-up)."""


@dataclass(slots=True)
class WorkerStats:
    """Counters of one worker (logged every ``stats_every`` seconds and at exit)."""

    applied: int = 0
    duplicates: int = 0
    records: int = 0
    """Records (rows) of the applied batches, as the sensors counted them."""
    redelivered: int = 0
    retried: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        dead = sum(self.dead_lettered.values())
        return (
            f"{self.applied} batch(es) applied ({self.records:,} records), {self.duplicates} duplicate(s), "
            f"{self.redelivered} redelivered, {self.retried} retried later, {dead} dead-lettered"
            + (f" {dict(self.dead_lettered)}" if dead else "")
        )


@dataclass(frozen=True, slots=True)
class Batch:
    """One sensor batch as it travelled: from a JetStream message or a stored dead letter."""

    sensor: str
    kind: str
    batch_id: str
    body: bytes
    headers: dict[str, str]


class BatchApplier:
    """Applies sensor batches to the store (blocking): the ingest workers' and the dead-letter retry's.

    A batch is looked up in ``ingest_batches`` first (a batch applied before is a ``duplicate``), then
    written, then recorded there. Raises :class:`BatchRefusedError` for a batch that cannot be
    applied, :class:`BatchNotReadyError` for evidence whose alert is not stored yet, and the
    database's or the disk's own errors when they are down.
    """

    def __init__(
        self,
        database: Database,
        *,
        columnar: ColumnarStore | None = None,
        evidence_dir: Path | None = None,
        create_sensors: bool = False,
    ) -> None:
        self.db = database
        self.columnar = columnar
        self.evidence_dir = evidence_dir
        self.create_sensors = create_sensors

    def _lookup(self, batch: Batch) -> tuple[int, bool]:
        """``(sensor id, batch already applied)`` in one read; the sensor is created when allowed."""
        with self.db.session() as session:
            row = session.execute(
                select(Sensor.id, IngestBatch.id)
                .outerjoin(
                    IngestBatch,
                    (IngestBatch.sensor_id == Sensor.id) & (IngestBatch.batch_id == batch.batch_id),
                )
                .where(Sensor.name == batch.sensor)
            ).first()
        if row is not None:
            return int(row[0]), row[1] is not None
        if not self.create_sensors:
            raise BatchRefusedError("sensor.unknown", f"the console has no sensor named {batch.sensor!r}")
        return ingest_records(self.db, batch.sensor, "devices", []).sensor_id, False

    def apply(self, batch: Batch) -> str:
        """Apply one batch and record it (blocking: runs in a thread); ``applied`` or ``duplicate``."""
        sensor_id, seen = self._lookup(batch)
        if seen:
            return "duplicate"
        if batch.kind == EVIDENCE:
            written = self._apply_evidence(sensor_id, batch)
        elif batch.kind in COLUMNAR:
            written = self._apply_columnar(batch)
        else:
            records = _records_of(batch)
            try:
                written = ingest_records(self.db, sensor_id, batch.kind, records).records
            except IngestError as exc:
                raise BatchRefusedError("batch.refused", str(exc)) from None
        if batch.kind not in COLUMNAR:  # committed: the consoles' kept list pages are stale
            bump_data_version(self.db)
        try:
            with self.db.session() as session:
                session.add(
                    IngestBatch(
                        sensor_id=sensor_id, batch_id=batch.batch_id, kind=batch.kind, written=written
                    )
                )
        except IntegrityError:  # applied concurrently by a redelivery to another worker
            return "duplicate"
        return "applied"

    def _apply_columnar(self, batch: Batch) -> int:
        if self.columnar is None:
            raise BatchRefusedError("columnar.disabled", "this worker has no columnar store (--data-dir)")
        data = batch.body
        if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
            raise BatchRefusedError("columnar.not_parquet", "the body is not a Parquet file")
        try:
            table = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise BatchRefusedError("columnar.unreadable", str(exc)[:300]) from None
        table, _ = drop_credentials(table)
        log_name = batch.headers.get(H_LOG) if batch.kind == "events" else None
        if batch.kind == "events" and not (log_name and _LOG_NAME.fullmatch(log_name)):
            raise BatchRefusedError("columnar.bad_log", "an events batch without a valid log name")
        kind: Literal["flows", "events"] = "flows" if batch.kind == "flows" else "events"
        report = self.columnar.add_table(kind, log_name, table, batch.sensor, batch.batch_id)
        return report.total_rows

    def _apply_evidence(self, sensor_id: int, batch: Batch) -> int:
        if self.evidence_dir is None:
            raise BatchRefusedError("evidence.disabled", "this worker has no evidence folder (--data-dir)")
        data = batch.body
        if len(data) < 24 or data[:4] not in PCAP_MAGICS:
            raise BatchRefusedError("evidence.not_pcap", "the body is not a pcap or pcapng file")
        reference = batch.headers.get(H_ALERT, "")
        if not reference or len(reference) > 64 or not reference.isprintable() or "/" in reference:
            raise BatchRefusedError("evidence.bad_alert_id", "missing or invalid Fieldward-Alert-Id")
        with self.db.session() as session:
            alert = find_sensor_alert(session, sensor_id, reference)
            if alert is None:
                raise BatchNotReadyError(
                    f"no alert {reference!r} of sensor {batch.sensor!r} in the store (yet)"
                )
            store_evidence(self.evidence_dir, sensor_id, alert, data)
        return 1


class IngestWorker:
    """One worker: a database, a columnar store, the evidence folder and a NATS connection."""

    def __init__(
        self,
        nats_settings: NatsSettings,
        database: Database,
        *,
        columnar: ColumnarStore | None = None,
        evidence_dir: Path | None = None,
        settings: WorkerSettings | None = None,
    ) -> None:
        self.nats = nats_settings
        self.db = database
        self.columnar = columnar
        self.evidence_dir = evidence_dir
        self.settings = settings or WorkerSettings()
        self.applier = BatchApplier(
            database,
            columnar=columnar,
            evidence_dir=evidence_dir,
            create_sensors=self.settings.create_sensors,
        )
        self.stats = WorkerStats()
        self._stop = asyncio.Event()
        self._idle_since = self._last_stats = self._last_report = time.monotonic()
        self._parallel = 1 if database.dialect == "sqlite" else max(1, self.settings.concurrency)
        self.name = (self.settings.name or f"{socket.gethostname()}:{os.getpid()}-{secrets.token_hex(2)}")[
            :200
        ]
        self._started = utcnow()

    def stop(self) -> None:
        """Finish the message in hand, then return from :meth:`run` (SIGTERM, SIGINT)."""
        self._stop.set()

    async def run(self, *, max_idle: float | None = None) -> WorkerStats:
        """Consume until :meth:`stop` (or ``max_idle`` seconds without a message); returns the counters.

        A lost or refused connection (NATS down, a cluster node restarting) is retried with
        exponential backoff up to ``reconnect_max`` seconds apart; nothing is acknowledged meanwhile,
        so nothing is lost. A refused credential raises :class:`TransportError`.
        """
        self._idle_since = time.monotonic()
        self._last_stats = time.monotonic()
        await self._report("running")
        try:
            await self._run(max_idle)
        finally:
            await self._report("stopped")
        log.info("ingest worker stopped: %s", self.stats.line())
        return self.stats

    async def _run(self, max_idle: float | None) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                nc = await self._connect()
            except (nats.errors.AuthorizationError, nats.errors.InvalidUserCredentialsError) as exc:
                raise TransportError(f"the NATS server refused the worker's credentials ({exc})") from None
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                if "authorization" in str(exc).lower():
                    raise TransportError("the NATS server refused the worker's credentials") from None
                log.warning("cannot reach NATS (%s); retrying in %.1f s", type(exc).__name__, delay)
                if self._idle(max_idle):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(self.settings.reconnect_max, delay * 2)
                continue
            delay = 0.5
            try:
                if await self._consume(nc, max_idle):
                    break
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                log.warning("lost the NATS connection (%s); reconnecting", type(exc).__name__)
            finally:
                # every fetched message was acknowledged or nak'ed before returning: close, no drain
                with contextlib.suppress(Exception):
                    await nc.close()

    async def _report(self, state: str) -> None:
        """Write the counters to ``transport_workers`` (a database error is logged, never raised)."""
        self._last_report = time.monotonic()
        stats = self.stats
        values = {
            "stream": self.settings.stream[:64],
            "durable": self.settings.durable[:64],
            "state": state,
            "last_seen": utcnow(),
            "report_every": float(self.settings.report_every),
            "applied": stats.applied,
            "duplicates": stats.duplicates,
            "records": stats.records,
            "redelivered": stats.redelivered,
            "retried": stats.retried,
            "dead_lettered": sum(stats.dead_lettered.values()),
        }

        def write() -> None:
            with self.db.session() as session:
                row = session.scalars(
                    select(TransportWorker).where(TransportWorker.name == self.name)
                ).first()
                if row is None:
                    # a new process: forget workers stopped (or silent) for a week
                    cutoff = utcnow() - dt.timedelta(days=STATS_KEEP_DAYS)
                    session.execute(delete(TransportWorker).where(TransportWorker.last_seen < cutoff))
                    session.add(TransportWorker(name=self.name, started=self._started, **values))
                else:
                    for key, value in values.items():
                        setattr(row, key, value)

        try:
            await asyncio.to_thread(write)
        except SQLAlchemyError as exc:
            log.info("cannot record the worker's counters (%s)", type(exc).__name__)

    def _idle(self, max_idle: float | None) -> bool:
        return max_idle is not None and time.monotonic() - self._idle_since >= max_idle

    async def _consume(self, nc: NatsClient, max_idle: float | None) -> bool:
        """Pull and apply messages until stopped or idle (True) or the connection is lost (raises)."""
        js = nc.jetstream(timeout=self.settings.api_timeout)
        await ensure_stream(js, self.settings.stream, max_bytes=self.settings.stream_max_bytes)
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.settings.ack_wait,
            max_deliver=-1,  # malformed messages are terminated explicitly, the rest retried
            max_ack_pending=self.settings.max_ack_pending,
        )
        subscription = await js.pull_subscribe(
            f"{SUBJECT_PREFIX}.>",
            durable=self.settings.durable,
            stream=self.settings.stream,
            config=config,
        )
        log.info("consuming %s as %s", self.settings.stream, self.settings.durable)
        gate = asyncio.Semaphore(self._parallel)

        async def handle(message: Msg) -> None:
            async with gate:
                await self._handle(message)

        while not self._stop.is_set():
            if not nc.is_connected:
                raise nats.errors.ConnectionClosedError
            try:
                messages = await subscription.fetch(self.settings.fetch, timeout=1.0)
            except nats.errors.TimeoutError:
                messages = []
            if messages:
                self._idle_since = time.monotonic()
            if len(messages) == 1 or self._parallel <= 1:
                for message in messages:
                    await self._handle(message)
            else:
                await asyncio.gather(*(handle(message) for message in messages))
            now = time.monotonic()
            if now - self._last_stats >= self.settings.stats_every:
                log.info("ingest worker: %s", self.stats.line())
                self._last_stats = now
            if now - self._last_report >= self.settings.report_every:
                await self._report("running")
            if not messages and self._idle(max_idle):
                return True
        return True

    async def _connect(self) -> NatsClient:
        def on_error(exc: Exception) -> None:
            log.warning("NATS: %s", type(exc).__name__ if not str(exc) else str(exc)[:200])

        return await self.nats.connect(name="fieldward-ingest-worker", on_error=on_error)

    # --- one message ---

    async def _handle(self, message: Msg) -> None:
        metadata = message.metadata
        if metadata.num_delivered > 1:
            self.stats.redelivered += 1
        batch: Batch | None = None
        try:
            batch = _parse(message)
            work = asyncio.ensure_future(asyncio.to_thread(self._apply, batch))
            while True:
                done, _ = await asyncio.wait({work}, timeout=max(1.0, self.settings.ack_wait / 3))
                if done:
                    break
                await message.in_progress()  # still writing: do not redeliver it to another worker
            outcome = work.result()
        except BatchRefusedError as exc:
            await self._dead_letter(message, batch, exc)
            return
        except BatchNotReadyError as exc:
            if metadata.num_delivered >= EVIDENCE_RETRIES:
                await self._dead_letter(message, batch, BatchRefusedError("evidence.no_alert", str(exc)))
                return
            self.stats.retried += 1
            await message.nak(delay=self.settings.retry_delay)
            return
        except (SQLAlchemyError, OSError, ColumnarStoreError) as exc:
            # the database (or the disk) is down: keep the message, try again later
            self.stats.retried += 1
            log.warning(
                "cannot apply %s (%s); retrying in %.0f s",
                message.subject,
                type(exc).__name__,
                self.settings.retry_delay,
            )
            await message.nak(delay=self.settings.retry_delay)
            return
        except Exception as exc:  # a bug, not the message's fault: retried a few times, then kept aside
            log.exception("unexpected error applying %s", message.subject)
            if metadata.num_delivered >= UNEXPECTED_RETRIES:
                await self._dead_letter(message, batch, BatchRefusedError("worker.error", type(exc).__name__))
                return
            self.stats.retried += 1
            await message.nak(delay=self.settings.retry_delay)
            return
        if outcome == "duplicate":
            self.stats.duplicates += 1
        else:
            self.stats.applied += 1
            self.stats.records += _records(batch)
        await message.ack()  # after the commit: a lost ack only causes a redelivery, found a duplicate

    def _apply(self, batch: Batch) -> str:
        """Apply one batch and record it (blocking: runs in a thread); ``applied`` or ``duplicate``."""
        return self.applier.apply(batch)

    async def _dead_letter(self, message: Msg, batch: Batch | None, exc: BatchRefusedError) -> None:
        """Record the message whole with its reason, then terminate it (it is never redelivered)."""
        metadata = message.metadata
        subject = message.subject
        parts = subject.split(".")
        sensor = batch.sensor if batch else (parts[2][:200] if len(parts) > 2 else None)
        headers = {k: v for k, v in (message.headers or {}).items() if k.lower().startswith("fieldward-")}
        row = {
            "stream": (metadata.stream or self.settings.stream)[:64],
            "stream_seq": int(metadata.sequence.stream),
            "subject": subject[:255],
            "sensor": sensor,
            "batch_id": (batch.batch_id if batch else headers.get(H_BATCH, ""))[:64] or None,
            "reason": str(exc)[:500],
            "deliveries": int(metadata.num_delivered),
            "size": len(message.data),
            "payload": bytes(message.data),
            "headers": orjson.dumps(headers).decode()[:4000],
        }
        try:
            await asyncio.to_thread(self._store_dead_letter, row)
        except SQLAlchemyError as error:
            self.stats.retried += 1
            log.warning("cannot record a dead letter (%s); retrying later", type(error).__name__)
            await message.nak(delay=self.settings.retry_delay)
            return
        self.stats.dead_lettered[exc.code] += 1
        log.info("dead-lettered %s (stream seq %s): %s", subject[:120], row["stream_seq"], exc.code)
        await message.term()

    def _store_dead_letter(self, row: dict[str, Any]) -> None:
        with self.db.session() as session:
            exists = session.scalar(
                select(TransportDeadLetter.id).where(
                    TransportDeadLetter.stream == row["stream"],
                    TransportDeadLetter.stream_seq == row["stream_seq"],
                )
            )
            if exists is None:
                session.add(TransportDeadLetter(**row))


def _parse(message: Msg) -> Batch:
    return parse_batch(message.subject, dict(message.headers or {}), bytes(message.data))


def parse_batch(subject: str, headers: dict[str, str], data: bytes) -> Batch:
    """The batch a message carries; :class:`BatchRefusedError` when the subject or headers are bad."""
    parts = subject.split(".")
    if len(parts) != 4 or ".".join(parts[:2]) != SUBJECT_PREFIX:
        raise BatchRefusedError("subject.malformed", "expected fieldward.ingest.<sensor>.<kind>")
    sensor, kind = parts[2], parts[3]
    if not SENSOR_NAME.fullmatch(sensor):
        raise BatchRefusedError("subject.bad_sensor", "the sensor token is not a valid sensor name")
    if kind not in TRANSPORT_KINDS:
        raise BatchRefusedError("subject.unknown_kind", f"unknown kind {kind[:40]!r}")
    batch_id = headers.get(H_BATCH, "")
    if not batch_id or len(batch_id) > 64 or not batch_id.replace("-", "").isalnum():
        raise BatchRefusedError("header.bad_batch_id", "missing or invalid Fieldward-Batch-Id")
    return Batch(sensor, kind, batch_id, data, headers)


def _records_of(batch: Batch) -> list[Any]:
    encoding = batch.headers.get(H_ENCODING, "json")
    body = batch.body
    if encoding == "json+zstd":
        length = batch.headers.get(H_LENGTH, "")
        if not length.isdigit() or not 0 < int(length) <= MAX_JSON_BYTES:
            raise BatchRefusedError("body.bad_length", "missing or out-of-range Fieldward-Length")
        try:
            body = _unzstd(body, int(length))
        except (OSError, ValueError):
            raise BatchRefusedError("body.bad_zstd", "the body does not decompress") from None
    elif encoding != "json":
        raise BatchRefusedError("body.bad_encoding", f"unknown encoding {encoding[:40]!r}")
    try:
        records = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BatchRefusedError("body.bad_json", "the body is not JSON") from None
    if not isinstance(records, list):
        raise BatchRefusedError("body.not_a_list", "a record batch is a JSON array")
    return records


def _records(batch: Batch | None) -> int:
    if batch is None:
        return 0
    value = batch.headers.get("Fieldward-Records", "")
    return int(value) if value.isdigit() else 0


def run_worker(
    nats_url: str,
    database_url: str,
    *,
    creds: Path | None = None,
    ca_file: Path | None = None,
    data_dir: Path | None = None,
    settings: WorkerSettings | None = None,
    max_idle: float | None = None,
) -> WorkerStats:
    """``fieldward ingest-worker``: migrate the database, then consume until SIGTERM/SIGINT."""
    nats_settings = NatsSettings.from_url(nats_url, creds, ca_file=ca_file)
    database = Database(database_url)
    try:
        database.upgrade()
    except OperationalError as exc:
        database.dispose()
        raise TransportError(
            f"cannot open the database {database!r}: {type(exc.orig).__name__}"[:400]
        ) from None
    columnar = ColumnarStore(data_dir / "columnar") if data_dir is not None else None
    worker = IngestWorker(
        nats_settings,
        database,
        columnar=columnar,
        evidence_dir=data_dir / "evidence" if data_dir is not None else None,
        settings=settings,
    )

    async def main() -> WorkerStats:
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(number, worker.stop)
        return await worker.run(max_idle=max_idle)

    try:
        return asyncio.run(main())
    except (OSError, nats.errors.Error) as exc:
        raise TransportError(
            f"cannot consume from NATS at {','.join(nats_settings.servers)}: {type(exc).__name__} {exc}"[:400]
        ) from None
    except OperationalError as exc:
        raise TransportError(f"cannot use the database: {type(exc.orig).__name__}") from None
    finally:
        if columnar is not None:
            columnar.close()
        database.dispose()


def worker_main(argv: list[str]) -> int:
    """``fieldward ingest-worker --nats URL --db URL [...]``; returns the exit code."""
    import argparse
    import sys

    from fieldward.errors import FieldWardError

    parser = argparse.ArgumentParser(
        prog="fieldward ingest-worker",
        description="Ingest sensor batches from NATS JetStream into the console's database. Run several "
        "(on one or many hosts) to ingest in parallel; they share one durable consumer.",
    )
    parser.add_argument("--nats", required=True, help="nats://[user@]host:port[,host:port] (or tls://)")
    parser.add_argument(
        "--db", required=True, help="Database URL (postgresql+psycopg://... or sqlite:///...)"
    )
    parser.add_argument("--creds", type=Path, help="NATS .creds file, or a file holding the user's password")
    parser.add_argument("--ca-file", type=Path, help="CA certificate (PEM) of the NATS servers")
    parser.add_argument("--data-dir", type=Path, help="Console data folder (columnar store, evidence)")
    parser.add_argument("--stream", default=DEFAULT_STREAM)
    parser.add_argument("--durable", default=DEFAULT_DURABLE, help="Durable consumer shared by the workers")
    parser.add_argument("--fetch", type=int, default=4, help="Messages per pull request")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="Batches applied at the same time (1 on SQLite)"
    )
    parser.add_argument(
        "--ack-wait", type=float, default=30.0, help="Seconds before an unacked batch is redelivered"
    )
    parser.add_argument("--retry-delay", type=float, default=5.0)
    parser.add_argument("--stream-max-bytes", type=int, default=-1, help="Stream size cap when creating it")
    parser.add_argument(
        "--create-sensors", action="store_true", help="Accept sensors the console does not know"
    )
    parser.add_argument("--max-idle", type=float, help="Stop after this many seconds without a message")
    parser.add_argument("--stats-every", type=float, default=60.0)
    parser.add_argument(
        "--report-every", type=float, default=10.0, help="Seconds between updates of transport_workers"
    )
    parser.add_argument("--name", help="The worker's name in the console (default host:pid-random)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    if args.verbose:
        logging.getLogger("fieldward").setLevel(logging.INFO)
    settings = WorkerSettings(
        stream=args.stream,
        durable=args.durable,
        fetch=max(1, args.fetch),
        concurrency=max(1, args.concurrency),
        ack_wait=max(1.0, args.ack_wait),
        retry_delay=max(0.1, args.retry_delay),
        create_sensors=args.create_sensors,
        stream_max_bytes=args.stream_max_bytes,
        stats_every=args.stats_every,
        report_every=max(1.0, args.report_every),
        name=args.name,
    )
    try:
        stats = run_worker(
            args.nats,
            args.db,
            creds=args.creds,
            ca_file=args.ca_file,
            data_dir=args.data_dir,
            settings=settings,
            max_idle=args.max_idle,
        )
    except FieldWardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ingest worker: {stats.line()}", flush=True)
    return 0
