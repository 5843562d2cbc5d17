"""Payload builders for the traffic generator: the exact bytes of each application message.

Pure functions from message fields to ``bytes``, run once per template (or per rare message), never
per generated packet. Each section names the specification it follows, so that the generated
traffic is something a conforming dissector (tshark, and FieldWard's own) parses without complaint.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------------
# Modbus/TCP (Modbus Application Protocol Specification v1.1b3; Modbus Messaging on TCP/IP v1.0b)
# --------------------------------------------------------------------------------------------------

MODBUS_PORT = 502


def modbus_adu(transaction: int, unit: int, pdu: bytes) -> bytes:
    """MBAP header (transaction id, protocol 0, length, unit id) followed by the PDU."""
    return struct.pack(">HHHB", transaction & 0xFFFF, 0, len(pdu) + 1, unit) + pdu


def modbus_read_request(function: int, address: int, quantity: int) -> bytes:
    """FC 1-4 request PDU: starting address and quantity of coils/inputs/registers."""
    return struct.pack(">BHH", function, address, quantity)


def modbus_read_response(function: int, values: Sequence[int]) -> bytes:
    """FC 1-4 response PDU with the byte count the quantity implies (bits packed LSB first)."""
    if function in (1, 2):
        packed = bytearray((len(values) + 7) // 8)
        for i, bit in enumerate(values):
            if bit:
                packed[i // 8] |= 1 << (i % 8)
        return bytes([function, len(packed)]) + bytes(packed)
    return bytes([function, 2 * len(values)]) + struct.pack(f">{len(values)}H", *values)


def modbus_write_single_register(address: int, value: int) -> bytes:
    """FC 6 PDU (the normal response echoes the request)."""
    return struct.pack(">BHH", 6, address, value & 0xFFFF)


def modbus_write_multiple_request(address: int, values: Sequence[int]) -> bytes:
    """FC 16 request PDU."""
    n = len(values)
    return struct.pack(f">BHHB{n}H", 16, address, n, 2 * n, *values)


def modbus_write_multiple_response(address: int, quantity: int) -> bytes:
    return struct.pack(">BHH", 16, address, quantity)


def modbus_exception(function: int, code: int) -> bytes:
    """Exception response PDU: function code with the high bit set, then the exception code."""
    return bytes([function | 0x80, code])


def modbus_device_id_request(read_code: int = 1, object_id: int = 0) -> bytes:
    """FC 43 / MEI 14 Read Device Identification request."""
    return bytes([0x2B, 0x0E, read_code, object_id])


def modbus_device_id_response(objects: Sequence[str], read_code: int = 1) -> bytes:
    """FC 43 / MEI 14 response carrying basic objects 0.. (vendor, product code, revision)."""
    body = bytearray([0x2B, 0x0E, read_code, 0x81, 0x00, 0x00, len(objects)])
    for object_id, text in enumerate(objects):
        raw = text.encode()
        body += bytes([object_id, len(raw)]) + raw
    return bytes(body)


# --------------------------------------------------------------------------------------------------
# S7comm over COTP (ISO 8073 class 0) over TPKT (RFC 1006)
# --------------------------------------------------------------------------------------------------

S7_PORT = 102
COTP_DT = b"\x02\xf0\x80"  # data TPDU, last data unit
S7_JOB, S7_ACK_DATA, S7_USERDATA = 1, 3, 7
S7_AREA_DB = 0x84
S7_AREA_FLAGS = 0x83


def tpkt(payload: bytes) -> bytes:
    return struct.pack(">BBH", 3, 0, len(payload) + 4) + payload


def _cotp_params(src_tsap: int, dst_tsap: int, tpdu_size: int) -> bytes:
    return (
        bytes([0xC0, 1, tpdu_size, 0xC1, 2])
        + struct.pack(">H", src_tsap)
        + b"\xc2\x02"
        + struct.pack(">H", dst_tsap)
    )


def cotp_connection_request(src_ref: int, src_tsap: int, dst_tsap: int, tpdu_size: int = 0x0A) -> bytes:
    """TPKT + COTP CR TPDU (class 0) with the TPDU size and calling/called TSAP parameters."""
    body = bytes([0xE0]) + struct.pack(">HHB", 0, src_ref, 0) + _cotp_params(src_tsap, dst_tsap, tpdu_size)
    return tpkt(bytes([len(body)]) + body)


def cotp_connection_confirm(
    dst_ref: int, src_ref: int, src_tsap: int, dst_tsap: int, tpdu_size: int = 0x0A
) -> bytes:
    """TPKT + COTP CC TPDU answering a CR (TSAPs as in the request)."""
    body = (
        bytes([0xD0]) + struct.pack(">HHB", dst_ref, src_ref, 0) + _cotp_params(src_tsap, dst_tsap, tpdu_size)
    )
    return tpkt(bytes([len(body)]) + body)


def s7_message(rosctr: int, pdu_ref: int, params: bytes, data: bytes = b"", error: int = 0) -> bytes:
    """TPKT + COTP DT + S7 PDU. Ack-Data PDUs carry the 2-byte error class/code in the header."""
    header = struct.pack(">BBHHHH", 0x32, rosctr, 0, pdu_ref & 0xFFFF, len(params), len(data))
    if rosctr in (2, S7_ACK_DATA):
        header += struct.pack(">H", error)
    return tpkt(COTP_DT + header + params + data)


S7_PDU_REF_OFFSET = 4 + 3 + 4
"""Offset of the 16-bit PDU reference within an S7 message built by :func:`s7_message`."""


def s7_setup_request(pdu_ref: int, pdu_length: int = 480) -> bytes:
    return s7_message(S7_JOB, pdu_ref, struct.pack(">BBHHH", 0xF0, 0, 1, 1, pdu_length))


def s7_setup_response(pdu_ref: int, pdu_length: int = 240) -> bytes:
    return s7_message(S7_ACK_DATA, pdu_ref, struct.pack(">BBHHH", 0xF0, 0, 1, 1, pdu_length))


@dataclass(frozen=True, slots=True)
class S7Item:
    """One ANY-pointer variable specification: ``length`` bytes at ``start`` in ``area``/``db``."""

    area: int
    db: int
    start: int
    length: int

    def spec(self) -> bytes:
        address = self.start * 8
        return struct.pack(
            ">BBBBHHB", 0x12, 0x0A, 0x10, 0x02, self.length, self.db, self.area
        ) + address.to_bytes(3, "big")


def s7_read_request(pdu_ref: int, items: Sequence[S7Item]) -> bytes:
    params = bytes([0x04, len(items)]) + b"".join(item.spec() for item in items)
    return s7_message(S7_JOB, pdu_ref, params)


def s7_read_response(pdu_ref: int, values: Sequence[bytes]) -> bytes:
    """Read Var Ack-Data: per item return code 0xFF, transport size BYTE (length in bits), data."""
    data = bytearray()
    for i, value in enumerate(values):
        data += struct.pack(">BBH", 0xFF, 0x04, 8 * len(value)) + value
        if len(value) % 2 and i + 1 < len(values):
            data += b"\x00"
    return s7_message(S7_ACK_DATA, pdu_ref, bytes([0x04, len(values)]), bytes(data))


def s7_write_request(pdu_ref: int, item: S7Item, value: bytes) -> bytes:
    params = bytes([0x05, 1]) + item.spec()
    return s7_message(S7_JOB, pdu_ref, params, struct.pack(">BBH", 0x00, 0x04, 8 * len(value)) + value)


def s7_write_response(pdu_ref: int, items: int = 1) -> bytes:
    return s7_message(S7_ACK_DATA, pdu_ref, bytes([0x05, items]), b"\xff" * items)


def s7_szl_request(pdu_ref: int, szl_id: int, index: int) -> bytes:
    """Userdata CPU-functions request 'read SZL' (system status list)."""
    params = bytes([0x00, 0x01, 0x12, 0x04, 0x11, 0x44, 0x01, 0x00])
    return s7_message(S7_USERDATA, pdu_ref, params, struct.pack(">BBHHH", 0xFF, 0x09, 4, szl_id, index))


def s7_szl_response(
    pdu_ref: int, szl_id: int, index: int, entry_length: int, entries: Sequence[bytes]
) -> bytes:
    """Userdata 'read SZL' response: SZL header (id, index, entry length, count) and the entries."""
    params = bytes([0x00, 0x01, 0x12, 0x08, 0x12, 0x84, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00])
    szl = struct.pack(">HHHH", szl_id, index, entry_length, len(entries)) + b"".join(entries)
    return s7_message(S7_USERDATA, pdu_ref, params, struct.pack(">BBH", 0xFF, 0x09, len(szl)) + szl)


def szl_module_identification(order_number: str, firmware: tuple[int, int, int]) -> list[bytes]:
    """SZL 0x0011 records (28 bytes each): module, basic hardware and basic firmware."""
    mlfb = order_number.encode().ljust(20)[:20]
    major, minor, patch = firmware
    return [
        struct.pack(">H", 1) + mlfb + struct.pack(">HH", 0, 1) + b"\x20\x20",
        struct.pack(">H", 6) + mlfb + struct.pack(">HH", 0, 1) + b"\x20\x20",
        struct.pack(">H", 7) + b" " * 20 + struct.pack(">H", 0) + bytes([ord("V"), major, minor, patch]),
    ]


def szl_component_identification(station: str, name: str, serial: str, module_type: str) -> list[bytes]:
    """SZL 0x001C records (34 bytes each): station, PLC name, copyright, serial and module type."""
    fields = [(1, station), (2, name), (4, "Original Siemens Equipment"), (5, serial), (7, module_type)]
    return [struct.pack(">H", index) + text.encode().ljust(32, b"\x00")[:32] for index, text in fields]


# --------------------------------------------------------------------------------------------------
# EtherNet/IP encapsulation and CIP (ODVA CIP Networks Library Vol. 1 and Vol. 2)
# --------------------------------------------------------------------------------------------------

ENIP_PORT = 44818
CIP_IO_PORT = 2222
ENIP_LIST_IDENTITY = 0x0063
ENIP_REGISTER_SESSION = 0x0065
ENIP_UNREGISTER_SESSION = 0x0066
ENIP_SEND_RR_DATA = 0x006F
ENIP_CONTEXT_OFFSET = 12
"""Offset of the 8-byte sender context within an encapsulation header."""

CIP_READ_TAG = 0x4C
CIP_WRITE_TAG = 0x4D
CIP_GET_ATTRIBUTE_ALL = 0x01
CIP_FORWARD_OPEN = 0x54
CIP_DINT, CIP_REAL, CIP_INT, CIP_BOOL = 0xC4, 0xCA, 0xC3, 0xC1


def enip(command: int, session: int, data: bytes = b"", context: bytes = bytes(8), status: int = 0) -> bytes:
    """24-byte encapsulation header (little-endian) followed by the command data."""
    return (
        struct.pack("<HHII", command, len(data), session, status)
        + context.ljust(8, b"\x00")[:8]
        + struct.pack("<I", 0)
        + data
    )


def enip_register_session(session: int = 0) -> bytes:
    return enip(ENIP_REGISTER_SESSION, session, struct.pack("<HH", 1, 0))


def cpf(items: Sequence[tuple[int, bytes]]) -> bytes:
    """Common Packet Format: item count, then (type id, length, data) per item."""
    out = bytearray(struct.pack("<H", len(items)))
    for type_id, data in items:
        out += struct.pack("<HH", type_id, len(data)) + data
    return bytes(out)


def enip_send_rr_data(session: int, cip: bytes, context: bytes = bytes(8), timeout: int = 0) -> bytes:
    """SendRRData carrying an unconnected CIP message (null address item + unconnected data item)."""
    data = struct.pack("<IH", 0, timeout) + cpf([(0x0000, b""), (0x00B2, cip)])
    return enip(ENIP_SEND_RR_DATA, session, data, context)


def cip_logical_path(class_id: int, instance: int, attribute: int | None = None) -> bytes:
    path = bytes([0x20, class_id, 0x24, instance])
    return path + bytes([0x30, attribute]) if attribute is not None else path


def cip_symbolic_path(tag: str) -> bytes:
    """ANSI extended symbolic segment (0x91), padded to a 16-bit boundary."""
    raw = tag.encode()
    path = bytes([0x91, len(raw)]) + raw
    return path + b"\x00" if len(path) % 2 else path


def cip_request(service: int, path: bytes, data: bytes = b"") -> bytes:
    return bytes([service, len(path) // 2]) + path + data


def cip_reply(service: int, data: bytes = b"", status: int = 0, extended: Sequence[int] = ()) -> bytes:
    ext = struct.pack(f"<{len(extended)}H", *extended)
    return bytes([service | 0x80, 0, status, len(extended)]) + ext + data


@dataclass(frozen=True, slots=True)
class CipIdentity:
    """The CIP Identity object (class 0x01) attributes a device reports."""

    vendor_id: int
    device_type: int
    product_code: int
    revision: tuple[int, int]
    serial: int
    product_name: str
    status: int = 0x0060

    def attributes(self) -> bytes:
        name = self.product_name.encode()
        major, minor = self.revision
        return (
            struct.pack(
                "<HHHBBHI",
                self.vendor_id,
                self.device_type,
                self.product_code,
                major,
                minor,
                self.status,
                self.serial,
            )
            + bytes([len(name)])
            + name
        )


def enip_list_identity_reply(
    identity: CipIdentity, ip: bytes, context: bytes = bytes(8), state: int = 3
) -> bytes:
    """ListIdentity reply: one CIP Identity item (0x000C) with the socket address of the device."""
    sockaddr = struct.pack(">hH", 2, ENIP_PORT) + ip + bytes(8)
    item = struct.pack("<H", 1) + sockaddr + identity.attributes() + bytes([state])
    return enip(ENIP_LIST_IDENTITY, 0, cpf([(0x000C, item)]), context)


@dataclass(frozen=True, slots=True)
class ForwardOpen:
    """A class-1 cyclic I/O connection as negotiated by Forward_Open (CIP Vol. 1, 3-5.5.2)."""

    o_t_connection_id: int
    t_o_connection_id: int
    serial: int
    originator_vendor: int
    originator_serial: int
    o_t_rpi_us: int
    t_o_rpi_us: int
    o_t_size: int
    t_o_size: int
    input_instance: int = 0x65
    output_instance: int = 0x66
    config_instance: int = 0x67


def cip_forward_open_request(fo: ForwardOpen) -> bytes:
    # Network connection parameters: point-to-point (0x4000), scheduled priority (0x0800), fixed
    # size, connection size including the 2-byte sequence count (and 4-byte run/idle header O->T).
    o_t_params = 0x4800 | (fo.o_t_size + 6)
    t_o_params = 0x4800 | (fo.t_o_size + 2)
    path = bytes([0x20, 0x04, 0x24, fo.config_instance]) + bytes(
        [0x2C, fo.output_instance, 0x2C, fo.input_instance]
    )
    data = (
        struct.pack("<BB", 0x0A, 0x0E)
        + struct.pack(
            "<IIHHI", 0, fo.t_o_connection_id, fo.serial, fo.originator_vendor, fo.originator_serial
        )
        + struct.pack("<B3x", 1)
        + struct.pack("<IHIH", fo.o_t_rpi_us, o_t_params, fo.t_o_rpi_us, t_o_params)
        + struct.pack("<BB", 0x01, len(path) // 2)
        + path
    )
    return cip_request(CIP_FORWARD_OPEN, cip_logical_path(0x06, 0x01), data)


def cip_forward_open_reply(fo: ForwardOpen) -> bytes:
    data = struct.pack(
        "<IIHHIIIBB",
        fo.o_t_connection_id,
        fo.t_o_connection_id,
        fo.serial,
        fo.originator_vendor,
        fo.originator_serial,
        fo.o_t_rpi_us,
        fo.t_o_rpi_us,
        0,
        0,
    )
    return cip_reply(CIP_FORWARD_OPEN, data)


def cip_io_packet(connection_id: int, data: bytes, run_idle: bool) -> bytes:
    """Class-1 I/O datagram (UDP 2222): sequenced address item + connected data item.

    The encapsulation sequence number (offset 10, 32-bit) and the CIP sequence count (offset 18,
    16-bit), both little-endian, are left zero for the generator to stamp per packet.
    """
    header = struct.pack("<I", 1) if run_idle else b""
    return cpf(
        [(0x8002, struct.pack("<II", connection_id, 0)), (0x00B1, struct.pack("<H", 0) + header + data)]
    )


CIP_IO_SEQUENCE_OFFSET = 10
CIP_IO_COUNT_OFFSET = 18

# --------------------------------------------------------------------------------------------------
# DNP3 over TCP (IEEE 1815-2012): link layer with CRC-16/DNP per block, transport, application
# --------------------------------------------------------------------------------------------------

DNP3_PORT = 20000


def _dnp3_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_DNP3_CRC = _dnp3_table()


def dnp3_crc(data: bytes) -> int:
    """CRC-16/DNP (polynomial 0x3D65 reflected, init 0, final complement), sent little-endian."""
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _DNP3_CRC[(crc ^ byte) & 0xFF]
    return ~crc & 0xFFFF


def dnp3_frame(control: int, destination: int, source: int, user_data: bytes) -> bytes:
    """Link frame: 0x0564 header with its CRC, then user data in 16-byte blocks each with a CRC."""
    if len(user_data) > 250:
        raise ValueError("a DNP3 link frame carries at most 250 user data bytes")
    header = struct.pack("<BBBBHH", 0x05, 0x64, 5 + len(user_data), control, destination, source)
    out = bytearray(header + struct.pack("<H", dnp3_crc(header)))
    for i in range(0, len(user_data), 16):
        block = user_data[i : i + 16]
        out += block + struct.pack("<H", dnp3_crc(block))
    return bytes(out)


DNP3_READ = 0x01
DNP3_RESPONSE = 0x81
DNP3_CLASS0 = bytes([60, 1, 0x06])
DNP3_CLASS123 = bytes([60, 2, 0x06, 60, 3, 0x06, 60, 4, 0x06])


def dnp3_request(
    master: int, outstation: int, transport_seq: int, app_seq: int, function: int, objects: bytes
) -> bytes:
    """A single-fragment master request (link control: DIR, PRM, unconfirmed user data)."""
    app = bytes([0xC0 | (app_seq & 0x0F), function]) + objects
    return dnp3_frame(0xC4, outstation, master, bytes([0xC0 | (transport_seq & 0x3F)]) + app)


def dnp3_response(
    outstation: int, master: int, transport_seq: int, app_seq: int, iin: int, objects: bytes
) -> bytes:
    """A single-fragment outstation response (link control: PRM, unconfirmed user data)."""
    app = bytes([0xC0 | (app_seq & 0x0F), DNP3_RESPONSE]) + struct.pack(">H", iin) + objects
    return dnp3_frame(0x44, master, outstation, bytes([0xC0 | (transport_seq & 0x3F)]) + app)


def dnp3_static_objects(binaries: Sequence[bool], analogs: Sequence[int], counters: Sequence[int]) -> bytes:
    """Class 0 data: g1v2 binary inputs, g30v1 32-bit analogs and g20v1 counters, flags 'online'."""
    out = bytearray()
    if binaries:
        out += bytes([1, 2, 0x00, 0, len(binaries) - 1]) + bytes(0x81 if b else 0x01 for b in binaries)
    if analogs:
        out += bytes([30, 1, 0x00, 0, len(analogs) - 1])
        for value in analogs:
            out += struct.pack("<Bi", 0x01, value)
    if counters:
        out += bytes([20, 1, 0x00, 0, len(counters) - 1])
        for value in counters:
            out += struct.pack("<BI", 0x01, value & 0xFFFFFFFF)
    return bytes(out)


# --------------------------------------------------------------------------------------------------
# MQTT 3.1.1 (OASIS Standard, 2014)
# --------------------------------------------------------------------------------------------------

MQTT_PORT = 1883


def mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + _remaining_length(len(body)) + body


def mqtt_connect(
    client_id: str, keepalive: int = 60, username: str | None = None, password: str | None = None
) -> bytes:
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = mqtt_string("MQTT") + bytes([4, flags]) + struct.pack(">H", keepalive) + mqtt_string(client_id)
    if username is not None:
        body += mqtt_string(username)
    if password is not None:
        body += mqtt_string(password)
    return mqtt_packet(0x10, body)


def mqtt_connack(return_code: int = 0) -> bytes:
    return bytes([0x20, 2, 0, return_code])


def mqtt_publish(topic: str, payload: bytes, qos: int = 0) -> tuple[bytes, int]:
    """PUBLISH; returns the packet and the offset of its packet identifier (-1 for QoS 0).

    The packet identifier is left zero for the generator to stamp.
    """
    head = mqtt_string(topic)
    body = head + (b"\x00\x00" if qos else b"") + payload
    packet = mqtt_packet(0x30 | (qos << 1), body)
    header_len = len(packet) - len(body)
    return packet, (header_len + len(head) if qos else -1)


def mqtt_puback() -> bytes:
    """PUBACK with its packet identifier (offset 2) left zero for the generator to stamp."""
    return bytes([0x40, 2, 0, 0])


MQTT_DISCONNECT = bytes([0xE0, 0])

# --------------------------------------------------------------------------------------------------
# RTP (RFC 3550), H.264 payload format (RFC 6184), RTCP, RTSP 1.0 (RFC 2326), SDP (RFC 4566)
# --------------------------------------------------------------------------------------------------

RTSP_PORT = 554
RTP_PAYLOAD_TYPE = 96
FU_A_PAYLOAD = 1398
"""Fragment bytes per FU-A packet after the 2-byte FU indicator/header (1400-byte RTP payload)."""


def rtp_header(
    seq: int, timestamp: int, ssrc: int, marker: bool = False, payload_type: int = RTP_PAYLOAD_TYPE
) -> bytes:
    return struct.pack(
        ">BBHII", 0x80, (0x80 if marker else 0) | payload_type, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc
    )


class _BitWriter:
    """MSB-first bit writer with Exp-Golomb codes (H.264 7.2, 9.1)."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> None:
        self.bits.extend((value >> (n - 1 - i)) & 1 for i in range(n))

    def ue(self, value: int) -> None:
        code = value + 1
        self.u(2 * code.bit_length() - 1, code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self, trailing: bool = True) -> bytes:
        bits = list(self.bits)
        if trailing:
            bits.append(1)
        bits.extend([0] * (-len(bits) % 8))
        raw = bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))
        return emulation_prevention(raw)


def emulation_prevention(rbsp: bytes) -> bytes:
    """Insert 0x03 after two zero bytes when the next byte is <= 3 (H.264 7.4.1)."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


H264_LOG2_MAX_FRAME_NUM = 8


def h264_sps(width: int, height: int, level: int = 40) -> bytes:
    """Constrained Baseline sequence parameter set NAL unit for a width x height picture."""
    mbs_w, mbs_h = (width + 15) // 16, (height + 15) // 16
    bits = _BitWriter()
    bits.u(8, 66)  # profile_idc: Baseline
    bits.u(8, 0xC0)  # constraint_set0/1: Constrained Baseline
    bits.u(8, level)
    bits.ue(0)  # seq_parameter_set_id
    bits.ue(H264_LOG2_MAX_FRAME_NUM - 4)
    bits.ue(2)  # pic_order_cnt_type
    bits.ue(1)  # max_num_ref_frames
    bits.u(1, 0)  # gaps_in_frame_num_value_allowed_flag
    bits.ue(mbs_w - 1)
    bits.ue(mbs_h - 1)
    bits.u(1, 1)  # frame_mbs_only_flag
    bits.u(1, 1)  # direct_8x8_inference_flag
    crop = (mbs_h * 16 - height) // 2
    bits.u(1, 1 if crop else 0)
    if crop:
        bits.ue(0)
        bits.ue(0)
        bits.ue(0)
        bits.ue(crop)
    bits.u(1, 0)  # vui_parameters_present_flag
    return b"\x67" + bits.rbsp()


def h264_pps() -> bytes:
    bits = _BitWriter()
    bits.ue(0)  # pic_parameter_set_id
    bits.ue(0)  # seq_parameter_set_id
    bits.u(1, 0)  # entropy_coding_mode_flag (CAVLC)
    bits.u(1, 0)  # bottom_field_pic_order_in_frame_present_flag
    bits.ue(0)  # num_slice_groups_minus1
    bits.ue(0)
    bits.ue(0)
    bits.u(1, 0)
    bits.u(2, 0)
    bits.se(0)
    bits.se(0)
    bits.se(0)
    bits.u(1, 1)  # deblocking_filter_control_present_flag
    bits.u(1, 0)
    bits.u(1, 0)
    return b"\x68" + bits.rbsp()


def h264_slice_header(idr: bool, frame_num: int = 1) -> bytes:
    """The leading bytes of a coded slice (slice header), padded with slice data bits to even length."""
    bits = _BitWriter()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(7 if idr else 5)  # slice_type: all I / all P
    bits.ue(0)  # pic_parameter_set_id
    bits.u(H264_LOG2_MAX_FRAME_NUM, 0 if idr else frame_num)
    if idr:
        bits.ue(0)  # idr_pic_id
        bits.u(1, 0)  # no_output_of_prior_pics_flag
        bits.u(1, 0)  # long_term_reference_flag
    else:
        bits.u(1, 0)  # num_ref_idx_active_override_flag
        bits.u(1, 0)  # ref_pic_list_modification_flag_l0
        bits.u(1, 0)  # adaptive_ref_pic_marking_mode_flag
    bits.se(0)  # slice_qp_delta
    bits.ue(0)  # disable_deblocking_filter_idc
    bits.se(0)
    bits.se(0)
    while len(bits.bits) % 16:
        bits.u(1, 1)
    return bits.rbsp(trailing=False)


def fu_a(nal_header: int, start: bool, end: bool) -> bytes:
    """FU-A indicator and header for a fragment of the NAL unit whose header byte is given."""
    indicator = (nal_header & 0xE0) | 28
    return bytes([indicator, (0x80 if start else 0) | (0x40 if end else 0) | (nal_header & 0x1F)])


NTP_EPOCH_OFFSET = 2_208_988_800


def ntp_timestamp(ts_ns: int) -> tuple[int, int]:
    sec, ns = divmod(ts_ns, 1_000_000_000)
    return (sec + NTP_EPOCH_OFFSET) & 0xFFFFFFFF, (ns << 32) // 1_000_000_000


def _rtcp_sdes(ssrc: int, cname: str) -> bytes:
    raw = cname.encode()
    chunk = struct.pack(">I", ssrc) + bytes([1, len(raw)]) + raw + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return struct.pack(">BBH", 0x81, 202, len(chunk) // 4) + chunk


def rtcp_sender_report(ssrc: int, ts_ns: int, rtp_ts: int, packets: int, octets: int, cname: str) -> bytes:
    """Compound RTCP packet: SR without report blocks, then SDES CNAME."""
    sec, frac = ntp_timestamp(ts_ns)
    sr = struct.pack(
        ">BBHIIIIII",
        0x80,
        200,
        6,
        ssrc,
        sec,
        frac,
        rtp_ts & 0xFFFFFFFF,
        packets & 0xFFFFFFFF,
        octets & 0xFFFFFFFF,
    )
    return sr + _rtcp_sdes(ssrc, cname)


def rtcp_receiver_report(
    ssrc: int, source: int, highest_seq: int, jitter: int, lsr: int, dlsr: int, cname: str
) -> bytes:
    """Compound RTCP packet: RR with one report block, then SDES CNAME."""
    rr = struct.pack(">BBHI", 0x81, 201, 7, ssrc) + struct.pack(
        ">IIIIII", source, 0, highest_seq, jitter, lsr, dlsr
    )
    return rr + _rtcp_sdes(ssrc, cname)


def rtsp_request(method: str, url: str, cseq: int, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    lines = [f"{method} {url} RTSP/1.0", f"CSeq: {cseq}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def rtsp_response(
    cseq: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b"", status: str = "200 OK"
) -> bytes:
    lines = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", *(f"{k}: {v}" for k, v in headers)]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def rtsp_digest(username: str, password: str, realm: str, nonce: str, method: str, uri: str) -> str:
    """RFC 2617 digest response (MD5, no qop), as RTSP cameras use it."""
    ha1 = hashlib.md5(f"{username}:{realm}:{password}".encode(), usedforsecurity=False).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode(), usedforsecurity=False).hexdigest()
    return hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode(), usedforsecurity=False).hexdigest()


def sdp_h264(session_id: int, origin_ip: str, sps: bytes, pps: bytes, name: str) -> bytes:
    sprop = base64.b64encode(sps).decode() + "," + base64.b64encode(pps).decode()
    profile = sps[1:4].hex().upper()
    lines = [
        "v=0",
        f"o=- {session_id} 1 IN IP4 {origin_ip}",
        f"s={name}",
        "t=0 0",
        "a=control:*",
        "a=range:npt=0-",
        "m=video 0 RTP/AVP 96",
        "c=IN IP4 0.0.0.0",
        "b=AS:5000",
        "a=rtpmap:96 H264/90000",
        f"a=fmtp:96 packetization-mode=1;profile-level-id={profile};sprop-parameter-sets={sprop}",
        "a=control:trackID=1",
        "a=recvonly",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


# --------------------------------------------------------------------------------------------------
# DHCP (RFC 2131, options RFC 2132), DNS (RFC 1035), NTP (RFC 5905), ARP (RFC 826)
# --------------------------------------------------------------------------------------------------

DHCP_DISCOVER, DHCP_OFFER, DHCP_REQUEST, DHCP_ACK = 1, 2, 3, 5
_DHCP_COOKIE = bytes([99, 130, 83, 99])


def dhcp_message(
    op: int,
    xid: int,
    chaddr: bytes,
    options: Sequence[tuple[int, bytes]],
    ciaddr: bytes = bytes(4),
    yiaddr: bytes = bytes(4),
    siaddr: bytes = bytes(4),
    secs: int = 0,
    broadcast: bool = False,
) -> bytes:
    """BOOTP message with DHCP options, padded to the 300-byte minimum BOOTP size."""
    fixed = struct.pack(">BBBBIHH", op, 1, 6, 0, xid, secs, 0x8000 if broadcast else 0)
    fixed += ciaddr + yiaddr + siaddr + bytes(4) + chaddr.ljust(16, b"\x00") + bytes(64 + 128)
    opts = bytearray(_DHCP_COOKIE)
    for code, value in options:
        opts += bytes([code, len(value)]) + value
    opts.append(255)
    message = fixed + bytes(opts)
    return message.ljust(300, b"\x00")


DNS_A, DNS_PTR, DNS_AAAA, DNS_SOA = 1, 12, 28, 6


def dns_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode()
        out += bytes([len(raw)]) + raw
    return bytes(out + b"\x00")


def dns_query(txid: int, name: str, qtype: int) -> bytes:
    """Standard recursive query for one question."""
    return struct.pack(">HHHHHH", txid, 0x0100, 1, 0, 0, 0) + dns_name(name) + struct.pack(">HH", qtype, 1)


def dns_response(
    txid: int,
    name: str,
    qtype: int,
    answers: Sequence[tuple[int, int, bytes]] = (),
    rcode: int = 0,
    soa: tuple[str, str, int] | None = None,
) -> bytes:
    """Authoritative answer; answers are (type, ttl, rdata) owned by the question name (pointer 0xC00C).

    ``soa`` (zone, primary, serial) adds an SOA record to the authority section, as servers do for
    NXDOMAIN and NODATA answers.
    """
    flags = 0x8580 | rcode
    out = bytearray(struct.pack(">HHHHHH", txid, flags, 1, len(answers), 1 if soa else 0, 0))
    out += dns_name(name) + struct.pack(">HH", qtype, 1)
    for rtype, ttl, rdata in answers:
        out += struct.pack(">HHHIH", 0xC00C, rtype, 1, ttl, len(rdata)) + rdata
    if soa is not None:
        zone, primary, serial = soa
        rdata = (
            dns_name(primary)
            + dns_name("hostmaster." + zone)
            + struct.pack(">IIIII", serial, 900, 600, 86400, 3600)
        )
        out += dns_name(zone) + struct.pack(">HHIH", DNS_SOA, 1, 3600, len(rdata)) + rdata
    return bytes(out)


def ntp_client_request(ts_ns: int) -> bytes:
    """NTPv4 mode 3 (client) packet with the transmit timestamp set."""
    sec, frac = ntp_timestamp(ts_ns)
    return struct.pack(">BBbb", 0x23, 0, 6, -20) + bytes(36) + struct.pack(">II", sec, frac)


def ntp_server_reply(
    request: bytes, receive_ns: int, transmit_ns: int, reference_ns: int, ref_id: bytes
) -> bytes:
    """NTPv4 mode 4 (server) reply, stratum 3, echoing the client's transmit time as origin."""
    head = struct.pack(">BBbbII", 0x24, 3, 6, -23, 0x0000_0A3D, 0x0000_1C28) + ref_id
    return (
        head
        + struct.pack(">II", *ntp_timestamp(reference_ns))
        + request[40:48]
        + struct.pack(">IIII", *ntp_timestamp(receive_ns), *ntp_timestamp(transmit_ns))
    )


ARP_REQUEST, ARP_REPLY = 1, 2


def arp(op: int, sender_mac: bytes, sender_ip: bytes, target_mac: bytes, target_ip: bytes) -> bytes:
    """Ethernet/IPv4 ARP packet."""
    return struct.pack(">HHBBH", 1, 0x0800, 6, 4, op) + sender_mac + sender_ip + target_mac + target_ip
