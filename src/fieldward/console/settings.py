"""Typed settings of the console (``fieldward serve``): database, cookies, limits.

One frozen :class:`ConsoleSettings` is built at start-up (from the command line or
:meth:`ConsoleSettings.from_env`) and handed to :func:`fieldward.console.app.create_app`; nothing in
the console reads the environment after that, so tests build an app per settings object.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fieldward.store.database import data_dir as default_data_dir
from fieldward.store.database import default_url

__all__ = ["ConsoleSettings"]


class ConsoleSettings(BaseModel):
    """Everything the console needs to run; thresholds are settings, not literals."""

    model_config = ConfigDict(frozen=True)

    database_url: str | None = None
    """SQLAlchemy URL; None: ``$FIELDWARD_DATABASE_URL`` or SQLite under the data directory."""
    data_dir: Path | None = None
    """Data directory (evidence captures, the default SQLite file); None: ``$FIELDWARD_HOME`` etc."""
    secure_cookies: bool = True
    """Send the session cookie with ``Secure`` (turn off only for plain-HTTP development)."""
    session_ttl: dt.timedelta = dt.timedelta(hours=12)
    """Lifetime of a browser session (the cookie and its server-side record)."""
    login_rate: tuple[int, float] = (5, 300.0)
    """At most this many failed logins per username and client address within the window (seconds)."""
    max_ingest_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest request body a sensor may push (413 above)."""
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest request body of every other endpoint (413 above)."""
    max_feed_bytes: int | None = Field(default=None, ge=1024)
    """Largest feed upload (streamed to disk); None: ``$FIELDWARD_MAX_FEED_BYTES``, else 512 MiB."""
    evidence_dir: Path | None = None
    """Where pushed evidence captures are kept; None: ``<data_dir>/evidence``."""
    first_admin: str = "admin"
    """User name of the administrator created on first start."""
    ui: bool = True
    """Serve the web UI next to the API."""
    token_touch_seconds: float = 60.0
    """``last_used`` of a token is written at most this often (avoids a write per request)."""

    @classmethod
    def from_env(cls, **overrides: object) -> ConsoleSettings:
        """Settings from ``FIELDWARD_DATABASE_URL`` / ``FIELDWARD_HOME`` plus explicit overrides."""
        values: dict[str, object] = {"database_url": os.environ.get("FIELDWARD_DATABASE_URL") or None}
        values.update(overrides)
        return cls.model_validate(values)

    def url(self) -> str:
        """The database URL to open."""
        if self.database_url:
            return self.database_url
        if self.data_dir is not None:
            return f"sqlite:///{self.data_dir / 'fieldward.db'}"
        return default_url()

    def home(self) -> Path:
        return self.data_dir if self.data_dir is not None else default_data_dir()

    def evidence_path(self) -> Path:
        return self.evidence_dir if self.evidence_dir is not None else self.home() / "evidence"
