"""Bidirectional flow table: packets of a PacketBatch grouped into flows, vectorized per batch.

A flow is keyed by ``(vlan, vlan_inner, ip_proto, address A, port A, address B, port B)`` where the
two endpoints are put in canonical order (smaller ``(address, port)`` first) so both directions of a
conversation share one key. ICMP and ICMPv6 have no ports: as in the Community ID spec (and Zeek), the
message type is the sender's "port" and the reply counterpart type (or, for one-way types, the code)
the receiver's, so an echo request and its reply are one flow. Packets without an IP header (ARP, ...)
and non-first IP fragments (no transport header) belong to no flow (``flow_id`` -1).

The originator is the sender of a flow's first packet, except that a TCP flow whose first packet is
a SYN+ACK is originated by that packet's receiver (the SYN was missed; the history starts with ``^``).

How :meth:`FlowTable.update` works, without a Python loop per packet or per flow:

1. Each packet's canonical key (five ``uint64`` words: two per address, one packing the ports,
   protocol and VLAN ids) is hashed into one ``uint64`` with multiply-xorshift mixing.
2. A stable argsort of the hashes groups the batch's packets by key, in capture order within a group;
   the keys of each group are checked for equality (a hash collision falls back to a lexicographic sort
   of the full keys, so colliding keys are never merged).
3. Groups are looked up in the table with ``np.searchsorted`` over the sorted hashes of live flows
   (again checking the full key); new keys are inserted in one ``np.insert``.
4. Groups are split into flows: a packet more than the idle timeout after the previous packet of its
   key, a packet ``active_timeout_s`` or more after its flow's first packet, and a TCP SYN (without
   ACK) after the flow was closed (RST, or FIN from both sides, since the last SYN) each start a new
   flow. The first two are gaps computed with array shifts; the TCP rule is evaluated with segmented
   cumulative sums; active-timeout splits, which depend on where the flow began, are found in rounds
   (one round unless a key spans several active timeouts inside one batch).
5. Counters are aggregated per flow and direction with ``np.bincount``/``ufunc.at`` into growable
   arrays of flow state; flows that ended inside the batch are moved to a pending list that
   :meth:`FlowTable.expire` returns together with the flows that timed out.

The split rules only use packet data and the state carried in the table, so feeding a capture in one
batch or in many (calling :meth:`FlowTable.expire` in between) gives the same flows.

TCP history letters follow Zeek (first occurrence only, originator upper case, responder lower case):
``S`` SYN, ``H`` SYN+ACK, ``A`` pure ACK, ``D`` payload, ``F`` FIN, ``R`` RST, ``I`` FIN+RST, ``Q``
other multi-flag packet; UDP flows record ``D``/``d``. ``conn_state`` is Zeek's, derived at the end of
the flow from the flags each side sent. See ``docs/flows.md`` for every output column.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from fieldward.capture.batch import PacketBatch
from fieldward.decode.columns import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    DecodedBatch,
)
from fieldward.decode.community_id import (
    ICMP4_COUNTERPART_TABLE,
    ICMP6_COUNTERPART_TABLE,
    PROTO_SCTP,
    community_ids,
)
from fieldward.weird import WeirdLog

Bool = npt.NDArray[np.bool_]
U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

NS_PER_S: Final = 1_000_000_000

END_REASONS: tuple[str, ...] = ("idle_timeout", "active_timeout", "evicted", "end_of_capture", "tcp_close")
"""Values of the ``end_reason`` column."""
_IDLE, _ACTIVE, _EVICTED, _END_OF_CAPTURE, _TCP_CLOSE = range(5)

CONN_STATES: tuple[str, ...] = (
    "S0",
    "S1",
    "SF",
    "REJ",
    "S2",
    "S3",
    "RSTO",
    "RSTR",
    "RSTOS0",
    "RSTRH",
    "SH",
    "SHR",
    "OTH",
)
"""Zeek's connection states (the ``conn_state`` column)."""

# History letters, one per packet at most (Zeek's update_history); index 0..7, responder +8.
HISTORY_LETTERS: Final = "SHADFRIQ"
_L_SYN, _L_SYNACK, _L_ACK, _L_DATA, _L_FIN, _L_RST, _L_FINRST, _L_MULTI = range(8)
_N_LETTERS: Final = 2 * len(HISTORY_LETTERS)
_HIST_NONE: Final = np.uint32(0xFFFFFFFF)

# Endpoint states (Zeek's TCP_ENDPOINT_*), reconstructed from the flags each side sent.
_INACTIVE, _SYN_SENT, _SYN_ACK_SENT, _PARTIAL, _ESTABLISHED, _CLOSED, _RESET = range(7)

# Closure bits carried per flow: what was seen since the flow's last SYN (or its start).
_CB_FIN_A: Final = 1
_CB_FIN_B: Final = 2
_CB_RST: Final = 4

_PROTO_NAMES: dict[int, str] = {
    PROTO_TCP: "tcp",
    PROTO_UDP: "udp",
    PROTO_ICMP: "icmp",
    PROTO_ICMPV6: "icmpv6",
    PROTO_SCTP: "sctp",
}

KEY_WORDS: Final = 5
"""64-bit words of a flow key: address A (2), address B (2), ports + protocol + VLAN ids (1)."""

_M1: Final = np.uint64(0xBF58476D1CE4E5B9)
_M2: Final = np.uint64(0x94D049BB133111EB)
_GOLDEN: Final = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """Flow table settings (timeouts in seconds)."""

    tcp_idle_timeout_s: float = 300.0
    """A TCP flow ends when no packet was seen for this long."""
    udp_idle_timeout_s: float = 60.0
    other_idle_timeout_s: float = 60.0
    """Idle timeout of ICMP and every other IP protocol."""
    active_timeout_s: float = 1800.0
    """A flow older than this is ended and continued as a new flow (long-lived connections)."""
    max_flows: int = 1_000_000
    """Live flows kept at most; beyond it the least recently seen are evicted."""
    community_id_seed: int = 0
    """Seed of the Community ID hash (0 unless every tool sharing the IDs uses another)."""

    def __post_init__(self) -> None:
        for name in ("tcp_idle_timeout_s", "udp_idle_timeout_s", "other_idle_timeout_s", "active_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"FlowConfig.{name} must be positive")
        if self.max_flows < 1:
            raise ValueError("FlowConfig.max_flows must be at least 1")
        if not 0 <= self.community_id_seed <= 0xFFFF:
            raise ValueError("FlowConfig.community_id_seed must fit in 16 bits")


@dataclass(frozen=True, slots=True)
class FlowAssignment:
    """The flow of every packet of one batch (same order as the batch)."""

    flow_id: I64
    """Flow id, or -1 for a packet that belongs to no flow (no IP header, non-first fragment)."""
    direction: U8
    """0: originator to responder; 1: responder to originator (0 for packets without a flow)."""


@dataclass(frozen=True, slots=True)
class FlowStats:
    """Counters of a :class:`FlowTable` for the run summary."""

    live_flows: int
    flows_created: int
    flows_evicted: int
    flows_emitted: int


def _mix(x: U64) -> U64:
    """splitmix64 finalizer: a bijective multiply-xorshift mix of 64-bit words."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _hash_keys(key_t: U64) -> U64:
    """One 64-bit hash per column of a ``(KEY_WORDS, m)`` key array."""
    h = _mix(key_t[0] + _GOLDEN)
    for j in range(1, key_t.shape[0]):
        h = _mix(h ^ (key_t[j] + _GOLDEN))
    return h


def _address_words(rows: U8) -> U64:
    """The 16-byte address rows as ``(m, 2)`` native 64-bit words (a zero-copy view when possible).

    Canonical endpoint order only needs *a* total order, so the words are not byte-swapped.
    """
    return np.ascontiguousarray(rows, dtype=np.uint8).view(np.uint64)


def _words_to_rows(words: U64) -> U8:
    """Inverse of :func:`_address_words`: ``(m, 2)`` words back to ``(m, 16)`` address bytes."""
    return np.ascontiguousarray(words, dtype=np.uint64).view(np.uint8).reshape(-1, 16)


def _segment_starts(flags: Bool) -> I64:
    """For every position, the index of the last position at or before it where ``flags`` is set."""
    idx = np.where(flags, np.arange(flags.shape[0], dtype=np.int64), 0)
    return np.maximum.accumulate(idx)


def _is_closed(bits: npt.NDArray[np.uint8]) -> Bool:
    """TCP closure from closure bits: a RST, or a FIN from both sides."""
    both_fin: Bool = (bits & (_CB_FIN_A | _CB_FIN_B)) == (_CB_FIN_A | _CB_FIN_B)
    reset: Bool = (bits & _CB_RST) != 0
    return both_fin | reset


def _exclusive_cumsum(x: Bool) -> I64:
    out = np.zeros(x.shape[0] + 1, dtype=np.int64)
    np.cumsum(x, out=out[1:])
    return out


def _group_by_key(key: U64, hashes: U64) -> tuple[I64, Bool, U64]:
    """Order packets by key, capture order within a key: ``(order, group_first, sorted keys)``.

    Sorting the unique values ``(high hash bits | packet position)`` gives both orders at once, so no
    stable sort is needed. Rows are then compared word by word; keys that share the high hash bits
    (a collision) fall back to a lexicographic sort of the full keys.
    """
    m = hashes.shape[0]
    bits = np.uint64(max(int(m - 1).bit_length(), 1))
    low = (np.uint64(1) << bits) - np.uint64(1)
    composite = np.sort((hashes & ~low) | np.arange(m, dtype=np.uint64))
    order = (composite & low).astype(np.int64)
    group_bits = composite >> bits
    first = np.empty(m, dtype=np.bool_)
    first[0] = True
    np.not_equal(group_bits[1:], group_bits[:-1], out=first[1:])
    key_sorted = np.take(key, order, axis=1)
    changed = (key_sorted[:, 1:] != key_sorted[:, :-1]).any(axis=0)
    if (changed & ~first[1:]).any():
        order = np.lexsort((np.arange(m), *key[::-1]))
        key_sorted = np.take(key, order, axis=1)
        first[1:] = (key_sorted[:, 1:] != key_sorted[:, :-1]).any(axis=0)
    return order, first, key_sorted


def _format_macs(macs: U64) -> pa.Array:
    """48-bit MAC integers as ``aa:bb:cc:dd:ee:ff`` strings (null for 0, i.e. no link address)."""
    n = macs.shape[0]
    hexdigits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    chars = np.full((n, 17), ord(":"), dtype=np.uint8)
    for i in range(6):
        byte = ((macs >> np.uint64(8 * (5 - i))) & np.uint64(0xFF)).astype(np.intp)
        chars[:, 3 * i] = hexdigits[byte >> 4]
        chars[:, 3 * i + 1] = hexdigits[byte & 0xF]
    text = chars.view("S17").ravel().astype(np.str_)
    return pa.array(text, type=pa.string(), mask=macs == 0)


def _format_ips(rows: U8, versions: U8) -> list[str]:
    out: list[str] = []
    raw_rows = np.ascontiguousarray(rows, dtype=np.uint8).tobytes()
    for i, version in enumerate(versions.tolist()):
        raw = raw_rows[16 * i : 16 * i + 16]
        if version == 4:
            out.append(str(ipaddress.IPv4Address(raw[12:])))
        else:
            out.append(str(ipaddress.IPv6Address(raw)))
    return out


class _State:
    """Growable column arrays of per-flow state, indexed by slot."""

    def __init__(self, capacity: int) -> None:
        self.capacity = 0
        self.key = np.zeros((0, KEY_WORDS), dtype=np.uint64)
        self.flow_id = np.zeros(0, dtype=np.int64)
        self.ip_version = np.zeros(0, dtype=np.uint8)
        self.orig_is_a = np.zeros(0, dtype=np.bool_)
        self.flipped = np.zeros(0, dtype=np.bool_)
        self.first_ts = np.zeros(0, dtype=np.int64)
        self.last_ts = np.zeros(0, dtype=np.int64)
        self.last_pkt_ts = np.zeros(0, dtype=np.int64)
        self.first_serial = np.zeros(0, dtype=np.int64)
        self.pkts = np.zeros((0, 2), dtype=np.int64)
        self.ip_bytes = np.zeros((0, 2), dtype=np.int64)
        self.wire_bytes = np.zeros((0, 2), dtype=np.int64)
        self.payload_bytes = np.zeros((0, 2), dtype=np.int64)
        self.tcp_flags = np.zeros((0, 2), dtype=np.uint16)
        self.history = np.zeros((0, _N_LETTERS), dtype=np.uint32)
        self.closure = np.zeros(0, dtype=np.uint8)
        self.orig_mac = np.zeros(0, dtype=np.uint64)
        self.resp_mac = np.zeros(0, dtype=np.uint64)
        self.free = np.zeros(0, dtype=np.int64)
        self.grow(capacity)

    _COLUMNS: Final = (
        "key",
        "flow_id",
        "ip_version",
        "orig_is_a",
        "flipped",
        "first_ts",
        "last_ts",
        "last_pkt_ts",
        "first_serial",
        "pkts",
        "ip_bytes",
        "wire_bytes",
        "payload_bytes",
        "tcp_flags",
        "history",
        "closure",
        "orig_mac",
        "resp_mac",
    )

    def grow(self, capacity: int) -> None:
        old = self.capacity
        if capacity <= old:
            return
        for name in self._COLUMNS:
            arr = getattr(self, name)
            new = np.zeros((capacity, *arr.shape[1:]), dtype=arr.dtype)
            new[:old] = arr
            setattr(self, name, new)
        # Free slots are popped from the end: keep low slots first out.
        self.free = np.concatenate([np.arange(capacity - 1, old - 1, -1, dtype=np.int64), self.free])
        self.capacity = capacity

    def allocate(self, count: int) -> I64:
        if count > self.free.shape[0]:
            needed = self.capacity - self.free.shape[0] + count
            self.grow(max(needed, 2 * self.capacity, 1024))
        slots = self.free[self.free.shape[0] - count :][::-1].copy()
        self.free = self.free[: self.free.shape[0] - count]
        return slots

    def release(self, slots: I64) -> None:
        self.free = np.concatenate([self.free, slots[::-1]])


class FlowTable:
    """Live bidirectional flows, updated one batch at a time (see the module docstring)."""

    def __init__(self, config: FlowConfig | None = None, weird: WeirdLog | None = None) -> None:
        self.config = config if config is not None else FlowConfig()
        self.weird = weird if weird is not None else WeirdLog()
        cfg = self.config
        self._idle_ns = {
            PROTO_TCP: int(cfg.tcp_idle_timeout_s * NS_PER_S),
            PROTO_UDP: int(cfg.udp_idle_timeout_s * NS_PER_S),
        }
        self._other_idle_ns = int(cfg.other_idle_timeout_s * NS_PER_S)
        self._active_ns = int(cfg.active_timeout_s * NS_PER_S)
        self._state = _State(1024)
        self._tab_hash = np.zeros(0, dtype=np.uint64)
        self._tab_slot = np.zeros(0, dtype=np.int64)
        self._pending: list[dict[str, npt.NDArray[np.generic]]] = []
        self._serial = 0
        self._next_flow_id = 0
        self._evicted = 0
        self._emitted = 0

    # ------------------------------------------------------------------ public API

    @property
    def stats(self) -> FlowStats:
        """Live flows, flows created and evicted so far, flow records handed out."""
        return FlowStats(
            live_flows=int(self._tab_slot.shape[0]),
            flows_created=self._next_flow_id,
            flows_evicted=self._evicted,
            flows_emitted=self._emitted,
        )

    def update(self, batch: PacketBatch, decoded: DecodedBatch) -> FlowAssignment:
        """Assign every packet of ``batch`` to a flow and update the flows' counters."""
        n = decoded.n
        if len(batch) != n:
            raise ValueError(f"batch has {len(batch)} packets but the decoded batch {n}")
        flow_id = np.full(n, -1, dtype=np.int64)
        direction = np.zeros(n, dtype=np.uint8)
        serial0 = self._serial
        self._serial += n
        # Fragments are left to the FragmentReassembler: the whole datagram it returns is the flow packet.
        valid = (decoded.ip_version != 0) & ~decoded.is_fragment
        idx = np.flatnonzero(valid)
        if idx.shape[0]:
            self._update(batch, decoded, idx, serial0, flow_id, direction)
            self._enforce_limit()
        return FlowAssignment(flow_id=flow_id, direction=direction)

    def expire(self, now_ns: int) -> pa.Table:
        """Flows finished by now: ended inside earlier batches, idle or past the active timeout."""
        st = self._state
        slots = self._tab_slot
        if slots.shape[0]:
            idle = self._idle_timeouts(self._protos(st.key[slots, 4]))
            idle_out = (now_ns - st.last_pkt_ts[slots]) > idle
            active_out = (now_ns - st.first_ts[slots]) >= self._active_ns
            out = idle_out | active_out
            if out.any():
                reasons = np.where(idle_out, _IDLE, _ACTIVE)[out].astype(np.uint8)
                self._end_live(np.flatnonzero(out), reasons)
        return self._take_pending()

    def finish(self) -> pa.Table:
        """All remaining flows (end of the capture), then the table is empty."""
        if self._tab_slot.shape[0]:
            positions = np.arange(self._tab_slot.shape[0], dtype=np.int64)
            reasons = np.full(positions.shape[0], _END_OF_CAPTURE, dtype=np.uint8)
            self._end_live(positions, reasons)
        return self._take_pending()

    # ------------------------------------------------------------------ key building

    @staticmethod
    def _protos(small: U64) -> U8:
        return ((small >> np.uint64(24)) & np.uint64(0xFF)).astype(np.uint8)

    def _idle_timeouts(self, proto: U8) -> I64:
        idle = np.full(proto.shape[0], self._other_idle_ns, dtype=np.int64)
        for number, ns in self._idle_ns.items():
            idle[proto == number] = ns
        return idle

    @staticmethod
    def _keys(decoded: DecodedBatch, idx: I64) -> tuple[U64, Bool]:
        """Canonical key words per packet (column-major ``(5, m)``) and whether the sender is A.

        Words 0-1 are address A, 2-3 address B, 4 packs port A, port B, protocol and VLAN ids.
        """
        m = idx.shape[0]
        everything = m == decoded.n

        def take(col: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
            return col if everything else np.take(col, idx, axis=0)

        proto: U8 = take(decoded.ip_proto)  # type: ignore[assignment]
        src = _address_words(take(decoded.src_ip))  # type: ignore[arg-type]
        dst = _address_words(take(decoded.dst_ip))  # type: ignore[arg-type]
        sport = take(decoded.sport).astype(np.uint64)
        dport = take(decoded.dport).astype(np.uint64)
        icmp6 = proto == PROTO_ICMPV6
        icmp = (proto == PROTO_ICMP) | icmp6
        if icmp.any():
            itype: U8 = take(decoded.icmp_type)  # type: ignore[assignment]
            counterpart = np.where(icmp6, ICMP6_COUNTERPART_TABLE[itype], ICMP4_COUNTERPART_TABLE[itype])
            equiv = np.where(counterpart >= 0, counterpart, take(decoded.icmp_code)).astype(np.uint64)
            sport = np.where(icmp, itype.astype(np.uint64), sport)
            dport = np.where(icmp, equiv, dport)
        s_hi, s_lo, d_hi, d_lo = src[:, 0], src[:, 1], dst[:, 0], dst[:, 1]
        swap = (s_hi > d_hi) | ((s_hi == d_hi) & ((s_lo > d_lo) | ((s_lo == d_lo) & (sport > dport))))
        key = np.empty((KEY_WORDS, m), dtype=np.uint64)
        key[0] = np.where(swap, d_hi, s_hi)
        key[1] = np.where(swap, d_lo, s_lo)
        key[2] = np.where(swap, s_hi, d_hi)
        key[3] = np.where(swap, s_lo, d_lo)
        a_port = np.where(swap, dport, sport)
        b_port = np.where(swap, sport, dport)
        vlan = take(decoded.vlan).astype(np.uint64) & np.uint64(0xFFF)
        vlan_inner = take(decoded.vlan_inner).astype(np.uint64) & np.uint64(0xFFF)
        key[4] = (
            (a_port << np.uint64(48))
            | (b_port << np.uint64(32))
            | (proto.astype(np.uint64) << np.uint64(24))
            | (vlan << np.uint64(12))
            | vlan_inner
        )
        return key, ~swap

    # ------------------------------------------------------------------ table index

    def _lookup(self, hashes: U64, keys: U64) -> tuple[I64, I64]:
        """Slot and index position of each key in the live table (-1 where absent)."""
        tab_hash = self._tab_hash
        size = tab_hash.shape[0]
        slots = np.full(hashes.shape[0], -1, dtype=np.int64)
        positions = np.full(hashes.shape[0], -1, dtype=np.int64)
        if size == 0:
            return slots, positions
        pos = np.searchsorted(tab_hash, hashes)
        clipped = np.minimum(pos, size - 1)
        hit = (pos < size) & (tab_hash[clipped] == hashes)
        cand = self._tab_slot[clipped]
        equal = hit & (self._state.key[cand] == keys).all(axis=1)
        slots[equal] = cand[equal]
        positions[equal] = clipped[equal]
        # A hash shared by different keys (a 64-bit collision): scan the run of equal hashes.
        for g in np.flatnonzero(hit & ~equal).tolist():
            end = int(np.searchsorted(tab_hash, hashes[g], side="right"))
            for p in range(int(pos[g]) + 1, end):
                slot = int(self._tab_slot[p])
                if (self._state.key[slot] == keys[g]).all():
                    slots[g] = slot
                    positions[g] = p
                    break
        return slots, positions

    def _insert(self, hashes: U64, slots: I64) -> None:
        order = np.argsort(hashes, kind="stable")
        hashes = hashes[order]
        at = np.searchsorted(self._tab_hash, hashes)
        self._tab_hash = np.insert(self._tab_hash, at, hashes)
        self._tab_slot = np.insert(self._tab_slot, at, slots[order])

    # ------------------------------------------------------------------ the batch update

    def _update(
        self,
        batch: PacketBatch,
        decoded: DecodedBatch,
        idx: I64,
        serial0: int,
        flow_id_out: I64,
        direction_out: U8,
    ) -> None:
        st = self._state
        m = idx.shape[0]
        key, sender_is_a = self._keys(decoded, idx)
        hashes = _hash_keys(key)

        order, gfirst, key_sorted = _group_by_key(key, hashes)
        gid = np.cumsum(gfirst) - 1
        gstart = np.flatnonzero(gfirst)
        group_hash = hashes[order[gstart]]
        group_key = np.take(key_sorted, gstart, axis=1).T
        gslot, gpos = self._lookup(group_hash, group_key)
        gexists = gslot >= 0

        # --- per packet columns in sorted order
        pidx = idx[order]
        ts = batch.ts_ns[pidx].astype(np.int64)
        proto = self._protos(key_sorted[4])
        is_tcp = proto == PROTO_TCP
        flags = np.where(is_tcp, decoded.tcp_flags[pidx], 0).astype(np.uint16)
        from_a = sender_is_a[order]
        serial = serial0 + pidx.astype(np.int64)
        payload = np.maximum(decoded.payload_len[pidx], 0).astype(np.int64)

        # --- split groups into flows
        cont_slot = gslot[gid]  # the live flow a packet's key had before this batch (-1: none)
        prev_ts = np.empty(m, dtype=np.int64)
        prev_ts[1:] = ts[:-1]
        first_prev = np.where(gexists, st.last_pkt_ts[np.maximum(gslot, 0)], ts[gstart])
        prev_ts[gstart] = first_prev
        gap = ts - prev_ts
        idle_split = gap > self._idle_timeouts(proto)
        new_key = gfirst & (cont_slot < 0)
        base_start = new_key | idle_split

        syn = is_tcp & ((flags & TCP_SYN) != 0) & ((flags & TCP_ACK) == 0)
        fin = is_tcp & ((flags & TCP_FIN) != 0)
        rst = is_tcp & ((flags & TCP_RST) != 0)
        fin_a_cum = _exclusive_cumsum(fin & from_a)
        fin_b_cum = _exclusive_cumsum(fin & ~from_a)
        rst_cum = _exclusive_cumsum(rst)
        carried = np.where(cont_slot >= 0, st.closure[np.maximum(cont_slot, 0)], 0).astype(np.uint8)

        def closure_bits(reset: Bool, upto: I64, inclusive: bool) -> npt.NDArray[np.uint8]:
            """Closure bits at positions ``upto``: seen since the last reset point, before (or through) it."""
            rstart = _segment_starts(reset | gfirst)
            start = rstart[np.maximum(upto - (0 if inclusive else 1), 0)]
            stop = upto + (1 if inclusive else 0)
            bits = (
                np.where(fin_a_cum[stop] > fin_a_cum[start], _CB_FIN_A, 0)
                | np.where(fin_b_cum[stop] > fin_b_cum[start], _CB_FIN_B, 0)
                | np.where(rst_cum[stop] > rst_cum[start], _CB_RST, 0)
            ).astype(np.uint8)
            # The reset segment reaches back into the flow carried from earlier batches.
            inherit = gfirst[start] & ~reset[start]
            if not inclusive:
                empty = gfirst[upto]
                bits = np.where(empty, 0, bits).astype(np.uint8)
                inherit = inherit | empty
            return np.where(inherit, bits | carried[upto], bits).astype(np.uint8)

        syn_pos = np.flatnonzero(syn)
        active_split = np.zeros(m, dtype=np.bool_)
        while True:
            start_flags = base_start | active_split
            close_split = np.zeros(m, dtype=np.bool_)
            if syn_pos.shape[0]:
                before = closure_bits(start_flags | syn, syn_pos, inclusive=False)
                close_split[syn_pos] = _is_closed(before)
            start_flags = start_flags | close_split
            seg_start = _segment_starts(start_flags | gfirst)
            continuing = ~start_flags[seg_start]  # segment continues a flow from earlier batches
            seg_first_ts = np.where(continuing, st.first_ts[np.maximum(cont_slot, 0)], ts[seg_start])
            violation = ((ts - seg_first_ts) >= self._active_ns) & ~start_flags
            if not violation.any():
                break
            vpos = np.flatnonzero(violation)
            first_in_group = np.ones(vpos.shape[0], dtype=np.bool_)
            first_in_group[1:] = gid[vpos[1:]] != gid[vpos[:-1]]
            active_split[vpos[first_in_group]] = True

        # --- segments (flows touched by this batch)
        seg_flag = start_flags | gfirst
        seg_pos = np.flatnonzero(seg_flag)  # sorted position of each segment's first packet
        k = seg_pos.shape[0]
        seg = np.cumsum(seg_flag) - 1
        seg_end = np.empty(k, dtype=np.int64)
        seg_end[:-1] = seg_pos[1:] - 1
        seg_end[-1] = m - 1
        seg_cont = ~start_flags[seg_pos]
        seg_group = gid[seg_pos]
        last_in_group = np.ones(k, dtype=np.bool_)
        last_in_group[:-1] = seg_group[1:] != seg_group[:-1]
        seg_slot = np.empty(k, dtype=np.int64)
        seg_slot[seg_cont] = gslot[seg_group[seg_cont]]
        new_seg = ~seg_cont
        n_new = int(new_seg.sum())
        new_slots = st.allocate(n_new)
        seg_slot[new_seg] = new_slots

        # Initialise the new flows from their first packet.
        first = seg_pos[new_seg]
        first_pkt = pidx[first]
        first_flags = flags[first]
        flip = ((first_flags & TCP_SYN) != 0) & ((first_flags & TCP_ACK) != 0)
        st.key[new_slots] = np.take(key_sorted, first, axis=1).T
        # Flow ids follow the capture order of the flows' first packets.
        rank = np.empty(n_new, dtype=np.int64)
        rank[np.argsort(first_pkt, kind="stable")] = np.arange(n_new, dtype=np.int64)
        st.flow_id[new_slots] = self._next_flow_id + rank
        self._next_flow_id += n_new
        st.ip_version[new_slots] = decoded.ip_version[first_pkt]
        st.orig_is_a[new_slots] = from_a[first] != flip
        st.flipped[new_slots] = flip
        st.first_ts[new_slots] = ts[first]
        st.last_ts[new_slots] = ts[first]
        st.first_serial[new_slots] = serial[first]
        for col in (st.pkts, st.ip_bytes, st.wire_bytes, st.payload_bytes, st.tcp_flags):
            col[new_slots] = 0
        st.history[new_slots] = _HIST_NONE
        src_mac = decoded.eth_src[first_pkt]
        dst_mac = decoded.eth_dst[first_pkt]
        st.orig_mac[new_slots] = np.where(flip, dst_mac, src_mac)
        st.resp_mac[new_slots] = np.where(flip, src_mac, dst_mac)

        # A continuing key whose first packet starts a new flow: the old live flow ended before it.
        ended_before = gfirst & (cont_slot >= 0) & start_flags
        old_ended = cont_slot[ended_before]
        old_reason = np.where(idle_split[ended_before], _IDLE, _ACTIVE).astype(np.uint8)

        # --- per packet flow and direction
        pslot = seg_slot[seg]
        pdir = (from_a != st.orig_is_a[pslot]).astype(np.uint8)
        flow_id_out[pidx] = st.flow_id[pslot]
        direction_out[pidx] = pdir

        # --- aggregate counters per (segment, direction)
        cell = seg * 2 + pdir
        ncell = 2 * k
        ip_len = decoded.ip_total_len[pidx].astype(np.float64)
        wire = batch.origlen[pidx].astype(np.float64)
        agg_pkts = np.bincount(cell, minlength=ncell).reshape(k, 2)
        agg_ip = np.bincount(cell, weights=ip_len, minlength=ncell).astype(np.int64).reshape(k, 2)
        agg_wire = np.bincount(cell, weights=wire, minlength=ncell).astype(np.int64).reshape(k, 2)
        agg_pay = np.bincount(cell, weights=payload, minlength=ncell).astype(np.int64).reshape(k, 2)
        agg_flags = np.zeros(ncell, dtype=np.uint16)
        tcp_cells = cell[is_tcp]
        if tcp_cells.shape[0]:
            np.bitwise_or.at(agg_flags, tcp_cells, flags[is_tcp])
        st.pkts[seg_slot] += agg_pkts
        st.ip_bytes[seg_slot] += agg_ip
        st.wire_bytes[seg_slot] += agg_wire
        st.payload_bytes[seg_slot] += agg_pay
        st.tcp_flags[seg_slot] |= agg_flags.reshape(k, 2)

        # History: first occurrence of each letter, as packet offsets from the flow's first packet.
        letter = self._history_letters(flags, payload, is_tcp, proto == PROTO_UDP)
        has_letter = letter >= 0
        if has_letter.any():
            hist = np.full(k * _N_LETTERS, _HIST_NONE, dtype=np.uint32)
            lcell = (seg * _N_LETTERS + pdir * len(HISTORY_LETTERS) + letter)[has_letter]
            rel = serial[has_letter] - st.first_serial[pslot[has_letter]]
            np.minimum.at(hist, lcell, np.minimum(rel, int(_HIST_NONE) - 1).astype(np.uint32))
            st.history[seg_slot] = np.minimum(st.history[seg_slot], hist.reshape(k, _N_LETTERS))

        st.last_ts[seg_slot] = np.maximum(st.last_ts[seg_slot], np.maximum.reduceat(ts, seg_pos))
        st.last_pkt_ts[seg_slot] = ts[seg_end]
        st.closure[seg_slot] = closure_bits(start_flags | syn, seg_end, inclusive=True)

        # --- flows that ended inside this batch, then the live index
        if old_ended.shape[0]:
            self._emit(old_ended, old_reason)
        ended = ~last_in_group
        if ended.any():
            nxt = seg_pos[1:][ended[:-1]]
            reason = np.where(idle_split[nxt], _IDLE, _ACTIVE).astype(np.uint8)
            self._emit(seg_slot[ended], reason)
        live_seg = np.flatnonzero(last_in_group)
        live_group = seg_group[live_seg]
        known = gexists[live_group]
        self._tab_slot[gpos[live_group[known]]] = seg_slot[live_seg[known]]
        if (~known).any():
            self._insert(group_hash[live_group[~known]], seg_slot[live_seg[~known]])

    @staticmethod
    def _history_letters(flags: U16, payload: I64, is_tcp: Bool, is_udp: Bool) -> npt.NDArray[np.int8]:
        """Zeek's history letter of each packet (index into HISTORY_LETTERS), -1 for none."""
        syn = (flags & TCP_SYN) != 0
        fin = (flags & TCP_FIN) != 0
        rst = (flags & TCP_RST) != 0
        ack = (flags & TCP_ACK) != 0
        bits = syn.astype(np.int8) + fin + rst
        has_data = payload > 0
        tcp_letter = np.select(
            [
                (bits > 1) & fin & rst,
                bits > 1,
                syn & ack,
                syn,
                fin,
                rst,
                has_data,
                ack,
            ],
            [_L_FINRST, _L_MULTI, _L_SYNACK, _L_SYN, _L_FIN, _L_RST, _L_DATA, _L_ACK],
            default=-1,
        ).astype(np.int8)
        udp_letter = np.where(has_data, _L_DATA, -1).astype(np.int8)
        return np.where(is_tcp, tcp_letter, np.where(is_udp, udp_letter, -1)).astype(np.int8)

    # ------------------------------------------------------------------ ending flows

    def _enforce_limit(self) -> None:
        excess = self._tab_slot.shape[0] - self.config.max_flows
        if excess <= 0:
            return
        last = self._state.last_pkt_ts[self._tab_slot]
        victims = np.argpartition(last, excess - 1)[:excess]
        self._evicted += excess
        self.weird.report(
            "flow_table_evicted",
            "flow",
            f"more than {self.config.max_flows} live flows: least recently seen flows ended early",
            count=excess,
        )
        self._end_live(victims.astype(np.int64), np.full(excess, _EVICTED, dtype=np.uint8))

    def _end_live(self, positions: I64, reasons: npt.NDArray[np.uint8]) -> None:
        """End the live flows at ``positions`` of the index (removing them from it)."""
        slots = self._tab_slot[positions]
        keep = np.ones(self._tab_slot.shape[0], dtype=np.bool_)
        keep[positions] = False
        self._tab_hash = self._tab_hash[keep]
        self._tab_slot = self._tab_slot[keep]
        self._emit(slots, reasons)

    def _emit(self, slots: I64, reasons: npt.NDArray[np.uint8]) -> None:
        """Snapshot the flows in ``slots`` into the pending output and free their slots."""
        st = self._state
        order = np.argsort(st.flow_id[slots], kind="stable")
        slots = slots[order]
        reasons = reasons[order]
        proto = self._protos(st.key[slots, 4])
        closed = _is_closed(st.closure[slots]) & (proto == PROTO_TCP)
        reasons = np.where(closed & (reasons != _EVICTED), _TCP_CLOSE, reasons).astype(np.uint8)
        record: dict[str, npt.NDArray[np.generic]] = {
            "slot_key": st.key[slots].copy(),
            "reason": reasons,
        }
        for name in _State._COLUMNS:
            if name != "key":
                record[name] = getattr(st, name)[slots].copy()
        self._pending.append(record)
        self._emitted += int(slots.shape[0])
        st.release(slots)

    def _take_pending(self) -> pa.Table:
        pending, self._pending = self._pending, []
        if not pending:
            return _empty_table()
        merged = {name: np.concatenate([p[name] for p in pending]) for name in pending[0]}
        order = np.argsort(merged["flow_id"], kind="stable")
        return self._to_table({name: col[order] for name, col in merged.items()})

    def _to_table(self, rec: dict[str, npt.NDArray[np.generic]]) -> pa.Table:
        key = np.asarray(rec["slot_key"], dtype=np.uint64)
        orig_is_a = np.asarray(rec["orig_is_a"], dtype=np.bool_)
        small = key[:, 4]
        a_port = (small >> np.uint64(48)).astype(np.uint16)
        b_port = ((small >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.uint16)
        proto = self._protos(small)
        vlan = ((small >> np.uint64(12)) & np.uint64(0xFFF)).astype(np.uint16)
        vlan_inner = (small & np.uint64(0xFFF)).astype(np.uint16)
        a_rows = _words_to_rows(key[:, 0:2])
        b_rows = _words_to_rows(key[:, 2:4])
        orig_rows = np.where(orig_is_a[:, None], a_rows, b_rows)
        resp_rows = np.where(orig_is_a[:, None], b_rows, a_rows)
        orig_port = np.where(orig_is_a, a_port, b_port).astype(np.uint16)
        resp_port = np.where(orig_is_a, b_port, a_port).astype(np.uint16)
        ip_version = np.asarray(rec["ip_version"], dtype=np.uint8)
        pkts = np.asarray(rec["pkts"], dtype=np.int64)
        ip_bytes = np.asarray(rec["ip_bytes"], dtype=np.int64)
        wire = np.asarray(rec["wire_bytes"], dtype=np.int64)
        payload = np.asarray(rec["payload_bytes"], dtype=np.int64)
        tcp_flags = np.asarray(rec["tcp_flags"], dtype=np.uint16)
        history = np.asarray(rec["history"], dtype=np.uint32)
        flipped = np.asarray(rec["flipped"], dtype=np.bool_)
        first_ts = np.asarray(rec["first_ts"], dtype=np.int64)
        last_ts = np.asarray(rec["last_ts"], dtype=np.int64)
        reasons = np.asarray(rec["reason"], dtype=np.uint8)
        conn_state = _conn_states(proto, pkts, payload, tcp_flags, history)
        names = np.array([_PROTO_NAMES.get(p, str(p)) for p in range(256)], dtype=object)
        cids = community_ids(
            orig_rows, resp_rows, ip_version, proto, orig_port, resp_port, self.config.community_id_seed
        )
        ts_type = pa.timestamp("ns", tz="UTC")
        return pa.table(
            {
                "flow_id": pa.array(np.asarray(rec["flow_id"], dtype=np.int64)),
                "community_id": pa.array(cids, type=pa.string()),
                "first_ts": pa.array(first_ts, type=ts_type),
                "last_ts": pa.array(last_ts, type=ts_type),
                "duration_s": pa.array(np.maximum(last_ts - first_ts, 0) / NS_PER_S),
                "vlan": pa.array(vlan),
                "vlan_inner": pa.array(vlan_inner),
                "ip_version": pa.array(ip_version),
                "proto": pa.array(names[proto].tolist(), type=pa.string()),
                "ip_proto": pa.array(proto),
                "orig_ip": pa.array(_format_ips(orig_rows, ip_version), type=pa.string()),
                "resp_ip": pa.array(_format_ips(resp_rows, ip_version), type=pa.string()),
                "orig_port": pa.array(orig_port),
                "resp_port": pa.array(resp_port),
                "orig_mac": _format_macs(np.asarray(rec["orig_mac"], dtype=np.uint64)),
                "resp_mac": _format_macs(np.asarray(rec["resp_mac"], dtype=np.uint64)),
                "orig_pkts": pa.array(pkts[:, 0]),
                "resp_pkts": pa.array(pkts[:, 1]),
                "orig_bytes": pa.array(ip_bytes[:, 0]),
                "resp_bytes": pa.array(ip_bytes[:, 1]),
                "orig_wire_bytes": pa.array(wire[:, 0]),
                "resp_wire_bytes": pa.array(wire[:, 1]),
                "orig_payload_bytes": pa.array(payload[:, 0]),
                "resp_payload_bytes": pa.array(payload[:, 1]),
                "orig_tcp_flags": pa.array(tcp_flags[:, 0]),
                "resp_tcp_flags": pa.array(tcp_flags[:, 1]),
                "history": pa.array(_history_strings(history, flipped), type=pa.string()),
                "conn_state": pa.array(conn_state, type=pa.string()),
                "end_reason": pa.array(
                    np.array(END_REASONS, dtype=object)[reasons].tolist(), type=pa.string()
                ),
            },
            schema=FLOW_SCHEMA,
        )


FLOW_SCHEMA: pa.Schema = pa.schema(
    [
        ("flow_id", pa.int64()),
        ("community_id", pa.string()),
        ("first_ts", pa.timestamp("ns", tz="UTC")),
        ("last_ts", pa.timestamp("ns", tz="UTC")),
        ("duration_s", pa.float64()),
        ("vlan", pa.uint16()),
        ("vlan_inner", pa.uint16()),
        ("ip_version", pa.uint8()),
        ("proto", pa.string()),
        ("ip_proto", pa.uint8()),
        ("orig_ip", pa.string()),
        ("resp_ip", pa.string()),
        ("orig_port", pa.uint16()),
        ("resp_port", pa.uint16()),
        ("orig_mac", pa.string()),
        ("resp_mac", pa.string()),
        ("orig_pkts", pa.int64()),
        ("resp_pkts", pa.int64()),
        ("orig_bytes", pa.int64()),
        ("resp_bytes", pa.int64()),
        ("orig_wire_bytes", pa.int64()),
        ("resp_wire_bytes", pa.int64()),
        ("orig_payload_bytes", pa.int64()),
        ("resp_payload_bytes", pa.int64()),
        ("orig_tcp_flags", pa.uint16()),
        ("resp_tcp_flags", pa.uint16()),
        ("history", pa.string()),
        ("conn_state", pa.string()),
        ("end_reason", pa.string()),
    ]
)
"""Schema of the flow records returned by :meth:`FlowTable.expire` and :meth:`FlowTable.finish`."""


def _empty_table() -> pa.Table:
    return FLOW_SCHEMA.empty_table()


def _history_strings(history: U32, flipped: Bool) -> list[str]:
    """History letters ordered by first occurrence (``^`` first when the originator was flipped)."""
    n = history.shape[0]
    if n == 0:
        return []
    letters = np.frombuffer((HISTORY_LETTERS + HISTORY_LETTERS.lower()).encode(), dtype=np.uint8)
    order = np.argsort(history, axis=1, kind="stable")
    chars = letters[order]
    present = np.take_along_axis(history, order, axis=1) != _HIST_NONE
    out = np.zeros((n, _N_LETTERS + 1), dtype=np.uint8)
    out[:, 1:] = np.where(present, chars, 0)
    out[:, 0] = np.where(flipped, ord("^"), 0)
    # Pack the letters left (drop the NUL of an absent '^'), then view as fixed-width strings.
    packed = np.where(flipped[:, None], out, np.roll(out, -1, axis=1))
    text = packed.view(f"S{_N_LETTERS + 1}").ravel().astype(np.str_)
    return [str(s) for s in text.tolist()]


def _conn_states(
    proto: U8,
    pkts: I64,
    payload: I64,
    tcp_flags: U16,
    history: U32,
) -> list[str]:
    """Zeek's conn_state per flow (UDP: SF/S0; other protocols: OTH)."""
    n = proto.shape[0]
    nl = len(HISTORY_LETTERS)

    def seen(direction: int, letter: int) -> Bool:
        present: Bool = history[:, direction * nl + letter] != _HIST_NONE
        return present

    o_flags = tcp_flags[:, 0]
    r_flags = tcp_flags[:, 1]
    o_s, o_h = seen(0, _L_SYN), seen(0, _L_SYNACK)
    r_s, r_h = seen(1, _L_SYN), seen(1, _L_SYNACK)
    o_fin = (o_flags & TCP_FIN) != 0
    r_fin = (r_flags & TCP_FIN) != 0
    o_rst = (o_flags & TCP_RST) != 0
    r_rst = (r_flags & TCP_RST) != 0
    o_ack = seen(0, _L_ACK) | (seen(0, _L_DATA) & ((o_flags & TCP_ACK) != 0))
    r_only_acks = ~(seen(1, _L_DATA) | r_s | r_h | r_fin | r_rst | seen(1, _L_FINRST) | seen(1, _L_MULTI))

    o_state = np.select(
        [
            o_rst,
            o_fin,
            o_s & (r_h | r_s),
            o_s,
            o_h & r_s,
            o_h,
            (pkts[:, 0] > 0) & r_h & o_ack,
            pkts[:, 0] > 0,
        ],
        [_RESET, _CLOSED, _ESTABLISHED, _SYN_SENT, _ESTABLISHED, _SYN_ACK_SENT, _ESTABLISHED, _PARTIAL],
        default=_INACTIVE,
    )
    r_state = np.select(
        [r_rst, r_fin, r_h | r_s, (pkts[:, 1] > 0) & o_s & r_only_acks, pkts[:, 1] > 0],
        [_RESET, _CLOSED, _ESTABLISHED, _INACTIVE, _PARTIAL],
        default=_INACTIVE,
    )
    o_inactive = (o_state == _INACTIVE) | (o_state == _PARTIAL)
    r_inactive = (r_state == _INACTIVE) | (r_state == _PARTIAL)
    no_data = (payload[:, 0] == 0) & (payload[:, 1] == 0)

    # RSTOS0 needs the history to match Zeek's /^\^?S[^HAFGIQ]*R.*/: the originator's SYN comes
    # first and none of its H, A, F, I, Q letters precede its R.
    first_letter = history.min(axis=1)
    o_syn_at = history[:, _L_SYN]
    o_rst_at = history[:, _L_RST]
    syn_first = (o_syn_at != _HIST_NONE) & (o_syn_at == first_letter)
    none_before_r = np.ones(n, dtype=np.bool_)
    for letter in (_L_SYNACK, _L_ACK, _L_FIN, _L_FINRST, _L_MULTI):
        none_before_r &= history[:, letter] > o_rst_at
    rstos0 = syn_first & (o_rst_at != _HIST_NONE) & none_before_r

    tcp_state = np.select(
        [
            (r_state == _RESET) & ((o_state == _SYN_SENT) | (o_state == _SYN_ACK_SENT)),
            (r_state == _RESET) & (o_state == _RESET) & no_data,
            (r_state == _RESET) & o_inactive,
            r_state == _RESET,
            (o_state == _RESET) & r_inactive & rstos0,
            (o_state == _RESET) & r_inactive,
            o_state == _RESET,
            (o_state == _CLOSED) & (r_state == _CLOSED),
            (o_state == _CLOSED) & r_inactive,
            o_state == _CLOSED,
            (r_state == _CLOSED) & o_inactive,
            r_state == _CLOSED,
            (o_state == _SYN_SENT) & (r_state == _INACTIVE),
            (o_state == _ESTABLISHED) & (r_state == _ESTABLISHED),
        ],
        [
            "REJ",
            "REJ",
            "RSTRH",
            "RSTR",
            "RSTOS0",
            "OTH",
            "RSTO",
            "SF",
            "SH",
            "S2",
            "SHR",
            "S3",
            "S0",
            "S1",
        ],
        default="OTH",
    )
    udp_state = np.where(
        pkts[:, 0] > 0, np.where(pkts[:, 1] > 0, "SF", "S0"), np.where(pkts[:, 1] > 0, "SHR", "OTH")
    )
    state = np.where(proto == PROTO_TCP, tcp_state, np.where(proto == PROTO_UDP, udp_state, "OTH"))
    return [str(s) for s in state.tolist()]
