"""The risk assessment report: one self-contained HTML page, or an A4 PDF made from it.

The last consumer of ``assess/``: it lays out what the risk model (:mod:`fieldward.assess.risk`)
concluded, with the findings, configurations, alerts and inventory behind it, for a plant manager
(executive summary, site score, Now/Next/Later) and an engineer (vulnerabilities by device, why each
matched, the fix). Templates are Jinja2 with autoescaping on: host names, models and banners come
from the network and are hostile until escaped. Charts are drawn by matplotlib (the SVG backend,
no pyplot state) as inline SVG with text as paths, so the report needs no network, no CDN and no
font beyond the local ones. The PDF is WeasyPrint's rendering of the same HTML with print CSS
(A4, running header, page numbers); its URL fetcher refuses everything but ``data:`` URLs.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import matplotlib as mpl
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fieldward.assess.model import ConfigFinding, DeviceRisk, Finding, Priority, RemediationItem, SiteRisk
from fieldward.assess.risk import PRIORITY_ORDER, SEVERITY_RANK, RiskSettings, device_label
from fieldward.errors import FieldWardError

__all__ = ["ReportError", "ReportFormat", "build_context", "render_html", "render_report"]

ReportFormat = Literal["html", "pdf"]
TEMPLATES = Path(__file__).resolve().parent / "templates"
SEVERITIES = ("critical", "high", "medium", "low", "info")
SEVERITY_COLOURS = {
    "critical": "#8e1b1b",
    "high": "#d9480f",
    "medium": "#e8a317",
    "low": "#4a7fb5",
    "info": "#9aa5b1",
    "none": "#9aa5b1",
}
PRIORITY_COLOURS = {"now": "#8e1b1b", "next": "#d9480f", "later": "#4a7fb5"}
RISK_BANDS = ((80, "critical"), (60, "high"), (40, "medium"), (20, "low"), (0, "minimal"))
INACTIVE_ALERTS = RiskSettings().inactive_alert_statuses
"""The statuses the risk model no longer counts: the report counts the same alerts as open."""
TOP_DEVICES = 10
MAX_ALERT_ROWS = 25


class ReportError(FieldWardError):
    """The report cannot be written (bad format, destination not writable, rendering failed)."""


def risk_band(score: int) -> str:
    """Words for a 0-100 score: critical (80+), high (60+), medium (40+), low (20+), minimal."""
    return next(name for floor, name in RISK_BANDS if score >= floor)


# --------------------------------------------------------------------------------------------------
# charts


_CHART_RC: Any = {
    "svg.fonttype": "path",
    "svg.hashsalt": "fieldward-report",
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.edgecolor": "#9aa5b1",
    "axes.labelcolor": "#333333",
    "xtick.color": "#333333",
    "ytick.color": "#333333",
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _svg(figure: Figure) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog, no DOCTYPE, no date)."""
    buffer = io.StringIO()
    with mpl.rc_context(_CHART_RC):
        FigureCanvasSVG(figure)
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    start = text.find("<svg")
    svg = text[start:] if start >= 0 else text
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.DOTALL)
    # scale with the container: drop the fixed size, keep the viewBox
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 class="chart-svg"', svg, count=1)


def _figure(width: float, height: float) -> Figure:
    with mpl.rc_context(_CHART_RC):
        return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    colours: Sequence[str],
    *,
    horizontal: bool = False,
    xlabel: str = "",
    width: float = 4.6,
    height: float = 2.6,
    limit: float | None = None,
) -> str:
    with mpl.rc_context(_CHART_RC):
        figure = _figure(width, height)
        axes = figure.add_subplot()
        if not labels:
            axes.text(0.5, 0.5, "nothing to show", ha="center", va="center", color="#777777")
            axes.set_axis_off()
            return _svg(figure)
        positions = list(range(len(labels)))
        if horizontal:
            bars = axes.barh(positions, values, color=colours)
            axes.set_yticks(positions, labels)
            axes.invert_yaxis()
            axes.set_xlabel(xlabel)
            if limit is not None:
                axes.set_xlim(0, limit)
            axes.bar_label(bars, labels=[f"{v:g}" for v in values], padding=2, fontsize=7.5)
        else:
            bars = axes.bar(positions, values, color=colours)
            axes.set_xticks(positions, labels, rotation=30 if max(map(len, labels)) > 8 else 0, ha="right")
            axes.set_ylabel(xlabel)
            axes.bar_label(bars, labels=[f"{v:g}" for v in values], padding=1, fontsize=7.5)
            axes.margins(y=0.15)
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.tick_params(length=0)
        return _svg(figure)


def _stacked_types_by_level(devices: Sequence[Mapping[str, Any]]) -> str:
    """Devices by type (bars) split by Purdue level (stacks)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for device in devices:
        kind = str(device.get("device_type") or "unknown")
        level = device.get("purdue_level")
        counts[kind][f"L{level}" if isinstance(level, int) else "unknown"] += 1
    kinds = sorted(counts, key=lambda k: (-sum(counts[k].values()), k))
    levels = sorted({lv for c in counts.values() for lv in c}, key=lambda lv: (lv == "unknown", lv))
    palette = ["#1b3a5c", "#2f6690", "#3a7ca5", "#81c3d7", "#b8d8e3", "#d9dcd6", "#9aa5b1"]
    with mpl.rc_context(_CHART_RC):
        figure = _figure(6.4, max(2.0, 0.19 * len(kinds) + 0.8))
        axes = figure.add_subplot()
        if not kinds:
            axes.text(0.5, 0.5, "no devices", ha="center", va="center", color="#777777")
            axes.set_axis_off()
            return _svg(figure)
        left = [0.0] * len(kinds)
        for index, level in enumerate(levels):
            values = [counts[k][level] for k in kinds]
            axes.barh(range(len(kinds)), values, left=left, color=palette[index % len(palette)], label=level)
            left = [a + b for a, b in zip(left, values, strict=True)]
        axes.set_yticks(range(len(kinds)), [k.replace("_", " ") for k in kinds])
        axes.invert_yaxis()
        axes.set_xlabel("devices")
        axes.tick_params(length=0)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend(title="Purdue level", fontsize=7, title_fontsize=7.5, frameon=False, loc="lower right")
        return _svg(figure)


# --------------------------------------------------------------------------------------------------
# context


@dataclass(frozen=True, slots=True)
class _DeviceView:
    id: str
    label: str
    ips: str
    vendor: str
    model: str
    firmware: str
    device_type: str
    level: str


@dataclass(frozen=True, slots=True)
class _VulnGroup:
    device: _DeviceView
    risk: DeviceRisk | None
    findings: list[Finding]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _device_view(device: Mapping[str, Any]) -> _DeviceView:
    ips = device.get("ips")
    level = device.get("purdue_level")
    return _DeviceView(
        id=str(device.get("id")),
        label=device_label(device),
        ips=", ".join(map(str, ips[:3])) if isinstance(ips, list) else "",
        vendor=_text(device.get("vendor")),
        model=_text(device.get("model")),
        firmware=_text(device.get("firmware")),
        device_type=_text(device.get("device_type") or "unknown").replace("_", " "),
        level=str(level) if isinstance(level, int) else "–",
    )


def _alert_active(alert: Mapping[str, Any]) -> bool:
    return str(alert.get("status") or "new").lower() not in INACTIVE_ALERTS


def build_context(
    *,
    findings: Iterable[Finding],
    config_findings: Iterable[ConfigFinding],
    risks: Sequence[DeviceRisk],
    site: SiteRisk,
    plan: Sequence[RemediationItem],
    devices: Sequence[Mapping[str, Any]],
    alerts: Iterable[Mapping[str, Any]],
    title: str,
    generated_at: dt.datetime,
    source: str,
) -> dict[str, Any]:
    """Everything the template shows, computed once (the tests read the same numbers)."""
    views = {view.id: view for view in (_device_view(d) for d in devices if isinstance(d, Mapping))}

    def view(device_id: str) -> _DeviceView:
        return views.get(device_id) or _DeviceView(device_id, device_id, "", "", "", "", "unknown", "–")

    all_findings = list(findings)
    applicable = [f for f in all_findings if not f.not_applicable]
    dismissed = [f for f in all_findings if f.not_applicable]
    configs = list(config_findings)
    alert_list = [a for a in alerts if isinstance(a, Mapping)]
    open_alerts = [a for a in alert_list if _alert_active(a)]
    risk_by_device = {r.device_id: r for r in risks}

    by_device: dict[str, list[Finding]] = defaultdict(list)
    for finding in applicable:
        by_device[finding.device_id].append(finding)
    vuln_devices = [
        _VulnGroup(
            view(device_id),
            risk_by_device.get(device_id),
            sorted(
                items,
                key=lambda f: (
                    not (f.kev or f.known_ransomware),
                    -(f.cvss.base_score if f.cvss else 0.0),
                    f.vulnerability_id,
                ),
            ),
        )
        for device_id, items in by_device.items()
    ]
    vuln_devices.sort(key=lambda g: (-(g.risk.score if g.risk else 0), g.device.label))

    severity_counts = Counter(f.severity.value for f in applicable)
    finding_severities = [s for s in SEVERITIES if s != "info"]
    alert_counts = Counter(str(a.get("severity", "info")).lower() for a in open_alerts)
    status_counts = Counter(str(a.get("status") or "new").lower() for a in alert_list)
    type_counts = Counter(str(d.get("device_type") or "unknown") for d in devices if isinstance(d, Mapping))
    level_counts = Counter(
        f"L{d.get('purdue_level')}" if isinstance(d.get("purdue_level"), int) else "unknown"
        for d in devices
        if isinstance(d, Mapping)
    )

    top = [r for r in risks if r.score > 0][:TOP_DEVICES]
    bands = Counter(risk_band(r.score) for r in risks)
    band_names = [name for _, name in RISK_BANDS]
    band_colours = ["#8e1b1b", "#d9480f", "#e8a317", "#4a7fb5", "#9aa5b1"]

    charts = {
        "types_levels": _stacked_types_by_level([d for d in devices if isinstance(d, Mapping)]),
        "risk_distribution": _bar_chart(
            [f"{name}\n({floor}+)" if floor else f"{name}\n(<20)" for floor, name in RISK_BANDS],
            [bands[name] for name in band_names],
            band_colours,
            xlabel="devices",
            width=4.4,
            height=2.5,
        ),
        "findings_by_severity": _bar_chart(
            finding_severities,
            [severity_counts[s] for s in finding_severities],
            [SEVERITY_COLOURS[s] for s in finding_severities],
            xlabel="findings",
            width=3.4,
            height=2.0,
        ),
        "alerts_by_severity": _bar_chart(
            list(SEVERITIES),
            [alert_counts[s] for s in SEVERITIES],
            [SEVERITY_COLOURS[s] for s in SEVERITIES],
            xlabel="open alerts",
            width=3.4,
            height=2.0,
        ),
        "top_devices": _bar_chart(
            [view(r.device_id).label[:28] for r in top],
            [r.score for r in top],
            [PRIORITY_COLOURS[r.priority.value] for r in top],
            horizontal=True,
            xlabel="risk score (colour: Now / Next / Later)",
            width=6.8,
            height=max(1.6, 0.26 * len(top) + 0.8),
            limit=100,
        ),
    }

    plan_groups = [
        {
            "priority": priority.value,
            "title": {"now": "Now", "next": "Next", "later": "Later"}[priority.value],
            "meaning": {
                "now": "act immediately: exploited or trivial weaknesses on reachable or critical devices",
                "next": "plan within the next maintenance window",
                "later": "hardening to schedule with routine maintenance",
            }[priority.value],
            "rows": [
                {"item": item, "device": view(item.device_id)} for item in plan if item.priority is priority
            ],
        }
        for priority in sorted(Priority, key=PRIORITY_ORDER.__getitem__)
    ]

    serious_alerts = sorted(
        open_alerts,
        key=lambda a: (
            -SEVERITY_RANK.get(str(a.get("severity", "")).lower(), 0),
            str(a.get("first_ts") or ""),
            str(a.get("id") or ""),
        ),
    )
    alert_rows = [
        {
            "title": _text(a.get("title") or a.get("type") or "alert"),
            "type": _text(a.get("type")),
            "status": _text(a.get("status") or "new"),
            "count": _text(a.get("count") or 1),
            "first_seen": _text(a.get("first_ts"))[:19].replace("T", " "),
            "severity": str(a.get("severity", "")).lower(),
            "src": view(str(a.get("src_device"))).label if a.get("src_device") else _text(a.get("src")),
            "dst": view(str(a.get("dst_device"))).label if a.get("dst_device") else _text(a.get("dst")),
        }
        for a in serious_alerts[:MAX_ALERT_ROWS]
    ]

    return {
        "title": title,
        "generated_at": generated_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "source": source,
        "site": site,
        "site_band": risk_band(site.score),
        "figures": {
            "devices": len(views),
            "vulnerable_devices": len(by_device),
            "findings": len(applicable),
            "kev": sum(1 for f in applicable if f.kev),
            "ransomware": sum(1 for f in applicable if f.known_ransomware),
            "critical_findings": severity_counts["critical"],
            "dismissed": len(dismissed),
            "configs": len(configs),
            "config_devices": len({c.device_id for c in configs}),
            "alerts": len(alert_list),
            "open_alerts": len(open_alerts),
            "open_serious_alerts": sum(
                1 for a in open_alerts if str(a.get("severity")).lower() in {"high", "critical"}
            ),
            "actions": len(plan),
            "now_actions": sum(1 for item in plan if item.priority is Priority.NOW),
        },
        "by_priority": site.by_priority,
        "type_counts": sorted(type_counts.items(), key=lambda kv: (-kv[1], kv[0])),
        "level_counts": sorted(level_counts.items(), key=lambda kv: (kv[0] == "unknown", kv[0])),
        "top_risks": [{"risk": r, "device": view(r.device_id), "band": risk_band(r.score)} for r in top],
        "vuln_devices": vuln_devices,
        "dismissed": [{"finding": f, "device": view(f.device_id)} for f in dismissed],
        "configs": [
            {"config": c, "device": view(c.device_id)}
            for c in sorted(
                configs, key=lambda c: (-SEVERITY_RANK.get(c.severity.value, 0), c.device_id, c.check)
            )
        ],
        "alert_rows": alert_rows,
        "alert_counts": [(s, alert_counts[s]) for s in SEVERITIES],
        "status_counts": sorted(status_counts.items()),
        "more_alerts": max(0, len(open_alerts) - MAX_ALERT_ROWS),
        "plan_groups": plan_groups,
        "charts": charts,
        "severity_colours": SEVERITY_COLOURS,
    }


# --------------------------------------------------------------------------------------------------
# rendering


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["band"] = risk_band
    env.filters["pct"] = lambda value: f"{float(value):.0%}"
    env.filters["plural"] = lambda count: "" if count == 1 else "s"
    return env


def render_html(context: Mapping[str, Any], *, fmt: ReportFormat = "html") -> str:
    """The report page for ``context`` (from :func:`build_context`); ``fmt`` picks screen or print CSS."""
    env = _environment()
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    return env.get_template("report.html.j2").render(**context, css=css, fmt=fmt)


def _refuse_fetch(url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """WeasyPrint's URL fetcher: only ``data:`` URLs (a report never reaches the network)."""
    if url.startswith("data:"):
        from weasyprint.urls import default_url_fetcher  # type: ignore[import-untyped]

        result: dict[str, Any] = default_url_fetcher(url)
        return result
    raise ReportError(f"the report refers to an external resource ({url[:60]}); it is not fetched")


def render_report(
    out_dir: Path,
    fmt: ReportFormat,
    dest: Path,
    *,
    findings: Iterable[Finding],
    config_findings: Iterable[ConfigFinding],
    risks: Sequence[DeviceRisk],
    site: SiteRisk,
    plan: Sequence[RemediationItem],
    devices: Sequence[Mapping[str, Any]],
    alerts: Iterable[Mapping[str, Any]],
    title: str = "OT/IoT risk assessment",
    generated_at: dt.datetime | None = None,
) -> Path:
    """Write the report of the analysis folder ``out_dir`` to ``dest`` as HTML or PDF; returns ``dest``."""
    if fmt not in ("html", "pdf"):
        raise ReportError(f"unknown report format {fmt!r} (html or pdf)")
    when = generated_at or dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    context = build_context(
        findings=findings,
        config_findings=config_findings,
        risks=risks,
        site=site,
        plan=plan,
        devices=devices,
        alerts=alerts,
        title=title,
        generated_at=when,
        source=str(out_dir),
    )
    html = render_html(context, fmt=fmt)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "html":
            dest.write_text(html, encoding="utf-8")
        else:
            _write_pdf(html, dest)
    except OSError as exc:
        raise ReportError(f"cannot write the report to {dest}: {exc.strerror or exc}") from exc
    return dest


def _write_pdf(html: str, dest: Path) -> None:
    import weasyprint  # type: ignore[import-untyped]  # slow to import: only for a PDF

    fetcher: Callable[..., dict[str, Any]] = _refuse_fetch
    document = weasyprint.HTML(string=html, base_url=str(TEMPLATES), url_fetcher=fetcher)
    document.write_pdf(dest, uncompressed_pdf=False)
