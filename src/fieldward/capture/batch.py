"""PacketBatch: the columnar unit every later layer consumes.

A batch holds a bounded number of packets: one contiguous ``uint8`` buffer and, per packet, numpy
arrays of offsets into it, captured and original lengths, nanosecond timestamps, the interface index
and that interface's link type. Nothing downstream loops over packets in Python; it indexes these
arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    """A capture interface (pcapng IDB, or the single implicit interface of a pcap file)."""

    index: int
    linktype: int
    snaplen: int = 0
    name: str = ""
    description: str = ""
    ts_resolution_ns: int = 1000
    """Nanoseconds per timestamp unit (1000 for microseconds, 1 for nanoseconds)."""
    ts_offset_s: int = 0


@dataclass(frozen=True, slots=True)
class PacketBatch:
    """A columnar batch of packets.

    ``buffer[offsets[i] : offsets[i] + caplen[i]]`` are the captured bytes of packet ``i``.
    ``first_index`` is the zero-based index of packet 0 of this batch within its capture (so a
    packet's capture-wide number is ``first_index + i``).
    """

    buffer: U8
    offsets: I64
    caplen: U32
    origlen: U32
    ts_ns: I64
    interface: U16
    linktype: U16
    first_index: int = 0
    source: str = ""

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def captured_bytes(self) -> int:
        return int(self.caplen.sum(dtype=np.int64))

    @property
    def wire_bytes(self) -> int:
        return int(self.origlen.sum(dtype=np.int64))

    def take(self, rows: I64) -> PacketBatch:
        """The packets ``rows`` of this batch, sharing its buffer (only the columns are indexed)."""
        return PacketBatch(
            buffer=self.buffer,
            offsets=self.offsets[rows],
            caplen=self.caplen[rows],
            origlen=self.origlen[rows],
            ts_ns=self.ts_ns[rows],
            interface=self.interface[rows],
            linktype=self.linktype[rows],
            first_index=self.first_index,
            source=self.source,
        )

    def packet(self, i: int) -> bytes:
        """The captured bytes of packet ``i`` (for tests and slow paths, not for hot loops)."""
        start = int(self.offsets[i])
        return self.buffer[start : start + int(self.caplen[i])].tobytes()

    @classmethod
    def from_packets(
        cls,
        packets: list[bytes],
        ts_ns: list[int] | None = None,
        linktype: int = 1,
        interface: int = 0,
        first_index: int = 0,
        source: str = "",
        origlen: list[int] | None = None,
    ) -> PacketBatch:
        """Build a batch from Python byte strings (tests, synthetic and reassembled packets)."""
        n = len(packets)
        lengths = np.fromiter((len(p) for p in packets), dtype=np.int64, count=n)
        offsets = np.zeros(n, dtype=np.int64)
        if n:
            np.cumsum(lengths[:-1], out=offsets[1:])
        buffer = np.frombuffer(b"".join(packets), dtype=np.uint8).copy()
        times = np.asarray(ts_ns if ts_ns is not None else np.zeros(n), dtype=np.int64)
        orig = np.asarray(origlen, dtype=np.uint32) if origlen is not None else lengths.astype(np.uint32)
        return cls(
            buffer=buffer,
            offsets=offsets,
            caplen=lengths.astype(np.uint32),
            origlen=orig,
            ts_ns=times,
            interface=np.full(n, interface, dtype=np.uint16),
            linktype=np.full(n, linktype, dtype=np.uint16),
            first_index=first_index,
            source=source,
        )

    @classmethod
    def empty(cls, source: str = "") -> PacketBatch:
        return cls.from_packets([], source=source)
