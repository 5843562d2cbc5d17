"""OT-operation alerts against the shared corpus: every stop, control, transfer and restart that the
expected logs (Zeek's dnp3.log, ICSNPP's s7comm, s7comm_upload_download and bacnet logs) record
raises the right alert between the right hosts, aggregated, with evidence and ATT&CK ids."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fieldward.pipeline import analyze
from tests.inventory.test_corpus import btest_rows


def alerts_of(corpus: Path, tmp: Path, capture: str) -> list[dict[str, Any]]:
    analyze([corpus / capture], tmp)
    return [json.loads(line) for line in (tmp / "alerts.jsonl").read_text().splitlines()]


def by_type(alerts: list[dict[str, Any]], name: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(a["src"], a["dst"]): a for a in alerts if a["type"] == f"operations.{name}"}


def test_dnp3_restarts_from_zeek_log(corpus: Path, tmp_path: Path) -> None:
    alerts = alerts_of(corpus, tmp_path, "dnp3/dnp3.pcap")
    rows = btest_rows(corpus / "dnp3" / "expected" / "dnp3.events" / "dnp3.log")
    expected = Counter(
        (r["id.orig_h"], r["id.resp_h"]) for r in rows if r["fc_request"] in ("COLD_RESTART", "WARM_RESTART")
    )
    assert expected
    found = by_type(alerts, "dnp3_restart")
    assert set(found) == set(expected)
    for pair, count in expected.items():
        alert = found[pair]
        assert alert["count"] == count
        assert alert["severity"] == "high"
        assert alert["mitre"] == ["T0816"]
        assert alert["evidence"]
        assert all(e["flow_id"] >= 0 for e in alert["evidence"])


def test_s7_stop_control_and_upload_from_icsnpp_logs(corpus: Path, tmp_path: Path) -> None:
    alerts = alerts_of(corpus, tmp_path, "s7comm/snap7.pcap")
    folder = corpus / "s7comm" / "expected" / "analyzer.snap7"
    lines = [line.split("\t") for line in (folder / "s7comm.log").read_text().splitlines() if line[:1] != "#"]
    jobs = [f for f in lines if f[12] == "Job-Request"]
    stops = Counter((f[2], f[4]) for f in jobs if f[15] == "PLC Stop")
    controls = Counter((f[2], f[4]) for f in jobs if f[15] == "PLC Control")
    assert stops
    assert controls
    stop = by_type(alerts, "s7_plc_stop")
    assert {k: v["count"] for k, v in stop.items()} == dict(stops)
    assert all(a["severity"] == "critical" for a in stop.values())
    control = by_type(alerts, "s7_plc_control")
    assert {k: v["count"] for k, v in control.items()} == dict(controls)
    transfers = [
        line.split("\t") for line in (folder / "s7comm_upload_download.log").read_text().splitlines()
    ]
    uploads = Counter(
        (f[2], f[4])
        for f in transfers
        if len(f) > 13 and f[11] == "Job-Request" and f[13] in ("Start Upload", "Upload", "End Upload")
    )
    assert uploads
    upload = by_type(alerts, "s7_program_upload")
    assert {k: v["count"] for k, v in upload.items()} == dict(uploads)


def test_bacnet_reinitialize_and_communication_control(corpus: Path, tmp_path: Path) -> None:
    alerts = alerts_of(corpus, tmp_path, "bacnet/bacnet_example.pcap")
    rows = btest_rows(corpus / "bacnet" / "expected" / "analyzer.basic" / "bacnet.log")
    for service, name in (
        ("reinitialize_device", "bacnet_reinitialize_device"),
        ("device_communication_control", "bacnet_device_communication_control"),
    ):
        expected = Counter(
            (r["id.orig_h"], r["id.resp_h"])
            for r in rows
            if r["pdu_service"] == service and r["pdu_type"] == "CONFIRMED_REQUEST" and r["is_orig"] == "T"
        )
        if service == "reinitialize_device":
            assert expected, "the corpus capture has ReinitializeDevice requests"
        found = by_type(alerts, name)
        assert {k: v["count"] for k, v in found.items()} == dict(expected), service


def test_alerts_are_in_the_summary_and_ordered(corpus: Path, tmp_path: Path) -> None:
    alerts = alerts_of(corpus, tmp_path, "s7comm/snap7.pcap")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["alerts"] == len(alerts)
    assert [a["first_ts"] for a in alerts] == sorted(a["first_ts"] for a in alerts)
    assert len({a["id"] for a in alerts}) == len(alerts)
    plc = next(a for a in alerts if a["type"] == "operations.s7_plc_stop")
    assert plc["dst_device"] is not None
    assert plc["dst_device"].startswith("mac:")
    assert "PLC Stop" in plc["explanation"]
    assert plc["recommendation"]


@pytest.mark.parametrize("disabled", [True])
def test_detection_can_be_turned_off(corpus: Path, tmp_path: Path, disabled: bool) -> None:
    from fieldward.pipeline import AnalysisOptions

    analyze([corpus / "s7comm" / "snap7.pcap"], tmp_path, AnalysisOptions(detect=not disabled))
    assert not (tmp_path / "alerts.jsonl").exists()
