"""decode_batch: fields against tshark (corpus and synthetic captures of every link type), weird
codes for every truncation and malformation, dense/sparse/mixed-batch consistency, buffer edges, and
a hypothesis fuzz test (random and mutated packets never raise and keep every offset in bounds)."""

from __future__ import annotations

import ipaddress
import struct
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, LLC, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

from fieldward.capture import linktypes
from fieldward.capture.batch import PacketBatch
from fieldward.capture.reader import open_capture
from fieldward.decode.columns import (
    DECODE_WEIRD_CODES,
    DECODE_WEIRD_NAMES,
    TCP_ACK,
    TCP_NS,
    TCP_SYN,
    DecodedBatch,
)
from fieldward.decode.l2l4 import WEIRD_DETAILS, decode_batch
from fieldward.weird import WeirdLog

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
PAYLOAD = bytes(range(32, 127))

CORPUS_FILES = [
    "modbus/modbusSmall.pcap",
    "modbus/fuzz-72.pcap",
    "http/bro.org.pcap",
    "dns/mdns.pcap",
    "dhcp/dhcp.pcap",
    "arp/arp-who-has.pcap",
    "tls/ssl.v3.pcap",
    "dnp3/dnp3_udp_read.pcap",
    "dnp3/dnp3.pcap",
    "enip/enip_cip_example.pcap",
    "bacnet/bacnet_example.pcap",
    "s7comm/snap7.pcap",
    "snmp/snmpwalk-short.pcap",
    "mqtt/mqtt.pcap",
]

TSHARK_FIELDS = [
    "frame.cap_len",
    "frame.len",
    "eth.src",
    "eth.dst",
    "eth.type",
    "vlan.etype",
    "sll.src.eth",
    "sll.etype",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.ttl",
    "ip.len",
    "ip.hdr_len",
    "ip.id",
    "ip.dsfield.dscp",
    "ip.flags.mf",
    "ip.frag_offset",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.hlim",
    "ipv6.plen",
    "ipv6.tclass.dscp",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.flags",
    "tcp.window_size_value",
    "tcp.hdr_len",
    "tcp.options.mss_val",
    "tcp.options.wscale.shift",
    "tcp.options.sack_perm",
    "tcp.options.timestamp.tsval",
    "tcp.len",
    "tcp.payload",
    "udp.srcport",
    "udp.dstport",
    "udp.length",
    "udp.payload",
    "icmp.type",
    "icmp.code",
    "icmpv6.type",
    "icmpv6.code",
    "esp.spi",
    "arp.opcode",
    "arp.src.hw_mac",
    "arp.src.proto_ipv4",
    "arp.dst.hw_mac",
    "arp.dst.proto_ipv4",
]


# ------------------------------------------------------------------------------------- helpers


def write_pcap(
    path: Path, packets: Sequence[bytes], linktype: int, origlen: Sequence[int] | None = None
) -> None:
    """A classic little-endian microsecond pcap file."""
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        for i, pkt in enumerate(packets):
            wire = origlen[i] if origlen is not None else len(pkt)
            f.write(struct.pack("<IIII", 1_700_000_000 + i, i, len(pkt), wire))
            f.write(pkt)


def concat(decoded: list[DecodedBatch]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for f in fields(DecodedBatch):
        if f.name != "n":
            out[f.name] = np.concatenate([getattr(d, f.name) for d in decoded])
    return out


def decode_file(path: Path, batch_packets: int = 65536) -> tuple[list[bytes], dict[str, np.ndarray]]:
    """Every packet's bytes and the decoded columns of a whole capture (via open_capture)."""
    packets: list[bytes] = []
    decoded: list[DecodedBatch] = []
    with open_capture(path, batch_packets=batch_packets, weird=WeirdLog()) as reader:
        for batch in reader:
            decoded.append(decode_batch(batch))
            packets.extend(batch.packet(i) for i in range(len(batch)))
    return packets, concat(decoded)


def decode_one(
    pkts: Sequence[bytes | Packet], linktype: int = linktypes.ETHERNET, **kw: object
) -> DecodedBatch:
    batch = PacketBatch.from_packets([bytes(p) for p in pkts], linktype=linktype, **kw)  # type: ignore[arg-type]
    return decode_batch(batch)


def tshark_rows(tshark: str, path: Path) -> list[dict[str, str]]:
    cmd = [tshark, "-r", str(path), "-n", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    for name in TSHARK_FIELDS:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [dict(zip(TSHARK_FIELDS, line.split("\t"), strict=True)) for line in out.splitlines()]


def mac(text: str) -> int:
    return int(text.replace(":", ""), 16)


def mapped(ipv4: str) -> bytes:
    return ipaddress.IPv6Address("::ffff:" + ipv4).packed


def compare_with_tshark(
    rows: list[dict[str, str]], packets: list[bytes], c: dict[str, np.ndarray]
) -> list[str]:
    """Every decoded field tshark also shows; returns the mismatches (empty: all equal)."""
    assert len(rows) == len(packets)
    bad: list[str] = []

    def check(i: int, name: str, ours: object, theirs: object) -> None:
        if ours != theirs:
            bad.append(f"frame {i + 1} {name}: ours {ours!r} tshark {theirs!r}")

    def num(s: str) -> int:
        return int(s, 0)

    for i, r in enumerate(rows):
        complete = r["frame.cap_len"] == r["frame.len"]
        if r["eth.src"]:
            check(i, "eth_src", int(c["eth_src"][i]), mac(r["eth.src"]))
            check(i, "eth_dst", int(c["eth_dst"][i]), mac(r["eth.dst"]))
        if r["sll.src.eth"]:
            check(i, "eth_src", int(c["eth_src"][i]), mac(r["sll.src.eth"]))
        etype = r["vlan.etype"] or r["eth.type"] or r["sll.etype"]
        if etype:
            check(i, "ethertype", int(c["ethertype"][i]), num(etype))
        po, pl = int(c["payload_offset"][i]), int(c["payload_len"][i])
        payload = packets[i][po : po + pl].hex() if po >= 0 else ""
        if r["ip.src"]:
            check(i, "ip_version", int(c["ip_version"][i]), 4)
            check(i, "src_ip", bytes(c["src_ip"][i]), mapped(r["ip.src"]))
            check(i, "dst_ip", bytes(c["dst_ip"][i]), mapped(r["ip.dst"]))
            for ours, theirs in (
                ("ttl", "ip.ttl"),
                ("ip_total_len", "ip.len"),
                ("ip_header_len", "ip.hdr_len"),
                ("ip_id", "ip.id"),
                ("ip_dscp", "ip.dsfield.dscp"),
                ("ip_proto", "ip.proto"),
            ):
                check(i, ours, int(c[ours][i]), num(r[theirs]))
            check(i, "frag_offset", int(c["frag_offset"][i]), 8 * num(r["ip.frag_offset"]))  # 8-byte units
            check(i, "more_fragments", bool(c["more_fragments"][i]), r["ip.flags.mf"] in ("1", "True"))
            check(i, "ip_options", bool(c["ip_options"][i]), num(r["ip.hdr_len"]) > 20)
        elif r["ipv6.src"]:
            check(i, "ip_version", int(c["ip_version"][i]), 6)
            check(i, "src_ip", bytes(c["src_ip"][i]), ipaddress.IPv6Address(r["ipv6.src"]).packed)
            check(i, "dst_ip", bytes(c["dst_ip"][i]), ipaddress.IPv6Address(r["ipv6.dst"]).packed)
            check(i, "ttl", int(c["ttl"][i]), num(r["ipv6.hlim"]))
            check(i, "ip_total_len", int(c["ip_total_len"][i]), 40 + num(r["ipv6.plen"]))
            check(i, "ip_dscp", int(c["ip_dscp"][i]), num(r["ipv6.tclass.dscp"]))
        else:
            check(i, "ip_version", int(c["ip_version"][i]), 0)
        # An ICMP error quotes an IP header: tshark's first TCP/UDP fields are the quoted packet's.
        quoted = bool(r["icmp.type"] or r["icmpv6.type"])
        if r["tcp.srcport"] and not quoted:
            check(i, "ip_proto", int(c["ip_proto"][i]), 6)
            for ours, theirs in (
                ("sport", "tcp.srcport"),
                ("dport", "tcp.dstport"),
                ("tcp_seq", "tcp.seq_raw"),
                ("tcp_ack", "tcp.ack_raw"),
                ("tcp_window", "tcp.window_size_value"),
                ("tcp_header_len", "tcp.hdr_len"),
            ):
                check(i, ours, int(c[ours][i]), num(r[theirs]))
            check(i, "tcp_flags", int(c["tcp_flags"][i]), num(r["tcp.flags"]) & 0x1FF)
            mss = r["tcp.options.mss_val"]
            check(i, "tcp_mss", int(c["tcp_mss"][i]), num(mss) if mss else 0)
            shift = r["tcp.options.wscale.shift"]
            check(i, "tcp_wscale", int(c["tcp_wscale"][i]), num(shift) if shift else 0xFF)
            check(i, "tcp_sack_permitted", bool(c["tcp_sack_permitted"][i]), bool(r["tcp.options.sack_perm"]))
            check(
                i,
                "tcp_has_timestamps",
                bool(c["tcp_has_timestamps"][i]),
                bool(r["tcp.options.timestamp.tsval"]),
            )
            if complete:
                check(i, "payload_len (tcp)", pl, num(r["tcp.len"]))
                check(i, "payload (tcp)", payload, r["tcp.payload"].replace(":", ""))
        if r["udp.srcport"] and not quoted:
            check(i, "ip_proto", int(c["ip_proto"][i]), 17)
            check(i, "sport", int(c["sport"][i]), num(r["udp.srcport"]))
            check(i, "dport", int(c["dport"][i]), num(r["udp.dstport"]))
            if complete and not c["is_fragment"][i]:
                check(i, "payload_len (udp)", pl, num(r["udp.length"]) - 8)
                check(i, "payload (udp)", payload, r["udp.payload"].replace(":", ""))
        for proto in ("icmp", "icmpv6"):
            if r[f"{proto}.type"]:
                check(i, "ip_proto", int(c["ip_proto"][i]), 1 if proto == "icmp" else 58)
                check(i, "icmp_type", int(c["icmp_type"][i]), num(r[f"{proto}.type"]))
                check(i, "icmp_code", int(c["icmp_code"][i]), num(r[f"{proto}.code"]))
        if r["esp.spi"]:
            check(i, "ip_proto", int(c["ip_proto"][i]), 50)
        if r["arp.opcode"]:
            check(i, "arp_op", int(c["arp_op"][i]), num(r["arp.opcode"]))
            check(i, "arp_sha", int(c["arp_sha"][i]), mac(r["arp.src.hw_mac"]))
            check(i, "arp_tha", int(c["arp_tha"][i]), mac(r["arp.dst.hw_mac"]))
            check(i, "arp_spa", int(c["arp_spa"][i]), int(ipaddress.IPv4Address(r["arp.src.proto_ipv4"])))
            check(i, "arp_tpa", int(c["arp_tpa"][i]), int(ipaddress.IPv4Address(r["arp.dst.proto_ipv4"])))
    return bad


def check_invariants(batch: PacketBatch, d: DecodedBatch) -> None:
    """Shape, dtype and bounds invariants every DecodedBatch must satisfy."""
    n = len(batch)
    assert d.n == n
    for f in fields(DecodedBatch):
        if f.name == "n":
            continue
        arr = getattr(d, f.name)
        assert isinstance(arr, np.ndarray), f.name
        assert arr.shape[0] == n, f.name
    assert d.src_ip.shape == (n, 16)
    assert d.dst_ip.shape == (n, 16)
    cap = batch.caplen.astype(np.int64)
    for name in ("l3_offset", "l4_offset", "payload_offset"):
        off = getattr(d, name).astype(np.int64)
        assert ((off == -1) | ((off >= 0) & (off < cap))).all(), name
    po = d.payload_offset.astype(np.int64)
    pl = d.payload_len.astype(np.int64)
    assert (pl >= 0).all()
    assert ((po == -1) == (pl == 0)).all()
    assert (po + pl <= cap).all()
    has_l4 = d.l4_offset >= 0
    assert (d.l4_offset[has_l4] >= d.l3_offset[has_l4]).all()
    assert (d.l3_offset[has_l4] >= 0).all()
    with_payload = po >= 0
    assert (po[with_payload] >= d.l4_offset[with_payload]).all()
    assert (d.weird < len(DECODE_WEIRD_NAMES)).all()
    assert set(np.unique(d.ip_version).tolist()) <= {0, 4, 6}


def row(d: DecodedBatch, i: int) -> dict[str, object]:
    """One packet's decoded fields as Python values."""
    out: dict[str, object] = {}
    for f in fields(DecodedBatch):
        if f.name == "n":
            continue
        v = getattr(d, f.name)[i]
        out[f.name] = bytes(v) if f.name in ("src_ip", "dst_ip") else v.item()
    return out


def weird_name(d: DecodedBatch, i: int) -> str:
    return DECODE_WEIRD_NAMES[int(d.weird[i])]


# ------------------------------------------------------------------------ corpus against tshark


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_matches_tshark(corpus: Path, tshark: str, name: str) -> None:
    path = corpus / name
    packets, cols = decode_file(path)
    rows = tshark_rows(tshark, path)
    assert compare_with_tshark(rows, packets, cols) == []
    batch = PacketBatch.from_packets(packets)
    check_invariants(batch, decode_batch(batch))


def test_corpus_batch_split_invariance(corpus: Path) -> None:
    """Decoding in tiny batches gives exactly the columns of one big batch."""
    path = corpus / "http/bro.org.pcap"
    _, whole = decode_file(path)
    _, split = decode_file(path, batch_packets=7)
    for name, arr in whole.items():
        assert np.array_equal(arr, split[name]), name


# ------------------------------------------------------- synthetic captures of every link type


def ipv4_packets() -> list[Packet]:
    """IPv4 packets with the headers the corpus lacks: options, TCP options, ICMP, fragments."""
    syn_opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (11, 0)), ("NOP", None), ("WScale", 7)]
    return [
        IP(src="10.1.2.3", dst="10.9.8.7", tos=0xB8, ttl=33, id=4242)
        / TCP(sport=40000, dport=502, seq=123456789, ack=0, flags="S", window=64240, options=syn_opts),
        IP(src="10.1.2.3", dst="10.9.8.7")
        / TCP(
            sport=40000,
            dport=502,
            seq=5,
            ack=7,
            flags="PA",
            options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))],
        )
        / PAYLOAD,
        IP(src="10.1.2.3", dst="10.9.8.7")
        / TCP(sport=1, dport=2, flags="A", options=[("NOP", None), ("NOP", None), ("SAck", (1000, 2000))])
        / PAYLOAD[:10],
        IP(src="10.1.2.3", dst="10.9.8.7") / TCP(sport=1, dport=2, flags=0x1D2, window=1) / PAYLOAD[:3],
        IP(src="192.0.2.1", dst="192.0.2.2", options=[IPOption_RR(routers=["1.2.3.4", "5.6.7.8"])])
        / UDP(sport=5353, dport=53)
        / PAYLOAD,
        IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=47808, dport=47808) / PAYLOAD[:20],
        IP(src="192.0.2.1", dst="192.0.2.2") / ICMP(type=8, code=0, id=1, seq=2) / PAYLOAD[:16],
        IP(src="192.0.2.9", dst="192.0.2.1")
        / ICMP(type=3, code=3)
        / IP(src="192.0.2.1", dst="192.0.2.2")
        / UDP(sport=1000, dport=161),
        IP(src="192.0.2.1", dst="192.0.2.2", flags="MF", id=99)
        / UDP(sport=7, dport=9, len=2000)
        / PAYLOAD[:48],
        IP(src="192.0.2.1", dst="192.0.2.2", frag=100, id=99, proto=17) / Raw(PAYLOAD[:40]),
        IP(src="192.0.2.1", dst="192.0.2.2", proto=132) / Raw(PAYLOAD[:28]),
    ]


def ah_header(next_header: int) -> bytes:
    """IPv6 Authentication Header (RFC 4302 §2): length 4 -> (4 + 2) * 4 = 24 bytes."""
    return bytes([next_header, 4, 0, 0]) + struct.pack("!II", 0x1000, 1) + bytes(12)


def ipv6_packets() -> list[Packet]:
    """IPv6 packets: TCP options, extension header chains (incl. AH), fragments, ESP, ICMPv6."""
    a, b = "2001:db8::1", "2001:db8:0:1::2"
    return [
        IPv6(src=a, dst=b, tc=0xB8, hlim=7, fl=0x12345)
        / TCP(sport=443, dport=50000, flags="SA", options=[("MSS", 1220), ("WScale", 14)]),
        IPv6(src=a, dst=b)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting()
        / UDP(sport=1, dport=2)
        / PAYLOAD,
        IPv6(src=a, dst=b, nh=51)
        / Raw(ah_header(58) + bytes(ICMPv6EchoRequest(id=3, seq=4, data=PAYLOAD[:8]))),
        IPv6(src=a, dst=b)
        / IPv6ExtHdrFragment(offset=0, m=1, id=0xABCDEF)
        / UDP(sport=3, dport=4, len=3000)
        / PAYLOAD[:56],
        IPv6(src=a, dst=b) / IPv6ExtHdrFragment(offset=100, m=0, id=0xABCDEF, nh=17) / Raw(PAYLOAD[:30]),
        IPv6(src=a, dst=b, nh=50) / Raw(struct.pack("!II", 0x2000, 1) + PAYLOAD[:24]),
        IPv6(src=a, dst=b) / ICMPv6EchoRequest(id=1, seq=1, data=PAYLOAD[:20]),
        IPv6(src=a, dst=b, nh=59) / Raw(b""),
    ]


def ipv6_expect(p: Packet) -> tuple[int, int, int]:
    """(IPv6 header bytes incl. extension headers, extension header count, transport protocol)."""
    raw = bytes(p)
    nh, pos, count = raw[6], 40, 0
    while nh in (0, 43, 44, 51, 60):
        size = 8 if nh == 44 else (raw[pos + 1] + 2) * 4 if nh == 51 else (raw[pos + 1] + 1) * 8
        frag_later = nh == 44 and (int.from_bytes(raw[pos + 2 : pos + 4], "big") & 0xFFF8) != 0
        nh, pos, count = raw[pos], pos + size, count + 1
        if frag_later:
            break
    return pos, count, nh


def sll(etype: int, src: str = MAC_A) -> bytes:
    return (
        struct.pack("!HHH", 0, 1, 6)
        + bytes.fromhex(src.replace(":", ""))
        + b"\0\0"
        + struct.pack("!H", etype)
    )


def sll2(etype: int, src: str = MAC_A) -> bytes:
    return struct.pack("!HHIHBB", etype, 0, 3, 1, 0, 6) + bytes.fromhex(src.replace(":", "")) + b"\0\0"


Wrap = Callable[[Packet], bytes]


def ethertype_of(p: Packet) -> int:
    return 0x0800 if p.version == 4 else 0x86DD


LINK_CASES: dict[str, tuple[int, Wrap, int, int, int, bool]] = {
    # name: (linktype, wrap, l3 offset, vlan, vlan_inner, carries eth_src)
    "ethernet": (linktypes.ETHERNET, lambda p: bytes(Ether(src=MAC_A, dst=MAC_B) / p), 14, 0, 0, True),
    "vlan": (
        linktypes.ETHERNET,
        lambda p: bytes(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=10, prio=5) / p),
        18,
        10,
        0,
        True,
    ),
    "qinq": (
        linktypes.ETHERNET,
        lambda p: bytes(Ether(src=MAC_A, dst=MAC_B) / Dot1AD(vlan=100) / Dot1Q(vlan=200) / p),
        22,
        100,
        200,
        True,
    ),
    "qinq_9100": (
        linktypes.ETHERNET,
        lambda p: bytes(Ether(src=MAC_A, dst=MAC_B, type=0x9100) / Dot1Q(vlan=4000) / p),
        18,
        4000,
        0,
        True,
    ),
    "sll": (linktypes.LINUX_SLL, lambda p: sll(ethertype_of(p)) + bytes(p), 16, 0, 0, True),
    "sll2": (linktypes.LINUX_SLL2, lambda p: sll2(ethertype_of(p)) + bytes(p), 20, 0, 0, True),
    "null_le": (
        linktypes.NULL,
        lambda p: struct.pack("<I", 2 if p.version == 4 else 30) + bytes(p),
        4,
        0,
        0,
        False,
    ),
    "null_be": (
        linktypes.NULL,
        lambda p: struct.pack(">I", 2 if p.version == 4 else 24) + bytes(p),
        4,
        0,
        0,
        False,
    ),
    "loop": (
        linktypes.LOOP,
        lambda p: struct.pack(">I", 2 if p.version == 4 else 28) + bytes(p),
        4,
        0,
        0,
        False,
    ),
    "raw": (linktypes.RAW, bytes, 0, 0, 0, False),
    "raw_14": (linktypes.RAW_BSD, bytes, 0, 0, 0, False),
    "ipv4": (linktypes.IPV4, bytes, 0, 0, 0, False),
    "ipv6": (linktypes.IPV6, bytes, 0, 0, 0, False),
}


@pytest.mark.parametrize("case", list(LINK_CASES))
def test_link_types_match_tshark(tmp_path: Path, tshark: str, case: str) -> None:
    linktype, wrap, l3, vlan, inner, has_mac = LINK_CASES[case]
    l3_packets = ipv4_packets() if case != "ipv6" else []
    l3_packets += ipv6_packets() if case != "ipv4" else []
    packets = [wrap(p) for p in l3_packets]
    path = tmp_path / f"{case}.pcap"
    write_pcap(path, packets, linktype)
    got, c = decode_file(path)
    assert got == packets
    assert compare_with_tshark(tshark_rows(tshark, path), packets, c) == []
    n = len(packets)
    assert (c["l3_offset"] == l3).all()
    assert (c["vlan"] == vlan).all()
    assert (c["vlan_inner"] == inner).all()
    assert (c["weird"] == 0).all(), [weird_name_of(x) for x in c["weird"]]
    assert (c["eth_src"] == (mac(MAC_A) if has_mac else 0)).all()
    assert (c["ethertype"] == [ethertype_of(p) for p in l3_packets]).all()
    # What tshark does not show: the IPv6 chain walk and the offsets.
    for i, p in enumerate(l3_packets):
        if p.version == 6:
            hlen, count, proto = ipv6_expect(p)
            assert c["ip_header_len"][i] == hlen, i
            assert c["ipv6_ext_headers"][i] == count, i
            assert c["ip_proto"][i] == proto, i
        later_fragment = bool(c["is_fragment"][i]) and c["frag_offset"][i] > 0
        has_l4 = not later_fragment and c["ip_proto"][i] != 59
        assert c["l4_offset"][i] == (l3 + c["ip_header_len"][i] if has_l4 else -1), i
    assert n == len(l3_packets)


def weird_name_of(code: int) -> str:
    return DECODE_WEIRD_NAMES[int(code)]


def test_ethernet_extras_and_fields() -> None:
    """ARP, 802.3/LLC, fragment fields, TCP options and payload placement on Ethernet."""
    arp = Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=2, hwsrc=MAC_A, psrc="10.0.0.1", hwdst=MAC_B, pdst="10.0.0.2"
    )
    llc = Ether(src=MAC_A, dst=MAC_B, type=3 + 35) / LLC(dsap=0x42, ssap=0x42, ctrl=3) / Raw(b"\0" * 35)
    frag6 = Ether() / IPv6() / IPv6ExtHdrFragment(offset=0x10, m=1, id=0x01020304, nh=17) / Raw(bytes(16))
    syn = Ether() / IP() / TCP(flags="S", options=[("MSS", 536), ("SAckOK", b""), ("WScale", 2)])
    d = decode_one([arp, llc, frag6, syn])
    a = row(d, 0)
    assert (a["ethertype"], a["arp_op"], a["l3_offset"]) == (0x0806, 2, 14)
    assert (a["arp_sha"], a["arp_tha"]) == (mac(MAC_A), mac(MAC_B))
    assert (a["arp_spa"], a["arp_tpa"]) == (0x0A000001, 0x0A000002)
    assert a["ip_version"] == 0
    assert a["l4_offset"] == -1
    assert row(d, 1)["ethertype"] == len(bytes(llc)) - 14  # 802.3 length field, reported as is
    assert row(d, 1)["l3_offset"] == 14
    f = row(d, 2)
    assert (f["is_fragment"], f["more_fragments"], f["frag_offset"], f["ip_id"]) == (
        True,
        True,
        0x10 * 8,
        0x01020304,
    )
    assert (f["ip_proto"], f["l4_offset"], f["ipv6_ext_headers"], f["ip_header_len"]) == (17, -1, 1, 48)
    s = row(d, 3)
    assert (s["tcp_mss"], s["tcp_wscale"], s["tcp_sack_permitted"], s["tcp_has_timestamps"]) == (
        536,
        2,
        True,
        False,
    )
    assert s["tcp_flags"] == TCP_SYN
    assert s["tcp_header_len"] == 32
    assert s["payload_offset"] == -1
    assert s["payload_len"] == 0


def test_tcp_flags_include_ns() -> None:
    d = decode_one([Ether() / IP() / TCP(flags=0x110)])
    assert d.tcp_flags[0] == TCP_NS | TCP_ACK


def test_ethernet_padding_is_not_payload() -> None:
    """A 60-byte minimum frame: the 6 padding bytes after the IP packet never count as payload."""
    pkt = bytes(Ether() / IP() / UDP(sport=1, dport=2) / b"ab") + b"\xee" * 16
    tcp = bytes(Ether() / IP() / TCP() / b"xyz") + b"\xee" * 6
    d = decode_one([pkt, tcp])
    assert (d.payload_offset[0], d.payload_len[0]) == (42, 2)
    assert (d.payload_offset[1], d.payload_len[1]) == (54, 3)
    assert (d.weird == 0).all()


def test_tso_zero_total_length_uses_captured_length() -> None:
    raw = bytearray(bytes(Ether() / IP() / TCP(sport=5, dport=6) / PAYLOAD))
    raw[16:18] = b"\0\0"
    d = decode_one([bytes(raw)])
    assert weird_name(d, 0) == "ipv4_total_length_zero"
    assert (d.sport[0], d.dport[0], d.ip_total_len[0]) == (5, 6, 0)
    assert (d.payload_offset[0], d.payload_len[0]) == (54, len(PAYLOAD))


def test_other_protocol_payload_is_ip_payload() -> None:
    d = decode_one([Ether() / IP(proto=89) / Raw(b"ospf-ish"), Ether() / IPv6(nh=50) / Raw(b"espespesp")])
    assert (d.l4_offset[0], d.payload_offset[0], d.payload_len[0]) == (34, 34, 8)
    assert (d.ip_proto[1], d.l4_offset[1], d.payload_offset[1], d.payload_len[1]) == (50, 54, 54, 9)
    assert (d.sport == 0).all()


def test_ipv6_extension_headers_beyond_the_usual() -> None:
    """Mobility (135), HIP (139) and shim6 (140) are walked like the others; 59 ends the walk."""
    chain = bytes([135, 0]) + bytes(6) + bytes([139, 1]) + bytes(14) + bytes([140, 0]) + bytes(6)
    chain += bytes([6, 0]) + bytes(6)  # destination options -> TCP
    pkt = IPv6(nh=60) / Raw(chain + bytes(TCP(sport=9, dport=10)))
    pkt59 = IPv6(nh=60) / Raw(bytes([59, 0]) + bytes(6))
    d = decode_one([bytes(pkt), bytes(pkt59)], linktype=linktypes.RAW)
    assert (d.ipv6_ext_headers[0], d.ip_header_len[0], d.ip_proto[0]) == (4, 40 + 8 + 8 + 16 + 8 + 8 - 8, 6)
    assert (d.sport[0], d.dport[0], d.l4_offset[0]) == (9, 10, 80)
    assert (d.ipv6_ext_headers[1], d.ip_proto[1], d.l4_offset[1]) == (1, 59, -1)
    assert (d.weird == 0).all()


def test_tcp_option_walk_bad_lengths() -> None:
    """Options before a bad one are kept; a bad length is tcp_bad_option; the header still decodes."""

    def tcp_with(opts: bytes) -> bytes:
        pad = opts + bytes(-len(opts) % 4)
        hdr = TCP(sport=1, dport=2, flags="S", dataofs=5 + len(pad) // 4)
        return bytes(Ether() / IP(proto=6) / Raw(bytes(hdr)[:20] + pad + b"data"))

    cases = {
        b"\x02\x04\x05\xb4\x01\x03\x03\x05": (1460, 5, False),  # MSS, NOP, WS
        b"\x02\x04\x05\xb4\x03\x02\x05\x00": (1460, 0xFF, True),  # WS with length 2: bad
        b"\x02\x04\x05\xb4\x08\x00": (1460, 0xFF, True),  # length 0: bad
        b"\x03\x03\x07\x02\x04\x05\xb4\x04": (1460, 7, True),  # SACK-permitted with length 0 (padding)
        b"\x02\x03\x05\x00": (0, 0xFF, True),  # MSS with length 3
        b"\x01\x00\x02\x04\x05\xb4": (0, 0xFF, False),  # EOL ends the list: the MSS after it is ignored
        b"\x1e\x06\x00\x00\x00\x00\x03\x03\x09": (0, 9, False),  # unknown kind 30 skipped by length
    }
    d = decode_one([tcp_with(o) for o in cases])
    for i, (opts, (mss, ws, bad)) in enumerate(cases.items()):
        assert (d.tcp_mss[i], d.tcp_wscale[i]) == (mss, ws), opts.hex()
        assert weird_name(d, i) == ("tcp_bad_option" if bad else ""), opts.hex()
        assert d.sport[i] == 1
        assert d.payload_len[i] == 4


# -------------------------------------------------------------- truncation and malformations


def ipv4_tcp_frame() -> bytes:
    return bytes(
        Ether(src=MAC_A, dst=MAC_B)
        / IP(src="10.0.0.1", dst="10.0.0.2", tos=0x20, id=7, ttl=9)
        / TCP(
            sport=1000, dport=2000, seq=3, ack=4, flags="PA", window=5, options=[("MSS", 1400), ("WScale", 3)]
        )
        / PAYLOAD[:10]
    )


# field -> byte range [start, end) in ipv4_tcp_frame(); decoded iff captured up to ``end``.
IPV4_TCP_FIELDS: dict[str, int] = {
    "eth_dst": 6,
    "eth_src": 12,
    "ethertype": 14,
    "ip_header_len": 15,
    "ip_dscp": 16,
    "ip_total_len": 18,
    "ip_id": 20,
    "frag_offset": 22,
    "ttl": 23,
    "ip_proto": 24,
    "src_ip": 30,
    "dst_ip": 34,
    "sport": 36,
    "dport": 38,
    "tcp_seq": 42,
    "tcp_ack": 46,
    "tcp_header_len": 47,
    "tcp_flags": 48,
    "tcp_window": 50,
}


@pytest.mark.parametrize("short_wire", [False, True], ids=["snaplen", "short-frame"])
def test_truncation_sweep_ipv4_tcp(short_wire: bool) -> None:
    """Cut one frame at every length: right weird code, every field decoded up to the cut."""
    full = ipv4_tcp_frame()
    ref = row(decode_one([full]), 0)
    cuts = list(range(len(full) + 1))
    origlen = cuts if short_wire else [len(full)] * len(cuts)
    d = decode_one([full[:k] for k in cuts], origlen=origlen)
    check_invariants(PacketBatch.from_packets([full[:k] for k in cuts], origlen=origlen), d)
    tcp_end = 34 + 28  # MSS (4) + WScale (3) + EOL padding (1)
    for k in cuts:
        got = row(d, k)
        for name, end in IPV4_TCP_FIELDS.items():
            want = ref[name] if k >= end else (bytes(16) if name.endswith("_ip") else 0)
            assert got[name] == want, (k, name)
        if k < 14:
            want_weird = "truncated_l2"
        elif k < 34:
            want_weird = "truncated_ipv4"
        elif short_wire and k < len(full):
            want_weird = "ipv4_truncated_payload"
        elif k < tcp_end:
            want_weird = "truncated_tcp"
        else:
            want_weird = ""
        assert weird_name(d, k) == want_weird, k
        assert got["ip_version"] == (4 if k > 14 else 0), k
        assert got["l3_offset"] == (14 if k > 14 else -1), k
        assert got["l4_offset"] == (34 if k > 34 else -1), k
        assert got["tcp_mss"] == (1400 if k >= tcp_end else 0), k
        assert got["tcp_wscale"] == (3 if k >= tcp_end else 0xFF), k
        assert got["payload_offset"] == (tcp_end if k > tcp_end else -1), k
        assert got["payload_len"] == max(0, k - tcp_end), k


def test_truncation_sweep_vlan_ipv6_udp() -> None:
    full = bytes(
        Ether()
        / Dot1Q(vlan=7)
        / Dot1Q(vlan=8)
        / IPv6()
        / IPv6ExtHdrDestOpt()
        / UDP(sport=5, dport=6)
        / b"hey"
    )
    cuts = list(range(len(full) + 1))
    d = decode_one([full[:k] for k in cuts], origlen=[len(full)] * len(cuts))
    for k in cuts:
        want = (
            "truncated_l2"
            if k < 14
            else "truncated_vlan"
            if k < 22
            else "truncated_ipv6"
            if k < 62
            else "ipv6_truncated_extension_header"
            if k < 70
            else "truncated_udp"
            if k < 78
            else ""
        )
        assert weird_name(d, k) == want, k
        assert d.vlan[k] == (7 if k >= 18 else 0), k
        assert d.vlan_inner[k] == (8 if k >= 22 else 0), k
        assert d.ip_version[k] == (6 if k > 22 else 0), k
        assert d.sport[k] == (5 if k >= 72 else 0), k
        assert d.payload_len[k] == max(0, k - 78), k


def frame(ip: bytes) -> bytes:
    return bytes(Ether(type=0x0800)) + ip


def ipv4_raw(**overrides: int) -> bytearray:
    raw = bytearray(bytes(IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=1, dport=2) / b"abcd"))
    for name, value in overrides.items():
        if name == "ver_ihl":
            raw[0] = value
        elif name == "total":
            raw[2:4] = value.to_bytes(2, "big")
    return raw


def malformed_cases() -> dict[str, tuple[bytes, int, str]]:
    """name -> (packet bytes, link type, expected weird name)."""
    eth = linktypes.ETHERNET
    udp_short = bytearray(bytes(Ether() / IP() / UDP(sport=1, dport=2) / b"abcdef"))
    udp_short[38:40] = (4).to_bytes(2, "big")
    udp_long = bytearray(bytes(Ether() / IP() / UDP(sport=1, dport=2) / b"abcdef"))
    udp_long[38:40] = (400).to_bytes(2, "big")
    doff4 = bytearray(bytes(Ether() / IP() / TCP()))
    doff4[46] = 0x40
    doff15 = bytearray(bytes(Ether() / IP() / TCP() / bytes(8)))
    doff15[46] = 0xF0
    hbh_long = bytes(Ether() / IPv6(nh=0) / Raw(bytes([17, 8]) + bytes(6) + bytes(16)))
    too_many = bytes(
        Ether() / IPv6(nh=60) / Raw((bytes([60, 0]) + bytes(6)) * 11 + bytes([17, 0]) + bytes(6))
    )
    v6_long = bytearray(bytes(Ether() / IPv6() / UDP()))
    v6_long[18:20] = (100).to_bytes(2, "big")
    return {
        "ipv4 version 5": (frame(bytes(ipv4_raw(ver_ihl=0x55))), eth, "ipv4_bad_version"),
        "ipv4 ihl 4": (frame(bytes(ipv4_raw(ver_ihl=0x44))), eth, "ipv4_bad_header_length"),
        "ipv4 ihl 15": (frame(bytes(ipv4_raw(ver_ihl=0x4F))), eth, "truncated_ipv4"),
        "ipv4 total 10": (frame(bytes(ipv4_raw(total=10))), eth, "ipv4_total_length_too_small"),
        "ipv4 total past wire": (frame(bytes(ipv4_raw(total=500))), eth, "ipv4_truncated_payload"),
        "ipv6 version 4": (
            bytes(Ether(type=0x86DD)) + bytes(IP() / UDP()) + bytes(20),
            eth,
            "ipv6_bad_version",
        ),
        "ipv6 hbh past end": (hbh_long, eth, "ipv6_truncated_extension_header"),
        "ipv6 11 ext headers": (too_many, eth, "ipv6_too_many_extension_headers"),
        "ipv6 payload past wire": (bytes(v6_long), eth, "ipv6_truncated_payload"),
        "tcp doff 4": (bytes(doff4), eth, "tcp_bad_header_length"),
        "tcp doff 15": (bytes(doff15), eth, "tcp_bad_header_length"),
        "udp length 4": (bytes(udp_short), eth, "udp_bad_length"),
        "udp length 400": (bytes(udp_long), eth, "udp_bad_length"),
        "icmp 4 bytes": (bytes(Ether() / IP(proto=1) / Raw(b"\x08\x00\x00\x00")), eth, "truncated_icmp"),
        "arp 20 bytes": (bytes(Ether() / ARP())[:34], eth, "truncated_arp"),
        "arp 6 bytes": (bytes(Ether() / ARP())[:20], eth, "truncated_arp"),
        "raw nibble 7": (b"\x70" + bytes(39), linktypes.RAW, "raw_ip_bad_version"),
        "raw empty": (b"", linktypes.RAW, "truncated_l2"),
        "null 3 bytes": (b"\x02\x00\x00", linktypes.NULL, "truncated_l2"),
        "sll 15 bytes": (sll(0x0800)[:15], linktypes.LINUX_SLL, "truncated_l2"),
        "sll2 19 bytes": (sll2(0x0800)[:19], linktypes.LINUX_SLL2, "truncated_l2"),
        "unknown linktype": (bytes(40), 147, "unknown_linktype"),
        "5 vlan tags": (
            bytes(Ether() / Dot1Q() / Dot1Q() / Dot1Q() / Dot1Q() / Dot1Q() / IP()),
            eth,
            "vlan_too_many_tags",
        ),
    }


@pytest.mark.parametrize("case", list(malformed_cases()))
def test_malformed_packet_weird(case: str) -> None:
    pkt, linktype, want = malformed_cases()[case]
    weird = WeirdLog()
    batch = PacketBatch.from_packets([pkt], linktype=linktype)
    d = decode_batch(batch, weird)
    check_invariants(batch, d)
    assert weird_name(d, 0) == want
    assert weird.counts == {want: 1}
    assert weird.samples[0].layer == "decode"
    assert weird.samples[0].detail == WEIRD_DETAILS[want]


def test_malformed_fields_decoded_up_to_the_problem() -> None:
    cases = malformed_cases()
    d = decode_one([cases["ipv4 ihl 4"][0], cases["ipv4 version 5"][0], cases["udp length 400"][0]])
    bad_ihl = row(d, 0)
    assert bad_ihl["ip_version"] == 4
    assert bad_ihl["src_ip"] == mapped("1.1.1.1")
    assert bad_ihl["ip_proto"] == 17
    assert bad_ihl["ip_header_len"] == 16
    assert bad_ihl["l4_offset"] == -1
    assert bad_ihl["sport"] == 0
    bad_version = row(d, 1)
    assert bad_version["ip_version"] == 0
    assert bad_version["src_ip"] == bytes(16)
    assert bad_version["l3_offset"] == 14
    assert bad_version["ethertype"] == 0x0800
    long_udp = row(d, 2)
    assert (long_udp["sport"], long_udp["dport"], long_udp["payload_len"]) == (1, 2, 6)


def test_first_problem_only_and_one_report_per_name() -> None:
    pkt = bytearray(bytes(Ether() / IP() / UDP(sport=1, dport=2) / b"abcdef"))
    pkt[16:18] = (300).to_bytes(2, "big")  # IPv4 total length past the wire ...
    pkt[38:40] = (3).to_bytes(2, "big")  # ... and a bad UDP length after it
    good = bytes(Ether() / IP() / TCP())
    weird = WeirdLog()
    batch = PacketBatch.from_packets(
        [bytes(pkt), good] * 50 + [b"\0" * 5], ts_ns=list(range(101)), first_index=1000
    )
    d = decode_batch(batch, weird)
    assert weird_name(d, 0) == "ipv4_truncated_payload"
    assert weird.counts == {"ipv4_truncated_payload": 50, "truncated_l2": 1}
    assert len(weird.samples) == 2
    sample = {s.name: s for s in weird.samples}
    assert sample["truncated_l2"].packet_index == 1100
    assert sample["ipv4_truncated_payload"].packet_index == 1000
    assert sample["truncated_l2"].ts_ns == 100


# --------------------------------------------------------- batch layouts and consistency paths


def mixed_packets(rng: np.random.Generator, n: int, v4_share: float) -> list[bytes]:
    pool = (
        [bytes(Ether() / p) for p in ipv4_packets()],
        [bytes(Ether() / p) for p in ipv6_packets()],
        [
            bytes(Ether() / ARP()),
            bytes(Ether(type=0x88CC) / Raw(bytes(30))),
            bytes(Ether() / Dot1Q(vlan=3) / IP() / UDP()),
        ],
        [pkt for pkt, lt, _ in malformed_cases().values() if lt == linktypes.ETHERNET],
    )
    out: list[bytes] = []
    for _ in range(n):
        u = rng.random()
        group = (
            pool[0] if u < v4_share else pool[1] if u < v4_share + 0.2 else pool[2] if u < 0.95 else pool[3]
        )
        out.append(group[int(rng.integers(len(group)))])
    return out


@pytest.mark.parametrize("v4_share", [0.0, 0.3, 0.7, 1.0])
def test_batch_equals_packet_by_packet(v4_share: float) -> None:
    """Dense (majority) and sparse (minority) layer paths give the same fields as one-packet batches."""
    rng = np.random.default_rng(int(v4_share * 10))
    pkts = mixed_packets(rng, 300, v4_share)
    whole = decode_one(pkts)
    check_invariants(PacketBatch.from_packets(pkts), whole)
    singles = [decode_one([p]) for p in pkts]
    for f in fields(DecodedBatch):
        if f.name == "n":
            continue
        joined = np.concatenate([getattr(s, f.name) for s in singles])
        assert np.array_equal(getattr(whole, f.name), joined), f.name


def test_mixed_link_types_in_one_batch() -> None:
    """Per-packet link types (a pcapng with several interfaces) decode like separate batches."""
    rng = np.random.default_rng(5)
    cases = [LINK_CASES[k] for k in ("ethernet", "sll", "sll2", "null_le", "loop", "raw", "ipv4")]
    l3 = ipv4_packets()
    chosen = [(cases[int(rng.integers(len(cases)))], l3[int(rng.integers(len(l3)))]) for _ in range(120)]
    pkts = [case[1](p) for case, p in chosen]
    lts = np.array([case[0] for case, _ in chosen], dtype=np.uint16)
    batch = PacketBatch.from_packets(pkts)
    batch = PacketBatch(
        batch.buffer, batch.offsets, batch.caplen, batch.origlen, batch.ts_ns, batch.interface, lts
    )
    whole = decode_batch(batch)
    check_invariants(batch, whole)
    for i, ((linktype, *_), _) in enumerate(chosen):
        single = decode_one([pkts[i]], linktype=linktype)
        assert row(whole, i) == row(single, 0), i


def test_buffer_edges() -> None:
    """Packets at the very end of the buffer, an unaligned read-only buffer, empty and tiny packets."""
    pkts = [bytes(Ether() / IP() / TCP() / b"x"), b"", b"\x01", bytes(Ether() / IPv6() / UDP())[:30]]
    base = PacketBatch.from_packets(pkts)
    ref = decode_batch(base)
    raw = b"\xaa" * 3 + base.buffer.tobytes()
    view = np.frombuffer(raw, dtype=np.uint8)[3:]  # read-only, odd address
    shifted = PacketBatch(
        view, base.offsets, base.caplen, base.origlen, base.ts_ns, base.interface, base.linktype
    )
    got = decode_batch(shifted)
    for i in range(len(pkts)):
        assert row(got, i) == row(ref, i)
    # Offsets into a larger buffer with garbage around the packets.
    big = np.full(base.buffer.shape[0] + 100, 0xFF, dtype=np.uint8)
    big[50 : 50 + base.buffer.shape[0]] = base.buffer
    moved = PacketBatch(
        big, base.offsets + 50, base.caplen, base.origlen, base.ts_ns, base.interface, base.linktype
    )
    got = decode_batch(moved)
    for i in range(len(pkts)):
        assert row(got, i) == row(ref, i)
    empty = decode_batch(PacketBatch.empty())
    assert empty.n == 0
    assert empty.src_ip.shape == (0, 16)


# ---------------------------------------------------------------------------------- fuzzing

SEED_PACKETS = [bytes(Ether() / p) for p in ipv4_packets() + ipv6_packets()] + [
    LINK_CASES["qinq"][1](ipv4_packets()[0]),
    bytes(Ether() / ARP()),
]
FUZZ_LINKTYPES = [*linktypes.SUPPORTED, 147]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    pkt = bytearray(draw(st.sampled_from(SEED_PACKETS)))
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, len(pkt) - 1))
        pkt[pos] = draw(st.integers(0, 255))
    return bytes(pkt[: draw(st.integers(0, len(pkt)))])


packet_strategy = st.one_of(st.binary(max_size=120), mutated())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pkts=st.lists(packet_strategy, min_size=1, max_size=40),
    linktypes_=st.lists(st.sampled_from(FUZZ_LINKTYPES), min_size=1, max_size=40),
    short_wire=st.booleans(),
)
def test_fuzz_never_raises_and_stays_in_bounds(
    pkts: list[bytes], linktypes_: list[int], short_wire: bool
) -> None:
    lts = np.array([linktypes_[i % len(linktypes_)] for i in range(len(pkts))], dtype=np.uint16)
    origlen = [len(p) if short_wire else len(p) + 100 for p in pkts]
    base = PacketBatch.from_packets(pkts, origlen=origlen)
    batch = PacketBatch(base.buffer, base.offsets, base.caplen, base.origlen, base.ts_ns, base.interface, lts)
    weird = WeirdLog()
    d = decode_batch(batch, weird)
    check_invariants(batch, d)
    assert sum(weird.counts.values()) == int(np.count_nonzero(d.weird))
    codes = {DECODE_WEIRD_CODES[name] for name in weird.counts}
    assert codes == set(np.unique(d.weird[d.weird > 0]).tolist())
