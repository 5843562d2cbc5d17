"""The feed parsers on real documents (tests/data/feeds, provenance in its README), field by field.

Every expected value below was read by hand from the stored original document.
"""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import orjson
import pytest

from fieldward.assess.feeds import load_feed
from fieldward.assess.model import Severity

DATA = Path(__file__).resolve().parents[1] / "data" / "feeds"
UTC = dt.UTC


def test_nvd_ics_record_rockwell_logix() -> None:
    doc = load_feed(DATA / "CVE-2022-1161.json")
    assert (doc.source, doc.format, doc.skipped) == ("nvd", "nvd-cve-record", 0)
    [vuln] = doc.vulnerabilities
    assert vuln.id == "CVE-2022-1161"
    assert vuln.source == "nvd"
    assert vuln.description.startswith("An attacker with the ability to modify a user program")
    assert vuln.published == dt.datetime(2022, 4, 11, 20, 15, 18, 17000, tzinfo=UTC)
    assert vuln.last_modified == dt.datetime(2022, 4, 18, 14, 23, 52, 877000, tzinfo=UTC)
    assert vuln.status == "Analyzed"
    assert [(s.version, s.base_score, s.severity, s.source, s.primary) for s in vuln.cvss] == [
        ("3.1", 9.8, Severity.CRITICAL, "nvd@nist.gov", True),
        ("3.1", 10.0, Severity.CRITICAL, "ics-cert@hq.dhs.gov", False),
        ("2.0", 7.5, Severity.HIGH, "nvd@nist.gov", True),
    ]
    assert vuln.cvss[2].vector == "AV:N/AC:L/Au:N/C:P/I:P/A:P"
    best = vuln.best_cvss()
    assert best is not None
    assert best.vector == "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
    assert vuln.cwes == ("CWE-829",)
    assert vuln.references == ("https://www.cisa.gov/uscert/ics/advisories/icsa-22-090-05",)
    assert len(vuln.configurations) == 24
    assert all(c.operator == "AND" and len(c.nodes) == 2 for c in vuln.configurations)
    first = vuln.configurations[0]
    hardware, firmware = first.nodes[0].matches[0], first.nodes[1].matches[0]
    assert (hardware.vulnerable, hardware.vendor, hardware.product, hardware.version) == (
        False,
        "rockwellautomation",
        "compactlogix_1768-l43",
        "-",
    )
    assert hardware.match_criteria_id == "500CCE0E-688A-4077-BE1A-0EA14E09EDC5"
    assert (firmware.vulnerable, firmware.product) == (True, "compactlogix_1768-l43_firmware")
    assert not firmware.versions.bounded
    products = {m.product for c in vuln.configurations for n in c.nodes for m in n.matches}
    assert {"controllogix_5580", "controllogix_5580_firmware", "softlogix_5800_firmware"} <= products


def test_nvd_well_known_record_eternalblue() -> None:
    [vuln] = load_feed(DATA / "CVE-2017-0144.json").vulnerabilities
    assert vuln.id == "CVE-2017-0144"
    assert vuln.status == "Deferred"
    assert vuln.last_modified == dt.datetime(2025, 10, 21, 20, 16, 42, 430000, tzinfo=UTC)
    assert "Windows SMB Remote Code Execution Vulnerability" in vuln.description
    assert [s.base_score for s in vuln.cvss] == [8.8, 8.8, 9.3]
    assert vuln.cvss[0].attack_vector_network
    assert vuln.cwes == ()  # only NVD-CWE-noinfo, which is no CWE id
    assert len(vuln.references) == 12  # 24 entries, every URL twice (two sources)
    smb = vuln.configurations[0]
    assert smb.operator == "AND"
    assert smb.nodes[0].matches[0].criteria == "cpe:2.3:a:microsoft:server_message_block:1.0:*:*:*:*:*:*:*"
    assert len(smb.nodes[1].matches) == 15
    assert not any(m.vulnerable for m in smb.nodes[1].matches)
    sc2000 = vuln.configurations[3].nodes[0].matches[0]
    assert sc2000.product == "acuson_sc2000_firmware"
    assert (sc2000.versions.start_including, sc2000.versions.end_excluding) == ("4.0", "4.0e")
    assert sc2000.versions.describe() == ">= 4.0, < 4.0e"


def test_nvd_real_records_in_api_and_feed_wrappers(tmp_path: Path) -> None:
    """The same real records inside the API 2.0 response and a gzip 2.0 feed file parse identically."""
    records = [
        orjson.loads((DATA / name).read_bytes()) for name in ("CVE-2022-1161.json", "CVE-2017-0144.json")
    ]
    api = {
        "resultsPerPage": 2,
        "startIndex": 0,
        "totalResults": 2,
        "format": "NVD_CVE",
        "version": "2.0",
        "timestamp": "2025-11-01T08:00:00.000",
        "vulnerabilities": [{"cve": record} for record in records],
    }
    (tmp_path / "page.json").write_bytes(orjson.dumps(api))
    feed = {key: value for key, value in api.items() if key not in ("resultsPerPage", "startIndex")}
    (tmp_path / "nvdcve-2.0-2022.json.gz").write_bytes(gzip.compress(orjson.dumps(feed)))
    page = load_feed(tmp_path / "page.json")
    yearly = load_feed(tmp_path / "nvdcve-2.0-2022.json.gz")
    assert (page.format, yearly.format) == ("nvd-api-2.0", "nvd-feed-2.0")
    assert page.feed_date == dt.datetime(2025, 11, 1, 8, 0, tzinfo=UTC)
    assert page.vulnerabilities == yearly.vulnerabilities
    assert [v.id for v in page.vulnerabilities] == ["CVE-2022-1161", "CVE-2017-0144"]
    assert page.vulnerabilities[0] == load_feed(DATA / "CVE-2022-1161.json").vulnerabilities[0]


def test_kev_json_excerpt() -> None:
    doc = load_feed(DATA / "known_exploited_vulnerabilities.json")
    assert (doc.source, doc.format, doc.version, doc.skipped) == ("kev", "kev-json", "2025.02.25", 0)
    assert doc.feed_date == dt.datetime(2025, 2, 25, 20, 33, 53, 367600, tzinfo=UTC)
    assert [e.cve_id for e in doc.kev] == ["CVE-2023-34192", "CVE-2024-49035", "CVE-2024-20953"]
    zimbra = doc.kev[0]
    assert zimbra.vendor_project == "Synacor"
    assert zimbra.product == "Zimbra Collaboration Suite (ZCS)"
    assert zimbra.name == "Synacor Zimbra Collaboration Suite (ZCS) Cross-Site Scripting (XSS) Vulnerability"
    assert zimbra.date_added == dt.date(2025, 2, 25)
    assert zimbra.due_date == dt.date(2025, 3, 18)
    assert "/h/autoSaveDraft" in zimbra.short_description  # JSON's escaped "\/" decoded
    assert zimbra.notes.startswith("https://wiki.zimbra.com/wiki/Zimbra_Security_Advisories ; ")
    assert zimbra.cwes == ("CWE-79",)
    assert not zimbra.known_ransomware
    assert doc.kev[2].required_action.startswith("Apply mitigations per vendor instructions or discontinue")


def test_kev_csv_excerpt() -> None:
    doc = load_feed(DATA / "known_exploited_vulnerabilities.csv")
    assert (doc.source, doc.format, doc.skipped) == ("kev", "kev-csv", 0)
    assert [e.cve_id for e in doc.kev] == [
        "CVE-2024-53104",
        "CVE-2018-19410",
        "CVE-2018-9276",
        "CVE-2019-11001",
    ]
    linux, prtg_lfi, _prtg_cmd, reolink = doc.kev
    assert (linux.vendor_project, linux.product, linux.cwes) == ("Linux", "Kernel", ("CWE-787",))
    assert linux.date_added == dt.date(2025, 2, 5)
    assert linux.due_date == dt.date(2025, 2, 26)
    assert prtg_lfi.product == "PTRG Network Monitor"  # sic, as CISA spells it
    assert prtg_lfi.cwes == ()  # empty cwes column
    assert 'use the "TestEmail" functionality' in reolink.short_description  # CSV "" quoting
    assert reolink.due_date == dt.date(2025, 1, 8)


def test_csaf_cisa_advisory_for_siemens() -> None:
    doc = load_feed(DATA / "icsa-24-046-15.json")
    assert (doc.source, doc.format, doc.skipped) == ("csaf", "csaf-2.0", 0)
    [advisory] = doc.advisories
    assert advisory.id == "ICSA-24-046-15"
    assert advisory.title == "Siemens SINEC NMS"
    assert advisory.publisher == "CISA"
    assert advisory.initial_release == dt.datetime(2024, 2, 13, tzinfo=UTC)
    assert advisory.current_release == dt.datetime(2024, 2, 13, tzinfo=UTC)
    assert advisory.revision == "1"
    assert advisory.url == "https://cert-portal.siemens.com/productcert/csaf/ssa-943925.json"
    [product] = advisory.products
    assert (product.product_id, product.vendor, product.name) == ("CSAFPID-0001", "Siemens", "SINEC NMS")
    assert (product.version, product.version_range, product.cpe) == (None, "<V2.0_SP1", None)
    assert [v.cve for v in advisory.vulnerabilities] == ["CVE-2022-4203", "CVE-2022-4304"]
    first = advisory.vulnerabilities[0]
    assert first.cwes == ("CWE-125",)
    assert first.known_affected == ("CSAFPID-0001",)
    [score] = first.cvss
    assert (score.version, score.base_score, score.severity) == ("3.1", 4.9, Severity.MEDIUM)
    assert score.vector == "CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:N/I:N/A:H/E:P/RL:O/RC:C"
    assert (score.source, score.primary) == ("https://www.cisa.gov/", False)
    [fix] = first.remediations
    assert (fix.category, fix.details) == ("vendor_fix", "Update to V2.0 SP1 or later version")
    assert fix.url == "https://support.industry.siemens.com/cs/ww/en/view/109826954/"
    assert advisory.vulnerabilities[1].cvss[0].base_score == 5.9


@pytest.mark.parametrize(
    "name",
    [
        "CVE-2022-1161.json",
        "CVE-2017-0144.json",
        "known_exploited_vulnerabilities.json",
        "known_exploited_vulnerabilities.csv",
        "icsa-24-046-15.json",
    ],
)
def test_real_samples_are_recognised_gzipped_and_renamed(tmp_path: Path, name: str) -> None:
    """Recognition is by content: a gzip copy under a meaningless name parses to the same records."""
    plain = load_feed(DATA / name)
    renamed = tmp_path / "download.bin"
    renamed.write_bytes(gzip.compress((DATA / name).read_bytes()))
    packed = load_feed(renamed)
    assert (packed.source, packed.format) == (plain.source, plain.format)
    assert (packed.vulnerabilities, packed.kev, packed.advisories) == (
        plain.vulnerabilities,
        plain.kev,
        plain.advisories,
    )
    assert plain.records > 0
