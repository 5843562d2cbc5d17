"""The analysis job behind ``fieldward analyze``: capture -> decode -> flows -> output folder.

This module wires the layers together and nothing else: it reads each capture in bounded batches,
decodes them, reassembles IP fragments, feeds the flow table, keeps running totals with numpy, and
streams finished flows to ``flows.parquet`` so memory stays flat whatever the capture size.
Later layers (protocol dissectors, inventory, detection) hook in here.
"""

from __future__ import annotations

import gc
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from fieldward import __version__
from fieldward.capture import linktypes
from fieldward.capture.batch import PacketBatch
from fieldward.capture.reader import open_capture
from fieldward.decode.columns import (
    ETH_ARP,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    DecodedBatch,
)
from fieldward.decode.flows import FlowConfig, FlowTable
from fieldward.decode.fragments import FragmentReassembler
from fieldward.decode.l2l4 import decode_batch
from fieldward.detect.engine import (
    DetectionContext,
    DetectionEngine,
    DetectorScope,
    select_detectors,
    write_alerts_jsonl,
)
from fieldward.detect.evidence import write_evidence
from fieldward.detect.knowledge import Knowledge
from fieldward.detect.model import Alert
from fieldward.detect.settings import DetectionSettings
from fieldward.errors import FieldWardError
from fieldward.events_out import EventWriter
from fieldward.inventory import Inventory, InventoryBuilder, InventorySettings
from fieldward.protocols.base import Event
from fieldward.protocols.engine import ProtocolEngine, ProtocolSettings
from fieldward.protocols.registry import Registry
from fieldward.weird import WeirdLog

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(capture_path, bytes_done, bytes_total)`` after each batch."""

_TRANSPORT_NAMES = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMP: "icmp", PROTO_ICMPV6: "icmpv6"}


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    """Settings of one analysis run (typed settings, not literals scattered in code)."""

    batch_packets: int = 65536
    flows: FlowConfig = field(default_factory=FlowConfig)
    protocols: ProtocolSettings = field(default_factory=ProtocolSettings)
    dissect: bool = True
    """Run the protocol dissectors (False: L2-L4 and flows only)."""
    plugins: bool = True
    """Load third-party dissectors from entry points."""
    write_flows: bool = True
    inventory: bool = True
    """Build the device inventory (``devices.json``, ``communications.parquet``)."""
    inventory_settings: InventorySettings = field(default_factory=InventorySettings)
    detect: bool = True
    """Run the detection engines (``alerts.jsonl``)."""
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    detectors: DetectorScope = "all"
    """Which detectors run: ``all``; ``per_flow`` (a live sensor's capture worker when flows are split
    between several workers); ``correlated`` (the ones that need every flow in one place)."""
    learn_captures: tuple[Path, ...] = ()
    """Captures of normal traffic learned (as the baseline) before the analysed ones are judged."""
    baseline: Path | None = None
    """A baseline file (``baseline.json`` of an earlier run) to start from."""


_UNSPECIFIED = frozenset({bytes(16), bytes(10) + b"\xff\xff" + bytes(4)})


@dataclass
class TrafficTotals:
    """Running totals over every analysed packet, accumulated per batch with numpy."""

    packets: int = 0
    captured_bytes: int = 0
    wire_bytes: int = 0
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None
    bytes_by_protocol: Counter[str] = field(default_factory=Counter)
    packets_by_protocol: Counter[str] = field(default_factory=Counter)
    packets_by_linktype: Counter[str] = field(default_factory=Counter)
    _hosts: set[bytes] = field(default_factory=set)
    _macs: set[int] = field(default_factory=set)

    def add(self, batch: PacketBatch, decoded: DecodedBatch) -> None:
        n = len(batch)
        if n == 0:
            return
        self.packets += n
        self.captured_bytes += batch.captured_bytes
        wire = batch.origlen.astype(np.int64)
        self.wire_bytes += int(wire.sum())
        lo, hi = int(batch.ts_ns.min()), int(batch.ts_ns.max())
        self.first_ts_ns = lo if self.first_ts_ns is None else min(self.first_ts_ns, lo)
        self.last_ts_ns = hi if self.last_ts_ns is None else max(self.last_ts_ns, hi)

        for code, count in zip(*np.unique(batch.linktype, return_counts=True), strict=True):
            self.packets_by_linktype[linktypes.name(int(code))] += int(count)

        # Labels are small integers (-2 .. 6255): counted with bincount, no sort.
        offset = _protocol_labels(decoded) + 2
        pkt_sums = np.bincount(offset)
        byte_sums = np.bincount(offset, weights=wire)
        for code in np.flatnonzero(pkt_sums).tolist():
            name = _label_name(code - 2)
            self.bytes_by_protocol[name] += int(byte_sums[code])
            self.packets_by_protocol[name] += int(pkt_sums[code])

        has_ip = decoded.ip_version != 0
        if has_ip.all():  # no copy of the addresses through a mask
            self._hosts.update(_distinct_addresses(np.concatenate([decoded.src_ip, decoded.dst_ip])))
        elif has_ip.any():
            self._hosts.update(
                _distinct_addresses(np.concatenate([decoded.src_ip[has_ip], decoded.dst_ip[has_ip]]))
            )
        macs = np.unique(decoded.eth_src[decoded.eth_src != 0])
        self._macs.update(int(m) for m in macs)

    @property
    def hosts(self) -> int:
        """Distinct IP addresses seen, excluding multicast/broadcast-style unspecified ones."""
        return len(self._hosts - _UNSPECIFIED)

    def address_sets(self) -> dict[str, list[str]]:
        """The addresses behind :attr:`hosts` (16-byte form, hex) and :attr:`macs` (hex): what a
        multi-worker sensor unites to count them over all workers."""
        return {
            "hosts": sorted(h.hex() for h in self._hosts - _UNSPECIFIED),
            "macs": sorted(f"{m:012x}" for m in self._macs),
        }

    @property
    def macs(self) -> int:
        return len(self._macs)

    @property
    def duration_s(self) -> float:
        if self.first_ts_ns is None or self.last_ts_ns is None:
            return 0.0
        return (self.last_ts_ns - self.first_ts_ns) / 1e9


def _distinct_addresses(addresses: npt.NDArray[np.uint8]) -> set[bytes]:
    """The distinct 16-byte addresses of an ``(n, 16)`` array. The addresses that share the first
    one's upper 8 bytes (all IPv4-mapped ones, usually nearly every packet) are told apart by their
    lower 8 bytes as one uint64 (a fast integer sort); the others by all 16 bytes."""
    addresses = np.ascontiguousarray(addresses)
    halves = addresses.view(np.uint64).reshape(-1, 2)
    same = halves[:, 0] == halves[0, 0]
    head = addresses[0, :8].tobytes()
    found = {head + low.tobytes() for low in np.unique(halves[same, 1])}
    rest = addresses[~same]
    if rest.shape[0]:
        found.update(u.tobytes() for u in np.unique(rest.view(np.dtype((np.void, 16)))))
    return found


def _protocol_labels(decoded: DecodedBatch) -> npt.NDArray[np.int64]:
    """Encode each packet's outermost-known protocol as ``ip_version * 1000 + ip_proto`` (or L2 code)."""
    label = np.where(
        decoded.ip_version != 0,
        decoded.ip_version.astype(np.int64) * 1000 + decoded.ip_proto.astype(np.int64),
        np.where(decoded.ethertype == ETH_ARP, -1, -2),
    )
    return np.asarray(label, dtype=np.int64)


def _label_name(code: int) -> str:
    if code == -1:
        return "arp"
    if code == -2:
        return "non-ip"
    version, proto = divmod(code, 1000)
    transport = _TRANSPORT_NAMES.get(proto, f"ip-proto-{proto}")
    return f"ipv{version}/{transport}"


@dataclass
class AnalysisResult:
    """What one run produced: the totals, the flow count and the weird counts."""

    captures: list[str]
    totals: TrafficTotals
    flows: int
    flows_evicted: int
    weird: WeirdLog
    dissected_flows: dict[str, int]
    events: dict[str, int]
    elapsed_s: float
    out_dir: Path | None
    inventory: Inventory | None = None
    alerts: list[Alert] = field(default_factory=list)
    alerts_suppressed: dict[str, int] = field(default_factory=dict)
    knowledge: Knowledge | None = None

    def summary(self) -> dict[str, object]:
        t = self.totals
        return {
            "fieldward_version": __version__,
            "captures": self.captures,
            "packets": t.packets,
            "captured_bytes": t.captured_bytes,
            "wire_bytes": t.wire_bytes,
            "first_ts": _iso(t.first_ts_ns),
            "last_ts": _iso(t.last_ts_ns),
            "duration_s": round(t.duration_s, 6),
            "flows": self.flows,
            "flows_evicted": self.flows_evicted,
            "hosts": t.hosts,
            "mac_addresses": t.macs,
            "protocols_by_bytes": dict(t.bytes_by_protocol.most_common()),
            "application_protocols_by_flows": dict(
                sorted(self.dissected_flows.items(), key=lambda kv: (-kv[1], kv[0]))
            ),
            "events": dict(sorted(self.events.items())),
            "protocols_by_packets": dict(t.packets_by_protocol.most_common()),
            "link_types": dict(t.packets_by_linktype.most_common()),
            "weird": self.weird.summary(),
            "weird_total": self.weird.total,
            "devices": len(self.inventory.devices) if self.inventory is not None else None,
            "alerts": len(self.alerts),
            "alerts_by_severity": dict(Counter(a.type.severity.value for a in self.alerts).most_common()),
            "alerts_suppressed": dict(sorted(self.alerts_suppressed.items())),
            "elapsed_s": round(self.elapsed_s, 3),
        }


def _iso(ts_ns: int | None) -> str | None:
    if ts_ns is None:
        return None
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{ns:09d}Z"


class FlowSink:
    """Streams finished flow tables to ``flows.parquet`` (or just counts them)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0 and self._schema is not None:
            return
        self.rows += table.num_rows
        if self.path is None:
            return
        if self._writer is None:
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self._writer.write_table(table.cast(self._schema) if table.schema != self._schema else table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def iter_decoded(
    batches: Iterable[PacketBatch], weird: WeirdLog, reassembler: FragmentReassembler
) -> Iterable[tuple[PacketBatch, DecodedBatch, bool]]:
    """Decode each batch, then any datagrams the fragment reassembler completes with it.

    Yields ``(batch, decoded, captured)``: ``captured`` is False for reassembled datagrams, whose
    bytes were already counted as the fragments that carried them.
    """
    for batch in batches:
        decoded = decode_batch(batch, weird)
        yield batch, decoded, True
        if decoded.is_fragment.any():
            whole = reassembler.feed(batch, decoded)
            if whole is not None and len(whole):
                yield whole, decode_batch(whole, weird), False


class EventFanout:
    """Hands every event to the event writer, and to the consumers (inventory, detection) that read
    its log; each event type's consumers are looked up once."""

    def __init__(self, writer: EventWriter, consumers: Sequence[InventoryBuilder | DetectionEngine]) -> None:
        self.writer = writer
        self.consumers = consumers
        self._routes: dict[type[Event], list[InventoryBuilder | DetectionEngine]] = {}

    def _route(self, event_type: type[Event]) -> list[InventoryBuilder | DetectionEngine]:
        route = self._routes.get(event_type)
        if route is None:
            route = self._routes[event_type] = [c for c in self.consumers if c.wants(event_type.log)]
        return route

    def __call__(self, event: Event) -> None:
        self.writer(event)
        for consumer in self._route(type(event)):
            consumer.observe_event(event)

    def write_table(self, event_type: type[Event], table: pa.Table) -> None:
        self.writer.write_table(event_type, table)
        for consumer in self._route(event_type):
            consumer.observe_table(event_type, table)  # each filters or converts the rows it needs


GC_THRESHOLDS = (50_000, 20, 100)
"""Minimum garbage-collector thresholds during a run. Dissectors make millions of short-lived,
acyclic objects (PDUs, events); with the default thresholds the collector would spend a large share of
the run scanning the events waiting to be written."""


FREEZE_RESET_BATCHES = 256
"""Batches after which the objects frozen batch by batch are handed back to the collector."""


class _CollectorPacing:
    """Keeps the garbage collector off what earlier batches left alive.

    After every batch, the objects alive (flow table, inventory evidence, detector state, the events
    waiting to be written) are frozen (``gc.freeze``: moved out of the generations the collector
    scans), so each collection scans only what the current batch allocated instead of every
    long-lived object again. Frozen objects are still freed by reference counting; cyclic garbage
    among them waits for the next reset, every ``FREEZE_RESET_BATCHES`` batches and at the end.
    """

    def __init__(self) -> None:
        self.batches = 0

    def batch_done(self) -> None:
        self.batches += 1
        if self.batches % FREEZE_RESET_BATCHES == 0:
            gc.unfreeze()
            gc.collect()
        gc.freeze()


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the garbage collector's thresholds for a run (see :data:`GC_THRESHOLDS`)."""
    old = gc.get_threshold()
    gc.set_threshold(*(max(a, b) for a, b in zip(old, GC_THRESHOLDS, strict=False)))
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def analyze(
    captures: Sequence[str | Path],
    out_dir: Path | None,
    options: AnalysisOptions | None = None,
    progress: ProgressCallback | None = None,
) -> AnalysisResult:
    """Analyse ``captures`` in order as one continuous observation and write ``out_dir``.

    With ``options.learn_captures`` the detection engines first learn those captures as normal
    behaviour (nothing is written for them), then judge ``captures`` against that baseline.
    """
    options = options or AnalysisOptions()
    with fewer_collections():
        knowledge = Knowledge.load(options.baseline) if options.baseline is not None else Knowledge()
        if options.detect and options.learn_captures:
            learn_options = replace(options, inventory=False, write_flows=False)
            context = DetectionContext(options.detection, knowledge, learning=True)
            _analyze(options.learn_captures, None, learn_options, progress, context)
            knowledge.sources.extend(f"learned {Path(c).name}" for c in options.learn_captures)
        context = DetectionContext(options.detection, knowledge)
        return _analyze(captures, out_dir, options, progress, context)


def learn_baseline(
    captures: Sequence[str | Path], options: AnalysisOptions | None = None, knowledge: Knowledge | None = None
) -> Knowledge:
    """Learn ``captures`` as normal behaviour (no output written); returns the baseline."""
    options = options or AnalysisOptions()
    knowledge = knowledge if knowledge is not None else Knowledge()
    context = DetectionContext(options.detection, knowledge, learning=True)
    with fewer_collections():
        _analyze(captures, None, replace(options, inventory=False, write_flows=False), None, context)
    knowledge.sources.extend(f"learned {Path(c).name}" for c in captures)
    return knowledge


def _analyze(
    captures: Sequence[str | Path],
    out_dir: Path | None,
    options: AnalysisOptions,
    progress: ProgressCallback | None,
    context: DetectionContext,
) -> AnalysisResult:
    analysis = Analysis(out_dir, options, context)
    try:
        for capture in captures:
            with open_capture(capture, batch_packets=options.batch_packets, weird=analysis.weird) as reader:
                for batch in reader:
                    analysis.feed(batch)
                    if progress is not None:
                        progress(str(capture), reader.position, reader.size)
    except BaseException:
        analysis.abort()
        raise
    return analysis.finish(captures)


class Analysis:
    """One streaming analysis: :meth:`feed` packet batches as they come (from files or from a live
    interface), :meth:`flush` when time passes without packets, :meth:`finish` to write ``out_dir``.

    ``analyze`` is this object fed from capture files, so a live sensor that feeds the same batches
    gets the same results. Call :meth:`finish` (or :meth:`abort`) exactly once.
    """

    def __init__(
        self,
        out_dir: Path | None,
        options: AnalysisOptions | None = None,
        context: DetectionContext | None = None,
        *,
        label: str = "",
    ) -> None:
        self.options = options = options or AnalysisOptions()
        self.context = context if context is not None else DetectionContext(options.detection, Knowledge())
        self.out_dir = out_dir
        self.label = label
        self.started = time.perf_counter()
        self.weird = weird = WeirdLog()
        self.totals = TrafficTotals()
        self.flows = FlowTable(options.flows, weird)
        self.reassembler = FragmentReassembler(weird=weird)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        self.sink = FlowSink(
            out_dir / "flows.parquet" if (out_dir is not None and options.write_flows) else None
        )
        self.events = EventWriter(out_dir / "events" if out_dir is not None else None)
        registry = Registry.default(plugins=options.plugins) if options.dissect else Registry()
        self.builder = (
            InventoryBuilder(options.inventory_settings, weird=weird) if options.inventory else None
        )
        self.detection = (
            DetectionEngine(select_detectors(options.detectors), weird=weird, context=self.context)
            if options.detect
            else None
        )
        consumers = [c for c in (self.builder, self.detection) if c is not None]
        self.engine = ProtocolEngine(registry, EventFanout(self.events, consumers), weird, options.protocols)
        self._pacing = _CollectorPacing()
        self._alerts_seen: set[str] = set()
        self._done = False

    def _finished(self, table: pa.Table) -> None:
        flow_ids = table.column("flow_id")
        table = table.append_column("service", self.engine.services(flow_ids.to_numpy()))
        if table.num_rows:
            self.engine.close_flows(flow_ids.to_pylist())
        if self.builder is not None:
            self.builder.observe_flows(table)
        if self.detection is not None:
            self.detection.observe_flows(table)
        self.sink.write(table)

    def _step(self, batch: PacketBatch, decoded: DecodedBatch) -> None:
        if self.detection is not None and len(batch):
            self.detection.observe_time(int(batch.ts_ns.min()))
        if self.builder is not None:
            self.builder.observe_batch(batch, decoded)
        assignment = self.flows.update(batch, decoded)
        self.engine.process(batch, decoded, assignment)
        if len(batch):
            self._finished(self.flows.expire(batch_time(batch.ts_ns)))

    def feed(self, batch: PacketBatch) -> None:
        """Analyse one batch (decoded, reassembled, dissected, judged), in capture order."""
        for part, decoded, captured in iter_decoded((batch,), self.weird, self.reassembler):
            if captured:
                self.totals.add(part, decoded)
            self._step(part, decoded)
            self._pacing.batch_done()

    def flush(self, now_ns: int) -> None:
        """Time has reached ``now_ns`` (ns since the epoch) without packets: expire idle flows and let
        time-based detectors run, as a later packet would have done."""
        if self.detection is not None:
            self.detection.observe_time(now_ns)
        self._finished(self.flows.expire(now_ns))

    def new_alerts(self) -> list[Alert]:
        """Alerts raised since the last call (live reporting; cheap when there are none)."""
        if self.detection is None or len(self.detection.alerts) == len(self._alerts_seen):
            return []
        fresh = [a for a in self.detection.alerts if a.id not in self._alerts_seen]
        self._alerts_seen.update(a.id for a in fresh)
        return fresh

    def abort(self) -> None:
        """Close the output files without building results (after an error)."""
        if not self._done:
            self._done = True
            self.sink.close()
            self.events.close()

    def finish(self, captures: Sequence[str | Path] = ()) -> AnalysisResult:
        """End the run: finish every flow, build the inventory and alerts, write ``out_dir``.

        ``captures`` are the files holding the analysed packets, read again to cut each alert's
        evidence capture (none: no evidence files).
        """
        if self._done:
            raise FieldWardError("this analysis is already finished")
        self._done = True
        weird, out_dir, context, detection = self.weird, self.out_dir, self.context, self.detection
        try:
            leftover = self.reassembler.flush()
            if leftover is not None and len(leftover):
                self._step(leftover, decode_batch(leftover, weird))
            self._finished(self.flows.finish())
            self.engine.finish()
        finally:
            self.sink.close()
            self.events.close()
        inventory = self.builder.build() if self.builder is not None else None
        if inventory is not None and out_dir is not None:
            inventory.write(out_dir)
        alerts: list[Alert] = []
        suppressed: dict[str, int] = {}
        if detection is not None:
            detection.finish()
            alerts = list(detection.alerts)
            suppressed = dict(detection.alerts.suppressed)
            if inventory is not None:
                attribute_alerts(alerts, inventory)
            if out_dir is not None:
                write_alerts_jsonl(alerts, out_dir / "alerts.jsonl")
                context.knowledge.save(out_dir / "baseline.json")
                write_evidence(out_dir, alerts, captures)  # DIR/evidence/<id>.pcap, "evidence_pcap"
        result = AnalysisResult(
            captures=[str(c) for c in captures] or ([self.label] if self.label else []),
            totals=self.totals,
            flows=self.sink.rows,
            flows_evicted=int(self.flows.stats.flows_evicted),
            weird=weird,
            dissected_flows=dict(self.engine.flows_by_protocol),
            events=dict(self.events.counts),
            elapsed_s=time.perf_counter() - self.started,
            out_dir=out_dir,
            inventory=inventory,
            alerts=alerts,
            alerts_suppressed=suppressed,
            knowledge=context.knowledge if detection is not None else None,
        )
        if out_dir is not None:
            (out_dir / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
        return result


CLOCK_JUMP_NS = 3600 * 1_000_000_000
"""A packet this far after the middle of its batch is not taken as the batch's time (see batch_time)."""


def batch_time(ts_ns: npt.NDArray[np.int64]) -> int:
    """The time a batch has reached, for expiring idle flows: its newest packet, unless that packet
    is more than :data:`CLOCK_JUMP_NS` after the batch's median (a stray packet with a wild clock must
    not end every open flow); then the newest packet within that distance. A real jump (the next
    capture file, hours later) moves the median with it."""
    newest = int(ts_ns.max())
    median = int(np.median(ts_ns))
    if newest - median <= CLOCK_JUMP_NS:
        return newest
    return int(ts_ns[ts_ns <= median + CLOCK_JUMP_NS].max())


def attribute_alerts(alerts: Sequence[Alert], inventory: Inventory) -> None:
    """Name each alert's source and destination devices from the inventory's address book (IP
    addresses, and MAC addresses for layer-2 alerts such as ARP spoofing)."""
    by_address: dict[str, str] = {}
    for device in inventory.devices:
        if device.mac is not None:
            by_address.setdefault(device.mac, device.id)
        for ip in device.ips:
            by_address.setdefault(ip, device.id)
    for alert in alerts:
        alert.src_device = by_address.get(alert.src)
        alert.dst_device = by_address.get(alert.dst)


__all__ = [
    "Analysis",
    "AnalysisOptions",
    "AnalysisResult",
    "FieldWardError",
    "TrafficTotals",
    "analyze",
    "fewer_collections",
    "iter_decoded",
    "learn_baseline",
]
