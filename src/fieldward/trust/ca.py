"""The FieldWard certificate authority: a root CA and an issuing CA (ECDSA P-256), the device,
sensor and console certificate profiles, CSR checking, revocation and chain verification.

Layout of the CA directory (``<data dir>/trust`` by default, mode 0700)::

    root-ca.pem          root CA certificate (self-signed, 20 years, pathLen 1)
    root-ca.key.pem      its key, PKCS#8 encrypted with the CA passphrase (mode 0600)
    issuing-ca.pem       issuing CA certificate (signed by the root, 5 years, pathLen 0)
    issuing-ca.key.pem   its key, PKCS#8 encrypted with the CA passphrase (mode 0600)
    chain.pem            issuing CA then root CA (what EST ``cacerts`` serves)

Only the issuing key is loaded to run: the root key is used once, when the CA is created, and may
be moved offline afterwards. A key file that is not encrypted is refused. The passphrase comes from
a file (``CASettings.passphrase_file``) or ``$FIELDWARD_CA_PASSPHRASE``; neither keys nor the
passphrase are ever logged or put into an error message.

:meth:`CertificateAuthority.verify` is the one chain check every component uses (EST renewal, the
broker integration, attestation): it refuses certificates that are expired, not yet valid, not
issued by this CA, not known to the registry, or revoked.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from fieldward.store.database import data_dir
from fieldward.trust.errors import (
    CertificateExpiredError,
    CSRError,
    RevokedError,
    TrustError,
    TrustStoreError,
)
from fieldward.trust.registry import TrustRegistry, check_device_id, serial_hex
from fieldward.trust.revocation import build_crl, ocsp_response

__all__ = [
    "CA_FILES",
    "PASSPHRASE_ENV",
    "CASettings",
    "CertificateAuthority",
    "Profile",
    "identity_of",
    "issue_many",
    "load_passphrase",
    "parse_csr",
    "verify_chain",
]

log = logging.getLogger(__name__)

Profile = Literal["device", "sensor", "console"]
PASSPHRASE_ENV = "FIELDWARD_CA_PASSPHRASE"  # noqa: S105 - the variable name, not a secret
CA_FILES = {
    "root": "root-ca.pem",
    "root_key": "root-ca.key.pem",
    "issuing": "issuing-ca.pem",
    "issuing_key": "issuing-ca.key.pem",
    "chain": "chain.pem",
}
MIN_PASSPHRASE = 12
MAX_CSR_BYTES = 64 * 1024
MAX_CHAIN_DEPTH = 8
URN_PREFIX = "urn:fieldward:"
_ENCRYPTED_PEM = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
_CSR_CURVES: tuple[type[ec.EllipticCurve], ...] = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_WEAK_HASHES = ("md5", "sha1")

CAKey = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CASettings:
    """Typed settings of the CA; thresholds are settings, not literals."""

    directory: Path | None = None
    """Where the CA files live; None: ``<data_dir()>/trust``."""
    passphrase_file: Path | None = None
    """A file holding the passphrase of the CA keys; None: ``$FIELDWARD_CA_PASSPHRASE``."""
    organization: str = "FieldWard"
    device_validity: dt.timedelta = dt.timedelta(hours=24)
    sensor_validity: dt.timedelta = dt.timedelta(days=365)
    console_validity: dt.timedelta = dt.timedelta(days=365)
    root_validity: dt.timedelta = dt.timedelta(days=20 * 365)
    issuing_validity: dt.timedelta = dt.timedelta(days=5 * 365)
    backdate: dt.timedelta = dt.timedelta(minutes=5)
    """notBefore is this far in the past, for devices whose clocks run a little behind."""
    crl_validity: dt.timedelta = dt.timedelta(hours=24)
    """A CRL's nextUpdate is this long after its thisUpdate."""
    ocsp_validity: dt.timedelta = dt.timedelta(hours=1)
    """An OCSP answer's nextUpdate is this long after its thisUpdate."""
    crl_url: str | None = None
    """Where the CRL is published (the CRL distribution point of every certificate)."""
    ocsp_url: str | None = None
    """The OCSP responder (the AIA ``id-ad-ocsp`` of every certificate)."""
    leeway: dt.timedelta = field(default=dt.timedelta(0))
    """Clock skew tolerated by :meth:`CertificateAuthority.verify` (0: none)."""

    def ca_directory(self) -> Path:
        return self.directory if self.directory is not None else data_dir() / "trust"

    def validity(self, profile: str) -> dt.timedelta:
        return {
            "device": self.device_validity,
            "sensor": self.sensor_validity,
            "console": self.console_validity,
        }[profile]


def load_passphrase(passphrase_file: Path | None = None) -> bytes:
    """The CA passphrase from ``passphrase_file`` (one trailing newline removed) or the environment.

    Raises :class:`TrustStoreError` when there is none or it is shorter than 12 bytes.
    """
    if passphrase_file is not None:
        try:
            value = Path(passphrase_file).read_bytes()
        except OSError as exc:
            raise TrustStoreError(f"cannot read the CA passphrase file: {exc.strerror}") from None
        value = value.removesuffix(b"\n").removesuffix(b"\r")
    else:
        env = os.environ.get(PASSPHRASE_ENV)
        if env is None:
            raise TrustStoreError(f"no CA passphrase: set {PASSPHRASE_ENV} or give a passphrase file")
        value = env.encode()
    if len(value) < MIN_PASSPHRASE:
        raise TrustStoreError(f"the CA passphrase must have at least {MIN_PASSPHRASE} bytes")
    return value


def _utc(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (refusing to overwrite), then write ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _encrypt(key: CAKey, passphrase: bytes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def _load_key(path: Path, passphrase: bytes) -> CAKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrustStoreError(f"cannot read CA key {path.name}: {exc.strerror}") from None
    if _ENCRYPTED_PEM not in data:
        raise TrustStoreError(f"refusing to use CA key {path.name}: it is not encrypted (PKCS#8)")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise TrustStoreError(f"cannot decrypt CA key {path.name} (wrong passphrase?)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TrustStoreError(f"CA key {path.name} is not an ECDSA key")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise TrustStoreError(f"cannot read CA certificate {path.name}: {exc.strerror}") from None
    except ValueError:
        raise TrustStoreError(f"CA certificate {path.name} is not a PEM certificate") from None


# -- CSRs -----------------------------------------------------------------------------------------


def _csr_bytes(data: bytes) -> bytes:
    """DER from base64 DER (RFC 7030 bodies, whitespace allowed), PEM or raw DER."""
    if data[:1] == b"\x30":  # raw DER: never strip, its last bytes may look like whitespace
        return data
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        body = b"".join(line for line in stripped.splitlines() if line and not line.startswith(b"-----"))
        stripped = body
    if stripped[:1] == b"\x30":
        return stripped
    try:
        return base64.b64decode(b"".join(stripped.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CSRError("the CSR is neither base64 DER, PEM nor DER") from None


def parse_csr(data: bytes) -> x509.CertificateSigningRequest:
    """A PKCS#10 request from ``data``, checked: well-formed, self-signature valid, a supported key
    (ECDSA P-256/P-384/P-521 or RSA 2048-8192) and no MD5/SHA-1 signature.

    Any problem raises :class:`CSRError`; nothing else escapes.
    """
    if len(data) > MAX_CSR_BYTES:
        raise CSRError(f"the CSR is larger than {MAX_CSR_BYTES} bytes")
    der = _csr_bytes(data)
    try:
        csr = x509.load_der_x509_csr(der)
        algorithm = csr.signature_hash_algorithm
        if algorithm is not None and algorithm.name in _WEAK_HASHES:
            raise CSRError("the CSR is signed with a weak hash (use SHA-256 or better)")
        if not csr.is_signature_valid:
            raise CSRError("the CSR's signature does not verify (proof of possession failed)")
        key = csr.public_key()
        _ = csr.subject.rfc4514_string(), list(csr.extensions)
    except CSRError:
        raise
    except (
        ValueError,
        TypeError,
        UnsupportedAlgorithm,
        InvalidSignature,
        x509.InvalidVersion,
    ) as exc:
        raise CSRError(f"malformed CSR: {_short(exc)}") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CSR_CURVES):
            raise CSRError(f"unsupported elliptic curve {key.curve.name} (use P-256 or P-384)")
    elif isinstance(key, rsa.RSAPublicKey):
        if not 2048 <= key.key_size <= 8192:
            raise CSRError(f"unsupported RSA key size {key.key_size} (2048-8192 bits)")
    else:
        raise CSRError(f"unsupported key type {type(key).__name__} (use ECDSA or RSA)")
    return csr


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def csr_common_name(csr: x509.CertificateSigningRequest) -> str | None:
    """The CSR subject's CN (the device id a device asks for), or None."""
    try:
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        raise CSRError("malformed subject in the CSR") from None
    if not names:
        return None
    value = names[0].value
    return value if isinstance(value, str) else None


def identity_of(certificate: x509.Certificate) -> tuple[str, str] | None:
    """``(profile, id)`` from a FieldWard certificate's ``urn:fieldward:<profile>:<id>`` SAN."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(URN_PREFIX):
            profile, _, ident = uri[len(URN_PREFIX) :].partition(":")
            if profile in ("device", "sensor", "console") and ident:
                return profile, ident
    return None


# -- verification ---------------------------------------------------------------------------------


def _check_time(cert: x509.Certificate, now: dt.datetime, leeway: dt.timedelta, what: str) -> None:
    if now + leeway < cert.not_valid_before_utc:
        raise CertificateExpiredError(
            f"{what} is not yet valid (notBefore {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ})"
        )
    if now - leeway > cert.not_valid_after_utc:
        raise CertificateExpiredError(f"{what} expired at {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def verify_chain(
    chain: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: dt.datetime | None = None,
    *,
    leeway: dt.timedelta = dt.timedelta(0),
) -> list[x509.Certificate]:
    """The path from ``chain[0]`` (leaf first, then untrusted intermediates in any order) to one of
    ``anchors``: every signature, CA flag and validity period is checked at ``now``.

    Raises :class:`TrustError` (or :class:`CertificateExpiredError`) when there is no valid path.
    This does not consult revocation: :meth:`CertificateAuthority.verify` adds that for FieldWard
    certificates; manufacturer (IDevID) chains are checked with this alone.
    """
    if not chain:
        raise TrustError("no certificate presented")
    moment = _utc(now)
    leaf = chain[0]
    if _is_ca(leaf):
        raise TrustError("a CA certificate is not a client or device certificate")
    path = [leaf]
    current = leaf
    pool = list(chain[1:])
    for _ in range(MAX_CHAIN_DEPTH):
        _check_time(current, moment, leeway, "the certificate" if current is leaf else "an intermediate CA")
        for anchor in anchors:
            if anchor.subject == current.issuer and _issued_by(current, anchor):
                _check_time(anchor, moment, leeway, "the trust anchor")
                path.append(anchor)
                return path
        for candidate in pool:
            if candidate.subject == current.issuer and _is_ca(candidate) and _issued_by(current, candidate):
                pool.remove(candidate)
                path.append(candidate)
                current = candidate
                break
        else:
            raise TrustError("the certificate does not chain to a trusted CA")
    raise TrustError("the certificate chain is too long")


# -- the CA ---------------------------------------------------------------------------------------


def _name(organization: str, common_name: str, unit: str | None = None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
    ]
    if unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _ca_certificate(
    subject: x509.Name,
    key: CAKey,
    issuer: x509.Certificate | None,
    issuer_key: CAKey,
    path_length: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


class CertificateAuthority:
    """The FieldWard CA: issues, revokes and verifies certificates; signs CRLs and OCSP answers.

    Build one with :meth:`create` (a new CA directory) or :meth:`open` (an existing one), or
    :meth:`open_or_create`.
    """

    def __init__(
        self,
        settings: CASettings,
        registry: TrustRegistry,
        root: x509.Certificate,
        issuing: x509.Certificate,
        issuing_key: CAKey,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.root = root
        self.issuing = issuing
        self._key = issuing_key
        self._issuing_aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        )

    def __repr__(self) -> str:  # never shows the key
        return f"CertificateAuthority({self.issuing.subject.rfc4514_string()!r})"

    # -- construction --

    @classmethod
    def create(
        cls,
        registry: TrustRegistry,
        settings: CASettings = CASettings(),
        *,
        passphrase: bytes | None = None,
        now: dt.datetime | None = None,
    ) -> CertificateAuthority:
        """Create the root and issuing CA in ``settings.ca_directory()`` (which must not hold a CA)."""
        secret = passphrase if passphrase is not None else load_passphrase(settings.passphrase_file)
        if len(secret) < MIN_PASSPHRASE:
            raise TrustStoreError(f"the CA passphrase must have at least {MIN_PASSPHRASE} bytes")
        directory = settings.ca_directory()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if any((directory / name).exists() for name in CA_FILES.values()):
            raise TrustStoreError(f"a CA already exists in {directory}")
        moment = _utc(now)
        not_before = moment - settings.backdate
        root_key = ec.generate_private_key(ec.SECP256R1())
        issuing_key = ec.generate_private_key(ec.SECP256R1())
        root = _ca_certificate(
            _name(settings.organization, f"{settings.organization} Root CA"),
            root_key,
            None,
            root_key,
            1,
            not_before,
            moment + settings.root_validity,
        )
        issuing = _ca_certificate(
            _name(settings.organization, f"{settings.organization} Issuing CA"),
            issuing_key,
            root,
            root_key,
            0,
            not_before,
            min(moment + settings.issuing_validity, root.not_valid_after_utc),
        )
        pem = serialization.Encoding.PEM
        _write_private(directory / CA_FILES["root_key"], _encrypt(root_key, secret))
        _write_private(directory / CA_FILES["issuing_key"], _encrypt(issuing_key, secret))
        (directory / CA_FILES["root"]).write_bytes(root.public_bytes(pem))
        (directory / CA_FILES["issuing"]).write_bytes(issuing.public_bytes(pem))
        (directory / CA_FILES["chain"]).write_bytes(issuing.public_bytes(pem) + root.public_bytes(pem))
        log.info(
            "created the FieldWard CA in %s (issuing CA %s)", directory, issuing.subject.rfc4514_string()
        )
        return cls(settings, registry, root, issuing, issuing_key)

    @classmethod
    def open(
        cls,
        registry: TrustRegistry,
        settings: CASettings = CASettings(),
        *,
        passphrase: bytes | None = None,
    ) -> CertificateAuthority:
        """Load the CA from ``settings.ca_directory()``; refuses unencrypted keys and broken chains."""
        secret = passphrase if passphrase is not None else load_passphrase(settings.passphrase_file)
        directory = settings.ca_directory()
        root = _load_cert(directory / CA_FILES["root"])
        issuing = _load_cert(directory / CA_FILES["issuing"])
        key = _load_key(directory / CA_FILES["issuing_key"], secret)
        if key.public_key().public_numbers() != issuing.public_key().public_numbers():  # type: ignore[union-attr]
            raise TrustStoreError("the issuing CA key does not match the issuing CA certificate")
        if not _issued_by(issuing, root):
            raise TrustStoreError("the issuing CA certificate is not signed by the root CA")
        log.info("opened the FieldWard CA in %s", directory)
        return cls(settings, registry, root, issuing, key)

    @classmethod
    def open_or_create(
        cls,
        registry: TrustRegistry,
        settings: CASettings = CASettings(),
        *,
        passphrase: bytes | None = None,
    ) -> CertificateAuthority:
        if (settings.ca_directory() / CA_FILES["issuing"]).exists():
            return cls.open(registry, settings, passphrase=passphrase)
        return cls.create(registry, settings, passphrase=passphrase)

    # -- certificates --

    @property
    def chain(self) -> list[x509.Certificate]:
        """The CA certificates, issuing CA first (what EST ``/cacerts`` returns)."""
        return [self.issuing, self.root]

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def issue(
        self,
        csr: x509.CertificateSigningRequest,
        profile: Profile = "device",
        *,
        identity: str,
        group: str | None = None,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        validity: dt.timedelta | None = None,
        now: dt.datetime | None = None,
        record: bool = True,
    ) -> x509.Certificate:
        """Sign ``csr`` (already checked by :func:`parse_csr`) with ``profile``.

        The subject and SAN come from the enrollment, not from the CSR: ``O=<organization>,
        OU=<group>, CN=<identity>`` and ``URI:urn:fieldward:<profile>:<identity>`` (plus DNS/IP names
        for sensor and console certificates). The certificate is recorded in the registry.
        """
        if profile not in ("device", "sensor", "console"):
            raise TrustError(f"unknown certificate profile {profile!r}")
        check_device_id(identity)
        if profile == "device" and (dns_names or ip_addresses):
            raise TrustError("device certificates carry no DNS or IP names")
        key = csr.public_key()
        if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise CSRError("unsupported key type")
        moment = _utc(now)
        lifetime = validity if validity is not None else self.settings.validity(profile)
        if lifetime <= dt.timedelta(0):
            raise TrustError("a certificate's validity must be positive")
        not_after = min(moment + lifetime, self.issuing.not_valid_after_utc)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(f"{URN_PREFIX}{profile}:{identity}")]
        try:
            names += [x509.DNSName(name) for name in dns_names]
            names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        except ValueError as exc:
            raise TrustError(f"invalid subject alternative name: {exc}") from None
        usages = {
            "device": [ExtendedKeyUsageOID.CLIENT_AUTH],
            "sensor": [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
            "console": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        }[profile]
        rsa_key = isinstance(key, rsa.RSAPublicKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(self.settings.organization, identity, group))
            .issuer_name(self.issuing.subject)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(moment - self.settings.backdate)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=rsa_key,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
            .add_extension(self._issuing_aki, critical=False)
        )
        if self.settings.crl_url:
            builder = builder.add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            full_name=[x509.UniformResourceIdentifier(self.settings.crl_url)],
                            relative_name=None,
                            reasons=None,
                            crl_issuer=None,
                        )
                    ]
                ),
                critical=False,
            )
        if self.settings.ocsp_url:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.OCSP,
                            x509.UniformResourceIdentifier(self.settings.ocsp_url),
                        )
                    ]
                ),
                critical=False,
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        if record:
            self.registry.record_certificate(certificate, identity, profile)
        return certificate

    def issue_keypair(
        self,
        profile: Profile,
        identity: str,
        *,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        validity: dt.timedelta | None = None,
        now: dt.datetime | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A new P-256 key and its certificate (for the console's or a sensor's own TLS server).

        The caller stores the key (mode 0600); it is never written or logged here.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .sign(key, hashes.SHA256())
        )
        cert = self.issue(
            csr,
            profile,
            identity=identity,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            validity=validity,
            now=now,
        )
        return cert, key

    # -- revocation --

    def revoke(
        self, serial: int | str, reason: str = "unspecified", *, now: dt.datetime | None = None
    ) -> None:
        """Revoke a certificate this CA issued (recorded in the registry; CRL and OCSP follow)."""
        record = self.registry.revoke(serial, reason, now=now)
        log.info("revoked certificate %s of %s (%s)", record.serial, record.device_id, reason)

    def crl(self, now: dt.datetime | None = None) -> x509.CertificateRevocationList:
        """A CRL signed by the issuing CA listing every revoked, unexpired certificate."""
        moment = _utc(now)
        return build_crl(
            self.issuing,
            self._key,
            self.registry.revoked(now=moment),
            this_update=moment,
            next_update=moment + self.settings.crl_validity,
        )

    def ocsp(self, request_der: bytes, now: dt.datetime | None = None) -> bytes:
        """The DER OCSP response (RFC 6960) to a DER OCSP request, signed by the issuing CA."""
        return ocsp_response(
            request_der,
            self.issuing,
            self._key,
            self.registry,
            this_update=_utc(now),
            validity=self.settings.ocsp_validity,
        )

    # -- verification --

    def verify(self, chain: Sequence[x509.Certificate], now: dt.datetime | None = None) -> x509.Certificate:
        """The leaf of ``chain`` if it was issued by this CA, is within its validity at ``now``,
        is known to the registry and is not revoked; else :class:`TrustError`
        (:class:`CertificateExpiredError`, :class:`RevokedError`)."""
        moment = _utc(now)
        verify_chain(chain, [self.issuing], moment, leeway=self.settings.leeway)
        _check_time(self.root, moment, self.settings.leeway, "the root CA")
        leaf = chain[0]
        record = self.registry.certificate(leaf.serial_number)
        if record is None or record.fingerprint != leaf.fingerprint(hashes.SHA256()).hex():
            raise TrustError(f"certificate {serial_hex(leaf.serial_number)} is unknown to the registry")
        if record.revoked:
            raise RevokedError(f"certificate {record.serial} was revoked ({record.revocation_reason})")
        return leaf


def issue_many(n: int, *, record: bool = True) -> float:
    """Benchmark: device certificates issued per second on one core (CSR checking, signing and, with
    ``record``, the registry row on an in-memory SQLite database). CSRs are made before timing."""
    from fieldward.store.database import Database

    if n < 1:
        raise ValueError("n must be at least 1")
    database = Database("sqlite://")
    database.upgrade()
    registry = TrustRegistry(database)
    with tempfile.TemporaryDirectory(prefix="fieldward-ca-") as tmp:
        ca = CertificateAuthority.create(
            registry, CASettings(directory=Path(tmp) / "ca"), passphrase=secrets.token_bytes(24)
        )
        keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(min(n, 64))]
        requests = []
        for i in range(n):
            csr = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench-{i}")]))
                .sign(keys[i % len(keys)], hashes.SHA256())
            )
            requests.append(csr.public_bytes(serialization.Encoding.DER))
        start = time.perf_counter()
        for i, der in enumerate(requests):
            ca.issue(parse_csr(der), "device", identity=f"bench-{i}", record=record)
        elapsed = time.perf_counter() - start
    database.dispose()
    return n / elapsed
