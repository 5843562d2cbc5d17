"""Alerts out to a SIEM: ArcSight CEF, QRadar LEEF 2.0 and JSON lines, to files or to syslog.

Formats (one alert per line, :func:`format_alert`):

- **CEF** (ArcSight Common Event Format, version 0): ``CEF:0|FieldWard|FieldWard|<version>|<type>|
  <title>|<severity 0-10>|<extension>``. Header fields escape ``\\`` and ``|`` with a backslash; the
  CEF specification defines no newline escape in the header, so a CR or LF there becomes a space.
  Extension values escape ``\\``, ``=``, and CR/LF as ``\\r``/``\\n`` (the specification's rules), so
  every value, however hostile, reads back exactly with a CEF parser. Standard keys where one fits
  (``src``/``dst`` for IPv4, ``c6a2``/``c6a3`` for IPv6, ``smac``/``dmac``, ``shost``/``dhost`` for
  anything else, ``start``/``end``/``rt`` in milliseconds, ``cnt``, ``cat``, ``app``, ``msg``,
  ``reason``, ``externalId``, ``filePath``), labelled custom strings ``cs1``..``cs6`` for the rest.
- **LEEF 2.0** (IBM QRadar): ``LEEF:2.0|FieldWard|FieldWard|<version>|<type>|x09|`` then
  ``key=value`` attributes separated by tabs. LEEF splits an attribute at its first ``=``, so ``=``
  needs no escape; a value's backslash, tab, CR and LF are escaped as ``\\\\``, ``\\t``, ``\\r``,
  ``\\n`` so no value can break the attribute list or the line (QRadar shows the escapes as typed).
  Header fields escape ``|`` and ``\\`` as in CEF.
- **JSON lines**: the alert record as ``alerts.jsonl`` holds it, with the analyst's status.

Every format leaves secrets out (:func:`redact`): detail fields whose name says they hold a
password, secret, key, token, credential or SNMP community are replaced by ``[redacted]``, and the
analyst's comments and history are not exported.

Syslog (:class:`SyslogSender`): RFC 5424 messages (``<PRI>1 TIMESTAMP HOST fieldward PID alert -
MSG``, no BOM, so a SIEM sees the message start with ``CEF:``/``LEEF:``), facility ``local0``, the
severity from the alert's. ``udp://host:514`` sends one datagram per alert (RFC 5426; a message
longer than ``max_udp_bytes`` is cut); ``tcp://host:601`` frames with RFC 6587 octet counting
(``LEN SP MSG``) or, with ``framing="newline"``, non-transparent LF framing (the messages never
contain a raw LF); ``tls://host:6514`` is RFC 5425: TLS 1.2 or later, the server certificate checked
against ``ca`` (or the system's trust store) and the host name, octet counting, an optional client
certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import orjson

from fieldward import __version__
from fieldward.errors import FieldWardError

__all__ = [
    "ExportError",
    "ExportFormat",
    "ExportSettings",
    "SyslogSender",
    "SyslogTarget",
    "export_alerts",
    "format_alert",
    "redact",
    "syslog_message",
    "to_cef",
    "to_json_line",
    "to_leef",
]

VENDOR = "FieldWard"
PRODUCT = "FieldWard"
REDACTED = "[redacted]"

CEF_SEVERITY = {"info": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}
"""Alert severity to the CEF / LEEF 0-10 scale."""
SYSLOG_SEVERITY = {"info": 6, "low": 5, "medium": 4, "high": 3, "critical": 2}
"""Alert severity to the syslog severity (RFC 5424: 2 critical ... 6 informational)."""
DEFAULT_PORTS = {"udp": 514, "tcp": 601, "tls": 6514}

_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|pwd|secret|token|credential|community|api.?key|private", re.I
)
_HEADER_NEWLINES = re.compile(r"[\r\n]")


class ExportError(FieldWardError):
    """Alerts that cannot be exported (bad target, unreachable or untrusted syslog server)."""


class ExportFormat(StrEnum):
    CEF = "cef"
    LEEF = "leef"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """How alerts are sent to syslog."""

    facility: int = 16
    """Syslog facility (16: local0)."""
    app_name: str = "fieldward"
    framing: str = "octet"
    """TCP framing: ``octet`` (RFC 6587 octet counting, always used over TLS) or ``newline``."""
    timeout_s: float = 10.0
    max_udp_bytes: int = 65000
    """Longest UDP datagram sent (a longer message is cut: IPv4 carries at most 65,507 bytes)."""

    def __post_init__(self) -> None:
        if not 0 <= self.facility <= 23:
            raise ValueError("syslog facility must be between 0 and 23")
        if self.framing not in ("octet", "newline"):
            raise ValueError("framing must be 'octet' or 'newline'")


# ------------------------------------------------------------------------------------- redaction


def redact(record: dict[str, Any]) -> dict[str, Any]:
    """The record without secrets and without the analyst's notes (see the module docstring)."""
    clean = {k: v for k, v in record.items() if k not in ("comments", "history")}
    if "details" in clean:
        clean["details"] = _redact_value(clean["details"])
    return clean


def _redact_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            str(k): (REDACTED if _SECRET_KEY.search(str(k)) else _redact_value(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------- escaping


def cef_header(value: Any) -> str:
    """A CEF (and LEEF) header field: backslash and pipe escaped, line breaks made spaces."""
    text = _HEADER_NEWLINES.sub(" ", _text(value))
    return text.replace("\\", "\\\\").replace("|", "\\|")


def cef_value(value: Any) -> str:
    """A CEF extension value: backslash, equals sign and line breaks escaped."""
    return _text(value).replace("\\", "\\\\").replace("=", "\\=").replace("\n", "\\n").replace("\r", "\\r")


def leef_value(value: Any) -> str:
    """A LEEF attribute value: backslash, tab and line breaks escaped (see the module docstring)."""
    return _text(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


# ----------------------------------------------------------------------------------------- formats


def _millis(iso: Any) -> str:
    """Milliseconds since the epoch of an alert time (CEF's timestamp form), or '' if unreadable."""
    try:
        stamp = dt.datetime.strptime(str(iso)[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return ""
    fraction = str(iso)[20:23] if len(str(iso)) > 20 else ""
    millis = int(fraction) if fraction.isdigit() else 0
    return str(int(stamp.timestamp()) * 1000 + millis)


def _address_kind(value: str) -> str:
    """``ipv4``, ``ipv6``, ``mac`` or ``other`` (a wildcard like ``*:502``, a name)."""
    try:
        return "ipv4" if ipaddress.ip_address(value).version == 4 else "ipv6"
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", value):
        return "mac"
    return "other"


_CEF_ENDPOINT = {
    "src": {"ipv4": "src", "ipv6": "c6a2", "mac": "smac", "other": "shost"},
    "dst": {"ipv4": "dst", "ipv6": "c6a3", "mac": "dmac", "other": "dhost"},
}


def to_cef(record: dict[str, Any]) -> str:
    """One alert record as a CEF:0 line (without the trailing newline)."""
    record = redact(record)
    severity = CEF_SEVERITY.get(str(record.get("severity")), 5)
    header = "|".join(
        [
            "CEF:0",
            cef_header(VENDOR),
            cef_header(PRODUCT),
            cef_header(__version__),
            cef_header(record.get("type")),
            cef_header(record.get("title")),
            str(severity),
        ]
    )
    ext: list[tuple[str, Any]] = [
        ("rt", _millis(record.get("last_ts"))),
        ("start", _millis(record.get("first_ts"))),
        ("end", _millis(record.get("last_ts"))),
        ("cnt", record.get("count")),
        ("cat", record.get("engine")),
        ("app", record.get("protocol")),
    ]
    for side in ("src", "dst"):
        value = _text(record.get(side))
        key = _CEF_ENDPOINT[side][_address_kind(value)]
        if key in ("c6a2", "c6a3"):
            ext.append(
                (f"{key}Label", "Source IPv6 Address" if side == "src" else "Destination IPv6 Address")
            )
        ext.append((key, value))
    ext += [
        ("externalId", record.get("id")),
        ("msg", record.get("explanation")),
        ("reason", record.get("description")),
        ("cs1Label", "MITRE ATT&CK for ICS"),
        ("cs1", ",".join(_text(t) for t in record.get("mitre") or ())),
        ("cs2Label", "Status"),
        ("cs2", record.get("status")),
        ("cs3Label", "Source device"),
        ("cs3", record.get("src_device")),
        ("cs4Label", "Destination device"),
        ("cs4", record.get("dst_device")),
        ("cs5Label", "Recommendation"),
        ("cs5", record.get("recommendation")),
        ("cs6Label", "Details"),
        ("cs6", record.get("details") or {}),
    ]
    if record.get("evidence_pcap"):
        ext.append(("filePath", record.get("evidence_pcap")))
    extension = " ".join(f"{key}={cef_value(value)}" for key, value in ext)
    return f"{header}|{extension}"


def to_leef(record: dict[str, Any]) -> str:
    """One alert record as a LEEF:2.0 line with tab-separated attributes (no trailing newline)."""
    record = redact(record)
    severity = CEF_SEVERITY.get(str(record.get("severity")), 5)
    header = "|".join(
        [
            "LEEF:2.0",
            cef_header(VENDOR),
            cef_header(PRODUCT),
            cef_header(__version__),
            cef_header(record.get("type")),
            "x09",
        ]
    )
    attrs: list[tuple[str, Any]] = [
        ("devTime", str(record.get("last_ts", ""))[:23] + "Z" if record.get("last_ts") else ""),
        ("devTimeFormat", "yyyy-MM-dd'T'HH:mm:ss.SSSX"),
        ("cat", record.get("engine")),
        ("sev", severity),
    ]
    for side in ("src", "dst"):
        value = _text(record.get(side))
        kind = _address_kind(value)
        if kind in ("ipv4", "ipv6"):
            attrs.append((side, value))
        elif kind == "mac":
            attrs.append((f"{side}MAC", value))
    attrs += [
        ("alertId", record.get("id")),
        ("title", record.get("title")),
        ("severity", record.get("severity")),
        ("status", record.get("status")),
        ("count", record.get("count")),
        ("firstTime", record.get("first_ts")),
        ("lastTime", record.get("last_ts")),
        ("alertSrc", record.get("src")),
        ("alertDst", record.get("dst")),
        ("srcDevice", record.get("src_device")),
        ("dstDevice", record.get("dst_device")),
        ("protocol", record.get("protocol")),
        ("mitre", ",".join(_text(t) for t in record.get("mitre") or ())),
        ("msg", record.get("explanation")),
        ("description", record.get("description")),
        ("recommendation", record.get("recommendation")),
        ("details", record.get("details") or {}),
    ]
    if record.get("evidence_pcap"):
        attrs.append(("evidencePcap", record.get("evidence_pcap")))
    return header + "|" + "\t".join(f"{key}={leef_value(value)}" for key, value in attrs)


def to_json_line(record: dict[str, Any]) -> str:
    """One alert record as a JSON line (no trailing newline; orjson escapes every line break)."""
    return orjson.dumps(redact(record)).decode()


def format_alert(record: dict[str, Any], fmt: ExportFormat | str) -> str:
    try:
        kind = ExportFormat(str(fmt).lower())
    except ValueError as exc:
        raise ExportError(f"unknown export format {fmt!r} (cef, leef or json)") from exc
    if kind is ExportFormat.CEF:
        return to_cef(record)
    if kind is ExportFormat.LEEF:
        return to_leef(record)
    return to_json_line(record)


# ------------------------------------------------------------------------------------------ syslog


def _hostname() -> str:
    """This host's name as RFC 5424 allows it (printable US-ASCII, no space, at most 255), or '-'."""
    name = "".join(c for c in socket.gethostname() if 33 <= ord(c) <= 126)[:255]
    return name or "-"


def syslog_message(message: str, severity: str, settings: ExportSettings | None = None) -> bytes:
    """An RFC 5424 syslog message carrying ``message`` (UTF-8, no BOM, no structured data)."""
    settings = settings or ExportSettings()
    pri = settings.facility * 8 + SYSLOG_SEVERITY.get(severity, 5)
    now = dt.datetime.now(tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    head = f"<{pri}>1 {now} {_hostname()} {settings.app_name} {os.getpid()} alert - "
    return head.encode("ascii") + message.encode("utf-8")


@dataclass(frozen=True, slots=True)
class SyslogTarget:
    """Where to send: ``udp://host:514``, ``tcp://host:601`` or ``tls://host:6514``."""

    transport: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> SyslogTarget:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ExportError(f"not a syslog target: {url!r} ({exc})") from exc
        transport = parts.scheme.lower()
        if transport not in DEFAULT_PORTS or not parts.hostname:
            raise ExportError(
                f"not a syslog target: {url!r} (udp://host:514, tcp://host:601 or tls://host:6514)"
            )
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise ExportError(f"a syslog target is scheme://host:port, not {url!r}")
        return cls(transport, parts.hostname, port or DEFAULT_PORTS[transport])

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}://{host}:{self.port}"


class SyslogSender:
    """A connection to a syslog server; :meth:`send` frames and sends one message."""

    def __init__(
        self,
        target: SyslogTarget | str,
        *,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        settings: ExportSettings | None = None,
    ) -> None:
        self.target = target if isinstance(target, SyslogTarget) else SyslogTarget.parse(target)
        self.settings = settings or ExportSettings()
        self.sent = 0
        self._sock: socket.socket | None = None
        self._ca, self._cert, self._key = ca, cert, key

    def __enter__(self) -> SyslogSender:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        target, timeout = self.target, self.settings.timeout_s
        try:
            if target.transport == "udp":
                family, kind, proto, _name, address = socket.getaddrinfo(
                    target.host, target.port, type=socket.SOCK_DGRAM
                )[0]
                sock = socket.socket(family, kind, proto)
                sock.settimeout(timeout)
                sock.connect(address)
                self._sock = sock
                return
            raw = socket.create_connection((target.host, target.port), timeout=timeout)
            if target.transport == "tcp":
                self._sock = raw
                return
            try:
                self._sock = self._tls_context().wrap_socket(raw, server_hostname=target.host)
            except BaseException:
                raw.close()
                raise
        except ssl.SSLCertVerificationError as exc:
            raise ExportError(f"{target}: server certificate not trusted: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            raise ExportError(f"{target}: TLS failed: {exc.reason or exc}") from exc
        except OSError as exc:
            raise ExportError(f"cannot reach syslog server {target}: {exc.strerror or exc}") from exc

    def _tls_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=str(self._ca) if self._ca else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if self._cert is not None:
                context.load_cert_chain(str(self._cert), str(self._key) if self._key else None)
        except (OSError, ssl.SSLError) as exc:
            raise ExportError(f"cannot load TLS certificates: {exc}") from exc
        return context

    def frame(self, message: bytes) -> bytes:
        if self.target.transport == "udp":
            return message[: self.settings.max_udp_bytes]
        if self.target.transport == "tcp" and self.settings.framing == "newline":
            return message + b"\n"
        return str(len(message)).encode("ascii") + b" " + message

    def send(self, message: str, severity: str = "medium") -> None:
        if self._sock is None:
            self.open()
        assert self._sock is not None
        data = self.frame(syslog_message(message, severity, self.settings))
        try:
            if self.target.transport == "udp":
                self._sock.send(data)
            else:
                self._sock.sendall(data)
        except OSError as exc:
            raise ExportError(f"sending to {self.target} failed: {exc.strerror or exc}") from exc
        self.sent += 1

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            if isinstance(sock, ssl.SSLSocket):
                sock.unwrap()  # close_notify: the server knows the stream ended cleanly
        except (OSError, ValueError):
            pass
        finally:
            sock.close()


# ------------------------------------------------------------------------------------------- entry


def export_alerts(
    records: Iterable[dict[str, Any]],
    fmt: ExportFormat | str,
    *,
    out: Path | BinaryIO | None = None,
    syslog: str | None = None,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    settings: ExportSettings | None = None,
) -> int:
    """Write every record in ``fmt`` to ``out`` (a file path or binary stream) and/or send it to
    ``syslog``; returns the number of alerts exported."""
    lines: Sequence[tuple[str, str]] = [
        (format_alert(r, fmt), str(r.get("severity", "medium"))) for r in records
    ]
    if out is not None:
        payload = "".join(line + "\n" for line, _sev in lines).encode("utf-8")
        if isinstance(out, Path):
            try:
                out.write_bytes(payload)
            except OSError as exc:
                raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from exc
        else:
            out.write(payload)
    if syslog is not None:
        with SyslogSender(syslog, ca=ca, cert=cert, key=key, settings=settings) as sender:
            for line, severity in lines:
                sender.send(line, severity)
    return len(lines)
