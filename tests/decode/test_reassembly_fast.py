"""The in-order fast path of ``TcpReassembler.reassemble_batch`` gives exactly what ``feed`` gives.

``reassemble_batch`` delivers a segment that starts at the next stream byte of a direction with nothing
buffered (no SYN/FIN/RST, no FIN seen) without the out-of-order machinery; every other segment goes
through ``feed``. Differential tests: random conversations with in-order, retransmitted, overlapping
(same and different bytes), reordered, lost and split segments, SYN/FIN/RST and sequence wrap-around,
cut into batches of several sizes, must give the same chunks, weirds and final state as feeding every
segment to ``feed`` one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from fieldward.decode.flows import FlowTable
from fieldward.decode.reassembly import StreamChunk, TcpReassembler
from fieldward.weird import WeirdLog
from tests.decode.test_flows import CLIENT, SERVER, T0, decode, make_batch


@dataclass(frozen=True)
class Seg:
    from_client: bool
    offset: int
    """Stream offset of the first payload byte (relative to the direction's ISN + 1)."""
    data: bytes
    flags: str = "PA"


def _packets(segs: list[Seg], isn: tuple[int, int], sport: int = 40000) -> list[Packet]:
    out = []
    for seg in segs:
        src, dst, sp, dp = (CLIENT, SERVER, sport, 502) if seg.from_client else (SERVER, CLIENT, 502, sport)
        base = isn[0] if seg.from_client else isn[1]
        seq = (base + 1 + seg.offset) % 2**32
        if "S" in seg.flags:
            seq = (seq - 1) % 2**32
        out.append(
            Ether() / IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=seg.flags, seq=seq) / seg.data
        )
    return out


def _state(r: TcpReassembler) -> dict[tuple[int, int], tuple[object, ...]]:
    return {
        key: (
            s.isn,
            s.next,
            [(p.start, p.data) for p in s.pending],
            s.pending_bytes,
            s.tail,
            s.fin_at,
            s.closed,
        )
        for key, s in r._dirs.items()
    }


def _both(packets: list[Packet], batch_size: int) -> None:
    """Batch entry point vs. ``feed`` per segment: same chunks, weirds and final state."""
    fast_weird, slow_weird = WeirdLog(), WeirdLog()
    fast, slow = TcpReassembler(weird=fast_weird), TcpReassembler(weird=slow_weird)
    table = FlowTable()
    fast_chunks: list[StreamChunk] = []
    slow_chunks: list[StreamChunk] = []
    for start in range(0, len(packets), batch_size):
        part = packets[start : start + batch_size]
        times = [T0 + start + i for i in range(len(part))]
        batch = make_batch(part, times)
        decoded = decode(batch)
        assignment = table.update(batch, decoded)
        fast_chunks += fast.reassemble_batch(batch, decoded, assignment, {0, 1, 2})
        for i, p in enumerate(part):
            t = p[TCP]
            flow = int(assignment.flow_id[i])
            direction = int(assignment.direction[i])
            payload = bytes(t.payload)
            if payload or int(t.flags) & 0x07:
                slow_chunks += slow.feed(flow, direction, t.seq, int(t.flags), payload, times[i])
    assert fast_chunks == slow_chunks
    assert fast_weird.summary() == slow_weird.summary()
    assert _state(fast) == _state(slow)
    assert fast.flush() == slow.flush()


def _in_order(from_client: bool, data: bytes, sizes: list[int], start: int = 0) -> list[Seg]:
    segs, pos, k = [], 0, 0
    while pos < len(data):
        size = max(sizes[k % len(sizes)], 1)
        segs.append(Seg(from_client, start + pos, data[pos : pos + size]))
        pos, k = pos + size, k + 1
    return segs


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
@pytest.mark.parametrize("isn", [(1000, 5000), (2**32 - 7, 2**32 - 3)])
def test_fast_path_cases(batch_size: int, isn: tuple[int, int]) -> None:
    request, response = bytes(range(60)), bytes(range(100, 190))
    segs = [
        Seg(True, -1, b"", "S"),
        Seg(False, -1, b"", "SA"),
        *_in_order(True, request[:30], [5, 7]),
        Seg(True, 10, request[10:20]),  # retransmission of delivered bytes
        Seg(True, 25, b"X" * 10),  # overlap with different bytes (conflict), then new bytes
        Seg(True, 45, request[45:50]),  # out of order: buffered
        Seg(True, 35, request[35:45]),  # still a hole at 30..35
        Seg(True, 30, request[30:35]),  # fills it: delivers 30..50
        *_in_order(True, request[50:], [4], start=50),
        *_in_order(False, response[:40], [9]),
        Seg(False, 60, response[60:70]),  # lost 40..60: stays pending until FIN/flush
        Seg(False, 70, response[70:80], "FA"),
        Seg(True, 60, b"", "FA"),
        Seg(True, 60, b"late"),  # after FIN: dropped
    ]
    _both(_packets(segs, isn), batch_size)


def test_fast_path_mid_stream_pickup_and_rst() -> None:
    segs = [
        *_in_order(False, b"server speaks first" * 3, [8]),
        *_in_order(True, b"client" * 5, [6]),
        Seg(True, 30, b"", "R"),
        Seg(True, 30, b"after reset"),
        *_in_order(False, b"more", [2], start=57),
    ]
    for batch_size in (1, 2, 100):
        _both(_packets(segs, (77, 99)), batch_size)


_payload = st.binary(min_size=0, max_size=12)
_seg = st.builds(
    Seg,
    st.booleans(),
    st.integers(-2, 70),
    _payload,
    st.sampled_from(["PA", "PA", "PA", "A", "FA", "S", "R"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.booleans(), st.lists(st.integers(1, 9), min_size=1, max_size=3)), max_size=4),
    st.lists(st.tuples(st.integers(0, 40), _seg), max_size=8),
    st.integers(1, 7),
    st.sampled_from([(1000, 5000), (2**32 - 20, 2**32 - 1)]),
)
def test_fuzz_fast_path_equals_feed(
    streams: list[tuple[bool, list[int]]], noise: list[tuple[int, Seg]], batch_size: int, isn: tuple[int, int]
) -> None:
    """Mostly in-order streams with random segments (reordered, repeated, overlapping, control
    flags) spliced in at random places."""
    segs: list[Seg] = [Seg(True, -1, b"", "S")]
    written = {True: 0, False: 0}
    for from_client, sizes in streams:
        data = bytes((written[from_client] + i) % 251 for i in range(25))
        segs += _in_order(from_client, data, sizes, start=written[from_client])
        written[from_client] += len(data)
    for position, seg in noise:
        segs.insert(min(position, len(segs)), seg)
    _both(_packets(segs, isn), batch_size)
