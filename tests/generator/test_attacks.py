"""Attack scenarios of the generator: valid packets, ground truth that matches them, clean traffic left
untouched, and the operations and reconnaissance scenarios detected end to end by ``analyze``."""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fieldward.cli import app
from fieldward.errors import ConfigError
from fieldward.generator import GeneratorConfig, generate_capture
from fieldward.generator.attacks import (
    ALL,
    ATTACK_PROTOCOL_NAMES,
    CATALOG,
    ROGUE_HOST,
    Scenario,
    attack_truth,
    parse_attack,
)
from fieldward.generator.plan import build_plan
from fieldward.pipeline import analyze
from tests.generator.test_generate import CHECKSUMS, records, run_tshark

ENGINES = {"operations", "recon", "protocol", "baseline", "threats", "anomaly"}
CLEAN = GeneratorConfig(devices=24, minutes=3, camera_streams=False)
ATTACKED = GeneratorConfig(devices=24, minutes=3, camera_streams=False, attacks=ALL)
"""Every scenario in the second half of a 3-minute, 24-device plant (every role the scenarios need)."""


@pytest.fixture(scope="module")
def scenarios() -> list[Scenario]:
    plan = build_plan(ATTACKED)
    assert plan.attacks is not None
    return plan.attacks.scenarios


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("attacks")
    generate_capture(folder / "clean.pcap", CLEAN)
    generate_capture(folder / "attacked.pcap", ATTACKED)
    return folder / "clean.pcap", folder / "attacked.pcap"


def write_pcap(path: Path, packets: list[tuple[int, bytes, int]]) -> None:
    """A microsecond pcap of ``(ts_ns, frame, tag)`` packets."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for ts, frame, _ in packets:
        seconds, ns = divmod(ts, 1_000_000_000)
        out += struct.pack("<IIII", seconds, ns // 1000, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))


def ips_of(frame: bytes) -> tuple[str, str] | None:
    if frame[12:14] != b"\x08\x00":
        return None
    return ".".join(map(str, frame[26:30])), ".".join(map(str, frame[30:34]))


# --------------------------------------------------------------------------------------------------
# Catalogue, configuration, ground truth
# --------------------------------------------------------------------------------------------------


def test_every_engine_has_a_scenario(scenarios: list[Scenario]) -> None:
    assert {spec.engine for spec in CATALOG} == ENGINES
    assert [s.name for s in scenarios] == list(ALL)
    for spec, scenario in zip(CATALOG, scenarios, strict=True):
        assert scenario.engine == spec.engine, spec.name
        for alert_type in scenario.alert_types:
            assert alert_type.split(".")[0] in {scenario.engine, *scenario.also_engines}, alert_type
        assert scenario.mitre
        assert all(re.fullmatch(r"T0\d{3}", t) for t in scenario.mitre)


def test_parse_attack_and_bad_configs() -> None:
    assert parse_attack("port_scan") == ("port_scan", None)
    assert parse_attack("port_scan@12.5") == ("port_scan", 12.5)
    for bad in ("nmap", "port_scan@soon", "port_scan@-1", "port_scan@nan"):
        with pytest.raises(ConfigError):
            GeneratorConfig(attacks=(bad,))
    with pytest.raises(ConfigError, match="after the capture ends"):
        build_plan(GeneratorConfig(devices=16, minutes=1, attacks=("cip_reset@2",)))
    with pytest.raises(ConfigError, match="camera"):
        build_plan(GeneratorConfig(devices=8, minutes=1, attacks=("telnet_brute_force",)))


def test_ground_truth_matches_the_packets(scenarios: list[Scenario]) -> None:
    truth = attack_truth(ATTACKED)
    assert [s["name"] for s in truth["scenarios"]] == list(ALL)
    assert {a["name"] for a in truth["attackers"]} == {"rogue-laptop", "new-laptop", "rogue-pi"}
    assert all(a["ip"].endswith(f".{ROGUE_HOST}") for a in truth["attackers"])
    start = ATTACKED.start_ns + ATTACKED.duration_ns // 2
    previous_start = 0
    for record, scenario in zip(truth["scenarios"], scenarios, strict=True):
        times = [ts for ts, _, _ in scenario.packets]
        assert record["start_ns"] == min(times)
        assert record["end_ns"] == max(times)
        assert start <= record["start_ns"] <= record["end_ns"] < ATTACKED.start_ns + ATTACKED.duration_ns
        assert record["start_ns"] > previous_start  # laid out one after another
        previous_start = record["start_ns"]
        assert record["packets"] == len(scenario.packets) > 0
        assert record["engines"][0] == record["engine"]
        # Every IP packet of the scenario is between hosts the truth names (the attacker, a target, or
        # infrastructure the attack goes through: router, DNS server, DHCP broadcasts).
        named = {record["attacker"]["ip"], *(t["ip"] for t in record["targets"])}
        macs = {record["attacker"]["mac"], *(t["mac"] for t in record["targets"])}
        for _, frame, _ in scenario.packets:
            pair = ips_of(frame)
            src_mac = ":".join(f"{b:02x}" for b in frame[6:12])
            dst_mac = ":".join(f"{b:02x}" for b in frame[0:6])
            if pair is None:  # ARP: sent by or to a named host
                assert {src_mac, dst_mac} & macs or dst_mac == "ff:ff:ff:ff:ff:ff", record["name"]
            else:
                assert set(pair) & named or pair[0] == "0.0.0.0", (record["name"], pair)


def test_packets_stay_in_their_window_and_time_order(scenarios: list[Scenario]) -> None:
    for scenario in scenarios:
        times = [ts for ts, _, _ in scenario.packets]
        assert times == sorted(times), scenario.name


def test_explicit_times_and_independent_streams() -> None:
    one = build_plan(GeneratorConfig(devices=16, minutes=2, attacks=("cip_reset@0.5",))).attacks
    two = build_plan(GeneratorConfig(devices=16, minutes=2, attacks=("port_scan@1", "cip_reset@0.5"))).attacks
    assert one is not None
    assert two is not None
    reset = one.scenarios[0]
    assert reset.start_ns - GeneratorConfig().start_ns == pytest.approx(30e9, abs=1e6)
    # Another scenario does not change this one's bytes.
    assert two.scenarios[1].packets == reset.packets
    other_seed = build_plan(
        GeneratorConfig(devices=16, minutes=2, seed=2, attacks=("cip_reset@0.5",))
    ).attacks
    assert other_seed is not None
    assert other_seed.scenarios[0].packets != reset.packets


# --------------------------------------------------------------------------------------------------
# The capture
# --------------------------------------------------------------------------------------------------


def test_clean_traffic_is_untouched(captures: tuple[Path, Path], scenarios: list[Scenario]) -> None:
    """The clean capture is an ordered subsequence of the attacked one; the rest is the attacks."""
    clean, attacked = (records(path.read_bytes()) for path in captures)
    extra: list[tuple[int, bytes]] = []
    at = 0
    for record in attacked:
        if at < len(clean) and record == clean[at]:
            at += 1
        else:
            extra.append(record)
    assert at == len(clean)
    expected = [(ts // 1000, frame) for s in scenarios for ts, frame, _ in s.packets]
    assert Counter(extra) == Counter(expected)


def test_stats_count_the_attack_protocols(tmp_path: Path, scenarios: list[Scenario]) -> None:
    stats = generate_capture(tmp_path / "a.pcap", ATTACKED)
    clean = generate_capture(tmp_path / "c.pcap", CLEAN)
    assert stats.packets == clean.packets + sum(len(s.packets) for s in scenarios)
    assert sum(stats.packets_by_protocol.values()) == stats.packets
    assert set(ATTACK_PROTOCOL_NAMES.values()) <= set(stats.packets_by_protocol)
    assert stats.flows_by_protocol == clean.flows_by_protocol


EXPERT_ALLOWED = {
    "port_scan": "tcp.flags.reset == 1",  # a scan is answered by resets
    "arp_spoofing": "arp.duplicate-address-detected",  # the point of the attack
}
DISSECTED: dict[str, list[tuple[str, str]]] = {
    "s7_plc_stop": [("s7comm.param.func", "0x29")],
    "s7_program_download": [("s7comm.param.func", f) for f in ("0x1a", "0x1b", "0x1c", "0x28")],
    "cip_reset": [("cip.service", "0x05"), ("cip.service", "0x85")],
    "modbus_rogue_write": [("modbus.func_code", "6"), ("modbus.func_code", "16")],
    "port_scan": [("tcp.flags.str", "·······A·R··"), ("tcp.flags.str", "·······A··S·")],
    "cip_list_identity_sweep": [("enip.command", "0x0063"), ("ip.dst", "10.10.1.255")],
    "modbus_unit_sweep": [("modbus.exception_code", "11"), ("mbtcp.unit_id", "40")],
    "modbus_illegal_function": [("modbus.func_code", "25"), ("modbus.exception_code", "1")],
    "modbus_malformed": [("modbus.exception_code", "3")],
    "modbus_exception_storm": [("modbus.exception_code", "2")],
    "new_device": [("modbus.func_code", "3"), ("ip.src", "10.10.2.250")],
    "internet_connection": [("http.request.method", "POST"), ("ip.dst", "185.243.115.84"), ("dns.a", "*")],
    "firmware_change": [("s7comm.data.userdata.szl_id", "0x0011")],
    "telnet_brute_force": [("telnet.data", "Password: ")],
    "cleartext_credentials": [("ftp.request.command", "PASS"), ("ftp.response.code", "230")],
    "arp_spoofing": [("arp.opcode", "2")],
    "rogue_dhcp": [("dhcp.option.dhcp", "2"), ("dhcp.option.dhcp", "5"), ("dhcp.option.dhcp_server_id", "*")],
    "dns_tunnelling": [("dns.qry.type", "16"), ("dns.txt", "*")],
    "poll_flood": [("modbus.func_code", "3")],
    "write_flood": [("modbus.func_code", "16")],
}


def test_tshark_finds_every_scenario_well_formed(
    tmp_path: Path, scenarios: list[Scenario], tshark: str
) -> None:
    """No malformed packet, valid checksums, clean TCP, and each scenario's protocol fields as tshark
    reads them (the protocol scenarios break Modbus rules, not the dissector). The scenarios are
    written one after another into one file; frame numbers tell them apart."""
    assert set(DISSECTED) == set(ALL)
    path = tmp_path / "scenarios.pcap"
    write_pcap(path, [packet for scenario in scenarios for packet in scenario.packets])
    ranges: dict[str, tuple[int, int]] = {}
    first = 1
    for scenario in scenarios:
        ranges[scenario.name] = (first, first + len(scenario.packets) - 1)
        first += len(scenario.packets)
    allowed = " || ".join(
        f"(frame.number >= {ranges[name][0]} && frame.number <= {ranges[name][1]} && {condition})"
        for name, condition in EXPERT_ALLOWED.items()
    )
    problems = run_tshark(
        tshark,
        path,
        *CHECKSUMS,
        "-Y",
        f"(_ws.malformed || _ws.expert.severity >= 0x00600000 || tcp.analysis.flags) && !({allowed})",
    )
    assert problems == ""
    statuses = run_tshark(
        tshark, path, *CHECKSUMS, "-T", "fields", "-e", "ip.checksum.status", "-e", "tcp.checksum.status",
        "-e", "udp.checksum.status",
    )  # fmt: skip
    assert {v for line in statuses.splitlines() for v in line.split("\t") if v} == {"1"}
    fields = sorted({name for wanted in DISSECTED.values() for name, _ in wanted})
    out = run_tshark(
        tshark, path, "-T", "fields", "-E", "occurrence=a", *[x for f in fields for x in ("-e", f)]
    )
    rows = out.splitlines()
    assert len(rows) == first - 1
    for scenario in scenarios:
        low, high = ranges[scenario.name]
        seen: dict[str, set[str]] = {f: set() for f in fields}
        for line in rows[low - 1 : high]:
            for name, value in zip(fields, line.split("\t"), strict=True):
                seen[name].update(v for v in value.split(",") if v)
        for name, value in DISSECTED[scenario.name]:
            assert seen[name] if value == "*" else value in seen[name], (scenario.name, name, value)


# --------------------------------------------------------------------------------------------------
# Detected end to end (the operations and reconnaissance engines)
# --------------------------------------------------------------------------------------------------

TIMED = (
    "s7_plc_stop@0.2",
    "s7_program_download@0.3",
    "cip_reset@0.4",
    "port_scan@0.5",
    "cip_list_identity_sweep@0.6",
    "modbus_unit_sweep@0.7",
)


def alert_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]


def test_operations_and_recon_scenarios_are_detected(tmp_path: Path) -> None:
    config = GeneratorConfig(devices=16, minutes=1.2, camera_streams=False, attacks=TIMED)
    generate_capture(tmp_path / "attacked.pcap", config)
    generate_capture(tmp_path / "clean.pcap", GeneratorConfig(devices=16, minutes=1.2, camera_streams=False))
    analyze([tmp_path / "attacked.pcap"], tmp_path / "attacked")
    analyze([tmp_path / "clean.pcap"], tmp_path / "clean")
    alerts = alert_rows(tmp_path / "attacked")
    truth = attack_truth(config)["scenarios"]
    for scenario in truth:
        ips = {scenario["attacker"]["ip"]} | {t["ip"] for t in scenario["targets"]}
        found = {
            a["type"]
            for a in alerts
            if a["src"] == scenario["attacker"]["ip"]
            and (a["dst"] in ips or a["dst"] == "*")
            and scenario["start_ns"] - 1e9 <= _ns(a["first_ts"]) <= scenario["end_ns"] + 1e9
        }
        assert set(scenario["alert_types"]) <= found, (scenario["name"], found)
    scan = next(a for a in alerts if a["type"] == "recon.port_scan_vertical")
    assert scan["details"]["ports"] >= 1000
    stop = next(a for a in alerts if a["type"] == "operations.s7_plc_stop")
    assert stop["count"] == 1
    assert stop["mitre"] == ["T0881", "T0858"]
    # None of it without the attacks.
    expected = {t for scenario in truth for t in scenario["alert_types"]}
    assert not expected & {a["type"] for a in alert_rows(tmp_path / "clean")}


def _ns(iso: str) -> int:
    import datetime as dt

    stamp = dt.datetime.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    return int(stamp.timestamp()) * 1_000_000_000 + int(iso[20:29])


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def test_cli_generate_with_attacks(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["generate", "-o", str(tmp_path / "a.pcap"), "--devices", "16", "--minutes", "1", "-q"]
    chosen = ["--attack", "cip_reset@0.2", "--attack", "port_scan"]
    files = ["--attack-truth", str(tmp_path / "attacks.json"), "--truth", str(tmp_path / "devices.json")]
    result = runner.invoke(app, [*args, *chosen, *files])
    assert result.exit_code == 0, result.output
    attacks = json.loads((tmp_path / "attacks.json").read_text())
    assert [s["name"] for s in attacks["scenarios"]] == ["cip_reset", "port_scan"]
    assert "attacks" not in json.loads((tmp_path / "devices.json").read_text())
    result = runner.invoke(app, [*args, "--attacks", "all", "--truth", str(tmp_path / "devices.json")])
    assert result.exit_code == 0, result.output
    merged = json.loads((tmp_path / "devices.json").read_text())
    assert len(merged["devices"]) == 16
    assert [s["name"] for s in merged["attacks"]["scenarios"]] == list(ALL)
    result = runner.invoke(app, [*args, "--attack", "teardrop"])
    assert result.exit_code != 0
    assert "unknown attack scenario" in result.output


def test_all_scenarios_fit_the_smallest_full_plant() -> None:
    """16 devices hold one of every role: every scenario builds."""
    plan = build_plan(GeneratorConfig(devices=16, minutes=2, attacks=ALL))
    assert plan.attacks is not None
    assert [s.name for s in plan.attacks.scenarios] == list(ALL)


def test_illegal_function_codes_are_unassigned() -> None:
    """The probe's codes are in no table: not public, legacy, vendor (Zeek's names) or user-defined."""
    from fieldward.generator.attacks import ILLEGAL_FUNCTIONS
    from fieldward.protocols.modbus import FUNCTION_NAMES

    user_defined = set(range(65, 73)) | set(range(100, 111))
    assert not set(ILLEGAL_FUNCTIONS) & (set(FUNCTION_NAMES) | user_defined | {0, 42})
    assert all(code < 0x80 for code in ILLEGAL_FUNCTIONS)
