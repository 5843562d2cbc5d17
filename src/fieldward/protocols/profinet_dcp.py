"""PROFINET DCP dissector: every Discovery and Configuration Protocol PDU becomes one ``profinet_dcp`` event.

PROFINET real-time frames have EtherType 0x8892 (usually behind an 802.1Q priority tag) and start
with a 2-byte FrameID; DCP uses FrameIDs 0xFEFC (Hello), 0xFEFD (Get/Set), 0xFEFE (Identify request,
multicast) and 0xFEFF (Identify response) (IEC 61158-6-10, clause 4.3). Only those frames are taken:
the engine selects EtherType 0x8892 and :meth:`ProfinetDcpDissector.match_frames` keeps, vectorized,
the DCP FrameIDs, so cyclic real-time data never reaches Python.

The DCP header (IEC 61158-6-10 4.3.1) is ServiceID (3 Get, 4 Set, 5 Identify, 6 Hello), ServiceType
(0 request, 1 response success, 5 response "request not supported"), Xid, ResponseDelay (Identify
requests; reserved otherwise) and DCPDataLength, followed by blocks of Option, Suboption,
DCPBlockLength and data, each padded to an even length. Blocks carry a 2-byte BlockInfo first in
Identify and Get responses and in Hello requests, and a 2-byte BlockQualifier first in Set requests
(as Wireshark's ``packet-pn-dcp.c``); a Get request lists Option/Suboption pairs only. Decoded block
contents:

- IP: MAC address (1/1), IP parameter (1/2: address, subnet mask, standard gateway; BlockInfo says
  how the address was set), full IP suite (1/3: the same plus four DNS servers);
- device properties: DeviceVendorValue (2/1, the manufacturer-specific type of station),
  NameOfStation (2/2), DeviceID (2/3: vendor id and device id), DeviceRole (2/4), DeviceOptions (2/5:
  the option/suboption pairs the device supports), AliasName (2/6), DeviceInstance (2/7);
- control: Signal (5/3: the signal value, "flash the LED"), Response (5/4: the option and suboption
  answered and the BlockError), and Start/Stop/FactoryReset/ResetToFactory (named in ``blocks``);
- DeviceInitiative (6/1).

Every block's Option/Suboption is listed by name in ``blocks``; Set requests (which rename devices or
change their IP) and reset requests are therefore visible as facts. Frames belong to no flow; the
event's ``orig_h``/``resp_h`` are the frame's source and destination MAC (see docs/plugins.md).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from fieldward.protocols.base import LinkDissector, LinkEvent, PduContext

ETH_PROFINET = 0x8892
FRAME_HELLO = 0xFEFC
FRAME_GET_SET = 0xFEFD
FRAME_IDENTIFY_REQUEST = 0xFEFE
FRAME_IDENTIFY_RESPONSE = 0xFEFF
HEADER = struct.Struct(">HBBIHH")
"""FrameID, ServiceID, ServiceType, Xid, ResponseDelay (or reserved), DCPDataLength."""
BLOCK = struct.Struct(">BBH")
"""Option, Suboption, DCPBlockLength."""

SERVICE_GET = 3
SERVICE_SET = 4
SERVICE_IDENTIFY = 5
SERVICE_HELLO = 6
SERVICE_NAMES: dict[int, str] = {
    SERVICE_GET: "get",
    SERVICE_SET: "set",
    SERVICE_IDENTIFY: "identify",
    SERVICE_HELLO: "hello",
}
SERVICE_TYPE_NAMES: dict[int, str] = {0: "request", 1: "response_success", 5: "response_unsupported"}

OPT_IP = 1
OPT_DEVICE = 2
OPT_DHCP = 3
OPT_CONTROL = 5
OPT_INITIATIVE = 6
OPT_ALL = 0xFF

OPTION_NAMES: dict[int, str] = {
    OPT_IP: "IP",
    OPT_DEVICE: "DeviceProperties",
    OPT_DHCP: "DHCP",
    OPT_CONTROL: "Control",
    OPT_INITIATIVE: "DeviceInitiative",
    7: "NMEDomain",
    OPT_ALL: "All",
}
SUBOPTION_NAMES: dict[int, dict[int, str]] = {
    OPT_IP: {1: "MACAddress", 2: "IPParameter", 3: "FullIPSuite"},
    OPT_DEVICE: {
        1: "DeviceVendor",
        2: "NameOfStation",
        3: "DeviceID",
        4: "DeviceRole",
        5: "DeviceOptions",
        6: "AliasName",
        7: "DeviceInstance",
        8: "OEMDeviceID",
        9: "StandardGateway",
        10: "RSIProperties",
    },
    OPT_DHCP: {
        12: "HostName",
        43: "VendorSpecific",
        54: "ServerIdentifier",
        55: "ParameterRequestList",
        60: "ClassIdentifier",
        61: "ClientIdentifier",
        81: "FQDN",
        97: "UUIDClientIdentifier",
        255: "Control",
    },
    OPT_CONTROL: {1: "Start", 2: "Stop", 3: "Signal", 4: "Response", 5: "FactoryReset", 6: "ResetToFactory"},
    OPT_INITIATIVE: {1: "DeviceInitiative"},
    OPT_ALL: {0xFF: "All"},
}
"""Option and suboption names (IEC 61158-6-10 tables "Option" and "Suboption")."""

ROLE_NAMES: tuple[str, ...] = ("io_device", "io_controller", "io_multidevice", "pn_supervisor")
"""DeviceRoleDetails bits 0..3."""
MAX_LIST = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfinetDcpEvent(LinkEvent):
    """One DCP PDU (events/profinet_dcp.parquet)."""

    log: ClassVar[str] = "profinet_dcp"

    frame_id: int
    service_id: int
    service: str
    service_type: int
    service_type_name: str
    xid: int
    response_delay: int | None
    blocks: list[str]
    block_qualifier: int | None
    name_of_station: str | None
    alias_name: str | None
    device_vendor_value: str | None
    vendor_id: int | None
    device_id: int | None
    device_role: int | None
    device_roles: list[str]
    device_instance: int | None
    device_options: list[str]
    mac_address: str | None
    ip_block_info: int | None
    ip_address: str | None
    subnet_mask: str | None
    gateway: str | None
    dns_servers: list[str]
    signal_value: int | None
    responses: list[str]
    block_errors: list[int]
    device_initiative: int | None


@dataclass(slots=True)
class _Fields:
    blocks: list[str] = field(default_factory=list)
    block_qualifier: int | None = None
    name_of_station: str | None = None
    alias_name: str | None = None
    device_vendor_value: str | None = None
    vendor_id: int | None = None
    device_id: int | None = None
    device_role: int | None = None
    device_instance: int | None = None
    device_options: list[str] = field(default_factory=list)
    mac_address: str | None = None
    ip_block_info: int | None = None
    ip_address: str | None = None
    subnet_mask: str | None = None
    gateway: str | None = None
    dns_servers: list[str] = field(default_factory=list)
    signal_value: int | None = None
    responses: list[str] = field(default_factory=list)
    block_errors: list[int] = field(default_factory=list)
    device_initiative: int | None = None


def block_name(option: int, suboption: int) -> str:
    """``Option/Suboption`` by name, e.g. ``DeviceProperties/NameOfStation``; numbers when unknown."""
    opt = OPTION_NAMES.get(option, f"option-{option}")
    sub = SUBOPTION_NAMES.get(option, {}).get(suboption, f"suboption-{suboption}")
    return f"{opt}/{sub}"


def service_name(service_id: int) -> str:
    return SERVICE_NAMES.get(service_id, f"unknown-{service_id}")


def service_type_name(service_type: int) -> str:
    return SERVICE_TYPE_NAMES.get(service_type, f"unknown-{service_type}")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _ipv4(raw: bytes, at: int) -> str:
    return str(ipaddress.IPv4Address(raw[at : at + 4]))


class ProfinetDcpDissector(LinkDissector):
    name = "profinet_dcp"
    description = "PROFINET Discovery and Configuration Protocol (IEC 61158-6-10)"
    ethertypes = frozenset({ETH_PROFINET})
    event_types = (ProfinetDcpEvent,)

    @classmethod
    def match_frames(
        cls, heads: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int32]
    ) -> npt.NDArray[np.bool_] | None:
        """Keep the DCP FrameIDs 0xFEFC..0xFEFF; cyclic RT and alarm frames stay out of Python."""
        dcp: npt.NDArray[np.bool_] = (heads[:, 0] == 0xFE) & (heads[:, 1] >= 0xFC) & (lengths >= 2)
        return dcp

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        if len(pdu) < HEADER.size:
            ctx.weird("profinet_dcp_truncated_header", f"{len(pdu)} bytes, header needs {HEADER.size}")
            return
        frame_id, service_id, service_type, xid, delay, data_length = HEADER.unpack_from(pdu)
        data = pdu[HEADER.size : HEADER.size + data_length]
        if len(data) < data_length:
            ctx.weird(
                "profinet_dcp_bad_data_length", f"DCPDataLength {data_length}, {len(data)} bytes present"
            )
        response = bool(service_type & 0x01)
        out = _Fields()
        if service_id == SERVICE_GET and not response:
            self._get_request(data, out, ctx)
        else:
            has_info = (
                (service_id == SERVICE_IDENTIFY and response)
                or (service_id == SERVICE_HELLO and not response)
                or (service_id == SERVICE_GET and response)
            )
            has_qualifier = service_id == SERVICE_SET and not response
            self._blocks(data, has_info, has_qualifier, out, ctx)
        identify_request = service_id == SERVICE_IDENTIFY and not response
        ctx.emit(
            ProfinetDcpEvent(
                **ctx.where_link(),
                frame_id=frame_id,
                service_id=service_id,
                service=service_name(service_id),
                service_type=service_type,
                service_type_name=service_type_name(service_type),
                xid=xid,
                response_delay=delay if identify_request else None,
                blocks=out.blocks,
                block_qualifier=out.block_qualifier,
                name_of_station=out.name_of_station,
                alias_name=out.alias_name,
                device_vendor_value=out.device_vendor_value,
                vendor_id=out.vendor_id,
                device_id=out.device_id,
                device_role=out.device_role,
                device_roles=[n for i, n in enumerate(ROLE_NAMES) if (out.device_role or 0) >> i & 1],
                device_instance=out.device_instance,
                device_options=out.device_options,
                mac_address=out.mac_address,
                ip_block_info=out.ip_block_info,
                ip_address=out.ip_address,
                subnet_mask=out.subnet_mask,
                gateway=out.gateway,
                dns_servers=out.dns_servers,
                signal_value=out.signal_value,
                responses=out.responses,
                block_errors=out.block_errors,
                device_initiative=out.device_initiative,
            )
        )

    @staticmethod
    def _get_request(data: bytes, out: _Fields, ctx: PduContext) -> None:
        if len(data) % 2:
            ctx.weird("profinet_dcp_truncated_block", "odd byte in a Get request's option list")
        for pos in range(0, len(data) - 1, 2):
            if len(out.blocks) < MAX_LIST:
                out.blocks.append(block_name(data[pos], data[pos + 1]))

    def _blocks(
        self, data: bytes, has_info: bool, has_qualifier: bool, out: _Fields, ctx: PduContext
    ) -> None:
        pos = 0
        while pos < len(data):
            if pos + BLOCK.size > len(data):
                ctx.weird("profinet_dcp_truncated_block", f"{len(data) - pos} bytes left at offset {pos}")
                return
            option, suboption, length = BLOCK.unpack_from(data, pos)
            value = data[pos + BLOCK.size : pos + BLOCK.size + length]
            if len(value) < length:
                ctx.weird(
                    "profinet_dcp_truncated_block",
                    f"{block_name(option, suboption)} length {length}, {len(value)} bytes left",
                )
                return
            pos += BLOCK.size + length + (length & 1)
            if len(out.blocks) < MAX_LIST:
                out.blocks.append(block_name(option, suboption))
            control_response = option == OPT_CONTROL and suboption == 4
            if (has_info or has_qualifier) and not control_response:
                if len(value) < 2:
                    ctx.weird(
                        "profinet_dcp_bad_block_length", f"{block_name(option, suboption)} length {length}"
                    )
                    continue
                prefix = int.from_bytes(value[:2], "big")
                if has_qualifier and out.block_qualifier is None:
                    out.block_qualifier = prefix
                info = prefix if has_info else None
                value = value[2:]
            else:
                info = None
            self._block(option, suboption, value, info, out, ctx)

    @staticmethod
    def _block(
        option: int, suboption: int, value: bytes, info: int | None, out: _Fields, ctx: PduContext
    ) -> None:
        need = {
            (OPT_IP, 1): 6,
            (OPT_IP, 2): 12,
            (OPT_IP, 3): 28,
            (OPT_DEVICE, 3): 4,
            (OPT_DEVICE, 4): 1,
            (OPT_DEVICE, 7): 2,
            (OPT_CONTROL, 3): 2,
            (OPT_CONTROL, 4): 3,
            (OPT_INITIATIVE, 1): 2,
        }.get((option, suboption), 0)
        if len(value) < need:
            name = block_name(option, suboption)
            ctx.weird("profinet_dcp_bad_block_length", f"{name}: {len(value)} data bytes, {need} needed")
            return
        if option == OPT_IP:
            if suboption == 1:
                out.mac_address = ":".join(f"{b:02x}" for b in value[:6])
            elif suboption in (2, 3):
                out.ip_block_info = info
                out.ip_address, out.subnet_mask, out.gateway = (
                    _ipv4(value, 0),
                    _ipv4(value, 4),
                    _ipv4(value, 8),
                )
                if suboption == 3:
                    out.dns_servers = [_ipv4(value, at) for at in (12, 16, 20, 24)]
        elif option == OPT_DEVICE:
            if suboption == 1:
                out.device_vendor_value = _text(value)
            elif suboption == 2:
                out.name_of_station = _text(value)
            elif suboption == 3:
                out.vendor_id, out.device_id = struct.unpack_from(">HH", value)
            elif suboption == 4:
                out.device_role = value[0]
            elif suboption == 5:
                out.device_options = [
                    block_name(value[i], value[i + 1]) for i in range(0, len(value) - 1, 2)
                ][:MAX_LIST]
            elif suboption == 6:
                out.alias_name = _text(value)
            elif suboption == 7:
                out.device_instance = int.from_bytes(value[:2], "big")
        elif option == OPT_CONTROL:
            if suboption == 3:
                out.signal_value = int.from_bytes(value[:2], "big")
            elif suboption == 4 and len(out.responses) < MAX_LIST:
                out.responses.append(block_name(value[0], value[1]))
                out.block_errors.append(value[2])
        elif option == OPT_INITIATIVE and suboption == 1:
            out.device_initiative = int.from_bytes(value[:2], "big")
