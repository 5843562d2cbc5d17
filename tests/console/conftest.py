"""Shared fixtures of the console tests: an app on SQLite (a file under tmp) and on PostgreSQL (a
fresh database per test session; skipped when no server answers), users of each role with their API
tokens, a sensor, and the demo plant (``fieldward demo``) ingested.

A :class:`Console` bundles an app, an HTTPS test client (the session cookie is ``Secure``) and
helpers to make users, tokens and sensors directly in the store.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fieldward.console.app import create_app
from fieldward.console.security import SENSOR_PREFIX, USER_PREFIX, hash_password, new_token
from fieldward.console.settings import ConsoleSettings
from fieldward.store.database import Database
from fieldward.store.ingest import ingest_folder
from fieldward.store.models import ApiToken, Sensor, User

PG_HOST = os.environ.get("FIELDWARD_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("FIELDWARD_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("FIELDWARD_TEST_PG_USER", "postgres")
BASE_URL = "https://testserver"
PASSWORD = "correct horse battery staple"
ROLES = ("viewer", "analyst", "admin")


@dataclass
class Console:
    """A running console app (lifespan entered) with helpers."""

    app: FastAPI
    client: TestClient
    database: Database
    first_password: str
    tokens: dict[str, str] = field(default_factory=dict)
    """A read+write API token per role (users ``<role>-user``)."""
    read_tokens: dict[str, str] = field(default_factory=dict)
    sensor_token: str = ""

    def user(self, username: str, role: str, password: str = PASSWORD, *, active: bool = True) -> int:
        with self.database.session() as session:
            row = User(username=username, password_hash=hash_password(password), role=role, active=active)
            session.add(row)
            session.flush()
            return row.id

    def token(self, user_id: int, scopes: list[str], name: str | None = None, **extra: Any) -> str:
        secret, digest = new_token(USER_PREFIX)
        with self.database.session() as session:
            session.add(
                ApiToken(
                    user_id=user_id,
                    name=name or uuid.uuid4().hex,
                    token_hash=digest,
                    scopes=scopes,
                    **extra,
                )
            )
        return secret

    def sensor(self, name: str) -> str:
        secret, digest = new_token(SENSOR_PREFIX)
        with self.database.session() as session:
            session.add(Sensor(name=name, credential_hash=digest))
        return secret

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def new_client(self) -> TestClient:
        """A second client (its own cookie jar) on the same app."""
        return TestClient(self.app, base_url=BASE_URL)

    def login(self, client: TestClient, username: str, password: str) -> str:
        """Log ``client`` in; returns its CSRF token."""
        response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        token: str = response.json()["csrf_token"]
        return token


def start_console(url: str, tmp: Path, **settings: Any) -> Iterator[Console]:
    """A console on ``url`` with one user and read/write + read-only tokens per role and a sensor."""
    options: dict[str, Any] = {"database_url": url, "data_dir": tmp, "login_rate": (5, 300.0)}
    options.update(settings)
    app = create_app(ConsoleSettings(**options))
    with TestClient(app, base_url=BASE_URL) as client:
        console = Console(app, client, app.state.database, app.state.first_admin_password or "")
        for role in ROLES:
            user_id = console.user(f"{role}-user", role)
            console.tokens[role] = console.token(user_id, ["read", "write"], "rw")
            console.read_tokens[role] = console.token(user_id, ["read"], "ro")
        console.sensor_token = console.sensor("sensor-1")
        yield console


@pytest.fixture(scope="session")
def pg_factory() -> Iterator[Callable[[], str]]:
    """Makes fresh, empty PostgreSQL databases (all dropped at the end of the test session); skips
    when no server answers."""
    import psycopg

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="test", autocommit=True, connect_timeout=3
        )

    try:
        connect().close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER}: {exc}")
    names: list[str] = []

    def new() -> str:
        name = f"fieldward_console_{uuid.uuid4().hex[:12]}"
        with connect() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"

    try:
        yield new
    finally:
        with connect() as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    """A fresh console on a SQLite file."""
    yield from start_console(f"sqlite:///{tmp_path / 'console.db'}", tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_console(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Console]:
    """A fresh console on each backend."""
    if request.param == "sqlite":
        yield from start_console(f"sqlite:///{tmp_path / 'console.db'}", tmp_path)
        return
    yield from start_console(request.getfixturevalue("pg_factory")(), tmp_path)


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fieldward demo --out DIR``: the analysed and assessed sample plant (a few seconds)."""
    from fieldward.cli import app

    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def demo_console(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, demo_folder: Path
) -> Iterator[Console]:
    """A console on each backend with the demo plant ingested as sensor ``plant``; shared by a module
    (tests must not change what others read)."""
    tmp = tmp_path_factory.mktemp("demo-console")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'console.db'}"
    else:
        url = request.getfixturevalue("pg_factory")()
    for console in start_console(url, tmp):
        report = ingest_folder(console.database, demo_folder, "plant")
        assert report.written["devices"] > 10
        yield console
