"""Every router of the API, mounted under ``/api/v1`` by :func:`fieldward.console.app.create_app`.

Adding a domain is one module ``routes/<domain>.py`` exposing ``router`` (an ``APIRouter`` with its
``prefix`` and ``tags``) plus one line in :data:`ROUTERS`; the security-matrix test then covers its
endpoints automatically (docs/console/api.md, "Adding a router").
"""

from __future__ import annotations

from fastapi import APIRouter

from fieldward.console.api.routes import (
    alerts,
    audit,
    auth,
    columnar,
    devices,
    feeds,
    ingest,
    map,
    reports,
    risk,
    sensors,
    settings,
    tokens,
    transport,
    trust_devices,
    uploads,
    users,
    vulnerabilities,
)

__all__ = ["API_PREFIX", "ROUTERS"]

API_PREFIX = "/api/v1"
ROUTERS: list[APIRouter] = [
    auth.router,
    users.router,
    tokens.router,
    devices.router,
    map.router,
    sensors.router,
    ingest.router,
    audit.router,
    alerts.router,
    alerts.sensor_rules_router,
    vulnerabilities.router,
    risk.router,
    feeds.router,
    reports.router,
    settings.router,
    columnar.router,
    uploads.router,
    trust_devices.router,
    transport.router,
]
"""The mounted routers, in the order of the OpenAPI document."""
