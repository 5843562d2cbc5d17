"""Chunk-by-chunk scheduling primitives shared by the traffic producers.

A producer is asked for everything that *starts* in the chunk ``[t0, t1)``; the packets it emits may
run past ``t1`` (a response, a video frame's tail) and the generator carries those into the next
chunk. Jitter is only ever added, never subtracted, so nothing lands before ``t0``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from fieldward.generator.build import Events, Stamped

I64 = npt.NDArray[np.int64]

SECOND = 1_000_000_000
MS = 1_000_000
US = 1_000
NEVER = 1 << 62
"""A time (and period) beyond any capture: an item that never (re)occurs."""


class Proto(IntEnum):
    """Protocol tag of a template or literal packet, for the run statistics."""

    ARP = 0
    DHCP = 1
    DNS = 2
    NTP = 3
    MODBUS = 4
    S7COMM = 5
    ENIP = 6
    CIP_IO = 7
    DNP3 = 8
    MQTT = 9
    RTSP = 10
    RTP = 11
    RTCP = 12


PROTOCOL_NAMES: dict[int, str] = {
    Proto.ARP: "arp",
    Proto.DHCP: "dhcp",
    Proto.DNS: "dns",
    Proto.NTP: "ntp",
    Proto.MODBUS: "modbus",
    Proto.S7COMM: "s7comm",
    Proto.ENIP: "enip",
    Proto.CIP_IO: "cip_io",
    Proto.DNP3: "dnp3",
    Proto.MQTT: "mqtt",
    Proto.RTSP: "rtsp",
    Proto.RTP: "rtp",
    Proto.RTCP: "rtcp",
}

FlowKey = tuple[bytes, bytes, int, int, int]


@dataclass(slots=True)
class FlowLog:
    """Distinct conversations (address/port 5-tuples, ARP sender/target pairs) per protocol."""

    flows: dict[int, set[FlowKey]] = field(default_factory=dict)

    def add(self, tag: int, src: bytes, dst: bytes, sport: int = 0, dport: int = 0, l4: int = 0) -> None:
        self.flows.setdefault(tag, set()).add((src, dst, sport, dport, l4))

    def counts(self) -> dict[str, int]:
        return {PROTOCOL_NAMES[tag]: len(keys) for tag, keys in sorted(self.flows.items())}


@dataclass(slots=True)
class Sink:
    """What the producers emit for one chunk: template events and literal frames."""

    events: list[Events] = field(default_factory=list)
    lit_ts: list[int] = field(default_factory=list)
    lit_data: list[bytes] = field(default_factory=list)
    lit_tag: list[int] = field(default_factory=list)

    def packets(self, tag: int, stamped: Iterable[Stamped]) -> None:
        for ts, frame in stamped:
            self.lit_ts.append(ts)
            self.lit_data.append(frame)
            self.lit_tag.append(tag)


def due(first: I64, period: I64, next_k: I64, limit: I64 | int) -> tuple[I64, I64, I64]:
    """Occurrences ``k >= next_k`` with ``first + k * period < limit``, for every item.

    Returns the item index and ``k`` of each occurrence (grouped by item, ``k`` ascending) and the
    per-item counts (to advance ``next_k``).
    """
    n = first.shape[0]
    start = first + next_k * period
    lim = np.broadcast_to(np.asarray(limit, dtype=np.int64), (n,))
    count = np.where(lim > start, (lim - start + period - 1) // np.maximum(period, 1), 0).astype(np.int64)
    item = np.repeat(np.arange(n, dtype=np.int64), count)
    k = next_k[item] + segment_rank(count)
    return item, k, count


def segment_rank(count: I64) -> I64:
    """0, 1, ..., count[i] - 1 for each segment i, concatenated."""
    total = int(count.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.cumsum(count) - count
    rank: I64 = np.arange(total, dtype=np.int64) - np.repeat(starts, count)
    return rank


def segment_offsets(values: I64, count: I64) -> I64:
    """Exclusive running sum of ``values`` restarting at every segment of ``count`` elements."""
    if values.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    running = np.cumsum(values) - values
    nonzero = count > 0
    starts = (np.cumsum(count) - count)[nonzero]
    offsets: I64 = running - np.repeat(running[starts], count[nonzero])
    return offsets


def uniform(rng: np.random.Generator, low: I64 | int, high: I64 | int, n: int) -> I64:
    """Integer draws in ``[low, high)`` (element-wise bounds), as int64."""
    lo = np.asarray(low, dtype=np.int64)
    span = np.maximum(np.asarray(high, dtype=np.int64) - lo, 1)
    draws: I64 = lo + (rng.random(n) * span).astype(np.int64)
    return draws
