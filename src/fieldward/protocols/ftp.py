"""FTP control-connection dissector: every command with its reply becomes one ``ftp`` event.

What is dissected (RFC 959 File Transfer Protocol, RFC 2428 extensions for IPv6 and NATs, RFC 4217
FTP over TLS):

- commands (``VERB [argument]``) and replies (3-digit code, single-line or multi-line ``ddd-`` ...
  ``ddd `` replies, RFC 959 4.2), paired in order; preliminary 1yz replies do not complete a command;
- the login: the ``USER`` name, the fact that a ``PASS`` was sent in clear (``cleartext_credentials``;
  the password itself is never stored, nor an ``ACCT`` argument), and its outcome (230 success,
  530/430 failure); the ``PASS`` is looked up once, with the ``USER`` name, in the default credential
  lists (:mod:`fieldward.protocols.credentials`) and only the names of the lists holding the pair are
  kept (``default_credential``, on the ``PASS`` event whose reply tells the outcome);
- file names of ``RETR``, ``STOR``, ``STOU``, ``APPE``; the data channel announced by ``PORT`` /
  ``EPRT`` (active) or by the ``227`` / ``229`` replies to ``PASV`` / ``EPSV`` (passive);
- ``AUTH TLS`` / ``AUTH SSL`` accepted with 234: the rest of the connection is TLS and is not read.

Malformed input is reported as ``ftp_*`` weirds; the dissector never judges the traffic (cleartext
credentials are a fact the detection layer may act on).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

from fieldward.protocols.base import Dissector, Event, FlowInfo, PduContext, Transport, Verdict
from fieldward.protocols.credentials import DefaultCredentials

MAX_LINE = 4096
"""Longest command or reply line accepted."""
MAX_PENDING = 64
MAX_REPLY_LINES = 256
MAX_TEXT = 1024
FTP_PORT = 21
SECRET_COMMANDS = frozenset({"PASS", "ACCT"})
"""Commands whose argument is a secret: never stored."""
FILE_COMMANDS = frozenset({"RETR", "STOR", "STOU", "APPE"})
COMMAND = re.compile(rb"([A-Za-z]{3,4})(?: (.*))?")
REPLY = re.compile(rb"([1-5]\d\d)([ -])(.*)")
PASV_REPLY = re.compile(rb"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
EPSV_REPLY = re.compile(rb"\((.)\1\1(\d{1,5})\1\)")
LOGIN_OK = 230
LOGIN_FAILED = frozenset({430, 530})


@dataclass(frozen=True, slots=True, kw_only=True)
class FtpEvent(Event):
    """One command and its final reply, or an unsolicited reply (``events/ftp.parquet``)."""

    log: ClassVar[str] = "ftp"

    command: str | None
    arg: str | None
    user: str | None
    cleartext_credentials: bool
    default_credential: str | None
    """On a ``PASS``: names of the default credential lists holding the ``USER`` name / password pair
    (joined by commas); None otherwise. The password itself is never kept."""
    reply_code: int | None
    reply_msg: str | None
    login_success: bool | None
    file_name: str | None
    data_h: str | None
    data_p: int | None
    data_passive: bool | None


@dataclass(slots=True)
class _Command:
    ts: int
    is_orig: bool
    command: str
    arg: str | None
    user: str | None
    cleartext_credentials: bool
    default_credential: str | None = None
    file_name: str | None = None
    data_h: str | None = None
    data_p: int | None = None
    data_passive: bool | None = None


def _text(raw: bytes) -> str:
    return raw[:MAX_TEXT].decode("utf-8", "backslashreplace")


def _host_port(parts: list[int]) -> tuple[str, int] | None:
    """h1,h2,h3,h4,p1,p2 of PORT and of the 227 reply (RFC 959 4.1.2)."""
    if any(p > 255 for p in parts):
        return None
    return ".".join(str(p) for p in parts[:4]), parts[4] * 256 + parts[5]


class FtpDissector(Dissector):
    """FTP control connections over TCP."""

    name = "ftp"
    description = "FTP control channel: commands, replies, login (credentials flagged, never stored)"
    transports = frozenset({Transport.TCP})
    ports = frozenset({FTP_PORT})
    event_types = (FtpEvent,)

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        self._pending: deque[_Command] = deque()
        self._user: str | None = None
        self._user_raw: bytes | None = None
        """The USER argument as sent (not cut), for the default credential lookup only."""
        self._reply_lines: list[bytes] = []
        self._reply_code = b""
        self._reply_orig = False
        self._greeted = False
        self._opaque = False

    # ------------------------------------------------------------------ recognition and framing

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        end = data.find(b"\n", 0, MAX_LINE)
        if end < 0:
            if len(data) >= MAX_LINE:
                return Verdict.NO
            return Verdict.MAYBE if REPLY.match(data + b" ") or b"220".startswith(data[:3]) else Verdict.NO
        line = data[:end].rstrip(b"\r")
        on_port = FTP_PORT in (sport, dport)
        if line.startswith((b"220 ", b"220-")):
            # An SMTP greeting also starts with 220: the text must not be a mail server's, and off
            # port 21 it must name FTP (in any line of a multi-line greeting).
            complete = data[: data.rfind(b"\n", 0, MAX_LINE) + 1]
            upper = complete.upper()
            if b"SMTP" in upper or b"MAIL" in upper:
                return Verdict.NO
            if on_port or b"FTP" in upper:
                return Verdict.YES
            finished = re.search(rb"(^|\n)220 ", complete) is not None
            return Verdict.NO if finished or len(data) >= MAX_LINE else Verdict.MAYBE
        if on_port and dport == FTP_PORT:
            command = COMMAND.fullmatch(line)
            if command and command.group(1).upper() in (b"USER", b"AUTH", b"FEAT", b"SYST", b"OPTS"):
                return Verdict.YES
        return Verdict.NO

    def frame(self, data: bytes, is_orig: bool) -> int:
        if self._opaque:
            return len(data)
        end = data.find(b"\n", 0, MAX_LINE)
        if end >= 0:
            return end + 1
        return -1 if len(data) >= MAX_LINE else 0

    # ------------------------------------------------------------------ parsing

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        if self._opaque:
            return
        line = pdu.rstrip(b"\r\n")
        if not line:
            return
        # Commands come from the client, replies from the server; which side is which is read from
        # the content (a reply starts with three digits), so a reversed flow is handled too.
        if self._reply_lines and ctx.is_orig == self._reply_orig:
            self._continuation(line, ctx)
            return
        reply = REPLY.fullmatch(line)
        if reply is not None:
            self._reply_line(reply, ctx)
            return
        command = COMMAND.fullmatch(line)
        if command is None:
            if line.lstrip()[:4].upper() in (b"PASS", b"ACCT"):
                # A malformed PASS or ACCT line still holds the secret: the weird names the verb only.
                line = line.lstrip()[:4] + b" (secret not shown)"
            ctx.weird("ftp_bad_command", repr(line[:60]))
            return
        self._command(command, ctx)

    def close(self, ctx: PduContext) -> None:
        if self._reply_lines:
            ctx.weird("ftp_truncated_reply", f"multi-line {self._reply_code.decode()} reply not finished")
        while self._pending:
            self._emit(self._pending.popleft(), None, None, ctx)

    def _command(self, match: re.Match[bytes], ctx: PduContext) -> None:
        verb = match.group(1).decode("ascii").upper()
        raw = match.group(2)
        arg = _text(raw) if raw is not None and verb not in SECRET_COMMANDS else None
        if verb == "USER":
            self._user, self._user_raw = arg, raw
        cmd = _Command(ctx.ts, ctx.is_orig, verb, arg, self._user, cleartext_credentials=verb == "PASS")
        if verb == "PASS" and self._user_raw is not None:
            # One lookup per login, while the password is in memory: only list names survive it.
            cmd.default_credential = DefaultCredentials.load().label(self._user_raw, raw or b"")
        if verb in FILE_COMMANDS:
            cmd.file_name = arg
        elif verb == "PORT" and raw is not None:
            self._port(cmd, raw, ctx)
        elif verb == "EPRT" and raw is not None:
            self._eprt(cmd, raw, ctx)
        if len(self._pending) >= MAX_PENDING:
            ctx.weird("ftp_too_many_pending", f"more than {MAX_PENDING} commands without a reply")
            self._emit(self._pending.popleft(), None, None, ctx)
        self._pending.append(cmd)

    def _port(self, cmd: _Command, raw: bytes, ctx: PduContext) -> None:
        match = PASV_REPLY.fullmatch(raw.strip())
        address = _host_port([int(g) for g in match.groups()]) if match else None
        if address is None:
            ctx.weird("ftp_bad_port", repr(raw[:60]))
            return
        cmd.data_h, cmd.data_p, cmd.data_passive = address[0], address[1], False

    def _eprt(self, cmd: _Command, raw: bytes, ctx: PduContext) -> None:
        """EPRT |af|address|port| (RFC 2428 2); any delimiter character."""
        text = raw.strip()
        if len(text) < 7:
            ctx.weird("ftp_bad_port", repr(raw[:60]))
            return
        parts = text[1:-1].split(text[:1])
        if len(parts) != 3 or parts[0] not in (b"1", b"2") or not parts[2].isdigit() or int(parts[2]) > 65535:
            ctx.weird("ftp_bad_port", repr(raw[:60]))
            return
        cmd.data_h, cmd.data_p, cmd.data_passive = _text(parts[1]), int(parts[2]), False

    def _reply_line(self, match: re.Match[bytes], ctx: PduContext) -> None:
        if match.group(2) == b"-":  # the first line of a multi-line reply
            self._reply_code, self._reply_lines, self._reply_orig = (
                match.group(1),
                [match.group(0)],
                ctx.is_orig,
            )
            return
        self._reply(int(match.group(1)), match.group(3), ctx)

    def _continuation(self, line: bytes, ctx: PduContext) -> None:
        """A line of a multi-line reply: the reply ends with the line "code SP text"."""
        if len(self._reply_lines) < MAX_REPLY_LINES:
            self._reply_lines.append(line)
        if line.startswith(self._reply_code) and line[3:4] == b" ":
            text = self._reply_lines[0][4:]
            self._reply_lines = []
            self._reply(int(self._reply_code), text, ctx)

    def _reply(self, code: int, text: bytes, ctx: PduContext) -> None:
        if not self._greeted:
            # The server's greeting (220, or 120 then 220, or 421) answers no command, even when the
            # client already sent one (RFC 959 5.4, connection establishment).
            self._greeted = code != 120
            if code in (120, 220, 421):
                self._emit(None, code, text, ctx)
                return
        if code < 200 and self._pending:
            return  # preliminary reply (e.g. 150 Opening data connection): the command goes on
        cmd = self._pending.popleft() if self._pending else None
        if cmd is None:
            self._emit(None, code, text, ctx)
            return
        if code == 227 and cmd.command == "PASV":
            match = PASV_REPLY.search(text)
            address = _host_port([int(g) for g in match.groups()]) if match else None
            if address is None:
                ctx.weird("ftp_bad_pasv_reply", repr(text[:60]))
            else:
                cmd.data_h, cmd.data_p, cmd.data_passive = address[0], address[1], True
        elif code == 229 and cmd.command == "EPSV":
            match = EPSV_REPLY.search(text)
            if match is None or int(match.group(2)) > 65535:
                ctx.weird("ftp_bad_pasv_reply", repr(text[:60]))
            else:
                # The data connection goes to the control connection's server address (RFC 2428 3).
                server = self.flow.resp_h if cmd.is_orig else self.flow.orig_h
                cmd.data_h, cmd.data_p, cmd.data_passive = server, int(match.group(2)), True
        elif code == 234 and cmd.command == "AUTH":
            self._opaque = True  # RFC 4217: TLS starts after this reply
        self._emit(cmd, code, text, ctx)

    def _emit(self, cmd: _Command | None, code: int | None, text: bytes | None, ctx: PduContext) -> None:
        where = ctx.where()
        login: bool | None = None
        if cmd is not None:
            where["ts"], where["is_orig"] = cmd.ts, cmd.is_orig
            if cmd.command in ("USER", "PASS", "ACCT") and code is not None:
                login = True if code == LOGIN_OK else False if code in LOGIN_FAILED else None
        ctx.emit(
            FtpEvent(
                **where,
                command=cmd.command if cmd else None,
                arg=cmd.arg if cmd else None,
                user=cmd.user if cmd else self._user,
                cleartext_credentials=cmd.cleartext_credentials if cmd else False,
                default_credential=cmd.default_credential if cmd else None,
                reply_code=code,
                reply_msg=_text(text) if text is not None else None,
                login_success=login,
                file_name=cmd.file_name if cmd else None,
                data_h=cmd.data_h if cmd else None,
                data_p=cmd.data_p if cmd else None,
                data_passive=cmd.data_passive if cmd else None,
            )
        )
