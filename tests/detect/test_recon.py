"""Reconnaissance alerts from real bytes: scans built with scapy, ICS discovery from the generator's
encoders; and what must not fire on a clean plant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import wrpcap

from fieldward.detect.engine import AlertBook, DetectionEngine, Detector
from fieldward.generator import protocols as p
from fieldward.pipeline import analyze
from tests.inventory.helpers import tcp_session

SCANNER = ("00:0c:29:66:66:66", "10.1.2.99")
TARGET = ("00:80:f4:11:22:33", "10.1.1.10")


def alerts_for(tmp_path: Path, packets: list[Packet]) -> list[dict[str, Any]]:
    for index, packet in enumerate(packets):
        packet.time = 1_700_000_000 + index * 0.01
    wrpcap(str(tmp_path / "built.pcap"), packets)
    analyze([tmp_path / "built.pcap"], tmp_path / "out")
    return [json.loads(line) for line in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]


def syn(dst: str, port: int, dst_mac: str = TARGET[0]) -> Packet:
    return (
        Ether(src=SCANNER[0], dst=dst_mac)
        / IP(src=SCANNER[1], dst=dst)
        / TCP(sport=40000 + port % 1000, dport=port, flags="S")
    )


def rst(src: str, port: int) -> Packet:
    return (
        Ether(src=TARGET[0], dst=SCANNER[0])
        / IP(src=src, dst=SCANNER[1])
        / TCP(sport=port, dport=40000 + port % 1000, flags="RA")
    )


def types(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["type"]: a for a in alerts}


def test_vertical_scan(tmp_path: Path) -> None:
    packets = []
    for port in range(20, 60):
        packets += [syn(TARGET[1], port), rst(TARGET[1], port)]
    found = types(alerts_for(tmp_path, packets))
    alert = found["recon.port_scan_vertical"]
    assert (alert["src"], alert["dst"]) == (SCANNER[1], TARGET[1])
    assert alert["details"]["ports"] == 40
    assert alert["mitre"] == ["T0846"]
    assert alert["evidence"][0]["flow_id"] >= 0
    assert "recon.port_scan_horizontal" not in found


def test_horizontal_sweep_and_ping_sweep(tmp_path: Path) -> None:
    packets = [syn(f"10.1.1.{host}", 502) for host in range(100, 130)]
    packets += [
        Ether(src=SCANNER[0], dst=TARGET[0])
        / IP(src=SCANNER[1], dst=f"10.1.1.{host}")
        / ICMP(type=8, id=1, seq=host)
        for host in range(100, 125)
    ]
    found = types(alerts_for(tmp_path, packets))
    sweep = found["recon.port_scan_horizontal"]
    assert sweep["dst"] == "*:502"
    assert sweep["details"]["hosts"] == 30
    assert found["recon.ping_sweep"]["details"]["hosts"] == 25
    assert "recon.port_scan_vertical" not in found


def test_below_thresholds_nothing_fires(tmp_path: Path) -> None:
    packets = []
    for port in range(20, 30):
        packets += [syn(TARGET[1], port), rst(TARGET[1], port)]
    assert alerts_for(tmp_path, packets) == []


def test_modbus_unit_sweep_and_list_identity_broadcast(tmp_path: Path) -> None:
    gateway = ("00:90:e8:01:02:03", "10.1.1.40")
    flights = [(True, p.modbus_adu(unit, unit, p.modbus_read_request(3, 0, 1))) for unit in range(1, 16)]
    packets = tcp_session(SCANNER, gateway, 502, flights)
    packets.append(
        Ether(src=SCANNER[0], dst="ff:ff:ff:ff:ff:ff")
        / IP(src=SCANNER[1], dst="10.1.255.255")
        / UDP(sport=44818, dport=44818)
        / p.enip(p.ENIP_LIST_IDENTITY, 0)
    )
    found = types(alerts_for(tmp_path, packets))
    sweep = found["recon.modbus_unit_id_sweep"]
    assert (sweep["src"], sweep["dst"], sweep["details"]["unit_ids"]) == (SCANNER[1], gateway[1], 15)
    discovery = found["recon.cip_list_identity_sweep"]
    assert discovery["src"] == SCANNER[1]
    assert "broadcast" in discovery["explanation"]


class Exploding(Detector):
    name = "exploding"
    logs = frozenset({"modbus"})

    def on_event(self, event: Any) -> None:
        raise RuntimeError("bug")


def test_a_failing_detector_is_a_counted_weird() -> None:
    from types import SimpleNamespace

    engine = DetectionEngine([Exploding])
    event: Any = SimpleNamespace(log="modbus")
    engine.observe_event(event)
    engine.observe_event(event)
    assert engine.weird.summary() == {"detector_exception": 2}
    assert len(engine.alerts) == 0


def test_repeats_aggregate_into_one_alert() -> None:
    from fieldward.detect.operations import PLC_STOP

    book = AlertBook()
    for ts in (30, 10, 20):
        book.raise_alert(PLC_STOP, ts=ts, src="a", dst="b", protocol="s7comm", explanation="x", flow_id=ts)
    book.raise_alert(PLC_STOP, ts=5, src="a", dst="c", protocol="s7comm", explanation="x")
    alerts = list(book)
    assert len(alerts) == 2
    first = next(a for a in alerts if a.dst == "b")
    assert (first.count, first.first_ts, first.last_ts) == (3, 10, 30)
    assert [t.flow_id for t in first.triggers] == [30, 10, 20]
    again = AlertBook().raise_alert(PLC_STOP, ts=1, src="a", dst="b", protocol="s7comm", explanation="y")
    assert first.id == again.id  # stable across runs


def test_columnar_and_per_event_paths_raise_the_same_alerts(tmp_path: Path) -> None:
    """Fast-path dissectors hand tables to the detectors (filtered, or grouped with Arrow); the same
    traffic parsed PDU by PDU must raise exactly the same alerts."""
    from fieldward.pipeline import AnalysisOptions
    from fieldward.protocols.engine import ProtocolSettings

    gateway = ("00:90:e8:01:02:03", "10.1.1.40")
    flights = [(True, p.modbus_adu(unit, unit, p.modbus_read_request(3, 0, 1))) for unit in range(1, 16)]
    flights += [(False, p.modbus_adu(unit, unit, p.modbus_read_response(3, [unit]))) for unit in range(1, 16)]
    packets = tcp_session(SCANNER, gateway, 502, flights)
    diagnostics = bytes([0x08, 0x00, 0x04, 0x00, 0x00])  # Force Listen Only Mode
    packets += tcp_session(SCANNER, gateway, 502, [(True, p.modbus_adu(99, 1, diagnostics))], cport=50999)
    for index, packet in enumerate(packets):
        packet.time = 1_700_000_000 + index * 0.01
    wrpcap(str(tmp_path / "built.pcap"), packets)
    outputs = []
    for fast in (True, False):
        out = tmp_path / f"out-{fast}"
        analyze([tmp_path / "built.pcap"], out, AnalysisOptions(protocols=ProtocolSettings(fast_path=fast)))
        outputs.append((out / "alerts.jsonl").read_text())
    assert outputs[0] == outputs[1]
    kinds = {json.loads(line)["type"] for line in outputs[0].splitlines()}
    assert {"recon.modbus_unit_id_sweep", "operations.modbus_restart_or_listen_only"} <= kinds


def arp_request(mac: str, ip: str, asked: str) -> Packet:
    from scapy.layers.l2 import ARP

    return Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=ip, pdst=asked)


def test_arp_scan_but_not_a_router_refreshing_its_cache(tmp_path: Path) -> None:
    """arp-scan: 40 addresses in 2 s. A router asking for 60 hosts one every 5 s (a cache being
    refreshed), and a host asking for one address again and again, are not scans."""
    router = ("00:90:e8:00:00:01", "10.1.1.1")
    scan = [arp_request(SCANNER[0], SCANNER[1], f"10.1.1.{host}") for host in range(100, 140)]
    for index, packet in enumerate(scan):
        packet.time = 1_700_000_100 + index * 0.05
    refresh = [arp_request(router[0], router[1], f"10.1.1.{host}") for host in range(2, 62)]
    for index, packet in enumerate(refresh):
        packet.time = 1_700_000_000 + index * 5
    repeat = [arp_request(TARGET[0], TARGET[1], "10.1.1.1") for _ in range(100)]
    for index, packet in enumerate(repeat):
        packet.time = 1_700_000_050 + index * 0.01
    packets = sorted(scan + refresh + repeat, key=lambda pk: float(pk.time))
    wrpcap(str(tmp_path / "arp.pcap"), packets)
    analyze([tmp_path / "arp.pcap"], tmp_path / "out")
    alerts = [json.loads(line) for line in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]
    scans = [a for a in alerts if a["type"] == "recon.arp_scan"]
    assert [(a["src"], a["dst"], a["protocol"]) for a in scans] == [(SCANNER[1], "*", "arp")]
    assert scans[0]["details"] == {"mac": SCANNER[0], "hosts": 40}
    assert scans[0]["first_ts"].startswith("2023-11-14T22:15:00")  # the scan's first request
    assert scans[0]["evidence_pcap"] is not None  # flowless: cut by address and time


def test_scan_in_a_nanosecond_capture(tmp_path: Path) -> None:
    """Times that are not whole microseconds (nanosecond pcap, live capture) are kept exactly."""
    from decimal import Decimal

    from scapy.utils import PcapWriter

    packets = []
    for port in range(20, 60):
        packets += [syn(TARGET[1], port), rst(TARGET[1], port)]
    for index, packet in enumerate(packets):
        packet.time = Decimal(1_700_000_000) + Decimal(index) / 100 + Decimal("0.000000123")
    with PcapWriter(str(tmp_path / "nano.pcap"), nano=True) as writer:
        writer.write(packets)
    analyze([tmp_path / "nano.pcap"], tmp_path / "out")
    alerts = [json.loads(line) for line in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]
    alert = types(alerts)["recon.port_scan_vertical"]
    assert alert["details"]["ports"] == 40
    assert alert["first_ts"].startswith("2023-11-14T22:13:20.000000123")
