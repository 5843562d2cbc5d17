"""Runs of in-order segments in ``TcpReassembler.reassemble_batch`` with a small overlap window.

The batch entry point finds runs of in-order segments with numpy and brings a direction's retained
tail (the last ``overlap_check_bytes`` delivered, against which retransmissions are compared) up to
date only before ``feed`` runs for that direction and at the end of the batch. With a window of a few
bytes, runs longer than the window, and retransmissions (same and different bytes) reaching back into
or past the window, the chunks, weirds and final state must be those of ``feed`` per segment.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import TCP
from scapy.packet import Packet

from fieldward.decode.flows import FlowTable
from fieldward.decode.reassembly import StreamChunk, TcpReassembler
from fieldward.weird import WeirdLog
from tests.decode.test_flows import T0, decode, make_batch
from tests.decode.test_reassembly_fast import Seg, _in_order, _packets, _state


def _both(packets: list[Packet], batch_size: int, keep: int) -> list[str]:
    fast_weird, slow_weird = WeirdLog(), WeirdLog()
    fast = TcpReassembler(weird=fast_weird, overlap_check_bytes=keep)
    slow = TcpReassembler(weird=slow_weird, overlap_check_bytes=keep)
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
            payload = bytes(t.payload)
            if payload or int(t.flags) & 0x07:
                flow, direction = int(assignment.flow_id[i]), int(assignment.direction[i])
                slow_chunks += slow.feed(flow, direction, t.seq, int(t.flags), payload, times[i])
    assert fast_chunks == slow_chunks
    assert fast_weird.summary() == slow_weird.summary()
    assert _state(fast) == _state(slow)
    assert fast.flush() == slow.flush()
    return sorted(fast_weird.summary())


DATA = bytes(range(200))


def test_conflicts_are_checked_against_the_tail_after_a_run() -> None:
    segs = [
        Seg(True, 0, b"", "S"),
        *_in_order(True, DATA[:40], [3, 2, 4]),  # a run far longer than the 8-byte window
        Seg(True, 34, b"XY"),  # inside the window, different bytes: a conflict
        Seg(True, 20, b"ZZ"),  # older than the window: not checked
        *_in_order(True, DATA[40:60], [5], start=40),
        Seg(True, 55, DATA[55:60]),  # same bytes: no conflict
    ]
    for batch_size in (1, 4, 1000):
        assert _both(_packets(segs, (1000, 5000)), batch_size, keep=8) == ["tcp_overlap_conflict"]
    quiet = [s for s in segs if s.data != b"XY"]
    assert _both(_packets(quiet, (1000, 5000)), 1000, keep=8) == []


_noise = st.builds(
    Seg,
    st.booleans(),
    st.integers(0, 90),
    st.binary(min_size=1, max_size=6),
    st.sampled_from(["PA", "PA", "PA", "A", "FA"]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.booleans(), st.lists(st.integers(1, 7), min_size=1, max_size=3)), max_size=5),
    st.lists(st.tuples(st.integers(0, 60), _noise), max_size=6),
    st.integers(1, 9),
    st.sampled_from([1, 3, 8, 16]),
)
def test_fuzz_runs_with_a_small_window_equal_feed(
    streams: list[tuple[bool, list[int]]], noise: list[tuple[int, Seg]], batch_size: int, keep: int
) -> None:
    segs: list[Seg] = [Seg(True, 0, b"", "S")]
    written = {True: 0, False: 0}
    for from_client, sizes in streams:
        data = bytes((written[from_client] + i) % 251 for i in range(30))
        segs += _in_order(from_client, data, sizes, start=written[from_client])
        written[from_client] += len(data)
    for position, seg in noise:
        segs.insert(min(position, len(segs)), seg)
    _both(_packets(segs, (2**32 - 40, 7)), batch_size, keep)
