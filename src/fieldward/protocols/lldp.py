"""LLDP dissector: every LLDPDU (IEEE 802.1AB) becomes one ``lldp`` event.

An LLDPDU is the payload of an Ethernet frame with EtherType 0x88CC: a sequence of TLVs, each with a
7-bit type and a 9-bit length (IEEE 802.1AB-2016, clause 8.4). The mandatory Chassis ID (type 1),
Port ID (2) and Time To Live (3) TLVs come first, in that order; the optional ones decoded here are
Port Description (4), System Name (5), System Description (6), System Capabilities (7: supported and
enabled capability bit maps, table 8-4) and Management Address (8: address string length, IANA address
family subtype, address, interface numbering subtype and number, OID). Organizationally specific TLVs
(127: OUI + subtype + information) are counted and their OUIs listed; of them the IEEE 802.1 Port VLAN
ID (OUI 00-80-C2, subtype 1, IEEE 802.1Q annex D) is decoded. End Of LLDPDU (0) ends the TLVs; anything
after it is Ethernet padding. Reserved types 9-126 are counted as unknown TLVs.

Chassis and port ids are rendered by subtype (802.1AB tables 8-2, 8-3): MAC address subtypes as
``aa:bb:cc:dd:ee:ff``, network address subtypes (IANA family 1 IPv4, 2 IPv6) as IP addresses, the
textual subtypes (interface alias/name, locally assigned, agent circuit id, chassis/port component)
as text when printable, else as hex; the same rules as Wireshark's ``lldp.chassis.id*`` and
``lldp.port.id*`` fields.

Frames are selected by EtherType 0x88CC (also VLAN-tagged) by the engine; LLDP has no flow and the
event's ``orig_h``/``resp_h`` are the frame's source and destination MAC (see docs/plugins.md).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from fieldward.protocols.base import LinkDissector, LinkEvent, PduContext

ETH_LLDP = 0x88CC

TLV_END = 0
TLV_CHASSIS_ID = 1
TLV_PORT_ID = 2
TLV_TTL = 3
TLV_PORT_DESCRIPTION = 4
TLV_SYSTEM_NAME = 5
TLV_SYSTEM_DESCRIPTION = 6
TLV_SYSTEM_CAPABILITIES = 7
TLV_MANAGEMENT_ADDRESS = 8
TLV_ORG = 127
SINGLE_TLVS = frozenset(range(1, 8))
"""TLV types an LLDPDU carries at most once (802.1AB 8.2)."""

CHASSIS_MAC = 4
CHASSIS_NETWORK = 5
PORT_MAC = 3
PORT_NETWORK = 4

CAPABILITY_NAMES: tuple[str, ...] = (
    "other",
    "repeater",
    "bridge",
    "wlan_access_point",
    "router",
    "telephone",
    "docsis_cable_device",
    "station_only",
    "cvlan_component",
    "svlan_component",
    "two_port_mac_relay",
)
"""System capability bits 0..10 (802.1AB-2016 table 8-4)."""

OUI_IEEE_8021 = 0x0080C2
SUBTYPE_PORT_VLAN_ID = 1
MAX_LIST = 64
"""Management addresses / OUIs kept per LLDPDU."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LldpEvent(LinkEvent):
    """One LLDPDU (events/lldp.parquet)."""

    log: ClassVar[str] = "lldp"

    chassis_id_subtype: int | None
    chassis_id: str | None
    port_id_subtype: int | None
    port_id: str | None
    ttl: int | None
    port_description: str | None
    system_name: str | None
    system_description: str | None
    system_capabilities: list[str]
    enabled_capabilities: list[str]
    management_addresses: list[str]
    port_vlan_id: int | None
    org_tlvs: int
    org_ouis: list[str]
    unknown_tlvs: int


@dataclass(slots=True)
class _Fields:
    chassis_id_subtype: int | None = None
    chassis_id: str | None = None
    port_id_subtype: int | None = None
    port_id: str | None = None
    ttl: int | None = None
    port_description: str | None = None
    system_name: str | None = None
    system_description: str | None = None
    system_capabilities: list[str] = field(default_factory=list)
    enabled_capabilities: list[str] = field(default_factory=list)
    management_addresses: list[str] = field(default_factory=list)
    port_vlan_id: int | None = None
    org_tlvs: int = 0
    org_ouis: list[str] = field(default_factory=list)
    unknown_tlvs: int = 0


def capability_names(bits: int) -> list[str]:
    return [name for i, name in enumerate(CAPABILITY_NAMES) if bits >> i & 1]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _hex(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _printable(raw: bytes) -> bool:
    return all(0x20 <= b < 0x7F for b in raw)


def network_address(raw: bytes) -> str:
    """An IANA address-family-prefixed address (802.1AB network address subtypes) as text."""
    if len(raw) == 5 and raw[0] == 1:
        return str(ipaddress.IPv4Address(raw[1:]))
    if len(raw) == 17 and raw[0] == 2:
        return str(ipaddress.IPv6Address(raw[1:]))
    return _hex(raw)


def _identifier(subtype: int, raw: bytes, mac_subtype: int, network_subtype: int) -> str:
    if subtype == mac_subtype and len(raw) == 6:
        return _hex(raw)
    if subtype == network_subtype:
        return network_address(raw)
    return raw.decode("ascii") if _printable(raw) else _hex(raw)


class LldpDissector(LinkDissector):
    name = "lldp"
    description = "Link Layer Discovery Protocol (IEEE 802.1AB)"
    ethertypes = frozenset({ETH_LLDP})
    event_types = (LldpEvent,)

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        out = _Fields()
        seen: set[int] = set()
        pos = 0
        count = 0
        misordered = False
        truncated = False
        while pos < len(pdu):
            truncated = True
            if pos + 2 > len(pdu):
                ctx.weird("lldp_truncated_tlv", f"1 byte left at offset {pos}")
                break
            (head,) = struct.unpack_from(">H", pdu, pos)
            kind, length = head >> 9, head & 0x1FF
            value = pdu[pos + 2 : pos + 2 + length]
            if len(value) < length:
                ctx.weird("lldp_truncated_tlv", f"TLV type {kind} length {length}, {len(value)} bytes left")
                break
            truncated = False
            pos += 2 + length
            if kind == TLV_END:
                break
            misordered = misordered or (count < 3 and kind != count + 1)
            count += 1
            if kind in SINGLE_TLVS:
                if kind in seen:
                    ctx.weird("lldp_duplicate_tlv", f"TLV type {kind} repeated")
                    continue
                seen.add(kind)
            self._tlv(kind, value, out, ctx)
        if count == 0:
            if not truncated:
                ctx.weird("lldp_empty", "no TLV before the end of the LLDPDU")
            return
        missing = [t for t in (TLV_CHASSIS_ID, TLV_PORT_ID, TLV_TTL) if t not in seen]
        if missing or misordered:
            detail = f"TLV types {missing} missing" if missing else "chassis id, port id, TTL not first"
            ctx.weird("lldp_missing_mandatory_tlv", detail)
        ctx.emit(
            LldpEvent(
                **ctx.where_link(),
                chassis_id_subtype=out.chassis_id_subtype,
                chassis_id=out.chassis_id,
                port_id_subtype=out.port_id_subtype,
                port_id=out.port_id,
                ttl=out.ttl,
                port_description=out.port_description,
                system_name=out.system_name,
                system_description=out.system_description,
                system_capabilities=out.system_capabilities,
                enabled_capabilities=out.enabled_capabilities,
                management_addresses=out.management_addresses,
                port_vlan_id=out.port_vlan_id,
                org_tlvs=out.org_tlvs,
                org_ouis=out.org_ouis,
                unknown_tlvs=out.unknown_tlvs,
            )
        )

    @staticmethod
    def _tlv(kind: int, value: bytes, out: _Fields, ctx: PduContext) -> None:
        if kind in (TLV_CHASSIS_ID, TLV_PORT_ID):
            if not 2 <= len(value) <= 256:
                ctx.weird("lldp_bad_tlv_length", f"TLV type {kind} length {len(value)}, 2..256 allowed")
                return
            subtype, raw = value[0], value[1:]
            if kind == TLV_CHASSIS_ID:
                out.chassis_id_subtype = subtype
                out.chassis_id = _identifier(subtype, raw, CHASSIS_MAC, CHASSIS_NETWORK)
            else:
                out.port_id_subtype = subtype
                out.port_id = _identifier(subtype, raw, PORT_MAC, PORT_NETWORK)
        elif kind == TLV_TTL:
            if len(value) < 2:
                ctx.weird("lldp_bad_tlv_length", f"TTL TLV length {len(value)}, 2 expected")
                return
            (out.ttl,) = struct.unpack_from(">H", value)
        elif kind == TLV_PORT_DESCRIPTION:
            out.port_description = _text(value)
        elif kind == TLV_SYSTEM_NAME:
            out.system_name = _text(value)
        elif kind == TLV_SYSTEM_DESCRIPTION:
            out.system_description = _text(value)
        elif kind == TLV_SYSTEM_CAPABILITIES:
            if len(value) != 4:
                ctx.weird("lldp_bad_tlv_length", f"system capabilities TLV length {len(value)}, 4 expected")
                return
            caps, enabled = struct.unpack_from(">HH", value)
            out.system_capabilities = capability_names(caps)
            out.enabled_capabilities = capability_names(enabled)
        elif kind == TLV_MANAGEMENT_ADDRESS:
            LldpDissector._management_address(value, out, ctx)
        elif kind == TLV_ORG:
            if len(value) < 4:
                ctx.weird("lldp_bad_tlv_length", f"organizationally specific TLV length {len(value)}")
                return
            out.org_tlvs += 1
            oui = int.from_bytes(value[:3], "big")
            name = _hex(value[:3])
            if name not in out.org_ouis and len(out.org_ouis) < MAX_LIST:
                out.org_ouis.append(name)
            if oui == OUI_IEEE_8021 and value[3] == SUBTYPE_PORT_VLAN_ID:
                if len(value) != 6:
                    ctx.weird("lldp_bad_tlv_length", f"port VLAN ID TLV length {len(value)}, 6 expected")
                    return
                (out.port_vlan_id,) = struct.unpack_from(">H", value, 4)
        else:
            out.unknown_tlvs += 1

    @staticmethod
    def _management_address(value: bytes, out: _Fields, ctx: PduContext) -> None:
        # address string length (1) | subtype (1) + address | if subtype (1) | if number (4) | OID len (1)
        if len(value) < 9 or not 2 <= value[0] <= 32 or len(value) < 1 + value[0] + 6:
            ctx.weird("lldp_bad_management_address", f"management address TLV of {len(value)} bytes")
            return
        size = value[0]
        oid_len = value[1 + size + 5]
        if len(value) != 1 + size + 6 + oid_len:
            ctx.weird("lldp_bad_management_address", f"OID length {oid_len} does not fit the TLV")
            return
        raw = value[1 : 1 + size]
        # IANA address family 6 is "802" (a MAC address).
        address = _hex(raw[1:]) if raw[0] == 6 and len(raw) == 7 else network_address(raw)
        if len(out.management_addresses) < MAX_LIST:
            out.management_addresses.append(address)
