"""Bidirectional flow table: packets of a PacketBatch grouped into flows, vectorized per batch.

A flow is keyed by ``(vlan, vlan_inner, ip_proto, address A, port A, address B, port B)`` where the
two endpoints are put in canonical order (smaller ``(address, port)`` first) so both directions of a
conversation share one key. ICMP and ICMPv6 have no ports: as in the Community ID spec (and Zeek), the
message type is the sender's "port" and the reply counterpart type (or, for one-way types, the code)
the receiver's, so an echo request and its reply are one flow. Packets without an IP header (ARP, ...)
and non-first IP fragments (no transport header) belong to no flow (``flow_id`` -1).

The originator is the sender of a flow's first packet, except that a TCP flow whose first packet is
a SYN+ACK is originated by that packet's receiver (the SYN was missed; the history starts with ``^``).

How :meth:`FlowTable.update` works: one compiled pass (``fieldward.decode._kernels.flow_update``)
walks the batch in capture order, no Python per packet or per flow.

1. Each packet's canonical key (five ``uint64`` words: two per address, one packing the ports,
   protocol and VLAN ids) is hashed into one ``uint64`` with multiply-xorshift mixing (:func:`_hash_keys`
   is the same hash over numpy columns).
2. The key is looked up in the live index, an open-addressing hash table (linear probing) of slot
   numbers; the full key is compared, so colliding hashes never merge flows.
3. The split rules decide whether the packet continues its key's live flow: a packet more than the
   idle timeout after the previous packet of its key, a packet ``active_timeout_s`` or more after its
   flow's first packet, and a TCP SYN (without ACK) after the flow was closed (RST, or FIN from both
   sides, since the last SYN) each start a new flow; the flow they end is handed to the pending output.
4. The packet's counters, TCP flags, history letter and closure bits are added to its flow's slot of
   the per-flow state arrays, in place.

:meth:`FlowTable.expire` keeps a lower bound of the earliest time a live flow can time out and only
scans the index when ``now`` reaches it.

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
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from fieldward.capture.batch import PacketBatch
from fieldward.decode import _kernels as _k
from fieldward.decode.columns import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
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

_HASH_MASK: int = 0xFFFFFFFFFFFFFFFF
"""Bits of the key hash the live index uses (tests set 0 to make every key collide)."""
_NEVER: Final = np.iinfo(np.int64).max
_MAX_TIMEOUT_NS: Final = 1 << 61
"""Timeouts are capped at about 73 years so that deadlines fit in int64 nanoseconds."""


def _timeout_ns(seconds: float) -> int:
    return min(int(seconds * NS_PER_S), _MAX_TIMEOUT_NS)


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
    """Live flows kept at most; beyond it the least recently seen are evicted (the oldest flow first
    among flows last seen at the same time)."""
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


def _is_closed(bits: npt.NDArray[np.uint8]) -> Bool:
    """TCP closure from closure bits: a RST, or a FIN from both sides."""
    both_fin: Bool = (bits & (_CB_FIN_A | _CB_FIN_B)) == (_CB_FIN_A | _CB_FIN_B)
    reset: Bool = (bits & _CB_RST) != 0
    return both_fin | reset


def _format_macs(macs: U64) -> pa.Array:
    """48-bit MAC integers as ``aa:bb:cc:dd:ee:ff`` strings (null for 0, i.e. no link address)."""
    n = macs.shape[0]
    hexdigits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    chars = np.full((n, 17), ord(":"), dtype=np.uint8)
    for i in range(6):
        byte = ((macs >> np.uint64(8 * (5 - i))) & np.uint64(0xFF)).astype(np.intp)
        chars[:, 3 * i] = hexdigits[byte >> 4]
        chars[:, 3 * i + 1] = hexdigits[byte & 0xF]
    offsets = np.arange(0, 17 * n + 1, 17, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(),
        n,
        [_validity(macs != 0), pa.py_buffer(offsets), pa.py_buffer(chars)],
    )


# Arrow arrays are built from buffers, not with pa.array: that is cheaper for the few flows a typical
# expire() returns, and pa.array imports pandas (half a second) the first time it is called.


def _validity(valid: Bool) -> pa.Buffer | None:
    """An Arrow validity bitmap (None when every value is valid)."""
    if bool(valid.all()):
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def _arrow_numbers(values: npt.NDArray[Any], dtype: type[np.generic], type_: pa.DataType) -> pa.Array:
    """A numeric numpy column as an Arrow array of ``type_`` (stored as ``dtype``)."""
    data = np.ascontiguousarray(values, dtype=dtype)
    return pa.Array.from_buffers(type_, int(data.shape[0]), [None, pa.py_buffer(data)])


def _arrow_strings(values: list[str]) -> pa.Array:
    """Python strings as an Arrow string array."""
    encoded = [s.encode() for s in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    return pa.Array.from_buffers(
        pa.string(),
        len(encoded),
        [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))],
    )


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
    """Growable column arrays of per-flow state, indexed by slot, and a stack of free slots."""

    def __init__(self, capacity: int) -> None:
        self.capacity = 0
        self.key = np.zeros((0, KEY_WORDS), dtype=np.uint64)
        self.hash = np.zeros(0, dtype=np.uint64)
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
        """Free slots: the first ``nfree`` entries (a stack, popped from the end)."""
        self.nfree = 0
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
        for name in (*self._COLUMNS, "hash"):
            arr = getattr(self, name)
            new = np.zeros((capacity, *arr.shape[1:]), dtype=arr.dtype)
            new[:old] = arr
            setattr(self, name, new)
        free = np.empty(capacity, dtype=np.int64)
        # New slots go below the free ones already there; the stack pops low slots first.
        added = capacity - old
        free[:added] = np.arange(capacity - 1, old - 1, -1, dtype=np.int64)
        free[added : added + self.nfree] = self.free[: self.nfree]
        self.free = free
        self.nfree += added
        self.capacity = capacity

    def reserve(self, count: int) -> None:
        """Make sure ``count`` slots are free."""
        if count > self.nfree:
            self.grow(max(self.capacity - self.nfree + count, 2 * self.capacity, 1024))

    def release(self, slots: I64) -> None:
        k = slots.shape[0]
        self.free[self.nfree : self.nfree + k] = slots[::-1]
        self.nfree += k


class FlowTable:
    """Live bidirectional flows, updated one batch at a time (see the module docstring)."""

    def __init__(self, config: FlowConfig | None = None, weird: WeirdLog | None = None) -> None:
        self.config = config if config is not None else FlowConfig()
        self.weird = weird if weird is not None else WeirdLog()
        cfg = self.config
        self._params = np.zeros(_k.P_SIZE, dtype=np.int64)
        self._params[_k.P_TCP_IDLE] = _timeout_ns(cfg.tcp_idle_timeout_s)
        self._params[_k.P_UDP_IDLE] = _timeout_ns(cfg.udp_idle_timeout_s)
        self._params[_k.P_OTHER_IDLE] = _timeout_ns(cfg.other_idle_timeout_s)
        self._params[_k.P_ACTIVE] = _timeout_ns(cfg.active_timeout_s)
        self._state = _State(1024)
        self._ht = np.full(2048, -1, dtype=np.int64)
        self._io = np.zeros(_k.IO_SIZE, dtype=np.int64)
        self._io[_k.IO_MIN_DEADLINE] = _NEVER
        self._pending: list[dict[str, npt.NDArray[np.generic]]] = []
        self._serial = 0
        self._evicted = 0
        self._emitted = 0

    # ------------------------------------------------------------------ public API

    @property
    def _live(self) -> int:
        return int(self._io[_k.IO_LIVE])

    @property
    def stats(self) -> FlowStats:
        """Live flows, flows created and evicted so far, flow records handed out."""
        return FlowStats(
            live_flows=self._live,
            flows_created=int(self._io[_k.IO_NEXT_ID]),
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
        if n == 0:
            return FlowAssignment(flow_id=flow_id, direction=direction)
        st = self._state
        # Room for one new flow per packet: free slots, and a hash index at most half full.
        st.reserve(n)
        self._reserve_index(self._live + n)
        self._params[_k.P_SERIAL0] = serial0
        ended_slot = np.empty(n, dtype=np.int64)
        ended_reason = np.empty(n, dtype=np.uint8)
        self._io[_k.IO_NFREE] = st.nfree
        _k.flow_update(
            decoded.ip_version,
            decoded.is_fragment,
            decoded.ip_proto,
            _address_words(decoded.src_ip),
            _address_words(decoded.dst_ip),
            decoded.sport,
            decoded.dport,
            decoded.icmp_type,
            decoded.icmp_code,
            decoded.vlan,
            decoded.vlan_inner,
            decoded.tcp_flags,
            decoded.payload_len,
            decoded.ip_total_len,
            decoded.eth_src,
            decoded.eth_dst,
            batch.ts_ns,
            batch.origlen,
            ICMP4_COUNTERPART_TABLE,
            ICMP6_COUNTERPART_TABLE,
            self._params,
            np.uint64(_HASH_MASK),
            st.key,
            st.hash,
            st.flow_id,
            st.ip_version,
            st.orig_is_a,
            st.flipped,
            st.first_ts,
            st.last_ts,
            st.last_pkt_ts,
            st.first_serial,
            st.pkts,
            st.ip_bytes,
            st.wire_bytes,
            st.payload_bytes,
            st.tcp_flags,
            st.history,
            st.closure,
            st.orig_mac,
            st.resp_mac,
            self._ht,
            st.free,
            self._io,
            flow_id,
            direction,
            ended_slot,
            ended_reason,
        )
        st.nfree = int(self._io[_k.IO_NFREE])
        n_ended = int(self._io[_k.IO_ENDED])
        if n_ended:
            self._emit(ended_slot[:n_ended], ended_reason[:n_ended])
        self._enforce_limit()
        return FlowAssignment(flow_id=flow_id, direction=direction)

    def expire(self, now_ns: int) -> pa.Table:
        """Flows finished by now: ended inside earlier batches, idle or past the active timeout."""
        # The table keeps a lower bound of the earliest timeout: nothing to scan before it.
        if self._live and now_ns >= self._io[_k.IO_MIN_DEADLINE]:
            st = self._state
            out_slot = np.empty(self._live, dtype=np.int64)
            out_reason = np.empty(self._live, dtype=np.uint8)
            count = _k.flow_expire(
                self._ht,
                st.key,
                st.hash,
                st.first_ts,
                st.last_pkt_ts,
                self._params,
                int(now_ns),
                out_slot,
                out_reason,
                self._io,
            )
            if count:
                self._emit(out_slot[:count], out_reason[:count])
        return self._take_pending()

    def finish(self) -> pa.Table:
        """All remaining flows (end of the capture), then the table is empty."""
        slots = self._live_slots()
        if slots.shape[0]:
            self._end_live(slots, np.full(slots.shape[0], _END_OF_CAPTURE, dtype=np.uint8))
        return self._take_pending()

    # ------------------------------------------------------------------ the live index

    @staticmethod
    def _protos(small: U64) -> U8:
        return ((small >> np.uint64(24)) & np.uint64(0xFF)).astype(np.uint8)

    def _reserve_index(self, keys: int) -> None:
        """Grow the hash index so that ``keys`` keys fill at most half of it."""
        size = self._ht.shape[0]
        if 2 * keys <= size:
            return
        while 2 * keys > size:
            size *= 2
        new = np.full(size, -1, dtype=np.int64)
        _k.ht_rebuild(new, self._ht, self._state.hash)
        self._ht = new

    def _live_slots(self) -> I64:
        out = np.empty(self._live, dtype=np.int64)
        count = _k.ht_slots(self._ht, out)
        return out[:count]

    # ------------------------------------------------------------------ ending flows

    def _enforce_limit(self) -> None:
        excess = self._live - self.config.max_flows
        if excess <= 0:
            return
        slots = self._live_slots()
        last = self._state.last_pkt_ts[slots]
        # The least recently seen; among flows last seen at the same time, the oldest (lowest id).
        cutoff = np.partition(last, excess - 1)[excess - 1]
        below = slots[last < cutoff]
        tied = slots[last == cutoff]
        tied = tied[np.argsort(self._state.flow_id[tied], kind="stable")[: excess - below.shape[0]]]
        victims = np.concatenate([below, tied])
        self._evicted += excess
        self.weird.report(
            "flow_table_evicted",
            "flow",
            f"more than {self.config.max_flows} live flows: least recently seen flows ended early",
            count=excess,
        )
        self._end_live(victims, np.full(excess, _EVICTED, dtype=np.uint8))

    def _end_live(self, slots: I64, reasons: npt.NDArray[np.uint8]) -> None:
        """End the live flows in ``slots`` (removing them from the index)."""
        st = self._state
        self._io[_k.IO_LIVE] -= _k.ht_remove_slots(self._ht, st.key, st.hash, slots)
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
        cids = community_ids(
            orig_rows, resp_rows, ip_version, proto, orig_port, resp_port, self.config.community_id_seed
        )
        i64, u16 = np.int64, np.uint16
        columns: dict[str, pa.Array] = {
            "flow_id": _arrow_numbers(rec["flow_id"], i64, pa.int64()),
            "community_id": _arrow_strings(cids),
            "first_ts": _arrow_numbers(first_ts, i64, _TS_TYPE),
            "last_ts": _arrow_numbers(last_ts, i64, _TS_TYPE),
            "duration_s": _arrow_numbers(
                np.maximum(last_ts - first_ts, 0) / NS_PER_S, np.float64, pa.float64()
            ),
            "vlan": _arrow_numbers(vlan, u16, pa.uint16()),
            "vlan_inner": _arrow_numbers(vlan_inner, u16, pa.uint16()),
            "ip_version": _arrow_numbers(ip_version, np.uint8, pa.uint8()),
            "proto": _arrow_strings(_PROTO_NAME_ARRAY[proto].tolist()),
            "ip_proto": _arrow_numbers(proto, np.uint8, pa.uint8()),
            "orig_ip": _arrow_strings(_format_ips(orig_rows, ip_version)),
            "resp_ip": _arrow_strings(_format_ips(resp_rows, ip_version)),
            "orig_port": _arrow_numbers(orig_port, u16, pa.uint16()),
            "resp_port": _arrow_numbers(resp_port, u16, pa.uint16()),
            "orig_mac": _format_macs(np.asarray(rec["orig_mac"], dtype=np.uint64)),
            "resp_mac": _format_macs(np.asarray(rec["resp_mac"], dtype=np.uint64)),
        }
        for side, d in (("orig", 0), ("resp", 1)):
            columns[f"{side}_pkts"] = _arrow_numbers(pkts[:, d], i64, pa.int64())
            columns[f"{side}_bytes"] = _arrow_numbers(ip_bytes[:, d], i64, pa.int64())
            columns[f"{side}_wire_bytes"] = _arrow_numbers(wire[:, d], i64, pa.int64())
            columns[f"{side}_payload_bytes"] = _arrow_numbers(payload[:, d], i64, pa.int64())
            columns[f"{side}_tcp_flags"] = _arrow_numbers(tcp_flags[:, d], u16, pa.uint16())
        columns["history"] = _arrow_strings(_history_strings(history, flipped))
        columns["conn_state"] = _arrow_strings(conn_state)
        columns["end_reason"] = _arrow_strings(_END_REASON_ARRAY[reasons].tolist())
        return pa.Table.from_arrays([columns[name] for name in FLOW_SCHEMA.names], schema=FLOW_SCHEMA)


_TS_TYPE: Final = pa.timestamp("ns", tz="UTC")
_PROTO_NAME_ARRAY: Final = np.array([_PROTO_NAMES.get(p, str(p)) for p in range(256)], dtype=object)
_END_REASON_ARRAY: Final = np.array(END_REASONS, dtype=object)


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
    # Not FLOW_SCHEMA.empty_table(), which imports pandas (half a second) on first use.
    return pa.Table.from_batches([], schema=FLOW_SCHEMA)


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
