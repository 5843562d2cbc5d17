"""Schemas of the sensor transport (``/api/v1/transport``): the JetStream dead letters."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from fieldward.console.api.schemas import OutputModel

__all__ = [
    "DeadLetterDetail",
    "DeadLetterPublic",
    "DeadLetterRetryPublic",
    "DeadLettersRetryPublic",
    "WorkerPublic",
]


class DeadLetterPublic(OutputModel):
    """A JetStream message an ingest worker terminated because it could not be applied."""

    id: int
    received: dt.datetime = Field(description="When the worker dead-lettered it")
    stream: str
    stream_seq: int = Field(description="The message's sequence number in the stream")
    subject: str = Field(description="fieldward.ingest.<sensor>.<kind>")
    sensor: str | None = Field(description="The sensor name of the subject")
    kind: str | None = Field(description="The batch kind of the subject (devices, flows, evidence, ...)")
    batch_id: str | None
    code: str = Field(description="The reason's code, e.g. sensor.unknown, body.bad_json")
    reason: str = Field(description="The code and a short explanation")
    deliveries: int = Field(description="Deliveries of the message before it was dead-lettered")
    size: int = Field(description="Bytes of the stored payload")


class DeadLetterDetail(DeadLetterPublic):
    """One dead letter with its FieldWard headers and its payload (base64, as the sensor sent it)."""

    headers: dict[str, str]
    payload_base64: str = Field(description="The message body, base64 (zstd JSON, Parquet or pcap)")


class DeadLetterRetryPublic(OutputModel):
    """The outcome of applying a dead letter again (the dead letter is removed)."""

    id: int
    batch_id: str
    kind: str
    status: Literal["applied", "duplicate"] = Field(
        description="applied: written now; duplicate: the batch had been applied before"
    )


class DeadLettersRetryPublic(OutputModel):
    """The outcome of applying the matching dead letters again, oldest first."""

    tried: int
    applied: int
    duplicate: int
    failed: int = Field(description="Still refused (kept, with their new reason)")
    remaining: int = Field(description="Matching dead letters left (failed ones and those past the limit)")


class WorkerPublic(OutputModel):
    """One JetStream ingest worker process and its counters since it started."""

    id: int
    name: str = Field(description="<host>:<pid>-<random>, or the worker's --name")
    stream: str
    durable: str
    state: Literal["running", "stale", "stopped"] = Field(
        description="stopped: it said so as it stopped; running: it reported within three report "
        "intervals (report_every); stale: its row still says running but it has not reported for "
        "longer than that (killed, hung or cut off from the database; derived, not stored)"
    )
    alive: bool = Field(description="state is running")
    started: dt.datetime
    last_seen: dt.datetime
    report_every: float = Field(description="Seconds between two reports while it runs")
    applied: int = Field(description="Batches applied")
    duplicates: int = Field(description="Batches found already applied")
    records: int = Field(description="Records of the applied batches")
    redelivered: int
    retried: int = Field(description="Batches put back for later (database down, alert not yet stored)")
    dead_lettered: int
