"""Telnet dissector: option negotiation and login attempts.

What is dissected (RFC 854 Telnet protocol, RFC 855 option negotiation, IANA Telnet options):

- every **option negotiation** (IAC WILL / WONT / DO / DONT option) and **subnegotiation** (IAC SB
  option ... IAC SE), with the values of TERMINAL-TYPE (RFC 1091), NAWS window size (RFC 1073),
  TERMINAL-SPEED (RFC 1079) and X-DISPLAY-LOCATION (RFC 1096); IAC IAC is a data byte 0xFF;
- **login attempts** read from the text: a login prompt from the server (``login:``, ``Username:``,
  ...), the line the client then types is the user name; a ``Password:`` prompt, the line the client
  then types is a password sent in clear: ``cleartext_credentials`` is set, the password itself is
  never stored; the outcome is read from what the server says next (``Login incorrect`` / a new login
  prompt: failure; a shell prompt or ``Last login``: success). The server's text before its first
  prompt is kept as the banner (device identification);
- **default credentials**: when the password line ends, the user name / password pair is looked up
  once in the default credential lists (:mod:`fieldward.protocols.credentials`) and only the names of
  the lists holding it are kept (``default_credential``), whatever the outcome; the typed line is then
  dropped.

Telnet is a byte stream: ``frame`` hands over everything but an incomplete IAC sequence at the end.
Malformed input is reported as ``telnet_*`` weirds; the dissector never judges the traffic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, auto
from typing import ClassVar

from fieldward.protocols.base import Dissector, Event, FlowInfo, PduContext, Transport, Verdict
from fieldward.protocols.credentials import DefaultCredentials

IAC = 255
DONT, DO, WONT, WILL = 254, 253, 252, 251
SB, SE = 250, 240
NEGOTIATION = {WILL: "WILL", WONT: "WONT", DO: "DO", DONT: "DONT"}
MAX_SUBNEGOTIATION = 4096
MAX_TAIL = 512
"""Server text kept for prompt detection and the banner."""
MAX_LINE = 256
"""Longest client input line kept (a user name)."""
MAX_OPTION_EVENTS = 256
"""Negotiation events per flow (a negotiation loop is reported once, as a weird)."""
TELNET_PORT = 23

OPTION_NAMES: dict[int, str] = {
    0: "TRANSMIT-BINARY",
    1: "ECHO",
    2: "RECONNECTION",
    3: "SUPPRESS-GO-AHEAD",
    4: "APPROX-MESSAGE-SIZE",
    5: "STATUS",
    6: "TIMING-MARK",
    7: "RCTE",
    8: "OUTPUT-LINE-WIDTH",
    9: "OUTPUT-PAGE-SIZE",
    10: "NAOCRD",
    11: "NAOHTS",
    12: "NAOHTD",
    13: "NAOFFD",
    14: "NAOVTS",
    15: "NAOVTD",
    16: "NAOLFD",
    17: "EXTEND-ASCII",
    18: "LOGOUT",
    19: "BM",
    20: "DET",
    21: "SUPDUP",
    22: "SUPDUP-OUTPUT",
    23: "SEND-LOCATION",
    24: "TERMINAL-TYPE",
    25: "END-OF-RECORD",
    26: "TUID",
    27: "OUTMRK",
    28: "TTYLOC",
    29: "3270-REGIME",
    30: "X.3-PAD",
    31: "NAWS",
    32: "TERMINAL-SPEED",
    33: "TOGGLE-FLOW-CONTROL",
    34: "LINEMODE",
    35: "X-DISPLAY-LOCATION",
    36: "ENVIRON",
    37: "AUTHENTICATION",
    38: "ENCRYPT",
    39: "NEW-ENVIRON",
    40: "TN3270E",
    41: "XAUTH",
    42: "CHARSET",
    43: "RSP",
    44: "COM-PORT-OPTION",
    45: "SUPPRESS-LOCAL-ECHO",
    46: "START-TLS",
    47: "KERMIT",
    48: "SEND-URL",
    49: "FORWARD-X",
    138: "PRAGMA-LOGON",
    139: "SSPI-LOGON",
    140: "PRAGMA-HEARTBEAT",
    255: "EXOPL",
}
"""IANA Telnet option names."""

LOGIN_PROMPT = re.compile(rb"(?:login|username|user name|user id|userid|user)\s*:\s*\Z", re.IGNORECASE)
PASSWORD_PROMPT = re.compile(rb"(?:password|passcode|passwd)\s*:\s*\Z", re.IGNORECASE)
FAILURE = re.compile(
    rb"login incorrect|login failed|authentication failed|access denied|invalid (?:login|password|user)"
    rb"|incorrect password|bad password|% bad|permission denied",
    re.IGNORECASE,
)
SUCCESS = re.compile(rb"last login|welcome to|(?:^|\n)[^\n]{0,64}[$#>%] ?\Z", re.IGNORECASE)


class _Await(Enum):
    NOTHING = auto()
    USERNAME = auto()
    PASSWORD = auto()
    OUTCOME = auto()


@dataclass(frozen=True, slots=True, kw_only=True)
class TelnetOption(Event):
    """One option negotiation or subnegotiation: ``events/telnet_option.parquet``."""

    log: ClassVar[str] = "telnet_option"

    command: str
    option: int
    option_name: str
    value: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TelnetLogin(Event):
    """One login attempt: ``events/telnet_login.parquet``."""

    log: ClassVar[str] = "telnet_login"

    username: str | None
    cleartext_credentials: bool
    default_credential: str | None
    """Names of the default credential lists holding the typed user name / password pair (joined by
    commas); None when no list does or no pair was typed. The password itself is never kept."""
    success: bool | None
    banner: str | None


def option_name(code: int) -> str:
    return OPTION_NAMES.get(code, f"unknown-{code}")


def complete_length(data: bytes) -> int:
    """Length of ``data`` without an incomplete IAC sequence at its end (0: wait for more)."""
    end = len(data)
    i = data.rfind(bytes([IAC, SB]))
    if i >= 0 and data.find(bytes([IAC, SE]), i + 2) < 0 and not _escaped(data, i):
        if end - i < MAX_SUBNEGOTIATION:
            return i  # an unfinished subnegotiation: hand over the bytes before it
        return end
    tail = data[-2:]
    if len(tail) == 2 and tail[0] == IAC and tail[1] in NEGOTIATION and not _escaped(data, end - 2):
        return end - 2
    if tail[-1:] == b"\xff" and not _escaped(data, end - 1):
        return end - 1
    return end


def _escaped(data: bytes, i: int) -> bool:
    """Whether the IAC at ``i`` is the second byte of an IAC IAC pair (an odd run of IACs before it)."""
    run = 0
    while i - run - 1 >= 0 and data[i - run - 1] == IAC:
        run += 1
    return run % 2 == 1


@dataclass(slots=True)
class _Attempt:
    ts: int
    username: str | None
    banner: str | None
    user_line: bytes | None = None
    """The user name as typed (not cut), for the default credential lookup only."""
    cleartext_credentials: bool = False
    default_credential: str | None = None


class TelnetDissector(Dissector):
    """Telnet over TCP: options and login attempts."""

    name = "telnet"
    description = "Telnet: option negotiation, login prompts and attempts (passwords flagged, never stored)"
    transports = frozenset({Transport.TCP})
    ports = frozenset({TELNET_PORT, 2323})
    event_types = (TelnetOption, TelnetLogin)

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        self._client_is_orig = not (flow.orig_p in self.ports and flow.resp_p not in self.ports)
        self._tail = bytearray()
        self._banner: bytes | None = None
        self._line = bytearray()
        self._await = _Await.NOTHING
        self._attempt: _Attempt | None = None
        self._options = 0

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if not data:
            return Verdict.MAYBE
        if data[0] == IAC:
            if len(data) < 3:
                return (
                    Verdict.MAYBE if len(data) == 1 or data[1] in NEGOTIATION or data[1] == SB else Verdict.NO
                )
            return (
                Verdict.YES
                if (data[1] in NEGOTIATION or data[1] == SB) and data[2] in OPTION_NAMES
                else Verdict.NO
            )
        if TELNET_PORT in (sport, dport) or 2323 in (sport, dport):
            # Without negotiation, only on the Telnet port: readable text (a banner or a prompt).
            head = data[:64]
            printable = all(32 <= b < 127 or b in (9, 10, 13) for b in head)
            return Verdict.YES if printable and any(32 < b < 127 for b in head) else Verdict.NO
        return Verdict.NO

    def frame(self, data: bytes, is_orig: bool) -> int:
        return complete_length(data)

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        text = bytearray()
        i, n = 0, len(pdu)
        while i < n:
            byte = pdu[i]
            if byte != IAC:
                text.append(byte)
                i += 1
                continue
            if i + 1 >= n:
                ctx.weird("telnet_truncated_command", "IAC at the end of the data")
                break
            command = pdu[i + 1]
            if command == IAC:
                text.append(IAC)
                i += 2
            elif command in NEGOTIATION:
                if i + 2 >= n:
                    ctx.weird("telnet_truncated_command", f"IAC {NEGOTIATION[command]} without an option")
                    break
                self._option(NEGOTIATION[command], pdu[i + 2], None, ctx)
                i += 3
            elif command == SB:
                end = pdu.find(bytes([IAC, SE]), i + 2)
                if end < 0:
                    ctx.weird("telnet_unterminated_subnegotiation", f"{n - i} bytes without IAC SE")
                    break
                self._subnegotiation(pdu[i + 2 : end], ctx)
                i = end + 2
            else:
                i += 2  # NOP, DM, BRK, IP, AO, AYT, EC, EL, GA, SE: no data
        if text:
            if ctx.is_orig == self._client_is_orig:
                self._client_text(bytes(text), ctx)
            else:
                self._server_text(bytes(text), ctx)

    def close(self, ctx: PduContext) -> None:
        self._finish(None, ctx)

    # ------------------------------------------------------------------ options

    def _option(self, command: str, option: int, value: str | None, ctx: PduContext) -> None:
        self._options += 1
        if self._options > MAX_OPTION_EVENTS:
            if self._options == MAX_OPTION_EVENTS + 1:
                ctx.weird("telnet_too_many_options", f"more than {MAX_OPTION_EVENTS} negotiations")
            return
        ctx.emit(
            TelnetOption(
                **ctx.where(), command=command, option=option, option_name=option_name(option), value=value
            )
        )

    def _subnegotiation(self, body: bytes, ctx: PduContext) -> None:
        if not body:
            ctx.weird("telnet_empty_subnegotiation", "IAC SB IAC SE")
            return
        option, data = body[0], body[1:].replace(b"\xff\xff", b"\xff")
        value: str | None = None
        if option == 31:  # NAWS: width and height, 16 bits each
            if len(data) == 4:
                value = f"{int.from_bytes(data[:2], 'big')}x{int.from_bytes(data[2:], 'big')}"
            else:
                ctx.weird("telnet_bad_subnegotiation", f"NAWS of {len(data)} bytes")
        elif option in (24, 32, 35) and data[:1] == b"\x00":  # IS <text>
            value = data[1:MAX_LINE].decode("ascii", "backslashreplace")
        self._option("SB", option, value, ctx)

    # ------------------------------------------------------------------ login attempts

    def _server_text(self, text: bytes, ctx: PduContext) -> None:
        self._tail += text
        del self._tail[:-MAX_TAIL]
        tail = bytes(self._tail).rstrip(b"\x00")
        if self._await == _Await.OUTCOME and self._attempt is not None:
            if FAILURE.search(tail):
                self._finish(False, ctx)
            elif LOGIN_PROMPT.search(tail):
                self._finish(False, ctx)  # asked again: the attempt failed
            elif SUCCESS.search(tail):
                self._finish(True, ctx)
        prompt = PASSWORD_PROMPT.search(tail) or LOGIN_PROMPT.search(tail)
        if prompt and self._line:
            # An unfinished client line (its line end lost) answers no new prompt; typed at a
            # password prompt it is a secret, so it must never become the next user name.
            self._line.clear()
        if PASSWORD_PROMPT.search(tail):
            self._await = _Await.PASSWORD
            self._tail.clear()
        elif LOGIN_PROMPT.search(tail):
            if self._banner is None:
                lines = tail.splitlines()
                self._banner = b"\n".join(line.strip() for line in lines[:-1] if line.strip())[:MAX_TAIL]
            self._finish(None, ctx)
            self._await = _Await.USERNAME
            self._tail.clear()

    def _client_text(self, text: bytes, ctx: PduContext) -> None:
        for byte in text:
            if byte in (13, 10):
                if self._line or byte == 13:
                    self._client_line(bytes(self._line), ctx)
                self._line.clear()
            elif byte in (8, 127):
                if self._line:
                    self._line.pop()
            elif byte and len(self._line) < MAX_LINE:
                self._line.append(byte)

    def _client_line(self, line: bytes, ctx: PduContext) -> None:
        if self._await == _Await.USERNAME:
            self._finish(None, ctx)
            banner = self._banner.decode("utf-8", "backslashreplace") if self._banner else None
            self._attempt = _Attempt(ctx.ts, line.decode("utf-8", "backslashreplace")[:64], banner, line)
            self._await = _Await.OUTCOME
        elif self._await == _Await.PASSWORD:
            if self._attempt is None:  # a password prompt without a user name (e.g. a router's)
                banner = self._banner.decode("utf-8", "backslashreplace") if self._banner else None
                self._attempt = _Attempt(ctx.ts, None, banner)
            self._attempt.cleartext_credentials = True  # the typed line itself is never kept
            if self._attempt.user_line is not None:
                # One lookup per login, while the password is in memory: only list names survive it.
                self._attempt.default_credential = DefaultCredentials.load().label(
                    self._attempt.user_line, line
                )
            self._await = _Await.OUTCOME
            self._tail.clear()

    def _finish(self, success: bool | None, ctx: PduContext) -> None:
        attempt, self._attempt = self._attempt, None
        if attempt is None:
            return
        if success is not None:
            self._await = _Await.NOTHING
        where = ctx.where()
        where["ts"], where["is_orig"] = attempt.ts, self._client_is_orig
        ctx.emit(
            TelnetLogin(
                **where,
                username=attempt.username,
                cleartext_credentials=attempt.cleartext_credentials,
                default_credential=attempt.default_credential,
                success=success,
                banner=attempt.banner,
            )
        )
