"""The protocol engine: recognises each flow's protocol by content and drives its dissector.

Per batch, with numpy masks first and Python only where a dissector must run:

1. recognition: for flows not yet classified, the first few payload packets (at most
   ``max_recognition_packets`` per flow, selected vectorized) are shown to the recognisers, those
   whose well-known ports match first. ``YES`` attaches a new dissector instance to the flow; when
   every recogniser says ``NO`` (or the packet budget is spent) the flow is left unclassified.
2. dissection: UDP datagrams of classified flows go straight to ``parse``; TCP segments go through
   :class:`~fieldward.decode.reassembly.TcpReassembler`, and the in-order stream of each direction is
   cut into PDUs with the dissector's ``frame``.

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
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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
from fieldward.decode.reassembly import StreamChunk, TcpReassembler
from fieldward.protocols.base import (
    L2_HEAD_BYTES,
    NO_FLOW,
    Dissector,
    Event,
    FlowInfo,
    LinkInfo,
    PduContext,
    ProtocolWeird,
    Transport,
    Verdict,
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
MAX_L2_FAILING_SENDERS = 65536
"""(dissector, source MAC) exception counters kept; beyond it they are reset."""


@dataclass(frozen=True, slots=True)
class ProtocolSettings:
    max_recognition_packets: int = 4
    """Payload packets per flow shown to the recognisers before giving up."""
    max_pdu_buffer_bytes: int = 1 << 20
    """Unframed bytes kept per flow direction; beyond it the buffer is dropped with a weird."""
    max_exceptions_per_flow: int = 3


@dataclass(slots=True)
class _Session:
    dissector: Dissector
    ctx: PduContext
    buffers: tuple[bytearray, bytearray]
    exceptions: int = 0
    active: bool = True


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
        ctx = PduContext(info, cls.name, self._emit, self._report_weird)
        self._flow_proto[flow] = index
        session = self._sessions[flow] = _Session(cls(info), ctx, (bytearray(), bytearray()))
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
        starts = (batch.offsets[rows] + decoded.payload_offset[rows]).tolist()
        lengths = decoded.payload_len[rows].tolist()
        flows = assignment.flow_id[rows].tolist()
        origs = (assignment.direction[rows] == 0).tolist()
        times = batch.ts_ns[rows].tolist()
        buffer = batch.buffer
        for i, flow in enumerate(flows):
            session = self._sessions.get(flow)
            if session is None or not session.active:
                continue
            data = buffer[starts[i] : starts[i] + lengths[i]].tobytes()
            self._parse(flow, session, data, origs[i], times[i])

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
        self._deliver(self._reassembler.reassemble_batch(batch, decoded, assignment, wanted))

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
            session = self._sessions.get(chunk.flow_id)
            if session is None:
                if self._flow_proto[chunk.flow_id] != UNKNOWN or not chunk.data:
                    continue
                session = self._recognise_stream(chunk)
                if session is None:
                    continue
                chunk = StreamChunk(chunk.flow_id, chunk.direction, chunk.offset, b"", chunk.ts_ns)
                self._frame_and_parse(session, chunk, limit)
                other = StreamChunk(chunk.flow_id, 1 - chunk.direction, 0, b"", chunk.ts_ns)
                self._frame_and_parse(session, other, limit)
                continue
            if not session.active:
                continue
            self._frame_and_parse(session, chunk, limit)

    def _frame_and_parse(self, session: _Session, chunk: StreamChunk, limit: int) -> None:
        buf = session.buffers[chunk.direction]
        if chunk.gap_before and buf:
            self._weird(session, chunk.direction == 0, chunk.ts_ns, "pdu_lost_in_gap", "stream gap")
            buf.clear()
        buf += chunk.data
        is_orig = chunk.direction == 0
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
            self._parse(chunk.flow_id, session, pdu, is_orig, chunk.ts_ns)

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
        self._exception(session.dissector.name, exc)
        session.exceptions += 1
        if session.exceptions >= self.settings.max_exceptions_per_flow:
            session.active = False
            self._flow_proto[flow] = NONE

    def _exception(self, name: str, exc: Exception) -> None:
        self.weird.report("dissector_exception", "protocol", f"{name}: {type(exc).__name__}")
        if name not in self._logged_exceptions:
            self._logged_exceptions.add(name)
            logger.info("dissector %s raised %s: %s", name, type(exc).__name__, exc)

    def _weird(self, session: _Session, is_orig: bool, ts_ns: int, name: str, detail: str) -> None:
        session.ctx.ts = ts_ns
        session.ctx.is_orig = is_orig
        session.ctx.weird(f"{session.dissector.name}_{name}", detail)

    def _report_weird(self, event: ProtocolWeird) -> None:
        self.weird.report(event.name, "protocol", event.detail)
        self._emit(event)
