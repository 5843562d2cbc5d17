"""Siemens S7 communication over ISO-on-TCP: TPKT, COTP, S7comm, and S7comm-plus recognition.

Covered (TCP, well-known port 102, recognised by content on any port):

- TPKT (RFC 1006 section 6): version 3, reserved 0, 16-bit length; one TPKT is one framed PDU.
- COTP (ISO 8073 / ITU-T X.224 section 13): every TPDU type (CR, CC, DR, DC, DT, ED, AK, EA, RJ, ER)
  with its references, class, the CR/CC parameters calling/called TSAP (0xC1/0xC2) and TPDU size
  (0xC0, or 0xF0 preferred maximum TPDU size), the DT TPDU number and EOT mark, and the DR reason /
  ER reject cause. DT user data split over several TPDUs (EOT not set) is reassembled per direction.
- S7comm (protocol id 0x32; no public specification: layouts follow Wireshark's ``packet-s7comm.c``
  and CISA ICSNPP ``icsnpp-s7comm``, whose log names and field names are used): the header (ROSCTR
  job / ack / ack-data / userdata, PDU reference, error class and code), the job and ack-data
  functions (setup communication with its negotiated PDU length, read and write variable with every
  item's syntax id, transport size, length, DB number, area and address and every result's return
  code, request download / download block / download ended / start upload / upload / end upload with
  session id, block length and the block file name split into block type, number and file system,
  PLC control (PI service name such as ``_INSE`` or ``P_PROGRAM`` and its arguments; NC passwords of
  ``_N_LOGIN_``/``_N_NEWPWD`` are never reported) and PLC stop),
  and userdata functions (function group and subfunction names, including the security group's PLC
  password functions, and the parameter error code). Read SZL requests and responses are logged with
  their SZL id and index; fragmented SZL responses (data unit reference, "last data unit" flag) are
  reassembled, and the module identification (SZL 0x0011/0x0111: order number, module type id,
  firmware version) and component identification (SZL 0x001C/0x011C: automation system name, module
  name, plant designation, copyright, serial numbers, module type name) lists are decoded.
- S7comm-plus (protocol id 0x72; Wireshark's ``s7comm_plus`` plugin, ICSNPP ``s7comm_plus.log``): the
  cleartext header (protocol version, data length), and for the first PDU of a message the opcode, the
  function code, sequence number and (requests) session id; V3 PDUs skip the integrity part (digest)
  first. Keep-alive PDUs log the version only; continuation fragments log the header only.

Reporting conventions: field names follow the ICSNPP logs; code fields are hex strings as ICSNPP writes
them (``"0x0f"``), identifiers and quantities are integers; TSAPs are shown as Wireshark shows them
(text when printable, else ``0x`` and hex). The PDU reference is the big-endian 16-bit
header field, as the protocol and Wireshark read it (ICSNPP byte-swaps it; see docs/protocols/s7comm.md).
Malformed input is reported with ``s7comm_*`` weirds, never with an exception.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, ClassVar, TypeVar

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
)

# ---------------------------------------------------------------------------------------------- limits

MAX_SEGMENTED_BYTES = 65536
"""COTP DT user data kept per direction while waiting for the EOT mark."""
MAX_SZL_BYTES = 65536
"""Bytes of one fragmented SZL answer kept while waiting for its last data unit."""
MAX_PENDING = 64
"""Outstanding requests / fragments remembered per flow (oldest dropped first)."""
MAX_RECOGNITION_TPKTS = 8
MAX_SZL_RECORDS = 256
MAX_PI_ARGUMENTS = 32

# ---------------------------------------------------------------------------------------------- tables

TPKT_VERSION = 3
S7COMM_ID = 0x32
S7COMM_PLUS_ID = 0x72

COTP_CR, COTP_CC, COTP_DR, COTP_DC, COTP_DT = 0xE, 0xD, 0x8, 0xC, 0xF
COTP_ED, COTP_EA, COTP_RJ, COTP_AK, COTP_ER = 0x1, 0x2, 0x5, 0x6, 0x7

COTP_PDU_TYPES: dict[int, str] = {
    0x1: "ED Expedited Data",
    0x2: "EA Expedited Data Acknowledgement",
    0x5: "RJ Reject",
    0x6: "AK Data Acknowledgement",
    0x7: "ER TPDU Error",
    0x8: "DR Disconnect Request",
    0xC: "DC Disconnect Confirm",
    0xD: "CC Connection Confirm",
    0xE: "CR Connection Request",
    0xF: "DT Data",
}
COTP_PARAM_TPDU_SIZE = 0xC0
COTP_PARAM_CALLING_TSAP = 0xC1
COTP_PARAM_CALLED_TSAP = 0xC2
COTP_PARAM_PREFERRED_TPDU_SIZE = 0xF0

ROSCTR_JOB, ROSCTR_ACK, ROSCTR_ACK_DATA, ROSCTR_USERDATA = 0x01, 0x02, 0x03, 0x07
ROSCTR_NAMES: dict[int, str] = {
    ROSCTR_JOB: "Job-Request",
    ROSCTR_ACK: "ACK",
    ROSCTR_ACK_DATA: "ACK-Data",
    ROSCTR_USERDATA: "User-Data",
}

ERROR_CLASSES: dict[int, str] = {
    0x00: "No error",
    0x81: "Application relationship error",
    0x82: "Object definition error",
    0x83: "No resources available error",
    0x84: "Error on service processing",
    0x85: "Error on supplies",
    0x87: "Access error",
}

FN_CPU_SERVICES, FN_READ_VAR, FN_WRITE_VAR = 0x00, 0x04, 0x05
FN_REQUEST_DOWNLOAD, FN_DOWNLOAD_BLOCK, FN_DOWNLOAD_ENDED = 0x1A, 0x1B, 0x1C
FN_START_UPLOAD, FN_UPLOAD, FN_END_UPLOAD = 0x1D, 0x1E, 0x1F
FN_PLC_CONTROL, FN_PLC_STOP, FN_SETUP_COMMUNICATION = 0x28, 0x29, 0xF0
FUNCTIONS: dict[int, str] = {
    FN_CPU_SERVICES: "CPU Services",
    FN_READ_VAR: "Read Variable",
    FN_WRITE_VAR: "Write Variable",
    FN_REQUEST_DOWNLOAD: "Request Download",
    FN_DOWNLOAD_BLOCK: "Download Block",
    FN_DOWNLOAD_ENDED: "Download Ended",
    FN_START_UPLOAD: "Start Upload",
    FN_UPLOAD: "Upload",
    FN_END_UPLOAD: "End Upload",
    FN_PLC_CONTROL: "PLC Control",
    FN_PLC_STOP: "PLC Stop",
    FN_SETUP_COMMUNICATION: "Setup Communication",
}
TRANSFER_FUNCTIONS = frozenset(range(FN_REQUEST_DOWNLOAD, FN_END_UPLOAD + 1))
FILENAME_FUNCTIONS = frozenset({FN_REQUEST_DOWNLOAD, FN_DOWNLOAD_BLOCK, FN_DOWNLOAD_ENDED, FN_START_UPLOAD})

USERDATA_KINDS: dict[int, str] = {0x0: "Push", 0x4: "Request", 0x8: "Response"}
USERDATA_GROUPS: dict[int, str] = {
    0x0: "Mode-Transition",
    0x1: "Programmer Controls",
    0x2: "Cyclic Services",
    0x3: "Block Functions",
    0x4: "CPU Functions",
    0x5: "Security",
    0x6: "PBC BSEND-BRECV",
    0x7: "Time Functions",
    0xF: "NC Programming",
}
USERDATA_SUBFUNCTIONS: dict[int, dict[int, str]] = {
    0x0: {
        0x00: "Stop",
        0x01: "Warm Restart",
        0x02: "Run",
        0x03: "Hot Restart",
        0x04: "Hold",
        0x06: "Cold Restart",
        0x09: "Run_R",
        0x0B: "Link-Up",
        0x0C: "Update",
    },
    0x1: {
        0x01: "Block Status",
        0x02: "Variable Status",
        0x03: "Output ISTACK",
        0x04: "Output BSTACK",
        0x05: "Output LSTACK",
        0x06: "Time Measurement",
        0x07: "Force Selection",
        0x08: "Modify Variable",
        0x09: "Force",
        0x0A: "Breakpoint",
        0x0B: "Exit HOLD",
        0x0C: "Memory Reset",
        0x0D: "Disable Job",
        0x0E: "Enable Job",
        0x0F: "Delete Job",
        0x10: "Read Job List",
        0x11: "Read Job",
        0x12: "Replace Job",
        0x13: "Block Status v2",
        0x16: "Flash LED",
    },
    0x2: {
        0x01: "Cyclic Transfer",
        0x04: "Unsubscribe",
        0x05: "Change Driven Transfer",
        0x07: "Change Driven Transfer Modify",
        0x08: "RDREC",
    },
    0x3: {0x01: "List Blocks", 0x02: "List Blocks of Type", 0x03: "Get Block Info"},
    0x4: {
        0x01: "Read SZL",
        0x02: "Message Service",
        0x03: "Diagnostic Message",
        0x04: "ALARM_8 Indication",
        0x05: "NOTIFY Indication",
        0x06: "ALARM_8 Lock",
        0x07: "ALARM_8 Unlock",
        0x08: "SCAN Indication",
        0x0B: "ALARM_S Indication",
        0x0C: "ALARM_SQ Indication",
        0x0D: "ALARM Query",
        0x0E: "ALARM ACK",
        0x11: "ALARM ACK Indication",
        0x12: "ALARM Lock Indication",
        0x13: "ALARM Unlock Indication",
        0x16: "NOTIFY_8 Indication",
    },
    0x5: {0x01: "PLC Password", 0x02: "Clear PLC Password"},
    0x7: {0x01: "Read Clock", 0x02: "Set Clock", 0x03: "Read Clock (Following)", 0x04: "Set Clock (2)"},
}
GROUP_CPU, SUBFUNCTION_READ_SZL = 0x4, 0x01
USERDATA_METHODS: dict[int, str] = {0x11: "Request", 0x12: "Response"}

RETURN_CODES: dict[int, str] = {
    0x00: "Reserved",
    0x01: "Hardware error",
    0x03: "Accessing the object not allowed",
    0x05: "Invalid address",
    0x06: "Data type not supported",
    0x07: "Data type inconsistent",
    0x0A: "Object does not exist",
    0xFF: "Success",
}
RETURN_SUCCESS = 0xFF

SZL_LIST_NAMES: dict[int, str] = {
    0x00: "List of all the SZL-IDs of a module",
    0x11: "Module identification",
    0x12: "CPU characteristics",
    0x13: "User memory areas",
    0x14: "System areas",
    0x15: "Block types",
    0x16: "Priority classes",
    0x17: "List of the permitted SDBs with a number < 1000",
    0x18: "Maximum S7-300 I/O configuration",
    0x19: "Status of the module LEDs",
    0x1C: "Component Identification",
    0x21: "Interrupt / error assignment",
    0x22: "Interrupt status",
    0x23: "Priority classes",
    0x24: "Modes",
    0x25: "Assignment between process image partitions and OBs",
    0x31: "Communication capability parameters",
    0x32: "Communication status data",
    0x33: "Diagnostics: device logon list",
    0x37: "Ethernet - Details of a Module",
    0x71: "H CPU group information",
    0x74: "Status of the module LEDs",
    0x75: "Switched DP slaves in the H-system",
    0x81: "Start information list",
    0x82: "Start event list",
    0x91: "Module status information",
    0x92: "Rack / station status information",
    0x94: "Rack / station status information",
    0x95: "Extended DP master system information",
    0x96: "Module status information, PROFINET IO and PROFIBUS DP",
    0xA0: "Diagnostic buffer of the CPU",
    0xB1: "Module diagnostic information (data record 0)",
    0xB2: "Module diagnostic information (data record 1), geographical address",
    0xB3: "Module diagnostic information (data record 1), logical address",
    0xB4: "Diagnostic data of a DP slave",
}
SZL_MODULE_IDENTIFICATION = 0x11
SZL_COMPONENT_IDENTIFICATION = 0x1C
SZL_MODULE_RECORD = 28  # index(2) MlfB(20) BGTyp(2) Ausbg(2) Ausbe(2)
SZL_COMPONENT_RECORD = 34  # index(2) text(32)
COMPONENT_FIELDS: dict[int, str] = {
    0x0001: "automation_system_name",
    0x0002: "module_name",
    0x0003: "plant_name",
    0x0004: "copyright",
    0x0005: "module_serial",
    0x0007: "module_type_name",
    0x0008: "memory_card_serial",
}

BLOCK_TYPES: dict[str, str] = {
    "08": "Organization Block",
    "0A": "Data Block",
    "0B": "System Data Block",
    "0C": "Function",
    "0D": "System Function",
    "0E": "Function Block",
    "0F": "System Function Block",
}
FILESYSTEMS: dict[str, str] = {"P": "Passive", "A": "Active", "B": "Active and Passive"}

PI_SERVICES: dict[str, str] = {
    "_INSE": "Activates a PLC module",
    "_INS2": "Activates a PLC module",
    "_DELE": "Removes module from the PLC's passive file system",
    "P_PROGRAM": "PLC Start / Stop",
    "_MODU": "PLC Copy Ram to Rom",
    "_GARB": "Compress PLC memory",
    "_N_LOGIN_": "Login",
    "_N_LOGOUT": "Logout",
    "_N_CANCEL": "Cancels NC alarm",
    "_N_DASAVE": "PI-Service for copying data from SRAM to FLASH",
    "_N_DIGIOF": "Turns off digitizing",
    "_N_DIGION": "Turns on digitizing",
    "_N_DZERO_": "Set all D numbers invalid for function",
    "_N_F_OPER": "Opens a file read-only",
    "_N_OST_OF": "Overstore OFF",
    "_N_OST_ON": "Overstore ON",
    "_N_SCALE_": "Unit of measurement setting (metric<->INCH)",
    "_N_SETUFR": "Activates user frame",
    "_N_STRTLK": "The global start disable is set",
    "_N_STRTUL": "The global start disable is reset",
    "_N_TMRASS": "Resets the Active status",
    "_N_F_DELE": "Deletes file",
    "_N_EXTERN": "Selects external program for execution",
    "_N_EXTMOD": "Selects external program for execution",
    "_N_F_DELR": "Delete file even without access rights",
    "_N_F_XFER": "Selects file for uploading",
    "_N_LOCKE_": "Locks the active file for editing",
    "_N_SELECT": "Selects program for execution",
    "_N_SRTEXT": "A file is being marked in _N_EXT_DIR",
    "_N_F_CLOS": "Closes file",
    "_N_F_OPEN": "Opens file",
    "_N_F_SEEK": "Position the file search pointer",
    "_N_ASUP__": "Assigns interrupt",
    "_N_CHEKDM": "Start uniqueness check on D numbers",
    "_N_CHKDNO": "Check whether the tools have unique D numbers",
    "_N_CONFIG": "Reconfigures machine data",
    "_N_CRCEDN": "Creates a cutting edge by specifying an edge number",
    "_N_DELECE": "Deletes a cutting edge",
    "_N_CREACE": "Creates a cutting edge",
    "_N_CREATO": "Creates a tool",
    "_N_DELETO": "Deletes tool",
    "_N_CRTOCE": "Generate tool with specified edge number",
    "_N_DELVAR": "Delete data block",
    "_N_F_COPY": "Copies file within the NCK",
    "_N_F_DMDA": "Deletes MDA memory",
    "_N_F_PROT": "Assigns a protection level to a file",
    "_N_F_RENA": "Renames file",
    "_N_FINDBL": "Activates search",
    "_N_IBN_SS": "Sets the set-up switch",
    "_N_MMCSEM": "MMC-Semaphore",
    "_N_NCKMOD": "The mode in which the NCK will work is being set",
    "_N_NEWPWD": "New password",
    "_N_SEL_BL": "Selects a new block",
    "_N_SETTST": "Activate tools for replacement tool group",
    "_N_TMAWCO": "Set the active wear group in one magazine",
    "_N_TMCRTC": "Create tool with specified edge number",
    "_N_TMCRTO": "Creates tool in the tool management",
    "_N_TMFDPL": "Searches an empty place for loading",
    "_N_TMFPBP": "Searches for empty location",
    "_N_TMGETT": "Determines T-number for specific toolID with Duplono",
    "_N_TMMVTL": "Loads or unloads a tool",
    "_N_TMPCIT": "Sets increment value of the piece counter",
    "_N_TMPOSM": "Positions a magazine or tool",
    "_N_TRESMO": "Reset monitoring values",
    "_N_TSEARC": "Complex search via search screenforms",
}
PI_BLOCK_LIST_SERVICES = frozenset({"_INSE", "_INS2", "_DELE"})
PI_ARGUMENT_SERVICES = frozenset({"P_PROGRAM", "_MODU", "_GARB"})
PI_PASSWORD_ARGUMENTS: dict[str, tuple[int, ...]] = {"_N_LOGIN_": (1,), "_N_NEWPWD": (1,)}
"""Positions of password arguments of NC PI services (Wireshark: addressident, password, ...)."""
REDACTED = "<redacted>"
"""Stands for a password: FieldWard never writes credentials to its outputs."""

SYNTAX_S7ANY = 0x10
ITEM_TRANSPORT_SIZES: dict[int, str] = {
    0x01: "BIT",
    0x02: "BYTE",
    0x03: "CHAR",
    0x04: "WORD",
    0x05: "INT",
    0x06: "DWORD",
    0x07: "DINT",
    0x08: "REAL",
    0x09: "DATE",
    0x0A: "TOD",
    0x0B: "TIME",
    0x0C: "S5TIME",
    0x0F: "DATE_AND_TIME",
    0x1C: "COUNTER",
    0x1D: "TIMER",
    0x1E: "IEC TIMER",
    0x1F: "IEC COUNTER",
    0x20: "HS COUNTER",
}
AREAS: dict[int, str] = {
    0x03: "SYSINFO",
    0x05: "SYSFLAGS",
    0x06: "ANAIN",
    0x07: "ANAOUT",
    0x1C: "C",
    0x1D: "T",
    0x1E: "IEC_C",
    0x1F: "IEC_T",
    0x80: "P",
    0x81: "I",
    0x82: "Q",
    0x83: "M",
    0x84: "DB",
    0x85: "DI",
    0x86: "L",
    0x87: "V",
}
NUMBERED_AREAS = frozenset({0x1C, 0x1D, 0x1E, 0x1F})
"""Counters and timers: the address is an object number, not a byte.bit address."""
BIT_LENGTH_DATA_SIZES = frozenset({0x03, 0x04, 0x05})
"""Data item transport sizes (BIT, BYTE/WORD/DWORD, INTEGER) whose length field counts bits."""

PLUS_VERSIONS = frozenset({0x01, 0x02, 0x03, 0xFE, 0xFF})
PLUS_KEEPALIVE = 0xFF
PLUS_EXT_KEEPALIVE = 0xFE
PLUS_V3 = 0x03
PLUS_REQUEST, PLUS_RESPONSE, PLUS_NOTIFICATION, PLUS_RESPONSE2 = 0x31, 0x32, 0x33, 0x02
PLUS_OPCODES: dict[int, str] = {
    PLUS_REQUEST: "Request",
    PLUS_RESPONSE: "Response",
    PLUS_NOTIFICATION: "Notification",
    PLUS_RESPONSE2: "Response2",
}
PLUS_FUNCTIONS: dict[int, str] = {
    0x04BB: "Explore",
    0x04CA: "Create Object",
    0x04D4: "Delete Object",
    0x04F2: "Set Variable",
    0x04FC: "Get Variable",
    0x0524: "Get Link",
    0x0542: "Set Multi Variables",
    0x054C: "Get Multi Variables",
    0x0556: "Begin Sequence",
    0x0560: "End Sequence",
    0x056B: "Invoke",
    0x057C: "Set Variable Sub Streamed",
    0x0586: "Get Variable Sub Streamed",
}


# ---------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class Cotp(Event):
    """One COTP TPDU (one TPKT): ``events/cotp.parquet`` (ICSNPP ``cotp.log`` plus the TPDU fields)."""

    log: ClassVar[str] = "cotp"

    pdu_code: str
    pdu_name: str
    destination_reference: int | None = None
    source_reference: int | None = None
    tpdu_class: int | None = None
    calling_tsap: str | None = None
    called_tsap: str | None = None
    tpdu_size: int | None = None
    tpdu_number: int | None = None
    last_data_unit: bool | None = None
    reason: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class S7comm(Event):
    """One S7comm PDU header: ``events/s7comm.parquet`` (ICSNPP ``s7comm.log`` plus function facts)."""

    log: ClassVar[str] = "s7comm"

    rosctr_code: int
    rosctr_name: str
    pdu_reference: int
    function_code: str | None = None
    function_name: str | None = None
    subfunction_code: str | None = None
    subfunction_name: str | None = None
    error_class: str | None = None
    error_code: str | None = None
    max_amq_calling: int | None = None
    max_amq_called: int | None = None
    pdu_length: int | None = None
    pi_service: str | None = None
    pi_arguments: list[str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class S7commReadSzl(Event):
    """A Read SZL request or response: ``events/s7comm_read_szl.parquet`` (ICSNPP)."""

    log: ClassVar[str] = "s7comm_read_szl"

    pdu_reference: int
    method: str
    szl_id: str | None = None
    szl_id_name: str | None = None
    szl_index: str | None = None
    return_code: str
    return_code_name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class S7commUploadDownload(Event):
    """A block transfer job or its answer: ``events/s7comm_upload_download.parquet`` (ICSNPP)."""

    log: ClassVar[str] = "s7comm_upload_download"

    rosctr: str
    pdu_reference: int
    function_name: str
    function_status: str | None = None
    session_id: int | None = None
    blocklength: int | None = None
    filename: str | None = None
    block_type: str | None = None
    block_number: str | None = None
    destination_filesystem: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class S7commVariable(Event):
    """One item of a read/write variable job or of its answer: ``events/s7comm_variable.parquet``.

    Answer rows carry the address of the matching job item (same PDU reference, same position) when
    the job was seen.
    """

    log: ClassVar[str] = "s7comm_variable"

    rosctr: str
    pdu_reference: int
    function_name: str
    item_number: int
    syntax_id: str | None = None
    transport_size: str | None = None
    transport_size_name: str | None = None
    length: int | None = None
    db_number: int | None = None
    area: str | None = None
    area_name: str | None = None
    address: int | None = None
    byte_address: int | None = None
    bit_address: int | None = None
    return_code: str | None = None
    return_code_name: str | None = None
    data_transport_size: str | None = None
    data_length: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class S7commIdentification(Event):
    """Decoded SZL identification lists of one complete answer: ``events/s7comm_identification.parquet``."""

    log: ClassVar[str] = "s7comm_identification"

    pdu_reference: int
    szl_id: str
    szl_index: str
    order_number: str | None = None
    module_type_id: int | None = None
    firmware_version: str | None = None
    automation_system_name: str | None = None
    module_name: str | None = None
    plant_name: str | None = None
    copyright: str | None = None
    module_serial: str | None = None
    module_type_name: str | None = None
    memory_card_serial: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class S7commPlus(Event):
    """One S7comm-plus PDU: ``events/s7comm_plus.parquet`` (ICSNPP ``s7comm_plus.log`` plus header facts)."""

    log: ClassVar[str] = "s7comm_plus"

    version: int
    data_length: int | None = None
    opcode: str | None = None
    opcode_name: str | None = None
    function_code: str | None = None
    function_name: str | None = None
    sequence_number: int | None = None
    session_id: int | None = None


# ---------------------------------------------------------------------------------------------- helpers


def _u16(data: bytes, offset: int) -> int:
    return (data[offset] << 8) | data[offset + 1]


def _u24(data: bytes, offset: int) -> int:
    return (data[offset] << 16) | (data[offset + 1] << 8) | data[offset + 2]


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "big")


_HEX8 = [f"0x{value:02x}" for value in range(256)]


def _hex8(value: int) -> str:
    return _HEX8[value] if 0 <= value < 256 else f"0x{value:02x}"


def _hex16(value: int) -> str:
    return f"0x{value:04x}"


def _text(raw: bytes) -> str:
    """A fixed-size text field: up to the first NUL, ASCII (undecodable bytes replaced), right-trimmed."""
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace").rstrip(" ")


def _tsap(raw: bytes) -> str:
    """A TSAP as Wireshark shows it: the text when every byte is printable ASCII, else ``0x`` and hex."""
    if raw and all(0x20 <= b < 0x7F for b in raw):
        return raw.decode("ascii")
    return "0x" + raw.hex()


def _error_class_name(error_class: int) -> str:
    return ERROR_CLASSES.get(error_class, f"Unknown error class-0x{error_class:02x}")


def tpkt_length(data: bytes) -> int:
    """Length of the TPKT at the start of ``data``: 0 when more bytes are needed, -1 when not a TPKT."""
    if len(data) >= 1 and data[0] != TPKT_VERSION:
        return -1
    if len(data) >= 2 and data[1] != 0:
        return -1
    if len(data) < 4:
        return 0
    length = _u16(data, 2)
    if length < 7:
        return -1
    return length if len(data) >= length else 0


def _cotp_parameters(params: bytes) -> dict[int, bytes] | None:
    """The variable part of a CR/CC/DR TPDU as {code: value}; None when a parameter overruns it."""
    found: dict[int, bytes] = {}
    offset = 0
    while offset < len(params):
        if offset + 2 > len(params):
            return None
        code, size = params[offset], params[offset + 1]
        if offset + 2 + size > len(params):
            return None
        found.setdefault(code, params[offset + 2 : offset + 2 + size])
        offset += 2 + size
    return found


def _recognise_s7(payload: bytes, total: int, last: bool) -> Verdict:
    """S7comm header of a DT payload (``total`` bytes in this TPDU; ``last``: EOT set)."""
    if len(payload) >= 2 and payload[1] not in ROSCTR_NAMES:
        return Verdict.NO
    if len(payload) >= 4 and _u16(payload, 2) != 0:  # redundancy identification, reserved
        return Verdict.NO
    if len(payload) < 10:
        return Verdict.MAYBE
    rosctr = payload[1]
    header = 12 if rosctr in (ROSCTR_ACK, ROSCTR_ACK_DATA) else 10
    parameter, data = _u16(payload, 6), _u16(payload, 8)
    size = header + parameter + data
    if (last and size != total) or (not last and size <= total):
        return Verdict.NO
    if rosctr == ROSCTR_JOB and (
        parameter == 0 or (len(payload) > header and payload[header] not in FUNCTIONS)
    ):
        return Verdict.NO
    if rosctr == ROSCTR_USERDATA:
        if parameter < 8:
            return Verdict.NO
        if len(payload) >= header + 2 and payload[header : header + 2] != b"\x00\x01":
            return Verdict.NO
    return Verdict.YES


def _recognise_plus(payload: bytes, total: int, last: bool) -> Verdict:
    """S7comm-plus header of a DT payload."""
    if len(payload) >= 2 and payload[1] not in PLUS_VERSIONS:
        return Verdict.NO
    if len(payload) < 4:
        return Verdict.MAYBE
    if payload[1] == PLUS_KEEPALIVE:
        return Verdict.YES if total == 4 and last else Verdict.NO
    size = 4 + _u16(payload, 2)
    if size == 4:
        return Verdict.NO
    if last:
        return Verdict.YES if total in (size, size + 4) else Verdict.NO
    return Verdict.YES if size > total else Verdict.NO


def _recognise_tpkt(tpkt: bytes, length: int) -> Verdict:
    """One TPKT (possibly incomplete: ``len(tpkt) < length``). MAYBE: valid but not S7 yet."""
    if len(tpkt) < 6:
        return Verdict.MAYBE
    li, kind = tpkt[4], tpkt[5] >> 4
    if li < 2 or li == 0xFF or 5 + li > length:
        return Verdict.NO
    if kind == COTP_DT:
        if li != 2 or tpkt[5] != 0xF0:  # class 0 DT: header is type + TPDU-NR/EOT
            return Verdict.NO
        if len(tpkt) < 8:
            return Verdict.MAYBE if length > 7 else Verdict.NO
        payload, total, last = tpkt[7:], length - 7, bool(tpkt[6] & 0x80)
        if payload[0] == S7COMM_ID:
            return _recognise_s7(payload, total, last)
        if payload[0] == S7COMM_PLUS_ID:
            return _recognise_plus(payload, total, last)
        return Verdict.NO
    if kind in (COTP_CR, COTP_CC):
        if li < 6 or length != 5 + li:  # class 0 carries no user data in CR/CC
            return Verdict.NO
        if len(tpkt) < 5 + li:
            return Verdict.MAYBE
        if (kind == COTP_CR and _u16(tpkt, 6) != 0) or tpkt[10] >> 4 > 4:
            return Verdict.NO
        params = _cotp_parameters(tpkt[11 : 5 + li])
        if params is None:
            return Verdict.NO
        size = params.get(COTP_PARAM_TPDU_SIZE)
        if size is not None and (len(size) != 1 or not 7 <= size[0] <= 13):
            return Verdict.NO
        return Verdict.MAYBE
    return Verdict.NO


def recognise_stream(data: bytes) -> Verdict:
    """Strict recognition of an ISO-on-TCP stream start that carries S7comm or S7comm-plus.

    Every TPKT must be well formed; connection set-up TPDUs (CR, CC) alone give MAYBE; the first DT
    decides: YES for a consistent S7comm (0x32) or S7comm-plus (0x72) header, NO for anything else
    (e.g. the ISO session layer of MMS, or TLS).
    """
    offset = 0
    for _ in range(MAX_RECOGNITION_TPKTS):
        rest = data[offset:]
        if not rest:
            return Verdict.MAYBE
        length = tpkt_length(rest)
        if length < 0:
            return Verdict.NO
        if len(rest) < 4:
            return Verdict.MAYBE
        length = _u16(rest, 2)
        verdict = _recognise_tpkt(rest[:length], length)
        if verdict != Verdict.MAYBE or len(rest) < length:
            return verdict
        offset += length
    return Verdict.MAYBE


def _nc_arguments(service: str, block: bytes, ctx: PduContext) -> list[str]:
    """NC PI service arguments: (length, ASCII text, a pad byte when the length is even) repeated."""
    arguments: list[str] = []
    offset = 0
    while offset < len(block) and len(arguments) < MAX_PI_ARGUMENTS:
        size = block[offset]
        text = block[offset + 1 : offset + 1 + size]
        if len(text) < size:
            ctx.weird("s7comm_truncated_parameter", f"{service} argument {len(arguments) + 1} overruns")
            break
        secret = len(arguments) in PI_PASSWORD_ARGUMENTS.get(service, ())
        arguments.append(REDACTED if secret else text.decode("ascii", "replace"))
        offset += 1 + size + (size % 2 == 0)
    return arguments


def _filename_fields(filename: str) -> tuple[str | None, str | None, str | None]:
    """Block type name, block number and destination file system of a block file name ``_0800001P``."""
    block_type = BLOCK_TYPES.get(filename[1:3], "Unknown") if len(filename) >= 3 else None
    block_number = filename[3:8] if len(filename) >= 8 else None
    filesystem = FILESYSTEMS.get(filename[8], "Unknown") if len(filename) >= 9 else None
    return block_type, block_number, filesystem


def _ascii_number(raw: bytes) -> int | None:
    text = raw.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _firmware_version(ausbg: int, ausbe: int) -> str | None:
    """SZL 0x0011 record 7: 'V', major / minor, patch as bytes (e.g. 0x5603 0x0207 is V3.2.7)."""
    if ausbg >> 8 != ord("V"):
        return None
    return f"V{ausbg & 0xFF}.{ausbe >> 8}.{ausbe & 0xFF}"


def _data_bytes(transport_size: int, length: int) -> int:
    """Value bytes of a data item whose length field is ``length`` (bits for bit/byte/int sizes)."""
    return (length + 7) // 8 if transport_size in BIT_LENGTH_DATA_SIZES else length


@dataclass(slots=True)
class _Item:
    """The address part of a read/write variable item."""

    syntax_id: int
    transport_size: int | None = None
    length: int | None = None
    db_number: int | None = None
    area: int | None = None
    address: int | None = None
    cached: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    """The event fields, once made (a job item's fields are used again for its answer)."""

    def fields(self) -> dict[str, Any]:
        """The item's event fields (the caller must not change the dict: it is kept)."""
        if self.cached is not None:
            return self.cached
        numbered = self.area in NUMBERED_AREAS
        has_address = self.address is not None and self.area is not None and not numbered
        self.cached = {
            "syntax_id": _hex8(self.syntax_id),
            "transport_size": None if self.transport_size is None else _hex8(self.transport_size),
            "transport_size_name": (
                None if self.transport_size is None else ITEM_TRANSPORT_SIZES.get(self.transport_size)
            ),
            "length": self.length,
            "db_number": self.db_number,
            "area": None if self.area is None else _hex8(self.area),
            "area_name": None if self.area is None else AREAS.get(self.area),
            "address": self.address,
            "byte_address": self.address >> 3 if has_address and self.address is not None else None,
            "bit_address": self.address & 7 if has_address and self.address is not None else None,
        }
        return self.cached


@dataclass(slots=True)
class _SzlFragments:
    pdu_reference: int
    data: bytearray


@dataclass(slots=True)
class _S7Header:
    rosctr: int
    pdu_reference: int
    error_class: int | None
    error_code: int | None
    parameter: bytes
    data: bytes


_K = TypeVar("_K")
_V = TypeVar("_V")


def _remember(table: OrderedDict[_K, _V], key: _K, value: _V) -> None:
    """Store ``value`` under ``key``, dropping the oldest entries beyond :data:`MAX_PENDING`."""
    table[key] = value
    table.move_to_end(key)
    while len(table) > MAX_PENDING:
        table.popitem(last=False)


# ---------------------------------------------------------------------------------------------- fast path

_FAST_HEAD = 21
"""TPKT (4) + COTP DT (3) + S7comm header (10 or 12) + function code + item count."""
_ITEM_SIZE = 12
"""A Read Variable job item with an S7ANY address: var spec, spec length, 10 address bytes."""
_BIT_SIZES = np.array(sorted(BIT_LENGTH_DATA_SIZES), dtype=np.int64)


def _byte_lookup(names: dict[int, str], default: str | None = None) -> pa.Array:
    """The text of every byte value 0-255 (``default`` for the values ``names`` lacks), as an Arrow
    array: ``take`` turns a column of codes into their texts without a Python call per row."""
    return pa.array([names.get(value, default) for value in range(256)], pa.string())


_HEX8_ARRAY = pa.array(_HEX8, pa.string())
_TRANSPORT_SIZE_NAMES = _byte_lookup(ITEM_TRANSPORT_SIZES)
_AREA_NAMES = _byte_lookup(AREAS)
_RETURN_CODE_NAMES = _byte_lookup(RETURN_CODES, "Unknown")
_ERROR_CLASS_NAMES = pa.array([_error_class_name(value) for value in range(256)], pa.string())
_NUMBERED_AREAS = np.array(sorted(NUMBERED_AREAS), dtype=np.int64)


def _texts(lookup: pa.Array, values: pa.Array, fallback: Callable[[int], str | None]) -> pa.Array:
    """``lookup`` taken at ``values`` (int64, nulls stay null); a value outside 0-255 (none in a
    well-formed PDU, whose codes are single bytes) gets ``fallback(value)`` as the per-PDU path does."""
    valid = values.fill_null(0).to_numpy()
    if valid.shape[0] == 0 or (int(valid.min()) >= 0 and int(valid.max()) < 256):
        return lookup.take(values)
    texts = [None if v is None else fallback(v) for v in values.to_pylist()]
    return pa.array(texts, pa.string())


def _hex8_array(values: pa.Array) -> pa.Array:
    """:func:`_hex8` of each value of an int64 array (nulls stay null)."""
    return _texts(_HEX8_ARRAY, values, _hex8)


class _NoItem:
    """Stands for a result whose job item is unknown (an answer without its job): every field null."""

    syntax_id = transport_size = length = db_number = area = address = None


_NO_ITEM = _NoItem()
_ITEM_FIELDS = operator.attrgetter("syntax_id", "transport_size", "length", "db_number", "area", "address")


def _variable_columns(
    rows: npt.NDArray[np.intp],
    counts: npt.NDArray[np.int64],
    is_ack: npt.NDArray[np.bool_],
    references: npt.NDArray[np.int64],
    matched: dict[int, list[_Item]],
    ack_slot: npt.NDArray[np.int64],
    codes: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
    value_bytes: npt.NDArray[np.int64],
) -> EventColumns:
    """The S7commVariable rows of fast-path Read Variable PDUs: one per item, in PDU order. Item
    addresses come from the job items (``matched``: a job's own items, or those an answer matched);
    results from the ACK-Data item columns. Codes become texts through byte lookup tables."""
    total = int(counts.sum())
    item_number = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    item_lists = list(map(matched.__getitem__, rows.tolist()))
    flat: list[_Item | _NoItem]
    if np.array_equal(np.fromiter(map(len, item_lists), np.int64, len(item_lists)), counts):
        flat = list(chain.from_iterable(item_lists))  # every PDU has its items: the usual case
    else:
        flat = []
        for items, count in zip(item_lists, counts.tolist(), strict=True):
            if len(items) >= count:
                flat.extend(items[:count])
            else:
                flat.extend(items)
                flat.extend([_NO_ITEM] * (count - len(items)))
    if total:
        syntax, transport, lengths, dbs, areas, addresses = (
            pa.array(column, pa.int64()) for column in zip(*map(_ITEM_FIELDS, flat), strict=True)
        )
    else:
        syntax = transport = lengths = dbs = areas = addresses = pa.array([], pa.int64())
    area_values = areas.fill_null(-1).to_numpy()
    located = ~np.isin(area_values, _NUMBERED_AREAS) & (area_values >= 0)
    address_values = addresses.fill_null(0).to_numpy()
    no_location = ~(located & addresses.is_valid().to_numpy(zero_copy_only=False))
    results = np.repeat(is_ack, counts)
    slot = np.repeat(ack_slot, counts)[results]
    k = item_number[results]
    code = np.zeros(total, dtype=np.int64)
    size = np.zeros(total, dtype=np.int64)
    data_length = np.zeros(total, dtype=np.int64)
    if slot.shape[0]:
        code[results], size[results], data_length[results] = (
            codes[slot, k],
            sizes[slot, k],
            value_bytes[slot, k],
        )
    no_result = ~results
    result_codes = pa.array(code, pa.int64(), mask=no_result)
    rosctr = np.where(results, ROSCTR_NAMES[ROSCTR_ACK_DATA], ROSCTR_NAMES[ROSCTR_JOB])
    columns: dict[str, npt.NDArray[Any] | pa.Array] = {
        "rosctr": pa.array(rosctr, pa.string()),
        "pdu_reference": np.repeat(references, counts),
        "function_name": pa.array([FUNCTIONS[FN_READ_VAR]] * total, pa.string()),
        "item_number": item_number + 1,
        "syntax_id": _hex8_array(syntax),
        "transport_size": _hex8_array(transport),
        "transport_size_name": _texts(_TRANSPORT_SIZE_NAMES, transport, ITEM_TRANSPORT_SIZES.get),
        "length": lengths,
        "db_number": dbs,
        "area": _hex8_array(areas),
        "area_name": _texts(_AREA_NAMES, areas, AREAS.get),
        "address": addresses,
        "byte_address": pa.array(address_values >> 3, pa.int64(), mask=no_location),
        "bit_address": pa.array(address_values & 7, pa.int64(), mask=no_location),
        "return_code": _hex8_array(result_codes),
        "return_code_name": _texts(
            _RETURN_CODE_NAMES, result_codes, lambda c: RETURN_CODES.get(c, "Unknown")
        ),
        "data_transport_size": _hex8_array(pa.array(size, pa.int64(), mask=no_result)),
        "data_length": pa.array(data_length, pa.int64(), mask=no_result),
    }
    return EventColumns(S7commVariable, np.repeat(rows, counts), columns)


# ---------------------------------------------------------------------------------------------- dissector


class S7commDissector(Dissector):
    """TPKT / COTP / S7comm / S7comm-plus (ISO-on-TCP, port 102)."""

    name = "s7comm"
    description = "Siemens S7comm and S7comm-plus over ISO-on-TCP (TPKT RFC 1006, COTP ISO 8073)"
    transports = frozenset({Transport.TCP})
    ports = frozenset({102})
    event_types = (
        Cotp,
        S7comm,
        S7commReadSzl,
        S7commUploadDownload,
        S7commVariable,
        S7commIdentification,
        S7commPlus,
    )

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        self._segments: dict[bool, bytearray] = {True: bytearray(), False: bytearray()}
        self._plus_fragmented: dict[bool, bool] = {True: False, False: False}
        self._szl_fragments: OrderedDict[tuple[bool, int], _SzlFragments] = OrderedDict()
        """Fragmented SZL answers being reassembled, by (direction, data unit reference)."""
        self._szl_requests: OrderedDict[tuple[bool, int], tuple[int, int]] = OrderedDict()
        """(SZL id, index) asked, by (direction, PDU reference)."""
        self._var_requests: OrderedDict[tuple[bool, int], list[_Item]] = OrderedDict()
        """Read/write variable job items, by (direction, PDU reference)."""

    # ------------------------------------------------------------------ SDK

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if transport != Transport.TCP:
            return Verdict.NO
        return recognise_stream(data)

    framing = LengthFraming(  # frame(), declared for the columnar TCP path: the TPKT length (RFC 1006)
        HeaderField(2),
        min_size=7,
        require=((HeaderField(0, 1), frozenset({TPKT_VERSION})), (HeaderField(1, 1), frozenset({0}))),
    )

    def frame(self, data: bytes, is_orig: bool) -> int:
        return tpkt_length(data)

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        if len(pdu) < 7 or pdu[0] != TPKT_VERSION or pdu[1] != 0:
            ctx.weird("s7comm_bad_tpkt", f"{len(pdu)} bytes do not start with a TPKT")
            return
        length = _u16(pdu, 2)
        if length != len(pdu):
            ctx.weird("s7comm_tpkt_length_mismatch", f"TPKT length {length}, PDU {len(pdu)} bytes")
            if length < 7:
                return
            pdu = pdu[:length]
        li = pdu[4]
        if li == 0 or li == 0xFF or 5 + li > len(pdu):
            ctx.weird("s7comm_cotp_bad_length", f"length indicator {li} in a {len(pdu)}-byte TPKT")
            return
        header = pdu[5 : 5 + li]
        kind = header[0] >> 4
        self._cotp(header, ctx)
        if kind == COTP_DT:
            self._data(header, pdu[5 + li :], ctx)

    def close(self, ctx: PduContext) -> None:
        for is_orig, segments in self._segments.items():
            if segments:
                ctx.is_orig = is_orig
                ctx.weird("s7comm_cotp_unfinished", f"{len(segments)} bytes of DT data without EOT")
                segments.clear()
        if self._szl_fragments:
            ctx.weird("s7comm_szl_unfinished", f"{len(self._szl_fragments)} SZL answers without last unit")
            self._szl_fragments.clear()

    # ------------------------------------------------------------------ columnar fast path

    @classmethod
    def parse_pdu_batch(cls, pdus: Datagrams) -> BatchResult:
        """Read Variable jobs and their ACK-Data answers of the common shape, vectorized.

        A PDU is taken when it is one whole TPKT holding a class-0 COTP DT TPDU with EOT, whose
        S7comm header announces exactly the bytes present, with function Read Variable and: for a
        job, only S7ANY item addresses (12 bytes each); for an ACK-Data, data items that the item
        count accounts for without overrunning. The fixed-layout headers and items are decoded with
        numpy across the batch; ``apply`` keeps the per-flow state ``parse`` keeps (job items by PDU
        reference, matched by the answer; DT segments waiting for EOT send the PDU to ``parse``).
        Everything else (other functions, user data, connection set-up, truncations) goes to
        :meth:`parse`.
        """
        n = len(pdus)
        length = pdus.length
        head = pdus.heads(_FAST_HEAD).astype(np.int64)
        rosctr = head[:, 8]
        ack = rosctr == ROSCTR_ACK_DATA
        header_size = np.where(ack, 12, 10)
        parameter_length = head[:, 13] << 8 | head[:, 14]
        data_length = head[:, 15] << 8 | head[:, 16]
        param = 7 + header_size
        function = np.where(ack, head[:, 19], head[:, 17])
        count = np.where(ack, head[:, 20], head[:, 18])
        common = (
            (length >= _FAST_HEAD)
            & (head[:, 0] == TPKT_VERSION)
            & (head[:, 1] == 0)
            & ((head[:, 2] << 8 | head[:, 3]) == length)
            & (head[:, 4] == 2)
            & (head[:, 5] == 0xF0)
            & (head[:, 6] >= 0x80)
            & (head[:, 7] == S7COMM_ID)
            & ((rosctr == ROSCTR_JOB) | ack)
            & (header_size + parameter_length + data_length == length - 7)
            & (function == FN_READ_VAR)
            & (count >= 1)
        )
        job = common & ~ack & (parameter_length == 2 + _ITEM_SIZE * count)
        ack &= common & (parameter_length == 2)
        buffer = pdus.buffer
        last = buffer.shape[0] - 1

        # Job items: var spec, spec length 10, S7ANY, then the address fields (12 bytes each).
        widest = int(count[job].max(initial=0))
        k = np.arange(widest)
        job_rows = np.flatnonzero(job)
        item_start = (pdus.start[job_rows] + param[job_rows] + 2)[:, None] + _ITEM_SIZE * k[None, :]
        present = k[None, :] < count[job_rows][:, None]
        spec = buffer[np.minimum(item_start[:, :, None] + np.arange(_ITEM_SIZE), last)].astype(np.int64)
        good = ~present | ((spec[:, :, 1] == 10) & (spec[:, :, 2] == SYNTAX_S7ANY))
        job[job_rows] = good.all(axis=1)
        item_values = (
            spec[:, :, 3],
            spec[:, :, 4] << 8 | spec[:, :, 5],
            spec[:, :, 6] << 8 | spec[:, :, 7],
            spec[:, :, 8],
            spec[:, :, 9] << 16 | spec[:, :, 10] << 8 | spec[:, :, 11],
        )
        job_slot = np.full(n, -1, dtype=np.int64)
        job_slot[job_rows] = np.arange(job_rows.shape[0])

        # ACK-Data items: return code, transport size, length, value (padded to even but the last).
        ack_rows = np.flatnonzero(ack)
        widest_ack = int(count[ack_rows].max(initial=0))
        codes = np.zeros((ack_rows.shape[0], widest_ack), dtype=np.int64)
        sizes = np.zeros_like(codes)
        value_bytes = np.zeros_like(codes)
        data_start = pdus.start[ack_rows] + param[ack_rows] + 2
        available = data_length[ack_rows]
        ack_count = count[ack_rows]
        offset = np.zeros(ack_rows.shape[0], dtype=np.int64)
        ok = np.ones(ack_rows.shape[0], dtype=np.bool_)
        for item in range(widest_ack):
            active = ok & (item < ack_count)
            ok &= ~active | (offset + 4 <= available)
            active &= ok
            at = np.minimum(data_start + offset, last - 3)
            code, size = buffer[at].astype(np.int64), buffer[at + 1].astype(np.int64)
            bits = (buffer[at + 2].astype(np.int64) << 8) | buffer[at + 3]
            values = np.where(np.isin(size, _BIT_SIZES), (bits + 7) // 8, bits)
            codes[:, item], sizes[:, item], value_bytes[:, item] = code, size, values
            skip = np.where((code == 0) | (code == RETURN_SUCCESS), values, 0)
            skip += np.where(item + 1 < ack_count, skip % 2, 0)
            offset = np.where(active, offset + 4 + skip, offset)
            ok &= ~active | (offset <= available)
        ack[ack_rows] = ok
        ack_slot = np.full(n, -1, dtype=np.int64)
        ack_slot[ack_rows] = np.arange(ack_rows.shape[0])

        handled: npt.NDArray[np.bool_] = job | ack
        origs = pdus.is_orig.tolist()
        jobs = job.tolist()
        references = (head[:, 11] << 8 | head[:, 12]).tolist()
        counts = count.tolist()
        job_items: list[list[list[int]]] = np.stack(item_values, axis=2).tolist()
        """Per job (slot), per item: transport size, length, DB number, area, address."""
        slots = job_slot.tolist()
        matched: dict[int, list[_Item]] = {}

        def apply(dissector: S7commDissector, i: int) -> bool:
            is_orig = origs[i]
            if dissector._segments[is_orig]:
                return False  # DT data waiting for EOT: parse() joins them
            if jobs[i]:
                items = [
                    _Item(SYNTAX_S7ANY, v[0], v[1], v[2], v[3], v[4])
                    for v in job_items[slots[i]][: counts[i]]
                ]
                _remember(dissector._var_requests, (is_orig, references[i]), items)
                matched[i] = items
            else:
                matched[i] = dissector._var_requests.pop((not is_orig, references[i]), [])
            return True

        def build(rows: npt.NDArray[np.intp]) -> tuple[EventColumns, ...]:
            m = rows.shape[0]
            is_ack = ack[rows]
            rosctr_names = np.where(is_ack, ROSCTR_NAMES[ROSCTR_ACK_DATA], ROSCTR_NAMES[ROSCTR_JOB])
            references_m = head[rows, 11] << 8 | head[rows, 12]
            cotp: dict[str, npt.NDArray[Any] | pa.Array] = {
                "pdu_code": pa.array([_hex8(COTP_DT)] * m, pa.string()),
                "pdu_name": pa.array([COTP_PDU_TYPES[COTP_DT]] * m, pa.string()),
                "tpdu_number": head[rows, 6] & 0x7F,
                "last_data_unit": np.ones(m, dtype=np.bool_),
            }
            for name in ("destination_reference", "source_reference", "tpdu_class", "tpdu_size", "reason"):
                cotp[name] = pa.nulls(m, pa.int64())
            for name in ("calling_tsap", "called_tsap"):
                cotp[name] = pa.nulls(m, pa.string())
            error_class = head[rows, 17]
            error_code = head[rows, 18]
            s7: dict[str, npt.NDArray[Any] | pa.Array] = {
                "rosctr_code": rosctr[rows],
                "rosctr_name": pa.array(rosctr_names, pa.string()),
                "pdu_reference": references_m,
                "function_code": pa.array([_hex8(FN_READ_VAR)] * m, pa.string()),
                "function_name": pa.array([FUNCTIONS[FN_READ_VAR]] * m, pa.string()),
                "error_class": _ERROR_CLASS_NAMES.take(pa.array(error_class, pa.int64(), mask=~is_ack)),
                "error_code": _HEX8_ARRAY.take(pa.array(error_code, pa.int64(), mask=~is_ack)),
            }
            for name in ("subfunction_code", "subfunction_name", "pi_service"):
                s7[name] = pa.nulls(m, pa.string())
            for name in ("max_amq_calling", "max_amq_called", "pdu_length"):
                s7[name] = pa.nulls(m, pa.int64())
            s7["pi_arguments"] = pa.nulls(m, pa.list_(pa.string()))
            return (
                EventColumns(Cotp, rows, cotp),
                EventColumns(S7comm, rows, s7),
                _variable_columns(
                    rows,
                    count[rows],
                    is_ack,
                    references_m,
                    matched,
                    ack_slot[rows],
                    codes,
                    sizes,
                    value_bytes,
                ),
            )

        return BatchResult(handled, apply=apply, build=build)

    # ------------------------------------------------------------------ COTP

    def _cotp(self, header: bytes, ctx: PduContext) -> None:
        kind = header[0] >> 4
        name = COTP_PDU_TYPES.get(kind)
        if name is None:
            ctx.weird("s7comm_cotp_unknown_type", _hex8(header[0]))
            name = f"Unknown COTP PDU-0x{kind:02x}"
        fields: dict[str, Any] = {}
        if kind in (COTP_CR, COTP_CC, COTP_DR, COTP_DC):
            minimum = 5 if kind == COTP_DC else 6
            if len(header) < minimum:
                ctx.weird("s7comm_cotp_bad_length", f"{name} header of {len(header)} bytes")
            else:
                fields["destination_reference"] = _u16(header, 1)
                fields["source_reference"] = _u16(header, 3)
                if kind in (COTP_CR, COTP_CC):
                    fields["tpdu_class"] = header[5] >> 4
                    fields.update(self._connect_parameters(header[6:], ctx))
                elif kind == COTP_DR:
                    fields["reason"] = header[5]
        elif kind == COTP_DT and len(header) == 2:  # class 0
            fields["tpdu_number"] = header[1] & 0x7F
            fields["last_data_unit"] = bool(header[1] & 0x80)
        elif kind in (COTP_DT, COTP_ED, COTP_AK, COTP_EA, COTP_RJ, COTP_ER):
            if len(header) < 4:
                ctx.weird("s7comm_cotp_bad_length", f"{name} header of {len(header)} bytes")
            else:
                fields["destination_reference"] = _u16(header, 1)
                if kind in (COTP_DT, COTP_ED):
                    fields["tpdu_number"] = header[3] & 0x7F
                    fields["last_data_unit"] = bool(header[3] & 0x80)
                elif kind == COTP_ER:
                    fields["reason"] = header[3]
                else:
                    fields["tpdu_number"] = header[3] & 0x7F
        ctx.emit(Cotp(**ctx.where(), pdu_code=_hex8(kind), pdu_name=name, **fields))

    @staticmethod
    def _connect_parameters(variable: bytes, ctx: PduContext) -> dict[str, Any]:
        params = _cotp_parameters(variable)
        if params is None:
            ctx.weird("s7comm_cotp_bad_parameter", f"parameter overruns the {len(variable)}-byte part")
            return {}
        fields: dict[str, Any] = {}
        if COTP_PARAM_CALLING_TSAP in params:
            fields["calling_tsap"] = _tsap(params[COTP_PARAM_CALLING_TSAP])
        if COTP_PARAM_CALLED_TSAP in params:
            fields["called_tsap"] = _tsap(params[COTP_PARAM_CALLED_TSAP])
        size = params.get(COTP_PARAM_TPDU_SIZE)
        preferred = params.get(COTP_PARAM_PREFERRED_TPDU_SIZE)
        if size is not None and len(size) == 1 and 7 <= size[0] <= 13:
            fields["tpdu_size"] = 1 << size[0]
        elif size is not None:
            ctx.weird("s7comm_cotp_bad_parameter", f"TPDU size {size.hex()}")
        elif preferred:
            fields["tpdu_size"] = 128 * int.from_bytes(preferred[:4], "big")
        return fields

    def _data(self, header: bytes, user_data: bytes, ctx: PduContext) -> None:
        # Class 0 header: type, TPDU-NR + EOT; normal format: type, destination reference, TPDU-NR + EOT.
        eot = header[1] if len(header) == 2 else (header[3] if len(header) >= 4 else 0x80)
        last = bool(eot & 0x80)
        segments = self._segments[ctx.is_orig]
        if not last:
            if len(segments) + len(user_data) > MAX_SEGMENTED_BYTES:
                ctx.weird("s7comm_cotp_reassembly_overflow", f"over {MAX_SEGMENTED_BYTES} bytes without EOT")
                segments.clear()
                return
            segments += user_data
            return
        if segments:
            user_data = bytes(segments) + user_data
            segments.clear()
        if not user_data:
            return
        if user_data[0] == S7COMM_ID:
            self._s7(user_data, ctx)
        elif user_data[0] == S7COMM_PLUS_ID:
            self._s7plus(user_data, ctx)
        else:
            ctx.weird("s7comm_unknown_protocol_id", _hex8(user_data[0]))

    # ------------------------------------------------------------------ S7comm

    def _s7(self, pdu: bytes, ctx: PduContext) -> None:
        header_size = 12 if len(pdu) >= 2 and pdu[1] in (ROSCTR_ACK, ROSCTR_ACK_DATA) else 10
        if len(pdu) < header_size:
            ctx.weird("s7comm_truncated_header", f"{len(pdu)}-byte S7comm PDU")
            return
        rosctr, parameter_length, data_length = pdu[1], _u16(pdu, 6), _u16(pdu, 8)
        size = header_size + parameter_length + data_length
        if size > len(pdu):
            ctx.weird("s7comm_truncated_pdu", f"header announces {size} bytes, PDU has {len(pdu)}")
        elif size < len(pdu):
            ctx.weird("s7comm_trailing_bytes", f"header announces {size} bytes, PDU has {len(pdu)}")
        header = _S7Header(
            rosctr=rosctr,
            pdu_reference=_u16(pdu, 4),
            error_class=pdu[10] if header_size == 12 else None,
            error_code=pdu[11] if header_size == 12 else None,
            parameter=pdu[header_size : header_size + parameter_length],
            data=pdu[header_size + parameter_length : size],
        )
        if rosctr == ROSCTR_USERDATA:
            self._userdata(header, ctx)
        elif rosctr in ROSCTR_NAMES:
            self._job_or_ack(header, ctx)
        else:
            ctx.weird("s7comm_unknown_rosctr", _hex8(rosctr))
            ctx.emit(
                S7comm(
                    **ctx.where(),
                    rosctr_code=rosctr,
                    rosctr_name="unknown",
                    pdu_reference=header.pdu_reference,
                )
            )

    def _job_or_ack(self, header: _S7Header, ctx: PduContext) -> None:
        param, rosctr = header.parameter, header.rosctr
        fields: dict[str, Any] = {}
        details: list[Event] = []
        function = param[0] if param else None
        if function is not None:
            fields["function_code"] = _hex8(function)
            fields["function_name"] = FUNCTIONS.get(function, "unknown")
        elif rosctr == ROSCTR_JOB:
            ctx.weird("s7comm_missing_parameter", "job without function code")
        if header.error_class is not None and header.error_code is not None:
            fields["error_class"] = _error_class_name(header.error_class)
            fields["error_code"] = _hex8(header.error_code)
        if function == FN_SETUP_COMMUNICATION and rosctr != ROSCTR_ACK:
            if len(param) >= 8:
                fields["max_amq_calling"] = _u16(param, 2)
                fields["max_amq_called"] = _u16(param, 4)
                fields["pdu_length"] = _u16(param, 6)
            else:
                ctx.weird("s7comm_truncated_parameter", f"setup communication, {len(param)} bytes")
        elif function == FN_PLC_CONTROL and rosctr == ROSCTR_JOB:
            fields.update(self._pi_service(param, ctx))
        elif function == FN_PLC_STOP and rosctr == ROSCTR_JOB:
            if len(param) >= 7 and 7 + param[6] <= len(param):
                fields["pi_service"] = param[7 : 7 + param[6]].decode("ascii", "replace")
            else:
                ctx.weird("s7comm_truncated_parameter", f"PLC stop, {len(param)} bytes")
        elif function in (FN_READ_VAR, FN_WRITE_VAR) and rosctr != ROSCTR_ACK:
            details.extend(self._variables(header, function, ctx))
        elif function in TRANSFER_FUNCTIONS and rosctr != ROSCTR_ACK:
            details.append(self._transfer(header, function, ctx))
        ctx.emit(
            S7comm(
                **ctx.where(),
                rosctr_code=rosctr,
                rosctr_name=ROSCTR_NAMES[rosctr],
                pdu_reference=header.pdu_reference,
                **fields,
            )
        )
        for event in details:
            ctx.emit(event)

    @staticmethod
    def _pi_service(param: bytes, ctx: PduContext) -> dict[str, Any]:
        """PLC control (PI service start): function, 7 bytes, block length, block, name length, name.

        The parameter block is read as Wireshark does, by service: a list of 8-character block file
        names (count, reserved, names) for ``_INSE``/``_INS2``/``_DELE``, one ASCII argument for
        ``P_PROGRAM``/``_MODU``/``_GARB``, and length-prefixed strings (each padded to an even size)
        for the NC services ``_N_*``, whose passwords are replaced by :data:`REDACTED`.
        """
        if len(param) < 10 or 10 + _u16(param, 8) >= len(param):
            ctx.weird("s7comm_truncated_parameter", f"PLC control, {len(param)} bytes")
            return {}
        block_length = _u16(param, 8)
        block = param[10 : 10 + block_length]
        name_length = param[10 + block_length]
        raw_name = param[11 + block_length : 11 + block_length + name_length]
        if len(raw_name) < name_length:
            ctx.weird("s7comm_truncated_parameter", f"PLC control service name, {len(param)} bytes")
        service = raw_name.decode("ascii", "replace")
        fields: dict[str, Any] = {
            "subfunction_code": service,
            "subfunction_name": PI_SERVICES.get(service, "unknown"),
            "pi_service": service,
        }
        if service in PI_BLOCK_LIST_SERVICES:
            count = block[0] if block else 0
            names = block[2 : 2 + 8 * min(count, MAX_PI_ARGUMENTS)]
            if len(block) < 2 + 8 * count:
                ctx.weird(
                    "s7comm_truncated_parameter", f"{service} lists {count} blocks in {len(block)} bytes"
                )
            fields["pi_arguments"] = [
                names[i : i + 8].decode("ascii", "replace") for i in range(0, len(names) - 7, 8)
            ]
        elif service in PI_ARGUMENT_SERVICES:
            fields["pi_arguments"] = [block.decode("ascii", "replace")] if block else []
        elif service.startswith("_N_"):
            fields["pi_arguments"] = _nc_arguments(service, block, ctx)
        return fields

    def _transfer(self, header: _S7Header, function: int, ctx: PduContext) -> S7commUploadDownload:
        """Block upload / download (functions 0x1a-0x1f) of a job or ack-data."""
        param, data, rosctr = header.parameter, header.data, header.rosctr
        fields: dict[str, Any] = {}
        if len(param) >= 2:
            fields["function_status"] = _hex8(param[1])
        truncated = False
        if rosctr == ROSCTR_JOB:
            if len(param) >= 8:
                fields["session_id"] = _u32(param, 4)
            else:
                truncated = True
            if function in FILENAME_FUNCTIONS:
                if len(param) >= 9 and 9 + param[8] <= len(param):
                    filename = param[9 : 9 + param[8]].decode("ascii", "replace")
                    if filename:
                        block_type, block_number, filesystem = _filename_fields(filename)
                        fields.update(
                            filename=filename,
                            block_type=block_type,
                            block_number=block_number,
                            destination_filesystem=filesystem,
                        )
                    rest = param[9 + param[8] :]
                    if function == FN_REQUEST_DOWNLOAD and len(rest) >= 8 and rest[0] >= 7:
                        fields["blocklength"] = _ascii_number(rest[2:8])  # '1' + load memory length
                else:
                    truncated = True
        elif function == FN_START_UPLOAD:
            if len(param) >= 9 and 9 + param[8] <= len(param):
                fields["session_id"] = _u32(param, 4)
                fields["blocklength"] = _ascii_number(param[9 : 9 + param[8]])
            else:
                truncated = True
        elif function in (FN_UPLOAD, FN_DOWNLOAD_BLOCK):
            if len(data) >= 2:
                fields["blocklength"] = _u16(data, 0)
            else:
                truncated = True
        if truncated:
            ctx.weird("s7comm_truncated_parameter", f"{FUNCTIONS[function]}, {len(param)} bytes")
        return S7commUploadDownload(
            **ctx.where(),
            rosctr=ROSCTR_NAMES[rosctr],
            pdu_reference=header.pdu_reference,
            function_name=FUNCTIONS[function],
            **fields,
        )

    def _variables(self, header: _S7Header, function: int, ctx: PduContext) -> list[Event]:
        """Read/write variable items: job addresses (and write values), ack-data results."""
        param, data, rosctr = header.parameter, header.data, header.rosctr
        count = param[1] if len(param) >= 2 else 0
        if len(param) < 2:
            ctx.weird("s7comm_truncated_parameter", f"{FUNCTIONS[function]} without item count")
        base: dict[str, Any] = {
            "rosctr": ROSCTR_NAMES[rosctr],
            "pdu_reference": header.pdu_reference,
            "function_name": FUNCTIONS[function],
        }
        rows: list[dict[str, Any]] = [{} for _ in range(count)]
        if rosctr == ROSCTR_JOB:
            items = self._items(param, count, ctx)
            _remember(self._var_requests, (ctx.is_orig, header.pdu_reference), items)
            for row, item in zip(rows, items, strict=False):
                row.update(item.fields())
            del rows[len(items) :]
            if function == FN_WRITE_VAR:
                self._results(data, rows, ctx, values=True)
                for row in rows:  # a job's data items carry the reserved code 0x00: not a result
                    row.pop("return_code", None)
                    row.pop("return_code_name", None)
        else:
            matched = self._var_requests.pop((not ctx.is_orig, header.pdu_reference), [])
            for row, item in zip(rows, matched, strict=False):
                row.update(item.fields())
            parsed = self._results(data, rows, ctx, values=function == FN_READ_VAR)
            del rows[max(parsed, len(matched)) :]  # an item count the data does not back is not believed
        return [S7commVariable(**ctx.where(), **base, item_number=i + 1, **row) for i, row in enumerate(rows)]

    @staticmethod
    def _items(param: bytes, count: int, ctx: PduContext) -> list[_Item]:
        items: list[_Item] = []
        offset = 2
        for _ in range(count):
            if offset + 3 > len(param) or offset + 2 + param[offset + 1] > len(param):
                ctx.weird("s7comm_truncated_parameter", f"item {len(items) + 1} of {count} overruns")
                break
            spec_length = param[offset + 1]
            if spec_length == 0:
                ctx.weird("s7comm_bad_item", f"item {len(items) + 1} of {count} has an empty address")
                break
            spec = param[offset + 2 : offset + 2 + spec_length]
            item = _Item(syntax_id=spec[0])
            if item.syntax_id == SYNTAX_S7ANY and spec_length >= 10:
                item.transport_size = spec[1]
                item.length = _u16(spec, 2)
                item.db_number = _u16(spec, 4)
                item.area = spec[6]
                item.address = _u24(spec, 7)
            items.append(item)
            offset += 2 + spec_length
        return items

    @staticmethod
    def _results(data: bytes, rows: list[dict[str, Any]], ctx: PduContext, values: bool) -> int:
        """Data items: return code, then (``values``) transport size, length and the value.

        Returns the number of data items found (the rest of ``rows`` got no result).
        """
        offset = 0
        for index, row in enumerate(rows):
            if not values:
                if offset >= len(data):
                    ctx.weird("s7comm_truncated_data", f"result {index + 1} of {len(rows)} missing")
                    return index
                code = data[offset]
                row.update(return_code=_hex8(code), return_code_name=RETURN_CODES.get(code, "Unknown"))
                offset += 1
                continue
            if offset + 4 > len(data):
                ctx.weird("s7comm_truncated_data", f"data item {index + 1} of {len(rows)} missing")
                return index
            code, size, length = data[offset], data[offset + 1], _u16(data, offset + 2)
            value_bytes = _data_bytes(size, length)
            row.update(
                return_code=_hex8(code),
                return_code_name=RETURN_CODES.get(code, "Unknown"),
                data_transport_size=_hex8(size),
                data_length=value_bytes,
            )
            offset += 4
            if code in (0x00, RETURN_SUCCESS):
                offset += value_bytes + (value_bytes % 2 if index + 1 < len(rows) else 0)
                if offset > len(data):
                    ctx.weird("s7comm_truncated_data", f"data item {index + 1} value overruns")
                    return index + 1
        return len(rows)

    # ------------------------------------------------------------------ userdata

    def _userdata(self, header: _S7Header, ctx: PduContext) -> None:
        param = header.parameter
        base: dict[str, Any] = {
            "rosctr_code": ROSCTR_USERDATA,
            "rosctr_name": ROSCTR_NAMES[ROSCTR_USERDATA],
            "pdu_reference": header.pdu_reference,
        }
        if len(param) < 8:
            ctx.weird("s7comm_truncated_parameter", f"userdata parameter of {len(param)} bytes")
            ctx.emit(S7comm(**ctx.where(), **base))
            return
        method, type_group, subfunction = param[4], param[5], param[6]
        kind, group = type_group >> 4, type_group & 0x0F
        fields: dict[str, Any] = {
            "function_code": _hex8(type_group),
            "function_name": f"{USERDATA_KINDS.get(kind, 'Unknown')}: "
            f"{USERDATA_GROUPS.get(group, 'unknown')}",
            "subfunction_code": _hex8(subfunction),
        }
        table = USERDATA_SUBFUNCTIONS.get(group)
        if table is not None:
            fields["subfunction_name"] = table.get(subfunction, "unknown")
        unit_reference, more_units = 0, False
        if param[3] >= 8 and len(param) >= 12:  # long form: data unit reference, last unit, error code
            unit_reference, more_units = param[8], param[9] != 0
            error = _u16(param, 10)
            fields["error_class"] = "No error" if error == 0 else "Parameter Error"
            fields["error_code"] = f"0x{error:02x}"
        ctx.emit(S7comm(**ctx.where(), **base, **fields))
        if group == GROUP_CPU and subfunction == SUBFUNCTION_READ_SZL:
            self._read_szl(header, method, kind == 0x8, unit_reference, more_units, ctx)

    def _read_szl(
        self,
        header: _S7Header,
        method: int,
        response: bool,
        unit_reference: int,
        more_units: bool,
        ctx: PduContext,
    ) -> None:
        data, reference = header.data, header.pdu_reference
        if len(data) < 4:
            return
        code, length = data[0], _u16(data, 2)
        body = data[4 : 4 + length]
        if len(body) < length:
            ctx.weird("s7comm_truncated_data", f"SZL data announces {length} bytes, has {len(body)}")
        fragment_key = (ctx.is_orig, unit_reference)
        pending = self._szl_fragments.get(fragment_key) if unit_reference else None
        if response and pending is not None:
            if len(pending.data) + len(body) > MAX_SZL_BYTES:
                ctx.weird("s7comm_szl_reassembly_overflow", f"over {MAX_SZL_BYTES} bytes")
                del self._szl_fragments[fragment_key]
                return
            pending.data += body
            if not more_units:
                del self._szl_fragments[fragment_key]
                self._identification(pending.pdu_reference, bytes(pending.data), ctx)
            return
        szl: tuple[int, int] | None = None
        if len(body) >= 4:
            szl = (_u16(body, 0), _u16(body, 2))
        if not response:
            if szl is None:
                return  # a "next fragment, please" request carries no SZL id
            _remember(self._szl_requests, (ctx.is_orig, reference), szl)
        else:
            asked = self._szl_requests.pop((not ctx.is_orig, reference), None)
            if szl is None:
                szl = asked
        ctx.emit(
            S7commReadSzl(
                **ctx.where(),
                pdu_reference=reference,
                method=USERDATA_METHODS.get(method, "Unknown"),
                szl_id=None if szl is None else _hex16(szl[0]),
                szl_id_name=None if szl is None else SZL_LIST_NAMES.get(szl[0] & 0xFF, "Unknown"),
                szl_index=None if szl is None else _hex16(szl[1]),
                return_code=_hex8(code),
                return_code_name=RETURN_CODES.get(code, "Unknown"),
            )
        )
        if not response or code != RETURN_SUCCESS or szl is None:
            return
        if more_units and unit_reference:
            _remember(self._szl_fragments, fragment_key, _SzlFragments(reference, bytearray(body)))
        else:
            self._identification(reference, body, ctx)

    def _identification(self, reference: int, body: bytes, ctx: PduContext) -> None:
        """Decode a complete module (0xXY11) or component (0xXY1C) identification list."""
        if len(body) < 8:
            return
        szl_id, szl_index, record, count = _u16(body, 0), _u16(body, 2), _u16(body, 4), _u16(body, 6)
        partial = szl_id & 0xFF
        need = {
            SZL_MODULE_IDENTIFICATION: SZL_MODULE_RECORD,
            SZL_COMPONENT_IDENTIFICATION: SZL_COMPONENT_RECORD,
        }
        if partial not in need:
            return
        if record < need[partial]:
            ctx.weird("s7comm_szl_bad_record", f"SZL {_hex16(szl_id)} records of {record} bytes")
            return
        records = body[8:]
        if count * record > len(records):
            ctx.weird("s7comm_szl_truncated", f"{count} records of {record} bytes in {len(records)}")
        fields: dict[str, Any] = {}
        for start in range(0, min(count, MAX_SZL_RECORDS, len(records) // record) * record, record):
            entry = records[start : start + record]
            index = _u16(entry, 0)
            if partial == SZL_MODULE_IDENTIFICATION:
                if index == 0x0001:
                    fields["order_number"] = _text(entry[2:22])
                    fields["module_type_id"] = _u16(entry, 22)
                elif index == 0x0007:
                    fields["firmware_version"] = _firmware_version(_u16(entry, 24), _u16(entry, 26))
            elif index in COMPONENT_FIELDS:
                fields[COMPONENT_FIELDS[index]] = _text(entry[2:34])
        if not fields:
            return
        ctx.emit(
            S7commIdentification(
                **ctx.where(),
                pdu_reference=reference,
                szl_id=_hex16(szl_id),
                szl_index=_hex16(szl_index),
                **fields,
            )
        )

    # ------------------------------------------------------------------ S7comm-plus

    def _s7plus(self, pdu: bytes, ctx: PduContext) -> None:
        if len(pdu) < 4:
            ctx.weird("s7comm_plus_truncated_header", f"{len(pdu)}-byte S7comm-plus PDU")
            return
        version = pdu[1]
        if version not in PLUS_VERSIONS:
            ctx.weird("s7comm_plus_unknown_version", _hex8(version))
        if version == PLUS_KEEPALIVE:
            ctx.emit(S7commPlus(**ctx.where(), version=version))
            return
        length = _u16(pdu, 2)
        fields: dict[str, Any] = {"data_length": length}
        if len(pdu) < 4 + length:
            ctx.weird("s7comm_plus_truncated_data", f"header announces {length} bytes, has {len(pdu) - 4}")
        if version != PLUS_EXT_KEEPALIVE:
            continuation = self._plus_fragmented[ctx.is_orig]
            # Without the 4-byte trailer (0x72, version, 0x0000) more fragments of the message follow.
            self._plus_fragmented[ctx.is_orig] = len(pdu) <= 4 + length
            if not continuation:
                fields.update(self._plus_data(pdu[4 : 4 + length], version, ctx))
        ctx.emit(S7commPlus(**ctx.where(), version=version, **fields))

    @staticmethod
    def _plus_data(body: bytes, version: int, ctx: PduContext) -> dict[str, Any]:
        offset = 0
        if version == PLUS_V3:  # integrity part first: digest length, digest
            offset = 1 + body[0] if body else 1
        if offset >= len(body):
            ctx.weird("s7comm_plus_truncated_data", f"no opcode in {len(body)} data bytes")
            return {}
        opcode = body[offset]
        fields: dict[str, Any] = {
            "opcode": _hex8(opcode),
            "opcode_name": PLUS_OPCODES.get(opcode, f"Unknown s7comm-plus opcode-0x{opcode:02x}"),
        }
        if opcode in (PLUS_REQUEST, PLUS_RESPONSE, PLUS_RESPONSE2):
            if offset + 9 > len(body):
                ctx.weird("s7comm_plus_truncated_data", f"opcode header cut at {len(body)} bytes")
                return fields
            function = _u16(body, offset + 3)
            fields["function_code"] = _hex16(function)
            fields["function_name"] = PLUS_FUNCTIONS.get(
                function, f"Unknown s7comm-plus function-0x{function:04x}"
            )
            fields["sequence_number"] = _u16(body, offset + 7)
            if opcode == PLUS_REQUEST and offset + 13 <= len(body):
                fields["session_id"] = _u32(body, offset + 9)
        return fields
