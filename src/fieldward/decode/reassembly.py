"""TCP stream reassembly: ordered payload per flow and direction, for the protocol dissectors.

:class:`TcpReassembler` turns TCP segments (in capture order, possibly reordered, duplicated or
overlapping on the wire) into :class:`StreamChunk` objects that carry contiguous, in-order stream
bytes. Offsets are positions in the stream of one direction: byte 0 is the first byte after the SYN,
or, when the SYN was not captured (mid-stream pickup), the first payload byte of the first segment seen.

Rules:

- sequence numbers are unwrapped to 64-bit stream offsets, so a stream may cross ``2**32``;
- a SYN consumes one sequence number; FIN ends the direction once every byte before it is delivered;
  RST ends it at once (RST payload is not stream data);
- data already delivered (retransmissions) is dropped; overlapping data is trimmed, the first copy
  wins, and an overlap whose bytes differ from the first copy counts the weird
  ``tcp_overlap_conflict`` (checked against buffered data and the last ``overlap_check_bytes``
  delivered);
- out-of-order data waits in a buffer for the hole before it to be filled. When the buffer exceeds
  ``max_buffer_bytes_per_direction``, or the hole is larger than ``max_gap_bytes`` (no TCP window
  reorders that far), the hole is given up: delivery resumes after it with ``gap_before`` set to the
  missing byte count and the weird ``tcp_reassembly_gap`` is counted;
- :meth:`TcpReassembler.close` and :meth:`TcpReassembler.flush` deliver what is left, across holes.

:meth:`TcpReassembler.reassemble_batch` is the batch entry point: a numpy mask first selects the TCP
packets with payload (or SYN/FIN/RST) of the wanted flows, and only those are fed, in capture order.
:meth:`TcpReassembler.reassemble_columns` does the same but returns a :class:`StreamBatch`: segments
delivered whole and in order stay rows of the batch (no object per segment), for the protocol
engine's columnar TCP path.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fieldward.capture.batch import PacketBatch
from fieldward.decode.columns import PROTO_TCP, TCP_FIN, TCP_RST, TCP_SYN, DecodedBatch
from fieldward.decode.flows import FlowAssignment
from fieldward.weird import WeirdLog

SEQ_MOD = 1 << 32
_SEQ_MASK = SEQ_MOD - 1
_HALF = 1 << 31
_CONTROL = TCP_SYN | TCP_FIN | TCP_RST

DEFAULT_MAX_BUFFER_BYTES = 1 << 20
DEFAULT_MAX_GAP_BYTES = 1 << 20
DEFAULT_OVERLAP_CHECK_BYTES = 4096


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """Contiguous in-order bytes of one direction of a TCP flow."""

    flow_id: int
    direction: int
    """0: originator to responder; 1: responder to originator."""
    offset: int
    """Stream offset of ``data[0]`` (0 = first byte after the SYN, or first byte seen)."""
    data: bytes
    ts_ns: int
    """Capture time of the segment that carried these bytes."""
    gap_before: int = 0
    """Bytes missing right before this chunk (never captured, or given up on); 0 when contiguous."""


def _new_chunk(flow_id: int, direction: int, offset: int, data: bytes, ts_ns: int) -> StreamChunk:
    """``StreamChunk(flow_id, direction, offset, data, ts_ns)`` (no gap) for the in-order fast path:
    the slots are set directly, which is what the frozen dataclass ``__init__`` does, only faster."""
    chunk = _NEW(StreamChunk)
    _SET_FLOW(chunk, flow_id)
    _SET_DIRECTION(chunk, direction)
    _SET_OFFSET(chunk, offset)
    _SET_DATA(chunk, data)
    _SET_TS(chunk, ts_ns)
    _SET_GAP(chunk, 0)
    return chunk


def _slot_setter(name: str) -> Callable[[StreamChunk, object], None]:
    setter: Callable[[StreamChunk, object], None] = getattr(StreamChunk, name).__set__
    return setter


_NEW = object.__new__
_SET_FLOW = _slot_setter("flow_id")
_SET_DIRECTION = _slot_setter("direction")
_SET_OFFSET = _slot_setter("offset")
_SET_DATA = _slot_setter("data")
_SET_TS = _slot_setter("ts_ns")
_SET_GAP = _slot_setter("gap_before")


@dataclass(slots=True)
class StreamBatch:
    """What one batch's TCP segments delivered, in columns (:meth:`TcpReassembler.reassemble_columns`).

    Segment ``i`` (a selected packet, in capture order) was either delivered ``whole[i]``: in order,
    right after the previous bytes of its direction, as exactly one chunk of its own payload (the common
    case, never turned into Python objects), or went through :meth:`TcpReassembler.feed`, which
    delivered the ``chunks`` whose ``chunk_segment`` is ``i`` (none, one or several). Delivery order is
    segment order, and within a segment the order of its chunks.
    """

    buffer: npt.NDArray[np.uint8]
    """The batch buffer; segment ``i``'s payload is ``buffer[start[i] : start[i] + length[i]]``."""
    rows: npt.NDArray[np.intp]
    """Batch row of each segment."""
    flow: npt.NDArray[np.int64]
    direction: npt.NDArray[np.int64]
    start: npt.NDArray[np.int64]
    length: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    offset: npt.NDArray[np.int64]
    """Stream offset of the segment's first byte, for ``whole`` segments (0 elsewhere)."""
    whole: npt.NDArray[np.bool_]
    chunks: list[StreamChunk]
    chunk_segment: list[int]

    def chunk(self, i: int) -> StreamChunk:
        """The chunk a ``whole`` segment delivered, as an object."""
        begin = int(self.start[i])
        data = self.buffer[begin : begin + int(self.length[i])].tobytes()
        return _new_chunk(
            int(self.flow[i]), int(self.direction[i]), int(self.offset[i]), data, int(self.ts[i])
        )

    def all_chunks(self) -> list[StreamChunk]:
        """Every delivered chunk as an object, in delivery order."""
        out: list[StreamChunk] = []
        k = 0
        chunks, at = self.chunks, self.chunk_segment
        for i in range(self.rows.shape[0] if self.whole.any() else 0):
            while k < len(chunks) and at[k] < i:
                out.append(chunks[k])
                k += 1
            if self.whole[i]:
                out.append(self.chunk(i))
        out.extend(chunks[k:])
        return out


def _empty_stream_batch(buffer: npt.NDArray[np.uint8]) -> StreamBatch:
    none = np.zeros(0, dtype=np.int64)
    return StreamBatch(
        buffer, none.astype(np.intp), none, none, none, none, none, none, np.zeros(0, dtype=np.bool_), [], []
    )


@dataclass(slots=True)
class _Pending:
    start: int
    data: bytes
    ts_ns: int

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass(slots=True)
class _Direction:
    """Reassembly state of one direction of one flow."""

    isn: int = -1
    """32-bit sequence number of stream offset 0; -1 until the first segment."""
    next: int = 0
    """Stream offset of the next byte to deliver."""
    pending: list[_Pending] = field(default_factory=list)
    """Out-of-order data, sorted by start, non-overlapping, every start > ``next``."""
    pending_bytes: int = 0
    tail: bytes = b""
    """The last bytes delivered (ending at ``next``), to check retransmitted overlaps."""
    fin_at: int = -1
    """Stream offset of the FIN (end of data), -1 until seen."""
    closed: bool = False

    def offset_of(self, seq: int) -> int:
        """The 64-bit stream offset of a 32-bit sequence number (the one nearest to ``next``)."""
        rel = (seq - self.isn) & _SEQ_MASK
        candidate = (self.next & ~_SEQ_MASK) + rel
        diff = candidate - self.next
        if diff > _HALF:
            candidate -= SEQ_MOD
        elif diff < -_HALF:
            candidate += SEQ_MOD
        return candidate


def _settle_tail(state: _Direction, pieces: list[bytes], keep: int) -> None:
    """``state.tail = (state.tail + b"".join(pieces))[-keep:]``, joining only the pieces it needs."""
    need = keep
    used: list[bytes] = []
    for piece in reversed(pieces):
        used.append(piece)
        need -= len(piece)
        if need <= 0:
            break
    if need > 0:
        used.append(state.tail)
    state.tail = b"".join(reversed(used))[-keep:]


class TcpReassembler:
    """Per flow and direction TCP reassembly with bounded buffers (see the module docstring)."""

    def __init__(
        self,
        max_buffer_bytes_per_direction: int = DEFAULT_MAX_BUFFER_BYTES,
        max_gap_bytes: int = DEFAULT_MAX_GAP_BYTES,
        overlap_check_bytes: int = DEFAULT_OVERLAP_CHECK_BYTES,
        weird: WeirdLog | None = None,
    ) -> None:
        if max_buffer_bytes_per_direction < 0 or max_gap_bytes < 0 or overlap_check_bytes < 0:
            raise ValueError("reassembly limits must not be negative")
        self.max_buffer_bytes = max_buffer_bytes_per_direction
        self.max_gap_bytes = max_gap_bytes
        self.overlap_check_bytes = overlap_check_bytes
        self.weird = weird if weird is not None else WeirdLog()
        self._dirs: dict[tuple[int, int], _Direction] = {}

    # ------------------------------------------------------------------ public API

    def feed(
        self,
        flow_id: int,
        direction: int,
        seq: int,
        flags: int,
        payload: bytes | memoryview,
        ts_ns: int,
    ) -> list[StreamChunk]:
        """Add one TCP segment; returns the stream bytes that became deliverable, in order."""
        if direction not in (0, 1):
            raise ValueError(f"direction must be 0 or 1, not {direction}")
        key = (flow_id, direction)
        state = self._dirs.get(key)
        if state is None:
            state = self._dirs[key] = _Direction()
        if state.closed:
            return []
        seq &= _SEQ_MASK
        syn = bool(flags & TCP_SYN)
        data_seq = (seq + 1) & _SEQ_MASK if syn else seq
        if state.isn < 0:
            state.isn = data_seq
            state.next = 0
        elif syn and state.next == 0 and not state.pending and data_seq != state.isn:
            # A SYN after stray earlier segments (nothing delivered yet): it defines the stream start.
            state.isn = data_seq
        out: list[StreamChunk] = []
        offset = state.offset_of(data_seq)
        if flags & TCP_RST:
            self._finish(flow_id, direction, state, out)
            return out
        if len(payload):
            self._add(flow_id, direction, state, offset, bytes(payload), ts_ns, out)
        if flags & TCP_FIN and state.fin_at < 0:
            state.fin_at = offset + len(payload)
        if 0 <= state.fin_at <= state.next:
            self._finish(flow_id, direction, state, out)
        return out

    def close(self, flow_id: int) -> list[StreamChunk]:
        """Deliver what is left of both directions of a flow (across holes) and forget the flow."""
        out: list[StreamChunk] = []
        for direction in (0, 1):
            state = self._dirs.pop((flow_id, direction), None)
            if state is not None and not state.closed:
                self._finish(flow_id, direction, state, out)
        return out

    def flush(self) -> list[StreamChunk]:
        """Deliver what is left of every flow and forget them all (end of capture)."""
        out: list[StreamChunk] = []
        for flow_id in sorted({flow for flow, _ in self._dirs}):
            out.extend(self.close(flow_id))
        return out

    def closed(self, flow_id: int, direction: int) -> bool:
        """Whether a direction ended (FIN delivered or RST); False for unknown flows."""
        state = self._dirs.get((flow_id, direction))
        return state is not None and state.closed

    @property
    def buffered_bytes(self) -> int:
        """Out-of-order bytes currently held, over all flows."""
        return sum(state.pending_bytes for state in self._dirs.values())

    @property
    def active_directions(self) -> int:
        """Flow directions with reassembly state."""
        return len(self._dirs)

    def reassemble_batch(
        self,
        batch: PacketBatch,
        decoded: DecodedBatch,
        assignment: FlowAssignment,
        flow_filter: npt.NDArray[np.bool_] | Collection[int],
    ) -> list[StreamChunk]:
        """Feed the TCP segments of the wanted flows of a batch; returns the chunks delivered.

        ``flow_filter`` is either a boolean array indexed by flow id (flow ids past its end are not
        wanted) or a collection of flow ids. Only packets of those flows that carry payload or a
        SYN, FIN or RST flag are selected (with numpy masks) and fed, in capture order.
        """
        return self.reassemble_columns(batch, decoded, assignment, flow_filter).all_chunks()

    def reassemble_columns(
        self,
        batch: PacketBatch,
        decoded: DecodedBatch,
        assignment: FlowAssignment,
        flow_filter: npt.NDArray[np.bool_] | Collection[int],
    ) -> StreamBatch:
        """:meth:`reassemble_batch` in columns: in-order segments are delivered as array rows.

        Runs of in-order segments are found with numpy: a segment *follows* the previous segment of its
        flow direction in this batch when both carry data without SYN/FIN/RST and it starts exactly
        where that one ended. Python looks at the first segment of each run only: when it starts
        exactly at the next byte to deliver of a direction with nothing buffered, no FIN seen and no
        flag (what ``feed`` would deliver at once), the whole run is delivered; otherwise that segment
        goes to ``feed`` and the next one of the run is looked at the same way, in capture order.
        """
        flow_id = assignment.flow_id
        n = decoded.n
        if isinstance(flow_filter, np.ndarray) and flow_filter.dtype == np.bool_:
            wanted = np.zeros(n, dtype=np.bool_)
            in_range = (flow_id >= 0) & (flow_id < flow_filter.shape[0])
            wanted[in_range] = flow_filter[flow_id[in_range]]
        else:
            ids = np.fromiter((int(f) for f in flow_filter), dtype=np.int64)
            wanted = np.isin(flow_id, ids) & (flow_id >= 0)
        control = (decoded.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST)) != 0
        select = (
            wanted
            & (decoded.ip_proto == PROTO_TCP)
            & (decoded.l4_offset >= 0)
            & ((decoded.payload_len > 0) | control)
        )
        rows = np.flatnonzero(select)
        if rows.shape[0] == 0:
            return _empty_stream_batch(batch.buffer)
        m = rows.shape[0]
        size_col = np.maximum(decoded.payload_len[rows], 0).astype(np.int64)
        flow_col = flow_id[rows].astype(np.int64)
        dir_col = assignment.direction[rows].astype(np.int64)
        seq_col = decoded.tcp_seq[rows].astype(np.int64) & _SEQ_MASK
        flag_col = decoded.tcp_flags[rows]
        start_col = (batch.offsets[rows] + np.maximum(decoded.payload_offset[rows], 0)).astype(np.int64)
        ts_col = batch.ts_ns[rows].astype(np.int64)
        key = flow_col * 2 + dir_col
        order = np.argsort(key, kind="stable")
        plain = (size_col > 0) & ((flag_col & _CONTROL) == 0)
        follows = np.zeros(m, dtype=np.bool_)
        if m > 1:
            same = key[order[1:]] == key[order[:-1]]
            before = order[:-1]
            follows[order[1:]] = (
                same
                & plain[order[1:]]
                & plain[before]
                & (seq_col[order[1:]] == (seq_col[before] + size_col[before]) & _SEQ_MASK)
            )
        # Runs ("chains") are contiguous in key order: run c covers sorted positions first[c]:last[c].
        sorted_follows = follows[order]
        first = np.flatnonzero(~sorted_follows)
        last = np.append(first[1:], m)
        chain_end = np.repeat(last, last - first)
        """Sorted position past the end of each sorted position's run."""
        where = np.empty(m, dtype=np.intp)
        where[order] = np.arange(m)
        sizes_sorted = size_col[order]
        csum = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(sizes_sorted, out=csum[1:])
        whole = np.zeros(m, dtype=np.bool_)
        offset_col = np.zeros(m, dtype=np.int64)
        heads = np.sort(order[first]).tolist()
        starts = start_col.tolist()
        lengths = size_col.tolist()
        flows = flow_col.tolist()
        directions = dir_col.tolist()
        seqs = seq_col.tolist()
        flag_values = flag_col.tolist()
        times = ts_col.tolist()
        where_list = where.tolist()
        end_list = chain_end.tolist()
        order_list = order.tolist()
        view = batch.buffer.data
        out: list[StreamChunk] = []
        out_at: list[int] = []
        dirs = self._dirs
        keep = self.overlap_check_bytes
        unsettled: dict[int, tuple[_Direction, list[tuple[int, int]]]] = {}
        """Runs the fast path delivered (sorted position ranges, by ``id`` of the direction state) that
        are not yet in its ``tail``: only ``feed`` reads the tail, so it is brought up to date before
        ``feed`` runs for that direction and at the end."""
        later: list[int] = []
        """Segments of runs whose earlier segment went to ``feed`` (a heap of rows)."""
        h = 0
        while h < len(heads) or later:
            if later and (h >= len(heads) or later[0] < heads[h]):
                i = heapq.heappop(later)
            else:
                i = heads[h]
                h += 1
            size = lengths[i]
            flags = flag_values[i]
            state = dirs.get((flows[i], directions[i]))
            if (
                state is not None
                and size
                and not flags & _CONTROL
                and not state.pending
                and state.fin_at < 0
                and not state.closed
                and (seqs[i] - state.isn) & _SEQ_MASK == state.next & _SEQ_MASK
            ):
                q = where_list[i]
                end = end_list[q]
                run = order[q:end]
                whole[run] = True
                offset_col[run] = state.next + csum[q:end] - csum[q]
                state.next += int(csum[end] - csum[q])
                if keep:
                    pending = unsettled.get(id(state))
                    if pending is None:
                        unsettled[id(state)] = (state, [(q, end)])
                    else:
                        pending[1].append((q, end))
                continue
            if unsettled and state is not None and id(state) in unsettled:
                self._settle(*unsettled.pop(id(state)), order, csum, start_col, size_col, batch.buffer)
            chunks = self.feed(
                flows[i], directions[i], seqs[i], flags, view[starts[i] : starts[i] + size], times[i]
            )
            if chunks:
                out.extend(chunks)
                out_at.extend([i] * len(chunks))
            q = where_list[i]
            if q + 1 < end_list[q]:
                heapq.heappush(later, order_list[q + 1])
        for state, runs in unsettled.values():
            self._settle(state, runs, order, csum, start_col, size_col, batch.buffer)
        return StreamBatch(
            batch.buffer, rows, flow_col, dir_col, start_col, size_col, ts_col, offset_col, whole, out, out_at
        )

    def _settle(
        self,
        state: _Direction,
        runs: list[tuple[int, int]],
        order: npt.NDArray[np.intp],
        csum: npt.NDArray[np.int64],
        start: npt.NDArray[np.int64],
        size: npt.NDArray[np.int64],
        buffer: npt.NDArray[np.uint8],
    ) -> None:
        """``state.tail`` after the runs of segments the fast path delivered (``runs`` are ranges of
        positions in ``order``; ``csum`` the cumulative sizes in that order): only the segments holding
        the last ``overlap_check_bytes`` are copied, with one gather."""
        keep = self.overlap_check_bytes
        need = keep
        picked: list[npt.NDArray[np.intp]] = []
        for q, end in reversed(runs):
            total = int(csum[end] - csum[q])
            if total < need:
                picked.append(order[q:end])
                need -= total
                continue
            # The run's last segments that hold the ``need`` bytes still missing.
            first = int(np.searchsorted(csum, csum[end] - need, side="right")) - 1
            picked.append(order[max(first, q) : end])
            need = 0
            break
        picked.reverse()
        rows = np.concatenate(picked)
        sizes = size[rows]
        before = np.cumsum(sizes) - sizes
        index = np.repeat(start[rows] - before, sizes) + np.arange(int(sizes.sum()), dtype=np.int64)
        data = buffer[index].tobytes()
        state.tail = data[-keep:] if need <= 0 else (state.tail + data)[-keep:]

    # ------------------------------------------------------------------ internals

    def _conflict(self) -> None:
        self.weird.report(
            "tcp_overlap_conflict",
            "flow",
            "retransmitted or overlapping TCP data differs from the first copy (first copy kept)",
        )

    def _check_delivered(self, state: _Direction, offset: int, data: bytes) -> None:
        """Compare data overlapping already delivered bytes with the retained tail."""
        tail_start = state.next - len(state.tail)
        lo = max(offset, tail_start)
        hi = min(offset + len(data), state.next)
        if lo < hi and data[lo - offset : hi - offset] != state.tail[lo - tail_start : hi - tail_start]:
            self._conflict()

    def _add(
        self,
        flow_id: int,
        direction: int,
        state: _Direction,
        offset: int,
        data: bytes,
        ts_ns: int,
        out: list[StreamChunk],
    ) -> None:
        if state.fin_at >= 0 and offset + len(data) > state.fin_at:
            data = data[: max(state.fin_at - offset, 0)]
        if offset < state.next:
            self._check_delivered(state, offset, data)
            if offset + len(data) <= state.next:
                return  # a retransmission of delivered data
            data = data[state.next - offset :]
            offset = state.next
        if not data:
            return
        self._buffer(state, offset, data, ts_ns)
        self._deliver(flow_id, direction, state, out, 0)
        # Give up holes that cannot be filled within the limits.
        while state.pending and (
            state.pending_bytes > self.max_buffer_bytes
            or state.pending[0].start - state.next > self.max_gap_bytes
        ):
            self._skip_hole(flow_id, direction, state, out)

    def _buffer(self, state: _Direction, offset: int, data: bytes, ts_ns: int) -> None:
        """Insert data into the out-of-order buffer; bytes already buffered keep their first copy."""
        pending = state.pending
        end = offset + len(data)
        starts = [p.start for p in pending]
        i = max(bisect.bisect_right(starts, offset) - 1, 0)
        pieces: list[_Pending] = []
        cursor = offset
        while i < len(pending) and pending[i].start < end:
            held = pending[i]
            if held.end > cursor:
                if held.start > cursor:
                    pieces.append(_Pending(cursor, data[cursor - offset : held.start - offset], ts_ns))
                lo = max(cursor, held.start)
                hi = min(end, held.end)
                if data[lo - offset : hi - offset] != held.data[lo - held.start : hi - held.start]:
                    self._conflict()
                cursor = max(cursor, hi)
            i += 1
        if cursor < end:
            pieces.append(_Pending(cursor, data[cursor - offset :], ts_ns))
        for piece in pieces:
            bisect.insort(pending, piece, key=lambda p: p.start)
            state.pending_bytes += len(piece.data)

    def _deliver(
        self, flow_id: int, direction: int, state: _Direction, out: list[StreamChunk], gap: int
    ) -> None:
        pending = state.pending
        delivered = 0
        while delivered < len(pending) and pending[delivered].start == state.next:
            piece = pending[delivered]
            out.append(StreamChunk(flow_id, direction, piece.start, piece.data, piece.ts_ns, gap))
            gap = 0
            state.next = piece.end
            state.pending_bytes -= len(piece.data)
            keep = self.overlap_check_bytes
            if keep:
                state.tail = (state.tail + piece.data)[-keep:]
            delivered += 1
        if delivered:
            del pending[:delivered]

    def _skip_hole(self, flow_id: int, direction: int, state: _Direction, out: list[StreamChunk]) -> None:
        gap = state.pending[0].start - state.next
        self.weird.report(
            "tcp_reassembly_gap",
            "flow",
            "TCP bytes never captured (or not retransmitted in time): stream resumes after a gap",
        )
        state.next = state.pending[0].start
        state.tail = b""
        self._deliver(flow_id, direction, state, out, gap)

    def _finish(self, flow_id: int, direction: int, state: _Direction, out: list[StreamChunk]) -> None:
        """End a direction: deliver everything still buffered, across holes."""
        while state.pending:
            self._skip_hole(flow_id, direction, state, out)
        state.closed = True
        state.tail = b""
