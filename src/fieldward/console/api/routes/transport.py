"""The sensor transport (``/api/v1/transport``): the ingest workers' counters, and the dead letters
(read them, apply them again, discard them).

A JetStream ingest worker (:mod:`fieldward.console.jetstream_worker`) that cannot apply a message for
good (an unknown sensor, a malformed body, evidence whose alert never came) records it whole in
``transport_dead_letters`` and terminates it on the stream. Here analysts and administrators read
them; an administrator, once the cause is fixed (the sensor registered, say), applies them again
with the workers' own :class:`~fieldward.console.jetstream_worker.BatchApplier`, in the console
process: no NATS connection is needed, the batch goes to the same store, ``ingest_batches`` makes a
batch applied twice a ``duplicate``, and a dead letter leaves the table only once its batch is
stored. Or discards one. Both are audited.

``GET /transport/workers`` lists the workers from ``transport_workers``, which each worker updates
every ``--report-every`` seconds and when it stops (no NATS connection needed here either). A killed
worker cannot say it stopped: its row stays ``running`` while its ``last_seen`` ages, so the answer
derives ``stale`` for a ``running`` row not updated for more than :data:`STALE_REPORTS` of the
worker's own report intervals (the stored row is not changed).
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, status
from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.orm import Session, defer

from fieldward.console.api.deps import (
    CurrentUser,
    IdPath,
    PagingDep,
    SessionDep,
    SettingsDep,
    access,
    audit,
)
from fieldward.console.api.schemas import NO_NUL, Message, Page
from fieldward.console.api.schemas.transport import (
    DeadLetterDetail,
    DeadLetterPublic,
    DeadLetterRetryPublic,
    DeadLettersRetryPublic,
    WorkerPublic,
)
from fieldward.console.jobs import shared_store
from fieldward.console.settings import ConsoleSettings
from fieldward.store.models import utcnow
from fieldward.store.transport_models import TransportDeadLetter, TransportWorker

__all__ = ["router"]

router = APIRouter(prefix="/transport", tags=["transport"])

SensorFilter = Annotated[
    str | None, Query(max_length=200, pattern=NO_NUL, description="Exact sensor name of the subject")
]
CodeFilter = Annotated[
    str | None,
    Query(max_length=100, pattern=r"^[a-z_]+\.[a-z_]+$", description="Reason code, e.g. sensor.unknown"),
]
RETRY_LIMIT = 500
"""Most dead letters applied again by one bulk retry (each is a batch of up to thousands of records)."""
STALE_REPORTS = 3
"""A ``running`` worker whose ``last_seen`` is older than this many of its report intervals
(``report_every``, the worker's ``--report-every``) is shown ``stale`` (killed, hung or cut off)."""


def worker_state(row: TransportWorker, now: dt.datetime) -> Literal["running", "stale", "stopped"]:
    """The state the API shows for a worker row: ``stopped`` as stored; ``running`` while it reports,
    ``stale`` once it has missed :data:`STALE_REPORTS` report intervals."""
    if row.state != "running":
        return "stopped"
    silent = (now - row.last_seen).total_seconds()
    return "running" if silent <= STALE_REPORTS * row.report_every else "stale"


@router.get(
    "/workers",
    operation_id="transport_workers_list",
    response_model=Page[WorkerPublic],
    summary="The JetStream ingest workers and their counters, the most recently seen first",
    **access("analyst"),
)
def list_workers(
    session: SessionDep,
    paging: PagingDep,
    alive: Annotated[bool | None, Query(description="Only the alive (true) or the others (false)")] = None,
) -> Page[WorkerPublic]:
    now = utcnow()
    rows = session.scalars(
        select(TransportWorker).order_by(TransportWorker.last_seen.desc(), TransportWorker.id.desc())
    ).all()  # one row per worker process of the last week: a short list
    items = []
    for row in rows:
        state = worker_state(row, now)
        living = state == "running"
        if alive is None or living == alive:
            items.append(
                WorkerPublic.model_validate(
                    {**{c: getattr(row, c) for c in WORKER_COLUMNS}, "state": state, "alive": living}
                )
            )
    return Page[WorkerPublic](
        items=items[paging.offset : paging.offset + paging.limit],
        total=len(items),
        limit=paging.limit,
        offset=paging.offset,
    )


WORKER_COLUMNS = (
    "id",
    "name",
    "stream",
    "durable",
    "started",
    "last_seen",
    "report_every",
    "applied",
    "duplicates",
    "records",
    "redelivered",
    "retried",
    "dead_lettered",
)


def _filters(sensor: str | None, code: str | None) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if sensor is not None:
        filters.append(TransportDeadLetter.sensor == sensor)
    if code is not None:
        filters.append(TransportDeadLetter.reason.startswith(f"{code}:", autoescape=True))
    return filters


def _kind(subject: str) -> str | None:
    parts = subject.split(".")
    return parts[3] if len(parts) == 4 else None


def _values(letter: TransportDeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "received": letter.received,
        "stream": letter.stream,
        "stream_seq": letter.stream_seq,
        "subject": letter.subject,
        "sensor": letter.sensor,
        "kind": _kind(letter.subject),
        "batch_id": letter.batch_id,
        "code": letter.reason.split(":", 1)[0],
        "reason": letter.reason,
        "deliveries": letter.deliveries,
        "size": letter.size,
    }


def _headers(letter: TransportDeadLetter) -> dict[str, str]:
    try:
        value = orjson.loads(letter.headers or "{}")
    except orjson.JSONDecodeError:  # cut at 4000 characters when stored: shown as absent
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _get(session: Session, letter_id: int) -> TransportDeadLetter:
    letter = session.get(TransportDeadLetter, letter_id)
    if letter is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such dead letter")
    return letter


@router.get(
    "/dead-letters",
    operation_id="transport_dead_letters_list",
    response_model=Page[DeadLetterPublic],
    summary="JetStream messages the ingest workers could not apply, newest first",
    **access("analyst"),
)
def list_dead_letters(
    session: SessionDep, paging: PagingDep, sensor: SensorFilter = None, code: CodeFilter = None
) -> Page[DeadLetterPublic]:
    filters = _filters(sensor, code)
    total = int(session.scalar(select(func.count()).select_from(TransportDeadLetter).where(*filters)) or 0)
    rows = session.scalars(
        select(TransportDeadLetter)
        .options(defer(TransportDeadLetter.payload))  # up to max_payload each: not for a list
        .where(*filters)
        .order_by(TransportDeadLetter.received.desc(), TransportDeadLetter.id.desc())
        .limit(paging.limit)
        .offset(paging.offset)
    )
    return Page[DeadLetterPublic](
        items=[DeadLetterPublic.model_validate(_values(r)) for r in rows],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.get(
    "/dead-letters/{letter_id}",
    operation_id="transport_dead_letters_get",
    response_model=DeadLetterDetail,
    summary="One dead letter with its headers and payload",
    **access("analyst", 404),
)
def get_dead_letter(letter_id: IdPath, session: SessionDep) -> DeadLetterDetail:
    letter = _get(session, letter_id)
    return DeadLetterDetail.model_validate(
        {
            **_values(letter),
            "headers": _headers(letter),
            "payload_base64": base64.b64encode(letter.payload).decode("ascii"),
        }
    )


def _retry(
    request: Request, session: Session, settings: ConsoleSettings, letter_ids: list[int]
) -> tuple[list[tuple[int, str, str, str]], dict[int, str]]:
    """Apply the dead letters again: ``(applied: (id, batch id, kind, outcome), failed: id -> reason)``.

    One at a time (a payload is up to the server's ``max_payload``): each row is read and the read
    transaction ended, so its batch is written in its own transactions (SQLite has one writer); the
    applied ones are deleted, the refused ones get their new reason, when the caller commits.
    """
    # imported here: the worker module imports helpers of the ingest routes (a cycle at import time)
    from fieldward.console.jetstream_worker import (
        BatchApplier,
        BatchNotReadyError,
        BatchRefusedError,
        parse_batch,
    )

    applier = BatchApplier(
        request.app.state.database,
        columnar=shared_store(request.app),
        evidence_dir=settings.evidence_path(),
    )
    done: list[tuple[int, str, str, str]] = []
    failed: dict[int, str] = {}
    for letter_id in sorted(letter_ids):
        letter = session.get(TransportDeadLetter, letter_id)
        if letter is None:  # deleted meanwhile
            continue
        subject, headers, payload = letter.subject, _headers(letter), bytes(letter.payload)
        session.rollback()
        session.expunge_all()
        try:
            batch = parse_batch(subject, headers, payload)
            outcome = applier.apply(batch)
        except BatchRefusedError as exc:
            failed[letter_id] = str(exc)[:500]
            continue
        except BatchNotReadyError as exc:
            failed[letter_id] = f"evidence.no_alert: {exc}"[:500]
            continue
        done.append((letter_id, batch.batch_id, batch.kind, outcome))
    for letter_id, reason in failed.items():
        session.execute(
            update(TransportDeadLetter).where(TransportDeadLetter.id == letter_id).values(reason=reason)
        )
    if done:
        session.execute(delete(TransportDeadLetter).where(TransportDeadLetter.id.in_([d[0] for d in done])))
    return done, failed


@router.post(
    "/dead-letters/{letter_id}/retry",
    operation_id="transport_dead_letters_retry",
    response_model=DeadLetterRetryPublic,
    summary="Apply one dead letter again (after fixing its cause); it is removed once stored",
    **access("admin", 404, 409),
)
def retry_dead_letter(
    letter_id: IdPath, request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> DeadLetterRetryPublic:
    letter = _get(session, letter_id)
    subject = letter.subject
    done, failed = _retry(request, session, settings, [letter_id])
    if failed:
        audit(session, user.username, "transport.dead_letter.retry", f"dead_letter:{letter_id}", failed=True)
        session.commit()
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"the batch is still refused: {failed[letter_id]}"
        )
    if not done:  # deleted meanwhile by another request
        session.commit()
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such dead letter")
    _, batch_id, kind, outcome = done[0]
    audit(
        session,
        user.username,
        "transport.dead_letter.retry",
        f"dead_letter:{letter_id}",
        subject=subject,
        batch_id=batch_id,
        outcome=outcome,
    )
    session.commit()
    status_value: Literal["applied", "duplicate"] = "applied" if outcome == "applied" else "duplicate"
    return DeadLetterRetryPublic(id=letter_id, batch_id=batch_id, kind=kind, status=status_value)


@router.post(
    "/dead-letter-retries",
    operation_id="transport_dead_letters_retry_all",
    response_model=DeadLettersRetryPublic,
    summary="Apply the matching dead letters again, oldest first (at most 500 per call)",
    **access("admin"),
)
def retry_dead_letters(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    sensor: SensorFilter = None,
    code: CodeFilter = None,
    limit: Annotated[int, Query(ge=1, le=RETRY_LIMIT, description="Most dead letters to try")] = 100,
) -> DeadLettersRetryPublic:
    filters = _filters(sensor, code)
    ids = list(
        session.scalars(
            select(TransportDeadLetter.id).where(*filters).order_by(TransportDeadLetter.id).limit(limit)
        )
    )
    done, failed = _retry(request, session, settings, ids)
    applied = sum(1 for d in done if d[3] == "applied")
    audit(
        session,
        user.username,
        "transport.dead_letter.retry_all",
        sensor=sensor,
        code=code,
        applied=applied,
        duplicate=len(done) - applied,
        failed=len(failed),
    )
    session.commit()
    remaining = int(
        session.scalar(select(func.count()).select_from(TransportDeadLetter).where(*filters)) or 0
    )
    session.commit()
    return DeadLettersRetryPublic(
        tried=len(done) + len(failed),
        applied=applied,
        duplicate=len(done) - applied,
        failed=len(failed),
        remaining=remaining,
    )


@router.delete(
    "/dead-letters/{letter_id}",
    operation_id="transport_dead_letters_delete",
    response_model=Message,
    summary="Discard a dead letter (its batch is not applied)",
    **access("admin", 404),
)
def delete_dead_letter(letter_id: IdPath, user: CurrentUser, session: SessionDep) -> Message:
    letter = _get(session, letter_id)
    audit(
        session,
        user.username,
        "transport.dead_letter.discard",
        f"dead_letter:{letter_id}",
        subject=letter.subject,
        batch_id=letter.batch_id,
        reason=letter.reason[:200],
        size=letter.size,
    )
    session.delete(letter)
    session.commit()
    return Message(detail="dead letter discarded")
