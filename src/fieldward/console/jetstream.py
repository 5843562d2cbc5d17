"""Sensor transport over NATS JetStream: sensors publish their batches, console workers ingest them.

The HTTPS push (:mod:`fieldward.console.sensor_client`) stays the simple default. For a large site
or many sites, sensors can publish the same batches to a JetStream stream instead, and any number of
console ingest workers (:mod:`fieldward.console.jetstream_worker`) consume them from one shared
durable pull consumer, so ingestion scales horizontally. This module holds what both sides share
(subjects, stream and header names, connection settings) and the sensor side:

- :class:`JetStreamSensorClient` is a :class:`~fieldward.console.sensor_client.SensorClient` whose
  batches go to JetStream instead of ``POST /api/v1/ingest``: the same batches (same kinds, same
  content-derived batch ids), the same disk spool (a batch leaves it only when the stream
  acknowledged it), the same backoff when NATS is down;
- every batch is published on ``fieldward.ingest.<sensor>.<kind>`` with ``Nats-Msg-Id`` =
  ``<sensor>:<batch id>``, so the stream drops a batch published twice within its duplicate window
  (the sensor's name is part of the id: two sensors may send batches with identical content);
  record batches are zstd-compressed JSON arrays, flows/events Parquet files and evidence pcaps go
  as they are; a batch larger than the server's ``max_payload`` is split in halves like a 413;
- the live sensor publishes through it with ``fieldward.sensor.sink.NatsSink`` (``sensor run --console nats://...``).

Authentication is NATS's: user and password, a token, or an nkey/JWT ``.creds`` file, over TLS
(``tls://`` or the server's ``tls`` block). The sensor's identity is the ``<sensor>`` subject token,
and the server's ``permissions`` must allow each sensor user to publish only on its own
``fieldward.ingest.<sensor>.>`` (``docs/console/jetstream.md`` shows the configuration). Passwords
are read from files, never taken from the URL, and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from fieldward.console.sensor_client import (
    COLUMNAR,
    EVIDENCE,
    AuthenticationError,
    BatchResult,
    PushReport,
    SensorClient,
    SensorError,
    SpoolEntry,
    _TransientError,
    _zstd,
)
from fieldward.errors import FieldWardError
from fieldward.store.ingest import KINDS

__all__ = [
    "DEFAULT_STREAM",
    "SUBJECT_PREFIX",
    "JetStreamSensorClient",
    "NatsSettings",
    "ensure_stream",
    "is_nats_url",
    "subject_for",
]

SUBJECT_PREFIX: Final = "fieldward.ingest"
"""Sensors publish on ``fieldward.ingest.<sensor>.<kind>``."""
DEFAULT_STREAM: Final = "FIELDWARD_INGEST"
TRANSPORT_KINDS: Final = (*KINDS, *COLUMNAR, EVIDENCE)
"""What a subject's last token may be: record kinds, ``flows``, ``events``, ``evidence``."""
SENSOR_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
NKEY_USER_SEED: Final = re.compile(r"SU[A-Z2-7]{56}")
"""A user nkey seed as ``nsc`` or ``nk -gen user`` writes it (base32, 58 characters)."""
"""A sensor name that is one NATS subject token (no ``.``, ``*``, ``>`` or spaces)."""

# Message headers (besides Nats-Msg-Id). Values are plain ASCII; none carries a secret.
H_BATCH: Final = "Fieldward-Batch-Id"
H_RECORDS: Final = "Fieldward-Records"
H_ALERT: Final = "Fieldward-Alert-Id"
H_LOG: Final = "Fieldward-Log"
H_ENCODING: Final = "Fieldward-Encoding"
"""``json+zstd`` (record batches), ``parquet`` (flows, events) or ``pcap`` (evidence)."""
H_LENGTH: Final = "Fieldward-Length"
"""Uncompressed size of a ``json+zstd`` body (bounds the decompression)."""
PAYLOAD_MARGIN: Final = 4096
"""Bytes of ``max_payload`` left for the headers."""


class TransportError(FieldWardError):
    """The JetStream transport is misconfigured (URL, credentials, sensor name)."""


def is_nats_url(url: str) -> bool:
    """True for a ``nats://`` or ``tls://`` server URL (the HTTPS push handles every other one)."""
    return url.split("://", 1)[0].lower() in ("nats", "tls")


def subject_for(sensor: str, kind: str) -> str:
    return f"{SUBJECT_PREFIX}.{sensor}.{kind}"


def check_sensor_name(name: str) -> str:
    if not SENSOR_NAME.fullmatch(name):
        raise TransportError(
            f"the sensor name {name!r} cannot be a NATS subject token: use 1-64 letters, digits, '-' "
            "or '_' (starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """How to reach and authenticate to the NATS servers (secrets are kept out of ``repr``)."""

    servers: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: Path | None = None
    ca_file: Path | None = None
    connect_timeout: float = 2.0
    nkey_seed: str | None = None
    """A user nkey seed (server ``users = [{nkey: U...}]``): the client signs the server's nonce."""

    def __repr__(self) -> str:
        return f"NatsSettings(servers={self.servers!r}, user={self.user!r}, creds={self.creds_file!s})"

    @classmethod
    def from_url(
        cls, url: str, secret_file: Path | None = None, *, ca_file: Path | None = None
    ) -> NatsSettings:
        """Settings from ``nats://[user@]host:port[,host2:port]`` and an optional secret file.

        The secret file is either a NATS ``.creds`` file (JWT and nkey seed), or a user nkey seed
        (``SU...``, for a server that lists the user's public nkey), or holds on its first line the
        password of the URL's user, or, when the URL names no user, a token. A password
        written in the URL is refused (it would show in process listings and shell history).
        """
        parts = urlsplit(url)
        if not is_nats_url(url) or not parts.netloc:
            raise TransportError(f"a NATS URL is nats://[user@]host:port (got {url.split('@')[-1]!r})")
        if parts.password is not None:
            raise TransportError(
                "do not put the NATS password in the URL; write it to a file (chmod 600) and pass "
                "that file (--token-file / --creds)"
            )
        user = unquote(parts.username) if parts.username else None
        hosts = parts.netloc.rsplit("@", 1)[-1]
        servers = tuple(f"{parts.scheme}://{host.strip()}" for host in hosts.split(",") if host.strip())
        password = token = seed = None
        creds: Path | None = None
        if secret_file is not None:
            text = _read_secret(secret_file)
            first = text.strip().splitlines()[0].strip()
            if "BEGIN NATS USER JWT" in text:
                creds = secret_file
            elif NKEY_USER_SEED.fullmatch(first):
                seed = first
            elif user is not None:
                password = text.strip().splitlines()[0].strip()
            else:
                token = text.strip().splitlines()[0].strip()
        return cls(servers, user, password, token, creds, ca_file, nkey_seed=seed)

    async def connect(self, *, name: str, on_error: Callable[[Exception], None] | None = None) -> NatsClient:
        """One connection; it does not reconnect by itself (callers retry with their own backoff)."""

        async def error_cb(exc: Exception) -> None:
            if on_error is not None:
                on_error(exc)

        options: dict[str, Any] = {
            "servers": list(self.servers),
            "name": name,
            "connect_timeout": max(1, round(self.connect_timeout)),
            "allow_reconnect": False,
            "max_reconnect_attempts": 0,
            "error_cb": error_cb,
        }
        if self.creds_file is not None:
            options["user_credentials"] = str(self.creds_file)
        elif self.nkey_seed is not None:
            options["nkeys_seed_str"] = self.nkey_seed
        elif self.user is not None:
            options["user"] = self.user
            if self.password is not None:
                options["password"] = self.password
        elif self.token is not None:
            options["token"] = self.token
        if self.ca_file is not None or any(s.startswith("tls://") for s in self.servers):
            try:
                options["tls"] = ssl.create_default_context(
                    cafile=str(self.ca_file) if self.ca_file is not None else None
                )
            except (OSError, ssl.SSLError) as exc:
                raise TransportError(f"cannot load the CA file {self.ca_file}: {exc}") from None
        # nats-py retries a refused initial connection forever even with allow_reconnect=False:
        # bound the attempt ourselves (TimeoutError: the caller's "NATS unreachable" path).
        budget = (self.connect_timeout + 1.0) * len(self.servers)
        return await asyncio.wait_for(nats.connect(**options), budget)


def _read_secret(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise TransportError(f"cannot read the credential file {path}: {exc}") from None
    if not text.strip():
        raise TransportError(f"the credential file {path} is empty")
    if mode & 0o077:
        import logging

        logging.getLogger(__name__).warning("the credential file %s is readable by other users", path)
    return text


async def ensure_stream(
    js: JetStreamContext,
    stream: str = DEFAULT_STREAM,
    *,
    max_bytes: int = -1,
    duplicate_window: float = 600.0,
    replicas: int = 1,
) -> None:
    """Create the ingest stream when it does not exist (file storage, work-queue retention: a batch
    stays until a worker acknowledged it; when full, new batches are refused, so sensors spool them,
    instead of old ones being dropped)."""
    config = StreamConfig(
        name=stream,
        subjects=[f"{SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_bytes=max_bytes,
        duplicate_window=duplicate_window,
        num_replicas=replicas,
    )
    try:
        await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        with contextlib.suppress(nats.js.errors.BadRequestError):  # created meanwhile by another worker
            await js.add_stream(config)


# --- the sensor side ---------------------------------------------------------------------------------


class JetStreamSensorClient(SensorClient):
    """Publishes a sensor's batches to JetStream through the same disk spool as the HTTPS push.

    ``url`` is ``nats://[sensor@]host:port`` (several servers: ``nats://a:4222,b:4222``); ``sensor``
    names the sensor (default: the URL's user), which is the subject token the console records the
    batches under. ``secret_file``: see :meth:`NatsSettings.from_url`.
    """

    def __init__(
        self,
        url: str,
        spool_dir: Path | str,
        *,
        sensor: str | None = None,
        secret_file: Path | None = None,
        ca_file: Path | None = None,
        stream: str = DEFAULT_STREAM,
        batch_records: int = 5000,
        batch_bytes: int = 16 * 1024 * 1024,
        publish_timeout: float = 10.0,
        max_spool_bytes: int = 2 * 1024**3,
        compress: bool = True,
        backoff_initial: float = 0.5,
        backoff_max: float = 60.0,
        columnar: bool = True,
        columnar_rows: int = 100_000,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        # Not SensorClient.__init__: it builds the HTTP client. The batching and spool settings
        # (_init_batching) and the retry machinery (push_folder, drain, _drain, _send_all, _split)
        # are inherited unchanged; _send publishes.
        self.nats = NatsSettings.from_url(url, secret_file, ca_file=ca_file)
        name = sensor if sensor is not None else self.nats.user
        if name is None:
            raise TransportError("name the sensor: nats://SENSOR@host:4222 (or sensor=...)")
        self.sensor = check_sensor_name(name)
        self.url = ",".join(self.nats.servers)
        self.stream = stream
        self.publish_timeout = publish_timeout
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
        self._loop = asyncio.new_event_loop()
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._refusal: str | None = None

    def __repr__(self) -> str:  # never a credential
        return f"JetStreamSensorClient({self.url!r}, sensor={self.sensor!r}, spool={str(self.spool.root)!r})"

    def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._nc.close())
            self._nc = self._js = None
        self._loop.close()
        self.spool.close()

    def _on_error(self, exc: Exception) -> None:
        text = str(exc)
        if "permissions violation" in text.lower() or "authorization" in text.lower():
            self._refusal = text[:300]

    def _connected(self) -> JetStreamContext:
        if self._js is not None and self._nc is not None and self._nc.is_connected:
            return self._js
        self._nc = self._js = None
        try:
            nc = self._loop.run_until_complete(
                self.nats.connect(name=f"fieldward-sensor-{self.sensor}", on_error=self._on_error)
            )
        except (nats.errors.AuthorizationError, nats.errors.InvalidUserCredentialsError) as exc:
            raise _permanent_auth(self.url, exc) from None
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            if "authorization" in str(exc).lower():
                raise _permanent_auth(self.url, exc) from None
            raise _TransientError(f"cannot reach NATS at {self.url}: {type(exc).__name__}") from None
        self._nc, self._js = nc, nc.jetstream(timeout=self.publish_timeout)
        return self._js

    def _message(self, entry: SpoolEntry) -> tuple[bytes, dict[str, str]]:
        headers = {
            "Nats-Msg-Id": f"{self.sensor}:{entry.batch_id}",
            H_BATCH: entry.batch_id,
            H_RECORDS: str(entry.records),
        }
        if entry.kind == EVIDENCE:
            headers[H_ENCODING] = "pcap"
            headers[H_ALERT] = entry.alert_id or ""
            return entry.payload, headers
        if entry.kind in COLUMNAR:
            headers[H_ENCODING] = "parquet"
            if entry.log is not None:
                headers[H_LOG] = entry.log
            return entry.payload, headers
        headers[H_ENCODING] = "json+zstd"
        headers[H_LENGTH] = str(len(entry.payload))
        return _zstd(entry.payload), headers

    def _send(self, entry: SpoolEntry, report: PushReport) -> BatchResult:
        report.attempts += 1
        js = self._connected()
        payload, headers = self._message(entry)
        assert self._nc is not None
        limit = self._nc.max_payload - PAYLOAD_MARGIN
        if len(payload) > limit:
            if entry.kind != EVIDENCE and entry.records > 1:
                return self._split(entry)
            reason = (
                f"the {entry.kind} batch is {len(payload)} bytes, over the NATS server's max_payload "
                f"({self._nc.max_payload}); raise max_payload or push it over HTTPS"
            )
            return self._reject(entry, report, reason)
        self._refusal = None
        try:
            ack = self._loop.run_until_complete(
                js.publish(
                    subject_for(self.sensor, entry.kind),
                    payload,
                    timeout=self.publish_timeout,
                    stream=self.stream,
                    headers=headers,
                )
            )
        except nats.js.errors.APIError as exc:
            # the stream is full (discard new), a cluster is electing a leader, ...: try later
            raise _TransientError(f"JetStream refused the batch: {exc.description or exc}") from None
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            self._drop_connection()
            if self._refusal is not None:
                raise _permanent_auth(self.url, Exception(self._refusal)) from None
            if isinstance(exc, nats.js.errors.NoStreamResponseError):
                raise _TransientError(
                    f"no JetStream stream takes {subject_for(self.sensor, entry.kind)} yet "
                    "(start an ingest worker, which creates it)"
                ) from None
            raise _TransientError(f"publishing to NATS at {self.url} failed: {type(exc).__name__}") from None
        self.spool.remove(entry.path)
        if ack.duplicate:
            report.duplicates += 1
            outcome = "duplicate"
        else:
            report.applied += 1
            outcome = "applied"
        report.delivered[entry.kind] += entry.records
        # "written" in the HTTPS sense (rows the console wrote) is not known at publish time: the
        # stream acknowledged durable storage, the workers write the rows.
        return BatchResult(entry.batch_id, entry.kind, entry.records, outcome)  # type: ignore[arg-type]

    def _reject(self, entry: SpoolEntry, report: PushReport, reason: str) -> BatchResult:
        from fieldward.console.sensor_client import RejectedBatch

        target = self.spool.reject(entry.path, 413, reason)
        report.rejected.append(RejectedBatch(entry.batch_id, entry.kind, entry.records, 413, reason, target))
        return BatchResult(entry.batch_id, entry.kind, entry.records, "rejected")

    def _drop_connection(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._nc.close())
        self._nc = self._js = None


def _permanent_auth(url: str, exc: BaseException) -> SensorError:
    return AuthenticationError(
        f"the NATS server at {url} refused this sensor ({str(exc)[:200]}); check its credentials and "
        "that its user may publish on fieldward.ingest.<sensor>.>; batches stay in the spool"
    )


def push(
    folder: Path | None,
    url: str,
    spool: Path,
    *,
    secret_file: Path | None = None,
    ca_file: Path | None = None,
    retry_for: float = 300.0,
) -> PushReport:
    """``fieldward push``/``analyze --to nats://...``: publish a folder (or only the spool)."""
    with JetStreamSensorClient(url, spool, secret_file=secret_file, ca_file=ca_file) as client:
        if folder is not None:
            return client.push_folder(folder, retry_for=retry_for)
        return client.drain(retry_for=retry_for)


def push_cli(
    folder: Path | None,
    url: str,
    secret_file: Path | None,
    ca_file: Path | None,
    spool: Path,
    retry_for: float,
    quiet: bool,
) -> None:
    """The ``nats://`` branch of ``fieldward push`` / ``analyze --to``: exit 3 while batches stay
    pending (NATS unreachable), 4 when batches were rejected or corrupt."""
    import typer

    report = push(folder, url, spool, secret_file=secret_file, ca_file=ca_file, retry_for=retry_for)
    if not quiet:
        typer.echo(
            f"published to JetStream at {url.split('@')[-1]}: {report.applied} batch(es) stored, "
            f"{report.duplicates} already there, {sum(report.delivered.values()):,} records, "
            f"{report.pending} pending in the spool, {len(report.rejected)} rejected"
        )
    if report.rejected or report.corrupt:
        raise typer.Exit(code=4)
    if report.pending:
        raise typer.Exit(code=3)
