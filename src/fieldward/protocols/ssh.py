"""SSH dissector: the cleartext start of an SSH connection (RFC 4253).

What is dissected:

- the **protocol version exchange** (RFC 4253 4.2): each side's identification string
  ``SSH-protoversion-softwareversion [comments]``; lines a server sends before it are skipped;
- the **binary packets** before encryption (RFC 4253 6: packet length, padding length, payload) and in
  them **SSH_MSG_KEXINIT** (RFC 4253 7.1): the ten algorithm name-lists (key exchange, host key,
  ciphers, MACs, compression and languages in both directions) and first_kex_packet_follows, with the
  **HASSH** fingerprint of a client and **HASSHServer** of a server (salesforce/hassh: MD5 of
  ``kex;ciphers;macs;compression`` of the sender's own direction);
- **SSH_MSG_NEWKEYS** (RFC 4253 7.3): everything a side sends after it is encrypted and is skipped.

SSH-1 (protocol 1.x other than 1.99) is recognised by its banner; its binary packets are not parsed.
Malformed input is reported as ``ssh_*`` weirds; the dissector never judges the traffic.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import Enum, auto
from typing import ClassVar

from fieldward.protocols.base import Dissector, Event, FlowInfo, PduContext, Transport, Verdict

MAX_LINE = 1024
"""Longest identification (or pre-banner) line accepted; RFC 4253 allows 255 bytes."""
MAX_PRE_BANNER_LINES = 32
MAX_PACKET = 256 * 1024
"""Largest binary packet accepted (RFC 4253 6.1: at least 35000 bytes must be supported)."""
MAX_NAMES = 256
MSG_DISCONNECT = 1
MSG_KEXINIT = 20
MSG_NEWKEYS = 21
BANNER = re.compile(rb"SSH-([!-,.-~]+)-([!-~]*)(?: (.*))?")
"""``SSH-protoversion-softwareversion SP comments`` (printable US-ASCII, no '-' in protoversion)."""

NAME_LISTS = (
    "kex_algorithms",
    "server_host_key_algorithms",
    "encryption_algorithms_client_to_server",
    "encryption_algorithms_server_to_client",
    "mac_algorithms_client_to_server",
    "mac_algorithms_server_to_client",
    "compression_algorithms_client_to_server",
    "compression_algorithms_server_to_client",
    "languages_client_to_server",
    "languages_server_to_client",
)


class _Phase(Enum):
    BANNER = auto()
    PACKETS = auto()
    OPAQUE = auto()


@dataclass(frozen=True, slots=True, kw_only=True)
class SshVersion(Event):
    """One identification string: ``events/ssh_version.parquet``."""

    log: ClassVar[str] = "ssh_version"

    client: bool
    banner: str
    proto_version: str
    software: str
    comments: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SshKexInit(Event):
    """One SSH_MSG_KEXINIT: ``events/ssh_kexinit.parquet``."""

    log: ClassVar[str] = "ssh_kexinit"

    client: bool
    kex_algorithms: list[str]
    server_host_key_algorithms: list[str]
    encryption_algorithms_client_to_server: list[str]
    encryption_algorithms_server_to_client: list[str]
    mac_algorithms_client_to_server: list[str]
    mac_algorithms_server_to_client: list[str]
    compression_algorithms_client_to_server: list[str]
    compression_algorithms_server_to_client: list[str]
    languages_client_to_server: list[str]
    languages_server_to_client: list[str]
    first_kex_packet_follows: bool
    hassh: str
    hassh_algorithms: str


def hassh(lists: dict[str, str], client: bool) -> tuple[str, str]:
    """(HASSH or HASSHServer, its algorithm string) from the raw name-lists of a KEXINIT."""
    way = "client_to_server" if client else "server_to_client"
    text = ";".join(
        (
            lists["kex_algorithms"],
            lists[f"encryption_algorithms_{way}"],
            lists[f"mac_algorithms_{way}"],
            lists[f"compression_algorithms_{way}"],
        )
    )
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest(), text


def _names(raw: str) -> list[str]:
    return raw.split(",")[:MAX_NAMES] if raw else []


class SshDissector(Dissector):
    """SSH-2 over TCP: identification strings, KEXINIT, HASSH; stops at NEWKEYS."""

    name = "ssh"
    description = "SSH: version banners, key exchange algorithms, HASSH / HASSHServer"
    transports = frozenset({Transport.TCP})
    ports = frozenset({22, 2222})
    event_types = (SshVersion, SshKexInit)

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        # The client is the originator unless only the originator's port is an SSH server port.
        self._client_is_orig = not (flow.orig_p in self.ports and flow.resp_p not in self.ports)
        self._phase = [_Phase.BANNER, _Phase.BANNER]
        self._pre_banner = [0, 0]

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if len(data) < 5:
            return Verdict.MAYBE if b"SSH-".startswith(data[:4]) else Verdict.NO
        if not data.startswith(b"SSH-") or not (data[4:5].isdigit()):
            return Verdict.NO
        end = data.find(b"\n", 0, MAX_LINE)
        if end < 0:
            return Verdict.MAYBE if len(data) < MAX_LINE else Verdict.NO
        return Verdict.YES if BANNER.fullmatch(data[:end].rstrip(b"\r")) else Verdict.NO

    def frame(self, data: bytes, is_orig: bool) -> int:
        phase = self._phase[0 if is_orig else 1]
        if phase == _Phase.OPAQUE:
            return len(data)
        if phase == _Phase.BANNER:
            end = data.find(b"\n", 0, MAX_LINE)
            if end >= 0:
                return end + 1
            return -1 if len(data) >= MAX_LINE else 0
        if len(data) < 4:
            return 0
        length = int.from_bytes(data[:4], "big")
        if not 5 <= length <= MAX_PACKET:
            return -1
        return 4 + length if len(data) >= 4 + length else 0

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        d = 0 if ctx.is_orig else 1
        phase = self._phase[d]
        if phase == _Phase.BANNER:
            self._line(d, pdu, ctx)
        elif phase == _Phase.PACKETS:
            self._packet(d, pdu, ctx)

    def _client(self, ctx: PduContext) -> bool:
        return ctx.is_orig == self._client_is_orig

    def _line(self, d: int, line: bytes, ctx: PduContext) -> None:
        text = line.rstrip(b"\r\n")
        if not text.startswith(b"SSH-"):
            self._pre_banner[d] += 1
            if self._pre_banner[d] > MAX_PRE_BANNER_LINES:
                ctx.weird("ssh_no_banner", f"{MAX_PRE_BANNER_LINES} lines without an identification string")
                self._phase[d] = _Phase.OPAQUE
            return
        match = BANNER.fullmatch(text)
        if match is None:
            ctx.weird("ssh_bad_banner", repr(text[:80]))
            self._phase[d] = _Phase.OPAQUE
            return
        if len(line) > 255:
            ctx.weird("ssh_banner_too_long", f"identification string of {len(line)} bytes (RFC 4253: 255)")
        proto = match.group(1).decode("ascii")
        comments = match.group(3)
        ctx.emit(
            SshVersion(
                **ctx.where(),
                client=self._client(ctx),
                banner=text.decode("utf-8", "backslashreplace"),
                proto_version=proto,
                software=match.group(2).decode("ascii"),
                comments=comments.decode("utf-8", "backslashreplace") if comments is not None else None,
            )
        )
        # SSH-1 binary packets (protocol 1.x, except the 1.99 that announces 2.0) are not parsed.
        self._phase[d] = _Phase.PACKETS if proto in ("2.0", "1.99") else _Phase.OPAQUE

    def _packet(self, d: int, pdu: bytes, ctx: PduContext) -> None:
        if len(pdu) < 6:
            ctx.weird("ssh_truncated_packet", f"{len(pdu)} bytes")
            return
        length, padding = int.from_bytes(pdu[:4], "big"), pdu[4]
        if length != len(pdu) - 4:
            ctx.weird("ssh_bad_packet_length", f"packet length {length}, {len(pdu) - 4} bytes present")
            return
        if padding < 4 or padding > length - 2:
            ctx.weird("ssh_bad_padding", f"padding length {padding} in a packet of {length}")
            if padding > length - 2:
                return
        payload = pdu[5 : 4 + length - padding]
        msg = payload[0]
        if msg == MSG_KEXINIT:
            self._kexinit(payload, ctx)
        elif msg == MSG_NEWKEYS:
            self._phase[d] = _Phase.OPAQUE

    def _kexinit(self, payload: bytes, ctx: PduContext) -> None:
        pos = 17  # message code, 16-byte cookie
        lists: dict[str, str] = {}
        for name in NAME_LISTS:
            if pos + 4 > len(payload):
                ctx.weird("ssh_malformed_kexinit", f"ends before the {name} list")
                return
            size = int.from_bytes(payload[pos : pos + 4], "big")
            pos += 4
            if pos + size > len(payload):
                ctx.weird("ssh_malformed_kexinit", f"{name} list of {size} bytes, {len(payload) - pos} left")
                return
            lists[name] = payload[pos : pos + size].decode("ascii", "backslashreplace")
            pos += size
        if pos + 5 > len(payload):
            ctx.weird("ssh_malformed_kexinit", "no first_kex_packet_follows / reserved field")
        client = self._client(ctx)
        fingerprint, algorithms = hassh(lists, client)
        ctx.emit(
            SshKexInit(
                **ctx.where(),
                client=client,
                kex_algorithms=_names(lists["kex_algorithms"]),
                server_host_key_algorithms=_names(lists["server_host_key_algorithms"]),
                encryption_algorithms_client_to_server=_names(
                    lists["encryption_algorithms_client_to_server"]
                ),
                encryption_algorithms_server_to_client=_names(
                    lists["encryption_algorithms_server_to_client"]
                ),
                mac_algorithms_client_to_server=_names(lists["mac_algorithms_client_to_server"]),
                mac_algorithms_server_to_client=_names(lists["mac_algorithms_server_to_client"]),
                compression_algorithms_client_to_server=_names(
                    lists["compression_algorithms_client_to_server"]
                ),
                compression_algorithms_server_to_client=_names(
                    lists["compression_algorithms_server_to_client"]
                ),
                languages_client_to_server=_names(lists["languages_client_to_server"]),
                languages_server_to_client=_names(lists["languages_server_to_client"]),
                first_kex_packet_follows=pos < len(payload) and payload[pos] != 0,
                hassh=fingerprint,
                hassh_algorithms=algorithms,
            )
        )
