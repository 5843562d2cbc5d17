"""The dissector contract: FieldWard's plugin SDK for protocols.

A dissector is one class in one module. It declares how its protocol is recognised (transports,
well-known ports as a hint, and a content check: the port alone never decides), how a TCP byte stream
is cut into PDUs (:meth:`Dissector.frame`), and how one PDU or UDP datagram becomes typed events
(:meth:`Dissector.parse`). The engine (:mod:`fieldward.protocols.engine`) does everything else: flow
tracking, TCP reassembly, buffering, confinement of exceptions, and writing events to Parquet.

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

import pyarrow as pa


class Transport(StrEnum):
    TCP = "tcp"
    UDP = "udp"


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


class PduContext:
    """Passed to :meth:`Dissector.parse`: where the PDU came from, and how to report results."""

    __slots__ = ("_emit", "_weird", "flow", "is_orig", "protocol", "ts")

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
        self._emit = emit
        self._weird = weird

    def where(self) -> dict[str, Any]:
        """The :class:`Event` base fields for a PDU seen now: ``MyEvent(**ctx.where(), ...)``."""
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
    event_types: ClassVar[tuple[type[Event], ...]] = ()

    def __init__(self, flow: FlowInfo) -> None:
        self.flow = flow

    @classmethod
    @abstractmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        """Look at the first payload of a flow (``sport``/``dport`` are its sender's and receiver's)."""

    def frame(self, data: bytes, is_orig: bool) -> int:
        """TCP only: length of the complete PDU at the start of ``data``.

        Return 0 when more bytes are needed, or -1 when ``data`` does not start with a valid PDU
        (the engine then drops the buffered bytes, counts a weird and resynchronises on the next
        segment). The default treats every delivered chunk as one PDU.
        """
        return len(data)

    @abstractmethod
    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        """Turn one PDU (TCP) or datagram (UDP) into events with ``ctx.emit``."""

    def close(self, ctx: PduContext) -> None:  # noqa: B027 - optional hook
        """The flow ended: report anything still pending (e.g. unanswered requests)."""


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
