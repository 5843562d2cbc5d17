"""The risk assessment report: HTML structure and figures, hostile names escaped, the PDF pages and text."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from fieldward.assess.model import ConfigFinding, CvssScore, Finding, Severity
from fieldward.assess.report import ReportError, render_report
from fieldward.assess.risk import remediation_plan, score_devices, score_site

HOSTILE = '<script>alert("pwned")</script>'
WHEN = dt.datetime(2026, 3, 1, 8, 30, tzinfo=dt.UTC)
NETWORK = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"


def _device(i: int, kind: str, level: int | None, hostname: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"mac:00:00:00:00:00:{i:02x}",
        "ips": [f"10.10.1.{i}"],
        "hostname": hostname,
        "vendor": "Siemens",
        "model": "CPU 1515-2 PN",
        "firmware": "V2.9.4",
        "device_type": kind,
        "purdue_level": level,
        **extra,
    }


DEVICES = [
    _device(1, "plc", 1, "plc-s7-01"),
    _device(2, "plc", 1, "plc-m580-01"),
    _device(3, "hmi", 2, "hmi-01"),
    _device(4, "ip_camera", 4, HOSTILE, vendor='Axis"><img src=x onerror=alert(1)>'),
    _device(5, "engineering_workstation", 2, "ews-01"),
    _device(6, "historian", 3, "historian"),
    _device(7, "network_device", 3, "sw-01"),
    _device(8, "unknown", None, "10.10.1.8"),
]
ID = {d["hostname"]: d["id"] for d in DEVICES}


def _cve(
    host: str,
    cve_id: str,
    score: float,
    kev: bool = False,
    remediation: str | None = None,
    not_applicable: bool = False,
) -> Finding:
    severity = Severity.from_score(score)
    return Finding(
        ID[host],
        cve_id,
        "cpe:2.3:o:siemens:x:2.9.4:*:*:*:*:*:*:*",
        "< V3.0.1",
        f"firmware V2.9.4 is below 3.0.1 ({HOSTILE})",
        0.9,
        ("nvd",),
        severity,
        CvssScore("3.1", NETWORK, score, severity),
        kev=kev,
        remediation=remediation,
        not_applicable=not_applicable,
        not_applicable_reason="hardware revision differs" if not_applicable else None,
    )


FINDINGS = [
    _cve("plc-s7-01", "CVE-2022-38465", 9.3, kev=True),
    _cve("plc-s7-01", "CVE-2021-37185", 7.5),
    _cve("plc-m580-01", "CVE-2020-7475", 9.8, remediation="Update to V3.20 or later"),
    _cve("ews-01", "CVE-2019-0708", 9.8, kev=True),
    _cve("hmi-01", "CVE-2023-1111", 5.3),
    _cve("hmi-01", "CVE-2018-0001", 9.8, not_applicable=True),
]
CONFIGS = [
    ConfigFinding(
        "cleartext.telnet",
        ID[HOSTILE],
        "Telnet server",
        Severity.HIGH,
        f"Banner: {HOSTILE}",
        "Use SSH",
        "telnet",
        23,
    ),
    ConfigFinding(
        "credentials.default",
        ID["hmi-01"],
        "Default credentials",
        Severity.CRITICAL,
        "admin/admin accepted",
        "Change the password",
        "http",
        80,
    ),
]
ALERTS = [
    {
        "id": "a1",
        "type": "operations.s7_plc_stop",
        "title": "S7 PLC stop command",
        "severity": "critical",
        "status": "new",
        "src_device": ID["10.10.1.8"],
        "dst_device": ID["plc-s7-01"],
        "count": 1,
        "first_ts": "2026-01-01T00:02:12.005000000Z",
    },
    {
        "id": "a2",
        "type": "recon.port_scan",
        "title": "Port scan",
        "severity": "high",
        "status": "acknowledged",
        "src_device": ID["10.10.1.8"],
        "dst_device": ID["plc-m580-01"],
        "count": 3,
        "first_ts": "2026-01-01T00:03:00Z",
    },
    {
        "id": "a3",
        "type": "baseline.new_pair",
        "title": "New communication pair",
        "severity": "medium",
        "status": "closed",
        "src_device": ID["hmi-01"],
        "dst_device": ID["sw-01"],
        "count": 1,
    },
    {
        "id": "a4",
        "type": "baseline.new_device",
        "title": f"New device {HOSTILE}",
        "severity": "low",
        "status": "new",
        "src_device": ID[HOSTILE],
        "dst_device": ID[HOSTILE],
        "count": 1,
    },
]


class _Page(HTMLParser):
    """Elements of interest of the page: ids, tags, attributes, classes and text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.by_id: dict[str, list[str]] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag not in {
            "br",
            "meta",
            "img",
            "link",
            "path",
            "rect",
            "use",
            "circle",
            "line",
            "polyline",
            "stop",
        }:
            self._open.append(attributes.get("id"))
            if attributes.get("id"):
                self.by_id[str(attributes["id"])] = []

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag not in {"br", "meta"}:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        for element_id in self._open:
            if element_id:
                self.by_id[element_id].append(data)

    def content(self, element_id: str) -> str:
        return " ".join(" ".join(self.by_id[element_id]).split())

    def classes(self, name: str) -> list[dict[str, str | None]]:
        return [a for _, a in self.tags if name in str(a.get("class") or "").split()]


@pytest.fixture(scope="module")
def inputs() -> dict[str, Any]:
    risks = score_devices(DEVICES, FINDINGS, CONFIGS, ALERTS)
    return {
        "findings": FINDINGS,
        "config_findings": CONFIGS,
        "risks": risks,
        "site": score_site(risks, DEVICES),
        "plan": remediation_plan(risks, DEVICES, FINDINGS, CONFIGS, ALERTS),
        "devices": DEVICES,
        "alerts": ALERTS,
    }


@pytest.fixture(scope="module")
def html_page(inputs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, _Page]:
    dest = tmp_path_factory.mktemp("report") / "out" / "report.html"
    written = render_report(
        Path("/data/site-a"), "html", dest, title="Plant A assessment", generated_at=WHEN, **inputs
    )
    assert written == dest
    text = dest.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    return text, page


@pytest.fixture(scope="module")
def pdf_path(inputs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("report") / "report.pdf"
    return render_report(
        Path("/data/site-a"), "pdf", dest, title="Plant A assessment", generated_at=WHEN, **inputs
    )


def test_sections_in_order(html_page: tuple[str, _Page]) -> None:
    text, page = html_page
    sections = [a["id"] for tag, a in page.tags if tag == "section"]
    assert sections == [
        "executive-summary",
        "inventory",
        "top-risks",
        "vulnerabilities",
        "configurations",
        "alerts",
        "remediation",
        "method",
    ]
    assert "Plant A assessment" in page.content("cover")
    assert "2026-03-01 08:30 UTC" in text


def test_figures_agree_with_inputs(html_page: tuple[str, _Page], inputs: dict[str, Any]) -> None:
    _, page = html_page
    assert page.content("site-score") == str(inputs["site"].score)
    assert page.content("kpi-devices") == str(len(DEVICES))
    assert page.content("kpi-findings") == "5"  # the not-applicable finding is not counted
    assert page.content("kpi-kev") == "2"
    assert page.content("kpi-configs") == "2"
    assert page.content("kpi-open-alerts") == "3"  # the closed one is not open
    for contributor in inputs["site"].contributors:
        assert contributor.detail in page.content("site-contributors")
    counts = inputs["site"].by_priority
    priorities = page.content("priority-counts")
    assert f"act immediately {counts['now']}" in priorities
    assert f"next maintenance window {counts['next']}" in priorities
    assert f"routine hardening {counts['later']}" in priorities
    assert len(page.classes("finding")) == 5
    assert {a["data-cve"] for a in page.classes("finding")} == {
        f.vulnerability_id for f in FINDINGS if not f.not_applicable
    }
    assert "CVE-2018-0001" in page.content("dismissed")
    assert "hardware revision differs" in page.content("dismissed")
    assert len(page.classes("plan-item")) == len(inputs["plan"])
    assert len(page.classes("config")) == 2
    assert len(page.classes("alert-row")) == 3
    top = [a["data-device"] for a in page.classes("risk-row")]
    assert top == [r.device_id for r in inputs["risks"] if r.score > 0][: len(top)]
    assert "plc 2" in page.content("type-counts")


def test_hostile_names_are_escaped(html_page: tuple[str, _Page]) -> None:
    text, page = html_page
    assert not [a for tag, a in page.tags if tag in {"script", "img"}]
    assert HOSTILE not in text
    assert "&lt;script&gt;" in text
    assert HOSTILE in "".join(page.text)  # shown to the reader as text
    assert not any(str(a.get("onerror") or "") for _, a in page.tags)


def test_charts_are_inline_svg_without_network(html_page: tuple[str, _Page]) -> None:
    text, page = html_page
    assert len([1 for tag, _ in page.tags if tag == "svg"]) == 5
    references = [
        str(value)
        for _, attributes in page.tags
        for name, value in attributes.items()
        if name in {"src", "href", "xlink:href"}
    ]
    assert all(ref.startswith("#") for ref in references)  # only in-page references (SVG glyph uses)
    assert "url(http" not in text
    assert "@import" not in text
    assert not [1 for tag, _ in page.tags if tag == "link"]


def test_pdf_pages_and_text(pdf_path: Path, inputs: dict[str, Any]) -> None:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(pdf_path))
    try:
        assert len(pdf) > 1
        width, height = pdf[0].get_size()
        assert (round(width), round(height)) == (595, 842)  # A4 in points
        texts = [pdf[i].get_textpage().get_text_range() for i in range(len(pdf))]
    finally:
        pdf.close()
    whole = " ".join(" ".join(texts).split())
    assert f"Site risk score {inputs['site'].score}".upper() in whole.upper()
    for needle in (
        "Executive summary",
        "Remediation plan",
        "CVE-2022-38465",
        "plc-s7-01",
        "Plant A assessment",
    ):
        assert needle in whole
    assert HOSTILE in whole  # escaped markup renders as its own text
    assert f"Page 2 of {len(texts)}" in " ".join(texts[1].split())


def test_bad_format_and_destination(inputs: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="unknown report format"):
        render_report(tmp_path, "docx", tmp_path / "r.docx", **inputs)  # type: ignore[arg-type]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ReportError, match="cannot write"):
        render_report(tmp_path, "html", blocker / "r.html", **inputs)


def test_empty_site_renders(tmp_path: Path) -> None:
    dest = render_report(
        tmp_path,
        "html",
        tmp_path / "r.html",
        findings=[],
        config_findings=[],
        risks=[],
        site=score_site([], []),
        plan=[],
        devices=[],
        alerts=[],
        generated_at=WHEN,
    )
    page = _Page()
    page.feed(dest.read_text(encoding="utf-8"))
    assert page.content("site-score") == "0"
    assert "Nothing at this priority." in page.content("plan-now")
