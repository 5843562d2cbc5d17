"""Console settings (``/api/v1/settings``): syslog/CEF forwarding of alerts and data retention.

Stored as rows of ``console_settings`` (:class:`~fieldward.console.triage_models.ConsoleSetting`),
one per name, so every worker of a console reads the same values. Every role may read them (there is
no secret in them: a forwarding target is an address); only an administrator changes them, each change
with an audit row holding the values before and after.

This module stores and validates the settings; the forwarder and the retention job read them with
:func:`read_settings`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldward.console.api.deps import CurrentUser, SessionDep, access, audit
from fieldward.console.api.schemas.settings import ForwardingPublic, SettingsPublic, SettingsUpdate
from fieldward.console.triage_models import ConsoleSetting
from fieldward.store.models import utcnow

__all__ = ["DEFAULTS", "read_settings", "router"]

router = APIRouter(prefix="/settings", tags=["settings"])

DEFAULTS: dict[str, Any] = {
    "forwarding": {"enabled": False, "target": None, "format": "cef", "min_severity": "medium"},
    "retention_days": 90,
}
"""Values of settings nobody has set yet."""


def read_settings(session: Session) -> SettingsPublic:
    """The current settings (defaults for those never set)."""
    rows = {row.name: row for row in session.scalars(select(ConsoleSetting))}
    values = {name: rows[name].value if name in rows else default for name, default in DEFAULTS.items()}
    latest = max(rows.values(), key=lambda r: r.updated, default=None)
    forwarding = {
        **DEFAULTS["forwarding"],
        **(values["forwarding"] if isinstance(values["forwarding"], dict) else {}),
    }
    return SettingsPublic(
        forwarding=ForwardingPublic.model_validate(forwarding),
        retention_days=int(values["retention_days"]),
        updated_by=latest.updated_by if latest is not None else None,
        updated=latest.updated if latest is not None else None,
    )


@router.get(
    "",
    operation_id="settings_get",
    response_model=SettingsPublic,
    summary="Alert forwarding (syslog/CEF) and retention",
    **access("viewer"),
)
def get_settings(session: SessionDep) -> SettingsPublic:
    return read_settings(session)


@router.put(
    "",
    operation_id="settings_update",
    response_model=SettingsPublic,
    summary="Change alert forwarding and/or retention (only the parts sent)",
    **access("admin", 422),
)
def update_settings(body: SettingsUpdate, user: CurrentUser, session: SessionDep) -> SettingsPublic:
    before = read_settings(session)
    changes: dict[str, Any] = {}
    if body.forwarding is not None:
        forwarding = body.forwarding.model_dump()
        if forwarding["enabled"] and not forwarding["target"]:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="forwarding needs a target")
        if forwarding != before.forwarding.model_dump():
            changes["forwarding"] = forwarding
    if body.retention_days is not None and body.retention_days != before.retention_days:
        changes["retention_days"] = body.retention_days
    now: dt.datetime = utcnow()
    for name, value in changes.items():
        row = session.get(ConsoleSetting, name)
        if row is None:
            session.add(ConsoleSetting(name=name, value=value, updated_by=user.username, updated=now))
        else:
            row.value, row.updated_by, row.updated = value, user.username, now
        previous = before.forwarding.model_dump() if name == "forwarding" else before.retention_days
        audit(session, user.username, "settings.update", f"setting:{name}", before=previous, after=value)
    session.commit()
    return read_settings(session)
