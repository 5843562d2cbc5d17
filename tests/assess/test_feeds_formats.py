"""The feed parsers on small files written here in the real formats, and on broken or hostile input."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldward.assess.feeds import FeedDocument, FeedError, load_feed, parse_feed_bytes
from fieldward.assess.model import Severity
from fieldward.errors import FieldWardError

S7 = "cpe:2.3:o:siemens:simatic_s7-1500_cpu_1518-4_pn\\/dp_firmware:*:*:*:*:*:*:*:*"


def nvd_cve(cve_id: str = "CVE-2024-0001", **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": cve_id,
        "sourceIdentifier": "productcert@siemens.com",
        "published": "2024-02-13T09:15:47.120",
        "lastModified": "2024-03-01T10:00:00.000",
        "vulnStatus": "Analyzed",
        "descriptions": [{"lang": "es", "value": "Spanish"}, {"lang": "en", "value": "English text"}],
        "metrics": {
            "cvssMetricV40": [
                {
                    "source": "productcert@siemens.com",
                    "type": "Secondary",
                    "cvssData": {
                        "version": "4.0",
                        "vectorString": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                        "baseScore": 9.3,
                        "baseSeverity": "CRITICAL",
                    },
                }
            ],
            "cvssMetricV30": [
                {
                    "source": "nvd@nist.gov",
                    "type": "Primary",
                    "cvssData": {"version": "3.0", "vectorString": "CVSS:3.0/AV:A/AC:L", "baseScore": 6.5},
                }
            ],
        },
        "weaknesses": [
            {"description": [{"lang": "en", "value": "CWE-20"}, {"lang": "en", "value": "CWE-20"}]}
        ],
        "configurations": [
            {
                "operator": "AND",
                "nodes": [
                    {
                        "operator": "OR",
                        "negate": False,
                        "cpeMatch": [
                            {
                                "vulnerable": True,
                                "criteria": S7,
                                "versionStartIncluding": "2.0",
                                "versionEndExcluding": "3.1.0",
                                "matchCriteriaId": "AAAA",
                            },
                            {
                                "vulnerable": True,
                                "criteria": S7,
                                "versionStartExcluding": "1.0",
                                "versionEndIncluding": "1.8",
                            },
                        ],
                    },
                    {
                        "operator": "OR",
                        "negate": True,
                        "cpeMatch": [
                            {"vulnerable": False, "criteria": "cpe:2.3:h:siemens:x:-:*:*:*:*:*:*:*"}
                        ],
                    },
                ],
            }
        ],
        "references": [{"url": "https://cert-portal.siemens.com/productcert/html/ssa-1.html"}],
    }
    record.update(extra)
    return record


def feed(*records: Any) -> bytes:
    return orjson.dumps(
        {
            "format": "NVD_CVE",
            "version": "2.0",
            "timestamp": "2024-03-02T00:00:00.000",
            "vulnerabilities": [{"cve": r} for r in records],
        }
    )


def test_nvd_every_metric_version_range_and_negation() -> None:
    doc = parse_feed_bytes(feed(nvd_cve()), "feed.json")
    assert doc.format == "nvd-feed-2.0"
    [vuln] = doc.vulnerabilities
    assert vuln.description == "English text"
    assert [(s.version, s.base_score, s.severity, s.primary) for s in vuln.cvss] == [
        ("4.0", 9.3, Severity.CRITICAL, False),
        ("3.0", 6.5, Severity.MEDIUM, True),  # no baseSeverity: rated from the score
    ]
    assert vuln.cwes == ("CWE-20",)
    config = vuln.configurations[0]
    first, second = config.nodes[0].matches
    assert first.product == "simatic_s7-1500_cpu_1518-4_pn\\/dp_firmware"
    assert (first.versions.start_including, first.versions.end_excluding) == ("2.0", "3.1.0")
    assert (second.versions.start_excluding, second.versions.end_including) == ("1.0", "1.8")
    assert second.match_criteria_id is None
    assert config.nodes[1].negate
    assert not config.nodes[0].negate


def test_nvd_bad_records_are_skipped_and_counted() -> None:
    bad_score = nvd_cve("CVE-2024-0003")
    bad_score["metrics"]["cvssMetricV30"][0]["cvssData"]["baseScore"] = "high"
    bad_cpe = nvd_cve("CVE-2024-0004")
    bad_cpe["configurations"][0]["nodes"][0]["cpeMatch"][0]["criteria"] = "siemens s7"
    records = [
        nvd_cve("CVE-2024-0002"),
        {"no": "id"},
        bad_score,
        bad_cpe,
        "text",
        nvd_cve(published="yesterday"),
    ]
    doc = parse_feed_bytes(feed(*records), "mixed.json")
    assert [v.id for v in doc.vulnerabilities] == ["CVE-2024-0002"]
    assert doc.skipped == 5
    assert any("CVE-2024-0003" in problem and "base score" in problem for problem in doc.problems)
    assert any("CVE-2024-0004" in problem and "CPE 2.3" in problem for problem in doc.problems)
    assert any("bad date-time 'yesterday'" in problem for problem in doc.problems)


def test_nvd_empty_feed_and_retired_1_1_format(tmp_path: Path) -> None:
    assert parse_feed_bytes(orjson.dumps({"format": "NVD_CVE", "vulnerabilities": []})).records == 0
    old = tmp_path / "nvdcve-1.1-2020.json"
    old.write_bytes(orjson.dumps({"CVE_data_type": "CVE", "CVE_Items": []}))
    with pytest.raises(FeedError, match=r"nvdcve-1\.1-2020\.json: NVD JSON 1\.1 feeds are retired"):
        load_feed(old)


def kev_entry(cve_id: str, **extra: Any) -> dict[str, Any]:
    entry = {
        "cveID": cve_id,
        "vendorProject": "Siemens",
        "product": "SIMATIC S7-1500",
        "vulnerabilityName": "Siemens SIMATIC Improper Input Validation",
        "dateAdded": "2024-06-01",
        "shortDescription": "desc",
        "requiredAction": "Apply updates per vendor instructions.",
        "dueDate": "2024-06-22",
        "knownRansomwareCampaignUse": "Known",
        "notes": "",
        "cwes": ["CWE-20", "CWE-787"],
    }
    entry.update(extra)
    return entry


def test_kev_json_ransomware_and_bad_entries() -> None:
    catalogue = {
        "catalogVersion": "2024.06.01",
        "dateReleased": "2024-06-01T14:00:00.0000Z",
        "vulnerabilities": [
            kev_entry("CVE-2019-10929"),
            kev_entry("CVE-2020-1", dateAdded="2024-06-01"),
            kev_entry("CVE-2021-0001", dateAdded=None),
            kev_entry("CVE-2021-0002", dueDate="soon"),
            kev_entry("CVE-2021-0003", knownRansomwareCampaignUse="Unknown", cwes=None, dueDate=None),
        ],
    }
    doc = parse_feed_bytes(orjson.dumps(catalogue))
    assert [entry.cve_id for entry in doc.kev] == ["CVE-2019-10929", "CVE-2021-0003"]
    assert doc.kev[0].known_ransomware
    assert not doc.kev[1].known_ransomware
    assert doc.kev[0].cwes == ("CWE-20", "CWE-787")
    assert (doc.kev[1].cwes, doc.kev[1].due_date) == ((), None)
    assert doc.skipped == 3
    assert doc.feed_date == dt.datetime(2024, 6, 1, 14, 0, tzinfo=dt.UTC)


def test_kev_csv_with_several_cwes_and_a_short_row() -> None:
    text = (
        "cveID,vendorProject,product,vulnerabilityName,dateAdded,shortDescription,requiredAction,dueDate,"
        "knownRansomwareCampaignUse,notes,cwes\r\n"
        'CVE-2019-10929,Siemens,"SIMATIC S7-1500, S7-1200","Siemens SIMATIC, quoted",2024-06-01,"d","a",'
        '2024-06-22,Known,"n","CWE-20, CWE-787"\r\n'
        "CVE-2019-0001,Siemens\r\n"
    )
    doc = parse_feed_bytes(text.encode(), "kev.csv")
    [entry] = doc.kev
    assert (entry.product, entry.cwes, entry.known_ransomware) == (
        "SIMATIC S7-1500, S7-1200",
        ("CWE-20", "CWE-787"),
        True,
    )
    assert doc.skipped == 1
    assert "no dateAdded" in doc.problems[0]


def csaf_document(**extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "document": {
            "category": "csaf_security_advisory",
            "csaf_version": "2.0",
            "title": "Siemens SIMATIC S7-1500",
            "publisher": {
                "category": "vendor",
                "name": "Siemens ProductCERT",
                "namespace": "https://www.siemens.com",
            },
            "references": [
                {"category": "external", "url": "https://example.org/x"},
                {
                    "category": "self",
                    "url": "https://cert-portal.siemens.com/productcert/csaf/ssa-000001.json",
                },
            ],
            "tracking": {
                "id": "SSA-000001",
                "initial_release_date": "2024-01-09T00:00:00Z",
                "current_release_date": "2024-05-14T00:00:00Z",
                "version": "3",
            },
        },
        "product_tree": {
            "branches": [
                {
                    "category": "vendor",
                    "name": "Siemens",
                    "branches": [
                        {
                            "category": "product_family",
                            "name": "SIMATIC S7-1500",
                            "branches": [
                                {
                                    "category": "product_name",
                                    "name": "SIMATIC S7-1500 CPU 1518-4 PN/DP",
                                    "branches": [
                                        {
                                            "category": "product_version_range",
                                            "name": "vers:intdot/<3.1.0",
                                            "product": {
                                                "name": "SIMATIC S7-1500 CPU 1518-4 PN/DP < V3.1",
                                                "product_id": "1",
                                                "product_identification_helper": {
                                                    "model_numbers": ["6ES7518-4AP00-0AB0"]
                                                },
                                            },
                                        },
                                        {
                                            "category": "product_version",
                                            "name": "V3.1.0",
                                            "product": {"name": "CPU 1518 V3.1.0", "product_id": "2"},
                                        },
                                    ],
                                }
                            ],
                        }
                    ],
                }
            ],
            "full_product_names": [
                {
                    "name": "SCALANCE X-200",
                    "product_id": "3",
                    "product_identification_helper": {
                        "cpe": "cpe:2.3:o:siemens:scalance_x-200_firmware:*:*:*:*:*:*:*:*"
                    },
                }
            ],
            "relationships": [
                {
                    "category": "installed_on",
                    "product_reference": "1",
                    "relates_to_product_reference": "3",
                    "full_product_name": {"name": "CPU 1518 with SCALANCE", "product_id": "1:3"},
                }
            ],
        },
        "vulnerabilities": [
            {
                "cve": "CVE-2024-0002",
                "title": "Improper input validation",
                "cwe": {"id": "CWE-20", "name": "Improper Input Validation"},
                "scores": [
                    {
                        "cvss_v3": {
                            "version": "3.1",
                            "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H",
                            "baseScore": 7.5,
                            "baseSeverity": "HIGH",
                        },
                        "cvss_v2": {
                            "version": "2.0",
                            "vectorString": "AV:N/AC:L/Au:N/C:N/I:N/A:C",
                            "baseScore": 7.8,
                        },
                        "products": ["1"],
                    },
                    {
                        "cvss_v4": {
                            "version": "4.0",
                            "vectorString": "CVSS:4.0/AV:N",
                            "baseScore": 8.7,
                            "baseSeverity": "HIGH",
                        }
                    },
                ],
                "product_status": {"known_affected": ["1"], "fixed": ["2"], "known_not_affected": ["3"]},
                "remediations": [
                    {
                        "category": "vendor_fix",
                        "details": "Update to V3.1.0",
                        "url": "https://support.industry.siemens.com/x",
                        "product_ids": ["1"],
                    },
                    {
                        "category": "mitigation",
                        "details": "Restrict access to port 102/tcp",
                        "product_ids": ["1"],
                    },
                ],
            },
            {"cve": "CVE-2024-0003", "remediations": [{"details": "no category"}]},
        ],
    }
    document.update(extra)
    return document


def test_csaf_product_tree_flattened_and_scores() -> None:
    doc = parse_feed_bytes(orjson.dumps(csaf_document()), "ssa.json")
    [advisory] = doc.advisories
    assert (advisory.id, advisory.publisher, advisory.revision) == ("SSA-000001", "Siemens ProductCERT", "3")
    assert advisory.url == "https://cert-portal.siemens.com/productcert/csaf/ssa-000001.json"
    assert advisory.current_release == dt.datetime(2024, 5, 14, tzinfo=dt.UTC)
    products = {product.product_id: product for product in advisory.products}
    assert set(products) == {"1", "2", "3", "1:3"}
    ranged = products["1"]
    assert (ranged.vendor, ranged.name, ranged.version_range, ranged.version) == (
        "Siemens",
        "SIMATIC S7-1500 CPU 1518-4 PN/DP",
        "vers:intdot/<3.1.0",
        None,
    )
    assert ranged.model_numbers == ("6ES7518-4AP00-0AB0",)
    assert (products["2"].version, products["2"].version_range) == ("V3.1.0", None)
    assert (products["3"].vendor, products["3"].name) == ("siemens", "SCALANCE X-200")  # vendor from the CPE
    assert products["3"].cpe == "cpe:2.3:o:siemens:scalance_x-200_firmware:*:*:*:*:*:*:*:*"
    assert (products["1:3"].vendor, products["1:3"].version_range) == ("Siemens", "vers:intdot/<3.1.0")
    [vulnerability] = advisory.vulnerabilities  # the second has a remediation without category
    assert doc.skipped == 1
    assert "SSA-000001 vulnerability 1" in doc.problems[0]
    assert [(s.version, s.base_score, s.severity) for s in vulnerability.cvss] == [
        ("3.1", 7.5, Severity.HIGH),
        ("2.0", 7.8, Severity.HIGH),
        ("4.0", 8.7, Severity.HIGH),
    ]
    assert (vulnerability.known_affected, vulnerability.fixed) == (("1",), ("2",))
    assert [r.category for r in vulnerability.remediations] == ["vendor_fix", "mitigation"]
    assert vulnerability.remediations[1].url is None


def test_csaf_without_tracking_id_or_too_deep_is_a_skipped_record() -> None:
    nameless = csaf_document()
    del nameless["document"]["tracking"]["id"]
    doc = parse_feed_bytes(orjson.dumps(nameless))
    assert (doc.source, doc.records, doc.skipped) == ("csaf", 0, 1)
    deep: dict[str, Any] = {"category": "vendor", "name": "V"}
    for _ in range(40):
        deep = {"category": "product_family", "name": "f", "branches": [deep]}
    doc = parse_feed_bytes(orjson.dumps(csaf_document(product_tree={"branches": [deep]})))
    assert doc.skipped == 1
    assert "deeper than" in doc.problems[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"  \n\t", "empty file"),
        (b'{"vulnerabilities": [{"cve": {"id": "CVE-2024-1"', "invalid or truncated JSON"),
        (gzip.compress(feed(nvd_cve()))[:40], "corrupt or truncated gzip"),
        (b"\x1f\x8bnot gzip at all", "corrupt or truncated gzip"),
        (b"\x00\xff\xfe binary", "neither JSON nor UTF-8"),
        (b"cve,vendor\nCVE-1,x\n", "not a KEV CSV"),
        (b'{"hello": "world"}', "top-level keys: hello"),
        (b"[1, 2, 3]", "a top-level list"),
        (b'"just a string"', "not JSON"),
    ],
)
def test_unreadable_files_raise_a_clear_feed_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "feed.dat"
    path.write_bytes(content)
    with pytest.raises(FeedError, match=message) as caught:
        load_feed(path)
    assert str(caught.value).startswith(str(path))
    assert isinstance(caught.value, FieldWardError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="cannot read"):
        load_feed(tmp_path / "absent.json")


def test_kev_json_with_bom_and_crlf(tmp_path: Path) -> None:
    body = b"\xef\xbb\xbf\r\n" + orjson.dumps(
        {"catalogVersion": "1", "vulnerabilities": [kev_entry("CVE-2024-1234")]}
    )
    (tmp_path / "k").write_bytes(body)
    assert [e.cve_id for e in load_feed(tmp_path / "k").kev] == ["CVE-2024-1234"]


# --------------------------------------------------------------------------------- property tests

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)


def _only_feed_errors(content: bytes) -> FeedDocument | None:
    try:
        return parse_feed_bytes(content, "fuzz")
    except FeedError:
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_bytes_never_raise_anything_but_feed_error(content: bytes) -> None:
    _only_feed_errors(content)
    _only_feed_errors(gzip.compress(content))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["nvd", "kev", "csaf"]),
    st.lists(st.tuples(st.sampled_from(["top", "record", "deep"]), st.text(max_size=16), JSON), max_size=5),
)
def test_fuzz_mutated_feeds_never_raise_anything_but_feed_error(
    kind: str, mutations: list[tuple[str, str, Any]]
) -> None:
    """Real-shaped documents with fields replaced by arbitrary JSON: records are skipped, never a crash."""
    if kind == "nvd":
        document: dict[str, Any] = {"format": "NVD_CVE", "vulnerabilities": [{"cve": nvd_cve()}]}
        record = document["vulnerabilities"][0]["cve"]
        deep = record["configurations"][0]["nodes"][0]["cpeMatch"][0]
    elif kind == "kev":
        document = {"catalogVersion": "x", "vulnerabilities": [kev_entry("CVE-2024-0001")]}
        record = deep = document["vulnerabilities"][0]
    else:
        document = csaf_document()
        record = document["vulnerabilities"][0]
        deep = document["product_tree"]["branches"][0]
    for where, key, value in mutations:
        target = {"top": document, "record": record, "deep": deep}[where]
        existing = list(target)
        target[existing[len(key) % len(existing)] if existing and key.startswith("a") else key or "x"] = value
    content = orjson.dumps(document)
    result = _only_feed_errors(content)
    if result is not None:
        assert result.records + result.skipped >= 0
        assert len(result.problems) <= 5
