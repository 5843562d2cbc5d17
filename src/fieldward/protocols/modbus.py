"""Modbus/TCP dissector: every ADU of a Modbus/TCP (or Modbus/UDP) flow becomes one ``modbus`` event.

What is covered, with the specification it follows:

- the MBAP header (transaction id, protocol id, length, unit id) of *MODBUS Messaging on TCP/IP
  Implementation Guide V1.0b*, section 3.1.3, and the function code of every PDU;
- the public function codes of the *MODBUS Application Protocol Specification V1.1b3*, section 6:
  Read Coils (1), Read Discrete Inputs (2), Read Holding / Input Registers (3, 4), Write Single Coil /
  Register (5, 6), Read Exception Status (7), Diagnostics (8), Get Comm Event Counter / Log (11, 12),
  Write Multiple Coils / Registers (15, 16), Report Server ID (17), Read / Write File Record (20, 21),
  Mask Write Register (22), Read/Write Multiple Registers (23), Read FIFO Queue (24) and Encapsulated
  Interface Transport (43) with Read Device Identification (MEI type 14, section 6.21), whose objects
  (VendorName, ProductCode, MajorMinorRevision, VendorUrl, ProductName, ModelName,
  UserApplicationName, private objects) each become one ``modbus_device_id`` event;
- exception responses (function code + 0x80 and an exception code, section 7).

Addresses, quantities and the coil and register values carried by each PDU are extracted; responses
are matched to their request by transaction id and function code (Implementation Guide 4.4.1.2), so a
response event carries the request's start address (and, for coils, its quantity).

Names follow Zeek's ``modbus.log`` (``func`` such as ``READ_COILS``, ``READ_COILS_EXCEPTION`` or
``unknown-156``, ``pdu_type`` ``REQ``/``RESP``, ``exception`` such as ``ILLEGAL_DATA_ADDRESS``) and the
event arguments of Zeek's Modbus analyzer (``start_address``/``address``, ``quantity``, ``coils``,
``registers``, ``and_mask``, ``or_mask``, ``write_start_address``), so events compare field by field
with Zeek's logs; the device identification fields follow CISA ICSNPP-Modbus.

Recognition is by content: protocol identifier 0, a length field between 2 and 254 that agrees with
the bytes present, a unit id outside the reserved 248-254, a valid function code and a body whose
shape fits that function (off port 502, only the public function codes are accepted). Malformed PDUs
are reported as ``modbus_*`` weirds and dissection goes on; the dissector never judges the traffic.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

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

MBAP = struct.Struct(">HHHB")
"""Transaction id, protocol id, length (bytes after this field), unit id."""
HEADER_SIZE = 8
"""MBAP header (7 bytes) plus the function code."""
MIN_LENGTH = 2
"""Unit id + function code."""
MAX_LENGTH = 254
"""A Modbus/TCP ADU is at most 260 bytes: 6 header bytes + 254."""
MAX_PENDING_REQUESTS = 256
"""Outstanding requests remembered per flow for response matching (oldest forgotten first)."""
MAX_ADUS_PER_DATAGRAM = 64
RECOGNITION_ADUS = 4
"""Complete ADUs checked by the recogniser (when the first payload holds several)."""
RESERVED_UNITS = range(248, 255)
FAST_HEAD = HEADER_SIZE + 5
"""Bytes of each ADU the columnar fast path reads: MBAP, function code, address, quantity and the
byte count of Write Multiple Coils / Registers (or a response's byte count and exception code)."""
NULL_FAST_FIELDS: dict[str, pa.DataType] = {
    "and_mask": pa.int64(),
    "or_mask": pa.int64(),
    "write_start_address": pa.int64(),
    "write_quantity": pa.int64(),
    "sub_function": pa.int64(),
    "mei_type": pa.int64(),
    "file_numbers": pa.list_(pa.int64()),
    "record_numbers": pa.list_(pa.int64()),
    "record_lengths": pa.list_(pa.int64()),
    "data": pa.binary(),
}
"""ModbusEvent fields the ADUs of the columnar fast path never carry."""

FUNCTION_NAMES: dict[int, str] = {
    0x01: "READ_COILS",
    0x02: "READ_DISCRETE_INPUTS",
    0x03: "READ_HOLDING_REGISTERS",
    0x04: "READ_INPUT_REGISTERS",
    0x05: "WRITE_SINGLE_COIL",
    0x06: "WRITE_SINGLE_REGISTER",
    0x07: "READ_EXCEPTION_STATUS",
    0x08: "DIAGNOSTICS",
    0x0B: "GET_COMM_EVENT_COUNTER",
    0x0C: "GET_COMM_EVENT_LOG",
    0x0F: "WRITE_MULTIPLE_COILS",
    0x10: "WRITE_MULTIPLE_REGISTERS",
    0x11: "REPORT_SLAVE_ID",
    0x14: "READ_FILE_RECORD",
    0x15: "WRITE_FILE_RECORD",
    0x16: "MASK_WRITE_REGISTER",
    0x17: "READ_WRITE_MULTIPLE_REGISTERS",
    0x18: "READ_FIFO_QUEUE",
    0x2B: "ENCAP_INTERFACE_TRANSPORT",
    0x5B: "OBJECT_MESSAGING",
    # Machine, vendor or network specific codes (named as Zeek names them).
    0x09: "PROGRAM_484",
    0x0A: "POLL_484",
    0x0D: "PROGRAM_584_984",
    0x0E: "POLL_584_984",
    0x12: "PROGRAM_884_U84",
    0x13: "RESET_COMM_LINK_884_U84",
    0x28: "PROGRAM_CONCEPT",
    0x29: "MULTIPLE_FUNCTION_CODES",
    0x5A: "PROGRAM_UNITY",
    0x7D: "FIRMWARE_REPLACEMENT",
    0x7E: "PROGRAM_584_984_2",
    0x7F: "REPORT_LOCAL_ADDRESS",
}
"""Function code names, as Zeek's ``Modbus::function_codes``."""

PUBLIC_FUNCTIONS = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43})
"""The public function codes of the Application Protocol Specification V1.1b3 (section 5.1)."""

EXCEPTION_NAMES: dict[int, str] = {
    0x01: "ILLEGAL_FUNCTION",
    0x02: "ILLEGAL_DATA_ADDRESS",
    0x03: "ILLEGAL_DATA_VALUE",
    0x04: "SLAVE_DEVICE_FAILURE",
    0x05: "ACKNOWLEDGE",
    0x06: "SLAVE_DEVICE_BUSY",
    0x08: "MEMORY_PARITY_ERROR",
    0x0A: "GATEWAY_PATH_UNAVAILABLE",
    0x0B: "GATEWAY_TARGET_DEVICE_FAILED_TO_RESPOND",
}
"""Exception code names, as Zeek's ``Modbus::exception_codes``."""

MEI_CANOPEN = 13
MEI_READ_DEVICE_ID = 14

DEVICE_OBJECT_NAMES: dict[int, str] = {
    0x00: "VendorName",
    0x01: "ProductCode",
    0x02: "MajorMinorRevision",
    0x03: "VendorUrl",
    0x04: "ProductName",
    0x05: "ModelName",
    0x06: "UserApplicationName",
}
"""Read Device Identification object names (specification 6.21, table of object ids)."""

CONFORMITY_LEVELS: dict[int, str] = {
    0x01: "Basic Identification (Stream)",
    0x02: "Regular Identification (Stream)",
    0x03: "Extended Identification (Stream)",
    0x81: "Basic Identification (Stream, Individual)",
    0x82: "Regular Identification (Stream, Individual)",
    0x83: "Extended Identification (Stream, Individual)",
}

# Quantity limits of the specification (section 6): (minimum, maximum).
READ_BITS_LIMIT = 2000
READ_REGISTERS_LIMIT = 125
WRITE_COILS_LIMIT = 0x07B0
WRITE_REGISTERS_LIMIT = 0x7B
READ_WRITE_WRITE_LIMIT = 0x79
FIFO_LIMIT = 31
FILE_REFERENCE_TYPE = 6
COIL_ON = 0xFF00
COIL_OFF = 0x0000


def function_name(code: int) -> str:
    """Zeek's ``build_func``: the function's name, ``<NAME>_EXCEPTION`` or ``unknown-<code>``."""
    if code in FUNCTION_NAMES:
        return FUNCTION_NAMES[code]
    masked = code & 0x7F
    if code & 0x80 and masked in FUNCTION_NAMES:
        return FUNCTION_NAMES[masked] + "_EXCEPTION"
    return f"unknown-{code}"


def exception_name(code: int) -> str:
    return EXCEPTION_NAMES.get(code, f"unknown-{code}")


def conformity_level_name(level: int) -> str:
    return CONFORMITY_LEVELS.get(level, f"unknown-{level}")


def object_name(object_id: int) -> str:
    if object_id in DEVICE_OBJECT_NAMES:
        return DEVICE_OBJECT_NAMES[object_id]
    return f"private-{object_id}" if object_id >= 0x80 else f"reserved-{object_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusEvent(Event):
    """One Modbus ADU (request, response or exception response): ``events/modbus.parquet``."""

    log: ClassVar[str] = "modbus"

    tid: int
    unit: int
    function_code: int
    func: str
    pdu_type: str
    len: int
    exception_code: int | None = None
    exception: str | None = None
    matched: bool = False
    address: int | None = None
    quantity: int | None = None
    coils: list[int] | None = None
    registers: list[int] | None = None
    and_mask: int | None = None
    or_mask: int | None = None
    write_start_address: int | None = None
    write_quantity: int | None = None
    sub_function: int | None = None
    mei_type: int | None = None
    file_numbers: list[int] | None = None
    record_numbers: list[int] | None = None
    record_lengths: list[int] | None = None
    data: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusDeviceIdEvent(Event):
    """Read Device Identification (FC 43 / MEI 14): ``events/modbus_device_id.parquet``.

    A request gives one event (the object asked for); a response one event per object it carries.
    """

    log: ClassVar[str] = "modbus_device_id"

    tid: int
    unit: int
    pdu_type: str
    device_id_code: int
    object_id_code: int
    object_id: str
    object_value: str | None = None
    conformity_level_code: int | None = None
    conformity_level: str | None = None
    more_follows: bool | None = None
    next_object_id: int | None = None


@dataclass(slots=True)
class _Fields:
    """The optional fields of a :class:`ModbusEvent`, filled by the function decoders."""

    address: int | None = None
    quantity: int | None = None
    coils: list[int] | None = None
    registers: list[int] | None = None
    and_mask: int | None = None
    or_mask: int | None = None
    write_start_address: int | None = None
    write_quantity: int | None = None
    sub_function: int | None = None
    mei_type: int | None = None
    file_numbers: list[int] | None = None
    record_numbers: list[int] | None = None
    record_lengths: list[int] | None = None
    data: bytes | None = None
    device_objects: list[_DeviceObject] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _DeviceObject:
    """One Read Device Identification object (request: the object asked for, without a value)."""

    device_id_code: int
    object_id_code: int
    object_value: str | None = None
    conformity_level_code: int | None = None
    more_follows: bool | None = None
    next_object_id: int | None = None


_Decoder: TypeAlias = Callable[[bytes, _Fields, "_Fields | None", PduContext], None]
"""Decodes a body into the fields (given the matched request's fields for a response)."""


@dataclass(slots=True, eq=False)
class _Request:
    tid: int
    function_code: int
    fields: _Fields


def _u16(data: bytes, offset: int) -> int:
    return (data[offset] << 8) | data[offset + 1]


def _registers(data: bytes) -> list[int]:
    """Big-endian 16-bit registers (a trailing odd byte is ignored)."""
    return list(struct.unpack_from(f">{len(data) >> 1}H", data))


_BYTE_BITS = [[(value >> i) & 1 for i in range(8)] for value in range(256)]
"""The 8 bits of each byte value, LSB first."""


def _bits(data: bytes, count: int) -> list[int]:
    """``count`` bits packed LSB first (coil/input status layout), at most ``8 * len(data)``."""
    count = min(count, 8 * len(data))
    if count <= 0:
        return []
    bits = [bit for byte in data[: (count + 7) >> 3] for bit in _BYTE_BITS[byte]]
    del bits[count:]
    return bits


def _plausible_body(code: int, body: bytes) -> bool:
    """Whether ``body`` has the shape of a request or a response of public function ``code``."""
    n = len(body)
    counted = n >= 1 and body[0] == n - 1  # byte count, then that many bytes
    if code in (1, 2):
        return n == 4 or counted
    if code in (3, 4):
        return n == 4 or (counted and n % 2 == 1)
    if code in (5, 6):
        return n == 4
    if code == 7:
        return n in (0, 1)
    if code == 8:
        return n >= 2
    if code == 11:
        return n in (0, 4)
    if code in (12, 17):
        return n == 0 or counted
    if code in (15, 16):
        return n == 4 or (n >= 5 and body[4] == n - 5)
    if code in (20, 21):
        return counted
    if code == 22:
        return n == 6
    if code == 23:
        return (n >= 9 and body[8] == n - 9) or counted
    if code == 24:
        return n == 2 or (n >= 4 and _u16(body, 0) == n - 2)
    if code == 43:
        return n >= 1 and body[0] in (MEI_CANOPEN, MEI_READ_DEVICE_ID)
    return False


class ModbusDissector(Dissector):
    """Modbus/TCP (and Modbus over UDP, same MBAP framing)."""

    name = "modbus"
    description = "Modbus/TCP: MBAP header, function codes, addresses, values, device identification"
    transports = frozenset({Transport.TCP, Transport.UDP})
    ports = frozenset({502})
    event_types = (ModbusEvent, ModbusDeviceIdEvent)

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        # The client sends requests. It is the flow's originator unless only the originator's
        # port is the Modbus server port (the flow table saw the server's packet first).
        self._client_is_orig = not (flow.orig_p in self.ports and flow.resp_p not in self.ports)
        self._pending: deque[_Request] = deque(maxlen=MAX_PENDING_REQUESTS)

    # ------------------------------------------------------------------ recognition and framing

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        on_port = bool({sport, dport} & cls.ports)
        offset = 0
        complete = 0
        while offset < len(data) and complete < RECOGNITION_ADUS:
            head = data[offset : offset + HEADER_SIZE]
            if not _header_prefix_ok(head):
                return Verdict.NO
            if len(head) < HEADER_SIZE or offset + 6 + _u16(head, 4) > len(data):
                # An incomplete ADU: over UDP a datagram holds whole ADUs; over TCP wait for more.
                if transport == Transport.UDP:
                    return Verdict.NO
                return Verdict.YES if complete else Verdict.MAYBE
            end = offset + 6 + _u16(head, 4)
            if not _function_ok(head[7], data[offset + HEADER_SIZE : end], on_port):
                return Verdict.NO
            complete += 1
            offset = end
        return Verdict.YES if complete else Verdict.MAYBE

    framing = LengthFraming(  # frame(), declared for the columnar TCP path: MBAP length + 6
        HeaderField(4),
        add=6,
        min_size=6 + MIN_LENGTH,
        max_size=6 + MAX_LENGTH,
        require=((HeaderField(2), frozenset({0})),),
    )

    def frame(self, data: bytes, is_orig: bool) -> int:
        if len(data) >= 4 and (data[2] or data[3]):
            return -1  # protocol identifier is not 0: not an MBAP header
        if len(data) < 6:
            return 0
        length = _u16(data, 4)
        if not MIN_LENGTH <= length <= MAX_LENGTH:
            return -1
        size = 6 + length
        return size if len(data) >= size else 0

    # ------------------------------------------------------------------ parsing

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        """One ADU (TCP, cut by :meth:`frame`) or a datagram of one or more ADUs (UDP)."""
        offset = 0
        for _ in range(MAX_ADUS_PER_DATAGRAM):
            if offset >= len(pdu):
                return
            rest = len(pdu) - offset
            if rest < HEADER_SIZE:
                ctx.weird("modbus_truncated_header", f"{rest} bytes, an MBAP header needs {HEADER_SIZE}")
                return
            _tid, pid, length, _unit = MBAP.unpack_from(pdu, offset)
            if pid != 0:
                ctx.weird("modbus_bad_protocol_id", f"protocol identifier {pid}, expected 0")
                return
            if not MIN_LENGTH <= length <= MAX_LENGTH:
                ctx.weird("modbus_bad_length", f"MBAP length {length} outside 2..254")
                return
            if 6 + length > rest:
                ctx.weird("modbus_truncated_pdu", f"MBAP length {length}, only {rest - 6} bytes present")
                return
            self._adu(pdu[offset : offset + 6 + length], ctx)
            offset += 6 + length
        if offset < len(pdu):
            ctx.weird("modbus_too_many_adus", f"datagram holds more than {MAX_ADUS_PER_DATAGRAM} ADUs")

    def _adu(self, adu: bytes, ctx: PduContext) -> None:
        tid, _pid, length, unit = MBAP.unpack_from(adu)
        code = adu[7]
        body = adu[HEADER_SIZE:]
        is_request = ctx.is_orig == self._client_is_orig
        out = _Fields()
        exception_code: int | None = None
        matched = False
        if code in (0, 0x80):
            ctx.weird("modbus_illegal_function_code", f"function code {code}")
            out.data = body
        elif code & 0x80:
            if is_request:
                ctx.weird("modbus_exception_in_request", f"function code {code} in a request")
            else:
                request = self._match(tid, code & 0x7F)
                if request is not None:
                    matched = True
                    out.address, out.quantity = request.fields.address, request.fields.quantity
            if len(body) >= 1:
                exception_code = body[0]
            else:
                ctx.weird("modbus_truncated_pdu", "exception response without an exception code")
            if len(body) > 1:
                ctx.weird("modbus_length_mismatch", f"exception response with {len(body)} body bytes")
        elif is_request:
            _decode(code, body, out, None, True, ctx)
            self._pending.append(_Request(tid, code, out))
        else:
            request = self._match(tid, code)
            matched = request is not None
            _decode(code, body, out, request.fields if request else None, False, ctx)
        ctx.emit(
            ModbusEvent(
                **ctx.where(),
                tid=tid,
                unit=unit,
                function_code=code,
                func=function_name(code),
                pdu_type="REQ" if is_request else "RESP",
                len=length,
                exception_code=exception_code,
                exception=None if exception_code is None else exception_name(exception_code),
                matched=matched,
                address=out.address,
                quantity=out.quantity,
                coils=out.coils,
                registers=out.registers,
                and_mask=out.and_mask,
                or_mask=out.or_mask,
                write_start_address=out.write_start_address,
                write_quantity=out.write_quantity,
                sub_function=out.sub_function,
                mei_type=out.mei_type,
                file_numbers=out.file_numbers,
                record_numbers=out.record_numbers,
                record_lengths=out.record_lengths,
                data=out.data,
            )
        )
        for item in out.device_objects:
            level = item.conformity_level_code
            ctx.emit(
                ModbusDeviceIdEvent(
                    **ctx.where(),
                    tid=tid,
                    unit=unit,
                    pdu_type="REQ" if is_request else "RESP",
                    device_id_code=item.device_id_code,
                    object_id_code=item.object_id_code,
                    object_id=object_name(item.object_id_code),
                    object_value=item.object_value,
                    conformity_level_code=level,
                    conformity_level=None if level is None else conformity_level_name(level),
                    more_follows=item.more_follows,
                    next_object_id=item.next_object_id,
                )
            )

    def _match(self, tid: int, code: int) -> _Request | None:
        """The oldest outstanding request with this transaction id and function code (removed)."""
        index = self._find(tid, code)
        if index is None:
            return None
        request = self._pending[index]
        del self._pending[index]
        return request

    def _find(self, tid: int, code: int) -> int | None:
        for index, request in enumerate(self._pending):
            if request.tid == tid and request.function_code == code:
                return index
        return None

    # ------------------------------------------------------------------ columnar fast path

    @classmethod
    def parse_pdu_batch(cls, pdus: Datagrams) -> BatchResult:
        """The common well-formed ADUs, vectorized: requests and responses of Read Coils / Discrete
        Inputs / Holding / Input Registers (1-4), Write Single Coil / Register (5, 6) and Write
        Multiple Coils / Registers (15, 16), and exception responses, each only in the exact shape
        :meth:`parse` accepts without a weird (quantities within the limits, byte counts that agree).
        Requests and responses are told apart, and responses matched to their request, per flow in
        stream order by ``apply``; a response of read bits or registers whose size differs from its
        request's quantity (a weird) and every other ADU go to :meth:`parse`."""
        fast = _FastModbus(pdus)
        return BatchResult(fast.handled, apply=fast.apply, build=fast.build)


# ---------------------------------------------------------------------- columnar fast path


def _name_table(name: Callable[[int], str]) -> npt.NDArray[np.str_]:
    return np.array([name(code) for code in range(256)])


_FUNC_NAMES = _name_table(function_name)
_EXCEPTION_NAMES = _name_table(exception_name)
_NO_LIST = -1
"""``count`` of a row without a coil or register list (the field is null)."""
_NULL = -1
"""A null address or quantity in the fast path's integer columns (real values are non-negative)."""
# Kinds of ADU, by what a response needs from its request (set per direction in ``_FastModbus``).
_NOT_FAST, _STATIC, _READ_BITS, _READ_REGISTERS, _EXCEPTION = 0, 1, 2, 3, 4


class _FastModbus:
    """One batch of ADUs for :meth:`ModbusDissector.parse_pdu_batch`: the shape checks as columns, the
    per-flow matching (``apply``) and the event columns (``build``).

    The fields an ADU's own bytes fix are columns per direction (``*_req`` as a request, ``*_resp``
    as a response); ``apply`` records the direction and what the matched request gives.
    """

    def __init__(self, pdus: Datagrams) -> None:
        self.pdus = pdus
        n = len(pdus)
        head = pdus.heads(FAST_HEAD).astype(np.int64)
        self.head = head
        length = pdus.length
        self.mbap_length = head[:, 4] << 8 | head[:, 5]
        code = self.code = head[:, 7]
        body = length - HEADER_SIZE
        b0, b4 = head[:, 8], head[:, 12]
        word0 = head[:, 8] << 8 | head[:, 9]
        word1 = head[:, 10] << 8 | head[:, 11]
        framed = (
            (length >= HEADER_SIZE)
            & (head[:, 2] == 0)
            & (head[:, 3] == 0)
            & (self.mbap_length + 6 == length)
            & (self.mbap_length >= MIN_LENGTH)
            & (self.mbap_length <= MAX_LENGTH)
        )
        fixed4 = framed & (body == 4)
        read_bits = (code == 1) | (code == 2)
        read_registers = (code == 3) | (code == 4)
        coil = code == 5
        register = code == 6
        write_coils = code == 15
        write_registers = code == 16
        coil_value = (word1 == COIL_ON) | (word1 == COIL_OFF)
        counted = framed & (body >= 1) & (b0 == body - 1)
        multiple = framed & (body >= 5) & (b4 == body - 5)
        in_range = word1 >= 1
        # As a request: every field comes from the ADU itself.
        request = (
            (fixed4 & read_bits & in_range & (word1 <= READ_BITS_LIMIT))
            | (fixed4 & read_registers & in_range & (word1 <= READ_REGISTERS_LIMIT))
            | (fixed4 & coil & coil_value)
            | (fixed4 & register)
            | (multiple & write_coils & in_range & (word1 <= WRITE_COILS_LIMIT) & (b4 == (word1 + 7) >> 3))
            | (multiple & write_registers & in_range & (word1 <= WRITE_REGISTERS_LIMIT) & (b4 == 2 * word1))
        )
        self.requests = request.tolist()
        single = coil | register
        self.address_req = word0
        self.quantity_req = np.where(single, 1, word1)
        self.coils_req = np.where(write_coils, word1, np.where(coil, 1, _NO_LIST))
        self.coils_at_req = np.where(write_coils, HEADER_SIZE + 5, HEADER_SIZE + 2)
        self.registers_req = np.where(write_registers, b4 >> 1, np.where(register, 1, _NO_LIST))
        self.registers_at_req = np.where(write_registers, HEADER_SIZE + 5, HEADER_SIZE + 2)
        # As a response: read responses and exceptions take fields from their request (in apply).
        exception = framed & (code & 0x80 != 0) & (code != 0x80) & (body == 1)
        static = fixed4 & ((coil & coil_value) | register | write_coils | write_registers)
        kind = np.full(n, _NOT_FAST, dtype=np.int64)
        kind[static] = _STATIC
        kind[counted & read_bits] = _READ_BITS
        kind[counted & read_registers & (b0 % 2 == 0)] = _READ_REGISTERS
        kind[exception] = _EXCEPTION
        self.kinds = kind.tolist()
        self.handled: npt.NDArray[np.bool_] = request | (kind != _NOT_FAST)
        self.tids = (head[:, 0] << 8 | head[:, 1]).tolist()
        self.codes = (code & 0x7F).tolist()
        self.origs = pdus.is_orig.tolist()
        self.bytes_counted = b0.tolist()
        self.addresses, self.quantities = self.address_req.tolist(), self.quantity_req.tolist()
        # Python lists, so that apply() writes what the matched request gives cheaply (_NULL: null).
        self.address_resp = np.where(static, word0, _NULL).tolist()
        quantity = np.where(single, 1, np.where(read_registers, b0 >> 1, word1))
        self.quantity_resp = np.where(static | (kind == _READ_REGISTERS), quantity, _NULL).tolist()
        bits = np.where(kind == _READ_BITS, 8 * b0, _NO_LIST)
        self.coils_resp = np.where(static & coil, 1, bits).tolist()
        self.coils_at_resp = np.where(coil, HEADER_SIZE + 2, HEADER_SIZE + 1)
        self.registers_resp = np.where(
            static & register, 1, np.where(kind == _READ_REGISTERS, b0 >> 1, _NO_LIST)
        )
        self.registers_at_resp = np.where(register, HEADER_SIZE + 2, HEADER_SIZE + 1)
        self.exception = exception
        self.is_request = [False] * n
        self.matched = [False] * n

    def apply(self, dissector: ModbusDissector, i: int) -> bool:
        if self.origs[i] == dissector._client_is_orig:
            if not self.requests[i]:
                return False
            fields = _Fields(address=self.addresses[i], quantity=self.quantities[i])
            dissector._pending.append(_Request(self.tids[i], self.codes[i], fields))
            self.is_request[i] = True
            return True
        kind = self.kinds[i]
        if kind == _NOT_FAST:
            return False
        index = dissector._find(self.tids[i], self.codes[i])
        if index is None:
            return True
        request = dissector._pending[index].fields
        if kind != _STATIC:
            quantity = request.quantity
            if kind == _READ_BITS:
                if quantity is not None:
                    if self.bytes_counted[i] != (quantity + 7) >> 3:
                        return False  # modbus_quantity_mismatch: parse() reports it
                    self.coils_resp[i] = self.quantity_resp[i] = quantity
                    if request.address is not None:
                        self.address_resp[i] = request.address
            else:
                if kind == _READ_REGISTERS:
                    if quantity is not None and quantity != self.bytes_counted[i] >> 1:
                        return False  # modbus_quantity_mismatch: parse() reports it
                elif quantity is not None:  # an exception: the request's quantity
                    self.quantity_resp[i] = quantity
                if request.address is not None:
                    self.address_resp[i] = request.address
        del dissector._pending[index]
        self.matched[i] = True
        return True

    def build(self, rows: npt.NDArray[np.intp]) -> tuple[EventColumns, ...]:
        m = rows.shape[0]
        head, code = self.head, self.code[rows]
        request = np.array(self.is_request, dtype=np.bool_)[rows]
        exception = self.exception[rows] & ~request
        address_resp = np.array(self.address_resp, dtype=np.int64)[rows]
        quantity_resp = np.array(self.quantity_resp, dtype=np.int64)[rows]
        start = self.pdus.start[rows]
        coils_resp = np.array(self.coils_resp, dtype=np.int64)[rows]
        coils = np.where(request, self.coils_req[rows], coils_resp)
        coils_at = start + np.where(request, self.coils_at_req[rows], self.coils_at_resp[rows])
        registers = np.where(request, self.registers_req[rows], self.registers_resp[rows])
        registers_at = start + np.where(request, self.registers_at_req[rows], self.registers_at_resp[rows])
        columns: dict[str, npt.NDArray[Any] | pa.Array] = {
            "tid": head[rows, 0] << 8 | head[rows, 1],
            "unit": head[rows, 6],
            "function_code": code,
            "func": pa.array(_FUNC_NAMES[code], pa.string()),
            "pdu_type": pa.array(np.where(request, "REQ", "RESP"), pa.string()),
            "len": self.mbap_length[rows],
            "exception_code": pa.array(head[rows, 8], pa.int64(), mask=~exception),
            "exception": pa.array(_EXCEPTION_NAMES[head[rows, 8]], pa.string(), mask=~exception),
            "matched": np.array(self.matched, dtype=np.bool_)[rows],
            "address": _nullable(np.where(request, self.address_req[rows], address_resp)),
            "quantity": _nullable(np.where(request, self.quantity_req[rows], quantity_resp)),
            "coils": _bit_lists(self.pdus.buffer, coils_at, coils),
            "registers": _register_lists(self.pdus.buffer, registers_at, registers),
        }
        for name in NULL_FAST_FIELDS:
            columns[name] = pa.nulls(m, NULL_FAST_FIELDS[name])
        return (EventColumns(ModbusEvent, rows, columns),)


def _nullable(values: npt.NDArray[np.int64]) -> pa.Array:
    """An int64 column, null where ``values`` is ``_NULL``."""
    return pa.array(values, pa.int64(), mask=values == _NULL)


def _list_offsets(counts: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Offsets of lists of ``counts`` items (``_NO_LIST`` counts as 0) and the clipped counts."""
    counts = np.maximum(counts, 0)
    offsets = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, counts


def _ranges(
    first: npt.NDArray[np.int64], counts: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64]
) -> Any:
    """``first[i] + k`` for ``k`` in ``range(counts[i])``, concatenated."""
    total = int(offsets[-1])
    return np.arange(total, dtype=np.int64) + np.repeat(first - offsets[:-1], counts)


def _register_lists(
    buffer: npt.NDArray[np.uint8], at: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]
) -> pa.Array:
    """A list<int64> column: ``counts[i]`` big-endian 16-bit registers at ``buffer[at[i]:]`` (null
    where ``counts[i]`` is ``_NO_LIST``)."""
    offsets, clipped = _list_offsets(counts)
    values = np.zeros(0, dtype=np.int64)
    if offsets[-1]:
        index = _ranges(at, 2 * clipped, 2 * offsets)
        values = buffer[index].view(">u2").astype(np.int64)
    return pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)), pa.array(values, pa.int64()), mask=pa.array(counts < 0)
    )


def _bit_lists(
    buffer: npt.NDArray[np.uint8], at: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]
) -> pa.Array:
    """A list<int64> column: the first ``counts[i]`` bits (LSB first, the coil layout) of the bytes at
    ``buffer[at[i]:]`` (null where ``counts[i]`` is ``_NO_LIST``)."""
    offsets, clipped = _list_offsets(counts)
    values = np.zeros(0, dtype=np.int64)
    if offsets[-1]:
        sizes = (clipped + 7) >> 3
        byte_offsets = np.zeros(sizes.shape[0] + 1, dtype=np.int64)
        np.cumsum(sizes, out=byte_offsets[1:])
        octets = buffer[_ranges(at, sizes, byte_offsets)]
        bits = np.unpackbits(octets, bitorder="little")
        values = bits[_ranges(8 * byte_offsets[:-1], clipped, offsets)].astype(np.int64)
    return pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)), pa.array(values, pa.int64()), mask=pa.array(counts < 0)
    )


# ---------------------------------------------------------------------- recognition helpers


def _header_prefix_ok(head: bytes) -> bool:
    """The bytes present of an MBAP header + function code can start a Modbus ADU."""
    n = len(head)
    if n >= 4 and (head[2] or head[3]):
        return False
    if n >= 6 and not MIN_LENGTH <= _u16(head, 4) <= MAX_LENGTH:
        # A length below 2 in a segment too short to hold a function code cannot be judged yet
        # (zero padding, a SYN's payload): only a complete header is rejected for it.
        return n < HEADER_SIZE and _u16(head, 4) < MIN_LENGTH
    if n >= 7 and head[6] in RESERVED_UNITS:
        return False
    return not (n >= HEADER_SIZE and head[7] in (0, 0x80))


def _function_ok(code: int, body: bytes, on_port: bool) -> bool:
    """A complete ADU's function code and body fit Modbus (strictly so off the Modbus port)."""
    if code & 0x80:
        # An exception response: exactly one exception code byte.
        return len(body) == 1 and (on_port or (code & 0x7F) in PUBLIC_FUNCTIONS)
    if code in PUBLIC_FUNCTIONS:
        return _plausible_body(code, body)
    return on_port


# ---------------------------------------------------------------------- function decoders


def _decode(
    code: int, body: bytes, out: _Fields, request: _Fields | None, is_request: bool, ctx: PduContext
) -> None:
    """Fill ``out`` from the body of a request or normal response of function ``code``."""
    decoder = _REQUESTS.get(code) if is_request else _RESPONSES.get(code)
    if decoder is None:
        if body:
            out.data = body
        return
    decoder(body, out, request, ctx)


def _exact(body: bytes, size: int, ctx: PduContext, what: str) -> bool:
    """Check a fixed-size body; report a mismatch (decoding goes on when enough bytes are there)."""
    if len(body) < size:
        ctx.weird("modbus_truncated_pdu", f"{what}: {len(body)} body bytes, expected {size}")
        return False
    if len(body) > size:
        ctx.weird("modbus_length_mismatch", f"{what}: {len(body)} body bytes, expected {size}")
    return True


def _quantity(quantity: int, limit: int, ctx: PduContext, what: str) -> None:
    if not 1 <= quantity <= limit:
        ctx.weird("modbus_invalid_quantity", f"{what}: quantity {quantity} outside 1..{limit}")


def _counted(body: bytes, ctx: PduContext, what: str) -> bytes | None:
    """The ``byte count`` + bytes layout: the counted bytes (what is present of them)."""
    if not body:
        ctx.weird("modbus_truncated_pdu", f"{what}: no byte count")
        return None
    count = body[0]
    if count != len(body) - 1:
        ctx.weird("modbus_byte_count_mismatch", f"{what}: byte count {count}, {len(body) - 1} bytes follow")
    return body[1 : 1 + count]


def _read_request(limit: int, what: str) -> _Decoder:
    def decode(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
        if _exact(body, 4, ctx, what):
            out.address, out.quantity = _u16(body, 0), _u16(body, 2)
            _quantity(out.quantity, limit, ctx, what)

    return decode


def _read_bits_response(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    values = _counted(body, ctx, "read bits response")
    if values is None:
        return
    count = 8 * len(values)
    if request is not None and request.quantity is not None:
        out.address = request.address
        if len(values) == (request.quantity + 7) // 8:
            out.quantity = count = request.quantity
        else:
            ctx.weird(
                "modbus_quantity_mismatch",
                f"{len(values)} bytes of bits answer a request for {request.quantity}",
            )
    out.coils = _bits(values, count)


def _read_registers_response(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    values = _counted(body, ctx, "read registers response")
    if values is None:
        return
    if len(values) % 2:
        ctx.weird("modbus_odd_byte_count", f"{len(values)} bytes of 16-bit registers")
    out.registers = _registers(values)
    out.quantity = len(out.registers)
    if request is not None:
        out.address = request.address
        if request.quantity is not None and request.quantity != out.quantity:
            ctx.weird(
                "modbus_quantity_mismatch",
                f"{out.quantity} registers answer a request for {request.quantity}",
            )


def _write_single_coil(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    if not _exact(body, 4, ctx, "write single coil"):
        return
    out.address, value = _u16(body, 0), _u16(body, 2)
    out.quantity = 1
    if value in (COIL_ON, COIL_OFF):
        out.coils = [int(value == COIL_ON)]
    else:
        ctx.weird("modbus_invalid_coil_value", f"coil value {value:#06x}, expected 0xff00 or 0x0000")


def _write_single_register(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    if _exact(body, 4, ctx, "write single register"):
        out.address, out.quantity = _u16(body, 0), 1
        out.registers = [_u16(body, 2)]


def _empty_request(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    _exact(body, 0, ctx, "request without data")


def _exception_status_response(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    if _exact(body, 1, ctx, "read exception status response"):
        out.coils = _bits(body[:1], 8)


def _diagnostics(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    if len(body) < 2:
        ctx.weird("modbus_truncated_pdu", "diagnostics without a sub-function")
        return
    out.sub_function = _u16(body, 0)
    out.data = body[2:]


def _comm_event_counter_response(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    if _exact(body, 4, ctx, "get comm event counter response"):
        out.registers = _registers(body[:4])  # status, event count


def _comm_event_log_response(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    values = _counted(body, ctx, "get comm event log response")
    if values is None:
        return
    if len(values) < 6:
        ctx.weird("modbus_truncated_pdu", f"comm event log of {len(values)} bytes, at least 6 expected")
        return
    out.registers = _registers(values[:6])  # status, event count, message count
    out.data = values[6:]


def _write_multiple_coils_request(
    body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext
) -> None:
    if len(body) < 5:
        ctx.weird("modbus_truncated_pdu", f"write multiple coils: {len(body)} body bytes")
        return
    out.address, out.quantity = _u16(body, 0), _u16(body, 2)
    _quantity(out.quantity, WRITE_COILS_LIMIT, ctx, "write multiple coils")
    values = _counted(body[4:], ctx, "write multiple coils")
    if values is None:
        return
    if len(values) != (out.quantity + 7) // 8:
        ctx.weird("modbus_quantity_mismatch", f"{len(values)} bytes for {out.quantity} coils")
    out.coils = _bits(values, out.quantity)


def _write_multiple_registers_request(
    body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext
) -> None:
    if len(body) < 5:
        ctx.weird("modbus_truncated_pdu", f"write multiple registers: {len(body)} body bytes")
        return
    out.address, out.quantity = _u16(body, 0), _u16(body, 2)
    _quantity(out.quantity, WRITE_REGISTERS_LIMIT, ctx, "write multiple registers")
    values = _counted(body[4:], ctx, "write multiple registers")
    if values is None:
        return
    if len(values) != 2 * out.quantity:
        ctx.weird("modbus_quantity_mismatch", f"{len(values)} bytes for {out.quantity} registers")
    out.registers = _registers(values)


def _write_multiple_response(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    if _exact(body, 4, ctx, "write multiple response"):
        out.address, out.quantity = _u16(body, 0), _u16(body, 2)


def _report_server_id_response(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    values = _counted(body, ctx, "report server id response")
    if values is not None:
        out.data = values


def _read_file_record_request(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    values = _counted(body, ctx, "read file record request")
    if values is None:
        return
    if len(values) % 7:
        ctx.weird("modbus_byte_count_mismatch", f"{len(values)} bytes of 7-byte file sub-requests")
    out.file_numbers, out.record_numbers, out.record_lengths = [], [], []
    for start in range(0, len(values) - 6, 7):
        if values[start] != FILE_REFERENCE_TYPE:
            ctx.weird("modbus_bad_reference_type", f"file reference type {values[start]}, expected 6")
        out.file_numbers.append(_u16(values, start + 1))
        out.record_numbers.append(_u16(values, start + 3))
        out.record_lengths.append(_u16(values, start + 5))
    out.quantity = len(out.file_numbers)


def _read_file_record_response(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    values = _counted(body, ctx, "read file record response")
    if values is None:
        return
    registers: list[int] = []
    lengths: list[int] = []
    start = 0
    while start < len(values):
        size = values[start]  # reference type + data bytes
        group = values[start + 1 : start + 1 + size]
        if size < 1 or len(group) < size:
            ctx.weird("modbus_truncated_pdu", "file record sub-response longer than the data")
            break
        if group[0] != FILE_REFERENCE_TYPE:
            ctx.weird("modbus_bad_reference_type", f"file reference type {group[0]}, expected 6")
        registers.extend(_registers(group[1:]))
        lengths.append((size - 1) // 2)
        start += 1 + size
    out.registers, out.record_lengths, out.quantity = registers, lengths, len(lengths)
    if request is not None:
        out.file_numbers, out.record_numbers = request.file_numbers, request.record_numbers


def _write_file_record(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    values = _counted(body, ctx, "write file record")
    if values is None:
        return
    out.file_numbers, out.record_numbers, out.record_lengths, out.registers = [], [], [], []
    start = 0
    while start < len(values):
        if len(values) - start < 7:
            ctx.weird("modbus_truncated_pdu", "file record sub-request shorter than 7 bytes")
            break
        if values[start] != FILE_REFERENCE_TYPE:
            ctx.weird("modbus_bad_reference_type", f"file reference type {values[start]}, expected 6")
        words = _u16(values, start + 5)
        data = values[start + 7 : start + 7 + 2 * words]
        if len(data) < 2 * words:
            ctx.weird("modbus_truncated_pdu", f"file record of {words} registers, {len(data)} bytes")
        out.file_numbers.append(_u16(values, start + 1))
        out.record_numbers.append(_u16(values, start + 3))
        out.record_lengths.append(words)
        out.registers.extend(_registers(data))
        start += 7 + 2 * words
    out.quantity = len(out.file_numbers)


def _mask_write_register(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    if _exact(body, 6, ctx, "mask write register"):
        out.address, out.and_mask, out.or_mask = _u16(body, 0), _u16(body, 2), _u16(body, 4)


def _read_write_request(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    if len(body) < 9:
        ctx.weird("modbus_truncated_pdu", f"read/write multiple registers: {len(body)} body bytes")
        return
    out.address, out.quantity = _u16(body, 0), _u16(body, 2)
    out.write_start_address, out.write_quantity = _u16(body, 4), _u16(body, 6)
    _quantity(out.quantity, READ_REGISTERS_LIMIT, ctx, "read/write multiple registers (read)")
    _quantity(out.write_quantity, READ_WRITE_WRITE_LIMIT, ctx, "read/write multiple registers (write)")
    values = _counted(body[8:], ctx, "read/write multiple registers")
    if values is None:
        return
    if len(values) != 2 * out.write_quantity:
        ctx.weird("modbus_quantity_mismatch", f"{len(values)} bytes for {out.write_quantity} registers")
    out.registers = _registers(values)


def _fifo_request(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    if _exact(body, 2, ctx, "read fifo queue"):
        out.address = _u16(body, 0)


def _fifo_response(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    if len(body) < 4:
        ctx.weird("modbus_truncated_pdu", f"read fifo queue response: {len(body)} body bytes")
        return
    count, fifo_count = _u16(body, 0), _u16(body, 2)
    if count != len(body) - 2 or count != 2 + 2 * fifo_count:
        ctx.weird("modbus_byte_count_mismatch", f"byte count {count} for {fifo_count} FIFO registers")
    if fifo_count > FIFO_LIMIT:
        ctx.weird("modbus_invalid_quantity", f"FIFO count {fifo_count} above {FIFO_LIMIT}")
    out.quantity = fifo_count
    out.registers = _registers(body[4 : 4 + 2 * fifo_count])
    if request is not None:
        out.address = request.address


def _encapsulated(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    """FC 43, request or response (the layout tells them apart by the fields' meaning only)."""
    if not body:
        ctx.weird("modbus_truncated_pdu", "encapsulated interface transport without MEI type")
        return
    out.mei_type = body[0]
    if out.mei_type != MEI_READ_DEVICE_ID:
        if out.mei_type != MEI_CANOPEN:
            ctx.weird("modbus_reserved_mei_type", f"MEI type {out.mei_type}")
        out.data = body[1:]


def _device_id_request(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    _encapsulated(body, out, request, ctx)
    if out.mei_type != MEI_READ_DEVICE_ID or not _exact(body, 3, ctx, "read device identification"):
        return
    code, object_id = body[1], body[2]
    if not 1 <= code <= 4:
        ctx.weird("modbus_bad_device_id_code", f"read device id code {code}, expected 1..4")
    out.device_objects.append(_DeviceObject(code, object_id))


def _device_id_response(body: bytes, out: _Fields, request: _Fields | None, ctx: PduContext) -> None:
    _encapsulated(body, out, request, ctx)
    if out.mei_type != MEI_READ_DEVICE_ID:
        return
    if len(body) < 6:
        ctx.weird("modbus_truncated_pdu", f"read device identification response: {len(body)} bytes")
        return
    code, conformity, more, next_id, count = body[1], body[2], body[3], body[4], body[5]
    if more not in (0x00, 0xFF):
        ctx.weird("modbus_bad_more_follows", f"more follows {more:#04x}, expected 0x00 or 0xff")
    start = 6
    while start < len(body) and len(out.device_objects) < count:
        if len(body) - start < 2 or len(body) - start - 2 < body[start + 1]:
            ctx.weird("modbus_truncated_pdu", "device identification object longer than the data")
            break
        object_id, size = body[start], body[start + 1]
        value = body[start + 2 : start + 2 + size].decode("utf-8", "backslashreplace")
        out.device_objects.append(_DeviceObject(code, object_id, value, conformity, more == 0xFF, next_id))
        start += 2 + size
    found = len(out.device_objects)
    if found != count:
        ctx.weird("modbus_object_count_mismatch", f"{count} objects announced, {found} present")
    elif start < len(body):
        ctx.weird("modbus_length_mismatch", f"{len(body) - start} bytes after the last object")


_BOTH: dict[int, tuple[_Decoder, _Decoder]] = {
    1: (_read_request(READ_BITS_LIMIT, "read coils"), _read_bits_response),
    2: (_read_request(READ_BITS_LIMIT, "read discrete inputs"), _read_bits_response),
    3: (_read_request(READ_REGISTERS_LIMIT, "read holding registers"), _read_registers_response),
    4: (_read_request(READ_REGISTERS_LIMIT, "read input registers"), _read_registers_response),
    5: (_write_single_coil, _write_single_coil),
    6: (_write_single_register, _write_single_register),
    7: (_empty_request, _exception_status_response),
    8: (_diagnostics, _diagnostics),
    11: (_empty_request, _comm_event_counter_response),
    12: (_empty_request, _comm_event_log_response),
    15: (_write_multiple_coils_request, _write_multiple_response),
    16: (_write_multiple_registers_request, _write_multiple_response),
    17: (_empty_request, _report_server_id_response),
    20: (_read_file_record_request, _read_file_record_response),
    21: (_write_file_record, _write_file_record),
    22: (_mask_write_register, _mask_write_register),
    23: (_read_write_request, _read_registers_response),
    24: (_fifo_request, _fifo_response),
    43: (_device_id_request, _device_id_response),
}
_REQUESTS: dict[int, _Decoder] = {code: pair[0] for code, pair in _BOTH.items()}
_RESPONSES: dict[int, _Decoder] = {code: pair[1] for code, pair in _BOTH.items()}
