"""The analyze pipeline on every corpus capture, checked against Wireshark's capinfos and tshark."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fieldward.pipeline import analyze

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
CAPTURES = sorted(CORPUS.glob("*/*.pcap")) if CORPUS.is_dir() else []


def capinfos_figures(capinfos: str, path: Path) -> tuple[int, int, float, float]:
    """Packets, captured bytes, first and last packet time (epoch seconds) per capinfos."""
    out = subprocess.run(
        [capinfos, "-T", "-r", "-M", "-c", "-d", "-S", "-a", "-e", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    _name, packets, data_bytes, first, last = out.split("\t")
    return int(packets), int(data_bytes), float(first), float(last)


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_totals_agree_with_capinfos(capture: Path, capinfos: str, tmp_path: Path) -> None:
    packets, data_bytes, first, last = capinfos_figures(capinfos, capture)
    result = analyze([capture], tmp_path)
    totals = result.totals
    assert totals.packets == packets
    assert totals.wire_bytes == data_bytes  # capinfos' data size sums original lengths
    assert totals.captured_bytes <= totals.wire_bytes
    assert totals.first_ts_ns is not None
    assert totals.last_ts_ns is not None
    assert abs(totals.first_ts_ns / 1e9 - first) < 1e-6
    assert abs(totals.last_ts_ns / 1e9 - last) < 1e-6
    flows = pq.read_table(tmp_path / "flows.parquet")
    assert flows.num_rows == result.flows


@pytest.mark.parametrize(
    "name", ["modbus/modbusSmall.pcap", "http/bro.org.pcap", "tls/ssl.v3.pcap", "enip/enip_cip_example.pcap"]
)
def test_tcp_flows_agree_with_tshark_conversations(
    name: str, corpus: Path, tshark: str, tmp_path: Path
) -> None:
    capture = corpus / name
    fields = subprocess.run(
        [tshark, "-n", "-r", str(capture), "-T", "fields", "-E", "separator=,", "-e", "tcp.stream"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    expected_streams: dict[int, int] = {}
    for value in fields:
        expected_streams[int(value)] = expected_streams.get(int(value), 0) + 1
    result = analyze([capture], tmp_path)
    assert result.flows >= 1
    flows = pq.read_table(tmp_path / "flows.parquet", columns=["proto", "orig_pkts", "resp_pkts"]).to_pylist()
    tcp = [f for f in flows if f["proto"] == "tcp"]
    assert len(tcp) == len(expected_streams)
    ours = sorted(f["orig_pkts"] + f["resp_pkts"] for f in tcp)
    assert ours == sorted(expected_streams.values())


def test_first_ts_is_utc_iso(corpus: Path, tmp_path: Path) -> None:
    result = analyze([corpus / "arp" / "arp-who-has.pcap"], tmp_path)
    summary = result.summary()
    first = summary["first_ts"]
    assert isinstance(first, str)
    assert first.endswith("Z")
    parsed = datetime.strptime(first[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    assert result.totals.first_ts_ns is not None
    assert int(parsed.timestamp()) == result.totals.first_ts_ns // 1_000_000_000
    assert summary["protocols_by_packets"] == {"arp": 2}


def test_collector_pacing_freezes_per_batch_and_leaves_nothing_frozen(tmp_path: Path) -> None:
    """Objects are frozen after every batch during the run (so collections skip them) and the run
    hands everything back to the collector when it ends, also when it fails."""
    import gc

    from fieldward.errors import FieldWardError
    from fieldward.generator import GeneratorConfig, generate_capture
    from fieldward.pipeline import AnalysisOptions

    capture = tmp_path / "plant.pcap"
    generate_capture(capture, GeneratorConfig(devices=6, minutes=0.2, seed=3))
    frozen: list[int] = []

    def progress(_capture: str, _done: int, _total: int) -> None:
        frozen.append(gc.get_freeze_count())

    analyze([capture], tmp_path / "out", AnalysisOptions(batch_packets=64), progress)
    assert len(frozen) > 3
    assert all(count > 0 for count in frozen)
    assert gc.get_freeze_count() == 0
    with pytest.raises(FieldWardError):
        analyze([tmp_path / "absent.pcap"], tmp_path / "out2")
    assert gc.get_freeze_count() == 0


def test_a_stray_packet_with_a_wild_clock_does_not_split_open_flows(tmp_path: Path) -> None:
    """One UDP packet stamped 3 days ahead in the middle of a Modbus session: the session stays
    one flow (the stray only adds its own), and a real jump between captures still ends flows."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    from fieldward.generator import protocols as p
    from fieldward.pipeline import AnalysisOptions
    from tests.inventory.helpers import tcp_session

    flights = [
        (
            i % 2 == 0,
            p.modbus_adu(
                i // 2, 1, p.modbus_read_request(3, 0, 1) if i % 2 == 0 else p.modbus_read_response(3, [7])
            ),
        )
        for i in range(40)
    ]
    session = tcp_session(("00:0c:29:00:00:01", "10.0.0.1"), ("00:80:f4:00:00:02", "10.0.0.2"), 502, flights)
    for index, packet in enumerate(session):
        packet.time = 1_700_000_000 + index * 0.1
    stray = Ether(src="00:0c:29:00:00:07", dst="00:0c:29:00:00:08") / IP(src="10.0.0.7", dst="10.0.0.8")
    stray = stray / UDP(sport=1, dport=2)
    stray.time = 1_700_000_000 + 3 * 86400  # a wild clock (the reader drops records > 7 days off)
    middle = len(session) // 2
    wrpcap(str(tmp_path / "plain.pcap"), session)
    wrpcap(str(tmp_path / "wild.pcap"), [*session[:middle], stray, *session[middle:]])
    small = AnalysisOptions(batch_packets=8)  # the stray's batch is followed by more of the session
    plain = analyze([tmp_path / "plain.pcap"], tmp_path / "a", small)
    wild = analyze([tmp_path / "wild.pcap"], tmp_path / "b", small)
    assert wild.flows == plain.flows + 1
    later = session[:5]
    for index, packet in enumerate(later):
        packet.time = 1_700_000_000 + 7200 + index * 0.1  # the same 5-tuple two hours later
    wrpcap(str(tmp_path / "later.pcap"), later)
    both = analyze([tmp_path / "plain.pcap", tmp_path / "later.pcap"], tmp_path / "c", small)
    assert both.flows == plain.flows + 1
