"""``fieldward serve --trust/--no-trust --trust-config FILE`` (docs/trust/console.md): the settings the
flags produce, their errors as one line, and real ``fieldward serve`` processes: one turned on by the
flag alone (no ``FIELDWARD_TRUST``) serving EST over TLS from the FieldWard CA, one where
``--no-trust`` wins over ``FIELDWARD_TRUST=1``."""

from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from fieldward.console.settings import TRUST_ENV
from fieldward.console.trust_hooks import serve_overrides
from fieldward.trust.errors import TrustError
from tests.test_cli import run_cli
from tests.test_cli_console import free_port


def _config(folder: Path, **extra: object) -> Path:
    secret = folder / "ca-passphrase"
    secret.write_text(secrets.token_urlsafe(24))
    secret.chmod(0o600)
    path = folder / "trust.yaml"
    path.write_text(yaml.safe_dump({"passphrase_file": "ca-passphrase", **extra}))
    return path


def test_flags_give_console_settings(tmp_path: Path) -> None:
    assert serve_overrides(None, None) == {}
    assert serve_overrides(False, None) == {"trust": False}
    assert serve_overrides(True, None) == {"trust": True}
    config = _config(
        tmp_path, public_url="https://console.plant:8443", broker_port=8883, quarantine_ends=["src"]
    )
    values = serve_overrides(None, config)
    assert values == {
        "trust": True,  # --trust-config implies --trust
        "trust_passphrase_file": str((tmp_path / "ca-passphrase").resolve()),  # relative to the file
        "trust_public_url": "https://console.plant:8443",
        "trust_broker_port": 8883,
        "trust_quarantine_ends": ["src"],
    }
    assert serve_overrides(False, config)["trust"] is False  # --no-trust wins


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("passphrase: x\n", "unknown key(s) passphrase"),
        ("broker_port: ninety\n", "broker_port"),
        ("device_validity_hours: 0\n", "device_validity_hours"),
        ("- a list\n", "expected a mapping"),
        ("key: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_trust_settings_are_named(tmp_path: Path, document: str, message: str) -> None:
    config = tmp_path / "trust.yaml"
    config.write_text(document)
    with pytest.raises(TrustError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        serve_overrides(None, config)
    with pytest.raises(TrustError, match="cannot read"):
        serve_overrides(None, tmp_path / "missing.yaml")


def test_serve_with_a_bad_trust_config_fails_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "trust.yaml"
    config.write_text("colour: blue\n")
    done = run_cli("serve", "--data-dir", str(tmp_path / "home"), "--trust-config", str(config))
    assert done.returncode != 0
    assert "unknown key(s) colour" in done.stderr
    assert "Traceback" not in done.stderr


@contextmanager
def _serve(home: Path, *args: str, env_extra: dict[str, str]) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = free_port()
    env = dict(os.environ, FIELDWARD_HOME=str(home), COLUMNS="120")
    for name in (*TRUST_ENV, "FIELDWARD_DATABASE_URL", "FIELDWARD_CA_PASSPHRASE"):
        env.pop(name, None)
    env.update(env_extra)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fieldward.cli", "serve", "--port", str(port), "--no-ui", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait(get: Callable[[], httpx.Response], proc: subprocess.Popen[str]) -> httpx.Response:
    deadline = time.monotonic() + 60
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            assert proc.stderr is not None
            pytest.fail(f"fieldward serve exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            return get()
        except httpx.TransportError as exc:
            last = exc
            time.sleep(0.2)
    pytest.fail(f"fieldward serve did not answer: {last!r}")


def test_serve_trust_flag_mounts_the_device_plane_over_tls(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = _config(tmp_path)
    with _serve(home, "--trust-config", str(config), env_extra={}) as (port, proc):
        root = home / "trust" / "root-ca.pem"

        def get() -> httpx.Response:
            if not root.is_file():
                raise httpx.ConnectError("the CA is not created yet")
            with httpx.Client(verify=ssl.create_default_context(cafile=str(root)), timeout=5) as client:
                return client.get(f"https://127.0.0.1:{port}/.well-known/est/cacerts")

        response = _wait(get, proc)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/pkcs7-mime")
        assert (home / "trust" / "console-tls").is_dir()


def test_no_trust_wins_over_the_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"FIELDWARD_TRUST": "1", "FIELDWARD_CA_PASSPHRASE": secrets.token_urlsafe(24)}
    with _serve(home, "--no-trust", "--insecure-cookies", env_extra=env) as (port, proc):

        def get() -> httpx.Response:
            with httpx.Client(timeout=5) as client:
                return client.get(f"http://127.0.0.1:{port}/.well-known/est/cacerts")

        response = _wait(get, proc)
        assert response.status_code == 404  # plain HTTP, no EST
        assert not (home / "trust").exists()
