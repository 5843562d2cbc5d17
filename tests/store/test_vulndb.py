"""The vulnerability store on SQLite and PostgreSQL: imports, idempotence, updates, marks, lookups."""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from fieldward.assess.feeds import FeedError, load_feed
from fieldward.store.vulndb import CpeIndexRow, CveRow, VulnerabilityDatabase, VulnerabilityStoreError

DATA = Path(__file__).resolve().parents[1] / "data" / "feeds"
REAL = sorted(DATA.glob("*.json")) + sorted(DATA.glob("*.csv"))
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[str]:
    """A uniquely named schema in the local PostgreSQL, dropped afterwards; skips when unreachable."""
    try:
        admin = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        schema = f"test_vulndb_{uuid.uuid4().hex[:12]}"
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except (SQLAlchemyError, ImportError) as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432 (user postgres, database test): {exc}")
    yield schema
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VulnerabilityDatabase]:
    if request.param == "sqlite":
        database = VulnerabilityDatabase(f"sqlite:///{tmp_path / 'vulns.db'}")
        yield database
        database.close()
        return
    schema = request.getfixturevalue("pg_schema")
    database = VulnerabilityDatabase(f"{PG_URL}?options=-csearch_path%3D{schema}")
    with database.engine.begin() as conn:  # every test starts from empty tables
        for table in (
            "vuln_cpe_index",
            "vuln_cves",
            "vuln_kev",
            "vuln_advisory_products",
            "vuln_advisories",
            "vuln_marks",
            "vuln_imports",
        ):
            conn.execute(text(f'DELETE FROM "{table}"'))
    yield database
    database.close()


def rows(db: VulnerabilityDatabase, model: Any) -> int:
    with db.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(model)) or 0)


def nvd_file(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_bytes(
        orjson.dumps(
            {"format": "NVD_CVE", "version": "2.0", "vulnerabilities": [{"cve": r} for r in records]}
        )
    )
    return path


def cve(cve_id: str, modified: str, product: str, vendor: str = "siemens") -> dict[str, Any]:
    return {
        "id": cve_id,
        "published": "2023-01-10T10:00:00.000",
        "lastModified": modified,
        "vulnStatus": "Analyzed",
        "descriptions": [{"lang": "en", "value": f"flaw in {product} ({modified})"}],
        "metrics": {},
        "configurations": [
            {
                "nodes": [
                    {
                        "operator": "OR",
                        "negate": False,
                        "cpeMatch": [
                            {
                                "vulnerable": True,
                                "criteria": f"cpe:2.3:o:{vendor}:{product}:*:*:*:*:*:*:*:*",
                                "versionEndExcluding": "3.1.0",
                            }
                        ],
                    }
                ]
            }
        ],
    }


def test_import_real_samples_then_reimport_changes_nothing(db: VulnerabilityDatabase) -> None:
    report = db.import_documents(REAL)
    assert report.errors == []
    assert (report.by_source["nvd"].added, report.by_source["kev"].added, report.by_source["csaf"].added) == (
        2,
        7,
        1,
    )
    per_file = {Path(f.path).name: (f.source, f.counts.added) for f in report.files}
    assert per_file["CVE-2022-1161.json"] == ("nvd", 1)
    assert per_file["known_exploited_vulnerabilities.csv"] == ("kev", 4)
    cve_rows, index_rows = rows(db, CveRow), rows(db, CpeIndexRow)
    assert cve_rows == 2
    again = db.import_documents(REAL)
    assert all(f.identical for f in again.files)
    assert again.total.unchanged == 10
    assert again.total.added == again.total.updated == 0
    forced = db.import_documents(REAL, force=True)
    assert not any(f.identical for f in forced.files)
    assert (forced.total.unchanged, forced.total.added, forced.total.updated) == (10, 0, 0)
    assert (rows(db, CveRow), rows(db, CpeIndexRow)) == (cve_rows, index_rows)


def test_lookups_return_the_full_records(db: VulnerabilityDatabase) -> None:
    db.import_documents(REAL)
    [logix] = db.vulnerabilities_for("rockwellautomation", "controllogix_5580_firmware")
    assert logix == load_feed(DATA / "CVE-2022-1161.json").vulnerabilities[0]
    assert len(logix.configurations) == 24  # AND configurations kept whole
    # a platform (non-vulnerable) criterion also finds the CVE, so AND-configurations can be evaluated
    assert [v.id for v in db.vulnerabilities_for("rockwellautomation", "controllogix_5580")] == [
        "CVE-2022-1161"
    ]
    assert [v.id for v in db.vulnerabilities_for("siemens", "acuson_sc2000_firmware")] == ["CVE-2017-0144"]
    assert db.vulnerabilities_for("siemens", "simatic_s7-1500_cpu_firmware") == []
    products = db.products_of("rockwellautomation")
    assert len(products) == 48
    assert products == sorted(products)
    assert "softlogix_5800_firmware" in products
    assert db.products_of("nobody") == []
    kev = db.kev_entries(["cve-2018-9276", "CVE-2024-49035", "CVE-2022-1161", ""])
    assert set(kev) == {"CVE-2018-9276", "CVE-2024-49035"}
    assert kev["CVE-2024-49035"].due_date == dt.date(2025, 3, 18)
    assert kev["CVE-2024-49035"] == load_feed(DATA / "known_exploited_vulnerabilities.json").kev[1]
    [advisory] = db.advisories_for("SIEMENS", ["nothing", "Sinec"])
    assert advisory == load_feed(DATA / "icsa-24-046-15.json").advisories[0]
    assert db.advisories_for("siemens", ["scalance"]) == []
    assert db.advisories_for("rockwell", ["sinec"]) == []
    assert db.advisories_for("siemens", []) == []
    assert db.advisories_for("siemens", ["%"]) == []  # LIKE wildcards are escaped
    assert db.vulnerability("CVE-2017-0144") is not None
    assert db.vulnerability("CVE-1999-0001") is None


def test_advisory_vendor_from_branch_or_cpe_helper(db: VulnerabilityDatabase, tmp_path: Path) -> None:
    document = orjson.loads((DATA / "icsa-24-046-15.json").read_bytes())
    document["document"]["tracking"]["id"] = "ICSA-00-000-00"
    vendor = document["product_tree"]["branches"][0]
    vendor["name"] = "Rockwell Automation"
    vendor["branches"][0]["name"] = "ControlLogix 5580"
    document["product_tree"]["full_product_names"] = [
        {
            "name": "FactoryTalk Linx",
            "product_id": "CSAFPID-0099",
            "product_identification_helper": {
                "cpe": "cpe:2.3:a:rockwellautomation:factorytalk_linx:*:*:*:*:*:*:*:*"
            },
        }
    ]
    (tmp_path / "adv.json").write_bytes(orjson.dumps(document))
    db.import_documents([tmp_path / "adv.json"])
    assert [a.id for a in db.advisories_for("rockwellautomation", ["controllogix"])] == ["ICSA-00-000-00"]
    assert [a.id for a in db.advisories_for("Rockwell Automation", ["CONTROLLOGIX 5580"])] == [
        "ICSA-00-000-00"
    ]
    assert [a.id for a in db.advisories_for("rockwellautomation", ["linx"])] == ["ICSA-00-000-00"]


def test_newer_last_modified_replaces_older_is_ignored(db: VulnerabilityDatabase, tmp_path: Path) -> None:
    old = nvd_file(
        tmp_path / "a.json", [cve("CVE-2023-0001", "2023-02-01T00:00:00.000", "old_product_firmware")]
    )
    new = nvd_file(
        tmp_path / "b.json", [cve("CVE-2023-0001", "2023-06-01T00:00:00.000", "new_product_firmware")]
    )
    assert db.import_documents([old]).by_source["nvd"].added == 1
    report = db.import_documents([new])
    assert (report.by_source["nvd"].updated, report.by_source["nvd"].added) == (1, 0)
    assert db.vulnerabilities_for("siemens", "old_product_firmware") == []
    [current] = db.vulnerabilities_for("siemens", "new_product_firmware")
    assert current.last_modified == dt.datetime(2023, 6, 1, tzinfo=dt.UTC)  # the feed's own date is kept
    assert current.published == dt.datetime(2023, 1, 10, 10, tzinfo=dt.UTC)
    stale = db.import_documents([old], force=True)  # an older file later changes nothing
    assert (stale.by_source["nvd"].unchanged, stale.by_source["nvd"].updated) == (1, 0)
    assert [v.id for v in db.vulnerabilities_for("siemens", "new_product_firmware")] == ["CVE-2023-0001"]
    assert rows(db, CveRow) == 1
    assert rows(db, CpeIndexRow) == 1


def test_duplicates_within_one_file_keep_the_newest(db: VulnerabilityDatabase, tmp_path: Path) -> None:
    path = nvd_file(
        tmp_path / "dup.json",
        [
            cve("CVE-2023-0002", "2023-06-01T00:00:00.000", "second_firmware"),
            cve("CVE-2023-0002", "2023-02-01T00:00:00.000", "first_firmware"),
        ],
    )
    counts = db.import_documents([path]).by_source["nvd"]
    assert (counts.added, counts.unchanged) == (1, 1)
    assert [v.id for v in db.vulnerabilities_for("siemens", "second_firmware")] == ["CVE-2023-0002"]


def test_marks_survive_reimports_and_updates(db: VulnerabilityDatabase, tmp_path: Path) -> None:
    db.import_documents(REAL)
    first = db.mark_not_applicable("plc-7", "CVE-2022-1161", "controller is a 1756-L83E on V35", "alice")
    db.mark_not_applicable("plc-8", "ICSA-24-046-15", "no SINEC NMS", "bob")
    document = orjson.loads((DATA / "CVE-2022-1161.json").read_bytes())
    document["lastModified"] = "2024-01-01T00:00:00.000"
    newer = nvd_file(tmp_path / "newer.json", [document])
    assert db.import_documents([newer]).by_source["nvd"].updated == 1
    db.import_documents(REAL, force=True)
    marks = db.marks()
    assert set(marks) == {("plc-7", "CVE-2022-1161"), ("plc-8", "ICSA-24-046-15")}
    assert marks["plc-7", "CVE-2022-1161"] == first
    assert first.by == "alice"
    assert first.at.tzinfo is not None
    replaced = db.mark_not_applicable("plc-7", "CVE-2022-1161", "isolated cell", "carol")
    assert db.marks()["plc-7", "CVE-2022-1161"] == replaced
    assert db.clear_mark("plc-7", "CVE-2022-1161") is True
    assert db.clear_mark("plc-7", "CVE-2022-1161") is False
    assert set(db.marks()) == {("plc-8", "ICSA-24-046-15")}


def test_kev_and_csaf_updates(db: VulnerabilityDatabase, tmp_path: Path) -> None:
    db.import_documents(REAL)
    catalogue = orjson.loads((DATA / "known_exploited_vulnerabilities.json").read_bytes())
    catalogue["vulnerabilities"][0]["knownRansomwareCampaignUse"] = "Known"
    (tmp_path / "kev.json").write_bytes(orjson.dumps(catalogue))
    counts = db.import_documents([tmp_path / "kev.json"]).by_source["kev"]
    assert (counts.updated, counts.unchanged) == (1, 2)
    assert db.kev_entries(["CVE-2023-34192"])["CVE-2023-34192"].known_ransomware
    advisory = orjson.loads((DATA / "icsa-24-046-15.json").read_bytes())
    revised = copy.deepcopy(advisory)
    revised["document"]["tracking"]["current_release_date"] = "2024-03-12T00:00:00.000000Z"
    revised["document"]["tracking"]["version"] = "2"
    revised["product_tree"]["branches"][0]["branches"][0]["name"] = "SINEC NMS Renamed"
    (tmp_path / "revised.json").write_bytes(orjson.dumps(revised))
    assert db.import_documents([tmp_path / "revised.json"]).by_source["csaf"].updated == 1
    [stored] = db.advisories_for("siemens", ["renamed"])
    assert stored.revision == "2"
    assert db.import_documents([DATA / "icsa-24-046-15.json"], force=True).by_source["csaf"].unchanged == 1
    assert db.advisories_for("siemens", ["renamed"])[0].revision == "2"


def test_status(db: VulnerabilityDatabase) -> None:
    empty = db.status()
    assert empty["sources"]["nvd"]["records"] == 0
    assert empty["last_import"] is None
    db.import_documents(REAL)
    db.mark_not_applicable("d", "CVE-2017-0144", "r", "me")
    status = db.status()
    assert {source: value["records"] for source, value in status["sources"].items()} == {
        "nvd": 2,
        "kev": 7,
        "csaf": 1,
    }
    assert status["sources"]["nvd"]["newest"] == "2025-10-21T20:16:42.430000Z"
    assert status["sources"]["kev"]["newest"] == "2025-02-25"
    assert status["sources"]["kev"]["feed_date"] == "2025-02-25T20:33:53.367600Z"
    assert status["sources"]["kev"]["feed_version"] == "2025.02.25"
    assert status["sources"]["csaf"]["newest"] == "2024-02-13T00:00:00Z"
    assert status["last_import"] is not None
    assert status["marks"] == 1


def test_import_records_and_bad_files(db: VulnerabilityDatabase, tmp_path: Path) -> None:
    records = [
        *load_feed(DATA / "CVE-2017-0144.json").vulnerabilities,
        *load_feed(DATA / "known_exploited_vulnerabilities.csv").kev,
        *load_feed(DATA / "icsa-24-046-15.json").advisories,
    ]
    report = db.import_records(records, name="unit")
    assert [(f.source, f.counts.added) for f in report.files] == [("nvd", 1), ("kev", 4), ("csaf", 1)]
    assert db.import_records(records).total.unchanged == 6
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'{"vulnerabilities": [')
    report = db.import_documents([broken, DATA / "CVE-2022-1161.json"])
    assert [Path(f.path).name for f in report.errors] == ["broken.json"]
    assert "truncated JSON" in (report.errors[0].error or "")
    assert report.by_source["nvd"].added == 1
    with pytest.raises(FeedError, match=r"broken\.json"):
        db.import_documents([broken], strict=True)


def test_bad_urls_raise_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(VulnerabilityStoreError, match="not a database URL"):
        VulnerabilityDatabase("no url at all")
    with pytest.raises(VulnerabilityStoreError, match="cannot open") as caught:
        VulnerabilityDatabase("postgresql+psycopg://nobody:secret@127.0.0.1:1/none?connect_timeout=2")
    assert "secret" not in str(caught.value)  # the password never reaches a message
