"""Typed alerts: what fired, how bad it is, why, what to do, and the evidence.

An :class:`AlertType` is the static description of one kind of alert (title, severity, MITRE ATT&CK
for ICS techniques, recommended action). An :class:`Alert` is one occurrence stream of it between a
source and a destination: repeats aggregate into the same alert with a counter (``count``) and a
growing time span instead of flooding the analyst.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


class Status(StrEnum):
    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class AlertType:
    """One kind of alert, declared by the detector that raises it."""

    id: str
    """Stable identifier, ``engine.name`` (e.g. ``operations.s7_plc_stop``)."""
    title: str
    severity: Severity
    description: str
    recommendation: str
    mitre: tuple[str, ...] = ()
    """MITRE ATT&CK for ICS technique ids (T08xx)."""
    learnable: bool = True
    """Whether firing during a learning period makes it normal. False for what is never normal
    (threat-intel hits, brute force): it still alerts during ``--learn-minutes`` and is not learned
    from ``--learn`` captures."""


class AlertTypeFactory(Protocol):
    def __call__(
        self,
        name: str,
        title: str,
        severity: Severity,
        mitre: tuple[str, ...],
        description: str,
        recommendation: str,
        learnable: bool = True,
    ) -> AlertType: ...


def alert_types_of(engine: str) -> AlertTypeFactory:
    """The AlertType factory of one engine: ``_type = alert_types_of("operations")``, then
    ``_type(name, title, severity, mitre, description, recommendation, learnable=True)`` makes
    ``operations.<name>``."""

    def make(
        name: str,
        title: str,
        severity: Severity,
        mitre: tuple[str, ...],
        description: str,
        recommendation: str,
        learnable: bool = True,
    ) -> AlertType:
        return AlertType(f"{engine}.{name}", title, severity, description, recommendation, mitre, learnable)

    return make


@dataclass(frozen=True, slots=True)
class Trigger:
    """A packet that made an alert fire: its flow in ``flows.parquet`` and its time."""

    flow_id: int
    ts: int


@dataclass(slots=True)
class Alert:
    """An alert: one type between one source and one destination over one protocol."""

    type: AlertType
    src: str
    dst: str
    protocol: str
    first_ts: int
    last_ts: int
    explanation: str
    """Why it fired, in words, for the first occurrence."""
    count: int = 1
    triggers: list[Trigger] = field(default_factory=list)
    status: Status = Status.NEW
    src_device: str | None = None
    dst_device: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    MAX_TRIGGERS = 20

    @property
    def id(self) -> str:
        """Stable across runs: the same type between the same endpoints is the same alert."""
        key = f"{self.type.id}|{self.src}|{self.dst}|{self.protocol}".encode()
        return hashlib.sha256(key).hexdigest()[:16]

    def repeat(self, ts: int, trigger: Trigger | None) -> None:
        self.count += 1
        self.first_ts = min(self.first_ts, ts)
        self.last_ts = max(self.last_ts, ts)
        if trigger is not None and len(self.triggers) < self.MAX_TRIGGERS:
            self.triggers.append(trigger)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "engine": self.type.id.split(".")[0],
            "type": self.type.id,
            "title": self.type.title,
            "severity": self.type.severity.value,
            "status": self.status.value,
            "first_ts": _iso(self.first_ts),
            "last_ts": _iso(self.last_ts),
            "count": self.count,
            "src": self.src,
            "dst": self.dst,
            "src_device": self.src_device,
            "dst_device": self.dst_device,
            "protocol": self.protocol,
            "explanation": self.explanation,
            "description": self.type.description,
            "recommendation": self.type.recommendation,
            "mitre": list(self.type.mitre),
            "evidence": [{"flow_id": t.flow_id, "ts": _iso(t.ts)} for t in self.triggers],
            "details": self.details,
        }


def _iso(ts_ns: int) -> str:
    seconds, ns = divmod(int(ts_ns), 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ns:09d}Z"
