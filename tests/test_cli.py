"""End-to-end tests of the ``fieldward`` command: real processes, real files."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run(
        [sys.executable, "-m", "fieldward.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )


def test_not_a_capture_fails_with_one_line(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not a packet capture\n" * 10)
    proc = run_cli("analyze", str(bogus), "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "not a pcap or pcapng capture" in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_file_fails_with_one_line(tmp_path: Path) -> None:
    proc = run_cli("analyze", str(tmp_path / "absent.pcap"), "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "absent.pcap" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_analyze_writes_flows_and_summary(corpus: Path, tmp_path: Path) -> None:
    capture = corpus / "modbus" / "modbusSmall.pcap"
    out = tmp_path / "out"
    proc = run_cli("analyze", str(capture), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "packets" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    flows = pq.read_table(out / "flows.parquet")
    assert summary["flows"] == flows.num_rows > 0
    # Every packet of a TCP/IP capture lands in exactly one flow.
    assert (
        sum(flows.column("orig_pkts").to_pylist()) + sum(flows.column("resp_pkts").to_pylist())
        == (summary["packets"])
    )
    # The capture holds Modbus/TCP and a few DNS datagrams: every byte is counted under one of them.
    assert set(summary["protocols_by_bytes"]) == {"ipv4/tcp", "ipv4/udp"}
    assert sum(summary["protocols_by_bytes"].values()) == summary["wire_bytes"]
    assert sum(summary["protocols_by_packets"].values()) == summary["packets"]


def test_analyze_several_captures_and_gzip(corpus: Path, tmp_path: Path) -> None:
    first = corpus / "dnp3" / "dnp3_read.pcap"
    second = tmp_path / "mdns.pcap.gz"
    second.write_bytes(gzip.compress((corpus / "dns" / "mdns.pcap").read_bytes()))
    out = tmp_path / "out"
    proc = run_cli("analyze", str(first), str(second), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["captures"] == [str(first), str(second)]
    single = run_cli("analyze", str(first), "--out", str(tmp_path / "one"), "--quiet")
    assert single.returncode == 0
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["packets"] > one["packets"]


def test_generate_then_analyze_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    for path in (a, b):
        proc = run_cli("generate", "--out", str(path), "--devices", "6", "--minutes", "0.2", "--seed", "3")
        assert proc.returncode == 0, proc.stderr
    assert a.read_bytes() == b.read_bytes()
    proc = run_cli("analyze", str(a), "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["packets"] > 100
    assert summary["weird_total"] == 0, summary["weird"]


def test_demo_runs_with_nothing_but_the_package(tmp_path: Path) -> None:
    proc = run_cli("demo", "--out", str(tmp_path / "demo"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["packets"] > 1000
    assert summary["flows"] > 10
    assert "Protocols by bytes" in proc.stdout
    alerts = [json.loads(line) for line in (tmp_path / "demo" / "alerts.jsonl").read_text().splitlines()]
    types = {a["type"] for a in alerts}
    for expected in (
        "operations.s7_plc_stop",
        "recon.port_scan_vertical",
        "threats.brute_force",
        "baseline.modbus_write_from_unknown_master",
    ):
        assert expected in types  # every attack of the sample is found
    assert summary["alerts_suppressed"].get("learning", 0) == 0  # the learned minutes are clean
    # ... and its devices are assessed against the bundled real NVD records
    found = json.loads((tmp_path / "demo" / "vulnerabilities.json").read_text())["findings"]
    assert {f["vulnerability_id"] for f in found} == {"CVE-2022-1161", "CVE-2023-25619"}
    assert "Site risk" in proc.stdout


def test_console_script_is_installed() -> None:
    exe = shutil.which("fieldward", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the fieldward console script is not on this interpreter's bin directory")
    proc = subprocess.run([exe, "version"], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip()[0].isdigit()


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated plant analysed by the command line (with its ground truth beside it)."""
    folder = tmp_path_factory.mktemp("cli-inventory")
    capture, truth = folder / "plant.pcap", folder / "truth.json"
    proc = run_cli(
        "generate", "--out", str(capture), "--devices", "20", "--minutes", "2", "--truth", str(truth)
    )
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("analyze", str(capture), "--out", str(folder / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "Device inventory" in proc.stdout
    assert "devices.json" in proc.stdout
    return folder


def test_generate_writes_the_ground_truth(analysed: Path) -> None:
    truth = json.loads((analysed / "truth.json").read_text())
    assert truth["generator"]["devices"] == 20
    assert len(truth["devices"]) == 20
    assert {"mac", "ip", "vendor", "device_type", "purdue_level"} <= set(truth["devices"][0])


def test_devices_filters_by_type_vendor_level_and_text(analysed: Path) -> None:
    out = analysed / "out"
    every = json.loads(run_cli("devices", str(out), "--json").stdout)
    assert len(every) == len(json.loads((out / "devices.json").read_text())["devices"])
    plcs = json.loads(run_cli("devices", str(out), "--type", "plc", "--json").stdout)
    assert plcs
    assert all(d["device_type"] == "plc" for d in plcs)
    assert len(plcs) == sum(1 for d in every if d["device_type"] == "plc")
    siemens = json.loads(run_cli("devices", str(out), "--vendor", "siem", "--json").stdout)
    assert siemens
    assert all("Siemens" in d["vendor"] for d in siemens)
    level1 = json.loads(run_cli("devices", str(out), "--level", "1", "--json").stdout)
    assert {d["purdue_level"] for d in level1} == {1}
    ip = every[0]["ips"][0]
    found = json.loads(run_cli("devices", str(out), "--search", ip, "--json").stdout)
    assert [d["id"] for d in found] == [every[0]["id"]]
    table = run_cli("devices", str(out), "--type", "plc")
    assert table.returncode == 0
    assert f"Device inventory ({len(plcs)} devices)" in table.stdout


def test_devices_on_a_folder_without_inventory_fails_with_one_line(tmp_path: Path) -> None:
    proc = run_cli("devices", str(tmp_path))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "devices.json" in proc.stderr
    (tmp_path / "devices.json").write_text("[1, 2]")
    proc = run_cli("devices", str(tmp_path))
    assert proc.returncode == 2
    assert "not a FieldWard devices.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_user_fingerprint_rules_apply_and_bad_ones_fail_early(analysed: Path, tmp_path: Path) -> None:
    rules = tmp_path / "site.yaml"
    rules.write_text(
        "rules:\n"
        "  - name: site-naming\n"
        "    match: {role: '^mqtt/client$'}\n"
        "    set: {model: Plant sensor (site rule)}\n"
        "    confidence: 0.99\n"
    )
    out = tmp_path / "out"
    proc = run_cli(
        "analyze", str(analysed / "plant.pcap"), "--out", str(out), "--quiet", "--fingerprints", str(rules)
    )
    assert proc.returncode == 0, proc.stderr
    sensors = json.loads(run_cli("devices", str(out), "--type", "iot_sensor", "--json").stdout)
    assert sensors
    assert {d["model"] for d in sensors} == {"Plant sensor (site rule)"}
    rules.write_text("rules:\n  - {name: broken, match: {a: '('}, set: {os: x}, confidence: 0.5}\n")
    proc = run_cli("analyze", str(analysed / "plant.pcap"), "--out", str(out), "--fingerprints", str(rules))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "bad regular expression" in proc.stderr


def test_policy_test_explains_allow_and_deny(tmp_path: Path) -> None:
    policy = (
        Path(__file__).resolve().parents[1] / "src" / "fieldward" / "trust" / "data" / "policy.example.yaml"
    )
    device = {
        "device_id": "rtu-7",
        "group": "plant-north",
        "device_type": "rtu",
        "model": "ACME-RTU-200",
        "firmware": "2.5.0",
        "attested_at": "2099-01-01T00:00:00Z",
        "verdict": "healthy",
        "quarantined": False,
        "open_alert_severity": None,
    }
    allowed = run_cli("policy", "test", str(policy), json.dumps(device), "publish", "devices/rtu-7/state")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "ALLOW" in allowed.stdout.splitlines()[0]
    other = run_cli("policy", "test", str(policy), json.dumps(device), "publish", "devices/rtu-8/state")
    assert other.returncode == 1
    assert "DENY" in other.stdout.splitlines()[0]
    quarantined = run_cli(
        "policy",
        "test",
        str(policy),
        json.dumps({**device, "quarantined": True}),
        "publish",
        "devices/rtu-7/state",
    )
    assert quarantined.returncode == 1
    assert "quarantine-lockdown" in quarantined.stdout
    bad = run_cli("policy", "test", str(tmp_path / "absent.yaml"), json.dumps(device), "publish", "x")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1


def test_fleet_simulate_reports_the_expected_outcomes() -> None:
    proc = run_cli(
        "fleet", "simulate", "--devices", "10", "--tampered", "2", "--expired", "1", "--overreach", "1"
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["unexpected"] == []
    assert report["counts"]["compromised"] == 2
    assert report["counts"]["expired_refused"] == 1
    assert report["counts"]["overreach_denied"] == 1


def test_agent_usage_error_is_exit_2() -> None:
    proc = run_cli("agent", "enroll")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
