"""Attestation: real keys and certificates, real signatures, real TPMS_ATTEST bytes; every refusal."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldward.trust.attestation import (
    EvidenceError,
    InMemoryNonceStore,
    NonceStatus,
    Verdict,
    Verifier,
    boot_aggregate,
    canonical_json,
    load_reference_values,
    parse_tpms_attest,
    pcr_replay,
    sign_evidence,
    with_verdict,
)
from fieldward.trust.context import DeviceContext
from fieldward.trust.errors import TrustError

T0 = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
REFERENCE = resources.files("fieldward.trust").joinpath("data/reference_values.example.yaml")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


RTU_IMAGE = sha("ACME-RTU-500 firmware 2.4.1 image")
RTU_OLD_IMAGE = sha("ACME-RTU-500 firmware 2.3.0 image")
RTU_CONFIG = sha("ACME-RTU-500 config plant-a")
GW_IMAGE = sha("ACME-GW-10 firmware 1.2.0 image")
BOOT = [sha("bootloader 1.8"), sha("kernel 5.15.120-acme"), sha("rootfs 2.4.1")]


# ---------------------------------------------------------------------- a small PKI


AnyKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def make_cert(
    subject_cn: str,
    key: AnyKey,
    issuer_cn: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool = False,
    days: int = 1,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - dt.timedelta(hours=1))
        .not_valid_after(T0 + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


@dataclass
class Pki:
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    keys: dict[str, AnyKey]
    certs: dict[str, x509.Certificate]
    rogue_cert: x509.Certificate
    rogue_key: ec.EllipticCurvePrivateKey

    def verify_chain(self, chain: Sequence[x509.Certificate]) -> str:
        """Stand-in for the CA's verify: leaf directly issued by our root, valid at T0."""
        leaf = chain[0]
        if leaf.issuer != self.root.subject:
            raise TrustError("certificate issued by an unknown CA")
        try:
            leaf.verify_directly_issued_by(self.root)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise TrustError("certificate not signed by the trust anchor") from exc
        if not leaf.not_valid_before_utc <= T0 <= leaf.not_valid_after_utc:
            raise TrustError("certificate expired")
        return str(leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.fixture(scope="module")
def pki() -> Pki:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_cert("FieldWard Test Root", root_key, "FieldWard Test Root", root_key, ca=True, days=30)
    keys: dict[str, AnyKey] = {
        "rtu-7": ec.generate_private_key(ec.SECP256R1()),
        "rtu-8": ec.generate_private_key(ec.SECP256R1()),
        "gw-1": ed25519.Ed25519PrivateKey.generate(),
        "ak-rtu-7": ec.generate_private_key(ec.SECP256R1()),
        "ak-rsa-rtu-7": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }
    cn = {"ak-rtu-7": "rtu-7", "ak-rsa-rtu-7": "rtu-7"}
    certs = {
        name: make_cert(cn.get(name, name), key, "FieldWard Test Root", root_key)
        for name, key in keys.items()
    }
    rogue_root_key = ec.generate_private_key(ec.SECP256R1())
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    # same names as ours: only the signature tells them apart
    rogue_cert = make_cert("rtu-7", rogue_key, "FieldWard Test Root", rogue_root_key)
    return Pki(root, root_key, keys, certs, rogue_cert, rogue_key)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(pki: Pki, clock: Clock) -> Verifier:
    models = {"rtu-7": "ACME-RTU-500", "rtu-8": "ACME-RTU-500", "gw-1": "ACME-GW-10"}
    return Verifier(
        load_reference_values(str(REFERENCE)),
        pki.verify_chain,
        model_of=models.get,
        clock=clock,
    )


def rtu_claims(nonce: str, **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "device_id": "rtu-7",
        "nonce": nonce,
        "model": "ACME-RTU-500",
        "firmware_version": "2.4.1",
        "firmware_digest": RTU_IMAGE,
        "boot_log": list(BOOT),
        "boot_aggregate": boot_aggregate(BOOT),
        "secure_boot": True,
        "os_version": "5.15.120",
        "app_versions": {"fieldward-agent": "0.4.0"},
        "config_digest": RTU_CONFIG,
        "timestamp": T0.isoformat(),
    }
    claims.update(changes)
    return claims


def signed(pki: Pki, claims: dict[str, Any], name: str = "rtu-7", **kwargs: Any) -> dict[str, Any]:
    key = pki.keys[name]
    assert not isinstance(key, rsa.RSAPrivateKey)
    return sign_evidence(claims, key, [pki.certs[name]], **kwargs)


# ---------------------------------------------------------------------- canonical form and boot chain


def test_canonical_json_is_sorted_compact_utf8() -> None:
    a = canonical_json({"b": [1, True, None], "a": {"y": "é", "x": "1"}})
    b = canonical_json({"a": {"x": "1", "y": "é"}, "b": [1, True, None]})
    assert a == b == '{"a":{"x":"1","y":"é"},"b":[1,true,null]}'.encode()


def test_canonical_json_refuses_floats() -> None:
    with pytest.raises(EvidenceError, match="floating-point"):
        canonical_json({"x": 1.5})


def test_boot_aggregate_is_the_pcr_extend_chain() -> None:
    expected = bytes(32)
    for digest in BOOT:
        expected = hashlib.sha256(expected + bytes.fromhex(digest)).digest()
    assert boot_aggregate(BOOT) == expected.hex()
    # the shipped golden value in the example reference file is this chain
    assert expected.hex() in REFERENCE.read_text()
    assert boot_aggregate([]) == "00" * 32


def test_pcr_replay_keeps_banks_apart() -> None:
    log = [{"digest": BOOT[0], "pcr": 0}, {"digest": BOOT[1], "pcr": 4}, {"digest": BOOT[2], "pcr": 0}]
    replay = pcr_replay(log)
    pcr0 = hashlib.sha256(
        hashlib.sha256(bytes(32) + bytes.fromhex(BOOT[0])).digest() + bytes.fromhex(BOOT[2])
    )
    assert replay[0] == pcr0.digest()
    assert replay[4] == hashlib.sha256(bytes(32) + bytes.fromhex(BOOT[1])).digest()
    assert set(replay) == {0, 4}


# ---------------------------------------------------------------------- nonces


def test_nonce_store_is_single_use_and_bound_to_its_device() -> None:
    store = InMemoryNonceStore()
    store.issue("rtu-7", "n1", T0 + dt.timedelta(minutes=5))
    assert store.consume("rtu-8", "n1", T0) is NonceStatus.WRONG_DEVICE
    assert store.consume("rtu-7", "n1", T0) is NonceStatus.OK
    assert store.consume("rtu-7", "n1", T0) is NonceStatus.REPLAYED
    assert store.consume("rtu-7", "n2", T0) is NonceStatus.UNKNOWN
    store.issue("rtu-7", "n3", T0 + dt.timedelta(minutes=5))
    assert store.consume("rtu-7", "n3", T0 + dt.timedelta(minutes=6)) is NonceStatus.EXPIRED


def test_challenges_are_fresh_random_hex(verifier: Verifier) -> None:
    nonces = {verifier.challenge("rtu-7") for _ in range(50)}
    assert len(nonces) == 50
    assert all(len(n) == 64 and int(n, 16) >= 0 for n in nonces)


# ---------------------------------------------------------------------- verdicts


def test_healthy_device_es256(pki: Pki, verifier: Verifier) -> None:
    result = verifier.verify(signed(pki, rtu_claims(verifier.challenge("rtu-7"))))
    assert result.verdict is Verdict.HEALTHY, result.reasons
    assert result.reasons == ()
    assert result.authentic
    assert result.model == "ACME-RTU-500"
    assert verifier.renewal_gate("rtu-7")[0] is True
    context = with_verdict(DeviceContext("rtu-7"), result)
    assert context.verdict == "healthy"
    assert context.attested_at == T0


def test_healthy_device_ed25519_json_text(pki: Pki, verifier: Verifier) -> None:
    claims = rtu_claims(
        verifier.challenge("gw-1"),
        device_id="gw-1",
        model="ACME-GW-10",
        firmware_version="V1.2.0",
        firmware_digest=GW_IMAGE,
        secure_boot=False,  # not required for this model
        app_versions={},
    )
    envelope = signed(pki, claims, "gw-1")
    assert envelope["alg"] == "EdDSA"
    result = verifier.verify(json.dumps(envelope))
    assert result.verdict is Verdict.HEALTHY, result.reasons


def test_replayed_nonce_is_refused(pki: Pki, verifier: Verifier) -> None:
    envelope = signed(pki, rtu_claims(verifier.challenge("rtu-7")))
    assert verifier.verify(envelope).verdict is Verdict.HEALTHY
    with pytest.raises(EvidenceError, match="replay"):
        verifier.verify(envelope)


def test_expired_nonce_is_refused(pki: Pki, verifier: Verifier, clock: Clock) -> None:
    nonce = verifier.challenge("rtu-7")
    clock.now = T0 + dt.timedelta(minutes=6)
    with pytest.raises(EvidenceError, match="expired"):
        verifier.verify(signed(pki, rtu_claims(nonce)))


def test_unknown_and_foreign_nonces_are_refused(pki: Pki, verifier: Verifier) -> None:
    with pytest.raises(EvidenceError, match="not issued"):
        verifier.verify(signed(pki, rtu_claims("ab" * 32)))
    foreign = verifier.challenge("rtu-8")
    with pytest.raises(EvidenceError, match="another device"):
        verifier.verify(signed(pki, rtu_claims(foreign)))


def test_changed_claim_after_signing_is_compromised(pki: Pki, verifier: Verifier) -> None:
    envelope = signed(pki, rtu_claims(verifier.challenge("rtu-7"), secure_boot=False))
    envelope["claims"]["secure_boot"] = True  # a man in the middle "fixes" the claim
    result = verifier.verify(envelope)
    assert result.verdict is Verdict.COMPROMISED
    assert not result.authentic
    assert any("signature" in reason for reason in result.reasons)
    assert verifier.renewal_gate("rtu-7")[0] is False


def test_signature_by_another_key_is_compromised(pki: Pki, verifier: Verifier) -> None:
    claims = rtu_claims(verifier.challenge("rtu-7"))
    other = pki.keys["rtu-8"]
    assert isinstance(other, ec.EllipticCurvePrivateKey)
    envelope = sign_evidence(claims, other, [pki.certs["rtu-7"]])
    result = verifier.verify(envelope)
    assert result.verdict is Verdict.COMPROMISED
    assert "signature does not match the device certificate" in result.reasons


def test_chain_to_unknown_ca_is_refused(pki: Pki, verifier: Verifier) -> None:
    envelope = sign_evidence(rtu_claims(verifier.challenge("rtu-7")), pki.rogue_key, [pki.rogue_cert])
    with pytest.raises(TrustError, match="not signed by the trust anchor"):
        verifier.verify(envelope)
    assert verifier.verdicts.latest("rtu-7") is None


def test_evidence_for_another_device_is_refused(pki: Pki, verifier: Verifier) -> None:
    claims = rtu_claims(verifier.challenge("rtu-8"), device_id="rtu-8")
    with pytest.raises(EvidenceError, match="signed for device 'rtu-7'"):
        verifier.verify(signed(pki, claims, "rtu-7"))


def test_broken_boot_chain_is_compromised(pki: Pki, verifier: Verifier) -> None:
    tampered = [BOOT[0], sha("kernel with implant"), BOOT[2]]
    # the device reports the golden aggregate but its log replays to something else
    claims = rtu_claims(verifier.challenge("rtu-7"), boot_log=tampered)
    result = verifier.verify(signed(pki, claims))
    assert result.verdict is Verdict.COMPROMISED
    assert any("broken boot chain" in r for r in result.reasons)


def test_consistent_but_foreign_boot_is_compromised(pki: Pki, verifier: Verifier) -> None:
    tampered = [BOOT[0], sha("kernel with implant"), BOOT[2]]
    claims = rtu_claims(
        verifier.challenge("rtu-7"), boot_log=tampered, boot_aggregate=boot_aggregate(tampered)
    )
    result = verifier.verify(signed(pki, claims))
    assert result.verdict is Verdict.COMPROMISED
    assert any("boot measurements differ" in r for r in result.reasons)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"firmware_digest": sha("patched image")}, "firmware digest is not a known image"),
        ({"config_digest": sha("other config")}, "configuration digest differs"),
        ({"secure_boot": False}, "secure boot is off"),
        ({"model": "ACME-GW-10"}, "enrolled as 'ACME-RTU-500'"),
    ],
)
def test_measurement_mismatch_is_compromised(
    pki: Pki, verifier: Verifier, changes: dict[str, Any], reason: str
) -> None:
    result = verifier.verify(signed(pki, rtu_claims(verifier.challenge("rtu-7"), **changes)))
    assert result.verdict is Verdict.COMPROMISED
    assert any(reason in r for r in result.reasons), result.reasons


def test_outdated_firmware(pki: Pki, verifier: Verifier) -> None:
    claims = rtu_claims(verifier.challenge("rtu-7"), firmware_version="2.3.0", firmware_digest=RTU_OLD_IMAGE)
    result = verifier.verify(signed(pki, claims))
    assert result.verdict is Verdict.OUTDATED
    assert result.reasons[0] == "firmware 2.3.0 is below the minimum 2.4.0"
    ok, why = verifier.renewal_gate("rtu-7")
    assert not ok
    assert "outdated" in why


def test_outdated_application_and_os(pki: Pki, verifier: Verifier) -> None:
    claims = rtu_claims(
        verifier.challenge("rtu-7"), os_version="5.10.1", app_versions={"fieldward-agent": "0.2"}
    )
    result = verifier.verify(signed(pki, claims))
    assert result.verdict is Verdict.OUTDATED
    assert {r.split(" ")[0] for r in result.reasons} == {"OS", "application"}


def test_outdated_with_a_bad_digest_is_compromised(pki: Pki, verifier: Verifier) -> None:
    claims = rtu_claims(verifier.challenge("rtu-7"), firmware_version="2.3.0")  # 2.4.1's digest
    result = verifier.verify(signed(pki, claims))
    assert result.verdict is Verdict.COMPROMISED
    assert "firmware 2.3.0 is below the minimum 2.4.0" in result.reasons


def test_unknown_model_and_release(pki: Pki, verifier: Verifier, clock: Clock) -> None:
    other_model = Verifier(load_reference_values({"models": []}), pki.verify_chain, clock=clock)
    result = other_model.verify(signed(pki, rtu_claims(other_model.challenge("rtu-7"))))
    assert result.verdict is Verdict.UNKNOWN
    assert result.reasons == ("no reference values for model 'ACME-RTU-500'",)
    claims = rtu_claims(verifier.challenge("rtu-7"), firmware_version="2.6.0")
    result = verifier.verify(signed(pki, claims))
    assert result.verdict is Verdict.UNKNOWN
    assert "firmware release '2.6.0'" in result.reasons[0]


def test_renewal_gate_needs_a_fresh_healthy_newest_verdict(
    pki: Pki, verifier: Verifier, clock: Clock
) -> None:
    assert verifier.renewal_gate("rtu-7") == (False, "device rtu-7 has never been attested")
    verifier.verify(signed(pki, rtu_claims(verifier.challenge("rtu-7"))))
    clock.now = T0 + dt.timedelta(hours=23)
    assert verifier.renewal_gate("rtu-7")[0] is True
    clock.now = T0 + dt.timedelta(hours=25)
    ok, why = verifier.renewal_gate("rtu-7")
    assert not ok
    assert "25.0 h old" in why
    clock.now = T0
    verifier.verify(signed(pki, rtu_claims(verifier.challenge("rtu-7"), secure_boot=False)))
    assert verifier.renewal_gate("rtu-7")[0] is False


def test_clock_skew_is_noted_not_fatal(pki: Pki, verifier: Verifier) -> None:
    claims = rtu_claims(verifier.challenge("rtu-7"), timestamp=int((T0 - dt.timedelta(hours=3)).timestamp()))
    result = verifier.verify(signed(pki, claims))
    assert result.verdict is Verdict.HEALTHY
    assert result.notes == ("device clock is 3.0 h off",)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.pop("claims"), "evidence.claims is missing"),
        (lambda e: e["claims"].pop("boot_log"), "claims missing: boot_log"),
        (lambda e: e["claims"].__setitem__("timestamp", 1.5), "floating-point"),
        (lambda e: e["claims"].__setitem__("secure_boot", "yes"), "secure_boot must be true or false"),
        (lambda e: e.__setitem__("alg", "none"), "ES256 or EdDSA"),
        (lambda e: e.__setitem__("cert_chain", ["not a pem"]), "not a PEM certificate"),
        (lambda e: e.__setitem__("cert_chain", []), "1 to 8 PEM certificates"),
    ],
)
def test_malformed_evidence_is_refused_clearly(
    pki: Pki, verifier: Verifier, mutate: Callable[[dict[str, Any]], object], message: str
) -> None:
    envelope = signed(pki, rtu_claims(verifier.challenge("rtu-7")))
    mutate(envelope)
    with pytest.raises(EvidenceError, match=message):
        verifier.verify(envelope)


def test_bad_boot_log_entries_make_a_compromised_verdict(pki: Pki, verifier: Verifier) -> None:
    claims = rtu_claims(verifier.challenge("rtu-7"), boot_log=["zz" * 32])
    result = verifier.verify(signed(pki, claims))
    assert result.verdict is Verdict.COMPROMISED
    assert any("boot log unreadable" in r for r in result.reasons)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["claims", "alg", "signature", "cert_chain", "tpm_quote"]), value=json_values)
def test_verify_never_crashes_on_garbage(pki: Pki, verifier: Verifier, key: str, value: object) -> None:
    envelope = signed(pki, rtu_claims(verifier.challenge("rtu-7")))
    envelope[key] = value
    try:
        result = verifier.verify(envelope)
    except TrustError:
        return
    assert result.verdict in set(Verdict)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_verify_bytes_never_crashes(data: bytes) -> None:
    verifier = Verifier(load_reference_values({"models": []}), lambda chain: "x")
    with pytest.raises(TrustError):
        verifier.verify(data)


# ---------------------------------------------------------------------- TPM 2.0 quotes


def tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def tpms_attest_quote(nonce: bytes, pcrs: dict[int, bytes], magic: int = 0xFF544347) -> bytes:
    """TPMS_ATTEST for TPM2_Quote as in TPM 2.0 Library Part 2 sections 10.12.12 and 10.12.1."""
    bitmap = bytearray(3)  # sizeofSelect 3: PCRs 0..23
    for index in pcrs:
        bitmap[index // 8] |= 1 << (index % 8)
    digest = hashlib.sha256(b"".join(pcrs[i] for i in sorted(pcrs))).digest()
    return (
        struct.pack(">IH", magic, 0x8018)  # TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE
        + tpm2b(b"\x00\x0b" + hashlib.sha256(b"ak name").digest())  # qualifiedSigner: TPM2B_NAME
        + tpm2b(nonce)  # extraData
        + struct.pack(">QIIB", 123456789, 9, 0, 1)  # TPMS_CLOCK_INFO clock, reset, restart, safe
        + struct.pack(">Q", 0x2019102300163600)  # firmwareVersion
        + struct.pack(">I", 1)  # TPML_PCR_SELECTION.count
        + struct.pack(">HB", 0x000B, 3)  # TPMS_PCR_SELECTION: TPM_ALG_SHA256, sizeofSelect
        + bytes(bitmap)
        + tpm2b(digest)  # pcrDigest
    )


def tpmt_signature_ecdsa(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return struct.pack(">HH", 0x0018, 0x000B) + tpm2b(r.to_bytes(32, "big")) + tpm2b(s.to_bytes(32, "big"))


def tpmt_signature_rsassa(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return struct.pack(">HH", 0x0014, 0x000B) + tpm2b(signature)


PCR_LOG = [
    {"digest": BOOT[0], "pcr": 0, "name": "bootloader"},
    {"digest": BOOT[1], "pcr": 4, "name": "kernel"},
    {"digest": BOOT[2], "pcr": 4, "name": "rootfs"},
]


def expected_pcrs() -> dict[int, bytes]:
    pcr0 = hashlib.sha256(bytes(32) + bytes.fromhex(BOOT[0])).digest()
    pcr4 = hashlib.sha256(bytes(32) + bytes.fromhex(BOOT[1])).digest()
    pcr4 = hashlib.sha256(pcr4 + bytes.fromhex(BOOT[2])).digest()
    return {0: pcr0, 4: pcr4}


def quoted_evidence(
    pki: Pki,
    nonce: str,
    *,
    quote_nonce: bytes | None = None,
    pcrs: dict[int, bytes] | None = None,
    sent_pcrs: dict[int, bytes] | None = None,
    ak: str = "ak-rtu-7",
    signer: AnyKey | None = None,
    magic: int = 0xFF544347,
) -> dict[str, Any]:
    pcrs = pcrs or expected_pcrs()
    attest = tpms_attest_quote(bytes.fromhex(nonce) if quote_nonce is None else quote_nonce, pcrs, magic)
    key = signer or pki.keys[ak]
    if isinstance(key, rsa.RSAPrivateKey):
        signature = tpmt_signature_rsassa(key, attest)
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        signature = tpmt_signature_ecdsa(key, attest)

    quote = {
        "attest": base64.b64encode(attest).decode(),
        "signature": base64.b64encode(signature).decode(),
        "pcrs": {str(i): v.hex() for i, v in (sent_pcrs or pcrs).items()},
        "ak_chain": [pki.certs[ak].public_bytes(Encoding.PEM).decode()],
    }
    return signed(pki, rtu_claims(nonce, boot_log=PCR_LOG), tpm_quote=quote)


def test_parse_tpms_attest_reads_every_field() -> None:
    nonce = bytes(range(32))
    quote = parse_tpms_attest(tpms_attest_quote(nonce, expected_pcrs()))
    assert quote.extra_data == nonce
    assert quote.clock == 123456789
    assert quote.reset_count == 9
    assert quote.safe
    assert quote.firmware_version == 0x2019102300163600
    assert quote.pcr_selection == ((0x000B, (0, 4)),)
    assert quote.pcr_digest == hashlib.sha256(expected_pcrs()[0] + expected_pcrs()[4]).digest()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parse_tpms_attest_refuses_garbage_cleanly(data: bytes) -> None:
    with pytest.raises(EvidenceError):
        parse_tpms_attest(data)


def test_parse_tpms_attest_refuses_every_truncation() -> None:
    good = tpms_attest_quote(bytes(32), expected_pcrs())
    for size in range(len(good)):
        with pytest.raises(EvidenceError):
            parse_tpms_attest(good[:size])
    with pytest.raises(EvidenceError, match="trailing"):
        parse_tpms_attest(good + b"\x00")


@pytest.mark.parametrize("ak", ["ak-rtu-7", "ak-rsa-rtu-7"])
def test_tpm_quote_healthy(pki: Pki, verifier: Verifier, ak: str) -> None:
    result = verifier.verify(quoted_evidence(pki, verifier.challenge("rtu-7"), ak=ak))
    assert result.verdict is Verdict.HEALTHY, result.reasons
    assert result.tpm_quote


def test_tpm_quote_with_another_nonce(pki: Pki, verifier: Verifier) -> None:
    result = verifier.verify(quoted_evidence(pki, verifier.challenge("rtu-7"), quote_nonce=b"\x01" * 32))
    assert result.verdict is Verdict.COMPROMISED
    assert "TPM quote extraData is not the challenge nonce" in result.reasons


def test_tpm_quote_with_pcr_values_that_do_not_hash_to_the_digest(pki: Pki, verifier: Verifier) -> None:
    forged = dict(expected_pcrs())
    forged[4] = hashlib.sha256(b"something else").digest()
    # the quote signs the real PCRs; the device sends other values (to match a forged log)
    result = verifier.verify(quoted_evidence(pki, verifier.challenge("rtu-7"), sent_pcrs=forged))
    assert result.verdict is Verdict.COMPROMISED
    assert "TPM quote PCR digest does not match the PCR values" in result.reasons


def test_tpm_quote_of_another_boot(pki: Pki, verifier: Verifier) -> None:
    other = {0: expected_pcrs()[0], 4: hashlib.sha256(b"implanted kernel").digest()}
    result = verifier.verify(quoted_evidence(pki, verifier.challenge("rtu-7"), pcrs=other))
    assert result.verdict is Verdict.COMPROMISED
    assert "boot log does not replay to the quoted PCR 4" in result.reasons


def test_tpm_quote_signed_by_another_key(pki: Pki, verifier: Verifier) -> None:
    evidence = quoted_evidence(pki, verifier.challenge("rtu-7"), signer=pki.keys["rtu-8"])
    result = verifier.verify(evidence)
    assert result.verdict is Verdict.COMPROMISED
    assert "TPM quote signature does not match the attestation key" in result.reasons


def test_tpm_quote_with_an_ak_of_another_device(pki: Pki, verifier: Verifier) -> None:
    evidence = quoted_evidence(pki, verifier.challenge("rtu-7"), ak="rtu-8")
    result = verifier.verify(evidence)
    assert result.verdict is Verdict.COMPROMISED
    assert "names device 'rtu-8'" in result.reasons[0]


def test_tpm_quote_with_a_bad_magic_is_refused(pki: Pki, verifier: Verifier) -> None:
    with pytest.raises(EvidenceError, match="magic"):
        verifier.verify(quoted_evidence(pki, verifier.challenge("rtu-7"), magic=0xFF544348))


def test_tpm_quote_missing_a_boot_log_pcr(pki: Pki, verifier: Verifier) -> None:
    only_pcr0 = {0: expected_pcrs()[0]}
    result = verifier.verify(quoted_evidence(pki, verifier.challenge("rtu-7"), pcrs=only_pcr0))
    assert result.verdict is Verdict.COMPROMISED
    assert "TPM quote does not cover PCR 4 of the boot log" in result.reasons


# ---------------------------------------------------------------------- reference values


def test_reference_values_validation_names_the_entry(tmp_path: Any) -> None:
    bad = copy.deepcopy(
        {"models": [{"model": "X", "releases": [{"version": "1.0", "firmware_digests": ["zz"]}]}]}
    )
    with pytest.raises(ValueError, match=r"model 'X': releases\[0\]\.firmware_digests\[0\]"):
        load_reference_values(bad)
    with pytest.raises(ValueError, match="unknown key"):
        load_reference_values({"models": [{"model": "X", "min_firmwre": "1"}]})
    path = tmp_path / "ref.yaml"
    path.write_text("models: [\n")
    with pytest.raises(ValueError, match="cannot read reference values"):
        load_reference_values(path)


# ---------------------------------------------------------------------- with the FieldWard CA


def test_the_fieldward_ca_plugs_in_as_the_chain_verifier(ca: Any) -> None:
    """``CertificateAuthority.verify`` (tests/trust/conftest.py's CA) as ``verify_chain``."""
    from fieldward.trust.ca import identity_of

    def verify_chain(chain: Sequence[x509.Certificate]) -> str:
        identity = identity_of(ca.verify(chain))
        if identity is None or identity[0] != "device":
            raise TrustError("not a device certificate")
        return identity[1]

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rtu-77")]))
        .sign(key, hashes.SHA256())
    )
    cert = ca.issue(csr, "device", identity="rtu-77", group="plant-a")
    verifier = Verifier(
        load_reference_values(str(REFERENCE)), verify_chain, model_of=lambda _: "ACME-RTU-500"
    )
    claims = rtu_claims(
        verifier.challenge("rtu-77"), device_id="rtu-77", timestamp=dt.datetime.now(dt.UTC).isoformat()
    )
    result = verifier.verify(sign_evidence(claims, key, [cert, *ca.chain]))
    assert result.verdict is Verdict.HEALTHY, result.reasons
    assert verifier.renewal_gate("rtu-77")[0]
    ca.revoke(cert.serial_number, "key_compromise")
    claims = rtu_claims(verifier.challenge("rtu-77"), device_id="rtu-77")
    with pytest.raises(TrustError, match="revoked"):
        verifier.verify(sign_evidence(claims, key, [cert, *ca.chain]))
