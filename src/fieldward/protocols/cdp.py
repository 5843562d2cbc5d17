"""CDP dissector: every Cisco Discovery Protocol advertisement becomes one ``cdp`` event.

CDP runs over 802.3 frames with an 802.2 LLC/SNAP header (DSAP/SSAP 0xAA, UI, OUI 00-00-0C, protocol
id 0x2000), sent to 01:00:0c:cc:cc:cc; the engine selects them by that SNAP id (also VLAN-tagged) and
hands over the bytes after the SNAP header, cut to the 802.3 length. The PDU is a 4-byte header
(version 1 or 2, TTL in seconds, checksum) followed by TLVs of a 2-byte type and a 2-byte length that
counts the 4-byte TLV header. No public specification exists; the TLV layout follows Cisco's
"CDP" documentation in the IOS configuration guides and Wireshark's ``packet-cdp.c``:

- 0x0001 Device ID, 0x0003 Port ID, 0x0005 Software Version, 0x0006 Platform, 0x0009 VTP Management
  Domain, 0x0014 System Name: text;
- 0x0002 Addresses and 0x0016 Management Addresses: a 4-byte count, then records of protocol type
  (1 NLPID, 2 802.2), protocol length, protocol (NLPID 0xCC is IPv4; the 802.2 protocols
  ``AA AA 03 00 00 00 08 00`` / ``... 86 DD`` are IPv4 / IPv6), a 2-byte address length and the address;
- 0x0004 Capabilities: a 4-byte bit map (router, transparent bridge, source-route bridge, switch,
  host, IGMP, repeater, VoIP phone, remotely managed, CVTA, two-port MAC relay);
- 0x000A Native VLAN (2 bytes), 0x000B Duplex (1 byte, 1 full), 0x000E VoIP VLAN Reply (1 byte + VLAN).

Other TLVs (IP prefixes, power, MTU, trust, location, ...) are counted in ``other_tlvs``.

The checksum is the Internet checksum (RFC 1071) of the whole PDU, except for odd lengths: Cisco puts
the last byte in the low half of the final 16-bit word and, when that byte has its top bit set,
compensates an off-by-one of its signed addition (the high half becomes 0xFF and the byte is
decremented). This is what Wireshark's ``packet-cdp.c`` verifies; ``checksum_ok`` reports the result
and a mismatch is the weird ``cdp_bad_checksum``.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from fieldward.protocols.base import LinkDissector, LinkEvent, PduContext

OUI_CISCO = 0x00000C
PID_CDP = 0x2000
HEADER = struct.Struct(">BBH")
"""Version, TTL, checksum."""
TLV = struct.Struct(">HH")

TLV_DEVICE_ID = 0x0001
TLV_ADDRESSES = 0x0002
TLV_PORT_ID = 0x0003
TLV_CAPABILITIES = 0x0004
TLV_SOFTWARE_VERSION = 0x0005
TLV_PLATFORM = 0x0006
TLV_VTP_DOMAIN = 0x0009
TLV_NATIVE_VLAN = 0x000A
TLV_DUPLEX = 0x000B
TLV_VOICE_VLAN = 0x000E
TLV_SYSTEM_NAME = 0x0014
TLV_MANAGEMENT_ADDRESSES = 0x0016

CAPABILITY_NAMES: tuple[str, ...] = (
    "router",
    "transparent_bridge",
    "source_route_bridge",
    "switch",
    "host",
    "igmp",
    "repeater",
    "voip_phone",
    "remotely_managed",
    "cvta",
    "two_port_mac_relay",
)
"""Capability bits 0..10."""

NLPID = 1
NLPID_IP = b"\xcc"
IEEE_8022 = 2
SNAP_IPV4 = bytes.fromhex("aaaa030000000800")
SNAP_IPV6 = bytes.fromhex("aaaa0300000086dd")
MAX_ADDRESSES = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class CdpEvent(LinkEvent):
    """One CDP advertisement (events/cdp.parquet)."""

    log: ClassVar[str] = "cdp"

    version: int
    ttl: int
    checksum: int
    checksum_ok: bool
    device_id: str | None
    addresses: list[str]
    port_id: str | None
    capabilities: list[str]
    software_version: str | None
    platform: str | None
    vtp_management_domain: str | None
    native_vlan: int | None
    duplex: str | None
    voice_vlan: int | None
    system_name: str | None
    management_addresses: list[str]
    other_tlvs: int


@dataclass(slots=True)
class _Fields:
    device_id: str | None = None
    addresses: list[str] = field(default_factory=list)
    port_id: str | None = None
    capabilities: list[str] = field(default_factory=list)
    software_version: str | None = None
    platform: str | None = None
    vtp_management_domain: str | None = None
    native_vlan: int | None = None
    duplex: str | None = None
    voice_vlan: int | None = None
    system_name: str | None = None
    management_addresses: list[str] = field(default_factory=list)
    other_tlvs: int = 0


TEXT_TLVS: dict[int, str] = {
    TLV_DEVICE_ID: "device_id",
    TLV_PORT_ID: "port_id",
    TLV_SOFTWARE_VERSION: "software_version",
    TLV_PLATFORM: "platform",
    TLV_VTP_DOMAIN: "vtp_management_domain",
    TLV_SYSTEM_NAME: "system_name",
}


def capability_names(bits: int) -> list[str]:
    return [name for i, name in enumerate(CAPABILITY_NAMES) if bits >> i & 1]


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", "replace")


def checksum_ok(pdu: bytes) -> bool:
    """Verify the CDP checksum (Internet checksum with Cisco's odd-length rule) over the whole PDU."""
    data = bytearray(pdu)
    if len(data) % 2:
        last = data[-1]
        data[-1] = 0
        data.append(last)
        if last & 0x80:
            data[-1] = last - 1
            data[-2] = 0xFF
    words = memoryview(bytes(data)).cast("H")  # native order: a byte swap does not change the outcome
    total = sum(words)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def _address(protocol_type: int, protocol: bytes, raw: bytes) -> str:
    ipv4 = (protocol_type == NLPID and protocol == NLPID_IP) or (
        protocol_type == IEEE_8022 and protocol == SNAP_IPV4
    )
    if ipv4 and len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if protocol_type == IEEE_8022 and protocol == SNAP_IPV6 and len(raw) == 16:
        return str(ipaddress.IPv6Address(raw))
    return ":".join(f"{b:02x}" for b in raw)


def parse_addresses(value: bytes, ctx: PduContext) -> list[str]:
    """The records of an Addresses / Management Addresses TLV."""
    if len(value) < 4:
        ctx.weird("cdp_bad_address", f"address TLV of {len(value)} bytes has no count")
        return []
    (count,) = struct.unpack_from(">I", value)
    out: list[str] = []
    pos = 4
    for number in range(count):
        if pos + 2 > len(value):
            ctx.weird("cdp_bad_address", f"address record {number + 1} of {count} missing")
            break
        protocol_type, protocol_len = value[pos], value[pos + 1]
        protocol = value[pos + 2 : pos + 2 + protocol_len]
        pos += 2 + protocol_len
        if len(protocol) < protocol_len or pos + 2 > len(value):
            ctx.weird("cdp_bad_address", f"address record {number + 1} truncated")
            break
        (address_len,) = struct.unpack_from(">H", value, pos)
        raw = value[pos + 2 : pos + 2 + address_len]
        pos += 2 + address_len
        if len(raw) < address_len:
            ctx.weird("cdp_bad_address", f"address record {number + 1} truncated")
            break
        if len(out) < MAX_ADDRESSES:
            out.append(_address(protocol_type, protocol, raw))
    return out


class CdpDissector(LinkDissector):
    name = "cdp"
    description = "Cisco Discovery Protocol (LLC/SNAP 00-00-0C 0x2000)"
    snap = frozenset({(OUI_CISCO, PID_CDP)})
    event_types = (CdpEvent,)

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        if len(pdu) < HEADER.size:
            ctx.weird("cdp_truncated_header", f"{len(pdu)} bytes")
            return
        version, ttl, checksum = HEADER.unpack_from(pdu)
        if version not in (1, 2):
            ctx.weird("cdp_bad_version", f"version {version}")
            return
        valid = checksum_ok(pdu)
        if not valid:
            ctx.weird("cdp_bad_checksum", f"checksum 0x{checksum:04x} does not match")
        out = _Fields()
        pos = HEADER.size
        while pos < len(pdu):
            if pos + TLV.size > len(pdu):
                ctx.weird("cdp_truncated_tlv", f"{len(pdu) - pos} bytes left at offset {pos}")
                break
            kind, length = TLV.unpack_from(pdu, pos)
            if length < TLV.size or pos + length > len(pdu):
                ctx.weird("cdp_truncated_tlv", f"TLV 0x{kind:04x} length {length}, {len(pdu) - pos} left")
                break
            self._tlv(kind, pdu[pos + TLV.size : pos + length], out, ctx)
            pos += length
        ctx.emit(
            CdpEvent(
                **ctx.where_link(),
                version=version,
                ttl=ttl,
                checksum=checksum,
                checksum_ok=valid,
                device_id=out.device_id,
                addresses=out.addresses,
                port_id=out.port_id,
                capabilities=out.capabilities,
                software_version=out.software_version,
                platform=out.platform,
                vtp_management_domain=out.vtp_management_domain,
                native_vlan=out.native_vlan,
                duplex=out.duplex,
                voice_vlan=out.voice_vlan,
                system_name=out.system_name,
                management_addresses=out.management_addresses,
                other_tlvs=out.other_tlvs,
            )
        )

    @staticmethod
    def _tlv(kind: int, value: bytes, out: _Fields, ctx: PduContext) -> None:
        attribute = TEXT_TLVS.get(kind)
        if attribute is not None:
            setattr(out, attribute, _text(value))
        elif kind == TLV_ADDRESSES:
            out.addresses = parse_addresses(value, ctx)
        elif kind == TLV_MANAGEMENT_ADDRESSES:
            out.management_addresses = parse_addresses(value, ctx)
        elif kind == TLV_CAPABILITIES:
            if len(value) != 4:
                ctx.weird("cdp_bad_tlv_length", f"capabilities TLV of {len(value)} bytes, 4 expected")
                return
            out.capabilities = capability_names(int.from_bytes(value, "big"))
        elif kind == TLV_NATIVE_VLAN:
            if len(value) != 2:
                ctx.weird("cdp_bad_tlv_length", f"native VLAN TLV of {len(value)} bytes, 2 expected")
                return
            out.native_vlan = int.from_bytes(value, "big")
        elif kind == TLV_DUPLEX:
            if len(value) != 1:
                ctx.weird("cdp_bad_tlv_length", f"duplex TLV of {len(value)} bytes, 1 expected")
                return
            out.duplex = "full" if value[0] else "half"
        elif kind == TLV_VOICE_VLAN:
            if len(value) < 3:
                ctx.weird("cdp_bad_tlv_length", f"VoIP VLAN reply TLV of {len(value)} bytes, 3 expected")
                return
            out.voice_vlan = int.from_bytes(value[1:3], "big")
        else:
            out.other_tlvs += 1
