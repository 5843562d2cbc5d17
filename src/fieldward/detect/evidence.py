"""Evidence captures: the packets that made an alert fire, cut to one small pcap per alert.

An alert remembers its triggers (:class:`~fieldward.detect.model.Trigger`: a flow of
``flows.parquet`` and a time), not packets: keeping packet bytes during the analysis would cost
memory for every alert that might fire. Evidence is therefore cut by a second, selective pass over
the captures once the alerts are known (:func:`collect_evidence`), at the end of ``fieldward
analyze`` (:func:`write_evidence`: ``DIR/evidence/<alert id>.pcap``) or on demand (``fieldward
alerts DIR evidence ID -o file.pcap``).

What an alert's evidence holds (:class:`EvidenceSettings` bounds it):

- **Flow windows.** For every trigger whose flow is in ``flows.parquet``: the packets of that flow
  (its 5-tuple and VLAN ids, both directions, within the flow's first..last time) from
  ``before_s`` before to ``after_s`` after the trigger.
- **Address windows.** When no trigger names a known flow (L2 events such as ARP, flows not written,
  ``flow_id`` -1), and for alerts whose destination is not one address (sweeps: ``*``, ``*:502``):
  the packets to or from the alert's source address (IP address in the IP header or in an ARP
  sender/target field, or MAC address), and to or from its destination when that is one address,
  within the same window around each trigger and around the alert's first and last time.
- **Bound.** At most ``max_packets`` per alert: the packets closest in time to a trigger (or window
  centre) win, so the trigger packet itself (distance 0) is always kept; the file lists them in
  capture order.

The pass is vectorized per batch: a time filter (the union of every window, a ``searchsorted``
over disjoint intervals) keeps the few packets near a window, only those are decoded
(:func:`fieldward.decode.decode_batch` on a sub-batch that shares the batch's buffer), their
canonical flow keys and address keys are hashed with numpy and joined to the sorted window keys
with ``searchsorted``; Python only touches the packets that are kept.

Secrets: dissectors never store a password, but the packets that carried one still hold it. Every
packet of a flow whose events flag a secret (:data:`SECRET_COLUMNS`: Telnet, FTP and HTTP Basic
logins, MQTT CONNECT passwords, SNMP community strings) is written with its headers only (captured
length cut at the L4 payload, original length kept), so no evidence file ever holds a credential.

Limits: a classic pcap file has one link type, so when the kept packets of one alert mix link
types (pcapng with several interfaces) only those of the trigger's (most common) link type are
written. Non-first IP fragments carry no ports and so only join address windows.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fieldward.capture.batch import PacketBatch
from fieldward.capture.reader import open_capture
from fieldward.capture.writer import PcapWriter
from fieldward.decode.columns import PROTO_ICMP, PROTO_ICMPV6, DecodedBatch
from fieldward.decode.l2l4 import decode_batch
from fieldward.detect.model import Alert
from fieldward.errors import FieldWardError
from fieldward.weird import WeirdLog

__all__ = [
    "EVIDENCE_DIR",
    "EvidenceError",
    "EvidencePackets",
    "EvidenceSettings",
    "EvidenceTarget",
    "collect_evidence",
    "cut_evidence",
    "evidence_path",
    "parse_iso_ns",
    "read_trigger_flows",
    "write_evidence",
    "write_evidence_pcap",
]

logger = logging.getLogger(__name__)

EVIDENCE_DIR = "evidence"
"""Folder of the evidence captures inside an analysis output folder."""

NS = 1_000_000_000
U8 = npt.NDArray[np.uint8]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

_ALERT_ID = re.compile(r"^[0-9a-f]{16}$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}$")
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_TAG_IP = np.uint64(0x1F1F_0000_0000_0001)
_TAG_MAC = np.uint64(0x2E2E_0000_0000_0002)


class EvidenceError(FieldWardError):
    """Evidence that cannot be cut (no capture to read, malformed alert record)."""


@dataclass(frozen=True, slots=True)
class EvidenceSettings:
    """How much evidence an alert gets (a bounded window around each trigger)."""

    before_s: float = 5.0
    """Seconds before a trigger whose packets belong to the evidence."""
    after_s: float = 5.0
    """Seconds after a trigger whose packets belong to the evidence (the reply, the aftermath)."""
    max_packets: int = 100
    """Packets per alert at most: the ones closest in time to a trigger are kept."""
    batch_packets: int = 65536
    """Packets per batch of the evidence pass over the captures."""

    def __post_init__(self) -> None:
        if self.before_s < 0 or self.after_s < 0:
            raise ValueError("evidence windows cannot be negative")
        if self.max_packets < 1:
            raise ValueError("EvidenceSettings.max_packets must be at least 1")


@dataclass(frozen=True, slots=True)
class EvidenceTarget:
    """What the evidence pass needs to know of one alert (from an :class:`Alert` or its JSON)."""

    alert_id: str
    src: str
    dst: str
    first_ts: int
    last_ts: int
    triggers: tuple[tuple[int, int], ...] = ()
    """``(flow_id, ts_ns)`` of each trigger."""

    @classmethod
    def of_alert(cls, alert: Alert) -> EvidenceTarget:
        return cls(
            alert.id,
            alert.src,
            alert.dst,
            alert.first_ts,
            alert.last_ts,
            tuple((t.flow_id, t.ts) for t in alert.triggers),
        )

    @classmethod
    def of_json(cls, record: Mapping[str, Any]) -> EvidenceTarget:
        """From a line of ``alerts.jsonl``; EvidenceError when it is not an alert record."""
        try:
            alert_id = str(record["id"])
            triggers = tuple(
                (int(item["flow_id"]), parse_iso_ns(str(item["ts"]))) for item in record.get("evidence") or ()
            )
            return cls(
                alert_id,
                str(record["src"]),
                str(record["dst"]),
                parse_iso_ns(str(record["first_ts"])),
                parse_iso_ns(str(record["last_ts"])),
                triggers,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EvidenceError(f"not an alert record: {exc}") from exc


@dataclass(slots=True)
class EvidencePackets:
    """The packets kept for one alert (bytes copied out of the capture)."""

    packets: list[tuple[int, int, int, int, int, bytes]] = field(default_factory=list)
    """``(distance_ns, order, ts_ns, origlen, linktype, data)``; ``order`` is the capture order."""

    def offer(self, candidates: list[tuple[int, int, int, int, int, bytes]], limit: int) -> None:
        self.packets.extend(candidates)
        if len(self.packets) > 2 * limit:
            self.trim(limit)

    def trim(self, limit: int) -> None:
        if len(self.packets) > limit:
            self.packets.sort(key=lambda p: (p[0], p[1]))
            del self.packets[limit:]

    def in_capture_order(self) -> list[tuple[int, int, int, int, int, bytes]]:
        return sorted(self.packets, key=lambda p: p[1])


# --------------------------------------------------------------------------------------- hashing


def _mix(x: U64) -> U64:
    """splitmix64 finalizer over a numpy column (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _words(rows: U8) -> U64:
    return np.ascontiguousarray(rows, dtype=np.uint8).reshape(-1, 16).view(np.uint64)


def _endpoint_hash(rows: U8, ports: U64) -> U64:
    words = _words(rows)
    return _mix(words[:, 0] + _GOLDEN ^ _mix(words[:, 1] ^ _mix(ports + _GOLDEN)))


def _flow_keys(src: U8, sport: U64, dst: U8, dport: U64, proto: U64, vlan: U64, vlan_inner: U64) -> U64:
    """One hash per packet or flow that is the same for both directions of a conversation.

    ICMP has no ports; the flow table's ICMP "ports" (message types) are left out of the key, so
    every ICMP packet between two hosts joins an ICMP trigger flow between them.
    """
    icmp = (proto == PROTO_ICMP) | (proto == PROTO_ICMPV6)
    zero = np.uint64(0)
    a = _endpoint_hash(src, np.where(icmp, zero, sport))
    b = _endpoint_hash(dst, np.where(icmp, zero, dport))
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    rest = (proto << np.uint64(32)) | (vlan << np.uint64(16)) | vlan_inner
    return _mix(_mix(lo + _GOLDEN) ^ hi) ^ _mix(rest + _GOLDEN)


def _packet_flow_keys(decoded: DecodedBatch) -> U64:
    """The direction-free flow key of every decoded packet."""
    return _flow_keys(
        decoded.src_ip,
        decoded.sport.astype(np.uint64),
        decoded.dst_ip,
        decoded.dport.astype(np.uint64),
        decoded.ip_proto.astype(np.uint64),
        decoded.vlan.astype(np.uint64),
        decoded.vlan_inner.astype(np.uint64),
    )


def _ip_keys(rows: U8) -> U64:
    words = _words(rows)
    return _mix(_mix(words[:, 0] ^ _TAG_IP) ^ words[:, 1])


def _mac_keys(macs: U64) -> U64:
    return _mix(macs.astype(np.uint64) ^ _TAG_MAC)


def _ipv4_rows(addrs: npt.NDArray[np.uint32]) -> U8:
    """IPv4 addresses (host-order integers, as the ARP columns hold them) as IPv4-mapped rows."""
    rows = np.zeros((addrs.shape[0], 16), dtype=np.uint8)
    rows[:, 10:12] = 0xFF
    rows[:, 12:16] = addrs.astype(">u4").view(np.uint8).reshape(-1, 4)
    return rows


def _ip_row(text: str) -> bytes | None:
    """The 16-byte (IPv4-mapped) form of an address string, or None when it is not an IP address."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if address.version == 4:
        return b"\0" * 10 + b"\xff\xff" + address.packed
    return address.packed


def _address_key(text: str) -> int | None:
    """The address key (as :func:`_ip_keys` / :func:`_mac_keys`) of an alert endpoint, if any."""
    row = _ip_row(text)
    if row is not None:
        return int(_ip_keys(np.frombuffer(row, dtype=np.uint8).reshape(1, 16))[0])
    if _MAC.match(text.strip()):
        mac = np.array([int(text.strip().replace(":", ""), 16)], dtype=np.uint64)
        return int(_mac_keys(mac)[0])
    return None


# --------------------------------------------------------------------------------------- windows


@dataclass(frozen=True, slots=True)
class _Windows:
    """Windows sorted by ``key``: packets with that key between ``lo`` and ``hi`` belong to
    ``target``, at distance ``|ts - center|``. ``peer`` (address windows): a second address the
    packet must also carry (0: none)."""

    key: U64
    lo: I64
    hi: I64
    center: I64
    target: I64
    peer: U64

    @classmethod
    def build(cls, rows: list[tuple[int, int, int, int, int, int]]) -> _Windows:
        """From ``(key, lo, hi, center, target, peer)`` rows (keys unsigned, times signed)."""
        key = np.array([r[0] for r in rows], dtype=np.uint64)
        times = np.array([r[1:5] for r in rows], dtype=np.int64).reshape(-1, 4)
        peer = np.array([r[5] for r in rows], dtype=np.uint64)
        order = np.argsort(key, kind="stable")
        times = times[order]
        return cls(
            key=key[order],
            lo=times[:, 0].copy(),
            hi=times[:, 1].copy(),
            center=times[:, 2].copy(),
            target=times[:, 3].copy(),
            peer=peer[order],
        )

    def __len__(self) -> int:
        return int(self.key.shape[0])


def _join(window_keys: U64, packet_keys: U64) -> tuple[I64, I64]:
    """Every ``(packet index, window index)`` whose keys are equal (window keys sorted)."""
    left = np.searchsorted(window_keys, packet_keys, side="left")
    right = np.searchsorted(window_keys, packet_keys, side="right")
    counts = (right - left).astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    packets = np.repeat(np.arange(packet_keys.shape[0], dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    windows = np.repeat(left.astype(np.int64) - starts, counts) + np.arange(total, dtype=np.int64)
    return packets, windows


def _merge_intervals(lo: I64, hi: I64) -> tuple[I64, I64]:
    if lo.shape[0] == 0:
        return lo, hi
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], np.maximum.accumulate(hi[order])
    starts = np.concatenate(([True], lo[1:] > hi[:-1]))
    ends = np.concatenate((starts[1:], [True]))
    return lo[starts], hi[ends]


class _Plan:
    """The windows of every target, and the time filter that is their union."""

    def __init__(
        self,
        targets: Sequence[EvidenceTarget],
        flows: Mapping[int, Mapping[str, Any]],
        settings: EvidenceSettings,
    ) -> None:
        before, after = round(settings.before_s * NS), round(settings.after_s * NS)
        flow_rows: list[tuple[int, int, int, int, int, int]] = []
        flow_specs: list[tuple[bytes, int, bytes, int, int, int, int]] = []
        address_rows: list[tuple[int, int, int, int, int, int]] = []
        for index, target in enumerate(targets):
            known = [(fid, ts) for fid, ts in target.triggers if fid in flows]
            for fid, ts in known:
                flow = flows[fid]
                orig, resp = _ip_row(str(flow["orig_ip"])), _ip_row(str(flow["resp_ip"]))
                if orig is None or resp is None:
                    continue
                lo = max(ts - before, int(flow["first_ts"]))
                hi = min(ts + after, int(flow["last_ts"]))
                if hi < lo:  # a trigger time outside its flow (should not happen): take the window
                    lo, hi = ts - before, ts + after
                flow_rows.append((0, lo, hi, ts, index, 0))
                flow_specs.append(
                    (
                        orig,
                        int(flow["orig_port"] or 0),
                        resp,
                        int(flow["resp_port"] or 0),
                        int(flow["ip_proto"] or 0),
                        int(flow["vlan"] or 0),
                        int(flow["vlan_inner"] or 0),
                    )
                )
            dst_key = _address_key(target.dst)
            if known and dst_key is not None:
                continue
            src_key = _address_key(target.src)
            primary, peer = (src_key, dst_key) if src_key is not None else (dst_key, None)
            if primary is None:
                continue
            centers = {ts for _fid, ts in target.triggers} | {target.first_ts, target.last_ts}
            for center in sorted(centers):
                address_rows.append((primary, center - before, center + after, center, index, peer or 0))
        if flow_specs:
            keys = _flow_keys(
                np.frombuffer(b"".join(s[0] for s in flow_specs), dtype=np.uint8).reshape(-1, 16),
                np.array([s[1] for s in flow_specs], dtype=np.uint64),
                np.frombuffer(b"".join(s[2] for s in flow_specs), dtype=np.uint8).reshape(-1, 16),
                np.array([s[3] for s in flow_specs], dtype=np.uint64),
                np.array([s[4] for s in flow_specs], dtype=np.uint64),
                np.array([s[5] for s in flow_specs], dtype=np.uint64),
                np.array([s[6] for s in flow_specs], dtype=np.uint64),
            )
            flow_rows = [(int(k), *row[1:]) for k, row in zip(keys.tolist(), flow_rows, strict=True)]
        self.flows = _Windows.build(flow_rows)
        self.addresses = _Windows.build(address_rows)
        self.secret_keys: U64 = np.zeros(0, dtype=np.uint64)
        """Sorted keys of the flows whose payload is withheld (they carried credentials)."""
        self.span_lo, self.span_hi = _merge_intervals(
            np.concatenate((self.flows.lo, self.addresses.lo)),
            np.concatenate((self.flows.hi, self.addresses.hi)),
        )

    @property
    def empty(self) -> bool:
        return int(self.span_lo.shape[0]) == 0

    def in_windows(self, ts: I64) -> Bool:
        """Packets whose time lies in some window (of any target)."""
        return _in_intervals(self.span_lo, self.span_hi, ts)


def _in_intervals(starts: I64, ends: I64, ts: I64) -> Bool:
    """Which of ``ts`` lie in one of the sorted, disjoint intervals ``[starts[i], ends[i]]``."""
    if starts.shape[0] == 0:
        return np.zeros(ts.shape[0], dtype=np.bool_)
    slot = np.searchsorted(starts, ts, side="right") - 1
    inside: Bool = (slot >= 0) & (ts <= ends[np.maximum(slot, 0)])
    return inside


# ------------------------------------------------------------------------------------- the pass


def _packet_address_keys(decoded: DecodedBatch) -> U64:
    """``(n, 6)`` address keys of each packet (IP src/dst, MAC src/dst, ARP sender/target); 0 where
    a packet has no such address."""
    n = decoded.n
    keys = np.zeros((n, 6), dtype=np.uint64)
    has_ip = decoded.ip_version != 0
    keys[:, 0] = np.where(has_ip, _ip_keys(decoded.src_ip), 0)
    keys[:, 1] = np.where(has_ip, _ip_keys(decoded.dst_ip), 0)
    keys[:, 2] = np.where(decoded.eth_src != 0, _mac_keys(decoded.eth_src), 0)
    keys[:, 3] = np.where(decoded.eth_dst != 0, _mac_keys(decoded.eth_dst), 0)
    is_arp = decoded.arp_op != 0
    keys[:, 4] = np.where(is_arp & (decoded.arp_spa != 0), _ip_keys(_ipv4_rows(decoded.arp_spa)), 0)
    keys[:, 5] = np.where(is_arp & (decoded.arp_tpa != 0), _ip_keys(_ipv4_rows(decoded.arp_tpa)), 0)
    return keys


def _matches(plan: _Plan, ts: I64, decoded: DecodedBatch) -> tuple[I64, I64, I64]:
    """``(target, packet, distance)`` of every packet of the sub-batch that falls in a window."""
    targets: list[I64] = []
    packets: list[I64] = []
    distances: list[I64] = []

    def keep(pkt: I64, win: I64, windows: _Windows, extra: Bool | None = None) -> None:
        t = ts[pkt]
        ok = (t >= windows.lo[win]) & (t <= windows.hi[win])
        if extra is not None:
            ok &= extra
        targets.append(windows.target[win][ok])
        packets.append(pkt[ok])
        distances.append(np.abs(t[ok] - windows.center[win][ok]))

    if len(plan.flows):
        has_ip = decoded.ip_version != 0
        keys = _packet_flow_keys(decoded)
        pkt, win = _join(plan.flows.key, keys)
        keep(pkt, win, plan.flows, has_ip[pkt])
    if len(plan.addresses):
        address_keys = _packet_address_keys(decoded)
        for column in range(address_keys.shape[1]):
            pkt, win = _join(plan.addresses.key, address_keys[:, column])
            if pkt.shape[0] == 0:
                continue
            peer = plan.addresses.peer[win]
            has_peer = (address_keys[pkt] == peer[:, None]).any(axis=1) | (peer == 0)
            keep(pkt, win, plan.addresses, has_peer)
    if not targets:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(targets), np.concatenate(packets), np.concatenate(distances)


def collect_evidence(
    captures: Sequence[str | Path],
    targets: Sequence[EvidenceTarget],
    flows: Mapping[int, Mapping[str, Any]],
    settings: EvidenceSettings | None = None,
    secret_flows: Mapping[int, Mapping[str, Any]] | None = None,
) -> dict[str, EvidencePackets]:
    """Read ``captures`` once and keep each target's evidence packets (see the module docstring).

    ``flows`` maps the trigger flow ids to their ``flows.parquet`` rows (:func:`read_trigger_flows`).
    Packets of ``secret_flows`` (flows that carried credentials, :func:`read_secret_flows`) keep
    only their headers: a password or community string never reaches an evidence file.
    """
    settings = settings or EvidenceSettings()
    plan = _Plan(targets, flows, settings)
    plan.secret_keys = np.sort(_keys_of_flows(secret_flows or {}))
    found: dict[int, EvidencePackets] = {}
    limit = settings.max_packets
    if not plan.empty:
        weird = WeirdLog()  # the analysis already counted every weird of these packets
        order_base = 0
        for capture in captures:
            with open_capture(capture, batch_packets=settings.batch_packets, weird=weird) as reader:
                for batch in reader:
                    n = len(batch)
                    if n == 0:
                        continue
                    rows = np.flatnonzero(plan.in_windows(batch.ts_ns.astype(np.int64, copy=False)))
                    if rows.shape[0]:
                        _scan(plan, batch, rows, order_base, found, limit)
                    order_base += n
        for packets in found.values():
            packets.trim(limit)
    return {targets[index].alert_id: packets for index, packets in found.items()}


def _scan(
    plan: _Plan, batch: PacketBatch, rows: I64, order_base: int, found: dict[int, EvidencePackets], limit: int
) -> None:
    sub = batch.take(rows)
    ts = sub.ts_ns.astype(np.int64, copy=False)
    decoded = decode_batch(sub, WeirdLog())
    target, packet, distance = _matches(plan, ts, decoded)
    if target.shape[0] == 0:
        return
    # One row per (target, packet), the smallest distance; then the `limit` closest per target.
    order = np.lexsort((distance, packet, target))
    target, packet, distance = target[order], packet[order], distance[order]
    first = np.concatenate(([True], (target[1:] != target[:-1]) | (packet[1:] != packet[:-1])))
    target, packet, distance = target[first], packet[first], distance[first]
    order = np.lexsort((packet, distance, target))
    target, packet, distance = target[order], packet[order], distance[order]
    group_start = np.concatenate(([True], target[1:] != target[:-1]))
    starts = np.flatnonzero(group_start)
    rank = np.arange(target.shape[0]) - np.repeat(starts, np.diff(np.append(starts, target.shape[0])))
    chosen = rank < limit
    caplen = _withheld_caplen(plan, sub, decoded)
    for t, p, d in zip(
        target[chosen].tolist(), packet[chosen].tolist(), distance[chosen].tolist(), strict=True
    ):
        start = int(sub.offsets[p])
        data = sub.buffer[start : start + int(caplen[p])].tobytes()
        item = (d, order_base + int(rows[p]), int(ts[p]), int(sub.origlen[p]), int(sub.linktype[p]), data)
        found.setdefault(t, EvidencePackets()).offer([item], limit)


def _withheld_caplen(plan: _Plan, sub: PacketBatch, decoded: DecodedBatch) -> I64:
    """Captured length of each packet to keep: up to its L4 payload for packets of a flow that
    carried credentials, the whole packet otherwise."""
    caplen = sub.caplen.astype(np.int64)
    if plan.secret_keys.shape[0] == 0:
        return caplen
    keys = _packet_flow_keys(decoded)
    position = np.minimum(np.searchsorted(plan.secret_keys, keys), plan.secret_keys.shape[0] - 1)
    secret = (plan.secret_keys[position] == keys) & (decoded.ip_version != 0)
    offset = decoded.payload_offset.astype(np.int64)
    withheld = secret & (offset >= 0)
    return np.where(withheld, np.minimum(offset, caplen), caplen)


def _keys_of_flows(flows: Mapping[int, Mapping[str, Any]]) -> U64:
    """The direction-free key of each ``flows.parquet`` row (as packets of the flow compute it)."""
    rows = [
        (orig, resp, flow)
        for flow in flows.values()
        if (orig := _ip_row(str(flow["orig_ip"]))) is not None
        and (resp := _ip_row(str(flow["resp_ip"]))) is not None
    ]
    if not rows:
        return np.zeros(0, dtype=np.uint64)
    return _flow_keys(
        np.frombuffer(b"".join(r[0] for r in rows), dtype=np.uint8).reshape(-1, 16),
        np.array([int(r[2]["orig_port"] or 0) for r in rows], dtype=np.uint64),
        np.frombuffer(b"".join(r[1] for r in rows), dtype=np.uint8).reshape(-1, 16),
        np.array([int(r[2]["resp_port"] or 0) for r in rows], dtype=np.uint64),
        np.array([int(r[2]["ip_proto"] or 0) for r in rows], dtype=np.uint64),
        np.array([int(r[2]["vlan"] or 0) for r in rows], dtype=np.uint64),
        np.array([int(r[2]["vlan_inner"] or 0) for r in rows], dtype=np.uint64),
    )


SECRET_COLUMNS = ("cleartext_credentials", "password_present", "community_present")
"""Boolean event columns that mark a PDU carrying a secret (Telnet, FTP and HTTP Basic logins, MQTT
CONNECT passwords, SNMP community strings). Dissectors never store the secret itself; evidence
withholds the payload of every packet of those flows."""


def secret_flow_ids(events_dir: Path) -> set[int]:
    """Flow ids of the events that carried a secret (see :data:`SECRET_COLUMNS`)."""
    found: set[int] = set()
    for path in sorted(events_dir.glob("*.parquet")) if events_dir.is_dir() else []:
        try:
            names = set(pq.read_schema(path).names)
            columns = [c for c in SECRET_COLUMNS if c in names]
            if not columns or "flow_id" not in names:
                continue
            table = pq.read_table(path, columns=["flow_id", *columns])
        except (OSError, pa.ArrowException) as exc:
            logger.warning("cannot read %s to withhold secrets: %s", path.name, exc)
            continue
        mask = None
        for column in columns:
            flag = pc.fill_null(table.column(column), False)
            mask = flag if mask is None else pc.or_(mask, flag)
        ids = pc.unique(table.column("flow_id").filter(mask)).to_pylist()
        found.update(int(i) for i in ids if i is not None and i >= 0)
    return found


# ------------------------------------------------------------------------------------ the files


def _flows_of(
    out_dir: Path, trigger_ids: Iterable[int]
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """The ``flows.parquet`` rows of the trigger flows and of the flows that carried a secret, read
    in one pass."""
    triggers = {int(f) for f in trigger_ids}
    secret_ids = secret_flow_ids(out_dir / "events")
    rows = read_trigger_flows(out_dir / "flows.parquet", triggers | secret_ids)
    return (
        {f: row for f, row in rows.items() if f in triggers},
        {f: row for f, row in rows.items() if f in secret_ids},
    )


def read_trigger_flows(flows_path: Path, flow_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The ``flows.parquet`` rows of ``flow_ids`` (times as integer nanoseconds); {} without file."""
    wanted = sorted({int(f) for f in flow_ids if int(f) >= 0})
    if not wanted or not flows_path.is_file():
        return {}
    columns = [
        "flow_id",
        "first_ts",
        "last_ts",
        "vlan",
        "vlan_inner",
        "ip_proto",
        "orig_ip",
        "resp_ip",
        "orig_port",
        "resp_port",
    ]
    try:
        table = pq.read_table(flows_path, columns=columns, filters=[("flow_id", "in", wanted)])
    except (OSError, ValueError) as exc:
        raise EvidenceError(f"cannot read {flows_path}: {exc}") from exc
    for name in ("first_ts", "last_ts"):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, table.column(name).cast(pa.int64()))
    return {int(row["flow_id"]): row for row in table.to_pylist()}


def write_evidence_pcap(target: str | Path, packets: EvidencePackets) -> int:
    """Write one alert's packets as a classic pcap; returns the number written.

    Nanosecond timestamps are kept when a packet has sub-microsecond time; packets of another link
    type than the most common one are left out (one link type per pcap file).
    """
    items = packets.in_capture_order()
    if not items:
        return 0
    kinds = [item[4] for item in items]
    linktype = max(set(kinds), key=lambda k: (kinds.count(k), -k))
    items = [item for item in items if item[4] == linktype]
    nanosecond = any(item[2] % 1000 for item in items)
    with PcapWriter(target, linktype=linktype, nanosecond=nanosecond) as writer:
        for _d, _order, ts, origlen, _lt, data in items:
            writer.write(data, ts, origlen)
        return writer.packets


def evidence_path(out_dir: Path, alert_id: str) -> Path:
    if not _ALERT_ID.match(alert_id):
        raise EvidenceError(f"not an alert id: {alert_id!r}")
    return out_dir / EVIDENCE_DIR / f"{alert_id}.pcap"


def write_evidence(
    out_dir: Path,
    alerts: Sequence[Alert] | Sequence[EvidenceTarget],
    captures: Sequence[str | Path],
    settings: EvidenceSettings | None = None,
) -> dict[str, str | None]:
    """Cut every alert's evidence to ``DIR/evidence/<alert id>.pcap`` and record the file as
    ``evidence_pcap`` (relative to DIR; null when no packet matched) in ``DIR/alerts.jsonl``.

    Evidence files of alerts that are no longer in the folder (an earlier run) are removed.
    """
    targets = [a if isinstance(a, EvidenceTarget) else EvidenceTarget.of_alert(a) for a in alerts]
    found: dict[str, EvidencePackets] = {}
    if targets:
        try:
            flows, secrets = _flows_of(out_dir, (f for t in targets for f, _ts in t.triggers))
            found = collect_evidence(captures, targets, flows, settings, secrets)
        except (FieldWardError, OSError) as exc:  # the analysis is done; evidence can be cut later
            logger.warning("evidence captures not written: %s", exc)
    folder = out_dir / EVIDENCE_DIR
    written: dict[str, str | None] = {}
    current = {t.alert_id for t in targets}
    if folder.is_dir():
        for stale in folder.glob("*.pcap"):
            if _ALERT_ID.match(stale.stem) and stale.stem not in current:
                stale.unlink()
    for target in targets:
        packets = found.get(target.alert_id)
        if not _ALERT_ID.match(target.alert_id):
            written[target.alert_id] = None
            continue
        if packets is None:  # nothing matched (or the captures are gone): no file, not an old one
            evidence_path(out_dir, target.alert_id).unlink(missing_ok=True)
            written[target.alert_id] = None
            continue
        path = evidence_path(out_dir, target.alert_id)
        tmp = path.with_name(path.name + ".tmp")
        try:
            folder.mkdir(exist_ok=True)
            count = write_evidence_pcap(tmp, packets)
            os.replace(tmp, path)
        except (FieldWardError, OSError) as exc:  # e.g. a packet time pcap cannot hold
            logger.warning("evidence of alert %s not written: %s", target.alert_id, exc)
            tmp.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            count = 0
        written[target.alert_id] = f"{EVIDENCE_DIR}/{path.name}" if count else None
    _record_in_alerts(out_dir / "alerts.jsonl", written)
    return written


def _record_in_alerts(path: Path, written: Mapping[str, str | None]) -> None:
    """Add ``evidence_pcap`` to each record of ``alerts.jsonl`` (rewritten atomically)."""
    if not path.is_file():
        return
    lines: list[bytes] = []
    for line in _lines(path):
        record = orjson.loads(line)
        if isinstance(record, dict) and record.get("id") in written:
            record["evidence_pcap"] = written[record["id"]]
        lines.append(orjson.dumps(record))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"".join(line + b"\n" for line in lines))
    os.replace(tmp, path)


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield line


def parse_iso_ns(text: str) -> int:
    """Nanoseconds since the epoch of an alert time (``2016-02-08T22:08:10.008331000Z``)."""
    import datetime as dt

    stamp, _, fraction = text.rstrip("Z").partition(".")
    base = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    digits = (fraction + "000000000")[:9] if fraction else "0"
    if not digits.isdigit():
        raise ValueError(f"not an alert time: {text!r}")
    return int(base.timestamp()) * NS + int(digits)


def cut_evidence(
    out_dir: Path,
    record: Mapping[str, Any],
    target: Path,
    captures: Sequence[str | Path] = (),
    settings: EvidenceSettings | None = None,
) -> int:
    """Write the evidence of one alert record (a line of ``DIR/alerts.jsonl``) to ``target``;
    returns the number of packets.

    The file analyze wrote (``DIR/evidence/<id>.pcap``) is copied when it exists and neither other
    captures nor other settings are asked for; otherwise the evidence is cut again from
    ``captures`` (default: the captures ``DIR/summary.json`` names) with ``settings``.
    """
    wanted = EvidenceTarget.of_json(record)
    stored = evidence_path(out_dir, wanted.alert_id)
    if not captures and settings is None and stored.is_file():
        data = stored.read_bytes()
        _atomic_bytes(target, data)
        return _pcap_packets(data)
    sources = [Path(c) for c in captures] or _summary_captures(out_dir)
    for source in sources:
        if not source.is_file():
            raise EvidenceError(f"capture {source} not found (pass the capture with --capture PATH)")
    flows, secrets = _flows_of(out_dir, (f for f, _ts in wanted.triggers))
    found = collect_evidence(sources, [wanted], flows, settings, secrets).get(wanted.alert_id)
    if found is None or not found.packets:
        raise EvidenceError(
            f"no packet of {', '.join(str(s) for s in sources)} matches alert {wanted.alert_id} "
            "(are these the captures it was raised on?)"
        )
    tmp = target.with_name(f".{target.name}.tmp")
    count = write_evidence_pcap(tmp, found)
    os.replace(tmp, target)
    return count


def _summary_captures(out_dir: Path) -> list[Path]:
    path = out_dir / "summary.json"
    try:
        captures = orjson.loads(path.read_bytes())["captures"]
        return [Path(str(c)) for c in captures]
    except FileNotFoundError as exc:
        raise EvidenceError(f"no summary.json in {out_dir}: pass the capture with --capture PATH") from exc
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise EvidenceError(f"cannot read the captures from {path}: {exc}") from exc


def _atomic_bytes(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def _pcap_packets(data: bytes) -> int:
    """Records in a classic pcap file written by :class:`PcapWriter` (little-endian)."""
    count, pos = 0, 24
    while pos + 16 <= len(data):
        caplen = int.from_bytes(data[pos + 8 : pos + 12], "little")
        pos += 16 + caplen
        count += 1
    return count
