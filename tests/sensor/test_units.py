"""Parts of the live sensor that need no privileges: the streaming analysis, the evidence ring, the
segment merge, BPF compilation and the error messages."""

from __future__ import annotations

import ctypes.util
import json
from pathlib import Path

import pytest

from fieldward.capture.batch import PacketBatch
from fieldward.capture.live import LiveCapture, LiveCaptureError, compile_bpf, interface_state
from fieldward.capture.reader import open_capture
from fieldward.pipeline import Analysis, AnalysisOptions, analyze
from fieldward.sensor.merge import merge_devices, merge_segment
from fieldward.sensor.ring import EvidenceRing
from fieldward.sensor.sink import LocalSink, ResultSink
from tests.sensor.compare import results


def _packets(capture: Path) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    with open_capture(capture) as reader:
        for batch in reader:
            out.extend((int(batch.ts_ns[i]), batch.packet(i)) for i in range(len(batch)))
    return out


@pytest.mark.parametrize("size", [1, 7, 100])
def test_streaming_analysis_in_small_batches_equals_analyze(corpus: Path, tmp_path: Path, size: int) -> None:
    """The live micro-batches (any size) give what one analyze run gives."""
    capture = corpus / "modbus" / "fuzz-72.pcap"
    analyze([capture], tmp_path / "offline")
    analysis = Analysis(tmp_path / "stream", AnalysisOptions())
    with open_capture(capture, batch_packets=size) as reader:
        for batch in reader:
            analysis.feed(batch)
    analysis.finish([capture])
    assert results(tmp_path / "stream") == results(tmp_path / "offline")


def test_analysis_finishes_once(tmp_path: Path) -> None:
    analysis = Analysis(None)
    analysis.feed(PacketBatch.empty())
    analysis.finish()
    with pytest.raises(Exception, match="already finished"):
        analysis.finish()


def test_evidence_ring_round_trip_and_bounded(corpus: Path, tmp_path: Path) -> None:
    capture = corpus / "http" / "bro.org.pcap"
    ring = EvidenceRing(tmp_path / "ring", max_bytes=300_000, file_bytes=100_000)
    with open_capture(capture, batch_packets=50) as reader:
        for batch in reader:
            ring.write(batch)
    ring.close()
    files = ring.files()
    assert ring.stats.deleted_files > 0
    assert sum(p.stat().st_size for p in files) <= 300_000 + 100_000  # the cap plus the file being written
    kept = [pkt for f in files for pkt in _packets(f)]
    original = _packets(capture)
    assert kept == original[-len(kept) :]  # the newest packets, bytes and nanosecond times intact
    assert ring.files_since(kept[-1][0]) == files[-1:]
    again = EvidenceRing(tmp_path / "ring", max_bytes=300_000, file_bytes=100_000)
    assert again.files() == files  # a restart keeps the ring and numbers on


def test_evidence_ring_counts_unwritable_packets(tmp_path: Path) -> None:
    """A ring folder that cannot take files (here: replaced by a plain file) loses evidence, counted,
    and never raises into the capture loop; it writes again once the folder is back."""
    folder = tmp_path / "ring"
    ring = EvidenceRing(folder, max_bytes=1_000_000)
    folder.rmdir()
    folder.write_bytes(b"not a folder")
    batch = PacketBatch.from_packets([b"\x00" * 60] * 3, ts_ns=[1, 2, 3])
    ring.write(batch)
    assert ring.stats.skipped_packets == 3
    assert "evidence ring" in ring.stats.last_error
    folder.unlink()
    folder.mkdir()
    ring.write(batch)
    assert ring.stats.written_packets == 3
    assert ring.stats.last_error == ""
    assert len(ring.files()) == 1


def _device(id_: str, packets: int, vendor: str | None, conf: float, ips: list[str]) -> dict[str, object]:
    return {
        "id": id_,
        "mac": None,
        "ips": ips,
        "local": True,
        "router": False,
        "via": None,
        "vlans": [],
        "first_seen": "2024-01-01T00:00:01.000000000Z",
        "last_seen": "2024-01-01T00:00:02.000000000Z",
        "packets": packets,
        "vendor": vendor,
        "confidence": {"vendor": conf} if vendor else {},
        "protocols": ["modbus"],
        "roles": [{"protocol": "modbus", "role": "master", "peers": packets}],
        "services": [],
        "address_history": [{"ip": ip, "first_seen": "2024-01-01T00:00:01Z", "last_seen": "x"} for ip in ips],
        "attributes": {},
        "facts": {"uses": [f"tcp/{packets}"]},
    }


def test_merge_devices_adds_packets_and_keeps_the_surer_value() -> None:
    a = _device("ip:10.0.0.1", 3, "Acme", 0.4, ["10.0.0.1"])
    b = _device("ip:10.0.0.1", 5, "Siemens", 0.9, ["10.0.0.9"])
    c = _device("ip:10.0.0.2", 1, None, 0.0, ["10.0.0.2"])
    merged = {d["id"]: d for d in merge_devices([[a, c], [b]])}
    one = merged["ip:10.0.0.1"]
    assert one["packets"] == 8
    assert one["vendor"] == "Siemens"
    assert one["ips"] == ["10.0.0.1", "10.0.0.9"]
    assert one["roles"] == [{"protocol": "modbus", "role": "master", "peers": 5}]
    assert one["facts"] == {"uses": ["tcp/3", "tcp/5"]}
    assert merged["ip:10.0.0.2"]["packets"] == 1


def test_merge_of_one_worker_moves_the_folder_unchanged(corpus: Path, tmp_path: Path) -> None:
    analyze([corpus / "s7comm" / "snap7.pcap"], tmp_path / "seg" / "worker-0")
    before = {
        p.relative_to(tmp_path / "seg" / "worker-0"): p.read_bytes() for p in (tmp_path / "seg").rglob("*.*")
    }
    merge_segment(tmp_path / "seg", [tmp_path / "seg" / "worker-0"], {"segment": 7})
    after = {p.relative_to(tmp_path / "seg"): p.read_bytes() for p in (tmp_path / "seg").rglob("*.*")}
    assert json.loads(after.pop(Path("segment.json"))) == {"segment": 7}
    assert after == before


def test_merge_of_two_workers_adds_up(corpus: Path, tmp_path: Path) -> None:
    """Two workers that each analysed one capture: the merged folder counts both."""
    first, second = corpus / "s7comm" / "snap7.pcap", corpus / "modbus" / "fuzz-72.pcap"
    seg = tmp_path / "seg"
    analyze([first], seg / "worker-0")
    analyze([second], seg / "worker-1")
    one, two = results(seg / "worker-0"), results(seg / "worker-1")
    merge_segment(seg, [seg / "worker-0", seg / "worker-1"], {"segment": 1})
    merged = results(seg, exact_devices=False)
    assert merged["summary"]["packets"] == one["summary"]["packets"] + two["summary"]["packets"]
    assert merged["summary"]["flows"] == one["summary"]["flows"] + two["summary"]["flows"]
    assert merged["alerts"] == sorted(one["alerts"] + two["alerts"])
    for log in set(one["event_rows"]) | set(two["event_rows"]):
        assert merged["event_rows"][log] == one["event_rows"].get(log, 0) + two["event_rows"].get(log, 0)
    assert {d["id"] for d in merged["devices"]} == {d["id"] for d in one["devices"] + two["devices"]}


@pytest.mark.skipif(ctypes.util.find_library("pcap") is None, reason="libpcap is not installed")
def test_compile_bpf_uses_tcpdump_syntax() -> None:
    program = compile_bpf("tcp port 502")
    assert len(program) > 4
    assert program[-1][0] == 0x06  # BPF_RET
    with pytest.raises(LiveCaptureError, match="bad --bpf filter"):
        compile_bpf("tcp port nonsense")


def test_missing_interface_message() -> None:
    assert interface_state("nosuch0").exists is False
    with pytest.raises(LiveCaptureError, match="no such interface: nosuch0"):
        LiveCapture("nosuch0")


def test_local_sink_is_a_result_sink(tmp_path: Path) -> None:
    sink = LocalSink()
    assert isinstance(sink, ResultSink)
    outcome = sink.publish(tmp_path)
    assert outcome.delivered
    assert outcome.pending == 0
