"""Sensor side of the console protocol: spool an analysis to disk in batches, push them, catch up.

A sensor (``fieldward analyze --to URL``) turns an analysis folder into batches of records of one kind
(``store.ingest.KINDS``) plus the alerts' evidence captures, then its flows and protocol events as
Parquet batches, and sends them to ``POST /api/v1/ingest/{kind}``,
``POST /api/v1/ingest/evidence/{alert_id}`` and ``POST /api/v1/ingest/columnar/{flows|events/<log>}``
with its own bearer token (``fws_...``). Delivery is at least once, and exactly once in the store:

- every batch is first written to the spool directory as one file (temp file, fsync, rename), and
  deleted only after the console acknowledged it (``applied`` or ``duplicate``);
- a batch's id is a UUID derived from its kind and content, so a batch re-sent after a lost answer,
  or the same folder pushed twice, is answered ``duplicate`` by the console, and the store's upserts
  on natural keys make any re-application harmless anyway;
- when the console is unreachable the batches stay in the spool, in order, and :meth:`SensorClient.drain`
  re-sends them with exponential backoff and jitter (``Retry-After`` respected); a batch the console
  refuses (a 4xx other than 401/403/408/429) is moved to ``rejected/`` with the console's reason,
  never dropped; the spool has a size cap and refuses new batches, with an error, when it is full.

The spool layout, the batch file format and the retry policy are documented in
``docs/console/sensors.md``. The token is never logged nor written to the spool.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import fcntl
import hashlib
import ipaddress
import logging
import os
import random
import re
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Final, Literal
from urllib.parse import quote, urlsplit

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from fieldward.errors import FieldWardError
from fieldward.store.ingest import FILES, KINDS, OPTIONAL

__all__ = [
    "AuthenticationError",
    "BatchResult",
    "PushReport",
    "RejectedBatch",
    "SensorClient",
    "SensorError",
    "SpoolCorruptError",
    "SpoolFullError",
    "SpoolLockedError",
    "load_token",
    "register",
]

log = logging.getLogger(__name__)

MAGIC: Final = b"FWSPOOL1\n"
"""First line of every spool file (format version 1)."""
EVIDENCE: Final = "evidence"
"""Kind of a spooled evidence capture (sent to ``/ingest/evidence/{alert_id}``)."""
PCAP_TYPE: Final = "application/vnd.tcpdump.pcap"
PARQUET_TYPE: Final = "application/vnd.apache.parquet"
COLUMNAR: Final = ("flows", "events")
"""Kinds of spooled Parquet batches (``flows.parquet``, ``events/<log>.parquet``), sent last."""
_LOG_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
SENSOR_PREFIX: Final = "fws_"
BATCH_NAMESPACE: Final = uuid.UUID("6d1f0b9e-4a43-5f3c-9a57-1f1e1d7a0c2b")
"""Namespace of the content-derived batch ids (uuid5)."""
TRANSIENT_STATUS: Final = frozenset({408, 425, 429})
"""4xx answers that mean "try again later" (every 5xx does too)."""
AUTH_STATUS: Final = frozenset({401, 403})
"""Answers about the credential, not the batch: the batch stays pending and the push stops."""
_ENCODINGS: Final = ("json", "json+zstd", "pcap", "parquet")


class SensorError(FieldWardError):
    """The sensor cannot push to the console (bad settings, unreachable console, protocol error)."""


class AuthenticationError(SensorError):
    """The console refused the sensor's credential (401/403); nothing was dropped."""


class SpoolFullError(SensorError):
    """A new batch would exceed the spool's size cap; it was not written (older batches are kept)."""

    def __init__(self, message: str, *, used: int, needed: int, cap: int) -> None:
        super().__init__(message)
        self.used = used
        self.needed = needed
        self.cap = cap
        self.report: PushReport | None = None
        """What the push did before the refusal (set by :meth:`SensorClient.push_folder`)."""


class SpoolCorruptError(SensorError):
    """A spool file is truncated or damaged (its checksum does not match)."""


class SpoolLockedError(SensorError):
    """Another process uses the spool directory."""


# --- reports ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RejectedBatch:
    """A batch the console refused for good, kept under ``rejected/`` with the console's reason."""

    batch_id: str
    kind: str
    records: int
    status: int
    reason: str
    path: Path


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of sending one spooled batch (given to the ``on_batch`` progress callback)."""

    batch_id: str
    kind: str
    records: int
    outcome: Literal["applied", "duplicate", "rejected", "split"]
    written: int = 0


@dataclass(slots=True)
class PushReport:
    """What a push or a drain did. ``complete`` is True when nothing is left to deliver or to look at."""

    spooled: Counter[str] = field(default_factory=Counter)
    """Records written to the spool, by kind (``evidence``: captures)."""
    columnar: Counter[str] = field(default_factory=Counter)
    """Rows of Parquet batches written to the spool (``flows``, ``events``); not in ``spooled``."""
    batches_spooled: int = 0
    applied: int = 0
    duplicates: int = 0
    written: Counter[str] = field(default_factory=Counter)
    """Rows the console reported written, by kind."""
    delivered: Counter[str] = field(default_factory=Counter)
    """Records acknowledged by the console (applied or duplicate), by kind."""
    rejected: list[RejectedBatch] = field(default_factory=list)
    corrupt: list[Path] = field(default_factory=list)
    """Damaged spool files, moved to ``corrupt/`` (their records must be pushed again)."""
    pending: int = 0
    """Batches still in the spool (the console was unreachable)."""
    attempts: int = 0
    """HTTP requests made."""
    last_error: str | None = None

    @property
    def complete(self) -> bool:
        return self.pending == 0 and not self.rejected and not self.corrupt

    def to_json(self) -> dict[str, Any]:
        return {
            "spooled": dict(self.spooled),
            "batches_spooled": self.batches_spooled,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "written": dict(self.written),
            "delivered": dict(self.delivered),
            "rejected": [
                {
                    "batch_id": r.batch_id,
                    "kind": r.kind,
                    "records": r.records,
                    "status": r.status,
                    "reason": r.reason,
                }
                for r in self.rejected
            ],
            "corrupt": [str(p) for p in self.corrupt],
            "pending": self.pending,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "complete": self.complete,
        }


# --- the spool -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled batch as read back: header fields and its (decoded) payload."""

    path: Path
    batch_id: str
    kind: str
    records: int
    payload: bytes
    """JSON array of records, the raw pcap of an evidence entry, or a Parquet file (flows, events)."""
    alert_id: str | None = None
    log: str | None = None
    """The event log of an ``events`` batch."""


class Spool:
    """A directory of batch files, delivered in the order they were written.

    Layout: ``pending/<seq>.<kind>.<batch_id>.fwb`` (complete files only, renamed from ``tmp/``),
    ``rejected/`` (refused batches plus ``<name>.reason.json``), ``corrupt/`` (damaged files),
    ``tmp/`` (files being written; whatever is there at start-up was cut short by a crash and is
    removed), ``lock`` (an exclusive ``flock`` held while a client uses the spool).
    """

    def __init__(self, root: Path | str, *, max_bytes: int, compress: bool = True) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.compress = compress and _zstd_available()
        self.pending_dir = self.root / "pending"
        self.rejected_dir = self.root / "rejected"
        self.corrupt_dir = self.root / "corrupt"
        self.tmp_dir = self.root / "tmp"
        for folder in (self.pending_dir, self.rejected_dir, self.corrupt_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock: BinaryIO | None = open(self.root / "lock", "ab")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise SpoolLockedError(f"the spool {self.root} is in use by another sensor process") from None
        for leftover in self.tmp_dir.iterdir():
            # A crash between write and rename: the batch was never acknowledged nor complete, and
            # its records are still in the analysis folder (the caller re-pushes it).
            log.warning("removing the half-written spool file %s", leftover.name)
            leftover.unlink(missing_ok=True)
        self._seq = max((self.seq_of(p) for p in self.pending()), default=0)

    def close(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    @staticmethod
    def seq_of(path: Path) -> int:
        head = path.name.split(".", 1)[0]
        return int(head) if head.isdigit() else 0

    def pending(self) -> list[Path]:
        """Pending batch files, oldest first."""
        return sorted(
            (p for p in self.pending_dir.iterdir() if p.suffix == ".fwb"),
            key=lambda p: (self.seq_of(p), p.name),
        )

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.pending() if p.exists())

    def write(
        self,
        kind: str,
        batch_id: str,
        records: int,
        payload: bytes,
        *,
        alert_id: str | None = None,
        log: str | None = None,
        seq: int | None = None,
        replacing: bool = False,
    ) -> Path:
        """Write one batch atomically (temp file, fsync, rename, fsync of the folder); returns its path.

        ``seq`` places it in the delivery order (default: after every pending batch); ``replacing``
        skips the size cap (the halves of a split batch replace it).
        """
        if kind == EVIDENCE:
            encoding, body = "pcap", payload
        elif kind in COLUMNAR:
            encoding, body = "parquet", payload  # compressed by its own codec (zstd)
        elif self.compress:
            encoding, body = "json+zstd", _zstd(payload)
        else:
            encoding, body = "json", payload
        header: dict[str, Any] = {
            "batch_id": batch_id,
            "kind": kind,
            "records": records,
            "encoding": encoding,
            "length": len(payload),
            "stored": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "created": dt.datetime.now(dt.UTC).isoformat(),
        }
        if alert_id is not None:
            header["alert_id"] = alert_id
        if log is not None:
            header["log"] = log
        data = MAGIC + orjson.dumps(header) + b"\n" + body
        used = self.used_bytes()
        if not replacing and used + len(data) > self.max_bytes:
            raise SpoolFullError(
                f"the spool {self.root} is full: {used} bytes pending + {len(data)} for this "
                f"{kind} batch exceed the cap of {self.max_bytes} bytes; the new batch was refused "
                "(older batches are kept). Bring the console back (or raise the cap) and push again.",
                used=used,
                needed=len(data),
                cap=self.max_bytes,
            )
        if seq is None:
            self._seq += 1
            seq = self._seq
        name = f"{seq:012d}.{kind}.{batch_id}.fwb"
        temporary = self.tmp_dir / name
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        final = self.pending_dir / name
        os.replace(temporary, final)
        _fsync_dir(self.pending_dir)
        return final

    def read(self, path: Path) -> SpoolEntry:
        """Read and check one batch file; :class:`SpoolCorruptError` when it is damaged."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SpoolCorruptError(f"cannot read {path.name}: {exc.strerror or exc}") from None
        if not data.startswith(MAGIC):
            raise SpoolCorruptError(f"{path.name} is not a FieldWard spool file (bad magic)")
        end = data.find(b"\n", len(MAGIC))
        if end < 0:
            raise SpoolCorruptError(f"{path.name} is truncated (no header)")
        try:
            header = orjson.loads(data[len(MAGIC) : end])
            body = data[end + 1 :]
            batch_id, kind, encoding = str(header["batch_id"]), str(header["kind"]), str(header["encoding"])
            records, length, stored = int(header["records"]), int(header["length"]), int(header["stored"])
            digest = str(header["sha256"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise SpoolCorruptError(f"{path.name} has a damaged header") from None
        if len(body) != stored or hashlib.sha256(body).hexdigest() != digest:
            raise SpoolCorruptError(f"{path.name} is truncated or damaged (checksum mismatch)")
        if encoding not in _ENCODINGS or (kind not in KINDS and kind != EVIDENCE and kind not in COLUMNAR):
            raise SpoolCorruptError(f"{path.name}: unknown kind {kind!r} or encoding {encoding!r}")
        if encoding == "json+zstd":
            try:
                body = _unzstd(body, length)
            except (OSError, ValueError) as exc:
                raise SpoolCorruptError(f"{path.name}: cannot decompress ({exc})") from None
        alert_id, log = header.get("alert_id"), header.get("log")
        if kind == "events" and not (isinstance(log, str) and _LOG_NAME.fullmatch(log)):
            raise SpoolCorruptError(f"{path.name}: an events batch without a valid log name")
        return SpoolEntry(
            path,
            batch_id,
            kind,
            records,
            body,
            str(alert_id) if alert_id else None,
            log if kind == "events" else None,
        )

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def reject(self, path: Path, status: int, reason: str) -> Path:
        target = self.rejected_dir / path.name
        os.replace(path, target)
        note = {"status": status, "reason": reason, "at": dt.datetime.now(dt.UTC).isoformat()}
        (self.rejected_dir / (path.name + ".reason.json")).write_bytes(orjson.dumps(note))
        _fsync_dir(self.rejected_dir)
        return target

    def quarantine(self, path: Path) -> Path:
        target = self.corrupt_dir / path.name
        os.replace(path, target)
        _fsync_dir(self.corrupt_dir)
        return target


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _zstd_available() -> bool:
    import pyarrow as pa

    return bool(pa.Codec.is_available("zstd"))


def _zstd(payload: bytes) -> bytes:
    import pyarrow as pa

    return bytes(pa.compress(payload, codec="zstd", asbytes=True))


def _unzstd(body: bytes, length: int) -> bytes:
    import pyarrow as pa

    try:
        return bytes(pa.decompress(body, decompressed_size=length, codec="zstd", asbytes=True))
    except pa.ArrowException as exc:  # ArrowIOError, ArrowInvalid
        raise ValueError(str(exc)) from None


# --- reading an analysis folder --------------------------------------------------------------------


def _iso_ns(value: int) -> str:
    """Nanoseconds since the epoch as ISO 8601 UTC with nine fraction digits (what analyze writes)."""
    seconds, nanos = divmod(value, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def _communication_records(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=50_000):
            columns: dict[str, list[Any]] = {}
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                if pa.types.is_timestamp(column.type):
                    # to_pylist() would cut nanoseconds to microseconds; send them as written
                    nanos = pc.cast(column, pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_pylist()
                    columns[name] = [None if v is None else _iso_ns(v) for v in nanos]
                else:
                    columns[name] = column.to_pylist()
            names = list(columns)
            for values in zip(*columns.values(), strict=True):
                yield dict(zip(names, values, strict=True))
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise SensorError(f"cannot read {path}: {exc}") from None


def _json_records(path: Path, names: tuple[str, ...]) -> list[Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise SensorError(f"cannot read {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise SensorError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for name in names:
            value = data.get(name)
            if isinstance(value, list):
                return value
    raise SensorError(f"{path} holds no record list ({' or '.join(names)})")


def _alert_lines(path: Path) -> Iterator[bytes]:
    """The raw lines of ``alerts.jsonl`` (sent as they are; a bad line is the console's to count)."""
    try:
        with path.open("rb") as lines:
            for line in lines:
                line = line.strip()
                if line:
                    yield line
    except OSError as exc:
        raise SensorError(f"cannot read {path}: {exc.strerror or exc}") from None


def _encoded_records(kind: str, path: Path) -> Iterator[bytes]:
    """Each record of one file of the folder, as its JSON bytes."""
    if kind == "communications":
        for record in _communication_records(path):
            yield orjson.dumps(record)
    elif kind == "alerts":
        for line in _alert_lines(path):
            try:
                yield orjson.dumps(orjson.loads(line))
            except orjson.JSONDecodeError:
                # keep it: the console counts it as a weird record, the sensor does not decide
                yield orjson.dumps(line.decode("utf-8", "replace"))
    else:
        names = {"devices": ("devices",), "risk": ("devices", "risks", "findings")}.get(
            kind, ("findings", kind)
        )
        for record in _json_records(path, names):
            yield orjson.dumps(record)


def _evidence_files(folder: Path, alerts: Path) -> Iterator[tuple[str, Path]]:
    """``(alert id, pcap path)`` of every alert whose evidence capture exists inside the folder."""
    root = folder.resolve()
    for line in _alert_lines(alerts):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        alert_id, relative = record.get("id"), record.get("evidence_pcap")
        if not isinstance(alert_id, str) or not alert_id or not isinstance(relative, str) or not relative:
            continue
        candidate = (folder / relative).resolve()
        if candidate.is_relative_to(root) and candidate.is_file():  # never read outside the folder
            yield alert_id, candidate


def batch_id_for(kind: str, payload: bytes, alert_id: str | None = None) -> str:
    """The content-derived id of a batch: the same records in the same order give the same id."""
    digest = hashlib.sha256(payload).hexdigest()
    return str(uuid.uuid5(BATCH_NAMESPACE, f"{kind}:{alert_id or ''}:{digest}"))


# --- HTTP -------------------------------------------------------------------------------------------


def _verify(ca_file: Path | str | None, verify: bool) -> ssl.SSLContext | bool:
    if ca_file is not None:
        try:
            return ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise SensorError(f"cannot load the CA file {ca_file}: {exc}") from None
    if not verify:
        log.warning("TLS certificate verification is OFF: the console's identity is not checked")
    return verify


def _check_url(url: str, allow_plain_http: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SensorError(f"the console URL must be https://host[:port] (got {url!r})")
    if parts.scheme == "http" and not allow_plain_http and not _loopback(parts.hostname):
        raise SensorError(
            f"refusing to send the sensor credential over plain HTTP to {parts.hostname}; use https://"
        )
    return url.rstrip("/")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reason(response: httpx.Response) -> str:
    """The console's reason for a refusal (FastAPI ``detail``), bounded."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return (text or response.reason_phrase)[:2000]
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return (detail if isinstance(detail, str) else orjson.dumps(detail).decode())[:2000]
    return orjson.dumps(body).decode()[:2000]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class _TransientError(Exception):
    """A failure worth retrying later: connection error, timeout, 5xx, 408, 429."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def load_token(path: Path | str) -> str:
    """The sensor token kept in a file (``--token-file``): first line, stripped."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        mode = file.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise SensorError(f"cannot read the token file {file}: {exc}") from None
    if mode & 0o077:
        log.warning("the token file %s is readable by other users (chmod 600 it)", file)
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise SensorError(f"the token file {file} is empty")
    return token


def register(
    url: str,
    admin_token: str,
    name: str,
    *,
    ca_file: Path | str | None = None,
    verify: bool = True,
    timeout: float = 30.0,
    allow_plain_http: bool = False,
) -> str:
    """Register a sensor named ``name`` with an administrator's API token; returns its ``fws_`` token.

    The console shows the token once: keep it (e.g. in a ``chmod 600`` file for ``--token-file``).
    """
    base = _check_url(url, allow_plain_http)
    headers = {"Authorization": f"Bearer {admin_token}", "User-Agent": _user_agent()}
    try:
        with httpx.Client(
            base_url=base, verify=_verify(ca_file, verify), timeout=timeout, headers=headers
        ) as http:
            response = http.post("/api/v1/sensors", json={"name": name})
    except httpx.HTTPError as exc:
        _raise_tls_failure(exc, base)
        raise SensorError(f"cannot reach the console at {base}: {_describe(exc)}") from None
    if response.status_code in AUTH_STATUS:
        raise AuthenticationError(
            f"the console refused the administrator token ({response.status_code}: {_reason(response)})"
        )
    if response.status_code >= 400:
        raise SensorError(
            f"the console refused to register {name!r} ({response.status_code}: {_reason(response)})"
        )
    try:
        token = response.json()["token"]
    except (ValueError, KeyError, TypeError):
        raise SensorError("the console's answer to the registration holds no token") from None
    if not isinstance(token, str) or not token.startswith(SENSOR_PREFIX):
        raise SensorError("the console's answer to the registration holds no sensor token")
    return token


def _raise_tls_failure(exc: BaseException, url: str) -> None:
    """A certificate the sensor does not trust is a setting to fix, not an outage to wait out."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            raise SensorError(
                f"the console at {url} presented a certificate this sensor does not trust "
                f"({seen}); give the console's CA with ca_file (--ca-file); batches stay in the spool"
            ) from None
        seen = seen.__cause__ or seen.__context__


def _user_agent() -> str:
    from fieldward import __version__

    return f"fieldward-sensor/{__version__}"


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


# --- the client ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Batch:
    """Records of one kind (each its JSON bytes), or one evidence capture, before spooling."""

    kind: str
    records: list[bytes]
    alert_id: str | None = None
    log: str | None = None
    rows: int = 0
    """Rows of a Parquet batch (``records`` then holds the one file)."""


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


class SensorClient:
    """Pushes analysis results to a console through a disk spool (see the module docstring).

    ``url`` is the console's base URL (``https://console.example:8443``); ``token`` the sensor's
    ``fws_`` token; ``spool_dir`` a directory this client owns (locked while it is open).
    ``sleep``, ``rng`` and ``transport`` replace the clock, the jitter's randomness and the HTTP
    transport (tests).
    """

    def __init__(
        self,
        url: str,
        token: str,
        spool_dir: Path | str,
        *,
        ca_file: Path | str | None = None,
        verify: bool = True,
        batch_records: int = 5000,
        batch_bytes: int = 16 * 1024 * 1024,
        timeout: float = 60.0,
        max_spool_bytes: int = 2 * 1024**3,
        compress: bool = True,
        backoff_initial: float = 0.5,
        backoff_max: float = 60.0,
        allow_plain_http: bool = False,
        columnar: bool = True,
        columnar_rows: int = 100_000,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not token.startswith(SENSOR_PREFIX):
            raise SensorError(
                f"a sensor token starts with {SENSOR_PREFIX!r} (register the sensor to get one)"
            )
        self.url = _check_url(url, allow_plain_http)
        self._init_batching(
            spool_dir,
            batch_records=batch_records,
            batch_bytes=batch_bytes,
            columnar=columnar,
            columnar_rows=columnar_rows,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            max_spool_bytes=max_spool_bytes,
            compress=compress,
            sleep=sleep,
            rng=rng,
        )
        try:
            self._http = httpx.Client(
                base_url=self.url,
                verify=_verify(ca_file, verify),
                timeout=timeout,
                headers={"Authorization": f"Bearer {token}", "User-Agent": _user_agent()},
                transport=transport,
            )
        except BaseException:
            self.spool.close()
            raise

    def _init_batching(
        self,
        spool_dir: Path | str,
        *,
        batch_records: int,
        batch_bytes: int,
        columnar: bool,
        columnar_rows: int,
        backoff_initial: float,
        backoff_max: float,
        max_spool_bytes: int,
        compress: bool,
        sleep: Callable[[float], None],
        rng: random.Random | None,
    ) -> None:
        """The batching, backoff and spool settings every transport shares (HTTPS here, JetStream in
        ``console.jetstream``); the spool is opened last (it locks its folder)."""
        if batch_records < 1 or batch_bytes < 1024 or columnar_rows < 1:
            raise SensorError("batch_records and columnar_rows must be >= 1, batch_bytes >= 1024")
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.columnar = columnar
        self.columnar_rows = columnar_rows
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.spool = Spool(spool_dir, max_bytes=max_spool_bytes, compress=compress)

    def __repr__(self) -> str:  # never the token
        return f"SensorClient({self.url!r}, spool={str(self.spool.root)!r})"

    def close(self) -> None:
        self._http.close()
        self.spool.close()

    def __enter__(self) -> SensorClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # --- spooling ---

    def _chunks(self, records: Iterable[bytes]) -> Iterator[list[bytes]]:
        """Records cut into batches of at most ``batch_records`` records and about ``batch_bytes``."""
        chunk: list[bytes] = []
        size = 2
        for record in records:
            if chunk and (len(chunk) >= self.batch_records or size + len(record) + 1 > self.batch_bytes):
                yield chunk
                chunk, size = [], 2
            chunk.append(record)
            size += len(record) + 1
        if chunk:
            yield chunk

    def spool_records(
        self, kind: str, records: Iterable[bytes], report: PushReport | None = None
    ) -> PushReport:
        """Cut ``kind`` records (each its JSON bytes) into batches and write them to the spool."""
        if kind not in KINDS:
            raise SensorError(f"unknown record kind {kind!r} (one of {', '.join(KINDS)})")
        report = report if report is not None else PushReport()
        for chunk in self._chunks(records):
            self._spool_chunk(_Batch(kind, chunk), report)
        return report

    def spool_evidence(self, alert_id: str, pcap: bytes, report: PushReport | None = None) -> PushReport:
        """Spool one alert's evidence capture (sent after the alerts, to ``/ingest/evidence/{id}``)."""
        report = report if report is not None else PushReport()
        self._spool_chunk(_Batch(EVIDENCE, [pcap], alert_id), report)
        return report

    def _spool_chunk(self, batch: _Batch, report: PushReport) -> None:
        records = batch.records
        if batch.kind in COLUMNAR:
            payload = records[0]
            batch_id = batch_id_for(batch.kind, payload, batch.log)
            self.spool.write(batch.kind, batch_id, batch.rows, payload, log=batch.log)
            report.batches_spooled += 1
            report.columnar[batch.kind] += batch.rows
            return
        payload = records[0] if batch.kind == EVIDENCE else b"[" + b",".join(records) + b"]"
        batch_id = batch_id_for(batch.kind, payload, batch.alert_id)
        self.spool.write(batch.kind, batch_id, len(batch.records), payload, alert_id=batch.alert_id)
        report.batches_spooled += 1
        report.spooled[batch.kind] += len(batch.records)

    def _table_batches(self, kind: str, log: str | None, table: pa.Table) -> Iterator[_Batch]:
        """``table`` as Parquet batches of at most ``columnar_rows`` rows and about ``batch_bytes``,
        and at most half the spool's cap (a slice over the size is halved until it fits or is one
        row), so a batch always fits in the spool next to another."""
        limit = min(self.batch_bytes, self.spool.max_bytes // 2)
        for start in range(0, table.num_rows, self.columnar_rows):
            pieces = [table.slice(start, self.columnar_rows)]
            while pieces:
                piece = pieces.pop(0)
                data = _parquet_bytes(piece)
                if len(data) > limit and piece.num_rows > 1:
                    middle = piece.num_rows // 2
                    pieces[:0] = [piece.slice(0, middle), piece.slice(middle)]
                    continue
                yield _Batch(kind, [data], log=log, rows=piece.num_rows)

    def _columnar_batches(self, folder: Path) -> Iterator[_Batch]:
        """``flows.parquet`` and ``events/<log>.parquet``, one row group at a time, cut into batches."""
        sources: list[tuple[str, str | None, Path]] = []
        if (folder / "flows.parquet").is_file():
            sources.append(("flows", None, folder / "flows.parquet"))
        events = folder / "events"
        if events.is_dir():
            for path in sorted(events.glob("*.parquet")):
                if _LOG_NAME.fullmatch(path.stem):
                    sources.append(("events", path.stem, path))
                else:
                    log.warning("skipping %s: not an event log name", path.name)
        for kind, name, path in sources:
            try:
                reader = pq.ParquetFile(path)
                groups = range(reader.num_row_groups)
                for group in groups:
                    yield from self._table_batches(kind, name, reader.read_row_group(group))
            except (OSError, pa.ArrowException) as exc:
                raise SensorError(f"cannot read {path}: {exc}") from None

    def _folder_batches(self, folder: Path) -> Iterator[_Batch]:
        """The folder's batches, kinds in ingestion order, then the evidence captures."""
        if not folder.is_dir():
            raise SensorError(f"{folder} is not a folder")
        present = {kind: folder / name for kind, name in FILES.items() if (folder / name).is_file()}
        if not any(kind in present for kind in KINDS if kind not in OPTIONAL):
            raise SensorError(
                f"{folder} is not an analysis folder (no devices.json, alerts.jsonl or communications)"
            )
        for kind in KINDS:
            path = present.get(kind)
            if path is not None:
                for chunk in self._chunks(_encoded_records(kind, path)):
                    yield _Batch(kind, chunk)
        alerts = present.get("alerts")
        if alerts is not None:
            for alert_id, pcap in _evidence_files(folder, alerts):
                try:
                    yield _Batch(EVIDENCE, [pcap.read_bytes()], alert_id)
                except OSError as exc:
                    raise SensorError(f"cannot read {pcap}: {exc.strerror or exc}") from None
        if self.columnar:
            yield from self._columnar_batches(folder)

    # --- pushing ---

    def push_folder(
        self,
        out_dir: Path | str,
        *,
        retry_for: float = 0.0,
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> PushReport:
        """Push an analysis folder: every batch is spooled, then sent while the console answers.

        When the console becomes unreachable the remaining batches are only spooled (no waiting per
        batch); then, if ``retry_for`` > 0, the spool is drained with backoff for up to that many
        seconds. Batches still undelivered stay in the spool for :meth:`drain` (``report.pending``).
        A full spool raises :class:`SpoolFullError` (its ``report`` says what was done before).
        """
        report = PushReport()
        online = True
        for batch in self._folder_batches(Path(out_dir)):
            try:
                try:
                    self._spool_chunk(batch, report)
                except SpoolFullError:
                    # only when offline, or one batch larger than the cap: deliver, then try once more
                    if not online or not (online := self._send_pending(report, on_batch)):
                        raise
                    self._spool_chunk(batch, report)
            except SpoolFullError as exc:
                report.pending = len(self.spool.pending())
                exc.report = report
                raise
            if online:
                online = self._send_pending(report, on_batch)
        if not online and retry_for > 0:
            self._drain(report, retry_for, on_batch)
        report.pending = len(self.spool.pending())
        return report

    def drain(
        self, *, retry_for: float = 300.0, on_batch: Callable[[BatchResult], None] | None = None
    ) -> PushReport:
        """Send every spooled batch, oldest first, retrying transient failures with exponential
        backoff and full jitter (``Retry-After`` respected) for up to ``retry_for`` seconds.

        Returns when the spool is empty or the time is up (``report.pending`` > 0, ``last_error``
        says why); raises :class:`AuthenticationError` when the console refuses the credential.
        """
        report = PushReport()
        self._drain(report, retry_for, on_batch)
        report.pending = len(self.spool.pending())
        return report

    def _drain(
        self, report: PushReport, retry_for: float, on_batch: Callable[[BatchResult], None] | None
    ) -> None:
        deadline = time.monotonic() + retry_for
        attempt = 0
        while True:
            try:
                self._send_all(report, on_batch)
                return
            except _TransientError as exc:
                report.last_error = str(exc)
                delay = min(self.backoff_max, self.backoff_initial * 2**attempt)
                delay = self._rng.uniform(
                    0, delay
                )  # full jitter: sensors that lost the console together spread out
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.backoff_max))
                attempt += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("console still unavailable (%s); batches stay in the spool", exc)
                    return
                delay = min(delay, remaining)
                log.info("console unavailable (%s); retrying in %.1f s", exc, delay)
                self._sleep(delay)

    def _send_pending(self, report: PushReport, on_batch: Callable[[BatchResult], None] | None) -> bool:
        """Send everything spooled, once; False (the error noted) when the console is unavailable."""
        try:
            self._send_all(report, on_batch)
        except _TransientError as exc:
            report.last_error = str(exc)
            log.warning("console unavailable (%s); spooling the rest to %s", exc, self.spool.root)
            return False
        return True

    def _send_all(self, report: PushReport, on_batch: Callable[[BatchResult], None] | None) -> None:
        while True:
            pending = self.spool.pending()
            if not pending:
                return
            for path in pending:
                try:
                    entry = self.spool.read(path)
                except SpoolCorruptError as exc:
                    log.error("%s; moved to %s", exc, self.spool.corrupt_dir)
                    report.corrupt.append(self.spool.quarantine(path))
                    continue
                result = self._send(entry, report)
                if on_batch is not None:
                    on_batch(result)
                if result.outcome == "split":
                    break  # the halves were appended at the end: re-list (order within a kind kept by seq)

            else:
                return

    def _send(self, entry: SpoolEntry, report: PushReport) -> BatchResult:
        report.attempts += 1
        try:
            if entry.kind == EVIDENCE:
                assert entry.alert_id is not None
                response = self._http.post(
                    f"/api/v1/ingest/evidence/{quote(entry.alert_id, safe='')}",
                    content=entry.payload,
                    headers={"Content-Type": PCAP_TYPE, "X-Batch-Id": entry.batch_id},
                )
            elif entry.kind in COLUMNAR:
                endpoint = "flows" if entry.kind == "flows" else f"events/{entry.log}"
                response = self._http.post(
                    f"/api/v1/ingest/columnar/{endpoint}",
                    content=entry.payload,
                    headers={"Content-Type": PARQUET_TYPE, "X-Batch-Id": entry.batch_id},
                )
            else:
                body = b'{"batch_id":' + orjson.dumps(entry.batch_id) + b',"records":' + entry.payload + b"}"
                response = self._http.post(
                    f"/api/v1/ingest/{entry.kind}", content=body, headers={"Content-Type": "application/json"}
                )
        except httpx.TransportError as exc:  # connect, read, write, pool errors and timeouts
            _raise_tls_failure(exc, self.url)
            raise _TransientError(f"cannot reach the console at {self.url}: {_describe(exc)}") from None
        status = response.status_code
        if status >= 500 or status in TRANSIENT_STATUS:
            raise _TransientError(
                f"the console answered {status} ({_reason(response)})", _retry_after(response)
            )
        if status in AUTH_STATUS:
            raise AuthenticationError(
                f"the console refused the sensor credential ({status}: {_reason(response)}); "
                f"{len(self.spool.pending())} batches stay in the spool"
            )
        if status == 413 and entry.kind != EVIDENCE and entry.records > 1:
            return self._split(entry)
        if status >= 400:
            reason = _reason(response)
            target = self.spool.reject(entry.path, status, reason)
            log.error("the console rejected %s batch %s (%d: %s)", entry.kind, entry.batch_id, status, reason)
            report.rejected.append(
                RejectedBatch(entry.batch_id, entry.kind, entry.records, status, reason, target)
            )
            return BatchResult(entry.batch_id, entry.kind, entry.records, "rejected")
        return self._acknowledged(entry, response, report)

    def _acknowledged(self, entry: SpoolEntry, response: httpx.Response, report: PushReport) -> BatchResult:
        if entry.kind == EVIDENCE:
            outcome: Literal["applied", "duplicate"] = "applied"
            written = 1
            with contextlib.suppress(ValueError):
                body = response.json()
                if isinstance(body, dict) and body.get("status") == "duplicate":
                    outcome, written = "duplicate", 0
        else:
            try:
                body = response.json()
            except ValueError:
                raise _TransientError(f"the console's answer ({response.status_code}) is not JSON") from None
            if not isinstance(body, dict) or body.get("batch_id") != entry.batch_id:
                raise _TransientError("the console's answer does not acknowledge this batch")
            if body.get("status") == "applied":
                outcome = "applied"
                value = body.get("written", 0)
                written = value if isinstance(value, int) and not isinstance(value, bool) else 0
            elif body.get("status") == "duplicate":
                outcome, written = "duplicate", 0
            else:
                raise _TransientError(f"the console's answer has an unknown status {body.get('status')!r}")
        self.spool.remove(entry.path)
        if outcome == "applied":
            report.applied += 1
        else:
            report.duplicates += 1
        report.written[entry.kind] += written
        report.delivered[entry.kind] += entry.records
        return BatchResult(entry.batch_id, entry.kind, entry.records, outcome, written)

    def _split(self, entry: SpoolEntry) -> BatchResult:
        """A batch over the console's body limit (413) becomes two spooled halves (new ids), then goes."""
        if entry.kind in COLUMNAR:
            return self._split_table(entry)
        records = orjson.loads(entry.payload)
        if not isinstance(records, list):  # pragma: no cover - the payload is always the list we wrote
            raise SpoolCorruptError(f"{entry.path.name} does not hold a record list")
        middle = len(records) // 2
        seq = self.spool.seq_of(entry.path)
        for half in (records[:middle], records[middle:]):
            payload = orjson.dumps(half)
            batch_id = batch_id_for(entry.kind, payload)
            self.spool.write(entry.kind, batch_id, len(half), payload, seq=seq, replacing=True)
        self.spool.remove(entry.path)
        log.info("the console found %s batch %s too large: split in two", entry.kind, entry.batch_id)
        return BatchResult(entry.batch_id, entry.kind, entry.records, "split")

    def _split_table(self, entry: SpoolEntry) -> BatchResult:
        """A Parquet batch over the console's body limit: two spooled halves (new ids), then goes."""
        try:
            table = pq.read_table(pa.BufferReader(entry.payload))
        except (OSError, pa.ArrowException) as exc:
            raise SpoolCorruptError(f"{entry.path.name}: unreadable Parquet ({exc})") from None
        middle = table.num_rows // 2
        seq = self.spool.seq_of(entry.path)
        for half in (table.slice(0, middle), table.slice(middle)):
            payload = _parquet_bytes(half)
            batch_id = batch_id_for(entry.kind, payload, entry.log)
            self.spool.write(
                entry.kind, batch_id, half.num_rows, payload, log=entry.log, seq=seq, replacing=True
            )
        self.spool.remove(entry.path)
        log.info("the console found %s batch %s too large: split in two", entry.kind, entry.batch_id)
        return BatchResult(entry.batch_id, entry.kind, entry.records, "split")
