"""RFB (VNC) dissector: the handshake of a Remote Framebuffer connection (RFC 6143 section 7.1-7.3).

What is dissected (TCP, well-known ports 5900-5903 and 5500 for reverse connections; recognised by
content on any port):

- the **ProtocolVersion** messages of both sides (7.1.1, ``RFB 003.008\\n``); the version in use is
  the client's (3.3, 3.7 or 3.8; other 3.x numbers behave as 3.3, RFC 6143 7.1.1; 4.x and Apple's
  3.889 as 3.8);
- the **security handshake** (7.1.2): the security types the server offers (3.7 and later) or the
  one it imposes (3.3), or its refusal with a reason; the client's choice; the VNC Authentication
  challenge and response (7.2.2, skipped: never stored); the **SecurityResult** (7.1.3) and its
  failure reason (3.8);
- **ClientInit** (7.3.1, shared flag) and **ServerInit** (7.3.2, framebuffer size and desktop name).

One ``rfb`` event per connection. After ServerInit, or after a security type that wraps the rest of
the connection (TLS, VeNCrypt, RA2, Tight, ...), the stream is not followed. RFB is a byte stream
whose message sizes depend on what the other side said, so ``frame`` hands over everything and
``parse`` keeps a bounded buffer per direction. Malformed input is reported as ``rfb_*`` weirds; the
dissector never judges the traffic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import ClassVar

from fieldward.protocols.base import Dissector, Event, FlowInfo, PduContext, Transport, Verdict

VERSION_LENGTH = 12
VERSION = re.compile(rb"RFB (\d{3})\.(\d{3})\n")
VERSION_PREFIX = b"RFB "
MAX_BUFFER = 64 * 1024
"""Bytes kept per direction while waiting for the other side (a handshake is far smaller)."""
MAX_REASON = 1024
"""Characters of a failure reason or desktop name kept."""
MAX_REASON_LENGTH = 65536
"""Longest reason or desktop name accepted on the wire."""
CHALLENGE_LENGTH = 16
SERVER_INIT_FIXED = 24
"""ServerInit: width, height, 16-byte PIXEL_FORMAT, name length (RFC 6143 7.3.2)."""

SECURITY_INVALID = 0
SECURITY_NONE = 1
SECURITY_VNC_AUTH = 2
SECURITY_TYPES: dict[int, str] = {
    0: "Invalid",
    1: "None",
    2: "VNC Authentication",
    5: "RA2",
    6: "RA2ne",
    16: "Tight",
    17: "Ultra",
    18: "TLS",
    19: "VeNCrypt",
    20: "GTK-VNC SASL",
    21: "MD5 hash authentication",
    22: "Colin Dean xvp",
    23: "Secure Tunnel",
    24: "Integrated SSH",
    30: "Apple Inc. (Diffie-Hellman)",
    35: "Apple Inc. (RSA-SRP)",
}
"""IANA "Remote Framebuffer Security Types" registry (RFC 6143 8.1.2)."""
RESULTS: dict[int, str] = {0: "ok", 1: "failed", 2: "too_many_attempts"}
"""SecurityResult status words: 0 OK, 1 failed (RFC 6143 7.1.3); 2 is sent by some 3.3 servers."""


def security_type_name(code: int) -> str:
    if code in SECURITY_TYPES:
        return SECURITY_TYPES[code]
    if 3 <= code <= 15 or 128 <= code <= 255:
        return f"RealVNC-{code}"
    return f"unknown-{code}"


class _Server(Enum):
    VERSION = auto()
    SECURITY = auto()
    TYPES_CHOSEN = auto()
    CHALLENGE = auto()
    RESULT = auto()
    SERVER_INIT = auto()
    DONE = auto()


class _Client(Enum):
    VERSION = auto()
    CHOICE = auto()
    RESPONSE = auto()
    CLIENT_INIT = auto()
    DONE = auto()


@dataclass(frozen=True, slots=True, kw_only=True)
class RfbHandshake(Event):
    """One connection's RFB handshake: ``events/rfb.parquet``."""

    log: ClassVar[str] = "rfb"

    server_version: str | None
    client_version: str | None
    security_types: list[int]
    security_type_names: list[str]
    security_type: int | None
    security_type_name: str | None
    server_chosen: bool
    no_auth: bool
    result: str | None
    result_code: int | None
    failure_reason: str | None
    shared: bool | None
    width: int | None
    height: int | None
    desktop_name: str | None


@dataclass(slots=True)
class _State:
    ts: int | None = None
    server_version: str | None = None
    client_version: str | None = None
    minor: int | None = None
    """Protocol behaviour in use: 3, 7 or 8 (3.3, 3.7, 3.8)."""
    types: list[int] = field(default_factory=list)
    chosen: int | None = None
    server_chosen: bool = False
    result_code: int | None = None
    failure_reason: str | None = None
    refused: bool = False
    shared: bool | None = None
    width: int | None = None
    height: int | None = None
    desktop_name: str | None = None


def behaviour(version: str) -> int:
    """The RFC 6143 behaviour (3, 7 or 8) of a version number ``MMM.mmm``."""
    major, minor = int(version[:3]), int(version[4:])
    if major > 3 or (major == 3 and minor >= 8):
        return 8
    return 7 if (major, minor) == (3, 7) else 3


def _text(raw: bytes) -> str:
    return raw[:MAX_REASON].decode("utf-8", "backslashreplace")


class RfbDissector(Dissector):
    """RFB / VNC over TCP: versions, security types, the client's choice, SecurityResult, ServerInit."""

    name = "rfb"
    description = "RFB (VNC): protocol versions, security types offered and chosen, result, desktop name"
    transports = frozenset({Transport.TCP})
    ports = frozenset({5900, 5901, 5902, 5903, 5500})
    event_types = (RfbHandshake,)

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        # The server is the responder, unless only the originator's port is a VNC server port.
        server_ports = self.ports - {5500}
        self._client_is_orig = not (flow.orig_p in server_ports and flow.resp_p not in server_ports)
        self._buffers = (bytearray(), bytearray())
        self._server = _Server.VERSION
        self._client = _Client.VERSION
        self._state = _State()
        self._reported = False
        self._opaque = False

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if transport != Transport.TCP or not data:
            return Verdict.NO if transport != Transport.TCP else Verdict.MAYBE
        if len(data) < VERSION_LENGTH:
            if not data.startswith(VERSION_PREFIX[: len(data)]):
                return Verdict.NO
            tail = data[len(VERSION_PREFIX) :]
            shape = b"000.000\n"[: len(tail)]
            ok = all((s == ord("0") and 48 <= c <= 57) or s == c for s, c in zip(shape, tail, strict=True))
            return Verdict.MAYBE if ok else Verdict.NO
        return Verdict.YES if VERSION.fullmatch(data[:VERSION_LENGTH]) else Verdict.NO

    def frame(self, data: bytes, is_orig: bool) -> int:
        return len(data)

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        if self._opaque:
            return
        server = ctx.is_orig != self._client_is_orig
        buffer = self._buffers[1 if server else 0]
        buffer += pdu
        if self._state.ts is None:
            self._state.ts = ctx.ts
        if len(buffer) > MAX_BUFFER:
            ctx.weird("rfb_too_much_data", f"{len(buffer)} bytes buffered during the handshake")
            self._stop(ctx)
            return
        progress = True
        while progress and not self._opaque:
            progress = self._step_server(ctx) or self._step_client(ctx)

    def close(self, ctx: PduContext) -> None:
        if self._state.server_version is not None or self._state.client_version is not None:
            self._report(ctx)

    # ------------------------------------------------------------------ server side

    def _step_server(self, ctx: PduContext) -> bool:
        buf, state = self._buffers[1], self._state
        phase = self._server
        if phase == _Server.VERSION:
            version = self._version(buf, ctx)
            if version is None:
                return False
            state.server_version = version
            self._server = _Server.SECURITY
            return True
        if phase == _Server.SECURITY:
            return self._security(buf, ctx)
        if phase == _Server.TYPES_CHOSEN:
            if state.chosen is None:
                return False
            return self._after_choice(ctx)
        if phase == _Server.CHALLENGE:
            if len(buf) < CHALLENGE_LENGTH:
                return False
            del buf[:CHALLENGE_LENGTH]  # the challenge is never kept
            self._server = _Server.RESULT
            return True
        if phase == _Server.RESULT:
            return self._result(buf, ctx)
        if phase == _Server.SERVER_INIT:
            return self._server_init(buf, ctx)
        return False

    def _version(self, buf: bytearray, ctx: PduContext) -> str | None:
        if len(buf) < VERSION_LENGTH:
            return None
        match = VERSION.fullmatch(bytes(buf[:VERSION_LENGTH]))
        if match is None:
            ctx.weird("rfb_bad_version", repr(bytes(buf[:VERSION_LENGTH])))
            self._stop(ctx)
            return None
        del buf[:VERSION_LENGTH]
        return f"{match.group(1).decode()}.{match.group(2).decode()}"

    def _security(self, buf: bytearray, ctx: PduContext) -> bool:
        state = self._state
        if state.minor is None:
            return False  # the client's version decides the format
        if state.minor == 3:
            if len(buf) < 4:
                return False
            code = int.from_bytes(buf[:4], "big")
            if code == SECURITY_INVALID:
                return self._refusal(buf, 4, ctx)
            del buf[:4]
            state.types, state.chosen, state.server_chosen = [code], code, True
            if code > 255:
                ctx.weird("rfb_bad_security_type", f"3.3 security type {code}")
                self._stop(ctx)
                return True
            return self._after_choice(ctx)
        if not buf:
            return False
        count = buf[0]
        if count == 0:
            return self._refusal(buf, 1, ctx)
        if len(buf) < 1 + count:
            return False
        state.types = list(buf[1 : 1 + count])
        del buf[: 1 + count]
        self._server = _Server.TYPES_CHOSEN
        return True

    def _refusal(self, buf: bytearray, skip: int, ctx: PduContext) -> bool:
        """The server refused the connection: a reason string follows (RFC 6143 7.1.2)."""
        reason = self._string(buf, skip, ctx)
        if reason is None:
            return False
        self._state.failure_reason = reason
        self._state.refused = True
        self._report(ctx)
        self._stop(ctx)
        return True

    def _string(self, buf: bytearray, skip: int, ctx: PduContext) -> str | None:
        """A U32 length and that many bytes after ``skip`` bytes; consumed when complete."""
        if len(buf) < skip + 4:
            return None
        length = int.from_bytes(buf[skip : skip + 4], "big")
        if length > MAX_REASON_LENGTH:
            ctx.weird("rfb_bad_string_length", f"string of {length} bytes")
            self._stop(ctx)
            return None
        if len(buf) < skip + 4 + length:
            return None
        text = _text(bytes(buf[skip + 4 : skip + 4 + length]))
        del buf[: skip + 4 + length]
        return text

    def _after_choice(self, ctx: PduContext) -> bool:
        state = self._state
        chosen = state.chosen
        if chosen == SECURITY_VNC_AUTH:
            self._server = _Server.CHALLENGE
        elif chosen == SECURITY_NONE:
            # SecurityResult follows None only in 3.8 (RFC 6143 7.1.2, 7.1.3).
            self._server = _Server.RESULT if state.minor == 8 else _Server.SERVER_INIT
        else:
            # TLS, VeNCrypt, RA2, Tight ...: the rest is a sub-protocol (often encrypted).
            self._report(ctx)
            self._stop(ctx)
        return True

    def _result(self, buf: bytearray, ctx: PduContext) -> bool:
        state = self._state
        if len(buf) < 4:
            return False
        code = int.from_bytes(buf[:4], "big")
        if code != 0 and state.minor == 8:
            reason = self._string(buf, 4, ctx)
            if reason is None:
                return False
            state.result_code, state.failure_reason = code, reason
        else:
            del buf[:4]
            state.result_code = code
        if code != 0:
            if code not in RESULTS:
                ctx.weird("rfb_bad_security_result", f"SecurityResult {code}")
            self._report(ctx)
            self._stop(ctx)
            return True
        self._server = _Server.SERVER_INIT
        return True

    def _server_init(self, buf: bytearray, ctx: PduContext) -> bool:
        state = self._state
        if len(buf) < SERVER_INIT_FIXED:
            return False
        width, height = int.from_bytes(buf[0:2], "big"), int.from_bytes(buf[2:4], "big")
        name = self._string(buf, SERVER_INIT_FIXED - 4, ctx)  # consumes the whole ServerInit
        if name is None:
            return False
        state.width, state.height, state.desktop_name = width, height, name
        self._server = _Server.DONE
        self._report(ctx)
        self._stop(ctx)
        return True

    # ------------------------------------------------------------------ client side

    def _step_client(self, ctx: PduContext) -> bool:
        buf, state = self._buffers[0], self._state
        phase = self._client
        if phase == _Client.VERSION:
            version = self._version(buf, ctx)
            if version is None:
                return False
            state.client_version = version
            state.minor = behaviour(version)
            self._client = _Client.CHOICE if state.minor >= 7 else _Client.RESPONSE
            return True
        if phase == _Client.CHOICE:
            if not buf:
                return False
            state.chosen = buf[0]
            del buf[:1]
            if state.types and state.chosen not in state.types:
                ctx.weird(
                    "rfb_unoffered_security_type", f"client chose {state.chosen}, offered {state.types}"
                )
            self._client = _Client.RESPONSE
            return True
        if phase == _Client.RESPONSE:
            if state.chosen is None:
                return False  # 3.3: wait for the server's security type
            if state.chosen == SECURITY_VNC_AUTH:
                if len(buf) < CHALLENGE_LENGTH:
                    return False
                del buf[:CHALLENGE_LENGTH]  # the DES response is never kept
            self._client = _Client.CLIENT_INIT
            return True
        if phase == _Client.CLIENT_INIT:
            if not buf:
                return False
            state.shared = buf[0] != 0
            del buf[:1]
            self._client = _Client.DONE
            return True
        return False

    # ------------------------------------------------------------------ end

    def _stop(self, ctx: PduContext) -> None:
        self._opaque = True
        for buf in self._buffers:
            buf.clear()

    def _report(self, ctx: PduContext) -> None:
        if self._reported:
            return
        self._reported = True
        state = self._state
        where = ctx.where()
        where["ts"] = state.ts if state.ts is not None else ctx.ts
        where["is_orig"] = self._client_is_orig
        code = state.result_code
        ctx.emit(
            RfbHandshake(
                **where,
                server_version=state.server_version,
                client_version=state.client_version,
                security_types=list(state.types),
                security_type_names=[security_type_name(t) for t in state.types],
                security_type=state.chosen,
                security_type_name=security_type_name(state.chosen) if state.chosen is not None else None,
                server_chosen=state.server_chosen,
                no_auth=state.chosen == SECURITY_NONE,
                result=(
                    "refused"
                    if state.refused
                    else RESULTS.get(code, f"unknown-{code}")
                    if code is not None
                    else None
                ),
                result_code=code,
                failure_reason=state.failure_reason,
                shared=state.shared,
                width=state.width,
                height=state.height,
                desktop_name=state.desktop_name,
            )
        )
