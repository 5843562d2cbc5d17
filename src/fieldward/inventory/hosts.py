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

Only the distinct rows of a batch reach Python; the totals are kept in dictionaries whose size is
bounded by the number of hosts, not packets.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from fieldward.capture.batch import PacketBatch
from fieldward.decode.columns import ETH_ARP, PROTO_TCP, TCP_ACK, TCP_SYN, DecodedBatch

K = TypeVar("K")

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


@dataclass
class HostObserver:
    """Accumulates host evidence batch by batch (see the module docstring)."""

    macs: dict[tuple[int, int], Activity] = field(default_factory=dict)
    """(vlan, mac) -> frames sent."""
    bindings: dict[tuple[int, int, str], Activity] = field(default_factory=dict)
    """(vlan, mac, ip) -> IP packets that MAC sent with that source address (mac 0: no link layer)."""
    arp: dict[tuple[int, int, str], Activity] = field(default_factory=dict)
    """(vlan, sender MAC, sender IPv4) of ARP packets."""
    senders: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    """IP -> {MAC text: [first, last]} of the packets sent from it: whose address it was when (a
    DHCP lease handed to another device changes it); see :meth:`mac_at`."""
    syn: dict[str, dict[SynSignature, int]] = field(default_factory=dict)
    """IP -> signatures of the SYN / SYN+ACK packets it sent, with counts."""
    max_syn_signatures: int = 8

    def observe(self, batch: PacketBatch, decoded: DecodedBatch) -> None:
        if decoded.n == 0:
            return
        ts = batch.ts_ns
        self._mac_activity(decoded, ts)
        self._ip_bindings(decoded, ts)
        self._arp(decoded, ts)
        self._syn(decoded)

    def mac_at(self, ip: str, ts: int) -> str:
        """The MAC that sent from ``ip`` around time ``ts`` ("" if none did, or without link layer).

        Of the MACs whose sending period covers ``ts``, the one that started last (a lease handed
        over and back); else, of those that started before ``ts``, the one heard last; else the first.
        """
        spans = self.senders.get(ip)
        if not spans:
            return ""
        if len(spans) == 1:
            return next(iter(spans))
        covering = [(first, mac) for mac, (first, last) in spans.items() if first <= ts <= last]
        if covering:
            return max(covering)[1]
        before = [(last, mac) for mac, (first, last) in spans.items() if first <= ts]
        if before:
            return max(before)[1]
        return min((first, mac) for mac, (first, _last) in spans.items())[1]

    # ------------------------------------------------------------------ aggregations

    def _mac_activity(self, decoded: DecodedBatch, ts: npt.NDArray[np.int64]) -> None:
        mac = decoded.eth_src
        rows = np.flatnonzero((mac != 0) & ((mac & GROUP_BIT) == 0))
        if rows.shape[0] == 0:
            return
        vlan = decoded.vlan[rows].astype(np.uint64)
        mac = mac[rows]
        order, starts = _groups(vlan, mac)
        for (v, m), act in zip(
            _keys(starts, order, vlan, mac), _activity(starts, order, ts[rows]), strict=True
        ):
            _merge(self.macs, (v, m), act)

    def _ip_bindings(self, decoded: DecodedBatch, ts: npt.NDArray[np.int64]) -> None:
        mac = decoded.eth_src
        rows = np.flatnonzero((decoded.ip_version != 0) & ((mac & GROUP_BIT) == 0))
        if rows.shape[0] == 0:
            return
        addr = np.ascontiguousarray(decoded.src_ip[rows]).view(np.uint64)  # (k, 2)
        hi, lo = addr[:, 0].copy(), addr[:, 1].copy()
        vlan = decoded.vlan[rows].astype(np.uint64)
        macs = mac[rows]
        order, starts = _groups(vlan, macs, hi, lo)
        ttl = decoded.ttl[rows].astype(np.int64)
        version = decoded.ip_version[rows]
        first_rows = rows[order[starts]]
        max_ttl = np.maximum.reduceat(ttl[order], starts)
        for i, act in enumerate(_activity(starts, order, ts[rows])):
            row = int(first_rows[i])
            if decoded.ip_version[row] == 4 and not decoded.src_ip[row, 12:].any():
                continue  # 0.0.0.0: a DHCP client without an address yet
            text = ip_text(decoded.src_ip[row].tobytes(), int(version[order[starts[i]]]))
            act.max_ttl = int(max_ttl[i])
            mac_value = int(macs[order[starts[i]]])
            _merge(self.bindings, (int(decoded.vlan[row]), mac_value, text), act)
            span = self.senders.setdefault(text, {}).setdefault(
                mac_text(mac_value) if mac_value else "", [act.first, act.last]
            )
            span[0], span[1] = min(span[0], act.first), max(span[1], act.last)

    def _arp(self, decoded: DecodedBatch, ts: npt.NDArray[np.int64]) -> None:
        rows = np.flatnonzero(
            (decoded.ethertype == ETH_ARP)
            & ((decoded.arp_op == 1) | (decoded.arp_op == 2))
            & (decoded.arp_spa != 0)
            & (decoded.arp_sha != 0)
            & ((decoded.arp_sha & GROUP_BIT) == 0)
        )
        if rows.shape[0] == 0:
            return
        vlan = decoded.vlan[rows].astype(np.uint64)
        sha = decoded.arp_sha[rows]
        spa = decoded.arp_spa[rows].astype(np.uint64)
        order, starts = _groups(vlan, sha, spa)
        for (v, m, a), act in zip(
            _keys(starts, order, vlan, sha, spa), _activity(starts, order, ts[rows]), strict=True
        ):
            _merge(self.arp, (v, m, str(ipaddress.IPv4Address(a))), act)

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


def _keys(
    starts: npt.NDArray[np.intp], order: npt.NDArray[np.intp], *columns: npt.NDArray[np.uint64]
) -> list[tuple[int, ...]]:
    picked = order[starts]
    return list(zip(*(column[picked].tolist() for column in columns), strict=True))


def _activity(
    starts: npt.NDArray[np.intp], order: npt.NDArray[np.intp], ts: npt.NDArray[np.int64]
) -> list[Activity]:
    ordered = ts[order]
    counts = np.diff(np.append(starts, order.shape[0]))
    first = np.minimum.reduceat(ordered, starts)
    last = np.maximum.reduceat(ordered, starts)
    return [
        Activity(int(c), int(f), int(lst))
        for c, f, lst in zip(counts.tolist(), first.tolist(), last.tolist(), strict=True)
    ]


def _merge(table: dict[K, Activity], key: K, act: Activity) -> None:
    known = table.get(key)
    if known is None:
        table[key] = act
        return
    known.packets += act.packets
    known.first = min(known.first, act.first)
    known.last = max(known.last, act.last)
    known.max_ttl = max(known.max_ttl, act.max_ttl)
