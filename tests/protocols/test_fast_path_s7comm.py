"""The S7comm columnar fast path (Read Variable jobs and ACK-Data) gives exactly the per-PDU output.

Differential tests in the style of ``test_fast_path.py``: the same TCP conversations dissected with
and without fast paths, in batches of several sizes, must give the same events (per log, in order) and
the same weirds; PDUs the fast path must leave to ``parse`` (other functions, non-S7ANY items,
truncated data, segmented DT data, PDUs split across TCP segments or packed together) are mixed in.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from fieldward.protocols.base import Event, ProtocolWeird
from fieldward.protocols.s7comm import S7commDissector, S7commVariable
from tests.protocols.test_fast_path import _assert_same_output, _by_log, _tcp, run_dissector

JOB, ACK_DATA = 0x01, 0x03
READ, WRITE = 0x04, 0x05


def _tpkt(s7: bytes, eot: bool = True, tpdu: int = 0) -> bytes:
    """TPKT (RFC 1006) + class-0 COTP DT (ISO 8073) carrying ``s7``."""
    cotp = bytes([2, 0xF0, (0x80 if eot else 0) | tpdu])
    return struct.pack(">BBH", 3, 0, 4 + len(cotp) + len(s7)) + cotp + s7


def _s7(rosctr: int, ref: int, param: bytes, data: bytes = b"", error: tuple[int, int] = (0, 0)) -> bytes:
    header = struct.pack(">BBHHHH", 0x32, rosctr, 0, ref, len(param), len(data))
    if rosctr in (0x02, ACK_DATA):
        header += bytes(error)
    return header + param + data


def _any(size: int, length: int, db: int, area: int, address: int) -> bytes:
    """A variable specification with an S7ANY address (12 bytes)."""
    return bytes([0x12, 10, 0x10, size]) + struct.pack(">HHB", length, db, area) + address.to_bytes(3, "big")


def _job(ref: int, *items: bytes, function: int = READ, data: bytes = b"") -> bytes:
    return _tpkt(_s7(JOB, ref, bytes([function, len(items)]) + b"".join(items), data))


def _result(code: int, size: int, value: bytes, length: int | None = None) -> bytes:
    if length is None:
        length = 8 * len(value) if size in (3, 4, 5) else len(value)
    return struct.pack(">BBH", code, size, length) + value


def _ack(
    ref: int, count: int, *results: bytes, function: int = READ, error: tuple[int, int] = (0, 0)
) -> bytes:
    data = b""
    for i, result in enumerate(results):
        data += result
        if i + 1 < len(results) and len(data) % 2:
            data += b"\x00"
    return _tpkt(_s7(ACK_DATA, ref, bytes([function, count]), data, error))


def _run(
    packets: list[bytes], fast: bool, batch_size: int, writer: bool = True
) -> tuple[list[Event], dict[str, int]]:
    return run_dissector(S7commDissector, packets, fast, batch_size, writer)


def _s7_tcp(segments: list[tuple[bool, bytes]], cport: int = 40001) -> list[bytes]:
    return [_retarget(p) for p in _tcp(segments, cport=cport)]


def _retarget(packet: bytes) -> bytes:
    """``_tcp`` builds port-502 conversations: move them to ISO-on-TCP's port 102."""
    frame = Ether(packet)
    tcp = frame.payload.payload
    if tcp.sport == 502:
        tcp.sport = 102
    if tcp.dport == 502:
        tcp.dport = 102
    del frame.payload.chksum
    del tcp.chksum
    return bytes(frame)


DB, M, COUNTER = 0x84, 0x83, 0x1C
SEGMENTS: list[tuple[bool, bytes]] = [
    (True, _job(1, _any(0x02, 4, 1, DB, 8 * 10 + 3))),
    (False, _ack(1, 1, _result(0xFF, 0x04, b"\x01\x02\x03\x04"))),
    (True, _job(2, _any(0x02, 1, 0, M, 17), _any(0x1C, 1, 0, COUNTER, 5), _any(0x04, 3, 9, DB, 0))),
    (False, _ack(2, 3, _result(0xFF, 0x04, b"\x07"), _result(0x0A, 0x00, b""), _result(0xFF, 0x09, b"abc"))),
    (False, _ack(77, 2, _result(0xFF, 0x03, b"\x01"), _result(0xFF, 0x05, b"\x00\x01"))),  # no job seen
    (True, _job(3, _any(0x02, 2, 4, DB, 0), _any(0x02, 2, 4, DB, 16))),
    (False, _ack(3, 1, _result(0xFF, 0x04, b"\x01\x02"))),  # fewer results than job items
    (True, _job(4, _any(0x02, 2, 4, DB, 0))),
    (False, _ack(4, 2, _result(0xFF, 0x04, b"\x01\x02"))),  # count 2, one item: truncated, parse()
    (True, _job(5, bytes([0x12, 6, 0xB0, 1, 2, 3, 4, 5]))),  # not S7ANY: parse()
    (False, _ack(5, 1, _result(0xFF, 0x04, b"\x05"))),  # answered with the parse()d job's item
    (True, _job(6, _any(0x02, 2, 1, DB, 0), function=WRITE, data=_result(0x00, 0x04, b"\x01\x02"))),
    (False, _ack(6, 1, b"\xff", function=WRITE)),
    (True, _job(7, _any(0x02, 1, 1, DB, 0)) + _job(8, _any(0x02, 1, 1, DB, 1))),  # two PDUs, one segment
    (False, _ack(8, 1, _result(0xFF, 0x04, b"\x08")) + _ack(7, 1, _result(0xFF, 0x04, b"\x07"))),
    (True, _job(9, _any(0x02, 1, 2, DB, 0))[:9]),  # one PDU split across two segments
    (True, _job(9, _any(0x02, 1, 2, DB, 0))[9:]),
    (False, _ack(9, 1, _result(0xFF, 0x04, b"\x09"), error=(0x85, 0x01))),
    (True, _tpkt(_s7(JOB, 10, bytes([READ, 1]) + _any(0x02, 1, 3, DB, 0))[:10], eot=False)),  # no EOT
    (True, _tpkt(_s7(JOB, 11, bytes([READ, 1]) + _any(0x02, 1, 3, DB, 8)))),  # joined with it: weird
    (True, _job(12, _any(0x02, 1, 3, DB, 0)) + b"\x00"),  # trailing byte in the TPKT: parse()
    (True, _job(13, _any(0x02, 2, 3, DB, 0))),
    (False, _ack(13, 1, _result(0xFF, 0x04, b"\x01\x02"), error=(0x00, 0x00))),
    (False, _tpkt(_s7(ACK_DATA, 14, bytes([READ, 1])), eot=False)),  # unfinished at close: a weird
    (True, _job(15, _any(0x02, 1, 3, DB, 0))),  # whose time is that of this last (fast-path) PDU
]


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_s7comm_fast_and_per_pdu_agree(batch_size: int) -> None:
    packets = _s7_tcp(SEGMENTS) + _s7_tcp(SEGMENTS[:4], cport=40002)
    fast, fast_weird = _run(packets, fast=True, batch_size=batch_size)
    slow, slow_weird = _run(packets, fast=False, batch_size=batch_size)
    assert _by_log(fast) == _by_log(slow)
    assert fast_weird == slow_weird
    plain, _ = _run(packets, fast=True, batch_size=batch_size, writer=False)
    assert plain == slow
    variables = [e for e in fast if isinstance(e, S7commVariable) and e.orig_p == 40001]
    answer = [v for v in variables if v.pdu_reference == 2 and v.rosctr == "ACK-Data"]
    assert [(v.area_name, v.byte_address, v.return_code, v.data_length) for v in answer] == [
        ("M", 2, "0xff", 1),
        ("C", None, "0x0a", 0),
        ("DB", 0, "0xff", 3),
    ]
    weirds = {e.name: e.ts for e in fast if isinstance(e, ProtocolWeird) and e.orig_p == 40001}
    assert "s7comm_truncated_data" in weirds
    assert weirds["s7comm_cotp_unfinished"] == 1000 * (len(SEGMENTS) + 1)  # SYN, SYN-ACK, segments


def test_s7comm_fast_path_takes_the_common_pdus(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    original = S7commDissector.parse

    def parse(self: S7commDissector, pdu: bytes, ctx: object) -> None:
        seen.append(pdu[18] if len(pdu) > 18 else -1)
        original(self, pdu, ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(S7commDissector, "parse", parse)
    packets = _s7_tcp(SEGMENTS[:4])
    _run(packets, fast=True, batch_size=1000)
    assert seen == []  # every PDU of these four went through the fast path


def test_s7comm_fast_path_parquet_matches(tmp_path: Path) -> None:
    packets = _s7_tcp(SEGMENTS) + _s7_tcp(SEGMENTS, cport=40003)
    capture = tmp_path / "s7.pcap"
    wrpcap(str(capture), [Ether(p) for p in packets])
    tables = _assert_same_output(capture, tmp_path)
    assert tables["events/s7comm_variable.parquet"].num_rows > 40


def test_s7comm_fast_path_matches_on_corpus(corpus: Path, tmp_path: Path) -> None:
    _assert_same_output(corpus / "s7comm/snap7.pcap", tmp_path)


_items = st.lists(
    st.builds(
        _any,
        st.sampled_from([1, 2, 4, 0x1C]),
        st.integers(0, 9),
        st.integers(0, 3),
        st.sampled_from([DB, M, COUNTER, 0x99]),
        st.integers(0, 2**24 - 1),
    ),
    min_size=0,
    max_size=3,
)
_results = st.lists(
    st.builds(
        _result,
        st.sampled_from([0xFF, 0x00, 0x0A, 0x05]),
        st.sampled_from([0, 3, 4, 5, 9]),
        st.binary(max_size=5),
    ),
    max_size=3,
)
_pdus = st.one_of(
    st.builds(lambda ref, items: _job(ref, *items), st.integers(0, 3), _items),
    st.builds(
        lambda ref, count, results: _ack(ref, count, *results), st.integers(0, 3), st.integers(0, 4), _results
    ),
    st.builds(
        lambda pdu, cut: pdu[:cut],
        st.builds(lambda ref, items: _job(ref, *items), st.integers(0, 3), _items),
        st.integers(0, 40),
    ),
    st.builds(
        lambda ref, items: _tpkt(_s7(JOB, ref, bytes([READ, len(items)]) + b"".join(items)), eot=False),
        st.integers(0, 3),
        _items,
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), _pdus), min_size=1, max_size=10), st.integers(1, 6))
def test_fuzz_s7comm_fast_path_equals_per_pdu(segments: list[tuple[bool, bytes]], batch_size: int) -> None:
    packets = _s7_tcp([(True, _job(0, _any(2, 1, 1, DB, 0))), *segments])
    fast, fast_weird = _run(packets, fast=True, batch_size=batch_size)
    slow, slow_weird = _run(packets, fast=False, batch_size=batch_size)
    assert _by_log(fast) == _by_log(slow)
    assert fast_weird == slow_weird
