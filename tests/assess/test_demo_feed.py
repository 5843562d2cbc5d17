"""The bundled demo feed (src/fieldward/data/feeds, provenance in its README) against the demo plant.

Runs ``fieldward demo`` in a temporary folder, imports the bundled real NVD records into a temporary
SQLite vulnerability store and matches the demo's ``devices.json``. Every expectation below is a row
of the README's table, checked by hand against the records' version ranges.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fieldward.assess.feeds import load_feed
from fieldward.assess.matching import match_devices
from fieldward.assess.model import Finding
from fieldward.cli import app
from fieldward.store.vulndb import VulnerabilityDatabase

FEEDS = Path(__file__).resolve().parents[2] / "src" / "fieldward" / "data" / "feeds"
NVD = FEEDS / "demo-nvd.json"
RECORDS = ("CVE-2020-15782", "CVE-2020-7537", "CVE-2021-22681", "CVE-2022-1161", "CVE-2023-25619")

# (vendor, model, CVE, text the finding's criteria or reason must contain)
VULNERABLE = [
    ("Rockwell Automation", "1756-L83E/B", "CVE-2022-1161", "all versions"),
    ("Schneider Electric", "BMXP342020", "CVE-2023-25619", "< 3.51"),
]
# (vendor, model, CVE): hand-checked as not applicable at the demo firmware
NOT_VULNERABLE = [
    ("Schneider Electric", "BMXP342020", "CVE-2020-7537"),  # BMXP342020 < 3.30; demo V3.50 is fixed
    ("Rockwell Automation", "1756-L83E/B", "CVE-2021-22681"),  # vulnerable: Logix Designer, not firmware
    ("Rockwell Automation", "1756-L83E/B", "CVE-2020-15782"),  # a Siemens record
]


@pytest.fixture(scope="module")
def demo_findings(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], list[Finding]]:
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    devices: list[dict[str, Any]] = json.loads((out / "devices.json").read_text())["devices"]
    db = VulnerabilityDatabase(f"sqlite:///{out / 'vulns.db'}")
    try:
        report = db.import_documents([NVD], strict=True)
        assert (report.total.added, report.total.skipped) == (len(RECORDS), 0)
        findings = match_devices(devices, db)
    finally:
        db.close()
    return devices, findings


def _device_id(devices: list[dict[str, Any]], vendor: str, model: str) -> str:
    [device] = [d for d in devices if d.get("vendor") == vendor and d.get("model") == model]
    return str(device["id"])


def test_bundled_records_parse_without_skips() -> None:
    doc = load_feed(NVD)
    assert (doc.source, doc.skipped, doc.problems) == ("nvd", 0, [])
    assert sorted(v.id for v in doc.vulnerabilities) == sorted(RECORDS)
    assert all(v.configurations for v in doc.vulnerabilities)


@pytest.mark.parametrize(("vendor", "model", "cve", "range_text"), VULNERABLE)
def test_vulnerable_demo_devices_are_found(
    demo_findings: tuple[list[dict[str, Any]], list[Finding]],
    vendor: str,
    model: str,
    cve: str,
    range_text: str,
) -> None:
    devices, findings = demo_findings
    device_id = _device_id(devices, vendor, model)
    hits = [f for f in findings if f.vulnerability_id == cve]
    assert [f.device_id for f in hits] == [device_id]
    assert range_text in f"{hits[0].criteria} {hits[0].reason}"
    assert hits[0].sources == ("nvd",)


@pytest.mark.parametrize(("vendor", "model", "cve"), NOT_VULNERABLE)
def test_fixed_or_unrelated_records_are_not_found(
    demo_findings: tuple[list[dict[str, Any]], list[Finding]], vendor: str, model: str, cve: str
) -> None:
    devices, findings = demo_findings
    device_id = _device_id(devices, vendor, model)
    assert not [f for f in findings if f.vulnerability_id == cve and f.device_id == device_id]
    if cve != "CVE-2020-15782":
        assert not [f for f in findings if f.vulnerability_id == cve]


def test_siemens_s7_1500_fixed_at_demo_firmware(
    demo_findings: tuple[list[dict[str, Any]], list[Finding]],
) -> None:
    devices, findings = demo_findings
    device_id = _device_id(devices, "Siemens", "CPU 1515-2 PN")
    assert not [f for f in findings if f.device_id == device_id and f.vulnerability_id == "CVE-2020-15782"]
