"""Vulnerability feeds (``/api/v1/feeds``): an administrator uploads NVD / KEV / CSAF files; the
knowledge store's status.

An upload is ``multipart/form-data`` with one or more ``files`` parts. Each part is copied in chunks
to a private temporary directory (never held whole in memory by this route), refused above
:data:`MAX_FEED_BYTES` (413), then :meth:`VulnerabilityDatabase.import_documents` imports them into
the console's own database (the same URL, the same Alembic history) and the counts are returned. A
file that is not a feed is reported per file (``error``), the others are imported. Uploaded file
names are only echoed back (cleaned), never used as paths.

The request body is not held in memory: the application's ``BodyLimit`` streams this one path with
its own cap (``fieldward.console.app.feed_limit``: 512 MiB by default, ``$FIELDWARD_MAX_FEED_BYTES``)
instead of ``max_request_bytes`` (1 MiB, every other non-ingest path), and the multipart parser
spools each part to a temporary file.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Request, UploadFile, status

from fieldward.console.api.deps import CurrentUser, SessionDep, access, audit
from fieldward.console.api.schemas.feeds import FeedCounts, FeedFileReport, FeedImportPublic, FeedStatusPublic
from fieldward.store.database import Database
from fieldward.store.vulndb import ImportCounts, VulnerabilityDatabase, VulnerabilityStoreError

__all__ = ["MAX_FEED_BYTES", "MAX_FEED_FILES", "router"]

router = APIRouter(prefix="/feeds", tags=["feeds"])

MAX_FEED_BYTES = 1024 * 1024 * 1024
"""Largest feed file accepted (an uncompressed NVD year is a few hundred MB)."""
MAX_FEED_FILES = 64
CHUNK = 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def _clean_name(name: str | None, index: int) -> str:
    base = Path((name or "").replace("\\", "/")).name
    cleaned = _UNSAFE.sub("_", base).strip(" .")[:120]
    return cleaned or f"upload-{index}"


def _counts(counts: ImportCounts) -> FeedCounts:
    return FeedCounts(
        added=counts.added, updated=counts.updated, unchanged=counts.unchanged, skipped=counts.skipped
    )


def _store(request: Request) -> VulnerabilityDatabase:
    database: Database = request.app.state.database
    try:
        return VulnerabilityDatabase(database.engine.url.render_as_string(hide_password=False))
    except VulnerabilityStoreError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None


@router.get(
    "",
    operation_id="feeds_status",
    response_model=FeedStatusPublic,
    summary="Records per feed source, the newest dates, the last import",
    **access("viewer", 503),
)
def feeds_status(request: Request) -> FeedStatusPublic:
    store = _store(request)
    try:
        return FeedStatusPublic.model_validate(store.status())
    finally:
        store.close()


@router.post(
    "/import",
    operation_id="feeds_import",
    response_model=FeedImportPublic,
    summary="Import uploaded NVD, KEV or CSAF files (JSON, CSV, gzip)",
    **access("admin", 413, 422, 503),
)
def import_feeds(
    files: Annotated[
        list[UploadFile],
        File(
            min_length=1, max_length=MAX_FEED_FILES, description="Feed files (NVD JSON, KEV JSON/CSV, CSAF)"
        ),
    ],
    request: Request,
    user: CurrentUser,
    session: SessionDep,
) -> FeedImportPublic:
    if not files:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="no files")
    if len(files) > MAX_FEED_FILES:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"at most {MAX_FEED_FILES} files")
    limit = min(MAX_FEED_BYTES, int(getattr(request.app.state, "max_feed_bytes", MAX_FEED_BYTES)))
    with tempfile.TemporaryDirectory(prefix="fieldward-feeds-") as folder:
        names: dict[str, str] = {}
        for index, upload in enumerate(files):
            target = Path(folder) / f"feed-{index}"
            size = 0
            with target.open("wb") as out:
                while chunk := upload.file.read(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise HTTPException(
                            status.HTTP_413_CONTENT_TOO_LARGE,
                            detail=f"feed file larger than {limit} bytes",
                        )
                    out.write(chunk)
            names[str(target)] = _clean_name(upload.filename, index)
        session.rollback()  # no read transaction open while the import writes (SQLite: one writer)
        store = _store(request)
        try:
            report = store.import_documents(list(names))
        finally:
            store.close()
    public = FeedImportPublic(
        files=[
            FeedFileReport(
                filename=names.get(f.path, "upload"),
                source=f.source,
                format=f.format,
                counts=_counts(f.counts),
                problems=[str(p) for p in f.problems[:50]],
                error=f.error,
                identical=f.identical,
            )
            for f in report.files
        ],
        by_source={source: _counts(counts) for source, counts in report.by_source.items()},
        total=_counts(report.total),
        seconds=round(report.seconds, 3),
    )
    audit(
        session,
        user.username,
        "feeds.import",
        None,
        files=[
            {"filename": f.filename, "source": f.source, "error": f.error, **f.counts.model_dump()}
            for f in public.files
        ],
        total=public.total.model_dump(),
    )
    session.commit()
    return public
