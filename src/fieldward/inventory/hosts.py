"""Who is on the wire: per-batch, vectorized aggregation of link- and network-layer host evidence.

For every decoded batch, :class:`HostObserver` reduces the packets (with numpy, never a Python loop
per packet) to a handful of rows per host:

* MAC activity: frames each source MAC sent, per VLAN, with first and last time;
* address bindings: which source MAC carried which source IP, with packet counts, first and last
  time and the highest TTL seen (the basis of "keyed by MAC on the local segment, by IP behind a
  router", and of the hop distance and initial TTL);
* ARP bindings: the sender MAC and IPv4 address of ARP requests and replies;
* TCP SYN and SYN+ACK signatures (initial TTL, window, MSS, window scale, SACK, timestamps): the
  passive OS fingerprint p0f popularised.

MAC, address and ARP totals are kept in hash tables (numba, updated in place), TCP signatures in
dictionaries: their size is bounded by the number of hosts, not packets, and Python sees each host
once, when the capture is done.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

import numba
import numpy as np
import numpy.typing as npt

from fieldward.capture.batch import PacketBatch
from fieldward.decode.columns import ETH_ARP, PROTO_TCP, TCP_ACK, TCP_SYN, DecodedBatch

GROUP_BIT = np.uint64(1 << 40)
"""The I/G bit of a MAC held as a 48-bit integer (first octet's least significant bit)."""


@dataclass(slots=True)
class Activity:
    packets: int
    first: int
    last: int
    max_ttl: int = 0


@dataclass(frozen=True, slots=True)
class SynSignature:
    """A TCP SYN (client) or SYN+ACK (server) signature as sent by a host."""

    synack: bool
    initial_ttl: int
    window: int
    mss: int
    wscale: int | None
    sack: bool
    timestamps: bool

    def text(self) -> str:
        """The ``tcp.syn`` / ``tcp.synack`` fact matched by fingerprint rules, e.g.
        ``ttl=128,win=64240,mss=1460,ws=8,sack=1,ts=0``."""
        ws = "-" if self.wscale is None else str(self.wscale)
        return (
            f"ttl={self.initial_ttl},win={self.window},mss={self.mss},ws={ws},"
            f"sack={int(self.sack)},ts={int(self.timestamps)}"
        )


def initial_ttl(ttl: int) -> int:
    """The initial TTL a host most likely used: the smallest common default not below ``ttl``."""
    for start in (32, 64, 128, 255):
        if ttl <= start:
            return start
    return 255


def ip_text(raw: bytes, version: int) -> str:
    """Address text of a 16-byte address column row (IPv4 in its last 4 bytes)."""
    return str(ipaddress.IPv4Address(raw[12:])) if version == 4 else str(ipaddress.IPv6Address(raw))


@lru_cache(maxsize=1 << 17)
def mac_text(value: int) -> str:
    return ":".join(f"{b:02x}" for b in int(value).to_bytes(6, "big"))


def _groups(*keys: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Sort order and group start positions of the rows' composite key (exact, no hashing)."""
    order = np.lexsort(keys[::-1])
    change = np.zeros(order.shape[0], dtype=bool)
    if order.shape[0]:
        change[0] = True
        for key in keys:
            ordered = key[order]
            change[1:] |= ordered[1:] != ordered[:-1]
    return order, np.flatnonzero(change)


Columns = dict[str, npt.NDArray[np.uint64] | npt.NDArray[np.int64]]


@numba.njit(cache=True, nogil=True)
def _upsert(
    table_keys: npt.NDArray[np.uint64],
    used: npt.NDArray[np.bool_],
    stats: npt.NDArray[np.int64],
    keys: npt.NDArray[np.uint64],
    rows: npt.NDArray[np.int64],
    size: int,
) -> tuple[int, int]:
    """Add ``rows`` (packets, first, last, max_ttl) under ``keys`` into an open-addressing table.

    Returns (rows consumed, entries): it stops once the table is half full so the caller can grow it.
    """
    capacity = used.shape[0]
    mask = capacity - 1
    width = keys.shape[1]
    for i in range(keys.shape[0]):
        h = np.uint64(0x2545F4914F6CDD1D)
        for j in range(width):
            h = (h ^ keys[i, j]) * np.uint64(1099511628211)
        slot = np.int64(h & np.uint64(mask))
        while True:
            if not used[slot]:
                used[slot] = True
                for j in range(width):
                    table_keys[slot, j] = keys[i, j]
                for j in range(4):
                    stats[slot, j] = rows[i, j]
                size += 1
                break
            same = True
            for j in range(width):
                if table_keys[slot, j] != keys[i, j]:
                    same = False
                    break
            if same:
                stats[slot, 0] += rows[i, 0]
                stats[slot, 1] = min(stats[slot, 1], rows[i, 1])
                stats[slot, 2] = max(stats[slot, 2], rows[i, 2])
                stats[slot, 3] = max(stats[slot, 3], rows[i, 3])
                break
            slot = (slot + 1) & mask
        if 2 * size > capacity:
            return i + 1, size
    return keys.shape[0], size


class Aggregate:
    """Rows keyed by integer columns with packets, first, last and max_ttl, summed in place.

    A hashed open-addressing table (numba) updates each host's counters as its rows arrive: the
    cost per row is constant whatever the number of hosts, and Python sees each host once, at the
    end (:meth:`merge`).
    """

    def __init__(self, keys: tuple[str, ...], capacity: int = 1 << 12) -> None:
        self.keys = keys
        self._size = 0
        self._keys = np.zeros((capacity, len(keys)), dtype=np.uint64)
        self._used = np.zeros(capacity, dtype=np.bool_)
        self._stats = np.zeros((capacity, 4), dtype=np.int64)

    def add(self, rows: Columns) -> None:
        keys = np.ascontiguousarray(np.stack([rows[name].astype(np.uint64) for name in self.keys], axis=1))
        stats = np.ascontiguousarray(
            np.stack(
                [rows[name].astype(np.int64) for name in ("packets", "first", "last", "max_ttl")], axis=1
            )
        )
        done = 0
        while done < keys.shape[0]:
            taken, self._size = _upsert(
                self._keys, self._used, self._stats, keys[done:], stats[done:], self._size
            )
            done += taken
            if 2 * self._size > self._used.shape[0]:
                self._grow()

    def _grow(self) -> None:
        old = np.flatnonzero(self._used)
        keys, stats = self._keys[old], self._stats[old]
        capacity = self._used.shape[0] * 4
        self._keys = np.zeros((capacity, len(self.keys)), dtype=np.uint64)
        self._used = np.zeros(capacity, dtype=np.bool_)
        self._stats = np.zeros((capacity, 4), dtype=np.int64)
        _taken, self._size = _upsert(self._keys, self._used, self._stats, keys, stats, 0)

    def merge(self) -> Columns:
        """Every row, as columns (key columns, then packets, first, last, max_ttl)."""
        slots = np.flatnonzero(self._used)
        out: Columns = {name: self._keys[slots, j] for j, name in enumerate(self.keys)}
        for j, name in enumerate(("packets", "first", "last", "max_ttl")):
            out[name] = self._stats[slots, j]
        return out


def _one_per_packet(
    rows: npt.NDArray[np.intp], ts: npt.NDArray[np.int64], ttl: npt.NDArray[np.uint8] | None
) -> Columns:
    return {
        "packets": np.ones(rows.shape[0], dtype=np.int64),
        "first": ts[rows],
        "last": ts[rows],
        "max_ttl": ttl[rows].astype(np.int64) if ttl is not None else np.zeros(rows.shape[0], dtype=np.int64),
    }


@dataclass
class HostObserver:
    """Accumulates host evidence batch by batch (see the module docstring).

    ``macs``, ``bindings`` and ``arp`` are read once the capture is done (each reading merges what
    the batches added): Python objects are made per host, never per packet.
    """

    syn: dict[str, dict[SynSignature, int]] = field(default_factory=dict)
    """IP -> signatures of the SYN / SYN+ACK packets it sent, with counts."""
    max_syn_signatures: int = 8
    _macs: Aggregate = field(default_factory=lambda: Aggregate(("vlan", "mac")))
    _bindings: Aggregate = field(
        default_factory=lambda: Aggregate(("vlan", "mac", "ip_hi", "ip_lo", "version"))
    )
    _arp: Aggregate = field(default_factory=lambda: Aggregate(("vlan", "mac", "ip")))

    def observe(self, batch: PacketBatch, decoded: DecodedBatch) -> None:
        """Add one batch: every row goes straight into the hashed aggregates."""
        if decoded.n == 0:
            return
        ts = batch.ts_ns
        unicast = (decoded.eth_src & GROUP_BIT) == 0
        rows = np.flatnonzero((decoded.eth_src != 0) & unicast)
        if rows.shape[0]:
            self._macs.add(
                {
                    "vlan": decoded.vlan[rows].astype(np.uint64),
                    "mac": decoded.eth_src[rows],
                    **_one_per_packet(rows, ts, None),
                }
            )
        self._ip_bindings(decoded, ts, unicast)
        self._arp_senders(decoded, ts)
        self._syn(decoded)

    # ------------------------------------------------------------------ results (after the capture)

    @property
    def macs(self) -> dict[tuple[int, int], Activity]:
        """(vlan, mac) -> frames sent."""
        table = self._macs.merge()
        return {
            (v, m): Activity(n, f, lst)
            for v, m, n, f, lst in zip(
                *(table[c].tolist() for c in ("vlan", "mac", "packets", "first", "last")), strict=True
            )
        }

    @property
    def bindings(self) -> dict[tuple[int, int, str], Activity]:
        """(vlan, mac, ip) -> IP packets that MAC sent with that source address (mac 0: no link layer)."""
        table = self._bindings.merge()
        out: dict[tuple[int, int, str], Activity] = {}
        addresses = np.stack([table["ip_hi"], table["ip_lo"]], axis=1).astype(np.uint64).view(np.uint8)
        columns = (
            table[c].tolist() for c in ("vlan", "mac", "version", "packets", "first", "last", "max_ttl")
        )
        for row, (v, m, version, n, f, lst, ttl) in enumerate(zip(*columns, strict=True)):
            text = ip_text(addresses[row].tobytes(), version)
            out[(v, m, text)] = Activity(n, f, lst, ttl)
        return out

    @property
    def arp(self) -> dict[tuple[int, int, str], Activity]:
        """(vlan, sender MAC, sender IPv4) of ARP requests and replies."""
        table = self._arp.merge()
        return {
            (v, m, str(ipaddress.IPv4Address(a))): Activity(n, f, lst)
            for v, m, a, n, f, lst in zip(
                *(table[c].tolist() for c in ("vlan", "mac", "ip", "packets", "first", "last")), strict=True
            )
        }

    # ------------------------------------------------------------------ per batch

    def _ip_bindings(
        self, decoded: DecodedBatch, ts: npt.NDArray[np.int64], unicast: npt.NDArray[np.bool_]
    ) -> None:
        version = decoded.ip_version
        unspecified = (version == 4) & ~decoded.src_ip[:, 12:].any(axis=1)  # 0.0.0.0: DHCP client
        rows = np.flatnonzero((version != 0) & unicast & ~unspecified)
        if rows.shape[0] == 0:
            return
        addr = np.ascontiguousarray(decoded.src_ip[rows]).view(np.uint64)  # (k, 2)
        self._bindings.add(
            {
                "vlan": decoded.vlan[rows].astype(np.uint64),
                "mac": decoded.eth_src[rows],
                "ip_hi": addr[:, 0],
                "ip_lo": addr[:, 1],
                "version": version[rows].astype(np.uint64),
                **_one_per_packet(rows, ts, decoded.ttl),
            }
        )

    def _arp_senders(self, decoded: DecodedBatch, ts: npt.NDArray[np.int64]) -> None:
        rows = np.flatnonzero(
            (decoded.ethertype == ETH_ARP)
            & ((decoded.arp_op == 1) | (decoded.arp_op == 2))
            & (decoded.arp_spa != 0)
            & (decoded.arp_sha != 0)
            & ((decoded.arp_sha & GROUP_BIT) == 0)
        )
        if rows.shape[0] == 0:
            return
        self._arp.add(
            {
                "vlan": decoded.vlan[rows].astype(np.uint64),
                "mac": decoded.arp_sha[rows],
                "ip": decoded.arp_spa[rows].astype(np.uint64),
                **_one_per_packet(rows, ts, None),
            }
        )

    def _syn(self, decoded: DecodedBatch) -> None:
        rows = np.flatnonzero((decoded.ip_proto == PROTO_TCP) & ((decoded.tcp_flags & TCP_SYN) != 0))
        if rows.shape[0] == 0:
            return
        addr = np.ascontiguousarray(decoded.src_ip[rows]).view(np.uint64)
        columns = (
            addr[:, 0].copy(),
            addr[:, 1].copy(),
            (decoded.tcp_flags[rows] & TCP_ACK).astype(np.uint64),
            decoded.ttl[rows].astype(np.uint64),
            decoded.tcp_window[rows].astype(np.uint64),
            decoded.tcp_mss[rows].astype(np.uint64),
            decoded.tcp_wscale[rows].astype(np.uint64),
            decoded.tcp_sack_permitted[rows].astype(np.uint64),
            decoded.tcp_has_timestamps[rows].astype(np.uint64),
        )
        order, starts = _groups(*columns)
        counts = np.diff(np.append(starts, order.shape[0]))
        for i, start in enumerate(starts):
            row = int(rows[order[start]])
            ip = ip_text(decoded.src_ip[row].tobytes(), int(decoded.ip_version[row]))
            wscale = int(decoded.tcp_wscale[row])
            signature = SynSignature(
                synack=bool(decoded.tcp_flags[row] & TCP_ACK),
                initial_ttl=initial_ttl(int(decoded.ttl[row])),
                window=int(decoded.tcp_window[row]),
                mss=int(decoded.tcp_mss[row]),
                wscale=None if wscale == 0xFF else wscale,
                sack=bool(decoded.tcp_sack_permitted[row]),
                timestamps=bool(decoded.tcp_has_timestamps[row]),
            )
            known = self.syn.setdefault(ip, {})
            if signature in known or len(known) < self.max_syn_signatures:
                known[signature] = known.get(signature, 0) + int(counts[i])
