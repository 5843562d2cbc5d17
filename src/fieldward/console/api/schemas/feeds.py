"""Schemas of the vulnerability feeds: an import's counts and the knowledge store's status."""

from __future__ import annotations

from typing import Any

from fieldward.console.api.schemas import OutputModel

__all__ = ["FeedCounts", "FeedFileReport", "FeedImportPublic", "FeedStatusPublic"]


class FeedCounts(OutputModel):
    added: int
    updated: int
    unchanged: int
    skipped: int


class FeedFileReport(OutputModel):
    filename: str
    source: str
    format: str
    counts: FeedCounts
    problems: list[str]
    error: str | None
    identical: bool


class FeedImportPublic(OutputModel):
    files: list[FeedFileReport]
    by_source: dict[str, FeedCounts]
    total: FeedCounts
    seconds: float


class FeedStatusPublic(OutputModel):
    sources: dict[str, dict[str, Any]]
    last_import: str | None
    marks: int
