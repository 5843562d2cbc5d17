"""The columnar TCP path: in-order segments cut into PDUs with numpy (``Dissector.framing``).

Segments delivered whole and in order, on flows whose dissector has a TCP fast path and declares its
framing, with nothing buffered in their direction, are cut with :meth:`LengthFraming.cut` across the
batch and handed to ``parse_pdu_batch`` as columns of the batch buffer; everything else goes through
``frame``. Tests: the built-in declarations agree with ``frame`` (fuzzed); ``cut`` on hand-made
ranges; the engine takes the columnar path for clean streams; and differential runs (columnar path vs
``ProtocolSettings(fast_path=False)``) over streams with several PDUs per segment, split PDUs,
garbage, retransmissions, reordering, lost segments, FIN/RST and several batch sizes must give the
same events in the same order and the same weirds.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldward.generator import GeneratorConfig, generate_capture
from fieldward.pipeline import AnalysisOptions, analyze
from fieldward.protocols.base import Dissector, FlowInfo, HeaderField, LengthFraming, Transport
from fieldward.protocols.engine import ProtocolSettings, _declared_framing
from fieldward.protocols.enip import EnipDissector
from fieldward.protocols.modbus import ModbusDissector
from fieldward.protocols.s7comm import S7commDissector
from tests.decode.test_reassembly_fast import Seg, _in_order, _packets
from tests.protocols.test_fast_path import _adu, _by_log, _read, _registers, run_dissector

FRAMED: list[type[Dissector]] = [ModbusDissector, S7commDissector, EnipDissector]
FLOW = FlowInfo(1, Transport.TCP, "10.0.0.1", 40000, "10.0.0.2", 502)


def _declared(cls: type[Dissector]) -> LengthFraming:
    framing = cls.framing
    assert framing is not None
    return framing


def _valid_pdu(framing: LengthFraming, raw: bytes, picks: list[int]) -> bytes:
    """``raw`` made into a PDU the declaration accepts: required fields set, length field fitted."""
    size = min(max(len(raw), framing.min_size), framing.max_size)
    data = bytearray(raw[:size].ljust(size, b"\0"))
    for (f, values), pick in zip(framing.require, [*picks, 0, 0, 0], strict=False):
        value = sorted(values)[pick % len(values)]
        data[f.offset : f.end] = value.to_bytes(f.size, f.byteorder)
    value = size - framing.add
    data[framing.length.offset : framing.length.end] = value.to_bytes(
        framing.length.size, framing.length.byteorder
    )
    return bytes(data)


def _frame_all(cls: type[Dissector], data: bytes) -> list[int] | None:
    """PDU sizes ``frame`` cuts ``data`` into, or None when it does not end on a PDU boundary."""
    dissector = cls(FLOW)
    sizes = []
    while data:
        size = dissector.frame(data, True)
        if size <= 0 or size > len(data):
            return None
        sizes.append(size)
        data = data[size:]
    return sizes


@pytest.mark.parametrize("cls", FRAMED)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.binary(max_size=80), st.lists(st.integers(0, 255), max_size=3)), max_size=4),
    st.binary(max_size=12),
    st.integers(0, 3),
)
def test_declared_framing_agrees_with_frame(
    cls: type[Dissector], pdus: list[tuple[bytes, list[int]]], noise: bytes, where: int
) -> None:
    framing = _declared(cls)
    parts = [_valid_pdu(framing, raw, picks) for raw, picks in pdus]
    if noise:  # garbage (maybe valid by chance) somewhere, or a truncated tail
        parts.insert(min(where, len(parts)), noise)
    data = b"".join(parts)
    whole, pdu_range, pdu_start, pdu_length = framing.cut(
        np.frombuffer(data, dtype=np.uint8),
        np.array([0], dtype=np.int64),
        np.array([len(data)], dtype=np.int64),
    )
    expected = _frame_all(cls, data)
    if whole[0]:
        assert expected == pdu_length.tolist()
        assert pdu_start.tolist() == np.cumsum([0, *pdu_length.tolist()])[:-1].tolist()
        assert pdu_range.tolist() == [0] * len(expected)
    elif data and not noise:
        pytest.fail("a run of valid PDUs was not taken whole")
    if whole[0] and not noise:
        assert expected == [len(p) for p in parts]


@pytest.mark.parametrize("cls", FRAMED)
@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_framing_never_accepts_what_frame_rejects(cls: type[Dissector], data: bytes) -> None:
    framing = _declared(cls)
    whole, *_ = framing.cut(
        np.frombuffer(data, dtype=np.uint8),
        np.array([0], dtype=np.int64),
        np.array([len(data)], dtype=np.int64),
    )
    if whole[0]:
        assert _frame_all(cls, data) is not None


def test_cut_ranges() -> None:
    framing = LengthFraming(
        HeaderField(0, 1), add=1, min_size=2, require=((HeaderField(1, 1), frozenset({7})),)
    )
    pdu = bytes([2, 7, 0])  # length 2 + 1 = 3 bytes
    buffer = pdu + pdu + pdu + pdu[:2] + bytes([2, 8, 0]) + bytes([0, 7]) + pdu
    ranges = [(0, 3), (3, 6), (9, 2), (11, 3), (14, 2), (16, 3), (16, 0)]
    whole, pdu_range, pdu_start, pdu_length = framing.cut(
        np.frombuffer(buffer, dtype=np.uint8),
        np.array([r[0] for r in ranges], dtype=np.int64),
        np.array([r[1] for r in ranges], dtype=np.int64),
    )
    # one PDU; two PDUs; a partial PDU; a bad required field; a size below min_size; one PDU; empty
    assert whole.tolist() == [True, True, False, False, False, True, False]
    assert pdu_range.tolist() == [0, 1, 1, 5]
    assert pdu_start.tolist() == [0, 3, 6, 16]
    assert pdu_length.tolist() == [3, 3, 3, 3]


def test_framing_declaration_is_checked() -> None:
    with pytest.raises(ValueError, match="min_size"):
        LengthFraming(HeaderField(4), min_size=4)  # the length field is not inside the smallest PDU
    with pytest.raises(ValueError, match="bad header field"):
        HeaderField(0, 3)


def test_a_subclass_overriding_frame_loses_the_declaration() -> None:
    class OtherFraming(ModbusDissector):
        name = "modbus_other"

        def frame(self, data: bytes, is_orig: bool) -> int:
            return len(data)

    assert _declared_framing(ModbusDissector) is ModbusDissector.framing
    assert _declared_framing(OtherFraming) is None


# ------------------------------------------------------------------- the engine takes the columnar path


def _modbus_segments(count: int) -> list[Seg]:
    segs = [Seg(True, 0, b"", "S"), Seg(False, 0, b"", "SA")]
    offsets = {True: 0, False: 0}
    for tid in range(count):
        for from_client, data in (
            (True, _adu(tid, 3, _read(tid, 2))),
            (False, _adu(tid, 3, _registers(tid, 1))),
        ):
            segs.append(Seg(from_client, offsets[from_client], data))
            offsets[from_client] += len(data)
    return segs


def test_clean_streams_are_not_framed_per_pdu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    frame = ModbusDissector.frame

    def counting(self: ModbusDissector, data: bytes, is_orig: bool) -> int:
        calls.append(len(data))
        return frame(self, data, is_orig)

    monkeypatch.setattr(ModbusDissector, "frame", counting)
    packets = [bytes(p) for p in _packets(_modbus_segments(40), (1000, 5000))]
    events, weird = run_dissector(ModbusDissector, packets, fast=True, batch_size=10)
    assert len(events) == 80
    assert not weird
    assert 0 < len(calls) <= 10  # only the first batch (the flow is recognised in it) is framed per PDU
    calls.clear()
    slow, _ = run_dissector(ModbusDissector, packets, fast=False, batch_size=10)
    assert len(calls) == 80
    assert _by_log(events) == _by_log(slow)


# ------------------------------------------------------------------- differential: columnar vs per-PDU


def _stream(adus: list[tuple[bool, bytes]], cuts: list[int]) -> list[Seg]:
    """ADUs of both directions, each direction's bytes cut into segments of the ``cuts`` sizes."""
    segs: list[Seg] = []
    for from_client in (True, False):
        data = b"".join(a for c, a in adus if c == from_client)
        segs += _in_order(from_client, data, cuts or [len(data) or 1])
    # Interleave the directions by ADU order (requests before their responses, roughly).
    segs.sort(key=lambda s: (s.offset, not s.from_client))
    return segs


def _modbus_pair(tid: int) -> list[tuple[bool, bytes]]:
    return [(True, _adu(tid, 3, _read(tid, 2))), (False, _adu(tid, 3, _registers(tid, tid + 1)))]


def _assert_columnar_equals_per_pdu(
    cls: type[Dissector], segs: list[Seg], batch_sizes: tuple[int, ...]
) -> None:
    both = _packets(segs, (1000, 5000)) + _packets(segs, (77, 2**32 - 20), sport=40001)
    packets = [bytes(p) for p in both]
    for batch_size in batch_sizes:
        fast, fast_weird = run_dissector(cls, packets, fast=True, batch_size=batch_size)
        slow, slow_weird = run_dissector(cls, packets, fast=False, batch_size=batch_size)
        assert _by_log(fast) == _by_log(slow), batch_size
        assert fast_weird == slow_weird, batch_size


def test_modbus_unusual_segments_fall_back() -> None:
    adus = [a for tid in range(12) for a in _modbus_pair(tid)]
    client = b"".join(a for c, a in adus if c)
    server = b"".join(a for c, a in adus if not c)
    step = len(adus[0][1])
    segs = [
        Seg(True, 0, b"", "S"),
        Seg(False, 0, b"", "SA"),
        Seg(True, 0, client[:step]),
        Seg(False, 0, server[: 2 * len(adus[1][1])]),  # two responses in one segment
        Seg(True, step, client[step : 2 * step]),
        Seg(True, step, client[step : 2 * step]),  # retransmission
        Seg(True, 3 * step, client[3 * step : 4 * step]),  # out of order: waits for 2*step
        Seg(True, 2 * step, client[2 * step : 3 * step]),
        Seg(True, 4 * step, client[4 * step : 4 * step + 5]),  # an ADU split across segments
        Seg(True, 4 * step + 5, client[4 * step + 5 : 6 * step]),
        Seg(True, 6 * step, b"\x00\x01\x00\x07\x00\x06\x01\x03\x00\x00\x00\x01"),  # protocol id 7: garbage
        Seg(True, 6 * step + 12, client[6 * step : 7 * step]),
        Seg(True, 9 * step + 12, client[8 * step : 9 * step]),  # a lost segment before it: a gap
        Seg(True, 10 * step + 12, client[9 * step : 10 * step]),
        Seg(False, 2 * len(adus[1][1]), server[2 * len(adus[1][1]) :], "FPA"),
        Seg(True, 11 * step + 12, client[11 * step : 12 * step], "FPA"),
    ]
    _assert_columnar_equals_per_pdu(ModbusDissector, segs, (1, 2, 3, 5, 1000))


def test_bytes_left_in_the_buffer_keep_the_direction_on_frame() -> None:
    """A segment ending in the first bytes of an ADU leaves them buffered: the next segments, whole ADUs
    on their own, must be framed behind those bytes (by ``frame``), in the same batch and in the next
    ones (batch sizes put the split segment at the end of a batch and in the middle of one)."""
    adus = [_adu(tid, 3, _read(tid, 1)) for tid in range(12)]
    partial = b"\x00\x63\x00\x00\x00\x06\x01"  # an MBAP header announcing 6 more bytes, and 1 of them
    data = [*adus[:3], adus[3] + partial, *adus[4:]]
    segs = [Seg(True, 0, b"", "S"), Seg(False, 0, b"", "SA")]
    offset = 0
    for chunk in data:
        segs.append(Seg(True, offset, chunk))
        offset += len(chunk)
    _assert_columnar_equals_per_pdu(ModbusDissector, segs, (1, 2, 4, 5, 6, 1000))


def test_modbus_rst_mid_stream() -> None:
    adus = [a for tid in range(6) for a in _modbus_pair(tid)]
    segs = [Seg(True, 0, b"", "S"), Seg(False, 0, b"", "SA"), *_stream(adus, [12, 11])]
    segs.insert(8, Seg(True, segs[8].offset, b"", "R"))
    _assert_columnar_equals_per_pdu(ModbusDissector, segs, (1, 4, 1000))


_adus = st.one_of(
    st.builds(lambda t: _modbus_pair(t)[0], st.integers(0, 3)),
    st.builds(lambda t: _modbus_pair(t)[1], st.integers(0, 3)),
    st.builds(lambda c, body: (c, _adu(1, 6, body)), st.booleans(), st.binary(min_size=4, max_size=4)),
    st.builds(lambda c, raw: (c, raw), st.booleans(), st.binary(min_size=1, max_size=9)),  # mostly garbage
)
_perturb = st.lists(st.tuples(st.sampled_from(["drop", "dup", "swap"]), st.integers(0, 40)), max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_adus, min_size=1, max_size=14),
    st.lists(st.integers(1, 30), max_size=3),
    _perturb,
    st.integers(1, 9),
)
def test_fuzz_modbus_columnar_equals_per_pdu(
    adus: list[tuple[bool, bytes]], cuts: list[int], perturb: list[tuple[str, int]], batch_size: int
) -> None:
    segs = _stream(adus, cuts)
    for kind, at in perturb:
        k = at % len(segs)
        if kind == "drop":
            del segs[k]
        elif kind == "dup":
            segs.insert(k, segs[k])
        elif k + 1 < len(segs):
            segs[k], segs[k + 1] = segs[k + 1], segs[k]
        if not segs:
            return
    _assert_columnar_equals_per_pdu(ModbusDissector, segs, (batch_size,))


def _tpkt_read(reference: int) -> bytes:
    """A TPKT/COTP DT/S7comm Read Var job with one S7ANY item (the fast path's common case)."""
    item = bytes([0x12, 0x0A, 0x10, 0x02, 0x00, 0x01, 0x00, 0x01, 0x84, 0x00, 0x00, 0x08])
    params = bytes([0x04, 0x01]) + item
    s7 = struct.pack(">BBHHHH", 0x32, 1, 0, reference, len(params), 0) + params
    cotp = bytes([0x02, 0xF0, 0x80])
    return struct.pack(">BBH", 3, 0, 4 + len(cotp) + len(s7)) + cotp + s7


def test_s7comm_columnar_equals_per_pdu() -> None:
    client = b"".join(_tpkt_read(r) for r in range(10))
    segs = [Seg(True, 0, b"", "S"), Seg(False, 0, b"", "SA"), *_in_order(True, client, [31, 62, 20])]
    _assert_columnar_equals_per_pdu(S7commDissector, segs, (1, 3, 1000))


@pytest.mark.parametrize("batch_packets", [512, 4096])
def test_generated_plant_columnar_equals_per_pdu(batch_packets: int, tmp_path: Path) -> None:
    """The whole pipeline on every protocol of a generated plant capture: fast paths on vs off."""
    capture = tmp_path / "plant.pcap"
    generate_capture(capture, GeneratorConfig(devices=16, minutes=0.1, seed=11, camera_streams=False))
    outputs = []
    for fast in (True, False):
        out = tmp_path / str(fast)
        options = AnalysisOptions(
            batch_packets=batch_packets, protocols=ProtocolSettings(fast_path=fast), plugins=False
        )
        analyze([capture], out, options)
        summary = json.loads((out / "summary.json").read_text())
        summary.pop("elapsed_s")
        outputs.append(
            ({str(p.relative_to(out)): pq.read_table(p) for p in sorted(out.rglob("*.parquet"))}, summary)
        )
    (fast_tables, fast_summary), (slow_tables, slow_summary) = outputs
    assert fast_tables.keys() == slow_tables.keys()
    for name, table in slow_tables.items():
        assert fast_tables[name].equals(table), name
    assert fast_summary == slow_summary
    assert fast_tables["events/modbus.parquet"].num_rows > 100
