"""Reports (``/api/v1/reports``): the risk assessment report of the whole site or one sensor, made
from the console's database.

``GET /reports/risk?format=html|pdf|json``: the rows of the store are turned back into the
assessment's records (:func:`fieldward.console.api.routes.risk.load_site`: every device, the findings
with the analyst's marks, configurations, stored device risks, up to ``ALERT_ROWS`` alerts), the site
score and the plan are computed with the risk model, and :func:`fieldward.assess.report.render_report`
renders the same page ``fieldward report`` writes (HTML, or the PDF WeasyPrint makes of it). ``json``
returns the report's headline figures instead (what the dashboard shows).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import Response

from fieldward.assess.report import ReportError, build_context, render_report, risk_band
from fieldward.assess.risk import score_site
from fieldward.console.api.deps import SessionDep, access
from fieldward.console.api.routes.risk import load_site, plan_items, record_snapshot
from fieldward.console.api.schemas.reports import ReportSummary
from fieldward.store.models import Sensor

__all__ = ["router"]

router = APIRouter(prefix="/reports", tags=["reports"])

REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
MEDIA_TYPES = {"html": "text/html; charset=utf-8", "pdf": "application/pdf"}
REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report: HTML page, PDF document, or (format=json) its figures",
        "content": {
            "text/html": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.get(
    "/risk",
    operation_id="reports_risk",
    response_model=ReportSummary,
    summary="The risk assessment report of the site or one sensor (HTML, PDF or JSON figures)",
    **access("viewer", 404, responses=REPORT_RESPONSES),
)
def risk_report(
    session: SessionDep,
    format: Literal["html", "pdf", "json"] = "html",
    sensor_id: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="One sensor")] = None,
) -> Any:
    scope = "the whole site"
    if sensor_id is not None:
        sensor = session.get(Sensor, sensor_id)
        if sensor is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such sensor")
        scope = f"sensor {sensor.name}"
    data = load_site(session, sensor_id, all_devices=True)
    site = score_site(data.risks, data.devices)
    record_snapshot(session, sensor_id, site)
    plan = plan_items(data)
    now = dt.datetime.now(dt.UTC)
    title = "OT/IoT risk assessment"
    source = f"FieldWard console, {scope}"
    if format == "json":
        context = build_context(
            findings=data.findings,
            config_findings=data.configs,
            risks=data.risks,
            site=site,
            plan=plan,
            devices=data.devices,
            alerts=data.alerts,
            title=title,
            generated_at=now,
            source=source,
        )
        return ReportSummary(
            title=title,
            generated_at=context["generated_at"],
            source=source,
            site_score=site.score,
            site_band=risk_band(site.score),
            by_priority=dict(site.by_priority),
            figures={k: int(v) for k, v in context["figures"].items()},
            top_risks=[
                {
                    "device": row["device"].label,
                    "device_key": row["risk"].device_id,
                    "score": row["risk"].score,
                    "priority": row["risk"].priority.value,
                    "band": row["band"],
                }
                for row in context["top_risks"]
            ],
            plan=[item.to_json() for item in plan[:50]],
        )
    with tempfile.TemporaryDirectory(prefix="fieldward-report-") as folder:
        dest = Path(folder) / f"report.{format}"
        try:
            render_report(
                Path(source),
                format,
                dest,
                findings=data.findings,
                config_findings=data.configs,
                risks=data.risks,
                site=site,
                plan=plan,
                devices=data.devices,
                alerts=data.alerts,
                title=title,
                generated_at=now,
            )
        except ReportError as exc:
            raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, detail=str(exc)) from None
        content = dest.read_bytes()
    day = now.strftime("%Y-%m-%d")
    name = f"fieldward-risk-{day}" + (f"-sensor-{sensor_id}" if sensor_id is not None else "") + f".{format}"
    disposition = "attachment" if format == "pdf" else "inline"
    return Response(
        content,
        media_type=MEDIA_TYPES[format],
        headers={
            "Content-Disposition": f'{disposition}; filename="{name}"',
            # the page is self-contained: inline CSS and SVG, no script, nothing fetched
            "Content-Security-Policy": REPORT_CSP,
        },
    )
