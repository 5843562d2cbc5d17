"""Shared state of several console processes on one database: the failed-login limit (rows of
``login_attempts``) and the background jobs (one holder of a :class:`JobLock` runs them)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fieldward.console.app import create_app
from fieldward.console.jobs import JobLock, RetentionJob
from fieldward.console.security import LoginLimiter, hash_password
from fieldward.console.settings import SETTINGS_FILE_ENV, ConsoleSettings
from fieldward.store.console_models import LoginAttempt
from fieldward.store.database import Database
from fieldward.store.models import AuditLog, User

from .conftest import BASE_URL, PASSWORD, Console, start_console
from .test_serve_workers import _free_port, _wait_up

LOGIN = "/api/v1/auth/login"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'console.db'}"
    factory = request.getfixturevalue("pg_factory")
    return str(factory())


@pytest.fixture
def two_consoles(url: str, tmp_path: Path) -> Iterator[tuple[Console, TestClient]]:
    """Two applications (as two worker processes build them) on one database."""
    for console in start_console(url, tmp_path, login_rate=(3, 300.0)):
        other = create_app(ConsoleSettings(database_url=url, data_dir=tmp_path, login_rate=(3, 300.0)))
        with TestClient(other, base_url=BASE_URL) as second:
            yield console, second


def test_two_apps_on_one_database_share_the_failed_login_limit(
    two_consoles: tuple[Console, TestClient],
) -> None:
    console, second = two_consoles
    first = console.new_client()
    bad = {"username": "analyst-user", "password": "wrong!"}
    assert first.post(LOGIN, json=bad).status_code == 401
    assert second.post(LOGIN, json=bad).status_code == 401
    assert first.post(LOGIN, json=bad).status_code == 401
    # three failures across the two apps: both refuse the fourth attempt, even with the right password
    for client in (second, first):
        refused = client.post(LOGIN, json={"username": "analyst-user", "password": PASSWORD})
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 300
    with console.database.session() as session:
        failed = session.scalars(select(AuditLog).where(AuditLog.action == "auth.login_failed")).all()
        stored = session.scalar(select(func.count()).select_from(LoginAttempt))
    assert len(failed) == 3
    assert stored == 3  # the refused attempts are not kept
    # another user from the same address is not affected; a success forgets that user's failures
    assert second.post(LOGIN, json={"username": "viewer-user", "password": "x"}).status_code == 401
    assert first.post(LOGIN, json={"username": "viewer-user", "password": PASSWORD}).status_code == 200
    with console.database.session() as session:
        assert session.scalar(select(func.count()).select_from(LoginAttempt)) == 3


def test_concurrent_attempts_never_get_past_the_limit(url: str) -> None:
    database = Database(url)
    database.upgrade()
    try:
        limiters = [LoginLimiter(4, 60.0, database=database) for _ in range(2)]

        def attempt(index: int) -> float:
            wait = limiters[index % 2].retry_after("Admin", "10.0.0.9")
            if wait == 0:
                limiters[index % 2].failed("Admin", "10.0.0.9")
            return wait

        with ThreadPoolExecutor(8) as pool:
            waits = list(pool.map(attempt, range(24)))
        admitted = sum(1 for w in waits if w == 0)
        assert 1 <= admitted <= 4  # a race may refuse more than needed, never admit more
        assert all(w == 0 or 1 <= w <= 60 for w in waits)
        # one at a time (the username is case-folded), the rest of the limit, and no more, gets through
        later = [limiters[i % 2].retry_after("ADMIN", "10.0.0.9") for i in range(6)]
        assert later[: 4 - admitted] == [0.0] * (4 - admitted)
        assert all(1 <= w <= 60 for w in later[4 - admitted :])
        # another client address has its own count
        assert limiters[1].retry_after("admin", "10.0.0.10") == 0
    finally:
        database.dispose()


def test_the_shared_window_slides_and_expired_rows_are_deleted(url: str) -> None:
    database = Database(url)
    database.upgrade()
    now = [1_000_000.0]
    try:
        a, b = (LoginLimiter(2, 60.0, clock=lambda: now[0], database=database) for _ in range(2))
        assert a.retry_after("u", "c") == 0
        a.failed("u", "c")
        now[0] += 10
        assert b.retry_after("u", "c") == 0
        b.failed("u", "c")
        now[0] += 40
        assert a.retry_after("u", "c") == pytest.approx(10.0)  # the first failure leaves at +60
        now[0] += 10.5
        assert b.retry_after("u", "c") == 0  # allowed, and recorded
        now[0] += 100  # every row expired: the next attempt deletes them
        assert a.retry_after("v", "c") == 0
        with database.session() as session:
            assert session.scalar(select(func.count()).select_from(LoginAttempt)) == 1
    finally:
        database.dispose()


def test_one_job_lock_holder_per_database(url: str) -> None:
    database, other = Database(url), Database(url)
    database.upgrade()
    try:
        first, second = JobLock(database.engine, "retention"), JobLock(other.engine, "retention")
        elsewhere = JobLock(other.engine, "broker-sync")
        assert first.acquire()
        assert first.acquire()  # the holder keeps it round after round
        assert not second.acquire()
        assert elsewhere.acquire()  # another job has its own lock
        first.release()
        assert second.acquire()
        assert not first.acquire()
        second.release()
        elsewhere.release()
    finally:
        database.dispose()
        other.dispose()


def test_two_retention_runners_on_one_database_run_one_at_a_time(url: str, tmp_path: Path) -> None:
    database, other = Database(url), Database(url)
    database.upgrade()
    settings = ConsoleSettings(database_url=url, data_dir=tmp_path)
    clock = lambda: dt.datetime(2026, 12, 7, tzinfo=dt.UTC)  # noqa: E731
    first, second = (
        RetentionJob(
            settings, db.sessionmaker, interval=3600, clock=clock, lock=JobLock(db.engine, "retention")
        )
        for db in (database, other)
    )
    try:
        for _ in range(3):
            assert first.run_round()
            assert not second.run_round()
        assert (first.runs, first.skipped, second.runs, second.skipped) == (3, 0, 0, 3)
        # the threads: the holder stops (as a worker process does), the other takes over
        first.start()
        second.start()
        first.stop()
        assert second.run_round()
        assert second.runs >= 1
        assert second.last_error is None
        second.stop()
    finally:
        first.stop()
        second.stop()
        database.dispose()
        other.dispose()


def test_fieldward_serve_with_two_workers_counts_failed_logins_once(url: str, tmp_path: Path) -> None:
    database = Database(url)
    database.upgrade()
    with database.session() as session:
        session.add(User(username="ana", password_hash=hash_password(PASSWORD), role="analyst"))
    port = _free_port()
    env = {**os.environ, "FIELDWARD_HOME": str(tmp_path / "home")}
    env.pop(SETTINGS_FILE_ENV, None)
    command = [sys.executable, "-m", "fieldward.cli", "serve", "--db", url, "--port", str(port)]
    command += ["--data-dir", str(tmp_path / "data"), "--insecure-cookies", "--no-ui", "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_up(port, process)
        codes = []
        for _ in range(12):  # fresh connections: both workers get some (default login_rate: 5 per 300 s)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as fresh:
                answer = fresh.post(LOGIN, json={"username": "ana", "password": "wrong!"})
                codes.append(answer.status_code)
        assert codes == [401] * 5 + [429] * 7
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
        database.dispose()
    assert err.count("Started server process") == 2, err
