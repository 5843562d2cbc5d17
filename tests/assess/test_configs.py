"""Configuration checks: a plant capture built from real protocol bytes (scapy sessions of Telnet, FTP,
HTTP, SNMP, MQTT, Modbus, TLS, VNC and RDP) through the real pipeline, its negative twin (TLS 1.3, a valid
certificate, MQTT with a password over TLS, SNMPv3, internal Modbus), the shared corpus captures that
contain a case, default credentials (pairs matched by the dissectors: accepted, unanswered, refused; user
names accepted without a password; an older analysis without pair matching), the no-password rule over
every output file, settings, the data file and bad input."""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from fieldward.assess.configs import (
    CHECKS,
    ConfigCheckError,
    ConfigSettings,
    check_configurations,
    load_default_credentials,
)
from fieldward.assess.model import ConfigFinding, Severity
from fieldward.assess.risk import RiskSettings
from fieldward.inventory import InventorySettings
from fieldward.pipeline import AnalysisOptions, analyze
from fieldward.protocols.credentials import CredentialFileError, DefaultCredentials
from tests.inventory.helpers import tcp_session
from tests.protocols.test_mqtt import assert_password_absent
from tests.protocols.test_rdp import SESSIONS as RDP_SESSIONS
from tests.protocols.test_rfb import SESSIONS as RFB_SESSIONS
from tests.protocols.test_s7comm import write_pcap
from tests.protocols.test_snmp import ber_int, octets, pdu, scoped, v2c, v3, varbinds
from tests.protocols.test_tls import Pki, handshake_msg, real_session, record, vec8, vec16

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "assess" / "configs.md"

GATEWAY = ("00:00:5e:00:01:01", "10.10.0.1")
INTERNET = ("00:00:5e:00:01:01", "93.184.216.34")  # a public host, behind the gateway's MAC
ENGINEER = ("9c:8e:99:00:00:05", "10.10.2.5")
OFFICE_PC = ("f8:bc:12:00:00:09", "10.10.5.9")
HMI = ("9c:8e:99:00:00:10", "10.10.2.10")
TELNET_PLC = ("00:90:e8:11:22:33", "10.10.1.20")  # Moxa OUI
FTP_PLC = ("00:00:54:aa:bb:01", "10.10.1.21")
WEB_PLC = ("00:1b:1b:aa:bb:02", "10.10.1.22")
SNMP_SWITCH = ("00:1b:1b:aa:bb:03", "10.10.1.23")
BROKER = ("00:90:e8:aa:bb:04", "10.10.1.24")
MODBUS_PLC = ("00:00:54:aa:bb:05", "10.10.1.25")
VNC_HMI = ("00:1b:1b:aa:bb:06", "10.10.2.26")
RDP_HOST = ("3c:d9:2b:aa:bb:07", "10.10.3.30")
RDP_LEGACY = ("3c:d9:2b:aa:bb:08", "10.10.3.31")
OLD_TLS = ("00:1b:1b:aa:bb:09", "10.10.1.40")
BAD_CERT = ("00:1b:1b:aa:bb:0a", "10.10.1.41")
SHA1_CERT = ("00:1b:1b:aa:bb:0b", "10.10.1.42")
TLS13 = ("00:1b:1b:aa:cc:01", "10.10.1.50")
TLS12_OK = ("00:1b:1b:aa:cc:02", "10.10.1.51")
MQTT_TLS = ("00:90:e8:aa:cc:03", "10.10.1.52")
SNMP_V3 = ("00:1b:1b:aa:cc:04", "10.10.1.53")
INTERNAL_PLC = ("00:00:54:aa:cc:05", "10.10.1.54")
AUTH_BROKER = ("00:90:e8:aa:cc:06", "10.10.1.55")
CAMERA = ("00:1b:1b:aa:bb:0c", "10.10.1.43")
NO_PASSWORD_GW = ("00:90:e8:aa:bb:0d", "10.10.1.44")  # Moxa OUI
DEFAULT_BROKER = ("00:90:e8:aa:bb:0e", "10.10.1.45")

TELNET_PASSWORD = b"S3cretPw1"
FTP_PASSWORD = b"guest@plant.example"
BASIC = base64.b64encode(b"admin:Hunter2!")
MQTT_PASSWORD = b"BrokerPw9"
# Default pairs of the lists: Mirai's root/xc3511 (Telnet, and HTTP Basic refused with 401),
# Schneider's loader/fwdownload (FTP), Mirai's admin/7ujMko0admin (MQTT).
DEFAULT_SECRETS = [b"xc3511", b"fwdownload", b"7ujMko0admin", base64.b64encode(b"root:xc3511")]
SECRETS = [TELNET_PASSWORD, FTP_PASSWORD, BASIC, b"Hunter2!", MQTT_PASSWORD, *DEFAULT_SECRETS]
START = 1_700_000_000.0  # 2023-11-14: certificates are judged against this packet time

SITE_RULES = """
rules:
  - name: office-pc
    match: {tcp.syn: 'win=8192,'}
    set: {device_type: it_workstation}
    confidence: 0.95
"""


# ---------------------------------------------------------------------- protocol bytes


def mqtt_connect(client_id: bytes, user: bytes | None = None, password: bytes | None = None) -> bytes:
    flags = 0x02 | (0x80 if user is not None else 0) | (0x40 if password is not None else 0)
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x3c" + struct.pack(">H", len(client_id)) + client_id
    for field in (user, password):
        if field is not None:
            body += struct.pack(">H", len(field)) + field
    return bytes([0x10, len(body)]) + body


CONNACK_OK = b"\x20\x02\x00\x00"


def modbus_read(tid: int) -> tuple[bytes, bytes]:
    request = struct.pack(">HHHBBHH", tid, 0, 6, 1, 3, 0, 2)
    response = struct.pack(">HHHBBB", tid, 0, 7, 1, 3, 4) + b"\x00\x01\x00\x02"
    return request, response


def modbus_session(client: tuple[str, str], server: tuple[str, str], **kwargs: Any) -> list[Packet]:
    flights: list[tuple[bool, bytes]] = []
    for tid in (1, 2):
        request, response = modbus_read(tid)
        flights += [(True, request), (False, response)]
    return tcp_session(client, server, 502, flights, **kwargs)


def snmp_datagrams(
    manager: tuple[str, str], agent: tuple[str, str], request: bytes, answer: bytes
) -> list[Packet]:
    return [
        Ether(src=manager[0], dst=agent[0]) / IP(src=manager[1], dst=agent[1]) / UDP(sport=50161, dport=161)
        / request,
        Ether(src=agent[0], dst=manager[0]) / IP(src=agent[1], dst=manager[1]) / UDP(sport=161, dport=50161)
        / answer,
    ]  # fmt: skip


SYS_DESCR = "1.3.6.1.2.1.1.1.0"


def snmp_v1_get() -> tuple[bytes, bytes]:
    request = v2c(b"public", pdu(0xA0, 7, 0, 0, varbinds((SYS_DESCR, b"\x05\x00"))), version=0)
    answer = v2c(b"public", pdu(0xA2, 7, 0, 0, varbinds((SYS_DESCR, octets(b"SCALANCE X208")))), version=0)
    return request, answer


def snmp_v3_get() -> tuple[bytes, bytes]:
    """An encrypted SNMPv3 request (authPriv) and the agent's plaintext report."""
    engine = b"\x80\x00\x1f\x88\x04"
    request = v3(11, 0x07, engine=engine, boots=1, time=5, user=b"ops", msg_data=octets(b"\x01" * 24))
    usm_stats = varbinds(("1.3.6.1.6.3.15.1.1.4.0", ber_int(1)))  # usmStatsUnknownEngineIDs
    answer = v3(
        11,
        0x00,
        engine=engine,
        boots=1,
        time=5,
        user=b"",
        msg_data=scoped(engine, b"", pdu(0xA8, 9, 0, 0, usm_stats)),
    )
    return request, answer


def tls_flights(chain: list[bytes], version: int = 0x0303) -> list[tuple[bool, bytes]]:
    """A ClientHello, then ServerHello (``version``), Certificate and ServerHelloDone in one flight."""
    hello_body = (
        version.to_bytes(2, "big") + bytes(32) + vec8(b"") + vec16(b"\x00\x2f\x00\x35") + vec8(b"\x00")
    )
    client = record(22, handshake_msg(1, hello_body), 0x0301)
    server_body = version.to_bytes(2, "big") + bytes(range(32)) + vec8(b"") + b"\x00\x2f" + b"\x00"
    certificates = b"".join(len(der).to_bytes(3, "big") + der for der in chain)
    server = record(
        22,
        handshake_msg(2, server_body)
        + handshake_msg(11, len(certificates).to_bytes(3, "big") + certificates)
        + handshake_msg(14, b""),
        version,
    )
    return [(True, client), (False, server)]


@dataclass
class Certificates:
    bad: bytes
    """Self-signed, RSA 1024, expired in 2020."""
    sha1_leaf: bytes
    """P-256 leaf signed by the (RSA 2048) CA with SHA-1, valid."""
    good_leaf: bytes
    ca: bytes
    pki: Pki


def make_certificates(folder: Path) -> Certificates:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def build(subject: str, issuer: str, key: Any, signer: Any, algorithm: Any, start: int, end: int) -> Any:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime(start, 1, 1, tzinfo=dt.UTC))
            .not_valid_after(dt.datetime(end, 1, 1, tzinfo=dt.UTC))
            .sign(signer, algorithm)
        )

    der = serialization.Encoding.DER
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    bad = build("plc.local", "plc.local", weak, weak, hashes.SHA256(), 2015, 2020)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = build("Plant CA", "Plant CA", ca_key, ca_key, hashes.SHA256(), 2020, 2035)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    sha256_leaf = build("hmi.plant", "Plant CA", leaf_key, ca_key, hashes.SHA256(), 2023, 2030)
    good = build("historian.plant", "Plant CA", leaf_key, ca_key, hashes.SHA256(), 2023, 2030)
    # OpenSSL 3 refuses to sign with SHA-1: relabel a SHA-256 signature as sha1WithRSAEncryption (the
    # OIDs have the same length). A passive sensor reads the algorithm; it cannot check the CA's signature.
    sha256_rsa, sha1_rsa = bytes.fromhex("06092a864886f70d01010b"), bytes.fromhex("06092a864886f70d010105")
    sha1_leaf = sha256_leaf.public_bytes(der).replace(sha256_rsa, sha1_rsa)
    assert sha1_leaf.count(sha1_rsa) == 2
    pem = serialization.Encoding.PEM
    chain, key_file = folder / "chain.pem", folder / "key.pem"
    chain.write_bytes(good.public_bytes(pem) + ca.public_bytes(pem))
    key_file.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificates(
        bad.public_bytes(der),
        sha1_leaf,
        good.public_bytes(der),
        ca.public_bytes(der),
        Pki(chain, key_file, good.public_bytes(der), ca.public_bytes(der)),
    )


# ---------------------------------------------------------------------- captures


def plant_packets(certs: Certificates) -> list[Packet]:
    packets: list[Packet] = []
    packets += tcp_session(
        ENGINEER,
        TELNET_PLC,
        23,
        [
            (False, b"Moxa EDR-810\r\nlogin: "),
            (True, b"admin\r\n"),
            (False, b"Password: "),
            (True, TELNET_PASSWORD + b"\r\n"),
            (False, b"\r\nWelcome to EDR-810\r\nEDR-810# "),
            (True, b"exit\r\n"),
        ],
    )
    packets += tcp_session(
        ENGINEER,
        FTP_PLC,
        21,
        [
            (False, b"220 FTP server ready\r\n"),
            (True, b"USER anonymous\r\n"),
            (False, b"331 Password required\r\n"),
            (True, b"PASS " + FTP_PASSWORD + b"\r\n"),
            (False, b"230 Login successful\r\n"),
            (True, b"QUIT\r\n"),
            (False, b"221 Bye\r\n"),
        ],
        cport=50124,
    )
    packets += tcp_session(
        ENGINEER,
        FTP_PLC,
        21,
        [
            (False, b"220 FTP server ready\r\n"),
            (True, b"USER loader\r\n"),
            (False, b"331 Password required\r\n"),
            (True, b"PASS fwdownload\r\n"),
            (False, b"230 Login successful\r\n"),
            (True, b"QUIT\r\n"),
            (False, b"221 Bye\r\n"),
        ],
        cport=50126,
    )
    packets += tcp_session(
        ENGINEER,
        CAMERA,
        23,
        [
            (False, b"IPCAM login: "),
            (True, b"root\r\n"),
            (False, b"Password: "),
            (True, b"xc3511\r\n"),
            (False, b"\r\n# "),
            (True, b"exit\r\n"),
        ],
        cport=50127,
    )
    packets += tcp_session(
        ENGINEER,
        NO_PASSWORD_GW,
        23,
        [(False, b"Moxa EDR-G902\r\nlogin: "), (True, b"admin\r\n"), (False, b"\r\nEDR-G902# ")],
        cport=50128,
    )
    login = mqtt_connect(b"scanner-1", b"admin", b"7ujMko0admin")
    packets += tcp_session(ENGINEER, DEFAULT_BROKER, 1883, [(True, login)], cport=50129)
    packets += tcp_session(
        ENGINEER,
        WEB_PLC,
        80,
        [
            (
                True,
                b"GET /admin/config.html HTTP/1.1\r\nHost: plc\r\nAuthorization: Basic "
                + BASIC
                + b"\r\n\r\n",
            ),
            (False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            (
                True,
                b"GET / HTTP/1.1\r\nHost: plc\r\nAuthorization: Basic " + DEFAULT_SECRETS[3] + b"\r\n\r\n",
            ),
            (False, b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"),
        ],
        cport=50125,
    )
    packets += snmp_datagrams(ENGINEER, SNMP_SWITCH, *snmp_v1_get())
    packets += tcp_session(ENGINEER, BROKER, 1883, [(True, mqtt_connect(b"sensor-7")), (False, CONNACK_OK)])
    packets += modbus_session(OFFICE_PC, MODBUS_PLC, window=8192, cport=50200)
    packets += modbus_session(INTERNET, MODBUS_PLC, cport=50201)
    packets += tcp_session(ENGINEER, VNC_HMI, 5900, RFB_SESSIONS["v38_none"], cport=50300)
    packets += tcp_session(ENGINEER, RDP_HOST, 3389, RDP_SESSIONS["tls_only"], cport=50301)
    packets += tcp_session(ENGINEER, RDP_LEGACY, 3389, RDP_SESSIONS["standard"], cport=50302)
    packets += tcp_session(
        ENGINEER, OLD_TLS, 443, tls_flights([certs.good_leaf, certs.ca], 0x0301), cport=50400
    )
    packets += tcp_session(ENGINEER, BAD_CERT, 443, tls_flights([certs.bad]), cport=50401)
    packets += tcp_session(ENGINEER, SHA1_CERT, 443, tls_flights([certs.sha1_leaf, certs.ca]), cport=50402)
    return packets


def negative_packets(certs: Certificates) -> list[Packet]:
    tls13 = real_session(
        certs.pki, max_version=ssl.TLSVersion.TLSv1_3, client_alpn=["h2"], server_alpn=["h2"]
    )
    tls12 = real_session(certs.pki, max_version=ssl.TLSVersion.TLSv1_2, client_alpn=[], server_alpn=[])
    mqtts = real_session(
        certs.pki, max_version=ssl.TLSVersion.TLSv1_3, client_alpn=["mqtt"], server_alpn=["mqtt"]
    )
    packets: list[Packet] = []
    packets += tcp_session(ENGINEER, TLS13, 443, tls13, cport=51000)
    packets += tcp_session(ENGINEER, TLS12_OK, 443, tls12, cport=51001)
    packets += tcp_session(ENGINEER, MQTT_TLS, 8883, mqtts, cport=51002)
    packets += snmp_datagrams(ENGINEER, SNMP_V3, *snmp_v3_get())
    packets += modbus_session(HMI, INTERNAL_PLC, cport=51003)
    login = mqtt_connect(b"sensor-8", b"sensor", MQTT_PASSWORD)
    packets += tcp_session(ENGINEER, AUTH_BROKER, 1883, [(True, login), (False, CONNACK_OK)], cport=51004)
    return packets


@dataclass
class Analysis:
    out: Path
    findings: list[ConfigFinding]

    def of(self, check: str) -> list[ConfigFinding]:
        return [f for f in self.findings if f.check == check]

    def device(self, member: tuple[str, str]) -> str:
        return f"mac:{member[0]}"


def run(tmp: Path, name: str, packets: list[Packet]) -> Analysis:
    rules = tmp / "site.yaml"
    rules.write_text(SITE_RULES)
    capture = write_pcap(tmp / f"{name}.pcap", packets, start=START)
    out = tmp / f"out-{name}"
    options = AnalysisOptions(inventory_settings=InventorySettings(fingerprint_files=(rules,)), detect=False)
    analyze([capture], out, options)
    return Analysis(out, check_configurations(out))


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory, certificates: Certificates) -> Analysis:
    return run(tmp_path_factory.mktemp("plant"), "plant", plant_packets(certificates))


@pytest.fixture(scope="module")
def negative(tmp_path_factory: pytest.TempPathFactory, certificates: Certificates) -> Analysis:
    return run(tmp_path_factory.mktemp("negative"), "negative", negative_packets(certificates))


def only(findings: list[ConfigFinding], device: str) -> ConfigFinding:
    matching = [f for f in findings if f.device_id == device]
    assert len(matching) == 1, [f.to_json() for f in findings]
    return matching[0]


# ---------------------------------------------------------------------- the checks, from real bytes


def test_cleartext_management(plant: Analysis) -> None:
    telnet = only(plant.of("cleartext.telnet"), plant.device(TELNET_PLC))
    assert (telnet.port, telnet.severity, telnet.peers, telnet.count) == (
        23,
        Severity.HIGH,
        (ENGINEER[1],),
        1,
    )
    assert telnet.details["observed"] == ["a password was typed in clear"]
    assert telnet.evidence
    assert telnet.first_seen is not None
    assert telnet.first_seen.startswith("2023-11-14T22:13")
    ftp = only(plant.of("cleartext.ftp"), plant.device(FTP_PLC))
    assert (ftp.port, ftp.severity) == (21, Severity.HIGH)  # a PASS crossed in clear
    web = only(plant.of("cleartext.http_admin"), plant.device(WEB_PLC))
    assert (web.port, web.severity, web.details["observed"]) == (
        80,
        Severity.HIGH,
        ["HTTP Basic authentication"],
    )
    snmp = only(plant.of("cleartext.snmp"), plant.device(SNMP_SWITCH))
    assert (snmp.port, snmp.severity, snmp.count) == (161, Severity.HIGH, 1)
    assert snmp.details["observed"] == ["a default community (public/private)"]
    no_auth = only(plant.of("cleartext.mqtt_no_auth"), plant.device(BROKER))
    assert (no_auth.port, no_auth.severity) == (1883, Severity.HIGH)
    plaintext = only(plant.of("cleartext.mqtt_plaintext"), plant.device(BROKER))
    assert plaintext.evidence == no_auth.evidence


def test_default_credentials(plant: Analysis) -> None:
    """Pairs matched by the dissectors: accepted (critical), unanswered (high), refused (no finding)."""
    confirmed = {f.device_id: f for f in plant.of("credentials.default_account")}
    assert set(confirmed) == {plant.device(m) for m in (CAMERA, FTP_PLC, DEFAULT_BROKER)}
    camera = confirmed[plant.device(CAMERA)]
    assert (camera.severity, camera.port, camera.protocol, camera.count) == (Severity.CRITICAL, 23, None, 1)
    assert camera.details["observed"] == ["telnet login of 'root' with a default password (mirai), accepted"]
    ftp = confirmed[plant.device(FTP_PLC)]
    assert (ftp.severity, ftp.port, ftp.count) == (Severity.CRITICAL, 21, 1)  # the anonymous login is not one
    assert ftp.details["observed"] == [
        "ftp login of 'loader' with a default password (schneider-electric), accepted"
    ]
    broker = confirmed[plant.device(DEFAULT_BROKER)]
    assert (broker.severity, broker.port) == (Severity.HIGH, 1883)  # no CONNACK: the outcome is unknown
    assert broker.details["observed"] == ["mqtt login with a default password (mirai), not answered"]
    assert broker.peers == (ENGINEER[1],)
    # The web server refused root/xc3511 (401) and the Moxa's admin password is not a default.
    assert plant.device(WEB_PLC) not in confirmed
    assert plant.device(TELNET_PLC) not in confirmed


def test_default_user_only_without_a_password(plant: Analysis) -> None:
    (weak,) = plant.of("credentials.default_user")
    assert weak.device_id == plant.device(NO_PASSWORD_GW)  # not TELNET_PLC: its password was typed
    assert (weak.severity, weak.port) == (Severity.HIGH, 23)  # 'admin' is in the Moxa list, a Moxa device
    (observed,) = weak.details["observed"]
    assert observed.startswith("telnet user 'admin' logged in without a password: a default account of mirai")
    assert "moxa" in observed
    anonymous = only(plant.of("credentials.anonymous_ftp"), plant.device(FTP_PLC))
    assert anonymous.port == 21


def test_older_analysis_without_pair_matching(tmp_path: Path, plant: Analysis) -> None:
    """Event files written before the dissectors matched pairs: user names only, as default_user."""
    copy = tmp_path / "older"
    (copy / "events").mkdir(parents=True)
    for name in ("devices.json", "flows.parquet"):
        (copy / name).write_bytes((plant.out / name).read_bytes())
    for log in ("telnet_login", "ftp"):
        table = pq.read_table(plant.out / "events" / f"{log}.parquet")
        pq.write_table(table.drop(["default_credential"]), copy / "events" / f"{log}.parquet")
    findings = check_configurations(copy, ConfigSettings(checks=frozenset(CREDENTIAL_CHECKS)))
    assert {f.check for f in findings} == {"credentials.default_user", "credentials.anonymous_ftp"}
    weak = {f.device_id: f for f in findings if f.check == "credentials.default_user"}
    # TELNET_PLC's admin (password typed, not compared), the camera's root, the gateway's admin and
    # the FTP server's loader (anonymous is no default account).
    assert set(weak) == {plant.device(m) for m in (TELNET_PLC, CAMERA, NO_PASSWORD_GW, FTP_PLC)}
    assert (
        weak[plant.device(TELNET_PLC)]
        .details["observed"][0]
        .startswith("telnet user 'admin' logged in (its password was not compared)")
    )
    assert (weak[plant.device(CAMERA)].severity, weak[plant.device(TELNET_PLC)].severity) == (
        Severity.MEDIUM,
        Severity.HIGH,
    )


CREDENTIAL_CHECKS = ("credentials.default_account", "credentials.default_user", "credentials.anonymous_ftp")


def test_no_password_in_any_output_file(plant: Analysis) -> None:
    for secret in SECRETS:
        assert_password_absent(plant.out, secret)


def test_risk_weighs_a_confirmed_default_credential_above_a_default_user_name() -> None:
    settings = RiskSettings()
    confirmed = settings.check_rule("credentials.default_account", Severity.CRITICAL).weakness
    weak = settings.check_rule("credentials.default_user", Severity.HIGH).weakness
    assert confirmed is not None
    assert weak is not None
    assert weak.weight <= confirmed.weight / 2
    assert weak.cap < confirmed.cap
    assert "credentials.default_account" in settings.now_checks
    assert "credentials.default_user" not in settings.now_checks


def test_ot_exposure(plant: Analysis) -> None:
    devices = {d["id"]: d for d in json.loads((plant.out / "devices.json").read_text())["devices"]}
    assert devices[plant.device(OFFICE_PC)]["device_type"] == "it_workstation"
    from_it = only(plant.of("exposure.ot_from_it"), plant.device(MODBUS_PLC))
    assert (from_it.port, from_it.peers, from_it.details["observed"]) == (502, (OFFICE_PC[1],), ["modbus"])
    from_internet = only(plant.of("exposure.ot_from_internet"), plant.device(MODBUS_PLC))
    assert (from_internet.severity, from_internet.peers) == (Severity.CRITICAL, (INTERNET[1],))
    internet = only(plant.of("exposure.internet"), plant.device(MODBUS_PLC))
    assert internet.details["observed"] == ["connections from the internet"]
    assert len(plant.of("exposure.ot_from_it")) == 1  # the engineer's station is not IT


def test_weak_tls(plant: Analysis) -> None:
    old = only(plant.of("tls.old_protocol"), plant.device(OLD_TLS))
    assert (old.port, old.severity, old.details["observed"]) == (443, Severity.MEDIUM, ["TLSv10"])
    expired = only(plant.of("tls.expired_certificate"), plant.device(BAD_CERT))
    assert expired.details["observed"] == ["expired"]
    only(plant.of("tls.self_signed_certificate"), plant.device(BAD_CERT))
    weak = only(plant.of("tls.weak_key"), plant.device(BAD_CERT))
    assert weak.details["observed"] == ["an RSA key of 1024 bits"]
    signature = only(plant.of("tls.weak_signature"), plant.device(SHA1_CERT))
    assert signature.details["observed"] == ["sha1WithRSAEncryption"]
    assert {f.device_id for f in plant.findings if f.check.startswith("tls.")} == {
        plant.device(OLD_TLS),
        plant.device(BAD_CERT),
        plant.device(SHA1_CERT),
    }


def test_unauthenticated_remote_access(plant: Analysis) -> None:
    vnc = only(plant.of("remote.vnc_no_auth"), plant.device(VNC_HMI))
    assert (vnc.port, vnc.severity) == (5900, Severity.CRITICAL)
    tls_only = only(plant.of("remote.rdp_no_nla"), plant.device(RDP_HOST))
    assert (tls_only.severity, tls_only.details["observed"]) == (
        Severity.MEDIUM,
        ["security protocol SSL without NLA"],
    )
    standard = only(plant.of("remote.rdp_no_nla"), plant.device(RDP_LEGACY))
    assert standard.severity == Severity.HIGH


def test_negatives(negative: Analysis) -> None:
    got = sorted((f.check, f.device_id) for f in negative.findings)
    assert got == [("cleartext.mqtt_plaintext", negative.device(AUTH_BROKER))]
    flows = pq.read_table(negative.out / "flows.parquet", columns=["resp_port", "service"]).to_pylist()
    assert {"resp_port": 8883, "service": "tls"} in flows
    snmp = pq.read_table(negative.out / "events" / "snmp.parquet", columns=["version"]).to_pylist()
    assert {r["version"] for r in snmp} == {3}
    hello = pq.read_table(negative.out / "events" / "tls_server_hello.parquet").to_pylist()
    assert {r["selected_version"] for r in hello} == {0x0304, 0x0303}
    assert pq.read_table(negative.out / "events" / "tls_certificate.parquet").num_rows >= 1


def test_no_password_in_findings(plant: Analysis, negative: Analysis) -> None:
    text = json.dumps([f.to_json() for f in plant.findings + negative.findings]).encode()
    for secret in SECRETS:
        assert secret not in text
    credentials = load_default_credentials()
    passwords = {p for item in credentials.lists for _, p in item.credentials if len(p) >= 6}
    words = set(json.dumps([f.to_json() for f in plant.of("credentials.default_account")]).split('"'))
    assert not passwords & words


def test_every_finding_is_well_formed(plant: Analysis) -> None:
    assert {f.check for f in plant.findings} == set(CHECKS)
    for finding in plant.findings:
        spec = CHECKS[finding.check]
        assert finding.title == spec.title
        assert finding.explanation.startswith(spec.explanation)
        assert finding.recommendation == spec.recommendation
        assert finding.count >= 1
        assert 1 <= len(finding.evidence) <= 5
        assert finding.first_seen is not None
        assert finding.last_seen is not None
        assert finding.first_seen <= finding.last_seen
        record = finding.to_json()
        assert record["id"] == f"{finding.check}:{finding.device_id}:{finding.port or ''}"
    ranks = [list(Severity).index(f.severity) for f in plant.findings]
    assert ranks == sorted(ranks, reverse=True)
    flows = set(pq.read_table(plant.out / "flows.parquet", columns=["flow_id"])["flow_id"].to_pylist())
    assert all(set(f.evidence) <= flows for f in plant.findings)


# ---------------------------------------------------------------------- corpus captures


def corpus_findings(corpus: Path, tmp: Path, capture: str) -> list[ConfigFinding]:
    out = tmp / Path(capture).stem
    analyze([corpus / capture], out, AnalysisOptions(detect=False))
    return check_configurations(out)


def test_corpus_snmpv1_default_community(corpus: Path, tmp_path: Path) -> None:
    findings = corpus_findings(corpus, tmp_path, "snmp/snmpv1_get.pcap")
    (snmp,) = [f for f in findings if f.check == "cleartext.snmp"]
    events = pq.read_table(tmp_path / "snmpv1_get" / "events" / "snmp.parquet").to_pylist()
    assert snmp.count == len({e["flow_id"] for e in events})
    assert snmp.severity == Severity.HIGH
    assert all(e["default_community"] for e in events)
    traps = corpus_findings(corpus, tmp_path, "snmp/snmpv1_trap.pcap")
    assert [f.port for f in traps if f.check == "cleartext.snmp"] == [162]


def test_corpus_tls_1_0_with_weak_certificate(corpus: Path, tmp_path: Path) -> None:
    findings = corpus_findings(corpus, tmp_path, "tls/ssl.v3.pcap")
    checks = {f.check: f for f in findings}
    hello = pq.read_table(tmp_path / "ssl.v3" / "events" / "tls_server_hello.parquet").to_pylist()
    assert checks["tls.old_protocol"].count == len(
        {h["flow_id"] for h in hello if h["selected_version"] < 0x0303}
    )
    certs = pq.read_table(tmp_path / "ssl.v3" / "events" / "tls_certificate.parquet").to_pylist()
    leaves = [c for c in certs if c["chain_index"] == 0]
    assert ("tls.weak_key" in checks) == any(c["key_bits"] < 2048 for c in leaves)
    assert "tls.self_signed_certificate" not in checks


def test_corpus_mqtt_without_authentication(corpus: Path, tmp_path: Path) -> None:
    findings = corpus_findings(corpus, tmp_path, "mqtt/mqtt.pcap")
    connects = pq.read_table(tmp_path / "mqtt" / "events" / "mqtt_connect.parquet").to_pylist()
    anonymous = {c["resp_h"] for c in connects if not c["username_present"] and c["return_code"] == 0}
    no_auth = [f for f in findings if f.check == "cleartext.mqtt_no_auth"]
    assert len(no_auth) == len(anonymous) >= 1


def test_corpus_self_talk_is_not_exposure(corpus: Path, tmp_path: Path) -> None:
    # modbusSmall's flows go from an address to itself (an anonymised capture): nothing is exposed.
    findings = corpus_findings(corpus, tmp_path, "modbus/modbusSmall.pcap")
    assert not [f for f in findings if f.check.startswith("exposure.")]


# ---------------------------------------------------------------------- settings, data file, inputs


def test_settings_change_the_verdicts(plant: Analysis) -> None:
    internal = check_configurations(plant.out, ConfigSettings(internal_networks=("93.184.216.0/24",)))
    assert not [f for f in internal if f.check in ("exposure.ot_from_internet", "exposure.internet")]
    assert [f.device_id for f in internal if f.check == "exposure.ot_from_it"] == [plant.device(MODBUS_PLC)]
    chosen = check_configurations(plant.out, ConfigSettings(checks=frozenset({"cleartext.telnet"})))
    assert [(f.check, f.device_id) for f in chosen] == sorted(
        ("cleartext.telnet", plant.device(m)) for m in (TELNET_PLC, CAMERA, NO_PASSWORD_GW)
    )
    strict = check_configurations(plant.out, ConfigSettings(min_ec_bits=384))
    weak = {f.device_id: f.details["observed"] for f in strict if f.check == "tls.weak_key"}
    assert weak[plant.device(SHA1_CERT)] == ["an ECDSA key of 256 bits"]
    assert weak[plant.device(BAD_CERT)] == ["an RSA key of 1024 bits"]
    few = check_configurations(plant.out, ConfigSettings(evidence_flows=1, max_peers=0))
    assert all(len(f.evidence) == 1 and f.peers == () for f in few)
    assert all(f.details["peer_count"] >= 1 for f in few if f.check != "exposure.internet")
    with pytest.raises(ConfigCheckError, match="unknown configuration checks"):
        ConfigSettings(checks=frozenset({"cleartext.gopher"}))
    with pytest.raises(ConfigCheckError, match="invalid network"):
        ConfigSettings(internal_networks=("10.0.0.0/33",))


def test_default_credential_file() -> None:
    credentials = load_default_credentials()
    assert credentials is DefaultCredentials.load()  # the dissectors' lists, read once per process
    mirai = next(item for item in credentials.lists if item.name == "mirai")
    assert len(mirai.credentials) == len(set(mirai.credentials)) == 60
    assert ("root", "xc3511") in mirai.credentials
    assert [item.name for item in credentials.lists_with_pair("root", "vizxv")] == ["mirai"]
    assert {"schneider-electric", "siemens", "moxa"} <= {item.name for item in credentials.lists}
    assert all(item.vendor for item in credentials.lists if item.name not in ("mirai", "emqx"))
    assert not (REPO / "src" / "fieldward" / "assess" / "data" / "default_credentials.yaml").exists()


def test_default_credential_matching() -> None:
    credentials = DefaultCredentials.load()
    assert credentials.match("admin", "admin") == ("mirai", "siemens", "dahua")  # file order
    assert credentials.label(b"admin", b"admin") == "mirai,siemens,dahua"  # bytes as on the wire
    assert credentials.match("admin", "") == ("mirai", "moxa")  # an empty password is a pair too
    assert credentials.match("Admin", "admin") == ()
    assert credentials.label("admin", "Admin") is None
    assert credentials.match("root", "xc3511 ") == ()  # exact, byte for byte
    assert [item.name for item in credentials.named("moxa,unknown,emqx")] == ["moxa", "emqx"]
    site = DefaultCredentials.parse(
        'format: 1\nlists:\n  - name: site\n    credentials: [[ops, "Grüße1"]]\n', "site.yaml"
    )
    assert site.match("ops", "Grüße1".encode()) == ("site",) == site.match("ops", "Grüße1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("format: 2\nlists: []\n", "not a default credential file"),
        ("format: 1\nlists:\n  - vendor: x\n", "has no name"),
        ("format: 1\nlists:\n  - name: a,b\n    credentials: []\n", "holds a comma"),
        ("format: 1\nlists:\n  - {name: a, credentials: []}\n  - {name: a, credentials: []}\n", "repeated"),
        ("format: 1\nlists:\n  - {name: a, credentials: [[u, Pw9secret, x]]}\n", "pairs"),
        ("format: 1\nlists: [\n", "not valid YAML"),
    ],
)
def test_bad_credential_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "creds.yaml"
    path.write_text(text)
    with pytest.raises(CredentialFileError, match=message) as raised:
        DefaultCredentials.load(path)
    assert "Pw9secret" not in str(raised.value)  # errors never quote a password
    with pytest.raises(ConfigCheckError, match=message):
        load_default_credentials(path)


def test_bad_inputs(tmp_path: Path, plant: Analysis) -> None:
    with pytest.raises(ConfigCheckError, match="not an analysis folder"):
        check_configurations(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_configurations(empty) == []
    (empty / "devices.json").write_text("{not json")
    with pytest.raises(ConfigCheckError, match=r"devices\.json"):
        check_configurations(empty)
    (empty / "devices.json").write_text('{"summary": {}, "devices": []}')
    (empty / "flows.parquet").write_bytes(b"PAR1 not parquet")
    with pytest.raises(ConfigCheckError, match=r"flows\.parquet"):
        check_configurations(empty)
    bad = tmp_path / "creds.yaml"
    bad.write_text("format: 1\nlists:\n  - name: x\n    credentials: [[only-user]]\n")
    with pytest.raises(ConfigCheckError, match="pairs"):
        load_default_credentials(bad)
    # An events file without the columns a check needs skips that check only.
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "events").mkdir()
    for name in ("devices.json", "flows.parquet"):
        (copy / name).write_bytes((plant.out / name).read_bytes())
    pq.write_table(pa.table({"flow_id": [1]}), copy / "events" / "rfb.parquet")
    checks = {f.check for f in check_configurations(copy)}
    assert "remote.vnc_no_auth" not in checks
    assert "cleartext.telnet" in checks


def test_documentation_lists_every_check_and_setting() -> None:
    text = DOC.read_text()
    for name in CHECKS:
        assert f"`{name}`" in text, name
    for name in ConfigSettings.__dataclass_fields__:
        assert f"`{name}`" in text, name
