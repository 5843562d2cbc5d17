"""Offline vulnerability feeds: NVD CVE JSON 2.0, CISA KEV (JSON and CSV) and CSAF 2.0 advisories.

``load_feed(path)`` reads one file, gzip-compressed or not, recognises its format by its content
(never by its name) and parses it into a :class:`FeedDocument` of the shared records of
:mod:`fieldward.assess.model` (``Vulnerability``, ``KevEntry``, ``Advisory``). The parsers are pure:
no database, no network. A file that is not a feed, or cannot be decoded, raises :class:`FeedError`
naming the file and the problem; a single unusable record inside a good file is skipped and counted
(``FeedDocument.skipped`` and the first reasons in ``problems``).
"""

from __future__ import annotations

import csv
import gzip
import zlib
from pathlib import Path
from typing import Any

import orjson

from fieldward.assess.feeds._common import FeedDocument, FeedError, RecordError
from fieldward.assess.feeds.csaf import is_csaf, parse_csaf, parse_csaf_document
from fieldward.assess.feeds.kev import is_kev_csv, is_kev_json, parse_kev_csv, parse_kev_entry, parse_kev_json
from fieldward.assess.feeds.nvd import is_cve_record, is_nvd_collection, parse_cve, parse_nvd

__all__ = [
    "FeedDocument",
    "FeedError",
    "RecordError",
    "load_feed",
    "parse_csaf_document",
    "parse_cve",
    "parse_feed_bytes",
    "parse_kev_entry",
]

GZIP_MAGIC = b"\x1f\x8b"


def load_feed(path: str | Path) -> FeedDocument:
    """Read and parse one feed file (NVD 2.0, KEV JSON/CSV, CSAF 2.0; optionally gzip-compressed)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise FeedError(path, f"cannot read: {exc.strerror or exc}") from None
    return parse_feed_bytes(raw, str(path))


def parse_feed_bytes(raw: bytes, name: str = "<bytes>") -> FeedDocument:
    """Parse the content of a feed file; ``name`` is only used in errors and reports."""
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise FeedError(name, f"corrupt or truncated gzip data ({exc})") from None
    body = raw.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not body:
        raise FeedError(name, "empty file")
    if body[:1] in (b"{", b"["):
        return _parse_json(body, name)
    try:
        content = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FeedError(name, "not a feed: neither JSON nor UTF-8 CSV text") from None
    if is_kev_csv(content[:4096]):
        doc = FeedDocument(path=name, source="kev", format="kev-csv")
        try:
            parse_kev_csv(content, doc)
        except csv.Error as exc:  # pragma: no cover - the reader's errors are caught per row
            raise FeedError(name, f"unreadable CSV: {exc}") from None
        return doc
    raise FeedError(name, "not a feed: not JSON, and not a KEV CSV (no cveID,vendorProject,... header)")


def _parse_json(body: bytes, name: str) -> FeedDocument:
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FeedError(name, f"invalid or truncated JSON ({exc})") from None
    if is_csaf(data):
        doc = FeedDocument(path=name, source="csaf", format="csaf-2.0")
        parse_csaf(data, doc)
        return doc
    if is_nvd_collection(data) or is_cve_record(data):
        doc = FeedDocument(path=name, source="nvd", format="nvd")
        parse_nvd(data, doc)
        return doc
    if is_kev_json(data):
        doc = FeedDocument(path=name, source="kev", format="kev-json")
        parse_kev_json(data, doc)
        return doc
    if isinstance(data, dict) and "CVE_Items" in data:
        raise FeedError(name, "NVD JSON 1.1 feeds are retired; use the NVD 2.0 feeds (nvdcve-2.0-*.json)")
    if isinstance(data, dict):
        keys = ", ".join(sorted(str(key) for key in data)[:8])
        raise FeedError(name, f"JSON but not a known feed (top-level keys: {keys or 'none'})")
    raise FeedError(name, f"JSON but not a known feed (a top-level {type(data).__name__})")
