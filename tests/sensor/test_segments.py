"""What a segment boundary does to flows that are open across it (docs/sensor.md, "Flows at segment
boundaries"): each segment reports the part it saw as a flow record of its own, the record of the first
part ends with ``end_of_capture``, the continuation starts midstream (``OTH``) under the same Community
ID, the packet counts add up, and a continuation is never taken for a scan attempt.

The sensor cuts a segment by finishing its analysis and starting a new one, which is what analysing
the capture's two halves one after the other does; the live 1-second-segment test in
test_conditions.py checks the same addition on the wire."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import rdpcap, wrpcap

from fieldward.generator import protocols as p
from fieldward.pipeline import analyze

HMI = ("00:0c:29:00:00:05", "10.1.1.5")
PLCS = 25
"""More PLCs than ``ReconSettings.horizontal_hosts``: 25 continuations on port 502 must not look like
a sweep of port 502."""
START = 1_700_000_000.0
BOUNDARIES = (START + 1.5, START + 3.0)


def _segment(
    plc: tuple[str, str], sport: int, from_hmi: bool, flags: str, seq: int, ack: int, data: bytes = b""
) -> Packet:
    (plc_mac, plc_ip), (hmi_mac, hmi_ip) = plc, HMI
    if from_hmi:
        l2, ip, tcp = Ether(src=hmi_mac, dst=plc_mac), IP(src=hmi_ip, dst=plc_ip), TCP(sport=sport, dport=502)
    else:
        l2, ip, tcp = Ether(src=plc_mac, dst=hmi_mac), IP(src=plc_ip, dst=hmi_ip), TCP(sport=502, dport=sport)
    tcp.flags, tcp.seq, tcp.ack = flags, seq, ack
    packet: Packet = l2 / ip / tcp / data if data else l2 / ip / tcp
    return packet


def _polling(path: Path) -> Path:
    """The HMI opens one Modbus connection to each PLC, polls every 0.5 s for 4 s, then closes."""
    timed: list[tuple[float, Packet]] = []
    for host in range(1, PLCS + 1):
        plc = (f"00:80:f4:00:01:{host:02x}", f"10.1.4.{host}")
        sport, cseq, sseq, offset = 40000 + host, 1000, 9000, host * 0.001
        timed.append((START + offset, _segment(plc, sport, True, "S", cseq, 0)))
        cseq += 1
        timed.append((START + offset + 0.0001, _segment(plc, sport, False, "SA", sseq, cseq)))
        sseq += 1
        timed.append((START + offset + 0.0002, _segment(plc, sport, True, "A", cseq, sseq)))
        for poll in range(8):
            at = START + 0.25 + poll * 0.5 + offset
            request = p.modbus_adu(poll, 1, p.modbus_read_request(3, 0, 2))
            timed.append((at, _segment(plc, sport, True, "PA", cseq, sseq, request)))
            cseq += len(request)
            response = p.modbus_adu(poll, 1, p.modbus_read_response(3, [poll, host]))
            timed.append((at + 0.0001, _segment(plc, sport, False, "PA", sseq, cseq, response)))
            sseq += len(response)
        end = START + 4.5 + offset
        timed.append((end, _segment(plc, sport, True, "FA", cseq, sseq)))
        timed.append((end + 0.0001, _segment(plc, sport, False, "FA", sseq, cseq + 1)))
        timed.append((end + 0.0002, _segment(plc, sport, True, "A", cseq + 1, sseq + 1)))
    timed.sort(key=lambda item: item[0])
    packets = []
    for at, packet in timed:
        packet.time = at
        packets.append(packet)
    wrpcap(str(path), packets)
    return path


def _thirds(capture: Path, folder: Path) -> list[Path]:
    """The capture as the three segments a sensor cutting at BOUNDARIES would analyse."""
    packets = rdpcap(str(capture))
    edges = [float("-inf"), *BOUNDARIES, float("inf")]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (low, high) in enumerate(itertools.pairwise(edges)):
        path = folder / f"part-{index}.pcap"
        wrpcap(str(path), [q for q in packets if low <= float(q.time) < high])
        paths.append(path)
    return paths


def test_flows_open_at_a_boundary_are_reported_in_each_segment(tmp_path: Path) -> None:
    capture = _polling(tmp_path / "polling.pcap")
    whole = analyze([capture], tmp_path / "whole")
    assert whole.flows == PLCS
    parts = _thirds(capture, tmp_path / "parts")
    segments = [analyze([part], tmp_path / f"segment-{i}") for i, part in enumerate(parts)]
    assert sum(s.totals.packets for s in segments) == whole.totals.packets
    flows = [pq.read_table(tmp_path / f"segment-{i}" / "flows.parquet") for i in range(3)]
    assert [t.num_rows for t in flows] == [PLCS] * 3  # one record per segment for each connection
    assert set(flows[0]["end_reason"].to_pylist()) == {"end_of_capture"}
    assert set(flows[1]["end_reason"].to_pylist()) == {"end_of_capture"}
    assert set(flows[1]["conn_state"].to_pylist()) == {"OTH"}  # midstream: no SYN, no FIN seen
    assert all("S" not in h for t in flows[1:] for h in t["history"].to_pylist())
    ids = [set(t["community_id"].to_pylist()) for t in flows]
    assert ids[0] == ids[1] == ids[2]
    packets = sum(pc.sum(pc.add(t["orig_pkts"], t["resp_pkts"])).as_py() for t in flows)
    assert packets == whole.totals.packets
    for index, segment in enumerate(segments):
        folder = tmp_path / f"segment-{index}"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["flows"] == PLCS == pq.read_metadata(folder / "flows.parquet").num_rows
        communications = pq.read_table(folder / "communications.parquet")
        assert pc.sum(communications["flows"]).as_py() == PLCS
        # continuations talk both ways: no sweep of port 502, though the middle ones are OTH
        assert [a.type.id for a in segment.alerts if a.type.id.startswith("recon.")] == []
        devices = json.loads((folder / "devices.json").read_text())["devices"]
        hmi = next(d for d in devices if HMI[1] in d["ips"])
        assert {"protocol": "modbus", "role": "master", "peers": PLCS} in hmi["roles"]
