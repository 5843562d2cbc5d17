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
from typing import Any

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
    if version == 4:
        return f"{raw[12]}.{raw[13]}.{raw[14]}.{raw[15]}"
    return str(ipaddress.IPv6Address(raw))


def _ipv4_text(value: int) -> str:
    return f"{(value >> 24) & 0xFF}.{(value >> 16) & 0xFF}.{(value >> 8) & 0xFF}.{value & 0xFF}"


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


KEY_WORDS = 4
"""Key words of a table row: (vlan << 48 | MAC, address high, address low, IP version) at most."""
ROW_WORDS = 8
"""A row is the key words then packets, first, last, max_ttl: 64 bytes, one cache line, so a look-up
touches one line (packets > 0 marks a used slot)."""
PACKETS, FIRST, LAST, MAX_TTL = KEY_WORDS, KEY_WORDS + 1, KEY_WORDS + 2, KEY_WORDS + 3
LINK_ROWS, BINDING_ROWS, ARP_ROWS = 0, 1, 2
"""The three tables: frames of a MAC that are not address bindings (ARP, non-IP, IPv4 from 0.0.0.0),
address bindings (vlan, MAC, IP), ARP senders. A MAC's frame total is its link rows plus its
binding rows (summed when read), so an IP packet updates one table, not two."""
MAC_BITS = np.uint64((1 << 48) - 1)
Word = int | np.signedinteger[Any]
"""A table word as the compiled helpers take it (a Python or a numpy integer)."""


def _aligned_table(capacity: int) -> npt.NDArray[np.int64]:
    """A zeroed (capacity, ROW_WORDS) table whose rows start on 64-byte boundaries."""
    raw = np.zeros(capacity * ROW_WORDS + ROW_WORDS, dtype=np.int64)
    skip = (-raw.ctypes.data % 64) // 8
    table: npt.NDArray[np.int64] = raw[skip : skip + capacity * ROW_WORDS].reshape(capacity, ROW_WORDS)
    return table


@numba.njit(cache=True, nogil=True, inline="always")
def _slot(k0: Word, k1: Word, k2: Word, k3: Word, mask: Word) -> Word:
    """Hash of a key (all four words mixed, then a 64-bit finaliser: every key bit reaches the low
    bits the slot is taken from, so one router's many addresses do not cluster)."""
    h = np.uint64(k0) * np.uint64(0x9E3779B97F4A7C15)
    h = (h ^ np.uint64(k1)) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ np.uint64(k2)) * np.uint64(0x94D049BB133111EB)
    h = (h ^ np.uint64(k3)) * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    return np.int64(h & np.uint64(mask))


@numba.njit(cache=True, nogil=True, inline="always")
def _add(
    table: npt.NDArray[np.int64],
    k0: Word,
    k1: Word,
    k2: Word,
    k3: Word,
    packets: Word,
    first: Word,
    last: Word,
    ttl: Word,
) -> int:
    """Add one row into an open-addressing table; returns 1 when it took a new slot, else 0."""
    mask = table.shape[0] - 1
    slot = _slot(k0, k1, k2, k3, mask)
    while True:
        row = table[slot]
        if row[PACKETS] == 0:
            row[0], row[1], row[2], row[3] = k0, k1, k2, k3
            row[PACKETS], row[FIRST], row[LAST], row[MAX_TTL] = packets, first, last, ttl
            return 1
        if row[0] == k0 and row[1] == k1 and row[2] == k2 and row[3] == k3:
            row[PACKETS] += packets
            if first < row[FIRST]:
                row[FIRST] = first
            if last > row[LAST]:
                row[LAST] = last
            if ttl > row[MAX_TTL]:
                row[MAX_TTL] = ttl
            return 0
        slot = (slot + 1) & mask


@numba.njit(cache=True, nogil=True)
def _observe_rows(
    begin: int,
    eth_src: npt.NDArray[np.uint64],
    vlan: npt.NDArray[np.uint16],
    version: npt.NDArray[np.uint8],
    src_ip: npt.NDArray[np.uint8],
    ttl: npt.NDArray[np.uint8],
    ethertype: npt.NDArray[np.uint16],
    arp_op: npt.NDArray[np.uint16],
    arp_sha: npt.NDArray[np.uint64],
    arp_spa: npt.NDArray[np.uint32],
    ts: npt.NDArray[np.int64],
    link: npt.NDArray[np.int64],
    bindings: npt.NDArray[np.int64],
    arp: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
    arp_type: int,
) -> int:
    """One pass over a batch's packets from ``begin``: each updates its table rows in place.

    Returns the next row to do: it stops early once a table is half full so the caller can grow it.
    """
    group = np.uint64(1 << 40)
    for i in range(begin, eth_src.shape[0]):
        mac = eth_src[i]
        unicast = (mac & group) == 0
        key = np.int64((np.uint64(vlan[i]) << np.uint64(48)) | (mac & MAC_BITS))
        v = version[i]
        if v != 0 and unicast:
            hi = np.uint64(0)
            lo = np.uint64(0)
            for j in range(8):
                hi |= np.uint64(src_ip[i, j]) << np.uint64(8 * j)
                lo |= np.uint64(src_ip[i, 8 + j]) << np.uint64(8 * j)
            if v == 4 and (lo >> np.uint64(32)) == 0:
                if mac != 0:  # from 0.0.0.0 (a DHCP client): the MAC's frame, not a binding
                    sizes[LINK_ROWS] += _add(link, key, 0, 0, 0, 1, ts[i], ts[i], 0)
            else:
                sizes[BINDING_ROWS] += _add(
                    bindings, key, np.int64(hi), np.int64(lo), np.int64(v), 1, ts[i], ts[i], np.int64(ttl[i])
                )
        elif mac != 0 and unicast:
            sizes[LINK_ROWS] += _add(link, key, 0, 0, 0, 1, ts[i], ts[i], 0)
        if ethertype[i] == arp_type and (arp_op[i] == 1 or arp_op[i] == 2):
            sha = arp_sha[i]
            if arp_spa[i] != 0 and sha != 0 and (sha & group) == 0:
                arp_key = np.int64((np.uint64(vlan[i]) << np.uint64(48)) | (sha & MAC_BITS))
                sizes[ARP_ROWS] += _add(arp, arp_key, np.int64(arp_spa[i]), 0, 0, 1, ts[i], ts[i], 0)
        if (
            2 * sizes[LINK_ROWS] > link.shape[0]
            or 2 * sizes[BINDING_ROWS] > bindings.shape[0]
            or 2 * sizes[ARP_ROWS] > arp.shape[0]
        ):
            return i + 1
    done: int = eth_src.shape[0]
    return done


@numba.njit(cache=True, nogil=True)
def _rehash(old: npt.NDArray[np.int64], new: npt.NDArray[np.int64]) -> None:
    for slot in range(old.shape[0]):
        row = old[slot]
        if row[PACKETS] != 0:
            _add(new, row[0], row[1], row[2], row[3], row[PACKETS], row[FIRST], row[LAST], row[MAX_TTL])


def _used_rows(table: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The used rows of a table, in key order (the order never depends on the hash or capacity)."""
    rows = table[table[:, PACKETS] != 0]
    keys = rows[:, :KEY_WORDS].view(np.uint64)
    ordered: npt.NDArray[np.int64] = rows[np.lexsort(keys.T[::-1])]
    return ordered


def _per_mac(rows: npt.NDArray[np.int64]) -> dict[tuple[int, int], Activity]:
    """Rows keyed by (vlan << 48 | MAC) first -> frames, first and last time per (vlan, MAC)."""
    if rows.shape[0] == 0:
        return {}
    key = rows[:, 0].view(np.uint64)
    order = np.argsort(key, kind="stable")
    key, rows = key[order], rows[order]
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    columns = (
        (key[starts] >> np.uint64(48)).tolist(),
        (key[starts] & MAC_BITS).tolist(),
        np.add.reduceat(rows[:, PACKETS], starts).tolist(),
        np.minimum.reduceat(rows[:, FIRST], starts).tolist(),
        np.maximum.reduceat(rows[:, LAST], starts).tolist(),
    )
    return {(v, m): Activity(n, f, lst) for v, m, n, f, lst in zip(*columns, strict=True)}


@dataclass
class HostObserver:
    """Accumulates host evidence batch by batch (see the module docstring).

    ``macs``, ``bindings`` and ``arp`` are read once the capture is done (each reading merges what
    the batches added): Python objects are made per host, never per packet.
    """

    syn: dict[str, dict[SynSignature, int]] = field(default_factory=dict)
    """IP -> signatures of the SYN / SYN+ACK packets it sent, with counts."""
    max_syn_signatures: int = 8
    _tables: list[npt.NDArray[np.int64]] = field(
        default_factory=lambda: [_aligned_table(1 << 12) for _ in (LINK_ROWS, BINDING_ROWS, ARP_ROWS)]
    )
    _sizes: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(3, dtype=np.int64))
    _read: dict[str, object] = field(default_factory=dict)
    """What the result properties made, until the next batch."""

    def observe(self, batch: PacketBatch, decoded: DecodedBatch) -> None:
        """Add one batch: one compiled pass updates each packet's table rows in place."""
        if decoded.n == 0:
            return
        self._read.clear()
        done = 0
        while done < decoded.n:
            link, bindings, arp = self._tables
            done = _observe_rows(
                done,
                decoded.eth_src,
                decoded.vlan,
                decoded.ip_version,
                decoded.src_ip,
                decoded.ttl,
                decoded.ethertype,
                decoded.arp_op,
                decoded.arp_sha,
                decoded.arp_spa,
                batch.ts_ns,
                link,
                bindings,
                arp,
                self._sizes,
                ETH_ARP,
            )
            for index, table in enumerate(self._tables):
                if 2 * self._sizes[index] > table.shape[0]:
                    grown = _aligned_table(table.shape[0] * 4)
                    _rehash(table, grown)
                    self._tables[index] = grown
        self._syn(decoded)

    # ------------------------------------------------------------------ results (after the capture)

    @property
    def macs(self) -> dict[tuple[int, int], Activity]:
        """(vlan, mac) -> frames sent (the link rows plus the binding rows of each MAC)."""
        cached = self._read.get("macs")
        if cached is None:
            bindings = _used_rows(self._tables[BINDING_ROWS])
            rows = np.concatenate([_used_rows(self._tables[LINK_ROWS]), bindings[bindings[:, 0] != 0]])
            cached = self._read["macs"] = _per_mac(rows)
        return cached  # type: ignore[return-value]

    @property
    def bindings(self) -> dict[tuple[int, int, str], Activity]:
        """(vlan, mac, ip) -> IP packets that MAC sent with that source address (mac 0: no link layer)."""
        cached = self._read.get("bindings")
        if cached is None:
            rows = _used_rows(self._tables[BINDING_ROWS])
            addresses = rows[:, 1:3].astype("<i8").view(np.uint8)  # the 16 address bytes, in order
            out: dict[tuple[int, int, str], Activity] = {}
            columns = (rows[:, j].tolist() for j in (0, 3, PACKETS, FIRST, LAST, MAX_TTL))
            for row, (k, version, n, f, lst, ttl) in enumerate(zip(*columns, strict=True)):
                key = k & 0xFFFF_FFFF_FFFF_FFFF
                text = ip_text(addresses[row].tobytes(), version)
                out[(key >> 48, key & 0xFFFF_FFFF_FFFF, text)] = Activity(n, f, lst, ttl)
            cached = self._read["bindings"] = out
        return cached  # type: ignore[return-value]

    @property
    def arp(self) -> dict[tuple[int, int, str], Activity]:
        """(vlan, sender MAC, sender IPv4) of ARP requests and replies."""
        cached = self._read.get("arp")
        if cached is None:
            rows = _used_rows(self._tables[ARP_ROWS])
            columns = (rows[:, j].tolist() for j in (0, 1, PACKETS, FIRST, LAST))
            cached = self._read["arp"] = {
                ((k & 0xFFFF_FFFF_FFFF_FFFF) >> 48, k & 0xFFFF_FFFF_FFFF, _ipv4_text(a)): Activity(n, f, lst)
                for k, a, n, f, lst in zip(*columns, strict=True)
            }
        return cached  # type: ignore[return-value]

    # ------------------------------------------------------------------ per batch

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
        counts = np.diff(np.append(starts, order.shape[0])).tolist()
        first = rows[order[starts]]  # one packet of each (address, signature) group
        for row, count, synack, ttl, window, mss, wscale, sack, stamps in zip(
            first.tolist(),
            counts,
            ((decoded.tcp_flags[first] & TCP_ACK) != 0).tolist(),
            decoded.ttl[first].tolist(),
            decoded.tcp_window[first].tolist(),
            decoded.tcp_mss[first].tolist(),
            decoded.tcp_wscale[first].tolist(),
            decoded.tcp_sack_permitted[first].astype(bool).tolist(),
            decoded.tcp_has_timestamps[first].astype(bool).tolist(),
            strict=True,
        ):
            ip = ip_text(decoded.src_ip[row].tobytes(), int(decoded.ip_version[row]))
            signature = _signature(
                synack, initial_ttl(ttl), window, mss, None if wscale == 0xFF else wscale, sack, stamps
            )
            known = self.syn.setdefault(ip, {})
            if signature in known or len(known) < self.max_syn_signatures:
                known[signature] = known.get(signature, 0) + count


@lru_cache(maxsize=4096)
def _signature(
    synack: bool, ttl: int, window: int, mss: int, wscale: int | None, sack: bool, stamps: bool
) -> SynSignature:
    """One shared object per distinct signature (thousands of hosts send the same)."""
    return SynSignature(synack, ttl, window, mss, wscale, sack, stamps)
