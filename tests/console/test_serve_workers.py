"""``fieldward serve --workers N``: several uvicorn worker processes, each with the parent's settings
(handed over in a private file, device plane included), serving logins, list pages and sensor pushes
against one PostgreSQL database."""

from __future__ import annotations

import os
import re
import secrets
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from fieldward.console.security import SENSOR_PREFIX, hash_password, new_token
from fieldward.console.serve import worker_settings_file
from fieldward.console.settings import SETTINGS_FILE_ENV, ConsoleSettings
from fieldward.store.database import Database
from fieldward.store.models import Sensor, User

from .conftest import PASSWORD


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_up(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the console exited with {process.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise AssertionError("the console did not start")


def test_worker_settings_round_trip_through_a_private_file(tmp_path: Path) -> None:
    settings = ConsoleSettings(
        database_url="postgresql+psycopg://u:secret@db/x",
        data_dir=tmp_path,
        secure_cookies=False,
        ui=False,
        login_rate=(3, 60.0),
        trust=True,
        trust_policy_file=tmp_path / "policy.yaml",
        trust_public_url="https://console.example",
        trust_quarantine_ends=("dst",),
        trust_broker_port=8883,
    )
    assert os.environ.get(SETTINGS_FILE_ENV) is None
    with worker_settings_file(settings) as path:
        assert os.environ[SETTINGS_FILE_ENV] == str(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert ConsoleSettings.load() == settings
    assert not path.exists()
    assert os.environ.get(SETTINGS_FILE_ENV) is None
    assert ConsoleSettings.load() == ConsoleSettings.from_env()


def test_serve_with_two_workers_logs_in_lists_and_ingests(
    pg_factory: Callable[[], str], tmp_path: Path
) -> None:
    url = pg_factory()
    database = Database(url)
    database.upgrade()
    sensor_secret, digest = new_token(SENSOR_PREFIX)
    with database.session() as session:
        session.add(User(username="ana", password_hash=hash_password(PASSWORD), role="analyst"))
        session.add(Sensor(name="plant-w", credential_hash=digest))
    port = _free_port()
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = {**os.environ, "FIELDWARD_HOME": str(tmp_path / "home"), "TMPDIR": str(private_tmp)}
    env.pop(SETTINGS_FILE_ENV, None)
    # The database URL goes on the command line here; the workers get it from the settings file only.
    command = [sys.executable, "-m", "fieldward.cli", "serve", "--db", url, "--port", str(port)]
    command += ["--data-dir", str(tmp_path / "data"), "--insecure-cookies", "--no-ui", "--workers", "2"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _wait_up(port, process)
        base = f"http://127.0.0.1:{port}"
        sensor = {"Authorization": f"Bearer {sensor_secret}"}
        records = [
            {"id": f"dev-{i}", "ips": [f"10.9.0.{i}"], "mac": f"02:00:00:00:00:{i:02x}", "vendor": "Acme"}
            for i in range(1, 41)
        ]
        (settings_file,) = private_tmp.glob("fieldward-console-*.json")  # written for the workers
        assert stat.S_IMODE(settings_file.stat().st_mode) == 0o600
        with httpx.Client(base_url=base, timeout=20) as client:
            pushed = client.post(
                "/api/v1/ingest/devices",
                json={"batch_id": str(uuid.uuid4()), "records": records},
                headers=sensor,
            )
            assert pushed.status_code == 200, pushed.text
            assert pushed.json()["status"] == "applied"
            login = client.post("/api/v1/auth/login", json={"username": "ana", "password": PASSWORD})
            assert login.status_code == 200, login.text
            cookie = login.headers["set-cookie"]
            assert "secure" not in cookie.lower()  # --insecure-cookies reached the worker
            # many requests over fresh connections: both workers answer, with the same state
            for _ in range(12):
                with httpx.Client(base_url=base, timeout=20, cookies=client.cookies) as fresh:
                    devices = fresh.get("/api/v1/devices", params={"search": "10.9.0."})
                    assert devices.status_code == 200, devices.text
                    assert devices.json()["total"] == len(records)
                    alerts = fresh.get("/api/v1/alerts")
                    assert alerts.status_code == 200, alerts.text
                    assert fresh.get("/").status_code == 404  # --no-ui reached the worker
    finally:
        process.terminate()
        out, err = process.communicate(timeout=60)
        database.dispose()
    workers = set(re.findall(r"Started server process \[(\d+)\]", err))
    assert len(workers) == 2, err
    assert url not in out + err
    assert not list(private_tmp.glob("fieldward-console-*"))  # the settings file is gone


def test_workers_must_be_positive(tmp_path: Path) -> None:
    from fieldward.console.serve import serve

    with pytest.raises(ValueError, match="at least 1"):
        serve(ConsoleSettings(data_dir=tmp_path), workers=0)


def test_serve_with_two_workers_and_the_device_plane(pg_factory: Callable[[], str], tmp_path: Path) -> None:
    """``--trust-config`` reaches every worker: each serves TLS with the FieldWard CA's console
    certificate and mounts the EST endpoints, the CA unlocked from the passphrase file."""
    url = pg_factory()
    passphrase = tmp_path / "ca-passphrase"
    handle = os.open(passphrase, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "w") as stream:
        stream.write(secrets.token_urlsafe(24))
    config = tmp_path / "trust.yaml"
    config.write_text(
        f"passphrase_file: {passphrase}\npublic_url: https://console.example\n", encoding="utf-8"
    )
    port = _free_port()
    env = {**os.environ, "FIELDWARD_HOME": str(tmp_path / "home")}
    for name in (SETTINGS_FILE_ENV, "FIELDWARD_CA_PASSPHRASE", "FIELDWARD_TRUST"):
        env.pop(name, None)
    data = tmp_path / "data"
    command = [sys.executable, "-m", "fieldward.cli", "serve", "--db", url, "--port", str(port)]
    command += ["--data-dir", str(data), "--trust-config", str(config), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 90
        answered: list[int] = []
        while len(answered) < 8 and time.monotonic() < deadline:
            assert process.poll() is None, "the console exited"
            try:  # fresh connections: both workers get some
                with httpx.Client(verify=False, timeout=10) as client:  # its certificate: checked below
                    answered.append(
                        client.get(f"https://127.0.0.1:{port}/.well-known/est/cacerts").status_code
                    )
            except httpx.HTTPError:
                time.sleep(0.3)
        assert answered == [200] * 8
        served = x509.load_pem_x509_certificate((data / "trust" / "console-tls" / "server.pem").read_bytes())
        assert served.issuer.rfc4514_string().startswith("CN=")
        assert "console-" in served.subject.rfc4514_string()
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
    assert len(set(re.findall(r"Started server process \[(\d+)\]", err))) == 2, err
    assert passphrase.read_text() not in err
