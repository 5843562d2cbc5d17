"""MQTT dissector: Zeek golden logs, tshark cross-checks, built captures, a real broker, fuzzing.

Golden reference (``../shared/corpus/mqtt``): ``mqtt.pcap`` (two MQTT 3.1 sessions of the Paho client)
with Zeek's ``expected/mqtt.mqtt/{mqtt_connect,mqtt_publish,mqtt_subscribe}.log``. Zeek builds its rows
by combining packets (``scripts/base/protocols/mqtt/main.zeek``) and so do our events; the mapping is:

- ``mqtt_connect.log`` <- ``mqtt_connect`` events (CONNECT + CONNACK): proto_name, proto_version,
  client_id, connect_status, will_topic, will_payload (decoded; unset = ``-``);
- ``mqtt_publish.log`` <- ``mqtt_publish`` events (PUBLISH + its QoS handshake): from_client (T/F),
  retain, qos <- ``qos_name``, status, topic, payload (decoded, first 100 bytes), payload_len;
- ``mqtt_subscribe.log`` <- ``mqtt_subscribe`` events: action ``MQTT::<action>``, topics (joined with
  ``,``), qos_levels, granted_qos_level <- ``reason_codes[0]`` (Zeek's analyzer reads only the first
  SUBACK code), ack.

Timestamps are masked in the baselines and the uid is Zeek's own; both are not compared.

Everything else is checked against tshark's MQTT dissector on captures built here (scapy's own MQTT
3.1.1 encoder, and MQTT 5 packets encoded in this file from the OASIS specification), against the
specification for malformed packets, and against what a real Paho client did with a real Mosquitto
broker (skipped when the broker on 127.0.0.1:1883 or capture on ``lo`` is not available).
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.mqtt import (
    MQTT,
    MQTTConnack,
    MQTTConnect,
    MQTTPuback,
    MQTTPubcomp,
    MQTTPublish,
    MQTTPubrec,
    MQTTPubrel,
    MQTTSuback,
    MQTTSubscribe,
    MQTTTopic,
    MQTTTopicQOS,
    MQTTUnsuback,
    MQTTUnsubscribe,
)
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import wrpcap

from fieldward.pipeline import AnalysisResult, analyze
from fieldward.protocols.base import Event, FlowInfo, PduContext, ProtocolWeird, Transport, Verdict
from fieldward.protocols.mqtt import (
    MqttConnect,
    MqttDissector,
    MqttPublish,
    MqttSession,
    MqttSubscribe,
    decode_varint,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "mqtt.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "mqtt.py"
EVENT_TYPES = (MqttConnect, MqttPublish, MqttSubscribe, MqttSession)
ID_FIELDS = ("orig_h", "orig_p", "resp_h", "resp_p")
PASSWORD = "s3cr3t-Pw-77"
BROKER = ("127.0.0.1", 1883)


# ---------------------------------------------------------------------- encoders (from the spec)


def varint(n: int) -> bytes:
    """MQTT Variable Byte Integer (3.1.1 section 2.2.3, 5.0 section 1.5.5), written from the spec."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(raw)) + raw


def pkt(kind: int, flags: int, body: bytes = b"") -> bytes:
    return bytes([kind << 4 | flags]) + varint(len(body)) + body


def props(*items: bytes) -> bytes:
    block = b"".join(items)
    return varint(len(block)) + block


def prop(ident: int, value: bytes) -> bytes:
    return varint(ident) + value


def connect5(
    client_id: str = "sensor-7",
    *,
    flags: int = 0xC2,
    properties: bytes = b"\x00",
    payload: bytes | None = None,
    keep_alive: int = 30,
) -> bytes:
    """An MQTT 5 CONNECT: user name + password + clean start unless ``flags`` says otherwise."""
    if payload is None:
        payload = utf8(client_id) + utf8("operator") + utf8(PASSWORD)
    return pkt(1, 0, utf8("MQTT") + bytes([5, flags]) + struct.pack(">H", keep_alive) + properties + payload)


def connect4(client_id: str = "plc-1", flags: int = 0x02) -> bytes:
    return pkt(1, 0, utf8("MQTT") + bytes([4, flags]) + struct.pack(">H", 60) + utf8(client_id))


def s(packet: Packet) -> bytes:
    return bytes(packet)


# ---------------------------------------------------------------------- captures and runs


@dataclass
class Conversation:
    """One TCP connection built segment by segment with consistent sequence numbers (scapy)."""

    client: str = "10.30.0.5"
    server: str = "10.30.0.9"
    cport: int = 50001
    sport: int = 1883
    handshake: bool = True
    packets: list[Packet] = field(default_factory=list)
    cseq: int = 1000
    sseq: int = 9000

    def __post_init__(self) -> None:
        if self.handshake:
            self._add(True, "S", b"", seq=self.cseq - 1)
            self._add(False, "SA", b"", seq=self.sseq - 1)

    def _add(self, from_client: bool, flags: str, data: bytes, seq: int | None = None) -> None:
        if from_client:
            ip = IP(src=self.client, dst=self.server)
            tcp = TCP(sport=self.cport, dport=self.sport, flags=flags, seq=self.cseq if seq is None else seq)
            tcp.ack = self.sseq
            self.cseq += len(data)
        else:
            ip = IP(src=self.server, dst=self.client)
            tcp = TCP(sport=self.sport, dport=self.cport, flags=flags, seq=self.sseq if seq is None else seq)
            tcp.ack = self.cseq
            self.sseq += len(data)
        self.packets.append(Ether() / ip / tcp / data if data else Ether() / ip / tcp)

    def c(self, *segments: bytes) -> Conversation:
        for data in segments:
            self._add(True, "PA", data)
        return self

    def s(self, *segments: bytes) -> Conversation:
        for data in segments:
            self._add(False, "PA", data)
        return self

    def done(self) -> list[Packet]:
        self._add(True, "FA", b"")
        self._add(False, "FA", b"")
        return self.packets


def write_pcap(path: Path, packets: list[Packet]) -> Path:
    for i, packet in enumerate(packets):
        packet.time = 1_700_000_000.0 + i * 0.01
    wrpcap(str(path), packets)
    return path


@dataclass
class Run:
    result: AnalysisResult
    out: Path
    logs: dict[str, list[dict[str, Any]]]

    def rows(self, log: str) -> list[dict[str, Any]]:
        return self.logs.get(log, [])

    def weirds(self) -> list[str]:
        return [r["name"] for r in self.rows("weird") if r["protocol"] == "mqtt"]


def run_capture(capture: Path, out: Path) -> Run:
    result = analyze([capture], out)
    logs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((out / "events").glob("*.parquet")):
        table = pq.read_table(path)
        table = table.set_column(table.schema.get_field_index("ts"), "ts", table["ts"].cast(pa.int64()))
        logs[path.stem] = table.to_pylist()
    return Run(result, out, logs)


def run_packets(tmp_path: Path, packets: list[Packet], name: str = "built") -> Run:
    return run_capture(write_pcap(tmp_path / f"{name}.pcap", packets), tmp_path / f"out-{name}")


class Collector:
    """A PduContext for sans-io tests: frames and parses like the engine, collects events and weirds."""

    def __init__(self, orig_p: int = 50001, resp_p: int = 1883) -> None:
        self.flow = FlowInfo(3, Transport.TCP, "10.0.0.1", orig_p, "10.0.0.2", resp_p)
        self.events: list[Event] = []
        self.ctx = PduContext(self.flow, "mqtt", self.events.append, self.events.append)
        self.dissector = MqttDissector(self.flow)

    def feed(self, stream: bytes, is_orig: bool = True) -> Collector:
        self.ctx.is_orig = is_orig
        buf = stream
        while buf:
            size = self.dissector.frame(buf, is_orig)
            if size == 0:
                break
            if size < 0 or size > len(buf):
                self.ctx.weird("mqtt_unframeable_data", f"{len(buf)} bytes dropped")
                break
            self.dissector.parse(buf[:size], self.ctx)
            buf = buf[size:]
        return self

    def client(self, *packets: bytes) -> Collector:
        return self.feed(b"".join(packets), True)

    def server(self, *packets: bytes) -> Collector:
        return self.feed(b"".join(packets), False)

    def close(self) -> Collector:
        self.dissector.close(self.ctx)
        return self

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def weirds(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, ProtocolWeird)]


# ---------------------------------------------------------------------- reference readers


def zeek_log(path: Path) -> list[dict[str, str]]:
    names: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            names = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(names, line.split("\t"), strict=True)))
    return rows


def tshark_rows(tshark: str, capture: Path, fields: list[str]) -> list[dict[str, str]]:
    """One dict per frame; ``-E occurrence=a`` keeps every occurrence, separated by ``,``."""
    cmd = [
        tshark,
        "-r",
        str(capture),
        "-Y",
        "mqtt",
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "separator=\t",
    ]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [dict(zip(fields, line.split("\t"), strict=True)) for line in out.splitlines() if line]


def zeek_text(value: bytes | str | None) -> str:
    if value is None:
        return "-"
    return value.decode() if isinstance(value, bytes) else value


def ids(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in ID_FIELDS)


def zeek_ids(row: dict[str, str]) -> tuple[str, ...]:
    return (row["id.orig_h"], row["id.orig_p"], row["id.resp_h"], row["id.resp_p"])


def tf(value: bool) -> str:
    return "T" if value else "F"


# ---------------------------------------------------------------------- golden: Zeek


def test_golden_zeek_logs(corpus: Path, tmp_path: Path) -> None:
    base = corpus / "mqtt"
    run = run_capture(base / "mqtt.pcap", tmp_path / "out")
    expected = base / "expected" / "mqtt.mqtt"
    assert run.weirds() == []

    connect = [
        (
            *ids(r),
            r["proto_name"],
            r["proto_version"],
            r["client_id"],
            zeek_text(r["connect_status"]),
            zeek_text(r["will_topic"]),
            zeek_text(r["will_payload"]),
        )
        for r in sorted(run.rows("mqtt_connect"), key=lambda r: r["ts"])
    ]
    assert connect == [
        (
            *zeek_ids(z),
            z["proto_name"],
            z["proto_version"],
            z["client_id"],
            z["connect_status"],
            z["will_topic"],
            z["will_payload"],
        )
        for z in zeek_log(expected / "mqtt_connect.log")
    ]

    publish = [
        (
            *ids(r),
            tf(r["from_client"]),
            tf(r["retain"]),
            r["qos_name"],
            r["status"],
            r["topic"],
            r["payload"].decode(),
            str(r["payload_len"]),
        )
        for r in sorted(run.rows("mqtt_publish"), key=lambda r: r["ts"])
    ]
    assert publish == [
        (
            *zeek_ids(z),
            z["from_client"],
            z["retain"],
            z["qos"],
            z["status"],
            z["topic"],
            z["payload"],
            z["payload_len"],
        )
        for z in zeek_log(expected / "mqtt_publish.log")
    ]

    subscribe = [
        (
            *ids(r),
            f"MQTT::{r['action']}",
            ",".join(r["topics"]),
            ",".join(map(str, r["qos_levels"] or [])),
            str(r["reason_codes"][0]) if r["reason_codes"] else "-",
            tf(r["ack"]),
        )
        for r in sorted(run.rows("mqtt_subscribe"), key=lambda r: r["ts"])
    ]
    assert subscribe == [
        (*zeek_ids(z), z["action"], z["topics"], z["qos_levels"], z["granted_qos_level"], z["ack"])
        for z in zeek_log(expected / "mqtt_subscribe.log")
    ]


def test_golden_sessions_match_tshark(corpus: Path, tshark: str, tmp_path: Path) -> None:
    """No Zeek log covers pings, DISCONNECT or per-side packet counts: tshark counts them."""
    capture = corpus / "mqtt" / "mqtt.pcap"
    run = run_capture(capture, tmp_path / "out")
    frames = tshark_rows(tshark, capture, ["tcp.srcport", "tcp.dstport", "mqtt.msgtype", "mqtt.clientid"])
    expected: dict[int, Counter[str]] = {}
    client_ids: dict[int, str] = {}
    for f in frames:
        client_port = int(f["tcp.srcport"]) if f["tcp.dstport"] == "1883" else int(f["tcp.dstport"])
        side = "client" if f["tcp.dstport"] == "1883" else "server"
        counts = expected.setdefault(client_port, Counter())
        if f["mqtt.clientid"]:
            client_ids[client_port] = f["mqtt.clientid"]
        for kind in f["mqtt.msgtype"].split(","):
            counts[side] += 1
            counts[f"type{kind}"] += 1
    sessions = {r["orig_p"]: r for r in run.rows("mqtt")}
    assert set(sessions) == set(expected)
    for port, counts in expected.items():
        row = sessions[port]
        assert row["client_packets"] == counts["client"]
        assert row["server_packets"] == counts["server"]
        assert row["pingreq"] == counts["type12"]
        assert row["pingresp"] == counts["type13"]
        assert row["disconnect_from_client"] is (counts["type14"] > 0)
        assert row["disconnect_reason_code"] is None  # MQTT 3.1: DISCONNECT has no reason code
        assert row["client_id"] == client_ids[port]
        assert (row["proto_name"], row["proto_version"]) == ("MQIsdp", "3.1")


# ---------------------------------------------------------------------- MQTT 3.1.1 built with scapy


def v311_session() -> Conversation:
    """A full MQTT 3.1.1 session, encoded by scapy's MQTT layer (an encoder independent of ours)."""
    connect = MQTT() / MQTTConnect(
        protoname="MQTT",
        protolevel=4,
        usernameflag=1,
        passwordflag=1,
        willflag=1,
        willQOSflag=1,
        willretainflag=1,
        cleansess=1,
        klive=30,
        clientId="rtu-42",
        willtopic="plant/rtu-42/status",
        willmsg="offline",
        username="operator",
        password=PASSWORD,
    )
    return (
        Conversation()
        .c(s(connect))
        .s(s(MQTT(type=2) / MQTTConnack(sessPresentFlag=1, retcode=0)))
        .c(
            s(
                MQTT(type=8, QOS=1)
                / MQTTSubscribe(
                    msgid=1,
                    topics=[MQTTTopicQOS(topic="plant/+/temp", QOS=1), MQTTTopicQOS(topic="alarms/#", QOS=2)],
                )
            )
        )
        .s(s(MQTT(type=9) / MQTTSuback(msgid=1, retcodes=[1, 0x80])))
        .c(s(MQTT(type=3) / MQTTPublish(topic="plant/rtu-42/temp", value="21.5")))
        .c(s(MQTT(type=3, QOS=1, RETAIN=1) / MQTTPublish(topic="plant/rtu-42/hum", msgid=10, value="40")))
        .s(s(MQTT(type=4) / MQTTPuback(msgid=10)))
        .c(s(MQTT(type=3, QOS=2) / MQTTPublish(topic="plant/rtu-42/cmd", msgid=11, value="x" * 150)))
        .s(s(MQTT(type=5) / MQTTPubrec(msgid=11)))
        .c(s(MQTT(type=6, QOS=1) / MQTTPubrel(msgid=11)))
        .s(s(MQTT(type=7) / MQTTPubcomp(msgid=11)))
        .s(s(MQTT(type=3, QOS=2) / MQTTPublish(topic="alarms/fire", msgid=11, value="ALARM")))
        .c(s(MQTT(type=5) / MQTTPubrec(msgid=11)))
        .s(s(MQTT(type=6, QOS=1) / MQTTPubrel(msgid=11)))
        .c(s(MQTT(type=7) / MQTTPubcomp(msgid=11)))
        .c(s(MQTT(type=10, QOS=1) / MQTTUnsubscribe(msgid=2, topics=[MQTTTopic(topic="alarms/#")])))
        .s(s(MQTT(type=11) / MQTTUnsuback(msgid=2)))
        .c(s(MQTT(type=12)))
        .s(s(MQTT(type=13)))
        .c(s(MQTT(type=14)))
    )


def test_v311_session_against_tshark_and_the_client(tmp_path: Path, tshark: str) -> None:
    capture = write_pcap(tmp_path / "v311.pcap", v311_session().done())
    run = run_capture(capture, tmp_path / "out")
    assert run.weirds() == []

    (con,) = run.rows("mqtt_connect")
    frames = tshark_rows(
        tshark,
        capture,
        [
            "mqtt.msgtype",
            "mqtt.protoname",
            "mqtt.ver",
            "mqtt.clientid",
            "mqtt.kalive",
            "mqtt.willtopic",
            "mqtt.willmsg",
            "mqtt.conflag.qos",
            "mqtt.conflag.retain",
            "mqtt.conflag.cleansess",
            "mqtt.conflag.uname",
            "mqtt.conflag.passwd",
            "mqtt.conack.flags.sp",
            "mqtt.conack.val",
        ],
    )
    t_connect = next(f for f in frames if f["mqtt.msgtype"] == "1")
    t_connack = next(f for f in frames if f["mqtt.msgtype"] == "2")
    assert (con["proto_name"], str(con["protocol_level"]), con["proto_version"]) == (
        t_connect["mqtt.protoname"],
        t_connect["mqtt.ver"],
        "3.1.1",
    )
    assert con["client_id"] == t_connect["mqtt.clientid"] == "rtu-42"
    assert str(con["keep_alive"]) == t_connect["mqtt.kalive"]
    assert con["will_topic"] == t_connect["mqtt.willtopic"]
    assert con["will_payload"].hex() == t_connect["mqtt.willmsg"].replace(":", "")
    assert con["will_payload_len"] == len("offline")
    assert str(con["will_qos"]) == t_connect["mqtt.conflag.qos"]
    assert (con["will_flag"], con["will_retain"], con["clean_session"]) == (True, True, True)
    assert t_connect["mqtt.conflag.retain"] in ("1", "True")
    assert t_connect["mqtt.conflag.cleansess"] in (
        "1",
        "True",
    )
    assert con["username_present"] is True
    assert con["password_present"] is True
    assert t_connect["mqtt.conflag.passwd"] in ("1", "True")
    assert (con["connack"], con["session_present"], str(con["return_code"])) == (
        True,
        True,
        t_connack["mqtt.conack.val"],
    )
    assert con["connect_status"] == "Connection Accepted"

    publishes = sorted(run.rows("mqtt_publish"), key=lambda r: r["ts"])
    t_pub = tshark_rows(
        tshark, capture, ["mqtt.msgtype", "mqtt.topic", "mqtt.qos", "mqtt.msgid", "mqtt.retain"]
    )
    t_pub = [f for f in t_pub if f["mqtt.msgtype"] == "3"]
    assert [(p["topic"], str(p["qos"]), str(p["packet_id"] or "")) for p in publishes] == [
        (f["mqtt.topic"], f["mqtt.qos"], f["mqtt.msgid"]) for f in t_pub
    ]
    summary = [(p["from_client"], p["qos_name"], p["status"], p["retain"]) for p in publishes]
    assert summary == [
        (True, "at most once", "ok", False),
        (True, "at least once", "ok", True),
        (True, "exactly once", "ok", False),
        (False, "exactly once", "ok", False),  # same packet id 11, other direction: its own handshake
    ]
    big = publishes[2]
    assert big["payload_len"] == 150
    assert big["payload"] == b"x" * 100
    assert (big["ack"], big["rec"], big["rel"], big["comp"]) == (False, True, True, True)
    assert publishes[1]["ack"] is True
    assert publishes[1]["payload"] == b"40"

    subs = sorted(run.rows("mqtt_subscribe"), key=lambda r: r["ts"])
    assert [
        (r["action"], r["packet_id"], r["topics"], r["qos_levels"], r["ack"], r["reason_codes"]) for r in subs
    ] == [
        ("SUBSCRIBE", 1, ["plant/+/temp", "alarms/#"], [1, 2], True, [1, 0x80]),
        ("UNSUBSCRIBE", 2, ["alarms/#"], None, True, None),
    ]
    t_sub = tshark_rows(tshark, capture, ["mqtt.msgtype", "mqtt.topic", "mqtt.sub.qos", "mqtt.suback.qos"])
    assert ",".join(subs[0]["topics"]) == next(f["mqtt.topic"] for f in t_sub if f["mqtt.msgtype"] == "8")
    assert ",".join(map(str, subs[0]["qos_levels"])) == next(
        f["mqtt.sub.qos"] for f in t_sub if f["mqtt.msgtype"] == "8"
    )
    granted = next(f["mqtt.suback.qos"] for f in t_sub if f["mqtt.msgtype"] == "9")
    assert ",".join(map(str, subs[0]["reason_codes"])) == granted

    (session,) = run.rows("mqtt")
    assert (session["pingreq"], session["pingresp"], session["disconnect_from_client"]) == (1, 1, True)
    types = Counter(f["mqtt.msgtype"] for f in frames)
    assert session["client_packets"] + session["server_packets"] == sum(types.values())
    assert_password_absent(run.out, PASSWORD)


def assert_password_absent(out: Path, password: str | bytes) -> None:
    """Neither the raw bytes of any file of the output folder nor any decoded value holds the password
    (Parquet pages are compressed: their raw bytes alone would prove nothing)."""
    secret = password if isinstance(password, bytes) else password.encode()
    text = secret.decode("latin-1")
    files = [path for path in out.rglob("*") if path.is_file()]
    assert files, f"no output in {out}"
    for path in files:
        assert secret not in path.read_bytes(), f"password bytes in {path}"
    for path in out.rglob("*.parquet"):
        for row in pq.read_table(path).to_pylist():
            for value in row.values():
                assert text not in repr(value), f"password in {path.name}"


# ---------------------------------------------------------------------- MQTT 5 built from the spec


def v5_packets() -> tuple[list[bytes], list[bytes]]:
    """(client packets, server packets) of an MQTT 5 session exercising properties and reason codes."""
    will = props(prop(0x18, struct.pack(">I", 10)), prop(0x03, utf8("text/plain")))
    connect = connect5(
        "",
        flags=0xC2 | 0x04 | 0x08 | 0x20,  # user name, password, will (QoS 1, retain), clean start
        properties=props(
            prop(0x11, struct.pack(">I", 3600)),
            prop(0x21, struct.pack(">H", 20)),
            prop(0x15, utf8("SCRAM-SHA-1")),
            prop(0x16, utf8(b"client-first")),
            prop(0x26, utf8("site") + utf8("north")),
        ),
        payload=utf8("")
        + will
        + utf8("plant/gw/lwt")
        + utf8(b"\x00gone")
        + utf8("operator")
        + utf8(PASSWORD),
    )
    connack = pkt(2, 0, b"\x00\x00" + props(prop(0x12, utf8("auto-3F9A")), prop(0x22, struct.pack(">H", 10))))
    auth_server = pkt(15, 0, b"\x18" + props(prop(0x15, utf8("SCRAM-SHA-1")), prop(0x16, utf8(b"srv"))))
    auth_client = pkt(15, 0, b"\x18" + props(prop(0x15, utf8("SCRAM-SHA-1")), prop(0x16, utf8(b"cli"))))
    subscribe = pkt(
        8,
        2,
        struct.pack(">H", 5)
        + props(prop(0x0B, varint(300)))
        + utf8("cmd/#")
        + b"\x2e"
        + utf8("cfg")
        + b"\x00",
    )
    suback = pkt(9, 0, struct.pack(">H", 5) + props(prop(0x1F, utf8("ok"))) + b"\x02\x97")
    alias_set = pkt(
        3,
        2,
        utf8("plant/gw/temp")
        + struct.pack(">H", 21)
        + props(prop(0x23, struct.pack(">H", 4)), prop(0x01, b"\x01"), prop(0x09, utf8(b"corr")))
        + b"21.5",
    )
    puback = pkt(4, 0, struct.pack(">H", 21) + b"\x10" + props(prop(0x1F, utf8("no subscribers"))))
    alias_use = pkt(3, 0, utf8("") + props(prop(0x23, struct.pack(">H", 4))) + b"21.6")
    qos2 = pkt(3, 4, utf8("plant/gw/cmd") + struct.pack(">H", 22) + b"\x00" + b"open")
    pubrec_fail = pkt(5, 0, struct.pack(">H", 22) + b"\x87")
    puback_short = pkt(4, 0, struct.pack(">H", 23))  # reason code omitted: success
    qos1 = pkt(3, 2, utf8("plant/gw/x") + struct.pack(">H", 23) + b"\x00")
    unsubscribe = pkt(10, 2, struct.pack(">H", 6) + b"\x00" + utf8("cmd/#") + utf8("nope"))
    unsuback = pkt(11, 0, struct.pack(">H", 6) + b"\x00" + b"\x00\x11")
    disconnect = pkt(14, 0, b"\x04" + props(prop(0x11, struct.pack(">I", 0))))
    client = [connect, auth_client, subscribe, alias_set, alias_use, qos2, qos1, unsubscribe, disconnect]
    server = [connack, auth_server, suback, puback, pubrec_fail, puback_short, unsuback]
    return client, server


def v5_conversation() -> Conversation:
    client, server = v5_packets()
    connect, auth_client, subscribe, alias_set, alias_use, qos2, qos1, unsubscribe, disconnect = client
    connack, auth_server, suback, puback, pubrec_fail, puback_short, unsuback = server
    return (
        Conversation(cport=50005)
        .c(connect)
        .s(auth_server)
        .c(auth_client)
        .s(connack)
        .c(subscribe)
        .s(suback)
        .c(alias_set)
        .s(puback)
        .c(alias_use)
        .c(qos2)
        .s(pubrec_fail)
        .c(qos1)
        .s(puback_short)
        .c(unsubscribe)
        .s(unsuback)
        .c(disconnect)
    )


def test_v5_session_against_tshark_and_the_spec(tmp_path: Path, tshark: str) -> None:
    capture = write_pcap(tmp_path / "v5.pcap", v5_conversation().done())
    run = run_capture(capture, tmp_path / "out")
    assert run.weirds() == []
    frames = tshark_rows(
        tshark,
        capture,
        [
            "mqtt.msgtype",
            "mqtt.ver",
            "mqtt.clientid",
            "mqtt.willtopic",
            "mqtt.topic",
            "mqtt.msgid",
            "mqtt.qos",
            "mqtt.connack.reason_code",
            "mqtt.puback.reason_code",
            "mqtt.pubrec.reason_code",
            "mqtt.suback.reason_code",
            "mqtt.unsuback.reason_code",
            "mqtt.disconnect.reason_code",
            "mqtt.auth.reason_code",
            "mqtt.property.topic_alias",
            "mqtt.msg",
        ],
    )
    by_type: dict[str, list[dict[str, str]]] = {}
    for f in frames:
        by_type.setdefault(f["mqtt.msgtype"], []).append(f)

    (con,) = run.rows("mqtt_connect")
    assert (con["proto_version"], str(con["protocol_level"])) == ("5.0", by_type["1"][0]["mqtt.ver"])
    assert con["client_id"] == by_type["1"][0]["mqtt.clientid"] == ""
    assert con["will_topic"] == by_type["1"][0]["mqtt.willtopic"] == "plant/gw/lwt"
    assert con["will_payload"] == b"\x00gone"
    assert con["will_payload_len"] == 5
    assert (con["will_qos"], con["will_retain"], con["keep_alive"]) == (1, True, 30)
    assert con["auth_method"] == "SCRAM-SHA-1"
    assert con["assigned_client_id"] == "auto-3F9A"
    assert str(con["return_code"]) == by_type["2"][0]["mqtt.connack.reason_code"] == "0"
    assert con["connect_status"] == "Success"

    publishes = sorted(run.rows("mqtt_publish"), key=lambda r: r["ts"])
    t_pub = by_type["3"]
    assert [str(p["packet_id"] or "") for p in publishes] == [f["mqtt.msgid"] for f in t_pub]
    assert [str(p["qos"]) for p in publishes] == [f["mqtt.qos"] for f in t_pub]
    assert [str(p["topic_alias"] or "") for p in publishes] == [f["mqtt.property.topic_alias"] for f in t_pub]
    assert [p["payload"].hex() for p in publishes] == [
        f["mqtt.msg"].replace(":", "").replace("<MISSING>", "") for f in t_pub
    ]
    # the alias-only PUBLISH takes the topic its alias was set to (5.0 section 3.3.2.3.4)
    assert [p["topic"] for p in publishes] == ["plant/gw/temp", "plant/gw/temp", "plant/gw/cmd", "plant/gw/x"]
    assert t_pub[0]["mqtt.topic"] == "plant/gw/temp"
    assert [(p["status"], p["reason_codes"]) for p in publishes] == [
        ("ok", [int(by_type["4"][0]["mqtt.puback.reason_code"])]),  # 0x10 No matching subscribers
        ("ok", []),  # QoS 0
        ("error", [int(by_type["5"][0]["mqtt.pubrec.reason_code"])]),  # 0x87 Not authorized ends QoS 2
        ("ok", []),  # PUBACK with remaining length 2: reason code omitted = Success
    ]

    subs = sorted(run.rows("mqtt_subscribe"), key=lambda r: r["ts"])
    assert [(r["action"], r["topics"], r["qos_levels"], r["reason_codes"]) for r in subs] == [
        ("SUBSCRIBE", ["cmd/#", "cfg"], [2, 0], [2, 0x97]),
        ("UNSUBSCRIBE", ["cmd/#", "nope"], None, [0, 0x11]),
    ]
    assert ",".join(map(str, subs[0]["reason_codes"])) == by_type["9"][0]["mqtt.suback.reason_code"]
    assert ",".join(map(str, subs[1]["reason_codes"])) == by_type["11"][0]["mqtt.unsuback.reason_code"]

    (session,) = run.rows("mqtt")
    assert str(session["disconnect_reason_code"]) == by_type["14"][0]["mqtt.disconnect.reason_code"] == "4"
    assert session["disconnect_reason"] == "Disconnect with Will Message"
    assert session["auth_method"] == "SCRAM-SHA-1"
    assert [str(c) for c in session["auth_reason_codes"]] == [
        f["mqtt.auth.reason_code"] for f in by_type["15"]
    ]
    assert session["proto_version"] == "5.0"
    assert session["client_id"] == ""
    assert_password_absent(run.out, PASSWORD)


# ---------------------------------------------------------------------- QoS handshake bookkeeping


def pub(qos: int, packet_id: int, topic: str = "t", *, dup: bool = False, payload: bytes = b"p") -> bytes:
    flags = (0x08 if dup else 0) | qos << 1
    return pkt(3, flags, utf8(topic) + (struct.pack(">H", packet_id) if qos else b"") + payload)


def ack(kind: int, packet_id: int) -> bytes:
    return pkt(kind, 2 if kind == 6 else 0, struct.pack(">H", packet_id))


def test_unfinished_handshakes_are_incomplete_qos() -> None:
    col = Collector().client(connect4()).server(pkt(2, 0, b"\x00\x00"))
    col.client(pub(1, 1, "never-acked"), pub(2, 2, "no-pubrel"), pub(2, 3, "no-pubcomp"))
    col.server(ack(5, 2), ack(7, 2))  # PUBREC, PUBCOMP: PUBREL missing
    col.server(ack(5, 3)).client(ack(6, 3))  # PUBREC, PUBREL: PUBCOMP missing
    col.close()
    rows = {p.topic: p for p in col.of(MqttPublish)}
    assert rows["no-pubrel"].status == "incomplete_qos"
    assert (
        rows["no-pubrel"].rec,
        rows["no-pubrel"].rel,
    ) == (
        True,
        False,
    )
    assert rows["never-acked"].status == "incomplete_qos"
    assert not rows["never-acked"].ack
    assert rows["no-pubcomp"].status == "incomplete_qos"
    assert rows["no-pubcomp"].rel
    assert not rows["no-pubcomp"].comp
    assert len(col.of(MqttPublish)) == 3


def test_acknowledgements_match_by_direction_and_retransmissions_are_one_message() -> None:
    col = Collector().client(connect4()).server(pkt(2, 0, b"\x00\x00"))
    col.client(pub(1, 7, "up"))
    col.server(pub(1, 7, "down"))
    col.client(pub(1, 7, "up", dup=True))  # retransmission: still one message
    col.client(ack(4, 7))  # acknowledges the server's PUBLISH (PUBACK comes from the receiver)
    rows = col.of(MqttPublish)
    assert [(p.topic, p.from_client, p.status) for p in rows] == [("down", False, "ok")]
    col.server(ack(4, 7))
    assert [(p.topic, p.from_client, p.status) for p in col.of(MqttPublish)][1:] == [("up", True, "ok")]
    col.client(pub(1, 9, "first"), pub(1, 9, "second"))  # packet id reused without DUP: first unfinished
    assert [(p.topic, p.status) for p in col.of(MqttPublish)][2:] == [("first", "incomplete_qos")]


def test_unanswered_connect_and_subscribe_are_logged_at_close() -> None:
    col = (
        Collector()
        .client(connect4("lonely"), pkt(8, 2, struct.pack(">H", 4) + utf8("a/b") + b"\x01"))
        .close()
    )
    (con,) = col.of(MqttConnect)
    assert (con.client_id, con.connack, con.connect_status, con.return_code) == ("lonely", False, None, None)
    (sub,) = col.of(MqttSubscribe)
    assert (sub.topics, sub.qos_levels, sub.ack, sub.reason_codes) == (["a/b"], [1], False, None)
    (session,) = col.of(MqttSession)
    assert (session.client_packets, session.server_packets, session.client_id) == (2, 0, "lonely")


def test_connack_without_connect_and_refusals() -> None:
    col = Collector().server(pkt(2, 0, b"\x00\x05"))  # 3.1.1 "not authorized" (version unknown: 3.x names)
    (con,) = col.of(MqttConnect)
    assert (con.client_id, con.connack, con.return_code, con.connect_status) == (
        None,
        True,
        5,
        "Refused: not authorized",
    )
    col = Collector().client(connect5()).server(pkt(2, 0, b"\x00\x86\x00"))
    (con,) = col.of(MqttConnect)
    assert (con.return_code, con.connect_status) == (0x86, "Bad User Name or Password")


def test_pending_tables_are_bounded() -> None:
    col = Collector().client(connect4())
    col.client(*(pub(1, i) for i in range(1, 1100)))
    # the oldest unacknowledged messages are logged as incomplete to keep 1024 pending
    assert len(col.of(MqttPublish)) == 1099 - 1024
    assert all(p.status == "incomplete_qos" for p in col.of(MqttPublish))
    col.close()
    assert len(col.of(MqttPublish)) == 1099


# ---------------------------------------------------------------------- framing and segmentation


def test_remaining_length_encoding_from_the_spec() -> None:
    # Boundaries of 3.1.1 table 2.4 / 5.0 section 1.5.5.
    for value, encoded in [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16_383, "ff7f"),
        (16_384, "808001"),
        (2_097_151, "ffff7f"),
        (2_097_152, "80808001"),
        (268_435_455, "ffffff7f"),
    ]:
        assert varint(value).hex() == encoded
        assert decode_varint(bytes.fromhex(encoded), 0) == (value, len(encoded) // 2)
    assert decode_varint(bytes.fromhex("ffffffff01"), 0)[0] < 0  # 5 bytes: malformed
    assert decode_varint(bytes.fromhex("ff"), 0)[0] < 0  # incomplete


def test_frame() -> None:
    d = MqttDissector(Collector().flow)
    packet = pub(0, 0, "x", payload=b"y" * 300)  # remaining length on 2 bytes
    assert d.frame(packet, True) == len(packet)
    assert d.frame(packet + b"\xc0\x00", True) == len(packet)
    assert d.frame(packet[:1], True) == 0
    assert d.frame(packet[:2], True) == 0  # continuation bit set, second length byte missing
    assert d.frame(packet[:-1], True) == 0
    assert d.frame(b"\xc0\x00", True) == 2
    assert d.frame(b"\x30\xff\xff\xff\xff\x01", True) == -1  # remaining length on 5 bytes
    assert d.frame(b"\x30\xff\xff\xff\x7f", True) == 0  # 256 MiB announced: wait (the engine caps buffers)


def test_too_long_remaining_length_is_a_weird_and_framing_resumes(tmp_path: Path) -> None:
    conv = Conversation().c(connect4()).s(pkt(2, 0, b"\x00\x00"))
    conv.c(b"\x30\xff\xff\xff\xff\x01garbage")  # more than 4 length bytes: unframeable
    conv.c(pub(0, 0, "after", payload=b"ok"))  # the next segment is framed again
    run = run_packets(tmp_path, conv.done())
    assert run.weirds() == ["mqtt_unframeable_data"]
    assert [p["topic"] for p in run.rows("mqtt_publish")] == ["after"]


def test_packets_split_across_segments_and_several_in_one(tmp_path: Path) -> None:
    client, server = v5_packets()
    whole = run_packets(tmp_path, v5_conversation().done(), "whole")
    stream_c, stream_s = b"".join(client), b"".join(server)
    conv = Conversation(cport=50005)
    # the recogniser's 16 bytes, then every client byte in its own segment; the server's stream in one
    conv.c(stream_c[:16], *(stream_c[i : i + 1] for i in range(16, len(stream_c)))).s(stream_s)
    split = run_packets(tmp_path, conv.done(), "split")
    assert split.weirds() == []
    for log in ("mqtt_connect", "mqtt_subscribe", "mqtt"):
        strip = [{k: v for k, v in r.items() if k not in ("ts", "is_orig")} for r in whole.rows(log)]
        assert strip == [{k: v for k, v in r.items() if k not in ("ts", "is_orig")} for r in split.rows(log)]
    topics = sorted((p["topic"], p["payload"], p["packet_id"]) for p in whole.rows("mqtt_publish"))
    assert topics == sorted((p["topic"], p["payload"], p["packet_id"]) for p in split.rows("mqtt_publish"))


# ---------------------------------------------------------------------- recognition


def test_recognised_on_a_non_standard_port(tmp_path: Path) -> None:
    conv = Conversation(sport=10883).c(connect4("odd-port")).s(pkt(2, 0, b"\x00\x00"))
    conv.c(pub(0, 0, "a", payload=b"b"))
    run = run_packets(tmp_path, conv.done())
    assert [r["client_id"] for r in run.rows("mqtt_connect")] == ["odd-port"]
    assert [r["resp_p"] for r in run.rows("mqtt_publish")] == [10883]


def test_mid_session_capture_on_1883_is_recognised_but_not_elsewhere(tmp_path: Path) -> None:
    def conv(port: int) -> list[Packet]:
        c = Conversation(sport=port, handshake=False)
        return c.s(pub(1, 5, "late/topic", payload=b"v")).c(ack(4, 5), pkt(12, 0)).s(pkt(13, 0)).done()

    on_port = run_packets(tmp_path, conv(1883), "on")
    assert [(p["topic"], p["from_client"], p["status"]) for p in on_port.rows("mqtt_publish")] == [
        ("late/topic", False, "ok")
    ]
    (session,) = on_port.rows("mqtt")
    assert (session["pingreq"], session["pingresp"], session["proto_version"]) == (1, 1, None)
    off_port = run_packets(tmp_path, conv(7000), "off")
    assert off_port.rows("mqtt_publish") == []
    assert off_port.rows("mqtt") == []


@pytest.mark.parametrize(
    ("data", "sport", "dport", "verdict"),
    [
        (connect4(), 50000, 1883, Verdict.YES),
        (connect4(), 50000, 4444, Verdict.YES),  # content, not the port
        (connect5(), 50000, 4444, Verdict.YES),
        (pkt(1, 0, utf8("MQIsdp") + b"\x03\x02\x00\x05" + utf8("c")), 50000, 4444, Verdict.YES),
        (connect4()[:5], 50000, 4444, Verdict.MAYBE),
        (b"\x10", 50000, 4444, Verdict.MAYBE),
        (pkt(1, 0, utf8("MQTT") + b"\x04\x03\x00\x05" + utf8("c")), 50000, 4444, Verdict.NO),  # reserved bit
        (pkt(1, 0, utf8("HTTP") + b"\x04\x02\x00\x05" + utf8("c")), 50000, 4444, Verdict.NO),
        (b"GET / HTTP/1.1\r\nHost: broker\r\n\r\n", 50000, 1883, Verdict.NO),
        (b"SSH-2.0-OpenSSH_9.6\r\n", 50000, 1883, Verdict.NO),
        (bytes.fromhex("000100000006011100000001"), 50000, 1883, Verdict.NO),  # Modbus/TCP
        (pkt(12, 0), 50000, 1883, Verdict.YES),  # mid-session PINGREQ on the MQTT port
        (pkt(12, 0), 50000, 4444, Verdict.NO),  # ... too weak off port
        (pkt(12, 1), 50000, 1883, Verdict.NO),  # bad flags
        (pkt(3, 6, utf8("t") + b"\x00\x01"), 1883, 50000, Verdict.NO),  # QoS 3
        (pkt(3, 0, utf8("a/#") + b"v"), 1883, 50000, Verdict.NO),  # wildcard in a topic name
        (pub(0, 0, "a/b")[:3], 1883, 50000, Verdict.MAYBE),
        (b"\x30\xff\xff\xff\xff\x01", 1883, 50000, Verdict.NO),
        (b"", 50000, 1883, Verdict.MAYBE),
    ],
)
def test_recognize(data: bytes, sport: int, dport: int, verdict: Verdict) -> None:
    assert MqttDissector.recognize(data, Transport.TCP, sport, dport) == verdict
    assert MqttDissector.recognize(data, Transport.UDP, sport, dport) == Verdict.NO


def test_other_protocols_on_1883_are_not_mqtt(tmp_path: Path) -> None:
    http = (
        Conversation(cport=50010).c(b"GET /status HTTP/1.1\r\nHost: gw\r\n\r\n").s(b"HTTP/1.1 200 OK\r\n\r\n")
    )
    tls = Conversation(cport=50011).c(client_hello("broker.example")).s(b"\x15\x03\x03\x00\x02\x02\x28")
    run = run_packets(tmp_path, http.done() + tls.done())
    assert run.rows("mqtt") == []
    assert run.weirds() == []


# ---------------------------------------------------------------------- TLS (left to the TLS dissector)


def client_hello(server_name: str) -> bytes:
    """A real TLS ClientHello made by Python's ssl module (OpenSSL)."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_tls_is_never_claimed_even_on_8883(corpus: Path, tmp_path: Path) -> None:
    """MQTT over TLS (8883) goes to the TLS dissector: a flow has one dissector, and only its
    handshake is readable. Nothing TLS-like may be taken by this one, on 8883 or elsewhere."""
    hello = client_hello("broker.plant.example")
    for port in (8883, 1883, 443, 4444):
        assert MqttDissector.recognize(hello, Transport.TCP, 50000, port) == Verdict.NO
        for record in (b"\x17\x03\x03\x00\x20", b"\x15\x03\x03\x00\x02", b"\x14\x03\x03\x00\x01"):
            assert MqttDissector.recognize(record + bytes(32), Transport.TCP, port, 50000) == Verdict.NO
    conv = Conversation(sport=8883, cport=50020).c(hello[:100], hello[100:])
    conv.s(b"\x16\x03\x03\x00\x04\x02\x00\x00\x00", b"\x17\x03\x03\x00\x05" + secrets.token_bytes(5))
    run = run_packets(tmp_path, conv.done(), "mqtts")
    assert run.rows("mqtt") == []
    assert run.weirds() == []
    # the corpus' SSLv3 session (SSLv2-format hello) is not MQTT either
    assert run_capture(corpus / "tls" / "ssl.v3.pcap", tmp_path / "ssl").rows("mqtt") == []


# ---------------------------------------------------------------------- malformed input


def _v5(*packets: bytes) -> Collector:
    return Collector().client(connect5()).server(pkt(2, 0, b"\x00\x00\x00")).client(*packets)


@pytest.mark.parametrize(
    ("build", "weird"),
    [
        (lambda: Collector().client(pkt(0, 0)), "mqtt_reserved_packet_type"),
        (lambda: Collector().client(connect4()).client(pkt(15, 0)), "mqtt_reserved_packet_type"),
        (lambda: Collector().client(pkt(12, 3)), "mqtt_bad_flags"),
        (lambda: Collector().client(pkt(8, 0, b"\x00\x01" + utf8("a") + b"\x00")), "mqtt_bad_flags"),
        (lambda: Collector().server(pkt(2, 0, b"\x02\x00")), "mqtt_bad_flags"),
        (lambda: Collector().client(pkt(3, 8, utf8("a"))), "mqtt_bad_flags"),  # DUP with QoS 0
        (lambda: Collector().client(pkt(3, 6, utf8("a") + b"\x00\x01")), "mqtt_bad_qos"),
        (lambda: Collector().client(pkt(3, 2, utf8("a") + b"\x00\x00")), "mqtt_zero_packet_id"),
        (lambda: Collector().client(pkt(3, 0, utf8("") + b"x")), "mqtt_empty_topic"),
        (lambda: Collector().client(pkt(3, 0, utf8("a/+") + b"x")), "mqtt_wildcard_in_topic"),
        (lambda: Collector().client(pkt(3, 0, b"\x00\x09abc")), "mqtt_truncated"),
        (lambda: Collector().client(pkt(3, 0, utf8(b"\xff\xfe") + b"x")), "mqtt_bad_utf8"),
        (lambda: Collector().client(pkt(3, 0, utf8(b"a\x00b") + b"x")), "mqtt_bad_utf8"),
        (lambda: Collector().client(pkt(1, 0, utf8("MQTT") + b"\x04\x02")), "mqtt_truncated"),
        (
            lambda: Collector().client(pkt(1, 0, utf8("MQTT") + b"\x09\x02\x00\x05" + utf8("c"))),
            "mqtt_unknown_protocol_level",
        ),
        (
            lambda: Collector().client(pkt(1, 0, utf8("MQIsdp") + b"\x04\x02\x00\x05" + utf8("c"))),
            "mqtt_bad_protocol_name",
        ),
        (
            lambda: Collector().client(pkt(1, 0, utf8("MQTT") + b"\x04\x03\x00\x05" + utf8("c"))),
            "mqtt_bad_connect_flags",
        ),
        (
            lambda: Collector().client(pkt(1, 0, utf8("MQTT") + b"\x04\x0a\x00\x05" + utf8("c"))),
            "mqtt_bad_connect_flags",
        ),
        (
            lambda: Collector().client(pkt(1, 0, utf8("MQTT") + b"\x04\x42\x00\x05" + utf8("c") + utf8("p"))),
            "mqtt_bad_connect_flags",
        ),
        (
            lambda: Collector().client(pkt(1, 0, utf8("MQTT") + b"\x04\x02\x00\x05" + utf8("c") + b"zz")),
            "mqtt_trailing_bytes",
        ),
        (lambda: Collector().client(pkt(12, 0, b"\x00")), "mqtt_trailing_bytes"),
        (lambda: Collector().client(connect4()).server(pkt(4, 0, b"\x00\x01\x00")), "mqtt_trailing_bytes"),
        (lambda: Collector().client(pkt(8, 2, b"\x00\x01")), "mqtt_empty_subscribe"),
        (lambda: Collector().client(pkt(10, 2, b"\x00\x01")), "mqtt_empty_subscribe"),
        (
            lambda: Collector().client(pkt(8, 2, b"\x00\x01" + utf8("a") + b"\x03")),
            "mqtt_bad_subscription_options",
        ),
        (
            lambda: Collector().client(pkt(8, 2, b"\x00\x01" + utf8("a") + b"\x04")),
            "mqtt_bad_subscription_options",
        ),
        (lambda: _v5(pkt(8, 2, b"\x00\x01\x00" + utf8("a") + b"\xc0")), "mqtt_bad_subscription_options"),
        (
            lambda: (
                Collector()
                .client(pkt(8, 2, b"\x00\x01" + utf8("a") + b"\x00" + utf8("b") + b"\x01"))
                .server(pkt(9, 0, b"\x00\x01\x00"))
            ),
            "mqtt_reason_code_count_mismatch",
        ),
        (lambda: Collector().server(pkt(9, 0, b"\x00\x01")), "mqtt_truncated"),
        (lambda: Collector().client(b"\x30\x84\x00" + utf8("t") + b"x"), "mqtt_non_minimal_length"),
        (lambda: Collector().server(pkt(2, 0, b"\x00\x00"), pkt(12, 0)), "mqtt_wrong_direction"),
        (lambda: _v5(pkt(3, 0, utf8("t") + props(prop(0x7F, b"\x00")) + b"x")), "mqtt_bad_property"),
        (lambda: _v5(pkt(3, 0, utf8("t") + props(prop(0x23, b"\x00")) + b"x")), "mqtt_bad_property"),
        (lambda: _v5(pkt(3, 0, utf8("t") + b"\x09" + prop(0x23, b"\x00\x01"))), "mqtt_truncated"),
        (lambda: _v5(pkt(3, 0, utf8("") + props(prop(0x23, b"\x00\x09")) + b"x")), "mqtt_bad_topic_alias"),
        (lambda: _v5(pkt(3, 0, utf8("t") + props(prop(0x23, b"\x00\x00")) + b"x")), "mqtt_bad_topic_alias"),
    ],
)
def test_malformed_packets_become_weirds(build: Any, weird: str) -> None:
    col = build()
    col.close()
    assert weird in col.weirds()


def test_weirds_never_reveal_the_password() -> None:
    bad = connect5(payload=utf8("c") + utf8("u") + utf8(PASSWORD) + b"trailing")
    col = Collector().client(bad).close()
    assert "mqtt_trailing_bytes" in col.weirds()
    assert PASSWORD not in repr(col.events)


def test_parse_checks_the_fixed_header_itself() -> None:
    col = Collector()
    col.ctx.is_orig = True
    col.dissector.parse(b"\x30\x05ab", col.ctx)  # 5 announced, 2 present
    col.dissector.parse(b"\x30\xff", col.ctx)
    assert col.weirds() == ["mqtt_length_mismatch", "mqtt_truncated"]


# ---------------------------------------------------------------------- fuzzing


def _bound(size: int) -> int:
    return 16 * (size // 2 + 4)


def _exercise(data: bytes) -> None:
    for sport, dport in ((50000, 1883), (1883, 50000), (50000, 8883), (50000, 4444)):
        MqttDissector.recognize(data, Transport.TCP, sport, dport)
    for prelude in (b"", connect4(), connect5()):
        for is_orig in (True, False):
            col = Collector()
            if prelude:
                col.client(prelude)
            col.feed(data, is_orig)
            col.ctx.is_orig = not is_orig
            col.dissector.parse(data, col.ctx)
            col.close()
            assert len(col.events) <= _bound(len(data) + len(prelude))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _exercise(data)


REAL_PACKETS = [*v5_packets()[0], *v5_packets()[1], *(bytes(p[TCP].payload) for p in v311_session().packets)]
REAL_PACKETS = [p for p in REAL_PACKETS if p]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(REAL_PACKETS), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
)
def test_fuzz_mutated_real_packets(packets: list[bytes], mutations: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(b"".join(packets))
    for position, value in mutations:
        data[position % len(data)] = value
    _exercise(bytes(data[: max(cut, 2)]))
    _exercise(bytes(data))


# ---------------------------------------------------------------------- real broker (Mosquitto + Paho)


@dataclass
class ClientRecord:
    """What the Paho client did, to compare with what the dissector saw."""

    client_id: str
    protocol: str
    prefix: str
    published: list[tuple[str, int, bytes]] = field(default_factory=list)
    received: list[tuple[str, int, bytes]] = field(default_factory=list)
    local_port: int = 0


def _broker_reachable() -> bool:
    try:
        with socket.create_connection(BROKER, timeout=1):
            return True
    except OSError:
        return False


class LoopbackCapture:
    """tshark on ``lo`` filtered to the broker port, writing a pcap file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        tool = shutil.which("tshark")
        if tool is None:
            pytest.skip("tshark is not installed: cannot capture the broker session")
        self.proc = subprocess.Popen(
            [tool, "-i", "lo", "-f", f"tcp port {BROKER[1]}", "-F", "pcap", "-w", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        started = time.monotonic()
        seen = ""
        while time.monotonic() - started < 20:
            line = self.proc.stderr.readline()
            seen += line
            if "Capturing on" in line:
                time.sleep(1.0)  # dumpcap announces itself just before its capture filter is active
                return
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        pytest.skip(f"capture on lo is not permitted here (tshark said: {seen.strip()[-300:]!r})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            time.sleep(0.5)  # let the last packets reach the capture
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _client_session(protocol: str) -> ClientRecord:
    """Connect with user name/password, subscribe, publish QoS 0/1/2, unsubscribe, disconnect."""
    import paho.mqtt.client as mqtt

    version = mqtt.MQTTv5 if protocol == "5.0" else mqtt.MQTTv311
    record = ClientRecord(
        f"fw-{protocol}-{uuid.uuid4().hex[:10]}", protocol, f"fieldward/test/{uuid.uuid4().hex}"
    )
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=record.client_id, protocol=version)
    client.username_pw_set("fw-operator", PASSWORD)
    connected, subscribed, unsubscribed, all_received = (threading.Event() for _ in range(4))

    def on_connect(*_args: Any) -> None:
        connected.set()

    def on_subscribe(*_args: Any) -> None:
        subscribed.set()

    def on_unsubscribe(*_args: Any) -> None:
        unsubscribed.set()

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        record.received.append((message.topic, message.qos, bytes(message.payload)))
        if len(record.received) == 3:
            all_received.set()

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_unsubscribe, client.on_message = on_unsubscribe, on_message
    if version == mqtt.MQTTv5:
        client.connect(*BROKER, keepalive=60, clean_start=True)
    else:
        client.connect(*BROKER, keepalive=60)
    client.loop_start()
    try:
        assert connected.wait(10), "no CONNACK from the broker"
        record.local_port = client.socket().getsockname()[1]
        client.subscribe(f"{record.prefix}/#", qos=2)
        assert subscribed.wait(10), "no SUBACK"
        for qos in (0, 1, 2):
            payload = f"reading {qos} {protocol}".encode()
            record.published.append((f"{record.prefix}/q{qos}", qos, payload))
            client.publish(f"{record.prefix}/q{qos}", payload, qos=qos).wait_for_publish(10)
        assert all_received.wait(10), f"only {len(record.received)} messages came back"
        client.unsubscribe(f"{record.prefix}/#")
        assert unsubscribed.wait(10), "no UNSUBACK"
        time.sleep(0.2)  # let the client finish the QoS 2 handshake of the last message it received
    finally:
        client.disconnect()
        client.loop_stop()
    return record


def test_real_broker_sessions(tmp_path: Path, tshark: str) -> None:
    pytest.importorskip(
        "paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'paho-mqtt>=2.1')"
    )
    if not _broker_reachable():
        pytest.skip(f"no MQTT broker listening on {BROKER[0]}:{BROKER[1]} (e.g. Debian package 'mosquitto')")
    capture_path = tmp_path / "broker.pcap"
    capture = LoopbackCapture(capture_path)
    try:
        records = [_client_session("3.1.1"), _client_session("5.0")]
    finally:
        capture.stop()
    run = run_capture(capture_path, tmp_path / "out")
    assert run.weirds() == []

    # the capture does hold the password (tshark shows it): the dissector drops it
    passwords = tshark_rows(tshark, capture_path, ["mqtt.clientid", "mqtt.passwd"])
    for record in records:
        assert {"mqtt.clientid": record.client_id, "mqtt.passwd": PASSWORD} in passwords
    assert_password_absent(run.out, PASSWORD)

    for record in records:
        connects = [r for r in run.rows("mqtt_connect") if r["client_id"] == record.client_id]
        assert len(connects) == 1, record
        con = connects[0]
        flow = con["flow_id"]
        assert (con["orig_p"], con["resp_p"]) == (record.local_port, BROKER[1])
        assert (con["proto_name"], con["proto_version"], con["keep_alive"]) == ("MQTT", record.protocol, 60)
        assert (con["username_present"], con["password_present"], con["clean_session"]) == (True, True, True)
        assert con["connack"] is True
        assert con["return_code"] == 0
        assert con["connect_status"] == ("Success" if record.protocol == "5.0" else "Connection Accepted")

        pubs = [r for r in run.rows("mqtt_publish") if r["flow_id"] == flow]
        sent = sorted((p["topic"], p["qos"], p["payload"]) for p in pubs if p["from_client"])
        got = sorted((p["topic"], p["qos"], p["payload"]) for p in pubs if not p["from_client"])
        assert sent == sorted(record.published)
        assert got == sorted(record.received)
        assert all(p["status"] == "ok" for p in pubs), pubs
        assert all(p["payload_len"] == len(p["payload"]) for p in pubs)
        for p in pubs:
            assert (p["packet_id"] is None) == (p["qos"] == 0)
            assert (p["ack"], p["rec"], p["rel"], p["comp"]) == (
                p["qos"] == 1,
                p["qos"] == 2,
                p["qos"] == 2,
                p["qos"] == 2,
            )

        subs = sorted((r for r in run.rows("mqtt_subscribe") if r["flow_id"] == flow), key=lambda r: r["ts"])
        v5 = record.protocol == "5.0"
        assert [(r["action"], r["topics"], r["qos_levels"], r["ack"], r["reason_codes"]) for r in subs] == [
            ("SUBSCRIBE", [f"{record.prefix}/#"], [2], True, [2]),
            ("UNSUBSCRIBE", [f"{record.prefix}/#"], None, True, [0] if v5 else None),
        ]

        (session,) = [r for r in run.rows("mqtt") if r["flow_id"] == flow]
        assert session["client_id"] == record.client_id
        assert session["disconnect_from_client"] is True
        assert session["disconnect_reason_code"] == (0 if v5 else None)
        frames = tshark_rows(tshark, capture_path, ["tcp.srcport", "tcp.dstport", "mqtt.msgtype"])
        mine = [f for f in frames if record.local_port in (int(f["tcp.srcport"]), int(f["tcp.dstport"]))]
        client_types = [
            t
            for f in mine
            if f["tcp.srcport"] == str(record.local_port)
            for t in f["mqtt.msgtype"].split(",")
        ]
        server_types = [
            t
            for f in mine
            if f["tcp.dstport"] == str(record.local_port)
            for t in f["mqtt.msgtype"].split(",")
        ]
        assert (session["client_packets"], session["server_packets"]) == (
            len(client_types),
            len(server_types),
        )


# ---------------------------------------------------------------------- documentation


# ---------------------------------------------------------------------- default credentials

DEFAULT_PASSWORD = "7ujMko0admin"  # Mirai's dictionary (admin / 7ujMko0admin)


def connect_with(user: str | None, password: str | None, client_id: str) -> bytes:
    """A CONNECT encoded by scapy's MQTT layer (an encoder independent of ours)."""
    fields: dict[str, Any] = {"username": user} if user is not None else {}
    if password is not None:
        fields["password"] = password
    return s(
        MQTT()
        / MQTTConnect(
            protoname="MQTT",
            protolevel=4,
            usernameflag=int(user is not None),
            passwordflag=int(password is not None),
            cleansess=1,
            klive=30,
            clientId=client_id,
            **fields,
        )
    )


def test_default_credentials_are_matched_and_never_stored(tmp_path: Path) -> None:
    accepted = MQTT(type=2) / MQTTConnack(sessPresentFlag=0, retcode=0)
    refused = MQTT(type=2) / MQTTConnack(sessPresentFlag=0, retcode=5)  # not authorized
    packets = [
        *Conversation(cport=50101).c(connect_with("admin", DEFAULT_PASSWORD, "hmi-1")).s(s(accepted)).done(),
        *Conversation(cport=50102).c(connect_with("admin", DEFAULT_PASSWORD, "scan-1")).s(s(refused)).done(),
        *Conversation(cport=50103).c(connect_with("operator", PASSWORD, "rtu-7")).s(s(accepted)).done(),
        *Conversation(cport=50104).c(connect_with("admin", None, "rtu-8")).s(s(refused)).done(),
    ]
    run = run_packets(tmp_path, packets, "defaults")
    got = sorted(
        (r["client_id"], r["default_credential"], r["return_code"]) for r in run.rows("mqtt_connect")
    )
    assert got == [("hmi-1", "mirai", 0), ("rtu-7", None, 0), ("rtu-8", None, 5), ("scan-1", "mirai", 5)]
    assert run.weirds() == []
    for secret in (DEFAULT_PASSWORD, PASSWORD):
        assert_password_absent(run.out, secret)


def test_default_credential_needs_both_user_name_and_password() -> None:
    """MQTT 5 allows a password without a user name: there is no pair to match."""
    col = Collector().client(connect_with("admin", "public", "emqx-client")).close()  # EMQX's default
    assert [e.default_credential for e in col.of(MqttConnect)] == ["emqx"]
    only_password = connect5(flags=0x42, payload=utf8("c") + utf8("public"))
    col = Collector().client(only_password).server(pkt(2, 0, b"\x00\x00\x00")).close()
    (event,) = col.of(MqttConnect)
    assert (event.username_present, event.password_present, event.default_credential) == (False, True, None)
    assert col.weirds() == []
    assert "public" not in repr(col.events)


def test_every_event_field_and_weird_is_documented() -> None:
    doc = DOC.read_text()
    for event_type in EVENT_TYPES:
        assert f"`{event_type.log}`" in doc
        for f in dataclasses.fields(event_type):
            assert re.search(rf"^\| `{f.name}` \|", doc, re.M), (
                f"{event_type.__name__}.{f.name} is not documented"
            )
    weirds = set(re.findall(r'weird\(\s*"(mqtt_[a-z0-9_]+)"', MODULE.read_text()))
    weirds |= {"mqtt_unframeable_data", "mqtt_pdu_lost_in_gap", "mqtt_pdu_too_large"}
    assert len(weirds) > 20
    for name in sorted(weirds):
        assert f"`{name}`" in doc, f"weird {name} is not documented"
