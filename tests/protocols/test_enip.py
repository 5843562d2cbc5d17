"""EtherNet/IP + CIP dissector: golden comparison with ICSNPP-ENIP and tshark, built captures, fuzzing.

The golden test runs the whole pipeline on ``enip/enip_cip_example.pcap`` and compares every row of
ICSNPP's enip.log, cip.log, cip_io.log and cip_identity.log with our events, field by field, per flow
and in order (ICSNPP prints codes in hex; our events keep integers and are formatted the same way
here). Fields ICSNPP does not log (CPF item types, connection IDs, Forward Open parameters, request
paths, symbols, route paths) are compared with tshark's dissection of the same bytes. The built
captures cover what the corpus lacks: every event type, Forward Open / Large Forward Open / Forward
Close, Unconnected Send, Multiple Service Packet replies with errors, Reset, ListServices,
RegisterSession, UDP ListIdentity and I/O, malformed and truncated messages, TCP segmentation and
recognition by content.
"""

from __future__ import annotations

import dataclasses
import struct
import subprocess
from collections import defaultdict
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from fieldward.capture.batch import PacketBatch
from fieldward.decode.flows import FlowTable
from fieldward.decode.l2l4 import decode_batch
from fieldward.pipeline import analyze
from fieldward.protocols.base import (
    Event,
    FlowInfo,
    PduContext,
    ProtocolWeird,
    Transport,
    Verdict,
    event_fields,
)
from fieldward.protocols.engine import ProtocolEngine
from fieldward.protocols.enip import (
    MAX_EVENTS_PER_PDU,
    CipConnection,
    CipHeader,
    CipIdentity,
    CipIO,
    EnipDissector,
    EnipHeader,
    parse_epath,
    vendor_name,
)
from fieldward.protocols.registry import Registry
from fieldward.weird import WeirdLog

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
CONTEXT = bytes.fromhex("0102030405060708")
SESSION = 0x11223344

# ------------------------------------------------------------------------------- byte builders


def encap(
    command: int,
    body: bytes = b"",
    session: int = SESSION,
    status: int = 0,
    context: bytes = CONTEXT,
    options: int = 0,
) -> bytes:
    """An encapsulation message (Vol 2 2-3)."""
    return struct.pack("<HHII8sI", command, len(body), session, status, context, options) + body


def cpf(*items: tuple[int, bytes]) -> bytes:
    return struct.pack("<H", len(items)) + b"".join(struct.pack("<HH", t, len(d)) + d for t, d in items)


def send_rr(cip: bytes, **kw: Any) -> bytes:
    return encap(0x6F, struct.pack("<IH", 0, 10) + cpf((0x0000, b""), (0x00B2, cip)), **kw)


def send_unit(cip: bytes, sequence: int, connection: int, **kw: Any) -> bytes:
    items = cpf((0x00A1, struct.pack("<I", connection)), (0x00B1, struct.pack("<H", sequence) + cip))
    return encap(0x70, struct.pack("<IH", 0, 0) + items, context=bytes(8), **kw)


def logical(kind: int, value: int) -> bytes:
    """A logical segment: kind 0 class, 1 instance, 3 connection point, 4 attribute, 2 member."""
    if value < 0x100:
        return bytes([0x20 | kind << 2, value])
    return bytes([0x21 | kind << 2, 0]) + struct.pack("<H", value)


def symbol(name: str) -> bytes:
    raw = name.encode()
    return bytes([0x91, len(raw)]) + raw + b"\0" * (len(raw) % 2)


def request(service: int, path: bytes, data: bytes = b"") -> bytes:
    assert len(path) % 2 == 0
    return bytes([service, len(path) // 2]) + path + data


def reply(service: int, status: int = 0, additional: tuple[int, ...] = (), data: bytes = b"") -> bytes:
    extra = b"".join(struct.pack("<H", a) for a in additional)
    return bytes([service | 0x80, 0, status, len(additional)]) + extra + data


def multiple(services: list[bytes]) -> bytes:
    """Multiple Service Packet data: count, offsets from the count field, services."""
    offsets, pos = [], 2 + 2 * len(services)
    for s in services:
        offsets.append(pos)
        pos += len(s)
    return struct.pack(f"<H{len(services)}H", len(services), *offsets) + b"".join(services)


IDENTITY_PATH = logical(0, 0x01) + logical(1, 1)
CM_PATH = logical(0, 0x06) + logical(1, 1)
MR_PATH = logical(0, 0x02) + logical(1, 1)
KEY = bytes([0x34, 0x04]) + struct.pack("<HHH", 1, 0x0E, 0x37) + bytes([20 | 0x80, 11])
CONN_PATH = b"\x01\x00" + KEY + logical(0, 0x04) + logical(1, 0x97) + logical(3, 0x64) + logical(3, 0x65)
CONN_PATH_TEXT = (
    "port:1,0/key:vendor=1,device_type=14,product_code=55,revision=20.11,compatible/"
    "class:0x04/instance:0x97/connection_point:0x64/connection_point:0x65"
)


def forward_open(large: bool = False) -> bytes:
    ot_params, to_params = (0x40000258, 0x200003E8) if large else (0x4020, 0x2028)
    params = "I" if large else "H"
    data = struct.pack(
        f"<BBIIHHIB3xI{params}I{params}BB",
        0x0A,
        0x0E,
        0,
        0x12345678,
        0x4242,
        1,
        0xC0FFEE,
        1,
        20000,
        ot_params,
        40000,
        to_params,
        0x01,
        len(CONN_PATH) // 2,
    )
    return request(0x5B if large else 0x54, CM_PATH, data + CONN_PATH)


FORWARD_OPEN_OK = reply(
    0x54, data=struct.pack("<IIHHIIIBx", 0x11111111, 0x12345678, 0x4242, 1, 0xC0FFEE, 20000, 40000, 0)
)
LARGE_FORWARD_OPEN_FAIL = reply(0x5B, 0x01, (0x0100,), struct.pack("<HHIBx", 0x4242, 1, 0xC0FFEE, 0))
FORWARD_CLOSE = request(
    0x4E, CM_PATH, struct.pack("<BBHHIBx", 0x0A, 0x0E, 0x4242, 1, 0xC0FFEE, 2) + b"\x01\x00" + MR_PATH[:2]
)
FORWARD_CLOSE_OK = reply(0x4E, data=struct.pack("<HHIBx", 0x4242, 1, 0xC0FFEE, 0))

WRITE_TAG = request(0x4D, symbol("Valve") + logical(2, 3), struct.pack("<HHH", 0xC1, 1, 1))
UNCONNECTED_SEND = request(
    0x52,
    CM_PATH,
    struct.pack("<BBH", 0x0A, 0xF0, len(WRITE_TAG))
    + WRITE_TAG
    + b"\0" * (len(WRITE_TAG) % 2)
    + b"\x01\x00\x01\x02",
)
MSP = request(
    0x0A,
    MR_PATH,
    multiple([request(0x05, IDENTITY_PATH, b"\x01"), request(0x01, logical(0, 0xF5) + logical(1, 1))]),
)
MSP_REPLY = reply(0x0A, 0x1E, data=multiple([reply(0x05), reply(0x01, 0x08)]))
READ_TAG = request(0x4C, symbol("Motor_Speed"), struct.pack("<H", 1))
READ_TAG_REPLY = reply(0x4C, data=struct.pack("<Hi", 0xC4, 1500))
GET_NAME = request(0x0E, IDENTITY_PATH + logical(4, 7))
GET_NAME_REPLY = reply(0x0E, data=b"\x0b1756-L61/B")


def identity_item(name: bytes = b"1756-L61/B LOGIX5561", state: int = 3) -> bytes:
    sockaddr = struct.pack(">hH4s8s", 2, 44818, bytes([10, 0, 0, 2]), bytes(8))
    fixed = struct.pack("<H16sHHHBBHIB", 1, sockaddr, 1, 0x0E, 0x36, 20, 11, 0x3160, 0x00C0FFEE, len(name))
    return fixed + name + bytes([state])


LIST_SERVICES_REPLY = encap(0x04, cpf((0x0100, struct.pack("<HH16s", 1, 0x0120, b"Communications"))))
LIST_IDENTITY_REPLY = encap(0x63, cpf((0x000C, identity_item())), session=0)


def io_datagram(connection: int, sequence: int, data: bytes) -> bytes:
    return cpf((0x8002, struct.pack("<II", connection, sequence)), (0x00B1, data))


# ------------------------------------------------------------------------------ packet builders


def tcp_session(port: int, messages: list[tuple[bool, bytes]], sport: int = 50000) -> list[bytes]:
    """Handshake, then each (from_client, payload) as one segment, then FINs."""
    c, s = CLIENT, SERVER
    seq = {True: 1000, False: 5000}

    def seg(from_client: bool, flags: str, payload: bytes = b"") -> bytes:
        src, dst, sp, dp = (c, s, sport, port) if from_client else (s, c, port, sport)
        pkt = Ether() / IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags, seq=seq[from_client])
        pkt[TCP].ack = seq[not from_client]
        seq[from_client] += len(payload) + (1 if "S" in flags or "F" in flags else 0)
        return bytes(pkt / payload) if payload else bytes(pkt)

    pkts = [seg(True, "S"), seg(False, "SA"), seg(True, "A")]
    pkts += [seg(from_client, "PA", payload) for from_client, payload in messages]
    return [*pkts, seg(True, "FA"), seg(False, "FA")]


def udp_packets(sport: int, dport: int, datagrams: list[tuple[bool, bytes]]) -> list[bytes]:
    out = []
    for from_client, payload in datagrams:
        src, dst, sp, dp = (CLIENT, SERVER, sport, dport) if from_client else (SERVER, CLIENT, dport, sport)
        out.append(bytes(Ether() / IP(src=src, dst=dst) / UDP(sport=sp, dport=dp) / payload))
    return out


def run(packets: list[bytes], batch_size: int = 1000) -> tuple[list[Event], WeirdLog, ProtocolEngine]:
    """The engine with this dissector only; packet i has time i seconds."""
    weird = WeirdLog()
    events: list[Event] = []
    registry = Registry()
    registry.add(EnipDissector)
    engine = ProtocolEngine(registry, events.append, weird)
    flows = FlowTable(weird=weird)
    for start in range(0, len(packets), batch_size):
        chunk = packets[start : start + batch_size]
        batch = PacketBatch.from_packets(chunk, ts_ns=[(start + i) * 10**9 for i in range(len(chunk))])
        decoded = decode_batch(batch, weird)
        engine.process(batch, decoded, flows.update(batch, decoded))
    engine.finish()
    return events, weird, engine


def of(events: list[Event], kind: type[Event]) -> list[Any]:
    return [e for e in events if type(e) is kind]


def weird_names(events: list[Event]) -> list[str]:
    return [e.name for e in events if isinstance(e, ProtocolWeird)]


class Collector:
    """Sans-io harness: one dissector instance and a context that collects events and weirds."""

    def __init__(self, transport: Transport = Transport.TCP) -> None:
        self.events: list[Event] = []
        flow = FlowInfo(1, transport, CLIENT, 50000, SERVER, 44818)
        self.ctx = PduContext(flow, "enip", self.events.append, self.events.append)
        self.dissector = EnipDissector(flow)

    def feed(self, pdu: bytes, is_orig: bool = True) -> list[Event]:
        start = len(self.events)
        self.ctx.is_orig = is_orig
        self.dissector.parse(pdu, self.ctx)
        return self.events[start:]


def tshark_rows(
    tshark: str, capture: Path, fields: list[str], display: str = "enip || cipio"
) -> list[list[str]]:
    """One row per frame of ``display``: frame number then each field (occurrences joined by '|')."""
    cmd = [
        tshark,
        "-r",
        str(capture),
        "-Y",
        display,
        "-T",
        "fields",
        "-E",
        "aggregator=|",
        "-e",
        "frame.number",
    ]
    for name in fields:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def tshark_wire_rows(tshark: str, capture: Path, fields: list[str], display: str) -> list[list[str]]:
    """Like :func:`tshark_rows`, but only values read from the packet bytes.

    tshark also shows values it remembers from earlier frames (e.g. the APIs of a Forward Open in the
    Forward Close of that connection); those generated fields cover no bytes (``size="0"`` in PDML).
    """
    cmd = [tshark, "-r", str(capture), "-Y", display, "-T", "pdml"]
    root = ElementTree.fromstring(subprocess.run(cmd, capture_output=True, check=True).stdout)
    rows = []
    for packet in root.iter("packet"):
        values: dict[str, list[str]] = defaultdict(list)
        number = ""
        for node in packet.iter("field"):
            name = node.get("name", "")
            if name == "frame.number":
                number = node.get("show", "")
            elif name in fields and node.get("size", "0") != "0":
                values[name].append(node.get("show", ""))
        rows.append([number, *("|".join(values[name]) for name in fields)])
    return rows


def read_events(path: Path) -> list[dict[str, Any]]:
    """Rows of an events file, ``ts`` as ns since the epoch (to_pylist alone gives datetimes)."""
    table = pq.read_table(path)
    index = table.schema.get_field_index("ts")
    rows: list[dict[str, Any]] = table.set_column(
        index, "ts", table.column("ts").cast(pa.int64())
    ).to_pylist()
    return rows


def hex_list(value: str) -> list[int]:
    return [int(v, 0) for v in value.split("|")] if value else []


# ------------------------------------------------------------------------------- golden (ICSNPP)


def h(value: int | None, width: int = 2) -> str:
    return "-" if value is None else f"0x{value:0{width}x}"


def s(value: object) -> str:
    return "-" if value is None else str(value)


def endpoints(row: dict[str, Any]) -> tuple[str, ...]:
    """ICSNPP's id fields, then is_orig and the sender/receiver of this message."""
    ids = (row["orig_h"], str(row["orig_p"]), row["resp_h"], str(row["resp_p"]))
    sender = ids[:2] + ids[2:] if row["is_orig"] else ids[2:] + ids[:2]
    return (*ids, "T" if row["is_orig"] else "F", *sender)


FORMAT: dict[str, Callable[[dict[str, Any]], tuple[str, ...]]] = {
    "enip": lambda r: (
        h(r["enip_command_code"]),
        r["enip_command"],
        str(r["length"]),
        h(r["session_handle"], 8),
        r["enip_status"],
        "0x" + r["sender_context"].hex(),
        h(r["options"], 8),
    ),
    "cip": lambda r: (
        s(r["cip_sequence_count"] or None),  # ICSNPP leaves a count of 0 unset
        r["direction"],
        h(r["cip_service_code"]),
        r["cip_service"],
        h(r["cip_status_code"]),
        s(r["cip_status"]),
        h(r["cip_extended_status_code"], 4),
        s(r["cip_extended_status"]),
        h(r["class_id"]),
        s(r["class_name"]),
        h(r["instance_id"]),
        h(r["attribute_id"]),
    ),
    "cip_io": lambda r: (
        h(r["connection_id"], 8),
        str(r["sequence_number"]),
        str(r["data_length"]),
        r["io_data"].hex(),
    ),
    "cip_identity": lambda r: (
        str(r["encapsulation_version"]),
        r["socket_address"],
        str(r["socket_port"]),
        str(r["vendor_id"]),
        r["vendor_name"],
        str(r["device_type_id"]),
        r["device_type_name"],
        str(r["product_code"]),
        r["revision"],
        h(r["device_status"], 4),
        h(r["serial_number"], 8),
        r["product_name"],
        h(r["device_state"], 4),
    ),
}


@pytest.fixture(scope="module")
def golden(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("enip")
    capture = corpus / "enip" / "enip_cip_example.pcap"
    analyze([capture], out)
    return capture, out


def per_flow(rows: list[tuple[str, ...]]) -> dict[tuple[str, ...], list[tuple[str, ...]]]:
    flows: dict[tuple[str, ...], list[tuple[str, ...]]] = defaultdict(list)
    for row in rows:
        flows[row[:4]].append(row)
    return dict(flows)


@pytest.mark.parametrize(
    ("log", "count"), [("enip", 269), ("cip", 1158), ("cip_io", 398), ("cip_identity", 1)]
)
def test_golden_icsnpp_logs(golden: tuple[Path, Path], corpus: Path, log: str, count: int) -> None:
    _, out = golden
    lines = (corpus / "enip" / "expected" / "analyzer.basic" / f"{log}.log").read_text().splitlines()
    expected = [tuple(line.split("\t")[2:]) for line in lines if line and not line.startswith("#")]
    ours = [
        (*endpoints(r), *FORMAT[log](r)) for r in pq.read_table(out / "events" / f"{log}.parquet").to_pylist()
    ]
    assert len(expected) == count
    # Same rows, flow by flow and in order (across flows the interleaving of two loggers may differ).
    assert per_flow(ours) == per_flow(expected)


def test_golden_no_weirds_and_flows(golden: tuple[Path, Path]) -> None:
    _, out = golden
    events = out / "events"
    assert not (events / "weird.parquet").exists() or not [
        r for r in pq.read_table(events / "weird.parquet").to_pylist() if r["protocol"] == "enip"
    ]
    # Three flows carry EtherNet/IP: the explicit-messaging TCP session, the ListIdentity one, the I/O.
    flows = {
        r["flow_id"]
        for log in ("enip", "cip_io")
        for r in pq.read_table(events / f"{log}.parquet").to_pylist()
    }
    assert len(flows) == 3


def test_golden_fields_icsnpp_lacks_match_tshark(golden: tuple[Path, Path], tshark: str) -> None:
    """CPF item types, connection IDs, timeouts, request paths and statuses per frame, against tshark."""
    capture, out = golden
    fields = [
        "frame.time_epoch",
        "enip.cpf.typeid",
        "enip.cpf.cai.connid",
        "enip.timeout",
        "cip.rr",
        "cip.sc",
    ]
    fields += ["cip.class", "cip.instance", "cip.genstat", "enip.cpf.sai.connid", "enip.cpf.sai.seq"]
    # Events of each log in capture order, keyed by packet time (several frames may share one).
    queues: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for log in ("enip", "cip", "cip_io"):
        for r in reversed(read_events(out / "events" / f"{log}.parquet")):
            queues[log, r["ts"]].append(r)
    checked = 0
    for row in tshark_rows(tshark, capture, fields):
        _, epoch, types, connid, timeout, rr, sc, classes, instances, genstat, sai_conn, sai_seq = row
        secs, _, frac = epoch.partition(".")
        ts = int(secs) * 10**9 + int(frac[:9].ljust(9, "0"))
        if sai_conn:
            io = queues["cip_io", ts].pop()
            assert (io["connection_id"], io["sequence_number"]) == (int(sai_conn, 16), int(sai_seq))
            checked += 1
            continue
        header = queues["enip", ts].pop()
        cip = [queues["cip", ts].pop() for _ in hex_list(sc)]
        assert header["cpf_item_types"] == hex_list(types)
        assert header["timeout"] == (int(timeout) if timeout else None)
        assert [e["connection_id"] for e in cip] == [int(connid, 16)] * len(cip) if connid else not cip
        assert [e["cip_service_code"] for e in cip] == hex_list(sc)
        if cip and rr.split("|")[0] == "0x00":  # a request: tshark's classes are the request paths
            assert [e["class_id"] for e in cip] == hex_list(classes)
            assert [e["instance_id"] for e in cip] == hex_list(instances)
            assert all(
                e["request_path"] == f"class:{h(e['class_id'])}/instance:{h(e['instance_id'])}" for e in cip
            )
        elif cip:
            assert [e["cip_status_code"] for e in cip] == hex_list(genstat)
        checked += 1
    assert checked == 269 + 398  # every ENIP and I/O frame
    assert not any(queues.values())  # and no event without a frame


def test_golden_identity_matches_tshark(golden: tuple[Path, Path], tshark: str) -> None:
    capture, out = golden
    fields = ["enip.lir.vendor", "enip.lir.devtype", "enip.lir.prodcode", "enip.lir.serial", "enip.lir.name"]
    fields += ["enip.lir.state", "enip.lir.status", "enip.sinport", "enip.sinaddr"]
    ((_, vendor, devtype, product, serial, name, state, status, port, addr),) = tshark_rows(
        tshark, capture, fields, "enip.lir.name"
    )
    (ours,) = pq.read_table(out / "events" / "cip_identity.parquet").to_pylist()
    assert (ours["vendor_id"], ours["device_type_id"], ours["product_code"]) == (
        int(vendor, 0),
        int(devtype, 0),
        int(product, 0),
    )
    assert (ours["serial_number"], ours["product_name"], ours["device_state"]) == (
        int(serial, 16),
        name,
        int(state, 16),
    )
    assert (ours["device_status"], ours["socket_port"], ours["socket_address"]) == (
        int(status, 16),
        int(port),
        addr,
    )


# ------------------------------------------------------------------------- built captures (engine)


SCENARIO: list[tuple[bool, bytes]] = [
    (True, encap(0x65, struct.pack("<HH", 1, 0), session=0)),
    (False, encap(0x65, struct.pack("<HH", 1, 0))),
    (True, encap(0x04)),
    (False, LIST_SERVICES_REPLY),
    (True, send_rr(GET_NAME)),
    (False, send_rr(GET_NAME_REPLY)),
    (True, send_rr(forward_open())),
    (False, send_rr(FORWARD_OPEN_OK)),
    (True, send_rr(forward_open(large=True), context=b"LARGEFO!")),
    (False, send_rr(LARGE_FORWARD_OPEN_FAIL, context=b"LARGEFO!")),
    (True, send_unit(READ_TAG, 7, 0x11111111)),
    (False, send_unit(READ_TAG_REPLY, 7, 0x12345678)),
    (True, send_rr(UNCONNECTED_SEND)),
    (False, send_rr(reply(0x4D))),
    (True, send_rr(MSP)),
    (False, send_rr(MSP_REPLY)),
    (True, send_rr(FORWARD_CLOSE)),
    (False, send_rr(FORWARD_CLOSE_OK)),
    (True, encap(0x63, session=0)),
    (False, LIST_IDENTITY_REPLY),
    (True, encap(0x66)),
]


@pytest.fixture(scope="module")
def scenario() -> list[Event]:
    events, weird, engine = run(tcp_session(44818, SCENARIO))
    assert engine.flows_by_protocol == {"enip": 1}
    assert weird.total == 0, weird.counts
    return events


def test_every_encapsulation_message_is_logged(scenario: list[Event]) -> None:
    headers = of(scenario, EnipHeader)
    assert [(e.enip_command, e.is_orig) for e in headers] == [(_command_name(m), c) for c, m in SCENARIO]
    register, register_reply = headers[0], headers[1]
    assert (register.protocol_version, register.session_handle, register_reply.session_handle) == (
        1,
        0,
        SESSION,
    )
    services = headers[3]
    assert (services.service_name, services.capability_flags, services.protocol_version) == (
        "Communications",
        0x120,
        1,
    )
    rr = headers[4]
    assert (rr.interface_handle, rr.timeout, rr.cpf_item_types, rr.sender_context) == (
        0,
        10,
        [0, 0xB2],
        CONTEXT,
    )
    assert headers[10].cpf_item_types == [0xA1, 0xB1]


def _command_name(message: bytes) -> str:
    return {
        0x65: "Register Session",
        0x04: "List Services",
        0x6F: "Send RR Data",
        0x70: "Send Unit Data",
        0x63: "List Identity",
        0x66: "Unregister Session",
    }[message[0]]


def cip_rows(events: list[Event]) -> list[tuple[Any, ...]]:
    return [
        (
            e.direction,
            e.cip_service_code,
            e.cip_service,
            e.cip_status_code,
            e.class_id,
            e.instance_id,
            e.attribute_id,
        )
        for e in of(events, CipHeader)
    ]


def test_cip_services_requests_and_replies(scenario: list[Event]) -> None:
    assert cip_rows(scenario) == [
        ("request", 0x0E, "Get Attribute Single", None, 0x01, 1, 7),
        ("response", 0x0E, "Get Attribute Single", 0, None, None, None),
        ("request", 0x54, "Forward Open", None, 0x06, 1, None),
        ("response", 0x54, "Forward Open", 0, None, None, None),
        ("request", 0x5B, "Large Forward Open", None, 0x06, 1, None),
        ("response", 0x5B, "Large Forward Open", 1, None, None, None),
        ("request", 0x4C, "Read Tag", None, None, None, None),
        ("response", 0x4C, "Read Tag", 0, None, None, None),
        ("request", 0x52, "Unconnected Send", None, 0x06, 1, None),
        ("request", 0x4D, "Write Tag", None, None, None, None),
        ("response", 0x4D, "Write Tag", 0, None, None, None),
        ("request", 0x0A, "Multiple Service Packet", None, 0x02, 1, None),
        ("request", 0x05, "Reset", None, 0x01, 1, None),
        ("request", 0x01, "Get Attributes All", None, 0xF5, 1, None),
        ("response", 0x0A, "Multiple Service Packet", 0x1E, None, None, None),
        ("response", 0x05, "Reset", 0, None, None, None),
        ("response", 0x01, "Get Attributes All", 0x08, None, None, None),
        ("request", 0x4E, "Forward Close", None, 0x06, 1, None),
        ("response", 0x4E, "Forward Close", 0, None, None, None),
    ]
    rows = of(scenario, CipHeader)
    assert [r.class_name for r in rows if r.direction == "request"] == [
        "Identity",
        "Connection Manager",
        "Connection Manager",
        None,
        "Connection Manager",
        None,
        "Message Router",
        "Identity",
        "TCP/IP Interface",
        "Connection Manager",
    ]
    large_fail = rows[5]
    assert (large_fail.cip_status, large_fail.cip_extended_status_code, large_fail.cip_extended_status) == (
        "Connection Failure",
        0x0100,
        "Connection in use or duplicate Forward Open",
    )
    read, read_reply = rows[6], rows[7]
    assert (read.cip_sequence_count, read.connection_id, read.request_path) == (
        7,
        0x11111111,
        "symbol:Motor_Speed",
    )
    assert (read_reply.cip_sequence_count, read_reply.connection_id) == (7, 0x12345678)
    send, write = rows[8], rows[9]
    assert (send.route_path, send.parent_service_code) == ("port:1,2", None)
    assert (write.request_path, write.parent_service_code, write.route_path) == (
        "symbol:Valve/member:0x03",
        0x52,
        None,
    )
    reset, msp_reply, get_all_reply = rows[12], rows[14], rows[16]
    assert (reset.reset_type, reset.parent_service_code) == (1, 0x0A)
    assert (msp_reply.cip_status, get_all_reply.cip_status) == (
        "Embedded Service Error",
        "Service Not Supported",
    )
    assert get_all_reply.parent_service_code == 0x0A
    assert all(r.cip_sequence_count is None for r in rows if r not in (read, read_reply))


def test_connection_manager_services(scenario: list[Event]) -> None:
    fo, fo_ok, lfo, lfo_fail, close, close_ok = of(scenario, CipConnection)
    assert (fo.cip_service, fo.ot_connection_id, fo.to_connection_id) == ("Forward Open", 0, 0x12345678)
    assert (fo.connection_serial_number, fo.originator_vendor_id, fo.originator_serial_number) == (
        0x4242,
        1,
        0xC0FFEE,
    )
    assert fo.originator_vendor_name == "Rockwell Automation/Allen-Bradley"
    assert (fo.priority_time_tick, fo.timeout_ticks, fo.connection_timeout_multiplier) == (0x0A, 0x0E, 1)
    assert (fo.ot_rpi, fo.ot_network_connection_parameters, fo.ot_connection_size, fo.ot_connection_type) == (
        20000,
        0x4020,
        32,
        "point-to-point",
    )
    assert (fo.to_rpi, fo.to_connection_size, fo.to_connection_type) == (40000, 40, "multicast")
    assert (fo.transport_type_trigger, fo.transport_class, fo.production_trigger) == (1, 1, "cyclic")
    assert fo.connection_path == CONN_PATH_TEXT
    assert (fo_ok.direction, fo_ok.ot_connection_id, fo_ok.ot_api, fo_ok.to_api, fo_ok.cip_status_code) == (
        "response",
        0x11111111,
        20000,
        40000,
        0,
    )
    assert (
        lfo.ot_connection_size,
        lfo.ot_connection_type,
        lfo.to_connection_size,
        lfo.to_connection_type,
    ) == (
        600,
        "point-to-point",
        1000,
        "multicast",
    )
    assert (lfo_fail.cip_status_code, lfo_fail.cip_extended_status_code, lfo_fail.remaining_path_size) == (
        1,
        0x100,
        0,
    )
    assert lfo_fail.ot_connection_id is None
    assert (close.cip_service, close.connection_serial_number, close.connection_path) == (
        "Forward Close",
        0x4242,
        "port:1,0/class:0x02",
    )
    assert (close_ok.direction, close_ok.originator_serial_number, close_ok.remaining_path_size) == (
        "response",
        0xC0FFEE,
        None,
    )


def test_list_identity_reply_over_tcp(scenario: list[Event]) -> None:
    (identity,) = of(scenario, CipIdentity)
    assert not identity.is_orig
    assert (identity.socket_address, identity.socket_port, identity.encapsulation_version) == (
        "10.0.0.2",
        44818,
        1,
    )
    assert (identity.vendor_id, identity.vendor_name, identity.device_type_name) == (
        1,
        "Rockwell Automation/Allen-Bradley",
        "Programmable Logic Controller",
    )
    assert (identity.product_code, identity.revision, identity.device_status) == (0x36, "20.11", 0x3160)
    assert (identity.serial_number, identity.product_name, identity.device_state) == (
        0xC0FFEE,
        "1756-L61/B LOGIX5561",
        3,
    )


def test_built_scenario_matches_tshark(tmp_path: Path, tshark: str) -> None:
    """Forward Open/Close (values on the wire), identity, ListServices and symbols, against tshark."""
    packets = tcp_session(44818, SCENARIO)
    capture = tmp_path / "scenario.pcap"
    wrpcap(str(capture), [Ether(p) for p in packets])
    events, _, _ = run(packets)
    fields = ["cip.cm.ot_connid", "cip.cm.to_connid", "cip.cm.conn_serial_num", "cip.cm.vendor"]
    fields += ["cip.cm.orig_serial_num", "cip.cm.otrpi", "cip.cm.torpi", "cip.cm.ot_net_params"]
    fields += ["cip.cm.to_net_params", "cip.cm.transport_type_trigger", "cip.cm.otapi", "cip.cm.toapi"]
    fields += ["cip.cm.ext_status"]
    rows = tshark_wire_rows(tshark, capture, fields, "cip.cm.conn_serial_num")
    connections = of(events, CipConnection)
    assert len(rows) == len(connections) == 6
    for row, ours in zip(rows, connections, strict=True):
        values = [int(v, 0) if v else None for v in row[1:]]
        (
            ot,
            to,
            serial,
            vendor,
            orig_serial,
            ot_rpi,
            to_rpi,
            ot_params,
            to_params,
            trigger,
            ot_api,
            to_api,
            ext,
        ) = values
        assert (ours.ot_connection_id, ours.to_connection_id) == (ot, to)
        assert (ours.connection_serial_number, ours.originator_vendor_id, ours.originator_serial_number) == (
            serial,
            vendor,
            orig_serial,
        )
        assert (ours.ot_rpi, ours.to_rpi, ours.transport_type_trigger) == (ot_rpi, to_rpi, trigger)
        assert (ours.ot_network_connection_parameters, ours.to_network_connection_parameters) == (
            ot_params,
            to_params,
        )
        assert (ours.ot_api, ours.to_api, ours.cip_extended_status_code) == (ot_api, to_api, ext)
    symbols = tshark_wire_rows(tshark, capture, ["cip.symbol"], "cip.symbol")
    ours_symbols = [
        part.removeprefix("symbol:")
        for e in of(events, CipHeader)
        for part in (e.request_path or "").split("/")
        if part.startswith("symbol:")
    ]
    assert [r[1] for r in symbols if r[1]] == ours_symbols == ["Motor_Speed", "Valve"]
    services = tshark_rows(
        tshark, capture, ["enip.lsr.servicename", "enip.rs.version"], "enip.lsr.servicename"
    )
    assert services == [[services[0][0], "Communications", ""]]
    names = tshark_rows(tshark, capture, ["enip.lir.name", "enip.lir.vendor"], "enip.lir.name")
    assert [r[1:] for r in names] == [["1756-L61/B LOGIX5561", "0x0001"]]


def test_udp_list_identity_and_io(tmp_path: Path, tshark: str) -> None:
    identity = udp_packets(50001, 44818, [(True, encap(0x63, session=0)), (False, LIST_IDENTITY_REPLY)])
    o_t = io_datagram(0x11111111, 41, struct.pack("<H", 9) + b"\x01\x00\x00\x00" + b"\x2a" * 4)
    t_o = io_datagram(0x12345678, 77, struct.pack("<H", 3) + bytes(range(10)))
    io = udp_packets(2222, 2222, [(True, o_t), (False, t_o), (True, o_t)])
    odd_port = udp_packets(3000, 3001, [(False, t_o)])
    packets = identity + io + odd_port
    events, weird, engine = run(packets)
    assert weird.total == 0
    assert engine.flows_by_protocol == {"enip": 3}
    assert [e.enip_command for e in of(events, EnipHeader)] == ["List Identity", "List Identity"]
    (ident,) = of(events, CipIdentity)
    assert (ident.product_name, ident.is_orig, ident.resp_p) == ("1756-L61/B LOGIX5561", False, 44818)
    ios = of(events, CipIO)
    assert [(e.connection_id, e.sequence_number, e.data_length, e.is_orig, e.resp_p) for e in ios] == [
        (0x11111111, 41, 10, True, 2222),
        (0x12345678, 77, 12, False, 2222),
        (0x11111111, 41, 10, True, 2222),
        (0x12345678, 77, 12, True, 3000),
    ]
    assert ios[1].io_data == struct.pack("<H", 3) + bytes(range(10))
    capture = tmp_path / "io.pcap"
    wrpcap(str(capture), [Ether(p) for p in packets])
    rows = tshark_rows(
        tshark, capture, ["enip.cpf.sai.connid", "enip.cpf.sai.seq", "cipio.data"], "udp.port == 2222"
    )
    assert [(int(c, 16), int(q), bytes.fromhex(d.replace(":", ""))) for _, c, q, d in rows] == [
        (e.connection_id, e.sequence_number, e.io_data) for e in ios[:3]
    ]


def test_segmentation_split_and_coalesced_pdus() -> None:
    stream = b"".join(m for c, m in SCENARIO if c)
    cuts = [0, 3, 23, 24, 25, 60, 61, 200, 201, len(stream)]
    split = [(True, stream[a:b]) for a, b in pairwise(cuts) if b > a]
    whole, _, _ = run(tcp_session(44818, [(True, stream)]))
    for batch_size in (1, 3, 1000):
        events, weird, _ = run(tcp_session(44818, split), batch_size)
        assert weird.total == 0
        assert [dataclasses.replace(e, ts=0) for e in events] == [dataclasses.replace(e, ts=0) for e in whole]
    assert len(of(whole, EnipHeader)) == len([c for c, _ in SCENARIO if c])
    assert len(of(whole, CipHeader)) == 10  # the requests of SCENARIO, embedded ones included


def test_recognised_by_content_on_another_port() -> None:
    events, _, engine = run(tcp_session(5020, SCENARIO[:8]))
    assert engine.flows_by_protocol == {"enip": 1}
    assert len(of(events, CipConnection)) == 2
    assert EnipDissector.recognize(encap(0x65, struct.pack("<HH", 1, 0)), Transport.TCP, 5, 6) == Verdict.YES


def test_other_protocols_on_the_standard_ports_are_not_recognised() -> None:
    http = b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n"
    modbus = bytes.fromhex("000100000006010300000001")
    for payload in (http, modbus, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40)):
        events, _, engine = run(tcp_session(44818, [(True, payload), (False, payload)]))
        assert (events, engine.flows_by_protocol) == ([], {})
    dns = bytes.fromhex("12340100000100000000000003777777076578616d706c6503636f6d0000010001")
    events, _, engine = run(udp_packets(2222, 2222, [(True, dns)]) + udp_packets(5353, 44818, [(True, dns)]))
    assert (events, engine.flows_by_protocol) == ([], {})


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"", Verdict.MAYBE),
        (b"\x65\x00", Verdict.MAYBE),
        (encap(0x65, struct.pack("<HH", 1, 0))[:20], Verdict.MAYBE),
        (b"GE", Verdict.NO),
        (encap(0x65, struct.pack("<HH", 2, 0)), Verdict.NO),  # protocol version must be 1
        (encap(0x65, b"\x01\x00"), Verdict.NO),
        (encap(0x63, options=1), Verdict.NO),
        (encap(0x63, status=0x42), Verdict.NO),
        (encap(0x6F, struct.pack("<IHH", 5, 0, 2)), Verdict.NO),  # interface handle must be 0
        (send_rr(GET_NAME)[:34], Verdict.YES),
        (send_rr(GET_NAME) + b"more", Verdict.YES),
        (encap(0x00), Verdict.MAYBE),  # a NOP alone proves little
        (encap(0x66, b"x"), Verdict.NO),
        (LIST_IDENTITY_REPLY[:-1], Verdict.MAYBE),
    ],
)
def test_tcp_recognition_is_strict(data: bytes, verdict: Verdict) -> None:
    assert EnipDissector.recognize(data, Transport.TCP, 50000, 44818) == verdict


def test_udp_recognition_is_strict() -> None:
    good_io = io_datagram(1, 2, b"\x00\x00abc")
    assert EnipDissector.recognize(good_io, Transport.UDP, 2222, 2222) == Verdict.YES
    assert EnipDissector.recognize(good_io + b"x", Transport.UDP, 2222, 2222) == Verdict.NO
    assert EnipDissector.recognize(encap(0x63, session=0), Transport.UDP, 1, 44818) == Verdict.YES
    assert EnipDissector.recognize(encap(0x63, session=0) + b"x", Transport.UDP, 1, 44818) == Verdict.NO
    assert EnipDissector.recognize(send_rr(GET_NAME), Transport.UDP, 1, 44818) == Verdict.NO  # TCP only
    assert (
        EnipDissector.recognize(cpf((0x00A1, bytes(4)), (0x00B1, b"ab")), Transport.UDP, 1, 2) == Verdict.NO
    )


# ------------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("pdu", "weird"),
    [
        (
            encap(0x6F, struct.pack("<IH", 0, 0) + struct.pack("<HHH", 1, 0xB2, 40) + b"short"),
            "enip_bad_command_data",
        ),
        (encap(0x6F, b"\0\0"), "enip_bad_command_data"),
        (encap(0x63, options=4), "enip_nonzero_options"),
        (send_rr(b"\x0e\x03\x20\x01"), "enip_cip_truncated"),
        (send_rr(request(0x0E, b"\xe0\x00")), "enip_cip_bad_path"),
        (send_rr(request(0x0E, b"\x20\x01\x25\x00")), "enip_cip_bad_path"),
        (
            send_rr(request(0x0A, MR_PATH, struct.pack("<HHH", 2, 6, 99) + b"\x0e\x00")),
            "enip_cip_bad_multiple_service",
        ),
        (send_rr(request(0x0A, MR_PATH, struct.pack("<H", 500))), "enip_cip_bad_multiple_service"),
        (send_rr(request(0x0A, MR_PATH)), "enip_cip_bad_multiple_service"),
        (send_rr(request(0x54, CM_PATH, b"\x0a\x0e")), "enip_cip_bad_connection_service"),
        (send_rr(request(0x52, CM_PATH, b"\x0a\x0e\x40\x00\x0e")), "enip_cip_bad_unconnected_send"),
        (send_rr(b"\x8e\x00"), "enip_cip_truncated"),
        (send_rr(reply(0x0E)[:3] + b"\x04\x00"), "enip_cip_truncated"),
        (send_rr(b""), "enip_cip_truncated"),
        (encap(0x70, struct.pack("<IH", 0, 0) + cpf((0xA1, bytes(4)), (0xB1, b"\x01"))), "enip_bad_cpf_item"),
        (encap(0x63, cpf((0x000C, identity_item()[:20])), session=0), "enip_bad_identity"),
        (encap(0x63, cpf((0x000C, identity_item()[:-1])), session=0), "enip_bad_identity"),
        (
            encap(0x70, struct.pack("<IH", 0, 0) + cpf((0xA1, b"\x01"), (0xB1, b"\x01\x00\x0e\x00"))),
            "enip_bad_cpf_item",
        ),
        (b"\x63\x00\x00", "enip_truncated_header"),
    ],
)
def test_malformed_messages_are_weird_not_errors(pdu: bytes, weird: str) -> None:
    events = Collector().feed(pdu)
    assert weird in weird_names(events), weird_names(events)


def test_truncated_and_odd_udp_datagrams() -> None:
    udp = Collector(Transport.UDP)
    assert weird_names(udp.feed(b"\x02\x00\x02\x80")) == ["enip_unknown_datagram"]
    assert weird_names(udp.feed(encap(0x63, cpf((0x000C, identity_item())))[:-5])) == [
        "enip_truncated",
        "enip_bad_command_data",
    ]
    assert "enip_trailing_data" in weird_names(udp.feed(encap(0x63) + b"xx"))


def test_garbage_in_a_tcp_stream_resynchronises() -> None:
    messages = [(True, send_rr(GET_NAME)), (True, b"\xde\xad\xbe\xef" * 8), (True, send_rr(GET_NAME))]
    events, weird, _ = run(tcp_session(44818, messages))
    assert weird.counts["enip_unframeable_data"] == 1
    assert len(of(events, CipHeader)) == 2


def test_hostile_nesting_and_counts_are_bounded() -> None:
    inner = request(0x0E, IDENTITY_PATH)
    nested = inner
    for _ in range(6):
        nested = request(0x0A, MR_PATH, multiple([nested, nested]))
    events = Collector().feed(send_rr(nested))
    assert "enip_cip_too_deep" in weird_names(events)
    many = request(0x0A, MR_PATH, multiple([inner] * 256))
    lots = encap(0x6F, struct.pack("<IH", 0, 0) + cpf(*[(0xB2, many)] * 8))
    events = Collector().feed(lots)
    assert len([e for e in events if not isinstance(e, ProtocolWeird)]) == MAX_EVENTS_PER_PDU
    assert weird_names(events) == ["enip_too_many_events"]


def test_replies_without_a_seen_request_are_still_named() -> None:
    rows = of(Collector().feed(send_rr(FORWARD_OPEN_OK), is_orig=False), CipHeader)
    assert [(r.cip_service, r.class_id) for r in rows] == [("Forward Open", None)]
    rows = of(Collector().feed(send_rr(reply(0x4C)), is_orig=False), CipHeader)
    assert rows[0].cip_service == "unknown"  # 0x4C means different things in different classes


def test_epath_rendering() -> None:
    path = parse_epath(b"\x12\x0b" + b"10.10.10.10\x00" + logical(0, 0x6B) + logical(1, 0x1234) + b"\x2c\x01")
    assert path.text == "port:2,10.10.10.10/class:0x6b/instance:0x1234/connection_point:0x01"
    assert (path.class_id, path.instance_id, path.error) == (0x6B, 0x1234, None)
    path = parse_epath(b"\x22\x00" + struct.pack("<I", 0x10002) + b"\x30\x05\x80\x01\xaa\xbb\x43\x07")
    assert path.text == "class:0x10002/attribute:0x05/data:aabb/network:0x43=07"
    assert parse_epath(b"\x63abc").text == "symbol:abc"
    assert parse_epath(b"\x20").error == "truncated logical segment"


def test_vendor_table_is_loaded() -> None:
    assert vendor_name(1) == "Rockwell Automation/Allen-Bradley"
    assert vendor_name(283) == "Hilscher GmbH"
    assert vendor_name(65535) == "unknown"


def test_every_event_field_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocols" / "enip.md").read_text()
    for event_type in EnipDissector.event_types:
        assert f"`{event_type.log}`" in doc
        for name in event_fields(event_type):
            assert f"| `{name}` |" in doc, (event_type.log, name)


# ------------------------------------------------------------------------------------- fuzzing

REAL_PDUS = [m for _, m in SCENARIO] + [
    io_datagram(1, 2, b"\x00\x01data"),
    encap(0x6F, struct.pack("<IH", 0, 0) + cpf((0xB2, MSP), (0xB2, MSP_REPLY))),
]


def _exercise(dissector: EnipDissector, ctx: PduContext, data: bytes) -> None:
    size = dissector.frame(data, True)
    assert size <= len(data)
    dissector.parse(data[:size] if size > 0 else data, ctx)


def _bounded(events: list[Event]) -> bool:
    return len(events) <= MAX_EVENTS_PER_PDU + 40


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.booleans())
def test_fuzz_random_bytes(data: bytes, udp: bool) -> None:
    collector = Collector(Transport.UDP if udp else Transport.TCP)
    EnipDissector.recognize(data, collector.ctx.flow.transport, 1, 44818)
    _exercise(collector.dissector, collector.ctx, data)
    assert _bounded(collector.events)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(REAL_PDUS), st.data(), st.booleans())
def test_fuzz_mutated_real_messages(pdu: bytes, data: st.DataObject, udp: bool) -> None:
    buf = bytearray(pdu)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        pos = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif buf:
            buf[pos] = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
    collector = Collector(Transport.UDP if udp else Transport.TCP)
    EnipDissector.recognize(bytes(buf), collector.ctx.flow.transport, 1, 44818)
    for is_orig in (True, False):
        collector.ctx.is_orig = is_orig
        _exercise(collector.dissector, collector.ctx, bytes(buf))
    assert _bounded(collector.events)
