"""CoAP dissector: every CoAP message over UDP becomes one ``coap`` event.

What is covered, with the specification it follows:

- the message format of RFC 7252 section 3: version, type (CON, NON, ACK, RST), token length, code
  (``class.detail``: requests 0.01-0.07 of RFC 7252 and RFC 8132, responses 2.xx/4.xx/5.xx), message id,
  token, options (delta/length encoding with the 13/14 extensions, section 3.1) and payload;
- the options of RFC 7252 section 5.10 (Uri-Host, Uri-Port, Uri-Path joined into a path, Uri-Query,
  Location-Path/-Query, Content-Format, Accept, Max-Age, ETag, If-Match, If-None-Match, Proxy-Uri,
  Proxy-Scheme, Size1), Observe (RFC 7641), Block1/Block2 and Size2 (RFC 7959), OSCORE (RFC 8613),
  Echo / Request-Tag (RFC 9175), Hop-Limit (RFC 8768) and No-Response (RFC 7967).

Recognition is by content and strict, so that random bytes are not taken for CoAP: version 1, a token
length of at most 8, a known code, and options that parse to the end (no reserved nibble 15, no option
running past the datagram, no payload marker without payload); off port 5683 every option number must
also be a registered one. The payload is reported by size only; credentials in a Uri-Query (``pass``,
``pwd``, ``secret``, ``token``, ``key``, ``auth`` parameters) are redacted.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from fieldward.protocols.base import Dissector, Event, PduContext, Transport, Verdict

COAP_PORT = 5683
HEADER = struct.Struct(">BBH")
HEADER_SIZE = HEADER.size
VERSION = 1
MAX_TKL = 8
PAYLOAD_MARKER = 0xFF
MAX_OPTIONS = 64
MAX_TEXT = 1024
TYPE_NAMES = ("CON", "NON", "ACK", "RST")

CODE_NAMES: dict[int, str] = {
    0x00: "Empty",
    0x01: "GET",
    0x02: "POST",
    0x03: "PUT",
    0x04: "DELETE",
    0x05: "FETCH",
    0x06: "PATCH",
    0x07: "iPATCH",
    0x41: "Created",
    0x42: "Deleted",
    0x43: "Valid",
    0x44: "Changed",
    0x45: "Content",
    0x5F: "Continue",
    0x80: "Bad Request",
    0x81: "Unauthorized",
    0x82: "Bad Option",
    0x83: "Forbidden",
    0x84: "Not Found",
    0x85: "Method Not Allowed",
    0x86: "Not Acceptable",
    0x88: "Request Entity Incomplete",
    0x89: "Conflict",
    0x8C: "Precondition Failed",
    0x8D: "Request Entity Too Large",
    0x8F: "Unsupported Content-Format",
    0x96: "Unprocessable Entity",
    0x9D: "Too Many Requests",
    0xA0: "Internal Server Error",
    0xA1: "Not Implemented",
    0xA2: "Bad Gateway",
    0xA3: "Service Unavailable",
    0xA4: "Gateway Timeout",
    0xA5: "Proxying Not Supported",
    0xA8: "Hop Limit Reached",
}
"""The CoRE Parameters "CoAP Codes" registry (RFC 7252 12.1, RFC 7959, RFC 8132, RFC 8516, RFC 8768)."""

IF_MATCH, URI_HOST, ETAG, IF_NONE_MATCH, OBSERVE, URI_PORT, LOCATION_PATH = 1, 3, 4, 5, 6, 7, 8
OSCORE, URI_PATH, CONTENT_FORMAT, MAX_AGE, URI_QUERY, HOP_LIMIT, ACCEPT = 9, 11, 12, 14, 15, 16, 17
LOCATION_QUERY, BLOCK2, BLOCK1, SIZE2, PROXY_URI, PROXY_SCHEME, SIZE1 = 20, 23, 27, 28, 35, 39, 60
ECHO, NO_RESPONSE, REQUEST_TAG = 252, 258, 292
OPTION_NAMES: dict[int, str] = {
    IF_MATCH: "If-Match",
    URI_HOST: "Uri-Host",
    ETAG: "ETag",
    IF_NONE_MATCH: "If-None-Match",
    OBSERVE: "Observe",
    URI_PORT: "Uri-Port",
    LOCATION_PATH: "Location-Path",
    OSCORE: "OSCORE",
    URI_PATH: "Uri-Path",
    CONTENT_FORMAT: "Content-Format",
    MAX_AGE: "Max-Age",
    URI_QUERY: "Uri-Query",
    HOP_LIMIT: "Hop-Limit",
    ACCEPT: "Accept",
    LOCATION_QUERY: "Location-Query",
    BLOCK2: "Block2",
    BLOCK1: "Block1",
    SIZE2: "Size2",
    PROXY_URI: "Proxy-Uri",
    PROXY_SCHEME: "Proxy-Scheme",
    SIZE1: "Size1",
    ECHO: "Echo",
    NO_RESPONSE: "No-Response",
    REQUEST_TAG: "Request-Tag",
}
"""The CoRE Parameters "CoAP Option Numbers" registry (the options this dissector knows)."""
UINT_OPTIONS: dict[int, int] = {
    OBSERVE: 3,
    URI_PORT: 2,
    CONTENT_FORMAT: 2,
    MAX_AGE: 4,
    HOP_LIMIT: 1,
    ACCEPT: 2,
    BLOCK2: 3,
    BLOCK1: 3,
    SIZE2: 4,
    SIZE1: 4,
    NO_RESPONSE: 1,
}
"""uint options and their maximum length in bytes (RFC 7252 5.10, RFC 7641, RFC 7959)."""
SECRET_QUERY = re.compile(r"^(pass|password|pwd|secret|token|key|auth|psk)[^=]*=", re.IGNORECASE)
USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")


@dataclass(frozen=True, slots=True, kw_only=True)
class CoapMessage(Event):
    """One CoAP message (``events/coap.parquet``)."""

    log: ClassVar[str] = "coap"

    version: int
    type: int
    type_name: str
    tkl: int
    code: int
    code_str: str
    code_name: str
    is_request: bool
    message_id: int
    token: str
    options: list[int]
    uri_host: str | None = None
    uri_port: int | None = None
    uri_path: str | None = None
    uri_query: str | None = None
    query_redacted: bool = False
    location_path: str | None = None
    location_query: str | None = None
    content_format: int | None = None
    accept: int | None = None
    max_age: int | None = None
    etag: str | None = None
    observe: int | None = None
    block1_num: int | None = None
    block1_more: bool | None = None
    block1_size: int | None = None
    block2_num: int | None = None
    block2_more: bool | None = None
    block2_size: int | None = None
    size1: int | None = None
    size2: int | None = None
    proxy_uri: str | None = None
    proxy_scheme: str | None = None
    oscore: bool = False
    payload_len: int


@dataclass(frozen=True, slots=True)
class _Option:
    number: int
    value: bytes


def code_text(code: int) -> str:
    """A code as ``c.dd`` (RFC 7252 3: class in the top 3 bits, detail in the low 5)."""
    return f"{code >> 5}.{code & 0x1F:02d}"


def _read_options(data: bytes, offset: int) -> tuple[list[_Option], int, str | None]:
    """Options from ``offset``: (options, payload offset or -1 when none, error or None)."""
    options: list[_Option] = []
    number = 0
    while offset < len(data):
        byte = data[offset]
        if byte == PAYLOAD_MARKER:
            if offset + 1 == len(data):
                return options, -1, "payload marker without payload"
            return options, offset + 1, None
        if len(options) >= MAX_OPTIONS:
            return options, -1, f"more than {MAX_OPTIONS} options"
        offset += 1
        fields = []
        for nibble in (byte >> 4, byte & 0x0F):
            if nibble == 13:
                if offset + 1 > len(data):
                    return options, -1, "option header runs past the message"
                fields.append(13 + data[offset])
                offset += 1
            elif nibble == 14:
                if offset + 2 > len(data):
                    return options, -1, "option header runs past the message"
                fields.append(269 + struct.unpack_from(">H", data, offset)[0])
                offset += 2
            elif nibble == 15:
                return options, -1, "reserved option delta or length 15"
            else:
                fields.append(nibble)
        delta, length = fields
        number += delta
        if offset + length > len(data):
            return options, -1, f"option {number} of {length} bytes runs past the message"
        options.append(_Option(number, data[offset : offset + length]))
        offset += length
    return options, -1, None


def _uint(value: bytes) -> int:
    return int.from_bytes(value, "big")


def _text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")[:MAX_TEXT]


class CoapDissector(Dissector):
    """CoAP over UDP (RFC 7252), port 5683. CoAP over DTLS (5684) is encrypted and not dissected."""

    name = "coap"
    description = (
        "CoAP: type, method/response code, token, Uri-Host/Path/Query, Content-Format, Observe, Block"
    )
    transports = frozenset({Transport.UDP})
    ports = frozenset({COAP_PORT})
    event_types = (CoapMessage,)

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if transport != Transport.UDP or len(data) < HEADER_SIZE:
            return Verdict.NO
        first, code, _mid = HEADER.unpack_from(data)
        tkl = first & 0x0F
        if first >> 6 != VERSION or tkl > MAX_TKL or code not in CODE_NAMES:
            return Verdict.NO
        if code == 0:  # Empty message: exactly the 4-byte header (RFC 7252 4.1)
            return Verdict.YES if len(data) == HEADER_SIZE and tkl == 0 else Verdict.NO
        if len(data) < HEADER_SIZE + tkl:
            return Verdict.NO
        options, _payload, error = _read_options(data, HEADER_SIZE + tkl)
        if error is not None or (options and options[0].number == 0):
            return Verdict.NO
        on_port = COAP_PORT in (sport, dport)
        if not on_port and not all(option.number in OPTION_NAMES for option in options):
            return Verdict.NO
        return Verdict.YES

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        if len(pdu) < HEADER_SIZE:
            ctx.weird("coap_truncated", f"{len(pdu)} bytes, a CoAP header needs {HEADER_SIZE}")
            return
        first, code, message_id = HEADER.unpack_from(pdu)
        version, mtype, tkl = first >> 6, (first >> 4) & 0x3, first & 0x0F
        if version != VERSION:
            ctx.weird("coap_bad_version", f"version {version}")
        if tkl > MAX_TKL:
            ctx.weird("coap_bad_token_length", f"token length {tkl} (9-15 are reserved)")
            tkl = 0
        if len(pdu) < HEADER_SIZE + tkl:
            ctx.weird("coap_truncated", f"token of {tkl} bytes, {len(pdu) - HEADER_SIZE} present")
            return
        if code not in CODE_NAMES:
            ctx.weird("coap_unknown_code", f"code {code_text(code)}")
        if code == 0 and len(pdu) > HEADER_SIZE:
            ctx.weird("coap_empty_with_data", f"Empty message of {len(pdu)} bytes")
        options, payload_at, error = _read_options(pdu, HEADER_SIZE + tkl)
        if error is not None:
            ctx.weird("coap_bad_option", error)
        fields = self._options(options, ctx)
        ctx.emit(
            CoapMessage(
                **ctx.where(),
                version=version,
                type=mtype,
                type_name=TYPE_NAMES[mtype],
                tkl=tkl,
                code=code,
                code_str=code_text(code),
                code_name=CODE_NAMES.get(code, f"unknown-{code_text(code)}"),
                is_request=code >> 5 == 0 and code != 0,
                message_id=message_id,
                token=pdu[HEADER_SIZE : HEADER_SIZE + tkl].hex(),
                options=[option.number for option in options],
                payload_len=len(pdu) - payload_at if payload_at >= 0 else 0,
                **fields,
            )
        )

    @staticmethod
    def _options(options: list[_Option], ctx: PduContext) -> dict[str, Any]:
        out: dict[str, Any] = {}
        paths: dict[str, list[str]] = {
            "uri_path": [],
            "uri_query": [],
            "location_path": [],
            "location_query": [],
        }
        if options and options[0].number == 0:
            ctx.weird("coap_bad_option", "option number 0 is reserved")
        for option in options:
            number, value = option.number, option.value
            if number in UINT_OPTIONS and len(value) > UINT_OPTIONS[number]:
                ctx.weird("coap_bad_option", f"{OPTION_NAMES[number]} of {len(value)} bytes")
                continue
            if number == URI_HOST:
                out["uri_host"] = _text(value)
            elif number == URI_PORT:
                out["uri_port"] = _uint(value)
            elif number == URI_PATH:
                paths["uri_path"].append(_text(value))
            elif number == URI_QUERY:
                text = _text(value)
                match = SECRET_QUERY.match(text)
                if match:
                    text = match.group(0) + "<redacted>"
                    out["query_redacted"] = True
                paths["uri_query"].append(text)
            elif number == LOCATION_PATH:
                paths["location_path"].append(_text(value))
            elif number == LOCATION_QUERY:
                paths["location_query"].append(_text(value))
            elif number in (CONTENT_FORMAT, ACCEPT, MAX_AGE, OBSERVE, SIZE1, SIZE2):
                key = {
                    CONTENT_FORMAT: "content_format",
                    ACCEPT: "accept",
                    MAX_AGE: "max_age",
                    OBSERVE: "observe",
                    SIZE1: "size1",
                    SIZE2: "size2",
                }[number]
                out[key] = _uint(value)
            elif number in (BLOCK1, BLOCK2):
                block = _uint(value)
                szx = block & 0x7
                prefix = "block1" if number == BLOCK1 else "block2"
                if szx == 7:
                    ctx.weird("coap_bad_option", f"{OPTION_NAMES[number]} with reserved SZX 7")
                out[f"{prefix}_num"] = block >> 4
                out[f"{prefix}_more"] = bool(block & 0x8)
                out[f"{prefix}_size"] = 1 << (szx + 4)
            elif number == ETAG:
                out["etag"] = value.hex()
            elif number == PROXY_URI:
                uri = _text(value)
                out["proxy_uri"] = USERINFO.sub(r"\1", uri)
            elif number == PROXY_SCHEME:
                out["proxy_scheme"] = _text(value)
            elif number == OSCORE:
                out["oscore"] = True
        out["uri_path"] = "/" + "/".join(paths["uri_path"]) if paths["uri_path"] else None
        out["location_path"] = "/" + "/".join(paths["location_path"]) if paths["location_path"] else None
        for key in ("uri_query", "location_query"):
            out[key] = "&".join(paths[key]) if paths[key] else None
        return out
