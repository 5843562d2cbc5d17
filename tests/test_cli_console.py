"""The console from the command line: `fieldward serve` on a free port (a real process), the first
admin's password printed once, a sensor registered through the API, and `fieldward analyze --to URL`
pushing a demo capture's results that then appear in the console's inventory."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_cli import run_cli


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A console served by `fieldward serve` (SQLite in a private data folder); yields its URL, the
    first admin's password and the data folder."""
    home = tmp_path_factory.mktemp("console-home")
    port = free_port()
    env = dict(os.environ, FIELDWARD_HOME=str(home), COLUMNS="120")
    env.pop("FIELDWARD_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fieldward.cli", "serve", "--port", str(port), "--insecure-cookies"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        password = None
        assert proc.stdout is not None
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            found = re.match(r"^\s{4}(\S+)\s*$", line)
            if found:
                password = found.group(1)
                break
            if proc.poll() is not None:
                break
        assert password, f"no first-admin password printed: {lines!r}"
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/v1/auth/me", timeout=2).status_code in (401, 200):
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url, password, home
    finally:
        proc.terminate()
        try:
            _, stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        assert password is None or password not in stderr  # never logged


def admin(url: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    response = client.post("/api/v1/auth/login", json={"username": "admin", "password": password})
    assert response.status_code == 200, response.text
    client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
    return client


def test_analyze_to_url_pushes_results_into_the_console(
    console: tuple[str, str, Path], tmp_path: Path
) -> None:
    url, password, _ = console
    client = admin(url, password)
    try:
        created = client.post("/api/v1/sensors", json={"name": "line-1"})
        assert created.status_code == 201, created.text
        token_file = tmp_path / "sensor.token"
        token_file.write_text(created.json()["token"] + "\n")
        token_file.chmod(0o600)
        capture = tmp_path / "plant.pcap"
        proc = run_cli("generate", "--out", str(capture), "--devices", "16", "--minutes", "1", "--seed", "7")
        assert proc.returncode == 0, proc.stderr
        out = tmp_path / "out"
        proc = run_cli(
            "analyze",
            str(capture),
            "--out",
            str(out),
            "--to",
            url,
            "--token-file",
            str(token_file),
            "--spool",
            str(tmp_path / "spool"),
            "--quiet",
        )
        assert proc.returncode == 0, proc.stderr
        local = json.loads((out / "devices.json").read_text())["devices"]
        listed = client.get("/api/v1/devices", params={"limit": 500})
        assert listed.status_code == 200, listed.text
        assert listed.json()["total"] == len(local)
        keys = {d["device_key"] for d in listed.json()["items"]}
        assert {d["id"] for d in local} <= keys
        # pushing the same folder again adds nothing (idempotent batches)
        again = run_cli(
            "push", str(out), "--to", url, "--token-file", str(token_file), "--spool", str(tmp_path / "spool")
        )
        assert again.returncode == 0, again.stderr
        assert client.get("/api/v1/devices").json()["total"] == len(local)
    finally:
        client.close()


def test_push_with_a_wrong_token_fails_with_one_line(console: tuple[str, str, Path], tmp_path: Path) -> None:
    url, _, _ = console
    token_file = tmp_path / "bad.token"
    token_file.write_text("fws_not-a-real-token\n")
    token_file.chmod(0o600)
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "devices.json").write_text('{"summary": {}, "devices": [{"id": "ip:10.0.0.1"}]}')
    proc = run_cli(
        "push", str(folder), "--to", url, "--token-file", str(token_file), "--spool", str(tmp_path / "sp")
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "fws_not-a-real-token" not in proc.stderr + proc.stdout


def test_the_first_admin_password_is_printed_only_once(console: tuple[str, str, Path]) -> None:
    _, password, home = console
    proc = subprocess.run(
        [sys.executable, "-c", "from fieldward.store.database import Database; print('ok')"],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, FIELDWARD_HOME=str(home)),
    )
    assert proc.returncode == 0
    database = (home / "fieldward.db").read_bytes()
    assert password.encode() not in database  # only its argon2 hash is stored
