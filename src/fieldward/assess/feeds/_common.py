"""What the feed parsers share: the error type, the parsed document, and tolerant field readers.

A feed is data from outside: every reader here accepts whatever JSON gives it and answers with a
typed value or ``None``; a record that cannot be read raises :class:`RecordError`, which the parsers
turn into a skipped, counted record (never a failed file).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldward.assess.model import Advisory, CvssScore, KevEntry, Severity, Vulnerability
from fieldward.errors import FieldWardError

MAX_PROBLEM_SAMPLES = 5
"""How many skipped-record reasons a document keeps (the count is always exact)."""


class FeedError(FieldWardError):
    """A feed file cannot be read at all: not a known format, truncated, not JSON/CSV, unreadable."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class RecordError(ValueError):
    """One record of a feed is unusable; the parser skips and counts it."""


@dataclass
class FeedDocument:
    """One parsed feed file.

    source: ``nvd``, ``kev`` or ``csaf``
    format: the precise shape recognised (``nvd-api-2.0``, ``nvd-feed-2.0``, ``nvd-cve-record``,
    ``kev-json``, ``kev-csv``, ``csaf-2.0``)
    feed_date: the date the feed itself states (NVD ``timestamp``, KEV ``dateReleased``, CSAF
    ``current_release_date``), UTC, or None
    skipped: records that could not be read (their first reasons are in ``problems``)
    """

    path: str
    source: str
    format: str
    vulnerabilities: list[Vulnerability] = field(default_factory=list)
    kev: list[KevEntry] = field(default_factory=list)
    advisories: list[Advisory] = field(default_factory=list)
    feed_date: dt.datetime | None = None
    version: str = ""
    """The feed's own version label (KEV ``catalogVersion``, NVD ``version``, CSAF revision)."""
    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return len(self.vulnerabilities) + len(self.kev) + len(self.advisories)

    def skip(self, where: str, reason: str) -> None:
        """Count one unreadable record, keeping the first few reasons."""
        self.skipped += 1
        if len(self.problems) < MAX_PROBLEM_SAMPLES:
            self.problems.append(f"{where}: {reason}"[:300])


RECORD_ERRORS: tuple[type[BaseException], ...] = (
    RecordError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    OverflowError,
    RecursionError,
)
"""What reading one record of hostile JSON can raise; each is caught per record and counted."""


def text(value: Any) -> str:
    """A string field, or "" when absent or not a string."""
    return value if isinstance(value, str) else ""


def opt_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def items(value: Any) -> list[Any]:
    """A JSON array field, or [] when absent or not an array."""
    return value if isinstance(value, list) else []


def obj(value: Any) -> dict[str, Any]:
    """A JSON object field, or {} when absent or not an object."""
    return value if isinstance(value, dict) else {}


def timestamp(value: Any) -> dt.datetime | None:
    """An ISO 8601 date-time as a timezone-aware UTC datetime; NVD's naive stamps are UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise RecordError(f"bad date-time {value[:40]!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def date(value: Any) -> dt.date | None:
    """A calendar date (``YYYY-MM-DD``; a full date-time is cut to its date)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return dt.date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise RecordError(f"bad date {value[:40]!r}") from None


def score(value: Any) -> float:
    """A CVSS base score: a number in [0, 10]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(f"bad base score {value!r}"[:80])
    number = float(value)
    if not 0.0 <= number <= 10.0:
        raise RecordError(f"base score {number} out of range")
    return number


_SEVERITIES = {member.value: member for member in Severity}


def cvss(version: Any, vector: Any, base: Any, severity: Any, source: str, primary: bool) -> CvssScore:
    """A :class:`CvssScore` from a feed's fields; the rating falls back to the score's when absent."""
    number = score(base)
    rating = _SEVERITIES.get(severity.lower()) if isinstance(severity, str) else None
    return CvssScore(
        version=text(version) or "?",
        vector=text(vector),
        base_score=number,
        severity=rating or Severity.from_score(number),
        source=source,
        primary=primary,
    )
