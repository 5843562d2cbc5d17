"""The analyst's workflow through the command line: status transitions, comments, filters, and learn
and mute that really silence the alert on the next run with ``--baseline`` (real captures: the S7
corpus capture and scans built with scapy); hostile input gives one clear error line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import wrpcap
from typer.testing import CliRunner, Result

from fieldward.cli import app
from fieldward.detect.knowledge import ANY, AlertRule, Knowledge
from fieldward.detect.triage import AlertFolder, TriageError
from fieldward.generator import protocols as p
from fieldward.pipeline import analyze
from tests.detect.test_recon import SCANNER, TARGET, rst, syn
from tests.inventory.helpers import tcp_session

runner = CliRunner()
OTHER_TARGET = "10.1.1.11"
HMI = ("00:0c:29:00:00:05", "10.1.1.5")
PLC = ("00:80:f4:00:00:10", "10.1.1.10")
ROGUE = ("00:0c:29:00:00:66", "10.1.1.66")


def cli(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def ok(*args: str | Path) -> Result:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result


def fails(message: str, *args: str | Path) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert "fieldward: error:" in result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output


def listed(folder: Path, *filters: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(ok("alerts", folder, "list", "--json", *filters).stdout)
    return records


def alert_of(folder: Path, alert_type: str) -> dict[str, Any]:
    (found,) = [a for a in listed(folder) if a["type"] == alert_type]
    return found


def capture(path: Path, targets: list[str], pings: int = 0) -> Path:
    """Vertical scans of ``targets`` by SCANNER, and a ping sweep of ``pings`` hosts."""
    packets: list[Packet] = []
    for target in targets:
        for port in range(20, 60):
            packets += [syn(target, port), rst(target, port)]
    packets += [
        Ether(src=SCANNER[0], dst=TARGET[0]) / IP(src=SCANNER[1], dst=f"10.1.3.{h}") / ICMP(type=8, seq=h)
        for h in range(1, pings + 1)
    ]
    for index, packet in enumerate(packets):
        packet.time = 1_700_000_000 + index * 0.01
    wrpcap(str(path), packets)
    return path


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    analyze([capture(tmp_path / "scan.pcap", [TARGET[1]], pings=25)], out)
    return out


def test_status_goes_new_acknowledged_closed(scans: Path) -> None:
    scan = alert_of(scans, "recon.port_scan_vertical")
    assert scan["status"] == "new"
    assert "acknowledged" in ok("alerts", scans, "ack", scan["id"][:5], "--by", "ann").stdout
    fails("already acknowledged", "alerts", scans, "ack", scan["id"])
    ok("alerts", scans, "close", scan["id"], "--by", "bob")
    fails("is closed: it cannot become acknowledged", "alerts", scans, "ack", scan["id"])
    after = alert_of(scans, "recon.port_scan_vertical")
    assert after["status"] == "closed"
    assert [(h["who"], h["action"], h["status"]) for h in after["history"]] == [
        ("ann", "acknowledged", "acknowledged"),
        ("bob", "closed", "closed"),
    ]
    ok("alerts", scans, "reopen", scan["id"])
    assert alert_of(scans, "recon.port_scan_vertical")["status"] == "new"
    # The other alert was never touched; a new alert can be closed directly.
    sweep = alert_of(scans, "recon.ping_sweep")
    assert sweep["status"] == "new"
    ok("alerts", scans, "close", sweep["id"])
    assert alert_of(scans, "recon.ping_sweep")["status"] == "closed"
    # The records of alerts.jsonl are untouched: the state lives in triage.json.
    raw = [json.loads(line) for line in (scans / "alerts.jsonl").read_text().splitlines()]
    assert {a["status"] for a in raw} == {"new"}
    assert not [p.name for p in scans.iterdir() if p.name.endswith(".tmp")]


def test_comments_persist(scans: Path) -> None:
    scan = alert_of(scans, "recon.port_scan_vertical")
    hostile = 'checked with "ops" | rack 4 = ok\\\nsecond line ☃ 工控'
    ok("alerts", scans, "comment", scan["id"], hostile, "--by", "ann")
    ok("alerts", scans, "comment", scan["id"], "second note", "--by", "bob")
    fails("needs some text", "alerts", scans, "comment", scan["id"], "   ")
    again = AlertFolder(scans).get(scan["id"])
    assert [(c["who"], c["text"]) for c in again["comments"]] == [("ann", hostile), ("bob", "second note")]
    assert again["status"] == "new"  # a comment does not change the status
    assert scan["id"] in ok("alerts", scans, "list").stdout
    shown = ok("alerts", scans, "show", scan["id"]).stdout
    assert "bob wrote: second note" in shown
    state = json.loads((scans / "triage.json").read_text())
    assert state["alerts"][scan["id"]]["comments"][0]["text"] == hostile


def test_list_filters(scans: Path) -> None:
    assert {a["type"] for a in listed(scans)} == {"recon.port_scan_vertical", "recon.ping_sweep"}
    assert [a["type"] for a in listed(scans, "--severity", "high")] == ["recon.port_scan_vertical"]
    assert len(listed(scans, "--severity", "medium+")) == 2
    assert listed(scans, "--severity", "critical") == []
    assert len(listed(scans, "--type", "recon")) == 2
    assert [a["type"] for a in listed(scans, "--type", "recon.ping_sweep")] == ["recon.ping_sweep"]
    assert listed(scans, "--type", "operations") == []
    sweep = alert_of(scans, "recon.ping_sweep")
    ok("alerts", scans, "ack", sweep["id"])
    assert [a["id"] for a in listed(scans, "--status", "acknowledged")] == [sweep["id"]]
    assert len(listed(scans, "--status", "new", "--status", "acknowledged")) == 2
    fails("unknown status 'bogus'", "alerts", scans, "list", "--status", "bogus")
    fails("unknown severity 'urgent'", "alerts", scans, "list", "--severity", "urgent")


def test_hostile_input_gives_clear_errors(scans: Path, tmp_path: Path) -> None:
    scan = alert_of(scans, "recon.port_scan_vertical")
    fails("no alert 'ffffffffffff'", "alerts", scans, "show", "ffffffffffff")
    fails("no alert 'ab'", "alerts", scans, "ack", "ab")  # too short to be a prefix
    fails("no alert", "alerts", scans, "close", "../../etc/passwd")
    fails("not a folder", "alerts", tmp_path / "nowhere", "list")
    (tmp_path / "empty").mkdir()
    fails("no alerts.jsonl", "alerts", tmp_path / "empty", "list")
    (scans / "triage.json").write_text("{not json")
    fails("triage.json is corrupt", "alerts", scans, "list")
    fails("triage.json is corrupt", "alerts", scans, "ack", scan["id"])
    (scans / "triage.json").write_text(json.dumps({"format": 1, "alerts": {scan["id"]: {"status": "done"}}}))
    fails("is corrupt", "alerts", scans, "show", scan["id"])
    (scans / "triage.json").write_text(json.dumps({"format": 99, "alerts": {}}))
    fails("is corrupt", "alerts", scans, "list")
    (scans / "triage.json").unlink()
    (scans / "baseline.json").write_text("[]")
    fails("a baseline file holds one JSON object", "alerts", scans, "learn", scan["id"])
    (scans / "alerts.jsonl").write_text('{"id": "x"}\n[1, 2]\n')
    fails("line 2 is not an alert record", "alerts", scans, "list")
    # A bare record (odd severity, fields missing) is listed, shown and exported, not a traceback.
    (scans / "alerts.jsonl").write_text('{"id": "abcdef0123456789", "severity": "weird", "mitre": [1]}\n')
    for command in (["list"], ["show", "abcdef"], ["export", "-f", "cef"], ["export", "-f", "leef"]):
        assert "abcdef" in ok("alerts", scans, *command).stdout


def test_ambiguous_prefixes_are_refused(tmp_path: Path) -> None:
    records = [{"id": f"abcd{n:012x}", "type": "t.x", "src": "a", "dst": "b"} for n in (1, 2)]
    (tmp_path / "alerts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(TriageError, match="ambiguous"):
        AlertFolder(tmp_path).resolve("abcd")
    assert AlertFolder(tmp_path).resolve("abcd000000000002")["id"] == records[1]["id"]


def test_learn_silences_the_plc_stop_on_the_next_run(corpus: Path, tmp_path: Path) -> None:
    pcap = corpus / "s7comm" / "snap7.pcap"
    first = tmp_path / "first"
    ok("analyze", pcap, "-o", first, "-q")
    stop = alert_of(first, "operations.s7_plc_stop")
    upload = alert_of(first, "operations.s7_program_upload")
    assert upload["count"] > 1  # repeats are one alert with a count (dedupe)
    ok("alerts", first, "learn", stop["id"], "--by", "ann")
    knowledge = Knowledge.load(first / "baseline.json")
    assert AlertRule(stop["type"], stop["src"], stop["dst"]) in knowledge.learned
    assert alert_of(first, "operations.s7_plc_stop")["status"] == "closed"
    second = tmp_path / "second"
    ok("analyze", pcap, "-o", second, "-q", "--baseline", first / "baseline.json")
    types = {a["type"] for a in listed(second)}
    assert "operations.s7_plc_stop" not in types
    assert {"operations.s7_program_upload", "operations.s7_plc_control"} <= types
    summary = json.loads((second / "summary.json").read_text())
    assert summary["alerts_suppressed"] == {"learned": stop["count"]}
    # The learned rule travels on in the next run's baseline.
    assert (
        AlertRule(stop["type"], stop["src"], stop["dst"]) in Knowledge.load(second / "baseline.json").learned
    )


def test_mute_is_per_type_and_pair(tmp_path: Path) -> None:
    pcap = capture(tmp_path / "two.pcap", [TARGET[1], OTHER_TARGET])
    first = tmp_path / "first"
    analyze([pcap], first)
    scans = [a for a in listed(first) if a["type"] == "recon.port_scan_vertical"]
    assert {a["dst"] for a in scans} == {TARGET[1], OTHER_TARGET}
    muted = next(a for a in scans if a["dst"] == TARGET[1])
    ok("alerts", first, "mute", muted["id"])
    assert AlertRule(muted["type"], SCANNER[1], TARGET[1]) in Knowledge.load(first / "baseline.json").mutes
    second = tmp_path / "second"
    ok("analyze", pcap, "-o", second, "-q", "--baseline", first / "baseline.json")
    assert [a["dst"] for a in listed(second)] == [OTHER_TARGET]
    assert json.loads((second / "summary.json").read_text())["alerts_suppressed"] == {"muted": 1}
    # Widened to any destination, the scanner's vertical scans are all muted.
    other = alert_of(second, "recon.port_scan_vertical")
    ok("alerts", second, "mute", other["id"], "--any-destination")
    assert AlertRule(muted["type"], SCANNER[1], ANY) in Knowledge.load(second / "baseline.json").mutes
    third = tmp_path / "third"
    ok("analyze", pcap, "-o", third, "-q", "--baseline", second / "baseline.json")
    assert listed(third) == []
    assert json.loads((third / "summary.json").read_text())["alerts_suppressed"] == {"muted": 2}


def test_triage_state_survives_a_rerun_into_the_same_folder(tmp_path: Path) -> None:
    pcap = capture(tmp_path / "scan.pcap", [TARGET[1]])
    out = tmp_path / "out"
    analyze([pcap], out)
    scan = alert_of(out, "recon.port_scan_vertical")
    ok("alerts", out, "ack", scan["id"])
    ok("alerts", out, "comment", scan["id"], "known pentest")
    analyze([pcap], out)  # the same alert again: same id, one record, state kept
    (again,) = listed(out)
    assert again["id"] == scan["id"]
    assert again["status"] == "acknowledged"
    assert [c["text"] for c in again["comments"]] == ["known pentest"]


def modbus_polling(client: tuple[str, str], start: float, cport: int) -> list[Packet]:
    flights: list[tuple[bool, bytes]] = []
    for i in range(5):
        flights.append((True, p.modbus_adu(i, 1, p.modbus_read_request(3, 0, 4))))
        flights.append((False, p.modbus_adu(i, 1, p.modbus_read_response(3, [1, 2, 3, 4]))))
    packets = tcp_session(client, PLC, 502, flights, cport=cport)
    for index, packet in enumerate(packets):
        packet.time = start + index * 0.1
    return packets


def test_learning_a_baseline_alert_teaches_the_baseline(tmp_path: Path) -> None:
    """The baseline engine's alerts carry their behaviour keys: learning them adds the keys to the
    baseline, so the next run does not even raise them (nothing is suppressed, nothing is new)."""
    wrpcap(str(tmp_path / "normal.pcap"), modbus_polling(HMI, 1_700_000_000, 50001))
    new = modbus_polling(HMI, 1_700_001_000, 50002) + modbus_polling(ROGUE, 1_700_001_100, 50003)
    wrpcap(str(tmp_path / "new.pcap"), new)
    first = tmp_path / "first"
    ok("analyze", tmp_path / "new.pcap", "-o", first, "-q", "--learn", tmp_path / "normal.pcap")
    learned = [a for a in listed(first) if a["type"].startswith("baseline.")]
    assert learned
    assert all(ROGUE[1] in (a["src"], a["dst"]) for a in learned)
    for alert in learned:
        ok("alerts", first, "learn", alert["id"])
    knowledge = Knowledge.load(first / "baseline.json")
    keys = [(b[0], tuple(b[1:])) for a in learned for b in a["details"]["behaviours"]]
    assert ("pair", (ROGUE[1], PLC[1])) in keys
    assert all(knowledge.knows(category, key) for category, key in keys)
    second = tmp_path / "second"
    ok("analyze", tmp_path / "new.pcap", "-o", second, "-q", "--baseline", first / "baseline.json")
    assert [a["type"] for a in listed(second) if a["type"].startswith("baseline.")] == []
    assert "learned" not in json.loads((second / "summary.json").read_text())["alerts_suppressed"]


def test_learn_reads_behaviour_objects_of_other_detectors(tmp_path: Path) -> None:
    record = {
        "id": "00112233445566ff",
        "type": "site.new_thing",
        "src": "10.0.0.1",
        "dst": "10.0.0.2",
        "details": {
            "behaviour": {"category": "pair", "key": ["10.0.0.1", "10.0.0.2"]},
            "behaviours": [["protocol", "10.0.0.1", "10.0.0.2", "modbus"], "junk", [1, 2]],
        },
    }
    (tmp_path / "alerts.jsonl").write_text(json.dumps(record) + "\n")
    rule = AlertFolder(tmp_path).learn("0011", who="ann")
    assert rule == AlertRule("site.new_thing", "10.0.0.1", "10.0.0.2")
    knowledge = Knowledge.load(tmp_path / "baseline.json")
    assert knowledge.knows("pair", ("10.0.0.1", "10.0.0.2"))
    assert knowledge.knows("protocol", ("10.0.0.1", "10.0.0.2", "modbus"))
    assert sum(len(keys) for keys in knowledge.behaviours.values()) == 2
    assert rule in knowledge.learned
    assert any("ann" in source for source in knowledge.sources)
