"""End-to-end tests of the assessment commands: feeds import, assess, vulns, assets, report.

Real processes on the demo plant, with the real feed samples of tests/data/feeds (CVE-2022-1161 is a
real NVD record for the Rockwell ControlLogix 5580 controllers, which the demo plant runs at V33.11).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import run_cli

FEEDS = Path(__file__).parent / "data" / "feeds"
LOGIX = "CVE-2022-1161"


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo plant analysed, and a feed database of its own with the real samples imported."""
    folder = tmp_path_factory.mktemp("assess")
    db = f"sqlite:///{folder / 'feeds.db'}"
    proc = run_cli("feeds", "import", "--db", db, *sorted(str(p) for p in FEEDS.glob("*.json")))
    assert proc.returncode == 0, proc.stderr
    assert "added" in proc.stdout
    proc = run_cli("demo", "--out", str(folder / "out"))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("assess", str(folder / "out"), "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert "Site risk" in proc.stdout
    return folder / "out", db


def findings(folder: Path) -> list[dict[str, object]]:
    return list(json.loads((folder / "vulnerabilities.json").read_text())["findings"])


def test_feed_import_is_idempotent(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    files = [str(FEEDS / "CVE-2022-1161.json"), str(FEEDS / "known_exploited_vulnerabilities.csv")]
    first = run_cli("feeds", "import", "--db", db, *files)
    assert first.returncode == 0, first.stderr
    assert "5 added" in first.stdout  # one CVE and four KEV rows
    again = run_cli("feeds", "import", "--db", db, "--force", *files)
    assert again.returncode == 0, again.stderr
    assert "0 added, 0 updated, 5 unchanged" in again.stdout
    status = run_cli("feeds", "status", "--db", db)
    assert status.returncode == 0, status.stderr
    assert "nvd" in status.stdout
    assert "kev" in status.stdout


def test_a_file_that_is_not_a_feed_is_reported_and_fails(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.json"
    bogus.write_text('{"hello": "world"}')
    proc = run_cli("feeds", "import", "--db", f"sqlite:///{tmp_path / 'k.db'}", str(bogus))
    assert proc.returncode == 2
    assert "could not be imported" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_assess_finds_the_real_cve_on_the_logix_controller(plant: tuple[Path, str]) -> None:
    folder, _ = plant
    devices = {d["id"]: d for d in json.loads((folder / "devices.json").read_text())["devices"]}
    hits = [f for f in findings(folder) if f["vulnerability_id"] == LOGIX]
    assert len(hits) == 1
    assert devices[str(hits[0]["device_id"])]["model"].startswith("1756-L8")
    risk = json.loads((folder / "risk.json").read_text())
    assert 0 <= risk["site"]["score"] <= 100
    scored = {r["device_id"]: r for r in risk["devices"]}
    assert set(scored) == set(devices)
    assert any(c["reference"] == LOGIX for c in scored[str(hits[0]["device_id"])]["contributors"])
    configurations = json.loads((folder / "configurations.json").read_text())["findings"]
    assert "cleartext.telnet" in {c["check"] for c in configurations}  # the demo camera's Telnet


def test_not_applicable_mark_survives_a_feed_reimport(plant: tuple[Path, str], tmp_path: Path) -> None:
    folder, db = plant
    logix = next(str(f["device_id"]) for f in findings(folder) if f["vulnerability_id"] == LOGIX)
    proc = run_cli(
        "vulns", str(folder), "not-applicable", logix, LOGIX, "--reason", "key switch in RUN", "--db", db
    )
    assert proc.returncode == 0, proc.stderr
    marked = next(f for f in findings(folder) if f["vulnerability_id"] == LOGIX)
    assert marked["not_applicable"] is True
    assert marked["not_applicable_reason"] == "key switch in RUN"
    proc = run_cli("feeds", "import", "--db", db, "--force", str(FEEDS / "CVE-2022-1161.json"))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("assess", str(folder), "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert next(f for f in findings(folder) if f["vulnerability_id"] == LOGIX)["not_applicable"] is True
    listed = run_cli("vulns", str(folder), "list", "--json")
    assert LOGIX not in listed.stdout  # hidden unless --all
    assert LOGIX in run_cli("vulns", str(folder), "list", "--all", "--json").stdout
    proc = run_cli("vulns", str(folder), "applicable", logix, LOGIX, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert next(f for f in findings(folder) if f["vulnerability_id"] == LOGIX)["not_applicable"] is False


def test_importance_raises_the_device_score(plant: tuple[Path, str]) -> None:
    folder, db = plant

    def score(device: str) -> int:
        risk = json.loads((folder / "risk.json").read_text())
        return int(next(r["score"] for r in risk["devices"] if r["device_id"] == device))

    risk = json.loads((folder / "risk.json").read_text())
    target = next(r["device_id"] for r in risk["devices"] if 0 < r["score"] < 60)
    before = score(target)
    proc = run_cli("assets", str(folder), "set", target, "critical", "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert score(target) > before
    proc = run_cli("assets", str(folder), "clear", target, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert score(target) == before
    unknown = run_cli("assets", str(folder), "set", "10.99.99.99", "high", "--db", db)
    assert unknown.returncode == 2
    assert "unknown device" in unknown.stderr


def test_report_html_and_pdf(plant: tuple[Path, str]) -> None:
    import pypdfium2

    folder, _ = plant
    proc = run_cli("report", str(folder), "--format", "html")
    assert proc.returncode == 0, proc.stderr
    html = (folder / "report.html").read_text()
    assert LOGIX in html
    site = json.loads((folder / "risk.json").read_text())["site"]["score"]
    assert f">{site}<" in html.replace(" ", "")
    pdf = folder / "risk.pdf"
    proc = run_cli("report", str(folder), "--format", "pdf", "--out", str(pdf))
    assert proc.returncode == 0, proc.stderr
    document = pypdfium2.PdfDocument(str(pdf))
    text = "".join(document[i].get_textpage().get_text_range() for i in range(len(document)))
    assert len(document) > 1
    assert LOGIX in text
    bad = run_cli("report", str(folder), "--format", "docx")
    assert bad.returncode == 2
    assert "unknown report format" in bad.stderr


def test_assess_without_an_analysis_fails_with_one_line(tmp_path: Path) -> None:
    proc = run_cli("assess", str(tmp_path))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_feed_import_of_a_folder_takes_its_feed_files(tmp_path: Path) -> None:
    proc = run_cli("feeds", "import", "--db", f"sqlite:///{tmp_path / 'k.db'}", str(FEEDS))
    assert proc.returncode == 0, proc.stderr
    assert "README" not in proc.stdout
    assert "10 added" in proc.stdout  # 2 NVD records, 1 CSAF advisory, 3 + 4 KEV rows
