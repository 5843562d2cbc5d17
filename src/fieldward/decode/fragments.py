"""IP fragment reassembly (IPv4: RFC 791 §3.2; IPv6: RFC 8200 §4.5) for the decode pipeline.

:class:`FragmentReassembler` takes each decoded batch, picks out the (rare) fragment packets with a
mask on ``DecodedBatch.is_fragment`` and keeps them per datagram until the datagram is complete. The
complete datagrams come back as a new :class:`~fieldward.capture.batch.PacketBatch` of link type RAW
(101) with a rewritten IP header: IPv4 fragment offset and MF cleared, total length and header
checksum recomputed; IPv6 fragment header removed and the payload length recomputed. That batch goes
through :func:`~fieldward.decode.l2l4.decode_batch` again like any captured packet.

Per-fragment work is plain Python (only fragments are touched, never the whole batch), with hard
bounds so hostile traffic cannot exhaust memory:

- datagrams time out ``timeout_s`` seconds (packet time) after their first fragment;
- at most ``max_datagrams`` datagrams and ``max_bytes`` fragment bytes are held; beyond that the
  oldest datagrams are evicted;
- a datagram with more than ``max_fragments`` fragments, or whose reassembly would exceed 65535
  bytes (the "ping of death"), is dropped, and its later fragments are ignored until it times out.

Overlapping fragments keep the bytes that arrived first (a "first" policy, like Zeek and most BSDs);
an overlap that carries *different* bytes is counted as ``ip_fragment_overlap`` (the classic
Teardrop / IDS-evasion signature; RFC 5722 forbids any overlap for IPv6). Every anomaly is a counted
weird event (layer ``decode``), reported once per name per :meth:`FragmentReassembler.feed` call.
"""

from __future__ import annotations

import dataclasses
import struct
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from fieldward.capture import linktypes
from fieldward.capture.batch import PacketBatch
from fieldward.decode.columns import DecodedBatch
from fieldward.weird import WeirdLog

__all__ = [
    "FRAGMENT_WEIRD_DETAILS",
    "FragmentReassembler",
    "ReassemblyStats",
]

MAX_DATAGRAM: Final = 65535
"""Largest IPv4 datagram (total length) and IPv6 payload length without jumbograms (RFC 2675)."""
_IPV6_FRAGMENT: Final = 44
_IPV6_PER_FRAGMENT: Final = frozenset({0, 43, 60, 51, 135, 139, 140})
"""Extension headers that may precede the fragment header (RFC 8200 §4.5: the per-fragment part)."""
_MAX_IPV6_HEADERS: Final = 10

FRAGMENT_WEIRD_DETAILS: Final[dict[str, str]] = {
    "ip_fragment_timeout": "datagram still incomplete when its reassembly time ran out",
    "ip_fragment_evicted": "incomplete datagram evicted to stay within the reassembly memory bounds",
    "ip_fragment_overlap": "overlapping fragments carry different bytes (the first ones are kept)",
    "ip_fragment_oversize": "fragments reach past 65535 bytes (ping of death)",
    "ip_fragment_too_many": "datagram has more fragments than allowed; dropped",
    "ip_fragment_bad_length": "fragment other than the last is not a multiple of 8 bytes",
    "ip_fragment_truncated": "fragment not fully captured (snap length); it cannot be reassembled",
    "ip_fragment_malformed": "fragment headers inconsistent (bad header, conflicting end of datagram)",
    "ip_fragment_incomplete": "datagram still incomplete at the end of the input",
}
"""Weird names of the reassembler and their details."""


@dataclass(slots=True)
class ReassemblyStats:
    """Running totals of one reassembler."""

    fragments: int = 0
    """Fragment packets fed (including ignored ones)."""
    datagrams: int = 0
    """Datagrams reassembled and returned."""
    dropped: int = 0
    """Datagrams given up (timeout, eviction, too many fragments, oversize, end of input)."""


@dataclass(slots=True)
class _Fragment:
    """What one fragment packet contributes, parsed from its bytes."""

    key: tuple[object, ...]
    offset: int
    """Byte offset of ``data`` in the fragmentable part."""
    more: bool
    data: bytes
    header: bytes
    """IPv4: the header with options. IPv6: the per-fragment part (before the fragment header)."""
    next_header_at: int
    """IPv6: index in ``header`` of the Next Header field that names the fragment header."""
    next_header: int
    """IPv6: the fragment header's Next Header (the reassembled packet's protocol)."""


@dataclass(slots=True)
class _Datagram:
    """An incomplete datagram: the byte ranges held so far, in order and disjoint."""

    version: int
    first_ns: int
    interface: int
    data: bytearray = field(default_factory=bytearray)
    ranges: list[tuple[int, int]] = field(default_factory=list)
    held: int = 0
    fragments: int = 0
    end: int | None = None
    """Length of the fragmentable part, known once the last fragment (MF clear) arrived."""
    first: _Fragment | None = None
    """The offset-0 fragment (its header rebuilds the datagram's header)."""


class FragmentReassembler:
    """Reassembles IPv4 and IPv6 fragments fed batch by batch; see the module docstring."""

    def __init__(
        self,
        weird: WeirdLog | None = None,
        *,
        timeout_s: float = 30.0,
        max_datagrams: int = 4096,
        max_bytes: int = 64 * 2**20,
        max_fragments: int = 128,
    ) -> None:
        if timeout_s <= 0 or max_datagrams <= 0 or max_bytes <= 0 or max_fragments <= 0:
            raise ValueError("reassembly timeout and bounds must be positive")
        self.weird = weird
        self.timeout_ns = int(timeout_s * 1e9)
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.max_fragments = max_fragments
        self.stats = ReassemblyStats()
        self._pending: OrderedDict[tuple[object, ...], _Datagram] = OrderedDict()
        """Incomplete datagrams, oldest first (by first fragment)."""
        self._dead: OrderedDict[tuple[object, ...], int] = OrderedDict()
        """Dropped datagrams -> when their first fragment came; later fragments are ignored."""
        self._bytes = 0
        self._events: Counter[str] = Counter()

    # ------------------------------------------------------------------------------- public API
    @property
    def pending(self) -> int:
        """Incomplete datagrams held."""
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """Fragment bytes held for incomplete datagrams."""
        return self._bytes

    def feed(self, batch: PacketBatch, decoded: DecodedBatch) -> PacketBatch | None:
        """Take the fragments of ``batch``; return the datagrams they complete (None if none)."""
        if decoded.n != len(batch):
            raise ValueError(f"batch has {len(batch)} packets but the decoded batch {decoded.n}")
        rows = np.flatnonzero(decoded.is_fragment & (decoded.ip_version != 0) & (decoded.l3_offset >= 0))
        done: list[tuple[bytes, int, int]] = []
        for i in rows.tolist():
            ts = int(batch.ts_ns[i])
            self.expire(ts, report=False)
            self.stats.fragments += 1
            whole = self._add(batch, decoded, i, ts)
            if whole is not None:
                done.append((whole, ts, int(batch.interface[i])))
        if len(batch):
            self.expire(int(batch.ts_ns.max()), report=False)
        self._report(batch)
        if not done:
            return None
        out = PacketBatch.from_packets(
            [d[0] for d in done],
            ts_ns=[d[1] for d in done],
            linktype=linktypes.RAW,
            first_index=batch.first_index,
            source=batch.source,
        )
        return dataclasses.replace(out, interface=np.array([d[2] for d in done], dtype=np.uint16))

    def expire(self, now_ns: int, report: bool = True) -> int:
        """Drop datagrams whose first fragment is more than the timeout older than ``now_ns``."""
        limit = now_ns - self.timeout_ns
        expired = 0
        while self._pending:
            key, dgram = next(iter(self._pending.items()))
            if dgram.first_ns >= limit:
                break
            self._drop(key, "ip_fragment_timeout", keep_dead=False)
            expired += 1
        while self._dead and next(iter(self._dead.values())) < limit:
            self._dead.popitem(last=False)
        if report:
            self._report(None)
        return expired

    def flush(self) -> PacketBatch | None:
        """End of input: count every still incomplete datagram and forget all state.

        Complete datagrams are always returned by :meth:`feed` as soon as their last fragment
        arrives, so there is never anything left to return: this returns None (it has the same
        return type as :meth:`feed` so pipelines can treat both alike).
        """
        for key in list(self._pending):
            self._drop(key, "ip_fragment_incomplete", keep_dead=False)
        self._dead.clear()
        self._report(None)
        return None

    # ------------------------------------------------------------------------------- internals
    def _event(self, name: str, count: int = 1) -> None:
        self._events[name] += count

    def _report(self, batch: PacketBatch | None) -> None:
        if self.weird is not None:
            for name, count in self._events.items():
                self.weird.report(
                    name,
                    "decode",
                    FRAGMENT_WEIRD_DETAILS[name],
                    count=count,
                    source=(batch.source or None) if batch is not None else None,
                )
        self._events.clear()

    def _drop(self, key: tuple[object, ...], reason: str, keep_dead: bool = True) -> None:
        dgram = self._pending.pop(key, None)
        if dgram is None:
            return
        self._bytes -= dgram.held
        self.stats.dropped += 1
        self._event(reason)
        if keep_dead:
            self._bury(key, dgram.first_ns)

    def _bury(self, key: tuple[object, ...], first_ns: int) -> None:
        """Ignore the later fragments of a dropped datagram until it would have timed out."""
        self._dead[key] = first_ns
        while len(self._dead) > self.max_datagrams:
            self._dead.popitem(last=False)

    def _add(self, batch: PacketBatch, decoded: DecodedBatch, i: int, ts: int) -> bytes | None:
        """Add fragment packet ``i``; return the reassembled datagram if it completed one."""
        packet = batch.packet(i)[int(decoded.l3_offset[i]) :]
        frag = _parse_v4(packet, self) if decoded.ip_version[i] == 4 else _parse_v6(packet, self)
        if frag is None:
            return None
        key = frag.key
        if key in self._dead:
            return None
        end = frag.offset + len(frag.data)
        if frag.more and len(frag.data) % 8:
            self._event("ip_fragment_bad_length")
            return None
        dgram = self._pending.get(key)
        if _too_big(frag, end):
            if dgram is not None:
                self._drop(key, "ip_fragment_oversize")
            else:
                self._event("ip_fragment_oversize")
                self._bury(key, ts)
            return None
        if dgram is None:
            while len(self._pending) >= self.max_datagrams:
                self._drop(next(iter(self._pending)), "ip_fragment_evicted", keep_dead=False)
            dgram = _Datagram(version=4 if key[0] == 4 else 6, first_ns=ts, interface=int(batch.interface[i]))
            self._pending[key] = dgram
        dgram.fragments += 1
        if dgram.fragments > self.max_fragments:
            self._drop(key, "ip_fragment_too_many")
            return None
        if not frag.more:
            if dgram.end is not None and dgram.end != end:
                self._event("ip_fragment_malformed")  # a second, different "last" fragment: keep the first
                return None
            if dgram.ranges and dgram.ranges[-1][1] > end:
                self._event("ip_fragment_malformed")  # data already held past this end
                return None
            dgram.end = end
        elif dgram.end is not None and end > dgram.end:
            self._event("ip_fragment_malformed")
            return None
        if frag.offset == 0 and dgram.first is None:
            dgram.first = frag
        added = _insert(dgram, frag.offset, frag.data, self)
        self._bytes += added
        if self._bytes > self.max_bytes:
            self._make_room(key)
            if key not in self._pending:
                return None
        if dgram.end is None or dgram.first is None or dgram.ranges != [(0, dgram.end)]:
            return None
        del self._pending[key]
        self._bytes -= dgram.held
        self.stats.datagrams += 1
        return _rebuild(dgram.first, dgram.data, dgram.end)

    def _make_room(self, current: tuple[object, ...]) -> None:
        """Evict the oldest datagrams (the one being added last) until within ``max_bytes``."""
        for key in list(self._pending):
            if self._bytes <= self.max_bytes:
                return
            if key != current:
                self._drop(key, "ip_fragment_evicted", keep_dead=False)
        if self._bytes > self.max_bytes:
            self._drop(current, "ip_fragment_evicted")


def _too_big(frag: _Fragment, end: int) -> bool:
    """The reassembled datagram would exceed 65535 bytes (IPv4 total / IPv6 payload length)."""
    if frag.key[0] == 4:
        return len(frag.header) + end > MAX_DATAGRAM
    return len(frag.header) - 40 + end > MAX_DATAGRAM


def _parse_v4(ip: bytes, owner: FragmentReassembler) -> _Fragment | None:
    """IPv4 fragment (RFC 791 §3.1): key (src, dst, protocol, identification), RFC 791 §3.2."""
    if len(ip) < 20:
        owner._event("ip_fragment_truncated")
        return None
    hlen = (ip[0] & 0x0F) * 4
    total = int.from_bytes(ip[2:4], "big")
    if ip[0] >> 4 != 4 or hlen < 20 or total < hlen:
        owner._event("ip_fragment_malformed")
        return None
    if len(ip) < total:
        owner._event("ip_fragment_truncated")
        return None
    flags = int.from_bytes(ip[6:8], "big")
    return _Fragment(
        key=(4, ip[12:16], ip[16:20], ip[9], ip[4:6]),
        offset=(flags & 0x1FFF) * 8,
        more=bool(flags & 0x2000),
        data=ip[hlen:total],
        header=ip[:hlen],
        next_header_at=0,
        next_header=ip[9],
    )


def _parse_v6(ip: bytes, owner: FragmentReassembler) -> _Fragment | None:
    """IPv6 fragment: walk to the fragment header; key (src, dst, identification), RFC 8200 §4.5."""
    if len(ip) < 40:
        owner._event("ip_fragment_truncated")
        return None
    end = 40 + int.from_bytes(ip[4:6], "big")
    if len(ip) < end:
        owner._event("ip_fragment_truncated")
        return None
    at, nh, pos = 6, ip[6], 40
    for _ in range(_MAX_IPV6_HEADERS):
        if nh == _IPV6_FRAGMENT or nh not in _IPV6_PER_FRAGMENT or pos + 8 > end:
            break
        size = (ip[pos + 1] + 2) * 4 if nh == 51 else (ip[pos + 1] + 1) * 8
        at, nh, pos = pos, ip[pos], pos + size
    if nh != _IPV6_FRAGMENT or pos + 8 > end:
        owner._event("ip_fragment_malformed")
        return None
    field = int.from_bytes(ip[pos + 2 : pos + 4], "big")
    return _Fragment(
        key=(6, ip[8:24], ip[24:40], ip[pos + 4 : pos + 8]),
        offset=field & 0xFFF8,
        more=bool(field & 1),
        data=ip[pos + 8 : end],
        header=ip[:pos],
        next_header_at=at,
        next_header=ip[pos],
    )


def _insert(dgram: _Datagram, start: int, data: bytes, owner: FragmentReassembler) -> int:
    """Copy ``data`` at ``start`` into the gaps of ``dgram`` (first policy); return bytes added."""
    stop = start + len(data)
    if len(dgram.data) < stop:
        dgram.data.extend(bytes(stop - len(dgram.data)))
    cursor = start
    conflict = False
    for lo, hi in dgram.ranges:
        if hi <= start or lo >= stop:
            continue
        a, b = max(lo, start), min(hi, stop)
        if dgram.data[a:b] != data[a - start : b - start]:
            conflict = True
        if cursor < a:
            dgram.data[cursor:a] = data[cursor - start : a - start]
        cursor = max(cursor, b)
    if cursor < stop:
        dgram.data[cursor:stop] = data[cursor - start :]
    if conflict:
        owner._event("ip_fragment_overlap")
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted([*dgram.ranges, (start, stop)]):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    held = sum(hi - lo for lo, hi in merged)
    added = held - dgram.held
    dgram.ranges = merged
    dgram.held = held
    return added


def _checksum(header: bytes | bytearray) -> int:
    """Internet checksum (RFC 1071) of an IPv4 header."""
    total = sum(int.from_bytes(header[i : i + 2], "big") for i in range(0, len(header), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _rebuild(first: _Fragment, data: bytearray, length: int) -> bytes:
    """The reassembled datagram: the first fragment's header, rewritten, then the data."""
    header = bytearray(first.header)
    if first.key[0] == 4:
        struct.pack_into("!H", header, 2, len(header) + length)
        flags = int.from_bytes(header[6:8], "big") & 0xC000  # reserved and DF bits kept; MF, offset 0
        struct.pack_into("!H", header, 6, flags)
        struct.pack_into("!H", header, 10, 0)
        struct.pack_into("!H", header, 10, _checksum(header))
    else:
        header[first.next_header_at] = first.next_header
        struct.pack_into("!H", header, 4, len(header) - 40 + length)
    return bytes(header) + bytes(data[:length])
