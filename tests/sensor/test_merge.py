"""Several workers' results merged (and the cross-flow detectors run over the merge) equal one offline
``analyze`` of the whole capture: captures split by flow as AF_PACKET fanout splits them, analysed the
way the sensor's workers analyse their share, merged by the sensor's own code. No root needed (the
live version of these checks is in test_live.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fieldward.detect.engine import select_detectors
from fieldward.detect.operations import OperationsDetector
from fieldward.detect.recon import ReconDetector
from fieldward.pipeline import analyze
from fieldward.sensor.merge import FLOW_ID_SHIFT
from tests.sensor.compare import results
from tests.sensor.scans import HMIS, PLC, SCANNER, scan_capture
from tests.sensor.split import merged_run, split_by_flow, worker_alerts

SCAN_TYPES = {"recon.port_scan_vertical", "recon.port_scan_horizontal", "recon.ping_sweep"}

CAPTURES = [
    "http/bro.org.pcap",
    "bacnet/bacnet_example.pcap",
    "enip/enip_cip_example.pcap",
    "dnp3/dnp3.pcap",
    "dhcp/dhcp_flood.pcap",
    "tls/ssl.v3.pcap",
]
"""Corpus captures whose flows split between two workers (both get packets)."""


def test_detectors_are_split_into_per_flow_and_correlated() -> None:
    per_flow, correlated = select_detectors("per_flow"), select_detectors("correlated")
    assert OperationsDetector in per_flow
    assert ReconDetector in correlated
    assert set(per_flow).isdisjoint(correlated)
    assert set(per_flow) | set(correlated) == set(select_detectors("all"))


def test_a_scan_split_between_workers_alerts_as_offline(tmp_path: Path) -> None:
    capture = scan_capture(tmp_path / "scan.pcap")
    analyze([capture], tmp_path / "offline")
    expected = results(tmp_path / "offline")
    assert {a[0] for a in expected["alerts"]} >= SCAN_TYPES
    parts = split_by_flow(capture, tmp_path / "parts", 2)
    # each worker alone sees too little of every scan: per-worker detection misses them all
    alone = merged_run(parts, tmp_path / "alone", correlate=False)
    assert not SCAN_TYPES & {a["type"] for a in worker_alerts(alone)}
    for index in range(2):
        share = pq.read_table(alone / "flows.parquet").to_pylist()
        ports = {
            f["resp_port"] for f in share if f["resp_ip"] == PLC[1] and f["flow_id"] >> FLOW_ID_SHIFT == index
        }
        assert 0 < len(ports) < 20, f"worker {index} saw {len(ports)} scanned ports"
    segment = merged_run(parts, tmp_path / "segment")
    assert results(segment) == expected
    scans = [a for a in worker_alerts(segment) if a["type"] in SCAN_TYPES]
    assert {(a["type"], a["src"]) for a in scans} == {(t, SCANNER[1]) for t in SCAN_TYPES}
    for alert in scans:
        assert alert["src_device"] is not None
        assert alert["evidence_pcap"], alert  # cut from both workers' captures
        packets = (segment / alert["evidence_pcap"]).stat().st_size
        assert packets > 24
    vertical = next(a for a in scans if a["type"] == "recon.port_scan_vertical")
    assert vertical["details"]["ports"] == 30


def test_merged_roles_services_and_communications_are_recounted(tmp_path: Path) -> None:
    capture = scan_capture(tmp_path / "scan.pcap")
    analyze([capture], tmp_path / "offline")
    parts = split_by_flow(capture, tmp_path / "parts", 2)
    segment = merged_run(parts, tmp_path / "segment")
    devices = {d["id"]: d for d in json.loads((segment / "devices.json").read_text())["devices"]}
    plc = next(d for d in devices.values() if PLC[1] in d["ips"])
    assert {"protocol": "modbus", "role": "slave", "peers": HMIS} in plc["roles"]
    modbus = next(s for s in plc["services"] if s["service"] == "modbus")
    assert modbus["clients"] == HMIS
    # each worker counted only its share of the HMIs: a maximum over workers would be too low
    shares = Counter(
        int(f["flow_id"]) >> FLOW_ID_SHIFT
        for f in pq.read_table(segment / "flows.parquet").to_pylist()
        if f["resp_port"] == 502 and f["conn_state"] == "SF"
    )
    assert len(shares) == 2
    assert max(shares.values()) < HMIS
    got = pq.read_table(segment / "communications.parquet")
    want = pq.read_table(tmp_path / "offline" / "communications.parquet")
    assert got.num_rows == want.num_rows
    assert sorted(got.to_pylist(), key=str) == sorted(want.to_pylist(), key=str)


def test_flow_ids_are_unique_across_workers(tmp_path: Path) -> None:
    parts = split_by_flow(scan_capture(tmp_path / "scan.pcap"), tmp_path / "parts", 2)
    segment = merged_run(parts, tmp_path / "segment")
    flows = pq.read_table(segment / "flows.parquet")["flow_id"].to_pylist()
    assert len(flows) == len(set(flows))
    modbus = pq.read_table(segment / "events" / "modbus.parquet")["flow_id"].to_pylist()
    assert set(modbus) <= set(flows)


@pytest.mark.parametrize("name", CAPTURES)
def test_two_workers_merge_equal_offline(corpus: Path, tmp_path: Path, name: str) -> None:
    capture = corpus / name
    analyze([capture], tmp_path / "offline")
    parts = split_by_flow(capture, tmp_path / "parts", 2)
    sizes = [part.stat().st_size for part in parts]
    assert min(sizes) > 24, f"{name}: one worker got nothing ({sizes})"  # 24: the pcap file header
    assert results(merged_run(parts, tmp_path / "segment")) == results(tmp_path / "offline")
