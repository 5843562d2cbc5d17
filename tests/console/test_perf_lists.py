"""The fast paths of the list pages keep their contracts (docs/console/performance.md):

- the inventory and alert pages are encoded by orjson from plain dicts (``deps.json_response``), not
  by FastAPI through the models: the bytes must be exactly pydantic's JSON of the documented model;
- on PostgreSQL a request waiting for one of the ``READ_THREADS`` holds no pooled connection, so a
  burst larger than the pool is answered (no pool time-out, no deadlock);
- the pool pings a connection only after it sat idle (``IDLE_PING_SECONDS``), and a connection the
  server dropped meanwhile is replaced instead of failing the request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from fieldward.console.api.schemas import Page
from fieldward.console.api.schemas.alerts import AlertPage
from fieldward.console.api.schemas.devices import DevicePublic
from fieldward.store import database as database_module
from fieldward.store.database import Database
from fieldward.store.ingest import ingest_folder

from .conftest import Console, start_console

LIST_CASES = [
    ("/api/v1/devices", Page[DevicePublic], {"limit": 500}),
    ("/api/v1/devices", Page[DevicePublic], {"sort": "last_seen", "order": "desc", "limit": 7}),
    ("/api/v1/devices", Page[DevicePublic], {"search": "1", "sort": "risk_score", "order": "desc"}),
    ("/api/v1/alerts", AlertPage, {"limit": 500}),
    ("/api/v1/alerts", AlertPage, {"status": "open", "sort": "severity", "limit": 5, "offset": 2}),
]


@pytest.mark.parametrize(("path", "model", "params"), LIST_CASES)
def test_list_pages_are_exactly_the_models_json(
    demo_console: Console, path: str, model: Any, params: dict[str, Any]
) -> None:
    response = demo_console.client.get(
        path, params=params, headers=demo_console.bearer(demo_console.tokens["viewer"])
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    page = model.model_validate_json(response.content, strict=False)
    assert page.items, "the demo plant has rows to compare"
    # Same keys, order, types and formats (UTC times with Z) as FastAPI's encoding of the model.
    assert response.content == page.model_dump_json().encode()
    if "limit" in params:
        assert page.limit == params["limit"]


def test_timestamps_are_utc_with_z(demo_console: Console) -> None:
    response = demo_console.client.get(
        "/api/v1/alerts", params={"limit": 3}, headers=demo_console.bearer(demo_console.tokens["viewer"])
    )
    stamps = [item["last_ts"] for item in response.json()["items"] if item["last_ts"]]
    assert stamps
    assert all(stamp.endswith("Z") for stamp in stamps)


@pytest.fixture
def small_pool_console(
    pg_factory: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_folder: Path
) -> Iterator[Console]:
    monkeypatch.setattr(database_module, "PG_POOL_SIZE", 2)
    monkeypatch.setattr(database_module, "PG_MAX_OVERFLOW", 0)
    for console in start_console(pg_factory(), tmp_path):
        ingest_folder(console.database, demo_folder, "plant")
        yield console


def test_a_burst_larger_than_the_pool_is_answered(small_pool_console: Console) -> None:
    console = small_pool_console
    assert console.database.engine.pool.size() == 2  # type: ignore[attr-defined]
    headers = console.bearer(console.tokens["viewer"])
    paths = ["/api/v1/devices?limit=20", "/api/v1/alerts?limit=20&status=open"] * 15

    def get(path: str) -> int:
        code: int = console.client.get(path, headers=headers).status_code
        return code

    with ThreadPoolExecutor(max_workers=30) as pool:
        codes = list(pool.map(get, paths))
    assert codes == [200] * len(paths)


def _backend_pid(db: Database) -> int:
    with db.engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(db: Database, pid: int) -> None:
    with db.engine.connect() as connection:  # a second pooled connection does the killing
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        connection.commit()


@pytest.mark.parametrize("idle_ping_seconds", [0.0, 3600.0])
def test_an_idle_connection_the_server_dropped(
    pg_factory: Callable[[], str], monkeypatch: pytest.MonkeyPatch, idle_ping_seconds: float
) -> None:
    monkeypatch.setattr(database_module, "IDLE_PING_SECONDS", idle_ping_seconds)
    db = Database(pg_factory())
    try:
        with db.engine.connect() as first, db.engine.connect() as second:
            victim = int(first.execute(text("SELECT pg_backend_pid()")).scalar_one())
            second.execute(text("SELECT 1"))
        # Both are back in the pool, the victim last: the pool hands out the killer first (FIFO),
        # then the victim.
        _terminate(db, victim)
        if idle_ping_seconds == 0.0:
            pids = {_backend_pid(db) for _ in range(4)}
            assert victim not in pids
        else:
            # Without the ping the dead connection is handed out and its first statement fails.
            with pytest.raises(OperationalError):
                _backend_pid(db)
    finally:
        db.dispose()
