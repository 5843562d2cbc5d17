"""Third-party dissectors: a real distribution with an entry point, built from docs/plugins.md."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from fieldward.pipeline import analyze
from fieldward.protocols.registry import Registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def example_code() -> str:
    """The worked example's Python code block from docs/plugins.md."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    (code,) = [b for b in blocks if "class HeartbeatDissector" in b]
    return code


def install_plugin(site: Path, entry_value: str = "fieldward_heartbeat:HeartbeatDissector") -> None:
    """Lay out an installed distribution (module + dist-info with entry_points.txt) under ``site``."""
    (site / "fieldward_heartbeat.py").write_text(example_code())
    info = site / "fieldward_heartbeat-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fieldward-heartbeat\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[fieldward.protocols]\nheartbeat = {entry_value}\n")


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site)
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("fieldward_heartbeat", None)


def heartbeat(device: str) -> bytes:
    body = device.encode()
    return b"HB" + struct.pack(">BH", 1, len(body)) + body


def heartbeat_capture(path: Path, port: int) -> None:
    c, s = "10.1.0.20", "10.1.0.1"
    stream = heartbeat("gw-north") + heartbeat("gw-south")
    pkts = [
        Ether() / IP(src=c, dst=s) / TCP(sport=50000, dport=port, flags="S", seq=99),
        Ether() / IP(src=s, dst=c) / TCP(sport=port, dport=50000, flags="SA", seq=7, ack=100),
        Ether() / IP(src=c, dst=s) / TCP(sport=50000, dport=port, flags="PA", seq=100) / stream[:5],
        Ether() / IP(src=c, dst=s) / TCP(sport=50000, dport=port, flags="PA", seq=105) / stream[5:],
    ]
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i
    wrpcap(str(path), pkts)


def test_entry_point_plugin_is_registered(plugin_site: Path) -> None:
    registry = Registry.default()
    assert "heartbeat" in registry.names()
    entry = next(e for e in registry if e.name == "heartbeat")
    assert entry.origin == "plugin:fieldward-heartbeat"
    assert Registry.default(plugins=False).names().count("heartbeat") == 0


def test_plugin_dissects_in_analyze(plugin_site: Path, tmp_path: Path) -> None:
    capture = tmp_path / "hb.pcap"
    heartbeat_capture(capture, port=9100)
    result = analyze([capture], tmp_path / "out")
    assert result.dissected_flows.get("heartbeat") == 1
    rows = pq.read_table(tmp_path / "out" / "events" / "heartbeat.parquet").to_pylist()
    assert [(r["device"], r["version"], r["orig_h"], r["resp_p"]) for r in rows] == [
        ("gw-north", 1, "10.1.0.20", 9100),
        ("gw-south", 1, "10.1.0.20", 9100),
    ]


def test_broken_plugin_is_reported_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site, entry_value="fieldward_heartbeat:DoesNotExist")
    monkeypatch.syspath_prepend(str(site))
    registry = Registry.default()
    assert "heartbeat" not in registry.names()
    assert any("DoesNotExist" in f.error for f in registry.failures)
    sys.modules.pop("fieldward_heartbeat", None)


def test_protocols_command_lists_plugins(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site)
    env = dict(os.environ, PYTHONPATH=str(site), COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-m", "fieldward.cli", "protocols"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if "heartbeat" in line)
    assert "plugin:fieldward-heartbeat" in line
    assert "9100" in line


def test_protocols_command_lists_builtins_with_their_selectors() -> None:
    env = dict(os.environ, COLUMNS="250")
    proc = subprocess.run(
        [sys.executable, "-m", "fieldward.cli", "protocols"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("│")}
    for entry in Registry.default():
        assert entry.dissector.name in rows
    assert "47808-47823" in rows["bacnet"]  # a port run is shown as a range
    assert "0x88cc" in rows["lldp"]  # layer-2 dissectors show their EtherTypes
    assert "SNAP 00000c/2000" in rows["cdp"]
