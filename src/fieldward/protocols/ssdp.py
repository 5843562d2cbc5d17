"""SSDP dissector: every SSDP datagram (M-SEARCH, NOTIFY, search response) becomes one ``ssdp`` event.

SSDP is the discovery part of UPnP (UPnP Device Architecture 2.0, section 1): HTTP-formatted messages
over UDP, multicast to 239.255.255.250:1900 (or [FF02::C]:1900) and unicast answers. Devices announce
themselves (NOTIFY ``ssdp:alive`` / ``ssdp:byebye`` / ``ssdp:update``) and answer searches (M-SEARCH,
answered by ``HTTP/1.1 200 OK``) with the headers that name them: ``SERVER`` (OS, UPnP version and
product), ``USN`` (the device's ``uuid:``), ``NT``/``ST`` (device or service type), ``LOCATION`` (URL of
the device description XML), ``CACHE-CONTROL`` (``max-age``) and, from control points, ``USER-AGENT``.

Recognition is by content: an ``M-SEARCH`` or ``NOTIFY`` request line with an HTTP/1.x version on any
port, or an ``HTTP/1.x`` status line on UDP that carries an ``ST`` or ``USN`` header (or comes from or
to port 1900). Malformed messages are reported as ``ssdp_*`` weirds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from fieldward.protocols.base import Dissector, Event, PduContext, Transport, Verdict

SSDP_PORT = 1900
MAX_HEADERS = 64
MAX_VALUE = 1024
"""Characters kept of one header value."""
REQUEST_LINE = re.compile(rb"^([A-Z][A-Z-]{0,31}) (\S{1,1024}) (HTTP/1\.[01])\r?$")
STATUS_LINE = re.compile(rb"^(HTTP/1\.[01]) ([0-9]{3})(?: ([^\r\n]*))?\r?$")
SSDP_METHODS = frozenset({b"M-SEARCH", b"NOTIFY"})
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
"""RFC 9110 token characters."""
MAX_AGE = re.compile(r"max-age\s*=\s*\"?(\d{1,10})", re.IGNORECASE)
UUID = re.compile(r"^uuid:([^:\s]+)", re.IGNORECASE)
USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")
"""The ``user:password@`` part of a URL's authority (RFC 3986 3.2.1): never kept."""
REQUIRED: dict[str, tuple[str, ...]] = {
    "M-SEARCH": ("HOST", "MAN", "ST"),
    "NOTIFY": ("HOST", "NT", "NTS", "USN"),
    "response": ("ST", "USN"),
}
"""Headers UDA 2.0 (1.2, 1.3) requires in each kind of message."""

_FIELDS: dict[str, str] = {
    "HOST": "host",
    "ST": "st",
    "NT": "nt",
    "NTS": "nts",
    "USN": "usn",
    "SERVER": "server",
    "LOCATION": "location",
    "CACHE-CONTROL": "cache_control",
    "USER-AGENT": "user_agent",
    "MAN": "man",
    "AL": "al",
}
"""Header name (upper case) -> event field, for the string-valued headers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SsdpMessage(Event):
    """One SSDP message (``events/ssdp.parquet``)."""

    log: ClassVar[str] = "ssdp"

    kind: str
    method: str | None = None
    request_uri: str | None = None
    status_code: int | None = None
    reason: str | None = None
    version: str
    host: str | None = None
    st: str | None = None
    nt: str | None = None
    nts: str | None = None
    usn: str | None = None
    uuid: str | None = None
    server: str | None = None
    location: str | None = None
    location_credentials: bool = False
    cache_control: str | None = None
    max_age: int | None = None
    user_agent: str | None = None
    man: str | None = None
    mx: int | None = None
    al: str | None = None
    boot_id: int | None = None
    config_id: int | None = None
    headers: list[str]


def _start(data: bytes) -> tuple[bytes, re.Match[bytes] | None, re.Match[bytes] | None]:
    line = data.split(b"\n", 1)[0]
    return line, REQUEST_LINE.match(line), STATUS_LINE.match(line)


class SsdpDissector(Dissector):
    """SSDP (UPnP discovery) over UDP port 1900."""

    name = "ssdp"
    description = "SSDP/UPnP discovery: M-SEARCH, NOTIFY and search responses; SERVER, USN, LOCATION"
    transports = frozenset({Transport.UDP})
    ports = frozenset({SSDP_PORT})
    event_types = (SsdpMessage,)

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if transport != Transport.UDP:
            return Verdict.NO
        _line, request, status = _start(data)
        if request is not None:
            return Verdict.YES if request[1] in SSDP_METHODS else Verdict.NO
        if status is None:
            return Verdict.NO
        if SSDP_PORT in (sport, dport):
            return Verdict.YES
        head = data.upper()
        return Verdict.YES if b"\nST:" in head or b"\nUSN:" in head else Verdict.NO

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        line, request, status = _start(pdu)
        fields: dict[str, Any] = {}
        if request is not None:
            method = request[1].decode("ascii")
            kind = method
            fields.update(
                kind="request", method=method, request_uri=_text(request[2]), version=request[3].decode()
            )
            if method not in ("M-SEARCH", "NOTIFY"):
                ctx.weird("ssdp_unknown_method", method)
        elif status is not None:
            kind = "response"
            fields.update(
                kind="response",
                version=status[1].decode(),
                status_code=int(status[2]),
                reason=_text(status[3] or b""),
            )
        else:
            ctx.weird("ssdp_bad_start_line", repr(line[:80])[2:-1])
            return
        names = self._headers(pdu, fields, ctx)
        missing = [name for name in REQUIRED.get(kind, ()) if name not in names]
        if missing:
            ctx.weird("ssdp_missing_header", f"{kind} without {', '.join(missing)}")
        ctx.emit(SsdpMessage(**ctx.where(), headers=names, **fields))

    @staticmethod
    def _headers(pdu: bytes, fields: dict[str, Any], ctx: PduContext) -> list[str]:
        lines = pdu.split(b"\n")[1:]
        if lines and not lines[-1]:
            lines.pop()  # the data ends with a line end: no partial last line
        names: list[str] = []
        terminated = False
        for index, raw in enumerate(lines):
            line = raw.rstrip(b"\r")
            if not line:
                terminated = True
                break
            if index >= MAX_HEADERS:
                ctx.weird("ssdp_too_many_headers", f"more than {MAX_HEADERS} header lines")
                terminated = True
                break
            name_raw, colon, value_raw = line.partition(b":")
            name = name_raw.decode("ascii", "backslashreplace").strip().upper()
            if not colon or not HEADER_NAME.match(name):
                ctx.weird("ssdp_bad_header", repr(line[:80])[2:-1])
                continue
            names.append(name)
            value = _text(value_raw.strip())
            if name in _FIELDS:
                fields[_FIELDS[name]] = value
            elif name in ("MX", "BOOTID.UPNP.ORG", "CONFIGID.UPNP.ORG"):
                number = _integer(value)
                if number is None:
                    ctx.weird("ssdp_bad_value", f"{name}: {value[:40]!r} is not a number")
                key = {"MX": "mx", "BOOTID.UPNP.ORG": "boot_id", "CONFIGID.UPNP.ORG": "config_id"}[name]
                fields[key] = number
        if not terminated:
            ctx.weird("ssdp_unterminated_headers", "the header block does not end with an empty line")
        cache = fields.get("cache_control")
        if cache is not None:
            age = MAX_AGE.search(cache)
            if age is None:
                ctx.weird("ssdp_bad_value", f"CACHE-CONTROL: {cache[:40]!r} has no max-age")
            else:
                fields["max_age"] = int(age[1])
        location = fields.get("location")
        if location is not None and USERINFO.match(location):
            fields["location"] = USERINFO.sub(r"\1", location)
            fields["location_credentials"] = True
        usn = fields.get("usn")
        if usn is not None:
            uuid = UUID.match(usn)
            fields["uuid"] = uuid[1] if uuid else None
        return names


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")[:MAX_VALUE]


def _integer(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 10 else None
