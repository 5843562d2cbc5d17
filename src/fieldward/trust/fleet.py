"""The fleet simulator: N simulated devices, some misbehaving, against a running trust service.

Each simulated device is a real :class:`~fieldward.trust.agent.DeviceAgent` with its own state
folder, talking HTTPS (mutual TLS after enrollment) to the service: it enrolls over EST with a
one-time token, attests with signed evidence and asks the policy decision API whether it may publish
to ``devices/<id>/telemetry/<metric>``. Given a :class:`~fieldward.trust.fleet_broker.BrokerTarget`
(``fieldward fleet simulate`` starts a local Mosquitto when it is installed), the broker is then
synced with the policy and every device really publishes over MQTT 5 with mutual TLS (paho-mqtt):
the broker, not the API, must accept or refuse it.

Misbehaving devices:

- ``tampered``: its firmware image differs from the genuine release, so the digest it measures is
  unknown to the reference values: verdict ``compromised``, telemetry denied (by the broker: "Not
  authorized", it has no rights there);
- ``expired``: holds a certificate of the FieldWard CA that expired a day ago: the TLS handshake (or
  the service's own check) refuses it for attestation and for renewal, and the broker's handshake
  refuses its MQTT connection;
- ``overreach``: a healthy device that also publishes to another device's topic: denied by policy
  and, at the broker, "Not authorized" while its own telemetry is accepted.

Tokens and the expired certificates come from a :class:`Provisioner`, the operator side (the
registry and CA of the instance): :class:`ServiceProvisioner` wraps a local
:class:`~fieldward.trust.service.TrustService`. :func:`simulate` returns a :class:`FleetReport` with
the count per outcome; :func:`fleet_main` is ``fieldward fleet simulate``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fieldward.store.database import Database, default_url
from fieldward.trust.agent import CERT_FILE, KEY_FILE, AgentError, DeviceAgent, DeviceMeasurements
from fieldward.trust.errors import TrustError
from fieldward.trust.fleet_broker import (
    ACCEPTED,
    BrokerTarget,
    broker_available,
    local_broker,
    mqtt_publish,
    sync_from_service,
)
from fieldward.trust.service import TrustService, TrustServiceSettings, serve_tls

__all__ = [
    "BEHAVIOURS",
    "SIM_FIRMWARE",
    "SIM_GROUP",
    "SIM_MODEL",
    "DeviceOutcome",
    "FleetReport",
    "Provisioner",
    "ServiceProvisioner",
    "fleet_main",
    "fleet_policy_document",
    "fleet_reference_document",
    "plan_fleet",
    "simulate",
    "simulated_measurements",
]

log = logging.getLogger(__name__)

Behaviour = Literal["healthy", "tampered", "expired", "overreach"]
BEHAVIOURS: tuple[Behaviour, ...] = ("healthy", "tampered", "expired", "overreach")
SIM_MODEL = "FW-SIM-RTU"
SIM_FIRMWARE = "2.4.1"
SIM_GROUP = "plant-sim"
SIM_TYPE = "rtu"
_BOOT_COMPONENTS = (b"sim-bootloader 1.8", b"sim-kernel 5.15.120", b"sim-rootfs 2.4.1")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def simulated_image(version: str = SIM_FIRMWARE, *, tampered: bool = False) -> bytes:
    """The bytes of a simulated firmware image (a tampered one carries an implant)."""
    image = f"FieldWard simulated RTU firmware {version}\n".encode() * 64
    return image + (b"\x90implant" if tampered else b"")


def simulated_measurements(*, tampered: bool = False) -> DeviceMeasurements:
    """What a simulated device measures (deterministic, so reference values can list it)."""
    return DeviceMeasurements(
        model=SIM_MODEL,
        firmware_version=SIM_FIRMWARE,
        firmware_digest=_sha(simulated_image(tampered=tampered)),
        boot_log=tuple(_sha(component) for component in _BOOT_COMPONENTS),
        secure_boot=True,
        os_version="5.15.120",
        app_versions={"fieldward-agent": "0.4"},
        config_digest=_sha(b"sim-config v1"),
    )


def fleet_reference_document() -> dict[str, Any]:
    """Attestation reference values for the simulated model (``load_reference_values`` reads it)."""
    genuine = simulated_measurements()
    return {
        "models": [
            {
                "model": SIM_MODEL,
                "min_firmware": "2.4.0",
                "secure_boot_required": True,
                "min_os_version": "5.15",
                "releases": [
                    {
                        "version": SIM_FIRMWARE,
                        "firmware_digests": [genuine.firmware_digest],
                        "config_digests": [genuine.config_digest],
                    }
                ],
            }
        ]
    }


def fleet_policy_document() -> dict[str, Any]:
    """An access policy for the simulated fleet: healthy RTUs publish their own telemetry only."""
    return {
        "version": 1,
        "rules": [
            {
                "name": "quarantine-lockdown",
                "effect": "deny",
                "who": "any",
                "what": "any",
                "conditions": {"not_quarantined": True, "verdict": ["healthy", "outdated", "unknown"]},
            },
            {
                "name": "rtu-telemetry",
                "effect": "allow",
                "who": {"types": [SIM_TYPE], "groups": ["plant-*"]},
                "what": {
                    "publish": ["devices/{device_id}/telemetry/#"],
                    "subscribe": ["devices/{device_id}/commands/+"],
                },
                "conditions": {
                    "attested_within_hours": 24,
                    "verdict": ["healthy"],
                    "not_quarantined": True,
                },
            },
        ],
    }


class Provisioner(Protocol):
    """The operator side of a simulation: enrollment tokens and (for ``expired``) old certificates."""

    def token(self, device_id: str) -> str: ...

    def expired_certificate(
        self, device_id: str, csr: x509.CertificateSigningRequest
    ) -> x509.Certificate: ...


class ServiceProvisioner:
    """Provisions simulated devices in a local :class:`TrustService`: the group (created when
    missing), the device's model, a one-time token bound to the device id."""

    def __init__(self, service: TrustService, group: str = SIM_GROUP, model: str = SIM_MODEL) -> None:
        self.service = service
        self.group = group
        self.model = model
        if service.registry.group(group) is None:
            service.registry.create_group(group, device_type=SIM_TYPE, update_channel="stable")

    def _register(self, device_id: str) -> None:
        self.service.registry.register_device(
            device_id, group=self.group, model=self.model, device_type=SIM_TYPE
        )

    def token(self, device_id: str) -> str:
        self._register(device_id)
        return self.service.registry.create_token(self.group, device_id=device_id)

    def expired_certificate(self, device_id: str, csr: x509.CertificateSigningRequest) -> x509.Certificate:
        """A genuine FieldWard certificate that expired a day ago (issued two days ago for one hour)."""
        self._register(device_id)
        return self.service.ca.issue(
            csr,
            "device",
            identity=device_id,
            group=self.group,
            validity=dt.timedelta(hours=1),
            now=self.service.now() - dt.timedelta(days=2),
        )


@dataclass
class DeviceOutcome:
    """What happened to one simulated device."""

    device_id: str
    behaviour: Behaviour
    outcome: str
    """``healthy``, ``compromised``, ``expired_refused``, ``overreach_denied`` or ``unexpected``."""
    expected: bool
    steps: list[str] = field(default_factory=list)


@dataclass
class FleetReport:
    devices: int
    counts: dict[str, int]
    """Per outcome, plus step counters (``enrolled``, ``verdict_<v>``, ``telemetry_allowed``...)."""
    outcomes: list[DeviceOutcome]
    elapsed: float
    telemetry_via: str = "policy decision API (/trust/policy/decide)"

    @property
    def unexpected(self) -> list[DeviceOutcome]:
        return [o for o in self.outcomes if not o.expected]

    def to_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "counts": dict(sorted(self.counts.items())),
            "unexpected": [
                {"device_id": o.device_id, "behaviour": o.behaviour, "outcome": o.outcome, "steps": o.steps}
                for o in self.unexpected
            ],
            "elapsed_s": round(self.elapsed, 3),
            "telemetry_via": self.telemetry_via,
        }


def plan_fleet(n_devices: int, misbehaving: Mapping[str, int]) -> list[Behaviour]:
    """The behaviour of each device: the misbehaving ones spread evenly through the fleet."""
    counts = {name: int(misbehaving.get(name, 0)) for name in BEHAVIOURS if name != "healthy"}
    if unknown := set(misbehaving) - set(counts):
        raise ValueError(f"unknown misbehaviour(s): {', '.join(sorted(unknown))}")
    if any(v < 0 for v in counts.values()) or sum(counts.values()) > n_devices:
        raise ValueError("misbehaving counts must be >= 0 and add up to at most the fleet size")
    bad: list[Behaviour] = [name for name in BEHAVIOURS if name != "healthy" for _ in range(counts[name])]
    plan: list[Behaviour] = ["healthy"] * n_devices
    if bad:
        stride = n_devices / len(bad)
        for index, behaviour in enumerate(bad):
            plan[int(index * stride)] = behaviour
    return plan


def _run_device(
    index: int,
    behaviour: Behaviour,
    base_url: str,
    state_root: Path,
    server_ca: Path | None,
    provisioner: Provisioner,
    prefix: str,
) -> tuple[DeviceOutcome, Counter[str]]:
    device_id = f"{prefix}-{index:05d}"
    counters: Counter[str] = Counter()
    agent = DeviceAgent(base_url, state_root / device_id, server_ca=server_ca)
    outcome = DeviceOutcome(device_id, behaviour, "unexpected", False)
    steps = outcome.steps
    try:
        if behaviour == "expired":
            key = ec.generate_private_key(ec.SECP256R1())
            csr = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
                .sign(key, hashes.SHA256())
            )
            agent.store_identity(key, provisioner.expired_certificate(device_id, csr))
            refused = 0
            for name, call in (
                ("attest", lambda: agent.attest(simulated_measurements())),
                ("renew", agent.renew),
            ):
                try:
                    call()
                    steps.append(f"{name}: accepted")
                except AgentError as exc:
                    refused += 1
                    steps.append(f"{name}: refused ({exc.status or 'TLS'})")
            if refused == 2:
                outcome.outcome, outcome.expected = "expired_refused", True
            return outcome, counters
        agent.enroll(device_id, provisioner.token(device_id))
        counters["enrolled"] += 1
        steps.append("enrolled")
        verdict = agent.attest(simulated_measurements(tampered=behaviour == "tampered"))
        counters[f"verdict_{verdict['verdict']}"] += 1
        steps.append(f"verdict {verdict['verdict']}")
        own = agent.decide("publish", f"devices/{device_id}/telemetry/temperature")
        counters["telemetry_allowed" if own["allowed"] else "telemetry_denied"] += 1
        steps.append(f"own telemetry {'allowed' if own['allowed'] else 'denied'}")
        if behaviour == "tampered":
            if verdict["verdict"] == "compromised" and not own["allowed"]:
                outcome.outcome, outcome.expected = "compromised", True
        elif behaviour == "overreach":
            other = f"{prefix}-{(index + 1) % 100000:05d}"
            foreign = agent.decide("publish", f"devices/{other}/telemetry/temperature")
            counters["overreach_allowed" if foreign["allowed"] else "overreach_denied_decisions"] += 1
            steps.append(f"foreign telemetry {'allowed' if foreign['allowed'] else 'denied'}")
            if verdict["verdict"] == "healthy" and own["allowed"] and not foreign["allowed"]:
                outcome.outcome, outcome.expected = "overreach_denied", True
        elif verdict["verdict"] == "healthy" and own["allowed"]:
            outcome.outcome, outcome.expected = "healthy", True
    except (TrustError, KeyError, ValueError, OSError) as exc:
        steps.append(f"error: {type(exc).__name__}: {exc}")
    return outcome, counters


def simulate(
    base_url: str,
    n_devices: int,
    *,
    provisioner: Provisioner,
    misbehaving: Mapping[str, int] | None = None,
    server_ca: Path | None = None,
    state_dir: Path | None = None,
    workers: int = 8,
    prefix: str | None = None,
    broker: BrokerTarget | None = None,
) -> FleetReport:
    """Run ``n_devices`` simulated devices against the service at ``base_url``.

    misbehaving: ``{"tampered": k, "expired": k, "overreach": k}`` (default: 10 % of the fleet each)
    state_dir: where the devices keep their keys (default: a temporary folder, removed afterwards)
    broker: when given, after attestation the broker is synced and every device publishes over MQTT
        with its certificate; a device behaves as expected only if the broker agrees too
    """
    if n_devices < 1:
        raise ValueError("n_devices must be at least 1")
    mix = (
        misbehaving
        if misbehaving is not None
        else dict.fromkeys(("tampered", "expired", "overreach"), n_devices // 10)
    )
    plan = plan_fleet(n_devices, mix)
    name = prefix or f"sim{secrets.token_hex(3)}"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fieldward-fleet-") as tmp:
        root = state_dir if state_dir is not None else Path(tmp)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(
                pool.map(
                    lambda item: _run_device(item[0], item[1], base_url, root, server_ca, provisioner, name),
                    enumerate(plan),
                )
            )
            if broker is not None:
                broker.sync([o.device_id for o, _ in results if o.behaviour != "expired"])
                with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                    list(pool.map(lambda item: _publish(item[0], item[1], root, broker, name), results))
    counts: Counter[str] = Counter()
    outcomes = []
    for outcome, counters in results:
        counts[outcome.outcome] += 1
        counts.update(counters)
        outcomes.append(outcome)
    via = broker.describe() if broker is not None else FleetReport.telemetry_via
    return FleetReport(n_devices, dict(counts), outcomes, time.perf_counter() - start, via)


def _publish(
    outcome: DeviceOutcome, counters: Counter[str], root: Path, broker: BrokerTarget, prefix: str
) -> None:
    """The MQTT phase of one device: publish its telemetry (and, overreaching, another device's) at
    the broker with its own certificate; the broker's answers must match the behaviour."""
    device_id = outcome.device_id
    own = f"devices/{device_id}/telemetry/temperature"
    topics = [own]
    if outcome.behaviour == "overreach":
        index = int(device_id.rsplit("-", 1)[1])
        topics.append(f"devices/{prefix}-{(index + 1) % 100000:05d}/telemetry/temperature")
    agent_dir = root / device_id
    answers = mqtt_publish(broker, device_id, agent_dir / CERT_FILE, agent_dir / KEY_FILE, topics)
    accepted = [answer in ACCEPTED for answer in answers]
    outcome.steps.append("mqtt " + "; ".join(f"{t}: {a}" for t, a in zip(topics, answers, strict=True)))
    counters["mqtt_own_accepted" if accepted[0] else "mqtt_own_refused"] += 1
    if outcome.behaviour == "overreach":
        counters["mqtt_overreach_accepted" if accepted[1] else "mqtt_overreach_refused"] += 1
        agrees = accepted[0] and not accepted[1] and not answers[1].startswith("refused")
    elif outcome.behaviour == "healthy":
        agrees = accepted[0]
    elif outcome.behaviour == "expired":
        agrees = answers[0].startswith("refused")
    else:  # tampered
        agrees = not accepted[0]
    if not agrees:
        outcome.expected = False
        outcome.outcome = "unexpected"


# -- CLI ------------------------------------------------------------------------------------------


def local_service(directory: Path) -> TrustService:
    """A throw-away trust service in ``directory``: SQLite, a random CA passphrase (file 0600), the
    fleet's reference values and policy."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = directory / "passphrase"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(24))
    references = directory / "reference-values.yaml"
    references.write_text(yaml.safe_dump(fleet_reference_document()), encoding="utf-8")
    policy = directory / "policy.yaml"
    policy.write_text(yaml.safe_dump(fleet_policy_document(), sort_keys=False), encoding="utf-8")
    database = Database(f"sqlite:///{directory / 'trust.db'}")
    database.upgrade()
    settings = TrustServiceSettings(
        data_dir=directory,
        passphrase_file=secret,
        policy_file=policy,
        reference_values_file=references,
    )
    return TrustService(settings, database)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fieldward fleet simulate", description="Simulate a device fleet")
    parser.add_argument("--devices", type=int, default=20, help="Fleet size")
    parser.add_argument("--tampered", type=int, default=None, help="Devices with tampered firmware")
    parser.add_argument("--expired", type=int, default=None, help="Devices with an expired certificate")
    parser.add_argument("--overreach", type=int, default=None, help="Devices publishing to others' topics")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--server",
        help="URL of a running FieldWard (its data folder must be local: --data-dir); "
        "default: a throw-away local service",
    )
    parser.add_argument("--data-dir", type=Path, help="Data folder of the running instance (provisioning)")
    parser.add_argument("--passphrase-file", type=Path, help="CA passphrase file of the running instance")
    parser.add_argument("--ca-file", type=Path, help="CA (PEM) of the running instance's TLS certificate")
    parser.add_argument(
        "--no-broker",
        action="store_true",
        help="Only ask the policy decision API (default with the local service: publish through a "
        "throw-away Mosquitto with mutual TLS when mosquitto and its dynamic-security plugin are installed)",
    )
    return parser


def fleet_main(argv: Sequence[str] | None = None) -> int:
    """``fieldward fleet simulate``: prints the report as JSON; exit 0 when every device behaved as
    expected, 1 otherwise, 2 on bad usage."""
    args = _parser().parse_args(argv)
    if args.devices < 1:
        print("error: --devices must be at least 1", file=sys.stderr)
        return 2
    tenth = args.devices // 10
    mix = {
        "tampered": tenth if args.tampered is None else args.tampered,
        "expired": tenth if args.expired is None else args.expired,
        "overreach": tenth if args.overreach is None else args.overreach,
    }
    try:
        plan_fleet(args.devices, mix)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.server is None:
            with tempfile.TemporaryDirectory(prefix="fieldward-fleet-service-") as tmp:
                service = local_service(Path(tmp) / "service")
                try:
                    with serve_tls(service, Path(tmp) / "tls") as server, ExitStack() as stack:
                        target: BrokerTarget | None = None
                        missing = broker_available()
                        if not args.no_broker and missing is None:
                            running = stack.enter_context(local_broker(service, Path(tmp) / "broker"))
                            target = BrokerTarget(
                                running.host,
                                running.tls_port,
                                running.ca_file,
                                sync_from_service(service, running),
                            )
                        elif not args.no_broker:
                            print(
                                f"note: no broker ({missing}); using the policy decision API", file=sys.stderr
                            )
                        report = simulate(
                            server.url,
                            args.devices,
                            provisioner=ServiceProvisioner(service),
                            misbehaving=mix,
                            server_ca=server.ca_file,
                            workers=args.workers,
                            broker=target,
                        )
                finally:
                    service.database.dispose()
        else:
            if args.data_dir is None:
                print(
                    "error: --server needs --data-dir (to provision the simulated devices)", file=sys.stderr
                )
                return 2
            settings = TrustServiceSettings(data_dir=args.data_dir, passphrase_file=args.passphrase_file)
            database = Database(default_url())
            try:
                service = TrustService(settings, database)
                report = simulate(
                    args.server,
                    args.devices,
                    provisioner=ServiceProvisioner(service),
                    misbehaving=mix,
                    server_ca=args.ca_file,
                    workers=args.workers,
                )
            finally:
                database.dispose()
    except TrustError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if not report.unexpected else 1
