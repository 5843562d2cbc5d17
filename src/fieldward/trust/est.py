"""Enrollment over Secure Transport (EST, RFC 7030) for FieldWard devices: a FastAPI router that
the console mounts at ``/.well-known/est``, and the uvicorn glue that hands it the TLS client
certificate.

Endpoints (RFC 7030 section 4):

- ``GET cacerts``: the issuing and root CA certificates, a certs-only PKCS#7 in base64
  (``application/pkcs7-mime``).
- ``POST simpleenroll``: a base64 DER PKCS#10 body (``application/pkcs10``); answered with the new
  certificate as a certs-only PKCS#7 in base64. Bootstrap by either
  a one-time **enrollment token** (HTTP Basic password, any user name, or ``Authorization: Bearer``;
  hashed at rest, single use, expiring, bound to an enrollment group and optionally to one device
  id) or an **IDevID**: a TLS client certificate chaining to a configured manufacturer CA (the
  device id is the IDevID subject's serialNumber, else its CN; the manufacturer names the group).
- ``POST simplereenroll``: renewal over mutual TLS with the current FieldWard certificate, which
  must verify (issued here, unexpired, unrevoked); the CSR subject must be the certificate's subject
  (or carry just the same CN); the device must not be quarantined and the ``renewal_gate`` hook
  (the attestation engine's fresh-healthy-verdict check) must agree. A new key is allowed.
- ``GET csrattrs``: what a CSR should contain (ECDSA P-256 with SHA-256), ``application/csrattrs``.

The client certificate reaches the router in one of two ways (never from an arbitrary client's
header): the ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_chain"]``), which
uvicorn does not provide itself, so :class:`TLSExtensionH11Protocol` adds it (run uvicorn with
``http=TLSExtensionH11Protocol``, ``ssl_cert_reqs=ssl.CERT_OPTIONAL`` and ``ssl_ca_certs`` holding
the FieldWard chain and the manufacturer CAs); or, behind a TLS-terminating reverse proxy, the
RFC 9440 ``Client-Cert`` header, believed only when the connection comes from an address in
``ESTSettings.trusted_proxies``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from uvicorn.protocols.http.h11_impl import H11Protocol

from fieldward.trust.ca import (
    CertificateAuthority,
    csr_common_name,
    identity_of,
    parse_csr,
    verify_chain,
)
from fieldward.trust.errors import CSRError, EnrollmentError, TrustError
from fieldward.trust.registry import GroupRecord, TrustRegistry, check_device_id

__all__ = [
    "CSRATTRS_DER",
    "EST_PREFIX",
    "ESTSettings",
    "EnrollmentHook",
    "Manufacturer",
    "RenewalGate",
    "TLSExtensionH11Protocol",
    "allow_renewal",
    "certs_only",
    "est_router",
    "load_manufacturers",
    "peer_certificates",
]

log = logging.getLogger(__name__)

EST_PREFIX = "/.well-known/est"
PKCS7_MEDIA_TYPE = "application/pkcs7-mime"
CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
CSR_MEDIA_TYPES = ("application/pkcs10", "application/x-pkcs10")
RenewalGate = Callable[[str], tuple[bool, str]]
"""``renewal_gate(device_id) -> (ok, reason)``: may this device's certificate be renewed now?"""


def allow_renewal(device_id: str) -> tuple[bool, str]:
    """The default renewal gate: allow (the attestation engine supplies the real one)."""
    return True, "no renewal gate configured"


@dataclass(frozen=True)
class Manufacturer:
    """A device manufacturer whose IDevID certificates may bootstrap enrollment."""

    name: str
    certificates: tuple[x509.Certificate, ...]
    """Trust anchors: the manufacturer's CA certificates (root or issuing)."""
    group: str
    """The enrollment group of devices bootstrapped with this manufacturer's IDevID."""


def load_manufacturers(path: Path | str) -> tuple[Manufacturer, ...]:
    """IDevID manufacturers from YAML: ``{"manufacturers": [{"name", "ca", "group"}, ...]}`` where
    ``ca`` is a PEM file of the manufacturer's CA certificates (relative to the YAML file) and
    ``group`` the enrollment group its devices join. TrustError names what is wrong."""
    import yaml

    source = Path(path)
    try:
        document = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrustError(f"{source}: cannot read the manufacturers: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise TrustError(f"{source}: not valid YAML: {exc}") from None
    entries = document.get("manufacturers") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise TrustError(f"{source}: expected a mapping with a 'manufacturers' list")
    found: list[Manufacturer] = []
    for index, entry in enumerate(entries):
        where = f"{source}: manufacturer #{index + 1}"
        if not isinstance(entry, dict) or set(entry) != {"name", "ca", "group"}:
            raise TrustError(f"{where}: needs exactly name, ca (a PEM file) and group")
        if not all(isinstance(entry[k], str) and entry[k] for k in ("name", "ca", "group")):
            raise TrustError(f"{where}: name, ca and group are text")
        ca_path = source.parent / entry["ca"]
        try:
            certificates = tuple(x509.load_pem_x509_certificates(ca_path.read_bytes()))
        except OSError as exc:
            raise TrustError(f"{where}: cannot read {ca_path}: {exc.strerror or exc}") from None
        except ValueError:
            raise TrustError(f"{where}: {ca_path} holds no PEM certificate") from None
        found.append(Manufacturer(entry["name"], certificates, entry["group"]))
    return tuple(found)


@dataclass(frozen=True)
class ESTSettings:
    """Settings of the EST router; thresholds are settings, not literals."""

    manufacturers: tuple[Manufacturer, ...] = ()
    trusted_proxies: frozenset[str] = frozenset()
    """Client addresses (reverse proxies) whose ``client_cert_header`` is believed."""
    client_cert_header: str = "client-cert"
    """RFC 9440 ``Client-Cert`` (``:base64 DER:``); a URL-encoded PEM (nginx) is accepted too."""
    max_body: int = 64 * 1024
    realm: str = "fieldward-est"


# -- encoding helpers -----------------------------------------------------------------------------


def certs_only(certificates: Sequence[x509.Certificate]) -> bytes:
    """A certs-only PKCS#7 (CMS SignedData without signers) in base64, 64-character lines."""
    der = pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER)
    text = base64.b64encode(der)
    return b"\r\n".join(text[i : i + 64] for i in range(0, len(text), 64)) + b"\r\n"


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(value)) + value


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


CSRATTRS_DER = _tlv(
    0x30,
    _oid("1.2.840.10045.4.3.2")  # ecdsa-with-SHA256: sign the CSR with it
    + _tlv(
        0x30,
        _oid("1.2.840.10045.2.1")  # id-ecPublicKey ...
        + _tlv(0x31, _oid("1.2.840.10045.3.1.7")),  # ... on secp256r1 (RFC 7030 4.5.2 example)
    ),
)
"""The CsrAttrs (RFC 7030 4.5.2) FieldWard asks for: an ECDSA P-256 key and a SHA-256 signature."""


# -- client certificates --------------------------------------------------------------------------


def _tls_version(name: str | None) -> int | None:
    return {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}.get(name or "")


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> dict[str, Any]:
    """The ASGI TLS extension (asgiref "TLS Extension") of one connection."""
    peer = ssl_object.getpeercert(binary_form=True)
    chain: list[str] = []
    name: str | None = None
    if peer:
        certificate = x509.load_der_x509_certificate(peer)
        chain = [certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")]
        name = certificate.subject.rfc4514_string()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _tls_version(ssl_object.version()),
        "cipher_suite": None,
    }


class _WithTLS:
    """ASGI middleware adding one connection's TLS extension to every request scope."""

    def __init__(self, app: Any, extension: dict[str, Any]) -> None:
        self.app = app
        self.extension = extension

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            scope = dict(scope)
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = self.extension
            scope["extensions"] = extensions
        await self.app(scope, receive, send)


class TLSExtensionH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus the ASGI TLS extension (the verified peer certificate).

    Python's ``ssl`` exposes only the peer's leaf certificate (the chain was verified during the
    handshake against ``ssl_ca_certs``); the router re-verifies it against its own anchors.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            try:
                extension = tls_extension(ssl_object)
            except (ValueError, ssl.SSLError):  # a peer certificate cryptography cannot parse
                extension = {"client_cert_chain": [], "client_cert_error": "unparsable"}
            self.app = _WithTLS(self.app, extension)


def _certificates_from_header(value: str) -> list[x509.Certificate]:
    value = value.strip()
    if value.startswith(":"):  # RFC 9440 / RFC 8941 byte sequences, comma separated
        items = [item.strip().strip(":") for item in value.split(",")]
        return [x509.load_der_x509_certificate(base64.b64decode(item, validate=True)) for item in items]
    return list(x509.load_pem_x509_certificates(unquote(value).encode("ascii")))


def peer_certificates(request: Request, settings: ESTSettings) -> list[x509.Certificate]:
    """The client's certificate chain (leaf first), from the ASGI TLS extension or, for a trusted
    reverse proxy only, the client-certificate header; empty when there is none."""
    extension = (request.scope.get("extensions") or {}).get("tls") or {}
    chain = extension.get("client_cert_chain") or []
    if chain:
        try:
            return [x509.load_pem_x509_certificate(pem.encode("ascii")) for pem in chain]
        except ValueError:
            raise EnrollmentError("the TLS client certificate cannot be parsed") from None
    header = request.headers.get(settings.client_cert_header)
    if header:
        host = request.client.host if request.client is not None else None
        if host is None or host not in settings.trusted_proxies:
            log.info("ignored a %s header from untrusted %s", settings.client_cert_header, host)
            return []
        try:
            return _certificates_from_header(header)
        except (ValueError, UnicodeError):
            raise EnrollmentError("the forwarded client certificate cannot be parsed") from None
    return []


def _credentials(request: Request) -> str | None:
    """The enrollment token of ``Authorization: Basic`` (the password) or ``Bearer``."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and value.strip():
        return value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        _user, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


EnrollmentHook = Callable[[str, str, Sequence[x509.Certificate], x509.CertificateSigningRequest], None]
"""``(device id, bootstrap, IDevID chain (empty for a token), CSR)`` after an initial enrollment."""


def _idevid_id(certificate: x509.Certificate) -> str | None:
    for oid in (NameOID.SERIAL_NUMBER, NameOID.COMMON_NAME):
        values = certificate.subject.get_attributes_for_oid(oid)
        if values and isinstance(values[0].value, str):
            return values[0].value
    return None


# -- the router -----------------------------------------------------------------------------------


class _RefusedError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def est_router(
    ca: CertificateAuthority,
    registry: TrustRegistry,
    *,
    settings: ESTSettings | None = None,
    renewal_gate: RenewalGate = allow_renewal,
    clock: Callable[[], dt.datetime] | None = None,
    on_enrolled: EnrollmentHook | None = None,
) -> APIRouter:
    """The RFC 7030 routes for ``ca``, to be mounted at the application root (prefix included).

    ``on_enrolled`` is called after each initial enrollment with the device id, the bootstrap
    (``token`` or ``idevid``), the verified IDevID chain (empty for a token) and the CSR; it must
    not raise (an exception is logged by type and the enrollment still succeeds)."""
    config = settings if settings is not None else ESTSettings()
    now = clock if clock is not None else (lambda: dt.datetime.now(dt.UTC))
    router = APIRouter(prefix=EST_PREFIX, tags=["est"])
    challenge = {"WWW-Authenticate": f'Basic realm="{config.realm}", Bearer realm="{config.realm}"'}

    def refused(exc: _RefusedError) -> Response:
        return PlainTextResponse(exc.detail + "\n", status_code=exc.status, headers=exc.headers)

    async def read_csr(request: Request) -> x509.CertificateSigningRequest:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media and media not in CSR_MEDIA_TYPES:
            raise _RefusedError(415, "the body must be application/pkcs10")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > config.max_body:
                raise _RefusedError(413, f"the CSR is larger than {config.max_body} bytes")
        try:
            return parse_csr(bytes(body))
        except CSRError as exc:
            raise _RefusedError(400, str(exc)) from None

    def enrolled(certificate: x509.Certificate) -> Response:
        return Response(
            certs_only([certificate]),
            media_type=CERTS_ONLY,
            headers={"Content-Transfer-Encoding": "base64"},
        )

    def group_validity(group: GroupRecord | None) -> dt.timedelta | None:
        if group is None or group.validity_hours is None:
            return None
        return dt.timedelta(hours=group.validity_hours)

    @router.get("/cacerts", operation_id="est_cacerts", response_class=Response)
    def cacerts() -> Response:
        """The CA certificates (RFC 7030 4.1)."""
        return Response(
            certs_only(ca.chain),
            media_type=PKCS7_MEDIA_TYPE,
            headers={"Content-Transfer-Encoding": "base64"},
        )

    @router.get("/csrattrs", operation_id="est_csrattrs", response_class=Response)
    def csrattrs() -> Response:
        """The CSR attributes the CA wants (RFC 7030 4.5)."""
        return Response(
            base64.b64encode(CSRATTRS_DER) + b"\r\n",
            media_type="application/csrattrs",
            headers={"Content-Transfer-Encoding": "base64"},
        )

    def bootstrap_idevid(
        certificates: list[x509.Certificate], moment: dt.datetime
    ) -> tuple[str, GroupRecord]:
        for manufacturer in config.manufacturers:
            try:
                verify_chain(certificates, manufacturer.certificates, moment)
            except TrustError:
                continue
            device_id = _idevid_id(certificates[0])
            if device_id is None:
                raise _RefusedError(403, "the IDevID has neither serialNumber nor CN")
            group = registry.group(manufacturer.group)
            if group is None:
                raise _RefusedError(500, f"enrollment group {manufacturer.group!r} is not configured")
            return device_id, group
        raise _RefusedError(403, "the client certificate does not chain to a trusted manufacturer CA")

    @router.post("/simpleenroll", operation_id="est_simpleenroll", response_class=Response)
    async def simpleenroll(request: Request) -> Response:
        """Initial enrollment (RFC 7030 4.2.1) with an enrollment token or an IDevID."""
        try:
            moment = now()
            token = _credentials(request)
            certificates = [] if token else peer_certificates(request, config)
            if not token and not certificates:
                raise _RefusedError(401, "enrollment needs a token or a manufacturer certificate", challenge)
            csr = await read_csr(request)
            requested = csr_common_name(csr)
            if certificates:
                device_id, group = bootstrap_idevid(certificates, moment)
                if requested is not None and requested != device_id:
                    raise _RefusedError(403, "the CSR subject does not match the IDevID")
                bootstrap = "idevid"
            else:
                if requested is None:
                    raise _RefusedError(400, "the CSR subject needs a CN (the device id)")
                device_id = requested
                bootstrap = "token"
            check_device_id(device_id)
            if registry.is_quarantined(device_id):
                raise _RefusedError(403, "the device is quarantined")
            if token:
                try:
                    group = registry.consume_token(token, device_id, now=moment)
                except EnrollmentError as exc:
                    raise _RefusedError(401, str(exc), challenge) from None
            registry.register_device(device_id, group=group.name, bootstrap=bootstrap)
            certificate = ca.issue(
                csr,
                "device",
                identity=device_id,
                group=group.name,
                validity=group_validity(group),
                now=moment,
            )
            if on_enrolled is not None:
                try:
                    on_enrolled(device_id, bootstrap, certificates, csr)
                except Exception as exc:  # the device has its certificate: never fail it here
                    log.warning("enrollment hook failed for %s: %s", device_id, type(exc).__name__)
        except _RefusedError as exc:
            log.info("EST enrollment refused: %s", exc.detail)
            return refused(exc)
        except TrustError as exc:
            log.info("EST enrollment refused: %s", exc)
            return refused(_RefusedError(403, str(exc)))
        log.info(
            "enrolled %s (group %s, %s), certificate %x",
            device_id,
            group.name,
            bootstrap,
            certificate.serial_number,
        )
        return enrolled(certificate)

    @router.post("/simplereenroll", operation_id="est_simplereenroll", response_class=Response)
    async def simplereenroll(request: Request) -> Response:
        """Renewal (RFC 7030 4.2.2) with the current certificate over mutual TLS."""
        try:
            moment = now()
            certificates = peer_certificates(request, config)
            if not certificates:
                raise _RefusedError(401, "renewal needs the current certificate (mutual TLS)")
            csr = await read_csr(request)
            try:
                current = ca.verify(certificates, moment)
            except TrustError as exc:
                raise _RefusedError(403, str(exc)) from None
            identity = identity_of(current)
            if identity is None:
                raise _RefusedError(403, "the certificate carries no FieldWard identity")
            profile, device_id = identity
            same_subject = csr.subject == current.subject or (
                len(csr.subject) == 1 and csr_common_name(csr) == device_id
            )
            if not same_subject:
                raise _RefusedError(403, "the CSR subject differs from the certificate being renewed")
            if registry.is_quarantined(device_id):
                raise _RefusedError(403, "the device is quarantined")
            ok, reason = renewal_gate(device_id)
            if not ok:
                raise _RefusedError(403, f"renewal refused: {reason}")
            group = registry.device_group(device_id)
            san = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            certificate = ca.issue(
                csr,
                "device" if profile == "device" else ("sensor" if profile == "sensor" else "console"),
                identity=device_id,
                group=None if group is None else group.name,
                dns_names=san.get_values_for_type(x509.DNSName),
                ip_addresses=[str(a) for a in san.get_values_for_type(x509.IPAddress)],
                validity=group_validity(group) if profile == "device" else None,
                now=moment,
            )
        except _RefusedError as exc:
            log.info("EST renewal refused: %s", exc.detail)
            return refused(exc)
        except TrustError as exc:
            log.info("EST renewal refused: %s", exc)
            return refused(_RefusedError(403, str(exc)))
        log.info("renewed %s, certificate %x", device_id, certificate.serial_number)
        return enrolled(certificate)

    return router
