"""Counters shared by the sensor's processes, and their Prometheus text exposition.

Each capture worker owns one row of a shared ``int64`` array (no lock: one writer per row); the
main process reads every row to serve ``/metrics`` and to write ``status.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fieldward.capture.live import interface_state

__all__ = ["Field", "SensorCollector", "SharedCounters", "WorkerState", "make_registry"]


class Field(IntEnum):
    PACKETS = 0
    BYTES = 1
    BATCHES = 2
    KERNEL_PACKETS = 3
    KERNEL_DROPS = 4
    SENSOR_DROPS = 5
    ALERTS = 6
    RING_BYTES = 7
    RING_SKIPPED = 8
    LAST_PACKET_NS = 9
    STATE = 10
    EVENTS = 11
    ANALYSIS_NS = 12
    HEARTBEAT_NS = 13
    RING_FILES = 14


class WorkerState(IntEnum):
    STARTING = 0
    CAPTURING = 1
    WAITING = 2
    """The interface is missing or down: retrying."""
    STOPPED = 3
    FAILED = 4


class SharedCounters:
    """A ``workers x len(Field)`` table of int64 counters in shared memory."""

    def __init__(self, workers: int, ctx: Any) -> None:
        self.workers = workers
        self.width = len(Field)
        self._array: Any = ctx.RawArray("q", workers * self.width)
        self.base: list[int] = [0] * self.width
        """Totals of earlier runs of a restarted worker row (kept so counters only increase)."""

    def add(self, worker: int, field: Field, value: int) -> None:
        self._array[worker * self.width + field] += value

    def set(self, worker: int, field: Field, value: int) -> None:
        self._array[worker * self.width + field] = value

    def get(self, worker: int, field: Field) -> int:
        return int(self._array[worker * self.width + field])

    def total(self, field: Field) -> int:
        return sum(self.get(w, field) for w in range(self.workers))

    def row(self, worker: int) -> dict[str, int]:
        return {f.name.lower(): self.get(worker, f) for f in Field}


_COUNTERS = {
    Field.PACKETS: ("fieldward_sensor_packets", "Packets captured and analysed"),
    Field.BYTES: ("fieldward_sensor_bytes", "Captured bytes analysed"),
    Field.BATCHES: ("fieldward_sensor_batches", "Micro-batches analysed"),
    Field.KERNEL_PACKETS: ("fieldward_sensor_kernel_packets", "Packets the kernel delivered to the socket"),
    Field.KERNEL_DROPS: ("fieldward_sensor_kernel_drops", "Packets dropped by the kernel: capture ring full"),
    Field.SENSOR_DROPS: ("fieldward_sensor_own_drops", "Packets captured but not analysed by the sensor"),
    Field.ALERTS: ("fieldward_sensor_alerts", "Alerts raised"),
    Field.EVENTS: ("fieldward_sensor_events", "Protocol events produced in finished segments"),
    Field.RING_SKIPPED: ("fieldward_sensor_ring_skipped_packets", "Packets not written to the evidence ring"),
}
_GAUGES = {
    Field.RING_BYTES: ("fieldward_sensor_ring_bytes", "Bytes held by the evidence ring"),
    Field.RING_FILES: ("fieldward_sensor_ring_files", "Files in the evidence ring"),
    Field.STATE: (
        "fieldward_sensor_worker_state",
        "0 starting, 1 capturing, 2 waiting for interface, 3 stopped, 4 failed",
    ),
    Field.LAST_PACKET_NS: ("fieldward_sensor_last_packet_seconds", "Capture time of the newest packet"),
}


class SensorCollector(Collector):
    """Reads the shared counters, the interface's own counters and the main process's state."""

    def __init__(
        self, counters: SharedCounters, interface: str, extra: Callable[[], dict[str, float]]
    ) -> None:
        self.counters = counters
        self.interface = interface
        self.extra = extra

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        c = self.counters
        for field, (name, doc) in _COUNTERS.items():
            metric = CounterMetricFamily(name, doc, labels=["interface", "worker"])
            for w in range(c.workers):
                metric.add_metric([self.interface, str(w)], float(c.get(w, field)))
            yield metric
        for field, (name, doc) in _GAUGES.items():
            gauge = GaugeMetricFamily(name, doc, labels=["interface", "worker"])
            for w in range(c.workers):
                value = float(c.get(w, field))
                gauge.add_metric(
                    [self.interface, str(w)], value / 1e9 if field == Field.LAST_PACKET_NS else value
                )
            yield gauge
        state = interface_state(self.interface)
        drops = CounterMetricFamily(
            "fieldward_sensor_interface_drops",
            "Frames the interface dropped (rx_dropped + rx_missed)",
            labels=["interface"],
        )
        drops.add_metric([self.interface], float(state.rx_dropped))
        yield drops
        up = GaugeMetricFamily(
            "fieldward_sensor_interface_up", "1 when the interface exists and is up", labels=["interface"]
        )
        up.add_metric([self.interface], 1.0 if state.up else 0.0)
        yield up
        for key, value in sorted(self.extra().items()):
            gauge = GaugeMetricFamily(f"fieldward_sensor_{key}", key.replace("_", " "))
            gauge.add_metric([], value)
            yield gauge


def make_registry(collector: SensorCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
