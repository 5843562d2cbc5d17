"""Alert export read back: CEF and LEEF 2.0 lines parsed by independent parsers written here from the
specifications (every field, however hostile, comes back), JSON lines, and real syslog servers on
localhost over UDP, TCP (octet counting and newline framing) and TLS (a CA and server certificate
made with ``cryptography`` in the test)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fieldward import __version__
from fieldward.cli import app
from fieldward.detect.export import (
    CEF_SEVERITY,
    ExportError,
    SyslogTarget,
    export_alerts,
    to_cef,
    to_json_line,
    to_leef,
)
from fieldward.pipeline import analyze
from tests.detect.test_recon import SCANNER, TARGET, rst, syn

# ----------------------------------------------------------------------------- parsers (the specs)


def _unescape(text: str, escapes: dict[str, str]) -> str:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            assert nxt in escapes, f"undefined escape \\{nxt} in {text!r}"
            out.append(escapes[nxt])
            i += 2
            continue
        assert ch != "\\", f"lone backslash at the end of {text!r}"
        out.append(ch)
        i += 1
    return "".join(out)


def _split_header(line: str, fields: int) -> tuple[list[str], str]:
    """The first ``fields`` pipe-separated header fields (``\\|`` and ``\\\\`` escaped), and the rest."""
    parts, current, i = [], [], 0
    while len(parts) < fields:
        assert i < len(line), f"header ends early: {line!r}"
        ch = line[i]
        if ch == "\\":
            current.append(line[i : i + 2])
            i += 2
        elif ch == "|":
            parts.append("".join(current))
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    header = [_unescape(p, {"\\": "\\", "|": "|"}) for p in parts]
    return header, line[i:]


CEF_EXT_ESCAPES = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """ArcSight CEF: 7 header fields, then ``key=value`` pairs separated by a space; in values ``=``,
    ``\\`` and line breaks are escaped, so an unescaped ``=`` always ends a key."""
    assert "\n" not in line
    assert line.startswith("CEF:0|")
    header, ext = _split_header(line, 7)
    equals, i = [], 0
    while i < len(ext):
        if ext[i] == "\\":
            i += 2
            continue
        if ext[i] == "=":
            equals.append(i)
        i += 1
    starts = []
    for pos in equals:
        match = re.search(r"[A-Za-z0-9_]+$", ext[:pos])
        assert match is not None, f"no key before = at {pos}: {ext!r}"
        assert match.start() == 0 or ext[match.start() - 1] == " "
        starts.append((match.start(), match.group(), pos))
    fields: dict[str, str] = {}
    for index, (_start, key, pos) in enumerate(starts):
        end = starts[index + 1][0] - 1 if index + 1 < len(starts) else len(ext)
        assert key not in fields, f"duplicate key {key}"
        fields[key] = _unescape(ext[pos + 1 : end], CEF_EXT_ESCAPES)
    return header, fields


def parse_leef(line: str) -> tuple[list[str], dict[str, str]]:
    """LEEF 2.0: 6 header fields (the 6th the delimiter: a character or xHH), then attributes split
    at the delimiter and at each attribute's first ``=``."""
    assert "\n" not in line
    assert line.startswith("LEEF:2.0|")
    header, rest = _split_header(line, 6)
    spec = header[5]
    delimiter = chr(int(spec.lstrip("0x"), 16)) if re.fullmatch(r"(0x|x)[0-9a-fA-F]{2}", spec) else spec
    assert delimiter == "\t"
    fields: dict[str, str] = {}
    for attribute in rest.split(delimiter):
        key, sep, value = attribute.partition("=")
        assert sep, f"attribute without =: {attribute!r}"
        assert key not in fields
        fields[key] = _unescape(value, {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"})
    return header, fields


SYSLOG = re.compile(r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) - (.*)", re.DOTALL)


def parse_syslog(message: bytes) -> tuple[int, str]:
    """An RFC 5424 message without structured data: (PRI, MSG)."""
    match = SYSLOG.fullmatch(message.decode("utf-8"))
    assert match is not None, message[:200]
    dt.datetime.strptime(match.group(2), "%Y-%m-%dT%H:%M:%S.%fZ")
    assert match.group(4) == "fieldward"
    return int(match.group(1)), match.group(7)


def octet_frames(data: bytes) -> list[bytes]:
    """RFC 6587 octet counting: ``LEN SP MSG`` repeated."""
    frames, pos = [], 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        frames.append(data[space + 1 : space + 1 + length])
        pos = space + 1 + length
    assert pos == len(data)
    return frames


# ----------------------------------------------------------------------------------------- records

HOSTILE = [
    "a|b",
    "back\\slash",
    "x=y",
    "line\nbreak",
    "cr\rlf\r\n",
    "tab\there",
    "\\",
    "=",
    "|",
    "trail\\",
    " leading and trailing ",
    "ünïcödé ☃ 工控 🔥",
    "key=value cs1=forged",
    "\\n not a newline",
    "",
]
hostile_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
    st.text(alphabet="|\\=\n\r\t ab=", max_size=20),
)


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "0123456789abcdef",
        "engine": "operations",
        "type": "operations.s7_plc_stop",
        "title": "S7 PLC stop command",
        "severity": "critical",
        "status": "new",
        "first_ts": "2016-02-08T22:08:10.350892000Z",
        "last_ts": "2016-02-08T22:08:11.250000000Z",
        "count": 3,
        "src": "134.217.61.131",
        "dst": "134.217.61.211",
        "src_device": "mac:00:0c:29:c1:49:92",
        "dst_device": None,
        "protocol": "s7comm",
        "explanation": "134.217.61.131 sent PLC Stop to 134.217.61.211",
        "description": "A client sent an S7comm PLC Stop job.",
        "recommendation": "Confirm with the process owner.",
        "mitre": ["T0881", "T0858"],
        "evidence": [{"flow_id": 0, "ts": "2016-02-08T22:08:10.350892000Z"}],
        "details": {"block": "OB1"},
        "evidence_pcap": "evidence/0123456789abcdef.pcap",
    }
    base.update(overrides)
    return base


def endpoint(fields: dict[str, str], side: str) -> str:
    keys = {"src": ("src", "c6a2", "smac", "shost"), "dst": ("dst", "c6a3", "dmac", "dhost")}[side]
    present = [k for k in keys if k in fields]
    assert len(present) == 1, present
    return fields[present[0]]


def check_cef(line: str, alert: dict[str, Any]) -> None:
    header, fields = parse_cef(line)
    assert header[:4] == ["CEF:0", "FieldWard", "FieldWard", __version__]
    assert header[4] == re.sub(r"[\r\n]", " ", alert["type"])
    assert header[5] == re.sub(r"[\r\n]", " ", alert["title"])
    assert int(header[6]) == CEF_SEVERITY[alert["severity"]]
    assert fields["externalId"] == alert["id"]
    assert fields["msg"] == alert["explanation"]
    assert fields["reason"] == alert["description"]
    assert fields["cs5"] == alert["recommendation"]
    assert endpoint(fields, "src") == alert["src"]
    assert endpoint(fields, "dst") == alert["dst"]
    assert fields["app"] == alert["protocol"]
    assert fields["cnt"] == str(alert["count"])
    assert fields["cs1"] == ",".join(alert["mitre"])
    assert fields["cs2"] == alert["status"]
    assert fields["cs3"] == (alert["src_device"] or "")
    assert json.loads(fields["cs6"]) == alert["details"]
    assert fields["filePath"] == alert["evidence_pcap"]
    start = dt.datetime.fromtimestamp(int(fields["start"]) / 1000, tz=dt.UTC)
    assert start.strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] == alert["first_ts"][:23]
    assert int(fields["end"]) - int(fields["start"]) == 900  # 11.250 - 10.350892, in whole ms


def check_leef(line: str, alert: dict[str, Any]) -> None:
    header, fields = parse_leef(line)
    assert header[:5] == [
        "LEEF:2.0",
        "FieldWard",
        "FieldWard",
        __version__,
        re.sub(r"[\r\n]", " ", alert["type"]),
    ]
    for key, name in (
        ("alertId", "id"),
        ("title", "title"),
        ("msg", "explanation"),
        ("alertSrc", "src"),
        ("alertDst", "dst"),
        ("protocol", "protocol"),
        ("status", "status"),
        ("recommendation", "recommendation"),
        ("description", "description"),
        ("firstTime", "first_ts"),
        ("lastTime", "last_ts"),
        ("evidencePcap", "evidence_pcap"),
    ):
        assert fields[key] == alert[name], key
    assert fields["sev"] == str(CEF_SEVERITY[alert["severity"]])
    assert json.loads(fields["details"]) == alert["details"]
    assert fields["devTime"] == alert["last_ts"][:23] + "Z"


@settings(max_examples=300, deadline=None)
@given(
    explanation=hostile_text,
    src=hostile_text,
    dst=hostile_text,
    title=hostile_text,
    kind=hostile_text,
    note=hostile_text,
    status=hostile_text,
)
def test_cef_and_leef_read_back_every_hostile_value(
    explanation: str, src: str, dst: str, title: str, kind: str, note: str, status: str
) -> None:
    assume(not re.search(r"pass|pwd|secret|token|credential|community|key|private", note, re.I))
    alert = record(
        explanation=explanation,
        src=src,
        dst=dst,
        title=title,
        type=kind,
        status=status,
        details={"note": note, note: [note, 1]},
        recommendation=note,
        description=explanation,
    )
    check_cef(to_cef(alert), alert)
    check_leef(to_leef(alert), alert)
    assert orjson.loads(to_json_line(alert)) == alert


def test_addresses_use_the_standard_keys() -> None:
    v6 = record(src="fe80::1", dst="00:0e:8c:d0:f9:cb")
    _header, fields = parse_cef(to_cef(v6))
    assert (fields["c6a2"], fields["c6a2Label"], fields["dmac"]) == (
        "fe80::1",
        "Source IPv6 Address",
        v6["dst"],
    )
    assert "src" not in fields
    _header, fields = parse_cef(to_cef(record(dst="*:502")))
    assert (fields["src"], fields["dhost"]) == ("134.217.61.131", "*:502")
    _header, leef = parse_leef(to_leef(v6))
    assert (leef["src"], leef["dstMAC"]) == ("fe80::1", v6["dst"])
    assert ipaddress.ip_address(leef["src"])


def test_no_secrets_in_the_export() -> None:
    alert = record(
        details={
            "user": "operator",
            "password": "hunter2-secret",
            "nested": {"snmp_community": "pr1vate-c0m"},
        },
        comments=[{"who": "ann", "when": "x", "text": "the root password is swordfish"}],
        history=[{"who": "ann", "when": "x", "action": "ack", "status": "acknowledged"}],
    )
    for line in (to_cef(alert), to_leef(alert), to_json_line(alert)):
        assert "hunter2" not in line
        assert "pr1vate" not in line
        assert "swordfish" not in line
        assert "operator" in line
        assert "[redacted]" in line
    assert "comments" not in orjson.loads(to_json_line(alert))


# ----------------------------------------------------------------------------------- syslog servers


def certificates(folder: Path) -> tuple[Path, Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1/localhost it signs: (ca, cert, key, other_ca)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(tz=dt.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def ca(label: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(label))
            .issuer_name(name(label))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = ca("FieldWard test CA")
    _other_key, other_cert = ca("Some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("syslog.test"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = [folder / n for n in ("ca.pem", "server.pem", "server.key", "other-ca.pem")]
    paths[0].write_bytes(ca_cert.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths[3].write_bytes(other_cert.public_bytes(pem))
    return paths[0], paths[1], paths[2], paths[3]


class StreamServer:
    """A TCP (or TLS) syslog server on localhost that keeps every byte of each connection."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.context = context
        self.received: list[bytes] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _addr = self.sock.accept()
            conn.settimeout(10)
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            chunks = []
            while True:
                try:
                    data = conn.recv(65536)
                except ssl.SSLEOFError:
                    break
                if not data:
                    break
                chunks.append(data)
            self.received.append(b"".join(chunks))
            conn.close()
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(exc)

    def data(self) -> bytes:
        self.thread.join(10)
        self.sock.close()
        assert not self.errors, self.errors
        assert len(self.received) == 1
        return self.received[0]


@pytest.fixture
def udp_server() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    yield sock
    sock.close()


ALERTS = [
    record(),
    record(
        id="fedcba9876543210", severity="low", src="a|b=c\\d", explanation="multi\nline ☃", status="closed"
    ),
    record(id="00000000000000ff", severity="info", dst="*", details={"password": "hunter2-secret"}),
]


def check_messages(messages: list[bytes], fmt: str) -> None:
    assert len(messages) == len(ALERTS)
    for raw, alert in zip(messages, ALERTS, strict=True):
        assert b"hunter2" not in raw
        pri, msg = parse_syslog(raw)
        facility, severity = divmod(pri, 8)
        assert facility == 16  # local0
        assert severity == {"critical": 2, "low": 5, "info": 6}[alert["severity"]]
        expected = dict(alert)
        if "password" in alert["details"]:
            expected["details"] = {"password": "[redacted]"}
        if fmt == "cef":
            check_cef(msg, expected)
        elif fmt == "leef":
            check_leef(msg, expected)
        else:
            assert orjson.loads(msg) == expected


@pytest.mark.parametrize("fmt", ["cef", "leef", "json"])
def test_syslog_over_udp(udp_server: socket.socket, fmt: str) -> None:
    port = udp_server.getsockname()[1]
    assert export_alerts(ALERTS, fmt, syslog=f"udp://127.0.0.1:{port}") == 3
    check_messages([udp_server.recv(65535) for _ in ALERTS], fmt)


@pytest.mark.parametrize("fmt", ["cef", "leef"])
def test_syslog_over_tcp_with_octet_counting(fmt: str) -> None:
    server = StreamServer()
    export_alerts(ALERTS, fmt, syslog=f"tcp://127.0.0.1:{server.port}")
    check_messages(octet_frames(server.data()), fmt)


def test_syslog_over_tcp_with_newline_framing() -> None:
    from fieldward.detect.export import ExportSettings

    server = StreamServer()
    export_alerts(
        ALERTS, "cef", syslog=f"tcp://127.0.0.1:{server.port}", settings=ExportSettings(framing="newline")
    )
    data = server.data()
    assert data.endswith(b"\n")
    check_messages(data[:-1].split(b"\n"), "cef")


def test_syslog_over_tls(tmp_path: Path) -> None:
    ca, cert, key, other_ca = certificates(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = StreamServer(context)
    export_alerts(ALERTS, "cef", syslog=f"tls://127.0.0.1:{server.port}", ca=ca)
    check_messages(octet_frames(server.data()), "cef")
    # A server whose certificate the given CA did not sign is refused, with one clear message.
    server = StreamServer(context)
    with pytest.raises(ExportError, match="not trusted"):
        export_alerts(ALERTS, "cef", syslog=f"tls://127.0.0.1:{server.port}", ca=other_ca)
    server.thread.join(10)
    server.sock.close()


def test_bad_targets_are_clear_errors() -> None:
    for url in ("http://host:1", "udp://", "tcp://host:99999", "tcp://host/path", "host:514"):
        with pytest.raises(ExportError, match="syslog target"):
            SyslogTarget.parse(url)
    assert str(SyslogTarget.parse("tls://[::1]")) == "tls://[::1]:6514"
    assert SyslogTarget.parse("udp://10.0.0.1").port == 514
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(ExportError, match="cannot reach"):
        export_alerts(ALERTS, "cef", syslog=f"tcp://127.0.0.1:{port}")


# ------------------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def scan_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scapy.utils import wrpcap

    folder = tmp_path_factory.mktemp("scan")
    packets = []
    for port in range(20, 60):
        packets += [syn(TARGET[1], port), rst(TARGET[1], port)]
    for index, packet in enumerate(packets):
        packet.time = 1_700_000_000 + index * 0.01
    wrpcap(str(folder / "scan.pcap"), packets)
    analyze([folder / "scan.pcap"], folder / "out")
    return folder / "out"


def test_cli_exports_files_stdout_and_syslog(scan_folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    alerts = [json.loads(line) for line in (scan_folder / "alerts.jsonl").read_text().splitlines()]
    assert alerts
    out = tmp_path / "alerts.cef"
    result = runner.invoke(app, ["alerts", str(scan_folder), "export", "--format", "cef", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().split("\n")
    assert lines[-1] == ""
    assert [parse_cef(line)[1]["externalId"] for line in lines[:-1]] == [a["id"] for a in alerts]
    scan = parse_cef(lines[0])[1]
    assert (scan["src"], scan["dst"]) == (SCANNER[1], TARGET[1])
    assert scan["filePath"] == alerts[0]["evidence_pcap"]

    result = runner.invoke(app, ["alerts", str(scan_folder), "export", "--format", "leef"])
    assert result.exit_code == 0, result.output
    assert parse_leef(result.stdout.split("\n")[0])[1]["alertId"] == alerts[0]["id"]

    server = StreamServer()
    result = runner.invoke(
        app,
        ["alerts", str(scan_folder), "export", "-f", "json", "--syslog", f"tcp://127.0.0.1:{server.port}"],
    )
    assert result.exit_code == 0, result.output
    (frame,) = octet_frames(server.data())
    assert orjson.loads(parse_syslog(frame)[1])["id"] == alerts[0]["id"]

    for args, message in (
        (["--format", "xml"], "unknown export format"),
        (["--syslog", "ftp://x"], "not a syslog target"),
        (["--framing", "lf"], "unknown framing"),
        (["--severity", "urgent"], "unknown severity"),
    ):
        result = runner.invoke(app, ["alerts", str(scan_folder), "export", *args])
        assert result.exit_code == 2, args
        assert message in result.output
