"""Threats and IoT malware: brute force, cleartext credentials, threat-intel hits, ARP spoofing, rogue
DHCP, DNS tunnelling and unusual TLS.

What the engine reads, and why there:

- **finished flows** (Arrow, filtered with pyarrow before any Python loop): short answered connections
  to SSH and Telnet ports (Mirai and its descendants log in once per connection, so a brute force is a
  burst of short connections even when the login itself is encrypted), Telnet tried on many hosts
  (Mirai's scanner), and addresses listed in the threat-intel files;
- **login events** (``telnet_login``, ``ftp``, ``http``, ``mqtt_connect``, ``snmp``): failed logins
  for brute force, and passwords sent in clear. The dissectors never keep a secret; neither do the
  alerts (a user name may be shown, a password or community never);
- **ARP** (layer 2, per message): a second MAC claiming an address, gratuitous ARP floods, one MAC
  claiming many addresses of one subnet;
- **DHCP**: OFFER and ACK from a server that is not the learned one (``dhcp_server`` behaviours) or,
  without a baseline, from a second server in one subnet;
- **DNS**: queries and answers against the intel files, and per client and parent domain the signs of
  a tunnel (long labels, random-looking names, many distinct subdomains, TXT/NULL volume);
- **TLS**: SNI and JA3/JA3S against the intel files, certificate fingerprints, and a self-signed
  certificate presented by an internet server to an internal client; an expired one as information.

Thresholds live in :class:`~fieldward.detect.settings.ThreatSettings`; intel files are read by
:mod:`fieldward.detect.intel` when the detector is built, so a bad file fails before the capture is read.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from fieldward.detect.engine import AlertBook, DetectionContext, Detector
from fieldward.detect.intel import Indicator, IntelSet, Kind, load_intel
from fieldward.detect.model import Alert, AlertType, Severity, alert_types_of
from fieldward.detect.settings import ThreatSettings

ENGINE = "threats"
CAP = 4096
"""Distinct values kept per key (targets, subdomains, user names): enough to judge, bounded memory."""
MAX_KEYS = 200_000
"""Keys of a per-pair table (DNS client and domain, ...) beyond which new pairs are not tracked."""
NS = 1_000_000_000


_type = alert_types_of(ENGINE)


BRUTE_FORCE = _type(
    "brute_force",
    "Login brute force (Mirai-style)",
    Severity.HIGH,
    ("T0812", "T1110"),
    "One source made a burst of failed logins, or of short connections to a Telnet or SSH port, "
    "against one device: password guessing, as Mirai and its descendants do with default credentials.",
    "Block the source and check whether a login succeeded (look for a session after the burst). Change "
    "default passwords on the device and disable Telnet where it is not needed.",
    learnable=False,
)
TELNET_SCAN = _type(
    "telnet_scan",
    "Telnet scanning (Mirai-style)",
    Severity.HIGH,
    ("T0846", "T1046"),
    "One source tried the Telnet port (23 or 2323) on many hosts: how Mirai-family malware finds its "
    "next victims. The source itself is likely infected.",
    "Isolate the source, look for an unknown process or firmware change on it, and block Telnet at the "
    "zone boundary.",
    learnable=False,
)
CLEARTEXT = _type(
    "cleartext_credentials",
    "Password sent in clear",
    Severity.MEDIUM,
    ("T0842", "T1040"),
    "A login (Telnet, FTP, HTTP Basic, MQTT) carried a password unencrypted: anyone on the path can "
    "read and reuse it.",
    "Move the service to an encrypted protocol (SSH, SFTP/FTPS, HTTPS, MQTT over TLS) and change the "
    "exposed password.",
)
SNMP_COMMUNITY = _type(
    "snmp_cleartext_community",
    "SNMP community in clear",
    Severity.LOW,
    ("T0842", "T0812"),
    "An SNMP v1/v2c request or trap carried a community string, which is a password sent in clear; "
    "a default community (public, private) lets anyone read or change the device's settings.",
    "Use SNMPv3 with authentication and privacy, or at least a non-default community and an access list.",
)
INTEL_IP = _type(
    "intel_ip",
    "Traffic with a threat-intel address",
    Severity.HIGH,
    ("T0869", "T1071"),
    "A flow or DNS answer involved an IP address listed in a threat-intelligence file.",
    "Check why the device talks to this address; block it at the firewall and look for malware on the "
    "internal host.",
    learnable=False,
)
INTEL_DOMAIN = _type(
    "intel_domain",
    "Threat-intel domain contacted",
    Severity.HIGH,
    ("T0869", "T1071"),
    "A DNS query or answer, TLS server name or HTTP host matched a domain listed in a threat-intelligence "
    "file (or one of its subdomains).",
    "Find the process on the internal host that resolves or contacts the domain; sinkhole or block it.",
    learnable=False,
)
INTEL_URL = _type(
    "intel_url",
    "Threat-intel URL requested",
    Severity.HIGH,
    ("T0869", "T1071.001"),
    "An HTTP request went to a URL listed in a threat-intelligence file.",
    "Find what on the internal host made the request (a dropper often fetches its payload so) and "
    "block the URL.",
    learnable=False,
)
INTEL_TLS = _type(
    "intel_tls_fingerprint",
    "Threat-intel TLS fingerprint",
    Severity.HIGH,
    ("T0869", "T1573"),
    "A TLS client (JA3) or server (JA3S) fingerprint matched one listed in a threat-intelligence file: "
    "the software making the connection is known malware or tooling.",
    "Identify the process making the connection on the internal host; fingerprints can collide with "
    "common libraries, so confirm before isolating.",
    learnable=False,
)
INTEL_CERTIFICATE = _type(
    "intel_certificate",
    "Threat-intel TLS certificate",
    Severity.HIGH,
    ("T0869", "T1573"),
    "A server presented a certificate whose SHA-1 or SHA-256 fingerprint is listed in a "
    "threat-intelligence file (a known command-and-control certificate).",
    "Block the server and investigate the internal client.",
    learnable=False,
)
INTEL_FILE = _type(
    "intel_file",
    "A file listed in threat intelligence was transferred",
    Severity.CRITICAL,
    ("T0867", "T0863", "T1105"),
    "An HTTP message body (a download or an upload) has an MD5, SHA-1 or SHA-256 listed in a "
    "threat-intelligence file: malware, a trojanised firmware or a tool of a known actor.",
    "Find the host that received the file, isolate it and check what ran it; for firmware, do not "
    "install it and verify the image with the vendor.",
    learnable=False,
)
ARP_SPOOFING = _type(
    "arp_spoofing",
    "ARP spoofing",
    Severity.HIGH,
    ("T0830", "T1557.002"),
    "A second MAC address claimed an IP address another MAC had claimed shortly before: ARP cache "
    "poisoning puts the attacker between the devices (adversary in the middle).",
    "Find the port of the new MAC on the switch; enable dynamic ARP inspection or static ARP entries "
    "for controllers and gateways.",
)
ARP_FLOOD = _type(
    "arp_gratuitous_flood",
    "Gratuitous ARP flood",
    Severity.MEDIUM,
    ("T0830", "T1557.002"),
    "One MAC sent gratuitous ARP at a high rate: spoofing tools repeat their claims to keep caches poisoned.",
    "Locate the MAC on the switch and check what it is; an IP conflict or a misbehaving failover can "
    "also cause this.",
)
ARP_MANY_IPS = _type(
    "arp_mac_many_ips",
    "One MAC claims many addresses",
    Severity.MEDIUM,
    ("T0830", "T1557.002"),
    "One MAC address claimed many IP addresses of one subnet: a host answering for its neighbours, as "
    "an ARP spoofer or an unauthorised proxy ARP does.",
    "Check whether the MAC belongs to a router doing proxy ARP on purpose; if not, isolate it.",
)
ROGUE_DHCP = _type(
    "rogue_dhcp_server",
    "Rogue DHCP server",
    Severity.HIGH,
    ("T0830", "T1557.003"),
    "A DHCP OFFER or ACK came from a server that is not the subnet's known DHCP server: a rogue server "
    "can hand out itself as gateway or DNS server and intercept traffic.",
    "Find and disconnect the server; enable DHCP snooping on the access switches.",
)
DNS_TUNNEL = _type(
    "dns_tunneling",
    "DNS tunnelling",
    Severity.HIGH,
    ("T0869", "T1071.004"),
    "A client's queries under one domain look like data encoded in names: long labels, random-looking "
    "subdomains, many distinct subdomains or many TXT/NULL queries (a tunnel or exfiltration channel).",
    "Identify the process on the client; block the domain at the resolver. Some security products "
    "(antivirus reputation lookups) query this way legitimately: learn the alert if so.",
    learnable=False,
)
TLS_SELF_SIGNED = _type(
    "tls_self_signed_external",
    "Self-signed certificate from an internet server",
    Severity.MEDIUM,
    ("T0869", "T1573"),
    "An internal client accepted a TLS session with an internet server whose certificate is self-signed: "
    "common for command-and-control servers, rare for legitimate public services.",
    "Check what the internal client connects to; block the server if it is not a known vendor service.",
)
TLS_EXPIRED = _type(
    "tls_expired_certificate",
    "Expired TLS certificate",
    Severity.INFO,
    (),
    "A server presented a certificate that had expired at the time of the connection.",
    "Renew the certificate; clients that accept expired certificates also accept forged ones.",
)

ALL_TYPES = (
    BRUTE_FORCE,
    TELNET_SCAN,
    CLEARTEXT,
    SNMP_COMMUNITY,
    INTEL_IP,
    INTEL_DOMAIN,
    INTEL_URL,
    INTEL_TLS,
    INTEL_CERTIFICATE,
    INTEL_FILE,
    ARP_SPOOFING,
    ARP_FLOOD,
    ARP_MANY_IPS,
    ROGUE_DHCP,
    DNS_TUNNEL,
    TLS_SELF_SIGNED,
    TLS_EXPIRED,
)

LOGIN_SERVICES = {22: "ssh", 2222: "ssh", 23: "telnet", 2323: "telnet"}
ANONYMOUS_FTP = frozenset({"anonymous", "ftp"})
"""FTP users whose "password" is an e-mail address by convention, not a secret."""
MQTT_LOGIN_REFUSED = frozenset({4, 5, 0x86, 0x87})
"""CONNACK codes of a refused login: 3.1.1 bad user name or password / not authorised, and MQTT 5's."""
SNMP_ANSWERS = frozenset({"response", "report"})
"""PDUs that echo the request's community (the request already raised the alert)."""
DHCP_SERVER_MESSAGES = frozenset({2, 5})
"""OFFER and ACK: what only a server sends."""
DNS_TXT_NULL = frozenset({10, 16})
LOCAL_SUFFIXES = frozenset({"local", "lan", "internal", "localdomain", "home", "corp", "intranet", "arpa"})
"""Names no public authoritative server answers for: a tunnel needs one, so they are not judged."""
SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go", "mil", "gob"})
"""Second-level labels under a two-letter country code that registries sell under (``example.co.uk``)."""
CLEARTEXT_LOGIN = "cleartext_login"
"""Knowledge category: (client, server, protocol) logins in clear seen while learning."""
NO_IP = "0.0.0.0"  # noqa: S104 - the unset address of ARP and DHCP, not a bind


def parent_domain(name: str) -> str:
    """The registered domain of a name, approximately (``a.b.example.com`` -> ``example.com``,
    ``x.example.co.uk`` -> ``example.co.uk``) without a public suffix list."""
    labels = name.split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(text)
    if n == 0:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


@lru_cache(maxsize=65536)
def is_global(address: str) -> bool | None:
    """Whether an address is on the internet (None: not an address)."""
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return None


def densest(times: list[tuple[int, int]], window_ns: int) -> tuple[int, int, int]:
    """(count, start time, flow) of the window of ``window_ns`` holding the most of ``times``."""
    ordered = sorted(times)
    best = (0, 0, -1)
    start = 0
    for end, (ts, _flow) in enumerate(ordered):
        while ts - ordered[start][0] > window_ns:
            start += 1
        if end - start + 1 > best[0]:
            best = (end - start + 1, ordered[start][0], ordered[start][1])
    return best


@dataclass
class _DnsStats:
    """One client's queries under one parent domain."""

    first: tuple[int, int]
    queries: int = 0
    subdomains: set[str] = field(default_factory=set)
    suspicious: int = 0
    txt_null: int = 0
    longest_label: int = 0
    alert: Alert | None = None
    judged: bool = False


@dataclass
class _Attempts:
    """Login attempts from one source to one device over one protocol."""

    connections: list[tuple[int, int]] = field(default_factory=list)
    failures: list[tuple[int, int]] = field(default_factory=list)
    usernames: set[str] = field(default_factory=set)


class ThreatDetector(Detector):
    name: ClassVar[str] = ENGINE
    alert_types: ClassVar[tuple[AlertType, ...]] = ALL_TYPES
    logs: ClassVar[frozenset[str]] = frozenset(
        {
            "telnet_login",
            "ftp",
            "http",
            "mqtt_connect",
            "snmp",
            "ssh_version",
            "arp",
            "dhcp",
            "dns",
            "tls_client_hello",
            "tls_server_hello",
            "tls_certificate",
        }
    )

    def __init__(self, alerts: AlertBook, context: DetectionContext | None = None) -> None:
        super().__init__(alerts, context)
        self.settings: ThreatSettings = self.context.settings.threats
        files = self.context.settings.intel_files
        self.intel: IntelSet = load_intel(files) if files else IntelSet()
        self._handlers: dict[str, Callable[[Any], None]] = {
            "telnet_login": self._telnet,
            "ftp": self._ftp,
            "http": self._http,
            "mqtt_connect": self._mqtt,
            "snmp": self._snmp,
            "ssh_version": self._ssh,
            "arp": self._arp,
            "dhcp": self._dhcp,
            "dns": self._dns,
            "tls_client_hello": self._client_hello,
            "tls_server_hello": self._server_hello,
            "tls_certificate": self._certificate,
        }
        self._attempts: dict[tuple[str, str, str], _Attempts] = defaultdict(_Attempts)
        self._ssh_software: dict[tuple[str, str], str] = {}
        self._telnet_targets: dict[str, set[str]] = defaultdict(set)
        self._telnet_first: dict[str, tuple[int, int]] = {}
        self._ip_verdicts: dict[str, Indicator | None] = {}
        self._arp_owner: dict[str, tuple[str, int]] = {}
        """IP -> (MAC that claimed it first, time of that MAC's latest claim)."""
        self._gratuitous: dict[str, deque[int]] = defaultdict(deque)
        self._claims: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._flagged: set[tuple[str, ...]] = set()
        self._dhcp_servers: dict[str, dict[str, int]] = defaultdict(dict)
        self._dns_stats: dict[tuple[str, str], _DnsStats] = {}

    # ------------------------------------------------------------------ routing

    def on_event(self, event: Any) -> None:
        handler = self._handlers.get(event.log)
        if handler is not None:
            handler(event)

    # ------------------------------------------------------------------ flows

    def on_flows(self, flows: pa.Table) -> None:
        if flows.num_rows == 0:
            return
        limits = self.settings
        ports = pa.array(sorted(set(limits.brute_force_ports) | set(limits.telnet_ports)), pa.uint16())
        logins = pc.and_(pc.equal(flows["proto"], "tcp"), pc.is_in(flows["resp_port"], value_set=ports))
        rows = flows.filter(pc.fill_null(logins, False))
        if rows.num_rows:
            self._login_flows(rows)
        if self.intel.has_addresses:
            self._intel_flows(flows)

    def _login_flows(self, rows: pa.Table) -> None:
        limits = self.settings
        short = limits.brute_force_short_s
        columns = (
            "orig_ip",
            "resp_ip",
            "resp_port",
            "first_ts",
            "duration_s",
            "resp_payload_bytes",
            "flow_id",
        )
        starts = pc.cast(rows["first_ts"], pa.int64()).to_pylist()
        values = [starts if c == "first_ts" else rows[c].to_pylist() for c in columns]
        for src, dst, port, ts, duration, answered, flow in zip(*values, strict=True):
            if port in limits.telnet_ports:
                targets = self._telnet_targets[src]
                if len(targets) < CAP:
                    targets.add(dst)
                first = self._telnet_first.get(src)
                if first is None or ts < first[0]:
                    self._telnet_first[src] = (ts, flow)
            if port in limits.brute_force_ports and answered and duration <= short:
                service = LOGIN_SERVICES.get(port, f"tcp/{port}")
                attempts = self._attempts[(src, dst, service)].connections
                if len(attempts) < CAP * 4:
                    attempts.append((ts, flow))

    def _intel_flows(self, flows: pa.Table) -> None:
        addresses = pc.unique(
            pa.concat_arrays([flows["orig_ip"].combine_chunks(), flows["resp_ip"].combine_chunks()])
        )
        listed = []
        for address in addresses.to_pylist():
            if address is None:
                continue
            if address not in self._ip_verdicts:
                if len(self._ip_verdicts) > MAX_KEYS:
                    self._ip_verdicts.clear()
                self._ip_verdicts[address] = self.intel.match_ip(address, 0)
            if self._ip_verdicts[address] is not None:
                listed.append(address)
        if not listed:
            return
        value_set = pa.array(listed, pa.string())
        hit = pc.or_(
            pc.is_in(flows["orig_ip"], value_set=value_set), pc.is_in(flows["resp_ip"], value_set=value_set)
        )
        rows = flows.filter(pc.fill_null(hit, False))
        services = rows["service"].to_pylist() if "service" in rows.column_names else [None] * rows.num_rows
        starts = pc.cast(rows["first_ts"], pa.int64()).to_pylist()
        for src, dst, proto, service, ts, flow in zip(
            rows["orig_ip"].to_pylist(),
            rows["resp_ip"].to_pylist(),
            rows["proto"].to_pylist(),
            services,
            starts,
            rows["flow_id"].to_pylist(),
            strict=True,
        ):
            for address, role in ((dst, "destination"), (src, "source")):
                indicator = self.intel.match_ip(address, ts)
                if indicator is not None:
                    protocol = service or proto
                    self._intel_alert(
                        INTEL_IP, indicator, ts, src, dst, protocol, flow, address, f"flow {role} address"
                    )
                    break

    # ------------------------------------------------------------------ logins

    def _failed(self, event: Any, protocol: str, username: str | None = None) -> None:
        attempts = self._attempts[(event.orig_h, event.resp_h, protocol)]
        if len(attempts.failures) < CAP * 4:
            attempts.failures.append((int(event.ts), int(event.flow_id)))
        if username and len(attempts.usernames) < 32:
            attempts.usernames.add(username[:64])

    def _habitual(self, ts: int, client: str, server: str, protocol: str) -> bool:
        """Whether a cleartext login is part of the learned behaviour (learning it while learning): a
        weakness the site has accepted is reported once, in the run that learns it, not every day."""
        key = (client, server, protocol)
        if self.context.is_learning(ts):
            self.context.knowledge.learn(CLEARTEXT_LOGIN, key)
            return True
        return self.context.knowledge.knows(CLEARTEXT_LOGIN, key)

    def _cleartext(self, event: Any, protocol: str, what: str, username: str | None) -> None:
        if self._habitual(int(event.ts), event.orig_h, event.resp_h, protocol):
            return
        who = f" for user {username!r}" if username else ""
        self.alerts.raise_alert(
            CLEARTEXT,
            ts=int(event.ts),
            src=event.orig_h,
            dst=event.resp_h,
            protocol=protocol,
            explanation=f"{event.orig_h} sent {what}{who} in clear to {event.resp_h}",
            flow_id=int(event.flow_id),
            details={"username": username} if username else {},
        )

    def _telnet(self, event: Any) -> None:
        if event.cleartext_credentials:
            self._cleartext(event, "telnet", "a Telnet password", event.username)
        if event.success is False:
            self._failed(event, "telnet", event.username)

    def _ftp(self, event: Any) -> None:
        user = event.user
        anonymous = isinstance(user, str) and user.lower() in ANONYMOUS_FTP
        if event.command == "PASS" and event.cleartext_credentials and not anonymous:
            self._cleartext(event, "ftp", "an FTP password", user)
        if event.login_success is False:
            self._failed(event, "ftp", user)

    def _http(self, event: Any) -> None:
        if event.cleartext_credentials:
            self._cleartext(event, "http", "HTTP Basic credentials", None)
        if event.status_code == 401 and event.authorization_scheme:
            self._failed(event, "http")
        host = _host_of(event.host)
        ts = int(event.ts)
        indicator = self.intel.match_domain(host, ts)
        if indicator is not None:
            self._event_intel(INTEL_DOMAIN, indicator, event, "http", host or "", "HTTP host")
        for direction in ("response", "request"):
            for kind in (Kind.SHA256, Kind.SHA1, Kind.MD5):
                digest = str(getattr(event, f"{direction}_body_{kind.value}", None) or "")
                indicator = self.intel.match_hash(kind, digest, ts) if digest else None
                if indicator is not None:
                    self._event_intel(
                        INTEL_FILE,
                        indicator,
                        event,
                        "http",
                        digest,
                        f"HTTP {direction} body {kind.value.upper()}",
                    )
                    break
        if self.intel.urls and event.uri:
            uri = str(event.uri)
            url = uri if "://" in uri else f"http://{event.host or event.resp_h}{uri}"
            indicator = self.intel.match_url(url, ts)
            if indicator is not None:
                self._event_intel(INTEL_URL, indicator, event, "http", url, "HTTP URL")

    def _mqtt(self, event: Any) -> None:
        if event.password_present:
            self._cleartext(event, "mqtt", "an MQTT CONNECT password", None)
        if event.return_code in MQTT_LOGIN_REFUSED and event.password_present is not False:
            self._failed(event, "mqtt")

    def _snmp(self, event: Any) -> None:
        if not self.settings.snmp_community or not event.community_present or event.version not in (0, 1):
            return
        if event.pdu_type in SNMP_ANSWERS:
            return
        src, dst = (event.orig_h, event.resp_h) if event.is_orig else (event.resp_h, event.orig_h)
        if self._habitual(int(event.ts), src, dst, "snmp"):
            return
        default = bool(event.default_community)
        kind = "a default community" if default else "a community string"
        self.alerts.raise_alert(
            SNMP_COMMUNITY,
            ts=int(event.ts),
            src=src,
            dst=dst,
            protocol="snmp",
            explanation=f"{src} sent {event.version_name} {event.pdu_type or 'PDU'} with {kind} to {dst}",
            flow_id=int(event.flow_id),
            details={"version": event.version_name, "default_string": default},
        )

    def _ssh(self, event: Any) -> None:
        if event.client and len(self._ssh_software) < MAX_KEYS:
            self._ssh_software[(event.orig_h, event.resp_h)] = str(event.software)[:128]

    # ------------------------------------------------------------------ ARP

    def _arp(self, event: Any) -> None:
        if event.proto_type != 0x0800 or event.op not in (1, 2) or event.probe:
            return
        ip, mac, ts = event.spa, event.sha, int(event.ts)
        if ip == NO_IP or mac in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"):
            return
        limits = self.settings
        knowledge = self.context.knowledge
        if self.context.is_learning(ts):
            knowledge.learn("arp_binding", (ip, mac))
        owner = self._arp_owner.get(ip)
        if owner is None or owner[0] == mac:
            self._arp_owner[ip] = (mac, ts)
        elif ts - owner[1] > limits.arp_conflict_window_s * NS:
            self._arp_owner[ip] = (mac, ts)  # the address moved after a long silence
        elif not knowledge.knows("arp_binding", (ip, mac)):
            seconds = max(0, ts - owner[1]) / NS
            self.alerts.raise_alert(
                ARP_SPOOFING,
                ts=ts,
                src=mac,
                dst=ip,
                protocol="arp",
                explanation=f"{mac} claimed {ip}, which {owner[0]} claimed {seconds:.0f} s before",
                details={"ip": ip, "mac": mac, "previous_mac": owner[0], "op": event.op_name},
            )
        if event.gratuitous:
            self._gratuitous_claim(mac, ts)
        subnet = ip.rsplit(".", 1)[0]
        claimed = self._claims[(mac, subnet)]
        if ip not in claimed and len(claimed) < CAP and len(self._claims) < MAX_KEYS:
            claimed.add(ip)
            key = ("many", mac, subnet)
            if len(claimed) >= limits.arp_ips_per_mac and key not in self._flagged:
                self._flagged.add(key)
                self.alerts.raise_alert(
                    ARP_MANY_IPS,
                    ts=ts,
                    src=mac,
                    dst=f"{subnet}.0/24",
                    protocol="arp",
                    explanation=f"{mac} claimed {len(claimed)} addresses of {subnet}.0/24",
                    details={"ips": sorted(claimed)[:32]},
                )

    def _gratuitous_claim(self, mac: str, ts: int) -> None:
        limits = self.settings
        window = self._gratuitous[mac]
        window.append(ts)
        horizon = ts - limits.arp_flood_window_s * NS
        while window and window[0] < horizon:
            window.popleft()
        if len(window) >= limits.arp_flood_count:
            count = len(window)
            window.clear()  # the next alert needs a new burst
            self.alerts.raise_alert(
                ARP_FLOOD,
                ts=ts,
                src=mac,
                dst="*",
                protocol="arp",
                explanation=f"{mac} sent {count} gratuitous ARPs within {limits.arp_flood_window_s:g} s",
                details={"messages": count, "window_s": limits.arp_flood_window_s},
            )

    # ------------------------------------------------------------------ DHCP

    def _dhcp(self, event: Any) -> None:
        if event.op != 2 or event.msg_type not in DHCP_SERVER_MESSAGES:
            return
        sender = event.orig_h if event.is_orig else event.resp_h
        server = event.server_id or sender
        ts = int(event.ts)
        subnet = _dhcp_subnet(event, server)
        knowledge = self.context.knowledge
        known = knowledge.behaviours.get("dhcp_server")
        seen = self._dhcp_servers[subnet]
        if server not in seen and len(seen) < CAP:
            seen[server] = ts
        if self.context.is_learning(ts):
            knowledge.learn("dhcp_server", (server,))
            return
        if known:
            if (server,) in known:
                return
            why = "is not a DHCP server of the baseline (" + ", ".join(sorted(k[0] for k in known)[:8]) + ")"
        else:
            reference = min(seen, key=lambda s: seen[s])  # the subnet's first server is the reference
            if server == reference:
                return
            why = f"is a second DHCP server in {subnet} (besides {reference})"
        self.alerts.raise_alert(
            ROGUE_DHCP,
            ts=ts,
            src=server,
            dst=subnet,
            protocol="dhcp",
            explanation=f"{server} sent a DHCP {event.msg_type_name} to {event.chaddr}: it {why}",
            flow_id=int(event.flow_id),
            details={
                "server": server,
                "sender": sender,
                "subnet": subnet,
                "client_mac": event.chaddr,
                "offered": event.yiaddr,
                "routers": list(event.routers or [])[:8],
                "dns_servers": list(event.dns_servers or [])[:8],
            },
        )

    # ------------------------------------------------------------------ DNS

    def _dns(self, event: Any) -> None:
        ts = int(event.ts)
        query = event.query
        client = event.orig_h
        if self.intel.domains or self.intel.has_addresses:
            self._dns_intel(event, ts, client)
        if event.qr or event.variant != "dns" or not query or not event.is_orig:
            return
        name = str(query).rstrip(".").lower()
        labels = name.split(".")
        if len(labels) < 3 or labels[-1] in LOCAL_SUFFIXES:
            return
        parent = parent_domain(name)
        sub = name[: -len(parent) - 1]
        if not sub:
            return
        key = (client, parent)
        stats = self._dns_stats.get(key)
        if stats is None:
            if len(self._dns_stats) >= MAX_KEYS:
                return
            stats = self._dns_stats[key] = _DnsStats((ts, int(event.flow_id)))
        stats.queries += 1
        limits = self.settings
        if len(stats.subdomains) < limits.dns_unique_subdomains:
            stats.subdomains.add(sub)
        longest = max(len(label) for label in sub.split("."))
        stats.longest_label = max(stats.longest_label, longest)
        if longest >= limits.dns_long_label or self._random_looking(sub):
            stats.suspicious += 1
        if event.qtype in DNS_TXT_NULL:
            stats.txt_null += 1
        if stats.judged:
            return
        reasons = self._tunnel_reasons(stats)
        if reasons:
            stats.judged = True
            stats.alert = self.alerts.raise_alert(
                DNS_TUNNEL,
                ts=ts,
                src=client,
                dst=parent,
                protocol="dns",
                explanation=f"{client} queried {parent} in a way that carries data: {'; '.join(reasons)}",
                flow_id=int(event.flow_id),
                details=self._tunnel_details(stats, parent, reasons),
            )

    def _random_looking(self, sub: str) -> bool:
        """Long, high-entropy and digit-bearing: encoded data (hex, base32) rather than words."""
        limits = self.settings
        text = sub.replace(".", "")
        if len(text) < limits.dns_entropy_min_length:
            return False
        digits = sum(c.isdigit() for c in text)
        return digits >= len(text) * 0.15 and entropy(text) >= limits.dns_entropy_bits

    def _tunnel_reasons(self, stats: _DnsStats) -> list[str]:
        limits = self.settings
        reasons = []
        if stats.suspicious >= limits.dns_suspicious_queries:
            reasons.append(f"{stats.suspicious} queries with long or random-looking names")
        if len(stats.subdomains) >= limits.dns_unique_subdomains:
            reasons.append(f"{len(stats.subdomains)} distinct subdomains")
        if stats.txt_null >= limits.dns_txt_queries:
            reasons.append(f"{stats.txt_null} TXT/NULL queries")
        return reasons

    @staticmethod
    def _tunnel_details(stats: _DnsStats, parent: str, reasons: list[str]) -> dict[str, Any]:
        return {
            "domain": parent,
            "queries": stats.queries,
            "distinct_subdomains": len(stats.subdomains),
            "suspicious_queries": stats.suspicious,
            "txt_null_queries": stats.txt_null,
            "longest_label": stats.longest_label,
            "reasons": reasons,
        }

    def _dns_intel(self, event: Any, ts: int, client: str) -> None:
        intel = self.intel
        flow = int(event.flow_id)
        if not event.qr:
            indicator = intel.match_domain(event.query, ts)
            if indicator is not None:
                name = str(event.query).rstrip(".").lower()
                self._intel_alert(INTEL_DOMAIN, indicator, ts, client, name, "dns", flow, name, "DNS query")
            return
        for answer in event.answers or ():
            text = str(answer).rstrip(".").lower()
            if is_global(text) is not None:
                found = intel.match_ip(text, ts)
                if found is not None:
                    self._intel_alert(INTEL_IP, found, ts, client, text, "dns", flow, text, "DNS answer")
            else:
                found = intel.match_domain(text, ts)
                if found is not None:
                    self._intel_alert(INTEL_DOMAIN, found, ts, client, text, "dns", flow, text, "DNS answer")

    # ------------------------------------------------------------------ TLS

    def _client_hello(self, event: Any) -> None:
        ts = int(event.ts)
        indicator = self.intel.match_domain(event.server_name, ts)
        if indicator is not None:
            name = str(event.server_name).lower()
            self._event_intel(INTEL_DOMAIN, indicator, event, "tls", name, "TLS SNI")
        indicator = self.intel.match_hash(Kind.JA3, event.ja3, ts)
        if indicator is not None:
            self._event_intel(INTEL_TLS, indicator, event, "tls", event.ja3, "JA3")

    def _server_hello(self, event: Any) -> None:
        ts = int(event.ts)
        indicator = self.intel.match_hash(Kind.JA3S, event.ja3s, ts)
        if indicator is not None:
            self._event_intel(INTEL_TLS, indicator, event, "tls", event.ja3s, "JA3S")

    def _certificate(self, event: Any) -> None:
        ts = int(event.ts)
        client, server = event.orig_h, event.resp_h
        for kind, value in ((Kind.X509_SHA1, event.sha1), (Kind.X509_SHA256, event.sha256)):
            indicator = self.intel.match_hash(kind, value, ts)
            if indicator is not None:
                self._intel_alert(
                    INTEL_CERTIFICATE,
                    indicator,
                    ts,
                    client,
                    server,
                    "tls",
                    event.flow_id,
                    value,
                    "certificate",
                )
                break
        if event.is_orig or event.chain_index != 0:
            return  # a client certificate, or a CA of the chain
        subject = str(event.subject)[:200]
        if event.self_signed and is_global(server) is True and is_global(client) is False:
            self.alerts.raise_alert(
                TLS_SELF_SIGNED,
                ts=ts,
                src=client,
                dst=server,
                protocol="tls",
                explanation=f"{server} (internet) gave {client} a self-signed certificate ({subject})",
                flow_id=int(event.flow_id),
                details={"subject": subject, "sha256": event.sha256},
            )
        if event.not_valid_after is not None and ts > int(event.not_valid_after) * NS:
            self.alerts.raise_alert(
                TLS_EXPIRED,
                ts=ts,
                src=client,
                dst=server,
                protocol="tls",
                explanation=f"{server} presented an expired certificate ({subject})",
                flow_id=int(event.flow_id),
                details={
                    "subject": subject,
                    "not_valid_after": int(event.not_valid_after),
                    "sha256": event.sha256,
                },
            )

    # ------------------------------------------------------------------ shared

    def _event_intel(
        self,
        alert_type: AlertType,
        indicator: Indicator,
        event: Any,
        protocol: str,
        observed: str,
        where: str,
    ) -> None:
        """An indicator matched in an event: from its originator to its responder, on its flow."""
        self._intel_alert(
            alert_type,
            indicator,
            int(event.ts),
            event.orig_h,
            event.resp_h,
            protocol,
            event.flow_id,
            observed,
            where,
        )

    def _intel_alert(
        self,
        alert_type: AlertType,
        indicator: Indicator,
        ts: int,
        src: str,
        dst: str,
        protocol: str,
        flow: Any,
        observed: str,
        where: str,
    ) -> None:
        details = indicator.details()
        details.update(observed=observed, matched_in=where)
        label = f" ({indicator.name[:120]})" if indicator.name else ""
        self.alerts.raise_alert(
            alert_type,
            ts=ts,
            src=src,
            dst=dst,
            protocol=protocol,
            explanation=(
                f"{where} {observed} matches the {indicator.kind.value} indicator {indicator.value}{label} "
                f"of {indicator.source}"
            ),
            flow_id=int(flow) if flow is not None else -1,
            details=details,
        )

    # ------------------------------------------------------------------ verdicts

    def finish(self) -> None:
        limits = self.settings
        window = round(limits.brute_force_window_s * NS)
        for (src, dst, protocol), attempts in sorted(self._attempts.items()):
            connections = densest(attempts.connections, window)
            failures = densest(attempts.failures, window)
            by_connections = connections[0] >= limits.brute_force_connections
            by_failures = failures[0] >= limits.brute_force_failures
            if not (by_connections or by_failures):
                continue
            _count, ts, flow = failures if by_failures else connections
            parts = []
            if by_failures:
                parts.append(f"{failures[0]} failed logins")
            if by_connections:
                parts.append(f"{connections[0]} short connections")
            within = f"within {limits.brute_force_window_s:g} s"
            text = f"{src} made {' and '.join(parts)} to {protocol} on {dst} {within}"
            details: dict[str, Any] = {
                "failed_logins": len(attempts.failures),
                "short_connections": len(attempts.connections),
                "max_failed_in_window": failures[0],
                "max_connections_in_window": connections[0],
                "window_s": limits.brute_force_window_s,
            }
            if attempts.usernames:
                details["usernames"] = sorted(attempts.usernames)
            software = self._ssh_software.get((src, dst))
            if software and protocol == "ssh":
                details["ssh_client"] = software
            self.alerts.raise_alert(
                BRUTE_FORCE,
                ts=ts,
                src=src,
                dst=dst,
                protocol=protocol,
                explanation=text,
                flow_id=flow,
                details=details,
            )
        for src, targets in sorted(self._telnet_targets.items()):
            if len(targets) >= limits.telnet_scan_hosts:
                ts, flow = self._telnet_first[src]
                self.alerts.raise_alert(
                    TELNET_SCAN,
                    ts=ts,
                    src=src,
                    dst="*:23",
                    protocol="telnet",
                    explanation=f"{src} tried Telnet on {len(targets)} hosts",
                    flow_id=flow,
                    details={"hosts": len(targets), "ports": list(limits.telnet_ports)},
                )
        for (_client, parent), stats in self._dns_stats.items():
            if stats.alert is not None:
                stats.alert.details.update(self._tunnel_details(stats, parent, self._tunnel_reasons(stats)))


def _host_of(host: Any) -> str | None:
    """The name of an HTTP Host header (port dropped); None for an address literal or nothing."""
    if not host:
        return None
    text = str(host).strip().lower()
    if text.startswith("["):
        return None
    name, sep, port = text.rpartition(":")
    if sep and port.isdigit():
        text = name
    return None if is_global(text) is not None else text


def _dhcp_subnet(event: Any, server: str) -> str:
    """The subnet a server message is for: the relay's, else the client's address's, with the offered mask."""
    base = next((a for a in (event.giaddr, event.yiaddr, event.ciaddr) if a and a != NO_IP), server)
    for mask in (event.subnet_mask or "255.255.255.0", "255.255.255.0"):
        try:
            return ipaddress.ip_network(f"{base}/{mask}", strict=False).compressed
        except ValueError:
            continue
    return str(base)
