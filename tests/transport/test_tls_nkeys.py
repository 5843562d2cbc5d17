"""The JetStream transport over TLS and with NATS's key-based authentication, against a real
nats-server configured by the test:

- TLS (certificates made here with ``cryptography``): a sensor and a worker that trust the test CA
  (``--ca-file``) deliver everything; a sensor that does not trust it delivers nothing and keeps its
  batches in the spool; a plain-text client is refused by the TLS-only server;
- nkey users (``users = [{nkey: U...}]``): the sensor and the worker authenticate with seed files,
  a sensor with an unknown seed is refused, and the permissions bound to the sensor's public key
  keep it from publishing as another sensor;
- ``.creds`` files (operator mode with a memory resolver: the operator, account and user JWTs are
  signed here with ``nkeys``, which is what ``nsc`` does), both over TLS.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import nkeys
import pytest

from fieldward.console.jetstream import JetStreamSensorClient, NatsSettings
from fieldward.console.jetstream_worker import IngestWorker, WorkerSettings
from fieldward.console.sensor_client import AuthenticationError
from fieldward.store.database import Database
from fieldward.store.models import Alert, Device, Sensor

from .conftest import NatsServer, write_folder
from .pki import certificates as _certificates
from .test_jetstream import _count

SENSOR_PERMISSIONS = '{{ publish: ["fieldward.ingest.{sensor}.>"], subscribe: ["_INBOX.>"] }}'
WORKER_PERMISSIONS = '{ publish: ["$JS.API.>", "$JS.ACK.>", "_INBOX.>"], subscribe: ["_INBOX.>"] }'


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Any:
    database = Database(f"sqlite:///{tmp_path / 'console.db'}")
    database.upgrade()
    yield database
    database.dispose()


def _tls_block(cert: Path, key: Path) -> str:
    return f'tls {{ cert_file: "{cert}", key_file: "{key}", timeout: 5 }}\n'


# --- nkeys and JWTs -----------------------------------------------------------------------------------


def _keypair(prefix: int) -> tuple[str, str]:
    """``(seed, public key)`` of a new nkey of the given kind (user, account, operator)."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    pair = nkeys.from_seed(bytearray(seed))
    return seed.decode(), pair.public_key.decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(issuer_seed: str, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (``ed25519-nkey``) as ``nsc`` signs it: claims with a ``jti`` that hashes them."""
    issuer = nkeys.from_seed(bytearray(issuer_seed.encode()))
    claims: dict[str, Any] = {
        "jti": "",
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    digest = hashlib.sha512(json.dumps(claims, separators=(",", ":")).encode()).digest()[:32]
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = issuer.sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{_b64(signature)}"


def _creds(path: Path, user_jwt: str, seed: str) -> Path:
    path.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n"
    )
    path.chmod(0o600)
    return path


def _secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


# --- helpers ------------------------------------------------------------------------------------------


def _drain(settings: NatsSettings, db: Database, max_idle: float = 1.5) -> int:
    worker = IngestWorker(settings, db, settings=WorkerSettings(create_sensors=True, retry_delay=0.5))
    return asyncio.run(worker.run(max_idle=max_idle)).applied


def _spooled(spool: Path) -> int:
    return len(list((spool / "pending").glob("*.fwb")))


# --- TLS ----------------------------------------------------------------------------------------------


def test_tls_with_the_ca_file_delivers_and_an_untrusted_server_keeps_the_spool(
    nats_factory: Any, sqlite_db: Database, tmp_path: Path
) -> None:
    ca, cert, key = _certificates(tmp_path / "pki")
    secret, worker_secret = "tls-Plant-A-51d0", "tls-w0rker-77aa"
    server: NatsServer = nats_factory(
        _tls_block(cert, key)
        + "authorization { users = [\n"
        + f'  {{ user: "plant-a", password: "{secret}", permissions: '
        + SENSOR_PERMISSIONS.format(sensor="plant-a")
        + " }\n"
        + f'  {{ user: "ingest", password: "{worker_secret}", permissions: {WORKER_PERMISSIONS} }}\n'
        + "] }\n"
    )
    server.start()
    sensor_secret = _secret(tmp_path / "plant-a.secret", secret)
    worker_secret_file = _secret(tmp_path / "ingest.secret", worker_secret)
    worker_url = f"tls://ingest@127.0.0.1:{server.port}"
    url = f"tls://plant-a@127.0.0.1:{server.port}"
    folder = write_folder(tmp_path / "folder", 4, 15, 6, 2)
    assert _drain(NatsSettings.from_url(worker_url, worker_secret_file, ca_file=ca), sqlite_db, 0.5) == 0

    # the system's CAs do not know the test CA: nothing is sent, everything stays in the spool
    untrusted = tmp_path / "spool-untrusted"
    with JetStreamSensorClient(
        url, untrusted, secret_file=sensor_secret, backoff_initial=0.1, backoff_max=0.2
    ) as client:
        refused = client.push_folder(folder, retry_for=1.0)
    assert refused.applied == 0
    assert refused.pending == _spooled(untrusted) > 0
    # a plain-text client cannot talk to the TLS-only server either
    plain = tmp_path / "spool-plain"
    with JetStreamSensorClient(
        f"nats://plant-a@127.0.0.1:{server.port}",
        plain,
        secret_file=sensor_secret,
        backoff_initial=0.1,
        backoff_max=0.2,
    ) as client:
        assert client.push_folder(folder, retry_for=1.0).applied == 0

    # trusting the CA: the spooled batches and the folder go through, once
    with JetStreamSensorClient(url, untrusted, secret_file=sensor_secret, ca_file=ca) as client:
        drained = client.drain(retry_for=10)
    assert drained.complete, drained.to_json()
    assert drained.applied == refused.pending
    assert _spooled(untrusted) == 0
    applied = _drain(NatsSettings.from_url(worker_url, worker_secret_file, ca_file=ca), sqlite_db)
    assert applied == drained.applied
    assert _count(sqlite_db, Device) == 15
    assert _count(sqlite_db, Alert) == 2


# --- nkeys --------------------------------------------------------------------------------------------


def test_nkey_users_authenticate_with_seed_files_and_keep_their_identity(
    nats_factory: Any, sqlite_db: Database, tmp_path: Path
) -> None:
    sensor_seed, sensor_public = _keypair(nkeys.PREFIX_BYTE_USER)
    worker_seed, worker_public = _keypair(nkeys.PREFIX_BYTE_USER)
    stranger_seed, _ = _keypair(nkeys.PREFIX_BYTE_USER)
    server: NatsServer = nats_factory(
        "authorization { users = [\n"
        + f'  {{ nkey: "{sensor_public}", permissions: '
        + SENSOR_PERMISSIONS.format(sensor="plant-n")
        + " }\n"
        + f'  {{ nkey: "{worker_public}", permissions: {WORKER_PERMISSIONS} }}\n'
        + "] }\n"
    )
    server.start()
    sensor_file = _secret(tmp_path / "plant-n.nk", sensor_seed)
    worker_file = _secret(tmp_path / "ingest.nk", worker_seed)
    stranger_file = _secret(tmp_path / "stranger.nk", stranger_seed)
    worker_settings = NatsSettings.from_url(f"nats://127.0.0.1:{server.port}", worker_file)
    assert worker_settings.nkey_seed == worker_seed
    assert (worker_settings.password, worker_settings.token) == (None, None)
    assert worker_seed not in repr(worker_settings)
    assert _drain(worker_settings, sqlite_db, 0.5) == 0
    folder = write_folder(tmp_path / "folder", 5, 9, 4, 3)
    url = f"nats://plant-n@127.0.0.1:{server.port}"

    with (
        JetStreamSensorClient(url, tmp_path / "spool-stranger", secret_file=stranger_file) as client,
        pytest.raises(AuthenticationError, match="refused this sensor"),
    ):
        client.push_folder(folder)
    with (
        JetStreamSensorClient(
            url, tmp_path / "spool-b", sensor="plant-b", secret_file=sensor_file, publish_timeout=2
        ) as client,
        pytest.raises(AuthenticationError),
    ):
        client.push_folder(folder)  # plant-n's key claiming to be plant-b
    with JetStreamSensorClient(url, tmp_path / "spool", secret_file=sensor_file) as client:
        report = client.push_folder(folder, retry_for=10)
    assert report.complete, report.to_json()
    assert _drain(worker_settings, sqlite_db) == report.applied > 0
    with sqlite_db.session() as session:
        assert list(session.query(Sensor.name)) == [("plant-n",)]
    assert _count(sqlite_db, Device) == 9
    assert _count(sqlite_db, Alert) == 3


def test_creds_files_in_operator_mode_over_tls(
    nats_factory: Any, sqlite_db: Database, tmp_path: Path
) -> None:
    ca, cert, key = _certificates(tmp_path / "pki")
    operator_seed, operator_public = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    account_seed, account_public = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, system_public = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)  # JetStream needs a system account
    system_jwt = _jwt(operator_seed, system_public, "SYS", {"type": "account"})
    operator_jwt = _jwt(operator_seed, operator_public, "fieldward-op", {"type": "operator"})
    account_jwt = _jwt(
        operator_seed,
        account_public,
        "FIELDWARD",
        {
            "type": "account",
            "limits": {
                "subs": -1,
                "data": -1,
                "payload": -1,
                "imports": -1,
                "exports": -1,
                "wildcards": True,
                "conn": -1,
                "leaf": -1,
                "mem_storage": -1,
                "disk_storage": -1,
                "streams": -1,
                "consumer": -1,
            },
        },
    )

    def user(name: str, publish: list[str]) -> Path:
        seed, public = _keypair(nkeys.PREFIX_BYTE_USER)
        claims = {
            "type": "user",
            "pub": {"allow": publish},
            "sub": {"allow": ["_INBOX.>"]},
            "subs": -1,
            "data": -1,
            "payload": -1,
        }
        return _creds(tmp_path / f"{name}.creds", _jwt(account_seed, public, name, claims), seed)

    sensor_creds = user("plant-c", ["fieldward.ingest.plant-c.>"])
    worker_creds = user("ingest", ["$JS.API.>", "$JS.ACK.>", "_INBOX.>"])
    server: NatsServer = nats_factory(
        _tls_block(cert, key)
        + f"operator: {operator_jwt}\n"
        + f"system_account: {system_public}\n"
        + "resolver: MEMORY\n"
        + f"resolver_preload: {{ {account_public}: {account_jwt}, {system_public}: {system_jwt} }}\n"
    )
    server.start()
    worker_settings = NatsSettings.from_url(f"tls://127.0.0.1:{server.port}", worker_creds, ca_file=ca)
    assert worker_settings.creds_file == worker_creds
    assert _drain(worker_settings, sqlite_db, 0.5) == 0
    folder = write_folder(tmp_path / "folder", 6, 7, 3, 2)
    url = f"tls://plant-c@127.0.0.1:{server.port}"
    with (
        JetStreamSensorClient(
            url,
            tmp_path / "spool-x",
            sensor="plant-x",
            secret_file=sensor_creds,
            ca_file=ca,
            publish_timeout=2,
        ) as client,
        pytest.raises(AuthenticationError),
    ):
        client.push_folder(folder)  # the JWT allows publishing as plant-c only
    with JetStreamSensorClient(url, tmp_path / "spool", secret_file=sensor_creds, ca_file=ca) as client:
        report = client.push_folder(folder, retry_for=10)
    assert report.complete, report.to_json()
    assert _drain(worker_settings, sqlite_db) == report.applied > 0
    assert _count(sqlite_db, Device) == 7
    assert _count(sqlite_db, Alert) == 2
