"""EST (RFC 7030) over real TLS: a uvicorn server with a certificate from the FieldWard CA, httpx
(and curl/openssl when installed) posting base64 PKCS#10 requests; token and IDevID bootstrap,
renewal over mutual TLS, and every refusal."""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from fastapi import FastAPI

from fieldward.trust.ca import CertificateAuthority
from fieldward.trust.est import CSRATTRS_DER, ESTSettings, Manufacturer, est_router
from fieldward.trust.registry import TrustRegistry

from .conftest import ESTServer, Manufacturing, csr_body, make_csr, make_manufacturer

PKCS10 = {"Content-Type": "application/pkcs10"}


def _certs(response: httpx.Response) -> list[x509.Certificate]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/pkcs7-mime")
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(response.content))


def _basic(token: str) -> dict[str, str]:
    return {**PKCS10, "Authorization": "Basic " + base64.b64encode(f"device:{token}".encode()).decode()}


def enroll(
    server: ESTServer, device_id: str, group: str = "plant-a"
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    token = server.registry.create_token(group)
    csr, key = make_csr(device_id)
    with server.client() as client:
        response = client.post("/.well-known/est/simpleenroll", content=csr_body(csr), headers=_basic(token))
    (cert,) = _certs(response)
    return cert, key


def test_cacerts_over_tls(est_server: ESTServer) -> None:
    with est_server.client() as client:
        response = client.get("/.well-known/est/cacerts")
    assert response.headers["content-transfer-encoding"] == "base64"
    certs = _certs(response)  # a SET OF in DER: the order is the encoding's, not ours
    assert len(certs) == 2
    assert set(certs) == {est_server.ca.issuing, est_server.ca.root}


def test_csrattrs(est_server: ESTServer, tmp_path: Path) -> None:
    with est_server.client() as client:
        response = client.get("/.well-known/est/csrattrs")
    assert response.headers["content-type"] == "application/csrattrs"
    der = base64.b64decode(response.content)
    assert der == CSRATTRS_DER
    if shutil.which("openssl"):
        (tmp_path / "attrs.der").write_bytes(der)
        text = subprocess.run(
            ["openssl", "asn1parse", "-inform", "DER", "-in", str(tmp_path / "attrs.der")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert "ecdsa-with-SHA256" in text
        assert "prime256v1" in text
        assert "id-ecPublicKey" in text


def test_token_enrollment_is_single_use(est_server: ESTServer) -> None:
    token = est_server.registry.create_token("plant-a")
    csr, key = make_csr("dev-token-1")
    with est_server.client() as client:
        response = client.post("/.well-known/est/simpleenroll", content=csr_body(csr), headers=_basic(token))
        (cert,) = _certs(response)
        again = client.post("/.well-known/est/simpleenroll", content=csr_body(csr), headers=_basic(token))
    assert cert.public_key() == key.public_key()
    assert cert.subject.rfc4514_string() == "CN=dev-token-1,OU=plant-a,O=FieldWard"
    assert est_server.ca.verify([cert]) == cert
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(hours=24, minutes=5)
    device = est_server.registry.device("dev-token-1")
    assert device is not None
    assert device.group == "plant-a"
    assert device.bootstrap == "token"
    assert again.status_code == 401
    assert "already used" in again.text
    assert "Basic" in again.headers["www-authenticate"]


def test_bearer_token_bound_to_a_device(est_server: ESTServer) -> None:
    token = est_server.registry.create_token("plant-a", device_id="dev-bound")
    bearer = {**PKCS10, "Authorization": f"Bearer {token}"}
    with est_server.client() as client:
        wrong = client.post(
            "/.well-known/est/simpleenroll", content=csr_body(make_csr("dev-other")[0]), headers=bearer
        )
        right = client.post(
            "/.well-known/est/simpleenroll", content=csr_body(make_csr("dev-bound")[0]), headers=bearer
        )
    assert wrong.status_code == 401
    assert "another device" in wrong.text
    assert _certs(right)[0].subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "dev-bound"


def test_expired_and_unknown_tokens(est_server: ESTServer) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    expired = est_server.registry.create_token("plant-a", ttl=dt.timedelta(hours=1), now=long_ago)
    body = csr_body(make_csr("dev-expired-token")[0])
    with est_server.client() as client:
        old = client.post("/.well-known/est/simpleenroll", content=body, headers=_basic(expired))
        forged = client.post("/.well-known/est/simpleenroll", content=body, headers=_basic("fwenr_forged"))
        anonymous = client.post("/.well-known/est/simpleenroll", content=body, headers=PKCS10)
    assert old.status_code == forged.status_code == anonymous.status_code == 401
    assert "expired" in old.text
    assert 'realm="fieldward-est"' in anonymous.headers["www-authenticate"]
    assert est_server.registry.device("dev-expired-token") is None


def test_a_malformed_csr_does_not_spend_the_token(est_server: ESTServer) -> None:
    token = est_server.registry.create_token("plant-a")
    valid, _ = make_csr("dev-retry")
    broken = bytearray(valid.public_bytes(serialization.Encoding.DER))
    broken[-1] ^= 0x01
    with est_server.client() as client:
        garbage = client.post("/.well-known/est/simpleenroll", content=b"bm90IGEgQ1NS", headers=_basic(token))
        badsig = client.post(
            "/.well-known/est/simpleenroll", content=base64.b64encode(bytes(broken)), headers=_basic(token)
        )
        wrong_type = client.post(
            "/.well-known/est/simpleenroll",
            content=csr_body(valid),
            headers={**_basic(token), "Content-Type": "text/plain"},
        )
        huge = client.post("/.well-known/est/simpleenroll", content=b"A" * 70_000, headers=_basic(token))
        no_cn = client.post(
            "/.well-known/est/simpleenroll", content=csr_body(make_csr(None)[0]), headers=_basic(token)
        )
        ok = client.post("/.well-known/est/simpleenroll", content=csr_body(valid), headers=_basic(token))
    assert garbage.status_code == 400
    assert "CSR" in garbage.text
    assert badsig.status_code == 400
    assert "signature" in badsig.text
    assert wrong_type.status_code == 415
    assert huge.status_code == 413
    assert no_cn.status_code == 400
    assert "CN" in no_cn.text
    assert len(_certs(ok)) == 1


def test_idevid_bootstrap_over_mutual_tls(est_server: ESTServer, acme: Manufacturing) -> None:
    idevid, idevid_key = acme.idevid("ACME-0001")
    csr, key = make_csr("ACME-0001")
    with est_server.client(idevid, idevid_key) as client:
        (cert,) = _certs(client.post("/.well-known/est/simpleenroll", content=csr_body(csr), headers=PKCS10))
        mismatch = client.post(
            "/.well-known/est/simpleenroll", content=csr_body(make_csr("ACME-9999")[0]), headers=PKCS10
        )
    assert cert.public_key() == key.public_key()
    assert cert.subject.rfc4514_string() == "CN=ACME-0001,OU=acme,O=FieldWard"
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(hours=12, minutes=5)
    device = est_server.registry.device("ACME-0001")
    assert device is not None
    assert device.bootstrap == "idevid"
    assert device.group == "acme"
    group = est_server.registry.group("acme")
    assert group is not None
    assert (group.policy, group.update_channel) == ("acme-devices", "beta")
    assert mismatch.status_code == 403
    assert "IDevID" in mismatch.text


def test_an_unknown_manufacturer_is_refused_at_the_handshake(est_server: ESTServer) -> None:
    rogue, rogue_key = make_manufacturer("Rogue Maker").idevid("ROGUE-1")
    with est_server.client(rogue, rogue_key) as client, pytest.raises(httpx.HTTPError):
        client.post("/.well-known/est/simpleenroll", content=csr_body(make_csr("ROGUE-1")[0]), headers=PKCS10)
    assert est_server.registry.device("ROGUE-1") is None


def test_client_certificate_header_only_from_a_trusted_proxy(
    ca: CertificateAuthority, registry: TrustRegistry, acme: Manufacturing
) -> None:
    """Behind a TLS-terminating proxy the RFC 9440 Client-Cert header carries the certificate."""
    app = FastAPI()
    settings = ESTSettings(
        manufacturers=(Manufacturer("acme", (acme.root,), "acme"),), trusted_proxies=frozenset({"10.9.9.9"})
    )
    app.include_router(est_router(ca, registry, settings=settings))
    idevid, _ = acme.idevid("ACME-PROXY")
    rogue, _ = make_manufacturer("Rogue Maker").idevid("ACME-PROXY")

    def header(cert: x509.Certificate) -> dict[str, str]:
        der = cert.public_bytes(serialization.Encoding.DER)
        return {**PKCS10, "Client-Cert": ":" + base64.b64encode(der).decode() + ":"}

    body = csr_body(make_csr("ACME-PROXY")[0])

    async def post(address: str, cert: x509.Certificate) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(address, 4444))
        async with httpx.AsyncClient(transport=transport, base_url="http://est") as client:
            return await client.post("/.well-known/est/simpleenroll", content=body, headers=header(cert))

    import asyncio

    untrusted = asyncio.run(post("192.0.2.1", idevid))
    foreign = asyncio.run(post("10.9.9.9", rogue))
    trusted = asyncio.run(post("10.9.9.9", idevid))
    assert untrusted.status_code == 401  # the header was ignored
    assert foreign.status_code == 403
    assert "manufacturer" in foreign.text
    assert len(_certs(trusted)) == 1


def test_reenroll_with_a_new_key(est_server: ESTServer) -> None:
    cert, key = enroll(est_server, "dev-renew")
    csr, new_key = make_csr(None, subject=cert.subject)
    with est_server.client(cert, key) as client:
        (renewed,) = _certs(
            client.post("/.well-known/est/simplereenroll", content=csr_body(csr), headers=PKCS10)
        )
        # a simple client sends just its CN: accepted too
        (again,) = _certs(
            client.post(
                "/.well-known/est/simplereenroll",
                content=csr_body(make_csr("dev-renew", key)[0]),
                headers=PKCS10,
            )
        )
    assert renewed.subject == cert.subject
    assert renewed.serial_number != cert.serial_number
    assert renewed.public_key() == new_key.public_key()
    assert again.public_key() == key.public_key()
    assert [r.serial for r in est_server.registry.certificates("dev-renew")] == [
        format(c.serial_number, "x") for c in (cert, renewed, again)
    ]


def test_reenroll_refusals(est_server: ESTServer) -> None:
    cert, key = enroll(est_server, "dev-refuse")
    body = csr_body(make_csr(None, subject=cert.subject)[0])
    with est_server.client() as anonymous:
        assert (
            anonymous.post("/.well-known/est/simplereenroll", content=body, headers=PKCS10).status_code == 401
        )
    with est_server.client(cert, key) as client:
        wrong = client.post(
            "/.well-known/est/simplereenroll",
            content=csr_body(make_csr("dev-someone-else")[0]),
            headers=PKCS10,
        )
        assert wrong.status_code == 403
        assert "subject" in wrong.text
        est_server.denied["dev-refuse"] = "no fresh healthy attestation verdict"
        gated = client.post("/.well-known/est/simplereenroll", content=body, headers=PKCS10)
        del est_server.denied["dev-refuse"]
        assert gated.status_code == 403
        assert "no fresh healthy attestation verdict" in gated.text
        est_server.registry.set_quarantine("dev-refuse", True, "critical alert")
        quarantined = client.post("/.well-known/est/simplereenroll", content=body, headers=PKCS10)
        assert quarantined.status_code == 403
        assert "quarantined" in quarantined.text
        token = est_server.registry.create_token("plant-a")
        enroll_q = client.post(
            "/.well-known/est/simpleenroll",
            content=csr_body(make_csr("dev-refuse")[0]),
            headers=_basic(token),
        )
        assert enroll_q.status_code == 403
        assert "quarantined" in enroll_q.text
        est_server.registry.set_quarantine("dev-refuse", False)
        est_server.offset[0] = dt.timedelta(hours=25)
        try:
            expired = client.post("/.well-known/est/simplereenroll", content=body, headers=PKCS10)
        finally:
            est_server.offset[0] = dt.timedelta(0)
        assert expired.status_code == 403
        assert "expired" in expired.text
        assert len(_certs(client.post("/.well-known/est/simplereenroll", content=body, headers=PKCS10))) == 1
        est_server.ca.revoke(cert.serial_number, "key_compromise")
        revoked = client.post("/.well-known/est/simplereenroll", content=body, headers=PKCS10)
        assert revoked.status_code == 403
        assert "revoked" in revoked.text


def test_an_idevid_cannot_renew(est_server: ESTServer, acme: Manufacturing) -> None:
    idevid, key = acme.idevid("ACME-0002")
    with est_server.client(idevid, key) as client:
        response = client.post(
            "/.well-known/est/simplereenroll", content=csr_body(make_csr("ACME-0002")[0]), headers=PKCS10
        )
    assert response.status_code == 403
    assert "chain" in response.text


@pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("curl")), reason="needs openssl and curl")
def test_openssl_csr_enrolled_with_curl(est_server: ESTServer, tmp_path: Path) -> None:
    token = est_server.registry.create_token("plant-a")
    key_file, csr_file = tmp_path / "dev.key", tmp_path / "dev.csr"
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key_file),
            "-subj",
            "/CN=dev-openssl",
            "-outform",
            "DER",
            "-out",
            str(csr_file),
        ],
        check=True,
        capture_output=True,
    )
    (tmp_path / "dev.b64").write_bytes(base64.encodebytes(csr_file.read_bytes()))
    response = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--cacert",
            str(est_server.root_file),
            "--user",
            f"dev-openssl:{token}",
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            f"@{tmp_path / 'dev.b64'}",
            f"{est_server.url}/.well-known/est/simpleenroll",
        ],
        check=True,
        capture_output=True,
    ).stdout
    (tmp_path / "p7.der").write_bytes(base64.b64decode(response))
    text = subprocess.run(
        ["openssl", "pkcs7", "-inform", "DER", "-in", str(tmp_path / "p7.der"), "-print_certs"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "CN=dev-openssl" in text.replace(" = ", "=")
    (cert,) = pkcs7.load_pem_pkcs7_certificates(
        subprocess.run(
            ["openssl", "pkcs7", "-inform", "DER", "-in", str(tmp_path / "p7.der"), "-outform", "PEM"],
            check=True,
            capture_output=True,
        ).stdout
    )
    assert est_server.ca.verify([cert]) == cert
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "chain.pem").write_bytes(est_server.ca.chain_pem())
    verified = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "chain.pem"),
            "-purpose",
            "sslclient",
            str(tmp_path / "cert.pem"),
        ],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stderr
