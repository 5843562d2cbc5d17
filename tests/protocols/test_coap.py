"""CoAP dissector: built messages cross-checked with tshark, strict recognition, weirds, fuzz.

The corpus has no CoAP capture. Messages are encoded here from RFC 7252 section 3 (and with scapy's CoAP
layer as a second, independent encoder) and tshark's CoAP dissector is the reference for every field.
"""

from __future__ import annotations

import dataclasses
import random
import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.coap import CoAP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from fieldward.pipeline import analyze
from fieldward.protocols.base import Event, FlowInfo, PduContext, ProtocolWeird, Transport, Verdict
from fieldward.protocols.coap import CoapDissector, CoapMessage

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "coap.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "coap.py"
SECOND = 1_000_000_000

# ---------------------------------------------------------------------- an RFC 7252 encoder


def _nibble(value: int) -> tuple[int, bytes]:
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes([value - 13])
    return 14, struct.pack(">H", value - 269)


def coap(
    mtype: int,
    code: tuple[int, int],
    mid: int,
    token: bytes = b"",
    options: list[tuple[int, bytes]] | None = None,
    payload: bytes = b"",
    version: int = 1,
) -> bytes:
    """A CoAP message laid out as RFC 7252 figure 7 (options sorted by number, delta-encoded)."""
    out = bytearray([(version << 6) | (mtype << 4) | len(token), (code[0] << 5) | code[1]])
    out += struct.pack(">H", mid) + token
    previous = 0
    for number, value in sorted(options or [], key=lambda o: o[0]):
        delta, delta_ext = _nibble(number - previous)
        length, length_ext = _nibble(len(value))
        out += bytes([(delta << 4) | length]) + delta_ext + length_ext + value
        previous = number
    if payload:
        out += b"\xff" + payload
    return bytes(out)


def uint(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


GET = coap(
    0,
    (0, 1),
    0x1001,
    b"\xa1\xb2",
    [(3, b"sensor-12.plant"), (11, b"sensors"), (11, b"temperature"), (15, b"unit=C"), (17, uint(50))],
)
OBSERVE_GET = coap(0, (0, 1), 0x1002, b"\x01", [(6, b""), (11, b"alarms")])
CONTENT = coap(
    2, (2, 5), 0x1001, b"\xa1\xb2", [(12, uint(50)), (14, uint(60)), (4, b"\x12\x34")], b'{"t":21.5}'
)
NOTIFICATION = coap(1, (2, 5), 0x2001, b"\x01", [(6, uint(7)), (12, uint(0))], b"OK")
BLOCK_PUT = coap(
    0,
    (0, 3),
    0x1003,
    b"\x05\x06\x07\x08",
    [(11, b"fw"), (27, uint((3 << 4) | 0x8 | 6)), (60, uint(4096)), (12, uint(42))],
    bytes(1024),
)
BLOCK_CONTINUE = coap(2, (2, 31), 0x1003, b"\x05\x06\x07\x08", [(27, uint((3 << 4) | 0x8 | 6))])
BLOCK2_RESPONSE = coap(2, (2, 5), 0x1004, b"\x09", [(23, uint((2 << 4) | 2)), (28, uint(200))], bytes(64))
REGISTER = coap(  # an LwM2M registration: Uri-Query with a secret parameter is redacted
    0,
    (0, 2),
    0x1005,
    b"\x10" * 8,
    [(11, b"rd"), (15, b"ep=plc-7"), (15, b"lt=300"), (15, b"psk=hunter2")],
    b"</1/0>,</3/0>",
)
CREATED = coap(2, (2, 1), 0x1005, b"\x10" * 8, [(8, b"rd"), (8, b"5a3f")])
NOT_FOUND = coap(2, (4, 4), 0x1006, b"\x77")
EMPTY_ACK = coap(2, (0, 0), 0x1007)
RESET = coap(3, (0, 0), 0x1008)
BUILT = [
    GET,
    OBSERVE_GET,
    CONTENT,
    NOTIFICATION,
    BLOCK_PUT,
    BLOCK_CONTINUE,
    BLOCK2_RESPONSE,
    REGISTER,
    CREATED,
    NOT_FOUND,
    EMPTY_ACK,
    RESET,
]

# ---------------------------------------------------------------------- helpers


def udp(payload: bytes, src: str, dst: str, sport: int, dport: int) -> Packet:
    return Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload)


def write_pcap(path: Path, packets: list[Packet], start: float = 1_700_000_000.0) -> Path:
    for i, p in enumerate(packets):
        p.time = start + i * 0.1
    wrpcap(str(path), packets)
    return path


@dataclass
class Run:
    logs: dict[str, list[dict[str, Any]]]

    def rows(self, log: str) -> list[dict[str, Any]]:
        return self.logs.get(log, [])

    def weirds(self) -> list[str]:
        return [r["name"] for r in self.rows("weird") if r["protocol"] == "coap"]


def run_capture(capture: Path, out: Path) -> Run:
    analyze([capture], out)
    logs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((out / "events").glob("*.parquet")):
        table = pq.read_table(path)
        table = table.set_column(table.schema.get_field_index("ts"), "ts", table["ts"].cast(pa.int64()))
        logs[path.stem] = table.to_pylist()
    return Run(logs)


class Collector:
    def __init__(self) -> None:
        self.flow = FlowInfo(1, Transport.UDP, "10.0.0.1", 50000, "10.0.0.2", 5683)
        self.events: list[Event] = []
        self.ctx = PduContext(self.flow, "coap", self.events.append, self.events.append)

    def parse(self, data: bytes) -> Collector:
        CoapDissector(self.flow).parse(data, self.ctx)
        return self

    def messages(self) -> list[CoapMessage]:
        return [e for e in self.events if isinstance(e, CoapMessage)]

    def one(self) -> CoapMessage:
        (message,) = self.messages()
        return message

    def weirds(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, ProtocolWeird)]


# ---------------------------------------------------------------------- tshark cross-check

FIELDS = [
    "coap.version",
    "coap.type",
    "coap.token_len",
    "coap.code",
    "coap.mid",
    "coap.token",
    "coap.opt.name",
    "coap.opt.uri_host",
    "coap.opt.uri_port",
    "coap.opt.uri_path",
    "coap.opt.uri_query",
    "coap.opt.location_path",
    "coap.opt.ctype",
    "coap.opt.accept",
    "coap.opt.max_age",
    "coap.opt.etag",
    "coap.opt.observe",
    "coap.opt.block_number",
    "coap.opt.block_mflag",
    "coap.opt.block_size",
    "coap.opt.size1",
    "coap.payload_length",
    "coap.block_length",
]
CONTENT_FORMATS = {0: "text/plain; charset=utf-8", 42: "application/octet-stream", 50: "application/json"}
"""RFC 7252 12.3 content formats, as tshark names them."""


def tshark_rows(tshark: str, capture: Path) -> list[dict[str, str]]:
    names = ["frame.time_epoch", *FIELDS]
    cmd = [tshark, "-r", str(capture), "-Y", "coap", "-T", "fields", "-E", "separator=|"]
    cmd += ["-E", "occurrence=a", "-E", "aggregator=\x1f", "-d", "udp.port==6000,coap"]
    for name in names:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [dict(zip(names, line.split("|"), strict=True)) for line in out.split("\n") if line]


def epoch_ns(text: str) -> int:
    seconds, _, fraction = text.partition(".")
    return int(seconds) * SECOND + int(fraction.ljust(9, "0")[:9])


def values(text: str) -> list[str]:
    return text.split("\x1f") if text else []


def one(text: str) -> int | None:
    return int(text, 0) if text else None


def check_with_tshark(e: dict[str, Any], t: dict[str, str]) -> None:
    assert int(t["coap.version"]) == e["version"]
    assert int(t["coap.type"]) == e["type"]
    assert int(t["coap.token_len"]) == e["tkl"]
    assert int(t["coap.code"]) == e["code"]
    assert int(t["coap.mid"]) == e["message_id"]
    assert t["coap.token"].replace(":", "") == e["token"]
    names = values(t["coap.opt.name"])
    assert len(names) == len(e["options"])
    assert _opt(t["coap.opt.uri_host"]) == e["uri_host"]
    assert one(t["coap.opt.uri_port"]) == e["uri_port"]
    path = values(t["coap.opt.uri_path"])
    assert ("/" + "/".join(path) if path else None) == e["uri_path"]
    if not e["query_redacted"]:
        assert ("&".join(values(t["coap.opt.uri_query"])) or None) == e["uri_query"]
    location = values(t["coap.opt.location_path"])
    assert ("/" + "/".join(location) if location else None) == e["location_path"]
    ctype = t["coap.opt.ctype"]
    assert (ctype or None) == (None if e["content_format"] is None else CONTENT_FORMATS[e["content_format"]])
    accept = t["coap.opt.accept"]
    assert (accept or None) == (None if e["accept"] is None else CONTENT_FORMATS[e["accept"]])
    assert one(t["coap.opt.max_age"]) == e["max_age"]
    assert (t["coap.opt.etag"].replace(":", "") or None) == e["etag"]
    assert one(t["coap.opt.observe"]) == e["observe"]
    assert one(t["coap.opt.size1"]) == e["size1"]
    blocks = list(zip(values(t["coap.opt.block_number"]), values(t["coap.opt.block_mflag"]), strict=True))
    sizes = values(t["coap.opt.block_size"])[: len(blocks)]  # tshark 4.0 adds a bogus size for Size2
    ours = [
        (e[f"{b}_num"], e[f"{b}_more"], e[f"{b}_size"])
        for b in ("block2", "block1")
        if e[f"{b}_num"] is not None
    ]
    assert [
        (int(n), bool(int(m, 0)), 1 << (int(s) + 4)) for (n, m), s in zip(blocks, sizes, strict=True)
    ] == ours
    # tshark files a block-wise transfer's payload under coap.block_length.
    assert int(t["coap.payload_length"] or t["coap.block_length"] or "0") == e["payload_len"]


def _opt(text: str) -> str | None:
    return text or None


def test_built_capture_against_tshark(tshark: str, tmp_path: Path) -> None:
    packets = []
    for i, message in enumerate(BUILT):
        request = message[1] >> 5 == 0 and message[1] != 0
        if request:
            packets.append(udp(message, "10.60.0.5", "10.60.0.9", 40000 + i, 5683))
        else:
            packets.append(udp(message, "10.60.0.9", "10.60.0.5", 5683, 40000 + i))
    packets.append(udp(GET, "10.60.0.5", "10.60.0.10", 41000, 6000))  # CoAP on another port
    capture = write_pcap(tmp_path / "coap.pcap", packets)
    run = run_capture(capture, tmp_path / "out")
    assert run.weirds() == []
    events = sorted(run.rows("coap"), key=lambda e: e["ts"])
    frames = tshark_rows(tshark, capture)
    assert len(events) == len(frames) == len(BUILT) + 1
    by_time = {epoch_ns(t["frame.time_epoch"]): t for t in frames}
    for e in events:
        check_with_tshark(e, by_time[e["ts"]])
    get, observe, content, notification, put, cont, block2, register, created, not_found, ack, rst, off = (
        events
    )
    # Values RFC 7252 / 7641 / 7959 define (independent of tshark).
    assert (get["type_name"], get["code_str"], get["code_name"], get["is_request"]) == (
        "CON",
        "0.01",
        "GET",
        True,
    )
    assert (get["uri_host"], get["uri_path"], get["uri_query"], get["accept"]) == (
        "sensor-12.plant",
        "/sensors/temperature",
        "unit=C",
        50,
    )
    assert get["options"] == [3, 11, 11, 15, 17]
    assert (observe["observe"], observe["uri_path"]) == (0, "/alarms")
    assert (content["code_name"], content["content_format"], content["max_age"], content["payload_len"]) == (
        "Content",
        50,
        60,
        10,
    )
    assert (notification["type_name"], notification["observe"]) == ("NON", 7)
    assert (put["block1_num"], put["block1_more"], put["block1_size"], put["size1"]) == (3, True, 1024, 4096)
    assert (cont["code_str"], cont["code_name"]) == ("2.31", "Continue")
    assert (block2["block2_num"], block2["block2_more"], block2["block2_size"], block2["size2"]) == (
        2,
        False,
        64,
        200,
    )
    assert register["uri_query"] == "ep=plc-7&lt=300&psk=<redacted>"
    assert register["query_redacted"] is True
    assert created["location_path"] == "/rd/5a3f"
    assert (not_found["code_str"], not_found["code_name"], not_found["is_request"]) == (
        "4.04",
        "Not Found",
        False,
    )
    assert (ack["type_name"], ack["code_name"], rst["type_name"]) == ("ACK", "Empty", "RST")
    assert off["resp_p"] == 6000


def test_scapy_encoded_message_decodes_alike() -> None:
    """scapy's CoAP layer as a second encoder (extended option deltas and lengths included)."""
    message = CoAP(
        type=0,
        code=2,
        msg_id=0xBEEF,
        token=b"\x01\x02\x03",
        options=[
            ("Uri-Host", b"gw"),
            ("Uri-Path", b"a" * 20),
            ("Uri-Path", b"b" * 300),
            ("Content-Format", b"\x2a"),
        ],
        paymark=b"\xff",
    ) / Raw(b"payload")
    e = Collector().parse(bytes(message)).one()
    assert (e.code_name, e.message_id, e.token, e.uri_host) == ("POST", 0xBEEF, "010203", "gw")
    assert e.uri_path == "/" + "a" * 20 + "/" + "b" * 300
    assert (e.content_format, e.payload_len) == (42, 7)


def test_proxy_uri_credentials_are_never_kept() -> None:
    message = coap(0, (0, 1), 1, b"", [(35, b"coap://admin:s3cret@gw.example/status")])
    e = Collector().parse(message).one()
    assert e.proxy_uri == "coap://gw.example/status"
    assert "s3cret" not in repr(e)


# ---------------------------------------------------------------------- recognition


@pytest.mark.parametrize(
    ("data", "ports", "verdict"),
    [
        (GET, (40000, 5683), Verdict.YES),
        (GET, (40000, 6000), Verdict.YES),
        (CONTENT, (5683, 40000), Verdict.YES),
        (EMPTY_ACK, (5683, 40000), Verdict.YES),
        (coap(0, (0, 1), 1, b"", [(2000, b"x")]), (40000, 5683), Verdict.YES),  # unregistered option, on port
        (coap(0, (0, 1), 1, b"", [(2000, b"x")]), (40000, 6000), Verdict.NO),  # ... but not elsewhere
        (coap(0, (0, 1), 1, version=2), (40000, 5683), Verdict.NO),
        (bytes([0x49]) + GET[1:], (40000, 5683), Verdict.NO),  # TKL 9
        (coap(0, (1, 1), 1), (40000, 5683), Verdict.NO),  # class 1 is reserved
        (coap(0, (7, 1), 1), (40000, 5683), Verdict.NO),  # class 7 is signaling (CoAP over TCP only)
        (EMPTY_ACK + b"\x00", (5683, 40000), Verdict.NO),  # an Empty message has no token, options, payload
        (GET + b"\xff", (40000, 5683), Verdict.NO),  # payload marker without payload
        (GET[:-1], (40000, 5683), Verdict.NO),  # the last option runs past the datagram
        (coap(0, (0, 1), 1) + b"\xf1x", (40000, 5683), Verdict.NO),  # delta nibble 15
        (coap(0, (0, 1), 1) + b"\x1fx", (40000, 5683), Verdict.NO),  # length nibble 15
        (coap(0, (0, 1), 1) + b"\x01x", (40000, 5683), Verdict.NO),  # option number 0
        (GET[:3], (40000, 5683), Verdict.NO),
        (
            bytes.fromhex("4201010000010000000000000377777706676f6f676c6503636f6d0000010001"),
            (40000, 6000),
            Verdict.NO,
        ),
        (b"M-SEARCH * HTTP/1.1\r\n\r\n", (40000, 5683), Verdict.NO),
    ],
)
def test_recognize(data: bytes, ports: tuple[int, int], verdict: Verdict) -> None:
    assert CoapDissector.recognize(data, Transport.UDP, *ports) == verdict
    assert CoapDissector.recognize(data, Transport.TCP, *ports) == Verdict.NO


def test_random_bytes_are_rarely_taken_for_coap() -> None:
    """Off port 5683, random datagrams of 8-64 bytes must almost never pass the content check."""
    rng = random.Random(7)
    trials = 20_000
    taken = sum(
        CoapDissector.recognize(
            bytes(rng.randrange(256) for _ in range(rng.randrange(8, 65))), Transport.UDP, 1, 2
        )
        == Verdict.YES
        for _ in range(trials)
    )
    assert taken / trials < 0.005


# ---------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("data", "weird", "events"),
    [
        (GET[:3], "coap_truncated", 0),
        (coap(0, (0, 1), 1, b"\x01\x02\x03")[:5], "coap_truncated", 0),
        (coap(0, (0, 1), 1, version=0), "coap_bad_version", 1),
        (bytes([0x4C]) + GET[1:], "coap_bad_token_length", 1),
        (coap(0, (1, 3), 1), "coap_unknown_code", 1),
        (EMPTY_ACK + b"\xff\x00", "coap_empty_with_data", 1),
        (GET + b"\xff", "coap_bad_option", 1),
        (GET[:-1], "coap_bad_option", 1),
        (coap(0, (0, 1), 1) + b"\xf1x", "coap_bad_option", 1),
        (coap(0, (0, 1), 1) + b"\xd1", "coap_bad_option", 1),  # extended delta byte missing
        (coap(0, (0, 1), 1) + b"\xe1\x00", "coap_bad_option", 1),  # 2-byte extended delta cut
        (coap(0, (0, 1), 1) + b"\x01x", "coap_bad_option", 1),  # option number 0
        (coap(0, (0, 1), 1, b"", [(12, b"\x00\x00\x01")]), "coap_bad_option", 1),  # uint too long
        (coap(0, (0, 1), 1, b"", [(27, b"\x0f")]), "coap_bad_option", 1),  # SZX 7
        (coap(0, (0, 1), 1) + b"\x50" * 70, "coap_bad_option", 1),  # too many options
    ],
)
def test_weirds(data: bytes, weird: str, events: int) -> None:
    col = Collector().parse(data)
    assert weird in col.weirds()
    assert len(col.messages()) == events


# ---------------------------------------------------------------------- fuzz


def _exercise(data: bytes) -> None:
    for ports in ((40000, 5683), (40000, 6000)):
        CoapDissector.recognize(data, Transport.UDP, *ports)
    col = Collector().parse(data)
    assert len(col.messages()) <= 1
    assert len(col.events) <= 1 + 6 + 64


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _exercise(data)
    _exercise(GET[:6] + data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(BUILT),
    st.lists(st.tuples(st.integers(0, 1200), st.integers(0, 255)), max_size=6),
    st.integers(0, 1200),
)
def test_fuzz_mutated_real_messages(message: bytes, mutations: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(message)
    for position, value in mutations:
        data[position % len(data)] = value
    _exercise(bytes(data[:cut]))
    _exercise(bytes(data))


# ---------------------------------------------------------------------- documentation


def test_every_event_field_is_documented() -> None:
    doc = DOC.read_text()
    assert f"`{CoapMessage.log}`" in doc
    for f in dataclasses.fields(CoapMessage):
        assert f"| `{f.name}` |" in doc, f"CoapMessage.{f.name} is not documented"
    for name in sorted(set(re.findall(r'"(coap_[a-z_]+)"', MODULE.read_text()))):
        assert f"`{name}`" in doc, f"weird {name} is not documented"
