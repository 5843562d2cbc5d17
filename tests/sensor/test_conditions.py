"""Bad conditions for the live sensor: each gives a clear message and the sensor recovers or stops
cleanly, never silently."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldward.pipeline import analyze
from tests.sensor.compare import results
from tests.sensor.lab import LiveSensor, VethLab


def _program() -> list[str]:
    exe = Path(sys.executable).with_name("fieldward")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fieldward.cli"]


def test_missing_interface_fails_at_once_with_no_wait(lab: VethLab, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lab.ns_sensor,
            *_program(),
            "sensor",
            "run",
            "-i",
            "nosuch0",
            "-o",
            str(tmp_path),
            "--no-wait",
            "--no-metrics",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3
    assert "no such interface: nosuch0" in done.stderr


def test_bad_filter_is_reported(lab: VethLab, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lab.ns_sensor,
            *_program(),
            "sensor",
            "run",
            "-i",
            lab.sensor_if,
            "-o",
            str(tmp_path),
            "--bpf",
            "tcp port nonsense",
            "--no-metrics",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3
    assert "bad --bpf filter 'tcp port nonsense'" in done.stderr


def test_permission_denied_says_what_is_needed(lab: VethLab) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    shared = Path(tempfile.mkdtemp(prefix="fw-nobody-"))  # pytest's tmp_path is private to root
    shared.chmod(0o777)
    nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    run = ["sensor", "run", "-i", lab.sensor_if, "-o", str(shared / "out"), "--no-metrics"]
    # the systemd unit gives numba a writable cache the same way
    env = {**os.environ, "NUMBA_CACHE_DIR": str(shared / "numba"), "FIELDWARD_HOME": str(shared / "home")}
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", lab.ns_sensor, *nobody, *_program(), *run],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    if done.returncode != 3 and "CAP_NET_RAW" not in done.stderr:
        pytest.skip(f"user nobody cannot run this installation: {done.stderr.strip()[-300:]}")
    assert done.returncode == 3
    assert "permission denied capturing on fwcap0" in done.stderr
    assert "CAP_NET_RAW" in done.stderr


@pytest.fixture
def sensor_factory(lab: VethLab) -> Iterator[list[LiveSensor]]:
    started: list[LiveSensor] = []
    yield started
    for sensor in started:
        sensor.kill()


def test_interface_appears_later_and_is_captured(
    lab: VethLab, corpus: Path, tmp_path: Path, sensor_factory: list[LiveSensor]
) -> None:
    sensor = LiveSensor(lab, tmp_path / "sensor", "--segment-seconds", "3600", interface="late0")
    sensor_factory.append(sensor)
    waiting = sensor.wait(lambda s: "late0" in json.dumps(s.get("errors", {})), 90, "a waiting message")
    assert waiting["state"] == "degraded"
    assert "no such interface: late0" in json.dumps(waiting["errors"])
    lab.set_sensor_link(False)
    lab.ns(lab.ns_sensor, "ip", "link", "set", lab.sensor_if, "name", "late0")
    lab.ns(lab.ns_sensor, "ip", "link", "set", "late0", "up")
    sensor.wait_running(60)
    lab.replay([corpus / "s7comm" / "snap7.pcap"], pps=1000)
    sensor.wait_packets(64)
    assert sensor.stop() == 0
    assert sensor.status()["totals"]["packets"] == 64


def test_interface_down_then_up(
    lab: VethLab, corpus: Path, tmp_path: Path, sensor_factory: list[LiveSensor]
) -> None:
    sensor = LiveSensor(lab, tmp_path / "sensor", "--segment-seconds", "3600")
    sensor_factory.append(sensor)
    sensor.wait_running()
    lab.set_sensor_link(False)
    down = sensor.wait(lambda s: s["state"] == "degraded", 30, "degraded state")
    assert "is down" in json.dumps(down["errors"])
    assert down["healthy"] is False
    lab.set_sensor_link(True)
    sensor.wait_running(30)
    lab.replay([corpus / "s7comm" / "snap7.pcap"], pps=1000)
    sensor.wait_packets(64)
    assert sensor.stop() == 0
    assert "errors" in sensor.status()


def test_full_evidence_disk_keeps_analysis_exact(
    lab: VethLab, corpus: Path, tmp_path: Path, sensor_factory: list[LiveSensor]
) -> None:
    """The evidence ring on a 256 KiB file system (bro.org.pcap is 10 times that): the ring drops its
    oldest files and counts what it could not write; the analysis is unaffected."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], check=True)
    try:
        capture = corpus / "http" / "bro.org.pcap"
        analyze([capture], tmp_path / "offline")
        sensor = LiveSensor(
            lab, tmp_path / "sensor", "--segment-seconds", "3600", "--evidence-dir", str(small)
        )
        sensor_factory.append(sensor)
        sensor.wait_running()
        lab.replay([capture], pps=2000)
        sensor.wait_packets(751)
        assert sensor.stop() == 0
        final = sensor.status()
        worker = final["workers"][0]
        assert worker["ring_skipped"] > 0 or worker["ring_bytes"] <= 256 * 1024
        assert sum(p.stat().st_size for p in small.rglob("*.pcapng")) <= 256 * 1024
        (segment,) = sensor.segments()
        assert results(segment) == results(tmp_path / "offline")
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_unreachable_console_spools_and_keeps_running(
    lab: VethLab, corpus: Path, tmp_path: Path, sensor_factory: list[LiveSensor]
) -> None:
    token = tmp_path / "token"
    token.write_text("fws_" + "x" * 40 + "\n")
    token.chmod(0o600)
    spool = tmp_path / "spool"
    sensor = LiveSensor(
        lab,
        tmp_path / "sensor",
        "--segment-seconds",
        "2",
        "--console",
        "https://127.0.0.1:9",
        "--token-file",
        str(token),
        "--spool",
        str(spool),
    )
    sensor_factory.append(sensor)
    sensor.wait_running()
    lab.replay([corpus / "modbus" / "fuzz-72.pcap"], pps=200)
    status = sensor.wait(lambda s: s.get("publish_pending_batches", 0) > 0, 60, "spooled batches")
    assert "publish" in status["errors"]
    assert "unreachable" in status["errors"]["publish"] or "connect" in status["errors"]["publish"].lower()
    assert sensor.proc.poll() is None
    assert sensor.stop() == 0
    assert any(spool.rglob("*")), "nothing kept in the spool"


def test_segments_split_a_long_run_without_losing_packets(
    lab: VethLab, corpus: Path, tmp_path: Path, sensor_factory: list[LiveSensor]
) -> None:
    sensor = LiveSensor(lab, tmp_path / "sensor", "--segment-seconds", "1")
    sensor_factory.append(sensor)
    sensor.wait_running()
    lab.replay([corpus / "http" / "bro.org.pcap"], pps=150)  # about 5 s
    sensor.wait_packets(751)
    assert sensor.stop() == 0
    segments = sensor.segments()
    assert len(segments) >= 3
    packets = [json.loads((p / "summary.json").read_text())["packets"] for p in segments]
    assert sum(packets) == 751
    assert [int(p.name) for p in segments] == list(range(1, len(segments) + 1))
