"""The shared detection plumbing: the baseline file (learned behaviour, analyst decisions), the
suppression of learned and muted alerts, and the learning period (``--learn`` and ``--learn-minutes``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from fieldward.cli import app
from fieldward.detect.engine import AlertBook, DetectionContext
from fieldward.detect.knowledge import ANY, AlertRule, Knowledge, KnowledgeError
from fieldward.detect.operations import PLC_STOP
from fieldward.detect.settings import DetectionSettings
from fieldward.pipeline import AnalysisOptions, analyze
from tests.detect.test_recon import SCANNER, TARGET, rst, syn

MINUTE = 60 * 10**9


def scan_pcap(path: Path, start: float = 1_700_000_000.0) -> Path:
    from scapy.utils import wrpcap

    packets = []
    for port in range(20, 60):
        packets += [syn(TARGET[1], port), rst(TARGET[1], port)]
    for index, packet in enumerate(packets):
        packet.time = start + index * 0.01
    wrpcap(str(path), packets)
    return path


def raise_stop(book: AlertBook, ts: int = 1, src: str = "10.0.0.1", dst: str = "10.0.0.2") -> object:
    return book.raise_alert(PLC_STOP, ts=ts, src=src, dst=dst, protocol="s7comm", explanation="stop")


def test_rules_match_exact_and_wildcard() -> None:
    exact = AlertRule(PLC_STOP.id, "10.0.0.1", "10.0.0.2")
    assert exact.matches(PLC_STOP.id, "10.0.0.1", "10.0.0.2")
    assert not exact.matches(PLC_STOP.id, "10.0.0.1", "10.0.0.3")
    assert not exact.matches("recon.ping_sweep", "10.0.0.1", "10.0.0.2")
    any_source = AlertRule(PLC_STOP.id, ANY, "10.0.0.2")
    assert any_source.matches(PLC_STOP.id, "192.0.2.7", "10.0.0.2")
    assert not any_source.matches(PLC_STOP.id, "192.0.2.7", "10.0.0.9")


def test_learned_and_muted_alerts_are_counted_not_raised() -> None:
    knowledge = Knowledge(
        learned={AlertRule(PLC_STOP.id, "10.0.0.1", "10.0.0.2")},
        mutes={AlertRule(PLC_STOP.id, ANY, "10.0.0.9")},
    )
    book = AlertBook(DetectionContext(knowledge=knowledge))
    assert raise_stop(book) is None
    assert raise_stop(book, src="10.0.0.5", dst="10.0.0.9") is None
    assert raise_stop(book, src="10.0.0.5", dst="10.0.0.2") is not None
    assert dict(book.suppressed) == {"learned": 1, "muted": 1}
    assert [(a.src, a.dst) for a in book] == [("10.0.0.5", "10.0.0.2")]


def test_learning_period_by_time() -> None:
    context = DetectionContext(settings=DetectionSettings(learn_minutes=2))
    book = AlertBook(context)
    assert not context.is_learning(0)  # no traffic yet: no period has started
    context.observe_time(1_000)
    assert context.learn_until_ns == 1_000 + 2 * MINUTE
    assert raise_stop(book, ts=1_000 + MINUTE) is None
    assert raise_stop(book, ts=1_000 + 2 * MINUTE, dst="10.0.0.3") is not None
    assert book.suppressed["learning"] == 1
    # what alerted while learning is normal afterwards too
    assert raise_stop(book, ts=1_000 + 3 * MINUTE) is None
    assert AlertRule(PLC_STOP.id, "10.0.0.1", "10.0.0.2") in context.knowledge.learned


def test_baseline_file_round_trip(tmp_path: Path) -> None:
    knowledge = Knowledge()
    knowledge.learn("pair", ("10.0.0.1", "10.0.0.2", "502"))
    assert not knowledge.learn("pair", ("10.0.0.1", "10.0.0.2", "502"))
    knowledge.learned.add(AlertRule(PLC_STOP.id, "10.0.0.1", "10.0.0.2"))
    knowledge.mutes.add(AlertRule("recon.ping_sweep", ANY, ANY))
    knowledge.models["anomaly"] = {"pairs": {"a|b": [1.0, 2.0]}}
    knowledge.sources.append("learned clean.pcap")
    knowledge.save(tmp_path / "baseline.json")
    again = Knowledge.load(tmp_path / "baseline.json")
    assert again.behaviours == knowledge.behaviours
    assert again.learned == knowledge.learned
    assert again.mutes == knowledge.mutes
    assert again.models == knowledge.models
    assert again.sources == knowledge.sources
    assert again.knows("pair", ("10.0.0.1", "10.0.0.2", "502"))
    assert not (tmp_path / "baseline.json.tmp").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "cannot read"),
        ("[1, 2]", "one JSON object"),
        ('{"format": 99}', "unsupported baseline format"),
        ('{"format": 1, "learned": [{"src": "x"}]}', "malformed"),
        ('{"format": 1, "behaviours": {"pair": 5}}', "malformed"),
    ],
)
def test_bad_baseline_files_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(text)
    with pytest.raises(KnowledgeError, match=message):
        Knowledge.load(path)


def test_missing_baseline_file(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeError, match="no baseline file"):
        Knowledge.load(tmp_path / "absent.json")


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=12,
    )
)
def test_any_json_loads_or_fails_clearly(data: object) -> None:
    candidate = {"format": 1, "behaviours": data} if isinstance(data, dict) else data
    try:
        loaded = Knowledge.from_json(candidate)
    except KnowledgeError:
        return
    assert isinstance(data, dict)  # only a mapping of categories can load
    assert set(loaded.behaviours) == {str(k) for k in data}


def test_learn_capture_suppresses_what_it_contains(tmp_path: Path) -> None:
    capture = scan_pcap(tmp_path / "scan.pcap")
    judged = analyze([capture], tmp_path / "plain")
    assert any(a.type.id == "recon.port_scan_vertical" for a in judged.alerts)
    learned = analyze([capture], tmp_path / "learned", AnalysisOptions(learn_captures=(capture,)))
    assert learned.alerts == []  # what alerted while learning was learned as normal
    assert learned.alerts_suppressed == {"learned": 1}
    summary = json.loads((tmp_path / "learned" / "summary.json").read_text())
    assert summary["alerts"] == 0
    baseline = json.loads((tmp_path / "learned" / "baseline.json").read_text())
    assert baseline["sources"] == ["learned scan.pcap"]
    assert {"type": "recon.port_scan_vertical", "src": SCANNER[1], "dst": TARGET[1]} in baseline["learned"]


def test_learn_minutes_hides_the_start_only(tmp_path: Path) -> None:
    early = scan_pcap(tmp_path / "early.pcap")
    options = AnalysisOptions(detection=DetectionSettings(learn_minutes=1))
    assert analyze([early], tmp_path / "a", options).alerts == []
    # the same scan after a first packet two minutes earlier is outside the period: it alerts
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import rdpcap, wrpcap

    opener = Ether(src=SCANNER[0], dst=TARGET[0]) / IP(src=SCANNER[1], dst=TARGET[1]) / UDP(sport=1, dport=2)
    opener.time = 1_700_000_000.0 - 120
    wrpcap(str(tmp_path / "late.pcap"), [opener, *rdpcap(str(early))])
    late = analyze([tmp_path / "late.pcap"], tmp_path / "b", options)
    assert any(a.type.id == "recon.port_scan_vertical" for a in late.alerts)


def test_baseline_option_applies_mutes(tmp_path: Path) -> None:
    capture = scan_pcap(tmp_path / "scan.pcap")
    Knowledge(mutes={AlertRule("recon.port_scan_vertical", SCANNER[1], ANY)}).save(tmp_path / "b.json")
    result = analyze([capture], tmp_path / "out", AnalysisOptions(baseline=tmp_path / "b.json"))
    assert not any(a.type.id == "recon.port_scan_vertical" for a in result.alerts)
    assert result.alerts_suppressed.get("muted", 0) >= 1


def test_cli_learn_and_baseline_flags(tmp_path: Path) -> None:
    capture = scan_pcap(tmp_path / "scan.pcap")
    runner = CliRunner()
    out = tmp_path / "out"
    ok = runner.invoke(app, ["analyze", str(capture), "-o", str(out), "-q", "--learn", str(capture)])
    assert ok.exit_code == 0, ok.output
    assert (out / "alerts.jsonl").read_text() == ""
    (tmp_path / "bad.json").write_text("{")
    bad = runner.invoke(
        app, ["analyze", str(capture), "-o", str(out), "--baseline", str(tmp_path / "bad.json")]
    )
    assert bad.exit_code != 0
    assert "baseline" in bad.output


def test_never_normal_alerts_fire_while_learning_and_are_not_learned() -> None:
    from fieldward.detect.threats import INTEL_IP

    assert not INTEL_IP.learnable
    window = DetectionContext(settings=DetectionSettings(learn_minutes=5))
    window.observe_time(0)
    book = AlertBook(window)
    hit = book.raise_alert(
        INTEL_IP, ts=MINUTE, src="10.0.0.1", dst="203.0.113.9", protocol="tcp", explanation="x"
    )
    assert hit is not None  # inside the learning window, still raised
    assert window.knowledge.learned == set()
    learn_pass = AlertBook(DetectionContext(learning=True))
    assert learn_pass.raise_alert(INTEL_IP, ts=1, src="a", dst="b", protocol="tcp", explanation="x") is None
    assert learn_pass.context.knowledge.learned == set()  # a --learn capture never whitelists an indicator
