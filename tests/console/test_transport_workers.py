"""``GET /api/v1/transport/workers``: the state shown for each ingest worker row, on both backends.

A worker writes ``running`` and its ``last_seen`` every ``report_every`` seconds, and ``stopped`` as it
stops; a killed worker cannot write ``stopped``, so its row stays ``running`` while ``last_seen`` ages.
The API shows such a row ``stale`` (past ``STALE_REPORTS`` report intervals) without changing it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from fieldward.console.api.routes.transport import STALE_REPORTS
from fieldward.store.models import utcnow
from fieldward.store.transport_models import TransportWorker

from .conftest import Console

WORKERS = "/api/v1/transport/workers"


def _worker(name: str, state: str, silent: float, report_every: float = 10.0) -> TransportWorker:
    now = utcnow()
    return TransportWorker(
        name=name,
        stream="FIELDWARD_INGEST",
        durable="fieldward-ingest",
        state=state,
        started=now - dt.timedelta(hours=1),
        last_seen=now - dt.timedelta(seconds=silent),
        report_every=report_every,
    )


def _list(console: Console, **params: Any) -> dict[str, Any]:
    response = console.client.get(WORKERS, params=params, headers=console.bearer(console.tokens["analyst"]))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_running_worker_that_stopped_reporting_is_stale(any_console: Console) -> None:
    limit = STALE_REPORTS * 10.0
    with any_console.database.session() as session:
        session.add_all(
            [
                _worker("host:1-fresh", "running", silent=2),
                _worker("host:2-late", "running", silent=limit - 5),  # late, but within the limit
                _worker("host:3-killed", "running", silent=limit + 5),
                _worker("host:4-killed-long-ago", "running", silent=86_400),
                _worker("host:5-slow-reporter", "running", silent=limit + 5, report_every=60.0),
                _worker("host:6-stopped", "stopped", silent=600),
                _worker("host:7-stopped-now", "stopped", silent=1),
            ]
        )
    states = {w["name"]: (w["state"], w["alive"]) for w in _list(any_console)["items"]}
    assert states == {
        "host:1-fresh": ("running", True),
        "host:2-late": ("running", True),
        "host:3-killed": ("stale", False),
        "host:4-killed-long-ago": ("stale", False),
        "host:5-slow-reporter": ("running", True),  # three of its own 60 s intervals
        "host:6-stopped": ("stopped", False),
        "host:7-stopped-now": ("stopped", False),
    }
    alive = _list(any_console, alive=True)
    assert {w["name"] for w in alive["items"]} == {"host:1-fresh", "host:2-late", "host:5-slow-reporter"}
    others = _list(any_console, alive=False)
    assert {w["state"] for w in others["items"]} == {"stale", "stopped"}
    assert others["total"] == 4
    # Derived for the answer only: the stored rows keep what the workers wrote.
    with any_console.database.session() as session:
        rows = session.execute(select(TransportWorker.name, TransportWorker.state)).all()
    stored = {str(name): str(state) for name, state in rows}
    assert stored["host:3-killed"] == "running"
    assert stored["host:6-stopped"] == "stopped"


def test_the_schema_documents_the_stale_state(any_console: Console) -> None:
    schema = any_console.client.get("/api/v1/openapi.json")
    assert schema.status_code == 200, schema.text
    state = schema.json()["components"]["schemas"]["WorkerPublic"]["properties"]["state"]
    assert set(state["enum"]) == {"running", "stale", "stopped"}
    assert "stale" in state["description"]
