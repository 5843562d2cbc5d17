"""DNS / mDNS / LLMNR dissector: tshark cross-checks on the corpus and on built captures, weirds, fuzz.

No Zeek log covers DNS in the corpus: ``../shared/corpus/dns/mdns.pcap`` (mDNS over IPv4 and IPv6) and
captures built here with scapy (unicast DNS over UDP and TCP, DNS-SD PTR/SRV/TXT announcements, EDNS,
the mDNS QU and cache-flush bits) are compared field by field with tshark's DNS dissector.
"""

from __future__ import annotations

import dataclasses
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
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRRMX, DNSRROPT, DNSRRSOA, DNSRRSRV
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from fieldward.pipeline import analyze
from fieldward.protocols.base import Event, FlowInfo, PduContext, ProtocolWeird, Transport, Verdict
from fieldward.protocols.dns import DnsDissector, DnsMessage, DnsRecord

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "dns.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "dns.py"
SECOND = 1_000_000_000

# ---------------------------------------------------------------------- helpers


def write_pcap(path: Path, packets: list[Packet], start: float = 1_700_000_000.0) -> Path:
    for i, packet in enumerate(packets):
        packet.time = start + i * 0.1
    wrpcap(str(path), packets)
    return path


@dataclass
class Run:
    logs: dict[str, list[dict[str, Any]]]

    def rows(self, log: str) -> list[dict[str, Any]]:
        return self.logs.get(log, [])

    def weirds(self) -> list[str]:
        return [r["name"] for r in self.rows("weird") if r["protocol"] == "dns"]


def run_capture(capture: Path, out: Path) -> Run:
    analyze([capture], out)
    logs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((out / "events").glob("*.parquet")):
        table = pq.read_table(path)
        table = table.set_column(table.schema.get_field_index("ts"), "ts", table["ts"].cast(pa.int64()))
        logs[path.stem] = table.to_pylist()
    return Run(logs)


class Collector:
    def __init__(self, transport: Transport = Transport.UDP, port: int = 53) -> None:
        self.flow = FlowInfo(1, transport, "10.0.0.1", 40000, "10.0.0.2", port)
        self.events: list[Event] = []
        self.ctx = PduContext(self.flow, "dns", self.events.append, self.events.append)

    def parse(self, data: bytes) -> Collector:
        DnsDissector(self.flow).parse(data, self.ctx)
        return self

    def messages(self) -> list[DnsMessage]:
        return [e for e in self.events if isinstance(e, DnsMessage)]

    def records(self) -> list[DnsRecord]:
        return [e for e in self.events if isinstance(e, DnsRecord)]

    def weirds(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, ProtocolWeird)]


def header(
    qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0x0100, tid: int = 0x1234
) -> bytes:
    return struct.pack(">HHHHHH", tid, flags, qd, an, ns, ar)


def qname(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


QUERY = header() + qname(b"plc", b"example", b"com") + struct.pack(">HH", 1, 1)

# ---------------------------------------------------------------------- tshark cross-check

MESSAGE_FIELDS = [
    "dns.id",
    "dns.flags.response",
    "dns.flags.opcode",
    "dns.flags.rcode",
    "dns.flags.authoritative",
    "dns.flags.truncated",
    "dns.flags.recdesired",
    "dns.flags.recavail",
    "dns.flags.z",
    "dns.flags.authenticated",
    "dns.flags.checkdisable",
    "dns.count.queries",
    "dns.count.answers",
    "dns.count.auth_rr",
    "dns.count.add_rr",
    "dns.qry.name",
    "dns.qry.type",
    "dns.qry.class",
    "dns.qry.qu",
    "dns.resp.name",
    "dns.resp.type",
    "dns.resp.class",
    "dns.resp.cache_flush",
    "dns.resp.ttl",
    "dns.a",
    "dns.aaaa",
    "dns.ptr.domain_name",
    "dns.cname",
    "dns.ns",
    "dns.mx.mail_exchange",
    "dns.srv.service",
    "dns.srv.proto",
    "dns.srv.name",
    "dns.srv.target",
    "dns.srv.port",
    "dns.txt",
]


def tshark_rows(tshark: str, capture: Path, *options: str) -> list[dict[str, str]]:
    names = ["frame.time_epoch", *MESSAGE_FIELDS]
    cmd = [tshark, "-r", str(capture), *options, "-Y", "dns or mdns", "-T", "fields", "-E", "separator=|"]
    cmd += ["-E", "occurrence=a", "-E", "aggregator=\x1f"]
    for name in names:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [dict(zip(names, line.split("|"), strict=True)) for line in out.splitlines() if line]


def epoch_ns(text: str) -> int:
    seconds, _, fraction = text.partition(".")
    return int(seconds) * SECOND + int(fraction.ljust(9, "0")[:9])


def values(text: str) -> list[str]:
    return text.split("\x1f") if text else []


def flag(text: str) -> bool:
    return text in ("1", "True")


def check_with_tshark(message: dict[str, Any], records: list[dict[str, Any]], t: dict[str, str]) -> None:
    """One message and its records agree with tshark's dissection of the frame."""
    assert int(t["dns.id"], 16) == message["trans_id"]
    assert flag(t["dns.flags.response"]) == message["qr"]
    assert int(t["dns.flags.opcode"]) == message["opcode"]
    assert int(t["dns.flags.rcode"] or "0") == message["rcode"]  # tshark shows no rcode in queries
    for name, ours in (
        ("authoritative", "aa"),
        ("truncated", "tc"),
        ("recdesired", "rd"),
        ("recavail", "ra"),
        ("z", "z"),
        ("authenticated", "ad"),
        ("checkdisable", "cd"),
    ):
        if t[f"dns.flags.{name}"]:  # tshark omits some flags in queries
            assert flag(t[f"dns.flags.{name}"]) == message[ours], name
    counts = [int(t[f"dns.count.{c}"]) for c in ("queries", "answers", "auth_rr", "add_rr")]
    assert counts == [message["qdcount"], message["ancount"], message["nscount"], message["arcount"]]
    questions = [r for r in records if r["section"] == "question"]
    rrs = [r for r in records if r["section"] != "question"]
    assert values(t["dns.qry.name"]) == [q["name"] for q in questions]
    assert [int(v) for v in values(t["dns.qry.type"])] == [q["rtype"] for q in questions]
    assert [int(v, 16) for v in values(t["dns.qry.class"])] == [q["rclass"] for q in questions]
    if message["variant"] == "mdns":
        assert [flag(v) for v in values(t["dns.qry.qu"])] == [q["qu"] for q in questions]
    if questions:
        first = questions[0]
        assert (message["query"], message["qtype"], message["qclass"]) == (
            first["name"],
            first["rtype"],
            first["rclass"],
        )
    # tshark splits an SRV owner name into service, protocol and name fields instead of dns.resp.name.
    assert values(t["dns.resp.name"]) == [r["name"] for r in rrs if r["rtype"] != 33]
    srv_names = zip(
        values(t["dns.srv.service"]), values(t["dns.srv.proto"]), values(t["dns.srv.name"]), strict=True
    )
    assert [".".join(parts) for parts in srv_names] == [r["name"] for r in rrs if r["rtype"] == 33]
    assert [int(v) for v in values(t["dns.resp.type"])] == [r["rtype"] for r in rrs]
    plain = [r for r in rrs if r["rtype"] != 41]  # tshark shows no class, TTL, cache flush for OPT
    assert [int(v, 16) for v in values(t["dns.resp.class"])] == [r["rclass"] for r in plain]
    assert [int(v) for v in values(t["dns.resp.ttl"])] == [r["ttl"] for r in plain]
    if message["variant"] == "mdns":
        assert [flag(v) for v in values(t["dns.resp.cache_flush"])] == [r["cache_flush"] for r in plain]

    def of(*types: int, key: str = "rdata") -> list[Any]:
        return [r[key] for r in rrs if r["rtype"] in types]

    assert values(t["dns.a"]) == of(1, key="address")
    assert values(t["dns.aaaa"]) == of(28, key="address")
    assert values(t["dns.ptr.domain_name"]) == of(12, key="target")
    assert values(t["dns.cname"]) == of(5, key="target")
    assert values(t["dns.ns"]) == of(2, key="target")
    assert values(t["dns.mx.mail_exchange"]) == of(15, key="target")
    assert values(t["dns.srv.target"]) == of(33, key="target")
    assert [int(v) for v in values(t["dns.srv.port"])] == of(33, key="port")
    assert values(t["dns.txt"]) == [s for txt in of(16, key="txt") for s in txt]
    answers = [r for r in rrs if r["section"] == "answer"]
    if message["qr"]:
        assert message["answers"] == [r["rdata"] for r in answers]
        assert message["ttls"] == [r["ttl"] for r in answers]


def check_capture(run: Run, frames: list[dict[str, str]]) -> None:
    messages = run.rows("dns")
    assert len(frames) == len(messages)
    by_time = {epoch_ns(t["frame.time_epoch"]): t for t in frames}
    records: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in run.rows("dns_rr"):
        records.setdefault((r["ts"], r["flow_id"]), []).append(r)
    for m in messages:
        check_with_tshark(m, records.get((m["ts"], m["flow_id"]), []), by_time[m["ts"]])


def test_tshark_mdns_corpus(corpus: Path, tshark: str, tmp_path: Path) -> None:
    capture = corpus / "dns" / "mdns.pcap"
    run = run_capture(capture, tmp_path / "out")
    assert len(run.rows("dns")) == 18  # 24 frames, 6 of them IGMP / MLD
    assert {m["variant"] for m in run.rows("dns")} == {"mdns"}
    assert run.weirds() == []
    check_capture(run, tshark_rows(tshark, capture))
    # The host announces its own name: A and AAAA records for it, and PTRs from its reverse names.
    names = {r["name"] for r in run.rows("dns_rr") if r["rtype"] in (1, 28) and r["section"] == "answer"}
    assert names == {"johanna-QEMU-Virtual-Machine.local"}


MAC = "02:00:00:00:00:01"


def udp_packet(message: Packet | bytes, src: str, dst: str, sport: int, dport: int) -> Packet:
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return (
        Ether(src=MAC)
        / ip
        / UDP(sport=sport, dport=dport)
        / (message if isinstance(message, Packet) else Raw(message))
    )


def built_packets() -> list[Packet]:
    query = DNS(id=0x4242, rd=1, qd=[DNSQR(qname="plc.example.com", qtype="A")], ar=[DNSRROPT(rclass=1232)])
    response = DNS(
        id=0x4242,
        qr=1,
        rd=1,
        ra=1,
        ad=1,
        qd=[DNSQR(qname="plc.example.com", qtype="A")],
        an=[
            DNSRR(rrname="plc.example.com", type="CNAME", ttl=300, rdata="plc01.example.com"),
            DNSRR(rrname="plc01.example.com", type="A", ttl=300, rdata="10.20.30.40"),
            DNSRR(rrname="plc01.example.com", type="AAAA", ttl=300, rdata="2001:db8::40"),
        ],
        ns=[
            DNSRR(rrname="example.com", type="NS", ttl=3600, rdata="ns1.example.com"),
            DNSRRSOA(rrname="example.com", ttl=3600, mname="ns1.example.com", rname="hostmaster.example.com"),
        ],
        ar=[DNSRRMX(rrname="example.com", ttl=60, preference=10, exchange="mail.example.com")],
    )
    nxdomain = DNS(id=0x77, qr=1, rcode=3, qd=[DNSQR(qname="nope.example.com", qtype="TXT")])
    browse = DNS(id=0, qd=[DNSQR(qname="_ipp._tcp.local", qtype="PTR", unicastresponse=1)])
    announce = DNS(
        id=0,
        qr=1,
        aa=1,
        an=[
            DNSRR(rrname="_ipp._tcp.local", type="PTR", ttl=4500, rdata="Line 4 Printer._ipp._tcp.local"),
            DNSRRSRV(
                rrname="Line 4 Printer._ipp._tcp.local",
                ttl=120,
                cacheflush=1,
                priority=0,
                weight=0,
                port=631,
                target="prn-4.local",
            ),
            DNSRR(
                rrname="Line 4 Printer._ipp._tcp.local",
                type="TXT",
                ttl=4500,
                cacheflush=1,
                rdata=[b"txtvers=1", b"ty=ACME LaserJet 9000", b"usb_MDL=LJ9000"],
            ),
        ],
        ar=[DNSRR(rrname="prn-4.local", type="A", ttl=120, cacheflush=1, rdata="10.20.30.41")],
    )
    return [
        udp_packet(query, "10.20.0.5", "10.20.0.1", 41000, 53),
        udp_packet(response, "10.20.0.1", "10.20.0.5", 53, 41000),
        udp_packet(nxdomain, "10.20.0.1", "10.20.0.5", 53, 41001),
        udp_packet(browse, "10.20.0.9", "224.0.0.251", 5353, 5353),
        udp_packet(announce, "fe80::1", "ff02::fb", 5353, 5353),
        # DNS on an unusual port: found by content.
        udp_packet(bytes(query), "10.20.0.5", "10.20.0.2", 41002, 5300),
    ]


def test_tshark_built_capture(tshark: str, tmp_path: Path) -> None:
    capture = write_pcap(tmp_path / "built.pcap", built_packets())
    run = run_capture(capture, tmp_path / "out")
    assert run.weirds() == []
    frames = tshark_rows(tshark, capture, "-d", "udp.port==5300,dns")
    check_capture(run, frames)
    frame = frames[4]
    messages = run.rows("dns")
    assert [m["variant"] for m in messages] == ["dns", "dns", "dns", "mdns", "mdns", "dns"]
    assert messages[0]["edns_udp_size"] == 1232
    assert messages[1]["answers"] == ["plc01.example.com", "10.20.30.40", "2001:db8::40"]
    assert (messages[2]["rcode_name"], messages[2]["qtype_name"]) == ("NXDOMAIN", "TXT")
    assert messages[3]["qu"] is True
    records = [r for r in run.rows("dns_rr") if r["variant"] == "mdns" and r["section"] != "question"]
    ptr, srv, txt, a = records
    # DNS-SD (RFC 6763): the service instance name is <Instance>.<Service>.<Domain>.
    assert (ptr["instance"], ptr["service"], ptr["target"]) == (
        "Line 4 Printer",
        "_ipp._tcp",
        "Line 4 Printer._ipp._tcp.local",
    )
    assert values(frame["dns.srv.service"]) == [srv["instance"]]
    assert (srv["instance"], srv["port"], srv["target"], srv["rdata"]) == (
        "Line 4 Printer",
        631,
        "prn-4.local",
        "0 0 631 prn-4.local",
    )
    assert txt["txt"] == ["txtvers=1", "ty=ACME LaserJet 9000", "usb_MDL=LJ9000"]
    assert (a["name"], a["address"], a["cache_flush"], ptr["cache_flush"]) == (
        "prn-4.local",
        "10.20.30.41",
        True,
        False,
    )
    soa = next(r for r in run.rows("dns_rr") if r["rtype_name"] == "SOA")
    assert soa["rdata"].startswith("ns1.example.com. hostmaster.example.com. ")


def test_tcp_dns(tshark: str, tmp_path: Path) -> None:
    """DNS over TCP: two-byte length prefix, a message split across segments, two in one segment."""
    query = bytes(DNS(id=9, rd=1, qd=[DNSQR(qname="historian.plant.local", qtype="AAAA")]))
    answer = bytes(
        DNS(
            id=9,
            qr=1,
            rd=1,
            ra=1,
            qd=[DNSQR(qname="historian.plant.local", qtype="AAAA")],
            an=[DNSRR(rrname="historian.plant.local", type="AAAA", ttl=60, rdata="fd00::10")],
        )
    )
    second = bytes(DNS(id=10, rd=1, qd=[DNSQR(qname="plc.plant.local", qtype="A")]))
    c, s = "10.30.0.5", "10.30.0.53"
    framed_q, framed_a = struct.pack(">H", len(query)) + query, struct.pack(">H", len(answer)) + answer
    framed_2 = struct.pack(">H", len(second)) + second

    def seg(client: bool, seq: int, ack: int, flags: str, data: bytes = b"") -> Packet:
        src, dst, sport, dport = (c, s, 40500, 53) if client else (s, c, 53, 40500)
        return (
            Ether()
            / IP(src=src, dst=dst)
            / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
            / data
        )

    packets = [
        seg(True, 99, 0, "S"),
        seg(False, 499, 100, "SA"),
        seg(True, 100, 500, "A"),
        seg(True, 100, 500, "PA", framed_q[:7]),
        seg(True, 107, 500, "PA", framed_q[7:] + framed_2),
        seg(False, 500, 100 + len(framed_q) + len(framed_2), "PA", framed_a),
        seg(True, 100 + len(framed_q) + len(framed_2), 500 + len(framed_a), "FA"),
        seg(False, 500 + len(framed_a), 101 + len(framed_q) + len(framed_2), "FA"),
    ]
    capture = write_pcap(tmp_path / "tcp.pcap", packets)
    run = run_capture(capture, tmp_path / "out")
    assert run.weirds() == []
    messages = run.rows("dns")
    assert sorted((m["trans_id"], m["qr"], m["query"]) for m in messages) == [
        (9, False, "historian.plant.local"),
        (9, True, "historian.plant.local"),
        (10, False, "plc.plant.local"),
    ]
    frames = tshark_rows(tshark, capture)
    assert [[int(v, 16) for v in values(t["dns.id"])] for t in frames] == [[9, 10], [9]]
    assert next(m for m in messages if m["qr"])["answers"] == ["fd00::10"]


def test_compression_pointers() -> None:
    """A hand-built response whose names use compression pointers (RFC 1035 4.1.4)."""
    message = (
        header(qd=1, an=2, flags=0x8180)
        + qname(b"hmi", b"plant", b"local")  # offset 12
        + struct.pack(">HH", 1, 1)
        + b"\xc0\x0c"
        + struct.pack(">HHIH", 5, 1, 30, 6)
        + b"\x03web\xc0\x10"  # web.plant.local (pointer to "plant")
        + b"\xc0\x2d"  # the CNAME target's name, at offset 45
        + struct.pack(">HHIH", 1, 1, 30, 4)
        + bytes([192, 168, 7, 7])
    )
    col = Collector().parse(message)
    assert col.weirds() == []
    assert [(r.name, r.rtype_name, r.rdata) for r in col.records()] == [
        ("hmi.plant.local", "A", None),
        ("hmi.plant.local", "CNAME", "web.plant.local"),
        ("web.plant.local", "A", "192.168.7.7"),
    ]


# ---------------------------------------------------------------------- recognition


@pytest.mark.parametrize(
    ("data", "transport", "ports", "verdict"),
    [
        (QUERY, Transport.UDP, (40000, 53), Verdict.YES),
        (QUERY, Transport.UDP, (40000, 5300), Verdict.YES),
        (QUERY + b"\x00", Transport.UDP, (40000, 53), Verdict.YES),  # trailing byte tolerated on 53 only
        (QUERY + b"\x00", Transport.UDP, (40000, 5300), Verdict.NO),
        (QUERY[:-2], Transport.UDP, (40000, 53), Verdict.NO),
        (header(qd=0), Transport.UDP, (40000, 53), Verdict.NO),  # no question, no record
        (header(flags=0x7800) + QUERY[12:], Transport.UDP, (40000, 53), Verdict.NO),  # opcode 15
        (bytes([0x1B]) + bytes(47), Transport.UDP, (123, 53), Verdict.NO),  # an NTP client packet
        (
            b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\r\n",
            Transport.UDP,
            (40000, 53),
            Verdict.NO,
        ),
        (bytes.fromhex("4401a1b2b3c4d5e6f708"), Transport.UDP, (40000, 53), Verdict.NO),  # CoAP
        (struct.pack(">H", len(QUERY)) + QUERY, Transport.TCP, (40000, 53), Verdict.YES),
        (struct.pack(">H", len(QUERY)) + QUERY, Transport.TCP, (40000, 5300), Verdict.YES),
        (struct.pack(">H", len(QUERY)) + QUERY[:10], Transport.TCP, (40000, 53), Verdict.MAYBE),
        (b"\x00", Transport.TCP, (40000, 53), Verdict.MAYBE),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Transport.TCP, (40000, 53), Verdict.NO),
        (b"\x00\x05hello", Transport.TCP, (40000, 53), Verdict.NO),
    ],
)
def test_recognize(data: bytes, transport: Transport, ports: tuple[int, int], verdict: Verdict) -> None:
    assert DnsDissector.recognize(data, transport, *ports) == verdict


def test_frame() -> None:
    d = DnsDissector(Collector(Transport.TCP).flow)
    framed = struct.pack(">H", len(QUERY)) + QUERY
    assert d.frame(framed + framed[:3], True) == len(framed)
    for cut in range(len(framed)):
        assert d.frame(framed[:cut], True) == 0
    assert d.frame(b"\x00\x05hello", True) == -1


# ---------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("data", "weird"),
    [
        (QUERY[:11], "dns_truncated_header"),
        (QUERY[:-1], "dns_truncated"),
        (header(qd=2) + QUERY[12:], "dns_truncated"),
        (header(qd=1) + b"\x05ab", "dns_truncated"),
        (header(qd=1) + b"\xc0\x0c" + struct.pack(">HH", 1, 1), "dns_bad_pointer"),  # points at itself
        (header(qd=1) + b"\xc0\x20" + struct.pack(">HH", 1, 1), "dns_bad_pointer"),  # points forward
        (header(qd=1) + b"\x41abc\x00" + struct.pack(">HH", 1, 1), "dns_bad_name"),  # label type 01
        (header(qd=1) + (b"\x3f" + b"a" * 63) * 5 + b"\x00" + struct.pack(">HH", 1, 1), "dns_bad_name"),
        (QUERY + b"\x00\x00", "dns_trailing_data"),
        (
            header(qd=0, an=1, flags=0x8000) + b"\x00" + struct.pack(">HHIH", 1, 1, 5, 3) + b"\x01\x02\x03",
            "dns_bad_rdata",
        ),
        (
            header(qd=0, an=1, flags=0x8000) + b"\x00" + struct.pack(">HHIH", 1, 1, 5, 9) + b"\x01",
            "dns_truncated",
        ),
        (header(qd=0, an=1, flags=0x8000) + b"\x00" + struct.pack(">HHI", 1, 1, 5), "dns_truncated"),
        (header(qd=600) + (b"\x00" + struct.pack(">HH", 1, 1)) * 600, "dns_too_many_records"),
        (header(flags=0x7800) + QUERY[12:], "dns_unknown_opcode"),
    ],
)
def test_weirds(data: bytes, weird: str) -> None:
    col = Collector().parse(data)
    assert weird in col.weirds()
    assert len(col.messages()) <= 1


def test_partial_message_keeps_what_was_read() -> None:
    col = Collector().parse(header(qd=2) + QUERY[12:])
    (message,) = col.messages()
    assert (message.qdcount, message.query) == (2, "plc.example.com")
    assert [r.name for r in col.records()] == ["plc.example.com"]


def test_rdata_that_is_not_utf8_is_escaped() -> None:
    txt = b"\x04k=\xff\xfe"
    data = header(qd=0, an=1, flags=0x8400) + b"\x00" + struct.pack(">HHIH", 16, 1, 5, len(txt)) + txt
    (record,) = Collector(port=5353).parse(data).records()
    assert record.txt == ["k=\\xff\\xfe"]
    assert record.name == "<Root>"


# ---------------------------------------------------------------------- fuzz

REAL = [bytes(p[DNS]) for p in built_packets() if DNS in p] + [QUERY]


def _exercise(data: bytes) -> None:
    for transport in (Transport.UDP, Transport.TCP):
        for ports in ((40000, 53), (40000, 5300)):
            DnsDissector.recognize(data, transport, *ports)
    for transport, port in ((Transport.UDP, 53), (Transport.UDP, 5353), (Transport.TCP, 53)):
        col = Collector(transport, port)
        d = DnsDissector(col.flow)
        if transport == Transport.TCP:
            size = d.frame(data, True)
            if size > 0:
                d.parse(data[:size], col.ctx)
        else:
            d.parse(data, col.ctx)
        assert len(col.messages()) <= 1
        assert len(col.events) <= 2 + 513


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _exercise(data)
    _exercise(struct.pack(">H", len(data)) + data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(REAL),
    st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=6),
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
    for event_type in (DnsMessage, DnsRecord):
        assert f"`{event_type.log}`" in doc
        for f in dataclasses.fields(event_type):
            assert f"| `{f.name}` |" in doc, f"{event_type.__name__}.{f.name} is not documented"
    weirds = set(re.findall(r'"(dns_[a-z_]+)"', MODULE.read_text())) | {"dns_unframeable_data"}
    for name in sorted(weirds):
        assert f"`{name}`" in doc, f"weird {name} is not documented"
