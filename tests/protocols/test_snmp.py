"""SNMP dissector: golden comparisons with Zeek and tshark, hand-built v2c/v3 messages, malformed BER, fuzz.

Golden references (``../shared/corpus/snmp``), each matched to the Zeek btest that produced it (zeek/zeek
``testing/btest/scripts/base/protocols/snmp/``):

- ``v1.zeek`` runs ``testing/scripts/snmp-test.zeek`` (which prints every ``snmp_*`` event) on four
  captures: ``snmpv1_get.pcap`` -> ``expected/snmp.v1/out1``, ``snmpv1_get_short.pcap`` -> ``out2``,
  ``snmpv1_set.pcap`` -> ``out3``, ``snmpv1_trap.pcap`` -> ``out4``. The corpus holds the first and the
  last capture: for those, the trace is rebuilt line by line from our events. The two missing captures
  are rebuilt from their traces with scapy's independent BER encoder and must give the traces back.
- ``snmp-addr.zeek`` on ``snmpwalk-short.pcap`` -> ``expected/snmp.snmp-addr/.stdout``: every IpAddress
  value of every response, in order.

The community string is never stored, so a trace's ``[community=...]`` line is compared through the
community's length and whether it is a well-known default. tshark (PDML) is the reference for every
variable binding of ``snmpwalk-short.pcap`` and for the hand-built v2c and v3 messages.
"""

from __future__ import annotations

import dataclasses
import re
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
from scapy.asn1.asn1 import (
    ASN1_COUNTER32,
    ASN1_COUNTER64,
    ASN1_GAUGE32,
    ASN1_INTEGER,
    ASN1_IPADDRESS,
    ASN1_NULL,
    ASN1_OID,
    ASN1_STRING,
    ASN1_TIME_TICKS,
)
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.snmp import (
    SNMP,
    SNMPbulk,
    SNMPget,
    SNMPinform,
    SNMPnext,
    SNMPresponse,
    SNMPset,
    SNMPtrapv2,
    SNMPvarbind,
)
from scapy.packet import Packet
from scapy.utils import rdpcap, wrpcap

from fieldward.pipeline import analyze
from fieldward.protocols.base import Event, FlowInfo, PduContext, ProtocolWeird, Transport, Verdict
from fieldward.protocols.snmp import (
    MAX_BINDINGS,
    MAX_DEPTH,
    MAX_VALUE_BYTES,
    BerError,
    BerReader,
    SnmpDissector,
    SnmpEvent,
    decode_oid,
    render_octets,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "snmp.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "snmp.py"
H = bytes.fromhex
MANAGER, AGENT = "10.50.0.1", "10.50.0.9"


# ---------------------------------------------------------------------- a tiny BER encoder (X.690)


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + content


def ber_int(value: int, tag: int = 0x02) -> bytes:
    size = max(1, (value + (value < 0)).bit_length() // 8 + 1)
    return tlv(tag, value.to_bytes(size, "big", signed=True))


def ber_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


def varbinds(*pairs: tuple[str, bytes]) -> bytes:
    return seq(*(seq(ber_oid(oid), value) for oid, value in pairs))


def pdu(tag: int, request_id: int, a: int, b: int, bindings: bytes) -> bytes:
    return tlv(tag, ber_int(request_id) + ber_int(a) + ber_int(b) + bindings)


def v2c(community: bytes, body: bytes, version: int = 1) -> bytes:
    return seq(ber_int(version), octets(community), body)


def v3(
    msg_id: int,
    flags: int,
    *,
    engine: bytes,
    boots: int,
    time: int,
    user: bytes,
    msg_data: bytes,
    max_size: int = 65507,
    auth_params: bytes = b"",
    priv_params: bytes = b"",
) -> bytes:
    usm = seq(
        octets(engine), ber_int(boots), ber_int(time), octets(user), octets(auth_params), octets(priv_params)
    )
    header = seq(ber_int(msg_id), ber_int(max_size), octets(bytes([flags])), ber_int(3))
    return seq(ber_int(3), header, octets(usm), msg_data)


def scoped(engine: bytes, context: bytes, body: bytes) -> bytes:
    return seq(octets(engine), octets(context), body)


# ---------------------------------------------------------------------- running the pipeline


def datagram(data: bytes | Packet, *, to_agent: bool = True, mport: int = 50161, aport: int = 161) -> Packet:
    if to_agent:
        return Ether() / IP(src=MANAGER, dst=AGENT) / UDP(sport=mport, dport=aport) / data
    return Ether() / IP(src=AGENT, dst=MANAGER) / UDP(sport=aport, dport=mport) / data


def write_pcap(path: Path, packets: list[Packet], start: float = 1_700_000_000.0) -> Path:
    for i, packet in enumerate(packets):
        packet.time = start + i * 0.01
    wrpcap(str(path), packets)
    return path


@dataclass
class Run:
    logs: dict[str, list[dict[str, Any]]]

    def snmp(self) -> list[dict[str, Any]]:
        return self.logs.get("snmp", [])

    def weirds(self) -> list[str]:
        return [r["name"] for r in self.logs.get("weird", []) if r["protocol"] == "snmp"]


def run_capture(capture: Path, out: Path) -> Run:
    result = analyze([capture], out)
    assert result.weird.counts.get("dissector_exception", 0) == 0
    logs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((out / "events").glob("*.parquet")):
        table = pq.read_table(path)
        table = table.set_column(table.schema.get_field_index("ts"), "ts", table["ts"].cast(pa.int64()))
        logs[path.stem] = sorted(table.to_pylist(), key=lambda r: r["ts"])
    return Run(logs)


def run_packets(tmp_path: Path, packets: list[Packet], name: str = "built") -> tuple[Run, Path]:
    capture = write_pcap(tmp_path / f"{name}.pcap", packets)
    return run_capture(capture, tmp_path / f"out-{name}"), capture


class Collector:
    """A PduContext for sans-io tests: collects events and weirds."""

    def __init__(self) -> None:
        self.flow = FlowInfo(3, Transport.UDP, MANAGER, 50161, AGENT, 161)
        self.events: list[Event] = []
        self.ctx = PduContext(self.flow, "snmp", self.events.append, self.events.append)

    def parse(self, data: bytes, is_orig: bool = True) -> Collector:
        self.ctx.is_orig = is_orig
        SnmpDissector(self.flow).parse(data, self.ctx)
        return self

    def snmp(self) -> list[SnmpEvent]:
        return [e for e in self.events if isinstance(e, SnmpEvent)]

    def weirds(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, ProtocolWeird)]


def one(data: bytes) -> tuple[SnmpEvent, list[str]]:
    col = Collector().parse(data)
    (event,) = col.snmp()
    return event, col.weirds()


# ---------------------------------------------------------------------- Zeek's snmp-test.zeek, rebuilt

ZEEK_EVENT = {
    "get_request": "snmp_get_request",
    "get_next_request": "snmp_get_request",  # snmp-test.zeek prints get-next requests under this name
    "response": "snmp_response",
    "set_request": "snmp_set_request",
    "inform_request": "snmp_inform_request",
    "trapv2": "snmp_trapv2",
    "report": "snmp_report",
}
ZEEK_SPECIAL = {
    0x05: "<unspecified>",
    0x80: "<no such object>",
    0x81: "<no such instance>",
    0x82: "<end of mib view>",
}
ZEEK_PLAIN = {0x02, 0x06, 0x40, 0x41, 0x42, 0x43, 0x46}


def zeek_value(tag: int, text: str) -> str:
    """``print_snmp_value`` of snmp-test.zeek: Zeek escapes every non-ASCII byte of an octet string."""
    if tag in ZEEK_SPECIAL:
        return ZEEK_SPECIAL[tag]
    if tag in ZEEK_PLAIN:
        return text
    if tag in (0x04, 0x44):
        return "".join(c if ord(c) < 0x80 else "".join(f"\\x{b:02x}" for b in c.encode()) for c in text)
    return "<unknown>"


def community_line(length: int, default: bool) -> str:
    return f"  [community: {length} bytes, default={default}]"


def zeek_trace(events: list[dict[str, Any]]) -> list[str]:
    """The lines snmp-test.zeek prints for our events (the community line as length and default flag)."""
    lines: list[str] = []
    for e in events:
        name = "snmp_trap" if e["pdu_type"] == "trap" else ZEEK_EVENT.get(e["pdu_type"], "?")
        name = "snmp_get_bulk_request" if e["pdu_type"] == "get_bulk_request" else name
        lines.append(name)
        lines.append(
            f"  [orig_h={e['orig_h']}, orig_p={e['orig_p']}/udp, resp_h={e['resp_h']}, "
            f"resp_p={e['resp_p']}/udp, proto=17, ctx=[]]"
        )
        lines.append(f"  is_orig: {'T' if e['is_orig'] else 'F'}")
        lines.append(community_line(e["community_length"], e["default_community"]))
        if e["pdu_type"] == "trap":
            lines.append(f"    enterprise:    {e['enterprise']}")
            lines.append(f"    agent:         {e['agent_addr']}")
            lines.append(f"    generic_trap:  {e['generic_trap']}")
            lines.append(f"    specific_trap: {e['specific_trap']}")
            lines.append(f"    time_stamp:    {e['time_stamp']}")
        elif e["pdu_type"] == "get_bulk_request":
            lines.append(f"    request_id:      {e['request_id']}")
            lines.append(f"    non_repeaters:   {e['non_repeaters']}")
            lines.append(f"    max_repetitions: {e['max_repetitions']}")
        else:
            lines.append(f"    request_id: {e['request_id']}")
            lines.append(f"    error_stat: {e['error_status']}")
            lines.append(f"    error_idx:  {e['error_index']}")
        for oid, tag, value in zip(e["oids"], e["value_tags"], e["values"], strict=True):
            lines.append(f"    oid: {oid}")
            lines.append(f"    value (tag=0x{tag:02x}): {zeek_value(tag, value)}")
    return lines


COMMUNITY = re.compile(r"^  \[community=(.*)\]$")


def golden_trace(path: Path) -> list[str]:
    """A btest baseline's lines, the community replaced by its length and default flag."""
    lines = []
    for line in path.read_text().splitlines()[1:]:  # the first line is btest's banner
        m = COMMUNITY.match(line)
        lines.append(community_line(len(m[1]), m[1] in ("public", "private")) if m else line)
    return lines


@dataclass
class TraceMessage:
    """One event of a snmp-test.zeek trace, enough to rebuild its datagram."""

    event: str
    conn: dict[str, str]
    is_orig: bool
    community: bytes
    fields: dict[str, str] = field(default_factory=dict)
    bindings: list[tuple[str, int, str]] = field(default_factory=list)


def parse_trace(path: Path) -> list[TraceMessage]:
    messages: list[TraceMessage] = []
    lines = path.read_text().splitlines()[1:]
    i = 0
    while i < len(lines):
        conn = dict(kv.split("=", 1) for kv in lines[i + 1].strip()[1:-1].split(", ")[:4])
        m = COMMUNITY.match(lines[i + 3])
        assert m is not None
        msg = TraceMessage(lines[i], conn, lines[i + 2].endswith("T"), m[1].encode())
        i += 4
        while i < len(lines) and lines[i].startswith("    "):
            key, _, value = lines[i].strip().partition(":")
            if key == "oid":
                tag_value = re.match(r"value \(tag=0x(..)\): (.*)$", lines[i + 1].strip())
                assert tag_value is not None
                msg.bindings.append((value.strip(), int(tag_value[1], 16), tag_value[2]))
                i += 2
            else:
                msg.fields[key] = value.strip()
                i += 1
        messages.append(msg)
    return messages


def trace_value(tag: int, text: str) -> Any:
    """Scapy's ASN.1 object for a value printed in a trace."""
    if tag == 0x05:
        return ASN1_NULL(0)
    if tag == 0x02:
        return ASN1_INTEGER(int(text))
    if tag == 0x06:
        return ASN1_OID(text)
    if tag == 0x04:
        return ASN1_STRING(text.encode("latin-1").decode("unicode_escape").encode("latin-1"))
    raise AssertionError(f"tag {tag:#x} not expected in the traces")


def rebuild(messages: list[TraceMessage]) -> list[Packet]:
    """SNMPv1 datagrams carrying exactly what a trace printed (scapy's encoder)."""
    kinds = {"snmp_get_request": SNMPget, "snmp_set_request": SNMPset, "snmp_response": SNMPresponse}
    packets = []
    for msg in messages:
        bindings = [SNMPvarbind(oid=ASN1_OID(o), value=trace_value(t, v)) for o, t, v in msg.bindings]
        body = kinds[msg.event](
            id=int(msg.fields["request_id"]),
            error=int(msg.fields["error_stat"]),
            error_index=int(msg.fields["error_idx"]),
            varbindlist=bindings,
        )
        snmp = SNMP(version=0, community=msg.community, PDU=body)
        c = msg.conn
        sport, dport = int(c["orig_p"].split("/")[0]), int(c["resp_p"].split("/")[0])
        if msg.is_orig:
            packets.append(
                Ether() / IP(src=c["orig_h"], dst=c["resp_h"]) / UDP(sport=sport, dport=dport) / snmp
            )
        else:
            packets.append(
                Ether() / IP(src=c["resp_h"], dst=c["orig_h"]) / UDP(sport=dport, dport=sport) / snmp
            )
    return packets


@pytest.fixture(scope="module")
def golden_runs(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    base = tmp_path_factory.mktemp("snmp-golden")
    return {
        name: run_capture(corpus / "snmp" / f"{name}.pcap", base / name)
        for name in ("snmpv1_get", "snmpv1_trap", "snmpwalk-short")
    }


@pytest.mark.parametrize(("capture", "baseline"), [("snmpv1_get", "out1"), ("snmpv1_trap", "out4")])
def test_golden_zeek_event_trace(
    golden_runs: dict[str, Run], corpus: Path, capture: str, baseline: str
) -> None:
    run = golden_runs[capture]
    expected = golden_trace(corpus / "snmp" / "expected" / "snmp.v1" / baseline)
    assert zeek_trace(run.snmp()) == expected
    assert run.weirds() == []


@pytest.mark.parametrize("baseline", ["out2", "out3"])
def test_golden_traces_of_missing_captures_round_trip(corpus: Path, tmp_path: Path, baseline: str) -> None:
    """snmpv1_get_short / snmpv1_set are not in the corpus: re-encode their traces and decode them back."""
    path = corpus / "snmp" / "expected" / "snmp.v1" / baseline
    messages = parse_trace(path)
    assert messages
    run, _ = run_packets(tmp_path, rebuild(messages))
    assert zeek_trace(run.snmp()) == golden_trace(path)


def test_golden_snmp_addr(golden_runs: dict[str, Run], corpus: Path) -> None:
    """snmp-addr.zeek prints every IpAddress value of every response of snmpwalk-short.pcap."""
    expected = (corpus / "snmp" / "expected" / "snmp.snmp-addr" / ".stdout").read_text().splitlines()[1:]
    ours = [
        value
        for e in golden_runs["snmpwalk-short"].snmp()
        if e["pdu_type"] == "response"
        for tag, value in zip(e["value_tags"], e["values"], strict=True)
        if tag == 0x40
    ]
    assert ours == expected


# ---------------------------------------------------------------------- tshark


TSHARK_TYPES = {
    "Integer32": "integer",
    "OctetString": "octet_string",
    "OID": "oid",
    "IpAddress": "ip_address",
    "Counter32": "counter32",
    "Gauge32": "gauge32",
    "Unsigned32": "gauge32",
    "Timeticks": "timeticks",
    "Counter64": "counter64",
    "Opaque": "opaque",
}
TSHARK_PDUS = {
    "get_request_element": "get_request",
    "get_next_request_element": "get_next_request",
    "get_response_element": "response",
    "set_request_element": "set_request",
    "trap_element": "trap",
    "getBulkRequest_element": "get_bulk_request",
    "informRequest_element": "inform_request",
    "snmpV2_trap_element": "trapv2",
    "report_element": "report",
}


@dataclass
class TsharkMessage:
    fields: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)
    pdu_type: str | None = None
    bindings: list[tuple[str, str, str]] = field(default_factory=list)


def _walk(element: ET.Element) -> Iterator[ET.Element]:
    yield element
    for child in element:
        yield from _walk(child)


def _binding(container: ET.Element) -> tuple[str, str, str] | None:
    children = {c.get("name", ""): c for c in container}
    if "snmp.name" not in children:
        return None
    oid = children["snmp.name"].get("show", "")
    for name, child in children.items():
        if name == "snmp.value.null":
            return oid, "null", ""
        if name in ("snmp.noSuchObject", "snmp.noSuchInstance", "snmp.endOfMibView"):
            kind = {"snmp.noSuchObject": "no_such_object", "snmp.noSuchInstance": "no_such_instance"}
            return oid, kind.get(name, "end_of_mib_view"), ""
        if name.startswith("snmp.value."):
            m = re.match(r"Value \((\w+)\)", child.get("showname", ""))
            assert m is not None, child.get("showname")
            kind = TSHARK_TYPES[m[1]]
            if kind in ("octet_string", "opaque"):
                return oid, kind, render_octets(H(child.get("value", "")))
            return oid, kind, child.get("show", "")
    raise AssertionError(f"no value in the binding of {oid}")


def tshark_messages(tshark: str, capture: Path) -> list[TsharkMessage]:
    """Each SNMP datagram of ``capture`` as tshark dissects it."""
    pdml = subprocess.run(
        [tshark, "-r", str(capture), "-T", "pdml", "-d", "udp.port==1161,snmp"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    messages = []
    for packet in ET.fromstring(pdml).iter("packet"):
        proto = next(p for p in packet.iter("proto") if p.get("name") == "snmp")
        msg = TsharkMessage()
        for element in _walk(proto):
            name = element.get("name", "")
            if name.startswith("snmp."):
                msg.fields.setdefault(name, element.get("show", ""))
                msg.raw.setdefault(name, element.get("value", ""))
                if name[5:] in TSHARK_PDUS:
                    msg.pdu_type = TSHARK_PDUS[name[5:]]
            binding = _binding(element)
            if binding is not None:
                msg.bindings.append(binding)
        messages.append(msg)
    return messages


def ours(event: dict[str, Any]) -> list[tuple[str, str, str]]:
    return list(zip(event["oids"], event["value_types"], event["values"], strict=True))


def test_snmpwalk_every_binding_matches_tshark(
    golden_runs: dict[str, Run], corpus: Path, tshark: str
) -> None:
    reference = tshark_messages(tshark, corpus / "snmp" / "snmpwalk-short.pcap")
    events = golden_runs["snmpwalk-short"].snmp()
    assert len(events) == len(reference) == 400
    for event, ref in zip(events, reference, strict=True):
        assert event["version"] == int(ref.fields["snmp.version"])
        assert event["community_length"] == len(ref.fields["snmp.community"])
        assert event["pdu_type"] == ref.pdu_type
        assert event["request_id"] == int(ref.fields["snmp.request_id"])
        assert event["error_status"] == int(ref.fields["snmp.error_status"])
        assert event["error_index"] == int(ref.fields["snmp.error_index"])
        assert event["binding_count"] == int(ref.fields["snmp.variable_bindings"])
        assert ours(event) == ref.bindings


def test_snmpwalk_system_group_identity(golden_runs: dict[str, Run], corpus: Path, tshark: str) -> None:
    reference = tshark_messages(tshark, corpus / "snmp" / "snmpwalk-short.pcap")
    wanted = {
        "1.3.6.1.2.1.1.1.0": "sys_descr",
        "1.3.6.1.2.1.1.2.0": "sys_object_id",
        "1.3.6.1.2.1.1.3.0": "sys_uptime",
        "1.3.6.1.2.1.1.4.0": "sys_contact",
        "1.3.6.1.2.1.1.5.0": "sys_name",
        "1.3.6.1.2.1.1.6.0": "sys_location",
    }
    expected: dict[str, Any] = {}
    for ref in reference:
        if ref.pdu_type == "response":
            for oid, _kind, value in ref.bindings:
                if oid in wanted:
                    expected[wanted[oid]] = int(value) if wanted[oid] == "sys_uptime" else value
    assert len(expected) == 6
    found: dict[str, Any] = {}
    for event in golden_runs["snmpwalk-short"].snmp():
        for name in wanted.values():
            if event[name] is not None:
                assert name not in found
                found[name] = event[name]
    assert found == expected
    assert found["sys_name"] == "ubuntu-512mb-sfo2-01"  # spot check of the text itself


# ---------------------------------------------------------------------- hand-built v2c


SECRET = b"Fw-S3cret!Comm"


def v2c_packets() -> list[Packet]:
    b = SNMPvarbind
    return [
        datagram(
            SNMP(
                version=1,
                community=SECRET,
                PDU=SNMPbulk(
                    id=7001,
                    non_repeaters=1,
                    max_repetitions=12,
                    varbindlist=[b(oid=ASN1_OID("1.3.6.1.2.1.1"))],
                ),
            )
        ),
        datagram(
            SNMP(
                version=1,
                community=SECRET,
                PDU=SNMPresponse(
                    id=7001,
                    varbindlist=[
                        b(
                            oid=ASN1_OID("1.3.6.1.2.1.1.5.0"),
                            value=ASN1_STRING("Pump-Station-7 \u00e9".encode()),
                        ),
                        b(oid=ASN1_OID("1.3.6.1.2.1.4.20.1.1.10.0.0.9"), value=ASN1_IPADDRESS("10.0.0.9")),
                        b(oid=ASN1_OID("1.3.6.1.2.1.2.2.1.10.1"), value=ASN1_COUNTER32(4294967295)),
                        b(oid=ASN1_OID("1.3.6.1.2.1.2.2.1.5.1"), value=ASN1_GAUGE32(1000000000)),
                        b(oid=ASN1_OID("1.3.6.1.2.1.31.1.1.1.6.1"), value=ASN1_COUNTER64(2**64 - 1)),
                        b(oid=ASN1_OID("1.3.6.1.2.1.1.3.0"), value=ASN1_TIME_TICKS(987654)),
                        b(oid=ASN1_OID("1.3.6.1.2.1.1.7.0"), value=ASN1_INTEGER(-72)),
                    ],
                ),
            ),
            to_agent=False,
        ),
        datagram(
            SNMP(
                version=1,
                community=b"private",
                PDU=SNMPset(
                    id=7002, varbindlist=[b(oid=ASN1_OID("1.3.6.1.2.1.1.6.0"), value=ASN1_STRING(b"Hall\\B"))]
                ),
            )
        ),
        datagram(
            SNMP(
                version=1,
                community=b"private",
                PDU=SNMPresponse(
                    id=7002,
                    error=17,
                    error_index=1,
                    varbindlist=[b(oid=ASN1_OID("1.3.6.1.2.1.1.6.0"), value=ASN1_STRING(b"Hall\\B"))],
                ),
            ),
            to_agent=False,
        ),
        datagram(
            SNMP(
                version=1, community=b"public", PDU=SNMPnext(id=-5, varbindlist=[b(oid=ASN1_OID("1.3.6.1"))])
            )
        ),
        datagram(
            SNMP(
                version=1,
                community=b"public",
                PDU=SNMPtrapv2(
                    id=31,
                    varbindlist=[
                        b(oid=ASN1_OID("1.3.6.1.2.1.1.3.0"), value=ASN1_TIME_TICKS(4242)),
                        b(oid=ASN1_OID("1.3.6.1.6.3.1.1.4.1.0"), value=ASN1_OID("1.3.6.1.6.3.1.1.5.3")),
                    ],
                ),
            ),
            to_agent=False,
            aport=1161,
            mport=162,
        ),
        datagram(
            SNMP(
                version=1,
                community=b"public",
                PDU=SNMPinform(
                    id=32, varbindlist=[b(oid=ASN1_OID("1.3.6.1.2.1.1.3.0"), value=ASN1_TIME_TICKS(9))]
                ),
            ),
            aport=162,
        ),
        datagram(
            v2c(
                b"public",
                pdu(
                    0xA2,
                    33,
                    0,
                    0,
                    varbinds(
                        ("1.3.6.1.2.1.1.99.0", tlv(0x80, b"")),
                        ("1.3.6.1.2.1.1.1.1", tlv(0x81, b"")),
                        ("1.3.6.1.2.1.1.1.0", tlv(0x44, H("9f780441200000"))),
                        ("1.3.6.1.9", tlv(0x82, b"")),
                    ),
                ),
            ),
            to_agent=False,
        ),
    ]


def test_v2c_messages_match_tshark_and_the_spec(tmp_path: Path, tshark: str) -> None:
    run, capture = run_packets(tmp_path, v2c_packets())
    events = run.snmp()
    reference = tshark_messages(tshark, capture)
    assert len(events) == len(reference) == 8
    for event, ref in zip(events, reference, strict=True):
        assert event["version"] == int(ref.fields["snmp.version"]) == 1
        assert event["version_name"] == "v2c"
        assert event["pdu_type"] == ref.pdu_type
        assert event["request_id"] == int(ref.fields["snmp.request_id"])
        assert event["binding_count"] == len(ref.bindings)
        assert ours(event) == ref.bindings
        if "snmp.error_status" in ref.fields:
            assert (event["error_status"], event["error_index"]) == (
                int(ref.fields["snmp.error_status"]),
                int(ref.fields["snmp.error_index"]),
            )
        assert event["community_length"] == len(H(ref.raw["snmp.community"]))
    bulk, response, set_request, set_response, get_next, trapv2, inform, exceptions = events
    # The values the messages were built with (RFC 3416 PDUs).
    assert (bulk["non_repeaters"], bulk["max_repetitions"], bulk["error_status"]) == (1, 12, None)
    assert response["values"] == [
        "Pump-Station-7 \u00e9",
        "10.0.0.9",
        "4294967295",
        "1000000000",
        str(2**64 - 1),
        "987654",
        "-72",
    ]
    assert (response["sys_name"], response["sys_uptime"]) == ("Pump-Station-7 \u00e9", 987654)
    assert set_request["values"] == ["Hall\\\\B"]  # a backslash is doubled: the rendering is reversible
    assert set_request["sys_location"] is None  # a manager's set is no agent identity
    assert (set_response["error_status"], set_response["error_status_name"]) == (17, "notWritable")
    assert set_response["sys_location"] == "Hall\\\\B"
    assert get_next["request_id"] == -5
    assert trapv2["sys_uptime"] == 4242
    assert (trapv2["orig_p"], trapv2["resp_p"]) == (1161, 162)
    assert inform["pdu_type"] == "inform_request"
    assert exceptions["value_types"] == ["no_such_object", "no_such_instance", "opaque", "end_of_mib_view"]
    assert exceptions["sys_descr"] is None  # an Opaque is not a DisplayString
    assert run.weirds() == []


def test_community_string_is_never_stored(tmp_path: Path) -> None:
    run, _ = run_packets(tmp_path, v2c_packets())
    secret = SECRET.decode()
    assert [
        (e["community_present"], e["community_length"], e["default_community"]) for e in run.snmp()[:4]
    ] == [
        (True, len(SECRET), False),
        (True, len(SECRET), False),
        (True, 7, True),
        (True, 7, True),
    ]
    for log, rows in run.logs.items():
        for row in rows:
            assert secret not in repr(row), f"community string stored in {log}"
    for path in (tmp_path / "out-built").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_bytes(), f"community string in {path.name}"


# ---------------------------------------------------------------------- hand-built v3

ENGINE = H("80001f8880c71100000000000000")  # RFC 3411 format: net-snmp (8072), random octets
USER = b"opsuser"


def v3_packets() -> list[Packet]:
    discovery = v3(
        msg_id=821,
        flags=0x04,
        engine=b"",
        boots=0,
        time=0,
        user=b"",
        msg_data=scoped(b"", b"", pdu(0xA0, 1001, 0, 0, seq())),
    )
    report = v3(
        msg_id=821,
        flags=0x00,
        engine=ENGINE,
        boots=17,
        time=123456,
        user=b"",
        msg_data=scoped(
            ENGINE, b"", pdu(0xA8, 1001, 0, 0, varbinds(("1.3.6.1.6.3.15.1.1.4.0", ber_int(3, tag=0x41))))
        ),
    )
    auth_get = v3(
        msg_id=822,
        flags=0x05,
        engine=ENGINE,
        boots=17,
        time=123460,
        user=USER,
        auth_params=bytes(12),
        msg_data=scoped(
            ENGINE, b"plc", pdu(0xA0, 1002, 0, 0, varbinds(("1.3.6.1.2.1.1.5.0", tlv(0x05, b""))))
        ),
    )
    auth_response = v3(
        msg_id=822,
        flags=0x01,
        engine=ENGINE,
        boots=17,
        time=123461,
        user=USER,
        auth_params=bytes(12),
        msg_data=scoped(
            ENGINE, b"plc", pdu(0xA2, 1002, 0, 0, varbinds(("1.3.6.1.2.1.1.5.0", octets(b"rtu-12"))))
        ),
    )
    encrypted = v3(
        msg_id=823,
        flags=0x07,
        engine=ENGINE,
        boots=17,
        time=123470,
        user=USER,
        auth_params=bytes(range(12)),
        priv_params=H("0001020304050607"),
        msg_data=octets(bytes(range(40, 90))),
    )
    return [
        datagram(discovery),
        datagram(report, to_agent=False),
        datagram(auth_get),
        datagram(auth_response, to_agent=False),
        datagram(encrypted),
    ]


def test_v3_messages_match_tshark_and_the_spec(tmp_path: Path, tshark: str) -> None:
    run, capture = run_packets(tmp_path, v3_packets())
    events = run.snmp()
    reference = tshark_messages(tshark, capture)
    assert len(events) == len(reference) == 5
    for event, ref in zip(events, reference, strict=True):
        f = ref.fields
        assert event["version"] == int(f["snmp.msgVersion"]) == 3
        assert event["msg_id"] == int(f["snmp.msgID"])
        assert event["msg_max_size"] == int(f["snmp.msgMaxSize"])
        assert event["msg_flags"] == int(ref.raw["snmp.msgFlags"], 16)
        assert event["auth"] == (f["snmp.v3.flags.auth"] == "1")
        assert event["priv"] == (f["snmp.v3.flags.crypt"] == "1")
        assert event["reportable"] == (f["snmp.v3.flags.report"] == "1")
        assert event["security_model"] == int(f["snmp.msgSecurityModel"])
        assert event["engine_id"] == ref.raw.get("snmp.msgAuthoritativeEngineID", "")
        assert event["engine_boots"] == int(f["snmp.msgAuthoritativeEngineBoots"])
        assert event["engine_time"] == int(f["snmp.msgAuthoritativeEngineTime"])
        assert event["user_name"] == f.get("snmp.msgUserName", "")
        assert event["encrypted"] == ("snmp.encryptedPDU" in f)
        assert event["community_present"] is False
        if not event["encrypted"]:
            assert event["pdu_type"] == ref.pdu_type
            assert event["request_id"] == int(f["snmp.request_id"])
            assert event["context_engine_id"] == ref.raw.get("snmp.contextEngineID", "")
            assert event["context_name"] == f.get("snmp.contextName", "")
            assert ours(event) == ref.bindings
        if "snmp.engineid.enterprise" in f:
            assert event["engine_enterprise"] == int(f["snmp.engineid.enterprise"])
    discovery, report, get, response, encrypted = events
    assert (discovery["engine_id"], discovery["engine_enterprise"], discovery["reportable"]) == (
        "",
        None,
        True,
    )
    assert (report["pdu_type"], report["value_types"], report["values"]) == ("report", ["counter32"], ["3"])
    assert (get["user_name"], get["context_name"], get["auth"], get["priv"]) == (
        "opsuser",
        "plc",
        True,
        False,
    )
    assert (response["engine_enterprise"], response["sys_name"]) == (8072, "rtu-12")
    assert (encrypted["pdu_type"], encrypted["encrypted"], encrypted["request_id"]) == (
        "encrypted",
        True,
        None,
    )
    assert encrypted["oids"] == []
    assert run.weirds() == []


# ---------------------------------------------------------------------- recognition


def test_snmp_on_other_port_is_found_and_other_traffic_on_161_is_not(tmp_path: Path) -> None:
    get = SNMP(
        version=1,
        community=b"public",
        PDU=SNMPget(id=9, varbindlist=[SNMPvarbind(oid=ASN1_OID("1.3.6.1.2.1.1.1.0"))]),
    )
    dns = H("1234010000010000000000000377777706676f6f676c6503636f6d0000010001")
    packets = [
        datagram(get, aport=10161),  # an agent on a non-standard port
        datagram(dns, aport=161, mport=50001),  # a DNS query sent to port 161
        datagram(b"\x30\x03\x02\x01\x07", aport=161, mport=50002),  # version 7: not SNMP
        datagram(b"hello agent", aport=162, mport=50003),
    ]
    run, _ = run_packets(tmp_path, packets)
    events = run.snmp()
    assert [(e["resp_p"], e["request_id"]) for e in events] == [(10161, 9)]
    assert run.weirds() == []


@pytest.mark.parametrize(
    ("data", "sport", "dport", "verdict"),
    [
        (v2c(b"public", pdu(0xA0, 1, 0, 0, varbinds())), 40000, 161, Verdict.YES),
        (v2c(b"public", pdu(0xA0, 1, 0, 0, varbinds())), 40000, 5000, Verdict.YES),
        (v2c(b"public", pdu(0xA0, 1, 0, 0, varbinds()))[:-1], 40000, 5000, Verdict.NO),
        (v2c(b"public", pdu(0xA0, 1, 0, 0, varbinds()))[:-1], 40000, 161, Verdict.YES),  # truncated: weird
        (v2c(b"public", pdu(0xA0, 1, 0, 0, varbinds()), version=2), 40000, 161, Verdict.NO),
        (v2c(b"public", tlv(0xA9, b"")), 40000, 5000, Verdict.NO),
        (seq(ber_int(0), octets(b"x"), tlv(0xA4, ber_int(1))), 40000, 5000, Verdict.NO),  # trap without OID
        (b"\x30\x80\x02\x01\x00\x00\x00", 40000, 5000, Verdict.NO),
        (H("1234010000010000000000000377777700"), 40000, 161, Verdict.NO),
        (b"", 40000, 161, Verdict.NO),
    ],
)
def test_recognize(data: bytes, sport: int, dport: int, verdict: Verdict) -> None:
    assert SnmpDissector.recognize(data, Transport.UDP, sport, dport) == verdict
    assert SnmpDissector.recognize(data, Transport.TCP, sport, dport) == Verdict.NO


# ---------------------------------------------------------------------- malformed input

GOOD_BINDINGS = varbinds(("1.3.6.1.2.1.1.5.0", octets(b"x")))


@pytest.mark.parametrize(
    ("data", "weird"),
    [
        (v2c(b"public", pdu(0xA2, 1, 0, 0, GOOD_BINDINGS))[:-3], "snmp_truncated"),
        (b"\x30\x80" + ber_int(1) + octets(b"public") + b"\x00\x00", "snmp_indefinite_length"),
        (b"\x30\x85\x00\x00\x00\x00\x05" + ber_int(0), "snmp_bad_length"),
        (seq(ber_int(1), octets(b"public"), b"\xbf\x21\x00"), "snmp_unsupported_tag"),
        (seq(tlv(0x02, b""), octets(b"public")), "snmp_bad_integer"),
        (seq(ber_int(1), tlv(0x02, bytes(10))), "snmp_unexpected_tag"),
        (seq(ber_int(2), octets(b"public")), "snmp_unknown_version"),
        (v2c(b"public", tlv(0xA9, ber_int(1))), "snmp_unknown_pdu_type"),
        (
            v2c(b"public", pdu(0xA2, 1, 0, 0, varbinds(("1.3.6.1.2", octets(b"x"))) + b"\x05\x00")),
            "snmp_trailing_bytes",
        ),
        (v2c(b"public", pdu(0xA2, 1, 0, 0, GOOD_BINDINGS)) + b"\x00", "snmp_trailing_bytes"),
        (v2c(b"public", pdu(0xA2, 1, 0, 0, seq(seq(tlv(0x06, H("2b0686")), octets(b"x"))))), "snmp_bad_oid"),
        (v2c(b"public", pdu(0xA2, 1, 0, 0, seq(seq(tlv(0x06, b""), octets(b"x"))))), "snmp_bad_oid"),
        (v2c(b"public", pdu(0xA2, 1, 0, 0, seq(seq(tlv(0x06, H("2b80")), octets(b"x"))))), "snmp_bad_oid"),
        (
            v2c(b"public", pdu(0xA2, 1, 0, 0, seq(seq(tlv(0x06, H("2b9080808000")), octets(b"x"))))),
            "snmp_bad_oid",
        ),
        (
            v2c(b"public", pdu(0xA2, 1, 0, 0, varbinds(("1.3.6", tlv(0x40, H("0a0000")))))),
            "snmp_bad_ip_address",
        ),
        (v2c(b"public", pdu(0xA2, 1, 0, 0, varbinds(("1.3.6", tlv(0x05, b"\x00"))))), "snmp_bad_null"),
        (v2c(b"public", pdu(0xA2, 1, 0, 0, varbinds(("1.3.6", tlv(0x41, b""))))), "snmp_bad_integer"),
        (v2c(b"public", pdu(0xA2, 1, 0, 0, seq(octets(b"x")))), "snmp_unexpected_tag"),
        (v2c(b"public", pdu(0xA5, 1, 0, 5, varbinds()), version=0), "snmp_pdu_version_mismatch"),
        (
            v2c(b"public", tlv(0xA4, ber_oid("1.3.6.1.4.1.9") + tlv(0x40, H("0a00")) + ber_int(0))),
            "snmp_bad_ip_address",
        ),
        (
            v2c(
                b"public",
                tlv(
                    0xA4,
                    ber_oid("1.3.6.1.4")
                    + tlv(0x40, H("0a000001"))
                    + ber_int(6)
                    + ber_int(1)
                    + ber_int(0, tag=0x43)
                    + varbinds(),
                ),
                version=1,
            ),
            "snmp_pdu_version_mismatch",
        ),
        (
            seq(
                ber_int(3),
                seq(ber_int(1), ber_int(1500), octets(b"\x04\x00"), ber_int(3)),
                octets(b""),
                octets(b"x"),
            ),
            "snmp_bad_msg_flags",
        ),
        (v3(1, 0x02, engine=ENGINE, boots=1, time=1, user=USER, msg_data=octets(b"x")), "snmp_bad_msg_flags"),
        (
            v3(1, 0x01, engine=ENGINE, boots=1, time=1, user=USER, msg_data=octets(b"x")),
            "snmp_privacy_flag_mismatch",
        ),
        (
            v3(
                1,
                0x03,
                engine=ENGINE,
                boots=1,
                time=1,
                user=USER,
                msg_data=scoped(b"", b"", pdu(0xA0, 1, 0, 0, varbinds())),
            ),
            "snmp_privacy_flag_mismatch",
        ),
        (
            seq(
                ber_int(3),
                seq(ber_int(1), ber_int(1500), octets(b"\x04"), ber_int(3)),
                octets(b"\x30\x01"),
                octets(b"x"),
            ),
            "snmp_bad_security_parameters",
        ),
        (v3(1, 0, engine=ENGINE, boots=1, time=1, user=USER, msg_data=ber_int(5)), "snmp_unexpected_tag"),
    ],
)
def test_malformed_messages_become_weirds(data: bytes, weird: str) -> None:
    col = Collector().parse(data)
    assert weird in col.weirds()
    assert len(col.snmp()) <= 1


def test_partial_message_keeps_what_was_decoded() -> None:
    data = v2c(
        b"public",
        pdu(0xA2, 77, 0, 0, seq(seq(ber_oid("1.3.6.1.2.1.1.5.0"), octets(b"a")), seq(octets(b"b")))),
    )
    event, weirds = one(data)
    assert weirds == ["snmp_unexpected_tag"]
    assert (event.pdu_type, event.request_id, event.oids, event.values) == (
        "response",
        77,
        ["1.3.6.1.2.1.1.5.0"],
        ["a"],
    )
    assert event.binding_count == 2


def test_bindings_and_values_are_capped() -> None:
    many = varbinds(*((f"1.3.6.1.4.1.1.{i}", octets(b"v" * 3000)) for i in range(MAX_BINDINGS + 10)))
    event, weirds = one(v2c(b"public", pdu(0xA2, 1, 0, 0, many)))
    assert weirds == []
    assert event.binding_count == MAX_BINDINGS + 10
    assert len(event.oids) == len(event.values) == MAX_BINDINGS
    assert all(len(v) == MAX_VALUE_BYTES for v in event.values)


def test_ber_reader_limits_nesting_depth() -> None:
    data = b"\x30\x00"
    for _ in range(MAX_DEPTH + 2):
        data = seq(data)
    reader = BerReader(data)
    for _ in range(MAX_DEPTH):
        reader = reader.enter(reader.expect(0x30, "nested"), "nested")
    with pytest.raises(BerError) as error:
        reader.enter(reader.expect(0x30, "nested"), "nested")
    assert error.value.name == "snmp_too_deep"


def test_ber_lengths_long_form_and_oid_arcs() -> None:
    reader = BerReader(H("048200030a0b0c"))
    assert reader.read("long form").value == H("0a0b0c")
    with pytest.raises(BerError):
        BerReader(H("0482000a0a0b0c")).read("too long")  # 10 announced, 3 present
    # X.690 8.19 examples: joint-iso-itu-t arcs over 39, and a multi-octet sub-identifier.
    assert decode_oid(H("8837")) == "2.999"
    assert decode_oid(H("2b0601040182370a")) == "1.3.6.1.4.1.311.10"
    assert decode_oid(H("2b8fffffff7f")) == "1.3.4294967295"


def test_render_octets() -> None:
    assert render_octets(b"Chandra's cube") == "Chandra's cube"
    assert render_octets(H("080037 15e6bc".replace(" ", ""))) == "\\x08\\x007\\x15\\xe6\\xbc"
    assert render_octets("Zürich".encode()) == "Zürich"
    assert render_octets(b"a\\b") == "a\\\\b"
    assert render_octets(b"\r\n") == "\\x0d\\x0a"


# ---------------------------------------------------------------------- fuzz


def _exercise(data: bytes) -> None:
    for sport, dport in ((40000, 161), (40000, 5000)):
        SnmpDissector.recognize(data, Transport.UDP, sport, dport)
    col = Collector().parse(data)
    assert len(col.snmp()) <= 1
    assert len(col.events) <= 1 + 4 + MAX_BINDINGS * 2


REAL = [bytes(p[UDP].payload) for p in v2c_packets() + v3_packets()]


@pytest.fixture(scope="module")
def walk_datagrams(corpus: Path) -> list[bytes]:
    return [bytes(p[UDP].payload) for p in rdpcap(str(corpus / "snmp" / "snmpwalk-short.pcap"))[:40]]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _exercise(data)
    _exercise(b"\x30" + data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(REAL),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
)
def test_fuzz_mutated_real_messages(message: bytes, mutations: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(message)
    for position, value in mutations:
        data[position % len(data)] = value
    _exercise(bytes(data[:cut]))
    _exercise(bytes(data))


def test_truncations_of_corpus_messages(walk_datagrams: list[bytes]) -> None:
    for message in walk_datagrams:
        for cut in range(len(message)):
            col = Collector().parse(message[:cut])
            if cut:
                assert col.weirds(), f"a message cut at {cut} bytes gave no weird"


# ---------------------------------------------------------------------- documentation


def test_every_event_field_is_documented() -> None:
    doc = DOC.read_text()
    assert f"`{SnmpEvent.log}`" in doc
    for f in dataclasses.fields(SnmpEvent):
        assert f"| `{f.name}` |" in doc, f"SnmpEvent.{f.name} is not documented"
    for name in sorted(set(re.findall(r'"(snmp_[a-z_0-9]+)"', MODULE.read_text()))):
        assert f"`{name}`" in doc, f"weird {name} is not documented"
