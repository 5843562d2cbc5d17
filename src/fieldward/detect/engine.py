"""The detection SDK: detectors read protocol events (and finished flows) and raise alerts.

A detector is one class in one module, like a dissector: it declares the alert types it raises and
the event logs it reads. Built-in detectors live in ``fieldward.detect``; third-party ones register
through the ``fieldward.detectors`` entry point group and get the same API. A detector that raises
an exception is confined: the event is counted as the weird ``detector_exception`` and the run goes
on.
"""

from __future__ import annotations

import logging
from abc import ABC
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from fieldward.detect.knowledge import AlertRule, Knowledge
from fieldward.detect.model import Alert, AlertType, Trigger
from fieldward.detect.settings import DetectionSettings
from fieldward.protocols.base import Event, events_of_table
from fieldward.weird import WeirdLog

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "fieldward.detectors"


@dataclass
class DetectionContext:
    """What every detector of a run shares: the settings, the knowledge (baseline, analyst decisions)
    and whether the traffic at hand is being learned rather than judged."""

    settings: DetectionSettings = field(default_factory=DetectionSettings)
    knowledge: Knowledge = field(default_factory=Knowledge)
    learning: bool = False
    """The whole run is a learning pass (``--learn`` captures): alerts are not raised."""
    start_ns: int | None = None
    """Time of the first packet of the analysed traffic (start of a time-based learning period)."""

    def observe_time(self, ts_ns: int) -> None:
        if self.start_ns is None or ts_ns < self.start_ns:
            self.start_ns = ts_ns

    @property
    def learn_until_ns(self) -> int | None:
        """End of the time-based learning period, if there is one and traffic has started."""
        if self.settings.learn_minutes <= 0 or self.start_ns is None:
            return None
        return self.start_ns + round(self.settings.learn_minutes * 60e9)

    def is_learning(self, ts_ns: int) -> bool:
        """True while behaviour at ``ts_ns`` is to be learned instead of judged."""
        if self.learning:
            return True
        until = self.learn_until_ns
        return until is not None and ts_ns < until


class Detector(ABC):  # noqa: B024 - every hook is optional
    """Base of every detector. Override the hooks you need; raise alerts through ``alerts``."""

    name: ClassVar[str] = ""
    alert_types: ClassVar[tuple[AlertType, ...]] = ()
    logs: ClassVar[frozenset[str]] = frozenset()
    """Event logs ``on_event`` receives."""
    per_flow: ClassVar[bool] = False
    """True when every alert comes from one flow's own packets and events, with no state kept across
    flows or hosts: such a detector gives the same alerts when the flows are split between processes
    (the live sensor's capture workers). False (the safe default, also for plugins) means it
    correlates across flows (scans, floods, baselines, rates) and must see every flow in one place."""

    def __init__(self, alerts: AlertBook, context: DetectionContext | None = None) -> None:
        self.alerts = alerts
        self.context = context if context is not None else alerts.context

    def on_event(self, event: Any) -> None:  # noqa: B027 - optional hook
        """One event of a log in :attr:`logs`."""

    def table_filter(self, log: str, table: pa.Table) -> pa.Array | None:
        """Rows of a columnar event table (from a dissector's fast path) that :meth:`on_event` needs
        to see; None: all of them. Lets a detector skip the million register reads it ignores."""
        del log, table
        return None

    def on_table(self, event_type: type[Event], table: pa.Table) -> None:
        """Events that arrive as an Arrow table: by default the filtered rows go to :meth:`on_event`.
        Override for a columnar detector."""
        self.on_rows(event_type, table, self.table_filter(event_type.log, table))

    def on_rows(self, event_type: type[Event], table: pa.Table, mask: pa.Array | None) -> None:
        """The rows of ``table`` under ``mask`` (None: all) as events to :meth:`on_event`."""
        rows = table.filter(pc.fill_null(mask, False)) if mask is not None else table
        for event in events_of_table(event_type, rows):
            self.on_event(event)

    def on_flows(self, flows: pa.Table) -> None:  # noqa: B027 - optional hook
        """A table of finished flows (flows.parquet schema, with ``service``)."""

    def finish(self) -> None:  # noqa: B027 - optional hook
        """End of input."""


class AlertBook:
    """Every alert of a run; a repeat of (type, source, destination, protocol) aggregates.

    Alerts the knowledge says are normal (learned by the analyst), muted, or raised while the traffic
    is being learned are not kept: they are counted in :attr:`suppressed` by reason. An alert raised
    during a learning period is learned as normal (an approved scanner, a maintenance download): the
    same type between the same source and destination does not alert afterwards either.
    """

    def __init__(self, context: DetectionContext | None = None) -> None:
        self.context = context if context is not None else DetectionContext()
        self._alerts: dict[tuple[str, str, str, str], Alert] = {}
        self.suppressed: Counter[str] = Counter()

    def raise_alert(
        self,
        alert_type: AlertType,
        *,
        ts: int,
        src: str,
        dst: str,
        protocol: str,
        explanation: str,
        flow_id: int = -1,
        details: dict[str, Any] | None = None,
    ) -> Alert | None:
        """Raise (or repeat) an alert; None when it is suppressed (see the class docstring)."""
        context = self.context
        knowledge = context.knowledge
        if context.is_learning(ts):
            if alert_type.learnable:  # what happens while learning is normal: remember it as such
                knowledge.learned.add(AlertRule(alert_type.id, src, dst))
                self.suppressed["learning"] += 1
                return None
            if context.learning:  # a --learn pass keeps no alerts, and this one teaches nothing
                self.suppressed["learning"] += 1
                return None
        if knowledge.learned or knowledge.mutes:
            if knowledge.is_learned(alert_type.id, src, dst):
                self.suppressed["learned"] += 1
                return None
            if knowledge.is_muted(alert_type.id, src, dst):
                self.suppressed["muted"] += 1
                return None
        key = (alert_type.id, src, dst, protocol)
        trigger = Trigger(flow_id, ts) if flow_id >= 0 else None
        alert = self._alerts.get(key)
        if alert is not None:
            alert.repeat(ts, trigger)
            return alert
        alert = self._alerts[key] = Alert(
            type=alert_type,
            src=src,
            dst=dst,
            protocol=protocol,
            first_ts=ts,
            last_ts=ts,
            explanation=explanation,
            triggers=[trigger] if trigger is not None else [],
            details=dict(details or {}),
        )
        return alert

    def __iter__(self) -> Iterator[Alert]:
        return iter(sorted(self._alerts.values(), key=lambda a: (a.first_ts, a.type.id, a.src, a.dst)))

    def __len__(self) -> int:
        return len(self._alerts)


def builtin_detectors() -> list[type[Detector]]:
    from fieldward.detect.anomaly import AnomalyDetector
    from fieldward.detect.baseline import BaselineDetector
    from fieldward.detect.operations import OperationsDetector
    from fieldward.detect.protocol import ProtocolDetector
    from fieldward.detect.recon import ReconDetector
    from fieldward.detect.threats import ThreatDetector

    return [
        OperationsDetector,
        ReconDetector,
        ProtocolDetector,
        ThreatDetector,
        BaselineDetector,
        AnomalyDetector,
    ]


def installed_detectors(plugins: bool = True) -> list[type[Detector]]:
    """Built-in detectors, then the ones registered under the ``fieldward.detectors`` entry points."""
    found = builtin_detectors()
    if plugins:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                cls = point.load()
            except Exception as exc:  # a broken plugin must not stop the sensor
                logger.warning("detector plugin %s failed to load: %s", point.name, exc)
                continue
            if isinstance(cls, type) and issubclass(cls, Detector):
                found.append(cls)
    return found


DetectorScope = Literal["all", "per_flow", "correlated"]
"""Which detectors a run uses: all of them, only the per-flow ones (:attr:`Detector.per_flow`), or
only the ones that correlate across flows."""


def select_detectors(scope: DetectorScope, plugins: bool = True) -> list[type[Detector]]:
    """The installed detectors of ``scope``, in their usual order."""
    found = installed_detectors(plugins)
    if scope == "per_flow":
        return [cls for cls in found if cls.per_flow]
    if scope == "correlated":
        return [cls for cls in found if not cls.per_flow]
    return found


class DetectionEngine:
    """Runs the detectors over a run's events and flows; ``alerts`` holds what they raised."""

    def __init__(
        self,
        detectors: Iterable[type[Detector]] | None = None,
        weird: WeirdLog | None = None,
        context: DetectionContext | None = None,
    ) -> None:
        self.context = context if context is not None else DetectionContext()
        self.alerts = AlertBook(self.context)
        self.weird = weird if weird is not None else WeirdLog()
        self.detectors = [
            cls(self.alerts, self.context)
            for cls in (detectors if detectors is not None else installed_detectors())
        ]
        self._routes: dict[str, list[Detector]] = {}
        for detector in self.detectors:
            for log in detector.logs:
                self._routes.setdefault(log, []).append(detector)
        self._failed: set[str] = set()

    def observe_time(self, ts_ns: int) -> None:
        """The earliest packet time of a batch (starts the time-based learning period)."""
        self.context.observe_time(ts_ns)

    def wants(self, log: str) -> bool:
        return log in self._routes

    def observe_event(self, event: Any) -> None:
        for detector in self._routes.get(event.log, ()):
            self._guard(detector, detector.on_event, event)

    def observe_table(self, event_type: type[Event], table: pa.Table) -> None:
        for detector in self._routes.get(event_type.log, ()):
            self._guard(detector, detector.on_table, event_type, table)

    def observe_flows(self, flows: pa.Table) -> None:
        for detector in self.detectors:
            self._guard(detector, detector.on_flows, flows)

    def finish(self) -> None:
        for detector in self.detectors:
            self._guard(detector, detector.finish)

    def _guard(self, detector: Detector, hook: Any, *args: Any) -> None:
        try:
            hook(*args)
        except Exception as exc:  # a detector bug must not stop the run
            self.weird.report("detector_exception", "detect", f"{detector.name}: {type(exc).__name__}")
            if detector.name not in self._failed:
                self._failed.add(detector.name)
                logger.info("detector %s raised %s: %s", detector.name, type(exc).__name__, exc)

    def alert_types(self) -> list[AlertType]:
        return [t for detector in self.detectors for t in detector.alert_types]


def write_alerts_jsonl(alerts: Iterable[Alert], path: Any) -> int:
    """One JSON object per line (``alerts.jsonl``); returns the number written."""
    count = 0
    with open(path, "wb") as handle:
        for alert in alerts:
            handle.write(orjson.dumps(alert.to_json()) + b"\n")
            count += 1
    return count
