"""HostObserver: the vectorized host aggregation against an independent per-packet reference (dpkt),
and the same totals whatever the batch size."""

from __future__ import annotations

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
