"""SSDP dissector: built datagrams cross-checked with tshark, weirds, recognition by content, fuzz.

The corpus has no SSDP capture. The datagrams below follow UPnP Device Architecture 2.0, sections 1.2
(NOTIFY ssdp:alive / ssdp:byebye) and 1.3 (M-SEARCH and its response). tshark's SSDP dissector, which
reads these as HTTP-formatted messages, is the reference for the start line and every header.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from fieldward.pipeline import analyze
from fieldward.protocols.base import Event, FlowInfo, PduContext, ProtocolWeird, Transport, Verdict
from fieldward.protocols.ssdp import SsdpDissector, SsdpMessage

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "ssdp.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "ssdp.py"
SECOND = 1_000_000_000
UUID = "2fac1234-31f8-11b4-a222-08002b34c003"

M_SEARCH = (
    b"M-SEARCH * HTTP/1.1\r\n"
    b"HOST: 239.255.255.250:1900\r\n"
    b'MAN: "ssdp:discover"\r\n'
    b"MX: 2\r\n"
    b"ST: urn:schemas-upnp-org:device:MediaServer:1\r\n"
    b"USER-AGENT: Windows/10.0 UPnP/2.0 FieldTest/1.0\r\n"
    b"\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"CACHE-CONTROL: max-age = 1800\r\n"
    b"DATE: Mon, 13 Nov 2023 22:13:20 GMT\r\n"
    b"EXT:\r\n"
    b"LOCATION: http://10.50.0.7:49152/description.xml\r\n"
    b"SERVER: Linux/4.9 UPnP/1.0 SIMATIC-HMI/15.1\r\n"
    b"ST: urn:schemas-upnp-org:device:MediaServer:1\r\n"
    b"USN: uuid:" + UUID.encode() + b"::urn:schemas-upnp-org:device:MediaServer:1\r\n"
    b"BOOTID.UPNP.ORG: 7\r\n"
    b"CONFIGID.UPNP.ORG: 1234\r\n"
    b"\r\n"
)
ALIVE = (
    b"NOTIFY * HTTP/1.1\r\n"
    b"HOST: 239.255.255.250:1900\r\n"
    b"CACHE-CONTROL: max-age=120\r\n"
    b"LOCATION: http://10.50.0.9:80/rootDesc.xml\r\n"
    b"NT: upnp:rootdevice\r\n"
    b"NTS: ssdp:alive\r\n"
    b"SERVER: RTOS/1.0 UPnP/1.0 IPCam/2.4.1\r\n"
    b"USN: uuid:" + UUID.encode() + b"::upnp:rootdevice\r\n"
    b"\r\n"
)
BYEBYE = (
    b"NOTIFY * HTTP/1.1\r\n"
    b"HOST: [FF02::C]:1900\r\n"
    b"NT: urn:schemas-upnp-org:service:ContentDirectory:1\r\n"
    b"NTS: ssdp:byebye\r\n"
    b"USN: uuid:" + UUID.encode() + b"::urn:schemas-upnp-org:service:ContentDirectory:1\r\n"
    b"\r\n"
)
BUILT = [M_SEARCH, RESPONSE, ALIVE, BYEBYE]

# ---------------------------------------------------------------------- helpers


def udp(payload: bytes, src: str, dst: str, sport: int, dport: int) -> Packet:
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return Ether() / ip / UDP(sport=sport, dport=dport) / Raw(payload)


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
        return [r["name"] for r in self.rows("weird") if r["protocol"] == "ssdp"]


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
        self.flow = FlowInfo(1, Transport.UDP, "10.0.0.1", 50000, "239.255.255.250", 1900)
        self.events: list[Event] = []
        self.ctx = PduContext(self.flow, "ssdp", self.events.append, self.events.append)

    def parse(self, data: bytes) -> Collector:
        SsdpDissector(self.flow).parse(data, self.ctx)
        return self

    def messages(self) -> list[SsdpMessage]:
        return [e for e in self.events if isinstance(e, SsdpMessage)]

    def one(self) -> SsdpMessage:
        (message,) = self.messages()
        return message

    def weirds(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, ProtocolWeird)]


# ---------------------------------------------------------------------- tshark cross-check

FIELDS = [
    "http.request.method",
    "http.request.uri",
    "http.request.version",
    "http.response.version",
    "http.response.code",
    "http.response.phrase",
    "http.host",
    "http.server",
    "http.user_agent",
    "http.location",
    "http.cache_control",
    "http.request.line",
    "http.response.line",
    "http.unknown_header",
]


def tshark_rows(tshark: str, capture: Path) -> list[dict[str, str]]:
    names = ["frame.time_epoch", *FIELDS]
    cmd = [tshark, "-r", str(capture), "-Y", "ssdp", "-T", "fields", "-E", "separator=\x1e"]
    cmd += ["-E", "occurrence=a", "-E", "aggregator=\x1f", "-d", "udp.port==5900,ssdp"]
    for name in names:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [dict(zip(names, line.split("\x1e"), strict=True)) for line in out.split("\n") if line]


def epoch_ns(text: str) -> int:
    seconds, _, fraction = text.partition(".")
    return int(seconds) * SECOND + int(fraction.ljust(9, "0")[:9])


def tshark_headers(t: dict[str, str]) -> dict[str, str]:
    """Every header tshark parsed: its raw header lines plus the ones it files under named fields."""
    headers: dict[str, str] = {}
    for key in ("http.request.line", "http.response.line", "http.unknown_header"):
        for line in filter(None, t[key].split("\x1f")):
            name, _, value = line.removesuffix("\\r\\n").partition(":")
            headers[name.strip().upper()] = value.strip()
    for key, name in (
        ("http.host", "HOST"),
        ("http.server", "SERVER"),
        ("http.user_agent", "USER-AGENT"),
        ("http.location", "LOCATION"),
        ("http.cache_control", "CACHE-CONTROL"),
    ):
        if t[key]:
            headers[name] = t[key]
    return headers


def check_with_tshark(e: dict[str, Any], t: dict[str, str]) -> None:
    if e["kind"] == "request":
        assert (t["http.request.method"], t["http.request.uri"], t["http.request.version"]) == (
            e["method"],
            e["request_uri"],
            e["version"],
        )
    else:
        assert (int(t["http.response.code"]), t["http.response.phrase"], t["http.response.version"]) == (
            e["status_code"],
            e["reason"],
            e["version"],
        )
    headers = tshark_headers(t)
    assert set(headers) == set(e["headers"])
    for name, ours in (
        ("HOST", "host"),
        ("ST", "st"),
        ("NT", "nt"),
        ("NTS", "nts"),
        ("USN", "usn"),
        ("SERVER", "server"),
        ("LOCATION", "location"),
        ("CACHE-CONTROL", "cache_control"),
        ("USER-AGENT", "user_agent"),
        ("MAN", "man"),
    ):
        assert headers.get(name) == e[ours], name
    for name, ours in (("MX", "mx"), ("BOOTID.UPNP.ORG", "boot_id"), ("CONFIGID.UPNP.ORG", "config_id")):
        assert (int(headers[name]) if name in headers else None) == e[ours], name


def test_built_capture_against_tshark(tshark: str, tmp_path: Path) -> None:
    packets = [
        udp(M_SEARCH, "10.50.0.5", "239.255.255.250", 50000, 1900),
        udp(RESPONSE, "10.50.0.7", "10.50.0.5", 1900, 50000),
        udp(ALIVE, "10.50.0.9", "239.255.255.250", 1900, 1900),
        udp(BYEBYE, "fe80::9", "ff02::c", 1900, 1900),
        udp(M_SEARCH, "10.50.0.5", "10.50.0.8", 50001, 5900),  # SSDP on another port: found by content
    ]
    capture = write_pcap(tmp_path / "ssdp.pcap", packets)
    run = run_capture(capture, tmp_path / "out")
    assert run.weirds() == []
    events = sorted(run.rows("ssdp"), key=lambda e: e["ts"])
    frames = tshark_rows(tshark, capture)
    assert len(events) == len(frames) == 5
    by_time = {epoch_ns(t["frame.time_epoch"]): t for t in frames}
    for e in events:
        check_with_tshark(e, by_time[e["ts"]])
    search, response, alive, byebye, elsewhere = events
    # Values the UPnP Device Architecture defines (independent of tshark).
    assert (search["method"], search["man"], search["mx"]) == ("M-SEARCH", '"ssdp:discover"', 2)
    assert (response["kind"], response["max_age"], response["uuid"]) == ("response", 1800, UUID)
    assert (response["boot_id"], response["config_id"]) == (7, 1234)
    assert (alive["nts"], alive["max_age"], alive["server"]) == (
        "ssdp:alive",
        120,
        "RTOS/1.0 UPnP/1.0 IPCam/2.4.1",
    )
    assert (byebye["nts"], byebye["host"], byebye["max_age"]) == ("ssdp:byebye", "[FF02::C]:1900", None)
    assert elsewhere["resp_p"] == 5900
    assert response["headers"] == [
        "CACHE-CONTROL",
        "DATE",
        "EXT",
        "LOCATION",
        "SERVER",
        "ST",
        "USN",
        "BOOTID.UPNP.ORG",
        "CONFIGID.UPNP.ORG",
    ]


def test_location_credentials_are_never_kept() -> None:
    message = ALIVE.replace(b"http://10.50.0.9", b"http://admin:s3cret@10.50.0.9")
    event = Collector().parse(message).one()
    assert event.location == "http://10.50.0.9:80/rootDesc.xml"
    assert event.location_credentials is True
    assert "s3cret" not in repr(event)
    assert Collector().parse(ALIVE).one().location_credentials is False


def test_lenient_line_endings_and_case() -> None:
    """Bare LF line ends and lower-case header names (seen on embedded stacks) are read alike."""
    message = ALIVE.replace(b"\r\n", b"\n").replace(b"NTS:", b"nts:").replace(b"USN:", b"Usn:")
    event = Collector().parse(message).one()
    assert (event.nts, event.uuid) == ("ssdp:alive", UUID)


# ---------------------------------------------------------------------- recognition


@pytest.mark.parametrize(
    ("data", "ports", "verdict"),
    [
        (M_SEARCH, (50000, 1900), Verdict.YES),
        (M_SEARCH, (50000, 5900), Verdict.YES),
        (ALIVE, (1900, 1900), Verdict.YES),
        (RESPONSE, (1900, 50000), Verdict.YES),
        (RESPONSE, (5900, 50000), Verdict.YES),  # a status line with ST/USN headers
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", (8080, 50000), Verdict.NO),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", (1900, 50000), Verdict.YES),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", (50000, 1900), Verdict.NO),  # not an SSDP method
        (b"M-SEARCH * HTTP/2\r\n\r\n", (50000, 1900), Verdict.NO),
        (b"M-SEARCH\r\n", (50000, 1900), Verdict.NO),
        (bytes.fromhex("1b") + bytes(47), (50000, 1900), Verdict.NO),  # NTP
        (bytes.fromhex("4401a1b2b3c4d5e6f708"), (50000, 1900), Verdict.NO),  # CoAP
    ],
)
def test_recognize(data: bytes, ports: tuple[int, int], verdict: Verdict) -> None:
    assert SsdpDissector.recognize(data, Transport.UDP, *ports) == verdict
    assert SsdpDissector.recognize(data, Transport.TCP, *ports) == Verdict.NO


# ---------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("data", "weird", "events"),
    [
        (b"\x00\x01garbage\r\n\r\n", "ssdp_bad_start_line", 0),
        (b"", "ssdp_bad_start_line", 0),
        (b"SUBSCRIBE /evt HTTP/1.1\r\nHOST: x\r\n\r\n", "ssdp_unknown_method", 1),
        (M_SEARCH.replace(b"MX: 2", b"MX 2"), "ssdp_bad_header", 1),
        (M_SEARCH.replace(b"ST: urn", b"S T: urn"), "ssdp_bad_header", 1),
        (M_SEARCH.replace(b"ST: urn", b"SX: urn"), "ssdp_missing_header", 1),
        (ALIVE.replace(b"NTS: ssdp:alive\r\n", b""), "ssdp_missing_header", 1),
        (RESPONSE.replace(b"USN", b"USX"), "ssdp_missing_header", 1),
        (M_SEARCH.replace(b"MX: 2", b"MX: two"), "ssdp_bad_value", 1),
        (RESPONSE.replace(b"BOOTID.UPNP.ORG: 7", b"BOOTID.UPNP.ORG: -7"), "ssdp_bad_value", 1),
        (ALIVE.replace(b"max-age=120", b"no-cache"), "ssdp_bad_value", 1),
        (M_SEARCH[:-2], "ssdp_unterminated_headers", 1),
        (b"NOTIFY * HTTP/1.1\r\n" + b"X-A: b\r\n" * 100 + b"\r\n", "ssdp_too_many_headers", 1),
    ],
)
def test_weirds(data: bytes, weird: str, events: int) -> None:
    col = Collector().parse(data)
    assert weird in col.weirds()
    assert len(col.messages()) == events


def test_values_are_bounded_and_escaped() -> None:
    event = Collector().parse(ALIVE.replace(b"RTOS/1.0", b"\xff" + b"A" * 5000)).one()
    assert event.server is not None
    assert len(event.server) == 1024
    assert event.server.startswith("\\xffAAA")


# ---------------------------------------------------------------------- fuzz


def _exercise(data: bytes) -> None:
    for ports in ((50000, 1900), (50000, 5900)):
        SsdpDissector.recognize(data, Transport.UDP, *ports)
    col = Collector().parse(data)
    assert len(col.messages()) <= 1
    assert len(col.events) <= 1 + 64 + 6


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _exercise(data)
    _exercise(b"NOTIFY * HTTP/1.1\r\n" + data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(BUILT),
    st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=8),
    st.integers(0, 600),
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
    assert f"`{SsdpMessage.log}`" in doc
    for f in dataclasses.fields(SsdpMessage):
        assert f"| `{f.name}` |" in doc, f"SsdpMessage.{f.name} is not documented"
    for name in sorted(set(re.findall(r'"(ssdp_[a-z_]+)"', MODULE.read_text()))):
        assert f"`{name}`" in doc, f"weird {name} is not documented"
