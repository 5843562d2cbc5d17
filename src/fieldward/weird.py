"""Counted "weird" events: malformed input is data, never a crash (Zeek's weird.log).

Every layer (capture, decode, flows, protocols) reports what it could not make sense of here, with a
stable name and a short reason. Counts are exact; only the first few samples of each name are kept,
and only the first occurrence of each name is logged (at INFO), so a hostile capture cannot flood the
log or the memory.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

SAMPLES_PER_NAME = 5


@dataclass(frozen=True, slots=True)
class Weird:
    """One notable oddity in the input.

    name: stable identifier, e.g. ``pcap_truncated_record`` or ``ipv4_bad_header_length``.
    layer: the layer that saw it: ``capture``, ``decode``, ``flow`` or ``protocol``.
    detail: a short human explanation (never packet payload, never secrets).
    ts_ns: packet time in ns since the epoch, when known.
    packet_index: zero-based index of the packet in its capture, when known.
    source: the capture file (or interface) it came from, when known.
    """

    name: str
    layer: str
    detail: str = ""
    ts_ns: int | None = None
    packet_index: int | None = None
    source: str | None = None


@dataclass
class WeirdLog:
    """Collects weird events: exact counts per name plus a bounded set of samples."""

    counts: Counter[str] = field(default_factory=Counter)
    samples: list[Weird] = field(default_factory=list)
    _sampled: Counter[str] = field(default_factory=Counter)

    def add(self, weird: Weird, count: int = 1) -> None:
        """Count ``count`` occurrences of ``weird`` (keeping it as a sample if there is room)."""
        if count <= 0:
            return
        first = weird.name not in self.counts
        self.counts[weird.name] += count
        if self._sampled[weird.name] < SAMPLES_PER_NAME:
            self._sampled[weird.name] += 1
            self.samples.append(weird)
        if first:
            logger.info("weird %s (%s): %s", weird.name, weird.layer, weird.detail)

    def report(self, name: str, layer: str, detail: str = "", count: int = 1, **where: object) -> None:
        """Shorthand for ``add(Weird(name, layer, detail, ...), count)``."""
        ts = where.get("ts_ns")
        idx = where.get("packet_index")
        src = where.get("source")
        self.add(
            Weird(
                name=name,
                layer=layer,
                detail=detail,
                ts_ns=int(ts) if isinstance(ts, int) else None,
                packet_index=int(idx) if isinstance(idx, int) else None,
                source=str(src) if src is not None else None,
            ),
            count,
        )

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict[str, int]:
        """Counts per weird name, most frequent first."""
        return dict(self.counts.most_common())

    def merge(self, other: WeirdLog) -> None:
        for sample in other.samples:
            if self._sampled[sample.name] < SAMPLES_PER_NAME:
                self._sampled[sample.name] += 1
                self.samples.append(sample)
        self.counts.update(other.counts)
