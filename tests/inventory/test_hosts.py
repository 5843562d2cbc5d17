"""HostObserver: the vectorized host aggregation against an independent per-packet reference (dpkt),
and the same totals whatever the batch size."""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter
from pathlib import Path

import dpkt
import pytest

from fieldward.capture.reader import open_capture
from fieldward.decode.l2l4 import decode_batch
from fieldward.generator import GeneratorConfig, generate_capture
from fieldward.inventory.hosts import HostObserver, initial_ttl, mac_text
from fieldward.weird import WeirdLog


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hosts") / "plant.pcap"
    generate_capture(path, GeneratorConfig(devices=20, minutes=0.5, seed=5, camera_streams=False))
    return path


def observe(capture: Path, batch_packets: int) -> HostObserver:
    observer = HostObserver()
    weird = WeirdLog()
    with open_capture(capture, batch_packets=batch_packets, weird=weird) as reader:
        for batch in reader:
            observer.observe(batch, decode_batch(batch, weird))
    return observer


def reference(
    capture: Path,
) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """Per packet, in plain Python with dpkt: (MAC, IP) senders, ARP senders, SYN signatures."""
    bindings: Counter[tuple[str, str]] = Counter()
    arp: Counter[tuple[str, str]] = Counter()
    syn: Counter[tuple[str, str]] = Counter()
    with capture.open("rb") as handle:
        for _ts, raw in dpkt.pcap.Reader(handle):
            eth = dpkt.ethernet.Ethernet(raw)
            src = ":".join(f"{b:02x}" for b in eth.src)
            if isinstance(eth.data, dpkt.arp.ARP) and eth.data.op in (1, 2):
                spa = socket.inet_ntoa(eth.data.spa)
                if spa != "0.0.0.0":
                    arp[(":".join(f"{b:02x}" for b in eth.data.sha), spa)] += 1
                continue
            if not isinstance(eth.data, dpkt.ip.IP):
                continue
            ip = eth.data
            address = socket.inet_ntoa(ip.src)
            if address != "0.0.0.0":
                bindings[(src, address)] += 1
            if isinstance(ip.data, dpkt.tcp.TCP) and ip.data.flags & dpkt.tcp.TH_SYN:
                tcp = ip.data
                options = dict(dpkt.tcp.parse_opts(tcp.opts))
                mss = int.from_bytes(options.get(dpkt.tcp.TCP_OPT_MSS, b"\0\0"), "big")
                ws = options.get(dpkt.tcp.TCP_OPT_WSCALE)
                sack = int(dpkt.tcp.TCP_OPT_SACKOK in options)
                stamps = int(dpkt.tcp.TCP_OPT_TIMESTAMP in options)
                text = (
                    f"ttl={initial_ttl(ip.ttl)},win={tcp.win},mss={mss},ws={'-' if ws is None else ws[0]},"
                    f"sack={sack},ts={stamps}"
                )
                syn[(address, text)] += 1
    return bindings, arp, syn


def totals(
    observer: HostObserver,
) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    bindings: Counter[tuple[str, str]] = Counter()
    for (_vlan, mac, ip), act in observer.bindings.items():
        bindings[(mac_text(mac), ip)] += act.packets
    arp: Counter[tuple[str, str]] = Counter()
    for (_vlan, mac, ip), act in observer.arp.items():
        arp[(mac_text(mac), ip)] += act.packets
    syn: Counter[tuple[str, str]] = Counter()
    for ip, signatures in observer.syn.items():
        for signature, count in signatures.items():
            syn[(ip, signature.text())] += count
    return bindings, arp, syn


def test_vectorized_aggregation_matches_per_packet_reference(capture: Path) -> None:
    ours = totals(observe(capture, 65536))
    expected = reference(capture)
    assert ours[0] == expected[0]
    assert ours[1] == expected[1]
    assert ours[2] == expected[2]
    assert sum(expected[2].values()) > 0


@pytest.mark.parametrize("batch_packets", [1, 97, 4096])
def test_totals_do_not_depend_on_batch_size(capture: Path, batch_packets: int) -> None:
    whole = observe(capture, 1 << 20)
    split = observe(capture, batch_packets)
    assert totals(split) == totals(whole)
    assert {k: (a.first, a.last) for k, a in split.bindings.items()} == {
        k: (a.first, a.last) for k, a in whole.bindings.items()
    }
    assert {k: (a.packets, a.first, a.last) for k, a in split.macs.items()} == {
        k: (a.packets, a.first, a.last) for k, a in whole.macs.items()
    }


def test_owner_at_follows_a_lease_handed_over_and_back() -> None:
    from fieldward.inventory.builder import _owner_at

    entries = [("mac:aa", 0, 300, 90), ("mac:bb", 100, 200, 10)]
    assert _owner_at(entries, 50) == "mac:aa"
    assert _owner_at(entries, 150) == "mac:bb"
    assert _owner_at(entries, 250) == "mac:aa"
    assert _owner_at(entries, 999) == "mac:aa"
    assert _owner_at(entries, -5) == "mac:aa"
    assert _owner_at(entries, None) == "mac:aa"


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Thousands of hosts (the tables grow several times): 3,000 addresses behind one router MAC,
    3,000 hosts with their own MAC, an ARP reply and an IPv6 packet from each of 500 hosts, DHCP
    discovers from 0.0.0.0 and frames without an IP payload."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Ether
    from scapy.utils import wrpcap

    router = "00:1d:9c:ff:ff:01"
    packets = []
    for i in range(3000):
        host = f"{10 + i // 65536}.{(i // 256) % 256}.{i % 256}.{7 + i % 3}"
        mac = f"02:00:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"
        packets.append(
            Ether(src=router, dst="00:00:00:00:00:02")
            / IP(src=f"172.{16 + i % 8}.{i // 256 % 256}.{i % 256}", dst="10.0.0.1", ttl=60)
            / TCP(sport=1000 + i, dport=502, flags="S")
        )
        packets.append(
            Ether(src=mac, dst="00:00:00:00:00:02") / IP(src=host, dst="10.0.0.1") / UDP(sport=5000, dport=53)
        )
        if i % 6 == 0:
            packets.append(
                Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=2, hwsrc=mac, psrc=host, pdst=host)
            )
            packets.append(
                Ether(src=mac, dst="33:33:00:00:00:01")
                / IPv6(src=f"fe80::{i:x}", dst="ff02::1")
                / UDP(sport=546, dport=547)
            )
            packets.append(
                Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
                / IP(src="0.0.0.0", dst="255.255.255.255")
                / UDP(sport=68, dport=67)
            )
            packets.append(Ether(src=mac, dst="01:80:c2:00:00:0e", type=0x88CC) / bytes(20))
    for n, packet in enumerate(packets):
        packet.time = 1_700_000_000 + n / 1000
    path = tmp_path_factory.mktemp("crowded") / "crowded.pcap"
    wrpcap(str(path), packets)
    return path


def test_thousands_of_hosts_and_one_router_with_many_addresses(crowded: Path) -> None:
    """The hashed tables grow past their first size and keep exact totals (the per-packet reference
    again, plus the frames per MAC of every kind), also where one MAC carries thousands of addresses."""
    observer = observe(crowded, 997)
    ours = totals(observer)
    expected = reference(crowded)  # IPv4 only
    assert Counter({k: n for k, n in ours[0].items() if ":" not in k[1]}) == expected[0]
    assert {k: n for k, n in ours[0].items() if ":" in k[1]} == {
        (f"02:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}", str(ipaddress.IPv6Address(f"fe80::{i:x}"))): 1
        for i in range(0, 3000, 6)
    }
    assert ours[1] == expected[1]
    assert ours[2] == expected[2]
    assert len(expected[0]) == 6000
    assert len(expected[1]) == 500
    frames: Counter[str] = Counter()
    with crowded.open("rb") as handle:
        for _ts, raw in dpkt.pcap.Reader(handle):
            frames[":".join(f"{b:02x}" for b in raw[6:12])] += 1
    assert {mac_text(mac): act.packets for (_vlan, mac), act in observer.macs.items()} == frames
    assert observe(crowded, 1 << 20).bindings == observer.bindings
