"""TLS dissector: golden comparisons with tshark (and OpenSSL for certificates), real handshakes made by
Python's ``ssl`` module, the JA4 specification's own example, hand-built records, sans-io and fuzz tests.

References:

- ``../shared/corpus/tls/ssl.v3.pcap`` (Zeek's test capture; no Zeek log is shipped for it): every hello,
  certificate and alert is compared with tshark's dissection, including tshark's ``ja3``/``ja3s``; the
  certificates are also read by ``openssl x509``.
- Real TLS 1.2 and TLS 1.3 handshakes between two ``ssl.SSLContext`` objects talking through memory BIOs
  (no socket, no capture privilege needed), written into a pcap with scapy and dissected by tshark.
- tshark 4.0 has no JA4; the JA4 expectations come from the FoxIO specification's worked example, and from
  the JA4 formula applied by this test to the lists tshark decodes.

The helpers at the top (``Collector``, ``feed``, ``segments``, ``tshark_fields``) are shared with the other
TCP protocol tests (http, ssh, telnet, ftp).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import ipaddress
import re
import ssl
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldward.protocols.base import Dissector, Event, FlowInfo, PduContext, ProtocolWeird, Transport, Verdict
from fieldward.protocols.tls import (
    TlsAlert,
    TlsCertificate,
    TlsClientHello,
    TlsDissector,
    TlsServerHello,
    is_grease,
)
from tests.protocols.test_modbus import Run, TcpConversation, run_capture, write_pcap

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "tls.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "tls.py"
SNI = "www.example.test"


# ---------------------------------------------------------------------- shared helpers


class Collector:
    """A PduContext for sans-io tests of any dissector: collects events and weirds."""

    def __init__(self, protocol: str, orig_p: int = 40001, resp_p: int = 443) -> None:
        self.flow = FlowInfo(7, Transport.TCP, "10.0.0.1", orig_p, "10.0.0.2", resp_p)
        self.protocol = protocol
        self.events: list[Event] = []
        self.ctx = PduContext(self.flow, protocol, self.events.append, self.events.append)

    def feed(self, dissector: Dissector, stream: bytes, is_orig: bool) -> bytes:
        """Frame and parse a byte stream like the engine does; returns the unframed rest."""
        self.ctx.is_orig = is_orig
        buf = stream
        while buf:
            size = dissector.frame(buf, is_orig)
            if size == 0:
                break
            if size < 0 or size > len(buf):
                self.ctx.weird(f"{self.protocol}_unframeable_data", f"{len(buf)} bytes dropped")
                return b""
            dissector.parse(buf[:size], self.ctx)
            buf = buf[size:]
        return buf

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def weirds(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, ProtocolWeird)]


def segments(data: bytes, size: int = 1400) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def conversation(flights: list[tuple[bool, bytes]], *, port: int = 443, mss: int = 1400) -> TcpConversation:
    """A scapy TCP session carrying ``flights`` (client?, bytes), each cut into ``mss``-byte segments."""
    conv = TcpConversation(client="10.1.0.5", server="10.1.0.9", cport=51000, sport=port)
    for from_client, data in flights:
        if from_client:
            conv.c(*segments(data, mss))
        else:
            conv.s(*segments(data, mss))
    return conv


def run_flights(
    tmp_path: Path, flights: list[tuple[bool, bytes]], name: str, **kwargs: Any
) -> tuple[Run, Path]:
    capture = write_pcap(tmp_path / f"{name}.pcap", conversation(flights, **kwargs).done())
    return run_capture(capture, tmp_path / f"out-{name}"), capture


AGG = "\x1f"
"""tshark's aggregator for repeated fields (a character no decoded text of these tests holds)."""


def tshark_fields(
    tshark: str, capture: Path, display_filter: str, fields: list[str], *options: str
) -> list[dict[str, str]]:
    """One dict per frame matching ``display_filter``: field -> value (repeats joined with ``AGG``)."""
    names = ["frame.number", "frame.time_epoch", "tcp.srcport", *fields]
    cmd = [tshark, "-r", str(capture), *options, "-Y", display_filter, "-T", "fields"]
    cmd += ["-E", "separator=\x1e", "-E", "occurrence=a", "-E", f"aggregator={AGG}"]
    for name in names:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [dict(zip(names, line.split("\x1e"), strict=True)) for line in out.split("\n") if line]


def epoch_ns(text: str) -> int:
    seconds, _, fraction = text.partition(".")
    return int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0")[:9])


def ints(text: str, base: int = 0) -> list[int]:
    return [int(v, base) for v in text.split(AGG) if v]


def documented(
    doc: Path, module: Path, prefix: str, event_types: tuple[type[Event], ...], extra: set[str]
) -> None:
    """Every event field and every weird name of a dissector appears in its doc."""
    text = doc.read_text()
    for event_type in event_types:
        assert f"`{event_type.log}`" in text
        for f in dataclasses.fields(event_type):
            assert f"| `{f.name}` |" in text, f"{event_type.__name__}.{f.name} is not documented"
    weirds = set(re.findall(rf'"({prefix}_[a-z0-9_]+)"', module.read_text())) | extra
    weirds |= {f"{prefix}_unframeable_data", f"{prefix}_pdu_lost_in_gap", f"{prefix}_pdu_too_large"}
    for name in sorted(weirds):
        assert f"`{name}`" in text, f"weird {name} is not documented"


# ---------------------------------------------------------------------- TLS builders


def record(content_type: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack(">BHH", content_type, version, len(body)) + body


def handshake_msg(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def extension(kind: int, body: bytes) -> bytes:
    return struct.pack(">HH", kind, len(body)) + body


def u16s(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def vec16(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def vec8(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def client_hello(
    ciphers: list[int],
    extensions: list[tuple[int, bytes]] | None = None,
    version: int = 0x0303,
    session_id: bytes = b"",
) -> bytes:
    body = version.to_bytes(2, "big") + bytes(32) + vec8(session_id) + vec16(u16s(ciphers)) + vec8(b"\x00")
    if extensions is not None:
        body += vec16(b"".join(extension(k, v) for k, v in extensions))
    return handshake_msg(1, body)


def server_hello(
    cipher: int, extensions: list[tuple[int, bytes]] | None = None, random: bytes = bytes(32)
) -> bytes:
    body = b"\x03\x03" + random + vec8(b"") + cipher.to_bytes(2, "big") + b"\x00"
    if extensions is not None:
        body += vec16(b"".join(extension(k, v) for k, v in extensions))
    return handshake_msg(2, body)


def sni(name: str) -> bytes:
    entry = b"\x00" + vec16(name.encode())
    return vec16(entry)


def alpn(*names: bytes) -> bytes:
    return vec16(b"".join(vec8(n) for n in names))


# ---------------------------------------------------------------------- real handshakes (ssl module)


@dataclasses.dataclass
class Pki:
    chain: Path
    key: Path
    leaf_der: bytes
    ca_der: bytes


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA (ECDSA P-256, self-signed) and a leaf (RSA 2048) it signed, with every kind of SAN."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "FieldWard Test CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FieldWard, Tests"),
        ]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(0x1234)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SNI)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(0xABCDEF0123456789)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(SNI),
                    x509.DNSName("alt.example.test"),
                    x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
                    x509.RFC822Name("admin@example.test"),
                    x509.UniformResourceIdentifier("https://www.example.test/"),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("pki")
    chain, key_file = folder / "chain.pem", folder / "key.pem"
    pem = serialization.Encoding.PEM
    chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    der = serialization.Encoding.DER
    return Pki(chain, key_file, leaf.public_bytes(der), ca.public_bytes(der))


def real_session(
    pki: Pki, *, max_version: ssl.TLSVersion, client_alpn: list[str], server_alpn: list[str]
) -> list[tuple[bool, bytes]]:
    """A real handshake, one request and response, and a close_notify: the bytes each side sent."""
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.maximum_version = max_version
    client_ctx.set_alpn_protocols(client_alpn)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.chain, pki.key)
    server_ctx.set_alpn_protocols(server_alpn)
    cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(cin, cout, server_hostname=SNI)
    server = server_ctx.wrap_bio(sin, sout, server_side=True)
    flights: list[tuple[bool, bytes]] = []

    def pump() -> None:
        for from_client, out, peer in ((True, cout, sin), (False, sout, cin)):
            data = out.read()
            if data:
                flights.append((from_client, data))
                peer.write(data)

    done = [False, False]
    for _ in range(10):
        for i, side in enumerate((client, server)):
            if not done[i]:
                try:
                    side.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            pump()
        if all(done):
            break
    assert all(done), "the in-memory handshake did not complete"
    client.write(b"GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
    pump()
    assert server.read(1024).startswith(b"GET /")
    server.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    pump()
    assert client.read(1024).startswith(b"HTTP/1.1 204")
    with pytest.raises(ssl.SSLWantReadError):
        client.unwrap()  # sends close_notify, then waits for the server's
    pump()
    server.unwrap()  # answers with its own close_notify
    pump()
    return flights


@pytest.fixture(scope="module")
def tls12_flights(pki: Pki) -> list[tuple[bool, bytes]]:
    return real_session(
        pki, max_version=ssl.TLSVersion.TLSv1_2, client_alpn=["h2", "http/1.1"], server_alpn=["http/1.1"]
    )


@pytest.fixture(scope="module")
def tls13_flights(pki: Pki) -> list[tuple[bool, bytes]]:
    return real_session(pki, max_version=ssl.TLSVersion.TLSv1_3, client_alpn=["h2"], server_alpn=["h2"])


# ---------------------------------------------------------------------- tshark comparisons

CLIENT_FIELDS = [
    "tls.record.version",
    "tls.handshake.version",
    "tls.handshake.session_id",
    "tls.handshake.ciphersuite",
    "tls.handshake.comp_method",
    "tls.handshake.extension.type",
    "tls.handshake.extensions_server_name",
    "tls.handshake.extensions_alpn_str",
    "tls.handshake.extensions_supported_group",
    "tls.handshake.extensions_ec_point_format",
    "tls.handshake.sig_hash_alg",
    "tls.handshake.extensions.supported_version",
    "tls.handshake.ja3",
    "tls.handshake.ja3_full",
]
SERVER_FIELDS = [
    "tls.handshake.version",
    "tls.handshake.session_id",
    "tls.handshake.ciphersuite",
    "tls.handshake.comp_method",
    "tls.handshake.extension.type",
    "tls.handshake.extensions_alpn_str",
    "tls.handshake.extensions.supported_version",
    "tls.handshake.ja3s",
    "tls.handshake.ja3s_full",
]


def by_time(rows: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
    """Our events keyed by (sender port, time of the packet completing them)."""
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for row in rows:
        out[(row["orig_p"] if row["is_orig"] else row["resp_p"], row["ts"])] = row
    return out


def ja4_from_tshark(t: dict[str, str]) -> str:
    """JA4 composed by the FoxIO formula from the lists tshark decoded (tshark 4.0 has no JA4)."""
    ciphers = [c for c in ints(t["tls.handshake.ciphersuite"]) if not is_grease(c)]
    exts = [e for e in ints(t["tls.handshake.extension.type"]) if not is_grease(e)]
    versions = [v for v in ints(t["tls.handshake.extensions.supported_version"]) if not is_grease(v)]
    version = max(versions) if versions else int(t["tls.handshake.version"], 0)
    codes = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3"}
    first_alpn = t["tls.handshake.extensions_alpn_str"].split(AGG)[0]
    alpn_code = first_alpn[0] + first_alpn[-1] if first_alpn else "00"
    head = f"t{codes[version]}{'d' if 0 in exts else 'i'}{len(ciphers):02d}{len(exts):02d}{alpn_code}"
    cipher_text = ",".join(f"{c:04x}" for c in sorted(ciphers))
    ext_text = ",".join(f"{e:04x}" for e in sorted(exts) if e not in (0, 16))
    sigs = ",".join(f"{s:04x}" for s in ints(t["tls.handshake.sig_hash_alg"]) if not is_grease(s))
    if sigs:
        ext_text += "_" + sigs

    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:12] if text else "0" * 12

    return f"{head}_{digest(cipher_text)}_{digest(ext_text)}"


def check_client_hello(ours: dict[str, Any], t: dict[str, str]) -> None:
    assert ours["record_version"] == int(t["tls.record.version"].split(AGG)[0], 0)
    assert ours["version"] == int(t["tls.handshake.version"], 0)
    assert ours["session_id"] == t["tls.handshake.session_id"]
    assert ours["cipher_suites"] == ints(t["tls.handshake.ciphersuite"])
    assert ours["compression_methods"] == ints(t["tls.handshake.comp_method"])
    assert ours["extensions"] == ints(t["tls.handshake.extension.type"])
    assert ours["server_name"] == (t["tls.handshake.extensions_server_name"] or None)
    assert ours["alpn"] == [a for a in t["tls.handshake.extensions_alpn_str"].split(AGG) if a]
    assert ours["supported_groups"] == ints(t["tls.handshake.extensions_supported_group"])
    assert ours["ec_point_formats"] == ints(t["tls.handshake.extensions_ec_point_format"])
    assert ours["signature_algorithms"] == ints(t["tls.handshake.sig_hash_alg"])
    assert ours["supported_versions"] == ints(t["tls.handshake.extensions.supported_version"])
    assert ours["ja3"] == t["tls.handshake.ja3"]
    assert ours["ja3_string"] == t["tls.handshake.ja3_full"]
    assert ours["ja4"] == ja4_from_tshark(t)


def check_server_hello(ours: dict[str, Any], t: dict[str, str]) -> None:
    assert ours["version"] == int(t["tls.handshake.version"], 0)
    assert ours["session_id"] == t["tls.handshake.session_id"]
    assert ours["cipher_suite"] == int(t["tls.handshake.ciphersuite"], 0)
    assert ours["compression_method"] == int(t["tls.handshake.comp_method"] or "0", 0)
    assert ours["extensions"] == ints(t["tls.handshake.extension.type"])
    assert ours["alpn"] == (t["tls.handshake.extensions_alpn_str"] or None)
    selected = ints(t["tls.handshake.extensions.supported_version"])
    assert ours["selected_version"] == (selected[0] if selected else ours["version"])
    assert ours["ja3s"] == t["tls.handshake.ja3s"]
    assert ours["ja3s_string"] == t["tls.handshake.ja3s_full"]


def compare_hellos(run: Run, tshark: str, capture: Path) -> tuple[int, int]:
    """Every TLS hello tshark decodes agrees with ours, and we report no other (SSLv2 hellos apart)."""
    clients = by_time([r for r in run.rows("tls_client_hello") if not r["sslv2"]])
    servers = by_time(run.rows("tls_server_hello"))
    seen_c = seen_s = 0
    hellos = "tls.handshake.type == 1 && !tls.handshake.cipherspec"
    for t in tshark_fields(tshark, capture, hellos, CLIENT_FIELDS):
        key = (int(t["tcp.srcport"]), epoch_ns(t["frame.time_epoch"]))
        check_client_hello(clients[key], t)
        seen_c += 1
    for t in tshark_fields(tshark, capture, "tls.handshake.type == 2", SERVER_FIELDS):
        key = (int(t["tcp.srcport"]), epoch_ns(t["frame.time_epoch"]))
        check_server_hello(servers[key], t)
        seen_s += 1
    assert (seen_c, seen_s) == (len(clients), len(servers)), "we report hellos tshark does not see"
    return seen_c, seen_s


def openssl_view(der: bytes, tmp_path: Path) -> dict[str, str]:
    """Subject, issuer, serial, validity, fingerprints, key, SANs and signature as OpenSSL prints them."""
    path = tmp_path / f"cert-{hashlib.sha256(der).hexdigest()[:16]}.der"
    path.write_bytes(der)
    base = ["openssl", "x509", "-inform", "DER", "-in", str(path), "-noout"]
    out = subprocess.run(
        [*base, "-subject", "-issuer", "-serial", "-startdate", "-enddate", "-nameopt", "RFC2253"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    view = dict(line.split("=", 1) for line in out.splitlines())
    for digest in ("sha1", "sha256"):
        line = subprocess.run(
            [*base, "-fingerprint", f"-{digest}"], capture_output=True, text=True, check=True
        )
        view[digest] = line.stdout.strip().split("=", 1)[1].replace(":", "").lower()
    text = subprocess.run([*base, "-text"], capture_output=True, text=True, check=True).stdout
    view["bits"] = re.search(r"Public-Key: \((\d+) bit\)", text).group(1)  # type: ignore[union-attr]
    view["sigalg"] = re.search(r"Signature Algorithm: (\S+)", text).group(1)  # type: ignore[union-attr]
    view["key"] = re.search(r"Public Key Algorithm: (\S+)", text).group(1)  # type: ignore[union-attr]
    san = re.search(r"Subject Alternative Name:.*?\n\s+(.*)\n", text)
    view["san"] = san.group(1) if san else ""
    return view


SIGNATURE_OIDS = {
    "sha1WithRSAEncryption": "1.2.840.113549.1.1.5",  # RFC 3279 2.2.1
    "sha256WithRSAEncryption": "1.2.840.113549.1.1.11",  # RFC 4055 5
    "ecdsa-with-SHA256": "1.2.840.10045.4.3.2",  # RFC 5758 3.2
}
OPENSSL_KEY_TYPES = {"rsaEncryption": "rsa", "id-ecPublicKey": "ecdsa"}


def openssl_time(text: str) -> int:
    stamp = datetime.datetime.strptime(text.replace(" GMT", ""), "%b %d %H:%M:%S %Y")
    return int(stamp.replace(tzinfo=datetime.UTC).timestamp())


def check_certificate(ours: dict[str, Any], der: bytes, tmp_path: Path) -> None:
    view = openssl_view(der, tmp_path)
    assert ours["cert_length"] == len(der)
    assert ours["subject"] == view["subject"]
    assert ours["issuer"] == view["issuer"]
    assert ours["serial"] == view["serial"]
    assert ours["not_valid_before"] == openssl_time(view["notBefore"])
    assert ours["not_valid_after"] == openssl_time(view["notAfter"])
    assert ours["sha1"] == view["sha1"]
    assert ours["sha256"] == view["sha256"]
    assert ours["key_bits"] == int(view["bits"])
    assert ours["key_type"] == OPENSSL_KEY_TYPES[view["key"]]
    assert ours["signature_algorithm"] == SIGNATURE_OIDS[view["sigalg"]]
    sans = [part.strip() for part in view["san"].split(",") if part.strip()]
    assert ours["san_dns"] == [s.removeprefix("DNS:") for s in sans if s.startswith("DNS:")]
    assert ours["san_ip"] == [s.removeprefix("IP Address:") for s in sans if s.startswith("IP Address:")]
    assert ours["san_email"] == [s.removeprefix("email:") for s in sans if s.startswith("email:")]
    assert ours["san_uri"] == [s.removeprefix("URI:") for s in sans if s.startswith("URI:")]


def compare_certificates(run: Run, tshark: str, capture: Path, tmp_path: Path) -> int:
    ours = by_time(run.rows("tls_certificate"))  # last of each chain; the chain is looked up below
    chains: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for row in run.rows("tls_certificate"):
        chains.setdefault((row["orig_p"] if row["is_orig"] else row["resp_p"], row["ts"]), []).append(row)
    fields = ["tls.handshake.certificate", "x509af.serialNumber", "x509ce.dNSName"]
    compared = 0
    for t in tshark_fields(tshark, capture, "tls.handshake.type == 11", fields):
        key = (int(t["tcp.srcport"]), epoch_ns(t["frame.time_epoch"]))
        assert key in ours
        chain = sorted(chains[key], key=lambda r: r["chain_index"])
        ders = [bytes.fromhex(h) for h in t["tls.handshake.certificate"].split(AGG)]
        assert [r["chain_index"] for r in chain] == list(range(len(ders)))
        # tshark prints a serial's DER content bytes (a leading 00 keeps it positive).
        serials = [s.upper().lstrip("0") for s in t["x509af.serialNumber"].split(AGG)]
        assert [r["serial"].lstrip("0") for r in chain] == serials
        for row, der in zip(chain, ders, strict=True):
            check_certificate(row, der, tmp_path)
            compared += 1
        tshark_dns = [n for n in t["x509ce.dNSName"].split(AGG) if n]
        assert [n for r in chain for n in r["san_dns"]] == tshark_dns
    assert compared == len(run.rows("tls_certificate"))
    return compared


# ---------------------------------------------------------------------- golden: ssl.v3.pcap


@pytest.fixture(scope="module")
def ssl_v3(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    capture = corpus / "tls" / "ssl.v3.pcap"
    return run_capture(capture, tmp_path_factory.mktemp("sslv3")), capture


def test_ssl_v3_hellos_match_tshark(ssl_v3: tuple[Run, Path], tshark: str) -> None:
    run, capture = ssl_v3
    assert compare_hellos(run, tshark, capture) == (2, 3)


def test_ssl_v3_sslv2_client_hello_matches_tshark(ssl_v3: tuple[Run, Path], tshark: str) -> None:
    run, capture = ssl_v3
    (hello,) = [r for r in run.rows("tls_client_hello") if r["sslv2"]]
    fields = ["tls.handshake.version", "tls.handshake.cipherspec", "tls.handshake.session_id_length"]
    (t,) = tshark_fields(tshark, capture, "tls.handshake.cipherspec", fields)
    assert (hello["orig_p"], hello["ts"]) == (int(t["tcp.srcport"]), epoch_ns(t["frame.time_epoch"]))
    assert hello["record_version"] == 2
    assert hello["version"] == int(t["tls.handshake.version"], 0) == 0x0301
    assert hello["cipher_suites"] == ints(t["tls.handshake.cipherspec"])
    assert hello["session_id"] == ""
    # The JA3 of an SSLv2 hello: same formula, no extension lists. Every cipher spec of this client
    # fits 16 bits, so it equals the JA3 tshark computes for the same client's TLS hello.
    (tls_hello,) = tshark_fields(
        tshark, capture, "tls.handshake.type == 1 && tcp.stream == 1", ["tls.handshake.ja3"]
    )
    assert hello["ja3"] == tls_hello["tls.handshake.ja3"]
    assert hello["ja4"] is None


def test_ssl_v3_certificates_match_tshark_and_openssl(
    ssl_v3: tuple[Run, Path], tshark: str, tmp_path: Path
) -> None:
    run, capture = ssl_v3
    assert compare_certificates(run, tshark, capture, tmp_path) == 6
    leaf = run.rows("tls_certificate")[0]
    assert leaf["subject"].startswith("CN=www.dresdner-privat.de,")
    assert not any(r["self_signed"] for r in run.rows("tls_certificate"))


def test_ssl_v3_alerts_match_tshark(ssl_v3: tuple[Run, Path], tshark: str) -> None:
    run, capture = ssl_v3
    rows = tshark_fields(tshark, capture, "tls.record.content_type == 21", ["tls.alert_message.desc"])
    tshark_keys = {(int(t["tcp.srcport"]), epoch_ns(t["frame.time_epoch"])) for t in rows}
    ours = by_time(run.rows("tls_alert"))
    assert tshark_keys <= set(ours)
    # One alert more: frame 251 retransmits the server's close_notify of port 58870, whose original
    # segment was not captured; tshark flags it as a retransmission (the ACKs of frame 248 already
    # covered it) and does not dissect it, our reassembler delivers those 23 new bytes once.
    (extra,) = set(ours) - tshark_keys
    assert extra == (443, epoch_ns("1170717531.882236"))
    assert all(r["encrypted"] and r["level"] is None for r in ours.values())


# ---------------------------------------------------------------------- real handshakes vs tshark


def test_real_tls12_handshake_matches_tshark(
    tls12_flights: list[tuple[bool, bytes]], pki: Pki, tshark: str, tmp_path: Path
) -> None:
    run, capture = run_flights(tmp_path, tls12_flights, "tls12")
    assert compare_hellos(run, tshark, capture) == (1, 1)
    (hello,) = run.rows("tls_client_hello")
    assert hello["server_name"] == SNI
    assert hello["alpn"] == ["h2", "http/1.1"]
    (server,) = run.rows("tls_server_hello")
    assert server["alpn"] == "http/1.1"
    assert server["selected_version"] == 0x0303
    assert compare_certificates(run, tshark, capture, tmp_path) == 2
    leaf, ca = sorted(run.rows("tls_certificate"), key=lambda r: r["chain_index"])
    assert (leaf["self_signed"], ca["self_signed"]) == (False, True)
    assert ca["key_curve"] == "secp256r1"
    assert ca["key_bits"] == 256
    assert leaf["san_ip"] == ["192.0.2.7"]
    # The client's and the server's close_notify, both encrypted after ChangeCipherSpec.
    rows = tshark_fields(tshark, capture, "tls.record.content_type == 21", [])
    assert len(run.rows("tls_alert")) == len(rows) == 2
    assert {r["is_orig"] for r in run.rows("tls_alert")} == {True, False}
    assert [r["name"] for r in run.rows("weird")] == []


def test_real_tls13_handshake_matches_tshark(
    tls13_flights: list[tuple[bool, bytes]], tshark: str, tmp_path: Path
) -> None:
    run, capture = run_flights(tmp_path, tls13_flights, "tls13", mss=200)
    assert compare_hellos(run, tshark, capture) == (1, 1)
    (hello,) = run.rows("tls_client_hello")
    assert 0x0304 in hello["supported_versions"]
    assert hello["ja4"].startswith("t13d")
    (server,) = run.rows("tls_server_hello")
    assert server["selected_version"] == 0x0304
    assert server["version"] == 0x0303
    assert server["version_name"] == "TLSv13"
    # Certificates and alerts travel encrypted in TLS 1.3 (close_notify inside application data).
    assert run.rows("tls_certificate") == []
    assert run.rows("tls_alert") == []
    assert tshark_fields(tshark, capture, "tls.handshake.type == 11", []) == []
    assert [r["name"] for r in run.rows("weird")] == []


def test_real_handshake_on_unusual_port_is_recognised(
    tls12_flights: list[tuple[bool, bytes]], tmp_path: Path
) -> None:
    run, _ = run_flights(tmp_path, tls12_flights, "tls-port", port=4711)
    assert run.result.dissected_flows == {"tls": 1}
    assert len(run.rows("tls_client_hello")) == 1
    assert len(run.rows("tls_certificate")) == 2


# ---------------------------------------------------------------------- specification examples

JA4_CIPHERS = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014]
JA4_CIPHERS += [0x009C, 0x009D, 0x002F, 0x0035]
JA4_EXTENSIONS = [0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005, 0x0023, 0x0012]
JA4_EXTENSIONS += [0x002B, 0xFF01, 0x000B, 0x000A, 0x0015]
JA4_SIGNATURES = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]


def ja4_example_hello(grease: bool) -> bytes:
    """The ClientHello of the JA4 specification's example (optionally with GREASE values added)."""
    bodies = {
        0x0000: sni(SNI),
        0x0010: alpn(b"h2", b"http/1.1"),
        0x000D: vec16(u16s(JA4_SIGNATURES)),
        0x002B: vec8(u16s([0x0304, 0x0303])),
        0x000A: vec16(u16s([0x001D, 0x0017])),
        0x000B: vec8(b"\x00"),
    }
    extensions = [(kind, bodies.get(kind, b"")) for kind in JA4_EXTENSIONS]
    ciphers = JA4_CIPHERS
    if grease:
        extensions = [(0x1A1A, b""), *extensions, (0xFAFA, b"\x00")]
        ciphers = [0x2A2A, *ciphers]
        bodies[0x002B] = vec8(u16s([0x7A7A, 0x0304, 0x0303]))
    return record(22, client_hello(ciphers, extensions), version=0x0301)


@pytest.mark.parametrize("grease", [False, True])
def test_ja4_of_the_specification_example(grease: bool) -> None:
    """FoxIO technical_details/JA4.md: ``t13d1516h2_8daaf6152771_e5627efa2ab1`` and its JA4_r."""
    col = Collector("tls")
    col.feed(TlsDissector(col.flow), ja4_example_hello(grease), True)
    (hello,) = col.of(TlsClientHello)
    assert hello.ja4 == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert hello.ja4_r == (
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_"
        "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_"
        "0403,0804,0401,0503,0805,0501,0806,0601"
    )


@pytest.mark.parametrize(
    ("first", "code"),
    [(b"h2", "h2"), (b"http/1.1", "h1"), (b"h", "hh"), (b"\xab", "ab"), (b"\xab\xcd", "ad"),
     (b"0\xab", "3b"), (b"01\xab\xcd", "3d"), (b"0\xab\xcd1", "01"), (b"", "00"), (None, "00")],
)  # fmt: skip
def test_ja4_alpn_rules_of_the_specification(first: bytes | None, code: str) -> None:
    """The ALPN examples of the JA4 specification ("ALPN Extension Value")."""
    extensions = [] if first is None else [(0x0010, alpn(first))]
    col = Collector("tls")
    col.feed(TlsDissector(col.flow), record(22, client_hello([0x1301], extensions)), True)
    (hello,) = col.of(TlsClientHello)
    assert hello.ja4 is not None
    assert hello.ja4[8:10] == code
    # No SNI, no extension other than ALPN: 'i', and an all-zero extension hash (spec: empty list).
    assert hello.ja4.startswith("t12i01")
    assert hello.ja4.endswith("_000000000000")


def test_ja3_drops_grease_as_tshark_does(tshark: str, tmp_path: Path) -> None:
    """JA3 (salesforce/ja3) drops GREASE (RFC 8701) from ciphers, extensions and groups; tshark agrees."""
    extensions = [(0x0A0A, b""), (0x0000, sni(SNI)), (0x000A, vec16(u16s([0x3A3A, 0x001D, 0x0017])))]
    extensions += [(0x000B, vec8(b"\x00\x01")), (0x4A4A, b"\x00")]
    hello = record(22, client_hello([0x5A5A, 0x1301, 0xC02F], extensions), version=0x0301)
    reply = record(22, server_hello(0xC02F, [(0xFF01, b"\x00")]))
    run, capture = run_flights(tmp_path, [(True, hello), (False, reply)], "grease")
    assert compare_hellos(run, tshark, capture) == (1, 1)
    (ours,) = run.rows("tls_client_hello")
    assert ours["ja3_string"] == "771,4865-49199,0-10-11,29-23,0-1"
    assert ours["ja3"] == hashlib.md5(b"771,4865-49199,0-10-11,29-23,0-1").hexdigest()
    assert ours["extensions"] == [0x0A0A, 0, 10, 11, 0x4A4A]  # the raw list keeps them


# ---------------------------------------------------------------------- framing and reassembly


def test_handshake_reassembled_across_records_and_segments(tshark: str, tmp_path: Path) -> None:
    """A ClientHello split over three records, and ServerHello + Certificate + ServerHelloDone in one
    record, sent in 7-byte TCP segments: tshark and we see the same hellos and certificates."""
    message = client_hello([0xC02F, 0x009C], [(0x0000, sni("split.example.test")), (0x0017, b"")])
    hello = b"".join(record(22, message[i : i + 30], version=0x0301) for i in range(0, len(message), 30))
    assert hello.count(b"\x16\x03\x01") >= 3
    reply = record(22, server_hello(0xC02F) + handshake_msg(14, b""))
    run, capture = run_flights(tmp_path, [(True, hello), (False, reply)], "split", mss=7)
    assert compare_hellos(run, tshark, capture) == (1, 1)
    assert run.rows("tls_client_hello")[0]["server_name"] == "split.example.test"


def test_certificate_in_same_record_as_server_hello(pki: Pki) -> None:
    chain = b"".join(len(d).to_bytes(3, "big") + d for d in (pki.leaf_der, pki.ca_der))
    certificate = handshake_msg(11, len(chain).to_bytes(3, "big") + chain)
    flight = record(22, server_hello(0xC02F, []) + certificate + handshake_msg(14, b""))
    col = Collector("tls")
    dissector = TlsDissector(col.flow)
    col.feed(dissector, record(22, client_hello([0xC02F], [])), True)
    # One byte at a time: the engine's buffering, as frame() sees it.
    rest = b""
    for byte in flight:
        rest = col.feed(dissector, rest + bytes([byte]), False)
    assert rest == b""
    assert [c.chain_index for c in col.of(TlsCertificate)] == [0, 1]
    assert col.of(TlsCertificate)[1].self_signed
    assert not col.of(TlsCertificate)[0].self_signed
    assert col.weirds() == []


def test_handshake_after_change_cipher_spec_is_not_parsed() -> None:
    """The Finished message after ChangeCipherSpec is encrypted: never parsed as a handshake."""
    col = Collector("tls")
    dissector = TlsDissector(col.flow)
    fake_finished = record(22, client_hello([0x002F], []))  # would parse if it were read
    col.feed(dissector, record(22, client_hello([0x002F], [])) + record(20, b"\x01") + fake_finished, True)
    assert len(col.of(TlsClientHello)) == 1
    col.feed(dissector, record(21, b"\x01\x00"), True)
    (alert,) = col.of(TlsAlert)
    assert alert.encrypted
    assert alert.level is None


def test_hello_retry_request_keeps_the_second_client_hello_readable() -> None:
    """RFC 8446 4.1.4: after a HelloRetryRequest the client sends a second, cleartext ClientHello."""
    hrr_random = hashlib.sha256(b"HelloRetryRequest").digest()
    col = Collector("tls")
    dissector = TlsDissector(col.flow)
    versions = (0x002B, vec8(u16s([0x0304])))
    col.feed(dissector, record(22, client_hello([0x1301], [versions])), True)
    col.feed(dissector, record(22, server_hello(0x1301, [(0x002B, b"\x03\x04")], random=hrr_random)), False)
    col.feed(dissector, record(20, b"\x01") + record(22, client_hello([0x1301], [versions])), True)
    col.feed(dissector, record(22, server_hello(0x1301, [(0x002B, b"\x03\x04")])), False)
    col.feed(dissector, record(22, handshake_msg(11, bytes(3))), False)  # would be encrypted: ignored
    retry, final = col.of(TlsServerHello)
    assert retry.hello_retry_request
    assert not final.hello_retry_request
    assert final.selected_version == 0x0304
    assert final.version_name == "TLSv13"
    assert len(col.of(TlsClientHello)) == 2
    assert col.weirds() == []


def test_cleartext_alert_matches_tshark(tshark: str, tmp_path: Path) -> None:
    flights = [(True, record(22, client_hello([0x0005], []))), (False, record(21, b"\x02\x28"))]
    run, capture = run_flights(tmp_path, flights, "alert")
    fields = ["tls.alert_message.level", "tls.alert_message.desc"]
    (t,) = tshark_fields(tshark, capture, "tls.alert_message", fields)
    (alert,) = run.rows("tls_alert")
    assert (alert["level"], alert["description"]) == (int(t[fields[0]]), int(t[fields[1]]))
    assert (alert["level_name"], alert["description_name"]) == ("fatal", "handshake_failure")
    assert not alert["encrypted"]
    assert not alert["is_orig"]


# ---------------------------------------------------------------------- recognition


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (record(22, client_hello([0x002F], [])), Verdict.YES),
        (record(22, server_hello(0x002F)), Verdict.YES),
        (b"\x16\x03\x01", Verdict.MAYBE),
        (b"\x16", Verdict.MAYBE),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Verdict.NO),
        (b"SSH-2.0-OpenSSH_9.2\r\n", Verdict.NO),
        (record(23, b"\x00" * 40), Verdict.NO),  # application data first: not a handshake start
        (b"\x16\x03\x01\x00\x30\x0b" + bytes(60), Verdict.NO),  # a Certificate cannot start a flow
        (b"\x16\x02\x00\x00\x30\x01", Verdict.NO),
        (bytes.fromhex("8055010301003c"), Verdict.MAYBE),  # SSLv2 CLIENT-HELLO, lengths not all there
    ],
)
def test_recognition_by_content(data: bytes, verdict: Verdict) -> None:
    assert TlsDissector.recognize(data, Transport.TCP, 51000, 8080) == verdict


def test_sslv2_client_hello_recognised(ssl_v3: tuple[Run, Path]) -> None:
    run, _ = ssl_v3
    assert any(r["sslv2"] for r in run.rows("tls_client_hello"))
    v2 = bytes.fromhex("802e0103010015000000100700c0050080030080010080060040040080020080")
    v2 += bytes(16)
    assert TlsDissector.recognize(v2, Transport.TCP, 1000, 443) == Verdict.YES
    assert TlsDissector.recognize(v2[:8], Transport.TCP, 1000, 443) == Verdict.MAYBE
    assert TlsDissector.recognize(b"\x80\x2e\x02", Transport.TCP, 1000, 443) == Verdict.NO


def test_http_on_port_443_not_claimed(tmp_path: Path) -> None:
    flights = [
        (True, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (False, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]
    run, _ = run_flights(tmp_path, flights, "http443")
    assert not any(log.startswith("tls") for log in run.logs)


# ---------------------------------------------------------------------- malformed input


def weirds_of(*records_orig: tuple[bytes, bool]) -> tuple[Collector, list[str]]:
    col = Collector("tls")
    dissector = TlsDissector(col.flow)
    for data, is_orig in records_orig:
        col.feed(dissector, data, is_orig)
    dissector.close(col.ctx)
    return col, col.weirds()


def test_truncated_client_hello_is_a_weird() -> None:
    message = client_hello([0x002F, 0x0035], [(0, sni("a.test"))])
    broken = message[:4] + message[4:6] + bytes(32) + b"\x20"  # session id length 32, nothing after
    broken = bytes([1]) + (len(broken) - 4).to_bytes(3, "big") + broken[4:]
    col, weirds = weirds_of((record(22, broken), True))
    assert weirds == ["tls_malformed_client_hello"]
    assert col.of(TlsClientHello) == []


def test_bad_extension_body_is_a_weird_and_the_hello_is_kept() -> None:
    col, weirds = weirds_of((record(22, client_hello([0x002F], [(0, b"\x00\x10\x00"), (16, b"\x00")])), True))
    assert weirds == ["tls_malformed_extension", "tls_malformed_extension"]
    (hello,) = col.of(TlsClientHello)
    assert hello.extensions == [0, 16]
    assert hello.server_name is None


def test_garbage_certificate_is_a_weird(pki: Pki) -> None:
    chain = b"".join(len(d).to_bytes(3, "big") + d for d in (b"\x30\x03\x02\x01\x01", pki.ca_der))
    col, weirds = weirds_of((record(22, handshake_msg(11, len(chain).to_bytes(3, "big") + chain)), False))
    assert weirds == ["tls_bad_certificate"]
    assert [c.chain_index for c in col.of(TlsCertificate)] == [1]


@pytest.mark.parametrize(
    ("data", "weird"),
    [
        (record(22, handshake_msg(11, b"\x00\x00\x09\x00\x00\x20")), "tls_malformed_certificate"),
        (record(22, handshake_msg(2, b"\x03\x03")), "tls_malformed_server_hello"),
        (record(21, b"\x02"), "tls_malformed_alert"),
        (record(22, b"\x01\x00\x01\x00" + b"\x03"), "tls_truncated_handshake"),
        (record(22, b"\x0b\xff\xff\xff" + bytes(100)), "tls_handshake_too_large"),
        (b"\x16\x03", "tls_truncated_record"),
        (b"\x80", "tls_truncated_record"),
        (bytes.fromhex("800901" + "0301" + "0004" + "0000" + "0000"), "tls_malformed_sslv2_client_hello"),
    ],
)
def test_malformed_records_give_weirds(data: bytes, weird: str) -> None:
    col = Collector("tls")
    dissector = TlsDissector(col.flow)
    col.ctx.is_orig = True
    if weird == "tls_truncated_record":  # frame() never cuts these: parse() must still cope
        dissector.parse(data, col.ctx)
    else:
        col.feed(dissector, data, True)
    dissector.close(col.ctx)
    assert weird in col.weirds()


def test_bad_record_header_and_length_in_parse() -> None:
    col = Collector("tls")
    dissector = TlsDissector(col.flow)
    dissector.parse(b"\x63\x03\x03\x00\x00", col.ctx)
    dissector.parse(record(21, b"\x01\x00")[:-1] + b"", col.ctx)
    assert col.weirds()[:2] == ["tls_bad_record_header", "tls_bad_record_length"]


def test_frame_rejects_non_tls_and_waits_for_more() -> None:
    dissector = TlsDissector(Collector("tls").flow)
    assert dissector.frame(b"GET / HTTP/1.1\r\n", True) == -1
    assert dissector.frame(b"\x16\x03", True) == 0
    assert dissector.frame(b"\x16\x03\x03\x00\x05\x01", True) == 0
    assert dissector.frame(b"\x16\x03\x03\x00\x01\x01rest", True) == 6
    assert dissector.frame(b"\x16\x03\x03\xff\xff", True) == -1  # longer than 2^14 + 2048


def test_too_many_certificates_is_a_weird(pki: Pki) -> None:
    entry = len(pki.ca_der).to_bytes(3, "big") + pki.ca_der
    chain = entry * 33
    col = Collector("tls")
    dissector = TlsDissector(col.flow)
    col.ctx.is_orig = False
    message = handshake_msg(11, len(chain).to_bytes(3, "big") + chain)
    for i in range(0, len(message), 16000):
        col.feed(dissector, record(22, message[i : i + 16000]), False)
    assert len(col.of(TlsCertificate)) == 32
    assert "tls_too_many_certificates" in col.weirds()


# ---------------------------------------------------------------------- fuzzing


def real_records(flights: list[tuple[bool, bytes]]) -> list[bytes]:
    out = []
    for _, data in flights:
        while len(data) >= 5:
            size = 5 + int.from_bytes(data[3:5], "big")
            out.append(data[:size])
            data = data[size:]
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600), is_orig=st.booleans())
def test_fuzz_random_bytes_never_raise(data: bytes, is_orig: bool) -> None:
    col = Collector("tls")
    dissector = TlsDissector(col.flow)
    TlsDissector.recognize(data, Transport.TCP, 1, 2)
    col.feed(dissector, data, is_orig)
    col.ctx.is_orig = is_orig
    dissector.parse(data, col.ctx)
    dissector.close(col.ctx)
    assert len(col.events) < 200


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_mutated_real_records_never_raise(
    tls12_flights: list[tuple[bool, bytes]], data: st.DataObject
) -> None:
    records = real_records(tls12_flights)
    col = Collector("tls")
    dissector = TlsDissector(col.flow)
    for i, rec in enumerate(records[:4]):
        mutated = bytearray(rec)
        for _ in range(data.draw(st.integers(0, 6))):
            pos = data.draw(st.integers(0, len(mutated) - 1))
            mutated[pos] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(mutated)))
        col.feed(dissector, bytes(mutated[:cut]), i % 2 == 0)
    dissector.close(col.ctx)
    assert len(col.events) < 200


# ---------------------------------------------------------------------- documentation


def test_every_event_field_and_weird_is_documented() -> None:
    documented(DOC, MODULE, "tls", TlsDissector.event_types, set())


@pytest.mark.parametrize(
    ("port", "offers", "inner"),
    [
        (8883, [], "mqtt"),  # MQTT over TLS (IANA secure-mqtt)
        (443, [b"x-amzn-mqtt-ca"], "mqtt"),  # AWS IoT: MQTT on 443, told by its ALPN
        (8883, [b"h2", b"http/1.1"], "http"),  # the ALPN offer wins over the port
        (4843, [], "opcua"),  # opc.tcp over TLS
        (802, [], "modbus"),  # Modbus/TCP Security
        (443, [], "http"),
        (40000, [b"unknown-proto"], None),
        (40000, [], None),
    ],
)
def test_inner_protocol_from_alpn_or_port(port: int, offers: list[bytes], inner: str | None) -> None:
    col = Collector("tls", resp_p=port)
    extensions = [(0, sni("broker.example"))] + ([(16, alpn(*offers))] if offers else [])
    col.feed(TlsDissector(col.flow), record(22, client_hello([0x1301, 0xC02F], extensions)), True)
    (hello,) = col.of(TlsClientHello)
    assert hello.alpn == [o.decode() for o in offers]
    assert hello.inner_protocol == inner
