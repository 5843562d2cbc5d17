"""Vulnerability matching: NVD configurations, CSAF advisories, KEV, marks, and the demo plant end to end.

The records below are modelled on real CVEs (NVD CVE API 2.0 shape, configurations trimmed to the
products the tests need), but their ranges, CPE names and scores were written from memory for these
tests, not copied from NVD: they test the matching logic, not facts about those CVEs (the hand-checked
real records are in tests/data/feeds/ and src/fieldward/data/feeds/). The CSAF advisory is modelled on
Siemens SSA-434534; KEV entries and the Moxa advisory are made up for the tests.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from fieldward.assess.matching import InMemorySource, MatchOptions, match_device, match_devices
from fieldward.assess.model import (
    Advisory,
    AdvisoryProduct,
    AdvisoryVulnerability,
    Configuration,
    ConfigurationNode,
    CpeMatch,
    CvssScore,
    KevEntry,
    Remediation,
    Severity,
    VersionRange,
    Vulnerability,
)


def cvss(score: float, vector: str) -> CvssScore:
    return CvssScore("3.1", vector, score, Severity.from_score(score), "nvd@nist.gov", True)


def firmware_on(firmware: CpeMatch, *hardware: str) -> Configuration:
    """NVD's "firmware X running on hardware Y" configuration."""
    platforms = tuple(CpeMatch(f"cpe:2.3:h:{name}:-:*:*:*:*:*:*:*", vulnerable=False) for name in hardware)
    return Configuration(
        operator="AND",
        nodes=(ConfigurationNode("OR", (firmware,)), ConfigurationNode("OR", platforms)),
    )


S7_1500_HARDWARE = (
    "siemens:simatic_s7-1500_cpu_1511-1_pn",
    "siemens:simatic_s7-1500_cpu_1513-1_pn",
    "siemens:simatic_s7-1500_cpu_1515-2_pn",
    "siemens:simatic_s7-1500_cpu_1518-4_pn\\/dp",
)

CVE_2020_15782 = Vulnerability(
    id="CVE-2020-15782",
    source="nvd",
    description="A vulnerability has been identified in SIMATIC S7-1500 CPU family (incl. related ET200 "
    "CPUs and SIPLUS variants) (All versions < V2.9.2) ... memory protection bypass.",
    published=dt.datetime(2021, 6, 9, 20, 15, tzinfo=dt.UTC),
    cvss=(cvss(8.1, "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H"),),
    cwes=("CWE-119",),
    configurations=(
        firmware_on(
            CpeMatch(
                "cpe:2.3:o:siemens:simatic_s7-1500_cpu_firmware:*:*:*:*:*:*:*:*",
                versions=VersionRange(end_excluding="2.9.2"),
            ),
            *S7_1500_HARDWARE,
        ),
    ),
)

CVE_2021_22681 = Vulnerability(
    id="CVE-2021-22681",
    source="nvd",
    description="Rockwell Automation Studio 5000 Logix Designer ... Logix controllers: insufficiently "
    "protected credentials; a key can be discovered and used to authenticate.",
    published=dt.datetime(2021, 3, 3, 18, 15, tzinfo=dt.UTC),
    cvss=(cvss(9.8, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),),
    configurations=(
        firmware_on(
            CpeMatch("cpe:2.3:o:rockwellautomation:controllogix_5580_firmware:*:*:*:*:*:*:*:*"),
            "rockwellautomation:controllogix_5580",
        ),
        firmware_on(
            CpeMatch("cpe:2.3:o:rockwellautomation:compactlogix_5380_firmware:*:*:*:*:*:*:*:*"),
            "rockwellautomation:compactlogix_5380",
        ),
    ),
)

CVE_2024_6242 = Vulnerability(
    id="CVE-2024-6242",
    source="nvd",
    description="A vulnerability exists in the affected products that allows a threat actor to bypass "
    "the Trusted Slot feature in a ControlLogix 5580 controller.",
    published=dt.datetime(2024, 8, 1, 12, 15, tzinfo=dt.UTC),
    cvss=(cvss(8.4, "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:C/C:H/I:H/A:N"),),
    configurations=(
        Configuration(
            nodes=(
                ConfigurationNode(
                    "OR",
                    tuple(
                        CpeMatch(
                            "cpe:2.3:o:rockwellautomation:1756-l83e_firmware:*:*:*:*:*:*:*:*",
                            versions=VersionRange(start_including=start, end_excluding=end),
                        )
                        for start, end in (
                            ("28.011", "33.017"),
                            ("34.0", "34.014"),
                            ("35.0", "35.013"),
                            ("36.0", "36.011"),
                        )
                    ),
                ),
            )
        ),
    ),
)

SCHNEIDER_M340 = Vulnerability(
    id="CVE-2021-22779",
    source="nvd",
    description="Authentication bypass by spoofing in Modicon M340 CPUs (versions prior to V3.40).",
    published=dt.datetime(2021, 7, 21, 11, 15, tzinfo=dt.UTC),
    cvss=(cvss(9.8, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),),
    configurations=(
        firmware_on(
            CpeMatch(
                "cpe:2.3:o:schneider-electric:modicon_m340_firmware:*:*:*:*:*:*:*:*",
                versions=VersionRange(end_excluding="3.40"),
            ),
            "schneider-electric:modicon_m340",
        ),
    ),
)

S7_1200_ONLY = Vulnerability(
    id="CVE-2019-10929",
    source="nvd",
    description="SIMATIC S7-1200 CPU family ... cryptographic weakness.",
    cvss=(cvss(5.9, "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:H/A:N"),),
    configurations=(
        Configuration(
            nodes=(
                ConfigurationNode(
                    "OR", (CpeMatch("cpe:2.3:o:siemens:simatic_s7-1200_cpu_firmware:*:*:*:*:*:*:*:*"),)
                ),
            )
        ),
    ),
)

OPENSSH = Vulnerability(
    id="CVE-2023-38408",
    source="nvd",
    description="The PKCS#11 feature in ssh-agent in OpenSSH before 9.3p2 ...",
    cvss=(cvss(9.8, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),),
    configurations=(
        Configuration(
            nodes=(
                ConfigurationNode(
                    "OR",
                    (
                        CpeMatch(
                            "cpe:2.3:a:openbsd:openssh:*:*:*:*:*:*:*:*",
                            versions=VersionRange(end_excluding="9.3"),
                        ),
                        CpeMatch("cpe:2.3:a:openbsd:openssh:9.3:-:*:*:*:*:*:*"),
                        CpeMatch("cpe:2.3:a:openbsd:openssh:9.3:p1:*:*:*:*:*:*"),
                    ),
                ),
            )
        ),
    ),
)

SSA_434534 = Advisory(
    id="SSA-434534",
    title="Memory Protection Bypass Vulnerability in SIMATIC S7-1200 and S7-1500 CPU Families",
    publisher="Siemens ProductCERT",
    initial_release=dt.datetime(2021, 5, 28, tzinfo=dt.UTC),
    products=(
        AdvisoryProduct(
            "CSAFPID-0001",
            "Siemens",
            "SIMATIC S7-1500 CPU family (incl. related ET200 CPUs and SIPLUS variants)",
            version_range="vers:intdot/<2.9.2",
        ),
        AdvisoryProduct(
            "CSAFPID-0002",
            "Siemens",
            "SIMATIC S7-1200 CPU family (incl. SIPLUS variants)",
            version_range="vers:intdot/<4.5.0",
        ),
    ),
    vulnerabilities=(
        AdvisoryVulnerability(
            cve="CVE-2020-15782",
            title="Memory protection bypass",
            cvss=(cvss(8.1, "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H"),),
            known_affected=("CSAFPID-0001", "CSAFPID-0002"),
            remediations=(
                Remediation("mitigation", "Restrict network access to port 102/tcp", None, ("CSAFPID-0001",)),
                Remediation(
                    "vendor_fix",
                    "Update to V2.9.2 or later version",
                    "https://support.industry.siemens.com/cs/ww/en/view/109478459/",
                    ("CSAFPID-0001",),
                ),
                Remediation("vendor_fix", "Update to V4.5.0 or later version", None, ("CSAFPID-0002",)),
            ),
        ),
    ),
)

MOXA_ADVISORY = Advisory(
    id="TEST-MOXA-1",
    title="MGate MB3170/MB3270 Series: improper authentication (test record)",
    publisher="test",
    products=(
        AdvisoryProduct("P1", "Moxa", "MGate MB3270", version_range="V4.2 and prior"),
        AdvisoryProduct("P2", "Moxa", "MGate MB3270", version="V4.3"),
        AdvisoryProduct("P3", "Moxa", "MGate MB3170", version_range="<=V4.3"),
    ),
    vulnerabilities=(
        AdvisoryVulnerability(
            cve="CVE-2099-0001",
            title="Improper authentication",
            cvss=(cvss(7.5, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"),),
            known_affected=("P1", "P3"),
            fixed=("P2",),
            remediations=(Remediation("vendor_fix", "Upgrade to firmware v4.3", None, ("P1",)),),
        ),
        AdvisoryVulnerability(
            cve="CVE-2099-0002",
            title="Cleartext transmission",
            known_affected=("P1", "P2"),
            remediations=(Remediation("workaround", "Disable HTTP, use HTTPS", None, ()),),
        ),
    ),
)

KEV = (
    KevEntry(
        "CVE-2021-22681",
        "Rockwell Automation",
        "Logix Controllers",
        "test entry",
        dt.date(2024, 1, 2),
        required_action="Apply mitigations per vendor instructions.",
        due_date=dt.date(2024, 1, 23),
        known_ransomware=True,
    ),
)


def device(device_id: str, **attributes: Any) -> dict[str, Any]:
    confidence = {k: 0.9 for k, v in attributes.items() if v is not None and k != "facts"}
    return {"id": device_id, **attributes, "confidence": confidence}


S7 = device(
    "mac:00:1b:1b:30:89:24",
    vendor="Siemens",
    model="CPU 1515-2 PN",
    product_code="6ES7 515-2AM02-0AB0",
    firmware="V2.9.4",
)
LOGIX = device("mac:00:1d:9c:47:eb:e4", vendor="Rockwell Automation", model="1756-L83E/B", firmware="33.11")

SOURCE = InMemorySource(
    [CVE_2020_15782, CVE_2021_22681, CVE_2024_6242, SCHNEIDER_M340, S7_1200_ONLY, OPENSSH],
    KEV,
    [SSA_434534, MOXA_ADVISORY],
)


def by_id(findings: list[Any]) -> dict[str, Any]:
    return {f.vulnerability_id: f for f in findings}


def test_fixed_firmware_is_not_reported() -> None:
    # V2.9.4 is above NVD's < 2.9.2 and outside the advisory's vers:intdot/<2.9.2
    assert "CVE-2020-15782" not in by_id(match_device(S7, SOURCE))


def test_vulnerable_firmware_on_matching_hardware() -> None:
    old = {**S7, "firmware": "V2.8.3"}
    finding = by_id(match_device(old, SOURCE))["CVE-2020-15782"]
    assert finding.cpe == "cpe:2.3:o:siemens:simatic_s7-1500_cpu_firmware:2.8.3:*:*:*:*:*:*:*"
    assert finding.criteria.startswith("cpe:2.3:o:siemens:simatic_s7-1500_cpu_firmware:*")
    assert "firmware V2.8.3 is below 2.9.2 (NVD range < 2.9.2)" in finding.reason
    assert "simatic_s7-1500_cpu_1515-2_pn" in finding.reason
    assert finding.sources == ("nvd", "csaf:SSA-434534")  # NVD and CSAF evidence merged
    assert finding.remediation.startswith("vendor_fix: Update to V2.9.2 or later version")
    assert "V4.5.0" not in finding.remediation  # the S7-1200 fix is for another product
    assert finding.severity is Severity.HIGH
    assert finding.cvss is not None
    assert finding.cvss.base_score == 8.1
    assert finding.published == dt.datetime(2021, 6, 9, 20, 15, tzinfo=dt.UTC)
    assert finding.description.startswith("A vulnerability has been identified")
    nvd_only = by_id(match_device(old, InMemorySource([CVE_2020_15782])))["CVE-2020-15782"]
    assert finding.confidence > nvd_only.confidence  # two sources agree


def test_firmware_on_other_hardware_is_not_reported() -> None:
    s7_1518 = {**S7, "model": "CPU 1517-3 PN/DP", "firmware": "V2.8.3", "product_code": None}
    only_1515 = Vulnerability(
        "CVE-TEST-1",
        "nvd",
        configurations=(
            firmware_on(
                CpeMatch(
                    "cpe:2.3:o:siemens:simatic_s7-1500_cpu_firmware:*:*:*:*:*:*:*:*",
                    versions=VersionRange(end_excluding="2.9.2"),
                ),
                "siemens:simatic_s7-1500_cpu_1515-2_pn",
            ),
        ),
    )
    assert match_device(s7_1518, InMemorySource([only_1515])) == []
    assert [
        f.vulnerability_id for f in match_device({**S7, "firmware": "2.8"}, InMemorySource([only_1515]))
    ] == ["CVE-TEST-1"]


def test_hardware_unknown_lowers_confidence_and_says_so() -> None:
    no_model = {**S7, "model": None, "firmware": "V2.8.3"}
    finding = by_id(match_device(no_model, InMemorySource([CVE_2020_15782])))["CVE-2020-15782"]
    known = by_id(match_device({**S7, "firmware": "V2.8.3"}, InMemorySource([CVE_2020_15782])))[
        "CVE-2020-15782"
    ]
    assert "hardware not confirmed" in finding.reason
    assert finding.confidence < known.confidence * 0.6


def test_rockwell_ranges_and_all_versions() -> None:
    findings = by_id(match_device(LOGIX, SOURCE))
    trusted_slot = findings["CVE-2024-6242"]
    assert "firmware 33.11 is within >= 28.011, < 33.017" in trusted_slot.reason
    assert trusted_slot.cpe.startswith("cpe:2.3:o:rockwellautomation:1756-l83e_firmware:33.11")
    key = findings["CVE-2021-22681"]
    assert "all versions" in key.reason
    assert key.severity is Severity.CRITICAL
    assert key.kev
    assert key.known_ransomware
    assert key.kev_due_date == dt.date(2024, 1, 23)
    assert key.sources == ("nvd", "kev")
    assert key.remediation == "Apply mitigations per vendor instructions."
    assert "CVE-2019-10929" not in findings
    assert "CVE-2020-15782" not in findings
    fixed = {**LOGIX, "firmware": "33.017"}
    assert "CVE-2024-6242" not in by_id(match_device(fixed, SOURCE))
    assert "CVE-2024-6242" in by_id(match_device({**LOGIX, "firmware": "34.011"}, SOURCE))


def test_other_product_of_the_same_vendor_is_not_reported() -> None:
    compact = device("ip:10.0.0.5", vendor="Rockwell Automation", model="1769-L33ER/A", firmware="30.11")
    assert match_device(compact, SOURCE) == []


def test_same_model_name_from_another_vendor_is_not_reported() -> None:
    fake = device("ip:10.0.0.6", vendor="Advantech", model="1756-L83E/B", firmware="20.11")
    assert match_device(fake, SOURCE) == []


def test_schneider_version_scheme_in_matching() -> None:
    m340 = device("ip:10.0.0.7", vendor="Schneider Electric", model="BMXP342020", firmware="V3.5")
    # V3.5 is V3.50 for Schneider: above < 3.40 (a plain integer reading would say 5 < 40)
    assert match_device(m340, SOURCE) == []
    old = {**m340, "firmware": "V3.30"}
    assert [f.vulnerability_id for f in match_device(old, SOURCE)] == ["CVE-2021-22779"]


def test_unknown_firmware_is_flagged_not_claimed() -> None:
    unknown = {**LOGIX, "firmware": None}
    findings = by_id(match_device(unknown, SOURCE))
    ranged = findings["CVE-2024-6242"]
    assert ranged.reason.startswith("firmware unknown: cannot tell whether it is within")
    every = findings["CVE-2021-22681"]  # "all versions" needs no version
    assert ranged.confidence < every.confidence * 0.5
    strict = by_id(match_device(unknown, SOURCE, MatchOptions(include_uncertain=False)))
    assert "CVE-2024-6242" not in strict
    assert "CVE-2021-22681" in strict


def test_exact_version_criteria_and_updates() -> None:
    host = device("ip:10.0.0.8", vendor="Raspberry Pi")
    for banner, expected in (
        ("OpenSSH_9.3p1 Debian-1", True),
        ("OpenSSH_8.9p1 Ubuntu-3", True),
        ("OpenSSH_9.3p2 Debian-1", False),
        ("OpenSSH_9.6p1 Debian-4", False),
    ):
        host["facts"] = {"ssh.software": [banner]}
        found = "CVE-2023-38408" in by_id(match_device(host, SOURCE))
        assert found is expected, banner


def test_negated_and_nested_configurations() -> None:
    # "any S7-1500 firmware except on the 1515" : the platform node is negated
    negated = Vulnerability(
        "CVE-TEST-NEG",
        "nvd",
        configurations=(
            Configuration(
                operator="AND",
                nodes=(
                    ConfigurationNode(
                        "OR", (CpeMatch("cpe:2.3:o:siemens:simatic_s7-1500_cpu_firmware:*:*:*:*:*:*:*:*"),)
                    ),
                    ConfigurationNode(
                        "OR",
                        (
                            CpeMatch(
                                "cpe:2.3:h:siemens:simatic_s7-1500_cpu_1515-2_pn:-:*:*:*:*:*:*:*",
                                vulnerable=False,
                            ),
                        ),
                        negate=True,
                    ),
                ),
            ),
        ),
    )
    source = InMemorySource([negated])
    assert match_device(S7, source) == []
    other = {**S7, "model": "CPU 1511-1 PN", "product_code": None}
    assert [f.vulnerability_id for f in match_device(other, source)] == ["CVE-TEST-NEG"]


def test_csaf_ranges_fixed_products_and_remediation() -> None:
    mgate = device("mac:00:90:e8:af:6f:31", vendor="Moxa", model="MGate MB3270", firmware="V4.3")
    findings = by_id(match_device(mgate, SOURCE))
    assert "CVE-2099-0001" not in findings  # V4.3 is past "V4.2 and prior"; MB3170 is another model
    cleartext = findings["CVE-2099-0002"]  # P2 (exactly V4.3) is known affected
    assert cleartext.sources == ("csaf:TEST-MOXA-1",)
    assert "firmware V4.3 is V4.3" in cleartext.reason
    assert cleartext.remediation == "workaround: Disable HTTP, use HTTPS"
    assert cleartext.severity is Severity.NONE
    assert cleartext.cvss is None
    assert cleartext.cpe.startswith("cpe:2.3:")
    old = by_id(match_device({**mgate, "firmware": "V4.1"}, SOURCE))
    assert old["CVE-2099-0001"].remediation == "vendor_fix: Upgrade to firmware v4.3"
    assert old["CVE-2099-0001"].severity is Severity.HIGH
    assert "at or below" in old["CVE-2099-0001"].reason


def test_csaf_sibling_model_is_not_the_device() -> None:
    advisory = Advisory(
        "TEST-SIBLING",
        "S7-1500 CPU 1518",
        "test",
        products=(
            AdvisoryProduct("P1", "Siemens", "SIMATIC S7-1500 CPU 1518-4 PN/DP", version_range="<V3.0"),
        ),
        vulnerabilities=(AdvisoryVulnerability("CVE-2099-0003", known_affected=("P1",)),),
    )
    assert match_device(S7, InMemorySource(advisories=[advisory])) == []
    own = Advisory(
        "TEST-OWN",
        "S7-1500 CPU 1515",
        "test",
        products=(
            AdvisoryProduct(
                "P1", "Siemens", "SIMATIC S7-1500 CPU 1515-2 PN", version_range="All versions < V3.0"
            ),
        ),
        vulnerabilities=(AdvisoryVulnerability("CVE-2099-0004", known_affected=("P1",)),),
    )
    finding = match_device(S7, InMemorySource(advisories=[own]))[0]
    assert finding.vulnerability_id == "CVE-2099-0004"
    assert "firmware V2.9.4 is below" in finding.reason


def test_csaf_model_number_match() -> None:
    advisory = Advisory(
        "TEST-MLFB",
        "order number",
        "test",
        products=(
            AdvisoryProduct(
                "P1",
                "Siemens",
                "SIMATIC S7-1500 CPU",
                version="V2.9.4",
                model_numbers=("6ES7515-2AM02-0AB0",),
            ),
        ),
        vulnerabilities=(AdvisoryVulnerability(None, title="Weak default", known_affected=("P1",)),),
    )
    finding = match_device(S7, InMemorySource(advisories=[advisory]))[0]
    assert finding.vulnerability_id == "TEST-MLFB#1"
    assert "model number 6ES7515-2AM02-0AB0" in finding.reason


def test_marks_set_not_applicable() -> None:
    marks = {(LOGIX["id"], "CVE-2021-22681"): SimpleNamespace(reason="CIP Security enforced")}
    findings = by_id(match_devices([LOGIX, S7], SOURCE, marks))
    assert findings["CVE-2021-22681"].not_applicable
    assert findings["CVE-2021-22681"].not_applicable_reason == "CIP Security enforced"
    assert not findings["CVE-2024-6242"].not_applicable


def test_bad_device_records_fail_clearly() -> None:
    with pytest.raises(ValueError, match="'id'"):
        match_device({"vendor": "Siemens"}, SOURCE)
    with pytest.raises(ValueError, match="mapping"):
        match_devices(["not a device"], SOURCE)  # type: ignore[list-item]


def test_to_json_round_trips() -> None:
    finding = by_id(match_device(LOGIX, SOURCE))["CVE-2021-22681"]
    record = json.loads(json.dumps(finding.to_json()))
    assert record["kev_due_date"] == "2024-01-23"
    assert record["severity"] == "critical"


@pytest.fixture(scope="module")
def demo_devices(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "fieldward.cli", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    devices: list[dict[str, Any]] = json.loads((out / "devices.json").read_text())["devices"]
    return devices


def test_demo_plant_end_to_end(demo_devices: list[dict[str, Any]]) -> None:
    findings = match_devices(demo_devices, SOURCE)
    by_device: dict[str, set[str]] = {}
    for finding in findings:
        by_device.setdefault(finding.device_id, set()).add(finding.vulnerability_id)
        assert 0.0 < finding.confidence <= 0.99
        assert finding.reason
        assert finding.cpe.startswith("cpe:2.3:")
    models = {d["id"]: d.get("model") for d in demo_devices}
    logix = next(i for i, m in models.items() if m == "1756-L83E/B")
    s7 = next(i for i, m in models.items() if m == "CPU 1515-2 PN")
    m340 = next(i for i, m in models.items() if m == "BMXP342020")
    mgate = next(i for i, m in models.items() if m == "MGate MB3270")
    assert {"CVE-2024-6242", "CVE-2021-22681"} <= by_device[logix]
    assert s7 not in by_device  # V2.9.4 is fixed for CVE-2020-15782
    assert m340 not in by_device  # V3.50 is past < 3.40
    assert by_device[mgate] == {"CVE-2099-0002"}
    assert len({f.key for f in findings}) == len(findings)  # one finding per (device, vulnerability)


def test_csaf_fixed_version_weakens_an_nvd_finding() -> None:
    broad = Vulnerability(
        "CVE-2099-0005",
        "nvd",
        configurations=(
            Configuration(
                nodes=(
                    ConfigurationNode(
                        "OR",
                        (
                            CpeMatch(
                                "cpe:2.3:o:siemens:simatic_s7-1500_cpu_firmware:*:*:*:*:*:*:*:*",
                                versions=VersionRange(end_excluding="3.0"),
                            ),
                        ),
                    ),
                )
            ),
        ),
    )
    fixed = Advisory(
        "TEST-FIXED",
        "fixed in V2.9.4",
        "test",
        products=(AdvisoryProduct("P1", "Siemens", "SIMATIC S7-1500 CPU 1515-2 PN", version="V2.9.4"),),
        vulnerabilities=(AdvisoryVulnerability("CVE-2099-0005", fixed=("P1",)),),
    )
    plain = match_device(S7, InMemorySource([broad]))[0]
    weakened = match_device(S7, InMemorySource([broad], advisories=[fixed]))[0]
    assert "but CSAF TEST-FIXED lists this version as fixed" in weakened.reason
    assert weakened.confidence == pytest.approx(plain.confidence * 0.5, abs=1e-3)


def test_csaf_known_not_affected_weakens_an_nvd_finding_too() -> None:
    broad = Vulnerability(
        "CVE-2099-0006",
        "nvd",
        configurations=(
            Configuration(
                nodes=(
                    ConfigurationNode(
                        "OR",
                        (CpeMatch("cpe:2.3:o:siemens:simatic_s7-1500_cpu_firmware:*:*:*:*:*:*:*:*"),),
                    ),
                )
            ),
        ),
    )
    not_affected = Advisory(
        "TEST-NOT-AFFECTED",
        "V2.9.4 not affected",
        "test",
        products=(AdvisoryProduct("P1", "Siemens", "SIMATIC S7-1500 CPU 1515-2 PN", version="V2.9.4"),),
        vulnerabilities=(AdvisoryVulnerability("CVE-2099-0006", known_not_affected=("P1",)),),
    )
    plain = match_device(S7, InMemorySource([broad]))[0]
    weakened = match_device(S7, InMemorySource([broad], advisories=[not_affected]))[0]
    assert "TEST-NOT-AFFECTED" in weakened.reason
    assert weakened.confidence < plain.confidence
