"""The Modbus columnar fast path (read bits/registers, write single/multiple, exceptions) gives exactly
the per-PDU output.

Differential tests in the style of ``test_fast_path.py``: the same TCP conversations dissected with
and without fast paths, in batches of several sizes, must give the same events (per log, in order) and
the same weirds. ADUs the fast path must leave to ``parse`` (quantities out of range, byte counts that
disagree, invalid coil values, exceptions in requests, answers of the wrong size) are mixed in.
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
from fieldward.protocols.modbus import ModbusDissector, ModbusEvent
from tests.protocols.test_fast_path import _adu, _assert_same_output, _by_log, _read, _tcp, run_dissector


def _bits(*values: int) -> bytes:
    """A byte count and coil values packed LSB first."""
    packed = bytearray((len(values) + 7) // 8)
    for i, value in enumerate(values):
        packed[i // 8] |= (value & 1) << (i % 8)
    return bytes([len(packed)]) + bytes(packed)


def _write_coils(address: int, *values: int) -> bytes:
    return struct.pack(">HH", address, len(values)) + _bits(*values)


def _write_registers(address: int, *values: int) -> bytes:
    return struct.pack(">HHB", address, len(values), 2 * len(values)) + struct.pack(
        f">{len(values)}H", *values
    )


SEGMENTS: list[tuple[bool, bytes]] = [
    (True, _adu(1, 1, _read(10, 10))),
    (False, _adu(1, 1, _bits(1, 0, 1, 1, 0, 0, 0, 0, 1, 1))),
    (True, _adu(2, 2, _read(0, 3))),
    (False, _adu(2, 2, _bits(1, 1, 1, 1, 1, 1, 1, 1, 1))),  # 2 bytes answer 3 inputs: parse()
    (False, _adu(77, 1, _bits(1, 0, 1))),  # no request: 8 coils per byte, no address or quantity
    (True, _adu(3, 5, _read(4, 0xFF00))),
    (False, _adu(3, 5, _read(4, 0xFF00))),
    (True, _adu(4, 5, _read(4, 0x1234))),  # invalid coil value: parse()
    (False, _adu(4, 5, _read(4, 0x0000))),
    (True, _adu(5, 6, _read(9, 0xBEEF))),
    (False, _adu(5, 6, _read(9, 0xBEEF))),
    (True, _adu(6, 15, _write_coils(20, 1, 0, 1))),
    (False, _adu(6, 15, _read(20, 3))),
    (True, _adu(7, 16, _write_registers(30, 1, 2, 0xFFFF))),
    (False, _adu(7, 16, _read(30, 3))),
    (True, _adu(8, 16, _write_registers(30, 1)[:-1])),  # byte count disagrees: parse()
    (True, _adu(9, 3, _read(40, 2))),
    (False, _adu(9, 0x83, b"\x02")),  # exception: the request's address and quantity
    (False, _adu(55, 0x81, b"\x01")),  # exception without a request
    (True, _adu(10, 0x84, b"\x01")),  # exception in a request: parse()
    (False, _adu(11, 0x86, b"\x01\x02")),  # exception with two bytes: parse()
    (True, _adu(12, 1, _read(0, 2001))),  # quantity above the limit: parse()
    (True, _adu(13, 43, b"\x0e\x01\x00")),  # device identification: parse()
    (True, _adu(14, 1, _read(5, 16)) + _adu(15, 15, _write_coils(1, *[1] * 9))),
    (False, _adu(15, 15, _read(1, 9)) + _adu(14, 1, _bits(*[0, 1] * 8))),
]


def _run(packets: list[bytes], fast: bool, batch_size: int) -> tuple[list[Event], dict[str, int]]:
    return run_dissector(ModbusDissector, packets, fast, batch_size)


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_modbus_fast_and_per_pdu_agree(batch_size: int) -> None:
    packets = _tcp(SEGMENTS) + _tcp(SEGMENTS[:5], cport=40002)
    fast, fast_weird = _run(packets, fast=True, batch_size=batch_size)
    slow, slow_weird = _run(packets, fast=False, batch_size=batch_size)
    assert _by_log(fast) == _by_log(slow)
    assert fast_weird == slow_weird
    rows = [
        (e.tid, e.pdu_type, e.matched, e.address, e.quantity, e.coils, e.registers, e.exception)
        for e in fast
        if isinstance(e, ModbusEvent) and 40001 in (e.orig_p, e.resp_p) and e.function_code != 43
    ]
    assert rows[:4] == [
        (1, "REQ", False, 10, 10, None, None, None),
        (1, "RESP", True, 10, 10, [1, 0, 1, 1, 0, 0, 0, 0, 1, 1], None, None),
        (2, "REQ", False, 0, 3, None, None, None),
        (2, "RESP", True, 0, None, [1] * 9 + [0] * 7, None, None),  # the mismatch keeps the address
    ]
    assert (77, "RESP", False, None, None, [1, 0, 1, 0, 0, 0, 0, 0], None, None) in rows
    assert (6, "REQ", False, 20, 3, [1, 0, 1], None, None) in rows
    assert (7, "REQ", False, 30, 3, None, [1, 2, 0xFFFF], None) in rows
    assert (9, "RESP", True, 40, 2, None, None, "ILLEGAL_DATA_ADDRESS") in rows
    assert (55, "RESP", False, None, None, None, None, "ILLEGAL_FUNCTION") in rows
    weirds = [e.name for e in fast if isinstance(e, ProtocolWeird)]
    assert "modbus_quantity_mismatch" in weirds
    assert "modbus_exception_in_request" in weirds


def test_modbus_fast_path_takes_the_common_adus(monkeypatch: pytest.MonkeyPatch) -> None:
    """The common ADUs never reach ``parse`` (so the fast path is really taken)."""
    parsed: list[int] = []
    original = ModbusDissector._adu

    def spy(self: ModbusDissector, adu: bytes, ctx: object) -> None:
        parsed.append(adu[7])
        original(self, adu, ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(ModbusDissector, "_adu", spy)
    _run(_tcp(SEGMENTS), fast=True, batch_size=1000)
    assert sorted(parsed) == sorted([2, 5, 16, 0x84, 0x86, 1, 43])


def test_modbus_fast_path_parquet_matches(tmp_path: Path) -> None:
    capture = tmp_path / "modbus.pcap"
    wrpcap(str(capture), [Ether(p) for p in _tcp(SEGMENTS) + _tcp(SEGMENTS, cport=40003)])
    tables = _assert_same_output(capture, tmp_path)
    assert tables["events/modbus.parquet"].num_rows == 2 * 27


_tids = st.integers(0, 3)
_codes = st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16, 0x81, 0x83, 0x90, 0x80, 0])
_values = st.lists(st.integers(0, 1), max_size=20)
_adus = st.one_of(
    st.builds(
        lambda t, c, a, q: _adu(t, c, _read(a, q)), _tids, _codes, st.integers(0, 9), st.integers(0, 2100)
    ),
    st.builds(
        lambda t, c, q: _adu(t, c, _read(1, q)), _tids, _codes, st.sampled_from([0xFF00, 0, 1, 125, 126])
    ),
    st.builds(lambda t, c, v: _adu(t, c, _bits(*v)), _tids, _codes, _values),
    st.builds(lambda t, c, v: _adu(t, c, _write_coils(3, *v)), _tids, _codes, _values),
    st.builds(
        lambda t, c, v: _adu(t, c, _write_registers(3, *v)),
        _tids,
        _codes,
        st.lists(st.integers(0, 0xFFFF), max_size=4),
    ),
    st.builds(lambda t, c, body: _adu(t, c, body), _tids, _codes, st.binary(max_size=9)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), _adus), min_size=1, max_size=14), st.integers(1, 8))
def test_fuzz_modbus_fast_path_equals_per_pdu(segments: list[tuple[bool, bytes]], batch_size: int) -> None:
    packets = _tcp(segments)
    fast, fast_weird = _run(packets, fast=True, batch_size=batch_size)
    slow, slow_weird = _run(packets, fast=False, batch_size=batch_size)
    assert _by_log(fast) == _by_log(slow)
    assert fast_weird == slow_weird
