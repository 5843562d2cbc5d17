"""A capture of reconnaissance spread over many flows (built with scapy): a vertical port scan, a
horizontal sweep of port 502 and a ping sweep by one scanner, and Modbus polling of one PLC by several
HMIs, so that a sensor with several workers gets each scan and the PLC's clients split between them."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import wrpcap

from fieldward.generator import protocols as p
from tests.inventory.helpers import tcp_session

SCANNER = ("00:0c:29:66:66:66", "10.1.2.99")
PLC = ("00:80:f4:11:22:33", "10.1.1.10")
GATEWAY_MAC = "00:00:5e:00:01:01"
VERTICAL_PORTS = range(1000, 1030)
"""30 ports: over the 20 of ``ReconSettings.vertical_ports``, split about 15/15 by two workers."""
SWEPT_HOSTS = 26
HMIS = 6


def _syn(dst: str, port: int, sport: int, dst_mac: str) -> Packet:
    return (
        Ether(src=SCANNER[0], dst=dst_mac)
        / IP(src=SCANNER[1], dst=dst)
        / TCP(sport=sport, dport=port, flags="S")
    )


def _rst(src: str, port: int, sport: int, src_mac: str) -> Packet:
    return (
        Ether(src=src_mac, dst=SCANNER[0])
        / IP(src=src, dst=SCANNER[1])
        / TCP(sport=port, dport=sport, flags="RA")
    )


def scan_capture(path: Path, start: float = 1_700_000_000.0, gap: float = 0.002) -> Path:
    packets: list[Packet] = []
    for index in range(HMIS):
        hmi = (f"00:0c:29:00:00:{0x10 + index:02x}", f"10.1.1.{50 + index}")
        flights = [
            (True, p.modbus_adu(1, 1, p.modbus_read_request(3, 0, 4))),
            (False, p.modbus_adu(1, 1, p.modbus_read_response(3, [1, 2, 3, 4]))),
        ]
        packets += tcp_session(hmi, PLC, 502, flights, cport=40100 + index)
    for port in VERTICAL_PORTS:
        packets += [_syn(PLC[1], port, 51000 + port, PLC[0]), _rst(PLC[1], port, 51000 + port, PLC[0])]
    for host in range(1, SWEPT_HOSTS + 1):
        mac = f"00:80:f4:00:01:{host:02x}"
        packets += [
            _syn(f"10.1.4.{host}", 502, 52000 + host, mac),
            _rst(f"10.1.4.{host}", 502, 52000 + host, mac),
        ]
    packets += [
        Ether(src=SCANNER[0], dst=GATEWAY_MAC) / IP(src=SCANNER[1], dst=f"10.1.3.{h}") / ICMP(type=8, seq=h)
        for h in range(1, SWEPT_HOSTS + 1)
    ]
    for index, packet in enumerate(packets):
        packet.time = start + index * gap
    wrpcap(str(path), packets)
    return path
