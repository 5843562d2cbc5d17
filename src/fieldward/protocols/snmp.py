"""SNMP dissector: every SNMPv1, v2c or v3 message (one UDP datagram) becomes one ``snmp`` event.

What is covered, with the specification it follows:

- the message wrappers: SNMPv1 (RFC 1157 section 4), SNMPv2c (RFC 1901 section 3) and SNMPv3
  (RFC 3412 section 6: msgID, msgMaxSize, msgFlags, msgSecurityModel, the scoped PDU or its encrypted
  form), with the User-based Security Model parameters of RFC 3414 section 2.4 (authoritative engine id,
  boots and time, user name) and the engine id format of RFC 3411 section 5 (enterprise number);
- the PDUs of RFC 3416 section 3 (GetRequest, GetNextRequest, GetBulkRequest, Response, SetRequest,
  InformRequest, SNMPv2-Trap, Report) and the SNMPv1 Trap-PDU of RFC 1157 section 4.1.6 (enterprise,
  agent address, generic and specific trap, time stamp);
- variable bindings: the OID, the value's tag and type (RFC 2578 section 7.1 application types, the
  noSuchObject / noSuchInstance / endOfMibView exceptions of RFC 3416) and the value rendered as text;
- the system group of MIB-II (RFC 1213, RFC 3418): sysDescr, sysObjectID, sysUpTime, sysContact, sysName
  and sysLocation values reported by an agent are surfaced as named fields.

The community string is a password: it is never stored. An event records that one was present, its
length, and whether it is one of the well-known defaults (``public``, ``private``). The USM
authentication and privacy parameters (a MAC and a salt) are not stored either.

BER (X.690) is read with a small bounded reader: every length is checked against the enclosing element,
the indefinite length form and high tag numbers are rejected, and nesting depth is limited. Malformed
input is reported as ``snmp_*`` weirds; the message's fields decoded up to the defect are still emitted.

Value texts follow Zeek's SNMP analyzer (``snmp-test.zeek`` prints them the same way), so events compare
line by line with Zeek's event traces.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fieldward.protocols.base import Dissector, Event, PduContext, Transport, Verdict

MAX_DEPTH = 8
"""Deepest nesting of constructed BER elements (a v3 message with its scoped PDU needs 6)."""
MAX_BINDINGS = 64
"""Variable bindings kept per message (``binding_count`` still counts them all)."""
MAX_VALUE_BYTES = 1024
"""Octet-string bytes rendered per value (the text covers the first ``MAX_VALUE_BYTES`` bytes)."""
MAX_INTEGER_BYTES = 9
"""A Counter64 needs 9 content octets (a leading zero); longer integers are malformed."""
MAX_OID_ARCS = 128
"""RFC 2578 section 3.5: at most 128 sub-identifiers."""
MAX_SUBID = (1 << 32) - 1
"""RFC 2578 section 3.5: each sub-identifier is at most 2^32-1."""

# Universal and application tags (X.690, RFC 2578 section 7.1).
INTEGER, OCTET_STRING, NULL, OID, SEQUENCE = 0x02, 0x04, 0x05, 0x06, 0x30
IP_ADDRESS, COUNTER32, GAUGE32, TIMETICKS, OPAQUE, NSAP, COUNTER64, UINTEGER32 = range(0x40, 0x48)
NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW = 0x80, 0x81, 0x82

VERSION_NAMES: dict[int, str] = {0: "v1", 1: "v2c", 3: "v3"}

PDU_NAMES: dict[int, str] = {
    0xA0: "get_request",
    0xA1: "get_next_request",
    0xA2: "response",
    0xA3: "set_request",
    0xA4: "trap",
    0xA5: "get_bulk_request",
    0xA6: "inform_request",
    0xA7: "trapv2",
    0xA8: "report",
}
"""PDU tags (RFC 1157 section 4.1, RFC 3416 section 3), named as Zeek's ``snmp_*`` events."""
TRAP_V1 = 0xA4
GET_BULK = 0xA5
V2_ONLY_PDUS = frozenset({0xA5, 0xA6, 0xA7, 0xA8})
"""PDUs that RFC 1157 (SNMPv1) lacks."""
AGENT_PDUS = frozenset({0xA2, 0xA4, 0xA6, 0xA7, 0xA8})
"""PDUs whose bindings carry an agent's own values (identity fields come only from these)."""

VALUE_TYPES: dict[int, str] = {
    INTEGER: "integer",
    OCTET_STRING: "octet_string",
    NULL: "null",
    OID: "oid",
    IP_ADDRESS: "ip_address",
    COUNTER32: "counter32",
    GAUGE32: "gauge32",
    TIMETICKS: "timeticks",
    OPAQUE: "opaque",
    NSAP: "nsap_address",
    COUNTER64: "counter64",
    UINTEGER32: "uinteger32",
    NO_SUCH_OBJECT: "no_such_object",
    NO_SUCH_INSTANCE: "no_such_instance",
    END_OF_MIB_VIEW: "end_of_mib_view",
}
UNSIGNED_TYPES = frozenset({COUNTER32, GAUGE32, TIMETICKS, COUNTER64, UINTEGER32})
EMPTY_VALUE_TYPES = frozenset({NULL, NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW})

ERROR_STATUS_NAMES: dict[int, str] = {
    0: "noError",
    1: "tooBig",
    2: "noSuchName",
    3: "badValue",
    4: "readOnly",
    5: "genErr",
    6: "noAccess",
    7: "wrongType",
    8: "wrongLength",
    9: "wrongEncoding",
    10: "wrongValue",
    11: "noCreation",
    12: "inconsistentValue",
    13: "resourceUnavailable",
    14: "commitFailed",
    15: "undoFailed",
    16: "authorizationError",
    17: "notWritable",
    18: "inconsistentName",
}
"""RFC 3416 section 3 (0-5 are also RFC 1157's)."""

GENERIC_TRAP_NAMES: dict[int, str] = {
    0: "coldStart",
    1: "warmStart",
    2: "linkDown",
    3: "linkUp",
    4: "authenticationFailure",
    5: "egpNeighborLoss",
    6: "enterpriseSpecific",
}
"""RFC 1157 section 4.1.6."""

DEFAULT_COMMUNITIES = frozenset({b"public", b"private"})
"""Well-known factory-default communities (read-only and read-write)."""

USM = 3
"""msgSecurityModel of the User-based Security Model (RFC 3411 section 5)."""
FLAG_AUTH, FLAG_PRIV, FLAG_REPORTABLE = 0x01, 0x02, 0x04

SYSTEM_GROUP: dict[str, tuple[str, frozenset[int]]] = {
    "1.3.6.1.2.1.1.1.0": ("sys_descr", frozenset({OCTET_STRING})),
    "1.3.6.1.2.1.1.2.0": ("sys_object_id", frozenset({OID})),
    "1.3.6.1.2.1.1.3.0": ("sys_uptime", frozenset({TIMETICKS})),
    "1.3.6.1.2.1.1.4.0": ("sys_contact", frozenset({OCTET_STRING})),
    "1.3.6.1.2.1.1.5.0": ("sys_name", frozenset({OCTET_STRING})),
    "1.3.6.1.2.1.1.6.0": ("sys_location", frozenset({OCTET_STRING})),
}
"""MIB-II system group instances (RFC 3418): event field and the value type it must have."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SnmpEvent(Event):
    """One SNMP message: ``events/snmp.parquet``."""

    log: ClassVar[str] = "snmp"

    version: int
    version_name: str
    community_present: bool = False
    community_length: int | None = None
    default_community: bool | None = None
    pdu_tag: int | None = None
    pdu_type: str | None = None
    request_id: int | None = None
    error_status: int | None = None
    error_status_name: str | None = None
    error_index: int | None = None
    non_repeaters: int | None = None
    max_repetitions: int | None = None
    enterprise: str | None = None
    agent_addr: str | None = None
    generic_trap: int | None = None
    generic_trap_name: str | None = None
    specific_trap: int | None = None
    time_stamp: int | None = None
    binding_count: int = 0
    oids: list[str] = field(default_factory=list)
    value_tags: list[int] = field(default_factory=list)
    value_types: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    msg_id: int | None = None
    msg_max_size: int | None = None
    msg_flags: int | None = None
    auth: bool | None = None
    priv: bool | None = None
    reportable: bool | None = None
    security_model: int | None = None
    engine_id: str | None = None
    engine_enterprise: int | None = None
    engine_boots: int | None = None
    engine_time: int | None = None
    user_name: str | None = None
    context_engine_id: str | None = None
    context_name: str | None = None
    encrypted: bool = False
    sys_descr: str | None = None
    sys_object_id: str | None = None
    sys_uptime: int | None = None
    sys_contact: str | None = None
    sys_name: str | None = None
    sys_location: str | None = None


# ---------------------------------------------------------------------- BER reader


class BerError(Exception):
    """A malformed element: ``name`` is the weird to report."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        self.name = name
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Tlv:
    """One BER element of ``buf``: identifier octet, value at ``buf[start:end]``."""

    buf: bytes
    tag: int
    start: int
    end: int

    @property
    def value(self) -> bytes:
        return self.buf[self.start : self.end]

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)


class BerReader:
    """Consecutive BER elements of ``buf[start:end]``, nested ``depth`` levels deep.

    Every length is checked against ``end``; indefinite lengths, high tag numbers and lengths of more
    than four octets raise :class:`BerError`, so does entering deeper than :data:`MAX_DEPTH`.
    """

    __slots__ = ("buf", "depth", "end", "pos")

    def __init__(self, buf: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> None:
        self.buf = buf
        self.pos = start
        self.end = len(buf) if end is None else end
        self.depth = depth

    def at_end(self) -> bool:
        return self.pos >= self.end

    def read(self, what: str) -> Tlv:
        buf, pos, end = self.buf, self.pos, self.end
        if pos + 2 > end:
            raise BerError("snmp_truncated", f"{what}: {end - pos} bytes left, an element needs 2")
        tag = buf[pos]
        if tag & 0x1F == 0x1F:
            raise BerError("snmp_unsupported_tag", f"{what}: high tag number form (0x{tag:02x})")
        first = buf[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        elif first == 0x80:
            raise BerError("snmp_indefinite_length", f"{what}: indefinite length form")
        else:
            count = first & 0x7F
            if count > 4:
                raise BerError("snmp_bad_length", f"{what}: {count} length octets")
            if pos + count > end:
                raise BerError("snmp_truncated", f"{what}: length octets cut off")
            length = int.from_bytes(buf[pos : pos + count], "big")
            pos += count
        if length > end - pos:
            raise BerError("snmp_truncated", f"{what}: length {length}, {end - pos} bytes left")
        self.pos = pos + length
        return Tlv(buf, tag, pos, pos + length)

    def expect(self, tag: int, what: str) -> Tlv:
        tlv = self.read(what)
        if tlv.tag != tag:
            raise BerError("snmp_unexpected_tag", f"{what}: tag 0x{tlv.tag:02x}, expected 0x{tag:02x}")
        return tlv

    def enter(self, tlv: Tlv, what: str) -> BerReader:
        if self.depth + 1 > MAX_DEPTH:
            raise BerError("snmp_too_deep", f"{what}: nesting deeper than {MAX_DEPTH}")
        return BerReader(self.buf, tlv.start, tlv.end, self.depth + 1)

    def integer(self, what: str) -> int:
        return decode_integer(self.expect(INTEGER, what).value, what)

    def octets(self, what: str) -> bytes:
        return self.expect(OCTET_STRING, what).value


def decode_integer(data: bytes, what: str, *, signed: bool = True) -> int:
    if not 1 <= len(data) <= MAX_INTEGER_BYTES:
        raise BerError("snmp_bad_integer", f"{what}: {len(data)} content octets")
    return int.from_bytes(data, "big", signed=signed)


def decode_oid(data: bytes) -> str:
    """An OBJECT IDENTIFIER as a dotted string (X.690 8.19)."""
    if not data:
        raise BerError("snmp_bad_oid", "empty object identifier")
    arcs: list[int] = []
    value = 0
    digits = 0
    for byte in data:
        if digits == 0 and byte == 0x80:
            raise BerError("snmp_bad_oid", "sub-identifier with a leading 0x80 octet")
        value = (value << 7) | (byte & 0x7F)
        digits += 1
        if byte & 0x80:
            if digits >= 5 and value > MAX_SUBID >> 7:
                raise BerError("snmp_bad_oid", "sub-identifier larger than 2^32-1")
            continue
        if not arcs:  # the first sub-identifier holds the first two arcs
            first = min(value // 40, 2)
            arcs += [first, value - 40 * first]
        else:
            if value > MAX_SUBID:
                raise BerError("snmp_bad_oid", "sub-identifier larger than 2^32-1")
            arcs.append(value)
        if len(arcs) > MAX_OID_ARCS:
            raise BerError("snmp_bad_oid", f"more than {MAX_OID_ARCS} sub-identifiers")
        value = digits = 0
    if digits:
        raise BerError("snmp_bad_oid", "last sub-identifier is cut off")
    return ".".join(map(str, arcs))


def render_octets(data: bytes) -> str:
    """Bytes as text: printable characters as they are, a backslash doubled, any other byte ``\\xNN``.

    Printable ASCII renders exactly as Zeek prints it; valid UTF-8 text keeps its characters. The
    rendering is reversible (nothing is lost), and covers at most :data:`MAX_VALUE_BYTES` bytes.
    """
    text = data[:MAX_VALUE_BYTES].decode("utf-8", "surrogateescape")
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    out: list[str] = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # an invalid byte (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char == "\\":
            out.append("\\\\")
        elif char.isprintable():
            out.append(char)
        else:
            out.extend(f"\\x{b:02x}" for b in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def engine_enterprise(engine_id: bytes) -> int | None:
    """The IANA enterprise number in an snmpEngineID's first four octets (RFC 3411 section 5)."""
    if len(engine_id) < 4:
        return None
    return int.from_bytes(engine_id[:4], "big") & 0x7FFFFFFF


# ---------------------------------------------------------------------- decoding


@dataclass(slots=True)
class _Message:
    """The fields of one :class:`SnmpEvent` as they are decoded."""

    version: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    oids: list[str] = field(default_factory=list)
    value_tags: list[int] = field(default_factory=list)
    value_types: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)


def _value(tlv: Tlv, ctx: PduContext) -> tuple[str, Any]:
    """A binding value's type name and text (plus its typed value for the identity fields)."""
    tag, data = tlv.tag, tlv.value
    kind = VALUE_TYPES.get(tag)
    if kind is None:
        return f"unknown-0x{tag:02x}", data[:MAX_VALUE_BYTES].hex()
    if tag == INTEGER:
        return kind, decode_integer(data, "integer value")
    if tag in UNSIGNED_TYPES:
        return kind, decode_integer(data, f"{kind} value", signed=False)
    if tag == OID:
        return kind, decode_oid(data)
    if tag == IP_ADDRESS:
        if len(data) == 4:
            return kind, str(ipaddress.IPv4Address(data))
        ctx.weird("snmp_bad_ip_address", f"IpAddress of {len(data)} octets")
        return kind, render_octets(data)
    if tag in EMPTY_VALUE_TYPES:
        if data:
            ctx.weird("snmp_bad_null", f"{kind} with {len(data)} content octets")
        return kind, ""
    return kind, render_octets(data)  # OCTET STRING, Opaque, NsapAddress


def _bindings(reader: BerReader, pdu_tag: int, msg: _Message, ctx: PduContext) -> None:
    outer = reader.expect(SEQUENCE, "variable-bindings")
    if not reader.at_end():
        ctx.weird("snmp_trailing_bytes", f"{reader.end - reader.pos} bytes after the variable-bindings")
    bindings = reader.enter(outer, "variable-bindings")
    count = 0
    identity = pdu_tag in AGENT_PDUS
    while not bindings.at_end():
        binding = bindings.expect(SEQUENCE, "VarBind")
        count += 1
        msg.fields["binding_count"] = count
        if count > MAX_BINDINGS:
            continue
        inner = bindings.enter(binding, "VarBind")
        oid = decode_oid(inner.expect(OID, "VarBind name").value)
        value = inner.read("VarBind value")
        kind, decoded = _value(value, ctx)
        msg.oids.append(oid)
        msg.value_tags.append(value.tag)
        msg.value_types.append(kind)
        msg.values.append(str(decoded))
        if not inner.at_end():
            ctx.weird("snmp_trailing_bytes", f"{inner.end - inner.pos} bytes after a VarBind value")
        known = SYSTEM_GROUP.get(oid)
        if identity and known is not None and value.tag in known[1]:
            msg.fields[known[0]] = decoded


def _pdu(reader: BerReader, version: int, msg: _Message, ctx: PduContext) -> None:
    tlv = reader.read("PDU")
    tag = tlv.tag
    msg.fields["pdu_tag"] = tag
    name = PDU_NAMES.get(tag)
    if name is None:
        msg.fields["pdu_type"] = f"unknown-0x{tag:02x}"
        raise BerError("snmp_unknown_pdu_type", f"PDU tag 0x{tag:02x}")
    msg.fields["pdu_type"] = name
    if (version == 0 and tag in V2_ONLY_PDUS) or (version != 0 and tag == TRAP_V1):
        ctx.weird("snmp_pdu_version_mismatch", f"{name} in an SNMP {VERSION_NAMES[version]} message")
    if not reader.at_end():
        ctx.weird("snmp_trailing_bytes", f"{reader.end - reader.pos} bytes after the PDU")
    body = reader.enter(tlv, "PDU")
    if tag == TRAP_V1:
        msg.fields["enterprise"] = decode_oid(body.expect(OID, "enterprise").value)
        agent = body.expect(IP_ADDRESS, "agent-addr").value
        if len(agent) != 4:
            raise BerError("snmp_bad_ip_address", f"agent-addr of {len(agent)} octets")
        msg.fields["agent_addr"] = str(ipaddress.IPv4Address(agent))
        generic = body.integer("generic-trap")
        msg.fields["generic_trap"] = generic
        msg.fields["generic_trap_name"] = GENERIC_TRAP_NAMES.get(generic, f"unknown-{generic}")
        msg.fields["specific_trap"] = body.integer("specific-trap")
        stamp = body.expect(TIMETICKS, "time-stamp").value
        msg.fields["time_stamp"] = decode_integer(stamp, "time-stamp", signed=False)
    else:
        msg.fields["request_id"] = body.integer("request-id")
        if tag == GET_BULK:
            msg.fields["non_repeaters"] = body.integer("non-repeaters")
            msg.fields["max_repetitions"] = body.integer("max-repetitions")
        else:
            status = body.integer("error-status")
            msg.fields["error_status"] = status
            msg.fields["error_status_name"] = ERROR_STATUS_NAMES.get(status, f"unknown-{status}")
            msg.fields["error_index"] = body.integer("error-index")
    _bindings(body, tag, msg, ctx)


def _usm(data: bytes, depth: int, msg: _Message, ctx: PduContext) -> None:
    """UsmSecurityParameters (RFC 3414 section 2.4), BER-encoded inside msgSecurityParameters."""
    reader = BerReader(data, depth=depth)
    try:
        params = reader.enter(reader.expect(SEQUENCE, "UsmSecurityParameters"), "UsmSecurityParameters")
        engine = params.octets("msgAuthoritativeEngineID")
        msg.fields["engine_id"] = engine.hex()
        msg.fields["engine_enterprise"] = engine_enterprise(engine)
        msg.fields["engine_boots"] = params.integer("msgAuthoritativeEngineBoots")
        msg.fields["engine_time"] = params.integer("msgAuthoritativeEngineTime")
        msg.fields["user_name"] = render_octets(params.octets("msgUserName"))
        params.octets("msgAuthenticationParameters")
        params.octets("msgPrivacyParameters")
    except BerError as exc:
        ctx.weird("snmp_bad_security_parameters", f"{exc.name}: {exc.detail}")


def _v3(reader: BerReader, msg: _Message, ctx: PduContext) -> None:
    header = reader.enter(reader.expect(SEQUENCE, "msgGlobalData"), "msgGlobalData")
    msg.fields["msg_id"] = header.integer("msgID")
    msg.fields["msg_max_size"] = header.integer("msgMaxSize")
    flags = header.octets("msgFlags")
    if len(flags) != 1:
        ctx.weird("snmp_bad_msg_flags", f"msgFlags of {len(flags)} octets")
    bits = flags[-1] if flags else 0
    msg.fields.update(
        msg_flags=bits,
        auth=bool(bits & FLAG_AUTH),
        priv=bool(bits & FLAG_PRIV),
        reportable=bool(bits & FLAG_REPORTABLE),
    )
    if bits & FLAG_PRIV and not bits & FLAG_AUTH:
        ctx.weird("snmp_bad_msg_flags", "privacy without authentication (RFC 3412 section 7.2 step 5)")
    model = header.integer("msgSecurityModel")
    msg.fields["security_model"] = model
    parameters = reader.octets("msgSecurityParameters")
    if model == USM:
        _usm(parameters, reader.depth + 1, msg, ctx)
    data = reader.read("msgData")
    if not reader.at_end():
        ctx.weird("snmp_trailing_bytes", f"{reader.end - reader.pos} bytes after msgData")
    if data.tag == OCTET_STRING:
        msg.fields["encrypted"] = True
        msg.fields["pdu_type"] = "encrypted"
        if not bits & FLAG_PRIV:
            ctx.weird("snmp_privacy_flag_mismatch", "encrypted scoped PDU without the privacy flag")
        return
    if data.tag != SEQUENCE:
        raise BerError("snmp_unexpected_tag", f"msgData: tag 0x{data.tag:02x}")
    if bits & FLAG_PRIV:
        ctx.weird("snmp_privacy_flag_mismatch", "plaintext scoped PDU with the privacy flag")
    scoped = reader.enter(data, "ScopedPDU")
    msg.fields["context_engine_id"] = scoped.octets("contextEngineID").hex()
    msg.fields["context_name"] = render_octets(scoped.octets("contextName"))
    _pdu(scoped, 3, msg, ctx)


def decode_message(data: bytes, ctx: PduContext) -> _Message:
    """Decode one datagram; weirds go to ``ctx``. The result holds what was decoded before any defect."""
    msg = _Message()
    try:
        reader = BerReader(data)
        outer = reader.expect(SEQUENCE, "Message")
        if not reader.at_end():
            ctx.weird("snmp_trailing_bytes", f"{len(data) - reader.pos} bytes after the message")
        body = reader.enter(outer, "Message")
        version = body.integer("version")
        msg.version = version
        if version not in VERSION_NAMES:
            raise BerError("snmp_unknown_version", f"version {version}")
        if version == 3:
            _v3(body, msg, ctx)
        else:
            community = body.octets("community")
            msg.fields.update(
                community_present=True,
                community_length=len(community),
                default_community=community in DEFAULT_COMMUNITIES,
            )
            _pdu(body, version, msg, ctx)
    except BerError as exc:
        ctx.weird(exc.name, exc.detail)
    return msg


def _header_ok(data: bytes, strict: bool) -> bool:
    """Whether ``data`` is an SNMP message: strictly, its whole header structure; else its first bytes."""
    reader = BerReader(data)
    try:
        outer = reader.expect(SEQUENCE, "Message")
        if not reader.at_end():
            return False
        body = reader.enter(outer, "Message")
        version = body.integer("version")
        if version not in VERSION_NAMES:
            return False
        if not strict:
            return True
        if version == 3:
            header = body.enter(body.expect(SEQUENCE, "msgGlobalData"), "msgGlobalData")
            header.integer("msgID")
            header.integer("msgMaxSize")
            if len(header.octets("msgFlags")) != 1:
                return False
            header.integer("msgSecurityModel")
            body.octets("msgSecurityParameters")
            data_tlv = body.read("msgData")
            return data_tlv.tag in (SEQUENCE, OCTET_STRING) and body.at_end()
        body.octets("community")
        pdu = body.read("PDU")
        if pdu.tag not in PDU_NAMES or not body.at_end():
            return False
        inner = body.enter(pdu, "PDU")
        first = inner.read("PDU first field")
        return first.tag == (OID if pdu.tag == TRAP_V1 else INTEGER)
    except BerError:
        return False


class SnmpDissector(Dissector):
    """SNMPv1/v2c/v3 over UDP (one message per datagram)."""

    name = "snmp"
    description = "SNMP v1/v2c/v3: PDUs, variable bindings, traps, USM identity, MIB-II system group"
    transports = frozenset({Transport.UDP})
    ports = frozenset({161, 162})
    event_types = (SnmpEvent,)

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if transport != Transport.UDP:
            return Verdict.NO
        on_port = bool({sport, dport} & cls.ports)
        if _header_ok(data, strict=True):
            return Verdict.YES
        # On the SNMP ports a message with a defect past its version is still SNMP (and gets weirds).
        if on_port and _version_prefix(data):
            return Verdict.YES
        return Verdict.NO

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        msg = decode_message(pdu, ctx)
        if msg.version is None:
            return
        ctx.emit(
            SnmpEvent(
                **ctx.where(),
                version=msg.version,
                version_name=VERSION_NAMES.get(msg.version, f"unknown-{msg.version}"),
                oids=msg.oids,
                value_tags=msg.value_tags,
                value_types=msg.value_types,
                values=msg.values,
                **msg.fields,
            )
        )


def _version_prefix(data: bytes) -> bool:
    """A SEQUENCE whose first element is ``INTEGER 0, 1 or 3`` (lengths are not checked)."""
    if len(data) < 5 or data[0] != SEQUENCE:
        return False
    first = data[1]
    offset = 2 if first < 0x80 else 2 + (first & 0x7F)
    return data[offset : offset + 2] == b"\x02\x01" and data[offset + 2 : offset + 3] in (
        b"\x00",
        b"\x01",
        b"\x03",
    )
