"""The trust service: the device plane's parts built from one settings object and served as routers.

:class:`TrustService` bundles the certificate authority, the registry, the attestation verifier, the
access policy and the TUF update repository of one FieldWard instance, and answers the questions
that join them: a device's :class:`~fieldward.trust.context.DeviceContext` (registry + newest
verdict + quarantine + open alerts), a policy decision, whether a certificate may be renewed (a
fresh healthy verdict: the EST renewal gate) and the aggregation of device failure reports.

:meth:`TrustService.routers` returns every HTTP surface the console mounts with one loop::

    for router in service.routers():
        app.include_router(router)

- ``/.well-known/est/...``: EST (RFC 7030), renewal gated by attestation;
- ``/trust/crl``, ``/trust/ocsp``: revocation;
- ``/updates/...``: the TUF repository;
- ``/trust/...``: the device API of this module (attestation challenge and evidence, policy
  decisions, failure reports, the device's own configuration).

Callers of the ``/trust`` device API authenticate exactly like EST ``simplereenroll``: with their
FieldWard certificate over mutual TLS (``fieldward.trust.est.peer_certificates``: the ASGI TLS
extension of :class:`~fieldward.trust.est.TLSExtensionH11Protocol`, or the RFC 9440 header from a
trusted reverse proxy), checked by :meth:`CertificateAuthority.verify` (ours, unexpired, unrevoked).
A device may ask only about itself; a ``console`` or ``sensor`` certificate may ask about any device
and read the failure-report aggregates.

Verdicts, failure aggregates, running versions (revision 0006) and pending attestation challenges
(revision 0009) are kept in the database (:mod:`fieldward.trust.state`), so a challenge issued by
one uvicorn worker may be answered at another and is accepted once across all of them, unless
``TrustServiceSettings.persist`` is False (benchmarks: in memory, guarded by a lock). The service is
safe to share between uvicorn's worker threads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from fieldward.store.database import Database, data_dir
from fieldward.trust.attestation import (
    AttestationResult,
    EvidenceError,
    ReferenceValues,
    Verifier,
    load_reference_values,
)
from fieldward.trust.autolink import LinkProposals
from fieldward.trust.ca import CASettings, CertificateAuthority, identity_of, load_passphrase
from fieldward.trust.context import DeviceContext, severity_rank
from fieldward.trust.errors import TrustError
from fieldward.trust.est import ESTSettings, TLSExtensionH11Protocol, est_router, peer_certificates
from fieldward.trust.policy import ACTIONS, Decision, Policy, PolicyEngine, load_policy
from fieldward.trust.registry import TrustRegistry
from fieldward.trust.response import TrustLinks
from fieldward.trust.revocation import revocation_router
from fieldward.trust.state import (
    DatabaseFailureReports,
    DatabaseNonceStore,
    DatabaseVerdictStore,
    FailureRow,
    VersionBook,
    VersionRecord,
)
from fieldward.trust.updates import UpdateRepository, tuf_router, update_status

__all__ = [
    "FAILURE_KINDS",
    "TRUST_PREFIX",
    "FailureAggregate",
    "FailureReports",
    "RunningServer",
    "TrustService",
    "TrustServiceSettings",
    "failure_signature",
    "serve_tls",
]

log = logging.getLogger(__name__)

TRUST_PREFIX = "/trust"
FAILURE_KINDS = ("crash", "error", "watchdog", "update")
"""What a failure report may be (the agent's ``report_failure``)."""
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b|\d+")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class TrustServiceSettings:
    """Everything the trust service needs; thresholds are settings, not literals.

    data_dir: where the CA (``trust/``) and the update repository (``updates/``) live; None: the
        FieldWard data folder (``$FIELDWARD_HOME``, ...)
    passphrase_file: the passphrase of the CA keys and (unless ``update_passphrase_file``) of the TUF
        keys; None: ``$FIELDWARD_CA_PASSPHRASE``
    policy_file: the access policy (YAML, docs/trust/policy.md); None: no rule, everything denied
    reference_values_file: attestation reference values (YAML); None: every verdict is ``unknown``
    """

    data_dir: Path | None = None
    passphrase_file: Path | None = None
    policy_file: Path | None = None
    reference_values_file: Path | None = None
    update_passphrase_file: Path | None = None
    crl_url: str | None = None
    ocsp_url: str | None = None
    device_validity: dt.timedelta = dt.timedelta(hours=24)
    est: ESTSettings = field(default_factory=ESTSettings)
    channels: tuple[str, ...] = ("stable", "beta")
    nonce_ttl: dt.timedelta = dt.timedelta(minutes=5)
    renewal_max_age: dt.timedelta = dt.timedelta(hours=24)
    """A renewal needs a healthy verdict at most this old."""
    max_body: int = 1 << 20
    """Largest request body of the /trust API (evidence is at most 1 MiB)."""
    max_failure_signatures: int = 10_000
    """Distinct (model, firmware, signature) aggregates kept; further reports are only counted."""
    max_devices_per_failure: int = 100
    """Device ids remembered per aggregate (the count is exact regardless)."""
    persist: bool = True
    """Verdicts, failure reports and attestation challenges in the database (revisions 0006, 0009);
    False: in memory only, for one process."""

    def directory(self) -> Path:
        return self.data_dir if self.data_dir is not None else data_dir()


# -- failure reports ------------------------------------------------------------------------------


def _normalise(text: str) -> str:
    """A message with its variable parts (numbers, addresses, hex ids) replaced by ``#``."""
    return _SPACES.sub(" ", _NUMBERS.sub("#", text)).strip().lower()


def failure_signature(kind: str, component: str, message: str, stack: Sequence[str] = ()) -> str:
    """The aggregation key of a failure: 16 hex digits of SHA-256 over the kind, the component, the
    message with numbers and addresses blanked, and the top five stack frames (also blanked), so that
    the same crash at another address or with another counter lands in one bucket."""
    parts = [kind, component, _normalise(message), *(_normalise(frame) for frame in stack[:5])]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass
class FailureAggregate:
    """Failure reports of one (model, firmware, signature)."""

    model: str | None
    firmware: str | None
    signature: str
    kind: str
    component: str
    message: str
    """The first report's message (truncated to 500 characters)."""
    count: int = 0
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None
    devices: set[str] = field(default_factory=set)
    devices_dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "firmware": self.firmware,
            "signature": self.signature,
            "kind": self.kind,
            "component": self.component,
            "message": self.message,
            "count": self.count,
            "devices": len(self.devices) + self.devices_dropped,
            "device_ids": sorted(self.devices),
            "first_seen": None if self.first_seen is None else self.first_seen.isoformat(),
            "last_seen": None if self.last_seen is None else self.last_seen.isoformat(),
        }


class FailureReports:
    """Crash and error reports aggregated per (model, firmware, failure signature)."""

    def __init__(self, max_signatures: int = 10_000, max_devices: int = 100) -> None:
        self._aggregates: dict[tuple[str | None, str | None, str], FailureAggregate] = {}
        self._seen: dict[tuple[str | None, str | None, str], set[str]] = {}
        self._lock = threading.Lock()
        self._max = max_signatures
        self._max_devices = max_devices
        self.overflow = 0
        """Reports dropped because ``max_signatures`` aggregates exist already (counted, not kept)."""

    def add(
        self,
        device_id: str,
        *,
        model: str | None,
        firmware: str | None,
        kind: str,
        component: str,
        message: str,
        stack: Sequence[str] = (),
        count: int = 1,
        now: dt.datetime | None = None,
    ) -> FailureAggregate | None:
        """Count ``count`` occurrences; None when the table is full (counted in ``overflow``)."""
        moment = now if now is not None else dt.datetime.now(dt.UTC)
        signature = failure_signature(kind, component, message, stack)
        key = (model, firmware, signature)
        with self._lock:
            aggregate = self._aggregates.get(key)
            if aggregate is None:
                if len(self._aggregates) >= self._max:
                    self.overflow += count
                    return None
                aggregate = FailureAggregate(
                    model, firmware, signature, kind, component, message[:500], first_seen=moment
                )
                self._aggregates[key] = aggregate
            aggregate.count += count
            aggregate.last_seen = moment
            if device_id not in aggregate.devices:
                if len(aggregate.devices) < self._max_devices:
                    aggregate.devices.add(device_id)
                else:
                    seen = self._seen.setdefault(key, set())
                    if device_id not in seen:
                        seen.add(device_id)
                        aggregate.devices_dropped += 1
            return aggregate

    def aggregates(self) -> list[FailureAggregate]:
        """Every aggregate, most frequent first."""
        with self._lock:
            return sorted(self._aggregates.values(), key=lambda a: (-a.count, a.signature))


# -- request parsing ------------------------------------------------------------------------------


class _RefusedError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _error(exc: _RefusedError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


def _optional(body: Mapping[str, Any], key: str, limit: int = 4096) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise _RefusedError(422, f"{key} must be a non-empty string of at most {limit} characters")
    return value


def _required(body: Mapping[str, Any], key: str, limit: int = 4096) -> str:
    value = _optional(body, key, limit)
    if value is None:
        raise _RefusedError(422, f"{key} is required")
    return value


# -- the service ----------------------------------------------------------------------------------


class TrustService:
    """The device plane of one FieldWard instance (see the module docstring).

    database: migrated to head (the trust tables, revision 0004+)
    alert_severity: the highest severity among a device's open alerts (the console supplies it from
        the sensor's alerts); None: no alerts known
    clock: the service's time (tests move it)
    """

    def __init__(
        self,
        settings: TrustServiceSettings,
        database: Database,
        *,
        alert_severity: Callable[[str], str | None] | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.alert_severity = alert_severity
        root = settings.directory()
        passphrase = load_passphrase(settings.passphrase_file)
        self.registry = TrustRegistry(database)
        self.ca = CertificateAuthority.open_or_create(
            self.registry,
            CASettings(
                directory=root / "trust",
                passphrase_file=settings.passphrase_file,
                device_validity=settings.device_validity,
                crl_url=settings.crl_url,
                ocsp_url=settings.ocsp_url,
            ),
            passphrase=passphrase,
        )
        self.reference_values = (
            load_reference_values(settings.reference_values_file)
            if settings.reference_values_file is not None
            else ReferenceValues()
        )
        self.verdict_store = DatabaseVerdictStore(database) if settings.persist else None
        self.nonce_store = DatabaseNonceStore(database, clock=self._clock) if settings.persist else None
        self.verifier = Verifier(
            self.reference_values,
            self.device_of_chain,
            nonce_store=self.nonce_store,
            verdict_store=self.verdict_store,
            model_of=self._enrolled_model,
            nonce_ttl=settings.nonce_ttl,
            renewal_max_age=settings.renewal_max_age,
            clock=self._clock,
        )
        self.policy = load_policy(settings.policy_file) if settings.policy_file else Policy((), "<no policy>")
        self.engine = PolicyEngine(self.policy)
        update_secret = (
            load_passphrase(settings.update_passphrase_file)
            if settings.update_passphrase_file is not None
            else passphrase
        )
        self.updates = UpdateRepository(root / "updates", update_secret, channels=settings.channels)
        self.failures: FailureReports | DatabaseFailureReports = (
            DatabaseFailureReports(database, settings.max_failure_signatures)
            if settings.persist
            else FailureReports(settings.max_failure_signatures, settings.max_devices_per_failure)
        )
        self.versions = VersionBook(database)
        self.link_proposals = LinkProposals(database, TrustLinks(database))
        """Device attributes (serial, MAC) recorded at enrollment and the inventory links they propose;
        the console replaces it with one carrying its settings and audit (docs/trust/console.md)."""
        self.enrollment_listeners: list[Callable[[str], None]] = []
        """Called with the device id after each initial enrollment (the console's automatic links)."""
        self.verdict_listeners: list[Callable[[AttestationResult], None]] = []
        """Called with every new verdict (the quarantine engine subscribes here)."""
        self.version_listeners: list[Callable[[VersionRecord, bool], None]] = []
        """Called with every recorded running version and whether it changed (the console's risk)."""

    def __repr__(self) -> str:
        return f"TrustService({str(self.settings.directory())!r})"

    # -- identity ---------------------------------------------------------------------------------

    def now(self) -> dt.datetime:
        return self._clock()

    def device_of_chain(self, chain: Sequence[x509.Certificate]) -> str:
        """The device id of a FieldWard *device* certificate chain; TrustError when refused."""
        leaf = self.ca.verify(chain, self._clock())
        identity = identity_of(leaf)
        if identity is None or identity[0] != "device":
            raise TrustError("the certificate is not a FieldWard device certificate")
        return identity[1]

    def _enrolled_model(self, device_id: str) -> str | None:
        device = self.registry.device(device_id)
        return None if device is None else device.model

    def caller(self, request: Request) -> tuple[str, str]:
        """``(profile, id)`` of the mutual-TLS caller of a request; raises :class:`_RefusedError`."""
        try:
            chain = peer_certificates(request, self.settings.est)
        except TrustError as exc:
            raise _RefusedError(401, str(exc)) from None
        if not chain:
            raise _RefusedError(401, "this API needs a FieldWard client certificate (mutual TLS)")
        try:
            leaf = self.ca.verify(chain, self._clock())
        except TrustError as exc:
            raise _RefusedError(403, str(exc)) from None
        identity = identity_of(leaf)
        if identity is None:
            raise _RefusedError(403, "the certificate carries no FieldWard identity")
        return identity

    # -- context, policy, renewal ----------------------------------------------------------------

    def context(self, device_id: str) -> DeviceContext:
        """What the policy engine knows of ``device_id`` now."""
        device = self.registry.device(device_id)
        result = self.verifier.verdicts.latest(device_id)
        severity = self.alert_severity(device_id) if self.alert_severity is not None else None
        if severity_rank(severity) < 0:
            severity = None
        if device is None:
            return DeviceContext(device_id=device_id, open_alert_severity=severity)
        return DeviceContext(
            device_id=device_id,
            group=device.group,
            device_type=device.device_type,
            model=device.model,
            firmware=device.firmware,
            attested_at=None if result is None else result.verified_at,
            verdict=None if result is None else str(result.verdict),
            quarantined=device.quarantined,
            open_alert_severity=severity,
        )

    def decide(self, device_id: str, action: str, resource: str) -> Decision:
        """The policy decision for ``device_id`` doing ``action`` on ``resource`` now."""
        return self.engine.decide(self.context(device_id), action, resource, self._clock())

    def reload_policy(self) -> None:
        """Re-read the policy file (after an edit); the old engine keeps serving if it is invalid."""
        if self.settings.policy_file is None:
            return
        policy = load_policy(self.settings.policy_file)
        self.policy, self.engine = policy, PolicyEngine(policy)

    def renewal_gate(self, device_id: str) -> tuple[bool, str]:
        """The EST renewal gate: a healthy verdict within ``renewal_max_age``."""
        return self.verifier.renewal_gate(device_id)

    # -- attestation ------------------------------------------------------------------------------

    def attest(self, device_id: str, evidence: Mapping[str, Any] | bytes | str) -> AttestationResult:
        """Verify ``evidence`` sent by the authenticated ``device_id``; record and return the verdict.

        EvidenceError when it cannot be attributed or its nonce is refused; TrustError when the
        evidence's certificate is another device's.
        """
        result = self.verifier.verify(evidence)
        if result.device_id != device_id:
            raise TrustError(f"evidence of device {result.device_id!r} sent by {device_id!r}")
        if result.firmware_version is not None and str(result.verdict) in ("healthy", "outdated"):
            device = self.registry.device(device_id)
            if device is None or device.firmware != result.firmware_version:  # write only on change
                self.registry.register_device(device_id, firmware=result.firmware_version)
            # The attested version is the running version unless the update client reported the same
            # version already (its report carries the channel and the last check).
            known = self.versions.get(device_id) if self.settings.persist else None
            if self.settings.persist and (
                known is None
                or known.source == "attestation"
                or known.running_version != result.firmware_version
            ):
                self.record_version(
                    device_id, {"running_version": result.firmware_version}, source="attestation"
                )
        for listener in list(self.verdict_listeners):
            try:
                listener(result)
            except Exception:  # a failing listener must not lose the verdict (mitmproxy's safecall)
                log.exception("verdict listener %r failed", listener)
        return result

    # -- running versions -------------------------------------------------------------------------

    def record_version(
        self, device_id: str, report: Mapping[str, Any], *, source: str = "update"
    ) -> VersionRecord:
        """Record ``device_id``'s running version from its update client's ``report()`` (or, with
        ``source="attestation"``, its attested firmware version) and its update status against the
        TUF repository's channel for the device's model; calls every ``version_listeners`` callback.
        ValueError names a bad field."""
        running = report.get("running_version")
        if running is not None and (not isinstance(running, str) or not running or len(running) > 128):
            raise ValueError("running_version must be a version string of at most 128 characters")
        device = self.registry.device(device_id)
        group = self.registry.device_group(device_id)
        channel = report.get("channel") if source == "update" else None
        if channel is not None and (not isinstance(channel, str) or len(channel) > 64):
            raise ValueError("channel must be a channel name")
        if channel is None:
            channel = "stable" if group is None else group.update_channel
        details = {
            key: report[key]
            for key in ("last_check", "last_error")
            if isinstance(report.get(key), str) and len(report[key]) <= 1000
        }
        newest: str | None = None
        behind, days, outdated = 0, None, False
        model = None if device is None else device.model
        if model and running is not None:
            status = update_status(
                self.updates,
                {"device_id": device_id, "running_version": running, "channel": channel},
                model,
                None if group is None else group.name,
                self._clock(),
            )
            newest, behind, days, outdated = (
                status.newest_version,
                status.releases_behind,
                status.days_behind,
                status.outdated,
            )
        record, changed = self.versions.record(
            device_id,
            running_version=running,
            source=source,
            channel=channel,
            newest_version=newest,
            releases_behind=behind,
            days_behind=days,
            outdated=outdated,
            details=details,
            now=self._clock(),
        )
        for listener in list(self.version_listeners):
            try:
                listener(record, changed)
            except Exception:
                log.exception("version listener %r failed", listener)
        return record

    # -- enrollment -------------------------------------------------------------------------------

    def enrolled(
        self,
        device_id: str,
        bootstrap: str,
        idevid_chain: Sequence[x509.Certificate],
        csr: x509.CertificateSigningRequest,
    ) -> None:
        """After an initial enrollment (EST): record the device's serial number and MAC address from
        its IDevID and CSR (:meth:`LinkProposals.record_enrollment`), then call every
        ``enrollment_listeners`` callback."""
        if self.settings.persist:
            self.link_proposals.record_enrollment(device_id, bootstrap, idevid_chain, csr)
        for listener in list(self.enrollment_listeners):
            try:
                listener(device_id)
            except Exception:
                log.exception("enrollment listener %r failed", listener)

    # -- failure reports --------------------------------------------------------------------------

    def report_failure(self, device_id: str, body: Mapping[str, Any]) -> FailureAggregate | FailureRow | None:
        """Aggregate one failure report of ``device_id`` (body as the agent sends it).

        The model and firmware are the registry's (what attestation established), the report's own
        claims only when the registry knows nothing. ValueError names a bad field.
        """
        try:
            kind = _required(body, "kind", 32)
            component = _required(body, "component", 128)
            message = _required(body, "message", 4096)
            claimed_model = _optional(body, "model", 128)
            claimed_firmware = _optional(body, "firmware", 128)
        except _RefusedError as exc:
            raise ValueError(exc.detail) from None
        if kind not in FAILURE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAILURE_KINDS)}")
        stack = body.get("stack", [])
        if not isinstance(stack, list) or not all(isinstance(f, str) and len(f) <= 1024 for f in stack):
            raise ValueError("stack must be a list of strings (frames, at most 1024 characters each)")
        count = body.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1_000_000:
            raise ValueError("count must be an integer from 1 to 1,000,000")
        device = self.registry.device(device_id)
        model = device.model if device is not None and device.model else claimed_model
        firmware = device.firmware if device is not None and device.firmware else claimed_firmware
        return self.failures.add(
            device_id,
            model=model,
            firmware=firmware,
            kind=kind,
            component=component,
            message=message,
            stack=stack,
            count=count,
            now=self._clock(),
        )

    # -- HTTP -------------------------------------------------------------------------------------

    def routers(self) -> list[APIRouter]:
        """Every router of the device plane, each with its own prefix (module docstring)."""
        return [
            est_router(
                self.ca,
                self.registry,
                settings=self.settings.est,
                renewal_gate=self.renewal_gate,
                clock=self._clock,
                on_enrolled=self.enrolled,
            ),
            revocation_router(self.ca),
            tuf_router(self.updates),
            self.device_router(),
        ]

    def device_router(self) -> APIRouter:
        """``/trust``: attestation, policy decisions, failure reports, the device's configuration."""
        router = APIRouter(prefix=TRUST_PREFIX, tags=["trust"])
        limit = self.settings.max_body

        async def read_json(request: Request) -> dict[str, Any]:
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise _RefusedError(413, f"the body is larger than {limit} bytes")
            try:
                value = json.loads(bytes(body))
            except (ValueError, UnicodeDecodeError):
                raise _RefusedError(400, "the body is not JSON") from None
            if not isinstance(value, dict):
                raise _RefusedError(400, "the body must be a JSON object")
            return value

        def device_caller(request: Request) -> str:
            profile, ident = self.caller(request)
            if profile != "device":
                raise _RefusedError(403, "only a device certificate may use this endpoint")
            return ident

        @router.post("/attest/challenge", operation_id="trust_attest_challenge")
        def challenge(request: Request) -> Response:
            """A single-use nonce for the calling device."""
            try:
                device_id = device_caller(request)
                nonce = self.verifier.challenge(device_id)
            except _RefusedError as exc:
                return _error(exc)
            except TrustError as exc:  # too many outstanding challenges
                return _error(_RefusedError(503, str(exc)))
            return JSONResponse(
                {
                    "device_id": device_id,
                    "nonce": nonce,
                    "expires_in": int(self.settings.nonce_ttl.total_seconds()),
                }
            )

        @router.post("/attest/evidence", operation_id="trust_attest_evidence")
        async def evidence(request: Request) -> Response:
            """Signed evidence answering a challenge -> the verdict."""
            try:
                device_id = device_caller(request)
                envelope = await read_json(request)
                result = self.attest(device_id, envelope)
            except _RefusedError as exc:
                return _error(exc)
            except EvidenceError as exc:
                log.info("attestation evidence refused: %s", exc)
                return _error(_RefusedError(400, str(exc)))
            except TrustError as exc:
                log.info("attestation refused: %s", exc)
                return _error(_RefusedError(403, str(exc)))
            log.info("attested %s: %s", device_id, result.verdict)
            return JSONResponse(result.to_dict())

        @router.post("/policy/decide", operation_id="trust_policy_decide")
        async def decide(request: Request) -> Response:
            """``{device_id?, action, resource}`` -> ``{allowed, rule, reasons}``."""
            try:
                profile, ident = self.caller(request)
                body = await read_json(request)
                device_id = _optional(body, "device_id", 128) or ident
                if profile == "device" and device_id != ident:
                    raise _RefusedError(403, "a device may only ask about itself")
                action = _required(body, "action", 16)
                resource = _required(body, "resource", 65535)
                if action not in ACTIONS:
                    raise _RefusedError(422, f"action must be one of {', '.join(ACTIONS)}")
                decision = self.decide(device_id, action, resource)
            except _RefusedError as exc:
                return _error(exc)
            return JSONResponse(
                {
                    "device_id": device_id,
                    "action": action,
                    "resource": resource,
                    "allowed": decision.allowed,
                    "rule": decision.rule,
                    "reasons": list(decision.reasons),
                }
            )

        @router.post("/reports", operation_id="trust_failure_report")
        async def report(request: Request) -> Response:
            """A device's crash or error report, aggregated per (model, firmware, signature)."""
            try:
                device_id = device_caller(request)
                body = await read_json(request)
                try:
                    aggregate = self.report_failure(device_id, body)
                except ValueError as exc:
                    raise _RefusedError(422, str(exc)) from None
            except _RefusedError as exc:
                return _error(exc)
            if aggregate is None:
                return JSONResponse({"accepted": True, "aggregated": False}, status_code=202)
            return JSONResponse(
                {
                    "accepted": True,
                    "aggregated": True,
                    "signature": aggregate.signature,
                    "count": aggregate.count,
                },
                status_code=202,
            )

        @router.post("/updates/report", operation_id="trust_update_report")
        async def update_report(request: Request) -> Response:
            """The device's update client report (``{running_version, channel?, last_check?,
            last_error?}``) -> its recorded version and update status."""
            try:
                device_id = device_caller(request)
                body = await read_json(request)
                claimed = body.get("device_id")
                if claimed is not None and claimed != device_id:
                    raise _RefusedError(403, "a device may only report its own version")
                if body.get("running_version") is None:
                    raise _RefusedError(422, "running_version is required")
                try:
                    record = self.record_version(device_id, body, source="update")
                except ValueError as exc:
                    raise _RefusedError(422, str(exc)) from None
            except _RefusedError as exc:
                return _error(exc)
            return JSONResponse(record.to_dict(), status_code=202)

        @router.get("/reports", operation_id="trust_failure_reports")
        def reports(request: Request) -> Response:
            """The aggregates (console or sensor certificates only)."""
            try:
                profile, _ident = self.caller(request)
                if profile not in ("console", "sensor"):
                    raise _RefusedError(403, "only a console or sensor certificate may read failure reports")
            except _RefusedError as exc:
                return _error(exc)
            return JSONResponse(
                {
                    "aggregates": [a.to_dict() for a in self.failures.aggregates()],
                    "overflow": self.failures.overflow,
                }
            )

        @router.get("/device", operation_id="trust_device_config")
        def device_config(request: Request) -> Response:
            """The calling device's identity, group, update channel and newest verdict."""
            try:
                device_id = device_caller(request)
            except _RefusedError as exc:
                return _error(exc)
            device = self.registry.device(device_id)
            group = self.registry.device_group(device_id)
            result = self.verifier.verdicts.latest(device_id)
            return JSONResponse(
                {
                    "device_id": device_id,
                    "group": None if group is None else group.name,
                    "update_channel": "stable" if group is None else group.update_channel,
                    "policy": None if group is None else group.policy,
                    "model": None if device is None else device.model,
                    "firmware": None if device is None else device.firmware,
                    "quarantined": bool(device is not None and device.quarantined),
                    "verdict": None if result is None else str(result.verdict),
                }
            )

        return router


# -- a TLS server for the agent, the fleet simulator and tests --------------------------------------


@dataclass(frozen=True)
class RunningServer:
    """A uvicorn server with the trust routers: its URL and the CA file clients trust it with."""

    url: str
    ca_file: Path
    """The FieldWard root CA (PEM): it issued the server's ``console`` certificate."""


@contextmanager
def serve_tls(
    service: TrustService,
    directory: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    startup_timeout: float = 15.0,
) -> Iterator[RunningServer]:
    """Run ``service.routers()`` under uvicorn with TLS in a thread (the console's wiring, minus the
    console): a ``console`` certificate from the service's CA, client certificates optional and
    verified against the FieldWard chain plus the manufacturer CAs, the ASGI TLS extension added by
    :class:`TLSExtensionH11Protocol`. The server's key is written to ``directory`` with mode 0600."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = service.ca.issue_keypair(
        "console", f"trust-{secrets.token_hex(4)}", dns_names=dns_names, ip_addresses=ip_addresses
    )
    pem = serialization.Encoding.PEM
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(pem) + service.ca.issuing.public_bytes(pem))
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ca_file = directory / "fieldward-root.pem"
    ca_file.write_bytes(service.ca.root.public_bytes(pem))
    client_cas = directory / "client-cas.pem"
    anchors = [c for m in service.settings.est.manufacturers for c in m.certificates]
    client_cas.write_bytes(service.ca.chain_pem() + b"".join(c.public_bytes(pem) for c in anchors))
    app = FastAPI(title="FieldWard trust service")
    for router in service.routers():
        app.include_router(router)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=TLSExtensionH11Protocol,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
        ssl_cert_reqs=ssl.CERT_OPTIONAL,
        ssl_ca_certs=str(client_cas),
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fieldward-trust-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise TrustError("the trust service's TLS server did not start")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer(f"https://{host}:{bound}", ca_file)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
