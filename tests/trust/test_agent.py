"""The device agent against a real trust service: uvicorn with TLS serving ``TrustService.routers()``,
the agent enrolling over EST with a token, attesting (healthy, tampered, replayed), renewing over
mutual TLS only after a healthy verdict, updating through TUF and sending failure reports that the
service aggregates."""

from __future__ import annotations

import json
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from fieldward.trust.agent import AgentError, DeviceAgent, agent_main, measurements_dict
from fieldward.trust.fleet import (
    SIM_MODEL,
    ServiceProvisioner,
    local_service,
    simulated_image,
    simulated_measurements,
)
from fieldward.trust.service import RunningServer, TrustService, failure_signature, serve_tls
from fieldward.trust.update_client import UpdateOffer

PEM = serialization.Encoding.PEM


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrustService]:
    svc = local_service(tmp_path_factory.mktemp("agent-service") / "service")
    yield svc
    svc.database.dispose()


@pytest.fixture(scope="module")
def server(service: TrustService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve_tls(service, tmp_path_factory.mktemp("agent-tls")) as running:
        yield running


@pytest.fixture(scope="module")
def provisioner(service: TrustService) -> ServiceProvisioner:
    return ServiceProvisioner(service)


def _agent(server: RunningServer, tmp_path: Path, name: str = "agent") -> DeviceAgent:
    return DeviceAgent(server.url, tmp_path / name, server_ca=server.ca_file)


def _enrolled(
    server: RunningServer, provisioner: ServiceProvisioner, tmp_path: Path, device_id: str
) -> DeviceAgent:
    agent = _agent(server, tmp_path, device_id)
    agent.enroll(device_id, provisioner.token(device_id))
    return agent


def test_enroll_over_est_keeps_a_private_identity(
    server: RunningServer, service: TrustService, provisioner: ServiceProvisioner, tmp_path: Path
) -> None:
    agent = _agent(server, tmp_path)
    assert agent.status() == {"enrolled": False}
    cert = agent.enroll("agent-001", provisioner.token("agent-001"))
    assert agent.device_id == "agent-001"
    assert cert.public_key() == agent.private_key().public_key()
    assert service.ca.verify([cert]) == cert
    assert cert.subject.rfc4514_string() == "CN=agent-001,OU=plant-sim,O=FieldWard"
    for path in (agent.key_path, agent.cert_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(agent.state_dir.stat().st_mode) == 0o700
    chain = (agent.state_dir / "ca-chain.pem").read_bytes()
    assert service.ca.root.public_bytes(PEM) in chain
    config = agent.config()
    assert config["group"] == "plant-sim"
    assert config["model"] == SIM_MODEL
    assert config["verdict"] is None


def test_a_token_works_once(server: RunningServer, provisioner: ServiceProvisioner, tmp_path: Path) -> None:
    token = provisioner.token("agent-once")
    _agent(server, tmp_path, "a").enroll("agent-once", token)
    with pytest.raises(AgentError) as refused:
        _agent(server, tmp_path, "b").enroll("agent-once", token)
    assert refused.value.status == 401
    assert not _agent(server, tmp_path, "b").enrolled


def test_renewal_needs_a_fresh_healthy_verdict(
    server: RunningServer, provisioner: ServiceProvisioner, tmp_path: Path
) -> None:
    agent = _enrolled(server, provisioner, tmp_path, "agent-renew")
    first = agent.certificate()
    with pytest.raises(AgentError) as refused:
        agent.renew()
    assert refused.value.status == 403
    assert "never been attested" in str(refused.value)
    verdict = agent.attest(simulated_measurements())
    assert verdict["verdict"] == "healthy", verdict
    assert verdict["device_id"] == "agent-renew"
    renewed = agent.renew()
    assert renewed.serial_number != first.serial_number
    assert renewed.public_key() != first.public_key()  # a new key with every renewal
    assert agent.certificate() == renewed
    assert agent.config()["verdict"] == "healthy"  # the new certificate works over mutual TLS


def test_tampered_firmware_is_compromised_and_cannot_renew(
    server: RunningServer, provisioner: ServiceProvisioner, service: TrustService, tmp_path: Path
) -> None:
    agent = _enrolled(server, provisioner, tmp_path, "agent-tampered")
    verdict = agent.attest(simulated_measurements(tampered=True))
    assert verdict["verdict"] == "compromised"
    assert any("firmware digest" in reason for reason in verdict["reasons"])
    with pytest.raises(AgentError, match="compromised"):
        agent.renew()
    assert service.context("agent-tampered").verdict == "compromised"
    decision = agent.decide("publish", "devices/agent-tampered/telemetry/t")
    assert decision["allowed"] is False
    assert decision["rule"] == "quarantine-lockdown"


def test_replayed_and_foreign_evidence_are_refused(
    server: RunningServer, provisioner: ServiceProvisioner, tmp_path: Path
) -> None:
    alice = _enrolled(server, provisioner, tmp_path, "agent-alice")
    bob = _enrolled(server, provisioner, tmp_path, "agent-bob")
    with alice.client() as http:
        nonce = http.post("/trust/attest/challenge").json()["nonce"]
        envelope = alice.evidence(simulated_measurements(), nonce)
        assert http.post("/trust/attest/evidence", json=envelope).json()["verdict"] == "healthy"
        replay = http.post("/trust/attest/evidence", json=envelope)
        garbage = http.post("/trust/attest/evidence", content=b"{not json")
    assert replay.status_code == 400
    assert "replay" in replay.json()["detail"]
    assert garbage.status_code == 400
    with alice.client() as http:
        nonce = http.post("/trust/attest/challenge").json()["nonce"]
        envelope = alice.evidence(simulated_measurements(), nonce)
    with bob.client() as http:
        stolen = http.post("/trust/attest/evidence", json=envelope)
    assert stolen.status_code == 403


def test_the_device_api_needs_a_device_certificate(
    server: RunningServer, provisioner: ServiceProvisioner, tmp_path: Path
) -> None:
    agent = _agent(server, tmp_path)
    with agent.client(client_cert=False) as http:
        assert http.post("/trust/attest/challenge").status_code == 401
        assert http.post("/trust/reports", json={}).status_code == 401
        assert http.get("/trust/device").status_code == 401
    enrolled = _enrolled(server, provisioner, tmp_path, "agent-curious")
    with enrolled.client() as http:
        other = http.post(
            "/trust/policy/decide",
            json={"device_id": "agent-001", "action": "publish", "resource": "devices/agent-001/x"},
        )
        bad_action = http.post("/trust/policy/decide", json={"action": "delete", "resource": "x"})
        aggregates = http.get("/trust/reports")
    assert other.status_code == 403
    assert bad_action.status_code == 422
    assert aggregates.status_code == 403


def test_update_through_tuf(
    server: RunningServer, provisioner: ServiceProvisioner, service: TrustService, tmp_path: Path
) -> None:
    image = tmp_path / "fw-2.5.0.bin"
    image.write_bytes(simulated_image("2.5.0"))
    service.updates.publish(image, SIM_MODEL, "2.5.0", "stable", release_notes="fleet test")
    agent = _enrolled(server, provisioner, tmp_path, "agent-update")
    offer = agent.check_update(running_version="2.4.1")
    assert offer is not None
    assert offer.version == "2.5.0"
    installed: list[bytes] = []

    def install(path: Path, what: UpdateOffer) -> None:
        assert what.version == "2.5.0"
        installed.append(path.read_bytes())

    assert agent.install_update(install, running_version="2.4.1") == "2.5.0"
    assert installed == [image.read_bytes()]
    assert agent.install_update(install) is None  # 2.5.0 runs now: nothing newer
    assert json.loads((agent.state_dir / "tuf-root.json").read_bytes())["signed"]["_type"] == "root"


def test_failure_reports_are_aggregated(
    server: RunningServer, provisioner: ServiceProvisioner, service: TrustService, tmp_path: Path
) -> None:
    one = _enrolled(server, provisioner, tmp_path, "agent-crash-1")
    two = _enrolled(server, provisioner, tmp_path, "agent-crash-2")
    first = one.report_failure(
        "crash", "modbus-poller", "SIGSEGV at 0x7f3a12 reading register 40001", stack=["poll.c:read_regs"]
    )
    second = two.report_failure(
        "crash", "modbus-poller", "SIGSEGV at 0x55e0ff reading register 40017", stack=["poll.c:read_regs"]
    )
    other = two.report_failure("error", "mqtt", "connection refused", count=3)
    assert first["signature"] == second["signature"] != other["signature"]
    assert second["count"] == 2
    try:
        raise ZeroDivisionError("division by zero in scaling")
    except ZeroDivisionError as exc:
        crash = one.report_exception("scaler", exc)
    assert crash["count"] == 1
    with pytest.raises(AgentError) as refused:
        one.report_failure("explosion", "x", "y")
    assert refused.value.status == 422
    by_signature = {a.signature: a for a in service.failures.aggregates()}
    aggregate = by_signature[first["signature"]]
    assert (aggregate.model, aggregate.count, aggregate.devices, set(aggregate.device_ids)) == (
        SIM_MODEL,
        2,
        2,
        {"agent-crash-1", "agent-crash-2"},
    )
    assert by_signature[other["signature"]].count == 3
    # the console (a console certificate) reads the aggregates
    cert, key = service.ca.issue_keypair("console", "console-reader")
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(PEM))
    (tmp_path / "c.key").write_bytes(
        key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(cafile=str(server.ca_file))
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "c.key")
    with httpx.Client(base_url=server.url, verify=context) as http:
        listed = http.get("/trust/reports").json()["aggregates"]
    row = next(a for a in listed if a["signature"] == first["signature"])
    assert row["count"] == 2
    assert row["devices"] == 2


def test_failure_signature_ignores_addresses_and_counters() -> None:
    a = failure_signature("crash", "io", "fault at 0xdeadbeef after 12 polls", ["f.c:main 17"])
    b = failure_signature("crash", "io", "fault at 0x1234 after 9 polls", ["f.c:main 99"])
    assert a == b
    assert a != failure_signature("crash", "io", "fault at 0x1234 before 9 polls")
    assert a != failure_signature("error", "io", "fault at 0x1234 after 9 polls", ["f.c:main 99"])


def test_agent_cli(
    server: RunningServer, provisioner: ServiceProvisioner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = provisioner.token("agent-cli")
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    common = [
        "--server",
        server.url,
        "--state-dir",
        str(tmp_path / "state"),
        "--ca-file",
        str(server.ca_file),
    ]
    assert agent_main([*common, "enroll", "--device-id", "agent-cli", "--token-file", str(token_file)]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["enrolled"] == "agent-cli"
    assert token not in out.out + out.err
    measurements = tmp_path / "m.json"
    measurements.write_text(json.dumps(measurements_dict(simulated_measurements())))
    assert agent_main([*common, "attest", "--measurements", str(measurements)]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "healthy"
    assert agent_main([*common, "renew"]) == 0
    assert json.loads(capsys.readouterr().out)["renewed"] == "agent-cli"
    # a second enrollment with the spent token is refused with one line and exit 1
    assert agent_main([*common, "enroll", "--device-id", "agent-cli", "--token-file", str(token_file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:")
    assert "401" in err
    assert token not in err
    (tmp_path / "bad.json").write_text('{"model": "x", "colour": 1}')
    assert agent_main([*common, "attest", "--measurements", str(tmp_path / "bad.json")]) == 1
    assert "colour" in capsys.readouterr().err
