"""Threats and IoT malware alerts from real bytes (scapy, the generator's encoders, real TLS handshakes
with certificates made by ``cryptography``), golden checks against the shared corpus with tshark, and
what must not fire on a clean generated plant."""

from __future__ import annotations

import datetime
import hashlib
import json
import ssl
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from scapy.asn1.asn1 import ASN1_OID
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.snmp import SNMP, SNMPget, SNMPresponse, SNMPvarbind
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from fieldward.detect.engine import DetectionContext, DetectionEngine
from fieldward.detect.intel import IntelError
from fieldward.detect.settings import DetectionSettings, ThreatSettings
from fieldward.detect.threats import ALL_TYPES, ThreatDetector, densest, entropy, parent_domain
from fieldward.generator import GeneratorConfig, generate_capture
from fieldward.generator import protocols as p
from fieldward.pipeline import AnalysisOptions, analyze
from tests.inventory.helpers import tcp_session
from tests.protocols.test_tls import Pki, real_session

START = 1_718_000_000.0  # 2024-06-10, inside the validity of the certificates made below
BOT = ("00:0c:29:66:66:66", "10.20.0.99")
CAMERA = ("44:19:b6:24:e7:3d", "10.20.0.12")
HMI = ("9c:8e:99:4a:4f:93", "10.10.2.10")
PLC = ("00:80:f4:d6:59:f8", "10.10.1.10")
GATEWAY = ("00:90:e8:1f:2f:9a", "10.10.1.1")
RESOLVER = ("ec:f4:bb:de:67:48", "10.10.3.10")
SECRET = b"xc3511"


# ----------------------------------------------------------------------------------------- helpers


def run(
    tmp_path: Path,
    packets: Sequence[Packet],
    *,
    settings: DetectionSettings | None = None,
    learn: Sequence[Packet] = (),
    step: float = 0.01,
    name: str = "built",
) -> list[dict[str, Any]]:
    """Analyse ``packets`` (``step`` s apart unless they carry ``_timed``) and return the alerts."""
    capture = write(tmp_path / f"{name}.pcap", packets, step)
    learned = (write(tmp_path / f"{name}-learn.pcap", learn, step, START - 3600),) if learn else ()
    options = AnalysisOptions(detection=settings or DetectionSettings(), learn_captures=learned)
    out = tmp_path / f"{name}-out"
    analyze([capture], out, options)
    return [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]


def write(path: Path, packets: Sequence[Packet], step: float, start: float = START) -> Path:
    for index, packet in enumerate(packets):
        if not getattr(packet, "_timed", False):
            packet.time = start + index * step
    wrpcap(str(path), list(packets))
    return path


def at(when: float, packet: Packet) -> Packet:
    packet.time = START + when
    packet._timed = True
    return packet


def threats(alerts: list[dict[str, Any]], name: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(a["src"], a["dst"], a["protocol"]): a for a in alerts if a["type"] == f"threats.{name}"}


def kinds(alerts: list[dict[str, Any]]) -> set[str]:
    return {a["type"] for a in alerts if a["engine"] == "threats"}


def no_secret_anywhere(out: Path, *secrets: bytes) -> None:
    """No output file of the run holds a password: alerts, baseline, summary, any events table."""
    for path in out.rglob("*"):
        if path.suffix in (".jsonl", ".json"):
            data = path.read_bytes()
            assert not any(s in data for s in secrets), path
        elif path.suffix == ".parquet":
            for row in pq.read_table(path).to_pylist():
                text = json.dumps(row, default=str).encode()
                assert not any(s in text for s in secrets), path


# ------------------------------------------------------------------------------------ brute force


def telnet_attempt(user: bytes, password: bytes) -> list[tuple[bool, bytes]]:
    return [
        (False, b"\r\ncam-01 login: "),
        (True, user + b"\r\n"),
        (False, user + b"\r\nPassword: "),
        (True, password + b"\r\n"),
        (False, b"\r\nLogin incorrect\r\ncam-01 login: "),
    ]


MIRAI = [(b"root", SECRET), (b"admin", b"admin"), (b"root", b"vizxv"), (b"support", b"support")] * 3


def test_mirai_telnet_brute_force_and_cleartext_passwords(tmp_path: Path) -> None:
    packets: list[Packet] = []
    for n, (user, password) in enumerate(MIRAI):
        packets += tcp_session(BOT, CAMERA, 23, telnet_attempt(user, password), cport=40000 + n)
    alerts = run(tmp_path, packets)
    (brute,) = threats(alerts, "brute_force").values()
    assert (brute["src"], brute["dst"], brute["protocol"]) == (BOT[1], CAMERA[1], "telnet")
    assert brute["details"]["failed_logins"] == len(MIRAI)
    assert brute["details"]["short_connections"] == len(MIRAI)
    assert brute["details"]["usernames"] == ["admin", "root", "support"]
    assert brute["severity"] == "high"
    assert brute["mitre"] == ["T0812", "T1110"]
    assert brute["evidence"][0]["flow_id"] >= 0
    clear = threats(alerts, "cleartext_credentials")[(BOT[1], CAMERA[1], "telnet")]
    assert clear["count"] == len(MIRAI)
    assert clear["details"] == {"username": "root"}
    no_secret_anywhere(tmp_path / "built-out", SECRET, b"vizxv")  # the passwords that are no user name


def test_a_few_failures_are_not_a_brute_force(tmp_path: Path) -> None:
    packets: list[Packet] = []
    for n, (user, password) in enumerate(MIRAI[:4]):
        packets += tcp_session(BOT, CAMERA, 23, telnet_attempt(user, password), cport=40000 + n)
    alerts = run(tmp_path, packets)
    assert "threats.brute_force" not in kinds(alerts)
    assert "threats.cleartext_credentials" in kinds(alerts)


def ssh_flights(client: bytes) -> list[tuple[bool, bytes]]:
    return [(False, b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3\r\n"), (True, b"SSH-2.0-" + client + b"\r\n")]


def test_ssh_brute_force_from_short_connections(tmp_path: Path) -> None:
    packets: list[Packet] = []
    for n in range(12):
        packets += tcp_session(BOT, CAMERA, 22, ssh_flights(b"libssh_0.9.6"), cport=41000 + n)
    (brute,) = threats(run(tmp_path, packets), "brute_force").values()
    assert brute["protocol"] == "ssh"
    assert brute["details"]["short_connections"] == 12
    assert brute["details"]["max_connections_in_window"] == 12
    assert brute["details"]["ssh_client"] == "libssh_0.9.6"
    assert "usernames" not in brute["details"]


def test_long_or_spread_out_ssh_sessions_are_not_a_brute_force(tmp_path: Path) -> None:
    """Twelve admin sessions of 40 s each, and twelve short ones an hour apart: neither is a burst."""
    packets: list[Packet] = []
    for n in range(12):
        session = tcp_session(HMI, PLC, 22, ssh_flights(b"OpenSSH_9.6"), cport=42000 + n)
        for k, packet in enumerate(session):
            at(n * 50 + (40 if k >= len(session) - 3 else k * 0.01), packet)
        packets += session
    for n in range(12):
        session = tcp_session(BOT, CAMERA, 22, ssh_flights(b"libssh_0.9.6"), cport=43000 + n)
        for k, packet in enumerate(session):
            at(n * 3600 + k * 0.01, packet)
        packets += session
    assert "threats.brute_force" not in kinds(run(tmp_path, sorted(packets, key=lambda x: float(x.time))))


def syn(src: tuple[str, str], dst_ip: str, port: int, sport: int) -> Packet:
    return (
        Ether(src=src[0], dst=GATEWAY[0])
        / IP(src=src[1], dst=dst_ip)
        / TCP(sport=sport, dport=port, flags="S")
    )


def test_mirai_telnet_scanning(tmp_path: Path) -> None:
    packets = [syn(BOT, f"10.20.0.{h}", 23 if h % 3 else 2323, 50000 + h) for h in range(100, 112)]
    packets += [syn(HMI, f"10.10.1.{h}", 23, 50000 + h) for h in range(100, 109)]  # 9 hosts: below
    found = threats(run(tmp_path, packets), "telnet_scan")
    assert list(found) == [(BOT[1], "*:23", "telnet")]
    assert found[(BOT[1], "*:23", "telnet")]["details"]["hosts"] == 12


# ---------------------------------------------------------------------------- cleartext logins


def test_ftp_failures_and_password_in_clear_but_not_anonymous(tmp_path: Path) -> None:
    flights: list[tuple[bool, bytes]] = [(False, b"220 PLC FTP server ready\r\n")]
    for n in range(6):
        flights += [
            (True, b"USER admin\r\n"),
            (False, b"331 Password required for admin\r\n"),
            (True, b"PASS hunter%d\r\n" % n),
            (False, b"530 Login incorrect.\r\n"),
        ]
    packets = tcp_session(BOT, PLC, 21, flights)
    anonymous = [
        (False, b"220 ready\r\n"),
        (True, b"USER anonymous\r\n"),
        (False, b"331 Guest login ok, send your e-mail as password\r\n"),
        (True, b"PASS guest@example.com\r\n"),
        (False, b"230 Guest login ok\r\n"),
    ]
    packets += tcp_session(HMI, PLC, 21, anonymous, cport=51000)
    alerts = run(tmp_path, packets)
    clear = threats(alerts, "cleartext_credentials")
    assert list(clear) == [(BOT[1], PLC[1], "ftp")]
    assert clear[(BOT[1], PLC[1], "ftp")]["count"] == 6
    assert clear[(BOT[1], PLC[1], "ftp")]["details"]["username"] == "admin"
    brute = threats(alerts, "brute_force")[(BOT[1], PLC[1], "ftp")]
    assert brute["details"]["failed_logins"] == 6
    assert "short_connections" in brute["details"]
    no_secret_anywhere(tmp_path / "built-out", b"hunter0", b"hunter5")


def test_http_basic_authorization_and_401_storm(tmp_path: Path) -> None:
    token = b"YWRtaW46UGw0bnQtMjAyNA=="  # base64 of admin:Pl4nt-2024
    flights: list[tuple[bool, bytes]] = []
    for _ in range(5):
        flights += [
            (True, b"GET /config HTTP/1.1\r\nHost: plc-01\r\nAuthorization: Basic " + token + b"\r\n\r\n"),
            (False, b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n"),
        ]
    alerts = run(tmp_path, tcp_session(BOT, PLC, 80, flights))
    clear = threats(alerts, "cleartext_credentials")[(BOT[1], PLC[1], "http")]
    assert clear["count"] == 5
    assert clear["details"] == {}
    assert threats(alerts, "brute_force")[(BOT[1], PLC[1], "http")]["details"]["failed_logins"] == 5
    no_secret_anywhere(tmp_path / "built-out", token, b"Pl4nt-2024")


def test_mqtt_password_and_refused_logins(tmp_path: Path) -> None:
    broker = ("00:90:e8:31:92:af", "10.20.0.10")
    packets: list[Packet] = []
    for n in range(6):
        connect = p.mqtt_connect(f"bot-{n}", 60, "admin", "Br0ker-Secret")
        packets += tcp_session(
            BOT, broker, 1883, [(True, connect), (False, p.mqtt_connack(5))], cport=45000 + n
        )
    packets += tcp_session(
        CAMERA, broker, 1883, [(True, p.mqtt_connect("cam", 60)), (False, p.mqtt_connack(0))]
    )
    alerts = run(tmp_path, packets)
    assert list(threats(alerts, "cleartext_credentials")) == [(BOT[1], broker[1], "mqtt")]
    assert threats(alerts, "brute_force")[(BOT[1], broker[1], "mqtt")]["details"]["failed_logins"] == 6
    no_secret_anywhere(tmp_path / "built-out", b"Br0ker-Secret")


def snmp_exchange(manager: tuple[str, str], agent: tuple[str, str], community: bytes, n: int) -> list[Packet]:
    packets = []
    oid = SNMPvarbind(oid=ASN1_OID("1.3.6.1.2.1.1.1.0"))
    for i in range(n):
        for request, (a, b) in ((True, (manager, agent)), (False, (agent, manager))):
            pdu = SNMPget(id=i, varbindlist=[oid]) if request else SNMPresponse(id=i, varbindlist=[oid])
            ports = (40161, 161) if request else (161, 40161)
            packets.append(
                Ether(src=a[0], dst=b[0])
                / IP(src=a[1], dst=b[1])
                / UDP(sport=ports[0], dport=ports[1])
                / SNMP(version=1, community=community, PDU=pdu)
            )
    return packets


def test_snmp_community_counts_requests_not_answers(tmp_path: Path) -> None:
    packets = snmp_exchange(HMI, PLC, b"public", 3) + snmp_exchange(HMI, GATEWAY, b"Zx9-ops", 2)
    alerts = run(tmp_path, packets)
    found = threats(alerts, "snmp_cleartext_community")
    assert set(found) == {(HMI[1], PLC[1], "snmp"), (HMI[1], GATEWAY[1], "snmp")}
    assert found[(HMI[1], PLC[1], "snmp")]["count"] == 3
    assert found[(HMI[1], PLC[1], "snmp")]["details"] == {"version": "v2c", "default_string": True}
    assert found[(HMI[1], GATEWAY[1], "snmp")]["details"]["default_string"] is False
    no_secret_anywhere(tmp_path / "built-out", b"Zx9-ops")
    off = DetectionSettings(threats=ThreatSettings(snmp_community=False))
    assert "threats.snmp_cleartext_community" not in kinds(run(tmp_path, packets, settings=off, name="off"))


def test_cleartext_logins_seen_while_learning_are_not_alerts(tmp_path: Path) -> None:
    """A site that has always used MQTT passwords learns it; a new client doing it still alerts."""
    broker = ("00:90:e8:31:92:af", "10.20.0.10")

    def login(client: tuple[str, str], cport: int) -> list[Packet]:
        return tcp_session(
            client,
            broker,
            1883,
            [(True, p.mqtt_connect("s", 60, "u", "pw")), (False, p.mqtt_connack(0))],
            cport=cport,
        )

    alerts = run(tmp_path, login(CAMERA, 46000) + login(BOT, 46001), learn=login(CAMERA, 47000))
    assert list(threats(alerts, "cleartext_credentials")) == [(BOT[1], broker[1], "mqtt")]


# ----------------------------------------------------------------------------------------- ARP


def arp_reply(mac: str, ip: str, to: tuple[str, str]) -> Packet:
    return Ether(src=mac, dst=to[0]) / ARP(op=2, hwsrc=mac, psrc=ip, hwdst=to[0], pdst=to[1])


def announcement(mac: str, ip: str) -> Packet:
    return Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=mac, psrc=ip, hwdst="00:00:00:00:00:00", pdst=ip
    )


ATTACKER = "8c:16:45:f5:11:d8"


def test_arp_spoofing_flags_the_newcomer_not_the_owner(tmp_path: Path) -> None:
    packets = [at(0, arp_reply(GATEWAY[0], GATEWAY[1], PLC)), at(1, arp_reply(PLC[0], PLC[1], GATEWAY))]
    for n in range(10):  # arpspoof: both directions every 2 s
        packets.append(at(5 + 2 * n, arp_reply(ATTACKER, GATEWAY[1], PLC)))
        packets.append(at(5.1 + 2 * n, arp_reply(ATTACKER, PLC[1], GATEWAY)))
    packets.append(at(8.5, arp_reply(GATEWAY[0], GATEWAY[1], PLC)))  # the real gateway answers again
    alerts = run(tmp_path, sorted(packets, key=lambda x: float(x.time)))
    found = threats(alerts, "arp_spoofing")
    assert set(found) == {(ATTACKER, GATEWAY[1], "arp"), (ATTACKER, PLC[1], "arp")}
    assert found[(ATTACKER, GATEWAY[1], "arp")]["count"] == 10
    assert found[(ATTACKER, GATEWAY[1], "arp")]["details"]["previous_mac"] == GATEWAY[0]
    assert found[(ATTACKER, GATEWAY[1], "arp")]["mitre"] == ["T0830", "T1557.002"]
    assert found[(ATTACKER, GATEWAY[1], "arp")]["src_device"] == f"mac:{ATTACKER}"  # the spoofer's device
    assert kinds(alerts) == {"threats.arp_spoofing"}


def test_address_moving_after_a_long_silence_is_not_spoofing(tmp_path: Path) -> None:
    packets = [
        at(0, announcement("00:1d:9c:54:e3:9e", "10.10.1.50")),
        at(4000, announcement(ATTACKER, "10.10.1.50")),
    ]
    assert run(tmp_path, packets) == []


def test_learned_arp_bindings_do_not_alert(tmp_path: Path) -> None:
    """Two routers sharing a virtual address (VRRP style) both claim it; learned, that is normal."""
    other = "00:90:e8:aa:bb:cc"
    traffic = [arp_reply(GATEWAY[0], GATEWAY[1], PLC), arp_reply(other, GATEWAY[1], PLC)] * 3
    alerts = run(
        tmp_path, traffic, learn=[arp_reply(GATEWAY[0], GATEWAY[1], PLC), arp_reply(other, GATEWAY[1], PLC)]
    )
    assert "threats.arp_spoofing" not in kinds(alerts)
    alerts = run(
        tmp_path, [arp_reply(GATEWAY[0], GATEWAY[1], PLC), arp_reply(other, GATEWAY[1], PLC)] * 3, name="cold"
    )
    assert list(threats(alerts, "arp_spoofing")) == [(other, GATEWAY[1], "arp")]


def test_gratuitous_arp_flood(tmp_path: Path) -> None:
    packets = [announcement(ATTACKER, "10.20.0.77") for _ in range(40)]
    packets += [announcement(CAMERA[0], CAMERA[1]) for _ in range(3)]  # a DHCP client's announcements
    (flood,) = threats(run(tmp_path, packets, step=0.5), "arp_gratuitous_flood").values()
    assert flood["src"] == ATTACKER
    assert flood["details"] == {"messages": 30, "window_s": 60.0}


def test_one_mac_claiming_many_addresses_of_a_subnet(tmp_path: Path) -> None:
    packets = [arp_reply(ATTACKER, f"10.10.1.{h}", PLC) for h in range(100, 107)]
    # a router with one MAC and an interface in six subnets claims one address in each: normal
    packets += [arp_reply(GATEWAY[0], f"10.10.{s}.1", PLC) for s in range(1, 7)]
    found = threats(run(tmp_path, packets), "arp_mac_many_ips")
    assert list(found) == [(ATTACKER, "10.10.1.0/24", "arp")]
    assert len(found[(ATTACKER, "10.10.1.0/24", "arp")]["details"]["ips"]) == 5


# ---------------------------------------------------------------------------------------- DHCP

LEGIT_DHCP = ("00:90:e8:05:a5:af", "10.20.0.1")
ROGUE_DHCP = ("b8:27:eb:12:34:56", "10.20.0.66")


def dhcp_reply(server: tuple[str, str], client_mac: str, offered: str, kind: str, xid: int) -> Packet:
    message = BOOTP(
        op=2, xid=xid, yiaddr=offered, siaddr=server[1], chaddr=bytes.fromhex(client_mac.replace(":", ""))
    )
    message /= DHCP(
        options=[
            ("message-type", kind),
            ("server_id", server[1]),
            ("subnet_mask", "255.255.255.0"),
            ("router", server[1]),
            ("name_server", server[1]),
            ("lease_time", 3600),
            "end",
        ]
    )
    frame = Ether(src=server[0], dst="ff:ff:ff:ff:ff:ff") / IP(src=server[1], dst="255.255.255.255")
    packet = frame / UDP(sport=67, dport=68) / message
    return packet / Raw(b"\x00" * max(0, 342 - len(packet)))


def test_a_second_dhcp_server_in_a_subnet_is_rogue(tmp_path: Path) -> None:
    packets = [
        dhcp_reply(LEGIT_DHCP, CAMERA[0], "10.20.0.12", "offer", 1),
        dhcp_reply(LEGIT_DHCP, CAMERA[0], "10.20.0.12", "ack", 1),
        dhcp_reply(ROGUE_DHCP, "00:30:af:d2:02:3b", "10.20.0.200", "offer", 2),
        dhcp_reply(ROGUE_DHCP, "00:30:af:d2:02:3b", "10.20.0.200", "ack", 2),
        dhcp_reply(LEGIT_DHCP, "00:30:af:d2:02:3c", "10.20.0.13", "offer", 3),
    ]
    found = threats(run(tmp_path, packets), "rogue_dhcp_server")
    assert list(found) == [(ROGUE_DHCP[1], "10.20.0.0/24", "dhcp")]
    alert = found[(ROGUE_DHCP[1], "10.20.0.0/24", "dhcp")]
    assert alert["count"] == 2
    assert alert["details"]["routers"] == [ROGUE_DHCP[1]]
    assert "besides 10.20.0.1" in alert["explanation"]


def test_dhcp_server_against_the_learned_baseline(tmp_path: Path) -> None:
    learn = [dhcp_reply(LEGIT_DHCP, CAMERA[0], "10.20.0.12", "ack", 1)]
    rogue_alone = [dhcp_reply(ROGUE_DHCP, CAMERA[0], "10.20.0.201", "offer", 9)]
    found = threats(run(tmp_path, rogue_alone, learn=learn), "rogue_dhcp_server")
    assert list(found) == [(ROGUE_DHCP[1], "10.20.0.0/24", "dhcp")]
    assert (
        "not a DHCP server of the baseline (10.20.0.1)"
        in found[(ROGUE_DHCP[1], "10.20.0.0/24", "dhcp")]["explanation"]
    )
    legit_alone = [dhcp_reply(LEGIT_DHCP, CAMERA[0], "10.20.0.12", "ack", 5)]
    assert run(tmp_path, legit_alone, learn=learn, name="legit") == []


# ----------------------------------------------------------------------------------------- DNS


def query(client: tuple[str, str], name: str, qtype: str = "A", n: int = 0) -> Packet:
    return (
        Ether(src=client[0], dst=RESOLVER[0])
        / IP(src=client[1], dst=RESOLVER[1])
        / UDP(sport=30000 + n % 30000, dport=53)
        / DNS(id=n % 65536, rd=1, qd=DNSQR(qname=name, qtype=qtype))
    )


def test_dns_tunnelling_three_ways(tmp_path: Path) -> None:
    packets = [
        query(HMI, f"{hashlib.sha256(b'%d' % i).hexdigest()[:56]}.{i}.t.tunnel-one.net", n=i)
        for i in range(25)
    ]
    packets += [query(PLC, f"h{i}.many-subs.com", n=100 + i) for i in range(210)]
    packets += [query(CAMERA, "status.txt-channel.org", "TXT", n=400 + i) for i in range(55)]
    alerts = run(tmp_path, packets)
    found = threats(alerts, "dns_tunneling")
    assert set(found) == {
        (HMI[1], "tunnel-one.net", "dns"),
        (PLC[1], "many-subs.com", "dns"),
        (CAMERA[1], "txt-channel.org", "dns"),
    }
    long_names = found[(HMI[1], "tunnel-one.net", "dns")]["details"]
    assert (long_names["queries"], long_names["suspicious_queries"], long_names["longest_label"]) == (
        25,
        25,
        56,
    )
    assert long_names["reasons"] == ["25 queries with long or random-looking names"]
    assert found[(PLC[1], "many-subs.com", "dns")]["details"]["reasons"] == ["200 distinct subdomains"]
    assert found[(CAMERA[1], "txt-channel.org", "dns")]["details"]["txt_null_queries"] == 55
    assert found[(CAMERA[1], "txt-channel.org", "dns")]["mitre"] == ["T0869", "T1071.004"]


def test_ordinary_dns_is_not_tunnelling(tmp_path: Path) -> None:
    names = ["plc-01.plant.local", "historian.plant.local", "www.example.com", "ctldl.windowsupdate.com"]
    packets = [query(HMI, name, n=i) for i in range(40) for name in names]
    packets += [query(HMI, f"{i}.1.10.10.in-addr.arpa", "PTR", n=2000 + i) for i in range(250)]
    packets += [query(PLC, f"{'ab12' * 14}.{i}.t.almost.net", n=3000 + i) for i in range(19)]  # one short
    assert "threats.dns_tunneling" not in kinds(run(tmp_path, packets))


def test_parent_domain_and_entropy() -> None:
    assert parent_domain("a.b.example.com") == "example.com"
    assert parent_domain("x.example.co.uk") == "example.co.uk"
    assert parent_domain("x.example.de") == "example.de"
    assert entropy("aaaa") == 0.0
    assert entropy("abcd") == 2.0
    assert densest([(5, 1), (0, 0), (100, 2), (3, 3)], 10) == (3, 0, 0)


# ----------------------------------------------------------------------------------------- TLS


def make_pki(tmp_path: Path, name: str, *, self_signed: bool, valid: tuple[int, int] = (2024, 2026)) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    start = datetime.datetime(valid[0], 1, 1, tzinfo=datetime.UTC)
    end = datetime.datetime(valid[1], 1, 1, tzinfo=datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    if self_signed:
        issuer, signer, ca_pem = subject, key, b""
        ca_der = b""
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Public Test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(issuer)
            .issuer_name(issuer)
            .public_key(ca_key.public_key())
            .serial_number(7)
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        signer, ca_pem = ca_key, ca.public_bytes(serialization.Encoding.PEM)
        ca_der = ca.public_bytes(serialization.Encoding.DER)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    folder = tmp_path / f"pki-{name}-{valid[1]}"
    folder.mkdir()
    chain, key_file = folder / "chain.pem", folder / "key.pem"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca_pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Pki(chain, key_file, leaf.public_bytes(serialization.Encoding.DER), ca_der)


def tls_session(client: tuple[str, str], server: tuple[str, str], pki: Pki, cport: int) -> list[Packet]:
    flights = real_session(
        pki, max_version=ssl.TLSVersion.TLSv1_2, client_alpn=["http/1.1"], server_alpn=["http/1.1"]
    )
    return tcp_session(client, server, 443, flights, cport=cport)


INTERNET = ("00:90:e8:1f:2f:9a", "93.184.216.34")  # via the gateway's MAC, as routed traffic is


def test_self_signed_certificate_from_an_internet_server(tmp_path: Path) -> None:
    rogue = make_pki(tmp_path, "c2.example.net", self_signed=True)
    public = make_pki(tmp_path, "www.example.org", self_signed=False)
    internal = ("00:1d:9c:54:e3:9e", "10.10.1.5")
    packets = tls_session(HMI, INTERNET, rogue, 44001)
    packets += tls_session(HMI, ("00:90:e8:1f:2f:9a", "151.101.1.69"), public, 44002)
    packets += tls_session(HMI, internal, rogue, 44003)  # self-signed inside the plant: usual for OT
    alerts = run(tmp_path, packets)
    found = threats(alerts, "tls_self_signed_external")
    assert list(found) == [(HMI[1], INTERNET[1], "tls")]
    alert = found[(HMI[1], INTERNET[1], "tls")]
    assert alert["details"]["sha256"] == hashlib.sha256(rogue.leaf_der).hexdigest()
    assert "CN=c2.example.net" in alert["details"]["subject"]
    assert "threats.tls_expired_certificate" not in kinds(alerts)


def test_expired_certificate_is_information(tmp_path: Path) -> None:
    old = make_pki(tmp_path, "hmi.plant.local", self_signed=False, valid=(2020, 2022))
    internal = ("00:1d:9c:54:e3:9e", "10.10.1.5")
    (alert,) = threats(
        run(tmp_path, tls_session(HMI, internal, old, 44010)), "tls_expired_certificate"
    ).values()
    assert alert["severity"] == "info"
    assert alert["details"]["not_valid_after"] == int(
        datetime.datetime(2022, 1, 1, tzinfo=datetime.UTC).timestamp()
    )


# --------------------------------------------------------------------------------- threat intel


def intel_traffic(tmp_path: Path) -> tuple[list[Packet], Pki]:
    rogue = make_pki(tmp_path, "c2.example.net", self_signed=True)
    answer = (
        Ether(src=RESOLVER[0], dst=HMI[0])
        / IP(src=RESOLVER[1], dst=HMI[1])
        / UDP(sport=53, dport=30001)
        / DNS(
            id=1,
            qr=1,
            rd=1,
            ra=1,
            qd=DNSQR(qname="cdn.evil.example"),
            an=[
                DNSRR(rrname="cdn.evil.example", type="CNAME", rdata="edge.evil.example"),
                DNSRR(rrname="edge.evil.example", type="A", rdata="198.51.100.7"),
            ],
        )
    )
    packets = [query(HMI, "cdn.evil.example", n=1), answer]
    http = [
        (True, b"GET /drop/x.bin HTTP/1.1\r\nHost: dl.bad.example:8080\r\n\r\n"),
        (False, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    ]
    packets += tcp_session(PLC, ("00:90:e8:1f:2f:9a", "203.0.113.10"), 8080, http, cport=52000)
    packets += tls_session(HMI, ("00:90:e8:1f:2f:9a", "198.51.100.7"), rogue, 52001)
    return packets, rogue


def test_intel_matches_flows_dns_tls_and_http(tmp_path: Path) -> None:
    packets, rogue = intel_traffic(tmp_path)
    run(tmp_path, packets, name="plain")  # no intel: learn our own JA3 from the dissector's events
    (hello,) = pq.read_table(tmp_path / "plain-out" / "events" / "tls_client_hello.parquet").to_pylist()
    feed = tmp_path / "feed.csv"
    feed.write_text(
        "type,value,description\n"
        "ip,198.51.100.7,C2 server\n"
        "cidr,203.0.113.0/24,bulletproof hosting\n"
        "domain,evil.example,C2 domain\n"
        "domain,bad.example,\n"
        "url,http://dl.bad.example:8080/drop/x.bin,dropper\n"
        f"ja3,{hello['ja3']},tool fingerprint\n"
        f"x509_sha256,{hashlib.sha256(rogue.leaf_der).hexdigest()},C2 certificate\n"
    )
    alerts = run(tmp_path, packets, settings=DetectionSettings(intel_files=(feed,)))
    got = {
        (a["type"].split(".")[1], a["src"], a["dst"], a["protocol"], a["details"]["matched_in"])
        for a in alerts
        if a["type"].startswith("threats.intel")
    }
    assert got == {
        ("intel_domain", HMI[1], "cdn.evil.example", "dns", "DNS query"),
        ("intel_domain", HMI[1], "edge.evil.example", "dns", "DNS answer"),
        ("intel_ip", HMI[1], "198.51.100.7", "dns", "DNS answer"),
        ("intel_ip", HMI[1], "198.51.100.7", "tls", "flow destination address"),
        ("intel_ip", PLC[1], "203.0.113.10", "http", "flow destination address"),
        ("intel_domain", PLC[1], "203.0.113.10", "http", "HTTP host"),
        ("intel_url", PLC[1], "203.0.113.10", "http", "HTTP URL"),
        ("intel_tls_fingerprint", HMI[1], "198.51.100.7", "tls", "JA3"),
        ("intel_certificate", HMI[1], "198.51.100.7", "tls", "certificate"),
    }
    by_type = {a["type"]: a for a in alerts}
    cert = by_type["threats.intel_certificate"]
    assert cert["details"]["intel_name"] == "C2 certificate"
    assert cert["details"]["intel_source"] == "feed.csv:8"
    assert cert["evidence"][0]["flow_id"] >= 0
    # the same indicators as a STIX bundle raise the same alerts
    stix = tmp_path / "feed.json"
    patterns = [
        "[ipv4-addr:value = '198.51.100.7']",
        "[ipv4-addr:value ISSUBSET '203.0.113.0/24']",
        "[domain-name:value = 'evil.example'] OR [domain-name:value = 'bad.example']",
        "[url:value = 'http://dl.bad.example:8080/drop/x.bin']",
        f"[x-ja3:value = '{hello['ja3']}']",
        f"[x509-certificate:hashes.'SHA-256' = '{hashlib.sha256(rogue.leaf_der).hexdigest()}']",
    ]
    objects = [
        {"type": "indicator", "id": f"indicator--{n}", "pattern": pat, "pattern_type": "stix"}
        for n, pat in enumerate(patterns)
    ]
    stix.write_text(json.dumps({"type": "bundle", "id": "bundle--x", "objects": objects}))
    again = run(tmp_path, packets, settings=DetectionSettings(intel_files=(stix,)), name="stix")
    same = {
        (a["type"], a["src"], a["dst"], a["protocol"], a["count"])
        for a in again
        if a["type"].startswith("threats.intel")
    }
    assert same == {
        (a["type"], a["src"], a["dst"], a["protocol"], a["count"])
        for a in alerts
        if a["type"].startswith("threats.intel")
    }


def test_file_hashes_match_http_downloads_and_uploads(tmp_path: Path) -> None:
    """A trojanised firmware downloaded by the PLC (SHA-256 in a CSV feed), a tool uploaded to it
    (MD5 in a STIX bundle); a clean download with another body raises nothing."""
    firmware, tool, clean = b"\x7fELF trojan firmware" * 50, b"MZ dropper", b"genuine firmware image" * 50
    server = ("00:90:e8:1f:2f:9a", "203.0.113.10")

    def download(body: bytes, cport: int) -> list[Packet]:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        reply = head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        return tcp_session(
            PLC,
            server,
            80,
            [(True, b"GET /fw.bin HTTP/1.1\r\nHost: fw\r\n\r\n"), (False, reply)],
            cport=cport,
        )

    upload = (
        b"POST /up HTTP/1.1\r\nHost: plc\r\nContent-Length: " + str(len(tool)).encode() + b"\r\n\r\n" + tool
    )
    packets = download(firmware, 52100) + download(clean, 52101)
    packets += tcp_session(
        HMI, PLC, 80, [(True, upload), (False, b"HTTP/1.1 204 No Content\r\n\r\n")], cport=52102
    )
    feed = tmp_path / "hashes.csv"
    feed.write_text(f"sha256,{hashlib.sha256(firmware).hexdigest()},trojanised firmware\n")
    stix = tmp_path / "hashes.json"
    pattern = f"[file:hashes.MD5 = '{hashlib.md5(tool).hexdigest()}']"
    stix.write_text(
        json.dumps(
            {
                "type": "bundle",
                "id": "bundle--h",
                "objects": [
                    {
                        "type": "indicator",
                        "id": "indicator--h",
                        "pattern": pattern,
                        "pattern_type": "stix",
                        "name": "dropper",
                    }
                ],
            }
        )
    )
    alerts = run(tmp_path, packets, settings=DetectionSettings(intel_files=(feed, stix)))
    files = {
        (a["src"], a["dst"], a["details"]["matched_in"]): a
        for a in alerts
        if a["type"] == "threats.intel_file"
    }
    assert set(files) == {
        (PLC[1], server[1], "HTTP response body SHA256"),
        (HMI[1], PLC[1], "HTTP request body MD5"),
    }
    alert = files[(PLC[1], server[1], "HTTP response body SHA256")]
    assert (alert["severity"], alert["count"]) == ("critical", 1)
    assert alert["details"]["intel_name"] == "trojanised firmware"


def test_expired_indicators_do_not_match(tmp_path: Path) -> None:
    packets, _ = intel_traffic(tmp_path)
    feed = tmp_path / "old.json"
    indicator = {
        "type": "indicator",
        "id": "indicator--old",
        "pattern": "[domain-name:value = 'evil.example']",
        "valid_until": "2023-01-01T00:00:00Z",
    }
    feed.write_text(json.dumps(indicator))
    assert not kinds(run(tmp_path, packets, settings=DetectionSettings(intel_files=(feed,)))) & {
        "threats.intel_domain"
    }


def test_a_bad_intel_file_stops_the_analysis_before_reading(tmp_path: Path) -> None:
    feed = tmp_path / "bad.csv"
    feed.write_text("ip,198.51.100.7\nja3,nothex\n")
    context = DetectionContext(DetectionSettings(intel_files=(feed,)))
    with pytest.raises(IntelError, match=r"bad\.csv:2"):
        DetectionEngine([ThreatDetector], context=context)


# ------------------------------------------------------------------------------ golden: the corpus


def tshark_rows(tshark: str, capture: Path, *fields: str, display: str = "") -> list[list[str]]:
    command = [tshark, "-n", "-r", str(capture), "-T", "fields", *(a for f in fields for a in ("-e", f))]
    if display:
        command += ["-Y", display]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def corpus_alerts(
    corpus: Path, tmp_path: Path, capture: str, feed: Path | None = None
) -> list[dict[str, Any]]:
    settings = DetectionSettings(intel_files=(feed,) if feed else ())
    analyze([corpus / capture], tmp_path / "out", AnalysisOptions(detection=settings))
    return [json.loads(line) for line in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]


def test_corpus_http_against_tshark(corpus: Path, tshark: str, tmp_path: Path) -> None:
    capture = corpus / "http" / "bro.org.pcap"
    requests = tshark_rows(tshark, capture, "ip.src", "ip.dst", "http.host", display="http.request")
    ((client, server, host), _), *_ = Counter((src, dst, h) for src, dst, h in requests).most_common()
    # a domain indicator covers its subdomains: www.bro.org requests count too
    count = sum(
        1 for s, d, h in requests if (s, d) == (client, server) and (h == host or h.endswith("." + host))
    )
    streams = {row[0] for row in tshark_rows(tshark, capture, "tcp.stream", display=f"ip.addr == {server}")}
    feed = tmp_path / "feed.csv"
    feed.write_text(f"domain,{host}\nip,{server}\n")
    alerts = corpus_alerts(corpus, tmp_path, "http/bro.org.pcap", feed)
    domain = threats(alerts, "intel_domain")[(client, server, "http")]
    assert domain["count"] == count
    # one alert per protocol the flows spoke: http, and tcp for the connections that sent nothing
    flows = {
        key[2]: a["count"] for key, a in threats(alerts, "intel_ip").items() if key[:2] == (client, server)
    }
    assert sum(flows.values()) == len(streams)
    assert flows["http"] >= 1


def test_corpus_tls_fingerprints_against_tshark(corpus: Path, tshark: str, tmp_path: Path) -> None:
    capture = corpus / "tls" / "ssl.v3.pcap"
    hellos = tshark_rows(
        tshark,
        capture,
        "tls.handshake.ja3",
        "tls.handshake.version",
        "tls.handshake.cipherspec",
        display="tls.handshake.type == 1",
    )
    fingerprints = []
    for row in hellos:
        ja3, version, specs = [*row, "", "", ""][:3]
        if not ja3:  # tshark gives no JA3 for an SSLv2-compatible hello: build it from its fields
            ciphers = [int(c, 16) for c in specs.split(",") if c and int(c, 16) < 0x10000]
            text = f"{int(version, 16)},{'-'.join(map(str, ciphers))},,,"
            ja3 = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
        fingerprints.append(ja3)
    (ja3, count), *_ = Counter(fingerprints).most_common()
    certs = tshark_rows(tshark, capture, "tls.handshake.certificate", display="tls.handshake.type == 11")
    leaf = bytes.fromhex(certs[0][0].split(",")[0].replace(":", ""))
    feed = tmp_path / "feed.csv"
    feed.write_text(f"ja3,{ja3}\nx509_sha256,{hashlib.sha256(leaf).hexdigest()}\n")
    alerts = corpus_alerts(corpus, tmp_path, "tls/ssl.v3.pcap", feed)
    (fingerprint,) = threats(alerts, "intel_tls_fingerprint").values()
    assert fingerprint["count"] == count
    (certificate,) = threats(alerts, "intel_certificate").values()
    assert certificate["count"] == len(certs)
    # the certificates were valid in February 2007 and both ends are internet hosts: nothing else
    assert kinds(alerts) == {"threats.intel_tls_fingerprint", "threats.intel_certificate"}


SNMP_ANSWER_PDUS = {"2", "8"}  # tshark's snmp.data: get-response, report


@pytest.mark.parametrize("capture", ["snmpv1_get.pcap", "snmpwalk-short.pcap", "snmpv1_trap.pcap"])
def test_corpus_snmp_communities_against_tshark(
    corpus: Path, tshark: str, tmp_path: Path, capture: str
) -> None:
    rows = tshark_rows(
        tshark, corpus / "snmp" / capture, "ip.src", "ip.dst", "snmp.data", "snmp.version", display="snmp"
    )
    expected = Counter(
        (src, dst) for src, dst, pdu, version in rows if pdu not in SNMP_ANSWER_PDUS and version in ("0", "1")
    )
    assert expected
    alerts = corpus_alerts(corpus, tmp_path, f"snmp/{capture}")
    found = {(a["src"], a["dst"]): a["count"] for a in threats(alerts, "snmp_cleartext_community").values()}
    assert found == dict(expected)


@pytest.mark.parametrize(
    "capture",
    ["dhcp/dhcp.pcap", "dhcp/dhcp_flood.pcap", "mqtt/mqtt.pcap", "arp/arp-who-has.pcap", "dns/mdns.pcap"],
)
def test_corpus_benign_captures_raise_no_threat(
    corpus: Path, tshark: str, tmp_path: Path, capture: str
) -> None:
    """One DHCP server (by server identifier, even when 225 source addresses flood ACKs), MQTT logins
    without password, plain ARP requests and mDNS: tshark confirms each, and nothing fires."""
    path = corpus / capture
    if capture.startswith("dhcp"):
        servers = {
            r[0]
            for r in tshark_rows(
                tshark,
                path,
                "dhcp.option.dhcp_server_id",
                display="dhcp.option.dhcp == 2 || dhcp.option.dhcp == 5",
            )
        }
        assert len(servers) <= 1
    elif capture.startswith("mqtt"):
        flags = tshark_rows(tshark, path, "mqtt.conflag.passwd", display="mqtt.msgtype == 1")
        assert flags
        assert all(row[0] in ("0", "False") for row in flags)
    assert kinds(corpus_alerts(corpus, tmp_path, capture)) == set()


# ---------------------------------------------------------------------------------- clean plant


@pytest.fixture(scope="module")
def clean_plant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    capture = folder / "plant.pcap"
    generate_capture(capture, GeneratorConfig(devices=30, minutes=5.0, seed=2))
    return capture


def test_clean_plant_raises_no_threat_after_learning(clean_plant: Path, tmp_path: Path) -> None:
    options = AnalysisOptions(detection=DetectionSettings(learn_minutes=1.0))
    analyze([clean_plant], tmp_path / "out", options)
    alerts = [json.loads(line) for line in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]
    assert kinds(alerts) == set()


def test_clean_plant_without_learning_reports_only_its_real_mqtt_passwords(
    clean_plant: Path, tmp_path: Path
) -> None:
    """Half the plant's sensors log into the broker with a password over plain MQTT: a weakness the
    engine reports (once per sensor) until it is learned. Nothing else may fire."""
    analyze([clean_plant], tmp_path / "out")
    alerts = [json.loads(line) for line in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]
    connects = pq.read_table(tmp_path / "out" / "events" / "mqtt_connect.parquet").to_pylist()
    with_password = {(c["orig_h"], c["resp_h"]) for c in connects if c["password_present"]}
    assert with_password  # the plant does have some
    mine = [a for a in alerts if a["engine"] == "threats"]
    assert {(a["type"], a["protocol"]) for a in mine} == {("threats.cleartext_credentials", "mqtt")}
    assert {(a["src"], a["dst"]) for a in mine} == with_password


def test_every_alert_type_is_documented() -> None:
    """The doc's table lists exactly the engine's alert types, with their severity and ATT&CK ids."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "detection" / "threats.md").read_text()
    section = doc.split("## Alert types", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            mitre = () if cells[2] == "(none)" else tuple(m.strip() for m in cells[2].split(","))
            rows[f"threats.{cells[0].strip('`')}"] = (cells[1], mitre)
    assert rows == {t.id: (t.severity.value, t.mitre) for t in ALL_TYPES}
