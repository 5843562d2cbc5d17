"""Attestation challenges in the database (revision 0009), on SQLite and PostgreSQL: a nonce issued by
one service instance is answered at another, is accepted exactly once under concurrency and across
processes, expires, and cannot be answered by another device; two real TLS servers (two
``TrustService`` instances, each with its own engine) share one database and a device that took its
challenge from one and answered at the other cannot replay the evidence at either."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from fieldward.store.database import Database
from fieldward.trust.agent import AgentError, DeviceAgent
from fieldward.trust.attestation import NonceStatus
from fieldward.trust.errors import TrustError
from fieldward.trust.fleet import (
    ServiceProvisioner,
    fleet_policy_document,
    fleet_reference_document,
    simulated_measurements,
)
from fieldward.trust.service import TrustService, TrustServiceSettings, serve_tls
from fieldward.trust.state import DatabaseNonceStore

from .test_state import db

__all__ = ["db"]

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(minutes=5)


def _twin(database: Database) -> Database:
    """A second engine on the same database (what a second worker process has)."""
    return Database(database.url.render_as_string(hide_password=False))


def _nonce() -> str:
    return secrets.token_hex(32)


def test_a_nonce_is_accepted_once_and_only_by_its_device(db: Database) -> None:
    store = DatabaseNonceStore(db, clock=lambda: NOW)
    nonce = _nonce()
    store.issue("rtu-1", nonce, NOW + TTL)
    assert store.outstanding("rtu-1") >= 1
    assert store.consume("rtu-2", nonce, NOW) is NonceStatus.WRONG_DEVICE
    assert store.consume("rtu-1", nonce, NOW) is NonceStatus.OK
    assert store.consume("rtu-1", nonce, NOW) is NonceStatus.REPLAYED
    assert store.consume("rtu-1", _nonce(), NOW) is NonceStatus.UNKNOWN
    assert store.consume("rtu-1", "", NOW) is NonceStatus.UNKNOWN
    assert store.consume("rtu-1", "x" * 500, NOW) is NonceStatus.UNKNOWN


def test_an_expired_nonce_is_refused_and_spent(db: Database) -> None:
    store = DatabaseNonceStore(db, clock=lambda: NOW)
    nonce = _nonce()
    store.issue("rtu-exp", nonce, NOW + TTL)
    late = NOW + TTL + dt.timedelta(seconds=1)
    assert store.consume("rtu-exp", nonce, late) is NonceStatus.EXPIRED
    assert store.consume("rtu-exp", nonce, late) is NonceStatus.REPLAYED
    # purged once expired for longer than ``keep``: then it is simply unknown
    assert store.purge(NOW + TTL + store.keep + dt.timedelta(seconds=1)) >= 1
    assert store.consume("rtu-exp", nonce, late) is NonceStatus.UNKNOWN


def test_a_device_cannot_fill_the_table(db: Database) -> None:
    store = DatabaseNonceStore(db, max_per_device=3, clock=lambda: NOW)
    for _ in range(3):
        store.issue("rtu-greedy", _nonce(), NOW + TTL)
    with pytest.raises(TrustError, match="too many outstanding"):
        store.issue("rtu-greedy", _nonce(), NOW + TTL)
    store.issue("rtu-other", _nonce(), NOW + TTL)  # other devices are not affected
    answered = _nonce()
    store2 = DatabaseNonceStore(db, max_per_device=4, clock=lambda: NOW)
    store2.issue("rtu-greedy", answered, NOW + TTL)
    assert store2.consume("rtu-greedy", answered, NOW) is NonceStatus.OK


def test_a_challenge_from_one_instance_is_answered_at_another_once(db: Database) -> None:
    other = _twin(db)
    try:
        issuer = DatabaseNonceStore(db, clock=lambda: NOW)
        verifier = DatabaseNonceStore(other, clock=lambda: NOW)
        nonce = _nonce()
        issuer.issue("rtu-x", nonce, NOW + TTL)
        assert verifier.consume("rtu-x", nonce, NOW) is NonceStatus.OK
        assert issuer.consume("rtu-x", nonce, NOW) is NonceStatus.REPLAYED
        # the same evidence arriving at both instances at the same moment: exactly one accepts it
        for _round in range(5):
            nonce = _nonce()
            issuer.issue("rtu-x", nonce, NOW + TTL)
            stores = [issuer, verifier] * 4
            with ThreadPoolExecutor(len(stores)) as pool:
                outcomes = list(
                    pool.map(DatabaseNonceStore.consume, stores, ["rtu-x"] * 8, [nonce] * 8, [NOW] * 8)
                )
            assert outcomes.count(NonceStatus.OK) == 1, outcomes
            assert set(outcomes) == {NonceStatus.OK, NonceStatus.REPLAYED}
    finally:
        other.dispose()


_CONSUME = """
import datetime as dt, sys
from fieldward.store.database import Database
from fieldward.trust.state import DatabaseNonceStore
db = Database(sys.argv[1])
now = dt.datetime.fromisoformat(sys.argv[4])
print(DatabaseNonceStore(db).consume(sys.argv[2], sys.argv[3], now).value)
db.dispose()
"""


def test_a_replay_is_refused_across_processes(db: Database) -> None:
    store = DatabaseNonceStore(db, clock=lambda: NOW)
    nonce = _nonce()
    store.issue("rtu-proc", nonce, NOW + TTL)
    url = db.url.render_as_string(hide_password=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def other_process() -> str:
        done = subprocess.run(
            [sys.executable, "-c", _CONSUME, url, "rtu-proc", nonce, NOW.isoformat()],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=True,
        )
        return done.stdout.strip()

    assert other_process() == "ok"
    assert store.consume("rtu-proc", nonce, NOW) is NonceStatus.REPLAYED
    assert other_process() == "replayed"


@pytest.fixture(scope="module")
def twin_services(db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[TrustService]]:
    """Two trust services (two engines) on one database and one CA directory, as two console workers."""
    directory = tmp_path_factory.mktemp("twins")
    secret = directory / "passphrase"
    secret.write_text(secrets.token_urlsafe(24))
    secret.chmod(0o600)
    references = directory / "reference-values.yaml"
    references.write_text(yaml.safe_dump(fleet_reference_document()))
    policy = directory / "policy.yaml"
    policy.write_text(yaml.safe_dump(fleet_policy_document(), sort_keys=False))
    settings = TrustServiceSettings(
        data_dir=directory, passphrase_file=secret, policy_file=policy, reference_values_file=references
    )
    first = TrustService(settings, db)
    second_db = _twin(db)
    second = TrustService(settings, second_db)
    try:
        yield [first, second]
    finally:
        second_db.dispose()


def test_evidence_answered_at_the_other_server_cannot_be_replayed(
    twin_services: list[TrustService], tmp_path: Path
) -> None:
    first, second = twin_services
    assert first.nonce_store is not None
    assert second.nonce_store is not None
    assert first.ca.root == second.ca.root  # one CA, opened twice
    with ExitStack() as stack:
        a = stack.enter_context(serve_tls(first, tmp_path / "tls-a"))
        b = stack.enter_context(serve_tls(second, tmp_path / "tls-b"))
        state = tmp_path / "device"
        at_a = DeviceAgent(a.url, state, server_ca=a.ca_file)
        at_b = DeviceAgent(b.url, state, server_ca=b.ca_file)
        at_a.enroll("twin-rtu", ServiceProvisioner(first).token("twin-rtu"))
        nonce = at_a._call("POST", "/trust/attest/challenge").json()["nonce"]
        envelope = at_a.evidence(simulated_measurements(), nonce)
        verdict = at_b._call("POST", "/trust/attest/evidence", json=envelope).json()
        assert verdict["verdict"] == "healthy"
        for agent in (at_a, at_b):
            with pytest.raises(AgentError) as refused:
                agent._call("POST", "/trust/attest/evidence", json=envelope)
            assert refused.value.status == 400
            assert "replay" in str(refused.value)
        # the verdict recorded by b lets the device renew at a (the renewal gate reads the database)
        assert at_a.renew().subject.rfc4514_string().startswith("CN=twin-rtu")
