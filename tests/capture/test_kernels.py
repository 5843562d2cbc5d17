"""The numba kernels of the capture readers, called directly: statuses, positions, needs, arithmetic."""

from __future__ import annotations

import io
import struct

import numba
import numpy as np
import pytest

from fieldward.capture import _kernels as k
from fieldward.capture.batch import I64, U8, U16, U32

Outputs = tuple[I64, U32, U32, I64, U16, U16]


def u8(data: bytes) -> U8:
    return np.frombuffer(data, dtype=np.uint8).copy()


def outputs(capacity: int) -> Outputs:
    return (
        np.zeros(capacity, np.int64),
        np.zeros(capacity, np.uint32),
        np.zeros(capacity, np.uint32),
        np.zeros(capacity, np.int64),
        np.zeros(capacity, np.uint16),
        np.zeros(capacity, np.uint16),
    )


def rec(sec: int, usec: int, data: bytes, origlen: int | None = None, caplen: int | None = None) -> bytes:
    cl = len(data) if caplen is None else caplen
    return struct.pack("<IIII", sec, usec, cl, len(data) if origlen is None else origlen) + data


def walk(
    buf: U8, pos: int, end: int, capacity: int = 16, at_eof: bool = False, ref: int = -1
) -> tuple[int, int, int, int, Outputs]:
    out = outputs(capacity)
    n, pos, status, need = k.pcap_walk(
        buf, pos, end, False, 1000, 1_000_000, 262144, 86400, ref, at_eof, 1, *out, 0
    )
    return n, pos, status, need, out


def test_readers_of_both_byte_orders() -> None:
    buf = u8(bytes.fromhex("a1b2c3d4"))
    assert k.rd16(buf, 0, False) == 0xB2A1
    assert k.rd16(buf, 0, True) == 0xA1B2
    assert k.rd32(buf, 0, False) == 0xD4C3B2A1
    assert k.rd32(buf, 0, True) == 0xA1B2C3D4


def test_pcap_walk_statuses() -> None:
    data = rec(100, 1, b"a" * 10) + rec(100, 2, b"b" * 20) + rec(101, 3, b"c" * 30)
    buf = u8(data)
    n, pos, status, need, out = walk(buf, 0, len(data))
    assert (n, pos, status, need) == (3, len(data), k.MORE, 16)
    offsets, caplen, _origlen, ts, iface, lt = out
    assert list(offsets[:3]) == [16, 42, 78]
    assert list(caplen[:3]) == [10, 20, 30]
    assert list(ts[:3]) == [100_000_001_000, 100_000_002_000, 101_000_003_000]
    assert list(lt[:3]) == [1, 1, 1]
    assert list(iface[:3]) == [0, 0, 0]
    # Output full after two records.
    assert walk(buf, 0, len(data), capacity=2)[:4] == (2, 62, k.FULL, 0)
    # The chunk ends inside the third record: its start and its size are returned.
    assert walk(buf, 0, len(data) - 1)[:4] == (2, 62, k.MORE, 46)
    assert walk(buf, 0, 70)[:4] == (2, 62, k.MORE, 16)


def test_pcap_walk_rejects_absurd_and_unchained_lengths() -> None:
    absurd = rec(100, 1, b"a" * 10) + rec(100, 2, b"", caplen=300_000) + bytes(64)
    assert walk(u8(absurd), 0, len(absurd))[:3] == (1, 26, k.BAD)
    # caplen > origlen: accepted when the next header chains on, rejected when it does not.
    chained = rec(100, 1, b"a" * 10, origlen=4) + rec(100, 2, b"b" * 5)
    assert walk(u8(chained), 0, len(chained))[:3] == (2, len(chained), k.MORE)
    broken = rec(100, 1, b"a" * 10, origlen=4) + b"\xff" * 16
    assert walk(u8(broken), 0, len(broken))[:3] == (0, 0, k.BAD)
    # ... and undecided until the next header is there, unless the file ends.
    alone = rec(100, 1, b"a" * 10, origlen=4)
    assert walk(u8(alone), 0, len(alone))[:4] == (0, 0, k.MORE, 42)
    assert walk(u8(alone), 0, len(alone), at_eof=True)[:3] == (1, len(alone), k.MORE)
    # A jump in time is suspicious too, but a chain that goes on from it is believed.
    jump = rec(100, 1, b"a") + rec(9_000_000, 1, b"b") + rec(9_000_001, 1, b"c")
    assert walk(u8(jump), 0, len(jump))[:2] == (3, len(jump))
    assert walk(u8(jump[:34] + b"\xff" * 20), 0, 54)[:3] == (1, 17, k.BAD)


def test_pcap_resync() -> None:
    t0 = 1_700_000_000
    good = rec(t0, 1, b"a" * 10) + rec(t0, 2, b"b" * 10)
    data = b"\xff" * 7 + good
    buf = u8(data)
    args = (False, 1_000_000, 262144, 86400, t0)
    assert k.pcap_resync(buf, 0, len(data), *args, False) == (7, k.FOUND, 0)
    # Too far from the reference time: not plausible.
    assert k.pcap_resync(buf, 0, len(data), False, 1_000_000, 262144, 86400, 10**9, True)[1] == k.NOT_FOUND
    # Undecided until the successor's header has been read.
    assert k.pcap_resync(buf, 0, 7 + 30, *args, False) == (7, k.SCAN_MORE, 42)
    assert k.pcap_resync(buf, 0, 7 + 26, *args, True) == (7, k.FOUND, 0)
    assert k.pcap_resync(buf, 0, 10, *args, True) == (10, k.NOT_FOUND, 0)


@pytest.mark.parametrize(
    ("tsresol", "raw", "expected"),
    [
        (6, 1_700_000_000_123_456, 1_700_000_000_123_456_000),
        (9, 1_700_000_000_123_456_789, 1_700_000_000_123_456_789),
        (0, 1_700_000_000, 1_700_000_000 * 10**9),
        (12, 9_000_000_123_456_789, 9_000_000_123_456),
        (0x80 | 20, (1_700_000_000 << 20) + (1 << 19), 1_700_000_000_500_000_000),
        (0x80 | 32, (1_700_000_000 << 32) + (1 << 30), 1_700_000_000_250_000_000),
        (0x80 | 33, (1_700_000_000 << 33) + (1 << 32), 1_700_000_000_500_000_000),  # raw >= 2^63
    ],
)
def test_pcapng_timestamps(tsresol: int, raw: int, expected: int) -> None:
    from fieldward.capture.pcapng import ts_resolution

    resolution = ts_resolution(tsresol)
    assert resolution is not None
    mode, param, _ = resolution
    signed = raw - 2**64 if raw >= 2**63 else raw
    assert k.pcapng_ts(signed, mode, param) == expected


def test_pcapng_resync_finds_blocks_of_both_orders() -> None:
    body = b"\0" * 8
    little = struct.pack("<II", 5, 20) + body + struct.pack("<I", 20)
    data = b"\x05\0\0\0\x99" + little
    assert k.pcapng_resync(u8(data), 0, len(data), False, 1 << 25, True) == (5, k.FOUND, 0)
    shb_big = struct.pack(">IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack(">I", 28)
    data = b"junk" + shb_big
    assert k.pcapng_resync(u8(data), 0, len(data), False, 1 << 25, True) == (4, k.FOUND, 0)
    assert k.pcapng_resync(u8(data), 0, 20, False, 1 << 25, False) == (4, k.SCAN_MORE, 28)
    assert k.pcapng_resync(u8(data), 0, 20, False, 1 << 25, True) == (20, k.NOT_FOUND, 0)


def kernels() -> list[numba.core.registry.CPUDispatcher]:
    return [v for v in vars(k).values() if isinstance(v, numba.core.registry.CPUDispatcher)]


def test_kernels_compute_in_integers_only() -> None:
    """No float64 creeps in (numba turns uint64 mixed with int64 into float64, losing ns)."""
    test_pcap_walk_statuses()
    test_pcap_resync()
    test_pcapng_resync_finds_blocks_of_both_orders()
    for raw, mode, param in ((1, k.TS_MUL, 1000), (1, k.TS_DIV, 1000), (1, k.TS_SHIFT, 20)):
        k.pcapng_ts(raw, mode, param)
    iftab = np.zeros((1, k.IF_COLUMNS), np.int64)
    block = struct.pack("<IIIIIII", 6, 32, 0, 0, 0, 0, 0) + struct.pack("<I", 32)
    k.pcapng_walk(u8(block), 0, 32, False, iftab, 1 << 25, *outputs(4), 0, np.zeros(k.ST_SIZE, np.int64), 0)
    k.pcap_plausible(u8(bytes(16)), 0, False, 1_000_000, 262144, 0, 86400)
    k.pcapng_known_block(6)
    k.count_skipped(np.zeros(k.ST_SIZE, np.int64), k.ST_NO_IF, 0, 0)
    checked = 0
    for dispatcher in kernels():
        for signature in dispatcher.signatures:
            text = io.StringIO()
            dispatcher.inspect_types(signature=signature, file=text)
            typed = [line for line in text.getvalue().splitlines() if "::" in line]  # "expr :: type"
            floats = [t for t in typed if "float" in t.rsplit("::", 1)[1]]
            assert typed, dispatcher.py_func.__name__
            assert floats == [], dispatcher.py_func.__name__
            checked += 1
    assert all(d.signatures for d in kernels())
    assert checked >= len(kernels())
