"""DNP3 (IEEE Std 1815-2012) over TCP and UDP: link frames, transport reassembly, application layer.

What is dissected, layer by layer (clause numbers of IEEE Std 1815-2012):

- **Data link layer** (clause 9, FT3 frame format of IEC 60870-5-1): start bytes ``0x05 0x64``,
  length, control octet (DIR, PRM, FCB/FCV for primary frames, DFC for secondary ones, link function
  code), destination and source addresses. The CRC-16 (polynomial 0x3D65, reflected, complemented)
  of the header and of every 16-byte user-data block is verified; a bad CRC is a weird and the frame
  is not used. Every frame is reported in ``dnp3_link``, including link-only frames (no user data:
  REQUEST_LINK_STATUS, LINK_STATUS, RESET_LINK_STATES, ACK...).
- **Transport function** (clause 8): FIN/FIR/sequence octet of each frame's user data. Segments are
  reassembled per direction and link address pair into application fragments (FIR starts, FIN ends,
  sequence numbers must follow modulo 64); gaps, a missing first segment and oversized fragments are
  weirds.
- **Application layer** (clause 4, object library of Annex A): application control (FIR, FIN, CON,
  UNS, SEQ), request and response function codes (named as Zeek names them: READ, WRITE, SELECT,
  OPERATE, DIRECT_OPERATE, COLD_RESTART, WARM_RESTART, OPEN_FILE, ..., RESPONSE,
  UNSOLICITED_RESPONSE), the internal indications of responses (the 16-bit value Zeek logs, IIN1 in
  the high byte, and the names of the bits set), and every object header (group, variation, qualifier
  with its prefix and range codes, start/stop range or count). Object data is decoded for the static,
  event, counter, analog, time, class, IIN, octet-string, BCD and device-attribute groups into
  ``dnp3_points`` (index, flags, value, time); control blocks (CROB g12v1, pattern control block
  g12v2, analog output blocks g41v1-4) go to ``dnp3_control`` with the point index, control code and
  value; file objects (g70v2-v8: authentication, file command, command status, transport, transport
  status, descriptor, specification string) go to ``dnp3_file``.

``dnp3`` is Zeek's ``dnp3.log``: one row per response, carrying the function code of the last
request seen on the connection before it (Zeek's pairing, including its overwrite of an unanswered
request by the next one), and one row for a request still unanswered when the flow ends.
``dnp3_application`` keeps every application fragment, so no request is lost to that pairing.

Recognition is by content only: a payload is DNP3 when it starts with ``0x05 0x64``, has a link
length of at least 5 and a valid header CRC (port 20000 is only a hint). Field names follow Zeek's
DNP3 events and logs (``len``, ``ctrl``, ``dest_addr``, ``src_addr``, ``application_control``,
``fc_request``, ``fc_reply``, ``iin``, ``time48``) and CISA ICSNPP's ``dnp3_control`` and
``dnp3_objects`` logs (``function_code``, ``object_count``, ``range_low``, ``range_high``,
``index_number``, ``trip_control_code``, ``operation_type``, ``execute_count``, ...).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import numba
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
    PduContext,
    Transport,
    Verdict,
)

START = b"\x05\x64"
HEADER_LEN = 10
"""Start (2), length, control, destination (2), source (2), CRC (2)."""
MIN_LINK_LENGTH = 5
"""The length octet counts control, addresses and user data, never less than 5."""
BLOCK = 16
"""User data is sent in blocks of up to 16 octets, each followed by its CRC."""
MAX_FRAGMENT = 65536
"""Largest reassembled application fragment kept (the standard suggests 2048)."""
MAX_STREAMS = 32
"""Transport reassemblies kept per flow (direction, source, destination)."""
RESPONSE_CODES = frozenset({0x81, 0x82, 0x83})

FUNCTION_CODES: dict[int, str] = {
    0x00: "CONFIRM",
    0x01: "READ",
    0x02: "WRITE",
    0x03: "SELECT",
    0x04: "OPERATE",
    0x05: "DIRECT_OPERATE",
    0x06: "DIRECT_OPERATE_NR",
    0x07: "IMMED_FREEZE",
    0x08: "IMMED_FREEZE_NR",
    0x09: "FREEZE_CLEAR",
    0x0A: "FREEZE_CLEAR_NR",
    0x0B: "FREEZE_AT_TIME",
    0x0C: "FREEZE_AT_TIME_NR",
    0x0D: "COLD_RESTART",
    0x0E: "WARM_RESTART",
    0x0F: "INITIALIZE_DATA",
    0x10: "INITIALIZE_APPL",
    0x11: "START_APPL",
    0x12: "STOP_APPL",
    0x13: "SAVE_CONFIG",
    0x14: "ENABLE_UNSOLICITED",
    0x15: "DISABLE_UNSOLICITED",
    0x16: "ASSIGN_CLASS",
    0x17: "DELAY_MEASURE",
    0x18: "RECORD_CURRENT_TIME",
    0x19: "OPEN_FILE",
    0x1A: "CLOSE_FILE",
    0x1B: "DELETE_FILE",
    0x1C: "GET_FILE_INFO",
    0x1D: "AUTHENTICATE_FILE",
    0x1E: "ABORT_FILE",
    0x1F: "ACTIVATE_CONFIG",
    0x20: "AUTHENTICATE_REQ",
    0x21: "AUTHENTICATE_REQ_NR",
    0x81: "RESPONSE",
    0x82: "UNSOLICITED_RESPONSE",
    0x83: "AUTHENTICATE_RESP",
}

PRIMARY_LINK_FUNCTIONS: dict[int, str] = {
    0: "RESET_LINK_STATES",
    1: "RESET_USER_PROCESS",
    2: "TEST_LINK_STATES",
    3: "CONFIRMED_USER_DATA",
    4: "UNCONFIRMED_USER_DATA",
    9: "REQUEST_LINK_STATUS",
}
SECONDARY_LINK_FUNCTIONS: dict[int, str] = {
    0: "ACK",
    1: "NACK",
    11: "LINK_STATUS",
    14: "NOT_FUNCTIONING",
    15: "NOT_SUPPORTED",
}

IIN_FLAGS: tuple[tuple[int, str], ...] = (
    (0x0100, "BROADCAST"),
    (0x0200, "CLASS_1_EVENTS"),
    (0x0400, "CLASS_2_EVENTS"),
    (0x0800, "CLASS_3_EVENTS"),
    (0x1000, "NEED_TIME"),
    (0x2000, "LOCAL_CONTROL"),
    (0x4000, "DEVICE_TROUBLE"),
    (0x8000, "DEVICE_RESTART"),
    (0x0001, "NO_FUNC_CODE_SUPPORT"),
    (0x0002, "OBJECT_UNKNOWN"),
    (0x0004, "PARAMETER_ERROR"),
    (0x0008, "EVENT_BUFFER_OVERFLOW"),
    (0x0010, "ALREADY_EXECUTING"),
    (0x0020, "CONFIG_CORRUPT"),
    (0x0040, "RESERVED_2"),
    (0x0080, "RESERVED_1"),
)
"""IIN bits in the 16-bit value (IIN1 is the high byte, as Zeek's ``iin``)."""

TRIP_CLOSE_CODES = ("NUL", "CLOSE", "TRIP", "RESERVED")
OPERATION_TYPES: dict[int, str] = {0: "NUL", 1: "PULSE_ON", 2: "PULSE_OFF", 3: "LATCH_ON", 4: "LATCH_OFF"}
COMMAND_STATUS: dict[int, str] = {
    0: "SUCCESS",
    1: "TIMEOUT",
    2: "NO_SELECT",
    3: "FORMAT_ERROR",
    4: "NOT_SUPPORTED",
    5: "ALREADY_ACTIVE",
    6: "HARDWARE_ERROR",
    7: "LOCAL",
    8: "TOO_MANY_OBJS",
    9: "NOT_AUTHORIZED",
    10: "AUTOMATION_INHIBIT",
    11: "PROCESSING_LIMITED",
    12: "OUT_OF_RANGE",
    13: "DOWNSTREAM_LOCAL",
    14: "ALREADY_COMPLETE",
    15: "BLOCKED",
    16: "CANCELLED",
    17: "BLOCKED_OTHER_MASTER",
    18: "DOWNSTREAM_FAIL",
    126: "NON_PARTICIPATING",
    127: "UNDEFINED",
}
FILE_STATUS: dict[int, str] = {
    0: "SUCCESS",
    1: "PERMISSION_DENIED",
    2: "INVALID_MODE",
    3: "FILE_NOT_FOUND",
    4: "FILE_LOCKED",
    5: "TOO_MANY_OPEN",
    6: "INVALID_HANDLE",
    7: "WRITE_BLOCK_SIZE",
    8: "COMM_LOST",
    9: "CANNOT_ABORT",
    16: "NOT_OPENED",
    17: "HANDLE_EXPIRED",
    18: "BUFFER_OVERRUN",
    19: "FATAL",
    20: "BLOCK_SEQ",
    255: "UNDEFINED",
}
FILE_MODES: dict[int, str] = {0: "NULL", 1: "READ", 2: "WRITE", 3: "APPEND"}


def _name(table: dict[int, str], code: int) -> str:
    return table.get(code, f"unknown-{code}")


def function_name(fc: int) -> str:
    """Zeek's name of an application function code (``unknown-<n>`` for reserved codes)."""
    return _name(FUNCTION_CODES, fc)


def iin_flags(iin: int) -> list[str]:
    """Names of the internal-indication bits set in ``iin`` (IIN1 first, then IIN2)."""
    return [name for bit, name in IIN_FLAGS if iin & bit]


# ---------------------------------------------------------------------------- CRC


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """DNP3 CRC of ``data`` (sent least significant octet first after the block it protects)."""
    crc = 0
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return ~crc & 0xFFFF


def _crc_ok(data: bytes, start: int, end: int) -> bool:
    """Is the CRC of ``data[start:end]`` the two octets at ``end``? (Caller checked the bounds.)"""
    return crc16(data[start:end]) == data[end] | (data[end + 1] << 8)


def frame_size(length: int) -> int:
    """Octets on the wire of a link frame whose length octet is ``length`` (>= 5)."""
    user = length - MIN_LINK_LENGTH
    return HEADER_LEN + user + 2 * ((user + BLOCK - 1) // BLOCK)


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class Dnp3(Event):
    """Zeek's dnp3.log: a response with the last request before it, or an unanswered request."""

    log: ClassVar[str] = "dnp3"

    fc_request: str | None
    fc_reply: str | None
    iin: int | None
    iin_flags: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Dnp3Link(Event):
    """One data link frame (with or without user data)."""

    log: ClassVar[str] = "dnp3_link"

    len: int
    ctrl: int
    dir: bool
    prm: bool
    fcb: bool | None
    fcv: bool | None
    dfc: bool | None
    link_fc: int
    link_function: str
    dest_addr: int
    src_addr: int
    user_data_len: int
    tp_fir: bool | None
    tp_fin: bool | None
    tp_seq: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Dnp3Application(Event):
    """One reassembled application fragment (a request or a response)."""

    log: ClassVar[str] = "dnp3_application"

    len: int
    ctrl: int
    dest_addr: int
    src_addr: int
    frames: int
    fragment_len: int
    application_control: int
    fir: bool
    fin: bool
    con: bool
    uns: bool
    seq: int
    fc: int
    function_code: str
    iin: int | None
    iin_flags: list[str]
    objects: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Dnp3Object(Event):
    """One object header of an application fragment."""

    log: ClassVar[str] = "dnp3_objects"

    function_code: str
    seq: int
    group: int
    variation: int
    object_type: str
    qualifier: int
    prefix_code: int
    range_code: int
    object_count: int | None
    range_low: int | None
    range_high: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Dnp3Point(Event):
    """One decoded data object (a point value, an event, a time, an IIN bit, an attribute...)."""

    log: ClassVar[str] = "dnp3_points"

    function_code: str
    seq: int
    group: int
    variation: int
    index: int | None
    flags: int | None
    value: float | None
    time48: int | None
    data: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Dnp3Control(Event):
    """A control block: CROB (g12v1), pattern control block (g12v2) or analog output (g41)."""

    log: ClassVar[str] = "dnp3_control"

    function_code: str
    seq: int
    block_type: str
    group: int
    variation: int
    index_number: int | None
    control_code: int | None
    trip_control_code: str | None
    operation_type: str | None
    queue_bit: bool | None
    clear_bit: bool | None
    execute_count: int | None
    on_time: int | None
    off_time: int | None
    value: float | None
    status: int
    status_code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Dnp3File(Event):
    """A file-transfer object (group 70)."""

    log: ClassVar[str] = "dnp3_file"

    function_code: str
    seq: int
    variation: int
    file_name: str | None
    file_handle: int | None
    block_num: int | None
    last_block: bool | None
    file_size: int | None
    file_type: int | None
    created: int | None
    permissions: int | None
    operational_mode: str | None
    max_block_size: int | None
    request_id: int | None
    status: int | None
    status_code: str | None
    data_len: int | None
    user_name: str | None


# ---------------------------------------------------------------------------- object library

# Fixed-size objects: struct letters (little-endian) and the role of each field.
#   F flags, S control status (reported as flags), value (integer, float or time interval N),
#   T 48-bit absolute time, R 16-bit time relative to the last CTO (g51), u ignored (g50v4 units).
_TOKENS: dict[str, tuple[str, str]] = {
    "F": ("B", "flags"),
    "S": ("B", "flags"),
    "i": ("i", "value"),
    "h": ("h", "value"),
    "I": ("I", "value"),
    "H": ("H", "value"),
    "Q": ("Q", "value"),
    "U": ("B", "value"),
    "f": ("f", "value"),
    "d": ("d", "value"),
    "T": ("6s", "time"),
    "R": ("H", "rel"),
    "N": ("I", "value"),
    "u": ("B", "extra"),
}


@dataclass(frozen=True, slots=True)
class _Layout:
    packer: struct.Struct
    roles: tuple[str, ...]
    state_bits: int
    """1: the value is bit 7 of the flags; 2: bits 7-6 (double-bit); 0: the value is a field."""


def _layout(spec: str, state_bits: int = 0) -> _Layout:
    codes = "".join(_TOKENS[t][0] for t in spec)
    return _Layout(struct.Struct("<" + codes), tuple(_TOKENS[t][1] for t in spec), state_bits)


_EVENT_ANALOG = {1: "Fi", 2: "Fh", 3: "FiT", 4: "FhT", 5: "Ff", 6: "Fd", 7: "FfT", 8: "FdT"}
_COUNTER_EVENT = {1: "FI", 2: "FH", 3: "FI", 4: "FH", 5: "FIT", 6: "FHT", 7: "FIT", 8: "FHT"}
_SPECS: dict[int, dict[int, str]] = {
    20: {1: "FI", 2: "FH", 3: "FI", 4: "FH", 5: "I", 6: "H", 7: "I", 8: "H"},
    21: {**_COUNTER_EVENT, 9: "I", 10: "H", 11: "I", 12: "H"},
    22: _COUNTER_EVENT,
    23: _COUNTER_EVENT,
    30: {1: "Fi", 2: "Fh", 3: "i", 4: "h", 5: "Ff", 6: "Fd"},
    31: {1: "Fi", 2: "Fh", 3: "FiT", 4: "FhT", 5: "i", 6: "h", 7: "Ff", 8: "Fd"},
    32: _EVENT_ANALOG,
    33: _EVENT_ANALOG,
    34: {1: "H", 2: "I", 3: "f"},
    40: {1: "Fi", 2: "Fh", 3: "Ff", 4: "Fd"},
    42: _EVENT_ANALOG,
    43: {1: "Si", 2: "Sh", 3: "SiT", 4: "ShT", 5: "Sf", 6: "Sd", 7: "SfT", 8: "SdT"},
    50: {1: "T", 2: "TN", 3: "T", 4: "TNu"},
    51: {1: "T", 2: "T"},
    52: {1: "H", 2: "H"},
    101: {1: "H", 2: "I", 3: "Q"},
    102: {1: "U"},
}
_STATE1 = {
    1: {2: "F"},
    2: {1: "F", 2: "FT", 3: "FR"},
    10: {2: "F"},
    11: {1: "F", 2: "FT"},
    13: {1: "F", 2: "FT"},
}
_STATE2 = {3: {2: "F"}, 4: {1: "F", 2: "FT", 3: "FR"}}

LAYOUTS: dict[tuple[int, int], _Layout] = {}
for _group, _variations in _SPECS.items():
    for _variation, _spec in _variations.items():
        LAYOUTS[(_group, _variation)] = _layout(_spec)
for _bits, _table in ((1, _STATE1), (2, _STATE2)):
    for _group, _variations in _table.items():
        for _variation, _spec in _variations.items():
            LAYOUTS[(_group, _variation)] = _layout(_spec, _bits)

PACKED_BITS: dict[tuple[int, int], int] = {(1, 1): 1, (3, 1): 2, (10, 1): 1, (12, 3): 1, (80, 1): 1}
"""Objects packed as bit fields: bits per point."""

_CROB = struct.Struct("<BBIIB")
_ANALOG_OUTPUT: dict[int, struct.Struct] = {
    1: struct.Struct("<iB"),
    2: struct.Struct("<hB"),
    3: struct.Struct("<fB"),
    4: struct.Struct("<dB"),
}
CONTROL_BLOCKS: dict[tuple[int, int], str] = {
    (12, 1): "Control Relay Output Block",
    (12, 2): "Pattern Control Block",
    (41, 1): "Analog Output Block",
    (41, 2): "Analog Output Block",
    (41, 3): "Analog Output Block",
    (41, 4): "Analog Output Block",
}
"""``block_type`` names, as ICSNPP's dnp3_control.log spells them."""
OCTET_STRING_GROUPS = frozenset({110, 111, 112, 113})
"""Octet strings and virtual terminal objects: the variation is the object's size."""

_RANGE_SIZES: dict[int, int] = {0: 2, 1: 4, 2: 8, 3: 2, 4: 4, 5: 8, 6: 0, 7: 1, 8: 2, 9: 4, 0xB: 1}
_PREFIX_SIZES: dict[int, int] = {0: 0, 1: 1, 2: 2, 3: 4, 4: 1, 5: 2, 6: 4}

NO_DATA_REQUESTS = frozenset({0x01, 0x07, 0x08, 0x09, 0x0A, 0x14, 0x15, 0x16})
"""Requests whose object headers only name points (READ, freezes, ASSIGN_CLASS, (DIS|EN)ABLE_UNSOL)."""
NO_OBJECT_REQUESTS = frozenset({0x00, 0x0D, 0x0E, 0x0F, 0x13, 0x17, 0x18})
"""Requests that carry no object headers at all (CONFIRM, restarts, DELAY_MEASURE, ...)."""
FREEZE_AT_TIME = frozenset({0x0B, 0x0C})


def _uint(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset : offset + size], "little")


# ---------------------------------------------------------------------------- per-flow state


@dataclass(slots=True)
class _Head:
    """The link header of the first frame of a fragment (Zeek's dnp3_header_block)."""

    length: int
    ctrl: int
    dest: int
    src: int


@dataclass(slots=True)
class _Reassembly:
    head: _Head
    data: bytearray
    next_seq: int
    frames: int


class _Message:
    """Decodes one application fragment's objects, collecting events in wire order."""

    def __init__(self, ctx: PduContext, fc: int, seq: int, data: bytes, offset: int) -> None:
        self.ctx = ctx
        self.fc = fc
        self.name = function_name(fc)
        self.seq = seq
        self.data = data
        self.offset = offset
        self.where = ctx.where()
        self.events: list[Event] = []
        self.headers = 0
        self.cto: int | None = None
        self.response = fc in RESPONSE_CODES

    def weird(self, name: str, detail: str) -> None:
        self.ctx.weird(f"dnp3_{name}", f"{self.name} seq {self.seq}: {detail}")

    # -------------------------------------------------------------- headers

    def parse(self) -> None:
        data, end = self.data, len(self.data)
        if not self.response and self.fc in NO_OBJECT_REQUESTS:
            if self.offset < end:
                self.weird("unexpected_objects", f"{end - self.offset} octets after the header")
            return
        if not self.response and self.fc not in FUNCTION_CODES:
            return
        while self.offset < end:
            if not self._header(data, end):
                return

    def _header(self, data: bytes, end: int) -> bool:
        """Parse one object header and its objects; False when the rest cannot be parsed."""
        start = self.offset
        if end - start < 3:
            self.weird("object_header_truncated", f"{end - start} octets left at offset {start}")
            return False
        group, variation, qualifier = data[start], data[start + 1], data[start + 2]
        prefix_code, range_code = (qualifier >> 4) & 0x07, qualifier & 0x0F
        range_size = _RANGE_SIZES.get(range_code)
        if range_size is None or prefix_code == 7 or qualifier & 0x80:
            self._emit_header(group, variation, qualifier, None, None, None)
            self.weird("invalid_qualifier", f"g{group}v{variation} qualifier 0x{qualifier:02x}")
            return False
        pos = start + 3
        if end - pos < range_size:
            self.weird("object_header_truncated", f"g{group}v{variation} range field")
            return False
        low: int | None = None
        high: int | None = None
        count: int | None = None
        if range_code <= 5:
            half = range_size // 2
            low, high = _uint(data, pos, half), _uint(data, pos + half, half)
            count = high - low + 1
        elif range_code != 6:
            count = _uint(data, pos, range_size)
        self.offset = pos + range_size
        self._emit_header(group, variation, qualifier, count, low, high)
        if count is not None and count <= 0 and range_code <= 5:
            self.weird("invalid_range", f"g{group}v{variation} start {low} > stop {high}")
            return False
        if not count:
            return True
        if not self._has_data(group):
            return self._index_list(group, variation, prefix_code, count)
        return self._objects(group, variation, prefix_code, count, low)

    def _emit_header(
        self, group: int, variation: int, qualifier: int, count: int | None, low: int | None, high: int | None
    ) -> None:
        self.headers += 1
        self.events.append(
            Dnp3Object(
                **self.where,
                function_code=self.name,
                seq=self.seq,
                group=group,
                variation=variation,
                object_type=f"g{group}v{variation}",
                qualifier=qualifier,
                prefix_code=(qualifier >> 4) & 0x07,
                range_code=qualifier & 0x0F,
                object_count=count,
                range_low=low,
                range_high=high,
            )
        )

    def _has_data(self, group: int) -> bool:
        if group == 60:
            return False
        if self.response:
            return True
        if self.fc in NO_DATA_REQUESTS:
            return False
        if self.fc in FREEZE_AT_TIME:
            return group == 50
        return True

    def _index_list(self, group: int, variation: int, prefix_code: int, count: int) -> bool:
        """Skip the point indexes of a header that names points without data (READ g30v1 0x17...).

        Such a header (qualifier 0x17, 0x28, 0x39) is followed by ``count`` index prefixes and no
        object data; other qualifiers of these requests carry nothing after the range field.
        """
        if prefix_code not in (1, 2, 3):
            return True
        needed = count * _PREFIX_SIZES[prefix_code]
        if len(self.data) - self.offset < needed:
            self.weird("object_data_truncated", f"g{group}v{variation}: {count} indexes need {needed} octets")
            return False
        self.offset += needed
        return True

    # -------------------------------------------------------------- objects

    def _objects(self, group: int, variation: int, prefix_code: int, count: int, low: int | None) -> bool:
        key = (group, variation)
        bits = PACKED_BITS.get(key)
        if bits is not None:
            if prefix_code != 0:
                self.weird("invalid_qualifier", f"g{group}v{variation} packed objects with a prefix")
                return False
            return self._packed(group, variation, bits, count, low)
        data, end = self.data, len(self.data)
        prefix_size = _PREFIX_SIZES[prefix_code]
        sized = prefix_code >= 4
        for i in range(count):
            pos = self.offset
            if end - pos < prefix_size:
                self.weird("object_data_truncated", f"g{group}v{variation} object {i} of {count}")
                return False
            prefix = _uint(data, pos, prefix_size) if prefix_size else None
            pos += prefix_size
            index = prefix if (prefix is not None and not sized) else (low + i if low is not None else None)
            size = prefix if sized else self._size(group, variation, pos)
            if size is None:
                self.weird("unknown_object", f"g{group}v{variation}: size unknown, rest of fragment skipped")
                return False
            if end - pos < size:
                self.weird("object_data_truncated", f"g{group}v{variation} object {i} of {count}")
                return False
            self._object(group, variation, index, data[pos : pos + size])
            self.offset = pos + size
        return True

    def _size(self, group: int, variation: int, pos: int) -> int | None:
        """Size of an object without size prefix at ``pos`` (None when it cannot be known)."""
        layout = LAYOUTS.get((group, variation))
        if layout is not None:
            return layout.packer.size
        if (group, variation) in CONTROL_BLOCKS:
            return _CROB.size if group == 12 else _ANALOG_OUTPUT[variation].size
        if group in OCTET_STRING_GROUPS and variation > 0:
            return variation
        data, end = self.data, len(self.data)
        if group == 0 and variation > 0 and end - pos >= 2:
            return 2 + data[pos + 1]
        if group == 70:
            fixed = {2: 12, 3: 26, 7: 20}.get(variation)
            if fixed is not None and end - pos >= 4:
                names = _uint(data, pos + 2, 2)
                if variation == 2 and end - pos >= 8:
                    names += _uint(data, pos + 6, 2)
                return fixed + names
        return None

    def _packed(self, group: int, variation: int, bits: int, count: int, low: int | None) -> bool:
        data, pos = self.data, self.offset
        needed = (count * bits + 7) // 8
        if len(data) - pos < needed:
            self.weird("object_data_truncated", f"g{group}v{variation}: {count} points need {needed} octets")
            return False
        mask = (1 << bits) - 1
        base = low if low is not None else 0
        where, name, seq = self.where, self.name, self.seq
        append = self.events.append
        for i in range(count):
            bit = i * bits
            state = (data[pos + bit // 8] >> (bit % 8)) & mask
            append(
                Dnp3Point(
                    **where,
                    function_code=name,
                    seq=seq,
                    group=group,
                    variation=variation,
                    index=base + i,
                    flags=None,
                    value=float(state),
                    time48=None,
                    data=None,
                )
            )
        self.offset = pos + needed
        return True

    def _object(self, group: int, variation: int, index: int | None, raw: bytes) -> None:
        key = (group, variation)
        layout = LAYOUTS.get(key)
        if layout is not None and len(raw) == layout.packer.size:
            self._fixed(group, variation, index, layout, raw)
        elif key in CONTROL_BLOCKS and len(raw) == self._size(group, variation, 0):
            self._control(group, variation, index, raw)
        elif group == 70:
            self._file(variation, raw)
        elif group == 0 and len(raw) >= 2:
            self._attribute(variation, index, raw)
        else:
            if layout is not None or key in CONTROL_BLOCKS:
                self.weird("object_size_mismatch", f"g{group}v{variation} object of {len(raw)} octets")
            self._point(group, variation, index, None, None, None, raw)

    def _point(
        self,
        group: int,
        variation: int,
        index: int | None,
        flags: int | None,
        value: float | None,
        time48: int | None,
        raw: bytes | None,
    ) -> None:
        self.events.append(
            Dnp3Point(
                **self.where,
                function_code=self.name,
                seq=self.seq,
                group=group,
                variation=variation,
                index=index,
                flags=flags,
                value=value,
                time48=time48,
                data=raw,
            )
        )

    def _fixed(self, group: int, variation: int, index: int | None, layout: _Layout, raw: bytes) -> None:
        flags: int | None = None
        value: float | None = None
        time48: int | None = None
        for role, item in zip(layout.roles, layout.packer.unpack(raw), strict=True):
            if role == "flags":
                flags = int(item)
            elif role == "value":
                value = float(item)
            elif role == "time":
                time48 = int.from_bytes(item, "little")
            elif role == "rel":
                time48 = self.cto + int(item) if self.cto is not None else None
        if layout.state_bits and flags is not None:
            value = float((flags >> 7) & 1 if layout.state_bits == 1 else (flags >> 6) & 3)
        if group == 51:
            self.cto = time48
        self._point(group, variation, index, flags, value, time48, None)

    def _attribute(self, variation: int, index: int | None, raw: bytes) -> None:
        """Device attribute (group 0): data type code, length, value."""
        kind, body = raw[0], raw[2:]
        value: float | None = None
        if kind == 2 and 0 < len(body) <= 8:
            value = float(int.from_bytes(body, "little"))
        elif kind == 3 and 0 < len(body) <= 8:
            value = float(int.from_bytes(body, "little", signed=True))
        elif kind == 4 and len(body) in (4, 8):
            value = struct.unpack("<f" if len(body) == 4 else "<d", body)[0]
        self._point(0, variation, index, kind, value, None, body)

    def _control(self, group: int, variation: int, index: int | None, raw: bytes) -> None:
        code: int | None = None
        count: int | None = None
        on_time: int | None = None
        off_time: int | None = None
        value: float | None = None
        if group == 12:
            code, count, on_time, off_time, status = _CROB.unpack(raw)
        else:
            number, status = _ANALOG_OUTPUT[variation].unpack(raw)
            value = float(number)
        self.events.append(
            Dnp3Control(
                **self.where,
                function_code=self.name,
                seq=self.seq,
                block_type=CONTROL_BLOCKS[(group, variation)],
                group=group,
                variation=variation,
                index_number=index,
                control_code=code,
                trip_control_code=TRIP_CLOSE_CODES[code >> 6] if code is not None else None,
                operation_type=_name(OPERATION_TYPES, code & 0x0F) if code is not None else None,
                queue_bit=bool(code & 0x10) if code is not None else None,
                clear_bit=bool(code & 0x20) if code is not None else None,
                execute_count=count,
                on_time=on_time,
                off_time=off_time,
                value=value,
                status=status & 0x7F,
                status_code=_name(COMMAND_STATUS, status & 0x7F),
            )
        )

    def _file(self, variation: int, raw: bytes) -> None:
        info: dict[str, Any] = {}
        size = len(raw)
        if variation == 2 and size >= 12:
            name_size = _uint(raw, 2, 2)
            info["user_name"] = raw[12 : 12 + name_size].decode("utf-8", "replace")
        elif variation == 3 and size >= 26:
            name_size = _uint(raw, 2, 2)
            info.update(
                created=_uint(raw, 4, 6),
                permissions=_uint(raw, 10, 2),
                file_size=_uint(raw, 16, 4),
                operational_mode=_name(FILE_MODES, _uint(raw, 20, 2)),
                max_block_size=_uint(raw, 22, 2),
                request_id=_uint(raw, 24, 2),
                file_name=raw[26 : 26 + name_size].decode("utf-8", "replace"),
            )
        elif variation == 4 and size >= 13:
            info.update(
                file_handle=_uint(raw, 0, 4),
                file_size=_uint(raw, 4, 4),
                max_block_size=_uint(raw, 8, 2),
                request_id=_uint(raw, 10, 2),
                status=raw[12],
                status_code=_name(FILE_STATUS, raw[12]),
            )
        elif variation in (5, 6) and size >= 8:
            block = _uint(raw, 4, 4)
            info.update(
                file_handle=_uint(raw, 0, 4), block_num=block & 0x7FFFFFFF, last_block=block >> 31 == 1
            )
            if variation == 5:
                info["data_len"] = size - 8
            elif size >= 9:
                info.update(status=raw[8], status_code=_name(FILE_STATUS, raw[8]))
        elif variation == 7 and size >= 20:
            name_size = _uint(raw, 2, 2)
            info.update(
                file_type=_uint(raw, 4, 2),
                file_size=_uint(raw, 6, 4),
                created=_uint(raw, 10, 6),
                permissions=_uint(raw, 16, 2),
                request_id=_uint(raw, 18, 2),
                file_name=raw[20 : 20 + name_size].decode("utf-8", "replace"),
            )
        elif variation == 8:
            info["file_name"] = raw.decode("utf-8", "replace")
        else:
            self.weird("file_object_malformed", f"g70v{variation}: {size} octets")
        self.events.append(Dnp3File(**self.where, **_file_fields(self.name, self.seq, variation, info)))


def _file_fields(name: str, seq: int, variation: int, info: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = dict.fromkeys(
        (
            "file_name",
            "file_handle",
            "block_num",
            "last_block",
            "file_size",
            "file_type",
            "created",
            "permissions",
            "operational_mode",
            "max_block_size",
            "request_id",
            "status",
            "status_code",
            "data_len",
            "user_name",
        )
    )
    fields.update(info, function_code=name, seq=seq, variation=variation)
    return fields


# ---------------------------------------------------------------------------- dissector


class Dnp3Dissector(Dissector):
    """DNP3 over TCP and UDP (IEEE 1815): link frames, transport reassembly, application layer."""

    name = "dnp3"
    description = "DNP3 (IEEE 1815): link, transport and application layers, objects and controls"
    transports = frozenset({Transport.TCP, Transport.UDP})
    ports = frozenset({20000})
    event_types = (Dnp3, Dnp3Link, Dnp3Application, Dnp3Object, Dnp3Point, Dnp3Control, Dnp3File)

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        self._streams: dict[tuple[bool, int, int], _Reassembly] = {}
        self._pending_request: str | None = None
        self._pending_where: dict[str, Any] = {}
        """Time, flow and direction of the pending request (its row is logged at them, as Zeek)."""

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if len(data) < HEADER_LEN:
            # A TCP stream may deliver the header in pieces; a datagram holds whole frames.
            plausible = data[:2] == START[: len(data)] and (len(data) < 3 or data[2] >= MIN_LINK_LENGTH)
            return Verdict.MAYBE if transport == Transport.TCP and plausible else Verdict.NO
        if data[:2] != START or data[2] < MIN_LINK_LENGTH or not _crc_ok(data, 0, 8):
            return Verdict.NO
        if transport == Transport.UDP and len(data) < frame_size(data[2]):
            return Verdict.NO
        return Verdict.YES

    def frame(self, data: bytes, is_orig: bool) -> int:
        if len(data) < 3:
            return 0 if data == START[: len(data)] else -1
        if data[:2] != START or data[2] < MIN_LINK_LENGTH:
            return -1
        size = frame_size(data[2])
        return size if len(data) >= size else 0

    @classmethod
    def parse_pdu_batch(cls, pdus: Datagrams) -> BatchResult | None:
        """The frames whose output their own bytes fix, vectorized (see ``_scan_py``): link-only
        frames, and one-segment application fragments that are requests without object data or
        responses whose objects are packed bits or fixed-layout flags and integer values, every CRC
        good. ``apply`` leaves a flow's PDUs to :meth:`parse` while a fragment is being reassembled on
        it, and keeps Zeek's pairing of a response with the last request. Everything else (multi-frame
        fragments, controls, files, times, floats, anything that would be a weird) goes to
        :meth:`parse`, and so does a whole batch holding an (EN|DIS)ABLE_UNSOLICITED request (see
        ``_UNSOLICITED_CONTROL``)."""
        fast = _FastDnp3(pdus)
        if np.isin(fast.pdu[:, 3], _UNSOLICITED_CONTROL).any():
            return None
        return BatchResult(fast.handled, apply=fast.apply, build=fast.build)

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        """One link frame (TCP) or every link frame of a datagram (UDP)."""
        offset, end = 0, len(pdu)
        while offset < end:
            left = end - offset
            if left < HEADER_LEN:
                ctx.weird("dnp3_truncated_frame", f"{left} octets, a link header has 10")
                return
            if pdu[offset : offset + 2] != START:
                ctx.weird("dnp3_bad_start", f"0x{pdu[offset : offset + 2].hex()} instead of 0x0564")
                return
            length = pdu[offset + 2]
            if length < MIN_LINK_LENGTH:
                ctx.weird("dnp3_invalid_length", f"link length {length} < 5")
                return
            if not _crc_ok(pdu, offset, offset + 8):
                ctx.weird("dnp3_header_crc_error", f"header {pdu[offset : offset + 10].hex()}")
                return
            size = frame_size(length)
            if left < size:
                ctx.weird("dnp3_truncated_frame", f"{left} octets of a {size}-octet frame")
                return
            self._link_frame(pdu[offset : offset + size], length, ctx)
            offset += size

    def close(self, ctx: PduContext) -> None:
        for reassembly in self._streams.values():
            ctx.weird(
                "dnp3_transport_incomplete",
                f"flow ended with {len(reassembly.data)} octets of a fragment (no FIN)",
            )
        self._streams.clear()
        if self._pending_request is not None:
            ctx.emit(
                Dnp3(
                    **self._pending_where,
                    fc_request=self._pending_request,
                    fc_reply=None,
                    iin=None,
                    iin_flags=[],
                )
            )
            self._pending_request = None

    # ------------------------------------------------------------------ link and transport

    def _link_frame(self, frame: bytes, length: int, ctx: PduContext) -> None:
        ctrl = frame[3]
        dest, src = frame[4] | (frame[5] << 8), frame[6] | (frame[7] << 8)
        prm = bool(ctrl & 0x40)
        user = self._user_data(frame, length, ctx)
        transport = user[0] if user else None
        link_fc = ctrl & 0x0F
        ctx.emit(
            Dnp3Link(
                **ctx.where(),
                len=length,
                ctrl=ctrl,
                dir=bool(ctrl & 0x80),
                prm=prm,
                fcb=bool(ctrl & 0x20) if prm else None,
                fcv=bool(ctrl & 0x10) if prm else None,
                dfc=None if prm else bool(ctrl & 0x10),
                link_fc=link_fc,
                link_function=_name(PRIMARY_LINK_FUNCTIONS if prm else SECONDARY_LINK_FUNCTIONS, link_fc),
                dest_addr=dest,
                src_addr=src,
                user_data_len=length - MIN_LINK_LENGTH,
                tp_fir=bool(transport & 0x40) if transport is not None else None,
                tp_fin=bool(transport & 0x80) if transport is not None else None,
                tp_seq=transport & 0x3F if transport is not None else None,
            )
        )
        if user:
            self._segment(user, _Head(length, ctrl, dest, src), ctx)

    @staticmethod
    def _user_data(frame: bytes, length: int, ctx: PduContext) -> bytes | None:
        """The user data with its block CRCs checked and removed (None if none or corrupt)."""
        remaining = length - MIN_LINK_LENGTH
        if remaining == 0:
            return None
        out = bytearray()
        pos = HEADER_LEN
        block = 0
        while remaining > 0:
            n = min(BLOCK, remaining)
            if not _crc_ok(frame, pos, pos + n):
                ctx.weird("dnp3_data_crc_error", f"user data block {block} (frame of length {length})")
                return None
            out += frame[pos : pos + n]
            pos += n + 2
            remaining -= n
            block += 1
        return bytes(out)

    def _segment(self, user: bytes, head: _Head, ctx: PduContext) -> None:
        """Transport function: reassemble FIR..FIN segments into one application fragment."""
        th = user[0]
        fin, fir, seq = bool(th & 0x80), bool(th & 0x40), th & 0x3F
        key = (ctx.is_orig, head.src, head.dest)
        current = self._streams.get(key)
        if fir:
            if current is not None:
                ctx.weird(
                    "dnp3_transport_incomplete",
                    f"new first segment while {len(current.data)} octets awaited their last one",
                )
            if current is None and len(self._streams) >= MAX_STREAMS:
                ctx.weird("dnp3_too_many_streams", f"{MAX_STREAMS} partial fragments kept per flow")
                self._streams.clear()
            current = self._streams[key] = _Reassembly(head, bytearray(), seq, 0)
        elif current is None:
            ctx.weird("dnp3_transport_missing_first", f"segment seq {seq} without a first segment")
            return
        if seq != current.next_seq:
            ctx.weird("dnp3_transport_sequence_gap", f"segment seq {seq}, expected {current.next_seq}")
            del self._streams[key]
            return
        current.data += user[1:]
        current.frames += 1
        current.next_seq = (seq + 1) & 0x3F
        if len(current.data) > MAX_FRAGMENT:
            ctx.weird("dnp3_fragment_too_large", f"more than {MAX_FRAGMENT} octets reassembled")
            del self._streams[key]
            return
        if fin:
            del self._streams[key]
            self._application(bytes(current.data), current.head, current.frames, ctx)

    # ------------------------------------------------------------------ application layer

    def _application(self, data: bytes, head: _Head, frames: int, ctx: PduContext) -> None:
        if len(data) < 2:
            ctx.weird("dnp3_application_too_short", f"{len(data)} octets")
            return
        ac, fc = data[0], data[1]
        response = fc in RESPONSE_CODES
        iin: int | None = None
        if response:
            if len(data) < 4:
                ctx.weird("dnp3_application_too_short", f"{function_name(fc)} of {len(data)} octets")
                return
            iin = (data[2] << 8) | data[3]
        elif fc not in FUNCTION_CODES:
            ctx.weird("dnp3_unknown_function_code", f"function code {fc}")
        seq = ac & 0x0F
        message = _Message(ctx, fc, seq, data, 4 if response else 2)
        message.parse()
        flags = iin_flags(iin) if iin is not None else []
        ctx.emit(
            Dnp3Application(
                **message.where,
                len=head.length,
                ctrl=head.ctrl,
                dest_addr=head.dest,
                src_addr=head.src,
                frames=frames,
                fragment_len=len(data),
                application_control=ac,
                fir=bool(ac & 0x80),
                fin=bool(ac & 0x40),
                con=bool(ac & 0x20),
                uns=bool(ac & 0x10),
                seq=seq,
                fc=fc,
                function_code=message.name,
                iin=iin,
                iin_flags=flags,
                objects=message.headers,
            )
        )
        for event in message.events:
            ctx.emit(event)
        if not response:
            self._pending_request = message.name
            self._pending_where = message.where
            return
        ctx.emit(
            Dnp3(
                **message.where,
                fc_request=self._pending_request,
                fc_reply=message.name,
                iin=iin,
                iin_flags=flags,
            )
        )
        self._pending_request = None


# ---------------------------------------------------------------------------- columnar fast path
#
# ``Dnp3Dissector.parse_pdu_batch`` dissects, over a batch of TCP PDUs (one link frame each, as cut by
# ``frame``), the frames whose whole output is fixed by their own bytes: link-only frames, and frames
# carrying a complete application fragment in one transport segment (FIR and FIN) that is a request
# without object data (READ, freezes, class assignment, (en|dis)able unsolicited, CONFIRM, restarts,
# ...) or a response whose objects are packed bits or fixed-layout flags / integer values. A compiled
# loop checks every CRC, removes the block CRCs and walks the object headers, in two passes (count,
# then fill). Anything else, and anything that would be a weird, is left to ``parse``.

_UNSOLICITED_CONTROL = (0x14, 0x15)
"""ENABLE_UNSOLICITED and DISABLE_UNSOLICITED: a batch holding one is dissected PDU by PDU. Their
``dnp3_objects`` rows (the classes switched) and the ``dnp3_application`` rows of later unsolicited
responses are read together by the protocol detector, which needs them in wire order across the two
logs; the fast path's tables keep the order within each log only."""
_FAST_DECLINED, _FAST_LINK_ONLY, _FAST_REQUEST, _FAST_RESPONSE = 0, 1, 2, 3
"""Status of a PDU after the scan (what the fast path does with it)."""
_NULL = -1
"""Null in the integer columns of the scan (every real value there is non-negative)."""
_LAYOUT_FLAGS_STATE1, _LAYOUT_FLAGS_STATE2, _LAYOUT_VALUE, _LAYOUT_FLAGS_VALUE = 1, 2, 3, 4
_VALUE_CODES: dict[str, tuple[int, bool]] = {"B": (1, False), "h": (2, True), "H": (2, False)}
_VALUE_CODES.update({"i": (4, True), "I": (4, False)})
"""Struct codes of the value fields the scan decodes: (size, signed)."""


def _fast_tables() -> tuple[npt.NDArray[np.int64], ...]:
    """The object library as arrays indexed by ``group * 256 + variation`` (and the qualifier and
    function code tables), for the compiled scan."""
    kind = np.zeros(65536, dtype=np.int64)
    size = np.zeros(65536, dtype=np.int64)
    signed = np.zeros(65536, dtype=np.int64)
    for (group, variation), layout in LAYOUTS.items():
        key = group * 256 + variation
        codes = layout.packer.format.lstrip("<")
        if layout.roles == ("flags",) and layout.state_bits:
            kind[key] = _LAYOUT_FLAGS_STATE1 if layout.state_bits == 1 else _LAYOUT_FLAGS_STATE2
        elif layout.roles == ("value",) and codes in _VALUE_CODES:
            kind[key] = _LAYOUT_VALUE
            size[key], signed[key] = _VALUE_CODES[codes]
        elif layout.roles == ("flags", "value") and not layout.state_bits and codes[1:] in _VALUE_CODES:
            kind[key] = _LAYOUT_FLAGS_VALUE
            size[key], signed[key] = _VALUE_CODES[codes[1:]]
    packed = np.zeros(65536, dtype=np.int64)
    for (group, variation), bits in PACKED_BITS.items():
        packed[group * 256 + variation] = bits
    ranges = np.full(16, _NULL, dtype=np.int64)
    for code, range_size in _RANGE_SIZES.items():
        ranges[code] = range_size
    prefixes = np.full(8, _NULL, dtype=np.int64)
    for code, prefix_size in _PREFIX_SIZES.items():
        prefixes[code] = prefix_size
    requests = np.zeros(256, dtype=np.int64)  # 1: no object data, 2: no objects at all
    requests[list(NO_DATA_REQUESTS)] = 1
    requests[list(NO_OBJECT_REQUESTS)] = 2
    crc = np.array(_CRC_TABLE, dtype=np.int64)
    return crc, kind, size, signed, packed, ranges, prefixes, requests


_FAST_TABLES = _fast_tables()


def _le_py(data: npt.NDArray[np.uint8], pos: int, size: int) -> int:
    value = 0
    for k in range(size):
        value |= int(data[pos + k]) << (8 * k)
    return value


_le = numba.njit(cache=True, nogil=True)(_le_py)


def _crc_matches_py(buffer: npt.NDArray[np.uint8], pos: int, size: int, table: npt.NDArray[np.int64]) -> bool:
    """Is the DNP3 CRC of ``buffer[pos : pos + size]`` the two octets after it?"""
    crc = 0
    for k in range(size):
        crc = table[(crc ^ buffer[pos + k]) & 0xFF] ^ (crc >> 8)
    return (~crc & 0xFFFF) == (int(buffer[pos + size]) | (int(buffer[pos + size + 1]) << 8))


_crc_matches = numba.njit(cache=True, nogil=True)(_crc_matches_py)


def _scan_py(
    buffer: npt.NDArray[np.uint8],
    start: npt.NDArray[np.int64],
    length: npt.NDArray[np.int64],
    tables: tuple[npt.NDArray[np.int64], ...],
    fill: bool,
    pdu: npt.NDArray[np.int64],
    headers: npt.NDArray[np.int64],
    points: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
) -> None:
    """Scan every PDU (``fill`` False) or write the object headers and points of the PDUs a first scan
    accepted (``fill`` True) at the offsets that scan's counts give.

    ``pdu`` (n, 9): status, transport octet, application control, function code, IIN, headers, points,
    first header row, first point row. ``headers`` (h, 6): group, variation, qualifier, count, low,
    high. ``points`` (p, 4): group, variation, index, flags; ``values`` (p,): the point values.
    """
    crc, kind, size, signed, packed, ranges, prefixes, requests = tables
    user = np.empty(256, dtype=np.uint8)
    for i in range(start.shape[0]):
        if fill and pdu[i, 0] < _FAST_REQUEST:
            continue
        s, n = start[i], length[i]
        if n < HEADER_LEN or buffer[s] != 0x05 or buffer[s + 1] != 0x64 or buffer[s + 2] < MIN_LINK_LENGTH:
            continue
        user_len = int(buffer[s + 2]) - MIN_LINK_LENGTH
        if n != HEADER_LEN + user_len + 2 * ((user_len + BLOCK - 1) // BLOCK):
            continue
        if not fill and not _crc_matches(buffer, s, 8, crc):
            continue
        pos, done, intact = s + HEADER_LEN, 0, True
        while done < user_len:
            block = min(BLOCK, user_len - done)
            if not fill and not _crc_matches(buffer, pos, block, crc):
                intact = False
                break
            user[done : done + block] = buffer[pos : pos + block]
            done += block
            pos += block + 2
        if not intact:
            continue
        if user_len == 0:
            pdu[i, 0] = _FAST_LINK_ONLY
            continue
        pdu[i, 1] = user[0]
        if user[0] & 0x40 and user_len >= 3:
            pdu[i, 3] = user[2]  # the function code of every first segment (see _UNSOLICITED_CONTROL)
        if user[0] & 0xC0 != 0xC0 or user_len < 3:
            continue  # a multi-segment fragment, or too short for an application header
        fc = int(user[2])
        response = fc == 0x81 or fc == 0x82 or fc == 0x83
        off = 3
        iin = _NULL
        if response:
            if user_len < 5:
                continue
            iin = (int(user[3]) << 8) | int(user[4])
            off = 5
        elif requests[fc] == 0 or (requests[fc] == 2 and off < user_len):
            continue  # objects with data, an unknown function or objects where none belong
        header_row, point_row = pdu[i, 7], pdu[i, 8]
        header_count, point_count, ok = 0, 0, True
        while off < user_len:
            if user_len - off < 3:
                ok = False
                break
            group, variation, qualifier = int(user[off]), int(user[off + 1]), int(user[off + 2])
            prefix_code, range_code = (qualifier >> 4) & 0x07, qualifier & 0x0F
            range_size = ranges[range_code]
            if range_size < 0 or prefix_code == 7 or qualifier & 0x80:
                ok = False
                break
            off += 3
            if user_len - off < range_size:
                ok = False
                break
            low, high, count = _NULL, _NULL, _NULL
            if range_code <= 5:
                half = range_size // 2
                low, high = _le(user, off, half), _le(user, off + half, half)
                count = high - low + 1
            elif range_code != 6:
                count = _le(user, off, range_size)
            off += range_size
            if fill:
                row = header_row + header_count
                headers[row, 0], headers[row, 1], headers[row, 2] = group, variation, qualifier
                headers[row, 3], headers[row, 4], headers[row, 5] = count, low, high
            header_count += 1
            if range_code <= 5 and count <= 0:
                ok = False
                break
            if count <= 0:
                continue
            if group == 60 or not response:
                if 1 <= prefix_code <= 3:  # an index list without object data
                    needed = count * prefixes[prefix_code]
                    if user_len - off < needed:
                        ok = False
                        break
                    off += needed
                continue
            key = group * 256 + variation
            bits = packed[key]
            if bits:
                needed = (count * bits + 7) // 8
                if prefix_code != 0 or user_len - off < needed:
                    ok = False
                    break
                if fill:
                    base = low if low >= 0 else 0
                    for j in range(count):
                        bit = j * bits
                        row = point_row + point_count + j
                        points[row, 0], points[row, 1] = group, variation
                        points[row, 2], points[row, 3] = base + j, _NULL
                        values[row] = (int(user[off + bit // 8]) >> (bit % 8)) & ((1 << bits) - 1)
                point_count += count
                off += needed
                continue
            layout = kind[key]
            if layout == 0 or prefix_code > 3:
                ok = False
                break
            prefix_size = prefixes[prefix_code]
            value_size = size[key]
            has_flags = 0 if layout == _LAYOUT_VALUE else 1
            needed = count * (prefix_size + has_flags + value_size)
            if user_len - off < needed:
                ok = False
                break
            if not fill:
                point_count += count
                off += needed
                continue
            for j in range(count):
                row = point_row + point_count + j
                index = _le(user, off, prefix_size) if prefix_size else (low + j if low >= 0 else _NULL)
                off += prefix_size
                flags = int(user[off]) if has_flags else _NULL
                off += has_flags
                if layout == _LAYOUT_FLAGS_STATE1:
                    value = (flags >> 7) & 1
                elif layout == _LAYOUT_FLAGS_STATE2:
                    value = (flags >> 6) & 3
                else:
                    value = _le(user, off, value_size)
                    if signed[key] and value >= 1 << (8 * value_size - 1):
                        value -= 1 << (8 * value_size)
                off += value_size
                points[row, 0], points[row, 1], points[row, 2], points[row, 3] = (
                    group,
                    variation,
                    index,
                    flags,
                )
                values[row] = value
            point_count += count
        if not ok:
            continue
        if not fill:
            pdu[i, 0] = _FAST_RESPONSE if response else _FAST_REQUEST
            pdu[i, 2], pdu[i, 4] = user[1], iin
            pdu[i, 5], pdu[i, 6] = header_count, point_count


_scan = numba.njit(cache=True, nogil=True)(_scan_py)


_LINK_FUNCTIONS = np.array(
    [_name(SECONDARY_LINK_FUNCTIONS, code) for code in range(16)]
    + [_name(PRIMARY_LINK_FUNCTIONS, code) for code in range(16)]
)
"""Link function names by ``PRM * 16 + function code``."""
_FUNCTION_NAMES = np.array([function_name(code) for code in range(256)])
_IIN_NAMES = np.array([name for _bit, name in IIN_FLAGS])
_IIN_BITS = np.array([bit for bit, _name in IIN_FLAGS], dtype=np.int64)


def _nullable(values: npt.NDArray[np.int64], null: npt.NDArray[np.bool_] | None = None) -> pa.Array:
    """An int64 column, null where ``values`` is ``_NULL`` (or where ``null`` is set)."""
    return pa.array(values, pa.int64(), mask=values == _NULL if null is None else null)


def _flag(values: npt.NDArray[np.int64], bit: int, null: npt.NDArray[np.bool_]) -> pa.Array:
    return pa.array((values & bit) != 0, pa.bool_(), mask=null)


def _iin_lists(iin: npt.NDArray[np.int64]) -> pa.Array:
    """``iin_flags`` of each IIN value (``_NULL``: no IIN, an empty list), in ``IIN_FLAGS`` order."""
    bits = ((iin[:, None] & _IIN_BITS[None, :]) != 0) & (iin[:, None] != _NULL)
    offsets = np.zeros(iin.shape[0] + 1, dtype=np.int32)
    np.cumsum(bits.sum(axis=1), out=offsets[1:])
    names = _IIN_NAMES[np.nonzero(bits)[1]]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(names, pa.string()))


def _spans(first: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``first[i] + k`` for ``k`` in ``range(counts[i])``, concatenated."""
    ends = np.cumsum(counts)
    spans: npt.NDArray[np.int64] = np.arange(int(ends[-1]) if ends.shape[0] else 0, dtype=np.int64)
    out: npt.NDArray[np.int64] = spans + np.repeat(first - (ends - counts), counts)
    return out


class _FastDnp3:
    """One batch of PDUs for :meth:`Dnp3Dissector.parse_pdu_batch`: the scan's columns, the per-flow
    state (``apply``: transport reassembly must be idle, Zeek's request/response pairing) and the event
    columns (``build``)."""

    def __init__(self, pdus: Datagrams) -> None:
        self.pdus = pdus
        n = len(pdus)
        buffer, start, length = pdus.buffer, pdus.start.astype(np.int64), pdus.length.astype(np.int64)
        pdu = np.zeros((n, 9), dtype=np.int64)
        headers = np.zeros((0, 6), dtype=np.int64)
        points = np.zeros((0, 4), dtype=np.int64)
        values = np.zeros(0, dtype=np.float64)
        _scan(buffer, start, length, _FAST_TABLES, False, pdu, headers, points, values)
        status = pdu[:, 0]
        accepted = status >= _FAST_REQUEST
        pdu[~accepted, 5:7] = 0
        np.cumsum(pdu[:, 5], out=pdu[:, 7])
        np.cumsum(pdu[:, 6], out=pdu[:, 8])
        pdu[:, 7] -= pdu[:, 5]
        pdu[:, 8] -= pdu[:, 6]
        if accepted.any():
            headers = np.zeros((int(pdu[:, 5].sum()), 6), dtype=np.int64)
            points = np.zeros((int(pdu[:, 6].sum()), 4), dtype=np.int64)
            values = np.zeros(points.shape[0], dtype=np.float64)
            _scan(buffer, start, length, _FAST_TABLES, True, pdu, headers, points, values)
        self.pdu, self.headers, self.points, self.values = pdu, headers, points, values
        self.handled: npt.NDArray[np.bool_] = status != _FAST_DECLINED
        self.status = status.tolist()
        self.names = _FUNCTION_NAMES[pdu[:, 3]]
        self.ts = pdus.ts.tolist()
        self.origs = pdus.is_orig.tolist()
        self.fc_request: list[str | None] = [None] * n
        self.head = pdus.heads(HEADER_LEN).astype(np.int64)

    def apply(self, dissector: Dnp3Dissector, i: int) -> bool:
        status = self.status[i]
        if status == _FAST_LINK_ONLY:
            return True
        if dissector._streams:
            return False  # a fragment is being reassembled on this flow: parse() handles the rest
        if status == _FAST_REQUEST:
            flow = dissector.flow
            dissector._pending_request = str(self.names[i])
            dissector._pending_where = {
                "ts": self.ts[i],
                "flow_id": flow.flow_id,
                "orig_h": flow.orig_h,
                "orig_p": flow.orig_p,
                "resp_h": flow.resp_h,
                "resp_p": flow.resp_p,
                "is_orig": self.origs[i],
            }
        else:
            self.fc_request[i] = dissector._pending_request
            dissector._pending_request = None
        return True

    def build(self, rows: npt.NDArray[np.intp]) -> tuple[EventColumns, ...]:
        pdu = self.pdu
        head = self.head[rows]
        ctrl = head[:, 3]
        prm = (ctrl & 0x40) != 0
        user_len = head[:, 2] - MIN_LINK_LENGTH
        no_user = user_len == 0
        transport = pdu[rows, 1]
        link: dict[str, npt.NDArray[Any] | pa.Array] = {
            "len": head[:, 2],
            "ctrl": ctrl,
            "dir": (ctrl & 0x80) != 0,
            "prm": prm,
            "fcb": _flag(ctrl, 0x20, ~prm),
            "fcv": _flag(ctrl, 0x10, ~prm),
            "dfc": _flag(ctrl, 0x10, prm),
            "link_fc": ctrl & 0x0F,
            "link_function": pa.array(_LINK_FUNCTIONS[prm * 16 + (ctrl & 0x0F)], pa.string()),
            "dest_addr": head[:, 4] | head[:, 5] << 8,
            "src_addr": head[:, 6] | head[:, 7] << 8,
            "user_data_len": user_len,
            "tp_fir": _flag(transport, 0x40, no_user),
            "tp_fin": _flag(transport, 0x80, no_user),
            "tp_seq": _nullable(transport & 0x3F, no_user),
        }
        events = [EventColumns(Dnp3Link, rows, link)]
        fragment = pdu[rows, 0] >= _FAST_REQUEST
        app_rows = rows[fragment]
        if app_rows.shape[0]:
            events.extend(self._application(app_rows, head[fragment]))
        return tuple(events)

    def _application(self, rows: npt.NDArray[np.intp], head: npt.NDArray[np.int64]) -> list[EventColumns]:
        pdu = self.pdu
        ac, fc, iin = pdu[rows, 2], pdu[rows, 3], pdu[rows, 4]
        seq = ac & 0x0F
        names = self.names[rows]
        iin_lists = _iin_lists(iin)
        application: dict[str, npt.NDArray[Any] | pa.Array] = {
            "len": head[:, 2],
            "ctrl": head[:, 3],
            "dest_addr": head[:, 4] | head[:, 5] << 8,
            "src_addr": head[:, 6] | head[:, 7] << 8,
            "frames": np.ones(rows.shape[0], dtype=np.int64),
            "fragment_len": head[:, 2] - MIN_LINK_LENGTH - 1,
            "application_control": ac,
            "fir": (ac & 0x80) != 0,
            "fin": (ac & 0x40) != 0,
            "con": (ac & 0x20) != 0,
            "uns": (ac & 0x10) != 0,
            "seq": seq,
            "fc": fc,
            "function_code": pa.array(names, pa.string()),
            "iin": _nullable(iin),
            "iin_flags": iin_lists,
            "objects": pdu[rows, 5],
        }
        events = [EventColumns(Dnp3Application, rows, application)]
        counts = pdu[rows, 5]
        if counts.sum():
            at = _spans(pdu[rows, 7], counts)
            h = self.headers[at]
            group, variation, qualifier = h[:, 0], h[:, 1], h[:, 2]
            objects: dict[str, npt.NDArray[Any] | pa.Array] = {
                "function_code": pa.array(np.repeat(names, counts), pa.string()),
                "seq": np.repeat(seq, counts),
                "group": group,
                "variation": variation,
                "object_type": pa.array(
                    [f"g{g}v{v}" for g, v in zip(group.tolist(), variation.tolist(), strict=True)],
                    pa.string(),
                ),
                "qualifier": qualifier,
                "prefix_code": (qualifier >> 4) & 0x07,
                "range_code": qualifier & 0x0F,
                "object_count": _nullable(h[:, 3]),
                "range_low": _nullable(h[:, 4]),
                "range_high": _nullable(h[:, 5]),
            }
            events.append(EventColumns(Dnp3Object, np.repeat(rows, counts), objects))
        counts = pdu[rows, 6]
        if counts.sum():
            at = _spans(pdu[rows, 8], counts)
            p = self.points[at]
            m = at.shape[0]
            point_columns: dict[str, npt.NDArray[Any] | pa.Array] = {
                "function_code": pa.array(np.repeat(names, counts), pa.string()),
                "seq": np.repeat(seq, counts),
                "group": p[:, 0],
                "variation": p[:, 1],
                "index": _nullable(p[:, 2]),
                "flags": _nullable(p[:, 3]),
                "value": self.values[at],
                "time48": pa.nulls(m, pa.int64()),
                "data": pa.nulls(m, pa.binary()),
            }
            events.append(EventColumns(Dnp3Point, np.repeat(rows, counts), point_columns))
        response = pdu[rows, 0] == _FAST_RESPONSE
        if response.any():
            reply_rows = rows[response]
            zeek: dict[str, npt.NDArray[Any] | pa.Array] = {
                "fc_request": pa.array([self.fc_request[i] for i in reply_rows.tolist()], pa.string()),
                "fc_reply": pa.array(names[response], pa.string()),
                "iin": iin[response],
                "iin_flags": iin_lists.filter(pa.array(response)),
            }
            events.append(EventColumns(Dnp3, reply_rows, zeek))
        return events
