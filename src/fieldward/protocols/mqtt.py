"""MQTT dissector: MQTT 3.1, 3.1.1 and 5.0 over TCP.

What is covered, with the specification it follows:

- the fixed header and its Variable Byte Integer "remaining length" (*MQTT Version 3.1.1*, OASIS
  Standard, section 2.2; *MQTT Version 5.0*, OASIS Standard, sections 1.5.5 and 2.1);
- every control packet: CONNECT (protocol name and level, connect flags, keep alive, client id, will
  topic/payload/QoS/retain, whether a user name and a password are present: **never the password**;
  the user name / password pair is looked up once in the default credential lists of
  :mod:`fieldward.protocols.credentials` and only the names of the lists holding it are kept,
  ``default_credential``),
  CONNACK (session present, return code or v5 reason code), PUBLISH (topic, QoS, retain, dup, packet
  identifier, payload size), PUBACK/PUBREC/PUBREL/PUBCOMP, SUBSCRIBE/SUBACK, UNSUBSCRIBE/UNSUBACK,
  PINGREQ/PINGRESP, DISCONNECT (v5 reason code) and AUTH (v5);
- MQTT 5 properties (section 2.2.2.2), parsed by type so that they are skipped exactly; the topic
  alias, authentication method and assigned client identifier are used.

Events follow Zeek's MQTT logs, which combine packets (Zeek ``base/protocols/mqtt/main.zeek``):
``mqtt_connect`` is a CONNECT with its CONNACK, ``mqtt_publish`` a PUBLISH with its QoS 1/2
acknowledgements (``status`` ``ok`` or ``incomplete_qos``), ``mqtt_subscribe`` a SUBSCRIBE or
UNSUBSCRIBE with its SUBACK/UNSUBACK. One ``mqtt`` event per flow summarises the session: packets per
side, pings, DISCONNECT and AUTH.

Recognition is by content: a CONNECT (``MQTT`` level 4/5 or ``MQIsdp`` level 3) on any port, and on
port 1883 also a well-formed first packet of another type (a capture that starts mid-session). MQTT
over TLS (port 8883) is left to the TLS dissector: the engine gives a flow to one dissector, and only
the TLS handshake is readable there. Malformed packets are reported as ``mqtt_*`` weirds.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from fieldward.protocols.base import (
    BatchResult,
    Datagrams,
    Dissector,
    Event,
    EventColumns,
    FlowInfo,
    PduContext,
    Transport,
    Verdict,
    binary_array,
)
from fieldward.protocols.credentials import DefaultCredentials

MQTT_PORT = 1883
PORTS = frozenset({MQTT_PORT})

MAX_PAYLOAD_BYTES = 100
"""Payload bytes kept in events (Zeek's default ``MQTT::max_payload_size``); the length is exact."""
MAX_PENDING = 1024
"""Unacknowledged PUBLISH and SUBSCRIBE/UNSUBSCRIBE packets remembered per flow (oldest logged first)."""
MAX_TOPIC_ALIASES = 4096
"""MQTT 5 topic aliases remembered per flow direction."""
MAX_VARINT_BYTES = 4

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15

PACKET_TYPES: dict[int, str] = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
}
FLAGS_0010 = frozenset({PUBREL, SUBSCRIBE, UNSUBSCRIBE})
"""Packet types whose fixed-header flags must be 0b0010 (3.1.1 table 2.2, 5.0 table 2-2)."""
CLIENT_ONLY = frozenset({CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ})
SERVER_ONLY = frozenset({CONNACK, SUBACK, UNSUBACK, PINGRESP})

PROTOCOL_NAMES: dict[int, str] = {3: "MQIsdp", 4: "MQTT", 5: "MQTT"}
"""Protocol name of each protocol level (3 = MQTT 3.1, 4 = 3.1.1, 5 = 5.0)."""
VERSIONS: dict[int, str] = {3: "3.1", 4: "3.1.1", 5: "5.0"}
"""Zeek's ``MQTT::versions``."""
QOS_NAMES: dict[int, str] = {0: "at most once", 1: "at least once", 2: "exactly once"}
"""Zeek's ``MQTT::qos_levels``."""
RETURN_CODES: dict[int, str] = {
    0: "Connection Accepted",
    1: "Refused: unacceptable protocol version",
    2: "Refused: identifier rejected",
    3: "Refused: server unavailable",
    4: "Refused: bad user name or password",
    5: "Refused: not authorized",
}
"""CONNACK return codes of MQTT 3.1/3.1.1, as Zeek's ``MQTT::return_codes`` names them."""
REASON_CODES: dict[int, str] = {
    0x00: "Success",
    0x01: "Granted QoS 1",
    0x02: "Granted QoS 2",
    0x04: "Disconnect with Will Message",
    0x10: "No matching subscribers",
    0x11: "No subscription existed",
    0x18: "Continue authentication",
    0x19: "Re-authenticate",
    0x80: "Unspecified error",
    0x81: "Malformed Packet",
    0x82: "Protocol Error",
    0x83: "Implementation specific error",
    0x84: "Unsupported Protocol Version",
    0x85: "Client Identifier not valid",
    0x86: "Bad User Name or Password",
    0x87: "Not authorized",
    0x88: "Server unavailable",
    0x89: "Server busy",
    0x8A: "Banned",
    0x8B: "Server shutting down",
    0x8C: "Bad authentication method",
    0x8D: "Keep Alive timeout",
    0x8E: "Session taken over",
    0x8F: "Topic Filter invalid",
    0x90: "Topic Name invalid",
    0x91: "Packet Identifier in use",
    0x92: "Packet Identifier not found",
    0x93: "Receive Maximum exceeded",
    0x94: "Topic Alias invalid",
    0x95: "Packet too large",
    0x96: "Message rate too high",
    0x97: "Quota exceeded",
    0x98: "Administrative action",
    0x99: "Payload format invalid",
    0x9A: "Retain not supported",
    0x9B: "QoS not supported",
    0x9C: "Use another server",
    0x9D: "Server moved",
    0x9E: "Shared Subscriptions not supported",
    0x9F: "Connection rate exceeded",
    0xA0: "Maximum connect time",
    0xA1: "Subscription Identifiers not supported",
    0xA2: "Wildcard Subscriptions not supported",
}
"""MQTT 5.0 reason codes (section 2.4, table 2-6); code 0 is named per packet, see :func:`reason_name`."""

# MQTT 5.0 properties (section 2.2.2.2, table 2-4): identifier -> value type.
# b: byte, h: two-byte integer, i: four-byte integer, v: variable byte integer, s: UTF-8 string,
# d: binary data, p: UTF-8 string pair.
PROPERTY_TYPES: dict[int, str] = {
    0x01: "b",  # Payload Format Indicator
    0x02: "i",  # Message Expiry Interval
    0x03: "s",  # Content Type
    0x08: "s",  # Response Topic
    0x09: "d",  # Correlation Data
    0x0B: "v",  # Subscription Identifier
    0x11: "i",  # Session Expiry Interval
    0x12: "s",  # Assigned Client Identifier
    0x13: "h",  # Server Keep Alive
    0x15: "s",  # Authentication Method
    0x16: "d",  # Authentication Data
    0x17: "b",  # Request Problem Information
    0x18: "i",  # Will Delay Interval
    0x19: "b",  # Request Response Information
    0x1A: "s",  # Response Information
    0x1C: "s",  # Server Reference
    0x1F: "s",  # Reason String
    0x21: "h",  # Receive Maximum
    0x22: "h",  # Topic Alias Maximum
    0x23: "h",  # Topic Alias
    0x24: "b",  # Maximum QoS
    0x25: "b",  # Retain Available
    0x26: "p",  # User Property
    0x27: "i",  # Maximum Packet Size
    0x28: "b",  # Wildcard Subscription Available
    0x29: "b",  # Subscription Identifier Available
    0x2A: "b",  # Shared Subscription Available
}
PROP_ASSIGNED_CLIENT_ID = 0x12
PROP_AUTH_METHOD = 0x15
PROP_TOPIC_ALIAS = 0x23

STATUS_OK = "ok"
STATUS_INCOMPLETE = "incomplete_qos"
STATUS_ERROR = "error"


def version_name(level: int) -> str:
    """Zeek's ``MQTT::versions``: ``3.1``, ``3.1.1``, ``5.0`` or ``unknown-version-<n>``."""
    return VERSIONS.get(level, f"unknown-version-{level}")


def qos_name(qos: int) -> str:
    return QOS_NAMES.get(qos, f"unknown-qos-level-{qos}")


def connect_status(level: int | None, code: int) -> str:
    """Name of a CONNACK code: Zeek's ``MQTT::return_codes`` up to 3.1.1, the reason code in 5.0."""
    if level == 5:
        return reason_name(CONNACK, code)
    return RETURN_CODES.get(code, f"unknown-return-code-{code}")


def reason_name(packet_type: int, code: int) -> str:
    """Name of an MQTT 5 reason code in a packet of ``packet_type`` (code 0 differs by packet)."""
    if code == 0:
        return {DISCONNECT: "Normal disconnection", SUBACK: "Granted QoS 0"}.get(packet_type, "Success")
    return REASON_CODES.get(code, f"unknown-reason-code-{code}")


# ---------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttConnect(Event):
    """A CONNECT and its CONNACK (``events/mqtt_connect.parquet``), like Zeek's ``mqtt_connect.log``.

    Either half may be missing: a CONNECT never answered is logged when the flow ends (``connack``
    False), a CONNACK whose CONNECT was not seen is logged with the CONNECT fields unset.
    """

    log: ClassVar[str] = "mqtt_connect"

    proto_name: str | None = None
    proto_version: str | None = None
    protocol_level: int | None = None
    client_id: str | None = None
    username_present: bool | None = None
    password_present: bool | None = None
    default_credential: str | None = None
    """Names of the default credential lists holding the CONNECT's user name / password pair (joined by
    commas); None when no list does or either is absent. Neither is kept."""
    keep_alive: int | None = None
    clean_session: bool | None = None
    will_flag: bool | None = None
    will_qos: int | None = None
    will_retain: bool | None = None
    will_topic: str | None = None
    will_payload: bytes | None = None
    will_payload_len: int | None = None
    auth_method: str | None = None
    connack: bool = False
    session_present: bool | None = None
    return_code: int | None = None
    connect_status: str | None = None
    assigned_client_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttPublish(Event):
    """A PUBLISH and its QoS handshake (``events/mqtt_publish.parquet``), like Zeek's ``mqtt_publish.log``."""

    log: ClassVar[str] = "mqtt_publish"

    from_client: bool
    packet_id: int | None
    topic: str
    topic_alias: int | None = None
    qos: int
    qos_name: str
    retain: bool
    dup: bool
    payload: bytes
    payload_len: int
    status: str
    ack: bool = False
    rec: bool = False
    rel: bool = False
    comp: bool = False
    reason_codes: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSubscribe(Event):
    """A SUBSCRIBE or UNSUBSCRIBE and its acknowledgement (``events/mqtt_subscribe.parquet``)."""

    log: ClassVar[str] = "mqtt_subscribe"

    action: str
    packet_id: int
    topics: list[str]
    qos_levels: list[int] | None = None
    ack: bool = False
    reason_codes: list[int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSession(Event):
    """One MQTT connection (``events/mqtt.parquet``), logged when the flow ends."""

    log: ClassVar[str] = "mqtt"

    proto_name: str | None = None
    proto_version: str | None = None
    client_id: str | None = None
    client_packets: int = 0
    server_packets: int = 0
    pingreq: int = 0
    pingresp: int = 0
    disconnect_from_client: bool = False
    disconnect_from_server: bool = False
    disconnect_reason_code: int | None = None
    disconnect_reason: str | None = None
    auth_method: str | None = None
    auth_reason_codes: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------- wire reading


class _TruncatedError(Exception):
    """A field runs past the end of the packet (internal: becomes the weird ``mqtt_truncated``)."""


class _Reader:
    """Reads MQTT data types from one packet body; every read checks the length first."""

    __slots__ = ("bad_utf8", "data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.bad_utf8 = False

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise _TruncatedError(f"{n} bytes wanted, {self.end - self.pos} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def varint(self) -> int:
        value, used = decode_varint(self.data, self.pos, self.end)
        if value < 0:
            raise _TruncatedError("variable byte integer")
        self.pos += used
        return value

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        raw = self.binary()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.bad_utf8 = True
            return raw.decode("utf-8", "backslashreplace")
        if "\x00" in text:
            self.bad_utf8 = True
        return text

    def rest(self) -> bytes:
        return self.take(self.remaining)


VARINT_INCOMPLETE = -1
VARINT_TOO_LONG = -2


def decode_varint(data: bytes, offset: int, end: int | None = None) -> tuple[int, int]:
    """A Variable Byte Integer at ``offset`` (read up to ``end``): (value, bytes used).

    Returns (``VARINT_INCOMPLETE``, 0) when the data ends inside it and (``VARINT_TOO_LONG``, 4) when
    its fourth byte still has the continuation bit set (more than 4 bytes: malformed).
    """
    end = len(data) if end is None else end
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if offset + i >= end:
            return VARINT_INCOMPLETE, 0
        byte = data[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    return VARINT_TOO_LONG, MAX_VARINT_BYTES


def _properties(reader: _Reader, ctx: PduContext, where: str) -> dict[int, Any]:
    """Read an MQTT 5 property block; returns the last value of each property (user properties dropped).

    The block's length is trusted to skip it exactly; an unknown identifier or a value running past the
    block is reported and the rest of the block skipped.
    """
    length = reader.varint()
    block = _Reader(reader.data, reader.pos, reader.pos + length)
    if length > reader.remaining:
        raise _TruncatedError(f"{where} properties of {length} bytes, {reader.remaining} left")
    reader.pos += length
    found: dict[int, Any] = {}
    try:
        while block.remaining:
            ident = block.varint()
            kind = PROPERTY_TYPES.get(ident)
            if kind is None:
                ctx.weird("mqtt_bad_property", f"{where}: unknown property identifier {ident:#04x}")
                break
            value: Any
            if kind == "b":
                value = block.u8()
            elif kind == "h":
                value = block.u16()
            elif kind == "i":
                value = block.u32()
            elif kind == "v":
                value = block.varint()
            elif kind == "s":
                value = block.string()
            elif kind == "d":
                value = block.binary()
            else:
                value = (block.string(), block.string())
            found[ident] = value
    except _TruncatedError:
        ctx.weird("mqtt_bad_property", f"{where}: a property runs past the end of the property block")
    if block.bad_utf8:
        reader.bad_utf8 = True
    return found


# ---------------------------------------------------------------------- recognition helpers


def _connect_verdict(data: bytes) -> Verdict:
    """Whether ``data`` starts with an MQTT CONNECT (any MQTT version), judged on its variable header."""
    if not data:
        return Verdict.MAYBE
    if data[0] != CONNECT << 4:
        return Verdict.NO
    length, used = decode_varint(data, 1)
    if length == VARINT_TOO_LONG:
        return Verdict.NO
    if length == VARINT_INCOMPLETE:
        return Verdict.MAYBE
    start = 1 + used
    for level, name in ((4, b"MQTT"), (5, b"MQTT"), (3, b"MQIsdp")):
        expected = struct.pack(">H", len(name)) + name + bytes([level])
        head = data[start : start + len(expected) + 1]
        if head[: len(expected)] != expected[: len(head)]:
            continue
        if len(head) <= len(expected):
            return Verdict.MAYBE
        flags = head[-1]
        # minimum: name, level, flags, keep alive (2) and an empty client id (2).
        ok = not flags & 0x01 and length >= len(expected) + 5
        return Verdict.YES if ok else Verdict.NO
    return Verdict.NO


def _packet_shape_ok(data: bytes) -> Verdict:
    """On the MQTT port, mid-session: is the first packet a plausible non-CONNECT control packet?"""
    if not data:
        return Verdict.MAYBE
    kind, flags = data[0] >> 4, data[0] & 0x0F
    if kind in (0, CONNECT):
        return Verdict.NO
    if kind == PUBLISH:
        if (flags >> 1) & 3 == 3:
            return Verdict.NO
    elif flags != (2 if kind in FLAGS_0010 else 0):
        return Verdict.NO
    length, used = decode_varint(data, 1)
    if length == VARINT_TOO_LONG:
        return Verdict.NO
    if length == VARINT_INCOMPLETE:
        return Verdict.MAYBE
    if kind in (PINGREQ, PINGRESP) and length:
        return Verdict.NO
    if kind in (CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK) and length < 2:
        return Verdict.NO
    if kind in (SUBSCRIBE, UNSUBSCRIBE, SUBACK) and length < 3:
        return Verdict.NO
    body = data[1 + used : 1 + used + length]
    if len(body) < length:
        return Verdict.MAYBE
    if kind == CONNACK:
        return Verdict.YES if body[0] <= 1 else Verdict.NO
    if kind == PUBLISH:
        if length < 2:
            return Verdict.NO
        topic_len = struct.unpack_from(">H", body)[0]
        if topic_len == 0 or 2 + topic_len + (2 if flags & 6 else 0) > length:
            return Verdict.NO
        try:
            topic = body[2 : 2 + topic_len].decode("utf-8")
        except UnicodeDecodeError:
            return Verdict.NO
        return Verdict.NO if any(c in topic for c in "#+\x00") else Verdict.YES
    return Verdict.YES


# ---------------------------------------------------------------------- per-flow state


@dataclass(slots=True)
class _PendingConnect:
    where: dict[str, Any]
    fields: dict[str, Any]


@dataclass(slots=True)
class _PendingPublish:
    where: dict[str, Any]
    fields: dict[str, Any]
    qos: int
    ack: bool = False
    rec: bool = False
    rel: bool = False
    comp: bool = False
    reason_codes: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _PendingSubscribe:
    where: dict[str, Any]
    action: str
    packet_id: int
    topics: list[str]
    qos_levels: list[int] | None


@dataclass(slots=True)
class _Session:
    where: dict[str, Any] | None = None
    proto_name: str | None = None
    proto_version: str | None = None
    client_id: str | None = None
    client_packets: int = 0
    server_packets: int = 0
    pingreq: int = 0
    pingresp: int = 0
    disconnect_from_client: bool = False
    disconnect_from_server: bool = False
    disconnect_reason_code: int | None = None
    auth_method: str | None = None
    auth_reason_codes: list[int] = field(default_factory=list)


class MqttDissector(Dissector):
    """MQTT 3.1 / 3.1.1 / 5.0 over TCP."""

    name = "mqtt"
    description = "MQTT 3.1/3.1.1/5.0: connect, publish with its QoS handshake, subscribe, sessions"
    transports = frozenset({Transport.TCP})
    ports = PORTS
    event_types = (MqttConnect, MqttPublish, MqttSubscribe, MqttSession)

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        # The client is the originator unless only the originator's port is the broker port; a CONNECT
        # settles it.
        self._client_is_orig = not (flow.orig_p in PORTS and flow.resp_p not in PORTS)
        self._level: int | None = None
        self._connect: _PendingConnect | None = None
        self._publishes: dict[tuple[bool, int], _PendingPublish] = {}
        self._subscribes: dict[int, _PendingSubscribe] = {}
        self._aliases: tuple[dict[int, str], dict[int, str]] = ({}, {})
        self._session = _Session()

    # ------------------------------------------------------------------ recognition and framing

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if transport != Transport.TCP:
            return Verdict.NO
        verdict = _connect_verdict(data)
        if verdict == Verdict.NO and MQTT_PORT in (sport, dport):
            verdict = _packet_shape_ok(data)
        return verdict

    def frame(self, data: bytes, is_orig: bool) -> int:
        if not data:
            return 0
        length, used = decode_varint(data, 1)
        if length == VARINT_TOO_LONG:
            return -1
        if length == VARINT_INCOMPLETE:
            return 0
        size = 1 + used + length
        return size if len(data) >= size else 0

    @classmethod
    def parse_pdu_batch(cls, pdus: Datagrams) -> BatchResult:
        """QoS 0 PUBLISH packets of the common shape, vectorized: minimal remaining length, a non-empty
        ASCII topic without wildcards or NUL, and (checked per flow by ``apply``, which also counts the
        packet for the session) a protocol level below 5 (no properties). Their ``mqtt_publish`` row
        is fixed by the packet alone. Every other packet goes to :meth:`parse`."""
        fast = _FastPublish(pdus)
        return BatchResult(fast.handled, apply=fast.apply, build=fast.build)

    # ------------------------------------------------------------------ parsing

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        if not pdu:
            return
        session = self._session
        if session.where is None:
            session.where = ctx.where()
        kind, flags = pdu[0] >> 4, pdu[0] & 0x0F
        length, used = decode_varint(pdu, 1)
        if length < 0:
            ctx.weird("mqtt_truncated", f"fixed header of {len(pdu)} bytes has no complete remaining length")
            return
        if 1 + used + length != len(pdu):
            ctx.weird(
                "mqtt_length_mismatch", f"remaining length {length}, {len(pdu) - 1 - used} bytes present"
            )
            return
        if used > 1 and pdu[used] == 0:
            ctx.weird("mqtt_non_minimal_length", f"remaining length {length} encoded in {used} bytes")
        if kind == CONNECT:
            self._client_is_orig = ctx.is_orig
        from_client = ctx.is_orig == self._client_is_orig
        if from_client:
            session.client_packets += 1
        else:
            session.server_packets += 1
        if kind == 0 or (kind == AUTH and self._level is not None and self._level < 5):
            ctx.weird("mqtt_reserved_packet_type", f"packet type {kind}")
            return
        if kind != PUBLISH and flags != (2 if kind in FLAGS_0010 else 0):
            ctx.weird("mqtt_bad_flags", f"{PACKET_TYPES[kind]} with fixed-header flags {flags:#06b}")
        if (kind in CLIENT_ONLY and not from_client) or (kind in SERVER_ONLY and from_client):
            side = "client" if from_client else "server"
            ctx.weird("mqtt_wrong_direction", f"{PACKET_TYPES[kind]} sent by the {side}")
        reader = _Reader(pdu, 1 + used)
        try:
            self._HANDLERS[kind](self, reader, flags, from_client, ctx)
        except _TruncatedError as exc:
            ctx.weird("mqtt_truncated", f"{PACKET_TYPES[kind]}: {exc}")
        if reader.bad_utf8:
            ctx.weird("mqtt_bad_utf8", f"{PACKET_TYPES[kind]} holds a string that is not valid UTF-8")

    def close(self, ctx: PduContext) -> None:
        if self._connect is not None:
            self._emit_connect(ctx, self._connect, None)
        for pending in list(self._publishes.values()):
            self._emit_publish(ctx, pending, STATUS_INCOMPLETE)
        self._publishes.clear()
        for sub in list(self._subscribes.values()):
            self._emit_subscribe(ctx, sub, ack=False, codes=None)
        self._subscribes.clear()
        s = self._session
        if s.where is None:
            return
        reason = None
        if s.disconnect_reason_code is not None:
            reason = reason_name(DISCONNECT, s.disconnect_reason_code)
        ctx.emit(
            MqttSession(
                **s.where,
                proto_name=s.proto_name,
                proto_version=s.proto_version,
                client_id=s.client_id,
                client_packets=s.client_packets,
                server_packets=s.server_packets,
                pingreq=s.pingreq,
                pingresp=s.pingresp,
                disconnect_from_client=s.disconnect_from_client,
                disconnect_from_server=s.disconnect_from_server,
                disconnect_reason_code=s.disconnect_reason_code,
                disconnect_reason=reason,
                auth_method=s.auth_method,
                auth_reason_codes=list(s.auth_reason_codes),
            )
        )
        self._session = _Session()

    # ------------------------------------------------------------------ packets

    def _connect_packet(self, r: _Reader, flags: int, from_client: bool, ctx: PduContext) -> None:
        self._flush_connect(ctx)
        proto_name = r.string()
        level = r.u8()
        connect_flags = r.u8()
        keep_alive = r.u16()
        if level in VERSIONS:
            self._level = level
        else:
            ctx.weird("mqtt_unknown_protocol_level", f"protocol level {level}")
        if proto_name != PROTOCOL_NAMES.get(level, proto_name) or proto_name not in ("MQTT", "MQIsdp"):
            ctx.weird("mqtt_bad_protocol_name", f"protocol name {proto_name!r} with level {level}")
        will = bool(connect_flags & 0x04)
        will_qos = (connect_flags >> 3) & 3
        will_retain = bool(connect_flags & 0x20)
        username = bool(connect_flags & 0x80)
        password = bool(connect_flags & 0x40)
        if connect_flags & 0x01:
            ctx.weird("mqtt_bad_connect_flags", "reserved connect flag bit 0 is set")
        if will_qos == 3 or (not will and (will_qos or will_retain)):
            ctx.weird(
                "mqtt_bad_connect_flags", f"will QoS {will_qos}, retain {will_retain}, will flag {will}"
            )
        if password and not username and level in (3, 4):
            ctx.weird("mqtt_bad_connect_flags", "password flag without user name flag (MQTT 3.1.1 3.1.2-22)")
        session = self._session
        session.proto_name, session.proto_version = proto_name, version_name(level)
        fields: dict[str, Any] = {
            "proto_name": proto_name,
            "proto_version": version_name(level),
            "protocol_level": level,
            "username_present": username,
            "password_present": password,
            "keep_alive": keep_alive,
            "clean_session": bool(connect_flags & 0x02),
            "will_flag": will,
            "will_qos": will_qos,
            "will_retain": will_retain,
        }
        self._connect = _PendingConnect(ctx.where(), fields)
        if level == 5:
            props = _properties(r, ctx, "CONNECT")
            if PROP_AUTH_METHOD in props:
                fields["auth_method"] = session.auth_method = props[PROP_AUTH_METHOD]
        fields["client_id"] = session.client_id = r.string()
        if will:
            if level == 5:
                _properties(r, ctx, "CONNECT will")
            fields["will_topic"] = r.string()
            payload = r.binary()
            fields["will_payload"] = payload[:MAX_PAYLOAD_BYTES]
            fields["will_payload_len"] = len(payload)
        user = r.binary() if username else None  # the user name is not kept either: presence only
        secret = r.binary() if password else None  # never kept, never logged
        if user is not None and secret is not None:
            # One lookup per CONNECT, while the pair is in memory: only list names survive it.
            fields["default_credential"] = DefaultCredentials.load().label(user, secret)
        if r.remaining:
            ctx.weird("mqtt_trailing_bytes", f"CONNECT: {r.remaining} bytes after the payload")

    def _connack_packet(self, r: _Reader, flags: int, from_client: bool, ctx: PduContext) -> None:
        ack_flags, code = r.u8(), r.u8()
        if ack_flags & 0xFE:
            ctx.weird("mqtt_bad_flags", f"CONNACK acknowledge flags {ack_flags:#04x}")
        fields: dict[str, Any] = {
            "connack": True,
            "session_present": bool(ack_flags & 0x01),
            "return_code": code,
            "connect_status": connect_status(self._level, code),
        }
        if self._level == 5:
            props = _properties(r, ctx, "CONNACK")
            if PROP_ASSIGNED_CLIENT_ID in props:
                fields["assigned_client_id"] = props[PROP_ASSIGNED_CLIENT_ID]
        elif r.remaining:
            ctx.weird("mqtt_trailing_bytes", f"CONNACK: {r.remaining} bytes after the return code")
        pending = self._connect or _PendingConnect(ctx.where(), {})
        self._connect = None
        self._emit_connect(ctx, pending, fields)

    def _publish_packet(self, r: _Reader, flags: int, from_client: bool, ctx: PduContext) -> None:
        qos, dup, retain = (flags >> 1) & 3, bool(flags & 0x08), bool(flags & 0x01)
        if qos == 3:
            ctx.weird("mqtt_bad_qos", "PUBLISH with QoS 3")
        elif qos == 0 and dup:
            ctx.weird("mqtt_bad_flags", "PUBLISH with QoS 0 and DUP set")
        topic = r.string()
        packet_id = r.u16() if qos else None
        if packet_id == 0:
            ctx.weird("mqtt_zero_packet_id", "PUBLISH with QoS > 0 and packet identifier 0")
        alias = None
        if self._level == 5:
            alias = _properties(r, ctx, "PUBLISH").get(PROP_TOPIC_ALIAS)
        topic = self._resolve_topic(topic, alias, ctx)
        payload = r.rest()
        fields: dict[str, Any] = {
            "from_client": from_client,
            "packet_id": packet_id,
            "topic": topic,
            "topic_alias": alias,
            "qos": qos,
            "qos_name": qos_name(qos),
            "retain": retain,
            "dup": dup,
            "payload": payload[:MAX_PAYLOAD_BYTES],
            "payload_len": len(payload),
        }
        pending = _PendingPublish(ctx.where(), fields, qos)
        if packet_id is None or qos not in (1, 2):
            self._emit_publish(ctx, pending, STATUS_OK if qos == 0 else STATUS_INCOMPLETE)
            return
        key = (ctx.is_orig, packet_id)
        old = self._publishes.get(key)
        if old is not None:
            if dup:
                return  # a retransmission of the message already waiting for its acknowledgement
            self._emit_publish(ctx, self._publishes.pop(key), STATUS_INCOMPLETE)
        if len(self._publishes) >= MAX_PENDING:
            oldest = next(iter(self._publishes))
            self._emit_publish(ctx, self._publishes.pop(oldest), STATUS_INCOMPLETE)
        self._publishes[key] = pending

    def _resolve_topic(self, topic: str, alias: int | None, ctx: PduContext) -> str:
        aliases = self._aliases[0 if ctx.is_orig else 1]
        if alias is not None:
            if alias == 0:
                ctx.weird("mqtt_bad_topic_alias", "topic alias 0")
            elif topic:
                if alias in aliases or len(aliases) < MAX_TOPIC_ALIASES:
                    aliases[alias] = topic
            elif alias in aliases:
                return aliases[alias]
            else:
                ctx.weird("mqtt_bad_topic_alias", f"topic alias {alias} used before it was set")
            return topic
        if not topic:
            ctx.weird("mqtt_empty_topic", "PUBLISH with an empty topic name and no topic alias")
        elif "#" in topic or "+" in topic:
            ctx.weird("mqtt_wildcard_in_topic", f"PUBLISH topic name {topic[:64]!r} holds a wildcard")
        return topic

    def _ack_packet(self, r: _Reader, flags: int, from_client: bool, ctx: PduContext) -> None:
        """PUBACK, PUBREC, PUBREL or PUBCOMP: advance the QoS handshake of the PUBLISH it answers."""
        kind = r.data[0] >> 4
        packet_id = r.u16()
        code = None
        if self._level == 5:
            if r.remaining:
                code = r.u8()
            if r.remaining:
                _properties(r, ctx, PACKET_TYPES[kind])
        if r.remaining:
            ctx.weird("mqtt_trailing_bytes", f"{PACKET_TYPES[kind]}: {r.remaining} bytes after the packet id")
        # PUBREL comes from the publisher; PUBACK, PUBREC and PUBCOMP from the receiver.
        key = (ctx.is_orig if kind == PUBREL else not ctx.is_orig, packet_id)
        pending = self._publishes.get(key)
        if pending is None:
            return  # its PUBLISH was not seen (capture started later) or was already complete
        if code is not None:
            pending.reason_codes.append(code)
        failed = code is not None and code >= 0x80
        if kind == PUBACK:
            pending.ack = True
            if pending.qos == 1:
                self._emit_publish(ctx, self._publishes.pop(key), STATUS_ERROR if failed else STATUS_OK)
        elif kind == PUBREC:
            pending.rec = True
            if failed:
                self._emit_publish(ctx, self._publishes.pop(key), STATUS_ERROR)
        elif kind == PUBREL:
            pending.rel = True
        else:
            pending.comp = True
            complete = pending.qos == 2 and pending.rec and pending.rel
            status = STATUS_ERROR if failed else STATUS_OK if complete else STATUS_INCOMPLETE
            self._emit_publish(ctx, self._publishes.pop(key), status)

    def _subscribe_packet(self, r: _Reader, flags: int, from_client: bool, ctx: PduContext) -> None:
        packet_id = r.u16()
        if self._level == 5:
            _properties(r, ctx, "SUBSCRIBE")
        topics: list[str] = []
        qos_levels: list[int] = []
        reserved = 0xC0 if self._level == 5 else 0xFC
        while r.remaining:
            topics.append(r.string())
            options = r.u8()
            qos_levels.append(options & 3)
            if options & reserved or options & 3 == 3:
                ctx.weird("mqtt_bad_subscription_options", f"subscription options {options:#04x}")
        self._add_subscribe(ctx, "SUBSCRIBE", packet_id, topics, qos_levels)

    def _unsubscribe_packet(self, r: _Reader, flags: int, from_client: bool, ctx: PduContext) -> None:
        packet_id = r.u16()
        if self._level == 5:
            _properties(r, ctx, "UNSUBSCRIBE")
        topics: list[str] = []
        while r.remaining:
            topics.append(r.string())
        self._add_subscribe(ctx, "UNSUBSCRIBE", packet_id, topics, None)

    def _add_subscribe(
        self, ctx: PduContext, action: str, packet_id: int, topics: list[str], qos: list[int] | None
    ) -> None:
        if not topics:
            ctx.weird("mqtt_empty_subscribe", f"{action} without a topic filter")
        if packet_id == 0:
            ctx.weird("mqtt_zero_packet_id", f"{action} with packet identifier 0")
        old = self._subscribes.pop(packet_id, None)
        if old is not None:
            self._emit_subscribe(ctx, old, ack=False, codes=None)
        if len(self._subscribes) >= MAX_PENDING:
            oldest = next(iter(self._subscribes))
            self._emit_subscribe(ctx, self._subscribes.pop(oldest), ack=False, codes=None)
        self._subscribes[packet_id] = _PendingSubscribe(ctx.where(), action, packet_id, topics, qos)

    def _suback_packet(self, r: _Reader, flags: int, from_client: bool, ctx: PduContext) -> None:
        kind = r.data[0] >> 4
        packet_id = r.u16()
        codes: list[int] | None = None
        if self._level == 5:
            _properties(r, ctx, PACKET_TYPES[kind])
            codes = list(r.rest())
        elif kind == SUBACK:
            codes = list(r.rest())
        elif r.remaining:
            ctx.weird("mqtt_trailing_bytes", f"UNSUBACK: {r.remaining} bytes after the packet id")
        if kind == SUBACK and not codes:
            ctx.weird("mqtt_truncated", "SUBACK without a return code")
        pending = self._subscribes.get(packet_id)
        expected = "SUBSCRIBE" if kind == SUBACK else "UNSUBSCRIBE"
        if pending is None or pending.action != expected:
            return  # its request was not seen
        if codes is not None and len(codes) != len(pending.topics):
            ctx.weird(
                "mqtt_reason_code_count_mismatch",
                f"{PACKET_TYPES[kind]} has {len(codes)} codes for {len(pending.topics)} topic filters",
            )
        self._emit_subscribe(ctx, self._subscribes.pop(packet_id), ack=True, codes=codes)

    def _ping_packet(self, r: _Reader, flags: int, from_client: bool, ctx: PduContext) -> None:
        kind = r.data[0] >> 4
        if kind == PINGREQ:
            self._session.pingreq += 1
        else:
            self._session.pingresp += 1
        if r.remaining:
            ctx.weird("mqtt_trailing_bytes", f"{PACKET_TYPES[kind]} with {r.remaining} bytes of body")

    def _disconnect_packet(self, r: _Reader, flags: int, from_client: bool, ctx: PduContext) -> None:
        session = self._session
        if from_client:
            session.disconnect_from_client = True
        else:
            session.disconnect_from_server = True
        if self._level == 5:
            session.disconnect_reason_code = r.u8() if r.remaining else 0
            if r.remaining:
                _properties(r, ctx, "DISCONNECT")
        if r.remaining:
            ctx.weird("mqtt_trailing_bytes", f"DISCONNECT with {r.remaining} unexpected bytes")

    def _auth_packet(self, r: _Reader, flags: int, from_client: bool, ctx: PduContext) -> None:
        session = self._session
        code = r.u8() if r.remaining else 0
        if len(session.auth_reason_codes) < MAX_PENDING:
            session.auth_reason_codes.append(code)
        if r.remaining:
            method = _properties(r, ctx, "AUTH").get(PROP_AUTH_METHOD)
            if method is not None:
                session.auth_method = method
        if r.remaining:
            ctx.weird("mqtt_trailing_bytes", f"AUTH with {r.remaining} bytes after its properties")

    _HANDLERS: ClassVar[dict[int, Callable[[MqttDissector, _Reader, int, bool, PduContext], None]]] = {
        CONNECT: _connect_packet,
        CONNACK: _connack_packet,
        PUBLISH: _publish_packet,
        PUBACK: _ack_packet,
        PUBREC: _ack_packet,
        PUBREL: _ack_packet,
        PUBCOMP: _ack_packet,
        SUBSCRIBE: _subscribe_packet,
        SUBACK: _suback_packet,
        UNSUBSCRIBE: _unsubscribe_packet,
        UNSUBACK: _suback_packet,
        PINGREQ: _ping_packet,
        PINGRESP: _ping_packet,
        DISCONNECT: _disconnect_packet,
        AUTH: _auth_packet,
    }

    # ------------------------------------------------------------------ emission

    def _flush_connect(self, ctx: PduContext) -> None:
        """A new CONNECT while the previous one is unanswered: log the previous one alone."""
        if self._connect is not None:
            self._emit_connect(ctx, self._connect, None)
            self._connect = None

    def _emit_connect(self, ctx: PduContext, pending: _PendingConnect, ack: dict[str, Any] | None) -> None:
        if pending is self._connect:
            self._connect = None
        ctx.emit(MqttConnect(**pending.where, **pending.fields, **(ack or {})))

    @staticmethod
    def _emit_publish(ctx: PduContext, pending: _PendingPublish, status: str) -> None:
        ctx.emit(
            MqttPublish(
                **pending.where,
                **pending.fields,
                status=status,
                ack=pending.ack,
                rec=pending.rec,
                rel=pending.rel,
                comp=pending.comp,
                reason_codes=list(pending.reason_codes),
            )
        )

    @staticmethod
    def _emit_subscribe(
        ctx: PduContext, pending: _PendingSubscribe, *, ack: bool, codes: list[int] | None
    ) -> None:
        ctx.emit(
            MqttSubscribe(
                **pending.where,
                action=pending.action,
                packet_id=pending.packet_id,
                topics=pending.topics,
                qos_levels=pending.qos_levels,
                ack=ack,
                reason_codes=codes,
            )
        )


# ---------------------------------------------------------------------- columnar fast path

_FAST_HEAD = 1 + MAX_VARINT_BYTES + 2
"""Bytes of each packet the fast path reads: fixed header, remaining length, topic length."""
_TOPIC_REJECTS = np.zeros(256, dtype=np.bool_)
_TOPIC_REJECTS[[0x00, ord("#"), ord("+")]] = True
_TOPIC_REJECTS[0x80:] = True
"""Topic octets the fast path leaves to ``parse``: NUL (a weird), wildcards (a weird) and non-ASCII
(decoded and checked there)."""


class _FastPublish:
    """QoS 0 PUBLISH packets of one batch for :meth:`MqttDissector.parse_pdu_batch`: the shape checks
    as columns, the per-flow session counters (``apply``) and the ``mqtt_publish`` columns (``build``)."""

    def __init__(self, pdus: Datagrams) -> None:
        self.pdus = pdus
        n = len(pdus)
        head = pdus.heads(_FAST_HEAD).astype(np.int64)
        length = pdus.length
        # Remaining length (Variable Byte Integer, 1 to 4 octets) and the octets it takes.
        more = head[:, 1:5] >= 0x80
        used = np.where(~more[:, 0], 1, np.where(~more[:, 1], 2, np.where(~more[:, 2], 3, 4)))
        digits = head[:, 1:5] & 0x7F
        remaining = np.zeros(n, dtype=np.int64)
        for k in range(MAX_VARINT_BYTES):
            remaining += np.where(used > k, digits[:, k] << (7 * k), 0)
        last = head[np.arange(n), used]
        topic_at = 1 + used + 2
        topic_len = (
            head[np.arange(n), 1 + used] << 8 | head[np.arange(n), np.minimum(2 + used, _FAST_HEAD - 1)]
        )
        publish = (
            (length >= 4)
            & (head[:, 0] >> 4 == PUBLISH)
            & (head[:, 0] & 0x0E == 0)  # QoS 0 without DUP
            & ~more[:, 3]
            & ((used == 1) | (last != 0))  # minimal length encoding
            & (1 + used + remaining == length)
            & (topic_len >= 1)
            & (topic_at + topic_len <= length)
        )
        rows = np.flatnonzero(publish)
        if rows.shape[0]:
            spans = np.repeat(rows, topic_len[rows])
            octets = pdus.buffer[_spans(pdus.start[rows] + topic_at[rows], topic_len[rows])]
            rejected = np.bincount(spans, weights=_TOPIC_REJECTS[octets], minlength=n) > 0
            publish &= ~rejected
        self.handled: npt.NDArray[np.bool_] = publish
        self.retain = (head[:, 0] & 0x01) != 0
        self.topic_at, self.topic_len = topic_at, topic_len
        self.payload_at = topic_at + topic_len
        self.origs = pdus.is_orig.tolist()
        self.ts = pdus.ts.tolist()
        self.from_client = np.zeros(n, dtype=np.bool_)

    def apply(self, dissector: MqttDissector, i: int) -> bool:
        if dissector._level == 5:
            return False  # properties, topic aliases: parse()
        session = dissector._session
        if session.where is None:
            flow = dissector.flow
            session.where = {
                "ts": self.ts[i],
                "flow_id": flow.flow_id,
                "orig_h": flow.orig_h,
                "orig_p": flow.orig_p,
                "resp_h": flow.resp_h,
                "resp_p": flow.resp_p,
                "is_orig": self.origs[i],
            }
        if self.origs[i] == dissector._client_is_orig:
            session.client_packets += 1
            self.from_client[i] = True
        else:
            session.server_packets += 1
        return True

    def build(self, rows: npt.NDArray[np.intp]) -> tuple[EventColumns, ...]:
        m = rows.shape[0]
        pdus = self.pdus
        start, length = pdus.start[rows], pdus.length[rows]
        payload_len = length - self.payload_at[rows]
        false = np.zeros(m, dtype=np.bool_)
        columns: dict[str, npt.NDArray[Any] | pa.Array] = {
            "from_client": self.from_client[rows],
            "packet_id": pa.nulls(m, pa.int64()),
            "topic": binary_array(pdus.buffer, start + self.topic_at[rows], self.topic_len[rows]).cast(
                pa.string()
            ),
            "topic_alias": pa.nulls(m, pa.int64()),
            "qos": np.zeros(m, dtype=np.int64),
            "qos_name": pa.array([qos_name(0)] * m, pa.string()),
            "retain": self.retain[rows],
            "dup": false,
            "payload": binary_array(
                pdus.buffer, start + self.payload_at[rows], np.minimum(payload_len, MAX_PAYLOAD_BYTES)
            ),
            "payload_len": payload_len,
            "status": pa.array([STATUS_OK] * m, pa.string()),
            "ack": false,
            "rec": false,
            "rel": false,
            "comp": false,
            "reason_codes": pa.ListArray.from_arrays(
                pa.array(np.zeros(m + 1, dtype=np.int32)), pa.array([], pa.int64())
            ),
        }
        return (EventColumns(MqttPublish, rows, columns),)


def _spans(first: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``first[i] + k`` for ``k`` in ``range(counts[i])``, concatenated."""
    ends = np.cumsum(counts)
    spans: npt.NDArray[np.int64] = np.arange(int(ends[-1]) if ends.shape[0] else 0, dtype=np.int64)
    out: npt.NDArray[np.int64] = spans + np.repeat(first - (ends - counts), counts)
    return out
