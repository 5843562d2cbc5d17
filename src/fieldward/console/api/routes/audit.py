"""The audit log (``/api/v1/audit``), newest first, for administrators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import ColumnElement, func, select

from fieldward.console.api.deps import PagingDep, SessionDep, access
from fieldward.console.api.schemas import NO_NUL, Page
from fieldward.console.api.schemas.audit import AuditPublic
from fieldward.store.models import AuditLog

__all__ = ["router"]

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", operation_id="audit_list", response_model=Page[AuditPublic], **access("admin"))
def list_audit(
    session: SessionDep,
    paging: PagingDep,
    actor: Annotated[str | None, Query(max_length=200, pattern=NO_NUL, description="Exact actor")] = None,
    action: Annotated[
        str | None, Query(max_length=100, pattern=NO_NUL, description="Exact action, e.g. auth.login")
    ] = None,
) -> Page[AuditPublic]:
    filters: list[ColumnElement[bool]] = []
    if actor is not None:
        filters.append(AuditLog.actor == actor)
    if action is not None:
        filters.append(AuditLog.action == action)
    total = int(session.scalar(select(func.count()).select_from(AuditLog).where(*filters)) or 0)
    rows = session.scalars(
        select(AuditLog)
        .where(*filters)
        .order_by(AuditLog.at.desc(), AuditLog.id.desc())
        .limit(paging.limit)
        .offset(paging.offset)
    )
    return Page[AuditPublic](
        items=[AuditPublic.model_validate(r) for r in rows],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )
