"""Columnar fast paths (``Dissector.parse_batch``) give exactly the output of the per-PDU ``parse``.

Differential tests: the whole pipeline with and without fast paths on the corpus captures and on a
generated plant capture must write identical Parquet tables (same rows, values and order) and the same
summary. The engine rules of the SDK are tested with a toy UDP protocol whose fast path handles only
some datagrams, so that fast-path events interleave with per-PDU events, weirds and exceptions.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
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
from fieldward.events_out import EventWriter
from fieldward.generator import GeneratorConfig, generate_capture
from fieldward.pipeline import AnalysisOptions, analyze
from fieldward.protocols.base import (
    BatchResult,
    Datagrams,
    Dissector,
    Event,
    EventColumns,
    PduContext,
    ProtocolWeird,
    Transport,
    Verdict,
    binary_array,
    event_schema,
    events_of_table,
)
from fieldward.protocols.engine import ProtocolEngine, ProtocolSettings
from fieldward.protocols.enip import CipIO, EnipDissector
from fieldward.protocols.registry import Registry
from fieldward.weird import WeirdLog

CORPUS_CAPTURES = [
    "enip/enip_cip_example.pcap",
    "modbus/modbusSmall.pcap",
    "modbus/fuzz-72.pcap",
    "modbus/modbus-and-non-modbus-p502.pcap",
]


def _outputs(capture: Path, out: Path, fast: bool) -> tuple[dict[str, pa.Table], dict[str, object]]:
    # Small batches, so that flows and TCP streams span batches.
    options = AnalysisOptions(batch_packets=2048, protocols=ProtocolSettings(fast_path=fast), plugins=False)
    analyze([capture], out, options)
    tables = {str(p.relative_to(out)): pq.read_table(p) for p in sorted(out.rglob("*.parquet"))}
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("elapsed_s")
    return tables, summary


def _assert_same_output(capture: Path, tmp_path: Path) -> dict[str, pa.Table]:
    fast_tables, fast_summary = _outputs(capture, tmp_path / "fast", fast=True)
    slow_tables, slow_summary = _outputs(capture, tmp_path / "slow", fast=False)
    assert fast_tables.keys() == slow_tables.keys()
    for name, table in slow_tables.items():
        assert fast_tables[name].schema == table.schema, name
        assert fast_tables[name].equals(table), name
    assert fast_summary == slow_summary
    return fast_tables


@pytest.mark.parametrize("name", CORPUS_CAPTURES)
def test_fast_path_matches_per_pdu_parse_on_corpus(corpus: Path, name: str, tmp_path: Path) -> None:
    _assert_same_output(corpus / name, tmp_path)


def test_fast_path_matches_per_pdu_parse_on_generated_plant(tmp_path: Path) -> None:
    capture = tmp_path / "plant.pcap"
    generate_capture(capture, GeneratorConfig(devices=12, minutes=0.1, seed=3, camera_streams=False))
    tables = _assert_same_output(capture, tmp_path)
    # The capture exercises the fast path: most CIP I/O datagrams have the two-item layout it takes.
    assert tables["events/cip_io.parquet"].num_rows > 500


# ------------------------------------------------------------------- CIP I/O layouts, byte by byte

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def _io(connection: int, sequence: int, data: bytes, extra_items: bytes = b"", count: int = 2) -> bytes:
    """A UDP I/O datagram (ODVA Vol 2 3-2.2): Sequenced Address item, optional items, Connected Data."""
    return (
        struct.pack("<HHHII", count, 0x8002, 8, connection, sequence)
        + extra_items
        + struct.pack("<HH", 0x00B1, len(data))
        + data
    )


def _enip_run(datagrams: list[bytes], fast: bool, batch_size: int = 1000) -> list[Event]:
    packets = [
        bytes(Ether() / IP(src=CLIENT, dst=SERVER) / UDP(sport=2222, dport=2222) / payload)
        for payload in datagrams
    ]
    weird = WeirdLog()
    events: list[Event] = []
    registry = Registry()
    registry.add(EnipDissector)
    engine = ProtocolEngine(registry, events.append, weird, ProtocolSettings(fast_path=fast))
    flows = FlowTable(weird=weird)
    for start in range(0, len(packets), batch_size):
        chunk = packets[start : start + batch_size]
        batch = PacketBatch.from_packets(chunk, ts_ns=[(start + i) * 1000 for i in range(len(chunk))])
        decoded = decode_batch(batch, weird)
        engine.process(batch, decoded, flows.update(batch, decoded))
    engine.finish()
    return events


def test_cip_io_layouts_fast_and_per_pdu_agree() -> None:
    """Two-item datagrams (fast path), three-item ones and malformed ones (per-PDU parse), interleaved."""
    null_address = struct.pack("<HH", 0x0000, 0)
    datagrams = [
        _io(0x11223344, 1, b"\x01\x02\x03\x04"),
        _io(0x11223344, 2, b"", extra_items=null_address, count=3),  # third item: parse() handles it
        _io(0x11223344, 3, b""),  # empty Connected Data item
        _io(0x11223344, 4, b"\xff" * 40)[:-1],  # data item length beyond the datagram: not I/O
        _io(0x11223344, 5, b"\x00\x01"),
        struct.pack("<HHH", 2, 0x8002, 4) + b"\x00" * 8,  # sequenced address of the wrong size
        _io(0xFFFFFFFF, 0xFFFFFFFF, bytes(range(200))),
    ]
    for batch_size in (1, 3, 1000):
        fast = _enip_run(datagrams, fast=True, batch_size=batch_size)
        slow = _enip_run(datagrams, fast=False, batch_size=batch_size)
        assert fast == slow, batch_size
    ios = [e for e in fast if isinstance(e, CipIO)]
    # Expected from the datagrams' construction (ODVA Vol 2 3-2.2), not from our own output.
    assert [(e.connection_id, e.sequence_number, e.data_length, e.io_data) for e in ios] == [
        (0x11223344, 1, 4, b"\x01\x02\x03\x04"),
        (0x11223344, 2, 0, b""),
        (0x11223344, 3, 0, b""),
        (0x11223344, 5, 2, b"\x00\x01"),
        (0xFFFFFFFF, 0xFFFFFFFF, 200, bytes(range(200))),
    ]
    assert [e.ts for e in ios] == [0, 1000, 2000, 4000, 6000]
    assert all(e.is_orig and e.orig_h == CLIENT and e.resp_p == 2222 for e in ios)


def test_cip_io_parse_batch_columns() -> None:
    data = [_io(7, 9, b"abc"), b"\x00" * 10, _io(8, 10, b"")]
    buffer = np.frombuffer(b"".join(data), dtype=np.uint8)
    lengths = np.array([len(d) for d in data], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    n = len(data)
    result = EnipDissector.parse_batch(
        Datagrams(
            buffer, starts, lengths, np.arange(n, dtype=np.int64), np.zeros(n, np.int64), np.ones(n, bool)
        )
    )
    assert result.handled.tolist() == [True, False, True]
    (io,) = result.events
    assert io.event_type is CipIO
    assert io.rows.tolist() == [0, 2]
    assert list(io.columns["connection_id"]) == [7, 8]
    assert list(io.columns["sequence_number"]) == [9, 10]
    assert list(io.columns["data_length"]) == [3, 0]
    io_data = io.columns["io_data"]
    assert isinstance(io_data, pa.Array)
    assert io_data.to_pylist() == [b"abc", b""]


# ------------------------------------------------------------------- engine rules with a toy protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick(Event):
    log: ClassVar[str] = "tick"
    value: int
    rest: bytes


class TickDissector(Dissector):
    """Datagrams 'T' + value byte + rest. parse_batch takes values < 100; parse raises on 255 and
    reports a weird on 254; 'S' datagrams count a per-flow state the fast path must not see."""

    name = "tick"
    transports = frozenset({Transport.UDP})
    ports = frozenset({9999})
    event_types = (Tick,)

    @classmethod
    def recognize(cls, data: bytes, transport: Transport, sport: int, dport: int) -> Verdict:
        return Verdict.YES if data[:1] in (b"T", b"S") else Verdict.NO

    @classmethod
    def parse_batch(cls, datagrams: Datagrams) -> BatchResult | None:
        head = datagrams.heads(2)
        handled = (head[:, 0] == ord("T")) & (head[:, 1] < 100) & (datagrams.length >= 2)
        rows = np.flatnonzero(handled)
        columns = {"value": head[rows, 1].astype(np.int64), "rest": datagrams.binary(2, rows)}
        return BatchResult(handled, (EventColumns(Tick, rows, columns),))

    def parse(self, pdu: bytes, ctx: PduContext) -> None:
        if len(pdu) < 2:
            ctx.weird("tick_short", f"{len(pdu)} bytes")
            return
        if pdu[:1] == b"S":
            ctx.emit(Tick(**ctx.where(), value=-pdu[1], rest=pdu[2:]))
            return
        if pdu[1] == 255:
            raise RuntimeError("dissector bug")
        if pdu[1] == 254:
            ctx.weird("tick_254", "value 254")
            return
        ctx.emit(Tick(**ctx.where(), value=pdu[1], rest=pdu[2:]))


class BrokenBatchDissector(TickDissector):
    """A fast path that fails: the engine confines it and parse() does the work."""

    name = "tick_broken"

    @classmethod
    def parse_batch(cls, datagrams: Datagrams) -> BatchResult:
        raise ValueError("fast path bug")


def _tick_run(
    payloads: list[tuple[int, bytes]], fast: bool, dissector: type[Dissector] = TickDissector
) -> tuple[list[Event], WeirdLog]:
    """``payloads``: (client port, datagram) from 10.0.0.1 to 10.0.0.2:9999, one batch."""
    packets = [
        bytes(Ether() / IP(src=CLIENT, dst=SERVER) / UDP(sport=port, dport=9999) / data)
        for port, data in payloads
    ]
    weird = WeirdLog()
    events: list[Event] = []
    registry = Registry()
    registry.add(dissector)
    settings = ProtocolSettings(fast_path=fast, max_exceptions_per_flow=2)
    engine = ProtocolEngine(registry, events.append, weird, settings)
    flows = FlowTable(weird=weird)
    batch = PacketBatch.from_packets(packets, ts_ns=[i * 1000 for i in range(len(packets))])
    decoded = decode_batch(batch, weird)
    engine.process(batch, decoded, flows.update(batch, decoded))
    engine.finish()
    return events, weird


TICKS = [
    (1000, b"T\x01a"),
    (1001, b"T\x02b"),
    (1000, b"T\xfe"),  # weird, from parse()
    (1000, b"T\x03c"),
    (1000, b"T\xff"),  # exception 1 on flow 1000
    (1001, b"S\x07"),  # stateful datagram, parse()
    (1000, b"T\x04d"),
    (1000, b"T\xff"),  # exception 2: the dissector is detached from flow 1000
    (1000, b"T\x05e"),  # never reported: flow 1000 is no longer dissected
    (1001, b"T\x06f"),
    (1001, b"T"),  # short: weird
    (1001, b"T\x63" + bytes(300)),
]


def _summary(events: list[Event]) -> list[tuple[str, int, int, object]]:
    return [
        (
            type(e).__name__,
            e.orig_p,
            e.ts,
            (e.value, e.rest) if isinstance(e, Tick) else (e.name if isinstance(e, ProtocolWeird) else None),
        )
        for e in events
    ]


def test_fast_path_interleaves_with_parse_in_capture_order() -> None:
    fast, fast_weird = _tick_run(TICKS, fast=True)
    slow, slow_weird = _tick_run(TICKS, fast=False)
    assert fast == slow
    assert fast_weird.summary() == slow_weird.summary()
    ticks = [(e.orig_p, e.value, e.rest) for e in fast if isinstance(e, Tick)]
    assert ticks == [
        (1000, 1, b"a"),
        (1001, 2, b"b"),
        (1000, 3, b"c"),
        (1001, -7, b""),
        (1000, 4, b"d"),
        (1001, 6, b"f"),
        (1001, 99, bytes(300)),
    ]
    assert [e.name for e in fast if isinstance(e, ProtocolWeird)] == ["tick_254", "tick_short"]
    assert fast_weird.summary()["dissector_exception"] == 2


def test_fast_path_events_through_the_event_writer(tmp_path: Path) -> None:
    """With an EventWriter the fast path hands over Arrow tables; the Parquet file is the same."""
    packets = [
        bytes(Ether() / IP(src=CLIENT, dst=SERVER) / UDP(sport=port, dport=9999) / data)
        for port, data in TICKS
    ]
    capture = tmp_path / "ticks.pcap"
    wrpcap(str(capture), [Ether(p) for p in packets])
    tables = {}
    for fast in (True, False):
        out = tmp_path / str(fast)
        writer = EventWriter(out)
        registry = Registry()
        registry.add(TickDissector)
        weird = WeirdLog()
        engine = ProtocolEngine(
            registry, writer, weird, ProtocolSettings(fast_path=fast, max_exceptions_per_flow=2)
        )
        flows = FlowTable(weird=weird)
        batch = PacketBatch.from_packets(packets, ts_ns=[i * 1000 for i in range(len(packets))])
        decoded = decode_batch(batch, weird)
        engine.process(batch, decoded, flows.update(batch, decoded))
        engine.finish()
        writer.close()
        assert writer.counts == {"tick": 7, "weird": 2}
        tables[fast] = pq.read_table(out / "tick.parquet")
    assert tables[True].equals(tables[False])
    assert tables[True].column("value").to_pylist() == [1, 2, 3, -7, 4, 6, 99]


def test_a_failing_fast_path_is_confined() -> None:
    fast, weird = _tick_run(TICKS, fast=True, dissector=BrokenBatchDissector)
    slow, _ = _tick_run(TICKS, fast=False, dissector=BrokenBatchDissector)
    assert fast == slow
    assert weird.summary()["dissector_exception"] == 3  # the fast path's, then parse()'s two


def test_event_writer_keeps_order_of_objects_and_tables(tmp_path: Path) -> None:
    writer = EventWriter(tmp_path, flush_rows=3)
    writer.keep = []
    base: dict[str, Any] = {
        "flow_id": 1,
        "orig_h": "a",
        "orig_p": 1,
        "resp_h": "b",
        "resp_p": 2,
        "is_orig": True,
    }
    for value in range(5):
        writer(Tick(ts=value, **base, value=value, rest=b""))
        rows = [Tick(ts=10 + value, **base, value=100 + value, rest=b"x")]
        writer.write_table(Tick, pa.Table.from_pylist([_row(e) for e in rows], schema=event_schema(Tick)))
    writer.close()
    table = pq.read_table(tmp_path / "tick.parquet")
    assert table.column("value").to_pylist() == [0, 100, 1, 101, 2, 102, 3, 103, 4, 104]
    assert writer.counts == {"tick": 10}
    assert [e.value for e in writer.keep if isinstance(e, Tick)] == [0, 100, 1, 101, 2, 102, 3, 103, 4, 104]
    assert events_of_table(Tick, table) == writer.keep


def _row(event: Tick) -> dict[str, object]:
    return {name: getattr(event, name) for name in event_schema(Tick).names}


def test_binary_array_slices_the_buffer() -> None:
    buffer = np.frombuffer(b"hello world", dtype=np.uint8)
    array = binary_array(buffer, np.array([0, 6, 3], np.int64), np.array([5, 5, 0], np.int64))
    assert array.to_pylist() == [b"hello", b"world", b""]


# ------------------------------------------------------------------- Modbus/TCP (parse_pdu_batch)


def _adu(tid: int, fc: int, body: bytes, unit: int = 1, pid: int = 0) -> bytes:
    """A Modbus/TCP ADU (Messaging on TCP/IP Implementation Guide 3.1.3): MBAP, function code, body."""
    return struct.pack(">HHHBB", tid, pid, 2 + len(body), unit, fc) + body


def _read(address: int, quantity: int) -> bytes:
    return struct.pack(">HH", address, quantity)


def _registers(*values: int) -> bytes:
    return bytes([2 * len(values)]) + struct.pack(f">{len(values)}H", *values)


def _tcp(segments: list[tuple[bool, bytes]], cport: int = 40001, server_first: bool = False) -> list[bytes]:
    """A TCP connection to port 502 carrying ``(from_client, data)`` segments, with consistent sequence
    numbers. ``server_first``: the capture starts with the server's packet (no handshake)."""
    client, server = "10.20.0.5", "10.20.0.10"
    seq = {True: 1000, False: 5000}
    packets = []
    if not server_first:
        packets.append(Ether() / IP(src=client, dst=server) / TCP(sport=cport, dport=502, flags="S", seq=999))
        packets.append(
            Ether() / IP(src=server, dst=client) / TCP(sport=502, dport=cport, flags="SA", seq=4999, ack=1000)
        )
    for from_client, data in segments:
        src, dst, sp, dp = (client, server, cport, 502) if from_client else (server, client, 502, cport)
        tcp = TCP(sport=sp, dport=dp, flags="PA", seq=seq[from_client], ack=seq[not from_client])
        packets.append(Ether() / IP(src=src, dst=dst) / tcp / data)
        seq[from_client] += len(data)
    return [bytes(p) for p in packets]


MODBUS_SEGMENTS: list[tuple[bool, bytes]] = [
    (True, _adu(1, 3, _read(100, 3))),
    (False, _adu(1, 3, _registers(1, 2, 3))),
    (True, _adu(2, 4, _read(7, 2))),
    (False, _adu(2, 4, _registers(0xFFFF, 0))),
    (True, _adu(3, 3, _read(5, 4))),
    (False, _adu(3, 3, _registers(9, 9))),  # 2 registers answer 4: parse() reports the mismatch
    (True, _adu(4, 6, _read(10, 0x1234))),  # write single register: parse()
    (False, _adu(4, 6, _read(10, 0x1234))),
    (False, _adu(99, 3, _registers(42))),  # no request seen: not matched, no address
    (True, _adu(5, 3, _read(5, 0))),  # quantity 0: parse() reports it
    (False, _adu(5, 3, _registers())),
    (False, _adu(6, 0x83, b"\x02")),  # exception response: parse()
    (True, _adu(7, 3, _read(1, 1)) + _adu(8, 4, _read(2, 2))),  # two ADUs in one segment
    (False, _adu(8, 4, _registers(8, 8)) + _adu(7, 3, _registers(7))),  # answered out of order
    (True, _adu(9, 3, _read(300, 1))[:5]),  # one ADU split across two segments
    (True, _adu(9, 3, _read(300, 1))[5:]),
    (False, _adu(9, 3, _registers(300))),
    (True, _adu(10, 3, _read(1, 1), pid=7)),  # protocol id 7: unframeable, dropped with a weird
    (True, _adu(11, 3, _read(2, 2))),
    (False, _adu(11, 3, _registers(5, 6))),
]


def run_dissector(
    dissector: type[Dissector], packets: list[bytes], fast: bool, batch_size: int, writer: bool = True
) -> tuple[list[Event], dict[str, int]]:
    """Events of ``dissector`` alone in output order: through an EventWriter (which takes the fast
    path's tables; order is kept within each log) or, ``writer`` False, a plain callable (TCP PDUs
    parsed one by one)."""
    weird = WeirdLog()
    events: list[Event] = []
    output = EventWriter(None)
    output.keep = events
    registry = Registry()
    registry.add(dissector)
    emit = output if writer else events.append
    engine = ProtocolEngine(registry, emit, weird, ProtocolSettings(fast_path=fast))
    flows = FlowTable(weird=weird)
    for start in range(0, len(packets), batch_size):
        chunk = packets[start : start + batch_size]
        batch = PacketBatch.from_packets(chunk, ts_ns=[(start + i) * 1000 for i in range(len(chunk))])
        decoded = decode_batch(batch, weird)
        engine.process(batch, decoded, flows.update(batch, decoded))
    engine.finish()
    return events, weird.summary()


def _modbus_run(
    packets: list[bytes], fast: bool, batch_size: int, writer: bool = True
) -> tuple[list[Event], dict[str, int]]:
    from fieldward.protocols.modbus import ModbusDissector

    return run_dissector(ModbusDissector, packets, fast, batch_size, writer)


def _by_log(events: list[Event]) -> dict[str, list[Event]]:
    logs: dict[str, list[Event]] = {}
    for event in events:
        logs.setdefault(event.log, []).append(event)
    return logs


@pytest.mark.parametrize("server_first", [False, True])
def test_modbus_tcp_fast_and_per_pdu_agree(server_first: bool) -> None:
    from fieldward.protocols.modbus import ModbusEvent

    segments = MODBUS_SEGMENTS if not server_first else MODBUS_SEGMENTS[1:]
    packets = _tcp(segments, server_first=server_first) + _tcp(MODBUS_SEGMENTS[:4], cport=40002)
    for batch_size in (1, 5, 1000):
        fast, fast_weird = _modbus_run(packets, fast=True, batch_size=batch_size)
        slow, slow_weird = _modbus_run(packets, fast=False, batch_size=batch_size)
        assert _by_log(fast) == _by_log(slow), batch_size
        assert fast_weird == slow_weird
        plain, _ = _modbus_run(packets, fast=True, batch_size=batch_size, writer=False)
        assert plain == slow
    rows = [
        (e.tid, e.pdu_type, e.matched, e.address, e.quantity, e.registers)
        for e in fast
        if isinstance(e, ModbusEvent) and 40001 in (e.orig_p, e.resp_p) and e.function_code in (3, 4)
    ]
    expected = [
        (1, "REQ", False, 100, 3, None),
        (1, "RESP", True, 100, 3, [1, 2, 3]),
        (2, "REQ", False, 7, 2, None),
        (2, "RESP", True, 7, 2, [0xFFFF, 0]),
        (3, "REQ", False, 5, 4, None),
        (3, "RESP", True, 5, 2, [9, 9]),
        (99, "RESP", False, None, 1, [42]),
        (5, "REQ", False, 5, 0, None),
        (5, "RESP", True, 5, 0, []),
        (7, "REQ", False, 1, 1, None),
        (8, "REQ", False, 2, 2, None),
        (8, "RESP", True, 2, 2, [8, 8]),
        (7, "RESP", True, 1, 1, [7]),
        (9, "REQ", False, 300, 1, None),
        (9, "RESP", True, 300, 1, [300]),
        (11, "REQ", False, 2, 2, None),
        (11, "RESP", True, 2, 2, [5, 6]),
    ]
    if server_first:  # the flow starts with the response to a request never seen
        expected = [(1, "RESP", False, None, 3, [1, 2, 3]), *expected[2:]]
    assert rows == expected
    names = [e.name for e in fast if isinstance(e, ProtocolWeird)]
    assert names == ["modbus_quantity_mismatch", "modbus_invalid_quantity", "modbus_unframeable_data"]


def test_modbus_tcp_fast_path_parquet_matches(tmp_path: Path) -> None:
    packets = _tcp(MODBUS_SEGMENTS) + _tcp(MODBUS_SEGMENTS, cport=40003)
    capture = tmp_path / "modbus.pcap"
    wrpcap(str(capture), [Ether(p) for p in packets])
    tables = _assert_same_output(capture, tmp_path)
    assert tables["events/modbus.parquet"].num_rows == 2 * 20  # the ADUs built above, less the dropped one


class TickTcpDissector(TickDissector):
    """TCP: PDUs 'T' + value byte. The fast path takes every PDU; its ``apply`` fails on value 13."""

    name = "tick_tcp"
    transports = frozenset({Transport.TCP})

    @classmethod
    def parse_batch(cls, datagrams: Datagrams) -> BatchResult | None:
        return None

    def frame(self, data: bytes, is_orig: bool) -> int:
        return 2 if len(data) >= 2 else 0

    @classmethod
    def parse_pdu_batch(cls, pdus: Datagrams) -> BatchResult:
        values = pdus.heads(2)[:, 1].astype(np.int64)

        def apply(dissector: Dissector, i: int) -> bool:
            if values[i] == 13:
                raise RuntimeError("fast path bug")
            return True

        def build(rows: npt.NDArray[np.intp]) -> tuple[EventColumns, ...]:
            if cls.broken_build:
                raise RuntimeError("fast path bug")
            columns = {"value": values[rows], "rest": pdus.binary(2, rows)}
            return (EventColumns(Tick, rows, columns),)

        return BatchResult(np.ones(len(pdus), dtype=np.bool_), apply=apply, build=build)

    broken_build: ClassVar[bool] = False


class TickTcpBrokenBuild(TickTcpDissector):
    name = "tick_tcp_broken"
    broken_build = True


@pytest.mark.parametrize("dissector", [TickTcpDissector, TickTcpBrokenBuild])
def test_tcp_fast_path_failures_are_confined(dissector: type[TickTcpDissector], tmp_path: Path) -> None:
    packets = _tcp([(True, b"T\x01"), (True, b"T\x0d"), (True, b"T\x02T\x03")], cport=40010)
    weird = WeirdLog()
    writer = EventWriter(None)
    writer.keep = []
    registry = Registry()
    registry.add(dissector)
    engine = ProtocolEngine(registry, writer, weird)
    flows = FlowTable(weird=weird)
    batch = PacketBatch.from_packets(packets, ts_ns=list(range(len(packets))))
    decoded = decode_batch(batch, weird)
    engine.process(batch, decoded, flows.update(batch, decoded))
    engine.finish()
    values = [e.value for e in writer.keep if isinstance(e, Tick)]
    assert values == ([] if dissector.broken_build else [1, 2, 3])
    assert weird.summary()["dissector_exception"] == (2 if dissector.broken_build else 1)


# ------------------------------------------------------------------- fuzzed differential

_tids = st.integers(0, 3)  # few transaction ids, so that requests and responses collide
_codes = st.sampled_from([3, 4, 3, 4, 6, 0x83])
_mbap_adus = st.one_of(
    st.builds(
        lambda t, c, a, q: _adu(t, c, _read(a, q)), _tids, _codes, st.integers(0, 9), st.integers(0, 130)
    ),
    st.builds(
        lambda t, c, values: _adu(t, c, _registers(*values)),
        _tids,
        _codes,
        st.lists(st.integers(0, 0xFFFF), max_size=5),
    ),
    st.builds(lambda t, c, body: _adu(t, c, body), _tids, _codes, st.binary(max_size=7)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), _mbap_adus), min_size=1, max_size=12), st.integers(1, 8))
def test_fuzz_modbus_fast_path_equals_per_pdu(segments: list[tuple[bool, bytes]], batch_size: int) -> None:
    packets = _tcp(segments)
    fast, fast_weird = _modbus_run(packets, fast=True, batch_size=batch_size)
    slow, slow_weird = _modbus_run(packets, fast=False, batch_size=batch_size)
    assert _by_log(fast) == _by_log(slow)
    assert fast_weird == slow_weird


_io_datagrams = st.one_of(
    st.builds(_io, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=20)),
    st.builds(
        lambda d, cut: d[:cut],
        st.builds(_io, st.just(1), st.just(2), st.binary(max_size=8)),
        st.integers(0, 30),
    ),
    st.binary(max_size=30),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_io_datagrams, min_size=1, max_size=10), st.integers(1, 6))
def test_fuzz_cip_io_fast_path_equals_per_pdu(datagrams: list[bytes], batch_size: int) -> None:
    assert _enip_run(datagrams, fast=True, batch_size=batch_size) == _enip_run(
        datagrams, fast=False, batch_size=batch_size
    )
