"""BACnet/IP dissector: golden comparison with ICSNPP-BACnet and tshark, spec-built PDUs, fuzzing.

Golden reference: ``bacnet/bacnet_example.pcap`` -> ``expected/analyzer.basic/{bacnet, bacnet_discovery,
bacnet_property}.log``, the baselines of CISA ICSNPP-BACnet's ``basic`` btest. Every row is compared
field by field, per flow and in order, in the column order of the cisagov/icsnpp-bacnet README (the
baselines' ``#fields`` line is checked against it); uids are ignored and, the timestamps being masked,
``ts`` is compared with the capture time of each frame as tshark reports it. Fields the ICSNPP logs lack
(NPDU control, segmentation flags, I-Am max APDU / segmentation / vendor id, value types and values,
error class and code, ReinitializeDevice state and password presence, the BVLC length defects of this
capture) are compared with tshark's PDML dissection of the same frames.

Everything the capture lacks is built byte by byte from ANSI/ASHRAE 135 (BVLC Annex J, NPDU clause 6,
APDU clause 20.1, tags clause 20.2, services clauses 13-17) and checked twice: against the spec values
it was built from, and against tshark's dissection of the same bytes. ICSNPP's own Forwarded-NPDU test
frames (``testing/traces/make_bacnet_forwarded_npdu.py``) are rebuilt and compared with that test's
baselines. Recognition is by content (other port found, other protocols on 47808 refused); hypothesis
feeds truncated and mutated real datagrams to ``parse`` (never an exception, malformed input weird).
"""

from __future__ import annotations

import dataclasses
import re
import socket
import struct
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from fieldward.capture.batch import PacketBatch
from fieldward.decode.flows import FlowTable
from fieldward.decode.l2l4 import decode_batch
from fieldward.pipeline import analyze
from fieldward.protocols.bacnet import (
    MAX_ROWS,
    BacnetCov,
    BacnetDeviceControl,
    BacnetDiscovery,
    BacnetDissector,
    BacnetFile,
    BacnetHeader,
    BacnetProperty,
    BacnetTimeSync,
)
from fieldward.protocols.base import (
    Event,
    FlowInfo,
    PduContext,
    ProtocolWeird,
    Transport,
    Verdict,
    event_fields,
    event_schema,
)
from fieldward.protocols.engine import ProtocolEngine
from fieldward.protocols.registry import Registry
from fieldward.weird import WeirdLog

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "bacnet.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "bacnet.py"
CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
PORT = 47808

# ----------------------------------------------------------------- encoders (ASHRAE 135 clause 20)


def tag(number: int, data: bytes, *, context: bool = False) -> bytes:
    """A primitive tag (20.2.1): number (extended above 14), class bit, length (extended above 4)."""
    first = (min(number, 15) << 4) | (0x08 if context else 0)
    extended = bytes([number]) if number >= 15 else b""
    size = len(data)
    if size <= 4:
        return bytes([first | size]) + extended + data
    if size <= 253:
        length = bytes([size])
    elif size <= 0xFFFF:
        length = b"\xfe" + size.to_bytes(2, "big")
    else:
        length = b"\xff" + size.to_bytes(4, "big")
    return bytes([first | 5]) + extended + length + data


def uint(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def obj(object_type: int, instance: int) -> bytes:
    """BACnetObjectIdentifier (20.2.14): 10-bit type, 22-bit instance."""
    return ((object_type << 22) | instance).to_bytes(4, "big")


def chars(text: str) -> bytes:
    return b"\x00" + text.encode()  # character set 0: UTF-8


def app_unsigned(value: int) -> bytes:
    return tag(2, uint(value))


def app_enum(value: int) -> bytes:
    return tag(9, uint(value))


def app_real(value: float) -> bytes:
    return tag(4, struct.pack(">f", value))


def app_bool(value: bool) -> bytes:
    return bytes([0x10 | int(value)])  # application BOOLEAN keeps its value in L/V/T


def app_obj(object_type: int, instance: int) -> bytes:
    return tag(12, obj(object_type, instance))


def app_string(text: str) -> bytes:
    return tag(7, chars(text))


APP_NULL = b"\x00"


def ctx_unsigned(number: int, value: int) -> bytes:
    return tag(number, uint(value), context=True)


def ctx_obj(number: int, object_type: int, instance: int) -> bytes:
    return tag(number, obj(object_type, instance), context=True)


def opening(number: int) -> bytes:
    return bytes([(number << 4) | 0x0E])


def closing(number: int) -> bytes:
    return bytes([(number << 4) | 0x0F])


def wrapped(number: int, *parts: bytes) -> bytes:
    return opening(number) + b"".join(parts) + closing(number)


# APDUs (clause 20.1)


def confirmed(
    invoke: int, service: int, body: bytes = b"", *, seg: tuple[int, int] | None = None, more: bool = False
) -> bytes:
    flags = (0x08 if seg else 0) | (0x04 if more else 0) | 0x02  # SA: segmented response accepted
    return bytes([flags, 0x05, invoke]) + (bytes(seg) if seg else b"") + bytes([service]) + body


def unconfirmed(service: int, body: bytes = b"") -> bytes:
    return bytes([0x10, service]) + body


def simple_ack(invoke: int, service: int) -> bytes:
    return bytes([0x20, invoke, service])


def complex_ack(
    invoke: int, service: int, body: bytes, *, seg: tuple[int, int] | None = None, more: bool = False
) -> bytes:
    flags = (0x08 if seg else 0) | (0x04 if more else 0)
    return bytes([0x30 | flags, invoke]) + (bytes(seg) if seg else b"") + bytes([service]) + body


def segment_ack(invoke: int, sequence: int, window: int) -> bytes:
    return bytes([0x40, invoke, sequence, window])


def error_pdu(invoke: int, service: int, error_class: int, error_code: int) -> bytes:
    return bytes([0x50, invoke, service]) + app_enum(error_class) + app_enum(error_code)


def reject_pdu(invoke: int, reason: int) -> bytes:
    return bytes([0x60, invoke, reason])


def abort_pdu(invoke: int, reason: int, *, server: bool = True) -> bytes:
    return bytes([0x70 | int(server), invoke, reason])


# NPDU (clause 6.2) and BVLC (Annex J.2)


def npdu(
    apdu: bytes,
    *,
    dnet: int | None = None,
    dadr: bytes = b"",
    snet: int | None = None,
    sadr: bytes = b"",
    hop: int = 255,
    reply: bool = False,
    network_message: int | None = None,
) -> bytes:
    control = (0x80 if network_message is not None else 0) | (0x04 if reply else 0)
    control |= (0x20 if dnet is not None else 0) | (0x08 if snet is not None else 0)
    out = bytes([0x01, control])
    if dnet is not None:
        out += struct.pack(">HB", dnet, len(dadr)) + dadr
    if snet is not None:
        out += struct.pack(">HB", snet, len(sadr)) + sadr
    if dnet is not None:
        out += bytes([hop])
    if network_message is not None:
        out += bytes([network_message])
    return out + apdu


def bvlc(function: int, body: bytes) -> bytes:
    return struct.pack(">BBH", 0x81, function, 4 + len(body)) + body


def unicast(apdu: bytes, **kw: Any) -> bytes:
    return bvlc(0x0A, npdu(apdu, **kw))


def broadcast(apdu: bytes, **kw: Any) -> bytes:
    return bvlc(0x0B, npdu(apdu, **kw))


def forwarded(ip: str, port: int, npdu_bytes: bytes) -> bytes:
    return bvlc(0x04, socket.inet_aton(ip) + struct.pack(">H", port) + npdu_bytes)


# Spec numbers used below (clause 21): services, objects, properties, errors.
READ_PROPERTY, READ_PROPERTY_MULTIPLE, WRITE_PROPERTY, WRITE_PROPERTY_MULTIPLE = 12, 14, 15, 16
DEVICE_COMMUNICATION_CONTROL, REINITIALIZE_DEVICE, SUBSCRIBE_COV, ATOMIC_READ_FILE = 17, 20, 5, 6
I_AM, I_HAVE, TIME_SYNC, WHO_HAS, WHO_IS, UTC_TIME_SYNC = 0, 1, 6, 7, 8, 9
ANALOG_INPUT, ANALOG_OUTPUT, ANALOG_VALUE, DEVICE, FILE = 0, 1, 2, 8, 10
OBJECT_LIST, OBJECT_NAME, PRESENT_VALUE, UNITS = 76, 77, 85, 117

# ------------------------------------------------------------------------------------ harnesses


def udp_packets(datagrams: list[tuple[bool, bytes]], sport: int = PORT, dport: int = PORT) -> list[bytes]:
    out = []
    for from_client, payload in datagrams:
        src, dst, sp, dp = (CLIENT, SERVER, sport, dport) if from_client else (SERVER, CLIENT, dport, sport)
        out.append(bytes(Ether() / IP(src=src, dst=dst) / UDP(sport=sp, dport=dp) / payload))
    return out


def run(packets: list[bytes]) -> tuple[list[Event], WeirdLog, ProtocolEngine]:
    """The protocol engine with this dissector only over built packets (packet i at i seconds)."""
    weird = WeirdLog()
    events: list[Event] = []
    registry = Registry()
    registry.add(BacnetDissector)
    engine = ProtocolEngine(registry, events.append, weird)
    flows = FlowTable(weird=weird)
    batch = PacketBatch.from_packets(packets, ts_ns=[i * 10**9 for i in range(len(packets))])
    decoded = decode_batch(batch, weird)
    engine.process(batch, decoded, flows.update(batch, decoded))
    engine.finish()
    return events, weird, engine


class Collector:
    """Sans-io: one dissector instance and a context collecting its events and weirds."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        flow = FlowInfo(1, Transport.UDP, CLIENT, PORT, SERVER, PORT)
        self.ctx = PduContext(flow, "bacnet", self.events.append, self.events.append)
        self.dissector = BacnetDissector(flow)

    def feed(self, pdu: bytes, is_orig: bool = True) -> list[Event]:
        start = len(self.events)
        self.ctx.is_orig = is_orig
        self.dissector.parse(pdu, self.ctx)
        return self.events[start:]


def of(events: list[Event], kind: type[Event]) -> list[Any]:
    return [e for e in events if type(e) is kind]


def weird_names(events: list[Event]) -> list[str]:
    return [e.name for e in events if isinstance(e, ProtocolWeird)]


def one(events: list[Event], kind: type[Event]) -> Any:
    (event,) = of(events, kind)
    return event


# ------------------------------------------------------------------------------- tshark (PDML)


@dataclass
class Frame:
    """One frame of tshark's PDML: capture time, UDP length and the BACnet protocol trees."""

    number: int
    ts: int
    udp_length: int
    protos: dict[str, ET.Element]

    def named(self, name: str) -> list[ET.Element]:
        return [f for p in self.protos.values() for f in p.iter("field") if f.get("name") == name]

    def values(self, name: str) -> list[str]:
        return [f.get("show", "") for f in self.named(name)]

    def first(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None

    def texts(self) -> Iterator[str]:
        """Display texts of every field (unnamed fields carry theirs in ``show``)."""
        for proto in self.protos.values():
            for f in proto.iter("field"):
                yield f.get("showname") or f.get("show") or ""

    def text(self, pattern: str) -> re.Match[str] | None:
        for t in self.texts():
            m = re.match(pattern, t)
            if m:
                return m
        return None

    def property_value(self) -> ET.Element | None:
        """The field between the ReadProperty-ACK's opening and closing tag [3]."""
        proto = self.protos.get("bacapp")
        children = list(proto) if proto is not None else []
        shows = [c.get("show") for c in children]
        if "{[3]" not in shows:
            return None
        return children[shows.index("{[3]") + 1]


def pdml(tshark: str, capture: Path, display: str = "bvlc") -> list[Frame]:
    cmd = [tshark, "-r", str(capture), "-Y", display, "-T", "pdml"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    frames = []
    for packet in ET.fromstring(out).iter("packet"):
        protos = {p.get("name", ""): p for p in packet.iter("proto")}
        geninfo = {f.get("name"): f for f in protos["geninfo"].iter("field")}
        secs, _, frac = geninfo["timestamp"].get("value", "").partition(".")
        udp_len = [f.get("show", "0") for f in protos["udp"].iter("field") if f.get("name") == "udp.length"]
        frames.append(
            Frame(
                number=int(geninfo["num"].get("show", "0")),
                ts=int(secs) * 10**9 + int(frac[:9].ljust(9, "0")),
                udp_length=int(udp_len[0]),
                protos={k: v for k, v in protos.items() if k in ("bvlc", "bacnet", "bacapp")},
            )
        )
    return frames


def hexint(text: str | None) -> int | None:
    return None if text is None else int(text, 0)


# ----------------------------------------------------------------------------- golden (ICSNPP)

ICSNPP_IDS = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "is_orig"]
ICSNPP_IDS += ["source_h", "source_p", "destination_h", "destination_p"]
# Column order of each log (README of cisagov/icsnpp-bacnet, "Logging Capabilities"; bacnet_discovery
# also carries device_id_type / device_id_number since ICSNPP logs I-Have's device identifier).
ICSNPP_COLUMNS: dict[str, tuple[str, ...]] = {
    "bacnet": ("bvlc_function", "pdu_type", "pdu_service", "invoke_id", "result_code"),
    "bacnet_discovery": (
        "pdu_service",
        "device_id_type",
        "device_id_number",
        "object_type",
        "instance_number",
        "vendor",
        "range",
        "object_name",
    ),
    "bacnet_property": (
        "invoke_id",
        "pdu_service",
        "object_type",
        "instance_number",
        "property",
        "array_index",
        "value",
    ),
}


def icsnpp_text(column: str, value: object) -> str:
    """How ICSNPP prints a value: '-' unset, T/F, and vendor names without commas (its table drops
    them: 'Yamatake Building Systems Co., Ltd.' is 'Yamatake Building Systems Co. Ltd.' there)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "T" if value else "F"
    if column == "vendor":
        return str(value).replace(",", "")
    return str(value)


def endpoints(row: dict[str, Any]) -> tuple[str, ...]:
    ids = (row["orig_h"], str(row["orig_p"]), row["resp_h"], str(row["resp_p"]))
    sender = ids if row["is_orig"] else ids[2:] + ids[:2]
    return (*ids, "T" if row["is_orig"] else "F", *sender)


def icsnpp_row(log: str, row: dict[str, Any]) -> tuple[str, ...]:
    return (*endpoints(row), *(icsnpp_text(c, row[c]) for c in ICSNPP_COLUMNS[log]))


def per_flow(rows: list[tuple[str, ...]]) -> dict[tuple[str, ...], list[tuple[str, ...]]]:
    flows: dict[tuple[str, ...], list[tuple[str, ...]]] = defaultdict(list)
    for row in rows:
        flows[row[:4]].append(row)
    return dict(flows)


def read_log(path: Path) -> tuple[list[str], list[tuple[str, ...]]]:
    lines = path.read_text().splitlines()
    header = next(line.split("\t")[1:] for line in lines if line.startswith("#fields"))
    rows = [tuple(line.split("\t")) for line in lines if line and not line.startswith("#")]
    return header, rows


def read_events(out: Path, log: str) -> list[dict[str, Any]]:
    path = out / "events" / f"{log}.parquet"
    if not path.exists():
        return []
    table = pq.read_table(path)
    table = table.set_column(table.schema.get_field_index("ts"), "ts", table["ts"].cast(pa.int64()))
    return sorted(table.to_pylist(), key=lambda r: r["ts"])  # stable: one datagram's events keep order


@pytest.fixture(scope="module")
def golden(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("bacnet")
    capture = corpus / "bacnet" / "bacnet_example.pcap"
    analyze([capture], out)
    return capture, out


@pytest.fixture(scope="module")
def golden_frames(golden: tuple[Path, Path], tshark: str) -> list[Frame]:
    return pdml(tshark, golden[0])


@pytest.mark.parametrize(
    ("log", "count"), [("bacnet", 3257), ("bacnet_discovery", 217), ("bacnet_property", 2800)]
)
def test_golden_icsnpp_logs(golden: tuple[Path, Path], corpus: Path, log: str, count: int) -> None:
    _, out = golden
    header, lines = read_log(corpus / "bacnet" / "expected" / "analyzer.basic" / f"{log}.log")
    assert header == ICSNPP_IDS + list(ICSNPP_COLUMNS[log])
    expected = [line[2:] for line in lines]  # ts is masked, uid is Zeek's
    ours = [icsnpp_row(log, r) for r in read_events(out, log)]
    assert len(expected) == len(ours) == count
    # Same rows flow by flow and in order (the interleaving of flows in a log may differ).
    assert per_flow(ours) == per_flow(expected)


def test_golden_timestamps_and_headers_match_tshark(
    golden: tuple[Path, Path], golden_frames: list[Frame]
) -> None:
    """One bacnet.log row per frame, at the frame's capture time, with tshark's header fields."""
    _, out = golden
    headers = read_events(out, "bacnet")
    assert len(headers) == len(golden_frames) == 3257
    apdu_types = ["CONFIRMED_REQUEST", "UNCONFIRMED_REQUEST", "SIMPLE_ACK", "COMPLEX_ACK"]
    apdu_types += ["SEGMENT_ACK", "ERROR_PDU", "REJECT_PDU", "ABORT_PDU"]
    for row, frame in zip(headers, golden_frames, strict=True):
        assert row["ts"] == frame.ts, frame.number
        function = re.sub(r" \(0x..\)$", "", frame.text(r"Function: (.*)")[1])  # type: ignore[index]
        assert row["bvlc_function"].lower() == function.replace("-", "_").lower()
        assert row["npdu_version"] == int(frame.first("bacnet.version") or -1)
        assert row["npdu_control"] == hexint(frame.first("bacnet.control"))
        assert row["pdu_type"] == apdu_types[int(frame.first("bacapp.type") or -1)]
        assert row["invoke_id"] == hexint(frame.first("bacapp.invoke_id"))
        if row["pdu_type"] in ("CONFIRMED_REQUEST", "COMPLEX_ACK"):
            assert row["segmented"] is (frame.first("bacapp.segmented_request") == "1")
            assert row["more_follows"] is (frame.first("bacapp.more_segments") == "1")
        else:
            assert row["segmented"] is None
        assert row["dnet"] == hexint(frame.first("bacnet.dnet"))
        assert row["dlen"] == hexint(frame.first("bacnet.dlen"))
        assert row["hop_count"] == hexint(frame.first("bacnet.hopc"))
        assert (row["snet"], row["fwd_ip"]) == (hexint(frame.first("bacnet.snet")), None)


def test_golden_bvlc_length_defects_are_the_only_weirds(
    golden: tuple[Path, Path], golden_frames: list[Frame]
) -> None:
    """The capture's generator wrote BVLC length 17 into every ReinitializeDevice exchange: tshark flags
    the same frames ('invalid length'), and nothing else in the capture is malformed."""
    _, out = golden
    bad = [f for f in golden_frames if f.text(r"BVLC-Length: .*invalid length")]
    assert all(hexint("0x" + (f.named("bvlc.length")[0].get("value") or "")) != f.udp_length - 8 for f in bad)
    weirds = [r for r in read_events(out, "weird") if r["protocol"] == "bacnet"]
    assert (
        [w["name"] for w in weirds]
        == ["bacnet_bvlc_length_mismatch"] * len(bad)
        == ["bacnet_bvlc_length_mismatch"] * 240
    )
    assert [w["ts"] for w in weirds] == [f.ts for f in bad]


def test_golden_i_am_fields_match_tshark(golden: tuple[Path, Path], golden_frames: list[Frame]) -> None:
    _, out = golden
    i_ams = [r for r in read_events(out, "bacnet_discovery") if r["pdu_service"] == "i-am"]
    frames = [f for f in golden_frames if f.first("bacapp.unconfirmed_service") == "0"]
    assert len(i_ams) == len(frames) == 210
    for row, frame in zip(i_ams, frames, strict=True):
        assert row["ts"] == frame.ts
        assert (row["object_type"], row["instance_number"]) == (
            "device",
            int(frame.first("bacapp.instance_number") or -1),
        )
        assert frame.first("bacapp.objectType") == "8"
        max_apdu = frame.text(r"Maximum ADPU Length Accepted: \(Unsigned\) (\d+)")
        segmentation = frame.text(r"Segmentation Supported:\s+(\S+) \((\d+)\)")
        vendor = frame.text(r"Vendor Identifier: (.*) \((\d+)\)$")
        assert max_apdu
        assert segmentation
        assert vendor
        assert row["max_apdu"] == int(max_apdu[1])
        assert row["segmentation"] == segmentation[1]
        assert row["vendor_id"] == int(vendor[2]) == int(frame.first("bacapp.vendor_identifier") or -1)
        assert row["vendor"] == vendor[1]  # the ASHRAE registry as tshark carries it, commas and all


def _tshark_value(field: ET.Element) -> tuple[str, str]:
    """(application tag name, display value) of a property value field in tshark's PDML."""
    tag_text = next(
        f.get("show", "") for f in field.iter("field") if f.get("show", "").startswith("Application Tag")
    )
    tag_name = re.match(r"Application Tag: (.*?)(?: \(.*\))?, Length", tag_text)[1]  # type: ignore[index]
    named = [f for f in field.iter("field") if f.get("name") == "bacapp.object_name"]
    if field.get("name") == "bacapp.present_value.real":
        return tag_name, field.get("show", "")
    if named:
        return tag_name, named[0].get("show", "")
    text = field.get("show", "").split(": ", 1)[1].strip()
    quoted = re.match(r"UTF-8 '(.*)'$", text)
    if quoted:
        return tag_name, quoted[1]
    return tag_name, re.sub(r" \(\d+\)$", "", text).lower().replace(" ", "-")


def test_golden_property_values_match_tshark(golden: tuple[Path, Path], golden_frames: list[Frame]) -> None:
    """Value type and value of every ReadProperty-ACK, and the property of every request."""
    _, out = golden
    rows = read_events(out, "bacnet_property")
    frames = [f for f in golden_frames if f.first("bacapp.confirmed_service") == "12"]
    assert len(rows) == len(frames) == 2800
    type_names = {
        "Character String": "character-string",
        "Enumerated": "enumerated",
        "Boolean": "boolean",
        "Real": "real",
    }
    seen: Counter[str] = Counter()
    for row, frame in zip(rows, frames, strict=True):
        assert row["ts"] == frame.ts
        assert row["instance_number"] == int(frame.first("bacapp.instance_number") or -1)
        prop = frame.text(r"Property Identifier: (\S+) \((\d+)\)")
        assert prop
        assert row["property"] == prop[1]
        field = frame.property_value()
        if row["pdu_service"] == "read-property-request":
            assert field is None
            assert row["value"] is None
            assert row["value_type"] is None
            continue
        assert field is not None
        tag_name, text = _tshark_value(field)
        assert row["value_type"] == type_names[tag_name]
        seen[row["value_type"]] += 1
        if row["value_type"] == "real":
            assert float(row["value"]) == pytest.approx(float(text), abs=1e-6)
        else:
            assert row["value"] == text
        assert row["values"] == [row["value"]]
    # tshark counts 760 character strings, 710 enumerated (210 I-Am segmentation, 180 error class/code),
    # 160 booleans and 160 reals in the capture: the ACKs hold all the strings, booleans and reals.
    assert seen == {"character-string": 760, "enumerated": 710 - 210 - 180, "boolean": 160, "real": 160}


def test_golden_reinitialize_device_matches_tshark(
    golden: tuple[Path, Path], golden_frames: list[Frame]
) -> None:
    """ReinitializeDevice requests and their results (bacnet_device_control, not in the golden logs)."""
    _, out = golden
    rows = read_events(out, "bacnet_device_control")
    frames = [f for f in golden_frames if f.first("bacapp.confirmed_service") == "20"]
    assert len(rows) == len(frames) == 240
    results: Counter[str | None] = Counter()
    for row, frame in zip(rows, frames, strict=True):
        assert row["ts"] == frame.ts
        assert row["invoke_id"] == int(frame.first("bacapp.invoke_id") or -1)
        assert row["pdu_service"] == "reinitialize_device"
        kind = frame.first("bacapp.type")
        if kind == "0":
            state = frame.text(r"reinitialized State Of Device:\s+(\S+) \((\d+)\)")
            assert state
            assert row["device_state"] == state[1]
            assert row["password_present"] is (frame.text(r"Password: ") is not None)
            assert row["result"] is None
        elif kind == "5":
            code = frame.text(r"Error Code: (\S+) \((\d+)\)")
            assert code
            assert (row["result"], row["result_code"]) == ("ERROR", code[1])
        else:
            assert kind == "2"
            assert (row["result"], row["result_code"]) == ("SUCCESS", None)
        results[row["result"]] += 1
    assert results == {None: 120, "ERROR": 90, "SUCCESS": 30}


# ------------------------------------------------------------------ built scenario (spec + tshark)

FILE_DATA = bytes(range(16))
SCENARIO: list[tuple[bool, bytes]] = [
    # discovery (clause 16.10)
    (True, broadcast(unconfirmed(WHO_IS, ctx_unsigned(0, 100) + ctx_unsigned(1, 200)), dnet=0xFFFF)),
    (
        False,
        unicast(unconfirmed(I_AM, app_obj(DEVICE, 150) + app_unsigned(1476) + app_enum(0) + app_unsigned(5))),
    ),
    (True, broadcast(unconfirmed(WHO_HAS, tag(3, chars("Pump-1"), context=True)))),
    (
        False,
        unicast(unconfirmed(I_HAVE, app_obj(DEVICE, 150) + app_obj(ANALOG_OUTPUT, 3) + app_string("Pump-1"))),
    ),
    # ReadProperty (15.5) and its ACK, with an array index
    (
        True,
        unicast(
            confirmed(1, READ_PROPERTY, ctx_obj(0, ANALOG_INPUT, 7) + ctx_unsigned(1, PRESENT_VALUE)),
            reply=True,
        ),
    ),
    (
        False,
        unicast(
            complex_ack(
                1,
                READ_PROPERTY,
                ctx_obj(0, ANALOG_INPUT, 7) + ctx_unsigned(1, PRESENT_VALUE) + wrapped(3, app_real(21.5)),
            )
        ),
    ),
    (
        True,
        unicast(
            confirmed(
                2, READ_PROPERTY, ctx_obj(0, DEVICE, 150) + ctx_unsigned(1, OBJECT_LIST) + ctx_unsigned(2, 0)
            ),
            reply=True,
        ),
    ),
    (
        False,
        unicast(
            complex_ack(
                2,
                READ_PROPERTY,
                ctx_obj(0, DEVICE, 150)
                + ctx_unsigned(1, OBJECT_LIST)
                + ctx_unsigned(2, 0)
                + wrapped(3, app_unsigned(3)),
            )
        ),
    ),
    # WriteProperty (15.9) with priority 8, then a relinquish (NULL) refused with an Error-PDU
    (
        True,
        unicast(
            confirmed(
                3,
                WRITE_PROPERTY,
                ctx_obj(0, ANALOG_OUTPUT, 3)
                + ctx_unsigned(1, PRESENT_VALUE)
                + wrapped(3, app_real(42.0))
                + ctx_unsigned(4, 8),
            ),
            reply=True,
        ),
    ),
    (False, unicast(simple_ack(3, WRITE_PROPERTY))),
    (
        True,
        unicast(
            confirmed(
                4,
                WRITE_PROPERTY,
                ctx_obj(0, ANALOG_OUTPUT, 3)
                + ctx_unsigned(1, PRESENT_VALUE)
                + wrapped(3, APP_NULL)
                + ctx_unsigned(4, 8),
            ),
            reply=True,
        ),
    ),
    (False, unicast(error_pdu(4, WRITE_PROPERTY, 2, 40))),  # property / write-access-denied
    # ReadPropertyMultiple (15.7): two objects, then an ACK with a value and a property access error
    (
        True,
        unicast(
            confirmed(
                5,
                READ_PROPERTY_MULTIPLE,
                ctx_obj(0, ANALOG_INPUT, 7)
                + wrapped(1, ctx_unsigned(0, PRESENT_VALUE), ctx_unsigned(0, UNITS))
                + ctx_obj(0, DEVICE, 150)
                + wrapped(1, ctx_unsigned(0, OBJECT_NAME)),
            ),
            reply=True,
        ),
    ),
    (
        False,
        unicast(
            complex_ack(
                5,
                READ_PROPERTY_MULTIPLE,
                ctx_obj(0, ANALOG_INPUT, 7)
                + wrapped(
                    1,
                    ctx_unsigned(2, PRESENT_VALUE),
                    wrapped(4, app_real(21.5)),
                    ctx_unsigned(2, UNITS),
                    wrapped(4, app_enum(62)),
                )
                + ctx_obj(0, DEVICE, 150)
                + wrapped(1, ctx_unsigned(2, OBJECT_NAME), wrapped(5, app_enum(2), app_enum(32))),
            )
        ),
    ),
    # WritePropertyMultiple (15.10)
    (
        True,
        unicast(
            confirmed(
                6,
                WRITE_PROPERTY_MULTIPLE,
                ctx_obj(0, ANALOG_VALUE, 1)
                + wrapped(1, ctx_unsigned(0, PRESENT_VALUE), wrapped(2, app_real(5.0)), ctx_unsigned(3, 10)),
            ),
            reply=True,
        ),
    ),
    (False, unicast(simple_ack(6, WRITE_PROPERTY_MULTIPLE))),
    # DeviceCommunicationControl (16.1) and ReinitializeDevice (16.4) with their four kinds of result
    (
        True,
        unicast(
            confirmed(
                7,
                DEVICE_COMMUNICATION_CONTROL,
                ctx_unsigned(0, 30) + ctx_unsigned(1, 1) + tag(2, chars("secret"), context=True),
            ),
            reply=True,
        ),
    ),
    (False, unicast(simple_ack(7, DEVICE_COMMUNICATION_CONTROL))),
    (
        True,
        unicast(
            confirmed(8, REINITIALIZE_DEVICE, ctx_unsigned(0, 1) + tag(1, chars("x"), context=True)),
            reply=True,
        ),
    ),
    (False, unicast(error_pdu(8, REINITIALIZE_DEVICE, 5, 26))),  # services / password-failure
    (True, unicast(confirmed(9, REINITIALIZE_DEVICE, ctx_unsigned(0, 0)), reply=True)),
    (False, unicast(reject_pdu(9, 4))),  # invalid-tag
    (True, unicast(confirmed(10, DEVICE_COMMUNICATION_CONTROL, ctx_unsigned(1, 0)), reply=True)),
    (False, unicast(abort_pdu(10, 4))),  # segmentation-not-supported, by the server
    # TimeSynchronization / UTC-TimeSynchronization (16.7, 16.8): Tuesday 2024-03-05 13:45:30.25
    (
        True,
        broadcast(unconfirmed(TIME_SYNC, tag(10, bytes([124, 3, 5, 2])) + tag(11, bytes([13, 45, 30, 25])))),
    ),
    (
        True,
        broadcast(
            unconfirmed(UTC_TIME_SYNC, tag(10, bytes([124, 3, 5, 255])) + tag(11, bytes([12, 45, 30, 0])))
        ),
    ),
    # SubscribeCOV (13.14) and AtomicReadFile (14.1)
    (
        True,
        unicast(
            confirmed(
                11,
                SUBSCRIBE_COV,
                ctx_unsigned(0, 18)
                + ctx_obj(1, ANALOG_INPUT, 7)
                + tag(2, b"\x01", context=True)
                + ctx_unsigned(3, 300),
            ),
            reply=True,
        ),
    ),
    (False, unicast(simple_ack(11, SUBSCRIBE_COV))),
    (
        True,
        unicast(
            confirmed(
                12, ATOMIC_READ_FILE, app_obj(FILE, 2) + wrapped(0, tag(3, b"\x00"), app_unsigned(512))
            ),
            reply=True,
        ),
    ),
    (
        False,
        unicast(
            complex_ack(12, ATOMIC_READ_FILE, app_bool(True) + wrapped(0, tag(3, b"\x00"), tag(6, FILE_DATA)))
        ),
    ),
]

# A segmented ReadProperty-ACK (clause 5.4): the object list in two segments, each acknowledged.
OBJECT_LIST_ACK = (
    ctx_obj(0, DEVICE, 150)
    + ctx_unsigned(1, OBJECT_LIST)
    + wrapped(3, app_obj(DEVICE, 150), app_obj(ANALOG_INPUT, 7), app_obj(ANALOG_OUTPUT, 3))
)
SEGMENTED: list[tuple[bool, bytes]] = [
    (
        True,
        unicast(
            confirmed(13, READ_PROPERTY, ctx_obj(0, DEVICE, 150) + ctx_unsigned(1, OBJECT_LIST)), reply=True
        ),
    ),
    (False, unicast(complex_ack(13, READ_PROPERTY, OBJECT_LIST_ACK[:12], seg=(0, 2), more=True), reply=True)),
    (True, unicast(segment_ack(13, 0, 2))),
    (False, unicast(complex_ack(13, READ_PROPERTY, OBJECT_LIST_ACK[12:], seg=(1, 2)))),
    (True, unicast(segment_ack(13, 1, 2))),
]


@pytest.fixture(scope="module")
def scenario() -> list[Event]:
    events, weird, engine = run(udp_packets(SCENARIO + SEGMENTED))
    assert engine.flows_by_protocol == {"bacnet": 1}
    assert weird.total == 0, weird.counts
    return events


def frame_events(events: list[Event]) -> dict[int, list[Event]]:
    """Events by packet index (``run`` stamps packet i at i seconds)."""
    grouped: dict[int, list[Event]] = defaultdict(list)
    for e in events:
        grouped[e.ts // 10**9].append(e)
    return grouped


def test_scenario_events_follow_the_spec(scenario: list[Event]) -> None:
    by_frame = frame_events(scenario)
    headers = of(scenario, BacnetHeader)
    assert len(headers) == len(SCENARIO) + len(SEGMENTED)  # one header per datagram
    who_is, i_am, who_has, i_have = (one(by_frame[i], BacnetDiscovery) for i in range(4))
    assert (who_is.range, who_is.low_limit, who_is.high_limit) == ("100-200", 100, 200)
    assert (i_am.object_type, i_am.instance_number, i_am.max_apdu, i_am.segmentation) == (
        "device",
        150,
        1476,
        "segmented-both",
    )
    assert (i_am.vendor_id, i_am.device_id_number) == (5, None)
    assert (who_has.object_name, who_has.range, who_has.object_type) == ("Pump-1", "All", None)
    assert (i_have.device_id_type, i_have.device_id_number) == ("device", 150)
    assert (i_have.object_type, i_have.instance_number, i_have.object_name) == ("analog-output", 3, "Pump-1")
    assert headers[0].dnet == 0xFFFF
    assert headers[0].dlen == 0
    assert headers[0].hop_count == 255

    rp, rp_ack = one(by_frame[4], BacnetProperty), one(by_frame[5], BacnetProperty)
    assert (rp.pdu_service, rp.object_type, rp.instance_number, rp.property, rp.value) == (
        "read-property-request",
        "analog-input",
        7,
        "present-value",
        None,
    )
    assert (rp_ack.pdu_service, rp_ack.value, rp_ack.value_type, rp_ack.invoke_id) == (
        "read-property-ack",
        "21.500000",
        "real",
        1,
    )
    indexed = one(by_frame[7], BacnetProperty)
    assert (indexed.property, indexed.array_index, indexed.value, indexed.value_type) == (
        "object-list",
        0,
        "3",
        "unsigned",
    )
    write, relinquish = one(by_frame[8], BacnetProperty), one(by_frame[10], BacnetProperty)
    assert (write.pdu_service, write.value, write.priority, write.value_type) == (
        "write-property",
        "42.000000",
        8,
        "real",
    )
    assert (relinquish.value, relinquish.values, relinquish.value_type, relinquish.priority) == (
        None,
        ["null"],
        "null",
        8,
    )
    refused = one(by_frame[11], BacnetHeader)
    assert (refused.pdu_type, refused.error_class, refused.result_code) == (
        "ERROR_PDU",
        "property",
        "write-access-denied",
    )

    rpm = of(by_frame[12], BacnetProperty)
    assert [(r.object_type, r.instance_number, r.property) for r in rpm] == [
        ("analog-input", 7, "present-value"),
        ("analog-input", 7, "units"),
        ("device", 150, "object-name"),
    ]
    assert {r.pdu_service for r in rpm} == {"read-property-multiple-request"}
    rpm_ack = of(by_frame[13], BacnetProperty)
    assert [(r.property, r.value, r.value_type, r.error_class, r.result_code) for r in rpm_ack] == [
        ("present-value", "21.500000", "real", None, None),
        ("units", "degrees-celsius", "enumerated", None, None),  # BACnetEngineeringUnits 62
        ("object-name", "PropertyError", "error", "property", "unknown-property"),
    ]
    wpm = one(by_frame[14], BacnetProperty)
    assert (wpm.pdu_service, wpm.object_type, wpm.value, wpm.priority) == (
        "write-property-multiple",
        "analog-value",
        "5.000000",
        10,
    )

    controls = of(scenario, BacnetDeviceControl)
    assert [
        (c.invoke_id, c.pdu_service, c.is_orig, c.device_state, c.time_duration, c.password_present)
        for c in controls
        if c.is_orig
    ] == [
        (7, "device_communication_control", True, "disable", 30, True),
        (8, "reinitialize_device", True, "warmstart", None, True),
        (9, "reinitialize_device", True, "coldstart", None, False),
        (10, "device_communication_control", True, "enable", None, False),
    ]
    assert [(c.invoke_id, c.pdu_service, c.result, c.result_code) for c in controls if not c.is_orig] == [
        (7, "device_communication_control", "SUCCESS", None),
        (8, "reinitialize_device", "ERROR", "password-failure"),
        (9, "reinitialize_device", "REJECT", "invalid-tag"),
        (10, "device_communication_control", "ABORT", "segmentation-not-supported"),
    ]
    reject, abort = one(by_frame[21], BacnetHeader), one(by_frame[23], BacnetHeader)
    assert (reject.pdu_type, reject.pdu_service, reject.result_code) == (
        "REJECT_PDU",
        "reject",
        "invalid-tag",
    )
    assert (abort.pdu_type, abort.pdu_service, abort.result_code) == (
        "ABORT_PDU",
        "abort",
        "segmentation-not-supported",
    )

    sync, utc = of(scenario, BacnetTimeSync)
    assert (sync.pdu_service, sync.year, sync.month, sync.day, sync.day_of_week) == (
        "time-synchronization",
        2024,
        3,
        5,
        2,
    )
    assert (sync.hour, sync.minute, sync.second, sync.hundredths) == (13, 45, 30, 25)
    assert (utc.pdu_service, utc.day_of_week, utc.hour) == (
        "utc-time-synchronization",
        None,
        12,
    )  # 255: unspecified

    (cov,) = of(scenario, BacnetCov)
    assert (
        cov.subscriber_process_id,
        cov.object_type,
        cov.instance_number,
        cov.issue_confirmed,
        cov.lifetime,
    ) == (
        18,
        "analog-input",
        7,
        True,
        300,
    )
    assert cov.cancellation is False
    read_file, read_file_ack = of(scenario, BacnetFile)
    assert (read_file.object_type, read_file.instance_number, read_file.access_method) == (
        "file",
        2,
        "stream",
    )
    assert (read_file.file_start, read_file.count, read_file.data_length) == (0, 512, None)
    assert (read_file_ack.end_of_file, read_file_ack.data_length, read_file_ack.file_start) == (True, 16, 0)


def test_segmented_complex_ack_is_flagged_and_reassembled(scenario: list[Event]) -> None:
    by_frame = frame_events(scenario)
    base = len(SCENARIO)
    first, seg_ack, last = (one(by_frame[base + i], BacnetHeader) for i in (1, 2, 3))
    assert (first.segmented, first.more_follows, first.sequence_number, first.window_size) == (
        True,
        True,
        0,
        2,
    )
    assert not of(by_frame[base + 1], BacnetProperty)  # nothing decoded from half a message
    assert (seg_ack.pdu_type, seg_ack.sequence_number, seg_ack.window_size) == ("SEGMENT_ACK", 0, 2)
    assert (last.segmented, last.more_follows, last.sequence_number) == (True, False, 1)
    ack = one(by_frame[base + 3], BacnetProperty)
    assert (ack.object_type, ack.instance_number, ack.property, ack.value_type) == (
        "device",
        150,
        "object-list",
        "object-identifier",
    )
    assert ack.values == ["device: 150", "analog-input: 7", "analog-output: 3"]


SPEC_CONFIRMED = {
    5: "subscribe_cov",
    6: "atomic_read_file",
    12: "read_property",
    14: "read_property_multiple",
    15: "write_property",
    16: "write_property_multiple",
    17: "device_communication_control",
    20: "reinitialize_device",
}
SPEC_UNCONFIRMED = {
    0: "i_am",
    1: "i_have",
    6: "time_synchronization",
    7: "who_has",
    8: "who_is",
    9: "utc_time_synchronization",
}
APDU_TYPES = ["CONFIRMED_REQUEST", "UNCONFIRMED_REQUEST", "SIMPLE_ACK", "COMPLEX_ACK"]
APDU_TYPES += ["SEGMENT_ACK", "ERROR_PDU", "REJECT_PDU", "ABORT_PDU"]


def named_text(frame: Frame, pattern: str) -> str:
    m = frame.text(pattern)
    assert m, (frame.number, pattern)
    return m[1]


def test_scenario_matches_tshark(tmp_path: Path, tshark: str, scenario: list[Event]) -> None:
    """Every header field and the decoded service parameters, against tshark's dissection."""
    capture = tmp_path / "scenario.pcap"
    wrpcap(str(capture), [Ether(p) for p in udp_packets(SCENARIO + SEGMENTED)])
    frames = pdml(tshark, capture)
    by_frame = frame_events(scenario)
    assert len(frames) == len(SCENARIO) + len(SEGMENTED)
    for i, frame in enumerate(frames):
        header = one(by_frame[i], BacnetHeader)
        kind = int(frame.first("bacapp.type") or -1)
        assert header.pdu_type == APDU_TYPES[kind]
        assert header.invoke_id == hexint(frame.first("bacapp.invoke_id"))
        assert header.npdu_control == hexint(frame.first("bacnet.control"))
        assert (header.dnet, header.hop_count) == (
            hexint(frame.first("bacnet.dnet")),
            hexint(frame.first("bacnet.hopc")),
        )
        if kind == 1:
            assert (
                header.pdu_service == SPEC_UNCONFIRMED[int(frame.first("bacapp.unconfirmed_service") or -1)]
            )
        elif kind in (0, 2, 3, 5):
            assert header.pdu_service == SPEC_CONFIRMED[int(frame.first("bacapp.confirmed_service") or -1)]
        if kind in (0, 3):
            assert header.segmented is (frame.first("bacapp.segmented_request") == "1")
            assert header.more_follows is (frame.first("bacapp.more_segments") == "1")
        assert header.sequence_number == hexint(frame.first("bacapp.sequence_number"))
        assert header.window_size == hexint(frame.first("bacapp.window_size"))
        if kind == 5:
            assert header.error_class == named_text(frame, r"Error Class: (\S+) \(")
            assert header.result_code == named_text(frame, r"Error Code: (\S+) \(")
        if kind == 6:
            assert header.result_code == named_text(frame, r"Reject Reason: (\S+) \(")
        if kind == 7:
            assert header.result_code == named_text(frame, r"Abort Reason: (\S+) \(")
        props = of(by_frame[i], BacnetProperty)
        if props:
            shown = [t.split()[2] for t in frame.texts() if t.startswith("Property Identifier: ")]
            assert [p.property for p in props] == shown[::2]  # tshark shows each twice (tag and value)
        for p in props:
            assert p.instance_number in [int(v) for v in frame.values("bacapp.instance_number")]
            if p.priority is not None:
                assert p.priority == int(named_text(frame, r"Priority: \(Unsigned\) (\d+)"))
    i_am = one(by_frame[1], BacnetDiscovery)
    assert i_am.vendor == named_text(frames[1], r"Vendor Identifier: (.*) \(5\)$")
    assert (i_am.max_apdu, i_am.segmentation) == (
        int(named_text(frames[1], r"Maximum ADPU Length Accepted: \(Unsigned\) (\d+)")),
        named_text(frames[1], r"Segmentation Supported:\s+(\S+) \("),
    )
    assert frames[0].values("bacapp.who_is.low_limit") + frames[0].values("bacapp.who_is.high_limit") == [
        "100",
        "200",
    ]
    dcc = one(by_frame[16], BacnetDeviceControl)
    assert dcc.time_duration == int(named_text(frames[16], r"time Duration: \(Unsigned\) (\d+)"))
    assert dcc.device_state == named_text(frames[16], r"enable-disable:\s+(\S+) \(")
    assert dcc.password_present
    assert frames[16].text("Password: ")
    reinit = one(by_frame[18], BacnetDeviceControl)
    assert reinit.device_state == named_text(frames[18], r"reinitialized State Of Device:\s+(\S+) \(")
    sync = one(by_frame[24], BacnetTimeSync)
    date = named_text(frames[24], r"Date: (.*)")
    time = named_text(frames[24], r"Time: .* = (.*)")
    assert date == "March 5, 2024, (Day of Week = Tuesday)"
    assert sync.day_of_week == 2
    assert time == f"{sync.hour}:{sync.minute}:{sync.second}.{sync.hundredths}"
    cov = one(by_frame[26], BacnetCov)
    assert cov.subscriber_process_id == int(
        named_text(frames[26], r"subscriber Process Id: \(Unsigned\) (\d+)")
    )
    assert named_text(frames[26], r"life time \(hh.mm.ss\): (.*)") == "0.05.00"
    assert cov.lifetime == 300
    read_file = one(by_frame[28], BacnetFile)
    assert read_file.count == int(named_text(frames[28], r"Requested Octet Count: \(Unsigned\) (\d+)"))
    assert read_file.file_start == int(named_text(frames[28], r"File Start Position: \(Signed\) (-?\d+)"))
    file_ack = one(by_frame[29], BacnetFile)
    assert file_ack.data_length == len(bytes.fromhex(named_text(frames[29], r"File Data:\s+(\S+)")))
    rpm_ack = of(by_frame[13], BacnetProperty)
    assert rpm_ack[2].result_code == named_text(frames[13], r"Error Code: (\S+) \(")
    assert rpm_ack[1].value == named_text(frames[13], r"units:\s+(.*) \(62\)").lower().replace(" ", "-")
    reassembled = one(by_frame[len(SCENARIO) + 3], BacnetProperty)
    shown = [
        t.removeprefix("ObjectIdentifier: ").replace(",", ":")
        for t in frames[-2].texts()
        if t.startswith("ObjectIdentifier: ")
    ]
    assert reassembled.values == shown[1:]  # after the object whose list it is


# ------------------------------------------------- ICSNPP's Forwarded-NPDU test frames and baselines

# The frames of cisagov/icsnpp-bacnet testing/traces/make_bacnet_forwarded_npdu.py, as hex there.
ICSNPP_I_AM = bytes.fromhex("10 00 C4 0200006C 22 01E0 91 03 21 63")
ICSNPP_WRITE = bytes.fromhex("00 05 2A 0F 0C 00400005 19 55 3E 44 42900000 3F 49 08")
ICSNPP_ACK = bytes.fromhex("20 2A 0F")
ICSNPP_READ = bytes.fromhex("00 05 2B 0C 0C 00400005 19 55")
FORWARDED_FRAMES = [
    (
        "192.168.1.5",
        "192.168.1.255",
        forwarded("192.168.1.77", PORT, bytes.fromhex("01 28 FFFF 00 0003 01 6C FF") + ICSNPP_I_AM),
    ),
    (
        "192.168.1.5",
        "192.168.1.20",
        forwarded("192.168.1.90", PORT, bytes.fromhex("01 24 0003 01 6C FF") + ICSNPP_WRITE),
    ),
    (
        "192.168.1.20",
        "192.168.1.5",
        forwarded("192.168.1.91", PORT, bytes.fromhex("01 08 0003 01 6C") + ICSNPP_ACK),
    ),
    ("192.168.1.5", "192.168.1.20", forwarded("192.168.1.90", PORT, bytes.fromhex("0100") + ICSNPP_I_AM)),
    ("192.168.1.5", "192.168.1.20", bvlc(0x0A, bytes.fromhex("0104") + ICSNPP_READ)),
]
# testing/baseline/analyzer.forwarded-npdu/bacnet.log: bvlc_function pdu_type pdu_service invoke_id
# result_code snet slen sadr dnet dlen dadr fwd_ip fwd_port, per frame.
ICSNPP_FORWARDED_HEADERS = [
    "Forwarded_NPDU UNCONFIRMED_REQUEST i_am - - 3 1 6c 65535 0 - 192.168.1.77 47808",
    "Forwarded_NPDU CONFIRMED_REQUEST write_property 42 - - - - 3 1 6c 192.168.1.90 47808",
    "Forwarded_NPDU SIMPLE_ACK write_property 42 - 3 1 6c - - - 192.168.1.91 47808",
    "Forwarded_NPDU UNCONFIRMED_REQUEST i_am - - - - - - - - 192.168.1.90 47808",
    "Original_Unicast_NPDU CONFIRMED_REQUEST read_property 43 - - - - - - - - -",
]
HEADER_ROUTING = ("snet", "slen", "sadr", "dnet", "dlen", "dadr", "fwd_ip", "fwd_port")


def test_builders_encode_like_icsnpp_test_frames() -> None:
    """Our spec encoders produce the bytes ICSNPP's test generator writes for the same PDUs."""
    assert (
        unconfirmed(I_AM, app_obj(DEVICE, 108) + app_unsigned(480) + app_enum(3) + app_unsigned(99))
        == ICSNPP_I_AM
    )
    write = (
        ctx_obj(0, ANALOG_OUTPUT, 5)
        + ctx_unsigned(1, PRESENT_VALUE)
        + wrapped(3, app_real(72.0))
        + ctx_unsigned(4, 8)
    )
    assert confirmed(42, WRITE_PROPERTY, write)[3:] == ICSNPP_WRITE[3:]  # theirs leaves SA clear
    assert simple_ack(42, WRITE_PROPERTY) == ICSNPP_ACK
    assert npdu(b"", dnet=0xFFFF, snet=3, sadr=b"\x6c") == bytes.fromhex("01 28 FFFF 00 0003 01 6C FF")


def test_icsnpp_forwarded_npdu_baseline() -> None:
    packets = [
        bytes(Ether() / IP(src=src, dst=dst) / UDP(sport=PORT, dport=PORT) / payload)
        for src, dst, payload in FORWARDED_FRAMES
    ]
    events, weird, _ = run(packets)
    assert weird.total == 0
    headers = of(events, BacnetHeader)
    ours = [
        " ".join(icsnpp_text(c, getattr(h, c)) for c in (*ICSNPP_COLUMNS["bacnet"], *HEADER_ROUTING))
        for h in headers
    ]
    assert ours == ICSNPP_FORWARDED_HEADERS
    assert [h.is_orig for h in headers] == [True, True, False, True, True]
    # bacnet_discovery.log: both I-Ams, device 108 of vendor 99.
    assert [
        (d.pdu_service, d.object_type, d.instance_number, d.vendor) for d in of(events, BacnetDiscovery)
    ] == [
        (
            "i-am",
            "device",
            108,
            "Mitsubishi Electric Corporation Air Conditioning & Refrigeration Systems Works",
        )
    ] * 2
    # bacnet_property.log: the write (value 72.000000 at priority 8), then the read.
    assert [
        (
            p.invoke_id,
            p.pdu_service,
            p.object_type,
            p.instance_number,
            p.property,
            p.array_index,
            p.value,
            p.priority,
        )
        for p in of(events, BacnetProperty)
    ] == [
        (42, "write-property", "analog-output", 5, "present-value", None, "72.000000", 8),
        (43, "read-property-request", "analog-output", 5, "present-value", None, None, None),
    ]


# ------------------------------------------------------------------------ hand-built unit cases


def test_i_am_encoding_per_spec() -> None:
    """I-Am (16.10.3): device 4194302 (the largest assignable instance), max APDU 50, vendor 260."""
    events = Collector().feed(
        unicast(
            unconfirmed(I_AM, app_obj(DEVICE, 4194302) + app_unsigned(50) + app_enum(3) + app_unsigned(260))
        )
    )
    i_am = one(events, BacnetDiscovery)
    assert (i_am.object_type, i_am.instance_number, i_am.max_apdu, i_am.segmentation, i_am.vendor_id) == (
        "device",
        4194302,
        50,
        "no-segmentation",
        260,
    )
    assert i_am.vendor  # a registered vendor id has a name
    assert weird_names(events) == []
    bad = Collector().feed(unicast(unconfirmed(I_AM, app_obj(DEVICE, 1) + app_unsigned(50) + app_enum(3))))
    assert weird_names(bad) == ["bacnet_malformed_service"]
    assert not of(bad, BacnetDiscovery)


def test_read_property_ack_values_per_application_tag() -> None:
    """Each application tag of clause 20.2 as a property value, and a list of values."""
    cases = [
        (APP_NULL, None, "null"),
        (app_bool(True), "true", "boolean"),
        (app_unsigned(70000), "70000", "unsigned"),
        (tag(3, (-5).to_bytes(1, "big", signed=True)), "-5", "signed"),
        (app_real(-1.5), "-1.500000", "real"),
        (tag(5, struct.pack(">d", 2.25)), "2.250000", "double"),
        (tag(6, b"\xde\xad"), "dead", "octet-string"),
        (app_string("Zone 4"), "Zone 4", "character-string"),
        (tag(8, bytes([4, 0b10100000])), "TFTF", "bit-string"),  # 4 unused bits
        (app_enum(1), "1", "enumerated"),  # no enumeration known for present-value
        (tag(10, bytes([124, 12, 31, 2])), "2024-12-31", "date"),
        (tag(11, bytes([23, 59, 255, 255])), "23:59:*.*", "time"),
        (app_obj(ANALOG_VALUE, 9), "analog-value: 9", "object-identifier"),
    ]
    for encoded, value, value_type in cases:
        body = ctx_obj(0, ANALOG_VALUE, 9) + ctx_unsigned(1, PRESENT_VALUE) + wrapped(3, encoded)
        events = Collector().feed(unicast(complex_ack(1, READ_PROPERTY, body)), is_orig=False)
        assert weird_names(events) == [], value_type
        ack = one(events, BacnetProperty)
        assert (ack.value, ack.value_type) == (value, value_type)
    body = ctx_obj(0, DEVICE, 1) + ctx_unsigned(1, 79) + wrapped(3, app_enum(8))  # object-type
    assert (
        one(Collector().feed(unicast(complex_ack(1, READ_PROPERTY, body))), BacnetProperty).value == "device"
    )
    body = ctx_obj(0, DEVICE, 1) + ctx_unsigned(1, 87) + wrapped(3, APP_NULL, app_real(1.0), APP_NULL)
    array = one(Collector().feed(unicast(complex_ack(1, READ_PROPERTY, body))), BacnetProperty)
    assert (array.property, array.values, array.value_type) == (
        "priority-array",
        ["null", "1.000000", "null"],
        "null",
    )
    body = ctx_obj(0, DEVICE, 1) + ctx_unsigned(1, 30) + wrapped(3, wrapped(0, app_unsigned(1)))
    constructed = one(Collector().feed(unicast(complex_ack(1, READ_PROPERTY, body))), BacnetProperty)
    assert (constructed.value, constructed.value_type) == (None, "constructed")


def test_write_property_with_priority_and_bad_priority() -> None:
    body = ctx_obj(0, 4, 12) + ctx_unsigned(1, PRESENT_VALUE) + wrapped(3, app_enum(1)) + ctx_unsigned(4, 1)
    write = one(Collector().feed(unicast(confirmed(9, WRITE_PROPERTY, body))), BacnetProperty)
    assert (write.object_type, write.instance_number, write.value, write.priority) == (
        "binary-output",
        12,
        "1",
        1,
    )
    body = (
        ctx_obj(0, 4, 12)
        + ctx_unsigned(1, PRESENT_VALUE)
        + ctx_unsigned(2, 3)
        + wrapped(3, app_enum(1))
        + ctx_unsigned(4, 17)
    )
    events = Collector().feed(unicast(confirmed(9, WRITE_PROPERTY, body)))
    assert (one(events, BacnetProperty).priority, one(events, BacnetProperty).array_index) == (17, 3)
    assert weird_names(events) == ["bacnet_bad_priority"]
    no_value = ctx_obj(0, 4, 12) + ctx_unsigned(1, PRESENT_VALUE) + ctx_unsigned(4, 8)
    events = Collector().feed(unicast(confirmed(9, WRITE_PROPERTY, no_value)))
    assert weird_names(events) == ["bacnet_malformed_service"]
    assert not of(events, BacnetProperty)


def test_errors_rejects_and_aborts_as_icsnpp_logs_them() -> None:
    """ICSNPP's error-reject-abort baseline: ERROR_PDU reinitialize_device 52 password-failure,
    REJECT_PDU reject 58 unrecognized-service, ABORT_PDU abort 1 other (built here per clause 20.1)."""
    collector = Collector()
    rows = []
    for pdu in (error_pdu(52, REINITIALIZE_DEVICE, 5, 26), reject_pdu(58, 9), abort_pdu(1, 0, server=False)):
        header = one(collector.feed(unicast(pdu)), BacnetHeader)
        rows.append(" ".join(icsnpp_text(c, getattr(header, c)) for c in ICSNPP_COLUMNS["bacnet"]))
    assert rows == [
        "Original_Unicast_NPDU ERROR_PDU reinitialize_device 52 password-failure",
        "Original_Unicast_NPDU REJECT_PDU reject 58 unrecognized-service",
        "Original_Unicast_NPDU ABORT_PDU abort 1 other",
    ]
    # An error wrapped in [0] (WritePropertyMultiple-Error, 15.10.1.3.1) still gives class and code.
    wpm_error = (
        bytes([0x50, 3, WRITE_PROPERTY_MULTIPLE])
        + wrapped(0, app_enum(2), app_enum(40))
        + wrapped(1, ctx_obj(0, 2, 1), ctx_unsigned(1, 85))
    )
    header = one(Collector().feed(unicast(wpm_error)), BacnetHeader)
    assert (header.error_class, header.result_code) == ("property", "write-access-denied")
    events = Collector().feed(unicast(bytes([0x50, 3, READ_PROPERTY]) + app_enum(2)))
    assert weird_names(events) == ["bacnet_malformed_service"]


def test_abort_by_the_client_is_not_a_device_control_result() -> None:
    collector = Collector()
    collector.feed(unicast(confirmed(5, REINITIALIZE_DEVICE, ctx_unsigned(0, 0))))
    events = collector.feed(unicast(abort_pdu(5, 3, server=False)))  # the client gives up: SRV clear
    assert not of(events, BacnetDeviceControl)
    assert one(events, BacnetHeader).result_code == "preempted-by-higher-priority-task"
    events = collector.feed(unicast(reject_pdu(5, 9)), is_orig=False)
    assert not of(events, BacnetDeviceControl)  # the request was already answered (aborted)


def test_who_has_by_identifier_and_cancelled_subscription() -> None:
    body = ctx_unsigned(0, 0) + ctx_unsigned(1, 4194303) + ctx_obj(2, ANALOG_INPUT, 7)
    who_has = one(Collector().feed(broadcast(unconfirmed(WHO_HAS, body))), BacnetDiscovery)
    assert (who_has.range, who_has.object_type, who_has.instance_number, who_has.object_name) == (
        "0-4194303",
        "analog-input",
        7,
        None,
    )
    cancel = ctx_unsigned(0, 18) + ctx_obj(1, ANALOG_INPUT, 7)
    cov = one(Collector().feed(unicast(confirmed(1, SUBSCRIBE_COV, cancel))), BacnetCov)
    assert (cov.cancellation, cov.issue_confirmed, cov.lifetime) == (True, None, None)
    prop = (
        cancel
        + tag(2, b"\x00", context=True)
        + wrapped(4, ctx_unsigned(0, PRESENT_VALUE))
        + tag(5, struct.pack(">f", 0.5), context=True)
    )
    cov = one(Collector().feed(unicast(confirmed(1, 28, prop))), BacnetCov)
    assert (cov.pdu_service, cov.property, cov.cov_increment, cov.issue_confirmed) == (
        "subscribe-cov-property-request",
        "present-value",
        0.5,
        False,
    )


def test_network_layer_messages_and_bvlc_functions() -> None:
    """Network messages (6.4) name their networks; BVLC functions (J.2) their parameters."""
    collector = Collector()
    cases = [
        (bvlc(0x0B, npdu(b"", network_message=0x00)), "who_is_router_to_network", []),
        (bvlc(0x0B, npdu(b"\x00\x05\x00\x06", network_message=0x01)), "i_am_router_to_network", [5, 6]),
        (bvlc(0x0A, npdu(b"\x01\x00\x07", network_message=0x03)), "reject_message_to_network", [7]),
        (
            bvlc(0x0A, npdu(b"\x02\x00\x05\x01\x00\x00\x06\x02\x01\xaa", network_message=0x06)),
            "initialize_routing_table",
            [5, 6],
        ),
        (bvlc(0x0A, npdu(b"\x00\x09\x01", network_message=0x13)), "network_number_is", [9]),
    ]
    for datagram, service, networks in cases:
        events = collector.feed(datagram)
        header = one(events, BacnetHeader)
        assert (header.pdu_type, header.pdu_service, header.dnets) == ("NPDU", service, networks)
        assert weird_names(events) == []
    reject = one(collector.feed(cases[2][0]), BacnetHeader)
    assert reject.result_code == "not-directly-connected"
    proprietary = one(collector.feed(bvlc(0x0A, npdu(b"\x01\x04", network_message=0x80))), BacnetHeader)
    assert proprietary.pdu_service == "proprietary-0x80"
    assert weird_names(collector.feed(bvlc(0x0A, npdu(b"\x00", network_message=0x01)))) == [
        "bacnet_truncated_npdu"
    ]

    register = one(collector.feed(bvlc(0x05, struct.pack(">H", 600))), BacnetHeader)
    assert (register.bvlc_function, register.ttl, register.pdu_type) == ("Register_Foreign_Device", 600, None)
    nak = one(collector.feed(bvlc(0x00, struct.pack(">H", 0x30))), BacnetHeader)
    assert (nak.bvlc_function, nak.result_code) == ("BVLC_Result", "Register-Foreign-Device_NAK")
    table = one(
        collector.feed(bvlc(0x03, bytes([10, 0, 0, 9]) + struct.pack(">H", PORT) + b"\xff" * 4)), BacnetHeader
    )
    assert table.bvlc_function == "Read_Broadcast_Table_ACK"
    routed = one(collector.feed(unicast(unconfirmed(WHO_IS), snet=7, sadr=b"\x01\x02")), BacnetHeader)
    assert (routed.snet, routed.slen, routed.sadr, routed.dnet) == (7, 2, "0102", None)
    directed = one(collector.feed(unicast(unconfirmed(WHO_IS), dnet=9, dadr=b"\x2a", hop=12)), BacnetHeader)
    assert (directed.dnet, directed.dlen, directed.dadr, directed.hop_count) == (9, 1, "2a", 12)


@pytest.mark.parametrize(
    ("datagram", "weird"),
    [
        (b"\x81\x0a", "bacnet_truncated_bvlc"),
        (b"\x82\x0a\x00\x06\x01\x00", "bacnet_unsupported_bvlc_type"),
        (bvlc(0x20, b""), "bacnet_unknown_bvlc_function"),
        (bvlc(0x0A, b"\x01\x00\x10\x08")[:-1] + b"\x08\x00", "bacnet_bvlc_length_mismatch"),
        (bvlc(0x0A, b"\x02\x00\x10\x08"), "bacnet_bad_npdu_version"),
        (bvlc(0x0A, b"\x01"), "bacnet_truncated_npdu"),
        (bvlc(0x0A, b"\x01\x20\x00\x05\x04\x01"), "bacnet_truncated_npdu"),
        (bvlc(0x0A, b"\x01\x08\x00\x05\x00\x10\x08"), "bacnet_bad_address_length"),
        (bvlc(0x0A, b"\x01\x00"), "bacnet_truncated_apdu"),
        (bvlc(0x0A, b"\x01\x00\x00\x05"), "bacnet_truncated_apdu"),
        (bvlc(0x0A, b"\x01\x00\x90\x00"), "bacnet_unknown_apdu_type"),
        (bvlc(0x00, b"\x00"), "bacnet_truncated_bvlc"),
        (forwarded("10.0.0.9", PORT, b"")[:8], "bacnet_truncated_bvlc"),
        (unicast(unconfirmed(WHO_IS, ctx_unsigned(0, 1))), "bacnet_malformed_service"),
        (unicast(unconfirmed(I_AM, b"\xc4\x02\x00")), "bacnet_malformed_service"),
        (
            unicast(unconfirmed(WHO_IS, ctx_unsigned(0, 1) + ctx_unsigned(1, 2) + ctx_unsigned(5, 3))),
            "bacnet_malformed_service",
        ),
        (
            unicast(complex_ack(1, READ_PROPERTY, ctx_obj(0, 0, 1) + ctx_unsigned(1, 85) + opening(3))),
            "bacnet_malformed_service",
        ),
        (
            unicast(complex_ack(1, READ_PROPERTY, ctx_obj(0, 0, 1) + ctx_unsigned(1, 85) + closing(3))),
            "bacnet_malformed_service",
        ),
        (
            unicast(
                complex_ack(
                    1, READ_PROPERTY, ctx_obj(0, 0, 1) + ctx_unsigned(1, 85) + wrapped(3, tag(4, b"\x00"))
                )
            ),
            "bacnet_malformed_service",
        ),
        (unicast(confirmed(1, READ_PROPERTY, bytes([0x0C, 0, 0]))), "bacnet_malformed_service"),
        (
            unicast(unconfirmed(TIME_SYNC, tag(10, b"\x01\x02\x03") + tag(11, bytes(4)))),
            "bacnet_malformed_service",
        ),
    ],
)
def test_malformed_datagrams_are_weird_not_errors(datagram: bytes, weird: str) -> None:
    events = Collector().feed(datagram)
    assert weird in weird_names(events), weird_names(events)
    assert len(of(events, BacnetHeader)) <= 1


def test_segment_out_of_order_and_retransmission() -> None:
    part = OBJECT_LIST_ACK[:12], OBJECT_LIST_ACK[12:]
    collector = Collector()
    events = collector.feed(unicast(complex_ack(4, READ_PROPERTY, part[1], seg=(1, 2))), is_orig=False)
    assert weird_names(events) == ["bacnet_segment_out_of_order"]
    collector.feed(unicast(complex_ack(4, READ_PROPERTY, part[0], seg=(0, 2), more=True)), is_orig=False)
    again = collector.feed(
        unicast(complex_ack(4, READ_PROPERTY, part[0], seg=(0, 2), more=True)), is_orig=False
    )
    assert weird_names(again) == []  # segment 0 again restarts the message
    collector.feed(unicast(complex_ack(4, READ_PROPERTY, part[0], seg=(0, 2), more=True)), is_orig=False)
    events = collector.feed(unicast(complex_ack(4, READ_PROPERTY, part[1], seg=(1, 2))), is_orig=False)
    assert one(events, BacnetProperty).values == ["device: 150", "analog-input: 7", "analog-output: 3"]
    skipped = Collector()
    skipped.feed(unicast(complex_ack(4, READ_PROPERTY, part[0], seg=(0, 2), more=True)), is_orig=False)
    events = skipped.feed(unicast(complex_ack(4, READ_PROPERTY, part[1], seg=(2, 2))), is_orig=False)
    assert weird_names(events) == ["bacnet_segment_out_of_order"]
    assert not of(events, BacnetProperty)


def test_segmented_confirmed_request_is_reassembled() -> None:
    body = (
        ctx_obj(0, ANALOG_OUTPUT, 3)
        + ctx_unsigned(1, PRESENT_VALUE)
        + wrapped(3, app_real(42.0))
        + ctx_unsigned(4, 8)
    )
    collector = Collector()
    first = collector.feed(unicast(confirmed(7, WRITE_PROPERTY, body[:5], seg=(0, 4), more=True)))
    header = one(first, BacnetHeader)
    assert (header.segmented, header.more_follows, header.sequence_number, header.window_size) == (
        True,
        True,
        0,
        4,
    )
    assert not of(first, BacnetProperty)
    last = collector.feed(unicast(confirmed(7, WRITE_PROPERTY, body[5:], seg=(1, 4))))
    write = one(last, BacnetProperty)
    assert (write.value, write.priority, write.instance_number) == ("42.000000", 8, 3)


def test_hostile_counts_are_bounded() -> None:
    many = ctx_obj(0, ANALOG_INPUT, 1) + wrapped(1, *[ctx_unsigned(0, PRESENT_VALUE)] * (MAX_ROWS + 5))
    events = Collector().feed(unicast(confirmed(1, READ_PROPERTY_MULTIPLE, many)))
    assert len(of(events, BacnetProperty)) == MAX_ROWS
    assert weird_names(events) == ["bacnet_too_many_properties"]
    deep = opening(3) * 40 + closing(3) * 40
    events = Collector().feed(
        unicast(complex_ack(1, READ_PROPERTY, ctx_obj(0, 0, 1) + ctx_unsigned(1, 85) + deep))
    )
    assert of(events, BacnetProperty)[0].value_type == "constructed"


# -------------------------------------------------------------------------------- recognition


def test_registered_as_a_builtin_dissector() -> None:
    registry = Registry.default(plugins=False)
    assert registry.get("bacnet") is BacnetDissector
    assert BacnetDissector.transports == frozenset({Transport.UDP})
    assert PORT in BacnetDissector.ports
    for event_type in BacnetDissector.event_types:
        assert event_schema(event_type).names == event_fields(event_type)


def test_recognised_by_content_on_another_port() -> None:
    events, weird, engine = run(udp_packets(SCENARIO, sport=40000, dport=5555))
    assert engine.flows_by_protocol == {"bacnet": 1}
    assert weird.total == 0
    assert len(of(events, BacnetHeader)) == len(SCENARIO)
    assert BacnetDissector.recognize(SCENARIO[1][1], Transport.UDP, 5555, 40000) == Verdict.YES


def test_other_udp_on_47808_is_not_bacnet() -> None:
    dns = bytes.fromhex("12340100000100000000000003777777076578616d706c6503636f6d0000010001")
    ntp = b"\x1b" + bytes(47)
    snmp = bytes.fromhex("302602010004067075626c6963a01902040e0f10110201000201003009300706032b060100")
    noise = [bytes((i * 37 + j * 11) % 256 for j in range(40)) for i in range(16)]
    almost = [
        bvlc(0x0A, b"\x02\x00\x10\x08"),  # NPDU version 2
        bvlc(0x0A, b"\x01\x40\x10\x08"),  # reserved control bit set
        bvlc(0x0A, b"\x01\x00\x10\x63"),  # unconfirmed service 99
        bvlc(0x0A, b"\x01\x00\x90\x00"),  # APDU type 9
        bvlc(0x05, b"\x00"),  # Register-Foreign-Device without its time-to-live
        b"\x82\x0a\x00\x08\x01\x00\x10\x08",  # BACnet/IPv6 (Annex U)
    ]
    for payload in [dns, ntp, snmp, *noise, *almost]:
        events, _, engine = run(udp_packets([(True, payload), (False, payload)]))
        assert (events, engine.flows_by_protocol) == ([], {}), payload.hex()


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"", Verdict.NO),
        (b"\x81", Verdict.NO),
        (unicast(unconfirmed(WHO_IS)), Verdict.YES),
        (broadcast(unconfirmed(WHO_IS), dnet=0xFFFF), Verdict.YES),
        (unicast(confirmed(1, READ_PROPERTY, b"")), Verdict.YES),
        (unicast(confirmed(1, 200, b"")), Verdict.NO),  # no such confirmed service
        (unicast(simple_ack(1, WRITE_PROPERTY)), Verdict.YES),
        (unicast(reject_pdu(1, 0)), Verdict.YES),
        (forwarded("10.1.1.1", PORT, npdu(unconfirmed(I_AM))), Verdict.YES),
        (bvlc(0x0A, npdu(b"\x00\x05", network_message=0x01)), Verdict.YES),
        (bvlc(0x05, struct.pack(">H", 60)), Verdict.YES),
        (bvlc(0x05, struct.pack(">H", 60)) + b"x", Verdict.NO),
        (bvlc(0x01, bytes(10)), Verdict.YES),
        (bvlc(0x01, bytes(9)), Verdict.NO),
        (bvlc(0x0C, b""), Verdict.NO),
        (bvlc(0x0A, b"\x01\x20\x00\x05"), Verdict.NO),  # DNET cut short
    ],
)
def test_recognition_is_strict(data: bytes, verdict: Verdict) -> None:
    assert BacnetDissector.recognize(data, Transport.UDP, 47808, 47808) == verdict
    assert BacnetDissector.recognize(data, Transport.TCP, 47808, 47808) == Verdict.NO


# ------------------------------------------------------------------------------------ fuzzing


@pytest.fixture(scope="module")
def real_datagrams(corpus: Path) -> list[bytes]:
    """One datagram of each kind in the corpus (type, service, length), with its BVLC length as sent."""
    kinds: dict[tuple[int, ...], bytes] = {}
    for packet in rdpcap(str(corpus / "bacnet" / "bacnet_example.pcap")):
        data = bytes(packet[UDP].payload)
        kinds.setdefault((data[1], data[6] >> 4, data[7] if len(data) > 7 else -1, len(data)), data)
    return list(kinds.values()) + [d for _, d in SCENARIO + SEGMENTED]


def with_length(datagram: bytes, length: int | None = None) -> bytes:
    """The datagram with its BVLC length set to ``length`` (default: its true length)."""
    return datagram[:2] + struct.pack(">H", len(datagram) if length is None else length) + datagram[4:]


def test_every_truncation_of_a_real_datagram_is_reported(real_datagrams: list[bytes]) -> None:
    """Cut anywhere (and the BVLC length made to agree), a real datagram is malformed: every field of
    these PDUs is mandatory except ReinitializeDevice's password [1], after which a cut leaves a valid
    request without one."""
    checked = 0
    for datagram in real_datagrams[: len(real_datagrams) - len(SCENARIO) - len(SEGMENTED)]:
        for cut in range(len(datagram)):
            truncated = datagram[:cut]
            if cut >= 4:
                truncated = with_length(truncated)
            events = Collector().feed(truncated)
            password_at = 4 + 2 + 4 + 2  # BVLC, NPDU, confirmed header + service, state [0]
            if datagram[6:7] == b"\x00" and datagram[9] == REINITIALIZE_DEVICE and cut == password_at:
                assert weird_names(events) == []
                assert not one(events, BacnetDeviceControl).password_present
            else:
                assert weird_names(events), (datagram.hex(), cut)
            checked += 1
    assert checked > 200


def _mutate(data: st.DataObject, buf: bytearray) -> bytes:
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        pos = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=6))
        elif buf:
            buf[pos] = data.draw(
                st.sampled_from([0x00, 0x01, 0x05, 0x0E, 0x0F, 0x3E, 0x7F, 0x80, 0xFE, 0xFF])
            )
    return bytes(buf)


def _check_events(events: list[Event]) -> None:
    """Every event fits its Arrow schema (types, nullability) and the count stays bounded."""
    assert len(events) <= MAX_ROWS + 16
    for event in events:
        pa.Table.from_pylist([dataclasses.asdict(event)], schema=event_schema(type(event)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_truncated_real_datagrams(real_datagrams: list[bytes], data: st.DataObject) -> None:
    datagram = with_length(data.draw(st.sampled_from(real_datagrams)))
    cut = data.draw(st.integers(0, len(datagram) - 1))
    collector = Collector()
    events = collector.feed(datagram[:cut], is_orig=data.draw(st.booleans()))
    assert weird_names(events)  # the BVLC length no longer matches, at the least
    _check_events(events)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_real_datagrams(real_datagrams: list[bytes], data: st.DataObject) -> None:
    datagram = _mutate(data, bytearray(data.draw(st.sampled_from(real_datagrams))))
    BacnetDissector.recognize(datagram, Transport.UDP, PORT, PORT)
    collector = Collector()
    for is_orig in (True, False, True):
        _check_events(collector.feed(datagram, is_orig))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=80), st.sampled_from([0x00, 0x04, 0x0A, 0x0B]))
def test_fuzz_random_bodies(body: bytes, function: int) -> None:
    datagram = bvlc(function, (b"\x0a\x00\x00\x01\xba\xc0" if function == 0x04 else b"") + b"\x01\x00" + body)
    BacnetDissector.recognize(datagram, Transport.UDP, PORT, PORT)
    _check_events(Collector().feed(datagram))


def test_malformed_datagrams_are_counted_by_the_engine() -> None:
    bad = unicast(complex_ack(1, READ_PROPERTY, ctx_obj(0, 0, 1) + ctx_unsigned(1, 85) + opening(3)))
    packets = udp_packets([SCENARIO[4], (False, bad), (False, bad), (False, bad[:-2])])
    events, weird, engine = run(packets)
    assert engine.flows_by_protocol == {"bacnet": 1}
    assert weird.counts == {"bacnet_malformed_service": 3, "bacnet_bvlc_length_mismatch": 1}
    assert len(of(events, BacnetHeader)) == 4  # the headers still logged
    assert "dissector_exception" not in weird.counts


# ------------------------------------------------------------------------------------------ docs


def test_every_event_field_is_documented() -> None:
    doc = DOC.read_text()
    for event_type in BacnetDissector.event_types:
        assert f"`{event_type.log}`" in doc
        for name in event_fields(event_type):
            assert f"| `{name}` |" in doc, (event_type.log, name)
    weirds = set(re.findall(r'"(bacnet_[a-z_]+)"', MODULE.read_text()))
    assert len(weirds) >= 15
    for name in sorted(weirds):
        assert f"`{name}`" in doc, f"weird {name} is not documented"


def test_reassembly_is_bounded() -> None:
    collector = Collector()
    for invoke in range(17):  # one more than the messages kept in reassembly at once
        events = collector.feed(
            unicast(complex_ack(invoke, READ_PROPERTY, OBJECT_LIST_ACK[:12], seg=(0, 1), more=True))
        )
    assert weird_names(events) == ["bacnet_too_many_segmented_messages"]
    events = collector.feed(unicast(complex_ack(0, READ_PROPERTY, OBJECT_LIST_ACK[12:], seg=(1, 1))))
    assert weird_names(events) == ["bacnet_segment_out_of_order"]  # the oldest (invoke 0) was dropped
    big = Collector()
    chunk = tag(6, bytes(1400))
    names: list[str] = []
    for sequence in range(200):
        names += weird_names(
            big.feed(unicast(complex_ack(1, ATOMIC_READ_FILE, chunk, seg=(sequence % 256, 1), more=True)))
        )
    # 1403 octets a segment: the 187th passes 256 KiB and drops the message; later ones belong to none.
    assert names == ["bacnet_segment_overflow"] + ["bacnet_segment_out_of_order"] * (200 - 187)
