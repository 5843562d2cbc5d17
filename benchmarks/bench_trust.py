"""Benchmark of the device plane's decisions: policy decisions and attestations verified per second.

Policy: the shipped example policy plus generated per-group and per-device rules (``--rules``), a
fleet of ``--devices`` device contexts, and a mix of requests (own telemetry publishes, foreign
topics, command subscriptions, over-broad subscriptions, connections). It measures the compiled
:class:`~fieldward.trust.policy.PolicyEngine` (target >= 50,000 decisions/s on one core) and, in the
same run on a sample of the same requests, the :class:`~fieldward.trust.policy.NaiveEvaluator`
(every rule, every time, regular expressions), and checks that both give the same answers.

Attestation: a root CA and ``--attestations`` device certificates (ECDSA P-256) made with
``cryptography``; every device answers a challenge with signed evidence (made before timing); the
verifier checks chain, nonce, signature, boot log replay and reference values. The floor is the two
ECDSA verifications each attestation needs (certificate and evidence), timed alone.

The process pins itself to one CPU when the platform allows it, and rates are computed from the
process's CPU time (``time.process_time``), so other load on a shared machine inflates them less.
The policy figure is the steady state: each device's first request per action (which binds the rules
to its identity and is reported separately) is made before the timed run, as a broker holding
long-lived connections would.

Usage: python benchmarks/bench_trust.py [--devices 10000] [--rules 200] [--decisions 200000]
       [--attestations 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fieldward.trust.attestation import (
    Verdict,
    Verifier,
    boot_aggregate,
    canonical_json,
    load_reference_values,
    sign_evidence,
)
from fieldward.trust.context import DeviceContext
from fieldward.trust.errors import TrustError
from fieldward.trust.policy import NaiveEvaluator, PolicyEngine, load_policy, parse_policy

DATA = resources.files("fieldward.trust").joinpath("data")
NOW = dt.datetime.now(dt.UTC)


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


# ---------------------------------------------------------------------- policy


def fleet(devices: int, rng: random.Random) -> list[DeviceContext]:
    out = []
    for index in range(devices):
        kind = rng.choice(["rtu", "rtu", "rtu", "gateway", "plc"])
        out.append(
            DeviceContext(
                device_id=f"{kind}-{index:05d}",
                group=f"plant-{chr(97 + index % 8)}",
                device_type=kind,
                model="ACME-RTU-500" if kind == "rtu" else "ACME-GW-10",
                firmware=rng.choice(["2.4.1", "2.4.1", "2.5.0", "2.3.0"]),
                attested_at=NOW - dt.timedelta(hours=rng.choice([1, 2, 5, 30])),
                verdict=rng.choice(["healthy"] * 8 + ["outdated", "compromised"]),
                quarantined=rng.random() < 0.02,
                open_alert_severity=rng.choice([None] * 9 + ["high"]),
            )
        )
    return out


def generated_policy(extra_rules: int, devices: Sequence[DeviceContext]) -> dict[str, Any]:
    """The example policy with per-group and per-device rules appended (as a large site would have)."""
    document = yaml.safe_load(DATA.joinpath("policy.example.yaml").read_text())
    rules: list[dict[str, Any]] = document["rules"]
    for index in range(extra_rules):
        if index % 2:
            device = devices[index % len(devices)]
            rules.append(
                {
                    "name": f"device-{index}",
                    "effect": "allow",
                    "who": {"devices": [device.device_id]},
                    "what": {"publish": [f"devices/{{device_id}}/diag/{index}/#"]},
                    "conditions": {"not_quarantined": True, "attested_within_hours": 24},
                }
            )
        else:
            rules.append(
                {
                    "name": f"group-{index}",
                    "effect": "deny" if index % 10 == 0 else "allow",
                    "who": {"groups": [f"plant-{chr(97 + index % 8)}"], "types": ["rtu", "plc"]},
                    "what": {
                        "publish": [f"groups/{{group}}/area{index}/+/set"],
                        "subscribe": [f"groups/{{group}}/area{index}/#"],
                    },
                    "conditions": {"verdict": ["healthy"], "no_open_alert_at_or_above": "high"},
                }
            )
    return document


def requests(
    devices: Sequence[DeviceContext], count: int, rng: random.Random
) -> list[tuple[DeviceContext, str, str]]:
    out = []
    for _ in range(count):
        device = rng.choice(devices)
        other = rng.choice(devices)
        pick = rng.random()
        if pick < 0.4:
            out.append((device, "publish", f"devices/{device.device_id}/telemetry/sensor{rng.randrange(20)}"))
        elif pick < 0.5:
            out.append((device, "publish", f"devices/{other.device_id}/telemetry/x"))
        elif pick < 0.6:
            out.append(
                (device, "publish", f"groups/{device.group}/area{rng.randrange(200)}/v{rng.randrange(9)}/set")
            )
        elif pick < 0.75:
            out.append((device, "subscribe", f"devices/{device.device_id}/commands/+"))
        elif pick < 0.8:
            out.append(
                (device, "subscribe", rng.choice(["#", "devices/#", "$SYS/#", "groups/+/broadcast/#"]))
            )
        elif pick < 0.9:
            out.append((device, "publish", f"devices/{device.device_id}/state"))
        else:
            host = rng.choice(["broker.plant.local:8883", "10.20.3.4:502", "evil.example.com:443"])
            out.append((device, "connect", host))
    return out


def time_decisions(
    decide: Callable[[DeviceContext, str, str, dt.datetime], Any],
    work: Sequence[tuple[DeviceContext, str, str]],
) -> tuple[float, list[bool]]:
    answers: list[bool] = []
    append = answers.append
    start = time.process_time()
    for context, action, resource in work:
        append(decide(context, action, resource, NOW).allowed)
    return time.process_time() - start, answers


def bench_policy(args: argparse.Namespace, rng: random.Random) -> float:
    devices = fleet(args.devices, rng)
    policy = parse_policy(generated_policy(args.rules, devices), "generated")
    load_policy(Path(str(DATA.joinpath("policy.example.yaml"))))  # the shipped file validates
    work = requests(devices, args.decisions, rng)
    start = time.perf_counter()
    engine = PolicyEngine(policy)
    compile_seconds = time.perf_counter() - start
    # first request of each device and action: the engine binds the rules to the identity (cache)
    first = [(device, action, "x") for device in devices for action in ("publish", "subscribe", "connect")]
    first = [(d, a, "x:1" if a == "connect" else r) for d, a, r in first]
    cold_seconds, _ = time_decisions(engine.decide, first)
    seconds, answers = time_decisions(engine.decide, work)
    sample = work[: max(1000, args.decisions // 20)]
    naive = NaiveEvaluator(policy)
    naive_seconds, naive_answers = time_decisions(naive.decide, sample)
    if naive_answers != answers[: len(sample)]:
        raise SystemExit("compiled and naive evaluators disagree")
    allowed = sum(answers)
    compiled_rate, naive_rate = rate(len(work), seconds), rate(len(sample), naive_seconds)
    print(
        f"policy: {len(policy.rules)} rules, {len(devices):,} devices, {len(work):,} requests "
        f"({allowed / len(work):.0%} allowed)"
    )
    print(f"  compile                 {compile_seconds * 1000:8.1f} ms")
    print(f"  first request/identity  {rate(len(first), cold_seconds):12,.0f} decisions/s (binds the rules)")
    print(
        f"  compiled engine         {compiled_rate:12,.0f} decisions/s  "
        f"({seconds / len(work) * 1e6:.2f} us each)"
    )
    print(
        f"  naive evaluator         {naive_rate:12,.0f} decisions/s  "
        f"(same answers on {len(sample):,} requests)"
    )
    print(f"  speed-up                {compiled_rate / naive_rate:12.1f} x")
    verdict = "meets" if compiled_rate >= 50_000 else "MISSES"
    print(f"  target >= 50,000/s      {verdict}")
    return compiled_rate


# ---------------------------------------------------------------------- attestation


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def bench_attestation(args: argparse.Namespace) -> float:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(name("bench root"))
        .issuer_name(name("bench root"))
        .public_key(root_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )

    def verify_chain(chain: Sequence[x509.Certificate]) -> str:
        leaf = chain[0]
        try:
            leaf.verify_directly_issued_by(root)
        except Exception as exc:
            raise TrustError("chain refused") from exc
        if not leaf.not_valid_before_utc <= NOW + dt.timedelta(minutes=5) <= leaf.not_valid_after_utc:
            raise TrustError("certificate expired")
        return str(leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    verifier = Verifier(
        load_reference_values(str(DATA.joinpath("reference_values.example.yaml"))),
        verify_chain,
        model_of=lambda _: "ACME-RTU-500",
        max_clock_skew=dt.timedelta(hours=1),
    )
    sha = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    boot = [sha("bootloader 1.8"), sha("kernel 5.15.120-acme"), sha("rootfs 2.4.1")]
    start = time.perf_counter()
    evidence = []
    for index in range(args.attestations):
        device_id = f"rtu-{index:05d}"
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(device_id))
            .issuer_name(root.subject)
            .public_key(key.public_key())
            .serial_number(index + 2)
            .not_valid_before(NOW - dt.timedelta(hours=1))
            .not_valid_after(NOW + dt.timedelta(hours=24))
            .sign(root_key, hashes.SHA256())
        )
        claims = {
            "device_id": device_id,
            "nonce": verifier.challenge(device_id),
            "firmware_version": "2.4.1",
            "firmware_digest": sha("ACME-RTU-500 firmware 2.4.1 image"),
            "boot_log": boot,
            "boot_aggregate": boot_aggregate(boot),
            "secure_boot": True,
            "os_version": "5.15.120",
            "app_versions": {"fieldward-agent": "0.4.0"},
            "config_digest": sha("ACME-RTU-500 config plant-a"),
            "timestamp": NOW.isoformat(),
        }
        evidence.append(sign_evidence(claims, key, [cert]))
    setup = time.perf_counter() - start

    start = time.process_time()
    verdicts = [verifier.verify(item).verdict for item in evidence]
    seconds = time.process_time() - start
    if set(verdicts) != {Verdict.HEALTHY}:
        raise SystemExit(f"unexpected verdicts: {set(verdicts)}")

    # the floor: the two ECDSA verifications every attestation needs, nothing else
    leaf = x509.load_pem_x509_certificate(evidence[0]["cert_chain"][0].encode())
    payload = canonical_json(evidence[0]["claims"])
    signature = base64.b64decode(evidence[0]["signature"])
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    start = time.process_time()
    for _ in range(len(evidence)):
        leaf.verify_directly_issued_by(root)
        public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    floor = time.process_time() - start
    verified = rate(len(evidence), seconds)
    print(f"attestation: {len(evidence):,} devices (keys, certificates and evidence made in {setup:.1f} s)")
    print(
        f"  verifier                {verified:12,.0f} attestations/s  "
        f"({seconds / len(evidence) * 1e6:.0f} us each)"
    )
    print(
        f"  floor (2 ECDSA verify)  {rate(len(evidence), floor):12,.0f} /s  "
        f"-> verifier at {floor / seconds:.0%} of it"
    )
    return verified


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=200, help="generated rules added to the example policy")
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--attestations", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(f"FieldWard trust benchmark, Python {sys.version.split()[0]}, {pin_one_core()}")
    rng = random.Random(args.seed)
    bench_policy(args, rng)
    bench_attestation(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
