"""Background work of the console: columnar retention and the analysis of uploaded captures.

- :func:`columnar_root` / :func:`shared_store`: where the console keeps flows and protocol events
  (``<data_dir>/columnar``, :class:`~fieldward.store.columnar.ColumnarStore`) and the one store object
  of an application (``app.state.columnar_store``; its writer lock serialises ingestion and retention).
- :func:`apply_retention` reads ``retention_days`` from the console settings table
  (:func:`~fieldward.console.api.routes.settings.read_settings`) and removes the day partitions older
  than that; :class:`RetentionJob` runs it periodically in a daemon thread (``start()``/``stop()``),
  started by ``create_app``'s lifespan. Each round it first takes its :class:`JobLock` (``create_app``
  gives it one named ``retention``): with several worker processes on one database only the process
  holding it runs the job; the others skip the round (and take over when the holder stops).
- :class:`JobLock`: one holder per database among processes: a session-level PostgreSQL advisory
  lock (``pg_try_advisory_lock``) on a connection kept open, or on a SQLite file an exclusive
  ``flock`` on ``<database file>.<name>.lock`` next to it; the operating system or the server
  releases it when the holder dies.
- :class:`UploadJobs`: captures uploaded through ``POST /api/v1/uploads`` are analysed one at a time
  by a worker thread: ``fieldward analyze`` (``fieldward.pipeline.analyze`` and the assessment) in a
  child process, then :func:`~fieldward.store.ingest.ingest_folder` into the console's database and
  the flows/events into the columnar store. The jobs are rows of ``upload_jobs``
  (:class:`~fieldward.store.console_models.UploadJobRow`), so any worker process answers for any job
  and a restart keeps them; the process that accepted an upload analyses it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import logging
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import orjson
from sqlalchemy import Connection, Engine, delete, select, text, update
from sqlalchemy.orm import Session

from fieldward.console.api.cache import bump_data_version
from fieldward.console.settings import ConsoleSettings
from fieldward.errors import FieldWardError
from fieldward.store.columnar import ColumnarStore, RetentionReport
from fieldward.store.console_models import UPLOAD_STATUSES, UploadJobRow
from fieldward.store.database import Database
from fieldward.store.ingest import ingest_folder

__all__ = [
    "DEFAULT_RETENTION_INTERVAL",
    "STOPPED",
    "WORKER_GONE",
    "JobLock",
    "RetentionJob",
    "UploadJob",
    "UploadJobs",
    "apply_retention",
    "columnar_root",
    "shared_store",
    "upload_jobs",
    "uploads_root",
]

log = logging.getLogger(__name__)

DEFAULT_RETENTION_INTERVAL = 3600.0
"""Seconds between two retention runs."""

_STATE_LOCK = threading.Lock()
GZIP_MAGIC = b"\x1f\x8b"
CAPTURE_MAGICS = frozenset(
    {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a"}
)
"""pcap (µs, ns; both byte orders) and pcapng magic numbers; gzip is sniffed by the reader."""


class _HasState(Protocol):
    state: Any


def columnar_root(settings: ConsoleSettings) -> Path:
    """The columnar store's directory: ``settings.columnar_dir`` when the settings have that field,
    else ``<data_dir>/columnar`` (``ConsoleSettings.home()``: the data directory or its default)."""
    configured = getattr(settings, "columnar_dir", None)
    if isinstance(configured, Path | str) and str(configured):
        return Path(configured)
    return settings.home() / "columnar"


def uploads_root(settings: ConsoleSettings) -> Path:
    """Where uploaded captures and their analyses are kept while a job runs (``<data_dir>/uploads``)."""
    return settings.home() / "uploads"


def shared_store(app: _HasState) -> ColumnarStore:
    """The application's :class:`ColumnarStore` (created on first use, kept on ``app.state``)."""
    with _STATE_LOCK:
        store = getattr(app.state, "columnar_store", None)
        if not isinstance(store, ColumnarStore):
            store = ColumnarStore(columnar_root(app.state.settings))
            app.state.columnar_store = store
        return store


def apply_retention(
    settings: ConsoleSettings,
    session_factory: Callable[[], Session],
    now: dt.datetime | None = None,
    *,
    store: ColumnarStore | None = None,
) -> RetentionReport:
    """Remove the columnar day partitions older than the console's ``retention_days`` setting.

    ``store``: the application's shared store (so removal and ingestion share its writer lock);
    default: a store on :func:`columnar_root`.
    """
    # Imported here: the routes package imports this module (the columnar and upload routers).
    from fieldward.console.api.routes.settings import read_settings

    with session_factory() as session:
        days = read_settings(session).retention_days
    target = store if store is not None else ColumnarStore(columnar_root(settings))
    # The setting can change at any time: the store takes the current value for this run.
    target.retention_days = days
    report = target.apply_retention(now)
    if report.removed:
        log.info(
            "retention (%d days): removed %d day partitions older than %s",
            days,
            len(report.removed),
            report.keep_from,
        )
    return report


class JobLock:
    """A lock naming the one process (of those on one database) that runs the background job ``name``.

    :meth:`acquire` never blocks: True when this object holds the lock (it keeps it until
    :meth:`release`, so the same process runs every round), False when another holder has it.
    PostgreSQL: ``pg_try_advisory_lock`` on a connection of ``engine`` kept open in autocommit (no
    transaction stays open); a lost connection loses the lock and the next :meth:`acquire` tries
    again. SQLite file: ``flock`` on ``<file>.<name>.lock``. In-memory SQLite or another dialect:
    always acquired (one process only can reach such a database)."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        digest = hashlib.sha256(f"fieldward.job:{name}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        """The advisory lock's 64-bit key (PostgreSQL)."""
        self._connection: Connection | None = None
        self._file: Any = None
        self._guard = threading.Lock()

    def _lock_path(self) -> Path | None:
        database = self.engine.url.database or ""
        if self.engine.dialect.name != "sqlite" or database in ("", ":memory:") or "mode=memory" in database:
            return None
        if database.startswith("file:"):
            database = database.removeprefix("file:").split("?", 1)[0]
        return Path(database).expanduser().with_name(f"{Path(database).name}.{self.name}.lock")

    @property
    def held(self) -> bool:
        return self._connection is not None or self._file is not None

    def acquire(self) -> bool:
        with self._guard:
            if self.engine.dialect.name == "postgresql":
                return self._acquire_postgresql()
            path = self._lock_path()
            if path is None:
                return True
            if self._file is not None:
                return True
            handle = path.open("a+b")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                return False
            self._file = handle
            return True

    def _acquire_postgresql(self) -> bool:
        if self._connection is not None:
            try:  # still the holder while the session lives
                self._connection.execute(text("SELECT 1"))
                return True
            except Exception:
                log.warning("job lock %s: lost the database connection; trying again", self.name)
                self._drop_connection()
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = bool(
                connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar()
            )
        except Exception:
            connection.close()
            raise
        if not got:
            connection.close()
            return False
        self._connection = connection
        return True

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.invalidate()  # the server ends the session, and its lock, with it
            finally:
                connection.close()

    def release(self) -> None:
        with self._guard:
            if self._connection is not None:
                try:
                    self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
                    self._connection.close()
                    self._connection = None
                except Exception:
                    self._drop_connection()
            if self._file is not None:
                handle, self._file = self._file, None
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                finally:
                    handle.close()


class RetentionJob:
    """Runs :func:`apply_retention` now and then every ``interval`` seconds in a daemon thread."""

    def __init__(
        self,
        settings: ConsoleSettings,
        session_factory: Callable[[], Session],
        *,
        store: ColumnarStore | None = None,
        interval: float = DEFAULT_RETENTION_INTERVAL,
        clock: Callable[[], dt.datetime] | None = None,
        lock: JobLock | None = None,
    ) -> None:
        """``lock``: a :class:`JobLock` (``create_app`` passes one named ``retention`` on its database)
        taken before each round of the thread; None: every round runs."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.settings = settings
        self.session_factory = session_factory
        self.store = store
        self.interval = interval
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.runs = 0
        self.skipped = 0
        """Rounds skipped because another process held the lock."""
        self.lock = lock
        self.last_report: RetentionReport | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> RetentionReport | None:
        """One retention pass; a failure is logged and kept in ``last_error`` (the job goes on)."""
        try:
            report = apply_retention(self.settings, self.session_factory, self.clock(), store=self.store)
        except Exception as exc:  # a database outage or a disk error must not end the thread
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("columnar retention failed: %s", self.last_error)
            return None
        self.runs += 1
        self.last_report = report
        self.last_error = None
        return report

    def run_round(self) -> bool:
        """One round of the periodic job: :meth:`run_once` when this process holds (or takes) the
        lock, else a skipped round. True when the job ran."""
        try:
            holder = self.lock is None or self.lock.acquire()
        except Exception as exc:  # the database is down: try again next round
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("columnar retention: cannot take the job lock: %s", self.last_error)
            return False
        if not holder:
            self.skipped += 1
            return False
        self.run_once()
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_round()
            self._stop.wait(self.interval)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="fieldward-retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.lock is not None:
            self.lock.release()  # another process may take over


# ------------------------------------------------------------------------------------ uploads

UploadStatus = Literal["queued", "running", "done", "failed"]


@dataclass
class UploadJob:
    """One uploaded capture and what became of it."""

    id: str
    filename: str
    sensor: str
    size: int
    created_by: str
    path: Path
    status: UploadStatus = "queued"
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    started: dt.datetime | None = None
    finished: dt.datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None


STOPPED = "the console stopped before the analysis"
"""The error of a job its process did not finish because the console stopped."""
WORKER_GONE = "the console process analysing this capture ended without finishing it"
"""The error of a job whose process died (killed, out of memory) before it finished."""
_FINISHED = ("done", "failed")
_JOB_ID = re.compile(r"[0-9a-f]{32}")
"""A job id: ``uuid.uuid4().hex``."""


class UploadJobs:
    """Analyses uploaded captures one at a time in a worker thread (the machine's cores are few).

    Every job is a row of ``upload_jobs``: :meth:`submit` inserts it, the worker thread records its
    start and its outcome there, and :meth:`get` reads it, so every worker process of ``fieldward
    serve --workers N`` answers for every job and a restart keeps them. The queue and the thread are
    per process: the process that accepted an upload (its ``worker``, ``hostname:pid``) analyses it.
    Of the finished jobs the newest ``keep`` are kept (older rows are deleted on each submit).
    :meth:`shutdown` marks the jobs this object still had queued or running ``failed``.

    A process that dies without its shutdown (killed, out of memory) cannot fail its own jobs: when
    :meth:`get` reads a queued or running job of a process on this host that no longer exists, it
    marks the job failed (:data:`WORKER_GONE`). Known limit: a job of a process on another host (or
    of a machine that lost power and rebooted with a new process on that pid) stays queued/running;
    no other process takes it over (the capture was on that process's disk).
    """

    def __init__(
        self,
        settings: ConsoleSettings,
        database: Database,
        store: ColumnarStore,
        *,
        keep: int = 200,
        timeout: float = 3600.0,
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        self.database = database
        self.store = store
        self.keep = keep
        self.worker = f"{socket.gethostname()}:{os.getpid()}"[:255]
        """This process, as recorded in the rows of the jobs it runs."""
        self._pending: set[str] = set()
        """Ids of the jobs this object accepted and has not finished."""
        self._lock = threading.Lock()
        self._queue: queue.Queue[UploadJob | None] = queue.Queue()
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False
        # A daemon thread: a console stopping with uploads queued does not wait for them.
        self._worker = threading.Thread(target=self._work, name="fieldward-upload", daemon=True)
        self._worker.start()

    def new_path(self) -> tuple[str, Path]:
        """A fresh job id and the path its capture is written to (the reader recognises the format,
        and gzip, from the content: the name does not matter)."""
        job_id = uuid.uuid4().hex
        folder = uploads_root(self.settings) / job_id
        folder.mkdir(parents=True, exist_ok=True)
        return job_id, folder / "capture"

    def submit(self, job: UploadJob) -> UploadJob:
        """Record ``job`` (``queued``), delete the finished jobs older than the newest ``keep``, and
        queue it for this process's worker thread. A database error is raised (the capture's folder
        is removed)."""
        try:
            with self.database.session() as session:
                session.add(
                    UploadJobRow(
                        id=job.id,
                        filename=job.filename,
                        sensor=job.sensor,
                        size=job.size,
                        created_by=job.created_by,
                        status=job.status,
                        created=job.created,
                        started=job.started,
                        finished=job.finished,
                        counts=dict(job.counts),
                        error=job.error,
                        worker=self.worker,
                    )
                )
                kept = (
                    select(UploadJobRow.id)
                    .where(UploadJobRow.status.in_(_FINISHED))
                    .order_by(UploadJobRow.finished.desc(), UploadJobRow.id.desc())
                    .limit(self.keep)
                )
                session.execute(
                    delete(UploadJobRow)
                    .where(UploadJobRow.status.in_(_FINISHED), UploadJobRow.id.not_in(kept))
                    .execution_options(synchronize_session=False)
                )
        except BaseException:
            shutil.rmtree(job.path.parent, ignore_errors=True)
            raise
        with self._lock:
            closed = self._closed
            if not closed:
                self._pending.add(job.id)
        if closed:  # submitted while the console stops: no worker thread will take it
            self._fail_unstarted(job)
            return job
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> UploadJob | None:
        """The job ``job_id`` as the database has it (whichever process runs it), or None (also for
        what is no job id: not 32 hex digits, e.g. a NUL PostgreSQL would refuse). A queued or
        running job whose process on this host is gone is marked failed first."""
        if _JOB_ID.fullmatch(job_id) is None:
            return None
        with self.database.session() as session:
            row = session.get(UploadJobRow, job_id)
            if row is None:
                return None
            job = self._job(row)
            worker = row.worker
        if job.status in ("queued", "running") and _worker_gone(worker):
            job.status, job.error, job.finished = "failed", WORKER_GONE, dt.datetime.now(dt.UTC)
            if self._record(job, only=("queued", "running")) is False:
                with self.database.session() as session:  # finished meanwhile: as stored
                    row = session.get(UploadJobRow, job_id)
                    return None if row is None else self._job(row)
        return job

    def _job(self, row: UploadJobRow) -> UploadJob:
        return UploadJob(
            id=row.id,
            filename=row.filename,
            sensor=row.sensor,
            size=row.size,
            created_by=row.created_by,
            path=uploads_root(self.settings) / row.id / "capture",
            status=_status(row.status),
            created=row.created,
            started=row.started,
            finished=row.finished,
            counts={str(kind): int(n) for kind, n in (row.counts or {}).items()},
            error=row.error,
        )

    def shutdown(self) -> None:
        """Stop taking jobs; kill a running analysis. The jobs this object had queued or running end
        ``failed`` (:data:`STOPPED`) in the database, and their files are removed, before this
        returns."""
        with self._lock:
            self._closed = True
            pending = sorted(self._pending)
            self._pending.clear()
        self._queue.put(None)
        if pending:
            # Before the kill: the worker thread then finds the job failed and keeps that reason
            # (its own update only changes a queued or running row), not "exit code -9".
            try:
                with self.database.session() as session:
                    session.execute(
                        update(UploadJobRow)
                        .where(UploadJobRow.id.in_(pending), UploadJobRow.status.in_(("queued", "running")))
                        .values(status="failed", error=STOPPED, finished=dt.datetime.now(dt.UTC))
                        .execution_options(synchronize_session=False)
                    )
            except Exception:
                log.warning("uploads: cannot mark %d unfinished jobs failed", len(pending), exc_info=True)
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                log.warning("uploads: the analysis process %d did not end", process.pid)
        for job_id in pending:  # their captures are not analysed now: nothing stays on disk
            shutil.rmtree(uploads_root(self.settings) / job_id, ignore_errors=True)

    def _record(self, job: UploadJob, *, only: tuple[str, ...]) -> bool | None:
        """Write ``job``'s state to its row if the row's status is one of ``only`` (a job that
        :meth:`shutdown` already failed stays failed). True when the row was updated, False when
        no row matched, None when the database could not be reached (logged)."""
        try:
            with self.database.session() as session:
                result = session.execute(
                    update(UploadJobRow)
                    .where(UploadJobRow.id == job.id, UploadJobRow.status.in_(only))
                    .values(
                        status=job.status,
                        started=job.started,
                        finished=job.finished,
                        counts=dict(job.counts),
                        error=job.error,
                    )
                    .execution_options(synchronize_session=False)
                )
                return bool(getattr(result, "rowcount", 0))
        except Exception:  # a database outage must not end the worker thread
            log.warning("upload %s: cannot record its state %s", job.id, job.status, exc_info=True)
            return None

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._closed:
                self._fail_unstarted(job)
                continue
            self._run(job)

    def _fail_unstarted(self, job: UploadJob) -> None:
        """``job`` will not be analysed because the console stops: failed (:data:`STOPPED`) unless
        its row has moved on, and its files removed."""
        job.status, job.error, job.finished = "failed", STOPPED, dt.datetime.now(dt.UTC)
        self._record(job, only=("queued",))
        shutil.rmtree(job.path.parent, ignore_errors=True)

    def _run(self, job: UploadJob) -> None:
        job.status = "running"
        job.started = dt.datetime.now(dt.UTC)
        try:
            if self._record(job, only=("queued",)) is False:
                return  # failed by shutdown (or deleted) meanwhile: not analysed
            try:
                job.counts = self._analyse(job)
                job.status = "done"
            except FieldWardError as exc:
                job.error = _user_text(job, str(exc) or type(exc).__name__)
                job.status = "failed"
            except Exception as exc:
                log.warning("upload %s failed", job.id, exc_info=True)
                job.error = _user_text(job, f"analysis failed ({type(exc).__name__}: {exc})")
                job.status = "failed"
            job.finished = dt.datetime.now(dt.UTC)
        finally:
            with self._lock:
                self._pending.discard(job.id)
            # The files go before the outcome is visible: a finished job has left nothing behind.
            shutil.rmtree(job.path.parent, ignore_errors=True)
        self._record(job, only=("queued", "running"))  # queued: its start was not recorded

    def _analyse(self, job: UploadJob) -> dict[str, int]:
        with job.path.open("rb") as handle:
            head = handle.read(4)
        if head[:2] != GZIP_MAGIC and head not in CAPTURE_MAGICS:
            # What the capture reader would say, without starting a process for it.
            magic = f"0x{head.hex()}" if head else "empty file"
            raise FieldWardError(f"{job.filename}: not a pcap or pcapng capture (magic {magic})")
        out = job.path.parent / "analysis"
        self._run_analysis(job, out)
        summary = (
            orjson.loads((out / "summary.json").read_bytes()) if (out / "summary.json").is_file() else {}
        )
        packets = int(summary.get("packets") or 0)
        if packets == 0:
            raise FieldWardError(f"{job.filename} holds no packets")
        report = ingest_folder(self.database, out, job.sensor)
        bump_data_version(self.database)  # the list pages' kept answers are stale (api/cache.py)
        counts = {str(kind): int(n) for kind, n in report.written.items()}
        counts["packets"] = packets
        counts["flows"] = int(summary.get("flows") or 0)
        if (out / "flows.parquet").is_file() or (out / "events").is_dir():
            added = self.store.add_folder(out, job.sensor)
            counts["columnar_rows"] = added.total_rows
        return counts

    def _run_analysis(self, job: UploadJob, out: Path) -> None:
        """``fieldward analyze CAPTURE --out OUT`` (analysis, then the assessment against the feeds in
        the console's database) in a child process: a hostile or huge capture cannot take the API
        process down with it, the GIL is not shared, and a run past ``timeout`` is killed. The
        database URL goes through the environment, never the command line (``ps`` shows that)."""
        command = [
            sys.executable,
            "-m",
            "fieldward.cli",
            "analyze",
            str(job.path),
            "--out",
            str(out),
            "--quiet",
        ]
        environment = dict(os.environ)
        environment["FIELDWARD_DATABASE_URL"] = self.database.engine.url.render_as_string(hide_password=False)
        with subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=environment,
            cwd=job.path.parent,
        ) as process:
            self._process = process
            if self._closed:  # shutdown came between the job's start and now
                process.kill()
            try:
                _, stderr = process.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise FieldWardError(
                    f"the analysis of {job.filename} took longer than {self.timeout:.0f} s"
                ) from None
            finally:
                self._process = None
        if process.returncode != 0:
            text = stderr.decode("utf-8", "replace")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            reason = lines[-1] if lines else f"the analysis ended with exit code {process.returncode}"
            raise FieldWardError(reason.removeprefix("fieldward: error: "))


def _worker_gone(worker: str) -> bool:
    """True when ``worker`` (``hostname:pid``) names a process of this host that no longer exists.
    Another host's process, this process and a pid that exists (perhaps reused) are not gone."""
    host, _, pid_text = worker.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid in (0, os.getpid()):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, under another user
        return False
    return False


def _status(value: str) -> UploadStatus:
    if value in UPLOAD_STATUSES:
        return cast(UploadStatus, value)
    raise ValueError(f"unknown upload status {value!r}")


def _user_text(job: UploadJob, text: str) -> str:
    """An error about the job's file, naming it as the user knows it, never by the server's path."""
    return text.replace(str(job.path), job.filename).replace(str(job.path.parent), "uploads")[:2000]


def upload_jobs(app: _HasState) -> UploadJobs:
    """The application's :class:`UploadJobs` (created on first use, kept on ``app.state``)."""
    store = shared_store(app)
    with _STATE_LOCK:
        jobs = getattr(app.state, "upload_jobs", None)
        if not isinstance(jobs, UploadJobs):
            jobs = UploadJobs(app.state.settings, app.state.database, store)
            app.state.upload_jobs = jobs
        return jobs
