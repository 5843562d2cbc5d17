"""OPC UA binary dissector: messages built per OPC 10000-6 (Part 6), cross-checked with tshark; fuzz.

The corpus has no OPC UA capture, so every message is built here byte by byte from Part 6 (message
header 7.1.2.2, Hello/Acknowledge/Error/ReverseHello 7.1.2.3-7.1.2.6, security headers 6.7.2,
built-in type encodings 5.2) and Part 4 (RequestHeader 7.32, ResponseHeader 7.33, OpenSecureChannel
5.5.2), and checked twice: against the values it was built from, and against tshark's ``opcua``
dissector on the same bytes (PDML, one message per TCP segment, ``-d tcp.port==PORT,opcua`` for the
unusual port). Status code and service names are compared with the names tshark prints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import wrpcap

from fieldward.pipeline import analyze
from fieldward.protocols.base import Event, FlowInfo, PduContext, ProtocolWeird, Transport, Verdict
from fieldward.protocols.opcua import (
    MAX_DEPTH,
    MAX_OPEN_MESSAGES,
    OpcuaDissector,
    OpcuaError,
    OpcuaHello,
    OpcuaMessage,
    OpcuaSecureChannel,
    UaError,
    UaReader,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "opcua.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "opcua.py"
EVENT_TYPES = (OpcuaMessage, OpcuaHello, OpcuaError, OpcuaSecureChannel)
NONE_POLICY = "http://opcfoundation.org/UA/SecurityPolicy#None"
SECURE_POLICY = "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"
URL = "opc.tcp://plc-7.plant.example:4840/UA/Server"
H = bytes.fromhex
ODD_PORT = 48010


# ---------------------------------------------------------------------- encoders (Part 6 5.2)


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def i32(value: int) -> bytes:
    return struct.pack("<i", value)


def bstr(value: bytes | str | None) -> bytes:
    """String / ByteString: Int32 length (-1 = null) and the bytes."""
    if value is None:
        return i32(-1)
    raw = value.encode() if isinstance(value, str) else value
    return i32(len(raw)) + raw


def node(identifier: int, namespace: int = 0) -> bytes:
    """A NodeId in the shortest numeric encoding (5.2.2.9: two-byte, four-byte or numeric)."""
    if namespace == 0 and identifier < 256:
        return bytes([0x00, identifier])
    if namespace < 256 and identifier < 65536:
        return bytes([0x01, namespace]) + struct.pack("<H", identifier)
    return bytes([0x02]) + struct.pack("<HI", namespace, identifier)


NULL_NODE = node(0)
EMPTY_EXTENSION = NULL_NODE + b"\x00"
TIMESTAMP = struct.pack("<q", 133_500_000_000_000_000)  # a DateTime: 100 ns ticks since 1601


def message(msg_type: bytes, body: bytes, chunk: bytes = b"F", size: int | None = None) -> bytes:
    """Message header (7.1.2.2): type, chunk type, MessageSize of the whole message."""
    return msg_type + chunk + u32(8 + len(body) if size is None else size) + body


def hello(
    url: str | None = URL, version: int = 0, buffers: tuple[int, int, int, int] = (65536, 65536, 0, 0)
) -> bytes:
    return message(b"HEL", u32(version) + b"".join(map(u32, buffers)) + bstr(url))


def acknowledge(version: int = 0, buffers: tuple[int, int, int, int] = (65535, 65535, 2097152, 64)) -> bytes:
    return message(b"ACK", u32(version) + b"".join(map(u32, buffers)))


def error(code: int, reason: str | None) -> bytes:
    return message(b"ERR", u32(code) + bstr(reason))


def reverse_hello(server_uri: str, url: str) -> bytes:
    return message(b"RHE", bstr(server_uri) + bstr(url))


def request_header(handle: int) -> bytes:
    """RequestHeader (Part 4 7.32): token, timestamp, handle, diagnostics, audit id, timeout, additional."""
    return NULL_NODE + TIMESTAMP + u32(handle) + u32(0) + bstr(None) + u32(10000) + EMPTY_EXTENSION


def response_header(handle: int, result: int = 0, diagnostics: bytes = b"\x00") -> bytes:
    """ResponseHeader (Part 4 7.33): timestamp, handle, result, diagnostics, string table, additional."""
    return TIMESTAMP + u32(handle) + u32(result) + diagnostics + i32(-1) + EMPTY_EXTENSION


def asymmetric(
    channel: int, policy: str, certificate: bytes | None = None, thumbprint: bytes | None = None
) -> bytes:
    return u32(channel) + bstr(policy) + bstr(certificate) + bstr(thumbprint)


def open_request(
    *,
    channel: int = 0,
    request_type: int = 0,
    mode: int = 1,
    nonce: bytes | None = b"",
    lifetime: int = 3_600_000,
    sequence: int = 51,
    request_id: int = 1,
) -> bytes:
    body = (
        node(446) + request_header(1) + u32(0) + i32(request_type) + i32(mode) + bstr(nonce) + u32(lifetime)
    )
    return message(b"OPN", asymmetric(channel, NONE_POLICY) + u32(sequence) + u32(request_id) + body)


def open_response(
    *, channel: int = 17, token: int = 5, lifetime: int = 600_000, result: int = 0, request_id: int = 1
) -> bytes:
    body = node(449) + response_header(1, result) + u32(0) + u32(channel) + u32(token) + TIMESTAMP
    body += u32(lifetime) + bstr(b"")
    return message(b"OPN", asymmetric(channel, NONE_POLICY) + u32(1) + u32(request_id) + body)


def symmetric(
    msg_type: bytes,
    body: bytes,
    *,
    channel: int = 17,
    token: int = 5,
    sequence: int = 52,
    request_id: int = 2,
    chunk: bytes = b"F",
) -> bytes:
    return message(msg_type, u32(channel) + u32(token) + u32(sequence) + u32(request_id) + body, chunk)


def get_endpoints_request(handle: int) -> bytes:
    return node(428) + request_header(handle) + bstr(URL) + i32(-1) + i32(-1)


def get_endpoints_response(handle: int) -> bytes:
    return node(431) + response_header(handle) + i32(0)


def read_request(handle: int) -> bytes:
    """ReadRequest: maxAge (Double), TimestampsToReturn, NodesToRead (one Value attribute)."""
    to_read = node(2258) + u32(13) + bstr(None) + struct.pack("<H", 0) + bstr(None)
    return node(631) + request_header(handle) + struct.pack("<d", 0.0) + u32(2) + i32(1) + to_read


def read_response(handle: int) -> bytes:
    return node(634) + response_header(handle) + i32(0) + i32(-1)


def service_fault(handle: int, result: int) -> bytes:
    return node(397) + response_header(handle, result)


def close_request(handle: int) -> bytes:
    return node(452) + request_header(handle)


# ---------------------------------------------------------------------- pipeline runs


@dataclass
class TcpConversation:
    """A TCP connection built segment by segment with consistent sequence numbers (scapy)."""

    client: str = "10.60.0.5"
    server: str = "10.60.0.10"
    cport: int = 50001
    sport: int = 4840
    packets: list[Packet] = field(default_factory=list)
    cseq: int = 1000
    sseq: int = 9000

    def __post_init__(self) -> None:
        self._add(True, "S", b"", seq=self.cseq - 1)
        self._add(False, "SA", b"", seq=self.sseq - 1)

    def _add(self, from_client: bool, flags: str, data: bytes, seq: int | None = None) -> None:
        if from_client:
            ip = IP(src=self.client, dst=self.server)
            tcp = TCP(
                sport=self.cport,
                dport=self.sport,
                flags=flags,
                seq=self.cseq if seq is None else seq,
                ack=self.sseq,
            )
            self.cseq += len(data)
        else:
            ip = IP(src=self.server, dst=self.client)
            tcp = TCP(
                sport=self.sport,
                dport=self.cport,
                flags=flags,
                seq=self.sseq if seq is None else seq,
                ack=self.cseq,
            )
            self.sseq += len(data)
        self.packets.append(Ether() / ip / tcp / data if data else Ether() / ip / tcp)

    def c(self, *segments: bytes) -> TcpConversation:
        for data in segments:
            self._add(True, "PA", data)
        return self

    def s(self, *segments: bytes) -> TcpConversation:
        for data in segments:
            self._add(False, "PA", data)
        return self

    def done(self) -> list[Packet]:
        self._add(True, "FA", b"")
        self._add(False, "FA", b"")
        return self.packets


@dataclass
class Run:
    logs: dict[str, list[dict[str, Any]]]
    capture: Path

    def rows(self, log: str) -> list[dict[str, Any]]:
        return self.logs.get(log, [])

    def weirds(self) -> list[str]:
        return [r["name"] for r in self.rows("weird") if r["protocol"] == "opcua"]


def run_packets(tmp_path: Path, packets: list[Packet], name: str = "built") -> Run:
    capture = tmp_path / f"{name}.pcap"
    for i, packet in enumerate(packets):
        packet.time = 1_700_000_000.0 + i * 0.01
    wrpcap(str(capture), packets)
    out = tmp_path / f"out-{name}"
    result = analyze([capture], out)
    assert result.weird.counts.get("dissector_exception", 0) == 0
    logs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((out / "events").glob("*.parquet")):
        table = pq.read_table(path)
        table = table.set_column(table.schema.get_field_index("ts"), "ts", table["ts"].cast(pa.int64()))
        logs[path.stem] = sorted(table.to_pylist(), key=lambda r: r["ts"])
    return Run(logs, capture)


class Collector:
    """A PduContext for sans-io tests."""

    def __init__(self) -> None:
        self.flow = FlowInfo(5, Transport.TCP, "10.0.0.1", 50001, "10.0.0.2", 4840)
        self.events: list[Event] = []
        self.ctx = PduContext(self.flow, "opcua", self.events.append, self.events.append)
        self.dissector = OpcuaDissector(self.flow)

    def feed(self, stream: bytes, is_orig: bool = True) -> Collector:
        """Frame and parse a byte stream as the engine does."""
        self.ctx.is_orig = is_orig
        buf = stream
        while buf:
            size = self.dissector.frame(buf, is_orig)
            if size == 0:
                break
            if size < 0 or size > len(buf):
                self.ctx.weird("opcua_unframeable_data", f"{len(buf)} bytes dropped")
                break
            self.dissector.parse(buf[:size], self.ctx)
            buf = buf[size:]
        return self

    def parse(self, pdu: bytes, is_orig: bool = True) -> Collector:
        self.ctx.is_orig = is_orig
        self.dissector.parse(pdu, self.ctx)
        return self

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def weirds(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, ProtocolWeird)]


# ---------------------------------------------------------------------- tshark


@dataclass
class TsharkFrame:
    fields: dict[str, str] = field(default_factory=dict)
    shownames: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)


def _walk(element: ET.Element) -> Iterator[ET.Element]:
    yield element
    for child in element:
        yield from _walk(child)


def tshark_frames(tshark: str, capture: Path) -> list[TsharkFrame]:
    """Every frame with an ``opcua`` layer, as tshark dissects it (first occurrence of each field)."""
    pdml = subprocess.run(
        [tshark, "-r", str(capture), "-T", "pdml", "-d", f"tcp.port=={ODD_PORT},opcua", "-Y", "opcua"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    frames = []
    for packet in ET.fromstring(pdml).iter("packet"):
        frame = TsharkFrame()
        for proto in packet.iter("proto"):
            if proto.get("name") != "opcua":
                continue
            for element in _walk(proto):
                name = element.get("name", "")
                if name.startswith("opcua."):
                    frame.fields.setdefault(name, element.get("show", ""))
                    frame.shownames.setdefault(name, element.get("showname", ""))
                    frame.raw.setdefault(name, element.get("value", ""))
        frames.append(frame)
    return frames


def frames_by_ts(tshark: str, capture: Path) -> dict[int, TsharkFrame]:
    """tshark frames keyed by capture time in ns (the ``ts`` of our events)."""
    times = subprocess.run(
        [
            tshark,
            "-r",
            str(capture),
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-d",
            f"tcp.port=={ODD_PORT},opcua",
            "-Y",
            "opcua",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    frames = tshark_frames(tshark, capture)
    assert len(times) == len(frames)
    return {round(float(t) * 1e6) * 1000: f for t, f in zip(times, frames, strict=True)}


def tshark_string(frame: TsharkFrame, name: str) -> str | None:
    """A String field as tshark shows it; None for a null String (length -1)."""
    if name not in frame.fields or (frame.fields[name] == "" and frame.raw[name] == "ffffffff"):
        return None
    return frame.fields[name]


def tshark_bytes(frame: TsharkFrame, name: str) -> bytes | None:
    """A ByteString field's bytes; tshark marks a null or empty one in its showname."""
    showname = frame.shownames[name]
    if "Null ByteString" in showname:
        return None
    return b"" if "Empty ByteString" in showname else H(frame.raw[name])


def number(text: str) -> int:
    return int(text, 16) if text.startswith("0x") else int(text)


def showname_word(frame: TsharkFrame, name: str) -> str:
    """The name tshark gives a value: ``X: ReadRequest (631)``, ``X: 0x80250000 [BadSessionIdInvalid]``."""
    showname = frame.shownames[name]
    bracket = re.search(r"\[(\w+)\]$", showname)
    if bracket:
        return bracket[1]
    word = re.search(r": (\w+) \(", showname)
    assert word is not None, showname
    return word[1]


MESSAGE_FIELDS = {
    "msg_type": "opcua.transport.type",
    "chunk_type": "opcua.transport.chunk",
    "msg_size": "opcua.transport.size",
    "secure_channel_id": "opcua.transport.scid",
    "token_id": "opcua.security.tokenid",
    "sequence_number": "opcua.security.seq",
    "request_id": "opcua.security.rqid",
    "service_id": "opcua.servicenodeid.numeric",
    "service_result": "opcua.ServiceResult",
    "security_policy_uri": "opcua.security.spu",
}
HELLO_FIELDS = {
    "protocol_version": "opcua.transport.ver",
    "receive_buffer_size": "opcua.transport.rbs",
    "send_buffer_size": "opcua.transport.sbs",
    "max_message_size": "opcua.transport.mms",
    "max_chunk_count": "opcua.transport.mcc",
    "endpoint_url": "opcua.transport.endpoint",
    "server_uri": "opcua.transport.suri",
}
CHANNEL_FIELDS = {
    "secure_channel_id": "opcua.transport.scid",
    "security_policy_uri": "opcua.security.spu",
    "sequence_number": "opcua.security.seq",
    "request_id": "opcua.security.rqid",
    "client_protocol_version": "opcua.ClientProtocolVersion",
    "requested_lifetime": "opcua.RequestedLifetime",
    "service_result": "opcua.ServiceResult",
    "server_protocol_version": "opcua.ServerProtocolVersion",
    "channel_id": "opcua.ChannelId",
    "token_id": "opcua.TokenId",
    "revised_lifetime": "opcua.RevisedLifetime",
}


def assert_matches(row: dict[str, Any], frame: TsharkFrame, mapping: dict[str, str]) -> None:
    """Every mapped field: null where tshark has no such field, else equal to tshark's value."""
    for ours, theirs in mapping.items():
        value = row[ours]
        if theirs not in frame.fields:
            assert value is None, f"{ours}={value!r} but tshark has no {theirs}"
        elif isinstance(value, int):
            assert value == number(frame.fields[theirs]), ours
        else:
            assert value == tshark_string(frame, theirs), ours


def check_against_tshark(run: Run, tshark: str) -> dict[int, TsharkFrame]:
    frames = frames_by_ts(tshark, run.capture)
    messages = run.rows("opcua")
    assert sorted(r["ts"] for r in messages) == sorted(frames)
    for row in messages:
        frame = frames[row["ts"]]
        headers = ("msg_type", "chunk_type", "msg_size", "secure_channel_id", "token_id")
        mapping = MESSAGE_FIELDS if row["unsecured"] is not False else {k: MESSAGE_FIELDS[k] for k in headers}
        if row["msg_type"] != "OPN":  # MSG/CLO rows carry their channel's policy, tshark only the OPN's
            mapping = {k: v for k, v in mapping.items() if k != "security_policy_uri"}
        assert_matches(row, frame, mapping)
        if row["service"] is not None:
            assert row["service"] == showname_word(frame, "opcua.servicenodeid.numeric")
        if row["service_result_name"] is not None:
            assert row["service_result_name"] == showname_word(frame, "opcua.ServiceResult")
    for row in run.rows("opcua_hello"):
        assert_matches(row, frames[row["ts"]], HELLO_FIELDS)
    for row in run.rows("opcua_error"):
        frame = frames[row["ts"]]
        assert row["status_code"] == number(frame.fields["opcua.transport.error"])
        assert row["reason"] == tshark_string(frame, "opcua.transport.reason")
        if not row["status"].startswith("0x"):
            assert row["status"] == showname_word(frame, "opcua.transport.error")
    for row in run.rows("opcua_secure_channel"):
        frame = frames[row["ts"]]
        mapping = (
            CHANNEL_FIELDS
            if row["unsecured"]
            else {k: CHANNEL_FIELDS[k] for k in ("secure_channel_id", "security_policy_uri")}
        )
        assert_matches(row, frame, mapping)
        certificate = tshark_bytes(frame, "opcua.security.scert")
        assert row["sender_certificate_length"] == (None if certificate is None else len(certificate))
        assert (row["sender_certificate_sha1"] is None) == (not certificate)
        thumbprint = tshark_bytes(frame, "opcua.security.rcthumb")
        assert row["receiver_thumbprint"] == (thumbprint.hex() if thumbprint else None)
        if row["request_type"] is not None:
            assert row["request_type"] == showname_word(frame, "opcua.SecurityTokenRequestType")
            assert row["security_mode"] == showname_word(frame, "opcua.MessageSecurityMode")
            assert row["client_nonce_length"] == len(tshark_bytes(frame, "opcua.ClientNonce") or b"")
        if row["server_nonce_length"] is not None:
            assert row["server_nonce_length"] == len(tshark_bytes(frame, "opcua.ServerNonce") or b"")
    return frames


# ---------------------------------------------------------------------- built sessions vs tshark


def unsecured_session(port: int = 4840) -> list[Packet]:
    conversation = TcpConversation(sport=port)
    conversation.c(hello()).s(acknowledge())
    conversation.c(open_request(nonce=bytes(range(32)))).s(open_response())
    conversation.c(symmetric(b"MSG", get_endpoints_request(2), sequence=52, request_id=2))
    conversation.s(symmetric(b"MSG", get_endpoints_response(2), sequence=2, request_id=2))
    conversation.c(symmetric(b"MSG", read_request(3), sequence=53, request_id=3))
    conversation.s(symmetric(b"MSG", read_response(3), sequence=3, request_id=3))
    conversation.c(symmetric(b"MSG", read_request(4), sequence=54, request_id=4))
    conversation.s(symmetric(b"MSG", service_fault(4, 0x80250000), sequence=4, request_id=4))
    conversation.c(symmetric(b"CLO", close_request(5), sequence=55, request_id=5))
    return conversation.done()


@pytest.mark.parametrize("port", [4840, ODD_PORT])
def test_unsecured_session_matches_tshark_and_the_spec(tmp_path: Path, tshark: str, port: int) -> None:
    run = run_packets(tmp_path, unsecured_session(port))
    check_against_tshark(run, tshark)
    messages = run.rows("opcua")
    assert [(m["msg_type"], m["resp_p"], m["unsecured"]) for m in messages][:3] == [
        ("HEL", port, None),
        ("ACK", port, None),
        ("OPN", port, True),
    ]
    assert [m["service"] for m in messages] == [
        None,
        None,
        "OpenSecureChannelRequest",
        "OpenSecureChannelResponse",
        "GetEndpointsRequest",
        "GetEndpointsResponse",
        "ReadRequest",
        "ReadResponse",
        "ReadRequest",
        "ServiceFault",
        "CloseSecureChannelRequest",
    ]
    assert [m["service_result_name"] for m in messages if m["service_result"] is not None] == [
        "Good",
        "Good",
        "Good",
        "BadSessionIdInvalid",
    ]
    assert messages[6]["service_node_id"] == "i=631"
    hel, ack = run.rows("opcua_hello")
    assert (hel["msg_type"], hel["endpoint_url"], hel["receive_buffer_size"], hel["protocol_version"]) == (
        "HEL",
        URL,
        65536,
        0,
    )
    assert (ack["msg_type"], ack["max_message_size"], ack["max_chunk_count"], ack["endpoint_url"]) == (
        "ACK",
        2097152,
        64,
        None,
    )
    request, response = run.rows("opcua_secure_channel")
    assert (
        request["security_policy"],
        request["unsecured"],
        request["request_type"],
        request["security_mode"],
    ) == (
        "None",
        True,
        "Issue",
        "None",
    )
    assert (request["requested_lifetime"], request["client_nonce_length"], request["is_orig"]) == (
        3_600_000,
        32,
        True,
    )
    assert response["server_nonce_length"] == 0
    assert (response["channel_id"], response["token_id"], response["revised_lifetime"]) == (17, 5, 600_000)
    assert (response["service_result_name"], response["sender_certificate_length"]) == ("Good", None)
    assert run.rows("opcua_error") == []
    assert run.weirds() == []


FAKE_CERTIFICATE = H("308201f4") + bytes(range(250)) * 2  # a DER SEQUENCE of 500 content bytes
SECOND_CERTIFICATE = H("30820010") + bytes(16)
THUMBPRINT = hashlib.sha1(b"server certificate").digest()


def test_secured_channel_is_reported_from_its_headers(tmp_path: Path, tshark: str) -> None:
    encrypted = bytes((i * 37) & 0xFF for i in range(256))
    request = message(b"OPN", asymmetric(0, SECURE_POLICY, FAKE_CERTIFICATE, THUMBPRINT) + encrypted)
    chain = FAKE_CERTIFICATE + SECOND_CERTIFICATE
    response = message(b"OPN", asymmetric(99, SECURE_POLICY, chain, THUMBPRINT) + encrypted)
    conversation = TcpConversation().c(hello()).s(acknowledge()).c(request).s(response)
    conversation.c(message(b"MSG", u32(99) + u32(1) + encrypted)).s(
        message(b"MSG", u32(99) + u32(1) + encrypted[:64])
    )
    run = run_packets(tmp_path, conversation.done())
    frames = check_against_tshark(run, tshark)
    channels = run.rows("opcua_secure_channel")
    certificates = [frames[c["ts"]].raw["opcua.security.scert"] for c in channels]
    assert certificates == [FAKE_CERTIFICATE.hex(), chain.hex()]
    assert [(c["security_policy"], c["unsecured"], c["request_type"], c["service"]) for c in channels] == [
        ("Basic256Sha256", False, None, None),
        ("Basic256Sha256", False, None, None),
    ]
    assert channels[0]["sender_certificate_sha1"] == hashlib.sha1(FAKE_CERTIFICATE).hexdigest()
    assert channels[0]["sender_certificate_length"] == len(FAKE_CERTIFICATE)
    assert channels[0]["receiver_thumbprint"] == THUMBPRINT.hex()
    # A chain of certificates: the SHA-1 thumbprint is the first (the sender's own) certificate's.
    assert channels[1]["sender_certificate_sha1"] == hashlib.sha1(FAKE_CERTIFICATE).hexdigest()
    assert channels[1]["sender_certificate_length"] == len(chain)
    msgs = [m for m in run.rows("opcua") if m["msg_type"] == "MSG"]
    assert [
        (m["secure_channel_id"], m["token_id"], m["unsecured"], m["service"], m["sequence_number"])
        for m in msgs
    ] == [
        (99, 1, False, None, None),
        (99, 1, False, None, None),
    ]
    assert msgs[0]["security_policy_uri"] == SECURE_POLICY
    assert run.weirds() == []


def test_error_and_reverse_hello_match_tshark(tmp_path: Path, tshark: str) -> None:
    first = TcpConversation(cport=50010).c(hello()).s(error(0x807E0000, "unexpected message type"))
    second = TcpConversation(cport=50011).c(hello()).s(error(0x80AB0000, None))
    # Reverse connect (Part 6 7.1.3): the server opens the connection and sends ReverseHello.
    reverse = TcpConversation(client="10.60.0.10", server="10.60.0.5", cport=50012, sport=ODD_PORT)
    reverse.c(reverse_hello("urn:plant:plc-7", URL)).s(hello())
    run = run_packets(tmp_path, first.done() + second.done() + reverse.done())
    check_against_tshark(run, tshark)
    errors = run.rows("opcua_error")
    assert [(e["status_code"], e["status"], e["reason"], e["is_orig"]) for e in errors] == [
        (0x807E0000, "BadTcpMessageTypeInvalid", "unexpected message type", False),
        (0x80AB0000, "0x80AB0000", None, False),
    ]
    rhe = [h for h in run.rows("opcua_hello") if h["msg_type"] == "RHE"]
    assert [(h["server_uri"], h["endpoint_url"], h["protocol_version"]) for h in rhe] == [
        ("urn:plant:plc-7", URL, None)
    ]
    assert run.weirds() == []


def test_multi_chunk_messages_and_abort(tmp_path: Path, tshark: str) -> None:
    body = read_request(8)
    write_start = node(673) + request_header(9)
    conversation = TcpConversation().c(hello()).s(acknowledge()).c(open_request()).s(open_response())
    conversation.c(
        symmetric(b"MSG", body[:20], request_id=8, chunk=b"C"),
        symmetric(b"MSG", body[20:40], request_id=8, chunk=b"C", sequence=53),
        symmetric(b"MSG", body[40:], request_id=8, chunk=b"F", sequence=54),
        symmetric(b"MSG", write_start, request_id=9, chunk=b"C", sequence=55),
        symmetric(b"MSG", u32(0x80B80000) + bstr("request too large"), request_id=9, chunk=b"A", sequence=56),
    )
    run = run_packets(tmp_path, conversation.done())
    frames = frames_by_ts(tshark, run.capture)
    chunks = [m for m in run.rows("opcua") if m["msg_type"] == "MSG"]
    for row in chunks:  # tshark reassembles the chunks, so compare the headers of each chunk
        assert_matches(
            row,
            frames[row["ts"]],
            {
                k: MESSAGE_FIELDS[k]
                for k in (
                    "msg_type",
                    "chunk_type",
                    "msg_size",
                    "secure_channel_id",
                    "token_id",
                    "sequence_number",
                    "request_id",
                )
            },
        )
    assert [(m["chunk_type"], m["request_id"], m["service"]) for m in chunks] == [
        ("C", 8, "ReadRequest"),
        ("C", 8, None),
        ("F", 8, None),
        ("C", 9, "WriteRequest"),
        ("A", 9, None),
    ]
    (abort,) = run.rows("opcua_error")
    assert (abort["msg_type"], abort["status"], abort["reason"], abort["request_id"]) == (
        "MSG",
        "BadRequestTooLarge",
        "request too large",
        9,
    )
    assert abort["status_code"] == number(frames[abort["ts"]].fields["opcua.transport.error"])
    assert run.weirds() == []


def test_messages_split_across_segments_and_coalesced(tmp_path: Path) -> None:
    hel, opn = hello(), open_request()
    conversation = TcpConversation().c(hel[:3], hel[3:10], hel[10:])
    conversation.s(acknowledge() + error(0x807D0000, "busy"))
    conversation.c(opn[:40], opn[40:] + symmetric(b"MSG", read_request(1))[:30])
    run = run_packets(tmp_path, conversation.done())
    assert [m["msg_type"] for m in run.rows("opcua")] == ["HEL", "ACK", "ERR", "OPN"]
    assert run.rows("opcua_hello")[0]["endpoint_url"] == URL
    assert run.rows("opcua_error")[0]["status"] == "BadTcpServerTooBusy"
    assert run.rows("opcua_secure_channel")[0]["security_mode"] == "None"


# ---------------------------------------------------------------------- recognition and framing


def test_other_protocols_on_4840_are_not_opcua(tmp_path: Path) -> None:
    http = b"GET /UA/Server HTTP/1.1\r\nHost: plc\r\n\r\n"
    tls = H("160301008501000081030373") + bytes(40)
    packets = TcpConversation(cport=50020).c(http).s(b"HTTP/1.1 404 Not Found\r\n\r\n").done()
    packets += TcpConversation(cport=50021).c(tls).done()
    packets += TcpConversation(cport=50022).c(b"HELLO plc\r\n").done()
    run = run_packets(tmp_path, packets)
    assert run.rows("opcua") == []
    assert run.weirds() == []


MSG_CHUNK = symmetric(b"MSG", read_request(1))


@pytest.mark.parametrize(
    ("data", "port", "verdict"),
    [
        (hello(), 4840, Verdict.YES),
        (hello(), ODD_PORT, Verdict.YES),
        (hello(url=None), ODD_PORT, Verdict.YES),
        (hello()[:20], ODD_PORT, Verdict.MAYBE),
        (hello()[:40], ODD_PORT, Verdict.YES),  # URL length agrees with the message size
        (b"HE", ODD_PORT, Verdict.MAYBE),
        (b"HELF", ODD_PORT, Verdict.MAYBE),
        (b"HELX", ODD_PORT, Verdict.NO),
        (message(b"HEL", u32(0) * 5 + bstr("opc.tcp://x") + b"zz"), ODD_PORT, Verdict.NO),
        (message(b"HEL", u32(0) * 5 + bstr(URL), chunk=b"C"), ODD_PORT, Verdict.NO),
        (acknowledge(), ODD_PORT, Verdict.YES),
        (message(b"ACK", u32(0) * 6), ODD_PORT, Verdict.NO),
        (error(0x807E0000, "x"), ODD_PORT, Verdict.YES),
        (error(0x807E0000, "x")[:-1], ODD_PORT, Verdict.MAYBE),
        (message(b"ERR", u32(0) + bstr("abc") + b"!"), ODD_PORT, Verdict.NO),
        (reverse_hello("urn:a", URL), ODD_PORT, Verdict.YES),
        (open_request(), ODD_PORT, Verdict.YES),
        (open_request()[:50], ODD_PORT, Verdict.MAYBE),
        (message(b"OPN", asymmetric(0, "ftp://x") + bytes(8)), ODD_PORT, Verdict.NO),
        (MSG_CHUNK, ODD_PORT, Verdict.YES),
        (MSG_CHUNK + MSG_CHUNK[:5], ODD_PORT, Verdict.YES),
        (MSG_CHUNK + b"GET / HTTP/1.1", ODD_PORT, Verdict.NO),
        (MSG_CHUNK[:30], 4840, Verdict.YES),  # mid-stream pick-up of a large chunk on the OPC UA port
        (MSG_CHUNK[:30], ODD_PORT, Verdict.MAYBE),
        (message(b"MSG", bytes(8)), ODD_PORT, Verdict.NO),  # smaller than any MSG chunk
        (b"GET / HTTP/1.1\r\n\r\n", 4840, Verdict.NO),
        (H("160301008501000081030373"), 4840, Verdict.NO),
    ],
)
def test_recognize(data: bytes, port: int, verdict: Verdict) -> None:
    assert OpcuaDissector.recognize(data, Transport.TCP, 50001, port) == verdict
    assert OpcuaDissector.recognize(data, Transport.UDP, 50001, port) == Verdict.NO


def test_frame() -> None:
    d = OpcuaDissector(Collector().flow)
    pdu = hello()
    assert d.frame(pdu, True) == len(pdu)
    assert d.frame(pdu + acknowledge()[:5], True) == len(pdu)
    for cut in range(len(pdu)):
        assert d.frame(pdu[:cut], True) == 0
    assert d.frame(b"HTTP/1.1 200 OK\r\n", True) == -1
    assert d.frame(b"GE", True) == -1
    assert d.frame(message(b"MSG", b"", size=7), True) == -1
    assert d.frame(message(b"MSG", b"", size=(1 << 24) + 1), True) == -1
    assert d.frame(b"MSGQ" + u32(100), True) == -1


# ---------------------------------------------------------------------- malformed input


def opened() -> Collector:
    """A collector whose channel is known to be unsecured (an OPN with the policy None was seen)."""
    return Collector().parse(open_request()).parse(open_response(), is_orig=False)


def opn_response_with(response_header_bytes: bytes) -> bytes:
    body = node(449) + response_header_bytes + u32(0) + u32(17) + u32(5) + TIMESTAMP + u32(1) + bstr(b"")
    return message(b"OPN", asymmetric(17, NONE_POLICY) + u32(1) + u32(1) + body)


def opn_request_body(body: bytes) -> bytes:
    return message(b"OPN", asymmetric(0, NONE_POLICY) + u32(1) + u32(1) + body)


DEEP_DIAGNOSTICS = b"\x40" * (MAX_DEPTH + 3) + b"\x00"


@pytest.mark.parametrize(
    ("pdu", "weird"),
    [
        (message(b"HEL", u32(0) * 5 + i32(5) + b"ab"), "opcua_truncated"),
        (message(b"HEL", u32(0) * 5 + i32(-5)), "opcua_bad_string_length"),
        (hello(url="opc.tcp://" + "x" * 5000), "opcua_endpoint_url_too_long"),
        (hello() + b"\x00", "opcua_bad_message_size"),
        (message(b"HEL", u32(0) * 5 + bstr(URL) + b"\x00\x00"), "opcua_trailing_bytes"),
        (message(b"ACK", u32(0) * 5, chunk=b"C"), "opcua_bad_chunk_type"),
        (message(b"ACK", u32(0) * 3), "opcua_truncated"),
        (message(b"ERR", u32(0x80000000) + i32(10) + b"abc"), "opcua_truncated"),
        (b"XYZF" + u32(8), "opcua_unknown_message_type"),
        (b"HEL", "opcua_truncated"),
        (
            message(b"OPN", asymmetric(0, "http://x/" + "p" * 300) + bytes(8)),
            "opcua_security_policy_uri_too_long",
        ),
        (open_request(mode=2), "opcua_security_mode_mismatch"),
        (opn_request_body(node(631) + request_header(1)), "opcua_unexpected_service"),
        (opn_request_body(b"\x07\x00\x00"), "opcua_bad_node_id"),
        (
            opn_request_body(
                node(446)
                + NULL_NODE
                + TIMESTAMP
                + u32(1)
                + u32(0)
                + bstr(None)
                + u32(0)
                + NULL_NODE
                + b"\x05"
            ),
            "opcua_bad_extension_object",
        ),
        (opn_response_with(response_header(1, diagnostics=DEEP_DIAGNOSTICS)), "opcua_too_deep"),
        (
            opn_response_with(TIMESTAMP + u32(1) + u32(0) + b"\x00" + i32(100000) + EMPTY_EXTENSION),
            "opcua_bad_array_length",
        ),
        (open_request()[:-1], "opcua_truncated"),
        (message(b"OPN", asymmetric(0, NONE_POLICY)[:-1] + b""), "opcua_truncated"),
        (message(b"OPN", open_request()[8:] + b"\x00"), "opcua_trailing_bytes"),
        (symmetric(b"MSG", b""), "opcua_truncated"),
        (symmetric(b"MSG", node(634) + TIMESTAMP), "opcua_truncated"),
        (symmetric(b"MSG", b"", chunk=b"A"), "opcua_truncated"),
    ],
)
def test_malformed_messages_become_weirds(pdu: bytes, weird: str) -> None:
    col = opened().parse(pdu)
    assert weird in col.weirds()
    messages = col.of(OpcuaMessage)
    assert len(messages) == (2 if weird in ("opcua_unknown_message_type",) or pdu == b"HEL" else 3)


def test_partially_decoded_messages_keep_their_header() -> None:
    col = opened().parse(symmetric(b"MSG", node(634) + TIMESTAMP, request_id=44))
    last = col.of(OpcuaMessage)[-1]
    assert (last.secure_channel_id, last.request_id, last.service, last.service_result) == (
        17,
        44,
        "ReadResponse",
        None,
    )
    col = Collector().parse(open_request(mode=3))
    (channel,) = col.of(OpcuaSecureChannel)
    assert (channel.security_mode, channel.request_type, channel.requested_lifetime) == (
        "SignAndEncrypt",
        "Issue",
        3_600_000,
    )


def test_unknown_service_and_channel_state() -> None:
    col = Collector()
    col.parse(symmetric(b"MSG", read_request(1)))  # channel state unknown: headers only
    col.parse(open_request()).parse(open_response(), is_orig=False)
    col.parse(symmetric(b"MSG", node(15000, namespace=3) + request_header(1)))  # a vendor service
    col.parse(symmetric(b"MSG", node(9999) + request_header(1)))
    first, *_, vendor, unknown = col.of(OpcuaMessage)
    assert (first.unsecured, first.service, first.sequence_number) == (None, None, None)
    assert (vendor.service_node_id, vendor.service_id, vendor.service) == ("ns=3;i=15000", None, None)
    assert (unknown.service_node_id, unknown.service_id, unknown.service) == ("i=9999", 9999, None)
    assert col.weirds() == []


def test_open_multi_chunk_messages_are_bounded() -> None:
    col = opened()
    for request_id in range(MAX_OPEN_MESSAGES + 20):
        col.parse(symmetric(b"MSG", read_request(1), request_id=request_id, chunk=b"C"))
    # Request 0 was forgotten: its next chunk is taken as the start of a message again.
    col.parse(symmetric(b"MSG", read_request(1), request_id=0, chunk=b"C"))
    col.parse(symmetric(b"MSG", b"rest", request_id=MAX_OPEN_MESSAGES + 19, chunk=b"F"))
    *_, again, last = col.of(OpcuaMessage)
    assert (again.request_id, again.service) == (0, "ReadRequest")
    assert (last.chunk_type, last.service) == ("F", None)


def test_node_id_encodings() -> None:
    """Part 6 5.2.2.9 encodings; the GUID is the example of Part 6 5.1.3."""
    guid = H("912b967275fae64a8d28b404dc7daf63")
    cases = [
        (b"\x00\x55", ("i=85", 0, 85)),
        (b"\x01\x05" + struct.pack("<H", 1025), ("ns=5;i=1025", 5, 1025)),
        (b"\x02" + struct.pack("<HI", 300, 70000), ("ns=300;i=70000", 300, 70000)),
        (b"\x03" + struct.pack("<H", 2) + bstr("Pump.Speed"), ("ns=2;s=Pump.Speed", 2, None)),
        (b"\x04" + struct.pack("<H", 0) + guid, ("g=72962b91-fa75-4ae6-8d28-b404dc7daf63", 0, None)),
        (b"\x05" + struct.pack("<H", 1) + bstr(b"\x01\x02\x03"), ("ns=1;b=AQID", 1, None)),
        (b"\x80\x0a" + bstr("urn:vendor"), ("nsu=urn:vendor;i=10", 0, 10)),
        (b"\x40\x0a" + u32(2), ("svr=2;i=10", 0, 10)),
    ]
    for data, expected in cases:
        reader = UaReader(data)
        assert reader.node_id("test") == expected
        assert reader.left == 0
    with pytest.raises(UaError):
        UaReader(b"\x06\x00").node_id("test")


# ---------------------------------------------------------------------- fuzz

REAL = [
    hello(),
    acknowledge(),
    error(0x807E0000, "reason"),
    reverse_hello("urn:a", URL),
    open_request(),
    open_response(),
    opn_response_with(response_header(1, 0x80000000, b"\x7f" + u32(1) * 4 + bstr("info") + u32(2) + b"\x00")),
    symmetric(b"MSG", read_request(1)),
    symmetric(b"MSG", read_response(1)),
    symmetric(b"MSG", service_fault(1, 0x80250000)),
    symmetric(b"MSG", read_request(1)[:20], chunk=b"C"),
    symmetric(b"MSG", u32(0x80B80000) + bstr("abort"), chunk=b"A"),
]


def _exercise(data: bytes) -> None:
    for port in (4840, ODD_PORT):
        OpcuaDissector.recognize(data, Transport.TCP, 50001, port)
    col = opened()
    before = len(col.events)
    col.feed(data, True)
    col.parse(data, False)
    assert len(col.events) - before <= (len(data) // 8 + 2) * 6


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _exercise(data)
    _exercise(b"MSGF" + u32(len(data) + 8) + data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(REAL), min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=6),
    st.integers(0, 600),
)
def test_fuzz_mutated_real_messages(
    messages: list[bytes], mutations: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(b"".join(messages))
    for position, value in mutations:
        data[position % len(data)] = value
    _exercise(bytes(data[:cut]))
    _exercise(bytes(data))


def test_every_truncation_of_real_messages_is_a_weird() -> None:
    for pdu in REAL:
        for cut in range(len(pdu)):
            col = opened()
            before = len(col.weirds())
            col.parse(pdu[:cut])
            assert len(col.weirds()) > before, f"{pdu[:4]!r} cut at {cut} gave no weird"


# ---------------------------------------------------------------------- documentation


def test_every_event_field_is_documented() -> None:
    doc = DOC.read_text()
    for event_type in EVENT_TYPES:
        assert f"`{event_type.log}`" in doc
        for f in dataclasses.fields(event_type):
            assert f"| `{f.name}` |" in doc, f"{event_type.__name__}.{f.name} is not documented"
    weirds = set(re.findall(r'"(opcua_[a-z_]+)"', MODULE.read_text()))
    weirds |= {"opcua_unframeable_data", "opcua_pdu_lost_in_gap", "opcua_pdu_too_large"}
    for name in sorted(weirds):
        assert f"`{name}`" in doc, f"weird {name} is not documented"
