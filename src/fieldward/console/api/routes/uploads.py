"""Capture uploads (``/api/v1/uploads``): an analyst sends a pcap/pcapng (optionally gzipped) and the
console analyses it in the background, like a sensor would, and stores the results.

``POST /uploads`` (multipart: ``file``, optional ``sensor``) streams the file to
``<data_dir>/uploads/<id>/`` with a size cap (:func:`upload_limit`, 413 above) and queues it;
``GET /uploads/{id}`` says ``queued``, ``running``, ``done`` (with the rows written by kind) or
``failed`` (with the reason, e.g. "not a pcap or pcapng capture": the format is recognised by its
content, so any file is accepted and a wrong one fails its job). The worker
(:class:`fieldward.console.jobs.UploadJobs`) runs ``fieldward analyze`` (analysis and assessment) in a
child process, then :func:`~fieldward.store.ingest.ingest_folder` into the console's database as the
sensor named ``sensor`` (default ``upload``), and adds the flows and protocol events to the columnar
store. The jobs are rows of ``upload_jobs``: with ``fieldward serve --workers N`` any worker process
answers ``GET /uploads/{id}`` for a job another one runs, and a restart keeps them (the newest 200
finished ones); an unknown id is a 404. A name that belongs to a sensor with a push credential is
refused (409): an upload never mixes into what a live sensor reports.

The app-wide body cap (``max_request_bytes``, 1 MiB by default) applies to this path unless
``create_app``'s ``BodyLimit`` streams it like the feeds upload (see docs/console/columnar.md).
"""

from __future__ import annotations

import os
from typing import Annotated, Final

from fastapi import APIRouter, File, Form, HTTPException, Path, Request, UploadFile, status
from sqlalchemy import select

from fieldward.console.api.deps import CurrentUser, SessionDep, SettingsDep, access, audit
from fieldward.console.api.schemas import NAME
from fieldward.console.api.schemas.uploads import UploadPublic
from fieldward.console.jobs import UploadJob, upload_jobs
from fieldward.console.settings import ConsoleSettings
from fieldward.store.models import Sensor

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "UPLOADS_PATH", "router", "upload_limit"]

router = APIRouter(prefix="/uploads", tags=["uploads"])

UPLOADS_PATH: Final = "/api/v1/uploads"
"""The upload path (for ``BodyLimit``: stream it with :func:`upload_limit` as its cap)."""
DEFAULT_MAX_UPLOAD_BYTES: Final = 2 * 1024**3
_CHUNK: Final = 1024 * 1024


def upload_limit(settings: ConsoleSettings) -> int:
    """The largest capture accepted: ``settings.max_upload_bytes`` when the settings have that field,
    else ``$FIELDWARD_MAX_UPLOAD_BYTES``, else 2 GiB."""
    configured = getattr(settings, "max_upload_bytes", None)
    if isinstance(configured, int) and not isinstance(configured, bool) and configured > 0:
        return configured
    text = os.environ.get("FIELDWARD_MAX_UPLOAD_BYTES", "")
    if text.isdigit() and int(text) > 0:
        return int(text)
    return DEFAULT_MAX_UPLOAD_BYTES


UPLOAD_SENSOR: Final = f"^$|{NAME}"
"""A sensor name, or empty for the default (a form sends an empty field for an untouched input)."""


def _public(job: UploadJob) -> UploadPublic:
    return UploadPublic(
        id=job.id,
        filename=job.filename,
        sensor=job.sensor,
        size=job.size,
        status=job.status,
        created=job.created,
        started=job.started,
        finished=job.finished,
        counts=dict(job.counts),
        error=job.error,
    )


@router.post(
    "",
    operation_id="uploads_create",
    response_model=UploadPublic,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload a capture (pcap, pcapng, optionally .gz) to analyse and store",
    **access("analyst", 409, 413),
)
async def uploads_create(
    request: Request,
    file: Annotated[UploadFile, File(description="The capture: pcap or pcapng, optionally gzip-compressed")],
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    sensor: Annotated[
        str,
        Form(
            max_length=64,
            pattern=UPLOAD_SENSOR,
            description="Sensor name to store the results under (empty: upload)",
        ),
    ] = "upload",
) -> UploadPublic:
    # The reader recognises pcap, pcapng and gzip by their content: any other file is accepted here
    # and its job fails with the reason ("not a pcap or pcapng capture").
    filename = "".join(ch for ch in os.path.basename(file.filename or "") if ch.isprintable())[:200]
    filename = filename or "capture"
    sensor = sensor or "upload"
    existing = session.scalars(select(Sensor).where(Sensor.name == sensor)).first()
    if existing is not None and existing.credential_hash is not None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"{sensor!r} is a registered sensor with a push credential; choose another name",
        )
    jobs = upload_jobs(request.app)
    limit = upload_limit(settings)
    job_id, target = jobs.new_path()
    size = 0
    try:
        with target.open("wb") as out:
            while chunk := await file.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(
                        status.HTTP_413_CONTENT_TOO_LARGE,
                        detail=f"capture larger than {limit} bytes",
                    )
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        target.parent.rmdir()
        raise
    job = UploadJob(
        id=job_id,
        filename=filename,
        sensor=sensor,
        size=size,
        created_by=user.username,
        path=target,
    )
    audit(
        session,
        user.username,
        "upload.create",
        f"upload:{job_id}",
        filename=filename,
        sensor=sensor,
        bytes=size,
    )
    session.commit()
    jobs.submit(job)
    return _public(job)


@router.get(
    "/{upload_id}",
    operation_id="uploads_get",
    response_model=UploadPublic,
    summary="State of an uploaded capture's analysis",
    **access("analyst", 404),
)
def uploads_get(
    request: Request,
    upload_id: Annotated[str, Path(min_length=1, max_length=64, description="The upload's id")],
) -> UploadPublic:
    job = upload_jobs(request.app).get(upload_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such upload")
    return _public(job)
