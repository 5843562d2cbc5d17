"""The sensors' push endpoints (``/api/v1/ingest``): batches of records and evidence captures.

``POST /ingest/{kind}`` with ``{"batch_id": uuid, "records": [...]}`` applies the batch with
:func:`fieldward.store.ingest.ingest_records` once per ``(sensor, batch_id)``; a batch seen before
answers ``duplicate`` (a sensor retries until acknowledged, so duplicates are normal). The batch id is
recorded after the batch is applied: if the console dies in between, the retry applies the batch
again, which the store's upserts make harmless. Body sizes are capped by the app (413).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Body, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fieldward.console.api.deps import CurrentSensor, IdPath, SessionDep, SettingsDep, access, audit
from fieldward.console.api.schemas.ingest import BatchCreate, BatchPublic, EvidencePublic
from fieldward.console.models import IngestBatch
from fieldward.store.database import Database
from fieldward.store.ingest import IngestError, ingest_records
from fieldward.store.models import Alert

__all__ = ["router"]

router = APIRouter(prefix="/ingest", tags=["ingest"])
Kind = Literal["devices", "communications", "alerts", "vulnerabilities", "configurations", "risk"]
PCAP_MAGICS = (
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\xc3\xd4",
    b"\x4d\x3c\xb2\xa1",
    b"\xa1\xb2\x3c\x4d",
    b"\x0a\x0d\x0d\x0a",
)
"""pcap (µs and ns, both byte orders) and pcapng (Section Header Block) magic numbers."""


@router.post(
    "/evidence/{alert_id}",
    operation_id="ingest_evidence",
    response_model=EvidencePublic,
    summary="Upload the evidence capture of one of the sensor's alerts",
    **access("sensor", 404, 413, 422),
)
def upload_evidence(
    alert_id: IdPath,
    data: Annotated[bytes, Body(media_type="application/vnd.tcpdump.pcap")],
    sensor: CurrentSensor,
    session: SessionDep,
    settings: SettingsDep,
) -> EvidencePublic:
    alert = session.get(Alert, alert_id)
    if alert is None or alert.sensor_id != sensor.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such alert of this sensor")
    if len(data) < 24 or data[:4] not in PCAP_MAGICS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="the body is not a pcap or pcapng file"
        )
    relative = Path(f"sensor-{sensor.id}") / f"alert-{alert.id}.pcap"
    target = settings.evidence_path() / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    alert.evidence_pcap = str(relative)
    audit(session, f"sensor:{sensor.name}", "ingest.evidence", f"alert:{alert.id}", bytes=len(data))
    session.commit()
    return EvidencePublic(alert_id=alert.id, bytes=len(data))


@router.post(
    "/{kind}",
    operation_id="ingest_batch",
    response_model=BatchPublic,
    summary="Push one batch of records (idempotent by batch_id)",
    **access("sensor", 413, 422),
)
def ingest_batch(
    kind: Kind, body: BatchCreate, request: Request, sensor: CurrentSensor, session: SessionDep
) -> BatchPublic:
    batch_id = str(body.batch_id)
    seen = session.scalar(
        select(IngestBatch.id).where(IngestBatch.sensor_id == sensor.id, IngestBatch.batch_id == batch_id)
    )
    if seen is not None:
        return BatchPublic(batch_id=body.batch_id, status="duplicate")
    database: Database = request.app.state.database
    session.rollback()  # end the read transaction: ingestion runs in its own (SQLite has one writer)
    try:
        report = ingest_records(database, sensor.id, kind, body.records)
    except IngestError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    written = report.records
    skipped = sum(report.skipped.values())
    session.add(IngestBatch(sensor_id=sensor.id, batch_id=batch_id, kind=kind, written=written))
    audit(
        session,
        f"sensor:{sensor.name}",
        "ingest.batch",
        f"sensor:{sensor.id}",
        kind=kind,
        batch_id=batch_id,
        records=len(body.records),
        written=written,
        skipped=skipped,
    )
    try:
        session.commit()
    except IntegrityError:  # the same batch applied concurrently by a retry: it is a duplicate
        session.rollback()
        return BatchPublic(batch_id=body.batch_id, status="duplicate")
    return BatchPublic(
        batch_id=body.batch_id, status="applied", written=written, skipped=skipped, weird=dict(report.weird)
    )
