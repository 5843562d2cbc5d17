"""Modbus/TCP dissector: golden comparisons with Zeek and tshark, built captures, sans-io and fuzz tests.

Golden references (``../shared/corpus/modbus``), each matched to the Zeek btest that produced it:

- ``modbus-and-non-modbus-p502.pcap`` -> ``expected/modbus.modbus_and_non_modbus_on_port_502/modbus.log``
  (test ``modbus_and_non_modbus_on_port_502.test``): one Modbus flow and six other protocols on port 502;
- ``modbusSmall.pcap`` -> ``expected/modbus.coil_parsing_small/output`` and ``coverage`` (test
  ``coil_parsing_small.zeek``: Zeek's per-event trace, ``sort | uniq -c``);
- ``fuzz-72.pcap`` -> ``expected/modbus.exception_handling/modbus.log`` (test ``exception_handling.test``:
  fuzzed Modbus traffic that must not crash the analyzer).

Zeek logs compare on (orig_h, orig_p, resp_h, resp_p, tid, unit, func, pdu_type, exception); the fields
no Zeek log carries (addresses, quantities, values, device identification) are compared with tshark.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import wrpcap

from fieldward.pipeline import AnalysisResult, analyze
from fieldward.protocols.base import Event, FlowInfo, PduContext, ProtocolWeird, Transport, Verdict
from fieldward.protocols.modbus import (
    ModbusDeviceIdEvent,
    ModbusDissector,
    ModbusEvent,
    function_name,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "modbus.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "modbus.py"
ID_FIELDS = ("orig_h", "orig_p", "resp_h", "resp_p")
H = bytes.fromhex


# ---------------------------------------------------------------------- helpers


def adu(tid: int, unit: int, fc: int, body: bytes = b"", *, pid: int = 0, length: int | None = None) -> bytes:
    """A Modbus/TCP ADU: MBAP header (length computed unless given), function code, body."""
    length = 2 + len(body) if length is None else length
    return struct.pack(">HHHBB", tid, pid, length, unit, fc) + body


@dataclass
class TcpConversation:
    """A TCP connection built packet by packet with consistent sequence numbers (scapy)."""

    client: str = "10.20.0.5"
    server: str = "10.20.0.10"
    cport: int = 40001
    sport: int = 502
    packets: list[Packet] = field(default_factory=list)
    cseq: int = 1000
    sseq: int = 5000

    def __post_init__(self) -> None:
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

    def c(self, *segments: bytes) -> TcpConversation:
        """Client segments (one TCP segment each)."""
        for data in segments:
            self._add(True, "PA", data)
        return self

    def s(self, *segments: bytes) -> TcpConversation:
        """Server segments."""
        for data in segments:
            self._add(False, "PA", data)
        return self

    def done(self) -> list[Packet]:
        self._add(True, "FA", b"")
        self._add(False, "FA", b"")
        return self.packets


def write_pcap(path: Path, packets: list[Packet], start: float = 1_700_000_000.0) -> Path:
    for i, packet in enumerate(packets):
        packet.time = start + i * 0.01
    wrpcap(str(path), packets)
    return path


@dataclass
class Run:
    result: AnalysisResult
    logs: dict[str, list[dict[str, Any]]]

    def rows(self, log: str) -> list[dict[str, Any]]:
        return self.logs.get(log, [])

    def weirds(self) -> list[str]:
        return [r["name"] for r in self.rows("weird") if r["protocol"] == "modbus"]


def run_capture(capture: Path, out: Path) -> Run:
    """analyze() one capture and read back every events file (ts as integer ns)."""
    result = analyze([capture], out)
    logs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((out / "events").glob("*.parquet")):
        table = pq.read_table(path)
        table = table.set_column(table.schema.get_field_index("ts"), "ts", table["ts"].cast(pa.int64()))
        logs[path.stem] = table.to_pylist()
    return Run(result, logs)


def run_packets(tmp_path: Path, packets: list[Packet], name: str = "built") -> Run:
    return run_capture(write_pcap(tmp_path / f"{name}.pcap", packets), tmp_path / f"out-{name}")


class Collector:
    """A PduContext for sans-io tests: collects events and weirds."""

    def __init__(self, transport: Transport = Transport.TCP, orig_p: int = 40001, resp_p: int = 502) -> None:
        self.flow = FlowInfo(7, transport, "10.0.0.1", orig_p, "10.0.0.2", resp_p)
        self.events: list[Event] = []
        self.ctx = PduContext(self.flow, "modbus", self.events.append, self.events.append)

    def feed(self, dissector: ModbusDissector, stream: bytes, is_orig: bool) -> bytes:
        """Frame and parse a byte stream like the engine does; returns the unframed rest."""
        self.ctx.is_orig = is_orig
        buf = stream
        while buf:
            size = dissector.frame(buf, is_orig)
            if size == 0:
                break
            if size < 0 or size > len(buf):
                self.ctx.weird("modbus_unframeable_data", f"{len(buf)} bytes dropped")
                return b""
            dissector.parse(buf[:size], self.ctx)
            buf = buf[size:]
        return buf

    def parse(self, dissector: ModbusDissector, pdu: bytes, is_orig: bool) -> None:
        self.ctx.is_orig = is_orig
        dissector.parse(pdu, self.ctx)

    def modbus(self) -> list[ModbusEvent]:
        return [e for e in self.events if isinstance(e, ModbusEvent)]

    def device_ids(self) -> list[ModbusDeviceIdEvent]:
        return [e for e in self.events if isinstance(e, ModbusDeviceIdEvent)]

    def weirds(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, ProtocolWeird)]


def sans_io(requests_and_responses: list[tuple[bytes, bytes]]) -> Collector:
    dissector = ModbusDissector(Collector().flow)
    col = Collector()
    for request, response in requests_and_responses:
        col.feed(dissector, request, True)
        col.feed(dissector, response, False)
    return col


# ---------------------------------------------------------------------- reference readers


def zeek_log(path: Path) -> list[dict[str, str]]:
    """Rows of a Zeek ASCII log (btest baseline) as dicts keyed by the ``#fields`` names."""
    names: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            names = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(names, line.split("\t"), strict=True)))
    return rows


Key = tuple[str, int, str, int, int, int, str, str, str | None]


def zeek_key(row: dict[str, str]) -> Key:
    exception = row["exception"]
    return (
        row["id.orig_h"],
        int(row["id.orig_p"]),
        row["id.resp_h"],
        int(row["id.resp_p"]),
        int(row["tid"]),
        int(row["unit"]),
        row["func"],
        row["pdu_type"],
        None if exception == "-" else exception,
    )


def zeek_id(row: dict[str, Any]) -> tuple[str, int, str, int]:
    """Our flow endpoints as Zeek orders them.

    FieldWard's flow table makes the sender of a flow's first packet its originator; Zeek flips a
    connection whose first packet came from a "likely server port" (Modbus registers 502). So when only
    our originator is on port 502, the endpoints are swapped to compare.
    """
    if row["orig_p"] == 502 and row["resp_p"] != 502:
        return row["resp_h"], row["resp_p"], row["orig_h"], row["orig_p"]
    return row["orig_h"], row["orig_p"], row["resp_h"], row["resp_p"]


def our_key(row: dict[str, Any]) -> Key:
    return (
        *zeek_id(row),
        row["tid"],
        row["unit"],
        row["func"],
        row["pdu_type"],
        row["exception"],
    )


def tshark_rows(
    tshark: str, capture: Path, fields: list[str], *options: str, display_filter: str = "mbtcp"
) -> list[dict[str, str]]:
    """One dict per frame matching ``display_filter`` (by default: Modbus/TCP frames): field -> value
    (repeated occurrences joined with ';')."""
    cmd = [tshark, "-r", str(capture), *options, "-Y", display_filter, "-T", "fields"]
    cmd += ["-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=;"]
    for name in ["frame.number", "frame.time_epoch", "ip.src", *fields]:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    names = ["frame.number", "frame.time_epoch", "ip.src", *fields]
    return [dict(zip(names, line.split("|"), strict=True)) for line in out.splitlines() if line]


def epoch_ns(text: str) -> int:
    seconds, _, fraction = text.partition(".")
    return int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0")[:9])


def ints(text: str) -> list[int]:
    return [int(v, 0) for v in text.split(";") if v]


TSHARK_FIELDS = [
    "mbtcp.trans_id",
    "mbtcp.unit_id",
    "mbtcp.len",
    "modbus.func_code",
    "modbus.reference_num",
    "modbus.word_cnt",
    "modbus.bit_cnt",
    "modbus.regnum16",
    "modbus.regval_uint16",
    "modbus.bitnum",
    "modbus.bitval",
    "modbus.data",
    "modbus.read_reference_num",
    "modbus.read_word_cnt",
    "modbus.write_reference_num",
    "modbus.write_word_cnt",
    "modbus.and_mask",
    "modbus.or_mask",
    "modbus.diagnostic_code",
    "modbus.ev_status",
    "modbus.ev_count",
    "modbus.ev_msg_count",
    "modbus.exception_code",
    "modbus.mei",
]


def check_with_tshark(event: dict[str, Any], t: dict[str, str]) -> None:
    """Every field tshark also decodes agrees with ours (one Modbus event, one tshark frame)."""
    code = event["function_code"]
    assert int(t["mbtcp.trans_id"]) == event["tid"]
    assert int(t["mbtcp.unit_id"]) == event["unit"]
    assert int(t["mbtcp.len"]) == event["len"]
    assert int(t["modbus.func_code"]) == code & 0x7F
    request = event["pdu_type"] == "REQ"
    if code & 0x80:
        assert int(t["modbus.exception_code"]) == event["exception_code"]
        return
    if request and code in (1, 2, 3, 4, 15, 16):
        assert int(t["modbus.reference_num"]) == event["address"]
        assert int(t["modbus.bit_cnt"] or t["modbus.word_cnt"]) == event["quantity"]
    if request and code == 16:
        assert ints(t["modbus.regval_uint16"]) == event["registers"]
    if not request and code in (3, 4):
        assert ints(t["modbus.regval_uint16"]) == event["registers"]
        assert ints(t["modbus.regnum16"])[0] == event["address"]
    if not request and code in (1, 2):
        assert ints(t["modbus.bitval"]) == event["coils"]
        assert ints(t["modbus.bitnum"]) == [event["address"] + i for i in range(len(event["coils"]))]
    if code in (5, 6):
        assert int(t["modbus.reference_num"]) == event["address"]
        value = int(t["modbus.data"], 16)
        if code == 5:
            assert event["coils"] == [int(value == 0xFF00)]
        else:
            assert event["registers"] == [value]
    if code == 8:
        assert int(t["modbus.diagnostic_code"]) == event["sub_function"]
    if code == 22:
        assert int(t["modbus.reference_num"]) == event["address"]
        assert int(t["modbus.and_mask"], 16) == event["and_mask"]
        assert int(t["modbus.or_mask"], 16) == event["or_mask"]
    if code == 23 and request:
        assert int(t["modbus.read_reference_num"]) == event["address"]
        assert int(t["modbus.read_word_cnt"]) == event["quantity"]
        assert int(t["modbus.write_reference_num"]) == event["write_start_address"]
        assert int(t["modbus.write_word_cnt"]) == event["write_quantity"]
    if code in (23, 24) and not request:
        data = H(t["modbus.data"])
        assert [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)] == event["registers"]
    if code == 24 and request:
        assert int(t["modbus.reference_num"]) == event["address"]
    if code == 12 and not request:
        status, count = int(t["modbus.ev_status"], 16), int(t["modbus.ev_count"])
        assert event["registers"] == [status, count, int(t["modbus.ev_msg_count"])]
    if code == 17 and not request:
        assert H(t["modbus.data"])[1:] == event["data"]
    if code == 43:
        assert int(t["modbus.mei"]) == event["mei_type"]


# ---------------------------------------------------------------------- golden: Zeek + tshark


def test_golden_modbus_and_non_modbus_on_port_502(corpus: Path, tshark: str, tmp_path: Path) -> None:
    capture = corpus / "modbus" / "modbus-and-non-modbus-p502.pcap"
    expected = corpus / "modbus" / "expected" / "modbus.modbus_and_non_modbus_on_port_502" / "modbus.log"
    run = run_capture(capture, tmp_path / "out")
    ours = run.rows("modbus")
    zeek = Counter(zeek_key(r) for r in zeek_log(expected))
    assert Counter(our_key(r) for r in ours) == zeek  # 12 rows, all matched, none extra
    assert sum(zeek.values()) == 12
    # Six flows on port 502 carry DCE-RPC, Sun RPC, TLS, HTTP, Magellan and RDP: none is Modbus.
    assert run.result.dissected_flows.get("modbus") == 1
    assert {(r["orig_h"], r["resp_h"]) for r in ours} == {("10.0.0.9", "10.0.0.3")}
    assert run.weirds() == []
    # Addresses, quantities and values (not in modbus.log) agree with tshark, frame by frame.
    frames = {epoch_ns(t["frame.time_epoch"]): t for t in tshark_rows(tshark, capture, TSHARK_FIELDS)}
    assert len(frames) == len(ours)
    for event in ours:
        check_with_tshark(event, frames[event["ts"]])
    assert [(r["address"], r["quantity"], r["coils"], r["registers"]) for r in ours] == [
        (0, 1, None, None),
        (0, 1, [0], None),
        (2, 2, None, None),
        (2, 2, [0, 0], None),
        (5, 2, None, None),
        (5, 2, None, [9, 24]),
        (2, 1, [0], None),
        (2, 1, [0], None),
        (1, 1, [0], None),
        (1, 1, [0], None),
        (5, 1, None, [11]),
        (5, 1, None, [11]),
    ]


TRACE_LINE = re.compile(
    r"^(?P<count>\d+) (?P<event>\w+), \[orig_h=(?P<orig_h>[^,]+), orig_p=(?P<orig_p>\d+)/tcp, "
    r"resp_h=(?P<resp_h>[^,]+), resp_p=(?P<resp_p>\d+)/tcp, proto=6, ctx=\[\]\], "
    r"\[tid=(?P<tid>\d+), pid=(?P<pid>\d+), uid=(?P<uid>\d+), function_code=(?P<fc>\d+), "
    r"len=(?P<len>\d+)\], (?P<args>.*)$"
)


def _bools(text: str) -> list[int]:
    return [int(v == "T") for v in text.strip("[]").split(", ")]


def test_golden_coil_parsing_small(corpus: Path, tmp_path: Path) -> None:
    """modbusSmall.pcap against Zeek's event trace (``output``) and event coverage (``coverage``)."""
    base = corpus / "modbus" / "expected" / "modbus.coil_parsing_small"
    run = run_capture(corpus / "modbus" / "modbusSmall.pcap", tmp_path / "out")
    ours = run.rows("modbus")
    assert run.weirds() == []

    def header(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"], r["tid"], r["unit"], r["function_code"])

    expected: dict[str, Counter[tuple[Any, ...]]] = {}
    for line in (base / "output").read_text().splitlines():
        m = TRACE_LINE.match(line)
        if m is None:
            continue
        assert m["pid"] == "0"  # we only report protocol id 0 (anything else is not Modbus)
        head: tuple[Any, ...] = (m["orig_h"], int(m["orig_p"]), m["resp_h"], int(m["resp_p"]), int(m["tid"]))
        head += (int(m["uid"]), int(m["fc"]))
        args = m["args"]
        if m["event"] == "modbus_message":
            value: tuple[Any, ...] = (*head, int(m["len"]), args == "T")
        elif m["event"] == "modbus_read_coils_response":
            # Zeek reports byte_count * 8 values (the padding bits too: it keeps no request state);
            # we report the requested quantity. The padding bits must be zero (spec 6.1).
            coils = _bools(args)
            assert not any(coils[3:])
            value = (*head, tuple(coils[:3]))
        elif m["event"] == "modbus_write_multiple_coils_request":
            start, _, coil_text = args.partition(", ")
            value = (*head, int(start), tuple(_bools(coil_text)))
        else:  # read_coils_request, write_multiple_coils_response: start address, quantity
            start, quantity = args.split(", ")
            value = (*head, int(start), int(quantity))
        expected.setdefault(m["event"], Counter())[value] += int(m["count"])

    got: dict[str, Counter[tuple[Any, ...]]] = {}
    for r in ours:
        got.setdefault("modbus_message", Counter())[(*header(r), r["len"], r["is_orig"])] += 1
        kind = {1: "read_coils", 15: "write_multiple_coils"}[r["function_code"]]
        suffix = "request" if r["pdu_type"] == "REQ" else "response"
        if (kind, suffix) == ("read_coils", "response"):
            value = (*header(r), tuple(r["coils"]))
        elif (kind, suffix) == ("write_multiple_coils", "request"):
            value = (*header(r), r["address"], tuple(r["coils"]))
        else:
            value = (*header(r), r["address"], r["quantity"])
        got.setdefault(f"modbus_{kind}_{suffix}", Counter())[value] += 1
    assert got == expected
    assert sum(expected["modbus_message"].values()) == 32
    coverage = (base / "coverage").read_text().splitlines()[-1]
    assert coverage.startswith(f"{len(expected)} of ")  # "5 of 32 events triggered by trace"


# fuzz-72.pcap: the rows that differ from Zeek, each justified in test_golden_fuzz_72 below.
FUZZ_CLIENT = ("192.168.66.235", 2582, "166.161.16.230", 502)
FUZZ_ZEEK_ONLY = Counter(
    {
        (*FUZZ_CLIENT, 0, 0, "unknown-38", "REQ", None): 1,
        (*FUZZ_CLIENT, 0, 1, "unknown-156", "RESP", "ILLEGAL_FUNCTION"): 1,
        (*FUZZ_CLIENT, 0, 1, "unknown-160", "RESP", "ILLEGAL_FUNCTION"): 1,
        (*FUZZ_CLIENT, 0, 1, "unknown-175", "RESP", "ILLEGAL_FUNCTION"): 1,
        (*FUZZ_CLIENT, 0, 1, "unknown-179", "RESP", "ILLEGAL_FUNCTION"): 1,
    }
)
FUZZ_OURS_ONLY = Counter(
    {
        (*FUZZ_CLIENT, 243, 1, "unknown-53", "REQ", None): 1,
        (*FUZZ_CLIENT, 0, 1, "ENCAP_INTERFACE_TRANSPORT", "REQ", None): 1,
        (*FUZZ_CLIENT, 0, 1, "unknown-46", "REQ", None): 1,
        (*FUZZ_CLIENT, 0, 1, "unknown-47", "REQ", None): 1,
        (*FUZZ_CLIENT, 0, 1, "unknown-50", "REQ", None): 1,
        (*FUZZ_CLIENT, 0, 1, "unknown-52", "REQ", None): 1,
        (*FUZZ_CLIENT, 0, 1, "unknown-70", "REQ", None): 1,
    }
)


def test_golden_fuzz_72(corpus: Path, tshark: str, tmp_path: Path) -> None:
    """fuzz-72.pcap (fuzzed sequence numbers, flags and headers): weirds, no crash, Zeek's rows.

    10 of Zeek's 15 rows match exactly. Every difference is a TCP-level decision on fuzzed segments
    (where Zeek, tshark and FieldWard's reassembler disagree), never a Modbus decoding difference:

    - Zeek only, ``unknown-38`` (frame 14): its MBAP length 37 announces a 43-byte ADU but only 12 bytes
      were captured before a hole in the stream. Zeek logs on parsing the header; we report complete
      ADUs only (the loss is the weird ``modbus_pdu_lost_in_gap``); tshark does not dissect it either.
    - Zeek only, the four exception responses (frames 2, 5, 19, 21): the server's first packet (frame 1)
      is a SYN|FIN|PSH|URG|ECE|CWR segment; FieldWard's TCP reassembler ends the server's stream at its
      FIN, so no later server byte reaches the dissector.
    - ours only, frames 16, 17, 18, 20, 22, 36: complete, well-formed ADUs that tshark dissects exactly
      as we do; Zeek lost them because, after frame 14, its parser kept consuming stream bytes as the
      body of the announced 43-byte ADU across the holes.
    - ours only, frame 23 (tid 243): its fuzzed sequence number places it in a 3-byte hole before
      frame 16; FieldWard's reassembler delivers it there, while tshark (and Zeek) call it a spurious
      retransmission. It is a complete, well-formed ADU.
    """
    capture = corpus / "modbus" / "fuzz-72.pcap"
    expected = corpus / "modbus" / "expected" / "modbus.exception_handling" / "modbus.log"
    run = run_capture(capture, tmp_path / "out")
    assert run.result.weird.counts.get("dissector_exception", 0) == 0
    assert run.weirds()  # the malformed stream is reported, never a crash
    assert "modbus_unframeable_data" in run.weirds()
    assert "modbus_pdu_lost_in_gap" in run.weirds()

    zeek = Counter(zeek_key(r) for r in zeek_log(expected))
    ours = Counter(our_key(r) for r in run.rows("modbus"))
    assert sum(zeek.values()) == 15
    assert sum((zeek & ours).values()) == 10
    assert zeek - ours == FUZZ_ZEEK_ONLY
    assert ours - zeek == FUZZ_OURS_ONLY

    # Three tshark views of the capture:
    # - segments: every TCP segment with tshark's sequence analysis (flags, retransmission verdicts);
    # - raw: each segment's payload dissected on its own as Modbus/TCP. Sequence analysis and
    #   desegmentation are off: with them on, tshark hands no out-of-order or retransmitted segment
    #   (frames 2, 19, 21, 23) to the Modbus dissector at all;
    # - reassembled: what tshark's default TCP reassembly dissects as Modbus/TCP.
    tcp_fields = ["tcp.flags", "tcp.len", "tcp.payload", "tcp.analysis.retransmission"]
    segments = {
        int(t["frame.number"]): t for t in tshark_rows(tshark, capture, tcp_fields, display_filter="tcp")
    }
    no_analysis = ("-o", "tcp.desegment_tcp_streams:FALSE", "-o", "tcp.analyze_sequence_numbers:FALSE")
    raw = {
        int(t["frame.number"]): t
        for t in tshark_rows(tshark, capture, ["tcp.len", *TSHARK_FIELDS], *no_analysis)
    }
    reassembled = tshark_rows(tshark, capture, ["mbtcp.trans_id", "mbtcp.unit_id", "modbus.func_code"])
    dissected = {int(t["frame.number"]) for t in reassembled}
    # unknown-38: an MBAP length of 37 in a 12-byte segment, never completed (tshark agrees).
    assert (raw[14]["mbtcp.len"], raw[14]["tcp.len"], raw[14]["modbus.func_code"]) == ("37", "12", "38")
    assert 14 not in dissected
    # The server's first segment is SYN+FIN (with payload): our reassembler ends that stream there.
    assert segments[1]["ip.src"] == FUZZ_CLIENT[2]
    assert int(segments[1]["tcp.flags"], 16) & 0x03 == 0x03
    assert {int(raw[n]["modbus.func_code"]) | 0x80 for n in (2, 5, 19, 21)} == {156, 160, 175, 179}
    assert {(raw[n]["ip.src"], raw[n]["modbus.exception_code"]) for n in (2, 5, 19, 21)} == {
        (FUZZ_CLIENT[2], "1")  # ILLEGAL_FUNCTION
    }
    # Ours only: tshark dissects the same complete ADUs from the reassembled stream...
    for frame, fc in ((16, 43), (17, 46), (18, 47), (20, 50), (22, 52), (36, 70)):
        assert frame in dissected
        assert int(raw[frame]["modbus.func_code"]) == fc
    # ... except frame 23, a (fuzzed) spurious retransmission for tshark, a hole filler for us.
    assert segments[23]["tcp.payload"].startswith("00f3000000060135")
    assert segments[23]["tcp.analysis.retransmission"] != ""
    assert 23 not in dissected
    # What we report for the client's frames is exactly what tshark dissects, plus frame 23.
    tshark_client = Counter(
        (int(t["mbtcp.trans_id"]), int(t["mbtcp.unit_id"]), function_name(int(t["modbus.func_code"])))
        for t in reassembled
        if t["ip.src"] == FUZZ_CLIENT[0]
    )
    ours_client = Counter(
        (r["tid"], r["unit"], r["func"]) for r in run.rows("modbus") if r["pdu_type"] == "REQ"
    )
    assert ours_client - tshark_client == Counter({(243, 1, "unknown-53"): 1})
    assert tshark_client - ours_client == Counter()


# ---------------------------------------------------------------------- built captures


EXCHANGES: list[tuple[int, bytes, bytes]] = [
    (1, H("0064000a"), H("02cd01")),  # read coils 100..109
    (2, H("00c80005"), H("0115")),  # read discrete inputs 200..204
    (3, H("012c0003"), H("06") + struct.pack(">3H", 1, 0x1234, 0xFFFF)),
    (4, H("01900002"), H("04") + struct.pack(">2H", 7, 8)),
    (5, H("0011ff00"), H("0011ff00")),  # write single coil 17 ON
    (6, H("0012beef"), H("0012beef")),
    (7, b"", H("6d")),  # read exception status
    (8, H("0000a537"), H("0000a537")),  # diagnostics: return query data
    (11, b"", H("ffff0108")),  # get comm event counter
    (12, b"", H("08000001080121" + "2000")),  # get comm event log
    (15, H("0013000a02cd01"), H("0013000a")),  # write multiple coils 19..28
    (16, H("00010002" + "04000a0102"), H("00010002")),
    (17, b"", H("04") + b"PLC\xff"),  # report server id
    (20, H("0e" + "06000400010002" + "06000300090002"), H("0c" + "05060dfe0020" + "050633cd0040")),
    (21, H("0d" + "06000400070003" + "06af04be100d"), H("0d" + "06000400070003" + "06af04be100d")),
    (22, H("000400f20025"), H("000400f20025")),  # mask write register
    (23, H("00030006000e0003" + "06" + "00ff00ff00ff"), H("0c") + struct.pack(">6H", *range(6))),
    (24, H("04de"), H("00060002" + "01b81284")),  # read FIFO queue
    (
        43,
        H("0e0100"),
        H("0e0101000003") + b"\x00\x0dFieldWard Inc" + b"\x01\x06FW-100" + b"\x02\x04V1.2",
    ),
    (
        43,
        H("0e0203"),
        H("0e0282ff0502") + b"\x03\x13http://example.com/" + b"\x04\x09Pump ctrl",
    ),
    (3, H("270f0001"), H("8302")),  # exception: illegal data address (response fc | 0x80)
    (65, H("0102"), H("c101")),  # user-defined function 65, answered ILLEGAL_FUNCTION
]


def exchange(tid: int, fc: int, request: bytes, response: bytes) -> tuple[bytes, bytes]:
    """Request and response ADUs; a response starting with fc | 0x80 is an exception response."""
    if response[:1] == bytes([fc | 0x80]):
        return adu(tid, 1, fc, request), adu(tid, 1, fc | 0x80, response[1:])
    return adu(tid, 1, fc, request), adu(tid, 1, fc, response)


def every_function() -> list[Packet]:
    conversation = TcpConversation()
    for tid, (fc, request, response) in enumerate(EXCHANGES, start=1):
        request_adu, response_adu = exchange(tid, fc, request, response)
        conversation.c(request_adu).s(response_adu)
    return conversation.done()


def test_every_function_from_real_bytes(tmp_path: Path, tshark: str) -> None:
    capture = write_pcap(tmp_path / "every.pcap", every_function())
    run = run_capture(capture, tmp_path / "out")
    events = run.rows("modbus")
    assert run.weirds() == []
    assert len(events) == 2 * len(EXCHANGES)
    by = {(e["tid"], e["pdu_type"]): e for e in events}

    def resp(tid: int) -> dict[str, Any]:
        return by[tid, "RESP"]

    def req(tid: int) -> dict[str, Any]:
        return by[tid, "REQ"]

    assert all(e["matched"] for e in events if e["pdu_type"] == "RESP")
    assert (req(1)["func"], req(1)["address"], req(1)["quantity"]) == ("READ_COILS", 100, 10)
    assert (resp(1)["address"], resp(1)["coils"]) == (100, [1, 0, 1, 1, 0, 0, 1, 1, 1, 0])
    assert (resp(2)["func"], resp(2)["address"], resp(2)["coils"]) == (
        "READ_DISCRETE_INPUTS",
        200,
        [1, 0, 1, 0, 1],
    )
    assert (resp(3)["address"], resp(3)["quantity"], resp(3)["registers"]) == (300, 3, [1, 0x1234, 0xFFFF])
    assert (resp(4)["func"], resp(4)["registers"]) == ("READ_INPUT_REGISTERS", [7, 8])
    assert (req(5)["address"], req(5)["coils"], resp(5)["coils"]) == (17, [1], [1])
    assert (req(6)["address"], req(6)["registers"]) == (18, [0xBEEF])
    assert (resp(7)["func"], resp(7)["coils"]) == ("READ_EXCEPTION_STATUS", [1, 0, 1, 1, 0, 1, 1, 0])
    assert (req(8)["sub_function"], req(8)["data"], resp(8)["data"]) == (0, H("a537"), H("a537"))
    assert (resp(9)["func"], resp(9)["registers"]) == ("GET_COMM_EVENT_COUNTER", [0xFFFF, 0x0108])
    assert (resp(10)["registers"], resp(10)["data"]) == ([0, 0x0108, 0x0121], H("2000"))
    assert (req(11)["address"], req(11)["quantity"]) == (19, 10)
    assert req(11)["coils"] == [1, 0, 1, 1, 0, 0, 1, 1, 1, 0]
    assert (resp(11)["address"], resp(11)["quantity"]) == (19, 10)
    assert (req(12)["func"], req(12)["address"], req(12)["registers"]) == (
        "WRITE_MULTIPLE_REGISTERS",
        1,
        [10, 258],
    )
    assert (resp(13)["func"], resp(13)["data"]) == ("REPORT_SLAVE_ID", b"PLC\xff")
    assert (req(14)["file_numbers"], req(14)["record_numbers"], req(14)["record_lengths"]) == (
        [4, 3],
        [1, 9],
        [2, 2],
    )
    assert (resp(14)["registers"], resp(14)["file_numbers"]) == ([0x0DFE, 0x20, 0x33CD, 0x40], [4, 3])
    assert (req(15)["file_numbers"], req(15)["record_numbers"], req(15)["registers"]) == (
        [4],
        [7],
        [0x06AF, 0x04BE, 0x100D],
    )
    assert (req(16)["address"], req(16)["and_mask"], req(16)["or_mask"]) == (4, 0xF2, 0x25)
    assert (req(17)["address"], req(17)["quantity"], req(17)["write_start_address"]) == (3, 6, 14)
    assert (req(17)["write_quantity"], req(17)["registers"]) == (3, [0xFF, 0xFF, 0xFF])
    assert (resp(17)["address"], resp(17)["registers"]) == (3, [0, 1, 2, 3, 4, 5])
    assert (req(18)["address"], resp(18)["quantity"], resp(18)["registers"]) == (0x04DE, 2, [0x01B8, 0x1284])
    assert (req(19)["func"], req(19)["mei_type"]) == ("ENCAP_INTERFACE_TRANSPORT", 14)
    exc = resp(21)
    assert (exc["func"], exc["function_code"], exc["exception_code"]) == (
        "READ_HOLDING_REGISTERS_EXCEPTION",
        0x83,
        2,
    )
    assert (exc["exception"], exc["address"], exc["quantity"]) == ("ILLEGAL_DATA_ADDRESS", 9999, 1)
    assert (req(22)["func"], req(22)["data"]) == ("unknown-65", H("0102"))
    assert (resp(22)["func"], resp(22)["exception"]) == ("unknown-193", "ILLEGAL_FUNCTION")
    assert [e["pdu_type"] for e in events] == ["REQ", "RESP"] * len(EXCHANGES)

    device = [
        (d["tid"], d["pdu_type"], d["device_id_code"], d["object_id_code"], d["object_id"], d["object_value"])
        for d in run.rows("modbus_device_id")
    ]
    assert device == [
        (19, "REQ", 1, 0, "VendorName", None),
        (19, "RESP", 1, 0, "VendorName", "FieldWard Inc"),
        (19, "RESP", 1, 1, "ProductCode", "FW-100"),
        (19, "RESP", 1, 2, "MajorMinorRevision", "V1.2"),
        (20, "REQ", 2, 3, "VendorUrl", None),
        (20, "RESP", 2, 3, "VendorUrl", "http://example.com/"),
        (20, "RESP", 2, 4, "ProductName", "Pump ctrl"),
    ]
    second = [d for d in run.rows("modbus_device_id") if d["tid"] == 20 and d["pdu_type"] == "RESP"]
    assert {
        (d["conformity_level_code"], d["conformity_level"], d["more_follows"], d["next_object_id"])
        for d in second
    } == {(0x82, "Regular Identification (Stream, Individual)", True, 5)}

    # Every field tshark decodes too agrees with ours.
    frames = {epoch_ns(t["frame.time_epoch"]): t for t in tshark_rows(tshark, capture, TSHARK_FIELDS)}
    for event in events:
        check_with_tshark(event, frames[event["ts"]])
    device_fields = [
        "modbus.read_device_id",
        "modbus.object_id",
        "modbus.object_str_value",
        "modbus.conformity_level",
        "modbus.more_follows",
        "modbus.next_object_id",
    ]
    by_frame = {epoch_ns(t["frame.time_epoch"]): t for t in tshark_rows(tshark, capture, device_fields)}
    for tid in (19, 20):
        t = by_frame[resp(tid)["ts"]]
        objects = [d for d in run.rows("modbus_device_id") if d["tid"] == tid and d["pdu_type"] == "RESP"]
        assert ints(t["modbus.object_id"]) == [d["object_id_code"] for d in objects]
        assert t["modbus.object_str_value"].split(";") == [d["object_value"] for d in objects]
        assert int(t["modbus.read_device_id"]) == objects[0]["device_id_code"]
        assert int(t["modbus.conformity_level"], 16) == objects[0]["conformity_level_code"]
        assert int(t["modbus.more_follows"], 16) == (0xFF if objects[0]["more_follows"] else 0)
        assert int(t["modbus.next_object_id"]) == objects[0]["next_object_id"]


def test_pdus_split_across_segments_and_several_in_one(tmp_path: Path) -> None:
    requests = b"".join(adu(tid, 1, 3, struct.pack(">HH", tid, 1)) for tid in range(1, 5))
    responses = b"".join(adu(tid, 1, 3, H("02") + struct.pack(">H", 100 + tid)) for tid in range(1, 5))
    conversation = TcpConversation()
    # Requests: 4 ADUs cut at awkward places (inside the MBAP header, inside a body).
    conversation.c(requests[:3], requests[3:15], requests[15:16], requests[16:])
    # Responses: all four in one segment.
    conversation.s(responses)
    run = run_packets(tmp_path, conversation.done())
    events = run.rows("modbus")
    assert [(e["tid"], e["pdu_type"], e["address"]) for e in events] == [
        *((tid, "REQ", tid) for tid in range(1, 5)),
        *((tid, "RESP", tid) for tid in range(1, 5)),
    ]
    assert [e["registers"] for e in events[4:]] == [[101], [102], [103], [104]]
    assert all(e["matched"] for e in events[4:])
    assert run.weirds() == []


def test_recognised_on_a_non_standard_port(tmp_path: Path) -> None:
    packets = (
        TcpConversation(sport=5020).c(adu(1, 1, 3, H("00000002"))).s(adu(1, 1, 3, H("0400010002"))).done()
    )
    run = run_packets(tmp_path, packets)
    assert run.result.dissected_flows == {"modbus": 1}
    assert [(e["pdu_type"], e["resp_p"], e["registers"]) for e in run.rows("modbus")] == [
        ("REQ", 5020, None),
        ("RESP", 5020, [1, 2]),
    ]
    # Off port 502, a vendor or unassigned function code alone does not make a flow Modbus.
    assert ModbusDissector.recognize(adu(1, 1, 0x41, H("0102")), Transport.TCP, 40001, 5020) == Verdict.NO
    assert ModbusDissector.recognize(adu(1, 1, 0x41, H("0102")), Transport.TCP, 40001, 502) == Verdict.YES


def test_other_protocols_on_port_502_are_not_modbus(tmp_path: Path) -> None:
    http = b"GET / HTTP/1.1\r\nHost: plc\r\nAccept: */*\r\n\r\n"
    tls = H("160301008501000081030373") + bytes(40)
    packets = TcpConversation(cport=40010).c(http).s(b"HTTP/1.1 200 OK\r\n\r\n").done()
    packets += TcpConversation(cport=40011).c(tls).done()
    packets += TcpConversation(cport=40012).c(bytes(5) + b"\x06\x01\x03").done()  # short of a body
    run = run_packets(tmp_path, packets)
    assert run.rows("modbus") == []
    assert "modbus" not in run.result.dissected_flows


def test_malformed_and_truncated_pdus_become_weirds(tmp_path: Path) -> None:
    conversation = TcpConversation()
    conversation.c(adu(1, 1, 3, H("00000001")))  # valid: the flow is recognised
    conversation.s(adu(1, 1, 3, H("020007")))
    conversation.c(adu(2, 1, 5, H("00011234")))  # coil value neither 0xff00 nor 0x0000
    conversation.c(adu(3, 1, 16, H("0001000306" + "00010002")))  # 3 registers announced, 2 present
    conversation.c(adu(4, 1, 3, H("0000")))  # request body truncated
    conversation.c(adu(5, 1, 1, H("00000000")))  # quantity 0
    conversation.c(b"\x00\x06\x12\x34\x00\x06\x01\x03\x00\x00\x00\x01")  # protocol id 0x1234: garbage
    conversation.c(adu(6, 1, 3, H("00000001")))  # resynchronised on the next segment
    conversation.s(adu(6, 1, 3, H("03000102")))  # odd byte count
    run = run_packets(tmp_path, conversation.done())
    assert run.result.weird.counts.get("dissector_exception", 0) == 0
    assert Counter(run.weirds()) == Counter(
        {
            "modbus_invalid_coil_value": 1,
            "modbus_byte_count_mismatch": 1,  # 6 bytes announced, 4 present
            "modbus_quantity_mismatch": 1,  # 4 bytes for 3 registers
            "modbus_truncated_pdu": 1,
            "modbus_invalid_quantity": 1,
            "modbus_unframeable_data": 1,
            "modbus_odd_byte_count": 1,
        }
    )
    tids = [(e["tid"], e["pdu_type"]) for e in run.rows("modbus")]
    assert tids == [
        (1, "REQ"),
        (1, "RESP"),
        (2, "REQ"),
        (3, "REQ"),
        (4, "REQ"),
        (5, "REQ"),
        (6, "REQ"),
        (6, "RESP"),
    ]


def test_udp_datagrams(tmp_path: Path) -> None:
    c, s = "10.30.0.1", "10.30.0.2"
    datagrams = [
        (c, s, 40000, 502, adu(1, 1, 4, H("00100002"))),
        (s, c, 502, 40000, adu(1, 1, 4, H("04000a000b"))),
        (c, s, 40000, 502, adu(2, 1, 6, H("0001")) + adu(3, 1, 6, H("00020003"))),  # truncated, then valid
    ]
    packets: list[Packet] = [
        Ether() / IP(src=a, dst=b) / UDP(sport=sp, dport=dp) / data for a, b, sp, dp, data in datagrams
    ]
    run = run_packets(tmp_path, packets)
    assert [(e["tid"], e["pdu_type"], e["registers"]) for e in run.rows("modbus")] == [
        (1, "REQ", None),
        (1, "RESP", [10, 11]),
        (2, "REQ", None),
        (3, "REQ", [3]),
    ]
    assert run.rows("modbus")[1]["address"] == 16
    assert run.weirds() == ["modbus_truncated_pdu"]


def test_server_seen_first_keeps_request_and_response_roles(tmp_path: Path) -> None:
    """Mid-stream pickup: the flow's first packet is the server's, so the server is the originator."""
    c, s = "10.40.0.1", "10.40.0.2"
    first, request, second = adu(7, 1, 3, H("020001")), adu(8, 1, 3, H("00000001")), adu(8, 1, 3, H("020002"))

    def segment(from_server: bool, seq: int, data: bytes) -> Packet:
        if from_server:
            return Ether() / IP(src=s, dst=c) / TCP(sport=502, dport=41000, flags="PA", seq=seq) / data
        return Ether() / IP(src=c, dst=s) / TCP(sport=41000, dport=502, flags="PA", seq=seq) / data

    packets = [segment(True, 100, first), segment(False, 1, request), segment(True, 100 + len(first), second)]
    run = run_packets(tmp_path, packets)
    events = run.rows("modbus")
    assert [(e["orig_p"], e["is_orig"], e["tid"], e["pdu_type"], e["matched"]) for e in events] == [
        (502, True, 7, "RESP", False),
        (502, False, 8, "REQ", False),
        (502, True, 8, "RESP", True),
    ]


# ---------------------------------------------------------------------- sans-io


def test_frame() -> None:
    d = ModbusDissector(Collector().flow)
    pdu = adu(1, 1, 3, H("00000001"))
    assert d.frame(pdu, True) == 12
    assert d.frame(pdu + pdu[:5], True) == 12
    for cut in range(12):
        assert d.frame(pdu[:cut], True) == 0
    assert d.frame(adu(1, 1, 3, H("00000001"), pid=1), True) == -1
    assert d.frame(adu(1, 1, 3, b"", length=1), True) == -1
    assert d.frame(adu(1, 1, 3, b"", length=255), True) == -1
    assert d.frame(b"GET / HTTP/1.1\r\n", True) == -1


@pytest.mark.parametrize(
    ("data", "transport", "port", "verdict"),
    [
        (adu(1, 1, 3, H("00000001")), Transport.TCP, 502, Verdict.YES),
        (adu(1, 1, 3, H("00000001")), Transport.TCP, 5020, Verdict.YES),
        (adu(1, 1, 3, H("00000001"))[:7], Transport.TCP, 502, Verdict.MAYBE),
        (adu(1, 1, 16, H("0000000204000a0102"))[:10], Transport.TCP, 5020, Verdict.MAYBE),
        (adu(1, 1, 3, H("00000001")) + adu(2, 1, 3, H("00"))[:6], Transport.TCP, 5020, Verdict.YES),
        (adu(1, 1, 3, H("00000001")) + b"\x00\x02\x00\x01", Transport.TCP, 502, Verdict.NO),
        (adu(1, 1, 0x83, H("02")), Transport.TCP, 5020, Verdict.YES),
        (adu(1, 1, 0x83, H("0203")), Transport.TCP, 502, Verdict.NO),
        (adu(1, 1, 3, H("000001")), Transport.TCP, 5020, Verdict.NO),  # neither request nor response
        (adu(1, 1, 0, H("00000001")), Transport.TCP, 502, Verdict.NO),
        (adu(1, 250, 3, H("00000001")), Transport.TCP, 502, Verdict.NO),  # reserved unit id
        (adu(1, 1, 3, H("00000001"), pid=2), Transport.TCP, 502, Verdict.NO),
        (bytes(6), Transport.TCP, 502, Verdict.MAYBE),  # a SYN's zero payload cannot be judged
        (bytes(8), Transport.TCP, 502, Verdict.NO),
        (b"GET / HTTP/1.1\r\n\r\n", Transport.TCP, 502, Verdict.NO),
        (H("1603010085010000810303"), Transport.TCP, 502, Verdict.NO),
        (adu(1, 1, 3, H("00000001")), Transport.UDP, 502, Verdict.YES),
        (adu(1, 1, 3, H("00000001"))[:10], Transport.UDP, 502, Verdict.NO),
        (H("12340000000100010000000000"), Transport.UDP, 53, Verdict.NO),  # a DNS query, flags 0
    ],
)
def test_recognize(data: bytes, transport: Transport, port: int, verdict: Verdict) -> None:
    assert ModbusDissector.recognize(data, transport, 40001, port) == verdict


def test_function_names_follow_zeek() -> None:
    assert function_name(1) == "READ_COILS"
    assert function_name(0x81) == "READ_COILS_EXCEPTION"
    assert function_name(0xAB) == "ENCAP_INTERFACE_TRANSPORT_EXCEPTION"
    assert function_name(0x9C) == "unknown-156"
    assert function_name(0x80) == "unknown-128"
    assert function_name(0x7F) == "REPORT_LOCAL_ADDRESS"


def test_sans_io_device_identification_and_private_objects() -> None:
    col = sans_io(
        [
            (
                adu(9, 255, 43, H("0e0480")),
                adu(9, 255, 43, H("0e0483000001") + b"\x80\x03\x01\x02\xff"),
            )
        ]
    )
    (request, response) = col.modbus()
    assert (request.mei_type, response.mei_type, response.matched) == (14, 14, True)
    device = col.device_ids()
    assert [(d.pdu_type, d.device_id_code, d.object_id_code, d.object_id) for d in device] == [
        ("REQ", 4, 0x80, "private-128"),
        ("RESP", 4, 0x80, "private-128"),
    ]
    assert device[1].object_value == "\x01\x02\\xff"  # not UTF-8: escaped, never lost
    assert device[1].conformity_level == "Extended Identification (Stream, Individual)"
    assert col.weirds() == []


@pytest.mark.parametrize(
    ("pdus", "weird"),
    [
        ([(True, adu(1, 1, 0, b""))], "modbus_illegal_function_code"),
        ([(True, adu(1, 1, 0x83, H("02")))], "modbus_exception_in_request"),
        ([(False, adu(1, 1, 0x83, b""))], "modbus_truncated_pdu"),
        ([(False, adu(1, 1, 0x83, H("0202")))], "modbus_length_mismatch"),
        ([(True, adu(1, 1, 3, H("0000000100")))], "modbus_length_mismatch"),
        ([(True, adu(1, 1, 3, H("00000100")))], "modbus_invalid_quantity"),
        ([(True, adu(1, 1, 15, H("0000000a0301")))], "modbus_quantity_mismatch"),
        ([(False, adu(1, 1, 1, H("0301")))], "modbus_byte_count_mismatch"),
        (
            [(True, adu(1, 1, 1, H("00000003"))), (False, adu(1, 1, 1, H("020100")))],
            "modbus_quantity_mismatch",
        ),
        (
            [(True, adu(1, 1, 3, H("00000003"))), (False, adu(1, 1, 3, H("020001")))],
            "modbus_quantity_mismatch",
        ),
        ([(True, adu(1, 1, 20, H("0705000100020003")))], "modbus_bad_reference_type"),
        ([(True, adu(1, 1, 20, H("0606000100020003")))], "modbus_byte_count_mismatch"),
        ([(False, adu(1, 1, 20, H("04090600")))], "modbus_truncated_pdu"),
        ([(True, adu(1, 1, 21, H("0906000100020003aa")))], "modbus_truncated_pdu"),
        ([(False, adu(1, 1, 24, H("0006000901b8")))], "modbus_byte_count_mismatch"),
        ([(False, adu(1, 1, 24, H("00060020")))], "modbus_invalid_quantity"),
        ([(True, adu(1, 1, 43, H("05")))], "modbus_reserved_mei_type"),
        ([(True, adu(1, 1, 43, H("0e0900")))], "modbus_bad_device_id_code"),
        ([(False, adu(1, 1, 43, H("0e0101000002000141")))], "modbus_object_count_mismatch"),
        ([(False, adu(1, 1, 43, H("0e0101000001000541")))], "modbus_truncated_pdu"),
        ([(False, adu(1, 1, 43, H("0e010177000100014141")))], "modbus_bad_more_follows"),
        ([(False, adu(1, 1, 43, H("0e0101000001000141ff")))], "modbus_length_mismatch"),
        ([(False, adu(1, 1, 12, H("03000000")))], "modbus_truncated_pdu"),
        ([(True, adu(1, 1, 23, H("0003000600")))], "modbus_truncated_pdu"),
        ([(True, adu(1, 1, 8, H("00")))], "modbus_truncated_pdu"),
        ([(True, adu(1, 1, 3, H("00000001"), pid=5))], "modbus_bad_protocol_id"),
        ([(True, adu(1, 1, 3, b"", length=1))], "modbus_bad_length"),
        ([(True, adu(1, 1, 3, H("00000001"))[:-1])], "modbus_truncated_pdu"),
        ([(True, adu(1, 1, 3, H("00000001")) + b"\x00\x01")], "modbus_truncated_header"),
    ],
)
def test_sans_io_weirds(pdus: list[tuple[bool, bytes]], weird: str) -> None:
    d = ModbusDissector(Collector().flow)
    col = Collector()
    for is_orig, pdu in pdus:
        col.parse(d, pdu, is_orig)
    assert weird in col.weirds()


def test_pending_requests_are_bounded() -> None:
    d = ModbusDissector(Collector().flow)
    col = Collector()
    for tid in range(1000):
        col.parse(d, adu(tid, 1, 3, struct.pack(">HH", tid, 1)), True)
    col.parse(d, adu(999, 1, 3, H("020001")), False)
    col.parse(d, adu(0, 1, 3, H("020001")), False)  # long forgotten: unmatched, no address
    late, forgotten = col.modbus()[-2:]
    assert (late.matched, late.address) == (True, 999)
    assert (forgotten.matched, forgotten.address) == (False, None)


def test_datagram_with_too_many_adus() -> None:
    d = ModbusDissector(Collector(Transport.UDP).flow)
    col = Collector(Transport.UDP)
    col.parse(d, adu(1, 1, 7) * 100, True)
    assert len(col.modbus()) == 64
    assert col.weirds() == ["modbus_too_many_adus"]


# ---------------------------------------------------------------------- fuzz


def _bound(size: int) -> int:
    """Events one input may produce: per ADU (8+ bytes) one event and a few weirds, plus objects."""
    return (size // 8 + 1) * 12 + size // 2


def _exercise(data: bytes) -> None:
    for transport in (Transport.TCP, Transport.UDP):
        ModbusDissector.recognize(data, transport, 40001, 502)
        ModbusDissector.recognize(data, transport, 40001, 5020)
    for is_orig in (True, False):
        d = ModbusDissector(Collector().flow)
        col = Collector()
        col.feed(d, data, is_orig)
        col.parse(d, data, not is_orig)
        assert len(col.events) <= 2 * _bound(len(data))


REAL_ADUS = [pdu for fc, request, response in EXCHANGES for pdu in exchange(1, fc, request, response)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _exercise(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(REAL_ADUS), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
)
def test_fuzz_mutated_real_pdus(adus: list[bytes], mutations: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(b"".join(adus))
    for position, value in mutations:
        if data:
            data[position % len(data)] = value
    _exercise(bytes(data[: max(cut, 8)]))
    _exercise(bytes(data))


# ---------------------------------------------------------------------- documentation


def test_every_event_field_and_weird_is_documented() -> None:
    doc = DOC.read_text()
    for event_type in (ModbusEvent, ModbusDeviceIdEvent):
        assert f"`{event_type.log}`" in doc
        for f in dataclasses.fields(event_type):
            assert f"| `{f.name}` |" in doc, f"{event_type.__name__}.{f.name} is not documented"
    weirds = set(re.findall(r'"(modbus_[a-z_]+)"', MODULE.read_text()))
    weirds |= {"modbus_unframeable_data", "modbus_pdu_lost_in_gap", "modbus_pdu_too_large"}
    for name in sorted(weirds):
        assert f"`{name}`" in doc, f"weird {name} is not documented"
