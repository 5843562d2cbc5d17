"""Revocation publishing of the FieldWard CA: the CRL (RFC 5280) and an OCSP responder (RFC 6960),
and the FastAPI router that serves them.

The registry (:mod:`fieldward.trust.registry`) is the source of truth; the CA signs a fresh CRL and
each OCSP answer with the issuing CA key (the issuing CA is its own OCSP responder, so no delegated
responder certificate is needed). OCSP answers ``good`` for a certificate the registry knows and
has not revoked, ``revoked`` (with time and reason) for a revoked one, ``unknown`` for a serial it
never issued; a request for another issuer gets ``unauthorized``, an unparsable one
``malformedRequest``. Nothing here raises on bad input: every request gets an OCSP answer.

Mounted by the console (``app.include_router(revocation_router(ca))``): ``GET /trust/crl``
(DER, ``application/pkix-crl``), ``GET /trust/crl.pem``, ``POST /trust/ocsp``
(``application/ocsp-request``) and ``GET /trust/ocsp/{base64 request}`` (RFC 6960 A.1).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from fastapi import APIRouter, Request
from fastapi.responses import Response

from fieldward.trust.registry import CertificateRecord

if TYPE_CHECKING:
    from fieldward.trust.ca import CertificateAuthority

__all__ = [
    "CRL_MEDIA_TYPE",
    "MAX_OCSP_REQUEST",
    "OCSP_REQUEST_MEDIA_TYPE",
    "OCSP_RESPONSE_MEDIA_TYPE",
    "build_crl",
    "ocsp_response",
    "revocation_router",
]

CRL_MEDIA_TYPE = "application/pkix-crl"
OCSP_REQUEST_MEDIA_TYPE = "application/ocsp-request"
OCSP_RESPONSE_MEDIA_TYPE = "application/ocsp-response"
MAX_OCSP_REQUEST = 16 * 1024
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class _Statuses(Protocol):
    def certificate(self, serial: int | str) -> CertificateRecord | None: ...


def build_crl(
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    revoked: Sequence[CertificateRecord],
    *,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> x509.CertificateRevocationList:
    """A CRL of ``revoked`` signed by ``key``; the CRL number is ``this_update`` in microseconds
    since the epoch (monotonic as long as the clock is, and needing no stored counter)."""
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(int(this_update.timestamp() * 1_000_000)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    for record in revoked:
        assert record.revoked_at is not None
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(record.serial, 16))
            .revocation_date(record.revoked_at)
        )
        reason = x509.ReasonFlags[record.revocation_reason or "unspecified"]
        if reason is not x509.ReasonFlags.unspecified:  # RFC 5280 5.3.1: omit "unspecified"
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(key, hashes.SHA256())


def _key_bits(certificate: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING contents (what an OCSP CertID's issuerKeyHash hashes)."""
    key = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    raise TypeError("unsupported issuer key")  # pragma: no cover - the FieldWard CA is ECDSA


def ocsp_response(
    request_der: bytes,
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    statuses: _Statuses,
    *,
    this_update: dt.datetime,
    validity: dt.timedelta,
) -> bytes:
    """The DER OCSP response to ``request_der`` (one CertID, as cryptography supports)."""
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        algorithm = request.hash_algorithm
        name_hash = request.issuer_name_hash
        key_hash = request.issuer_key_hash
        serial = request.serial_number
        nonce: x509.OCSPNonce | None = None
        for extension in request.extensions:
            if isinstance(extension.value, x509.OCSPNonce):
                nonce = extension.value
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    factory = _HASHES.get(algorithm.name)
    if factory is None:
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    expected_name = hashlib.new(algorithm.name, issuer.subject.public_bytes()).digest()
    expected_key = hashlib.new(algorithm.name, _key_bits(issuer)).digest()
    if name_hash != expected_name or key_hash != expected_key:
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    record = statuses.certificate(serial) if serial >= 0 else None
    status = ocsp.OCSPCertStatus.UNKNOWN
    revoked_at: dt.datetime | None = None
    reason: x509.ReasonFlags | None = None
    if record is not None:
        status = ocsp.OCSPCertStatus.REVOKED if record.revoked else ocsp.OCSPCertStatus.GOOD
        if record.revoked_at is not None:
            revoked_at = record.revoked_at
            reason = x509.ReasonFlags[record.revocation_reason or "unspecified"]
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=name_hash,
            issuer_key_hash=key_hash,
            serial_number=serial,
            algorithm=factory(),
            cert_status=status,
            this_update=this_update,
            next_update=this_update + validity,
            revocation_time=revoked_at,
            revocation_reason=reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
    )
    if nonce is not None:
        builder = builder.add_extension(nonce, critical=False)
    response = builder.sign(key, hashes.SHA256())
    return response.public_bytes(serialization.Encoding.DER)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


def _decode_get(encoded: str) -> bytes:
    """The DER request of an RFC 6960 A.1 GET: URL-encoded base64 (the standard alphabet)."""
    text = unquote(encoded).strip().replace(" ", "+")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return b""


def revocation_router(ca: CertificateAuthority, *, prefix: str = "/trust") -> APIRouter:
    """Routes publishing the CRL and answering OCSP for ``ca`` (no authentication: both are signed
    and public by design). Set ``CASettings.crl_url``/``ocsp_url`` to where they are mounted."""
    router = APIRouter(prefix=prefix, tags=["trust"])

    @router.get(
        "/crl",
        operation_id="trust_crl",
        response_class=Response,
        responses={200: {"content": {CRL_MEDIA_TYPE: {}}}},
    )
    def crl() -> Response:
        """The current CRL of the issuing CA (DER)."""
        data = ca.crl().public_bytes(serialization.Encoding.DER)
        return Response(data, media_type=CRL_MEDIA_TYPE, headers={"Cache-Control": "max-age=300"})

    @router.get("/crl.pem", operation_id="trust_crl_pem", response_class=Response)
    def crl_pem() -> Response:
        """The current CRL of the issuing CA (PEM)."""
        data = ca.crl().public_bytes(serialization.Encoding.PEM)
        return Response(data, media_type="application/x-pem-file")

    @router.post(
        "/ocsp",
        operation_id="trust_ocsp_post",
        response_class=Response,
        responses={200: {"content": {OCSP_RESPONSE_MEDIA_TYPE: {}}}},
    )
    async def ocsp_post(request: Request) -> Response:
        """An OCSP request in the body (``application/ocsp-request``, DER)."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_OCSP_REQUEST:
                body = b""
                break
        return Response(ca.ocsp(body), media_type=OCSP_RESPONSE_MEDIA_TYPE)

    @router.get(
        "/ocsp/{encoded:path}",
        operation_id="trust_ocsp_get",
        response_class=Response,
        responses={200: {"content": {OCSP_RESPONSE_MEDIA_TYPE: {}}}},
    )
    def ocsp_get(encoded: str) -> Response:
        """An OCSP request as URL-encoded base64 in the path (RFC 6960 A.1)."""
        der = _decode_get(encoded) if len(encoded) <= 2 * MAX_OCSP_REQUEST else b""
        return Response(ca.ocsp(der), media_type=OCSP_RESPONSE_MEDIA_TYPE)

    return router
