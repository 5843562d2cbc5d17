"""Device-plane benchmark: N devices (10,000 by default) enroll and attest in one run, on one core.

    taskset -c 0 .venv/bin/python benchmarks/bench_trust_fleet.py [--devices N] [--decisions M]

The trust service runs in-process (``TrustService`` on a SQLite file, its routers mounted on a
FastAPI app) and is called through ``httpx.ASGITransport``: every request goes through the real
routes (EST ``simpleenroll``, ``/trust/attest/challenge`` and ``/trust/attest/evidence``) with their
parsing, registry writes and verification, but without TLS and sockets, so the network does not
dominate. The device certificate reaches the routes as an RFC 9440 ``Client-Cert`` header from a
trusted proxy address (what a TLS-terminating proxy sends). Device-side work (key generation, CSR
and evidence signing) and operator work (tokens) are done outside the timed sections.

Reported, each with its floor measured in the same run on the same core:

* certificates issued per second (EST over in-process HTTP) vs. raw ECDSA P-256 signatures/s;
* attestations verified per second (challenge + evidence) vs. raw ECDSA P-256 verifications/s;
* policy decisions per second (compiled ``PolicyEngine`` on device contexts) vs. the naive
  evaluator (``NaiveEvaluator``, regular expressions per decision), plus decisions through
  ``TrustService.decide`` (context from the registry) and through HTTP.

This is a benchmark, never a test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from fastapi import FastAPI

from fieldward.trust.attestation import sign_evidence
from fieldward.trust.est import ESTSettings
from fieldward.trust.fleet import ServiceProvisioner, local_service, simulated_measurements
from fieldward.trust.policy import NaiveEvaluator
from fieldward.trust.service import TrustService

DER = serialization.Encoding.DER


def _pin(core: int | None) -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cores = sorted(os.sched_getaffinity(0))
    chosen = cores[-1] if core is None else core
    os.sched_setaffinity(0, {chosen})
    return f"pinned to core {chosen}"


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def floor_ecdsa(n: int) -> tuple[float, float]:
    """Raw cryptography ECDSA P-256/SHA-256: signatures/s and verifications/s."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    messages = [os.urandom(300) for _ in range(n)]
    start = time.perf_counter()
    signatures = [key.sign(m, ec.ECDSA(hashes.SHA256())) for m in messages]
    signing = time.perf_counter() - start
    start = time.perf_counter()
    for message, signature in zip(messages, signatures, strict=True):
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    verifying = time.perf_counter() - start
    return _rate(n, signing), _rate(n, verifying)


def _client_cert(cert: x509.Certificate) -> dict[str, str]:
    return {"client-cert": ":" + base64.b64encode(cert.public_bytes(DER)).decode() + ":"}


async def run_http(service: TrustService, devices: int, http_decisions: int) -> dict[str, Any]:
    app = FastAPI()
    for router in service.routers():
        app.include_router(router)
    provisioner = ServiceProvisioner(service)
    print(f"preparing {devices} devices (keys, CSRs, tokens; not timed) ...", flush=True)
    start = time.perf_counter()
    ids = [f"bench-{i:05d}" for i in range(devices)]
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in ids]
    bodies = [
        base64.encodebytes(
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .sign(key, hashes.SHA256())
            .public_bytes(DER)
        )
        for device_id, key in zip(ids, keys, strict=True)
    ]
    tokens = [provisioner.token(device_id) for device_id in ids]
    prepared = time.perf_counter() - start
    genuine = simulated_measurements()
    # ASGITransport reports the client as 127.0.0.1, the trusted proxy of the settings
    transport = httpx.ASGITransport(app=app)
    certificates: list[x509.Certificate] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldward") as http:
        print("enrolling ...", flush=True)
        enroll_time = 0.0
        for device_id, body, token in zip(ids, bodies, tokens, strict=True):
            headers = {"Content-Type": "application/pkcs10", "Authorization": f"Bearer {token}"}
            t0 = time.perf_counter()
            response = await http.post("/.well-known/est/simpleenroll", content=body, headers=headers)
            enroll_time += time.perf_counter() - t0
            if response.status_code != 200:
                raise SystemExit(f"enrollment of {device_id} failed: {response.status_code} {response.text}")
            certificates.append(pkcs7.load_der_pkcs7_certificates(base64.b64decode(response.content))[0])
        print("attesting ...", flush=True)
        attest_time = 0.0
        verdicts: dict[str, int] = {}
        for device_id, key, cert in zip(ids, keys, certificates, strict=True):
            auth = _client_cert(cert)
            t0 = time.perf_counter()
            nonce = (await http.post("/trust/attest/challenge", headers=auth)).json()["nonce"]
            attest_time += time.perf_counter() - t0
            envelope = sign_evidence(genuine.claims(device_id, nonce, service.now()), key, [cert])
            payload = json.dumps(envelope).encode()
            t0 = time.perf_counter()
            response = await http.post(
                "/trust/attest/evidence",
                content=payload,
                headers={**auth, "Content-Type": "application/json"},
            )
            attest_time += time.perf_counter() - t0
            verdict = response.json().get("verdict", f"http-{response.status_code}")
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
        print("policy decisions over HTTP ...", flush=True)
        decide_time = 0.0
        for i in range(http_decisions):
            device_id, cert = ids[i % devices], certificates[i % devices]
            body = {"action": "publish", "resource": f"devices/{device_id}/telemetry/t"}
            t0 = time.perf_counter()
            response = await http.post("/trust/policy/decide", json=body, headers=_client_cert(cert))
            decide_time += time.perf_counter() - t0
            if response.status_code != 200:
                raise SystemExit(f"decision failed: {response.status_code} {response.text}")
    print("attesting again by direct calls (no HTTP; a sample) ...", flush=True)
    sample = min(devices, 2000)
    direct_time = verify_time = 0.0
    for device_id, key, cert in zip(ids[:sample], keys, certificates, strict=False):
        t0 = time.perf_counter()
        nonce = service.verifier.challenge(device_id)
        direct_time += time.perf_counter() - t0
        envelope = sign_evidence(genuine.claims(device_id, nonce, service.now()), key, [cert])
        t0 = time.perf_counter()
        service.attest(device_id, envelope)
        direct_time += time.perf_counter() - t0
        t0 = time.perf_counter()
        service.ca.verify([cert])
        verify_time += time.perf_counter() - t0
    return {
        "ids": ids,
        "direct_attest_per_s": _rate(sample, direct_time),
        "ca_verify_per_s": _rate(sample, verify_time),
        "prepare_s": prepared,
        "enroll_s": enroll_time,
        "attest_s": attest_time,
        "verdicts": verdicts,
        "http_decide_s": decide_time,
    }


def run_policy(service: TrustService, ids: list[str], decisions: int) -> dict[str, float]:
    contexts = [service.context(device_id) for device_id in ids]
    now = service.now()
    requests = []
    for i in range(decisions):
        context = contexts[i % len(contexts)]
        kind = i % 3
        if kind == 0:
            requests.append((context, "publish", f"devices/{context.device_id}/telemetry/temperature"))
        elif kind == 1:
            requests.append((context, "publish", "devices/someone-else/telemetry/temperature"))
        else:
            requests.append((context, "subscribe", f"devices/{context.device_id}/commands/+"))
    engine = service.engine
    for context, action, resource in requests[: len(contexts)]:  # warm the per-device caches
        engine.decide(context, action, resource, now)
    start = time.perf_counter()
    allowed = sum(engine.decide(c, a, r, now).allowed for c, a, r in requests)
    compiled = time.perf_counter() - start
    naive = NaiveEvaluator(service.policy)
    sample = requests[: max(1, decisions // 10)]
    start = time.perf_counter()
    naive_allowed = sum(naive.decide(c, a, r, now).allowed for c, a, r in sample)
    naive_time = time.perf_counter() - start
    expected = sum(engine.decide(c, a, r, now).allowed for c, a, r in sample)
    if naive_allowed != expected:
        raise SystemExit("the compiled and the naive policy evaluators disagree")
    lookups = min(len(ids), 5000)
    start = time.perf_counter()
    for device_id in ids[:lookups]:
        service.decide(device_id, "publish", f"devices/{device_id}/telemetry/t")
    with_context = time.perf_counter() - start
    # a changed context (a new verdict) misses nothing: the cache is keyed by identity, not health
    fresh = [replace(c, verdict="compromised") for c in contexts[:1000]]
    denied = sum(
        not engine.decide(c, "publish", f"devices/{c.device_id}/telemetry/t", now).allowed for c in fresh
    )
    return {
        "decisions": decisions,
        "allowed": allowed,
        "compiled_per_s": _rate(decisions, compiled),
        "naive_per_s": _rate(len(sample), naive_time),
        "service_decide_per_s": _rate(lookups, with_context),
        "compromised_denied": denied,
        "compromised_checked": len(fresh),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=300_000)
    parser.add_argument("--http-decisions", type=int, default=2_000)
    parser.add_argument("--floor", type=int, default=5_000, help="ECDSA operations for the floor")
    parser.add_argument("--core", type=int, default=None, help="CPU core (default: the last allowed)")
    parser.add_argument("--json", type=Path, help="Also write the results here")
    args = parser.parse_args(argv)
    pinned = _pin(args.core)
    print(f"{pinned}; python {sys.version.split()[0]}", flush=True)
    sign_floor, verify_floor = floor_ecdsa(args.floor)
    with tempfile.TemporaryDirectory(prefix="fieldward-bench-trust-") as tmp:
        service = local_service(Path(tmp) / "service")
        try:
            # the same instance, reopened with 127.0.0.1 as a trusted proxy (ASGITransport's client)
            settings = replace(service.settings, est=ESTSettings(trusted_proxies=frozenset({"127.0.0.1"})))
            service = TrustService(settings, service.database)
            http = asyncio.run(run_http(service, args.devices, args.http_decisions))
            policy = run_policy(service, http["ids"], args.decisions)
        finally:
            service.database.dispose()
    # the floor again after the run: the machine is shared, so keep the faster (stricter) of the two
    sign_after, verify_after = floor_ecdsa(args.floor)
    floors = {"sign_before": sign_floor, "sign_after": sign_after, "verify_before": verify_floor}
    floors["verify_after"] = verify_after
    sign_floor, verify_floor = max(sign_floor, sign_after), max(verify_floor, verify_after)
    devices = args.devices
    results = {
        "devices": devices,
        "transport": "in-process HTTP (httpx.ASGITransport), no TLS/sockets",
        "pinning": pinned,
        "certificates_per_s": _rate(devices, http["enroll_s"]),
        "attestations_per_s": _rate(devices, http["attest_s"]),
        "verdicts": http["verdicts"],
        "attestations_direct_per_s": http["direct_attest_per_s"],
        "ca_verify_per_s": http["ca_verify_per_s"],
        "policy_decisions_per_s": policy["compiled_per_s"],
        "policy_naive_per_s": policy["naive_per_s"],
        "policy_service_decide_per_s": policy["service_decide_per_s"],
        "policy_http_per_s": _rate(args.http_decisions, http["http_decide_s"]),
        "ecdsa_sign_per_s": sign_floor,
        "ecdsa_verify_per_s": verify_floor,
        "ecdsa_floors": floors,
        "enroll_s": http["enroll_s"],
        "attest_s": http["attest_s"],
        "prepare_s": http["prepare_s"],
    }
    print()
    print(f"{devices} devices, {results['transport']}, {pinned}")
    print(f"  verdicts: {http['verdicts']}")
    print("  ECDSA floors before/after: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in floors.items()))
    print(
        f"  certificates issued   {results['certificates_per_s']:>10,.0f} /s  "
        f"(floor: ECDSA sign {sign_floor:,.0f}/s, ratio {results['certificates_per_s'] / sign_floor:.3f})"
    )
    print(
        f"  attestations verified {results['attestations_per_s']:>10,.0f} /s  "
        f"(floor: ECDSA verify {verify_floor:,.0f}/s, "
        f"ratio {results['attestations_per_s'] / verify_floor:.3f})"
    )
    print(
        f"    by direct calls       {results['attestations_direct_per_s']:>10,.0f} /s "
        f"(TrustService.attest; ca.verify alone {results['ca_verify_per_s']:,.0f}/s)"
    )
    print(
        f"  policy decisions      {results['policy_decisions_per_s']:>10,.0f} /s  "
        f"(naive evaluator {results['policy_naive_per_s']:,.0f}/s, "
        f"ratio {results['policy_decisions_per_s'] / results['policy_naive_per_s']:.1f}x; target >= 50,000/s)"
    )
    print(
        f"    with registry context {results['policy_service_decide_per_s']:>10,.0f} /s (TrustService.decide)"
    )
    print(f"    over HTTP             {results['policy_http_per_s']:>10,.0f} /s (/trust/policy/decide)")
    print(f"  compromised contexts denied: {policy['compromised_denied']} of {policy['compromised_checked']}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
