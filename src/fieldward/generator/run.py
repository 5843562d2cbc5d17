"""The generation loop: chunk by chunk, merge every producer's packets in time order and write them.

For each chunk ``[t0, t1)`` the producers emit template events and literal frames; those are merged
with what the previous chunk carried over, sorted by timestamp (a stable argsort, so ties keep a
fixed order), and everything before ``t1`` is stamped into one buffer laid out with 16 bytes of
headroom per packet for the pcap record headers, then written with a single call. Packets at or
after ``t1`` are carried into the next chunk. Memory is bounded by the chunk size, not the capture.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fieldward.capture.batch import PacketBatch
from fieldward.capture.writer import RECORD_HEADER_LEN, PcapWriter
from fieldward.generator.attacks import ATTACK_PROTOCOL_NAMES
from fieldward.generator.build import Events, stamp
from fieldward.generator.config import GeneratorConfig, GeneratorStats
from fieldward.generator.plan import Plan, build_plan
from fieldward.generator.schedule import PROTOCOL_NAMES, Sink

TAG_NAMES = PROTOCOL_NAMES | ATTACK_PROTOCOL_NAMES
"""Statistics names of every packet tag: the plant's protocols and those only attacks use."""


class _Carry:
    """Packets generated for a chunk but timestamped after its end."""

    def __init__(self) -> None:
        self.events = Events.empty()
        self.lit_ts: list[int] = []
        self.lit_data: list[bytes] = []
        self.lit_tag: list[int] = []


def _chunk(
    plan: Plan, sink: Sink, carry: _Carry, cut: int, first_index: int, counts: np.ndarray
) -> PacketBatch:
    """Merge, stamp and lay out one chunk; leaves the packets at or after ``cut`` in ``carry``."""
    events = Events.concat([carry.events, *sink.events])
    lit_ts = carry.lit_ts + sink.lit_ts
    lit_data = carry.lit_data + sink.lit_data
    lit_tag = carry.lit_tag + sink.lit_tag
    n_events = len(events)
    ts = np.concatenate((events.ts, np.array(lit_ts, dtype=np.int64)))
    order = np.argsort(ts, kind="stable")
    ts_sorted = ts[order]
    keep = int(np.searchsorted(ts_sorted, cut, side="left"))
    emit, later = order[:keep], order[keep:]
    later_events = later[later < n_events]
    carry.events = events.take(later_events)
    later_lits = (later[later >= n_events] - n_events).tolist()
    carry.lit_ts = [lit_ts[i] for i in later_lits]
    carry.lit_data = [lit_data[i] for i in later_lits]
    carry.lit_tag = [lit_tag[i] for i in later_lits]

    table = plan.table
    is_event = emit < n_events
    event_index = emit[is_event]
    lit_index = (emit[~is_event] - n_events).tolist()
    lengths = np.empty(keep, dtype=np.int64)
    lengths[is_event] = table.length[events.tpl[event_index]]
    lengths[~is_event] = [len(lit_data[i]) for i in lit_index]
    record = lengths + RECORD_HEADER_LEN
    offsets = np.cumsum(record) - lengths
    buffer = np.empty(int(record.sum()), dtype=np.uint8)
    stamp(table, events.take(event_index), buffer, offsets[is_event])
    for i, at in zip(lit_index, offsets[~is_event].tolist(), strict=True):
        frame = lit_data[i]
        buffer[at : at + len(frame)] = np.frombuffer(frame, dtype=np.uint8)
    counts += np.bincount(table.tag[events.tpl[event_index]], minlength=counts.shape[0])
    counts += np.bincount(
        np.array([lit_tag[i] for i in lit_index], dtype=np.int64), minlength=counts.shape[0]
    )
    caplen = lengths.astype(np.uint32)
    return PacketBatch(
        buffer=buffer,
        offsets=offsets,
        caplen=caplen,
        origlen=caplen.copy(),
        ts_ns=ts_sorted[:keep].copy(),
        interface=np.zeros(keep, dtype=np.uint16),
        linktype=np.ones(keep, dtype=np.uint16),
        first_index=first_index,
        source="fieldward-generator",
    )


def generate_capture(
    out: Path | str | BinaryIO,
    config: GeneratorConfig,
    progress: Callable[[int], None] | None = None,
) -> GeneratorStats:
    """Write the capture ``config`` describes to ``out`` (a path, ``.gz`` for gzip, or a binary file).

    ``progress`` is called after every written chunk with the number of packets written so far
    (:func:`estimate_packets` gives the total to expect).
    """
    plan = build_plan(config)
    counts = np.zeros(max(TAG_NAMES) + 1, dtype=np.int64)
    carry = _Carry()
    stats = GeneratorStats(devices=len(plan.plant.devices), duration_s=(plan.end_ns - plan.start_ns) / 1e9)
    with PcapWriter(out, nanosecond=config.nanosecond) as writer:
        t0 = plan.start_ns
        while t0 < plan.end_ns:
            t1 = min(t0 + plan.chunk_ns, plan.end_ns)
            sink = Sink()
            for producer in plan.producers:
                producer.emit(t0, t1, sink)
            batch = _chunk(plan, sink, carry, t1, writer.packets, counts)
            writer.write_batch(batch, in_place=True)
            stats.bytes += batch.captured_bytes
            if progress is not None:
                progress(writer.packets)
            t0 = t1
        stats.packets = writer.packets
        stats.file_bytes = writer.bytes_written
    stats.packets_by_protocol = {TAG_NAMES[tag]: int(n) for tag, n in enumerate(counts.tolist()) if n}
    stats.flows_by_protocol = plan.flows.counts()
    return stats


def estimate_packets(config: GeneratorConfig) -> int:
    """About how many packets :func:`generate_capture` will write for ``config`` (within a few %)."""
    return round(build_plan(config).expected_packets)
