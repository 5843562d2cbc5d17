"""NTP dissector: built packets (scapy and struct) cross-checked with tshark, weirds, recognition, fuzz.

The corpus has no NTP capture, so every mode is built here: client/server/broadcast/symmetric packets
(NTPv3 and v4, stratum 0 kiss code, stratum 1 clock source, stratum 2 IPv4 reference, an authenticated
packet, NTPv4 extension fields), mode 6 control messages and mode 7 private messages including the
monlist request and response. tshark's NTP dissector is the reference for every field it decodes; the
values we put in are the specification's expectations (RFC 5905 layouts).
"""

from __future__ import annotations

import dataclasses
import re
import struct
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.ntp import NTPHeader
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from fieldward.pipeline import analyze
from fieldward.protocols.base import Event, FlowInfo, PduContext, ProtocolWeird, Transport, Verdict
from fieldward.protocols.ntp import NtpDissector, NtpMessage

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "ntp.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "ntp.py"
SECOND = 1_000_000_000
NTP_EPOCH_OFFSET = 2_208_988_800

# ---------------------------------------------------------------------- helpers


def ntp_ts(unix: float) -> int:
    """A Unix time as a 64-bit NTP timestamp (era 0)."""
    ntp = unix + NTP_EPOCH_OFFSET
    return (int(ntp) << 32) | int((ntp - int(ntp)) * 2**32)


def packet(
    *,
    li: int = 0,
    vn: int = 4,
    mode: int = 3,
    stratum: int = 0,
    poll: int = 6,
    precision: int = -20,
    delay: int = 0,
    disp: int = 0,
    ref: bytes = bytes(4),
    times: tuple[float, float, float, float] = (0, 0, 0, 0),
    tail: bytes = b"",
) -> bytes:
    """An NTP packet laid out as RFC 5905 figure 8."""
    first = (li << 6) | (vn << 3) | mode
    head = struct.pack(">BBbbII4s", first, stratum, poll, precision, delay, disp, ref)
    return head + b"".join(struct.pack(">Q", ntp_ts(t) if t else 0) for t in times) + tail


def control(
    op: int,
    *,
    response: bool = False,
    seq: int = 1,
    status: int = 0,
    assoc: int = 0,
    data: bytes = b"",
    vn: int = 2,
) -> bytes:
    """A mode 6 control message (RFC 9327 section 2): header, data padded to 4 bytes."""
    flags = (0x80 if response else 0) | op
    pad = b"\x00" * (-len(data) % 4)
    return struct.pack(">BBHHHHH", (vn << 3) | 6, flags, seq, status, assoc, 0, len(data)) + data + pad


def private(
    code: int, *, response: bool = False, nitems: int = 0, size: int = 0, data: bytes = b"", impl: int = 3
) -> bytes:
    """A mode 7 (ntpd private) message: R/M/VN/mode, A/seq, implementation, request, err/nitems, size."""
    first = (0x80 if response else 0) | (2 << 3) | 7
    return struct.pack(">BBBBHH", first, 0, impl, code, nitems, size) + data


def udp(
    payload: bytes, src: str = "10.40.0.5", dst: str = "10.40.0.1", sport: int = 50123, dport: int = 123
) -> Packet:
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
        return [r["name"] for r in self.rows("weird") if r["protocol"] == "ntp"]


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
        self.flow = FlowInfo(1, Transport.UDP, "10.0.0.1", 50123, "10.0.0.2", 123)
        self.events: list[Event] = []
        self.ctx = PduContext(self.flow, "ntp", self.events.append, self.events.append)

    def parse(self, data: bytes) -> Collector:
        NtpDissector(self.flow).parse(data, self.ctx)
        return self

    def messages(self) -> list[NtpMessage]:
        return [e for e in self.events if isinstance(e, NtpMessage)]

    def one(self) -> NtpMessage:
        (message,) = self.messages()
        return message

    def weirds(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, ProtocolWeird)]


T0 = 1_700_000_000.25
MAC = struct.pack(">I", 42) + bytes(range(16))
EXTENSION = struct.pack(">HH", 0x0104, 32) + bytes(28)  # a 32-byte NTPv4 extension field (RFC 7822)
BUILT: list[bytes] = [
    packet(mode=3, stratum=0, poll=0, precision=0, times=(0, 0, 0, T0)),  # SNTP client
    packet(  # server, stratum 2, IPv4 reference
        mode=4,
        stratum=2,
        poll=6,
        precision=-23,
        delay=0x00000400,
        disp=0x00008000,
        ref=bytes([192, 0, 2, 7]),
        times=(T0 - 64, T0, T0 + 0.001, T0 + 0.002),
    ),
    packet(mode=4, stratum=1, ref=b"GPS\x00", times=(T0, T0, T0, T0 + 0.5)),  # stratum 1 clock source
    packet(li=3, mode=4, stratum=0, ref=b"RATE", times=(0, T0, T0, T0)),  # kiss-o'-death
    packet(
        vn=3, mode=1, stratum=3, ref=bytes([10, 0, 0, 1]), times=(T0, 0, 0, T0), tail=MAC
    ),  # symmetric, MD5
    packet(mode=5, stratum=2, ref=bytes([10, 0, 0, 1]), times=(T0, 0, 0, T0)),  # broadcast
    packet(mode=3, times=(0, 0, 0, T0), tail=EXTENSION + MAC),  # NTPv4 extension field + MAC
    control(2, seq=7),  # READVAR request
    control(2, response=True, seq=7, status=0x0615, data=b'version="ntpd 4.2.8p15", stratum=2'),
    private(42, data=bytes(40)),  # monlist request (MON_GETLIST_1)
    private(42, response=True, nitems=2, size=72, data=bytes(144)),  # monlist response
    private(1),  # PEER_LIST request: not monlist
]


# ---------------------------------------------------------------------- tshark cross-check

FIELDS = [
    "ntp.flags.li",
    "ntp.flags.vn",
    "ntp.flags.mode",
    "ntp.stratum",
    "ntp.ppoll",
    "ntp.precision",
    "ntp.rootdelay",
    "ntp.rootdispersion",
    "ntp.refid",
    "ntp.reftime",
    "ntp.org",
    "ntp.rec",
    "ntp.xmt",
    "ntp.keyid",
    "ntp.mac",
    "ntp.ext.type",
    "ntp.ctrl.flags2.r",
    "ntp.ctrl.flags2.error",
    "ntp.ctrl.flags2.more",
    "ntp.ctrl.flags2.opcode",
    "ntp.ctrl.sequence",
    "ntp.ctrl.status",
    "ntp.ctrl.associd",
    "ntp.ctrl.offset",
    "ntp.ctrl.count",
    "ntp.priv.flags.r",
    "ntp.priv.flags.more",
    "ntp.priv.auth",
    "ntp.priv.seq",
    "ntp.priv.impl",
    "ntp.priv.reqcode",
    "ntp.priv.err",
    "ntp.priv.numitems",
    "ntp.priv.itemsize",
]


def tshark_rows(tshark: str, capture: Path) -> list[dict[str, str]]:
    names = ["frame.time_epoch", *FIELDS]
    cmd = [tshark, "-r", str(capture), "-Y", "ntp", "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]
    cmd += ["-d", "udp.port==4123,ntp"]
    for name in names:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [dict(zip(names, line.split("|"), strict=True)) for line in out.splitlines() if line]


def epoch_ns(text: str) -> int:
    seconds, _, fraction = text.partition(".")
    return int(seconds) * SECOND + int(fraction.ljust(9, "0")[:9])


def tshark_time(text: str) -> float:
    """tshark's absolute time ("Nov 14, 2023 22:13:20.250000000 UTC", or NULL for 0) in Unix seconds."""
    if text == "NULL":
        return 0.0
    m = re.fullmatch(r"(\w+ +\d+, \d+ \d+:\d+:\d+)\.(\d+) UTC", text)
    assert m is not None, text
    whole = datetime.strptime(m[1], "%b %d, %Y %H:%M:%S").replace(tzinfo=UTC).timestamp()
    return whole + int(m[2]) / 10 ** len(m[2])


def signed8(text: str) -> int:
    value = int(text)
    return value - 256 if value > 127 else value


def check_with_tshark(e: dict[str, Any], t: dict[str, str]) -> None:
    assert int(t["ntp.flags.vn"]) == e["version"]
    assert int(t["ntp.flags.mode"]) == e["mode"]
    if e["mode"] <= 5:
        assert int(t["ntp.flags.li"]) == e["leap"]
        assert int(t["ntp.stratum"]) == e["stratum"]
        assert signed8(t["ntp.ppoll"]) == e["poll"]
        assert signed8(t["ntp.precision"]) == e["precision"]
        assert int(t["ntp.rootdelay"]) / 65536 == e["root_delay"]
        assert int(t["ntp.rootdispersion"]) / 65536 == e["root_disp"]
        ref = bytes.fromhex(t["ntp.refid"])
        if e["stratum"] <= 1:
            assert ref.rstrip(b"\x00").decode() == e["ref_id"]
        else:
            assert ".".join(str(b) for b in ref) == e["ref_id"]
        for theirs, ours in (
            ("reftime", "ref_time"),
            ("org", "org_time"),
            ("rec", "rec_time"),
            ("xmt", "xmt_time"),
        ):
            assert tshark_time(t[f"ntp.{theirs}"]) == pytest.approx(e[ours], abs=1e-6)
        assert (int(t["ntp.keyid"], 16) if t["ntp.keyid"] else None) == e["key_id"]
        assert (len(bytes.fromhex(t["ntp.mac"])) if t["ntp.mac"] else None) == e["mac_len"]
        assert len([v for v in t["ntp.ext.type"].split(",") if v]) == e["num_exts"]
    elif e["mode"] == 6:
        assert bool(int(t["ntp.ctrl.flags2.r"])) == e["response"]
        assert bool(int(t["ntp.ctrl.flags2.error"])) == e["error"]
        assert bool(int(t["ntp.ctrl.flags2.more"])) == e["more"]
        assert int(t["ntp.ctrl.flags2.opcode"]) == e["opcode"]
        assert int(t["ntp.ctrl.sequence"]) == e["sequence"]
        assert int(t["ntp.ctrl.status"], 0) == e["status"]
        assert int(t["ntp.ctrl.associd"]) == e["association_id"]
        assert int(t["ntp.ctrl.offset"]) == e["offset"]
        assert int(t["ntp.ctrl.count"]) == e["count"]
    else:
        assert bool(int(t["ntp.priv.flags.r"], 0)) == e["response"]
        assert bool(int(t["ntp.priv.flags.more"], 0)) == e["more"]
        assert bool(int(t["ntp.priv.auth"], 0)) == e["auth"]
        assert int(t["ntp.priv.seq"], 0) == e["sequence"]
        assert int(t["ntp.priv.impl"], 0) == e["implementation"]
        assert int(t["ntp.priv.reqcode"], 0) == e["request_code"]
        assert int(t["ntp.priv.err"], 0) == e["err"]
        assert int(t["ntp.priv.numitems"], 0) == e["nitems"]
        assert int(t["ntp.priv.itemsize"], 0) == e["item_size"]


def test_built_capture_against_tshark(tshark: str, tmp_path: Path) -> None:
    packets = [udp(m, sport=123 if i % 2 else 50123) for i, m in enumerate(BUILT)]
    packets.append(udp(BUILT[0], sport=40000, dport=4123))  # NTP on another port: found by content
    capture = write_pcap(tmp_path / "ntp.pcap", packets)
    run = run_capture(capture, tmp_path / "out")
    assert run.weirds() == []
    events = run.rows("ntp")
    frames = tshark_rows(tshark, capture)
    assert len(events) == len(frames) == len(BUILT) + 1
    by_time = {epoch_ns(t["frame.time_epoch"]): t for t in frames}
    for e in events:
        check_with_tshark(e, by_time[e["ts"]])
    events.sort(key=lambda e: e["ts"])
    # Values the specification fixes (independent of tshark).
    assert events[0]["mode_name"] == "client"
    assert events[0]["xmt_time"] == pytest.approx(T0, abs=1e-6)
    assert (events[1]["ref_id"], events[1]["root_delay"], events[1]["root_disp"]) == (
        "192.0.2.7",
        1 / 64,
        0.5,
    )
    assert events[2]["ref_id"] == "GPS"
    assert (events[3]["ref_id"], events[3]["leap"], events[3]["ref_time"]) == ("RATE", 3, 0.0)
    assert (events[4]["key_id"], events[4]["mac_len"], events[4]["version"]) == (42, 16, 3)
    assert (events[6]["num_exts"], events[6]["key_id"]) == (1, 42)
    assert (events[8]["opcode_name"], events[8]["count"], events[8]["response"]) == ("READVAR", 34, True)
    monlist = [(e["request_code"], e["response"], e["monlist"]) for e in events if e["mode"] == 7]
    assert monlist == [(42, False, True), (42, True, True), (1, False, False)]
    assert events[-1]["resp_p"] == 4123


def test_scapy_ntp_header_decodes_alike() -> None:
    """A packet built by scapy's NTP layer (another independent encoder) decodes to its inputs."""
    built = NTPHeader(
        leap=1,
        version=4,
        mode=4,
        stratum=2,
        poll=10,
        precision=-18,
        delay=0.25,
        dispersion=0.125,
        id="198.51.100.3",
        ref=3_900_000_000.5,
        orig=3_900_000_001.0,
        recv=3_900_000_002.0,
        sent=3_900_000_003.0,
    )
    e = Collector().parse(bytes(built)).one()
    assert (e.leap, e.version, e.mode_name, e.stratum, e.poll, e.precision) == (1, 4, "server", 2, 10, -18)
    assert (e.root_delay, e.root_disp, e.ref_id) == (0.25, 0.125, "198.51.100.3")
    assert e.ref_time == pytest.approx(3_900_000_000.5 - NTP_EPOCH_OFFSET)
    assert e.xmt_time == pytest.approx(3_900_000_003.0 - NTP_EPOCH_OFFSET)


# ---------------------------------------------------------------------- recognition


@pytest.mark.parametrize(
    ("data", "ports", "verdict"),
    [
        (BUILT[0], (50123, 123), Verdict.YES),
        (BUILT[1], (40000, 4123), Verdict.YES),
        (BUILT[4], (40000, 4123), Verdict.YES),  # with a MAC
        (BUILT[8], (50123, 123), Verdict.YES),  # control response (ntpq's version 2)
        (BUILT[8], (40000, 4123), Verdict.NO),  # ... version 2 is only believed on port 123
        (control(1, vn=4), (40000, 4123), Verdict.YES),
        (BUILT[9], (50123, 123), Verdict.YES),  # monlist request on 123
        (BUILT[9], (40000, 4123), Verdict.NO),  # mode 7 only believed on port 123
        (BUILT[0][:47], (50123, 123), Verdict.NO),
        (BUILT[0] + b"\x00" * 5, (50123, 123), Verdict.NO),  # 5 extra bytes: no valid layout
        (packet(stratum=200), (50123, 123), Verdict.NO),
        (packet(vn=0), (50123, 123), Verdict.NO),
        (packet(vn=2, mode=3), (40000, 4123), Verdict.NO),  # old versions only on port 123
        (packet(poll=90), (40000, 4123), Verdict.NO),
        (control(20), (50123, 123), Verdict.NO),  # an opcode ntpd does not define
        (private(42, impl=9), (50123, 123), Verdict.NO),
        (
            bytes.fromhex("1234010000010000000000000377777706676f6f676c6503636f6d0000010001"),
            (40000, 123),
            Verdict.NO,
        ),
        (
            b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n',
            (40000, 123),
            Verdict.NO,
        ),
    ],
)
def test_recognize(data: bytes, ports: tuple[int, int], verdict: Verdict) -> None:
    assert NtpDissector.recognize(data, Transport.UDP, *ports) == verdict
    assert NtpDissector.recognize(data, Transport.TCP, *ports) == Verdict.NO


# ---------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("data", "weird", "events"),
    [
        (b"", "ntp_truncated", 0),
        (BUILT[0][:30], "ntp_truncated", 0),
        (control(2)[:10], "ntp_truncated", 0),
        (control(2, data=b"abcd")[:14], "ntp_truncated", 1),
        (private(42)[:6], "ntp_truncated", 0),
        (private(42, response=True, nitems=3, size=72, data=bytes(72)), "ntp_truncated", 1),
        (packet(vn=0), "ntp_bad_version", 1),
        (packet(vn=6), "ntp_bad_version", 1),
        (packet(mode=0), "ntp_bad_mode", 1),
        (packet(tail=bytes(7)), "ntp_bad_extension", 1),
        (packet(tail=struct.pack(">HH", 1, 10) + bytes(30)), "ntp_bad_extension", 1),
        (packet(tail=struct.pack(">HH", 1, 400) + bytes(30)), "ntp_bad_extension", 1),
        (packet(tail=struct.pack(">HH", 1, 16) + bytes(12) + bytes(10)), "ntp_bad_extension", 1),
        (packet(tail=(struct.pack(">HH", 1, 16) + bytes(12)) * 70 + MAC), "ntp_bad_extension", 1),
    ],
)
def test_weirds(data: bytes, weird: str, events: int) -> None:
    col = Collector().parse(data)
    assert weird in col.weirds()
    assert len(col.messages()) == events


def test_reference_id_that_is_not_ascii_is_escaped() -> None:
    e = Collector().parse(packet(mode=4, stratum=1, ref=b"\xffPS\x00")).one()
    assert e.ref_id == "\\xffPS"


# ---------------------------------------------------------------------- fuzz


def _exercise(data: bytes) -> None:
    for ports in ((50123, 123), (40000, 4123)):
        NtpDissector.recognize(data, Transport.UDP, *ports)
    col = Collector().parse(data)
    assert len(col.messages()) <= 1
    assert len(col.events) <= 4


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _exercise(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(BUILT),
    st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=6),
    st.integers(0, 300),
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
    assert f"`{NtpMessage.log}`" in doc
    for f in dataclasses.fields(NtpMessage):
        assert f"| `{f.name}` |" in doc, f"NtpMessage.{f.name} is not documented"
    for name in sorted(set(re.findall(r'"(ntp_[a-z_]+)"', MODULE.read_text()))):
        assert f"`{name}`" in doc, f"weird {name} is not documented"
