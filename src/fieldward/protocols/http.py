"""HTTP/1.x dissector: every request/response pair of an HTTP/1.0 or HTTP/1.1 connection becomes one
``http`` event (as a row of Zeek's ``http.log``).

What is dissected (RFC 9110 HTTP semantics, RFC 9112 HTTP/1.1 message syntax):

- the request line (method, request target, version) and the status line (version, status code,
  reason phrase), found by content on any port;
- the header fields the event reports (Host, User-Agent, Referer, Server, Content-Type, Content-Length,
  Transfer-Encoding, Content-Encoding, Authorization: its scheme only, never the credentials);
- HTTP Basic credentials (RFC 7617): the ``user-id:password`` pair is decoded in memory, looked up
  once per request in the default credential lists (:mod:`fieldward.protocols.credentials`) and
  dropped; only the names of the lists holding it are kept (``default_credential``). Whether the
  server accepted it is the response's ``status_code`` (401: refused);
- the message body length (RFC 9112 6.3): Content-Length, the chunked transfer coding (7.1, with chunk
  extensions and trailer fields), no body for responses to HEAD, for 1xx, 204 and 304, and a response
  body delimited by the end of the connection otherwise. Bodies are counted, never buffered, so
  pipelined and keep-alive messages are split exactly and large downloads cost no memory;
- the MD5, SHA-1 and SHA-256 of every complete body (as transferred: after the chunked coding, before
  any content coding), hashed in stream, so file-hash threat intelligence can match downloads and
  uploads (firmware, malware droppers). A body cut short by the end of the connection has none; a
  capture gap inside a body gives a hash of what was seen, which matches nothing;
- request/response matching in order (pipelining), interim 1xx responses, and the end of HTTP/1 on a
  connection: ``101 Switching Protocols``, a successful CONNECT (a tunnel) and the HTTP/2 preface.

The parser is a bounded one written for passive two-direction parsing: a library parser (llhttp via
httptools, or h11) parses one side of a connection it takes part in; neither can be told which
request a response answers (HEAD) nor cut bytes into the engine's PDUs. Malformed input is reported as
``http_*`` weirds and the connection keeps being analysed.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections import deque
from dataclasses import dataclass
from enum import Enum, auto
from typing import ClassVar

from fieldward.protocols.base import Dissector, Event, FlowInfo, PduContext, Transport, Verdict
from fieldward.protocols.credentials import DefaultCredentials

MAX_HEADER = 64 * 1024
"""Largest header block (start line + fields) accepted; RFC 9112 sets no limit, servers use 8-64 KiB."""
MAX_HEADER_FIELDS = 256
MAX_LINE = 1024
"""Longest chunk-size line (with its extensions)."""
MAX_PENDING = 256
"""Transactions waiting for their response, per connection; the oldest is reported first beyond it."""
MAX_VALUE = 2048
"""Longest header value or URI kept in an event (longer ones are cut)."""
MAX_CHUNK_SIZE = 1 << 62

RECOGNISED_METHODS = frozenset(
    {
        b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"CONNECT", b"PATCH",
        b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"SEARCH",
        b"REPORT", b"MKCALENDAR", b"ACL", b"BIND", b"UNBIND", b"REBIND", b"MERGE", b"CHECKOUT",
        b"CHECKIN", b"UNCHECKOUT", b"VERSION-CONTROL", b"MKWORKSPACE", b"MKACTIVITY", b"LABEL",
        b"UPDATE", b"ORDERPATCH", b"BASELINE-CONTROL", b"LINK", b"UNLINK", b"PURGE",
    }
)  # fmt: skip
"""Methods accepted by the recogniser (IANA HTTP Method Registry, plus PURGE): ``frame`` takes any token."""

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") +(\S+) +HTTP/(\d)\.(\d) *")
STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) +(\d{3})(?: (.*))?")
STATUS_START = re.compile(rb"HTTP/\d\.\d +\d{3}")
REQUEST_PREFIX = re.compile(rb"[A-Z][A-Z\-_]{0,19}( |\Z)")
"""What a request may start with, checked by ``frame`` before the header block is complete."""
END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")
CHUNK_SIZE = re.compile(rb"\s*([0-9A-Fa-f]+)\s*(?:;.*)?")


class _Mode(Enum):
    HEADERS = auto()
    BODY = auto()
    CHUNK_SIZE = auto()
    CHUNK_DATA = auto()
    CHUNK_END = auto()
    TRAILERS = auto()
    UNTIL_CLOSE = auto()
    OPAQUE = auto()


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpEvent(Event):
    """One request and its response (``events/http.parquet``, as a row of Zeek's ``http.log``)."""

    log: ClassVar[str] = "http"

    trans_depth: int
    method: str | None
    host: str | None
    uri: str | None
    version: str | None
    user_agent: str | None
    referrer: str | None
    request_content_type: str | None
    request_content_length: int | None
    request_body_len: int
    authorization_scheme: str | None
    cleartext_credentials: bool
    default_credential: str | None
    """With Basic authentication: names of the default credential lists holding the user-id / password
    pair (joined by commas); None otherwise. The credentials themselves are never kept."""
    response_version: str | None
    status_code: int | None
    status_msg: str | None
    info_code: int | None
    info_msg: str | None
    server: str | None
    response_content_type: str | None
    response_content_length: int | None
    response_transfer_encoding: str | None
    response_content_encoding: str | None
    response_body_len: int
    request_body_md5: str | None = None
    request_body_sha1: str | None = None
    request_body_sha256: str | None = None
    response_body_md5: str | None = None
    response_body_sha1: str | None = None
    response_body_sha256: str | None = None


class _BodyHash:
    """MD5, SHA-1 and SHA-256 of one message body as transferred (after the chunked coding, before
    any content coding), as file-hash threat intelligence lists them. Hashed in stream, never kept."""

    __slots__ = ("md5", "sha1", "sha256")

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha1 = hashlib.sha1(usedforsecurity=False)
        self.sha256 = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self.md5.update(data)
        self.sha1.update(data)
        self.sha256.update(data)

    def hex(self) -> tuple[str, str, str]:
        return self.md5.hexdigest(), self.sha1.hexdigest(), self.sha256.hexdigest()


@dataclass(slots=True)
class _Txn:
    depth: int
    ts: int
    is_orig: bool
    method: str | None = None
    host: str | None = None
    uri: str | None = None
    version: str | None = None
    user_agent: str | None = None
    referrer: str | None = None
    request_content_type: str | None = None
    request_content_length: int | None = None
    request_body_len: int = 0
    authorization_scheme: str | None = None
    default_credential: str | None = None
    request_done: bool = False
    has_response: bool = False
    response_version: str | None = None
    status_code: int | None = None
    status_msg: str | None = None
    info_code: int | None = None
    info_msg: str | None = None
    server: str | None = None
    response_content_type: str | None = None
    response_content_length: int | None = None
    response_transfer_encoding: str | None = None
    response_content_encoding: str | None = None
    response_body_len: int = 0
    response_done: bool = False
    request_hash: _BodyHash | None = None
    response_hash: _BodyHash | None = None
    request_complete: bool = False
    response_complete: bool = False
    """The body was read to its end: a body cut by the end of the connection has no hash."""


def _text(raw: bytes) -> str:
    """Header bytes as text: UTF-8 when valid, else ISO-8859-1 (RFC 9110 5.5), cut to MAX_VALUE."""
    raw = raw[:MAX_VALUE]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _header_end(data: bytes) -> int:
    """Offset just after the blank line ending the header block at the start of ``data``, or 0."""
    match = END_OF_HEADERS.search(data, 0, MAX_HEADER + 4)
    return match.end() if match else 0


class HttpDissector(Dissector):
    """HTTP/1.0 and HTTP/1.1 over TCP, on any port."""

    name = "http"
    description = "HTTP/1.x: requests, responses, headers, body sizes, authorization scheme"
    transports = frozenset({Transport.TCP})
    ports = frozenset({80, 81, 591, 3128, 8000, 8008, 8080, 8081, 8088, 8888})
    event_types = (HttpEvent,)

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        self._mode = [_Mode.HEADERS, _Mode.HEADERS]
        self._remaining = [0, 0]
        self._current: list[_Txn | None] = [None, None]
        """The transaction whose message each direction is sending (for its body)."""
        self._current_request = [True, True]
        self._txns: deque[_Txn] = deque()
        self._depth = 0

    # ------------------------------------------------------------------ recognition and framing

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        line_end = data.find(b"\n", 0, MAX_LINE * 8)
        line = data[:line_end].rstrip(b"\r") if line_end >= 0 else b""
        if line_end < 0 and len(data) >= MAX_LINE * 8:
            return Verdict.NO
        if b"HTTP/".startswith(data[:5]):  # a status line (or too short to tell)
            if line_end >= 0:
                match = STATUS_LINE.fullmatch(line)
                return Verdict.YES if match and match.group(1) == b"1" else Verdict.NO
            return Verdict.MAYBE if len(data) < 12 or STATUS_START.match(data) else Verdict.NO
        space = data.find(b" ", 0, 24)
        if space < 0:
            partial = len(data) < 24 and any(m.startswith(data) for m in RECOGNISED_METHODS)
            return Verdict.MAYBE if partial else Verdict.NO
        if data[:space] not in RECOGNISED_METHODS:
            return Verdict.NO
        if line_end < 0:
            return Verdict.MAYBE
        match = REQUEST_LINE.fullmatch(line)
        return Verdict.YES if match and match.group(3) == b"1" else Verdict.NO

    def frame(self, data: bytes, is_orig: bool) -> int:
        d = 0 if is_orig else 1
        mode = self._mode[d]
        if mode in (_Mode.BODY, _Mode.CHUNK_DATA):
            return min(len(data), self._remaining[d])
        if mode in (_Mode.UNTIL_CLOSE, _Mode.OPAQUE):
            return len(data)
        if mode in (_Mode.CHUNK_SIZE, _Mode.CHUNK_END):
            end = data.find(b"\n", 0, MAX_LINE)
            if end >= 0:
                return end + 1
            return -1 if len(data) >= MAX_LINE else 0
        if mode == _Mode.TRAILERS and (data.startswith(b"\r\n") or data.startswith(b"\n")):
            return 2 if data[0] == 13 else 1
        if mode == _Mode.HEADERS:
            blank = len(data) - len(data.lstrip(b"\r\n"))
            if blank:
                return blank  # empty lines between messages (RFC 9112 2.2): parse ignores them
            if not (data.startswith(b"HTTP/"[: len(data)]) or REQUEST_PREFIX.match(data[:21])):
                return -1
        end = _header_end(data)
        if end:
            return end
        return -1 if len(data) > MAX_HEADER else 0

    # ------------------------------------------------------------------ parsing

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        d = 0 if ctx.is_orig else 1
        mode = self._mode[d]
        if mode == _Mode.HEADERS:
            if pdu.strip(b"\r\n"):
                self._headers(d, pdu, ctx)
        elif mode in (_Mode.BODY, _Mode.CHUNK_DATA):
            size = min(len(pdu), self._remaining[d])
            self._count_body(d, size, pdu[:size])
            self._remaining[d] -= size
            if self._remaining[d] == 0:
                if mode == _Mode.BODY:
                    self._message_done(d, ctx)
                else:
                    self._mode[d] = _Mode.CHUNK_END
        elif mode == _Mode.UNTIL_CLOSE:
            self._count_body(d, len(pdu), pdu)
        elif mode == _Mode.CHUNK_SIZE:
            self._chunk_size(d, pdu, ctx)
        elif mode == _Mode.CHUNK_END:
            if pdu.rstrip(b"\r\n"):
                ctx.weird("http_bad_chunk_terminator", f"{len(pdu)} bytes where a chunk's CRLF belongs")
            self._mode[d] = _Mode.CHUNK_SIZE
        elif mode == _Mode.TRAILERS:
            self._message_done(d, ctx)

    def close(self, ctx: PduContext) -> None:
        for d in (0, 1):
            txn = self._current[d]
            if txn is None:
                continue
            if self._mode[d] == _Mode.UNTIL_CLOSE:
                txn.response_done = True
                txn.response_complete = True
            elif self._mode[d] in (_Mode.BODY, _Mode.CHUNK_SIZE, _Mode.CHUNK_DATA, _Mode.CHUNK_END):
                ctx.is_orig = d == 0
                ctx.weird("http_truncated_body", "the connection ended inside a message body")
        while self._txns:
            self._emit(self._txns.popleft(), ctx)

    # ------------------------------------------------------------------ messages

    def _headers(self, d: int, block: bytes, ctx: PduContext) -> None:
        lines = block.split(b"\n")
        start = lines[0].rstrip(b"\r")
        fields: dict[bytes, list[bytes]] = {}
        bad = 0
        last: bytes | None = None
        for raw in lines[1 : MAX_HEADER_FIELDS + 1]:
            line = raw.rstrip(b"\r")
            if not line:
                continue
            if line[:1] in (b" ", b"\t") and last is not None:  # obsolete line folding
                fields[last][-1] += b" " + line.strip()
                continue
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                bad += 1
                continue
            last = name.lower()
            fields.setdefault(last, []).append(value.strip())
        if len(lines) > MAX_HEADER_FIELDS + 2:
            ctx.weird("http_too_many_headers", f"{len(lines) - 2} header lines, {MAX_HEADER_FIELDS} read")
        if bad:
            ctx.weird("http_bad_header", f"{bad} header lines without a field name and colon")
        request = REQUEST_LINE.fullmatch(start)
        if request:
            self._request(d, request, fields, ctx)
            return
        status = STATUS_LINE.fullmatch(start)
        if status:
            self._response(d, status, fields, ctx)
            return
        ctx.weird("http_bad_start_line", repr(start[:80]))

    def _request(
        self, d: int, line: re.Match[bytes], fields: dict[bytes, list[bytes]], ctx: PduContext
    ) -> None:
        method = _text(line.group(1))
        self._depth += 1
        txn = _Txn(depth=self._depth, ts=ctx.ts, is_orig=ctx.is_orig, method=method)
        txn.uri = _text(line.group(2))
        txn.version = f"{line.group(3).decode()}.{line.group(4).decode()}"
        txn.host = _first(fields, b"host")
        txn.user_agent = _first(fields, b"user-agent")
        txn.referrer = _first(fields, b"referer")
        txn.request_content_type = _first(fields, b"content-type")
        authorization = _first(fields, b"authorization")
        if authorization is not None:
            txn.authorization_scheme = authorization.split(" ", 1)[0][:64] or None
            scheme, _, token = fields[b"authorization"][0].partition(b" ")
            if scheme.lower() == b"basic":
                txn.default_credential = _basic_default_credential(token.strip(), ctx)
        if len(self._txns) >= MAX_PENDING:
            ctx.weird("http_too_many_pending", f"more than {MAX_PENDING} requests without a response")
            self._emit(self._txns.popleft(), ctx)
        self._txns.append(txn)
        self._current[d], self._current_request[d] = txn, True
        if method == "PRI" and txn.uri == "*" and txn.version == "2.0":
            self._mode = [_Mode.OPAQUE, _Mode.OPAQUE]  # the HTTP/2 connection preface
            txn.request_done = True
            return
        chunked, length = _body_framing(fields, ctx)
        txn.request_content_length = length
        if chunked:
            self._mode[d] = _Mode.CHUNK_SIZE
        elif length:
            self._mode[d], self._remaining[d] = _Mode.BODY, length
        else:
            self._message_done(d, ctx)

    def _response(
        self, d: int, line: re.Match[bytes], fields: dict[bytes, list[bytes]], ctx: PduContext
    ) -> None:
        code = int(line.group(3))
        reason = _text(line.group(4)) if line.group(4) is not None else ""
        txn = next((t for t in self._txns if not t.has_response), None)
        if code < 200 and code != 101:
            if txn is not None:
                txn.info_code, txn.info_msg = code, reason
            self._mode[d] = _Mode.HEADERS
            return
        if txn is None:  # a response to a request we did not see (capture started late)
            self._depth += 1
            txn = _Txn(depth=self._depth, ts=ctx.ts, is_orig=not ctx.is_orig, request_done=True)
            self._txns.append(txn)
        txn.has_response = True
        txn.response_version = f"{line.group(1).decode()}.{line.group(2).decode()}"
        txn.status_code, txn.status_msg = code, reason
        txn.server = _first(fields, b"server")
        txn.response_content_type = _first(fields, b"content-type")
        txn.response_transfer_encoding = _first(fields, b"transfer-encoding")
        txn.response_content_encoding = _first(fields, b"content-encoding")
        self._current[d], self._current_request[d] = txn, False
        chunked, length = _body_framing(fields, ctx)
        txn.response_content_length = length
        if code == 101 or (txn.method == "CONNECT" and 200 <= code < 300):
            self._message_done(d, ctx)
            self._mode = [_Mode.OPAQUE, _Mode.OPAQUE]  # the connection is no longer HTTP/1
            return
        if txn.method == "HEAD" or code in (204, 304):
            self._message_done(d, ctx)
        elif chunked:
            self._mode[d] = _Mode.CHUNK_SIZE
        elif length is not None:
            if length:
                self._mode[d], self._remaining[d] = _Mode.BODY, length
            else:
                self._message_done(d, ctx)
        else:
            self._mode[d] = _Mode.UNTIL_CLOSE

    def _chunk_size(self, d: int, line: bytes, ctx: PduContext) -> None:
        match = CHUNK_SIZE.fullmatch(line.rstrip(b"\r\n"))
        if match is None or len(match.group(1)) > 15:
            ctx.weird("http_bad_chunk_size", repr(line[:40]))
            self._message_done(d, ctx)  # resynchronise on the next message
            return
        size = int(match.group(1), 16)
        if size == 0:
            self._mode[d] = _Mode.TRAILERS
        else:
            self._mode[d], self._remaining[d] = _Mode.CHUNK_DATA, size

    def _count_body(self, d: int, size: int, data: bytes) -> None:
        txn = self._current[d]
        if txn is None:
            return
        if self._current_request[d]:
            txn.request_body_len += size
            if txn.request_hash is None:
                txn.request_hash = _BodyHash()
            txn.request_hash.update(data)
        else:
            txn.response_body_len += size
            if txn.response_hash is None:
                txn.response_hash = _BodyHash()
            txn.response_hash.update(data)

    def _message_done(self, d: int, ctx: PduContext) -> None:
        txn = self._current[d]
        self._mode[d], self._remaining[d] = _Mode.HEADERS, 0
        if txn is None:
            return
        if self._current_request[d]:
            txn.request_done = True
            txn.request_complete = True
        else:
            txn.response_done = True
            txn.response_complete = True
        self._current[d] = None
        while self._txns and self._txns[0].request_done and self._txns[0].response_done:
            self._emit(self._txns.popleft(), ctx)

    def _emit(self, txn: _Txn, ctx: PduContext) -> None:
        request = txn.request_hash.hex() if txn.request_hash and txn.request_complete else (None,) * 3
        response = txn.response_hash.hex() if txn.response_hash and txn.response_complete else (None,) * 3
        where = ctx.where()
        where["ts"], where["is_orig"] = txn.ts, txn.is_orig
        ctx.emit(
            HttpEvent(
                **where,
                trans_depth=txn.depth,
                method=txn.method,
                host=txn.host,
                uri=txn.uri,
                version=txn.version,
                user_agent=txn.user_agent,
                referrer=txn.referrer,
                request_content_type=txn.request_content_type,
                request_content_length=txn.request_content_length,
                request_body_len=txn.request_body_len,
                authorization_scheme=txn.authorization_scheme,
                cleartext_credentials=(txn.authorization_scheme or "").lower() == "basic",
                default_credential=txn.default_credential,
                response_version=txn.response_version,
                status_code=txn.status_code,
                status_msg=txn.status_msg,
                info_code=txn.info_code,
                info_msg=txn.info_msg,
                server=txn.server,
                response_content_type=txn.response_content_type,
                response_content_length=txn.response_content_length,
                response_transfer_encoding=txn.response_transfer_encoding,
                response_content_encoding=txn.response_content_encoding,
                response_body_len=txn.response_body_len,
                request_body_md5=request[0],
                request_body_sha1=request[1],
                request_body_sha256=request[2],
                response_body_md5=response[0],
                response_body_sha1=response[1],
                response_body_sha256=response[2],
            )
        )


def _basic_default_credential(token: bytes, ctx: PduContext) -> str | None:
    """The default credential lists holding the pair of a Basic ``token68`` (RFC 7617 2: base64 of
    ``user-id:password``). The decoded pair lives only in this call; a weird never quotes the token."""
    try:
        decoded = binascii.a2b_base64(token, strict_mode=True)
    except (binascii.Error, ValueError):
        ctx.weird(
            "http_bad_basic_credentials", f"{len(token)} bytes of Basic credentials that are not base64"
        )
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        ctx.weird("http_bad_basic_credentials", "Basic credentials without the ':' between user and password")
        return None
    return DefaultCredentials.load().label(user, password)


def _first(fields: dict[bytes, list[bytes]], name: bytes) -> str | None:
    values = fields.get(name)
    return _text(values[0]) if values else None


def _body_framing(fields: dict[bytes, list[bytes]], ctx: PduContext) -> tuple[bool, int | None]:
    """(chunked?, Content-Length) of a message (RFC 9112 6.3: chunked wins over Content-Length)."""
    codings = b",".join(fields.get(b"transfer-encoding", [])).lower()
    chunked = codings.rsplit(b",", 1)[-1].strip() == b"chunked"
    lengths = {v.strip() for value in fields.get(b"content-length", []) for v in value.split(b",")}
    if not lengths:
        return chunked, None
    if len(lengths) > 1:
        ctx.weird("http_conflicting_content_length", b", ".join(sorted(lengths)).decode("latin-1")[:80])
        return chunked, None
    (text,) = lengths
    if not text.isdigit() or len(text) > 18:
        ctx.weird("http_bad_content_length", repr(text[:40]))
        return chunked, None
    if chunked:
        ctx.weird("http_content_length_with_chunked", "Transfer-Encoding chunked and Content-Length")
    return chunked, int(text)
