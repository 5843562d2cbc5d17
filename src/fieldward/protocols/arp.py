"""ARP dissector: every ARP (and RARP) message becomes one ``arp`` event.

Follows RFC 826 (the packet format: hardware type, protocol type, address lengths, opcode, then the
sender's and target's hardware and protocol addresses, each as long as its length field says), the
opcode names of the IANA "ARP Parameters" registry (RFC 5494: 1 request, 2 reply, 3/4 reverse request
and reply of RFC 903, 8/9 InARP of RFC 2390, 10 ARP-NAK), and RFC 5227 for the two special requests:

- an *ARP probe* is a request with an all-zero sender protocol address and an all-zero target hardware
  address (a host checking that an address is free);
- an *ARP announcement* is a request whose sender and target protocol addresses are equal and whose
  target hardware address is all zeros.

A message is *gratuitous* when its sender and target protocol addresses are equal, request or reply.
The three flags are computed exactly as Wireshark's ``arp.isgratuitous``, ``arp.isprobe`` and
``arp.isannouncement`` (so a request with sender and target address both 0.0.0.0 counts as a
gratuitous announcement, not a probe). Whether the Ethernet source differs from the ARP sender hardware
address is recorded too (a fact: proxies and spoofers both do it).

Frames are selected by EtherType (0x0806 ARP, 0x8035 RARP) by the engine: ARP has no flow, and the
event's ``orig_h``/``resp_h`` are the frame's source and destination MAC (see docs/plugins.md).
Addresses are formatted by type: hardware addresses of 6 bytes as ``aa:bb:cc:dd:ee:ff``, IPv4 (protocol
type 0x0800, 4 bytes) dotted, IPv6 (0x86DD, 16 bytes) in RFC 5952 form, anything else as colon-separated
hex bytes. Trailing Ethernet padding after the message is ignored.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import ClassVar

from fieldward.protocols.base import LinkDissector, LinkEvent, PduContext

ETH_ARP = 0x0806
ETH_RARP = 0x8035
HEADER = struct.Struct(">HHBBH")
"""Hardware type, protocol type, hardware address length, protocol address length, opcode."""
HW_ETHERNET = 1
PROTO_IPV4 = 0x0800
PROTO_IPV6 = 0x86DD
OP_REQUEST = 1
OP_REPLY = 2

OPCODE_NAMES: dict[int, str] = {
    1: "request",
    2: "reply",
    3: "reverse_request",
    4: "reverse_reply",
    5: "drarp_request",
    6: "drarp_reply",
    7: "drarp_error",
    8: "inarp_request",
    9: "inarp_reply",
    10: "arp_nak",
}
"""IANA ARP operation codes (RFC 5494); others are named ``unknown-<n>``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ArpEvent(LinkEvent):
    """One ARP or RARP message (events/arp.parquet)."""

    log: ClassVar[str] = "arp"

    hw_type: int
    proto_type: int
    op: int
    op_name: str
    sha: str
    spa: str
    tha: str
    tpa: str
    gratuitous: bool
    probe: bool
    announcement: bool
    src_mismatch: bool


def opcode_name(op: int) -> str:
    return OPCODE_NAMES.get(op, f"unknown-{op}")


def _hw_address(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _proto_address(raw: bytes, proto_type: int) -> str:
    if proto_type == PROTO_IPV4 and len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if proto_type == PROTO_IPV6 and len(raw) == 16:
        return str(ipaddress.IPv6Address(raw))
    return ":".join(f"{b:02x}" for b in raw)


class ArpDissector(LinkDissector):
    name = "arp"
    description = "Address Resolution Protocol (RFC 826), RARP (RFC 903)"
    ethertypes = frozenset({ETH_ARP, ETH_RARP})
    event_types = (ArpEvent,)

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        if len(pdu) < HEADER.size:
            ctx.weird("arp_truncated", f"{len(pdu)} bytes, header needs {HEADER.size}")
            return
        hw_type, proto_type, hlen, plen, op = HEADER.unpack_from(pdu)
        if hlen == 0 or plen == 0:
            ctx.weird("arp_zero_address_length", f"hardware length {hlen}, protocol length {plen}")
            return
        need = HEADER.size + 2 * (hlen + plen)
        if len(pdu) < need:
            ctx.weird("arp_truncated", f"{len(pdu)} bytes, message needs {need}")
            return
        pos = HEADER.size
        sha_raw = pdu[pos : pos + hlen]
        spa_raw = pdu[pos + hlen : pos + hlen + plen]
        pos += hlen + plen
        tha_raw = pdu[pos : pos + hlen]
        tpa_raw = pdu[pos + hlen : pos + hlen + plen]
        if op not in OPCODE_NAMES:
            ctx.weird("arp_unknown_opcode", f"opcode {op}")
        sha = _hw_address(sha_raw)
        tha_zero = not any(tha_raw)
        gratuitous = op in (OP_REQUEST, OP_REPLY) and spa_raw == tpa_raw
        request = op == OP_REQUEST
        link = ctx.link
        ctx.emit(
            ArpEvent(
                **ctx.where_link(),
                hw_type=hw_type,
                proto_type=proto_type,
                op=op,
                op_name=opcode_name(op),
                sha=sha,
                spa=_proto_address(spa_raw, proto_type),
                tha=_hw_address(tha_raw),
                tpa=_proto_address(tpa_raw, proto_type),
                gratuitous=gratuitous,
                probe=request and tha_zero and not any(spa_raw) and spa_raw != tpa_raw,
                announcement=request and tha_zero and spa_raw == tpa_raw,
                src_mismatch=link is not None and link.src_mac != "" and hlen == 6 and link.src_mac != sha,
            )
        )
