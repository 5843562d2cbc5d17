"""Helpers of the inventory tests: run the analysis on packets, find devices in devices.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scapy.packet import Packet
from scapy.utils import wrpcap

from fieldward.pipeline import analyze


def load_devices(out: Path) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = json.loads((out / "devices.json").read_text())["devices"]
    return devices


def device_for_ip(devices: list[dict[str, Any]], ip: str) -> dict[str, Any]:
    found = [d for d in devices if ip in d["ips"]]
    assert len(found) == 1, f"{ip}: {len(found)} devices have it"
    return found[0]


def device_for_mac(devices: list[dict[str, Any]], mac: str) -> dict[str, Any]:
    found = [d for d in devices if d["mac"] == mac.lower()]
    assert len(found) == 1, f"{mac}: {len(found)} devices"
    return found[0]


def inventory_of(
    tmp_path: Path, packets: list[Packet], start: float = 1_700_000_000.0
) -> list[dict[str, Any]]:
    """Write ``packets`` (0.1 s apart unless they carry their own time) to a pcap and analyse it."""
    for index, packet in enumerate(packets):
        if not getattr(packet, "_timed", False):
            packet.time = start + index * 0.1
    capture = tmp_path / "built.pcap"
    wrpcap(str(capture), packets)
    out = tmp_path / "out"
    analyze([capture], out)
    return load_devices(out)


def tcp_session(
    client: tuple[str, str],
    server: tuple[str, str],
    port: int,
    flights: list[tuple[bool, bytes]],
    *,
    cport: int = 50123,
    client_ttl: int = 64,
    server_ttl: int = 64,
    syn_options: list[tuple[str, Any]] | None = None,
    window: int = 64240,
) -> list[Packet]:
    """A complete TCP session (handshake, data ``flights`` of (from_client, bytes), close) between
    ``client`` and ``server`` given as (MAC, IP), with consistent sequence numbers."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    (cmac, cip), (smac, sip) = client, server
    cseq, sseq = 1000, 9000
    options = syn_options if syn_options is not None else [("MSS", 1460), ("NOP", None), ("WScale", 8)]

    def c(flags: str, data: bytes = b"", opts: list[tuple[str, Any]] | None = None) -> Packet:
        tcp = TCP(
            sport=cport, dport=port, flags=flags, seq=cseq, ack=sseq if "A" in flags else 0, window=window
        )
        if opts:
            tcp.options = opts
        return Ether(src=cmac, dst=smac) / IP(src=cip, dst=sip, ttl=client_ttl) / tcp / data

    def s(flags: str, data: bytes = b"", opts: list[tuple[str, Any]] | None = None) -> Packet:
        tcp = TCP(sport=port, dport=cport, flags=flags, seq=sseq, ack=cseq, window=window)
        if opts:
            tcp.options = opts
        return Ether(src=smac, dst=cmac) / IP(src=sip, dst=cip, ttl=server_ttl) / tcp / data

    packets = [c("S", opts=options)]
    cseq += 1
    packets.append(s("SA", opts=options))
    sseq += 1
    packets.append(c("A"))
    for from_client, data in flights:
        if from_client:
            packets.append(c("PA", data))
            cseq += len(data)
        else:
            packets.append(s("PA", data))
            sseq += len(data)
    packets += [c("FA"), s("FA")]
    packets.append(c("A"))
    return packets
