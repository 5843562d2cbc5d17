"""The FieldWard CA: key protection at rest, profiles and their extensions, CSR checking (with a
hypothesis fuzz of the parser: only TrustError escapes), chain verification, the benchmark."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldward.trust.ca import (
    CA_FILES,
    PASSPHRASE_ENV,
    CASettings,
    CertificateAuthority,
    identity_of,
    issue_many,
    load_passphrase,
    parse_csr,
    verify_chain,
)
from fieldward.trust.errors import (
    CertificateExpiredError,
    CSRError,
    RevokedError,
    TrustError,
    TrustStoreError,
)
from fieldward.trust.registry import TrustRegistry

from .conftest import make_csr, make_manufacturer

DER = serialization.Encoding.DER


def _csr_with(key: object, cn: str = "dev-x") -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(DER)  # type: ignore[arg-type]


def test_ca_files_are_encrypted_private_and_reopen(
    ca: CertificateAuthority, registry: TrustRegistry, passphrase: bytes
) -> None:
    directory = ca.settings.ca_directory()
    for name in ("root_key", "issuing_key"):
        path = directory / CA_FILES[name]
        data = path.read_bytes()
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with pytest.raises(TypeError):  # cryptography itself needs the passphrase
            serialization.load_pem_private_key(data, password=None)
    reopened = CertificateAuthority.open(registry, ca.settings, passphrase=passphrase)
    assert reopened.issuing == ca.issuing
    assert reopened.root == ca.root
    assert "PRIVATE" not in repr(reopened)
    with pytest.raises(TrustStoreError, match="wrong passphrase"):
        CertificateAuthority.open(registry, ca.settings, passphrase=b"not-the-passphrase!")
    with pytest.raises(TrustStoreError, match="already exists"):
        CertificateAuthority.create(registry, ca.settings, passphrase=passphrase)


def test_an_unencrypted_ca_key_is_refused(
    registry: TrustRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = b"correct horse battery staple"
    settings = CASettings(directory=tmp_path / "ca")
    with caplog.at_level(logging.DEBUG):
        created = CertificateAuthority.create(registry, settings, passphrase=secret)
    assert secret.decode() not in caplog.text
    assert "PRIVATE KEY" not in caplog.text
    key_file = tmp_path / "ca" / CA_FILES["issuing_key"]
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=secret)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(TrustStoreError, match="not encrypted") as info:
        CertificateAuthority.open(registry, settings, passphrase=secret)
    assert secret.decode() not in str(info.value)
    assert created.issuing.subject.rfc4514_string() == "CN=FieldWard Issuing CA,O=FieldWard"


def test_passphrase_from_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    with pytest.raises(TrustStoreError, match=PASSPHRASE_ENV):
        load_passphrase()
    monkeypatch.setenv(PASSPHRASE_ENV, "short")
    with pytest.raises(TrustStoreError, match="at least"):
        load_passphrase()
    monkeypatch.setenv(PASSPHRASE_ENV, "a long enough passphrase")
    assert load_passphrase() == b"a long enough passphrase"
    secret_file = tmp_path / "pass"
    secret_file.write_bytes(b"from the file, 123\n")
    assert load_passphrase(secret_file) == b"from the file, 123"
    with pytest.raises(TrustStoreError, match="cannot read"):
        load_passphrase(tmp_path / "missing")


def test_device_certificate_profile(ca: CertificateAuthority, registry: TrustRegistry) -> None:
    csr, key = make_csr("dev-profile-1")
    now = dt.datetime.now(dt.UTC)
    cert = ca.issue(
        parse_csr(csr.public_bytes(DER)), "device", identity="dev-profile-1", group="plant-a", now=now
    )
    assert cert.not_valid_after_utc - now == dt.timedelta(hours=24) - dt.timedelta(
        microseconds=now.microsecond
    )
    assert cert.subject.rfc4514_string() == "CN=dev-profile-1,OU=plant-a,O=FieldWard"
    assert cert.issuer == ca.issuing.subject
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).critical
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:fieldward:device:dev-profile-1"]
    assert identity_of(cert) == ("device", "dev-profile-1")
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    issuer_ski = ca.issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == issuer_ski.digest
    crl_dp = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crl_dp[0].full_name == [x509.UniformResourceIdentifier("https://fieldward.test/trust/crl")]
    aia = ext.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia[0].access_location.value == "https://fieldward.test/trust/ocsp"
    record = registry.certificate(cert.serial_number)
    assert record is not None
    assert record.device_id == "dev-profile-1"
    assert not record.revoked
    assert ca.verify([cert], now) == cert


@pytest.mark.parametrize("profile", ["sensor", "console"])
def test_sensor_and_console_profiles(ca: CertificateAuthority, profile: str) -> None:
    cert, _key = ca.issue_keypair(
        profile, f"{profile}-1", dns_names=["fw.example"], ip_addresses=["10.0.0.5"]
    )  # type: ignore[arg-type]
    usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fw.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > dt.timedelta(days=300)


def test_rsa_csrs_are_accepted_with_key_encipherment(ca: CertificateAuthority) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = ca.issue(parse_csr(_csr_with(key)), "device", identity="dev-rsa")
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


def test_csr_encodings_are_accepted() -> None:
    csr, _ = make_csr("dev-enc")
    der = csr.public_bytes(DER)
    for data in (
        der,
        base64.b64encode(der),
        base64.encodebytes(der),
        csr.public_bytes(serialization.Encoding.PEM),
    ):
        assert parse_csr(data).subject == csr.subject


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "malformed|neither"),
        (b"garbage that is not a CSR", "neither|malformed"),
        (base64.b64encode(b"\x30\x03\x02\x01\x01"), "malformed"),
        (b"-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----", "neither"),
    ],
)
def test_malformed_csrs(data: bytes, message: str) -> None:
    with pytest.raises(CSRError, match=message):
        parse_csr(data)


def test_a_csr_with_a_wrong_signature_is_refused() -> None:
    csr, _ = make_csr("dev-sig")
    der = bytearray(csr.public_bytes(DER))
    der[-1] ^= 0x01
    with pytest.raises(CSRError, match="signature"):
        parse_csr(bytes(der))
    # a CSR whose subject was altered after signing
    other, _ = make_csr("dev-sig")
    raw = bytearray(other.public_bytes(DER))
    at = raw.index(b"dev-sig")
    raw[at : at + 7] = b"dev-SIG"
    with pytest.raises(CSRError, match="signature"):
        parse_csr(bytes(raw))


@pytest.mark.parametrize(
    "key",
    [
        ed25519.Ed25519PrivateKey.generate(),
        ec.generate_private_key(ec.SECP256K1()),
        rsa.generate_private_key(public_exponent=65537, key_size=1024),
    ],
    ids=["ed25519", "secp256k1", "rsa1024"],
)
def test_unsupported_keys_are_refused(key: object) -> None:
    with pytest.raises(CSRError, match="unsupported"):
        parse_csr(_csr_with(key))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_sha1_signed_csr_is_refused(tmp_path: Path) -> None:
    # cryptography refuses to sign with SHA-1, so the old-style CSR comes from openssl
    key_file = tmp_path / "k.pem"
    subprocess.run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            str(key_file),
        ],
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        ["openssl", "req", "-new", "-key", str(key_file), "-sha1", "-subj", "/CN=old", "-outform", "DER"],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip("this openssl refuses SHA-1 signatures")
    with pytest.raises(CSRError, match="weak hash"):
        parse_csr(done.stdout)


_VALID = make_csr("fuzz-device")[0].public_bytes(DER)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=600), st.binary(max_size=600).map(base64.b64encode)))
def test_fuzz_parse_csr_raises_only_trust_errors(data: bytes) -> None:
    with contextlib.suppress(TrustError):  # any other exception fails the test
        parse_csr(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_mutated_csrs_raise_only_trust_errors(edits: list[tuple[int, int]]) -> None:
    data = bytearray(_VALID)
    for at, value in edits:
        data[at] = value
    try:
        csr = parse_csr(bytes(data))
    except TrustError:
        return
    assert csr.is_signature_valid  # whatever is accepted verifies


def test_verify_refuses_expired_revoked_and_foreign(ca: CertificateAuthority) -> None:
    now = dt.datetime.now(dt.UTC)
    cert, _ = ca.issue_keypair("device", "dev-verify")
    assert ca.verify([cert], now) == cert
    with pytest.raises(CertificateExpiredError, match="expired"):
        ca.verify([cert], now + dt.timedelta(hours=25))
    with pytest.raises(CertificateExpiredError, match="not yet valid"):
        ca.verify([cert], now - dt.timedelta(hours=1))
    unrecorded = ca.issue(make_csr("dev-ghost")[0], "device", identity="dev-ghost", record=False)
    with pytest.raises(TrustError, match="unknown to the registry"):
        ca.verify([unrecorded], now)
    with pytest.raises(TrustError, match="CA certificate"):
        ca.verify([ca.issuing], now)
    with pytest.raises(TrustError, match="no certificate"):
        ca.verify([], now)
    maker = make_manufacturer("Other Maker")
    foreign, _ = maker.idevid("SN-1")
    with pytest.raises(TrustError, match="does not chain"):
        ca.verify([foreign], now)
    ca.revoke(cert.serial_number, "key_compromise")
    with pytest.raises(RevokedError, match="key_compromise"):
        ca.verify([cert], now)


def test_verify_chain_walks_intermediates() -> None:
    maker = make_manufacturer("Root Maker")
    cert, _ = maker.idevid("SN-7")
    assert verify_chain([cert], [maker.root])[-1] == maker.root
    with pytest.raises(CertificateExpiredError):
        verify_chain([cert], [maker.root], dt.datetime.now(dt.UTC) + dt.timedelta(days=4000))


def test_group_validity_and_bad_profiles(ca: CertificateAuthority) -> None:
    csr, _ = make_csr("dev-val")
    cert = ca.issue(csr, "device", identity="dev-val", validity=dt.timedelta(hours=2))
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(hours=2, minutes=5)
    with pytest.raises(TrustError, match="profile"):
        ca.issue(csr, "root", identity="dev-val")  # type: ignore[arg-type]
    with pytest.raises(TrustError, match="device id"):
        ca.issue(csr, "device", identity="bad id/with slash")
    with pytest.raises(TrustError, match="DNS"):
        ca.issue(csr, "device", identity="dev-val", dns_names=["x.example"])


def test_issue_many_measures_a_rate() -> None:
    rate = issue_many(50)
    assert rate > 10  # certificates per second; a few hundred to thousands on one core
    assert os.cpu_count()
