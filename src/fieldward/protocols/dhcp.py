"""DHCPv4 / BOOTP dissector: every BOOTP message becomes one ``dhcp`` event.

What is covered, with the specification it follows:

- the fixed BOOTP header of RFC 951 / RFC 2131 section 2 (op, htype, hlen, hops, xid, secs, flags,
  ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file) and the magic cookie 99.130.83.99 (RFC 2131 3);
- the options of RFC 2132 that identify a device or its lease: message type (53), host name (12),
  vendor class identifier (60), parameter request list (55, also as the comma-joined fingerprint
  string that DHCP fingerprinting databases use), client identifier (61), requested address (50),
  server identifier (54), lease / renewal / rebinding times (51, 58, 59), domain name (15), subnet
  mask (1), routers (3), DNS and NTP servers (6, 42), message (56), maximum message size (57), the client
  FQDN of RFC 4702 (81), the user class of RFC 3004 (77) and the MUD URL of RFC 8520 (161);
- option overload (52: options continued in the ``file`` and ``sname`` fields, RFC 2131 4.1) and long
  options split into several instances of one code (RFC 3396: the values are concatenated).

The event is per message; Zeek's ``dhcp.log`` joins the messages of one transaction (same xid) into a
row, and ``tests/protocols/test_dhcp.py`` rebuilds those rows from these events (the mapping is in
``docs/protocols/dhcp.md``). Names follow Zeek (``msg_type_name`` as ``DHCP::message_types``).

Recognition is by content: op 1 or 2, a hardware address length of at most 16 and the magic cookie at
offset 236; plain BOOTP (no cookie) only on ports 67/68. Malformed messages become ``dhcp_*`` weirds.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fieldward.protocols.base import Dissector, Event, PduContext, Transport, Verdict

HEADER = struct.Struct(">BBBBIHH4s4s4s4s16s64s128s")
"""op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file."""
HEADER_SIZE = HEADER.size  # 236
MAGIC_COOKIE = b"\x63\x82\x53\x63"
OPTIONS_OFFSET = HEADER_SIZE + len(MAGIC_COOKIE)  # 240
BOOTP_MIN_SIZE = 300
"""RFC 951: a BOOTP message carries a 64-byte vendor area, so it is at least 300 bytes."""
MAX_HLEN = 16
BOOTREQUEST, BOOTREPLY = 1, 2
BROADCAST_FLAG = 0x8000
PAD, END = 0, 255

MESSAGE_TYPES: dict[int, str] = {
    1: "DISCOVER",
    2: "OFFER",
    3: "REQUEST",
    4: "DECLINE",
    5: "ACK",
    6: "NAK",
    7: "RELEASE",
    8: "INFORM",
    9: "FORCERENEW",
    10: "LEASEQUERY",
    11: "LEASEUNASSIGNED",
    12: "LEASEUNKNOWN",
    13: "LEASEACTIVE",
    14: "BULKLEASEQUERY",
    15: "LEASEQUERYDONE",
    16: "ACTIVELEASEQUERY",
    17: "LEASEQUERYSTATUS",
    18: "TLS",
}
"""DHCP message types (option 53), named as Zeek's ``DHCP::message_types``."""

OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOST_NAME = 12
OPT_DOMAIN_NAME = 15
OPT_NTP = 42
OPT_REQUESTED_ADDR = 50
OPT_LEASE_TIME = 51
OPT_OVERLOAD = 52
OPT_MSG_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAM_LIST = 55
OPT_MESSAGE = 56
OPT_MAX_SIZE = 57
OPT_RENEWAL = 58
OPT_REBINDING = 59
OPT_VENDOR_CLASS = 60
OPT_CLIENT_ID = 61
OPT_USER_CLASS = 77
OPT_CLIENT_FQDN = 81
OPT_MUD_URL = 161

FIXED_LENGTHS: dict[int, int] = {
    OPT_SUBNET_MASK: 4,
    OPT_REQUESTED_ADDR: 4,
    OPT_LEASE_TIME: 4,
    OPT_OVERLOAD: 1,
    OPT_MSG_TYPE: 1,
    OPT_SERVER_ID: 4,
    OPT_MAX_SIZE: 2,
    OPT_RENEWAL: 4,
    OPT_REBINDING: 4,
}
ADDRESS_LISTS = frozenset({OPT_ROUTER, OPT_DNS, OPT_NTP})
FQDN_E_FLAG = 0x04
"""RFC 4702 2.1: the domain name is in DNS wire format (else ASCII)."""
HTYPE_ETHERNET = 1
MAX_OPTIONS = 255
"""Option instances read per message (a bound on hostile input; real messages hold a few dozen)."""


def message_type_name(code: int) -> str:
    """Zeek's name of a DHCP message type, ``unknown-message-type-<n>`` for unassigned codes."""
    return MESSAGE_TYPES.get(code, f"unknown-message-type-{code}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DhcpMessage(Event):
    """One BOOTP/DHCP message (``events/dhcp.parquet``)."""

    log: ClassVar[str] = "dhcp"

    op: int
    htype: int
    hlen: int
    hops: int
    xid: int
    secs: int
    broadcast: bool
    ciaddr: str
    yiaddr: str
    siaddr: str
    giaddr: str
    chaddr: str
    sname: str | None = None
    file: str | None = None
    msg_type: int | None = None
    msg_type_name: str | None = None
    options: list[int] = field(default_factory=list)
    host_name: str | None = None
    vendor_class: str | None = None
    param_list: list[int] | None = None
    param_fingerprint: str | None = None
    client_id_type: int | None = None
    client_id: str | None = None
    client_id_hwaddr: str | None = None
    requested_addr: str | None = None
    server_id: str | None = None
    lease_time: int | None = None
    renewal_time: int | None = None
    rebinding_time: int | None = None
    subnet_mask: str | None = None
    routers: list[str] | None = None
    dns_servers: list[str] | None = None
    ntp_servers: list[str] | None = None
    domain: str | None = None
    client_fqdn: str | None = None
    client_fqdn_flags: int | None = None
    user_class: str | None = None
    mud_url: str | None = None
    message: str | None = None
    max_msg_size: int | None = None


def _ip(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _text(raw: bytes) -> str:
    """An option string: trailing NULs dropped (some clients NUL-terminate), never lost if not UTF-8."""
    return raw.rstrip(b"\x00").decode("utf-8", "backslashreplace")


def _cstring(raw: bytes) -> str | None:
    """A NUL-terminated header string (sname, file): None when empty."""
    value = raw.split(b"\x00", 1)[0]
    return value.decode("utf-8", "backslashreplace") if value else None


def _dns_wire_name(raw: bytes) -> str | None:
    """A domain name in uncompressed DNS wire format (RFC 4702 2.3.1); None when malformed."""
    labels: list[str] = []
    offset = 0
    while offset < len(raw):
        size = raw[offset]
        if size == 0:
            return ".".join(labels)
        if size > 63 or offset + 1 + size > len(raw):
            return None
        labels.append(raw[offset + 1 : offset + 1 + size].decode("utf-8", "backslashreplace"))
        offset += 1 + size
    return ".".join(labels)  # a partial name (RFC 4702 2.3.1 allows omitting the root label)


def _walk_options(area: bytes, found: dict[int, bytearray], order: list[int], ctx: PduContext) -> bool:
    """Read the options of one area into ``found`` (RFC 3396 concatenation); True if End was seen."""
    offset = 0
    while offset < len(area):
        code = area[offset]
        if code == PAD:
            offset += 1
            continue
        if code == END:
            return True
        if offset + 1 >= len(area):
            ctx.weird("dhcp_truncated_option", f"option {code} has no length byte")
            return True
        size = area[offset + 1]
        value = area[offset + 2 : offset + 2 + size]
        if len(value) < size:
            ctx.weird("dhcp_truncated_option", f"option {code} of {size} bytes, {len(value)} present")
            return True
        if len(order) >= MAX_OPTIONS:
            ctx.weird("dhcp_too_many_options", f"more than {MAX_OPTIONS} options")
            return True
        order.append(code)
        found.setdefault(code, bytearray()).extend(value)
        offset += 2 + size
    return False


def _addresses(code: int, raw: bytes, ctx: PduContext) -> list[str]:
    if not raw or len(raw) % 4:
        ctx.weird("dhcp_bad_option_length", f"option {code}: {len(raw)} bytes, a multiple of 4 expected")
    return [_ip(raw[i : i + 4]) for i in range(0, len(raw) - 3, 4)]


class DhcpDissector(Dissector):
    """DHCPv4 and BOOTP over UDP (server port 67, client port 68, proxyDHCP 4011)."""

    name = "dhcp"
    description = "DHCPv4/BOOTP: message types, client identity (MAC, host name, vendor class), lease"
    transports = frozenset({Transport.UDP})
    ports = frozenset({67, 68, 4011})
    event_types = (DhcpMessage,)

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if transport != Transport.UDP or len(data) < HEADER_SIZE:
            return Verdict.NO
        op, htype, hlen = data[0], data[1], data[2]
        if op not in (BOOTREQUEST, BOOTREPLY) or hlen > MAX_HLEN or (htype == 0 and hlen > 0):
            return Verdict.NO
        if data[OPTIONS_OFFSET - 4 : OPTIONS_OFFSET] == MAGIC_COOKIE:
            return Verdict.YES
        # Plain BOOTP (RFC 951) has no cookie: only believed on the BOOTP ports, at full size.
        on_port = bool({sport, dport} & {67, 68})
        return Verdict.YES if on_port and len(data) >= BOOTP_MIN_SIZE and 1 <= htype <= 40 else Verdict.NO

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        if len(pdu) < HEADER_SIZE:
            ctx.weird("dhcp_truncated", f"{len(pdu)} bytes, the BOOTP header needs {HEADER_SIZE}")
            return
        op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file = (
            HEADER.unpack_from(pdu)
        )
        if op not in (BOOTREQUEST, BOOTREPLY):
            ctx.weird("dhcp_bad_op", f"op {op}, expected 1 (BOOTREQUEST) or 2 (BOOTREPLY)")
        if hlen > MAX_HLEN:
            ctx.weird("dhcp_bad_hlen", f"hardware address length {hlen} above {MAX_HLEN}")
        found: dict[int, bytearray] = {}
        order: list[int] = []
        cookie = pdu[HEADER_SIZE:OPTIONS_OFFSET]
        if cookie == MAGIC_COOKIE:
            if not _walk_options(pdu[OPTIONS_OFFSET:], found, order, ctx):
                ctx.weird("dhcp_no_end_option", "the options field does not end with option 255")
            sname, file = self._overload(found, order, sname, file, ctx)
        elif len(pdu) > HEADER_SIZE and any(pdu[HEADER_SIZE:]):
            if len(cookie) < len(MAGIC_COOKIE):
                ctx.weird("dhcp_truncated", f"{len(pdu)} bytes: the magic cookie is cut short")
            else:
                ctx.weird("dhcp_bad_cookie", f"vendor area starts with {cookie.hex()}, not the magic cookie")
        values = {code: bytes(value) for code, value in found.items()}
        event = DhcpMessage(
            **ctx.where(),
            op=op,
            htype=htype,
            hlen=hlen,
            hops=hops,
            xid=xid,
            secs=secs,
            broadcast=bool(flags & BROADCAST_FLAG),
            ciaddr=_ip(ciaddr),
            yiaddr=_ip(yiaddr),
            siaddr=_ip(siaddr),
            giaddr=_ip(giaddr),
            chaddr=_mac(chaddr[: min(hlen, MAX_HLEN)]),
            sname=_cstring(sname),
            file=_cstring(file),
            options=order,
            **self._options(values, ctx),
        )
        ctx.emit(event)

    @staticmethod
    def _overload(
        found: dict[int, bytearray], order: list[int], sname: bytes, file: bytes, ctx: PduContext
    ) -> tuple[bytes, bytes]:
        """RFC 2131 4.1 / RFC 2132 9.3: options continued in ``file`` (1), ``sname`` (2) or both (3)."""
        overload = found.pop(OPT_OVERLOAD, None)
        if overload is None:
            return sname, file
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            ctx.weird("dhcp_bad_overload", f"option overload value {overload.hex()}, expected 1, 2 or 3")
            return sname, file
        if overload[0] & 1:
            _walk_options(file, found, order, ctx)
            file = b""
        if overload[0] & 2:
            _walk_options(sname, found, order, ctx)
            sname = b""
        return sname, file

    @staticmethod
    def _options(values: dict[int, bytes], ctx: PduContext) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for code, size in FIXED_LENGTHS.items():
            if code in values and len(values[code]) != size:
                ctx.weird(
                    "dhcp_bad_option_length", f"option {code}: {len(values[code])} bytes, {size} expected"
                )
                del values[code]
        if OPT_MSG_TYPE in values:
            out["msg_type"] = code = values[OPT_MSG_TYPE][0]
            out["msg_type_name"] = message_type_name(code)
            if code not in MESSAGE_TYPES:
                ctx.weird("dhcp_unknown_message_type", f"message type {code}")
        for code, key in (
            (OPT_HOST_NAME, "host_name"),
            (OPT_VENDOR_CLASS, "vendor_class"),
            (OPT_MESSAGE, "message"),
            (OPT_USER_CLASS, "user_class"),
            (OPT_MUD_URL, "mud_url"),
        ):
            if code in values:
                out[key] = _text(values[code])
        if OPT_DOMAIN_NAME in values:
            out["domain"] = _text(values[OPT_DOMAIN_NAME])
        if OPT_PARAM_LIST in values:
            params = list(values[OPT_PARAM_LIST])
            out["param_list"] = params
            out["param_fingerprint"] = ",".join(map(str, params))
        if OPT_CLIENT_ID in values:
            raw = values[OPT_CLIENT_ID]
            out["client_id"] = raw.hex()
            if raw:
                out["client_id_type"] = raw[0]
                if raw[0] == HTYPE_ETHERNET and len(raw) > 1:
                    out["client_id_hwaddr"] = _mac(raw[1:])
            else:
                ctx.weird("dhcp_bad_option_length", "client identifier (61) is empty")
        for code, key in (
            (OPT_REQUESTED_ADDR, "requested_addr"),
            (OPT_SERVER_ID, "server_id"),
            (OPT_SUBNET_MASK, "subnet_mask"),
        ):
            if code in values:
                out[key] = _ip(values[code])
        for code, key in (
            (OPT_LEASE_TIME, "lease_time"),
            (OPT_RENEWAL, "renewal_time"),
            (OPT_REBINDING, "rebinding_time"),
            (OPT_MAX_SIZE, "max_msg_size"),
        ):
            if code in values:
                out[key] = int.from_bytes(values[code], "big")
        for code, key in ((OPT_ROUTER, "routers"), (OPT_DNS, "dns_servers"), (OPT_NTP, "ntp_servers")):
            if code in values:
                out[key] = _addresses(code, values[code], ctx)
        if OPT_CLIENT_FQDN in values:
            raw = values[OPT_CLIENT_FQDN]
            if len(raw) < 3:
                ctx.weird(
                    "dhcp_bad_option_length", f"client FQDN (81): {len(raw)} bytes, at least 3 expected"
                )
            else:
                out["client_fqdn_flags"] = raw[0]
                name = _dns_wire_name(raw[3:]) if raw[0] & FQDN_E_FLAG else _text(raw[3:])
                if name is None:
                    ctx.weird("dhcp_bad_client_fqdn", "client FQDN (81) is not a valid DNS wire-format name")
                    name = raw[3:].decode("utf-8", "backslashreplace")
                out["client_fqdn"] = name
        return out
