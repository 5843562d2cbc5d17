"""Revocation: the registry, the signed CRL and the OCSP responder (RFC 6960) served over TLS,
checked with cryptography and, when installed, openssl."""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from fieldward.trust.ca import CertificateAuthority
from fieldward.trust.errors import TrustError
from fieldward.trust.registry import TrustRegistry

from .conftest import ESTServer, make_csr, make_manufacturer

DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM


def _request(cert: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(DER)


def _check_signed(response: ocsp.OCSPResponse, ca: CertificateAuthority) -> None:
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    ca.issuing.public_key().verify(  # type: ignore[call-arg]
        response.signature,
        response.tbs_response_bytes,
        __import__("cryptography.hazmat.primitives.asymmetric.ec", fromlist=["ECDSA"]).ECDSA(hashes.SHA256()),
    )


def test_registry_revocation_rules(ca: CertificateAuthority, registry: TrustRegistry) -> None:
    cert, _ = ca.issue_keypair("device", "dev-rev-rules")
    with pytest.raises(TrustError, match="reason"):
        registry.revoke(cert.serial_number, "because")
    with pytest.raises(TrustError, match="no certificate"):
        registry.revoke(12345, "superseded")
    first = registry.revoke(cert.serial_number, "superseded")
    again = registry.revoke(cert.serial_number, "key_compromise")
    assert first.revoked_at == again.revoked_at
    assert again.revocation_reason == "superseded"


def test_crl_lists_revoked_certificates(est_server: ESTServer, tmp_path: Path) -> None:
    ca = est_server.ca
    revoked, _ = ca.issue_keypair("device", "dev-crl-revoked")
    kept, _ = ca.issue_keypair("device", "dev-crl-kept")
    ca.revoke(revoked.serial_number, "key_compromise")
    with est_server.client() as client:
        response = client.get("/trust/crl")
        pem = client.get("/trust/crl.pem")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(response.content)
    assert x509.load_pem_x509_crl(pem.content).issuer == ca.issuing.subject
    assert crl.is_signature_valid(ca.issuing.public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc is not None
    assert crl.last_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(hours=24)
    entry = crl.get_revoked_certificate_by_serial_number(revoked.serial_number)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        is x509.ReasonFlags.key_compromise
    )
    assert crl.get_revoked_certificate_by_serial_number(kept.serial_number) is None
    # an expired revoked certificate leaves the CRL (RFC 5280 3.3)
    later = ca.crl(dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    assert later.get_revoked_certificate_by_serial_number(revoked.serial_number) is None
    if shutil.which("openssl"):
        (tmp_path / "crl.der").write_bytes(response.content)
        (tmp_path / "chain.pem").write_bytes(ca.chain_pem())
        (tmp_path / "revoked.pem").write_bytes(revoked.public_bytes(PEM))
        (tmp_path / "kept.pem").write_bytes(kept.public_bytes(PEM))
        subprocess.run(
            [
                "openssl",
                "crl",
                "-inform",
                "DER",
                "-in",
                str(tmp_path / "crl.der"),
                "-out",
                str(tmp_path / "crl.pem"),
            ],
            check=True,
            capture_output=True,
        )
        text = subprocess.run(
            ["openssl", "crl", "-in", str(tmp_path / "crl.pem"), "-noout", "-text"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert format(revoked.serial_number, "X") in text.replace(":", "").upper()

        def openssl_verify(name: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    "openssl",
                    "verify",
                    "-crl_check",
                    "-CAfile",
                    str(tmp_path / "chain.pem"),
                    "-CRLfile",
                    str(tmp_path / "crl.pem"),
                    str(tmp_path / name),
                ],
                capture_output=True,
                text=True,
            )

        assert openssl_verify("kept.pem").returncode == 0
        bad = openssl_verify("revoked.pem")
        assert bad.returncode != 0
        assert "revoked" in (bad.stdout + bad.stderr)


def test_ocsp_good_revoked_unknown(est_server: ESTServer) -> None:
    ca = est_server.ca
    good, _ = ca.issue_keypair("device", "dev-ocsp-good")
    bad, _ = ca.issue_keypair("device", "dev-ocsp-bad")
    ca.revoke(bad.serial_number, "cessation_of_operation")
    stranger = ca.issue(make_csr("dev-ocsp-x")[0], "device", identity="dev-ocsp-x", record=False)
    headers = {"Content-Type": "application/ocsp-request"}
    answers = {}
    with est_server.client() as client:
        for name, cert in (("good", good), ("bad", bad), ("unknown", stranger)):
            response = client.post(
                "/trust/ocsp",
                content=_request(cert, ca.issuing, nonce=b"n-" + name.encode()),
                headers=headers,
            )
            assert response.headers["content-type"] == "application/ocsp-response", response.text
            answers[name] = ocsp.load_der_ocsp_response(response.content)
        via_get = client.get(
            "/trust/ocsp/" + quote(base64.b64encode(_request(bad, ca.issuing)).decode(), safe="")
        )
    for name, response in answers.items():
        _check_signed(response, ca)
        nonce = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        assert nonce == b"n-" + name.encode()
    assert answers["good"].certificate_status is ocsp.OCSPCertStatus.GOOD
    assert answers["bad"].certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answers["bad"].revocation_reason is x509.ReasonFlags.cessation_of_operation
    assert answers["unknown"].certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert answers["good"].serial_number == good.serial_number
    got = ocsp.load_der_ocsp_response(via_get.content)
    assert got.certificate_status is ocsp.OCSPCertStatus.REVOKED


def test_ocsp_refuses_other_issuers_and_garbage(est_server: ESTServer) -> None:
    maker = make_manufacturer("Other CA")
    foreign, _ = maker.idevid("X-1")
    with est_server.client() as client:
        other = client.post("/trust/ocsp", content=_request(foreign, maker.root))
        garbage = client.post("/trust/ocsp", content=b"\x30\x03garbage")
        empty_get = client.get("/trust/ocsp/%%%")
    assert ocsp.load_der_ocsp_response(other.content).response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    assert (
        ocsp.load_der_ocsp_response(garbage.content).response_status
        is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )
    assert (
        ocsp.load_der_ocsp_response(empty_get.content).response_status
        is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_ocsp_client_sees_the_revocation(est_server: ESTServer, tmp_path: Path) -> None:
    ca = est_server.ca
    cert, _ = ca.issue_keypair("device", "dev-ocsp-openssl")
    ca.revoke(cert.serial_number, "key_compromise")
    (tmp_path / "issuer.pem").write_bytes(ca.issuing.public_bytes(PEM))
    (tmp_path / "chain.pem").write_bytes(ca.chain_pem())
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(PEM))
    subprocess.run(
        [
            "openssl",
            "ocsp",
            "-issuer",
            str(tmp_path / "issuer.pem"),
            "-cert",
            str(tmp_path / "cert.pem"),
            "-reqout",
            str(tmp_path / "req.der"),
        ],
        check=True,
        capture_output=True,
    )
    with est_server.client() as client:
        response = client.post(
            "/trust/ocsp",
            content=(tmp_path / "req.der").read_bytes(),
            headers={"Content-Type": "application/ocsp-request"},
        )
    (tmp_path / "resp.der").write_bytes(response.content)
    done = subprocess.run(
        [
            "openssl",
            "ocsp",
            "-respin",
            str(tmp_path / "resp.der"),
            "-issuer",
            str(tmp_path / "issuer.pem"),
            "-CAfile",
            str(tmp_path / "chain.pem"),
            "-cert",
            str(tmp_path / "cert.pem"),
            "-no_nonce",
        ],
        capture_output=True,
        text=True,
    )
    assert "Response verify OK" in done.stderr + done.stdout, done.stderr
    assert f"{tmp_path / 'cert.pem'}: revoked" in done.stdout
    assert "keyCompromise" in done.stdout
