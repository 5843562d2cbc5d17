"""The vulnerability knowledge store: NVD CVEs, CISA KEV entries and CSAF advisories in SQL.

``VulnerabilityDatabase(url)`` keeps what the offline feeds say (parsed by
:mod:`fieldward.assess.feeds`) in SQLite (the default) or PostgreSQL (``postgresql+psycopg://``), and
answers the matcher's lookups in milliseconds through indexed columns:

- ``vuln_cves``: one row per CVE, its full record as JSON (configurations included) plus the columns
  the store compares and sorts by (``last_modified``, best score);
- ``vuln_cpe_index``: one row per (CPE vendor, CPE product, CVE) named by any of the CVE's cpeMatch
  criteria, primary key (vendor, product, cve_id), so ``vulnerabilities_for`` is one index range;
- ``vuln_kev``: the KEV catalogue, one row per CVE id;
- ``vuln_advisories`` / ``vuln_advisory_products``: CSAF advisories and their flattened products with a
  normalised vendor key and lowercase search text;
- ``vuln_marks``: the analyst's "not applicable" marks per (device, vulnerability); imports never touch
  them, so they survive every re-import;
- ``vuln_imports``: one row per imported file (its feed date, counts and time).

Imports are incremental and idempotent: a CVE whose ``lastModified`` equals the stored one is left
alone, a newer one replaces it, an older one is ignored (the newest knowledge wins whatever the file
order); a KEV entry or an advisory is replaced when its content (KEV) or its ``current_release_date``
(CSAF) changes. Rows are written in batches (executemany), one transaction per chunk of records.
Every statement is built by SQLAlchemy with bound parameters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    Boolean,
    Connection,
    Date,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.pool import StaticPool

from fieldward.assess.feeds import FeedDocument, FeedError, parse_feed_bytes
from fieldward.assess.model import (
    Advisory,
    AdvisoryProduct,
    AdvisoryVulnerability,
    Configuration,
    ConfigurationNode,
    CpeMatch,
    CvssScore,
    KevEntry,
    Remediation,
    Severity,
    VersionRange,
    Vulnerability,
)
from fieldward.errors import FieldWardError
from fieldward.store.base import Base

__all__ = [
    "SOURCES",
    "AdvisoryProductRow",
    "AdvisoryRow",
    "CpeIndexRow",
    "CveRow",
    "FileReport",
    "ImportCounts",
    "ImportReport",
    "ImportRow",
    "KevRow",
    "Mark",
    "MarkRow",
    "VulnerabilityDatabase",
    "VulnerabilityStoreError",
]

SOURCES = ("nvd", "kev", "csaf")
CHUNK = 2000
"""Records per transaction during an import."""
LOOKUP_CHUNK = 500
"""Ids per ``IN (...)`` list in lookups."""

Record = Vulnerability | KevEntry | Advisory
_T = TypeVar("_T")


class VulnerabilityStoreError(FieldWardError):
    """The vulnerability database cannot be opened or used (bad URL, unreachable server)."""


# --------------------------------------------------------------------------------------------- tables


class CveRow(Base):
    """A CVE as the NVD describes it; ``record`` holds the whole :class:`Vulnerability` as JSON."""

    __tablename__ = "vuln_cves"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, default="")
    published: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_modified: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    status: Mapped[str] = mapped_column(String(32), default="")
    base_score: Mapped[float | None] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(String(16), default="")
    record: Mapped[str] = mapped_column(Text)
    feed_file: Mapped[str] = mapped_column(Text, default="")
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime)


class CpeIndexRow(Base):
    """One (CPE vendor, CPE product) a CVE's configurations name; ``vulnerable`` when any match of that
    product is marked vulnerable (not only a "running on" platform)."""

    __tablename__ = "vuln_cpe_index"

    vendor: Mapped[str] = mapped_column(String(255), primary_key=True)
    product: Mapped[str] = mapped_column(String(255), primary_key=True)
    cve_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    vulnerable: Mapped[bool] = mapped_column(Boolean, default=True)

    __table_args__ = (Index(None, "cve_id"),)


class KevRow(Base):
    """One entry of CISA's Known Exploited Vulnerabilities catalogue."""

    __tablename__ = "vuln_kev"

    cve_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    vendor_project: Mapped[str] = mapped_column(Text, default="")
    product: Mapped[str] = mapped_column(Text, default="")
    name: Mapped[str] = mapped_column(Text, default="")
    date_added: Mapped[dt.date] = mapped_column(Date, index=True)
    due_date: Mapped[dt.date | None] = mapped_column(Date)
    known_ransomware: Mapped[bool] = mapped_column(Boolean, default=False)
    record: Mapped[str] = mapped_column(Text)
    feed_file: Mapped[str] = mapped_column(Text, default="")
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime)


class AdvisoryRow(Base):
    """A CSAF advisory; ``record`` holds the whole :class:`Advisory` as JSON."""

    __tablename__ = "vuln_advisories"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    title: Mapped[str] = mapped_column(Text, default="")
    publisher: Mapped[str] = mapped_column(Text, default="")
    initial_release: Mapped[dt.datetime | None] = mapped_column(DateTime)
    current_release: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    revision: Mapped[str] = mapped_column(String(64), default="")
    url: Mapped[str | None] = mapped_column(Text)
    record: Mapped[str] = mapped_column(Text)
    feed_file: Mapped[str] = mapped_column(Text, default="")
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime)


class AdvisoryProductRow(Base):
    """A product of an advisory, for lookups: normalised vendor keys and lowercase search text."""

    __tablename__ = "vuln_advisory_products"

    advisory_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    vendor_key: Mapped[str] = mapped_column(String(255), index=True)
    """The vendor branch name, lowercase, letters and digits only (``Rockwell Automation`` ->
    ``rockwellautomation``, the CPE spelling)."""
    cpe_vendor_key: Mapped[str] = mapped_column(String(255), index=True)
    search_text: Mapped[str] = mapped_column(Text)
    """Product name, full name and model numbers, lowercase."""


class MarkRow(Base):
    """An analyst's decision that a vulnerability does not apply to a device."""

    __tablename__ = "vuln_marks"

    device_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    vulnerability_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    marked_by: Mapped[str] = mapped_column(String(255))
    marked_at: Mapped[dt.datetime] = mapped_column(DateTime)


class ImportRow(Base):
    """One imported feed file: what it was, what the feed says of itself, what changed."""

    __tablename__ = "vuln_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), index=True)
    format: Mapped[str] = mapped_column(String(32))
    feed_date: Mapped[dt.datetime | None] = mapped_column(DateTime)
    version: Mapped[str] = mapped_column(String(64), default="")
    added: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    sha256: Mapped[str] = mapped_column(String(64), default="", index=True)
    """Digest of the file's bytes: an identical file imported before is not parsed again."""


TABLES: list[Table] = [
    Base.metadata.tables[model.__tablename__]
    for model in (CveRow, CpeIndexRow, KevRow, AdvisoryRow, AdvisoryProductRow, MarkRow, ImportRow)
]
"""The tables of this module (the shared ``Base`` also holds the console's)."""


# --------------------------------------------------------------------------------------------- reports


@dataclass
class ImportCounts:
    """What an import did to the records of one source or one file."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0

    def add(self, other: ImportCounts) -> None:
        self.added += other.added
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.skipped += other.skipped

    @property
    def total(self) -> int:
        return self.added + self.updated + self.unchanged + self.skipped


@dataclass
class FileReport:
    """One file of an import; ``error`` is set (and nothing imported) when it is not a readable feed."""

    path: str
    source: str = ""
    format: str = ""
    counts: ImportCounts = field(default_factory=ImportCounts)
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    identical: bool = False
    """The very same bytes were imported before: not parsed again, its records counted unchanged."""


@dataclass
class ImportReport:
    """Counts per source (``nvd``, ``kev``, ``csaf``) and per file, and the wall time taken."""

    files: list[FileReport] = field(default_factory=list)
    by_source: dict[str, ImportCounts] = field(default_factory=lambda: {s: ImportCounts() for s in SOURCES})
    seconds: float = 0.0

    @property
    def errors(self) -> list[FileReport]:
        return [report for report in self.files if report.error is not None]

    @property
    def total(self) -> ImportCounts:
        counts = ImportCounts()
        for source in self.by_source.values():
            counts.add(source)
        return counts


@dataclass(frozen=True, slots=True)
class Mark:
    """An analyst's "not applicable" mark: why, by whom, when (UTC)."""

    reason: str
    by: str
    at: dt.datetime


# --------------------------------------------------------------------------------------------- store


class VulnerabilityDatabase:
    """The vulnerability knowledge of the feeds, in SQLite or PostgreSQL, with the matcher's lookups."""

    def __init__(self, url: str, *, chunk_size: int = CHUNK) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise VulnerabilityStoreError(f"not a database URL: {exc}") from None
        self.url = parsed
        self.chunk_size = max(1, chunk_size)
        kwargs: dict[str, Any] = {}
        sqlite = parsed.get_backend_name() == "sqlite"
        if sqlite and (parsed.database or "") in ("", ":memory:"):
            kwargs["poolclass"] = StaticPool
            kwargs["connect_args"] = {"check_same_thread": False}
        elif sqlite and parsed.database:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = create_engine(parsed, **kwargs)
            if sqlite:
                event.listen(self.engine, "connect", _sqlite_pragmas)
            self._migrate()
        except (SQLAlchemyError, ImportError) as exc:
            raise VulnerabilityStoreError(
                f"cannot open {parsed.render_as_string(hide_password=True)}: {_first_line(exc)}"
            ) from None

    def _migrate(self) -> None:
        """Bring the schema to the newest revision of the store's Alembic history (the feed tables
        live in the same database as the console's, so one migration history owns them all)."""
        from alembic import command

        from fieldward.store.database import alembic_config

        with self.engine.begin() as connection:
            command.upgrade(alembic_config(connection), "head")

    def __repr__(self) -> str:
        return f"VulnerabilityDatabase({self.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------------------------- imports

    def import_documents(
        self, paths: Iterable[str | Path], *, strict: bool = False, force: bool = False
    ) -> ImportReport:
        """Import feed files (any mix of NVD, KEV and CSAF; gzip or not), one file at a time.

        A file whose bytes were already imported completely is not parsed again (its records are
        reported unchanged) unless ``force``. A file that is not a readable feed is reported in
        ``ImportReport.errors`` and the others are imported; with ``strict`` its :class:`FeedError` is
        raised instead (the files before it stay imported).
        """
        report = ImportReport()
        started = time.perf_counter()
        for path in paths:
            try:
                try:
                    raw = Path(path).read_bytes()
                except OSError as exc:
                    raise FeedError(path, f"cannot read: {exc.strerror or exc}") from None
                digest = hashlib.sha256(raw).hexdigest()
                if not force and self._identical(path, digest, report):
                    continue
                document = parse_feed_bytes(raw, str(path))
            except FeedError as exc:
                if strict:
                    raise
                report.files.append(FileReport(path=str(path), error=exc.problem))
                continue
            self._import_document(document, report, digest)
        report.seconds = time.perf_counter() - started
        return report

    def _identical(self, path: str | Path, digest: str, report: ImportReport) -> bool:
        statement = (
            select(ImportRow)
            .where(ImportRow.sha256 == digest)
            .order_by(ImportRow.imported_at.desc(), ImportRow.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(statement).first()
        if row is None:
            return False
        counts = ImportCounts(unchanged=row.added + row.updated + row.unchanged, skipped=row.skipped)
        report.files.append(
            FileReport(path=str(path), source=row.source, format=row.format, counts=counts, identical=True)
        )
        report.by_source[row.source].add(counts)
        return True

    def import_document(self, document: FeedDocument, report: ImportReport | None = None) -> ImportReport:
        """Import an already parsed :class:`FeedDocument`."""
        report = report or ImportReport()
        started = time.perf_counter()
        self._import_document(document, report)
        report.seconds += time.perf_counter() - started
        return report

    def import_records(self, records: Iterable[Record], name: str = "<records>") -> ImportReport:
        """Import records one by one from any iterable (the per-record variant of ``import_documents``).

        ``name`` stands for the file in the report and in ``vuln_imports``.
        """
        report = ImportReport()
        started = time.perf_counter()
        files: dict[str, FileReport] = {}
        for source, chunk in _chunks_by_source(records, self.chunk_size):
            file_report = files.get(source)
            if file_report is None:
                file_report = files[source] = FileReport(path=name, source=source, format="records")
                report.files.append(file_report)
            counts = self._import_chunk(source, chunk, name)
            file_report.counts.add(counts)
            report.by_source[source].add(counts)
        for file_report in files.values():
            self._log_import(file_report, None, "")
        report.seconds = time.perf_counter() - started
        return report

    def _import_document(self, document: FeedDocument, report: ImportReport, digest: str = "") -> None:
        file_report = FileReport(
            path=document.path,
            source=document.source,
            format=document.format,
            problems=list(document.problems),
        )
        file_report.counts.skipped = document.skipped
        records: Sequence[Record] = (
            document.vulnerabilities
            if document.source == "nvd"
            else document.kev
            if document.source == "kev"
            else document.advisories
        )
        for start in range(0, len(records), self.chunk_size):
            chunk = records[start : start + self.chunk_size]
            file_report.counts.add(self._import_chunk(document.source, chunk, document.path))
        report.files.append(file_report)
        report.by_source[document.source].add(file_report.counts)
        self._log_import(file_report, document.feed_date, document.version, digest)

    def _import_chunk(self, source: str, chunk: Sequence[Any], file: str) -> ImportCounts:
        now = _utcnow()
        with self.engine.begin() as conn:
            if source == "nvd":
                return _import_cves(conn, chunk, file, now)
            if source == "kev":
                return _import_kev(conn, chunk, file, now)
            return _import_advisories(conn, chunk, file, now)

    def _log_import(
        self, report: FileReport, feed_date: dt.datetime | None, version: str, digest: str = ""
    ) -> None:
        counts = report.counts
        with self.engine.begin() as conn:
            conn.execute(
                insert(ImportRow),
                [
                    {
                        "path": report.path,
                        "source": report.source,
                        "format": report.format,
                        "feed_date": _db_time(feed_date),
                        "version": version[:64],
                        "added": counts.added,
                        "updated": counts.updated,
                        "unchanged": counts.unchanged,
                        "skipped": counts.skipped,
                        "imported_at": _utcnow(),
                        "sha256": digest,
                    }
                ],
            )

    # ------------------------------------------------------------------------------------- lookups

    def vulnerabilities_for(self, vendor: str, product: str) -> list[Vulnerability]:
        """Every CVE with a cpeMatch naming this CPE vendor and product (NVD's lowercase names, with
        CPE escapes as in the criteria, e.g. ``siemens`` / ``simatic_s7-1500_cpu_firmware``), with its
        full configurations; ordered by CVE id."""
        ids = select(CpeIndexRow.cve_id).where(
            CpeIndexRow.vendor == vendor.lower(), CpeIndexRow.product == product.lower()
        )
        statement = select(CveRow.record).where(CveRow.id.in_(ids)).order_by(CveRow.id)
        with self.engine.connect() as conn:
            return [vulnerability_from_json(record) for (record,) in conn.execute(statement)]

    def products_of(self, vendor: str) -> list[str]:
        """The distinct CPE product names of a CPE vendor in the feeds, sorted."""
        statement = (
            select(CpeIndexRow.product)
            .where(CpeIndexRow.vendor == vendor.lower())
            .distinct()
            .order_by(CpeIndexRow.product)
        )
        with self.engine.connect() as conn:
            return list(conn.scalars(statement))

    def kev_entries(self, cve_ids: Iterable[str]) -> dict[str, KevEntry]:
        """The KEV entries of those CVE ids that are in the catalogue."""
        wanted = sorted({cve_id.strip().upper() for cve_id in cve_ids if cve_id})
        found: dict[str, KevEntry] = {}
        with self.engine.connect() as conn:
            for part in _slices(wanted, LOOKUP_CHUNK):
                statement = select(KevRow.record).where(KevRow.cve_id.in_(part))
                for (record,) in conn.execute(statement):
                    entry = kev_from_json(record)
                    found[entry.cve_id] = entry
        return found

    def advisories_for(self, vendor: str, terms: Sequence[str]) -> list[Advisory]:
        """Advisories with a product whose vendor matches ``vendor`` case-insensitively (the CSAF vendor
        branch or the vendor of its CPE helper; spaces and punctuation ignored, so ``Rockwell
        Automation`` matches ``rockwellautomation``) and whose name contains any of ``terms``
        (case-insensitive); newest release first."""
        key = vendor_key(vendor)
        needles = [term.strip().lower() for term in terms if term and term.strip()]
        if not key or not needles:
            return []
        ids = (
            select(AdvisoryProductRow.advisory_id)
            .where(or_(AdvisoryProductRow.vendor_key == key, AdvisoryProductRow.cpe_vendor_key == key))
            .where(
                or_(*(AdvisoryProductRow.search_text.contains(needle, autoescape=True) for needle in needles))
            )
        )
        statement = (
            select(AdvisoryRow.record)
            .where(AdvisoryRow.id.in_(ids))
            .order_by(AdvisoryRow.current_release.desc(), AdvisoryRow.id)
        )
        with self.engine.connect() as conn:
            return [advisory_from_json(record) for (record,) in conn.execute(statement)]

    def vulnerability(self, cve_id: str) -> Vulnerability | None:
        """One CVE by id, or None."""
        with self.engine.connect() as conn:
            record = conn.scalar(select(CveRow.record).where(CveRow.id == cve_id))
        return vulnerability_from_json(record) if record is not None else None

    # --------------------------------------------------------------------------------------- marks

    def mark_not_applicable(self, device_id: str, vulnerability_id: str, reason: str, by: str) -> Mark:
        """Record (or replace) the analyst's decision that a vulnerability does not apply to a device."""
        mark = Mark(reason=reason, by=by, at=_utcnow().replace(tzinfo=dt.UTC))
        with self.engine.begin() as conn:
            conn.execute(
                delete(MarkRow).where(
                    MarkRow.device_id == device_id, MarkRow.vulnerability_id == vulnerability_id
                )
            )
            conn.execute(
                insert(MarkRow),
                [
                    {
                        "device_id": device_id,
                        "vulnerability_id": vulnerability_id,
                        "reason": reason,
                        "marked_by": by,
                        "marked_at": _db_time(mark.at),
                    }
                ],
            )
        return mark

    def clear_mark(self, device_id: str, vulnerability_id: str) -> bool:
        """Remove a mark; True when there was one."""
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(MarkRow).where(
                    MarkRow.device_id == device_id, MarkRow.vulnerability_id == vulnerability_id
                )
            )
        return bool(result.rowcount)

    def marks(self) -> dict[tuple[str, str], Mark]:
        """Every mark by (device id, vulnerability id)."""
        statement = select(
            MarkRow.device_id, MarkRow.vulnerability_id, MarkRow.reason, MarkRow.marked_by, MarkRow.marked_at
        )
        with self.engine.connect() as conn:
            return {
                (device, vulnerability): Mark(reason=reason, by=by, at=_aware(at) or at)
                for device, vulnerability, reason, by, at in conn.execute(statement)
            }

    # -------------------------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """Records per source, the newest dates the feeds carry, the last import and the marks count.

        ``{"sources": {"nvd": {"records", "newest", "feed_date", "feed_version"}, ...},
        "last_import": ISO time or None, "marks": n}``; ``newest`` is the newest record date
        (NVD lastModified, KEV dateAdded, CSAF current_release_date), ``feed_date`` the newest date a
        feed file stated of itself.
        """
        newest_columns: dict[str, Any] = {
            "nvd": (CveRow, func.max(CveRow.last_modified)),
            "kev": (KevRow, func.max(KevRow.date_added)),
            "csaf": (AdvisoryRow, func.max(AdvisoryRow.current_release)),
        }
        sources: dict[str, Any] = {}
        with self.engine.connect() as conn:
            for source, (model, newest) in newest_columns.items():
                count, latest = conn.execute(select(func.count(), newest).select_from(model)).one()
                feed = conn.execute(
                    select(ImportRow.feed_date, ImportRow.version)
                    .where(ImportRow.source == source, ImportRow.feed_date.is_not(None))
                    .order_by(ImportRow.feed_date.desc())
                    .limit(1)
                ).first()
                sources[source] = {
                    "records": int(count),
                    "newest": _iso(latest),
                    "feed_date": _iso(feed[0]) if feed else None,
                    "feed_version": feed[1] if feed else None,
                }
            last_import = conn.scalar(select(func.max(ImportRow.imported_at)))
            marks = conn.scalar(select(func.count()).select_from(MarkRow)) or 0
        return {"sources": sources, "last_import": _iso(last_import), "marks": int(marks)}


# ------------------------------------------------------------------------------------ import helpers


def _import_cves(
    conn: Connection, chunk: Sequence[Vulnerability], file: str, now: dt.datetime
) -> ImportCounts:
    counts = ImportCounts()
    latest: dict[str, Vulnerability] = {}
    for vulnerability in chunk:
        other = latest.get(vulnerability.id)
        if other is None or _newer(vulnerability.last_modified, other.last_modified):
            if other is not None:
                counts.unchanged += 1
            latest[vulnerability.id] = vulnerability
        else:
            counts.unchanged += 1
    rows = conn.execute(select(CveRow.id, CveRow.last_modified).where(CveRow.id.in_(list(latest))))
    stored: dict[str, dt.datetime | None] = {row[0]: row[1] for row in rows}
    write: list[Vulnerability] = []
    replaced: list[str] = []
    for cve_id, vulnerability in latest.items():
        if cve_id not in stored:
            counts.added += 1
            write.append(vulnerability)
        elif _newer(vulnerability.last_modified, _aware(stored[cve_id])):
            counts.updated += 1
            replaced.append(cve_id)
            write.append(vulnerability)
        else:
            counts.unchanged += 1
    if replaced:
        conn.execute(delete(CpeIndexRow).where(CpeIndexRow.cve_id.in_(replaced)))
        conn.execute(delete(CveRow).where(CveRow.id.in_(replaced)))
    if write:
        conn.execute(insert(CveRow), [_cve_row(vulnerability, file, now) for vulnerability in write])
        index_rows = [row for vulnerability in write for row in _cpe_rows(vulnerability)]
        if index_rows:
            conn.execute(insert(CpeIndexRow), index_rows)
    return counts


def _cve_row(vulnerability: Vulnerability, file: str, now: dt.datetime) -> dict[str, Any]:
    best = vulnerability.best_cvss()
    return {
        "id": vulnerability.id,
        "source": vulnerability.source,
        "description": vulnerability.description,
        "published": _db_time(vulnerability.published),
        "last_modified": _db_time(vulnerability.last_modified),
        "status": vulnerability.status[:32],
        "base_score": best.base_score if best else None,
        "severity": best.severity.value if best else "",
        "record": orjson.dumps(vulnerability).decode(),
        "feed_file": file,
        "imported_at": now,
    }


def _cpe_rows(vulnerability: Vulnerability) -> list[dict[str, Any]]:
    found: dict[tuple[str, str], bool] = {}
    for configuration in vulnerability.configurations:
        for node in configuration.nodes:
            for match in node.matches:
                vendor, product = cpe_vendor_product(match.criteria)
                key = (vendor[:255], product[:255])
                found[key] = found.get(key, False) or match.vulnerable
    return [
        {"vendor": vendor, "product": product, "cve_id": vulnerability.id, "vulnerable": vulnerable}
        for (vendor, product), vulnerable in found.items()
    ]


def cpe_vendor_product(criteria: str) -> tuple[str, str]:
    """Vendor and product of a CPE 2.3 formatted string, lowercase, escapes kept as written."""
    if "\\" not in criteria:
        parts = criteria.split(":", 6)
        if len(parts) >= 5:
            return parts[3].lower(), parts[4].lower()
    match = CpeMatch(criteria=criteria)
    return match.vendor.lower(), match.product.lower()


def _import_kev(conn: Connection, chunk: Sequence[KevEntry], file: str, now: dt.datetime) -> ImportCounts:
    counts = ImportCounts()
    latest: dict[str, tuple[KevEntry, str]] = {}
    for entry in chunk:
        if entry.cve_id in latest:
            counts.unchanged += 1
        latest[entry.cve_id] = (entry, orjson.dumps(entry).decode())
    rows = conn.execute(select(KevRow.cve_id, KevRow.record).where(KevRow.cve_id.in_(list(latest))))
    stored: dict[str, str] = {row[0]: row[1] for row in rows}
    write: list[dict[str, Any]] = []
    replaced: list[str] = []
    for cve_id, (entry, record) in latest.items():
        if cve_id not in stored:
            counts.added += 1
        elif stored[cve_id] != record:
            counts.updated += 1
            replaced.append(cve_id)
        else:
            counts.unchanged += 1
            continue
        write.append(
            {
                "cve_id": cve_id,
                "vendor_project": entry.vendor_project,
                "product": entry.product,
                "name": entry.name,
                "date_added": entry.date_added,
                "due_date": entry.due_date,
                "known_ransomware": entry.known_ransomware,
                "record": record,
                "feed_file": file,
                "imported_at": now,
            }
        )
    if replaced:
        conn.execute(delete(KevRow).where(KevRow.cve_id.in_(replaced)))
    if write:
        conn.execute(insert(KevRow), write)
    return counts


def _import_advisories(
    conn: Connection, chunk: Sequence[Advisory], file: str, now: dt.datetime
) -> ImportCounts:
    counts = ImportCounts()
    latest: dict[str, tuple[Advisory, str]] = {}
    for advisory in chunk:
        other = latest.get(advisory.id)
        if other is not None:
            counts.unchanged += 1
            if not _newer(advisory.current_release, other[0].current_release):
                continue
        latest[advisory.id] = (advisory, orjson.dumps(advisory).decode())
    stored = {
        row.id: (row.current_release, row.record)
        for row in conn.execute(
            select(AdvisoryRow.id, AdvisoryRow.current_release, AdvisoryRow.record).where(
                AdvisoryRow.id.in_(list(latest))
            )
        )
    }
    write: list[tuple[Advisory, str]] = []
    replaced: list[str] = []
    for advisory_id, (advisory, record) in latest.items():
        if advisory_id not in stored:
            counts.added += 1
        else:
            stored_release, stored_record = stored[advisory_id]
            stored_release = _aware(stored_release)
            newer = _newer(advisory.current_release, stored_release)
            same_date_changed = advisory.current_release == stored_release and record != stored_record
            if not (newer or same_date_changed):
                counts.unchanged += 1
                continue
            counts.updated += 1
            replaced.append(advisory_id)
        write.append((advisory, record))
    if replaced:
        conn.execute(delete(AdvisoryProductRow).where(AdvisoryProductRow.advisory_id.in_(replaced)))
        conn.execute(delete(AdvisoryRow).where(AdvisoryRow.id.in_(replaced)))
    if write:
        conn.execute(
            insert(AdvisoryRow),
            [
                {
                    "id": advisory.id,
                    "title": advisory.title,
                    "publisher": advisory.publisher,
                    "initial_release": _db_time(advisory.initial_release),
                    "current_release": _db_time(advisory.current_release),
                    "revision": advisory.revision[:64],
                    "url": advisory.url,
                    "record": record,
                    "feed_file": file,
                    "imported_at": now,
                }
                for advisory, record in write
            ],
        )
        product_rows = [row for advisory, _ in write for row in _product_rows(advisory)]
        if product_rows:
            conn.execute(insert(AdvisoryProductRow), product_rows)
    return counts


def _product_rows(advisory: Advisory) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for product in advisory.products:
        cpe_vendor = ""
        if product.cpe and product.cpe.startswith("cpe:2.3:"):
            cpe_vendor = cpe_vendor_product(product.cpe)[0]
        elif product.cpe and product.cpe.startswith("cpe:/"):
            parts = product.cpe.split(":")
            cpe_vendor = parts[2] if len(parts) > 2 else ""
        text = " | ".join([product.name, *product.model_numbers]).lower()
        rows.setdefault(
            product.product_id[:255],
            {
                "advisory_id": advisory.id,
                "product_id": product.product_id[:255],
                "vendor_key": vendor_key(product.vendor)[:255],
                "cpe_vendor_key": vendor_key(cpe_vendor)[:255],
                "search_text": text,
            },
        )
    return list(rows.values())


_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def vendor_key(vendor: str) -> str:
    """A vendor name compared the CPE way: lowercase letters and digits only."""
    return _NOT_ALNUM.sub("", vendor.lower())


def _chunks_by_source(records: Iterable[Record], size: int) -> Iterator[tuple[str, list[Any]]]:
    """Consecutive chunks of records of the same source, at most ``size`` long."""
    source = ""
    chunk: list[Any] = []
    for record in records:
        kind = (
            "nvd" if isinstance(record, Vulnerability) else "kev" if isinstance(record, KevEntry) else "csaf"
        )
        if not isinstance(record, Vulnerability | KevEntry | Advisory):
            raise TypeError(f"not a feed record: {type(record).__name__}")
        if chunk and (kind != source or len(chunk) >= size):
            yield source, chunk
            chunk = []
        source = kind
        chunk.append(record)
    if chunk:
        yield source, chunk


def _slices(values: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _newer(candidate: dt.datetime | None, current: dt.datetime | None) -> bool:
    """Is ``candidate`` strictly newer than ``current``? A date beats no date; no date beats nothing."""
    if candidate is None:
        return False
    if current is None:
        return True
    return candidate > current


def _utcnow() -> dt.datetime:
    """Now, as the naive UTC datetime the tables store."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _db_time(value: dt.datetime | None) -> dt.datetime | None:
    """Naive UTC for storage (SQLite keeps no zone; PostgreSQL ``timestamp`` the same everywhere)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return (_aware(value) or value).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL and relaxed syncing: bulk imports at disk speed, readers never blocked by the writer."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
    finally:
        cursor.close()


# ------------------------------------------------------------------------- records from stored JSON


def _time(value: Any) -> dt.datetime | None:
    return _aware(dt.datetime.fromisoformat(value)) if isinstance(value, str) else None


def _day(value: Any) -> dt.date | None:
    return dt.date.fromisoformat(value) if isinstance(value, str) else None


def _score(data: dict[str, Any]) -> CvssScore:
    return CvssScore(
        version=data["version"],
        vector=data["vector"],
        base_score=float(data["base_score"]),
        severity=Severity(data["severity"]),
        source=data.get("source", ""),
        primary=bool(data.get("primary", True)),
    )


def vulnerability_from_json(record: str | bytes) -> Vulnerability:
    """A stored CVE record (``orjson.dumps`` of a :class:`Vulnerability`) back as the record."""
    data = orjson.loads(record)
    return Vulnerability(
        id=data["id"],
        source=data["source"],
        description=data.get("description", ""),
        published=_time(data.get("published")),
        last_modified=_time(data.get("last_modified")),
        status=data.get("status", ""),
        cvss=tuple(_score(item) for item in data.get("cvss", ())),
        cwes=tuple(data.get("cwes", ())),
        references=tuple(data.get("references", ())),
        configurations=tuple(
            Configuration(
                nodes=tuple(
                    ConfigurationNode(
                        operator=node["operator"],
                        matches=tuple(
                            CpeMatch(
                                criteria=match["criteria"],
                                vulnerable=match["vulnerable"],
                                versions=VersionRange(**match["versions"]),
                                match_criteria_id=match.get("match_criteria_id"),
                            )
                            for match in node["matches"]
                        ),
                        negate=node.get("negate", False),
                    )
                    for node in configuration["nodes"]
                ),
                operator=configuration.get("operator", "OR"),
                negate=configuration.get("negate", False),
            )
            for configuration in data.get("configurations", ())
        ),
    )


def kev_from_json(record: str | bytes) -> KevEntry:
    data = orjson.loads(record)
    return KevEntry(
        cve_id=data["cve_id"],
        vendor_project=data["vendor_project"],
        product=data["product"],
        name=data["name"],
        date_added=dt.date.fromisoformat(data["date_added"]),
        short_description=data.get("short_description", ""),
        required_action=data.get("required_action", ""),
        due_date=_day(data.get("due_date")),
        known_ransomware=bool(data.get("known_ransomware", False)),
        notes=data.get("notes", ""),
        cwes=tuple(data.get("cwes", ())),
    )


def advisory_from_json(record: str | bytes) -> Advisory:
    data = orjson.loads(record)
    return Advisory(
        id=data["id"],
        title=data.get("title", ""),
        publisher=data.get("publisher", ""),
        initial_release=_time(data.get("initial_release")),
        current_release=_time(data.get("current_release")),
        revision=data.get("revision", ""),
        url=data.get("url"),
        products=tuple(
            AdvisoryProduct(
                product_id=item["product_id"],
                vendor=item["vendor"],
                name=item["name"],
                version=item.get("version"),
                version_range=item.get("version_range"),
                cpe=item.get("cpe"),
                model_numbers=tuple(item.get("model_numbers", ())),
            )
            for item in data.get("products", ())
        ),
        vulnerabilities=tuple(
            AdvisoryVulnerability(
                cve=item.get("cve"),
                title=item.get("title", ""),
                cvss=tuple(_score(score) for score in item.get("cvss", ())),
                cwes=tuple(item.get("cwes", ())),
                known_affected=tuple(item.get("known_affected", ())),
                fixed=tuple(item.get("fixed", ())),
                remediations=tuple(
                    Remediation(
                        category=remedy["category"],
                        details=remedy.get("details", ""),
                        url=remedy.get("url"),
                        product_ids=tuple(remedy.get("product_ids", ())),
                    )
                    for remedy in item.get("remediations", ())
                ),
            )
            for item in data.get("vulnerabilities", ())
        ),
    )
