"""The dissector contract: FieldWard's plugin SDK for protocols.

A dissector is one class in one module. It declares how its protocol is recognised (transports,
well-known ports as a hint, and a content check: the port alone never decides), how a TCP byte stream
is cut into PDUs (:meth:`Dissector.frame`), and how one PDU or UDP datagram becomes typed events
(:meth:`Dissector.parse`). The engine (:mod:`fieldward.protocols.engine`) does everything else: flow
tracking, TCP reassembly, buffering, confinement of exceptions, and writing events to Parquet.

Layer-2 dissectors (``Transport.ETHERNET``) declare the EtherTypes (``ethertypes``) and 802.2 LLC/SNAP
protocol ids (``snap``) whose frames they take, optionally narrowed by a vectorized content check
(:meth:`Dissector.match_frames`); they get each matching frame's payload in ``parse`` with
:attr:`PduContext.link` describing the frame. Such frames belong to no flow (``flow_id`` -1).

Dissectors report facts, never judgements (Zeek's event engine vs. policy split): a malformed PDU is
reported with :meth:`PduContext.weird` and the flow keeps being analysed.
"""

from __future__ import annotations

import dataclasses
import operator
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, Literal

import numba
import numpy as np
import numpy.typing as npt
import pyarrow as pa


class Transport(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    ETHERNET = "ethernet"
    """Layer 2: frames selected by EtherType or LLC/SNAP id, outside any flow (see ``LinkInfo``)."""


L2_HEAD_BYTES = 16
"""Bytes of each candidate frame's L2 payload shown to :meth:`Dissector.match_frames`."""

NO_FLOW = -1
"""``flow_id`` of events about frames that belong to no flow (layer-2 dissectors)."""


class Verdict(IntEnum):
    """Answer of :meth:`Dissector.recognize` for the first payload of a flow."""

    NO = 0
    """Not this protocol."""
    MAYBE = 1
    """Cannot tell yet (too little data): ask again with the next payload."""
    YES = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every protocol event: when, on which flow, in which direction.

    ts: packet time of the (last segment of the) PDU, ns since the epoch (UTC).
    flow_id: the flow's id in ``flows.parquet``.
    orig_h/orig_p/resp_h/resp_p: the flow's originator and responder address and port.
    is_orig: True when the originator sent this PDU.
    """

    log: ClassVar[str] = ""
    """Name of the events file (``events/<log>.parquet``); set by every concrete event type."""

    ts: int
    flow_id: int
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    is_orig: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkEvent(Event):
    """Base of layer-2 events: the :class:`Event` fields (filled as :meth:`PduContext.where` describes
    for link frames: source/destination MAC in ``orig_h``/``resp_h``, ports 0, ``flow_id`` -1) plus the
    frame's VLAN. Fill it with ``MyEvent(**ctx.where_link(), ...)``.

    vlan: outer 802.1Q/802.1ad VLAN id of the frame, 0 when untagged.
    """

    vlan: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolWeird(Event):
    """A PDU a dissector could not make sense of (also counted in the run's weird totals)."""

    log: ClassVar[str] = "weird"

    protocol: str
    name: str
    detail: str


@dataclass(frozen=True, slots=True)
class FlowInfo:
    """What a dissector knows of the flow it is attached to."""

    flow_id: int
    transport: Transport
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """The layer-2 frame a ``Transport.ETHERNET`` dissector is parsing (``PduContext.link``)."""

    src_mac: str
    """Source MAC (``aa:bb:cc:dd:ee:ff``); empty when the link type carries none."""
    dst_mac: str
    """Destination MAC; empty when the link type carries none (Linux cooked captures)."""
    vlan: int
    """Outer VLAN id (802.1Q or 802.1ad S-tag), 0 when untagged."""
    vlan_inner: int
    """Inner VLAN id of a QinQ frame, 0 otherwise."""
    ethertype: int
    """EtherType after VLAN tags; for 802.3 frames the length field (<= 1500), for Linux cooked
    captures the protocol field (0x0004 for 802.2 LLC)."""
    snap: tuple[int, int] | None = None
    """(OUI, protocol id) of an 802.2 LLC/SNAP frame; the payload then starts after the SNAP header."""


def mac_str(value: int) -> str:
    """A 48-bit MAC address as ``aa:bb:cc:dd:ee:ff``."""
    return ":".join(f"{b:02x}" for b in (value & 0xFFFFFFFFFFFF).to_bytes(6, "big"))


class PduContext:
    """Passed to :meth:`Dissector.parse`: where the PDU came from, and how to report results.

    For ``Transport.ETHERNET`` dissectors ``link`` describes the frame being parsed (it is None for
    TCP and UDP), and ``flow`` is a placeholder with ``flow_id`` -1.
    """

    __slots__ = ("_emit", "_weird", "flow", "is_orig", "link", "protocol", "ts")

    def __init__(
        self,
        flow: FlowInfo,
        protocol: str,
        emit: Callable[[Event], None],
        weird: Callable[[ProtocolWeird], None],
    ) -> None:
        self.flow = flow
        self.protocol = protocol
        self.ts = 0
        self.is_orig = True
        self.link: LinkInfo | None = None
        self._emit = emit
        self._weird = weird

    def where(self) -> dict[str, Any]:
        """The :class:`Event` base fields for a PDU seen now: ``MyEvent(**ctx.where(), ...)``.

        For a layer-2 frame (``link`` set): ``flow_id`` -1, ``orig_h`` the source MAC, ``resp_h`` the
        destination MAC, both ports 0 and ``is_orig`` True (the sender is the frame's source).
        """
        link = self.link
        if link is not None:
            return {
                "ts": self.ts,
                "flow_id": NO_FLOW,
                "orig_h": link.src_mac,
                "orig_p": 0,
                "resp_h": link.dst_mac,
                "resp_p": 0,
                "is_orig": True,
            }
        f = self.flow
        return {
            "ts": self.ts,
            "flow_id": f.flow_id,
            "orig_h": f.orig_h,
            "orig_p": f.orig_p,
            "resp_h": f.resp_h,
            "resp_p": f.resp_p,
            "is_orig": self.is_orig,
        }

    def where_link(self) -> dict[str, Any]:
        """The :class:`LinkEvent` base fields (``where()`` plus ``vlan``) for the frame being parsed."""
        fields = self.where()
        fields["vlan"] = self.link.vlan if self.link is not None else 0
        return fields

    def emit(self, event: Event) -> None:
        self._emit(event)

    def weird(self, name: str, detail: str) -> None:
        """Report a malformed PDU: counted, and written to ``events/weird.parquet``."""
        self._weird(ProtocolWeird(**self.where(), protocol=self.protocol, name=name, detail=detail))


class Dissector(ABC):
    """One protocol. Subclass it in one module; the registry finds it (see docs/plugins.md).

    A new instance is made for every flow the protocol is recognised on, so per-flow state
    (outstanding requests, partial transport segments) lives on ``self``.
    """

    name: ClassVar[str]
    """Short lower-case protocol name, e.g. ``modbus``; also the events file prefix."""
    description: ClassVar[str] = ""
    transports: ClassVar[frozenset[Transport]]
    ports: ClassVar[frozenset[int]] = frozenset()
    """Well-known ports: recognisers of protocols whose port matches are asked first."""
    ethertypes: ClassVar[frozenset[int]] = frozenset()
    """``Transport.ETHERNET``: EtherTypes (after VLAN tags) whose frames go to ``parse``. IPv4, IPv6
    and VLAN TPIDs are never handed to layer-2 dissectors (IP traffic goes through flows)."""
    snap: ClassVar[frozenset[tuple[int, int]]] = frozenset()
    """``Transport.ETHERNET``: (OUI, protocol id) pairs of 802.3 frames with an 802.2 LLC/SNAP header
    (DSAP 0xAA, SSAP 0xAA, control 0x03) that go to ``parse``, e.g. ``{(0x00000C, 0x2000)}`` for CDP."""
    event_types: ClassVar[tuple[type[Event], ...]] = ()

    def __init__(self, flow: FlowInfo) -> None:
        self.flow = flow

    @classmethod
    @abstractmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        """Look at the first payload of a flow (``sport``/``dport`` are its sender's and receiver's)."""

    @classmethod
    def match_frames(
        cls, heads: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int32]
    ) -> npt.NDArray[np.bool_] | None:
        """``Transport.ETHERNET`` only: a vectorized content check of the frames selected by
        ``ethertypes``/``snap``, so that traffic the dissector does not want never reaches Python.

        ``heads`` has shape (m, ``L2_HEAD_BYTES``): the first bytes of each frame's L2 payload (as
        ``parse`` would get it), zero-padded; ``lengths`` the payload lengths. Return a boolean mask of
        the frames to parse, or None (the default) for all of them. Frames one dissector declines can
        go to another dissector that declares the same EtherType.
        """
        return None

    @classmethod
    def parse_batch(cls, datagrams: Datagrams) -> BatchResult | None:
        """Optional columnar fast path (UDP): dissect many datagrams of this protocol at once.

        ``datagrams`` holds, for every UDP datagram of this batch on a flow this dissector is attached
        to (in capture order), the payload's position in the batch buffer, its length, time, flow id
        and direction. Return a :class:`BatchResult`: a mask of the datagrams fully handled and, per
        event type, the event rows as columns (the engine adds the :class:`Event` base fields). Every
        datagram not marked handled goes to :meth:`parse` on its flow's instance, as without a fast
        path, so only the common fixed-layout case needs vectorizing. A fast path must give exactly the
        events :meth:`parse` would (it gets no instance, so it may only handle datagrams whose parse
        neither reads nor changes per-flow state) and reports no weirds. Return None (the default) to
        send every datagram to :meth:`parse`.
        """
        return None

    @classmethod
    def parse_pdu_batch(cls, pdus: Datagrams) -> BatchResult | None:
        """Optional columnar fast path (TCP): dissect many PDUs (as cut by :meth:`frame`) at once.

        ``pdus`` holds the PDUs of the flows this dissector is attached to, framed while the engine
        delivered one batch's TCP streams, in delivery order. Return a :class:`BatchResult` with the
        mask of PDUs handled, an ``apply`` hook for per-flow state and a ``build`` function making the
        events; every other PDU goes to :meth:`parse` on its flow's instance, in stream order, as
        without a fast path. The output must be exactly what :meth:`parse` would give, and the fast
        path reports no weirds (leave PDUs that need one to ``parse``). A dissector with this fast path
        has its PDUs parsed after it framed them, so :meth:`frame` must not depend on what ``parse``
        does. Return None (the default) to send every PDU to :meth:`parse`.
        """
        return None

    framing: ClassVar[LengthFraming | None] = None
    """Optional declaration of :meth:`frame` for the columnar TCP path: where each PDU's header holds
    its length. With it (and ``parse_pdu_batch``) the engine cuts the in-order segments of a whole batch
    with numpy instead of calling ``frame`` per PDU; ``frame`` stays the reference for everything else
    (partial PDUs, buffered bytes, gaps, garbage). It must agree with ``frame`` (see
    :class:`LengthFraming`), and is ignored when a subclass overrides ``frame`` but not ``framing``."""

    def frame(self, data: bytes, is_orig: bool) -> int:
        """TCP only: length of the complete PDU at the start of ``data``.

        Return 0 when more bytes are needed, or -1 when ``data`` does not start with a valid PDU
        (the engine then drops the buffered bytes, counts a weird and resynchronises on the next
        segment). The default treats every delivered chunk as one PDU.
        """
        return len(data)

    @abstractmethod
    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        """Turn one PDU (TCP), datagram (UDP) or frame payload (ETHERNET) into events with ``ctx.emit``."""

    def close(self, ctx: PduContext) -> None:  # noqa: B027 - optional hook
        """The flow ended: report anything still pending (e.g. unanswered requests).

        Layer-2 dissectors have one instance per run, closed at the end of the input.
        """


class LinkDissector(Dissector):
    """Convenience base for layer-2 dissectors: ``transports`` is ``{Transport.ETHERNET}`` and
    :meth:`recognize` (used for TCP/UDP flows only) declines everything; frames are selected by
    ``ethertypes``/``snap`` and :meth:`match_frames`. Subclasses set those and implement ``parse``.
    """

    transports: ClassVar[frozenset[Transport]] = frozenset({Transport.ETHERNET})

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        return Verdict.NO


# ---------------------------------------------------------------- columnar fast path


@dataclass(frozen=True, slots=True)
class Datagrams:
    """UDP datagrams of one protocol in one batch, as columns (argument of :meth:`Dissector.parse_batch`).

    Datagram ``i`` is ``buffer[start[i] : start[i] + length[i]]``.
    """

    buffer: npt.NDArray[np.uint8]
    """The batch buffer (read only)."""
    start: npt.NDArray[np.int64]
    length: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    """Capture time, ns since the epoch."""
    flow_id: npt.NDArray[np.int64]
    is_orig: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def heads(self, width: int) -> npt.NDArray[np.uint8]:
        """The first ``width`` bytes of every datagram, shape (n, width), zero-padded past its end."""
        return gather_heads(self.buffer, self.start, self.length, width)

    def binary(self, offset: int, rows: npt.NDArray[np.intp] | None = None) -> pa.Array:
        """An Arrow ``binary`` column: each datagram's bytes from ``offset`` to its end (of ``rows``)."""
        start = self.start if rows is None else self.start[rows]
        length = self.length if rows is None else self.length[rows]
        return binary_array(self.buffer, start + offset, np.maximum(length - offset, 0))


@dataclass(frozen=True, slots=True)
class HeaderField:
    """An unsigned integer field of a PDU header: ``size`` bytes at ``offset``."""

    offset: int
    size: int = 2
    """1, 2 or 4 bytes."""
    byteorder: Literal["big", "little"] = "big"

    def __post_init__(self) -> None:
        if self.offset < 0 or self.size not in (1, 2, 4) or self.byteorder not in ("big", "little"):
            raise ValueError(f"bad header field {self!r}")

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True, slots=True)
class LengthFraming:
    """:meth:`Dissector.frame` as a declaration, for protocols whose header gives the PDU's length.

    A PDU starting at ``p`` is ``length`` (read at ``p + length.offset``) ``+ add`` bytes long; it is
    valid when that size lies in ``min_size..max_size`` and every ``require`` field holds one of its
    values. The declaration must agree with ``frame``: for any ``data`` that starts with a valid PDU
    and holds all of it, ``frame(data, is_orig)`` returns its size, without side effects (e.g. Modbus:
    ``LengthFraming(HeaderField(4), add=6, min_size=8, max_size=260, require=((HeaderField(2),
    frozenset({0})),))``). The engine uses it only for segments that are exactly a run of valid whole
    PDUs; any other segment (partial PDU, invalid header, bytes already buffered) goes to ``frame``.
    ``tests/protocols/test_framing.py`` checks the built-in declarations against ``frame``.
    """

    length: HeaderField
    add: int = 0
    min_size: int = 1
    max_size: int = 1 << 32
    require: tuple[tuple[HeaderField, frozenset[int]], ...] = ()
    """Header fields with their allowed values (e.g. a protocol identifier, a command code)."""

    def __post_init__(self) -> None:
        fields = [self.length, *(f for f, _values in self.require)]
        if self.min_size < max(f.end for f in fields) or self.max_size < self.min_size:
            raise ValueError("LengthFraming: min_size must cover the length and required fields")

    def sizes(self, heads: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
        """The declared size of the PDU starting each row of ``heads`` (shape (m, >= ``min_size``)), or
        -1 where the header is not a valid one."""
        size = read_field(heads, self.length) + self.add
        ok = (size >= self.min_size) & (size <= self.max_size)
        for f, values in self.require:
            ok &= np.isin(read_field(heads, f), np.array(sorted(values), dtype=np.int64))
        sizes: npt.NDArray[np.int64] = np.where(ok, size, -1)
        return sizes

    def cut(
        self, buffer: npt.NDArray[np.uint8], start: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.intp], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Cut the byte ranges ``buffer[start[i] : start[i] + length[i]]`` into PDUs (vectorized).

        Returns ``(whole, pdu_range, pdu_start, pdu_length)``: ``whole[i]`` when range ``i`` is exactly
        a run of valid whole PDUs; the PDUs of those ranges (with the range each belongs to), in order
        of range then position."""
        m = start.shape[0]
        pos = start.astype(np.int64)
        end = pos + length
        alive = np.ones(m, dtype=np.bool_) if m else np.zeros(0, dtype=np.bool_)
        rows_parts: list[npt.NDArray[np.intp]] = []
        starts_parts: list[npt.NDArray[np.int64]] = []
        sizes_parts: list[npt.NDArray[np.int64]] = []
        active = np.flatnonzero(alive & (pos < end))
        while active.shape[0]:
            heads = gather_heads(buffer, pos[active], end[active] - pos[active], self.min_size)
            size = self.sizes(heads)
            room = end[active] - pos[active]
            fits = (size > 0) & (size <= room) & (room >= self.min_size)
            alive[active[~fits]] = False
            active, size = active[fits], size[fits]
            rows_parts.append(active)
            starts_parts.append(pos[active])
            sizes_parts.append(size)
            pos[active] += size
            active = active[pos[active] < end[active]]
        whole = alive & (length > 0)
        if not rows_parts:
            empty = np.zeros(0, dtype=np.int64)
            return whole, empty.astype(np.intp), empty, empty
        rows = np.concatenate(rows_parts)
        pdu_start = np.concatenate(starts_parts)
        pdu_size = np.concatenate(sizes_parts)
        keep = whole[rows]
        rows, pdu_start, pdu_size = rows[keep], pdu_start[keep], pdu_size[keep]
        order = np.lexsort((pdu_start, rows))
        return whole, rows[order], pdu_start[order], pdu_size[order]


def read_field(heads: npt.NDArray[np.uint8], f: HeaderField) -> npt.NDArray[np.int64]:
    """The value of a header field in each row of ``heads``."""
    value = np.zeros(heads.shape[0], dtype=np.int64)
    order = range(f.size) if f.byteorder == "big" else range(f.size - 1, -1, -1)
    for k in order:
        value = (value << 8) | heads[:, f.offset + k]
    return value


@dataclass(frozen=True, slots=True)
class EventColumns:
    """Events of one type made by :meth:`Dissector.parse_batch`, as columns."""

    event_type: type[Event]
    rows: npt.NDArray[np.intp]
    """The datagram each event comes from (index into the :class:`Datagrams`), non-decreasing."""
    columns: dict[str, npt.NDArray[Any] | pa.Array]
    """The event type's own fields (every field except the :class:`Event` base fields), one value per
    row; numpy arrays or Arrow arrays, converted to the event's Arrow schema."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What :meth:`Dissector.parse_batch` or :meth:`Dissector.parse_pdu_batch` did: which datagrams or
    PDUs it handled, and their events."""

    handled: npt.NDArray[np.bool_]
    events: tuple[EventColumns, ...] = ()
    """``parse_batch`` (UDP): the events of the handled datagrams."""
    apply: Callable[[Any, int], bool] | None = None
    """``parse_pdu_batch`` (TCP): called as ``apply(instance, i)`` for each handled PDU ``i``, in stream
    order and only while the flow is still dissected, with the flow's dissector instance, to read and
    update per-flow state (e.g. match a response to its request). Returning False hands the PDU to
    :meth:`Dissector.parse` instead; ``apply`` must then have left the state unchanged."""
    build: Callable[[npt.NDArray[np.intp]], tuple[EventColumns, ...]] | None = None
    """``parse_pdu_batch`` (TCP): the events of the PDUs ``rows`` (handled, and accepted by ``apply``),
    as columns. Called in stream order, possibly several times, each time with the next PDUs."""


def gather_heads(
    buffer: npt.NDArray[np.uint8], start: npt.NDArray[np.int64], length: npt.NDArray[np.int64], width: int
) -> npt.NDArray[np.uint8]:
    """The first ``width`` bytes at each ``start`` (at most ``length`` of them), zero-padded. Bytes
    past the end of the buffer read as zero; a negative start reads from 0."""
    m = start.shape[0]
    heads = np.zeros((m, width), dtype=np.uint8)
    if m == 0 or buffer.shape[0] == 0 or width == 0:
        return heads
    _gather_heads(buffer, np.asarray(start, dtype=np.int64), np.asarray(length, dtype=np.int64), heads)
    return heads


def _gather_heads_py(
    buffer: npt.NDArray[np.uint8],
    start: npt.NDArray[np.int64],
    length: npt.NDArray[np.int64],
    heads: npt.NDArray[np.uint8],
) -> None:
    """Fill the zeroed ``heads`` (shape (m, width)) row by row (a compiled loop)."""
    size = buffer.shape[0]
    width = heads.shape[1]
    for i in range(start.shape[0]):
        first = min(max(start[i], 0), size)
        count = min(max(length[i], 0), width, size - first)
        heads[i, :count] = buffer[first : first + count]


_gather_heads = numba.njit(cache=True, nogil=True)(_gather_heads_py)


def binary_array(
    buffer: npt.NDArray[np.uint8], start: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
) -> pa.Array:
    """An Arrow ``binary`` array of the byte ranges ``buffer[start[i] : start[i] + length[i]]``."""
    length = np.asarray(length, dtype=np.int64)
    offsets = np.zeros(length.shape[0] + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    total = int(offsets[-1])
    data = np.empty(total, dtype=np.uint8)
    if total:
        _gather_ranges(buffer, np.asarray(start, dtype=np.int64), length, offsets, data)
    return pa.Array.from_buffers(
        pa.binary(), length.shape[0], [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    )


def compact_ranges(
    buffer: npt.NDArray[np.uint8], start: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
) -> npt.NDArray[np.uint8]:
    """The byte ranges ``buffer[start[i] : start[i] + length[i]]`` copied one after the other."""
    length = np.asarray(length, dtype=np.int64)
    offsets = np.zeros(length.shape[0] + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    if data.shape[0]:
        _gather_ranges(buffer, np.asarray(start, dtype=np.int64), length, offsets, data)
    return data


def _gather_ranges_py(
    buffer: npt.NDArray[np.uint8],
    start: npt.NDArray[np.int64],
    length: npt.NDArray[np.int64],
    offsets: npt.NDArray[np.int64],
    out: npt.NDArray[np.uint8],
) -> None:
    """Copy ``buffer[start[i] : start[i] + length[i]]`` to ``out[offsets[i]:]`` for every range (a
    compiled loop: no index array of the output's size, as a numpy gather would need)."""
    for i in range(start.shape[0]):
        size = length[i]
        out[offsets[i] : offsets[i] + size] = buffer[start[i] : start[i] + size]


_gather_ranges = numba.njit(cache=True, nogil=True)(_gather_ranges_py)


# ---------------------------------------------------------------- event schemas

_SCALARS: dict[object, pa.DataType] = {
    int: pa.int64(),
    bool: pa.bool_(),
    str: pa.string(),
    float: pa.float64(),
    bytes: pa.binary(),
}


def _arrow_type(hint: object) -> pa.DataType:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return _arrow_type(args[0])
    if origin is list:
        (item,) = typing.get_args(hint)
        return pa.list_(_arrow_type(item))
    if hint in _SCALARS:
        return _SCALARS[hint]
    raise TypeError(f"event field type {hint!r} has no Arrow mapping")


def event_schema(event_type: type[Event]) -> pa.Schema:
    """The Arrow schema of an event type, derived from its dataclass fields and type hints."""
    hints = typing.get_type_hints(event_type)
    fields = []
    for f in dataclasses.fields(event_type):
        hint = hints[f.name]
        nullable = type(None) in typing.get_args(hint)
        arrow = pa.timestamp("ns", tz="UTC") if f.name == "ts" else _arrow_type(hint)
        fields.append(pa.field(f.name, arrow, nullable=nullable))
    return pa.schema(fields)


def event_fields(event_type: type[Event]) -> list[str]:
    return [f.name for f in dataclasses.fields(event_type)]


def events_table(event_type: type[Event], events: list[Event], schema: pa.Schema | None = None) -> pa.Table:
    """An Arrow table of events of one type (the inverse of :func:`events_of_table`)."""
    names = [f.name for f in dataclasses.fields(event_type)]
    getter = operator.attrgetter(*names)
    rows = map(getter, events) if len(names) > 1 else ((getter(e),) for e in events)
    columns = dict(zip(names, map(list, zip(*rows, strict=True)), strict=True))
    if not events:
        columns = {name: [] for name in names}
    return pa.Table.from_pydict(columns, schema=schema if schema is not None else event_schema(event_type))


def events_of_table(event_type: type[Event], table: pa.Table) -> list[Event]:
    """Event objects from an Arrow table of events (``ts`` as ns since the epoch)."""
    columns = [
        (column.cast(pa.int64()) if name == "ts" else column).to_pylist()
        for name, column in zip(table.column_names, table.columns, strict=True)
    ]
    if not table.num_rows:
        return []
    key = (event_type, tuple(table.column_names))
    make = _CONSTRUCTORS.get(key)
    if make is None:
        make = _CONSTRUCTORS[key] = _constructor(*key)
    return list(map(make, *columns))


_CONSTRUCTORS: dict[tuple[type[Event], tuple[str, ...]], Callable[..., Event]] = {}


def _constructor(event_type: type[Event], names: tuple[str, ...]) -> Callable[..., Event]:
    """A function of the values of ``names`` (in that order) making ``event_type(name=value, ...)``:
    table rows become events without a dict per row. When ``names`` are all the fields of a slotted
    event type without ``__post_init__``, the fields are set through their slot descriptors, which is
    what the frozen dataclass ``__init__`` does, minus its per-field name lookups."""
    fields = [f.name for f in dataclasses.fields(event_type)]
    if not set(names) <= set(fields):
        raise ValueError(f"{event_type.__name__} has no fields {sorted(set(names) - set(fields))}")
    params = ", ".join(f"v{i}" for i in range(len(names)))
    namespace: dict[str, Any] = {"event_type": event_type, "new": object.__new__}
    slots = {name: getattr(event_type, name, None) for name in names}
    if (
        sorted(names) == sorted(fields)
        and not hasattr(event_type, "__post_init__")
        and all(type(slot) is types.MemberDescriptorType for slot in slots.values())
    ):
        lines = [f"def make({params}):", "    event = new(event_type)"]
        for i, name in enumerate(names):
            namespace[f"set{i}"] = slots[name].__set__  # type: ignore[union-attr]
            lines.append(f"    set{i}(event, v{i})")
        lines.append("    return event")
    else:
        keywords = ", ".join(f"{name}=v{i}" for i, name in enumerate(names))
        lines = [f"def make({params}):", f"    return event_type({keywords})"]
    exec("\n".join(lines) + "\n", namespace)  # noqa: S102 - generated from field names only
    make: Callable[..., Event] = namespace["make"]
    return make
