"""Feed uploads are imported into the console's database (real NVD, KEV and CSAF files), with counts,
per-file errors and an audit row; the risk report renders from the database as HTML, PDF and JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pytest
from sqlalchemy import select

from fieldward.store.models import AuditLog

from .conftest import Console

FEEDS = Path(__file__).resolve().parents[1] / "data" / "feeds"
REAL_FEEDS = (
    "CVE-2017-0144.json",
    "CVE-2022-1161.json",
    "known_exploited_vulnerabilities.csv",
    "icsa-24-046-15.json",
)


def _files(*names: str, extra: list[tuple[str, bytes]] | None = None) -> list[tuple[str, Any]]:
    parts: list[tuple[str, Any]] = [
        ("files", (name, (FEEDS / name).read_bytes(), "application/octet-stream")) for name in names
    ]
    for name, data in extra or []:
        parts.append(("files", (name, data, "application/octet-stream")))
    return parts


def test_an_admin_imports_real_feeds(any_console: Console) -> None:
    console = any_console
    admin = console.bearer(console.tokens["admin"])
    before = console.client.get("/api/v1/feeds", headers=console.bearer(console.tokens["viewer"]))
    assert before.status_code == 200
    assert before.json()["sources"]["nvd"]["records"] == 0
    hostile_name = "../../etc/passwd\r\nX-Evil: 1.json"
    response = console.client.post(
        "/api/v1/feeds/import",
        files=_files(*REAL_FEEDS, extra=[(hostile_name, b"this is not a feed")]),
        headers=admin,
    )
    assert response.status_code == 200, response.text
    report = response.json()
    by_name = {f["filename"]: f for f in report["files"]}
    assert set(by_name) >= set(REAL_FEEDS)
    assert by_name["CVE-2017-0144.json"]["source"] == "nvd"
    assert by_name["CVE-2017-0144.json"]["counts"]["added"] == 1
    assert by_name["known_exploited_vulnerabilities.csv"]["source"] == "kev"
    assert by_name["icsa-24-046-15.json"]["source"] == "csaf"
    assert report["by_source"]["nvd"]["added"] == 2
    assert report["by_source"]["kev"]["added"] > 0
    assert report["by_source"]["csaf"]["added"] == 1
    bad = [f for f in report["files"] if f["error"]]
    assert len(bad) == 1
    assert "/" not in bad[0]["filename"]
    assert "\n" not in bad[0]["filename"]
    status = console.client.get("/api/v1/feeds", headers=admin).json()
    assert status["sources"]["nvd"]["records"] == 2
    assert status["sources"]["csaf"]["records"] == 1
    assert status["last_import"] is not None
    # the same bytes again: recognised, nothing re-imported
    again = console.client.post(
        "/api/v1/feeds/import", files=_files("CVE-2022-1161.json"), headers=admin
    ).json()
    assert again["files"][0]["identical"] is True
    assert again["total"]["added"] == 0
    with console.database.session() as session:
        rows = list(
            session.scalars(select(AuditLog).where(AuditLog.action == "feeds.import").order_by(AuditLog.id))
        )
    assert len(rows) == 2
    assert rows[0].actor == "admin-user"
    assert rows[0].details["total"]["added"] == report["total"]["added"]


def test_feed_upload_is_for_admins_and_refuses_nonsense(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    analyst = console.client.post(
        "/api/v1/feeds/import",
        files=_files("CVE-2017-0144.json"),
        headers=console.bearer(console.tokens["analyst"]),
    )
    assert analyst.status_code == 403
    admin = console.bearer(console.tokens["admin"])
    assert console.client.post("/api/v1/feeds/import", headers=admin).status_code == 422
    assert console.client.post("/api/v1/feeds/import", json={"files": []}, headers=admin).status_code == 422
    too_many = [("files", (f"f{i}.json", b"{}", "application/json")) for i in range(65)]
    assert console.client.post("/api/v1/feeds/import", files=too_many, headers=admin).status_code == 422
    big = [("files", ("big.json", b"[" + b" " * (2 * 1024 * 1024) + b"]", "application/json"))]
    accepted = console.client.post("/api/v1/feeds/import", files=big, headers=admin)
    assert accepted.status_code == 200  # feed files are large: 512 MiB by default, streamed to disk
    monkeypatch.setenv("FIELDWARD_MAX_FEED_BYTES", str(1024 * 1024))
    assert console.client.post("/api/v1/feeds/import", files=big, headers=admin).status_code == 413


def _report(console: Console, role: str = "viewer", **params: Any) -> Any:
    return console.client.get(
        "/api/v1/reports/risk", params=params, headers=console.bearer(console.tokens[role])
    )


def test_the_report_is_rendered_from_the_database(demo_console: Console, demo_folder: Path) -> None:
    risk = json.loads((demo_folder / "risk.json").read_text())
    devices = json.loads((demo_folder / "devices.json").read_text())["devices"]
    findings = json.loads((demo_folder / "vulnerabilities.json").read_text())["findings"]
    summary = _report(demo_console, format="json")
    assert summary.status_code == 200, summary.text
    figures = summary.json()
    assert figures["site_score"] == risk["site"]["score"]
    assert figures["figures"]["devices"] == len(devices)
    assert figures["figures"]["findings"] == len(findings)
    assert figures["figures"]["actions"] == len(risk["remediation"])
    assert [p["action"] for p in figures["plan"]] == [r["action"] for r in risk["remediation"]]
    assert figures["top_risks"][0]["score"] == max(d["score"] for d in risk["devices"])

    html = _report(demo_console)
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    assert "script-src" not in html.headers["content-security-policy"]
    assert "default-src 'none'" in html.headers["content-security-policy"]
    page = html.text
    assert f">{risk['site']['score']}<" in page
    assert findings[0]["vulnerability_id"] in page
    assert "FieldWard console, the whole site" in page
    assert "<script" not in page


def test_the_pdf_report_of_one_sensor(demo_console: Console) -> None:
    page = demo_console.client.get(
        "/api/v1/sensors", headers=demo_console.bearer(demo_console.tokens["viewer"])
    )
    plant = next(s for s in page.json()["items"] if s["name"] == "plant")
    pdf = _report(demo_console, format="pdf", sensor_id=plant["id"])
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"].startswith('attachment; filename="fieldward-risk-')
    assert pdf.content.startswith(b"%PDF-")
    document = pdfium.PdfDocument(io.BytesIO(pdf.content))
    try:
        text = document[0].get_textpage().get_text_range()
    finally:
        document.close()
    assert "FieldWard console, sensor plant" in " ".join(text.split())


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"format": "exe"}, 422),
        ({"sensor_id": 424242}, 404),
        ({"sensor_id": "x"}, 422),
        ({"sensor_id": 0}, 422),
    ],
)
def test_report_parameters(console: Console, params: dict[str, Any], code: int) -> None:
    assert _report(console, **params).status_code == code


def test_an_empty_console_still_renders_a_report(console: Console) -> None:
    empty = _report(console, format="json").json()
    assert empty["site_score"] == 0
    assert empty["figures"]["devices"] == 0
    assert _report(console).status_code == 200
