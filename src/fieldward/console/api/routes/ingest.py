"""The sensors' push endpoints (``/api/v1/ingest``): batches of records and evidence captures.

``POST /ingest/{kind}`` with ``{"batch_id": uuid, "records": [...]}`` applies the batch with
:func:`fieldward.store.ingest.ingest_records` once per ``(sensor, batch_id)``; a batch seen before
answers ``duplicate`` (a sensor retries until acknowledged, so duplicates are normal). The batch id is
recorded after the batch is applied: if the console dies in between, the retry applies the batch
again, which the store's upserts make harmless. Body sizes are capped by the app (413).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, HTTPException, Path, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from fieldward.console.api.cache import bump_data_version
from fieldward.console.api.deps import CurrentSensor, SessionDep, SettingsDep, access, audit
from fieldward.console.api.routes.risk import site_risk
from fieldward.console.api.schemas.ingest import BatchCreate, BatchPublic, EvidencePublic
from fieldward.console.models import IngestBatch
from fieldward.console.trust_hooks import after_ingest
from fieldward.files import atomic_write
from fieldward.store.database import Database, json_loads
from fieldward.store.ingest import COLLECTOR, IngestError, ingest_records
from fieldward.store.models import Alert

__all__ = ["AlertRef", "find_sensor_alert", "router"]

log = logging.getLogger(__name__)


class _FastJsonRequest(Request):
    """A request whose JSON body is parsed by orjson (2-3 times faster than ``json`` on a batch of
    5,000 records) through :func:`~fieldward.store.database.json_loads`: a body orjson refuses (NaN,
    a lone surrogate) or would read differently (an integer beyond 64 bits, which orjson turns into
    a float) is parsed by ``json`` as before, so the accepted input, the values and the 422s are
    unchanged."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json_loads(await self.body())
        return self._json


class _FastJsonRoute(APIRoute):
    """The ingest routes: bodies parsed by :class:`_FastJsonRequest`, and Python's cyclic garbage
    collector paused from the parsing of a batch to its answer (:data:`~fieldward.store.ingest.COLLECTOR`:
    the batch's objects, freed by reference counting, are not walked again and again meanwhile)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def fast_json_handler(request: Request) -> Response:
            with COLLECTOR:
                return await handler(_FastJsonRequest(request.scope, request.receive))

        return fast_json_handler


router = APIRouter(prefix="/ingest", tags=["ingest"], route_class=_FastJsonRoute)
Kind = Literal["devices", "communications", "alerts", "vulnerabilities", "configurations", "risk"]
PCAP_MAGICS = (
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\xc3\xd4",
    b"\x4d\x3c\xb2\xa1",
    b"\xa1\xb2\x3c\x4d",
    b"\x0a\x0d\x0d\x0a",
)
"""pcap (µs and ns, both byte orders) and pcapng (Section Header Block) magic numbers."""


AlertRef = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=r"^[^\x00-\x1f/]+$",
        description="The sensor's own alert id (the ``id`` of alerts.jsonl); a console row id also works",
    ),
]
"""The alert an evidence capture belongs to, as the sensor knows it."""


def find_sensor_alert(session: Session, sensor_id: int, reference: str) -> Alert | None:
    """The sensor's alert named ``reference``: its own alert id (``alert_key``, unique per sensor)
    first; else, for a decimal number, the console's row id of one of *this* sensor's alerts (what
    older sensors sent). Another sensor's alert is never found."""
    alert = session.scalars(
        select(Alert).where(Alert.sensor_id == sensor_id, Alert.alert_key == reference)
    ).first()
    if alert is None and reference.isascii() and reference.isdigit() and len(reference) <= 18:
        alert = session.get(Alert, int(reference))
        if alert is not None and alert.sensor_id != sensor_id:
            alert = None
    return alert


def store_evidence(evidence_dir: FilePath, sensor_id: int, alert: Alert, data: bytes) -> None:
    """Write ``data`` as ``alert``'s evidence capture, ``<evidence_dir>/sensor-<id>/alert-<id>.pcap``
    (atomically: a temporary file renamed over it), and point the alert at it."""
    relative = FilePath(f"sensor-{sensor_id}") / f"alert-{alert.id}.pcap"
    target = evidence_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data, prefix=".upload-")
    alert.evidence_pcap = str(relative)


@router.post(
    "/evidence/{alert_id}",
    operation_id="ingest_evidence",
    response_model=EvidencePublic,
    summary="Upload the evidence capture of one of the sensor's alerts",
    **access("sensor", 404, 413, 422),
)
def upload_evidence(
    alert_id: AlertRef,
    data: Annotated[bytes, Body(media_type="application/vnd.tcpdump.pcap")],
    sensor: CurrentSensor,
    session: SessionDep,
    settings: SettingsDep,
    batch_id: Annotated[
        str | None, Header(alias="X-Batch-Id", max_length=64, description="The sensor's spool batch id")
    ] = None,
) -> Any:
    alert = find_sensor_alert(session, sensor.id, alert_id)
    if alert is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such alert of this sensor")
    if len(data) < 24 or data[:4] not in PCAP_MAGICS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="the body is not a pcap or pcapng file"
        )
    # The spool's batch id (X-Batch-Id), when sent, is recorded like a records batch: a retry answers
    # "duplicate" and the sensor's count of applied batches matches ingest_batches.
    batch = (batch_id or "").strip()
    if batch and not batch.isprintable():
        batch = ""
    if batch and session.scalar(
        select(IngestBatch.id).where(IngestBatch.sensor_id == sensor.id, IngestBatch.batch_id == batch)
    ):
        return _evidence_answer(alert.id, 0, "duplicate")
    store_evidence(settings.evidence_path(), sensor.id, alert, data)
    audit(session, f"sensor:{sensor.name}", "ingest.evidence", f"alert:{alert.id}", bytes=len(data))
    if batch:
        session.add(IngestBatch(sensor_id=sensor.id, batch_id=batch, kind="evidence", written=1))
    try:
        session.commit()
    except IntegrityError:  # the same upload raced with its retry, which recorded it (same bytes)
        session.rollback()
        return _evidence_answer(alert.id, 0, "duplicate")
    bump_data_version(session)  # has_evidence changed: the alert list's kept answers are stale
    if batch:
        return _evidence_answer(alert.id, len(data), "applied")
    return EvidencePublic(alert_id=alert.id, bytes=len(data))


def _evidence_answer(alert_id: int, size: int, outcome: str) -> Any:
    """``EvidencePublic`` plus the batch ``status`` the sensor client reads (``applied`` /
    ``duplicate``), for uploads that carry a batch id."""
    return JSONResponse({"alert_id": alert_id, "bytes": size, "status": outcome})


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
    bump_data_version(database)  # committed by ingest_records: the list pages' kept answers are stale
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
    after_ingest(request.app, sensor.id, kind, body.records)  # zero trust: quarantine, update risk
    if kind == "risk" and written:
        _record_risk_trend(session, sensor.id)
    return BatchPublic(
        batch_id=body.batch_id, status="applied", written=written, skipped=skipped, weird=dict(report.weird)
    )


def _record_risk_trend(session: Session, sensor_id: int) -> None:
    """A point of the risk trend per risk batch: the day's site and sensor snapshots
    (``site_risk_snapshots``). The batch is already committed, so a failure here is logged, not
    answered: the sensor must not resend a batch that was applied."""
    try:
        site_risk(session, None)
        site_risk(session, sensor_id)
    except SQLAlchemyError as exc:
        session.rollback()
        log.warning("risk trend snapshot after a risk batch failed: %s", type(exc).__name__)
