"""Schemas of the audit log."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fieldward.console.api.schemas import OutputModel

__all__ = ["AuditPublic"]


class AuditPublic(OutputModel):
    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]
