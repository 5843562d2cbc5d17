"""Evidence captures: the packets behind an alert, cut from the real captures into a bounded pcap.

The S7 PLC stop of the shared corpus must come back as the very stop PDU (read with scapy, and
raised again when the evidence pcap itself is analysed); scans built with scapy check flow and
address windows; the vectorized join and time filter are compared with brute force."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet
from scapy.utils import rdpcap, wrpcap
from typer.testing import CliRunner

from fieldward.cli import app
from fieldward.detect.evidence import (
    EvidenceError,
    EvidenceSettings,
    EvidenceTarget,
    _in_intervals,
    _join,
    _merge_intervals,
    collect_evidence,
    cut_evidence,
    parse_iso_ns,
    write_evidence,
)
from fieldward.pipeline import analyze
from tests.detect.test_recon import SCANNER, TARGET, rst, syn

S7_PLC_STOP = 0x29
NS = 1_000_000_000


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]


def of_type(out: Path, name: str) -> dict[str, Any]:
    found = [a for a in records(out) if a["type"] == name]
    assert len(found) == 1, [a["type"] for a in records(out)]
    return found[0]


def s7_job(packet: Packet) -> int | None:
    """The S7comm job function (first parameter byte) of a TPKT/COTP-DT/S7 job packet, else None."""
    if TCP not in packet:
        return None
    data = bytes(packet[TCP].payload)
    if len(data) < 8 or data[0] != 3 or data[5] != 0xF0:  # TPKT version 3, COTP DT TPDU
        return None
    s7 = data[4 + 1 + data[4] :]
    if len(s7) < 11 or s7[0] != 0x32 or s7[1] != 1:  # protocol id, ROSCTR 1 = Job
        return None
    return s7[10]


def ns(packet: Packet) -> int:
    return int(packet.time * NS)


@pytest.fixture(scope="module")
def snap7(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("snap7")
    analyze([corpus / "s7comm" / "snap7.pcap"], out)
    return out


def test_the_plc_stop_evidence_holds_the_stop_packet(snap7: Path) -> None:
    alert = of_type(snap7, "operations.s7_plc_stop")
    assert alert["evidence_pcap"] == f"evidence/{alert['id']}.pcap"
    packets = rdpcap(str(snap7 / alert["evidence_pcap"]))
    stops = [p for p in packets if s7_job(p) == S7_PLC_STOP]
    assert len(stops) == 1
    trigger = parse_iso_ns(alert["evidence"][0]["ts"])
    assert abs(ns(stops[0]) - trigger) < 1000  # the microsecond pcap keeps the trigger's time
    assert stops[0][IP].src == alert["src"]
    assert stops[0][IP].dst == alert["dst"]
    assert 0 < len(packets) <= EvidenceSettings().max_packets
    # Every alert of the run has its file, and every file is a pcap of that alert's flow.
    for record in records(snap7):
        assert (snap7 / record["evidence_pcap"]).is_file()


def test_the_evidence_is_bounded_to_the_packets_closest_to_the_trigger(snap7: Path, tmp_path: Path) -> None:
    alert = of_type(snap7, "operations.s7_plc_stop")
    trigger = parse_iso_ns(alert["evidence"][0]["ts"])
    everything = rdpcap(str(snap7 / alert["evidence_pcap"]))
    bounded = EvidenceSettings(before_s=1.0, after_s=1.0, max_packets=5)
    count = cut_evidence(snap7, alert, tmp_path / "five.pcap", settings=bounded)
    five = rdpcap(str(tmp_path / "five.pcap"))
    assert count == len(five) == 5
    assert [s7_job(p) for p in five].count(S7_PLC_STOP) == 1
    # The five nearest in time to the trigger, in capture order.
    nearest = sorted(everything, key=lambda p: abs(ns(p) - trigger))[:5]
    assert sorted(ns(p) for p in five) == sorted(ns(p) for p in nearest)
    assert [ns(p) for p in five] == sorted(ns(p) for p in five)
    # A narrow window: only packets within it.
    narrow = EvidenceSettings(before_s=0.002, after_s=0.006, max_packets=50)
    cut_evidence(snap7, alert, tmp_path / "narrow.pcap", settings=narrow)
    window = rdpcap(str(tmp_path / "narrow.pcap"))
    assert all(-0.002 * NS - 1000 <= ns(p) - trigger <= 0.006 * NS + 1000 for p in window)
    assert len(window) < len(everything)
    assert any(s7_job(p) == S7_PLC_STOP for p in window)


def test_the_evidence_pcap_dissects_to_the_same_alert(snap7: Path, tmp_path: Path) -> None:
    alert = of_type(snap7, "operations.s7_plc_stop")
    again = tmp_path / "again"
    analyze([snap7 / alert["evidence_pcap"]], again)
    replayed = of_type(again, "operations.s7_plc_stop")
    assert replayed["id"] == alert["id"]
    assert replayed["count"] == alert["count"]


def test_on_demand_evidence_through_the_cli(snap7: Path, tmp_path: Path, corpus: Path) -> None:
    alert = of_type(snap7, "operations.s7_plc_stop")
    runner = CliRunner()
    out = tmp_path / "stop.pcap"
    result = runner.invoke(app, ["alerts", str(snap7), "evidence", alert["id"][:6], "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == (snap7 / alert["evidence_pcap"]).read_bytes()
    # Cut again from the capture with other bounds.
    result = runner.invoke(
        app,
        [
            "alerts",
            str(snap7),
            "evidence",
            alert["id"],
            "-o",
            str(out),
            "--max-packets",
            "1",
            "--capture",
            str(corpus / "s7comm" / "snap7.pcap"),
        ],
    )
    assert result.exit_code == 0, result.output
    (only,) = rdpcap(str(out))
    assert s7_job(only) == S7_PLC_STOP
    # Hostile input: unknown alert, missing capture.
    result = runner.invoke(app, ["alerts", str(snap7), "evidence", "ffffffff", "-o", str(out)])
    assert result.exit_code == 2
    assert "no alert 'ffffffff'" in result.output
    missing = tmp_path / "gone.pcap"
    result = runner.invoke(
        app, ["alerts", str(snap7), "evidence", alert["id"], "-o", str(out), "--capture", str(missing)]
    )
    assert result.exit_code == 2
    assert "not found" in result.output


def scan(tmp_path: Path) -> tuple[Path, list[Packet]]:
    packets: list[Packet] = []
    for port in range(20, 60):
        packets += [syn(TARGET[1], port), rst(TARGET[1], port)]
    # Unrelated traffic in the same seconds must stay out of the evidence.
    packets += [
        Ether(src="00:11:22:33:44:55", dst=TARGET[0]) / IP(src="10.1.1.77", dst=TARGET[1]) / ICMP()
        for _ in range(5)
    ]
    for index, packet in enumerate(packets):
        packet.time = 1_700_000_000 + index * 0.01
    capture = tmp_path / "scan.pcap"
    wrpcap(str(capture), packets)
    return capture, packets


def test_a_scan_alert_gets_its_trigger_flow(tmp_path: Path) -> None:
    capture, _packets = scan(tmp_path)
    analyze([capture], tmp_path / "out")
    alert = of_type(tmp_path / "out", "recon.port_scan_vertical")
    evidence = rdpcap(str(tmp_path / "out" / alert["evidence_pcap"]))
    assert len(evidence) == 2  # the SYN and RST of the trigger flow (flow windows, not addresses)
    assert {p[IP].src for p in evidence} == {SCANNER[1], TARGET[1]}
    assert len({(p[TCP].sport, p[TCP].dport) for p in evidence if p[IP].src == SCANNER[1]}) == 1


def test_flowless_alerts_get_evidence_by_address_and_time(tmp_path: Path) -> None:
    """An alert without a known flow (an L2 event, or flows not written) is cut by its addresses."""
    capture, packets = scan(tmp_path)
    arp = [
        Ether(src=SCANNER[0], dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc=SCANNER[1], pdst=f"10.1.1.{h}")
        for h in range(1, 6)
    ]
    other = [
        Ether(src="00:11:22:33:44:55", dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc="10.1.1.77", pdst="10.1.1.1")
    ]
    for index, packet in enumerate(arp + other):
        packet.time = 1_700_000_100 + index * 0.5
    wrpcap(str(capture), packets + arp + other)
    start = 1_700_000_100 * NS
    by_ip = EvidenceTarget("a" * 16, SCANNER[1], "*", start, start + 2 * NS)
    by_mac = EvidenceTarget("b" * 16, SCANNER[0], "*", start, start)
    late = start + int(2.5 * NS)
    pair = EvidenceTarget("c" * 16, "10.1.1.77", "10.1.1.1", late, late, ((999, start),))
    nothing = EvidenceTarget("d" * 16, "*", "*:502", start, start)
    tight = EvidenceSettings(before_s=0.1, after_s=0.1)
    found = collect_evidence([capture], [by_ip, by_mac, pair, nothing], {}, tight)
    # First and last time (+-0.1 s) of the scanner's ARP requests: the sender address is in ARP.
    assert sorted(p[2] for p in found[by_ip.alert_id].packets) == [start, start + 2 * NS]
    assert [p[2] for p in found[by_mac.alert_id].packets] == [start]
    # The pair: the unknown flow 999 falls back to the addresses, around the trigger and the alert.
    assert [p[2] for p in found[pair.alert_id].packets] == [late]
    assert "d" * 16 not in found
    # Wide windows reach the scanner's TCP packets as well (its IP address), not the unrelated host.
    wide = collect_evidence(
        [capture], [by_ip], {}, EvidenceSettings(before_s=200, after_s=200, max_packets=30)
    )
    kept = wide[by_ip.alert_id].in_capture_order()
    assert len(kept) == 30  # 80 scan packets and 5 ARP requests match; the 30 closest are kept
    assert [p[2] for p in kept[-5:]] == [start + i * NS // 2 for i in range(5)]
    assert all(Ether(p[5]).src in (SCANNER[0], TARGET[0]) for p in kept)
    assert all(ARP in Ether(p[5]) or TCP in Ether(p[5]) for p in kept)


def test_packets_near_the_epoch(tmp_path: Path) -> None:
    """Windows that reach before 1970 (captures with zero timestamps) are fine."""
    packets = [syn(TARGET[1], port) for port in (1, 2, 3)]
    for index, packet in enumerate(packets):
        packet.time = index * 0.5
    wrpcap(str(tmp_path / "zero.pcap"), packets)
    target = EvidenceTarget("f" * 16, SCANNER[1], TARGET[1], 0, NS // 2)
    found = collect_evidence([tmp_path / "zero.pcap"], [target], {})
    assert sorted(p[2] for p in found[target.alert_id].packets) == [0, NS // 2, NS]
    write_evidence(tmp_path, [target], [tmp_path / "zero.pcap"])
    assert len(rdpcap(str(tmp_path / "evidence" / f"{target.alert_id}.pcap"))) == 3


def test_batches_do_not_change_the_evidence(tmp_path: Path) -> None:
    capture, packets = scan(tmp_path)
    target = EvidenceTarget(
        "e" * 16, SCANNER[1], "*", ns(packets[0]), ns(packets[40]), ((5, ns(packets[20])),)
    )
    one = collect_evidence(
        [capture], [target], {}, EvidenceSettings(before_s=0.05, after_s=0.05, max_packets=7)
    )
    many = collect_evidence(
        [capture], [target], {}, EvidenceSettings(before_s=0.05, after_s=0.05, max_packets=7, batch_packets=3)
    )
    assert one[target.alert_id].in_capture_order() == many[target.alert_id].in_capture_order()
    assert len(one[target.alert_id].packets) == 7


def test_a_moved_capture_does_not_break_the_analysis(tmp_path: Path) -> None:
    capture, _packets = scan(tmp_path)
    analyze([capture], tmp_path / "out")
    alert = of_type(tmp_path / "out", "recon.port_scan_vertical")
    capture.unlink()
    written = write_evidence(tmp_path / "out", [EvidenceTarget.of_json(alert)], [capture])
    assert written == {alert["id"]: None}
    assert of_type(tmp_path / "out", "recon.port_scan_vertical")["evidence_pcap"] is None
    assert not (tmp_path / "out" / "evidence" / f"{alert['id']}.pcap").exists()  # stale file removed
    with pytest.raises(EvidenceError, match="not found"):
        cut_evidence(tmp_path / "out", alert, tmp_path / "x.pcap")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 12), max_size=30),
    st.lists(st.integers(0, 12), max_size=30),
)
def test_the_key_join_matches_brute_force(window_keys: list[int], packet_keys: list[int]) -> None:
    keys = np.sort(np.array(window_keys, dtype=np.uint64))
    packets, windows = _join(keys, np.array(packet_keys, dtype=np.uint64))
    expected = sorted((p, w) for p, k in enumerate(packet_keys) for w, wk in enumerate(keys) if wk == k)
    assert sorted(zip(packets.tolist(), windows.tolist(), strict=True)) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 100), st.integers(0, 30)), max_size=12),
    st.lists(st.integers(-5, 140), max_size=40),
)
def test_the_time_filter_matches_brute_force(windows: list[tuple[int, int]], times: list[int]) -> None:
    lo = np.array([a for a, _ in windows], dtype=np.int64)
    hi = np.array([a + w for a, w in windows], dtype=np.int64)
    starts, ends = _merge_intervals(lo, hi)
    assert (starts[1:] > ends[:-1]).all()
    inside = _in_intervals(starts, ends, np.array(times, dtype=np.int64))
    expected = [any(a <= t <= a + w for a, w in windows) for t in times]
    assert inside.tolist() == expected


def test_alert_times_round_trip() -> None:
    assert parse_iso_ns("2016-02-08T22:08:10.008331000Z") == 1454969290008331000
    assert parse_iso_ns("1970-01-01T00:00:01Z") == NS
    with pytest.raises(ValueError, match="time data"):
        parse_iso_ns("yesterday")


def test_evidence_withholds_the_payload_of_flows_that_carried_credentials(tmp_path: Path) -> None:
    """An FTP password brute force: the evidence shows every packet of the sessions, headers only,
    and never the passwords (other flows keep their payload: the S7 stop tests above)."""
    from tests.detect.test_threats import BOT, PLC
    from tests.inventory.helpers import tcp_session

    flights: list[tuple[bool, bytes]] = [(False, b"220 PLC FTP server ready\r\n")]
    for n in range(6):
        flights += [
            (True, b"USER admin\r\n"),
            (False, b"331 Password required\r\n"),
            (True, b"PASS Hunter-%d-Secret\r\n" % n),
            (False, b"530 Login incorrect.\r\n"),
        ]
    packets = tcp_session(BOT, PLC, 21, flights)
    for index, packet in enumerate(packets):
        packet.time = 1_700_000_000 + index * 0.01
    wrpcap(str(tmp_path / "ftp.pcap"), packets)
    out = tmp_path / "out"
    analyze([tmp_path / "ftp.pcap"], out)
    clear = of_type(out, "threats.cleartext_credentials")
    evidence = out / clear["evidence_pcap"]
    raw = evidence.read_bytes()
    assert b"Secret" not in raw
    assert b"USER admin" not in raw  # the whole payload of the flow is withheld, not just PASS lines
    kept = rdpcap(str(evidence))
    assert len(kept) > 20
    assert all(TCP in packet and len(bytes(packet[TCP].payload)) == 0 for packet in kept)
    assert any(packet.wirelen > len(bytes(packet)) for packet in kept)  # original length kept
    for path in out.rglob("*"):
        if path.is_file():
            assert b"Hunter-" not in path.read_bytes(), path
