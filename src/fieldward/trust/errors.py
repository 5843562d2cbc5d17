"""Errors of the zero-trust device plane (issue 8).

Every refusal of the device plane (a malformed CSR, an unknown or spent enrollment token, a revoked,
expired or foreign certificate, a quarantined device, a CA key that is not encrypted) raises a
:class:`TrustError` or one of its subclasses, so the EST/OCSP endpoints map one family to HTTP
answers and callers catch one family. Messages never contain key material or passphrases.
"""

from __future__ import annotations

from fieldward.errors import FieldWardError

__all__ = [
    "CSRError",
    "CertificateExpiredError",
    "EnrollmentError",
    "RevokedError",
    "TrustError",
    "TrustStoreError",
]


class TrustError(FieldWardError):
    """A trust decision failed: the input is refused, with a reason."""


class CSRError(TrustError):
    """A certificate signing request is malformed, badly signed or uses an unsupported key."""


class EnrollmentError(TrustError):
    """The caller may not enroll or renew (bad/spent/expired token, wrong subject, quarantined)."""


class RevokedError(TrustError):
    """A certificate in the presented chain has been revoked."""


class CertificateExpiredError(TrustError):
    """A certificate in the presented chain is expired or not yet valid."""


class TrustStoreError(TrustError):
    """The CA's key store is unusable (missing/unencrypted key, wrong passphrase, bad files)."""
