"""EtherNet/IP encapsulation and CIP (Common Industrial Protocol) dissector.

What is dissected (ODVA, *The CIP Networks Library*: Volume 1 "CIP Common Specification" and
Volume 2 "EtherNet/IP Adaptation of CIP"):

- **Encapsulation** over TCP and UDP 44818 (Vol 2 ch. 2-3, 2-4): the 24-byte header (command, length,
  session handle, status, sender context, options) of every message, the command-specific data of
  SendRRData / SendUnitData (interface handle, timeout) and RegisterSession (protocol version), and the
  **Common Packet Format** items (Vol 2 2-6) of every command that carries them. Log ``enip``.
- **ListIdentity replies** (Vol 2 2-4.3): each CIP Identity item (encapsulation version, socket
  address, vendor, device type, product code, revision, status, serial number, product name, state).
  Log ``cip_identity``. ListServices replies (Vol 2 2-4.6) fill the service fields of ``enip``.
- **CIP explicit messages** carried in Unconnected Data items (SendRRData) and Connected Data items
  (SendUnitData, with their CIP sequence count): service code and name, request/response, general
  status and additional (extended) status (Vol 1 2-4, Appendix A, Appendix B), the request path as an
  EPATH (Vol 1 Appendix C: port, logical, network, symbolic and data segments) with class, instance and
  attribute. Multiple Service Packet requests and replies (Vol 1 A-4.10) and Connection Manager
  Unconnected Send requests (Vol 1 3-5.5.4) are unpacked: each embedded service is a row of its own.
  Reset (0x05) carries its reset type. Log ``cip``.
- **Connection Manager** Forward Open, Large Forward Open and Forward Close requests and replies
  (Vol 1 3-5.5.1 to 3-5.5.3): connection IDs, connection serial number, originator vendor and serial,
  RPIs and network connection parameters, transport class and trigger, connection path, actual packet
  intervals. Log ``cip_connection``.
- **Implicit (I/O) messages** over UDP 2222 (Vol 2 3-2.2): the CPF with a Sequenced Address item
  (connection ID, encapsulation sequence number) and a Connected Data item. Log ``cip_io``.

Field names and name tables follow CISA ICSNPP-ENIP (BSD-3-Clause) so that its logs compare field by
field; codes are stored as integers (ICSNPP prints them in hex). Vendor names come from the ODVA vendor
registry in ``data/cip_vendors.tsv``. Responses carry no request path: the service of a reply is named
from the request it answers (matched by sender context for SendRRData, by CIP sequence count for
SendUnitData), which decides the name of object-specific services (0x4B-0x63) such as Forward Open.

Malformed input never raises: every length is checked before it is read, loops and counts are capped,
and what cannot be understood is reported as an ``enip_*`` weird. Dissectors report facts only.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from ipaddress import IPv4Address
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from fieldward.protocols.base import (
    BatchResult,
    Datagrams,
    Dissector,
    Event,
    EventColumns,
    FlowInfo,
    HeaderField,
    LengthFraming,
    PduContext,
    Transport,
    Verdict,
    binary_array,
)

# ---------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class EnipHeader(Event):
    """One encapsulation message (events/enip.parquet; ICSNPP enip.log)."""

    log: ClassVar[str] = "enip"

    enip_command_code: int
    enip_command: str
    length: int
    session_handle: int
    enip_status_code: int
    enip_status: str
    sender_context: bytes
    options: int
    interface_handle: int | None
    timeout: int | None
    cpf_item_types: list[int]
    protocol_version: int | None
    capability_flags: int | None
    service_name: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CipHeader(Event):
    """One CIP request or response, embedded services included (events/cip.parquet; ICSNPP cip.log)."""

    log: ClassVar[str] = "cip"

    cip_sequence_count: int | None
    connection_id: int | None
    direction: str
    cip_service_code: int
    cip_service: str
    cip_status_code: int | None
    cip_status: str | None
    cip_extended_status_code: int | None
    cip_extended_status: str | None
    class_id: int | None
    class_name: str | None
    instance_id: int | None
    attribute_id: int | None
    request_path: str | None
    route_path: str | None
    parent_service_code: int | None
    reset_type: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CipIO(Event):
    """One implicit (I/O) message over UDP (events/cip_io.parquet; ICSNPP cip_io.log)."""

    log: ClassVar[str] = "cip_io"

    connection_id: int
    sequence_number: int
    data_length: int
    io_data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CipIdentity(Event):
    """One CIP Identity item of a ListIdentity reply (events/cip_identity.parquet; ICSNPP
    cip_identity.log)."""

    log: ClassVar[str] = "cip_identity"

    encapsulation_version: int
    socket_address: str
    socket_port: int
    vendor_id: int
    vendor_name: str
    device_type_id: int
    device_type_name: str
    product_code: int
    revision: str
    device_status: int
    serial_number: int
    product_name: str
    device_state: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CipConnection(Event):
    """A Forward Open, Large Forward Open or Forward Close request or reply (cip_connection.parquet)."""

    log: ClassVar[str] = "cip_connection"

    cip_sequence_count: int | None
    direction: str
    cip_service_code: int
    cip_service: str
    cip_status_code: int | None
    cip_extended_status_code: int | None
    priority_time_tick: int | None
    timeout_ticks: int | None
    ot_connection_id: int | None
    to_connection_id: int | None
    connection_serial_number: int
    originator_vendor_id: int
    originator_vendor_name: str
    originator_serial_number: int
    connection_timeout_multiplier: int | None
    ot_rpi: int | None
    ot_network_connection_parameters: int | None
    ot_connection_size: int | None
    ot_connection_type: str | None
    to_rpi: int | None
    to_network_connection_parameters: int | None
    to_connection_size: int | None
    to_connection_type: str | None
    transport_type_trigger: int | None
    transport_class: int | None
    production_trigger: str | None
    connection_path: str | None
    ot_api: int | None
    to_api: int | None
    remaining_path_size: int | None


# ---------------------------------------------------------------------------------- name tables

NOP, LIST_SERVICES, LIST_IDENTITY, LIST_INTERFACES = 0x00, 0x04, 0x63, 0x64
REGISTER_SESSION, UNREGISTER_SESSION, SEND_RR_DATA, SEND_UNIT_DATA = 0x65, 0x66, 0x6F, 0x70

ENIP_COMMANDS: dict[int, str] = {
    NOP: "NOP",
    LIST_SERVICES: "List Services",
    LIST_IDENTITY: "List Identity",
    LIST_INTERFACES: "List Interfaces",
    REGISTER_SESSION: "Register Session",
    UNREGISTER_SESSION: "Unregister Session",
    SEND_RR_DATA: "Send RR Data",
    SEND_UNIT_DATA: "Send Unit Data",
    0x72: "Indicate Status",
    0x73: "Cancel",
    0xC8: "StartDTLS",
}
"""Vol 2 Table 2-3.2 (names as ICSNPP logs them)."""

UDP_COMMANDS = frozenset({NOP, LIST_SERVICES, LIST_IDENTITY, LIST_INTERFACES})
"""Commands the encapsulation protocol allows over UDP (Vol 2 2-2)."""

ENIP_STATUSES: dict[int, str] = {
    0x00: "Success",
    0x01: "Invalid/Unsupported Command",
    0x02: "Insufficient Memory Resources",
    0x03: "Malformed or Incorrect Data",
    0x64: "Invalid Session Handle",
    0x65: "Invalid Length",
    0x69: "Unsupported Protocol Version",
    0x6A: "CIP Service Not Allowed",
}
"""Vol 2 Table 2-3.3."""

# Common Packet Format item type IDs (Vol 2 Table 2-6.3).
CPF_NULL_ADDRESS = 0x0000
CPF_CIP_IDENTITY = 0x000C
CPF_CONNECTED_ADDRESS = 0x00A1
CPF_CONNECTED_DATA = 0x00B1
CPF_UNCONNECTED_DATA = 0x00B2
CPF_LIST_SERVICES = 0x0100
CPF_SEQUENCED_ADDRESS = 0x8002

COMMON_SERVICES: dict[int, str] = {
    0x01: "Get Attributes All",
    0x02: "Set Attributes All",
    0x03: "Get Attribute List",
    0x04: "Set Attribute List",
    0x05: "Reset",
    0x06: "Start",
    0x07: "Stop",
    0x08: "Create",
    0x09: "Delete",
    0x0A: "Multiple Service Packet",
    0x0D: "Apply Attributes",
    0x0E: "Get Attribute Single",
    0x10: "Set Attribute Single",
    0x11: "Find Next Object Instance",
    0x14: "Error Response",
    0x15: "Restore",
    0x16: "Save",
    0x17: "No Operation",
    0x18: "Get Member",
    0x19: "Set Member",
    0x1A: "Insert Member",
    0x1B: "Remove Member",
    0x1C: "Group Sync",
    0x1D: "Get Connection Point Member List",
}
"""Vol 1 Table A-3.1: services with the same meaning in every object class."""

MULTIPLE_SERVICE_PACKET, RESET = 0x0A, 0x05
FORWARD_CLOSE, UNCONNECTED_SEND, FORWARD_OPEN, LARGE_FORWARD_OPEN = 0x4E, 0x52, 0x54, 0x5B
CONNECTION_MANAGER = 0x06
SYMBOLIC = -1
"""Class key of a request addressed by a symbolic segment (a tag name) rather than a class."""

CLASS_SERVICES: dict[int, dict[int, str]] = {
    CONNECTION_MANAGER: {  # Vol 1 Table 3-5.10
        FORWARD_CLOSE: "Forward Close",
        UNCONNECTED_SEND: "Unconnected Send",
        FORWARD_OPEN: "Forward Open",
        0x56: "Get Connection Data",
        0x57: "Search Connection Data",
        0x5A: "Get Connection Owner",
        LARGE_FORWARD_OPEN: "Large Forward Open",
    },
    0x67: {0x4B: "Execute PCCC", 0x4C: "Execute DH+", 0x4D: "Execute Local PCCC"},
    # Tag services of Logix controllers, addressed by symbol (class 0x6B) or by symbolic segment.
    SYMBOLIC: {
        0x4C: "Read Tag",
        0x4D: "Write Tag",
        0x4E: "Read Modify Write Tag",
        0x52: "Read Tag Fragmented",
        0x53: "Write Tag Fragmented",
        0x55: "Get Instance Attribute List",
    },
}
CLASS_SERVICES[0x6B] = CLASS_SERVICES[SYMBOLIC]

UNMATCHED_SERVICES: dict[int, str] = {FORWARD_OPEN: "Forward Open", LARGE_FORWARD_OPEN: "Large Forward Open"}
"""Object-specific codes named even when the request they answer was not seen (no other class uses them)."""

CIP_CLASSES: dict[int, str] = {
    0x01: "Identity",
    0x02: "Message Router",
    0x03: "DeviceNet",
    0x04: "Assembly",
    0x05: "Connection",
    0x06: "Connection Manager",
    0x07: "Register",
    0x08: "Discrete Input Point",
    0x09: "Discrete Output Point",
    0x0A: "Analog Input Point",
    0x0B: "Analog Output Point",
    0x0E: "Presence Sensing",
    0x0F: "Parameter",
    0x10: "Parameter Group",
    0x12: "Group",
    0x1D: "Discrete Input Group",
    0x1E: "Discrete Output Group",
    0x1F: "Discrete Group",
    0x20: "Analog Input Group",
    0x21: "Analog Output Group",
    0x22: "Analog Group",
    0x23: "Position Sensor",
    0x24: "Position Controller Supervisor",
    0x25: "Position Controller",
    0x26: "Block Sequencer",
    0x27: "Command Block",
    0x28: "Motor Data",
    0x29: "Control Supervisor",
    0x2A: "AC/DC Drive",
    0x2B: "Acknowledge Handler",
    0x2C: "Overload",
    0x2D: "Softstart",
    0x2E: "Selection",
    0x30: "S-Device Supervisor",
    0x31: "S-Analog Sensor",
    0x32: "S-Analog Actuator",
    0x33: "S-Single Stage Controller",
    0x34: "S-Gas Calibration",
    0x35: "Trip Point",
    0x37: "File",
    0x38: "S-Partial Pressure",
    0x39: "Safety Supervisor",
    0x3A: "Safety Validator",
    0x3B: "Safety Discrete Output Point",
    0x3C: "Safety Discrete Output Group",
    0x3D: "Safety Discrete Input Point",
    0x3E: "Safety Discrete Input Group",
    0x3F: "Safety Dual Channel Output",
    0x40: "S-Sensor Calibration",
    0x41: "Event Log",
    0x42: "Motion Device Axis",
    0x43: "Time Sync",
    0x44: "Modbus",
    0x45: "Originator Connection List",
    0x46: "Modbus Serial Link",
    0x47: "Device Level Ring (DLR)",
    0x48: "QoS",
    0x49: "Safety Analog Input Point",
    0x4A: "Safety Analog Input Group",
    0x4B: "Safety Dual Channel Analog Input",
    0x4C: "SERCOS III Link",
    0x4D: "Target Connection List",
    0x4E: "Base Energy",
    0x4F: "Electrical Energy",
    0x50: "Non-Electrical Energy",
    0x51: "Base Switch",
    0x52: "SNMP",
    0x53: "Power Management",
    0x54: "RSTP Bridge",
    0x55: "RSTP Port",
    0x56: "PRP/HSR Protocol",
    0x57: "PRP/HSR Nodes Table",
    0x58: "Safety Feedback",
    0x59: "Safety Dual Channel Feedback",
    0x5A: "Safety Stop Functions",
    0x5B: "Safety Limit Functions",
    0x5C: "Power Curtailment",
    0x5D: "CIP Security",
    0x5E: "EtherNet/IP Security",
    0x5F: "Certificate Management",
    0x60: "Authority",
    0x61: "Password Authenticator",
    0x62: "Certificate Authenticator",
    0x67: "PCCC Class",
    0xF0: "ControlNet",
    0xF1: "ControlNet Keeper",
    0xF2: "ControlNet Scheduling",
    0xF3: "Connection Configuration",
    0xF4: "Port",
    0xF5: "TCP/IP Interface",
    0xF6: "Ethernet Link",
    0xF7: "CompoNet",
    0xF8: "CompoNet Repeater",
    0xF9: "HART Master Port",
    0xFA: "I/O Aggregation",
}
"""Vol 1 Table 5-1.1 (publicly defined object classes); vendor-specific classes are ``unknown``."""

CIP_STATUSES: dict[int, str] = {
    0x00: "Success",
    0x01: "Connection Failure",
    0x02: "Resource Unavailable",
    0x03: "Invalid Parameter Value",
    0x04: "Path Segment Error",
    0x05: "Path Destination Unknown",
    0x06: "Partial Transfer",
    0x07: "Connection Lost",
    0x08: "Service Not Supported",
    0x09: "Invalid Attribute Value",
    0x0A: "Attribute List Error",
    0x0B: "Already In Requested Mode/State",
    0x0C: "Object State Conflict",
    0x0D: "Object Already Exists",
    0x0E: "Attribute Not Settable",
    0x0F: "Privilege Violation",
    0x10: "Device State Conflict",
    0x11: "Reply Data Too Large",
    0x12: "Fragmentation Of A Primitive Value",
    0x13: "Not Enough Data",
    0x14: "Attribute Not Supported",
    0x15: "Too Much Data",
    0x16: "Object Does Not Exist",
    0x17: "Service Fragmentation Sequence Not In Progress",
    0x18: "No Stored Attribute Data",
    0x19: "Store Operation Failure",
    0x1A: "Routing Failure, Request Packet Too Large",
    0x1B: "Routing Failure, Response Packet Too Large",
    0x1C: "Missing Attribute List Entry Data",
    0x1D: "Invalid Attribute Value List",
    0x1E: "Embedded Service Error",
    0x1F: "Vendor Specific Error",
    0x20: "Invalid Parameter",
    0x21: "Write-Once Value Or Medium Already Written",
    0x22: "Invalid Reply Received",
    0x23: "Buffer Overflow",
    0x24: "Invalid Message Format",
    0x25: "Key Failure In Path",
    0x26: "Path Size Invalid",
    0x27: "Unexpected Attribute In List",
    0x28: "Invalid Member ID",
    0x29: "Member Not Settable",
    0x2A: "Group 2 Only Server General Failure",
    0x2B: "Unknown Modbus Error",
    0x2C: "Attribute Not Gettable",
}
"""Vol 1 Appendix B, Table B-1.1 (general status codes)."""

CONNECTION_FAILURE = 0x01
CM_EXTENDED_STATUSES: dict[int, str] = {
    0x0100: "Connection in use or duplicate Forward Open",
    0x0103: "Transport class and trigger combination not supported",
    0x0106: "Ownership conflict",
    0x0107: "Target connection not found",
    0x0108: "Invalid network connection parameter",
    0x0109: "Invalid connection size",
    0x0110: "Target for connection not configured",
    0x0111: "RPI not supported",
    0x0112: "RPI value(s) not acceptable",
    0x0113: "Out of connections",
    0x0114: "Vendor ID or product code mismatch",
    0x0115: "Device type mismatch",
    0x0116: "Revision mismatch",
    0x0117: "Invalid produced or consumed application path",
    0x0118: "Invalid or inconsistent configuration application path",
    0x0119: "Non-listen only connection not opened",
    0x011A: "Target object out of connections",
    0x011B: "RPI is smaller than the production inhibit time",
    0x011C: "Transport class not supported",
    0x011D: "Production trigger not supported",
    0x011E: "Direction not supported",
    0x011F: "Invalid O->T Fixed/Variable",
    0x0120: "Invalid T->O Fixed/Variable",
    0x0121: "Invalid O->T Priority",
    0x0122: "Invalid T->O Priority",
    0x0123: "Invalid O->T connection type",
    0x0124: "Invalid T->O connection type",
    0x0125: "Invalid O->T redundant owner",
    0x0126: "Invalid configuration size",
    0x0127: "Invalid O->T size",
    0x0128: "Invalid T->O size",
    0x0129: "Invalid configuration application path",
    0x012A: "Invalid consuming application path",
    0x012B: "Invalid producing application path",
    0x012C: "Configuration symbol does not exist",
    0x012D: "Consuming symbol does not exist",
    0x012E: "Producing symbol does not exist",
    0x012F: "Inconsistent application path combination",
    0x0130: "Inconsistent consume data format",
    0x0131: "Inconsistent produce data format",
    0x0132: "NULL ForwardOpen not supported",
    0x0203: "Connection timed out",
    0x0204: "Unconnected request timed out",
    0x0205: "Parameter error in unconnected request",
    0x0206: "Message too large for UnconnectedSend",
    0x0207: "Unconnected acknowledged without reply",
    0x0301: "No buffer memory available",
    0x0302: "Network bandwidth not available for data",
    0x0303: "No consumed connection ID filter available",
    0x0304: "Not configured to send scheduled priority data",
    0x0305: "Schedule signature mismatch",
    0x0306: "Schedule signature validation not possible",
    0x0311: "Port not available",
    0x0312: "Link address not valid",
    0x0315: "Invalid segment in connection path",
    0x0316: "ForwardClose connection path mismatch",
    0x0317: "Scheduling not specified",
    0x0318: "Link address to self invalid",
    0x0319: "Secondary resources unavailable",
    0x031A: "Rack connection already established",
    0x031B: "Module connection already established",
    0x031C: "Miscellaneous",
    0x031D: "Redundant connection mismatch",
    0x031E: "No more user configurable link consumer resources available in the producing module",
    0x031F: "No more user configurable link consumer resources configured in the producing module",
    0x0800: "Network link offline",
    0x0810: "No target application data available",
    0x0811: "No originator application data available",
    0x0812: "Node address has changed since the network was scheduled",
    0x0813: "Not configured for off-subnet multicast",
    0x0814: "Invalid produce/consume data format",
}
"""Vol 1 Table 3-5.33: extended status of general status 0x01 (Connection failure)."""

DEVICE_TYPES: dict[int, str] = {
    0x00: "Generic Device (deprecated)",
    0x02: "AC Drive",
    0x03: "Motor Overload",
    0x04: "Limit Switch",
    0x05: "Inductive Proximity Switch",
    0x06: "Photoelectric Sensor",
    0x07: "General Purpose Discrete I/O",
    0x09: "Resolver",
    0x0C: "Communications Adapter",
    0x0E: "Programmable Logic Controller",
    0x10: "Position Controller",
    0x13: "DC Drive",
    0x15: "Contactor",
    0x16: "Motor Starter",
    0x17: "Soft Start",
    0x18: "Human-Machine Interface",
    0x1A: "Mass Flow Controller",
    0x1B: "Pneumatic Valve",
    0x1C: "Vacuum Pressure Gauge",
    0x1D: "Process Control Value",
    0x1E: "Residual Gas Analyzer",
    0x1F: "DC Power Generator",
    0x20: "RF Power Generator",
    0x21: "Turbomolecular Vacuum Pump",
    0x22: "Encoder",
    0x23: "Safety Discrete I/O Device",
    0x24: "Fluid Flow Controller",
    0x25: "CIP Motion Drive",
    0x26: "CompoNet Repeater",
    0x27: "Mass Flow Controller, Enhanced",
    0x28: "CIP Modbus Device",
    0x29: "CIP Modbus Translator",
    0x2A: "Safety Analog I/O Device",
    0x2B: "Generic Device (keyable)",
    0x2C: "Managed Ethernet Switch",
    0x2D: "CIP Motion Safety Drive Device",
    0x2E: "Safety Drive Device",
    0x2F: "CIP Motion Encoder",
    0x30: "CIP Motion Converter",
    0x31: "CIP Motion I/O",
    0x32: "ControlNet Physical Layer Component",
    0x33: "Circuit Breaker",
    0x34: "HART Device",
    0x35: "CIP-HART Translator",
    0xC8: "Embedded Component",
}
"""Vol 1 Table 6-7.1 (device profiles)."""

CONNECTION_TYPES = ("null", "multicast", "point-to-point", "reserved")
PRODUCTION_TRIGGERS = {0: "cyclic", 1: "change of state", 2: "application object"}
LOGICAL_TYPES = ("class", "instance", "member", "connection_point", "attribute", "special", "service", "ext")

UNKNOWN = "unknown"


@cache
def _vendors() -> dict[int, str]:
    """The ODVA vendor registry shipped in ``data/cip_vendors.tsv`` (empty when the file is missing)."""
    try:
        text = resources.files("fieldward.protocols").joinpath("data/cip_vendors.tsv").read_text("utf-8")
    except (OSError, ValueError):
        return {}
    table: dict[int, str] = {}
    for line in text.splitlines():
        key, sep, name = line.partition("\t")
        if sep and key.isdigit():
            table[int(key)] = name
    return table


def vendor_name(vendor_id: int) -> str:
    return _vendors().get(vendor_id, UNKNOWN)


def service_name(code: int, class_key: int | None) -> str:
    """Name of service ``code`` (without the reply bit) sent to class ``class_key`` (None: unknown)."""
    if code in COMMON_SERVICES:
        return COMMON_SERVICES[code]
    if class_key is None:
        return UNMATCHED_SERVICES.get(code, UNKNOWN)
    return CLASS_SERVICES.get(class_key, {}).get(code, UNKNOWN)


def extended_status_name(general: int, extended: int | None) -> str | None:
    if extended is None:
        return None
    if general == CONNECTION_FAILURE:
        return CM_EXTENDED_STATUSES.get(extended, UNKNOWN)
    return UNKNOWN


# ----------------------------------------------------------------------------------- structures

HEADER = struct.Struct("<HHII8sI")
"""Encapsulation header: command, length, session handle, status, sender context, options."""
MAX_LENGTH = 0xFFFF - HEADER.size
MAX_CPF_ITEMS = 16
MAX_SERVICES = 256
MAX_DEPTH = 3
MAX_PATH_SEGMENTS = 32
MAX_PENDING = 1024
MAX_EVENTS_PER_PDU = 1024

U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
COMMAND_DATA = struct.Struct("<IHH")  # interface handle, timeout, item count
SEQUENCED_ADDRESS = struct.Struct("<II")
IO_FAST_HEADER = 2 + 4 + SEQUENCED_ADDRESS.size + 4
RR_FAST_MESSAGE = HEADER.size + COMMAND_DATA.size + 8
"""Offset of the CIP message in the common SendRRData layout: encapsulation header, interface handle,
timeout, item count, then a Null Address item header and an Unconnected Data item header."""
RR_FAST_HEAD = RR_FAST_MESSAGE + 6
"""Bytes the TCP fast path reads of every PDU: up to the CIP service, the request path size (or the
reply's reserved byte, general status and additional status size) and the first extended status word."""
RR_FAST_ITEMS = [CPF_NULL_ADDRESS, CPF_UNCONNECTED_DATA]
"""Item count, Sequenced Address item (header + 8 bytes) and Connected Data item header."""
SOCKADDR = struct.Struct(">hH4s8s")
IDENTITY = struct.Struct("<H16sHHHBBHIB")
SERVICE_ITEM = struct.Struct("<HH16s")
FORWARD_OPEN_REQ = struct.Struct("<BBIIHHIB3xIHIHBB")
LARGE_FORWARD_OPEN_REQ = struct.Struct("<BBIIHHIB3xIIIIBB")
FORWARD_CLOSE_REQ = struct.Struct("<BBHHIBx")
FORWARD_OPEN_OK = struct.Struct("<IIHHIIIBx")
CONNECTION_REPLY = struct.Struct("<HHIBx")  # serial, vendor, originator serial, size, reserved


@dataclass(slots=True)
class EPath:
    """A decoded EPATH (Vol 1 Appendix C): the first class/instance/attribute and a text rendering."""

    class_id: int | None = None
    instance_id: int | None = None
    attribute_id: int | None = None
    symbolic: bool = False
    text: str = ""
    error: str | None = None

    @property
    def class_key(self) -> int | None:
        if self.class_id is not None:
            return self.class_id
        return SYMBOLIC if self.symbolic else None


def _printable(raw: bytes) -> bool:
    return bool(raw) and all(0x20 <= b < 0x7F for b in raw)


def parse_epath(data: bytes) -> EPath:
    """Decode a padded EPATH. Total: stops at the first segment it cannot decode and says why."""
    path = EPath()
    parts: list[str] = []
    i, n = 0, len(data)
    while i < n:
        if len(parts) >= MAX_PATH_SEGMENTS:
            path.error = f"more than {MAX_PATH_SEGMENTS} segments"
            break
        seg = data[i]
        kind = seg >> 5
        if kind == 0:  # port segment (C-1.4.1)
            extended, port = seg & 0x10, seg & 0x0F
            j = i + 1
            size = 1
            if extended:
                if j >= n:
                    path.error = "truncated port segment"
                    break
                size, j = data[j], j + 1
            if port == 15:
                if j + 2 > n:
                    path.error = "truncated port segment"
                    break
                port, j = U16.unpack_from(data, j)[0], j + 2
            if j + size > n:
                path.error = "truncated port segment"
                break
            link = data[j : j + size]
            j += size
            if (j - i) % 2:
                j += 1
            shown = (
                link.decode("ascii") if extended and _printable(link) else str(int.from_bytes(link, "little"))
            )
            parts.append(f"port:{port},{shown}")
            i = j
        elif kind == 1:  # logical segment (C-1.4.2)
            ltype, fmt = (seg >> 2) & 7, seg & 3
            if ltype == 5 and fmt == 0:  # electronic key
                if i + 10 > n or data[i + 1] != 4:
                    path.error = "bad electronic key segment"
                    break
                vendor, device, product = struct.unpack_from("<HHH", data, i + 2)
                major, minor = data[i + 8], data[i + 9]
                compat = ",compatible" if major & 0x80 else ""
                parts.append(
                    f"key:vendor={vendor},device_type={device},product_code={product},"
                    f"revision={major & 0x7F}.{minor}{compat}"
                )
                i += 10
                continue
            if fmt == 3 or (ltype == 5 and fmt != 0):
                path.error = f"unsupported logical segment 0x{seg:02x}"
                break
            width = (1, 2, 4)[fmt]
            start = i + 1 if fmt == 0 else i + 2
            if start + width > n:
                path.error = "truncated logical segment"
                break
            value = int.from_bytes(data[start : start + width], "little")
            i = start + width
            name = LOGICAL_TYPES[ltype]
            if ltype == 0 and path.class_id is None:
                path.class_id = value
            elif ltype == 1 and path.instance_id is None:
                path.instance_id = value
            elif ltype == 4 and path.attribute_id is None:
                path.attribute_id = value
            parts.append(f"{name}:0x{value:02x}")
        elif kind == 2:  # network segment (C-1.4.3)
            if seg & 0x10:
                if i + 2 > n:
                    path.error = "truncated network segment"
                    break
                size = 2 * data[i + 1]
                start = i + 2
            else:
                size, start = 1, i + 1
            if start + size > n:
                path.error = "truncated network segment"
                break
            parts.append(f"network:0x{seg:02x}={data[start : start + size].hex()}")
            i = start + size
        elif kind == 3:  # symbolic segment (C-1.4.4)
            size = seg & 0x1F
            if size == 0:
                path.error = "extended symbolic segment not supported"
                break
            if i + 1 + size > n:
                path.error = "truncated symbolic segment"
                break
            parts.append("symbol:" + data[i + 1 : i + 1 + size].decode("latin-1"))
            path.symbolic = True
            i += 1 + size + (size + 1) % 2
        elif seg in (0x80, 0x91):  # simple data / ANSI extended symbol segment (C-1.4.5)
            if i + 2 > n:
                path.error = "truncated data segment"
                break
            size = 2 * data[i + 1] if seg == 0x80 else data[i + 1]
            if i + 2 + size > n:
                path.error = "truncated data segment"
                break
            raw = data[i + 2 : i + 2 + size]
            if seg == 0x91:
                parts.append("symbol:" + raw.decode("latin-1"))
                path.symbolic = True
            else:
                parts.append("data:" + raw.hex())
            i += 2 + size + size % 2
        else:
            path.error = f"unsupported segment 0x{seg:02x}"
            break
    path.text = "/".join(parts)
    return path


@lru_cache(maxsize=4096)
def _cached_epath(data: bytes) -> EPath:
    """:func:`parse_epath` of a request path, remembered: a plant polls the same few tags over and over
    (callers must not change the result)."""
    return parse_epath(data)


def walk_cpf(data: bytes, offset: int) -> tuple[list[tuple[int, bytes]], str | None]:
    """Common Packet Format items from ``offset`` (item count first); the error, if any, says why."""
    if offset + 2 > len(data):
        return [], "no item count"
    count = U16.unpack_from(data, offset)[0]
    if count > MAX_CPF_ITEMS:
        return [], f"{count} items"
    items: list[tuple[int, bytes]] = []
    pos = offset + 2
    for _ in range(count):
        if pos + 4 > len(data):
            return items, f"item {len(items)} header truncated"
        item_type, size = struct.unpack_from("<HH", data, pos)
        pos += 4
        if pos + size > len(data):
            return items, f"item {len(items)} (type 0x{item_type:04x}) length {size} beyond the data"
        items.append((item_type, data[pos : pos + size]))
        pos += size
    if pos != len(data):
        return items, f"{len(data) - pos} bytes after the last item"
    return items, None


def io_items(data: bytes) -> tuple[int, int, bytes] | None:
    """(connection id, sequence number, data) of a well-formed UDP I/O datagram (Vol 2 3-2.2), else None."""
    if len(data) < 2 or not 2 <= U16.unpack_from(data, 0)[0] <= 4:
        return None
    items, error = walk_cpf(data, 0)
    if (
        error is not None
        or items[0][0] != CPF_SEQUENCED_ADDRESS
        or len(items[0][1]) != SEQUENCED_ADDRESS.size
    ):
        return None
    payload = next((body for kind, body in items if kind == CPF_CONNECTED_DATA), None)
    if payload is None:
        return None
    connection_id, sequence = SEQUENCED_ADDRESS.unpack(items[0][1])
    return connection_id, sequence, payload


def _encapsulation_verdict(data: bytes, udp: bool) -> Verdict:
    """Strict check of an encapsulation message at the start of ``data`` (Vol 2 2-3, 2-4)."""
    if len(data) < HEADER.size:
        if udp or (len(data) >= 2 and U16.unpack_from(data)[0] not in ENIP_COMMANDS):
            return Verdict.NO
        return Verdict.MAYBE
    command, length, _session, status, _context, options = HEADER.unpack_from(data)
    if command not in ENIP_COMMANDS or options != 0 or status not in ENIP_STATUSES:
        return Verdict.NO
    if udp and (command not in UDP_COMMANDS or HEADER.size + length != len(data)):
        return Verdict.NO
    body = data[HEADER.size : HEADER.size + length]
    complete = len(body) == length
    if command in (LIST_IDENTITY, LIST_SERVICES, LIST_INTERFACES):
        if length == 0:
            return Verdict.YES
        if not complete:
            return Verdict.MAYBE
        return Verdict.YES if walk_cpf(body, 0)[1] is None else Verdict.NO
    if command == REGISTER_SESSION:
        if length != 4:
            return Verdict.NO
        return Verdict.YES if not complete or U16.unpack_from(body)[0] == 1 else Verdict.NO
    if command == UNREGISTER_SESSION:
        return Verdict.YES if length == 0 else Verdict.NO
    if command in (SEND_RR_DATA, SEND_UNIT_DATA):
        if length < COMMAND_DATA.size + 4:
            return Verdict.NO
        if len(body) < COMMAND_DATA.size:
            return Verdict.MAYBE
        interface, _timeout, count = COMMAND_DATA.unpack_from(body)
        if interface != 0 or not 1 <= count <= MAX_CPF_ITEMS:
            return Verdict.NO
        if not complete:
            return Verdict.YES
        return Verdict.YES if walk_cpf(body, COMMAND_DATA.size - 2)[1] is None else Verdict.NO
    # NOP, Indicate Status, Cancel, StartDTLS: a plausible header, too little to be sure.
    return Verdict.MAYBE if not udp else Verdict.NO


# ------------------------------------------------------------------------------------ dissector


@dataclass(slots=True)
class _Request:
    """What a reply needs from its request: service, class and the embedded requests, in order."""

    service: int
    class_key: int | None
    embedded: list[_Request] = field(default_factory=list)


def _answered(request: _Request | None, service: int) -> _Request | None:
    """The request a reply with ``service`` answers (an Unconnected Send is answered by its payload)."""
    if request is None:
        return None
    if request.service == service:
        return request
    if request.service == UNCONNECTED_SEND and request.embedded and request.embedded[0].service == service:
        return request.embedded[0]
    return None


def _connection_parameters(value: int | None, large: bool) -> tuple[int | None, str | None]:
    """(connection size, connection type) of network connection parameters (Vol 1 3-5.5.1.1)."""
    if value is None:
        return None, None
    if large:
        return value & 0xFFFF, CONNECTION_TYPES[(value >> 29) & 3]
    return value & 0x1FF, CONNECTION_TYPES[(value >> 13) & 3]


class EnipDissector(Dissector):
    """EtherNet/IP encapsulation (TCP/UDP 44818), CIP explicit messaging and UDP I/O (2222)."""

    name = "enip"
    description = "EtherNet/IP encapsulation, CIP explicit messages, ListIdentity, Forward Open/Close, I/O"
    transports = frozenset({Transport.TCP, Transport.UDP})
    ports = frozenset({44818, 2222})
    event_types = (EnipHeader, CipHeader, CipIO, CipIdentity, CipConnection)

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        self._pending: OrderedDict[bytes, _Request] = OrderedDict()
        self._budget = MAX_EVENTS_PER_PDU

    # ------------------------------------------------------------------ SDK entry points

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if transport == Transport.UDP:
            if io_items(data) is not None:
                return Verdict.YES
            return Verdict.YES if _encapsulation_verdict(data, udp=True) == Verdict.YES else Verdict.NO
        return _encapsulation_verdict(data, udp=False)

    @classmethod
    def parse_batch(cls, datagrams: Datagrams) -> BatchResult:
        """Columnar fast path for the common UDP I/O datagram (Vol 2 3-2.2): exactly two CPF items, a
        Sequenced Address item (8 bytes) then a Connected Data item running to the end of the datagram.
        Anything else (other layouts, encapsulation messages, malformed data) goes to :meth:`parse`."""
        head = datagrams.heads(IO_FAST_HEADER)
        length = datagrams.length
        h = head.astype(np.int64)
        handled: npt.NDArray[np.bool_] = (
            (length >= IO_FAST_HEADER)
            & (h[:, 0] == 2)
            & (h[:, 1] == 0)
            & ((h[:, 2] | h[:, 3] << 8) == CPF_SEQUENCED_ADDRESS)
            & ((h[:, 4] | h[:, 5] << 8) == SEQUENCED_ADDRESS.size)
            & ((h[:, 14] | h[:, 15] << 8) == CPF_CONNECTED_DATA)
            & ((h[:, 16] | h[:, 17] << 8) == length - IO_FAST_HEADER)
        )
        rows = np.flatnonzero(handled)
        if rows.shape[0] == 0:
            return BatchResult(handled)
        words = np.ascontiguousarray(head[rows, 6:14]).view("<u4")
        io = EventColumns(
            CipIO,
            rows,
            {
                "connection_id": words[:, 0].astype(np.int64),
                "sequence_number": words[:, 1].astype(np.int64),
                "data_length": length[rows] - IO_FAST_HEADER,
                "io_data": datagrams.binary(IO_FAST_HEADER, rows),
            },
        )
        return BatchResult(handled, (io,))

    @classmethod
    def parse_pdu_batch(cls, pdus: Datagrams) -> BatchResult:
        """Columnar fast path for the common explicit message over TCP: a SendRRData whose CPF is
        exactly a Null Address item and an Unconnected Data item running to the end of the message, with
        no options, carrying one plain CIP request (complete path, decoded without error) or reply
        (complete additional status). Multiple Service Packets, Unconnected Send, Forward Open/Close,
        Reset and everything else go to :meth:`parse`. Replies are named from their request by
        ``apply``, which keeps the flow's pending requests (matched by sender context) as ``parse``
        does."""
        n = len(pdus)
        h = pdus.heads(RR_FAST_HEAD).astype(np.int64)
        length = pdus.length

        def u16(at: int) -> npt.NDArray[np.int64]:
            return h[:, at] | h[:, at + 1] << 8

        def u32(at: int) -> npt.NDArray[np.int64]:
            return u16(at) | u16(at + 2) << 16

        m0 = RR_FAST_MESSAGE
        encapsulated = u16(2)
        message = length - m0
        first = h[:, m0]
        service = first & 0x7F
        reply = (first & 0x80) != 0
        words = h[:, m0 + 3]
        common = (
            (message >= 1)
            & (u16(0) == SEND_RR_DATA)
            & (encapsulated + HEADER.size == length)
            & (u32(20) == 0)
            & (u16(30) == len(RR_FAST_ITEMS))
            & (u16(32) == CPF_NULL_ADDRESS)
            & (u16(34) == 0)
            & (u16(36) == CPF_UNCONNECTED_DATA)
            & (u16(38) == message)
            & (service != MULTIPLE_SERVICE_PACKET)
        )
        reply_ok = (
            common
            & reply
            & (message >= 4)
            & (4 + 2 * words <= message)
            & ~np.isin(service, (FORWARD_OPEN, LARGE_FORWARD_OPEN, FORWARD_CLOSE))
        )
        request_ok = common & ~reply & (message >= 2) & (2 + 2 * h[:, m0 + 1] <= message) & (service != RESET)
        services = service.tolist()
        paths: list[EPath | None] = [None] * n
        buffer = pdus.buffer
        candidates = np.flatnonzero(request_ok)
        path_start = (pdus.start[candidates] + m0 + 2).tolist()
        path_end = (pdus.start[candidates] + m0 + 2 + 2 * h[candidates, m0 + 1]).tolist()
        for i, start, end in zip(candidates.tolist(), path_start, path_end, strict=True):
            path = _cached_epath(buffer[start:end].tobytes())
            if path.error is not None or (
                path.class_key == CONNECTION_MANAGER
                and services[i] in (UNCONNECTED_SEND, FORWARD_OPEN, LARGE_FORWARD_OPEN, FORWARD_CLOSE)
            ):
                request_ok[i] = False
            else:
                paths[i] = path
        handled: npt.NDArray[np.bool_] = request_ok | reply_ok
        contexts = np.ascontiguousarray(h[:, 12:20].astype(np.uint8)).tobytes()
        replies = reply.tolist()
        answered_class: list[int | None] = [None] * n

        def apply(dissector: EnipDissector, i: int) -> bool:
            key = b"u" + contexts[8 * i : 8 * i + 8]
            pending = dissector._pending
            if replies[i]:
                answered = _answered(pending.pop(key, None), services[i])
                answered_class[i] = answered.class_key if answered is not None else None
                return True
            path = paths[i]
            assert path is not None  # handled requests have a decoded path
            pending[key] = _Request(services[i], path.class_key)
            pending.move_to_end(key)
            while len(pending) > MAX_PENDING:
                pending.popitem(last=False)
            return True

        def build(rows: npt.NDArray[np.intp]) -> tuple[EventColumns, ...]:
            m = rows.shape[0]
            status = u32(8)[rows]
            header = EventColumns(
                EnipHeader,
                rows,
                {
                    "enip_command_code": np.full(m, SEND_RR_DATA, dtype=np.int64),
                    "enip_command": pa.array([ENIP_COMMANDS[SEND_RR_DATA]] * m, pa.string()),
                    "length": encapsulated[rows],
                    "session_handle": u32(4)[rows],
                    "enip_status_code": status,
                    "enip_status": pa.array(
                        [ENIP_STATUSES.get(s, UNKNOWN) for s in status.tolist()], pa.string()
                    ),
                    "sender_context": binary_array(
                        buffer, pdus.start[rows] + 12, np.full(m, 8, dtype=np.int64)
                    ),
                    "options": np.zeros(m, dtype=np.int64),
                    "interface_handle": u32(24)[rows],
                    "timeout": u16(28)[rows],
                    "cpf_item_types": pa.ListArray.from_arrays(
                        pa.array(np.arange(0, 2 * m + 1, 2, dtype=np.int32)),
                        pa.array(np.tile(np.array(RR_FAST_ITEMS, dtype=np.int64), m)),
                    ),
                    "protocol_version": pa.nulls(m, pa.int64()),
                    "capability_flags": pa.nulls(m, pa.int64()),
                    "service_name": pa.nulls(m, pa.string()),
                },
            )
            is_reply = reply[rows]
            general = h[rows, m0 + 2]
            has_extended = is_reply & (words[rows] >= 1)
            extended = u16(m0 + 4)[rows]
            names: list[str] = []
            statuses: list[str | None] = []
            extended_names: list[str | None] = []
            class_ids: list[int | None] = []
            class_names: list[str | None] = []
            instances: list[int | None] = []
            attributes: list[int | None] = []
            texts: list[str | None] = []
            for i, code, ext, has_ext in zip(
                rows.tolist(), general.tolist(), extended.tolist(), has_extended.tolist(), strict=True
            ):
                if replies[i]:
                    names.append(service_name(services[i], answered_class[i]))
                    statuses.append(CIP_STATUSES.get(code, UNKNOWN))
                    extended_names.append(extended_status_name(code, ext if has_ext else None))
                    class_ids.append(None)
                    class_names.append(None)
                    instances.append(None)
                    attributes.append(None)
                    texts.append(None)
                    continue
                path = paths[i]
                assert path is not None
                names.append(service_name(services[i], path.class_key))
                statuses.append(None)
                extended_names.append(None)
                class_id = path.class_id
                class_ids.append(class_id)
                class_names.append(CIP_CLASSES.get(class_id, UNKNOWN) if class_id is not None else None)
                instances.append(path.instance_id)
                attributes.append(path.attribute_id)
                texts.append(path.text)
            cip = EventColumns(
                CipHeader,
                rows,
                {
                    "cip_sequence_count": pa.nulls(m, pa.int64()),
                    "connection_id": pa.nulls(m, pa.int64()),
                    "direction": pa.array(np.where(is_reply, "response", "request").tolist(), pa.string()),
                    "cip_service_code": service[rows],
                    "cip_service": pa.array(names, pa.string()),
                    "cip_status_code": pa.array(general, pa.int64(), mask=~is_reply),
                    "cip_status": pa.array(statuses, pa.string()),
                    "cip_extended_status_code": pa.array(extended, pa.int64(), mask=~has_extended),
                    "cip_extended_status": pa.array(extended_names, pa.string()),
                    "class_id": pa.array(class_ids, pa.int64()),
                    "class_name": pa.array(class_names, pa.string()),
                    "instance_id": pa.array(instances, pa.int64()),
                    "attribute_id": pa.array(attributes, pa.int64()),
                    "request_path": pa.array(texts, pa.string()),
                    "route_path": pa.nulls(m, pa.string()),
                    "parent_service_code": pa.nulls(m, pa.int64()),
                    "reset_type": pa.nulls(m, pa.int64()),
                },
            )
            return header, cip

        return BatchResult(handled, apply=apply, build=build)

    framing = LengthFraming(  # frame(), declared for the columnar TCP path: encapsulation length + 24
        HeaderField(2, byteorder="little"),
        add=HEADER.size,
        min_size=HEADER.size,
        require=((HeaderField(0, byteorder="little"), frozenset(ENIP_COMMANDS)),),
    )

    def frame(self, data: bytes, is_orig: bool) -> int:
        if len(data) >= 2 and U16.unpack_from(data)[0] not in ENIP_COMMANDS:
            return -1
        if len(data) < HEADER.size:
            return 0
        size = HEADER.size + U16.unpack_from(data, 2)[0]
        return size if len(data) >= size else 0

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        self._budget = MAX_EVENTS_PER_PDU
        if ctx.flow.transport == Transport.UDP:
            io = io_items(pdu)
            if io is not None:
                connection_id, sequence, payload = io
                self._emit(
                    ctx,
                    CipIO(
                        **ctx.where(),
                        connection_id=connection_id,
                        sequence_number=sequence,
                        data_length=len(payload),
                        io_data=payload,
                    ),
                )
                return
            if len(pdu) < HEADER.size or U16.unpack_from(pdu)[0] not in ENIP_COMMANDS:
                ctx.weird("enip_unknown_datagram", f"{len(pdu)} bytes: neither encapsulation nor I/O")
                return
        self._encapsulation(pdu, ctx)

    # ------------------------------------------------------------------ encapsulation

    def _emit(self, ctx: PduContext, event: Event) -> None:
        if self._budget > 0:
            ctx.emit(event)
        elif self._budget == 0:
            ctx.weird("enip_too_many_events", f"more than {MAX_EVENTS_PER_PDU} events in one message")
        self._budget -= 1

    def _encapsulation(self, pdu: bytes, ctx: PduContext) -> None:
        if len(pdu) < HEADER.size:
            ctx.weird("enip_truncated_header", f"{len(pdu)} bytes")
            return
        command, length, session, status, context, options = HEADER.unpack_from(pdu)
        body = pdu[HEADER.size : HEADER.size + length]
        if len(body) < length:
            ctx.weird("enip_truncated", f"length {length}, {len(body)} bytes present")
        elif len(pdu) > HEADER.size + length:
            ctx.weird("enip_trailing_data", f"{len(pdu) - HEADER.size - length} bytes after the message")
        if options:
            ctx.weird("enip_nonzero_options", f"options 0x{options:08x}")
        interface = timeout = version = flags = None
        service: str | None = None
        items: list[tuple[int, bytes]] = []
        error: str | None = None
        if command in (SEND_RR_DATA, SEND_UNIT_DATA):
            if len(body) < COMMAND_DATA.size:
                error = "no command-specific data"
            else:
                interface, timeout, _count = COMMAND_DATA.unpack_from(body)
                items, error = walk_cpf(body, COMMAND_DATA.size - 2)
        elif command in (LIST_IDENTITY, LIST_SERVICES, LIST_INTERFACES) and body:
            items, error = walk_cpf(body, 0)
        elif command == REGISTER_SESSION:
            if len(body) >= 2:
                version = U16.unpack_from(body)[0]
            else:
                error = "no protocol version"
        if error is not None:
            ctx.weird("enip_bad_command_data", f"{ENIP_COMMANDS.get(command, hex(command))}: {error}")
        for kind, item in items:
            if kind == CPF_LIST_SERVICES and len(item) >= SERVICE_ITEM.size and service is None:
                version, flags, raw_name = SERVICE_ITEM.unpack_from(item)
                service = raw_name.split(b"\0", 1)[0].decode("latin-1")
        self._emit(
            ctx,
            EnipHeader(
                **ctx.where(),
                enip_command_code=command,
                enip_command=ENIP_COMMANDS.get(command, UNKNOWN),
                length=length,
                session_handle=session,
                enip_status_code=status,
                enip_status=ENIP_STATUSES.get(status, UNKNOWN),
                sender_context=context,
                options=options,
                interface_handle=interface,
                timeout=timeout,
                cpf_item_types=[kind for kind, _ in items],
                protocol_version=version,
                capability_flags=flags,
                service_name=service,
            ),
        )
        connection_id: int | None = None
        for kind, item in items:
            if kind == CPF_CIP_IDENTITY:
                self._identity(item, ctx)
            elif kind == CPF_CONNECTED_ADDRESS:
                if len(item) == 4:
                    connection_id = U32.unpack(item)[0]
                else:
                    ctx.weird("enip_bad_cpf_item", f"connected address item of {len(item)} bytes")
            elif kind == CPF_CONNECTED_DATA:
                if len(item) < 2:
                    ctx.weird("enip_bad_cpf_item", f"connected data item of {len(item)} bytes")
                    continue
                sequence = U16.unpack_from(item)[0]
                self._message(item[2:], ctx, sequence, connection_id, b"c" + item[:2])
            elif kind == CPF_UNCONNECTED_DATA:
                self._message(item, ctx, None, None, b"u" + context)

    def _identity(self, item: bytes, ctx: PduContext) -> None:
        """A CIP Identity item (Vol 2 Table 2-4.4); the socket address is in network byte order."""
        if len(item) < IDENTITY.size:
            ctx.weird("enip_bad_identity", f"identity item of {len(item)} bytes")
            return
        (version, sockaddr, vendor, device, product, major, minor, status, serial, size) = (
            IDENTITY.unpack_from(item)
        )
        _family, port, address, _zero = SOCKADDR.unpack(sockaddr)
        name = item[IDENTITY.size : IDENTITY.size + size]
        end = IDENTITY.size + size
        state = item[end] if len(item) > end else None
        if len(name) < size or state is None:
            ctx.weird("enip_bad_identity", f"identity item of {len(item)} bytes, product name of {size}")
        self._emit(
            ctx,
            CipIdentity(
                **ctx.where(),
                encapsulation_version=version,
                socket_address=str(IPv4Address(address)),
                socket_port=port,
                vendor_id=vendor,
                vendor_name=vendor_name(vendor),
                device_type_id=device,
                device_type_name=DEVICE_TYPES.get(device, UNKNOWN),
                product_code=product,
                revision=f"{major}.{minor}",
                device_status=status,
                serial_number=serial,
                product_name=name.decode("latin-1"),
                device_state=state,
            ),
        )

    # ------------------------------------------------------------------ CIP

    def _message(
        self, msg: bytes, ctx: PduContext, sequence: int | None, connection_id: int | None, key: bytes
    ) -> None:
        """One CIP message of a data item; requests are remembered to name their replies."""
        if not msg:
            ctx.weird("enip_cip_truncated", "empty CIP message")
            return
        if msg[0] & 0x80:
            request = self._pending.pop(key, None)
            self._response(msg, ctx, sequence, connection_id, request, None, 0)
            return
        request = self._request(msg, ctx, sequence, connection_id, None, 0)
        self._pending[key] = request
        self._pending.move_to_end(key)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)

    def _request(
        self,
        msg: bytes,
        ctx: PduContext,
        sequence: int | None,
        connection_id: int | None,
        parent: int | None,
        depth: int,
    ) -> _Request:
        """A Message Router request (Vol 1 2-4.1): service, request path, service data."""
        service = msg[0] & 0x7F
        size = 2 * msg[1] if len(msg) >= 2 else 0
        raw_path = msg[2 : 2 + size]
        if len(msg) < 2 or len(raw_path) < size:
            ctx.weird("enip_cip_truncated", f"request of {len(msg)} bytes, path of {size}")
        path = parse_epath(raw_path)
        if path.error is not None:
            ctx.weird("enip_cip_bad_path", path.error)
        data = msg[2 + size :]
        class_key = path.class_key
        request = _Request(service, class_key)
        route: str | None = None
        inner: bytes | None = None
        if class_key == CONNECTION_MANAGER and service == UNCONNECTED_SEND:
            inner, route = self._unconnected_send(data, ctx)
        self._emit(
            ctx,
            CipHeader(
                **ctx.where(),
                cip_sequence_count=sequence,
                connection_id=connection_id,
                direction="request",
                cip_service_code=service,
                cip_service=service_name(service, class_key),
                cip_status_code=None,
                cip_status=None,
                cip_extended_status_code=None,
                cip_extended_status=None,
                class_id=path.class_id,
                class_name=CIP_CLASSES.get(path.class_id, UNKNOWN) if path.class_id is not None else None,
                instance_id=path.instance_id,
                attribute_id=path.attribute_id,
                request_path=path.text,
                route_path=route,
                parent_service_code=parent,
                reset_type=data[0] if service == RESET and data else None,
            ),
        )
        if depth >= MAX_DEPTH:
            if service == MULTIPLE_SERVICE_PACKET or inner is not None:
                ctx.weird("enip_cip_too_deep", f"services nested more than {MAX_DEPTH} deep")
            return request
        if service == MULTIPLE_SERVICE_PACKET:
            for part in self._services(data, ctx, "request"):
                if part[0] & 0x80:
                    ctx.weird("enip_cip_bad_multiple_service", "reply inside a request")
                sub = self._request(part, ctx, sequence, connection_id, service, depth + 1)
                request.embedded.append(sub)
        elif inner is not None:
            request.embedded.append(self._request(inner, ctx, sequence, connection_id, service, depth + 1))
        elif class_key == CONNECTION_MANAGER and service in (FORWARD_OPEN, LARGE_FORWARD_OPEN, FORWARD_CLOSE):
            self._connection_request(service, data, ctx, sequence)
        return request

    def _unconnected_send(self, data: bytes, ctx: PduContext) -> tuple[bytes | None, str | None]:
        """Unconnected Send (Vol 1 3-5.5.4): the embedded request and the route path."""
        if len(data) < 4:
            ctx.weird("enip_cip_bad_unconnected_send", f"{len(data)} bytes of service data")
            return None, None
        size = U16.unpack_from(data, 2)[0]
        inner = data[4 : 4 + size]
        pos = 4 + size + size % 2
        if len(inner) < size or not inner:
            ctx.weird("enip_cip_bad_unconnected_send", f"message of {size} bytes, {len(inner)} present")
            return (inner or None), None
        if pos + 2 > len(data):
            ctx.weird("enip_cip_bad_unconnected_send", "no route path")
            return inner, None
        words = data[pos]
        raw = data[pos + 2 : pos + 2 + 2 * words]
        route = parse_epath(raw)
        if route.error is not None or len(raw) < 2 * words:
            ctx.weird("enip_cip_bad_path", f"route path: {route.error or 'truncated'}")
        return inner, route.text

    def _services(self, data: bytes, ctx: PduContext, what: str) -> list[bytes]:
        """The embedded messages of a Multiple Service Packet (Vol 1 A-4.10): count, offsets, messages."""
        if len(data) < 2:
            ctx.weird("enip_cip_bad_multiple_service", f"{what} without a service count")
            return []
        count = U16.unpack_from(data)[0]
        if count > MAX_SERVICES:
            ctx.weird("enip_cip_bad_multiple_service", f"{count} services, first {MAX_SERVICES} read")
            count = MAX_SERVICES
        table_end = 2 + 2 * count
        if table_end > len(data):
            ctx.weird("enip_cip_bad_multiple_service", f"{count} offsets in {len(data)} bytes")
            return []
        offsets = [U16.unpack_from(data, 2 + 2 * i)[0] for i in range(count)]
        parts: list[bytes] = []
        for i, start in enumerate(offsets):
            end = offsets[i + 1] if i + 1 < count and offsets[i + 1] > start else len(data)
            if not table_end <= start < end <= len(data):
                ctx.weird("enip_cip_bad_multiple_service", f"service {i} at offset {start}")
                continue
            parts.append(data[start:end])
        return parts

    def _response(
        self,
        msg: bytes,
        ctx: PduContext,
        sequence: int | None,
        connection_id: int | None,
        request: _Request | None,
        parent: int | None,
        depth: int,
    ) -> None:
        """A Message Router reply (Vol 1 2-4.2): service, general and additional status, data."""
        service = msg[0] & 0x7F
        status: int | None = None
        extended: int | None = None
        data = b""
        if len(msg) < 4:
            ctx.weird("enip_cip_truncated", f"reply of {len(msg)} bytes")
        else:
            status, words = msg[2], msg[3]
            additional = msg[4 : 4 + 2 * words]
            if len(additional) < 2 * words:
                ctx.weird(
                    "enip_cip_truncated", f"additional status of {words} words, {len(additional)} bytes"
                )
            if len(additional) >= 2:
                extended = U16.unpack_from(additional)[0]
            data = msg[4 + 2 * words :]
        answered = _answered(request, service)
        class_key = answered.class_key if answered is not None else None
        self._emit(
            ctx,
            CipHeader(
                **ctx.where(),
                cip_sequence_count=sequence,
                connection_id=connection_id,
                direction="response",
                cip_service_code=service,
                cip_service=service_name(service, class_key),
                cip_status_code=status,
                cip_status=CIP_STATUSES.get(status, UNKNOWN) if status is not None else None,
                cip_extended_status_code=extended,
                cip_extended_status=extended_status_name(status, extended) if status is not None else None,
                class_id=None,
                class_name=None,
                instance_id=None,
                attribute_id=None,
                request_path=None,
                route_path=None,
                parent_service_code=parent,
                reset_type=None,
            ),
        )
        if status is None:
            return
        if service == MULTIPLE_SERVICE_PACKET and data:
            if depth >= MAX_DEPTH:
                ctx.weird("enip_cip_too_deep", f"services nested more than {MAX_DEPTH} deep")
                return
            embedded = answered.embedded if answered is not None else []
            for i, part in enumerate(self._services(data, ctx, "reply")):
                if not part[0] & 0x80:
                    ctx.weird("enip_cip_bad_multiple_service", "request inside a reply")
                sub = embedded[i] if i < len(embedded) else None
                self._response(part, ctx, sequence, connection_id, sub, service, depth + 1)
        elif (service in (FORWARD_OPEN, LARGE_FORWARD_OPEN) and class_key in (CONNECTION_MANAGER, None)) or (
            service == FORWARD_CLOSE and class_key == CONNECTION_MANAGER
        ):
            self._connection_reply(service, status, extended, data, ctx, sequence)

    # ------------------------------------------------------------------ Connection Manager

    def _connection_request(self, service: int, data: bytes, ctx: PduContext, sequence: int | None) -> None:
        """Forward Open / Large Forward Open / Forward Close request (Vol 1 3-5.5.1 to 3-5.5.3)."""
        ot_id = to_id = multiplier = ot_rpi = ot_params = to_rpi = to_params = trigger = None
        if service == FORWARD_CLOSE:
            layout = FORWARD_CLOSE_REQ
            if len(data) < layout.size:
                ctx.weird("enip_cip_bad_connection_service", f"Forward Close request of {len(data)} bytes")
                return
            tick, ticks, serial, vendor, orig_serial, words = layout.unpack_from(data)
        else:
            layout = FORWARD_OPEN_REQ if service == FORWARD_OPEN else LARGE_FORWARD_OPEN_REQ
            if len(data) < layout.size:
                ctx.weird("enip_cip_bad_connection_service", f"Forward Open request of {len(data)} bytes")
                return
            (
                tick,
                ticks,
                ot_id,
                to_id,
                serial,
                vendor,
                orig_serial,
                multiplier,
                ot_rpi,
                ot_params,
                to_rpi,
                to_params,
                trigger,
                words,
            ) = layout.unpack_from(data)
        raw = data[layout.size : layout.size + 2 * words]
        path = parse_epath(raw)
        if path.error is not None or len(raw) < 2 * words:
            ctx.weird("enip_cip_bad_path", f"connection path: {path.error or 'truncated'}")
        large = service == LARGE_FORWARD_OPEN
        ot_size, ot_type = _connection_parameters(ot_params, large)
        to_size, to_type = _connection_parameters(to_params, large)
        self._emit(
            ctx,
            CipConnection(
                **ctx.where(),
                cip_sequence_count=sequence,
                direction="request",
                cip_service_code=service,
                cip_service=service_name(service, CONNECTION_MANAGER),
                cip_status_code=None,
                cip_extended_status_code=None,
                priority_time_tick=tick,
                timeout_ticks=ticks,
                ot_connection_id=ot_id,
                to_connection_id=to_id,
                connection_serial_number=serial,
                originator_vendor_id=vendor,
                originator_vendor_name=vendor_name(vendor),
                originator_serial_number=orig_serial,
                connection_timeout_multiplier=multiplier,
                ot_rpi=ot_rpi,
                ot_network_connection_parameters=ot_params,
                ot_connection_size=ot_size,
                ot_connection_type=ot_type,
                to_rpi=to_rpi,
                to_network_connection_parameters=to_params,
                to_connection_size=to_size,
                to_connection_type=to_type,
                transport_type_trigger=trigger,
                transport_class=trigger & 0x0F if trigger is not None else None,
                production_trigger=(
                    PRODUCTION_TRIGGERS.get((trigger >> 4) & 7, "reserved") if trigger is not None else None
                ),
                connection_path=path.text,
                ot_api=None,
                to_api=None,
                remaining_path_size=None,
            ),
        )

    def _connection_reply(
        self,
        service: int,
        status: int,
        extended: int | None,
        data: bytes,
        ctx: PduContext,
        sequence: int | None,
    ) -> None:
        """Reply to Forward Open / Large Forward Open / Forward Close (success and failure layouts)."""
        ot_id = to_id = ot_api = to_api = remaining = None
        if status == 0 and service != FORWARD_CLOSE:
            if len(data) < FORWARD_OPEN_OK.size:
                ctx.weird("enip_cip_bad_connection_service", f"Forward Open reply of {len(data)} bytes")
                return
            ot_id, to_id, serial, vendor, orig_serial, ot_api, to_api, _size = FORWARD_OPEN_OK.unpack_from(
                data
            )
        else:
            if len(data) < CONNECTION_REPLY.size:
                if data:
                    ctx.weird("enip_cip_bad_connection_service", f"connection reply of {len(data)} bytes")
                return
            serial, vendor, orig_serial, size = CONNECTION_REPLY.unpack_from(data)
            remaining = size if status != 0 else None
        self._emit(
            ctx,
            CipConnection(
                **ctx.where(),
                cip_sequence_count=sequence,
                direction="response",
                cip_service_code=service,
                cip_service=service_name(service, CONNECTION_MANAGER),
                cip_status_code=status,
                cip_extended_status_code=extended,
                priority_time_tick=None,
                timeout_ticks=None,
                ot_connection_id=ot_id,
                to_connection_id=to_id,
                connection_serial_number=serial,
                originator_vendor_id=vendor,
                originator_vendor_name=vendor_name(vendor),
                originator_serial_number=orig_serial,
                connection_timeout_multiplier=None,
                ot_rpi=None,
                ot_network_connection_parameters=None,
                ot_connection_size=None,
                ot_connection_type=None,
                to_rpi=None,
                to_network_connection_parameters=None,
                to_connection_size=None,
                to_connection_type=None,
                transport_type_trigger=None,
                transport_class=None,
                production_trigger=None,
                connection_path=None,
                ot_api=ot_api,
                to_api=to_api,
                remaining_path_size=remaining,
            ),
        )
