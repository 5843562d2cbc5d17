"""DNP3 dissector: golden conformance with Zeek and tshark, sans-io unit tests, engine tests, fuzzing.

Golden references (../shared/corpus/dnp3): Zeek's ``dnp3.log`` and Zeek's per-event trace
(``output``, printed by Zeek's testing/btest/scripts/base/protocols/dnp3/events.zeek) for six
captures, plus tshark's DNP3 dissection for the link, transport and application fields the Zeek
files do not carry. How each reference maps to FieldWard's events is documented in
docs/protocols/dnp3.md (section "Golden tests") and in the helpers below.
"""

from __future__ import annotations

import dataclasses
import math
import re
import struct
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from fieldward.capture.reader import open_capture
from fieldward.decode.flows import FlowTable
from fieldward.decode.l2l4 import decode_batch
from fieldward.pipeline import analyze
from fieldward.protocols.base import (
    Event,
    FlowInfo,
    PduContext,
    ProtocolWeird,
    Transport,
    Verdict,
    event_schema,
)
from fieldward.protocols.dnp3 import (
    Dnp3,
    Dnp3Application,
    Dnp3Control,
    Dnp3Dissector,
    Dnp3File,
    Dnp3Link,
    Dnp3Object,
    Dnp3Point,
    crc16,
    frame_size,
    function_name,
    iin_flags,
)
from fieldward.protocols.engine import ProtocolEngine
from fieldward.protocols.registry import Registry
from fieldward.weird import WeirdLog

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocols" / "dnp3.md"
DNP3_PORT = 20000

# capture stem -> folder of its expected Zeek output (Zeek's own btest names)
GOLDEN = {
    "dnp3": "dnp3.events",
    "dnp3_read": "dnp3.dnp3_read",
    "dnp3_write": "dnp3.dnp3_write",
    "dnp3_select_operate": "dnp3.dnp3_select_operate",
    "dnp3_udp_read": "dnp3.dnp3_udp_read",
    "dnp3_link_only": "dnp3.dnp3_link_only",
}

# ============================================================================ frame builders


def ref_crc(data: bytes) -> int:
    """Bit-by-bit DNP3 CRC (reversed polynomial 0xA6BC), independent of the module's table."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1
    return ~crc & 0xFFFF


def with_crc(block: bytes) -> bytes:
    return block + struct.pack("<H", ref_crc(block))


def link(user: bytes = b"", ctrl: int = 0xC4, dest: int = 4, src: int = 3) -> bytes:
    """One link frame carrying ``user`` (transport octet + application data)."""
    header = b"\x05\x64" + bytes([5 + len(user), ctrl]) + struct.pack("<HH", dest, src)
    out = with_crc(header)
    for i in range(0, len(user), 16):
        out += with_crc(user[i : i + 16])
    return out


def frames(
    apdu: bytes, ctrl: int = 0xC4, dest: int = 4, src: int = 3, seq: int = 0, chunk: int = 249
) -> bytes:
    """Transport-segment an application fragment into link frames (FIR on the first, FIN on the last)."""
    pieces = [apdu[i : i + chunk] for i in range(0, len(apdu), chunk)] or [b""]
    out = b""
    for n, piece in enumerate(pieces):
        th = (seq + n) & 0x3F | (0x40 if n == 0 else 0) | (0x80 if n == len(pieces) - 1 else 0)
        out += link(bytes([th]) + piece, ctrl, dest, src)
    return out


def request(fc: int, objects: bytes = b"", seq: int = 1) -> bytes:
    return frames(bytes([0xC0 | seq, fc]) + objects)


def response(fc: int, iin: int = 0, objects: bytes = b"", seq: int = 1, ac: int = 0xC0) -> bytes:
    return frames(bytes([ac | seq, fc]) + struct.pack(">H", iin) + objects, ctrl=0x44, dest=3, src=4)


def header(group: int, variation: int, qualifier: int, rng: bytes = b"") -> bytes:
    return bytes([group, variation, qualifier]) + rng


def crob(code: int, count: int = 1, on: int = 100, off: int = 100, status: int = 0) -> bytes:
    return struct.pack("<BBIIB", code, count, on, off, status)


def time48(ms: int) -> bytes:
    return ms.to_bytes(6, "little")


# ============================================================================ sans-io driver


class Collect:
    """A dissector instance on a fake flow, with a PduContext that collects events and weirds."""

    def __init__(self, transport: Transport = Transport.TCP) -> None:
        self.flow = FlowInfo(7, transport, "10.0.0.1", 40000, "10.0.0.2", DNP3_PORT)
        self.events: list[Event] = []
        self.weirds: list[ProtocolWeird] = []
        self.ctx = PduContext(self.flow, "dnp3", self.events.append, self.weirds.append)
        self.dissector = Dnp3Dissector(self.flow)

    def feed(self, stream: bytes, is_orig: bool = True, ts: int = 1) -> None:
        """Cut ``stream`` with frame() as the engine does (TCP), or parse it whole (UDP)."""
        self.ctx.ts, self.ctx.is_orig = ts, is_orig
        if self.flow.transport == Transport.UDP:
            self.dissector.parse(stream, self.ctx)
            return
        buf = stream
        while buf:
            size = self.dissector.frame(buf, is_orig)
            if size <= 0 or size > len(buf):
                self.weirds.append(
                    ProtocolWeird(**self.ctx.where(), protocol="dnp3", name="unframed", detail="")
                )
                return
            self.dissector.parse(buf[:size], self.ctx)
            buf = buf[size:]

    def close(self) -> None:
        self.dissector.close(self.ctx)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def weird_names(self) -> list[str]:
        return [w.name for w in self.weirds]


# ============================================================================ CRC, recognition, framing


def test_crc_matches_a_real_header_and_the_bitwise_reference() -> None:
    # Header of frame 200 of dnp3.pcap: 05 64 0b c4 04 00 03 00 | CRC e4 2b (tshark: "correct").
    assert crc16(bytes.fromhex("05640bc404000300")) == 0x2BE4
    for data in (b"", b"\x00", bytes(range(16)), b"DNP3" * 9):
        assert crc16(data) == ref_crc(data)


def test_frame_size_counts_block_crcs() -> None:
    assert frame_size(5) == 10
    assert frame_size(6) == 13  # 1 user octet + CRC
    assert frame_size(21) == 28  # 16 octets: one block
    assert frame_size(22) == 31  # 17 octets: two blocks
    assert frame_size(255) == 292  # the largest frame


@pytest.mark.parametrize("transport", [Transport.TCP, Transport.UDP])
def test_recognition_by_content_on_any_port(transport: Transport) -> None:
    frame = request(0x01, header(60, 1, 0x06))
    for port in (DNP3_PORT, 20001, 5020):
        assert Dnp3Dissector.recognize(frame, transport, 40000, port) == Verdict.YES
    corrupt = frame[:8] + bytes([frame[8] ^ 1]) + frame[9:]
    assert Dnp3Dissector.recognize(corrupt, transport, 40000, DNP3_PORT) == Verdict.NO
    http = b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n"
    assert Dnp3Dissector.recognize(http, transport, 40000, DNP3_PORT) == Verdict.NO
    short_length = b"\x05\x64\x04" + frame[3:8]
    short_length = short_length + struct.pack("<H", ref_crc(short_length))
    assert Dnp3Dissector.recognize(short_length, transport, 40000, DNP3_PORT) == Verdict.NO


def test_recognition_waits_for_a_whole_tcp_header_but_not_for_udp() -> None:
    frame = link()
    for cut in (1, 2, 5, 9):
        assert Dnp3Dissector.recognize(frame[:cut], Transport.TCP, 1, DNP3_PORT) == Verdict.MAYBE
        assert Dnp3Dissector.recognize(frame[:cut], Transport.UDP, 1, DNP3_PORT) == Verdict.NO
    assert Dnp3Dissector.recognize(b"\x05\x65", Transport.TCP, 1, DNP3_PORT) == Verdict.NO
    # A datagram must hold the whole frame its length announces.
    data_frame = request(0x01, header(60, 2, 0x06))
    assert Dnp3Dissector.recognize(data_frame[:-1], Transport.UDP, 1, DNP3_PORT) == Verdict.NO
    assert Dnp3Dissector.recognize(data_frame[:-1], Transport.TCP, 1, DNP3_PORT) == Verdict.YES


def test_frame_cuts_link_frames() -> None:
    d = Dnp3Dissector(FlowInfo(1, Transport.TCP, "a", 1, "b", 2))
    one = request(0x01, header(60, 2, 0x06) + header(60, 3, 0x06))
    assert d.frame(one + one, True) == len(one)
    assert d.frame(one[:-1], True) == 0
    assert d.frame(one[:2], True) == 0
    assert d.frame(b"\x05", True) == 0
    assert d.frame(b"GET /", True) == -1
    assert d.frame(b"\x05\x64\x03", True) == -1


# ============================================================================ link and transport layers


def test_link_only_frames() -> None:
    c = Collect()
    c.feed(link(ctrl=0xC9, dest=1, src=100))  # REQUEST_LINK_STATUS (primary, DIR)
    c.feed(link(ctrl=0x0B, dest=100, src=1), is_orig=False)  # LINK_STATUS (secondary)
    c.feed(link(ctrl=0xF3, dest=1, src=100))  # CONFIRMED_USER_DATA header with FCB and FCV set, no data
    first, second, third = c.of(Dnp3Link)
    assert (first.link_function, first.dir, first.prm, first.fcb, first.fcv, first.dfc) == (
        "REQUEST_LINK_STATUS",
        True,
        True,
        False,
        False,
        None,
    )
    assert (first.len, first.ctrl, first.dest_addr, first.src_addr, first.user_data_len) == (
        5,
        0xC9,
        1,
        100,
        0,
    )
    assert (first.tp_fir, first.tp_fin, first.tp_seq) == (None, None, None)
    assert (second.link_function, second.prm, second.fcb, second.dfc, second.link_fc) == (
        "LINK_STATUS",
        False,
        None,
        False,
        11,
    )
    assert (third.link_function, third.fcb, third.fcv) == ("CONFIRMED_USER_DATA", True, True)
    assert c.of(Dnp3Application) == []
    assert c.weirds == []


def test_multi_frame_fragment_is_reassembled() -> None:
    points = 600
    objects = header(30, 3, 0x01, struct.pack("<HH", 0, points - 1)) + b"".join(
        struct.pack("<i", i * 7 - 300) for i in range(points)
    )
    apdu = bytes([0xC5, 0x81, 0x00, 0x00]) + objects
    stream = frames(apdu, ctrl=0x44, dest=3, src=4, seq=62)  # sequence numbers wrap 62, 63, 0, ...
    c = Collect()
    c.feed(stream, is_orig=False)
    links = c.of(Dnp3Link)
    assert len(links) == math.ceil(len(apdu) / 249) == 10
    assert [link.tp_seq for link in links][:3] == [62, 63, 0]
    assert [link.tp_fir for link in links] == [True] + [False] * 9
    assert [link.tp_fin for link in links] == [False] * 9 + [True]
    (app,) = c.of(Dnp3Application)
    assert (app.frames, app.fragment_len, app.len, app.ctrl, app.src_addr) == (10, len(apdu), 255, 0x44, 4)
    values = [p.value for p in c.of(Dnp3Point)]
    assert values == [float(i * 7 - 300) for i in range(points)]
    assert [p.index for p in c.of(Dnp3Point)] == list(range(points))
    assert c.weirds == []


def test_transport_errors() -> None:
    apdu = bytes([0xC1, 0x81, 0, 0]) + header(30, 4, 0x00, b"\x00\x7f") + bytes(256)
    two = frames(apdu, ctrl=0x44)
    size = frame_size(two[2])
    first, last = two[:size], two[size:]
    c = Collect()
    c.feed(last)  # FIN without FIR
    c.feed(first + first)  # FIR twice: the first fragment is abandoned
    c.feed(first + first[:-2] + b"\x00\x00")  # ... and a data CRC error
    c.feed(first + link(bytes([0x85]) + b"\x00"))  # sequence 5 instead of 1
    assert c.of(Dnp3Application) == []
    assert c.weird_names() == [
        "dnp3_transport_missing_first",
        "dnp3_transport_incomplete",
        "dnp3_transport_incomplete",
        "dnp3_data_crc_error",
        "dnp3_transport_incomplete",
        "dnp3_transport_sequence_gap",
    ]
    c.feed(first)
    c.close()  # the flow ends in the middle of a fragment
    assert c.weird_names()[-1] == "dnp3_transport_incomplete"


def test_fragment_size_is_capped() -> None:
    c = Collect()
    seg = bytes(249)
    c.feed(link(bytes([0x40]) + seg))
    for n in range(1, 300):
        c.feed(link(bytes([n & 0x3F]) + seg))
    assert "dnp3_fragment_too_large" in c.weird_names()
    assert c.of(Dnp3Application) == []


def test_corrupt_header_and_garbage() -> None:
    c = Collect(Transport.UDP)
    good = request(0x01, header(60, 1, 0x06))
    bad_header = good[:4] + bytes([good[4] ^ 0xFF]) + good[5:]
    c.feed(bad_header)
    c.feed(good + b"\x05\x64\x0b")  # a good frame, then a truncated one
    c.feed(good + b"GARBAGE!GARBAGE!")
    c.feed(b"\x05\x64\x02\xc4\x01\x00\x02\x00\x00\x00")  # length below 5
    assert c.weird_names() == [
        "dnp3_header_crc_error",
        "dnp3_truncated_frame",
        "dnp3_bad_start",
        "dnp3_invalid_length",
    ]
    assert len(c.of(Dnp3Application)) == 2


# ============================================================================ application layer


def test_read_class_data_and_response_objects() -> None:
    c = Collect()
    c.feed(
        request(
            0x01, header(60, 2, 0x06) + header(60, 3, 0x06) + header(60, 4, 0x06) + header(60, 1, 0x06), 3
        )
    )
    objects = (
        header(1, 2, 0x00, b"\x00\x02")  # 3 binary inputs with flags
        + bytes([0x81, 0x01, 0x02])
        + header(1, 1, 0x00, b"\x00\x09")  # 10 packed binary inputs
        + bytes([0b10100101, 0b10])
        + header(3, 2, 0x00, b"\x05\x05")  # a double-bit input (state in bits 7-6)
        + bytes([0x81])
        + header(20, 1, 0x01, b"\x00\x00\x00\x00")  # counter with flag
        + b"\x01"
        + struct.pack("<I", 4000000000)
        + header(30, 5, 0x17, b"\x01")  # float analog input, 1-octet index prefix
        + b"\x07\x01"
        + struct.pack("<f", 12.5)
        + header(30, 6, 0x00, b"\x00\x00")
        + b"\x01"
        + struct.pack("<d", -1.25)
        + header(32, 3, 0x28, b"\x01\x00")  # analog event with absolute time, 2-octet index
        + struct.pack("<HBi", 300, 0x01, -5)
        + time48(1_097_489_794_018)
        + header(34, 2, 0x00, b"\x00\x00")
        + struct.pack("<I", 50)
        + header(102, 1, 0x07, b"\x01")
        + b"\x2a"
        + header(110, 4, 0x00, b"\x02\x02")  # octet string of 4 octets
        + b"abcd"
    )
    c.feed(response(0x81, 0x9002, objects, 3), is_orig=False)
    request_app, response_app = c.of(Dnp3Application)
    assert (request_app.function_code, request_app.fc, request_app.objects, request_app.iin) == (
        "READ",
        1,
        4,
        None,
    )
    assert (request_app.fir, request_app.fin, request_app.con, request_app.uns, request_app.seq) == (
        True,
        True,
        False,
        False,
        3,
    )
    assert (response_app.function_code, response_app.iin, response_app.objects) == ("RESPONSE", 0x9002, 10)
    assert response_app.iin_flags == ["NEED_TIME", "DEVICE_RESTART", "OBJECT_UNKNOWN"]
    headers = c.of(Dnp3Object)
    assert [(h.object_type, h.qualifier, h.object_count, h.range_low, h.range_high) for h in headers[:5]] == [
        ("g60v2", 6, None, None, None),
        ("g60v3", 6, None, None, None),
        ("g60v4", 6, None, None, None),
        ("g60v1", 6, None, None, None),
        ("g1v2", 0, 3, 0, 2),
    ]
    assert headers[4].function_code == "RESPONSE"
    assert headers[0].function_code == "READ"
    assert [(h.object_type, h.prefix_code, h.range_code, h.object_count) for h in headers[8:11]] == [
        ("g30v5", 1, 7, 1),
        ("g30v6", 0, 0, 1),
        ("g32v3", 2, 8, 1),
    ]
    by_type: dict[tuple[int, int], list[Dnp3Point]] = {}
    for p in c.of(Dnp3Point):
        by_type.setdefault((p.group, p.variation), []).append(p)
    assert [(p.index, p.flags, p.value) for p in by_type[(1, 2)]] == [
        (0, 0x81, 1.0),
        (1, 1, 0.0),
        (2, 2, 0.0),
    ]
    assert [p.value for p in by_type[(1, 1)]] == [1.0, 0, 1, 0, 0, 1, 0, 1, 0, 1]
    assert [(p.index, p.value) for p in by_type[(3, 2)]] == [(5, 2.0)]
    assert [(p.flags, p.value) for p in by_type[(20, 1)]] == [(1, 4000000000.0)]
    assert [(p.index, p.flags, p.value) for p in by_type[(30, 5)]] == [(7, 1, 12.5)]
    assert [p.value for p in by_type[(30, 6)]] == [-1.25]
    assert [(p.index, p.flags, p.value, p.time48) for p in by_type[(32, 3)]] == [
        (300, 1, -5.0, 1_097_489_794_018)
    ]
    assert [p.value for p in by_type[(34, 2)]] == [50.0]
    assert [(p.index, p.value) for p in by_type[(102, 1)]] == [(None, 42.0)]
    assert [p.data for p in by_type[(110, 4)]] == [b"abcd"]
    (row,) = c.of(Dnp3)
    assert (row.fc_request, row.fc_reply, row.iin, row.iin_flags) == (
        "READ",
        "RESPONSE",
        0x9002,
        ["NEED_TIME", "DEVICE_RESTART", "OBJECT_UNKNOWN"],
    )
    assert c.weirds == []


def test_unsolicited_response_with_cto_and_relative_times() -> None:
    c = Collect()
    cto = 1_097_489_794_018
    objects = (
        header(51, 1, 0x07, b"\x01")
        + time48(cto)
        + header(2, 3, 0x28, b"\x02\x00")
        + struct.pack("<HBH", 4, 0x81, 0)
        + struct.pack("<HBH", 9, 0x01, 1011)
        + header(4, 3, 0x17, b"\x01")
        + struct.pack("<BBH", 2, 0x41, 5)
    )
    c.feed(response(0x82, 0x0000, objects, 3, ac=0xF0), is_orig=False)
    (app,) = c.of(Dnp3Application)
    assert (app.function_code, app.uns, app.con) == ("UNSOLICITED_RESPONSE", True, True)
    points = [(p.group, p.index, p.value, p.time48) for p in c.of(Dnp3Point)]
    assert points == [(51, None, None, cto), (2, 4, 1.0, cto), (2, 9, 0.0, cto + 1011), (4, 2, 1.0, cto + 5)]
    (row,) = c.of(Dnp3)
    assert (row.fc_request, row.fc_reply, row.iin) == (None, "UNSOLICITED_RESPONSE", 0)


def test_select_operate_controls() -> None:
    c = Collect()
    block = header(12, 1, 0x28, b"\x01\x00") + struct.pack("<H", 7) + crob(0x41, 1, 500, 0)
    c.feed(request(0x03, block, 2))
    c.feed(
        response(0x81, 0, header(12, 1, 0x28, b"\x01\x00") + struct.pack("<H", 7) + crob(0x41, 1, 500, 0), 2),
        False,
    )
    c.feed(request(0x04, block, 3))
    c.feed(
        response(
            0x81, 0, header(12, 1, 0x28, b"\x01\x00") + struct.pack("<H", 7) + crob(0x41, 1, 500, 0, 4), 3
        ),
        False,
    )
    analog = (
        header(41, 2, 0x17, b"\x02")
        + b"\x03"
        + struct.pack("<hB", -12, 0)
        + b"\x04"
        + struct.pack("<hB", 99, 0)
    )
    c.feed(request(0x05, analog, 4))
    c.feed(request(0x06, header(41, 3, 0x28, b"\x01\x00") + struct.pack("<HfB", 1, 2.5, 0), 5))
    c.feed(
        request(
            0x05,
            header(12, 2, 0x07, b"\x01")
            + crob(0x81, 2, 10, 20)
            + header(12, 3, 0x00, b"\x00\x09")
            + b"\xff\x01",
            6,
        )
    )
    controls = c.of(Dnp3Control)
    assert [
        (x.function_code, x.index_number, x.trip_control_code, x.operation_type, x.status_code)
        for x in controls[:4]
    ] == [
        ("SELECT", 7, "CLOSE", "PULSE_ON", "SUCCESS"),
        ("RESPONSE", 7, "CLOSE", "PULSE_ON", "SUCCESS"),
        ("OPERATE", 7, "CLOSE", "PULSE_ON", "SUCCESS"),
        ("RESPONSE", 7, "CLOSE", "PULSE_ON", "NOT_SUPPORTED"),
    ]
    first = controls[0]
    assert (first.block_type, first.control_code, first.execute_count, first.on_time, first.off_time) == (
        "Control Relay Output Block",
        0x41,
        1,
        500,
        0,
    )
    assert (first.clear_bit, first.queue_bit, first.value, first.status) == (False, False, None, 0)
    assert [(x.block_type, x.function_code, x.index_number, x.value) for x in controls[4:7]] == [
        ("Analog Output Block", "DIRECT_OPERATE", 3, -12.0),
        ("Analog Output Block", "DIRECT_OPERATE", 4, 99.0),
        ("Analog Output Block", "DIRECT_OPERATE_NR", 1, 2.5),
    ]
    pcb = controls[7]
    assert (pcb.block_type, pcb.trip_control_code, pcb.execute_count, pcb.index_number) == (
        "Pattern Control Block",
        "TRIP",
        2,
        None,
    )
    mask = [p for p in c.of(Dnp3Point) if p.group == 12]
    assert [p.value for p in mask] == [1.0] * 9 + [0.0]  # 10 points 0..9: 0xff, 0x01
    assert [(r.fc_request, r.fc_reply) for r in c.of(Dnp3)] == [
        ("SELECT", "RESPONSE"),
        ("OPERATE", "RESPONSE"),
    ]
    assert c.weirds == []


def test_file_operations() -> None:
    c = Collect()
    name = b"/log/events.csv"
    command = struct.pack("<HH6sHIIHHH", 26, len(name), time48(1000), 0o644, 0, 0, 1, 1024, 77) + name
    c.feed(request(0x19, header(70, 3, 0x5B, b"\x01") + struct.pack("<H", len(command)) + command, 1))
    status = struct.pack("<IIHHB", 0xABCD, 5000, 1024, 77, 0)
    c.feed(
        response(0x81, 0, header(70, 4, 0x5B, b"\x01") + struct.pack("<H", len(status)) + status, 1), False
    )
    block = struct.pack("<II", 0xABCD, 0x80000003) + b"payload"
    c.feed(response(0x81, 0, header(70, 5, 0x5B, b"\x01") + struct.pack("<H", len(block)) + block, 2), False)
    transport_status = struct.pack("<IIB", 0xABCD, 3, 18)
    c.feed(request(0x02, header(70, 6, 0x5B, b"\x01") + struct.pack("<H", 9) + transport_status, 3))
    descriptor = struct.pack("<HHHI6sHH", 20, len(name), 1, 5000, time48(2000), 0o600, 78) + name
    c.feed(
        response(0x81, 0, header(70, 7, 0x5B, b"\x01") + struct.pack("<H", len(descriptor)) + descriptor, 4),
        False,
    )
    user = b"operator"
    auth = struct.pack("<HHHHI", 12, len(user), 12 + len(user), 6, 0) + user + b"secret"
    c.feed(request(0x1D, header(70, 2, 0x5B, b"\x01") + struct.pack("<H", len(auth)) + auth, 5))
    c.feed(request(0x1B, header(70, 3, 0x00, b"\x00\x00") + command, 6))  # DELETE_FILE, size computed
    c.feed(request(0x1C, header(70, 8, 0x5B, b"\x01") + struct.pack("<H", len(name)) + name, 7))
    files = c.of(Dnp3File)
    assert [(f.function_code, f.variation) for f in files] == [
        ("OPEN_FILE", 3),
        ("RESPONSE", 4),
        ("RESPONSE", 5),
        ("WRITE", 6),
        ("RESPONSE", 7),
        ("AUTHENTICATE_FILE", 2),
        ("DELETE_FILE", 3),
        ("GET_FILE_INFO", 8),
    ]
    open_file, open_status, data, data_status, info, login, delete, spec = files
    assert (
        open_file.file_name,
        open_file.operational_mode,
        open_file.max_block_size,
        open_file.request_id,
    ) == (
        "/log/events.csv",
        "READ",
        1024,
        77,
    )
    assert (open_file.created, open_file.permissions) == (1000, 0o644)
    assert (open_status.file_handle, open_status.file_size, open_status.status_code) == (
        0xABCD,
        5000,
        "SUCCESS",
    )
    assert (data.file_handle, data.block_num, data.last_block, data.data_len) == (0xABCD, 3, True, 7)
    assert (data_status.status, data_status.status_code, data_status.last_block) == (
        18,
        "BUFFER_OVERRUN",
        False,
    )
    assert (info.file_name, info.file_type, info.file_size, info.created) == (
        "/log/events.csv",
        1,
        5000,
        2000,
    )
    assert login.user_name == "operator"
    assert delete.file_name == spec.file_name == "/log/events.csv"
    assert c.weirds == []


def test_restarts_and_time_delay() -> None:
    c = Collect()
    c.feed(request(0x0D, b"", 1))
    c.feed(response(0x81, 0x8000, header(52, 1, 0x07, b"\x01") + struct.pack("<H", 30), 1), False)
    c.feed(request(0x0E, b"", 2))
    c.feed(response(0x81, 0, header(52, 2, 0x07, b"\x01") + struct.pack("<H", 1500), 2), False)
    c.feed(request(0x17, b"", 3))  # DELAY_MEASURE
    assert [a.function_code for a in c.of(Dnp3Application)] == [
        "COLD_RESTART",
        "RESPONSE",
        "WARM_RESTART",
        "RESPONSE",
        "DELAY_MEASURE",
    ]
    assert [(p.group, p.variation, p.value) for p in c.of(Dnp3Point)] == [(52, 1, 30.0), (52, 2, 1500.0)]
    assert c.of(Dnp3)[0].iin_flags == ["DEVICE_RESTART"]
    c.close()
    assert [(r.fc_request, r.fc_reply) for r in c.of(Dnp3)] == [
        ("COLD_RESTART", "RESPONSE"),
        ("WARM_RESTART", "RESPONSE"),
        ("DELAY_MEASURE", None),
    ]


def test_write_time_and_iin_and_freeze() -> None:
    c = Collect()
    c.feed(
        request(
            0x02,
            header(50, 1, 0x07, b"\x01")
            + time48(1_600_000_000_000)
            + header(80, 1, 0x00, b"\x07\x07")
            + b"\x00",
        )
    )
    c.feed(
        request(
            0x0B, header(50, 2, 0x07, b"\x01") + time48(5) + struct.pack("<I", 60000) + header(20, 0, 0x06)
        )
    )
    c.feed(request(0x07, header(20, 0, 0x00, b"\x00\x03")))  # IMMED_FREEZE names points, no data
    points = [(p.group, p.variation, p.index, p.value, p.time48) for p in c.of(Dnp3Point)]
    assert points == [
        (50, 1, None, None, 1_600_000_000_000),
        (80, 1, 7, 0.0, None),
        (50, 2, None, 60000.0, 5),
    ]
    assert [h.object_type for h in c.of(Dnp3Object)] == ["g50v1", "g80v1", "g50v2", "g20v0", "g20v0"]
    assert c.weirds == []


def test_zeek_pairing_of_requests_and_responses() -> None:
    c = Collect()
    c.feed(response(0x82, 0x1000, b"", 1, ac=0xF0), False)  # unsolicited, no request
    c.feed(request(0x00, b"", 1))  # CONFIRM ...
    c.feed(request(0x02, header(50, 1, 0x07, b"\x01") + time48(1), 2))  # ... overwritten by WRITE (as Zeek)
    c.feed(response(0x81, 0, b"", 2), False)
    c.feed(request(0x15, header(60, 2, 0x06), 3))  # unanswered when the flow ends
    c.close()
    rows = [(r.fc_request, r.fc_reply, r.iin, r.iin_flags) for r in c.of(Dnp3)]
    assert rows == [
        (None, "UNSOLICITED_RESPONSE", 0x1000, ["NEED_TIME"]),
        ("WRITE", "RESPONSE", 0, []),
        ("DISABLE_UNSOLICITED", None, None, []),
    ]
    # No request is lost: every fragment is in dnp3_application.
    assert [a.function_code for a in c.of(Dnp3Application)] == [
        "UNSOLICITED_RESPONSE",
        "CONFIRM",
        "WRITE",
        "RESPONSE",
        "DISABLE_UNSOLICITED",
    ]


def test_malformed_application_fragments() -> None:
    cases = {
        "dnp3_application_too_short": frames(b"\xc0"),
        "dnp3_unknown_function_code": frames(b"\xc0\x55"),
        "dnp3_invalid_qualifier": frames(b"\xc0\x01" + header(60, 4, 0xED)),
        "dnp3_object_header_truncated": frames(b"\xc0\x01\x3c"),
        "dnp3_invalid_range": frames(b"\xc0\x81\x00\x00" + header(1, 2, 0x00, b"\x05\x02")),
        "dnp3_object_data_truncated": frames(
            b"\xc0\x81\x00\x00" + header(30, 1, 0x00, b"\x00\x05") + bytes(7)
        ),
        "dnp3_unknown_object": frames(b"\xc0\x81\x00\x00" + header(99, 9, 0x00, b"\x00\x00") + b"x"),
        "dnp3_unexpected_objects": frames(b"\xc0\x0d" + header(60, 1, 0x06)),
        "dnp3_object_size_mismatch": frames(
            b"\xc0\x81\x00\x00" + header(30, 1, 0x5B, b"\x01") + b"\x02\x00xx"
        ),
    }
    for name, stream in cases.items():
        c = Collect()
        c.feed(stream, is_orig=False)
        assert name in c.weird_names(), (name, c.weird_names())
    # Responses shorter than 4 octets carry no IIN: weird, no event.
    c = Collect()
    c.feed(frames(b"\xc0\x81\x00"), is_orig=False)
    assert c.weird_names() == ["dnp3_application_too_short"]
    assert c.of(Dnp3Application) == []
    # The invalid qualifier header is still reported (Zeek reports it too), then parsing stops.
    c = Collect()
    c.feed(frames(b"\xc1\x12" + header(60, 2, 0x06) + header(1, 7, 0x06) + header(60, 4, 0xED)))
    assert [(h.object_type, h.qualifier, h.object_count) for h in c.of(Dnp3Object)] == [
        ("g60v2", 6, None),
        ("g1v7", 6, None),
        ("g60v4", 0xED, None),
    ]


READ_BY_INDEX = (
    header(30, 1, 0x17, b"\x02")  # 2 analog inputs named by 1-octet indexes 3 and 5
    + b"\x03\x05"
    + header(1, 2, 0x28, b"\x01\x00")  # 1 binary input named by the 2-octet index 263
    + b"\x07\x01"
    + header(60, 1, 0x06)
)


def test_read_by_index_list_names_points_without_data() -> None:
    """IEEE 1815 READ with qualifiers 0x17/0x28: the header is followed by index prefixes only."""
    c = Collect()
    c.feed(request(0x01, READ_BY_INDEX, 4))
    headers = [(h.object_type, h.prefix_code, h.range_code, h.object_count) for h in c.of(Dnp3Object)]
    assert headers == [("g30v1", 1, 7, 2), ("g1v2", 2, 8, 1), ("g60v1", 0, 6, None)]
    assert c.of(Dnp3Point) == []
    assert c.weirds == []
    # An index list cut short is a truncated object, not a new object header.
    c = Collect()
    c.feed(request(0x01, header(30, 1, 0x17, b"\x03") + b"\x01\x02"))
    assert c.weird_names() == ["dnp3_object_data_truncated"]
    assert [h.object_type for h in c.of(Dnp3Object)] == ["g30v1"]


def test_unanswered_request_row_keeps_the_request_time_and_direction() -> None:
    """Zeek's main.zeek stamps the dnp3.log row of an unanswered request when the request is seen."""
    c = Collect()
    c.feed(request(0x15, header(60, 2, 0x06), 3), ts=5)
    c.feed(link(ctrl=0x00, dest=3, src=4), is_orig=False, ts=9)  # the outstation's link-layer ACK
    c.close()
    (row,) = c.of(Dnp3)
    assert (row.fc_request, row.fc_reply, row.iin, row.ts, row.is_orig) == (
        "DISABLE_UNSOLICITED",
        None,
        None,
        5,
        True,
    )


def test_names() -> None:
    assert function_name(0x19) == "OPEN_FILE"
    assert function_name(0x83) == "AUTHENTICATE_RESP"
    assert function_name(0x55) == "unknown-85"
    assert iin_flags(0) == []
    assert iin_flags(0x8000 | 0x1000 | 0x0001) == ["NEED_TIME", "DEVICE_RESTART", "NO_FUNC_CODE_SUPPORT"]


# ============================================================================ engine and pipeline


def tcp_packets(port: int, client: list[bytes], server: list[bytes] | None = None) -> list[bytes]:
    """A TCP conversation: handshake, client segments, then server segments."""
    c, s = "10.1.0.1", "10.1.0.2"
    seq_c, seq_s = 1000, 5000
    pkts = [
        Ether() / IP(src=c, dst=s) / TCP(sport=41000, dport=port, flags="S", seq=seq_c),
        Ether() / IP(src=s, dst=c) / TCP(sport=port, dport=41000, flags="SA", seq=seq_s, ack=seq_c + 1),
        Ether() / IP(src=c, dst=s) / TCP(sport=41000, dport=port, flags="A", seq=seq_c + 1, ack=seq_s + 1),
    ]
    seq_c += 1
    seq_s += 1
    for data in client:
        pkts.append(
            Ether() / IP(src=c, dst=s) / TCP(sport=41000, dport=port, flags="PA", seq=seq_c, ack=seq_s) / data
        )
        seq_c += len(data)
    for data in server or []:
        pkts.append(
            Ether() / IP(src=s, dst=c) / TCP(sport=port, dport=41000, flags="PA", seq=seq_s, ack=seq_c) / data
        )
        seq_s += len(data)
    pkts.append(Ether() / IP(src=c, dst=s) / TCP(sport=41000, dport=port, flags="FA", seq=seq_c, ack=seq_s))
    return [bytes(p) for p in pkts]


def run_engine(packets: Iterable[bytes] | Path) -> tuple[list[Event], WeirdLog, ProtocolEngine]:
    """Drive the protocol engine (DNP3 only) over packets or a capture; events in emission order."""
    weird = WeirdLog()
    events: list[Event] = []
    registry = Registry()
    registry.add(Dnp3Dissector)
    engine = ProtocolEngine(registry, events.append, weird)
    flows = FlowTable(weird=weird)
    if isinstance(packets, Path):
        with open_capture(packets, weird=weird) as reader:
            for batch in reader:
                decoded = decode_batch(batch, weird)
                engine.process(batch, decoded, flows.update(batch, decoded))
    else:
        from fieldward.capture.batch import PacketBatch

        pkts = list(packets)
        batch = PacketBatch.from_packets(pkts, ts_ns=[i * 1000 for i in range(len(pkts))])
        decoded = decode_batch(batch, weird)
        engine.process(batch, decoded, flows.update(batch, decoded))
    engine.finish()
    return events, weird, engine


def test_pdus_split_across_segments_and_several_in_one() -> None:
    req = request(0x01, header(60, 2, 0x06) + header(60, 3, 0x06) + header(60, 4, 0x06) + header(60, 1, 0x06))
    link_status = link(ctrl=0xC9)
    stream = req + link_status + req
    segments = [stream[:3], stream[3:11], stream[11:30], stream[30:]]
    rsp = response(0x81, 0, header(30, 1, 0x00, b"\x00\x00") + b"\x01" + struct.pack("<i", 5))
    events, weird, engine = run_engine(tcp_packets(DNP3_PORT, segments, [rsp[:5], rsp[5:] + rsp]))
    assert engine.flows_by_protocol == {"dnp3": 1}
    apps = [e for e in events if isinstance(e, Dnp3Application)]
    assert [a.function_code for a in apps] == ["READ", "READ", "RESPONSE", "RESPONSE"]
    assert [a.is_orig for a in apps] == [True, True, False, False]
    assert sum(isinstance(e, Dnp3Link) for e in events) == 5
    rows = [(e.fc_request, e.fc_reply) for e in events if isinstance(e, Dnp3)]
    assert rows == [("READ", "RESPONSE"), (None, "RESPONSE")]
    assert weird.total == 0


def test_recognised_on_another_port_and_http_on_20000_is_not() -> None:
    events, _, engine = run_engine(tcp_packets(5020, [request(0x01, header(60, 1, 0x06))]))
    assert engine.flows_by_protocol == {"dnp3": 1}
    assert [e.resp_p for e in events if isinstance(e, Dnp3Application)] == [5020]
    http = b"GET /index.html HTTP/1.1\r\nHost: rtu\r\n\r\n"
    events, _, engine = run_engine(tcp_packets(DNP3_PORT, [http], [b"HTTP/1.1 200 OK\r\n\r\n"]))
    assert engine.flows_by_protocol == {}
    assert events == []


def test_udp_datagram_with_two_frames_and_garbage_datagram() -> None:
    frame_a = request(0x01, header(60, 1, 0x06), 1)
    frame_b = link(ctrl=0xC9)
    pkts = [
        bytes(
            Ether()
            / IP(src="10.2.0.1", dst="10.2.0.2")
            / UDP(sport=1128, dport=DNP3_PORT)
            / (frame_a + frame_b)
        ),
        bytes(Ether() / IP(src="10.2.0.2", dst="10.2.0.1") / UDP(sport=DNP3_PORT, dport=1128) / b"junk"),
        bytes(
            Ether()
            / IP(src="10.2.0.3", dst="10.2.0.2")
            / UDP(sport=1129, dport=DNP3_PORT)
            / b"\x05\x64 not dnp3"
        ),
    ]
    events, weird, engine = run_engine(pkts)
    assert engine.flows_by_protocol == {"dnp3": 1}
    assert sum(isinstance(e, Dnp3Link) for e in events) == 2
    assert [e.function_code for e in events if isinstance(e, Dnp3Application)] == ["READ"]
    assert weird.counts["dnp3_truncated_frame"] == 1  # "junk" on the DNP3 flow


def test_pipeline_writes_every_event_log(tmp_path: Path) -> None:
    name = b"a.txt"
    command = struct.pack("<HH6sHIIHHH", 26, len(name), time48(0), 0, 0, 0, 1, 512, 1) + name
    client = [
        request(0x03, header(12, 1, 0x28, b"\x01\x00") + b"\x02\x00" + crob(0x03), 1),
        request(0x19, header(70, 3, 0x5B, b"\x01") + struct.pack("<H", len(command)) + command, 2),
    ]
    server = [
        response(0x81, 0, header(12, 1, 0x28, b"\x01\x00") + b"\x02\x00" + crob(0x03), 1)
        + response(0x81, 0, header(30, 1, 0x00, b"\x00\x00") + b"\x01" + struct.pack("<i", -7), 2)
    ]
    capture = tmp_path / "dnp3_all.pcap"
    wrpcap(str(capture), [Ether(p) for p in tcp_packets(DNP3_PORT, client, server)])
    result = analyze([capture], tmp_path / "out")
    for event_type in Dnp3Dissector.event_types:
        table = pq.read_table(tmp_path / "out" / "events" / f"{event_type.log}.parquet")
        assert table.num_rows > 0, event_type.log
        assert table.schema == event_schema(event_type)
    assert result.dissected_flows == {"dnp3": 1}
    control = pq.read_table(tmp_path / "out" / "events" / "dnp3_control.parquet").to_pylist()
    assert [(r["function_code"], r["index_number"], r["operation_type"]) for r in control] == [
        ("SELECT", 2, "LATCH_ON"),
        ("RESPONSE", 2, "LATCH_ON"),
    ]


# ============================================================================ fuzzing


def sample_pdus() -> list[bytes]:
    """Real-looking PDUs (link frames) covering every layer and object family above."""
    name = b"f"
    command = struct.pack("<HH6sHIIHHH", 26, 1, time48(0), 0, 0, 0, 1, 512, 1) + name
    stream = (
        request(0x01, header(60, 2, 0x06) + header(1, 2, 0x00, b"\x00\x05"))
        + request(0x03, header(12, 1, 0x28, b"\x01\x00") + b"\x02\x00" + crob(0x41))
        + request(0x19, header(70, 3, 0x5B, b"\x01") + struct.pack("<H", len(command)) + command)
        + response(
            0x81,
            0x8000,
            header(1, 1, 0x00, b"\x00\x0f")
            + b"\xff\x00"
            + header(30, 1, 0x01, b"\x00\x00\x01\x00")
            + bytes(10)
            + header(51, 1, 0x07, b"\x01")
            + time48(9)
            + header(2, 3, 0x28, b"\x01\x00\x01\x00\x81\x05\x00"),
        )
        + link(ctrl=0xC9)
    )
    out = []
    while stream:
        size = frame_size(stream[2])
        out.append(stream[:size])
        stream = stream[size:]
    return out


SAMPLES = sample_pdus()
APDUS = [
    b"\xc0\x81\x00\x00" + header(30, 5, 0x17, b"\x02") + b"\x01" + bytes(5) + b"\x02" + bytes(5),
    b"\xc0\x05" + header(41, 1, 0x28, b"\x01\x00") + bytes(7) + header(12, 1, 0x17, b"\x01\x00") + bytes(11),
    b"\xc0\x82\x00\x00"
    + header(0, 243, 0x17, b"\x01")
    + b"\x00\x01\x04abcd"
    + header(70, 5, 0x5B, b"\x01\x09\x00")
    + bytes(9),
]


def bounded(collect: Collect, size: int) -> None:
    assert len(collect.events) + len(collect.weirds) <= 16 * size + 16


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.booleans())
def test_fuzz_arbitrary_bytes(data: bytes, udp: bool) -> None:
    c = Collect(Transport.UDP if udp else Transport.TCP)
    Dnp3Dissector.recognize(data, c.flow.transport, 1, 2)
    c.dissector.frame(data, True)
    c.dissector.parse(data, c.ctx)
    c.close()
    bounded(c, len(data))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(range(len(SAMPLES))), min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=8),
    st.booleans(),
)
def test_fuzz_mutated_real_pdus(order: list[int], flips: list[tuple[int, int]], is_orig: bool) -> None:
    stream = bytearray(b"".join(SAMPLES[i] for i in order))
    for pos, value in flips:
        if pos < len(stream):
            stream[pos] = value
    c = Collect()
    c.feed(bytes(stream), is_orig)
    c.close()
    bounded(c, len(stream))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(APDUS))),
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=6),
    st.integers(0, 80),
)
def test_fuzz_application_layer_behind_valid_crcs(which: int, flips: list[tuple[int, int]], cut: int) -> None:
    """Mutate the application fragment, then frame it with correct CRCs so the object parser is reached."""
    apdu = bytearray(APDUS[which])
    for pos, value in flips:
        if pos < len(apdu):
            apdu[pos] = value
    data = bytes(apdu[: max(cut, 1)]) if cut < len(apdu) else bytes(apdu)
    c = Collect()
    c.feed(frames(data, chunk=7), is_orig=bool(cut & 1))
    c.close()
    bounded(c, len(data))


# ============================================================================ golden: Zeek dnp3.log


def zeek_log(path: Path) -> list[dict[str, str]]:
    fields: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


def unset(value: str) -> str | None:
    return None if value == "-" else value


def zeek_ids(orig_h: str, orig_p: int, resp_h: str, resp_p: int) -> tuple[str, int, str, int]:
    """Zeek's orientation of a flow: the DNP3 port on the responder side.

    FieldWard's originator is the sender of the first packet. In dnp3_udp_read and dnp3_link_only the
    first packet is the outstation's REQUEST_LINK_STATUS from port 20000, so FieldWard's originator is
    the outstation, while Zeek flips such connections so that the well-known port 20000 (its
    likely_server_ports, registered by the DNP3 analyzer) is the responder's.
    """
    if orig_p == DNP3_PORT and resp_p != DNP3_PORT:
        return resp_h, resp_p, orig_h, orig_p
    return orig_h, orig_p, resp_h, resp_p


def analyze_capture(capture: Path, out: Path) -> dict[str, list[dict[str, Any]]]:
    analyze([capture], out)
    return {p.stem: pq.read_table(p).to_pylist() for p in sorted((out / "events").glob("*.parquet"))}


@pytest.mark.parametrize("stem", [s for s in GOLDEN if s != "dnp3_link_only"])
def test_golden_dnp3_log(corpus: Path, tmp_path: Path, stem: str) -> None:
    expected = Counter(
        (
            *zeek_ids(r["id.orig_h"], int(r["id.orig_p"]), r["id.resp_h"], int(r["id.resp_p"])),
            unset(r["fc_request"]),
            unset(r["fc_reply"]),
            None if r["iin"] == "-" else int(r["iin"]),
        )
        for r in zeek_log(corpus / "dnp3" / "expected" / GOLDEN[stem] / "dnp3.log")
    )
    logs = analyze_capture(corpus / "dnp3" / f"{stem}.pcap", tmp_path)
    got = Counter(
        (
            *zeek_ids(r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"]),
            r["fc_request"],
            r["fc_reply"],
            r["iin"],
        )
        for r in logs["dnp3"]
    )
    assert got == expected
    for row in logs["dnp3"]:
        assert row["iin_flags"] == (iin_flags(row["iin"]) if row["iin"] is not None else [])


def test_golden_dnp3_log_of_link_only_capture_from_the_trace(corpus: Path, tmp_path: Path) -> None:
    """dnp3_link_only's btest keeps no dnp3.log: replay Zeek's main.zeek over its event trace instead."""
    trace = trace_lines(corpus / "dnp3" / "expected" / GOLDEN["dnp3_link_only"] / "output")
    expected: list[tuple[str | None, str | None, int | None]] = []
    pending: str | None = None
    for line in trace:
        if line[0] == "dnp3_application_request_header":
            pending = function_name(line[3])
        elif line[0] == "dnp3_application_response_header":
            expected.append((pending, function_name(line[3]), line[4]))
            pending = None
    if pending is not None:
        expected.append((pending, None, None))
    logs = analyze_capture(corpus / "dnp3" / "dnp3_link_only.pcap", tmp_path)
    assert [(r["fc_request"], r["fc_reply"], r["iin"]) for r in logs["dnp3"]] == expected
    assert {zeek_ids(r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"]) for r in logs["dnp3"]} == {
        ("192.168.80.249", 1128, "192.168.80.12", DNP3_PORT)
    }


# ============================================================================ golden: Zeek's event trace

MASK64 = (1 << 64) - 1
# Zeek's trace prints these per-object events (events.zeek); value fields as Zeek types them
# (signed integers as their 64-bit two's complement, floats as their IEEE bits).
TYPED = {
    (20, 1): ("dnp3_counter_32wFlag", "flags", "u"),
    (20, 2): ("dnp3_counter_16wFlag", "flags", "u"),
    (20, 5): ("dnp3_counter_32woFlag", "u"),
    (20, 6): ("dnp3_counter_16woFlag", "u"),
    (21, 1): ("dnp3_frozen_counter_32wFlag", "flags"),
    (21, 2): ("dnp3_frozen_counter_16wFlag", "flags"),
    (21, 9): ("dnp3_frozen_counter_32woFlag", "u"),
    (21, 10): ("dnp3_frozen_counter_16woFlag", "u"),
    (30, 1): ("dnp3_analog_input_32wFlag", "flags", "s"),
    (30, 2): ("dnp3_analog_input_16wFlag", "flags", "s"),
    (30, 3): ("dnp3_analog_input_32woFlag", "s"),
    (30, 4): ("dnp3_analog_input_16woFlag", "s"),
    (30, 5): ("dnp3_analog_input_SPwFlag", "flags", "f"),
    (32, 1): ("dnp3_analog_input_event_32woTime", "flags", "s"),
    (32, 2): ("dnp3_analog_input_event_16woTime", "flags", "s"),
}
# Objects whose dnp3_response_data_object carries a value (else Zeek prints 0xff): flag octets,
# and for packed objects one event per octet carrying that octet.
FLAG_VALUE = {(1, 2), (2, 1), (3, 2), (10, 2), (11, 1), (13, 1)}
PACKED = {(1, 1): 1, (10, 1): 1, (12, 3): 1}
# Request objects Zeek's Request_Objects parses into data objects (the rest: no per-object event).
ZEEK_REQUEST_DATA_GROUPS = {12, 50, 51, 52, 70, 80, 120}


def trace_lines(path: Path) -> list[tuple[Any, ...]]:
    """The trace as tuples: (event name, is_orig, counts...)."""
    out: list[tuple[Any, ...]] = []
    for line in path.read_text().splitlines():
        if not line.startswith("dnp3_"):
            continue
        name, orig, *values = (v.strip() for v in line.split(","))
        out.append((name, orig == "T", *(int(v) for v in values)))
    return out


def zeek_range(h: Dnp3Object) -> tuple[int, int, int]:
    """Zeek's (number, rf_low, rf_high) for an object header, quirks included.

    Zeek reads the whole object header big-endian except 1-, 2- and 4-octet start/stop indexes
    (explicitly little-endian): so 2- and 4-octet counts (qualifiers 0x?8, 0x?9) appear byte-swapped
    in rf_low (e.g. 1 as 256) although ``number`` swaps them back; qualifier 6 gives (0, 0xffff,
    0xffff); counts report rf_high 0; invalid qualifiers give zeros. Start/stop virtual addresses
    (range codes 3-5) have ``number`` 0.
    """
    code = h.range_code
    if h.object_count is None and code != 6:
        return 0, 0, 0
    if code == 6:
        return 0, 0xFFFF, 0xFFFF
    assert h.object_count is not None
    if code in (0, 1, 2):
        assert h.range_low is not None
        assert h.range_high is not None
        return h.object_count, h.range_low, h.range_high
    if code in (3, 4, 5):
        assert h.range_low is not None
        assert h.range_high is not None
        size = {3: 1, 4: 2, 5: 4}[code]

        def swap(v: int) -> int:
            return int.from_bytes(v.to_bytes(size, "little"), "big")

        return 0, swap(h.range_low), swap(h.range_high)
    size = {7: 1, 8: 2, 9: 4, 0xB: 1}[code]
    return h.object_count, int.from_bytes(h.object_count.to_bytes(size, "little"), "big"), 0


def zeek_value(kind: str, p: Dnp3Point) -> int:
    assert p.value is not None
    if kind == "flags":
        assert p.flags is not None
        return p.flags
    if kind == "f":
        return int(struct.unpack("<I", struct.pack("<f", p.value))[0])
    return int(p.value) & MASK64


def sender_port(e: Event) -> int:
    return e.orig_p if e.is_orig else e.resp_p


def messages(events: list[Event]) -> list[tuple[Dnp3Application, list[Event]]]:
    """Application fragments with the object events that follow them, in emission order (stable by ts)."""
    out: list[tuple[Dnp3Application, list[Event]]] = []
    for e in events:
        if isinstance(e, Dnp3Application):
            out.append((e, []))
        elif isinstance(e, Dnp3Object | Dnp3Point | Dnp3Control | Dnp3File) and out:
            out[-1][1].append(e)
    return sorted(out, key=lambda m: m[0].ts)


def zeek_trace(events: list[Event]) -> list[tuple[Any, ...]]:
    """What Zeek's events.zeek prints, rebuilt from FieldWard's events (is_orig: not from port 20000)."""
    lines: list[tuple[Any, ...]] = []
    for app, items in messages(events):
        zo = sender_port(app) != DNP3_PORT
        response = app.iin is not None
        lines.append(("dnp3_header_block", zo, app.len, app.ctrl, app.dest_addr, app.src_addr))
        if response:
            lines.append(("dnp3_application_response_header", zo, app.application_control, app.fc, app.iin))
        else:
            lines.append(("dnp3_application_request_header", zo, app.application_control, app.fc))
        current: Dnp3Object | None = None
        packed: list[Dnp3Point] = []

        def flush_packed(
            current: Dnp3Object | None, packed: list[Dnp3Point], zo: bool, response: bool
        ) -> None:
            if current is None or not packed:
                return
            bits = PACKED[(current.group, current.variation)]
            for start in range(0, len(packed), 8 // bits):
                octet = sum(
                    int(p.value or 0) << (i * bits) for i, p in enumerate(packed[start : start + 8 // bits])
                )
                lines.append(("dnp3_object_prefix", zo, 0))
                if response:
                    lines.append(("dnp3_response_data_object", zo, octet))
            packed.clear()

        for item in items:
            if isinstance(item, Dnp3Object):
                flush_packed(current, packed, zo, response)
                current = item
                lines.append(
                    (
                        "dnp3_object_header",
                        zo,
                        item.group << 8 | item.variation,
                        item.qualifier,
                        *zeek_range(item),
                    )
                )
                continue
            assert current is not None
            key = (current.group, current.variation)
            if not response and current.group not in ZEEK_REQUEST_DATA_GROUPS:
                continue
            if key in PACKED:
                assert isinstance(item, Dnp3Point)
                packed.append(item)
                continue
            prefix = getattr(item, "index", getattr(item, "index_number", None))
            lines.append(("dnp3_object_prefix", zo, prefix if current.prefix_code in (1, 2, 3) else 0))
            if isinstance(item, Dnp3Point) and key in TYPED:
                name, *kinds = TYPED[key]
                lines.append((name, zo, *(zeek_value(k, item) for k in kinds)))
            if isinstance(item, Dnp3Control) and current.group == 12:
                name = "dnp3_crob" if current.variation == 1 else "dnp3_pcb"
                fields = (item.control_code, item.execute_count, item.on_time, item.off_time, item.status)
                lines.append((name, zo, *fields))
            if response:
                value = item.flags if isinstance(item, Dnp3Point) and key in FLAG_VALUE else 0xFF
                lines.append(("dnp3_response_data_object", zo, value))
        flush_packed(current, packed, zo, response)
    return lines


@pytest.mark.parametrize("stem", list(GOLDEN))
def test_golden_zeek_event_trace(corpus: Path, stem: str) -> None:
    expected = trace_lines(corpus / "dnp3" / "expected" / GOLDEN[stem] / "output")
    events, _, _ = run_engine(corpus / "dnp3" / f"{stem}.pcap")
    got = zeek_trace(events)
    assert len(got) == len(expected)
    assert got == expected


# ============================================================================ golden: tshark


def tshark_rows(
    tshark: str, capture: Path, fields: list[str], display_filter: str
) -> dict[int, dict[str, list[str]]]:
    """tshark field values per packet time (ns), lists split on tshark's occurrence separator."""
    cmd = [
        tshark,
        "-r",
        str(capture),
        "-Y",
        display_filter,
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=|",
    ]
    cmd += ["-e", "frame.time_epoch"]
    for name in fields:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows: dict[int, dict[str, list[str]]] = {}
    for line in out.splitlines():
        stamp, *values = line.split("\t")
        seconds, _, frac = stamp.partition(".")
        ts = int(seconds) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])
        row = rows.setdefault(ts, {name: [] for name in fields})
        for name, value in zip(fields, values, strict=True):
            row[name] += [v for v in value.split("|") if v]
    return rows


def per_packet(events: Iterable[Event], values: Any) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for e in events:
        out.setdefault(e.ts, []).extend(values(e))
    return out


@pytest.mark.parametrize("stem", list(GOLDEN))
def test_golden_link_and_transport_against_tshark(corpus: Path, tshark: str, stem: str) -> None:
    capture = corpus / "dnp3" / f"{stem}.pcap"
    fields = ["dnp3.len", "dnp3.ctl", "dnp3.dst", "dnp3.src"]
    rows = tshark_rows(tshark, capture, fields, "dnp3")
    events, _, _ = run_engine(capture)
    links = [e for e in events if isinstance(e, Dnp3Link)]
    mine = per_packet(links, lambda e: [(e.len, e.ctrl, e.dest_addr, e.src_addr)])
    theirs = {
        ts: list(zip(*((int(v, 0) for v in row[f]) for f in fields), strict=True)) for ts, row in rows.items()
    }
    assert mine == theirs
    # The transport octet of every frame with user data (tshark: dnp3.tr.ctl).
    tr = tshark_rows(tshark, capture, ["dnp3.tr.ctl"], "dnp3.tr.ctl")
    mine_tr = per_packet(
        (e for e in links if e.tp_seq is not None),
        lambda e: [e.tp_seq | (0x40 if e.tp_fir else 0) | (0x80 if e.tp_fin else 0)],
    )
    assert mine_tr == {ts: [int(v, 0) for v in row["dnp3.tr.ctl"]] for ts, row in tr.items()}


@pytest.mark.parametrize("stem", list(GOLDEN))
def test_golden_application_layer_against_tshark(corpus: Path, tshark: str, stem: str) -> None:
    capture = corpus / "dnp3" / f"{stem}.pcap"
    rows = tshark_rows(tshark, capture, ["dnp3.al.ctl", "dnp3.al.func", "dnp3.al.iin"], "dnp3.al.func")
    events, _, _ = run_engine(capture)
    apps = [e for e in events if isinstance(e, Dnp3Application)]
    mine = per_packet(apps, lambda e: [(e.application_control, e.fc, e.iin)])
    theirs = {
        ts: [
            (int(c, 0), int(f, 0), int(i, 0) if int(f, 0) in (0x81, 0x82, 0x83) else None)
            for c, f, i in zip(
                row["dnp3.al.ctl"],
                row["dnp3.al.func"],
                row["dnp3.al.iin"] + ["-"] * (len(row["dnp3.al.func"]) - len(row["dnp3.al.iin"])),
                strict=True,
            )
        ]
        for ts, row in rows.items()
    }
    assert mine == theirs


def test_read_by_index_list_object_headers_against_tshark(tmp_path: Path, tshark: str) -> None:
    capture = tmp_path / "dnp3_read_by_index.pcap"
    wrpcap(str(capture), [Ether(p) for p in tcp_packets(DNP3_PORT, [request(0x01, READ_BY_INDEX, 4)])])
    rows = tshark_rows(tshark, capture, ["dnp3.al.obj", "dnp3.al.index"], "dnp3.al.func == 1")
    events, weird, _ = run_engine(capture)
    headers = [e.group << 8 | e.variation for e in events if isinstance(e, Dnp3Object)]
    assert headers == [int(v, 0) for row in rows.values() for v in row["dnp3.al.obj"]]
    assert [int(v) for row in rows.values() for v in row["dnp3.al.index"]] == [3, 5, 263]
    assert weird.total == 0


def test_golden_point_values_and_times_against_tshark(corpus: Path, tshark: str) -> None:
    """Analog values, counters, packed bits, CTO times and relative times of dnp3.pcap and the reads."""
    for stem in ("dnp3", "dnp3_read", "dnp3_udp_read", "dnp3_link_only"):
        capture = corpus / "dnp3" / f"{stem}.pcap"
        names = ["dnp3.al.ana.int", "dnp3.al.ana.float", "dnp3.al.cnt", "dnp3.al.bit", "dnp3.al.reltimestamp"]
        rows = tshark_rows(
            tshark, capture, [*names, "dnp3.al.timestamp"], "dnp3.al.func == 129 || dnp3.al.func == 130"
        )
        events, _, _ = run_engine(capture)
        points = [e for e in events if isinstance(e, Dnp3Point)]
        kinds: dict[str, Callable[[Dnp3Point], bool]] = {
            "dnp3.al.ana.int": lambda p: p.group in (30, 32) and p.variation in (1, 2, 3, 4),
            "dnp3.al.ana.float": lambda p: p.group in (30, 32) and p.variation in (5, 6),
            "dnp3.al.cnt": lambda p: p.group in (20, 21),
            "dnp3.al.bit": lambda p: (p.group, p.variation) == (1, 1),
        }
        for name, wanted in kinds.items():
            mine = [p.value if p.value is not None else math.nan for p in points if wanted(p)]
            theirs = [float(v) for row in rows.values() for v in row[name]]
            assert len(mine) == len(theirs), (stem, name)
            # tshark prints floats with 6 significant digits
            assert all(
                math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9) for a, b in zip(mine, theirs, strict=True)
            )
        cto = [p for p in points if p.group == 51]
        relative = [p for p in points if (p.group, p.variation) in ((2, 3), (4, 3))]
        theirs_rel = [round(float(v) * 1000) for row in rows.values() for v in row["dnp3.al.reltimestamp"]]
        if stem == "dnp3":
            assert (len(cto), len(relative), len(theirs_rel)) == (10, 42, 42)
        # Each relative time is its CTO plus the offset tshark shows.
        offsets = []
        base = None
        for p in points:
            if p.group == 51:
                base = p.time48
            elif (p.group, p.variation) in ((2, 3), (4, 3)):
                assert base is not None
                assert p.time48 is not None
                offsets.append(p.time48 - base)
        assert offsets == theirs_rel
        stamps = [v for row in rows.values() for v in row["dnp3.al.timestamp"]]
        assert len(stamps) == len(cto)
        for p, stamp in zip(cto, stamps, strict=True):
            # "Oct 11, 2004 10:16:34.018000000 UTC"
            match = re.match(r"(\w+ +\d+, \d+ [\d:]+)\.(\d+)", stamp)
            assert match
            assert p.time48 is not None
            import datetime

            when = datetime.datetime.strptime(match.group(1), "%b %d, %Y %H:%M:%S").replace(
                tzinfo=datetime.UTC
            )
            assert p.time48 == int(when.timestamp()) * 1000 + int(match.group(2)[:3])


# ============================================================================ documentation


def test_every_event_field_is_documented() -> None:
    text = DOC.read_text()
    for event_type in Dnp3Dissector.event_types:
        assert f"`{event_type.log}`" in text, event_type.log
        for f in dataclasses.fields(event_type):
            if f.name in {"ts", "flow_id", "orig_h", "orig_p", "resp_h", "resp_p", "is_orig"}:
                continue
            assert re.search(rf"^\| `{f.name}` \|", text, flags=re.M), (event_type.log, f.name)
