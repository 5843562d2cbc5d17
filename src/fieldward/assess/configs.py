"""Insecure configurations seen in traffic: the assessment's policy over what the sensor reported.

The dissectors report facts (a Telnet login, an SNMPv1 community flag, a TLS version, a VNC security
type); this module judges them, Zeek-style policy over the event engine. It reads an analysis folder
written by ``fieldward analyze`` (``devices.json``, ``flows.parquet``, ``events/<log>.parquet``) and
returns :class:`~fieldward.assess.model.ConfigFinding` records, one per (check, device, port), each
aggregating how many connections showed it, the peers, the first and last time and a few evidence flow
ids. Every check is declared once in :data:`CHECKS` (title, severity, explanation, recommendation);
thresholds and address classes are typed settings (:class:`ConfigSettings`).

The inputs can hold millions of rows, so every check is a set of numpy masks over whole columns:
addresses are dictionary-encoded once and classified per distinct value (public or internal, which
device owns them, its Purdue level and type), and the findings are grouped with sorts and
``reduceat``; Python runs per distinct address and per finding only. Passwords are never read: the
dissectors compare login pairs with the default credential lists in memory
(:mod:`fieldward.protocols.credentials`) and write only the names of the lists that matched
(``default_credential``), which ``credentials.default_account`` judges; see ``docs/assess/configs.md``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fieldward.assess.model import ConfigFinding, Severity
from fieldward.errors import FieldWardError
from fieldward.protocols.credentials import CredentialFileError, CredentialList, DefaultCredentials

__all__ = [
    "CHECKS",
    "CheckSpec",
    "ConfigCheckError",
    "ConfigSettings",
    "CredentialList",
    "DefaultCredentials",
    "check_configurations",
    "load_default_credentials",
]

logger = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

SEVERITIES = (Severity.NONE, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)
RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}
NO_PORT = -1


class ConfigCheckError(FieldWardError):
    """An input of the configuration checks is unreadable (corrupt ``devices.json`` or Parquet file, bad
    default credential file)."""


# ---------------------------------------------------------------------------------------------- checks


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One configuration check: its stable name and the words of its findings."""

    name: str
    title: str
    severity: Severity
    """Base severity; some checks raise it for worse cases (documented per check)."""
    explanation: str
    recommendation: str
    protocol: str | None = None


_SPECS = (
    CheckSpec(
        "cleartext.telnet",
        "Telnet management in clear text",
        Severity.HIGH,
        "The device accepts Telnet sessions: commands, output and the login password cross the network "
        "unencrypted and can be read or hijacked by anyone on the path.",
        "Disable Telnet on the device and manage it with SSH (or the vendor's encrypted tool); if it "
        "cannot be disabled, restrict it to a management VLAN and change the password.",
        "telnet",
    ),
    CheckSpec(
        "cleartext.ftp",
        "FTP in clear text",
        Severity.MEDIUM,
        "The device serves FTP without TLS: files (programs, configurations, firmware) and the login "
        "password cross the network unencrypted. Raised to high when a password was seen sent in clear.",
        "Disable the FTP server or require FTPS/SFTP; restrict who may reach it and change any password "
        "that was sent in clear.",
        "ftp",
    ),
    CheckSpec(
        "cleartext.http_admin",
        "Web management over plain HTTP",
        Severity.MEDIUM,
        "A web interface of the device is used over plain HTTP (a login or administration page, HTTP "
        "Basic authentication, or the web server of an embedded device): sessions and passwords can be "
        "read on the network. Raised to high with HTTP Basic authentication (the password is sent with "
        "every request, only base64-encoded).",
        "Enable HTTPS on the device and disable plain HTTP (or redirect it), then change passwords that "
        "were used over HTTP.",
        "http",
    ),
    CheckSpec(
        "cleartext.snmp",
        "SNMP v1/v2c in use",
        Severity.MEDIUM,
        "The device speaks SNMP v1 or v2c, whose community string is a password sent in clear with every "
        "request, with no integrity protection. Raised to high when the community is a well-known default "
        "(public, private).",
        "Move to SNMPv3 with authentication and privacy (authPriv); until then, change the communities, "
        "make them read-only and allow only the management station.",
        "snmp",
    ),
    CheckSpec(
        "cleartext.mqtt_no_auth",
        "MQTT broker accepts clients without authentication",
        Severity.HIGH,
        "Clients connect to the MQTT broker without a user name or password and are accepted: anyone who "
        "reaches it can read every topic and publish commands or false values.",
        "Require authentication on the broker (user names and passwords or client certificates) and "
        "topic access control lists.",
        "mqtt",
    ),
    CheckSpec(
        "cleartext.mqtt_plaintext",
        "MQTT without TLS",
        Severity.MEDIUM,
        "The MQTT broker is used without TLS: messages, client identifiers and any credentials cross the "
        "network in clear and can be changed in transit.",
        "Enable MQTT over TLS (port 8883) on the broker and its clients and disable the plaintext listener.",
        "mqtt",
    ),
    CheckSpec(
        "credentials.default_account",
        "Default credentials in use",
        Severity.HIGH,
        "A login (Telnet, FTP, HTTP Basic or MQTT) used a user name and password pair that ships as a "
        "default or is in a botnet's dictionary (the default credential lists named below): the sensor "
        "compared the pair in memory and kept only the names of the lists holding it. Critical when the "
        "device accepted the login (anyone can log in with a published password); high when its answer "
        "was not seen. Logins the device refused are not findings.",
        "Change the password now (or disable the account), use personal accounts, and check the device "
        "for changes made with the default account.",
    ),
    CheckSpec(
        "credentials.default_user",
        "Login with a default account name",
        Severity.MEDIUM,
        "A login that the server accepted, with no password seen, used a user name that ships as a "
        "default account (listed in the default credential lists named below): the account may have no "
        "password at all, or the password was not compared (an analysis made before pair matching). "
        "Weaker than a confirmed default credential. Raised to high when the list is the device "
        "vendor's own.",
        "Check the account on the device: set a strong password, or disable the account and use "
        "personal accounts.",
    ),
    CheckSpec(
        "credentials.anonymous_ftp",
        "Anonymous FTP login accepted",
        Severity.MEDIUM,
        "The FTP server accepted an anonymous login: anyone who reaches it can read (and possibly write) "
        "its files.",
        "Disable anonymous FTP on the device.",
        "ftp",
    ),
    CheckSpec(
        "exposure.ot_from_it",
        "Industrial protocol reached from the IT network",
        Severity.HIGH,
        "An industrial protocol server (Modbus, S7comm, DNP3, EtherNet/IP, BACnet, OPC UA) was used by "
        "a client at Purdue level 4 or above, or by an IT workstation or server: the OT network is not "
        "separated from IT for this service.",
        "Block the IT clients at the IT/OT boundary firewall and route legitimate access through a "
        "DMZ (jump host, historian replica).",
    ),
    CheckSpec(
        "exposure.ot_from_internet",
        "Industrial protocol reached from the internet",
        Severity.CRITICAL,
        "An industrial protocol server was used by a client with a public internet address: anyone on "
        "the internet can read and change the process.",
        "Remove the exposure now (firewall, NAT rule, cellular router); use a VPN with multi-factor "
        "authentication for remote access.",
    ),
    CheckSpec(
        "exposure.internet",
        "OT device talks to the internet",
        Severity.HIGH,
        "A device of the OT network (Purdue level 3 or below, or an industrial device type) exchanged "
        "traffic with a public internet address: it has a path to or from the internet that attackers "
        "(or malware on the device) can use.",
        "Check whether the connection is needed; block it at the boundary, or route it through a DMZ "
        "proxy with an allow list.",
    ),
    CheckSpec(
        "tls.old_protocol",
        "Obsolete SSL/TLS version",
        Severity.MEDIUM,
        "The server negotiated a protocol version below TLS 1.2 (TLS 1.0 or 1.1: deprecated by RFC 8996). "
        "Raised to high for SSL 3.0 and 2.0, which are broken.",
        "Update the device's firmware or TLS settings to allow only TLS 1.2 and 1.3.",
        "tls",
    ),
    CheckSpec(
        "tls.expired_certificate",
        "Expired or not yet valid TLS certificate",
        Severity.MEDIUM,
        "The server presented a certificate outside its validity period at the time of the connection: "
        "clients either fail or are configured to ignore certificate errors, which allows "
        "impersonation.",
        "Install a valid certificate (from the site's PKI) and make clients verify it.",
        "tls",
    ),
    CheckSpec(
        "tls.self_signed_certificate",
        "Self-signed TLS certificate",
        Severity.LOW,
        "The server presented a self-signed certificate (often the device's factory certificate): clients "
        "cannot verify it and usually accept any certificate, which allows impersonation.",
        "Issue the device a certificate from the site's PKI and make clients verify it.",
        "tls",
    ),
    CheckSpec(
        "tls.weak_key",
        "Weak TLS certificate key",
        Severity.MEDIUM,
        "The server's certificate has a key shorter than current minimums (RSA or DSA below 2048 bits, "
        "elliptic curves below 224 bits): its private key can be recovered by a determined attacker.",
        "Replace the certificate with one of an RSA 2048-bit (or longer) or a P-256 (or stronger) key.",
        "tls",
    ),
    CheckSpec(
        "tls.weak_signature",
        "TLS certificate signed with MD5 or SHA-1",
        Severity.MEDIUM,
        "The server's certificate is signed with MD5 or SHA-1, for which collisions are practical: "
        "certificates can be forged.",
        "Replace the certificate with one signed with SHA-256 or stronger.",
        "tls",
    ),
    CheckSpec(
        "remote.vnc_no_auth",
        "VNC without authentication",
        Severity.CRITICAL,
        "The VNC server opened a session with security type None: anyone who reaches it sees and controls "
        "the screen (often an HMI) without a password. A server that offers None but was used with a "
        "password here is reported as high.",
        "Require VNC authentication (or better, VeNCrypt/TLS with user accounts) and restrict who may "
        "reach the port.",
        "rfb",
    ),
    CheckSpec(
        "remote.rdp_no_nla",
        "RDP without Network Level Authentication",
        Severity.MEDIUM,
        "The RDP server accepted a connection without Network Level Authentication (CredSSP): a logon "
        "screen is created before the user is authenticated, exposing the server to pre-authentication "
        "attacks and password guessing. Raised to high for standard RDP security (no TLS), whose "
        "encryption is weak and whose server is not authenticated.",
        "Require NLA on the server (Remote Desktop settings or group policy: 'Require user "
        "authentication for remote connections by using Network Level Authentication').",
        "rdp",
    ),
)
CHECKS: dict[str, CheckSpec] = {spec.name: spec for spec in _SPECS}
"""Every configuration check, by name."""


# ---------------------------------------------------------------------------------------------- settings

OT_DEVICE_TYPES = frozenset(
    {
        "plc",
        "rtu",
        "ied",
        "io_module",
        "field_gateway",
        "hmi",
        "engineering_workstation",
        "scada_server",
        "historian",
        "ot_server",
    }
)
EMBEDDED_DEVICE_TYPES = OT_DEVICE_TYPES | {
    "iot_sensor",
    "ip_camera",
    "video_recorder",
    "printer",
    "network_device",
}


@dataclass(frozen=True, slots=True)
class ConfigSettings:
    """Thresholds and address classes of the configuration checks."""

    internal_networks: tuple[str, ...] = ()
    """Networks to treat as internal in addition to the non-global ones of the IANA special-purpose
    registries (RFC 1918, RFC 4193 ULA, link-local, CGNAT, ...): e.g. public ranges a site uses inside."""
    public_networks: tuple[str, ...] = ()
    """Networks to treat as public although they are not global (e.g. a lab using TEST-NET ranges)."""
    it_min_level: int = 4
    """A client at this Purdue level or above is on the IT side."""
    it_device_types: frozenset[str] = frozenset({"it_workstation", "it_server"})
    ot_max_level: int = 3
    """A device at this Purdue level or below is an OT device."""
    ot_device_types: frozenset[str] = OT_DEVICE_TYPES
    """Device types that are OT devices whatever their level."""
    embedded_device_types: frozenset[str] = EMBEDDED_DEVICE_TYPES
    """Device types whose web server is a management interface (``cleartext.http_admin``)."""
    ot_services: frozenset[str] = frozenset({"modbus", "s7comm", "dnp3", "enip", "bacnet", "opcua"})
    """Protocols (``flows.parquet`` ``service``) whose servers are industrial services."""
    admin_uri_pattern: str = (
        r"login|logon|signin|admin|config|setup|setting|passw|auth|manage|maint|firmware|upgrade|"
        r"system|user|cgi-bin|\.cgi|goform|diag"
    )
    """Case-insensitive regular expression: an HTTP request URI that is a management page."""
    min_tls_version: int = 0x0303
    """Lowest acceptable negotiated version (TLS 1.2)."""
    min_rsa_bits: int = 2048
    """RSA and DSA keys shorter than this are weak (NIST SP 800-131A)."""
    min_ec_bits: int = 224
    weak_signature_algorithms: frozenset[str] = frozenset(
        {
            "1.2.840.113549.1.1.4",  # md5WithRSAEncryption
            "1.2.840.113549.1.1.5",  # sha1WithRSAEncryption
            "1.2.840.10045.4.1",  # ecdsa-with-SHA1
            "1.2.840.10040.4.3",  # dsa-with-sha1
            "1.3.14.3.2.29",  # sha1WithRSASignature (OIW)
        }
    )
    internet_exempt_routers: bool = True
    """``exposure.internet`` ignores devices that route (``router`` in devices.json): a gateway's own
    traffic to the internet is its job."""
    internet_require_reply: bool = True
    """``exposure.internet``: a connection opened from the internet counts only if the device answered
    (unanswered probes are background noise)."""
    default_credentials: Path | None = None
    """A default credential file in the format of the built-in one (None: the built-in file). It sets the
    list names, vendors and user names the assessment reads; the pairs are matched by the dissectors,
    which use the built-in lists."""
    evidence_flows: int = 5
    """Evidence flow ids kept per finding (the earliest)."""
    max_peers: int = 20
    """Peer addresses listed per finding (``details['peer_count']`` has the total)."""
    checks: frozenset[str] | None = None
    """Run only these checks (names of :data:`CHECKS`); None runs all."""

    def __post_init__(self) -> None:
        for text in self.internal_networks + self.public_networks:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError as exc:
                raise ConfigCheckError(f"invalid network {text!r} in the configuration settings") from exc
        unknown = (self.checks or frozenset()) - CHECKS.keys()
        if unknown:
            raise ConfigCheckError(f"unknown configuration checks: {', '.join(sorted(unknown))}")


# ---------------------------------------------------------------------------------------------- credentials


def load_default_credentials(path: Path | None = None) -> DefaultCredentials:
    """The built-in default credential lists (shared with the dissectors), or those of ``path`` (same
    YAML format). Raises :class:`ConfigCheckError` for an unreadable or malformed file."""
    try:
        return DefaultCredentials.load(path)
    except CredentialFileError as exc:
        raise ConfigCheckError(str(exc)) from exc


# ---------------------------------------------------------------------------------------------- addresses


@dataclass(frozen=True, slots=True)
class _Device:
    id: str
    level: int | None
    type: str | None
    vendor: str | None
    router: bool


class _AddressBook:
    """Every address seen by the checks, numbered; each with the device that owns it and its class.

    Columns of addresses become integer codes (:meth:`codes`): Python runs once per distinct address.
    """

    def __init__(self, devices: list[dict[str, Any]], settings: ConfigSettings) -> None:
        self.settings = settings
        self.devices: list[_Device] = []
        self._owner: dict[str, int] = {}
        for record in devices:
            index = len(self.devices)
            level = record.get("purdue_level")
            self.devices.append(
                _Device(
                    id=str(record.get("id")),
                    level=level if isinstance(level, int) else None,
                    type=record.get("device_type") if isinstance(record.get("device_type"), str) else None,
                    vendor=record.get("vendor") if isinstance(record.get("vendor"), str) else None,
                    router=bool(record.get("router")),
                )
            )
            for ip in record.get("ips") or ():
                self._owner.setdefault(str(ip), index)
            for entry in record.get("address_history") or ():
                if isinstance(entry, dict) and entry.get("ip"):
                    self._owner.setdefault(str(entry["ip"]), index)
        self.addresses: list[str] = []
        self._index: dict[str, int] = {}
        self._device_of: list[int] = []
        self._public: list[bool] = []
        internal = [ipaddress.ip_network(n, strict=False) for n in settings.internal_networks]
        public = [ipaddress.ip_network(n, strict=False) for n in settings.public_networks]
        self._internal, self._forced_public = internal, public

    def _add(self, address: str) -> int:
        index = self._index.get(address)
        if index is not None:
            return index
        index = self._index[address] = len(self.addresses)
        self.addresses.append(address)
        owner = self._owner.get(address)
        if owner is None:
            owner = self._owner[address] = len(self.devices)
            self.devices.append(_Device(f"ip:{address}", None, None, None, False))
        self._device_of.append(owner)
        self._public.append(self._is_public(address))
        return index

    def _is_public(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if any(ip.version == net.version and ip in net for net in self._forced_public):
            return True
        if any(ip.version == net.version and ip in net for net in self._internal):
            return False
        return ip.is_global and not ip.is_multicast

    def codes(self, column: pa.ChunkedArray | pa.Array) -> I64:
        """The address code of every row of a string column (-1 for nulls)."""
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if not pa.types.is_dictionary(array.type):
            array = array.dictionary_encode()
        values = array.dictionary.to_pylist()
        mapping = np.array(
            [self._add(str(v)) if v is not None else -1 for v in values] + [-1], dtype=np.int64
        )
        indices = pc.fill_null(array.indices, len(values)).to_numpy(zero_copy_only=False).astype(np.int64)
        codes: I64 = mapping[indices]
        return codes

    # Per-address attributes, as arrays indexed by address code (code -1 takes the sentinel at the end).

    def device_of(self, codes: I64) -> I64:
        table = np.array([*self._device_of, -1], dtype=np.int64)
        return table[codes]

    def public(self, codes: I64) -> Mask:
        return np.array([*self._public, False], dtype=np.bool_)[codes]

    def _device_flag(self, codes: I64, predicate: Callable[[_Device], bool]) -> Mask:
        flags = np.array([predicate(d) for d in self.devices] + [False], dtype=np.bool_)
        devices = self.device_of(codes)
        return flags[np.where(devices >= 0, devices, len(self.devices))]

    def ot(self, codes: I64) -> Mask:
        s = self.settings
        return self._device_flag(
            codes,
            lambda d: (d.level is not None and d.level <= s.ot_max_level) or d.type in s.ot_device_types,
        )

    def it(self, codes: I64) -> Mask:
        s = self.settings
        return self._device_flag(
            codes,
            lambda d: (d.level is not None and d.level >= s.it_min_level) or d.type in s.it_device_types,
        )

    def embedded(self, codes: I64) -> Mask:
        return self._device_flag(codes, lambda d: d.type in self.settings.embedded_device_types)

    def router(self, codes: I64) -> Mask:
        return self._device_flag(codes, lambda d: d.router)


# ---------------------------------------------------------------------------------------------- inputs


def _load_devices(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigCheckError(f"cannot read {path}: {exc}") from exc
    devices = document.get("devices") if isinstance(document, dict) else None
    if not isinstance(devices, list):
        raise ConfigCheckError(f"{path}: no 'devices' list (not a devices.json of fieldward analyze)")
    return [d for d in devices if isinstance(d, dict)]


@dataclass(slots=True)
class _Inputs:
    out_dir: Path
    settings: ConfigSettings
    book: _AddressBook
    credentials: DefaultCredentials
    _cache: dict[str, pa.Table | None] = field(default_factory=dict)

    def table(self, name: str, columns: Sequence[str], optional: Sequence[str] = ()) -> pa.Table | None:
        """``flows`` or an event log with these columns (``ts`` as int64 ns), plus those of ``optional``
        that it has (newer fields an older run lacks); None when absent."""
        path = (
            self.out_dir / "flows.parquet" if name == "flows" else self.out_dir / "events" / f"{name}.parquet"
        )
        if not path.is_file():
            return None
        try:
            schema = pq.read_schema(path)
            missing = [c for c in columns if c not in schema.names]
            if missing:
                logger.info("%s lacks %s: its checks are skipped", path, ", ".join(missing))
                return None
            extra = [c for c in optional if c in schema.names and c not in columns]
            table = pq.read_table(path, columns=[*columns, *extra])
        except (OSError, pa.ArrowException) as exc:
            raise ConfigCheckError(f"cannot read {path}: {exc}") from exc
        for name_ in ("ts", "first_ts", "last_ts"):
            if name_ in table.column_names:
                index = table.schema.get_field_index(name_)
                table = table.set_column(index, name_, table[name_].cast(pa.int64()))
        return table


def _ints(column: pa.ChunkedArray, null: int = -1) -> I64:
    return np.asarray(
        pc.fill_null(column.cast(pa.int64()), null).to_numpy(zero_copy_only=False), dtype=np.int64
    )


def _bools(column: pa.ChunkedArray | pa.Array, null: bool = False) -> Mask:
    return np.asarray(pc.fill_null(column, null).to_numpy(zero_copy_only=False), dtype=np.bool_)


def _is_in(column: pa.ChunkedArray, values: Iterable[str]) -> Mask:
    return _bools(pc.is_in(column, value_set=pa.array(sorted(values), type=pa.string())))


def _list_has(column: pa.ChunkedArray, value: int) -> Mask:
    """Rows of a list column holding ``value``."""
    array = column.combine_chunks()
    found = np.zeros(len(array), dtype=np.bool_)
    values = _ints(pc.list_flatten(array))
    parents = np.asarray(pc.list_parent_indices(array).to_numpy(zero_copy_only=False), dtype=np.int64)
    found[parents[values == value]] = True
    return found


def _sender(table: pa.Table, book: _AddressBook) -> tuple[I64, I64, I64, I64]:
    """(sender, sender port, receiver, receiver port) of each event row, from ``is_orig``."""
    orig, resp = book.codes(table["orig_h"]), book.codes(table["resp_h"])
    orig_p, resp_p = _ints(table["orig_p"]), _ints(table["resp_p"])
    is_orig = _bools(table["is_orig"], True)
    return (
        np.where(is_orig, orig, resp),
        np.where(is_orig, orig_p, resp_p),
        np.where(is_orig, resp, orig),
        np.where(is_orig, resp_p, orig_p),
    )


# ---------------------------------------------------------------------------------------------- hits


@dataclass(slots=True)
class _Hits:
    """Rows that show one check, before grouping: one per event or flow."""

    check: str
    device: I64
    """Address code of the device at fault."""
    port: I64
    peer: I64
    """Address code of the other side (-1: none)."""
    ts: I64
    flow: I64
    severity: npt.NDArray[np.int8]
    detail: I64
    """Index into ``details`` (-1: none)."""
    details: list[str]

    @classmethod
    def make(
        cls,
        check: str,
        mask: Mask,
        device: I64,
        port: I64,
        peer: I64,
        ts: I64,
        flow: I64,
        severity: npt.NDArray[np.int8] | None = None,
        detail: I64 | None = None,
        details: list[str] | None = None,
    ) -> _Hits:
        base = RANK[CHECKS[check].severity]
        rows = np.flatnonzero(mask & (device >= 0))
        sev = np.full(mask.shape[0], base, dtype=np.int8) if severity is None else severity
        det = np.full(mask.shape[0], -1, dtype=np.int64) if detail is None else detail
        return cls(
            check,
            device[rows],
            port[rows],
            peer[rows],
            ts[rows],
            flow[rows],
            sev[rows],
            det[rows],
            details or [],
        )

    @classmethod
    def of_events(
        cls,
        check: str,
        mask: Mask,
        table: pa.Table,
        device: I64,
        port: I64,
        peer: I64,
        severity: npt.NDArray[np.int8] | None = None,
        detail: I64 | None = None,
        details: list[str] | None = None,
    ) -> _Hits:
        """:meth:`make` for rows of an event table: the evidence is its ``ts`` and ``flow_id``."""
        ts, flow = _ints(table["ts"]), _ints(table["flow_id"])
        return cls.make(check, mask, device, port, peer, ts, flow, severity, detail, details)


def _levels(mask_high: Mask, low: Severity, high: Severity) -> npt.NDArray[np.int8]:
    return np.where(mask_high, RANK[high], RANK[low]).astype(np.int8)


def _pick(choices: Sequence[Mask], n: int) -> I64:
    """Per row, the index of the first true mask (the detail to show), -1 when none is."""
    out = np.full(n, -1, dtype=np.int64)
    for index in range(len(choices) - 1, -1, -1):
        out[choices[index]] = index
    return out


# ---------------------------------------------------------------------------------------------- the checks


def _flow_service_checks(inputs: _Inputs) -> list[_Hits]:
    """cleartext.telnet / ftp / mqtt_plaintext and the OT exposure checks: from ``flows.parquet``."""
    columns = ["flow_id", "first_ts", "orig_ip", "resp_ip", "resp_port", "service", "resp_pkts"]
    flows = inputs.table("flows", columns)
    if flows is None or flows.num_rows == 0:
        return []
    book, s = inputs.book, inputs.settings
    orig, resp = book.codes(flows["orig_ip"]), book.codes(flows["resp_ip"])
    port, ts, flow = _ints(flows["resp_port"]), _ints(flows["first_ts"]), _ints(flows["flow_id"])
    service = flows["service"]
    out: list[_Hits] = []

    def served(name: str) -> Mask:
        return _bools(pc.equal(service, name))

    telnet = served("telnet")
    if telnet.any():
        typed = _flows_where(inputs, "telnet_login", "cleartext_credentials")
        out.append(
            _Hits.make(
                "cleartext.telnet",
                telnet,
                resp,
                port,
                orig,
                ts,
                flow,
                detail=np.where(np.isin(flow, typed), 0, -1),
                details=["a password was typed in clear"],
            )
        )
    ftp = served("ftp")
    if ftp.any():
        tls = _ftp_tls_flows(inputs)
        sent = np.isin(flow, _flows_where(inputs, "ftp", "cleartext_credentials"))
        out.append(
            _Hits.make(
                "cleartext.ftp",
                ftp & ~np.isin(flow, tls),
                resp,
                port,
                orig,
                ts,
                flow,
                severity=_levels(sent, Severity.MEDIUM, Severity.HIGH),
                detail=np.where(sent, 0, -1),
                details=["a password was sent in clear"],
            )
        )
    mqtt = served("mqtt")
    if mqtt.any():
        out.append(_Hits.make("cleartext.mqtt_plaintext", mqtt, resp, port, orig, ts, flow))
    ot = _is_in(service, s.ot_services)
    if ot.any():
        names = sorted(s.ot_services)
        detail = np.full(flows.num_rows, -1, dtype=np.int64)
        for index, name in enumerate(names):
            detail[ot & served(name)] = index
        ot &= orig != resp  # a host talking to itself exposes nothing
        from_internet = ot & book.public(orig)
        from_it = ot & book.it(orig) & ~from_internet
        out.append(
            _Hits.make(
                "exposure.ot_from_it", from_it, resp, port, orig, ts, flow, detail=detail, details=names
            )
        )
        out.append(
            _Hits.make(
                "exposure.ot_from_internet",
                from_internet,
                resp,
                port,
                orig,
                ts,
                flow,
                detail=detail,
                details=names,
            )
        )
    out.extend(_internet(inputs, flows, orig, resp, port, ts, flow))
    return out


def _internet(
    inputs: _Inputs, flows: pa.Table, orig: I64, resp: I64, port: I64, ts: I64, flow: I64
) -> list[_Hits]:
    book, s = inputs.book, inputs.settings
    orig_public, resp_public = book.public(orig), book.public(resp)
    if not (orig_public.any() or resp_public.any()):
        return []
    eligible_orig = book.ot(orig) & ~orig_public
    eligible_resp = book.ot(resp) & ~resp_public
    if s.internet_exempt_routers:
        eligible_orig &= ~book.router(orig)
        eligible_resp &= ~book.router(resp)
    outbound = eligible_orig & resp_public & (orig != resp)
    inbound = eligible_resp & orig_public & (orig != resp)
    if s.internet_require_reply:
        inbound &= _ints(flows["resp_pkts"], 0) > 0
    device = np.where(outbound, orig, resp)
    peer = np.where(outbound, resp, orig)
    detail = np.where(outbound, 0, 1)
    return [
        _Hits.make(
            "exposure.internet",
            outbound | inbound,
            device,
            port,
            peer,
            ts,
            flow,
            detail=detail,
            details=["connections to the internet", "connections from the internet"],
        )
    ]


def _flows_where(inputs: _Inputs, log: str, flag: str) -> I64:
    """Flow ids of the rows of an event log where a boolean column is true."""
    table = inputs.table(log, ["flow_id", flag])
    if table is None:
        return np.zeros(0, dtype=np.int64)
    return np.unique(_ints(table["flow_id"])[_bools(table[flag])])


def _ftp_tls_flows(inputs: _Inputs) -> I64:
    """FTP control connections that switched to TLS (AUTH TLS/SSL answered 234, RFC 4217)."""
    table = inputs.table("ftp", ["flow_id", "command", "reply_code"])
    if table is None:
        return np.zeros(0, dtype=np.int64)
    mask = _bools(pc.equal(table["command"], "AUTH")) & (_ints(table["reply_code"]) == 234)
    return np.unique(_ints(table["flow_id"])[mask])


def _http_admin(inputs: _Inputs) -> list[_Hits]:
    columns = ["ts", "flow_id", "orig_h", "orig_p", "resp_h", "resp_p", "is_orig", "method", "uri"]
    columns += ["authorization_scheme", "status_code"]
    http = inputs.table("http", columns)
    if http is None or http.num_rows == 0:
        return []
    book = inputs.book
    server, client = book.codes(http["resp_h"]), book.codes(http["orig_h"])
    port = _ints(http["resp_p"])
    basic = _bools(pc.equal(pc.utf8_lower(http["authorization_scheme"]), "basic"))
    admin = _bools(pc.match_substring_regex(http["uri"], inputs.settings.admin_uri_pattern, ignore_case=True))
    challenged = _ints(http["status_code"]) == 401
    embedded = book.embedded(server)
    mask = basic | admin | challenged | embedded
    details = [
        "HTTP Basic authentication",
        "an authentication challenge (401)",
        "login or administration pages",
        "the web server of an embedded device",
    ]
    return [
        _Hits.of_events(
            "cleartext.http_admin",
            mask,
            http,
            server,
            port,
            client,
            severity=_levels(basic, Severity.MEDIUM, Severity.HIGH),
            detail=_pick([basic, challenged, admin, embedded], http.num_rows),
            details=details,
        )
    ]


def _snmp(inputs: _Inputs) -> list[_Hits]:
    columns = ["ts", "flow_id", "orig_h", "orig_p", "resp_h", "resp_p", "is_orig", "version", "pdu_type"]
    columns.append("default_community")
    snmp = inputs.table("snmp", columns)
    if snmp is None or snmp.num_rows == 0:
        return []
    sender, sender_p, receiver, receiver_p = _sender(snmp, inputs.book)
    version = _ints(snmp["version"])
    community = (version == 0) | (version == 1)
    # The agent sends responses, traps and reports; it receives requests (RFC 3416 section 4).
    from_agent = _is_in(snmp["pdu_type"], {"response", "trap", "trapv2", "report", "inform_request"})
    agent = np.where(from_agent, sender, receiver)
    manager = np.where(from_agent, receiver, sender)
    # The finding's port is the well-known side: the agent's (161) for its answers, the receiver's for
    # requests (161) and for traps and informs (the manager's 162), never an ephemeral source port.
    answer = _is_in(snmp["pdu_type"], {"response", "report"})
    port = np.where(answer, sender_p, receiver_p)
    default = _bools(snmp["default_community"])
    return [
        _Hits.of_events(
            "cleartext.snmp",
            community,
            snmp,
            agent,
            port,
            manager,
            severity=_levels(default, Severity.MEDIUM, Severity.HIGH),
            detail=_pick([default, version == 0, version == 1], snmp.num_rows),
            details=["a default community (public/private)", "SNMPv1", "SNMPv2c"],
        )
    ]


def _mqtt_no_auth(inputs: _Inputs) -> list[_Hits]:
    columns = ["ts", "flow_id", "orig_h", "orig_p", "resp_h", "resp_p", "is_orig", "username_present"]
    columns += ["password_present", "connack", "return_code"]
    connect = inputs.table("mqtt_connect", columns)
    if connect is None or connect.num_rows == 0:
        return []
    client, _client_p, broker, broker_p = _sender(connect, inputs.book)
    anonymous = ~_bools(connect["username_present"]) & ~_bools(connect["password_present"])
    answered = _bools(connect["connack"])
    accepted = answered & (_ints(connect["return_code"], 0) == 0)
    mask = anonymous & (accepted | ~answered)
    return [
        _Hits.of_events(
            "cleartext.mqtt_no_auth",
            mask,
            connect,
            broker,
            broker_p,
            client,
            detail=np.where(accepted, 0, 1),
            details=["the broker accepted the connection", "no CONNACK seen"],
        )
    ]


ACCEPTED, REFUSED, UNANSWERED = 1, 0, -1
"""A login's outcome, as the dissector read it."""
HTTP_REFUSED = (401, 403, 407)


def _default_accounts(inputs: _Inputs) -> list[_Hits]:
    """Default credentials (pairs matched by the dissectors), default account names accepted without a
    password, and anonymous FTP logins."""
    base = ["ts", "flow_id", "orig_h", "orig_p", "resp_h", "resp_p", "is_orig"]
    pairs: list[tuple[str, pa.Table, I64, I64, I64, npt.NDArray[np.int8], pa.ChunkedArray | None]] = []
    out: list[_Hits] = []
    telnet = inputs.table(
        "telnet_login", [*base, "username", "cleartext_credentials", "success"], ["default_credential"]
    )
    if telnet is not None and telnet.num_rows:
        client, _cp, server, server_p = _sender(telnet, inputs.book)  # is_orig: the client's side
        outcome = _outcome(telnet["success"])
        pairs.append(("telnet", telnet, server, server_p, client, outcome, telnet["username"]))
        out.extend(_default_users(inputs, telnet, "telnet", "username", outcome, server, server_p, client))
    ftp = inputs.table(
        "ftp", [*base, "user", "cleartext_credentials", "login_success"], ["default_credential"]
    )
    if ftp is not None and ftp.num_rows:
        # The ftp log's is_orig tells who sent the command; logins are client commands to the server.
        client, _cp, server, server_p = _sender(ftp, inputs.book)
        outcome = _outcome(ftp["login_success"])
        pairs.append(("ftp", ftp, server, server_p, client, outcome, ftp["user"]))
        out.extend(_default_users(inputs, ftp, "ftp", "user", outcome, server, server_p, client))
        anonymous = (outcome == ACCEPTED) & _is_in(pc.utf8_lower(ftp["user"]), {"anonymous", "ftp"})
        out.append(
            _Hits.of_events(
                "credentials.anonymous_ftp",
                anonymous,
                ftp,
                server,
                server_p,
                client,
            )
        )
    http = inputs.table("http", [*base, "status_code", "default_credential"])
    if http is not None and http.num_rows:
        client, _cp, server, server_p = _sender(http, inputs.book)  # is_orig: the request's sender
        status = _ints(http["status_code"])
        good = (status >= 200) & (status < 400)
        refused = np.isin(status, HTTP_REFUSED)
        outcome = np.where(good, ACCEPTED, np.where(refused, REFUSED, UNANSWERED)).astype(np.int8)
        pairs.append(("http", http, server, server_p, client, outcome, None))
    mqtt = inputs.table("mqtt_connect", [*base, "connack", "return_code", "default_credential"])
    if mqtt is not None and mqtt.num_rows:
        client, _cp, server, server_p = _sender(mqtt, inputs.book)  # is_orig: the CONNECT's sender
        answered = _bools(mqtt["connack"])
        ok = answered & (_ints(mqtt["return_code"]) == 0)
        outcome = np.where(ok, ACCEPTED, np.where(answered, REFUSED, UNANSWERED)).astype(np.int8)
        pairs.append(("mqtt", mqtt, server, server_p, client, outcome, None))
    for protocol, table, server, server_p, client, outcome, users in pairs:
        if "default_credential" in table.column_names:
            out.append(_default_pairs(table, protocol, outcome, users, server, server_p, client))
    return out


def _outcome(column: pa.ChunkedArray) -> npt.NDArray[np.int8]:
    """A nullable boolean login outcome as ACCEPTED / REFUSED / UNANSWERED."""
    known = _bools(pc.is_valid(column))
    return np.where(known, np.where(_bools(column), ACCEPTED, REFUSED), UNANSWERED).astype(np.int8)


def _encoded(column: pa.ChunkedArray) -> tuple[I64, list[Any]]:
    """Dictionary codes of a column (-1 for nulls) and its distinct values."""
    array = column.combine_chunks().dictionary_encode()
    return _ints(pa.chunked_array([array.indices])), array.dictionary.to_pylist()


def _default_pairs(
    table: pa.Table,
    protocol: str,
    outcome: npt.NDArray[np.int8],
    users: pa.ChunkedArray | None,
    server: I64,
    port: I64,
    client: I64,
) -> _Hits:
    """``credentials.default_account``: logins whose user name / password pair the dissector found in a
    default credential list (``default_credential``), unless the device refused them."""
    labels, label_values = _encoded(table["default_credential"])
    mask = (labels >= 0) & (outcome != REFUSED)
    user_codes, user_values = _encoded(users) if users is not None else (np.full(len(labels), -1), [])
    accepted = outcome == ACCEPTED
    # One detail per distinct (lists, user, accepted): Python runs per distinct combination only.
    key = (labels * (len(user_values) + 1) + (user_codes + 1)) * 2 + accepted
    distinct, inverse = np.unique(key[mask], return_inverse=True)
    detail = np.full(len(labels), -1, dtype=np.int64)
    detail[mask] = inverse.reshape(-1)
    details: list[str] = []
    for value in distinct.tolist():
        rest, ok = divmod(value, 2)
        label, user = divmod(rest, len(user_values) + 1)
        who = f"{protocol} login" + (f" of '{user_values[user - 1]}'" if user > 0 else "")
        verdict = "accepted" if ok else "not answered"
        names = ", ".join(str(label_values[label]).split(","))
        details.append(f"{who} with a default password ({names}), {verdict}")
    return _Hits.of_events(
        "credentials.default_account",
        mask,
        table,
        server,
        port,
        client,
        severity=_levels(accepted, Severity.HIGH, Severity.CRITICAL),
        detail=detail,
        details=details,
    )


def _default_users(
    inputs: _Inputs,
    table: pa.Table,
    protocol: str,
    user_field: str,
    outcome: npt.NDArray[np.int8],
    server: I64,
    port: I64,
    client: I64,
) -> list[_Hits]:
    """``credentials.default_user``: accepted logins with a default account name and no password seen
    (or, in an analysis made before pair matching, whose password was not compared)."""
    compared = "default_credential" in table.column_names
    typed = _bools(table["cleartext_credentials"])
    user_column = table[user_field]
    mask = (outcome == ACCEPTED) & _is_in(user_column, inputs.credentials.users)
    if compared:
        mask &= ~typed
    if not mask.any():
        return []
    codes, names = _encoded(user_column)
    owners = inputs.book.device_of(server)
    devices = inputs.book.devices
    pairs = np.unique(np.stack([codes[mask], owners[mask]], axis=1), axis=0)
    high: set[tuple[int, int]] = set()
    text_of: dict[int, str] = {}
    for code, owner in pairs.tolist():
        name = str(names[code])
        lists = inputs.credentials.lists_with_user(name)
        vendor = (devices[owner].vendor or "").casefold() if owner >= 0 else ""
        if any(item.vendor and vendor and item.vendor.casefold() in vendor for item in lists):
            high.add((code, owner))
        how = "without a password" if compared else "(its password was not compared)"
        text_of[code] = (
            f"{protocol} user '{name}' logged in {how}: a default account of "
            f"{', '.join(item.name for item in lists)}"
        )
    order = sorted(text_of)
    details = [text_of[code] for code in order]
    index = np.full(len(names) + 1, -1, dtype=np.int64)
    index[order] = np.arange(len(order))
    detail = np.where(mask, index[codes], -1)
    raised = np.zeros(len(codes), dtype=np.bool_)
    for code, owner in high:
        raised |= mask & (codes == code) & (owners == owner)
    return [
        _Hits.of_events(
            "credentials.default_user",
            mask,
            table,
            server,
            port,
            client,
            severity=_levels(raised, Severity.MEDIUM, Severity.HIGH),
            detail=detail,
            details=details,
        )
    ]


def _tls(inputs: _Inputs) -> list[_Hits]:
    out: list[_Hits] = []
    s = inputs.settings
    base = ["ts", "flow_id", "orig_h", "orig_p", "resp_h", "resp_p", "is_orig"]
    hello = inputs.table("tls_server_hello", [*base, "selected_version", "version_name"])
    if hello is not None and hello.num_rows:
        server, server_p, client, _clp = _sender(hello, inputs.book)
        version = _ints(hello["selected_version"])
        old = (version >= 0) & (version < s.min_tls_version)
        broken = old & (version < 0x0301)
        names = hello["version_name"].combine_chunks().dictionary_encode()
        out.append(
            _Hits.of_events(
                "tls.old_protocol",
                old,
                hello,
                server,
                server_p,
                client,
                severity=_levels(broken, Severity.MEDIUM, Severity.HIGH),
                detail=_ints(names.indices),
                details=[str(v) for v in names.dictionary.to_pylist()],
            )
        )
    columns = [*base, "chain_index", "not_valid_before", "not_valid_after", "key_type", "key_bits"]
    columns += ["signature_algorithm", "self_signed"]
    certs = inputs.table("tls_certificate", columns)
    if certs is None or certs.num_rows == 0:
        return out
    server, server_p, client, _clp = _sender(certs, inputs.book)
    ts, flow = _ints(certs["ts"]), _ints(certs["flow_id"])
    leaf = _ints(certs["chain_index"]) == 0
    seconds = ts // 1_000_000_000
    expired = leaf & (seconds > _ints(certs["not_valid_after"], np.iinfo(np.int64).max))
    early = leaf & (seconds < _ints(certs["not_valid_before"], np.iinfo(np.int64).min))
    out.append(
        _Hits.make(
            "tls.expired_certificate",
            expired | early,
            server,
            server_p,
            client,
            ts,
            flow,
            detail=np.where(expired, 0, 1),
            details=["expired", "not yet valid"],
        )
    )
    self_signed = leaf & _bools(certs["self_signed"])
    out.append(_Hits.make("tls.self_signed_certificate", self_signed, server, server_p, client, ts, flow))
    key_type = certs["key_type"]
    bits = _ints(certs["key_bits"], np.iinfo(np.int64).max)
    rsa = _is_in(key_type, {"rsa", "dsa"})
    ec = _bools(pc.equal(key_type, "ecdsa"))
    weak = leaf & ((rsa & (bits < s.min_rsa_bits)) | (ec & (bits < s.min_ec_bits)))
    labels = pc.binary_join_element_wise(key_type, pc.cast(certs["key_bits"], pa.string()), " ")
    encoded = pc.fill_null(labels, "").combine_chunks().dictionary_encode()
    out.append(
        _Hits.make(
            "tls.weak_key",
            weak,
            server,
            server_p,
            client,
            ts,
            flow,
            detail=_ints(encoded.indices),
            details=[_key_label(str(t)) for t in encoded.dictionary.to_pylist()],
        )
    )
    signature = certs["signature_algorithm"]
    weak_signature = leaf & ~self_signed & _is_in(signature, s.weak_signature_algorithms)
    encoded = signature.combine_chunks().dictionary_encode()
    out.append(
        _Hits.make(
            "tls.weak_signature",
            weak_signature,
            server,
            server_p,
            client,
            ts,
            flow,
            detail=_ints(encoded.indices),
            details=[SIGNATURE_NAMES.get(str(v), str(v)) for v in encoded.dictionary.to_pylist()],
        )
    )
    return out


SIGNATURE_NAMES = {
    "1.2.840.113549.1.1.4": "md5WithRSAEncryption",
    "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.2.840.10045.4.1": "ecdsa-with-SHA1",
    "1.2.840.10040.4.3": "dsa-with-sha1",
    "1.3.14.3.2.29": "sha1WithRSASignature",
}


def _key_label(text: str) -> str:
    """``rsa 1024`` (key type and size) as ``an RSA key of 1024 bits``."""
    kind, _, bits = text.partition(" ")
    return f"an {kind.upper()} key of {bits} bits" if bits else text


def _remote_access(inputs: _Inputs) -> list[_Hits]:
    out: list[_Hits] = []
    base = ["ts", "flow_id", "orig_h", "orig_p", "resp_h", "resp_p", "is_orig"]
    rfb = inputs.table("rfb", [*base, "no_auth", "security_types"])
    if rfb is not None and rfb.num_rows:
        client, _cp, server, server_p = _sender(rfb, inputs.book)  # is_orig: the client's side
        no_auth = _bools(rfb["no_auth"])
        offered = _list_has(rfb["security_types"], 1)
        out.append(
            _Hits.of_events(
                "remote.vnc_no_auth",
                no_auth | offered,
                rfb,
                server,
                server_p,
                client,
                severity=_levels(no_auth, Severity.HIGH, Severity.CRITICAL),
                detail=np.where(no_auth, 0, 1),
                details=["a session opened with security type None", "security type None offered"],
            )
        )
    rdp = inputs.table("rdp", [*base, "selected_protocol", "nla"])
    if rdp is not None and rdp.num_rows:
        client, _cp, server, server_p = _sender(rdp, inputs.book)
        selected = rdp["selected_protocol"]
        standard = _bools(pc.equal(selected, "RDP"))
        mask = _bools(pc.is_valid(selected)) & ~_bools(rdp["nla"])
        names = pc.fill_null(selected, "").combine_chunks().dictionary_encode()
        out.append(
            _Hits.of_events(
                "remote.rdp_no_nla",
                mask,
                rdp,
                server,
                server_p,
                client,
                severity=_levels(standard, Severity.MEDIUM, Severity.HIGH),
                detail=_ints(names.indices),
                details=[_rdp_label(str(v)) for v in names.dictionary.to_pylist()],
            )
        )
    return out


def _rdp_label(protocol: str) -> str:
    return (
        "standard RDP security (no TLS)" if protocol == "RDP" else f"security protocol {protocol} without NLA"
    )


_CHECK_FUNCTIONS: tuple[Callable[[_Inputs], list[_Hits]], ...] = (
    _flow_service_checks,
    _http_admin,
    _snmp,
    _mqtt_no_auth,
    _default_accounts,
    _tls,
    _remote_access,
)


# ---------------------------------------------------------------------------------------------- grouping


def _iso(ns: I64) -> list[str]:
    text = np.datetime_as_string(ns.astype("datetime64[ns]"), unit="ns")
    return [f"{t}Z" for t in text.tolist()]


def _distinct(group: I64, values: I64, n: int) -> tuple[I64, I64, I64]:
    """Distinct (group, value) pairs, ordered by group then value: (groups, values, count per group)."""
    if group.shape[0] == 0:
        return group, values, np.zeros(n, dtype=np.int64)
    order = np.lexsort((values, group))
    g, v = group[order], values[order]
    new = np.r_[True, (g[1:] != g[:-1]) | (v[1:] != v[:-1])]
    return g[new], v[new], np.bincount(g[new], minlength=n)


def _group(hits: _Hits, inputs: _Inputs) -> list[ConfigFinding]:
    """One finding per (device, port) of a check's hits."""
    if hits.device.shape[0] == 0:
        return []
    settings, book = inputs.settings, inputs.book
    devices = book.device_of(hits.device)
    key = devices * 65537 + (hits.port + 1)
    keys, group = np.unique(key, return_inverse=True)
    group = group.reshape(-1).astype(np.int64)
    n = keys.shape[0]
    # Per (group, flow): the first and last time, the connections, and the earliest flows as evidence.
    order = np.lexsort((hits.ts, hits.flow, group))
    g, f, t = group[order], hits.flow[order], hits.ts[order]
    pair_start = np.flatnonzero(np.r_[True, (g[1:] != g[:-1]) | (f[1:] != f[:-1])])
    pair_group, pair_flow, pair_first = g[pair_start], f[pair_start], t[pair_start]
    pair_last = np.maximum.reduceat(t, pair_start)
    group_start = np.flatnonzero(np.r_[True, pair_group[1:] != pair_group[:-1]])
    first = np.minimum.reduceat(pair_first, group_start)
    last = np.maximum.reduceat(pair_last, group_start)
    count = np.bincount(pair_group, minlength=n)
    by_time = np.lexsort((pair_first, pair_group))
    rank = np.arange(by_time.shape[0]) - np.repeat(group_start, count)
    chosen = by_time[rank < settings.evidence_flows]
    evidence_group, evidence_flow = pair_group[chosen], pair_flow[chosen]
    severity = np.maximum.reduceat(hits.severity[order], np.flatnonzero(np.r_[True, g[1:] != g[:-1]]))
    known_peer = hits.peer >= 0
    peer_group, peer_code, peer_count = _distinct(group[known_peer], hits.peer[known_peer], n)
    has_detail = hits.detail >= 0
    detail_group, detail_code, _ = _distinct(group[has_detail], hits.detail[has_detail], n)
    spec = CHECKS[hits.check]
    first_text, last_text = _iso(first), _iso(last)
    bounds = [
        (values.tolist(), np.searchsorted(groups, np.arange(n + 1)).tolist())
        for groups, values in (
            (evidence_group, evidence_flow),
            (peer_group, peer_code),
            (detail_group, detail_code),
        )
    ]
    (evidence_all, evidence_at), (peers_all, peers_at), (details_all, details_at) = bounds
    addresses, names = book.addresses, [d.id for d in book.devices]
    keys_list, severity_list = keys.tolist(), severity.tolist()
    count_list, peer_count_list = count.tolist(), peer_count.tolist()
    findings = []
    for index in range(n):
        device, port = divmod(keys_list[index], 65537)
        observed = [hits.details[d] for d in details_all[details_at[index] : details_at[index + 1]]]
        peers = peers_all[peers_at[index] : min(peers_at[index + 1], peers_at[index] + settings.max_peers)]
        explanation = spec.explanation
        if observed:
            explanation += f" Observed: {'; '.join(observed)}."
        findings.append(
            ConfigFinding(
                check=spec.name,
                device_id=names[device],
                title=spec.title,
                severity=SEVERITIES[severity_list[index]],
                explanation=explanation,
                recommendation=spec.recommendation,
                protocol=spec.protocol,
                port=port - 1 if port - 1 != NO_PORT else None,
                peers=tuple(addresses[p] for p in peers),
                first_seen=first_text[index],
                last_seen=last_text[index],
                count=count_list[index],
                evidence=tuple(
                    e for e in evidence_all[evidence_at[index] : evidence_at[index + 1]] if e >= 0
                ),
                details={"observed": observed, "peer_count": peer_count_list[index]},
            )
        )
    return findings


def check_configurations(out_dir: Path, settings: ConfigSettings | None = None) -> list[ConfigFinding]:
    """The insecure configurations shown by an analysis folder of ``fieldward analyze``.

    Reads ``devices.json``, ``flows.parquet`` and ``events/*.parquet`` (a missing file skips the checks
    that need it) and returns one finding per (check, device, port), worst first. Raises
    :class:`ConfigCheckError` for an unreadable input.
    """
    settings = settings or ConfigSettings()
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ConfigCheckError(f"{out_dir} is not an analysis folder (run fieldward analyze --out first)")
    inputs = _Inputs(
        out_dir,
        settings,
        _AddressBook(_load_devices(out_dir / "devices.json"), settings),
        load_default_credentials(settings.default_credentials),
    )
    findings: list[ConfigFinding] = []
    for function in _CHECK_FUNCTIONS:
        for hits in function(inputs):
            if settings.checks is None or hits.check in settings.checks:
                findings.extend(_group(hits, inputs))
    findings.sort(key=lambda f: (-RANK[f.severity], f.check, f.device_id, f.port or 0))
    return findings
