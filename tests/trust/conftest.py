"""Shared fixtures of the trust tests: a CA on a migrated SQLite registry, CSRs made with
cryptography, a manufacturer (IDevID) CA, and a real uvicorn server with TLS (server certificate
from the FieldWard CA, optional client certificates) serving the EST, CRL and OCSP routers."""

from __future__ import annotations

import datetime as dt
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI

from fieldward.store.database import Database
from fieldward.trust.ca import CASettings, CertificateAuthority
from fieldward.trust.est import ESTSettings, Manufacturer, TLSExtensionH11Protocol, est_router
from fieldward.trust.registry import TrustRegistry
from fieldward.trust.revocation import revocation_router

PEM = serialization.Encoding.PEM


def make_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(
    common_name: str | None,
    key: ec.EllipticCurvePrivateKey | None = None,
    *,
    subject: x509.Name | None = None,
) -> tuple[x509.CertificateSigningRequest, ec.EllipticCurvePrivateKey]:
    key = key if key is not None else make_key()
    name = subject
    if name is None:
        name = x509.Name(
            [] if common_name is None else [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        )
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr, key


def csr_body(csr: x509.CertificateSigningRequest) -> bytes:
    """An RFC 7030 request body: base64 of the DER CSR."""
    import base64

    return base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass
class Manufacturing:
    """A device maker's CA that signs IDevID certificates."""

    root: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def idevid(self, serial: str, *, days: int = 3650) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = make_key()
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Sensors"),
                        x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
                    ]
                )
            )
            .issuer_name(self.root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return cert, key


def make_manufacturer(name: str) -> Manufacturing:
    key = make_key()
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    root = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Manufacturing(root, key)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('trustdb') / 'trust.db'}")
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def registry(database: Database) -> TrustRegistry:
    registry = TrustRegistry(database)
    registry.create_group("plant-a", policy="sensors-default", update_channel="stable")
    registry.create_group("acme", policy="acme-devices", update_channel="beta", validity_hours=12)
    return registry


@pytest.fixture(scope="module")
def passphrase() -> bytes:
    return secrets.token_urlsafe(24).encode()


@pytest.fixture(scope="module")
def ca(
    registry: TrustRegistry, tmp_path_factory: pytest.TempPathFactory, passphrase: bytes
) -> CertificateAuthority:
    settings = CASettings(
        directory=tmp_path_factory.mktemp("ca") / "trust",
        crl_url="https://fieldward.test/trust/crl",
        ocsp_url="https://fieldward.test/trust/ocsp",
    )
    return CertificateAuthority.create(registry, settings, passphrase=passphrase)


@pytest.fixture(scope="module")
def acme() -> Manufacturing:
    return make_manufacturer("Acme Sensors Manufacturing CA")


@dataclass
class ESTServer:
    """A running uvicorn (TLS) with the EST, CRL and OCSP routers."""

    url: str
    ca: CertificateAuthority
    registry: TrustRegistry
    root_file: Path
    directory: Path
    denied: dict[str, str] = field(default_factory=dict)
    """device id -> reason: what the renewal gate refuses."""
    offset: list[dt.timedelta] = field(default_factory=lambda: [dt.timedelta(0)])
    """The server's clock runs this far ahead (to test expiry without waiting)."""

    def client(
        self, cert: x509.Certificate | None = None, key: ec.EllipticCurvePrivateKey | None = None
    ) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.root_file))
        if cert is not None and key is not None:
            name = secrets.token_hex(6)
            cert_file = self.directory / f"{name}.pem"
            key_file = self.directory / f"{name}.key"
            cert_file.write_bytes(cert.public_bytes(PEM))
            key_file.write_bytes(key_pem(key))
            context.load_cert_chain(cert_file, key_file)
        return httpx.Client(base_url=self.url, verify=context, timeout=10.0)


@pytest.fixture(scope="module")
def est_server(
    ca: CertificateAuthority,
    registry: TrustRegistry,
    acme: Manufacturing,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ESTServer]:
    directory = tmp_path_factory.mktemp("tls")
    server_cert, server_key = ca.issue_keypair(
        "console", "console-test", dns_names=["localhost"], ip_addresses=["127.0.0.1"]
    )
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(server_cert.public_bytes(PEM) + ca.issuing.public_bytes(PEM))
    key_file.write_bytes(key_pem(server_key))
    root_file = directory / "root.pem"
    root_file.write_bytes(ca.root.public_bytes(PEM))
    client_cas = directory / "client-cas.pem"
    client_cas.write_bytes(ca.chain_pem() + acme.root.public_bytes(PEM))
    state = ESTServer("", ca, registry, root_file, directory)

    def gate(device_id: str) -> tuple[bool, str]:
        reason = state.denied.get(device_id)
        return (reason is None, reason or "healthy")

    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC) + state.offset[0]  # noqa: E731
    app = FastAPI()
    app.include_router(
        est_router(
            ca,
            registry,
            settings=ESTSettings(manufacturers=(Manufacturer("acme", (acme.root,), "acme"),)),
            renewal_gate=gate,
            clock=clock,
        )
    )
    app.include_router(revocation_router(ca))
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=TLSExtensionH11Protocol,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
        ssl_cert_reqs=ssl.CERT_OPTIONAL,
        ssl_ca_certs=str(client_cas),
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    state.url = f"https://127.0.0.1:{port}"
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
