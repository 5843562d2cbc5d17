"""The protocol engine: recognises each flow's protocol by content and drives its dissector.

Per batch, with numpy masks first and Python only where a dissector must run:

1. recognition: for flows not yet classified, the first few payload packets (at most
   ``max_recognition_packets`` per flow, selected vectorized) are shown to the recognisers, those
   whose well-known ports match first. ``YES`` attaches a new dissector instance to the flow; when
   every recogniser says ``NO`` (or the packet budget is spent) the flow is left unclassified.
2. dissection: UDP datagrams of classified flows go straight to ``parse``; TCP segments go through
   :class:`~fieldward.decode.reassembly.TcpReassembler`, and the in-order stream of each direction is
   cut into PDUs with the dissector's ``frame``. Columnar TCP path: segments delivered whole and in
   order on flows whose dissector has ``parse_pdu_batch`` and declares its ``framing``, with nothing
   buffered in their direction, that are exactly a run of valid PDUs, are cut with numpy across the
   batch and queued as columns of the batch buffer (``_Block``); everything else goes through ``frame``
   in the same delivery order, so the output does not depend on which path cut a PDU.

Layer 2: frames without IP (``Transport.ETHERNET`` dissectors) are selected per batch with numpy masks
over the ``ethertype`` column (and, for 802.3 frames, over the gathered LLC/SNAP header bytes), then
narrowed by each dissector's vectorized :meth:`~fieldward.protocols.base.Dissector.match_frames`; only
the selected frames reach Python, in capture order, each to the first dissector (registry order) that
takes it. One instance of each layer-2 dissector serves the whole run.

Confinement: an exception inside a dissector is caught, counted (weird ``dissector_exception``) and
logged once per dissector; after ``max_exceptions_per_flow`` the dissector is detached from that flow
(layer 2: from the frames of that source MAC).
Bytes a dissector cannot frame are dropped with a weird, and framing resumes on the next segment.
"""

from __future__ import annotations

import inspect
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from fieldward.capture import linktypes
from fieldward.capture.batch import PacketBatch
from fieldward.decode.columns import (
    ETH_IPV4,
    ETH_IPV6,
    ETH_QINQ,
    ETH_QINQ_OLD,
    ETH_VLAN,
    PROTO_TCP,
    PROTO_UDP,
    DecodedBatch,
)
from fieldward.decode.flows import FlowAssignment
from fieldward.decode.reassembly import StreamBatch, StreamChunk, TcpReassembler
from fieldward.protocols.base import (
    L2_HEAD_BYTES,
    NO_FLOW,
    BatchResult,
    Datagrams,
    Dissector,
    Event,
    EventColumns,
    FlowInfo,
    LengthFraming,
    LinkInfo,
    PduContext,
    ProtocolWeird,
    Transport,
    Verdict,
    compact_ranges,
    event_fields,
    event_schema,
    events_of_table,
    events_table,
    mac_str,
)
from fieldward.protocols.registry import Registry
from fieldward.weird import WeirdLog

logger = logging.getLogger(__name__)

UNKNOWN = -1
"""Flow not classified yet."""
NONE = -2
"""No dissector recognised the flow."""

MAX_8023_LENGTH = 1500
"""An Ethernet type/length field up to this value is an 802.3 length: an 802.2 LLC header follows."""
LLC_SNAP = b"\xaa\xaa\x03"
"""DSAP, SSAP and control (UI) of an 802.2 LLC header followed by a SNAP header (IEEE 802)."""
LLC_SNAP_HEADER = 8
"""LLC (3 bytes) + SNAP OUI (3) + protocol id (2)."""
SLL_8022 = 0x0004
"""Linux cooked capture protocol ETH_P_802_2: the payload starts with an 802.2 LLC header."""
ETH_LLC_JUMBO = 0x8870
"""EtherType of LLC-encapsulated frames too long for an 802.3 length field (IEEE 802.3 jumbo LLC)."""
NOT_LINK_ETHERTYPES = frozenset({ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD})
"""EtherTypes never handed to layer-2 dissectors: IP goes through flows, VLAN tags are decoded."""
_BASE_MATCH_FRAMES = inspect.getattr_static(Dissector, "match_frames")
_BASE_PARSE_BATCH = inspect.getattr_static(Dissector, "parse_batch")
_BASE_PARSE_PDU_BATCH = inspect.getattr_static(Dissector, "parse_pdu_batch")
MAX_L2_FAILING_SENDERS = 65536
"""(dissector, source MAC) exception counters kept; beyond it they are reset."""


@dataclass(frozen=True, slots=True)
class ProtocolSettings:
    max_recognition_packets: int = 4
    """Payload packets per flow shown to the recognisers before giving up."""
    max_pdu_buffer_bytes: int = 1 << 20
    """Unframed bytes kept per flow direction; beyond it the buffer is dropped with a weird."""
    max_exceptions_per_flow: int = 3
    fast_path: bool = True
    """Use the dissectors' columnar fast paths (``parse_batch``); False sends every datagram to
    ``parse`` (the output is the same, only slower)."""


@dataclass(slots=True)
class _Session:
    dissector: Dissector
    ctx: PduContext
    buffers: tuple[bytearray, bytearray]
    exceptions: int = 0
    active: bool = True
    index: int = -1
    """The dissector's index in the registry."""
    queued: bool = False
    """TCP PDUs wait in the engine's queue for the dissector's columnar fast path."""


@dataclass(slots=True)
class _Queued:
    """A framed TCP PDU waiting for the columnar fast path (``parse_pdu_batch``)."""

    index: int
    flow: int
    session: _Session
    pdu: bytes
    is_orig: bool
    ts_ns: int


@dataclass(slots=True)
class _Block:
    """Framed TCP PDUs of in-order segments, cut with numpy (``LengthFraming``): columns over the batch
    buffer waiting for the columnar fast path, in stream order (no object per PDU)."""

    buffer: npt.NDArray[np.uint8]
    index: npt.NDArray[np.intp]
    """The dissector of each PDU (index in the registry)."""
    start: npt.NDArray[np.int64]
    length: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    flow: npt.NDArray[np.int64]
    is_orig: npt.NDArray[np.bool_]
    slot: npt.NDArray[np.intp]
    """The session of each PDU (index into ``sessions``)."""
    sessions: list[_Session]


@dataclass(slots=True)
class _Collector:
    """Events made by ``parse`` for datagrams or PDUs a fast path left, kept to be merged with the fast
    path's events in capture order."""

    parsed: list[tuple[int, Event]] = field(default_factory=list)
    """(position of the datagram or PDU, event)."""
    position: int = 0
    """The datagram or PDU being parsed."""


@dataclass(slots=True)
class _PduBatch:
    """One dissector's ``parse_pdu_batch`` result over the queued PDUs, emitted in stream order."""

    name: str
    result: BatchResult
    pdus: Datagrams
    inverse: npt.NDArray[np.intp]
    infos: list[FlowInfo]
    accepted: npt.NDArray[np.bool_]
    """PDUs the fast path handled and ``apply`` accepted."""
    collected: _Collector = field(default_factory=_Collector)
    """Events of the PDUs ``parse`` handled."""


@dataclass(slots=True)
class _FastBlock:
    """Output of one ``parse_batch`` call, emitted in pieces so that it interleaves in capture order
    with the events ``parse`` makes for the datagrams the fast path left to it."""

    name: str
    positions: npt.NDArray[np.intp]
    """Datagram (position in the batch's UDP rows) of each row, non-decreasing."""
    flows: npt.NDArray[np.int64]
    table: pa.Table | None = None
    """The events; None for the block that only counts the handled datagrams."""
    event_type: type[Event] | None = None
    done: int = 0
    """Rows emitted so far."""


def unique_ids(ids: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.intp]]:
    """``np.unique(ids, return_inverse=True)`` for non-negative ids (flow ids): when they lie close
    together, by marking them in an array spanning their range (linear) instead of sorting them."""
    n = ids.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.intp)
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high - low >= 4 * n + 1024:
        flows, inverse = np.unique(ids, return_inverse=True)
        return flows.astype(np.int64), inverse.reshape(-1).astype(np.intp)
    local = ids - low
    seen = np.zeros(high - low + 1, dtype=np.bool_)
    seen[local] = True
    rank = np.cumsum(seen, dtype=np.intp) - 1
    return np.flatnonzero(seen).astype(np.int64) + low, rank[local]


def _slice_block(block: _Block, begin: int, end: int) -> _Block:
    """PDUs ``begin:end`` of a block (views, no copy)."""
    part = slice(begin, end)
    return _Block(
        block.buffer,
        block.index[part],
        block.start[part],
        block.length[part],
        block.ts[part],
        block.flow[part],
        block.is_orig[part],
        block.slot[part],
        block.sessions,
    )


MAX_MERGE_SLICES = 64
"""Up to this many runs, tables merged in position order are cut into slices (no copy) instead of
gathered row by row (``take``, which copies every column)."""


def _merge_tables(parts: list[tuple[npt.NDArray[np.intp], pa.Table]]) -> pa.Table:
    """The rows of several tables of one event type, ordered by position (stable: rows of the same
    position keep the order of ``parts``). ``positions`` are non-decreasing within each table."""
    positions = np.concatenate([p for p, _ in parts])
    order = np.argsort(positions, kind="stable")
    tables = [t for _, t in parts]
    if order.shape[0] == 0:
        return pa.concat_tables(tables)
    firsts = np.zeros(len(tables) + 1, dtype=np.int64)
    np.cumsum([t.num_rows for t in tables], out=firsts[1:])
    # Runs of consecutive rows of one table: a run ends where the next row is not the row right
    # after, or is the first row of the next table.
    follow = order[1:]
    breaks = np.flatnonzero((follow != order[:-1] + 1) | np.isin(follow, firsts[1:-1])) + 1
    if breaks.shape[0] + 1 > MAX_MERGE_SLICES:
        return pa.concat_tables(tables).take(order)
    run_starts = np.concatenate([[0], breaks])
    run_ends = np.concatenate([breaks, [order.shape[0]]])
    slices = []
    for begin, end in zip(order[run_starts].tolist(), (order[run_ends - 1] + 1).tolist(), strict=True):
        k = int(np.searchsorted(firsts, begin, side="right")) - 1
        slices.append(tables[k].slice(begin - int(firsts[k]), end - begin))
    return pa.concat_tables(slices)


def _schema(event_type: type[Event]) -> pa.Schema:
    schema = _SCHEMAS.get(event_type)
    if schema is None:
        schema = _SCHEMAS[event_type] = event_schema(event_type)
    return schema


_SCHEMAS: dict[type[Event], pa.Schema] = {}
_BASE_FIELDS = frozenset(event_fields(Event))


@dataclass(slots=True)
class _LinkRoute:
    """A layer-2 dissector's selection, precomputed for the vectorized masks."""

    index: int
    ethertypes: npt.NDArray[np.bool_]
    """Lookup table over all 65536 EtherTypes: True for the ones the dissector takes."""
    snap: npt.NDArray[np.uint64]
    narrows: bool
    """The dissector overrides ``match_frames``."""
    session: _Session | None = None


def _snap_key(oui: int, pid: int) -> int:
    return ((oui & 0xFFFFFF) << 16) | (pid & 0xFFFF)


def _address(row: npt.NDArray[np.uint8], version: int) -> str:
    raw = row.tobytes()
    return str(ipaddress.IPv4Address(raw[12:])) if version == 4 else str(ipaddress.IPv6Address(raw))


def _declared_framing(cls: type[Dissector]) -> LengthFraming | None:
    """``cls.framing``, unless a class below the one that declared it overrides ``frame`` (the
    declaration would then describe someone else's framing)."""
    framing = cls.framing
    if framing is None:
        return None
    owner = next(k for k in cls.__mro__ if "framing" in vars(k))
    framer = next(k for k in cls.__mro__ if "frame" in vars(k))
    return framing if issubclass(owner, framer) else None


class ProtocolEngine:
    """Drives the registered dissectors over decoded batches; events go to ``emit``."""

    def __init__(
        self,
        registry: Registry,
        emit: Callable[[Event], None],
        weird: WeirdLog | None = None,
        settings: ProtocolSettings | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings or ProtocolSettings()
        self.weird = weird if weird is not None else WeirdLog()
        self._emit = emit
        self._dissectors: list[type[Dissector]] = [entry.dissector for entry in registry]
        self._flow_proto = np.full(0, UNKNOWN, dtype=np.int16)
        self._tries = np.zeros(0, dtype=np.uint8)
        self._sessions: dict[int, _Session] = {}
        self._reassembler = TcpReassembler(weird=self.weird)
        self._logged_exceptions: set[str] = set()
        self._heads: dict[int, tuple[bytearray, bytearray]] = {}
        self._pending_info: dict[int, FlowInfo] = {}
        self.flows_by_protocol: dict[str, int] = {}
        self.pdus_by_protocol: dict[str, int] = {}
        self.frames_by_protocol: dict[str, int] = {}
        """Layer-2 frames handed to each ``Transport.ETHERNET`` dissector."""
        self._links: list[_LinkRoute] = []
        for index, cls in enumerate(self._dissectors):
            if Transport.ETHERNET not in cls.transports:
                continue
            table = np.zeros(1 << 16, dtype=np.bool_)
            types = [
                t for t in cls.ethertypes if MAX_8023_LENGTH < t <= 0xFFFF and t not in NOT_LINK_ETHERTYPES
            ]
            table[types] = True
            snaps = np.array(sorted(_snap_key(oui, pid) for oui, pid in cls.snap), dtype=np.uint64)
            narrows = inspect.getattr_static(cls, "match_frames") is not _BASE_MATCH_FRAMES
            self._links.append(_LinkRoute(index, table, snaps, narrows))
        self._link_types = np.zeros(1 << 16, dtype=np.bool_)
        for route in self._links:
            self._link_types |= route.ethertypes
        all_snaps = {int(k) for r in self._links for k in r.snap.tolist()}
        self._link_snaps = np.array(sorted(all_snaps), dtype=np.uint64)
        self._link_failures: dict[tuple[int, int], int] = {}
        self._fast_udp = [
            index
            for index, cls in enumerate(self._dissectors)
            if Transport.UDP in cls.transports
            and inspect.getattr_static(cls, "parse_batch") is not _BASE_PARSE_BATCH
        ]
        """Dissectors with a columnar fast path for UDP datagrams."""
        self._detached: dict[int, int] = {}
        """Flows whose dissector was detached while the current batch's datagrams were parsed, with the
        position of the datagram that detached it."""
        self._fast_tcp = frozenset(
            index
            for index, cls in enumerate(self._dissectors)
            if Transport.TCP in cls.transports
            and inspect.getattr_static(cls, "parse_pdu_batch") is not _BASE_PARSE_PDU_BATCH
        )
        """Dissectors with a columnar fast path for TCP PDUs."""
        self._framing: dict[int, LengthFraming] = {
            index: framing
            for index in self._fast_tcp
            if (framing := _declared_framing(self._dissectors[index])) is not None
        }
        """Fast-path dissectors whose ``frame`` is declared (``Dissector.framing``): their in-order
        segments are cut into PDUs with numpy across the batch."""
        self._queue: list[_Queued | _Block] = []
        self._flushing = False
        self._collector: _Collector | None = None
        self._position = 0
        """Position of the datagram being parsed in the current batch's UDP rows."""
        self._takes_tables = callable(getattr(emit, "write_table", None))
        """The output takes Arrow tables (an ``EventWriter``): events keep their order within each log.
        Otherwise (a plain callable) TCP PDUs are parsed one by one, so that the order of all events
        together is that of the per-PDU path."""

    # ------------------------------------------------------------------ public API

    def process(self, batch: PacketBatch, decoded: DecodedBatch, assignment: FlowAssignment) -> None:
        if not self._dissectors or decoded.n == 0:
            return
        if self._links:
            self._feed_link(batch, decoded)
        flow_id = assignment.flow_id
        self._grow(int(flow_id.max(initial=-1)) + 1)
        transport_ok = (decoded.ip_proto == PROTO_TCP) | (decoded.ip_proto == PROTO_UDP)
        payload = (flow_id >= 0) & transport_ok & (decoded.payload_len > 0) & (decoded.l4_offset >= 0)
        if not payload.any():
            self._feed_tcp(batch, decoded, assignment)
            return
        self._recognise(batch, decoded, assignment, payload & (decoded.ip_proto == PROTO_UDP))
        self._feed_udp(batch, decoded, assignment, payload)
        self._feed_tcp(batch, decoded, assignment)

    def services(self, flow_ids: npt.NDArray[np.int64]) -> pa.Array:
        """The protocol each flow was recognised as (dissector name), null where none was.

        Vectorized over the flows of a finished-flows table; the flows.parquet ``service`` column.
        """
        ids = np.asarray(flow_ids, dtype=np.int64)
        known = (ids >= 0) & (ids < self._flow_proto.shape[0])
        index = np.full(ids.shape[0], NONE, dtype=np.int16)
        index[known] = self._flow_proto[ids[known]]
        names = pa.array([cls.name for cls in self._dissectors] + [None], type=pa.string())
        slot = np.where(index >= 0, index, len(self._dissectors)).astype(np.int32)
        return names.take(pa.array(slot))

    def close_flows(self, flow_ids: Iterable[int]) -> None:
        """Flows the flow table finished: deliver what is left and let dissectors close."""
        for flow in flow_ids:
            flow = int(flow)
            if flow in self._sessions or flow in self._pending_info:
                self._deliver(self._reassembler.close(flow))
            self._forget_pending(flow)
            self._close(flow)

    def finish(self) -> None:
        """End of input: flush every stream and close every session."""
        self._deliver(self._reassembler.flush())
        for flow in list(self._sessions):
            self._close(flow)
        for route in self._links:
            session, route.session = route.session, None
            if session is not None and session.active:
                session.ctx.link = None
                try:
                    session.dissector.close(session.ctx)
                except Exception as exc:
                    self._exception(session.dissector.name, exc)

    # ------------------------------------------------------------------ layer 2

    def _feed_link(self, batch: PacketBatch, decoded: DecodedBatch) -> None:
        """Hand non-IP frames to the layer-2 dissectors whose EtherType or LLC/SNAP id they carry."""
        etype = decoded.ethertype
        usable = (decoded.l3_offset >= 0) & (decoded.ip_version == 0)
        by_type: npt.NDArray[np.bool_] = self._link_types[etype] & usable
        snap_key = np.zeros(decoded.n, dtype=np.uint64)
        by_snap = np.zeros(decoded.n, dtype=np.bool_)
        if self._link_snaps.shape[0]:
            by_snap = self._snap_keys(batch, decoded, usable, snap_key)
        candidates = np.flatnonzero(by_type | by_snap)
        if candidates.shape[0] == 0:
            return
        start = batch.offsets[candidates] + decoded.l3_offset[candidates].astype(np.int64)
        length = batch.caplen[candidates].astype(np.int64) - decoded.l3_offset[candidates]
        cand_snap = by_snap[candidates]
        if cand_snap.any():
            # 802.3: the length field bounds the LLC data (the rest is padding); SNAP header skipped.
            ether = (batch.linktype[candidates] == linktypes.ETHERNET) & cand_snap
            ether &= etype[candidates] <= MAX_8023_LENGTH
            length = np.where(ether, np.minimum(length, etype[candidates].astype(np.int64)), length)
            start = np.where(cand_snap, start + LLC_SNAP_HEADER, start)
            length = np.where(cand_snap, length - LLC_SNAP_HEADER, length)
        length = np.maximum(length, 0)
        cand_type = etype[candidates]
        cand_key = snap_key[candidates]
        claimed = np.zeros(candidates.shape[0], dtype=np.bool_)
        rows_parts: list[npt.NDArray[np.intp]] = []
        route_parts: list[npt.NDArray[np.intp]] = []
        for number, route in enumerate(self._links):
            want = route.ethertypes[cand_type] & ~cand_snap
            if route.snap.shape[0] and cand_snap.any():
                want |= np.isin(cand_key, route.snap) & cand_snap
            picked = np.flatnonzero(want & ~claimed)
            if picked.shape[0] == 0:
                continue
            cls = self._dissectors[route.index]
            try:
                if route.narrows:
                    heads = self._heads_of(batch.buffer, start[picked], length[picked])
                    mask = cls.match_frames(heads, length[picked].astype(np.int32))
                else:
                    mask = None
                if mask is not None:
                    mask = np.asarray(mask, dtype=np.bool_)
                    if mask.shape != picked.shape:
                        raise ValueError(f"match_frames returned shape {mask.shape}, expected {picked.shape}")
                    picked = picked[mask]
            except Exception as exc:  # a selection bug must not stop the run
                self._exception(cls.name, exc)
                continue
            claimed[picked] = True
            rows_parts.append(picked)
            route_parts.append(np.full(picked.shape[0], number, dtype=np.intp))
        if not rows_parts:
            return
        picked = np.concatenate(rows_parts)
        routes = np.concatenate(route_parts)
        order = np.argsort(picked, kind="stable")  # capture order across dissectors
        picked, routes = picked[order], routes[order]
        rows = candidates[picked]
        self._parse_frames(batch, decoded, rows, start[picked], length[picked], cand_snap[picked], routes)

    @staticmethod
    def _snap_keys(
        batch: PacketBatch,
        decoded: DecodedBatch,
        usable: npt.NDArray[np.bool_],
        keys: npt.NDArray[np.uint64],
    ) -> npt.NDArray[np.bool_]:
        """802.3 frames with an LLC/SNAP header: sets ``keys`` (OUI << 16 | protocol id); returns the mask."""
        etype = decoded.ethertype
        linktype = batch.linktype
        ether = (linktype == linktypes.ETHERNET) & (
            ((etype <= MAX_8023_LENGTH) & (etype >= LLC_SNAP_HEADER)) | (etype == ETH_LLC_JUMBO)
        )
        cooked = ((linktype == linktypes.LINUX_SLL) | (linktype == linktypes.LINUX_SLL2)) & (
            etype == SLL_8022
        )
        llc: npt.NDArray[np.bool_] = usable & (ether | cooked)
        rows = np.flatnonzero(llc)
        if rows.shape[0] == 0:
            return llc
        start = batch.offsets[rows] + decoded.l3_offset[rows].astype(np.int64)
        avail = batch.caplen[rows].astype(np.int64) - decoded.l3_offset[rows]
        head = ProtocolEngine._heads_of(batch.buffer, start, avail, LLC_SNAP_HEADER)
        snap = (head[:, 0] == 0xAA) & (head[:, 1] == 0xAA) & (head[:, 2] == 0x03) & (avail >= LLC_SNAP_HEADER)
        h = head.astype(np.uint64)
        key = (h[:, 3] << 32) | (h[:, 4] << 24) | (h[:, 5] << 16) | (h[:, 6] << 8) | h[:, 7]
        keys[rows] = key
        llc[rows] = snap
        return llc

    @staticmethod
    def _heads_of(
        buffer: npt.NDArray[np.uint8],
        start: npt.NDArray[np.int64],
        length: npt.NDArray[np.int64],
        width: int = L2_HEAD_BYTES,
    ) -> npt.NDArray[np.uint8]:
        """The first ``width`` bytes at each ``start`` (at most ``length`` of them), zero-padded."""
        m = start.shape[0]
        heads = np.zeros((m, width), dtype=np.uint8)
        if m == 0 or buffer.shape[0] == 0:
            return heads
        padded = buffer
        if buffer.shape[0] < width or int(start.max()) > buffer.shape[0] - width:
            padded = np.concatenate([buffer, np.zeros(width, dtype=np.uint8)])
        windows = np.lib.stride_tricks.sliding_window_view(padded, width)
        heads[:] = windows[np.clip(start, 0, windows.shape[0] - 1)]
        heads[np.arange(width)[None, :] >= length[:, None]] = 0
        return heads

    def _parse_frames(
        self,
        batch: PacketBatch,
        decoded: DecodedBatch,
        rows: npt.NDArray[np.intp],
        start: npt.NDArray[np.int64],
        length: npt.NDArray[np.int64],
        is_snap: npt.NDArray[np.bool_],
        routes: npt.NDArray[np.intp],
    ) -> None:
        has_dst = batch.linktype[rows] == linktypes.ETHERNET
        has_src = has_dst | (decoded.eth_src[rows] != 0)
        src = decoded.eth_src[rows].tolist()
        dst = decoded.eth_dst[rows].tolist()
        etypes = decoded.ethertype[rows].tolist()
        vlans = decoded.vlan[rows].tolist()
        inner = decoded.vlan_inner[rows].tolist()
        times = batch.ts_ns[rows].tolist()
        buffer = batch.buffer
        for i, (begin, size, snap, number) in enumerate(
            zip(start.tolist(), length.tolist(), is_snap.tolist(), routes.tolist(), strict=True)
        ):
            route = self._links[number]
            sender = int(src[i])
            failures = self._link_failures.get((number, sender), 0)
            if failures >= self.settings.max_exceptions_per_flow:
                continue
            session = route.session or self._link_session(route)
            data = buffer[begin : begin + size].tobytes()
            snap_id = None
            if snap:
                raw = buffer[begin - LLC_SNAP_HEADER + 3 : begin].tobytes()
                snap_id = (int.from_bytes(raw[:3], "big"), int.from_bytes(raw[3:5], "big"))
            ctx = session.ctx
            ctx.link = LinkInfo(
                src_mac=mac_str(sender) if has_src[i] else "",
                dst_mac=mac_str(int(dst[i])) if has_dst[i] else "",
                vlan=int(vlans[i]),
                vlan_inner=int(inner[i]),
                ethertype=int(etypes[i]),
                snap=snap_id,
            )
            ctx.ts = int(times[i])
            ctx.is_orig = True
            name = session.dissector.name
            self.frames_by_protocol[name] = self.frames_by_protocol.get(name, 0) + 1
            self.pdus_by_protocol[name] = self.pdus_by_protocol.get(name, 0) + 1
            try:
                session.dissector.parse(data, ctx)
            except Exception as exc:
                self._exception(name, exc)
                if len(self._link_failures) >= MAX_L2_FAILING_SENDERS:
                    self._link_failures.clear()
                self._link_failures[(number, sender)] = failures + 1

    def _link_session(self, route: _LinkRoute) -> _Session:
        cls = self._dissectors[route.index]
        info = FlowInfo(NO_FLOW, Transport.ETHERNET, "", 0, "", 0)
        ctx = PduContext(info, cls.name, self._emit, self._report_weird)
        route.session = _Session(cls(info), ctx, (bytearray(), bytearray()))
        return route.session

    # ------------------------------------------------------------------ recognition

    def _grow(self, size: int) -> None:
        if size <= self._flow_proto.shape[0]:
            return
        new = max(size, 2 * self._flow_proto.shape[0], 1024)
        proto = np.full(new, UNKNOWN, dtype=np.int16)
        proto[: self._flow_proto.shape[0]] = self._flow_proto
        tries = np.zeros(new, dtype=np.uint8)
        tries[: self._tries.shape[0]] = self._tries
        self._flow_proto, self._tries = proto, tries

    def _recognise(
        self,
        batch: PacketBatch,
        decoded: DecodedBatch,
        assignment: FlowAssignment,
        payload: npt.NDArray[np.bool_],
    ) -> None:
        flow_id = assignment.flow_id
        unknown = payload.copy()
        unknown[payload] = self._flow_proto[flow_id[payload]] == UNKNOWN
        rows = np.flatnonzero(unknown)
        if rows.shape[0] == 0:
            return
        # Keep each flow's first few payload packets only (rank within flow, vectorized).
        flows = flow_id[rows]
        order = np.argsort(flows, kind="stable")
        sorted_flows = flows[order]
        starts = np.r_[True, sorted_flows[1:] != sorted_flows[:-1]]
        group_start = np.maximum.accumulate(np.where(starts, np.arange(order.shape[0]), 0))
        rank = np.empty_like(order)
        rank[order] = np.arange(order.shape[0]) - group_start
        budget = self.settings.max_recognition_packets - self._tries[flows].astype(np.int64)
        rows = rows[rank < budget]
        for row in rows.tolist():
            flow = int(flow_id[row])
            if self._flow_proto[flow] != UNKNOWN:
                continue
            self._classify(flow, row, batch, decoded, assignment)

    def _classify(
        self, flow: int, row: int, batch: PacketBatch, decoded: DecodedBatch, assignment: FlowAssignment
    ) -> None:
        """UDP: recognise a flow from one datagram."""
        start = int(batch.offsets[row]) + int(decoded.payload_offset[row])
        data = batch.buffer[start : start + int(decoded.payload_len[row])].tobytes()
        sport, dport = int(decoded.sport[row]), int(decoded.dport[row])
        index = self._ask_recognisers(flow, data, Transport.UDP, sport, dport)
        if index is not None:
            self._attach(flow, index, self._flow_info(flow, row, decoded, assignment, Transport.UDP))

    def _ask_recognisers(
        self, flow: int, data: bytes, transport: Transport, sport: int, dport: int
    ) -> int | None:
        """Index of the dissector that says YES; otherwise counts a try and may give the flow up."""
        candidates = [(index, d) for index, d in enumerate(self._dissectors) if transport in d.transports]
        candidates.sort(key=lambda item: not ({sport, dport} & item[1].ports))
        maybe = False
        for index, dissector in candidates:
            try:
                verdict = dissector.recognize(data, transport, sport, dport)
            except Exception as exc:  # a recogniser bug must not stop the run
                self._exception(dissector.name, exc)
                continue
            if verdict == Verdict.YES:
                return index
            maybe = maybe or verdict == Verdict.MAYBE
        self._tries[flow] += 1
        if not maybe or self._tries[flow] >= self.settings.max_recognition_packets:
            self._flow_proto[flow] = NONE
        return None

    @staticmethod
    def _flow_info(
        flow: int, row: int, decoded: DecodedBatch, assignment: FlowAssignment, transport: Transport
    ) -> FlowInfo:
        version = int(decoded.ip_version[row])
        src, dst = _address(decoded.src_ip[row], version), _address(decoded.dst_ip[row], version)
        sport, dport = int(decoded.sport[row]), int(decoded.dport[row])
        if assignment.direction[row] == 0:
            return FlowInfo(flow, transport, src, sport, dst, dport)
        return FlowInfo(flow, transport, dst, dport, src, sport)

    def _attach(self, flow: int, index: int, info: FlowInfo) -> _Session:
        cls = self._dissectors[index]
        ctx = PduContext(info, cls.name, self._route_event, self._report_weird)
        self._flow_proto[flow] = index
        session = self._sessions[flow] = _Session(cls(info), ctx, (bytearray(), bytearray()), index=index)
        session.queued = (
            info.transport == Transport.TCP
            and index in self._fast_tcp
            and self.settings.fast_path
            and self._takes_tables
        )
        self.flows_by_protocol[cls.name] = self.flows_by_protocol.get(cls.name, 0) + 1
        return session

    # ------------------------------------------------------------------ dissection

    def _feed_udp(
        self,
        batch: PacketBatch,
        decoded: DecodedBatch,
        assignment: FlowAssignment,
        payload: npt.NDArray[np.bool_],
    ) -> None:
        udp = payload & (decoded.ip_proto == PROTO_UDP)
        udp[udp] = self._flow_proto[assignment.flow_id[udp]] >= 0
        rows = np.flatnonzero(udp)
        if rows.shape[0] == 0:
            return
        start = batch.offsets[rows].astype(np.int64) + decoded.payload_offset[rows]
        length = decoded.payload_len[rows].astype(np.int64)
        flow_ids = assignment.flow_id[rows].astype(np.int64)
        orig = assignment.direction[rows] == 0
        ts = batch.ts_ns[rows].astype(np.int64)
        slow = np.arange(rows.shape[0])
        blocks: dict[int, list[_FastBlock]] = {}
        if self._fast_udp and self.settings.fast_path:
            columns = Datagrams(batch.buffer, start, length, ts, flow_ids, orig)
            handled = self._parse_batches(columns, self._flow_proto[flow_ids], blocks)
            if handled is not None:
                slow = np.flatnonzero(~handled)
        self._detached.clear()
        starts, lengths, flows = start[slow].tolist(), length[slow].tolist(), flow_ids[slow].tolist()
        origs, times, positions = orig[slow].tolist(), ts[slow].tolist(), slow.tolist()
        buffer = batch.buffer
        # With an EventWriter, parse()'s events of fast-path protocols are merged with the fast path's
        # tables at the end (one table per event type); otherwise blocks are emitted piece by piece.
        merging = bool(blocks) and self._takes_tables
        collectors: dict[int, _Collector] = {}
        for i, flow in enumerate(flows):
            session = self._sessions.get(flow)
            if session is None or not session.active:
                continue
            data = buffer[starts[i] : starts[i] + lengths[i]].tobytes()
            if blocks:
                index = int(self._flow_proto[flow])
                dissector_blocks = blocks.get(index)
                if dissector_blocks:
                    self._position = position = positions[i]
                    if merging:
                        collector = self._collector = collectors.setdefault(index, _Collector())
                        collector.position = position
                        try:
                            self._parse(flow, session, data, origs[i], times[i])
                        finally:
                            self._collector = None
                        continue
                    for block in dissector_blocks:
                        self._emit_block(block, position)
            self._parse(flow, session, data, origs[i], times[i])
        for index, dissector_blocks in blocks.items():
            if not merging:
                for block in dissector_blocks:
                    self._emit_block(block, None)
                continue
            merged: dict[type[Event], list[tuple[npt.NDArray[np.intp], pa.Table]]] = {}
            for block in dissector_blocks:
                keep = self._not_detached(block)
                if block.table is None or block.event_type is None:
                    count = block.positions.shape[0] if keep is None else int(keep.sum())
                    self.pdus_by_protocol[block.name] = self.pdus_by_protocol.get(block.name, 0) + count
                    continue
                table, where = block.table, block.positions
                if keep is not None:
                    table, where = table.filter(pa.array(keep)), where[keep]
                if table.num_rows:
                    merged.setdefault(block.event_type, []).append((where, table))
            parsed: dict[type[Event], list[tuple[int, Event]]] = {}
            for position, event in collectors[index].parsed if index in collectors else ():
                parsed.setdefault(type(event), []).append((position, event))
            self._emit_merged(merged, parsed)
        self._detached.clear()

    def _not_detached(self, block: _FastBlock) -> npt.NDArray[np.bool_] | None:
        """Rows of a fast-path block whose flow was not detached before them (None: all of them)."""
        if not self._detached:
            return None
        flows = np.fromiter(self._detached.keys(), dtype=np.int64, count=len(self._detached))
        at = np.fromiter(self._detached.values(), dtype=np.int64, count=len(self._detached))
        order = np.argsort(flows)
        flows, at = flows[order], at[order]
        slot = np.clip(np.searchsorted(flows, block.flows), 0, flows.shape[0] - 1)
        detached = (flows[slot] == block.flows) & (block.positions > at[slot])
        keep: npt.NDArray[np.bool_] = ~detached
        return keep

    def _parse_batches(
        self, datagrams: Datagrams, proto: npt.NDArray[np.int16], blocks: dict[int, list[_FastBlock]]
    ) -> npt.NDArray[np.bool_] | None:
        """Run the columnar fast paths (``parse_batch``); returns the datagrams they handled."""
        handled_all: npt.NDArray[np.bool_] | None = None
        for index in self._fast_udp:
            sel = np.flatnonzero(proto == index)
            if sel.shape[0] == 0:
                continue
            flows, inverse = unique_ids(datagrams.flow_id[sel])
            infos: list[FlowInfo] = []
            active = np.zeros(flows.shape[0], dtype=np.bool_)
            for k, flow in enumerate(flows.tolist()):
                session = self._sessions.get(flow)
                if session is not None and session.active:
                    active[k] = True
                    infos.append(session.ctx.flow)
                else:
                    infos.append(FlowInfo(flow, Transport.UDP, "", 0, "", 0))
            if not active.all():
                keep = active[inverse]
                sel, inverse = sel[keep], inverse[keep]
                if sel.shape[0] == 0:
                    continue
            cls = self._dissectors[index]
            part = Datagrams(
                datagrams.buffer,
                datagrams.start[sel],
                datagrams.length[sel],
                datagrams.ts[sel],
                datagrams.flow_id[sel],
                datagrams.is_orig[sel],
            )
            try:
                result = cls.parse_batch(part)
                if result is None:
                    continue
                handled = np.asarray(result.handled, dtype=np.bool_)
                if handled.shape != sel.shape:
                    raise ValueError(
                        f"parse_batch handled mask of shape {handled.shape}, expected {sel.shape}"
                    )
                tables: list[tuple[npt.NDArray[np.intp], pa.Table, type[Event]]] = []
                for events in result.events:
                    rows = np.asarray(events.rows, dtype=np.intp)
                    if rows.shape[0] == 0:
                        continue
                    if not handled[rows].all():
                        raise ValueError("parse_batch made events of datagrams it did not handle")
                    table = self._event_table(events, rows, part, inverse, infos)
                    tables.append((sel[rows], table, events.event_type))
            except Exception as exc:  # a fast-path bug must not stop the run: parse() takes over
                self._exception(cls.name, exc)
                continue
            positions = sel[handled]
            block_list = blocks.setdefault(index, [])
            block_list.append(_FastBlock(cls.name, positions, datagrams.flow_id[positions]))
            block_list.extend(
                _FastBlock(cls.name, pos, datagrams.flow_id[pos], table, event_type)
                for pos, table, event_type in tables
            )
            if handled_all is None:
                handled_all = np.zeros(len(datagrams), dtype=np.bool_)
            handled_all[positions] = True
        return handled_all

    def _event_table(
        self,
        events: EventColumns,
        rows: npt.NDArray[np.intp],
        datagrams: Datagrams,
        inverse: npt.NDArray[np.intp],
        infos: list[FlowInfo],
    ) -> pa.Table:
        """The Arrow table of fast-path events: the engine's base fields plus the dissector's columns."""
        event_type = events.event_type
        schema = _schema(event_type)
        if rows.shape[0] > 1 and bool((rows[1:] < rows[:-1]).any()):
            raise ValueError("parse_batch event rows are not in datagram order")
        own = {name for name in schema.names if name not in _BASE_FIELDS}
        if set(events.columns) != own:
            raise ValueError(f"parse_batch columns {sorted(events.columns)} for {event_type.__name__}")
        flow_index = inverse[rows]
        base: dict[str, object] = {
            "ts": datagrams.ts[rows],
            "flow_id": datagrams.flow_id[rows],
            "orig_h": pa.array([i.orig_h for i in infos], pa.string()).take(flow_index),
            "orig_p": np.array([i.orig_p for i in infos], dtype=np.int64)[flow_index],
            "resp_h": pa.array([i.resp_h for i in infos], pa.string()).take(flow_index),
            "resp_p": np.array([i.resp_p for i in infos], dtype=np.int64)[flow_index],
            "is_orig": datagrams.is_orig[rows],
        }
        arrays = []
        for f in schema:
            value = base[f.name] if f.name in base else events.columns[f.name]
            array = value if isinstance(value, pa.Array) else pa.array(value, type=f.type)
            if array.type != f.type:
                array = array.cast(f.type)
            if len(array) != rows.shape[0]:
                raise ValueError(f"parse_batch column {f.name} has {len(array)} values, not {rows.shape[0]}")
            arrays.append(array)
        return pa.Table.from_arrays(arrays, schema=schema)

    def _emit_block(self, block: _FastBlock, before: int | None) -> None:
        """Emit a fast-path block's events (or count its PDUs) up to datagram position ``before``."""
        end = block.positions.shape[0] if before is None else int(np.searchsorted(block.positions, before))
        if end <= block.done:
            return
        begin, block.done = block.done, end
        keep: npt.NDArray[np.bool_] | None = None
        if self._detached:
            keep = ~np.isin(block.flows[begin:end], list(self._detached))
        if block.table is None:
            count = end - begin if keep is None else int(keep.sum())
            self.pdus_by_protocol[block.name] = self.pdus_by_protocol.get(block.name, 0) + count
            return
        table = block.table.slice(begin, end - begin)
        if keep is not None:
            table = table.filter(pa.array(keep))
        if table.num_rows and block.event_type is not None:
            self._emit_table(table, block.event_type)

    def _emit_table(self, table: pa.Table, event_type: type[Event]) -> None:
        write = getattr(self._emit, "write_table", None)
        if write is not None:
            write(event_type, table)
            return
        for event in events_of_table(event_type, table):
            self._emit(event)

    def _feed_tcp(self, batch: PacketBatch, decoded: DecodedBatch, assignment: FlowAssignment) -> None:
        """Reassemble TCP for classified flows and for flows still being recognised."""
        wanted = self._flow_proto != NONE
        tcp = (assignment.flow_id >= 0) & (decoded.ip_proto == PROTO_TCP)
        if not tcp.any():
            return
        rows = np.flatnonzero(tcp)
        rows = rows[self._flow_proto[assignment.flow_id[rows]] == UNKNOWN]
        new_flows, first = np.unique(assignment.flow_id[rows], return_index=True)
        for flow, row in zip(new_flows.tolist(), rows[first].tolist(), strict=True):
            if flow not in self._pending_info:
                self._pending_info[flow] = self._flow_info(flow, row, decoded, assignment, Transport.TCP)
        self._deliver_stream(self._reassembler.reassemble_columns(batch, decoded, assignment, wanted))

    def _deliver_stream(self, stream: StreamBatch) -> None:
        """Deliver one batch's TCP streams: the PDUs of the segments :meth:`_columnar` cuts with numpy
        are queued as blocks of columns, everything else goes chunk by chunk through ``_deliver``'s
        path, in delivery order (so the queue, and every output, has the order of the per-PDU path)."""
        m = stream.rows.shape[0]
        if m == 0:
            return
        columnar = np.zeros(m, dtype=np.bool_)
        block: _Block | None = None
        pdu_segment = np.zeros(0, dtype=np.intp)
        if self._framing and self.settings.fast_path and self._takes_tables and stream.whole.any():
            found = self._columnar(stream)
            if found is not None:
                columnar, block, pdu_segment = found
        limit = self.settings.max_pdu_buffer_bytes
        chunks, at = stream.chunks, stream.chunk_segment
        rest = np.flatnonzero(stream.whole & ~columnar).tolist()
        done = 0  # PDUs of the block queued so far
        k = r = 0
        while k < len(chunks) or r < len(rest):
            if r < len(rest) and (k >= len(chunks) or rest[r] <= at[k]):
                segment, chunk = rest[r], stream.chunk(rest[r])
                r += 1
            else:
                segment, chunk = at[k], chunks[k]
                k += 1
            if block is not None:
                upto = int(np.searchsorted(pdu_segment, segment))
                if upto > done:
                    self._queue.append(_slice_block(block, done, upto))
                    done = upto
            self._deliver_chunk(chunk, limit)
        if block is not None and done < pdu_segment.shape[0]:
            self._queue.append(_slice_block(block, done, pdu_segment.shape[0]))
        self._flush_queue()

    def _columnar(
        self, stream: StreamBatch
    ) -> tuple[npt.NDArray[np.bool_], _Block, npt.NDArray[np.intp]] | None:
        """The segments whose PDUs are cut with numpy: delivered whole, on a flow whose (active, queued)
        session's dissector declares its framing, exactly a run of valid whole PDUs, with nothing
        buffered in their direction: every earlier segment of the direction in this batch is one too,
        and the buffer was empty when the batch started. Returns the mask, the PDUs, and the segment
        of each PDU."""
        flows, inverse = unique_ids(stream.flow)
        count = flows.shape[0]
        dissector = np.full(count, -1, dtype=np.intp)
        empty = np.zeros((count, 2), dtype=np.bool_)
        sessions: list[_Session] = []
        slot_of = np.full(count, -1, dtype=np.intp)
        for k, flow in enumerate(flows.tolist()):
            session = self._sessions.get(flow)
            if (
                session is None
                or not session.active
                or not session.queued
                or session.index not in self._framing
            ):
                continue
            dissector[k] = session.index
            empty[k, 0] = not session.buffers[0]
            empty[k, 1] = not session.buffers[1]
            slot_of[k] = len(sessions)
            sessions.append(session)
        if not sessions:
            return None
        index = dissector[inverse]
        good = stream.whole & (index >= 0) & empty[inverse, stream.direction]
        pdu_parts: list[tuple[npt.NDArray[np.intp], npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
        for number in np.unique(index[good]).tolist():
            sel = np.flatnonzero(good & (index == number))
            whole, pdu_range, pdu_start, pdu_length = self._framing[number].cut(
                stream.buffer, stream.start[sel], stream.length[sel]
            )
            good[sel[~whole]] = False
            pdu_parts.append((sel[pdu_range], pdu_start, pdu_length))
        # Nothing buffered: a segment counts only when every earlier one of its direction does.
        key = stream.flow * 2 + stream.direction
        order = np.argsort(key, kind="stable")
        bad = np.cumsum(~good[order])
        sorted_key = key[order]
        group_start = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
        before = np.repeat(np.r_[0, bad][group_start], np.diff(np.r_[group_start, order.shape[0]]))
        columnar = np.zeros(order.shape[0], dtype=np.bool_)
        columnar[order] = (bad - before) == 0
        if not columnar.any() or not pdu_parts:
            return None
        pdu_segment = np.concatenate([p[0] for p in pdu_parts])
        pdu_start = np.concatenate([p[1] for p in pdu_parts])
        pdu_length = np.concatenate([p[2] for p in pdu_parts])
        keep = columnar[pdu_segment]
        pdu_segment, pdu_start, pdu_length = pdu_segment[keep], pdu_start[keep], pdu_length[keep]
        pdu_order = np.lexsort((pdu_start, pdu_segment))
        pdu_segment, pdu_start, pdu_length = (
            pdu_segment[pdu_order],
            pdu_start[pdu_order],
            pdu_length[pdu_order],
        )
        block = _Block(
            stream.buffer,
            index[pdu_segment],
            pdu_start,
            pdu_length,
            stream.ts[pdu_segment],
            stream.flow[pdu_segment],
            stream.direction[pdu_segment] == 0,
            slot_of[inverse[pdu_segment]],
            sessions,
        )
        return columnar, block, pdu_segment

    def _recognise_stream(self, chunk: StreamChunk) -> _Session | None:
        """TCP: recognise a flow from the first in-order bytes of its stream (either direction)."""
        flow = chunk.flow_id
        heads = self._heads.setdefault(flow, (bytearray(), bytearray()))
        heads[chunk.direction].extend(chunk.data)
        info = self._pending_info.get(flow)
        if info is None:
            return None
        head = bytes(heads[chunk.direction])
        sport, dport = (info.orig_p, info.resp_p) if chunk.direction == 0 else (info.resp_p, info.orig_p)
        index = self._ask_recognisers(flow, head, Transport.TCP, sport, dport)
        if index is None:
            if self._flow_proto[flow] == NONE:
                self._forget_pending(flow)
                self._reassembler.close(flow)
            return None
        session = self._attach(flow, index, info)
        # The bytes seen so far (both directions) are the start of the streams: hand them over.
        for direction in (0, 1):
            session.buffers[direction].extend(heads[direction])
        self._forget_pending(flow)
        return session

    def _forget_pending(self, flow: int) -> None:
        self._heads.pop(flow, None)
        self._pending_info.pop(flow, None)

    def _deliver(self, chunks: list[StreamChunk]) -> None:
        limit = self.settings.max_pdu_buffer_bytes
        for chunk in chunks:
            self._deliver_chunk(chunk, limit)
        self._flush_queue()

    def _deliver_chunk(self, chunk: StreamChunk, limit: int) -> None:
        session = self._sessions.get(chunk.flow_id)
        if session is None:
            if self._flow_proto[chunk.flow_id] != UNKNOWN or not chunk.data:
                return
            session = self._recognise_stream(chunk)
            if session is None:
                return
            chunk = StreamChunk(chunk.flow_id, chunk.direction, chunk.offset, b"", chunk.ts_ns)
            self._frame_and_parse(session, chunk, limit)
            other = StreamChunk(chunk.flow_id, 1 - chunk.direction, 0, b"", chunk.ts_ns)
            self._frame_and_parse(session, other, limit)
            return
        if not session.active:
            return
        self._frame_and_parse(session, chunk, limit)

    def _frame_and_parse(self, session: _Session, chunk: StreamChunk, limit: int) -> None:
        buf = session.buffers[chunk.direction]
        is_orig = chunk.direction == 0
        if not buf:
            # Common case: nothing buffered, and the chunk holds whole PDUs: no copies into the buffer.
            data = chunk.data
            while data and session.active:
                try:
                    size = session.dissector.frame(data, is_orig)
                except Exception as exc:
                    buf += data
                    self._failed(chunk.flow_id, session, exc)
                    return
                if size == 0:
                    if len(data) > limit:
                        self._weird(session, is_orig, chunk.ts_ns, "pdu_too_large", f"{len(data)} bytes")
                    else:
                        buf += data
                    return
                if size < 0 or size > len(data):
                    self._weird(
                        session, is_orig, chunk.ts_ns, "unframeable_data", f"{len(data)} bytes dropped"
                    )
                    return
                pdu = data if size == len(data) else data[:size]
                data = data[size:]
                self._dispatch(chunk.flow_id, session, pdu, is_orig, chunk.ts_ns)
            buf += data
            return
        if chunk.gap_before:
            self._weird(session, is_orig, chunk.ts_ns, "pdu_lost_in_gap", "stream gap")
            buf.clear()
        buf += chunk.data
        while buf and session.active:
            try:
                size = session.dissector.frame(bytes(buf), is_orig)
            except Exception as exc:
                self._failed(chunk.flow_id, session, exc)
                break
            if size == 0:
                if len(buf) > limit:
                    self._weird(session, is_orig, chunk.ts_ns, "pdu_too_large", f"{len(buf)} bytes")
                    buf.clear()
                break
            if size < 0 or size > len(buf):
                self._weird(session, is_orig, chunk.ts_ns, "unframeable_data", f"{len(buf)} bytes dropped")
                buf.clear()
                break
            pdu = bytes(buf[:size])
            del buf[:size]
            self._dispatch(chunk.flow_id, session, pdu, is_orig, chunk.ts_ns)

    def _dispatch(self, flow: int, session: _Session, data: bytes, is_orig: bool, ts_ns: int) -> None:
        """A framed TCP PDU: parse it now, or queue it for the dissector's columnar fast path."""
        if session.queued:
            self._queue.append(_Queued(session.index, flow, session, data, is_orig, ts_ns))
        else:
            self._parse(flow, session, data, is_orig, ts_ns)

    def _flush_queue(self) -> None:
        """Dissect the queued TCP PDUs: the fast paths first, then, in stream order, their per-flow
        ``apply`` hooks and ``parse`` for the PDUs the fast paths left. Runs before anything else is
        reported (weirds, exceptions, closes), so every output keeps the order of the per-PDU path."""
        if self._flushing or not self._queue:
            return
        self._flushing = True
        queue, self._queue = self._queue, []
        try:
            self._run_queue(queue)
        finally:
            self._flushing = False

    def _run_queue(self, queue: list[_Queued | _Block]) -> None:
        pdus, sessions = self._queue_columns(queue)
        index = pdus.index
        n = index.shape[0]
        local = np.zeros(n, dtype=np.intp)  # index of each queued PDU among its dissector's PDUs
        handled = np.zeros(n, dtype=np.bool_)  # ... handled by its dissector's fast path
        batches: dict[int, _PduBatch] = {}
        wheres: dict[int, npt.NDArray[np.intp]] = {}
        for number in np.unique(index).tolist():
            where = np.flatnonzero(index == number)
            local[where] = np.arange(where.shape[0])
            batch = self._pdu_batch(number, pdus, where, sessions)
            if batch is not None:
                batches[number] = batch
                wheres[number] = where
                handled[where] = batch.result.handled
        applies = {number: batch.result.apply for number, batch in batches.items()}
        indexes, locals_, flows = index.tolist(), local.tolist(), pdus.flow.tolist()
        origs, times = pdus.is_orig.tolist(), pdus.ts.tolist()
        buffer, starts, lengths = pdus.buffer, pdus.start, pdus.length
        fast = handled.tolist()
        accepted = [False] * n
        for position, session in enumerate(sessions):
            if not session.active:
                continue
            if fast[position]:
                # As parse() would see it: close() and weirds read the time of the flow's last PDU.
                ctx = session.ctx
                ctx.ts = times[position]
                ctx.is_orig = origs[position]
                apply = applies[indexes[position]]
                try:
                    ok = True if apply is None else bool(apply(session.dissector, locals_[position]))
                except Exception as exc:
                    self._failed(flows[position], session, exc)
                    continue
                if ok:
                    accepted[position] = True
                    continue
            batch = batches.get(indexes[position])
            if batch is not None:
                # parse() it; its events are merged with the fast path's, in stream order, at the end.
                batch.collected.position = locals_[position]
                self._collector = batch.collected
            begin = int(starts[position])
            data = buffer[begin : begin + int(lengths[position])].tobytes()
            try:
                self._parse(flows[position], session, data, origs[position], times[position])
            finally:
                self._collector = None
        taken = np.array(accepted, dtype=np.bool_)
        for number, batch in batches.items():
            rows = np.flatnonzero(taken[wheres[number]])
            if rows.shape[0]:
                batch.accepted[rows] = True
                self.pdus_by_protocol[batch.name] = self.pdus_by_protocol.get(batch.name, 0) + int(
                    rows.shape[0]
                )
            self._emit_pdu_batch(batch)

    @staticmethod
    def _queue_columns(queue: list[_Queued | _Block]) -> tuple[_Block, list[_Session]]:
        """The queued PDUs as one block of columns, in queue order, with the session of each PDU. The
        batch buffer is shared when only blocks of one batch are queued; otherwise the PDUs are copied
        into a buffer of their own."""
        blocks: list[_Block] = []
        run: list[_Queued] = []
        sessions: list[_Session] = []

        def close_run() -> None:
            pdus = [item.pdu for item in run]
            count = len(run)
            length = np.fromiter(map(len, pdus), dtype=np.int64, count=count)
            start = np.zeros(count, dtype=np.int64)
            np.cumsum(length[:-1], out=start[1:])
            blocks.append(
                _Block(
                    np.frombuffer(b"".join(pdus), dtype=np.uint8),
                    np.fromiter((item.index for item in run), dtype=np.intp, count=count),
                    start,
                    length,
                    np.fromiter((item.ts_ns for item in run), dtype=np.int64, count=count),
                    np.fromiter((item.flow for item in run), dtype=np.int64, count=count),
                    np.fromiter((item.is_orig for item in run), dtype=np.bool_, count=count),
                    np.zeros(0, dtype=np.intp),
                    [],
                )
            )
            run.clear()

        for entry in queue:
            if isinstance(entry, _Queued):
                run.append(entry)
                sessions.append(entry.session)
                continue
            if run:
                close_run()
            blocks.append(entry)
            block_sessions = entry.sessions
            sessions.extend([block_sessions[k] for k in entry.slot.tolist()])
        if run:
            close_run()
        if len(blocks) == 1:
            return blocks[0], sessions
        buffer = blocks[0].buffer
        start = np.concatenate([b.start for b in blocks])
        length = np.concatenate([b.length for b in blocks])
        if any(b.buffer is not buffer for b in blocks):
            # Only the PDUs' bytes are copied (a run of _Queued PDUs, without sessions of its own, is
            # already compact), never a whole batch buffer: one after the other.
            buffer = np.concatenate(
                [
                    b.buffer if b.slot.shape[0] == 0 else compact_ranges(b.buffer, b.start, b.length)
                    for b in blocks
                ]
            )
            start = np.zeros(length.shape[0], dtype=np.int64)
            np.cumsum(length[:-1], out=start[1:])
        columns = _Block(
            buffer,
            np.concatenate([b.index for b in blocks]),
            start,
            length,
            np.concatenate([b.ts for b in blocks]),
            np.concatenate([b.flow for b in blocks]),
            np.concatenate([b.is_orig for b in blocks]),
            np.zeros(0, dtype=np.intp),
            [],
        )
        return columns, sessions

    def _route_event(self, event: Event) -> None:
        """``ctx.emit`` of flow dissectors: straight to the output, or kept for merging while the parse
        of a PDU the fast path left runs (see ``_run_queue``)."""
        collector = self._collector
        if collector is None:
            self._emit(event)
        else:
            collector.parsed.append((collector.position, event))

    def _pdu_batch(
        self, index: int, pdus: _Block, where: npt.NDArray[np.intp], sessions: list[_Session]
    ) -> _PduBatch | None:
        cls = self._dissectors[index]
        flow_ids = pdus.flow[where]
        columns = Datagrams(
            pdus.buffer, pdus.start[where], pdus.length[where], pdus.ts[where], flow_ids, pdus.is_orig[where]
        )
        _flows, inverse = unique_ids(flow_ids)
        first = np.zeros(_flows.shape[0], dtype=np.intp)
        first[inverse[::-1]] = np.arange(where.shape[0] - 1, -1, -1)
        infos = [sessions[k].ctx.flow for k in where[first].tolist()]
        try:
            result = cls.parse_pdu_batch(columns)
            if result is None:
                return None
            handled = np.asarray(result.handled, dtype=np.bool_)
            if handled.shape != where.shape:
                raise ValueError(f"parse_pdu_batch handled mask of shape {handled.shape}, not {where.shape}")
        except Exception as exc:  # a fast-path bug must not stop the run: parse() takes over
            self._exception(cls.name, exc)
            return None
        result = BatchResult(handled, result.events, result.apply, result.build)
        accepted = np.zeros(where.shape[0], dtype=np.bool_)
        return _PduBatch(cls.name, result, columns, inverse, infos, accepted)

    def _emit_pdu_batch(self, batch: _PduBatch) -> None:
        """Emit the fast path's events merged with those of the PDUs ``parse`` handled, by PDU."""
        merged: dict[type[Event], list[tuple[npt.NDArray[np.intp], pa.Table]]] = {}
        rows = np.flatnonzero(batch.accepted)
        if rows.shape[0] and batch.result.build is not None:
            try:
                for events in batch.result.build(rows):
                    event_rows = np.asarray(events.rows, dtype=np.intp)
                    if event_rows.shape[0] == 0:
                        continue
                    if not batch.accepted[event_rows].all():
                        raise ValueError("parse_pdu_batch made events of PDUs it did not handle")
                    table = self._event_table(events, event_rows, batch.pdus, batch.inverse, batch.infos)
                    merged.setdefault(events.event_type, []).append((event_rows, table))
            except Exception as exc:  # confined: the fast path's events are lost, the run goes on
                self._exception(batch.name, exc)
                merged.clear()
        parsed: dict[type[Event], list[tuple[int, Event]]] = {}
        for position, event in batch.collected.parsed:
            parsed.setdefault(type(event), []).append((position, event))
        self._emit_merged(merged, parsed)

    def _emit_merged(
        self,
        merged: dict[type[Event], list[tuple[npt.NDArray[np.intp], pa.Table]]],
        parsed: dict[type[Event], list[tuple[int, Event]]],
    ) -> None:
        """Emit a fast path's tables with the events ``parse`` made, per event type, ordered by the
        position of the datagram or PDU each row comes from."""
        for event_type, items in parsed.items():
            if event_type not in merged:
                for _position, event in items:
                    self._emit(event)
                continue
            table = events_table(event_type, [event for _position, event in items], _schema(event_type))
            merged[event_type].append((np.array([p for p, _ in items], dtype=np.intp), table))
        for event_type, parts in merged.items():
            if len(parts) == 1:
                self._emit_table(parts[0][1], event_type)
                continue
            self._emit_table(_merge_tables(parts), event_type)

    def _parse(self, flow: int, session: _Session, data: bytes, is_orig: bool, ts_ns: int) -> None:
        ctx = session.ctx
        ctx.ts = ts_ns
        ctx.is_orig = is_orig
        name = session.dissector.name
        self.pdus_by_protocol[name] = self.pdus_by_protocol.get(name, 0) + 1
        try:
            session.dissector.parse(data, ctx)
        except Exception as exc:
            self._failed(flow, session, exc)

    def _close(self, flow: int) -> None:
        self._flush_queue()
        session = self._sessions.pop(flow, None)
        if session is None:
            return
        if session.active:
            try:
                session.dissector.close(session.ctx)
            except Exception as exc:
                self._exception(session.dissector.name, exc)

    # ------------------------------------------------------------------ confinement

    def _failed(self, flow: int, session: _Session, exc: Exception) -> None:
        self._flush_queue()
        if not session.active:  # the queued PDUs before this one detached the dissector
            return
        self._exception(session.dissector.name, exc)
        session.exceptions += 1
        if session.exceptions >= self.settings.max_exceptions_per_flow:
            session.active = False
            self._flow_proto[flow] = NONE
            self._detached[flow] = self._position

    def _exception(self, name: str, exc: Exception) -> None:
        self._flush_queue()
        self.weird.report("dissector_exception", "protocol", f"{name}: {type(exc).__name__}")
        if name not in self._logged_exceptions:
            self._logged_exceptions.add(name)
            logger.info("dissector %s raised %s: %s", name, type(exc).__name__, exc)

    def _weird(self, session: _Session, is_orig: bool, ts_ns: int, name: str, detail: str) -> None:
        self._flush_queue()
        if not session.active:  # the queued PDUs before this point detached the dissector
            return
        session.ctx.ts = ts_ns
        session.ctx.is_orig = is_orig
        session.ctx.weird(f"{session.dissector.name}_{name}", detail)

    def _report_weird(self, event: ProtocolWeird) -> None:
        self._flush_queue()
        self.weird.report(event.name, "protocol", event.detail)
        self._emit(event)
