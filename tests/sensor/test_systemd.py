"""The systemd packaging: the unit file is valid, and a capture filter with spaces reaches the sensor
whole through ``FIELDWARD_SENSOR_BPF`` (the unit's environment file), with no drop-in."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fieldward.capture.live import compile_bpf
from fieldward.pipeline import analyze
from tests.sensor.lab import LiveSensor, VethLab

PACKAGING = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
FILTER = "tcp and (port 80)"


def _program() -> list[str]:
    exe = Path(sys.executable).with_name("fieldward")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fieldward.cli"]


def _environment_file(path: Path) -> dict[str, str]:
    """KEY="value" lines as systemd's EnvironmentFile= reads them (comments and quotes)."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        words = shlex.split(value)
        found[key.strip()] = words[0] if len(words) == 1 else value
    return found


def test_unit_file_verifies(tmp_path: Path) -> None:
    analyzer = shutil.which("systemd-analyze")
    if analyzer is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (PACKAGING / "fieldward-sensor@.service").read_text()
    assert "$FIELDWARD_SENSOR_ARGS" in unit
    assert "EnvironmentFile=-/etc/fieldward/sensor-%i.env" in unit
    # the installed program's path is a placeholder here; everything else is verified as written
    (tmp_path / "fieldward-sensor@.service").write_text(
        unit.replace("/opt/fieldward/bin/fieldward", "/bin/true")
    )
    done = subprocess.run(
        [analyzer, "verify", str(tmp_path / "fieldward-sensor@eth1.service")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    problems = [line for line in done.stderr.splitlines() if "fieldward-sensor@" in line]
    assert problems == []


def test_example_environment_file_has_a_filter_that_compiles() -> None:
    env = _environment_file(PACKAGING / "sensor.env.example")
    assert " " in env["FIELDWARD_SENSOR_BPF"]
    compile_bpf(env["FIELDWARD_SENSOR_BPF"])
    assert "--bpf" not in env["FIELDWARD_SENSOR_ARGS"]


def test_filter_from_environment_is_read_whole(tmp_path: Path) -> None:
    """A bad filter from the environment is reported whole: it was not split on its spaces."""
    bad = "tcp port 502 and and udp"
    done = subprocess.run(
        [*_program(), "sensor", "run", "-i", "fwnosuch0", "-o", str(tmp_path / "out"), "--no-metrics"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FIELDWARD_SENSOR_BPF": bad},
    )
    assert done.returncode == 3, done.stderr
    assert f"bad --bpf filter '{bad}'" in done.stderr


def test_live_sensor_applies_the_filter_from_the_environment(
    lab: VethLab, corpus: Path, tmp_path: Path
) -> None:
    """Web traffic and a DHCP flood replayed; the filter from the environment keeps only the web."""
    web, other = corpus / "http" / "bro.org.pcap", corpus / "dhcp" / "dhcp_flood.pcap"
    wanted = int(analyze([web], tmp_path / "offline").totals.packets)
    sensor = LiveSensor(
        lab, tmp_path / "sensor", "--segment-seconds", "3600", env={"FIELDWARD_SENSOR_BPF": FILTER}
    )
    try:
        sensor.wait_running()
        sent = lab.replay([web, other], pps=2000)
        assert sent.failed == 0, sent.output
        assert sent.sent > wanted
        sensor.wait_packets(wanted)
        assert sensor.stop() == 0, sensor.output()
    finally:
        sensor.kill()
    assert sensor.status()["totals"]["packets"] == wanted
    (segment,) = sensor.segments()
    assert set(pq.read_table(segment / "flows.parquet")["proto"].to_pylist()) == {"tcp"}
