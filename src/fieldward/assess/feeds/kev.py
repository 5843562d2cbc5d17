"""CISA's Known Exploited Vulnerabilities catalogue, as JSON or as CSV.

Both variants (``known_exploited_vulnerabilities.json`` / ``.csv``) carry the same fields per entry:
``cveID``, ``vendorProject``, ``product``, ``vulnerabilityName``, ``dateAdded``, ``shortDescription``,
``requiredAction``, ``dueDate``, ``knownRansomwareCampaignUse`` (``Known``/``Unknown``), ``notes`` and
``cwes`` (a list in JSON, comma-separated text in CSV). The JSON adds the catalogue's
``catalogVersion`` and ``dateReleased``; the CSV has no header of its own beyond the column names.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from fieldward.assess.feeds._common import (
    RECORD_ERRORS,
    FeedDocument,
    RecordError,
    date,
    items,
    text,
    timestamp,
)
from fieldward.assess.model import KevEntry

__all__ = ["CSV_COLUMNS", "is_kev_csv", "is_kev_json", "parse_kev_csv", "parse_kev_entry", "parse_kev_json"]

CSV_COLUMNS = ("cveID", "vendorProject", "product", "vulnerabilityName", "dateAdded")
"""Columns a KEV CSV header must name (the rest are optional)."""

_CVE_ID = re.compile(r"CVE-\d{4}-\d{4,}")


def is_kev_json(data: Any) -> bool:
    if not isinstance(data, dict) or not isinstance(data.get("vulnerabilities"), list):
        return False
    if "catalogVersion" in data:
        return True
    first = next(iter(data["vulnerabilities"]), None)
    return isinstance(first, dict) and "cveID" in first


def is_kev_csv(head: str) -> bool:
    """The first line of the text is a KEV CSV header."""
    first = head.split("\n", 1)[0]
    return all(column in first for column in CSV_COLUMNS)


def parse_kev_json(data: dict[str, Any], doc: FeedDocument) -> None:
    doc.format = "kev-json"
    doc.version = text(data.get("catalogVersion"))
    try:
        doc.feed_date = timestamp(data.get("dateReleased"))
    except RecordError:
        doc.feed_date = None
    for index, entry in enumerate(data["vulnerabilities"]):
        _add(doc, entry, index)


def parse_kev_csv(content: str, doc: FeedDocument) -> None:
    doc.format = "kev-csv"
    reader = csv.DictReader(io.StringIO(content, newline=""))
    index = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            doc.skip(f"line {reader.line_num}", f"CSV: {exc}")
            continue
        _add(doc, row, index)
        index += 1


def _add(doc: FeedDocument, entry: Any, index: int) -> None:
    try:
        doc.kev.append(parse_kev_entry(entry))
    except RECORD_ERRORS as exc:
        reason = str(exc) if isinstance(exc, RecordError) else f"{type(exc).__name__}: {exc}"
        doc.skip(f"entry {index}", reason)


def parse_kev_entry(entry: Any) -> KevEntry:
    """One catalogue entry (a JSON object or a CSV row); raises :class:`RecordError` when unusable."""
    if not isinstance(entry, dict):
        raise RecordError("not an object")
    cve_id = text(entry.get("cveID")).strip()
    if not _CVE_ID.fullmatch(cve_id):
        raise RecordError(f"bad cveID {cve_id[:40]!r}")
    added = date(entry.get("dateAdded"))
    if added is None:
        raise RecordError(f"{cve_id}: no dateAdded")
    cwes = entry.get("cwes")
    if isinstance(cwes, str):
        cwe_list = [part.strip() for part in cwes.split(",")]
    else:
        cwe_list = [part.strip() for part in items(cwes) if isinstance(part, str)]
    return KevEntry(
        cve_id=cve_id,
        vendor_project=text(entry.get("vendorProject")).strip(),
        product=text(entry.get("product")).strip(),
        name=text(entry.get("vulnerabilityName")).strip(),
        date_added=added,
        short_description=text(entry.get("shortDescription")),
        required_action=text(entry.get("requiredAction")),
        due_date=date(entry.get("dueDate")),
        known_ransomware=text(entry.get("knownRansomwareCampaignUse")).strip().lower() == "known",
        notes=text(entry.get("notes")),
        cwes=tuple(cwe for cwe in cwe_list if cwe),
    )
