"""Authentication and account management of the console: first admin, login/logout with the session
cookie and CSRF, bearer tokens (scopes, expiry, revocation), throttling, users, tokens, audit rows,
security headers, body limits, and ``serve()`` printing the first password once."""

from __future__ import annotations

import datetime as dt
import logging
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fieldward.console.app import SECURITY_HEADERS, create_app
from fieldward.console.security import LoginLimiter
from fieldward.console.settings import ConsoleSettings
from fieldward.store.models import ApiToken, AuditLog, User

from .conftest import BASE_URL, PASSWORD, Console

LOGIN = "/api/v1/auth/login"


def _actions(console: Console) -> list[str]:
    with console.database.session() as session:
        return list(session.scalars(select(AuditLog.action).order_by(AuditLog.id)))


def test_first_start_creates_one_admin_whose_password_is_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = ConsoleSettings(database_url=f"sqlite:///{tmp_path / 'c.db'}", data_dir=tmp_path)
    app = create_app(settings)
    with TestClient(app, base_url=BASE_URL) as client:
        password = app.state.first_admin_password
        assert isinstance(password, str)
        assert len(password) >= 16
        response = client.post(LOGIN, json={"username": "admin", "password": password})
        assert response.status_code == 200
        assert response.json()["user"]["role"] == "admin"
    assert password not in caplog.text
    again = create_app(settings)
    with TestClient(again, base_url=BASE_URL):
        assert again.state.first_admin_password is None
        with again.state.database.session() as session:
            assert [u.username for u in session.scalars(select(User))] == ["admin"]
            stored = session.scalar(select(User.password_hash))
            assert stored is not None
            assert stored.startswith("$argon2")
            assert password not in stored


def test_login_sets_a_strict_httponly_secure_cookie_and_returns_csrf(console: Console) -> None:
    client = console.new_client()
    response = client.post(LOGIN, json={"username": "analyst-user", "password": PASSWORD})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("fieldward_session=fwt_")
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert flag.lower() in cookie.lower(), cookie
    body = response.json()
    assert re.fullmatch(r"[0-9a-f]{64}", body["csrf_token"])
    assert body["user"] == {
        "id": body["user"]["id"],
        "username": "analyst-user",
        "role": "analyst",
        "via": "session",
        "scopes": ["read", "write", "session"],
    }
    me = client.get("/api/v1/auth/me")
    assert me.status_code == 200
    assert me.json()["username"] == "analyst-user"
    # the session secret is stored hashed only
    secret = client.cookies["fieldward_session"]
    with console.database.session() as session:
        hashes = list(session.scalars(select(ApiToken.token_hash)))
    assert all(secret not in h for h in hashes)
    assert any(h.startswith("sha256:") for h in hashes)


def test_a_bad_login_says_the_same_thing_for_unknown_users_and_wrong_passwords(console: Console) -> None:
    console.user("sleeper", "viewer", active=False)
    answers = []
    for username, password in (
        ("viewer-user", "wrong password!"),
        ("nobody", PASSWORD),
        ("sleeper", PASSWORD),
    ):
        response = console.new_client().post(LOGIN, json={"username": username, "password": password})
        answers.append((response.status_code, response.json()))
    assert answers == [(401, {"detail": "invalid username or password"})] * 3
    assert _actions(console).count("auth.login_failed") == 3


def test_cookie_writes_need_the_csrf_header_bearer_writes_do_not(console: Console) -> None:
    client = console.new_client()
    csrf = console.login(client, "admin-user", PASSWORD)
    body = {"name": "plant-b"}
    assert client.post("/api/v1/sensors", json=body).status_code == 403
    assert client.post("/api/v1/sensors", json=body, headers={"X-CSRF-Token": "0" * 64}).status_code == 403
    assert client.post("/api/v1/sensors", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201
    # reads need no CSRF
    assert client.get("/api/v1/sensors").status_code == 200
    bearer = console.new_client()
    created = bearer.post(
        "/api/v1/sensors", json={"name": "plant-c"}, headers=console.bearer(console.tokens["admin"])
    )
    assert created.status_code == 201
    assert created.json()["token"].startswith("fws_")
    # a CSRF token of one session does not open another
    other = console.new_client()
    console.login(other, "admin-user", PASSWORD)
    assert (
        other.post("/api/v1/sensors", json={"name": "x"}, headers={"X-CSRF-Token": csrf}).status_code == 403
    )


def test_read_only_tokens_read_but_never_write(console: Console) -> None:
    headers = console.bearer(console.read_tokens["admin"])
    client = console.new_client()
    assert client.get("/api/v1/users", headers=headers).status_code == 200
    refused = client.post("/api/v1/sensors", json={"name": "nope"}, headers=headers)
    assert refused.status_code == 403
    assert "read-only" in refused.json()["detail"]


def test_expired_revoked_unknown_and_misplaced_credentials_are_refused(console: Console) -> None:
    client = console.new_client()
    with console.database.session() as session:
        user_id = session.scalar(select(User.id).where(User.username == "viewer-user"))
    assert user_id is not None
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    expired = console.token(user_id, ["read"], "old", expires=past)
    assert client.get("/api/v1/auth/me", headers=console.bearer(expired)).status_code == 401
    assert client.get("/api/v1/auth/me", headers=console.bearer("fwt_" + "A" * 43)).status_code == 401
    assert client.get("/api/v1/auth/me", headers=console.bearer(console.sensor_token)).status_code == 401
    assert client.get("/api/v1/auth/me", headers={"Authorization": "Basic Zm9vOmJhcg=="}).status_code == 401
    anonymous = client.get("/api/v1/auth/me")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    # revoke through the API: the token stops working at once
    token = client.post(
        "/api/v1/tokens",
        json={"name": "ci", "scopes": ["read"]},
        headers=console.bearer(console.tokens["viewer"]),
    ).json()
    assert client.get("/api/v1/auth/me", headers=console.bearer(token["token"])).status_code == 200
    revoked = client.delete(f"/api/v1/tokens/{token['id']}", headers=console.bearer(console.tokens["viewer"]))
    assert revoked.status_code == 200
    assert revoked.json()["revoked"] is not None
    assert client.get("/api/v1/auth/me", headers=console.bearer(token["token"])).status_code == 401
    # a session secret is not a bearer token, a bearer token is not a session
    browser = console.new_client()
    console.login(browser, "viewer-user", PASSWORD)
    secret = browser.cookies["fieldward_session"]
    assert client.get("/api/v1/auth/me", headers=console.bearer(secret)).status_code == 401
    disguised = console.new_client()
    disguised.cookies.set("fieldward_session", console.tokens["viewer"])
    assert disguised.get("/api/v1/auth/me").status_code == 401


def test_logout_ends_the_session_for_good(console: Console) -> None:
    client = console.new_client()
    csrf = console.login(client, "viewer-user", PASSWORD)
    secret = client.cookies["fieldward_session"]
    assert client.post("/api/v1/auth/logout").status_code == 403  # CSRF applies to logout too
    response = client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200
    assert (
        'fieldward_session=""' in response.headers["set-cookie"]
        or "Max-Age=0" in response.headers["set-cookie"]
    )
    replay = console.new_client()
    replay.cookies.set("fieldward_session", secret)
    assert replay.get("/api/v1/auth/me").status_code == 401
    assert {"auth.login", "auth.logout"} <= set(_actions(console))


def test_failed_logins_are_throttled_per_user_and_address(console: Console) -> None:
    client = console.new_client()
    for _ in range(5):
        assert client.post(LOGIN, json={"username": "analyst-user", "password": "wrong!"}).status_code == 401
    throttled = client.post(LOGIN, json={"username": "analyst-user", "password": PASSWORD})
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= 300
    # another user from the same address is not affected
    assert client.post(LOGIN, json={"username": "viewer-user", "password": PASSWORD}).status_code == 200


def test_throttling_ends_after_the_window(console: Console) -> None:
    now = [1000.0]
    console.app.state.login_limiter = LoginLimiter(2, 60.0, clock=lambda: now[0])
    client = console.new_client()
    for _ in range(2):
        assert client.post(LOGIN, json={"username": "admin-user", "password": "bad"}).status_code == 401
    now[0] += 59.0
    assert client.post(LOGIN, json={"username": "admin-user", "password": PASSWORD}).status_code == 429
    now[0] += 1.5  # the first failure left the window
    assert client.post(LOGIN, json={"username": "admin-user", "password": PASSWORD}).status_code == 200
    # a success forgets the failures
    assert client.post(LOGIN, json={"username": "admin-user", "password": "bad"}).status_code == 401
    assert client.post(LOGIN, json={"username": "admin-user", "password": PASSWORD}).status_code == 200


def test_security_headers_on_every_answer(console: Console) -> None:
    client = console.new_client()
    api = [
        client.get("/api/v1/auth/me"),
        client.get("/api/v1/devices/1", headers=console.bearer(console.tokens["viewer"])),
        client.get("/api/v1/openapi.json"),
        client.get("/api/v1/nowhere"),
        client.post("/api/v1/auth/login", content=b"\xff"),
    ]
    for response in api:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
        assert response.headers["cache-control"] == "no-store"
    for response in [*api, client.get("/"), client.get("/devices/3")]:  # the web UI sets its own CSP
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"


def test_request_bodies_are_capped(tmp_path: Path) -> None:
    settings = ConsoleSettings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}", max_request_bytes=2048, max_ingest_bytes=4096
    )
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        big = {"username": "x" * 3000, "password": "y"}
        assert client.post(LOGIN, json=big).status_code == 413

        def chunks() -> object:
            yield b'{"username": "'
            yield b"x" * 3000
            yield b'", "password": "y"}'

        assert (
            client.post(LOGIN, content=chunks(), headers={"content-type": "application/json"}).status_code
            == 413
        )
        assert client.post(LOGIN, json={"username": "a", "password": "b"}).status_code == 401
        push = client.post("/api/v1/ingest/devices", content=b"[" + b" " * 5000 + b"]")
        assert push.status_code == 413


def test_users_lifecycle_and_last_admin_protection(console: Console) -> None:
    admin = console.bearer(console.tokens["admin"])
    client = console.new_client()
    created = client.post(
        "/api/v1/users", json={"username": "olga", "password": PASSWORD, "role": "viewer"}, headers=admin
    )
    assert created.status_code == 201
    olga = created.json()
    assert olga["role"] == "viewer"
    assert "password" not in olga
    assert "password_hash" not in olga
    assert (
        client.post(
            "/api/v1/users", json={"username": "olga", "password": PASSWORD}, headers=admin
        ).status_code
        == 409
    )
    assert (
        client.post(
            "/api/v1/users", json={"username": "weak", "password": "short"}, headers=admin
        ).status_code
        == 422
    )
    listed = client.get("/api/v1/users", params={"limit": 2}, headers=admin).json()
    assert listed["total"] == 5
    assert len(listed["items"]) == 2
    assert listed["limit"] == 2
    # the user logs in; a password reset ends that session
    browser = console.new_client()
    console.login(browser, "olga", PASSWORD)
    updated = client.patch(
        f"/api/v1/users/{olga['id']}",
        json={"role": "analyst", "password": "another long password"},
        headers=admin,
    )
    assert updated.status_code == 200
    assert updated.json()["role"] == "analyst"
    assert browser.get("/api/v1/auth/me").status_code == 401
    console.login(browser, "olga", "another long password")
    # deactivating locks the user out everywhere
    assert (
        client.patch(f"/api/v1/users/{olga['id']}", json={"active": False}, headers=admin).status_code == 200
    )
    assert browser.get("/api/v1/auth/me").status_code == 401
    # the last active admin: admin-user and "admin" exist; demote one, then the other is protected
    users = {u["username"]: u["id"] for u in client.get("/api/v1/users", headers=admin).json()["items"]}
    assert (
        client.patch(f"/api/v1/users/{users['admin']}", json={"role": "viewer"}, headers=admin).status_code
        == 200
    )
    assert (
        client.patch(
            f"/api/v1/users/{users['admin-user']}", json={"active": False}, headers=admin
        ).status_code
        == 409
    )
    assert client.delete(f"/api/v1/users/{users['admin-user']}", headers=admin).status_code == 409
    assert client.delete(f"/api/v1/users/{olga['id']}", headers=admin).status_code == 200
    assert client.get(f"/api/v1/users/{olga['id']}", headers=admin).status_code == 404
    assert client.patch("/api/v1/users/1", json={"role": "root"}, headers=admin).status_code == 422
    assert client.patch("/api/v1/users/1", json={"colour": "red"}, headers=admin).status_code == 422
    actions = _actions(console)
    assert actions.count("user.create") >= 2
    assert "user.update" in actions
    assert "user.delete" in actions


def test_change_own_password(console: Console) -> None:
    client = console.new_client()
    csrf = console.login(client, "viewer-user", PASSWORD)
    other = console.new_client()
    console.login(other, "viewer-user", PASSWORD)
    headers = {"X-CSRF-Token": csrf}
    wrong = client.post(
        "/api/v1/auth/password", json={"current_password": "nope", "new_password": "n" * 20}, headers=headers
    )
    assert wrong.status_code == 403
    done = client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "n" * 20},
        headers=headers,
    )
    assert done.status_code == 200
    assert client.get("/api/v1/auth/me").status_code == 200  # this session goes on
    assert other.get("/api/v1/auth/me").status_code == 401  # the other one ended
    assert (
        console.new_client().post(LOGIN, json={"username": "viewer-user", "password": "n" * 20}).status_code
        == 200
    )
    assert "auth.password_changed" in _actions(console)


def test_tokens_are_shown_once_listed_without_secrets_and_revocable_by_admins(console: Console) -> None:
    client = console.new_client()
    analyst = console.bearer(console.tokens["analyst"])
    created = client.post(
        "/api/v1/tokens",
        json={"name": "script", "scopes": ["read", "write"], "expires_in_days": 7},
        headers=analyst,
    )
    assert created.status_code == 201
    token = created.json()
    assert token["token"].startswith("fwt_")
    assert token["scopes"] == ["read", "write"]
    expires = dt.datetime.fromisoformat(token["expires"])
    assert dt.timedelta(days=6) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=7)
    assert client.post("/api/v1/tokens", json={"name": "script"}, headers=analyst).status_code == 409
    assert (
        client.post("/api/v1/tokens", json={"name": "x", "scopes": ["root"]}, headers=analyst).status_code
        == 422
    )
    assert client.post("/api/v1/tokens", json={"name": "session 1"}, headers=analyst).status_code == 409
    listed = client.get("/api/v1/tokens", headers=analyst).json()
    assert {t["name"] for t in listed["items"]} == {"rw", "ro", "script"}
    assert all("token" not in t and "token_hash" not in t for t in listed["items"])
    # browser sessions are not listed as tokens
    console.login(console.new_client(), "analyst-user", PASSWORD)
    assert client.get("/api/v1/tokens", headers=analyst).json()["total"] == 3
    # another user cannot see or revoke it; an admin can
    viewer = console.bearer(console.tokens["viewer"])
    assert client.delete(f"/api/v1/tokens/{token['id']}", headers=viewer).status_code == 404
    assert client.get("/api/v1/tokens", params={"all": "true"}, headers=viewer).status_code == 403
    everyone = client.get(
        "/api/v1/tokens",
        params={"all": "true", "limit": 500},
        headers=console.bearer(console.tokens["admin"]),
    )
    assert token["id"] in {t["id"] for t in everyone.json()["items"]}
    revoked = client.delete(f"/api/v1/tokens/{token['id']}", headers=console.bearer(console.tokens["admin"]))
    assert revoked.status_code == 200
    assert client.get("/api/v1/auth/me", headers=console.bearer(token["token"])).status_code == 401
    actions = _actions(console)
    assert "token.create" in actions
    assert "token.revoke" in actions


def test_sensors_register_rotate_and_delete(console: Console) -> None:
    client = console.new_client()
    admin = console.bearer(console.tokens["admin"])
    created = client.post("/api/v1/sensors", json={"name": "plant-b", "description": "line 2"}, headers=admin)
    assert created.status_code == 201
    sensor = created.json()
    assert client.post("/api/v1/sensors", json={"name": "plant-b"}, headers=admin).status_code == 409
    listed = client.get("/api/v1/sensors", headers=console.bearer(console.tokens["viewer"])).json()
    assert {s["name"] for s in listed["items"]} == {"sensor-1", "plant-b"}
    assert all("token" not in s for s in listed["items"])
    rotated = client.post(f"/api/v1/sensors/{sensor['id']}/token", headers=admin).json()
    assert rotated["token"] != sensor["token"]
    push = {"batch_id": "5b0e4a52-36a4-4ac0-8a3f-1b1d2f0f6a10", "records": []}
    assert (
        client.post("/api/v1/ingest/devices", json=push, headers=console.bearer(sensor["token"])).status_code
        == 401
    )
    assert (
        client.post("/api/v1/ingest/devices", json=push, headers=console.bearer(rotated["token"])).status_code
        == 200
    )
    assert client.delete(f"/api/v1/sensors/{sensor['id']}", headers=admin).status_code == 200
    assert client.get(f"/api/v1/sensors/{sensor['id']}", headers=admin).status_code == 404
    actions = _actions(console)
    assert {"sensor.create", "sensor.rotate_token", "sensor.delete", "ingest.batch"} <= set(actions)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start_server(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    code = (
        "from pathlib import Path\n"
        "from fieldward.console.serve import serve\n"
        "from fieldward.console.settings import ConsoleSettings\n"
        f"settings = ConsoleSettings(data_dir=Path({str(tmp_path)!r}), secure_cookies=False)\n"
        f"serve(settings, '127.0.0.1', {port})\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_up(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("the console did not start")


def test_serve_prints_the_first_password_once_and_never_logs_it(tmp_path: Path) -> None:
    outputs = []
    for _ in range(2):
        port = _free_port()
        process = _start_server(tmp_path, port)
        try:
            _wait_up(port)
        finally:
            process.terminate()
            out, err = process.communicate(timeout=20)
        outputs.append((out, err))
    (first_out, first_err), (second_out, second_err) = outputs
    match = re.search(r"^    (\S{16,})$", first_out, re.MULTILINE)
    assert match is not None, first_out
    assert "administrator 'admin'" in first_out
    password = match.group(1)
    assert password not in first_err
    assert password not in second_out + second_err
    assert "administrator" not in second_out
    # the printed password is the admin's
    port = _free_port()
    process = _start_server(tmp_path, port)
    try:
        _wait_up(port)
        response = httpx.post(
            f"http://127.0.0.1:{port}{LOGIN}", json={"username": "admin", "password": password}, timeout=10
        )
        assert response.status_code == 200
    finally:
        process.terminate()
        process.communicate(timeout=20)


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "text/plain", "application/json; charset=latin-1"]
)
def test_bodies_that_are_not_text_are_4xx(console: Console, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    client = console.new_client()
    for url, auth in (
        (LOGIN, {}),
        ("/api/v1/users", console.bearer(console.tokens["admin"])),
        ("/api/v1/ingest/devices", console.bearer(console.sensor_token)),
    ):
        response = client.post(url, content=b"\xff\xfe\x00{", headers={**headers, **auth})
        assert 400 <= response.status_code < 500, (url, response.status_code, response.text)
