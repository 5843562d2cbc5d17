"""Device health: nonce challenges, signed evidence, TPM 2.0 quotes and the verifier's verdict.

The verifier sends a single-use nonce (:meth:`Verifier.challenge`); the device answers with evidence,
a JSON envelope (docs/trust/attestation.md)::

    {"claims": {...}, "alg": "ES256" | "EdDSA", "signature": base64, "cert_chain": [PEM, ...],
     "tpm_quote": {"attest": base64, "signature": base64, "pcrs": {"0": hex}, "ak_chain": [PEM]}}

``claims`` are signed in canonical form (:func:`canonical_json`: sorted keys, no whitespace, UTF-8)
with the key of the leaf certificate. :meth:`Verifier.verify` checks, in order: the envelope's shape,
the certificate chain (``verify_chain``, the CA's verify plugs in here), that the chain names the
claimed device, the nonce (issued to that device, unexpired, never used), the signature, the boot
log replayed into the aggregate, the optional TPM quote, and the claims against the reference values
of the device's model and firmware release. An envelope that cannot identify its device, or a bad
nonce, is refused with :class:`~fieldward.trust.errors.TrustError`; everything else ends in a
:class:`Verdict`: ``healthy``, ``unknown`` (no reference values), ``compromised`` or ``outdated``,
each with its reasons.

Nothing here does I/O except loading the reference values; the verifier keeps state only in its
nonce store and verdict store (protocols, so database-backed stores plug in).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import math
import secrets
import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from fieldward.assess.versions import parse_version
from fieldward.trust.context import DeviceContext
from fieldward.trust.errors import TrustError

__all__ = [
    "AttestationResult",
    "ChainVerifier",
    "EvidenceError",
    "InMemoryNonceStore",
    "InMemoryVerdictStore",
    "Measurement",
    "ModelReference",
    "NonceStatus",
    "NonceStore",
    "ReferenceValues",
    "ReleaseReference",
    "TpmQuote",
    "Verdict",
    "VerdictStore",
    "Verifier",
    "boot_aggregate",
    "canonical_json",
    "load_reference_values",
    "parse_tpms_attest",
    "pcr_replay",
    "sign_evidence",
    "with_verdict",
]

SHA256_ZERO = bytes(32)
MAX_BOOT_LOG = 4096
"""More measurements than this is not a boot log (and would make the replay a denial of service)."""
MAX_EVIDENCE_BYTES = 1 << 20
CLAIMS_REQUIRED = (
    "device_id",
    "nonce",
    "firmware_digest",
    "boot_log",
    "boot_aggregate",
    "secure_boot",
    "os_version",
    "app_versions",
    "config_digest",
    "timestamp",
)

# TPM 2.0 Library, Part 2: Structures (section 6.2 TPM_GENERATED, 6.9 TPM_ST, 6.3 TPM_ALG_ID)
TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ALG_RSASSA = 0x0014
TPM_ALG_RSAPSS = 0x0016
TPM_ALG_ECDSA = 0x0018
TPM_ALG_SHA256 = 0x000B


class EvidenceError(TrustError):
    """The evidence is refused outright: malformed, unknown signer, or a bad nonce."""


class Verdict(StrEnum):
    HEALTHY = "healthy"
    UNKNOWN = "unknown"
    COMPROMISED = "compromised"
    OUTDATED = "outdated"


_SEVERITY = {Verdict.HEALTHY: 0, Verdict.UNKNOWN: 1, Verdict.OUTDATED: 2, Verdict.COMPROMISED: 3}


# ---------------------------------------------------------------------- canonical form, boot chain


def canonical_json(value: Any) -> bytes:
    """The bytes that are signed: sorted keys, ``,``/``:`` separators, UTF-8 (RFC 8785-like).

    Floats are refused (their text form is where JSON canonicalisation schemes disagree), as are NaN
    and non-string keys, so one set of claims has exactly one byte form.
    """
    _check_canonical(value, "claims")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _check_canonical(value: Any, where: str) -> None:
    if isinstance(value, float):
        raise EvidenceError(f"{where}: floating-point numbers are not allowed in evidence")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EvidenceError(f"{where}: object keys must be strings")
            _check_canonical(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_canonical(item, f"{where}[{index}]")
    elif not (value is None or isinstance(value, str | int | bool)):
        raise EvidenceError(f"{where}: {type(value).__name__} is not JSON")


@dataclass(frozen=True, slots=True)
class Measurement:
    """One boot log entry: the SHA-256 of a measured component, the PCR it was extended into."""

    digest: bytes
    pcr: int = 0
    name: str = ""


def _measurements(boot_log: object) -> list[Measurement]:
    """Boot log entries: hex digests, or ``{"digest": hex, "pcr": int, "name": str}`` objects."""
    if not isinstance(boot_log, list):
        raise EvidenceError("claims.boot_log must be a list of measurements")
    if len(boot_log) > MAX_BOOT_LOG:
        raise EvidenceError(f"claims.boot_log has more than {MAX_BOOT_LOG} measurements")
    out: list[Measurement] = []
    for index, entry in enumerate(boot_log):
        where = f"claims.boot_log[{index}]"
        pcr, name = 0, ""
        if isinstance(entry, dict):
            text = entry.get("digest")
            pcr = entry.get("pcr", 0)
            name = entry.get("name", "")
            if not isinstance(pcr, int) or isinstance(pcr, bool) or not 0 <= pcr <= 23:
                raise EvidenceError(f"{where}.pcr must be an integer 0..23")
            if not isinstance(name, str):
                raise EvidenceError(f"{where}.name must be a string")
        else:
            text = entry
        out.append(Measurement(_sha256_hex(text, where), pcr, name))
    return out


def _sha256_hex(text: object, where: str) -> bytes:
    if not isinstance(text, str) or len(text) != 64:
        raise EvidenceError(f"{where} must be a SHA-256 digest in hex (64 characters)")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise EvidenceError(f"{where} must be a SHA-256 digest in hex (64 characters)") from None


def boot_aggregate(boot_log: Iterable[str | Mapping[str, Any]]) -> str:
    """The hash chain over a boot log, PCR-extend style: a = sha256(a || m), from 32 zero bytes."""
    aggregate = SHA256_ZERO
    for entry in _measurements(list(boot_log)):
        aggregate = hashlib.sha256(aggregate + entry.digest).digest()
    return aggregate.hex()


def pcr_replay(boot_log: Iterable[str | Mapping[str, Any]]) -> dict[int, bytes]:
    """The value each PCR holds after the boot log is extended into it (PCRs start at zero)."""
    pcrs: dict[int, bytes] = {}
    for entry in _measurements(list(boot_log)):
        pcrs[entry.pcr] = hashlib.sha256(pcrs.get(entry.pcr, SHA256_ZERO) + entry.digest).digest()
    return pcrs


# ---------------------------------------------------------------------- nonces


class NonceStatus(StrEnum):
    OK = "ok"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    WRONG_DEVICE = "wrong_device"


class NonceStore(Protocol):
    """Single-use nonces. A database-backed store implements the same two calls atomically."""

    def issue(self, device_id: str, nonce: str, expires_at: dt.datetime) -> None: ...

    def consume(self, device_id: str, nonce: str, now: dt.datetime) -> NonceStatus:
        """Mark ``nonce`` used; what it was before: OK only the first time, before expiry."""
        ...


class InMemoryNonceStore:
    """Nonces in a dict, for one verifier process. Spent nonces are kept until they expire."""

    def __init__(self, max_outstanding: int = 1_000_000) -> None:
        self._nonces: dict[str, tuple[str, dt.datetime, bool]] = {}
        self._lock = threading.Lock()
        self._max = max_outstanding

    def issue(self, device_id: str, nonce: str, expires_at: dt.datetime) -> None:
        with self._lock:
            if len(self._nonces) >= self._max:
                self._purge(dt.datetime.now(dt.UTC))
                if len(self._nonces) >= self._max:
                    raise TrustError("too many outstanding attestation challenges")
            self._nonces[nonce] = (device_id, expires_at, False)

    def consume(self, device_id: str, nonce: str, now: dt.datetime) -> NonceStatus:
        with self._lock:
            entry = self._nonces.get(nonce)
            if entry is None:
                return NonceStatus.UNKNOWN
            owner, expires_at, used = entry
            if owner != device_id:
                return NonceStatus.WRONG_DEVICE
            if used:
                return NonceStatus.REPLAYED
            self._nonces[nonce] = (owner, expires_at, True)
            if now >= expires_at:
                return NonceStatus.EXPIRED
            return NonceStatus.OK

    def _purge(self, now: dt.datetime) -> None:
        for nonce in [n for n, (_, expires, _) in self._nonces.items() if expires <= now]:
            del self._nonces[nonce]

    def __len__(self) -> int:
        return len(self._nonces)


# ---------------------------------------------------------------------- verdicts


@dataclass(frozen=True, slots=True)
class AttestationResult:
    """The outcome of one verification.

    authentic: the claims verified against the device's certificate (False only for a signature
    mismatch, which is itself a ``compromised`` verdict)
    """

    device_id: str
    verdict: Verdict
    reasons: tuple[str, ...]
    verified_at: dt.datetime
    model: str | None = None
    firmware_version: str | None = None
    authentic: bool = True
    tpm_quote: bool = False
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "verdict": str(self.verdict),
            "reasons": list(self.reasons),
            "verified_at": self.verified_at.isoformat(),
            "model": self.model,
            "firmware_version": self.firmware_version,
            "authentic": self.authentic,
            "tpm_quote": self.tpm_quote,
            "notes": list(self.notes),
        }


class VerdictStore(Protocol):
    """The newest verdict per device (the renewal gate and the policy context read it)."""

    def record(self, result: AttestationResult) -> None: ...

    def latest(self, device_id: str) -> AttestationResult | None: ...


class InMemoryVerdictStore:
    def __init__(self) -> None:
        self._latest: dict[str, AttestationResult] = {}

    def record(self, result: AttestationResult) -> None:
        self._latest[result.device_id] = result

    def latest(self, device_id: str) -> AttestationResult | None:
        return self._latest.get(device_id)


def with_verdict(context: DeviceContext, result: AttestationResult) -> DeviceContext:
    """``context`` updated with a verification result (for the policy engine)."""
    return replace(context, attested_at=result.verified_at, verdict=str(result.verdict))


# ---------------------------------------------------------------------- reference values


@dataclass(frozen=True, slots=True)
class ReleaseReference:
    """What one firmware release of one model must measure."""

    version: str
    firmware_digests: frozenset[bytes]
    config_digests: frozenset[bytes] = frozenset()
    boot_aggregates: frozenset[bytes] = frozenset()


@dataclass(frozen=True, slots=True)
class ModelReference:
    model: str
    min_firmware: str | None = None
    secure_boot_required: bool = True
    min_os_version: str | None = None
    min_app_versions: Mapping[str, str] = field(default_factory=dict)
    releases: Mapping[str, ReleaseReference] = field(default_factory=dict)

    def release(self, firmware: str | None) -> ReleaseReference | None:
        """The release ``firmware`` names, compared as versions (``V2.4.1`` is ``2.4.1``)."""
        if firmware is None:
            return None
        if (exact := self.releases.get(firmware)) is not None:
            return exact
        wanted = parse_version(firmware)
        if wanted is None:
            return None
        for version, release in self.releases.items():
            if parse_version(version) == wanted:
                return release
        return None


@dataclass(frozen=True, slots=True)
class ReferenceValues:
    models: Mapping[str, ModelReference] = field(default_factory=dict)

    def for_model(self, model: str | None) -> ModelReference | None:
        return None if model is None else self.models.get(model)


_MODEL_KEYS = {
    "model",
    "min_firmware",
    "secure_boot_required",
    "min_os_version",
    "min_app_versions",
    "releases",
}
_RELEASE_KEYS = {"version", "firmware_digests", "config_digests", "boot_aggregates"}


def load_reference_values(source: Path | str | Mapping[str, Any]) -> ReferenceValues:
    """Reference values from a YAML file (or its parsed document); ValueError names the bad entry."""
    name = str(source) if isinstance(source, Path | str) else "reference values"
    if isinstance(source, Path | str):
        try:
            document = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{name}: cannot read reference values: {exc}") from exc
    else:
        document = source
    if not isinstance(document, Mapping) or not isinstance(document.get("models"), list):
        raise ValueError(f"{name}: expected a mapping with a 'models' list")
    models: dict[str, ModelReference] = {}
    for index, entry in enumerate(document["models"]):
        where = f"{name}: models[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("model"), str):
            raise ValueError(f"{where}: each entry needs a 'model' string")
        where = f"{name}: model {entry['model']!r}"
        if unknown := set(entry) - _MODEL_KEYS:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        if entry["model"] in models:
            raise ValueError(f"{where}: listed twice")
        for key in ("min_firmware", "min_os_version"):
            if entry.get(key) is not None and parse_version(str(entry[key])) is None:
                raise ValueError(f"{where}: {key} {entry[key]!r} is not a version")
        apps = entry.get("min_app_versions") or {}
        if not isinstance(apps, Mapping) or any(parse_version(str(v)) is None for v in apps.values()):
            raise ValueError(f"{where}: min_app_versions must map application names to versions")
        secure = entry.get("secure_boot_required", True)
        if not isinstance(secure, bool):
            raise ValueError(f"{where}: secure_boot_required must be true or false")
        releases: dict[str, ReleaseReference] = {}
        for rindex, release in enumerate(entry.get("releases") or []):
            rwhere = f"{where}: releases[{rindex}]"
            if not isinstance(release, Mapping) or release.get("version") is None:
                raise ValueError(f"{rwhere}: each release needs a 'version'")
            if unknown := set(release) - _RELEASE_KEYS:
                raise ValueError(f"{rwhere}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
            version = str(release["version"])
            digests = _digest_set(release.get("firmware_digests"), f"{rwhere}.firmware_digests")
            if not digests:
                raise ValueError(f"{rwhere}: firmware_digests must list at least one SHA-256 digest")
            releases[version] = ReleaseReference(
                version,
                digests,
                _digest_set(release.get("config_digests"), f"{rwhere}.config_digests"),
                _digest_set(release.get("boot_aggregates"), f"{rwhere}.boot_aggregates"),
            )
        models[entry["model"]] = ModelReference(
            model=entry["model"],
            min_firmware=None if entry.get("min_firmware") is None else str(entry["min_firmware"]),
            secure_boot_required=secure,
            min_os_version=None if entry.get("min_os_version") is None else str(entry["min_os_version"]),
            min_app_versions={str(k): str(v) for k, v in apps.items()},
            releases=releases,
        )
    return ReferenceValues(models)


def _digest_set(values: object, where: str) -> frozenset[bytes]:
    if values is None:
        return frozenset()
    if not isinstance(values, list):
        raise ValueError(f"{where} must be a list of SHA-256 hex digests")
    out: set[bytes] = set()
    for index, value in enumerate(values):
        try:
            out.add(_sha256_hex(str(value).lower(), f"{where}[{index}]"))
        except EvidenceError as exc:
            raise ValueError(str(exc)) from None
    return frozenset(out)


# ---------------------------------------------------------------------- TPM 2.0 quote


@dataclass(frozen=True, slots=True)
class TpmQuote:
    """A parsed TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE (TPM 2.0 Library Part 2, 10.12.12)."""

    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    pcr_selection: tuple[tuple[int, tuple[int, ...]], ...]
    """(hash algorithm, selected PCR indices in ascending order) per TPMS_PCR_SELECTION."""
    pcr_digest: bytes


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int, what: str) -> bytes:
        if self.offset + size > len(self.data):
            raise EvidenceError(f"TPM quote: truncated in {what}")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        value: int = struct.unpack(">H", self.take(2, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = struct.unpack(">I", self.take(4, what))[0]
        return value

    def u64(self, what: str) -> int:
        value: int = struct.unpack(">Q", self.take(8, what))[0]
        return value

    def tpm2b(self, what: str) -> bytes:
        return self.take(self.u16(what), what)


def parse_tpms_attest(data: bytes) -> TpmQuote:
    """Parse TPMS_ATTEST bytes (big-endian, as TPM2_Quote returns them); EvidenceError if not a quote."""
    reader = _Reader(data)
    if reader.u32("magic") != TPM_GENERATED_VALUE:
        raise EvidenceError("TPM quote: magic is not TPM_GENERATED_VALUE (0xff544347)")
    if (kind := reader.u16("type")) != TPM_ST_ATTEST_QUOTE:
        raise EvidenceError(f"TPM quote: type 0x{kind:04x} is not TPM_ST_ATTEST_QUOTE")
    signer = reader.tpm2b("qualifiedSigner")
    extra = reader.tpm2b("extraData")
    clock = reader.u64("clockInfo.clock")
    resets = reader.u32("clockInfo.resetCount")
    restarts = reader.u32("clockInfo.restartCount")
    safe = reader.u8("clockInfo.safe")
    firmware = reader.u64("firmwareVersion")
    count = reader.u32("pcrSelect.count")
    if count > 16:
        raise EvidenceError("TPM quote: too many PCR selections")
    selection: list[tuple[int, tuple[int, ...]]] = []
    for _ in range(count):
        algorithm = reader.u16("pcrSelections.hash")
        size = reader.u8("pcrSelections.sizeofSelect")
        bitmap = reader.take(size, "pcrSelections.pcrSelect")
        # PCR n is bit (n % 8) of octet n // 8 (Part 2, 10.6.1 TPMS_PCR_SELECT)
        indices = tuple(i for i in range(size * 8) if bitmap[i // 8] >> (i % 8) & 1)
        selection.append((algorithm, indices))
    digest = reader.tpm2b("pcrDigest")
    if reader.offset != len(data):
        raise EvidenceError("TPM quote: trailing bytes after TPMS_QUOTE_INFO")
    return TpmQuote(signer, extra, clock, resets, restarts, bool(safe), firmware, tuple(selection), digest)


def _tpmt_signature(data: bytes) -> tuple[int, bytes]:
    """(algorithm, signature in the form ``cryptography`` verifies) from TPMT_SIGNATURE bytes."""
    reader = _Reader(data)
    algorithm = reader.u16("TPMT_SIGNATURE.sigAlg")
    if reader.u16("TPMT_SIGNATURE.hash") != TPM_ALG_SHA256:
        raise EvidenceError("TPM quote: only SHA-256 signatures are accepted")
    if algorithm == TPM_ALG_ECDSA:
        r = int.from_bytes(reader.tpm2b("signatureR"), "big")
        s = int.from_bytes(reader.tpm2b("signatureS"), "big")
        signature = encode_dss_signature(r, s)
    elif algorithm in (TPM_ALG_RSASSA, TPM_ALG_RSAPSS):
        signature = reader.tpm2b("sig")
    else:
        raise EvidenceError(f"TPM quote: signature algorithm 0x{algorithm:04x} is not supported")
    if reader.offset != len(data):
        raise EvidenceError("TPM quote: trailing bytes after TPMT_SIGNATURE")
    return algorithm, signature


# ---------------------------------------------------------------------- signing (device side)


def sign_evidence(
    claims: Mapping[str, Any],
    private_key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
    cert_chain: Sequence[x509.Certificate],
    tpm_quote: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The evidence envelope for ``claims`` (device side: the agent and the tests use it)."""
    payload = canonical_json(dict(claims))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        alg, signature = "EdDSA", private_key.sign(payload)
    else:
        alg, signature = "ES256", private_key.sign(payload, ec.ECDSA(hashes.SHA256()))
    envelope: dict[str, Any] = {
        "claims": dict(claims),
        "alg": alg,
        "signature": base64.b64encode(signature).decode("ascii"),
        "cert_chain": [cert.public_bytes(Encoding.PEM).decode("ascii") for cert in cert_chain],
    }
    if tpm_quote is not None:
        envelope["tpm_quote"] = dict(tpm_quote)
    return envelope


# ---------------------------------------------------------------------- the verifier

ChainVerifier = Callable[[Sequence[x509.Certificate]], str]
"""Checks a certificate chain (leaf first) against the trust anchor at the current time and returns
the device id it names; raises TrustError (expired, revoked, unknown issuer)."""


class Verifier:
    """Issues challenges and turns evidence into verdicts.

    verify_chain: the CA's chain check, returning the device id of the leaf
    model_of: the enrolled model of a device (the registry); when None the evidence's ``model``
        claim is used
    verify_ak_chain: the chain check for TPM attestation key certificates (default: verify_chain);
        it must name the same device
    renewal_max_age: how fresh a healthy verdict must be for :meth:`renewal_gate`
    """

    def __init__(
        self,
        reference_values: ReferenceValues,
        verify_chain: ChainVerifier,
        *,
        nonce_store: NonceStore | None = None,
        verdict_store: VerdictStore | None = None,
        model_of: Callable[[str], str | None] | None = None,
        verify_ak_chain: ChainVerifier | None = None,
        nonce_ttl: dt.timedelta = dt.timedelta(minutes=5),
        max_clock_skew: dt.timedelta = dt.timedelta(minutes=10),
        renewal_max_age: dt.timedelta = dt.timedelta(hours=24),
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.reference_values = reference_values
        self.verify_chain = verify_chain
        self.verify_ak_chain = verify_ak_chain or verify_chain
        self.nonces: NonceStore = nonce_store if nonce_store is not None else InMemoryNonceStore()
        self.verdicts: VerdictStore = verdict_store if verdict_store is not None else InMemoryVerdictStore()
        self.model_of = model_of
        self.nonce_ttl = nonce_ttl
        self.max_clock_skew = max_clock_skew
        self.renewal_max_age = renewal_max_age
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def challenge(self, device_id: str) -> str:
        """A fresh nonce (64 hex characters) that only ``device_id`` may answer, once, before expiry."""
        nonce = secrets.token_hex(32)
        self.nonces.issue(device_id, nonce, self._clock() + self.nonce_ttl)
        return nonce

    def renewal_gate(self, device_id: str) -> tuple[bool, str]:
        """Whether ``device_id`` may renew its certificate: its newest verdict is healthy and fresh."""
        result = self.verdicts.latest(device_id)
        if result is None:
            return False, f"device {device_id} has never been attested"
        if result.verdict is not Verdict.HEALTHY:
            reasons = "; ".join(result.reasons) or "no reason recorded"
            return False, f"newest attestation verdict is {result.verdict}: {reasons}"
        age = self._clock() - result.verified_at
        if age > self.renewal_max_age:
            hours = self.renewal_max_age.total_seconds() / 3600
            return False, f"newest healthy verdict is {_hours(age)} old (must be within {hours:g} h)"
        return True, f"healthy verdict {_hours(age)} old"

    def verify(self, evidence: Mapping[str, Any] | bytes | str) -> AttestationResult:
        """Check one evidence envelope, record and return the verdict.

        Raises EvidenceError when the evidence cannot be attributed to a device (malformed, chain
        refused, chain names another device) or its nonce is unknown, expired, replayed or another
        device's. A signature that does not match the leaf certificate is a ``compromised`` verdict.
        """
        now = self._clock()
        envelope = _envelope(evidence)
        claims = envelope["claims"]
        chain = _certificates(envelope["cert_chain"], "cert_chain")
        device_id = self.verify_chain(chain)
        if claims["device_id"] != device_id:
            raise EvidenceError(
                f"evidence claims device {claims['device_id']!r} but is signed for device {device_id!r}"
            )
        status = self.nonces.consume(device_id, claims["nonce"], now)
        if status is not NonceStatus.OK:
            raise EvidenceError(f"nonce refused: {_NONCE_REASON[status]}")
        reasons: list[tuple[Verdict, str]] = []
        notes: list[str] = []
        authentic = _signature_ok(chain[0], envelope["alg"], envelope["signature"], claims)
        if not authentic:
            reasons.append((Verdict.COMPROMISED, "signature does not match the device certificate"))
        model = self._model(device_id, claims, reasons)
        firmware = claims.get("firmware_version")
        firmware = firmware if isinstance(firmware, str) else None
        try:
            measurements = list(claims["boot_log"])
            replayed = boot_aggregate(measurements)
        except EvidenceError as exc:
            reasons.append((Verdict.COMPROMISED, f"boot log unreadable: {exc}"))
            measurements, replayed = [], None
        claimed_aggregate = claims["boot_aggregate"]
        if replayed is not None and claimed_aggregate != replayed:
            reasons.append(
                (Verdict.COMPROMISED, "boot log does not replay to boot_aggregate (broken boot chain)")
            )
        skew = _timestamp_skew(claims["timestamp"], now)
        if skew is None:
            notes.append("timestamp is not an ISO 8601 time or epoch seconds")
        elif abs(skew) > self.max_clock_skew:
            notes.append(f"device clock is {_hours(abs(skew))} off")
        quoted = False
        if envelope.get("tpm_quote") is not None:
            quoted = True
            reasons.extend(
                (Verdict.COMPROMISED, reason)
                for reason in self._check_quote(envelope["tpm_quote"], device_id, claims, measurements)
            )
        reasons.extend(self._compare_reference(model, firmware, claims))
        verdict = Verdict.HEALTHY
        for level, _ in reasons:
            if _SEVERITY[level] > _SEVERITY[verdict]:
                verdict = level
        shown = tuple(reason for level, reason in reasons if level is verdict) + tuple(
            reason for level, reason in reasons if level is not verdict
        )
        result = AttestationResult(
            device_id=device_id,
            verdict=verdict,
            reasons=shown,
            verified_at=now,
            model=model,
            firmware_version=firmware,
            authentic=authentic,
            tpm_quote=quoted,
            notes=tuple(notes),
        )
        self.verdicts.record(result)
        return result

    def _model(
        self, device_id: str, claims: Mapping[str, Any], reasons: list[tuple[Verdict, str]]
    ) -> str | None:
        claimed = claims.get("model")
        claimed = claimed if isinstance(claimed, str) else None
        if self.model_of is None:
            return claimed
        enrolled = self.model_of(device_id)
        if claimed is not None and enrolled is not None and claimed != enrolled:
            reasons.append(
                (Verdict.COMPROMISED, f"evidence claims model {claimed!r}, enrolled as {enrolled!r}")
            )
        return enrolled

    def _compare_reference(
        self, model: str | None, firmware: str | None, claims: Mapping[str, Any]
    ) -> list[tuple[Verdict, str]]:
        reference = self.reference_values.for_model(model)
        if reference is None:
            return [(Verdict.UNKNOWN, f"no reference values for model {model!r}")]
        out: list[tuple[Verdict, str]] = []
        if reference.secure_boot_required and claims["secure_boot"] is not True:
            out.append((Verdict.COMPROMISED, f"secure boot is off (required for model {model})"))
        if reference.min_firmware is not None:
            below = _below(firmware, reference.min_firmware)
            if below is None:
                out.append((Verdict.UNKNOWN, f"firmware version {firmware!r} cannot be compared"))
            elif below:
                out.append(
                    (Verdict.OUTDATED, f"firmware {firmware} is below the minimum {reference.min_firmware}")
                )
        if reference.min_os_version is not None:
            below = _below(claims["os_version"], reference.min_os_version)
            if below is None:
                out.append((Verdict.UNKNOWN, f"OS version {claims['os_version']!r} cannot be compared"))
            elif below:
                out.append(
                    (
                        Verdict.OUTDATED,
                        f"OS {claims['os_version']} is below the minimum {reference.min_os_version}",
                    )
                )
        apps = claims["app_versions"]
        for app, minimum in reference.min_app_versions.items():
            running = apps.get(app)
            if running is None:
                out.append((Verdict.UNKNOWN, f"application {app} version not reported"))
            elif (below := _below(running, minimum)) is None:
                out.append((Verdict.UNKNOWN, f"application {app} version {running!r} cannot be compared"))
            elif below:
                out.append((Verdict.OUTDATED, f"application {app} {running} is below the minimum {minimum}"))
        release = reference.release(firmware)
        if release is None:
            out.append(
                (Verdict.UNKNOWN, f"no reference values for model {model} firmware release {firmware!r}")
            )
            return out
        digest = _digest_or_none(claims["firmware_digest"])
        if digest is None or digest not in release.firmware_digests:
            out.append((Verdict.COMPROMISED, f"firmware digest is not a known image of {model} {firmware}"))
        if release.config_digests:
            config = _digest_or_none(claims["config_digest"])
            if config is None or config not in release.config_digests:
                out.append((Verdict.COMPROMISED, "configuration digest differs from the expected one"))
        if release.boot_aggregates:
            aggregate = _digest_or_none(claims["boot_aggregate"])
            if aggregate is None or aggregate not in release.boot_aggregates:
                out.append(
                    (
                        Verdict.COMPROMISED,
                        f"boot measurements differ from the reference of {model} {firmware}",
                    )
                )
        return out

    def _check_quote(
        self,
        quote: object,
        device_id: str,
        claims: Mapping[str, Any],
        measurements: Sequence[Any],
    ) -> list[str]:
        """Reasons the TPM quote fails (empty when it holds); EvidenceError when malformed."""
        if not isinstance(quote, Mapping):
            raise EvidenceError("tpm_quote must be an object")
        for key in ("attest", "signature", "pcrs", "ak_chain"):
            if key not in quote:
                raise EvidenceError(f"tpm_quote.{key} is missing")
        attest = _b64(quote["attest"], "tpm_quote.attest")
        signature = _b64(quote["signature"], "tpm_quote.signature")
        ak_chain = _certificates(quote["ak_chain"], "tpm_quote.ak_chain")
        ak_device = self.verify_ak_chain(ak_chain)
        if ak_device != device_id:
            return [f"TPM attestation key certificate names device {ak_device!r}"]
        parsed = parse_tpms_attest(attest)
        reasons: list[str] = []
        algorithm, raw_signature = _tpmt_signature(signature)
        if not _verify_raw(ak_chain[0].public_key(), algorithm, raw_signature, attest):
            return ["TPM quote signature does not match the attestation key"]
        try:
            nonce = bytes.fromhex(claims["nonce"])
        except ValueError:
            nonce = claims["nonce"].encode("utf-8")
        if parsed.extra_data != nonce:
            reasons.append("TPM quote extraData is not the challenge nonce")
        pcrs = quote["pcrs"]
        if not isinstance(pcrs, Mapping):
            raise EvidenceError("tpm_quote.pcrs must map PCR indices to hex values")
        values: dict[int, bytes] = {}
        for key, value in pcrs.items():
            try:
                index = int(key)
            except (TypeError, ValueError):
                raise EvidenceError(f"tpm_quote.pcrs key {key!r} is not a PCR index") from None
            values[index] = _sha256_hex(value, f"tpm_quote.pcrs[{key}]")
        selected: list[int] = []
        for algorithm_id, indices in parsed.pcr_selection:
            if algorithm_id != TPM_ALG_SHA256:
                reasons.append(f"TPM quote selects a non-SHA-256 PCR bank (0x{algorithm_id:04x})")
            selected.extend(indices)
        if set(selected) != set(values):
            reasons.append("TPM quote PCR selection differs from the PCR values sent")
            return reasons
        # pcrDigest: the hash of the selected PCR values concatenated in selection order (Part 3, 18.4)
        if hashlib.sha256(b"".join(values[i] for i in selected)).digest() != parsed.pcr_digest:
            reasons.append("TPM quote PCR digest does not match the PCR values")
        try:
            replay = pcr_replay(measurements)
        except EvidenceError:
            replay = {}
        for index, value in sorted(replay.items()):
            if index not in values:
                reasons.append(f"TPM quote does not cover PCR {index} of the boot log")
            elif values[index] != value:
                reasons.append(f"boot log does not replay to the quoted PCR {index}")
        return reasons


_NONCE_REASON = {
    NonceStatus.UNKNOWN: "not issued by this verifier (or long expired)",
    NonceStatus.EXPIRED: "expired",
    NonceStatus.REPLAYED: "already used (replay)",
    NonceStatus.WRONG_DEVICE: "issued to another device",
}


def _envelope(evidence: Mapping[str, Any] | bytes | str) -> dict[str, Any]:
    if isinstance(evidence, bytes | str):
        if len(evidence) > MAX_EVIDENCE_BYTES:
            raise EvidenceError("evidence is larger than 1 MiB")
        try:
            evidence = json.loads(evidence)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EvidenceError(f"evidence is not JSON: {exc}") from None
    if not isinstance(evidence, Mapping):
        raise EvidenceError("evidence must be a JSON object")
    for key in ("claims", "alg", "signature", "cert_chain"):
        if key not in evidence:
            raise EvidenceError(f"evidence.{key} is missing")
    claims = evidence["claims"]
    if not isinstance(claims, dict):
        raise EvidenceError("evidence.claims must be an object")
    missing = [key for key in CLAIMS_REQUIRED if key not in claims]
    if missing:
        raise EvidenceError(f"claims missing: {', '.join(missing)}")
    _check_canonical(claims, "claims")
    for key in ("device_id", "nonce", "firmware_digest", "boot_aggregate", "os_version", "config_digest"):
        if not isinstance(claims[key], str):
            raise EvidenceError(f"claims.{key} must be a string")
    if not isinstance(claims["secure_boot"], bool):
        raise EvidenceError("claims.secure_boot must be true or false")
    apps = claims["app_versions"]
    if not isinstance(apps, dict) or not all(isinstance(v, str) for v in apps.values()):
        raise EvidenceError("claims.app_versions must map application names to version strings")
    if evidence["alg"] not in ("ES256", "EdDSA"):
        raise EvidenceError("evidence.alg must be ES256 or EdDSA")
    return dict(evidence)


def _b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise EvidenceError(f"{where} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceError(f"{where} is not valid base64") from None


def _certificates(value: object, where: str) -> list[x509.Certificate]:
    if not isinstance(value, list) or not value or len(value) > 8:
        raise EvidenceError(f"{where} must list 1 to 8 PEM certificates, leaf first")
    out: list[x509.Certificate] = []
    for index, pem in enumerate(value):
        if not isinstance(pem, str):
            raise EvidenceError(f"{where}[{index}] must be a PEM string")
        try:
            out.append(x509.load_pem_x509_certificate(pem.encode("ascii")))
        except (ValueError, UnicodeEncodeError):
            raise EvidenceError(f"{where}[{index}] is not a PEM certificate") from None
    return out


def _signature_ok(leaf: x509.Certificate, alg: str, signature: object, claims: Mapping[str, Any]) -> bool:
    raw = _b64(signature, "evidence.signature")
    payload = canonical_json(dict(claims))
    key = leaf.public_key()
    try:
        if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(raw, payload)
            return True
        if alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
            key.verify(raw, payload, ec.ECDSA(hashes.SHA256()))
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def _verify_raw(key: object, algorithm: int, signature: bytes, message: bytes) -> bool:
    try:
        if algorithm == TPM_ALG_ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            return True
        if algorithm == TPM_ALG_RSASSA and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            return True
        if algorithm == TPM_ALG_RSAPSS and isinstance(key, rsa.RSAPublicKey):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
            key.verify(signature, message, pss, hashes.SHA256())
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def _digest_or_none(text: object) -> bytes | None:
    try:
        return _sha256_hex(text.lower() if isinstance(text, str) else text, "digest")
    except EvidenceError:
        return None


def _below(version: object, minimum: str) -> bool | None:
    running = parse_version(version)
    limit = parse_version(minimum)
    if running is None or limit is None:
        return None
    return running < limit


def _timestamp_skew(value: object, now: dt.datetime) -> dt.timedelta | None:
    if isinstance(value, int) and not isinstance(value, bool):
        if not math.isfinite(value) or abs(value) > 1 << 40:
            return None
        return dt.datetime.fromtimestamp(value, dt.UTC) - now
    if isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        return stamp - now
    return None


def _hours(delta: dt.timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
