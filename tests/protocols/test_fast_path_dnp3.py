"""The DNP3 columnar fast path (link-only frames, one-frame requests without object data, responses
with packed or fixed-layout objects) gives exactly the per-PDU output.

Differential tests in the style of ``test_fast_path.py``: the same TCP conversations dissected with
and without fast paths, in batches of several sizes, must give the same events (per log, in order) and
the same weirds. PDUs the fast path must leave to ``parse`` (multi-frame fragments, controls, times,
bad CRCs, malformed object headers, PDUs while a fragment is being reassembled) are mixed in.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from fieldward.protocols import dnp3
from fieldward.protocols.base import Datagrams, Event, ProtocolWeird
from fieldward.protocols.dnp3 import Dnp3Dissector, Dnp3Point
from tests.protocols.test_dnp3 import crob, frames, header, link, response, time48
from tests.protocols.test_fast_path import _assert_same_output, _by_log, _tcp, run_dissector

READ, SELECT, CONFIRM, COLD_RESTART, ASSIGN_CLASS = 0x01, 0x03, 0x00, 0x0D, 0x16


def request(fc: int, objects: bytes = b"", seq: int = 1) -> bytes:
    return frames(bytes([0xC0 | seq, fc]) + objects)


CLASS_POLL = header(60, 2, 0x06) + header(60, 3, 0x06) + header(60, 4, 0x06) + header(60, 1, 0x06)
CONVERSATION: list[tuple[bool, bytes]] = [
    (True, link(ctrl=0xC9)),  # REQUEST_LINK_STATUS
    (False, link(ctrl=0x0B, dest=3, src=4)),  # LINK_STATUS
    (True, request(READ, CLASS_POLL)),
    (False, response(0x81, iin=0x9012)),  # null response, IIN bits set
    (True, request(READ, header(1, 2, 0x00, b"\x00\x03"), seq=2)),
    (False, response(0x81, objects=header(1, 2, 0x00, b"\x00\x03") + b"\x81\x01\x01\x81", seq=2)),
    (True, request(READ, header(1, 0, 0x17, b"\x02\x05\x09"), seq=3)),  # index list
    (False, response(0x81, objects=header(1, 1, 0x00, b"\x02\x0c") + b"\xa5\x03", seq=3)),  # packed bits
    (False, response(0x81, objects=header(3, 1, 0x01, b"\x00\x00\x05\x00") + b"\xe4\x01", seq=4)),
    (
        False,
        response(0x81, objects=header(30, 2, 0x01, b"\x00\x00\x01\x00") + b"\x01\xff\xff\x01\x10\x00", seq=5),
    ),
    (False, response(0x81, objects=header(20, 5, 0x00, b"\x07\x07") + b"\xff\xff\xff\xff", seq=6)),
    (False, response(0x82, objects=header(2, 1, 0x28, b"\x02\x00") + b"\x05\x00\x81\x09\x00\x01", seq=7)),
    (False, response(0x82, objects=header(30, 1, 0x17, b"\x01") + b"\x03\x01\x00\x00\x00\x80", seq=8)),
    (False, response(0x81, objects=header(50, 1, 0x07, b"\x01") + time48(1234), seq=9)),  # a time: parse()
    (False, response(0x81, objects=header(30, 5, 0x00, b"\x00\x00") + b"\x01" + struct.pack("<f", 1.5))),
    (True, request(SELECT, header(12, 1, 0x28, b"\x01\x00\x03\x00") + crob(0x41), seq=10)),  # parse()
    (True, request(CONFIRM, seq=11)),
    (True, request(COLD_RESTART, seq=12)),
    (True, request(ASSIGN_CLASS, header(60, 2, 0x06) + header(1, 0, 0x06), seq=13)),
    (True, request(0x44, seq=14)),  # an unknown function: parse() reports it
    (True, request(READ, header(1, 2, 0x00, b"\x05\x03"), seq=15)),  # start > stop: parse()
    (True, request(READ, header(1, 2, 0x90), seq=0)),  # invalid qualifier: parse()
    (True, request(READ, header(1, 2, 0x17, b"\x05\x01"), seq=1)),  # truncated index list: parse()
    (False, response(0x81, objects=header(1, 2, 0x00, b"\x00\x09") + b"\x01", seq=1)),  # truncated
    (True, frames(bytes([0xC0 | 2, READ]) + CLASS_POLL * 6, chunk=10)),  # three frames, then polls
    (True, request(READ, CLASS_POLL, seq=3)),
    (False, response(0x81, seq=3)),
    (True, frames(bytes([0xC0 | 4, READ]) + CLASS_POLL * 3, chunk=20)[:35]),  # first frame only
    (True, request(READ, CLASS_POLL, seq=5)),  # while a fragment waits: parse() (a weird)
    (False, response(0x81, seq=5)),
    (True, bytes(bytearray(request(READ, CLASS_POLL, seq=6))[:-1]) + b"\x00"),  # bad data CRC
    (True, request(READ, CLASS_POLL, seq=7)),  # left unanswered: logged at close
]


def _run(packets: list[bytes], fast: bool, batch_size: int) -> tuple[list[Event], dict[str, int]]:
    return run_dissector(Dnp3Dissector, packets, fast, batch_size)


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_dnp3_fast_and_per_pdu_agree(batch_size: int) -> None:
    packets = _tcp(CONVERSATION) + _tcp(CONVERSATION[:6], cport=40002)
    fast, fast_weird = _run(packets, fast=True, batch_size=batch_size)
    slow, slow_weird = _run(packets, fast=False, batch_size=batch_size)
    assert _by_log(fast) == _by_log(slow)
    assert fast_weird == slow_weird
    points = [(e.group, e.variation, e.index, e.flags, e.value) for e in fast if isinstance(e, Dnp3Point)]
    assert (1, 1, 2, None, 1.0) in points
    assert (3, 1, 3, None, 3.0) in points  # double-bit: 0xe4 holds 0, 1, 2, 3
    assert (30, 2, 0, 1, -1.0) in points
    assert (30, 2, 1, 1, 16.0) in points
    assert (20, 5, 7, None, float(0xFFFFFFFF)) in points
    assert (2, 1, 9, 1, 0.0) in points
    assert (30, 1, 3, 1, float(-(2**31))) in points
    weirds = {e.name for e in fast if isinstance(e, ProtocolWeird)}
    assert {"dnp3_invalid_range", "dnp3_data_crc_error", "dnp3_transport_incomplete"} <= weirds


def test_dnp3_fast_path_takes_the_common_pdus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the PDUs the fast path must leave reach ``parse``."""
    parsed: list[bytes] = []
    original = Dnp3Dissector.parse

    def spy(self: Dnp3Dissector, pdu: bytes, ctx: object) -> None:
        parsed.append(pdu)
        original(self, pdu, ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(Dnp3Dissector, "parse", spy)
    _run(_tcp(CONVERSATION[:14]), fast=True, batch_size=1000)
    assert parsed == [CONVERSATION[13][1]]


def test_scan_compiled_and_python_agree() -> None:
    """The compiled scan and its Python original give the same columns."""
    pdus = [data for _, data in CONVERSATION[:24]]
    buffer = np.frombuffer(b"".join(pdus), dtype=np.uint8)
    length = np.array([len(p) for p in pdus], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
    results = []
    for scan in (dnp3._scan, dnp3._scan_py):
        pdu = np.zeros((len(pdus), 9), dtype=np.int64)
        empty = np.zeros((0, 6), dtype=np.int64), np.zeros((0, 4), dtype=np.int64), np.zeros(0)
        scan(buffer, start, length, dnp3._FAST_TABLES, False, pdu, *empty)
        results.append(pdu)
    assert (results[0] == results[1]).all()
    assert results[0][:, 0].tolist()[:4] == [1, 1, 2, 3]


def test_unsolicited_control_sends_the_batch_to_parse() -> None:
    """A batch holding (EN|DIS)ABLE_UNSOLICITED is dissected PDU by PDU (the protocol detector reads its
    ``dnp3_objects`` rows and later ``dnp3_application`` rows in wire order)."""
    pdus = [request(READ, CLASS_POLL), request(0x15, header(60, 2, 0x06) + header(60, 3, 0x06))]
    buffer = np.frombuffer(b"".join(pdus), dtype=np.uint8)
    length = np.array([len(p) for p in pdus], dtype=np.int64)
    zeros = np.zeros(2, dtype=np.int64)
    columns = Datagrams(buffer, np.array([0, len(pdus[0])]), length, zeros, zeros, np.ones(2, dtype=np.bool_))
    assert Dnp3Dissector.parse_pdu_batch(columns) is None
    first = Datagrams(buffer, zeros[:1], length[:1], zeros[:1], zeros[:1], np.ones(1, dtype=np.bool_))
    result = Dnp3Dissector.parse_pdu_batch(first)
    assert result is not None
    assert result.handled.tolist() == [True]


def test_dnp3_fast_path_parquet_matches(tmp_path: Path) -> None:
    capture = tmp_path / "dnp3.pcap"
    wrpcap(str(capture), [Ether(p) for p in _tcp(CONVERSATION) + _tcp(CONVERSATION, cport=40003)])
    tables = _assert_same_output(capture, tmp_path)
    assert tables["events/dnp3_link.parquet"].num_rows > 2 * len(CONVERSATION)


@pytest.mark.parametrize(
    "name",
    ["dnp3.pcap", "dnp3_read.pcap", "dnp3_write.pcap", "dnp3_select_operate.pcap", "dnp3_link_only.pcap"],
)
def test_dnp3_fast_path_matches_on_corpus(corpus: Path, name: str, tmp_path: Path) -> None:
    _assert_same_output(corpus / "dnp3" / name, tmp_path)


_pieces = st.sampled_from([data for _, data in CONVERSATION])
_objects = st.one_of(
    st.sampled_from(
        [
            header(1, 2, 0x00, b"\x00\x02") + b"\x01\x81\x01",
            header(1, 1, 0x00, b"\x00\x0a") + b"\xff\x03",
            header(20, 1, 0x01, b"\x00\x00\x00\x00") + b"\x01\x05\x00\x00\x00",
            header(30, 4, 0x07, b"\x02") + b"\x05\x00\xfb\xff",
            header(32, 2, 0x28, b"\x01\x00") + b"\x04\x00\x01\x10\x00",
            header(60, 1, 0x06),
            header(12, 3, 0x00, b"\x00\x07") + b"\x55",
        ]
    ),
    st.binary(max_size=12),
)


@st.composite
def _apdus(draw: st.DrawFn) -> tuple[bool, bytes]:
    """A fragment of random function, IIN and objects, framed with valid CRCs (maybe mutated after)."""
    fc = draw(
        st.sampled_from([READ, READ, CONFIRM, COLD_RESTART, ASSIGN_CLASS, 0x07, 0x15, 0x81, 0x82, 0x44])
    )
    body = b"".join(draw(st.lists(_objects, max_size=3)))
    head = bytes([draw(st.integers(0, 255)), fc])
    if fc >= 0x81:
        head += struct.pack(">H", draw(st.integers(0, 0xFFFF)))
    data = frames(head + body, chunk=draw(st.sampled_from([249, 249, 8])))
    if draw(st.booleans()) and len(data) > 10:
        flip = draw(st.integers(0, len(data) - 1))
        data = data[:flip] + bytes([draw(st.integers(0, 255))]) + data[flip + 1 :]
    return draw(st.booleans()), data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(st.tuples(st.booleans(), _pieces), _apdus()), min_size=1, max_size=12),
    st.integers(1, 6),
)
def test_fuzz_dnp3_fast_path_equals_per_pdu(segments: list[tuple[bool, bytes]], batch_size: int) -> None:
    packets = _tcp(segments)
    fast, fast_weird = _run(packets, fast=True, batch_size=batch_size)
    slow, slow_weird = _run(packets, fast=False, batch_size=batch_size)
    assert _by_log(fast) == _by_log(slow)
    assert fast_weird == slow_weird
