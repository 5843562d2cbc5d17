"""The live sensor against offline analysis: corpus captures replayed with tcpreplay over a veth pair
(network namespaces made by the test) must give the results ``analyze`` gives for the same file."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fieldward.pipeline import analyze
from tests.sensor.compare import results
from tests.sensor.lab import LiveSensor, VethLab
from tests.sensor.scans import scan_capture

SINGLE = ["modbus/fuzz-72.pcap", "dhcp/dhcp_flood.pcap", "s7comm/snap7.pcap", "dnp3/dnp3_read.pcap"]
"""Short captures (under 25 s), replayed at their recorded timing: behaviour that depends on packet
timing (polling periods, rates) must come out as offline."""


def _offline(capture: Path, out: Path) -> dict[str, object]:
    analyze([capture], out)
    return results(out)


def _run_sensor(
    lab: VethLab, out: Path, capture: Path, packets: int, *args: str, pps: float | None = None
) -> LiveSensor:
    sensor = LiveSensor(lab, out, "--segment-seconds", "3600", *args)
    try:
        sensor.wait_running()
        sent = lab.replay([capture], pps=pps)
        assert sent.failed == 0, sent.output
        assert sent.sent == packets
        sensor.wait_packets(packets)
        assert sensor.stop() == 0, sensor.output()
    finally:
        sensor.kill()
    return sensor


@pytest.mark.parametrize("name", SINGLE)
def test_live_capture_equals_offline_analyze(lab: VethLab, corpus: Path, tmp_path: Path, name: str) -> None:
    capture = corpus / name
    expected = _offline(capture, tmp_path / "offline")
    packets = int(expected["summary"]["packets"])  # type: ignore[index]
    sensor = _run_sensor(lab, tmp_path / "sensor", capture, packets)
    segments = sensor.segments()
    assert len(segments) == 1
    assert results(segments[0]) == expected
    final = sensor.status()
    assert final["state"] == "stopped"
    assert final["totals"]["packets"] == packets
    assert final["totals"]["kernel_drops"] == 0


def test_two_workers_share_flows_and_merge(lab: VethLab, corpus: Path, tmp_path: Path) -> None:
    """AF_PACKET fanout by flow hash over two processes: every packet analysed once, whole flows per
    worker, merged results equal to one offline run."""
    capture = corpus / "http" / "bro.org.pcap"
    expected = _offline(capture, tmp_path / "offline")
    packets = int(expected["summary"]["packets"])  # type: ignore[index]
    sensor = _run_sensor(lab, tmp_path / "sensor", capture, packets, "--workers", "2", pps=2000)
    final = sensor.status()
    per_worker = [w["packets"] for w in final["workers"]]
    assert sum(per_worker) == packets
    assert min(per_worker) > 0, f"fanout sent everything to one worker: {per_worker}"
    (segment,) = sensor.segments()
    assert results(segment) == expected  # whole device records, alerts, counts
    meta = json.loads((segment / "segment.json").read_text())
    assert meta["workers"] == 2
    assert meta["failed_workers"] == []


def test_scan_split_between_two_workers_alerts_as_offline(lab: VethLab, tmp_path: Path) -> None:
    """A port scan, a port sweep and a ping sweep whose flows the kernel spreads over two workers:
    the cross-flow detectors run over the merged segment, so the alerts equal offline ``analyze``."""
    capture = scan_capture(tmp_path / "scan.pcap")
    expected = _offline(capture, tmp_path / "offline")
    found: list[tuple[str, ...]] = expected["alerts"]  # type: ignore[assignment]
    assert {a[0] for a in found} >= {"recon.port_scan_vertical", "recon.ping_sweep"}
    packets = int(expected["summary"]["packets"])  # type: ignore[index]
    sensor = _run_sensor(lab, tmp_path / "sensor", capture, packets, "--workers", "2", pps=500)
    final = sensor.status()
    per_worker = [w["packets"] for w in final["workers"]]
    assert sum(per_worker) == packets
    assert min(per_worker) > 0, f"fanout sent the whole scan to one worker: {per_worker}"
    (segment,) = sensor.segments()
    assert results(segment) == expected
    live = [json.loads(line) for line in (tmp_path / "sensor" / "alerts-live.jsonl").read_text().splitlines()]
    correlated = {a["type"] for a in live if a["worker"] is None}
    assert {"recon.port_scan_vertical", "recon.port_scan_horizontal", "recon.ping_sweep"} <= correlated
    assert final["alerts_correlated"] == len([a for a in live if a["worker"] is None])


def test_restart_resumes_with_next_segment(lab: VethLab, corpus: Path, tmp_path: Path) -> None:
    capture = corpus / "modbus" / "fuzz-72.pcap"
    out = tmp_path / "sensor"
    _run_sensor(lab, out, capture, 36)
    baseline = out / "state" / "worker-0.baseline.json"
    assert baseline.is_file()
    second = _run_sensor(lab, out, capture, 36)
    names = [p.name for p in second.segments()]
    assert names == ["00000001", "00000002"]
    first, again = (results(p) for p in second.segments())
    assert again["event_rows"] == first["event_rows"]
    assert json.loads((out / "state.json").read_text())["next_segment"] == 3


def _iso_ns(text: str) -> int:
    stamp, _, frac = text.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(stamp + "+00:00").timestamp()
    return int(seconds) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


def test_alerts_are_reported_within_a_second_at_low_rate(lab: VethLab, corpus: Path, tmp_path: Path) -> None:
    """10 packets per second: each alert line appears in alerts-live.jsonl less than 1 s after the
    packet that raised it was captured."""
    capture = corpus / "modbus" / "fuzz-72.pcap"
    sensor = LiveSensor(lab, tmp_path / "sensor", "--segment-seconds", "3600")
    live = tmp_path / "sensor" / "alerts-live.jsonl"
    seen: dict[str, int] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if live.is_file():
                now = time.time_ns()
                for line in live.read_text().splitlines():
                    alert = json.loads(line)
                    seen.setdefault(alert["id"], now - _iso_ns(alert["first_ts"]))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        sensor.wait_running()
        watcher.start()
        lab.replay([capture], pps=10)
        sensor.wait_packets(36)
        time.sleep(1.5)
        done.set()
        watcher.join()
        assert sensor.stop() == 0
    finally:
        done.set()
        sensor.kill()
    assert seen, "no live alert was written"
    assert max(seen.values()) < 1_000_000_000, {k: v / 1e9 for k, v in seen.items()}
    final = [json.loads(line) for line in (sensor.segments()[0] / "alerts.jsonl").read_text().splitlines()]
    # every live alert is in the segment's final list; alerts that need a flow's end (a PDU cut by a
    # stream gap) come when the flow expires or the segment ends
    assert set(seen) <= {a["id"] for a in final}


def test_metrics_endpoint_speaks_prometheus_text(lab: VethLab, corpus: Path, tmp_path: Path) -> None:
    capture = corpus / "s7comm" / "snap7.pcap"
    sensor = LiveSensor(lab, tmp_path / "sensor", "--segment-seconds", "3600")
    try:
        sensor.wait_running()
        lab.replay([capture], pps=1000)
        status = sensor.wait_packets(64)
        url = status["metrics"]
        fetch = (
            f"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen({url!r}).read().decode())"
        )
        import subprocess
        import sys

        text = subprocess.run(
            ["ip", "netns", "exec", lab.ns_sensor, sys.executable, "-c", fetch],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        health = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                lab.ns_sensor,
                sys.executable,
                "-c",
                fetch.replace("/metrics", "/healthz"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert sensor.stop() == 0
    finally:
        sensor.kill()
    samples = {
        (s.name, s.labels.get("worker", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("fieldward_sensor_packets_total", "0")] == 64
    assert samples[("fieldward_sensor_kernel_drops_total", "0")] == 0
    assert samples[("fieldward_sensor_own_drops_total", "0")] == 0
    assert ("fieldward_sensor_interface_drops_total", "") in samples
    assert samples[("fieldward_sensor_interface_up", "")] == 1
    assert json.loads(health)["healthy"] is True
