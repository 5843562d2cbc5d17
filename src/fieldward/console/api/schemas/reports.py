"""Schemas of the reports (``format=json``: the figures the HTML/PDF report shows)."""

from __future__ import annotations

from typing import Any

from fieldward.console.api.schemas import OutputModel

__all__ = ["ReportSummary"]


class ReportSummary(OutputModel):
    title: str
    generated_at: str
    source: str
    site_score: int
    site_band: str
    by_priority: dict[str, int]
    figures: dict[str, int]
    top_risks: list[dict[str, Any]]
    plan: list[dict[str, Any]]
