"""S7comm dissector (TPKT / COTP / S7comm / S7comm-plus): golden, tshark, spec, recognition and fuzz tests.

Golden reference (``../shared/corpus/s7comm``): ``snap7.pcap`` with the CISA ICSNPP btest baseline
``expected/analyzer.snap7/{cotp,s7comm,s7comm_read_szl,s7comm_upload_download}.log`` (column order from
each log's ``#fields`` line, which matches the ``&log`` records of ICSNPP's ``main.zeek``; the README's
column lists are used when a log has no header). Rows compare field by field, timestamps against the
capture's frame times (tshark), uids ignored. Two documented differences from ICSNPP:

- ``pdu_reference``: ICSNPP byte-swaps the big-endian header field ("PDU Reference is little endian",
  ``s7comm-analyzer.pac``); FieldWard reports it as the protocol and Wireshark read it, so
  ``swap16(ours) == icsnpp`` and ``ours == tshark``.
- ICSNPP has no row for three PDUs its binpac records fail on (see ``ICSNPP_MISSING``); FieldWard
  reports them, and they are checked against tshark instead.

Fields the logs do not carry (SZL identification lists, read/write items and areas, PI service
arguments, COTP TSAPs, upload ids) are checked against tshark's dissection of the same bytes; the
S7comm-plus header (no tshark dissector) against the layout of Wireshark's ``s7comm_plus`` plugin.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import subprocess
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

from fieldward.pipeline import AnalysisResult, analyze
from fieldward.protocols.base import Event, FlowInfo, PduContext, ProtocolWeird, Transport, Verdict
from fieldward.protocols.registry import Registry
from fieldward.protocols.s7comm import (
    MAX_PENDING,
    REDACTED,
    Cotp,
    S7comm,
    S7commDissector,
    S7commIdentification,
    S7commPlus,
    S7commReadSzl,
    S7commUploadDownload,
    S7commVariable,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "protocols" / "s7comm.md"
MODULE = REPO / "src" / "fieldward" / "protocols" / "s7comm.py"
EVENT_TYPES = (
    Cotp,
    S7comm,
    S7commReadSzl,
    S7commUploadDownload,
    S7commVariable,
    S7commIdentification,
    S7commPlus,
)
H = bytes.fromhex

# ICSNPP log columns after ts, uid and the four conn_id fields (README / main.zeek ``&log`` records).
ICSNPP_COLUMNS = {
    "cotp": ["is_orig", "source_h", "source_p", "destination_h", "destination_p", "pdu_code", "pdu_name"],
    "s7comm": [
        "is_orig",
        "source_h",
        "source_p",
        "destination_h",
        "destination_p",
        "rosctr_code",
        "rosctr_name",
        "pdu_reference",
        "function_code",
        "function_name",
        "subfunction_code",
        "subfunction_name",
        "error_class",
        "error_code",
    ],
    "s7comm_read_szl": [
        "is_orig",
        "source_h",
        "source_p",
        "destination_h",
        "destination_p",
        "pdu_reference",
        "method",
        "szl_id",
        "szl_id_name",
        "szl_index",
        "return_code",
        "return_code_name",
    ],
    "s7comm_upload_download": [
        "is_orig",
        "source_h",
        "source_p",
        "destination_h",
        "destination_p",
        "rosctr",
        "pdu_reference",
        "function_name",
        "function_status",
        "session_id",
        "blocklength",
        "filename",
        "block_type",
        "block_number",
        "destination_filesystem",
    ],
}
ID_COLUMNS = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"]

# snap7.pcap frames for which the ICSNPP baseline has no row in any log, and why.
ICSNPP_MISSING = {
    6: "first fragment of the fragmented SZL 0x001C answer (data unit 0xd5, more units follow)",
    7: "the client's 'next fragment' Read SZL request; method 0x12 sends ICSNPP's record down its"
    " response branch, whose SZL header (length 0) it cannot parse",
    44: "a 12-byte ACK (no parameter); ICSNPP's ROSCTR_ACK record requires a function code byte",
}


# ---------------------------------------------------------------------- PDU builders (the spec)


def tpkt(body: bytes) -> bytes:
    """RFC 1006: version 3, reserved 0, total length."""
    return struct.pack(">BBH", 3, 0, 4 + len(body)) + body


def dt(payload: bytes, *, eot: bool = True, nr: int = 0) -> bytes:
    """A class 0 COTP DT TPDU (LI 2, code 0xF0, EOT + TPDU-NR) in a TPKT."""
    return tpkt(bytes([2, 0xF0, (0x80 if eot else 0) | nr]) + payload)


def cotp_connect(code: int, dst_ref: int, src_ref: int, params: bytes, reason_or_class: int = 0) -> bytes:
    """CR (0xE0) / CC (0xD0) / DR (0x80): LI, code, DST-REF, SRC-REF, class (DR: reason), parameters."""
    fixed = struct.pack(">BHHB", code, dst_ref, src_ref, reason_or_class)
    return tpkt(bytes([len(fixed) + len(params)]) + fixed + params)


def tsaps(calling: bytes, called: bytes, size_code: int) -> bytes:
    return bytes([0xC0, 1, size_code, 0xC1, len(calling)]) + calling + bytes([0xC2, len(called)]) + called


def s7(rosctr: int, ref: int, param: bytes, data: bytes = b"", error: tuple[int, int] = (0, 0)) -> bytes:
    """S7comm header (0x32, ROSCTR, reserved, PDU reference, lengths; ACK/ACK-Data: error) + parts."""
    head = struct.pack(">BBHHHH", 0x32, rosctr, 0, ref, len(param), len(data))
    return head + (bytes(error) if rosctr in (2, 3) else b"") + param + data


def job(ref: int, param: bytes, data: bytes = b"") -> bytes:
    return dt(s7(1, ref, param, data))


def ack_data(ref: int, param: bytes, data: bytes = b"", error: tuple[int, int] = (0, 0)) -> bytes:
    return dt(s7(3, ref, param, data, error))


def userdata(
    ref: int,
    kind: int,
    group: int,
    subfunction: int,
    data: bytes,
    *,
    unit: tuple[int, int, int] | None = None,
) -> bytes:
    """Userdata: parameter head 000112, length, method (0x11 request / 0x12 response), type|group,
    subfunction, sequence number, and (long form) data unit reference, last unit flag, error code."""
    method = 0x12 if unit is not None else 0x11
    tail = struct.pack(">BBH", *unit) if unit is not None else b""
    param = H("000112") + bytes([4 + len(tail), method, kind << 4 | group, subfunction, 0]) + tail
    return dt(s7(7, ref, param, data))


def var_item(transport_size: int, length: int, db: int, area: int, address: int) -> bytes:
    """An S7ANY item: 0x12, length 10, syntax id 0x10, transport size, length, DB, area, bit address."""
    return struct.pack(">BBBBHHB", 0x12, 10, 0x10, transport_size, length, db, area) + address.to_bytes(
        3, "big"
    )


def block_control(function: int, filename: bytes, extra: bytes = b"", session: int = 0) -> bytes:
    """Upload/download job parameter: function, status, 2 reserved, session id, filename (length-prefixed)."""
    return struct.pack(">BBHIB", function, 0, 0, session, len(filename)) + filename + extra


def pi_start(service: bytes, block: bytes = b"") -> bytes:
    """PLC control (0x28): function, 7 unknown bytes, parameter block (length-prefixed), service name."""
    return H("28000000000000fd") + struct.pack(">H", len(block)) + block + bytes([len(service)]) + service


def s7plus(version: int, body: bytes, *, trailer: bool = True) -> bytes:
    """S7comm-plus: 0x72, version, data length, data, and (last fragment) the trailer 72 vv 0000."""
    return dt(
        struct.pack(">BBH", 0x72, version, len(body))
        + body
        + (H("72") + bytes([version, 0, 0]) if trailer else b"")
    )


def plus_request(function: int, sequence: int, session: int, payload: bytes = H("00")) -> bytes:
    """S7comm-plus request data: opcode 0x31, reserved, function code, reserved, sequence, session id."""
    return struct.pack(">BHHHHI", 0x31, 0, function, 0, sequence, session) + payload


# ---------------------------------------------------------------------- captures and running


@dataclass
class TcpConversation:
    """A TCP connection built segment by segment with consistent sequence numbers (scapy)."""

    client: str = "10.20.0.5"
    server: str = "10.20.0.10"
    cport: int = 40001
    sport: int = 102
    packets: list[Packet] = field(default_factory=list)
    cseq: int = 1000
    sseq: int = 5000

    def __post_init__(self) -> None:
        self._add(True, "S", b"", seq=self.cseq - 1)
        self._add(False, "SA", b"", seq=self.sseq - 1)

    def _add(self, from_client: bool, flags: str, data: bytes, seq: int | None = None) -> None:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        sp, dp = (self.cport, self.sport) if from_client else (self.sport, self.cport)
        own = self.cseq if from_client else self.sseq
        tcp = TCP(sport=sp, dport=dp, flags=flags, seq=own if seq is None else seq)
        tcp.ack = self.sseq if from_client else self.cseq
        if from_client:
            self.cseq += len(data)
        else:
            self.sseq += len(data)
        packet = Ether() / IP(src=src, dst=dst) / tcp
        self.packets.append(packet / data if data else packet)

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
        return [r["name"] for r in self.rows("weird") if r["protocol"] == "s7comm"]


def run_capture(capture: Path, out: Path) -> Run:
    """analyze() one capture and read back every events file (ts as integer ns)."""
    result = analyze([capture], out)
    logs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((out / "events").glob("*.parquet")):
        table = pq.read_table(path)
        table = table.set_column(table.schema.get_field_index("ts"), "ts", table["ts"].cast(pa.int64()))
        logs[path.stem] = table.to_pylist()
    return Run(result, logs)


def run_packets(tmp_path: Path, packets: list[Packet], name: str = "built") -> tuple[Path, Run]:
    capture = write_pcap(tmp_path / f"{name}.pcap", packets)
    return capture, run_capture(capture, tmp_path / f"out-{name}")


class Collector:
    """A PduContext for sans-io tests: collects events and weirds."""

    def __init__(self) -> None:
        self.flow = FlowInfo(7, Transport.TCP, "10.0.0.1", 40001, "10.0.0.2", 102)
        self.events: list[Event] = []
        self.ctx = PduContext(self.flow, "s7comm", self.events.append, self.events.append)
        self.dissector = S7commDissector(self.flow)

    def feed(self, stream: bytes, is_orig: bool) -> bytes:
        """Frame and parse a byte stream as the engine does; returns the unframed rest."""
        self.ctx.is_orig = is_orig
        buf = stream
        while buf:
            size = self.dissector.frame(buf, is_orig)
            if size == 0:
                break
            if size < 0 or size > len(buf):
                self.ctx.weird("s7comm_unframeable_data", f"{len(buf)} bytes dropped")
                return b""
            self.dissector.parse(buf[:size], self.ctx)
            buf = buf[size:]
        return buf

    def parse(self, pdu: bytes, is_orig: bool = True) -> None:
        self.ctx.is_orig = is_orig
        self.dissector.parse(pdu, self.ctx)

    def of(self, event_type: type[Event]) -> list[Any]:
        return [e for e in self.events if type(e) is event_type]

    def weirds(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, ProtocolWeird)]


# ---------------------------------------------------------------------- reference readers


def icsnpp_log(path: Path, log: str) -> list[dict[str, str]]:
    """Rows of an ICSNPP btest baseline as dicts: by its ``#fields`` line, else by the README columns."""
    names = ID_COLUMNS + ICSNPP_COLUMNS[log]
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            header = line.split("\t")[1:]
            assert header == names, f"{path.name}: columns differ from ICSNPP's {log} record"
        elif line and not line.startswith("#"):
            rows.append(dict(zip(names, line.split("\t"), strict=True)))
    return rows


def tshark_rows(
    tshark: str, capture: Path, fields: list[str], display_filter: str = "s7comm"
) -> list[dict[str, str]]:
    """One dict per frame matching ``display_filter``: field -> value (repeats joined with ';')."""
    names = ["frame.number", "frame.time_epoch", *fields]
    cmd = [tshark, "-r", str(capture), "-Y", display_filter, "-T", "fields"]
    cmd += ["-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=;"]
    for name in names:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [dict(zip(names, line.split("|"), strict=True)) for line in out.splitlines() if line]


def epoch_ns(text: str) -> int:
    seconds, _, fraction = text.partition(".")
    return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9])


def swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


def dash(value: Any) -> str:
    """An event value as an ICSNPP log writes it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "T" if value else "F"
    return str(value)


def endpoints(row: dict[str, Any]) -> dict[str, str]:
    """id.* and ICSNPP's source/destination columns of an event row."""
    src = (row["orig_h"], row["orig_p"]) if row["is_orig"] else (row["resp_h"], row["resp_p"])
    dst = (row["resp_h"], row["resp_p"]) if row["is_orig"] else (row["orig_h"], row["orig_p"])
    return {
        "id.orig_h": row["orig_h"],
        "id.orig_p": str(row["orig_p"]),
        "id.resp_h": row["resp_h"],
        "id.resp_p": str(row["resp_p"]),
        "is_orig": dash(row["is_orig"]),
        "source_h": src[0],
        "source_p": str(src[1]),
        "destination_h": dst[0],
        "destination_p": str(dst[1]),
    }


# ---------------------------------------------------------------------- golden: snap7.pcap


@dataclass
class Snap7:
    capture: Path
    expected: Path
    run: Run
    frames: dict[int, dict[str, str]]
    """tshark's S7comm fields per frame number."""
    frame_of: dict[int, int]
    """Frame number by packet time (ns); every frame of this capture carries exactly one PDU."""

    def rows(self, log: str) -> list[tuple[int, dict[str, Any]]]:
        """(frame number, row) of every row; a row whose time is no frame's time fails here."""
        return [(self.frame_of[r["ts"]], r) for r in self.run.rows(log)]


SNAP7_FIELDS = [
    "tcp.srcport", "cotp.type", "cotp.tpdu-number", "cotp.eot", "s7comm.header.rosctr",
    "s7comm.header.pduref", "s7comm.header.errcls", "s7comm.header.errcod", "s7comm.param.func",
    "s7comm.param.userdata.type", "s7comm.param.userdata.funcgroup", "s7comm.param.userdata.subfunc",
    "s7comm.param.errcod", "s7comm.param.maxamq_calling", "s7comm.param.maxamq_called",
    "s7comm.param.pdu_length", "s7comm.param.pistart.servicename", "s7comm.param.pistart.argument",
    "s7comm.data.userdata.szl_id", "s7comm.data.userdata.szl_index", "s7comm.data.returncode",
    "s7comm.param.blockcontrol.functionstatus", "s7comm.data.blockcontrol.uploadid",
    "s7comm.param.blockcontrol.filename", "s7comm.param.blockcontrol.upl_lenstring",
    "s7comm.data.length", "s7comm.param.item.syntaxid", "s7comm.param.item.transp_size",
    "s7comm.param.item.length", "s7comm.param.item.db", "s7comm.param.item.area",
    "s7comm.param.item.address", "s7comm.param.item.address.byte", "s7comm.param.item.address.bit",
    "s7comm.param.item.address.number", "s7comm.data.transportsize",
]  # fmt: skip


@pytest.fixture(scope="module")
def snap7(corpus: Path, tshark: str, tmp_path_factory: pytest.TempPathFactory) -> Snap7:
    capture = corpus / "s7comm" / "snap7.pcap"
    run = run_capture(capture, tmp_path_factory.mktemp("snap7"))
    frames = {int(f["frame.number"]): f for f in tshark_rows(tshark, capture, SNAP7_FIELDS, "tcp.len > 0")}
    frame_of = {epoch_ns(f["frame.time_epoch"]): n for n, f in frames.items()}
    assert len(frame_of) == len(frames) == 64
    return Snap7(capture, corpus / "s7comm" / "expected" / "analyzer.snap7", run, frames, frame_of)


def ints(text: str) -> list[int]:
    """tshark's repeated integer field (decimal or 0x hex), as a list."""
    return [int(v, 0) for v in text.split(";") if v]


def test_golden_snap7_cotp(snap7: Snap7) -> None:
    expected = icsnpp_log(snap7.expected / "cotp.log", "cotp")
    ours = snap7.rows("cotp")
    assert len(ours) == len(expected) == 64
    assert [n for n, _ in ours] == sorted(snap7.frames)  # one TPDU per frame, in capture order
    for (number, row), exp in zip(ours, expected, strict=True):
        frame = snap7.frames[number]
        got = endpoints(row) | {"pdu_code": row["pdu_code"], "pdu_name": row["pdu_name"]}
        assert got == {k: exp[k] for k in got}, f"frame {number}"
        # fields the log lacks: COTP header facts, against tshark
        assert int(frame["cotp.type"], 0) == int(row["pdu_code"], 16)
        assert row["tpdu_number"] == int(frame["cotp.tpdu-number"], 0)
        assert row["last_data_unit"] is (frame["cotp.eot"] in ("1", "True"))
        assert row["is_orig"] is (frame["tcp.srcport"] != "102")
    assert snap7.run.weirds() == []


def test_golden_snap7_s7comm(snap7: Snap7) -> None:
    expected = icsnpp_log(snap7.expected / "s7comm.log", "s7comm")
    ours = snap7.rows("s7comm")
    assert [n for n, _ in ours] == sorted(snap7.frames)  # every frame holds one S7comm PDU
    compared = [(n, r) for n, r in ours if n not in ICSNPP_MISSING]
    assert len(compared) == len(expected) == 61
    names = ICSNPP_COLUMNS["s7comm"]
    for (number, row), exp in zip(compared, expected, strict=True):
        got = endpoints(row) | {k: dash(row[k]) for k in names if k in row}
        got["pdu_reference"] = str(swap16(row["pdu_reference"]))
        assert {k: got[k] for k in names} == {k: exp[k] for k in names}, f"frame {number}"

    # every row (those ICSNPP misses too) against tshark's dissection of the same frame
    for number, row in ours:
        f = snap7.frames[number]
        assert row["rosctr_code"] == int(f["s7comm.header.rosctr"]), number
        assert row["pdu_reference"] == int(f["s7comm.header.pduref"]), number
        if row["rosctr_code"] == 7:
            kind, group = int(f["s7comm.param.userdata.type"]), int(f["s7comm.param.userdata.funcgroup"])
            assert row["function_code"] == f"0x{kind << 4 | group:02x}", number
            assert int(row["subfunction_code"], 16) == int(f["s7comm.param.userdata.subfunc"]), number
            if f["s7comm.param.errcod"]:
                assert int(row["error_code"], 16) == int(f["s7comm.param.errcod"], 0), number
        elif f["s7comm.param.func"]:
            assert int(row["function_code"], 16) == int(f["s7comm.param.func"], 0), number
        if f["s7comm.header.errcod"]:
            assert int(row["error_code"], 16) == int(f["s7comm.header.errcod"], 0), number
        if f["s7comm.param.pdu_length"]:
            assert row["pdu_length"] == int(f["s7comm.param.pdu_length"]), number
            assert row["max_amq_calling"] == int(f["s7comm.param.maxamq_calling"]), number
            assert row["max_amq_called"] == int(f["s7comm.param.maxamq_called"]), number
        assert row["pi_service"] == (f["s7comm.param.pistart.servicename"] or None), number
        if row["pi_arguments"] is not None:
            assert row["pi_arguments"] == [a for a in f["s7comm.param.pistart.argument"].split(";") if a]
    by_frame = dict(ours)
    assert by_frame[44]["rosctr_name"] == "ACK"
    assert by_frame[44]["function_code"] is None
    assert int(snap7.frames[44]["s7comm.header.errcls"], 0) == 0xD2
    assert by_frame[44]["error_class"] == "Unknown error class-0xd2"
    assert [by_frame[n]["subfunction_name"] for n in (6, 7)] == ["Read SZL", "Read SZL"]
    assert [by_frame[n]["pi_service"] for n in (57, 59, 61, 63)] == [
        "P_PROGRAM",
        "_MODU",
        "_GARB",
        "P_PROGRAM",
    ]


def test_golden_snap7_read_szl(snap7: Snap7) -> None:
    expected = icsnpp_log(snap7.expected / "s7comm_read_szl.log", "s7comm_read_szl")
    ours = snap7.rows("s7comm_read_szl")
    compared = [(n, r) for n, r in ours if n not in ICSNPP_MISSING]
    assert len(compared) == len(expected) == 9
    names = ICSNPP_COLUMNS["s7comm_read_szl"]
    for (number, row), exp in zip(compared, expected, strict=True):
        got = endpoints(row) | {k: dash(row[k]) for k in names if k in row}
        got["pdu_reference"] = str(swap16(row["pdu_reference"]))
        assert {k: got[k] for k in names} == {k: exp[k] for k in names}, f"frame {number}"
    # FieldWard also logs frame 6, the first fragment of the SZL 0x001C answer; its continuation
    # (frame 8) carries no SZL header and completes the identification event instead.
    assert [n for n, _ in ours] == [3, 4, 5, 6, 9, 10, 11, 12, 13, 14]
    for number, row in ours:
        f = snap7.frames[number]
        # Wireshark shows the SZL header of a fragmented answer on its last fragment (frame 8)
        szl = snap7.frames[8] if number == 6 else f
        assert int(row["szl_id"], 16) == int(szl["s7comm.data.userdata.szl_id"], 0), number
        assert int(row["szl_index"], 16) == int(szl["s7comm.data.userdata.szl_index"], 0), number
        assert int(row["return_code"], 16) == ints(f["s7comm.data.returncode"])[0], number


def test_golden_snap7_upload_download(snap7: Snap7) -> None:
    expected = icsnpp_log(snap7.expected / "s7comm_upload_download.log", "s7comm_upload_download")
    ours = snap7.rows("s7comm_upload_download")
    assert len(ours) == len(expected) == 25
    names = ICSNPP_COLUMNS["s7comm_upload_download"]
    for (number, row), exp in zip(ours, expected, strict=True):
        got = endpoints(row) | {k: dash(row[k]) for k in names if k in row}
        got["pdu_reference"] = str(swap16(row["pdu_reference"]))
        assert {k: got[k] for k in names} == {k: exp[k] for k in names}, f"frame {number}"
        f = snap7.frames[number]
        assert row["filename"] == (f["s7comm.param.blockcontrol.filename"] or None), number
        if f["s7comm.param.blockcontrol.functionstatus"]:
            assert int(row["function_status"], 16) == int(f["s7comm.param.blockcontrol.functionstatus"], 0)
        if f["s7comm.data.blockcontrol.uploadid"] and row["rosctr"] == "Job-Request":
            assert row["session_id"] == int(f["s7comm.data.blockcontrol.uploadid"], 0), number
        if f["s7comm.param.blockcontrol.upl_lenstring"]:
            assert row["blocklength"] == int(f["s7comm.param.blockcontrol.upl_lenstring"]), number


def test_snap7_variables_match_tshark(snap7: Snap7) -> None:
    """Read/write variable items (log ICSNPP lacks): every address part and result against tshark."""
    ours = snap7.rows("s7comm_variable")
    frames = sorted({n for n, _ in ours})
    assert frames == [49, 50, 51, 52, 53, 54, 55, 56]
    jobs = {n: [r for m, r in ours if m == n] for n in frames}
    for number in frames:
        rows, f = jobs[number], snap7.frames[number]
        assert [r["item_number"] for r in rows] == list(range(1, len(rows) + 1))
        request = f if rows[0]["rosctr"] == "Job-Request" else snap7.frames[number - 1]
        assert len(rows) == len(ints(request["s7comm.param.item.area"]))
        assert [int(r["area"], 16) for r in rows] == ints(request["s7comm.param.item.area"])
        assert [r["db_number"] for r in rows] == ints(request["s7comm.param.item.db"])
        assert [int(r["transport_size"], 16) for r in rows] == ints(request["s7comm.param.item.transp_size"])
        assert [r["length"] for r in rows] == ints(request["s7comm.param.item.length"])
        assert [r["address"] for r in rows] == ints(request["s7comm.param.item.address"])
        bytes_, bits, numbers = (
            ints(request[f"s7comm.param.item.address.{k}"]) for k in ("byte", "bit", "number")
        )
        assert [r["byte_address"] for r in rows if r["byte_address"] is not None] == bytes_
        assert [r["bit_address"] for r in rows if r["bit_address"] is not None] == bits
        assert [r["address"] for r in rows if r["byte_address"] is None] == numbers
        if rows[0]["rosctr"] == "ACK-Data":
            assert [int(r["return_code"], 16) for r in rows] == ints(f["s7comm.data.returncode"])
        data_sizes = ints(f["s7comm.data.transportsize"])
        assert [int(r["data_transport_size"], 16) for r in rows if r["data_transport_size"]] == data_sizes
        assert [r["data_length"] for r in rows if r["data_length"] is not None] == ints(
            f["s7comm.data.length"]
        )
    areas = {r["area_name"] for _, r in ours}
    assert areas == {"M", "I", "Q", "T", "C"}


def test_snap7_identification_matches_tshark(snap7: Snap7, tshark: str) -> None:
    """Module (SZL 0x0011) and component (SZL 0x001C, reassembled over frames 6 and 8) identification."""
    module = "s7comm.szl.xy11.0001."
    component = {
        "automation_system_name": "0001.name",
        "module_name": "0002.name",
        "plant_name": "0003.tag",
        "copyright": "0004.copyright",
        "module_serial": "0005.serialn",
        "module_type_name": "0007.cputypname",
        "memory_card_serial": "0008.snmcmmc",
    }
    fields = [module + k for k in ("index", "anz", "bgtyp", "ausbg", "ausbe")]
    fields += ["s7comm.szl.001c." + v for v in component.values()]
    frames = {int(f["frame.number"]): f for f in tshark_rows(tshark, snap7.capture, fields)}
    ours = snap7.rows("s7comm_identification")
    assert [n for n, _ in ours] == [4, 8, 14]
    for number, row in ours:
        f = frames[number]
        if row["szl_id"] == "0x0011":
            index = ints(f[module + "index"])
            records = {
                i: (o, b, g, e)
                for i, o, b, g, e in zip(
                    index,
                    f[module + "anz"].split(";"),
                    ints(f[module + "bgtyp"]),
                    ints(f[module + "ausbg"]),
                    ints(f[module + "ausbe"]),
                    strict=True,
                )
            }
            assert row["order_number"] == records[0x0001][0].strip()
            assert row["module_type_id"] == records[0x0001][1]
            ausbg, ausbe = records[0x0007][2:]
            assert ausbg >> 8 == ord("V")  # SZL 0x0011 record 7: 'V', major; minor, patch
            assert row["firmware_version"] == f"V{ausbg & 0xFF}.{ausbe >> 8}.{ausbe & 0xFF}"
            assert row["module_name"] is None
        else:
            assert (number, row["szl_id"], row["pdu_reference"]) == (8, "0x001c", 512)
            for name, suffix in component.items():
                assert row[name] == f["s7comm.szl.001c." + suffix].strip(), name
            assert row["order_number"] is None
    assert ours[0][1]["firmware_version"] == "V3.2.7"


# ---------------------------------------------------------------------- built captures: spec and tshark

PASSWORD = b"\x55\x66\x77\x44\x24\x22\x3a\x7f"  # an obfuscated 8-byte PLC password, as sent on the wire
NC_PASSWORD = b"secret12"


def plc_session() -> list[Packet]:
    """Connection set-up with TSAPs, then password, write, block download, PI services, stop, disconnect."""
    write_items = var_item(0x01, 1, 0, 0x82, 2 * 8 + 3) + var_item(0x02, 4, 1, 0x84, 2 * 8)
    write_data = H("0003000101") + H("00") + H("00040020") + H("0a0b0c0d")  # bit Q2.3 (+fill), DB1.DBB2[4]
    return (
        TcpConversation()
        .c(cotp_connect(0xE0, 0, 0x0001, tsaps(H("0100"), H("0102"), 0x0A)))
        .s(cotp_connect(0xD0, 0x0001, 0x0044, tsaps(H("0100"), H("0102"), 0x0A)))
        .c(job(0x0100, H("f000 0001 0001 01e0")))
        .s(ack_data(0x0100, H("f000 0001 0001 00f0")))
        .c(userdata(0x0200, 4, 5, 0x01, H("ff090008") + PASSWORD))
        .s(userdata(0x0200, 8, 5, 0x01, H("0a000000"), unit=(0, 0, 0xD602)))
        .c(job(0x0300, H("0502") + write_items, write_data))
        .s(ack_data(0x0300, H("0502"), H("ff05")))
        .c(job(0x0400, block_control(0x1A, b"_0A00001P", H("0d") + b"1000256000128")))
        .s(ack_data(0x0400, H("1a")))
        .s(job(0x0500, block_control(0x1B, b"_0A00001P")))
        .c(ack_data(0x0500, H("1b00"), H("001000fb") + bytes(range(16))))
        .s(job(0x0600, block_control(0x1C, b"_0A00001P")))
        .c(ack_data(0x0600, H("1c")))
        .c(job(0x0700, pi_start(b"_INSE", H("0100") + b"0A00001P")))
        .s(ack_data(0x0700, H("28")))
        .c(job(0x0800, pi_start(b"_N_LOGIN_", H("03") + b"201" + H("08") + NC_PASSWORD + H("00"))))
        .s(ack_data(0x0800, H("28")))
        .c(job(0x0900, H("290000000000") + H("09") + b"P_PROGRAM"))
        .s(ack_data(0x0900, H("29")))
        .c(job(0x0A00, pi_start(b"P_PROGRAM")))
        .s(ack_data(0x0A00, H("28")))
        .c(cotp_connect(0x80, 0x0044, 0x0001, b"", 0x80))
        .done()
    )


def test_plc_session_against_spec_and_tshark(tmp_path: Path, tshark: str) -> None:
    capture, run = run_packets(tmp_path, plc_session())
    assert run.weirds() == []
    frames = {
        epoch_ns(f["frame.time_epoch"]): f
        for f in tshark_rows(
            tshark,
            capture,
            [
                "cotp.type",
                "cotp.src-tsap",
                "cotp.dst-tsap",
                "cotp.tpdu_size",
                "cotp.srcref",
                "cotp.destref",
                "cotp.class",
                "cotp.cause",
                "s7comm.param.errcod",
                "s7comm.param.pistart.servicename",
                "s7comm.param.pi.n_x.addressident",
                "s7comm.param.pi.n_x.password",
                "s7comm.param.blockcontrol.filename",
                "s7comm.data.blockcontrol.loadmem_len",
                "s7comm.param.item.area",
                "s7comm.param.item.address.byte",
                "s7comm.param.item.address.bit",
                "s7comm.data.returncode",
            ],
            "cotp",
        )
    }

    # Connection TPDUs by type. (TPDUs seen while the flow was being recognised carry the time of the
    # segment that completed recognition, so they are matched to tshark's frames by type, not by time.)
    cotp = {r["pdu_name"]: r for r in run.rows("cotp") if r["pdu_name"] != "DT Data"}
    by_type = {int(f["cotp.type"], 0): f for f in frames.values()}
    assert sorted(cotp) == ["CC Connection Confirm", "CR Connection Request", "DR Disconnect Request"]
    cr, cc, dr = cotp["CR Connection Request"], cotp["CC Connection Confirm"], cotp["DR Disconnect Request"]
    for row, code in ((cr, 0x0E), (cc, 0x0D)):
        f = by_type[code]
        assert row["pdu_code"] == f"0x{code:02x}"
        assert (row["calling_tsap"], row["called_tsap"]) == ("0x0100", "0x0102")
        assert (f["cotp.src-tsap"], f["cotp.dst-tsap"]) == (row["calling_tsap"], row["called_tsap"])
        assert row["tpdu_size"] == int(f["cotp.tpdu_size"]) == 1024
        assert (row["source_reference"], row["destination_reference"], row["tpdu_class"]) == (
            int(f["cotp.srcref"], 0),
            int(f["cotp.destref"], 0),
            int(f["cotp.class"]),
        )
    assert (cr["is_orig"], cc["is_orig"]) == (True, False)
    assert (cc["source_reference"], cc["destination_reference"]) == (0x0044, 0x0001)
    assert dr["reason"] == int(by_type[0x08]["cotp.cause"], 0) == 0x80
    assert (dr["destination_reference"], dr["source_reference"]) == (0x0044, 0x0001)

    s7 = {(r["pdu_reference"], r["is_orig"], r["rosctr_code"]): r for r in run.rows("s7comm")}
    password, denied = s7[(0x0200, True, 7)], s7[(0x0200, False, 7)]
    assert (password["function_code"], password["function_name"]) == ("0x45", "Request: Security")
    assert (password["subfunction_code"], password["subfunction_name"]) == ("0x01", "PLC Password")
    assert (denied["function_name"], denied["error_class"], denied["error_code"]) == (
        "Response: Security",
        "Parameter Error",
        "0xd602",
    )
    assert int(frames[denied["ts"]]["s7comm.param.errcod"], 0) == 0xD602

    stop = s7[(0x0900, True, 1)]
    assert (stop["function_name"], stop["pi_service"]) == ("PLC Stop", "P_PROGRAM")
    assert frames[stop["ts"]]["s7comm.param.pistart.servicename"] == "P_PROGRAM"
    assert s7[(0x0900, False, 3)]["function_name"] == "PLC Stop"
    start = s7[(0x0A00, True, 1)]
    assert (start["subfunction_code"], start["subfunction_name"], start["pi_arguments"]) == (
        "P_PROGRAM",
        "PLC Start / Stop",
        [],
    )
    inse = s7[(0x0700, True, 1)]
    assert (inse["pi_service"], inse["subfunction_name"], inse["pi_arguments"]) == (
        "_INSE",
        "Activates a PLC module",
        ["0A00001P"],
    )
    login = s7[(0x0800, True, 1)]
    f = frames[login["ts"]]
    assert (f["s7comm.param.pi.n_x.addressident"], f["s7comm.param.pi.n_x.password"]) == ("201", "secret12")
    assert login["pi_arguments"] == ["201", REDACTED]
    everything = repr(run.logs).encode()
    assert NC_PASSWORD not in everything
    assert b"secret" not in everything

    transfers = run.rows("s7comm_upload_download")
    assert [(t["function_name"], t["rosctr"], t["is_orig"]) for t in transfers] == [
        ("Request Download", "Job-Request", True),
        ("Request Download", "ACK-Data", False),
        ("Download Block", "Job-Request", False),
        ("Download Block", "ACK-Data", True),
        ("Download Ended", "Job-Request", False),
        ("Download Ended", "ACK-Data", True),
    ]
    request = transfers[0]
    assert (request["filename"], request["block_type"], request["block_number"]) == (
        "_0A00001P",
        "Data Block",
        "00001",
    )
    assert request["destination_filesystem"] == "Passive"
    assert request["blocklength"] == int(frames[request["ts"]]["s7comm.data.blockcontrol.loadmem_len"]) == 256
    assert frames[request["ts"]]["s7comm.param.blockcontrol.filename"] == "_0A00001P"
    assert transfers[3]["blocklength"] == 16
    assert [t["filename"] for t in transfers[2::2]] == ["_0A00001P", "_0A00001P"]

    items = run.rows("s7comm_variable")
    job_rows = [r for r in items if r["rosctr"] == "Job-Request"]
    ack_rows = [r for r in items if r["rosctr"] == "ACK-Data"]
    f_job, f_ack = frames[job_rows[0]["ts"]], frames[ack_rows[0]["ts"]]
    assert [(r["area_name"], r["db_number"], r["byte_address"], r["bit_address"]) for r in job_rows] == [
        ("Q", 0, 2, 3),
        ("DB", 1, 2, 0),
    ]
    assert [int(r["area"], 16) for r in job_rows] == ints(f_job["s7comm.param.item.area"])
    assert [r["byte_address"] for r in job_rows] == ints(f_job["s7comm.param.item.address.byte"])
    assert [r["bit_address"] for r in job_rows] == ints(f_job["s7comm.param.item.address.bit"])
    assert [r["data_length"] for r in job_rows] == [1, 4]  # bit length 1 -> 1 byte; 0x20 bits -> 4 bytes
    assert [(r["return_code"], r["return_code_name"]) for r in ack_rows] == [
        ("0xff", "Success"),
        ("0x05", "Invalid address"),
    ]
    assert [int(r["return_code"], 16) for r in ack_rows] == ints(f_ack["s7comm.data.returncode"])
    assert [r["area_name"] for r in ack_rows] == ["Q", "DB"]  # matched to the job by PDU reference


def test_block_upload_from_spec() -> None:
    """Start upload / upload / end upload as Wireshark lays them out (packet-s7comm.c, block control)."""
    col = Collector()
    col.parse(job(0x10, block_control(0x1D, b"_0E00007B")), True)
    col.parse(ack_data(0x10, H("1d000100 00000007 07") + b"0000216"), False)  # upload id 7, length "0000216"
    col.parse(job(0x11, block_control(0x1E, b"", session=7)[:8]), True)
    col.parse(ack_data(0x11, H("1e00"), H("000400fb deadbeef")), False)  # 4 block bytes, last part
    col.parse(job(0x12, block_control(0x1F, b"", session=7)[:8]), True)
    col.parse(ack_data(0x12, H("1f")), False)
    rows = col.of(S7commUploadDownload)
    assert [(r.function_name, r.rosctr, r.session_id, r.blocklength) for r in rows] == [
        ("Start Upload", "Job-Request", 0, None),
        ("Start Upload", "ACK-Data", 7, 216),
        ("Upload", "Job-Request", 7, None),
        ("Upload", "ACK-Data", None, 4),
        ("End Upload", "Job-Request", 7, None),
        ("End Upload", "ACK-Data", None, None),
    ]
    start = rows[0]
    assert (start.filename, start.block_type, start.block_number, start.destination_filesystem) == (
        "_0E00007B",
        "Function Block",
        "00007",
        "Active and Passive",
    )
    assert [r.function_status for r in rows] == ["0x00", "0x00", "0x00", "0x00", "0x00", None]
    assert [r.function_code for r in col.of(S7comm)] == ["0x1d", "0x1d", "0x1e", "0x1e", "0x1f", "0x1f"]
    assert col.weirds() == []


def plus_session() -> list[Packet]:
    """S7comm-plus (S7-1200/1500): V1 create object, V3 with integrity part, keep-alive, a fragmented PDU."""
    digest = bytes(range(32))
    return (
        TcpConversation(cport=40002)
        .c(cotp_connect(0xE0, 0, 0x0005, tsaps(H("0600"), b"SIMATIC-ROOT-HMI", 0x0A)))
        .s(cotp_connect(0xD0, 0x0005, 0x0011, tsaps(H("0600"), b"SIMATIC-ROOT-HMI", 0x0A)))
        .c(s7plus(1, plus_request(0x04CA, 1, 0x00000120)))
        .s(s7plus(1, struct.pack(">BHHHH", 0x32, 0, 0x04CA, 0, 1) + H("00")))
        .c(s7plus(3, H("20") + digest + plus_request(0x054C, 2, 0x70000123)))
        .c(dt(H("72ff0100")))
        .c(s7plus(2, plus_request(0x04F2, 3, 0x70000123, bytes(40)), trailer=False))
        .c(s7plus(2, bytes(12)))
        .done()
    )


def test_s7comm_plus_is_recognised_and_reported(tmp_path: Path) -> None:
    _, run = run_packets(tmp_path, plus_session(), "plus")
    assert run.result.dissected_flows.get("s7comm") == 1
    assert run.weirds() == []
    rows = run.rows("s7comm_plus")
    got = [
        (r["is_orig"], r["version"], r["opcode"], r["opcode_name"], r["function_code"], r["function_name"])
        for r in rows
    ]
    assert got == [
        (True, 1, "0x31", "Request", "0x04ca", "Create Object"),
        (False, 1, "0x32", "Response", "0x04ca", "Create Object"),
        (True, 3, "0x31", "Request", "0x054c", "Get Multi Variables"),
        (True, 255, None, None, None, None),
        (True, 2, "0x31", "Request", "0x04f2", "Set Variable"),
        (True, 2, None, None, None, None),  # continuation fragment: header only
    ]
    assert [(r["sequence_number"], r["session_id"]) for r in rows] == [
        (1, 0x120),
        (1, None),
        (2, 0x70000123),
        (None, None),
        (3, 0x70000123),
        (None, None),
    ]
    assert [r["data_length"] for r in rows] == [14, 10, 47, None, 53, 12]
    connect = [r for r in run.rows("cotp") if r["pdu_code"] in ("0x0e", "0x0d")]
    assert [(r["calling_tsap"], r["called_tsap"]) for r in connect] == [("0x0600", "SIMATIC-ROOT-HMI")] * 2
    assert run.rows("s7comm") == []


# ---------------------------------------------------------------------- recognition and framing


def snap7_like_exchange() -> TcpConversation:
    return (
        TcpConversation(sport=10102)
        .c(job(0x0100, H("f0000001000101e0")))
        .s(ack_data(0x0100, H("f0000001000100f0")))
        .c(job(0x0200, H("29000000000009") + b"P_PROGRAM"))
    )


def test_recognised_by_content_on_a_non_standard_port(tmp_path: Path) -> None:
    _, run = run_packets(tmp_path, snap7_like_exchange().done(), "port10102")
    assert run.result.dissected_flows.get("s7comm") == 1
    rows = run.rows("s7comm")
    assert [(r["resp_p"], r["function_name"]) for r in rows] == [
        (10102, "Setup Communication"),
        (10102, "Setup Communication"),
        (10102, "PLC Stop"),
    ]


def test_other_protocols_on_port_102_are_not_s7comm(tmp_path: Path) -> None:
    http = (
        TcpConversation(cport=40010).c(b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n").s(b"HTTP/1.1 200 OK\r\n\r\n")
    )
    # ISO-on-TCP carrying the ISO session layer (MMS / IEC 61850), not S7: CR, CC, then a DT with SPDU 0x0d
    mms = (
        TcpConversation(cport=40011)
        .c(cotp_connect(0xE0, 0, 1, tsaps(H("0001"), H("0001"), 0x0A)))
        .s(cotp_connect(0xD0, 1, 2, tsaps(H("0001"), H("0001"), 0x0A)))
        .c(dt(H("0dbc0506130100160102140200023302000134020001c1a6")))
    )
    tls = TcpConversation(cport=40012).c(H("160301002e0100002a0303") + bytes(39))
    _, run = run_packets(tmp_path, http.done() + mms.done() + tls.done(), "others")
    assert "s7comm" not in run.result.dissected_flows
    assert run.rows("s7comm") == []
    assert run.rows("cotp") == []
    assert run.weirds() == []


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"", Verdict.MAYBE),
        (H("03"), Verdict.MAYBE),
        (H("030000"), Verdict.MAYBE),
        (job(1, H("f0000001000101e0")), Verdict.YES),
        (job(1, H("f0000001000101e0"))[:12], Verdict.MAYBE),
        (cotp_connect(0xE0, 0, 1, tsaps(H("0100"), H("0102"), 0x0A)), Verdict.MAYBE),
        (
            cotp_connect(0xE0, 0, 1, tsaps(H("0100"), H("0102"), 0x0A)) + job(1, H("f0000001000101e0")),
            Verdict.YES,
        ),
        (cotp_connect(0xE0, 5, 1, tsaps(H("0100"), H("0102"), 0x0A)), Verdict.NO),  # CR with a DST-REF
        (cotp_connect(0xE0, 0, 1, tsaps(H("0100"), H("0102"), 0x0E)), Verdict.NO),  # TPDU size 2^14
        (s7plus(1, plus_request(0x04CA, 1, 0)), Verdict.YES),
        (dt(H("72ff0100")), Verdict.YES),
        (dt(H("0dbc0506")), Verdict.NO),
        (dt(s7(0x04, 1, H("f0"))), Verdict.NO),  # ROSCTR 4 does not exist
        (dt(s7(1, 1, H("f0000001000101e0")) + H("00")), Verdict.NO),  # header lengths disagree with TPKT
        (dt(s7(1, 1, H("99000001000101e0"))), Verdict.NO),  # no such job function
        (b"GET / HTTP/1.1\r\n", Verdict.NO),
        (H("0300000702f080"), Verdict.NO),  # a DT without user data
        (H("0301000702f080"), Verdict.NO),  # reserved byte set
    ],
)
def test_recognize(data: bytes, verdict: Verdict) -> None:
    assert S7commDissector.recognize(data, Transport.TCP, 40001, 102) == verdict
    assert S7commDissector.recognize(data, Transport.UDP, 40001, 102) == Verdict.NO


def test_registered_through_the_registry() -> None:
    registry = Registry.default(plugins=False)
    assert registry.get("s7comm") is S7commDissector
    entry = next(e for e in registry if e.name == "s7comm")
    assert entry.origin == "builtin"
    assert S7commDissector.ports == frozenset({102})
    assert S7commDissector.transports == frozenset({Transport.TCP})
    assert set(S7commDissector.event_types) == set(EVENT_TYPES)


def test_pdus_split_across_segments_and_several_in_one(tmp_path: Path) -> None:
    setup, reply = job(0x0100, H("f0000001000101e0")), ack_data(0x0100, H("f0000001000100f0"))
    stop = job(0x0200, H("29000000000009") + b"P_PROGRAM")
    read = job(0x0300, H("0401") + var_item(0x02, 2, 7, 0x84, 80))
    conversation = TcpConversation().c(setup[:3], setup[3:9], setup[9:]).s(reply + reply[:5]).s(reply[5:])
    conversation.c(stop + read)
    _, run = run_packets(tmp_path, conversation.done(), "split")
    rows = run.rows("s7comm")
    assert [(r["is_orig"], r["function_name"]) for r in rows] == [
        (True, "Setup Communication"),
        (False, "Setup Communication"),
        (False, "Setup Communication"),
        (True, "PLC Stop"),
        (True, "Read Variable"),
    ]
    (item,) = run.rows("s7comm_variable")
    assert (item["area_name"], item["db_number"], item["byte_address"], item["length"]) == ("DB", 7, 10, 2)
    assert len(run.rows("cotp")) == 5
    assert run.weirds() == []


def test_cotp_segmented_user_data_is_reassembled() -> None:
    """A DT without EOT holds the first part of the S7comm PDU; the DT with EOT completes it (ISO 8073)."""
    pdu = s7(1, 0x0100, H("f0000001000101e0"))
    col = Collector()
    col.feed(dt(pdu[:5], eot=False, nr=0) + dt(pdu[5:], eot=True, nr=1), True)
    assert [(c.tpdu_number, c.last_data_unit) for c in col.of(Cotp)] == [(0, False), (1, True)]
    (row,) = col.of(S7comm)
    assert (row.function_name, row.pdu_length) == ("Setup Communication", 480)
    col.feed(dt(pdu[:5], eot=False), False)
    col.dissector.close(col.ctx)
    assert col.weirds() == ["s7comm_cotp_unfinished"]


def test_pending_requests_are_bounded() -> None:
    col = Collector()
    for ref in range(MAX_PENDING + 10):
        col.parse(job(ref, H("0401") + var_item(0x02, 1, 1, 0x84, 0)), True)
    col.parse(ack_data(MAX_PENDING + 9, H("0401"), H("ff040008") + H("2a")), False)
    col.parse(ack_data(0, H("0401"), H("ff040008") + H("2a")), False)  # long forgotten
    late, forgotten = col.of(S7commVariable)[-2:]
    assert (late.area_name, late.db_number, late.return_code) == ("DB", 1, "0xff")
    assert (forgotten.area_name, forgotten.return_code) == (None, "0xff")


# ---------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("pdu", "weird"),
    [
        (H("0300000402f0"), "s7comm_bad_tpkt"),
        (job(1, H("f0000001000101e0"))[:-2], "s7comm_tpkt_length_mismatch"),
        (tpkt(H("00f080") + H("32")), "s7comm_cotp_bad_length"),
        (tpkt(H("09f080")), "s7comm_cotp_bad_length"),
        (tpkt(H("0230") + H("80")), "s7comm_cotp_unknown_type"),
        (cotp_connect(0xE0, 0, 1, H("c10301")), "s7comm_cotp_bad_parameter"),
        (cotp_connect(0xE0, 0, 1, H("c00115")), "s7comm_cotp_bad_parameter"),
        (dt(H("55") + bytes(11)), "s7comm_unknown_protocol_id"),
        (dt(H("3201000000")), "s7comm_truncated_header"),
        (dt(s7(1, 1, H("f0000001000101e0"))[:-3]), "s7comm_truncated_pdu"),
        (dt(s7(1, 1, H("f0000001000101e0")) + H("0000")), "s7comm_trailing_bytes"),
        (dt(s7(5, 1, H("f0"))), "s7comm_unknown_rosctr"),
        (job(1, b""), "s7comm_missing_parameter"),
        (job(1, H("f00000")), "s7comm_truncated_parameter"),
        (job(1, H("0402") + var_item(0x02, 1, 1, 0x84, 0)), "s7comm_truncated_parameter"),
        (job(1, H("0401120000")), "s7comm_bad_item"),
        (job(1, H("0501") + var_item(0x02, 1, 1, 0x84, 0), H("0004")), "s7comm_truncated_data"),
        (job(1, H("0501") + var_item(0x02, 4, 1, 0x84, 0), H("00040020aa")), "s7comm_truncated_data"),
        (ack_data(1, H("0502"), H("ff")), "s7comm_truncated_data"),
        (job(1, H("2800")), "s7comm_truncated_parameter"),
        (job(1, pi_start(b"_INSE", H("0300") + b"0A00001P")), "s7comm_truncated_parameter"),
        (job(1, pi_start(b"_N_LOGIN_", H("09") + b"201")), "s7comm_truncated_parameter"),
        (job(1, H("290000")), "s7comm_truncated_parameter"),
        (job(1, H("1d00")), "s7comm_truncated_parameter"),
        (ack_data(1, H("1e00")), "s7comm_truncated_parameter"),
        (dt(s7(7, 1, H("000112"))), "s7comm_truncated_parameter"),
        (userdata(1, 8, 4, 1, H("ff0900400011")), "s7comm_truncated_data"),
        (userdata(1, 8, 4, 1, H("ff09000c0011000000040001") + bytes(4)), "s7comm_szl_bad_record"),
        (userdata(1, 8, 4, 1, H("ff09000c00110000001c0002") + bytes(4)), "s7comm_szl_truncated"),
        (dt(H("7201")), "s7comm_plus_truncated_header"),
        (dt(H("7209000100") + H("72090000")), "s7comm_plus_unknown_version"),
        (dt(H("72010010") + H("31")), "s7comm_plus_truncated_data"),
        (dt(H("72030002") + H("0500") + H("72030000")), "s7comm_plus_truncated_data"),
        (dt(H("72010003") + H("310000") + H("72010000")), "s7comm_plus_truncated_data"),
    ],
)
def test_sans_io_weirds(pdu: bytes, weird: str) -> None:
    col = Collector()
    col.parse(pdu, True)
    assert weird in col.weirds(), col.weirds()


def test_fragment_reassembly_is_bounded_and_unfinished_state_is_reported() -> None:
    col = Collector()
    chunk = bytes(60000)
    col.parse(dt(chunk, eot=False), True)
    col.parse(dt(chunk, eot=False), True)
    assert "s7comm_cotp_reassembly_overflow" in col.weirds()
    szl = H("ff09000c001c0000002200010000") + bytes(6)
    col.parse(userdata(1, 8, 4, 1, szl, unit=(0x21, 1, 0)), False)
    col.dissector.close(col.ctx)
    assert "s7comm_szl_unfinished" in col.weirds()


def test_unframeable_bytes_are_dropped_with_a_weird(tmp_path: Path) -> None:
    conversation = (
        snap7_like_exchange()
        .c(b"\x00garbage that is no TPKT")
        .c(job(0x0300, H("290000000000") + H("09") + b"P_PROGRAM"))
    )
    _, run = run_packets(tmp_path, conversation.done(), "garbage")
    assert "s7comm_unframeable_data" in run.weirds()
    assert run.result.weird.summary().get("s7comm_unframeable_data") == 1
    assert [r["pdu_reference"] for r in run.rows("s7comm")] == [0x0100, 0x0100, 0x0200, 0x0300]


# ---------------------------------------------------------------------- fuzz

REAL_PDUS = [
    # snap7.pcap frames 4 (SZL 0x0011 answer), 6 and 8 (fragmented SZL 0x001C), 18 and 20 (upload), 53/54
    # (write 5 items), 56 (read answer), 63 (PI service), 44 (ACK)
    H(
        "0300009902f080320700000100000c007c000112081284010200000000ff09007800110000001c000400013645533720"
        "3331352d32454831342d304142302000c000030001000636455337203331352d32454831342d304142302000c0000300"
        "010007202020202020202020202020202020202020202000c0560302070081426f6f74204c6f61646572202020202020"
        "202020000041200909"
    ),
    H(
        "030000f702f080320700000200000c00da0001120812840102d5010000ff0900d6001c00000022000a00015337333030"
        "2f45543230304d2073746174696f6e5f31000000000000000000000002504c435f310000000000000000000000000000"
        "000000000000000000000000000003000000000000000000000000000000000000000000000000000000000000000000"
        "044f726967696e616c205369656d656e732045717569706d656e7400000000000000055320432d423155333933313432"
        "303131000000000000000000000000000000000007435055203331352d3220504e2f4450000000000000000000000000"
        "00000000000008"
    ),
    H(
        "030000a702f080320700000300000c008a0001120812840102d5000000ff0900864d4d43203441314143303139000000"
        "00000000000000000000000000000000000009002af60000010000000000000000000000000000000000000000000000"
        "000000000a0000000000000000000000000000000000000000000000000000000000000000000b000000000000000000"
        "0000000000000000000000000000000000000000000000"
    ),
    H("0300002302f0803203000008000010000000001d000100000000070730303030323136"),
    H("0300002302f080320100000800001200001d00000000000000095f3042303030303041"),
    H(
        "030000c302f080320100001a00003e00740505120a10040010000083000000120a10020010000081000000120a100200"
        "10000082000000120a101d000800001d000000120a101c000800001c00000000040100addeaddeaddeaddeaddeaddead"
        "deaddeefbeefbeefbeefbeefbeefbeefbeefbe00040080aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbb00040080bbbbbbbbbb"
        "bbbbbbaddeaddeaddeadde00090010efbeefbeefbeefbeefbeefbeefbeefbe00090010fecafecafecafecafecafecafe"
        "cafeca"
    ),
    H("0300001a02f080320300001a000002000500000505ffffff0303"),
    H(
        "0300007902f080320300001b000002006400000405ff040080acde000daddeaddeaddeaddeaddeaddeff040080aaaaaa"
        "aaaaaaaaaabbbbbbbbbbbbbbbbff040080bbbbbbbbbbbbbbbbaddeaddeaddeaddeff0900100000000000000000000000"
        "0000000000ff09001000110000000000000000000000000000"
    ),
    H("0300002702f080320100001f000016000028000000000000fd0002432009505f50524f4752414d"),
    H("0300001302f08032020000150000000000d20c"),
]
BUILT_PDUS = [
    bytes(p[TCP].payload) for p in plc_session() + plus_session() if p.haslayer(TCP) and len(p[TCP].payload)
]
SEED_PDUS = REAL_PDUS + BUILT_PDUS


def _exercise(data: bytes) -> Collector:
    for port in (102, 10102):
        S7commDissector.recognize(data, Transport.TCP, 40001, port)
    col = Collector()
    col.feed(data, True)
    col.parse(data, False)
    col.dissector.close(col.ctx)
    assert len(col.events) <= 8 * (len(data) + 8)
    return col


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _exercise(data)
    _exercise(H("0300") + struct.pack(">H", len(data) + 4) + data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(SEED_PDUS), min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
)
def test_fuzz_mutated_real_pdus(pdus: list[bytes], mutations: list[tuple[int, int]]) -> None:
    data = bytearray(b"".join(pdus))
    for position, value in mutations:
        data[position % len(data)] = value
    _exercise(bytes(data))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEED_PDUS), st.data())
def test_fuzz_truncated_real_pdus_are_counted_weird(pdu: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(pdu) - 1))
    col = Collector()
    col.parse(pdu[:cut], bool(cut % 2))
    names = col.weirds()
    assert names
    assert all(n.startswith("s7comm_") for n in names)
    assert {"s7comm_bad_tpkt", "s7comm_tpkt_length_mismatch"} & set(names)
    # streamed, a cut PDU waits for its missing bytes instead
    assert Collector().feed(pdu[:cut], True) == pdu[:cut]


def test_seed_pdus_parse_cleanly() -> None:
    """The fuzz seeds are valid: parsed one by one (with their flow state), they give no weird."""
    col = Collector()
    for pdu in REAL_PDUS[:3]:
        col.parse(pdu, False)
    assert col.weirds() == []
    assert [i.szl_id for i in col.of(S7commIdentification)] == ["0x0011", "0x001c"]


# ---------------------------------------------------------------------- documentation


def test_every_event_field_is_documented() -> None:
    doc = DOC.read_text()
    for event_type in EVENT_TYPES:
        assert f"`{event_type.log}`" in doc, f"events file {event_type.log} is not documented"
        for f in dataclasses.fields(event_type):
            assert re.search(rf"^\| `{f.name}` \| [^|]+ \| [^|]+ \|$", doc, re.M), (
                f"{event_type.__name__}.{f.name} has no '| `field` | type | meaning |' row"
            )
    weirds = set(re.findall(r'"(s7comm_[a-z_]+)"', MODULE.read_text()))
    weirds -= {event_type.log for event_type in EVENT_TYPES}
    weirds |= {"s7comm_unframeable_data", "s7comm_pdu_lost_in_gap", "s7comm_pdu_too_large"}
    for name in sorted(weirds):
        assert f"`{name}`" in doc, f"weird {name} is not documented"
