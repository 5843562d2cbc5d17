"""Typed settings of the console (``fieldward serve``): database, cookies, limits.

One frozen :class:`ConsoleSettings` is built at start-up (from the command line or
:meth:`ConsoleSettings.from_env`) and handed to :func:`fieldward.console.app.create_app`; nothing in
the console reads the environment after that, so tests build an app per settings object.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fieldward.store.database import data_dir as default_data_dir
from fieldward.store.database import default_url

__all__ = ["SETTINGS_FILE_ENV", "TRUST_ENV", "ConsoleSettings"]

SETTINGS_FILE_ENV = "FIELDWARD_CONSOLE_SETTINGS_FILE"
"""Names the JSON settings file that ``fieldward serve --workers N`` writes for its worker processes
(mode 0600, removed when the server stops); :meth:`ConsoleSettings.load` reads it."""

TRUST_ENV: dict[str, str] = {
    "FIELDWARD_TRUST": "trust",
    "FIELDWARD_TRUST_PASSPHRASE_FILE": "trust_passphrase_file",
    "FIELDWARD_TRUST_POLICY": "trust_policy_file",
    "FIELDWARD_TRUST_REFERENCE_VALUES": "trust_reference_values_file",
    "FIELDWARD_TRUST_QUARANTINE": "trust_quarantine_file",
    "FIELDWARD_TRUST_MANUFACTURERS": "trust_manufacturers_file",
    "FIELDWARD_TRUST_PUBLIC_URL": "trust_public_url",
    "FIELDWARD_TRUST_BROKER_HOST": "trust_broker_host",
    "FIELDWARD_TRUST_BROKER_PORT": "trust_broker_port",
    "FIELDWARD_TRUST_BROKER_PASSWORD_FILE": "trust_broker_password_file",
}
"""Environment variables read by :meth:`ConsoleSettings.from_env` for the device plane
(``FIELDWARD_TRUST=1`` turns it on)."""


def _trust_env() -> dict[str, object]:
    return {field: os.environ[name] for name, field in TRUST_ENV.items() if os.environ.get(name)}


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
    list_cache_seconds: float = Field(default=2.0, ge=0)
    """Longest time a worker serves a kept answer of the inventory or alert list (``api/cache.py``);
    console writes invalidate it at once, this bounds what writers outside the console (a CLI
    ingest into the same database) leave visible. 0 turns the cache off."""
    list_cache_entries: int = Field(default=512, ge=0)
    """Most list answers a worker process keeps (least recently used go first)."""
    list_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    """Most bytes of list answers a worker process keeps."""

    # -- the zero-trust device plane (docs/trust/console.md) ------------------------------------------
    trust: bool = False
    """Mount the device plane (EST, attestation, policy decisions, updates, quarantine) and serve
    client certificates; off by default: it needs a CA passphrase and opens device endpoints."""
    trust_passphrase_file: Path | None = None
    """The CA (and TUF) key passphrase; None: ``$FIELDWARD_CA_PASSPHRASE``."""
    trust_policy_file: Path | None = None
    """Access policy (YAML, docs/trust/policy.md); None: every decision is deny."""
    trust_reference_values_file: Path | None = None
    """Attestation reference values (YAML); None: every verdict is ``unknown`` (no renewal)."""
    trust_quarantine_file: Path | None = None
    """Automatic quarantine rules (YAML, docs/trust/enforcement.md); None: alerts never quarantine."""
    trust_manufacturers_file: Path | None = None
    """IDevID manufacturers (YAML: name, CA PEM file, enrollment group); None: token enrollment only."""
    trust_public_url: str | None = None
    """The console's URL as devices reach it; puts CRL and OCSP addresses in issued certificates."""
    trust_device_validity_hours: int = Field(default=24, ge=1, le=24 * 398)
    """Lifetime of device certificates (renewed daily by the agent)."""
    trust_quarantine_ends: tuple[Literal["src", "dst"], ...] = ("src", "dst")
    """Which end of an alert (its source and/or destination device) the response considers."""
    trust_broker_host: str | None = None
    """Mosquitto's dynamic-security admin listener (quarantine disables the device there); None: none."""
    trust_broker_port: int = Field(default=1883, ge=1, le=65535)
    trust_broker_password_file: Path | None = None
    """Password of the broker's dynamic-security admin user."""
    trust_broker_sync_seconds: float = Field(default=60.0, gt=0)
    """How often the broker's clients and ACLs are made equal to the policy (and on every release)."""
    trust_response_seconds: float = Field(default=5.0, gt=0)
    """How often the alert response looks at alerts stored by other paths than the HTTPS ingest
    (NATS JetStream workers, dead-letter retries)."""

    @classmethod
    def from_env(cls, **overrides: object) -> ConsoleSettings:
        """Settings from ``FIELDWARD_DATABASE_URL`` / ``FIELDWARD_HOME`` and the ``FIELDWARD_TRUST*``
        variables (:data:`TRUST_ENV`) plus explicit overrides."""
        values: dict[str, object] = {"database_url": os.environ.get("FIELDWARD_DATABASE_URL") or None}
        values.update(_trust_env())
        values.update(overrides)
        return cls.model_validate(values)

    @classmethod
    def load(cls) -> ConsoleSettings:
        """The settings of a console process started without explicit settings: those of the file
        named by ``$FIELDWARD_CONSOLE_SETTINGS_FILE`` (the workers of ``fieldward serve --workers N``,
        so they run with exactly the parent's settings, the device plane's included), else
        :meth:`from_env`."""
        path = os.environ.get(SETTINGS_FILE_ENV)
        if not path:
            return cls.from_env()
        return cls.model_validate_json(Path(path).read_bytes())

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
