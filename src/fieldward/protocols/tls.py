"""TLS / SSL dissector: the cleartext part of a TLS session (hellos, certificates, alerts, fingerprints).

What is dissected, with the specification it follows:

- the **record layer** (RFC 5246 6.2, RFC 8446 5.1): content type, version and 2-byte length of every
  record, and the SSL 2.0-compatible ClientHello (RFC 6101 appendix E.2, draft-hickman-netscape-ssl-00
  section "Client-Hello"), whose 2-byte header has the high bit set;
- **handshake reassembly** (RFC 8446 5.1): handshake messages split across records, or several in one
  record, are cut by their 4-byte header, per direction, until that direction's ChangeCipherSpec (or,
  in TLS 1.3, the ServerHello) makes the rest of it encrypted;
- **ClientHello** (RFC 8446 4.1.2): version, session id, cipher suites, compression methods, every
  extension type, and the bodies of server_name (RFC 6066 3), ALPN (RFC 7301), supported_groups and
  ec_point_formats (RFC 8422 5.1), signature_algorithms (RFC 8446 4.2.3) and supported_versions (RFC 8446
  4.2.1); with the **JA3** fingerprint (salesforce/ja3: GREASE values of RFC 8701 removed from ciphers,
  extensions and groups) and the **JA4** fingerprint (FoxIO ``technical_details/JA4.md``);
- **ServerHello** (RFC 8446 4.1.3): version, chosen cipher suite and compression, extensions, the version
  selected by supported_versions, the ALPN protocol, HelloRetryRequest; with **JA3S**;
- **Certificate** (RFC 5246 7.4.2; TLS 1.3 sends it encrypted): each DER certificate of the chain is read
  with the ``cryptography`` package: subject, issuer, serial, validity, subject alternative names, key
  type and size, signature algorithm, fingerprints, and whether it is self-signed;
- **Alert** (RFC 8446 6): level and description of cleartext alerts; encrypted alerts are reported as
  such.

Application data and anything after a direction's ChangeCipherSpec are not decrypted. Malformed input is
reported as ``tls_*`` weirds and the flow keeps being analysed; the dissector never judges the traffic.
"""

from __future__ import annotations

import hashlib
import struct
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

from fieldward.protocols.base import Dissector, Event, FlowInfo, PduContext, Transport, Verdict

RECORD = struct.Struct(">BHH")
"""Content type, protocol version, length."""
RECORD_HEADER = RECORD.size
CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
HEARTBEAT = 24
CONTENT_TYPES = frozenset({CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT})
MAX_RECORD = (1 << 14) + 2048
"""TLSCiphertext.length limit (RFC 5246 6.2.3)."""
MAX_HANDSHAKE = 1 << 18
"""Largest handshake message reassembled (a 256 KiB certificate chain); larger ones are skipped."""
MAX_CERTIFICATES = 32
"""Certificates of one chain parsed; further ones are reported with a weird."""
MAX_LIST = 4096
"""Entries kept per list (cipher suites, extensions, names)."""

CLIENT_HELLO = 1
SERVER_HELLO = 2
CERTIFICATE = 11
SSL2_CLIENT_HELLO = 1
SSL2_HEADER_MIN = 9
"""SSLv2 ClientHello body without lists: type, version, three 2-byte lengths."""

TLS13 = 0x0304
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
"""ServerHello.random of a HelloRetryRequest (RFC 8446 4.1.3)."""

EXT_SERVER_NAME = 0
EXT_SUPPORTED_GROUPS = 10
EXT_EC_POINT_FORMATS = 11
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43

VERSION_NAMES: dict[int, str] = {
    0x0002: "SSLv2",
    0x0300: "SSLv3",
    0x0301: "TLSv10",
    0x0302: "TLSv11",
    0x0303: "TLSv12",
    0x0304: "TLSv13",
}
"""Protocol version names, as Zeek's ``SSL::version_strings``."""

JA4_VERSIONS: dict[int, str] = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}
"""JA4 version codes (FoxIO JA4 spec, "TLS and DTLS Version")."""

ALERT_LEVELS: dict[int, str] = {1: "warning", 2: "fatal"}
ALERT_DESCRIPTIONS: dict[int, str] = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    21: "decryption_failed",
    22: "record_overflow",
    30: "decompression_failure",
    40: "handshake_failure",
    41: "no_certificate",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    60: "export_restriction",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    109: "missing_extension",
    110: "unsupported_extension",
    111: "certificate_unobtainable",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    114: "bad_certificate_hash_value",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}
"""AlertDescription names (IANA TLS Alerts registry)."""


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE value: 0x?a?a with equal bytes (0x0a0a, 0x1a1a, ... 0xfafa)."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def version_name(version: int) -> str:
    return VERSION_NAMES.get(version, f"unknown-{version:#06x}")


# ---------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsClientHello(Event):
    """One ClientHello (TLS or SSLv2-compatible): ``events/tls_client_hello.parquet``."""

    log: ClassVar[str] = "tls_client_hello"

    record_version: int
    version: int
    version_name: str
    sslv2: bool
    session_id: str
    cipher_suites: list[int]
    compression_methods: list[int]
    extensions: list[int]
    server_name: str | None
    alpn: list[str]
    supported_groups: list[int]
    ec_point_formats: list[int]
    signature_algorithms: list[int]
    supported_versions: list[int]
    ja3: str
    ja3_string: str
    ja4: str | None
    ja4_r: str | None
    inner_protocol: str | None
    """What runs inside the tunnel, from the ALPN offer or else the server's well-known TLS port."""


# Application protocols inside TLS: ALPN identifiers first (IANA registry; AWS IoT's MQTT ones), then
# the IANA well-known ports of the TLS variants of a protocol (e.g. MQTT over TLS on 8883).
ALPN_INNER: dict[str, str] = {
    "http/1.1": "http",
    "http/1.0": "http",
    "h2": "http",
    "h3": "http",
    "mqtt": "mqtt",
    "x-amzn-mqtt-ca": "mqtt",
    "coap": "coap",
    "ftp": "ftp",
    "imap": "imap",
    "pop3": "pop3",
    "smb": "smb",
    "dot": "dns",
}
TLS_PORT_INNER: dict[int, str] = {
    443: "http",
    8443: "http",
    2083: "http",
    465: "smtp",
    636: "ldap",
    853: "dns",
    989: "ftp",
    990: "ftp",
    992: "telnet",
    993: "imap",
    995: "pop3",
    4843: "opcua",
    5061: "sip",
    8883: "mqtt",
    5684: "coap",
    19999: "dnp3",
    2221: "enip",
    802: "modbus",
}


def inner_protocol(alpn: list[str], server_port: int) -> str | None:
    """The application protocol a ClientHello most likely carries (ALPN wins over the port)."""
    for offer in alpn:
        name = ALPN_INNER.get(offer.lower())
        if name is not None:
            return name
    return TLS_PORT_INNER.get(server_port)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsServerHello(Event):
    """One ServerHello (or HelloRetryRequest): ``events/tls_server_hello.parquet``."""

    log: ClassVar[str] = "tls_server_hello"

    record_version: int
    version: int
    selected_version: int
    version_name: str
    session_id: str
    cipher_suite: int
    compression_method: int
    extensions: list[int]
    alpn: str | None
    hello_retry_request: bool
    ja3s: str
    ja3s_string: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsCertificate(Event):
    """One certificate of a Certificate message (TLS 1.2 and older): ``events/tls_certificate.parquet``."""

    log: ClassVar[str] = "tls_certificate"

    chain_index: int
    cert_length: int
    x509_version: int
    serial: str
    subject: str
    issuer: str
    not_valid_before: int
    not_valid_after: int
    key_type: str
    key_bits: int | None
    key_curve: str | None
    signature_algorithm: str
    san_dns: list[str]
    san_ip: list[str]
    san_email: list[str]
    san_uri: list[str]
    self_signed: bool
    sha1: str
    sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsAlert(Event):
    """One alert record: ``events/tls_alert.parquet``."""

    log: ClassVar[str] = "tls_alert"

    encrypted: bool
    level: int | None = None
    level_name: str | None = None
    description: int | None = None
    description_name: str | None = None


# ---------------------------------------------------------------------------------------- reader


class _ShortError(Exception):
    """A length field points past the end of its container."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int) -> bytes:
        if size > len(self.data) - self.pos:
            raise _ShortError(f"{size} bytes wanted at offset {self.pos}, {len(self.data) - self.pos} left")
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def vector8(self) -> bytes:
        return self.take(self.u8())

    def vector16(self) -> bytes:
        return self.take(self.u16())


def _u16_list(data: bytes) -> list[int]:
    if len(data) % 2:
        raise _ShortError(f"list of 16-bit values has odd length {len(data)}")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, min(len(data), 2 * MAX_LIST), 2)]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------------------- fingerprints


def _dashed(values: list[int]) -> str:
    return "-".join(str(v) for v in values if not is_grease(v))


def ja3_string(
    version: int, ciphers: list[int], extensions: list[int], groups: list[int], point_formats: list[int]
) -> str:
    """JA3: ``SSLVersion,Ciphers,Extensions,EllipticCurves,EllipticCurvePointFormats`` (decimal, GREASE
    removed from the first three lists)."""
    points = "-".join(str(v) for v in point_formats)
    return f"{version},{_dashed(ciphers)},{_dashed(extensions)},{_dashed(groups)},{points}"


def ja3s_string(version: int, cipher: int, extensions: list[int]) -> str:
    """JA3S: ``SSLVersion,Cipher,Extensions``."""
    return f"{version},{cipher},{_dashed(extensions)}"


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _ja4_alpn(first: bytes | None) -> str:
    if not first:
        return "00"
    head, tail = chr(first[0]), chr(first[-1])
    if head.isascii() and head.isalnum() and tail.isascii() and tail.isalnum():
        return head + tail
    hexed = first.hex()
    return hexed[0] + hexed[-1]


def _ja4_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else "000000000000"


def ja4(
    *,
    version: int,
    ciphers: list[int],
    extensions: list[int],
    has_sni: bool,
    first_alpn: bytes | None,
    supported_versions: list[int],
    signature_algorithms: list[int],
    transport: str = "t",
) -> tuple[str, str]:
    """JA4 and its raw sorted form JA4_r (FoxIO ``technical_details/JA4.md``)."""
    offered = [v for v in supported_versions if not is_grease(v)]
    best = max(offered) if offered else version
    ciphers = [c for c in ciphers if not is_grease(c)]
    extensions = [e for e in extensions if not is_grease(e)]
    part_a = (
        f"{transport}{JA4_VERSIONS.get(best, '00')}{'d' if has_sni else 'i'}"
        f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{_ja4_alpn(first_alpn)}"
    )
    cipher_list = ",".join(f"{c:04x}" for c in sorted(ciphers))
    ext_list = ",".join(f"{e:04x}" for e in sorted(extensions) if e not in (EXT_SERVER_NAME, EXT_ALPN))
    sigs = ",".join(f"{s:04x}" for s in signature_algorithms if not is_grease(s))
    ext_text = f"{ext_list}_{sigs}" if ext_list and sigs else ext_list
    fingerprint = f"{part_a}_{_ja4_hash(cipher_list)}_{_ja4_hash(ext_text)}"
    raw = f"{part_a}_{cipher_list}_{ext_text}"
    return fingerprint, raw


# ---------------------------------------------------------------------------------------- hellos


@dataclass(slots=True)
class _Hello:
    """The parsed fields of a ClientHello."""

    version: int = 0
    session_id: bytes = b""
    ciphers: list[int] = field(default_factory=list)
    compression: list[int] = field(default_factory=list)
    extensions: list[int] = field(default_factory=list)
    server_name: str | None = None
    alpn: list[bytes] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    point_formats: list[int] = field(default_factory=list)
    signature_algorithms: list[int] = field(default_factory=list)
    supported_versions: list[int] = field(default_factory=list)
    bad_extensions: list[str] = field(default_factory=list)


def _client_extension(hello: _Hello, kind: int, body: bytes) -> None:
    r = _Reader(body)
    if kind == EXT_SERVER_NAME:
        names = _Reader(r.vector16())
        while names.left():
            name_type, name = names.u8(), names.vector16()
            if name_type == 0 and hello.server_name is None:
                hello.server_name = _text(name)
    elif kind == EXT_ALPN:
        names = _Reader(r.vector16())
        while names.left() and len(hello.alpn) < MAX_LIST:
            hello.alpn.append(names.vector8())
    elif kind == EXT_SUPPORTED_GROUPS:
        hello.groups = _u16_list(r.vector16())
    elif kind == EXT_EC_POINT_FORMATS:
        hello.point_formats = list(r.vector8())
    elif kind == EXT_SIGNATURE_ALGORITHMS:
        hello.signature_algorithms = _u16_list(r.vector16())
    elif kind == EXT_SUPPORTED_VERSIONS:
        hello.supported_versions = _u16_list(r.vector8())
    else:
        return
    if r.left():
        raise _ShortError(f"{r.left()} bytes after the extension's data")


def _extensions(r: _Reader) -> list[tuple[int, bytes]]:
    """The optional extensions block at the end of a hello (absent in SSLv3-era hellos)."""
    if not r.left():
        return []
    block = _Reader(r.vector16())
    out: list[tuple[int, bytes]] = []
    while block.left():
        kind = block.u16()
        out.append((kind, block.vector16()))
        if len(out) > MAX_LIST:
            raise _ShortError(f"more than {MAX_LIST} extensions")
    return out


def parse_client_hello(body: bytes) -> _Hello:
    """Raises :class:`_ShortError` when the hello's structure is broken (extension bodies excepted)."""
    r = _Reader(body)
    hello = _Hello(version=r.u16())
    r.take(32)  # random
    hello.session_id = r.vector8()
    hello.ciphers = _u16_list(r.vector16())
    hello.compression = list(r.vector8())
    for kind, data in _extensions(r):
        hello.extensions.append(kind)
        try:
            _client_extension(hello, kind, data)
        except _ShortError as exc:
            hello.bad_extensions.append(f"extension {kind}: {exc}")
    return hello


def parse_sslv2_client_hello(body: bytes) -> _Hello:
    """SSLv2 CLIENT-HELLO: type, version, cipher-specs length, session-id length, challenge length."""
    r = _Reader(body)
    if r.u8() != SSL2_CLIENT_HELLO:
        raise _ShortError("not a CLIENT-HELLO")
    hello = _Hello(version=r.u16())
    spec_len, sid_len, challenge_len = r.u16(), r.u16(), r.u16()
    if spec_len % 3:
        raise _ShortError(f"cipher specs length {spec_len} is not a multiple of 3")
    specs = r.take(spec_len)
    hello.ciphers = [int.from_bytes(specs[i : i + 3], "big") for i in range(0, len(specs), 3)][:MAX_LIST]
    hello.session_id = r.take(sid_len)
    r.take(challenge_len)
    return hello


# ---------------------------------------------------------------------------------------- certificates


def _certificate_event(der: bytes, index: int, ctx: PduContext) -> TlsCertificate | None:
    """Read one DER certificate with ``cryptography``; None (and a weird) when it cannot be read."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. negative serial numbers: still readable
            cert = x509.load_der_x509_certificate(der)
            serial = cert.serial_number
            subject = cert.subject.rfc4514_string()
            issuer = cert.issuer.rfc4514_string()
            before = int(cert.not_valid_before_utc.timestamp())
            after = int(cert.not_valid_after_utc.timestamp())
            version = cert.version.value + 1
            signature = cert.signature_algorithm_oid.dotted_string
    except Exception as exc:  # any DER or X.509 structure error
        ctx.weird("tls_bad_certificate", f"certificate {index}: {type(exc).__name__}: {exc}"[:200])
        return None
    key_type, key_bits, curve = "unknown", None, None
    try:
        key = cert.public_key()
    except Exception as exc:  # unsupported or malformed key: keep the rest
        ctx.weird("tls_bad_certificate_key", f"certificate {index}: {type(exc).__name__}")
    else:
        if isinstance(key, rsa.RSAPublicKey):
            key_type, key_bits = "rsa", key.key_size
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key_type, key_bits, curve = "ecdsa", key.key_size, key.curve.name
        elif isinstance(key, dsa.DSAPublicKey):
            key_type, key_bits = "dsa", key.key_size
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key_type, key_bits = "ed25519", 256
        elif isinstance(key, ed448.Ed448PublicKey):
            key_type, key_bits = "ed448", 456
        elif isinstance(key, x25519.X25519PublicKey):
            key_type, key_bits = "x25519", 256
        elif isinstance(key, x448.X448PublicKey):
            key_type, key_bits = "x448", 448
    dns: list[str] = []
    ips: list[str] = []
    emails: list[str] = []
    uris: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        ips = [str(v) for v in san.get_values_for_type(x509.IPAddress)]
        emails = [str(v) for v in san.get_values_for_type(x509.RFC822Name)]
        uris = [str(v) for v in san.get_values_for_type(x509.UniformResourceIdentifier)]
    except x509.ExtensionNotFound:
        pass
    except Exception as exc:  # a malformed extension block: the certificate is still reported
        ctx.weird("tls_bad_certificate_extension", f"certificate {index}: {type(exc).__name__}")
    self_signed = False
    if cert.issuer == cert.subject:
        try:
            cert.verify_directly_issued_by(cert)
            self_signed = True
        except Exception:  # wrong signature, or an algorithm that cannot be checked
            self_signed = False
    return TlsCertificate(
        **ctx.where(),
        chain_index=index,
        cert_length=len(der),
        x509_version=version,
        serial=_serial_hex(serial),
        subject=subject,
        issuer=issuer,
        not_valid_before=before,
        not_valid_after=after,
        key_type=key_type,
        key_bits=key_bits,
        key_curve=curve,
        signature_algorithm=signature,
        san_dns=dns[:MAX_LIST],
        san_ip=ips[:MAX_LIST],
        san_email=emails[:MAX_LIST],
        san_uri=uris[:MAX_LIST],
        self_signed=self_signed,
        sha1=cert.fingerprint(hashes.SHA1()).hex(),  # noqa: S303 - a fingerprint, not security
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def _serial_hex(serial: int) -> str:
    """Upper-case hex of the serial's magnitude, an even number of digits (as OpenSSL and Zeek print it)."""
    text = f"{abs(serial):X}"
    text = text if len(text) % 2 == 0 else "0" + text
    return ("-" + text) if serial < 0 else text


# ---------------------------------------------------------------------------------------- dissector


def _ssl2_length(data: bytes) -> int:
    return ((data[0] & 0x7F) << 8) | data[1]


class TlsDissector(Dissector):
    """TLS 1.0-1.3 and SSL 3.0 over TCP (SSL 2.0-compatible ClientHellos included)."""

    name = "tls"
    description = "TLS/SSL: record layer, hellos with JA3/JA3S/JA4, certificates, alerts"
    transports = frozenset({Transport.TCP})
    ports = frozenset({443, 465, 636, 853, 989, 990, 992, 993, 994, 995, 4843, 5061, 8443, 8883, 2083})
    event_types = (TlsClientHello, TlsServerHello, TlsCertificate, TlsAlert)

    def __init__(self, flow: FlowInfo) -> None:
        super().__init__(flow)
        self._sslv2: list[bool | None] = [None, None]
        """Per direction (0 originator): None before the first record, then whether it speaks SSLv2."""
        self._encrypted = [False, False]
        self._handshake = (bytearray(), bytearray())
        self._skip = [0, 0]
        """Bytes of an oversized handshake message still to be skipped, per direction."""
        self._tls13 = False
        self._record_version = [0, 0]
        """Version of the record in which the buffered handshake bytes start, per direction."""

    # ------------------------------------------------------------------ recognition and framing

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        if not data:
            return Verdict.MAYBE
        if data[0] & 0x80:
            return _recognize_sslv2(data)
        if data[0] != HANDSHAKE:
            return Verdict.NO
        if len(data) >= 2 and data[1] != 3:
            return Verdict.NO
        if len(data) >= 3 and data[2] > 4:
            return Verdict.NO
        if len(data) < 6:
            return Verdict.MAYBE
        length = (data[3] << 8) | data[4]
        if not 4 <= length <= MAX_RECORD or data[5] not in (CLIENT_HELLO, SERVER_HELLO):
            return Verdict.NO
        if len(data) < 11:
            return Verdict.MAYBE
        body_length = int.from_bytes(data[6:9], "big")
        # The hello's own version (major 3), and a body at least as long as its fixed part.
        if data[9] != 3 or data[10] > 4 or body_length < 38:
            return Verdict.NO
        return Verdict.YES

    def frame(self, data: bytes, is_orig: bool) -> int:
        if len(data) < 2:
            return 0
        sslv2 = self._sslv2[0 if is_orig else 1]
        if data[0] & 0x80 and sslv2 is not False:
            size = 2 + _ssl2_length(data)
            return size if len(data) >= size else 0
        if data[0] not in CONTENT_TYPES or data[1] != 3:
            return -1
        if len(data) < RECORD_HEADER:
            return 0
        length = (data[3] << 8) | data[4]
        if length > MAX_RECORD:
            return -1
        size = RECORD_HEADER + length
        return size if len(data) >= size else 0

    # ------------------------------------------------------------------ parsing

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        """One record (cut by :meth:`frame`)."""
        d = 0 if ctx.is_orig else 1
        if not pdu:
            return
        if pdu[0] & 0x80 and self._sslv2[d] is not False:
            first = self._sslv2[d] is None
            self._sslv2[d] = True
            if first:
                self._sslv2_record(pdu, ctx)
            return
        if len(pdu) < RECORD_HEADER:
            ctx.weird("tls_truncated_record", f"{len(pdu)} bytes, a record header needs {RECORD_HEADER}")
            return
        content_type, version, length = RECORD.unpack_from(pdu)
        if content_type not in CONTENT_TYPES or version >> 8 != 3:
            ctx.weird("tls_bad_record_header", f"content type {content_type}, version {version:#06x}")
            return
        self._sslv2[d] = False
        body = pdu[RECORD_HEADER:]
        if length != len(body):
            ctx.weird("tls_bad_record_length", f"record length {length}, {len(body)} bytes present")
            body = body[:length]
        if content_type == CHANGE_CIPHER_SPEC:
            if self._handshake[d]:
                ctx.weird(
                    "tls_truncated_handshake", f"{len(self._handshake[d])} bytes before ChangeCipherSpec"
                )
                self._handshake[d].clear()
            # In TLS 1.3 a ChangeCipherSpec is only a middlebox-compatibility dummy (RFC 8446 D.4).
            self._encrypted[d] = self._encrypted[d] or not self._tls13
        elif content_type == ALERT:
            self._alert(body, ctx, self._encrypted[d])
        elif content_type == HANDSHAKE and not self._encrypted[d]:
            if not self._handshake[d]:
                self._record_version[d] = version
            self._handshake_record(d, body, ctx)

    def close(self, ctx: PduContext) -> None:
        for d in (0, 1):
            if self._handshake[d]:
                ctx.is_orig = d == 0
                ctx.weird(
                    "tls_truncated_handshake", f"{len(self._handshake[d])} bytes at the end of the flow"
                )
                self._handshake[d].clear()

    def _sslv2_record(self, pdu: bytes, ctx: PduContext) -> None:
        if len(pdu) < 2:
            ctx.weird("tls_truncated_record", f"{len(pdu)} bytes, an SSLv2 record header needs 2")
            return
        body = pdu[2:]
        if len(body) != _ssl2_length(pdu):
            ctx.weird("tls_bad_record_length", f"SSLv2 length {_ssl2_length(pdu)}, {len(body)} bytes")
        if not body or body[0] != SSL2_CLIENT_HELLO:
            return  # an SSLv2 SERVER-HELLO or later message: not dissected
        try:
            hello = parse_sslv2_client_hello(body)
        except _ShortError as exc:
            ctx.weird("tls_malformed_sslv2_client_hello", str(exc))
            return
        self._emit_client_hello(hello, 0x0002, ctx, sslv2=True)

    def _alert(self, body: bytes, ctx: PduContext, encrypted: bool) -> None:
        if encrypted:
            ctx.emit(TlsAlert(**ctx.where(), encrypted=True))
            return
        if not body or len(body) % 2:
            ctx.weird("tls_malformed_alert", f"alert record of {len(body)} bytes")
        for i in range(0, min(len(body) - 1, 64), 2):
            level, description = body[i], body[i + 1]
            ctx.emit(
                TlsAlert(
                    **ctx.where(),
                    encrypted=False,
                    level=level,
                    level_name=ALERT_LEVELS.get(level, f"unknown-{level}"),
                    description=description,
                    description_name=ALERT_DESCRIPTIONS.get(description, f"unknown-{description}"),
                )
            )

    def _handshake_record(self, d: int, body: bytes, ctx: PduContext) -> None:
        if self._skip[d]:
            skipped = min(self._skip[d], len(body))
            self._skip[d] -= skipped
            body = body[skipped:]
        buf = self._handshake[d]
        buf += body
        while len(buf) >= 4 and not self._encrypted[d]:
            msg_type = buf[0]
            length = int.from_bytes(buf[1:4], "big")
            if length > MAX_HANDSHAKE:
                ctx.weird("tls_handshake_too_large", f"handshake type {msg_type} of {length} bytes")
                skipped = min(len(buf) - 4, length)
                self._skip[d] = length - skipped
                del buf[: 4 + skipped]
                continue
            if len(buf) < 4 + length:
                return
            message = bytes(buf[4 : 4 + length])
            del buf[: 4 + length]
            self._handshake_message(d, msg_type, message, ctx)
        if self._encrypted[d]:
            buf.clear()  # TLS 1.3: what follows the ServerHello is encrypted

    def _handshake_message(self, d: int, msg_type: int, body: bytes, ctx: PduContext) -> None:
        if msg_type == CLIENT_HELLO:
            try:
                hello = parse_client_hello(body)
            except _ShortError as exc:
                ctx.weird("tls_malformed_client_hello", str(exc))
                return
            for problem in hello.bad_extensions[:8]:
                ctx.weird("tls_malformed_extension", problem)
            self._emit_client_hello(hello, self._record_version[d], ctx, sslv2=False)
        elif msg_type == SERVER_HELLO:
            self._server_hello(d, body, ctx)
        elif msg_type == CERTIFICATE and not self._tls13:
            self._certificates(body, ctx)

    def _emit_client_hello(self, hello: _Hello, record_version: int, ctx: PduContext, *, sslv2: bool) -> None:
        text = ja3_string(hello.version, hello.ciphers, hello.extensions, hello.groups, hello.point_formats)
        alpn = [_text(a) for a in hello.alpn]
        fingerprint: str | None = None
        raw: str | None = None
        if not sslv2:
            fingerprint, raw = ja4(
                version=hello.version,
                ciphers=hello.ciphers,
                extensions=hello.extensions,
                has_sni=EXT_SERVER_NAME in hello.extensions,
                first_alpn=hello.alpn[0] if hello.alpn else None,
                supported_versions=hello.supported_versions,
                signature_algorithms=hello.signature_algorithms,
            )
        ctx.emit(
            TlsClientHello(
                **ctx.where(),
                record_version=record_version,
                version=hello.version,
                version_name=version_name(hello.version),
                sslv2=sslv2,
                session_id=hello.session_id.hex(),
                cipher_suites=hello.ciphers,
                compression_methods=hello.compression,
                extensions=hello.extensions,
                server_name=hello.server_name,
                alpn=alpn,
                supported_groups=hello.groups,
                ec_point_formats=hello.point_formats,
                signature_algorithms=hello.signature_algorithms,
                supported_versions=hello.supported_versions,
                ja3=md5_hex(text),
                ja3_string=text,
                ja4=fingerprint,
                ja4_r=raw,
                inner_protocol=inner_protocol(alpn, ctx.flow.resp_p),
            )
        )

    def _server_hello(self, d: int, body: bytes, ctx: PduContext) -> None:
        r = _Reader(body)
        try:
            version = r.u16()
            random = r.take(32)
            session_id = r.vector8()
            cipher, compression = r.u16(), r.u8()
            extensions = _extensions(r)
        except _ShortError as exc:
            ctx.weird("tls_malformed_server_hello", str(exc))
            return
        selected = version
        alpn: str | None = None
        for kind, data in extensions:
            if kind == EXT_SUPPORTED_VERSIONS:
                if len(data) == 2:
                    selected = int.from_bytes(data, "big")
                else:
                    ctx.weird("tls_malformed_extension", f"server supported_versions of {len(data)} bytes")
            elif kind == EXT_ALPN:
                names = _Reader(data)
                try:
                    alpn = _text(_Reader(names.vector16()).vector8())
                except _ShortError as exc:
                    ctx.weird("tls_malformed_extension", f"server ALPN: {exc}")
        retry = random == HRR_RANDOM
        kinds = [kind for kind, _ in extensions]
        text = ja3s_string(version, cipher, kinds)
        ctx.emit(
            TlsServerHello(
                **ctx.where(),
                record_version=self._record_version[d],
                version=version,
                selected_version=selected,
                version_name=version_name(selected),
                session_id=session_id.hex(),
                cipher_suite=cipher,
                compression_method=compression,
                extensions=kinds,
                alpn=alpn,
                hello_retry_request=retry,
                ja3s=md5_hex(text),
                ja3s_string=text,
            )
        )
        if selected == TLS13 or selected >> 8 == 0x7F:
            # TLS 1.3 (or a draft): everything after the ServerHello is encrypted, both ways; after a
            # HelloRetryRequest the client still sends a second cleartext ClientHello.
            self._tls13 = True
            if not retry:
                self._encrypted[0] = self._encrypted[1] = True

    def _certificates(self, body: bytes, ctx: PduContext) -> None:
        try:
            import cryptography.x509  # noqa: F401 - the X.509 parser is an install-time dependency
        except ImportError:  # pragma: no cover - depends on the installation
            ctx.weird("tls_x509_unavailable", "the 'cryptography' package is not installed")
            return
        r = _Reader(body)
        try:
            chain = _Reader(r.take(r.u24()))
        except _ShortError as exc:
            ctx.weird("tls_malformed_certificate", str(exc))
            return
        if r.left():
            ctx.weird("tls_malformed_certificate", f"{r.left()} bytes after the certificate list")
        index = 0
        while chain.left():
            if index >= MAX_CERTIFICATES:
                ctx.weird("tls_too_many_certificates", f"more than {MAX_CERTIFICATES} certificates")
                return
            try:
                der = chain.take(chain.u24())
            except _ShortError as exc:
                ctx.weird("tls_malformed_certificate", f"certificate {index}: {exc}")
                return
            event = _certificate_event(der, index, ctx)
            if event is not None:
                ctx.emit(event)
            index += 1


def _recognize_sslv2(data: bytes) -> Verdict:
    """An SSLv2-compatible CLIENT-HELLO: 2-byte header with the high bit set, type 1, version 2 or 3.x."""
    if len(data) < 2:
        return Verdict.MAYBE
    length = _ssl2_length(data)
    if length < SSL2_HEADER_MIN:
        return Verdict.NO
    if len(data) < 3:
        return Verdict.MAYBE
    if data[2] != SSL2_CLIENT_HELLO:
        return Verdict.NO
    if len(data) < 5:
        return Verdict.MAYBE
    version = (data[3] << 8) | data[4]
    if version != 0x0002 and not (data[3] == 3 and data[4] <= 4):
        return Verdict.NO
    if len(data) < 11:
        return Verdict.MAYBE
    spec_len, sid_len, challenge_len = (int.from_bytes(data[i : i + 2], "big") for i in (5, 7, 9))
    if spec_len == 0 or spec_len % 3 or sid_len not in (0, 16) or not 16 <= challenge_len <= 32:
        return Verdict.NO
    return Verdict.YES if SSL2_HEADER_MIN + spec_len + sid_len + challenge_len == length else Verdict.NO
