"""Enforcement at a real Mosquitto 2: mutual TLS against the FieldWard CA (certificates issued by the
real CertificateAuthority), the dynamic-security plugin driven by DynsecClient.sync, and real
paho-mqtt clients. Every test here starts its own broker on free ports (never the system one)."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import queue
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fieldward.trust.broker import (
    DEFAULT_PLUGIN,
    MANAGED_TEXT,
    BrokerError,
    BrokerState,
    DynsecACL,
    DynsecClient,
    MosquittoConfig,
    desired_state,
    dynsec_initial_config,
    dynsec_password,
    plan_sync,
    prepare_broker,
    reload_broker,
    role_name,
    to_dynsec_acls,
    write_crl,
)
from fieldward.trust.ca import CertificateAuthority
from fieldward.trust.context import DeviceContext
from fieldward.trust.policy import parse_policy
from fieldward.trust.registry import TrustRegistry

from .conftest import key_pem, make_manufacturer

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PEM = serialization.Encoding.PEM
ADMIN_PASSWORD = "test-admin-" + secrets.token_hex(8)

POLICY = parse_policy(
    {
        "version": 1,
        "rules": [
            {
                "name": "lockdown",
                "effect": "deny",
                "who": "any",
                "what": "any",
                "conditions": {"not_quarantined": True},
            },
            {
                "name": "own-topics",
                "effect": "allow",
                "who": {"groups": ["plant-a"]},
                "what": {
                    "publish": ["plant/{device_id}/telemetry"],
                    "subscribe": ["plant/{device_id}/commands/+"],
                },
                "conditions": {"verdict": ["healthy"], "not_quarantined": True},
            },
            {
                "name": "observer",
                "effect": "allow",
                "who": {"devices": ["observer"]},
                "what": {"subscribe": ["plant/#"]},
            },
        ],
    }
)


def healthy(device_id: str, **changes: Any) -> DeviceContext:
    values: dict[str, Any] = {
        "device_id": device_id,
        "group": "plant-a",
        "device_type": "rtu",
        "verdict": "healthy",
        "attested_at": dt.datetime.now(dt.UTC),
    }
    values.update(changes)
    return DeviceContext(**values)


# ------------------------------------------------------------------------------------------ pure parts


def test_config_render_has_mutual_tls_dynsec_and_no_anonymous(tmp_path: Path) -> None:
    config = MosquittoConfig(
        tls_port=8883,
        admin_port=18830,
        cafile=tmp_path / "ca.pem",
        certfile=tmp_path / "broker.pem",
        keyfile=tmp_path / "broker.key",
        crlfile=tmp_path / "crl.pem",
        dynsec_file=tmp_path / "dynsec.json",
    )
    lines = config.render().splitlines()
    for expected in (
        "allow_anonymous false",
        "require_certificate true",
        "use_identity_as_username true",
        f"crlfile {tmp_path / 'crl.pem'}",
        f"cafile {tmp_path / 'ca.pem'}",
        f"plugin {DEFAULT_PLUGIN}",
        f"plugin_opt_config_file {tmp_path / 'dynsec.json'}",
        "listener 18830 127.0.0.1",
        "listener 8883 0.0.0.0",
    ):
        assert expected in lines
    # The TLS settings follow the device listener line, not the admin one.
    assert lines.index("require_certificate true") > lines.index("listener 8883 0.0.0.0")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tls_port": 0}, "tls_port"),
        ({"admin_port": 8883}, "different ports"),
        ({"bind_address": "example.org"}, "bind_address"),
        ({"cafile": Path("/tmp/x\nallow_anonymous true")}, "control characters"),
        ({"tls_version": "tlsv1"}, "tls_version"),
    ],
)
def test_config_refuses_bad_settings(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {
        "tls_port": 8883,
        "cafile": tmp_path / "ca.pem",
        "certfile": tmp_path / "b.pem",
        "keyfile": tmp_path / "b.key",
        "crlfile": None,
        "dynsec_file": tmp_path / "d.json",
    }
    values.update(changes)
    with pytest.raises(BrokerError, match=message):
        MosquittoConfig(**values).render()


def test_dynsec_password_matches_pbkdf2_sha512() -> None:
    import base64
    import hashlib

    salt = bytes(range(12))
    stored = dynsec_password("correct horse battery", salt=salt)
    expected = hashlib.pbkdf2_hmac("sha512", b"correct horse battery", salt, 101, 64)
    assert base64.b64decode(stored["password"]) == expected
    assert base64.b64decode(stored["salt"]) == salt
    config = dynsec_initial_config("correct horse battery")
    assert config["defaultACLAccess"]["publishClientSend"] is False
    assert "correct horse" not in str(config)
    with pytest.raises(BrokerError):
        dynsec_password("short")


def test_policy_acl_becomes_ordered_dynsec_acls() -> None:
    acls = to_dynsec_acls(POLICY_ACL := [("#", "deny", "publish"), ("a/b", "allow", "publish")])
    assert acls[0] == DynsecACL("publishClientSend", "#", False, 2)
    assert acls[1].priority < acls[0].priority
    assert len(POLICY_ACL) == 2
    with pytest.raises(BrokerError):
        to_dynsec_acls([("a", "maybe", "publish")])


def test_desired_state_and_plan_are_a_diff() -> None:
    contexts = [
        healthy("dev-1"),
        healthy("dev-2", verdict="outdated"),
        healthy("dev-3", quarantined=True),
        healthy("dev-4", group="other"),
        healthy("bad/id"),
    ]
    granted, refused = desired_state(POLICY, contexts, enrolled=lambda d: d != "dev-5")
    assert set(granted) == {"dev-1"}
    assert refused["dev-2"] == "attestation verdict outdated"
    assert refused["dev-3"] == "quarantined"
    assert refused["dev-4"] == "the policy allows nothing"
    assert refused["bad/id"] == "not a valid device id"
    commands = plan_sync(BrokerState(), granted)
    names = [c["command"] for c in commands]
    assert names.count("createClient") == 1
    assert names.count("createRole") == 1
    # Applying the plan's result yields an empty plan.
    from fieldward.trust.broker import BrokerClient

    done = BrokerState(
        {"dev-1": BrokerClient("dev-1", MANAGED_TEXT, (role_name("dev-1"),), False)},
        {role_name("dev-1"): frozenset(granted["dev-1"])},
    )
    assert plan_sync(done, granted) == []
    # A stale managed client is deleted; a hand-made one is left alone.
    stale = BrokerState(
        {
            "old": BrokerClient("old", MANAGED_TEXT, (), False),
            "operator": BrokerClient("operator", "by hand", (), False),
        },
        {role_name("old"): frozenset()},
    )
    plan = plan_sync(stale, {})
    assert {"command": "deleteClient", "username": "old"} in plan
    assert {"command": "deleteRole", "rolename": role_name("old")} in plan
    assert all(c.get("username") != "operator" for c in plan)


# ------------------------------------------------------------------------------------------ real broker


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Broker:
    ca: CertificateAuthority
    registry: TrustRegistry
    directory: Path
    tls_port: int
    admin_port: int
    process: subprocess.Popen[bytes]
    crlfile: Path
    clients: list[Any] = field(default_factory=list)

    def admin(self) -> DynsecClient:
        return DynsecClient("127.0.0.1", self.admin_port, password=ADMIN_PASSWORD).connect()

    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def device_files(
        self, device_id: str, *, register: bool = True, **issue: Any
    ) -> tuple[x509.Certificate, Path, Path]:
        if register:
            self.registry.register_device(device_id, group="plant-a")
        cert, key = self.ca.issue_keypair("device", device_id, **issue)
        return (cert, *self._write(device_id, cert, key))

    def _write(self, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        tag = secrets.token_hex(4)
        cert_file = self.directory / f"{name}-{tag}.pem"
        key_file = self.directory / f"{name}-{tag}.key"
        cert_file.write_bytes(cert.public_bytes(PEM))
        key_file.write_bytes(key_pem(key))
        return cert_file, key_file

    def tls(self, cert_file: Path, key_file: Path) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.directory / "ca-chain.pem"))
        context.load_cert_chain(cert_file, key_file)
        return context

    def handshake(self, cert_file: Path, key_file: Path) -> str:
        """'ok' when the broker accepts the certificate (MQTT CONNACK read), else the TLS error."""
        context = self.tls(cert_file, key_file)
        with socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as raw:
            try:
                with context.wrap_socket(raw, server_hostname="localhost") as conn:
                    # MQTT 3.1.1 CONNECT, clean session, empty client id: with TLS 1.3 a refused client
                    # certificate shows up on the first read, not in the handshake itself.
                    conn.sendall(bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 0]))
                    answer = conn.recv(4)
            except (ssl.SSLError, OSError) as exc:
                return f"refused: {exc}"
        return "ok" if answer[:1] == b"\x20" else f"refused: {answer!r}"

    def mqtt(self, client_id: str, cert_file: Path, key_file: Path) -> MQTTDevice:
        device = MQTTDevice(client_id, self.tls(cert_file, key_file), self.tls_port)
        self.clients.append(device)
        return device


class MQTTDevice:
    """A real paho-mqtt (MQTT 5) client over mutual TLS, recording what happens to it."""

    def __init__(self, client_id: str, context: ssl.SSLContext, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, reconnect_on_failure=False
        )
        client.tls_set_context(context)
        client.on_connect = lambda c, u, f, reason, p: self.events.put(("connect", str(reason)))
        client.on_disconnect = lambda c, u, f, reason, p: self.events.put(("disconnect", str(reason)))
        client.on_publish = lambda c, u, mid, reason, p: self.events.put(("puback", mid, str(reason)))
        client.on_subscribe = lambda c, u, mid, reasons, p: self.events.put(
            ("suback", mid, [str(r) for r in reasons])
        )
        client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client = client
        client.connect("127.0.0.1", port, keepalive=30)
        client.loop_start()
        assert self.wait("connect")[1] == "Success"

    def wait(self, kind: str, timeout: float = 5.0) -> tuple[Any, ...]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind} event")
            event = self.events.get(timeout=remaining)
            if event[0] == kind:
                return event

    def publish(self, topic: str, payload: bytes) -> str:
        """The PUBACK reason (MQTT 5): 'Success'/'No matching subscribers' or 'Not authorized'."""
        info = self.client.publish(topic, payload, qos=1)
        event = self.wait("puback")
        assert event[1] == info.mid
        return str(event[2])

    def subscribe(self, topic: str) -> str:
        result, mid = self.client.subscribe(topic, qos=1)
        assert result == 0
        event = self.wait("suback")
        assert event[1] == mid
        return str(event[2][0])

    def received(self, timeout: float = 1.0) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                out.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                break
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _need_mosquitto() -> None:
    if not Path(MOSQUITTO).exists():
        pytest.skip(f"Mosquitto is not installed ({MOSQUITTO} missing)")
    if not DEFAULT_PLUGIN.exists():
        pytest.skip(f"the Mosquitto dynamic-security plugin is missing ({DEFAULT_PLUGIN})")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")


@pytest.fixture
def broker(ca: CertificateAuthority, registry: TrustRegistry, tmp_path: Path) -> Iterator[Broker]:
    _need_mosquitto()
    tls_port, admin_port = _free_port(), _free_port()
    files = prepare_broker(
        ca,
        tmp_path / "broker",
        tls_port=tls_port,
        admin_port=admin_port,
        bind_address="127.0.0.1",
        admin_password=ADMIN_PASSWORD,
        user=getpass.getuser() if os.geteuid() == 0 else None,
    )
    assert files.admin_password_file.stat().st_mode & 0o077 == 0
    assert files.config.crlfile is not None
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(files.config_file)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    state = Broker(ca, registry, tmp_path / "broker", tls_port, admin_port, process, files.config.crlfile)
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            pytest.fail(f"mosquitto exited ({process.returncode}): {stderr}{state.log()}")
        try:
            with socket.create_connection(("127.0.0.1", admin_port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("mosquitto did not open its admin listener")
            time.sleep(0.05)
    try:
        yield state
    finally:
        for device in state.clients:
            device.close()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_admin_listener_needs_the_password(broker: Broker) -> None:
    with pytest.raises(BrokerError, match="refused"):
        DynsecClient("127.0.0.1", broker.admin_port, password="wrong-password-123").connect()
    with broker.admin() as admin:
        assert admin.get_client("_fieldward-admin") is not None


def test_healthy_device_publishes_only_to_its_own_topics(broker: Broker) -> None:
    _, alpha_cert, alpha_key = broker.device_files("alpha")
    _, beta_cert, beta_key = broker.device_files("beta")
    _, obs_cert, obs_key = broker.device_files("observer")
    contexts = [healthy("alpha"), healthy("beta"), healthy("observer")]
    with broker.admin() as admin:
        report = admin.sync(POLICY, contexts)
        assert set(report.granted) == {"alpha", "beta", "observer"}
        assert report.changed
        assert not admin.sync(POLICY, contexts).changed  # idempotent: nothing to do the second time

    observer = broker.mqtt("observer", obs_cert, obs_key)
    assert observer.subscribe("plant/#") == "Granted QoS 1"
    alpha = broker.mqtt("alpha", alpha_cert, alpha_key)
    beta = broker.mqtt("beta", beta_cert, beta_key)
    assert beta.subscribe("plant/beta/commands/+") == "Granted QoS 1"
    assert beta.subscribe("plant/alpha/commands/+") == "Not authorized"
    assert beta.subscribe("#") == "Not authorized"

    assert alpha.publish("plant/alpha/telemetry", b"21.5") in ("Success", "No matching subscribers")
    assert alpha.publish("plant/beta/telemetry", b"forged") == "Not authorized"
    assert alpha.publish("plant/beta/commands/stop", b"forged") == "Not authorized"
    assert alpha.publish("$CONTROL/dynamic-security/v1", b"{}") == "Not authorized"
    received = observer.received(1.0)
    assert ("plant/alpha/telemetry", b"21.5") in received
    assert all(payload != b"forged" for _, payload in received)
    assert beta.received(0.2) == []


def test_foreign_ca_is_refused_at_the_handshake(broker: Broker) -> None:
    rogue = make_manufacturer("Rogue CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "alpha")]))
        .issuer_name(rogue.root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(rogue.key, hashes.SHA256())
    )
    cert_file, key_file = broker._write("rogue", cert, key)
    assert broker.handshake(cert_file, key_file).startswith("refused")
    _, good_cert, good_key = broker.device_files("gamma")
    assert broker.handshake(good_cert, good_key) == "ok"  # the same probe succeeds with a real one


def test_revoked_certificate_is_refused_after_crl_reload(broker: Broker) -> None:
    cert, cert_file, key_file = broker.device_files("delta")
    assert broker.handshake(cert_file, key_file) == "ok"
    broker.ca.revoke(cert.serial_number, "key_compromise")
    write_crl(broker.ca, broker.crlfile)
    reload_broker(broker.process.pid)
    deadline = time.monotonic() + 5
    while broker.handshake(cert_file, key_file) == "ok":
        assert time.monotonic() < deadline, "the broker still accepts a revoked certificate"
        time.sleep(0.1)
    _, other_cert, other_key = broker.device_files("epsilon")
    assert broker.handshake(other_cert, other_key) == "ok"


def test_expired_certificate_is_refused(broker: Broker) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    _, cert_file, key_file = broker.device_files("zeta", validity=dt.timedelta(hours=1), now=past)
    assert broker.handshake(cert_file, key_file).startswith("refused")


def test_outdated_device_loses_its_acl_on_sync(broker: Broker) -> None:
    _, cert_file, key_file = broker.device_files("eta")
    with broker.admin() as admin:
        admin.sync(POLICY, [healthy("eta")])
        assert admin.get_client("eta") is not None
        device = broker.mqtt("eta", cert_file, key_file)
        assert device.publish("plant/eta/telemetry", b"1") in ("Success", "No matching subscribers")
        report = admin.sync(POLICY, [healthy("eta", verdict="outdated")])
        assert report.refused == {"eta": "attestation verdict outdated"}
        assert admin.get_client("eta") is None
        assert admin.get_role(role_name("eta")) is None
    # Deleting the client disconnected the open session; a new one has no rights at all.
    device.wait("disconnect")
    again = broker.mqtt("eta-2", cert_file, key_file)
    assert again.publish("plant/eta/telemetry", b"2") == "Not authorized"
    assert again.subscribe("plant/eta/commands/+") == "Not authorized"


def test_sync_leaves_hand_made_clients_alone(broker: Broker) -> None:
    with broker.admin() as admin:
        admin.create_client("operator-tool", text_name="added by hand")
        admin.sync(POLICY, [])
        assert admin.get_client("operator-tool") is not None
        with pytest.raises(BrokerError, match="createClient operator-tool"):
            admin.create_client("operator-tool")


@dataclass
class _Message:
    payload: bytes


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[]",
        b'{"responses": 5}',
        b'{"responses": [1, {"correlationData": 3}]}',
        b"\xff\xfe",
    ],
)
def test_malformed_plugin_answers_are_ignored(payload: bytes) -> None:
    client = DynsecClient(port=1883)
    client._on_message(None, None, _Message(payload))
    assert client._answers == {}
    client._on_message(None, None, _Message(b'{"responses": [{"command": "x", "correlationData": "k1"}]}'))
    assert list(client._answers) == ["k1"]
    with pytest.raises(BrokerError, match="not connected"):
        client.execute([{"command": "listClients"}])
