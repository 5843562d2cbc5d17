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
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, ClassVar

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
