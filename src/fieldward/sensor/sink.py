"""Where the live sensor hands each finished analysis segment: the :class:`ResultSink` protocol.

A segment folder has the layout of ``fieldward analyze --out DIR`` plus ``segment.json``. The default
sink is :class:`HttpsSink`, the console's HTTPS push with its disk spool
(:meth:`fieldward.console.sensor_client.SensorClient.push_folder`); another transport (NATS
JetStream) plugs in by implementing the same two methods. :class:`LocalSink` keeps the folders only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from fieldward.console.jetstream import JetStreamSensorClient
from fieldward.console.sensor_client import (
    AuthenticationError,
    PushReport,
    SensorClient,
    SensorError,
    Spool,
    SpoolFullError,
)

__all__ = ["HttpsSink", "LocalSink", "PublishOutcome", "ResultSink", "SpoolingClient", "SpoolingSink"]


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    """What became of one published folder."""

    delivered: bool
    """The transport acknowledged everything of this folder (and nothing older is pending)."""
    pending: int = 0
    """Batches still held locally (spool, unacknowledged); 0 when delivered."""
    detail: str = ""
    """A human message (never a secret)."""


@runtime_checkable
class ResultSink(Protocol):
    """Receives each finished segment folder, in segment order, from the sensor's main process.

    ``publish`` must not raise for a transient failure (console or broker unreachable): it keeps the
    data locally and returns ``delivered=False``, and retries what is pending on later calls. It
    raises a :class:`~fieldward.errors.FieldWardError` only for a permanent error (credential
    refused, bad configuration).
    """

    name: str

    def publish(self, folder: Path) -> PublishOutcome: ...

    def close(self) -> None: ...


class LocalSink:
    """Keeps segment folders on disk only (no console)."""

    name = "local"

    def publish(self, folder: Path) -> PublishOutcome:
        return PublishOutcome(delivered=True, detail=f"kept in {folder}")

    def close(self) -> None:
        return None


class SpoolingClient(Protocol):
    """What :class:`SpoolingSink` needs of a transport client: a disk spool, ``push_folder`` and
    ``drain`` as :class:`~fieldward.console.sensor_client.SensorClient` has them (a JetStream client
    with the same methods fits too)."""

    @property
    def spool(self) -> Spool: ...

    def push_folder(self, out_dir: Path | str, *, retry_for: float = 0.0) -> PushReport: ...

    def drain(self, *, retry_for: float = 300.0) -> PushReport: ...

    def close(self) -> None: ...


class SpoolingSink:
    """A sink over a spooling client: every batch goes through the client's disk spool first, so an
    unreachable console or broker delays delivery but loses nothing (until the spool cap is
    reached); what is already spooled is sent first, oldest first."""

    def __init__(self, client: SpoolingClient, name: str) -> None:
        self.client = client
        self.name = name

    def publish(self, folder: Path) -> PublishOutcome:
        try:
            if self.client.spool.pending():
                self.client.drain(retry_for=0.0)  # older segments first, one attempt each
            report = self.client.push_folder(folder, retry_for=0.0)
        except AuthenticationError:
            raise
        except SpoolFullError as exc:
            pending = exc.report.pending if exc.report is not None else len(self.client.spool.pending())
            return PublishOutcome(delivered=False, pending=pending, detail=f"spool full: {exc}")
        except SensorError as exc:  # e.g. an unreadable folder: reported, the sensor runs on
            return PublishOutcome(delivered=False, pending=len(self.client.spool.pending()), detail=str(exc))
        problems = []
        if report.pending:
            problems.append(f"unreachable, {report.pending} batch(es) spooled: {report.last_error or '-'}")
        if report.rejected:
            problems.append(f"{len(report.rejected)} batch(es) rejected (kept under the spool's rejected/)")
        if report.corrupt:
            problems.append(f"{len(report.corrupt)} spool file(s) corrupt (moved to corrupt/)")
        if problems:
            return PublishOutcome(delivered=False, pending=report.pending, detail="; ".join(problems))
        return PublishOutcome(delivered=True)

    def close(self) -> None:
        self.client.close()


class HttpsSink(SpoolingSink):
    """The console's HTTPS push (the default with ``--console``)."""

    def __init__(self, client: SensorClient) -> None:
        super().__init__(client, "https")


class NatsSink(SpoolingSink):
    """NATS JetStream (``--console nats://...`` or ``tls://...``): the same spool and batches as the
    HTTPS push, acknowledged by the stream (``docs/console/jetstream.md``)."""

    def __init__(self, client: JetStreamSensorClient) -> None:
        super().__init__(client, "nats")
