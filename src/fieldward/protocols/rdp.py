"""RDP dissector: the cleartext start of a Remote Desktop connection (MS-RDPBCGR 1.3.1.1, 2.2.1.1-2.2.1.2).

What is dissected (TCP, well-known port 3389, recognised by content on any port):

- the **Client X.224 Connection Request PDU** (MS-RDPBCGR 2.2.1.1): TPKT (RFC 1006), the X.224 class 0
  CR TPDU (ITU-T X.224 13.3), the optional routing token (``Cookie: msts=...``) or cookie
  (``Cookie: mstshash=<user name>``, 2.2.1.1), the optional RDP Negotiation Request (2.2.1.1.1,
  ``RDP_NEG_REQ``: flags and ``requestedProtocols``) and the optional Correlation Info (2.2.1.1.2);
- the **Server X.224 Connection Confirm PDU** (2.2.1.2) with its RDP Negotiation Response (2.2.1.2.1,
  ``RDP_NEG_RSP``: flags and ``selectedProtocol``) or RDP Negotiation Failure (2.2.1.2.2,
  ``RDP_NEG_FAILURE``: ``failureCode``); a confirm without negotiation data means standard RDP
  security (PROTOCOL_RDP, 3.3.5.3.2).

One ``rdp`` event per connection pairs the request with the confirm. Everything after the confirm is
TLS/CredSSP (or RDP-encrypted MCS traffic) and is skipped. S7comm and other ISO-on-TCP protocols use
the same TPKT/COTP framing (on port 102): the recogniser claims a stream only for an RDP cookie,
negotiation structure or MCS Connect-Initial, never for the COTP parameters S7comm sends.
Malformed input is reported as ``rdp_*`` weirds; the dissector never judges the traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto
from typing import ClassVar

from fieldward.protocols.base import Dissector, Event, FlowInfo, PduContext, Transport, Verdict

TPKT_VERSION = 3
TPKT_HEADER = 4
X224_FIXED = 7
"""Length indicator, code, DST-REF, SRC-REF, class option (X.224 13.3.1)."""
X224_CR = 0xE0
X224_CC = 0xD0
X224_DT = 0xF0
MAX_CONNECTION_PDU = 1024
"""Largest CR/CC accepted: a cookie line is short (MS-RDPBCGR: the user name is cut to 9 characters)."""
MAX_RECOGNITION_TPKTS = 4
MAX_COOKIE = 256
"""Characters of a cookie or routing token kept."""
MCS_CONNECT_INITIAL = b"\x7f\x65"
"""BER tag of T.125 MCS Connect-Initial ([APPLICATION 101]), the first DT of a legacy connection."""

COOKIE_PREFIX = b"Cookie: "
MSTSHASH = b"mstshash="
MSTS = b"msts="

TYPE_RDP_NEG_REQ = 0x01
TYPE_RDP_NEG_RSP = 0x02
TYPE_RDP_NEG_FAILURE = 0x03
TYPE_RDP_CORRELATION_INFO = 0x06
NEG_LENGTH = 8
CORRELATION_LENGTH = 36
CORRELATION_INFO_PRESENT = 0x08

PROTOCOL_RDP = 0x00000000
PROTOCOL_SSL = 0x00000001
PROTOCOL_HYBRID = 0x00000002
PROTOCOL_RDSTLS = 0x00000004
PROTOCOL_HYBRID_EX = 0x00000008
PROTOCOL_RDSAAD = 0x00000010
PROTOCOL_NAMES: dict[int, str] = {
    PROTOCOL_SSL: "SSL",
    PROTOCOL_HYBRID: "HYBRID",
    PROTOCOL_RDSTLS: "RDSTLS",
    PROTOCOL_HYBRID_EX: "HYBRID_EX",
    PROTOCOL_RDSAAD: "RDSAAD",
}
"""MS-RDPBCGR 2.2.1.1.1 requestedProtocols flags (PROTOCOL_RDP is the value 0)."""
NLA_PROTOCOLS = frozenset({PROTOCOL_HYBRID, PROTOCOL_HYBRID_EX})
"""Protocols that authenticate the user with CredSSP before the session (Network Level Authentication)."""

FAILURE_CODES: dict[int, str] = {
    0x01: "SSL_REQUIRED_BY_SERVER",
    0x02: "SSL_NOT_ALLOWED_BY_SERVER",
    0x03: "SSL_CERT_NOT_ON_SERVER",
    0x04: "INCONSISTENT_FLAGS",
    0x05: "HYBRID_REQUIRED_BY_SERVER",
    0x06: "SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER",
}
"""MS-RDPBCGR 2.2.1.2.2 failureCode values."""


class _Phase(Enum):
    CONNECTING = auto()
    OPAQUE = auto()


@dataclass(frozen=True, slots=True, kw_only=True)
class RdpNegotiation(Event):
    """One connection's X.224 connection request and confirm: ``events/rdp.parquet``."""

    log: ClassVar[str] = "rdp"

    cookie: str | None
    routing_token: str | None
    request_flags: int | None
    requested_protocols: list[str]
    requested_protocols_value: int | None
    correlation_id: str | None
    response: str | None
    response_flags: int | None
    selected_protocol: str | None
    selected_protocol_value: int | None
    failure_code: int | None
    failure_reason: str | None
    nla: bool


def protocol_names(flags: int) -> list[str]:
    """Names of the flags set in a requestedProtocols value (``["RDP"]`` for 0)."""
    if flags == PROTOCOL_RDP:
        return ["RDP"]
    names = [name for bit, name in PROTOCOL_NAMES.items() if flags & bit]
    unknown = flags & ~sum(PROTOCOL_NAMES)
    if unknown:
        names.append(f"unknown-0x{unknown:08x}")
    return names


def protocol_name(value: int) -> str:
    """Name of one selectedProtocol value."""
    if value == PROTOCOL_RDP:
        return "RDP"
    return PROTOCOL_NAMES.get(value, f"unknown-0x{value:08x}")


def tpkt_length(data: bytes) -> int:
    """Length of the TPKT at the start of ``data``: 0 when more bytes are needed, -1 when not a TPKT."""
    if data[:1] and data[0] != TPKT_VERSION:
        return -1
    if len(data) >= 2 and data[1] != 0:
        return -1
    if len(data) < TPKT_HEADER:
        return 0
    length = int.from_bytes(data[2:4], "big")
    if length < TPKT_HEADER + 3:
        return -1
    return length if len(data) >= length else 0


@dataclass(slots=True)
class _Variable:
    """The variable part of a CR or CC TPDU, split into its RDP structures."""

    cookie: str | None = None
    routing_token: str | None = None
    neg_type: int | None = None
    neg_flags: int | None = None
    neg_value: int | None = None
    correlation_id: str | None = None
    error: str | None = None
    """Why the part is not what MS-RDPBCGR allows (weird detail)."""

    @property
    def rdp(self) -> bool:
        """It carries a structure only RDP sends (a cookie, a routing token or negotiation data)."""
        return self.error is None and (
            self.cookie is not None or self.routing_token is not None or self.neg_type is not None
        )


def split_variable(part: bytes, request: bool) -> _Variable:
    """Split the variable part of a CR (``request``) or CC into cookie / token and negotiation data."""
    found = _Variable()
    rest = part
    if request and rest.startswith(COOKIE_PREFIX[: len(rest)]) and rest:
        end = rest.find(b"\r\n")
        if end < 0:
            found.error = "cookie without CR LF"
            return found
        value = rest[len(COOKIE_PREFIX) : end].decode("latin-1")[:MAX_COOKIE]
        if rest.startswith(COOKIE_PREFIX + MSTSHASH):
            found.cookie = value[len(MSTSHASH) :]
        elif rest.startswith(COOKIE_PREFIX + MSTS):
            found.routing_token = value[len(MSTS) :]
        else:
            found.routing_token = value  # a load balancer's own token (MS-RDPBCGR 2.2.1.1: routingToken)
        rest = rest[end + 2 :]
    if not rest:
        return found
    if len(rest) < NEG_LENGTH:
        found.error = f"{len(rest)} bytes after the {'cookie' if found.cookie is not None else 'header'}"
        return found
    kind, flags, length = rest[0], rest[1], int.from_bytes(rest[2:4], "little")
    allowed = (TYPE_RDP_NEG_REQ,) if request else (TYPE_RDP_NEG_RSP, TYPE_RDP_NEG_FAILURE)
    if kind not in allowed or length != NEG_LENGTH:
        found.error = f"negotiation type 0x{kind:02x} length {length}"
        return found
    found.neg_type, found.neg_flags = kind, flags
    found.neg_value = int.from_bytes(rest[4:8], "little")
    rest = rest[NEG_LENGTH:]
    correlation = (
        request
        and flags & CORRELATION_INFO_PRESENT
        and len(rest) >= CORRELATION_LENGTH
        and rest[0] == TYPE_RDP_CORRELATION_INFO
        and int.from_bytes(rest[2:4], "little") == CORRELATION_LENGTH
    )
    if correlation:
        found.correlation_id = rest[4:20].hex()
        rest = rest[CORRELATION_LENGTH:]
    if rest:
        found.error = f"{len(rest)} bytes after the negotiation data"
    return found


def _recognise_tpkt(tpkt: bytes, length: int) -> Verdict:
    """One TPKT (``len(tpkt) < length`` when incomplete). MAYBE: an X.224 TPDU that may be RDP's."""
    if len(tpkt) < TPKT_HEADER + 2:
        return Verdict.MAYBE
    li, code = tpkt[4], tpkt[5]
    if code == X224_DT:
        if li != 2 or length < 9:
            return Verdict.NO
        if len(tpkt) < 9:
            return Verdict.MAYBE
        return Verdict.YES if tpkt[7:9] == MCS_CONNECT_INITIAL else Verdict.NO
    if code not in (X224_CR, X224_CC) or li < X224_FIXED - 1 or length != TPKT_HEADER + 1 + li:
        return Verdict.NO
    if length > MAX_CONNECTION_PDU:
        return Verdict.NO
    if len(tpkt) < TPKT_HEADER + X224_FIXED:
        return Verdict.MAYBE
    if (code == X224_CR and tpkt[6:8] != b"\x00\x00") or tpkt[10] != 0:  # DST-REF 0, class 0
        return Verdict.NO
    if len(tpkt) < length:
        # A request cut into small segments: its cookie's start is enough (S7comm sends parameters).
        start = tpkt[TPKT_HEADER + X224_FIXED :]
        if code == X224_CR and len(start) >= len(COOKIE_PREFIX):
            return Verdict.YES if start.startswith(COOKIE_PREFIX) else Verdict.NO
        return Verdict.MAYBE
    part = split_variable(tpkt[TPKT_HEADER + X224_FIXED : length], code == X224_CR)
    if part.rdp:
        return Verdict.YES
    return Verdict.MAYBE if part.error is None and len(tpkt) == TPKT_HEADER + X224_FIXED else Verdict.NO


@dataclass(slots=True)
class _Request:
    ts: int
    part: _Variable


class RdpDissector(Dissector):
    """RDP over TCP: the X.224 connection request and confirm with their negotiation data."""

    name = "rdp"
    description = "RDP: connection request cookie, requested and selected security protocols (NLA)"
    transports = frozenset({Transport.TCP})
    ports = frozenset({3389})
    event_types = (RdpNegotiation,)

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        self._phase = [_Phase.CONNECTING, _Phase.CONNECTING]
        self._request: _Request | None = None
        self._confirm: _Request | None = None
        self._client_is_orig = True
        self._reported = False

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if transport != Transport.TCP:
            return Verdict.NO
        offset = 0
        for _ in range(MAX_RECOGNITION_TPKTS):
            rest = data[offset:]
            if not rest:
                return Verdict.MAYBE
            if tpkt_length(rest) < 0:
                return Verdict.NO
            if len(rest) < TPKT_HEADER:
                return Verdict.MAYBE
            length = int.from_bytes(rest[2:4], "big")
            verdict = _recognise_tpkt(rest[:length], length)
            if verdict != Verdict.MAYBE or len(rest) < length:
                return verdict
            offset += length
        return Verdict.MAYBE

    def frame(self, data: bytes, is_orig: bool) -> int:
        d = 0 if is_orig else 1
        if self._phase[d] == _Phase.OPAQUE:
            return len(data)
        length = tpkt_length(data)
        if length < 0 and (self._request is not None or self._confirm is not None):
            # After the connection PDUs the stream turns into TLS (or fast-path RDP): not framed.
            self._phase[d] = _Phase.OPAQUE
            return len(data)
        return length

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        d = 0 if ctx.is_orig else 1
        if self._phase[d] == _Phase.OPAQUE:
            return
        if len(pdu) < TPKT_HEADER + 2 or pdu[0] != TPKT_VERSION or pdu[1] != 0:
            ctx.weird("rdp_bad_tpkt", f"{len(pdu)} bytes do not start with a TPKT")
            self._phase[d] = _Phase.OPAQUE
            return
        li, code = pdu[4], pdu[5]
        if code == X224_DT:
            self._phase[d] = _Phase.OPAQUE  # MCS data of standard RDP security: not followed
            return
        if code not in (X224_CR, X224_CC):
            ctx.weird("rdp_unexpected_tpdu", f"X.224 code 0x{code:02x} before the connection was set up")
            self._phase[d] = _Phase.OPAQUE
            return
        if li < X224_FIXED - 1 or TPKT_HEADER + 1 + li > len(pdu):
            ctx.weird("rdp_bad_length", f"length indicator {li} in a {len(pdu)}-byte TPKT")
            return
        if TPKT_HEADER + 1 + li != len(pdu):
            ctx.weird("rdp_bad_length", f"length indicator {li} leaves {len(pdu) - 5 - li} bytes")
        part = split_variable(pdu[TPKT_HEADER + X224_FIXED : TPKT_HEADER + 1 + li], code == X224_CR)
        if part.error is not None:
            ctx.weird("rdp_bad_negotiation", part.error)
        if code == X224_CR:
            if self._request is not None:
                ctx.weird("rdp_repeated_request", "a second connection request on the flow")
                return
            self._client_is_orig = ctx.is_orig
            self._request = _Request(ctx.ts, part)
        else:
            if self._confirm is not None:
                ctx.weird("rdp_repeated_confirm", "a second connection confirm on the flow")
                return
            self._client_is_orig = not ctx.is_orig
            self._confirm = _Request(ctx.ts, part)
        if self._request is not None and self._confirm is not None:
            self._report(ctx)
            self._phase = [_Phase.OPAQUE, _Phase.OPAQUE]

    def close(self, ctx: PduContext) -> None:
        if self._request is not None or self._confirm is not None:
            self._report(ctx)

    def _report(self, ctx: PduContext) -> None:
        if self._reported:
            return
        self._reported = True
        request, confirm = self._request, self._confirm
        where = ctx.where()
        where["ts"] = request.ts if request is not None else confirm.ts if confirm is not None else ctx.ts
        where["is_orig"] = self._client_is_orig
        req = request.part if request is not None else _Variable()
        requested = req.neg_value if req.neg_type == TYPE_RDP_NEG_REQ else None
        response: str | None = None
        selected: int | None = None
        selected_name: str | None = None
        failure: int | None = None
        response_flags: int | None = None
        if confirm is not None:
            rsp = confirm.part
            if rsp.neg_type == TYPE_RDP_NEG_RSP and rsp.neg_value is not None:
                response, selected, response_flags = "negotiation_response", rsp.neg_value, rsp.neg_flags
                selected_name = protocol_name(selected)
            elif rsp.neg_type == TYPE_RDP_NEG_FAILURE:
                response, failure = "negotiation_failure", rsp.neg_value
            elif rsp.error is None:
                # MS-RDPBCGR 3.3.5.3.2: no negotiation data in the confirm means PROTOCOL_RDP.
                response, selected_name = "no_negotiation_data", "RDP"
            else:
                response = "malformed"
        ctx.emit(
            RdpNegotiation(
                **where,
                cookie=req.cookie,
                routing_token=req.routing_token,
                request_flags=req.neg_flags,
                requested_protocols=protocol_names(requested) if requested is not None else [],
                requested_protocols_value=requested,
                correlation_id=req.correlation_id,
                response=response,
                response_flags=response_flags,
                selected_protocol=selected_name,
                selected_protocol_value=selected,
                failure_code=failure,
                failure_reason=(
                    FAILURE_CODES.get(failure, f"unknown-{failure}") if failure is not None else None
                ),
                nla=selected in NLA_PROTOCOLS,
            )
        )
