"""OPC UA binary (UA TCP, ``opc.tcp``) dissector: the transport and secure channel layers.

What is covered, with the section of *OPC 10000-6 (Part 6): Mappings* it follows:

- the message header of every UA Connection Protocol message and Secure Conversation message chunk
  (7.1.2.2: message type ``HEL``/``ACK``/``ERR``/``RHE``/``OPN``/``MSG``/``CLO``, chunk type
  ``F``/``C``/``A``, message size): one ``opcua`` event per message or chunk;
- Hello, Acknowledge (7.1.2.3, 7.1.2.4: protocol version, buffer sizes, maximum message size and chunk
  count, endpoint URL) and ReverseHello (7.1.2.6: server URI, endpoint URL): ``opcua_hello``;
- Error messages (7.1.2.5: status code, reason) and, on unsecured channels, abort chunks (6.7.3):
  ``opcua_error``;
- OpenSecureChannel messages (6.7.2: secure channel id, asymmetric security header with the security
  policy URI, sender certificate and receiver thumbprint, sequence header): ``opcua_secure_channel``.
  When the policy is ``None`` the body is plaintext, and the OpenSecureChannel request (request type
  Issue/Renew, security mode None/Sign/SignAndEncrypt, requested lifetime, client protocol version) or
  response (service result, channel and token id, revised lifetime) is decoded (Part 4, 5.5.2);
- MSG/CLO chunks (6.7.2.3 symmetric security header, sequence header) with, when the channel's policy
  is ``None``, the NodeId of the service carried by the first chunk of each message (5.2.2.9 NodeId
  encoding) and, for responses, the ServiceResult of the response header (Part 4, 7.33).

Encrypted or signed channels are reported from their headers only. Status codes and service names are
those of the OPC UA NodeSet (``StatusCode.csv``, ``NodeIds.csv``: the ``_Encoding_DefaultBinary`` ids).
Every length is checked before it is read, strings are capped, nesting (DiagnosticInfo) is limited;
malformed input gives ``opcua_*`` weirds and never an exception. Dissectors report facts only.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

from fieldward.protocols.base import Dissector, Event, FlowInfo, PduContext, Transport, Verdict

HEADER = struct.Struct("<3scI")
"""MessageType, ChunkType, MessageSize (Part 6 7.1.2.2)."""
MAX_MESSAGE_SIZE = 1 << 24
"""Largest message size accepted when framing (servers negotiate far smaller buffers)."""
MAX_ENDPOINT_URL = 4096
"""Part 6 7.1.2.3: the EndpointUrl is at most 4096 bytes."""
MAX_POLICY_URI = 255
"""Part 6 6.7.2.3: the SecurityPolicyUri is at most 255 bytes."""
MAX_TEXT = 4096
"""Characters kept of a string field (reason, URLs); longer ones are cut."""
MAX_DEPTH = 8
"""Deepest nesting of DiagnosticInfo accepted (InnerDiagnosticInfo)."""
MAX_OPEN_MESSAGES = 64
"""Multi-chunk messages tracked per flow (oldest forgotten first)."""
MAX_ARRAY = 1024
"""Largest string table accepted in a response header."""

HEL, ACK, ERR, RHE, OPN, MSG, CLO = b"HEL", b"ACK", b"ERR", b"RHE", b"OPN", b"MSG", b"CLO"
CONNECTION_TYPES = frozenset({HEL, ACK, ERR, RHE})
"""UA Connection Protocol messages: always a single chunk (``F``)."""
MIN_SIZES: dict[bytes, int] = {HEL: 32, ACK: 28, ERR: 16, RHE: 16, OPN: 32, MSG: 24, CLO: 24}
"""Smallest valid size of each message type (header, fixed fields, empty strings)."""
CHUNK_TYPES = frozenset({b"F", b"C", b"A"})

POLICY_PREFIX = "http://opcfoundation.org/UA/SecurityPolicy#"
POLICY_NONE = POLICY_PREFIX + "None"

REQUEST_TYPES: dict[int, str] = {0: "Issue", 1: "Renew"}
"""SecurityTokenRequestType (Part 4 7.34)."""
SECURITY_MODES: dict[int, str] = {0: "Invalid", 1: "None", 2: "Sign", 3: "SignAndEncrypt"}
"""MessageSecurityMode (Part 4 7.20)."""
MODE_NONE = 1

OPEN_REQUEST, OPEN_RESPONSE, SERVICE_FAULT = 446, 449, 397

SERVICES: dict[int, str] = {
    397: "ServiceFault",
    422: "FindServersRequest",
    425: "FindServersResponse",
    12208: "FindServersOnNetworkRequest",
    12209: "FindServersOnNetworkResponse",
    428: "GetEndpointsRequest",
    431: "GetEndpointsResponse",
    437: "RegisterServerRequest",
    440: "RegisterServerResponse",
    12211: "RegisterServer2Request",
    12212: "RegisterServer2Response",
    446: "OpenSecureChannelRequest",
    449: "OpenSecureChannelResponse",
    452: "CloseSecureChannelRequest",
    455: "CloseSecureChannelResponse",
    461: "CreateSessionRequest",
    464: "CreateSessionResponse",
    467: "ActivateSessionRequest",
    470: "ActivateSessionResponse",
    473: "CloseSessionRequest",
    476: "CloseSessionResponse",
    479: "CancelRequest",
    482: "CancelResponse",
    488: "AddNodesRequest",
    491: "AddNodesResponse",
    494: "AddReferencesRequest",
    497: "AddReferencesResponse",
    500: "DeleteNodesRequest",
    503: "DeleteNodesResponse",
    506: "DeleteReferencesRequest",
    509: "DeleteReferencesResponse",
    527: "BrowseRequest",
    530: "BrowseResponse",
    533: "BrowseNextRequest",
    536: "BrowseNextResponse",
    554: "TranslateBrowsePathsToNodeIdsRequest",
    557: "TranslateBrowsePathsToNodeIdsResponse",
    560: "RegisterNodesRequest",
    563: "RegisterNodesResponse",
    566: "UnregisterNodesRequest",
    569: "UnregisterNodesResponse",
    615: "QueryFirstRequest",
    618: "QueryFirstResponse",
    621: "QueryNextRequest",
    624: "QueryNextResponse",
    631: "ReadRequest",
    634: "ReadResponse",
    664: "HistoryReadRequest",
    667: "HistoryReadResponse",
    673: "WriteRequest",
    676: "WriteResponse",
    700: "HistoryUpdateRequest",
    703: "HistoryUpdateResponse",
    712: "CallRequest",
    715: "CallResponse",
    751: "CreateMonitoredItemsRequest",
    754: "CreateMonitoredItemsResponse",
    763: "ModifyMonitoredItemsRequest",
    766: "ModifyMonitoredItemsResponse",
    769: "SetMonitoringModeRequest",
    772: "SetMonitoringModeResponse",
    775: "SetTriggeringRequest",
    778: "SetTriggeringResponse",
    781: "DeleteMonitoredItemsRequest",
    784: "DeleteMonitoredItemsResponse",
    787: "CreateSubscriptionRequest",
    790: "CreateSubscriptionResponse",
    793: "ModifySubscriptionRequest",
    796: "ModifySubscriptionResponse",
    799: "SetPublishingModeRequest",
    802: "SetPublishingModeResponse",
    826: "PublishRequest",
    829: "PublishResponse",
    832: "RepublishRequest",
    835: "RepublishResponse",
    841: "TransferSubscriptionsRequest",
    844: "TransferSubscriptionsResponse",
    847: "DeleteSubscriptionsRequest",
    850: "DeleteSubscriptionsResponse",
}
"""Service request/response encodings: the ``<Type>_Encoding_DefaultBinary`` ids of namespace 0."""

STATUS_CODES: dict[int, str] = {
    0x00000000: "Good",
    0x80000000: "Bad",
    0x80010000: "BadUnexpectedError",
    0x80020000: "BadInternalError",
    0x80030000: "BadOutOfMemory",
    0x80040000: "BadResourceUnavailable",
    0x80050000: "BadCommunicationError",
    0x80060000: "BadEncodingError",
    0x80070000: "BadDecodingError",
    0x80080000: "BadEncodingLimitsExceeded",
    0x80090000: "BadUnknownResponse",
    0x800A0000: "BadTimeout",
    0x800B0000: "BadServiceUnsupported",
    0x800C0000: "BadShutdown",
    0x800D0000: "BadServerNotConnected",
    0x800E0000: "BadServerHalted",
    0x800F0000: "BadNothingToDo",
    0x80100000: "BadTooManyOperations",
    0x80120000: "BadCertificateInvalid",
    0x80130000: "BadSecurityChecksFailed",
    0x80140000: "BadCertificateTimeInvalid",
    0x80150000: "BadCertificateIssuerTimeInvalid",
    0x80160000: "BadCertificateHostNameInvalid",
    0x80170000: "BadCertificateUriInvalid",
    0x80180000: "BadCertificateUseNotAllowed",
    0x80190000: "BadCertificateIssuerUseNotAllowed",
    0x801A0000: "BadCertificateUntrusted",
    0x801B0000: "BadCertificateRevocationUnknown",
    0x801C0000: "BadCertificateIssuerRevocationUnknown",
    0x801D0000: "BadCertificateRevoked",
    0x801E0000: "BadCertificateIssuerRevoked",
    0x801F0000: "BadUserAccessDenied",
    0x80200000: "BadIdentityTokenInvalid",
    0x80210000: "BadIdentityTokenRejected",
    0x80220000: "BadSecureChannelIdInvalid",
    0x80230000: "BadInvalidTimestamp",
    0x80240000: "BadNonceInvalid",
    0x80250000: "BadSessionIdInvalid",
    0x80260000: "BadSessionClosed",
    0x80270000: "BadSessionNotActivated",
    0x802A0000: "BadRequestHeaderInvalid",
    0x80330000: "BadNodeIdInvalid",
    0x80340000: "BadNodeIdUnknown",
    0x803A0000: "BadNotReadable",
    0x803B0000: "BadNotWritable",
    0x80530000: "BadRequestTypeInvalid",
    0x80540000: "BadSecurityModeRejected",
    0x80550000: "BadSecurityPolicyRejected",
    0x80560000: "BadTooManySessions",
    0x80590000: "BadNoValidCertificates",
    0x807D0000: "BadTcpServerTooBusy",
    0x807E0000: "BadTcpMessageTypeInvalid",
    0x807F0000: "BadTcpSecureChannelUnknown",
    0x80800000: "BadTcpMessageTooLarge",
    0x80810000: "BadTcpNotEnoughResources",
    0x80820000: "BadTcpInternalError",
    0x80830000: "BadTcpEndpointUrlInvalid",
    0x80840000: "BadRequestInterrupted",
    0x80850000: "BadRequestTimeout",
    0x80860000: "BadSecureChannelClosed",
    0x80870000: "BadSecureChannelTokenUnknown",
    0x80880000: "BadSequenceNumberInvalid",
    0x80AC0000: "BadConnectionRejected",
    0x80AD0000: "BadDisconnect",
    0x80AE0000: "BadConnectionClosed",
    0x80AF0000: "BadInvalidState",
    0x80B70000: "BadMaxConnectionsReached",
    0x80B80000: "BadRequestTooLarge",
    0x80B90000: "BadResponseTooLarge",
    0x80BE0000: "BadProtocolVersionUnsupported",
    0x80E60000: "BadSecurityModeInsufficient",
    0x80EE0000: "BadServerTooBusy",
}
"""StatusCode names (OPC UA ``StatusCode.csv``) for the transport, secure channel and session errors."""


def status_name(code: int) -> str:
    """The StatusCode's name, or its hex value (``0x80AB0000``) when it is not in the table."""
    return STATUS_CODES.get(code, f"0x{code:08X}")


def service_name(node_id: int) -> str | None:
    return SERVICES.get(node_id)


# ---------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcuaMessage(Event):
    """One UA TCP message or Secure Conversation chunk: ``events/opcua.parquet``."""

    log: ClassVar[str] = "opcua"

    msg_type: str
    chunk_type: str
    msg_size: int
    secure_channel_id: int | None = None
    security_policy_uri: str | None = None
    token_id: int | None = None
    sequence_number: int | None = None
    request_id: int | None = None
    unsecured: bool | None = None
    service_node_id: str | None = None
    service_id: int | None = None
    service: str | None = None
    service_result: int | None = None
    service_result_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcuaHello(Event):
    """Hello, Acknowledge or ReverseHello: ``events/opcua_hello.parquet``."""

    log: ClassVar[str] = "opcua_hello"

    msg_type: str
    protocol_version: int | None = None
    receive_buffer_size: int | None = None
    send_buffer_size: int | None = None
    max_message_size: int | None = None
    max_chunk_count: int | None = None
    endpoint_url: str | None = None
    server_uri: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcuaError(Event):
    """An Error message, or an abort chunk of an unsecured channel: ``events/opcua_error.parquet``."""

    log: ClassVar[str] = "opcua_error"

    msg_type: str
    status_code: int
    status: str
    reason: str | None = None
    request_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcuaSecureChannel(Event):
    """An OpenSecureChannel request or response: ``events/opcua_secure_channel.parquet``."""

    log: ClassVar[str] = "opcua_secure_channel"

    chunk_type: str
    secure_channel_id: int
    security_policy_uri: str
    security_policy: str
    unsecured: bool
    sender_certificate_length: int | None = None
    sender_certificate_sha1: str | None = None
    receiver_thumbprint: str | None = None
    sequence_number: int | None = None
    request_id: int | None = None
    service: str | None = None
    client_protocol_version: int | None = None
    request_type: str | None = None
    security_mode: str | None = None
    requested_lifetime: int | None = None
    client_nonce_length: int | None = None
    service_result: int | None = None
    service_result_name: str | None = None
    server_protocol_version: int | None = None
    channel_id: int | None = None
    token_id: int | None = None
    revised_lifetime: int | None = None
    server_nonce_length: int | None = None


# ---------------------------------------------------------------------- binary reader (Part 6 5.2)


class UaError(Exception):
    """A malformed field: ``name`` is the weird to report."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        self.name = name
        self.detail = detail


class UaReader:
    """Little-endian OPC UA Binary built-in types from ``data[pos:]``, every length checked."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise UaError("opcua_truncated", f"{what}: {n} bytes needed, {self.left} left")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")

    def i32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little", signed=True)

    def bytestring(self, what: str) -> bytes | None:
        """A ByteString (Int32 length, -1 for null)."""
        length = self.i32(what)
        if length == -1:
            return None
        if length < 0:
            raise UaError("opcua_bad_string_length", f"{what}: length {length}")
        return self.take(length, what)

    def string(self, what: str) -> str | None:
        raw = self.bytestring(what)
        return None if raw is None else text(raw)

    def node_id(self, what: str) -> tuple[str, int, int | None]:
        """A NodeId or ExpandedNodeId (5.2.2.9/10): its text form, namespace and numeric identifier."""
        mask = self.u8(what)
        kind = mask & 0x3F
        numeric: int | None = None
        if kind == 0:
            namespace, numeric = 0, self.u8(what)
        elif kind == 1:
            namespace, numeric = self.u8(what), self.u16(what)
        elif kind == 2:
            namespace, numeric = self.u16(what), self.u32(what)
        elif kind in (3, 4, 5):
            namespace = self.u16(what)
        else:
            raise UaError("opcua_bad_node_id", f"{what}: NodeId encoding 0x{mask:02x}")
        if kind == 3:
            ident = f"s={self.string(what) or ''}"
        elif kind == 4:
            ident = f"g={uuid.UUID(bytes_le=self.take(16, what))}"
        elif kind == 5:
            ident = f"b={base64.b64encode(self.bytestring(what) or b'').decode()}"
        else:
            ident = f"i={numeric}"
        prefix = f"ns={namespace};" if namespace else ""
        if mask & 0x80:
            prefix = f"nsu={self.string(what) or ''};"
        if mask & 0x40:
            prefix = f"svr={self.u32(what)};{prefix}"
        return prefix + ident, namespace, numeric

    def extension_object(self, what: str) -> None:
        """Skip an ExtensionObject (5.2.2.15): TypeId, encoding byte, optional body."""
        self.node_id(what)
        encoding = self.u8(what)
        if encoding in (1, 2):
            self.bytestring(what)
        elif encoding != 0:
            raise UaError("opcua_bad_extension_object", f"{what}: encoding byte 0x{encoding:02x}")

    def diagnostic_info(self, what: str, depth: int = 0) -> None:
        """Skip a DiagnosticInfo (5.2.2.12), nested at most :data:`MAX_DEPTH` deep."""
        if depth > MAX_DEPTH:
            raise UaError("opcua_too_deep", f"{what}: DiagnosticInfo nested deeper than {MAX_DEPTH}")
        mask = self.u8(what)
        for bit in (0x01, 0x02, 0x08, 0x04):  # SymbolicId, NamespaceUri, Locale, LocalizedText
            if mask & bit:
                self.i32(what)
        if mask & 0x10:
            self.string(what)
        if mask & 0x20:
            self.u32(what)
        if mask & 0x40:
            self.diagnostic_info(what, depth + 1)

    def response_header(self) -> int:
        """Read a ResponseHeader (Part 4 7.33); returns its ServiceResult."""
        self.take(8, "ResponseHeader.Timestamp")
        self.u32("ResponseHeader.RequestHandle")
        result = self.u32("ResponseHeader.ServiceResult")
        self.diagnostic_info("ResponseHeader.ServiceDiagnostics")
        count = self.i32("ResponseHeader.StringTable")
        if count > MAX_ARRAY or count > self.left // 4:
            raise UaError("opcua_bad_array_length", f"StringTable of {count} strings")
        for _ in range(max(count, 0)):
            self.string("ResponseHeader.StringTable")
        self.extension_object("ResponseHeader.AdditionalHeader")
        return result

    def request_header(self) -> None:
        """Skip a RequestHeader (Part 4 7.32)."""
        self.node_id("RequestHeader.AuthenticationToken")
        self.take(8, "RequestHeader.Timestamp")
        self.u32("RequestHeader.RequestHandle")
        self.u32("RequestHeader.ReturnDiagnostics")
        self.string("RequestHeader.AuditEntryId")
        self.u32("RequestHeader.TimeoutHint")
        self.extension_object("RequestHeader.AdditionalHeader")


def text(raw: bytes) -> str:
    """A UTF-8 string field; undecodable bytes are kept as ``\\xNN`` escapes, at most MAX_TEXT chars."""
    return raw.decode("utf-8", "backslashreplace")[:MAX_TEXT]


def certificate_sha1(data: bytes) -> str:
    """SHA-1 of the first DER certificate of ``data`` (a chain is certificates back to back)."""
    if len(data) >= 4 and data[0] == 0x30 and data[1] == 0x82:
        end = 4 + int.from_bytes(data[2:4], "big")
        if end <= len(data):
            data = data[:end]
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


# ---------------------------------------------------------------------- recognition helpers


def _header(data: bytes) -> tuple[bytes, bytes, int] | None:
    """The message header at the start of ``data`` when it is well-formed (8 bytes needed)."""
    if len(data) < HEADER.size:
        return None
    msg_type, chunk, size = HEADER.unpack_from(data)
    if msg_type not in MIN_SIZES or chunk not in CHUNK_TYPES:
        return None
    if msg_type in CONNECTION_TYPES and chunk != b"F":
        return None
    if not MIN_SIZES[msg_type] <= size <= MAX_MESSAGE_SIZE:
        return None
    return msg_type, chunk, size


def _prefix_ok(data: bytes) -> bool:
    """Whether fewer than 8 bytes can still start a message header."""
    if any(t.startswith(data[:3]) for t in MIN_SIZES):
        return len(data) < 4 or data[3:4] in CHUNK_TYPES
    return False


def _strings_fill(data: bytes, offset: int, count: int, end: int) -> bool:
    """Whether ``count`` Strings starting at ``offset`` end exactly at ``end``."""
    reader = UaReader(data[:end], offset)
    try:
        for _ in range(count):
            reader.string("string")
    except UaError:
        return False
    return reader.pos == end


class OpcuaDissector(Dissector):
    """OPC UA binary over TCP (UA TCP / UA Secure Conversation)."""

    name = "opcua"
    description = (
        "OPC UA binary: Hello/Acknowledge/Error, secure channels, service ids of unsecured MSG chunks"
    )
    transports = frozenset({Transport.TCP})
    ports = frozenset({4840})
    event_types = (OpcuaMessage, OpcuaHello, OpcuaError, OpcuaSecureChannel)

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        self._policy: str | None = None
        self._unsecured: bool | None = None
        self._open: OrderedDict[tuple[bool, int], None] = OrderedDict()

    # ------------------------------------------------------------------ recognition and framing

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if transport != Transport.TCP:
            return Verdict.NO
        if len(data) < HEADER.size:
            return Verdict.MAYBE if _prefix_ok(data) else Verdict.NO
        header = _header(data)
        if header is None:
            return Verdict.NO
        msg_type, _chunk, size = header
        if msg_type == ACK:
            return Verdict.YES if size == MIN_SIZES[ACK] else Verdict.NO
        if msg_type == HEL:
            if len(data) < MIN_SIZES[HEL]:
                return Verdict.MAYBE
            url_length = int.from_bytes(data[28:32], "little", signed=True)
            fits = size == MIN_SIZES[HEL] + max(url_length, 0) and url_length >= -1
            return Verdict.YES if fits else Verdict.NO
        if len(data) < size:
            if msg_type in (MSG, CLO) and {sport, dport} & cls.ports and len(data) >= MIN_SIZES[MSG]:
                return Verdict.YES
            return Verdict.MAYBE
        if msg_type == ERR:
            return Verdict.YES if _strings_fill(data, 12, 1, size) else Verdict.NO
        if msg_type == RHE:
            return Verdict.YES if _strings_fill(data, 8, 2, size) else Verdict.NO
        if msg_type == OPN:
            reader = UaReader(data[:size], 12)
            try:
                uri = reader.bytestring("SecurityPolicyUri")
            except UaError:
                return Verdict.NO
            return Verdict.YES if uri is not None and uri.startswith(b"http") else Verdict.NO
        # MSG or CLO, complete: what follows must be nothing or another message header.
        rest = data[size:]
        if len(rest) >= HEADER.size:
            return Verdict.YES if _header(rest) is not None else Verdict.NO
        return Verdict.YES if not rest or _prefix_ok(rest) else Verdict.NO

    def frame(self, data: bytes, is_orig: bool) -> int:
        if len(data) < HEADER.size:
            return 0 if _prefix_ok(data) else -1
        msg_type, chunk, size = HEADER.unpack_from(data)
        if msg_type not in MIN_SIZES or chunk not in CHUNK_TYPES:
            return -1
        if not HEADER.size <= size <= MAX_MESSAGE_SIZE:
            return -1
        return size if len(data) >= size else 0

    # ------------------------------------------------------------------ parsing

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        if len(pdu) < HEADER.size:
            ctx.weird("opcua_truncated", f"{len(pdu)} bytes, a message header needs {HEADER.size}")
            return
        raw_type, raw_chunk, size = HEADER.unpack_from(pdu)
        if raw_type not in MIN_SIZES or raw_chunk not in CHUNK_TYPES:
            ctx.weird("opcua_unknown_message_type", f"message type {raw_type!r}, chunk type {raw_chunk!r}")
            return
        msg_type, chunk = raw_type.decode(), raw_chunk.decode()
        if size != len(pdu):
            ctx.weird("opcua_bad_message_size", f"message size {size}, {len(pdu)} bytes present")
            pdu = pdu[:size]
        if raw_type in CONNECTION_TYPES and raw_chunk != b"F":
            ctx.weird("opcua_bad_chunk_type", f"{msg_type} with chunk type {chunk}")
        info = _Chunk(msg_type=msg_type)
        reader = UaReader(pdu, HEADER.size)
        try:
            if raw_type in (HEL, ACK, RHE):
                self._hello(raw_type, reader, ctx)
            elif raw_type == ERR:
                code = reader.u32("Error")
                reason = reader.string("Reason")
                error = OpcuaError(
                    **ctx.where(),
                    msg_type=msg_type,
                    status_code=code,
                    status=status_name(code),
                    reason=reason,
                )
                ctx.emit(error)
                self._trailing(reader, ctx, "Error message")
            elif raw_type == OPN:
                self._open_channel(chunk, reader, info, ctx)
            else:
                self._symmetric(chunk, reader, info, ctx)
        except UaError as exc:
            ctx.weird(exc.name, exc.detail)
        ctx.emit(
            OpcuaMessage(
                **ctx.where(),
                msg_type=msg_type,
                chunk_type=chunk,
                msg_size=size,
                secure_channel_id=info.secure_channel_id,
                security_policy_uri=info.security_policy_uri,
                token_id=info.token_id,
                sequence_number=info.sequence_number,
                request_id=info.request_id,
                unsecured=info.unsecured,
                service_node_id=info.service_node_id,
                service_id=info.service_id,
                service=info.service,
                service_result=info.service_result,
                service_result_name=info.service_result_name,
            )
        )

    @staticmethod
    def _trailing(reader: UaReader, ctx: PduContext, what: str) -> None:
        if reader.left:
            ctx.weird("opcua_trailing_bytes", f"{reader.left} bytes after the {what}")

    def _hello(self, msg_type: bytes, reader: UaReader, ctx: PduContext) -> None:
        name = msg_type.decode()
        if msg_type == RHE:
            server_uri = reader.string("ServerUri")
            url = reader.string("EndpointUrl")
            ctx.emit(OpcuaHello(**ctx.where(), msg_type=name, server_uri=server_uri, endpoint_url=url))
            self._trailing(reader, ctx, "ReverseHello")
            return
        values = [
            reader.u32(f)
            for f in (
                "ProtocolVersion",
                "ReceiveBufferSize",
                "SendBufferSize",
                "MaxMessageSize",
                "MaxChunkCount",
            )
        ]
        url = None
        if msg_type == HEL:
            raw = reader.bytestring("EndpointUrl")
            if raw is not None:
                if len(raw) > MAX_ENDPOINT_URL:
                    ctx.weird("opcua_endpoint_url_too_long", f"EndpointUrl of {len(raw)} bytes")
                url = text(raw)
        version, receive, send, max_message, max_chunks = values
        ctx.emit(
            OpcuaHello(
                **ctx.where(),
                msg_type=name,
                protocol_version=version,
                receive_buffer_size=receive,
                send_buffer_size=send,
                max_message_size=max_message,
                max_chunk_count=max_chunks,
                endpoint_url=url,
            )
        )
        self._trailing(reader, ctx, "Hello" if msg_type == HEL else "Acknowledge")

    def _open_channel(self, chunk: str, reader: UaReader, info: _Chunk, ctx: PduContext) -> None:
        """OPN: asymmetric security header, then (policy None only) sequence header and body."""
        info.secure_channel_id = channel_id = reader.u32("SecureChannelId")
        raw_uri = reader.bytestring("SecurityPolicyUri")
        if raw_uri is not None and len(raw_uri) > MAX_POLICY_URI:
            ctx.weird("opcua_security_policy_uri_too_long", f"SecurityPolicyUri of {len(raw_uri)} bytes")
        uri = "" if raw_uri is None else text(raw_uri)
        info.security_policy_uri = uri
        certificate = reader.bytestring("SenderCertificate")
        thumbprint = reader.bytestring("ReceiverCertificateThumbprint")
        unsecured = uri == POLICY_NONE
        self._policy, self._unsecured = uri, unsecured
        info.unsecured = unsecured
        channel = _Channel()
        try:
            if unsecured:
                self._open_channel_body(chunk, reader, info, channel, ctx)
        except UaError as exc:
            ctx.weird(exc.name, exc.detail)
        ctx.emit(
            OpcuaSecureChannel(
                **ctx.where(),
                chunk_type=chunk,
                secure_channel_id=channel_id,
                security_policy_uri=uri,
                security_policy=uri.removeprefix(POLICY_PREFIX),
                unsecured=unsecured,
                sender_certificate_length=None if certificate is None else len(certificate),
                sender_certificate_sha1=certificate_sha1(certificate) if certificate else None,
                receiver_thumbprint=thumbprint.hex() if thumbprint else None,
                sequence_number=info.sequence_number,
                request_id=info.request_id,
                service=info.service or info.service_node_id,
                client_protocol_version=channel.client_protocol_version,
                request_type=channel.request_type,
                security_mode=channel.security_mode,
                requested_lifetime=channel.requested_lifetime,
                client_nonce_length=channel.client_nonce_length,
                service_result=info.service_result,
                service_result_name=info.service_result_name,
                server_protocol_version=channel.server_protocol_version,
                channel_id=channel.channel_id,
                token_id=channel.token_id,
                revised_lifetime=channel.revised_lifetime,
                server_nonce_length=channel.server_nonce_length,
            )
        )

    def _open_channel_body(
        self, chunk: str, reader: UaReader, info: _Chunk, channel: _Channel, ctx: PduContext
    ) -> None:
        info.sequence_number = reader.u32("SequenceNumber")
        info.request_id = reader.u32("RequestId")
        if chunk == "A":
            self._abort(reader, info, ctx, "OPN")
            return
        if chunk == "C":
            return  # the body goes on in the next chunk
        numeric = self._service(reader, info)
        if numeric == OPEN_REQUEST:
            reader.request_header()
            channel.client_protocol_version = reader.u32("ClientProtocolVersion")
            request_type = reader.i32("RequestType")
            channel.request_type = REQUEST_TYPES.get(request_type, f"unknown-{request_type}")
            mode = reader.i32("SecurityMode")
            channel.security_mode = SECURITY_MODES.get(mode, f"unknown-{mode}")
            if mode != MODE_NONE:
                ctx.weird("opcua_security_mode_mismatch", f"security mode {mode} with the policy None")
            nonce = reader.bytestring("ClientNonce")
            channel.client_nonce_length = None if nonce is None else len(nonce)
            channel.requested_lifetime = reader.u32("RequestedLifetime")
        elif numeric == OPEN_RESPONSE:
            self._result(reader.response_header(), info)
            channel.server_protocol_version = reader.u32("ServerProtocolVersion")
            channel.channel_id = reader.u32("SecurityToken.ChannelId")
            channel.token_id = reader.u32("SecurityToken.TokenId")
            reader.take(8, "SecurityToken.CreatedAt")
            channel.revised_lifetime = reader.u32("SecurityToken.RevisedLifetime")
            nonce = reader.bytestring("ServerNonce")
            channel.server_nonce_length = None if nonce is None else len(nonce)
        elif numeric == SERVICE_FAULT:
            self._result(reader.response_header(), info)
        else:
            ctx.weird("opcua_unexpected_service", f"OPN message carries {info.service_node_id}")
            return
        self._trailing(reader, ctx, "OpenSecureChannel body")

    def _symmetric(self, chunk: str, reader: UaReader, info: _Chunk, ctx: PduContext) -> None:
        """MSG/CLO: symmetric security header, then (unsecured channels only) sequence header and body."""
        info.secure_channel_id = reader.u32("SecureChannelId")
        info.token_id = reader.u32("TokenId")
        info.security_policy_uri = self._policy
        info.unsecured = self._unsecured
        if not self._unsecured:
            return  # signed or encrypted (or unknown): the rest is not plaintext, or not known to be
        info.sequence_number = reader.u32("SequenceNumber")
        info.request_id = request_id = reader.u32("RequestId")
        key = (ctx.is_orig, request_id)
        continued = key in self._open
        if chunk == "C":
            if continued:
                return  # a middle chunk: no header of its own
            self._open[key] = None
            while len(self._open) > MAX_OPEN_MESSAGES:
                self._open.popitem(last=False)
        elif continued:
            del self._open[key]
        if chunk == "A":
            self._abort(reader, info, ctx, info.msg_type)
            return
        if continued:
            return  # the final chunk of a multi-chunk message
        try:
            self._service(reader, info)
            if info.service is not None and (
                info.service.endswith("Response") or info.service_id == SERVICE_FAULT
            ):
                self._result(reader.response_header(), info)
        except UaError:
            if chunk != "C":  # a first chunk may legitimately end inside the header
                raise

    @staticmethod
    def _service(reader: UaReader, info: _Chunk) -> int | None:
        """The service's TypeId NodeId that starts a message body; returns its numeric id in ns 0."""
        node, namespace, numeric = reader.node_id("TypeId")
        info.service_node_id = node
        if namespace == 0 and numeric is not None:
            info.service_id = numeric
            info.service = service_name(numeric)
            return numeric
        return None

    @staticmethod
    def _result(code: int, info: _Chunk) -> None:
        info.service_result = code
        info.service_result_name = status_name(code)

    def _abort(self, reader: UaReader, info: _Chunk, ctx: PduContext, msg_type: str) -> None:
        code = reader.u32("Error")
        reason = reader.string("Reason")
        ctx.emit(
            OpcuaError(
                **ctx.where(),
                msg_type=msg_type,
                status_code=code,
                status=status_name(code),
                reason=reason,
                request_id=info.request_id,
            )
        )


@dataclass(slots=True)
class _Chunk:
    """The fields of one :class:`OpcuaMessage` as they are decoded."""

    msg_type: str
    secure_channel_id: int | None = None
    security_policy_uri: str | None = None
    token_id: int | None = None
    sequence_number: int | None = None
    request_id: int | None = None
    unsecured: bool | None = None
    service_node_id: str | None = None
    service_id: int | None = None
    service: str | None = None
    service_result: int | None = None
    service_result_name: str | None = None


@dataclass(slots=True)
class _Channel:
    """The decoded body of an unsecured OpenSecureChannel request or response."""

    client_protocol_version: int | None = None
    request_type: str | None = None
    security_mode: str | None = None
    requested_lifetime: int | None = None
    client_nonce_length: int | None = None
    server_protocol_version: int | None = None
    channel_id: int | None = None
    token_id: int | None = None
    revised_lifetime: int | None = None
    server_nonce_length: int | None = None
