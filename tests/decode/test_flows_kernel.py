"""The flow table's compiled kernels: the key hash matches the documented numpy hash, the open-addressing
index gives the same flows when keys collide (also while flows are removed from the middle of probe
runs), and expire() returns a flow exactly when it times out although it skips scans before then."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fieldward.decode.flows as flows_module
from fieldward.capture.batch import PacketBatch
from fieldward.capture.reader import open_capture
from fieldward.decode import _kernels
from fieldward.decode.flows import FlowConfig, FlowTable
from fieldward.decode.l2l4 import decode_batch

SEC = 10**9
T0 = 1_700_000_000 * SEC


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=5, max_size=5))
def test_kernel_hash_is_the_numpy_hash(words: list[int]) -> None:
    key = np.array(words, dtype=np.uint64).reshape(5, 1)
    expected = int(flows_module._hash_keys(key)[0])
    got = int(_kernels.hash_key(*(np.uint64(w) for w in words)))
    assert got == expected


def udp_frame(src: int, dst: int, sport: int, dport: int, payload: bytes = b"") -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        17,
        0,
        bytes([10, 0, 0, src]),
        bytes([10, 0, 0, dst]),
    )
    return bytes(6) + bytes([2, 0, 0, 0, 0, src]) + b"\x08\x00" + ip + udp


def tcp_frame(src: int, dst: int, sport: int, dport: int, flags: int) -> bytes:
    tcp = struct.pack("!HHIIHHHH", sport, dport, 0, 0, (5 << 12) | flags, 1024, 0, 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, bytes([10, 0, 0, src]), bytes([10, 0, 0, dst])
    )
    return bytes(6) + bytes([2, 0, 0, 0, 0, src]) + b"\x08\x00" + ip + tcp


def run(
    packets: list[bytes], times: list[int], cuts: list[int], config: FlowConfig
) -> tuple[list[int], list[int], pa.Table]:
    table = FlowTable(config)
    ids: list[int] = []
    dirs: list[int] = []
    parts = []
    bounds = sorted({0, *cuts, len(packets)})
    for start, end in itertools.pairwise(bounds):
        batch = PacketBatch.from_packets(packets[start:end], ts_ns=times[start:end], first_index=start)
        assignment = table.update(batch, decode_batch(batch))
        ids += assignment.flow_id.tolist()
        dirs += assignment.direction.tolist()
        parts.append(table.expire(times[end - 1]))
    parts.append(table.finish())
    assert table.stats.live_flows == 0
    return ids, dirs, pa.concat_tables(parts)


traffic = st.lists(
    st.tuples(
        st.integers(1, 6),  # source host
        st.integers(1, 6),  # destination host
        st.integers(1, 4),  # source port
        st.booleans(),  # TCP (else UDP)
        st.sampled_from([0x02, 0x12, 0x10, 0x11, 0x04]),
        st.integers(0, 30),  # gap, seconds
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(
    specs=traffic,
    cuts=st.sets(st.integers(1, 59), max_size=6),
    mask=st.sampled_from([0, 1, 3]),
    max_flows=st.integers(2, 8),
)
def test_colliding_hashes_give_the_same_flows(
    specs: list[tuple[int, int, int, bool, int, int]], cuts: set[int], mask: int, max_flows: int
) -> None:
    """With the index hash cut to ``mask`` bits every key probes from one of a few cells, and expiry,
    splits and eviction remove flows from inside probe runs: the flows must not change."""
    packets, times = [], []
    ts = T0
    for src, dst, sport, is_tcp, flags, gap in specs:
        ts += gap * SEC
        packets.append(tcp_frame(src, dst, sport, 80, flags) if is_tcp else udp_frame(src, dst, sport, 53))
        times.append(ts)
    cut_list = [c for c in sorted(cuts) if c < len(packets)]
    config = FlowConfig(
        tcp_idle_timeout_s=50, udp_idle_timeout_s=20, active_timeout_s=90, max_flows=max_flows
    )
    want = run(packets, times, cut_list, config)
    saved = flows_module._HASH_MASK
    flows_module._HASH_MASK = mask
    try:
        got = run(packets, times, cut_list, config)
    finally:
        flows_module._HASH_MASK = saved
    assert got[0] == want[0]
    assert got[1] == want[1]
    assert got[2].equals(want[2])


def test_colliding_hashes_on_a_corpus_capture(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = FlowConfig(
        udp_idle_timeout_s=1, tcp_idle_timeout_s=5, other_idle_timeout_s=1, active_timeout_s=10
    )

    def flows() -> pa.Table:
        table = FlowTable(config)
        parts = []
        with open_capture(corpus / "bacnet/bacnet_example.pcap", batch_packets=16) as reader:
            for batch in reader:
                table.update(batch, decode_batch(batch))
                if len(batch):
                    parts.append(table.expire(int(batch.ts_ns[-1])))
        parts.append(table.finish())
        return pa.concat_tables(parts)

    normal = flows()
    monkeypatch.setattr(flows_module, "_HASH_MASK", 0)
    colliding = flows()
    assert normal.num_rows > 100
    assert colliding.equals(normal)


def test_expire_returns_a_flow_exactly_at_its_timeout() -> None:
    config = FlowConfig(udp_idle_timeout_s=10, active_timeout_s=1000)
    table = FlowTable(config)
    first = PacketBatch.from_packets([udp_frame(1, 2, 1000, 53)], ts_ns=[T0])
    table.update(first, decode_batch(first))
    assert table.expire(T0 + 10 * SEC).num_rows == 0  # idle for exactly the timeout: still live
    later = PacketBatch.from_packets(
        [udp_frame(2, 1, 53, 1000), udp_frame(3, 2, 7, 53)], ts_ns=[T0 + 5 * SEC] * 2
    )
    table.update(later, decode_batch(later))
    assert table.expire(T0 + 15 * SEC).num_rows == 0
    expired = table.expire(T0 + 15 * SEC + 1)
    assert expired["orig_port"].to_pylist() == [1000, 7]
    assert expired["orig_pkts"].to_pylist() == [1, 1]
    assert expired["resp_pkts"].to_pylist() == [1, 0]
    assert expired["end_reason"].to_pylist() == ["idle_timeout", "idle_timeout"]
    assert table.stats.live_flows == 0


def test_expire_returns_a_flow_at_its_active_timeout() -> None:
    config = FlowConfig(udp_idle_timeout_s=100, active_timeout_s=30)
    table = FlowTable(config)
    batch = PacketBatch.from_packets(
        [udp_frame(1, 2, 1000, 53)] * 3, ts_ns=[T0, T0 + 10 * SEC, T0 + 20 * SEC]
    )
    table.update(batch, decode_batch(batch))
    assert table.expire(T0 + 30 * SEC - 1).num_rows == 0
    expired = table.expire(T0 + 30 * SEC)
    assert expired["end_reason"].to_pylist() == ["active_timeout"]
    assert expired["orig_pkts"].to_pylist() == [3]
