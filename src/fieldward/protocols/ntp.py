"""NTP dissector: every NTP datagram becomes one ``ntp`` event.

What is covered, with the specification it follows:

- the NTP packet of RFC 5905 section 7.3 (modes 1-5: symmetric active/passive, client, server,
  broadcast; versions 1-4): leap indicator, version, mode, stratum, poll and precision exponents, root
  delay and dispersion, reference id (a kiss code or clock source for stratum 0-1, an IPv4 address
  above), the reference, origin, receive and transmit timestamps, NTPv4 extension fields (RFC 7822) and
  the optional key id + message digest;
- NTP control messages (mode 6, RFC 1305 appendix B / RFC 9327): opcode, response, error and more bits,
  sequence, status, association id, offset and count;
- ntpd private messages (mode 7): implementation, request code, response, more and auth bits,
  sequence, error, item count and size. Request code 42 (MON_GETLIST_1) or 20 (MON_GETLIST) is the
  ``monlist`` command, whose large answers to a small spoofed request made it the classic NTP
  amplification vector (CVE-2013-5211): ``monlist`` is reported as a field.

Field names follow Zeek's ``ntp.log`` (``ref_id``, ``ref_time``, ``org_time``, ``rec_time``,
``xmt_time``, ``num_exts``); times are seconds since the Unix epoch as Zeek writes them.

Recognition is by content: a known version and mode and a length that fits the mode's layout (on other
ports than 123 only versions 3 and 4 and plausible header values are accepted). The key id and digest of
an authenticated packet are reported by length and key id only: they are not secrets, but the digest is
of no use in an event.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from fieldward.protocols.base import Dissector, Event, PduContext, Transport, Verdict

NTP_PORT = 123
PACKET = struct.Struct(">BBbbII4sQQQQ")
"""LI/VN/mode, stratum, poll, precision, root delay, root dispersion, ref id, 4 timestamps."""
PACKET_SIZE = PACKET.size  # 48
CONTROL = struct.Struct(">BBHHHHH")
"""LI/VN/mode, R/E/M/opcode, sequence, status, association id, offset, count."""
CONTROL_SIZE = CONTROL.size  # 12
PRIVATE = struct.Struct(">BBBBHH")
"""R/M/VN/mode, A/sequence, implementation, request code, err/nitems, mbz/itemsize."""
PRIVATE_SIZE = PRIVATE.size  # 8
NTP_TO_UNIX = 2_208_988_800
"""Seconds from 1900-01-01 (NTP era 0) to 1970-01-01."""
FRACTION = 2.0**32
MAC_SIZES = (20, 24)
"""Key id (4) + MD5 (16) or SHA-1 (20) digest."""
CRYPTO_NAK = 4
MIN_EXTENSION = 16
MAX_EXTENSIONS = 64
MONLIST_CODES = frozenset({20, 42})
"""Mode 7 MON_GETLIST and MON_GETLIST_1: the monlist command."""
PRIVATE_IMPLEMENTATIONS = frozenset({0, 2, 3})
"""Mode 7 implementation numbers: UNIV, XNTPD_OLD, XNTPD."""

MODE_NAMES: dict[int, str] = {
    0: "reserved",
    1: "symmetric_active",
    2: "symmetric_passive",
    3: "client",
    4: "server",
    5: "broadcast",
    6: "control",
    7: "private",
}
CONTROL_OPCODES: dict[int, str] = {
    0: "UNSPEC",
    1: "READSTAT",
    2: "READVAR",
    3: "WRITEVAR",
    4: "READCLOCK",
    5: "WRITECLOCK",
    6: "SETTRAP",
    7: "ASYNCMSG",
    8: "CONFIGURE",
    9: "SAVECONFIG",
    10: "READ_MRU",
    11: "READ_ORDLIST_A",
    12: "REQ_NONCE",
    31: "UNSETTRAP",
}
"""Mode 6 opcodes (RFC 9327 and ntpd's ``ntp_control.h``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NtpMessage(Event):
    """One NTP datagram (``events/ntp.parquet``)."""

    log: ClassVar[str] = "ntp"

    version: int
    mode: int
    mode_name: str
    leap: int | None = None
    stratum: int | None = None
    poll: int | None = None
    precision: int | None = None
    root_delay: float | None = None
    root_disp: float | None = None
    ref_id: str | None = None
    ref_time: float | None = None
    org_time: float | None = None
    rec_time: float | None = None
    xmt_time: float | None = None
    num_exts: int | None = None
    key_id: int | None = None
    mac_len: int | None = None
    response: bool | None = None
    more: bool | None = None
    error: bool | None = None
    opcode: int | None = None
    opcode_name: str | None = None
    sequence: int | None = None
    status: int | None = None
    association_id: int | None = None
    offset: int | None = None
    count: int | None = None
    auth: bool | None = None
    implementation: int | None = None
    request_code: int | None = None
    err: int | None = None
    nitems: int | None = None
    item_size: int | None = None
    monlist: bool = False


def ntp_time(raw: int) -> float:
    """A 64-bit NTP timestamp as seconds since the Unix epoch (era 0); 0 stays 0 (unset)."""
    if raw == 0:
        return 0.0
    return (raw >> 32) - NTP_TO_UNIX + (raw & 0xFFFFFFFF) / FRACTION


def short_time(raw: int) -> float:
    """A 32-bit NTP short format value (16.16 fixed point) in seconds."""
    return raw / 65536.0


def reference_id(raw: bytes, stratum: int, version: int) -> str:
    """Stratum 0 (kiss code) and 1 (clock source): up to 4 ASCII characters; above: an IPv4 address."""
    if stratum <= 1:
        return raw.rstrip(b"\x00").decode("ascii", "backslashreplace")
    return str(ipaddress.IPv4Address(raw))


def _extensions(rest: bytes, ctx: PduContext) -> tuple[int, int | None, int | None]:
    """RFC 7822: (extension fields, key id, MAC length) of the bytes after the 48-byte header."""
    offset = 0
    count = 0
    while len(rest) - offset > max(MAC_SIZES):
        if count >= MAX_EXTENSIONS:
            ctx.weird("ntp_bad_extension", f"more than {MAX_EXTENSIONS} extension fields")
            return count, None, None
        _ftype, length = struct.unpack_from(">HH", rest, offset)
        if length < MIN_EXTENSION or length % 4 or offset + length > len(rest):
            ctx.weird("ntp_bad_extension", f"extension field of length {length} at offset {48 + offset}")
            return count, None, None
        count += 1
        offset += length
    remaining = len(rest) - offset
    if remaining == 0:
        return count, None, None
    if remaining == CRYPTO_NAK or remaining in MAC_SIZES:
        return count, struct.unpack_from(">I", rest, offset)[0], remaining - 4
    ctx.weird("ntp_bad_extension", f"{remaining} bytes after the header are neither extensions nor a MAC")
    return count, None, None


class NtpDissector(Dissector):
    """NTP over UDP port 123: time packets (modes 1-5), control (mode 6) and private (mode 7) messages."""

    name = "ntp"
    description = "NTP: stratum, reference, timestamps; control (mode 6) and private/monlist (mode 7)"
    transports = frozenset({Transport.UDP})
    ports = frozenset({NTP_PORT})
    event_types = (NtpMessage,)

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if transport != Transport.UDP or not data:
            return Verdict.NO
        on_port = NTP_PORT in (sport, dport)
        version, mode = (data[0] >> 3) & 0x7, data[0] & 0x7
        if not 1 <= version <= 4 or (not on_port and version < 3):
            return Verdict.NO
        if 1 <= mode <= 5:
            return Verdict.YES if cls._packet_ok(data, on_port) else Verdict.NO
        if mode == 6:
            return Verdict.YES if cls._control_ok(data) else Verdict.NO
        if mode == 7 and on_port:  # mode 7 has too little structure to be trusted elsewhere
            return Verdict.YES if cls._private_ok(data) else Verdict.NO
        return Verdict.NO

    @staticmethod
    def _packet_ok(data: bytes, on_port: bool) -> bool:
        if len(data) < PACKET_SIZE:
            return False
        _flags, stratum, poll, precision, *_rest = PACKET.unpack_from(data)
        if stratum > 16:
            return False
        rest = len(data) - PACKET_SIZE
        layout_ok = rest in (0, CRYPTO_NAK, *MAC_SIZES) or (rest >= 28 and rest % 4 == 0)
        if on_port:
            return layout_ok
        return layout_ok and -6 <= poll <= 17 and -32 <= precision <= 0

    @staticmethod
    def _control_ok(data: bytes) -> bool:
        if len(data) < CONTROL_SIZE:
            return False
        _flags, op, _seq, _status, _assoc, _offset, count = CONTROL.unpack_from(data)
        return (op & 0x1F) in CONTROL_OPCODES and CONTROL_SIZE + count <= len(
            data
        ) <= CONTROL_SIZE + count + 3 + 24

    @staticmethod
    def _private_ok(data: bytes) -> bool:
        if len(data) < PRIVATE_SIZE:
            return False
        _flags, _seq, implementation, _code, err_items, mbz_size = PRIVATE.unpack_from(data)
        return implementation in PRIVATE_IMPLEMENTATIONS and (err_items >> 12) <= 7 and not mbz_size >> 12

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        if not pdu:
            ctx.weird("ntp_truncated", "empty datagram")
            return
        version, mode = (pdu[0] >> 3) & 0x7, pdu[0] & 0x7
        if not 1 <= version <= 4:
            ctx.weird("ntp_bad_version", f"version {version}")
        fields: dict[str, Any] | None
        if mode == 6:
            fields = self._control(pdu, ctx)
        elif mode == 7:
            fields = self._private(pdu, ctx)
        else:
            if mode == 0:
                ctx.weird("ntp_bad_mode", "mode 0 is reserved")
            fields = self._packet(pdu, version, ctx)
        if fields is None:
            return
        ctx.emit(NtpMessage(**ctx.where(), version=version, mode=mode, mode_name=MODE_NAMES[mode], **fields))

    @staticmethod
    def _packet(pdu: bytes, version: int, ctx: PduContext) -> dict[str, Any] | None:
        if len(pdu) < PACKET_SIZE:
            ctx.weird("ntp_truncated", f"{len(pdu)} bytes, an NTP packet needs {PACKET_SIZE}")
            return None
        flags, stratum, poll, precision, delay, dispersion, ref, ref_t, org_t, rec_t, xmt_t = (
            PACKET.unpack_from(pdu)
        )
        exts, key_id, mac_len = _extensions(pdu[PACKET_SIZE:], ctx)
        return {
            "leap": flags >> 6,
            "stratum": stratum,
            "poll": poll,
            "precision": precision,
            "root_delay": short_time(delay),
            "root_disp": short_time(dispersion),
            "ref_id": reference_id(ref, stratum, version),
            "ref_time": ntp_time(ref_t),
            "org_time": ntp_time(org_t),
            "rec_time": ntp_time(rec_t),
            "xmt_time": ntp_time(xmt_t),
            "num_exts": exts,
            "key_id": key_id,
            "mac_len": mac_len,
        }

    @staticmethod
    def _control(pdu: bytes, ctx: PduContext) -> dict[str, Any] | None:
        if len(pdu) < CONTROL_SIZE:
            ctx.weird("ntp_truncated", f"{len(pdu)} bytes, a control message header needs {CONTROL_SIZE}")
            return None
        _flags, op, sequence, status, association, offset, count = CONTROL.unpack_from(pdu)
        if CONTROL_SIZE + count > len(pdu):
            ctx.weird(
                "ntp_truncated", f"control message count {count}, {len(pdu) - CONTROL_SIZE} bytes present"
            )
        opcode = op & 0x1F
        return {
            "leap": pdu[0] >> 6,
            "response": bool(op & 0x80),
            "error": bool(op & 0x40),
            "more": bool(op & 0x20),
            "opcode": opcode,
            "opcode_name": CONTROL_OPCODES.get(opcode, f"unknown-{opcode}"),
            "sequence": sequence,
            "status": status,
            "association_id": association,
            "offset": offset,
            "count": count,
        }

    @staticmethod
    def _private(pdu: bytes, ctx: PduContext) -> dict[str, Any] | None:
        if len(pdu) < PRIVATE_SIZE:
            ctx.weird("ntp_truncated", f"{len(pdu)} bytes, a mode 7 header needs {PRIVATE_SIZE}")
            return None
        flags, auth_seq, implementation, code, err_items, mbz_size = PRIVATE.unpack_from(pdu)
        nitems, size = err_items & 0xFFF, mbz_size & 0xFFF
        if flags & 0x80 and PRIVATE_SIZE + nitems * size > len(pdu):
            ctx.weird(
                "ntp_truncated", f"{nitems} items of {size} bytes, {len(pdu) - PRIVATE_SIZE} bytes present"
            )
        return {
            "response": bool(flags & 0x80),
            "more": bool(flags & 0x40),
            "auth": bool(auth_seq & 0x80),
            "sequence": auth_seq & 0x7F,
            "implementation": implementation,
            "request_code": code,
            "err": err_items >> 12,
            "nitems": nitems,
            "item_size": size,
            "monlist": code in MONLIST_CODES,
        }
